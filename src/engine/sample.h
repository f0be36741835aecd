/*
 * sample.h - choosing the next token from the logits.
 *
 * The steps and their order follow transformers' generate
 * (generation/utils.py _get_logits_processor, generation/logits_process.py):
 *   0. logit_bias (OpenAI; transformers' SequenceBiasLogitsProcessor for
 *      one-token sequences): bias added to the raw logit of its token;
 *   1. repetition_penalty (RepetitionPenaltyLogitsProcessor): every token
 *      seen in the prompt or generated so far gets logit / p if the logit
 *      is > 0, logit · p otherwise;
 *   2. frequency_penalty, presence_penalty (OpenAI semantics, over the
 *      generated tokens only): logit -= count · frequency + (count > 0) ·
 *      presence;
 *   3. temperature 0 → greedy: the argmax (the first index on ties) and
 *      nothing below applies. Else logits / temperature
 *      (TemperatureLogitsWarper);
 *   4. top_k (TopKLogitsWarper: tokens below the k-th largest logit are
 *      removed; ties with it stay), top_p (TopPLogitsWarper: the smallest
 *      set of most likely tokens whose probability reaches top_p), min_p
 *      (MinPLogitsWarper: tokens with probability < min_p · the top
 *      probability are removed); at least one token always stays;
 *   5. a draw from the softmax of what remains, with the sampler's own
 *      PRNG (xoshiro256**, seeded by splitmix64 of `seed`): the same seed,
 *      logits and parameters give the same tokens on every machine.
 *
 * Log-probabilities (logprob of the chosen token, top_logprobs) are the
 * log-softmax of the logits after steps 1-3 (penalties and temperature; at
 * temperature 0 the penalised logits unscaled) and before the truncation of
 * step 4: the distribution the model proposes once the request's
 * penalties and temperature are applied.
 */
#ifndef LV_SAMPLE_H
#define LV_SAMPLE_H

#include "base/common.h"
#include "io/hf_config.h"

#include <stdbool.h>
#include <stdint.h>

#define SAMPLE_MAX_TOP  20  /* most top_logprobs entries (OpenAI's limit) */
#define SAMPLE_MAX_BIAS 300 /* logit_bias entries at most (OpenAI's limit) */

typedef struct {
    float temperature;        /* 0 = greedy */
    int top_k;                /* 0 = off */
    float top_p;              /* 1 = off; (0, 1] */
    float min_p;              /* 0 = off; [0, 1] */
    float repetition_penalty; /* 1 = off; > 0 */
    float frequency_penalty;  /* 0 = off; [-2, 2] */
    float presence_penalty;   /* 0 = off; [-2, 2] */
    uint64_t seed;            /* PRNG seed */
    int n_top_logprobs;       /* top_logprobs wanted, 0..SAMPLE_MAX_TOP */
    int n_logit_bias;         /* entries of logit_bias, 0..SAMPLE_MAX_BIAS */
    struct {
        int32_t id;
        float bias; /* [-100, 100], added to the raw logit (step 0) */
    } logit_bias[SAMPLE_MAX_BIAS];
} sample_params;

/* Greedy, every filter and penalty off, seed 0. */
void sample_params_default(sample_params *p);

/* The checkpoint's generation_config.json defaults, as transformers
 * generate() would use them: do_sample false → greedy; else its
 * temperature, top_k, top_p; repetition_penalty either way. */
void sample_params_from_generation_config(sample_params *p, const lv_generation_config *gc);

/* LV_ERR_ARG naming the first parameter out of range. */
lv_status sample_params_check(const sample_params *p, lv_err *err);

typedef struct {
    int32_t id;
    float logprob;
} sample_logprob;

typedef struct {
    int32_t id;                         /* the token chosen */
    float logprob;                      /* its log-probability (see the top of this file) */
    int n_top;                          /* entries of top */
    sample_logprob top[SAMPLE_MAX_TOP]; /* most likely first (ties: lower id first) */
} sample_result;

typedef struct {
    float logit;
    int32_t id;
} sample_cand;

/* A sampler for one request: parameters, PRNG and token counts. The
 * buffers are allocated once (vocab-sized); sampling allocates nothing. */
typedef struct {
    sample_params p;
    int vocab;
    uint64_t rng[4];    /* xoshiro256** state */
    float *work;        /* (vocab) processed logits */
    sample_cand *order; /* (vocab) candidates, sorted by processed logit when sampling */
    uint32_t *count;    /* (vocab) times generated */
    uint8_t *seen;      /* (vocab) in prompt or generated */
} sampler;

/* Checks p and allocates. On failure nothing is held. */
lv_status sampler_init(sampler *s, int vocab, const sample_params *p, lv_err *err);
void sampler_deinit(sampler *s); /* zeroed: no-op */

/* Starts a request: PRNG from p.seed, counts cleared, the prompt's ids
 * marked seen (ids outside the vocabulary are ignored). */
void sampler_reset(sampler *s, const int32_t *prompt, int n);

/* Chooses a token from logits (vocab; not modified) and fills res (may be
 * NULL). Does not record the choice: call sampler_accept. */
int32_t sampler_sample(sampler *s, const float *logits, sample_result *res);

/* Records a generated token for the penalties. */
void sampler_accept(sampler *s, int32_t id);

#endif
