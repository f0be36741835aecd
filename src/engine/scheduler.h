/*
 * worker.h - the engine side of the server: a bounded queue of jobs feeding
 * one engine thread that runs up to `parallel` of them at once with
 * continuous batching (worker.c): a new job joins the running batch between
 * decode steps, each decode step is one forward over every running job,
 * and a job that ends (or is cancelled) frees its sequence at once. A
 * job's greedy output does not depend on what runs beside it.
 *
 * The boundary is the job: the HTTP layer fills one (prompt ids, image
 * tensors, gen_params), submits it, then either waits for it to finish or
 * drains its text as it streams.
 *
 * A job is shared by the connection and the engine thread, so it is
 * reference counted: wk_job_new gives the caller one reference,
 * worker_submit takes another, and whoever drops the last frees it.
 * Cancellation (client gone, timeout, shutdown) is a flag the engine
 * polls before each step; the job then ends with LV_ERR_CANCELLED.
 */
#ifndef LV_SERVER_WORKER_H
#define LV_SERVER_WORKER_H

#include "base/buf.h"
#include "base/common.h"
#include "engine/generate.h"
#include "image/image.h"
#include "model/llava.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

typedef struct wk_job {
    /* Input: set before worker_submit, then read-only; owned by the job. */
    int32_t *ids; /* (n_ids) prompt ids, <image> ids expanded (heap) */
    int n_ids;
    img_tensor *images; /* (n_images) in prompt order (heap; each freed with img_tensor_free) */
    int n_images;
    gen_params params;  /* may borrow from keep */
    double deadline_ms; /* CLOCK_MONOTONIC ms after which it is cancelled; 0 = none */
    void *keep;         /* what params borrows from; freed with keep_free when the job goes */
    void (*keep_free)(void *keep);
    char rid[32];       /* request id for log lines */
    bool record_tokens; /* fill tokens[] below (logprobs); sets params.logprobs */

    /* Output: under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    lv_buf pending;    /* text generated and not yet taken (streaming) */
    bool done;         /* finished: st, err, result are final */
    bool timed_out;    /* cancelled because deadline_ms passed */
    lv_status st;      /* LV_OK, or why it failed (LV_ERR_CANCELLED when cancelled) */
    lv_err err;        /* message when st != LV_OK */
    gen_result result; /* on LV_OK: ids, full text, finish_reason, timings */
    /* Per generated token (EOS included), appended as each is chosen when
     * record_tokens (logprobs asked): id, logprob and top_logprobs
     * (params.sampling.n_top_logprobs entries). Readers keep their own
     * cursor; n_tokens only grows. */
    sample_result *tokens;
    int n_tokens, cap_tokens;
    /* Timing (CLOCK_MONOTONIC ms): submitted, first token chosen, done; 0 = not yet. */
    double t_submit_ms, t_first_ms, t_done_ms;

    atomic_bool cancel; /* set by wk_job_cancel; polled by the engine */
    atomic_int refs;
} wk_job;

/* A zeroed job with one reference (the caller's); NULL when out of memory. */
wk_job *wk_job_new(void);
/* Drops a reference; the last one frees the inputs, outputs and keep. NULL: no-op. */
void wk_job_release(wk_job *j);
/* Asks the engine to stop the job at its next token (or not start it). */
void wk_job_cancel(wk_job *j);
/* Blocks until j->done. */
void wk_job_wait(wk_job *j);
/*
 * Moves the pending text into out (appended) and returns whether the job is
 * done; waits up to wait_ms for text or the end when there is none yet.
 * Once it returns true with nothing appended, the stream is over.
 */
bool wk_job_take(wk_job *j, lv_buf *out, int wait_ms);

typedef struct worker worker;

typedef struct {
    int queue_size; /* waiting jobs at most (>= 1) */
    int parallel;   /* sequences decoded together at most (>= 1) */
    int ctx_size;   /* KV positions per sequence at most (0: the model's context, capped so
                       that parallel sequences take at most 8 GiB of KV cache; see worker.c) */
} wk_config;

/* Figures for /health and /metrics. */
typedef struct {
    int running;           /* jobs holding a sequence */
    int waiting;           /* jobs queued */
    int queue_capacity;    /* queue_size */
    int parallel;          /* sequences at most */
    int64_t kv_used;       /* KV positions filled, all running sequences */
    int64_t kv_capacity;   /* KV positions that may exist (parallel x ctx) */
    size_t kv_bytes_used;  /* bytes of kv_used */
    size_t kv_bytes_total; /* bytes of kv_capacity: the most KV cache the worker allocates */
    /* Added with the batching scheduler: */
    size_t kv_bytes_allocated; /* KV cache allocated now (each running sequence is sized to
                                  prompt + max_tokens, at most ctx) */
    int ctx_size;              /* ctx: positions per sequence at most */
} wk_stats;

/* Starts the engine on m (borrowed; loaded; outlives the worker). Caller
 * frees with worker_free. LV_ERR_ARG for a bad config (ctx_size beyond the
 * model's context included), LV_ERR_NOMEM.
 * A job whose prompt exceeds ctx fails alone with LV_ERR_ARG. */
lv_status worker_new(llava *m, const wk_config *cfg, worker **out, lv_err *err);

/*
 * Queues j (takes a reference). LV_ERR_BUSY when the queue is full or the
 * worker is shutting down (the message says which); j is untouched then.
 */
lv_status worker_submit(worker *w, wk_job *j, lv_err *err);

/* Figures now (a consistent snapshot). */
void worker_get_stats(worker *w, wk_stats *out);

/* Stops taking jobs (worker_submit answers LV_ERR_BUSY from now on),
 * cancels the queued ones, lets the running ones finish (or cancels them if
 * cancel_running), and joins the engine thread. Every job submitted is done
 * when it returns. Idempotent. */
void worker_stop(worker *w, bool cancel_running);

/* worker_stop(w, true) if not stopped yet, then frees. NULL: no-op. */
void worker_free(worker *w);

#endif
