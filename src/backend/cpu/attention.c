/*
 * attention.c - softmax(q·kᵀ / √head_dim [+ causal mask]) · v over a
 * sequence's K/V (f32 or f16), for prefill (many queries), decode (one
 * query) and the CLIP tower alike, fused: flash-attention's online softmax,
 * with no n_q × n_kv score matrix.
 *
 * Work unit (a task): up to ROWS rows that share one kv head, a row being
 * one (query i, head h). Rows are numbered per kv head query-major, so a
 * task holds the GQA group's heads of one query, then of the next (decode:
 * the 4 heads that read kv head g), or, without GQA, consecutive queries
 * of a head (CLIP): each key and value block is read once for all of them.
 * Threads take tasks from a shared counter, largest (latest rows) first.
 *
 * A task walks the keys in blocks of KV_BLOCK that start at multiples of
 * KV_BLOCK, whatever q_pos0 and n_kv are:
 *   1. S = Q·Kᵀ for the rows that see any key of the block (kernel `scores`);
 *   2. per row, over its visible keys: the new running max m, P = exp(S·scale
 *      − m), the block's sum; when m grew, the running output O and sum l
 *      are first rescaled by exp(m_old − m) (`exp_sum`);
 *   3. O += P·V (`pv`), P being 0 past a row's causal limit.
 * The output is O / l.
 *
 * Batch invariance. A row's arithmetic depends only on its q and its own
 * keys and values: blocks start at fixed key positions, every kernel gives
 * each (row, key) the same operations whatever tile it sits in
 * (attention.h), and the zeros a row meets past its causal limit inside a
 * block add exactly nothing (O starts at +0 and never becomes −0; stored
 * values are finite: store_as saturates f16). So a token gives the same
 * bits decoded alone, in a prefill chunk of any size, on any thread count,
 * and on every kernel table.
 */
#include "backend/cpu/attention.h"
#include "backend/cpu/cpu.h"

#include <assert.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>

enum { KV_BLOCK = 64, ROWS = 32 };

/* The table that goes with the backend's cpu_kernels (tests switch it). */
static const attn_kernels *kernels_for(be *b) {
    const char *isa = cpu_ctx_of(b)->k->isa;
    const attn_kernels *t = NULL;
    if (strcmp(isa, "avx512") == 0) t = attn_kernels_avx512();
    if (strcmp(isa, "avx2") == 0) t = attn_kernels_avx2();
    if (strcmp(isa, "neon") == 0) t = attn_kernels_neon();
    return t ? t : attn_kernels_portable();
}

typedef struct {
    const attn_kernels *kern;
    float **scratch;
    float *out;
    const float *q;
    const void *k, *v;
    be_dtype dt;
    int n_q, q_pos0, n_kv, n_heads, n_kv_heads, head_dim;
    bool causal;
    float scale;
    int blocks_per_kv_head; /* tasks per kv head, of ROWS rows (the last fewer) */
    atomic_int next;        /* tasks taken */
} attn_job;

/* Rows r0 .. r0+nr-1 of kv head g. Scratch: O (ROWS × head_dim), then
 * S/P (ROWS × KV_BLOCK). */
static void attend_rows(attn_job *j, int g, int r0, int nr, float *scratch) {
    const attn_kernels *kern = j->kern;
    int hd = j->head_dim, group = j->n_heads / j->n_kv_heads;
    size_t kv_dim = (size_t)j->n_kv_heads * hd, es = j->dt == BE_F16 ? 2 : 4;
    const char *kg = (const char *)j->k + (size_t)g * hd * es;
    const char *vg = (const char *)j->v + (size_t)g * hd * es;

    const float *q[ROWS];
    float *o[ROWS], *s[ROWS], max[ROWS], sum[ROWS];
    int seen[ROWS], n_keys = 0;
    for (int r = 0; r < nr; r++) {
        int row = r0 + r, i = row / group, h = g * group + row % group;
        q[r] = j->q + ((size_t)i * j->n_heads + h) * hd;
        o[r] = scratch + (size_t)r * hd;
        s[r] = scratch + (size_t)ROWS * hd + (size_t)r * KV_BLOCK;
        seen[r] = j->causal && j->q_pos0 + i + 1 < j->n_kv ? j->q_pos0 + i + 1 : j->n_kv;
        if (seen[r] > n_keys) n_keys = seen[r];
        max[r] = -INFINITY;
        sum[r] = 0;
        memset(o[r], 0, (size_t)hd * sizeof *o[r]);
    }

    for (int c0 = 0; c0 < n_keys; c0 += KV_BLOCK) {
        int nc = n_keys - c0 < KV_BLOCK ? n_keys - c0 : KV_BLOCK;
        /* Rows come in query order, so those that see this block are a suffix. */
        int ra = 0;
        while (seen[ra] <= c0) ra++;
        const char *kb = kg + (size_t)c0 * kv_dim * es, *vb = vg + (size_t)c0 * kv_dim * es;
        kern->scores(s[ra], KV_BLOCK, q + ra, nr - ra, kb, j->dt, kv_dim, nc, hd);
        for (int r = ra; r < nr; r++) {
            int valid = seen[r] - c0 < nc ? seen[r] - c0 : nc;
            float m_old = max[r];
            float bsum = kern->exp_sum(s[r], valid, j->scale, &max[r]);
            if (m_old != max[r] && m_old != -INFINITY) {
                float rescale = attn_exp(m_old - max[r]);
                sum[r] *= rescale;
                for (int d = 0; d < hd; d++) o[r][d] *= rescale;
            }
            sum[r] += bsum;
            for (int t = valid; t < nc; t++) s[r][t] = 0;
        }
        kern->pv(o + ra, (const float *const *)(s + ra), nr - ra, vb, j->dt, kv_dim, nc, hd);
    }

    /* Every row's q has been read, so out may equal q. */
    for (int r = 0; r < nr; r++) {
        int row = r0 + r, i = row / group, h = g * group + row % group;
        float *out = j->out + ((size_t)i * j->n_heads + h) * hd;
        for (int d = 0; d < hd; d++) out[d] = sum[r] > 0 ? o[r][d] / sum[r] : 0.0f;
    }
}

static void attn_task(void *arg, int ith, int nth) {
    attn_job *j = arg;
    int rows = j->n_q * (j->n_heads / j->n_kv_heads);
    int n_tasks = j->n_kv_heads * j->blocks_per_kv_head;
    for (;;) {
        int t = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (t >= n_tasks) break;
        /* Latest row blocks first: under a causal mask they see the most keys. */
        int blk = j->blocks_per_kv_head - 1 - t / j->n_kv_heads, g = t % j->n_kv_heads;
        int r0 = blk * ROWS, nr = rows - r0 < ROWS ? rows - r0 : ROWS;
        attend_rows(j, g, r0, nr, j->scratch[ith]);
    }
}

void cpu_attention(be *b, float *out, const float *q, const void *k, const void *v,
                   be_dtype kv_dtype, int n_q, int q_pos0, int n_kv, int n_heads, int n_kv_heads,
                   int head_dim, bool causal) {
    assert(n_kv_heads > 0 && n_heads % n_kv_heads == 0);
    assert(kv_dtype == BE_F32 || kv_dtype == BE_F16);
    assert((size_t)ROWS * (head_dim + KV_BLOCK) <= CPU_SCRATCH_FLOATS);
    if (n_q <= 0) return;
    attn_job j = {.kern = kernels_for(b),
                  .scratch = cpu_ctx_of(b)->scratch,
                  .out = out,
                  .q = q,
                  .k = k,
                  .v = v,
                  .dt = kv_dtype,
                  .n_q = n_q,
                  .q_pos0 = q_pos0,
                  .n_kv = n_kv,
                  .n_heads = n_heads,
                  .n_kv_heads = n_kv_heads,
                  .head_dim = head_dim,
                  .causal = causal,
                  .scale = (float)(1.0 / sqrt((double)head_dim))};
    int rows = n_q * (n_heads / n_kv_heads);
    j.blocks_per_kv_head = (rows + ROWS - 1) / ROWS;
    atomic_init(&j.next, 0);
    size_t work = (size_t)n_q * n_heads * (size_t)(n_kv > 0 ? n_kv : 1) * head_dim;
    int nth = cpu_threads_for(b, work, 1 << 14);
    int n_tasks = n_kv_heads * j.blocks_per_kv_head;
    if (nth > n_tasks) nth = n_tasks;
    tp_run(cpu_ctx_of(b)->pool, attn_task, &j, nth);
}

void cpu_store_as(be *b, void *dst, be_dtype dtype, const float *src, size_t n) {
    assert(dtype == BE_F32 || dtype == BE_F16);
    if (dtype == BE_F32)
        memcpy(dst, src, n * sizeof *src);
    else
        kernels_for(b)->store_f16(dst, src, n);
}
