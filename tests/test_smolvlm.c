/*
 * test_smolvlm.c - the Idefics3 / SmolVLM model pieces (model/clip.c's
 * SigLIP flags, model/connector.c, the family switch in model/llava.c,
 * image/idefics3_size.c), white-box, until the transformers fixtures of
 * tests/data/smolvlm/ arrive:
 *
 *   - the pixel shuffle against transformers' own view / permute / reshape
 *     steps, materialised one by one (not the closed form connector.c uses);
 *   - the frame grid against the worked examples of spec smolvlm.md §3.8;
 *   - a tiny random Idefics3 checkpoint written here (SigLIP 30x30 frames of
 *     7x7 patches: a "valid" conv that leaves 2 pixels unread, scale 2,
 *     GQA Llama decoder): it loads, a 2-frame image encodes to what a plain
 *     double-precision SigLIP + pixel shuffle + linear written below gives
 *     (within 1e-4, on the ref and cpu backends), any cut of the encoder's
 *     stages gives the bits of one pass, frames encode independently, and
 *     llava_forward runs and is batch invariant;
 *   - missing or mis-shaped tensors fail with LV_ERR_FORMAT naming them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/half.h"
#include "image/idefics3.h"
#include "io/safetensors_write.h"
#include "model/connector.h"
#include "model/llava.h"
#include "model/llava_impl.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the pixel shuffle --------------------------------------------------------------- */

/* A 4-D row-major array and torch's permute(0, 2, 1, 3) of it, copied
 * contiguous (what the reshape after a permute does). */
static float *permute_0213(const float *a, int d0, int d1, int d2, int d3) {
    float *o = malloc(sizeof *o * (size_t)d0 * d1 * d2 * d3);
    assert_non_null(o);
    for (int i = 0; i < d0; i++)
        for (int j = 0; j < d1; j++)
            for (int k = 0; k < d2; k++)
                for (int l = 0; l < d3; l++)
                    o[(((size_t)i * d2 + k) * d1 + j) * d3 + l] =
                        a[(((size_t)i * d1 + j) * d2 + k) * d3 + l];
    return o;
}

/* Idefics3Connector.pixel_shuffle of x (Q², D), batch 1, step by step:
 *   x.view(1, Q, Q, D).view(1, Q, Q/s, D·s)    (views: the memory as it is)
 *    .permute(0, 2, 1, 3)                      → (1, Q/s, Q, D·s)
 *    .reshape(1, Q/s, Q/s, D·s²)               (a contiguous copy, then a view)
 *    .permute(0, 2, 1, 3)                      → (1, Q/s, Q/s, D·s²)
 *    .reshape(1, Q²/s², D·s²)                  */
static float *hf_pixel_shuffle(const float *x, int Q, int s, int D) {
    float *a = permute_0213(x, 1, Q, Q / s, D * s);
    /* a is (Q/s, Q, D·s) contiguous; as (1, Q/s, Q/s, D·s²): the same memory */
    float *b = permute_0213(a, 1, Q / s, Q / s, D * s * s);
    free(a);
    return b;
}

/* The connector's gather (on the ref backend, whose buffers are host
 * memory) equals transformers' steps, whole and band by band. */
static void pixel_shuffle_matches_hf(void **state) {
    (void)state;
    static const int cases[][3] = {{32, 4, 2}, {27, 3, 3}, {4, 2, 5}, {8, 2, 1}, {6, 3, 2}};
    be b = {.ops = &be_ref_ops};
    lv_err err = {{0}};
    assert_int_equal(b.ops->init(&b, 1, &err), LV_OK);
    for (size_t c = 0; c < LV_ARRAY_LEN(cases); c++) {
        int Q = cases[c][0], s = cases[c][1], D = cases[c][2], G = Q / s;
        size_t n = (size_t)Q * Q * D;
        float *x = malloc(n * sizeof *x), *got = malloc(n * sizeof *got);
        assert_true(x && got);
        for (size_t i = 0; i < n; i++) x[i] = (float)i; /* every value distinct */
        float *want = hf_pixel_shuffle(x, Q, s, D);
        connector cn = {.b = &b, .side = Q, .scale = s, .grid = G, .in_dim = D};
        connector_shuffle(&cn, got, x, 0, G);
        if (memcmp(got, want, n * sizeof *got) != 0)
            fail_msg("pixel shuffle (Q %d, s %d, D %d) differs from transformers' steps", Q, s, D);
        /* band by band: output rows band·G.. of the frame */
        size_t band = (size_t)G * D * s * s;
        for (int b0 = 0; b0 < G; b0 += 2) {
            int nb = b0 + 2 <= G ? 2 : 1;
            memset(got, 0, n * sizeof *got);
            connector_shuffle(&cn, got, x, b0, nb);
            assert_memory_equal(got, want + (size_t)b0 * band, (size_t)nb * band * sizeof *got);
        }
        free(want);
        free(got);
        free(x);
    }
    b.ops->deinit(&b);
}

/* ---- the frame grid ----------------------------------------------------------------- */

/* img_idefics3_grid with the processor's three values. */
static void grid(int h, int w, int L, int T, bool split, int *r, int *c) {
    img_proc_params p;
    img_proc_params_idefics3_default(&p, L, T, 16);
    p.do_image_splitting = split;
    *r = *c = -1;
    img_idefics3_grid(h, w, &p, false, r, c);
}

static void idefics3_grid_examples(void **state) {
    (void)state;
    /* smolvlm.md §3.8: input W x H, L / T, rows x cols */
    static const struct {
        int w, h, L, T, rows, cols;
    } ex[] = {
        {100, 80, 2048, 512, 4, 4},    {386, 386, 2048, 512, 4, 4},  {640, 480, 2048, 512, 3, 4},
        {800, 600, 2048, 512, 3, 4},   {1000, 700, 2048, 512, 3, 4}, {1920, 1080, 2048, 512, 3, 4},
        {1080, 1920, 2048, 512, 4, 3}, {3000, 400, 2048, 512, 1, 4}, {100, 80, 1536, 384, 4, 4},
        {1000, 700, 1536, 384, 3, 4},  {3000, 400, 1536, 384, 1, 4},
    };
    for (size_t i = 0; i < LV_ARRAY_LEN(ex); i++) {
        int r, c;
        grid(ex[i].h, ex[i].w, ex[i].L, ex[i].T, true, &r, &c);
        if (r != ex[i].rows || c != ex[i].cols)
            fail_msg("%dx%d at %d/%d: %dx%d tiles, expected %dx%d", ex[i].w, ex[i].h, ex[i].L,
                     ex[i].T, r, c, ex[i].rows, ex[i].cols);
    }
    /* the intermediate sizes of §3.8 (W x H): 100x80 → 2048x1638 → 2048x2048,
     * 1000x700 → 2048x1434 → 2048x1536, 3000x400 → 2048x274 → 2048x512,
     * 1080x1920 → 1152x2048 → 1536x2048 */
    int h1, w1, h2, w2;
    img_idefics3_resize_size(80, 100, 2048, &h1, &w1);
    assert_int_equal(h1, 1638), assert_int_equal(w1, 2048);
    img_idefics3_encoder_size(h1, w1, 512, &h2, &w2);
    assert_int_equal(h2, 2048), assert_int_equal(w2, 2048);
    img_idefics3_resize_size(700, 1000, 2048, &h1, &w1);
    assert_int_equal(h1, 1434);
    img_idefics3_encoder_size(h1, w1, 512, &h2, &w2);
    assert_int_equal(h2, 1536), assert_int_equal(w2, 2048);
    img_idefics3_resize_size(400, 3000, 2048, &h1, &w1);
    assert_int_equal(h1, 274);
    img_idefics3_resize_size(1920, 1080, 2048, &h1, &w1);
    assert_int_equal(h1, 2048), assert_int_equal(w1, 1152);
    img_idefics3_encoder_size(h1, w1, 512, &h2, &w2);
    assert_int_equal(h2, 2048), assert_int_equal(w2, 1536);
    /* not split: do_image_splitting false, or one tile after the resizes */
    int r, c;
    grid(80, 100, 2048, 512, false, &r, &c);
    assert_int_equal(r, 0), assert_int_equal(c, 0);
    grid(100, 100, 512, 512, true, &r, &c);
    assert_int_equal(r, 0), assert_int_equal(c, 0);
}

/* ---- a tiny random checkpoint ------------------------------------------------------- */

enum {
    VD = 32,   /* vision hidden */
    VH = 4,    /* vision heads (head_dim 8) */
    VF = 48,   /* vision ffn */
    VL = 2,    /* vision layers */
    IMG = 30,  /* frame side: 30 / 7 = 4 patches, pixels 28, 29 never read */
    PATCH = 7, /* */
    SIDE = 4,  /* patches per side */
    NPOS = 16, /* patches per frame */
    SCALE = 2, /* pixel shuffle */
    SEQ = 4,   /* rows per frame: 16 / 2² */
    TD = 64,   /* text hidden */
    TH = 4,    /* text heads (head_dim 16) */
    TKV = 2,   /* kv heads */
    TF = 96,   /* text ffn */
    TL = 2,    /* text layers */
    VOCAB = 512,
    IMAGE_ID = 500,
};

typedef struct {
    char name[128];
    int nd;
    int64_t shape[4];
    float *v;
} tensor;

static tensor g_t[128];
static int g_nt;
static uint64_t g_seed;

static float rnd_uniform(float lo, float hi) {
    return lo + (hi - lo) * (float)((tu_splitmix64(&g_seed) >> 40) * (1.0 / 16777216.0));
}

static float *add_t(const char *name, int nd, int64_t d0, int64_t d1, float center, float amp) {
    assert_true(g_nt < (int)LV_ARRAY_LEN(g_t));
    tensor *t = &g_t[g_nt++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->nd = nd;
    t->shape[0] = d0;
    t->shape[1] = d1;
    size_t n = (size_t)d0 * (nd > 1 ? (size_t)d1 : 1);
    t->v = malloc(n * sizeof *t->v);
    assert_non_null(t->v);
    for (size_t i = 0; i < n; i++) t->v[i] = center + rnd_uniform(-amp, amp);
    return t->v;
}

static const float *T(const char *fmt, ...) {
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    for (int i = 0; i < g_nt; i++)
        if (strcmp(g_t[i].name, name) == 0) return g_t[i].v;
    fail_msg("no tensor %s", name);
    return NULL;
}

/* The checkpoint's tensors, in the names transformers saves
 * (model.vision_model.*, model.connector.*, model.text_model.*, lm_head). */
static void build_tensors(void) {
    for (int i = 0; i < g_nt; i++) free(g_t[i].v);
    g_nt = 0;
    g_seed = 1234;
    char n[128];
#define V "model.vision_model."
    /* the conv as [VD, 3, P, P] (4-D below) */
    add_t(V "embeddings.patch_embedding.weight", 2, VD, 3 * PATCH * PATCH, 0, 0.08f);
    g_t[g_nt - 1].nd = 4;
    g_t[g_nt - 1].shape[1] = 3, g_t[g_nt - 1].shape[2] = PATCH, g_t[g_nt - 1].shape[3] = PATCH;
    add_t(V "embeddings.patch_embedding.bias", 1, VD, 0, 0, 0.1f);
    add_t(V "embeddings.position_embedding.weight", 2, NPOS, VD, 0, 0.5f);
    for (int l = 0; l < VL; l++) {
#define L(s) (snprintf(n, sizeof n, V "encoder.layers.%d." s, l), n)
        add_t(L("layer_norm1.weight"), 1, VD, 0, 1, 0.2f);
        add_t(L("layer_norm1.bias"), 1, VD, 0, 0, 0.1f);
        static const char *proj[] = {"q", "k", "v", "out"};
        for (int p = 0; p < 4; p++) {
            char w[64], b[64];
            snprintf(w, sizeof w, "self_attn.%s_proj.weight", proj[p]);
            snprintf(b, sizeof b, "self_attn.%s_proj.bias", proj[p]);
            snprintf(n, sizeof n, V "encoder.layers.%d.%s", l, w);
            add_t(n, 2, VD, VD, 0, 0.3f);
            snprintf(n, sizeof n, V "encoder.layers.%d.%s", l, b);
            add_t(n, 1, VD, 0, 0, 0.1f);
        }
        add_t(L("layer_norm2.weight"), 1, VD, 0, 1, 0.2f);
        add_t(L("layer_norm2.bias"), 1, VD, 0, 0, 0.1f);
        add_t(L("mlp.fc1.weight"), 2, VF, VD, 0, 0.3f);
        add_t(L("mlp.fc1.bias"), 1, VF, 0, 0, 0.1f);
        add_t(L("mlp.fc2.weight"), 2, VD, VF, 0, 0.2f);
        add_t(L("mlp.fc2.bias"), 1, VD, 0, 0, 0.1f);
#undef L
    }
    add_t(V "post_layernorm.weight", 1, VD, 0, 1, 0.2f);
    add_t(V "post_layernorm.bias", 1, VD, 0, 0, 0.1f);
#undef V
    add_t("model.connector.modality_projection.proj.weight", 2, TD, VD * SCALE * SCALE, 0, 0.1f);
#define M "model.text_model."
    add_t(M "embed_tokens.weight", 2, VOCAB, TD, 0, 1);
    for (int l = 0; l < TL; l++) {
#define L(s) (snprintf(n, sizeof n, M "layers.%d." s, l), n)
        add_t(L("input_layernorm.weight"), 1, TD, 0, 1, 0.2f);
        add_t(L("self_attn.q_proj.weight"), 2, TH * 16, TD, 0, 0.2f);
        add_t(L("self_attn.k_proj.weight"), 2, TKV * 16, TD, 0, 0.2f);
        add_t(L("self_attn.v_proj.weight"), 2, TKV * 16, TD, 0, 0.2f);
        add_t(L("self_attn.o_proj.weight"), 2, TD, TH * 16, 0, 0.2f);
        add_t(L("post_attention_layernorm.weight"), 1, TD, 0, 1, 0.2f);
        add_t(L("mlp.gate_proj.weight"), 2, TF, TD, 0, 0.2f);
        add_t(L("mlp.up_proj.weight"), 2, TF, TD, 0, 0.2f);
        add_t(L("mlp.down_proj.weight"), 2, TD, TF, 0, 0.2f);
#undef L
    }
    add_t(M "norm.weight", 1, TD, 0, 1, 0.2f);
#undef M
    add_t("lm_head.weight", 2, VOCAB, TD, 0, 0.3f);
}

static const char CONFIG[] =
    "{\"architectures\": [\"Idefics3ForConditionalGeneration\"], \"model_type\": \"idefics3\","
    " \"image_token_id\": 500, \"scale_factor\": 2, \"tie_word_embeddings\": false,"
    " \"pad_token_id\": 2,"
    " \"text_config\": {\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 96,"
    "   \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
    "   \"rms_norm_eps\": 1e-05, \"rope_theta\": 100000.0, \"vocab_size\": 512,"
    "   \"max_position_embeddings\": 256, \"tie_word_embeddings\": false},"
    " \"vision_config\": {\"model_type\": \"idefics3_vision\", \"hidden_size\": 32,"
    "   \"intermediate_size\": 48, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
    "   \"image_size\": 30, \"patch_size\": 7, \"hidden_act\": \"gelu_pytorch_tanh\","
    "   \"layer_norm_eps\": 1e-06},"
    " \"vocab_size\": 512}";

#define CONN "model.connector.modality_projection.proj"

/* The connector as an MLX affine 8-bit, group-32 module (formats.md §3):
 * codes packed LSB-first into U32 (TD, VD·s²·8/32), F32 scales and biases
 * (TD, VD·s²/32); *deq gets w = scale·q + bias (TD, VD·s²). */
enum { CIN = VD * SCALE * SCALE, CGROUPS = CIN / 32 };
static uint32_t g_codes[TD * CIN / 4];
static float g_scales[TD * CGROUPS], g_biases[TD * CGROUPS];

static void mlx_connector(float *deq) {
    uint64_t seed = 4242;
    memset(g_codes, 0, sizeof g_codes);
    for (int r = 0; r < TD; r++) {
        for (int g = 0; g < CGROUPS; g++) {
            g_scales[r * CGROUPS + g] = 0.0008f + 0.0001f * (float)(g % 3);
            g_biases[r * CGROUPS + g] = -0.1f + 0.01f * (float)(r % 5);
        }
        for (int c = 0; c < CIN; c++) {
            uint32_t q = (uint32_t)(tu_splitmix64(&seed) >> 56);
            g_codes[(r * CIN + c) / 4] |= q << (8 * (c % 4));
            int g = c / 32;
            deq[r * CIN + c] = g_scales[r * CGROUPS + g] * (float)q + g_biases[r * CGROUPS + g];
        }
    }
}

/* Writes the model directory: config.json, the tokenizer of the tiny LLaVA
 * fixtures (512 ids), model.safetensors (F32; the connector MLX-quantized
 * with mlx, see mlx_connector) without tensor `skip` and with tensor `bad`
 * one row short (NULL: none). */
static const char *write_model_as(const char *tag, const char *skip, const char *bad, bool mlx,
                                  bool bf16) {
    const char *dir = tu_tmpdir(tag);
    tu_write_file(dir, "config.json", CONFIG, strlen(CONFIG));
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "cd '%s/forward/llava-1.5-tiny' && cp tokenizer.json tokenizer_config.json '%s/'",
             tu_env("LLAVA_TEST_DATA"), dir);
    assert_int_equal(system(cmd), 0);
    stw_entry e[130];
    const void *data[130];
    int n = 0;
    for (int i = 0; i < g_nt; i++) {
        if (skip && strcmp(g_t[i].name, skip) == 0) continue;
        if (mlx && strcmp(g_t[i].name, CONN ".weight") == 0) {
            e[n] = (stw_entry){CONN ".weight", LV_DTYPE_U32, 2, {TD, CIN / 4}};
            data[n++] = g_codes;
            e[n] = (stw_entry){CONN ".scales", LV_DTYPE_F32, 2, {TD, CGROUPS}};
            data[n++] = g_scales;
            e[n] = (stw_entry){CONN ".biases", LV_DTYPE_F32, 2, {TD, CGROUPS}};
            data[n++] = g_biases;
            continue;
        }
        e[n] = (stw_entry){
            .name = g_t[i].name, .dtype = bf16 ? LV_DTYPE_BF16 : LV_DTYPE_F32, .n_dims = g_t[i].nd};
        size_t count = 1;
        for (int d = 0; d < g_t[i].nd; d++) count *= (size_t)(e[n].shape[d] = g_t[i].shape[d]);
        if (bad && strcmp(g_t[i].name, bad) == 0) e[n].shape[0] -= 1;
        data[n] = g_t[i].v;
        if (bf16) { /* freed below; the values are already bf16's (bf16_checkpoint) */
            uint16_t *h = malloc(count * sizeof *h);
            assert_non_null(h);
            for (size_t k = 0; k < count; k++) h[k] = lv_f32_to_bf16(g_t[i].v[k]);
            data[n] = h;
        }
        n++;
    }
    char path[2048];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    stw *w;
    lv_err err = {{0}};
    if (stw_begin(path, e, (size_t)n, "pt", &w, &err)) fail_msg("%s", err.msg);
    for (int k = 0; k < n; k++)
        if (stw_write_tensor(w, (size_t)k, data[k], &err)) fail_msg("%s", err.msg);
    if (stw_finish(w, &err)) fail_msg("%s", err.msg);
    for (int k = 0; bf16 && k < n; k++) free((void *)data[k]);
    return dir;
}

static const char *write_model(const char *tag, const char *skip, const char *bad) {
    return write_model_as(tag, skip, bad, false, false);
}

static llava *open_model(const char *dir, const char *backend) {
    llava *m;
    lv_err err = {{0}};
    if (llava_open(dir, &m, &err)) fail_msg("%s: %s", dir, err.msg);
    llava_set_exact(m, true); /* f32 throughout, on every backend */
    if (llava_load(m, backend, 2, &err)) {
        llava_free(m);
        if (strstr(err.msg, "no CUDA device")) return NULL; /* a CUDA build without a GPU */
        fail_msg("%s: %s", dir, err.msg);
    }
    return m;
}

/* A 2-frame image: a 1x1 grid (one tile) and the global image. */
static img_tensor two_frames(void) {
    img_tensor px = {.n_tiles = 2, .tile_h = IMG, .tile_w = IMG, .image_h = 40, .image_w = 50};
    px.grid_h = px.grid_w = 1;
    size_t n = (size_t)2 * 3 * IMG * IMG;
    px.data = malloc(n * sizeof *px.data);
    assert_non_null(px.data);
    uint64_t keep = g_seed;
    g_seed = 77;
    for (size_t i = 0; i < n; i++) px.data[i] = rnd_uniform(-1, 1);
    g_seed = keep;
    return px;
}

/* ---- the reference: SigLIP, pixel shuffle and linear, plainly, in double ---------------- */

static void layer_norm(double *y, const double *x, const float *g, const float *b, int n,
                       double eps) {
    double mean = 0, var = 0;
    for (int i = 0; i < n; i++) mean += x[i];
    mean /= n;
    for (int i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    var /= n;
    for (int i = 0; i < n; i++) y[i] = (x[i] - mean) / sqrt(var + eps) * g[i] + b[i];
}

/* y (rows, out) = x (rows, in)·Wᵀ + b (b may be NULL) */
static void linear(double *y, const double *x, const float *w, const float *b, int rows, int in,
                   int out) {
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
            double acc = b ? b[o] : 0;
            for (int i = 0; i < in; i++) acc += x[(size_t)r * in + i] * w[(size_t)o * in + i];
            y[(size_t)r * out + o] = acc;
        }
}

/* One frame (3, IMG, IMG) → vis (NPOS, VD) after post_layernorm and
 * rows (SEQ, TD) after the connector. */
static void reference_frame(const float *px, double *vis, double *rows) {
    static double x[NPOS * VD], h[NPOS * VD], q[NPOS * VD], k[NPOS * VD], v[NPOS * VD],
        att[NPOS * VD], o[NPOS * VD], f[NPOS * VF], patch[3 * PATCH * PATCH];
    const float *pw = T("model.vision_model.embeddings.patch_embedding.weight");
    const float *pb = T("model.vision_model.embeddings.patch_embedding.bias");
    const float *pos = T("model.vision_model.embeddings.position_embedding.weight");
    /* Conv2d(3, VD, PATCH, stride PATCH, padding "valid") + bias + position_embedding[t] */
    for (int py = 0; py < SIDE; py++)
        for (int pxi = 0; pxi < SIDE; pxi++) {
            int t = py * SIDE + pxi;
            for (int c = 0; c < 3; c++)
                for (int ky = 0; ky < PATCH; ky++)
                    for (int kx = 0; kx < PATCH; kx++)
                        patch[(c * PATCH + ky) * PATCH + kx] =
                            px[((size_t)c * IMG + py * PATCH + ky) * IMG + pxi * PATCH + kx];
            for (int d = 0; d < VD; d++) {
                double acc = pb[d];
                for (int i = 0; i < 3 * PATCH * PATCH; i++)
                    acc += (double)pw[(size_t)d * 3 * PATCH * PATCH + i] * patch[i];
                x[t * VD + d] = acc + pos[t * VD + d];
            }
        }
    const int hd = VD / VH;
    for (int l = 0; l < VL; l++) {
#define W(s) T("model.vision_model.encoder.layers.%d." s, l)
        for (int t = 0; t < NPOS; t++)
            layer_norm(h + t * VD, x + t * VD, W("layer_norm1.weight"), W("layer_norm1.bias"), VD,
                       1e-6);
        linear(q, h, W("self_attn.q_proj.weight"), W("self_attn.q_proj.bias"), NPOS, VD, VD);
        linear(k, h, W("self_attn.k_proj.weight"), W("self_attn.k_proj.bias"), NPOS, VD, VD);
        linear(v, h, W("self_attn.v_proj.weight"), W("self_attn.v_proj.bias"), NPOS, VD, VD);
        for (int head = 0; head < VH; head++)
            for (int i = 0; i < NPOS; i++) {
                double s[NPOS], mx = -INFINITY, sum = 0;
                for (int j = 0; j < NPOS; j++) {
                    double d = 0;
                    for (int e = 0; e < hd; e++)
                        d += q[i * VD + head * hd + e] * k[j * VD + head * hd + e];
                    s[j] = d / sqrt((double)hd);
                    mx = s[j] > mx ? s[j] : mx;
                }
                for (int j = 0; j < NPOS; j++) sum += s[j] = exp(s[j] - mx);
                for (int e = 0; e < hd; e++) {
                    double acc = 0;
                    for (int j = 0; j < NPOS; j++) acc += s[j] / sum * v[j * VD + head * hd + e];
                    att[i * VD + head * hd + e] = acc;
                }
            }
        linear(o, att, W("self_attn.out_proj.weight"), W("self_attn.out_proj.bias"), NPOS, VD, VD);
        for (int i = 0; i < NPOS * VD; i++) x[i] += o[i];
        for (int t = 0; t < NPOS; t++)
            layer_norm(h + t * VD, x + t * VD, W("layer_norm2.weight"), W("layer_norm2.bias"), VD,
                       1e-6);
        linear(f, h, W("mlp.fc1.weight"), W("mlp.fc1.bias"), NPOS, VD, VF);
        for (int i = 0; i < NPOS * VF; i++) /* gelu_pytorch_tanh */
            f[i] = 0.5 * f[i] * (1 + tanh(sqrt(2 / M_PI) * (f[i] + 0.044715 * pow(f[i], 3))));
        linear(o, f, W("mlp.fc2.weight"), W("mlp.fc2.bias"), NPOS, VF, VD);
        for (int i = 0; i < NPOS * VD; i++) x[i] += o[i];
#undef W
    }
    for (int t = 0; t < NPOS; t++)
        layer_norm(vis + t * VD, x + t * VD, T("model.vision_model.post_layernorm.weight"),
                   T("model.vision_model.post_layernorm.bias"), VD, 1e-6);
    /* pixel shuffle (smolvlm.md §6's closed form; checked against transformers'
     * steps by pixel_shuffle_matches_hf), then the linear without bias */
    static double shuf[SEQ * VD * SCALE * SCALE];
    int G = SIDE / SCALE;
    for (int i2 = 0; i2 < G; i2++)
        for (int j2 = 0; j2 < G; j2++)
            for (int dh = 0; dh < SCALE; dh++)
                for (int dw = 0; dw < SCALE; dw++)
                    for (int e = 0; e < VD; e++)
                        shuf[(i2 * G + j2) * VD * SCALE * SCALE + (dh * SCALE + dw) * VD + e] =
                            vis[((i2 * SCALE + dh) * SIDE + j2 * SCALE + dw) * VD + e];
    linear(rows, shuf, T("model.connector.modality_projection.proj.weight"), NULL, SEQ,
           VD * SCALE * SCALE, TD);
}

static void expect_close(const char *what, const float *got, const double *want, size_t n,
                         double tol) {
    double worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(got[i] - want[i]);
        if (!(d <= worst)) worst = d, at = i;
    }
    if (!(worst <= tol))
        fail_msg("%s: element %zu is %.7g, reference %.7g (|diff| %.3g > %.3g)", what, at, got[at],
                 want[at], worst, tol);
}

/* ---- the model ------------------------------------------------------------------------ */

static const char *g_dir;

static int setup(void **state) {
    (void)state;
    build_tensors();
    g_dir = strdup(write_model("smolvlm_tiny", NULL, NULL));
    return 0;
}

static int teardown(void **state) {
    (void)state;
    for (int i = 0; i < g_nt; i++) free(g_t[i].v);
    g_nt = 0;
    free((void *)g_dir);
    return 0;
}

static void loads_and_counts(void **state) {
    (void)state;
    llava *m = open_model(g_dir, "ref");
    const lv_model_config *c = llava_config(m);
    assert_true(m->idefics3);
    assert_int_equal(c->image_seq_length, SEQ);
    assert_false(m->vision.has_cls);
    assert_false(m->vision.pre_ln);
    assert_true(m->vision.post_ln);
    assert_int_equal(m->vision.act, CLIP_ACT_GELU_TANH);
    assert_int_equal(m->vision.n_pos, NPOS);
    assert_int_equal(m->vision.n_layers, VL);
    assert_int_equal(m->conn.grid, SIDE / SCALE);
    assert_int_equal(m->conn_w.proj.cols, VD * SCALE * SCALE);
    /* token counts: T = 30, L = 120; 50x40 (WxH) → 120x96 → 120x120: 4x4 + 1 */
    assert_int_equal(llava_image_token_count(m, 40, 50), 17 * SEQ);
    assert_int_equal(llava_image_token_count(m, 0, 50), -1);
    img_tensor px = {.n_tiles = 2, .grid_h = 1, .grid_w = 1};
    assert_int_equal(llava_tensor_token_count(m, &px), 2 * SEQ);
    px.n_tiles = 3;
    assert_int_equal(llava_tensor_token_count(m, &px), -1);
    px = (img_tensor){.n_tiles = 1};
    assert_int_equal(llava_tensor_token_count(m, &px), SEQ);
    px = (img_tensor){.n_tiles = 13, .grid_h = 3, .grid_w = 4};
    assert_int_equal(llava_tensor_token_count(m, &px), 13 * SEQ);
    llava_info info;
    llava_get_info(m, &info);
    assert_string_equal(info.arch, "idefics3");
    assert_string_equal(info.text_arch, "llama");
    assert_int_equal(info.image_tokens_base, SEQ);
    assert_int_equal(info.image_tokens_max, 17 * SEQ);
    int64_t vis_params = VD * 3 * PATCH * PATCH + VD + NPOS * VD + 2 * VD +
                         VL * (4 * (VD * VD + VD) + 4 * VD + VF * VD + VF + VD * VF + VD);
    assert_int_equal(info.params_vision, vis_params);
    assert_int_equal(info.params_projector, TD * VD * SCALE * SCALE);
    llava_free(m);
}

/* The 2-frame image against the double reference, on both backends. */
static void encode_matches_reference(void **state) {
    (void)state;
    img_tensor px = two_frames();
    static double vis[2][NPOS * VD], rows[2][SEQ * TD];
    for (int f = 0; f < 2; f++)
        reference_frame(px.data + (size_t)f * 3 * IMG * IMG, vis[f], rows[f]);
    static const char *backends[] = {"ref", "cpu",
#ifdef LLAVA_HAVE_CUDA
                                     "cuda"
#endif
    };
    for (size_t k = 0; k < LV_ARRAY_LEN(backends); k++) {
        llava *m = open_model(g_dir, backends[k]);
        if (!m) continue;
        llava_image im;
        lv_err err = {{0}};
        if (llava_encode_image(m, &px, true, &im, &err)) fail_msg("%s", err.msg);
        assert_int_equal(im.n_tokens, 2 * SEQ);
        assert_int_equal(im.n_tiles, 2);
        assert_int_equal(im.n_feat, NPOS);
        assert_int_equal(im.n_proj, SEQ);
        char what[64];
        for (int f = 0; f < 2; f++) {
            snprintf(what, sizeof what, "%s: frame %d tower output", backends[k], f);
            expect_close(what, im.vision + (size_t)f * NPOS * VD, vis[f], NPOS * VD, 1e-4);
            snprintf(what, sizeof what, "%s: frame %d rows", backends[k], f);
            expect_close(what, im.rows + (size_t)f * SEQ * TD, rows[f], SEQ * TD, 1e-4);
        }
        assert_memory_equal(im.projected, im.rows, sizeof(float) * 2 * SEQ * TD);
        llava_image_free(&im);
        llava_free(m);
    }
    img_tensor_free(&px);
}

/* The scheduler's pieces: any cut of every stage gives one pass's bits, at
 * any row0 of the features; and a frame alone gives its rows of the image. */
static void stages_any_cut(void **state) {
    (void)state;
    llava *m = open_model(g_dir, "cpu");
    img_tensor px = two_frames();
    lv_err err = {{0}};
    llava_image whole;
    if (llava_encode_image(m, &px, false, &whole, &err)) fail_msg("%s", err.msg);
    static const int cuts[] = {1, 3, 5, 8, 11, NPOS, 0};
    for (size_t i = 0; i < LV_ARRAY_LEN(cuts); i++) {
        llava_features *f;
        llava_encoder *e;
        int row0 = (int)i % 3;
        assert_int_equal(llava_features_new(m, 2 * SEQ + 3, &f, &err), LV_OK);
        assert_int_equal(llava_encoder_new(m, &px, f, row0, false, &e, &err), LV_OK);
        int pieces = 0;
        while (!llava_encoder_done(e)) {
            int kind;
            assert_true(llava_encoder_next(e, &kind) > 0);
            assert_true(kind >= 0 && kind < LLAVA_ENCODER_KINDS);
            if (llava_encoder_run(e, cuts[i], &err)) fail_msg("%s", err.msg);
            pieces++;
        }
        assert_int_equal(llava_encoder_next(e, NULL), 0);
        float got[2 * SEQ * TD];
        llava_features_read(f, row0, 2 * SEQ, got);
        if (memcmp(got, whole.rows, sizeof got) != 0)
            fail_msg("rows cut every %d (%d pieces) differ from one pass", cuts[i], pieces);
        llava_encoder_free(e);
        llava_features_free(f);
    }
    /* frame 1 (the global image) alone: grid 0x0, one frame */
    img_tensor one = {.n_tiles = 1, .tile_h = IMG, .tile_w = IMG, .image_h = IMG, .image_w = IMG};
    one.data = px.data + (size_t)3 * IMG * IMG;
    llava_image im;
    if (llava_encode_image(m, &one, false, &im, &err)) fail_msg("%s", err.msg);
    assert_int_equal(im.n_tokens, SEQ);
    assert_memory_equal(im.rows, whole.rows + SEQ * TD, sizeof(float) * SEQ * TD);
    llava_image_free(&im);
    /* the "valid" conv never reads past SIDE·PATCH = 28: rows and columns
     * 28, 29 of every frame may hold anything */
    for (int f = 0; f < 2; f++)
        for (int ch = 0; ch < 3; ch++)
            for (int y = 0; y < IMG; y++)
                for (int x = 0; x < IMG; x++)
                    if (y >= SIDE * PATCH || x >= SIDE * PATCH)
                        px.data[(((size_t)f * 3 + ch) * IMG + y) * IMG + x] = 1e6f;
    if (llava_encode_image(m, &px, false, &im, &err)) fail_msg("%s", err.msg);
    assert_memory_equal(im.rows, whole.rows, sizeof(float) * 2 * SEQ * TD);
    llava_image_free(&im);
    /* a tensor whose frames do not fit its grid is refused */
    px.n_tiles = 1;
    llava_image bad;
    assert_int_equal(llava_encode_image(m, &px, false, &bad, &err), LV_ERR_ARG);
    px.n_tiles = 2;
    llava_image_free(&whole);
    img_tensor_free(&px);
    llava_free(m);
}

/* The forward over a prompt with the image's rows: finite logits; a
 * sequence's logits are the same bits alone or beside another one. */
static void forward_batch_invariant(void **state) {
    (void)state;
    llava *m = open_model(g_dir, "cpu");
    img_tensor px = two_frames();
    lv_err err = {{0}};
    llava_features *f;
    llava_encoder *e;
    assert_int_equal(llava_features_new(m, 2 * SEQ, &f, &err), LV_OK);
    assert_int_equal(llava_encoder_new(m, &px, f, 0, false, &e, &err), LV_OK);
    while (!llava_encoder_done(e))
        if (llava_encoder_run(e, 0, &err)) fail_msg("%s", err.msg);
    int32_t a[16] = {1, 40, 41};
    for (int i = 3; i < 3 + 2 * SEQ; i++) a[i] = IMAGE_ID;
    a[11] = 42, a[12] = 300, a[13] = 7, a[14] = 8, a[15] = 9;
    int32_t b[5] = {1, 60, 61, 62, 63};
    float *alone = malloc(2 * sizeof(float) * VOCAB), *both = malloc(2 * sizeof(float) * VOCAB);
    assert_true(alone && both);
    llava_batch *bt;
    assert_int_equal(llava_batch_new(m, 64, 2, &bt, &err), LV_OK);
    for (int round = 0; round < 2; round++) {
        llava_seq *sa, *sb;
        assert_int_equal(llava_seq_new(m, 64, &sa, &err), LV_OK);
        assert_int_equal(llava_seq_new(m, 64, &sb, &err), LV_OK);
        llava_input in[2] = {{sa, a, 16, f, 0}, {sb, b, 5, NULL, 0}};
        if (round == 0) {
            if (llava_forward(m, bt, &in[0], 1, alone, &err)) fail_msg("%s", err.msg);
            if (llava_forward(m, bt, &in[1], 1, alone + VOCAB, &err)) fail_msg("%s", err.msg);
        } else {
            if (llava_forward(m, bt, in, 2, both, &err)) fail_msg("%s", err.msg);
        }
        /* one decode step each, together */
        int32_t next[2] = {5, 6};
        llava_input dec[2] = {{sa, &next[0], 1, NULL, 0}, {sb, &next[1], 1, NULL, 0}};
        float step[2 * VOCAB];
        if (llava_forward(m, bt, dec, 2, step, &err)) fail_msg("%s", err.msg);
        static float first_step[2 * VOCAB];
        if (round == 0)
            memcpy(first_step, step, sizeof step);
        else
            assert_memory_equal(first_step, step, sizeof step);
        llava_seq_free(sa);
        llava_seq_free(sb);
    }
    for (int i = 0; i < 2 * VOCAB; i++) assert_true(isfinite(alone[i]));
    assert_memory_equal(alone, both, 2 * sizeof(float) * VOCAB);
    /* the image rows matter: the same ids without features differ */
    llava_seq *s;
    assert_int_equal(llava_seq_new(m, 64, &s, &err), LV_OK);
    int32_t plain[16];
    memcpy(plain, a, sizeof plain);
    llava_input in = {s, plain, 16, NULL, 0};
    float other[VOCAB];
    if (llava_forward(m, bt, &in, 1, other, &err)) fail_msg("%s", err.msg);
    assert_true(memcmp(other, alone, sizeof other) != 0);
    llava_seq_free(s);
    llava_batch_free(bt);
    free(alone);
    free(both);
    llava_encoder_free(e);
    llava_features_free(f);
    img_tensor_free(&px);
    llava_free(m);
}

/* The connector matrix MLX-quantized, as mlx-community checkpoints may
 * store it: loaded as BE_MLX, and in exact mode the rows are the double
 * reference's over the dequantized weights. */
static void mlx_quantized_connector(void **state) {
    (void)state;
    float *conn = (float *)T(CONN ".weight");
    float *keep = malloc(sizeof(float) * TD * CIN);
    assert_non_null(keep);
    memcpy(keep, conn, sizeof(float) * TD * CIN);
    mlx_connector(conn); /* the reference reads the dequantized values */
    const char *dir = write_model_as("smolvlm_mlx", NULL, NULL, true, false);
    img_tensor px = two_frames();
    static double vis[2][NPOS * VD], rows[2][SEQ * TD];
    for (int f = 0; f < 2; f++)
        reference_frame(px.data + (size_t)f * 3 * IMG * IMG, vis[f], rows[f]);
    static const char *backends[] = {"ref", "cpu"};
    for (size_t k = 0; k < LV_ARRAY_LEN(backends); k++) {
        llava *m;
        lv_err err = {{0}};
        if (llava_open(dir, &m, &err)) fail_msg("%s", err.msg);
        llava_set_exact(m, true);
        if (llava_load(m, backends[k], 2, &err)) fail_msg("%s", err.msg);
        assert_int_equal(m->conn_w.proj.dtype, BE_MLX);
        assert_int_equal(m->conn_w.proj.q.bits, 8);
        assert_int_equal(m->conn_w.proj.q.group, 32);
        llava_image im;
        if (llava_encode_image(m, &px, false, &im, &err)) fail_msg("%s", err.msg);
        char what[64];
        snprintf(what, sizeof what, "%s: mlx connector rows", backends[k]);
        for (int f = 0; f < 2; f++)
            expect_close(what, im.rows + (size_t)f * SEQ * TD, rows[f], SEQ * TD, 1e-4);
        llava_image_free(&im);
        llava_free(m);
    }
    memcpy(conn, keep, sizeof(float) * TD * CIN);
    free(keep);
    img_tensor_free(&px);
}

/* A bf16 checkpoint (SmolVLM-256M's storage type) computes in float32 on
 * the exact bf16 values: the reference over the same values, within 1e-4. */
static void bf16_checkpoint(void **state) {
    (void)state;
    float *keep[128];
    for (int i = 0; i < g_nt; i++) {
        size_t count = (size_t)g_t[i].shape[0] * (g_t[i].nd > 1 ? (size_t)g_t[i].shape[1] : 1) *
                       (g_t[i].nd > 2 ? (size_t)g_t[i].shape[2] * g_t[i].shape[3] : 1);
        keep[i] = malloc(count * sizeof(float));
        assert_non_null(keep[i]);
        memcpy(keep[i], g_t[i].v, count * sizeof(float));
        for (size_t k = 0; k < count; k++)
            g_t[i].v[k] = lv_bf16_to_f32(lv_f32_to_bf16(g_t[i].v[k]));
    }
    const char *dir = write_model_as("smolvlm_bf16", NULL, NULL, false, true);
    img_tensor px = two_frames();
    static double vis[2][NPOS * VD], rows[2][SEQ * TD];
    for (int f = 0; f < 2; f++)
        reference_frame(px.data + (size_t)f * 3 * IMG * IMG, vis[f], rows[f]);
    llava *m = open_model(dir, "cpu");
    assert_int_equal(m->conn_w.proj.dtype, BE_BF16);
    assert_int_equal(m->vision_w.patch.dtype, BE_BF16);
    llava_image im;
    lv_err err = {{0}};
    if (llava_encode_image(m, &px, true, &im, &err)) fail_msg("%s", err.msg);
    for (int f = 0; f < 2; f++) {
        expect_close("bf16: tower output", im.vision + (size_t)f * NPOS * VD, vis[f], NPOS * VD,
                     1e-4);
        expect_close("bf16: rows", im.rows + (size_t)f * SEQ * TD, rows[f], SEQ * TD, 1e-4);
    }
    llava_image_free(&im);
    llava_free(m);
    for (int i = 0; i < g_nt; i++) {
        size_t count = (size_t)g_t[i].shape[0] * (g_t[i].nd > 1 ? (size_t)g_t[i].shape[1] : 1) *
                       (g_t[i].nd > 2 ? (size_t)g_t[i].shape[2] * g_t[i].shape[3] : 1);
        memcpy(g_t[i].v, keep[i], count * sizeof(float));
        free(keep[i]);
    }
    img_tensor_free(&px);
}

static void expect_load_error(const char *dir, const char *needle) {
    llava *m;
    lv_err err = {{0}};
    if (llava_open(dir, &m, &err)) fail_msg("%s: %s", dir, err.msg);
    lv_status st = llava_load(m, "ref", 1, &err);
    if (st != LV_ERR_FORMAT || !strstr(err.msg, needle))
        fail_msg("load: status %d, \"%s\"; expected LV_ERR_FORMAT naming %s", st, err.msg, needle);
    assert_false(llava_is_loaded(m));
    llava_free(m);
}

static void bad_checkpoints(void **state) {
    (void)state;
    static const char *const missing[] = {
        "model.vision_model.embeddings.patch_embedding.bias",
        "model.vision_model.post_layernorm.weight",
        "model.vision_model.post_layernorm.bias",
        "model.vision_model.encoder.layers.1.mlp.fc2.bias",
        "model.connector.modality_projection.proj.weight",
        "lm_head.weight",
    };
    for (size_t i = 0; i < LV_ARRAY_LEN(missing); i++) {
        const char *dir = write_model("smolvlm_bad", missing[i], NULL);
        /* the message names the canonical spelling (io/tensor_names.c) */
        const char *tail = strstr(missing[i], "embeddings.")        ? "patch_embedding.bias"
                           : strstr(missing[i], "post_layernorm.w") ? "post_layernorm.weight"
                           : strstr(missing[i], "post_layernorm.b") ? "post_layernorm.bias"
                           : strstr(missing[i], "fc2")              ? "layers.1.mlp.fc2.bias"
                           : strstr(missing[i], "connector")        ? "modality_projection.proj"
                                                                    : "lm_head.weight";
        expect_load_error(dir, tail);
    }
    static const char *const misshaped[] = {
        "model.connector.modality_projection.proj.weight",
        "model.vision_model.embeddings.position_embedding.weight",
        "model.vision_model.embeddings.patch_embedding.bias",
    };
    for (size_t i = 0; i < LV_ARRAY_LEN(misshaped); i++) {
        const char *dir = write_model("smolvlm_bad", NULL, misshaped[i]);
        const char *tail = strstr(misshaped[i], "connector")  ? "modality_projection.proj"
                           : strstr(misshaped[i], "position") ? "position_embedding"
                                                              : "patch_embedding.bias";
        expect_load_error(dir, tail);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pixel_shuffle_matches_hf), cmocka_unit_test(idefics3_grid_examples),
        cmocka_unit_test(loads_and_counts),         cmocka_unit_test(encode_matches_reference),
        cmocka_unit_test(stages_any_cut),           cmocka_unit_test(forward_batch_invariant),
        cmocka_unit_test(mlx_quantized_connector),  cmocka_unit_test(bf16_checkpoint),
        cmocka_unit_test(bad_checkpoints),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
