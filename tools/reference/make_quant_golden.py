#!/usr/bin/env python3
"""Golden for llava-quantize's MLX INT8/INT4 output (issue 7): transformers run on the
dequantised weights of models/demo, and the bit-exact checksums of the quantized tensors.

Run on the GPU machine (transformers 5.17, torch 2.11, tokenizers, safetensors, numpy,
Pillow; no MLX needed; the reference runs on the CPU in float32 with eager attention, in
well under 3 minutes):

    python3 tools/reference/make_quant_golden.py --model models/demo --out $OUT/quant

and the lead copies $OUT/quant/* to tests/data/quant/. Here (numpy only, no torch) the
quantization half runs alone, to check the C quantizer's checksums before the GPU run:

    python3 tools/reference/make_quant_golden.py --model models/demo --out /tmp/qg --numpy-only

What it writes (OUT/golden.json + OUT/logits.bin, little-endian float32):
  golden.json = {
    "model_sha256": sha256 of <model>/model.safetensors (the test skips on a mismatch:
                    models/demo may be retrained),
    "versions": {...}, "vocab": V, "eos_id": E, "steps": N,
    "configs": [ {"name": "int4_g64", "bits": 4, "group": 64,
                  "tensors": {"<module>.weight": {"weight": crc32, "scales": crc32,
                                                  "biases": crc32}, ...},
                  "cases": [ {"name", "image", "question", "prompt_ids": [...],
                              "ids": [greedy ids], "margins": [top1 - top2 per step],
                              "logits_offset": float index into logits.bin,
                              "n_steps": steps recorded}, ... ] }, ...,
                 and one "float" config (the fp16 weights as stored, no quantization) ] }
  logits.bin  = for each config, case and step: the last-position logits, V floats.

Quantization (shared/spec/formats.md §3.7, MLX's current affine algorithm), per group of G
consecutive values of a row, float32 math, n = 2^bits - 1:
    scale = max((max - min) / n, 1e-7); if |min| > |max|: edge = min else edge = max and
    scale = -scale; q0 = rint(edge / scale) (half to even); if q0 != 0: scale = edge / q0,
    bias = edge, else bias = 0; q = clip(rint((w - bias) / scale), 0, n)
codes packed LSB-first into uint32 words (§3.5), scale and bias stored as fp16. The
dequantised weight is fp16(scale) * q + fp16(bias) in float32. Which modules: the layout
llava-quantize writes by default (mlx-vlm's current convert): every Linear and Embedding of
the language model (q/k/v/o, gate/up/down, embed_tokens, lm_head) whose in-dim is a multiple
of G; vision tower and projector stay fp16.

crc32 (zlib) is taken over the little-endian bytes: the uint32 words of the packed weight
[rows, cols*bits/32], the fp16 scales and biases [rows, cols/G].

Cases: a few (image, question) pairs of <model>/heldout (and <model>/samples if it has PNGs)
plus one text-only prompt, rendered "[INST] <image>\\n{question} [/INST]" (the checkpoint's
chat template), ids from the checkpoint's own tokenizer through LlavaNextProcessor, pixels
through LlavaNextImageProcessorPil. Greedy decoding by recomputing the whole sequence each
step (no KV cache), STEPS steps or until EOS: logits[0, -1] at each step.
"""
import argparse
import hashlib
import json
import os
import struct
import sys
import time
import zlib

import numpy as np

CONFIGS = [(8, 32), (8, 64), (8, 128), (4, 32), (4, 64), (4, 128)]
STEPS = 12
N_IMAGE_CASES = 2
TEXT_CASE = "Tell me about shapes and colors."
QUANT_LEAVES = (".q_proj.weight", ".k_proj.weight", ".v_proj.weight", ".o_proj.weight",
                ".gate_proj.weight", ".up_proj.weight", ".down_proj.weight",
                ".embed_tokens.weight", ".lm_head.weight")


def step(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- safetensors (numpy)
DTYPES = {"F16": np.float16, "F32": np.float32, "BF16": None, "U32": np.uint32, "I64": np.int64}


def read_safetensors(path):
    """name -> float32 array (F16/BF16/F32) of one file; other dtypes skipped."""
    with open(path, "rb") as f:
        buf = f.read()
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b0, b1 = e["data_offsets"]
        raw = buf[base + b0: base + b1]
        if e["dtype"] == "BF16":
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif e["dtype"] in ("F16", "F32"):
            a = np.frombuffer(raw, dtype=np.dtype(DTYPES[e["dtype"]]).newbyteorder("<")).astype(np.float32)
        else:
            continue
        out[name] = a.reshape(e["shape"])
    return out


def load_weights(model_dir):
    idx = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(idx):
        files = sorted(set(json.load(open(idx))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    w = {}
    for fn in files:
        w.update(read_safetensors(os.path.join(model_dir, fn)))
    return w


# ---------------------------------------------------------------- MLX affine (numpy)
def quantize(w, bits, group):
    """w float32 [rows, cols] -> (packed uint32 [rows, cols*bits/32], scales f32, biases f32)."""
    rows, cols = w.shape
    n = np.float32(2 ** bits - 1)
    eps = np.float32(1e-7)
    g = w.reshape(rows, cols // group, group).astype(np.float32)
    w_min = g.min(axis=2)
    w_max = g.max(axis=2)
    scale = ((w_max - w_min) / n).astype(np.float32)
    scale = np.where(scale > eps, scale, eps).astype(np.float32)
    min_edge = np.abs(w_min) > np.abs(w_max)
    scale = np.where(min_edge, scale, -scale).astype(np.float32)
    edge = np.where(min_edge, w_min, w_max).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q0 = np.rint(edge / scale).astype(np.float32)
        scale = np.where(q0 != 0, edge / q0, scale).astype(np.float32)
    bias = np.where(q0 != 0, edge, np.float32(0)).astype(np.float32)
    q = np.rint((g - bias[:, :, None]) / scale[:, :, None]).astype(np.float32)
    q = np.clip(np.nan_to_num(q, nan=0.0), 0, n).astype(np.uint32).reshape(rows, cols)
    per = 32 // bits
    assert 32 % bits == 0, "only 2, 4, 8 bits pack whole codes per word here"
    q = q.reshape(rows, cols // per, per)
    packed = np.zeros((rows, cols // per), dtype=np.uint32)
    for k in range(per):
        packed |= q[:, :, k] << np.uint32(bits * k)
    return packed, scale, bias


def dequantize(packed, s16, b16, bits, group):
    rows, words = packed.shape
    per = 32 // bits
    mask = np.uint32(2 ** bits - 1)
    q = np.stack([(packed >> np.uint32(bits * k)) & mask for k in range(per)], axis=2)
    q = q.reshape(rows, words * per).astype(np.float32)
    s = np.repeat(s16.astype(np.float32), group, axis=1)
    b = np.repeat(b16.astype(np.float32), group, axis=1)
    return (s * q + b).astype(np.float32)


def crc(a):
    return zlib.crc32(np.ascontiguousarray(a).tobytes()) & 0xFFFFFFFF


def quantized_names(weights, group):
    return sorted(n for n, a in weights.items()
                  if n.startswith("language_model.") and n.endswith(QUANT_LEAVES) and a.ndim == 2
                  and a.shape[1] % group == 0)


def quantize_model(weights, bits, group):
    """(checksums, dequantised weights) of one (bits, group)."""
    sums, deq = {}, {}
    for name in quantized_names(weights, group):
        packed, scale, bias = quantize(weights[name], bits, group)
        s16, b16 = scale.astype("<f2"), bias.astype("<f2")
        sums[name] = {"weight": crc(packed.astype("<u4")), "scales": crc(s16), "biases": crc(b16)}
        deq[name] = dequantize(packed, s16, b16, bits, group)
    return sums, deq


# ---------------------------------------------------------------- cases
def pick_cases(model_dir):
    cases = []
    sdir = os.path.join(model_dir, "samples")
    if os.path.isdir(sdir):
        pngs = sorted(f for f in os.listdir(sdir) if f.endswith(".png"))
        for f in pngs[:1]:
            cases.append(dict(name="sample_" + f[:-4], image=os.path.join("samples", f),
                              question="Describe the image."))
    q = json.load(open(os.path.join(model_dir, "heldout", "questions.json")))["questions"]
    seen = set()
    for e in q:
        if len(cases) >= N_IMAGE_CASES:
            break
        if e["image_id"] in seen:
            continue
        seen.add(e["image_id"])
        fn = "heldout_%012d.png" % e["image_id"]
        cases.append(dict(name="heldout_q%d" % e["question_id"], image=os.path.join("heldout", "images", fn),
                          question=e["question"]))
    cases.append(dict(name="text_only", image=None, question=TEXT_CASE))
    return cases


def run_reference(model_dir, weights, configs_deq, cases, out_dir):
    import torch
    import transformers
    from PIL import Image
    from tokenizers import Tokenizer
    torch.set_num_threads(4)
    step("loading the model (float32, eager attention)")
    model = transformers.LlavaNextForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    pp = json.load(open(os.path.join(model_dir, "preprocessor_config.json")))
    keys = ["do_resize", "size", "crop_size", "resample", "do_center_crop", "do_rescale", "rescale_factor",
            "do_normalize", "image_mean", "image_std", "do_convert_rgb", "image_grid_pinpoints", "do_pad"]
    ip = transformers.LlavaNextImageProcessorPil(**{k: pp[k] for k in keys if k in pp})
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json")),
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    vc = cfg["vision_config"]
    proc = transformers.LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=vc["patch_size"],
                                           vision_feature_select_strategy="default", image_token="<image>",
                                           num_additional_image_tokens=1)
    gen = json.load(open(os.path.join(model_dir, "generation_config.json")))
    eos = gen.get("eos_token_id", 2)
    eos = eos if isinstance(eos, list) else [eos]

    # Parameter name (5.x) -> legacy name, to put the dequantised weights in place.
    def legacy(name):
        for new, old in (("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
                         ("model.vision_tower.", "vision_tower."),
                         ("model.multi_modal_projector.", "multi_modal_projector.")):
            if name.startswith(new):
                rest = name[len(new):]
                if old == "vision_tower." and not rest.startswith("vision_model."):
                    rest = "vision_model." + rest  # 5.x may hold CLIP without its vision_model level
                return old + rest
        return "image_newline" if name == "model.image_newline" else name

    params = dict(model.named_parameters())
    originals = {n: p.detach().clone() for n, p in params.items()}
    for n, p in params.items():  # the model must hold exactly the fp16 values of the file
        ln = legacy(n)
        if ln in weights and not torch.equal(p.detach(), torch.from_numpy(weights[ln])):
            raise SystemExit(f"parameter {n} differs from the file's {ln}")

    inputs = []
    for c in cases:
        text = ("[INST] <image>\n" if c["image"] else "[INST] ") + c["question"] + " [/INST]"
        if c["image"]:
            im = Image.open(os.path.join(model_dir, c["image"])).convert("RGB")
            o = proc(images=[im], text=text, return_tensors="pt")
        else:
            o = proc(text=text, return_tensors="pt")
        inputs.append(o)

    blobs, results = [], []
    offset = 0
    for cname, deq in configs_deq:
        t0 = time.time()
        with torch.no_grad():
            replaced = 0
            for n, p in params.items():
                ln = legacy(n)
                p.copy_(torch.from_numpy(deq[ln]) if ln in deq else originals[n])
                replaced += ln in deq
        if replaced != len(deq):
            raise SystemExit(f"{cname}: {replaced} parameters replaced, {len(deq)} dequantised tensors")
        cres = []
        for c, o in zip(cases, inputs):
            ids = o["input_ids"]
            prompt_ids = [int(x) for x in ids[0]]
            gen_ids, margins = [], []
            off0 = offset
            for _ in range(STEPS):
                kw = dict(input_ids=ids)
                if c["image"]:
                    kw.update(pixel_values=o["pixel_values"], image_sizes=o["image_sizes"])
                with torch.no_grad():
                    logits = model(**kw).logits[0, -1].float()
                top2 = torch.topk(logits, 2)
                nxt = int(top2.indices[0])
                margins.append(float(top2.values[0] - top2.values[1]))
                gen_ids.append(nxt)
                blobs.append(logits.numpy().astype("<f4").tobytes())
                offset += logits.numel()
                if nxt in eos:
                    break
                ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
            cres.append(dict(name=c["name"], image=c["image"], question=c["question"], prompt_ids=prompt_ids,
                             ids=gen_ids, margins=margins, logits_offset=off0, n_steps=len(gen_ids)))
        results.append(cres)
        step(f"{cname}: {len(cases)} cases in {time.time() - t0:.1f}s; ids " +
             " | ".join(" ".join(map(str, r["ids"])) for r in cres))
    with open(os.path.join(out_dir, "logits.bin"), "wb") as f:
        for b in blobs:
            f.write(b)
    versions = {"transformers": transformers.__version__, "torch": torch.__version__, "numpy": np.__version__}
    vocab = int(model.config.text_config.vocab_size)
    return results, versions, vocab, eos[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/demo")
    ap.add_argument("--out", required=True)
    ap.add_argument("--numpy-only", action="store_true", help="checksums only (no torch)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    sha = hashlib.sha256(open(os.path.join(a.model, "model.safetensors"), "rb").read()).hexdigest()
    step(f"model {a.model}: model.safetensors sha256 {sha}")
    weights = load_weights(a.model)
    configs, deqs = [], []
    for bits, group in CONFIGS:
        name = f"int{bits}_g{group}"
        sums, deq = quantize_model(weights, bits, group)
        worst = max(float(np.abs(deq[n] - weights[n]).max()) for n in deq)
        step(f"{name}: {len(sums)} tensors quantized, max |w - dequant(w)| {worst:.4g}")
        configs.append(dict(name=name, bits=bits, group=group, tensors=sums))
        deqs.append((name, deq))
    configs.append(dict(name="float", bits=16, group=0, tensors={}))
    deqs.append(("float", {}))
    doc = dict(model_sha256=sha, steps=STEPS, configs=configs,
               algorithm="formats.md 3.7 (MLX affine, current): float32, rint half-even, fp16 scale/bias")
    if not a.numpy_only:
        cases = pick_cases(a.model)
        results, versions, vocab, eos = run_reference(a.model, weights, deqs, cases, a.out)
        for c, r in zip(configs, results):
            c["cases"] = r
        doc.update(versions=versions, vocab=vocab, eos_id=eos)
    with open(os.path.join(a.out, "golden.json"), "w") as f:
        json.dump(doc, f, indent=1)
    step(f"wrote {a.out}/golden.json in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    sys.exit(main())
