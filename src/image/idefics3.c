/*
 * idefics3.c - the SmolVLM / Idefics3 image processor (PIL backend).
 *
 * Read from huggingface/transformers (5.x; the v4 slow processors are the
 * same code):
 *   src/transformers/models/smolvlm/image_processing_pil_smolvlm.py
 *     SmolVLMImageProcessorPil (Idefics3ImageProcessorPil in
 *     models/idefics3/image_processing_pil_idefics3.py is identical):
 *     class defaults (LANCZOS, IMAGENET_STANDARD mean/std 0.5, size
 *     {longest_edge: 4 * 364}, max_image_size {longest_edge: 364}, every
 *     do_* true); _preprocess: resize(size) -> resize_for_vision_encoder ->
 *     split_images per image, or (do_image_splitting false) resize to
 *     max_image_size x max_image_size with rows = cols = 0; then rescale,
 *     normalize, pad (a no-op for one image: every frame is T x T).
 *     resize_for_vision_encoder: aspect = w / h; if w >= h: w = ceil(w / T) T,
 *     h = ceil(int(w / aspect) / T) T; else the same with the roles swapped.
 *     split_images: if h > T or w > T: (h - T) // T + 1 rows, likewise cols,
 *     crops [r T, (r + 1) T) x [c T, (c + 1) T) row-major, then the whole
 *     image resized to T x T appended; else [image], 0, 0.
 *   src/transformers/models/smolvlm/image_processing_smolvlm.py
 *     get_resize_output_image_size = _resize_output_size_rescale_to_max_len
 *     (aspect = w / h; if w >= h: w = L, h = int(w / aspect), +1 if odd;
 *     else h = L, w = int(h * aspect), +1 if odd; at least 1) then
 *     _resize_output_size_scale_below_upper_bound(MAX_IMAGE_SIZE = 4096)
 *     (a side over 4096 becomes 4096, the other int(4096 / aspect) or
 *     int(4096 * aspect); at least 1).
 * Python's int() of a float truncates and `a / b` of ints is the correctly
 * rounded double; the C below does the same operations in the same order.
 * math.ceil(a / T) of ints below 2^53 equals the integer ceiling division.
 * The resizes are Pillow's (resample.h), bit for bit; an unchanged size is a
 * copy (Image.resize returns self.copy()), here not even that.
 */
#include "image/idefics3.h"

#include "image/preprocess.h"
#include "image/resample.h"

#include <stdlib.h>
#include <string.h>

#define MAX_TILE   2048      /* T above this is refused */
#define MAX_EDGE   (1 << 14) /* L above this is refused (4096 caps it anyway) */
#define MAX_PIXELS IMG_DEFAULT_MAX_PIXELS

void img_proc_params_idefics3_default(img_proc_params *p, int longest_edge, int max_image_size,
                                      int patch_size) {
    memset(p, 0, sizeof *p);
    p->kind = IMG_PROC_IDEFICS3;
    p->do_resize = p->do_rescale = p->do_normalize = p->do_pad = true;
    p->do_image_splitting = true;
    p->longest_edge = longest_edge;
    p->max_image_size = max_image_size;
    p->crop_height = p->crop_width = max_image_size; /* the frame size, for generic callers */
    p->resample = 1;                                 /* PILImageResampling.LANCZOS */
    p->rescale_factor = 1.0 / 255.0;
    for (int c = 0; c < 3; c++) p->mean[c] = p->std[c] = 0.5; /* IMAGENET_STANDARD_MEAN/STD */
    p->patch_size = patch_size;
}

lv_status img_idefics3_check(const img_proc_params *p, lv_err *err) {
    if (p->longest_edge < 1 || p->longest_edge > MAX_EDGE)
        return lv_fail(err, LV_ERR_ARG, "image processor: size.longest_edge %d must be 1..%d",
                       p->longest_edge, MAX_EDGE);
    if (p->max_image_size < 1 || p->max_image_size > MAX_TILE)
        return lv_fail(err, LV_ERR_ARG,
                       "image processor: max_image_size.longest_edge %d must be 1..%d",
                       p->max_image_size, MAX_TILE);
    if (p->patch_size < 1 || p->patch_size > p->max_image_size)
        return lv_fail(err, LV_ERR_ARG, "image processor: patch_size %d must be 1..%d",
                       p->patch_size, p->max_image_size);
    if (p->resample != 1 && p->resample != 3)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "image processor: resample %d is not supported (1 LANCZOS or 3 bicubic)",
                       p->resample);
    return LV_OK;
}

void img_idefics3_resize_size(int h, int w, int longest_edge, int *h1, int *w1) {
    /* _resize_output_size_rescale_to_max_len */
    double ar = (double)w / h;
    int H, W;
    if (w >= h) {
        W = longest_edge;
        H = (int)(W / ar);
        if (H % 2 != 0) H += 1;
    } else {
        H = longest_edge;
        W = (int)(H * ar);
        if (W % 2 != 0) W += 1;
    }
    if (H < 1) H = 1;
    if (W < 1) W = 1;
    /* _resize_output_size_scale_below_upper_bound(MAX_IMAGE_SIZE) */
    ar = (double)W / H;
    if (W >= H && W > IMG_IDEFICS3_MAX_SIDE) {
        W = IMG_IDEFICS3_MAX_SIDE;
        H = (int)(W / ar);
    } else if (H > W && H > IMG_IDEFICS3_MAX_SIDE) {
        H = IMG_IDEFICS3_MAX_SIDE;
        W = (int)(H * ar);
    }
    *h1 = H < 1 ? 1 : H;
    *w1 = W < 1 ? 1 : W;
}

static int ceil_to(int v, int t) {
    return (int)(((int64_t)v + t - 1) / t * t);
}

void img_idefics3_encoder_size(int h1, int w1, int tile, int *h2, int *w2) {
    double ar = (double)w1 / h1;
    if (w1 >= h1) {
        *w2 = ceil_to(w1, tile);
        *h2 = ceil_to((int)(*w2 / ar), tile);
    } else {
        *h2 = ceil_to(h1, tile);
        *w2 = ceil_to((int)(*h2 * ar), tile);
    }
}

/* Every size of the pipeline for an h x w input: step 1 (h1, w1), the image
 * that is cut (h2, w2; T x T without splitting), rows, cols. */
typedef struct {
    int h1, w1, h2, w2, rows, cols;
    int64_t frames; /* rows * cols + 1: beyond int only without do_resize and a tiny T */
} geometry;

static void geometry_of(int h, int w, const img_proc_params *p, bool base_only, geometry *g) {
    const int T = p->max_image_size;
    g->h1 = h;
    g->w1 = w;
    if (p->do_resize) img_idefics3_resize_size(h, w, p->longest_edge, &g->h1, &g->w1);
    g->h2 = g->w2 = T;
    g->rows = g->cols = 0;
    if (p->do_image_splitting && !base_only) {
        img_idefics3_encoder_size(g->h1, g->w1, T, &g->h2, &g->w2);
        if (g->h2 > T || g->w2 > T) {
            g->rows = (g->h2 - T) / T + 1;
            g->cols = (g->w2 - T) / T + 1;
        }
    }
    g->frames = (int64_t)g->rows * g->cols + 1;
}

int img_idefics3_grid(int h, int w, const img_proc_params *p, bool base_only, int *rows,
                      int *cols) {
    if (h < 1 || w < 1 || !p || p->kind != IMG_PROC_IDEFICS3 ||
        img_idefics3_check(p, NULL) != LV_OK)
        return -1;
    geometry g;
    geometry_of(h, w, p, base_only, &g);
    if (g.frames > INT32_MAX) return -1;
    if (rows) *rows = g.rows;
    if (cols) *cols = g.cols;
    return (int)g.frames;
}

int img_idefics3_num_image_tokens(int h, int w, const img_proc_params *p, bool base_only,
                                  int image_seq_len) {
    int frames = img_idefics3_grid(h, w, p, base_only, NULL, NULL);
    if (frames < 0 || image_seq_len < 1 || (int64_t)frames * image_seq_len > INT32_MAX) return -1;
    return frames * image_seq_len;
}

/* The T x T square at (x0, y0) of an (h, w, 3) image, through the table,
 * channels first, into dst (3, T, T). */
static void square_to_tensor(const uint8_t *px, int w, int x0, int y0, int T,
                             const float tab[3][256], float *dst) {
    const size_t plane = (size_t)T * (size_t)T;
    for (int y = 0; y < T; y++) {
        const uint8_t *in = px + (((size_t)(y0 + y) * (size_t)w + (size_t)x0) * 3);
        float *r = dst + (size_t)y * (size_t)T, *g = r + plane, *b = g + plane;
        for (int x = 0; x < T; x++, in += 3) {
            r[x] = tab[0][in[0]];
            g[x] = tab[1][in[1]];
            b[x] = tab[2][in[2]];
        }
    }
}

/* Pillow's Image.resize of (sh, sw) to (dh, dw): *dst is src itself when
 * the size is unchanged, else a new image in *owned. */
static lv_status resize_or_borrow(const uint8_t *src, int sw, int sh, int dw, int dh, img_filter f,
                                  const uint8_t **dst, uint8_t **owned, lv_err *err) {
    *owned = NULL;
    *dst = src;
    if (sw == dw && sh == dh) return LV_OK;
    if (!(*owned = malloc((size_t)dw * (size_t)dh * 3)))
        return lv_fail(err, LV_ERR_NOMEM, "idefics3: no memory for a %dx%d image", dw, dh);
    lv_status st = img_resize(src, sw, sh, 3, f, *owned, dw, dh, err);
    if (st != LV_OK) {
        free(*owned);
        *owned = NULL;
        return st;
    }
    *dst = *owned;
    return LV_OK;
}

lv_status img_idefics3_preprocess(const img_rgb *im, const img_proc_params *p,
                                  const float tab[3][256], bool base_only, img_tensor *out,
                                  lv_err *err) {
    memset(out, 0, sizeof *out);
    if (!im || !im->rgb || im->w < 1 || im->h < 1 || !p || p->kind != IMG_PROC_IDEFICS3)
        return lv_fail(err, LV_ERR_ARG, "idefics3: invalid image or parameters");
    lv_status st = img_idefics3_check(p, err);
    if (st != LV_OK) return st;
    const int T = p->max_image_size;
    const img_filter f = p->resample == 1 ? IMG_FILTER_LANCZOS : IMG_FILTER_BICUBIC;
    geometry g;
    geometry_of(im->h, im->w, p, base_only, &g);
    /* Step 1 is at most 4096 a side; without do_resize the step-2 image
     * follows the input, so sizes are checked before anything is made. */
    if ((uint64_t)g.h1 * (uint64_t)g.w1 > MAX_PIXELS ||
        (uint64_t)g.h2 * (uint64_t)g.w2 > MAX_PIXELS ||
        g.frames > (int64_t)(MAX_PIXELS / ((uint64_t)T * (uint64_t)T)))
        return lv_fail(err, LV_ERR_TOO_LARGE,
                       "idefics3: %dx%d -> %dx%d -> %dx%d in %lld frames of %dx%d is over the "
                       "%llu pixel limit",
                       im->w, im->h, g.w1, g.h1, g.w2, g.h2, (long long)g.frames, T, T,
                       (unsigned long long)MAX_PIXELS);

    const size_t frame = (size_t)3 * (size_t)T * (size_t)T;
    uint8_t *own1 = NULL, *own2 = NULL, *global = NULL;
    const uint8_t *s1, *s2;
    if (!(out->data = malloc((size_t)g.frames * frame * sizeof *out->data))) {
        st = lv_fail(err, LV_ERR_NOMEM, "idefics3: no memory for %lld frames of %dx%d",
                     (long long)g.frames, T, T);
        goto done;
    }
    /* Step 1: longest edge L (do_resize). */
    if ((st = resize_or_borrow(im->rgb, im->w, im->h, g.w1, g.h1, f, &s1, &own1, err)) != LV_OK)
        goto done;
    /* Step 2: multiples of T, or T x T without splitting. */
    if ((st = resize_or_borrow(s1, g.w1, g.h1, g.w2, g.h2, f, &s2, &own2, err)) != LV_OK) goto done;
    if (own2) { /* s1 is not needed any more (unless s2 is s1) */
        free(own1);
        own1 = NULL;
    }
    if (g.rows == 0) { /* one frame: s2 is T x T */
        square_to_tensor(s2, T, 0, 0, T, tab, out->data);
    } else {
        /* Step 3: tiles row-major, then the global image last. */
        for (int r = 0; r < g.rows; r++)
            for (int c = 0; c < g.cols; c++)
                square_to_tensor(s2, g.w2, c * T, r * T, T, tab,
                                 out->data + (size_t)(r * g.cols + c) * frame);
        if (!(global = malloc((size_t)T * (size_t)T * 3))) {
            st = lv_fail(err, LV_ERR_NOMEM, "idefics3: no memory for the %dx%d global image", T, T);
            goto done;
        }
        if ((st = img_resize(s2, g.w2, g.h2, 3, f, global, T, T, err)) != LV_OK) goto done;
        square_to_tensor(global, T, 0, 0, T, tab, out->data + (size_t)(g.frames - 1) * frame);
    }
    out->n_tiles = (int)g.frames;
    out->tile_h = out->tile_w = T;
    out->grid_h = g.rows;
    out->grid_w = g.cols;
    out->image_h = im->h;
    out->image_w = im->w;

done:
    free(own1);
    free(own2);
    free(global);
    if (st != LV_OK) img_tensor_free(out);
    return st;
}
