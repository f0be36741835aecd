/* test_model_dir.c - opening a whole model directory: config.json plus the
 * optional JSON files, the tokenizer.json path and (on request) the weights,
 * and the errors that name the file at fault. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "io/model_dir.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_root[1024]; /* $LLAVA_TMP/model_dir-<pid> */
static char g_config[1200];

/* A fresh, empty directory g_root/<tag>; returns a static buffer. */
static const char *scratch(const char *tag) {
    static char dir[1100];
    snprintf(dir, sizeof dir, "%s/%s", g_root, tag);
    char cmd[2300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    if (system(cmd) != 0) fail_msg("cannot create %s", dir);
    return dir;
}

static void put(const char *dir, const char *name, const void *data, size_t len) {
    char path[1300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot write %s", path);
    if (len) assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void put_str(const char *dir, const char *name, const char *text) {
    put(dir, name, text, strlen(text));
}

/* The real llava-v1.6 config.json, copied from tests/data. */
static void put_config(const char *dir) {
    FILE *f = fopen(g_config, "rb");
    if (!f) fail_msg("cannot read %s", g_config);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    put(dir, "config.json", buf, n);
}

/* A one-tensor model.safetensors holding image_newline under its 5.x name. */
static void put_weights(const char *dir) {
    static const char header[] =
        "{\"model.image_newline\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}";
    uint8_t buf[8 + sizeof header - 1 + 8];
    uint64_t hl = sizeof header - 1;
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    const float v[2] = {0.5f, -1.0f};
    memcpy(buf + 8 + hl, v, sizeof v);
    put(dir, "model.safetensors", buf, sizeof buf);
}

static void full_directory(void **state) {
    const char *dir = scratch("full");
    put_config(dir);
    put_weights(dir);
    put_str(dir, "tokenizer.json", "{}"); /* only its path is recorded here */
    put_str(dir, "preprocessor_config.json",
            "{\"image_processor_type\": \"LlavaNextImageProcessor\", \"size\": {\"shortest_edge\": "
            "336}, \"crop_size\": {\"height\": 336, \"width\": 336}}");
    put_str(dir, "tokenizer_config.json",
            "{\"add_bos_token\": true, \"add_eos_token\": false, \"bos_token\": \"<s>\","
            " \"chat_template\": \"tok\"}");
    put_str(dir, "chat_template.json", "{\"chat_template\": \"proc\"}");
    put_str(dir, "generation_config.json", "{\"eos_token_id\": 2, \"pad_token_id\": 32001}");

    lv_model_dir md;
    lv_err err;
    assert_int_equal(mdir_open(dir, MDIR_WEIGHTS, &md, &err), LV_OK);
    assert_string_equal(md.dir, dir);
    assert_string_equal(md.config.model_type, "llava_next");
    assert_int_equal(md.config.text.dim, 4096);
    assert_true(md.has_preproc);
    assert_int_equal(md.preproc.shortest_edge, 336);
    assert_true(md.has_tokenizer_config);
    assert_true(md.tokenizer_config.has_add_bos_token);
    assert_string_equal(md.tokenizer_config.bos_token, "<s>");
    assert_string_equal(md.tokenizer_config.chat_template, "tok");
    assert_string_equal(md.tokenizer_config.processor_chat_template, "proc");
    assert_true(md.has_generation_config);
    assert_int_equal(md.generation_config.pad_token_id, 32001);
    assert_non_null(md.tokenizer_path);
    assert_non_null(strstr(md.tokenizer_path, "tokenizer.json"));
    assert_non_null(md.weights);
    const st_tensor *t = st_find(md.weights, "image_newline");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 2);
    mdir_close(&md);
    mdir_close(&md); /* zeroed: no-op */

    /* Without MDIR_WEIGHTS the weights stay closed. */
    assert_int_equal(mdir_open(dir, 0, &md, &err), LV_OK);
    assert_null(md.weights);
    mdir_close(&md);
}

static void optional_files_default(void **state) {
    const char *dir = scratch("minimal");
    put_config(dir);
    put_str(dir, "tokenizer.json", "{}");
    lv_model_dir md;
    lv_err err;
    assert_int_equal(mdir_open(dir, 0, &md, &err), LV_OK);
    assert_false(md.has_preproc);
    assert_int_equal(md.preproc.kind, LV_IMGPROC_LLAVA_NEXT); /* from model_type llava_next */
    assert_true(md.preproc.do_pad);
    assert_false(md.has_tokenizer_config);
    assert_true(md.tokenizer_config.add_bos_token);
    assert_false(md.tokenizer_config.has_add_bos_token);
    assert_null(md.tokenizer_config.chat_template);
    assert_false(md.has_generation_config);
    assert_int_equal(md.generation_config.top_k, 50);
    mdir_close(&md);

    /* tokenizer.json is required unless the caller says otherwise. */
    dir = scratch("no_tokenizer");
    put_config(dir);
    assert_int_equal(mdir_open(dir, 0, &md, &err), LV_ERR_IO);
    assert_non_null(strstr(err.msg, "tokenizer.json"));
    assert_null(md.dir); /* zeroed on failure */
    assert_int_equal(mdir_open(dir, MDIR_NO_TOKENIZER, &md, &err), LV_OK);
    assert_null(md.tokenizer_path);
    mdir_close(&md);
}

/* mdir_open fails with st and a message containing every needle. */
static void expect_fail(const char *dir, unsigned flags, lv_status st, ...) {
    lv_model_dir md;
    lv_err err = {{0}};
    lv_status got = mdir_open(dir, flags, &md, &err);
    if (got != st)
        fail_msg("%s: expected %s, got %s (%s)", dir, lv_status_str(st), lv_status_str(got),
                 err.msg);
    assert_null(md.weights);
    va_list ap;
    va_start(ap, st);
    for (const char *needle; (needle = va_arg(ap, const char *)) != NULL;)
        if (!strstr(err.msg, needle)) fail_msg("message \"%s\" lacks \"%s\"", err.msg, needle);
    va_end(ap);
}

static void errors_name_the_file(void **state) {
    const char *dir = scratch("empty");
    expect_fail(dir, 0, LV_ERR_IO, "config.json", NULL);

    char path[1300];
    snprintf(path, sizeof path, "%s/not-there", g_root);
    expect_fail(path, 0, LV_ERR_IO, "not-there", "not a model directory", NULL);

    dir = scratch("bad_config");
    put_str(dir, "config.json", "{\"model_type\": \"llava_next\", ");
    put_str(dir, "tokenizer.json", "{}");
    expect_fail(dir, 0, LV_ERR_FORMAT, "config.json", "invalid JSON", NULL);
    put_str(dir, "config.json", "{\"model_type\": \"idefics2\"}");
    expect_fail(dir, 0, LV_ERR_UNSUPPORTED, "config.json", "idefics2", NULL);

    dir = scratch("bad_optional");
    put_config(dir);
    put_str(dir, "tokenizer.json", "{}");
    put_str(dir, "preprocessor_config.json", "{\"do_resize\": 3}");
    expect_fail(dir, 0, LV_ERR_FORMAT, "preprocessor_config.json", "do_resize", NULL);
    put_str(dir, "preprocessor_config.json", "{}");
    put_str(dir, "tokenizer_config.json", "{\"bos_token\": 1}");
    expect_fail(dir, 0, LV_ERR_FORMAT, "tokenizer_config.json", "bos_token", NULL);
    put_str(dir, "tokenizer_config.json", "{}");
    put_str(dir, "chat_template.json", "[]");
    expect_fail(dir, 0, LV_ERR_FORMAT, "chat_template.json", NULL);
    put_str(dir, "chat_template.json", "{\"chat_template\": \"x\"}");
    put_str(dir, "generation_config.json", "{\"top_p\": 2}");
    expect_fail(dir, 0, LV_ERR_FORMAT, "generation_config.json", "top_p", NULL);
    put_str(dir, "generation_config.json", "{}");

    /* Weights: missing, or malformed, only matter with MDIR_WEIGHTS. */
    lv_model_dir md;
    lv_err err;
    assert_int_equal(mdir_open(dir, 0, &md, &err), LV_OK);
    mdir_close(&md);
    expect_fail(dir, MDIR_WEIGHTS, LV_ERR_IO, "safetensors", NULL);
    put(dir, "model.safetensors", "\x02\0\0\0\0\0\0\0{]", 10);
    expect_fail(dir, MDIR_WEIGHTS, LV_ERR_FORMAT, "model.safetensors", "not valid JSON", NULL);
}

int main(void) {
    const char *tmp = getenv("LLAVA_TMP"), *data = getenv("LLAVA_TEST_DATA");
    snprintf(g_root, sizeof g_root, "%s/model_dir-%d", tmp && *tmp ? tmp : "/tmp", (int)getpid());
    snprintf(g_config, sizeof g_config, "%s/configs/llava-v1.6-mistral-7b-hf.json",
             data && *data ? data : "tests/data");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_directory),
        cmocka_unit_test(optional_files_default),
        cmocka_unit_test(errors_name_the_file),
    };
    int rc = cmocka_run_group_tests_name("model_dir", tests, NULL, NULL);
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
    if (rc == 0 && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_root);
    return rc;
}
