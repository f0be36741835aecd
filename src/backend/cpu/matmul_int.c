/*
 * matmul_int.c - y (n, rows) = x (n, cols) · Wᵀ + bias for a weight repacked
 * into the integer lanes of qdot.h (the default for quantized weights; see
 * there for the arithmetic and why).
 *
 * First every token's row of x is quantized to int8 (threads split the
 * tokens) into the backend's qx buffer. Then:
 *
 * - n == 1 (decode): threads split W's rows; QK_GEMV_R rows at a time go
 *   through the kernels' dot_rows, which streams them once, prefetching the
 *   next rows as it goes.
 *
 * - n > 1: tasks of (a tile of MM_TILE_ROWS rows) × (a group of tokens), as
 *   the float GEMM cuts them. A task runs its tokens QK_MAX_T at a time; for
 *   each slice of QKM_SLICE values of the columns it runs every block of
 *   QK_MAX_R rows of the tile through dot_block, so the tokens' quantized
 *   slices stay in L1 and the tile's weights in L2. The 16 lane
 *   accumulators of each (token, row) are carried across the slices.
 *
 * A weight with a tail (qk_prep in qdot.h: the ragged last lanes of every
 * row, packed P rows to a tail row) runs main's groups as above; before
 * finishing a row, the integer sums of its tail lanes come from dot_rows on
 * the tail rows that hold them (a GEMV band's at once, QK_TAIL_BAND rows)
 * and are folded into its lane accumulators as the reference folds a last
 * group.
 *
 * Either way each output gets the reference's arithmetic (the lane sums
 * over the groups in order, then qk_sum16, then + bias), so a token's
 * outputs are the same bits alone or in any batch.
 */
#include "backend/cpu/cpu.h"
#include "base/half.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Values of the columns per slice (a tile's unpacked codes: MM_TILE_ROWS ×
 * QKM_SLICE bytes, 128 KiB, in L2), and tokens whose accumulators a task
 * keeps across the slices (16 lanes × 32 rows × 64 tokens: 128 KiB). */
enum {
    QKM_SLICE = 4096,
    QKM_TOKENS = 128,
    QKM_PANEL = MM_TILE_ROWS * QKM_SLICE,
    QKM_ACC = QKM_TOKENS * MM_TILE_ROWS * QK_LANES * 4,
    QKM_TILE_COPY = CPU_QSCRATCH_BYTES - QKM_PANEL - QKM_ACC /* gemm_tile's padded tile */
};
/* gemm_tail rebuilds a tile's last groups, packed and unpacked, in the panel. */
_Static_assert(MM_TILE_ROWS *(2 * QK_LANES * QK_BLOCK + 2 * QK_LANES) <= QKM_PANEL,
               "a tile's padded last groups fit the panel");
_Static_assert(QKM_PANEL + QKM_TOKENS * MM_TILE_ROWS * QK_LANES * sizeof(float) <=
                   CPU_QSCRATCH_BYTES,
               "a tile's unpacked slice and its accumulators fit the scratch");

typedef struct {
    be *b;
    float *y;
    const float *x;
    const qk_prep *p;
    const qk_weight *w; /* &p->main */
    const float *bias;
    int n, x_cols;
    size_t xrb;     /* bytes of one quantized row (the full layout: main's groups, then the last) */
    size_t txrb;    /* of its tail (0: none) */
    size_t xstride; /* a token's: main, tail, then the tail's 16 real dx (64 bytes) */
    int n_tiles, n_groups, group_len;
} qm_job;

/* Rows of a GEMV band: their tail sums are computed first, into the scratch. */
enum { QK_TAIL_BAND = 256 };
_Static_assert((QK_TAIL_BAND + 2) * QK_LANES * sizeof(float) <= CPU_QSCRATCH_BYTES,
               "a band's tail sums fit the scratch");

static const uint8_t *xrow(const qm_job *j, long t) {
    return cpu_ctx_of(j->b)->qx + (size_t)t * j->xstride;
}

/* Token t's tail (qk_prep in qdot.h): the T lanes after main's groups,
 * repeated P times, quantized as the tail's row; then the real dx kept
 * after it and every dx set to 1, so the tail's lane sums are its integers. */
static void quantize_tail(const qm_job *j, const float *x, uint8_t *xq) {
    const qk_kernels *k = cpu_ctx_of(j->b)->qk;
    const qk_prep *p = j->p;
    int T = p->tail_lanes, P = p->tail_per, c_tail = p->main.n_groups * p->main.group;
    float buf[QK_LANES * QK_BLOCK] = {0}; /* P·T blocks used */
    for (int i = 0; i < P * T; i++)
        memcpy(buf + QK_BLOCK * i, x + c_tail + QK_BLOCK * (i % T), QK_BLOCK * sizeof(float));
    k->quantize(&p->tail, buf, xq);
    qk_xside *side = (qk_xside *)(void *)(xq + p->tail.group);
    float *dx = (float *)(void *)(xq + j->txrb);
    for (int i = 0; i < QK_LANES; i++) dx[i] = i < P * T ? side->dx[i] : 0.0f;
    for (int i = 0; i < P * T; i++) side->dx[i] = 1.0f;
}

static void quantize_task(void *arg, int ith, int nth) {
    const qm_job *j = arg;
    const qk_kernels *k = cpu_ctx_of(j->b)->qk;
    long lo, hi;
    tp_split(j->n, ith, nth, 1, &lo, &hi);
    for (long t = lo; t < hi; t++) {
        const float *x = j->x + (size_t)t * j->x_cols;
        k->quantize(&j->p->full, x, cpu_ctx_of(j->b)->qx + (size_t)t * j->xstride);
        if (j->txrb && j->n == 1) /* only the GEMV reads the tail rows */
            quantize_tail(j, x, cpu_ctx_of(j->b)->qx + (size_t)t * j->xstride + j->xrb);
    }
}

/* acc[v − v0] = the integer sums of tail rows [v0, v1] (16 lanes each:
 * rows vP.. side by side, T lanes each), token 0. */
static void tail_sums(const qm_job *j, long v0, long v1, float (*acc)[QK_LANES]) {
    const qk_kernels *k = cpu_ctx_of(j->b)->qk;
    const uint8_t *xt = xrow(j, 0) + j->xrb;
    for (long v = v0; v <= v1; v += QK_GEMV_R) {
        int nv = v1 - v + 1 < QK_GEMV_R ? (int)(v1 - v + 1) : QK_GEMV_R, rows[QK_GEMV_R];
        for (int i = 0; i < nv; i++) rows[i] = (int)(v + i);
        k->dot_rows(acc + (v - v0), nv, xt, &j->p->tail, rows, NULL);
    }
}

/* The reference's fold of a last group's T lanes into acc (qdot.h): ints
 * the lanes' integer sums, ws their scales, dx the token's. Inlined into
 * functions cloned for FMA (x86: fmaf is then one instruction, as
 * -fno-math-errno lets it be; elsewhere a call) */
static inline void fold(float *acc, const float *ints, const float *ws, const float *dx, int T) {
    for (int l = 0; l < T; l++) acc[l] = fmaf(ints[l], ws[l] * dx[l], acc[l]);
}
#if defined(__x86_64__) && defined(__GNUC__)
#define FMA_CLONES __attribute__((target_clones("fma", "default")))
#else
#define FMA_CLONES
#endif

/* y[i] = bias[r0 + i] + the lane sums of acc[i], for n outputs of rows r0... */
static void finish(const qm_job *j, float *y, long r0, const float (*acc)[QK_LANES], int n) {
    const qk_kernels *k = cpu_ctx_of(j->b)->qk;
    const float *bias = j->bias ? j->bias + r0 : NULL;
    if (k->finish) {
        k->finish(y, acc, bias, n);
        return;
    }
    for (int i = 0; i < n; i++) y[i] = (bias ? bias[i] : 0.0f) + qk_sum16(acc[i]);
}

/* Rows [lo, hi) of the GEMV (thread ith's scratch). */
FMA_CLONES static void gemv_rows(const qm_job *j, long lo, long hi, int ith) {
    const qk_kernels *k = cpu_ctx_of(j->b)->qk;
    const qk_weight *w = j->w;
    const qk_prep *p = j->p;
    int T = p->tail_lanes, P = p->tail_per;
    float(*tacc)[QK_LANES] = (void *)cpu_ctx_of(j->b)->qscratch[ith]; /* a band's tail sums */
    const float *dx = (const float *)(const void *)(xrow(j, 0) + j->xrb + j->txrb);
    for (long b0 = lo; b0 < hi; b0 += QK_TAIL_BAND) {
        long b1 = b0 + QK_TAIL_BAND < hi ? b0 + QK_TAIL_BAND : hi, v0 = 0;
        int v = 0, q = 0; /* the next row's tail row (from v0) and place in it */
        if (j->txrb) {
            v0 = b0 / P;
            q = (int)(b0 % P);
            tail_sums(j, v0, (b1 - 1) / P, tacc);
        }
        for (long r0 = b0; r0 < b1; r0 += QK_GEMV_R) {
            int nr = b1 - r0 < QK_GEMV_R ? (int)(b1 - r0) : QK_GEMV_R;
            int rows[QK_GEMV_R], pf[QK_GEMV_R];
            for (int r = 0; r < QK_GEMV_R; r++) {
                rows[r] = (int)(r0 + r);
                pf[r] = (int)(r0 + QK_GEMV_R + r < hi ? r0 + QK_GEMV_R + r : hi - 1);
            }
            float acc[QK_GEMV_R][QK_LANES];
            k->dot_rows(acc, nr, xrow(j, 0), w, rows, r0 + QK_GEMV_R < hi ? pf : NULL);
            for (int r = 0; r < nr && j->txrb; r++) {
                fold(acc[r], tacc[v] + q * T, p->tail_ws + (v0 + v) * QK_LANES + q * T, dx + q * T,
                     T);
                if (++q == P) {
                    q = 0;
                    v++;
                }
            }
            finish(j, j->y + r0, r0, (const float(*)[QK_LANES])acc, nr);
        }
    }
}

static void gemv_task(void *arg, int ith, int nth) {
    const qm_job *j = arg;
    long lo, hi;
    tp_split(j->w->rows, ith, nth, QK_GEMV_R, &lo, &hi);
    gemv_rows(j, lo, hi, ith);
}

/* Several GEMVs of one x (cpu_matmul_multi_int): the threads split their
 * rows end to end. */
typedef struct {
    const qm_job *jobs;
    int count;
    long rows; /* of them all */
} qm_multi;

static void gemv_multi_task(void *arg, int ith, int nth) {
    const qm_multi *m = arg;
    long lo, hi, off = 0;
    tp_split(m->rows, ith, nth, QK_GEMV_R, &lo, &hi);
    for (int i = 0; i < m->count; off += m->jobs[i].w->rows, i++) {
        long a = lo > off ? lo - off : 0,
             b = hi - off < m->jobs[i].w->rows ? hi - off : m->jobs[i].w->rows;
        if (a < b) gemv_rows(&m->jobs[i], a, b, ith);
    }
}

/* The last group of `row` in the full (padded) layout, into dst
 * (full.group_bytes): its lanes moved back from its tail row, its scales. */
static void padded_last(const qk_prep *p, uint8_t *dst, long row) {
    const qk_weight *tw = &p->tail;
    int T = p->tail_lanes, P = p->tail_per, q = (int)(row % P), code_bytes = p->full.code_bytes;
    long v = row / P;
    const uint8_t *src = tw->data + (size_t)v * tw->row_bytes;
    memset(dst, 0, p->full.group_bytes);
    for (int l = 0; l < T; l++) {
        for (int c = 0; c < code_bytes; c += 64)
            memcpy(dst + c + 4 * l, src + c + 4 * (q * T + l), 4);
        uint16_t h = lv_f32_to_f16(p->tail_ws[v * QK_LANES + q * T + l]);
        memcpy(dst + code_bytes + 2 * l, &h, 2);
    }
}

/* Rows [r0, r0 + nr) of a weight with a tail in the full layout, into dst
 * (the rows' main groups copied, their last groups rebuilt): *pw describes
 * them as a weight of nr rows. */
static void padded_tile(const qk_prep *p, qk_weight *pw, uint8_t *dst, long r0, int nr) {
    const qk_weight *m = &p->main;
    *pw = p->full;
    pw->rows = nr;
    pw->data = dst;
    size_t main_bytes = (size_t)m->n_groups * m->group_bytes;
    for (int r = 0; r < nr; r++) {
        uint8_t *row = dst + (size_t)r * pw->row_bytes;
        memcpy(row, m->data + (size_t)(r0 + r) * m->row_bytes, main_bytes);
        padded_last(p, row + main_bytes, r0 + r);
    }
}

/* The tails of rows [r0, r0 + nr) (qk_prep) folded into the accumulators
 * of tokens [tg, tg1) (gemm_tile's, from token tg) as the padded layout
 * did: the rows' last groups are rebuilt padded (the full layout, one group
 * a row, their lanes moved back from the tail rows, the real scales) in
 * the scratch's panel, which the slices no longer use, and every block of
 * tokens × block of rows runs them through dot_block after main's groups,
 * against the activations' own last group (quantized in the full layout). */
static void gemm_tail(const qm_job *j, uint8_t *scratch,
                      float (*acc)[MM_TILE_ROWS / QK_MAX_R][QK_MAX_T][QK_MAX_R][QK_LANES], long r0,
                      int nr, long tg, long tg1) {
    const qk_kernels *k = cpu_ctx_of(j->b)->qk;
    const qk_prep *p = j->p;
    int G = p->main.n_groups;
    qk_weight pw = p->full; /* rows [r0, r0 + nr), their last group only */
    pw.rows = nr;
    pw.n_groups = 1;
    pw.row_bytes = pw.group_bytes;
    pw.data = scratch;
    uint8_t *unpacked = scratch + (size_t)MM_TILE_ROWS * pw.group_bytes;
    for (int r = 0; r < nr; r++) {
        padded_last(p, pw.data + (size_t)r * pw.row_bytes, r0 + r);
        if (k->unpack) k->unpack(&pw, r, 0, 1, unpacked + (size_t)r * pw.group);
    }
    for (long t = tg; t < tg1; t += QK_MAX_T) {
        int nt = tg1 - t < QK_MAX_T ? (int)(tg1 - t) : QK_MAX_T;
        const uint8_t *xs[QK_MAX_T];
        for (int i = 0; i < nt; i++) xs[i] = xrow(j, t + i) + (size_t)G * qk_xgroup_bytes(&pw);
        for (int rb = 0; rb * QK_MAX_R < nr; rb++) {
            int n_r = nr - rb * QK_MAX_R < QK_MAX_R ? nr - rb * QK_MAX_R : QK_MAX_R;
            int rows[QK_MAX_R];
            const uint8_t *codes[QK_MAX_R];
            for (int r = 0; r < n_r; r++) {
                rows[r] = rb * QK_MAX_R + r;
                codes[r] = k->unpack ? unpacked + (size_t)rows[r] * pw.group : NULL;
            }
            k->dot_block(acc[(t - tg) / QK_MAX_T][rb], nt, n_r, xs, &pw, rows, codes, 0, 1);
        }
    }
}

/* Tokens [t0, t1) × rows [r0, r0 + nr) of one task. Per slice of the
 * columns, the tile's codes are unpacked once into the thread's scratch
 * (nr × QKM_SLICE bytes, in L2), then every block of tokens runs every
 * block of rows over the slice; the lane accumulators of a block of
 * tokens live across the slices. */
static void gemm_tile(const qm_job *j, uint8_t *panel, long r0, int nr, long t0, long t1) {
    const qk_kernels *k = cpu_ctx_of(j->b)->qk;
    const qk_weight *w = j->w;
    enum { RB = MM_TILE_ROWS / QK_MAX_R, TB = QKM_TOKENS / QK_MAX_T };
    /* With a tail, the tile in the full layout where it fits the scratch
     * (main's groups and the last in one pass), else gemm_tail after main's. */
    qk_weight pw;
    long wr0 = r0; /* the tile's first row in w */
    bool tail_after = false;
    if (j->txrb) {
        if ((size_t)MM_TILE_ROWS * j->p->full.row_bytes <= QKM_TILE_COPY) {
            padded_tile(j->p, &pw, panel + QKM_PANEL + QKM_ACC, r0, nr);
            w = &pw;
            wr0 = 0;
        } else {
            tail_after = true;
        }
    }
    int slice = QKM_SLICE / w->group;               /* groups per slice */
    for (long tg = t0; tg < t1; tg += QKM_TOKENS) { /* the accumulators of QKM_TOKENS tokens */
        long tg1 = tg + QKM_TOKENS < t1 ? tg + QKM_TOKENS : t1;
        float(*acc)[RB][QK_MAX_T][QK_MAX_R][QK_LANES] = (void *)(panel + QKM_PANEL);
        memset(acc, 0, sizeof(float[TB][RB][QK_MAX_T][QK_MAX_R][QK_LANES]));
        for (int g0 = 0; g0 < w->n_groups; g0 += slice) {
            int g1 = g0 + slice < w->n_groups ? g0 + slice : w->n_groups;
            for (int r = 0; r < nr && k->unpack; r++)
                k->unpack(w, (int)wr0 + r, g0, g1, panel + (size_t)r * QKM_SLICE);
            for (long t = tg; t < tg1; t += QK_MAX_T) {
                int nt = tg1 - t < QK_MAX_T ? (int)(tg1 - t) : QK_MAX_T;
                const uint8_t *xs[QK_MAX_T];
                for (int i = 0; i < nt; i++) xs[i] = xrow(j, t + i);
                for (int rb = 0; rb * QK_MAX_R < nr; rb++) {
                    int rows[QK_MAX_R], n_r = nr - rb * QK_MAX_R;
                    const uint8_t *codes[QK_MAX_R];
                    if (n_r > QK_MAX_R) n_r = QK_MAX_R;
                    for (int r = 0; r < n_r; r++) {
                        rows[r] = (int)wr0 + rb * QK_MAX_R + r;
                        codes[r] =
                            k->unpack ? panel + (size_t)(rb * QK_MAX_R + r) * QKM_SLICE : NULL;
                    }
                    k->dot_block(acc[(t - tg) / QK_MAX_T][rb], nt, n_r, xs, w, rows, codes, g0, g1);
                }
            }
        }
        if (tail_after) gemm_tail(j, panel, acc, r0, nr, tg, tg1);
        for (long t = tg; t < tg1; t++) /* QK_MAX_R rows' accumulators lie side by side */
            for (int rb = 0; rb * QK_MAX_R < nr; rb++) {
                int n_r = nr - rb * QK_MAX_R < QK_MAX_R ? nr - rb * QK_MAX_R : QK_MAX_R;
                long row = r0 + rb * QK_MAX_R;
                finish(j, j->y + (size_t)t * j->w->rows + row, row,
                       (const float(*)[QK_LANES])acc[(t - tg) / QK_MAX_T][rb][(t - tg) % QK_MAX_T],
                       n_r);
            }
    }
}

static void gemm_task(void *arg, int ith, int nth) {
    const qm_job *j = arg;
    long lo, hi;
    tp_split((long)j->n_tiles * j->n_groups, ith, nth, 1, &lo, &hi);
    for (long task = lo; task < hi; task++) {
        long tile = task / j->n_groups, group = task % j->n_groups;
        long r0 = tile * MM_TILE_ROWS, t0 = group * j->group_len;
        int nr = j->w->rows - r0 < MM_TILE_ROWS ? (int)(j->w->rows - r0) : MM_TILE_ROWS;
        long t1 = t0 + j->group_len < j->n ? t0 + j->group_len : j->n;
        if (t0 < t1) gemm_tile(j, cpu_ctx_of(j->b)->qscratch[ith], r0, nr, t0, t1);
    }
}

/* The job of y = x·wᵀ + bias, its quantized x sized (false: out of memory). */
static bool job_for(be *b, qm_job *j, float *y, const float *x, const be_weight *w,
                    const float *bias, int n) {
    cpu_ctx *c = cpu_ctx_of(b);
    const qk_prep *p = w->prep;
    *j = (qm_job){.b = b,
                  .y = y,
                  .x = x,
                  .p = p,
                  .w = &p->main,
                  .bias = bias,
                  .n = n,
                  .x_cols = w->cols,
                  .xrb = qk_xrow_bytes(&p->full),
                  .txrb = p->tail.data ? qk_xrow_bytes(&p->tail) : 0};
    j->xstride = j->xrb + (j->txrb ? j->txrb + 64 : 0);
    size_t need = (size_t)n * j->xstride;
    if (need > c->qx_cap) {
        uint8_t *a = aligned_alloc(64, (need + 63) / 64 * 64);
        if (!a) return false;
        free(c->qx);
        c->qx = a;
        c->qx_cap = need;
    }
    return true;
}

bool cpu_matmul_int(be *b, float *y, const float *x, const be_weight *w, const float *bias, int n) {
    cpu_ctx *c = cpu_ctx_of(b);
    qm_job j;
    if (!job_for(b, &j, y, x, w, bias, n)) return false;
    const qk_weight *q = j.w;
    if (n == 1)
        quantize_task(&j, 0, 1);
    else
        tp_run(c->pool, quantize_task, &j, cpu_threads_for(b, (size_t)n * q->cols, 1 << 14));
    int nth = cpu_threads_for(b, (size_t)q->rows * q->cols * n, 1 << 15);
    if (n == 1) {
        tp_run(c->pool, gemv_task, &j, nth);
        return true;
    }
    j.n_tiles = (q->rows + MM_TILE_ROWS - 1) / MM_TILE_ROWS;
    int n_blocks = (n + QK_MAX_T - 1) / QK_MAX_T;
    j.n_groups = j.n_tiles >= nth ? 1 : (nth + j.n_tiles - 1) / j.n_tiles;
    if (j.n_groups > n_blocks) j.n_groups = n_blocks;
    j.group_len = (n_blocks + j.n_groups - 1) / j.n_groups * QK_MAX_T;
    tp_run(c->pool, gemm_task, &j, nth);
    return true;
}

/* Whether a and b quantize x alike: the same format, columns and tail. */
static bool same_x(const qk_prep *a, const qk_prep *b) {
    return a->full.fmt == b->full.fmt && a->full.cols == b->full.cols &&
           a->full.mlx_group == b->full.mlx_group && !a->tail.data == !b->tail.data &&
           a->tail_lanes == b->tail_lanes;
}

bool cpu_matmul_multi_int(be *b, float *const y[], const float *x, const be_weight *const w[],
                          const float *const bias[], int count, int n) {
    enum { MAX = 4 };
    if (n != 1 || count < 1 || count > MAX) return false;
    for (int i = 0; i < count; i++)
        if (!w[i]->prep || !same_x(w[0]->prep, w[i]->prep)) return false;
    qm_job jobs[MAX];
    qm_multi m = {.jobs = jobs, .count = count};
    for (int i = 0; i < count; i++) {
        if (!job_for(b, &jobs[i], y[i], x, w[i], bias[i], n)) return false;
        m.rows += jobs[i].w->rows;
    }
    quantize_task(&jobs[0], 0, 1); /* one x for them all */
    tp_run(cpu_ctx_of(b)->pool, gemv_multi_task, &m,
           cpu_threads_for(b, (size_t)m.rows * jobs[0].w->cols, 1 << 15));
    return true;
}
