/*
 * test_image_decode.c - img_decode against Pillow: the golden data of real
 * photographs (tests/data/image/golden.json, Pillow 12.3 via transformers'
 * load_image), the development images (tests/assets/images/dev/, every
 * format variant), and the hostile inputs: decompression-bomb headers,
 * truncation, corruption, garbage, unsupported formats, limits.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/clock.h"
#include "image/decode.h"
#include "testutil.h"

#include <dirent.h>
#include <stdbool.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static const char *asset(const char *rel) {
    static char path[2048];
    snprintf(path, sizeof path, "%s/%s", tu_env("LLAVA_TEST_ASSETS"), rel);
    return path;
}

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(len > 0 ? (size_t)len : 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return buf;
}

static uint32_t rgb_crc(const img_rgb *im) {
    return (uint32_t)crc32(0, im->rgb, (uInt)((size_t)im->w * im->h * 3));
}

static uint32_t xorshift(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* Decodes and checks the failure contract: out zeroed, a message. */
static lv_status decode(const uint8_t *d, size_t n, const img_limits *lim, img_rgb *im,
                        img_decode_info *info, lv_err *err) {
    err->msg[0] = '\0';
    lv_status st = img_decode(d, n, lim, im, info, err);
    if (st != LV_OK) {
        assert_null(im->rgb);
        assert_int_equal(im->w, 0);
        assert_int_equal(im->h, 0);
        assert_true(err->msg[0] != '\0');
    } else {
        assert_non_null(im->rgb);
        assert_true(im->w > 0 && im->h > 0);
    }
    return st;
}

/* ------------------------------------------------------------------------ */
/* Golden data: real photographs through transformers' load_image            */
/* ------------------------------------------------------------------------ */

static void golden_rgb(void **state) {
    char path[2048];
    snprintf(path, sizeof path, "%s/image/golden.json", tu_env("LLAVA_TEST_DATA"));
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) fail_msg("%s: %s", path, je.text);
    json_t *cases = json_object_get(root, "cases");
    assert_true(json_array_size(cases) >= 15);
    int bad = 0;
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const char *file = json_string_value(json_object_get(c, "file"));
        const char *format = json_string_value(json_object_get(c, "format"));
        const char *mode = json_string_value(json_object_get(c, "mode"));
        json_t *open_size = json_object_get(c, "open_size");
        int w = (int)json_integer_value(json_object_get(c, "width"));
        int h = (int)json_integer_value(json_object_get(c, "height"));
        int o = (int)json_integer_value(json_object_get(c, "exif_orientation"));
        uint32_t crc = (uint32_t)json_integer_value(json_object_get(c, "rgb_crc32"));
        img_rgb im = {0};
        img_decode_info info;
        lv_err err;
        if (img_decode_file(asset(file), NULL, &im, &info, &err) != LV_OK) {
            printf("golden %s: %s\n", file, err.msg);
            bad++;
            continue;
        }
        uint32_t got = rgb_crc(&im);
        int applied = o >= 2 && o <= 8 ? o : 1;
        if (strcmp(info.format, format) || strcmp(info.mode, mode) || im.w != w || im.h != h ||
            info.width != json_integer_value(json_array_get(open_size, 0)) ||
            info.height != json_integer_value(json_array_get(open_size, 1)) ||
            info.orientation != applied || got != crc) {
            /* a crc cannot say which pixels differ; the sizes and modes can */
            printf("golden %s: expected %s %s %dx%d orientation %d crc %u; got %s %s %dx%d "
                   "orientation %d crc %u\n",
                   file, format, mode, w, h, applied, crc, info.format, info.mode, im.w, im.h,
                   info.orientation, got);
            bad++;
        }
        img_rgb_free(&im);
    }
    json_decref(root);
    assert_int_equal(bad, 0);
}

/* ------------------------------------------------------------------------ */
/* Development images: every variant, expected values from Pillow            */
/* ------------------------------------------------------------------------ */

static lv_status status_named(const char *s) {
    if (!strcmp(s, "LV_ERR_FORMAT")) return LV_ERR_FORMAT;
    if (!strcmp(s, "LV_ERR_UNSUPPORTED")) return LV_ERR_UNSUPPORTED;
    if (!strcmp(s, "LV_ERR_ARG")) return LV_ERR_ARG;
    fail_msg("unknown status %s in expected.txt", s);
    return LV_OK;
}

static void dev_images(void **state) {
    FILE *f = fopen(asset("images/dev/expected.txt"), "r");
    assert_non_null(f);
    char line[512];
    int n = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        char name[128], format[16], mode[32];
        int w = 0, h = 0;
        unsigned long crc = 0;
        int k = sscanf(line, "%127s %15s %31s %d %d %lu", name, format, mode, &w, &h, &crc);
        assert_true(k == 6 || (k == 3 && !strcmp(format, "ERR")));
        char rel[256];
        snprintf(rel, sizeof rel, "images/dev/%s", name);
        size_t len;
        uint8_t *data = read_all(asset(rel), &len);
        img_rgb im = {0};
        img_decode_info info;
        lv_err err;
        lv_status st = decode(data, len, NULL, &im, &info, &err);
        n++;
        if (k == 3) {
            if (st != status_named(mode)) {
                printf("dev %s: expected %s, got %s (%s)\n", name, mode, lv_status_str(st),
                       st == LV_OK ? "decoded" : err.msg);
                bad++;
            }
        } else if (st != LV_OK) {
            printf("dev %s: %s\n", name, err.msg);
            bad++;
        } else if (strcmp(info.format, format) || strcmp(info.mode, mode) || im.w != w ||
                   im.h != h || rgb_crc(&im) != crc) {
            printf("dev %s: expected %s %s %dx%d crc %lu; got %s %s %dx%d crc %u\n", name, format,
                   mode, w, h, crc, info.format, info.mode, im.w, im.h, rgb_crc(&im));
            bad++;
        }
        img_rgb_free(&im);
        free(data);
    }
    fclose(f);
    assert_true(n >= 70);
    assert_int_equal(bad, 0);
}

/* EXIF orientation: info keeps the stored size and says what was applied. */
static void orientation_info(void **state) {
    img_rgb im = {0};
    img_decode_info info;
    lv_err err;
    assert_int_equal(img_decode_file(asset("images/exif_orient_6.jpg"), NULL, &im, &info, &err),
                     LV_OK);
    assert_string_equal(info.format, "JPEG");
    assert_int_equal(info.orientation, 6);
    assert_int_equal(info.width, 300);
    assert_int_equal(info.height, 200);
    assert_int_equal(im.w, 200);
    assert_int_equal(im.h, 300);
    img_rgb_free(&im);
    img_rgb_free(&im); /* a freed (zeroed) image is a no-op */
    assert_null(im.rgb);
    /* orientation 1 and none both report 1 */
    assert_int_equal(img_decode_file(asset("images/exif_orient_1.jpg"), NULL, &im, &info, &err),
                     LV_OK);
    assert_int_equal(info.orientation, 1);
    img_rgb_free(&im);
    /* NULL info, err and limits are allowed */
    assert_int_equal(img_decode_file(asset("images/size_2x1.png"), NULL, &im, NULL, NULL), LV_OK);
    assert_int_equal(im.w, 2);
    img_rgb_free(&im);
}

/* ------------------------------------------------------------------------ */
/* Decompression bombs: refused from the header, before allocating           */
/* ------------------------------------------------------------------------ */

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8),
    p[3] = (uint8_t)v;
}

static void put_le32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16),
    p[3] = (uint8_t)(v >> 24);
}

/* Decodes a bomb and expects a fast LV_ERR_TOO_LARGE naming its size. */
static void expect_bomb(const uint8_t *d, size_t n, const char *size_text) {
    img_rgb im = {0};
    img_decode_info info;
    lv_err err;
    double t0 = lv_now_ms();
    lv_status st = decode(d, n, NULL, &im, &info, &err);
    double ms = lv_now_ms() - t0;
    if (st != LV_ERR_TOO_LARGE)
        fail_msg("%s bomb: got %s: %s", size_text, lv_status_str(st), err.msg);
    char want[128];
    snprintf(want, sizeof want, "image is %s pixels; the limit is 50 megapixels", size_text);
    if (!strstr(err.msg, want)) fail_msg("bomb message: %s", err.msg);
    assert_true(ms < 500); /* nothing proportional to the claimed size was done */
}

static uint8_t *dev_file(const char *name, size_t *n) {
    char rel[256];
    snprintf(rel, sizeof rel, "images/dev/%s", name);
    return read_all(asset(rel), n);
}

static void bombs(void **state) {
    size_t n;
    /* PNG: IHDR says 100000 x 100000 (CRC fixed up) */
    uint8_t *d = dev_file("png_rgba8.png", &n);
    put_be32(d + 16, 100000);
    put_be32(d + 20, 100000);
    put_be32(d + 29, (uint32_t)crc32(0, d + 12, 17));
    expect_bomb(d, n, "100000x100000");
    free(d);
    /* BMP: info header says 100000 x 100000 */
    d = dev_file("bmp_24.bmp", &n);
    put_le32(d + 18, 100000);
    put_le32(d + 22, 100000);
    expect_bomb(d, n, "100000x100000");
    free(d);
    /* GIF: the largest logical screen there is */
    d = dev_file("gif_p.gif", &n);
    d[6] = d[7] = d[8] = d[9] = 0xFF;
    expect_bomb(d, n, "65535x65535");
    free(d);
    /* JPEG: SOF0 says 65000 x 65000 */
    d = dev_file("jpeg_420.jpg", &n);
    size_t p = 2;
    while (p + 4 < n && !(d[p] == 0xFF && d[p + 1] == 0xC0))
        p += 2 + (size_t)(d[p + 2] << 8 | d[p + 3]);
    assert_true(p + 9 < n);
    d[p + 5] = d[p + 7] = 0xFD;
    d[p + 6] = d[p + 8] = 0xE8; /* 65000 */
    expect_bomb(d, n, "65000x65000");
    free(d);
    /* WebP: an animation whose VP8X canvas is 60000 x 60000 */
    d = dev_file("webp_anim.webp", &n);
    assert_memory_equal(d + 12, "VP8X", 4);
    uint32_t m = 60000 - 1;
    d[24] = d[27] = (uint8_t)m, d[25] = d[28] = (uint8_t)(m >> 8),
    d[26] = d[29] = (uint8_t)(m >> 16);
    expect_bomb(d, n, "60000x60000");
    /* ... and 100000 x 100000 (past libwebp's own area limit): still refused at once */
    m = 100000 - 1;
    d[24] = d[27] = (uint8_t)m, d[25] = d[28] = (uint8_t)(m >> 8),
    d[26] = d[29] = (uint8_t)(m >> 16);
    img_rgb im = {0};
    lv_err err;
    double t0 = lv_now_ms();
    assert_int_not_equal(decode(d, n, NULL, &im, NULL, &err), LV_OK);
    assert_true(lv_now_ms() - t0 < 500);
    free(d);
}

static void limits(void **state) {
    size_t n;
    uint8_t *d = dev_file("jpeg_420.jpg", &n); /* 17 x 13 */
    img_rgb im = {0};
    lv_err err;
    img_limits lim;
    img_limits_default(&lim);
    assert_int_equal(lim.max_encoded_bytes, IMG_DEFAULT_MAX_ENCODED_BYTES);
    assert_int_equal(lim.max_pixels, IMG_DEFAULT_MAX_PIXELS);
    lim.max_pixels = 17 * 13 - 1;
    assert_int_equal(decode(d, n, &lim, &im, NULL, &err), LV_ERR_TOO_LARGE);
    assert_non_null(strstr(err.msg, "17x13 pixels; the limit is 220 pixels"));
    lim.max_pixels = 17 * 13;
    assert_int_equal(decode(d, n, &lim, &im, NULL, &err), LV_OK);
    img_rgb_free(&im);
    lim.max_encoded_bytes = n - 1;
    assert_int_equal(decode(d, n, &lim, &im, NULL, &err), LV_ERR_TOO_LARGE);
    assert_non_null(strstr(err.msg, "the limit is"));
    /* the file API refuses before reading, and names the file */
    const char *path = asset("images/dev/jpeg_420.jpg");
    assert_int_equal(img_decode_file(path, &lim, &im, NULL, &err), LV_ERR_TOO_LARGE);
    assert_non_null(strstr(err.msg, path));
    assert_int_equal(img_decode_file("/nonexistent/x.png", NULL, &im, NULL, &err), LV_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/x.png"));
    assert_int_equal(img_decode_file(tu_env("LLAVA_TEST_ASSETS"), NULL, &im, NULL, &err),
                     LV_ERR_IO);
    free(d);
}

/* ------------------------------------------------------------------------ */
/* Hostile input: empty, garbage, truncated, corrupted, unsupported          */
/* ------------------------------------------------------------------------ */

static void empty_and_zero_size(void **state) {
    img_rgb im = {0};
    lv_err err;
    assert_int_equal(decode((const uint8_t *)"", 0, NULL, &im, NULL, &err), LV_ERR_FORMAT);
    assert_int_equal(img_decode(NULL, 0, NULL, &im, NULL, NULL), LV_ERR_FORMAT);
    size_t n;
    uint8_t *d = dev_file("bmp_24.bmp", &n); /* width 0 */
    put_le32(d + 18, 0);
    assert_int_equal(decode(d, n, NULL, &im, NULL, &err), LV_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "zero size"));
    free(d);
    d = dev_file("gif_p.gif", &n); /* a 0 x 0 screen and frame */
    memset(d + 6, 0, 4);
    size_t p = 13 + (d[10] & 0x80 ? 3u << ((d[10] & 7) + 1) : 0);
    while (p < n && d[p] != ',') p++;
    assert_true(p + 9 < n);
    memset(d + p + 5, 0, 4);
    assert_int_equal(decode(d, n, NULL, &im, NULL, &err), LV_ERR_FORMAT);
    free(d);
    d = dev_file("png_rgb8_trns.png", &n); /* width 0: libpng refuses the IHDR */
    put_be32(d + 16, 0);
    put_be32(d + 29, (uint32_t)crc32(0, d + 12, 17));
    assert_int_equal(decode(d, n, NULL, &im, NULL, &err), LV_ERR_FORMAT);
    free(d);
}

static void unsupported_formats(void **state) {
    static const struct {
        const char *bytes;
        size_t len;
        const char *name;
    } tab[] = {
        {"II*\0\x08\0\0\0\0\0\0\0", 12, "TIFF"},
        {"MM\0*\0\0\0\x08\0\0\0\0", 12, "TIFF"},
        {"\0\0\0\x18"
         "ftypheic\0\0\0\0mif1heic",
         24, "HEIC"},
        {"\0\0\0\x1c"
         "ftypmif1\0\0\0\0mif1heixmiaf",
         28, "HEIC"},
        {"\0\0\0\x1c"
         "ftypavif\0\0\0\0avifmif1miaf",
         28, "AVIF"},
        {"<svg xmlns=\"http://www.w3.org/2000/svg\"/>", 41, "SVG"},
        {"\xEF\xBB\xBF<?xml version=\"1.0\"?>\n<svg/>", 32, "SVG"},
        {"%PDF-1.7\n", 9, "PDF"},
        {"8BPS\0\1", 6, "PSD"},
        {"\0\0\0\x0CjP  \r\n\x87\n", 12, "JPEG 2000"},
        {"\xFF\x0A\xFF\x07", 4, "JPEG XL"},
        {"qoif\0\0\0\1", 8, "QOI"},
        {"<!DOCTYPE html><html>", 21, "HTML"},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        img_rgb im = {0};
        lv_err err;
        lv_status st = decode((const uint8_t *)tab[i].bytes, tab[i].len, NULL, &im, NULL, &err);
        if (st != LV_ERR_UNSUPPORTED || !strstr(err.msg, tab[i].name) ||
            !strstr(err.msg, "not supported"))
            fail_msg("%s: %s %s", tab[i].name, lv_status_str(st), err.msg);
    }
    img_rgb im = {0};
    lv_err err;
    assert_int_equal(decode((const uint8_t *)"hello world", 11, NULL, &im, NULL, &err),
                     LV_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "unrecognised image format"));
}

/* Random bytes, bare and behind each supported magic: never a crash. */
static void garbage(void **state) {
    static const char *magic[] = {
        "",   "\xFF\xD8\xFF",         "\x89PNG\r\n\x1A\n",    "GIF89a",
        "BM", "RIFF\0\0\0\0WEBPVP8 ", "RIFF\0\0\0\0WEBPVP8L", "RIFF\0\0\0\0WEBPVP8X"};
    static const size_t mlen[] = {0, 3, 8, 6, 2, 16, 16, 16};
    uint32_t seed = 0x1234567u;
    uint8_t buf[4096];
    for (int round = 0; round < 400; round++) {
        int which = round % 8;
        size_t n = 1 + xorshift(&seed) % sizeof buf;
        for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)xorshift(&seed);
        if (n > mlen[which]) memcpy(buf, magic[which], mlen[which]);
        img_rgb im = {0};
        lv_err err;
        lv_status st = decode(buf, n, NULL, &im, NULL, &err);
        img_rgb_free(&im);
        (void)st; /* any status; decode() checked the failure contract */
    }
}

/* Files of every format cut short: a failure (or, where Pillow would still
 * decode, success), never a crash or a leak. */
static const char *sweep_files[] = {
    "images/dev/jpeg_420.jpg",
    "images/dev/jpeg_progressive.jpg",
    "images/dev/jpeg_cmyk.jpg",
    "images/dev/png_rgba16.png",
    "images/dev/png_adam7_pal4.png",
    "images/dev/png_exif3_after_idat.png",
    "images/dev/webp_lossy.webp",
    "images/dev/webp_anim.webp",
    "images/dev/webp_lossless_rgba.webp",
    "images/dev/gif_interlaced.gif",
    "images/dev/gif_offset_trns.gif",
    "images/dev/bmp_rle8.bmp",
    "images/dev/bmp_4bit.bmp",
    "images/dev/bmp_32_v5_bgra.bmp",
    "images/p_trns_tiny.png",
    "images/anim_tiny.gif",
};

static void truncated(void **state) {
    for (size_t f = 0; f < sizeof sweep_files / sizeof *sweep_files; f++) {
        size_t n;
        uint8_t *d = read_all(asset(sweep_files[f]), &n);
        for (size_t cut = 1; cut < n; cut += 1 + cut / 16) {
            img_rgb im = {0};
            lv_err err;
            lv_status st = decode(d, cut, NULL, &im, NULL, &err);
            /* shorter than the magic: not recognisable as anything */
            if (st != LV_OK && st != LV_ERR_FORMAT && !(st == LV_ERR_UNSUPPORTED && cut < 16))
                fail_msg("%s cut at %zu: %s (%s)", sweep_files[f], cut, lv_status_str(st), err.msg);
            img_rgb_free(&im);
        }
        /* half a file is never enough (but half an animated GIF holds its first frame) */
        img_rgb im = {0};
        lv_err err;
        bool anim_gif = strstr(sweep_files[f], "anim_tiny.gif") != NULL;
        if ((decode(d, n / 2, NULL, &im, NULL, &err) == LV_ERR_FORMAT) == anim_gif)
            fail_msg("%s cut in half: %s", sweep_files[f], err.msg);
        img_rgb_free(&im);
        free(d);
    }
    /* the messages say what happened */
    size_t n;
    uint8_t *d = dev_file("jpeg_progressive.jpg", &n);
    img_rgb im = {0};
    lv_err err;
    assert_int_equal(decode(d, n - 40, NULL, &im, NULL, &err), LV_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "truncated JPEG"));
    free(d);
    d = dev_file("jpeg_420.jpg", &n);
    assert_int_equal(decode(d, n - 2, NULL, &im, NULL, &err), LV_ERR_FORMAT); /* no EOI */
    assert_non_null(strstr(err.msg, "truncated JPEG"));
    free(d);
}

/* Every byte of small files flipped in turn, and random multi-byte damage. */
static void corrupted(void **state) {
    uint32_t seed = 99;
    for (size_t f = 0; f < sizeof sweep_files / sizeof *sweep_files; f++) {
        size_t n;
        uint8_t *d = read_all(asset(sweep_files[f]), &n);
        uint8_t *c = malloc(n);
        assert_non_null(c);
        size_t step = n > 1500 ? n / 1500 : 1;
        for (size_t i = 0; i < n; i += step) {
            memcpy(c, d, n);
            c[i] ^= (uint8_t)(1 + xorshift(&seed) % 255);
            img_rgb im = {0};
            lv_err err;
            decode(c, n, NULL, &im, NULL, &err);
            img_rgb_free(&im);
        }
        for (int r = 0; r < 50; r++) {
            memcpy(c, d, n);
            for (int k = 0; k < 8; k++) c[xorshift(&seed) % n] = (uint8_t)xorshift(&seed);
            img_rgb im = {0};
            lv_err err;
            decode(c, n, NULL, &im, NULL, &err);
            img_rgb_free(&im);
        }
        free(c);
        free(d);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(golden_rgb),
        cmocka_unit_test(dev_images),
        cmocka_unit_test(orientation_info),
        cmocka_unit_test(bombs),
        cmocka_unit_test(limits),
        cmocka_unit_test(empty_and_zero_size),
        cmocka_unit_test(unsupported_formats),
        cmocka_unit_test(garbage),
        cmocka_unit_test(truncated),
        cmocka_unit_test(corrupted),
    };
    return cmocka_run_group_tests_name("image_decode", tests, NULL, NULL);
}
