/*
 * http.c - the transport of llava-server (http.h): the libmicrohttpd
 * daemon, the routing table, bodies under a size cap, the API key, CORS,
 * request ids and log lines, and the small routes (/health, /metrics,
 * /v1/models, /tokenize, /detokenize; the web page from webui.h). The
 * generation routes hand the body to jobs.h (request → the scheduler's
 * jobs, and the plain answer) and stream.h (the SSE answer); neither knows
 * about connections.
 *
 * Threads: MHD runs one thread per connection (MHD_USE_THREAD_PER_CONNECTION),
 * so a handler may block: a plain completion waits for its jobs, and a
 * stream's content reader waits for the next text. Parsing, image fetching,
 * decoding, preprocessing and tokenizing happen on the connection's thread;
 * only the model's forward passes go through the scheduler (engine/scheduler.h),
 * which batches the sequences of all connections. A client that goes away
 * cancels every job of its request, and the scheduler frees their sequences
 * at its next step.
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
#include "io/json_type.h"
#include "base/log.h"
#include "base/sysmem.h"
#include "server/jobs.h"
#include "server/media.h"
#include "server/metrics.h"
#include "server/oai.h"
#include "server/ollama.h"
#include "server/stream.h"
#include "server/webui.h"

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
#include <time.h>
#include <unistd.h>

enum { ST_LOADING, ST_READY };

struct http_server {
    http_config cfg;
    struct MHD_Daemon *d;
    int port;
    atomic_int state;     /* ST_LOADING until http_set_ready */
    atomic_bool draining; /* http_stop began: /health answers 503, answers say Connection: close */
    atomic_bool closed;   /* the listener closed (after the grace): model routes answer 503 */
    atomic_int active;    /* requests begun and not yet completed (answer fully sent) */
    llava *m;             /* owned once ready */
    sched *w;             /* owned once ready */
    mg_governor *gov;     /* owned once ready; NULL: none */
    image_memo *memo;     /* tensors of recently sent images (jobs.c) */
    structured_vocab *vocab; /* the model's tokens as grammar tries (response_format) */
    double t0_ms;            /* start, for uptime */
    int64_t created;         /* unix seconds, for /v1/models */
    atomic_ullong next;      /* request counter */
    media_policy media;
    oai_limits lim;
    metrics *metrics;
    jobs_ctx jobs; /* for jobs.h and stream.h: borrows the above */
};

/* One HTTP request on a connection. */
typedef struct {
    const struct route *route;
    int early;        /* status decided from the headers (401, 404, 405), 0 = none */
    lv_buf body;      /* collected body, up to max_body */
    bool too_big;     /* the body went over max_body */
    int64_t body_mem; /* bytes reserved for the body with the governor (given back at the end) */
    char rid[32];     /* "req-N" */
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
    if (s->cfg.replica_id) MHD_add_response_header(r, "X-Replica-Id", s->cfg.replica_id);
    /* Draining: no keep-alive, so a client (a load balancer's pool) comes back
     * on a new connection, which a healthy replica takes. */
    if (atomic_load(&s->draining)) MHD_add_response_header(r, "Connection", "close");
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
    /* 429 (queue full) and 503 (loading, memory) pass: say when to come back */
    if (status == 429 || status == 503) MHD_add_response_header(r, "Retry-After", "1");
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

/* An error's body: Ollama's {"error":"..."} under /api/, OpenAI's elsewhere. */
static char *error_body(const conn *cx, const oai_error *e) {
    return strncmp(cx->url, "/api/", 5) ? oai_error_json(e) : ollama_error_json(e);
}

static enum MHD_Result send_error(http_server *s, struct MHD_Connection *c, conn *cx,
                                  const oai_error *e) {
    if (e->status == 499) { /* the client is gone: nothing to send */
        log_request(s, cx, 499);
        return MHD_NO;
    }
    return send_json(s, c, cx, e->status, error_body(cx, e));
}

/* An error from a status and a message (lv_err text or a literal). */
static enum MHD_Result fail(http_server *s, struct MHD_Connection *c, conn *cx, lv_status st,
                            unsigned hints, const char *param, const char *code, const char *msg) {
    oai_error e;
    oai_fail(&e, st, hints, param, code, "%s", msg);
    return send_error(s, c, cx, &e);
}

static char *dump(json_t *o) {
    char *text = o ? json_dumps_whole(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

/* ---- public routes --------------------------------------------------------------------- */

/* The device's memory into *used / *total; false when unknown (no model yet,
 * or a backend that cannot tell). */
static bool gpu_memory(const http_server *s, bool ready, int64_t *used, int64_t *total) {
    size_t u = 0, t = 0;
    bool known = ready && llava_memory_info(s->m, &u, &t);
    *used = (int64_t)u;
    *total = (int64_t)t;
    return known;
}

static enum MHD_Result route_health(http_server *s, struct MHD_Connection *c, conn *cx) {
    if (atomic_load(&s->draining))
        return fail(s, c, cx, LV_OK, OAI_HINT_LOADING, NULL, "shutting_down",
                    "the server is shutting down");
    if (atomic_load(&s->state) != ST_READY)
        return fail(s, c, cx, LV_OK, OAI_HINT_LOADING, NULL, "model_loading",
                    "the model is loading; retry shortly");
    sched_stats ws;
    sched_get_stats(s->w, &ws);
    oai_health h = {.model = s->cfg.model_name,
                    .replica = s->cfg.replica_id,
                    .device = llava_device(s->m),
                    .uptime_s = (lv_now_ms() - s->t0_ms) / 1e3,
                    .rss_bytes = lv_rss_bytes(),
                    .kv_bytes = (int64_t)ws.kv_bytes_used,
                    .kv_bytes_total = (int64_t)ws.kv_bytes_total,
                    .kv_used = ws.kv_used,
                    .kv_capacity = ws.kv_capacity,
                    .running = ws.running,
                    .waiting = ws.waiting,
                    .queue_capacity = ws.queue_capacity,
                    .parallel = ws.parallel,
                    .caches = ws};
    mg_get_stats(s->gov, &h.mem);
    h.has_gpu_memory = gpu_memory(s, true, &h.gpu_used, &h.gpu_total);
    return send_json(s, c, cx, 200, oai_health_json(&h));
}

/* Prometheus text; public like /health (scrapers rarely carry keys). */
static enum MHD_Result route_metrics(http_server *s, struct MHD_Connection *c, conn *cx) {
    metrics_gauges g = {.ready = atomic_load(&s->state) == ST_READY,
                        .rss_bytes = lv_rss_bytes(),
                        .uptime_s = (lv_now_ms() - s->t0_ms) / 1e3};
    if (g.ready) {
        sched_get_stats(s->w, &g.ws);
        mg_get_stats(s->gov, &g.mem);
    }
    g.has_gpu_memory = gpu_memory(s, g.ready, &g.gpu_used_bytes, &g.gpu_total_bytes);
    return send_body(s, c, cx, 200, metrics_render(s->metrics, &g),
                     "text/plain; version=0.0.4; charset=utf-8");
}

static enum MHD_Result route_models(http_server *s, struct MHD_Connection *c, conn *cx) {
    const char *ids[1] = {s->cfg.model_name};
    return send_json(s, c, cx, 200, oai_models_json(ids, 1, s->created, "llava"));
}

/* The web page's files (server/webui.h), public so a browser can load the
 * page; the page sends the API key itself. Revalidated by ETag (304). */
static enum MHD_Result route_webui(http_server *s, struct MHD_Connection *c, conn *cx) {
    webui_asset a;
    if (!webui_find(cx->url, &a)) /* a route whose file left web/ */
        return fail(s, c, cx, LV_ERR_IO, 0, NULL, NULL, "this build has no such page file");
    const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-None-Match");
    int status = inm && strstr(inm, a.etag) ? 304 : 200;
    struct MHD_Response *r = MHD_create_response_from_buffer(
        status == 200 ? a.len : 0, (void *)a.data, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    for (size_t i = 0; webui_headers[i][0]; i++)
        MHD_add_response_header(r, webui_headers[i][0], webui_headers[i][1]);
    MHD_add_response_header(r, "Content-Type", a.type);
    MHD_add_response_header(r, "ETag", a.etag);
    add_common_headers(s, c, cx, r);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    log_request(s, cx, status);
    return ret;
}

/* ---- tokenize / detokenize (llama.cpp bodies) ------------------------------------------ */

static json_t *parse_object(conn *cx, oai_error *e) {
    json_error_t je;
    json_t *o = json_loadb_whole(cx->body.data ? cx->body.data : "", cx->body.len, 0, &je);
    if (!o && json_load_nomem(&je)) {
        oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "out of memory reading the body");
    } else if (!o) {
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
 * The body becomes the scheduler's jobs (jobs.h), all on this thread; once
 * they are queued the answer is a stream (stream.h) or, waited for here,
 * one JSON body. */

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
static void wait_jobs(struct MHD_Connection *c, const conn *cx, job_group *g) {
    bool cancelled = false;
    for (int k = 0; k < g->n_jobs; k++) {
        lv_buf drop = {0}; /* plain answers read result.text; the streamed copy goes */
        while (!sched_job_take(g->jobs[k], &drop, 200)) {
            drop.len = 0;
            if (!cancelled && client_gone(c)) {
                LV_INFO("[%s] client disconnected while waiting; cancelling", cx->rid);
                for (int i = 0; i < g->n_jobs; i++) sched_job_cancel(g->jobs[i]);
                cancelled = true;
            }
        }
        lv_buf_free(&drop);
    }
}

/* Answers with the stream of g's jobs (g taken); om: in Ollama's framing. */
static enum MHD_Result send_stream(http_server *s, struct MHD_Connection *c, conn *cx, job_group *g,
                                   const ollama_meta *om) {
    stream *st = stream_new(&s->jobs, g, om);
    if (!st) return send_json(s, c, cx, 503, NULL);
    struct MHD_Response *r = stream_response(st);
    if (!r) return MHD_NO;
    add_common_headers(s, c, cx, r);
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    log_request(s, cx, 200);
    return ret;
}

/* An OpenAI body (len bytes) through the jobs, answered plain or streamed;
 * om: in Ollama's shapes (its requests arrive translated, ollama.h). */
static enum MHD_Result generate(http_server *s, struct MHD_Connection *c, conn *cx, oai_kind kind,
                                const char *body, size_t len, const ollama_meta *om) {
    oai_error e;
    job_group g;
    if (jobs_make(&s->jobs, kind, body, len, cx->rid, &g, &e) || jobs_submit(&s->jobs, &g, &e))
        return send_error(s, c, cx, &e);
    LV_DEBUG("[%s] %d job(s) queued", cx->rid, g.n_jobs);
    if (g.r->stream) return send_stream(s, c, cx, &g, om);
    wait_jobs(c, cx, &g);
    char *answer = om ? ollama_answer(&s->jobs, &g, om, &e) : jobs_answer(&s->jobs, &g, &e);
    jobs_release(&g);
    return answer ? send_json(s, c, cx, 200, answer) : send_error(s, c, cx, &e);
}

static enum MHD_Result route_chat(http_server *s, struct MHD_Connection *c, conn *cx) {
    return generate(s, c, cx, OAI_CHAT, cx->body.data ? cx->body.data : "", cx->body.len, NULL);
}

static enum MHD_Result route_completion(http_server *s, struct MHD_Connection *c, conn *cx) {
    return generate(s, c, cx, OAI_COMPLETION, cx->body.data ? cx->body.data : "", cx->body.len,
                    NULL);
}

/* ---- Ollama's API (server/ollama.h) -------------------------------------------------------
 * /api/chat and /api/generate are translated into OpenAI bodies and served
 * by generate() above; the rest describe the served model. */

static enum MHD_Result ollama_generate(http_server *s, struct MHD_Connection *c, conn *cx,
                                       ollama_route which) {
    ollama_request q;
    oai_error e;
    if (ollama_translate(which, cx->body.data ? cx->body.data : "", cx->body.len, &s->lim,
                         cx->t0_ms, &q, &e))
        return send_error(s, c, cx, &e);
    enum MHD_Result ret = q.body ? generate(s, c, cx, q.kind, q.body, q.len, &q.meta)
                                 : send_json(s, c, cx, 200, ollama_load_json(&q));
    ollama_request_free(&q);
    return ret;
}

static enum MHD_Result route_ollama_chat(http_server *s, struct MHD_Connection *c, conn *cx) {
    return ollama_generate(s, c, cx, OLLAMA_CHAT);
}

static enum MHD_Result route_ollama_generate(http_server *s, struct MHD_Connection *c, conn *cx) {
    return ollama_generate(s, c, cx, OLLAMA_GENERATE);
}

static ollama_model ollama_model_of(const http_server *s) {
    sched_stats ws;
    mg_stats ms;
    sched_get_stats(s->w, &ws);
    mg_get_stats(s->gov, &ms);
    size_t used, total;
    return (ollama_model){.name = s->cfg.model_name,
                          .m = s->m,
                          .created = s->created,
                          .size = ms.fixed,
                          .ctx_size = ws.ctx_size,
                          .on_gpu = llava_memory_info(s->m, &used, &total)};
}

static enum MHD_Result route_ollama_tags(http_server *s, struct MHD_Connection *c, conn *cx) {
    ollama_model om = ollama_model_of(s);
    return send_json(s, c, cx, 200, ollama_tags_json(&om));
}

static enum MHD_Result route_ollama_ps(http_server *s, struct MHD_Connection *c, conn *cx) {
    ollama_model om = ollama_model_of(s);
    return send_json(s, c, cx, 200, ollama_ps_json(&om));
}

static enum MHD_Result route_ollama_show(http_server *s, struct MHD_Connection *c, conn *cx) {
    oai_error e;
    if (ollama_parse_show(cx->body.data ? cx->body.data : "", cx->body.len, &e))
        return send_error(s, c, cx, &e);
    ollama_model om = ollama_model_of(s);
    return send_json(s, c, cx, 200, ollama_show_json(&om));
}

static enum MHD_Result route_ollama_version(http_server *s, struct MHD_Connection *c, conn *cx) {
    return send_json(s, c, cx, 200, ollama_version_json());
}

/* ---- routing -----------------------------------------------------------------------------
 * One line per route. Model routes answer 503 until the model is loaded. */

static const route routes[] = {
    {"GET", "/health", route_health, false},
    {"GET", "/v1/health", route_health, false},
    {"GET", "/v1/models", route_models, false},
    {"GET", "/metrics", route_metrics, false},
    {"GET", "/", route_webui, false},
    {"GET", "/webui/app.js", route_webui, false},
    {"GET", "/webui/style.css", route_webui, false},
    {"POST", "/v1/chat/completions", route_chat, true},
    {"POST", "/v1/completions", route_completion, true},
    {"POST", "/tokenize", route_tokenize, true},
    {"POST", "/detokenize", route_detokenize, true},
    {"POST", "/api/chat", route_ollama_chat, true},
    {"POST", "/api/generate", route_ollama_generate, true},
    {"GET", "/api/tags", route_ollama_tags, false},
    {"POST", "/api/show", route_ollama_show, false},
    {"GET", "/api/ps", route_ollama_ps, false},
    {"GET", "/api/version", route_ollama_version, false},
};
#define N_ROUTES (sizeof routes / sizeof routes[0])

/* The route for method and url; *path_known says whether any method has it.
 * HEAD is answered wherever GET is (MHD sends the headers only). */
static const route *find_route(const char *method, const char *url, bool *path_known) {
    *path_known = false;
    if (!strcmp(method, "HEAD")) method = "GET";
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
#define IMAGE_MEMO_BYTES  ((size_t)64 << 20) /* resent images' tensors kept (jobs.c) */
#define BODY_ROOM_WAIT_MS 2000               /* how long a body waits for the caches to make room */

/* A generation request's body is reserved with the memory governor before
 * it is read (its Content-Length): over the refuse line the request is
 * answered 503 at once and its body never buffered. */
static bool reserve_body(http_server *s, struct MHD_Connection *c, conn *cx) {
    bool generation = cx->route->fn == route_chat || cx->route->fn == route_completion ||
                      cx->route->fn == route_ollama_chat || cx->route->fn == route_ollama_generate;
    if (!generation || atomic_load(&s->state) != ST_READY || !s->gov) return true;
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    long long len = cl ? atoll(cl) : 0;
    if (len < 0 || (size_t)len > s->cfg.max_body) return true; /* answered 413 later */
    if (!mg_reserve_wait(s->gov, MG_REQUESTS, len, BODY_ROOM_WAIT_MS)) return false;
    cx->body_mem = len;
    return true;
}

static conn *begin(http_server *s, struct MHD_Connection *c, const char *url, const char *method) {
    conn *cx = calloc(1, sizeof *cx);
    if (!cx) return NULL;
    atomic_fetch_add(&s->active, 1); /* until on_completed: http_stop waits for it */
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
    else if (!reserve_body(s, c, cx))
        cx->early = 503;
    return cx;
}

static enum MHD_Result answer_early(http_server *s, struct MHD_Connection *c, conn *cx) {
    oai_error e;
    char msg[300];
    switch (cx->early) {
        case 204:
            return preflight(s, c, cx);
        case 503: {
            mg_stats ms;
            mg_get_stats(s->gov, &ms);
            snprintf(msg, sizeof msg,
                     "the server is at its memory limit (%.0f of %.0f MiB in use); retry later",
                     ms.use / 1048576.0, ms.limit / 1048576.0);
            oai_fail(&e, LV_ERR_NOMEM, 0, NULL, "memory_pressure", "%s", msg);
            return send_error(s, c, cx, &e);
        }
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
            char *body = error_body(cx, &e);
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

/* What an open connection holds: MHD's memory pool (headers, the read
 * buffer: CONN_POOL, touched as it fills) and the stack its thread touches.
 * Counted with the governor while the connection is open, keep-alive idle
 * included: it is memory whether or not a request runs. */
#define CONN_POOL  ((size_t)64 * 1024)
#define CONN_BYTES ((int64_t)CONN_POOL + 64 * 1024)

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    (void)c;
    http_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        if (atomic_load(&s->state) != ST_READY) return; /* no governor yet: not counted */
        mg_add(s->gov, MG_CONNECTIONS, CONN_BYTES);
        *socket_context = s; /* counted: given back when it closes */
    } else if (*socket_context) {
        mg_add(s->gov, MG_CONNECTIONS, -CONN_BYTES);
    }
}

/* Whether the body is still arriving idle_timeout_s after the headers came.
 * MHD's connection timeout closes a client that stalls, but one trickling a
 * byte a second is never idle and would hold its thread (and memory) for as
 * long as it likes; past the bound its connection is closed with no answer
 * (MHD cannot answer before the body is in). Side effect: the log line. */
static bool body_too_slow(http_server *s, const conn *cx) {
    int limit = s->cfg.idle_timeout_s;
    if (limit <= 0 || lv_now_ms() - cx->t0_ms <= 1e3 * limit) return false;
    LV_WARN("[%s] %s %s: the body is still arriving after %d s; closing the connection", cx->rid,
            cx->method, cx->url, limit);
    metrics_request(s->metrics, cx->route ? cx->route->path : "other", 408);
    return true;
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
    if (*data_size) {                            /* a body chunk */
        if (body_too_slow(s, cx)) return MHD_NO; /* closes the connection */
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
                        cx->route->fn == route_metrics || cx->route->fn == route_webui ||
                        cx->route->fn == route_ollama_version;
    /* Draining but still listening (--drain-grace): served as ever, since a
     * balancer may not have seen /health's 503 yet; once the listener is
     * closed, a request on a connection kept alive is refused. */
    if (!public_route && atomic_load(&s->closed))
        return fail(s, c, cx, LV_OK, OAI_HINT_LOADING, NULL, "shutting_down",
                    "the server is shutting down");
    if (!public_route && atomic_load(&s->state) != ST_READY)
        return fail(s, c, cx, LV_OK, OAI_HINT_LOADING, NULL, "model_loading",
                    "the model is loading; retry shortly");
    return cx->route->fn(s, c, cx);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    http_server *s = cls;
    conn *cx = *con_cls;
    if (!cx) return;
    mg_add(s->gov, MG_REQUESTS, -cx->body_mem);
    lv_buf_free(&cx->body);
    free(cx);
    *con_cls = NULL;
    atomic_fetch_sub(&s->active, 1);
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
    atomic_init(&s->draining, false);
    atomic_init(&s->closed, false);
    atomic_init(&s->active, 0);
    atomic_init(&s->next, 0);
    media_policy_default(&s->media);
    s->media.allowed_local_dir = cfg->allowed_local_media_path;
    oai_limits_default(&s->lim);
    s->lim.max_body = cfg->max_body;
    if (cfg->default_max_tokens > 0) s->lim.default_max_tokens = cfg->default_max_tokens;
    if (s->lim.max_tokens > 0 && s->lim.default_max_tokens > s->lim.max_tokens)
        s->lim.max_tokens = s->lim.default_max_tokens;
    if (!(s->metrics = metrics_new(cfg->model_name, cfg->replica_id)) ||
        !(s->memo = image_memo_new(IMAGE_MEMO_BYTES))) {
        metrics_free(s->metrics);
        free(s);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    }
    s->jobs = (jobs_ctx){.lim = &s->lim,
                         .media = &s->media,
                         .image = s->cfg.image,
                         .timeout_s = s->cfg.timeout_s,
                         .model_name = s->cfg.model_name,
                         .metrics = s->metrics,
                         .memo = s->memo};
    s->d = MHD_start_daemon(
        flags, (uint16_t)cfg->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
        s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, CONN_POOL, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)cfg->idle_timeout_s, MHD_OPTION_CONNECTION_LIMIT, 512u, MHD_OPTION_END);
    if (!s->d) {
        metrics_free(s->metrics);
        image_memo_free(s->memo);
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

void http_set_ready(http_server *s, llava *m, sched *w, mg_governor *gov) {
    s->m = m;
    s->w = w;
    s->gov = gov;
    s->jobs.m = m;
    s->jobs.w = w;
    s->jobs.gov = gov;
    lv_err err = {{0}};
    if (structured_vocab_new(llava_tokenizer(m), &s->vocab, &err))
        LV_WARN("structured outputs unavailable: %s", err.msg);
    s->jobs.vocab = s->vocab;
    atomic_store(&s->state, ST_READY);
}

/* Sleeps until no request is in flight or deadline_ms (lv_now_ms) passes;
 * true if none is. */
static bool wait_idle(http_server *s, double deadline_ms) {
    while (atomic_load(&s->active) > 0) {
        if (lv_now_ms() >= deadline_ms) return false;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return true;
}

void http_stop(http_server *s) {
    if (!s) return;
    /* The drain, in order: /health says 503 while the listener stays open for
     * the grace period and requests are still served (a load balancer sees the
     * 503 and sends no more; what it sent meanwhile is answered, with
     * Connection: close); then no new connections, and every request taken
     * (queued ones included) is answered, for up to drain_timeout_s; then, if
     * that ran out, queued jobs are cancelled and running ones finish; then the
     * answers still being written are let out before the connections go, since
     * MHD_stop_daemon shuts every socket down, cutting a stream's tail or an
     * answer a slow reader had not taken yet. */
    atomic_store(&s->draining, true);
    if (s->cfg.drain_grace_ms > 0) {
        LV_INFO("draining: /health answers 503 for %d ms before the listener closes",
                s->cfg.drain_grace_ms);
        struct timespec ts = {s->cfg.drain_grace_ms / 1000,
                              (long)(s->cfg.drain_grace_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    MHD_socket fd = MHD_quiesce_daemon(s->d); /* no new connections */
    if (fd != MHD_INVALID_SOCKET) close(fd);
    atomic_store(&s->closed, true);
    double deadline = lv_now_ms() + 1e3 * s->cfg.drain_timeout_s;
    int left = atomic_load(&s->active);
    if (left > 0 && s->cfg.drain_timeout_s > 0) {
        LV_INFO("draining: answering the %d request(s) taken (up to %d s)", left,
                s->cfg.drain_timeout_s);
        wait_idle(s, deadline);
    }
    if (s->w) sched_stop(s->w, false); /* what is still queued cancels; running sequences finish */
    /* the answers of what was cancelled, and tails: at least 5 s more (none with no timeout) */
    double later = lv_now_ms() + 5e3;
    double until = s->cfg.drain_timeout_s > 0 && later > deadline ? later : deadline;
    if (!wait_idle(s, until))
        LV_WARN("draining: %d answer(s) not fully sent after %d s; closing their connections",
                atomic_load(&s->active), s->cfg.drain_timeout_s);
    MHD_stop_daemon(s->d);
    sched_free(s->w);
    mg_free(s->gov);
    image_memo_free(s->memo);
    structured_vocab_free(s->vocab);
    llava_free(s->m);
    metrics_free(s->metrics);
    free(s);
}
