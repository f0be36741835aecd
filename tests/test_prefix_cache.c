/* test_prefix_cache.c - the scheduler's prefix cache (engine/prefix_cache.h)
 * on the bundled demo model (models/demo): a three-turn conversation about
 * one image, its history resent each turn, reuses the previous turns' KV;
 * two prompts sharing a long system prompt share its prefill; a kept
 * sequence evicted (one slot, a small KV budget) is prefilled again. Every
 * job's ids, text and logprobs equal, bit for bit, those of the same job
 * on a fresh scheduler without the cache. Also the prefix rule itself on
 * made-up contents: equal ids, equal image keys, never ending inside an
 * image. Prints each turn's time to first token with and without the
 * cache (docs/PERF_NOTES.md). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/clock.h"
#include "base/log.h"
#include "engine/prefix_cache.h"
#include "engine/request.h"
#include "engine/scheduler.h"
#include "sched_harness.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_TOKENS 24
#define TURNS      3

static llava *g_m;
static img_tensor g_px;
static int g_px_tokens;

static int setup(void **state) {
    (void)state;
    static const char *const names[1] = {"sample_01_320x240.png"};
    return sh_setup_demo(&g_m, names, &g_px, &g_px_tokens, 1);
}

static int teardown(void **state) {
    (void)state;
    img_tensor_free(&g_px);
    llava_free(g_m);
    return 0;
}

/* A greedy job for a raw prompt (chat template already applied); with_image:
 * its <image> is the sample image. */
static sched_job *make_job(const char *prompt, bool with_image) {
    return sh_job(g_m, prompt, with_image ? &g_px : NULL, g_px_tokens, MAX_TOKENS);
}

static sched *start(int cache_slots, int ctx_size) {
    sched *w;
    lv_err err;
    /* the image cache off: an image outside the reused prefix is encoded */
    sched_config cfg = {.queue_size = 4,
                        .parallel = 1,
                        .ctx_size = ctx_size,
                        .cache_slots = cache_slots,
                        .image_cache_bytes = -1};
    if (sched_new(g_m, &cfg, &w, &err) || sched_start(w, &err)) fail_msg("sched_new: %s", err.msg);
    return w;
}

/* The same prompt on a fresh scheduler without the cache. */
static sched_job *run_cold(const char *prompt, bool with_image) {
    sched *w = start(-1, 0);
    sched_job *j = make_job(prompt, with_image);
    sh_run(w, j);
    assert_int_equal(j->result.timings.n_cached, 0);
    sched_free(w);
    return j;
}

/* Appends printf-style text to buf (cap bytes). */
static void append(char *buf, size_t cap, const char *fmt, ...) {
    size_t len = strlen(buf);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, cap - len, fmt, ap);
    va_end(ap);
}

/* Three turns about one image, each resending the history the way the
 * chat template writes it: turns 2 and 3 take at least the previous
 * prompt from the cache, skip the image, and answer exactly as cold. */
static void test_conversation(void **state) {
    (void)state;
    static const char *questions[TURNS] = {"Describe the image.", "Which color is the cross?",
                                           "How many shapes are there?"};
    char prompt[8192] = "";
    sched *w = start(0, 0);
    double warm[TURNS], cold[TURNS];
    int prev_ids = 0;
    for (int t = 0; t < TURNS; t++) {
        append(prompt, sizeof prompt, "[INST] %s%s [/INST]", t == 0 ? "<image>\n" : "",
               questions[t]);
        sched_job *j = make_job(prompt, true), *ref = run_cold(prompt, true);
        sh_run(w, j);
        sh_expect_same(ref, j);
        const gen_timings *gt = &j->result.timings;
        print_message("turn %d: %d prompt ids, %d cached, %d images encoded; first token after "
                      "%.1f ms (cold %.1f ms); vision %.1f prefill %.1f ms, decode %.1f ms/token\n",
                      t + 1, j->n_ids, gt->n_cached, gt->n_images, sh_ttft_ms(j), sh_ttft_ms(ref),
                      gt->vision_ms, gt->prefill_ms,
                      gt->decode_ms / (gt->n_decode ? gt->n_decode : 1));
        if (t == 0) {
            assert_int_equal(gt->n_cached, 0);
            assert_int_equal(gt->n_images, 1);
        } else {
            assert_true(gt->n_cached >= prev_ids);
            assert_true(gt->n_cached < j->n_ids);
            assert_int_equal(gt->n_images, 0); /* inside the prefix: not encoded */
        }
        assert_int_equal(gt->n_prefill + gt->n_cached, j->n_ids);
        warm[t] = sh_ttft_ms(j);
        cold[t] = sh_ttft_ms(ref);
        prev_ids = j->n_ids;
        append(prompt, sizeof prompt, " %s</s> ", j->result.text);
        sched_job_release(j);
        sched_job_release(ref);
    }
    sched_stats st;
    sched_get_stats(w, &st);
    assert_int_equal(st.cache_hits, TURNS - 1);
    assert_true(st.cache_tokens > 0);
    assert_int_equal(st.cache_sequences, 1);
    assert_true(st.kv_bytes_retained > 0);
    assert_int_equal(st.kv_bytes_allocated, 0); /* nothing running */
    print_message("time to first token, ms: cache %.1f %.1f %.1f, cold %.1f %.1f %.1f\n", warm[0],
                  warm[1], warm[2], cold[0], cold[1], cold[2]);
    sched_free(w);
}

/* A long shared system prompt, two different questions: the second job
 * prefills only what follows the shared part; the first's entry stays (the
 * second copied its prefix), so asking it again reuses all but one id. */
static void test_shared_system_prompt(void **state) {
    (void)state;
    char system[4096] = "<<SYS>>\n";
    for (int i = 0; i < 12; i++)
        append(system, sizeof system, "Rule %d: answer briefly, name colours and shapes. ", i + 1);
    append(system, sizeof system, "\n<</SYS>>\n\n");
    char a[8192], b[8192];
    snprintf(a, sizeof a, "%s[INST] <image>\nDescribe the image. [/INST]", system);
    snprintf(b, sizeof b, "%s[INST] Hello, who are you? [/INST]", system);
    sched *w = start(2, 0); /* two kept sequences: the second does not evict the first */
    sched_job *ja = make_job(a, true), *jb = make_job(b, false), *ja2 = make_job(a, true);
    sh_run(w, ja);
    sh_run(w, jb);
    sh_run(w, ja2);
    sched_job *ca = run_cold(a, true), *cb = run_cold(b, false);
    sh_expect_same(ca, ja);
    sh_expect_same(cb, jb);
    sh_expect_same(ca, ja2);
    int shared = 0;
    while (shared < ja->n_ids && shared < jb->n_ids && ja->ids[shared] == jb->ids[shared]) shared++;
    print_message("system prompt: %d shared ids; second job cached %d of %d\n", shared,
                  jb->result.timings.n_cached, jb->n_ids);
    assert_true(shared > 100);
    assert_int_equal(ja->result.timings.n_cached, 0);
    assert_int_equal(jb->result.timings.n_cached, shared);
    assert_int_equal(ja2->result.timings.n_cached, ja2->n_ids - 1);
    assert_int_equal(ja2->result.timings.n_images, 0);
    sched_stats st;
    sched_get_stats(w, &st);
    assert_int_equal(st.cache_sequences, 2);
    sched_free(w);
    sched_job_release(ja), sched_job_release(jb), sched_job_release(ja2);
    sched_job_release(ca), sched_job_release(cb);
}

/* One slot and a KV budget of one sequence: a job with another prompt
 * evicts the kept one, and the first prompt asked again is prefilled whole
 * with the same answer. The KV held never exceeds the budget. */
static void test_eviction(void **state) {
    (void)state;
    const char *a = "[INST] <image>\nDescribe the image. [/INST]";
    const char *b = "[INST] Tell me a story about a blue square and a red cross. [/INST]";
    sched_job *probe = make_job(a, true);
    int ctx = probe->n_ids + MAX_TOKENS + 8; /* room for one of them, not two */
    sched_job_release(probe);
    sched *w = start(1, ctx);
    sched_job *ja = make_job(a, true), *jb = make_job(b, false), *ja2 = make_job(a, true);
    sched_stats st;
    sh_run(w, ja);
    sched_get_stats(w, &st);
    assert_int_equal(st.cache_sequences, 1);
    sh_run(w, jb);
    sched_get_stats(w, &st);
    assert_int_equal(st.cache_sequences, 1);
    assert_true(st.kv_bytes_retained + st.kv_bytes_allocated <= st.kv_bytes_total);
    sh_run(w, ja2);
    sched_job *ca = run_cold(a, true);
    sh_expect_same(ca, ja);
    sh_expect_same(ca, ja2);
    assert_true(ja2->result.timings.n_cached < 16); /* a's entry was evicted */
    assert_int_equal(ja2->result.timings.n_images, 1);
    sched_free(w);
    sched_job_release(ja), sched_job_release(jb), sched_job_release(ja2), sched_job_release(ca);
}

/* The prefix rule on made-up contents (image id 9, two images of 3 ids). */
static void test_common_prefix_rule(void **state) {
    (void)state;
    enum { IMG = 9 };
    int32_t x[] = {1, 2, IMG, IMG, IMG, 5, IMG, IMG, IMG, 6, 7};
    int32_t y[] = {1, 2, IMG, IMG, IMG, 5, IMG, IMG, IMG, 6, 8};
    uint64_t keys[] = {100, 200}, other[] = {100, 300};
    int rows[] = {3, 3};
    pc_content a = {x, 11, keys, rows, 2}, b = {y, 11, keys, rows, 2};
    assert_int_equal(pc_common_prefix(&a, &b, 100, IMG), 10);
    assert_int_equal(pc_common_prefix(&a, &b, 4, IMG), 2); /* inside image 1: its start */
    assert_int_equal(pc_common_prefix(&a, &b, 5, IMG), 5); /* image 1 whole */
    assert_int_equal(pc_common_prefix(&a, &b, 8, IMG), 6); /* inside image 2 */
    b.image_keys = other;                                  /* the second image differs */
    assert_int_equal(pc_common_prefix(&a, &b, 100, IMG), 6);
    b.image_keys = keys;
    b.n = 3; /* b ends inside image 1 */
    assert_int_equal(pc_common_prefix(&a, &b, 100, IMG), 2);
    /* the key covers pixels and shape */
    img_tensor p = g_px;
    uint64_t k0 = pc_image_key(&p);
    p.image_w++;
    assert_true(pc_image_key(&p) != k0);
    p = g_px;
    float saved = p.data[1000];
    p.data[1000] += 1.0f;
    assert_true(pc_image_key(&p) != k0);
    p.data[1000] = saved;
    assert_true(pc_image_key(&p) == k0);
}

/* n choices of one prompt: the later ones wait for the first to prefill it
 * and copy its KV (the image not encoded again, one prompt id prefilled),
 * and each answers, bit for bit, as it does alone on a cold scheduler. */
static void test_choices_share_prompt(void **state) {
    (void)state;
    enum { N = 3 };
    const char *prompt = "[INST] <image>\nDescribe the image. [/INST]";
    sched *w;
    lv_err err;
    sched_config cfg = {.queue_size = 8, .parallel = N, .cache_slots = -1, .image_cache_bytes = -1};
    if (sched_new(g_m, &cfg, &w, &err) || sched_start(w, &err)) fail_msg("%s", err.msg);
    sched_job *j[N], *alone[N];
    for (int k = 0; k < N; k++) {
        j[k] = make_job(prompt, true);
        j[k]->params.sampling.temperature = 0.8f;
        j[k]->params.sampling.seed = 7 + (uint64_t)k;
        if (k) sched_job_share_prompt(j[k], j[0]);
        if (sched_submit(w, j[k], &err)) fail_msg("%s", err.msg);
    }
    for (int k = 0; k < N; k++) {
        sched_job_wait(j[k]);
        if (j[k]->st) fail_msg("%s", j[k]->err.msg);
        alone[k] = make_job(prompt, true);
        alone[k]->params.sampling.temperature = 0.8f;
        alone[k]->params.sampling.seed = 7 + (uint64_t)k;
        sched *cold = start(-1, 0);
        sh_run(cold, alone[k]);
        sched_free(cold);
        sh_expect_same(alone[k], j[k]);
        const gen_timings *gt = &j[k]->result.timings;
        if (k == 0) {
            assert_int_equal(gt->n_images, 1);
            assert_int_equal(gt->n_cached, 0);
        } else {
            assert_int_equal(gt->n_images, 0); /* not encoded */
            assert_int_equal(gt->n_cached, j[k]->n_ids - 1);
            assert_int_equal(gt->n_prefill, 1);
        }
    }
    sched_stats st;
    sched_get_stats(w, &st);
    assert_int_equal(st.prompt_shares, N - 1);
    sched_free(w);
    for (int k = 0; k < N; k++) sched_job_release(j[k]), sched_job_release(alone[k]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_common_prefix_rule),
        cmocka_unit_test(test_conversation),
        cmocka_unit_test(test_choices_share_prompt),
        cmocka_unit_test(test_shared_system_prompt),
        cmocka_unit_test(test_eviction),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
