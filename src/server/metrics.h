/*
 * metrics.h - the server's counters and histograms, and GET /metrics in the
 * Prometheus text exposition format 0.0.4.
 *
 * Counters (since start): requests by endpoint and status, prompt and
 * generated tokens. Histograms (cumulative buckets as Prometheus wants
 * them): time to first token, time per output token, end-to-end request
 * latency (seconds), prompt and generated tokens per request, each from a
 * finished job (its counts and timing fields, engine/scheduler.h:
 * t_submit_ms, t_first_ms, t_done_ms). Gauges are read at scrape time by the
 * caller (sched_get_stats, /proc/self/statm, llava_memory_info) and passed to
 * metrics_render; the GPU memory gauges appear only when the device tells.
 *
 * Names follow Prometheus conventions (vLLM's are similar): a "llava_"
 * prefix, _total for counters, _seconds / _bytes units, a model_name label
 * (and a replica label with --replica-id) on every llava_* sample, and the standard
 * process_resident_memory_bytes (unlabelled). docs/METRICS.md lists each beside vLLM's and
 * llama.cpp's equivalent.
 *
 * Thread-safe: every call may come from any connection thread.
 */
#ifndef LV_SERVER_METRICS_H
#define LV_SERVER_METRICS_H

#include "engine/governor.h"
#include "engine/scheduler.h"

#include <stdint.h>

typedef struct metrics metrics;

/* Metrics of the model served as model_name (the name clients see: every
 * llava_* sample is labelled model_name="..."), by the replica named replica
 * (--replica-id: every llava_* sample is labelled replica="..." after it;
 * NULL: no such label). NULL when out of memory. */
metrics *metrics_new(const char *model_name, const char *replica);
void metrics_free(metrics *m); /* NULL: no-op */

/* One answered request. endpoint must be a string that lives as long as m
 * (a route path, or "other"). */
void metrics_request(metrics *m, const char *endpoint, int status);

/* One finished generation (a job that produced tokens): its prompt and
 * generated token counts and the timing fields (CLOCK_MONOTONIC ms; 0 =
 * unknown, then that histogram is skipped). */
void metrics_generation(metrics *m, int prompt_tokens, int generated_tokens, double t_submit_ms,
                        double t_first_ms, double t_done_ms);

/* Gauges sampled by the caller at scrape time. */
typedef struct {
    bool ready;        /* model loaded (ws valid) */
    sched_stats ws;    /* scheduler figures */
    int64_t rss_bytes; /* < 0: unknown */
    double uptime_s;
    bool has_gpu_memory;     /* the device told its memory (llava_memory_info); else
                                neither GPU gauge is written */
    int64_t gpu_used_bytes;  /* in use, by every process */
    int64_t gpu_total_bytes; /* in all */
    mg_stats mem;            /* the memory governor (zero: none) */
} metrics_gauges;

/* The whole exposition text (heap, caller frees), or NULL when out of memory. */
char *metrics_render(metrics *m, const metrics_gauges *g);

#endif
