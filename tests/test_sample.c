/* test_sample.c - the sampler on hand-made logits: greedy, seeded
 * reproducibility, the top-k / top-p / min-p masks, the penalties, and the
 * log-probabilities it reports. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "engine/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void init(sampler *s, int vocab, const sample_params *p) {
    lv_err err = {{0}};
    if (sampler_init(s, vocab, p, &err)) fail_msg("%s", err.msg);
}

/* log_softmax(x)[i] in double. */
static double log_softmax(const float *x, int n, int i) {
    double max = -INFINITY, sum = 0;
    for (int k = 0; k < n; k++) max = fmax(max, x[k]);
    for (int k = 0; k < n; k++) sum += exp(x[k] - max);
    return x[i] - max - log(sum);
}

/* How often each id comes out of n draws (counts: vocab entries). */
static void histogram(sampler *s, const float *logits, int n, int *counts) {
    memset(counts, 0, s->vocab * sizeof *counts);
    for (int i = 0; i < n; i++) counts[sampler_sample(s, logits, NULL)]++;
}

static void greedy_takes_first_max(void **state) {
    sample_params p;
    sample_params_default(&p);
    p.n_top_logprobs = 3;
    sampler s;
    init(&s, 5, &p);
    const float logits[5] = {1, 4, 2, 4, -1};
    sample_result r;
    assert_int_equal(sampler_sample(&s, logits, &r), 1);
    assert_int_equal(r.id, 1);
    assert_float_equal(r.logprob, log_softmax(logits, 5, 1), 1e-6);
    assert_int_equal(r.n_top, 3);
    assert_int_equal(r.top[0].id, 1); /* ties: lower id first */
    assert_int_equal(r.top[1].id, 3);
    assert_int_equal(r.top[2].id, 2);
    assert_float_equal(r.top[2].logprob, log_softmax(logits, 5, 2), 1e-6);
    sampler_deinit(&s);
}

/* Greedy over a vocabulary longer than the argmax's 8 lanes: the first
 * maximum wins across lanes and the tail; NaN never wins; all -inf gives 0;
 * -0 and +0 tie. */
static void greedy_long_vocab(void **state) {
    (void)state;
    enum { V = 37 };
    sample_params p;
    sample_params_default(&p);
    sampler s;
    init(&s, V, &p);
    float l[V];
    for (int i = 0; i < V; i++) l[i] = (float)(i % 7) - 10.0f;
    l[0] = NAN;
    l[13] = 3.0f; /* lane 5 */
    l[26] = 3.0f; /* lane 2, later */
    assert_int_equal(sampler_sample(&s, l, NULL), 13);
    l[35] = 4.0f; /* in the tail */
    assert_int_equal(sampler_sample(&s, l, NULL), 35);
    for (int i = 0; i < V; i++) l[i] = -INFINITY;
    l[4] = NAN;
    assert_int_equal(sampler_sample(&s, l, NULL), 0);
    l[9] = -0.0f;
    l[2] = 0.0f;
    l[20] = 0.0f;
    assert_int_equal(sampler_sample(&s, l, NULL), 2);
    sampler_deinit(&s);
}

static void same_seed_same_tokens(void **state) {
    enum { V = 50, N = 200 };
    float logits[V];
    for (int i = 0; i < V; i++) logits[i] = (float)sin(i * 1.7) * 2;
    sample_params p;
    sample_params_default(&p);
    p.temperature = 1.0f;
    p.seed = 1234;
    sampler a, b, c;
    init(&a, V, &p);
    init(&b, V, &p);
    p.seed = 1235;
    init(&c, V, &p);
    int32_t xa[N], xb[N], xc[N];
    for (int i = 0; i < N; i++) {
        xa[i] = sampler_sample(&a, logits, NULL);
        xb[i] = sampler_sample(&b, logits, NULL);
        xc[i] = sampler_sample(&c, logits, NULL);
    }
    assert_memory_equal(xa, xb, sizeof xa);
    assert_memory_not_equal(xa, xc, sizeof xa);
    /* reset restarts the stream: the same request again gives the same tokens */
    sampler_reset(&a, NULL, 0);
    for (int i = 0; i < N; i++) assert_int_equal(sampler_sample(&a, logits, NULL), xa[i]);
    sampler_deinit(&a);
    sampler_deinit(&b);
    sampler_deinit(&c);
}

static void draws_follow_the_distribution(void **state) {
    const float logits[3] = {(float)log(0.25), (float)log(0.75), -INFINITY};
    sample_params p;
    sample_params_default(&p);
    p.temperature = 1.0f;
    p.seed = 7;
    sampler s;
    init(&s, 3, &p);
    int counts[3];
    histogram(&s, logits, 20000, counts);
    assert_int_equal(counts[2], 0);
    assert_in_range(counts[0], 5000 - 400, 5000 + 400);
    sampler_deinit(&s);
}

/* probabilities 0.5, 0.3, 0.15, 0.05 (ids 0..3), shuffled into ids 3, 0, 2, 1 */
static void make_probs(float *logits) {
    logits[3] = (float)log(0.5);
    logits[0] = (float)log(0.3);
    logits[2] = (float)log(0.15);
    logits[1] = (float)log(0.05);
}

/* The set of ids drawn in 4000 samples with p, as a bit mask. */
static unsigned drawn(const sample_params *p, const float *logits, int vocab) {
    sampler s;
    init(&s, vocab, p);
    int counts[8];
    histogram(&s, logits, 4000, counts);
    unsigned mask = 0;
    for (int i = 0; i < vocab; i++) mask |= (counts[i] > 0) << i;
    sampler_deinit(&s);
    return mask;
}

static void truncation_masks(void **state) {
    float logits[4];
    make_probs(logits);
    sample_params p;
    sample_params_default(&p);
    p.temperature = 1.0f;
    assert_int_equal(drawn(&p, logits, 4), 0xF);
    p.top_k = 2;
    assert_int_equal(drawn(&p, logits, 4), (1u << 3) | (1u << 0));
    p.top_k = 1;
    assert_int_equal(drawn(&p, logits, 4), 1u << 3);
    p.top_k = 0;
    p.top_p = 0.75f; /* 0.5 < 0.75 keeps the 2nd; 0.8 >= 0.75 drops the 3rd */
    assert_int_equal(drawn(&p, logits, 4), (1u << 3) | (1u << 0));
    p.top_p = 0.85f;
    assert_int_equal(drawn(&p, logits, 4), (1u << 3) | (1u << 0) | (1u << 2));
    p.top_p = 0.01f; /* at least one token stays */
    assert_int_equal(drawn(&p, logits, 4), 1u << 3);
    p.top_p = 1.0f;
    p.min_p = 0.4f; /* threshold 0.2: 0.3 stays, 0.15 goes */
    assert_int_equal(drawn(&p, logits, 4), (1u << 3) | (1u << 0));
    p.min_p = 0.25f; /* threshold 0.125 */
    assert_int_equal(drawn(&p, logits, 4), (1u << 3) | (1u << 0) | (1u << 2));
    /* top-k keeps every token tied with the k-th */
    const float tied[4] = {1, 5, 5, 5};
    p.min_p = 0;
    p.top_k = 2;
    assert_int_equal(drawn(&p, tied, 4), 0xE);
}

static void penalties(void **state) {
    const float logits[4] = {2, -2, 1, 0.5f};
    sample_params p;
    sample_params_default(&p);
    p.repetition_penalty = 2.0f;
    p.n_top_logprobs = 4;
    sampler s;
    init(&s, 4, &p);
    const int32_t prompt[2] = {0, 1};
    sampler_reset(&s, prompt, 2);
    sample_result r;
    /* seen 0 and 1: 2 → 1 (divided), -2 → -4 (multiplied); 1 and 0.5 untouched */
    const float want[4] = {1, -4, 1, 0.5f};
    assert_int_equal(sampler_sample(&s, logits, &r), 0);
    for (int k = 0; k < 4; k++) {
        int id = r.top[k].id;
        assert_float_equal(r.top[k].logprob, log_softmax(want, 4, id), 1e-6);
    }
    assert_int_equal(r.top[0].id, 0);
    assert_int_equal(r.top[1].id, 2);
    assert_int_equal(r.top[3].id, 1);
    sampler_deinit(&s);

    /* OpenAI penalties count generated tokens only */
    sample_params_default(&p);
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    p.n_top_logprobs = 1;
    init(&s, 4, &p);
    sampler_reset(&s, prompt, 2); /* the prompt does not count */
    assert_int_equal(sampler_sample(&s, logits, &r), 0);
    sampler_accept(&s, 0);
    sampler_accept(&s, 0); /* logit 0: 2 - 2·0.5 - 0.25 = 0.75 < 1 */
    assert_int_equal(sampler_sample(&s, logits, &r), 2);
    const float after[4] = {0.75f, -2, 1, 0.5f};
    assert_float_equal(r.logprob, log_softmax(after, 4, 2), 1e-6);
    sampler_deinit(&s);
}

static void logprobs_after_temperature(void **state) {
    const float logits[3] = {3, 1, 0};
    sample_params p;
    sample_params_default(&p);
    p.temperature = 2.0f;
    p.top_k = 1; /* truncation does not change the reported distribution */
    p.n_top_logprobs = 2;
    sampler s;
    init(&s, 3, &p);
    sample_result r;
    assert_int_equal(sampler_sample(&s, logits, &r), 0);
    const float scaled[3] = {1.5f, 0.5f, 0};
    assert_float_equal(r.logprob, log_softmax(scaled, 3, 0), 1e-6);
    assert_int_equal(r.n_top, 2);
    assert_int_equal(r.top[1].id, 1);
    assert_float_equal(r.top[1].logprob, log_softmax(scaled, 3, 1), 1e-6);
    sampler_deinit(&s);
}

static void parameters(void **state) {
    sample_params p;
    lv_err err = {{0}};
    sample_params_default(&p);
    assert_int_equal(sample_params_check(&p, &err), LV_OK);
    p.top_p = 0;
    assert_int_equal(sample_params_check(&p, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "top_p"));
    sample_params_default(&p);
    p.temperature = -1;
    assert_int_equal(sample_params_check(&p, &err), LV_ERR_ARG);
    sample_params_default(&p);
    p.repetition_penalty = 0;
    sampler s;
    assert_int_equal(sampler_init(&s, 10, &p, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "repetition_penalty"));
    sample_params_default(&p);
    p.n_top_logprobs = SAMPLE_MAX_TOP + 1;
    assert_int_equal(sample_params_check(&p, &err), LV_ERR_ARG);

    /* generation_config.json: greedy unless do_sample */
    lv_generation_config gc;
    hf_gencfg_defaults(&gc);
    gc.repetition_penalty = 1.1;
    sample_params_from_generation_config(&p, &gc);
    assert_true(p.temperature == 0.0f);
    assert_float_equal(p.repetition_penalty, 1.1, 1e-6);
    gc.do_sample = true;
    gc.temperature = 0.7;
    gc.top_p = 0.9;
    sample_params_from_generation_config(&p, &gc);
    assert_float_equal(p.temperature, 0.7, 1e-6);
    assert_int_equal(p.top_k, 50);
    assert_float_equal(p.top_p, 0.9, 1e-6);
}

/* logit_bias (OpenAI): added to the raw logit before everything else. */
static void logit_bias(void **state) {
    (void)state;
    const float logits[6] = {5, 1, 2, 0, 3, -1};
    sample_params p;
    sample_params_default(&p);
    p.n_top_logprobs = 2;
    sampler s;
    sample_result r;

    /* +100 forces a token */
    p.n_logit_bias = 1;
    p.logit_bias[0].id = 5;
    p.logit_bias[0].bias = 100;
    init(&s, 6, &p);
    assert_int_equal(sampler_sample(&s, logits, &r), 5);
    /* the logprob is of the biased distribution */
    const float biased[6] = {5, 1, 2, 0, 3, 99};
    assert_float_equal(r.logprob, log_softmax(biased, 6, 5), 1e-5);
    sampler_deinit(&s);
    p.temperature = 1.0f; /* also when sampling */
    p.seed = 7;
    init(&s, 6, &p);
    for (int i = 0; i < 50; i++) assert_int_equal(sampler_sample(&s, logits, NULL), 5);
    sampler_deinit(&s);

    /* -100 bans it: greedy takes the next best, sampling never draws it */
    p.logit_bias[0].id = 0;
    p.logit_bias[0].bias = -100;
    init(&s, 6, &p);
    int counts[6];
    histogram(&s, logits, 2000, counts);
    assert_int_equal(counts[0], 0);
    sampler_deinit(&s);
    p.temperature = 0;
    init(&s, 6, &p);
    assert_int_equal(sampler_sample(&s, logits, NULL), 4);
    sampler_deinit(&s);

    /* duplicate ids sum: 1 + 3 + 2 = 6 > 5 */
    p.n_logit_bias = 2;
    p.logit_bias[0].id = 1;
    p.logit_bias[0].bias = 3;
    p.logit_bias[1].id = 1;
    p.logit_bias[1].bias = 2;
    init(&s, 6, &p);
    assert_int_equal(sampler_sample(&s, logits, &r), 1);
    const float summed[6] = {5, 6, 2, 0, 3, -1};
    assert_float_equal(r.logprob, log_softmax(summed, 6, 1), 1e-5);
    sampler_deinit(&s);
    /* one of the two alone is not enough: 1 + 3 = 4 < 5 */
    p.n_logit_bias = 1;
    init(&s, 6, &p);
    assert_int_equal(sampler_sample(&s, logits, NULL), 0);
    sampler_deinit(&s);

    /* ids >= vocab are ignored */
    p.n_logit_bias = 2;
    p.logit_bias[0].id = 6;
    p.logit_bias[0].bias = 100;
    p.logit_bias[1].id = 1000000;
    p.logit_bias[1].bias = 100;
    init(&s, 6, &p);
    assert_int_equal(sampler_sample(&s, logits, &r), 0);
    assert_float_equal(r.logprob, log_softmax(logits, 6, 0), 1e-5);
    sampler_deinit(&s);

    /* check() rejects |bias| > 100, NaN, negative ids and too many entries */
    lv_err err = {{0}};
    p.n_logit_bias = 1;
    p.logit_bias[0].id = 2;
    p.logit_bias[0].bias = 100.5f;
    assert_int_equal(sample_params_check(&p, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "logit_bias"));
    p.logit_bias[0].bias = -101;
    assert_int_equal(sample_params_check(&p, &err), LV_ERR_ARG);
    assert_int_equal(sampler_init(&s, 6, &p, &err), LV_ERR_ARG);
    p.logit_bias[0].bias = NAN;
    assert_int_equal(sample_params_check(&p, &err), LV_ERR_ARG);
    p.logit_bias[0].bias = -100;
    assert_int_equal(sample_params_check(&p, &err), LV_OK);
    p.logit_bias[0].id = -1;
    assert_int_equal(sample_params_check(&p, &err), LV_ERR_ARG);
    p.logit_bias[0].id = 2;
    p.n_logit_bias = SAMPLE_MAX_BIAS + 1;
    assert_int_equal(sample_params_check(&p, &err), LV_ERR_ARG);
    p.n_logit_bias = -1;
    assert_int_equal(sample_params_check(&p, &err), LV_ERR_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(greedy_takes_first_max),
        cmocka_unit_test(greedy_long_vocab),
        cmocka_unit_test(same_seed_same_tokens),
        cmocka_unit_test(draws_follow_the_distribution),
        cmocka_unit_test(truncation_masks),
        cmocka_unit_test(penalties),
        cmocka_unit_test(logprobs_after_temperature),
        cmocka_unit_test(parameters),
        cmocka_unit_test(logit_bias),
    };
    return cmocka_run_group_tests_name("sample", tests, NULL, NULL);
}
