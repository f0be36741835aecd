/*
 * test_image_idefics3.c - Pillow's LANCZOS (image/resample) and the SmolVLM /
 * Idefics3 image processor (image/idefics3).
 *
 * Three levels of reference:
 *   1. development fixtures made with Pillow here
 *      (tests/data/smolvlm/dev/lanczos.txt, tools/reference/
 *      make_lanczos_fixtures.py): LANCZOS resizes of synthetic images, and an
 *      independent Pillow + NumPy rendering of the processor, as crc32s;
 *   2. the worked examples of ../shared/spec/smolvlm.md §3.8;
 *   3. golden data made with transformers' PIL-backend SmolVLM / Idefics3
 *      processors (tests/data/smolvlm/image_golden.json, written by
 *      tools/reference/smolvlm_image_golden.py on the GPU machine), when
 *      present: every test image decoded with img_decode_file, frame crc32s,
 *      and a rows/cols sweep over >= 20,000 sizes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/clock.h"
#include "image/anyres.h"
#include "image/decode.h"
#include "image/idefics3.h"
#include "image/preprocess.h"
#include "image/resample.h"
#include "testutil.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers (as test_image_preprocess.c) --------------------------------- */

/* zlib's crc32, so fixtures can be made with Python's zlib.crc32. */
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

static size_t frame_floats(const img_tensor *t) {
    return (size_t)3 * (size_t)t->tile_h * (size_t)t->tile_w;
}

/* crc32 of frame i's float32 bytes (little-endian machines only: checked). */
static uint32_t frame_crc(const img_tensor *t, int i) {
    const uint16_t one = 1;
    assert_int_equal(*(const uint8_t *)&one, 1);
    return crc32_update(0, t->data + (size_t)i * frame_floats(t), frame_floats(t) * sizeof(float));
}

/* The synthetic images of tests/data/image/dev/make_dev_fixtures.py. */
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

static const char *data_path(const char *rel) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", tu_env("LLAVA_TEST_DATA"), rel);
    return path;
}

/* SmolVLM-256M's processor (2048 / 512, patch 16) or SmolVLM2-2.2B's
 * (1536 / 384, patch 14). */
static img_proc_params smol_params(int L, int T) {
    img_proc_params p;
    img_proc_params_idefics3_default(&p, L, T, T % 16 == 0 ? 16 : 14);
    return p;
}

/* ---- 1. Pillow fixtures ---------------------------------------------------- */

static void lanczos_dev_fixtures(void **state) {
    FILE *f = fopen(data_path("smolvlm/dev/lanczos.txt"), "r");
    assert_non_null(f);
    char line[256], pat[16];
    int n_resize = 0, n_proc = 0;
    lv_err err;
    while (fgets(line, sizeof line, f)) {
        int seed, sw, sh, dw, dh, L, T, split, rows, cols, frames;
        unsigned long want;
        if (sscanf(line, "lanczos %15s %d %d %d %d %d %lu", pat, &seed, &sw, &sh, &dw, &dh,
                   &want) == 7) {
            uint8_t *src = gen_image(pattern_id(pat), (uint32_t)seed, sw, sh);
            uint8_t *dst = malloc((size_t)dw * dh * 3);
            assert_non_null(dst);
            assert_int_equal(img_resize(src, sw, sh, 3, IMG_FILTER_LANCZOS, dst, dw, dh, &err),
                             LV_OK);
            uint32_t got = crc32_update(0, dst, (size_t)dw * dh * 3);
            if (got != (uint32_t)want)
                fail_msg("LANCZOS %s/%d %dx%d -> %dx%d: crc32 %u, Pillow's %lu", pat, seed, sw, sh,
                         dw, dh, got, want);
            free(src);
            free(dst);
            n_resize++;
        } else if (sscanf(line, "idefics3 %15s %d %d %d %d %d %d %d %d %d %lu", pat, &seed, &sw,
                          &sh, &L, &T, &split, &rows, &cols, &frames, &want) == 11) {
            img_proc_params p = smol_params(L, T);
            p.do_image_splitting = split != 0;
            img_rgb im = {
                .w = sw, .h = sh, .rgb = gen_image(pattern_id(pat), (uint32_t)seed, sw, sh)};
            img_tensor t;
            if (img_preprocess(&im, &p, NULL, &t, &err) != LV_OK)
                fail_msg("idefics3 %dx%d: %s", sw, sh, err.msg);
            assert_int_equal(t.n_tiles, frames);
            assert_int_equal(t.grid_h, rows);
            assert_int_equal(t.grid_w, cols);
            assert_int_equal(t.tile_h, T);
            assert_int_equal(t.tile_w, T);
            assert_int_equal(t.image_h, sh);
            assert_int_equal(t.image_w, sw);
            uint32_t got = crc32_update(0, t.data, (size_t)frames * frame_floats(&t) * 4);
            if (got != (uint32_t)want)
                fail_msg("idefics3 %s/%d %dx%d L=%d T=%d: crc32 %u, Pillow/NumPy %lu", pat, seed,
                         sw, sh, L, T, got, want);
            int r, c;
            assert_int_equal(img_idefics3_grid(sh, sw, &p, false, &r, &c), frames);
            assert_int_equal(r, rows);
            assert_int_equal(c, cols);
            img_tensor_free(&t);
            free(im.rgb);
            n_proc++;
        }
    }
    fclose(f);
    assert_true(n_resize >= 10);
    assert_true(n_proc >= 5);
}

/* Bicubic is still bicubic through the generic entry point. */
static void filters_and_errors(void **state) {
    uint8_t *src = gen_image(0, 5, 40, 30);
    uint8_t a[20 * 17 * 3], b[20 * 17 * 3];
    lv_err err;
    assert_int_equal(img_resize(src, 40, 30, 3, IMG_FILTER_BICUBIC, a, 20, 17, &err), LV_OK);
    assert_int_equal(img_resize_bicubic(src, 40, 30, 3, b, 20, 17, &err), LV_OK);
    assert_memory_equal(a, b, sizeof a);
    assert_int_equal(img_resize(src, 40, 30, 3, IMG_FILTER_LANCZOS, b, 20, 17, &err), LV_OK);
    assert_memory_not_equal(a, b, sizeof a);
    assert_int_equal(img_resize(src, 40, 30, 3, (img_filter)7, b, 20, 17, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "filter"));
    assert_int_equal(img_resize(src, 40, 30, 3, IMG_FILTER_LANCZOS, b, 0, 17, &err), LV_ERR_ARG);
    free(src);

    /* Parameters out of range are refused with the field named. */
    img_rgb im = {.w = 8, .h = 8, .rgb = gen_image(1, 1, 8, 8)};
    img_tensor t;
    static const struct {
        int L, T, patch, resample;
        lv_status st;
        const char *needle;
    } bad[] = {
        {0, 512, 16, 1, LV_ERR_ARG, "longest_edge"},
        {2048, 0, 16, 1, LV_ERR_ARG, "max_image_size"},
        {2048, 4096, 16, 1, LV_ERR_ARG, "max_image_size"},
        {2048, 512, 0, 1, LV_ERR_ARG, "patch_size"},
        {2048, 512, 16, 2, LV_ERR_UNSUPPORTED, "resample 2"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        img_proc_params p = smol_params(2048, 512);
        p.longest_edge = bad[i].L;
        p.max_image_size = bad[i].T;
        p.patch_size = bad[i].patch;
        p.resample = bad[i].resample;
        lv_status st = img_preprocess(&im, &p, NULL, &t, &err);
        if (st != bad[i].st || !strstr(err.msg, bad[i].needle))
            fail_msg("case %zu: %s \"%s\"", i, lv_status_str(st), err.msg);
        assert_null(t.data);
        assert_int_equal(img_idefics3_grid(8, 8, &p, false, NULL, NULL), -1);
    }
    /* Without do_resize the input size drives everything: a huge one is
     * refused before anything is allocated. */
    img_proc_params p = smol_params(2048, 512);
    p.do_resize = false;
    img_rgb wide = {.w = 1 << 20, .h = 1, .rgb = im.rgb}; /* never read */
    assert_int_equal(img_preprocess(&wide, &p, NULL, &t, &err), LV_ERR_TOO_LARGE);
    p.max_image_size = p.patch_size = 1; /* 2^48 frames: no int overflow, just -1 */
    assert_int_equal(img_idefics3_grid(1 << 24, 1 << 24, &p, false, NULL, NULL), -1);
    assert_int_equal(img_idefics3_grid(3, 2, &p, false, NULL, NULL), 7);
    /* IDEFICS3 counts need image_seq_len: the generic count says so. */
    p = smol_params(2048, 512);
    assert_int_equal(img_num_image_tokens(600, 800, &p), -1);
    assert_int_equal(img_idefics3_num_image_tokens(600, 800, &p, false, 0), -1);
    free(im.rgb);
}

/* The horizontal pass has two forms (resample.c: by strips of turned rows
 * when shrinking a plain image of >= 16 rows, else one row at a time); a
 * window one row high always takes the second. Both must give the same
 * bytes, for every channel count, filter and a few widths. */
static void hpass_forms_agree(void **state) {
    static const int widths[][2] = {{300, 97}, {300, 299}, {1000, 250}, {77, 13}, {640, 1}};
    lv_err err;
    for (int ch = 1; ch <= 4; ch++)
        for (int f = 0; f < 2; f++)
            for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++) {
                const int sw = widths[i][0], dw = widths[i][1], h = 70;
                uint8_t *src = gen_image(1, (uint32_t)(ch * 10 + f), sw * ch, h); /* noise */
                uint8_t *full = malloc((size_t)dw * h * (size_t)ch);
                uint8_t *row = malloc((size_t)dw * (size_t)ch);
                assert_true(full && row);
                assert_int_equal(img_resize(src, sw, h, ch, (img_filter)f, full, dw, h, &err),
                                 LV_OK);
                img_canvas cv;
                img_canvas_plain(&cv, src, sw, h, ch);
                for (int y = 0; y < h; y++) {
                    assert_int_equal(
                        img_resize_window(&cv, (img_filter)f, dw, h, 0, y, dw, 1, row, &err),
                        LV_OK);
                    if (memcmp(row, full + (size_t)y * dw * (size_t)ch, (size_t)dw * (size_t)ch))
                        fail_msg("%d channels, filter %d, %d -> %d: row %d differs", ch, f, sw, dw,
                                 y);
                }
                free(src);
                free(full);
                free(row);
            }
}

/* Bicubic (resample 3) works for IDEFICS3 too, and differs from LANCZOS. */
static void bicubic_variant(void **state) {
    img_rgb im = {.w = 60, .h = 45, .rgb = gen_image(0, 9, 60, 45)};
    img_proc_params p = smol_params(256, 64);
    img_tensor a, b;
    lv_err err;
    assert_int_equal(img_preprocess(&im, &p, NULL, &a, &err), LV_OK);
    p.resample = 3;
    assert_int_equal(img_preprocess(&im, &p, NULL, &b, &err), LV_OK);
    assert_int_equal(a.n_tiles, b.n_tiles);
    assert_int_equal(a.n_tiles, 3 * 4 + 1);
    assert_memory_not_equal(a.data, b.data, frame_floats(&a) * sizeof(float));
    img_tensor_free(&a);
    img_tensor_free(&b);
    free(im.rgb);
}

/* ---- 2. spec §3.8 ---------------------------------------------------------- */

static void worked_examples(void **state) {
    static const int ex[][12] = {
        /* W, H, L, T, step 1 W, H, step 2 W, H, rows, cols, frames, tokens */
        {100, 80, 2048, 512, 2048, 1638, 2048, 2048, 4, 4, 17, 1088},
        {386, 386, 2048, 512, 2048, 2048, 2048, 2048, 4, 4, 17, 1088},
        {640, 480, 2048, 512, 2048, 1536, 2048, 1536, 3, 4, 13, 832},
        {800, 600, 2048, 512, 2048, 1536, 2048, 1536, 3, 4, 13, 832},
        {1000, 700, 2048, 512, 2048, 1434, 2048, 1536, 3, 4, 13, 832},
        {1920, 1080, 2048, 512, 2048, 1152, 2048, 1536, 3, 4, 13, 832},
        {1080, 1920, 2048, 512, 1152, 2048, 1536, 2048, 4, 3, 13, 832},
        {3000, 400, 2048, 512, 2048, 274, 2048, 512, 1, 4, 5, 320},
        {100, 80, 1536, 384, 1536, 1228, 1536, 1536, 4, 4, 17, 1377},
        {1000, 700, 1536, 384, 1536, 1076, 1536, 1152, 3, 4, 13, 1053},
        {3000, 400, 1536, 384, 1536, 204, 1536, 384, 1, 4, 5, 405},
    };
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        const int *e = ex[i];
        int h1, w1, h2, w2, rows, cols;
        img_idefics3_resize_size(e[1], e[0], e[2], &h1, &w1);
        img_idefics3_encoder_size(h1, w1, e[3], &h2, &w2);
        img_proc_params p = smol_params(e[2], e[3]);
        int frames = img_idefics3_grid(e[1], e[0], &p, false, &rows, &cols);
        int seq = e[3] == 512 ? 64 : 81;
        if (w1 != e[4] || h1 != e[5] || w2 != e[6] || h2 != e[7] || rows != e[8] || cols != e[9] ||
            frames != e[10] || img_idefics3_num_image_tokens(e[1], e[0], &p, false, seq) != e[11])
            fail_msg("%dx%d L=%d: step 1 %dx%d, step 2 %dx%d, %dx%d, %d frames; spec says "
                     "%dx%d, %dx%d, %dx%d, %d",
                     e[0], e[1], e[2], w1, h1, w2, h2, rows, cols, frames, e[4], e[5], e[6], e[7],
                     e[8], e[9], e[10]);
        /* No splitting / detail "low": one frame. */
        assert_int_equal(img_idefics3_grid(e[1], e[0], &p, true, &rows, &cols), 1);
        assert_int_equal(rows + cols, 0);
        p.do_image_splitting = false;
        assert_int_equal(img_idefics3_num_image_tokens(e[1], e[0], &p, false, seq), seq);
    }
    /* int(L / (w / h)) in double, not integer math (spec §3.2): 128x93. */
    int h1, w1;
    img_idefics3_resize_size(93, 128, 2048, &h1, &w1);
    assert_int_equal(h1, 1488); /* 1487 + 1 (odd) */
    assert_int_equal(w1, 2048);
    /* The 4096 cap (MAX_IMAGE_SIZE) with a larger L. */
    img_idefics3_resize_size(100, 200, 8192, &h1, &w1);
    assert_int_equal(w1, 4096);
    assert_int_equal(h1, 2048);
    /* Tiny and extreme inputs. */
    img_idefics3_resize_size(1, 1, 2048, &h1, &w1);
    assert_int_equal(h1, 2048);
    assert_int_equal(w1, 2048);
    img_idefics3_resize_size(1, 4000, 2048, &h1, &w1);
    assert_int_equal(h1, 1); /* int(2048 / 4000) = 0, even, then max(0, 1) */
    assert_int_equal(w1, 2048);
}

/* The real pipeline on the sizes above: frame layout, global last,
 * base_only, options, and the 800x600 timing. */
static void layout_and_options(void **state) {
    lv_err err;
    img_proc_params p = smol_params(2048, 512);
    img_rgb im = {.w = 800, .h = 600, .rgb = gen_image(0, 3, 800, 600)};
    img_tensor t, one;
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = lv_now_ms();
        assert_int_equal(img_preprocess(&im, &p, NULL, &t, &err), LV_OK);
        double dt = lv_now_ms() - t0;
        if (dt < best) best = dt;
        if (rep < 2) img_tensor_free(&t);
    }
    print_message("idefics3 800x600 (2048/512, 13 frames): %.1f ms (best of 3)\n", best);
    assert_int_equal(t.n_tiles, 13);
    assert_int_equal(t.grid_h, 3);
    assert_int_equal(t.grid_w, 4);
    for (size_t i = 0; i < (size_t)t.n_tiles * frame_floats(&t); i++)
        if (!(t.data[i] >= -1.0f && t.data[i] <= 1.0f)) fail_msg("value %zu out of [-1, 1]", i);

    /* base_only = do_image_splitting false: the same single frame, and it
     * is not the global frame of the split (that comes from the step-2
     * image, this from step 1 - the same here, 2048x1536 both, so equal). */
    img_options opt = {.base_only = true};
    assert_int_equal(img_preprocess(&im, &p, &opt, &one, &err), LV_OK);
    assert_int_equal(one.n_tiles, 1);
    assert_int_equal(one.grid_h + one.grid_w, 0);
    assert_memory_equal(one.data, t.data + (size_t)12 * frame_floats(&t),
                        frame_floats(&t) * sizeof(float));
    img_tensor_free(&one);
    img_proc_params q = p;
    q.do_image_splitting = false;
    assert_int_equal(img_preprocess(&im, &q, NULL, &one, &err), LV_OK);
    assert_int_equal(one.n_tiles, 1);
    assert_memory_equal(one.data, t.data + (size_t)12 * frame_floats(&t),
                        frame_floats(&t) * sizeof(float));
    img_tensor_free(&one);
    img_tensor_free(&t);

    /* max_size shrinks first (bicubic, as for every kind): the processor
     * then sees 400x300, which is what image_h/w report; padding_color has
     * nothing to colour. */
    opt = (img_options){.max_size = 400, .keep_aspect = true, .has_padding_color = true};
    assert_int_equal(img_preprocess(&im, &p, &opt, &t, &err), LV_OK);
    assert_int_equal(t.image_w, 400);
    assert_int_equal(t.image_h, 300);
    assert_int_equal(t.n_tiles, 13);
    img_tensor_free(&t);
    opt = (img_options){.min_size = 500, .max_size = 400};
    assert_int_equal(img_preprocess(&im, &p, &opt, &t, &err), LV_ERR_ARG);
    free(im.rgb);

    /* 1x1 and 1xN inputs. */
    img_rgb dot = {.w = 1, .h = 1, .rgb = gen_image(1, 4, 1, 1)};
    assert_int_equal(img_preprocess(&dot, &p, NULL, &t, &err), LV_OK);
    assert_int_equal(t.n_tiles, 17);
    img_tensor_free(&t);
    free(dot.rgb);
    img_rgb line = {.w = 3000, .h = 1, .rgb = gen_image(1, 4, 3000, 1)};
    assert_int_equal(img_preprocess(&line, &p, NULL, &t, &err), LV_OK);
    assert_int_equal(t.n_tiles, 5);
    assert_int_equal(t.grid_h, 1);
    assert_int_equal(t.grid_w, 4);
    img_tensor_free(&t);
    free(line.rgb);
}

/* ---- 3. golden data from transformers (when present) ------------------------ */

static int64_t json_int(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) fail_msg("image_golden.json: \"%s\" missing or not an integer", key);
    return json_integer_value(v);
}

/* The processor of configuration `key` ({"longest_edge", "max_image_size",
 * "do_image_splitting"} in root's "configs"). */
static img_proc_params golden_params(const json_t *root, const char *key) {
    const json_t *c = json_object_get(json_object_get(root, "configs"), key);
    if (!c) fail_msg("image_golden.json: no configs.%s", key);
    img_proc_params p =
        smol_params((int)json_int(c, "longest_edge"), (int)json_int(c, "max_image_size"));
    p.do_image_splitting = json_is_true(json_object_get(c, "do_image_splitting"));
    return p;
}

/* One image under one configuration against {"frames", "rows", "cols",
 * "frame_crc32"}; returns the number of mismatches. */
static int golden_compare(const char *file, const img_rgb *im, const char *key,
                          const img_proc_params *p, const json_t *g) {
    if (!g) {
        print_error("%s: no \"%s\" entry\n", file, key);
        return 1;
    }
    img_tensor t;
    lv_err err;
    if (img_preprocess(im, p, NULL, &t, &err) != LV_OK) {
        print_error("%s %s: %s\n", file, key, err.msg);
        return 1;
    }
    int bad = 0;
    if (t.n_tiles != json_int(g, "frames") || t.grid_h != json_int(g, "rows") ||
        t.grid_w != json_int(g, "cols")) {
        print_error("%s %s: %d frames %dx%d, transformers %lld %lldx%lld\n", file, key, t.n_tiles,
                    t.grid_h, t.grid_w, (long long)json_int(g, "frames"),
                    (long long)json_int(g, "rows"), (long long)json_int(g, "cols"));
        bad = 1;
    } else {
        const json_t *crcs = json_object_get(g, "frame_crc32");
        for (int i = 0; i < t.n_tiles; i++) {
            uint32_t want = (uint32_t)json_integer_value(json_array_get(crcs, (size_t)i));
            if (frame_crc(&t, i) != want) {
                print_error("%s %s: frame %d of %d differs (crc32 %u, transformers %u)\n", file,
                            key, i, t.n_tiles, frame_crc(&t, i), want);
                bad = 1;
            }
        }
    }
    img_tensor_free(&t);
    return bad;
}

static void golden(void **state) {
    json_error_t jerr;
    json_t *root = json_load_file(data_path("smolvlm/image_golden.json"), 0, &jerr);
    if (!root) {
        print_message("golden: skipped (no golden yet: tests/data/smolvlm/image_golden.json, %s)\n",
                      jerr.text);
        return; /* passes */
    }
    int bad = 0, n_cases = 0, n_frames = 0;
    size_t i;
    const json_t *c;
    const char *keys[8];
    img_proc_params params[8];
    size_t n_keys = 0;
    const char *key;
    const json_t *cfg;
    json_object_foreach(json_object_get(root, "configs"), key, cfg) {
        if (n_keys < 8) {
            keys[n_keys] = key;
            params[n_keys++] = golden_params(root, key);
        }
    }
    assert_true(n_keys >= 2);
    json_array_foreach(json_object_get(root, "cases"), i, c) {
        const char *file = json_string_value(json_object_get(c, "file"));
        assert_non_null(file);
        if (json_object_get(c, "error")) continue; /* Pillow could not open it either */
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
        if (im.w != json_int(c, "width") || im.h != json_int(c, "height") ||
            crc32_update(0, im.rgb, (size_t)im.w * im.h * 3) !=
                (uint32_t)json_int(c, "rgb_crc32")) {
            print_error("%s: decoded RGB (%dx%d) differs from Pillow's (decoder, see "
                        "test_image_preprocess's golden)\n",
                        file, im.w, im.h);
            bad++;
            img_rgb_free(&im);
            continue;
        }
        for (size_t k = 0; k < n_keys; k++) {
            const json_t *g = json_object_get(c, keys[k]);
            bad += golden_compare(file, &im, keys[k], &params[k], g);
            n_frames += g ? (int)json_int(g, "frames") : 0;
        }
        img_rgb_free(&im);
    }
    /* The sweep: [h, w, rows, cols] per configuration. */
    size_t n_sweep = 0;
    const json_t *list;
    json_object_foreach(json_object_get(root, "sweep"), key, list) {
        img_proc_params p = golden_params(root, key);
        json_array_foreach(list, i, c) {
            int h = (int)json_integer_value(json_array_get(c, 0));
            int w = (int)json_integer_value(json_array_get(c, 1));
            int want_r = (int)json_integer_value(json_array_get(c, 2));
            int want_c = (int)json_integer_value(json_array_get(c, 3));
            int r = -1, cc = -1;
            img_idefics3_grid(h, w, &p, false, &r, &cc);
            if (r != want_r || cc != want_c) {
                if (bad < 50)
                    print_error("%s %dx%d (h x w): %dx%d, transformers %dx%d\n", key, h, w, r, cc,
                                want_r, want_c);
                bad++;
            }
            n_sweep++;
        }
    }
    json_decref(root);
    print_message("golden: %d images, %d frames, %zu sweep sizes\n", n_cases, n_frames, n_sweep);
    assert_true(n_cases > 0);
    assert_true(n_sweep >= 20000);
    assert_int_equal(bad, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lanczos_dev_fixtures),
        cmocka_unit_test(filters_and_errors),
        cmocka_unit_test(hpass_forms_agree),
        cmocka_unit_test(bicubic_variant),
        cmocka_unit_test(worked_examples),
        cmocka_unit_test(layout_and_options),
        cmocka_unit_test(golden),
    };
    return cmocka_run_group_tests_name("image_idefics3", tests, NULL, NULL);
}
