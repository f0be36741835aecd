/*
 * cpu.h - internals of the CPU backend (backend/cpu/), shared by its files.
 *
 * The backend is a thread pool plus a table of vector kernels (kernels.h)
 * picked once at init: AVX-512F, else AVX2+FMA+F16C, else portable C, as
 * the running CPU allows; LLAVA_CPU_ISA may name a lesser one. Ops split
 * their work across the pool by rows, heads or ranges of elements; all
 * arithmetic is float32.
 *
 * Tests may include this header to set a table (cpu_ctx_of(b)->k =
 * cpu_kernels_portable()) and check every path.
 */
#ifndef LV_CPU_H
#define LV_CPU_H

#include "backend/backend.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/qdot.h"
#include "backend/cpu/threadpool.h"

#include <stddef.h>

/* Matmul tiling: a thread converts a panel of MM_TILE_ROWS weight rows ×
 * MM_TILE_COLS columns to float32 (128 KiB, resident in L2) and runs every
 * block of MM_BLOCK_TOKENS tokens against it. */
enum { MM_TILE_ROWS = 32, MM_TILE_COLS = 1024 };
/* The tile of the packed-panel path (dot_panel): 64 rows, 256 KiB packed,
 * still resident in L2, and each x slice is read once per 64 rows. */
enum { MM_PANEL_TILE_ROWS = 64 };

/* Floats of per-thread scratch: the matmul panel, or attention's accumulators. */
enum { CPU_SCRATCH_FLOATS = MM_PANEL_TILE_ROWS * MM_TILE_COLS };
/* Bytes of the integer path's per-thread scratch (matmul_int.c). */
enum { CPU_QSCRATCH_BYTES = 512 * 1024 };

typedef struct {
    tp *pool;
    const cpu_kernels *k;
    const qk_kernels *qk; /* the integer kernels of the same instruction set (qdot.h) */
    float **scratch;      /* [n_threads], each CPU_SCRATCH_FLOATS, 64-byte aligned */
    uint8_t **qscratch;   /* [n_threads], each CPU_QSCRATCH_BYTES: matmul_int.c's */
    uint8_t *qx;          /* quantized activations of the integer path (matmul_int.c) */
    size_t qx_cap;        /* its bytes */
} cpu_ctx;

static inline cpu_ctx *cpu_ctx_of(be *b) {
    return b->ctx;
}

/* Threads worth using for `work` units of roughly equal cost, where one
 * thread should get at least `min_per_thread` of them. */
int cpu_threads_for(be *b, size_t work, size_t min_per_thread);

/* The ops (matmul.c, ops.c, attention.c), as declared in backend.h. */
void cpu_matmul(be *b, float *y, const float *x, const be_weight *w, const float *bias, int n);
/* The integer path (matmul_int.c) for a weight with a prep (qdot.h lanes):
 * false when it cannot run (out of memory for the quantized x), and then
 * the float path runs instead. */
bool cpu_matmul_int(be *b, float *y, const float *x, const be_weight *w, const float *bias, int n);
/* Several integer GEMVs of one x (matmul_multi, n == 1, weights with preps
 * that quantize x alike): x quantized once, one dispatch; false when it
 * does not apply (nothing done). */
bool cpu_matmul_multi_int(be *b, float *const y[], const float *x, const be_weight *const w[],
                          const float *const bias[], int count, int n);
void cpu_matmul_multi(be *b, float *const y[], const float *x, const be_weight *const w[],
                      const float *const bias[], int count, int n);
void cpu_rmsnorm(be *b, float *y, const float *x, const float *g, int n, int dim, float eps);
void cpu_layernorm(be *b, float *y, const float *x, const float *g, const float *beta, int n,
                   int dim, float eps);
void cpu_rope(be *b, float *x, int n, int n_heads, int head_dim, const int *pos, float theta);
void cpu_attention(be *b, float *out, const float *q, const void *k, const void *v,
                   be_dtype kv_dtype, int n_q, int q_pos0, int n_kv, int n_heads, int n_kv_heads,
                   int head_dim, bool causal);
void cpu_store_as(be *b, void *dst, be_dtype dtype, const float *src, size_t n);
void cpu_silu_mul(be *b, float *gate, const float *up, size_t n);
void cpu_gelu(be *b, float *x, size_t n);
void cpu_quick_gelu(be *b, float *x, size_t n);
void cpu_gelu_tanh(be *b, float *x, size_t n);
void cpu_add(be *b, float *y, const float *x, size_t n);
void cpu_embed_rows(be *b, float *out, const be_weight *table, const int32_t *ids, int n);

#endif
