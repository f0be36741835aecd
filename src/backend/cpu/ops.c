/*
 * ops.c - the CPU backend's row and elementwise ops: norms, RoPE,
 * activations, add, embedding gather.
 *
 * All float32, in the order of operations the Hugging Face modules use, so
 * the only differences from transformers' fp32 path are summation order and
 * the libm. Row ops split rows across threads; elementwise ops split ranges
 * of elements, and small inputs (a decode step's single row) stay on the
 * calling thread, where waking the pool would cost more than the op.
 */
#include "backend/cpu/cpu.h"
#include "backend/quant.h"

#include <assert.h>
#include <math.h>

/* Elements (or row-elements) a thread should get at least. */
enum { MIN_PER_THREAD = 1 << 14 };

/* ---------------------------------------------------------------------------
 * Row ops
 */

typedef struct {
    be *b;
    float *y;
    const float *x, *g, *beta;
    int n, dim;
    float eps;
    const int *pos;
    int n_heads;
    float theta;
} row_job;

/* Σ v[i], with 8 independent partial sums. */
static float sum_f32(const float *v, int n) {
    float l[8] = {0}, s = 0;
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) l[j] += v[i + j];
    for (; i < n; i++) s += v[i];
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7])) + s;
}

/* Σ (v[i] − mean) into *dev and Σ (v[i] − mean)² into *sq, in one pass. */
static void sum_dev(const float *v, int n, float mean, float *dev, float *sq) {
    float ld[8] = {0}, lq[8] = {0}, d = 0, q = 0;
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            float e = v[i + j] - mean;
            ld[j] += e;
            lq[j] += e * e;
        }
    for (; i < n; i++) {
        d += v[i] - mean;
        q += (v[i] - mean) * (v[i] - mean);
    }
    *dev = ((ld[0] + ld[1]) + (ld[2] + ld[3])) + ((ld[4] + ld[5]) + (ld[6] + ld[7])) + d;
    *sq = ((lq[0] + lq[1]) + (lq[2] + lq[3])) + ((lq[4] + lq[5]) + (lq[6] + lq[7])) + q;
}

/* MistralRMSNorm: y = (x · rsqrt(mean(x²) + eps)) · g. */
static void rmsnorm_task(void *arg, int ith, int nth) {
    const row_job *j = arg;
    const cpu_kernels *k = cpu_ctx_of(j->b)->k;
    long lo, hi;
    tp_split(j->n, ith, nth, 1, &lo, &hi);
    for (long t = lo; t < hi; t++) {
        const float *x = j->x + t * j->dim;
        float *y = j->y + t * j->dim;
        float inv = 1.0f / sqrtf(k->dot(x, x, j->dim) / (float)j->dim + j->eps);
        for (int i = 0; i < j->dim; i++) y[i] = x[i] * inv * j->g[i];
    }
}

void cpu_rmsnorm(be *b, float *y, const float *x, const float *g, int n, int dim, float eps) {
    row_job j = {.b = b, .y = y, .x = x, .g = g, .n = n, .dim = dim, .eps = eps};
    tp_run(cpu_ctx_of(b)->pool, rmsnorm_task, &j,
           cpu_threads_for(b, (size_t)n * dim, MIN_PER_THREAD));
}

/* torch LayerNorm: biased variance, eps inside the sqrt. The mean and
 * variance use the corrected two-pass algorithm (the second pass also sums
 * the deviations, which fixes the rounding error of the first pass's mean),
 * so a row with a large mean keeps float32 accuracy. */
static void layernorm_task(void *arg, int ith, int nth) {
    const row_job *j = arg;
    long lo, hi;
    tp_split(j->n, ith, nth, 1, &lo, &hi);
    for (long t = lo; t < hi; t++) {
        const float *x = j->x + t * j->dim;
        float *y = j->y + t * j->dim;
        float n = (float)j->dim, mean = sum_f32(x, j->dim) / n, dev, sq;
        sum_dev(x, j->dim, mean, &dev, &sq);
        float var = (sq - dev * dev / n) / n;
        mean += dev / n;
        float inv = 1.0f / sqrtf(var + j->eps);
        for (int i = 0; i < j->dim; i++) y[i] = (x[i] - mean) * inv * j->g[i] + j->beta[i];
    }
}

void cpu_layernorm(be *b, float *y, const float *x, const float *g, const float *beta, int n,
                   int dim, float eps) {
    row_job j = {.b = b, .y = y, .x = x, .g = g, .beta = beta, .n = n, .dim = dim, .eps = eps};
    tp_run(cpu_ctx_of(b)->pool, layernorm_task, &j,
           cpu_threads_for(b, (size_t)n * dim, MIN_PER_THREAD));
}

/*
 * RoPE as MistralRotaryEmbedding + apply_rotary_pos_emb, in float32 exactly
 * where transformers rounds: inv_freq = 1 / theta^(float(2i) / head_dim),
 * angle = float(pos) · inv_freq, cos/sin of that float angle. The cos/sin of
 * a token are shared by its heads, so they are computed once per token, in
 * chunks of ROPE_CHUNK frequencies (no allocation for any head_dim).
 */
enum { ROPE_CHUNK = 64 };

static void rope_task(void *arg, int ith, int nth) {
    const row_job *j = arg;
    int hd = j->dim, half = hd / 2;
    long lo, hi;
    tp_split(j->n, ith, nth, 1, &lo, &hi);
    for (long t = lo; t < hi; t++) {
        for (int c0 = 0; c0 < half; c0 += ROPE_CHUNK) {
            int nc = half - c0 < ROPE_CHUNK ? half - c0 : ROPE_CHUNK;
            float cs[ROPE_CHUNK], sn[ROPE_CHUNK];
            for (int i = 0; i < nc; i++) {
                float inv_freq = 1.0f / powf(j->theta, (float)(2 * (c0 + i)) / (float)hd);
                float angle = (float)j->pos[t] * inv_freq;
                cs[i] = cosf(angle);
                sn[i] = sinf(angle);
            }
            for (int h = 0; h < j->n_heads; h++) {
                float *v = j->y + (t * j->n_heads + h) * hd + c0;
                for (int i = 0; i < nc; i++) {
                    float a = v[i], bb = v[i + half];
                    v[i] = a * cs[i] - bb * sn[i];
                    v[i + half] = bb * cs[i] + a * sn[i];
                }
            }
        }
    }
}

void cpu_rope(be *b, float *x, int n, int n_heads, int head_dim, const int *pos, float theta) {
    assert(head_dim % 2 == 0);
    row_job j = {
        .b = b, .y = x, .n = n, .dim = head_dim, .pos = pos, .n_heads = n_heads, .theta = theta};
    tp_run(cpu_ctx_of(b)->pool, rope_task, &j,
           cpu_threads_for(b, (size_t)n * n_heads * head_dim, MIN_PER_THREAD));
}

/* ---------------------------------------------------------------------------
 * Elementwise ops
 */

typedef struct {
    float *y;
    const float *x;
    size_t n;
    const cpu_kernels *k;
} ew_job;

static void run_elementwise(be *b, tp_fn fn, float *y, const float *x, size_t n) {
    ew_job j = {.y = y, .x = x, .n = n, .k = cpu_ctx_of(b)->k};
    tp_run(cpu_ctx_of(b)->pool, fn, &j, cpu_threads_for(b, n, MIN_PER_THREAD));
}

/* silu(g)·u with torch's silu: g / (1 + exp(−g)). */
static void silu_mul_task(void *arg, int ith, int nth) {
    const ew_job *j = arg;
    long lo, hi;
    tp_split((long)j->n, ith, nth, 16, &lo, &hi);
    for (long i = lo; i < hi; i++) j->y[i] = j->y[i] / (1.0f + expf(-j->y[i])) * j->x[i];
}

void cpu_silu_mul(be *b, float *gate, const float *up, size_t n) {
    run_elementwise(b, silu_mul_task, gate, up, n);
}

/* torch's exact GELU: x · 0.5 · (1 + erf(x · √½)), computed as
 * x · 0.5 · erfc(−x · √½): the same function, without the cancellation of
 * 1 + erf(·) ≈ 0 that loses all precision for large negative x. */
static void gelu_task(void *arg, int ith, int nth) {
    const ew_job *j = arg;
    long lo, hi;
    tp_split((long)j->n, ith, nth, 16, &lo, &hi);
    for (long i = lo; i < hi; i++) {
        float v = j->y[i];
        j->y[i] = v * 0.5f * erfcf(-v * (float)M_SQRT1_2);
    }
}

void cpu_gelu(be *b, float *x, size_t n) {
    run_elementwise(b, gelu_task, x, NULL, n);
}

/* CLIP's quick_gelu: x · sigmoid(1.702 · x), sigmoid(z) = 1 / (1 + exp(−z)):
 * the kernel table's (its own exp, vectorised: the same bits on every table
 * that has it, kernels.h), else with libm's expf. */
static void quick_gelu_task(void *arg, int ith, int nth) {
    const ew_job *j = arg;
    long lo, hi;
    tp_split((long)j->n, ith, nth, 16, &lo, &hi);
    if (j->k->quick_gelu) {
        if (lo < hi) j->k->quick_gelu(j->y + lo, (size_t)(hi - lo));
        return;
    }
    for (long i = lo; i < hi; i++) {
        float v = j->y[i];
        j->y[i] = v * (1.0f / (1.0f + expf(-(1.702f * v))));
    }
}

void cpu_quick_gelu(be *b, float *x, size_t n) {
    run_elementwise(b, quick_gelu_task, x, NULL, n);
}

/* gelu(approximate="tanh"): the kernel table's (v·σ(2u) with its own
 * vectorised exp, the same bits on every table, kernels.h), else torch's
 * scalar CPU formula: inner = kBeta·(x + kKappa·x³), 0.5·x·(1 + tanh(inner))
 * with kBeta = √(2/π) and kKappa = 0.044715 as float32 constants. */
static void gelu_tanh_task(void *arg, int ith, int nth) {
    const ew_job *j = arg;
    long lo, hi;
    const float beta = (float)(M_SQRT2 * M_2_SQRTPI * 0.5), kappa = 0.044715f;
    tp_split((long)j->n, ith, nth, 16, &lo, &hi);
    if (j->k->gelu_tanh) {
        if (lo < hi) j->k->gelu_tanh(j->y + lo, (size_t)(hi - lo));
        return;
    }
    for (long i = lo; i < hi; i++) {
        float v = j->y[i];
        float inner = beta * (v + kappa * (v * v * v));
        j->y[i] = 0.5f * v * (1.0f + tanhf(inner));
    }
}

void cpu_gelu_tanh(be *b, float *x, size_t n) {
    run_elementwise(b, gelu_tanh_task, x, NULL, n);
}

static void add_task(void *arg, int ith, int nth) {
    const ew_job *j = arg;
    long lo, hi;
    tp_split((long)j->n, ith, nth, 16, &lo, &hi);
    for (long i = lo; i < hi; i++) j->y[i] += j->x[i];
}

void cpu_add(be *b, float *y, const float *x, size_t n) {
    run_elementwise(b, add_task, y, x, n);
}

/* ---------------------------------------------------------------------------
 * Embedding gather
 */

typedef struct {
    be *b;
    float *out;
    const be_weight *table;
    const int32_t *ids;
    int n;
} embed_job;

static void embed_task(void *arg, int ith, int nth) {
    const embed_job *j = arg;
    const be_weight *w = j->table;
    long lo, hi;
    tp_split(j->n, ith, nth, 1, &lo, &hi);
    for (long t = lo; t < hi; t++) {
        assert(j->ids[t] >= 0 && j->ids[t] < w->rows);
        if (be_dtype_quantized(w->dtype))
            cpu_ctx_of(j->b)->k->dequant(w, j->ids[t], 0, w->cols, j->out + t * w->cols);
        else
            cpu_ctx_of(j->b)->k->convert(
                j->out + t * w->cols, w->dtype,
                (const unsigned char *)w->data + (size_t)j->ids[t] * w->row_bytes, (size_t)w->cols);
    }
}

void cpu_embed_rows(be *b, float *out, const be_weight *table, const int32_t *ids, int n) {
    embed_job j = {.b = b, .out = out, .table = table, .ids = ids, .n = n};
    tp_run(cpu_ctx_of(b)->pool, embed_task, &j,
           cpu_threads_for(b, (size_t)n * table->cols, MIN_PER_THREAD));
}
