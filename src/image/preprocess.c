/*
 * preprocess.c - LLaVA-NeXT anyres, CLIP and LLaVA pad-to-square
 * preprocessing, equal to transformers' PIL-backend processors.
 *
 * Read from transformers 5.x (the v4 "slow" processors do the same steps):
 *   models/llava_next/image_processing_pil_llava_next.py
 *     get_image_patches: best = select_best_resolution((H, W), pinpoints);
 *       resize to get_patch_output_size (bicubic); np.pad with 0, the odd
 *       pixel bottom/right; divide_to_patches (tile side crop_size.height,
 *       rows then columns); base = resize(original, (size, size)) - a squash,
 *       not a crop - and the list is [base] + tiles.
 *     _preprocess: each patch -> resize(size) -> center_crop(crop_size) ->
 *       rescale -> normalize. A 336x336 tile with size {shortest_edge: 336}
 *       resizes to 336x336, which Image.resize returns as a copy.
 *   image_processing_backends.py PilBackend.resize / center_crop / rescale /
 *     normalize, calling image_transforms.py:
 *     get_resize_output_image_size(default_to_square=False): the short side
 *       becomes `size`, the long one int(size * long / short) (truncated);
 *     resize: numpy -> PIL (uint8, no rescale) -> Image.resize(BICUBIC,
 *       reducing_gap=None) -> numpy uint8;
 *     center_crop: top = (h - crop_h) // 2, left likewise; an image smaller
 *       than the crop is first zero-padded with ceil((crop - h) / 2) before,
 *       so the content lands at -top (the odd pixel before, unlike anyres);
 *     rescale: image.astype(float64) * scale, then .astype(float32);
 *     normalize: (image - mean) / std with mean, std as float32 arrays.
 *   models/llava/image_processing_pil_llava.py _preprocess / pad_to_square:
 *     with do_pad, background = tuple(int(x * 255) for x in image_mean),
 *     the image at (max - h) // 2 (or (max - w) // 2) on a max x max square;
 *     then resize, crop, rescale, normalize as CLIP.
 *   CLIPImageProcessor(Pil): PilBackend._preprocess: resize, center_crop,
 *     rescale, normalize.
 *
 * Nothing is stored larger than it must be: a centre crop is computed as a
 * window of the resize (img_resize_bicubic_window), the pad-to-square and
 * anyres canvases are virtual (img_canvas), so a 4000x1 image costs what a
 * small one does.
 */
#include "image/preprocess.h"

#include "image/anyres.h"
#include "image/idefics3.h"
#include "image/resample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OUTPUT_PIXELS IMG_DEFAULT_MAX_PIXELS /* cap for option resizes */

/* OpenAI CLIP mean/std (transformers image_utils OPENAI_CLIP_MEAN/STD). */
static const double CLIP_MEAN[3] = {0.48145466, 0.4578275, 0.40821073};
static const double CLIP_STD[3] = {0.26862954, 0.26130258, 0.27577711};

void img_proc_params_clip_default(img_proc_params *p) {
    memset(p, 0, sizeof *p);
    p->kind = IMG_PROC_CLIP;
    p->do_resize = p->do_center_crop = p->do_rescale = p->do_normalize = true;
    p->shortest_edge = 336;
    p->crop_height = p->crop_width = 336;
    p->resample = 3;
    p->rescale_factor = 1.0 / 255.0;
    memcpy(p->mean, CLIP_MEAN, sizeof p->mean);
    memcpy(p->std, CLIP_STD, sizeof p->std);
    p->patch_size = 14;
}

void img_proc_params_llava_next_default(img_proc_params *p) {
    static const int pinpoints[5][2] = {
        {336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}};
    img_proc_params_clip_default(p);
    p->kind = IMG_PROC_LLAVA_NEXT;
    p->do_pad = true;
    p->n_pinpoints = 5;
    memcpy(p->pinpoints, pinpoints, sizeof pinpoints);
}

void img_norm_table(const img_proc_params *p, float tab[3][256]) {
    for (int c = 0; c < 3; c++) {
        float mean = (float)p->mean[c], std = (float)p->std[c];
        for (int u = 0; u < 256; u++) {
            float v = p->do_rescale ? (float)((double)u * p->rescale_factor) : (float)u;
            tab[c][u] = p->do_normalize ? (v - mean) / std : v;
        }
    }
}

void img_options_size(int w, int h, const img_options *opt, int *nw, int *nh) {
    *nw = w;
    *nh = h;
    if (!opt || (opt->max_size <= 0 && opt->min_size <= 0)) return;
    if (!opt->keep_aspect) {
        if (opt->min_size > 0) {
            if (*nw < opt->min_size) *nw = opt->min_size;
            if (*nh < opt->min_size) *nh = opt->min_size;
        }
        if (opt->max_size > 0) {
            if (*nw > opt->max_size) *nw = opt->max_size;
            if (*nh > opt->max_size) *nh = opt->max_size;
        }
        return;
    }
    int lo = w < h ? w : h, hi = w < h ? h : w;
    double s = 1.0;
    if (opt->min_size > 0 && lo < opt->min_size) s = (double)opt->min_size / lo;
    if (opt->max_size > 0 && hi * s > opt->max_size) s = (double)opt->max_size / hi;
    if (s == 1.0) return;
    double fw = round(w * s), fh = round(h * s);
    *nw = fw < 1 ? 1 : fw > INT32_MAX ? INT32_MAX : (int)fw;
    *nh = fh < 1 ? 1 : fh > INT32_MAX ? INT32_MAX : (int)fh;
    if (opt->max_size > 0 && *nw > opt->max_size) *nw = opt->max_size;
    if (opt->max_size > 0 && *nh > opt->max_size) *nh = opt->max_size;
}

/* ---- one patch: resize, centre crop, rescale + normalise -----------------
 *
 * A patch's output size and the part of the resized image it shows, per
 * axis: out = crop (or the resized size without a crop); output index o
 * shows resized index o + off, where off = (resized - crop) // 2, or pad
 * where that falls outside. */

typedef struct {
    int rh, rw;       /* size after the resize step */
    int oh, ow;       /* output size */
    int off_y, off_x; /* output (o) shows resized (o + off) */
} patch_geom;

static int floordiv2(int a) {
    return a >= 0 ? a / 2 : -((-a + 1) / 2);
}

/* get_resize_output_image_size / size {height, width}; false if a side
 * would exceed IMG_RESAMPLE_MAX_SIDE. */
static bool resize_size(int h, int w, const img_proc_params *p, int *rh, int *rw) {
    if (p->shortest_edge <= 0) {
        *rh = p->size_height;
        *rw = p->size_width;
        return true;
    }
    int s = p->shortest_edge, shrt = w <= h ? w : h, lng = w <= h ? h : w;
    double nl = (double)((int64_t)s * lng) / shrt;
    if (nl >= IMG_RESAMPLE_MAX_SIDE) return false;
    *rh = w <= h ? (int)nl : s;
    *rw = w <= h ? s : (int)nl;
    return true;
}

static lv_status patch_geometry(int h, int w, const img_proc_params *p, patch_geom *g,
                                lv_err *err) {
    g->rh = h;
    g->rw = w;
    if (p->do_resize && !resize_size(h, w, p, &g->rh, &g->rw))
        return lv_fail(err, LV_ERR_ARG,
                       "image %dx%d: resizing its short side to %d makes the long side exceed %d",
                       w, h, p->shortest_edge, IMG_RESAMPLE_MAX_SIDE);
    g->oh = g->rh;
    g->ow = g->rw;
    g->off_y = g->off_x = 0;
    if (p->do_center_crop) {
        g->oh = p->crop_height;
        g->ow = p->crop_width;
        g->off_y = floordiv2(g->rh - g->oh);
        g->off_x = floordiv2(g->rw - g->ow);
    }
    return LV_OK;
}

/* Writes the patch of src's canvas, (3, g->oh, g->ow) float32, to dst.
 * fill is the colour of centre-crop padding. */
static lv_status patch_to_tensor(const img_canvas *src, const patch_geom *g, const uint8_t fill[3],
                                 const float tab[3][256], float *dst, lv_err *err) {
    /* Resized-image window shown by the output: [y0, y1) x [x0, x1). */
    int y0 = g->off_y > 0 ? g->off_y : 0, x0 = g->off_x > 0 ? g->off_x : 0;
    int y1 = g->off_y + g->oh < g->rh ? g->off_y + g->oh : g->rh;
    int x1 = g->off_x + g->ow < g->rw ? g->off_x + g->ow : g->rw;
    size_t plane = (size_t)g->oh * (size_t)g->ow;
    uint8_t *win = malloc((size_t)(y1 - y0) * (size_t)(x1 - x0) * 3);
    if (!win)
        return lv_fail(err, LV_ERR_NOMEM, "image patch: no memory for %dx%d pixels", x1 - x0,
                       y1 - y0);
    lv_status st = img_resize_bicubic_window(src, g->rw, g->rh, x0, y0, x1 - x0, y1 - y0, win, err);
    if (st != LV_OK) {
        free(win);
        return st;
    }
    for (int c = 0; c < 3; c++) {
        const float *t = tab[c];
        float pad = t[fill[c]], *out = dst + (size_t)c * plane;
        for (int oy = 0; oy < g->oh; oy++) {
            int ry = oy + g->off_y;
            float *row = out + (size_t)oy * (size_t)g->ow;
            if (ry < y0 || ry >= y1) {
                for (int ox = 0; ox < g->ow; ox++) row[ox] = pad;
                continue;
            }
            const uint8_t *in = win + (size_t)(ry - y0) * (size_t)(x1 - x0) * 3 + c;
            for (int ox = 0; ox < g->ow; ox++) {
                int rx = ox + g->off_x;
                row[ox] = (rx < x0 || rx >= x1) ? pad : t[in[(size_t)(rx - x0) * 3]];
            }
        }
    }
    free(win);
    return LV_OK;
}

/* ---- the three processors ------------------------------------------------ */

/* CLIPImageProcessor, or LlavaImageProcessor after its pad-to-square: src is
 * the (virtual) image, one patch. */
static lv_status preprocess_single(const img_canvas *src, const img_proc_params *p,
                                   const uint8_t fill[3], const float tab[3][256], img_tensor *out,
                                   lv_err *err) {
    patch_geom g = {0};
    lv_status st = patch_geometry(src->canvas_h, src->canvas_w, p, &g, err);
    if (st != LV_OK) return st;
    if ((uint64_t)g.oh * (uint64_t)g.ow > MAX_OUTPUT_PIXELS)
        return lv_fail(err, LV_ERR_TOO_LARGE, "image patch of %dx%d pixels is over the %llu limit",
                       g.ow, g.oh, (unsigned long long)MAX_OUTPUT_PIXELS);
    out->n_tiles = 1;
    out->tile_h = g.oh;
    out->tile_w = g.ow;
    if (!(out->data = malloc((size_t)3 * (size_t)g.oh * (size_t)g.ow * sizeof *out->data)))
        return lv_fail(err, LV_ERR_NOMEM, "image tensor: no memory for 3x%dx%d floats", g.oh, g.ow);
    return patch_to_tensor(src, &g, fill, tab, out->data, err);
}

/* Copies the rectangle [x0, x0 + w) x [y0, y0 + h) of a canvas to dst
 * (h, w, 3). */
static void canvas_copy_rect(const img_canvas *cv, int x0, int y0, int w, int h, uint8_t *dst) {
    for (int y = 0; y < h; y++) {
        uint8_t *d = dst + (size_t)y * (size_t)w * 3;
        int iy = y0 + y - cv->off_y;
        for (int x = 0; x < w; x++) {
            int ix = x0 + x - cv->off_x;
            const uint8_t *s = (iy >= 0 && iy < cv->h && ix >= 0 && ix < cv->w)
                                   ? cv->px + ((size_t)iy * (size_t)cv->w + (size_t)ix) * 3
                                   : cv->fill;
            d[3 * x + 0] = s[0];
            d[3 * x + 1] = s[1];
            d[3 * x + 2] = s[2];
        }
    }
}

/* LlavaNextImageProcessor: [base] + grid tiles (base_only: [base], grid 0x0). */
static lv_status preprocess_anyres(const img_rgb *im, const img_proc_params *p,
                                   const uint8_t fill[3], const float tab[3][256], bool base_only,
                                   img_tensor *out, lv_err *err) {
    const int tile = p->crop_height;
    uint8_t *resized = NULL, *base = NULL, *tile_px = NULL;
    img_canvas cv;
    lv_status st;

    /* Grid, fit and padding (select_best_resolution, get_patch_output_size,
     * _get_padding_size). */
    int best_h, best_w, new_h, new_w, top, bottom, left, right;
    img_select_best_resolution(im->h, im->w, (const int(*)[2])p->pinpoints, p->n_pinpoints, &best_h,
                               &best_w);
    img_patch_output_size(im->h, im->w, best_h, best_w, &new_h, &new_w);
    img_center_pad(new_h, new_w, best_h, best_w, &top, &bottom, &left, &right);
    const int grid_h = base_only ? 0 : best_h / tile, grid_w = base_only ? 0 : best_w / tile;

    /* The base image: the original squashed to size (shortest_edge^2 or
     * height x width). Every patch is then resized + cropped alike; all must
     * come out the same size, as np.array(pixel_values) requires. */
    bool hw = p->size_height > 0 && p->size_width > 0;
    int base_h = hw ? p->size_height : p->shortest_edge;
    int base_w = hw ? p->size_width : p->shortest_edge;
    patch_geom g_tile = {0}, g_base = {0};
    if ((st = patch_geometry(tile, tile, p, &g_tile, err)) != LV_OK ||
        (st = patch_geometry(base_h, base_w, p, &g_base, err)) != LV_OK)
        return st;
    if (g_tile.oh != g_base.oh || g_tile.ow != g_base.ow)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "anyres: tiles come out %dx%d but the base image %dx%d (size and "
                       "crop_size disagree)",
                       g_tile.ow, g_tile.oh, g_base.ow, g_base.oh);

    const size_t plane = (size_t)g_tile.oh * (size_t)g_tile.ow;
    out->n_tiles = 1 + grid_h * grid_w;
    out->tile_h = g_tile.oh;
    out->tile_w = g_tile.ow;
    out->grid_h = grid_h;
    out->grid_w = grid_w;
    out->data = malloc((size_t)out->n_tiles * 3 * plane * sizeof *out->data);
    resized = malloc((size_t)new_h * (size_t)new_w * 3);
    base = malloc((size_t)base_h * (size_t)base_w * 3);
    tile_px = malloc((size_t)tile * (size_t)tile * 3);
    if (!out->data || !resized || !base || !tile_px) {
        st = lv_fail(err, LV_ERR_NOMEM, "anyres: no memory for %d patches of %dx%d", out->n_tiles,
                     out->tile_w, out->tile_h);
        goto fail;
    }

    /* Patch 0: the base. */
    if ((st = img_resize_bicubic(im->rgb, im->w, im->h, 3, base, base_w, base_h, err)) != LV_OK)
        goto fail;
    img_canvas_plain(&cv, base, base_w, base_h, 3);
    if ((st = patch_to_tensor(&cv, &g_base, fill, tab, out->data, err)) != LV_OK) goto fail;

    /* Patches 1..: the resized image centred on the best_w x best_h canvas
     * of the padding colour, cut into tiles row by row. */
    if (base_only) goto fail; /* st is LV_OK: done */
    if ((st = img_resize_bicubic(im->rgb, im->w, im->h, 3, resized, new_w, new_h, err)) != LV_OK)
        goto fail;
    const img_canvas padded = {.px = resized,
                               .w = new_w,
                               .h = new_h,
                               .channels = 3,
                               .canvas_w = best_w,
                               .canvas_h = best_h,
                               .off_x = left, /* right/bottom: the rest of the canvas */
                               .off_y = top,
                               .fill = {fill[0], fill[1], fill[2], 0}};
    for (int ty = 0; ty < grid_h; ty++) {
        for (int tx = 0; tx < grid_w; tx++) {
            canvas_copy_rect(&padded, tx * tile, ty * tile, tile, tile, tile_px);
            img_canvas_plain(&cv, tile_px, tile, tile, 3);
            float *dst = out->data + (size_t)(1 + ty * grid_w + tx) * 3 * plane;
            if ((st = patch_to_tensor(&cv, &g_tile, fill, tab, dst, err)) != LV_OK) goto fail;
        }
    }

fail:
    free(resized);
    free(base);
    free(tile_px);
    return st;
}

/* ---- entry point --------------------------------------------------------- */

void img_tensor_free(img_tensor *t) {
    if (!t) return;
    free(t->data);
    memset(t, 0, sizeof *t);
}

/* The deployment's max/min_size step: *work is im, or a Pillow bicubic
 * resize of it held in *owned (caller frees). */
static lv_status apply_size_options(const img_rgb *im, const img_options *opt, img_rgb *work,
                                    uint8_t **owned, lv_err *err) {
    *work = *im;
    *owned = NULL;
    if (opt->max_size < 0 || opt->min_size < 0 ||
        (opt->max_size > 0 && opt->min_size > opt->max_size))
        return lv_fail(err, LV_ERR_ARG,
                       "image_processing: min_size %d / max_size %d (need 0 <= min <= max, "
                       "0 = off)",
                       opt->min_size, opt->max_size);
    int nw, nh;
    img_options_size(im->w, im->h, opt, &nw, &nh);
    if (nw == im->w && nh == im->h) return LV_OK;
    if ((uint64_t)nw * (uint64_t)nh > MAX_OUTPUT_PIXELS)
        return lv_fail(err, LV_ERR_ARG,
                       "image_processing: min_size %d would make the %dx%d image %dx%d, over "
                       "%llu pixels",
                       opt->min_size, im->w, im->h, nw, nh, (unsigned long long)MAX_OUTPUT_PIXELS);
    if (!(*owned = malloc((size_t)nw * (size_t)nh * 3)))
        return lv_fail(err, LV_ERR_NOMEM, "preprocess: no memory for %dx%d pixels", nw, nh);
    lv_status st = img_resize_bicubic(im->rgb, im->w, im->h, 3, *owned, nw, nh, err);
    if (st != LV_OK) {
        free(*owned);
        *owned = NULL;
        return st;
    }
    work->rgb = *owned;
    work->w = nw;
    work->h = nh;
    return LV_OK;
}

lv_status img_preprocess(const img_rgb *im, const img_proc_params *p, const img_options *opt,
                         img_tensor *out, lv_err *err) {
    static const img_options no_options;
    if (!out) return lv_fail(err, LV_ERR_ARG, "preprocess: no output tensor");
    memset(out, 0, sizeof *out);
    if (!opt) opt = &no_options;
    if (!im || !im->rgb || im->w < 1 || im->h < 1 || im->w > IMG_RESAMPLE_MAX_SIDE ||
        im->h > IMG_RESAMPLE_MAX_SIDE)
        return lv_fail(err, LV_ERR_ARG, "preprocess: invalid image %dx%d", im ? im->w : 0,
                       im ? im->h : 0);
    lv_status st = img_proc_params_check(p, err);
    if (st != LV_OK) return st;
    img_rgb work;
    uint8_t *owned;
    if ((st = apply_size_options(im, opt, &work, &owned, err)) != LV_OK) return st;

    float tab[3][256];
    img_norm_table(p, tab);
    /* Padding colour: black for anyres and centre crops, the mean colour
     * (tuple(int(x * 255) for x in image_mean)) for pad-to-square; the
     * deployment's padding_color replaces both. */
    uint8_t fill[3] = {0, 0, 0}, square_fill[3] = {0, 0, 0};
    for (int c = 0; c < 3; c++) {
        double v = p->mean[c] * 255;
        square_fill[c] = v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)(int)v;
    }
    if (opt->has_padding_color) {
        memcpy(fill, opt->padding_color, 3);
        memcpy(square_fill, opt->padding_color, 3);
    }

    out->image_h = work.h;
    out->image_w = work.w;
    img_canvas cv;
    img_canvas_plain(&cv, work.rgb, work.w, work.h, 3);
    switch (p->kind) {
        case IMG_PROC_LLAVA_NEXT:
            st = preprocess_anyres(&work, p, fill, tab, opt->base_only, out, err);
            break;
        case IMG_PROC_LLAVA_PAD:
            if (p->do_pad && work.w != work.h) {
                int side = work.w > work.h ? work.w : work.h;
                cv.canvas_w = cv.canvas_h = side;
                cv.off_x = (side - work.w) / 2;
                cv.off_y = (side - work.h) / 2;
                memcpy(cv.fill, square_fill, 3);
            }
            st = preprocess_single(&cv, p, fill, tab, out, err);
            break;
        case IMG_PROC_CLIP:
            st = preprocess_single(&cv, p, fill, tab, out, err);
            break;
        case IMG_PROC_IDEFICS3: /* never pads: padding_color has nothing to colour */
            st = img_idefics3_preprocess(&work, p, tab, opt->base_only, out, err);
            if (st == LV_OK) {
                out->image_h = work.h;
                out->image_w = work.w;
            }
            break;
    }

    free(owned);
    if (st != LV_OK) {
        img_tensor_free(out);
        lv_err_prefix(err, "preprocess %dx%d", work.w, work.h);
    }
    return st;
}
