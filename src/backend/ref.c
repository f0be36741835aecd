/*
 * ref.c - the scalar reference backend: the yardstick every other backend's
 * ops are tested against (tests/test_backend.c).
 *
 * Written to be obviously correct, never fast: plain loops in the order the
 * Hugging Face modules compute (llama2.c style), one thread, sums and
 * transcendental functions in double where that makes the result closer to
 * the exact value, rounded to float32 once at the end. The one place where
 * float32 is the *definition* is RoPE: transformers computes inv_freq, the
 * angles and their cos/sin in float32 (MistralRotaryEmbedding), and at large
 * positions a double angle would differ, so the reference rounds exactly
 * where HF does.
 *
 * Memory is host memory (malloc); weights borrow the caller's bytes for every
 * dtype, plain or quantized, and are read through be_dequant_row
 * (backend/quant.c), the one definition of what each layout means.
 */
#include "backend/backend.h"
#include "backend/quant.h"
#include "base/half.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------
 * Lifecycle and memory
 */

static lv_status ref_init(be *b, int n_threads, lv_err *err) {
    b->ctx = NULL;
    b->n_threads = 1; /* the reference never threads */
    return LV_OK;
}

static void ref_deinit(be *b) {
    b->ctx = NULL;
}

static void *ref_alloc(be *b, size_t bytes) {
    return malloc(bytes ? bytes : 1);
}

static void ref_release(be *b, void *p) {
    free(p);
}

static void ref_copy(be *b, void *dst, const void *src, size_t bytes) {
    memcpy(dst, src, bytes);
}

static void ref_synchronize(be *b) { /* every op has finished when it returns */
    (void)b;
}

static lv_status ref_weight_init(be *b, be_weight *w, be_dtype dtype, int rows, int cols,
                                 const void *host, const be_quant *q, lv_err *err) {
    lv_status st = be_weight_describe(w, dtype, rows, cols, host, q, err);
    if (st) lv_err_prefix(err, "ref backend");
    return st;
}

static void ref_weight_free(be *b, be_weight *w) {
    free(w->owned);
    *w = (be_weight){0};
}

static float *ref_vector_init(be *b, be_dtype dtype, int n, const void *host) {
    if (dtype != BE_F32 && dtype != BE_F16 && dtype != BE_BF16) return NULL;
    float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    if (!v) return NULL;
    for (int i = 0; i < n; i++) v[i] = be_plain_at(dtype, host, (size_t)i);
    return v;
}

/* ---------------------------------------------------------------------------
 * Ops
 */

/* Each weight row is dequantised once (be_dequant_row, the definition of
 * every format) and dotted with every token in double. */
static void ref_matmul(be *b, float *y, const float *x, const be_weight *w, const float *bias,
                       int n) {
    float *row = malloc((size_t)w->cols * sizeof *row);
    if (!row) abort(); /* the reference is for tests only */
    for (int r = 0; r < w->rows; r++) {
        be_dequant_row(w, r, row);
        for (int t = 0; t < n; t++) {
            const float *xt = x + (size_t)t * w->cols;
            double acc = bias ? bias[r] : 0.0;
            for (int c = 0; c < w->cols; c++) acc += (double)xt[c] * row[c];
            y[(size_t)t * w->rows + r] = (float)acc;
        }
    }
    free(row);
}

/* MistralRMSNorm: x * rsqrt(mean(x²) + eps), then * weight. */
static void ref_rmsnorm(be *b, float *y, const float *x, const float *g, int n, int dim,
                        float eps) {
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * dim;
        float *yt = y + (size_t)t * dim;
        double ss = 0;
        for (int i = 0; i < dim; i++) ss += (double)xt[i] * xt[i];
        double inv = 1.0 / sqrt(ss / dim + eps);
        for (int i = 0; i < dim; i++) yt[i] = (float)(xt[i] * inv * g[i]);
    }
}

/* torch LayerNorm: biased variance, eps inside the sqrt, affine. */
static void ref_layernorm(be *b, float *y, const float *x, const float *g, const float *beta, int n,
                          int dim, float eps) {
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * dim;
        float *yt = y + (size_t)t * dim;
        double mean = 0, var = 0;
        for (int i = 0; i < dim; i++) mean += xt[i];
        mean /= dim;
        for (int i = 0; i < dim; i++) var += (xt[i] - mean) * (xt[i] - mean);
        var /= dim;
        double inv = 1.0 / sqrt(var + eps);
        for (int i = 0; i < dim; i++) yt[i] = (float)((xt[i] - mean) * inv * g[i] + beta[i]);
    }
}

/*
 * Rotate-half RoPE as MistralRotaryEmbedding + apply_rotary_pos_emb:
 *   inv_freq[j] = 1 / theta^(float32(2j) / head_dim)    all float32
 *   angle       = float32(pos) * inv_freq[j]            float32 product
 *   x'[j]       = x[j]·cos − x[j+half]·sin,  x'[j+half] = x[j+half]·cos + x[j]·sin
 * cos/sin are taken of the float32 angle exactly (in double, then rounded).
 */
static void ref_rope(be *b, float *x, int n, int n_heads, int head_dim, const int *pos,
                     float theta) {
    int half = head_dim / 2;
    for (int t = 0; t < n; t++) {
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)t * n_heads + h) * head_dim;
            for (int j = 0; j < half; j++) {
                float inv_freq = 1.0f / powf(theta, (float)(2 * j) / (float)head_dim);
                float angle = (float)pos[t] * inv_freq;
                float c = (float)cos((double)angle), s = (float)sin((double)angle);
                float a = v[j], bb = v[j + half];
                v[j] = a * c - bb * s;
                v[j + half] = bb * c + a * s;
            }
        }
    }
}

/* Plain two-pass softmax per (query, head), everything in double; keys and
 * values read through be_plain_at (exact for f16). */
static void ref_attention(be *b, float *out, const float *q, const void *k, const void *v,
                          be_dtype kv_dtype, int n_q, int q_pos0, int n_kv, int n_heads,
                          int n_kv_heads, int head_dim, bool causal) {
    int group = n_heads / n_kv_heads;
    size_t kv_dim = (size_t)n_kv_heads * head_dim;
    double scale = 1.0 / sqrt((double)head_dim);
    double *p = malloc((size_t)(n_kv > 0 ? n_kv : 1) * sizeof *p);
    double *acc = malloc((size_t)head_dim * sizeof *acc);
    if (!p || !acc) abort(); /* the reference is for tests only */
    for (int i = 0; i < n_q; i++) {
        int n_seen = causal ? q_pos0 + i + 1 : n_kv;
        if (n_seen > n_kv) n_seen = n_kv;
        for (int h = 0; h < n_heads; h++) {
            const float *qh = q + ((size_t)i * n_heads + h) * head_dim;
            size_t kvh = (size_t)(h / group) * head_dim;
            double max = -INFINITY, sum = 0;
            for (int j = 0; j < n_seen; j++) {
                double dot = 0;
                for (int d = 0; d < head_dim; d++)
                    dot += (double)qh[d] * be_plain_at(kv_dtype, k, j * kv_dim + kvh + d);
                p[j] = dot * scale;
                if (p[j] > max) max = p[j];
            }
            for (int j = 0; j < n_seen; j++) {
                p[j] = exp(p[j] - max);
                sum += p[j];
            }
            for (int d = 0; d < head_dim; d++) acc[d] = 0;
            for (int j = 0; j < n_seen; j++)
                for (int d = 0; d < head_dim; d++)
                    acc[d] += p[j] / sum * be_plain_at(kv_dtype, v, j * kv_dim + kvh + d);
            /* Written after q is read, so out may equal q. */
            float *oh = out + ((size_t)i * n_heads + h) * head_dim;
            for (int d = 0; d < head_dim; d++) oh[d] = (float)acc[d];
        }
    }
    free(p);
    free(acc);
}

/* F16: clamp to the largest finite half, then lv_f32_to_f16 (nearest even). */
static void ref_store_as(be *b, void *dst, be_dtype dtype, const float *src, size_t n) {
    if (dtype == BE_F32) {
        memcpy(dst, src, n * sizeof *src);
        return;
    }
    uint16_t *h = dst;
    for (size_t i = 0; i < n; i++) {
        float f = src[i];
        if (f > 65504.0f) f = 65504.0f; /* NaN compares false and stays NaN */
        if (f < -65504.0f) f = -65504.0f;
        h[i] = lv_f32_to_f16(f);
    }
}

static void ref_silu_mul(be *b, float *gate, const float *up, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double z = gate[i];
        gate[i] = (float)(z / (1.0 + exp(-z)) * up[i]);
    }
}

static void ref_gelu(be *b, float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double z = x[i];
        x[i] =
            (float)(0.5 * z *
                    erfc(-z * M_SQRT1_2)); /* 1 + erf(t) = erfc(-t): no cancellation for z << 0 */
    }
}

/* CLIP quick_gelu: x * sigmoid(1.702 x), with 1.702 rounded to float32 as
 * torch does when it multiplies a float32 tensor by a Python scalar. */
static void ref_quick_gelu(be *b, float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double z = x[i];
        x[i] = (float)(z / (1.0 + exp(-(double)1.702f * z)));
    }
}

/* torch gelu(approximate="tanh") (aten/src/ATen/native/cpu/Activation.cpp:
 * kBeta = √2·(2/√π)·½ = √(2/π), kKappa = 0.044715), in double. */
static void ref_gelu_tanh(be *b, float *x, size_t n) {
    const double beta = M_SQRT2 * M_2_SQRTPI * 0.5, kappa = 0.044715;
    for (size_t i = 0; i < n; i++) {
        double z = x[i];
        x[i] = (float)(0.5 * z * (1.0 + tanh(beta * (z + kappa * z * z * z))));
    }
}

static void ref_add(be *b, float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

static void ref_embed_rows(be *b, float *out, const be_weight *table, const int32_t *ids, int n) {
    for (int t = 0; t < n; t++) be_dequant_row(table, ids[t], out + (size_t)t * table->cols);
}

const struct be_ops be_ref_ops = {
    .name = "ref",
    .init = ref_init,
    .deinit = ref_deinit,
    .alloc = ref_alloc,
    .release = ref_release,
    .upload = ref_copy,
    .download = ref_copy,
    .copy = ref_copy,
    .synchronize = ref_synchronize,
    .weight_init = ref_weight_init,
    .weight_free = ref_weight_free,
    .vector_init = ref_vector_init,
    .matmul = ref_matmul,
    .rmsnorm = ref_rmsnorm,
    .layernorm = ref_layernorm,
    .rope = ref_rope,
    .attention = ref_attention,
    .store_as = ref_store_as,
    .silu_mul = ref_silu_mul,
    .gelu = ref_gelu,
    .quick_gelu = ref_quick_gelu,
    .gelu_tanh = ref_gelu_tanh,
    .add = ref_add,
    .embed_rows = ref_embed_rows,
};
