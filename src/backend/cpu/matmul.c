/*
 * matmul.c - y (n, rows) = x (n, cols) · Wᵀ + bias, the hot op.
 *
 * Two shapes of the same product:
 *
 * - n == 1 (decode): a GEMV, bound by reading W once from memory. Threads
 *   split W's rows; each row is converted to float32 on the fly inside the
 *   dot product (kernels `dot_w`), so the weight is streamed in its stored
 *   dtype and never copied.
 *
 * - n > 1 (prefill, vision tower): compute bound. The work is cut into tasks
 *   of (a tile of MM_TILE_ROWS weight rows) × (a group of tokens). For each
 *   MM_TILE_COLS-wide slice of the columns, a task converts its tile to a
 *   float32 panel (128 KiB, stays in L2) and runs every block of
 *   MM_BLOCK_TOKENS (6) tokens against every pair of panel rows with the
 *   register-blocked kernel (`dot_block`, 12 accumulators), adding the
 *   partial sums into y. Each weight element is thus converted once per task,
 *   and each x slice is read once per tile of 32 rows instead of once per
 *   row. Ragged edges (n or rows not a multiple of the block) repeat the last
 *   token or row in the kernel and drop the extra results. Aligned f32
 *   weights are used straight from W, without a panel.
 *
 * Quantized weights (backend/quant.h) take the same two paths: the panel is
 * filled by be_dequant_span instead of a dtype conversion (MM_TILE_COLS is a
 * multiple of every block and group size), and a GEMV row is either reduced
 * straight from its codes (kernels `gemv_q`, with the affine offsets
 * factored out per block) or, with the portable kernels, dequantised into
 * the thread's scratch and dotted with x.
 *
 * Speed (llava-bench matmul --n 256, f16 4096×4096): about 110 GFLOP/s on
 * one AMD EPYC (Zen 4) core, 64 on one Xeon core and 570 on 16 Xeon cores.
 */
#include "backend/cpu/cpu.h"
#include "backend/quant.h"

#include <stdint.h>

typedef struct {
    be *b;
    float *y;
    const float *x;
    const be_weight *w;
    const float *bias;
    int n;
    int n_tiles;   /* ceil(rows / MM_TILE_ROWS) */
    int n_groups;  /* token groups per tile */
    int group_len; /* tokens per group, a multiple of MM_BLOCK_TOKENS */
} mm_job;

static size_t elem_size(be_dtype dtype) {
    return dtype == BE_F32 ? 4 : 2;
}

static const unsigned char *row_ptr(const be_weight *w, long r) {
    return (const unsigned char *)w->data + (size_t)r * w->row_bytes;
}

/* Σ x·w[r] for a quantized row: dequantised span by span into the thread's
 * scratch (be_dequant_span, the formats' definition), then the float dot. */
static float dot_quant_row(const cpu_kernels *k, const float *x, const be_weight *w, long r,
                           float *scratch) {
    float s = 0.0f;
    for (int c0 = 0; c0 < w->cols; c0 += CPU_SCRATCH_FLOATS) {
        int nc = w->cols - c0 < CPU_SCRATCH_FLOATS ? w->cols - c0 : CPU_SCRATCH_FLOATS;
        k->dequant(w, (int)r, c0, nc, scratch);
        s += k->dot(x + c0, scratch, nc);
    }
    return s;
}

/* n == 1: thread ith computes y[lo..hi). A quantized row goes through the
 * fused kernel when there is one (the sums of x per 32 values first, into
 * the thread's scratch), else through dequantise + dot. */
static void gemv_task(void *arg, int ith, int nth) {
    const mm_job *j = arg;
    const cpu_kernels *k = cpu_ctx_of(j->b)->k;
    float *scratch = cpu_ctx_of(j->b)->scratch[ith];
    const be_weight *w = j->w;
    bool quant = be_dtype_quantized(w->dtype);
    bool fused = quant && k->gemv_q && cpu_gemv_q_ok(w) && w->cols / 32 <= CPU_SCRATCH_FLOATS;
    long lo, hi;
    tp_split(w->rows, ith, nth, 4, &lo, &hi);
    if (fused && lo < hi)
        for (int i = 0; i < w->cols / 32; i++) {
            float sx = 0.0f;
            for (int c = 0; c < 32; c++) sx += j->x[32 * i + c];
            scratch[i] = sx;
        }
    for (long r = lo; r < hi; r++) {
        float s = fused   ? k->gemv_q(j->x, scratch, w, (int)r)
                  : quant ? dot_quant_row(k, j->x, w, r, scratch)
                          : k->dot_w(j->x, w->dtype, row_ptr(w, r), w->cols);
        j->y[r] = j->bias ? s + j->bias[r] : s;
    }
}

/* y[t0..t1) × [r0, r0+nr) = bias, then += the product, one column slice at a time. */
static void gemm_tile(const mm_job *j, float *panel, long r0, int nr, long t0, long t1) {
    const cpu_kernels *k = cpu_ctx_of(j->b)->k;
    const be_weight *w = j->w;
    int rows = w->rows, cols = w->cols;
    bool direct = w->dtype == BE_F32 && (uintptr_t)w->data % sizeof(float) == 0;
    bool quant = be_dtype_quantized(w->dtype);

    for (long t = t0; t < t1; t++)
        for (int r = 0; r < nr; r++) j->y[t * rows + r0 + r] = j->bias ? j->bias[r0 + r] : 0.0f;

    for (int c0 = 0; c0 < cols; c0 += MM_TILE_COLS) {
        int nc = cols - c0 < MM_TILE_COLS ? cols - c0 : MM_TILE_COLS;
        const float *wr[MM_TILE_ROWS];
        for (int r = 0; r < nr; r++) {
            if (direct) {
                wr[r] = (const float *)w->data + (r0 + r) * (size_t)cols + c0;
            } else {
                float *dst = panel + (size_t)r * MM_TILE_COLS;
                if (quant)
                    k->dequant(w, (int)(r0 + r), c0, nc, dst);
                else
                    k->convert(dst, w->dtype, row_ptr(w, r0 + r) + (size_t)c0 * elem_size(w->dtype),
                               (size_t)nc);
                wr[r] = dst;
            }
        }
        for (long t = t0; t < t1; t += MM_BLOCK_TOKENS) {
            const float *xs[MM_BLOCK_TOKENS];
            for (int i = 0; i < MM_BLOCK_TOKENS; i++)
                xs[i] = j->x + (t + i < t1 ? t + i : t1 - 1) * cols + c0;
            for (int r = 0; r < nr; r += MM_BLOCK_ROWS) {
                const float *ws[MM_BLOCK_ROWS];
                for (int jj = 0; jj < MM_BLOCK_ROWS; jj++)
                    ws[jj] = wr[r + jj < nr ? r + jj : nr - 1];
                float acc[MM_BLOCK_TOKENS][MM_BLOCK_ROWS] = {{0}};
                k->dot_block(acc, xs, ws, nc);
                for (int i = 0; i < MM_BLOCK_TOKENS && t + i < t1; i++)
                    for (int jj = 0; jj < MM_BLOCK_ROWS && r + jj < nr; jj++)
                        j->y[(t + i) * rows + r0 + r + jj] += acc[i][jj];
            }
        }
    }
}

/* n > 1: thread ith runs its share of the (tile, token group) tasks. */
static void gemm_task(void *arg, int ith, int nth) {
    const mm_job *j = arg;
    float *panel = cpu_ctx_of(j->b)->scratch[ith];
    long lo, hi;
    tp_split((long)j->n_tiles * j->n_groups, ith, nth, 1, &lo, &hi);
    for (long task = lo; task < hi; task++) {
        long tile = task / j->n_groups, group = task % j->n_groups;
        long r0 = tile * MM_TILE_ROWS, t0 = group * j->group_len;
        int nr = j->w->rows - r0 < MM_TILE_ROWS ? (int)(j->w->rows - r0) : MM_TILE_ROWS;
        long t1 = t0 + j->group_len < j->n ? t0 + j->group_len : j->n;
        if (t0 < t1) gemm_tile(j, panel, r0, nr, t0, t1);
    }
}

void cpu_matmul(be *b, float *y, const float *x, const be_weight *w, const float *bias, int n) {
    mm_job j = {.b = b, .y = y, .x = x, .w = w, .bias = bias, .n = n};
    if (n <= 0) return;
    if (n == 1) {
        tp_run(cpu_ctx_of(b)->pool, gemv_task, &j,
               cpu_threads_for(b, (size_t)w->rows * w->cols, 1 << 15));
        return;
    }
    /* Enough tasks for every thread: split the tokens too when the tiles are few. */
    int nth = cpu_threads_for(b, (size_t)w->rows * w->cols * n, 1 << 16);
    j.n_tiles = (w->rows + MM_TILE_ROWS - 1) / MM_TILE_ROWS;
    int n_blocks = (n + MM_BLOCK_TOKENS - 1) / MM_BLOCK_TOKENS;
    j.n_groups = j.n_tiles >= nth ? 1 : (nth + j.n_tiles - 1) / j.n_tiles;
    if (j.n_groups > n_blocks) j.n_groups = n_blocks;
    j.group_len = (n_blocks + j.n_groups - 1) / j.n_groups * MM_BLOCK_TOKENS;
    tp_run(cpu_ctx_of(b)->pool, gemm_task, &j, nth);
}
