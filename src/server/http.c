/*
 * http.c - the libmicrohttpd daemon, routing and the OpenAI routes (http.h).
 *
 * Threads: MHD runs one thread per connection (MHD_USE_THREAD_PER_CONNECTION),
 * so a handler may block: a plain completion waits for its jobs, and a
 * stream's content reader waits for the next text. Parsing, image fetching,
 * decoding, preprocessing and tokenizing happen on the connection's thread;
 * only the model's forward passes go through the worker (server/worker.h),
 * which batches the sequences of all connections.
 *
 * One request becomes one job per choice: n per prompt (/v1/completions may
 * carry several prompts), choice k sampled with seed + k % n. The jobs share
 * the parsed request through a reference count (their stop strings point
 * into it). A stream interleaves its choices' events; a client that goes
 * away cancels every job of its request, and the worker frees their
 * sequences at its next step.
 *
 * A request's life: the access handler is called once with the headers
 * (a conn is made, the route found), then once per body chunk (collected up
 * to max_body, the rest discarded and answered 413), then once more with no
 * data: the route runs and queues exactly one response. Errors become the
 * OpenAI error body through oai_fail / oai_error_json, whose oai_status_for
 * is the only lv_status → HTTP mapping. Every answered request is one log
 * line ("[req-N] METHOD path status ms") and one count in /metrics.
 */
#include "server/http.h"

#include "base/clock.h"
#include "base/log.h"
#include "engine/request.h"
#include "server/media.h"
#include "server/metrics.h"
#include "server/oai.h"
#include "text/chat_template.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_LOADING, ST_READY };

struct http_server {
    http_config cfg;
    struct MHD_Daemon *d;
    int port;
    atomic_int state;   /* ST_LOADING until http_set_ready */
    llava *m;           /* owned once ready */
    worker *w;          /* owned once ready */
    double t0_ms;       /* start, for uptime */
    int64_t created;    /* unix seconds, for /v1/models */
    atomic_ullong next; /* request counter */
    media_policy media;
    oai_limits lim;
    metrics *metrics;
};

/* One HTTP request on a connection. */
typedef struct {
    const struct route *route;
    int early;    /* status decided from the headers (401, 404, 405), 0 = none */
    lv_buf body;  /* collected body, up to max_body */
    bool too_big; /* the body went over max_body */
    char rid[32]; /* "req-N" */
    double t0_ms;
    const char *method, *url; /* borrowed from MHD for the request's life */
} conn;

typedef enum MHD_Result (*route_fn)(http_server *s, struct MHD_Connection *c, conn *cx);

typedef struct route {
    const char *method, *path;
    route_fn fn;
    bool auth; /* needs the API key (when one is set) */
} route;

/* ---- responses --------------------------------------------------------------------------
 * Every response goes through send_body: CORS and X-Request-Id headers, one
 * log line. */

static bool origin_allowed(const http_server *s, const char *origin) {
    const char *list = s->cfg.allowed_origins;
    if (!list || !origin) return false;
    size_t n = strlen(origin);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        while (len && *p == ' ') p++, len--;
        while (len && p[len - 1] == ' ') len--;
        if ((len == 1 && *p == '*') || (len == n && !strncmp(p, origin, n))) return true;
        if (!e) break;
        p = e + 1;
    }
    return false;
}

static void add_common_headers(http_server *s, struct MHD_Connection *c, conn *cx,
                               struct MHD_Response *r) {
    MHD_add_response_header(r, "X-Request-Id", cx->rid);
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    if (origin_allowed(s, origin)) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", origin);
        MHD_add_response_header(r, "Vary", "Origin");
    }
}

/* The one line per answered request, and its count in /metrics. */
static void log_request(http_server *s, const conn *cx, int status) {
    LV_INFO("[%s] %s %s %d %.1f ms", cx->rid, cx->method, cx->url, status, lv_now_ms() - cx->t0_ms);
    metrics_request(s->metrics, cx->route ? cx->route->path : "other", status);
}

/* Queues body (heap, taken; NULL = out of memory → 503) with status. */
static enum MHD_Result send_body(http_server *s, struct MHD_Connection *c, conn *cx, int status,
                                 char *body, const char *type) {
    static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":"
                              "\"unavailable_error\",\"param\":null,\"code\":null}}";
    struct MHD_Response *r;
    if (body) {
        r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    } else {
        status = 503;
        type = "application/json";
        r = MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
    }
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    if (status == 429) MHD_add_response_header(r, "Retry-After", "1");
    add_common_headers(s, c, cx, r);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    log_request(s, cx, status);
    return ret;
}

static enum MHD_Result send_json(http_server *s, struct MHD_Connection *c, conn *cx, int status,
                                 char *body) {
    return send_body(s, c, cx, status, body, "application/json");
}

static enum MHD_Result send_error(http_server *s, struct MHD_Connection *c, conn *cx,
                                  const oai_error *e) {
    if (e->status == 499) { /* the client is gone: nothing to send */
        log_request(s, cx, 499);
        return MHD_NO;
    }
    return send_json(s, c, cx, e->status, oai_error_json(e));
}

/* An error from a status and a message (lv_err text or a literal). */
static enum MHD_Result fail(http_server *s, struct MHD_Connection *c, conn *cx, lv_status st,
                            unsigned hints, const char *param, const char *code, const char *msg) {
    oai_error e;
    oai_fail(&e, st, hints, param, code, "%s", msg);
    return send_error(s, c, cx, &e);
}

static char *dump(json_t *o) {
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

/* ---- public routes --------------------------------------------------------------------- */

static int64_t rss_bytes(void) {
    long pages_total, pages_rss;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    int n = fscanf(f, "%ld %ld", &pages_total, &pages_rss);
    fclose(f);
    return n == 2 ? (int64_t)pages_rss * sysconf(_SC_PAGESIZE) : -1;
}

static enum MHD_Result route_health(http_server *s, struct MHD_Connection *c, conn *cx) {
    if (atomic_load(&s->state) != ST_READY)
        return fail(s, c, cx, LV_OK, OAI_HINT_LOADING, NULL, "model_loading",
                    "the model is loading; retry shortly");
    wk_stats ws;
    worker_get_stats(s->w, &ws);
    oai_health h = {.model = s->cfg.model_name,
                    .uptime_s = (lv_now_ms() - s->t0_ms) / 1e3,
                    .rss_bytes = rss_bytes(),
                    .kv_bytes = (int64_t)ws.kv_bytes_used,
                    .kv_bytes_total = (int64_t)ws.kv_bytes_total,
                    .kv_used = ws.kv_used,
                    .kv_capacity = ws.kv_capacity,
                    .running = ws.running,
                    .waiting = ws.waiting,
                    .queue_capacity = ws.queue_capacity,
                    .parallel = ws.parallel};
    return send_json(s, c, cx, 200, oai_health_json(&h));
}

/* Prometheus text; public like /health (scrapers rarely carry keys). */
static enum MHD_Result route_metrics(http_server *s, struct MHD_Connection *c, conn *cx) {
    metrics_gauges g = {.ready = atomic_load(&s->state) == ST_READY,
                        .rss_bytes = rss_bytes(),
                        .uptime_s = (lv_now_ms() - s->t0_ms) / 1e3};
    if (g.ready) worker_get_stats(s->w, &g.ws);
    return send_body(s, c, cx, 200, metrics_render(s->metrics, &g),
                     "text/plain; version=0.0.4; charset=utf-8");
}

static enum MHD_Result route_models(http_server *s, struct MHD_Connection *c, conn *cx) {
    const char *ids[1] = {s->cfg.model_name};
    return send_json(s, c, cx, 200, oai_models_json(ids, 1, s->created, "llava"));
}

/* ---- tokenize / detokenize (llama.cpp bodies) ------------------------------------------ */

static json_t *parse_object(conn *cx, oai_error *e) {
    json_error_t je;
    json_t *o = json_loadb(cx->body.data ? cx->body.data : "", cx->body.len, 0, &je);
    if (!o) {
        oai_fail(e, LV_ERR_ARG, 0, NULL, "invalid_json", "the body is not valid JSON: %s (at %d)",
                 je.text, je.position);
    } else if (!json_is_object(o)) {
        oai_fail(e, LV_ERR_ARG, 0, NULL, "invalid_type", "the body must be a JSON object");
        json_decref(o);
        o = NULL;
    }
    return o;
}

static enum MHD_Result route_tokenize(http_server *s, struct MHD_Connection *c, conn *cx) {
    oai_error e;
    json_t *o = parse_object(cx, &e);
    if (!o) return send_error(s, c, cx, &e);
    json_t *content = json_object_get(o, "content"), *special = json_object_get(o, "add_special");
    enum MHD_Result ret;
    if (!json_is_string(content) || (special && !json_is_boolean(special))) {
        ret = fail(s, c, cx, LV_ERR_ARG, 0, json_is_string(content) ? "add_special" : "content",
                   "invalid_type", "'content' must be a string and 'add_special' a boolean");
        json_decref(o);
        return ret;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    lv_err err = {{0}};
    lv_status st =
        tok_encode(llava_tokenizer(s->m), json_string_value(content), json_string_length(content),
                   special && json_is_true(special), &ids, &n, &err);
    json_decref(o);
    if (st) return fail(s, c, cx, st, 0, "content", NULL, err.msg);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(arr, json_integer(ids[i]));
    free(ids);
    json_t *out = json_object();
    json_object_set_new(out, "tokens", arr);
    return send_json(s, c, cx, 200, dump(out));
}

static enum MHD_Result route_detokenize(http_server *s, struct MHD_Connection *c, conn *cx) {
    oai_error e;
    json_t *o = parse_object(cx, &e);
    if (!o) return send_error(s, c, cx, &e);
    json_t *arr = json_object_get(o, "tokens");
    size_t n = json_array_size(arr);
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    int32_t vocab = tok_vocab_size(llava_tokenizer(s->m));
    bool ok = json_is_array(arr) && ids;
    for (size_t i = 0; ok && i < n; i++) {
        json_t *v = json_array_get(arr, i);
        ok = json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) < vocab;
        if (ok) ids[i] = (int32_t)json_integer_value(v);
    }
    json_decref(o);
    if (!ok) {
        free(ids);
        char msg[128];
        snprintf(msg, sizeof msg, "'tokens' must be an array of token ids in [0, %d)", vocab);
        return fail(s, c, cx, LV_ERR_ARG, 0, "tokens", "invalid_value", msg);
    }
    char *text = NULL;
    size_t len = 0;
    lv_err err = {{0}};
    lv_status st = tok_decode(llava_tokenizer(s->m), ids, n, false, &text, &len, &err);
    free(ids);
    if (st) return fail(s, c, cx, st, 0, "tokens", NULL, err.msg);
    json_t *out = json_object();
    json_object_set_new(out, "content", json_stringn(text, len));
    free(text);
    return send_json(s, c, cx, 200, dump(out));
}

/* ---- generation routes ------------------------------------------------------------------
 * The body becomes an oai_request, its images tensors and its prompt ids, all
 * on this thread; then one job per choice goes to the worker (n choices per
 * prompt, seeds seed, seed+1, ...). The jobs share the request (their stop
 * strings borrow from it) through a reference count. */

/* The parsed request, shared by the jobs made from it. */
typedef struct {
    oai_request r;
    atomic_int refs;
} shared_req;

static void shared_release(void *p) {
    shared_req *q = p;
    if (q && atomic_fetch_sub(&q->refs, 1) == 1) {
        oai_request_free(&q->r);
        free(q);
    }
}

/* The jobs of one request: choice k is jobs[k] (prompt k / n, sample k % n). */
typedef struct {
    wk_job **jobs;
    int n_jobs;
    int n; /* choices per prompt */
} group;

static void group_release(group *g) {
    for (int k = 0; k < g->n_jobs; k++) {
        if (!g->jobs[k]) continue;
        wk_job_cancel(g->jobs[k]);
        wk_job_release(g->jobs[k]);
    }
    free(g->jobs);
    memset(g, 0, sizeof *g);
}

/* Fetches image k of r and makes it j->images[k] through the engine's
 * request_image_from_bytes (the path llava-cli's files take); "low" detail
 * keeps the base view only (one tile: side² features + newline). */
static lv_status load_image(http_server *s, const oai_request *r, size_t k, wk_job *j,
                            int *n_tokens, oai_error *e) {
    char param[64];
    snprintf(param, sizeof param, "messages[%d].content", r->images[k].message);
    uint8_t *bytes = NULL;
    size_t len = 0;
    lv_err err = {{0}};
    lv_status st = media_fetch(r->images[k].url, &s->media, &bytes, &len, &err);
    /* A URL that cannot be fetched or read is the client's problem (400). */
    if (st == LV_ERR_IO) st = LV_ERR_ARG;
    img_options opt = {0};
    if (s->cfg.image) opt = *s->cfg.image;
    opt.base_only = r->images[k].detail == OAI_DETAIL_LOW;
    if (!st)
        st = request_image_from_bytes(s->m, bytes, len, &opt, &j->images[k], n_tokens, NULL, NULL,
                                      &err);
    free(bytes);
    if (st)
        return oai_fail(e, st, 0, param,
                        st == LV_ERR_TOO_LARGE ? "image_too_large" : "invalid_image",
                        "image %zu: %s", k, err.msg);
    j->n_images = (int)k + 1;
    return LV_OK;
}

/* Chat: images, then the template, then the ids. */
static lv_status prepare_chat(http_server *s, const oai_request *r, wk_job *j, oai_error *e) {
    int *n_tokens = calloc(r->n_images + 1, sizeof *n_tokens);
    j->images = calloc(r->n_images + 1, sizeof *j->images);
    lv_buf text = {0};
    lv_err err = {{0}};
    size_t n_placeholders = 0, n_ids = 0;
    lv_status st = n_tokens && j->images ? LV_OK : oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "oom");
    for (size_t k = 0; !st && k < r->n_images; k++) st = load_image(s, r, k, j, &n_tokens[k], e);
    if (st) goto done;
    st = chat_render(CHAT_TEMPLATE_LLAVA_MISTRAL, r->messages, r->n_messages, &text,
                     &n_placeholders, &err);
    if (!st)
        st = request_prompt_ids(s->m, text.data ? text.data : "", true, n_tokens, j->n_images,
                                &j->ids, &n_ids, &err);
    if (st) oai_fail(e, st, 0, "messages", NULL, "%s", err.msg);
    j->n_ids = (int)n_ids;
    /* Text spelling "<image>" must not smuggle in image ids without features. */
    long want = 0, got = 0;
    for (int k = 0; k < j->n_images; k++) want += n_tokens[k];
    for (size_t i = 0; !st && i < n_ids; i++) got += j->ids[i] == llava_image_token_id(s->m);
    if (!st && got != want)
        st = oai_fail(e, LV_ERR_ARG, 0, "messages", "invalid_value",
                      "the message text contains the image token \"<image>\"; send images as "
                      "image_url parts");
done:
    free(n_tokens);
    lv_buf_free(&text);
    return st;
}

/* Completion prompt p: text (tokenized with BOS) or ids (as given). */
static lv_status prepare_completion(http_server *s, const oai_request *r, size_t pi, wk_job *j,
                                    oai_error *e) {
    const oai_prompt *p = &r->prompts[pi];
    lv_err err = {{0}};
    if (p->ids) {
        int32_t vocab = tok_vocab_size(llava_tokenizer(s->m));
        if (p->n_ids < 1)
            return oai_fail(e, LV_ERR_ARG, 0, "prompt", "invalid_value",
                            "prompt %zu is an empty list of token ids", pi);
        for (int i = 0; i < p->n_ids; i++)
            if (p->ids[i] < 0 || p->ids[i] >= vocab)
                return oai_fail(e, LV_ERR_ARG, 0, "prompt", "invalid_value",
                                "prompt token %d is %d, outside the vocabulary [0, %d)", i,
                                p->ids[i], vocab);
        if (!(j->ids = malloc((size_t)p->n_ids * sizeof *j->ids)))
            return oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "out of memory");
        memcpy(j->ids, p->ids, (size_t)p->n_ids * sizeof *j->ids);
        j->n_ids = p->n_ids;
        return LV_OK;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    lv_status st = tok_encode(llava_tokenizer(s->m), p->text, p->len, true, &ids, &n, &err);
    if (st) return oai_fail(e, st, 0, "prompt", NULL, "%s", err.msg);
    j->ids = ids;
    j->n_ids = (int)n;
    return LV_OK;
}

/* A job holding a reference to q; NULL when out of memory. */
static wk_job *new_job(shared_req *q, const conn *cx, int k, int n_jobs) {
    wk_job *j = wk_job_new();
    if (!j) return NULL;
    atomic_fetch_add(&q->refs, 1);
    j->keep = q;
    j->keep_free = shared_release;
    if (n_jobs > 1)
        snprintf(j->rid, sizeof j->rid, "%.20s.%d", cx->rid, k & 0xff);
    else
        snprintf(j->rid, sizeof j->rid, "%s", cx->rid);
    return j;
}

/* A copy of src's inputs (ids, images, params) in a new job. */
static wk_job *clone_job(const wk_job *src, shared_req *q, const conn *cx, int k, int n_jobs) {
    wk_job *j = new_job(q, cx, k, n_jobs);
    if (!j) return NULL;
    j->params = src->params;
    j->deadline_ms = src->deadline_ms;
    j->record_tokens = src->record_tokens;
    j->ids = malloc((size_t)(src->n_ids ? src->n_ids : 1) * sizeof *j->ids);
    j->images = calloc((size_t)src->n_images + 1, sizeof *j->images);
    bool ok = j->ids && j->images;
    if (ok) memcpy(j->ids, src->ids, (size_t)src->n_ids * sizeof *j->ids);
    j->n_ids = src->n_ids;
    for (int i = 0; ok && i < src->n_images; i++) {
        const img_tensor *a = &src->images[i];
        size_t n = (size_t)a->n_tiles * 3 * a->tile_h * a->tile_w;
        j->images[i] = *a;
        j->images[i].data = malloc(n * sizeof(float));
        if (!(ok = j->images[i].data != NULL)) break;
        memcpy(j->images[i].data, a->data, n * sizeof(float));
        j->n_images = i + 1;
    }
    if (!ok) {
        wk_job_release(j);
        return NULL;
    }
    return j;
}

/* Generation parameters of the first job of a prompt: the checkpoint's
 * defaults, what the client set, logit_bias, the seed. */
static lv_status set_params(http_server *s, const oai_request *r, wk_job *j, oai_error *e) {
    gen_params_default(&j->params, s->m);
    oai_request_apply(r, &j->params);
    int32_t vocab = tok_vocab_size(llava_tokenizer(s->m));
    for (int i = 0; i < r->n_logit_bias; i++)
        if (r->logit_bias[i].id >= vocab)
            return oai_fail(e, LV_ERR_ARG, 0, "logit_bias", "invalid_value",
                            "Invalid 'logit_bias': token id %d is outside the vocabulary [0, %d).",
                            r->logit_bias[i].id, vocab);
    if (!(r->set & OAI_SET_SEED)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        j->params.sampling.seed =
            ((uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)ts.tv_sec) & INT64_MAX;
    }
    j->record_tokens = r->logprobs;
    if (s->cfg.timeout_s > 0) j->deadline_ms = lv_now_ms() + s->cfg.timeout_s * 1e3;
    /* The prompt and at least one generated token must fit the context. */
    int ctx = llava_max_ctx(s->m);
    if (j->n_ids + 1 > ctx)
        return oai_fail(e, LV_ERR_ARG, 0, r->kind == OAI_CHAT ? "messages" : "prompt",
                        "context_length_exceeded",
                        "This model's maximum context length is %d tokens, but the prompt is %d "
                        "tokens (images included); shorten it.",
                        ctx, j->n_ids);
    return LV_OK;
}

#define MAX_JOBS 64 /* choices per request: prompts x n */

/* The jobs for q's request (q keeps its own reference; each job takes one). */
static lv_status make_jobs(http_server *s, shared_req *q, const conn *cx, group *g, oai_error *e) {
    const oai_request *r = &q->r;
    memset(g, 0, sizeof *g);
    int n_prompts = r->kind == OAI_CHAT ? 1 : (int)r->n_prompts;
    if (n_prompts < 1)
        return oai_fail(e, LV_ERR_ARG, 0, "prompt", "invalid_value", "Invalid 'prompt': empty.");
    if ((long)n_prompts * r->n > MAX_JOBS)
        return oai_fail(e, LV_ERR_ARG, 0, "n", "invalid_value",
                        "%d prompts x n = %d asks for %d choices; at most %d per request",
                        n_prompts, r->n, n_prompts * r->n, MAX_JOBS);
    g->n = r->n;
    g->n_jobs = n_prompts * r->n;
    if (!(g->jobs = calloc((size_t)g->n_jobs, sizeof *g->jobs)))
        return oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "out of memory");
    lv_status st = LV_OK;
    for (int p = 0; !st && p < n_prompts; p++) {
        int k0 = p * r->n;
        wk_job *j = g->jobs[k0] = new_job(q, cx, k0, g->n_jobs);
        if (!j) st = oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "out of memory");
        if (!st)
            st = r->kind == OAI_CHAT ? prepare_chat(s, r, j, e)
                                     : prepare_completion(s, r, (size_t)p, j, e);
        if (!st) st = set_params(s, r, j, e);
        for (int i = 1; !st && i < r->n; i++) {
            wk_job *c = g->jobs[k0 + i] = clone_job(j, q, cx, k0 + i, g->n_jobs);
            if (!c)
                st = oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "out of memory");
            else
                c->params.sampling.seed = j->params.sampling.seed + (uint64_t)i;
        }
    }
    if (st) group_release(g);
    return st;
}

/* The error a finished, failed job answers with. */
static void job_error(const http_server *s, const wk_job *j, oai_error *e) {
    if (j->st == LV_ERR_CANCELLED && j->timed_out)
        oai_fail(e, LV_ERR_DEVICE, 0, NULL, "timeout",
                 "the request did not finish within the server's timeout (%d s)", s->cfg.timeout_s);
    else
        oai_fail(e, j->st, 0, NULL, NULL, "%s", j->err.msg);
}

/* Usage and timings over the group: each prompt counted once. */
static void group_usage(const group *g, oai_usage *u, oai_timings *t) {
    *u = (oai_usage){0, 0, 0};
    *t = (oai_timings){0, 0, 0, 0};
    for (int k = 0; k < g->n_jobs; k++) {
        const wk_job *j = g->jobs[k];
        const gen_timings *gt = &j->result.timings;
        if (k % g->n == 0) u->prompt_tokens += j->n_ids;
        u->completion_tokens += j->result.n_ids;
        t->prompt_n += gt->n_prefill;
        t->prompt_ms += gt->vision_ms + gt->prefill_ms;
        t->predicted_n += j->result.n_ids;
        t->predicted_ms += gt->decode_ms + gt->sample_ms;
    }
}

static void note_generation(http_server *s, const wk_job *j) {
    if (!j->st)
        metrics_generation(s->metrics, j->n_ids, j->result.n_ids, j->t_submit_ms, j->t_first_ms,
                           j->t_done_ms);
}

/* ---- logprobs ----------------------------------------------------------------------------
 * A token's text for logprobs is its vocabulary piece as the decoder spells
 * it: "▁" → " ", "<0xNN>" → the byte NN (so "bytes" gives the UTF-8 bytes
 * even for pieces of a character). */

#define TOK_TEXT 64

static void token_text(const tok *t, int32_t id, char *out, size_t *len) {
    const char *p = tok_id_to_token(t, id);
    size_t n = 0;
    unsigned byte;
    if (!p) p = "";
    if (strlen(p) == 6 && sscanf(p, "<0x%2X>", &byte) == 1) {
        out[0] = (char)byte;
        *len = 1;
        return;
    }
    while (*p && n + 4 < TOK_TEXT) {
        if (!strncmp(p, "\xe2\x96\x81", 3)) {
            out[n++] = ' ';
            p += 3;
        } else {
            out[n++] = *p++;
        }
    }
    *len = n;
}

/* Logprob entries of a job's recorded tokens [from, to), EOS left out;
 * text storage in *texts (caller frees both). *n_out entries. */
static oai_token_logprob *build_logprobs(const http_server *s, const sample_result *toks, int from,
                                         int to, size_t limit_bytes, char **texts, int *n_out) {
    int n = to > from ? to - from : 0;
    *n_out = 0;
    *texts = NULL;
    oai_token_logprob *lp = calloc((size_t)(n ? n : 1), sizeof *lp);
    char *store = malloc((size_t)(n ? n : 1) * (SAMPLE_MAX_TOP + 1) * TOK_TEXT);
    if (!lp || !store) {
        free(lp);
        free(store);
        return NULL;
    }
    const tok *t = llava_tokenizer(s->m);
    int32_t eos = tok_eos_id(t);
    size_t used = 0;
    char *p = store;
    for (int i = from; i < to; i++) {
        const sample_result *r = &toks[i];
        if (r->id == eos) continue;
        if (used >= limit_bytes) break; /* past the text: a stop string cut it there */
        oai_token_logprob *o = &lp[(*n_out)++];
        token_text(t, r->id, p, &o->tok.len);
        o->tok.text = p;
        o->tok.logprob = r->logprob;
        used += o->tok.len;
        p += TOK_TEXT;
        o->n_top = r->n_top;
        for (int k = 0; k < r->n_top; k++) {
            token_text(t, r->top[k].id, p, &o->top[k].len);
            o->top[k].text = p;
            o->top[k].logprob = r->top[k].logprob;
            p += TOK_TEXT;
        }
    }
    *texts = store;
    return lp;
}

/* Copies the tokens recorded since *cursor (under the job's lock). */
static sample_result *new_tokens(wk_job *j, int *cursor, int *n) {
    pthread_mutex_lock(&j->mu);
    *n = j->n_tokens - *cursor;
    sample_result *copy = NULL;
    if (*n > 0 && (copy = malloc((size_t)*n * sizeof *copy)))
        memcpy(copy, j->tokens + *cursor, (size_t)*n * sizeof *copy);
    if (!copy) *n = 0;
    *cursor += *n;
    pthread_mutex_unlock(&j->mu);
    return copy;
}

/* ---- streams ----------------------------------------------------------------------------- */

/* A stream being written: SSE events built from the jobs' text as it comes. */
typedef struct {
    http_server *s;
    group g;
    shared_req *q; /* for logprobs / include_usage (a reference) */
    bool chat;
    char id[64];
    oai_meta meta;
    lv_buf out; /* events not yet handed to MHD, from off */
    size_t off;
    int *cursor;    /* (n_jobs) tokens already sent with logprobs */
    bool *finished; /* (n_jobs) finish event sent */
    int n_finished;
    int next;    /* round-robin position */
    bool failed; /* an error event was sent */
    bool ended;  /* [DONE] is in out */
} stream;

static void put_event(stream *st, char *ev) {
    if (ev) lv_buf_puts(&st->out, ev);
    free(ev);
}

/* A content event for job k with text (and the tokens recorded since the last one). */
static void put_delta(stream *st, int k, const char *text, size_t len) {
    wk_job *j = st->g.jobs[k];
    oai_token_logprob *lp = NULL;
    char *texts = NULL;
    int n_lp = 0;
    if (st->q->r.logprobs) {
        int n = 0;
        sample_result *toks = new_tokens(j, &st->cursor[k], &n);
        lp = build_logprobs(st->s, toks, 0, n, SIZE_MAX, &texts, &n_lp);
        free(toks);
    }
    if (st->chat)
        put_event(st, oai_chat_chunk_delta(&st->meta, k, text, len, lp, lp ? n_lp : 0));
    else
        put_event(st, oai_completion_chunk_lp(&st->meta, k, text, len, lp, lp ? n_lp : 0, NULL));
    free(lp);
    free(texts);
}

/* Job k is done: its finish event, or an error event that ends the stream. */
static void put_finish(stream *st, int k) {
    wk_job *j = st->g.jobs[k];
    st->finished[k] = true;
    st->n_finished++;
    note_generation(st->s, j);
    if (j->st) {
        oai_error e;
        job_error(st->s, j, &e);
        put_event(st, oai_sse_error(&e));
        st->failed = true;
        return;
    }
    put_event(st, st->chat ? oai_chat_chunk_finish(&st->meta, k, j->result.finish_reason)
                           : oai_completion_chunk(&st->meta, k, "", 0, j->result.finish_reason));
}

/* The events that close the stream: usage, [DONE]. */
static void put_end(stream *st) {
    if (!st->failed && st->meta.include_usage) {
        oai_usage u;
        oai_timings t;
        group_usage(&st->g, &u, &t);
        put_event(st, st->chat ? oai_chat_chunk_usage(&st->meta, &u, &t)
                               : oai_completion_chunk_usage(&st->meta, &u, &t));
    }
    lv_buf_puts(&st->out, oai_sse_done());
    st->ended = true;
}

/* One pass over the jobs: text taken, finished ones closed. With one job it
 * waits up to 500 ms for text; with several, each is polled and the pass
 * waits on one of them only when none had anything. */
static void stream_pass(stream *st) {
    int n = st->g.n_jobs;
    bool any = false;
    for (int step = 0; step < n && !st->failed; step++) {
        int k = (st->next + step) % n;
        if (st->finished[k]) continue;
        lv_buf text = {0};
        bool done = wk_job_take(st->g.jobs[k], &text, n == 1 ? 500 : 0);
        if (text.len) put_delta(st, k, text.data, text.len);
        any |= text.len > 0 || done;
        lv_buf_free(&text);
        if (done) put_finish(st, k);
    }
    st->next = (st->next + 1) % n;
    if (!any && n > 1 && !st->failed) { /* nothing anywhere: wait on the first unfinished job */
        for (int k = 0; k < n; k++)
            if (!st->finished[k]) {
                lv_buf text = {0};
                bool done = wk_job_take(st->g.jobs[k], &text, 50);
                if (text.len) put_delta(st, k, text.data, text.len);
                lv_buf_free(&text);
                if (done) put_finish(st, k);
                break;
            }
    }
    if (st->failed || st->n_finished == n) put_end(st);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    stream *st = cls;
    (void)pos;
    while (st->off == st->out.len) {
        if (st->ended) return MHD_CONTENT_READER_END_OF_STREAM;
        st->out.len = st->off = 0;
        stream_pass(st);
    }
    size_t n = st->out.len - st->off < max ? st->out.len - st->off : max;
    memcpy(buf, st->out.data + st->off, n);
    st->off += n;
    return (ssize_t)n;
}

/* MHD is done with the stream: finished, or the client went away. */
static void stream_free(void *cls) {
    stream *st = cls;
    if (!st->ended && st->g.n_jobs)
        LV_INFO("[%s] client disconnected; cancelling", st->g.jobs[0]->rid);
    group_release(&st->g); /* cancels: the worker frees the sequences at its next step */
    shared_release(st->q);
    free(st->cursor);
    free(st->finished);
    lv_buf_free(&st->out);
    free(st);
}

/* Streams g (taken) for q (one reference taken). */
static enum MHD_Result start_stream(http_server *s, struct MHD_Connection *c, conn *cx, group *g,
                                    shared_req *q) {
    stream *st = calloc(1, sizeof *st);
    if (st) {
        st->cursor = calloc((size_t)g->n_jobs, sizeof *st->cursor);
        st->finished = calloc((size_t)g->n_jobs, sizeof *st->finished);
    }
    if (!st || !st->cursor || !st->finished) {
        if (st) free(st->cursor), free(st->finished);
        free(st);
        group_release(g);
        shared_release(q);
        return send_json(s, c, cx, 503, NULL);
    }
    st->s = s;
    st->g = *g;
    st->q = q;
    st->chat = q->r.kind == OAI_CHAT;
    oai_make_id(st->id, sizeof st->id, st->chat ? "chatcmpl-" : "cmpl-");
    st->meta = (oai_meta){st->id, (int64_t)time(NULL), s->cfg.model_name, q->r.include_usage};
    if (st->chat)
        for (int k = 0; k < g->n_jobs; k++) put_event(st, oai_chat_chunk_role(&st->meta, k));
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, st, stream_free);
    if (!resp) {
        stream_free(st);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    add_common_headers(s, c, cx, resp);
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    log_request(s, cx, 200);
    return ret;
}

/* ---- plain responses --------------------------------------------------------------------- */

/* Whether the client closed its side: readable with nothing to read (EOF). */
static bool client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return false;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLIN};
    if (poll(&p, 1, 0) <= 0) return false;
    if (p.revents & (POLLHUP | POLLERR)) return true;
    char b;
    return recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* Waits for every job; a client that hangs up meanwhile cancels them all,
 * so its sequences are freed at once (checked every 200 ms). */
static void wait_jobs(struct MHD_Connection *c, const conn *cx, group *g) {
    bool cancelled = false;
    for (int k = 0; k < g->n_jobs; k++) {
        lv_buf drop = {0}; /* plain answers read result.text; the streamed copy goes */
        while (!wk_job_take(g->jobs[k], &drop, 200)) {
            drop.len = 0;
            if (!cancelled && client_gone(c)) {
                LV_INFO("[%s] client disconnected while waiting; cancelling", cx->rid);
                for (int i = 0; i < g->n_jobs; i++) wk_job_cancel(g->jobs[i]);
                cancelled = true;
            }
        }
        lv_buf_free(&drop);
    }
}

static enum MHD_Result finish_plain(http_server *s, struct MHD_Connection *c, conn *cx, group *g,
                                    const oai_request *r) {
    wait_jobs(c, cx, g);
    enum MHD_Result ret;
    for (int k = 0; k < g->n_jobs; k++) note_generation(s, g->jobs[k]);
    for (int k = 0; k < g->n_jobs; k++)
        if (g->jobs[k]->st) {
            oai_error e;
            job_error(s, g->jobs[k], &e);
            ret = send_error(s, c, cx, &e);
            group_release(g);
            return ret;
        }
    size_t n_jobs = g->n_jobs > 0 ? (size_t)g->n_jobs : 1;
    oai_choice *ch = calloc(n_jobs, sizeof *ch);
    char **texts = calloc(n_jobs, sizeof *texts);
    bool ok = ch && texts;
    for (int k = 0; ok && k < g->n_jobs; k++) {
        wk_job *j = g->jobs[k];
        ch[k] = (oai_choice){j->result.text, j->result.text_len, j->result.finish_reason, NULL, 0};
        if (!r->logprobs) continue;
        /* Tokens that start within the final text (a stop string cut the rest);
         * the first piece's leading space is the one the decoder strips. */
        ch[k].logprobs = build_logprobs(s, j->tokens, 0, j->n_tokens, j->result.text_len + 1,
                                        &texts[k], &ch[k].n_logprobs);
        ok = ch[k].logprobs != NULL;
    }
    char id[64];
    oai_make_id(id, sizeof id, r->kind == OAI_CHAT ? "chatcmpl-" : "cmpl-");
    oai_meta m = {id, (int64_t)time(NULL), s->cfg.model_name, false};
    oai_usage u;
    oai_timings t;
    group_usage(g, &u, &t);
    char *body = NULL;
    if (ok)
        body = r->kind == OAI_CHAT ? oai_chat_response(&m, ch, g->n_jobs, &u, &t)
                                   : oai_completion_response(&m, ch, g->n_jobs, &u, &t);
    ret = send_json(s, c, cx, 200, body);
    for (int k = 0; ch && k < g->n_jobs; k++) free((void *)ch[k].logprobs);
    for (int k = 0; texts && k < g->n_jobs; k++) free(texts[k]);
    free(ch);
    free(texts);
    group_release(g);
    return ret;
}

static enum MHD_Result generate(http_server *s, struct MHD_Connection *c, conn *cx, oai_kind kind) {
    oai_error e;
    shared_req *q = calloc(1, sizeof *q);
    if (!q) return send_json(s, c, cx, 503, NULL);
    atomic_init(&q->refs, 1);
    const char *body = cx->body.data ? cx->body.data : "";
    lv_status st = kind == OAI_CHAT ? oai_parse_chat(body, cx->body.len, &s->lim, &q->r, &e)
                                    : oai_parse_completion(body, cx->body.len, &s->lim, &q->r, &e);
    if (st) {
        free(q);
        return send_error(s, c, cx, &e);
    }
    group g;
    if ((st = make_jobs(s, q, cx, &g, &e))) {
        shared_release(q);
        return send_error(s, c, cx, &e);
    }
    lv_err err = {{0}};
    for (int k = 0; k < g.n_jobs; k++)
        if ((st = worker_submit(s->w, g.jobs[k], &err))) {
            group_release(&g); /* cancels the ones already queued */
            shared_release(q);
            return fail(s, c, cx, st, 0, NULL, "queue_full", err.msg);
        }
    LV_DEBUG("[%s] %d job(s) queued", cx->rid, g.n_jobs);
    if (q->r.stream) return start_stream(s, c, cx, &g, q);
    enum MHD_Result ret = finish_plain(s, c, cx, &g, &q->r);
    shared_release(q);
    return ret;
}

static enum MHD_Result route_chat(http_server *s, struct MHD_Connection *c, conn *cx) {
    return generate(s, c, cx, OAI_CHAT);
}

static enum MHD_Result route_completion(http_server *s, struct MHD_Connection *c, conn *cx) {
    return generate(s, c, cx, OAI_COMPLETION);
}

/* ---- routing -----------------------------------------------------------------------------
 * One line per route. Model routes answer 503 until the model is loaded. */

static const route routes[] = {
    {"GET", "/health", route_health, false},
    {"GET", "/v1/models", route_models, false},
    {"GET", "/metrics", route_metrics, false},
    {"POST", "/v1/chat/completions", route_chat, true},
    {"POST", "/v1/completions", route_completion, true},
    {"POST", "/tokenize", route_tokenize, true},
    {"POST", "/detokenize", route_detokenize, true},
};
#define N_ROUTES (sizeof routes / sizeof routes[0])

/* The route for method and url; *path_known says whether any method has it. */
static const route *find_route(const char *method, const char *url, bool *path_known) {
    *path_known = false;
    for (size_t i = 0; i < N_ROUTES; i++) {
        if (strcmp(routes[i].path, url)) continue;
        *path_known = true;
        if (!strcmp(routes[i].method, method)) return &routes[i];
    }
    return NULL;
}

static bool key_ok(const http_server *s, struct MHD_Connection *c) {
    const char *key = s->cfg.api_key;
    if (!key) return true;
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (auth && !strncasecmp(auth, "Bearer ", 7)) {
        auth += 7;
        while (*auth == ' ') auth++;
        if (!strcmp(auth, key)) return true;
    }
    const char *x = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Api-Key");
    return x && !strcmp(x, key);
}

static enum MHD_Result preflight(http_server *s, struct MHD_Connection *c, conn *cx) {
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    MHD_add_response_header(r, "Access-Control-Allow-Headers",
                            "Authorization, Content-Type, X-Api-Key");
    MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    add_common_headers(s, c, cx, r);
    enum MHD_Result ret = MHD_queue_response(c, 204, r);
    MHD_destroy_response(r);
    log_request(s, cx, 204);
    return ret;
}

/* The request's headers are in: make its conn and decide what we can now. */
static conn *begin(http_server *s, struct MHD_Connection *c, const char *url, const char *method) {
    conn *cx = calloc(1, sizeof *cx);
    if (!cx) return NULL;
    snprintf(cx->rid, sizeof cx->rid, "req-%llu",
             (unsigned long long)atomic_fetch_add(&s->next, 1) + 1);
    cx->t0_ms = lv_now_ms();
    cx->method = method;
    cx->url = url;
    bool known;
    cx->route = find_route(method, url, &known);
    if (!strcmp(method, "OPTIONS") && known)
        cx->early = 204;
    else if (!known)
        cx->early = 404;
    else if (!cx->route)
        cx->early = 405;
    else if (cx->route->auth && !key_ok(s, c))
        cx->early = 401;
    return cx;
}

static enum MHD_Result answer_early(http_server *s, struct MHD_Connection *c, conn *cx) {
    oai_error e;
    char msg[300];
    switch (cx->early) {
        case 204:
            return preflight(s, c, cx);
        case 404:
            snprintf(msg, sizeof msg, "no route for %.200s", cx->url);
            oai_fail(&e, LV_ERR_ARG, 0, NULL, "not_found", "%s", msg);
            e.status = 404; /* not an lv_status: the path is unknown */
            snprintf(e.type, sizeof e.type, "%s", oai_error_type(404));
            return send_error(s, c, cx, &e);
        case 405: {
            snprintf(msg, sizeof msg, "%.16s is not allowed on %.200s", cx->method, cx->url);
            oai_fail(&e, LV_ERR_ARG, 0, NULL, "method_not_allowed", "%s", msg);
            e.status = 405;
            struct MHD_Response *r;
            char *body = oai_error_json(&e);
            if (!body ||
                !(r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE))) {
                free(body);
                return MHD_NO;
            }
            bool known;
            MHD_add_response_header(r, "Allow",
                                    find_route("GET", cx->url, &known) ? "GET" : "POST");
            MHD_add_response_header(r, "Content-Type", "application/json");
            add_common_headers(s, c, cx, r);
            enum MHD_Result ret = MHD_queue_response(c, 405, r);
            MHD_destroy_response(r);
            log_request(s, cx, 405);
            return ret;
        }
        default: /* 401 */
            oai_fail(&e, LV_ERR_ARG, 0, NULL, "invalid_api_key",
                     "missing or wrong API key (send 'Authorization: Bearer KEY' or "
                     "'X-Api-Key: KEY')");
            e.status = 401;
            snprintf(e.type, sizeof e.type, "%s", oai_error_type(401));
            return send_error(s, c, cx, &e);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **con_cls) {
    http_server *s = cls;
    conn *cx = *con_cls;
    if (!cx) { /* headers only */
        *con_cls = cx = begin(s, c, url, method);
        return cx ? MHD_YES : MHD_NO;
    }
    if (*data_size) { /* a body chunk */
        if (!cx->early && !cx->too_big) {
            if (cx->body.len + *data_size > s->cfg.max_body) {
                cx->too_big = true;
                lv_buf_free(&cx->body);
            } else if (lv_buf_append(&cx->body, data, *data_size)) {
                return MHD_NO;
            }
        }
        *data_size = 0;
        return MHD_YES;
    }
    if (cx->early) return answer_early(s, c, cx);
    if (cx->too_big) {
        oai_error e;
        oai_fail(&e, LV_ERR_TOO_LARGE, 0, NULL, "request_too_large",
                 "the request body is larger than %zu bytes", s->cfg.max_body);
        return send_error(s, c, cx, &e);
    }
    bool public_route = cx->route->fn == route_health || cx->route->fn == route_models ||
                        cx->route->fn == route_metrics;
    if (!public_route && atomic_load(&s->state) != ST_READY)
        return fail(s, c, cx, LV_OK, OAI_HINT_LOADING, NULL, "model_loading",
                    "the model is loading; retry shortly");
    return cx->route->fn(s, c, cx);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    conn *cx = *con_cls;
    if (!cx) return;
    lv_buf_free(&cx->body);
    free(cx);
    *con_cls = NULL;
}

/* ---- lifecycle --------------------------------------------------------------------------- */

lv_status http_start(const http_config *cfg, http_server **out, lv_err *err) {
    *out = NULL;
    struct sockaddr_in6 a6 = {0};
    struct sockaddr_in a4 = {0};
    const struct sockaddr *addr;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG;
    if (inet_pton(AF_INET, cfg->host, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET;
        a4.sin_port = htons((uint16_t)cfg->port);
        addr = (const struct sockaddr *)&a4;
    } else if (inet_pton(AF_INET6, cfg->host, &a6.sin6_addr) == 1) {
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons((uint16_t)cfg->port);
        addr = (const struct sockaddr *)&a6;
        flags |= MHD_USE_IPv6;
    } else {
        return lv_fail(err, LV_ERR_ARG, "--host: '%s' is not an IPv4 or IPv6 address", cfg->host);
    }
    http_server *s = calloc(1, sizeof *s);
    if (!s) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    s->cfg = *cfg;
    s->t0_ms = lv_now_ms();
    s->created = (int64_t)time(NULL);
    atomic_init(&s->state, ST_LOADING);
    atomic_init(&s->next, 0);
    media_policy_default(&s->media);
    s->media.allowed_local_dir = cfg->allowed_local_media_path;
    oai_limits_default(&s->lim);
    s->lim.max_body = cfg->max_body;
    if (cfg->default_max_tokens > 0) s->lim.default_max_tokens = cfg->default_max_tokens;
    if (s->lim.max_tokens > 0 && s->lim.default_max_tokens > s->lim.max_tokens)
        s->lim.max_tokens = s->lim.default_max_tokens;
    if (!(s->metrics = metrics_new())) {
        free(s);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    }
    s->d = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, s,
                            MHD_OPTION_SOCK_ADDR, addr, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
                            s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024),
                            MHD_OPTION_CONNECTION_TIMEOUT, 120u, MHD_OPTION_CONNECTION_LIMIT, 512u,
                            MHD_OPTION_END);
    if (!s->d) {
        metrics_free(s->metrics);
        free(s);
        return lv_fail(err, LV_ERR_IO, "cannot listen on %s:%d (in use, or not an address here)",
                       cfg->host, cfg->port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : cfg->port;
    *out = s;
    return LV_OK;
}

int http_port(const http_server *s) {
    return s->port;
}

void http_set_ready(http_server *s, llava *m, worker *w) {
    s->m = m;
    s->w = w;
    atomic_store(&s->state, ST_READY);
}

void http_stop(http_server *s) {
    if (!s) return;
    MHD_socket fd = MHD_quiesce_daemon(s->d); /* no new connections */
    if (fd != MHD_INVALID_SOCKET) close(fd);
    if (s->w) worker_stop(s->w, false); /* running sequences finish; queued ones cancel */
    MHD_stop_daemon(s->d);              /* streams end once their jobs are done */
    worker_free(s->w);
    llava_free(s->m);
    metrics_free(s->metrics);
    free(s);
}
