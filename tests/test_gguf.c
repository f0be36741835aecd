/*
 * test_gguf.c - the GGUF container (io/gguf.h), the ggml quantizers
 * (quant/ggml_quantize.h) and the GGUF vocabulary (text/tokenizer_gguf.h).
 *
 * Reader: hand-built files, valid and broken in every way the reader must
 * refuse (truncated header, bad magic, version 1, huge counts, a string
 * past EOF, misaligned/out-of-file/overlapping tensors, unknown type,
 * duplicate names and keys), and every truncation of a valid file: each is
 * a clear error, never a crash. Writer: a round trip through gguf_open, and
 * no file left by an unfinished writer. Quantizers: format facts and error
 * bounds. Vocabulary: the GGUF vocabulary gguf_export_vocab writes from the
 * Mistral tokenizer.json encodes the golden corpus exactly as the
 * tokenizer.json does.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/buf.h"
#include "base/half.h"
#include "io/gguf.h"
#include "io/gguf_names.h"
#include "quant/ggml_quantize.h"
#include "quant/gguf_export.h"
#include "testutil.h"
#include "text/tokenizer.h"
#include "text/tokenizer_gguf.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- a byte builder for hand-made files ------------------------------------ */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} bytes;

static void put(bytes *b, const void *s, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void u32(bytes *b, uint32_t v) {
    put(b, &v, 4); /* the test hosts are little-endian, like the format */
}
static void u64(bytes *b, uint64_t v) {
    put(b, &v, 8);
}
static void str(bytes *b, const char *s) {
    u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void pad(bytes *b, size_t a) {
    while (b->n % a) put(b, "", 1);
}

typedef struct {
    const char *name;
    uint32_t n_dims;
    int64_t ne[5];
    uint32_t type;
    uint64_t offset;
} tinfo;

/* magic, version, counts, one string KV ("general.name") and the infos;
 * data of data_len bytes (value i & 0xff) after the padding. */
static bytes build(uint32_t version, const tinfo *t, int nt, size_t data_len) {
    bytes b = {0};
    put(&b, "GGUF", 4);
    u32(&b, version);
    u64(&b, (uint64_t)nt);
    u64(&b, 2);
    str(&b, "general.name");
    u32(&b, GGUF_STRING);
    str(&b, "test");
    str(&b, "general.architecture");
    u32(&b, GGUF_STRING);
    str(&b, "llama");
    for (int i = 0; i < nt; i++) {
        str(&b, t[i].name);
        u32(&b, t[i].n_dims);
        for (uint32_t d = 0; d < t[i].n_dims; d++) u64(&b, (uint64_t)t[i].ne[d]);
        u32(&b, t[i].type);
        u64(&b, t[i].offset);
    }
    pad(&b, 32);
    for (size_t i = 0; i < data_len; i++) {
        uint8_t v = (uint8_t)i;
        put(&b, &v, 1);
    }
    return b;
}

/* Two tensors: a [8] F32 at 0 (32 bytes), a [16, 2] F16 at 32 (64 bytes). */
static const tinfo GOOD[2] = {{"a", 1, {8}, GGML_F32, 0}, {"b", 2, {16, 2}, GGML_F16, 32}};

static void expect_error(const bytes *b, lv_status want, const char *needle) {
    gguf *g = NULL;
    lv_err err = {{0}};
    lv_status st = gguf_open_mem(b->p, b->n, "t.gguf", &g, &err);
    if (st != want || !strstr(err.msg, needle))
        fail_msg("expected %s with \"%s\", got %s: %s", lv_status_str(want), needle,
                 lv_status_str(st), err.msg);
    assert_null(g);
}

static void reads_valid_file(void **state) {
    bytes b = build(3, GOOD, 2, 96);
    gguf *g;
    lv_err err;
    if (gguf_open_mem(b.p, b.n, "t.gguf", &g, &err)) fail_msg("%s", err.msg);
    assert_int_equal(gguf_version(g), 3);
    assert_int_equal(gguf_alignment(g), 32);
    assert_int_equal(gguf_tensor_count(g), 2);
    const char *s;
    size_t n;
    assert_int_equal(gguf_get_str(g, "general.architecture", &s, &n, NULL, &err), LV_OK);
    assert_int_equal(n, 5);
    assert_memory_equal(s, "llama", 5);
    const gguf_tensor *t = gguf_find_tensor(g, "b");
    assert_non_null(t);
    assert_int_equal(t->nbytes, 64);
    assert_int_equal(t->ne[0], 16);
    assert_int_equal(t->ne[1], 2);
    assert_int_equal(((const uint8_t *)t->data)[0], 32); /* data byte 32 */
    int64_t v;
    assert_int_equal(gguf_get_int(g, "general.name", &v, NULL, &err), LV_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "expected an integer, got STRING"));
    assert_int_equal(gguf_get_int(g, "llama.block_count", &v, NULL, &err), LV_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "required key 'llama.block_count' is missing"));
    bool found = true;
    assert_int_equal(gguf_get_int(g, "llama.block_count", &v, &found, &err), LV_OK);
    assert_false(found);
    gguf_close(g);
    /* version 2 has the same layout */
    free(b.p);
    b = build(2, GOOD, 2, 96);
    assert_int_equal(gguf_open_mem(b.p, b.n, "t.gguf", &g, &err), LV_OK);
    gguf_close(g);
    free(b.p);
}

static void rejects_broken_headers(void **state) {
    bytes b = build(3, GOOD, 2, 96);
    bytes t = {b.p, 10, 0};
    expect_error(&t, LV_ERR_FORMAT, "truncated");
    b.p[0] = 'X';
    expect_error(&b, LV_ERR_FORMAT, "not a GGUF file");
    free(b.p);
    b = build(1, GOOD, 2, 96);
    expect_error(&b, LV_ERR_UNSUPPORTED, "version 1");
    free(b.p);
    b = build(0x03000000u, GOOD, 2, 96);
    expect_error(&b, LV_ERR_UNSUPPORTED, "big-endian");
    free(b.p);
    /* huge counts: refused before any allocation of that size */
    b = build(3, GOOD, 2, 96);
    uint64_t huge = 1ull << 60;
    memcpy(b.p + 16, &huge, 8);
    expect_error(&b, LV_ERR_FORMAT, "metadata records cannot fit");
    memcpy(b.p + 16, &(uint64_t){2}, 8);
    memcpy(b.p + 8, &huge, 8);
    expect_error(&b, LV_ERR_FORMAT, "tensors cannot fit");
    uint64_t neg = (uint64_t)-1;
    memcpy(b.p + 8, &neg, 8);
    expect_error(&b, LV_ERR_FORMAT, "tensors cannot fit");
    free(b.p);
}

static void rejects_bad_strings_and_keys(void **state) {
    /* the first key's length runs past the end of the file */
    bytes b = build(3, GOOD, 2, 96);
    uint64_t big = 1ull << 40;
    memcpy(b.p + 24, &big, 8);
    expect_error(&b, LV_ERR_FORMAT, "runs past the end of the file");
    free(b.p);
    /* duplicate key: rename general.architecture to general.name (same length needed) */
    b = build(3, GOOD, 2, 96);
    bytes d = {0};
    put(&d, "GGUF", 4);
    u32(&d, 3);
    u64(&d, 0);
    u64(&d, 2);
    str(&d, "k");
    u32(&d, GGUF_UINT32);
    u32(&d, 1);
    str(&d, "k");
    u32(&d, GGUF_UINT32);
    u32(&d, 2);
    expect_error(&d, LV_ERR_FORMAT, "duplicate metadata key 'k'");
    d.n = 0;
    put(&d, "GGUF", 4);
    u32(&d, 3);
    u64(&d, 0);
    u64(&d, 1);
    str(&d, "k");
    u32(&d, 77); /* unknown value type */
    u32(&d, 2);
    expect_error(&d, LV_ERR_FORMAT, "unknown value type 77");
    d.n = 0;
    put(&d, "GGUF", 4);
    u32(&d, 3);
    u64(&d, 0);
    u64(&d, 1);
    str(&d, "arr");
    u32(&d, GGUF_ARRAY);
    u32(&d, GGUF_UINT32);
    u64(&d, 1ull << 40); /* elements past EOF */
    expect_error(&d, LV_ERR_FORMAT, "runs past the end of the file");
    d.n = 0;
    put(&d, "GGUF", 4);
    u32(&d, 3);
    u64(&d, 0);
    u64(&d, 1);
    str(&d, "arr");
    u32(&d, GGUF_ARRAY);
    u32(&d, GGUF_STRING);
    u64(&d, 1ull << 40); /* strings past EOF */
    expect_error(&d, LV_ERR_FORMAT, "cannot fit");
    d.n = 0;
    put(&d, "GGUF", 4);
    u32(&d, 3);
    u64(&d, 0);
    u64(&d, 1);
    str(&d, "general.alignment");
    u32(&d, GGUF_UINT32);
    u32(&d, 24); /* not a power of two */
    expect_error(&d, LV_ERR_FORMAT, "not a nonzero power of two");
    free(d.p);
    free(b.p);
}

static void rejects_bad_tensors(void **state) {
    tinfo t[2];
    bytes b;
    memcpy(t, GOOD, sizeof t);
    t[1].offset = 36; /* misaligned */
    b = build(3, t, 2, 128);
    expect_error(&b, LV_ERR_FORMAT, "tensor 'b': offset 36 is not a multiple of the alignment 32");
    free(b.p);
    memcpy(t, GOOD, sizeof t);
    t[1].offset = 3200; /* past EOF */
    b = build(3, t, 2, 96);
    expect_error(&b, LV_ERR_FORMAT, "tensor 'b': bytes [3200, 3264)");
    free(b.p);
    memcpy(t, GOOD, sizeof t);
    t[1].offset = 0; /* overlaps a */
    b = build(3, t, 2, 96);
    expect_error(&b, LV_ERR_FORMAT, "overlap");
    free(b.p);
    memcpy(t, GOOD, sizeof t);
    t[1].type = 99;
    b = build(3, t, 2, 96);
    expect_error(&b, LV_ERR_UNSUPPORTED, "tensor 'b': ggml type 99");
    free(b.p);
    memcpy(t, GOOD, sizeof t);
    t[1].type = 16; /* IQ2_XXS: named, not supported */
    b = build(3, t, 2, 96);
    expect_error(&b, LV_ERR_UNSUPPORTED, "ggml type 16 (IQ2_XXS)");
    free(b.p);
    memcpy(t, GOOD, sizeof t);
    t[1].name = "a";
    b = build(3, t, 2, 96);
    expect_error(&b, LV_ERR_FORMAT, "duplicate tensor 'a'");
    free(b.p);
    memcpy(t, GOOD, sizeof t);
    t[1].type = GGML_Q4_0; /* ne0 16 is not whole 32-element blocks */
    b = build(3, t, 2, 96);
    expect_error(&b, LV_ERR_FORMAT, "not a multiple of the Q4_0 block");
    free(b.p);
    memcpy(t, GOOD, sizeof t);
    t[1].n_dims = 5;
    b = build(3, t, 1, 96); /* only a: then patch its n_dims */
    free(b.p);
    t[0].n_dims = 5;
    t[0].ne[1] = t[0].ne[2] = t[0].ne[3] = 1;
    b = build(3, t, 1, 96);
    expect_error(&b, LV_ERR_FORMAT, "n_dims 5");
    free(b.p);
    memcpy(t, GOOD, sizeof t);
    t[1].ne[1] = -2;
    b = build(3, t, 2, 96);
    expect_error(&b, LV_ERR_FORMAT, "is negative");
    free(b.p);
    memcpy(t, GOOD, sizeof t);
    t[1].ne[1] = INT64_MAX / 2; /* size overflows */
    b = build(3, t, 2, 96);
    expect_error(&b, LV_ERR_FORMAT, "larger than the file");
    free(b.p);
}

/* Every prefix of a valid file is refused cleanly (ASan watches the reads). */
static void every_truncation_fails(void **state) {
    bytes b = build(3, GOOD, 2, 96);
    for (size_t n = 0; n < b.n; n++) {
        uint8_t *copy = malloc(n ? n : 1); /* exact size: a read past it is caught */
        memcpy(copy, b.p, n);
        gguf *g = NULL;
        lv_err err = {{0}};
        lv_status st = gguf_open_mem(copy, n, "t.gguf", &g, &err);
        if (st == LV_OK) fail_msg("a %zu-byte prefix of %zu opened", n, b.n);
        assert_true(err.msg[0] != 0);
        free(copy);
    }
    free(b.p);
}

/* ---- writer ---------------------------------------------------------------- */

static void writer_round_trip(void **state) {
    const char *dir = tu_tmpdir("gguf_writer");
    char path[1024], tmp[1100];
    snprintf(path, sizeof path, "%s/x.gguf", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    gguf_writer *w = gguf_writer_new();
    const char *strs[3] = {"a", "", "c d"};
    float f[2] = {1.5f, -2.0f};
    int32_t ints[3] = {-1, 0, 7};
    gguf_w_str(w, "s", "hello");
    gguf_w_u32(w, "u", 42);
    gguf_w_i32(w, "i", -5);
    gguf_w_f32(w, "f", 0.25f);
    gguf_w_bool(w, "b", true);
    gguf_w_arr_str(w, "as", strs, 3);
    gguf_w_arr_f32(w, "af", f, 2);
    gguf_w_arr_i32(w, "ai", ints, 3);
    int64_t ne1[1] = {3}, ne2[2] = {32, 2};
    gguf_w_tensor(w, "t0", 1, ne1, GGML_F32);
    gguf_w_tensor(w, "t1", 2, ne2, GGML_Q8_0);
    lv_err err;
    assert_int_equal(gguf_w_begin(w, path, &err), LV_OK);
    float t0[3] = {1, 2, 3};
    uint8_t t1[68];
    for (int i = 0; i < 68; i++) t1[i] = (uint8_t)(i * 3);
    assert_int_equal(gguf_w_data(w, t0, 12, &err), LV_OK);
    assert_int_equal(gguf_w_data(w, t1, 67, &err), LV_ERR_ARG); /* wrong size */
    assert_int_equal(gguf_w_data(w, t1, 68, &err), LV_OK);
    assert_int_equal(access(path, F_OK), -1); /* nothing at the path until finished */
    assert_int_equal(gguf_w_finish(w, &err), LV_OK);
    gguf_writer_free(w);
    assert_int_equal(access(tmp, F_OK), -1);

    gguf *g;
    if (gguf_open(path, &g, &err)) fail_msg("%s", err.msg);
    int64_t v;
    double d;
    bool b;
    const char *s;
    size_t n;
    assert_int_equal(gguf_get_int(g, "u", &v, NULL, &err), LV_OK);
    assert_int_equal(v, 42);
    assert_int_equal(gguf_get_int(g, "i", &v, NULL, &err), LV_OK);
    assert_int_equal(v, -5);
    assert_int_equal(gguf_get_float(g, "f", &d, NULL, &err), LV_OK);
    assert_true(d == 0.25);
    assert_int_equal(gguf_get_bool(g, "b", &b, NULL, &err), LV_OK);
    assert_true(b);
    assert_int_equal(gguf_get_str(g, "s", &s, &n, NULL, &err), LV_OK);
    assert_int_equal(n, 5);
    const gguf_kv *kv;
    assert_int_equal(gguf_get_arr(g, "as", &kv, NULL, &err), LV_OK);
    assert_int_equal(kv->n, 3);
    s = gguf_arr_str(kv, 2, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(s, "c d", 3);
    s = gguf_arr_str(kv, 1, &n);
    assert_int_equal(n, 0);
    assert_int_equal(gguf_get_arr(g, "af", &kv, NULL, &err), LV_OK);
    assert_true(gguf_arr_float(kv, 1) == -2.0);
    assert_int_equal(gguf_get_arr(g, "ai", &kv, NULL, &err), LV_OK);
    assert_int_equal(gguf_arr_int(kv, 0), -1);
    const gguf_tensor *t = gguf_find_tensor(g, "t1");
    assert_non_null(t);
    assert_int_equal(t->type, GGML_Q8_0);
    assert_int_equal(t->nbytes, 68);
    assert_memory_equal(t->data, t1, 68);
    assert_memory_equal(gguf_find_tensor(g, "t0")->data, t0, 12);
    assert_int_equal((uintptr_t)((const uint8_t *)t->data - gguf_base(g, NULL)) % 32, 0);
    gguf_close(g);

    /* an unfinished writer leaves nothing behind */
    snprintf(path, sizeof path, "%s/y.gguf", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    w = gguf_writer_new();
    gguf_w_tensor(w, "t0", 1, ne1, GGML_F32);
    assert_int_equal(gguf_w_begin(w, path, &err), LV_OK);
    assert_int_equal(access(tmp, F_OK), 0);
    assert_int_equal(gguf_w_finish(w, &err), LV_ERR_ARG); /* data missing */
    gguf_writer_free(w);
    assert_int_equal(access(tmp, F_OK), -1);
    assert_int_equal(access(path, F_OK), -1);
}

/* ---- quantizers ------------------------------------------------------------- */

static float frand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) & 0xFFFFFF) / 16777216.0f * 2.0f - 1.0f;
}

/* gguf_names: what the writer names a tensor, the reader maps back (the
 * vision MLP with the legacy meaning the writer uses). */
static lv_status name_back(void *ud, const gguf_name *e, const char *g, const char *hf, bool bias,
                           lv_err *err) {
    int *n = ud, block;
    char back[192];
    const gguf_name *r = gguf_name_find(g, e->file, true, back, sizeof back, &block);
    if (!r || strcmp(back, hf) != 0) fail_msg("%s: wrote it for %s, read back %s", g, hf, back);
    (*n)++;
    return LV_OK;
}

/* The same for a SmolVLM mmproj, whose MLP has the current meaning. */
static lv_status name_back_current(void *ud, const gguf_name *e, const char *g, const char *hf,
                                   bool bias, lv_err *err) {
    int *n = ud, block;
    char back[192];
    const gguf_name *r = gguf_name_find(g, e->file, false, back, sizeof back, &block);
    if (!r || strcmp(back, hf) != 0) fail_msg("%s: wrote it for %s, read back %s", g, hf, back);
    if (strstr(g, "v.class_embd") || strstr(g, "v.pre_ln") || strstr(g, "mm.0"))
        fail_msg("%s written for SmolVLM", g);
    (*n)++;
    return LV_OK;
}

static void names_round_trip(void **state) {
    int n_text = 0, n_mm = 0;
    assert_int_equal(gguf_names_each(GN_TEXT, 2, name_back, &n_text, NULL), LV_OK);
    assert_int_equal(gguf_names_each(GN_MMPROJ, 2, name_back, &n_mm, NULL), LV_OK);
    assert_int_equal(n_text, 3 + 2 * 13); /* token_embd, output_norm, output; 13 per block */
    /* mm.*, newline, embeddings (a patch bias visited, written when the source has
     * one), pre_ln; 16 per block */
    assert_int_equal(n_mm, 11 + 2 * 16);
    /* SmolVLM's mmproj (projector idefics3): read back with the current MLP naming */
    int n_smol = 0;
    assert_int_equal(
        gguf_names_each_conv(GN_MMPROJ, GN_CONV_IDEFICS3, 2, name_back_current, &n_smol, NULL),
        LV_OK);
    /* patch w+b, position, post_ln w+b, mm.model.fc w(+b); 16 per block */
    assert_int_equal(n_smol, 7 + 2 * 16);
    char hf[192];
    int block;
    static const struct {
        gn_file file;
        const char *g, *hf; /* canonical: the current meaning of the vision MLP */
    } cases[] = {
        {GN_TEXT, "blk.31.attn_q.bias", "language_model.model.layers.31.self_attn.q_proj.bias"},
        {GN_TEXT, "blk.0.ffn_up.bias", "language_model.model.layers.0.mlp.up_proj.bias"},
        {GN_MMPROJ, "v.image_newline", "image_newline"},
        {GN_MMPROJ, "v.blk.7.attn_output.weight",
         "vision_tower.vision_model.encoder.layers.7.self_attn.out_proj.weight"},
        {GN_MMPROJ, "v.blk.3.ffn_up.weight",
         "vision_tower.vision_model.encoder.layers.3.mlp.fc1.weight"},
        {GN_MMPROJ, "v.post_ln.bias", "vision_tower.vision_model.post_layernorm.bias"},
        {GN_MMPROJ, "mm.model.fc.weight", "connector.modality_projection.proj.weight"},
        {GN_MMPROJ, "v.patch_embd.bias",
         "vision_tower.vision_model.embeddings.patch_embedding.bias"},
        {GN_MMPROJ, "v.blk.3.ffn_down.bias",
         "vision_tower.vision_model.encoder.layers.3.mlp.fc2.bias"},
    };
    for (size_t i = 0; i < LV_ARRAY_LEN(cases); i++) {
        const gguf_name *e =
            gguf_name_find(cases[i].g, cases[i].file, false, hf, sizeof hf, &block);
        if (!e || strcmp(hf, cases[i].hf) != 0) fail_msg("%s: got %s", cases[i].g, e ? hf : "-");
    }
    assert_null(gguf_name_find("blk.x.attn_q.weight", GN_TEXT, false, hf, sizeof hf, &block));
    assert_null(gguf_name_find("blk.1.attn_q.weightx", GN_TEXT, false, hf, sizeof hf, &block));
    assert_null(gguf_name_find("v.blk.1.attn_q.weight", GN_TEXT, false, hf, sizeof hf, &block));
    assert_null(gguf_name_find("blk.1.attn_q.weight", GN_TEXT, false, hf, 8, &block));
}

static void f16_conversion(void **state) {
    assert_int_equal(lv_f32_to_f16(1.0f), 0x3C00);
    assert_int_equal(lv_f32_to_f16(-2.0f), 0xC000);
    assert_int_equal(lv_f32_to_f16(65504.0f), 0x7BFF);
    assert_int_equal(lv_f32_to_f16(65520.0f), 0x7C00); /* rounds to infinity */
    assert_int_equal(lv_f32_to_f16(ldexpf(1.0f, -24)), 0x0001);
    assert_int_equal(lv_f32_to_f16(ldexpf(1.0f, -25)), 0x0000);        /* tie to even */
    assert_int_equal(lv_f32_to_f16(1.0f + ldexpf(1.0f, -11)), 0x3C00); /* tie to even */
    assert_int_equal(lv_f32_to_f16(1.0f + ldexpf(3.0f, -11)), 0x3C02);
    for (uint32_t h = 0; h < 0x7C00; h++) /* every finite half survives the round trip */
        if (lv_f32_to_f16(lv_f16_to_f32((uint16_t)h)) != h) fail_msg("half 0x%04x", h);
}

static void quantizer_bounds(void **state) {
    uint64_t seed = 7;
    enum { N = 1024 };
    float x[N], y[N];
    uint8_t q[N * 2];
    for (int i = 0; i < N; i++) x[i] = frand(&seed) * (i % 64 < 32 ? 1.0f : 0.01f);
    x[5] = 0; /* and an all-zero block */
    for (int i = 64; i < 96; i++) x[i] = 0;
    /* Q8_0: |err| <= d/2 per block (d = amax/127), plus 127 · d's f16 rounding (2^-11 d) */
    assert_true(ggml_quantize_row(GGML_Q8_0, x, N, q));
    assert_true(ggml_dequantize_row(GGML_Q8_0, q, N, y));
    for (int b = 0; b < N / 32; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[32 * b + j]));
        for (int j = 0; j < 32; j++)
            assert_true(fabsf(y[32 * b + j] - x[32 * b + j]) <= amax / 127 * 0.57f + 1e-7f);
    }
    /* Q4_0: the largest-magnitude element comes back (up to d's f16 rounding); |err| <= d */
    assert_true(ggml_quantize_row(GGML_Q4_0, x, N, q));
    assert_true(ggml_dequantize_row(GGML_Q4_0, q, N, y));
    for (int b = 0; b < N / 32; b++) {
        float amax = 0;
        int at = 0;
        for (int j = 0; j < 32; j++)
            if (fabsf(x[32 * b + j]) > amax) amax = fabsf(x[32 * b + j]), at = j;
        assert_true(fabsf(y[32 * b + at] - x[32 * b + at]) <= amax * 1e-3f);
        for (int j = 0; j < 32; j++)
            assert_true(fabsf(y[32 * b + j] - x[32 * b + j]) <= amax / 8 * 1.01f + 1e-7f);
    }
    /* Q4_K: every element within a sub-block step (+ the 6-bit scale rounding) */
    assert_true(ggml_quantize_row(GGML_Q4_K, x, N, q));
    assert_true(ggml_dequantize_row(GGML_Q4_K, q, N, y));
    double se = 0, sx = 0;
    for (int s = 0; s < N / 32; s++) {
        float mn = 0, mx = 0;
        for (int j = 0; j < 32; j++) mn = fminf(mn, x[32 * s + j]), mx = fmaxf(mx, x[32 * s + j]);
        for (int j = 0; j < 32; j++) {
            float e = fabsf(y[32 * s + j] - x[32 * s + j]);
            se += (double)e * e, sx += (double)x[32 * s + j] * x[32 * s + j];
            /* a sub-block's range spans 15 steps; the super-block's scales are coarser */
            assert_true(e <= (mx - mn) / 15 * 1.5f + 2e-2f);
        }
    }
    print_message("Q4_K relative rms error %.4f\n", sqrt(se / sx));
    assert_true(sqrt(se / sx) < 0.12);
    /* rows that are not whole blocks are refused */
    assert_false(ggml_quantize_row(GGML_Q4_K, x, 128, q));
    assert_false(ggml_quantize_row(GGML_Q8_0, x, 40, q));
    assert_int_equal(ggml_row_size(GGML_Q4_K, 512), 288);
    assert_int_equal(ggml_row_size(GGML_Q4_0, 33), 0);
}

/* ---- vocabulary -------------------------------------------------------------- */

static size_t ids_of(json_t *arr, int32_t **out) {
    size_t n = json_array_size(arr);
    *out = malloc((n + 1) * sizeof **out);
    for (size_t i = 0; i < n; i++) (*out)[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    return n;
}

/* Writes a vocabulary-only GGUF of tokenizer_json into dir/name. */
static void write_vocab(const char *tokenizer_json, int n_vocab, const char *path, bool merges) {
    lv_tokenizer_config tc;
    hf_tokcfg_defaults(&tc);
    gguf_writer *w = gguf_writer_new();
    lv_err err;
    if (gguf_export_vocab(w, tokenizer_json, n_vocab, &tc, &err)) fail_msg("%s", err.msg);
    if (gguf_w_begin(w, path, &err) || gguf_w_finish(w, &err)) fail_msg("%s", err.msg);
    gguf_writer_free(w);
    if (merges) return;
    /* the same without tokenizer.ggml.merges: copy every other key */
    gguf *g;
    if (gguf_open(path, &g, &err)) fail_msg("%s", err.msg);
    w = gguf_writer_new();
    for (size_t i = 0; i < gguf_kv_count(g); i++) {
        const gguf_kv *kv = gguf_kv_at(g, i);
        if (strcmp(kv->key, "tokenizer.ggml.merges") == 0) continue;
        if (kv->type == GGUF_ARRAY && kv->arr_type == GGUF_STRING) {
            const char **v = malloc(kv->n * sizeof *v);
            char **own = malloc(kv->n * sizeof *own);
            for (uint64_t j = 0; j < kv->n; j++) {
                size_t n;
                const char *s = gguf_arr_str(kv, j, &n);
                own[j] = strndup(s, n);
                v[j] = own[j];
            }
            gguf_w_arr_str(w, kv->key, v, kv->n);
            for (uint64_t j = 0; j < kv->n; j++) free(own[j]);
            free(own);
            free(v);
        } else if (kv->type == GGUF_ARRAY && kv->arr_type == GGUF_FLOAT32) {
            float *v = malloc(kv->n * sizeof *v); /* the mapping is not 4-aligned here */
            for (uint64_t j = 0; j < kv->n; j++) v[j] = (float)gguf_arr_float(kv, j);
            gguf_w_arr_f32(w, kv->key, v, kv->n);
            free(v);
        } else if (kv->type == GGUF_ARRAY && kv->arr_type == GGUF_INT32) {
            int32_t *v = malloc(kv->n * sizeof *v);
            for (uint64_t j = 0; j < kv->n; j++) v[j] = (int32_t)gguf_arr_int(kv, j);
            gguf_w_arr_i32(w, kv->key, v, kv->n);
            free(v);
        } else if (kv->type == GGUF_STRING) {
            char *s = strndup((const char *)kv->data + 8, kv->size - 8);
            gguf_w_str(w, kv->key, s);
            free(s);
        } else if (kv->type == GGUF_UINT32) {
            uint32_t u;
            memcpy(&u, kv->data, 4);
            gguf_w_u32(w, kv->key, u);
        } else if (kv->type == GGUF_BOOL) {
            gguf_w_bool(w, kv->key, kv->data[0] != 0);
        }
    }
    gguf_close(g);
    char p2[1100];
    snprintf(p2, sizeof p2, "%s", path);
    if (gguf_w_begin(w, p2, &err) || gguf_w_finish(w, &err)) fail_msg("%s", err.msg);
    gguf_writer_free(w);
}

/* Encodes every golden case with t; returns the number of mismatches. */
static int run_golden(const tok *t, const char *ids_key) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer/golden.json", tu_env("LLAVA_TEST_DATA"));
    json_t *root = json_load_file(path, JSON_ALLOW_NUL, NULL);
    assert_non_null(root);
    json_t *cases = json_object_get(root, "cases");
    assert_true(json_array_size(cases) > 300);
    int bad = 0;
    size_t i;
    json_t *cs;
    json_array_foreach(cases, i, cs) {
        json_t *tj = json_object_get(cs, "text");
        int32_t *want, *got = NULL;
        size_t n_want = ids_of(json_object_get(cs, ids_key), &want), n_got = 0;
        lv_err err;
        if (tok_encode(t, json_string_value(tj), json_string_length(tj), true, &got, &n_got,
                       &err) != LV_OK ||
            n_got != n_want || memcmp(got, want, n_got * sizeof *got) != 0) {
            if (bad < 3) print_message("case %zu (%s) differs\n", i, ids_key);
            bad++;
        }
        free(want);
        free(got);
    }
    json_decref(root);
    return bad;
}

static void vocab_encodes_golden(void **state) {
    const char *dir = tu_tmpdir("gguf_vocab");
    const char *mistral = tu_env("LLAVA_MISTRAL_TOKENIZER");
    char path[1024];
    snprintf(path, sizeof path, "%s/base.gguf", dir);
    write_vocab(mistral, 32000, path, true);
    tok *t;
    lv_err err;
    if (tok_load_gguf_file(path, &t, &err)) fail_msg("%s", err.msg);
    assert_int_equal(tok_vocab_size(t), 32000);
    assert_int_equal(tok_bos_id(t), 1);
    assert_int_equal(tok_eos_id(t), 2);
    int bad = run_golden(t, "ids");
    print_message("GGUF vocab (merges): %d golden cases differ\n", bad);
    assert_int_equal(bad, 0);
    /* decode goes through the same decoder chain */
    int32_t *ids;
    size_t n_ids, n;
    char *s;
    assert_int_equal(tok_encode(t, "Hello world!", 12, true, &ids, &n_ids, &err), LV_OK);
    assert_int_equal(ids[0], 1);
    assert_int_equal(tok_decode(t, ids, n_ids, true, &s, &n, &err), LV_OK);
    free(ids);
    assert_string_equal(s, "Hello world!");
    free(s);
    tok_free(t);

    /* the llava-hf vocabulary: <image> and <pad> added, 32064 ids */
    tu_write_llava_tokenizer(dir);
    char tj[1100];
    snprintf(tj, sizeof tj, "%s/tokenizer.json", dir);
    snprintf(path, sizeof path, "%s/llava.gguf", dir);
    write_vocab(tj, 32064, path, true);
    if (tok_load_gguf_file(path, &t, &err)) fail_msg("%s", err.msg);
    assert_int_equal(tok_vocab_size(t), 32064);
    assert_int_equal(tok_token_to_id(t, "<image>"), 32000);
    assert_true(tok_is_special(t, 32000));
    bad = run_golden(t, "ids_llava");
    print_message("GGUF llava vocab: %d golden cases differ\n", bad);
    assert_int_equal(bad, 0);
    tok_free(t);

    /* no merges in the file (llama.cpp's converters write none): derived from the scores */
    snprintf(path, sizeof path, "%s/nomerges.gguf", dir);
    write_vocab(mistral, 32000, path, false);
    if (tok_load_gguf_file(path, &t, &err)) fail_msg("%s", err.msg);
    bad = run_golden(t, "ids");
    print_message("GGUF vocab (merges derived from scores): %d golden cases differ\n", bad);
    tok_free(t);
}

static void vocab_errors(void **state) {
    const char *dir = tu_tmpdir("gguf_vocab_bad");
    char path[1024];
    snprintf(path, sizeof path, "%s/bad.gguf", dir);
    gguf_writer *w = gguf_writer_new();
    gguf_w_str(w, "tokenizer.ggml.model", "t5"); /* "gpt2": test_tokenizer_bytelevel */
    lv_err err;
    assert_int_equal(gguf_w_begin(w, path, &err), LV_OK);
    assert_int_equal(gguf_w_finish(w, &err), LV_OK);
    gguf_writer_free(w);
    tok *t;
    assert_int_equal(tok_load_gguf_file(path, &t, &err), LV_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "tokenizer.ggml.model \"t5\""));
    w = gguf_writer_new();
    const char *toks[2] = {"a", "b"};
    int32_t types[1] = {1};
    gguf_w_str(w, "tokenizer.ggml.model", "llama");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", toks, 2);
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", types, 1);
    assert_int_equal(gguf_w_begin(w, path, &err), LV_OK);
    assert_int_equal(gguf_w_finish(w, &err), LV_OK);
    gguf_writer_free(w);
    assert_int_equal(tok_load_gguf_file(path, &t, &err), LV_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "token_type must be 2 integers"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reads_valid_file),
        cmocka_unit_test(rejects_broken_headers),
        cmocka_unit_test(rejects_bad_strings_and_keys),
        cmocka_unit_test(rejects_bad_tensors),
        cmocka_unit_test(every_truncation_fails),
        cmocka_unit_test(writer_round_trip),
        cmocka_unit_test(f16_conversion),
        cmocka_unit_test(names_round_trip),
        cmocka_unit_test(quantizer_bounds),
        cmocka_unit_test(vocab_encodes_golden),
        cmocka_unit_test(vocab_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
