#!/usr/bin/python3
"""Writes tests/assets/images/: the real images the image-pipeline golden test
decodes and preprocesses. Run with Debian's Pillow (python3-pil) and the
photos of Debian's python3-skimage (skimage/data, BSD/public-domain images):

    apt-get download python3-skimage && dpkg -x python3-skimage_*.deb /tmp/skim
    /usr/bin/python3 tools/reference/make_image_assets.py \
        /tmp/skim/usr/lib/python3/dist-packages/skimage/data

Every Pillow mode the reference must convert, the encoders users send, EXIF
orientations 1-8, and the sizes where anyres rounding flips. Deterministic.
"""
import io, os, shutil, struct, sys, zlib

from PIL import Image

SRC = sys.argv[1]
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "assets", "images")
os.makedirs(OUT, exist_ok=True)

def src(name):
    return Image.open(os.path.join(SRC, name))

def save(im, name, **kw):
    im.save(os.path.join(OUT, name), **kw)

def png_raw(name, w, h, color_type, bit_depth, rows):
    """A PNG written by hand, for the bit depths Pillow does not write (16-bit RGB/RGBA/LA)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + r for r in rows)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    open(os.path.join(OUT, name), "wb").write(data)

chelsea = src("chelsea.png").convert("RGB")           # 451x300 photo
coffee = src("coffee.png").convert("RGB")             # 600x400 photo
astronaut = src("astronaut.png").convert("RGB")       # 512x512 photo
camera = src("camera.png")                            # 512x512 L
rocket = Image.open(os.path.join(SRC, "rocket.jpg"))  # 640x427 JPEG

# --- files as they come (real encoders)
shutil.copy(os.path.join(SRC, "chelsea.png"), os.path.join(OUT, "rgb_chelsea.png"))
shutil.copy(os.path.join(SRC, "camera.png"), os.path.join(OUT, "l_camera.png"))
shutil.copy(os.path.join(SRC, "logo.png"), os.path.join(OUT, "rgba_logo.png"))
shutil.copy(os.path.join(SRC, "horse.png"), os.path.join(OUT, "rgba_horse.png"))
shutil.copy(os.path.join(SRC, "green_palette.png"), os.path.join(OUT, "p_green_palette.png"))
shutil.copy(os.path.join(SRC, "foo3x5x4indexed.png"), os.path.join(OUT, "p_trns_tiny.png"))
shutil.copy(os.path.join(SRC, "checker_bilevel.png"), os.path.join(OUT, "bilevel_checker.png"))
shutil.copy(os.path.join(SRC, "rocket.jpg"), os.path.join(OUT, "rgb_rocket.jpg"))
shutil.copy(os.path.join(SRC, "hubble_deep_field.jpg"), os.path.join(OUT, "rgb_hubble_1000x872.jpg"))
shutil.copy(os.path.join(SRC, "no_time_for_that_tiny.gif"), os.path.join(OUT, "anim_tiny.gif"))

# --- modes
la = Image.merge("LA", (camera, camera.rotate(90)))
save(la, "la_camera.png")
rgba = chelsea.copy()
alpha = Image.linear_gradient("L").resize(chelsea.size)
rgba.putalpha(alpha)  # fully transparent pixels keep their colour: convert("RGB") must not composite
save(rgba, "rgba_chelsea_gradient.png")
p = chelsea.quantize(colors=64, method=Image.Quantize.MEDIANCUT)
save(p, "p_chelsea_64.png")
pt = coffee.quantize(colors=32, method=Image.Quantize.MEDIANCUT)
save(pt, "p_coffee_trns.png", transparency=3)
save(chelsea.convert("1"), "bilevel_chelsea.png")

# 16-bit PNGs: gray (Pillow opens as I;16), gray+alpha, RGB, RGBA
w, h = 300, 200
c16 = coffee.resize((w, h), Image.BICUBIC)
px = c16.load()
rows_rgb, rows_rgba, rows_l, rows_la = [], [], [], []
for y in range(h):
    rr, ra, rl, rla = bytearray(), bytearray(), bytearray(), bytearray()
    for x in range(w):
        r, g, b = px[x, y]
        R, G, B = r * 257 ^ (x & 0xFF), g * 257 ^ (y & 0xFF), b * 257
        rr += struct.pack(">HHH", R, G, B)
        ra += struct.pack(">HHHH", R, G, B, (x * 65535) // (w - 1))
        L = (r * 299 + g * 587 + b * 114) // 1000
        rl += struct.pack(">H", L * 257 ^ x)
        rla += struct.pack(">HH", L * 257, (y * 65535) // (h - 1))
    rows_rgb.append(bytes(rr)); rows_rgba.append(bytes(ra)); rows_l.append(bytes(rl)); rows_la.append(bytes(rla))
png_raw("rgb16_coffee.png", w, h, 2, 16, rows_rgb)
png_raw("rgba16_coffee.png", w, h, 6, 16, rows_rgba)
png_raw("l16_coffee.png", w, h, 0, 16, rows_l)
png_raw("la16_coffee.png", w, h, 4, 16, rows_la)
# a low-value 16-bit gray image (all values < 256: where clipping vs scaling shows)
png_raw("l16_low.png", 64, 48, 0, 16, [b"".join(struct.pack(">H", (x * 4 + y) % 256) for x in range(64)) for y in range(48)])
# 2-bit gray and 4-bit palette PNGs
save(camera.resize((128, 128)).quantize(colors=4), "p4_camera.png", bits=2)

# --- JPEG flavours
save(coffee, "rgb_coffee_q90.jpg", quality=90)
save(chelsea, "progressive_chelsea.jpg", quality=85, progressive=True)
save(camera, "gray_camera.jpg", quality=85)
save(coffee.convert("CMYK"), "cmyk_coffee.jpg", quality=90)
save(astronaut, "rgb_astronaut_444.jpg", quality=92, subsampling=0)
save(astronaut, "rgb_astronaut_422.jpg", quality=80, subsampling=1)
small = rocket.resize((300, 200), Image.BICUBIC)
for o in range(1, 9):
    ex = Image.Exif()
    ex[0x0112] = o
    save(small, f"exif_orient_{o}.jpg", quality=88, exif=ex.tobytes())

# --- WebP, GIF, BMP
save(coffee, "rgb_coffee.webp", quality=80)
save(Image.open(os.path.join(SRC, "logo.png")), "rgba_logo_lossless.webp", lossless=True)
save(chelsea, "rgb_chelsea.gif")
save(chelsea, "rgb_chelsea_24.bmp")
save(chelsea.quantize(colors=200), "p_chelsea_8.bmp")
save(camera.resize((100, 80)), "l_camera_8.bmp")
save(camera.resize((64, 40)).convert("1"), "bilevel_camera_1.bmp")

# --- sizes: 1x1, extreme aspect ratios, pinpoint sizes and one pixel off them (W x H)
save(Image.new("RGB", (1, 1), (200, 30, 90)), "size_1x1.png")
save(Image.new("RGB", (2, 1), (0, 255, 0)), "size_2x1.png")
save(coffee.resize((3000, 200), Image.BICUBIC), "size_3000x200.jpg", quality=85)
def blocky(W, H):
    """Photo content at 1/8 resolution blown up with nearest: real structure for the
    resampler, tiny as PNG."""
    return astronaut.resize((max(1, W // 8), max(1, H // 8)), Image.BICUBIC).resize((W, H), Image.NEAREST)
save(blocky(200, 3000), "size_200x3000.png", optimize=True)
for (W, H) in [(672, 336), (336, 672), (672, 672), (336, 1008), (1008, 336), (336, 336),
               (671, 336), (673, 336), (672, 337), (672, 671), (673, 673), (335, 1008), (1009, 336),
               (337, 337), (800, 600), (1920, 1080), (1024, 899), (100, 100), (400, 3000)]:
    save(blocky(W, H), f"size_{W}x{H}.png", optimize=True)

total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
print(f"{len(os.listdir(OUT))} files, {total/1e6:.1f} MB in {os.path.normpath(OUT)}")
