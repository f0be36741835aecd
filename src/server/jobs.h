/*
 * jobs.h - an OpenAI request made into the scheduler's jobs, and finished jobs
 * made into the answer (private to server/: http.c and stream.c use it).
 *
 * One request becomes one job per choice: n per prompt (/v1/completions may
 * carry several prompts), choice k sampled with seed + k % n. Everything
 * before the forward passes happens here, on the connection's thread: the
 * body parsed (server/oai.h), images fetched (server/media.h) and made into
 * tensors (engine/request.h, as llava-cli does), the chat template, the
 * prompt ids, the sampling parameters. The jobs share the parsed request
 * through a reference count (their stop strings point into it); the group
 * holds one reference of its own, dropped by jobs_release.
 *
 * Results: jobs_answer builds the plain (non-streamed) body; stream.h
 * builds the SSE events from the same parts (jobs_usage, jobs_error,
 * jobs_logprobs).
 */
#ifndef LV_SERVER_JOBS_H
#define LV_SERVER_JOBS_H

#include "base/common.h"
#include "engine/sample.h"
#include "image/image.h"
#include "model/llava.h"
#include "engine/structured.h"
#include "server/image_memo.h"
#include "server/media.h"
#include "server/metrics.h"
#include "server/oai.h"
#include "engine/scheduler.h"

#include <stddef.h>

/* What making and answering jobs needs from the server: all borrowed from
 * it, valid while it runs. m and w are set once the model is loaded. */
typedef struct {
    const llava *m;            /* the loaded model */
    sched *w;                  /* its sched */
    const oai_limits *lim;     /* request limits (body, n, images, ...) */
    const media_policy *media; /* what an image_url may fetch */
    const img_options *image;  /* the config's image_processing; NULL = the reference */
    int timeout_s;             /* per request, queue wait included; 0 = none */
    const char *model_name;    /* the name responses show */
    metrics *metrics;          /* generation counts and latencies */
    mg_governor *gov;          /* the memory budget requests reserve from; NULL: none */
    image_memo *memo;          /* tensors of images sent recently (resent histories); NULL: none */
    const structured_vocab *vocab; /* the model's tokens as grammar tries (response_format);
                                      NULL: structured outputs unavailable */
} jobs_ctx;

/* The parsed request and its reference count (jobs.c). */
typedef struct jobs_request jobs_request;

/* The jobs of one request: choice k is jobs[k] (prompt k / n, sample k % n). */
typedef struct {
    jobs_request *q;      /* the shared request (the group's reference) */
    const oai_request *r; /* q's parsed request */
    sched_job **jobs;     /* (n_jobs) one reference each */
    int n_jobs;
    int n;            /* choices per prompt */
    mg_governor *gov; /* where mem is reserved */
    int64_t mem;      /* bytes reserved for the request (MG_REQUESTS), given back by jobs_release */
} job_group;

/*
 * Parses body (a /v1/chat/completions body for OAI_CHAT, /v1/completions
 * for OAI_COMPLETION) and makes its jobs into *g, ready for jobs_submit:
 * images loaded, prompts tokenized, parameters set. rid names the request
 * in log lines (choice k of several is "rid.k"). On failure *e is the
 * client's error and nothing is held; on success free g with jobs_release.
 * The request's memory is reserved with ctx->gov first (503 when it does
 * not fit: code "memory_pressure").
 */
lv_status jobs_make(const jobs_ctx *ctx, oai_kind kind, const char *body, size_t len,
                    const char *rid, job_group *g, oai_error *e);

/* Queues every job of g with the scheduler. On failure (LV_ERR_BUSY: the
 * queue is full) g is released, the jobs already queued cancelled, and *e
 * is the 429 to answer. */
lv_status jobs_submit(const jobs_ctx *ctx, job_group *g, oai_error *e);

/* Cancels the jobs (the scheduler frees their sequences at its next step) and
 * drops the group's references; g is zeroed. A zeroed group is a no-op. */
void jobs_release(job_group *g);

/*
 * The plain answer of a group whose jobs are all done: chat.completion or
 * text_completion JSON (heap, caller frees), each job's counts noted in
 * the metrics. NULL when a job failed (*e is its error) or out of memory
 * (*e is the 503).
 */
char *jobs_answer(const jobs_ctx *ctx, const job_group *g, oai_error *e);

/* Notes a finished job's counts and latencies in the metrics (failed ones
 * are not counted). */
void jobs_note(const jobs_ctx *ctx, const sched_job *j);

/* The error a finished, failed job answers with (a timeout says so). */
void jobs_error(const jobs_ctx *ctx, const sched_job *j, oai_error *e);

/* Usage and timings over the group: each prompt counted once. */
void jobs_usage(const job_group *g, oai_usage *u, oai_timings *t);

/*
 * Logprob entries of recorded tokens toks[from, to), EOS left out, up to
 * limit_bytes of text (past it a stop string cut the answer). Each token's
 * text is its vocabulary piece as the decoder spells it: "▁" → " ",
 * "<0xNN>" → the byte NN. *n_out entries; their texts live in *texts.
 * Caller frees both (free()); NULL when out of memory.
 */
oai_token_logprob *jobs_logprobs(const jobs_ctx *ctx, const sample_result *toks, int from, int to,
                                 size_t limit_bytes, char **texts, int *n_out);

/* A copy (heap, caller frees) of the tokens j recorded since *cursor, read
 * under the job's lock; *n of them, *cursor advanced past them. NULL with
 * *n 0 when there are none or out of memory. */
sample_result *jobs_new_tokens(sched_job *j, int *cursor, int *n);

#endif
