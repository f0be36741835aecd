/*
 * attention.c - softmax(q·kᵀ / √head_dim [+ causal mask]) · v over a
 * sequence's K/V, for prefill (many queries) and decode (one query) alike.
 *
 * Work unit: a block of up to MM_BLOCK_TOKENS (6) query rows that share one
 * kv head, a row being one (query i, head h). Rows are numbered per kv head
 * query-major, so a block holds the GQA group's heads of one query and then
 * of the next (decode: the 4 heads that read kv head g) or, without GQA,
 * consecutive queries of a head (CLIP). Each key and value is then loaded
 * once for 6 rows. Blocks are dealt round-robin to the threads, which evens
 * out the causal triangle; when rows are few (decode), blocks shrink so that
 * every thread gets one.
 *
 * A block streams its keys in chunks of KV_BLOCK:
 *   1. scores S (6 × chunk) = Q·Kᵀ, scaled after the product as HF's eager
 *      path does, with the matmul micro-kernel (`dot_block`);
 *   2. per row, the "online softmax" step: the new running max, the running
 *      output and sum rescaled to it, P = exp(S − max) (0 past the row's
 *      causal limit);
 *   3. O (6 × head_dim) += P·V (`madd_block`).
 * This is a two-pass softmax's arithmetic up to rounding, with no buffer that
 * depends on n_kv: O, S and P live in the thread's scratch.
 */
#include "backend/cpu/cpu.h"

#include <assert.h>
#include <math.h>
#include <string.h>

enum { KV_BLOCK = 64, ROWS = MM_BLOCK_TOKENS };

typedef struct {
    be *b;
    float *out;
    const float *q, *k, *v;
    int n_q, q_pos0, n_kv, n_heads, n_kv_heads, head_dim;
    bool causal;
    float scale;
    int rows_per_block, blocks_per_kv_head;
} attn_job;

/* Rows r0 .. r0+nr-1 of kv head g; scratch holds O (ROWS × head_dim) then
 * S/P (ROWS × KV_BLOCK). */
static void attend_block(const attn_job *j, int g, int r0, int nr, float *scratch) {
    const cpu_kernels *k = cpu_ctx_of(j->b)->k;
    int hd = j->head_dim, group = j->n_heads / j->n_kv_heads;
    size_t kv_dim = (size_t)j->n_kv_heads * hd;
    const float *kg = j->k + (size_t)g * hd, *vg = j->v + (size_t)g * hd;

    /* Rows past nr repeat the last real row (the kernels work on 6); their
     * results stay in scratch. */
    const float *q[ROWS], *p[ROWS];
    float *o[ROWS], max[ROWS], sum[ROWS];
    int seen[ROWS], n_keys = 0;
    for (int r = 0; r < ROWS; r++) {
        int row = r0 + (r < nr ? r : nr - 1), i = row / group, h = g * group + row % group;
        q[r] = j->q + ((size_t)i * j->n_heads + h) * hd;
        o[r] = scratch + (size_t)r * hd;
        p[r] = scratch + (size_t)ROWS * hd + (size_t)r * KV_BLOCK;
        seen[r] = j->causal && j->q_pos0 + i + 1 < j->n_kv ? j->q_pos0 + i + 1 : j->n_kv;
        if (seen[r] > n_keys) n_keys = seen[r];
        max[r] = -INFINITY;
        sum[r] = 0;
        memset(o[r], 0, (size_t)hd * sizeof *o[r]);
    }

    for (int c0 = 0; c0 < n_keys; c0 += KV_BLOCK) {
        int nc = n_keys - c0 < KV_BLOCK ? n_keys - c0 : KV_BLOCK;
        /* 1. S = Q·Kᵀ · scale, MM_BLOCK_ROWS keys per kernel call (the last
         * call repeating its last key). */
        for (int t = 0; t < nc; t += MM_BLOCK_ROWS) {
            const float *ks[MM_BLOCK_ROWS];
            for (int u = 0; u < MM_BLOCK_ROWS; u++)
                ks[u] = kg + (c0 + (t + u < nc ? t + u : nc - 1)) * kv_dim;
            float acc[ROWS][MM_BLOCK_ROWS] = {{0}};
            k->dot_block(acc, q, ks, hd);
            for (int r = 0; r < ROWS; r++) {
                float *s = (float *)p[r];
                for (int u = 0; u < MM_BLOCK_ROWS && t + u < nc; u++)
                    s[t + u] = acc[r][u] * j->scale;
            }
        }
        /* 2. Online softmax step per row. */
        for (int r = 0; r < ROWS; r++) {
            float *s = (float *)p[r];
            int valid = seen[r] - c0 < 0 ? 0 : seen[r] - c0 < nc ? seen[r] - c0 : nc;
            float new_max = max[r];
            for (int t = 0; t < valid; t++)
                if (s[t] > new_max) new_max = s[t];
            if (valid > 0 && new_max != max[r]) {
                float rescale = expf(max[r] - new_max); /* 0 on the first chunk */
                sum[r] *= rescale;
                for (int d = 0; d < hd; d++) o[r][d] *= rescale;
                max[r] = new_max;
            }
            for (int t = 0; t < valid; t++) {
                s[t] = expf(s[t] - new_max);
                sum[r] += s[t];
            }
            for (int t = valid; t < nc; t++) s[t] = 0;
        }
        /* 3. O += P·V. */
        k->madd_block(o, p, vg + c0 * kv_dim, kv_dim, nc, hd);
    }

    /* Every row's q has been read, so out may equal q. */
    for (int r = 0; r < nr; r++) {
        int row = r0 + r, i = row / group, h = g * group + row % group;
        float *out = j->out + ((size_t)i * j->n_heads + h) * hd;
        float inv = sum[r] > 0 ? 1.0f / sum[r] : 0.0f;
        for (int d = 0; d < hd; d++) out[d] = o[r][d] * inv;
    }
}

static void attn_task(void *arg, int ith, int nth) {
    const attn_job *j = arg;
    int group = j->n_heads / j->n_kv_heads, rows = j->n_q * group;
    long n_tasks = (long)j->n_kv_heads * j->blocks_per_kv_head;
    for (long task = ith; task < n_tasks; task += nth) {
        int g = (int)(task / j->blocks_per_kv_head);
        int r0 = (int)(task % j->blocks_per_kv_head) * j->rows_per_block;
        int nr = rows - r0 < j->rows_per_block ? rows - r0 : j->rows_per_block;
        attend_block(j, g, r0, nr, cpu_ctx_of(j->b)->scratch[ith]);
    }
}

void cpu_attention(be *b, float *out, const float *q, const float *k, const float *v, int n_q,
                   int q_pos0, int n_kv, int n_heads, int n_kv_heads, int head_dim, bool causal) {
    assert(n_kv_heads > 0 && n_heads % n_kv_heads == 0);
    assert((size_t)ROWS * (head_dim + KV_BLOCK) <= CPU_SCRATCH_FLOATS);
    if (n_q <= 0) return;
    attn_job j = {.b = b,
                  .out = out,
                  .q = q,
                  .k = k,
                  .v = v,
                  .n_q = n_q,
                  .q_pos0 = q_pos0,
                  .n_kv = n_kv,
                  .n_heads = n_heads,
                  .n_kv_heads = n_kv_heads,
                  .head_dim = head_dim,
                  .causal = causal,
                  .scale = (float)(1.0 / sqrt((double)head_dim))};
    size_t work = (size_t)n_q * n_heads * (size_t)(n_kv > 0 ? n_kv : 1) * head_dim;
    int nth = cpu_threads_for(b, work, 1 << 14);
    int rows = n_q * (n_heads / n_kv_heads), per_thread = n_q * n_heads / nth;
    j.rows_per_block = per_thread < 1 ? 1 : per_thread < ROWS ? per_thread : ROWS;
    j.blocks_per_kv_head = (rows + j.rows_per_block - 1) / j.rows_per_block;
    tp_run(cpu_ctx_of(b)->pool, attn_task, &j, nth);
}
