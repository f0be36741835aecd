/* test_safetensors.c - dtype table, tensor-name canonicalisation and the
 * safetensors reader: files written here byte by byte, read back, and every
 * malformed variant the reader must refuse (with the file and the problem
 * named in the message). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "io/dtype.h"
#include "io/safetensors.h"
#include "io/tensor_names.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- scratch files ------------------------------------------------------ */

static char g_root[1024]; /* $LLAVA_TMP/safetensors-<pid> */

static void mkdir_p(const char *path) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        mkdir(buf, 0755);
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) fail_msg("mkdir %s: %s", buf, strerror(errno));
}

/* A fresh directory g_root/<tag>; returns a static buffer. */
static const char *scratch(const char *tag) {
    static char dir[1100];
    snprintf(dir, sizeof dir, "%s/%s", g_root, tag);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fail_msg("cannot clear %s", dir);
    mkdir_p(dir);
    return dir;
}

static void write_bytes(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot write %s", path);
    if (len) assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* Writes a safetensors file: 8-byte LE header length, header, data. */
static void write_st(const char *path, const char *header, const void *data, size_t len) {
    size_t hl = strlen(header);
    uint8_t *buf = malloc(8 + hl + len + 1);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    if (len) memcpy(buf + 8 + hl, data, len);
    write_bytes(path, buf, 8 + hl + len);
    free(buf);
}

/* Builds header + data from a list of tensors, offsets in list order. */
typedef struct {
    const char *name, *dtype, *shape; /* shape as JSON, e.g. "[2, 3]" */
    const void *data;
    size_t nbytes;
} tdesc;

static void write_tensors(const char *path, const tdesc *t, size_t n, const char *metadata) {
    char header[8192];
    size_t at = 0, off = 0;
    at += (size_t)snprintf(header + at, sizeof header - at, "{");
    if (metadata)
        at += (size_t)snprintf(header + at, sizeof header - at, "\"__metadata__\": %s%s", metadata,
                               n ? ", " : "");
    uint8_t *data = malloc(1 << 16);
    for (size_t i = 0; i < n; i++) {
        at += (size_t)snprintf(
            header + at, sizeof header - at,
            "%s\"%s\": {\"dtype\": \"%s\", \"shape\": %s, \"data_offsets\": [%zu, "
            "%zu]}",
            i ? ", " : "", t[i].name, t[i].dtype, t[i].shape, off, off + t[i].nbytes);
        if (t[i].nbytes) memcpy(data + off, t[i].data, t[i].nbytes);
        off += t[i].nbytes;
    }
    snprintf(header + at, sizeof header - at, "}");
    write_st(path, header, data, off);
    free(data);
}

static void join(char *out, size_t cap, const char *dir, const char *name) {
    snprintf(out, cap, "%s/%s", dir, name);
}

/* ---- dtype + names ------------------------------------------------------ */

static void dtype_table(void **state) {
    static const struct {
        const char *name;
        size_t size;
    } all[] = {{"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
               {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
               {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8}};
    assert_int_equal(LV_DTYPE_COUNT, 15);
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        lv_dtype dt;
        assert_true(dtype_from_name(all[i].name, &dt));
        assert_string_equal(dtype_name(dt), all[i].name);
        assert_int_equal(dtype_size(dt), all[i].size);
    }
    lv_dtype dt = LV_DTYPE_F32;
    assert_false(dtype_from_name("f16", &dt)); /* case-sensitive */
    assert_false(dtype_from_name("F4", &dt));
    assert_int_equal(dt, LV_DTYPE_F32);
    assert_string_equal(dtype_name((lv_dtype)99), "?");
    assert_int_equal(dtype_size((lv_dtype)99), 0);
}

static void names_canonical(void **state) {
    static const char *const cases[][2] = {
        {"model.language_model.layers.0.self_attn.q_proj.weight",
         "language_model.model.layers.0.self_attn.q_proj.weight"},
        {"model.language_model.embed_tokens.weight", "language_model.model.embed_tokens.weight"},
        {"lm_head.weight", "language_model.lm_head.weight"},
        {"model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight",
         "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"},
        {"model.multi_modal_projector.linear_1.weight", "multi_modal_projector.linear_1.weight"},
        {"model.image_newline", "image_newline"},
        /* canonical names are left alone */
        {"language_model.model.norm.weight", "language_model.model.norm.weight"},
        {"language_model.lm_head.weight", "language_model.lm_head.weight"},
        {"vision_tower.vision_model.post_layernorm.bias",
         "vision_tower.vision_model.post_layernorm.bias"},
        {"image_newline", "image_newline"},
        {"something.else", "something.else"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[128];
        size_t n = tn_canonical(cases[i][0], out, sizeof out);
        assert_string_equal(out, cases[i][1]);
        assert_int_equal(n, strlen(cases[i][1]));
        assert_int_equal(tn_canonical_len(cases[i][0]), n);
    }
    /* Truncation is snprintf-like. */
    char small[10];
    size_t n = tn_canonical("lm_head.weight", small, sizeof small);
    assert_int_equal(n, strlen("language_model.lm_head.weight"));
    assert_string_equal(small, "language_");
    assert_int_equal(tn_canonical("lm_head.weight", NULL, 0), n);
}

/* ---- reading back ------------------------------------------------------- */

static void read_back_dtypes(void **state) {
    const char *dir = scratch("dtypes");
    char path[1200];
    join(path, sizeof path, dir, "model.safetensors");
    const float f32[6] = {1, -2, 3.5f, 4, 5, 6};
    const uint16_t f16[4] = {0x3c00, 0xc000, 0x7bff, 0x0001};
    const uint16_t bf16[4] = {0x3f80, 0xbf80, 0x4049, 0x0000};
    const uint32_t u32[3] = {0xdeadbeef, 7, 0};
    const int64_t i64[2] = {-1, 576};
    const float scalar = 42.0f;
    const tdesc t[] = {
        {"a.f32", "F32", "[2, 3]", f32, sizeof f32},
        {"b.f16", "F16", "[4]", f16, sizeof f16},
        {"c.bf16", "BF16", "[2, 2]", bf16, sizeof bf16},
        {"d.u32", "U32", "[3]", u32, sizeof u32},
        {"e.i64", "I64", "[1, 2]", i64, sizeof i64},
        {"f.scalar", "F32", "[]", &scalar, sizeof scalar},
        {"g.empty", "F32", "[0, 4]", NULL, 0},
        {"h.bytes", "U8", "[1, 1, 1, 1, 1, 1, 1, 3]", "xyz", 3},
    };
    write_tensors(path, t, sizeof t / sizeof t[0], "{\"format\": \"pt\"}");

    st_set *s;
    lv_err err = {{0}};
    assert_int_equal(st_open(path, &s, &err), LV_OK);
    assert_int_equal(st_count(s), 8);
    assert_int_equal(st_file_count(s), 1);
    const st_tensor *x = st_find(s, "a.f32");
    assert_non_null(x);
    assert_int_equal(x->dtype, LV_DTYPE_F32);
    assert_int_equal(x->n_dims, 2);
    assert_int_equal(x->shape[0], 2);
    assert_int_equal(x->shape[1], 3);
    assert_int_equal(x->n_elems, 6);
    assert_int_equal(x->nbytes, sizeof f32);
    assert_memory_equal(x->data, f32, sizeof f32);
    assert_string_equal(x->file_name, path);
    assert_string_equal(x->orig_name, "a.f32");

    x = st_find(s, "b.f16");
    assert_int_equal(x->dtype, LV_DTYPE_F16);
    assert_int_equal(x->n_dims, 1);
    assert_int_equal(x->shape[0], 4);
    assert_memory_equal(x->data, f16, sizeof f16);

    x = st_find(s, "c.bf16");
    assert_int_equal(x->dtype, LV_DTYPE_BF16);
    float one; /* bf16 0x3f80 is 1.0f: the top half of an f32 */
    uint16_t h;
    memcpy(&h, x->data, 2); /* data may be unaligned: memcpy, as the header says */
    uint32_t bits = (uint32_t)h << 16;
    memcpy(&one, &bits, 4);
    assert_true(one == 1.0f);

    x = st_find(s, "d.u32");
    assert_int_equal(x->dtype, LV_DTYPE_U32);
    assert_memory_equal(x->data, u32, sizeof u32);
    x = st_find(s, "e.i64");
    assert_int_equal(x->dtype, LV_DTYPE_I64);
    assert_memory_equal(x->data, i64, sizeof i64);

    x = st_find(s, "f.scalar");
    assert_int_equal(x->n_dims, 0);
    assert_int_equal(x->n_elems, 1);
    assert_memory_equal(x->data, &scalar, 4);

    x = st_find(s, "g.empty");
    assert_int_equal(x->n_dims, 2);
    assert_int_equal(x->n_elems, 0);
    assert_int_equal(x->nbytes, 0);

    x = st_find(s, "h.bytes");
    assert_int_equal(x->n_dims, 8);
    assert_int_equal(x->shape[7], 3);
    assert_memory_equal(x->data, "xyz", 3);

    /* st_at walks the file in data order; __metadata__ is not a tensor. */
    assert_string_equal(st_at(s, 0)->name, "a.f32");
    assert_string_equal(st_at(s, 7)->name, "h.bytes");
    assert_null(st_at(s, 8));
    assert_null(st_find(s, "__metadata__"));
    assert_null(st_find(s, "missing"));
    st_close(s);
    st_close(NULL);
}

static void new_names_are_canonicalised(void **state) {
    const char *dir = scratch("names");
    char path[1200];
    join(path, sizeof path, dir, "model.safetensors");
    const uint16_t v[2] = {1, 2};
    const tdesc t[] = {
        {"model.language_model.layers.0.self_attn.q_proj.weight", "F16", "[2]", v, 4},
        {"lm_head.weight", "F16", "[2]", v, 4},
        {"model.vision_tower.vision_model.post_layernorm.weight", "F16", "[2]", v, 4},
        {"model.multi_modal_projector.linear_1.bias", "F16", "[2]", v, 4},
        {"model.image_newline", "F16", "[2]", v, 4},
        {"vision_tower.vision_model.embeddings.class_embedding", "F16", "[2]", v, 4},
    };
    write_tensors(path, t, 6, NULL);
    st_set *s;
    lv_err err;
    assert_int_equal(st_open(path, &s, &err), LV_OK);
    const st_tensor *x = st_find(s, "language_model.model.layers.0.self_attn.q_proj.weight");
    assert_non_null(x);
    assert_string_equal(x->orig_name, "model.language_model.layers.0.self_attn.q_proj.weight");
    assert_non_null(st_find(s, "language_model.lm_head.weight"));
    assert_non_null(st_find(s, "vision_tower.vision_model.post_layernorm.weight"));
    assert_non_null(st_find(s, "multi_modal_projector.linear_1.bias"));
    assert_non_null(st_find(s, "image_newline"));
    x = st_find(s, "vision_tower.vision_model.embeddings.class_embedding");
    assert_string_equal(x->orig_name, x->name);
    assert_null(st_find(s, "lm_head.weight")); /* only canonical names are found */
    assert_null(st_find(s, "model.image_newline"));
    st_close(s);
}

/* Two shards + index, opened through the index and through the directory. */
static void write_two_shards(const char *dir) {
    char path[1200];
    const float a[2] = {1, 2}, b[3] = {3, 4, 5};
    const tdesc s1[] = {{"model.language_model.norm.weight", "F32", "[2]", a, sizeof a}};
    const tdesc s2[] = {{"lm_head.weight", "F32", "[3]", b, sizeof b},
                        {"image_newline", "F32", "[2]", a, sizeof a}};
    join(path, sizeof path, dir, "model-00001-of-00002.safetensors");
    write_tensors(path, s1, 1, "{\"format\": \"pt\"}");
    join(path, sizeof path, dir, "model-00002-of-00002.safetensors");
    write_tensors(path, s2, 2, NULL);
}

static void write_index(const char *dir, const char *json) {
    char path[1200];
    join(path, sizeof path, dir, "model.safetensors.index.json");
    write_bytes(path, json, strlen(json));
}

static const char good_index[] =
    "{\"metadata\": {\"total_size\": 28}, \"weight_map\": {"
    "\"model.language_model.norm.weight\": \"model-00001-of-00002.safetensors\","
    "\"lm_head.weight\": \"model-00002-of-00002.safetensors\","
    "\"image_newline\": \"model-00002-of-00002.safetensors\"}}";

static void sharded(void **state) {
    const char *dir = scratch("sharded");
    write_two_shards(dir);
    write_index(dir, good_index);
    char index[1200];
    join(index, sizeof index, dir, "model.safetensors.index.json");
    for (int via_dir = 0; via_dir < 2; via_dir++) {
        st_set *s;
        lv_err err;
        assert_int_equal(st_open(via_dir ? dir : index, &s, &err), LV_OK);
        assert_int_equal(st_count(s), 3);
        assert_int_equal(st_file_count(s), 2);
        const st_tensor *n = st_find(s, "language_model.model.norm.weight");
        const st_tensor *h = st_find(s, "language_model.lm_head.weight");
        assert_non_null(n);
        assert_non_null(h);
        assert_non_null(strstr(n->file_name, "model-00001-of-00002.safetensors"));
        assert_non_null(strstr(h->file_name, "model-00002-of-00002.safetensors"));
        const float want[3] = {3, 4, 5};
        assert_memory_equal(h->data, want, sizeof want);
        st_close(s);
    }
}

/* Expects st_open(path) to fail with st and a message containing every
 * needle (NULL-terminated list). */
static void expect_fail(const char *path, lv_status st, ...) {
    st_set *s = (st_set *)0x1;
    lv_err err = {{0}};
    lv_status got = st_open(path, &s, &err);
    if (got != st)
        fail_msg("%s: expected %s, got %s (%s)", path, lv_status_str(st), lv_status_str(got),
                 err.msg);
    assert_null(s);
    va_list ap;
    va_start(ap, st);
    for (const char *needle; (needle = va_arg(ap, const char *)) != NULL;)
        if (!strstr(err.msg, needle)) fail_msg("message \"%s\" lacks \"%s\"", err.msg, needle);
    va_end(ap);
}

static void sharded_errors(void **state) {
    const char *dir = scratch("sharded_errors");
    char index[1200], path[1200];
    join(index, sizeof index, dir, "model.safetensors.index.json");
    write_two_shards(dir);

    /* A missing shard: named, with one of its tensors. */
    write_index(dir, "{\"weight_map\": {\"lm_head.weight\": \"model-00002-of-00002.safetensors\","
                     "\"x.weight\": \"model-00003-of-00003.safetensors\"}}");
    expect_fail(dir, LV_ERR_IO, "model-00003-of-00003.safetensors", "x.weight", "missing", NULL);

    /* The index lists a tensor its shard lacks. */
    write_index(dir, "{\"weight_map\": {\"lm_head.weight\": \"model-00002-of-00002.safetensors\","
                     "\"ghost.weight\": \"model-00001-of-00002.safetensors\"}}");
    expect_fail(index, LV_ERR_FORMAT, "ghost.weight", "model-00001-of-00002.safetensors",
                "no such tensor", NULL);

    /* ... or places it in the wrong shard. */
    write_index(dir, "{\"weight_map\": {\"image_newline\": \"model-00001-of-00002.safetensors\","
                     "\"lm_head.weight\": \"model-00002-of-00002.safetensors\"}}");
    expect_fail(index, LV_ERR_FORMAT, "image_newline", "no such tensor", NULL);

    write_index(dir, "{\"weight_map\": [1, 2]}");
    expect_fail(index, LV_ERR_FORMAT, "model.safetensors.index.json", "weight_map", NULL);
    write_index(dir, "{\"metadata\": {}}");
    expect_fail(index, LV_ERR_FORMAT, "weight_map", NULL);
    write_index(dir, "{\"weight_map\": {\"a\": 3}}");
    expect_fail(index, LV_ERR_FORMAT, "weight_map[\"a\"]", "string", NULL);
    write_index(dir, "{\"weight_map\": {}}");
    expect_fail(index, LV_ERR_FORMAT, "empty", NULL);
    write_index(dir, "{\"weight_map\": {\"a\": \"../model.safetensors\"}}");
    expect_fail(index, LV_ERR_FORMAT, "../model.safetensors", NULL);
    write_index(dir, "{\"weight_map\": {\"a\": \"/etc/passwd\"}}");
    expect_fail(index, LV_ERR_FORMAT, "/etc/passwd", NULL);
    write_index(dir, "{\"weight_map\": {\"a\": \"x\"");
    expect_fail(index, LV_ERR_FORMAT, "model.safetensors.index.json", "not valid JSON", NULL);
    write_index(dir, "{\"weight_map\": {\"a\": \"x\", \"a\": \"y\"}}");
    expect_fail(index, LV_ERR_FORMAT, "duplicate", NULL);

    /* The same tensor in two shards (once under its new name). */
    const float a[2] = {1, 2};
    const tdesc dup[] = {{"language_model.lm_head.weight", "F32", "[2]", a, sizeof a}};
    join(path, sizeof path, dir, "model-00001-of-00002.safetensors");
    write_tensors(path, dup, 1, NULL);
    write_index(dir, good_index);
    expect_fail(index, LV_ERR_FORMAT, "duplicate", "language_model.lm_head.weight",
                "lm_head.weight", NULL);

    join(path, sizeof path, dir, "nothere.index.json");
    expect_fail(path, LV_ERR_IO, "nothere.index.json", NULL);
}

static void directory_without_index(void **state) {
    const float a[2] = {1, 2};
    const tdesc t1[] = {{"a", "F32", "[2]", a, sizeof a}};
    const tdesc t2[] = {{"b", "F32", "[1]", a, 4}};
    char path[1200];

    /* model.safetensors wins over other files. */
    const char *dir = scratch("dir_model");
    join(path, sizeof path, dir, "model.safetensors");
    write_tensors(path, t1, 1, NULL);
    join(path, sizeof path, dir, "other.safetensors");
    write_tensors(path, t2, 1, NULL);
    st_set *s;
    lv_err err;
    assert_int_equal(st_open(dir, &s, &err), LV_OK);
    assert_int_equal(st_count(s), 1);
    assert_non_null(st_find(s, "a"));
    st_close(s);

    /* Several un-indexed files: all of them, in name order (as mlx-vlm's glob). */
    dir = scratch("dir_glob");
    join(path, sizeof path, dir, "weights-b.safetensors");
    write_tensors(path, t2, 1, NULL);
    join(path, sizeof path, dir, "weights-a.safetensors");
    write_tensors(path, t1, 1, NULL);
    join(path, sizeof path, dir, "notes.txt");
    write_bytes(path, "hi", 2);
    assert_int_equal(st_open(dir, &s, &err), LV_OK);
    assert_int_equal(st_count(s), 2);
    assert_int_equal(st_file_count(s), 2);
    assert_string_equal(st_at(s, 0)->name, "a");
    assert_string_equal(st_at(s, 1)->name, "b");
    st_close(s);

    /* The same name in two un-indexed files. */
    join(path, sizeof path, dir, "weights-c.safetensors");
    write_tensors(path, t1, 1, NULL);
    expect_fail(dir, LV_ERR_FORMAT, "duplicate tensor 'a'", "weights-a.safetensors",
                "weights-c.safetensors", NULL);

    dir = scratch("dir_empty");
    expect_fail(dir, LV_ERR_IO, "no model.safetensors", NULL);
    join(path, sizeof path, dir, "missing.safetensors");
    expect_fail(path, LV_ERR_IO, "missing.safetensors", NULL);
}

/* ---- malformed files ---------------------------------------------------- */

typedef struct {
    const char *header; /* JSON text */
    size_t data_len;    /* zero bytes after the header */
    lv_status st;
    const char *needle; /* the problem, as the message words it */
} bad_case;

static const bad_case bad_cases[] = {
    {"[1, 2]", 0, LV_ERR_FORMAT, "not a JSON object"},
    {"\"str\"", 0, LV_ERR_FORMAT, "not a JSON object"},
    {"{\"a\": ", 0, LV_ERR_FORMAT, "not valid JSON"},
    {"{\"a\": {}} trailing", 0, LV_ERR_FORMAT, "not valid JSON"},
    {"{\"\xff\": 1}", 0, LV_ERR_FORMAT, "UTF-8"},
    {"{\"\xc0\xaf\": 1}", 0, LV_ERR_FORMAT, "UTF-8"},     /* overlong '/' */
    {"{\"\xed\xa0\x80\": 1}", 0, LV_ERR_FORMAT, "UTF-8"}, /* surrogate */
    {"{\"a\": 5}", 0, LV_ERR_FORMAT, "entry must be an object"},
    {"{\"a\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, LV_ERR_FORMAT, "missing \"dtype\""},
    {"{\"a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4, LV_ERR_FORMAT,
     "missing \"shape\""},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4, LV_ERR_FORMAT, "missing \"data_offsets\""},
    {"{\"a\": {\"dtype\": 3, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, LV_ERR_FORMAT,
     "dtype must be a string"},
    {"{\"a\": {\"dtype\": \"F17\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, LV_ERR_FORMAT,
     "unknown dtype \"F17\""},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": 1, \"data_offsets\": [0, 4]}}", 4, LV_ERR_FORMAT,
     "shape must be an array"},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", 4, LV_ERR_FORMAT,
     "shape[0] must be an integer >= 0"},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 4, LV_ERR_FORMAT,
     "shape[0] must be an integer >= 0"},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [\"1\"], \"data_offsets\": [0, 4]}}", 4,
     LV_ERR_FORMAT, "shape[0] must be an integer >= 0"},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 4, LV_ERR_FORMAT,
     "data_offsets must be [BEGIN, END]"},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", 4, LV_ERR_FORMAT,
     "data_offsets must be [BEGIN, END]"},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": \"0-4\"}}", 4, LV_ERR_FORMAT,
     "data_offsets must be [BEGIN, END]"},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}}", 4, LV_ERR_FORMAT,
     "reversed"},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 16], \"data_offsets\": [0, "
     "4]}}",
     4, LV_ERR_FORMAT, "overflows"},
    {"{\"a\": {\"dtype\": \"F64\", \"shape\": [2305843009213693952], \"data_offsets\": [0, 4]}}", 4,
     LV_ERR_FORMAT, "overflows"},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}}", 4, LV_ERR_FORMAT,
     "shape/size mismatch"},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
     " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [2, 6]}}",
     6, LV_ERR_FORMAT, "overlap"},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
     " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}",
     4, LV_ERR_FORMAT, "overlap"},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
     " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}}",
     12, LV_ERR_FORMAT, "gap of 4 bytes"},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8, LV_ERR_FORMAT,
     "does not start at 0"},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 8, LV_ERR_FORMAT,
     "do not end at the end of the file"},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 4, LV_ERR_FORMAT,
     "past the end of the file"},
    {"{}", 4, LV_ERR_FORMAT, "do not end at the end of the file"},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
     " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
     8, LV_ERR_FORMAT, "duplicate"},
    {"{\"lm_head.weight\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
     " \"language_model.lm_head.weight\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": "
     "[4, 8]}}",
     8, LV_ERR_FORMAT, "duplicate tensor 'language_model.lm_head.weight'"},
    {"{\"__metadata__\": [1]}", 0, LV_ERR_FORMAT, "__metadata__ must be an object of strings"},
    {"{\"__metadata__\": {\"format\": 1}}", 0, LV_ERR_FORMAT,
     "__metadata__ must be an object of strings"},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1, 1, 1, 1, 1, 1, 1, 1, 1], \"data_offsets\": [0, "
     "4]}}",
     4, LV_ERR_UNSUPPORTED, "9 dims"},
};

static void malformed_headers(void **state) {
    const char *dir = scratch("bad");
    char path[1200];
    join(path, sizeof path, dir, "bad.safetensors");
    uint8_t zeros[16] = {0};
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        write_st(path, bad_cases[i].header, zeros, bad_cases[i].data_len);
        expect_fail(path, bad_cases[i].st, "bad.safetensors", bad_cases[i].needle, NULL);
    }
    /* The good versions of the edge cases above pass. */
    write_st(path, "{}", NULL, 0);
    st_set *s;
    lv_err err;
    assert_int_equal(st_open(path, &s, &err), LV_OK);
    assert_int_equal(st_count(s), 0);
    st_close(s);
    write_st(path,
             "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4], "
             "\"extra\": 1}, \"__metadata__\": {}}    ",
             zeros, 4);
    assert_int_equal(st_open(path, &s, &err), LV_OK);
    st_close(s);
}

static void malformed_framing(void **state) {
    const char *dir = scratch("framing");
    char path[1200];
    join(path, sizeof path, dir, "short.safetensors");
    write_bytes(path, "\x05\x00\x00", 3);
    expect_fail(path, LV_ERR_FORMAT, "short.safetensors", "too short", NULL);
    write_bytes(path, "", 0);
    expect_fail(path, LV_ERR_FORMAT, "short.safetensors", "0 bytes", NULL);

    /* Header length over the 100 MB limit. */
    uint8_t big[8] = {0};
    uint64_t n = 200000000;
    for (int i = 0; i < 8; i++) big[i] = (uint8_t)(n >> (8 * i));
    join(path, sizeof path, dir, "huge.safetensors");
    write_bytes(path, big, 8);
    expect_fail(path, LV_ERR_FORMAT, "huge.safetensors", "200000000", "limit", NULL);
    memset(big, 0xff, 8); /* 2^64 - 1 */
    write_bytes(path, big, 8);
    expect_fail(path, LV_ERR_FORMAT, "huge.safetensors", "limit", NULL);

    /* Header length beyond the file. */
    uint8_t buf[20] = {100};
    memcpy(buf + 8, "{}          ", 12);
    join(path, sizeof path, dir, "cut.safetensors");
    write_bytes(path, buf, sizeof buf);
    expect_fail(path, LV_ERR_FORMAT, "cut.safetensors", "runs past the end of the file", NULL);

    /* A NUL byte inside the header is not JSON. */
    uint8_t nul[8 + 4] = {4, 0, 0, 0, 0, 0, 0, 0, '{', 0, '}', ' '};
    join(path, sizeof path, dir, "nul.safetensors");
    write_bytes(path, nul, sizeof nul);
    expect_fail(path, LV_ERR_FORMAT, "nul.safetensors", "not valid JSON", NULL);

    /* A directory given as a file, a path that does not exist. */
    join(path, sizeof path, dir, "nope.safetensors");
    expect_fail(path, LV_ERR_IO, "nope.safetensors", NULL);
}

int main(void) {
    const char *tmp = getenv("LLAVA_TMP");
    snprintf(g_root, sizeof g_root, "%s/safetensors-%d", tmp && *tmp ? tmp : "/tmp", (int)getpid());
    mkdir_p(g_root);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dtype_table),
        cmocka_unit_test(names_canonical),
        cmocka_unit_test(read_back_dtypes),
        cmocka_unit_test(new_names_are_canonicalised),
        cmocka_unit_test(sharded),
        cmocka_unit_test(sharded_errors),
        cmocka_unit_test(directory_without_index),
        cmocka_unit_test(malformed_headers),
        cmocka_unit_test(malformed_framing),
    };
    int rc = cmocka_run_group_tests_name("safetensors", tests, NULL, NULL);
    if (rc == 0) {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_root);
    }
    return rc;
}
