/*
 * orient.c - PIL.ImageOps.exif_transpose on an RGB image.
 *
 * exif_transpose maps the EXIF Orientation value to a PIL transpose
 * (src/PIL/ImageOps.py):
 *
 *     2 FLIP_LEFT_RIGHT   out(x, y) = in(w-1-x, y)
 *     3 ROTATE_180        out(x, y) = in(w-1-x, h-1-y)
 *     4 FLIP_TOP_BOTTOM   out(x, y) = in(x, h-1-y)
 *     5 TRANSPOSE         out(x, y) = in(y, x)              (size h x w)
 *     6 ROTATE_270        out(x, y) = in(y, h-1-x)          (90 deg clockwise)
 *     7 TRANSVERSE        out(x, y) = in(w-1-y, h-1-x)
 *     8 ROTATE_90         out(x, y) = in(w-1-y, x)          (90 deg counter-clockwise)
 *
 * (checked against Pillow's Image.transpose on a 3x2 image). Transposing
 * before or after convert("RGB") gives the same pixels, since the
 * conversion is per pixel, so it is done here on the RGB result.
 */
#include "image/decode_internal.h"

#include <stdlib.h>
#include <string.h>

static void px_copy(uint8_t *d, const uint8_t *s) {
    d[0] = s[0];
    d[1] = s[1];
    d[2] = s[2];
}

/* Orientations 2..4 keep the size: done in place, swapping pixel pairs. */
static void flip_in_place(img_rgb *im, int orientation) {
    int w = im->w, h = im->h;
    size_t stride = (size_t)w * 3;
    uint8_t t[3];
    if (orientation == 2 || orientation == 3) { /* mirror every row */
        for (int y = 0; y < h; y++) {
            uint8_t *row = im->rgb + (size_t)y * stride;
            for (int x = 0; x < w / 2; x++) {
                uint8_t *a = row + (size_t)x * 3, *b = row + (size_t)(w - 1 - x) * 3;
                px_copy(t, a);
                px_copy(a, b);
                px_copy(b, t);
            }
        }
    }
    if (orientation == 3 || orientation == 4) { /* swap rows top <-> bottom */
        for (int y = 0; y < h / 2; y++) {
            uint8_t *a = im->rgb + (size_t)y * stride, *b = im->rgb + (size_t)(h - 1 - y) * stride;
            for (size_t i = 0; i < stride; i++) {
                uint8_t v = a[i];
                a[i] = b[i];
                b[i] = v;
            }
        }
    }
}

/* Orientations 5..8 swap width and height: a new buffer, filled in 64x64
 * source tiles so both sides stay in cache. */
static void rotate_into(uint8_t *dst, const img_rgb *im, int orientation) {
    int w = im->w, h = im->h; /* source size; destination is h wide, w tall */
    enum { T = 64 };
    for (int by = 0; by < h; by += T) {
        int ey = by + T < h ? by + T : h;
        for (int bx = 0; bx < w; bx += T) {
            int ex = bx + T < w ? bx + T : w;
            for (int sy = by; sy < ey; sy++) {
                const uint8_t *src = im->rgb + ((size_t)sy * w + bx) * 3;
                for (int sx = bx; sx < ex; sx++, src += 3) {
                    int dx, dy; /* destination of source (sx, sy) */
                    switch (orientation) {
                        case 5:
                            dx = sy, dy = sx;
                            break; /* in(y, x) */
                        case 6:
                            dx = h - 1 - sy, dy = sx;
                            break; /* in(y, h-1-x) */
                        case 7:
                            dx = h - 1 - sy, dy = w - 1 - sx;
                            break; /* in(w-1-y, h-1-x) */
                        default:
                            dx = sy, dy = w - 1 - sx;
                            break; /* 8: in(w-1-y, x) */
                    }
                    px_copy(dst + ((size_t)dy * h + dx) * 3, src);
                }
            }
        }
    }
}

lv_status orient_apply(img_rgb *im, int orientation, lv_err *err) {
    if (orientation < 2 || orientation > 8) return LV_OK;
    if (orientation <= 4) {
        flip_in_place(im, orientation);
        return LV_OK;
    }
    uint8_t *dst = malloc((size_t)im->w * im->h * 3);
    if (!dst)
        return lv_fail(err, LV_ERR_NOMEM, "out of memory rotating a %dx%d image", im->w, im->h);
    rotate_into(dst, im, orientation);
    free(im->rgb);
    im->rgb = dst;
    int t = im->w;
    im->w = im->h;
    im->h = t;
    return LV_OK;
}
