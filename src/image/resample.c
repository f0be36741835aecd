/*
 * resample.c - Pillow's bicubic and LANCZOS resizes, reproduced bit for bit.
 *
 * Facts, read from Pillow src/libImaging/Resample.c (@01f132f; the 8-bit
 * path has been unchanged for years and Debian's Pillow 9.4 gives the same
 * bytes) and PIL/Image.py Image.resize:
 *
 *   Filters     BICUBIC: Keys cubic, a = -0.5, support 2:
 *                 |x| < 1: ((a + 2)|x| - (a + 3))|x|^2 + 1
 *                 |x| < 2: (((|x| - 5)|x| + 8)|x| - 4) a,   else 0.
 *               LANCZOS: support 3, sinc(x) sinc(x / 3) for -3 <= x < 3,
 *                 else 0, with sinc(0) = 1 and sinc(x) = sin(t) / t where
 *                 t = x * pi (the product first, as Pillow computes it).
 *               Everything below is shared: only the filter function and
 *               its support differ (Pillow's `struct filter`).
 *   Coefficients per axis (precompute_coeffs), all in double:
 *                 scale = in / out; filterscale = max(scale, 1);
 *                 support = filter support * filterscale;
 *                 ksize = 2 ceil(support) + 1;
 *                 for output i: center = (i + 0.5) scale;
 *                 xmin = (int)(center - support + 0.5) clamped >= 0,
 *                 xmax = (int)(center + support + 0.5) clamped <= in;
 *                 w_t = filter(((xmin + t) - center + 0.5) / filterscale)
 *                 (as a product with ss = 1 / filterscale), t < xmax - xmin;
 *                 then every w_t is divided by their sum (if it is not 0).
 *                 The kernel is cut at the border and renormalised: no
 *                 mirrored or repeated edge pixels.
 *   Fixed point (normalize_coeffs_8bpc): PRECISION_BITS = 32 - 8 - 2 = 22;
 *                 k = (int)(w * 2^22 + 0.5) for w >= 0, (int)(w * 2^22 - 0.5)
 *                 below (half away from zero, C truncation).
 *   Accumulate    int32: 2^21 + sum src * k; the byte is (acc >> 22) clamped
 *                 to 0..255 (Pillow indexes a table spanning -640..639 with
 *                 acc >> 22; the same thing).
 *   Passes (ImagingResampleInner): vertical coefficients first; the source
 *                 rows they touch are [first row's xmin, last row's
 *                 xmin + n). Horizontal pass (only if the width changes)
 *                 over exactly those rows into an 8-bit image, then the
 *                 vertical pass (only if the height changes) over it. A
 *                 resize that changes neither is a copy, and so is
 *                 Image.resize to the same size (Image.py returns
 *                 self.copy() before reaching C).
 *
 * Because each output sample of a pass depends only on its own coefficients
 * and source samples, computing a sub-rectangle of the output, or reading
 * the source from a virtual padded canvas (img_canvas), changes which
 * samples are computed but not their values.
 *
 * Speed: coefficient tables are built once per call; the horizontal pass is
 * a short dot product per output pixel, the vertical pass accumulates whole
 * rows into an int32 row buffer (contiguous, so the compiler vectorises it).
 */
#include "image/resample.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS 22
#define ACC_INIT       (1 << (PRECISION_BITS - 1))

/* ---- coefficients ---------------------------------------------------------
 *
 * One table per axis, for the outputs [first, first + count) only. */

typedef struct {
    int count;  /* outputs described */
    int ksize;  /* row stride of k (Pillow's ksize) */
    int *xmin;  /* (count) first source index of each output */
    int *n;     /* (count) taps of each output, >= 1 */
    int32_t *k; /* (count, ksize) 22-bit fixed-point weights */
} axis_coeffs;

static double bicubic_filter(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* Pillow's sinc_filter / lanczos_filter, in the same operation order. */
static double sinc(double x) {
    const double pi = 3.14159265358979323846; /* M_PI, not in strict C11 */
    if (x == 0.0) return 1.0;
    x = x * pi;
    return sin(x) / x;
}

static double lanczos_filter(double x) {
    if (-3.0 <= x && x < 3.0) return sinc(x) * sinc(x / 3);
    return 0.0;
}

typedef struct {
    double (*fn)(double);
    double support;
} filter_def;

static const filter_def *filter_of(img_filter f) {
    static const filter_def bicubic = {bicubic_filter, 2.0}, lanczos = {lanczos_filter, 3.0};
    switch (f) {
        case IMG_FILTER_BICUBIC:
            return &bicubic;
        case IMG_FILTER_LANCZOS:
            return &lanczos;
    }
    return NULL;
}

static void axis_coeffs_free(axis_coeffs *c) {
    free(c->xmin);
    free(c->n);
    free(c->k);
    memset(c, 0, sizeof *c);
}

/* Builds the table of outputs [first, first + count) for resampling in_size
 * samples to out_size. Errors: LV_ERR_NOMEM. */
static lv_status axis_coeffs_init(axis_coeffs *c, const filter_def *f, int in_size, int out_size,
                                  int first, int count, lv_err *err) {
    memset(c, 0, sizeof *c);
    /* Pillow: scale = (double)(in1 - in0) / outSize with float in0 = 0,
     * in1 = in_size: exact for sizes below 2^24. */
    double scale = (double)in_size / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = f->support * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *w = malloc((size_t)ksize * sizeof *w);
    c->count = count;
    c->ksize = ksize;
    c->xmin = malloc((size_t)count * sizeof *c->xmin);
    c->n = malloc((size_t)count * sizeof *c->n);
    c->k = calloc((size_t)count * (size_t)ksize, sizeof *c->k);
    if (!w || !c->xmin || !c->n || !c->k) {
        free(w);
        axis_coeffs_free(c);
        return lv_fail(err, LV_ERR_NOMEM, "resize %d -> %d: no memory for %d x %d coefficients",
                       in_size, out_size, count, ksize);
    }
    double ss = 1.0 / filterscale;
    for (int i = 0; i < count; i++) {
        int xx = first + i;
        double center = (xx + 0.5) * scale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        int n = xmax - xmin;
        double ww = 0.0;
        for (int t = 0; t < n; t++) {
            /* Same operation order as Pillow: (int)(t + xmin) - center + 0.5. */
            w[t] = f->fn((t + xmin - center + 0.5) * ss);
            ww += w[t];
        }
        int32_t *k = c->k + (size_t)i * (size_t)ksize;
        for (int t = 0; t < n; t++) {
            double v = ww != 0.0 ? w[t] / ww : w[t];
            k[t] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                         : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        c->xmin[i] = xmin;
        c->n[i] = n;
    }
    free(w);
    return LV_OK;
}

/* acc >> 22 clamped to a byte; >> of a negative int is an arithmetic shift
 * with GCC and Clang, as Pillow's clip8 relies on too. */
static inline uint8_t clip8(int32_t acc) {
    int32_t v = acc >> PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* ---- the two passes ------------------------------------------------------ */

/* One row, 3 channels: dst[i] = sum_t src[xmin_i + t] k_it. */
static void hpass_row3(const uint8_t *src, uint8_t *dst, const axis_coeffs *c) {
    for (int i = 0; i < c->count; i++) {
        const uint8_t *s = src + (size_t)c->xmin[i] * 3;
        const int32_t *k = c->k + (size_t)i * (size_t)c->ksize;
        int32_t a0 = ACC_INIT, a1 = ACC_INIT, a2 = ACC_INIT;
        for (int t = 0, n = c->n[i]; t < n; t++, s += 3) {
            int32_t kt = k[t];
            a0 += s[0] * kt;
            a1 += s[1] * kt;
            a2 += s[2] * kt;
        }
        dst[3 * i + 0] = clip8(a0);
        dst[3 * i + 1] = clip8(a1);
        dst[3 * i + 2] = clip8(a2);
    }
}

/* One row, any channel count (1..4). */
static void hpass_row_any(const uint8_t *src, uint8_t *dst, const axis_coeffs *c, int channels) {
    for (int i = 0; i < c->count; i++) {
        const int32_t *k = c->k + (size_t)i * (size_t)c->ksize;
        for (int ch = 0; ch < channels; ch++) {
            const uint8_t *s = src + (size_t)c->xmin[i] * (size_t)channels + (size_t)ch;
            int32_t a = ACC_INIT;
            for (int t = 0, n = c->n[i]; t < n; t++) a += s[(size_t)t * (size_t)channels] * k[t];
            dst[(size_t)i * (size_t)channels + (size_t)ch] = clip8(a);
        }
    }
}

/* Vertical pass, one output row: d = clip8(sum_t rows[xmin - row0 + t] k_t)
 * over row_len bytes, accumulated in acc (row_len int32s). Inlined into
 * each variant below, so the compiler vectorises it for that target. */
static inline __attribute__((always_inline)) void vpass_row(const uint8_t *const *rows, int row0,
                                                            int xmin, int n, const int32_t *k,
                                                            size_t row_len, int32_t *acc,
                                                            uint8_t *d) {
    for (size_t x = 0; x < row_len; x++) acc[x] = ACC_INIT;
    for (int t = 0; t < n; t++) {
        const uint8_t *r = rows[xmin - row0 + t];
        int32_t kt = k[t];
        for (size_t x = 0; x < row_len; x++) acc[x] += r[x] * kt;
    }
    for (size_t x = 0; x < row_len; x++) d[x] = clip8(acc[x]);
}

#define VPASS_BODY                                                                                 \
    for (int i = 0; i < c->count; i++)                                                             \
        vpass_row(rows, row0, c->xmin[i], c->n[i], c->k + (size_t)i * (size_t)c->ksize, row_len,   \
                  acc, dst + (size_t)i * row_len);

static void vpass_generic(const uint8_t *const *rows, int row0, const axis_coeffs *c,
                          size_t row_len, int32_t *acc, uint8_t *dst) {
    VPASS_BODY
}

/* The same integer arithmetic with AVX2's 8-lane 32-bit multiplies (the
 * baseline x86-64 target has no 32-bit vector multiply): identical bytes,
 * about twice as fast. Chosen at run time. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define VPASS_AVX2 1
__attribute__((target("avx2"))) static void vpass_avx2(const uint8_t *const *rows, int row0,
                                                       const axis_coeffs *c, size_t row_len,
                                                       int32_t *acc, uint8_t *dst) {
    VPASS_BODY
}
#endif

/* Vertical pass: output row i of dst (row_len bytes each) from
 * rows[xmin_i - row0 + t]. acc is a scratch row of row_len int32s. */
static void vpass(const uint8_t *const *rows, int row0, const axis_coeffs *c, size_t row_len,
                  int32_t *acc, uint8_t *dst) {
#ifdef VPASS_AVX2
    if (__builtin_cpu_supports("avx2")) {
        vpass_avx2(rows, row0, c, row_len, acc, dst);
        return;
    }
#endif
    vpass_generic(rows, row0, c, row_len, acc, dst);
}

/* ---- canvas rows ----------------------------------------------------------
 *
 * Row y of the virtual canvas, canvas_w pixels: a row of the image (borrowed
 * in place when the image spans the canvas width, else assembled in
 * scratch), or the fill row. */

static const uint8_t *canvas_row(const img_canvas *cv, int y, const uint8_t *fill_row,
                                 uint8_t *scratch) {
    size_t C = (size_t)cv->channels;
    if (y < cv->off_y || y >= cv->off_y + cv->h) return fill_row;
    const uint8_t *img = cv->px + (size_t)(y - cv->off_y) * (size_t)cv->w * C;
    if (cv->canvas_w == cv->w) return img;
    memcpy(scratch, fill_row, (size_t)cv->canvas_w * C);
    memcpy(scratch + (size_t)cv->off_x * C, img, (size_t)cv->w * C);
    return scratch;
}

static bool canvas_valid(const img_canvas *cv) {
    return cv && cv->px && cv->channels >= 1 && cv->channels <= 4 && cv->w >= 1 && cv->h >= 1 &&
           cv->off_x >= 0 && cv->off_y >= 0 && cv->canvas_w <= IMG_RESAMPLE_MAX_SIDE &&
           cv->canvas_h <= IMG_RESAMPLE_MAX_SIDE && cv->w <= cv->canvas_w - cv->off_x &&
           cv->h <= cv->canvas_h - cv->off_y;
}

void img_canvas_plain(img_canvas *c, const uint8_t *px, int w, int h, int channels) {
    memset(c, 0, sizeof *c);
    c->px = px;
    c->w = c->canvas_w = w;
    c->h = c->canvas_h = h;
    c->channels = channels;
}

/* ---- the resize ----------------------------------------------------------
 *
 * Source rows [r0, r1) are gathered first: through the horizontal pass into
 * tmp, or borrowed in place when there is none. The vertical pass, or a copy
 * when the height is unchanged, then reads them through rows[]. */

typedef struct {
    const uint8_t **rows; /* (r1 - r0) rows of ww * channels bytes, for the vertical pass */
    uint8_t *tmp;         /* storage for rows made here (resampled or assembled) */
    uint8_t *fill_row;    /* a canvas row of the fill colour (padded canvases only) */
    uint8_t *scratch;     /* a canvas row being assembled (padded canvases only) */
    uint8_t *fill_h;      /* fill_row after the horizontal pass */
} row_set;

static void hpass_row(const uint8_t *src, uint8_t *dst, const axis_coeffs *hc, int channels) {
    if (channels == 3)
        hpass_row3(src, dst, hc);
    else
        hpass_row_any(src, dst, hc, channels);
}

/* Fills rs->rows with canvas rows [r0, r1): horizontally resampled with hc,
 * or, when hc is NULL, the columns [x0, x0 + out_row / channels). */
static void gather_rows(const img_canvas *cv, int r0, int r1, int x0, size_t out_row,
                        const axis_coeffs *hc, row_set *rs) {
    const size_t C = (size_t)cv->channels;
    bool have_fill_h = false;
    for (int y = r0; y < r1; y++) {
        const uint8_t *src = canvas_row(cv, y, rs->fill_row, rs->scratch);
        uint8_t *out = rs->tmp ? rs->tmp + (size_t)(y - r0) * out_row : NULL;
        if (!hc) {
            if (rs->scratch && src == rs->scratch) {
                memcpy(out, src + (size_t)x0 * C, out_row);
                rs->rows[y - r0] = out;
            } else {
                rs->rows[y - r0] = src + (size_t)x0 * C;
            }
        } else if (rs->fill_row && src == rs->fill_row) {
            /* Every fill row resamples to the same bytes: do it once. */
            if (!have_fill_h) hpass_row(rs->fill_row, rs->fill_h, hc, cv->channels);
            have_fill_h = true;
            rs->rows[y - r0] = rs->fill_h;
        } else {
            hpass_row(src, out, hc, cv->channels);
            rs->rows[y - r0] = out;
        }
    }
}

/* ---- the horizontal pass by strips of transposed rows ------------------
 *
 * The horizontal pass as written above is a short dot product per output
 * sample, with the channels interleaved: the compiler cannot vectorise it.
 * For a plain (unpadded) source of enough rows it is done instead on strips
 * of STRIP rows turned on their side: each source column of the strip
 * becomes one contiguous "row" of STRIP * channels bytes, the vertical pass
 * (vectorised) resamples those, and the result is turned back. Every output
 * sample is the same integer sum over the same samples and weights, so the
 * bytes are identical; memory is two strips, not a copy of the image. */

#define STRIP          64    /* source rows per strip */
#define STRIP_MIN_ROWS 16    /* fewer rows: the plain pass */
#define STRIP_MAX_COLS 16384 /* wider sources: the plain pass (strip memory) */

/* Measured (x86-64, AVX2): the strips win when shrinking the width (the
 * kernel spans more taps, the turned-back output is smaller: 2048 -> 512
 * LANCZOS 13 -> 7 ms, 800 -> 672 bicubic 3.3 -> 1.8 ms) and lose when
 * enlarging it (800 -> 2048: 7.8 -> 10.6 ms), so only the former use them. */
static bool hpass_strips_usable(const img_canvas *cv, int dw, const axis_coeffs *hc, int n_rows) {
    int c0 = hc->xmin[0], c1 = hc->xmin[hc->count - 1] + hc->n[hc->count - 1];
    return dw < cv->canvas_w && cv->canvas_w == cv->w && cv->canvas_h == cv->h && cv->off_x == 0 &&
           cv->off_y == 0 && n_rows >= STRIP_MIN_ROWS && c1 - c0 <= STRIP_MAX_COLS;
}

/* Source rows [r0, r1) of the plain image cv through hc into out (rows of
 * hc->count * channels bytes). Errors: LV_ERR_NOMEM. */
static lv_status hpass_strips(const img_canvas *cv, int r0, int r1, const axis_coeffs *hc,
                              uint8_t *out, lv_err *err) {
    const size_t C = (size_t)cv->channels, W = (size_t)cv->w, out_row = (size_t)hc->count * C;
    const int c0 = hc->xmin[0], c1 = hc->xmin[hc->count - 1] + hc->n[hc->count - 1];
    const size_t ncols = (size_t)(c1 - c0), col_len = (size_t)STRIP * C;
    uint8_t *tsrc = malloc(ncols * col_len), *tout = malloc((size_t)hc->count * col_len);
    const uint8_t **cols = malloc(ncols * sizeof *cols);
    int32_t *acc = malloc(col_len * sizeof *acc);
    lv_status st = LV_OK;
    if (!tsrc || !tout || !cols || !acc) {
        st = lv_fail(err, LV_ERR_NOMEM, "resize: no memory for a %zu x %d strip", ncols, STRIP);
        goto done;
    }
    for (size_t x = 0; x < ncols; x++) cols[x] = tsrc + x * col_len;
    for (int y0 = r0; y0 < r1; y0 += STRIP) {
        const int h = r1 - y0 < STRIP ? r1 - y0 : STRIP;
        const size_t len = (size_t)h * C; /* bytes of each turned row used */
        for (int y = 0; y < h; y++) {     /* turn: column x of row y -> cols[x][y] */
            const uint8_t *s = cv->px + ((size_t)(y0 + y) * W + (size_t)c0) * C;
            uint8_t *d = tsrc + (size_t)y * C;
            if (C == 3)
                for (size_t x = 0; x < ncols; x++, s += 3, d += col_len) {
                    d[0] = s[0];
                    d[1] = s[1];
                    d[2] = s[2];
                }
            else
                for (size_t x = 0; x < ncols; x++, s += C, d += col_len) memcpy(d, s, C);
        }
        vpass(cols, c0, hc, len, acc, tout);  /* output column i -> tout + i * len */
        for (int i = 0; i < hc->count; i++) { /* turn back */
            const uint8_t *s = tout + (size_t)i * len;
            uint8_t *d = out + (size_t)(y0 - r0) * out_row + (size_t)i * C;
            if (C == 3)
                for (int y = 0; y < h; y++, s += 3, d += out_row) {
                    d[0] = s[0];
                    d[1] = s[1];
                    d[2] = s[2];
                }
            else
                for (int y = 0; y < h; y++, s += C, d += out_row) memcpy(d, s, C);
        }
    }
done:
    free(tsrc);
    free(tout);
    free(cols);
    free(acc);
    return st;
}

lv_status img_resize_window(const img_canvas *cv, img_filter filter, int dw, int dh, int x0, int y0,
                            int ww, int wh, uint8_t *dst, lv_err *err) {
    const filter_def *f = filter_of(filter);
    if (!f) return lv_fail(err, LV_ERR_ARG, "resize: unknown filter %d", (int)filter);
    if (!canvas_valid(cv))
        return lv_fail(err, LV_ERR_ARG, "resize: invalid source (image %dx%d at (%d,%d) on %dx%d)",
                       cv ? cv->w : 0, cv ? cv->h : 0, cv ? cv->off_x : 0, cv ? cv->off_y : 0,
                       cv ? cv->canvas_w : 0, cv ? cv->canvas_h : 0);
    if (dw < 1 || dh < 1 || dw > IMG_RESAMPLE_MAX_SIDE || dh > IMG_RESAMPLE_MAX_SIDE)
        return lv_fail(err, LV_ERR_ARG, "resize: output size %dx%d is out of range", dw, dh);
    if (ww < 1 || wh < 1 || x0 < 0 || y0 < 0 || ww > dw - x0 || wh > dh - y0 || !dst)
        return lv_fail(err, LV_ERR_ARG, "resize: window %dx%d at (%d,%d) is not inside %dx%d", ww,
                       wh, x0, y0, dw, dh);

    const int sw = cv->canvas_w, sh = cv->canvas_h;
    const size_t C = (size_t)cv->channels, out_row = (size_t)ww * C;
    /* ImagingResampleInner: a pass runs only if its dimension changes. */
    const bool need_h = dw != sw, need_v = dh != sh;
    lv_status st = LV_OK;
    axis_coeffs hc = {0}, vc = {0};
    row_set rs = {0};
    int32_t *acc = NULL;

    /* Source rows the output window needs: [r0, r1). */
    int r0 = y0, r1 = y0 + wh;
    if (need_v) {
        if ((st = axis_coeffs_init(&vc, f, sh, dh, y0, wh, err)) != LV_OK) goto fail;
        r0 = vc.xmin[0];
        r1 = vc.xmin[wh - 1] + vc.n[wh - 1];
    }
    if (need_h && (st = axis_coeffs_init(&hc, f, sw, dw, x0, ww, err)) != LV_OK) goto fail;

    /* A canvas larger than its image needs a fill row and a row to assemble
     * padded image rows in. Rows are stored when the horizontal pass makes
     * them or when they were assembled; otherwise they are borrowed. */
    const int n_rows = r1 - r0;
    const bool padded = cv->canvas_w != cv->w || cv->canvas_h != cv->h;
    const bool store = need_h || cv->canvas_w != cv->w;
    rs.rows = malloc((size_t)n_rows * sizeof *rs.rows);
    if (padded) {
        rs.fill_row = malloc((size_t)sw * C);
        rs.scratch = malloc((size_t)sw * C);
    }
    if (store) rs.tmp = malloc((size_t)n_rows * out_row);
    if (need_h && padded) rs.fill_h = malloc(out_row);
    if (need_v) acc = malloc(out_row * sizeof *acc);
    if (!rs.rows || (padded && (!rs.fill_row || !rs.scratch)) || (store && !rs.tmp) ||
        (need_h && padded && !rs.fill_h) || (need_v && !acc)) {
        st = lv_fail(err, LV_ERR_NOMEM, "resize %dx%d -> %dx%d: no memory for %d rows of %zu bytes",
                     sw, sh, dw, dh, n_rows, out_row);
        goto fail;
    }
    for (size_t x = 0; padded && x < (size_t)sw * C; x++) rs.fill_row[x] = cv->fill[x % C];

    if (need_h && hpass_strips_usable(cv, dw, &hc, n_rows)) {
        if ((st = hpass_strips(cv, r0, r1, &hc, rs.tmp, err)) != LV_OK) goto fail;
        for (int y = 0; y < n_rows; y++) rs.rows[y] = rs.tmp + (size_t)y * out_row;
    } else {
        gather_rows(cv, r0, r1, x0, out_row, need_h ? &hc : NULL, &rs);
    }
    if (need_v)
        vpass(rs.rows, r0, &vc, out_row, acc, dst);
    else
        for (int y = 0; y < wh; y++) memcpy(dst + (size_t)y * out_row, rs.rows[y], out_row);

fail:
    axis_coeffs_free(&hc);
    axis_coeffs_free(&vc);
    free(rs.rows);
    free(rs.tmp);
    free(rs.fill_row);
    free(rs.scratch);
    free(rs.fill_h);
    free(acc);
    return st;
}

lv_status img_resize_bicubic_window(const img_canvas *cv, int dw, int dh, int x0, int y0, int ww,
                                    int wh, uint8_t *dst, lv_err *err) {
    return img_resize_window(cv, IMG_FILTER_BICUBIC, dw, dh, x0, y0, ww, wh, dst, err);
}

lv_status img_resize(const uint8_t *src, int sw, int sh, int channels, img_filter filter,
                     uint8_t *dst, int dw, int dh, lv_err *err) {
    if (!src || sw < 1 || sh < 1 || sw > IMG_RESAMPLE_MAX_SIDE || sh > IMG_RESAMPLE_MAX_SIDE ||
        channels < 1 || channels > 4)
        return lv_fail(err, LV_ERR_ARG, "resize: invalid source %dx%d with %d channels", sw, sh,
                       channels);
    img_canvas cv;
    img_canvas_plain(&cv, src, sw, sh, channels);
    return img_resize_window(&cv, filter, dw, dh, 0, 0, dw, dh, dst, err);
}

lv_status img_resize_bicubic(const uint8_t *src, int sw, int sh, int channels, uint8_t *dst, int dw,
                             int dh, lv_err *err) {
    return img_resize(src, sw, sh, channels, IMG_FILTER_BICUBIC, dst, dw, dh, err);
}
