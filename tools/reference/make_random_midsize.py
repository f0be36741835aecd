#!/usr/bin/env python3
"""A random mid-size llava-next checkpoint, for timing only (not correctness).

    python3 tools/reference/make_random_midsize.py OUTDIR
    build/bin/llava-cli --model OUTDIR --image IMG --prompt 'Describe.' --max-tokens 32 --json

Text: Mistral-style, 1024 hidden, 8 layers, GQA 16/4 heads, FFN 2816, vocab
32064. Vision: CLIP 1024 wide, 8 layers, 336 px / 14 px patches, real
llava-v1.6 anyres pinpoints. F16 weights in the llava-hf legacy layout, one
file (~520 MB). Pure standard-library Python: runs anywhere. Tokenizer and
generation config are borrowed from the tiny fixture (ids above its 502
tokens decode to nothing).
"""
import json, random, struct, os, shutil, sys
out = sys.argv[1]
repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
src = os.path.join(repo, 'tests', 'data', 'forward', 'llava-next-tiny')
D, L, H, KV, FF, V = 1024, 8, 16, 4, 2816, 32064
VD, VL, VH, VFF = 1024, 8, 16, 4096
hd = D // H
random.seed(1)
block = b''.join(struct.pack('<e', random.gauss(0, 0.02)) for _ in range(1 << 19))
ones = struct.pack('<e', 1.0)
tensors = []
def add(name, shape, kind='w'):
    tensors.append((name, shape, kind))
p = 'language_model.model.'
add(p + 'embed_tokens.weight', [V, D])
for i in range(L):
    q = f'{p}layers.{i}.'
    add(q + 'input_layernorm.weight', [D], 'one')
    add(q + 'self_attn.q_proj.weight', [H * hd, D]); add(q + 'self_attn.k_proj.weight', [KV * hd, D])
    add(q + 'self_attn.v_proj.weight', [KV * hd, D]); add(q + 'self_attn.o_proj.weight', [D, H * hd])
    add(q + 'post_attention_layernorm.weight', [D], 'one')
    add(q + 'mlp.gate_proj.weight', [FF, D]); add(q + 'mlp.up_proj.weight', [FF, D]); add(q + 'mlp.down_proj.weight', [D, FF])
add(p + 'norm.weight', [D], 'one')
add('language_model.lm_head.weight', [V, D])
v = 'vision_tower.vision_model.'
add(v + 'embeddings.patch_embedding.weight', [VD, 3, 14, 14]); add(v + 'embeddings.class_embedding', [VD])
add(v + 'embeddings.position_embedding.weight', [577, VD])
add(v + 'pre_layrnorm.weight', [VD], 'one'); add(v + 'pre_layrnorm.bias', [VD])
for i in range(VL):
    q = f'{v}encoder.layers.{i}.'
    for n in ['layer_norm1', 'layer_norm2']:
        add(q + n + '.weight', [VD], 'one'); add(q + n + '.bias', [VD])
    for n in 'qkv':
        add(q + f'self_attn.{n}_proj.weight', [VD, VD]); add(q + f'self_attn.{n}_proj.bias', [VD])
    add(q + 'self_attn.out_proj.weight', [VD, VD]); add(q + 'self_attn.out_proj.bias', [VD])
    add(q + 'mlp.fc1.weight', [VFF, VD]); add(q + 'mlp.fc1.bias', [VFF])
    add(q + 'mlp.fc2.weight', [VD, VFF]); add(q + 'mlp.fc2.bias', [VD])
add(v + 'post_layernorm.weight', [VD], 'one'); add(v + 'post_layernorm.bias', [VD])
add('multi_modal_projector.linear_1.weight', [D, VD]); add('multi_modal_projector.linear_1.bias', [D])
add('multi_modal_projector.linear_2.weight', [D, D]); add('multi_modal_projector.linear_2.bias', [D])
add('image_newline', [D])
hdr = {}; off = 0
for name, shape, kind in tensors:
    n = 1
    for s in shape: n *= s
    hdr[name] = {'dtype': 'F16', 'shape': shape, 'data_offsets': [off, off + 2 * n]}; off += 2 * n
h = json.dumps(hdr).encode(); h += b' ' * (-len(h) % 8)
os.makedirs(out, exist_ok=True)
with open(out + '/model.safetensors', 'wb') as f:
    f.write(struct.pack('<Q', len(h))); f.write(h)
    k = 0
    for name, shape, kind in tensors:
        n = 1
        for s in shape: n *= s
        if kind == 'one':
            f.write(ones * n); continue
        b = n * 2
        while b > 0:
            start = (k * 7919 * 2) % len(block); k += 1
            chunk = (block[start:] + block[:start])[:b]
            f.write(chunk); b -= len(chunk)
cfg = json.load(open(src + '/config.json'))
cfg['image_grid_pinpoints'] = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
cfg['text_config'].update(hidden_size=D, intermediate_size=FF, num_attention_heads=H, num_key_value_heads=KV,
                          num_hidden_layers=L, vocab_size=V, max_position_embeddings=32768)
cfg['vision_config'] = {'hidden_size': VD, 'image_size': 336, 'intermediate_size': VFF, 'model_type': 'clip_vision_model',
                        'num_attention_heads': VH, 'num_hidden_layers': VL, 'patch_size': 14, 'projection_dim': 768}
cfg['vocab_size'] = V
json.dump(cfg, open(out + '/config.json', 'w'), indent=1)
for fn in ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'special_tokens_map.json']:
    shutil.copy(src + '/' + fn, out + '/' + fn)
shutil.copy(os.path.join(repo, 'tests', 'data', 'configs', 'llava-v1.6-mistral-7b-hf.preprocessor_config.json'),
            out + '/preprocessor_config.json')
print('params', off // 2)
