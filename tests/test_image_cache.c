/* test_image_cache.c - the scheduler's image cache (engine/image_cache.h)
 * on the bundled demo model (models/demo): the same image asked about
 * with another prompt (so the prefix cache cannot skip it) takes its rows
 * from the cache and is not encoded; a budget of one image evicts the
 * first when a second comes; a budget below zero keeps nothing. Every
 * job's ids, text and logprobs equal, bit for bit, those of the same job
 * on a fresh scheduler with both caches off. Also the LRU and budget rules
 * alone on made-up entries. Prints the second question's time to first
 * token with and without the cache (docs/PERF_NOTES.md). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/log.h"
#include "engine/image_cache.h"
#include "engine/request.h"
#include "engine/scheduler.h"
#include "sched_harness.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOKENS 16
#define OFF        (-1) /* sched_config: no cache */

static llava *g_m;
static img_tensor g_px[2]; /* two sample images */
static int g_tokens[2];

static int setup(void **state) {
    (void)state;
    static const char *const names[2] = {"sample_01_320x240.png", "sample_03_400x400.png"};
    return sh_setup_demo(&g_m, names, g_px, g_tokens, 2);
}

static int teardown(void **state) {
    (void)state;
    for (int i = 0; i < 2; i++) img_tensor_free(&g_px[i]);
    llava_free(g_m);
    return 0;
}

/* Bytes the cache counts for image i's rows. */
static size_t image_bytes(int i) {
    return (size_t)g_tokens[i] * llava_text_dim(g_m) * sizeof(float);
}

/* A greedy job for a raw prompt (chat template applied) whose <image> is
 * sample image `image`. */
static sched_job *make_job(const char *prompt, int image) {
    return sh_job(g_m, prompt, &g_px[image], g_tokens[image], MAX_TOKENS);
}

static sched *start(int cache_slots, int64_t image_cache_bytes) {
    sched *w;
    lv_err err;
    sched_config cfg = {.queue_size = 4,
                        .parallel = 1,
                        .cache_slots = cache_slots,
                        .image_cache_bytes = image_cache_bytes};
    if (sched_new(g_m, &cfg, &w, &err) || sched_start(w, &err)) fail_msg("sched_new: %s", err.msg);
    return w;
}

/* The same job on a fresh scheduler with both caches off. */
static sched_job *run_cold(const char *prompt, int image) {
    sched *w = start(OFF, OFF);
    sched_job *j = make_job(prompt, image);
    sh_run(w, j);
    assert_int_equal(j->result.timings.n_images, 1);
    assert_int_equal(j->result.timings.n_images_cached, 0);
    sched_free(w);
    return j;
}

static const char *ASK_A = "[INST] <image>\nDescribe the image. [/INST]";
/* text before the image: no prefix shared with ASK_A worth the prefix cache */
static const char *ASK_B = "[INST] Here is a picture I took yesterday while walking "
                           "home: <image>\nHow many shapes are there? [/INST]";

/* The same image, a new question in a new conversation: the second job's
 * image comes from the cache (the prefix cache on, as the server runs,
 * cannot skip it), and it answers exactly as cold. */
static void test_same_image_new_prompt(void **state) {
    (void)state;
    sched *w = start(0, 0); /* both caches at their defaults */
    sched_job *ja = make_job(ASK_A, 0), *jb = make_job(ASK_B, 0);
    sh_run(w, ja);
    sh_run(w, jb);
    sched_job *ca = run_cold(ASK_A, 0), *cb = run_cold(ASK_B, 0);
    sh_expect_same(ca, ja);
    sh_expect_same(cb, jb);
    assert_int_equal(ja->result.timings.n_images, 1);
    assert_int_equal(ja->result.timings.n_images_cached, 0);
    assert_int_equal(jb->result.timings.n_images, 0); /* not encoded */
    assert_int_equal(jb->result.timings.n_images_cached, 1);
    assert_true(jb->result.timings.n_cached < 16); /* not the prefix cache's doing */
    sched_stats st;
    sched_get_stats(w, &st);
    assert_int_equal(st.image_cache_hits, 1);
    assert_int_equal(st.image_cache_misses, 1);
    assert_int_equal(st.image_cache_evictions, 0);
    assert_int_equal(st.image_cache_images, 1);
    assert_int_equal(st.image_cache_bytes, image_bytes(0));
    assert_int_equal(st.image_cache_budget, SCHED_IMAGE_CACHE_DEFAULT);
    print_message("second question about a seen image: first token after %.1f ms (cold %.1f "
                  "ms), vision %.1f ms (cold %.1f ms)\n",
                  sh_ttft_ms(jb), sh_ttft_ms(cb), jb->result.timings.vision_ms,
                  cb->result.timings.vision_ms);
    sched_free(w);
    sched_job_release(ja), sched_job_release(jb), sched_job_release(ca), sched_job_release(cb);
}

/* A budget of one image: the second image evicts the first, which is then
 * encoded again; every answer is the cold one. */
static void test_eviction(void **state) {
    (void)state;
    size_t one = image_bytes(0) > image_bytes(1) ? image_bytes(0) : image_bytes(1);
    assert_true(one < image_bytes(0) + image_bytes(1));
    sched *w = start(OFF, (int64_t)one);
    sched_job *ja = make_job(ASK_A, 0), *jb = make_job(ASK_A, 1), *ja2 = make_job(ASK_B, 0);
    sched_stats st;
    sh_run(w, ja);
    sh_run(w, jb);
    sched_get_stats(w, &st);
    assert_int_equal(st.image_cache_evictions, 1);
    assert_int_equal(st.image_cache_images, 1);
    assert_int_equal(st.image_cache_bytes, image_bytes(1));
    sh_run(w, ja2);
    sched_get_stats(w, &st);
    assert_int_equal(st.image_cache_hits, 0);
    assert_int_equal(st.image_cache_misses, 3);
    assert_int_equal(st.image_cache_evictions, 2);
    assert_true(st.image_cache_bytes <= one);
    assert_int_equal(ja2->result.timings.n_images, 1); /* evicted: encoded again */
    sched_job *ca = run_cold(ASK_A, 0), *cb = run_cold(ASK_A, 1), *ca2 = run_cold(ASK_B, 0);
    sh_expect_same(ca, ja);
    sh_expect_same(cb, jb);
    sh_expect_same(ca2, ja2);
    sched_free(w);
    sched_job_release(ja), sched_job_release(jb), sched_job_release(ja2);
    sched_job_release(ca), sched_job_release(cb), sched_job_release(ca2);
}

/* No budget: nothing is kept or looked up. */
static void test_off(void **state) {
    (void)state;
    sched *w = start(OFF, OFF);
    sched_job *ja = make_job(ASK_A, 0), *jb = make_job(ASK_B, 0);
    sh_run(w, ja);
    sh_run(w, jb);
    assert_int_equal(jb->result.timings.n_images, 1);
    assert_int_equal(jb->result.timings.n_images_cached, 0);
    sched_stats st;
    sched_get_stats(w, &st);
    assert_int_equal(st.image_cache_hits + st.image_cache_misses, 0);
    assert_int_equal(st.image_cache_images, 0);
    assert_int_equal(st.image_cache_bytes, 0);
    assert_int_equal(st.image_cache_budget, 0);
    sched_free(w);
    sched_job_release(ja), sched_job_release(jb);
}

/* The LRU and budget rules on made-up entries (no rows). */
static void test_lru_budget(void **state) {
    (void)state;
    image_cache c;
    lv_err err;
    ic_init(&c, 100);
    assert_true(ic_enabled(&c));
    assert_int_equal(ic_find(&c, 1, 10), -1);
    assert_int_equal(ic_put(&c, 1, 10, NULL, 40, &err), LV_OK);
    assert_int_equal(ic_put(&c, 2, 10, NULL, 40, &err), LV_OK);
    assert_int_equal(c.bytes, 80);
    assert_true(ic_find(&c, 1, 10) >= 0);     /* 1 is now more recent than 2 */
    assert_int_equal(ic_find(&c, 1, 11), -1); /* same key, other size: not the same image */
    assert_int_equal(ic_put(&c, 3, 10, NULL, 40, &err), LV_OK); /* evicts 2 */
    assert_int_equal(c.evictions, 1);
    assert_true(ic_find(&c, 1, 10) >= 0);
    assert_true(ic_find(&c, 3, 10) >= 0);
    assert_int_equal(ic_find(&c, 2, 10), -1);
    assert_int_equal(ic_put(&c, 3, 10, NULL, 40, &err), LV_OK); /* there already */
    assert_int_equal(c.n, 2);
    assert_int_equal(c.bytes, 80);
    assert_false(ic_fits(&c, 101));
    assert_int_equal(ic_put(&c, 4, 10, NULL, 101, &err), LV_OK); /* larger than the budget */
    assert_int_equal(c.n, 2);
    assert_int_equal(c.evictions, 1);
    assert_int_equal(ic_put(&c, 5, 10, NULL, 100, &err), LV_OK); /* the whole budget */
    assert_int_equal(c.n, 1);
    assert_int_equal(c.evictions, 3);
    assert_int_equal(c.hits, 3);
    assert_int_equal(c.misses, 3);
    ic_clear(&c);
    assert_int_equal(c.n, 0);
    assert_int_equal(c.bytes, 0);
    ic_deinit(&c);
    ic_init(&c, 0); /* off */
    assert_false(ic_enabled(&c));
    assert_int_equal(ic_put(&c, 1, 10, NULL, 1, &err), LV_OK);
    assert_int_equal(c.n, 0);
    ic_deinit(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lru_budget),
        cmocka_unit_test(test_same_image_new_prompt),
        cmocka_unit_test(test_eviction),
        cmocka_unit_test(test_off),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
