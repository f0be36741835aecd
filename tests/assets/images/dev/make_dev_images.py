#!/usr/bin/python3
"""Tiny development images for tests/test_image_decode.c, and what Pillow
makes of them (expected.txt). Run with Debian's Pillow (python3-pil 9.4):

    /usr/bin/python3 tests/assets/images/dev/make_dev_images.py

The golden data (tests/data/image/golden.json, Pillow 12.3) covers real
photographs; these cover the variants the photos do not: every PNG bit depth
and colour type, Adam7, EXIF/XMP in each container and in odd TIFF encodings,
GIF frame offsets, local palettes and transparency, BMP 1/4/8/16/24/32 bits,
bitfields, RLE, OS/2 and top-down files. Most are written byte by byte.

expected.txt, one line per file:
    NAME FORMAT MODE W H CRC32      crc32 of the (h, w, 3) RGB after
                                    exif_transpose + convert("RGB")
    NAME ERR STATUS                 Pillow cannot open it either (lv_status name)

The expected values are Pillow 9.4's, except where Pillow 12 (the reference)
is known to differ; those lines are computed from Pillow 12's rules and marked
in FIXES below:
  - palette entries past the file's palette: 9.4 fills them with a gray ramp,
    12 with black (libImaging/Palette.c ImagingPaletteNew callocs);
  - JPEG XMP orientation: 12 reads APP1 XMP (info["xmp"]) in getexif, 9.4 does not.
"""
import io, os, random, struct, zlib

from PIL import Image, ImageOps

OUT = os.path.dirname(os.path.abspath(__file__))
rng = random.Random(1234)
cases = []  # (name, bytes, fix) ; fix(img_rgb_bytes, w, h) -> (bytes, w, h) or None


def add(name, data, fix=None, err=None):
    cases.append((name, data, fix, err))


def noise(w, h, mode="RGB"):
    im = Image.new(mode, (w, h))
    n = {"RGB": 3, "L": 1, "RGBA": 4, "LA": 2}[mode]
    im.frombytes(bytes(rng.randrange(256) for _ in range(w * h * n)))
    return im


def pil_bytes(im, fmt, **kw):
    f = io.BytesIO()
    im.save(f, fmt, **kw)
    return f.getvalue()


# ------------------------------------------------------------------ EXIF / XMP
def tiff(entries, big_endian=False, ifd_at=8):
    """A TIFF blob: IFD0 with entries (tag, type, count, value bytes)."""
    e = ">" if big_endian else "<"
    head = (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(e + "I", ifd_at)
    head += b"\x00" * (ifd_at - 8)
    body = struct.pack(e + "H", len(entries))
    extra = b""
    extra_at = ifd_at + 2 + 12 * len(entries) + 4
    for tag, typ, count, val in entries:
        if len(val) <= 4:
            field = val + b"\x00" * (4 - len(val))
        else:
            field = struct.pack(e + "I", extra_at + len(extra))
            extra += val
        body += struct.pack(e + "HHI", tag, typ, count) + field
    return head + body + struct.pack(e + "I", 0) + extra


def orient_short(o, be=False):
    return tiff([(0x0112, 3, 1, struct.pack(">H" if be else "<H", o))], be)


def xmp(o):
    return (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
            b'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="%d"/>'
            b"</rdf:RDF></x:xmpmeta>" % o)


# ------------------------------------------------------------------ PNG
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def pack(samples, depth):
    if depth == 16:
        return b"".join(struct.pack(">H", s) for s in samples)
    if depth == 8:
        return bytes(samples)
    out, acc, nb = bytearray(), 0, 0
    for s in samples:
        acc = (acc << depth) | s
        nb += depth
        if nb == 8:
            out.append(acc)
            acc, nb = 0, 0
    if nb:
        out.append(acc << (8 - nb))
    return bytes(out)


def png(w, h, ctype, depth, px, interlace=False, plte=None, trns=None, pre=(), post=()):
    """px[y][x] is a tuple of samples."""
    def rows(x0, y0, dx, dy):
        raw = b""
        for y in range(y0, h, dy):
            xs = range(x0, w, dx)
            if not len(xs):
                continue
            raw += b"\x00" + pack([s for x in xs for s in px[y][x]], depth)
        return raw
    raw = b"".join(rows(*p) for p in ADAM7) if interlace else rows(0, 0, 1, 1)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, int(interlace)))
    for c in pre:
        data += c
    if plte is not None:
        data += chunk(b"PLTE", plte)
    if trns is not None:
        data += chunk(b"tRNS", trns)
    data += chunk(b"IDAT", zlib.compress(raw, 9))
    for c in post:
        data += c
    return data + chunk(b"IEND", b"")


def rnd_px(w, h, n, maxv):
    return [[tuple(rng.randrange(maxv + 1) for _ in range(n)) for _ in range(w)] for _ in range(h)]


def palette(n):
    return bytes(rng.randrange(256) for _ in range(3 * n))


def black_past(npal):
    """Pillow 12: palette indices >= npal are black (9.4: gray ramp)."""
    def fix(path_bytes):
        im = Image.open(io.BytesIO(path_bytes))
        idx = list(im.getdata())
        pal = im.getpalette()[: 3 * npal]
        rgb = bytearray()
        for i in idx:
            rgb += bytes(pal[3 * i: 3 * i + 3]) if i < npal else b"\0\0\0"
        return bytes(rgb), im.size[0], im.size[1]
    return fix


for depth in (1, 2, 4, 8, 16):
    add("png_gray%d.png" % depth, png(7, 5, 0, depth, rnd_px(7, 5, 1, (1 << depth) - 1)))
l16 = rnd_px(7, 5, 1, 65535)
l16[0][:4] = [(0,), (7,), (255,), (256,)]  # below and just above the clip
add("png_gray16_low.png", png(7, 5, 0, 16, l16))
for depth in (1, 2, 4, 8):
    n = 1 << depth
    add("png_pal%d.png" % depth, png(9, 5, 3, depth, rnd_px(9, 5, 1, n - 1), plte=palette(n)))
add("png_pal2_short.png", png(9, 5, 3, 2, rnd_px(9, 5, 1, 3), plte=palette(3)), fix=black_past(3))
add("png_pal8_trns.png", png(9, 5, 3, 8, rnd_px(9, 5, 1, 15), plte=palette(16), trns=bytes(range(0, 160, 10))))
add("png_rgb8_trns.png", png(7, 5, 2, 8, rnd_px(7, 5, 3, 255), trns=struct.pack(">HHH", 1, 2, 3)))
add("png_rgb16.png", png(7, 5, 2, 16, rnd_px(7, 5, 3, 65535)))
add("png_la8.png", png(7, 5, 4, 8, rnd_px(7, 5, 2, 255)))
add("png_la16.png", png(7, 5, 4, 16, rnd_px(7, 5, 2, 65535)))
add("png_rgba8.png", png(7, 5, 6, 8, rnd_px(7, 5, 4, 255)))
add("png_rgba16.png", png(7, 5, 6, 16, rnd_px(7, 5, 4, 65535)))
add("png_adam7_rgb8.png", png(13, 11, 2, 8, rnd_px(13, 11, 3, 255), interlace=True))
add("png_adam7_pal4.png", png(13, 11, 3, 4, rnd_px(13, 11, 1, 15), interlace=True, plte=palette(16)))
add("png_adam7_gray2.png", png(13, 11, 0, 2, rnd_px(13, 11, 1, 3), interlace=True))
add("png_adam7_rgba16.png", png(13, 11, 6, 16, rnd_px(13, 11, 4, 65535), interlace=True))
add("png_adam7_1x1.png", png(1, 1, 2, 8, rnd_px(1, 1, 3, 255), interlace=True))
rgb75 = rnd_px(7, 5, 3, 255)
add("png_exif6.png", png(7, 5, 2, 8, rgb75, pre=[chunk(b"eXIf", orient_short(6))]))
add("png_exif3_after_idat.png", png(7, 5, 2, 8, rgb75, post=[chunk(b"eXIf", orient_short(3, be=True))]))
add("png_text_exif8.png", png(7, 5, 2, 8, rgb75, pre=[chunk(b"tEXt", b"exif\0" + b"Exif\0\0" + orient_short(8))]))
raw_profile = b"\nexif\n      %d\n" % len(b"Exif\0\0" + orient_short(5)) + (b"Exif\0\0" + orient_short(5)).hex().encode() + b"\n"
add("png_rawprofile5.png", png(7, 5, 2, 8, rgb75, pre=[chunk(b"zTXt", b"Raw profile type exif\0\0" + zlib.compress(raw_profile))]))
add("png_xmp7.png", png(7, 5, 2, 8, rgb75, pre=[chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + xmp(7))]))
no_orient = tiff([(0x010F, 2, 4, b"Cam\0")])
add("png_exif_none_xmp2.png", png(7, 5, 2, 8, rgb75, pre=[chunk(b"eXIf", no_orient), chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + xmp(2))]))
add("png_exif1_xmp6.png", png(7, 5, 2, 8, rgb75, pre=[chunk(b"eXIf", orient_short(1)), chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + xmp(6))]))
good = png(7, 5, 2, 8, rgb75)
add("png_no_iend.png", good[:-12])  # Pillow: every row decoded, the missing end is not looked at
bad_crc = bytearray(png(7, 5, 2, 8, rgb75, pre=[chunk(b"tEXt", b"Comment\0hello")]))
bad_crc[33 + 8 + 13] ^= 0xFF  # corrupt the tEXt CRC (before IDAT): Pillow refuses
add("png_bad_crc_text.png", bytes(bad_crc), err="LV_ERR_FORMAT")
idat_at = good.index(b"IDAT") - 4
long_idat = bytearray(good)
long_idat[idat_at:idat_at + 4] = struct.pack(">I", 0x7FFFFFF0)  # runs past the end: Pillow reads what is there
add("png_idat_too_long.png", bytes(long_idat))
add("png_cut_in_crc.png", good[:idat_at + 8 + struct.unpack(">I", good[idat_at:idat_at + 4])[0] + 2])
bad_adler = bytearray(png(7, 5, 2, 16, rnd_px(7, 5, 3, 65535)))
a_at = bad_adler.index(b"IDAT") + 4 + struct.unpack(">I", bad_adler[bad_adler.index(b"IDAT") - 4:bad_adler.index(b"IDAT")])[0] - 1
bad_adler[a_at] ^= 0x55  # zlib checksum: Pillow's inflate reports it with the last row
add("png_bad_adler.png", bytes(bad_adler), err="LV_ERR_FORMAT")

# ------------------------------------------------------------------ JPEG
def jpeg_with_app1(jpg, payload):
    seg = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpg[:2] + seg + jpg[2:]


im = noise(17, 13)
add("jpeg_420.jpg", pil_bytes(im, "JPEG", quality=85))
add("jpeg_444.jpg", pil_bytes(im, "JPEG", quality=90, subsampling=0))
add("jpeg_gray.jpg", pil_bytes(noise(17, 13, "L"), "JPEG", quality=85))
add("jpeg_progressive.jpg", pil_bytes(im, "JPEG", quality=85, progressive=True))
add("jpeg_cmyk.jpg", pil_bytes(noise(17, 13).convert("CMYK"), "JPEG", quality=90))
add("jpeg_optimized.jpg", pil_bytes(im, "JPEG", quality=85, optimize=True))
base = pil_bytes(im, "JPEG", quality=85)
add("jpeg_exif_be_long5.jpg", jpeg_with_app1(base, b"Exif\0\0" + tiff([(0x0112, 4, 1, struct.pack(">I", 5))], True)))
add("jpeg_exif_rational6.jpg", jpeg_with_app1(base, b"Exif\0\0" + tiff([(0x0112, 5, 1, struct.pack("<II", 12, 2))])))
add("jpeg_exif_byte6.jpg", jpeg_with_app1(base, b"Exif\0\0" + tiff([(0x0112, 1, 1, b"\x06")])))
add("jpeg_exif_count2.jpg", jpeg_with_app1(base, b"Exif\0\0" + tiff([(0x0112, 3, 2, struct.pack("<HH", 7, 2))])))
add("jpeg_exif_stops.jpg", jpeg_with_app1(base, b"Exif\0\0" + tiff([(0x0100, 3, 1000, b"\xff\xff\x00\x00"), (0x0112, 3, 1, b"\x06\x00")])))
add("jpeg_exif_ifd_far.jpg", jpeg_with_app1(base, b"Exif\0\0" + tiff([(0x0100, 3, 1, b"\x11\x00"), (0x0112, 3, 1, b"\x08\x00")], ifd_at=20)))


def transposed(data, o):
    def fix(_):
        im = Image.open(io.BytesIO(data)).convert("RGB")
        method = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}[o]
        im = im.transpose(method)
        return im.tobytes(), im.size[0], im.size[1]
    return fix


jx = jpeg_with_app1(base, b"http://ns.adobe.com/xap/1.0/\0" + xmp(6))
add("jpeg_xmp6.jpg", jx, fix=transposed(jx, 6))

# ------------------------------------------------------------------ WebP
wim = noise(17, 13)
add("webp_lossy.webp", pil_bytes(wim, "WEBP", quality=80))
add("webp_lossless_rgba.webp", pil_bytes(noise(17, 13, "RGBA"), "WEBP", lossless=True))
add("webp_lossy_alpha.webp", pil_bytes(noise(17, 13, "RGBA"), "WEBP", quality=80))
add("webp_exif8.webp", pil_bytes(wim, "WEBP", quality=80, exif=b"Exif\0\0" + orient_short(8)))
frames = [noise(17, 13), noise(17, 13)]
add("webp_anim.webp", pil_bytes(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True, duration=100))

# ------------------------------------------------------------------ GIF
def gif_parts(data):
    """Split a single-frame Pillow GIF: header(13), global palette, blocks before ',', desc(9), rest."""
    flags = data[10]
    gp = 3 << ((flags & 7) + 1) if flags & 0x80 else 0
    p = 13 + gp
    q = data.index(b",", p)
    return data[:13], data[13:13 + gp], data[13 + gp:q], data[q + 1:q + 10], data[q + 10:]


pim = noise(9, 7).convert("P", palette=Image.ADAPTIVE, colors=16)
g = pil_bytes(pim, "GIF")
add("gif_p.gif", g)
add("gif_l.gif", pil_bytes(noise(9, 7, "L"), "GIF"))
add("gif_interlaced.gif", pil_bytes(noise(16, 16).convert("P", palette=Image.ADAPTIVE, colors=64), "GIF", interlace=True))
add("gif_trns.gif", pil_bytes(pim, "GIF", transparency=3))
hdr, gpal, pre, desc, rest = gif_parts(g)
# the frame at (2, 3) inside a 14x12 screen: the rest is index 0
scr = bytearray(hdr)
scr[6:10] = struct.pack("<HH", 14, 12)
d2 = bytearray(desc)
d2[0:4] = struct.pack("<HH", 2, 3)
add("gif_offset.gif", bytes(scr) + gpal + pre + b"," + bytes(d2) + rest)
# same with a transparent index: the rest is filled with it
gt = pil_bytes(pim, "GIF", transparency=5)
hdr_t, gpal_t, pre_t, desc_t, rest_t = gif_parts(gt)
scr_t = bytearray(hdr_t)
scr_t[6:10] = struct.pack("<HH", 14, 12)
d3 = bytearray(desc_t)
d3[0:4] = struct.pack("<HH", 2, 3)
add("gif_offset_trns.gif", bytes(scr_t) + gpal_t + pre_t + b"," + bytes(d3) + rest_t)
# a frame reaching past a 5x4 screen: the image grows to 11x10
small = bytearray(hdr)
small[6:10] = struct.pack("<HH", 5, 4)
add("gif_grow.gif", bytes(small) + gpal + pre + b"," + bytes(d2) + rest)
# the palette moved from global to local
nog = bytearray(hdr)
nog[10] &= 0x7F
dl = bytearray(desc)
dl[8] = 0x80 | (hdr[10] & 7)
add("gif_local_palette.gif", bytes(nog) + pre + b"," + bytes(dl) + gpal + rest)
# junk bytes between blocks are skipped, as Pillow does
add("gif_junk.gif", hdr + gpal + pre + b"\x07\x07" + b"," + desc + rest)

# ------------------------------------------------------------------ BMP
def bmp(w, h, bits, rows, palette=b"", header=40, compression=0, masks=b"", colors=0, top_down=False,
        raw_pixels=None):
    """rows: file rows (bottom-up unless top_down), unpadded."""
    if raw_pixels is None:
        stride = ((w * bits + 31) >> 3) & ~3
        pix = b"".join(r + b"\0" * (stride - len(r)) for r in rows)
    else:
        pix = raw_pixels
    if header == 12:
        info = struct.pack("<IHHHH", 12, w, h, 1, bits)
    else:
        info = struct.pack("<IiiHHIIiiII", header, w, -h if top_down else h, 1, bits, compression,
                           len(pix), 2835, 2835, colors, 0)
        extra = header - 40
        if header >= 52 and masks:
            info += masks[: extra] + b"\0" * (extra - len(masks[: extra]))
            masks = b""
        else:
            info += b"\0" * extra
    off = 14 + len(info) + len(masks) + len(palette)
    return b"BM" + struct.pack("<IHHI", off + len(pix), 0, 0, off) + info + masks + palette + pix


def bgrx(pal_rgb):
    return b"".join(bytes([pal_rgb[i + 2], pal_rgb[i + 1], pal_rgb[i], 0]) for i in range(0, len(pal_rgb), 3))


W, H = 7, 5
rows = lambda n, f: [f(y) for y in range(n)]
add("bmp_1bit_bw.bmp", pil_bytes(noise(W, H, "L").convert("1"), "BMP"))
pal2 = palette(2)
add("bmp_1bit_color.bmp", bmp(W, H, 1, rows(H, lambda y: pack([rng.randrange(2) for _ in range(W)], 1)), bgrx(pal2), colors=2))
pal16 = palette(16)
add("bmp_4bit.bmp", bmp(W, H, 4, rows(H, lambda y: pack([rng.randrange(16) for _ in range(W)], 4)), bgrx(pal16), colors=16))
pal5 = palette(5)
add("bmp_8bit_short_palette.bmp", bmp(W, H, 8, rows(H, lambda y: bytes(rng.randrange(8) for _ in range(W))), bgrx(pal5), colors=5),
    fix=black_past(5))
add("bmp_8bit_p.bmp", pil_bytes(noise(W, H).convert("P", palette=Image.ADAPTIVE, colors=32), "BMP"))
add("bmp_8bit_l.bmp", pil_bytes(noise(W, H, "L"), "BMP"))
add("bmp_16_555.bmp", bmp(W, H, 16, rows(H, lambda y: bytes(rng.randrange(256) for _ in range(2 * W)))))
add("bmp_16_565_bitfields.bmp", bmp(W, H, 16, rows(H, lambda y: bytes(rng.randrange(256) for _ in range(2 * W))),
                                    compression=3, masks=struct.pack("<III", 0xF800, 0x7E0, 0x1F)))
add("bmp_24.bmp", pil_bytes(noise(W, H), "BMP"))
add("bmp_24_topdown.bmp", bmp(W, H, 24, rows(H, lambda y: bytes(rng.randrange(256) for _ in range(3 * W))), top_down=True))
add("bmp_32_bgrx.bmp", bmp(W, H, 32, rows(H, lambda y: bytes(rng.randrange(256) for _ in range(4 * W)))))
add("bmp_32_v5_bgra.bmp", bmp(W, H, 32, rows(H, lambda y: bytes(rng.randrange(256) for _ in range(4 * W))), header=124,
                              compression=3, masks=struct.pack("<IIII", 0xFF0000, 0xFF00, 0xFF, 0xFF000000)))
add("bmp_32_v3_xbgr.bmp", bmp(W, H, 32, rows(H, lambda y: bytes(rng.randrange(256) for _ in range(4 * W))),
                              compression=3, masks=struct.pack("<III", 0xFF000000, 0xFF0000, 0xFF00)))
add("bmp_os2_24.bmp", bmp(W, H, 24, rows(H, lambda y: bytes(rng.randrange(256) for _ in range(3 * W))), header=12))
pal256 = palette(256)
add("bmp_os2_8.bmp", bmp(W, H, 8, rows(H, lambda y: bytes(rng.randrange(256) for _ in range(W))), header=12,
                         palette=b"".join(bytes([pal256[i + 2], pal256[i + 1], pal256[i]]) for i in range(0, 768, 3))))
rle8 = bytes([3, 1, 2, 9,                # run of 3 x index 1, run of 2 x index 9
              0, 3, 4, 5, 6, 0,          # absolute 4,5,6 (+ pad)
              0, 0,                      # end of line
              7, 2, 0, 0,                # row 2: 7 x index 2, end of line
              0, 2, 9, 9, 1, 2,          # delta: Pillow reads 2 bytes, then uses 1, 2 (right 1, up 2)
              0, 0] + [W, 3, 0, 0] * 3 + [0, 1])
add("bmp_rle8.bmp", bmp(W, H, 8, None, bgrx(palette(16)), compression=1, colors=16, raw_pixels=rle8))
rle4 = bytes([7, 0x12, 0, 0, 0, 4, 0x34, 0x56, 0, 0] + [7, 0xAB, 0, 0] * 3 + [0, 1])
add("bmp_rle4.bmp", bmp(W, H, 4, None, bgrx(palette(16)), compression=2, colors=16, raw_pixels=rle4))
add("bmp_rle8_short.bmp", bmp(W, H, 8, None, bgrx(palette(16)), compression=1, colors=16, raw_pixels=bytes([7, 1, 0, 0, 0, 1])),
    err="LV_ERR_FORMAT")
add("bmp_bitfields_101010.bmp", bmp(W, H, 32, rows(H, lambda y: bytes(4 * W)), compression=3,
                                    masks=struct.pack("<III", 0x3FF00000, 0xFFC00, 0x3FF)), err="LV_ERR_UNSUPPORTED")


# ------------------------------------------------------------------ write
def pillow_rgb(data):
    im = Image.open(io.BytesIO(data))
    fmt, mode = im.format, im.mode
    im = ImageOps.exif_transpose(im).convert("RGB")
    return fmt, mode, im.tobytes(), im.size


lines = []
for name, data, fix, err in cases:
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    if err:
        try:
            pillow_rgb(data)
            raise SystemExit("%s: Pillow opens it, expected %s" % (name, err))
        except SystemExit:
            raise
        except Exception:
            pass
        lines.append("%s ERR %s" % (name, err))
        continue
    fmt, mode, rgb, (w, h) = pillow_rgb(data)
    if fix:
        rgb, w, h = fix(data)
    if mode == "I":  # Pillow 12 opens 16-bit gray PNG as I;16 (same pixels after convert)
        mode = "I;16"
    lines.append("%s %s %s %d %d %d" % (name, fmt, mode, w, h, zlib.crc32(rgb) & 0xFFFFFFFF))
with open(os.path.join(OUT, "expected.txt"), "w") as f:
    f.write("# name format mode width height crc32(RGB) | name ERR status - see make_dev_images.py\n")
    f.write("\n".join(lines) + "\n")
print(len(lines), "cases")
