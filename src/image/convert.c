/*
 * convert.c - Pillow's raw unpackers and its conversions to "RGB", fused
 * into one pass per row.
 *
 * Pillow decodes a file into an image of some mode through an unpacker
 * for the file's raw layout (libImaging/Unpack.c), then Image.convert("RGB")
 * maps that mode to RGB (libImaging/Convert.c). The formulas here are
 * those two steps composed; each function names the pair it reproduces.
 * The ones that are not plain copies:
 *
 *   "1" -> RGB        bit2rgb: non-zero -> 255
 *   I;16 -> RGB       I16_RGB: values above 255 become 255 (a clip, not a
 *                     scale: a 16-bit gray PNG comes out mostly white)
 *   RGB;16B etc.      unpackRGB16B / unpackRGBA16B / unpackLA16B keep the
 *                     high byte of each big-endian sample
 *   CMYK;I -> RGB     unpack inverts every channel (Adobe CMYK JPEG), then
 *                     cmyk2rgb: nk = 255 - k; c' = CLIP8(nk - MULDIV255(c, nk))
 *                     with MULDIV255(a, b) = (t = a*b + 128, ((t >> 8) + t) >> 8)
 *   BGR;15 / BGR;16   ImagingUnpackBGR15/16: v * 255 / 31 (or / 63), truncated
 *   L;2 / L;4 (PNG)   v * 0x55 / v * 0x11: handled as a palette by decode_png.c
 *   P -> RGB          p2rgb: palette entry; Pillow's palette is calloc'ed, so
 *                     indices past the file's palette are black
 */
#include "image/decode_internal.h"

#include <string.h>

void cvt_l(uint8_t *rgb, const uint8_t *in, int n) { /* L -> l2rgb */
    for (int i = 0; i < n; i++, rgb += 3) rgb[0] = rgb[1] = rgb[2] = in[i];
}

void cvt_la(uint8_t *rgb, const uint8_t *in, int n) { /* LA -> la2rgb */
    for (int i = 0; i < n; i++, rgb += 3, in += 2) rgb[0] = rgb[1] = rgb[2] = in[0];
}

void cvt_rgba(uint8_t *rgb, const uint8_t *in, int n) { /* RGBA -> rgba2rgb (alpha dropped) */
    for (int i = 0; i < n; i++, rgb += 3, in += 4) {
        rgb[0] = in[0];
        rgb[1] = in[1];
        rgb[2] = in[2];
    }
}

void cvt_bit1(uint8_t *rgb, const uint8_t *in, int n) { /* unpack "1" -> bit2rgb */
    for (int i = 0; i < n; i++, rgb += 3) {
        uint8_t v = (in[i >> 3] >> (7 - (i & 7))) & 1 ? 255 : 0;
        rgb[0] = rgb[1] = rgb[2] = v;
    }
}

void cvt_i16be(uint8_t *rgb, const uint8_t *in, int n) { /* I;16B -> I;16 -> I16_RGB */
    for (int i = 0; i < n; i++, rgb += 3, in += 2) {
        uint8_t v = in[0] == 0 ? in[1] : 255;
        rgb[0] = rgb[1] = rgb[2] = v;
    }
}

void cvt_rgb16be(uint8_t *rgb, const uint8_t *in, int n) { /* unpackRGB16B */
    for (int i = 0; i < n; i++, rgb += 3, in += 6) {
        rgb[0] = in[0];
        rgb[1] = in[2];
        rgb[2] = in[4];
    }
}

void cvt_rgba16be(uint8_t *rgb, const uint8_t *in, int n) { /* unpackRGBA16B -> rgba2rgb */
    for (int i = 0; i < n; i++, rgb += 3, in += 8) {
        rgb[0] = in[0];
        rgb[1] = in[2];
        rgb[2] = in[4];
    }
}

void cvt_la16be(uint8_t *rgb, const uint8_t *in, int n) { /* unpackLA16B -> RGBA -> rgba2rgb */
    for (int i = 0; i < n; i++, rgb += 3, in += 4) rgb[0] = rgb[1] = rgb[2] = in[0];
}

static inline uint8_t clip8(int v) {
    return v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)v;
}

static inline int muldiv255(int a, int b) {
    int t = a * b + 128;
    return ((t >> 8) + t) >> 8;
}

void cvt_cmyk_inv(uint8_t *rgb, const uint8_t *in, int n) { /* unpack CMYK;I -> cmyk2rgb */
    for (int i = 0; i < n; i++, rgb += 3, in += 4) {
        int nk = 255 - (255 - in[3]); /* the inverted K, then Pillow's 255 - k */
        rgb[0] = clip8(nk - muldiv255(255 - in[0], nk));
        rgb[1] = clip8(nk - muldiv255(255 - in[1], nk));
        rgb[2] = clip8(nk - muldiv255(255 - in[2], nk));
    }
}

void cvt_bgr15(uint8_t *rgb, const uint8_t *in, int n) { /* ImagingUnpackBGR15 */
    for (int i = 0; i < n; i++, rgb += 3, in += 2) {
        int p = in[0] | (in[1] << 8);
        rgb[2] = (uint8_t)((p & 31) * 255 / 31);
        rgb[1] = (uint8_t)(((p >> 5) & 31) * 255 / 31);
        rgb[0] = (uint8_t)(((p >> 10) & 31) * 255 / 31);
    }
}

void cvt_bgr16(uint8_t *rgb, const uint8_t *in, int n) { /* ImagingUnpackBGR16 */
    for (int i = 0; i < n; i++, rgb += 3, in += 2) {
        int p = in[0] | (in[1] << 8);
        rgb[2] = (uint8_t)((p & 31) * 255 / 31);
        rgb[1] = (uint8_t)(((p >> 5) & 63) * 255 / 63);
        rgb[0] = (uint8_t)(((p >> 11) & 31) * 255 / 31);
    }
}

void cvt_bytes(uint8_t *rgb, const uint8_t *in, int n, int step, int r, int g, int b) {
    for (int i = 0; i < n; i++, rgb += 3, in += step) {
        rgb[0] = in[r];
        rgb[1] = in[g];
        rgb[2] = in[b];
    }
}

void cvt_unpack(uint8_t *idx, const uint8_t *in, int n, int bits) {
    switch (bits) {
        case 8:
            memcpy(idx, in, (size_t)n);
            break;
        case 4:
            for (int i = 0; i < n; i++) idx[i] = (in[i >> 1] >> (i & 1 ? 0 : 4)) & 15;
            break;
        case 2:
            for (int i = 0; i < n; i++) idx[i] = (in[i >> 2] >> (6 - 2 * (i & 3))) & 3;
            break;
        default:
            for (int i = 0; i < n; i++) idx[i] = (in[i >> 3] >> (7 - (i & 7))) & 1;
            break;
    }
}

void cvt_palette(uint8_t *rgb, const uint8_t *idx, int n, const uint8_t pal[768]) {
    for (int i = 0; i < n; i++, rgb += 3) {
        const uint8_t *p = pal + idx[i] * 3;
        rgb[0] = p[0];
        rgb[1] = p[1];
        rgb[2] = p[2];
    }
}
