/*
 * cuda_internal.h - what the CUDA backend's files share (CUDA C++ only;
 * the rest of the engine sees just be_cuda_ops in backend/backend.h).
 *
 * One context per be: a device, one stream every op is queued on, and the
 * first device fault (ops are void; cu_check records a failure and later
 * ops become no-ops, so a bad launch never cascades into a crash; the
 * backend's `status` op reports it). Files:
 *   backend_cuda.cu  the op table, lifecycle, memory, vectors
 *   weights.cu       weight_init: the device layouts of every be_dtype
 *   matmul.cu        matmul over those layouts (tensor cores, batch invariant)
 *   attention.cu     attention over f16/f32 KV caches
 *   elementwise.cu   norms, RoPE, activations, add, store_as, embed_rows
 */
#ifndef LV_CUDA_INTERNAL_H
#define LV_CUDA_INTERNAL_H

#include <cuda_fp16.h>
#include <cuda_runtime.h>

extern "C" {
#include "backend/backend.h"
}

struct cu_ctx {
    int device;
    cudaStream_t stream;
    int n_sm;        /* multiprocessors */
    bool exact;      /* be.exact: float32 arithmetic on exact weight values */
    lv_status fault; /* first failure, LV_OK while healthy */
    char fault_msg[LV_ERR_LEN];
    /* A device scratch buffer ops may use within one call (grown on demand,
     * released at deinit); ops run in stream order, so one buffer serves all. */
    void *scratch;
    size_t scratch_bytes;
    /* record_begin/end (backend_cuda.cu): the stream is being captured into a
     * graph, and the executable graph of the last recorded step, updated in
     * place when the next step has the same shape of work. */
    bool capturing;
    cudaGraphExec_t step;
};

static inline cu_ctx *cu_of(be *b) {
    return (cu_ctx *)b->ctx;
}

/* Records the first failure (a CUDA error code other than cudaSuccess) into
 * c->fault; returns true when c is healthy afterwards. */
bool cu_record(cu_ctx *c, cudaError_t e, const char *what);
/* After a launch: records cudaGetLastError. */
static inline bool cu_check(cu_ctx *c, const char *what) {
    return cu_record(c, cudaGetLastError(), what);
}
/* A device buffer of at least bytes for this call's use (NULL on failure, recorded). */
void *cu_scratch(cu_ctx *c, size_t bytes);

/* ---- the device layouts of weights (weights.cu; used by matmul.cu and
 * elementwise.cu's embed_rows) ------------------------------------------- */

/* How a weight sits on the device. Every format decodes one element the
 * same way (cu_weight_value in cuda_weights.cuh), so matmul and embed_rows
 * agree. */
typedef enum {
    CW_F32 = 0, /* float32 rows (exact mode, and the fallback of odd dtypes there) */
    CW_F16,     /* half rows */
    CW_BF16,    /* bfloat16 rows */
    CW_Q4,      /* 4-bit codes, group 32, half scale s and half offset m: w = s*q + m */
    CW_Q8,      /* 8-bit codes, group 16, half scale s and half offset m: w = s*q + m */
} cw_kind;

/* be_weight.prep of the CUDA backend points to one of these (host memory). */
typedef struct {
    cw_kind kind;
    int rows, cols;
    int ld;       /* values per stored row: cols rounded up to CU_KPAD (zeros after cols) */
    int rows_pad; /* rows rounded up to CU_RPAD (zero rows after rows) */
    void *data;   /* device: codes or values (layout in cuda_weights.cuh) */
    __half2 *sm;  /* device: (s, m) per group, CW_Q4/CW_Q8 only */
    size_t bytes; /* device bytes of data + sm */
} cu_weight;

/* ---- launchers ---------------------------------------------------------- */

void cu_matmul(cu_ctx *c, float *y, const float *x, const cu_weight *w, const float *bias, int n);
void cu_embed_rows(cu_ctx *c, float *out, const cu_weight *w, const int32_t *ids, int n);

/* As be_ops.attention (backend.h), on device pointers; attention.cu. */
void cu_attention(cu_ctx *c, float *out, const float *q, const void *k, const void *v,
                  be_dtype kv_dtype, int n_q, int q_pos0, int n_kv, int n_heads, int n_kv_heads,
                  int head_dim, bool causal);

void cu_rmsnorm(cu_ctx *c, float *y, const float *x, const float *g, int n, int dim, float eps);
void cu_add_rmsnorm(cu_ctx *c, float *x, const float *delta, float *y, const float *g, int n,
                    int dim, float eps);
void cu_layernorm(cu_ctx *c, float *y, const float *x, const float *g, const float *beta, int n,
                  int dim, float eps);
void cu_rope(cu_ctx *c, float *x, int n, int n_heads, int head_dim, const int *pos, float theta);
void cu_store_as(cu_ctx *c, void *dst, be_dtype dtype, const float *src, size_t n);
void cu_silu_mul(cu_ctx *c, float *gate, const float *up, size_t n);
void cu_gelu(cu_ctx *c, float *x, size_t n);
void cu_quick_gelu(cu_ctx *c, float *x, size_t n);
void cu_gelu_tanh(cu_ctx *c, float *x, size_t n);
void cu_add(cu_ctx *c, float *y, const float *x, size_t n);

#endif
