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
 * Everything that changes lives in an llm_seq, preallocated like llama2.c's
 * RunState: its KV cache, its position and scratch for up to max_batch
 * tokens per call. Nothing is allocated per token.
 *
 * Usage (one request):
 *     llm_seq s;
 *     llm_seq_init(&m, ctx, 512, &s, &err);
 *     llm_embed(&m, &s, ids, n);                        // into llm_seq_input(&s)
 *     ... overwrite rows of llm_seq_input(&s) (image features) ...
 *     llm_forward(&m, &s, n, logits, false, &err);      // logits of the last token
 *     llm_seq_deinit(&s);
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
} llm;

/* Sets m up for cfg with loaded weights. LV_ERR_UNSUPPORTED for an MLP
 * activation other than silu. A sliding window caps max_ctx at its size
 * (within it, sliding-window attention is plain causal attention). */
lv_status llm_init(llm *m, be *b, const lv_text_config *cfg, const llm_weights *w, lv_err *err);

/* One sequence's state. All buffers are the backend's. */
typedef struct {
    const llm *m;    /* the model this state was made for (borrowed) */
    int ctx;         /* positions the cache holds */
    int pos;         /* positions filled: the next token's position */
    int max_batch;   /* tokens per llm_forward call at most */
    float *k, *v;    /* KV cache (n_layers, ctx, kv_dim); keys stored after RoPE */
    float *x;        /* input / residual stream (max_batch, dim) */
    float *xb;       /* normed input, branch outputs (max_batch, dim) */
    float *q;        /* queries (max_batch, q_dim) */
    float *att;      /* attention output (max_batch, q_dim) */
    float *hb, *hb2; /* MLP gate and up (max_batch, hidden_dim) */
    float *logits;   /* (1, vocab) */
    int32_t *ids;    /* token ids for embed_rows (max_batch) */
    int *posv;       /* positions of the tokens in flight (max_batch) */
    int *host_pos;   /* the same, host side (max_batch) */
} llm_seq;

/* Allocates a sequence of ctx positions (1..m->max_ctx) taking up to
 * max_batch tokens per call. LV_ERR_ARG for a ctx out of range, LV_ERR_NOMEM.
 * On failure nothing is held. */
lv_status llm_seq_init(const llm *m, int ctx, int max_batch, llm_seq *s, lv_err *err);
/* Releases s; a zeroed s is a no-op. */
void llm_seq_deinit(llm_seq *s);
/* Empties the sequence (position 0); the cache contents are never read
 * beyond pos, so nothing of a previous request can leak. */
void llm_seq_reset(llm_seq *s);

/* The input rows of the next llm_forward: (max_batch, dim) backend buffer. */
static inline float *llm_seq_input(llm_seq *s) {
    return s->x;
}

/* Writes embed_tokens rows of n host ids (n <= max_batch) into the input.
 * Ids must be < vocab_size (checked by the caller). */
void llm_embed(const llm *m, llm_seq *s, const int32_t *ids, int n);

/*
 * Runs n input rows (already in llm_seq_input) at positions pos .. pos+n-1,
 * appends their keys and values to the cache and advances pos. logits
 * (host, may be NULL): with all_logits, (n, vocab) for every row; else
 * (vocab) for the last row only (what generation needs). The input rows are
 * consumed (they become the residual stream).
 * Errors: LV_ERR_ARG if n is not in 1..max_batch or pos + n > ctx (the
 * message gives both numbers).
 */
lv_status llm_forward(const llm *m, llm_seq *s, int n, float *logits, bool all_logits, lv_err *err);

/* ---- several sequences in one forward (continuous batching) ---------------------------- */

/*
 * Scratch for one forward over up to max_rows rows taken from several
 * sequences at once. Every matmul runs once over all rows (the weights are
 * read once per step, which is where batching pays); RoPE uses each row's
 * own position; attention runs per sequence over its own cache.
 *
 * Floating point: the CPU backend's matmul computes every row with the
 * same arithmetic whatever n is (backend/cpu/matmul.c; tests/test_backend.c
 * matmul_batch_invariant), and its attention computes each query row the
 * same whatever the other rows and however a prompt is cut into chunks. So
 * a request decoded alone and decoded among fifteen others gives
 * bit-identical logits. A backend must keep this property to serve
 * continuous batching with the same answers.
 *
 * New keys and values are copied into each sequence's cache with the
 * backend's upload (a plain copy on the CPU and ref backends, whose buffers
 * are host memory); a device backend needs a buffer-to-buffer copy op here.
 */
typedef struct {
    const llm *m;
    int max_rows;      /* rows per forward at most (padding included) */
    int max_seqs;      /* sequences per forward at most */
    float *x, *xb;     /* (max_rows, dim) */
    float *q, *att;    /* (max_rows, q_dim) */
    float *k, *v;      /* (max_rows, kv_dim) new keys and values before they go to the caches */
    float *hb, *hb2;   /* (max_rows, hidden_dim) */
    float *logits;     /* (max_seqs, vocab) */
    int32_t *ids;      /* (max_rows) */
    int *posv;         /* (max_rows) positions of the rows */
    int *host_pos;     /* the same, host side */
    int32_t *host_ids; /* (max_rows) host copy */
} llm_batch;

/* Allocates scratch for max_rows rows (>= 1; at least 2 are allocated for
 * the padding) of up to max_seqs sequences (1..max_rows). LV_ERR_ARG,
 * LV_ERR_NOMEM; on failure nothing is held. */
lv_status llm_batch_init(const llm *m, int max_rows, int max_seqs, llm_batch *bt, lv_err *err);
void llm_batch_deinit(llm_batch *bt); /* zeroed: no-op */

/*
 * One forward over n_seqs sequences: sequence i contributes n_tok[i] >= 1
 * token ids (concatenated in sequence order, sum <= max_rows) at its
 * positions pos .. pos+n_tok[i]-1; their keys and values are appended to
 * that sequence's cache and its pos advances. logits (host, may be NULL):
 * (n_seqs, vocab), the last row of each sequence. Sequences must be
 * distinct and made for m (their own scratch is not used; any max_batch).
 * Errors: LV_ERR_ARG (no rows, too many rows or sequences, a sequence whose
 * context is full, an id outside the vocabulary: the message names the
 * sequence or row); nothing is changed then.
 */
lv_status llm_forward_batch(const llm *m, llm_batch *bt, llm_seq *const *seqs, const int *n_tok,
                            int n_seqs, const int32_t *ids, float *logits, lv_err *err);

/* The same with the input rows already in llm_batch_input (rows of
 * embeddings, e.g. image features in place of <image> ids: llava prefill). */
lv_status llm_forward_batch_rows(const llm *m, llm_batch *bt, llm_seq *const *seqs,
                                 const int *n_tok, int n_seqs, float *logits, lv_err *err);

/* The input rows of the next llm_forward_batch_rows: (max_rows, dim) backend buffer. */
static inline float *llm_batch_input(llm_batch *bt) {
    return bt->x;
}

/* Writes embed_tokens rows of n host ids into input rows row0 .. row0+n-1
 * (row0 + n <= max_rows; ids < vocab_size, checked by the caller). */
void llm_batch_embed(const llm *m, llm_batch *bt, int row0, const int32_t *ids, int n);

/* Bytes of KV cache per position of one sequence (keys and values, all layers). */
size_t llm_kv_bytes_per_pos(const llm *m);

/* Releases s's per-call scratch (x, q, MLP buffers...) but keeps its cache
 * and position: a sequence that from now on only goes through
 * llm_forward_batch needs none. llm_forward on it fails cleanly after this
 * (LV_ERR_ARG). llm_seq_deinit still releases the rest. */
void llm_seq_drop_scratch(llm_seq *s);

#endif
