/*
 * sample.c - the sampler (see sample.h for the steps and their sources).
 *
 * Sampling sorts the vocabulary by processed logit once per token (ties:
 * lower id first), so top-k, top-p, min-p and the draw all walk the same
 * order and a seed reproduces the same choice everywhere.
 */
#include "engine/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void sample_params_default(sample_params *p) {
    *p = (sample_params){.temperature = 0.0f,
                         .top_k = 0,
                         .top_p = 1.0f,
                         .min_p = 0.0f,
                         .repetition_penalty = 1.0f,
                         .frequency_penalty = 0.0f,
                         .presence_penalty = 0.0f,
                         .seed = 0,
                         .n_top_logprobs = 0};
}

void sample_params_from_generation_config(sample_params *p, const lv_generation_config *gc) {
    sample_params_default(p);
    if (gc->do_sample) {
        p->temperature = (float)gc->temperature;
        p->top_k = gc->top_k;
        p->top_p = (float)gc->top_p;
    }
    p->repetition_penalty = (float)gc->repetition_penalty;
}

lv_status sample_params_check(const sample_params *p, lv_err *err) {
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return lv_fail(err, LV_ERR_ARG, "temperature %g: expected >= 0", p->temperature);
    if (p->top_k < 0) return lv_fail(err, LV_ERR_ARG, "top_k %d: expected >= 0", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return lv_fail(err, LV_ERR_ARG, "top_p %g: expected in (0, 1]", p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return lv_fail(err, LV_ERR_ARG, "min_p %g: expected in [0, 1]", p->min_p);
    if (!(p->repetition_penalty > 0.0f) || !isfinite(p->repetition_penalty))
        return lv_fail(err, LV_ERR_ARG, "repetition_penalty %g: expected > 0",
                       p->repetition_penalty);
    if (!(fabsf(p->frequency_penalty) <= 2.0f))
        return lv_fail(err, LV_ERR_ARG, "frequency_penalty %g: expected in [-2, 2]",
                       p->frequency_penalty);
    if (!(fabsf(p->presence_penalty) <= 2.0f))
        return lv_fail(err, LV_ERR_ARG, "presence_penalty %g: expected in [-2, 2]",
                       p->presence_penalty);
    if (p->n_logit_bias < 0 || p->n_logit_bias > SAMPLE_MAX_BIAS)
        return lv_fail(err, LV_ERR_ARG, "logit_bias: %d entries, at most %d", p->n_logit_bias,
                       SAMPLE_MAX_BIAS);
    for (int i = 0; i < p->n_logit_bias; i++)
        if (!(fabsf(p->logit_bias[i].bias) <= 100.0f) || p->logit_bias[i].id < 0)
            return lv_fail(err, LV_ERR_ARG,
                           "logit_bias[%d]: token %d, bias %g: expected a token "
                           "id >= 0 and a bias in [-100, 100]",
                           (int)p->logit_bias[i].id, p->logit_bias[i].id, p->logit_bias[i].bias);
    if (p->n_top_logprobs < 0 || p->n_top_logprobs > SAMPLE_MAX_TOP)
        return lv_fail(err, LV_ERR_ARG, "top_logprobs %d: expected 0..%d", p->n_top_logprobs,
                       SAMPLE_MAX_TOP);
    return LV_OK;
}

/* ---- PRNG: xoshiro256** (Blackman & Vigna), seeded with splitmix64 ------ */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t next_u64(uint64_t s[4]) {
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1), 53 bits. */
static double next_unit(uint64_t s[4]) {
    return (double)(next_u64(s) >> 11) * 0x1.0p-53;
}

/* ---- lifecycle ------------------------------------------------------------- */

lv_status sampler_init(sampler *s, int vocab, const sample_params *p, lv_err *err) {
    memset(s, 0, sizeof *s);
    lv_status st = sample_params_check(p, err);
    if (st) return st;
    if (vocab < 1) return lv_fail(err, LV_ERR_ARG, "vocabulary of %d tokens", vocab);
    s->p = *p;
    s->vocab = vocab;
    s->work = malloc((size_t)vocab * sizeof *s->work);
    s->order = malloc((size_t)vocab * sizeof *s->order);
    s->count = calloc((size_t)vocab, sizeof *s->count);
    s->seen = calloc((size_t)vocab, sizeof *s->seen);
    if (s->work && s->order && s->count && s->seen) {
        sampler_reset(s, NULL, 0);
        return LV_OK;
    }
    sampler_deinit(s);
    return lv_fail(err, LV_ERR_NOMEM, "out of memory for the sampler");
}

void sampler_deinit(sampler *s) {
    free(s->work);
    free(s->order);
    free(s->count);
    free(s->seen);
    memset(s, 0, sizeof *s);
}

void sampler_reset(sampler *s, const int32_t *prompt, int n) {
    uint64_t x = s->p.seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
    memset(s->count, 0, (size_t)s->vocab * sizeof *s->count);
    memset(s->seen, 0, (size_t)s->vocab);
    for (int i = 0; i < n; i++)
        if (prompt[i] >= 0 && prompt[i] < s->vocab) s->seen[prompt[i]] = 1;
}

void sampler_accept(sampler *s, int32_t id) {
    if (id < 0 || id >= s->vocab) return;
    s->count[id]++;
    s->seen[id] = 1;
}

/* ---- processing ------------------------------------------------------------ */

/* Steps 1-2 and the temperature of step 3 for token i whose (biased) logit is v. */
static float process_one(const sampler *s, int i, float v) {
    const sample_params *p = &s->p;
    if (isnan(v)) v = -INFINITY;
    if (s->seen[i] && p->repetition_penalty != 1.0f)
        v = v > 0.0f ? v / p->repetition_penalty : v * p->repetition_penalty;
    if (s->count[i]) v -= (float)s->count[i] * p->frequency_penalty + p->presence_penalty;
    return p->temperature > 0.0f ? v * (1.0f / p->temperature) : v;
}

/* Steps 0-2 and the temperature of step 3, logits → s->work. */
static void process(sampler *s, const float *logits) {
    const sample_params *p = &s->p;
    if (p->repetition_penalty == 1.0f && p->frequency_penalty == 0.0f &&
        p->presence_penalty == 0.0f) {
        /* no penalty: process_one's NaN and temperature steps alone, in a loop
         * the compiler vectorises (a vocabulary per token per stream adds up) */
        float inv_t = p->temperature > 0.0f ? 1.0f / p->temperature : 1.0f;
        for (int i = 0; i < s->vocab; i++) {
            float v = logits[i];
            s->work[i] = (v != v ? -INFINITY : v) * inv_t;
        }
    } else {
        for (int i = 0; i < s->vocab; i++) s->work[i] = process_one(s, i, logits[i]);
    }
    /* step 0 for the few biased tokens: redone from the raw logit plus the bias;
     * a token listed twice gets the sum */
    for (int k = 0; k < p->n_logit_bias; k++) {
        int id = p->logit_bias[k].id;
        if (id >= s->vocab) continue;
        float b = 0.0f;
        bool first = true;
        for (int q = 0; q < p->n_logit_bias; q++)
            if (p->logit_bias[q].id == id) {
                if (q < k) first = false;
                b += p->logit_bias[q].bias;
            }
        if (first) s->work[id] = process_one(s, id, logits[id] + b);
    }
}

/* Sort order: higher logit first, then lower id (a total order, so qsort is
 * deterministic). */
static int by_logit_desc(const void *a, const void *b) {
    const sample_cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* log(sum(exp(work))) in double. */
static double log_sum_exp(const float *w, int n, float max) {
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += exp((double)w[i] - max);
    return max + log(sum);
}

/* Greedy: the first maximum (w holds no NaN: process() made them -inf).
 * The maximum first, in 8 independent lanes the compiler vectorises, then
 * the first index holding it (-0 and +0 compare equal, as > saw them). */
static int32_t argmax(const float *w, int n) {
    float lane[8];
    for (int j = 0; j < 8; j++) lane[j] = w[0];
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) lane[j] = w[i + j] > lane[j] ? w[i + j] : lane[j];
    float m = lane[0];
    for (int j = 1; j < 8; j++) m = lane[j] > m ? lane[j] : m;
    for (; i < n; i++) m = w[i] > m ? w[i] : m;
    for (i = 0; i < n; i++)
        if (w[i] == m) break;
    return i < n ? i : 0;
}

/* The n_top most likely ids by s->work into res->top: one pass, insertion
 * into the short sorted list (ties keep the lower id first); fewer when
 * fewer tokens are possible at all. */
static void top_entries(const sampler *s, double lse, sample_result *res) {
    int n = s->p.n_top_logprobs < s->vocab ? s->p.n_top_logprobs : s->vocab;
    res->n_top = 0;
    for (int i = 0; i < s->vocab && n > 0; i++) {
        float v = s->work[i];
        if (v == -INFINITY) continue; /* a token ruled out (a grammar's mask) is no alternative */
        if (res->n_top == n && !(v > res->top[n - 1].logprob)) continue;
        int j = res->n_top < n ? res->n_top++ : n - 1;
        while (j > 0 && v > res->top[j - 1].logprob) {
            res->top[j] = res->top[j - 1];
            j--;
        }
        res->top[j] = (sample_logprob){(int32_t)i, v}; /* the logit for now */
    }
    for (int k = 0; k < res->n_top; k++) res->top[k].logprob = (float)(res->top[k].logprob - lse);
}

/* Step 4 over s->order (sorted): how many of the best tokens stay. */
static int truncate(const sampler *s) {
    const sample_params *p = &s->p;
    const sample_cand *o = s->order;
    int keep = s->vocab;
    if (p->top_k > 0 && p->top_k < keep) { /* TopK: remove scores < the k-th score */
        float kth = o[p->top_k - 1].logit;
        keep = p->top_k;
        while (keep < s->vocab && o[keep].logit == kth) keep++;
    }
    float max = o[0].logit;
    if (p->top_p < 1.0f) { /* TopP: keep while the mass before a token is < top_p */
        double total = 0.0, cum = 0.0;
        for (int r = 0; r < keep; r++) total += exp((double)o[r].logit - max);
        int r = 0;
        while (r < keep && cum < p->top_p * total) cum += exp((double)o[r++].logit - max);
        keep = r > 0 ? r : 1;
    }
    if (p->min_p > 0.0f) { /* MinP: p_i / p_max = exp(w_i - w_max) must be >= min_p */
        int r = 1;
        while (r < keep && exp((double)o[r].logit - max) >= p->min_p) r++;
        keep = r;
    }
    return keep;
}

/* Step 5: a draw over the first keep tokens of s->order. */
static int32_t draw(sampler *s, int keep) {
    const sample_cand *o = s->order;
    double total = 0.0;
    for (int r = 0; r < keep; r++) total += exp((double)o[r].logit - o[0].logit);
    double u = next_unit(s->rng) * total, cum = 0.0;
    for (int r = 0; r < keep; r++) {
        cum += exp((double)o[r].logit - o[0].logit);
        if (u < cum) return o[r].id;
    }
    return o[keep - 1].id; /* u rounded up to total */
}

int32_t sampler_sample(sampler *s, const float *logits, sample_result *res) {
    process(s, logits);
    int32_t id;
    bool sorted = false;
    if (s->p.temperature == 0.0f) {
        id = argmax(s->work, s->vocab);
    } else {
        for (int i = 0; i < s->vocab; i++) s->order[i] = (sample_cand){s->work[i], i};
        qsort(s->order, (size_t)s->vocab, sizeof *s->order, by_logit_desc);
        sorted = true;
        id = draw(s, truncate(s));
    }
    if (res) {
        float max = sorted ? s->order[0].logit : s->work[argmax(s->work, s->vocab)];
        double lse = isinf(max) ? 0.0 : log_sum_exp(s->work, s->vocab, max);
        res->id = id;
        res->logprob = (float)(s->work[id] - lse);
        top_entries(s, lse, res);
    }
    return id;
}
