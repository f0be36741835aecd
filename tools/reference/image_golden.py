#!/usr/bin/env python3
"""Golden data for the image pipeline, from Pillow + transformers' PIL-backend
image processors (the reference; the torchvision default is not bit-exact).

Run on the GPU machine (transformers 5.x, Pillow, numpy):
    python3 tools/reference/image_golden.py tests/assets/images TOKENIZER_JSON OUTDIR
Writes OUTDIR/golden.json and OUTDIR/decoded_rgb.tar (Pillow's decoded RGB of
every lossy image as PNG, to tell decoder-library differences apart from ours).

Per image: what Pillow opened (format, mode, size), the RGB after
load_image (exif_transpose + convert("RGB")) as zlib crc32 of its (h, w, 3)
bytes, and for three processors the crc32 of pixel_values' float32 bytes,
whole and per patch:
  llava_next  LlavaNextImageProcessorPil, llava-v1.6-mistral-7b-hf's config
  clip        CLIPImageProcessor (PIL), llava-1.5-7b-hf's config (shortest 336, crop 336)
  llava_pad   LlavaImageProcessor (PIL) with do_pad (pad to square with the mean colour)
Plus token_sweep: [h, w, n] for >= 20,000 sizes from LlavaNextProcessor's own
count, cross-checked against counting <image> ids after the full processor on
a sample.
"""
import io, json, os, random, sys, tarfile, zlib

import numpy as np
import PIL
from PIL import Image, ImageOps
import transformers
from transformers.image_utils import load_image

img_dir, tok_json, out_dir = sys.argv[1:4]
os.makedirs(out_dir, exist_ok=True)

MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]

def first_class(*names):
    for n in names:
        c = getattr(transformers, n, None)
        if c is not None:
            return c
    raise ImportError("none of " + ", ".join(names))

NextP = first_class("LlavaNextImageProcessorPil")
common = dict(do_resize=True, size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
              resample=3, do_center_crop=True, do_rescale=True, rescale_factor=1 / 255,
              do_normalize=True, image_mean=MEAN, image_std=STD, do_convert_rgb=True)
procs = {"llava_next": NextP(**common, image_grid_pinpoints=PINPOINTS, do_pad=True)}
for key, cls, extra in (("clip", "CLIPImageProcessorPil", {}),
                        ("llava_pad", "LlavaImageProcessorPil", {"do_pad": True})):
    try:
        procs[key] = first_class(cls)(**common, **extra)
    except Exception as e:  # reported, not fatal: the anyres path is the one that matters most
        print(f"no {cls}: {e!r}")
print("transformers", transformers.__version__, "Pillow", PIL.__version__,
      {k: type(v).__name__ for k, v in procs.items()})

def crc(a):
    return zlib.crc32(np.ascontiguousarray(a).tobytes()) & 0xFFFFFFFF

cases, tar_buf = [], io.BytesIO()
tar = tarfile.open(fileobj=tar_buf, mode="w")
for name in sorted(os.listdir(img_dir)):
    path = os.path.join(img_dir, name)
    case = {"file": "images/" + name}
    try:
        with Image.open(path) as im:
            case.update(format=im.format, mode=im.mode, open_size=list(im.size),
                        n_frames=getattr(im, "n_frames", 1),
                        exif_orientation=im.getexif().get(0x0112, 0))
            rgb = ImageOps.exif_transpose(im).convert("RGB")
        ref = load_image(path)
        assert np.array_equal(np.asarray(ref), np.asarray(rgb)), "load_image differs"
    except Exception as e:
        case["error"] = f"{type(e).__name__}: {e}"
        cases.append(case)
        print(name, "ERROR", case["error"])
        continue
    a = np.asarray(rgb)
    case.update(width=rgb.width, height=rgb.height, rgb_crc32=crc(a))
    if case["format"] in ("JPEG", "WEBP", "MPO"):
        b = io.BytesIO(); rgb.save(b, format="PNG")
        ti = tarfile.TarInfo(name + ".rgb.png"); ti.size = b.tell(); b.seek(0)
        tar.addfile(ti, b)
    for key, p in procs.items():
        out = p(rgb, return_tensors="np")
        pv = np.asarray(out["pixel_values"], dtype=np.float32)[0]
        if pv.ndim == 3:
            pv = pv[None]
        case[key] = {"shape": list(pv.shape), "crc32": crc(pv),
                     "patch_crc32": [crc(t) for t in pv],
                     "first_values": [float(x) for x in pv.reshape(-1)[:4]]}
        if key == "llava_next":
            case[key]["image_sizes"] = [int(x) for x in np.asarray(out["image_sizes"])[0]]
    cases.append(case)
    print(name, case["mode"], case["width"], case["height"], case["llava_next"]["shape"])
tar.close()
open(os.path.join(out_dir, "decoded_rgb.tar"), "wb").write(tar_buf.getvalue())

# ---- image-token counts
from tokenizers import AddedToken, Tokenizer
from transformers import LlavaNextProcessor, PreTrainedTokenizerFast
t = Tokenizer.from_file(tok_json)
t.add_special_tokens([AddedToken("<image>", special=True, normalized=False),
                      AddedToken("<pad>", special=True, normalized=False)])
ptok = PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="</s>",
                               unk_token="<unk>", pad_token="<pad>")
proc = LlavaNextProcessor(image_processor=procs["llava_next"], tokenizer=ptok, patch_size=14,
                          vision_feature_select_strategy="default", image_token="<image>",
                          num_additional_image_tokens=1)

rng = random.Random(7)
sizes = set()
while len(sizes) < 9000:
    sizes.add((rng.randint(1, 4000), rng.randint(1, 4000)))
for h in range(1, 50):
    for w in range(1, 50):
        sizes.add((h, w))
# where unpad rounding can flip: H * cur / W (or W * cur / H) at or next to an integer
widths = rng.sample(range(1, 4001), 45)
for W in widths:
    for cur in (24, 48, 72):
        for k in range(1, cur + 1):
            H0 = (k * W) // cur
            for H in (H0 - 1, H0, H0 + 1):
                if 1 <= H <= 4000:
                    sizes.add((H, W)); sizes.add((W, H))
def count(h, w):
    # the processor's __call__ path: features per image, then minus the CLS
    # token for the "default" select strategy (num_additional_image_tokens)
    return int(proc._get_number_of_features(h, w, 336, 336)) - 1

sweep = [[h, w, count(h, w)] for (h, w) in sorted(sizes)]
# cross-check the count against the full processor on a sample
check = rng.sample(sweep, 60) + [[s[0], s[1], 0] for s in [(1, 1), (336, 336), (899, 1024)]]
for h, w, n in check:
    ids = proc(images=Image.new("RGB", (w, h)), text="<image>", return_tensors="np")["input_ids"][0]
    got = int((ids == ptok.convert_tokens_to_ids("<image>")).sum())
    want = count(h, w)
    assert got == want, (h, w, got, want)
print(f"token sweep: {len(sweep)} sizes; full-processor cross-check on {len(check)} sizes ok")

json.dump({"transformers_version": transformers.__version__, "pillow_version": PIL.__version__,
           "processors": {k: type(v).__name__ for k, v in procs.items()},
           "cases": cases, "token_sweep": sweep},
          open(os.path.join(out_dir, "golden.json"), "w"), separators=(",", ":"))
print(len(cases), "images")
