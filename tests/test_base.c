/* test_base.c - status strings, error buffers, file helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/common.h"
#include "base/file.h"
#include "base/half.h"
#include "base/log.h"
#include "base/sysmem.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void status_strings(void **state) {
    assert_string_equal(lv_status_str(LV_OK), "ok");
    assert_string_equal(lv_status_str(LV_ERR_FORMAT), "malformed input");
    assert_string_equal(lv_status_str((lv_status)999), "unknown status");
}

static void fail_formats_and_prefixes(void **state) {
    lv_err err;
    assert_int_equal(lv_fail(&err, LV_ERR_ARG, "bad %d", 7), LV_ERR_ARG);
    assert_string_equal(err.msg, "bad 7");
    lv_err_prefix(&err, "file %s", "x");
    assert_string_equal(err.msg, "file x: bad 7");
    assert_int_equal(lv_fail(NULL, LV_ERR_IO, "ignored"), LV_ERR_IO); /* NULL err is allowed */
}

static void read_file_limits(void **state) {
    char path[] = "/tmp/lv_test_base_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "wb");
    fputs("hello", f);
    fclose(f);
    char *buf;
    size_t len;
    lv_err err;
    assert_int_equal(lv_read_file(path, 100, &buf, &len, &err), LV_OK);
    assert_int_equal(len, 5);
    assert_string_equal(buf, "hello");
    free(buf);
    assert_int_equal(lv_read_file(path, 4, &buf, &len, &err), LV_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "limit"));
    lv_map map;
    assert_int_equal(lv_map_file(path, &map, &err), LV_OK);
    assert_int_equal(map.size, 5);
    assert_memory_equal(map.data, "hello", 5);
    lv_unmap(&map);
    unlink(path);
    assert_int_equal(lv_read_file(path, 100, &buf, &len, &err), LV_ERR_IO);
    assert_non_null(strstr(err.msg, path));
    assert_int_equal(lv_map_file("/", &map, &err), LV_ERR_IO);
}

static void path_join(void **state) {
    char out[16];
    assert_int_equal(lv_path_join(out, sizeof out, "a", "b", NULL), LV_OK);
    assert_string_equal(out, "a/b");
    assert_int_equal(lv_path_join(out, sizeof out, "a/", "b", NULL), LV_OK);
    assert_string_equal(out, "a/b");
    assert_int_equal(lv_path_join(out, sizeof out, "aaaaaaaaaa", "bbbbbbbbbb", NULL), LV_ERR_ARG);
}

/* The edges of the narrowing casts (the finite values are covered exhaustively
 * in test_gguf, test_quant and test_quantize_tool, the widening in test_backend). */
static void half_edges(void **state) {
    assert_int_equal(lv_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(lv_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(lv_f32_to_f16(-1e9f), 0xfc00);
    assert_int_equal(lv_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(lv_f32_to_f16(-1e-8f), 0x8000);
    assert_int_equal(lv_f32_to_f16(NAN) & 0x7fff, 0x7e00);
    assert_int_equal(lv_f32_to_bf16(NAN) & 0x7fff, 0x7fc0);
    assert_int_equal(lv_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(lv_f32_to_bf16(3.4e38f), 0x7f80); /* rounds past the largest bf16 */
    /* Every quiet NaN half survives the trip through float32, payload and sign. */
    for (uint32_t h = 0x7e00; h < 0x10000; h++) {
        if ((h & 0x7e00) != 0x7e00) continue;
        assert_int_equal(lv_f32_to_f16(lv_f16_to_f32((uint16_t)h)), h);
    }
    for (uint32_t h = 0; h < 0x10000; h++) /* bf16: every pattern but signalling NaNs */
        if ((h & 0x7fc0) != 0x7f80 || (h & 0x7f) == 0)
            assert_int_equal(lv_f32_to_bf16(lv_bf16_to_f32((uint16_t)h)), h);
}

/* Sizes as people write them; anything else names the text. */
static void parse_sizes(void **state) {
    (void)state;
    static const struct {
        const char *text;
        int64_t bytes;
    } ok[] = {{"0", 0},
              {"1073741824", 1073741824},
              {"64k", 64 << 10},
              {"512M", 512 << 20},
              {"512MiB", 512 << 20},
              {"512mb", 512 << 20},
              {"1.5G", (int64_t)3 << 29},
              {"2GB", (int64_t)2 << 30},
              {"1T", (int64_t)1 << 40}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t v = -1;
        lv_err err = {{0}};
        assert_int_equal(lv_parse_bytes(ok[i].text, &v, &err), LV_OK);
        assert_int_equal(v, ok[i].bytes);
    }
    static const char *const bad[] = {"", "-1", "12Q", "G", "1e400", " 5", "5 M", "nan", "9e30"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v = 7;
        lv_err err = {{0}};
        assert_int_equal(lv_parse_bytes(bad[i], &v, &err), LV_ERR_ARG);
        assert_int_equal(v, 7);
        assert_non_null(strstr(err.msg, "is not a size"));
    }
    /* this process's figures read on Linux */
    assert_true(lv_rss_bytes() > 0);
    assert_true(lv_mem_available_bytes() > 0);
    lv_allocator_trim();
}

static void log_configure(void **state) {
    assert_null(lv_log_configure("debug"));
    assert_string_equal(lv_log_configure("loud"), "loud"); /* unknown: named back */
    setenv("LOG_LEVEL", "WARN", 1);
    assert_null(lv_log_configure(NULL)); /* from the environment, case-insensitive */
    setenv("LOG_LEVEL", "chatty", 1);
    assert_string_equal(lv_log_configure(NULL), "chatty");
    unsetenv("LOG_LEVEL");
    assert_null(lv_log_configure(NULL)); /* neither: the level stays */
    lv_log_set_level(LV_LOG_INFO);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(status_strings),   cmocka_unit_test(fail_formats_and_prefixes),
        cmocka_unit_test(read_file_limits), cmocka_unit_test(path_join),
        cmocka_unit_test(half_edges),       cmocka_unit_test(log_configure),
        cmocka_unit_test(parse_sizes),
    };
    return cmocka_run_group_tests_name("base", tests, NULL, NULL);
}
