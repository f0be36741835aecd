/*
 * anyres.c - LLaVA-NeXT grid selection, fit, padding and token counts.
 *
 * Read from transformers (5.x; the v4 slow processor has the same logic):
 *   image_processing_utils.py  select_best_resolution, get_patch_output_size
 *   models/llava_next/image_processing_pil_llava_next.py  _get_padding_size
 *       (divmod: the odd pixel after), get_image_patches (tile side =
 *       crop_size["height"])
 *   models/llava_next/processing_llava_next.py  _get_number_of_features,
 *       _get_unpadded_features (int(round(x, 7)))
 *   models/llava_next/modeling_llava_next.py  unpad_image (same rule)
 * Python's `int(x)` of a float truncates, `a / b` of ints is a correctly
 * rounded double, `//` floors; the C below does the same operations in the
 * same order, so every comparison lands on the same side.
 */
#include "image/anyres.h"

#include "image/idefics3.h"

#include <math.h>

/* Python's a // b for b > 0. */
static int floordiv(int a, int b) {
    int q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

int img_select_best_resolution(int h, int w, const int (*pinpoints)[2], int n_pinpoints,
                               int *best_h, int *best_w) {
    if (h < 1 || w < 1 || n_pinpoints < 1 || !pinpoints) return -1;
    int best = -1;
    int64_t max_effective = 0, min_wasted = INT64_MAX; /* float("inf") */
    for (int i = 0; i < n_pinpoints; i++) {
        int ph = pinpoints[i][0], pw = pinpoints[i][1];
        double scale_w = (double)pw / w, scale_h = (double)ph / h;
        double scale = scale_h < scale_w ? scale_h : scale_w; /* min(): first on ties */
        int64_t down_w = (int64_t)(w * scale), down_h = (int64_t)(h * scale);
        int64_t effective = down_w * down_h, original = (int64_t)w * h;
        if (original < effective) effective = original;
        int64_t wasted = (int64_t)ph * pw - effective;
        if (effective > max_effective || (effective == max_effective && wasted < min_wasted)) {
            max_effective = effective;
            min_wasted = wasted;
            best = i;
        }
    }
    /* The first entry always wins at least the wasted < inf comparison. */
    if (best_h) *best_h = pinpoints[best][0];
    if (best_w) *best_w = pinpoints[best][1];
    return best;
}

void img_patch_output_size(int h, int w, int target_h, int target_w, int *new_h, int *new_w) {
    double scale_w = (double)target_w / w, scale_h = (double)target_h / h;
    if (scale_w < scale_h) {
        int nh = (int)ceil(h * scale_w);
        *new_w = target_w;
        *new_h = nh < target_h ? nh : target_h;
    } else {
        int nw = (int)ceil(w * scale_h);
        *new_h = target_h;
        *new_w = nw < target_w ? nw : target_w;
    }
}

void img_center_pad(int new_h, int new_w, int target_h, int target_w, int *top, int *bottom,
                    int *left, int *right) {
    int dy = target_h - new_h, dx = target_w - new_w;
    *top = dy / 2;
    *bottom = dy / 2 + dy % 2;
    *left = dx / 2;
    *right = dx / 2 + dx % 2;
}

static lv_status check_rescale_normalize(const img_proc_params *p, lv_err *err) {
    if (p->do_rescale && !(isfinite(p->rescale_factor)))
        return lv_fail(err, LV_ERR_ARG, "image processor: rescale_factor is not finite");
    for (int c = 0; p->do_normalize && c < 3; c++)
        if (!isfinite(p->mean[c]) || !isfinite(p->std[c]) || p->std[c] == 0.0)
            return lv_fail(err, LV_ERR_ARG,
                           "image processor: image_mean/std[%d] = %g/%g (std must be finite, "
                           "non-zero)",
                           c, p->mean[c], p->std[c]);
    return LV_OK;
}

lv_status img_proc_params_check(const img_proc_params *p, lv_err *err) {
    const int max_side = 1 << 14;
    if (!p) return lv_fail(err, LV_ERR_ARG, "image processor: no parameters");
    if (p->kind == IMG_PROC_IDEFICS3) {
        lv_status st = img_idefics3_check(p, err);
        return st != LV_OK ? st : check_rescale_normalize(p, err);
    }
    if (p->kind != IMG_PROC_LLAVA_NEXT && p->kind != IMG_PROC_CLIP && p->kind != IMG_PROC_LLAVA_PAD)
        return lv_fail(err, LV_ERR_ARG, "image processor: unknown kind %d", (int)p->kind);
    if (p->crop_height < 1 || p->crop_width < 1 || p->crop_height > max_side ||
        p->crop_width > max_side)
        return lv_fail(err, LV_ERR_ARG, "image processor: crop_size %dx%d must be 1..%d",
                       p->crop_height, p->crop_width, max_side);
    if (p->patch_size < 1 || p->patch_size > p->crop_height || p->patch_size > p->crop_width)
        return lv_fail(err, LV_ERR_ARG,
                       "image processor: patch_size %d must be 1..crop size (%dx%d)", p->patch_size,
                       p->crop_height, p->crop_width);
    bool has_edge = p->shortest_edge > 0, has_hw = p->size_height > 0 && p->size_width > 0;
    if (p->shortest_edge < 0 || p->shortest_edge > max_side || p->size_height < 0 ||
        p->size_width < 0 || p->size_height > max_side || p->size_width > max_side)
        return lv_fail(err, LV_ERR_ARG,
                       "image processor: size (shortest_edge %d, %dx%d) out of "
                       "range 0..%d",
                       p->shortest_edge, p->size_height, p->size_width, max_side);
    bool needs_size = p->do_resize || p->kind == IMG_PROC_LLAVA_NEXT; /* base image size */
    if (needs_size && !has_edge && !has_hw)
        return lv_fail(err, LV_ERR_ARG,
                       "image processor: size needs shortest_edge or height and width");
    if (p->resample != 3)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "image processor: resample %d is not supported (only 3, bicubic)",
                       p->resample);
    lv_status st = check_rescale_normalize(p, err);
    if (st != LV_OK) return st;
    if (p->kind != IMG_PROC_LLAVA_NEXT) return LV_OK;

    int tile = p->crop_height;
    if (p->crop_width != tile)
        return lv_fail(err, LV_ERR_ARG,
                       "image processor: anyres needs a square crop_size, got %dx%d",
                       p->crop_height, p->crop_width);
    if (p->n_pinpoints < 1 || p->n_pinpoints > IMG_MAX_PINPOINTS)
        return lv_fail(err, LV_ERR_ARG,
                       "image processor: anyres needs 1..%d image_grid_pinpoints, got %d",
                       IMG_MAX_PINPOINTS, p->n_pinpoints);
    for (int i = 0; i < p->n_pinpoints; i++) {
        int ph = p->pinpoints[i][0], pw = p->pinpoints[i][1];
        if (ph < tile || pw < tile || ph > max_side || pw > max_side || ph % tile || pw % tile)
            return lv_fail(err, LV_ERR_ARG,
                           "image processor: pinpoint %d is %dx%d; each side must be a multiple "
                           "of the tile size %d, at most %d",
                           i, ph, pw, tile, max_side);
    }
    return LV_OK;
}

void img_anyres_grid(int h, int w, const img_proc_params *p, int *grid_h, int *grid_w) {
    int best_h = 0, best_w = 0;
    img_select_best_resolution(h, w, (const int(*)[2])p->pinpoints, p->n_pinpoints, &best_h,
                               &best_w);
    *grid_h = best_h / p->crop_height;
    *grid_w = best_w / p->crop_width;
}

/* Python's int(round(y, 7)) for y >= 0. round() rounds the exact binary
 * value to 7 decimals, so the result is floor(y) + 1 exactly when the
 * fraction exceeds 0.99999995, else floor(y). y - floor(y) is exact, and the
 * double literal 0.99999995 lies just below the decimal value with no double
 * between them, so `>` here is the exact comparison. */
static int int_round7(double y) {
    double fl = floor(y);
    return (int)fl + (y - fl > 0.99999995 ? 1 : 0);
}

void img_anyres_unpad(int h, int w, int cur_h, int cur_w, int *rows, int *cols) {
    double original_ar = (double)w / h, current_ar = (double)cur_w / cur_h;
    *rows = cur_h;
    *cols = cur_w;
    if (original_ar > current_ar) {
        int new_h = int_round7(h * ((double)cur_w / w));
        int pad = floordiv(cur_h - new_h, 2);
        *rows = cur_h - 2 * pad;
    } else {
        int new_w = int_round7(w * ((double)cur_h / h));
        int pad = floordiv(cur_w - new_w, 2);
        *cols = cur_w - 2 * pad;
    }
}

int img_num_image_tokens(int h, int w, const img_proc_params *p) {
    if (h < 1 || w < 1 || img_proc_params_check(p, NULL) != LV_OK) return -1;
    if (p->kind == IMG_PROC_IDEFICS3) return -1; /* needs image_seq_len: idefics3.h */
    int ph = p->crop_height / p->patch_size, pw = p->crop_width / p->patch_size;
    if (p->kind != IMG_PROC_LLAVA_NEXT) return ph * pw;
    int grid_h, grid_w, rows, cols;
    img_anyres_grid(h, w, p, &grid_h, &grid_w);
    img_anyres_unpad(h, w, ph * grid_h, pw * grid_w, &rows, &cols);
    /* unpadded + one newline per row + base (ph * pw + 1 additional token,
     * minus that one again for the "default" feature strategy). */
    return rows * cols + rows + ph * pw;
}
