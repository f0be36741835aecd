/*
 * llm.h - the Mistral / Llama decoder of LLaVA, with a KV cache per
 * sequence.
 *
 * transformers models/mistral/modeling_mistral.py and
 * models/llama/modeling_llama.py (spec llava-next.md §6): token embedding,
 * then per layer RMSNorm → q, k, v → rotate-half RoPE → causal GQA
 * attention over the sequence's cache → o_proj → residual → RMSNorm →
 * down(silu(gate) ⊙ up) → residual; final RMSNorm, lm_head.
 *
 * The model (llm) is immutable after llm_init and shared by every sequence.
 * What changes lives in an llm_seq (its KV cache and position) and in the
 * llm_batch a forward runs in (scratch for up to max_rows rows, allocated
 * once, like llama2.c's RunState). Nothing is allocated per token.
 *
 * Usage (one request is a batch of one sequence):
 *     llm_seq s; llm_batch bt;
 *     llm_seq_init(&m, ctx, &s, &err);
 *     llm_batch_init(&m, 512, 1, &bt, &err);
 *     llm_batch_embed(&m, &bt, 0, ids, n);            // into llm_batch_input(&bt)
 *     ... overwrite input rows (image features) ...
 *     llm_seq *seqs[] = {&s};
 *     llm_forward(&m, &bt, seqs, &n, 1, logits, &err); // logits of the last token
 *     llm_batch_deinit(&bt); llm_seq_deinit(&s);
 */
#ifndef LV_MODEL_LLM_H
#define LV_MODEL_LLM_H

#include "backend/backend.h"
#include "base/common.h"
#include "io/hf_config.h"
#include "model/weights.h"

#include <stdbool.h>

typedef struct {
    be *b;                /* backend (borrowed) */
    const llm_weights *w; /* borrowed */
    int dim;              /* hidden_size */
    int hidden_dim;       /* intermediate_size */
    int n_layers;
    int n_heads, n_kv_heads, head_dim;
    int q_dim, kv_dim; /* n_heads·head_dim, n_kv_heads·head_dim */
    int vocab_size;
    int max_ctx; /* longest sequence: max_position_embeddings, or the sliding window */
    float rms_eps;
    float rope_theta;
    bool kv_f16; /* KV caches in f16 (llm_init's default) or f32 (exact mode); set it
                  * before llm_seq_init: each sequence keeps the dtype it was made with */
} llm;

/* Sets m up for cfg with loaded weights. LV_ERR_UNSUPPORTED for an MLP
 * activation other than silu. A sliding window caps max_ctx at its size
 * (within it, sliding-window attention is plain causal attention). The KV
 * cache is f16 (kv_f16 = true); an exact mode sets kv_f16 = false after. */
lv_status llm_init(llm *m, be *b, const lv_text_config *cfg, const llm_weights *w, lv_err *err);

/* One sequence's state: its KV cache and position, nothing else. All the
 * scratch a forward needs lives in an llm_batch, shared by the sequences it
 * runs. Buffers are the backend's. */
typedef struct {
    const llm *m;      /* the model this state was made for (borrowed) */
    int ctx;           /* positions the cache holds */
    int pos;           /* positions filled: the next token's position */
    be_dtype kv_dtype; /* BE_F16 or BE_F32: m->kv_f16 when the sequence was made */
    void *k, *v;       /* KV cache (n_layers, ctx, kv_dim) of kv_dtype; keys stored after RoPE */
} llm_seq;

/* Allocates a sequence of ctx positions (1..m->max_ctx). LV_ERR_ARG for a
 * ctx out of range, LV_ERR_NOMEM. On failure nothing is held. */
lv_status llm_seq_init(const llm *m, int ctx, llm_seq *s, lv_err *err);
/* Releases s; a zeroed s is a no-op. */
void llm_seq_deinit(llm_seq *s);

/* Forgets the positions from pos on (0 <= pos <= s->pos): the next forward
 * writes position pos and overwrites what followed. The cache at positions
 * < pos depends only on the tokens there, so it stays valid. */
void llm_seq_truncate(llm_seq *s, int pos);

/* A new sequence of ctx positions (n_pos..m->max_ctx) holding a copy of the
 * first n_pos positions of src (0..src->pos), at position n_pos; src is
 * unchanged. Errors as llm_seq_init; LV_ERR_ARG when src's cache dtype is
 * not the model's now. On failure nothing is held. */
lv_status llm_seq_copy_prefix(const llm_seq *src, int n_pos, int ctx, llm_seq *dst, lv_err *err);

/* Bytes of KV cache per position of one sequence (keys and values, all layers),
 * in the dtype m->kv_f16 names. */
size_t llm_kv_bytes_per_pos(const llm *m);

/*
 * Scratch for one forward over up to max_rows rows taken from up to
 * max_seqs sequences. One sequence is a batch of one: there is no other
 * forward. Every matmul runs once over all rows (the weights are read once
 * per step, which is where batching pays); RoPE uses each row's own
 * position; attention runs per sequence over its own cache.
 *
 * Floating point: the CPU backend's matmul computes every row with the
 * same arithmetic whatever n is (backend/cpu/matmul.c; tests/test_backend.c
 * matmul_batch_invariant), and its attention computes each query row the
 * same whatever the other rows and however a prompt is cut into chunks. So
 * a request decoded alone and decoded among fifteen others gives
 * bit-identical logits. A backend must keep this property to serve
 * continuous batching with the same answers.
 */
typedef struct {
    const llm *m;
    int max_rows;    /* rows per forward at most */
    int max_seqs;    /* sequences per forward at most */
    float *x, *xb;   /* (max_rows, dim) */
    float *q, *att;  /* (max_rows, q_dim) */
    float *k, *v;    /* (max_rows, kv_dim) new keys and values before they go to the caches */
    float *hb, *hb2; /* (max_rows, hidden_dim) */
    float *logits;   /* (max_seqs, vocab) */
    int32_t *ids;    /* (max_rows) */
    int *posv;       /* (max_rows) positions of the rows */
    int *host_pos;   /* the same, host side */
} llm_batch;

/* Allocates scratch for max_rows rows (>= 1) of up to max_seqs sequences
 * (1..max_rows). LV_ERR_ARG, LV_ERR_NOMEM; on failure nothing is held. */
lv_status llm_batch_init(const llm *m, int max_rows, int max_seqs, llm_batch *bt, lv_err *err);
void llm_batch_deinit(llm_batch *bt); /* zeroed: no-op */

/* The input rows of the next llm_forward: (max_rows, dim) backend buffer. */
static inline float *llm_batch_input(llm_batch *bt) {
    return bt->x;
}

/* Writes embed_tokens rows of n host ids into input rows row0 .. row0+n-1
 * (row0 + n <= max_rows; ids < vocab_size, checked by the caller). */
void llm_batch_embed(const llm *m, llm_batch *bt, int row0, const int32_t *ids, int n);

/* The same in two steps, so that the text of several sequences is embedded
 * in one op: set_ids puts n host ids at rows row0.. (a copy, no op), then
 * embed_ids embeds rows row0 .. row0+n-1 from the ids set there. */
void llm_batch_set_ids(const llm *m, llm_batch *bt, int row0, const int32_t *ids, int n);
void llm_batch_embed_ids(const llm *m, llm_batch *bt, int row0, int n);

/*
 * The forward: n_seqs sequences, sequence i bringing n_tok[i] >= 1 input
 * rows (already in llm_batch_input, concatenated in sequence order, sum <=
 * max_rows) at its positions pos .. pos+n_tok[i]-1; their keys and values
 * are appended to that sequence's cache and its pos advances. The input
 * rows are consumed (they become the residual stream). logits (host, may
 * be NULL): (n_seqs, vocab), the last row of each sequence (what
 * generation needs). Sequences must be distinct and made for m.
 * Errors: LV_ERR_ARG (no rows, too many rows or sequences, a sequence whose
 * context is full: the message names the sequence and both numbers);
 * nothing is changed then.
 */
lv_status llm_forward(const llm *m, llm_batch *bt, llm_seq *const *seqs, const int *n_tok,
                      int n_seqs, float *logits, lv_err *err);

#endif
