/* run.c - gen_run: a scheduler of one, driven on the caller's thread (run.h). */
#include "engine/run.h"

#include "engine/scheduler.h"

#include <string.h>

lv_status gen_run(llava *m, const int32_t *prompt, int n_prompt, const img_tensor *images,
                  int n_images, const gen_params *p, const gen_callbacks *cb, gen_result *out,
                  lv_err *err) {
    memset(out, 0, sizeof *out);
    if (!llava_is_loaded(m)) return lv_fail(err, LV_ERR_ARG, "the model's weights are not loaded");
    sched *s;
    /* one job on a scheduler of its own: nothing to keep for a later one */
    sched_config cfg = {.queue_size = 1, .parallel = 1, .cache_slots = -1, .image_cache_bytes = -1};
    lv_status st = sched_new(m, &cfg, &s, err);
    if (st) return st;
    sched_job *j = sched_job_new();
    if (!j) {
        sched_free(s);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    }
    j->ids = (int32_t *)prompt; /* borrowed: never written, never freed */
    j->n_ids = n_prompt;
    j->images = (img_tensor *)images;
    j->n_images = n_images;
    j->borrowed = true;
    j->params = *p;
    j->record_tokens = p->logprobs;
    j->callbacks = cb;
    if ((st = sched_submit(s, j, err)) == LV_OK) {
        while (sched_step(s)) {
        }
        st = j->st;
        if (st)
            *err = j->err;
        else {
            *out = j->result;
            memset(&j->result, 0, sizeof j->result);
        }
    }
    sched_job_release(j);
    sched_free(s);
    return st;
}
