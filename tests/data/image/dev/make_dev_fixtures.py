#!/usr/bin/env python3
"""Development fixtures for tests/test_image_preprocess.c, made with Pillow.

Needs only Pillow (Debian python3-pil 9.4 made the committed files; Pillow's
8-bit bicubic resample has not changed since). The inputs are synthetic and
generated from a seed by the same xorshift32 generator the C test uses, so
only the expected outputs are stored:

  cases.txt   one line per case, the zlib crc32 of the expected bytes:
    resize  PATTERN SEED SW SH DW DH CRC        Image.resize((DW, DH), BICUBIC)
    next    PATTERN SEED W H N_PATCHES CRC      LlavaNextImageProcessor pixel_values
    clip    PATTERN SEED W H CRC                CLIPImageProcessor, shortest 336 / crop 336
    pad     PATTERN SEED W H CRC                LlavaImageProcessor do_pad
  resize_small.bin  full expected bytes of a few small resizes ("RSZ1", then
    per case 6 little-endian int32 PATTERN SEED SW SH DW DH and DW*DH*3 bytes)
  tokens.txt  LlavaNextProcessor._get_number_of_features (strategy "default")
    for every h, w in 1..4000: "grid N CRC" (crc32 of the int32 LE counts,
    h-major) and "flip H W N" for each size where int(round(x, 7)) differs
    from int(x), the cases that decide the C rounding.

The processor outputs follow transformers' PIL-backend steps as read from its
source (select_best_resolution, get_patch_output_size, np.pad with 0 and the
odd pixel bottom/right, divide_to_patches, base = resize to 336x336,
get_resize_output_image_size, center_crop, rescale in float64 then float32,
(v - mean) / std in float32). Float32 is emulated exactly with struct: the
difference of two float32s is exact in double, and a double quotient of two
float32s rounds to the correctly rounded float32 quotient. They are a
development check of the C code; the reference for the release is the golden
data made with transformers itself (tests/data/image/golden.json).

Run: python3 tests/data/image/dev/make_dev_fixtures.py tests/data/image/dev
"""
import math
import struct
import sys
import zlib

from PIL import Image

PATTERNS = {"grad": 0, "noise": 1}
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def make_image(pattern, seed, w, h):
    """RGB bytes; the C test's gen_image() makes the same."""
    s = seed & 0xFFFFFFFF or 1
    out = bytearray(w * h * 3)
    i = 0
    for y in range(h):
        for x in range(w):
            for c in range(3):
                s ^= (s << 13) & 0xFFFFFFFF
                s ^= s >> 17
                s ^= (s << 5) & 0xFFFFFFFF
                if pattern == 0:  # gradient with blocks, edges and a little noise
                    v = (x * 3 + y * 5 + c * 70 + (s >> 28)) & 255
                    if ((x // 9) + (y // 7)) % 5 == 0:
                        v = 255 - v
                else:  # white noise
                    v = s >> 24
                out[i] = v
                i += 1
    return bytes(out)


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def norm_tables():
    tabs = []
    for c in range(3):
        m, s = f32(MEAN[c]), f32(STD[c])
        tab = []
        for u in range(256):
            v = f32(u * (1 / 255))
            tab.append(struct.pack("<f", f32(f32(v - m) / s)))
        tabs.append(tab)
    return tabs


TABS = norm_tables()


def to_tensor(img):
    """(3, H, W) float32 little-endian bytes of an RGB PIL image."""
    return b"".join(b"".join(TABS[c][b] for b in band.tobytes()) for c, band in enumerate(img.split()))


def select_best_resolution(h, w):
    best, max_eff, min_waste = None, 0, float("inf")
    for ph, pw in PINPOINTS:
        scale = min(pw / w, ph / h)
        dw, dh = int(w * scale), int(h * scale)
        eff = min(dw * dh, w * h)
        waste = ph * pw - eff
        if eff > max_eff or (eff == max_eff and waste < min_waste):
            max_eff, min_waste, best = eff, waste, (ph, pw)
    return best


def patch_output_size(h, w, th, tw):
    sw, sh = tw / w, th / h
    if sw < sh:
        return min(math.ceil(h * sw), th), tw
    return th, min(math.ceil(w * sh), tw)


def shortest_edge_crop(img, size=336, crop=336, fill=(0, 0, 0)):
    """CLIP steps on a PIL image: resize shortest edge, then center_crop."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    nh, nw = (new_long, size) if w <= h else (size, new_long)
    img = img.resize((nw, nh), Image.BICUBIC)
    top, left = (nh - crop) // 2, (nw - crop) // 2
    canvas = Image.new("RGB", (crop, crop), fill)
    canvas.paste(img, (-left, -top))  # outside parts are the zero padding
    return canvas


def llava_next(img):
    w, h = img.size
    bh, bw = select_best_resolution(h, w)
    nh, nw = patch_output_size(h, w, bh, bw)
    resized = img.resize((nw, nh), Image.BICUBIC)
    canvas = Image.new("RGB", (bw, bh), (0, 0, 0))
    canvas.paste(resized, ((bw - nw) // 2, (bh - nh) // 2))
    tiles = [canvas.crop((x, y, x + 336, y + 336)) for y in range(0, bh, 336) for x in range(0, bw, 336)]
    base = img.resize((336, 336), Image.BICUBIC)
    # Each patch then: resize shortest edge 336 (a copy), crop 336 (no-op).
    return [shortest_edge_crop(p) for p in [base] + tiles]


def pad_square(img):
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), tuple(int(x * 255) for x in MEAN))
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return canvas


RESIZE_CASES = [
    # (pattern, seed, sw, sh, dw, dh)
    ("grad", 1, 1000, 800, 672, 538), ("grad", 1, 1000, 800, 336, 336),
    ("noise", 2, 1000, 800, 672, 538), ("noise", 2, 1000, 800, 336, 336),
    ("grad", 3, 200, 150, 672, 504), ("noise", 4, 200, 150, 672, 504),
    ("grad", 5, 3000, 200, 1008, 68), ("grad", 6, 200, 3000, 68, 1008),
    ("noise", 7, 337, 335, 336, 336), ("noise", 8, 335, 337, 336, 336),
    ("grad", 9, 1, 1, 336, 336), ("grad", 10, 1, 1, 672, 336),
    ("noise", 11, 4000, 1, 672, 1), ("noise", 12, 1, 4000, 1, 1008),
    ("noise", 13, 640, 480, 640, 336), ("noise", 14, 640, 480, 336, 480),
    ("grad", 15, 511, 257, 97, 1000), ("noise", 16, 17, 999, 1000, 13),
]
SMALL_CASES = [
    ("grad", 21, 37, 23, 100, 61), ("noise", 22, 300, 200, 31, 17),
    ("grad", 23, 1, 1, 5, 3), ("noise", 24, 7, 1, 336, 2), ("noise", 25, 1, 9, 3, 336),
    ("grad", 26, 64, 64, 64, 17), ("noise", 27, 5, 4, 2, 2), ("grad", 28, 50, 30, 49, 30),
]
PROC_CASES = [
    # (pattern, seed, w, h)
    ("grad", 31, 1000, 800), ("noise", 32, 800, 600), ("grad", 33, 672, 672),
    ("noise", 34, 336, 336), ("grad", 35, 100, 100), ("grad", 36, 1920, 1080),
    ("noise", 37, 400, 3000), ("grad", 38, 3000, 200), ("grad", 39, 1, 1),
    ("noise", 40, 673, 672), ("noise", 41, 671, 336), ("grad", 42, 1008, 337),
    ("grad", 43, 4000, 1), ("noise", 44, 1, 4000), ("grad", 45, 336, 1008),
]


def num_image_tokens(h, w):
    """Returns (count, whether int(round(x, 7)) != int(x) decided it)."""
    bh, bw = select_best_resolution(h, w)
    ch, cw = 24 * (bh // 336), 24 * (bw // 336)
    if w / h > cw / ch:
        y = h * (cw / w)
        nh = int(round(y, 7))
        ch -= 2 * ((ch - nh) // 2)
        flip = nh != int(y)
    else:
        y = w * (ch / h)
        nw = int(round(y, 7))
        cw -= 2 * ((cw - nw) // 2)
        flip = nw != int(y)
    return ch * cw + ch + 24 * 24, flip


def token_sweep(outdir, n=4000):
    crc, flips = 0, []
    for h in range(1, n + 1):
        row = []
        for w in range(1, n + 1):
            count, flip = num_image_tokens(h, w)
            row.append(count)
            if flip:
                flips.append(f"flip {h} {w} {count}")
        crc = zlib.crc32(struct.pack("<%di" % n, *row), crc)
    with open(f"{outdir}/tokens.txt", "w") as f:
        f.write("# made by make_dev_fixtures.py (python3 round(x, 7) semantics); see its docstring\n")
        f.write(f"grid {n} {crc}\n" + "\n".join(flips) + "\n")


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "."
    images = {}

    def get(pat, seed, w, h):
        key = (pat, seed, w, h)
        if key not in images:
            images[key] = Image.frombytes("RGB", (w, h), make_image(PATTERNS[pat], seed, w, h))
        return images[key]

    lines = []
    for pat, seed, sw, sh, dw, dh in RESIZE_CASES:
        out = get(pat, seed, sw, sh).resize((dw, dh), Image.BICUBIC).tobytes()
        lines.append(f"resize {pat} {seed} {sw} {sh} {dw} {dh} {zlib.crc32(out)}")
    for pat, seed, w, h in PROC_CASES:
        img = get(pat, seed, w, h)
        patches = llava_next(img)
        data = b"".join(to_tensor(p) for p in patches)
        lines.append(f"next {pat} {seed} {w} {h} {len(patches)} {zlib.crc32(data)}")
        lines.append(f"clip {pat} {seed} {w} {h} {zlib.crc32(to_tensor(shortest_edge_crop(img)))}")
        padded = shortest_edge_crop(pad_square(img))
        lines.append(f"pad {pat} {seed} {w} {h} {zlib.crc32(to_tensor(padded))}")
    with open(f"{outdir}/cases.txt", "w") as f:
        f.write("# made by make_dev_fixtures.py with Pillow %s; see its docstring\n" % Image.__version__)
        f.write("\n".join(lines) + "\n")
    with open(f"{outdir}/resize_small.bin", "wb") as f:
        f.write(b"RSZ1")
        for pat, seed, sw, sh, dw, dh in SMALL_CASES:
            out = get(pat, seed, sw, sh).resize((dw, dh), Image.BICUBIC).tobytes()
            f.write(struct.pack("<6i", PATTERNS[pat], seed, sw, sh, dw, dh) + out)
    token_sweep(outdir)


if __name__ == "__main__":
    main()
