/*
 * backend.h - the op table every model is written against.
 *
 * A backend owns its memory and its weight layout. The models (model/clip.c,
 * model/llm.c) call these ops in order, like calm's forward: no graph, no
 * knowledge of CUDA. The CPU backend is the first; `ref` is the plain scalar
 * backend that is never optimised and is the yardstick the others are tested
 * against (tests/test_backend.c). A CUDA backend fills the same table later.
 *
 * Memory. Activations, image features and KV caches live in backend
 * buffers (alloc); the model never dereferences them, it only passes them
 * to ops and moves data with upload (host → buffer), copy (buffer →
 * buffer) and download (buffer → host), so a device backend keeps a whole
 * step on the device: only token ids and positions go up, only logits come
 * down. (For the CPU and ref backends a buffer is host memory, which tests
 * may read directly.) Weights are prepared once at load (weight_init) from
 * borrowed host data, typically an mmapped safetensors tensor: the CPU
 * backend uses it in place.
 *
 * Ordering. Ops run in the order they are called, each seeing the results
 * of the ones before. A backend may run them asynchronously (queued on a
 * device stream): upload, copy and every op under "ops" below may return
 * before their work is done, but upload has read the host bytes by the
 * time it returns (the caller may reuse them at once). download is
 * synchronous: it returns when the host bytes are there, so it also waits
 * for everything queued before it. synchronize waits for all queued work
 * (timing, and before a buffer is released while work may still use it;
 * release itself may be deferred by the backend until that work is done).
 * The CPU and ref backends finish every op before returning.
 *
 * Shapes are row-major. A weight is (rows = out features, cols = in
 * features), as torch's nn.Linear stores it: y = x·Wᵀ (+ b).
 * All activations are float32, except KV caches, which may hold f16
 * (store_as writes them, attention reads them). Weights may also be
 * quantized (MLX affine groups, ggml blocks: be_dtype below); what each
 * layout means is defined once, in backend/quant.c, and matmul /
 * embed_rows accept every layout.
 */
#ifndef LV_BACKEND_H
#define LV_BACKEND_H

#include "base/common.h"

#include <stdbool.h>

/*
 * Weight element types. The first three are plain arrays; the others are
 * quantized layouts whose meaning is defined once, in backend/quant.c
 * (be_dequant_row): MLX affine groups (formats.md §3.5-3.7) and the ggml
 * blocks of GGUF files (formats.md §5, Q5_K as ggml-quants.c).
 */
typedef enum {
    BE_F32 = 0,
    BE_F16,
    BE_BF16,
    BE_MLX,  /* MLX affine: bits-bit codes, LSB-first per row, + scales/biases (be_quant) */
    BE_Q8_0, /* 32 values in 34 bytes: f16 d, int8 q[32]; v = q·d */
    BE_Q4_0, /* 32 values in 18 bytes: f16 d, 16 nibble bytes; v = (q − 8)·d */
    BE_Q4_1, /* 32 values in 20 bytes: f16 d, f16 m, 16 nibble bytes; v = q·d + m */
    BE_Q4_K, /* 256 values in 144 bytes: 8 sub-blocks of 32, 6-bit scales and mins */
    BE_Q5_K, /* 256 values in 176 bytes: as Q4_K plus a fifth bit per value */
    BE_Q6_K, /* 256 values in 210 bytes: 16 sub-blocks of 16, int8 scales */
    BE_DTYPE_COUNT
} be_dtype;

/* The side data of a BE_MLX weight (NULL / ignored for other dtypes). */
typedef struct {
    int bits;             /* 2, 3, 4, 5, 6 or 8 */
    int group;            /* 32, 64 or 128 values per scale/bias */
    be_dtype scale_dtype; /* BE_F16, BE_BF16 or BE_F32 */
    const void *scales;   /* (rows, cols/group), borrowed like the codes, maybe unaligned */
    const void *biases;   /* (rows, cols/group), same dtype: the offsets β of w = s·q + β */
} be_quant;

/* A matrix weight, (rows, cols), prepared for one backend. */
typedef struct {
    be_dtype dtype;
    int rows, cols;   /* out, in */
    size_t row_bytes; /* bytes of one stored row of data */
    be_quant q;       /* BE_MLX only */
    const void *data; /* backend-owned or borrowed (CPU: the mmapped bytes, maybe unaligned) */
    void *owned;      /* what be_weight_free releases (free()); NULL when data is borrowed.
                       * A loader that built the host bytes itself (a transposed conv) may
                       * hand a malloc'd buffer over by setting it after weight_init. */
    void *prep;       /* the backend's own copy in a layout its matmul prefers (CPU: the
                       * integer lanes of backend/cpu/qdot.h), or NULL. When set, matmul
                       * reads only it, and the host bytes at data are read again only
                       * by embed_rows (a few rows): a loader may release their pages. */
} be_weight;

typedef struct be be;

/* How tensor parallelism (backend/tp.h) splits a weight across its ranks;
 * every other backend ignores it. */
typedef enum {
    BE_SPLIT_NONE = 0, /* replicated: every rank holds all of it */
    BE_SPLIT_OUT,      /* by rows (output features): the output stays sharded */
    BE_SPLIT_IN,       /* by columns (input features): partial outputs, summed */
} be_split;

struct be_ops {
    const char *name;

    /* --- lifecycle --- */
    lv_status (*init)(be *b, int n_threads, lv_err *err); /* n_threads <= 0: all cores */
    void (*deinit)(be *b);

    /* --- memory --- */
    void *(*alloc)(be *b, size_t bytes); /* NULL on failure; contents undefined */
    void (*release)(be *b, void *p);     /* NULL is a no-op */
    /* alloc for rows of row_bytes that tensor parallelism splits by heads (a
     * KV cache: each rank holds row_bytes/N of every row; backend/tp.h).
     * Optional: NULL means alloc. */
    void *(*alloc_split)(be *b, size_t bytes, size_t row_bytes);
    void (*upload)(be *b, void *dst, const void *src, size_t bytes);   /* host -> buffer */
    void (*download)(be *b, void *dst, const void *src, size_t bytes); /* buffer -> host */
    void (*copy)(be *b, void *dst, const void *src,
                 size_t bytes); /* buffer -> buffer, no overlap */
    void (*synchronize)(be *b); /* returns when every op called so far has finished */
    /* Prepares w from host data (dtype, rows x cols, row-major, maybe unaligned).
     * q: the scales and biases of a BE_MLX weight, NULL for every other dtype.
     * Quantized rows must hold whole blocks (cols % 32, or % 256 for the K types). */
    lv_status (*weight_init)(be *b, be_weight *w, be_dtype dtype, int rows, int cols,
                             const void *host, const be_quant *q, lv_err *err);
    void (*weight_free)(be *b, be_weight *w);
    /* weight_init, told how tensor parallelism splits the weight (optional:
     * only backend/tp.c has it; loaders call weight_init where it is NULL). */
    lv_status (*weight_init_split)(be *b, be_weight *w, be_dtype dtype, int rows, int cols,
                                   const void *host, const be_quant *q, be_split split,
                                   lv_err *err);
    /* 1-D parameters (norm gains, biases) as float32 buffers (converted from dtype,
     * F32/F16/BF16 only). NULL on failure; the caller frees the buffer with release. */
    float *(*vector_init)(be *b, be_dtype dtype, int n, const void *host);

    /* --- ops (all on backend buffers; n = number of rows/tokens) --- */
    /* y (n, w.rows) = x (n, w.cols) · wᵀ + bias (bias may be NULL). y != x. */
    void (*matmul)(be *b, float *y, const float *x, const be_weight *w, const float *bias, int n);
    /* y[i] = x · w[i]ᵀ + bias[i] for i < count (<= 4), the same bits as count
     * matmul calls (which it may make), for weights that share x: a
     * backend may quantize x once and run them in one dispatch. (optional:
     * NULL means matmul each.) */
    void (*matmul_multi)(be *b, float *const y[], const float *x, const be_weight *const w[],
                         const float *const bias[], int count, int n);
    /* y = x / sqrt(mean(x²) + eps) * g, per row of dim. y may equal x. */
    void (*rmsnorm)(be *b, float *y, const float *x, const float *g, int n, int dim, float eps);
    /* y = (x - mean) / sqrt(var + eps) * g + beta, per row of dim. y may equal x. */
    void (*layernorm)(be *b, float *y, const float *x, const float *g, const float *beta, int n,
                      int dim, float eps);
    /* Rotate-half RoPE in place on x (n, n_heads, head_dim): pairs (j, j + head_dim/2),
     * angle = pos[i] * theta^(-2j/head_dim) computed in float32 as HF does. */
    void (*rope)(be *b, float *x, int n, int n_heads, int head_dim, const int *pos, float theta);
    /* out (n_q, n_heads*head_dim) = softmax(q·kᵀ/sqrt(head_dim) [+ causal mask]) · v.
     * q (n_q, n_heads, head_dim) float32; k, v (n_kv, n_kv_heads, head_dim) of kv_dtype
     * (BE_F32 or BE_F16: a sequence's cache, as store_as wrote it); query i sits at
     * position q_pos0 + i and, when causal, sees keys 0..q_pos0+i. Query head h uses kv
     * head h / (n_heads / n_kv_heads). out may equal q. Batch invariant: a query row's
     * output depends only on its q, its keys and values, never on the other rows of the
     * call (a token decoded alone or in a prefill chunk of any size gives the same bits). */
    void (*attention)(be *b, float *out, const float *q, const void *k, const void *v,
                      be_dtype kv_dtype, int n_q, int q_pos0, int n_kv, int n_heads, int n_kv_heads,
                      int head_dim, bool causal);
    /* dst (n elements of dtype, BE_F32 or BE_F16) = src (n float32): how keys and values
     * enter a KV cache. F16 rounds to nearest even and saturates at ±65504 (NaN stays
     * NaN), so a cache holds no infinity that a masked key could turn into 0·inf. */
    void (*store_as)(be *b, void *dst, be_dtype dtype, const float *src, size_t n);
    /* gate = silu(gate) * up, elementwise over n values. */
    void (*silu_mul)(be *b, float *gate, const float *up, size_t n);
    /* x = 0.5·x·(1 + erf(x/√2)) (exact GELU). */
    void (*gelu)(be *b, float *x, size_t n);
    /* x = x·sigmoid(1.702·x) (CLIP's quick_gelu). */
    void (*quick_gelu)(be *b, float *x, size_t n);
    /* x = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))): torch's GELU with
     * approximate="tanh", transformers' "gelu_pytorch_tanh" (SigLIP). */
    void (*gelu_tanh)(be *b, float *x, size_t n);
    /* y += x, elementwise. */
    void (*add)(be *b, float *y, const float *x, size_t n);
    /* out (n, dim) = table rows ids[i] of a (vocab, dim) weight (any dtype). */
    void (*embed_rows)(be *b, float *out, const be_weight *table, const int32_t *ids, int n);

    /* --- optional (NULL where a backend has nothing to say) --- */
    /* A run of ops the backend may record and then submit as one unit (CUDA: a
     * graph), for a decode step, whose ops are the same every step but for
     * their scalars. record_begin before the first op, record_end after the
     * last: the ops between them run by the time record_end returns' work is
     * done, in order, as if called one by one. Between the two: ops, copy and
     * store_as only (no upload, download, synchronize, alloc or release). */
    void (*record_begin)(be *b);
    void (*record_end)(be *b);
    /* x += delta, then y = rmsnorm(x)·g per row of dim: add then rmsnorm in one
     * pass (the residual add of a decoder layer and the next norm), with their
     * arithmetic exactly (the same bits as the two ops). y may equal delta.
     * NULL: the model calls add and rmsnorm. */
    void (*add_rmsnorm)(be *b, float *x, const float *delta, float *y, const float *g, int n,
                        int dim, float eps);
    /* The device's memory: bytes in use by every process and the total, for
     * /health and /metrics. false when unknown. */
    bool (*memory_info)(be *b, size_t *used, size_t *total);
    /* The first device fault since init (an asynchronous kernel error, an
     * out-of-memory inside an op), or LV_OK. Ops cannot return errors; a
     * backend whose ops may fail asynchronously records the first one here,
     * and the callers check it after a step. */
    lv_status (*status)(be *b, lv_err *err);
};

/* A backend instance: the table and its private state. */
struct be {
    const struct be_ops *ops;
    void *ctx;     /* backend-private */
    int n_threads; /* threads the ops may use */
    /* Set before init. Exact: every matmul is float32 arithmetic on the
     * weight's exact values (dequantized), as the ref backend does. Not
     * exact (the default): a backend may multiply quantized weights with
     * quantized activations (CPU: int8, backend/cpu/qdot.h), a bounded
     * error (tests/test_qdot.c); plain f32/f16/bf16 weights stay exact. */
    bool exact;
    /* Set before init: which device of the backend's kind ("cuda:1" -> 1). */
    int device;
    /* Tensor parallelism (backend/tp.h) only, read by the weight loaders: the
     * vision tower whole on every rank (true) or split like the text model. */
    bool replicate_tower;
};

extern const struct be_ops be_ref_ops; /* scalar reference (backend/ref.c) */
extern const struct be_ops be_cpu_ops; /* threaded, vectorised CPU (backend/cpu/) */
#ifdef LLAVA_HAVE_CUDA
extern const struct be_ops be_cuda_ops; /* NVIDIA GPUs (backend/cuda/), -DLLAVA_CUDA=ON */
#endif

/* Finds a backend by name ("cpu", "ref", "cuda"); NULL if unknown. A device
 * index may follow a colon ("cuda:1"): *device gets it (0 when absent; device
 * may be NULL). A name with a malformed index is unknown. */
const struct be_ops *be_find_device(const char *name, int *device);
/* be_find_device without an index. */
const struct be_ops *be_find(const char *name);
/* The names this build knows, for error messages: "cpu, ref" or "cpu, ref, cuda[:N]". */
const char *be_names(void);

#endif
