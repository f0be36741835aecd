/*
 * matmul.c - y (n, rows) = x (n, cols) · Wᵀ + bias, the hot op.
 *
 * Three shapes of the same product:
 *
 * - n == 1 (decode): a GEMV, bound by reading W once from memory. Threads
 *   split W's rows; MM_GEMV_ROWS rows at a time are reduced together
 *   (kernels `dot_rows`, one accumulator per row), converted to float32 on
 *   the fly, so a plain weight is streamed in its stored dtype and never
 *   copied.
 *
 * - 2 <= n <= MM_DEC_MAX with a plain weight (a continuous-batching decode
 *   step): threads split W's rows; the kernel `dot_tokens` reduces a block
 *   of up to dec_tokens tokens against 2 weight rows (or up to dec_tokens4
 *   against 4 rows; the table sets both), one accumulator per output,
 *   converting W on load as dot_rows does: no panel, each weight element
 *   converted once per token block, and enough independent FMA chains to
 *   cover their latency (see decode_task). A quantized weight with
 *   2 <= n <= the table's dec_qtokens does the same with `dot_tokens_q`,
 *   which decodes each block once in registers for all the tokens
 *   (decode_q_task). With the portable kernels, and for larger quantized
 *   batches, such n take the GEMM path below. Where the table has
 *   `dot_pairs` (AVX-512), a plain weight's 2 <= n <= MM_PAIR_TOKENS take it
 *   instead (decode_pairs_task): x packed two tokens to a vector, every
 *   token in one pass over W.
 *
 * - n > 1 otherwise (prefill, vision tower): compute bound. The work is cut into tasks
 *   of (a tile of MM_TILE_ROWS weight rows) × (a group of tokens). For each
 *   MM_TILE_COLS-wide slice of the columns, a task converts its tile to a
 *   float32 panel (128 KiB, stays in L2) and runs every block of
 *   MM_BLOCK_TOKENS (6) tokens against every MM_BLOCK_ROWS (4) panel rows
 *   with the register-blocked kernel (`dot_block`), adding the partial sums
 *   into y. Each weight element is thus converted once per task, and each x
 *   slice is read once per tile of MM_TILE_ROWS rows instead of once per
 *   row. The tokens of a last, ragged block of at most MM_FEW_TOKENS (4)
 *   go one at a time through the one-token kernel (`dot_rows`, 8 rows at
 *   once) rather than as padding through dot_block, so a decode batch of 2
 *   to 4 rows (or 8 = 6 + 2) costs about its own FMAs; with a plain weight
 *   and no whole block, dot_rows reads W itself, without a panel. A larger
 *   ragged block repeats its last token; rows not a multiple of the block
 *   repeat the last row; the extra results are dropped. Aligned f32 weights are used
 *   straight from W, without a panel.
 *
 *   A plain weight (f32, f16, bf16) on a table with `dot_panel` (the x86
 *   ones, portable) takes the packed variant of this path instead
 *   (gemm_tile_panel): tiles of MM_PANEL_TILE_ROWS (64) rows, packed per
 *   slice by cpu_pack_panel (converted once, rows interleaved in pairs of
 *   8-column chunks, 256 KiB, in L2), and a micro-kernel of 6 tokens × 8
 *   rows that adds into y itself: on AVX-512, 24 ZMM accumulators fed by 4
 *   aligned panel loads and 6 broadcasts per 24 FMAs, about 85% of the FMA
 *   peak on one Zen 5 core (docs/PERF_NOTES.md). Quantized weights keep
 *   the row-major panel and dot_block.
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
 * Their GEMV and decode batch prefetch the next row group (prefetch_q):
 * quantized rows are short streams the hardware prefetchers miss.
 *
 * Timings of these paths: docs/PERF_NOTES.md.
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
    int tile_rows; /* MM_TILE_ROWS, or MM_PANEL_TILE_ROWS when packed */
    int n_tiles;   /* ceil(rows / tile_rows) */
    int n_groups;  /* token groups per tile */
    int group_len; /* tokens per group, a multiple of MM_BLOCK_TOKENS */
    bool packed;   /* plain weight, table with dot_panel: gemm_tile_panel */
} mm_job;

/* Rows of W a decode-batch thread runs through all column slices before
 * moving on (a band: its slices of W stay in L2 while x's slice is in L1). */
enum { MM_DEC_BAND = 32 };
_Static_assert((int)MM_DEC_BAND % (int)MM_DEC_ROWS == 0, "bands hold whole row groups");
/* A table with dot_pairs needs no dot_tokens: it takes every plain batch. */
_Static_assert((int)MM_PAIR_TOKENS >= (int)MM_DEC_MAX, "dot_pairs covers the decode batch");
/* gemm_tile_panel packs a tile's slice into the scratch. */
_Static_assert((MM_PANEL_TILE_ROWS / MM_PANEL_ROWS) * (MM_TILE_COLS / 8) * 8 * MM_PANEL_ROWS <=
                   CPU_SCRATCH_FLOATS,
               "a packed tile fits the scratch");
_Static_assert(MM_PANEL_TILE_ROWS % MM_PANEL_ROWS == 0 && MM_TILE_COLS % 8 == 0, "whole chunks");
_Static_assert(MM_TILE_ROWS *MM_TILE_COLS <= CPU_SCRATCH_FLOATS, "a tile fits the scratch");
/* decode_pairs_task packs a slice of x for every token into the scratch. */
_Static_assert((MM_TILE_COLS / 8) * 16 * (MM_PAIR_TOKENS / 2) <= CPU_SCRATCH_FLOATS,
               "packed x fits the scratch");

static size_t elem_size(be_dtype dtype) {
    return dtype == BE_F32 ? 4 : 2;
}

static const unsigned char *row_ptr(const be_weight *w, long r) {
    return (const unsigned char *)w->data + (size_t)r * w->row_bytes;
}

/* Prefetches what a quantized kernel reads for rows [r0, r0+nr), columns
 * [c0, c0+nc): their codes, and an MLX weight's scales and biases. Issued
 * one row group ahead: a row of a 1024-wide INT4 weight is 8 cache lines,
 * too short a stream for the hardware prefetchers to follow, so without
 * this a GEMV over a weight larger than the caches waits on DRAM latency
 * (measured: docs/PERF_NOTES.md). */
static void prefetch_q(const be_weight *w, long r0, int nr, int c0, int nc) {
    /* c0 and nc are whole blocks or groups: the bytes scale exactly */
    size_t from = w->row_bytes * (size_t)c0 / (size_t)w->cols;
    size_t to = w->row_bytes * (size_t)(c0 + nc) / (size_t)w->cols;
    for (int r = 0; r < nr; r++) {
        const unsigned char *p = row_ptr(w, r0 + r);
        uintptr_t a = ((uintptr_t)(p + from)) & ~(uintptr_t)63;
        for (; a < (uintptr_t)(p + to); a += 64) __builtin_prefetch((const void *)a, 0, 3);
    }
    if (w->dtype == BE_MLX) {
        size_t es = w->q.scale_dtype == BE_F32 ? 4 : 2, ng = (size_t)w->cols / w->q.group;
        size_t g0 = ((size_t)r0 * ng + (size_t)c0 / w->q.group) * es;
        size_t g1 = ((size_t)(r0 + nr - 1) * ng + (size_t)(c0 + nc) / w->q.group) * es;
        const unsigned char *side[2] = {w->q.scales, w->q.biases};
        for (int k = 0; k < 2; k++) {
            uintptr_t a = ((uintptr_t)(side[k] + g0)) & ~(uintptr_t)63;
            for (; a < (uintptr_t)(side[k] + g1); a += 64)
                __builtin_prefetch((const void *)a, 0, 3);
        }
    }
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
                /* what comes next: the next slice of these rows, else the next rows */
                if (c0 + MM_TILE_COLS < cols)
                    prefetch_q(w, r0, nr, c0 + MM_TILE_COLS,
                               cols - c0 - MM_TILE_COLS < MM_TILE_COLS ? cols - c0 - MM_TILE_COLS
                                                                       : MM_TILE_COLS);
                else if (r0 + MM_GEMV_ROWS < hi)
                    prefetch_q(w, r0 + MM_GEMV_ROWS,
                               hi - r0 - MM_GEMV_ROWS < MM_GEMV_ROWS ? (int)(hi - r0 - MM_GEMV_ROWS)
                                                                     : MM_GEMV_ROWS,
                               0, cols < MM_TILE_COLS ? cols : MM_TILE_COLS);
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

void cpu_pack_panel(const cpu_kernels *k, float *wp, be_dtype dtype, const void *const w[], int n) {
    enum { CHUNK = 256 }; /* columns converted at a time, per row */
    float buf[MM_PANEL_ROWS][CHUNK];
    for (int c0 = 0; c0 < n; c0 += CHUNK) {
        int m = n - c0 < CHUNK ? n - c0 : CHUNK;
        for (int r = 0; r < MM_PANEL_ROWS; r++) {
            k->convert(buf[r], dtype, (const unsigned char *)w[r] + (size_t)c0 * elem_size(dtype),
                       (size_t)m);
            for (int i = m; i < (m + 7) / 8 * 8; i++) buf[r][i] = 0.0f;
        }
        float *dst = wp + (size_t)c0 * MM_PANEL_ROWS;
        for (int c = 0; c < m; c += 8, dst += 8 * MM_PANEL_ROWS)
            for (int r = 0; r < MM_PANEL_ROWS; r++)
                for (int l = 0; l < 8; l++) dst[8 * r + l] = buf[r][c + l];
    }
}

/* gemm_tile for a plain weight with the table's dot_panel: per slice, the
 * tile's rows (up to MM_PANEL_TILE_ROWS) are packed 8 at a time
 * (cpu_pack_panel: converted once, 256 KiB for the tile, resident in L2),
 * then each block of MM_BLOCK_TOKENS tokens (24 KiB of x slices, read from
 * L2/L3 by its first group and mostly cached for the others) runs against
 * every group of 8 rows.
 * A ragged last block of more than MM_FEW_TOKENS tokens repeats its last
 * token; fewer go through dot_rows straight from W, as gemm_tile's do. */
static void gemm_tile_panel(const mm_job *j, float *panel, long r0, int nr, long t0, long t1) {
    const cpu_kernels *k = cpu_ctx_of(j->b)->k;
    const be_weight *w = j->w;
    int rows = w->rows, cols = w->cols;
    size_t es = elem_size(w->dtype);
    bool few = t1 - t0 <= MM_FEW_TOKENS;

    for (long t = t0; t < t1; t++)
        for (int r = 0; r < nr; r++) j->y[t * rows + r0 + r] = j->bias ? j->bias[r0 + r] : 0.0f;
    for (int c0 = 0; c0 < cols; c0 += MM_TILE_COLS) {
        int nc = cols - c0 < MM_TILE_COLS ? cols - c0 : MM_TILE_COLS;
        size_t gsz = cpu_panel_floats(nc);
        for (int g = 0; g < nr && !few; g += MM_PANEL_ROWS) {
            const void *ws[MM_PANEL_ROWS];
            for (int r = 0; r < MM_PANEL_ROWS; r++)
                ws[r] = row_ptr(w, r0 + (g + r < nr ? g + r : nr - 1)) + (size_t)c0 * es;
            cpu_pack_panel(k, panel + (size_t)(g / MM_PANEL_ROWS) * gsz, w->dtype, ws, nc);
        }
        long t = t0;
        for (; t < t1 && (t + MM_BLOCK_TOKENS <= t1 || t1 - t > MM_FEW_TOKENS);
             t += MM_BLOCK_TOKENS) {
            const float *xs[MM_BLOCK_TOKENS];
            for (int i = 0; i < MM_BLOCK_TOKENS; i++)
                xs[i] = j->x + (t + i < t1 ? t + i : t1 - 1) * cols + c0;
            for (int g = 0; g < nr; g += MM_PANEL_ROWS) {
                const float *wp = panel + (size_t)(g / MM_PANEL_ROWS) * gsz;
                if (t + MM_BLOCK_TOKENS <= t1 && g + MM_PANEL_ROWS <= nr) {
                    k->dot_panel(j->y + t * rows + r0 + g, (size_t)rows, xs, wp, nc);
                    continue;
                }
                /* a ragged block: into a copy of its y, then the valid part back */
                float yb[MM_BLOCK_TOKENS][MM_PANEL_ROWS] = {{0}};
                for (int i = 0; i < MM_BLOCK_TOKENS && t + i < t1; i++)
                    for (int r = 0; r < MM_PANEL_ROWS && g + r < nr; r++)
                        yb[i][r] = j->y[(t + i) * rows + r0 + g + r];
                k->dot_panel(&yb[0][0], MM_PANEL_ROWS, xs, wp, nc);
                for (int i = 0; i < MM_BLOCK_TOKENS && t + i < t1; i++)
                    for (int r = 0; r < MM_PANEL_ROWS && g + r < nr; r++)
                        j->y[(t + i) * rows + r0 + g + r] = yb[i][r];
            }
        }
        for (int r = 0; r < nr && t < t1; r += MM_GEMV_ROWS) {
            const void *ws[MM_GEMV_ROWS];
            for (int jj = 0; jj < MM_GEMV_ROWS; jj++)
                ws[jj] = row_ptr(w, r0 + (r + jj < nr ? r + jj : nr - 1)) + (size_t)c0 * es;
            for (long tt = t; tt < t1; tt++) {
                float acc[MM_GEMV_ROWS] = {0};
                k->dot_rows(acc, j->x + tt * cols + c0, w->dtype, ws, NULL, nc);
                for (int jj = 0; jj < MM_GEMV_ROWS && r + jj < nr; jj++)
                    j->y[tt * rows + r0 + r + jj] += acc[jj];
            }
        }
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

/* 2 <= n <= MM_DEC_MAX with a plain weight: thread ith computes y[.][lo..hi)
 * for every token. Per band of MM_DEC_BAND rows and per MM_TILE_COLS slice,
 * the tokens go in the fewest blocks of near-equal size that the kernel
 * takes (dec_tokens, or dec_tokens4 with 4 rows); for each block,
 * dot_tokens runs every group of nr rows of the band, read straight from W
 * in its dtype. The first block fetches the band's slice from memory
 * (prefetching the next group as it goes) and the others find it in L1/L2,
 * while the block's x slices stay in L1. Few tokens (n <= dec_tokens4)
 * take 4 rows at a time, so that there are enough independent FMA chains.
 * Each output gets dot_rows' arithmetic (see the header), so the bits are
 * those of n == 1. */
static void decode_task(void *arg, int ith, int nth) {
    const mm_job *j = arg;
    const cpu_kernels *k = cpu_ctx_of(j->b)->k;
    const be_weight *w = j->w;
    int rows = w->rows, cols = w->cols, n = j->n;
    size_t es = elem_size(w->dtype);
    long lo, hi;
    tp_split(rows, ith, nth, MM_GEMV_ROWS, &lo, &hi);
    for (int t = 0; t < n; t++)
        for (long r = lo; r < hi; r++) j->y[(size_t)t * rows + r] = j->bias ? j->bias[r] : 0.0f;
    int nr = n <= k->dec_tokens4 ? 4 : 2;
    int maxt = nr == 4 ? k->dec_tokens4 : k->dec_tokens;
    int n_blk = (n + maxt - 1) / maxt;
    for (long b0 = lo; b0 < hi; b0 += MM_DEC_BAND) {
        long b1 = b0 + MM_DEC_BAND < hi ? b0 + MM_DEC_BAND : hi;
        for (int c0 = 0; c0 < cols; c0 += MM_TILE_COLS) {
            int nc = cols - c0 < MM_TILE_COLS ? cols - c0 : MM_TILE_COLS;
            int t0 = 0;
            for (int bi = 0; bi < n_blk; bi++) {
                int nt = (n - t0) / (n_blk - bi);
                const float *xs[MM_DEC_TOKENS];
                for (int t = 0; t < nt; t++) xs[t] = j->x + (size_t)(t0 + t) * cols + c0;
                for (long r0 = b0; r0 < b1; r0 += nr) {
                    const void *ws[MM_DEC_ROWS], *pf[MM_DEC_ROWS];
                    /* next: the band's next group, else its first group in the next slice */
                    long pr = r0 + nr;
                    int pc = c0;
                    if (pr >= b1) {
                        pr = b0;
                        pc = c0 + MM_TILE_COLS;
                    }
                    bool prefetch = bi == 0 && pc < cols;
                    for (int jj = 0; jj < nr; jj++) {
                        long rr = r0 + jj < b1 ? r0 + jj : b1 - 1;
                        ws[jj] = row_ptr(w, rr) + (size_t)c0 * es;
                        long pp = pr + jj < b1 ? pr + jj : b1 - 1;
                        if (prefetch) pf[jj] = row_ptr(w, pp) + (size_t)pc * es;
                    }
                    float acc[MM_DEC_TOKENS][MM_DEC_ROWS] = {{0}};
                    k->dot_tokens(acc, nt, nr, xs, w->dtype, ws, prefetch ? pf : NULL, nc);
                    for (int t = 0; t < nt; t++)
                        for (int jj = 0; jj < nr && r0 + jj < b1; jj++)
                            j->y[(size_t)(t0 + t) * rows + r0 + jj] += acc[t][jj];
                }
                t0 += nt;
            }
        }
    }
}

void cpu_pack_pairs(float *xp, const float *x, size_t ldx, int nt, int c0, int n) {
    int np = (nt + 1) / 2;
    for (int c = 0; c < n; c += 8) {
        int m = n - c < 8 ? n - c : 8;
        for (int p = 0; p < np; p++)
            for (int h = 0; h < 2; h++) {
                int t = 2 * p + h < nt ? 2 * p + h : 2 * p;
                float *dst = xp + ((size_t)(c / 8) * np + p) * 16 + 8 * h;
                const float *src = x + (size_t)t * ldx + c0 + c;
                for (int l = 0; l < 8; l++) dst[l] = l < m ? src[l] : 0.0f;
            }
    }
}

/* decode_task with the paired kernel (2 <= n <= MM_PAIR_TOKENS, plain
 * weight): per MM_TILE_COLS slice, the thread packs every token's slice of
 * x into its scratch (cpu_pack_pairs: 64 KiB at most, stays in L2), then
 * runs every group of nr rows of its share through dot_pairs with all the
 * tokens at once, prefetching the next group (or the first group of the
 * next slice) as it goes. The same arithmetic per output as dot_rows,
 * hence as n == 1. */
static void decode_pairs_task(void *arg, int ith, int nth) {
    const mm_job *j = arg;
    const cpu_kernels *k = cpu_ctx_of(j->b)->k;
    float *xp = cpu_ctx_of(j->b)->scratch[ith];
    const be_weight *w = j->w;
    int rows = w->rows, cols = w->cols, n = j->n, nr = cpu_pair_rows(n);
    size_t es = elem_size(w->dtype);
    long lo, hi;
    tp_split(rows, ith, nth, MM_GEMV_ROWS, &lo, &hi);
    for (int t = 0; t < n; t++)
        for (long r = lo; r < hi; r++) j->y[(size_t)t * rows + r] = j->bias ? j->bias[r] : 0.0f;
    for (int c0 = 0; c0 < cols && lo < hi; c0 += MM_TILE_COLS) {
        int nc = cols - c0 < MM_TILE_COLS ? cols - c0 : MM_TILE_COLS;
        cpu_pack_pairs(xp, j->x, (size_t)cols, n, c0, nc);
        for (long r0 = lo; r0 < hi; r0 += nr) {
            const void *ws[MM_PAIR_ROWS], *pf[MM_PAIR_ROWS];
            long pr = r0 + nr; /* next: the following group, else the first in the next slice */
            int pc = c0;
            if (pr >= hi) {
                pr = lo;
                pc = c0 + MM_TILE_COLS;
            }
            for (int jj = 0; jj < nr; jj++) {
                ws[jj] = row_ptr(w, r0 + jj < hi ? r0 + jj : hi - 1) + (size_t)c0 * es;
                pf[jj] = row_ptr(w, pr + jj < hi ? pr + jj : hi - 1) + (size_t)pc * es;
            }
            float acc[MM_PAIR_TOKENS][MM_PAIR_ROWS] = {{0}};
            k->dot_pairs(acc, n, xp, w->dtype, ws, pc < cols ? pf : NULL, nc);
            for (int t = 0; t < n; t++)
                for (int jj = 0; jj < nr && r0 + jj < hi; jj++)
                    j->y[(size_t)t * rows + r0 + jj] += acc[t][jj];
        }
    }
}

/* decode_task for a quantized weight and 2 <= n <= dec_qtokens: per band
 * and slice, every group of nr rows (4 for n <= dec_qtokens4, else 2) goes through
 * dot_tokens_q with all the tokens, which decodes the rows' slices once in
 * registers for them all (no panel). The same arithmetic per output as
 * dot_rows_q, hence as n == 1. */
static void decode_q_task(void *arg, int ith, int nth) {
    const mm_job *j = arg;
    const cpu_kernels *k = cpu_ctx_of(j->b)->k;
    const be_weight *w = j->w;
    int rows = w->rows, cols = w->cols, n = j->n;
    long lo, hi;
    tp_split(rows, ith, nth, MM_GEMV_ROWS, &lo, &hi);
    for (int t = 0; t < n; t++)
        for (long r = lo; r < hi; r++) j->y[(size_t)t * rows + r] = j->bias ? j->bias[r] : 0.0f;
    int nr = n <= k->dec_qtokens4 ? 4 : 2;
    for (long b0 = lo; b0 < hi; b0 += MM_DEC_BAND) {
        long b1 = b0 + MM_DEC_BAND < hi ? b0 + MM_DEC_BAND : hi;
        for (int c0 = 0; c0 < cols; c0 += MM_TILE_COLS) {
            int nc = cols - c0 < MM_TILE_COLS ? cols - c0 : MM_TILE_COLS;
            for (long r0 = b0; r0 < b1; r0 += nr) {
                /* next: the band's next group, else its first in the next slice,
                 * else the next band's first */
                if (r0 + nr < b1)
                    prefetch_q(w, r0 + nr, b1 - r0 - nr < nr ? (int)(b1 - r0 - nr) : nr, c0, nc);
                else if (c0 + MM_TILE_COLS < cols)
                    prefetch_q(w, b0, (int)(b1 - b0 < nr ? b1 - b0 : nr), c0 + MM_TILE_COLS,
                               cols - c0 - MM_TILE_COLS < MM_TILE_COLS ? cols - c0 - MM_TILE_COLS
                                                                       : MM_TILE_COLS);
                else if (b1 < hi)
                    prefetch_q(w, b1, hi - b1 < nr ? (int)(hi - b1) : nr, 0,
                               cols < MM_TILE_COLS ? cols : MM_TILE_COLS);
                int rs[MM_DEC_ROWS];
                for (int jj = 0; jj < nr; jj++) rs[jj] = (int)(r0 + jj < b1 ? r0 + jj : b1 - 1);
                float acc[MM_DEC_QMAX][MM_DEC_ROWS] = {{0}};
                k->dot_tokens_q(acc, n, nr, j->x + c0, (size_t)cols, w, rs, c0, nc);
                for (int t = 0; t < n; t++)
                    for (int jj = 0; jj < nr && r0 + jj < b1; jj++)
                        j->y[(size_t)t * rows + r0 + jj] += acc[t][jj];
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
        long r0 = tile * j->tile_rows, t0 = group * j->group_len;
        int nr = j->w->rows - r0 < j->tile_rows ? (int)(j->w->rows - r0) : j->tile_rows;
        long t1 = t0 + j->group_len < j->n ? t0 + j->group_len : j->n;
        if (t0 >= t1) continue;
        if (j->packed)
            gemm_tile_panel(j, panel, r0, nr, t0, t1);
        else
            gemm_tile(j, panel, r0, nr, t0, t1);
    }
}

void cpu_matmul(be *b, float *y, const float *x, const be_weight *w, const float *bias, int n) {
    mm_job j = {.b = b, .y = y, .x = x, .w = w, .bias = bias, .n = n};
    if (n <= 0) return;
    if (w->prep && cpu_matmul_int(b, y, x, w, bias, n)) return;
    if (n == 1) {
        tp_run(cpu_ctx_of(b)->pool, gemv_task, &j,
               cpu_threads_for(b, (size_t)w->rows * w->cols, 1 << 15));
        return;
    }
    const cpu_kernels *k = cpu_ctx_of(b)->k;
    bool quant = be_dtype_quantized(w->dtype);
    if (!quant && n <= MM_PAIR_TOKENS && k->dot_pairs) {
        tp_run(cpu_ctx_of(b)->pool, decode_pairs_task, &j,
               cpu_threads_for(b, (size_t)w->rows * w->cols * n, 1 << 16));
        return;
    }
    if (quant ? n <= k->dec_qtokens && k->dot_tokens_q : n <= MM_DEC_MAX && k->dot_tokens) {
        tp_run(cpu_ctx_of(b)->pool, quant ? decode_q_task : decode_task, &j,
               cpu_threads_for(b, (size_t)w->rows * w->cols * n, 1 << 16));
        return;
    }
    /* Enough tasks for every thread: split the tokens too when the tiles are few. */
    int nth = cpu_threads_for(b, (size_t)w->rows * w->cols * n, 1 << 16);
    j.packed = !quant && k->dot_panel;
    j.tile_rows = j.packed ? MM_PANEL_TILE_ROWS : MM_TILE_ROWS;
    j.n_tiles = (w->rows + j.tile_rows - 1) / j.tile_rows;
    int n_blocks = (n + MM_BLOCK_TOKENS - 1) / MM_BLOCK_TOKENS;
    j.n_groups = j.n_tiles >= nth ? 1 : (nth + j.n_tiles - 1) / j.n_tiles;
    if (j.n_groups > n_blocks) j.n_groups = n_blocks;
    j.group_len = (n_blocks + j.n_groups - 1) / j.n_groups * MM_BLOCK_TOKENS;
    tp_run(cpu_ctx_of(b)->pool, gemm_task, &j, nth);
}

void cpu_matmul_multi(be *b, float *const y[], const float *x, const be_weight *const w[],
                      const float *const bias[], int count, int n) {
    if (cpu_matmul_multi_int(b, y, x, w, bias, count, n)) return;
    for (int i = 0; i < count; i++) cpu_matmul(b, y[i], x, w[i], bias[i], n);
}
