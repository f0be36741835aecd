/*
 * resample.h - Pillow-exact bicubic and LANCZOS resizes of 8-bit images.
 *
 * Reproduces `PIL.Image.resize(size, Image.BICUBIC)` and `Image.LANCZOS`
 * (the same machinery, only the filter differs) (reducing_gap=None, the
 * whole image as the box) bit for bit on 8-bit images with 1 to 4 interleaved
 * channels: the same double-precision coefficients, the same 22-bit fixed
 * point weights, horizontal pass first into an 8-bit intermediate, then the
 * vertical pass; a pass whose dimension is unchanged is skipped, and a
 * same-size resize is a plain copy. resample.c has the details and where
 * they were read. Channels are filtered independently, as Pillow does for
 * L, RGB, RGBX and CMYK; for LA/RGBA Pillow premultiplies alpha around the
 * resize, which this does not (the pipeline only resizes RGB).
 *
 * Besides the plain call, img_resize_bicubic_window computes one rectangle
 * of a resize (what a centre crop keeps) without producing the rest, and
 * reads its input from an img_canvas: an image placed on a larger canvas of
 * one colour (what a pad-to-square makes before resizing) without the canvas
 * ever being stored. Both give exactly the bytes the full resize of the
 * full canvas would have there, because every output sample of either pass
 * depends only on its own coefficients and source samples.
 */
#ifndef LV_IMAGE_RESAMPLE_H
#define LV_IMAGE_RESAMPLE_H

#include "base/common.h"

/* Sides above this are refused (Pillow keeps sizes in int; this leaves room
 * for size * channels and coefficient-table arithmetic in int). */
#define IMG_RESAMPLE_MAX_SIDE (1 << 24)

/* Pillow's filters that are reproduced (PIL filter ids: LANCZOS 1, BICUBIC 3). */
typedef enum {
    IMG_FILTER_BICUBIC, /* Keys cubic a = -0.5, support 2 */
    IMG_FILTER_LANCZOS, /* sinc(x) sinc(x / 3), support 3 */
} img_filter;

/* A resampler input: an image placed on a canvas of one colour. With
 * canvas_w = w, canvas_h = h and off_x = off_y = 0 it is just the image. */
typedef struct {
    const uint8_t *px;      /* (h, w, channels) row-major, tightly packed; borrowed */
    int w, h;               /* image size in pixels, >= 1 */
    int channels;           /* samples per pixel, 1..4 */
    int canvas_w, canvas_h; /* canvas size, >= the image's */
    int off_x, off_y;       /* the image's top-left corner on the canvas */
    uint8_t fill[4];        /* canvas colour outside the image, per channel */
} img_canvas;

/* Sets *c to describe the plain image px (w x h, channels samples a pixel). */
void img_canvas_plain(img_canvas *c, const uint8_t *px, int w, int h, int channels);

/*
 * Resizes src (sw x sh, `channels` interleaved 8-bit samples a pixel) to
 * dw x dh into dst (dh * dw * channels bytes, caller-owned), exactly as
 * Pillow's Image.resize((dw, dh), BICUBIC). src and dst must not overlap.
 * Errors: LV_ERR_ARG (a size < 1 or > IMG_RESAMPLE_MAX_SIDE, channels not in
 * 1..4), LV_ERR_NOMEM (coefficient tables or the intermediate). dst is
 * unspecified on failure.
 */
lv_status img_resize_bicubic(const uint8_t *src, int sw, int sh, int channels, uint8_t *dst, int dw,
                             int dh, lv_err *err);

/* As img_resize_bicubic, with the filter as a parameter (LV_ERR_ARG for an
 * unknown one): Image.resize((dw, dh), BICUBIC or LANCZOS). */
lv_status img_resize(const uint8_t *src, int sw, int sh, int channels, img_filter filter,
                     uint8_t *dst, int dw, int dh, lv_err *err);

/*
 * Writes the rectangle [x0, x0 + ww) x [y0, y0 + wh) of the Pillow bicubic
 * resize of src's canvas (canvas_w x canvas_h) to dw x dh into dst
 * (wh * ww * channels bytes, row-major, caller-owned). The rectangle must
 * lie inside dw x dh. Work and memory scale with the rectangle and the
 * source rows it needs, not with dw x dh.
 * Errors: LV_ERR_ARG (sizes, channels, a rectangle outside the output or an
 * image that does not fit its canvas), LV_ERR_NOMEM.
 */
lv_status img_resize_bicubic_window(const img_canvas *src, int dw, int dh, int x0, int y0, int ww,
                                    int wh, uint8_t *dst, lv_err *err);

/* img_resize_bicubic_window with the filter as a parameter. */
lv_status img_resize_window(const img_canvas *src, img_filter filter, int dw, int dh, int x0,
                            int y0, int ww, int wh, uint8_t *dst, lv_err *err);

#endif
