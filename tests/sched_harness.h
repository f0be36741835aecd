/* sched_harness.h - what the scheduler-level cache tests share
 * (test_prefix_cache.c, test_image_cache.c): the demo model's folder, a job
 * run to the end, the bit-for-bit comparison of two jobs' results and a
 * job's time to first token. Header-only (static inline), as server_harness.h,
 * so each test program stays one file; include it after cmocka.h. */
#ifndef LV_TEST_SCHED_HARNESS_H
#define LV_TEST_SCHED_HARNESS_H

#include "base/log.h"
#include "engine/request.h"
#include "engine/scheduler.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* models/demo, from the tests' data folder. */
static inline const char *sh_demo_dir(void) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/../../models/demo", tu_env("LLAVA_TEST_DATA"));
    return path;
}

/* The device the cache tests load the model on: $LLAVA_TEST_DEVICE ("cuda"
 * on the GPU machine: scripts/device/run.sh caches), else the cpu. */
static inline const char *sh_device(void) {
    const char *d = getenv("LLAVA_TEST_DEVICE");
    return d && *d ? d : "cpu";
}

/* A cmocka group setup's work: the demo model loaded on sh_device() with
 * warnings only, and each of the n samples (models/demo/samples/NAME) made
 * into px[i] with its <image> count tokens[i]. -1 after printing why. */
static inline int sh_setup_demo(llava **m, const char *const *samples, img_tensor *px, int *tokens,
                                int n) {
    lv_log_set_level(LV_LOG_WARN);
    lv_err err;
    if (llava_open(sh_demo_dir(), m, &err) || llava_load(*m, sh_device(), 2, &err)) {
        fprintf(stderr, "cannot load %s: %s\n", sh_demo_dir(), err.msg);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/samples/%s", sh_demo_dir(), samples[i]);
        if (request_load_image(*m, path, &px[i], &tokens[i], NULL, NULL, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return -1;
        }
    }
    return 0;
}

/* A greedy job for a raw prompt (chat template already applied) whose one
 * <image>, when px is given, is a copy of px (px_tokens feature rows); each
 * token's logprob and 3 alternatives recorded. */
static inline sched_job *sh_job(llava *m, const char *prompt, const img_tensor *px, int px_tokens,
                                int max_tokens) {
    sched_job *j = sched_job_new();
    assert_non_null(j);
    if (px) {
        size_t n = (size_t)px->n_tiles * 3 * px->tile_h * px->tile_w * sizeof(float);
        j->images = calloc(1, sizeof *j->images);
        assert_non_null(j->images);
        j->images[0] = *px;
        j->images[0].data = malloc(n);
        assert_non_null(j->images[0].data);
        memcpy(j->images[0].data, px->data, n);
        j->n_images = 1;
    }
    lv_err err;
    size_t n_ids;
    if (request_prompt_ids(m, prompt, true, j->images, j->n_images, &j->ids, &n_ids, &err))
        fail_msg("%s", err.msg);
    if (px) assert_int_equal(llava_count_image_ids(m, j->ids, (int)n_ids), px_tokens);
    j->n_ids = (int)n_ids;
    gen_params_default(&j->params, m);
    sample_params_default(&j->params.sampling);
    j->params.sampling.n_top_logprobs = 3;
    j->params.max_tokens = max_tokens;
    j->record_tokens = true;
    return j;
}

/* Submits j to w and waits for it; a failed job fails the test. */
static inline void sh_run(sched *w, sched_job *j) {
    lv_err err;
    if (sched_submit(w, j, &err)) fail_msg("sched_submit: %s", err.msg);
    sched_job_wait(j);
    if (j->st) fail_msg("%s: %s", lv_status_str(j->st), j->err.msg);
}

/* Bit for bit: ids, text, finish reason, and every token's logprob and top logprobs. */
static inline void sh_expect_same(const sched_job *a, const sched_job *b) {
    assert_int_equal(a->result.n_ids, b->result.n_ids);
    assert_memory_equal(a->result.ids, b->result.ids, (size_t)a->result.n_ids * sizeof(int32_t));
    assert_string_equal(a->result.text, b->result.text);
    assert_string_equal(a->result.finish_reason, b->result.finish_reason);
    assert_int_equal(a->n_tokens, b->n_tokens);
    for (int i = 0; i < a->n_tokens; i++) {
        const sample_result *x = &a->tokens[i], *y = &b->tokens[i];
        assert_int_equal(x->id, y->id);
        assert_memory_equal(&x->logprob, &y->logprob, sizeof x->logprob);
        assert_int_equal(x->n_top, y->n_top);
        assert_memory_equal(x->top, y->top, (size_t)x->n_top * sizeof x->top[0]);
    }
}

/* Submit to first token, ms. */
static inline double sh_ttft_ms(const sched_job *j) {
    return j->t_first_ms - j->t_submit_ms;
}

#endif
