#!/usr/bin/env python3
"""Golden data for the SmolVLM / Idefics3 image processor, from transformers'
PIL-backend processors (LANCZOS; the torchvision backend, transformers 5's
default, swaps LANCZOS for BICUBIC and is NOT bit-exact, so it is refused).

Run on the GPU machine (transformers 5.x, Pillow, numpy):
    python3 tools/reference/smolvlm_image_golden.py tests/assets/images OUTDIR
Writes OUTDIR/golden.json (the lead stores it as
tests/data/smolvlm/image_golden.json; tests/test_image_idefics3.c reads it):

  {"transformers_version", "pillow_version", "numpy_version",
   "configs": {KEY: {"class", "longest_edge", "max_image_size",
                     "do_image_splitting"}, ...},
   "cases": [{"file": "images/<name>", "format", "mode", "open_size",
              "width", "height", "rgb_crc32",       # as tests/data/image/golden.json
              KEY: {"frames", "rows", "cols", "shape",
                    "frame_crc32": [crc32 of each frame's float32 LE bytes, ...],
                    "first_values": [first 4 floats of frame 0],
                    "global_first_values": [first 4 floats of the last frame]}}, ...],
   "idefics3_identical": true/false,    # Idefics3ImageProcessorPil == SmolVLM's on "t512"
   "sweep": {"t512": [[h, w, rows, cols], ...], "t384": [...]},
   "sweep_notes": {...}}                # cross-check counts, disagreements

Configurations (../shared/spec/smolvlm.md §1.1, §3):
  t512           SmolVLM-256M/500M, SmolVLM2-256M/500M: size {longest_edge 2048},
                 max_image_size {longest_edge 512}
  t384           SmolVLM-Instruct, SmolVLM2-2.2B: 1536 / 384
  t512_nosplit   t512 with do_image_splitting false (one 512x512 frame)
  t512_idefics3  t512 with Idefics3ImageProcessorPil (the v1 checkpoints' class)
all with resample 1 (LANCZOS), rescale 1/255, mean = std = 0.5, do_pad,
do_convert_rgb. Images are loaded as image_golden.py does:
transformers.image_utils.load_image (applies EXIF orientation), then
.convert("RGB"); the RGB image is what the processor gets.

The sweep gives, for >= 20,000 (h, w) sizes per configuration, the rows and
cols the processor's own code computes, without pixels: step 1 by the
module-level get_resize_output_image_size (what the processor's resize calls),
steps 2-3 by the processor's own resize_for_vision_encoder and split_images
methods on a zero-stride NumPy view, with the instance's resize replaced by a
stub that only returns a view of the requested size. Every size is also
compared with the processor's get_number_of_image_patches, and ~150 sizes
with the real processor on a synthetic black image of that size.
"""
import importlib
import inspect
import json
import math
import os
import random
import sys
import time
import zlib

import numpy as np
import PIL
from PIL import Image
import transformers
from transformers.image_utils import load_image

img_dir, out_dir = sys.argv[1:3]
os.makedirs(out_dir, exist_ok=True)
T0 = time.time()


def log(*a):
    print(f"[{time.time() - T0:7.1f}s]", *a, flush=True)


log("transformers", transformers.__version__, "Pillow", PIL.__version__, "numpy", np.__version__)

# ---- processors ---------------------------------------------------------------

CLASSES = {  # family: (Pil class name, its module, the backend-switching class name)
    "smolvlm": ("SmolVLMImageProcessorPil",
                "transformers.models.smolvlm.image_processing_pil_smolvlm", "SmolVLMImageProcessor"),
    "idefics3": ("Idefics3ImageProcessorPil",
                 "transformers.models.idefics3.image_processing_pil_idefics3", "Idefics3ImageProcessor"),
}
CONFIGS = {
    "t512": ("smolvlm", 2048, 512, True),
    "t384": ("smolvlm", 1536, 384, True),
    "t512_nosplit": ("smolvlm", 2048, 512, False),
    "t512_idefics3": ("idefics3", 2048, 512, True),
}


def is_pil_backend(p):
    mro = [c.__name__ for c in type(p).__mro__]
    if "PilBackend" in mro:  # the class decides; an attribute could just echo a kwarg
        return True
    if "TorchvisionBackend" in mro:
        return False
    if getattr(p, "backend", None) is not None:
        return p.backend == "pil"
    # transformers 4.x: the slow class (no "Fast" in its name) is the PIL/NumPy one
    return int(transformers.__version__.split(".")[0]) < 5 and not type(p).__name__.endswith("Fast")


def proc_kwargs(L, T, split):
    return dict(do_resize=True, size={"longest_edge": L}, max_image_size={"longest_edge": T},
                resample=1, do_image_splitting=split, do_rescale=True, rescale_factor=1 / 255,
                do_normalize=True, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
                do_pad=True, do_convert_rgb=True)


def make_processor(family, L, T, split):
    kw = proc_kwargs(L, T, split)
    pil_name, mod_name, base_name = CLASSES[family]
    try:  # transformers' lazy module may raise more than AttributeError
        cls = getattr(transformers, pil_name, None)
    except Exception as e:
        log(f"transformers.{pil_name}: {e!r}")
        cls = None
    if cls is None:
        try:
            cls = getattr(importlib.import_module(mod_name), pil_name)
        except Exception as e:
            log(f"no {pil_name} ({e!r}); trying {base_name}(backend='pil')")
    if cls is not None:
        p, how = cls(**kw), pil_name
    else:
        base = getattr(transformers, base_name, None)
        if base is None:
            sys.exit(f"FATAL: transformers has neither {pil_name} nor {base_name}")
        try:
            p, how = base(backend="pil", **kw), f"{base_name}(backend='pil')"
        except Exception as e:
            sys.exit(f"FATAL: {base_name}(backend='pil') failed ({e!r}); only the torchvision "
                     "backend seems available, and it is NOT bit-exact (LANCZOS -> BICUBIC)")
    if not is_pil_backend(p):
        sys.exit(f"FATAL: {how} is not the PIL backend ({type(p).__mro__}); refusing: the "
                 "torchvision backend is not bit-exact")
    log(f"processor {family} L={L} T={T} split={split}: {how} -> {type(p).__module__}."
        f"{type(p).__name__}, backend {getattr(p, 'backend', '?')}")
    return p, how


procs = {}
configs = {}
for key, (family, L, T, split) in CONFIGS.items():
    p, how = make_processor(family, L, T, split)
    procs[key] = p
    configs[key] = {"class": how, "longest_edge": L, "max_image_size": T,
                    "do_image_splitting": split}


def crc(a):
    return zlib.crc32(np.ascontiguousarray(a).tobytes()) & 0xFFFFFFFF


def run(p, image):
    """pixel_values (frames, 3, T, T) float32 LE, rows, cols for one image."""
    out = p(images=image, return_tensors="np", return_row_col_info=True)
    pv = np.asarray(out["pixel_values"])
    assert pv.dtype == np.float32, f"pixel_values are {pv.dtype}, expected float32: check rescale/normalize"
    assert pv.ndim == 5 and pv.shape[0] == 1, pv.shape  # (batch 1, frames, 3, T, T)
    pv = pv[0].astype("<f4", copy=False)
    rows = int(np.asarray(out["rows"]).reshape(-1)[0])
    cols = int(np.asarray(out["cols"]).reshape(-1)[0])
    mask = out.get("pixel_attention_mask")
    if mask is not None:  # one image: every frame is T x T and fully valid
        assert np.asarray(mask).all(), "pixel_attention_mask has zeros for a single image"
    return pv, rows, cols


# ---- images ---------------------------------------------------------------------

cases = []
identical = True
names = sorted(n for n in os.listdir(img_dir) if os.path.isfile(os.path.join(img_dir, n)))
log(f"{len(names)} files under {img_dir}")
for name in names:
    path = os.path.join(img_dir, name)
    case = {"file": "images/" + name}
    try:
        with Image.open(path) as im:
            case.update(format=im.format, mode=im.mode, open_size=list(im.size))
        rgb = load_image(path).convert("RGB")
    except Exception as e:
        case["error"] = f"{type(e).__name__}: {e}"
        cases.append(case)
        log(name, "ERROR", case["error"])
        continue
    a = np.asarray(rgb)
    case.update(width=rgb.width, height=rgb.height, rgb_crc32=crc(a))
    for key, p in procs.items():
        pv, rows, cols = run(p, rgb)
        n = pv.shape[0]
        want = rows * cols + 1 if rows or cols else 1
        assert n == want, (name, key, n, rows, cols)
        case[key] = {"frames": n, "rows": rows, "cols": cols, "shape": list(pv.shape),
                     "frame_crc32": [crc(f) for f in pv],
                     "first_values": [float(x) for x in pv[0].reshape(-1)[:4]],
                     "global_first_values": [float(x) for x in pv[-1].reshape(-1)[:4]]}
        del pv
    if case["t512_idefics3"]["frame_crc32"] != case["t512"]["frame_crc32"]:
        identical = False
        log(name, "NOTE: Idefics3ImageProcessorPil differs from SmolVLM's on t512")
    cases.append(case)
    log(name, case["mode"], f"{case['width']}x{case['height']}",
        {k: f"{case[k]['rows']}x{case[k]['cols']}/{case[k]['frames']}" for k in procs})
log(f"{len(cases)} images; Idefics3 identical to SmolVLM on t512: {identical}")

# ---- size sweep (no pixels) -------------------------------------------------------

ZERO = np.zeros((), np.uint8)


def view(h, w):
    return np.broadcast_to(ZERO, (3, h, w))  # CHW, no memory


def size_hw(size):
    h = getattr(size, "height", None)
    w = getattr(size, "width", None)
    if h is None and isinstance(size, dict):
        h, w = size.get("height"), size.get("width")
    if not h or not w:
        raise RuntimeError(f"probe: unexpected resize size {size!r}")
    return int(h), int(w)


def make_probe(key):
    family, L, T, split = CONFIGS[key]
    probe, _ = make_processor(family, L, T, split)
    mod = sys.modules[type(probe).__module__]  # the processor's own module (its helpers)
    calls = []

    def fake_resize(image, size=None, resample=None, **kw):
        h, w = size_hw(size)
        calls.append((h, w))
        return view(h, w)

    try:  # an instance attribute: the methods' self.resize finds it before the class's
        probe.resize = fake_resize
    except Exception as e:  # else a subclass whose resize is the stub
        log(f"probe {key}: cannot set resize on the instance ({e!r}); using a subclass")
        sub = type("Probe" + type(probe).__name__, (type(probe),),
                   {"resize": lambda self, *a, **k: fake_resize(*a, **k)})
        probe = sub(**proc_kwargs(L, T, split))
    step1 = getattr(mod, "get_resize_output_image_size", None)
    if step1 is None:
        step1 = getattr(importlib.import_module(
            "transformers.models.%s.image_processing_%s" % (family, family)),
            "get_resize_output_image_size")
    log(f"probe {key}: step 1 = {step1.__module__}.get_resize_output_image_size"
        f"{inspect.signature(step1)}")
    return probe, step1, L, T, calls


def probe_size(pr, h, w):
    probe, step1, L, T, calls = pr
    h1, w1 = step1(view(h, w), resolution_max_side=L)
    img2 = probe.resize_for_vision_encoder(view(int(h1), int(w1)), T, resample=1)
    frames, rows, cols = probe.split_images(img2, max_image_size={"longest_edge": T}, resample=1)
    assert len(frames) == (rows * cols + 1 if rows or cols else 1), (h, w, len(frames))
    return (int(h1), int(w1)), tuple(img2.shape[-2:]), int(rows), int(cols)


rng = random.Random(20261206)
sizes = set()
while len(sizes) < 12000:
    sizes.add((rng.randint(1, 4000), rng.randint(1, 4000)))
for h in range(1, 41):
    for w in range(1, 41):
        sizes.add((h, w))
# near multiples of both tile sides, and of the long edges
edges = set()
for T in (384, 512):
    for k in range(1, 11):
        for d in (-2, -1, 0, 1, 2):
            if 1 <= k * T + d <= 4000:
                edges.add(k * T + d)
for L in (1536, 2048):
    for d in (-1, 0, 1):
        edges.add(L + d)
edges |= {1, 2, 3, 4000}
edges = sorted(edges)
for a in edges:
    for b in edges:
        sizes.add((a, b))
    for _ in range(20):
        b = rng.randint(1, 4000)
        sizes.add((a, b)); sizes.add((b, a))
# the spec's worked examples (§3.8) as (h, w)
EXAMPLES = [  # W, H, L, T, step 1 W, H, step 2 W, H, rows, cols
    (100, 80, 2048, 512, 2048, 1638, 2048, 2048, 4, 4),
    (386, 386, 2048, 512, 2048, 2048, 2048, 2048, 4, 4),
    (640, 480, 2048, 512, 2048, 1536, 2048, 1536, 3, 4),
    (800, 600, 2048, 512, 2048, 1536, 2048, 1536, 3, 4),
    (1000, 700, 2048, 512, 2048, 1434, 2048, 1536, 3, 4),
    (1920, 1080, 2048, 512, 2048, 1152, 2048, 1536, 3, 4),
    (1080, 1920, 2048, 512, 1152, 2048, 1536, 2048, 4, 3),
    (3000, 400, 2048, 512, 2048, 274, 2048, 512, 1, 4),
    (100, 80, 1536, 384, 1536, 1228, 1536, 1536, 4, 4),
    (1000, 700, 1536, 384, 1536, 1076, 1536, 1152, 3, 4),
    (3000, 400, 1536, 384, 1536, 204, 1536, 384, 1, 4),
]
for e in EXAMPLES:
    sizes.add((e[1], e[0]))
sizes = sorted(sizes)
log(f"sweep: {len(sizes)} sizes per configuration")

sweep, notes = {}, {}
for key in ("t512", "t384"):
    pr = make_probe(key)
    for W, H, L, T, w1, h1, w2, h2, r, c in EXAMPLES:
        if (L, T) == (pr[2], pr[3]):
            got = probe_size(pr, H, W)
            assert got == ((h1, w1), (h2, w2), r, c), (W, H, got)
    if not pr[4]:
        sys.exit(f"FATAL: probe {key}: the resize stub was never called; the processor's "
                 "methods do not go through self.resize as read from the source")
    log(f"sweep {key}: the spec's worked examples agree ({len(pr[4])} stub resizes so far)")
    proc = procs[key]
    has_count = hasattr(proc, "get_number_of_image_patches")
    if not has_count:
        log(f"sweep {key}: NOTE: no get_number_of_image_patches; that cross-check is skipped")
    entries, disagree = [], []
    for i, (h, w) in enumerate(sizes):
        _, _, r, c = probe_size(pr, h, w)
        entries.append([h, w, r, c])
        if has_count:
            n_p, r_p, c_p = proc.get_number_of_image_patches(h, w, {})
            if (int(r_p), int(c_p)) != (r, c) or int(n_p) != (r * c + 1 if r or c else 0):
                disagree.append([h, w, int(n_p), int(r_p), int(c_p)])
        if i % 5000 == 0:
            log(f"sweep {key}: {i}/{len(sizes)}")
    log(f"sweep {key}: get_number_of_image_patches disagrees on {len(disagree)} sizes"
        + (f", e.g. {disagree[:5]}" if disagree else ""))
    # the real processor on ~150 sizes
    check = rng.sample(entries, 140) + [[e[1], e[0], None, None] for e in EXAMPLES
                                        if (e[2], e[3]) == (pr[2], pr[3])]
    for h, w, _, _ in check:
        _, _, r, c = probe_size(pr, h, w)
        pv, rows, cols = run(proc, Image.new("RGB", (w, h)))
        assert (rows, cols) == (r, c), (key, h, w, rows, cols, r, c)
        assert pv.shape[0] == (r * c + 1 if r or c else 1), (key, h, w, pv.shape)
        del pv
    log(f"sweep {key}: real processor agrees on {len(check)} sizes")
    sweep[key] = entries
    notes[key] = {"sizes": len(entries), "real_processor_checked": len(check),
                  "get_number_of_image_patches_checked": has_count,
                  "get_number_of_image_patches_disagreements": disagree[:200],
                  "get_number_of_image_patches_disagreement_count": len(disagree)}

out = {"transformers_version": transformers.__version__, "pillow_version": PIL.__version__,
       "numpy_version": np.__version__, "configs": configs, "cases": cases,
       "idefics3_identical": identical, "sweep": sweep, "sweep_notes": notes}
path = os.path.join(out_dir, "golden.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"))
log(f"wrote {path}: {os.path.getsize(path)} bytes, {len(cases)} images, "
    f"{sum(len(v) for v in sweep.values())} sweep entries")
