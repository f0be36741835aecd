#!/usr/bin/env python3
"""Reference fixtures for the forward pass (issue 4): two tiny random LLaVA
checkpoints in exactly the llava-hf layout, and transformers' own outputs on them.

Run on the GPU machine (torch 2.11, transformers 5.17, tokenizers 0.23,
safetensors, numpy, Pillow; no network needed). The reference is computed on
the CPU in float32 with eager attention, whatever GPU is present:

    python3 tools/reference/make_forward_fixtures.py OUTDIR

and OUTDIR's contents are what goes under tests/data/forward/ (format:
tests/data/forward/README.md). It writes

  OUTDIR/index.json              versions, seed, models, images, cases, checks
  OUTDIR/images/*.png            the input images (deterministic drawings)
  OUTDIR/llava-next-tiny/        LlavaNextForConditionalGeneration, CLIP + Mistral,
                                 fp16 safetensors in 2 shards + index, legacy (4.4x) names
  OUTDIR/llava-1.5-tiny/         LlavaForConditionalGeneration, CLIP + Llama, one file
  OUTDIR/<model>/cases/<case>/   case.json + raw little-endian float32 .bin tensors

How the reference is made (each step prints "[step] ..."; a failure names it):
  1. A small BPE tokenizer is trained here (our own trainer, our own English
     text) and written as a tokenizer.json with Mistral's pipeline: Prepend +
     Replace normalizer, no pre-tokenizer, byte fallback over <0x00>..<0xFF>
     at ids 3..258, TemplateProcessing "<s> $A", then <image> and <pad> added.
  2. config.json is written by hand in the hub style (keys equal to the class
     default omitted, as in llava-hf's files), the parameter names and shapes
     are taken from the transformers model built from it, renamed to the legacy
     names, filled from a seeded numpy generator, rounded to fp16 and saved
     with safetensors. The model is then loaded back with from_pretrained
     (dtype float32): every parameter must equal the fp16 value written.
  3. Pixel values come from the PIL image processors (LlavaNextImageProcessorPil,
     CLIPImageProcessorPil), input ids from `tokenizers` on the rendered prompt
     with each <image> expanded to the processor's count (cross-checked against
     the full processor). Vision features = CLIP hidden_states[-2] minus CLS;
     projected = multi_modal_projector of those; image_features = what is
     scattered into the <image> rows (packed: base, unpadded grid + newline).
     That they are what the model uses is checked: logits from inputs_embeds
     built with them equal logits from input_ids + pixel_values.
  4. Greedy decoding, 40 tokens, by recomputing the whole sequence each step
     (no KV cache, pixel_values passed every step): logits[0, -1] each step.
     generate() with a KV cache is run as a cross-check only.
  5. The weights are random but scaled so logits have clear winners; ids that
     must never be generated (<unk>, <s>, </s>, <image>, <pad>, the padding
     rows) have their lm_head rows scaled down so greedy runs the full 40
     steps. If some case has a top-1 margin under 1e-2 within the first 32
     steps, the weights are redrawn with the next seed (a few tries).
"""
import hashlib
import json
import math
import os
import shutil
import sys
import time
import traceback

SEED = 20251126            # base seed; the weight seed of a model is SEED + 1000*k + attempt
MAX_NEW_TOKENS = 40
MARGIN_OK = 1e-2           # wanted top-1 margin over the runner-up ...
MARGIN_STEPS = 32          # ... in each of the first MARGIN_STEPS steps of every case
MAX_ATTEMPTS = 6           # weight redraws per model
RETRY_BUDGET_S = 150.0     # no new attempt after this many seconds in one model
N_THREADS = 1              # CPU threads for the reference (fixed for reproducibility)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
TILE = 56                  # vision image_size; patch 14 -> 4x4 = 16 patches + CLS
PATCH = 14
PINPOINTS = [[56, 112], [112, 56], [112, 112], [168, 56], [56, 168]]  # (height, width)

# ---------------------------------------------------------------- model shapes
NEXT_DIMS = dict(
    name="llava-next-tiny",
    kind="llava_next",
    text=dict(model_type="mistral", hidden=96, layers=3, heads=4, kv_heads=2, inter=160,
              rope_theta=1000000.0, rms_eps=1e-05, max_pos=4096),
    vision=dict(hidden=64, layers=4, heads=4, inter=128, projection_dim=32),
    sharded=True,
)
LLAVA15_DIMS = dict(
    name="llava-1.5-tiny",
    kind="llava",
    text=dict(model_type="llama", hidden=64, layers=2, heads=4, kv_heads=None, inter=128,
              rope_theta=10000.0, rms_eps=1e-05, max_pos=4096),
    vision=dict(hidden=48, layers=3, heads=3, inter=96, projection_dim=32),
    sharded=False,
)

# ---------------------------------------------------------------- images
# (file, width, height, PIL mode). Sizes chosen for the anyres paths with
# pinpoints above: 100x60 -> 2x2 grid, rows cut; 45x130 (gray) -> 3x1 grid with
# the odd unpad remainder (keeps new_h + 1 rows); 56x56 -> 1x2 grid, columns
# cut; 200x200 -> 2x2 grid after a downscale, nothing cut.
IMAGES = [("a_100x60.png", 100, 60, "RGB"), ("b_45x130.png", 45, 130, "L"),
          ("c_56x56.png", 56, 56, "RGB"), ("d_200x200.png", 200, 200, "RGB")]

# ---------------------------------------------------------------- cases
def _user(text, n_images=0):
    return {"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}

NEXT_CASES = [
    dict(name="one_image", images=["a_100x60.png"],
         messages=[_user("What is shown?", 1)]),
    dict(name="two_images", images=["b_45x130.png", "d_200x200.png"],
         messages=[_user("Compare the two pictures.", 2)]),
    dict(name="multi_turn", images=["c_56x56.png"],
         messages=[_user("What is in this picture?", 1),
                   {"role": "assistant", "content": [{"type": "text", "text": "A red circle on a green field."}]},
                   _user("What color is the circle?")]),
    dict(name="text_only", images=[],
         messages=[_user("Tell me a short story about a little cat.")]),
]
LLAVA15_CASES = [
    dict(name="one_image", images=["a_100x60.png"], messages=[_user("What is shown?", 1)]),
    dict(name="text_only", images=[], messages=[_user("Write a sentence about the sea.")]),
]

# Our own chat templates (Jinja, for chat_template.json), written from the
# behaviour in ../shared/spec/llava-next.md §7 and llava-1.5's USER/ASSISTANT form.
MISTRAL_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\\n' + (message['content'] | selectattr('type', 'equalto', 'text') | first)['text'] + '\\n<</SYS>>\\n\\n' }}"
    "{% elif message['role'] == 'user' %}"
    "{{ '[INST] ' }}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<image>\\n' }}{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{{ ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + (message['content'] | selectattr('type', 'equalto', 'text') | first)['text'] + '</s> ' }}"
    "{% else %}{{ raise_exception('Only system, user and assistant roles are supported!') }}"
    "{% endif %}"
    "{% endfor %}"
)
LLAVA15_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{{ 'USER: ' }}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<image>\\n' }}{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{{ ' ' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ 'ASSISTANT: ' + (message['content'] | selectattr('type', 'equalto', 'text') | first)['text'] + '</s>' }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def render_mistral(messages):
    """The llava-v1.6-mistral template, in Python (spec §7.1)."""
    out = []
    for m in messages:
        texts = [p["text"] for p in m["content"] if p["type"] == "text"]
        n_img = sum(1 for p in m["content"] if p["type"] == "image")
        if m["role"] == "system":
            out.append("<<SYS>>\n" + texts[0] + "\n<</SYS>>\n\n")
        elif m["role"] == "user":
            out.append("[INST] " + "<image>\n" * n_img + "".join(texts) + " [/INST]")
        elif m["role"] == "assistant":
            out.append(" " + texts[0] + "</s> ")
        else:
            raise ValueError("role " + m["role"])
    return "".join(out)


def render_llava15(messages):
    """USER: <image>\\n... ASSISTANT: (with the generation prompt)."""
    out = []
    for m in messages:
        texts = [p["text"] for p in m["content"] if p["type"] == "text"]
        n_img = sum(1 for p in m["content"] if p["type"] == "image")
        if m["role"] == "user":
            out.append("USER: " + "<image>\n" * n_img + "".join(texts) + " ")
        elif m["role"] == "assistant":
            out.append("ASSISTANT: " + texts[0] + "</s>")
        else:
            raise ValueError("role " + m["role"])
    return "".join(out) + "ASSISTANT:"


# ---------------------------------------------------------------- tokenizer
# Training text: our own sentences, a few KB. No '<' or '>' so that no learnt
# piece can look like a special or byte token.
CORPUS = """\
The picture shows a small red house with a green door and two white windows.
A little cat sits on the roof and looks at the blue sky.
What is shown in this image? The image shows a dog running across a wide field of grass.
There is a tall tree on the left side of the picture, and a river on the right side.
The river is wide and the water is clear and cold.
Describe the picture in detail. The picture is a drawing of a circle, a square and a triangle.
The circle is red, the square is blue, and the triangle is yellow.
What color is the circle? The circle is red. What color is the square? The square is blue.
Compare the two pictures. The first picture is tall and narrow, the second one is large and square.
In the first picture there is a gray line, and in the second there is a bright green field.
A man is walking along the beach with his dog in the early morning.
The sea is calm, the sand is warm, and a few birds fly over the waves.
She reads a book under the old tree while the children play in the park.
The children are playing with a ball and laughing in the warm sun.
Tell me a short story about a little cat. Once upon a time there was a little cat named Tom.
Tom lived in a small house near the forest with an old woman and her garden.
Every morning Tom walked to the garden and watched the birds and the flowers.
One day Tom found a small blue box under the flowers in the garden.
He opened the box and saw a tiny golden key inside it.
The key opened a door in the old wall at the end of the garden.
Behind the door there was a beautiful world full of light, trees and music.
Tom was happy, and every day after that he came back to play in the new world.
Write a sentence about the sea. The sea is deep and blue and it touches the sky at the horizon.
Ships sail on the sea, fish swim in the sea, and the wind moves the waves.
USER: What is shown? ASSISTANT: The picture shows a red circle on a green field.
USER: Can you describe this image? ASSISTANT: Yes, it is a photo of a city street at night.
[INST] What is shown? [/INST] The image shows a gray square with a white line.
[INST] What is in this picture? [/INST] A red circle on a green field.
[INST] What color is the circle? [/INST] The circle is red, and the field around it is green.
The street is full of cars, the lights are bright, and people walk on the side of the road.
There are 3 apples, 12 oranges and 100 grapes on the table in the kitchen.
The year was 2024 and the number of people in the city was more than 5000000.
A photo of a mountain with snow on the top and a lake at the bottom.
The mountain is very high, the air is cold, and the lake reflects the white clouds.
A plate of food with rice, vegetables and a piece of chicken on a wooden table.
The chart shows the price of bread over ten years; it goes up every year.
This is a diagram of a simple machine with a wheel, a rope and a heavy stone.
The text in the image says: Welcome to the park, please keep it clean!
I think the answer is yes, because the shapes in both images have the same color.
It is not possible to tell from this picture what time of day it is.
The person in the photo is smiling and holding a cup of coffee in one hand.
The room has a large window, a bed, a desk with a lamp, and a chair next to the door.
Questions and answers help us understand what we see in the world around us.
Small models are useful for tests because they are fast and easy to check.
"""

TOKENIZER_BASE_VOCAB = 500   # <unk>,<s>,</s> + 256 bytes + learnt pieces; then <image>, <pad>


def train_bpe(text, target_base_vocab):
    """A plain BPE trainer: words are '▁'-prefixed whitespace-separated runs
    (as SentencePiece sees them), pieces merge by pair frequency, ties broken by
    the smallest pair. Returns (alphabet, new_tokens, merges) in order."""
    from collections import Counter
    words = Counter()
    for line in text.splitlines():
        for w in line.split():
            words["\u2581" + w] += 1
    alphabet = sorted({c for w in words for c in w})
    have = set(alphabet)
    seqs = {w: list(w) for w in words}
    new_tokens, merges = [], []
    while 3 + 256 + len(alphabet) + len(new_tokens) < target_base_vocab:
        pairs = Counter()
        for w, n in words.items():
            s = seqs[w]
            for i in range(len(s) - 1):
                pairs[(s[i], s[i + 1])] += n
        if not pairs:
            break
        best_n = max(pairs.values())
        if best_n < 2:
            break
        a, b = min(p for p, n in pairs.items() if n == best_n)
        merges.append((a, b))
        ab = a + b
        if ab not in have:
            have.add(ab)
            new_tokens.append(ab)
        for w, s in seqs.items():
            i, out = 0, []
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(ab)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return alphabet, new_tokens, merges


def build_tokenizer_json(alphabet, new_tokens, merges):
    """tokenizer.json with Mistral-7B's pipeline (spec: tokenizer sessions)."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = 3 + b
    for t in alphabet + new_tokens:
        if t not in vocab:
            vocab[t] = len(vocab)
    n_base = len(vocab)
    image_id, pad_id = n_base, n_base + 1

    def added(i, content):
        return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": False, "special": True}

    tj = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>"),
                         added(image_id, "<image>"), added(pad_id, "<pad>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [a + " " + b for a, b in merges]},
    }
    return tj, n_base, image_id, pad_id


def tokenizer_config_json(image_id, pad_id, processor_class):
    def dec(content):
        return {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
                "single_word": False, "special": True}
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {"0": dec("<unk>"), "1": dec("<s>"), "2": dec("</s>"),
                                 str(image_id): dec("<image>"), str(pad_id): dec("<pad>")},
        "additional_special_tokens": [],
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "legacy": True,
        "model_max_length": 4096,
        "pad_token": "<pad>",
        "padding_side": "left",
        "processor_class": processor_class,
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }


# ---------------------------------------------------------------- anyres arithmetic (spec §2, §5)
def select_best_resolution(h, w, pinpoints):
    best, best_eff, best_waste = None, 0, float("inf")
    for ph, pw in pinpoints:
        scale = min(pw / w, ph / h)
        dw, dh = int(w * scale), int(h * scale)
        eff = min(dw * dh, w * h)
        waste = ph * pw - eff
        if eff > best_eff or (eff == best_eff and waste < best_waste):
            best, best_eff, best_waste = (ph, pw), eff, waste
    return best


def anyres_layout(h, w):
    """(best (ph,pw), patches, grid (gh,gw), kept rows, kept cols, n tokens)."""
    ph, pw = select_best_resolution(h, w, PINPOINTS)
    gh, gw = ph // TILE, pw // TILE
    n = TILE // PATCH
    ch, cw = gh * n, gw * n
    if w / h > cw / ch:
        new_h = int(round(h * (cw / w), 7))
        pad = (ch - new_h) // 2
        rows, cols = ch - 2 * pad, cw
    else:
        new_w = int(round(w * (ch / h), 7))
        pad = (cw - new_w) // 2
        rows, cols = ch, cw - 2 * pad
    return (ph, pw), 1 + gh * gw, (gh, gw), rows, cols, rows * cols + rows + n * n


# ---------------------------------------------------------------- small helpers
_STEP = ["start"]


def step(name):
    _STEP[0] = name
    print(f"[step] {name}", flush=True)


def write_json(path, obj, indent=2, sort_keys=False):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, sort_keys=sort_keys, ensure_ascii=False)
        f.write("\n")


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for fn in files:
            total += os.path.getsize(os.path.join(root, fn))
    return total


def make_images(outdir):
    import numpy as np
    from PIL import Image, ImageDraw
    os.makedirs(outdir, exist_ok=True)
    rng = np.random.default_rng(SEED)
    info = []
    for k, (fn, w, h, mode) in enumerate(IMAGES):
        y, x = np.mgrid[0:h, 0:w]
        r = (x * 255 // max(w - 1, 1)).astype(np.int32)
        g = (y * 255 // max(h - 1, 1)).astype(np.int32)
        b = ((x + 2 * y + 40 * k) % 256).astype(np.int32)
        noise = rng.integers(-24, 25, size=(h, w, 3))
        arr = np.clip(np.stack([r, g, b], -1) + noise, 0, 255).astype(np.uint8)
        im = Image.fromarray(arr, "RGB")
        d = ImageDraw.Draw(im)
        d.rectangle([w // 8, h // 6, w // 2, h // 2], fill=(220, 30, 30), outline=(255, 255, 255))
        d.ellipse([w // 3, h // 3, w - w // 10, h - h // 8], fill=(30, 160, 40), outline=(0, 0, 0))
        d.line([0, h - 1, w - 1, 0], fill=(250, 250, 0), width=max(1, min(w, h) // 20))
        if mode != "RGB":
            im = im.convert(mode)
        im.save(os.path.join(outdir, fn), format="PNG")
        info.append({"file": "images/" + fn, "width": w, "height": h, "mode": mode})
    return info


# ---------------------------------------------------------------- configs
def text_config_json(td, vocab_size):
    c = {
        "_name_or_path": "tiny-random-" + td["model_type"],
        "architectures": ["MistralForCausalLM" if td["model_type"] == "mistral" else "LlamaForCausalLM"],
        # hidden_size / num_hidden_layers / num_attention_heads / intermediate_size
        # differ from the class defaults (4096/32/32/14336 or 11008), so they are set.
        "hidden_size": td["hidden"],
        "intermediate_size": td["inter"],
        "max_position_embeddings": td["max_pos"],
        "model_type": td["model_type"],
        "num_attention_heads": td["heads"],
        "num_hidden_layers": td["layers"],
        "rms_norm_eps": td["rms_eps"],
        "torch_dtype": "float16",
        "vocab_size": vocab_size,
    }
    if td["kv_heads"] is not None:
        c["num_key_value_heads"] = td["kv_heads"]
    if td["model_type"] == "mistral":
        c["rope_theta"] = td["rope_theta"]   # 1e6; MistralConfig's default is 1e4
        c["sliding_window"] = None           # default would be 4096
    return dict(sorted(c.items()))


def vision_config_json(vd):
    return {
        "hidden_size": vd["hidden"],
        "image_size": TILE,
        "intermediate_size": vd["inter"],
        "model_type": "clip_vision_model",
        "num_attention_heads": vd["heads"],
        "num_hidden_layers": vd["layers"],
        "patch_size": PATCH,
        "projection_dim": vd["projection_dim"],
        "vocab_size": 32000,   # present (and meaningless) in llava-hf's files; kept for the layout
    }


def model_config_json(dims, vocab_size, image_id, pad_id, tf_version):
    top = {
        "architectures": ["LlavaNextForConditionalGeneration" if dims["kind"] == "llava_next"
                          else "LlavaForConditionalGeneration"],
        "ignore_index": -100,
        "image_token_index": image_id,
        "model_type": dims["kind"],
        "pad_token_id": pad_id,
        "projector_hidden_act": "gelu",
        "text_config": text_config_json(dims["text"], vocab_size),
        "torch_dtype": "float16",
        "transformers_version": tf_version,
        "vision_config": vision_config_json(dims["vision"]),
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "vocab_size": vocab_size,
    }
    if dims["kind"] == "llava_next":
        top["image_grid_pinpoints"] = PINPOINTS
        top["use_image_newline_parameter"] = True
    else:
        top["tie_word_embeddings"] = False
    return dict(sorted(top.items()))


def preprocessor_config_json(kind):
    c = {
        "crop_size": {"height": TILE, "width": TILE},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": TILE},
    }
    if kind == "llava_next":
        c.update({"aspect_ratio_setting": "anyres", "do_pad": True, "image_grid_pinpoints": PINPOINTS,
                  "image_processor_type": "LlavaNextImageProcessor", "processor_class": "LlavaNextProcessor"})
    else:
        c.update({"image_processor_type": "CLIPImageProcessor", "processor_class": "LlavaProcessor"})
    return dict(sorted(c.items()))


def image_processor_kwargs(pp):
    """Constructor kwargs of the PIL image processor from preprocessor_config."""
    keys = ["do_resize", "size", "crop_size", "resample", "do_center_crop", "do_rescale", "rescale_factor",
            "do_normalize", "image_mean", "image_std", "do_convert_rgb", "image_grid_pinpoints", "do_pad"]
    return {k: pp[k] for k in keys if k in pp}


# ---------------------------------------------------------------- weights
LEGACY_RENAMES = [("model.language_model.", "language_model.model."),
                  ("model.vision_tower.", "vision_tower."),
                  ("model.multi_modal_projector.", "multi_modal_projector."),
                  ("lm_head.", "language_model.lm_head.")]
LEGACY_PREFIXES = ("language_model.", "vision_tower.", "multi_modal_projector.")


def to_legacy(name):
    """transformers 5 parameter name -> the 4.4x name llava-hf's files use (formats.md §2.4)."""
    if name == "model.image_newline":
        return "image_newline"
    for new, old in LEGACY_RENAMES:
        if name.startswith(new):
            rest = name[len(new):]
            # transformers 5.17 holds the CLIP tower itself (CLIPVisionTransformer) as
            # model.vision_tower, without the inner "vision_model." of CLIPVisionModel
            if old == "vision_tower." and not rest.startswith("vision_model."):
                rest = "vision_model." + rest
            return old + rest
    if name.startswith(LEGACY_PREFIXES) or name == "image_newline":
        return name
    raise ValueError(f"no legacy name for parameter {name!r}")


def expected_legacy_shapes(dims, vocab):
    """Tensor names and shapes as llava-hf's files hold them (formats.md §2.1-2.3)."""
    t, v = dims["text"], dims["vision"]
    ht, hv = t["hidden"], v["hidden"]
    hd = ht // t["heads"]
    kv = t["kv_heads"] if t["kv_heads"] is not None else t["heads"]
    e = {"language_model.model.embed_tokens.weight": [vocab, ht],
         "language_model.model.norm.weight": [ht],
         "language_model.lm_head.weight": [vocab, ht]}
    for i in range(t["layers"]):
        p = f"language_model.model.layers.{i}."
        e.update({p + "self_attn.q_proj.weight": [t["heads"] * hd, ht],
                  p + "self_attn.k_proj.weight": [kv * hd, ht],
                  p + "self_attn.v_proj.weight": [kv * hd, ht],
                  p + "self_attn.o_proj.weight": [ht, t["heads"] * hd],
                  p + "mlp.gate_proj.weight": [t["inter"], ht],
                  p + "mlp.up_proj.weight": [t["inter"], ht],
                  p + "mlp.down_proj.weight": [ht, t["inter"]],
                  p + "input_layernorm.weight": [ht],
                  p + "post_attention_layernorm.weight": [ht]})
    vp = "vision_tower.vision_model."
    n_pos = (TILE // PATCH) ** 2 + 1
    e.update({vp + "embeddings.class_embedding": [hv],
              vp + "embeddings.patch_embedding.weight": [hv, 3, PATCH, PATCH],
              vp + "embeddings.position_embedding.weight": [n_pos, hv],
              vp + "pre_layrnorm.weight": [hv], vp + "pre_layrnorm.bias": [hv],
              vp + "post_layernorm.weight": [hv], vp + "post_layernorm.bias": [hv]})
    for i in range(v["layers"]):
        p = vp + f"encoder.layers.{i}."
        for m in ("q_proj", "k_proj", "v_proj", "out_proj"):
            e[p + f"self_attn.{m}.weight"] = [hv, hv]
            e[p + f"self_attn.{m}.bias"] = [hv]
        e.update({p + "layer_norm1.weight": [hv], p + "layer_norm1.bias": [hv],
                  p + "layer_norm2.weight": [hv], p + "layer_norm2.bias": [hv],
                  p + "mlp.fc1.weight": [v["inter"], hv], p + "mlp.fc1.bias": [v["inter"]],
                  p + "mlp.fc2.weight": [hv, v["inter"]], p + "mlp.fc2.bias": [hv]})
    e.update({"multi_modal_projector.linear_1.weight": [ht, hv], "multi_modal_projector.linear_1.bias": [ht],
              "multi_modal_projector.linear_2.weight": [ht, ht], "multi_modal_projector.linear_2.bias": [ht]})
    if dims["kind"] == "llava_next":
        e["image_newline"] = [ht]
    return e


def _is_norm(name):
    return any(s in name for s in ("layernorm", "layer_norm", "layrnorm")) or name.endswith("model.norm.weight")


def init_weights(rng, shapes, dims, never_ids):
    """Random fp16 tensors by legacy name: big enough for clear logit winners."""
    import numpy as np
    ht = dims["text"]["hidden"]
    out = {}
    for name in sorted(shapes):
        shape = tuple(shapes[name])
        z = rng.standard_normal(shape)
        last = name.rsplit(".", 1)[-1]
        if name.endswith("embed_tokens.weight"):
            a = z * 1.0
        elif name.endswith("lm_head.weight"):
            a = z * (6.0 / math.sqrt(ht))          # logit std ~6
            a[never_ids] *= 0.02                   # never the argmax: full 40 greedy steps
        elif name == "image_newline":
            a = z * 1.0
        elif name.endswith("class_embedding"):
            a = z * 0.5
        elif "position_embedding" in name:
            a = z * 0.3
        elif "patch_embedding" in name:
            a = z * (1.2 / math.sqrt(3 * PATCH * PATCH))
        elif _is_norm(name):
            a = 1.0 + 0.1 * z if last == "weight" else 0.05 * z
        elif last == "bias":
            a = 0.05 * z
        elif last == "weight" and len(shape) == 2:
            a = z * (1.2 / math.sqrt(shape[1]))
        else:
            raise ValueError(f"no init rule for {name} {shape}")
        out[name] = np.ascontiguousarray(a.astype(np.float16))
    return out


def save_weights(model_dir, weights, sharded):
    from safetensors.numpy import save_file
    meta = {"format": "pt"}
    names = sorted(weights)
    if not sharded:
        save_file({n: weights[n] for n in names}, os.path.join(model_dir, "model.safetensors"), metadata=meta)
        return ["model.safetensors"]
    total = sum(weights[n].nbytes for n in names)
    shard1, acc = [], 0
    for n in names:
        if acc >= total / 2 and shard1:
            break
        shard1.append(n)
        acc += weights[n].nbytes
    shard2 = names[len(shard1):]
    assert shard1 and shard2
    files = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    wmap = {}
    for fn, part in zip(files, (shard1, shard2)):
        save_file({n: weights[n] for n in part}, os.path.join(model_dir, fn), metadata=meta)
        for n in part:
            wmap[n] = fn
    write_json(os.path.join(model_dir, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": dict(sorted(wmap.items()))})
    return files


# ---------------------------------------------------------------- the run
class Ctx:
    pass


def build_model_dir(ctx, dims, model_dir, weight_seed):
    """Writes one checkpoint directory; returns the fp16 weights by legacy name."""
    import numpy as np
    import torch
    import transformers
    os.makedirs(model_dir, exist_ok=True)
    tok = ctx.tok
    kind = dims["kind"]
    step(f"{dims['name']}: config.json, tokenizer and processor files")
    cfg = model_config_json(dims, ctx.vocab_size, tok["image_id"], tok["pad_id"], transformers.__version__)
    write_json(os.path.join(model_dir, "config.json"), cfg)
    write_json(os.path.join(model_dir, "preprocessor_config.json"), preprocessor_config_json(kind))
    proc_class = "LlavaNextProcessor" if kind == "llava_next" else "LlavaProcessor"
    write_json(os.path.join(model_dir, "processor_config.json"),
               {"image_token": "<image>", "num_additional_image_tokens": 1, "patch_size": PATCH,
                "processor_class": proc_class, "vision_feature_select_strategy": "default"})
    write_json(os.path.join(model_dir, "chat_template.json"),
               {"chat_template": MISTRAL_TEMPLATE if kind == "llava_next" else LLAVA15_TEMPLATE})
    with open(os.path.join(model_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(tok["json_text"])
    write_json(os.path.join(model_dir, "tokenizer_config.json"),
               tokenizer_config_json(tok["image_id"], tok["pad_id"], proc_class))
    write_json(os.path.join(model_dir, "special_tokens_map.json"),
               {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})
    write_json(os.path.join(model_dir, "generation_config.json"),
               {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": tok["pad_id"],
                "transformers_version": transformers.__version__})

    step(f"{dims['name']}: parameter names from transformers' model class")
    cls = transformers.LlavaNextForConditionalGeneration if kind == "llava_next" \
        else transformers.LlavaForConditionalGeneration
    conf = transformers.AutoConfig.from_pretrained(model_dir)
    torch.manual_seed(weight_seed)
    skeleton = cls(conf)
    hf_shapes = {}
    for n, p in skeleton.named_parameters():
        hf_shapes[to_legacy(n)] = list(p.shape)
    del skeleton
    want = expected_legacy_shapes(dims, ctx.vocab_size)
    if hf_shapes != want:
        missing = sorted(set(want) - set(hf_shapes))
        extra = sorted(set(hf_shapes) - set(want))
        diff = sorted(n for n in set(want) & set(hf_shapes) if want[n] != hf_shapes[n])
        raise RuntimeError(f"parameter layout differs from llava-hf's: missing {missing[:8]}, "
                           f"extra {extra[:8]}, shape {[(n, want[n], hf_shapes[n]) for n in diff[:8]]}")

    step(f"{dims['name']}: random fp16 weights (seed {weight_seed}) -> safetensors")
    rng = np.random.default_rng(weight_seed)
    never = sorted(set([0, 1, 2, tok["image_id"], tok["pad_id"]]) | set(range(tok["size"], ctx.vocab_size)))
    weights = init_weights(rng, want, dims, never)
    files = save_weights(model_dir, weights, dims["sharded"])
    return weights, files, never


def load_model(ctx, dims, model_dir, weights):
    import numpy as np
    import torch
    import transformers
    step(f"{dims['name']}: from_pretrained(dtype=float32, eager) and weight check")
    cls = transformers.LlavaNextForConditionalGeneration if dims["kind"] == "llava_next" \
        else transformers.LlavaForConditionalGeneration
    try:
        model, info = cls.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager",
                                          output_loading_info=True)
    except TypeError:
        model, info = cls.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager",
                                          output_loading_info=True)
    model = model.to("cpu").eval()
    bad_info = {k: list(v) for k, v in (info or {}).items() if v and k != "error_msgs"}
    seen, mismatched = set(), []
    for n, p in model.named_parameters():
        ln = to_legacy(n)
        seen.add(ln)
        if ln not in weights:
            mismatched.append((n, "not written"))
            continue
        ref = weights[ln].astype(np.float32)
        got = p.detach().to(torch.float32).cpu().numpy()
        if got.shape != ref.shape or not np.array_equal(got, ref):
            mismatched.append((n, "values differ"))
    unused = sorted(set(weights) - seen)
    if mismatched or unused:
        raise RuntimeError(f"loaded weights differ from the file: {mismatched[:8]} unused {unused[:8]} "
                           f"loading info {bad_info}")
    if bad_info.get("missing_keys") or bad_info.get("unexpected_keys"):
        print("  note: loading info", bad_info)
    if p.dtype != torch.float32:
        raise RuntimeError(f"model dtype is {p.dtype}, wanted float32")

    tc, vc = model.config.text_config, model.config.vision_config
    t = dims["text"]
    rope = getattr(tc, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(tc, "rope_theta", None)) if isinstance(rope, dict) else None
    resolved = {
        "text_model_type": tc.model_type, "hidden_size": tc.hidden_size, "num_hidden_layers": tc.num_hidden_layers,
        "num_attention_heads": tc.num_attention_heads, "num_key_value_heads": tc.num_key_value_heads,
        "head_dim": getattr(tc, "head_dim", tc.hidden_size // tc.num_attention_heads),
        "intermediate_size": tc.intermediate_size, "vocab_size": tc.vocab_size, "rms_norm_eps": tc.rms_norm_eps,
        "rope_theta": theta, "sliding_window": getattr(tc, "sliding_window", None),
        "max_position_embeddings": tc.max_position_embeddings, "hidden_act": tc.hidden_act,
        "vision_hidden_size": vc.hidden_size, "vision_num_hidden_layers": vc.num_hidden_layers,
        "vision_num_attention_heads": vc.num_attention_heads, "vision_intermediate_size": vc.intermediate_size,
        "vision_image_size": vc.image_size, "vision_patch_size": vc.patch_size, "vision_hidden_act": vc.hidden_act,
        "vision_layer_norm_eps": vc.layer_norm_eps,
        "vision_feature_layer": model.config.vision_feature_layer,
        "vision_feature_select_strategy": model.config.vision_feature_select_strategy,
        "projector_hidden_act": model.config.projector_hidden_act,
        "image_token_id": getattr(model.config, "image_token_id", getattr(model.config, "image_token_index", None)),
    }
    want = {"hidden_size": t["hidden"], "num_hidden_layers": t["layers"], "num_attention_heads": t["heads"],
            "num_key_value_heads": t["kv_heads"] or t["heads"], "head_dim": t["hidden"] // t["heads"],
            "intermediate_size": t["inter"], "vocab_size": ctx.vocab_size, "rope_theta": t["rope_theta"],
            "image_token_id": ctx.tok["image_id"], "vision_feature_layer": -2,
            "vision_hidden_act": "quick_gelu", "projector_hidden_act": "gelu", "hidden_act": "silu"}
    if t["model_type"] == "mistral":
        want["sliding_window"] = None
    off = {k: (resolved.get(k), v) for k, v in want.items() if resolved.get(k) != v}
    if off:
        raise RuntimeError(f"transformers resolved the config differently than intended: {off}")
    return model, resolved


def make_processor(ctx, dims, model_dir):
    import transformers
    from tokenizers import Tokenizer
    kind = dims["kind"]
    pp = json.load(open(os.path.join(model_dir, "preprocessor_config.json")))
    ip_cls = transformers.LlavaNextImageProcessorPil if kind == "llava_next" else transformers.CLIPImageProcessorPil
    ip = ip_cls(**image_processor_kwargs(pp))
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json")),
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    pcls = transformers.LlavaNextProcessor if kind == "llava_next" else transformers.LlavaProcessor
    proc = pcls(image_processor=ip, tokenizer=fast, patch_size=PATCH, vision_feature_select_strategy="default",
                image_token="<image>", num_additional_image_tokens=1,
                chat_template=MISTRAL_TEMPLATE if kind == "llava_next" else LLAVA15_TEMPLATE)
    checks = {"image_processor_class": type(ip).__name__}
    # preprocessor_config.json through the class's own loader must give the same processor
    try:
        ip2 = ip_cls.from_pretrained(model_dir)
        checks["image_processor_from_pretrained_class"] = type(ip2).__name__
        ctx.ip_from_file = ip2
    except Exception as e:  # informative only
        checks["image_processor_from_pretrained_error"] = repr(e)[:300]
        ctx.ip_from_file = None
    try:
        checks["autotokenizer_class"] = type(transformers.AutoTokenizer.from_pretrained(model_dir)).__name__
    except Exception as e:
        checks["autotokenizer_error"] = repr(e)[:300]
    return proc, ip, checks


def to_f32_bytes(t):
    import numpy as np
    a = t.detach().to("cpu").float().numpy() if hasattr(t, "detach") else np.asarray(t)
    return np.ascontiguousarray(a.astype("<f4")), a.shape


def write_tensor(case_dir, fname, t, record):
    arr, shape = to_f32_bytes(t)
    path = os.path.join(case_dir, fname)
    with open(path, "wb") as f:
        f.write(arr.tobytes())
    record.update({"file": fname, "dtype": "float32", "shape": [int(s) for s in shape],
                   "sha256": hashlib.sha256(arr.tobytes()).hexdigest()})
    return record


def pack_features_ours(projected_per_image, image_sizes, newline, n):
    """Spec §5: base first, then the unpadded (rows x cols) grid with newline after each row."""
    import torch
    out = []
    for feat, (h, w) in zip(projected_per_image, image_sizes):
        if feat.shape[0] == 1:
            out.append(torch.cat([feat[0], newline[None]], 0))
            continue
        (ph, pw), _, (gh, gw), rows, cols, _ = anyres_layout(int(h), int(w))
        c = feat.shape[-1]
        grid = feat[1:].reshape(gh, gw, n, n, c).permute(0, 2, 1, 3, 4).reshape(gh * n, gw * n, c)
        ch, cw = gh * n, gw * n
        r0, c0 = (ch - rows) // 2, (cw - cols) // 2
        grid = grid[r0:r0 + rows, c0:c0 + cols]
        grid = torch.cat([grid, newline[None, None].expand(rows, 1, c)], 1).reshape(-1, c)
        out.append(torch.cat([feat[0], grid], 0))
    return out


def run_case(ctx, dims, model, proc, ip, case, model_dir, cases_dir):
    import numpy as np
    import torch
    from PIL import Image
    name = f"{dims['name']}/{case['name']}"
    kind = dims["kind"]
    tok = ctx.tok
    image_id = tok["image_id"]
    core = getattr(model, "model", model)
    step(f"{name}: prompt, pixel values, input ids")
    prompt = render_mistral(case["messages"]) if kind == "llava_next" else render_llava15(case["messages"])
    checks = {}
    try:
        rendered = proc.apply_chat_template(json.loads(json.dumps(case["messages"])), tokenize=False,
                                            add_generation_prompt=True)
        checks["chat_template_render_equal"] = rendered == prompt
        if rendered != prompt:
            checks["chat_template_rendered"] = rendered
    except Exception as e:
        checks["chat_template_error"] = repr(e)[:300]

    imgs = []
    for fn in case["images"]:
        im = Image.open(os.path.join(ctx.outdir, "images", fn))
        im.load()
        imgs.append(im)
    n_img = len(imgs)

    # ids: tokenizers on the rendered prompt, each <image> expanded to the processor's count
    base_ids = ctx.tokenizer.encode(prompt).ids
    if sum(1 for i in base_ids if i == image_id) != n_img:
        raise RuntimeError(f"{name}: prompt has {base_ids.count(image_id)} <image> ids for {n_img} images")
    per_image, counts = [], []
    for im in imgs:
        h, w = im.height, im.width
        o = proc(images=[im], text="<image>", return_tensors="np")
        cnt = int((np.asarray(o["input_ids"]) == image_id).sum())
        counts.append(cnt)
        entry = {"size_hw": [h, w]}
        if kind == "llava_next":
            best, npatch, grid, rows, cols, n_formula = anyres_layout(h, w)
            entry.update({"best_resolution_hw": list(best), "num_patches": npatch, "grid_tiles_hw": list(grid),
                          "unpadded_rows_cols": [rows, cols], "n_tokens": cnt})
            if n_formula != cnt:
                raise RuntimeError(f"{name}: processor counts {cnt} image tokens for {h}x{w}, spec formula {n_formula}")
        else:
            entry.update({"num_patches": 1, "n_tokens": cnt})
            if cnt != (TILE // PATCH) ** 2:
                raise RuntimeError(f"{name}: processor counts {cnt} image tokens, wanted {(TILE // PATCH) ** 2}")
        per_image.append(entry)
    ids, k = [], 0
    for i in base_ids:
        if i == image_id:
            entry = per_image[k]
            entry["token_offset"] = len(ids)
            ids.extend([image_id] * counts[k])
            k += 1
        else:
            ids.append(i)

    # the full processor, as a cross-check of the ids, and the model inputs
    if n_img:
        out = proc(images=imgs, text=prompt, return_tensors="pt")
    else:
        out = proc(text=prompt, return_tensors="pt")
    proc_ids = [int(x) for x in out["input_ids"][0]]
    checks["processor_ids_equal"] = proc_ids == ids
    if proc_ids != ids:
        checks["processor_ids"] = proc_ids
        print(f"  WARNING {name}: processor ids differ from tokenizers' ids (tokenizers' are the reference)")
    try:
        at = __import__("transformers").AutoTokenizer.from_pretrained(model_dir)
        at_ids = at(prompt)["input_ids"]
        checks["autotokenizer_unexpanded_ids_equal"] = list(at_ids) == list(base_ids)
    except Exception as e:
        checks["autotokenizer_error"] = repr(e)[:300]

    pixel_values = image_sizes = None
    pv_list = []
    if n_img:
        pixel_values = out["pixel_values"].to(torch.float32)
        if kind == "llava_next":
            image_sizes = out["image_sizes"]
            got_sizes = [[int(a), int(b)] for a, b in image_sizes.tolist()]
            if got_sizes != [e["size_hw"] for e in per_image]:
                raise RuntimeError(f"{name}: image_sizes {got_sizes}")
            pad_zero = True
            for i, e in enumerate(per_image):
                pv_list.append(pixel_values[i, :e["num_patches"]])
                if pixel_values.shape[1] > e["num_patches"]:
                    pad_zero &= bool((pixel_values[i, e["num_patches"]:] == 0).all())
            checks["pixel_padding_is_zero"] = pad_zero
        else:
            pv_list = [pixel_values[i:i + 1] for i in range(n_img)]
        if ctx.ip_from_file is not None:
            try:
                o2 = ctx.ip_from_file(imgs, return_tensors="pt")["pixel_values"].to(torch.float32)
                checks["preprocessor_config_roundtrip_equal"] = bool(torch.equal(o2, pixel_values))
            except Exception as e:
                checks["preprocessor_config_roundtrip_error"] = repr(e)[:300]

    input_ids = torch.tensor([ids], dtype=torch.long)
    ht = dims["text"]["hidden"]
    img_kw = {}
    if n_img:
        img_kw["pixel_values"] = pixel_values
        if image_sizes is not None:
            img_kw["image_sizes"] = image_sizes

    tensors = {}
    case_dir = os.path.join(cases_dir, case["name"])
    os.makedirs(case_dir, exist_ok=True)
    packed = None
    with torch.no_grad():
        if n_img:
            step(f"{name}: vision features, projector, packing")
            cat = torch.cat(pv_list, 0)
            vout = core.vision_tower(cat, output_hidden_states=True)
            hs = vout.hidden_states
            if len(hs) != dims["vision"]["layers"] + 1:
                raise RuntimeError(f"{name}: {len(hs)} vision hidden states for {dims['vision']['layers']} layers")
            sel = hs[-2][:, 1:]
            proj = core.multi_modal_projector(sel)
            npp = [e["num_patches"] for e in per_image]
            proj_split = list(torch.split(proj, npp, 0))
            if kind == "llava_next":
                ours = pack_features_ours(proj_split, [e["size_hw"] for e in per_image], core.image_newline,
                                          TILE // PATCH)
                packed_list = ours
                try:
                    r = core.pack_image_features(proj_split, image_sizes, vision_feature_select_strategy="default",
                                                 image_newline=core.image_newline)
                    hf_list = r[0] if isinstance(r, tuple) else r
                    hf_cat = torch.cat(list(hf_list), 0)
                    checks["hf_pack_image_features_max_abs_diff"] = float((hf_cat - torch.cat(ours, 0)).abs().max())
                    packed_list = list(hf_list)   # transformers' own packing is the reference
                except Exception as e:
                    checks["hf_pack_image_features_error"] = repr(e)[:300]
                packed = torch.cat(packed_list, 0)
            else:
                packed = proj.reshape(-1, ht)
            if packed.shape[0] != sum(counts):
                raise RuntimeError(f"{name}: {packed.shape[0]} packed features for {sum(counts)} image tokens")
            tensors["pixel_values"] = write_tensor(case_dir, "pixel_values.bin", cat, {})
            tensors["vision_features"] = write_tensor(case_dir, "vision_features.bin", sel, {})
            tensors["projected"] = write_tensor(case_dir, "projected.bin", proj, {})
            tensors["image_features"] = write_tensor(case_dir, "image_features.bin", packed, {})
            # transformers' own get_image_features, where its return can be read (informative)
            try:
                g = core.get_image_features(pixel_values=pixel_values, **({"image_sizes": image_sizes}
                                            if image_sizes is not None else {}),
                                            vision_feature_layer=-2, vision_feature_select_strategy="default")
                cand = g
                if hasattr(g, "pooler_output") and g.pooler_output is not None:
                    cand = g.pooler_output
                elif hasattr(g, "last_hidden_state") and not isinstance(g, torch.Tensor):
                    cand = g.last_hidden_state
                if isinstance(cand, (list, tuple)):
                    cand = torch.cat([c.reshape(-1, c.shape[-1]) for c in cand], 0)
                cand = cand.reshape(-1, cand.shape[-1])
                checks["hf_get_image_features_type"] = type(g).__name__
                if cand.shape == packed.shape:
                    checks["hf_get_image_features_vs_image_features_max_abs_diff"] = float((cand - packed).abs().max())
                elif cand.shape[0] == proj.reshape(-1, ht).shape[0]:
                    checks["hf_get_image_features_vs_projected_max_abs_diff"] = float(
                        (cand - proj.reshape(-1, ht)).abs().max())
                else:
                    checks["hf_get_image_features_shape"] = list(cand.shape)
            except Exception as e:
                checks["hf_get_image_features_error"] = repr(e)[:300]

        step(f"{name}: greedy decoding, {MAX_NEW_TOKENS} steps, full recompute")
        seq = list(ids)
        logits_steps, margins, gen = [], [], []
        attn = None
        for s in range(MAX_NEW_TOKENS):
            x = torch.tensor([seq], dtype=torch.long)
            o = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False, **img_kw)
            lg = o.logits[0, -1].to(torch.float32).clone()
            if s == 0 and n_img and getattr(o, "image_hidden_states", None) is not None:
                ihs = o.image_hidden_states
                if isinstance(ihs, (list, tuple)):
                    ihs = torch.cat(list(ihs), 0)
                ihs = ihs.reshape(-1, ihs.shape[-1])
                if ihs.shape == packed.shape:
                    checks["forward_image_hidden_states_max_abs_diff"] = float((ihs - packed).abs().max())
            top = torch.topk(lg, 2)
            nxt = int(top.indices[0])
            if nxt != int(torch.argmax(lg)):
                raise RuntimeError("topk and argmax disagree")
            logits_steps.append(lg)
            margins.append(float(top.values[0] - top.values[1]))
            gen.append(nxt)
            if nxt == image_id:
                raise RuntimeError(f"{name}: greedy produced the <image> id at step {s}")
            seq.append(nxt)
        logits = torch.stack(logits_steps, 0)

        # the intermediates are what the model used: same logits through inputs_embeds
        step(f"{name}: consistency checks (inputs_embeds, generate)")
        emb = model.get_input_embeddings()(input_ids).clone()
        if n_img:
            emb[0, input_ids[0] == image_id] = packed.to(emb.dtype)
        le = model(inputs_embeds=emb, attention_mask=torch.ones_like(input_ids), use_cache=False).logits[0, -1]
        d = float((le.float() - logits[0]).abs().max())
        checks["inputs_embeds_logits_max_abs_diff"] = d
        if d > 1e-4:
            raise RuntimeError(f"{name}: logits through inputs_embeds differ by {d}: the recorded "
                               f"image_features are not what the model used")
        try:
            g = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **img_kw,
                               max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                               num_beams=1, output_logits=True, return_dict_in_generate=True,
                               pad_token_id=tok["pad_id"])
            gids = [int(t) for t in g.sequences[0, input_ids.shape[1]:]]
            checks["generate_ids_equal"] = gids == gen
            if gids != gen:
                checks["generate_ids"] = gids
            gl = torch.stack([t[0].float() for t in g.logits], 0)
            if gl.shape == logits.shape:
                checks["generate_logits_max_abs_diff"] = float((gl - logits).abs().max())
        except Exception as e:
            checks["generate_error"] = repr(e)[:300]

    tensors["logits"] = write_tensor(case_dir, "logits.bin", logits, {})
    eos_step = next((i for i, t in enumerate(gen) if t == 2), None)
    text = ctx.tokenizer.decode(gen, skip_special_tokens=True)
    single_turn = len(case["messages"]) == 1
    user_text = "".join(p["text"] for p in case["messages"][-1]["content"] if p["type"] == "text")
    rec = {
        "name": case["name"],
        "model": dims["name"],
        "messages": case["messages"],
        "prompt": prompt,
        "chat_prompt": user_text if (single_turn and kind == "llava_next") else None,
        "images": ["images/" + fn for fn in case["images"]],
        "image_info": per_image,
        "image_sizes": [e["size_hw"] for e in per_image],
        "patches_per_image": [e["num_patches"] for e in per_image],
        "image_token_id": image_id,
        "input_ids_unexpanded": base_ids,
        "input_ids": ids,
        "n_prompt_tokens": len(ids),
        "n_image_tokens": sum(counts),
        "image_token_counts": counts,
        "max_new_tokens": MAX_NEW_TOKENS,
        "generated_ids": gen,
        "generated_text": text,
        "eos_token_id": 2,
        "eos_step": eos_step,
        "margins": margins,
        "min_margin": min(margins),
        "min_margin_first32": min(margins[:MARGIN_STEPS]),
        "steps_margin_below_1e-2": sum(1 for m in margins if m < MARGIN_OK),
        "tensors": tensors,
        "checks": checks,
    }
    write_json(os.path.join(case_dir, "case.json"), rec)
    return rec


def save_pretrained_names(model):
    """Which tensor names this transformers version's save_pretrained writes (informative:
    the C loader canonicalises them). One example per distinct prefix pattern."""
    import glob
    import re
    import tempfile
    try:
        with tempfile.TemporaryDirectory() as d:
            model.save_pretrained(d)
            names = []
            for fn in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
                with open(fn, "rb") as f:
                    n = int.from_bytes(f.read(8), "little")
                    names += [k for k in json.loads(f.read(n)) if k != "__metadata__"]
        seen = {}
        for k in sorted(names):
            seen.setdefault(re.sub(r"\.\d+\.", ".N.", k), k)
        return sorted(seen.values())
    except Exception as e:
        return ["error: " + repr(e)[:300]]


def build_and_run(ctx, dims, cases, weight_seed):
    model_dir = os.path.join(ctx.outdir, dims["name"])
    if os.path.exists(model_dir):
        shutil.rmtree(model_dir)
    weights, files, never = build_model_dir(ctx, dims, model_dir, weight_seed)
    model, resolved = load_model(ctx, dims, model_dir, weights)
    step(f"{dims['name']}: processor")
    proc, ip, pchecks = make_processor(ctx, dims, model_dir)
    pchecks["save_pretrained_names"] = save_pretrained_names(model)
    cases_dir = os.path.join(model_dir, "cases")
    recs = [run_case(ctx, dims, model, proc, ip, c, model_dir, cases_dir) for c in cases]
    score = min(r["min_margin_first32"] for r in recs)
    info = {"dir": dims["name"], "class": type(model).__name__, "model_type": dims["kind"],
            "weight_seed": weight_seed, "weight_files": files, "n_tensors": len(weights),
            "n_params": int(sum(w.size for w in weights.values())),
            "tokenizer_size": ctx.tok["size"], "vocab_size": ctx.vocab_size,
            "never_generated_ids": never if len(never) < 80 else None,
            "lm_head_scaled_rows": {"ids": [0, 1, 2, ctx.tok["image_id"], ctx.tok["pad_id"]],
                                    "range": [ctx.tok["size"], ctx.vocab_size], "factor": 0.02},
            "resolved_config": resolved, "processor_checks": pchecks}
    return recs, score, info


def main():
    if len(sys.argv) != 2:
        print(__doc__.split("\n\n")[1])
        print("usage: make_forward_fixtures.py OUTDIR")
        return 2
    t_start = time.time()
    ctx = Ctx()
    ctx.outdir = os.path.abspath(sys.argv[1])
    os.makedirs(ctx.outdir, exist_ok=True)

    step("imports")
    import numpy as np
    import PIL
    import safetensors
    import tokenizers
    import torch
    import transformers
    from tokenizers import Tokenizer
    versions = {"python": sys.version.split()[0], "torch": torch.__version__,
                "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                "safetensors": safetensors.__version__, "numpy": np.__version__, "Pillow": PIL.__version__}
    print("  versions:", versions)
    torch.manual_seed(SEED)
    torch.set_num_threads(N_THREADS)
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
    except Exception as e:
        print("  note: use_deterministic_algorithms:", e)

    step("tokenizer: train BPE on the inline text and write tokenizer.json")
    alphabet, new_tokens, merges = train_bpe(CORPUS, TOKENIZER_BASE_VOCAB)
    tj, n_base, image_id, pad_id = build_tokenizer_json(alphabet, new_tokens, merges)
    json_text = json.dumps(tj, ensure_ascii=False, indent=2) + "\n"
    tk = Tokenizer.from_str(json_text)
    size = tk.get_vocab_size(with_added_tokens=True)
    if size != n_base + 2 or tk.token_to_id("<image>") != image_id or tk.token_to_id("<pad>") != pad_id \
            or tk.token_to_id("<0x0A>") != 13 or tk.token_to_id("<s>") != 1:
        raise RuntimeError(f"tokenizer ids off: size {size}, base {n_base}, <image> {tk.token_to_id('<image>')}")
    for s in ["The picture shows a red circle.", "What is shown?\nA cat, 42 times: \u00e9t\u00e9 \u4e2d!",
              "[INST] Hello [/INST]"]:
        e = tk.encode(s)
        if e.ids[0] != 1 or tk.decode(e.ids, skip_special_tokens=True) != s:
            raise RuntimeError(f"tokenizer round trip failed for {s!r}: {e.ids} -> "
                               f"{tk.decode(e.ids, skip_special_tokens=True)!r}")
    ctx.tokenizer = tk
    ctx.tok = {"json_text": json_text, "n_base": n_base, "image_id": image_id, "pad_id": pad_id, "size": size}
    ctx.vocab_size = ((size + 63) // 64) * 64
    print(f"  tokenizer: {n_base} base pieces ({len(alphabet)} characters, {len(merges)} merges), "
          f"<image>={image_id}, <pad>={pad_id}, config vocab_size {ctx.vocab_size}")

    step("images")
    images = make_images(os.path.join(ctx.outdir, "images"))

    models, all_cases = {}, []
    for k, (dims, cases) in enumerate([(NEXT_DIMS, NEXT_CASES), (LLAVA15_DIMS, LLAVA15_CASES)]):
        t0 = time.time()
        best = None
        for attempt in range(MAX_ATTEMPTS):
            wseed = SEED + 1000 * (k + 1) + attempt
            recs, score, info = build_and_run(ctx, dims, cases, wseed)
            print(f"  {dims['name']} seed {wseed}: smallest top-1 margin in the first {MARGIN_STEPS} steps "
                  f"{score:.4g}")
            if best is None or score > best[0]:
                best = (score, wseed)
            if score >= MARGIN_OK or time.time() - t0 > RETRY_BUDGET_S:
                break
        if best[1] != wseed:
            print(f"  {dims['name']}: rebuilding with the best seed {best[1]}")
            recs, score, info = build_and_run(ctx, dims, cases, best[1])
        if score < MARGIN_OK:
            print(f"  WARNING {dims['name']}: a case has a top-1 margin of {score:.3g} < {MARGIN_OK} "
                  f"within the first {MARGIN_STEPS} steps")
        info["attempts"] = attempt + 1
        models[dims["name"]] = info
        for r in recs:
            all_cases.append({"model": dims["name"], "name": r["name"],
                              "case": f"{dims['name']}/cases/{r['name']}/case.json",
                              "n_prompt_tokens": r["n_prompt_tokens"], "n_image_tokens": r["n_image_tokens"],
                              "min_margin": r["min_margin"], "min_margin_first32": r["min_margin_first32"]})

    step("index.json and summary")
    index = {
        "format": "llava-forward-fixtures/1",
        "generator": "tools/reference/make_forward_fixtures.py",
        "seed": SEED,
        "versions": versions,
        "reference": {"device": "cpu", "dtype": "float32", "attn_implementation": "eager",
                      "torch_threads": N_THREADS, "deterministic_algorithms": True,
                      "weights": "fp16 in the files, upcast exactly to float32",
                      "decoding": "greedy argmax, no KV cache: the whole sequence is recomputed each step "
                                  "(pixel_values passed every step); logits[i] = last position's logits "
                                  "before generated_ids[i]",
                      "max_new_tokens": MAX_NEW_TOKENS,
                      "input_ids": "tokenizers (tokenizer.json) on the prompt, each <image> replaced by the "
                                   "processor's count of image tokens"},
        "tokenizer": {"n_base": ctx.tok["n_base"], "size": ctx.tok["size"], "vocab_size": ctx.vocab_size,
                      "unk": 0, "bos": 1, "eos": 2, "bytes": [3, 258], "image": image_id, "pad": pad_id,
                      "n_merges": len(merges)},
        "images": images,
        "models": models,
        "cases": all_cases,
    }
    write_json(os.path.join(ctx.outdir, "index.json"), index)
    total = dir_bytes(ctx.outdir)
    index["total_bytes"] = total
    write_json(os.path.join(ctx.outdir, "index.json"), index)

    print()
    print(f"{'case':34} {'prompt':>6} {'image':>6} {'min margin':>11} {'KB':>7}  checks")
    for c in all_cases:
        cdir = os.path.join(ctx.outdir, os.path.dirname(c["case"]))
        rec = json.load(open(os.path.join(ctx.outdir, c["case"])))
        ch = rec["checks"]
        flags = []
        for key in ("processor_ids_equal", "generate_ids_equal", "chat_template_render_equal"):
            if key in ch:
                flags.append(f"{key.replace('_equal', '')}={'ok' if ch[key] else 'DIFF'}")
        if "generate_logits_max_abs_diff" in ch:
            flags.append(f"gen_logits_diff={ch['generate_logits_max_abs_diff']:.1e}")
        print(f"{c['model'] + '/' + c['name']:34} {c['n_prompt_tokens']:6d} {c['n_image_tokens']:6d} "
              f"{c['min_margin']:11.4g} {dir_bytes(cdir) / 1024:7.1f}  {' '.join(flags)}")
    for m in models:
        print(f"{m:34} model dir {dir_bytes(os.path.join(ctx.outdir, m)) / 1e6:.2f} MB (cases included), "
              f"{models[m]['n_params']} parameters, seed {models[m]['weight_seed']}")
    print(f"total {total / 1e6:.2f} MB in {ctx.outdir}; {time.time() - t_start:.1f} s")
    if total > 8e6:
        print("WARNING: more than 8 MB")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        print(f"\nFAILED at step: {_STEP[0]}", file=sys.stderr, flush=True)
        sys.exit(1)
