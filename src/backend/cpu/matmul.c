/*
 * matmul.c - y (n, rows) = x (n, cols) · Wᵀ + bias, the hot op.
 *
 * Two shapes of the same product:
 *
 * - n == 1 (decode): a GEMV, bound by reading W once from memory. Threads
 *   split W's rows; MM_GEMV_ROWS rows at a time are reduced together
 *   (kernels `dot_rows`, one accumulator per row), converted to float32 on
 *   the fly, so a plain weight is streamed in its stored dtype and never
 *   copied.
 *
 * - n > 1 (prefill, vision tower): compute bound. The work is cut into tasks
 *   of (a tile of MM_TILE_ROWS weight rows) × (a group of tokens). For each
 *   MM_TILE_COLS-wide slice of the columns, a task converts its tile to a
 *   float32 panel (128 KiB, stays in L2) and runs every block of
 *   MM_BLOCK_TOKENS (6) tokens against every pair of panel rows with the
 *   register-blocked kernel (`dot_block`, 12 accumulators), adding the
 *   partial sums into y. Each weight element is thus converted once per task,
 *   and each x slice is read once per tile of 32 rows instead of once per
 *   row. The tokens of a last, ragged block of at most MM_FEW_TOKENS (4)
 *   go one at a time through the one-token kernel (`dot_rows`, 8 rows at
 *   once) rather than as padding through dot_block, so a decode batch of 2
 *   to 4 rows (or 8 = 6 + 2) costs about its own FMAs; with a plain weight
 *   and no whole block, dot_rows reads W itself, without a panel. A larger
 *   ragged block repeats its last token; rows not a multiple of the block
 *   repeat the last row; the extra results are dropped. Aligned f32 weights are used
 *   straight from W, without a panel.
 *
 * Both paths give every output the same float arithmetic: y = bias, then
 * for each MM_TILE_COLS slice in order y += (one 8-lane FMA accumulator
 * over the slice's full 8-column blocks, horizontally summed, plus the
 * slice's scalar tail). So an output depends only on its token's row of x
 * and its weight row, never on n, on the other tokens or on the thread
 * split: a token gives the same bits alone or in any batch (the batching
 * scheduler relies on it; tests/test_backend.c checks it for every dtype).
 *
 * Quantized weights (backend/quant.h) take the same two paths: the panel is
 * filled by the dequantiser (kernels `dequant`, bit-identical to
 * be_dequant_span) instead of a dtype conversion (MM_TILE_COLS is a
 * multiple of every block and group size), and a GEMV reduces the same
 * values decoded in registers (`dot_rows_q`) or dequantised into scratch.
 *
 * Speed (llava-bench matmul --n 256, f16 4096×4096): about 110 GFLOP/s on
 * one AMD EPYC (Zen 4) core, 64 on one Xeon core and 570 on 16 Xeon cores.
 */
#include "backend/cpu/cpu.h"
#include "backend/quant.h"

#include <stdint.h>

/* A ragged last block of at most this many tokens goes through dot_rows
 * (measured: 5 tokens are faster as a padded dot_block). */
enum { MM_FEW_TOKENS = 4 };

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

/* n == 1: thread ith computes y[lo..hi), MM_GEMV_ROWS rows at a time with
 * the GEMM's arithmetic for one output (see the header): y = bias, then
 * += the sum of each MM_TILE_COLS slice in order, each slice's sum from
 * dot_rows, which matches dot_block. Plain weights are read straight from W
 * (their conversion is exact, so panel or not the floats are the same);
 * quantized slices are decoded in registers by dot_rows_q (the dequantiser's
 * own code, so the same floats), or, with the portable kernels, dequantised
 * into the thread's scratch by the same k->dequant calls the GEMM panel
 * makes. */
static void gemv_task(void *arg, int ith, int nth) {
    const mm_job *j = arg;
    const cpu_kernels *k = cpu_ctx_of(j->b)->k;
    float *panel = cpu_ctx_of(j->b)->scratch[ith];
    const be_weight *w = j->w;
    bool quant = be_dtype_quantized(w->dtype);
    be_dtype dt = quant ? BE_F32 : w->dtype;
    int cols = w->cols;
    long lo, hi;
    tp_split(w->rows, ith, nth, MM_GEMV_ROWS, &lo, &hi);
    for (long r0 = lo; r0 < hi; r0 += MM_GEMV_ROWS) {
        int nr = hi - r0 < MM_GEMV_ROWS ? (int)(hi - r0) : MM_GEMV_ROWS;
        float y[MM_GEMV_ROWS];
        for (int r = 0; r < nr; r++) y[r] = j->bias ? j->bias[r0 + r] : 0.0f;
        for (int c0 = 0; c0 < cols; c0 += MM_TILE_COLS) {
            int nc = cols - c0 < MM_TILE_COLS ? cols - c0 : MM_TILE_COLS;
            float acc[MM_GEMV_ROWS] = {0};
            if (quant && k->dot_rows_q) { /* decoded in registers, same floats */
                int rows[MM_GEMV_ROWS];
                for (int r = 0; r < MM_GEMV_ROWS; r++) rows[r] = (int)r0 + (r < nr ? r : nr - 1);
                k->dot_rows_q(acc, j->x + c0, w, rows, c0, nc);
                for (int r = 0; r < nr; r++) y[r] += acc[r];
                continue;
            }
            const void *ws[MM_GEMV_ROWS], *pf[MM_GEMV_ROWS];
            /* the same slice of the next rows, read next: prefetched while this one runs */
            bool prefetch = !quant && r0 + MM_GEMV_ROWS + MM_GEMV_ROWS <= hi;
            for (int r = 0; r < MM_GEMV_ROWS; r++) {
                int rr = r < nr ? r : nr - 1;
                if (prefetch)
                    pf[r] = row_ptr(w, r0 + MM_GEMV_ROWS + r) + (size_t)c0 * elem_size(w->dtype);
                if (quant) {
                    if (r < nr)
                        k->dequant(w, (int)(r0 + r), c0, nc, panel + (size_t)r * MM_TILE_COLS);
                    ws[r] = panel + (size_t)rr * MM_TILE_COLS;
                } else {
                    ws[r] = row_ptr(w, r0 + rr) + (size_t)c0 * elem_size(w->dtype);
                }
            }
            k->dot_rows(acc, j->x + c0, dt, ws, prefetch ? pf : NULL, nc);
            for (int r = 0; r < nr; r++) y[r] += acc[r];
        }
        for (int r = 0; r < nr; r++) j->y[r0 + r] = y[r];
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

    /* A few tokens of a plain weight: dot_rows reads W itself (the panel
     * would cost more than it saves). */
    bool few = t1 - t0 <= MM_FEW_TOKENS;
    bool plain_few = few && !quant;
    for (int c0 = 0; c0 < cols; c0 += MM_TILE_COLS) {
        int nc = cols - c0 < MM_TILE_COLS ? cols - c0 : MM_TILE_COLS;
        const float *wr[MM_TILE_ROWS];
        for (int r = 0; r < nr && !plain_few; r++) {
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
        long t = t0;
        /* whole blocks through dot_block; a last block of more than
         * MM_FEW_TOKENS tokens too, padded with its last token */
        for (; t < t1 && (t + MM_BLOCK_TOKENS <= t1 || t1 - t > MM_FEW_TOKENS);
             t += MM_BLOCK_TOKENS) {
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
        /* The last tokens of a ragged block, one at a time through dot_rows
         * (the same sums as dot_block, without computing padding tokens). */
        for (int r = 0; r < nr && t < t1; r += MM_GEMV_ROWS) {
            const void *ws[MM_GEMV_ROWS];
            for (int jj = 0; jj < MM_GEMV_ROWS; jj++) {
                int rr = r + jj < nr ? r + jj : nr - 1;
                ws[jj] =
                    plain_few
                        ? (const void *)(row_ptr(w, r0 + rr) + (size_t)c0 * elem_size(w->dtype))
                        : (const void *)wr[rr];
            }
            for (long tt = t; tt < t1; tt++) { /* the 8 rows stay in L1 across the tokens */
                float acc[MM_GEMV_ROWS] = {0};
                k->dot_rows(acc, j->x + tt * cols + c0, plain_few ? w->dtype : BE_F32, ws, NULL,
                            nc);
                for (int jj = 0; jj < MM_GEMV_ROWS && r + jj < nr; jj++)
                    j->y[tt * rows + r0 + r + jj] += acc[jj];
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
