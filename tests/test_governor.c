/* test_governor.c - the memory governor (engine/governor.h) alone, then
 * with the scheduler on the bundled demo model (models/demo): under
 * pressure the caches are evicted first, least recently used, while the
 * running job goes on; a conversation whose prefix and image were evicted
 * recomputes them and answers bit for bit as it did from the cache; the
 * prefix cache's own byte budget; a job's memory estimate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/clock.h"
#include "base/log.h"
#include "engine/governor.h"
#include "engine/request.h"
#include "engine/scheduler.h"
#include "sched_harness.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOKENS 12
#define MIB        ((int64_t)1 << 20)

/* ---- the governor alone ------------------------------------------------------------------ */

static int64_t g_measured = -1; /* what the fake measure says (-1: unknown) */

static int64_t fake_measure(void *ud) {
    (void)ud;
    return g_measured;
}

static mg_governor *new_gov(int64_t limit, bool measured) {
    mg_governor *g;
    lv_err err;
    mg_config c = {.limit = limit, .measure = measured ? fake_measure : NULL};
    if (mg_new(&c, &g, &err)) fail_msg("%s", err.msg);
    return g;
}

/* Accounting, the two lines, refusals. */
static void test_levels(void **state) {
    (void)state;
    mg_governor *g = new_gov(1000, false);
    mg_set_fixed(g, 100);
    assert_int_equal(mg_level_now(g, true), MG_NORMAL);
    assert_true(mg_reserve(g, MG_REQUESTS, 600)); /* 700 */
    assert_int_equal(mg_excess(g), 0);
    mg_set(g, MG_KV_CACHED, 150); /* 850: above 80% */
    assert_int_equal(mg_level_now(g, false), MG_EVICT);
    assert_int_equal(mg_excess(g), 50);
    assert_true(mg_reserve(g, MG_REQUESTS, 100)); /* 950: at the line, still in */
    assert_false(mg_reserve(g, MG_REQUESTS, 1));  /* past 95% */
    assert_int_equal(mg_level_now(g, false), MG_REFUSE);
    mg_add(g, MG_REQUESTS, -700); /* the requests answered */
    assert_int_equal(mg_level_now(g, false), MG_NORMAL);
    mg_stats s;
    mg_get_stats(g, &s);
    assert_int_equal(s.accounted, 250);
    assert_int_equal(s.pools[MG_REQUESTS], 0);
    assert_int_equal(s.refused, 1);
    assert_int_equal(s.measured, -1);
    mg_free(g);

    /* no limit: accounting only */
    g = new_gov(0, false);
    assert_true(mg_reserve(g, MG_REQUESTS, (int64_t)1 << 50));
    assert_int_equal(mg_level_now(g, true), MG_NORMAL);
    assert_int_equal(mg_excess(g), 0);
    mg_free(g);

    /* bad shares; a NULL governor does nothing and refuses nothing */
    lv_err err;
    mg_config bad = {.limit = 10, .evict_at = 0.9, .refuse_at = 0.5};
    assert_int_equal(mg_new(&bad, &g, &err), LV_ERR_ARG);
    assert_true(mg_reserve(NULL, MG_REQUESTS, 5));
    assert_int_equal(mg_level_now(NULL, true), MG_NORMAL);
    assert_string_equal(mg_level_name(MG_REFUSE), "refuse");
}

/* The measured use counts when it is above the accounting. */
static void test_measured(void **state) {
    (void)state;
    mg_governor *g = new_gov(1000, true);
    mg_set_fixed(g, 100);
    g_measured = 900;
    assert_int_equal(mg_level_now(g, true), MG_EVICT);
    assert_int_equal(mg_excess(g), 100);
    assert_false(mg_reserve(g, MG_REQUESTS, 100));
    g_measured = 50; /* below the accounting: the accounting counts */
    assert_int_equal(mg_level_now(g, true), MG_NORMAL);
    assert_true(mg_reserve(g, MG_REQUESTS, 100));
    mg_stats s;
    mg_get_stats(g, &s);
    assert_int_equal(s.use, 200);
    g_measured = -1;
    mg_free(g);
}

/* A waiting reservation asks the evicting side for room. */
typedef struct {
    mg_governor *g;
    int64_t cached; /* what the fake cache holds */
    int calls;
} fake_cache;

static void evict_all(void *ud) {
    fake_cache *c = ud;
    c->calls++;
    int n = c->cached > 0;
    c->cached = 0;
    mg_set(c->g, MG_KV_CACHED, 0);
    mg_evicted(c->g, n);
}

static void test_reserve_waits_for_room(void **state) {
    (void)state;
    mg_governor *g = new_gov(1000, false);
    fake_cache c = {g, 800, 0};
    mg_set(g, MG_KV_CACHED, 800);
    assert_false(mg_reserve_wait(g, MG_REQUESTS, 300, 1000)); /* no one to ask */
    mg_set_waker(g, evict_all, &c);
    assert_true(mg_reserve_wait(g, MG_REQUESTS, 300, 1000));
    assert_int_equal(c.calls, 1);
    /* nothing left to evict: refused at once, not after the wait */
    double t0 = lv_now_ms();
    assert_false(mg_reserve_wait(g, MG_REQUESTS, 700, 5000));
    assert_true(lv_now_ms() - t0 < 2000);
    mg_free(g);
}

/* ---- with the scheduler ------------------------------------------------------------------ */

static llava *g_m;
static img_tensor g_px;
static int g_tokens;

static int setup(void **state) {
    (void)state;
    static const char *const names[1] = {"sample_01_320x240.png"};
    return sh_setup_demo(&g_m, names, &g_px, &g_tokens, 1);
}

static int teardown(void **state) {
    (void)state;
    img_tensor_free(&g_px);
    llava_free(g_m);
    return 0;
}

/* A greedy job for a raw prompt whose one <image> is the sample. */
static sched_job *make_job(const char *prompt) {
    return sh_job(g_m, prompt, &g_px, g_tokens, MAX_TOKENS);
}

static sched *start(mg_governor *gov, int64_t prefix_cache_bytes) {
    sched *w;
    lv_err err;
    sched_config cfg = {
        .queue_size = 4, .parallel = 2, .governor = gov, .prefix_cache_bytes = prefix_cache_bytes};
    if (sched_new(g_m, &cfg, &w, &err) || sched_start(w, &err)) fail_msg("sched_new: %s", err.msg);
    return w;
}

static const char *TURN1 = "[INST] <image>\nDescribe the image. [/INST]";
static const char *TURN2 = "[INST] <image>\nDescribe the image. [/INST] It shows shapes.</s>"
                           "[INST] What colour is the largest one? [/INST]";

/* Under pressure the kept sequence and image go first; the job running
 * meanwhile finishes; the conversation's next turn, its prefix and image
 * evicted, recomputes them and answers as it did from the caches. */
static void test_pressure_evicts_caches(void **state) {
    (void)state;
    const int64_t limit = 4096 * MIB;
    mg_governor *g = new_gov(limit, true);
    sched *w = start(g, 0);
    mg_set_fixed(g, 100 * MIB);

    sched_job *t1 = make_job(TURN1), *warm = make_job(TURN2);
    sh_run(w, t1);
    sh_run(w, warm); /* from the caches */
    assert_true(warm->result.timings.n_cached >= g_tokens);
    sched_stats st;
    sched_get_stats(w, &st);
    assert_true(st.cache_sequences >= 1);
    assert_int_equal(st.image_cache_images, 1);
    mg_stats ms;
    mg_get_stats(g, &ms);
    assert_int_equal(ms.pools[MG_KV_CACHED], (int64_t)st.kv_bytes_retained);
    assert_int_equal(ms.pools[MG_IMAGE_CACHE], (int64_t)st.image_cache_bytes);
    assert_true(ms.pools[MG_KV_CACHED] > 0 && ms.pools[MG_IMAGE_CACHE] > 0);

    /* the real use jumps above the evict line (something else took memory) */
    g_measured = limit * 85 / 100;
    sched_job *cold = make_job(TURN2);
    sh_run(w, cold);
    assert_int_equal(cold->result.timings.n_cached, 0); /* the prefix was evicted */
    assert_int_equal(cold->result.timings.n_images, 1); /* the image encoded again */
    assert_int_equal(cold->result.timings.n_images_cached, 0);
    sh_expect_same(warm, cold);
    sched_get_stats(w, &st);
    assert_true(st.cache_evictions >= 1);
    assert_true(st.image_cache_evictions >= 1);
    mg_get_stats(g, &ms);
    assert_true(ms.pressure_evictions >= 2);
    assert_int_equal(ms.level, MG_EVICT);

    /* above the refuse line nothing new is reserved; back under, it is */
    g_measured = limit * 97 / 100;
    assert_int_equal(mg_level_now(g, true), MG_REFUSE);
    assert_false(mg_reserve(g, MG_REQUESTS, MIB));
    g_measured = 0; /* (an unknown sample, -1, would keep the last) */
    assert_int_equal(mg_level_now(g, true), MG_NORMAL);
    assert_true(mg_reserve(g, MG_REQUESTS, MIB));
    mg_add(g, MG_REQUESTS, -MIB);
    g_measured = -1;

    sched_free(w);
    mg_get_stats(g, &ms); /* the caches are gone with the scheduler */
    assert_int_equal(ms.pools[MG_KV_CACHED] + ms.pools[MG_IMAGE_CACHE], 0);
    mg_free(g);
    sched_job_release(t1), sched_job_release(warm), sched_job_release(cold);
}

/* The prefix cache's byte budget: a budget below one sequence keeps none. */
static void test_prefix_budget(void **state) {
    (void)state;
    sched *w = start(NULL, 1024);
    sched_job *j = make_job(TURN1);
    sh_run(w, j);
    sched_stats st;
    sched_get_stats(w, &st);
    assert_int_equal(st.cache_sequences, 0);
    assert_int_equal(st.kv_bytes_retained, 0);
    sched_free(w);
    sched_job_release(j);
}

/* A job's estimate covers its KV, its tensor and its feature rows. */
static void test_job_bytes(void **state) {
    (void)state;
    sched *w = start(NULL, 0);
    sched_job *j = make_job(TURN1);
    sched_stats st;
    sched_get_stats(w, &st);
    int64_t kv = (int64_t)(j->n_ids + MAX_TOKENS) * (int64_t)(st.kv_bytes_total / st.kv_capacity);
    int64_t px = (int64_t)g_px.n_tiles * 3 * g_px.tile_h * g_px.tile_w * 4;
    int64_t rows = (int64_t)g_tokens * llava_text_dim(g_m) * 4;
    int64_t b = sched_job_bytes(w, j);
    assert_true(b >= kv + px + rows);
    assert_true(b < 4 * (kv + px + rows) + 64 * MIB);
    sched_free(w);
    sched_job_release(j);
}

int main(void) {
    const struct CMUnitTest alone[] = {
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_measured),
        cmocka_unit_test(test_reserve_waits_for_room),
    };
    const struct CMUnitTest with_model[] = {
        cmocka_unit_test(test_pressure_evicts_caches),
        cmocka_unit_test(test_prefix_budget),
        cmocka_unit_test(test_job_bytes),
    };
    int fails = cmocka_run_group_tests_name("governor", alone, NULL, NULL);
    return fails + cmocka_run_group_tests_name("governor_sched", with_model, setup, teardown);
}
