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

#endif
