/*
 * test_gguf_smolvlm.c - SmolVLM / SmolVLM2 as llama.cpp GGUF pairs and as
 * llava-quantize writes them.
 *
 *   hand_pair       a pair written here in convert_hf_to_gguf.py's
 *                   conventions (ggml-org/llama.cpp conversion/smolvlm.py,
 *                   conversion/llama.py; spec smolvlm.md §11) with the
 *                   project's GGUF writer, read back through
 *                   io/gguf_model.h: the config, the Idefics3 preprocessor
 *                   config, and every canonical tensor (shape, dtype, values,
 *                   the q/k rows back in Hugging Face order);
 *   old_upload      the same without clip.vision.preproc_image_size (the
 *                   ggml-org uploads of April 2025): longest_edge 4 x image;
 *   pair_errors     a missing key, a wrong connector shape, another
 *                   projector type, a vocabulary without <image>;
 *   synth_vocab     the synthetic SmolLM2-style tokenizer (quant/
 *                   synth_tokenizer.h): deterministic, its special ids;
 *   export_gguf     the tiny-smolvlm preset written by gguf_export and read
 *                   back with mdir_open_gguf: configs, vocabulary keys,
 *                   tensor types, every tensor's values;
 *   export_mlx      the same preset written by mlx_export: mlx-vlm's names,
 *                   what is quantized, the values back within the 4-bit
 *                   error, config.json;
 *   hf_dir_source   the preset written as a Hugging Face SmolVLM2 directory
 *                   (F32, transformers' names, the hub's JSON files) and
 *                   converted from there (qsource_open_dir) to GGUF and MLX;
 *   real_pair       a real llama.cpp-converted pair of a tiny SmolVLM
 *                   (tests/data/smolvlm/smolvlm-tiny-gguf/, skipped while
 *                   absent) against its Hugging Face twin
 *                   (tests/data/smolvlm/smolvlm-tiny/): every tensor;
 *   engine_load     llava_open2 + llava_load of the exported pair: skipped
 *                   while the model code does not take idefics3.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/file.h"
#include "base/half.h"
#include "engine/generate.h"
#include "engine/request.h"
#include "engine/run.h"
#include "io/gguf.h"
#include "io/gguf_model.h"
#include "io/model_dir.h"
#include "io/safetensors.h"
#include "io/safetensors_write.h"
#include "model/llava.h"
#include "quant/ggml_quantize.h"
#include "quant/gguf_export.h"
#include "quant/mlx_affine.h"
#include "quant/mlx_export.h"
#include "quant/qsource.h"
#include "quant/synth_tokenizer.h"
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- a hand-written pair ------------------------------------------------------ */

/* text: dim 8, 2 heads of 4, 1 kv head, FFN 16, 1 block, 8 tokens;
 * vision: dim 8, 2 heads, FFN 16, 2 blocks, image 32 / patch 8 (4x4 patches),
 * scale 2 (4 rows per tile), connector [8, 32]. */
enum { TD = 8, TF = 16, TV = 8, VD = 8, VF = 16, VL = 2, IMG = 32, PATCH = 8, SCALE = 2 };

static const char *const TOKENS[TV] = {
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",        "a", "b",
    "\xc4\xa0",      "<image>",      "<end_of_utterance>"};

typedef struct {
    const char *gguf, *canon;
    int n_dims;
    int64_t ne[4];
    uint32_t type;
    int perm_heads; /* > 0: rows written permuted (llama.cpp's q/k order) */
} spec;

enum {
    V_NONE = 0,
    V_NO_PREPROC_SIZE = 1 << 0,
    V_NO_MEAN = 1 << 1,
    V_OTHER_PROJ = 1 << 2,
    V_BAD_FC = 1 << 3,
    V_NO_FC = 1 << 4,
    V_NO_IMAGE_TOKEN = 1 << 5,
};

#define LMB "language_model.model.layers.0."
#define VTM "vision_tower.vision_model."

static const spec TEXT_SPECS[] = {
    {"token_embd.weight", "language_model.model.embed_tokens.weight", 2, {TD, TV}, GGML_F32, 0},
    {"blk.0.attn_norm.weight", LMB "input_layernorm.weight", 1, {TD}, GGML_F32, 0},
    {"blk.0.attn_q.weight", LMB "self_attn.q_proj.weight", 2, {TD, TD}, GGML_F16, 2},
    {"blk.0.attn_k.weight", LMB "self_attn.k_proj.weight", 2, {TD, 4}, GGML_F32, 1},
    {"blk.0.attn_v.weight", LMB "self_attn.v_proj.weight", 2, {TD, 4}, GGML_F32, 0},
    {"blk.0.attn_output.weight", LMB "self_attn.o_proj.weight", 2, {TD, TD}, GGML_F16, 0},
    {"blk.0.ffn_norm.weight", LMB "post_attention_layernorm.weight", 1, {TD}, GGML_F32, 0},
    {"blk.0.ffn_gate.weight", LMB "mlp.gate_proj.weight", 2, {TD, TF}, GGML_F32, 0},
    {"blk.0.ffn_up.weight", LMB "mlp.up_proj.weight", 2, {TD, TF}, GGML_F32, 0},
    {"blk.0.ffn_down.weight", LMB "mlp.down_proj.weight", 2, {TF, TD}, GGML_F32, 0},
    {"output_norm.weight", "language_model.model.norm.weight", 1, {TD}, GGML_F32, 0},
    {"output.weight", "language_model.lm_head.weight", 2, {TD, TV}, GGML_F16, 0},
};

/* The mmproj tensors of block b (or the ones outside the blocks, b < 0). */
static size_t mm_specs(spec *out, char names[][2][96]) {
    size_t n = 0;
#define PUT(g, c, nd, e0, e1, e2, e3, ty)                                                          \
    do {                                                                                           \
        snprintf(names[n][0], 96, "%s", g);                                                        \
        snprintf(names[n][1], 96, "%s", c);                                                        \
        out[n] = (spec){names[n][0], names[n][1], nd, {e0, e1, e2, e3}, ty, 0};                    \
        n++;                                                                                       \
    } while (0)
    PUT("v.patch_embd.weight", VTM "embeddings.patch_embedding.weight", 4, PATCH, PATCH, 3, VD,
        GGML_F32);
    PUT("v.patch_embd.bias", VTM "embeddings.patch_embedding.bias", 1, VD, 0, 0, 0, GGML_F32);
    PUT("v.position_embd.weight", VTM "embeddings.position_embedding.weight", 2, VD, 16, 0, 0,
        GGML_F32);
    for (int b = 0; b < VL; b++) {
        char g[96], c[96];
        static const struct {
            const char *g, *c;
        } lin[] = {{"attn_q", "self_attn.q_proj"},
                   {"attn_k", "self_attn.k_proj"},
                   {"attn_v", "self_attn.v_proj"},
                   {"attn_out", "self_attn.out_proj"}};
        for (int k = 0; k < 4; k++) {
            snprintf(g, sizeof g, "v.blk.%d.%s.weight", b, lin[k].g);
            snprintf(c, sizeof c, VTM "encoder.layers.%d.%s.weight", b, lin[k].c);
            PUT(g, c, 2, VD, VD, 0, 0, GGML_F16);
            snprintf(g, sizeof g, "v.blk.%d.%s.bias", b, lin[k].g);
            snprintf(c, sizeof c, VTM "encoder.layers.%d.%s.bias", b, lin[k].c);
            PUT(g, c, 1, VD, 0, 0, 0, GGML_F32);
        }
        static const char *const ln[2][2] = {{"ln1", "layer_norm1"}, {"ln2", "layer_norm2"}};
        for (int k = 0; k < 2; k++)
            for (int wb = 0; wb < 2; wb++) {
                const char *suf = wb ? "bias" : "weight";
                snprintf(g, sizeof g, "v.blk.%d.%s.%s", b, ln[k][0], suf);
                snprintf(c, sizeof c, VTM "encoder.layers.%d.%s.%s", b, ln[k][1], suf);
                PUT(g, c, 1, VD, 0, 0, 0, GGML_F32);
            }
        /* the current naming: ffn_up = fc1 [VF, VD], ffn_down = fc2 [VD, VF] */
        snprintf(g, sizeof g, "v.blk.%d.ffn_up.weight", b);
        snprintf(c, sizeof c, VTM "encoder.layers.%d.mlp.fc1.weight", b);
        PUT(g, c, 2, VD, VF, 0, 0, GGML_F16);
        snprintf(g, sizeof g, "v.blk.%d.ffn_up.bias", b);
        snprintf(c, sizeof c, VTM "encoder.layers.%d.mlp.fc1.bias", b);
        PUT(g, c, 1, VF, 0, 0, 0, GGML_F32);
        snprintf(g, sizeof g, "v.blk.%d.ffn_down.weight", b);
        snprintf(c, sizeof c, VTM "encoder.layers.%d.mlp.fc2.weight", b);
        PUT(g, c, 2, VF, VD, 0, 0, GGML_F16);
        snprintf(g, sizeof g, "v.blk.%d.ffn_down.bias", b);
        snprintf(c, sizeof c, VTM "encoder.layers.%d.mlp.fc2.bias", b);
        PUT(g, c, 1, VD, 0, 0, 0, GGML_F32);
    }
    PUT("v.post_ln.weight", VTM "post_layernorm.weight", 1, VD, 0, 0, 0, GGML_F32);
    PUT("v.post_ln.bias", VTM "post_layernorm.bias", 1, VD, 0, 0, 0, GGML_F32);
    PUT("mm.model.fc.weight", "connector.modality_projection.proj.weight", 2, VD * SCALE * SCALE,
        TD, 0, 0, GGML_F16);
#undef PUT
    return n;
}

#define MAX_MM 64

static int64_t n_elems(const spec *s) {
    int64_t n = 1;
    for (int d = 0; d < s->n_dims; d++) n *= s->ne[d];
    return n;
}

/* Element i of canonical tensor `canon` in Hugging Face order: multiples of
 * 1/64 in [-0.5, 0.5), exact in F16. */
static float value(const char *canon, int64_t i) {
    uint32_t h = 2166136261u;
    for (const char *c = canon; *c; c++) h = (h ^ (uint8_t)*c) * 16777619u;
    return (float)((int)((h + (uint32_t)i * 7u) % 64u) - 32) / 64.0f;
}

/* The bytes of spec s as the file stores them. */
static void *stored(const spec *s, size_t *nbytes) {
    int64_t n = n_elems(s), cols = s->ne[0], rows = n / cols;
    float *hf = malloc((size_t)n * sizeof *hf), *f = malloc((size_t)n * sizeof *f);
    for (int64_t i = 0; i < n; i++) hf[i] = value(s->canon, i);
    memcpy(f, hf, (size_t)n * sizeof *f);
    if (s->perm_heads) { /* GGUF row h·D + 2i + t = HF row h·D + t·half + i */
        int64_t d = rows / s->perm_heads, half = d / 2;
        for (int64_t h = 0; h < s->perm_heads; h++)
            for (int64_t t = 0; t < 2; t++)
                for (int64_t i = 0; i < half; i++)
                    memcpy(f + (h * d + 2 * i + t) * cols, hf + (h * d + t * half + i) * cols,
                           (size_t)cols * sizeof *f);
    }
    *nbytes = ggml_row_size(s->type, cols) * (size_t)rows;
    uint8_t *out = malloc(*nbytes);
    for (int64_t r = 0; r < rows; r++)
        assert_true(ggml_quantize_row(s->type, f + r * cols, cols,
                                      out + (size_t)r * ggml_row_size(s->type, cols)));
    free(hf);
    free(f);
    return out;
}

static void write_tensors(gguf_writer *w, const char *path, const spec *s, size_t n,
                          const char *skip) {
    lv_err err;
    for (size_t i = 0; i < n; i++)
        if (!skip || strcmp(s[i].gguf, skip) != 0)
            gguf_w_tensor(w, s[i].gguf, s[i].n_dims, s[i].ne, s[i].type);
    if (gguf_w_begin(w, path, &err)) fail_msg("%s", err.msg);
    for (size_t i = 0; i < n; i++) {
        if (skip && strcmp(s[i].gguf, skip) == 0) continue;
        size_t nb;
        void *d = stored(&s[i], &nb);
        if (gguf_w_data(w, d, nb, &err)) fail_msg("%s", err.msg);
        free(d);
    }
    if (gguf_w_finish(w, &err)) fail_msg("%s", err.msg);
    gguf_writer_free(w);
}

/* Writes dir/text.gguf and dir/mmproj.gguf (variant: V_*). */
static void write_pair(const char *dir, unsigned variant) {
    char path[1200];
    gguf_writer *w = gguf_writer_new();
    gguf_w_str(w, "general.architecture", "llama");
    gguf_w_u32(w, "general.file_type", 1);
    gguf_w_u32(w, "llama.context_length", 8192);
    gguf_w_u32(w, "llama.embedding_length", TD);
    gguf_w_u32(w, "llama.block_count", 1);
    gguf_w_u32(w, "llama.feed_forward_length", TF);
    gguf_w_u32(w, "llama.rope.dimension_count", 4);
    gguf_w_u32(w, "llama.attention.head_count", 2);
    gguf_w_u32(w, "llama.attention.head_count_kv", 1);
    gguf_w_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gguf_w_f32(w, "llama.rope.freq_base", 100000.0f);
    gguf_w_u32(w, "llama.vocab_size", TV);
    gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_w_str(w, "tokenizer.ggml.pre", "smollm");
    const char *toks[TV];
    memcpy(toks, TOKENS, sizeof toks);
    if (variant & V_NO_IMAGE_TOKEN) toks[6] = "<imagf>";
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", toks, TV);
    int32_t types[TV] = {3, 3, 3, 1, 1, 1, 3, 3};
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", types, TV);
    const char *merges[1] = {"a b"};
    gguf_w_arr_str(w, "tokenizer.ggml.merges", merges, 1);
    gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 7);
    gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    gguf_w_u32(w, "tokenizer.ggml.padding_token_id", 2);
    gguf_w_bool(w, "tokenizer.ggml.add_bos_token", false);
    gguf_w_str(w, "tokenizer.chat_template", "<|im_start|>{% for message in messages %}...");
    snprintf(path, sizeof path, "%s/text.gguf", dir);
    write_tensors(w, path, TEXT_SPECS, LV_ARRAY_LEN(TEXT_SPECS), NULL);

    static spec mm[MAX_MM];
    static char names[MAX_MM][2][96];
    size_t n = mm_specs(mm, names);
    if (variant & V_BAD_FC) mm[n - 1].ne[0] = VD * SCALE * SCALE / 2;
    w = gguf_writer_new();
    gguf_w_str(w, "general.architecture", "clip");
    gguf_w_str(w, "general.type", "mmproj");
    gguf_w_u32(w, "general.file_type", 1);
    gguf_w_bool(w, "clip.has_vision_encoder", true);
    gguf_w_u32(w, "clip.vision.projection_dim", TD);
    gguf_w_u32(w, "clip.vision.image_size", IMG);
    gguf_w_u32(w, "clip.vision.patch_size", PATCH);
    gguf_w_u32(w, "clip.vision.embedding_length", VD);
    gguf_w_u32(w, "clip.vision.feed_forward_length", VF);
    gguf_w_u32(w, "clip.vision.block_count", VL);
    gguf_w_u32(w, "clip.vision.attention.head_count", 2);
    float mean[3] = {0.5f, 0.5f, 0.5f}, std[3] = {0.5f, 0.5f, 0.25f};
    if (!(variant & V_NO_MEAN)) gguf_w_arr_f32(w, "clip.vision.image_mean", mean, 3);
    gguf_w_arr_f32(w, "clip.vision.image_std", std, 3);
    gguf_w_str(w, "clip.projector_type", variant & V_OTHER_PROJ ? "resampler" : "idefics3");
    gguf_w_f32(w, "clip.vision.attention.layer_norm_epsilon", 1e-5f);
    gguf_w_u32(w, "clip.vision.projector.scale_factor", SCALE);
    gguf_w_bool(w, "clip.use_gelu", true);
    if (!(variant & V_NO_PREPROC_SIZE)) gguf_w_u32(w, "clip.vision.preproc_image_size", 96);
    snprintf(path, sizeof path, "%s/mmproj.gguf", dir);
    write_tensors(w, path, mm, n, variant & V_NO_FC ? "mm.model.fc.weight" : NULL);
}

static lv_status open_config(const char *dir, lv_model_config *cfg, lv_preproc_config *pp,
                             lv_tokenizer_config *tc, lv_generation_config *gc, lv_err *err) {
    char a[1200], b[1200];
    snprintf(a, sizeof a, "%s/text.gguf", dir);
    snprintf(b, sizeof b, "%s/mmproj.gguf", dir);
    gguf *t = NULL, *m = NULL;
    lv_status st;
    if ((st = gguf_open(a, &t, err)) || (st = gguf_open(b, &m, err))) {
        gguf_close(t);
        return st;
    }
    st = gguf_model_config(t, m, cfg, pp, tc, gc, err);
    gguf_close(t);
    gguf_close(m);
    return st;
}

/* Tensor t of a set as float32 (F32/F16/BF16 or a ggml block type). */
static float *to_f32(const st_tensor *t) {
    float *y = malloc((size_t)t->n_elems * sizeof *y + 4);
    const uint8_t *p = t->data;
    if (t->dtype == LV_DTYPE_F32) {
        memcpy(y, p, (size_t)t->n_elems * 4);
    } else if (t->dtype == LV_DTYPE_F16 || t->dtype == LV_DTYPE_BF16) {
        for (int64_t i = 0; i < t->n_elems; i++) {
            uint16_t h = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
            y[i] = t->dtype == LV_DTYPE_F16 ? lv_f16_to_f32(h) : lv_bf16_to_f32(h);
        }
    } else {
        int id = dtype_ggml_id(t->dtype);
        int64_t cols = t->shape[t->n_dims - 1], rows = t->n_elems / cols;
        size_t rb = ggml_row_size((uint32_t)id, cols);
        if (id < 0 || !rb) fail_msg("%s: dtype %s", t->name, dtype_name(t->dtype));
        for (int64_t r = 0; r < rows; r++)
            if (!ggml_dequantize_row((uint32_t)id, p + (size_t)r * rb, cols, y + r * cols))
                fail_msg("%s: cannot dequantize", t->name);
    }
    return y;
}

static void check_hand_config(const lv_model_config *c, const lv_preproc_config *pp,
                              int longest_edge) {
    assert_string_equal(c->model_type, "smolvlm");
    assert_true(hf_is_idefics3(c));
    assert_string_equal(c->text.model_type, "llama");
    assert_int_equal(c->text.dim, TD);
    assert_int_equal(c->text.hidden_dim, TF);
    assert_int_equal(c->text.n_layers, 1);
    assert_int_equal(c->text.n_heads, 2);
    assert_int_equal(c->text.n_kv_heads, 1);
    assert_int_equal(c->text.head_dim, 4);
    assert_int_equal(c->text.vocab_size, TV);
    assert_int_equal(c->text.max_pos, 8192);
    assert_true(fabs(c->text.rope_theta - 100000.0) < 1e-3);
    assert_false(c->text.tie_word_embeddings);
    assert_int_equal(c->text.bos_id, 1);
    assert_int_equal(c->text.n_eos, 1);
    assert_int_equal(c->text.eos_ids[0], 7);
    assert_int_equal(c->pad_token_id, 2);
    assert_int_equal(c->image_token_id, 6);
    assert_string_equal(c->vision.model_type, "smolvlm_vision");
    assert_string_equal(c->vision.hidden_act, "gelu_pytorch_tanh");
    assert_int_equal(c->vision.dim, VD);
    assert_int_equal(c->vision.hidden_dim, VF);
    assert_int_equal(c->vision.n_layers, VL);
    assert_int_equal(c->vision.n_heads, 2);
    assert_int_equal(c->vision.head_dim, 4);
    assert_int_equal(c->vision.image_size, IMG);
    assert_int_equal(c->vision.patch_size, PATCH);
    assert_true(fabs(c->vision.ln_eps - 1e-5) < 1e-9); /* the file's value */
    assert_int_equal(c->scale_factor, SCALE);
    assert_int_equal(c->image_seq_length, 4); /* (32 / 8)² / 2² */
    assert_string_equal(c->feature_select_strategy, "full");
    assert_int_equal(c->n_feature_layers, 1);
    assert_int_equal(c->feature_layers[0], -1);
    assert_int_equal(c->n_pinpoints, 0);
    assert_false(c->use_image_newline);
    assert_false(c->projector_bias);
    assert_int_equal(pp->kind, LV_IMGPROC_IDEFICS3);
    assert_int_equal(pp->longest_edge, longest_edge);
    assert_int_equal(pp->max_image_size, IMG);
    assert_true(pp->do_image_splitting);
    assert_true(pp->do_resize && pp->do_rescale && pp->do_normalize && pp->do_pad);
    assert_int_equal(pp->resample, 1);
    assert_true(fabs(pp->rescale_factor - 1.0 / 255.0) < 1e-12);
    assert_true(pp->image_mean[0] == 0.5 && pp->image_std[2] == 0.25);
}

static void hand_pair(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("smol_hand");
    write_pair(dir, V_NONE);
    lv_model_config c;
    lv_preproc_config pp;
    lv_tokenizer_config tc;
    lv_generation_config gc;
    lv_err err;
    if (open_config(dir, &c, &pp, &tc, &gc, &err)) fail_msg("%s", err.msg);
    check_hand_config(&c, &pp, 96);
    assert_string_equal(tc.bos_token, "<|im_start|>");
    assert_string_equal(tc.eos_token, "<end_of_utterance>");
    assert_string_equal(tc.pad_token, "<|im_end|>");
    assert_string_equal(tc.unk_token, "<|endoftext|>");
    assert_non_null(tc.chat_template);
    assert_true(tc.has_add_bos_token && !tc.add_bos_token);
    assert_int_equal(gc.eos_token_ids[0], 7);
    hf_tokcfg_deinit(&tc);

    /* every tensor under its canonical name, in Hugging Face order */
    char a[1200], b[1200];
    snprintf(a, sizeof a, "%s/text.gguf", dir);
    snprintf(b, sizeof b, "%s/mmproj.gguf", dir);
    lv_model_dir md;
    if (mdir_open_gguf(a, b, MDIR_WEIGHTS, &md, &err)) fail_msg("%s", err.msg);
    assert_string_equal(md.config.model_type, "smolvlm");
    assert_int_equal(md.preproc.longest_edge, 96);
    static spec mm[MAX_MM];
    static char names[MAX_MM][2][96];
    size_t n_mm = mm_specs(mm, names), n_text = LV_ARRAY_LEN(TEXT_SPECS);
    assert_int_equal(st_count(md.weights), n_mm + n_text);
    for (size_t i = 0; i < n_text + n_mm; i++) {
        const spec *s = i < n_text ? &TEXT_SPECS[i] : &mm[i - n_text];
        const st_tensor *t = st_find(md.weights, s->canon);
        if (!t) fail_msg("%s (%s) is missing", s->canon, s->gguf);
        assert_int_equal(t->n_dims, s->n_dims);
        for (int d = 0; d < s->n_dims; d++)
            if (t->shape[d] != s->ne[s->n_dims - 1 - d])
                fail_msg("%s: dim %d is %lld", s->canon, d, (long long)t->shape[d]);
        assert_int_equal(t->dtype, s->type == GGML_F16 ? LV_DTYPE_F16 : LV_DTYPE_F32);
        float *y = to_f32(t);
        for (int64_t j = 0; j < t->n_elems; j++)
            if (y[j] != value(s->canon, j))
                fail_msg("%s[%lld] = %g, expected %g", s->canon, (long long)j, y[j],
                         value(s->canon, j));
        free(y);
    }
    mdir_close(&md);
}

static void old_upload(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("smol_old");
    write_pair(dir, V_NO_PREPROC_SIZE);
    lv_model_config c;
    lv_preproc_config pp;
    lv_tokenizer_config tc;
    lv_generation_config gc;
    lv_err err;
    if (open_config(dir, &c, &pp, &tc, &gc, &err)) fail_msg("%s", err.msg);
    check_hand_config(&c, &pp, 4 * IMG);
    hf_tokcfg_deinit(&tc);
}

static void pair_errors(void **state) {
    (void)state;
    static const struct {
        unsigned variant;
        lv_status st;
        const char *needle;
    } cases[] = {
        {V_NO_MEAN, LV_ERR_FORMAT, "clip.vision.image_mean"},
        {V_OTHER_PROJ, LV_ERR_UNSUPPORTED, "resampler"},
        {V_BAD_FC, LV_ERR_FORMAT, "mm.model.fc.weight"},
        {V_NO_FC, LV_ERR_FORMAT, "mm.model.fc.weight"},
        {V_NO_IMAGE_TOKEN, LV_ERR_FORMAT, "<image>"},
    };
    for (size_t i = 0; i < LV_ARRAY_LEN(cases); i++) {
        char tag[32];
        snprintf(tag, sizeof tag, "smol_err%zu", i);
        const char *dir = tu_tmpdir(tag);
        write_pair(dir, cases[i].variant);
        lv_model_config c;
        lv_preproc_config pp;
        lv_tokenizer_config tc;
        lv_generation_config gc;
        lv_err err = {{0}};
        lv_status st = open_config(dir, &c, &pp, &tc, &gc, &err);
        if (st != cases[i].st || !strstr(err.msg, cases[i].needle))
            fail_msg("case %zu: status %d, message '%s' (expected %d naming %s)", i, st, err.msg,
                     cases[i].st, cases[i].needle);
    }
}

/* ---- the synthetic tokenizer -------------------------------------------------- */

static int vocab_id(json_t *root, const char *piece) {
    json_t *v = json_object_get(json_object_get(json_object_get(root, "model"), "vocab"), piece);
    if (v) return (int)json_integer_value(v);
    json_t *a;
    size_t i;
    json_array_foreach(json_object_get(root, "added_tokens"), i, a) {
        if (strcmp(json_string_value(json_object_get(a, "content")), piece) == 0)
            return (int)json_integer_value(json_object_get(a, "id"));
    }
    return -1;
}

static void synth_vocab(void **state) {
    (void)state;
    char *a, *b;
    size_t la, lb;
    lv_err err;
    assert_int_equal(synth_tokenizer_json(128, &a, &la, &err), LV_OK);
    assert_int_equal(synth_tokenizer_json(128, &b, &lb, &err), LV_OK);
    assert_true(la == lb && memcmp(a, b, la) == 0); /* deterministic */
    free(b);
    json_t *root = json_loadb(a, la, 0, NULL);
    assert_non_null(root);
    json_t *model = json_object_get(root, "model");
    assert_int_equal(json_object_size(json_object_get(model, "vocab")), SYNTH_BASE_VOCAB);
    assert_int_equal(json_array_size(json_object_get(model, "merges")),
                     SYNTH_BASE_VOCAB - 17 - 256);
    assert_int_equal(json_array_size(json_object_get(root, "added_tokens")), 17 + 128);
    assert_false(json_is_true(json_object_get(model, "byte_fallback")));
    assert_int_equal(vocab_id(root, "<|endoftext|>"), 0);
    assert_int_equal(vocab_id(root, "<|im_start|>"), 1);
    assert_int_equal(vocab_id(root, "<|im_end|>"), 2);
    assert_int_equal(vocab_id(root, "<empty_output>"), 16);
    assert_int_equal(vocab_id(root, "!"), 17);
    assert_int_equal(vocab_id(root, "\xc4\xa0"), 17 + 188 + 32); /* byte 0x20 (space): Ġ */
    assert_int_equal(vocab_id(root, "<global-img>"), 49152);
    assert_int_equal(vocab_id(root, "<row_1_col_1>"), 49153);
    assert_int_equal(vocab_id(root, "<row_6_col_6>"), 49188);
    assert_int_equal(vocab_id(root, "<fake_token_around_image>"), 49189);
    assert_int_equal(vocab_id(root, "<image>"), 49190);
    assert_int_equal(vocab_id(root, "<|reserved_special_token_87|>"), 49278);
    assert_int_equal(vocab_id(root, "<end_of_utterance>"), 49279);
    const char *pre = json_string_value(json_object_get(
        json_array_get(json_object_get(json_object_get(root, "pre_tokenizer"), "pretokenizers"), 0),
        "type"));
    assert_string_equal(pre, "Digits");
    json_decref(root);
    free(a);
    /* SmolVLM-Instruct (2.2B): three added tokens */
    assert_int_equal(synth_tokenizer_json(3, &a, &la, &err), LV_OK);
    root = json_loadb(a, la, 0, NULL);
    assert_int_equal(vocab_id(root, "<fake_token_around_image>"), 49152);
    assert_int_equal(vocab_id(root, "<image>"), 49153);
    assert_int_equal(vocab_id(root, "<end_of_utterance>"), 49154);
    assert_int_equal(vocab_id(root, "<global-img>"), -1);
    json_decref(root);
    free(a);
    assert_int_equal(synth_tokenizer_json(5, &a, &la, &err), LV_ERR_ARG);
}

/* ---- the writers on the tiny preset -------------------------------------------- */

static qsource *tiny_source(void) {
    qsource *src;
    lv_err err;
    if (qsource_open_random("tiny-smolvlm", 7, NULL, &src, &err)) fail_msg("%s", err.msg);
    return src;
}

static void check_tiny_config(const lv_model_config *c, const lv_model_config *want) {
    assert_true(hf_is_idefics3(c));
    assert_int_equal(c->text.dim, want->text.dim);
    assert_int_equal(c->text.hidden_dim, want->text.hidden_dim);
    assert_int_equal(c->text.n_layers, want->text.n_layers);
    assert_int_equal(c->text.n_heads, want->text.n_heads);
    assert_int_equal(c->text.n_kv_heads, want->text.n_kv_heads);
    assert_int_equal(c->text.head_dim, want->text.head_dim);
    assert_int_equal(c->text.vocab_size, 49280);
    assert_int_equal(c->text.max_pos, want->text.max_pos);
    assert_true(fabs(c->text.rms_eps - 1e-5) < 1e-9);
    assert_true(fabs(c->text.rope_theta - 100000.0) < 1e-3);
    assert_int_equal(c->image_token_id, 49190);
    assert_int_equal(c->vision.dim, 64);
    assert_int_equal(c->vision.hidden_dim, 128);
    assert_int_equal(c->vision.n_layers, 2);
    assert_int_equal(c->vision.n_heads, 4);
    assert_int_equal(c->vision.image_size, 64);
    assert_int_equal(c->vision.patch_size, 16);
    assert_true(fabs(c->vision.ln_eps - 1e-6) < 1e-10);
    assert_string_equal(c->vision.hidden_act, "gelu_pytorch_tanh");
    assert_int_equal(c->scale_factor, 2);
    assert_int_equal(c->image_seq_length, 4);
}

static void export_gguf(void **state) {
    (void)state;
    qsource *src = tiny_source();
    const lv_model_config *want = qsource_config(src);
    assert_string_equal(want->model_type, "smolvlm");
    const char *dir = tu_tmpdir("smol_gguf");
    lv_err err;
    if (gguf_export(src, dir, LV_DTYPE_F16, NULL, NULL, &err)) fail_msg("%s", err.msg);
    char a[1200], b[1200];
    snprintf(a, sizeof a, "%s/text.gguf", dir);
    snprintf(b, sizeof b, "%s/mmproj.gguf", dir);

    /* the keys llama.cpp reads */
    gguf *g;
    if (gguf_open(a, &g, &err)) fail_msg("%s", err.msg);
    const char *s;
    size_t n;
    assert_int_equal(gguf_get_str(g, "tokenizer.ggml.model", &s, &n, NULL, &err), LV_OK);
    assert_true(n == 4 && !memcmp(s, "gpt2", 4));
    assert_int_equal(gguf_get_str(g, "tokenizer.ggml.pre", &s, &n, NULL, &err), LV_OK);
    assert_true(n == 6 && !memcmp(s, "smollm", 6));
    const gguf_kv *kv;
    bool found = true;
    assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.scores", &kv, &found, &err), LV_OK);
    assert_false(found);
    assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.merges", &kv, NULL, &err), LV_OK);
    assert_int_equal(kv->n, SYNTH_BASE_VOCAB - 17 - 256);
    assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.token_type", &kv, NULL, &err), LV_OK);
    assert_int_equal(kv->n, 49280);
    assert_int_equal(gguf_arr_int(kv, 0), 3);     /* <|endoftext|>: special added token */
    assert_int_equal(gguf_arr_int(kv, 300), 1);   /* a merge: normal */
    assert_int_equal(gguf_arr_int(kv, 49190), 3); /* <image> */
    int64_t v;
    assert_int_equal(gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v, NULL, &err), LV_OK);
    assert_int_equal(v, 1);
    assert_int_equal(gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v, NULL, &err), LV_OK);
    assert_int_equal(v, 49279);
    assert_int_equal(gguf_get_int(g, "tokenizer.ggml.padding_token_id", &v, NULL, &err), LV_OK);
    assert_int_equal(v, 2);
    assert_int_equal(gguf_get_int(g, "tokenizer.ggml.unknown_token_id", &v, NULL, &err), LV_OK);
    assert_int_equal(v, 0);
    assert_int_equal(gguf_get_str(g, "tokenizer.chat_template", &s, &n, NULL, &err), LV_OK);
    assert_true(n > 12 && !memcmp(s, "<|im_start|>", 12));
    gguf_close(g);
    if (gguf_open(b, &g, &err)) fail_msg("%s", err.msg);
    assert_int_equal(gguf_get_str(g, "clip.projector_type", &s, &n, NULL, &err), LV_OK);
    assert_true(n == 8 && !memcmp(s, "idefics3", 8));
    assert_int_equal(gguf_get_int(g, "clip.vision.projection_dim", &v, NULL, &err), LV_OK);
    assert_int_equal(v, 256);
    assert_int_equal(gguf_get_int(g, "clip.vision.preproc_image_size", &v, NULL, &err), LV_OK);
    assert_int_equal(v, 256);
    static const struct {
        const char *name;
        uint32_t type;
    } types[] = {{"v.patch_embd.weight", GGML_F32},   {"v.position_embd.weight", GGML_F32},
                 {"v.patch_embd.bias", GGML_F32},     {"v.blk.1.attn_q.weight", GGML_F16},
                 {"v.blk.1.ffn_up.weight", GGML_F16}, {"v.post_ln.weight", GGML_F32},
                 {"mm.model.fc.weight", GGML_F16}};
    for (size_t i = 0; i < LV_ARRAY_LEN(types); i++) {
        const gguf_tensor *t = gguf_find_tensor(g, types[i].name);
        if (!t || t->type != types[i].type)
            fail_msg("%s: missing or of type %u", types[i].name, t ? t->type : 0);
    }
    const gguf_tensor *up = gguf_find_tensor(g, "v.blk.0.ffn_up.weight");
    assert_int_equal(up->ne[0], 64); /* fc1: [128, 64] in PyTorch order */
    assert_int_equal(up->ne[1], 128);
    assert_null(gguf_find_tensor(g, "v.class_embd"));
    assert_null(gguf_find_tensor(g, "v.pre_ln.weight"));
    assert_null(gguf_find_tensor(g, "mm.0.weight"));
    gguf_close(g);

    /* read back: configs and every tensor */
    lv_model_dir md;
    if (mdir_open_gguf(a, b, MDIR_WEIGHTS, &md, &err)) fail_msg("%s", err.msg);
    check_tiny_config(&md.config, want);
    assert_int_equal(md.config.text.eos_ids[0], 49279);
    assert_int_equal(md.config.text.bos_id, 1);
    assert_int_equal(md.config.pad_token_id, 2);
    assert_int_equal(md.preproc.kind, LV_IMGPROC_IDEFICS3);
    assert_int_equal(md.preproc.longest_edge, 256);
    assert_int_equal(md.preproc.max_image_size, 64);
    assert_true(md.preproc.image_mean[1] == 0.5 && md.preproc.image_std[1] == 0.5);
    assert_string_equal(md.tokenizer_config.eos_token, "<end_of_utterance>");
    assert_string_equal(md.tokenizer_config.bos_token, "<|im_start|>");
    assert_int_equal(st_count(md.weights), qsource_count(src));
    for (size_t i = 0; i < qsource_count(src); i++) {
        const qs_tensor *q = qsource_at(src, i);
        const st_tensor *t = st_find(md.weights, q->name);
        if (!t) fail_msg("%s is missing", q->name);
        assert_int_equal(t->n_dims, q->n_dims);
        for (int d = 0; d < q->n_dims; d++) assert_int_equal(t->shape[d], q->shape[d]);
        float *want_v = malloc((size_t)q->n_elems * sizeof *want_v);
        if (qsource_read(src, i, want_v, &err)) fail_msg("%s", err.msg);
        float *y = to_f32(t);
        for (int64_t j = 0; j < q->n_elems; j++) {
            float e = t->dtype == LV_DTYPE_F32 ? 0.0f : fabsf(want_v[j]) / 1024.0f + 1e-7f;
            if (fabsf(y[j] - want_v[j]) > e)
                fail_msg("%s[%lld] = %g, expected %g", q->name, (long long)j, y[j], want_v[j]);
        }
        free(y);
        free(want_v);
    }
    mdir_close(&md);

    /* Q4_K: the text rows are whole super-blocks; read back as well */
    const char *dq = tu_tmpdir("smol_gguf_q4k");
    if (gguf_export(src, dq, LV_DTYPE_Q4_K, NULL, NULL, &err)) fail_msg("%s", err.msg);
    snprintf(a, sizeof a, "%s/text.gguf", dq);
    snprintf(b, sizeof b, "%s/mmproj.gguf", dq);
    if (mdir_open_gguf(a, b, MDIR_WEIGHTS, &md, &err)) fail_msg("%s", err.msg);
    check_tiny_config(&md.config, want);
    const st_tensor *q =
        st_find(md.weights, "language_model.model.layers.0.self_attn.q_proj.weight");
    assert_non_null(q);
    assert_int_equal(q->dtype, LV_DTYPE_Q4_K);
    assert_int_equal(st_count(md.weights), qsource_count(src));
    mdir_close(&md);
    qsource_close(src);
}

static void export_mlx(void **state) {
    (void)state;
    qsource *src = tiny_source();
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/out", tu_tmpdir("smol_mlx"));
    mlx_export_opts o = {.bits = 4, .group = 64};
    lv_err err;
    if (mlx_export(src, dir, &o, NULL, NULL, &err)) fail_msg("%s", err.msg);
    char p[1200];
    static const char *const files[] = {"config.json",
                                        "model.safetensors",
                                        "tokenizer.json",
                                        "tokenizer_config.json",
                                        "preprocessor_config.json",
                                        "processor_config.json",
                                        "generation_config.json",
                                        "chat_template.json"};
    for (size_t i = 0; i < LV_ARRAY_LEN(files); i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        if (!lv_is_file(p)) fail_msg("%s is missing", p);
    }
    snprintf(p, sizeof p, "%s/config.json", dir);
    lv_model_config c;
    if (hf_config_load(p, &c, &err)) fail_msg("%s", err.msg);
    check_tiny_config(&c, qsource_config(src));
    assert_true(c.quant.present);
    assert_int_equal(c.quant.bits, 4);
    assert_int_equal(c.quant.group_size, 64);

    /* mlx-vlm's names, as written */
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    char *hdr;
    size_t len;
    if (lv_read_file(p, 64u << 20, &hdr, &len, &err)) fail_msg("%s", err.msg);
    uint64_t hl;
    memcpy(&hl, hdr, 8);
    json_t *h = json_loadb(hdr + 8, (size_t)hl, 0, NULL);
    assert_non_null(h);
    assert_non_null(json_object_get(h, "vision_model.encoder.layers.0.mlp.fc1.weight"));
    assert_non_null(json_object_get(h, "vision_model.post_layernorm.bias"));
    assert_non_null(json_object_get(h, "connector.modality_projection.proj.scales"));
    assert_non_null(json_object_get(h, "language_model.layers.1.self_attn.q_proj.biases"));
    assert_non_null(json_object_get(h, "language_model.embed_tokens.scales"));
    assert_non_null(json_object_get(h, "language_model.norm.weight"));
    assert_non_null(json_object_get(h, "language_model.lm_head.scales"));
    assert_null(json_object_get(h, "vision_tower.vision_model.post_layernorm.bias"));
    assert_null(json_object_get(h, "vision_model.encoder.layers.0.mlp.fc1.scales"));
    json_decref(h);
    free(hdr);

    /* the project's loader: canonical names, quantized modules, values */
    st_set *w;
    if (st_open(dir, &w, &err)) fail_msg("%s", err.msg);
    const st_tensor *fc = st_find(w, "connector.modality_projection.proj.weight"),
                    *sc = st_find(w, "connector.modality_projection.proj.scales"),
                    *bi = st_find(w, "connector.modality_projection.proj.biases");
    assert_non_null(fc);
    assert_non_null(sc);
    assert_non_null(bi);
    assert_int_equal(fc->dtype, LV_DTYPE_U32);
    assert_int_equal(fc->shape[0], 256);
    assert_int_equal(fc->shape[1], 256 * 4 / 32);
    const st_tensor *pe = st_find(w, "vision_tower.vision_model.embeddings.patch_embedding.weight");
    assert_non_null(pe);
    assert_int_equal(pe->shape[3], 3); /* OHWI */
    assert_int_equal(st_find(w, "vision_tower.vision_model.encoder.layers.1.mlp.fc2.weight")->dtype,
                     LV_DTYPE_F16);
    assert_int_equal(st_find(w, "language_model.model.layers.0.mlp.down_proj.weight")->dtype,
                     LV_DTYPE_U32);
    assert_int_equal(st_find(w, "language_model.lm_head.weight")->dtype, LV_DTYPE_U32);
    /* the connector back within 4-bit affine error: half a step, up to one step at the
     * extreme opposite the edge (MLX rounds edge / scale and re-derives the scale, so
     * that extreme may be clipped; formats.md §3.7) */
    long si = qsource_find(src, "connector.modality_projection.proj.weight");
    const qs_tensor *qt = qsource_at(src, (size_t)si);
    float *ref = malloc((size_t)qt->n_elems * sizeof *ref), row[256], scales[4], biases[4];
    if (qsource_read(src, (size_t)si, ref, &err)) fail_msg("%s", err.msg);
    for (int r = 0; r < 256; r++) {
        const uint16_t *s16 = (const uint16_t *)sc->data + r * 4,
                       *b16 = (const uint16_t *)bi->data + r * 4;
        for (int g = 0; g < 4; g++)
            scales[g] = lv_f16_to_f32(s16[g]), biases[g] = lv_f16_to_f32(b16[g]);
        mlx_affine_dequantize_row((const uint32_t *)fc->data + r * 32, scales, biases, 256, 4, 64,
                                  row);
        for (int j = 0; j < 256; j++)
            if (fabsf(row[j] - ref[r * 256 + j]) > fabsf(scales[j / 64]) + 2e-4f)
                fail_msg("connector[%d][%d] = %g, expected %g (scale %g bias %g)", r, j, row[j],
                         ref[r * 256 + j], scales[j / 64], biases[j / 64]);
    }
    free(ref);
    st_close(w);

    /* the whole directory opens as a model directory */
    lv_model_dir md;
    if (mdir_open(dir, MDIR_WEIGHTS, &md, &err)) fail_msg("%s", err.msg);
    check_tiny_config(&md.config, qsource_config(src));
    assert_int_equal(md.preproc.kind, LV_IMGPROC_IDEFICS3);
    assert_non_null(md.tokenizer_path);
    mdir_close(&md);
    qsource_close(src);
}

/* ---- a Hugging Face SmolVLM directory as the source ------------------------------- */

/* The transformers name of a canonical one (spec smolvlm.md §1.3). */
static void hf_name(const char *canon, char *out, size_t cap) {
    static const struct {
        const char *from, *to;
    } rules[] = {{"vision_tower.vision_model.", "model.vision_model."},
                 {"language_model.model.", "model.text_model."},
                 {"language_model.lm_head.", "lm_head."},
                 {"connector.", "model.connector."}};
    for (size_t i = 0; i < LV_ARRAY_LEN(rules); i++) {
        size_t n = strlen(rules[i].from);
        if (strncmp(canon, rules[i].from, n) == 0) {
            snprintf(out, cap, "%s%s", rules[i].to, canon + n);
            return;
        }
    }
    snprintf(out, cap, "%s", canon);
}

/* Writes the tiny preset as SmolVLM2 stores it on the hub (F32 safetensors under
 * transformers' names, the JSON files) into dir. */
static void write_hf_dir(const qsource *src, const char *dir) {
    size_t n = qsource_count(src);
    stw_entry *e = calloc(n, sizeof *e);
    char(*names)[160] = calloc(n, sizeof *names);
    for (size_t i = 0; i < n; i++) {
        const qs_tensor *t = qsource_at(src, i);
        hf_name(t->name, names[i], sizeof names[i]);
        e[i].name = names[i];
        e[i].dtype = LV_DTYPE_F32;
        e[i].n_dims = t->n_dims;
        for (int d = 0; d < t->n_dims; d++) e[i].shape[d] = t->shape[d];
    }
    char p[1200];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    stw *w;
    lv_err err;
    if (stw_begin(p, e, n, "pt", &w, &err)) fail_msg("%s", err.msg);
    for (size_t i = 0; i < n; i++) {
        float *v = malloc((size_t)qsource_at(src, i)->n_elems * sizeof *v + 4);
        if (qsource_read(src, i, v, &err) || stw_write_tensor(w, i, v, &err))
            fail_msg("%s", err.msg);
        free(v);
    }
    if (stw_finish(w, &err)) fail_msg("%s", err.msg);
    free(e);
    free(names);
    const qs_preset *ps = qsource_preset(src);
    tu_write_file(dir, "config.json", ps->config_json, strlen(ps->config_json));
    tu_write_file(dir, "preprocessor_config.json", ps->preproc_json, strlen(ps->preproc_json));
    tu_write_file(dir, "processor_config.json", ps->processor_json, strlen(ps->processor_json));
    tu_write_file(dir, "generation_config.json", ps->generation_json, strlen(ps->generation_json));
    tu_write_file(dir, "tokenizer_config.json", ps->tokenizer_config_json,
                  strlen(ps->tokenizer_config_json));
    json_t *ct = json_pack("{s:s}", "chat_template", ps->chat_template);
    char *ctt = json_dumps(ct, 0);
    tu_write_file(dir, "chat_template.json", ctt, strlen(ctt));
    free(ctt);
    json_decref(ct);
    char *tj;
    size_t len;
    if (qsource_tokenizer_read(src, &tj, &len, &err)) fail_msg("%s", err.msg);
    tu_write_file(dir, "tokenizer.json", tj, len);
    free(tj);
}

static void hf_dir_source(void **state) {
    (void)state;
    qsource *rnd = tiny_source();
    char hf[1100], out[1100], mlx[1100], a[1200], b[1200];
    snprintf(hf, sizeof hf, "%s", tu_tmpdir("smol_hf"));
    snprintf(out, sizeof out, "%s", tu_tmpdir("smol_hf_gguf"));
    snprintf(mlx, sizeof mlx, "%s/out", tu_tmpdir("smol_hf_mlx"));
    write_hf_dir(rnd, hf);
    qsource *src;
    lv_err err;
    if (qsource_open_dir(hf, &src, &err)) fail_msg("%s", err.msg);
    check_tiny_config(qsource_config(src), qsource_config(rnd));
    assert_int_equal(qsource_count(src), qsource_count(rnd));
    if (gguf_export(src, out, LV_DTYPE_F16, NULL, NULL, &err)) fail_msg("%s", err.msg);
    snprintf(a, sizeof a, "%s/text.gguf", out);
    snprintf(b, sizeof b, "%s/mmproj.gguf", out);
    lv_model_dir md;
    if (mdir_open_gguf(a, b, MDIR_WEIGHTS, &md, &err)) fail_msg("%s", err.msg);
    check_tiny_config(&md.config, qsource_config(rnd));
    assert_int_equal(md.config.text.eos_ids[0],
                     49279); /* tokenizer_config's, not text_config's 2 */
    assert_int_equal(md.config.text.bos_id, 1);
    assert_int_equal(md.config.pad_token_id, 2);
    assert_int_equal(md.preproc.longest_edge, 256);
    assert_non_null(md.tokenizer_config.chat_template);
    assert_non_null(strstr(md.tokenizer_config.chat_template, "<end_of_utterance>"));
    assert_int_equal(st_count(md.weights), qsource_count(rnd));
    for (size_t i = 0; i < qsource_count(rnd); i++) {
        const qs_tensor *q = qsource_at(rnd, i);
        const st_tensor *t = st_find(md.weights, q->name);
        if (!t) fail_msg("%s is missing", q->name);
        float *want = malloc((size_t)q->n_elems * sizeof *want), *y = to_f32(t);
        if (qsource_read(rnd, i, want, &err)) fail_msg("%s", err.msg);
        for (int64_t j = 0; j < q->n_elems; j++)
            if (fabsf(y[j] - want[j]) >
                (t->dtype == LV_DTYPE_F32 ? 0.0f : fabsf(want[j]) / 1024.0f + 1e-7f))
                fail_msg("%s[%lld] = %g, expected %g", q->name, (long long)j, y[j], want[j]);
        free(want);
        free(y);
    }
    mdir_close(&md);
    mlx_export_opts o = {.bits = 8, .group = 64};
    if (mlx_export(src, mlx, &o, NULL, NULL, &err)) fail_msg("%s", err.msg);
    st_set *w;
    if (st_open(mlx, &w, &err)) fail_msg("%s", err.msg);
    const st_tensor *t = st_find(w, "language_model.model.layers.1.mlp.up_proj.weight");
    assert_non_null(t);
    assert_string_equal(t->orig_name, "language_model.layers.1.mlp.up_proj.weight");
    assert_int_equal(t->dtype, LV_DTYPE_U32);
    t = st_find(w, "vision_tower.vision_model.embeddings.position_embedding.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, LV_DTYPE_F32); /* float, in the source's dtype */
    st_close(w);
    /* the source's files come along */
    static const char *const files[] = {"processor_config.json", "generation_config.json",
                                        "chat_template.json", "tokenizer_config.json"};
    for (size_t i = 0; i < LV_ARRAY_LEN(files); i++) {
        char p[1200];
        snprintf(p, sizeof p, "%s/%s", mlx, files[i]);
        if (!lv_is_file(p)) fail_msg("%s is missing", p);
    }
    qsource_close(src);
    qsource_close(rnd);
}

/* ---- the engine on an exported pair -------------------------------------------- */

/* An image question through the engine (request → gen_run): the model
 * opens, loads, encodes and answers 4 greedy tokens. */
static void ask(const char *path, const char *mmproj) {
    llava *m = NULL;
    lv_err err;
    if (llava_open2(path, mmproj, &m, &err) || llava_load(m, "cpu", 2, &err))
        fail_msg("%s: %s", path, err.msg);
    char img[1100];
    snprintf(img, sizeof img, "%s/images/exif_orient_1.jpg", tu_env("LLAVA_TEST_ASSETS"));
    img_tensor px;
    int n_tok;
    int32_t *ids;
    size_t n_ids;
    if (request_load_image(m, img, &px, &n_tok, NULL, NULL, &err) ||
        request_prompt_ids(m, "What is in the image?", false, &px, 1, &ids, &n_ids, &err))
        fail_msg("%s: %s", path, err.msg);
    assert_int_equal(llava_count_image_ids(m, ids, (int)n_ids), n_tok);
    gen_params p;
    gen_params_default(&p, m);
    p.max_tokens = 4;
    p.ignore_eos = true;
    gen_result r;
    if (gen_run(m, ids, (int)n_ids, &px, 1, &p, NULL, &r, &err)) fail_msg("%s: %s", path, err.msg);
    assert_int_equal(r.n_ids, 4);
    gen_result_free(&r);
    free(ids);
    img_tensor_free(&px);
    llava_free(m);
}

/* tiny-smolvlm written as a Q8_0 GGUF pair and as an MLX int4 directory:
 * both answer an image question. */
static void engine_load(void **state) {
    (void)state;
    qsource *src = tiny_source();
    char dir[1100], mlx[1100];
    snprintf(dir, sizeof dir, "%s", tu_tmpdir("smol_engine"));
    snprintf(mlx, sizeof mlx, "%s/mlx", tu_tmpdir("smol_engine_mlx"));
    lv_err err;
    mlx_export_opts o = {.bits = 4, .group = 64};
    if (gguf_export(src, dir, LV_DTYPE_Q8_0, NULL, NULL, &err) ||
        mlx_export(src, mlx, &o, NULL, NULL, &err))
        fail_msg("%s", err.msg);
    qsource_close(src);
    char a[1200], b[1200];
    snprintf(a, sizeof a, "%s/text.gguf", dir);
    snprintf(b, sizeof b, "%s/mmproj.gguf", dir);
    ask(a, b);
    ask(mlx, NULL);
}

/* ---- a real llama.cpp-converted pair ------------------------------------------- */

static void real_pair(void **state) {
    (void)state;
    char gdir[1024], hdir[1024], a[1100], b[1100], p[1100];
    snprintf(gdir, sizeof gdir, "%s/smolvlm/smolvlm-tiny-gguf", tu_env("LLAVA_TEST_DATA"));
    snprintf(hdir, sizeof hdir, "%s/smolvlm/smolvlm-tiny", tu_env("LLAVA_TEST_DATA"));
    snprintf(a, sizeof a, "%s/text.gguf", gdir);
    snprintf(b, sizeof b, "%s/mmproj.gguf", gdir);
    if (!lv_is_file(a) || !lv_is_file(b)) {
        print_message("skipped: %s/{text,mmproj}.gguf are not there yet\n", gdir);
        skip();
    }
    lv_model_dir md;
    lv_err err;
    if (mdir_open_gguf(a, b, MDIR_WEIGHTS, &md, &err)) fail_msg("%s", err.msg);
    assert_true(hf_is_idefics3(&md.config));
    assert_int_equal(md.preproc.kind, LV_IMGPROC_IDEFICS3);
    snprintf(p, sizeof p, "%s/config.json", hdir);
    if (lv_is_file(p)) {
        lv_model_config c;
        if (hf_config_load(p, &c, &err)) fail_msg("%s", err.msg);
        const lv_model_config *g = &md.config;
        assert_int_equal(g->text.dim, c.text.dim);
        assert_int_equal(g->text.hidden_dim, c.text.hidden_dim);
        assert_int_equal(g->text.n_layers, c.text.n_layers);
        assert_int_equal(g->text.n_heads, c.text.n_heads);
        assert_int_equal(g->text.n_kv_heads, c.text.n_kv_heads);
        assert_int_equal(g->text.head_dim, c.text.head_dim);
        assert_true(fabs(g->text.rope_theta - c.text.rope_theta) <= 1e-6 * c.text.rope_theta);
        assert_int_equal(g->vision.dim, c.vision.dim);
        assert_int_equal(g->vision.hidden_dim, c.vision.hidden_dim);
        assert_int_equal(g->vision.n_layers, c.vision.n_layers);
        assert_int_equal(g->vision.n_heads, c.vision.n_heads);
        assert_int_equal(g->vision.image_size, c.vision.image_size);
        assert_int_equal(g->vision.patch_size, c.vision.patch_size);
        assert_int_equal(g->scale_factor, c.scale_factor);
        assert_int_equal(g->image_seq_length, c.image_seq_length);
        assert_int_equal(g->image_token_id, c.image_token_id);
    }
    st_set *hf;
    if (st_open(hdir, &hf, &err)) fail_msg("%s", err.msg);
    size_t n_cmp = 0;
    for (size_t i = 0; i < st_count(md.weights); i++) {
        const st_tensor *t = st_at(md.weights, i), *r = st_find(hf, t->name);
        if (!r) fail_msg("%s (from %s) has no Hugging Face twin", t->name, t->file_name);
        assert_int_equal(t->n_dims, r->n_dims);
        for (int d = 0; d < t->n_dims; d++)
            if (t->shape[d] != r->shape[d]) fail_msg("%s: dim %d differs", t->name, d);
        float *x = to_f32(t), *y = to_f32(r);
        int64_t cols = t->shape[t->n_dims - 1];
        for (int64_t j = 0; j < t->n_elems; j++) {
            /* F32 exact, F16 rounding, block types: a step of the row's largest value */
            double tol = t->dtype == LV_DTYPE_F32    ? 1e-7
                         : t->dtype == LV_DTYPE_F16  ? fabs(y[j]) / 1024.0 + 1e-7
                         : t->dtype == LV_DTYPE_BF16 ? fabs(y[j]) / 128.0 + 1e-7
                                                     : 0.0;
            if (tol == 0.0) {
                float amax = 0;
                for (int64_t k = j - j % cols; k < j - j % cols + cols; k++)
                    amax = fmaxf(amax, fabsf(y[k]));
                tol = amax / 7.0 + 1e-6;
            }
            if (fabs((double)x[j] - y[j]) > tol)
                fail_msg("%s[%lld]: GGUF %g, HF %g", t->name, (long long)j, x[j], y[j]);
        }
        free(x);
        free(y);
        n_cmp++;
    }
    /* and nothing of the model is missing from the pair */
    for (size_t i = 0; i < st_count(hf); i++) {
        const st_tensor *r = st_at(hf, i);
        if (r->dtype != LV_DTYPE_F32 && r->dtype != LV_DTYPE_F16 && r->dtype != LV_DTYPE_BF16)
            continue;
        if (!st_find(md.weights, r->name)) fail_msg("%s is not in the GGUF pair", r->name);
    }
    print_message("real pair: %zu tensors equal to the Hugging Face twin's\n", n_cmp);
    st_close(hf);
    mdir_close(&md);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hand_pair),     cmocka_unit_test(old_upload),
        cmocka_unit_test(pair_errors),   cmocka_unit_test(synth_vocab),
        cmocka_unit_test(export_gguf),   cmocka_unit_test(export_mlx),
        cmocka_unit_test(hf_dir_source), cmocka_unit_test(real_pair),
        cmocka_unit_test(engine_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
