/*
 * worker.c - the bounded job queue and its one engine thread (worker.h).
 *
 * The queue is a ring of job pointers under one mutex. The engine thread
 * sleeps on a condition variable until a job arrives or the worker stops;
 * it runs each job with gen_run, pushing text into the job's pending buffer
 * and signalling the job's condition variable, which the connection (the
 * MHD content reader for a stream, or the handler for a plain response)
 * waits on.
 */
#include "server/worker.h"

#include "base/log.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

struct worker {
    llava *m; /* borrowed */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    wk_job **ring; /* (cap) waiting jobs, FIFO from head */
    int cap, head, n;
    bool running; /* a job is in gen_run */
    bool stopping;
    bool joined;
    bool cancel_running;
    wk_job *current; /* the running job, or NULL */
};

static double mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- jobs ------------------------------------------------------------------------------ */

wk_job *wk_job_new(void) {
    wk_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    atomic_init(&j->cancel, false);
    atomic_init(&j->refs, 1);
    return j;
}

void wk_job_release(wk_job *j) {
    if (!j || atomic_fetch_sub(&j->refs, 1) != 1) return;
    free(j->ids);
    for (int i = 0; i < j->n_images; i++) img_tensor_free(&j->images[i]);
    free(j->images);
    if (j->keep_free) j->keep_free(j->keep);
    lv_buf_free(&j->pending);
    free(j->tokens);
    gen_result_free(&j->result);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

void wk_job_cancel(wk_job *j) {
    atomic_store(&j->cancel, true);
}

void wk_job_wait(wk_job *j) {
    pthread_mutex_lock(&j->mu);
    while (!j->done) pthread_cond_wait(&j->cv, &j->mu);
    pthread_mutex_unlock(&j->mu);
}

bool wk_job_take(wk_job *j, lv_buf *out, int wait_ms) {
    pthread_mutex_lock(&j->mu);
    if (!j->done && j->pending.len == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long ns = ts.tv_nsec + (long long)wait_ms * 1000000LL;
        ts.tv_sec += (time_t)(ns / 1000000000LL);
        ts.tv_nsec = (long)(ns % 1000000000LL);
        while (!j->done && j->pending.len == 0)
            if (pthread_cond_timedwait(&j->cv, &j->mu, &ts)) break;
    }
    if (j->pending.len && lv_buf_append(out, j->pending.data, j->pending.len) == LV_OK)
        j->pending.len = 0;
    bool done = j->done && j->pending.len == 0;
    pthread_mutex_unlock(&j->mu);
    return done;
}

static void finish(wk_job *j, lv_status st) {
    pthread_mutex_lock(&j->mu);
    j->t_done_ms = mono_ms();
    j->st = st;
    j->done = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

/* ---- the engine thread ----------------------------------------------------------------- */

static void on_text(void *ud, const char *text, size_t len) {
    wk_job *j = ud;
    pthread_mutex_lock(&j->mu);
    lv_buf_append(&j->pending, text, len); /* out of memory: the delta is lost, not the job */
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static void on_token(void *ud, const gen_token *t) {
    wk_job *j = ud;
    pthread_mutex_lock(&j->mu);
    if (!j->t_first_ms) j->t_first_ms = mono_ms();
    if (j->record_tokens && t->sample) {
        if (j->n_tokens == j->cap_tokens) {
            int cap = j->cap_tokens ? 2 * j->cap_tokens : 64;
            sample_result *p = realloc(j->tokens, (size_t)cap * sizeof *p);
            if (p) {
                j->tokens = p;
                j->cap_tokens = cap;
            }
        }
        if (j->n_tokens < j->cap_tokens) j->tokens[j->n_tokens++] = *t->sample;
    }
    pthread_mutex_unlock(&j->mu);
}

static bool is_cancelled(void *ud) {
    wk_job *j = ud;
    if (atomic_load(&j->cancel)) return true;
    if (j->deadline_ms > 0 && mono_ms() > j->deadline_ms) {
        j->timed_out = true; /* read by others only after done */
        return true;
    }
    return false;
}

static void run_job(worker *w, wk_job *j) {
    gen_callbacks cb = {
        .on_token = on_token, .on_text = on_text, .cancelled = is_cancelled, .ud = j};
    double t0 = mono_ms();
    lv_status st;
    if (is_cancelled(j))
        st = lv_fail(&j->err, LV_ERR_CANCELLED, "cancelled while queued");
    else
        st = gen_run(w->m, j->ids, j->n_ids, j->images, j->n_images, &j->params, &cb, &j->result,
                     &j->err);
    if (st == LV_OK)
        LV_INFO("[%s] generated %d tokens in %.0f ms (%s)", j->rid, j->result.n_ids, mono_ms() - t0,
                j->result.finish_reason);
    else
        LV_INFO("[%s] %s: %s%s", j->rid, lv_status_str(st), j->err.msg,
                j->timed_out ? " (timeout)" : "");
    finish(j, st);
}

static void *engine_main(void *arg) {
    worker *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->stopping && w->n == 0) pthread_cond_wait(&w->cv, &w->mu);
        if (w->n == 0) break; /* stopping and nothing left */
        wk_job *j = w->ring[w->head];
        w->head = (w->head + 1) % w->cap;
        w->n--;
        if (w->stopping) wk_job_cancel(j); /* queued at shutdown: refused quickly */
        w->running = true;
        w->current = j;
        if (w->cancel_running) wk_job_cancel(j);
        pthread_mutex_unlock(&w->mu);
        run_job(w, j);
        pthread_mutex_lock(&w->mu);
        w->running = false;
        w->current = NULL;
        pthread_mutex_unlock(&w->mu);
        wk_job_release(j);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- the queue ------------------------------------------------------------------------- */

lv_status worker_new(llava *m, const wk_config *cfg, worker **out, lv_err *err) {
    *out = NULL;
    if (cfg->queue_size < 1 || cfg->parallel < 1 || cfg->ctx_size < 0)
        return lv_fail(err, LV_ERR_ARG, "worker: queue_size and parallel must be >= 1");
    int queue_size = cfg->queue_size;
    worker *w = calloc(1, sizeof *w);
    if (!w || !(w->ring = calloc((size_t)queue_size, sizeof *w->ring))) {
        free(w);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    }
    w->m = m;
    w->cap = queue_size;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, engine_main, w)) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w->ring);
        free(w);
        return lv_fail(err, LV_ERR_NOMEM, "cannot start the engine thread");
    }
    *out = w;
    return LV_OK;
}

lv_status worker_submit(worker *w, wk_job *j, lv_err *err) {
    lv_status st = LV_OK;
    pthread_mutex_lock(&w->mu);
    if (w->stopping) {
        st = lv_fail(err, LV_ERR_BUSY, "the server is shutting down");
    } else if (w->n == w->cap) {
        st = lv_fail(err, LV_ERR_BUSY, "the queue is full (%d requests waiting); retry later",
                     w->cap);
    } else {
        atomic_fetch_add(&j->refs, 1);
        j->t_submit_ms = mono_ms();
        w->ring[(w->head + w->n) % w->cap] = j;
        w->n++;
        pthread_cond_signal(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return st;
}

void worker_get_stats(worker *w, wk_stats *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&w->mu);
    out->running = w->running ? 1 : 0;
    out->waiting = w->n;
    out->queue_capacity = w->cap;
    out->parallel = 1;
    pthread_mutex_unlock(&w->mu);
}

void worker_stop(worker *w, bool cancel_running) {
    if (w->joined) return;
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    w->cancel_running = cancel_running;
    if (cancel_running && w->current) wk_job_cancel(w->current);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    w->joined = true;
}

void worker_free(worker *w) {
    if (!w) return;
    worker_stop(w, true);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->ring);
    free(w);
}
