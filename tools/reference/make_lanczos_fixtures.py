#!/usr/bin/env python3
"""Development fixtures for tests/test_image_idefics3.c, made with Pillow only.

Needs Pillow and numpy (Debian's python3-pil 9.4 / python3-numpy made the
committed file; Pillow's 8-bit resampler has not changed since). Inputs are
the synthetic images of tests/data/image/dev/make_dev_fixtures.py (xorshift32
from a seed; the C test regenerates them), so only crc32s are stored:

  lanczos PATTERN SEED SW SH DW DH CRC
      zlib crc32 of Image.resize((DW, DH), Image.LANCZOS) of the RGB image
  idefics3 PATTERN SEED W H L T SPLIT ROWS COLS FRAMES CRC
      an independent Pillow + numpy rendering of the SmolVLM / Idefics3 PIL
      processor (../shared/spec/smolvlm.md §3.2-3.5): resize to longest edge L
      (even rounding), up to multiples of T, T x T tiles row-major then the
      global image (the step-2 image resized to T x T) last; with SPLIT 0
      straight to T x T. All resizes LANCZOS. Then (float32(u * (1/255)) - 0.5)
      / 0.5 in float32, CHW; CRC is the crc32 of all frames' float32 LE bytes.
This is a development check of the C code; the reference for the release is
transformers itself (tools/reference/smolvlm_image_golden.py).

Run: /usr/bin/python3 tools/reference/make_lanczos_fixtures.py tests/data/smolvlm/dev
"""
import math
import os
import sys
import zlib

import numpy as np
from PIL import Image

PATTERNS = {"grad": 0, "noise": 1}


def make_image(pattern, seed, w, h):
    """(h, w, 3) uint8; the C test's gen_image() makes the same bytes."""
    s = seed & 0xFFFFFFFF or 1
    out = bytearray(w * h * 3)
    i = 0
    for y in range(h):
        for x in range(w):
            for c in range(3):
                s ^= (s << 13) & 0xFFFFFFFF
                s ^= s >> 17
                s ^= (s << 5) & 0xFFFFFFFF
                if pattern == 0:
                    v = (x * 3 + y * 5 + c * 70 + (s >> 28)) & 255
                    if ((x // 9) + (y // 7)) % 5 == 0:
                        v = 255 - v
                else:
                    v = s >> 24
                out[i] = v
                i += 1
    return Image.frombytes("RGB", (w, h), bytes(out))


def step1(h, w, L):
    ar = w / h
    if w >= h:
        w1, h1 = L, int(L / ar)
        if h1 % 2:
            h1 += 1
    else:
        h1, w1 = L, int(L * ar)
        if w1 % 2:
            w1 += 1
    return max(h1, 1), max(w1, 1)


def step2(h, w, T):
    ar = w / h
    if w >= h:
        w2 = math.ceil(w / T) * T
        h2 = math.ceil(int(w2 / ar) / T) * T
    else:
        h2 = math.ceil(h / T) * T
        w2 = math.ceil(int(h2 * ar) / T) * T
    return h2, w2


def resize(im, w, h):
    return im if im.size == (w, h) else im.resize((w, h), Image.LANCZOS)


def idefics3(im, L, T, split):
    im = resize(im, *step1(im.height, im.width, L)[::-1])
    if not split:
        return [resize(im, T, T)], 0, 0
    h2, w2 = step2(im.height, im.width, T)
    im = resize(im, w2, h2)
    if h2 <= T and w2 <= T:
        return [im], 0, 0
    rows, cols = math.ceil(h2 / T), math.ceil(w2 / T)
    frames = [im.crop((c * T, r * T, (c + 1) * T, (r + 1) * T)) for r in range(rows) for c in range(cols)]
    return frames + [resize(im, T, T)], rows, cols


def norm(frame):
    a = np.asarray(frame, dtype=np.uint8).astype(np.float64) * (1 / 255)
    a = a.astype(np.float32)
    a = (a - np.float32(0.5)) / np.float32(0.5)
    return np.ascontiguousarray(a.transpose(2, 0, 1), dtype="<f4")


RESIZES = [  # pattern, seed, sw, sh, dw, dh
    ("grad", 1, 100, 80, 2048, 1638), ("noise", 2, 100, 80, 2048, 1638),
    ("grad", 3, 640, 480, 2048, 1536), ("noise", 4, 1000, 700, 2048, 1434),
    ("grad", 5, 2048, 1434, 2048, 1536), ("noise", 6, 2048, 1536, 512, 512),
    ("grad", 7, 1536, 1076, 384, 384), ("noise", 8, 3000, 400, 2048, 274),
    ("grad", 9, 400, 3000, 274, 2048), ("grad", 10, 37, 23, 13, 61),
    ("noise", 11, 7, 5, 13, 11), ("grad", 12, 1, 1, 3, 2), ("noise", 13, 5, 1, 1, 1),
    ("noise", 14, 333, 777, 100, 50), ("grad", 15, 64, 64, 64, 200),
]
PIPELINES = [  # pattern, seed, w, h, L, T, split
    ("grad", 21, 100, 80, 2048, 512, 1), ("noise", 22, 120, 300, 1536, 384, 1),
    ("grad", 23, 600, 90, 2048, 512, 1), ("noise", 24, 50, 40, 2048, 512, 0),
    ("grad", 25, 300, 200, 200, 100, 1), ("grad", 26, 40, 30, 64, 64, 1),
]


def main(out_dir):
    lines = ["# made by tools/reference/make_lanczos_fixtures.py with Pillow %s; see its docstring"
             % Image.__version__]
    for pat, seed, sw, sh, dw, dh in RESIZES:
        print(f"lanczos {pat}/{seed} {sw}x{sh} -> {dw}x{dh}", flush=True)
        im = make_image(PATTERNS[pat], seed, sw, sh).resize((dw, dh), Image.LANCZOS)
        lines.append(f"lanczos {pat} {seed} {sw} {sh} {dw} {dh} {zlib.crc32(im.tobytes())}")
    for pat, seed, w, h, L, T, split in PIPELINES:
        frames, rows, cols = idefics3(make_image(PATTERNS[pat], seed, w, h), L, T, split)
        crc = 0
        for f in frames:
            crc = zlib.crc32(norm(f).tobytes(), crc)
        print(f"idefics3 {pat}/{seed} {w}x{h} L={L} T={T} split={split}: {rows}x{cols}, "
              f"{len(frames)} frames", flush=True)
        lines.append(f"idefics3 {pat} {seed} {w} {h} {L} {T} {split} {rows} {cols} {len(frames)} {crc}")
    with open(os.path.join(out_dir, "lanczos.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
