/*
 * test_image_preprocess.c - Pillow-exact bicubic (image/resample), anyres
 * geometry and token counts (image/anyres), and the three processors
 * (image/preprocess).
 *
 * Three levels of reference:
 *   1. the spec's worked examples (../shared/spec/llava-next.md §2.3, §5.2);
 *   2. development fixtures made with Pillow (tests/data/image/dev/, see
 *      make_dev_fixtures.py there): synthetic inputs regenerated here from a
 *      seed, expected outputs stored as crc32s or, for small resizes, in full;
 *   3. golden data made with transformers' LlavaNextImageProcessorPil on the
 *      GPU machine (tests/data/image/golden.json, when present): real images
 *      decoded with img_decode_file, pixel_values crc32 per processor, and a
 *      token-count sweep.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/file.h"
#include "image/anyres.h"
#include "image/decode.h"
#include "image/preprocess.h"
#include "image/resample.h"
#include "testutil.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers --------------------------------------------------------------- */

/* zlib's crc32 (reflected 0xEDB88320), so fixtures can be made with
 * Python's zlib.crc32 without linking zlib here. */
static uint32_t crc32_update(uint32_t crc, const void *data, size_t len) {
    static uint32_t table[256];
    if (!table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    const uint8_t *p = data;
    crc = ~crc;
    for (size_t i = 0; i < len; i++) crc = table[(crc ^ p[i]) & 255] ^ (crc >> 8);
    return ~crc;
}

/* crc32 of the tensor's float32 bytes; the fixtures are little-endian, as is
 * every machine this runs on (checked). */
static uint32_t tensor_crc(const img_tensor *t) {
    const uint16_t one = 1;
    assert_int_equal(*(const uint8_t *)&one, 1);
    size_t n = (size_t)t->n_tiles * 3 * (size_t)t->tile_h * (size_t)t->tile_w;
    return crc32_update(0, t->data, n * sizeof(float));
}

/* The synthetic images of make_dev_fixtures.py: xorshift32 from seed; pattern
 * 0 is a gradient with inverted blocks and a little noise, 1 white noise. */
static uint8_t *gen_image(int pattern, uint32_t seed, int w, int h) {
    uint8_t *px = malloc((size_t)w * (size_t)h * 3);
    assert_non_null(px);
    uint32_t s = seed ? seed : 1;
    size_t i = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                unsigned v;
                if (pattern == 0) {
                    v = (unsigned)(x * 3 + y * 5 + c * 70 + (int)(s >> 28)) & 255;
                    if ((x / 9 + y / 7) % 5 == 0) v = 255 - v;
                } else {
                    v = s >> 24;
                }
                px[i++] = (uint8_t)v;
            }
    return px;
}

static int pattern_id(const char *name) {
    if (strcmp(name, "grad") == 0) return 0;
    if (strcmp(name, "noise") == 0) return 1;
    fail_msg("unknown pattern %s", name);
    return -1;
}

/* $LLAVA_TEST_DATA/rel in a static buffer. */
static const char *data_path(const char *rel) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", tu_env("LLAVA_TEST_DATA"), rel);
    return path;
}

static img_proc_params params_of(img_proc_kind kind) {
    img_proc_params p;
    if (kind == IMG_PROC_LLAVA_NEXT) {
        img_proc_params_llava_next_default(&p);
    } else {
        img_proc_params_clip_default(&p);
        p.kind = kind;
        p.do_pad = kind == IMG_PROC_LLAVA_PAD;
    }
    return p;
}

/* ---- anyres geometry and token counts (spec §2.3, §5.2) ------------------- */

static void best_resolution_examples(void **state) {
    /* W x H -> best (h, w), resized (h, w), pad top/bottom/left/right, patches */
    static const struct {
        int w, h, bh, bw, nh, nw, top, bottom, left, right, patches;
    } ex[] = {
        {672, 672, 672, 672, 672, 672, 0, 0, 0, 0, 5},
        {800, 600, 672, 672, 504, 672, 84, 84, 0, 0, 5},
        {1024, 899, 672, 672, 590, 672, 41, 41, 0, 0, 5},
        {336, 336, 336, 672, 336, 336, 0, 0, 168, 168, 3},
        {100, 100, 336, 672, 336, 336, 0, 0, 168, 168, 3},
        {1920, 1080, 672, 672, 378, 672, 147, 147, 0, 0, 5},
        {400, 3000, 1008, 336, 1008, 135, 0, 0, 100, 101, 4},
        /* Everything rounds to 0 kept pixels: least waste wins, first on ties. */
        {4000, 1, 336, 672, 1, 672, 167, 168, 0, 0, 3},
        {1, 4000, 336, 672, 336, 1, 0, 0, 335, 336, 3},
    };
    img_proc_params p = params_of(IMG_PROC_LLAVA_NEXT);
    for (size_t i = 0; i < LV_ARRAY_LEN(ex); i++) {
        int bh, bw, nh, nw, t, b, l, r, gh, gw;
        int idx = img_select_best_resolution(ex[i].h, ex[i].w, (const int(*)[2])p.pinpoints,
                                             p.n_pinpoints, &bh, &bw);
        assert_true(idx >= 0);
        assert_int_equal(bh, ex[i].bh);
        assert_int_equal(bw, ex[i].bw);
        img_patch_output_size(ex[i].h, ex[i].w, bh, bw, &nh, &nw);
        assert_int_equal(nh, ex[i].nh);
        assert_int_equal(nw, ex[i].nw);
        img_center_pad(nh, nw, bh, bw, &t, &b, &l, &r);
        assert_int_equal(t, ex[i].top);
        assert_int_equal(b, ex[i].bottom);
        assert_int_equal(l, ex[i].left);
        assert_int_equal(r, ex[i].right);
        img_anyres_grid(ex[i].h, ex[i].w, &p, &gh, &gw);
        assert_int_equal(1 + gh * gw, ex[i].patches);
    }
    assert_int_equal(
        img_select_best_resolution(10, 10, (const int(*)[2])p.pinpoints, 0, NULL, NULL), -1);
}

static void token_count_examples(void **state) {
    static const int ex[][3] = {/* W, H, tokens */
                                {672, 672, 2928}, {800, 600, 2340},   {1024, 899, 2634},
                                {336, 336, 1176}, {1920, 1080, 1948}, {400, 3000, 1368}};
    img_proc_params p = params_of(IMG_PROC_LLAVA_NEXT);
    for (size_t i = 0; i < LV_ARRAY_LEN(ex); i++)
        assert_int_equal(img_num_image_tokens(ex[i][1], ex[i][0], &p), ex[i][2]);
    /* 800x600 unpad: 48x48 grid, 36 rows kept. */
    int rows, cols;
    img_anyres_unpad(600, 800, 48, 48, &rows, &cols);
    assert_int_equal(rows, 36);
    assert_int_equal(cols, 48);
    /* An odd remainder keeps new_h + 1 rows (the slice is symmetric). */
    img_anyres_unpad(1080, 1920, 48, 48, &rows, &cols); /* new_h = 27 */
    assert_int_equal(rows, 28);
    /* int(round(x, 7)), not int(x): a 1128x47 image on the 24x72 grid (1x3
     * tiles) has content height 47 * (72/1128) = 2.9999999999999996 -> 3,
     * pad 10, 4 rows (int() would say 2 rows, 722 tokens). */
    img_anyres_unpad(47, 1128, 24, 72, &rows, &cols);
    assert_int_equal(rows, 4);
    assert_int_equal(cols, 72);
    assert_int_equal(img_num_image_tokens(47, 1128, &p), 868);
    img_proc_params clip = params_of(IMG_PROC_CLIP), pad = params_of(IMG_PROC_LLAVA_PAD);
    assert_int_equal(img_num_image_tokens(800, 600, &clip), 576);
    assert_int_equal(img_num_image_tokens(1, 4000, &pad), 576);
    assert_int_equal(img_num_image_tokens(0, 10, &p), -1);
    p.n_pinpoints = 0;
    assert_int_equal(img_num_image_tokens(10, 10, &p), -1);
}

/* Every h, w in 1..N against Python's round(x, 7) semantics (dev/tokens.txt). */
static void token_sweep_dev(void **state) {
    FILE *f = fopen(data_path("image/dev/tokens.txt"), "r");
    assert_non_null(f);
    img_proc_params p = params_of(IMG_PROC_LLAVA_NEXT);
    char line[256];
    int n_grid = 0, n_flips = 0;
    unsigned long want_crc = 0;
    while (fgets(line, sizeof line, f)) {
        int h, w, n;
        if (sscanf(line, "grid %d %lu", &n_grid, &want_crc) == 2) continue;
        if (sscanf(line, "flip %d %d %d", &h, &w, &n) == 3) {
            int got = img_num_image_tokens(h, w, &p);
            if (got != n) fail_msg("%dx%d (h x w): %d tokens, expected %d", h, w, got, n);
            n_flips++;
        }
    }
    fclose(f);
    assert_true(n_grid > 0 && n_flips > 100);
    int32_t *row = malloc((size_t)n_grid * sizeof *row);
    assert_non_null(row);
    uint32_t crc = 0;
    for (int h = 1; h <= n_grid; h++) {
        for (int w = 1; w <= n_grid; w++) row[w - 1] = img_num_image_tokens(h, w, &p);
        crc = crc32_update(crc, row, (size_t)n_grid * sizeof *row);
    }
    free(row);
    assert_int_equal(crc, (uint32_t)want_crc);
}

/* ---- normalisation -------------------------------------------------------- */

static void norm_table_values(void **state) {
    /* float32 bit patterns from NumPy-equivalent float32 arithmetic
     * ((float32(u * (1/255)) - mean32) / std32), made with Python struct. */
    static const struct {
        int c, u;
        uint32_t bits;
    } ex[] = {
        {0, 0, 0xbfe568dc}, {0, 1, 0xbfe38a7f}, {0, 128, 0x3d9c5620}, {0, 255, 0x3ff71541},
        {1, 0, 0xbfe044b8}, {1, 1, 0xbfde58f1}, {1, 128, 0x3e2cf36b}, {1, 255, 0x4004cae5},
        {2, 0, 0xbfbd77d8}, {2, 1, 0xbfbba5e1}, {2, 128, 0x3eae0dc4}, {2, 255, 0x40095660},
    };
    img_proc_params p = params_of(IMG_PROC_LLAVA_NEXT);
    float tab[3][256];
    img_norm_table(&p, tab);
    for (size_t i = 0; i < LV_ARRAY_LEN(ex); i++) {
        uint32_t bits;
        memcpy(&bits, &tab[ex[i].c][ex[i].u], 4);
        if (bits != ex[i].bits)
            fail_msg("tab[%d][%d] = %.9g (0x%08x), expected 0x%08x", ex[i].c, ex[i].u,
                     (double)tab[ex[i].c][ex[i].u], bits, ex[i].bits);
    }
    assert_true(tab[0][0] == -1.7922625541687012f);
    /* Without rescale/normalize the table is the identity in float. */
    p.do_rescale = p.do_normalize = false;
    img_norm_table(&p, tab);
    assert_true(tab[1][200] == 200.0f);
}

/* ---- resize ---------------------------------------------------------------- */

static void resize_copy_and_1x1(void **state) {
    uint8_t *src = gen_image(1, 5, 37, 23), *dst = malloc(37 * 23 * 3);
    assert_non_null(dst);
    lv_err err;
    assert_int_equal(img_resize_bicubic(src, 37, 23, 3, dst, 37, 23, &err), LV_OK);
    assert_memory_equal(src, dst, 37 * 23 * 3);
    free(dst);
    /* 1x1 up to 336x336: one tap of weight 1, every pixel the source's. */
    dst = malloc(336 * 336 * 3);
    assert_non_null(dst);
    assert_int_equal(img_resize_bicubic(src, 1, 1, 3, dst, 336, 336, &err), LV_OK);
    for (int i = 0; i < 336 * 336; i++) assert_memory_equal(dst + 3 * i, src, 3);
    /* One channel works too. */
    assert_int_equal(img_resize_bicubic(src, 1, 1, 1, dst, 2, 2, &err), LV_OK);
    assert_int_equal(img_resize_bicubic(src, 0, 1, 3, dst, 2, 2, &err), LV_ERR_ARG);
    assert_int_equal(img_resize_bicubic(src, 1, 1, 5, dst, 2, 2, &err), LV_ERR_ARG);
    assert_int_equal(img_resize_bicubic(src, 1, 1, 3, dst, 2, 0, &err), LV_ERR_ARG);
    free(dst);
    free(src);
}

/* A window of a resize, and a virtual padded canvas, equal the same part of
 * the full resize of the materialised canvas. */
static void resize_window_and_canvas(void **state) {
    const int w = 211, h = 97, side = 211, top = (side - h) / 2, dw = 150, dh = 149;
    uint8_t *img = gen_image(0, 77, w, h);
    uint8_t *canvas = malloc((size_t)side * side * 3), *full = malloc((size_t)dw * dh * 3);
    uint8_t *win = malloc((size_t)dw * dh * 3);
    assert_true(canvas && full && win);
    for (int i = 0; i < side * side; i++) {
        canvas[3 * i] = 10;
        canvas[3 * i + 1] = 200;
        canvas[3 * i + 2] = 77;
    }
    memcpy(canvas + (size_t)top * side * 3, img, (size_t)w * h * 3);
    lv_err err;
    assert_int_equal(img_resize_bicubic(canvas, side, side, 3, full, dw, dh, &err), LV_OK);
    img_canvas cv = {.px = img,
                     .w = w,
                     .h = h,
                     .channels = 3,
                     .canvas_w = side,
                     .canvas_h = side,
                     .off_x = 0,
                     .off_y = top,
                     .fill = {10, 200, 77, 0}};
    static const int rects[][4] = {
        {0, 0, 150, 149}, {13, 40, 100, 7}, {149, 148, 1, 1}, {5, 0, 1, 149}};
    for (size_t r = 0; r < LV_ARRAY_LEN(rects); r++) {
        int x0 = rects[r][0], y0 = rects[r][1], ww = rects[r][2], wh = rects[r][3];
        assert_int_equal(img_resize_bicubic_window(&cv, dw, dh, x0, y0, ww, wh, win, &err), LV_OK);
        for (int y = 0; y < wh; y++)
            assert_memory_equal(win + (size_t)y * ww * 3, full + ((size_t)(y0 + y) * dw + x0) * 3,
                                (size_t)ww * 3);
    }
    assert_int_equal(img_resize_bicubic_window(&cv, dw, dh, 1, 0, 150, 1, win, &err), LV_ERR_ARG);
    /* A horizontally padded canvas with an unchanged width (vertical pass only). */
    cv.off_x = 3;
    cv.canvas_w = w + 7;
    assert_int_equal(img_resize_bicubic_window(&cv, w + 7, 50, 0, 0, w + 7, 50, win, &err), LV_OK);
    free(img);
    free(canvas);
    free(full);
    free(win);
}

/* tests/data/image/dev: "resize" lines (crc32) and resize_small.bin (bytes). */
static void resize_dev_fixtures(void **state) {
    FILE *f = fopen(data_path("image/dev/cases.txt"), "r");
    assert_non_null(f);
    char line[256], pat[16];
    int n = 0;
    lv_err err;
    while (fgets(line, sizeof line, f)) {
        int seed, sw, sh, dw, dh;
        unsigned long want;
        if (sscanf(line, "resize %15s %d %d %d %d %d %lu", pat, &seed, &sw, &sh, &dw, &dh, &want) !=
            7)
            continue;
        uint8_t *src = gen_image(pattern_id(pat), (uint32_t)seed, sw, sh);
        uint8_t *dst = malloc((size_t)dw * dh * 3);
        assert_non_null(dst);
        assert_int_equal(img_resize_bicubic(src, sw, sh, 3, dst, dw, dh, &err), LV_OK);
        uint32_t got = crc32_update(0, dst, (size_t)dw * dh * 3);
        if (got != (uint32_t)want)
            fail_msg("resize %s/%d %dx%d -> %dx%d: crc32 %u, Pillow's %lu", pat, seed, sw, sh, dw,
                     dh, got, want);
        free(src);
        free(dst);
        n++;
    }
    fclose(f);
    assert_true(n >= 10);

    f = fopen(data_path("image/dev/resize_small.bin"), "rb");
    assert_non_null(f);
    char magic[4];
    assert_int_equal(fread(magic, 1, 4, f), 4);
    assert_memory_equal(magic, "RSZ1", 4);
    int32_t hdr[6];
    n = 0;
    while (fread(hdr, sizeof hdr, 1, f) == 1) {
        int sw = hdr[2], sh = hdr[3], dw = hdr[4], dh = hdr[5];
        size_t len = (size_t)dw * dh * 3;
        uint8_t *want = malloc(len), *got = malloc(len);
        uint8_t *src = gen_image(hdr[0], (uint32_t)hdr[1], sw, sh);
        assert_true(want && got);
        assert_int_equal(fread(want, 1, len, f), len);
        assert_int_equal(img_resize_bicubic(src, sw, sh, 3, got, dw, dh, &err), LV_OK);
        for (size_t i = 0; i < len; i++)
            if (got[i] != want[i])
                fail_msg("resize %dx%d -> %dx%d: pixel (%zu, %zu) channel %zu is %d, Pillow %d", sw,
                         sh, dw, dh, i / 3 % (size_t)dw, i / 3 / (size_t)dw, i % 3, got[i],
                         want[i]);
        free(want);
        free(got);
        free(src);
        n++;
    }
    fclose(f);
    assert_true(n >= 5);
}

/* ---- the processors --------------------------------------------------------- */

static void preprocess_dev_fixtures(void **state) {
    FILE *f = fopen(data_path("image/dev/cases.txt"), "r");
    assert_non_null(f);
    char line[256], kind[16], pat[16];
    int n = 0;
    lv_err err;
    while (fgets(line, sizeof line, f)) {
        int seed, w, h, n_patches = 1;
        unsigned long want;
        img_proc_params p;
        if (sscanf(line, "next %15s %d %d %d %d %lu", pat, &seed, &w, &h, &n_patches, &want) == 6) {
            p = params_of(IMG_PROC_LLAVA_NEXT);
            strcpy(kind, "next");
        } else if (sscanf(line, "%15s %15s %d %d %d %lu", kind, pat, &seed, &w, &h, &want) == 6 &&
                   (strcmp(kind, "clip") == 0 || strcmp(kind, "pad") == 0)) {
            p = params_of(strcmp(kind, "clip") == 0 ? IMG_PROC_CLIP : IMG_PROC_LLAVA_PAD);
        } else {
            continue;
        }
        img_rgb im = {.w = w, .h = h, .rgb = gen_image(pattern_id(pat), (uint32_t)seed, w, h)};
        img_tensor t;
        lv_status st = img_preprocess(&im, &p, NULL, &t, &err);
        if (st != LV_OK) fail_msg("%s %dx%d: %s", kind, w, h, err.msg);
        assert_int_equal(t.n_tiles, n_patches);
        assert_int_equal(t.tile_h, 336);
        assert_int_equal(t.tile_w, 336);
        assert_int_equal(t.image_h, h);
        assert_int_equal(t.image_w, w);
        uint32_t got = tensor_crc(&t);
        if (got != (uint32_t)want)
            fail_msg("%s %s/%d %dx%d: pixel_values crc32 %u, expected %lu", kind, pat, seed, w, h,
                     got, want);
        img_tensor_free(&t);
        free(im.rgb);
        n++;
    }
    fclose(f);
    assert_true(n >= 30);
}

/* 800x600 anyres: layout, padding rows, base first. */
static void anyres_layout(void **state) {
    img_proc_params p = params_of(IMG_PROC_LLAVA_NEXT);
    img_rgb im = {.w = 800, .h = 600, .rgb = gen_image(0, 3, 800, 600)};
    img_tensor t;
    lv_err err;
    float tab[3][256];
    img_norm_table(&p, tab);
    assert_int_equal(img_preprocess(&im, &p, NULL, &t, &err), LV_OK);
    assert_int_equal(t.n_tiles, 5);
    assert_int_equal(t.grid_h, 2);
    assert_int_equal(t.grid_w, 2);
    const size_t plane = 336 * 336;
    /* Resized to 672x504 with 84 black rows above: tile 1 (top left) rows
     * 0..83 and tile 3 (bottom left) rows 252..335 are pad; row 84 is not. */
    for (int c = 0; c < 3; c++) {
        const float *t1 = t.data + (1 * 3 + c) * plane, *t3 = t.data + (3 * 3 + c) * plane;
        for (size_t i = 0; i < 84 * 336; i++) {
            assert_true(t1[i] == tab[c][0]);
            assert_true(t3[252 * 336 + i] == tab[c][0]);
        }
        int non_pad = 0;
        for (int x = 0; x < 336; x++) non_pad += t1[84 * 336 + x] != tab[c][0];
        assert_true(non_pad > 100);
    }
    /* The options' padding colour replaces black. */
    img_options opt = {.has_padding_color = true, .padding_color = {255, 0, 128}};
    img_tensor_free(&t);
    assert_int_equal(img_preprocess(&im, &p, &opt, &t, &err), LV_OK);
    assert_true(t.data[(1 * 3 + 0) * plane] == tab[0][255]);
    assert_true(t.data[(1 * 3 + 1) * plane] == tab[1][0]);
    assert_true(t.data[(1 * 3 + 2) * plane] == tab[2][128]);
    img_tensor_free(&t);
    img_tensor_free(&t); /* freeing a zeroed tensor is a no-op */
    free(im.rgb);
}

/* base_only (image_url detail "low"): the full preprocessing's tile 0 alone, grid 0x0. */
static void anyres_base_only(void **state) {
    img_proc_params p = params_of(IMG_PROC_LLAVA_NEXT);
    img_rgb im = {.w = 800, .h = 600, .rgb = gen_image(0, 3, 800, 600)};
    img_tensor full, low;
    lv_err err;
    img_options opt = {.base_only = true};
    assert_int_equal(img_preprocess(&im, &p, NULL, &full, &err), LV_OK);
    assert_int_equal(img_preprocess(&im, &p, &opt, &low, &err), LV_OK);
    assert_int_equal(low.n_tiles, 1);
    assert_int_equal(low.grid_h, 0);
    assert_int_equal(low.grid_w, 0);
    assert_int_equal(low.image_w, 800);
    assert_int_equal(low.image_h, 600);
    assert_memory_equal(low.data, full.data, (size_t)3 * 336 * 336 * sizeof(float));
    img_tensor_free(&full);
    img_tensor_free(&low);
    free(im.rgb);
}

static void options_resize(void **state) {
    int w, h;
    img_options opt = {.max_size = 500, .keep_aspect = true};
    img_options_size(1000, 800, &opt, &w, &h);
    assert_int_equal(w, 500);
    assert_int_equal(h, 400);
    img_options_size(300, 200, &opt, &w, &h);
    assert_int_equal(w, 300);
    opt = (img_options){.min_size = 400, .keep_aspect = true};
    img_options_size(300, 200, &opt, &w, &h);
    assert_int_equal(w, 600);
    assert_int_equal(h, 400);
    opt = (img_options){.min_size = 100, .max_size = 500, .keep_aspect = false};
    img_options_size(1000, 50, &opt, &w, &h);
    assert_int_equal(w, 500);
    assert_int_equal(h, 100);
    opt = (img_options){.min_size = 400, .max_size = 500, .keep_aspect = true};
    img_options_size(2000, 100, &opt, &w, &h); /* max wins */
    assert_int_equal(w, 500);
    assert_int_equal(h, 25);

    /* Through img_preprocess: the processor sees (and reports) 500x400, the
     * same as preprocessing a Pillow-resized 500x400 image. */
    img_proc_params p = params_of(IMG_PROC_LLAVA_NEXT);
    img_rgb im = {.w = 1000, .h = 800, .rgb = gen_image(1, 9, 1000, 800)};
    img_rgb small = {.w = 500, .h = 400, .rgb = malloc(500 * 400 * 3)};
    assert_non_null(small.rgb);
    lv_err err;
    assert_int_equal(img_resize_bicubic(im.rgb, 1000, 800, 3, small.rgb, 500, 400, &err), LV_OK);
    img_tensor a, b;
    opt = (img_options){.max_size = 500, .keep_aspect = true};
    assert_int_equal(img_preprocess(&im, &p, &opt, &a, &err), LV_OK);
    assert_int_equal(img_preprocess(&small, &p, NULL, &b, &err), LV_OK);
    assert_int_equal(a.image_w, 500);
    assert_int_equal(a.image_h, 400);
    assert_int_equal(a.n_tiles, b.n_tiles);
    assert_int_equal(tensor_crc(&a), tensor_crc(&b));
    img_tensor_free(&a);
    img_tensor_free(&b);
    /* Zeroed options are the reference. */
    opt = (img_options){0};
    assert_int_equal(img_preprocess(&im, &p, &opt, &a, &err), LV_OK);
    assert_int_equal(img_preprocess(&im, &p, NULL, &b, &err), LV_OK);
    assert_int_equal(tensor_crc(&a), tensor_crc(&b));
    img_tensor_free(&a);
    img_tensor_free(&b);
    /* Inconsistent or explosive options are refused. */
    opt = (img_options){.min_size = 600, .max_size = 500};
    assert_int_equal(img_preprocess(&im, &p, &opt, &a, &err), LV_ERR_ARG);
    img_rgb line = {.w = 4000, .h = 1, .rgb = im.rgb};
    opt = (img_options){.min_size = 336, .keep_aspect = true};
    assert_int_equal(img_preprocess(&line, &p, &opt, &a, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "min_size"));
    assert_null(a.data);
    free(im.rgb);
    free(small.rgb);
}

static void params_errors(void **state) {
    lv_err err;
    img_rgb im = {.w = 8, .h = 8, .rgb = gen_image(0, 1, 8, 8)};
    img_tensor t;
    img_proc_params p = params_of(IMG_PROC_LLAVA_NEXT);
    assert_int_equal(img_proc_params_check(&p, &err), LV_OK);
    p.crop_height = p.crop_width = 0;
    assert_int_equal(img_preprocess(&im, &p, NULL, &t, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "crop_size"));
    assert_null(t.data);
    p = params_of(IMG_PROC_LLAVA_NEXT);
    p.n_pinpoints = 0;
    assert_int_equal(img_preprocess(&im, &p, NULL, &t, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "pinpoints"));
    p.n_pinpoints = IMG_MAX_PINPOINTS + 1;
    assert_int_equal(img_proc_params_check(&p, &err), LV_ERR_ARG);
    p = params_of(IMG_PROC_LLAVA_NEXT);
    p.pinpoints[2][1] = 700; /* not a multiple of 336 */
    assert_int_equal(img_proc_params_check(&p, &err), LV_ERR_ARG);
    p = params_of(IMG_PROC_CLIP);
    p.resample = 2;
    assert_int_equal(img_preprocess(&im, &p, NULL, &t, &err), LV_ERR_UNSUPPORTED);
    p = params_of(IMG_PROC_CLIP);
    p.std[1] = 0;
    assert_int_equal(img_proc_params_check(&p, &err), LV_ERR_ARG);
    p = params_of(IMG_PROC_CLIP);
    p.patch_size = 0;
    assert_int_equal(img_proc_params_check(&p, &err), LV_ERR_ARG);
    p.patch_size = 14;
    p.shortest_edge = 0;
    assert_int_equal(img_proc_params_check(&p, &err), LV_ERR_ARG);
    p = params_of(IMG_PROC_CLIP);
    img_rgb empty = {.w = 0, .h = 5, .rgb = im.rgb};
    assert_int_equal(img_preprocess(&empty, &p, NULL, &t, &err), LV_ERR_ARG);
    empty = (img_rgb){.w = 5, .h = 5, .rgb = NULL};
    assert_int_equal(img_preprocess(&empty, &p, NULL, &t, &err), LV_ERR_ARG);
    assert_int_equal(img_preprocess(&im, NULL, NULL, &t, &err), LV_ERR_ARG);
    free(im.rgb);
}

/* Settings the llava checkpoints do not use: no crop (the output is the
 * resized image), height/width sizes, a crop larger than the image (zero
 * padding, the odd pixel first), no rescale/normalise. */
static void clip_variants(void **state) {
    lv_err err;
    img_rgb im = {.w = 30, .h = 20, .rgb = gen_image(0, 12, 30, 20)};
    img_tensor t;
    img_proc_params p = params_of(IMG_PROC_CLIP);
    p.do_center_crop = false;
    p.shortest_edge = 40;
    assert_int_equal(img_preprocess(&im, &p, NULL, &t, &err), LV_OK);
    assert_int_equal(t.tile_h, 40);
    assert_int_equal(t.tile_w, 60);
    img_tensor_free(&t);

    /* No resize, crop 25x33 of a 30x20 image: rows pad (25-20) -> 3 above,
     * 2 below; columns crop (30-33)//2... = -2 -> 2 pad left, 1 right. Raw
     * values (no rescale/normalise) make the check readable. */
    p = params_of(IMG_PROC_CLIP);
    p.do_resize = p.do_rescale = p.do_normalize = false;
    p.crop_height = 25;
    p.crop_width = 33;
    assert_int_equal(img_preprocess(&im, &p, NULL, &t, &err), LV_OK);
    assert_int_equal(t.tile_h, 25);
    assert_int_equal(t.tile_w, 33);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 25; y++)
            for (int x = 0; x < 33; x++) {
                int iy = y - 3, ix = x - 2;
                float want = (iy < 0 || iy >= 20 || ix < 0 || ix >= 30)
                                 ? 0.0f
                                 : (float)im.rgb[(iy * 30 + ix) * 3 + c];
                assert_true(t.data[(c * 25 + y) * 33 + x] == want);
            }
    img_tensor_free(&t);

    /* size {height, width}: a plain squash. */
    p = params_of(IMG_PROC_CLIP);
    p.shortest_edge = 0;
    p.size_height = 336;
    p.size_width = 336;
    assert_int_equal(img_preprocess(&im, &p, NULL, &t, &err), LV_OK);
    uint8_t *sq = malloc(336 * 336 * 3);
    assert_non_null(sq);
    assert_int_equal(img_resize_bicubic(im.rgb, 30, 20, 3, sq, 336, 336, &err), LV_OK);
    float tab[3][256];
    img_norm_table(&p, tab);
    for (int i = 0; i < 336 * 336; i++) assert_true(t.data[336 * 336 + i] == tab[1][sq[3 * i + 1]]);
    free(sq);
    img_tensor_free(&t);
    free(im.rgb);
}

/* ---- golden data from transformers (when present) ------------------------ */

static const char *const PROC_KEYS[] = {"llava_next", "clip", "llava_pad"}; /* by img_proc_kind */

static int64_t json_int(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) fail_msg("golden.json: \"%s\" missing or not an integer", key);
    return json_integer_value(v);
}

/* One processor on one image against its golden entry g ({"shape",
 * "crc32", "patch_crc32", "image_sizes"}); returns 1 on a mismatch, after
 * printing which patches differ. */
static int golden_compare(const char *file, const img_rgb *im, img_proc_kind kind, json_t *g) {
    img_proc_params p = params_of(kind);
    img_tensor t;
    lv_err err;
    if (!g) fail_msg("golden.json: %s has no \"%s\"", file, PROC_KEYS[kind]);
    if (img_preprocess(im, &p, NULL, &t, &err) != LV_OK) {
        print_error("%s %s: %s\n", file, PROC_KEYS[kind], err.msg);
        return 1;
    }
    int bad = 0;
    json_t *shape = json_object_get(g, "shape"), *sizes = json_object_get(g, "image_sizes");
    if (json_integer_value(json_array_get(shape, 0)) != t.n_tiles ||
        json_integer_value(json_array_get(shape, 2)) != t.tile_h ||
        json_integer_value(json_array_get(shape, 3)) != t.tile_w) {
        print_error("%s %s: shape [%d, 3, %d, %d], transformers [%lld, 3, %lld, %lld]\n", file,
                    PROC_KEYS[kind], t.n_tiles, t.tile_h, t.tile_w,
                    (long long)json_integer_value(json_array_get(shape, 0)),
                    (long long)json_integer_value(json_array_get(shape, 2)),
                    (long long)json_integer_value(json_array_get(shape, 3)));
        bad = 1;
    } else if (tensor_crc(&t) != (uint32_t)json_int(g, "crc32")) {
        size_t plane = (size_t)3 * t.tile_h * t.tile_w;
        for (int i = 0; i < t.n_tiles; i++) {
            uint32_t got = crc32_update(0, t.data + plane * i, plane * sizeof(float));
            json_t *want = json_array_get(json_object_get(g, "patch_crc32"), (size_t)i);
            if (got != (uint32_t)json_integer_value(want))
                print_error("%s %s: patch %d (%s) crc32 %u, transformers %lld\n", file,
                            PROC_KEYS[kind], i,
                            kind == IMG_PROC_LLAVA_NEXT && i == 0 ? "base" : "tile", got,
                            (long long)json_integer_value(want));
        }
        bad = 1;
    }
    if (sizes && (json_integer_value(json_array_get(sizes, 0)) != t.image_h ||
                  json_integer_value(json_array_get(sizes, 1)) != t.image_w)) {
        print_error("%s %s: image_sizes [%d, %d]\n", file, PROC_KEYS[kind], t.image_h, t.image_w);
        bad = 1;
    }
    img_tensor_free(&t);
    return bad;
}

/*
 * tests/data/image/golden.json (tools/reference/image_golden.py: transformers
 * 5.17 PIL-backend processors; format in tests/data/image/README.md): every
 * image of tests/assets/images is decoded with img_decode_file and run
 * through the three processors; pixel_values must have the same crc32
 * (whole, and per patch to say which one differs). Then the token_sweep
 * sizes must give LlavaNextProcessor's counts.
 *
 * When the decoded RGB differs from Pillow's (rgb_crc32; e.g. another
 * libjpeg-turbo version) the case says so; with an optional "rgb_file" (raw
 * RGB from Pillow, under $LLAVA_TEST_DATA) the processors are compared on
 * that instead, so resampling and normalisation stay checked exactly.
 */
static void golden(void **state) {
    json_error_t jerr;
    json_t *root = json_load_file(data_path("image/golden.json"), 0, &jerr);
    if (!root) {
        print_message("no tests/data/image/golden.json (%s); skipped\n", jerr.text);
        skip();
    }
    int bad = 0, n_cases = 0, n_decoder = 0;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(root, "cases"), i, c) {
        const char *file = json_string_value(json_object_get(c, "file"));
        assert_non_null(file);
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", tu_env("LLAVA_TEST_ASSETS"), file);
        img_rgb im = {0};
        lv_err err;
        if (img_decode_file(path, NULL, &im, NULL, &err) != LV_OK) {
            print_error("%s: %s\n", file, err.msg);
            bad++;
            continue;
        }
        n_cases++;
        if (im.w != json_int(c, "width") || im.h != json_int(c, "height")) {
            print_error("%s: decoded %dx%d, Pillow %lldx%lld\n", file, im.w, im.h,
                        (long long)json_int(c, "width"), (long long)json_int(c, "height"));
            bad++;
            img_rgb_free(&im);
            continue;
        }
        if (crc32_update(0, im.rgb, (size_t)im.w * im.h * 3) !=
            (uint32_t)json_int(c, "rgb_crc32")) {
            n_decoder++;
            const char *rgb_file = json_string_value(json_object_get(c, "rgb_file"));
            print_error("%s: decoded RGB differs from Pillow's (decoder)%s\n", file,
                        rgb_file ? "; comparing the processors on Pillow's RGB" : "");
            char *raw = NULL;
            size_t len = 0;
            if (!rgb_file ||
                lv_read_file(data_path(rgb_file), (size_t)1 << 30, &raw, &len, &err) != LV_OK ||
                len != (size_t)im.w * im.h * 3) {
                bad++;
                free(raw);
                img_rgb_free(&im);
                continue;
            }
            free(im.rgb);
            im.rgb = (uint8_t *)raw;
        }
        for (int k = IMG_PROC_LLAVA_NEXT; k <= IMG_PROC_LLAVA_PAD; k++)
            bad += golden_compare(file, &im, (img_proc_kind)k, json_object_get(c, PROC_KEYS[k]));
        img_rgb_free(&im);
    }
    img_proc_params p = params_of(IMG_PROC_LLAVA_NEXT);
    size_t n_sweep = 0;
    json_array_foreach(json_object_get(root, "token_sweep"), i, c) {
        int h = (int)json_integer_value(json_array_get(c, 0));
        int w = (int)json_integer_value(json_array_get(c, 1));
        int want = (int)json_integer_value(json_array_get(c, 2));
        int got = img_num_image_tokens(h, w, &p);
        if (got != want) {
            if (bad < 50)
                print_error("tokens %dx%d (h x w): %d, transformers %d\n", h, w, got, want);
            bad++;
        }
        n_sweep++;
    }
    json_decref(root);
    print_message("golden: %d images (%d with decoder differences), %zu token sizes\n", n_cases,
                  n_decoder, n_sweep);
    assert_true(n_sweep >= 20000);
    assert_int_equal(bad, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(best_resolution_examples),
        cmocka_unit_test(token_count_examples),
        cmocka_unit_test(token_sweep_dev),
        cmocka_unit_test(norm_table_values),
        cmocka_unit_test(resize_copy_and_1x1),
        cmocka_unit_test(resize_window_and_canvas),
        cmocka_unit_test(resize_dev_fixtures),
        cmocka_unit_test(preprocess_dev_fixtures),
        cmocka_unit_test(anyres_layout),
        cmocka_unit_test(anyres_base_only),
        cmocka_unit_test(options_resize),
        cmocka_unit_test(params_errors),
        cmocka_unit_test(clip_variants),
        cmocka_unit_test(golden),
    };
    return cmocka_run_group_tests_name("image_preprocess", tests, NULL, NULL);
}
