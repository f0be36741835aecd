/*
 * llm.c - Mistral / Llama decoder forward (see llm.h).
 *
 * One function, llm_forward, is the whole model for a batch of rows from
 * one or more sequences: a prompt chunk, one decode token, or both from
 * several requests at once. Attention reads each sequence's cache from
 * position 0 to its last new token, so a chunked prefill gives what a
 * single pass would.
 */
#include "model/llm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

lv_status llm_init(llm *m, be *b, const lv_text_config *c, const llm_weights *w, lv_err *err) {
    memset(m, 0, sizeof *m);
    if (strcmp(c->hidden_act, "silu") != 0)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "text_config.hidden_act \"%s\" is not supported (only \"silu\")",
                       c->hidden_act);
    *m = (llm){.b = b,
               .w = w,
               .dim = c->dim,
               .hidden_dim = c->hidden_dim,
               .n_layers = c->n_layers,
               .n_heads = c->n_heads,
               .n_kv_heads = c->n_kv_heads,
               .head_dim = c->head_dim,
               .q_dim = c->n_heads * c->head_dim,
               .kv_dim = c->n_kv_heads * c->head_dim,
               .vocab_size = c->vocab_size,
               .max_ctx = c->max_pos,
               .rms_eps = (float)c->rms_eps,
               .rope_theta = (float)c->rope_theta,
               .kv_f16 = true};
    if (c->sliding_window > 0 && c->sliding_window < m->max_ctx) m->max_ctx = c->sliding_window;
    return LV_OK;
}

/* ---- sequence state ---------------------------------------------------- */

lv_status llm_seq_init(const llm *m, int ctx, llm_seq *s, lv_err *err) {
    memset(s, 0, sizeof *s);
    if (ctx < 1 || ctx > m->max_ctx)
        return lv_fail(err, LV_ERR_ARG, "a context of %d tokens is out of range (1..%d)", ctx,
                       m->max_ctx);
    be *b = m->b;
    size_t cache = llm_kv_bytes_per_pos(m) / 2 * (size_t)ctx;
    s->m = m;
    s->ctx = ctx;
    s->kv_dtype = m->kv_f16 ? BE_F16 : BE_F32;
    /* rows of kv_dim: split by key/value heads under tensor parallelism */
    size_t row = (size_t)m->kv_dim * (m->kv_f16 ? 2 : sizeof(float));
    if (b->ops->alloc_split) {
        s->k = b->ops->alloc_split(b, cache, row);
        s->v = b->ops->alloc_split(b, cache, row);
    } else {
        s->k = b->ops->alloc(b, cache);
        s->v = b->ops->alloc(b, cache);
    }
    if (s->k && s->v) return LV_OK;
    llm_seq_deinit(s);
    return lv_fail(err, LV_ERR_NOMEM,
                   "out of memory for a sequence of %d tokens (KV cache %.1f MB)", ctx,
                   2.0 * cache / 1e6);
}

void llm_seq_deinit(llm_seq *s) {
    if (!s->m) return;
    be *b = s->m->b;
    b->ops->release(b, s->k);
    b->ops->release(b, s->v);
    memset(s, 0, sizeof *s);
}

void llm_seq_truncate(llm_seq *s, int pos) {
    if (pos >= 0 && pos < s->pos) s->pos = pos;
}

lv_status llm_seq_copy_prefix(const llm_seq *src, int n_pos, int ctx, llm_seq *dst, lv_err *err) {
    memset(dst, 0, sizeof *dst);
    const llm *m = src->m;
    if (n_pos < 0 || n_pos > src->pos || n_pos > ctx)
        return lv_fail(err, LV_ERR_ARG, "copying %d of %d positions into a context of %d", n_pos,
                       src->pos, ctx);
    if (src->kv_dtype != (m->kv_f16 ? BE_F16 : BE_F32))
        return lv_fail(err, LV_ERR_ARG, "the sequence's cache dtype is not the model's now");
    lv_status st = llm_seq_init(m, ctx, dst, err);
    if (st) return st;
    /* the cache is (n_layers, ctx, kv_dim): one block of n_pos rows a layer */
    be *b = m->b;
    size_t es = src->kv_dtype == BE_F16 ? 2 : sizeof(float), row = (size_t)m->kv_dim * es;
    for (int l = 0; l < m->n_layers; l++) {
        size_t from = (size_t)l * src->ctx * row, to = (size_t)l * ctx * row;
        b->ops->copy(b, (char *)dst->k + to, (const char *)src->k + from, (size_t)n_pos * row);
        b->ops->copy(b, (char *)dst->v + to, (const char *)src->v + from, (size_t)n_pos * row);
    }
    dst->pos = n_pos;
    return LV_OK;
}

size_t llm_kv_bytes_per_pos(const llm *m) {
    return 2 * (size_t)m->n_layers * (size_t)m->kv_dim * (m->kv_f16 ? 2 : sizeof(float));
}

/* ---- the batch --------------------------------------------------------- */

lv_status llm_batch_init(const llm *m, int max_rows, int max_seqs, llm_batch *bt, lv_err *err) {
    memset(bt, 0, sizeof *bt);
    if (max_rows < 1 || max_seqs < 1 || max_seqs > max_rows)
        return lv_fail(err, LV_ERR_ARG,
                       "batch of %d rows and %d sequences; expected rows >= 1 and "
                       "1 <= sequences <= rows",
                       max_rows, max_seqs);
    be *b = m->b;
    size_t f = sizeof(float), nb = (size_t)max_rows;
    bt->m = m;
    bt->max_rows = max_rows;
    bt->max_seqs = max_seqs;
    bt->x = b->ops->alloc(b, nb * m->dim * f);
    bt->xb = b->ops->alloc(b, nb * m->dim * f);
    bt->q = b->ops->alloc(b, nb * m->q_dim * f);
    bt->att = b->ops->alloc(b, nb * m->q_dim * f);
    bt->k = b->ops->alloc(b, nb * m->kv_dim * f);
    bt->v = b->ops->alloc(b, nb * m->kv_dim * f);
    bt->hb = b->ops->alloc(b, nb * m->hidden_dim * f);
    bt->hb2 = b->ops->alloc(b, nb * m->hidden_dim * f);
    bt->logits = b->ops->alloc(b, (size_t)max_seqs * m->vocab_size * f);
    bt->ids = b->ops->alloc(b, nb * sizeof *bt->ids);
    bt->posv = b->ops->alloc(b, nb * sizeof *bt->posv);
    bt->host_pos = malloc(nb * sizeof *bt->host_pos);
    if (bt->x && bt->xb && bt->q && bt->att && bt->k && bt->v && bt->hb && bt->hb2 && bt->logits &&
        bt->ids && bt->posv && bt->host_pos)
        return LV_OK;
    llm_batch_deinit(bt);
    return lv_fail(err, LV_ERR_NOMEM, "out of memory for a batch of %d rows", max_rows);
}

void llm_batch_deinit(llm_batch *bt) {
    if (!bt->m) return;
    be *b = bt->m->b;
    void *all[] = {bt->x,  bt->xb,  bt->q,      bt->att, bt->k,   bt->v,
                   bt->hb, bt->hb2, bt->logits, bt->ids, bt->posv};
    for (size_t i = 0; i < LV_ARRAY_LEN(all); i++) b->ops->release(b, all[i]);
    free(bt->host_pos);
    memset(bt, 0, sizeof *bt);
}

void llm_batch_set_ids(const llm *m, llm_batch *bt, int row0, const int32_t *ids, int n) {
    m->b->ops->upload(m->b, bt->ids + row0, ids, (size_t)n * sizeof *ids);
}

void llm_batch_embed_ids(const llm *m, llm_batch *bt, int row0, int n) {
    be *b = m->b;
    /* inputs_embeds = embed_tokens(input_ids); no scaling */
    b->ops->embed_rows(b, bt->x + (size_t)row0 * m->dim, &m->w->embed, bt->ids + row0, n);
}

void llm_batch_embed(const llm *m, llm_batch *bt, int row0, const int32_t *ids, int n) {
    llm_batch_set_ids(m, bt, row0, ids, n);
    llm_batch_embed_ids(m, bt, row0, n);
}

/* ---- forward ----------------------------------------------------------- */

/*
 * The decoder layers over the n input rows in bt->x: sequence i brings rows
 * [r_i, r_i + n_tok[i]) at its positions pos ..; their keys and values are
 * appended to its cache and its pos advances. Every matmul runs once over
 * all rows; RoPE uses each row's own position; attention runs per sequence
 * over its own cache. The new keys and values are computed into the
 * batch's k, v and stored into each cache in its dtype (store_as: f16
 * rounds, f32 copies); one f32 sequence alone gets them written straight
 * into its cache instead. On return bt->x holds the last layer's residual
 * rows.
 */
/* x += delta; y = rmsnorm(x)·g: the backend's fused op where it has one. */
static void add_norm(be *b, float *x, const float *delta, float *y, const float *g, int n, int dim,
                     float eps) {
    if (b->ops->add_rmsnorm) {
        b->ops->add_rmsnorm(b, x, delta, y, g, n, dim, eps);
        return;
    }
    b->ops->add(b, x, delta, (size_t)n * dim);
    b->ops->rmsnorm(b, y, x, g, n, dim, eps);
}

/* y[i] = x · w[i]ᵀ + bias[i]: the backend's matmul_multi where it has one
 * (q/k/v and gate/up read the same x). */
static void matmuls(be *b, float *const y[], const float *x, const be_weight *const w[],
                    const float *const bias[], int count, int n) {
    if (b->ops->matmul_multi) {
        b->ops->matmul_multi(b, y, x, w, bias, count, n);
        return;
    }
    for (int i = 0; i < count; i++) b->ops->matmul(b, y[i], x, w[i], bias[i], n);
}

/* A decode step (one row per sequence) is recorded and submitted as one unit
 * where the backend can (record_begin/end in backend.h: CUDA graphs), from its
 * first layer to its logits: the same ops every step, launched at once. */
static bool records(const llm *m, int n_seqs, int n) {
    return m->b->ops->record_begin && n == n_seqs;
}

static void run_layers(const llm *m, llm_batch *bt, llm_seq *const *seqs, const int *n_tok,
                       int n_seqs, int n) {
    be *b = m->b;
    const struct be_ops *op = b->ops;
    int dim = m->dim, kv_dim = m->kv_dim, q_dim = m->q_dim;
    /* k, v straight into the one cache */
    bool direct = n_seqs == 1 && seqs[0]->kv_dtype == BE_F32;

    /* position_ids: every token counts, image tokens included */
    for (int i = 0, r = 0; i < n_seqs; i++)
        for (int t = 0; t < n_tok[i]; t++, r++) bt->host_pos[r] = seqs[i]->pos + t;
    op->upload(b, bt->posv, bt->host_pos, (size_t)n * sizeof *bt->posv);
    if (records(m, n_seqs, n)) op->record_begin(b);

    for (int l = 0; l < m->n_layers; l++) {
        const llm_layer_weights *w = &m->w->layers[l];
        size_t layer = (size_t)l * seqs[0]->ctx * kv_dim;
        float *k_new = direct ? (float *)seqs[0]->k + layer + (size_t)seqs[0]->pos * kv_dim : bt->k;
        float *v_new = direct ? (float *)seqs[0]->v + layer + (size_t)seqs[0]->pos * kv_dim : bt->v;
        /* h = input_layernorm(x) (RMSNorm; after layer 0, done by the last layer's add_norm);
         * q, k, v; rotate_half RoPE at each row's position */
        if (l == 0) op->rmsnorm(b, bt->xb, bt->x, w->attn_norm, n, dim, m->rms_eps);
        matmuls(b, (float *const[]){bt->q, k_new, v_new}, bt->xb,
                (const be_weight *const[]){&w->wq, &w->wk, &w->wv},
                (const float *const[]){w->bq, w->bk, w->bv}, 3, n);
        op->rope(b, bt->q, n, m->n_heads, m->head_dim, bt->posv, m->rope_theta);
        op->rope(b, k_new, n, m->n_kv_heads, m->head_dim, bt->posv, m->rope_theta);
        /* each sequence: its new keys and values into its cache, then
         * softmax(q·kᵀ/√head_dim + causal mask)·v over its positions, GQA (repeat_kv) */
        for (int i = 0, r = 0; i < n_seqs; r += n_tok[i], i++) {
            llm_seq *s = seqs[i];
            size_t es = s->kv_dtype == BE_F16 ? 2 : sizeof(float);
            char *k_layer = (char *)s->k + (size_t)l * s->ctx * kv_dim * es;
            char *v_layer = (char *)s->v + (size_t)l * s->ctx * kv_dim * es;
            if (!direct) {
                size_t at = (size_t)s->pos * kv_dim * es, rows = (size_t)n_tok[i] * kv_dim;
                op->store_as(b, k_layer + at, s->kv_dtype, bt->k + (size_t)r * kv_dim, rows);
                op->store_as(b, v_layer + at, s->kv_dtype, bt->v + (size_t)r * kv_dim, rows);
            }
            op->attention(b, bt->att + (size_t)r * q_dim, bt->q + (size_t)r * q_dim, k_layer,
                          v_layer, s->kv_dtype, n_tok[i], s->pos, s->pos + n_tok[i], m->n_heads,
                          m->n_kv_heads, m->head_dim, true);
        }
        /* x = x + o_proj(att) */
        op->matmul(b, bt->xb, bt->att, &w->wo, w->bo, n);
        /* x = x + down_proj(silu(gate_proj(h)) * up_proj(h)), h = post_attention_layernorm(x) */
        add_norm(b, bt->x, bt->xb, bt->xb, w->ffn_norm, n, dim, m->rms_eps);
        matmuls(b, (float *const[]){bt->hb, bt->hb2}, bt->xb,
                (const be_weight *const[]){&w->w_gate, &w->w_up},
                (const float *const[]){w->b_gate, w->b_up}, 2, n);
        op->silu_mul(b, bt->hb, bt->hb2, (size_t)n * m->hidden_dim);
        op->matmul(b, bt->xb, bt->hb, &w->w_down, w->b_down, n);
        if (l + 1 < m->n_layers) /* and the next layer's input_layernorm */
            add_norm(b, bt->x, bt->xb, bt->xb, m->w->layers[l + 1].attn_norm, n, dim, m->rms_eps);
        else
            op->add(b, bt->x, bt->xb, (size_t)n * dim);
    }
    for (int i = 0; i < n_seqs; i++) seqs[i]->pos += n_tok[i];
}

static lv_status check_batch(const llm *m, const llm_batch *bt, llm_seq *const *seqs,
                             const int *n_tok, int n_seqs, int *rows, lv_err *err) {
    *rows = 0;
    if (n_seqs < 1 || n_seqs > bt->max_seqs)
        return lv_fail(err, LV_ERR_ARG, "a batch of %d sequences; 1..%d allowed", n_seqs,
                       bt->max_seqs);
    for (int i = 0; i < n_seqs; i++) {
        if (seqs[i]->m != m)
            return lv_fail(err, LV_ERR_ARG, "batch sequence %d was not made for this model", i);
        if (n_tok[i] < 1)
            return lv_fail(err, LV_ERR_ARG, "batch sequence %d brings %d tokens; expected >= 1", i,
                           n_tok[i]);
        if (seqs[i]->pos + n_tok[i] > seqs[i]->ctx)
            return lv_fail(err, LV_ERR_ARG,
                           "batch sequence %d needs %d tokens but its context holds %d", i,
                           seqs[i]->pos + n_tok[i], seqs[i]->ctx);
        for (int j = 0; j < i; j++)
            if (seqs[j] == seqs[i])
                return lv_fail(err, LV_ERR_ARG, "batch sequences %d and %d are the same", j, i);
        if (*rows > bt->max_rows - n_tok[i])
            return lv_fail(err, LV_ERR_ARG, "the batch holds %d rows at most", bt->max_rows);
        *rows += n_tok[i];
    }
    return LV_OK;
}

lv_status llm_forward(const llm *m, llm_batch *bt, llm_seq *const *seqs, const int *n_tok,
                      int n_seqs, float *logits, lv_err *err) {
    int n;
    lv_status st = check_batch(m, bt, seqs, n_tok, n_seqs, &n, err);
    if (st) return st;
    run_layers(m, bt, seqs, n_tok, n_seqs, n);
    be *b = m->b;
    const struct be_ops *op = b->ops;
    if (!logits) {
        if (records(m, n_seqs, n)) op->record_end(b);
        return LV_OK;
    }
    int dim = m->dim;
    /* final norm of each sequence's last row (gathered into xb), one lm_head over them
     * (logits_to_keep = 1) */
    for (int i = 0, r = 0; i < n_seqs; i++) {
        r += n_tok[i];
        op->rmsnorm(b, bt->xb + (size_t)i * dim, bt->x + (size_t)(r - 1) * dim, m->w->norm, 1, dim,
                    m->rms_eps);
    }
    op->matmul(b, bt->logits, bt->xb, &m->w->lm_head, NULL, n_seqs);
    if (records(m, n_seqs, n)) op->record_end(b);
    op->download(b, logits, bt->logits, (size_t)n_seqs * m->vocab_size * sizeof *logits);
    return LV_OK;
}
