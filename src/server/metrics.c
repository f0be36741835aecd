/*
 * metrics.c - counters, histograms and their Prometheus text (metrics.h).
 *
 * One mutex guards everything: updates are a handful of additions per
 * request, far below the cost of the request itself. Every llava_* sample
 * carries the label model_name="<served name>" first (as vLLM's carry
 * model_name), then replica="<--replica-id>" when one is given, so one
 * dashboard can tell several servers' models, and a model's replicas, apart.
 */
#include "server/metrics.h"

#include "base/buf.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SERIES  128 /* (endpoint, status) pairs kept; more share one "other" row */
#define MAX_BUCKETS 16
#define LABEL_MAX   384 /* model_name="..." and replica="...", escaped; longer values are cut */

typedef struct {
    const char *name, *help;
    int n;                       /* finite buckets */
    double le[MAX_BUCKETS];      /* upper bounds (seconds, or tokens), increasing */
    uint64_t count[MAX_BUCKETS]; /* observations <= le[i] (not cumulative; summed on render) */
    uint64_t total;              /* all observations (the +Inf bucket) */
    double sum;
} histogram;

typedef struct {
    const char *endpoint;
    int status;
    uint64_t n;
} series;

struct metrics {
    pthread_mutex_t mu;
    char
        label[LABEL_MAX]; /* model_name="..."[,replica="..."] (escaped), before every other label */
    series req[MAX_SERIES];
    int n_req;
    uint64_t prompt_tokens, generated_tokens, generations;
    histogram ttft, tpot, e2e;
    histogram prompt_len, gen_len; /* tokens per finished generation */
};

/* name="value" appended to out at *n, the value escaped as the exposition
 * format wants label values (backslash, double quote, newline); cut short
 * rather than overflow (room is left for the closing quote). */
static void put_label(char *out, size_t *n, const char *name, const char *value) {
    *n += (size_t)snprintf(out + *n, LABEL_MAX - *n, "%s%s=\"", *n ? "," : "", name);
    for (const char *p = value ? value : ""; *p && *n + 4 < LABEL_MAX; p++) {
        if (*p == '\\' || *p == '"') out[(*n)++] = '\\';
        if (*p == '\n') {
            out[(*n)++] = '\\';
            out[(*n)++] = 'n';
        } else {
            out[(*n)++] = *p;
        }
    }
    out[(*n)++] = '"';
    out[*n] = '\0';
}

static void hist_init(histogram *h, const char *name, const char *help, const double *le, int n) {
    h->name = name;
    h->help = help;
    h->n = n;
    memcpy(h->le, le, (size_t)n * sizeof *le);
}

static void hist_observe(histogram *h, double v) {
    for (int i = 0; i < h->n; i++)
        if (v <= h->le[i]) {
            h->count[i]++;
            break;
        }
    h->total++;
    h->sum += v;
}

metrics *metrics_new(const char *model_name, const char *replica) {
    metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    pthread_mutex_init(&m->mu, NULL);
    size_t n = 0;
    put_label(m->label, &n, "model_name", model_name);
    if (replica) put_label(m->label, &n, "replica", replica);
    static const double ttft[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
    static const double tpot[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
    static const double e2e[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
    hist_init(&m->ttft, "llava_time_to_first_token_seconds",
              "Time from submission to the first generated token.", ttft, (int)LV_ARRAY_LEN(ttft));
    hist_init(&m->tpot, "llava_time_per_output_token_seconds",
              "Mean time per generated token after the first, per request.", tpot,
              (int)LV_ARRAY_LEN(tpot));
    hist_init(&m->e2e, "llava_e2e_request_latency_seconds",
              "Time from submission to the end of generation.", e2e, (int)LV_ARRAY_LEN(e2e));
    static const double len[] = {1,   2,    5,    10,   20,    50,    100,   200,
                                 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000};
    hist_init(&m->prompt_len, "llava_request_prompt_tokens",
              "Prompt tokens (images included) per finished generation.", len,
              (int)LV_ARRAY_LEN(len));
    hist_init(&m->gen_len, "llava_request_generation_tokens",
              "Tokens generated per finished generation.", len, (int)LV_ARRAY_LEN(len));
    return m;
}

void metrics_free(metrics *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void metrics_request(metrics *m, const char *endpoint, int status) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    int i = 0;
    while (i < m->n_req && !(m->req[i].status == status && !strcmp(m->req[i].endpoint, endpoint)))
        i++;
    if (i == m->n_req && m->n_req < MAX_SERIES) m->req[m->n_req++] = (series){endpoint, status, 0};
    if (i < m->n_req) m->req[i].n++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_generation(metrics *m, int prompt_tokens, int generated_tokens, double t_submit_ms,
                        double t_first_ms, double t_done_ms) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->generations++;
    m->prompt_tokens += prompt_tokens > 0 ? (uint64_t)prompt_tokens : 0;
    m->generated_tokens += generated_tokens > 0 ? (uint64_t)generated_tokens : 0;
    hist_observe(&m->prompt_len, prompt_tokens > 0 ? prompt_tokens : 0);
    hist_observe(&m->gen_len, generated_tokens > 0 ? generated_tokens : 0);
    if (t_submit_ms > 0 && t_first_ms >= t_submit_ms)
        hist_observe(&m->ttft, (t_first_ms - t_submit_ms) / 1e3);
    if (t_first_ms > 0 && t_done_ms >= t_first_ms && generated_tokens > 1)
        hist_observe(&m->tpot, (t_done_ms - t_first_ms) / 1e3 / (generated_tokens - 1));
    if (t_submit_ms > 0 && t_done_ms >= t_submit_ms)
        hist_observe(&m->e2e, (t_done_ms - t_submit_ms) / 1e3);
    pthread_mutex_unlock(&m->mu);
}

/* ---- rendering ----------------------------------------------------------------------------- */

static void put(lv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(lv_buf *b, const char *fmt, ...) {
    char line[1024]; /* the longest: requests_total's labels, LABEL_MAX of them the label */
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0) lv_buf_append(b, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

static void head(lv_buf *b, const char *name, const char *type, const char *help) {
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A gauge or counter of the served model: name{model_name="..."} v. */
static void gauge(lv_buf *b, const metrics *m, const char *name, const char *help, double v) {
    head(b, name, "gauge", help);
    put(b, "%s{%s} %.17g\n", name, m->label, v);
}

static void counter(lv_buf *b, const metrics *m, const char *name, const char *help, uint64_t v) {
    head(b, name, "counter", help);
    put(b, "%s{%s} %llu\n", name, m->label, (unsigned long long)v);
}

static void hist_render(lv_buf *b, const metrics *m, const histogram *h) {
    head(b, h->name, "histogram", h->help);
    uint64_t cum = 0;
    for (int i = 0; i < h->n; i++) {
        cum += h->count[i];
        put(b, "%s_bucket{%s,le=\"%g\"} %llu\n", h->name, m->label, h->le[i],
            (unsigned long long)cum);
    }
    put(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", h->name, m->label, (unsigned long long)h->total);
    put(b, "%s_sum{%s} %.17g\n", h->name, m->label, h->sum);
    put(b, "%s_count{%s} %llu\n", h->name, m->label, (unsigned long long)h->total);
}

char *metrics_render(metrics *m, const metrics_gauges *g) {
    lv_buf b = {0};
    pthread_mutex_lock(&m->mu);
    head(&b, "llava_requests_total", "counter", "HTTP requests answered, by endpoint and status.");
    for (int i = 0; i < m->n_req; i++)
        put(&b, "llava_requests_total{%s,endpoint=\"%s\",status=\"%d\"} %llu\n", m->label,
            m->req[i].endpoint, m->req[i].status, (unsigned long long)m->req[i].n);
    counter(&b, m, "llava_prompt_tokens_total", "Prompt tokens of finished generations.",
            m->prompt_tokens);
    counter(&b, m, "llava_generation_tokens_total", "Tokens generated by finished generations.",
            m->generated_tokens);
    counter(&b, m, "llava_generations_total", "Generations (choices) finished.", m->generations);
    hist_render(&b, m, &m->ttft);
    hist_render(&b, m, &m->tpot);
    hist_render(&b, m, &m->e2e);
    hist_render(&b, m, &m->prompt_len);
    hist_render(&b, m, &m->gen_len);
    pthread_mutex_unlock(&m->mu);

    const sched_stats *w = &g->ws;
    bool r = g->ready;
    gauge(&b, m, "llava_model_ready", "1 once the model is loaded, 0 while loading.", r);
    gauge(&b, m, "llava_requests_running", "Sequences being decoded.", r ? w->running : 0);
    gauge(&b, m, "llava_requests_waiting", "Jobs queued, not started.", r ? w->waiting : 0);
    gauge(&b, m, "llava_queue_capacity", "Jobs the queue holds at most (429 above).",
          r ? w->queue_capacity : 0);
    gauge(&b, m, "llava_parallel_sequences", "Sequences decoded together at most.",
          r ? w->parallel : 0);
    gauge(&b, m, "llava_kv_cache_used_positions", "KV positions filled, all running sequences.",
          r ? (double)w->kv_used : 0);
    gauge(&b, m, "llava_kv_cache_capacity_positions", "KV positions that exist.",
          r ? (double)w->kv_capacity : 0);
    gauge(&b, m, "llava_kv_cache_usage_ratio", "kv_cache_used_positions / capacity (0..1).",
          r && w->kv_capacity > 0 ? (double)w->kv_used / (double)w->kv_capacity : 0);
    gauge(&b, m, "llava_kv_cache_used_bytes", "Bytes of the filled KV positions.",
          r ? (double)w->kv_bytes_used : 0);
    gauge(&b, m, "llava_kv_cache_total_bytes", "Bytes of KV cache allocated.",
          r ? (double)w->kv_bytes_total : 0);
    counter(&b, m, "llava_prefix_cache_hits_total",
            "Jobs whose prompt prefix came from the prefix cache.", r ? w->cache_hits : 0);
    counter(&b, m, "llava_prefix_cache_tokens_total",
            "Prompt tokens taken from the prefix cache (not prefilled).", r ? w->cache_tokens : 0);
    gauge(&b, m, "llava_prefix_cache_sequences", "Sequences kept by the prefix cache.",
          r ? w->cache_sequences : 0);
    gauge(&b, m, "llava_prefix_cache_bytes", "Bytes of KV cache held by the kept sequences.",
          r ? (double)w->kv_bytes_retained : 0);
    counter(&b, m, "llava_image_cache_hits_total",
            "Images whose feature rows came from the image cache (not encoded).",
            r ? w->image_cache_hits : 0);
    counter(&b, m, "llava_image_cache_misses_total",
            "Images looked up in the image cache and encoded.", r ? w->image_cache_misses : 0);
    counter(&b, m, "llava_image_cache_evictions_total",
            "Images evicted from the image cache to stay within its budget.",
            r ? w->image_cache_evictions : 0);
    gauge(&b, m, "llava_image_cache_images", "Images kept by the image cache.",
          r ? w->image_cache_images : 0);
    gauge(&b, m, "llava_image_cache_bytes", "Bytes of feature rows held by the image cache.",
          r ? (double)w->image_cache_bytes : 0);
    gauge(&b, m, "llava_image_cache_budget_bytes", "Bytes the image cache may hold (0: off).",
          r ? (double)w->image_cache_budget : 0);
    counter(&b, m, "llava_prompt_shares_total",
            "Choices (n > 1) that copied their prompt's KV from the first instead of prefilling.",
            r ? w->prompt_shares : 0);
    counter(&b, m, "llava_prefix_cache_evictions_total",
            "Kept sequences evicted (room, budget or memory pressure).",
            r ? w->cache_evictions : 0);
    const mg_stats *mg = &g->mem;
    gauge(&b, m, "llava_memory_budget_bytes", "The memory governor's limit (0: none).",
          (double)mg->limit);
    gauge(&b, m, "llava_memory_used_bytes",
          "Memory in use as the governor counts it: the larger of accounted and measured.",
          (double)mg->use);
    gauge(&b, m, "llava_memory_accounted_bytes",
          "Fixed (weights, scratch) + requests + caches, as reserved.", (double)mg->accounted);
    gauge(&b, m, "llava_memory_requests_bytes", "Reserved by requests from arrival to answer.",
          (double)mg->pools[MG_REQUESTS]);
    gauge(&b, m, "llava_memory_pressure",
          "0 normal, 1 caches evicted (>= 80% of the budget), 2 new requests refused (>= 95%).",
          (double)mg->level);
    counter(&b, m, "llava_memory_refused_total", "Reservations refused for lack of memory (503).",
            mg->refused);
    counter(&b, m, "llava_memory_pressure_evictions_total",
            "Cache entries evicted because memory was above the evict line.",
            mg->pressure_evictions);
    /* the standard process metric, as every exporter writes it: no label */
    head(&b, "process_resident_memory_bytes", "gauge", "Resident memory of the server process.");
    put(&b, "process_resident_memory_bytes %.17g\n", g->rss_bytes >= 0 ? (double)g->rss_bytes : 0);
    gauge(&b, m, "llava_uptime_seconds", "Seconds since the server started.", g->uptime_s);
    if (g->has_gpu_memory) {
        gauge(&b, m, "llava_gpu_memory_used_bytes", "Device memory in use, by every process.",
              (double)g->gpu_used_bytes);
        gauge(&b, m, "llava_gpu_memory_total_bytes", "Device memory in all.",
              (double)g->gpu_total_bytes);
    }
    if (lv_buf_append(&b, "", 1)) { /* NUL-terminate */
        lv_buf_free(&b);
        return NULL;
    }
    return b.data;
}
