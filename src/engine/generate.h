/*
 * generate.h - the rules of one generation request, a token at a time
 * (gen_state): sampling, EOS, stop strings, max tokens, the end of the
 * context, the streamed text. The scheduler (engine/scheduler.h) advances
 * one gen_state per running request; gen_run (engine/run.h) is a scheduler
 * of one.
 *
 * Every request gets fresh state (its own sequence and sampler), so
 * requests give exactly what each gives alone. Text streams out through a
 * callback as it becomes final: text that could still turn out to be the
 * start of a stop string is held back, and a stop string found in the text
 * (even across tokens) cuts the output just before it.
 */
#ifndef LV_GENERATE_H
#define LV_GENERATE_H

#include "base/common.h"
#include "engine/sample.h"
#include "image/image.h"
#include "base/buf.h"
#include "model/llava.h"
#include "engine/structured.h"
#include "text/tokenizer.h"

#include <stdbool.h>

#define GEN_MAX_STOP 8 /* stop strings per request */

typedef struct {
    int max_tokens;                 /* tokens to generate at most (>= 1) */
    sample_params sampling;         /* see sample.h */
    const char *stop[GEN_MAX_STOP]; /* stop strings (borrowed, UTF-8, non-empty) */
    int n_stop;
    bool ignore_eos; /* keep going past EOS (benchmarks) */
    bool logprobs;   /* compute each token's logprob and top_logprobs (gen_token.sample;
                        NULL when false): a softmax over the vocabulary per token */
    /* Constrained decoding (borrowed, both or neither): every step only the
     * tokens the grammar can take from the text so far keep their logits
     * (the others are -inf before the sampler, logprobs included), and EOS
     * only once the grammar is complete (then alone when it can take no
     * more). */
    const grammar *grammar;
    const structured_vocab *vocab;
} gen_params;

/* max_tokens 256, the checkpoint's sampling defaults, no stop strings. */
void gen_params_default(gen_params *p, const llava *m);

/* One generated token, as the callback sees it. */
typedef struct {
    int index; /* 0 for the first generated token */
    int32_t id;
    const float *logits; /* the model's raw logits (vocab) it was chosen from; borrowed */
    int vocab;
    const sample_result *sample; /* chosen id, logprob, top_logprobs (NULL unless
                                    gen_params.logprobs) */
} gen_token;

typedef struct {
    /* Each generated token (EOS included), in order. May be NULL. */
    void (*on_token)(void *ud, const gen_token *t);
    /* Final text as it becomes known, in order; the pieces concatenate to
     * gen_result.text. May be NULL. */
    void (*on_text)(void *ud, const char *text, size_t len);
    /* Polled by the scheduler every turn; returning true stops the request
     * with LV_ERR_CANCELLED (client gone, timeout, shutdown). May be NULL. */
    bool (*cancelled)(void *ud);
    void *ud;
} gen_callbacks;

typedef struct {
    int n_images, n_tiles; /* images encoded, and their tiles */
    int n_images_cached;   /* images whose rows came from the image cache (not encoded) */
    double vision_ms;      /* tower + projector + packing, all images */
    int n_prefill;         /* prompt tokens run through the model (those not cached) */
    int n_cached;          /* prompt tokens whose KV came from the prefix cache (scheduler.c) */
    double prefill_ms;     /* prompt to first logits */
    int n_decode;          /* decode steps (generated tokens after the first) */
    double decode_ms;      /* their forward passes */
    double sample_ms;      /* sampling and detokenizing, all steps */
} gen_timings;

typedef struct {
    int32_t *ids; /* generated ids, EOS included (heap) */
    int n_ids;
    char *text; /* generated text, special tokens skipped, cut before a stop
                   string (heap, NUL-terminated) */
    size_t text_len;
    const char *finish_reason; /* "stop" (EOS or a stop string) or "length" (max_tokens or
                                  the context) */
    gen_timings timings;
} gen_result;

void gen_result_free(gen_result *r); /* zeroed: no-op */

/* ---- one request, a token at a time ------------------------------------------------ */

/*
 * The per-request rules of generation as a state to advance one token at a
 * time: the sampler, the generated ids, max_tokens, EOS, the end of the
 * context, stop strings (found across tokens) and the streamed
 * detokenizer. The scheduler drives one per running request, one batched
 * forward per step.
 *
 *     gen_state g;
 *     gen_state_init(&g, m, prompt, n_prompt, &params, &cb, &err);
 *     ... prefill → logits ...
 *     for (;;) {
 *         gen_state_step(&g, logits, s.pos >= s.ctx, &err);  // sample, stream, stop?
 *         if (g.done) break;
 *         ... forward g.next → logits ...
 *     }
 *     gen_state_finish(&g, &result, &err);  // flush the text, fill the result
 *     gen_state_deinit(&g);
 */
typedef struct {
    llava *m; /* borrowed */
    const gen_params *p;
    const gen_callbacks *cb;
    sampler sm;
    tok_stream stream;
    lv_buf text;    /* everything decoded so far */
    size_t emitted; /* bytes of text passed to on_text */
    size_t cut;     /* text length once a stop string is found; SIZE_MAX while none is */
    size_t scanned; /* text before this offset holds no complete stop string */
    int32_t *ids;   /* (cap_ids) generated ids */
    int n_ids, cap_ids;
    bool done;                 /* no more tokens: finish_reason says why */
    const char *finish_reason; /* "stop" or "length" once done */
    int32_t next;              /* when !done: the token to run through the model next */
    grammar_matcher *gm;       /* the grammar's state (p->grammar), else NULL */
    uint32_t *allowed;         /* (vocab bits) the mask of this step */
    float *masked;             /* (vocab) the logits with the mask applied */
    gen_timings timings;       /* sample_ms here; the driver adds the rest */
} gen_state;

/* Checks p (LV_ERR_ARG) and allocates (LV_ERR_NOMEM) for a request with
 * this prompt (its ids feed the repetition penalty). p and cb are borrowed
 * and must outlive g; cb may be NULL. On failure nothing is held. */
lv_status gen_state_init(gen_state *g, llava *m, const int32_t *prompt, int n_prompt,
                         const gen_params *p, const gen_callbacks *cb, lv_err *err);

/*
 * Chooses the next token from logits (vocab: the prefill's last row, or the
 * forward of g->next), reports it (on_token), streams the text that became
 * final (on_text) and decides: done (EOS or a stop string: "stop";
 * max_tokens or ctx_full, the sequence has no room for another position:
 * "length"), or g->next is to be run. Called only while !done. Errors:
 * LV_ERR_NOMEM.
 */
lv_status gen_state_step(gen_state *g, const float *logits, bool ctx_full, lv_err *err);

/* After the last step: flushes the detokenizer, streams the rest of the
 * text and moves ids, text, finish_reason and timings into out (released
 * with gen_result_free). On failure out is zeroed. */
lv_status gen_state_finish(gen_state *g, gen_result *out, lv_err *err);

void gen_state_deinit(gen_state *g); /* zeroed: no-op */

/* Whether id ends generation (the generation config's EOS ids, else the text config's). */
bool gen_is_eos(const llava *m, int32_t id);

#endif
