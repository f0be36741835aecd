/* test_scheduler.c - the continuous-batching worker (server/worker.h) on the
 * bundled demo model (models/demo): sixteen jobs with different images and
 * prompts give, at parallel 4 and 16, exactly what each gives alone (ids,
 * text, logprobs); cancellation and deadlines free the sequence at once;
 * a full queue answers LV_ERR_BUSY; stopping drains or cancels; a job that
 * cannot run (prompt beyond the context, bad ids) fails alone while the
 * others go on; a device fault fails the running jobs and every later one.
 * Outputs are compared with each other, never with fixed
 * answers, so a retrained demo model does not break the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/clock.h"
#include "base/log.h"
#include "engine/request.h"
#include "engine/run.h"
#include "engine/scheduler.h"
#include "model/llava_impl.h"
#include "testutil.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N_JOBS     16
#define MAX_TOKENS 16

static llava *g_m;
static img_tensor g_px[13]; /* sample image NN preprocessed, loaded once */
static int g_px_tokens[13];

static const struct {
    int image; /* 1..12: samples/sample_NN_*.png; 0: text only */
    const char *question;
} JOBS[N_JOBS] = {
    {1, "Describe the image."},
    {2, "What is in the image?"},
    {3, "Which color is the cross?"},
    {4, "Which shape is yellow?"},
    {5, "Describe the picture in one sentence."},
    {6, "What is the color of the star?"},
    {7, "How many crosses are in the image?"},
    {8, "Describe the picture in one sentence."},
    {9, "How many shapes are there?"},
    {10, "Is there a white star?"},
    {11, "Describe the image."},
    {12, "What is in the image?"},
    {1, "Which shape is blue?"},
    {0, "Hello, who are you?"},
    {3, "Is there a white square?"},
    {6, "What shape is the orange object?"},
};

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static const char *demo_dir(void) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/../../models/demo", tu_env("LLAVA_TEST_DATA"));
    return path;
}

static int setup(void **state) {
    (void)state;
    lv_log_set_level(LV_LOG_WARN);
    lv_err err;
    if (llava_open(demo_dir(), &g_m, &err) || llava_load(g_m, "cpu", 2, &err)) {
        fprintf(stderr, "cannot load %s: %s\n", demo_dir(), err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    for (int i = 0; i < 13; i++) img_tensor_free(&g_px[i]);
    llava_free(g_m);
    return 0;
}

/* The sample image NN's path (NULL when none). */
static const char *sample_path(int nn) {
    static char path[1200];
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/samples", demo_dir());
    char prefix[32];
    snprintf(prefix, sizeof prefix, "sample_%02d_", nn);
    static const char *names[] = {"320x240", "240x320", "400x400", "96x96",   "360x120", "120x360",
                                  "200x100", "100x200", "256x256", "300x200", "150x150", "384x160"};
    snprintf(path, sizeof path, "%s/%s%s.png", dir, prefix, names[nn - 1]);
    return path;
}

static const img_tensor *sample_image(int nn, int *n_tok) {
    if (!g_px[nn].data) {
        lv_err err;
        if (request_load_image(g_m, sample_path(nn), &g_px[nn], &g_px_tokens[nn], NULL, NULL, &err))
            fail_msg("%s", err.msg);
    }
    *n_tok = g_px_tokens[nn];
    return &g_px[nn];
}

/* A greedy job for a question (about sample image `image`, 0: none). */
static sched_job *make_job(int image, const char *question, int max_tokens) {
    sched_job *j = sched_job_new();
    assert_non_null(j);
    lv_err err;
    int n_tok = 0;
    if (image) {
        const img_tensor *px = sample_image(image, &n_tok);
        size_t n = (size_t)px->n_tiles * 3 * px->tile_h * px->tile_w * sizeof(float);
        j->images = calloc(1, sizeof *j->images);
        assert_non_null(j->images);
        j->images[0] = *px;
        j->images[0].data = malloc(n);
        assert_non_null(j->images[0].data);
        memcpy(j->images[0].data, px->data, n);
        j->n_images = 1;
    }
    size_t n_ids;
    if (request_prompt_ids(g_m, question, false, j->images, j->n_images, &j->ids, &n_ids, &err))
        fail_msg("%s", err.msg);
    j->n_ids = (int)n_ids;
    gen_params_default(&j->params, g_m);
    sample_params_default(&j->params.sampling);
    j->params.sampling.n_top_logprobs = 3;
    j->params.max_tokens = max_tokens;
    j->record_tokens = true;
    snprintf(j->rid, sizeof j->rid, "t%d", image);
    return j;
}

static sched *start(int parallel, int queue_size, int ctx_size) {
    sched *w;
    lv_err err;
    sched_config cfg = {.queue_size = queue_size, .parallel = parallel, .ctx_size = ctx_size};
    if (sched_new(g_m, &cfg, &w, &err) || sched_start(w, &err)) fail_msg("sched_new: %s", err.msg);
    return w;
}

static void submit(sched *w, sched_job *j) {
    lv_err err;
    if (sched_submit(w, j, &err)) fail_msg("sched_submit: %s", err.msg);
}

/* Waits until the figures show nothing running and the KV cache empty. */
static void expect_idle(sched *w) {
    sched_stats st;
    for (int i = 0; i < 2000; i++) {
        sched_get_stats(w, &st);
        if (st.running == 0 && st.waiting == 0) break;
        sleep_ms(5);
    }
    assert_int_equal(st.running, 0);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(st.kv_used, 0);
    assert_int_equal(st.kv_bytes_used, 0);
    assert_int_equal(st.kv_bytes_allocated, 0);
}

/* Waits until j has produced at least n tokens (or ended). */
static void wait_tokens(sched_job *j, int n) {
    for (int i = 0; i < 20000; i++) {
        pthread_mutex_lock(&j->mu);
        bool ok = j->n_tokens >= n || j->done;
        pthread_mutex_unlock(&j->mu);
        if (ok) return;
        sleep_ms(1);
    }
    fail_msg("job %s produced no tokens", j->rid);
}

static void expect_same(const sched_job *a, const sched_job *b, int k) {
    if (a->st != LV_OK || b->st != LV_OK)
        fail_msg("job %d: %s / %s (%s%s)", k, lv_status_str(a->st), lv_status_str(b->st),
                 a->err.msg, b->err.msg);
    if (a->result.n_ids != b->result.n_ids ||
        memcmp(a->result.ids, b->result.ids, (size_t)a->result.n_ids * sizeof *a->result.ids))
        fail_msg("job %d: ids differ: alone %d tokens \"%s\", batched %d tokens \"%s\"", k,
                 a->result.n_ids, a->result.text, b->result.n_ids, b->result.text);
    assert_string_equal(a->result.text, b->result.text);
    assert_string_equal(a->result.finish_reason, b->result.finish_reason);
    assert_int_equal(a->n_tokens, b->n_tokens);
    for (int i = 0; i < a->n_tokens; i++) {
        assert_int_equal(a->tokens[i].id, b->tokens[i].id);
        /* same logits bit for bit, so the same log-probabilities */
        assert_true(a->tokens[i].logprob == b->tokens[i].logprob);
        assert_int_equal(a->tokens[i].n_top, b->tokens[i].n_top);
    }
}

/* Each job alone, then all sixteen at parallel 4 and 16. */
static void test_batched_equals_alone(void **state) {
    (void)state;
    sched_job *alone[N_JOBS];
    sched *w = start(1, N_JOBS, 0);
    for (int k = 0; k < N_JOBS; k++) {
        alone[k] = make_job(JOBS[k].image, JOBS[k].question, MAX_TOKENS);
        submit(w, alone[k]);
        sched_job_wait(alone[k]);
        assert_int_equal(alone[k]->st, LV_OK);
        assert_true(alone[k]->result.n_ids >= 1);
        assert_true(alone[k]->t_first_ms >= alone[k]->t_submit_ms);
        assert_true(alone[k]->t_done_ms >= alone[k]->t_first_ms);
    }
    expect_idle(w);
    sched_free(w);
    for (int k = 0; k < 3; k++) {
        assert_true(alone[k]->result.text_len > 0);
        print_message("job %d: \"%s\" (%s)\n", k, alone[k]->result.text,
                      alone[k]->result.finish_reason);
    }

    /* the same as gen_run, the one-request path llava-cli takes (same rules,
     * one row per decode step like the lone stream: same bits) */
    for (int k = 0; k < 2; k++) {
        gen_result r;
        lv_err err;
        sched_job *j = alone[k];
        assert_int_equal(
            gen_run(g_m, j->ids, j->n_ids, j->images, j->n_images, &j->params, NULL, &r, &err),
            LV_OK);
        assert_int_equal(r.n_ids, j->result.n_ids);
        assert_memory_equal(r.ids, j->result.ids, (size_t)r.n_ids * sizeof *r.ids);
        assert_string_equal(r.text, j->result.text);
        gen_result_free(&r);
    }

    int parallels[] = {4, 16};
    for (int p = 0; p < 2; p++) {
        sched_job *jobs[N_JOBS];
        w = start(parallels[p], N_JOBS, 0);
        for (int k = 0; k < N_JOBS; k++) {
            jobs[k] = make_job(JOBS[k].image, JOBS[k].question, MAX_TOKENS);
            submit(w, jobs[k]);
        }
        /* streams: the pieces concatenate to the result's text */
        lv_buf streamed = {0};
        while (!sched_job_take(jobs[5], &streamed, 100)) {
        }
        sched_stats st;
        sched_get_stats(w, &st);
        assert_int_equal(st.parallel, parallels[p]);
        assert_int_equal(st.queue_capacity, N_JOBS);
        assert_true(st.kv_capacity >= (int64_t)parallels[p] * 512);
        for (int k = 0; k < N_JOBS; k++) sched_job_wait(jobs[k]);
        assert_int_equal(streamed.len, jobs[5]->result.text_len);
        assert_memory_equal(streamed.data, jobs[5]->result.text, streamed.len);
        lv_buf_free(&streamed);
        for (int k = 0; k < N_JOBS; k++) expect_same(alone[k], jobs[k], k);
        expect_idle(w);
        sched_free(w);
        for (int k = 0; k < N_JOBS; k++) sched_job_release(jobs[k]);
    }
    for (int k = 0; k < N_JOBS; k++) sched_job_release(alone[k]);
}

/* A long stream cancelled mid-way: LV_ERR_CANCELLED, its sequence freed at
 * once, the job beside it unharmed. */
static void test_cancel_frees_sequence(void **state) {
    (void)state;
    sched *w = start(4, 8, 0);
    sched_job *ref = make_job(2, "What is in the image?", MAX_TOKENS);
    submit(w, ref);
    sched_job_wait(ref);
    sched_job *other = make_job(2, "What is in the image?", MAX_TOKENS);
    sched_job *j = make_job(1, "Describe the image.", 3000);
    j->params.ignore_eos = true;
    submit(w, j);
    submit(w, other);
    wait_tokens(j, 5);
    sched_stats st;
    sched_get_stats(w, &st);
    assert_true(st.running >= 1);
    assert_true(st.kv_used > 0);
    assert_true(st.kv_bytes_used > 0 && st.kv_bytes_used <= st.kv_bytes_allocated);
    assert_true(st.kv_bytes_allocated <= st.kv_bytes_total);
    sched_job_cancel(j);
    sched_job_wait(j);
    assert_int_equal(j->st, LV_ERR_CANCELLED);
    assert_false(j->timed_out);
    sched_job_wait(other);
    expect_same(ref, other, 0);
    expect_idle(w);
    sched_free(w);
    sched_job_release(j);
    sched_job_release(other);
    sched_job_release(ref);
}

/* deadline_ms: cancelled with timed_out, KV freed. */
static void test_deadline(void **state) {
    (void)state;
    sched *w = start(2, 4, 0);
    sched_job *j = make_job(4, "Which shape is yellow?", 3000);
    j->params.ignore_eos = true;
    j->deadline_ms = lv_now_ms() + 300;
    submit(w, j);
    sched_job_wait(j);
    assert_int_equal(j->st, LV_ERR_CANCELLED);
    assert_true(j->timed_out);
    assert_true(j->n_tokens < 3000);
    /* already past its deadline when it would start */
    sched_job *late = make_job(0, "Hi", 8);
    late->deadline_ms = lv_now_ms() - 1;
    submit(w, late);
    sched_job_wait(late);
    assert_int_equal(late->st, LV_ERR_CANCELLED);
    expect_idle(w);
    sched_free(w);
    sched_job_release(j);
    sched_job_release(late);
}

/* parallel 1, queue 1: one running, one waiting, the next refused. */
static void test_queue_full(void **state) {
    (void)state;
    sched *w = start(1, 1, 0);
    sched_job *a = make_job(0, "Hello", 3000), *b = make_job(0, "Hi", 4),
              *c = make_job(0, "Hey", 4);
    a->params.ignore_eos = true;
    submit(w, a);
    wait_tokens(a, 1);
    submit(w, b);
    sched_stats st;
    sched_get_stats(w, &st);
    assert_int_equal(st.running, 1);
    assert_int_equal(st.waiting, 1);
    lv_err err;
    assert_int_equal(sched_submit(w, c, &err), LV_ERR_BUSY);
    assert_non_null(strstr(err.msg, "queue is full"));
    sched_job_cancel(a);
    sched_job_wait(a);
    assert_int_equal(a->st, LV_ERR_CANCELLED);
    sched_job_wait(b);
    assert_int_equal(b->st, LV_OK);
    expect_idle(w);
    sched_free(w);
    sched_job_release(a);
    sched_job_release(b);
    sched_job_release(c);
}

/* sched_stop: cancel_running ends the running jobs; the queued ones are
 * refused; without cancel_running the running ones finish. */
static void test_stop(void **state) {
    (void)state;
    sched *w = start(2, 4, 0);
    sched_job *r1 = make_job(1, "Describe the image.", 3000), *r2 = make_job(0, "Hello", 3000);
    sched_job *q = make_job(0, "Hi", 4);
    r1->params.ignore_eos = r2->params.ignore_eos = true;
    submit(w, r1);
    submit(w, r2);
    wait_tokens(r1, 2);
    wait_tokens(r2, 2);
    submit(w, q);
    sched_stop(w, true);
    assert_true(r1->done && r2->done && q->done);
    assert_int_equal(r1->st, LV_ERR_CANCELLED);
    assert_int_equal(r2->st, LV_ERR_CANCELLED);
    assert_int_equal(q->st, LV_ERR_CANCELLED);
    lv_err err;
    sched_job *late = make_job(0, "Hi", 4);
    assert_int_equal(sched_submit(w, late, &err), LV_ERR_BUSY);
    assert_non_null(strstr(err.msg, "shutting down"));
    sched_stop(w, true); /* idempotent */
    expect_idle(w);
    sched_free(w);

    /* drain: both running jobs finish normally */
    w = start(2, 4, 0);
    sched_job *d1 = make_job(5, "Is there a blue square?", 12), *d2 = make_job(0, "Hello", 12);
    submit(w, d1);
    submit(w, d2);
    wait_tokens(d1, 1);
    wait_tokens(d2, 1);
    sched_stop(w, false);
    assert_int_equal(d1->st, LV_OK);
    assert_int_equal(d2->st, LV_OK);
    sched_free(w);

    /* drain with a request of three choices on two slots: its queued third
     * choice runs and finishes with the others (the request has begun); a
     * queued request of its own is refused */
    w = start(2, 4, 0);
    sched_job *c[3], *other = make_job(0, "Hi", 4);
    for (int k = 0; k < 3; k++) {
        c[k] = make_job(0, "Hello", 200); /* long enough that nothing ends before the stop */
        c[k]->params.ignore_eos = true;
        if (k) sched_job_share_prompt(c[k], c[0]);
        submit(w, c[k]);
    }
    submit(w, other);
    wait_tokens(c[0], 1);
    sched_stop(w, false);
    for (int k = 0; k < 3; k++) {
        assert_true(c[k]->done);
        if (c[k]->st) fail_msg("choice %d: %s", k, c[k]->err.msg);
    }
    assert_int_equal(other->st, LV_ERR_CANCELLED);
    sched_free(w);
    for (int k = 0; k < 3; k++) sched_job_release(c[k]);
    sched_job_release(other);
    sched_job *all[] = {r1, r2, q, late, d1, d2};
    for (size_t i = 0; i < LV_ARRAY_LEN(all); i++) sched_job_release(all[i]);
}

/* Jobs that cannot run fail alone, with a clear message; the others go on. */
static void test_bad_jobs_fail_alone(void **state) {
    (void)state;
    int ctx = 256;
    sched *w = start(4, 8, ctx);
    sched_stats st;
    sched_get_stats(w, &st);
    assert_int_equal(st.ctx_size, ctx);
    assert_int_equal(st.kv_capacity, 4 * ctx);

    sched_job *ok1 = make_job(0, "Hello, who are you?", MAX_TOKENS);
    sched_job *ok2 = make_job(0, "Hello, who are you?", MAX_TOKENS);
    sched_job *ref = make_job(0, "Hello, who are you?", MAX_TOKENS);
    sched_job *big = make_job(0, "Hi", 8), *badid = make_job(0, "Hi", 8), *empty = sched_job_new();
    /* a prompt of ctx + 10 tokens */
    int32_t *ids = realloc(big->ids, (size_t)(ctx + 10) * sizeof *ids);
    assert_non_null(ids);
    for (int i = big->n_ids; i < ctx + 10; i++) ids[i] = ids[big->n_ids - 1];
    big->ids = ids;
    big->n_ids = ctx + 10;
    badid->ids[badid->n_ids - 1] = 1 << 20;
    /* an image whose <image> ids are one short of its features */
    sched_job *short_img = make_job(4, "Which shape is yellow?", 8);
    int image_id = llava_image_token_id(g_m), at = -1;
    for (int i = 0; i < short_img->n_ids; i++)
        if (short_img->ids[i] == image_id) at = i;
    assert_true(at >= 0);
    memmove(short_img->ids + at, short_img->ids + at + 1,
            (size_t)(short_img->n_ids - at - 1) * sizeof *short_img->ids);
    short_img->n_ids--;
    snprintf(empty->rid, sizeof empty->rid, "empty");
    gen_params_default(&empty->params, g_m);

    submit(w, ref);
    sched_job_wait(ref);
    submit(w, ok1);
    submit(w, big);
    submit(w, badid);
    submit(w, empty);
    submit(w, short_img);
    submit(w, ok2);
    sched_job_wait(big);
    sched_job_wait(badid);
    sched_job_wait(empty);
    assert_int_equal(big->st, LV_ERR_ARG);
    assert_non_null(strstr(big->err.msg, "context"));
    assert_int_equal(badid->st, LV_ERR_ARG);
    assert_non_null(strstr(badid->err.msg, "vocabulary"));
    assert_int_equal(empty->st, LV_ERR_ARG);
    sched_job_wait(short_img);
    assert_int_equal(short_img->st, LV_ERR_ARG);
    assert_non_null(strstr(short_img->err.msg, "image tokens"));
    sched_job_wait(ok1);
    sched_job_wait(ok2);
    expect_same(ref, ok1, 0);
    expect_same(ref, ok2, 1);
    expect_idle(w);
    sched_free(w);
    sched_job *all[] = {ok1, ok2, ref, big, badid, empty, short_img};
    for (size_t i = 0; i < LV_ARRAY_LEN(all); i++) sched_job_release(all[i]);

    /* a job that runs into the end of its context stops with "length" */
    w = start(1, 1, 64);
    sched_job *j =
        make_job(0, "Hi", 1 << 30); /* absurd max_tokens: nothing that size is allocated */
    j->params.ignore_eos = true;
    submit(w, j);
    sched_job_wait(j);
    assert_int_equal(j->st, LV_OK);
    assert_string_equal(j->result.finish_reason, "length");
    assert_int_equal(j->n_ids + j->result.n_ids, 64 + 1);
    expect_idle(w);
    sched_free(w);
    sched_job_release(j);
}

/* The per-request rules through the worker and through gen_run (one
 * gen_state implementation): a stop string found across tokens cuts the
 * text before it, streamed text never shows it, max_tokens gives "length". */
static void test_stop_strings_and_limits(void **state) {
    (void)state;
    sched *w = start(2, 4, 0);
    sched_job *ref = make_job(1, "Describe the image.", MAX_TOKENS);
    submit(w, ref);
    sched_job_wait(ref);
    assert_int_equal(ref->st, LV_OK);
    const char *text = ref->result.text;
    size_t len = strlen(text);
    if (len < 12) {
        print_message("note: answer too short for the stop-string check: \"%s\"\n", text);
    } else {
        /* a stop string of 5 bytes from the middle: very likely across tokens */
        char stop[8];
        memcpy(stop, text + len / 2 - 2, 5);
        stop[5] = '\0';
        size_t cut = (size_t)(strstr(text, stop) - text);
        sched_job *j = make_job(1, "Describe the image.", MAX_TOKENS);
        j->params.stop[0] = "@@never@@";
        j->params.stop[1] = stop;
        j->params.n_stop = 2;
        submit(w, j);
        lv_buf streamed = {0};
        while (!sched_job_take(j, &streamed, 100)) {
        }
        assert_int_equal(j->st, LV_OK);
        assert_string_equal(j->result.finish_reason, "stop");
        assert_int_equal(j->result.text_len, cut);
        assert_memory_equal(j->result.text, text, cut);
        assert_int_equal(streamed.len, cut);
        assert_memory_equal(streamed.data, text, cut);
        lv_buf_free(&streamed);
        gen_result r;
        lv_err err;
        assert_int_equal(
            gen_run(g_m, j->ids, j->n_ids, j->images, j->n_images, &j->params, NULL, &r, &err),
            LV_OK);
        /* the same bits as the worker's run, so the same cut */
        assert_int_equal(r.text_len, cut);
        assert_memory_equal(r.text, text, cut);
        assert_string_equal(r.finish_reason, "stop");
        gen_result_free(&r);
        sched_job_release(j);
    }
    sched_job *shortj = make_job(1, "Describe the image.", 3);
    submit(w, shortj);
    sched_job_wait(shortj);
    assert_int_equal(shortj->st, LV_OK);
    assert_int_equal(shortj->result.n_ids, 3);
    assert_string_equal(shortj->result.finish_reason, "length");
    assert_memory_equal(shortj->result.ids, ref->result.ids, 3 * sizeof(int32_t));
    expect_idle(w);
    sched_free(w);
    sched_job_release(shortj);
    sched_job_release(ref);
}

/* gen_run's tokens' log-probabilities, collected by its on_token callback. */
typedef struct {
    float logprob[MAX_TOKENS];
    int n;
} lp_log;

static void log_token(void *ud, const gen_token *t) {
    lp_log *l = ud;
    if (l->n < MAX_TOKENS) l->logprob[l->n++] = t->sample->logprob;
}

/* Batched jobs give what gen_run gives each alone (one row per decode
 * step, no worker): the matmul computes a row the same for any batch size,
 * n == 1 included, so nothing is padded and the answers are the same. */
static void test_batched_equals_gen_run(void **state) {
    (void)state;
    enum { N = 4 };
    sched *w = start(N, N, 0);
    sched_job *jobs[N];
    for (int k = 0; k < N; k++) {
        jobs[k] = make_job(JOBS[k].image, JOBS[k].question, MAX_TOKENS);
        submit(w, jobs[k]);
    }
    for (int k = 0; k < N; k++) {
        sched_job *j = jobs[k];
        sched_job_wait(j);
        assert_int_equal(j->st, LV_OK);
        gen_result r;
        lv_err err;
        lp_log lp = {.n = 0};
        gen_callbacks cb = {.on_token = log_token, .ud = &lp};
        assert_int_equal(
            gen_run(g_m, j->ids, j->n_ids, j->images, j->n_images, &j->params, &cb, &r, &err),
            LV_OK);
        assert_int_equal(r.n_ids, j->result.n_ids);
        assert_memory_equal(r.ids, j->result.ids, (size_t)r.n_ids * sizeof *r.ids);
        assert_string_equal(r.text, j->result.text);
        /* same logits bit for bit, so the same log-probabilities */
        assert_int_equal(lp.n, j->n_tokens);
        for (int i = 0; i < lp.n; i++) assert_true(lp.logprob[i] == j->tokens[i].logprob);
        gen_result_free(&r);
    }
    expect_idle(w);
    sched_free(w);
    for (int k = 0; k < N; k++) sched_job_release(jobs[k]);
}

/* A new image does not stall the running streams: its encode runs a few
 * rows at a time and its prompt in chunks between decode steps, so a
 * stream keeps producing tokens while the image request is prepared (the
 * old scheduler encoded the whole image in one turn and prefilled its
 * prompt in one forward: a stream got one or two tokens in that time). And
 * the image request still answers what it answers alone (its pieces give
 * the bits of one pass). */
static void test_image_does_not_stall_streams(void **state) {
    (void)state;
    sched *w = start(2, 4, 0);
    sched_job *stream = make_job(0, "Hello, who are you?", 4000);
    stream->params.ignore_eos = true;
    sched_job *img = make_job(7, "How many crosses are in the image?", MAX_TOKENS);
    sched_job *alone = make_job(7, "How many crosses are in the image?", MAX_TOKENS);
    submit(w, stream);
    wait_tokens(stream, 20); /* decoding, its quiet step measured */
    pthread_mutex_lock(&stream->mu);
    int before = stream->n_tokens;
    pthread_mutex_unlock(&stream->mu);
    submit(w, img);
    wait_tokens(img, 1);
    pthread_mutex_lock(&stream->mu);
    int during = stream->n_tokens - before;
    bool stream_done = stream->done;
    pthread_mutex_unlock(&stream->mu);
    print_message("stream tokens while the image request was prepared: %d\n", during);
    assert_false(stream_done);
    assert_true(during >= 20);
    sched_job_cancel(stream);
    sched_job_wait(img);
    sched_job_wait(stream);
    assert_int_equal(stream->st, LV_ERR_CANCELLED);
    submit(w, alone);
    sched_job_wait(alone);
    expect_same(alone, img, 0);
    expect_idle(w);
    sched_free(w);
    sched_job_release(stream);
    sched_job_release(img);
    sched_job_release(alone);
}

/* A device fault: the cpu backend's ops with a status op that reports one
 * once g_fault is set, as a CUDA backend does after an asynchronous error. */
static atomic_int g_fault;
static lv_status faulty_status(be *b, lv_err *err) {
    (void)b;
    return atomic_load(&g_fault) ? lv_fail(err, LV_ERR_DEVICE, "injected: an illegal address")
                                 : LV_OK;
}

/* After the fault the running job ends with its message (no more tokens are
 * sampled from garbage), and so does every job submitted later. */
static void test_device_fault_fails_jobs(void **state) {
    (void)state;
    struct be_ops faulty = *g_m->backend.ops;
    faulty.status = faulty_status;
    const struct be_ops *cpu = g_m->backend.ops;
    g_m->backend.ops = &faulty; /* white-box: llava_impl.h */
    sched *w = start(2, 8, 0);
    sched_job *j = make_job(0, "Hello, who are you?", 3000);
    j->params.ignore_eos = true;
    submit(w, j);
    wait_tokens(j, 3);
    atomic_store(&g_fault, 1);
    sched_job_wait(j);
    assert_int_equal(j->st, LV_ERR_DEVICE);
    assert_non_null(strstr(j->err.msg, "injected: an illegal address"));
    assert_true(j->n_tokens < 3000);
    sched_job *late = make_job(2, "What is in the image?", MAX_TOKENS);
    submit(w, late);
    sched_job_wait(late);
    assert_int_equal(late->st, LV_ERR_DEVICE);
    assert_non_null(strstr(late->err.msg, "injected"));
    assert_int_equal(late->n_tokens, 0);
    expect_idle(w);
    sched_free(w);
    sched_job_release(j);
    sched_job_release(late);
    atomic_store(&g_fault, 0);
    g_m->backend.ops = cpu;
}

static void test_bad_config(void **state) {
    (void)state;
    sched *w;
    lv_err err;
    sched_config bad[] = {{.queue_size = 0, .parallel = 1},
                          {.queue_size = 1, .parallel = 0},
                          {.queue_size = 1, .parallel = 1, .ctx_size = -1},
                          {.queue_size = 1, .parallel = 1, .ctx_size = 1 << 30}};
    for (size_t i = 0; i < LV_ARRAY_LEN(bad); i++) {
        assert_int_equal(sched_new(g_m, &bad[i], &w, &err), LV_ERR_ARG);
        assert_null(w);
    }
    assert_non_null(strstr(err.msg, "ctx_size"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batched_equals_alone),
        cmocka_unit_test(test_cancel_frees_sequence),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_queue_full),
        cmocka_unit_test(test_stop),
        cmocka_unit_test(test_bad_jobs_fail_alone),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_device_fault_fails_jobs),
        cmocka_unit_test(test_image_does_not_stall_streams),
        cmocka_unit_test(test_stop_strings_and_limits),
        cmocka_unit_test(test_batched_equals_gen_run),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
