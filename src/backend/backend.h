/*
 * backend.h - the op table every model is written against.
 *
 * A backend owns its memory and its weight layout. The models (model/clip.c,
 * model/llm.c) call these ops in order, like calm's forward: no graph, no
 * knowledge of CUDA. The CPU backend is the first; `ref` is the plain scalar
 * backend that is never optimised and is the yardstick the others are tested
 * against (tests/test_backend.c). A CUDA backend fills the same table later.
 *
 * Memory. Activations and caches live in backend buffers (be_alloc); the
 * model never dereferences them, it only passes them to ops and moves data in
 * and out with be_upload / be_download. (For the CPU and ref backends a
 * buffer is host memory, which tests may read directly.) Weights are
 * prepared once at load (be_weight_init) from borrowed host data, typically
 * an mmapped safetensors tensor: the CPU backend uses it in place.
 *
 * Shapes are row-major. A weight is (rows = out features, cols = in
 * features), as torch's nn.Linear stores it: y = x·Wᵀ (+ b).
 * All activations are float32.
 */
#ifndef LV_BACKEND_H
#define LV_BACKEND_H

#include "base/common.h"

#include <stdbool.h>

typedef enum { BE_F32 = 0, BE_F16, BE_BF16 } be_dtype;

/* A matrix weight, (rows, cols), prepared for one backend. */
typedef struct {
    be_dtype dtype;
    int rows, cols;   /* out, in */
    const void *data; /* backend-owned or borrowed (CPU: the mmapped bytes, maybe unaligned) */
    void *owned;      /* what be_weight_free releases; NULL when data is borrowed */
} be_weight;

typedef struct be be;

struct be_ops {
    const char *name;

    /* --- lifecycle --- */
    lv_status (*init)(be *b, int n_threads, lv_err *err); /* n_threads <= 0: all cores */
    void (*deinit)(be *b);

    /* --- memory --- */
    void *(*alloc)(be *b, size_t bytes); /* NULL on failure; contents undefined */
    void (*release)(be *b, void *p);     /* NULL is a no-op */
    void (*upload)(be *b, void *dst, const void *src, size_t bytes);   /* host -> buffer */
    void (*download)(be *b, void *dst, const void *src, size_t bytes); /* buffer -> host */
    /* Prepares w from host data (dtype, rows x cols, row-major, maybe unaligned). */
    lv_status (*weight_init)(be *b, be_weight *w, be_dtype dtype, int rows, int cols,
                             const void *host, lv_err *err);
    void (*weight_free)(be *b, be_weight *w);
    /* 1-D parameters (norm gains, biases) as float32 buffers (converted from dtype).
     * NULL on failure; the caller frees the buffer with release. */
    float *(*vector_init)(be *b, be_dtype dtype, int n, const void *host);

    /* --- ops (all on backend buffers; n = number of rows/tokens) --- */
    /* y (n, w.rows) = x (n, w.cols) · wᵀ + bias (bias may be NULL). y != x. */
    void (*matmul)(be *b, float *y, const float *x, const be_weight *w, const float *bias, int n);
    /* y = x / sqrt(mean(x²) + eps) * g, per row of dim. y may equal x. */
    void (*rmsnorm)(be *b, float *y, const float *x, const float *g, int n, int dim, float eps);
    /* y = (x - mean) / sqrt(var + eps) * g + beta, per row of dim. y may equal x. */
    void (*layernorm)(be *b, float *y, const float *x, const float *g, const float *beta, int n,
                      int dim, float eps);
    /* Rotate-half RoPE in place on x (n, n_heads, head_dim): pairs (j, j + head_dim/2),
     * angle = pos[i] * theta^(-2j/head_dim) computed in float32 as HF does. */
    void (*rope)(be *b, float *x, int n, int n_heads, int head_dim, const int *pos, float theta);
    /* out (n_q, n_heads*head_dim) = softmax(q·kᵀ/sqrt(head_dim) [+ causal mask]) · v.
     * q (n_q, n_heads, head_dim); k, v (n_kv, n_kv_heads, head_dim) (a sequence's cache);
     * query i sits at position q_pos0 + i and, when causal, sees keys 0..q_pos0+i.
     * Query head h uses kv head h / (n_heads / n_kv_heads). out may equal q. */
    void (*attention)(be *b, float *out, const float *q, const float *k, const float *v, int n_q,
                      int q_pos0, int n_kv, int n_heads, int n_kv_heads, int head_dim, bool causal);
    /* gate = silu(gate) * up, elementwise over n values. */
    void (*silu_mul)(be *b, float *gate, const float *up, size_t n);
    /* x = 0.5·x·(1 + erf(x/√2)) (exact GELU). */
    void (*gelu)(be *b, float *x, size_t n);
    /* x = x·sigmoid(1.702·x) (CLIP's quick_gelu). */
    void (*quick_gelu)(be *b, float *x, size_t n);
    /* y += x, elementwise. */
    void (*add)(be *b, float *y, const float *x, size_t n);
    /* out (n, dim) = table rows ids[i] of a (vocab, dim) weight (any dtype). */
    void (*embed_rows)(be *b, float *out, const be_weight *table, const int32_t *ids, int n);
};

/* A backend instance: the table and its private state. */
struct be {
    const struct be_ops *ops;
    void *ctx;     /* backend-private */
    int n_threads; /* threads the ops may use */
};

extern const struct be_ops be_ref_ops; /* scalar reference (backend/ref.c) */
extern const struct be_ops be_cpu_ops; /* threaded, vectorised CPU (backend/cpu/) */

/* Finds a backend by name ("cpu", "ref"); NULL if unknown. */
const struct be_ops *be_find(const char *name);

/* IEEE half / bfloat16 -> float32, exact (subnormals, inf, NaN). */
float be_f16_to_f32(uint16_t h);
float be_bf16_to_f32(uint16_t h);

#endif
