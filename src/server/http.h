/*
 * http.h - the HTTP face of llava-server: a libmicrohttpd daemon (one
 * thread per connection), a routing table, request bodies collected under a
 * size cap, the API key check, CORS, and the OpenAI routes. Their bodies
 * become the scheduler's jobs (engine/scheduler.h) in server/jobs.c, through
 * server/oai.h, server/media.h and engine/request.h; a streamed answer is
 * server/stream.c. Those two are private to server/ and never see a
 * connection.
 *
 * Routes:
 *   GET  /health               503 while loading, then 200 with figures (public)
 *   GET  /v1/models            the served model (public)
 *   GET  /metrics              Prometheus text (server/metrics.h) (public)
 *   GET  /                     the web chat page, with /webui/app.js and /webui/style.css
 *                              (server/webui.h: embedded in the binary; CSP, ETag) (public)
 *   POST /v1/chat/completions  plain JSON or an SSE stream
 *   POST /v1/completions       plain JSON or an SSE stream
 *   POST /tokenize             {"content","add_special"} → {"tokens"}  (llama.cpp)
 *   POST /detokenize           {"tokens"} → {"content"}               (llama.cpp)
 *   POST /api/chat             Ollama's chat: NDJSON stream or one object (server/ollama.h)
 *   POST /api/generate         Ollama's completion (a prompt, or raw text)
 *   GET  /api/tags             Ollama's model list: the served model (public)
 *   POST /api/show             Ollama's model details (public)
 *   GET  /api/ps               Ollama's running models: the served model (public)
 *   GET  /api/version          {"version"} (public)
 * Anything else is 404; a known path with another method 405; HEAD is
 * answered wherever GET is; OPTIONS on a known path is the CORS preflight
 * (204). Errors under /api/ are Ollama's {"error":"message"}, elsewhere
 * OpenAI's.
 *
 * Lifecycle: http_start listens at once (port 0 = any free port); the model
 * is handed over with http_set_ready once loaded, so /health can say
 * "loading" meanwhile. http_stop drains (below) and frees everything it was
 * given.
 */
#ifndef LV_SERVER_HTTP_H
#define LV_SERVER_HTTP_H

#include "base/common.h"
#include "image/image.h"
#include "model/llava.h"
#include "engine/governor.h"
#include "engine/scheduler.h"

#include <stddef.h>

typedef struct {
    const char *host;                     /* IPv4 or IPv6 literal to bind ("127.0.0.1") */
    int port;                             /* 0 = any free port (see http_port) */
    const char *api_key;                  /* NULL = no key needed */
    const char *allowed_origins;          /* comma-separated origins, "*" = any, NULL = no CORS */
    const char *allowed_local_media_path; /* file:// image_url below here; NULL = refused */
    int timeout_s;                        /* per request, queue wait included; 0 = none */
    int idle_timeout_s;                   /* a connection that sends or takes nothing this long
                                             is closed (MHD's connection timeout), and a body
                                             must arrive whole within it; 0 = none */
    const char *model_name;               /* the name /v1/models and responses show */
    size_t max_body;                      /* request body cap in bytes (413 above) */
    int default_max_tokens;               /* when a request gives none; 0 = the rest of the
                                             context (oai_limits_default) */
    const img_options *image;             /* the config's image_processing; NULL = reference */
    int drain_grace_ms;     /* http_stop: /health answers 503 this long before the listener closes
                               (requests are still served meanwhile) */
    int drain_timeout_s;    /* http_stop: how long the requests taken may take to be answered once
                               the listener is closed; 0 = none (queued ones are cancelled) */
    const char *replica_id; /* --replica-id: the X-Replica-Id header of every answer, the tag of
                               every log line (set by the caller), a replica label in /metrics
                               and "replica" in /health; NULL = none */
} http_config;

typedef struct http_server http_server;

/* Starts listening. cfg's strings are borrowed and must outlive the server.
 * Errors: LV_ERR_ARG (bad host), LV_ERR_IO (cannot bind), LV_ERR_NOMEM. */
lv_status http_start(const http_config *cfg, http_server **out, lv_err *err);

/* The port actually bound. */
int http_port(const http_server *s);

/* Hands over the loaded model, its scheduler and the memory governor the
 * scheduler reports to (NULL: none; all owned by the server from now on);
 * requests are served from here on, each reserving its memory with gov. */
void http_set_ready(http_server *s, llava *m, sched *w, mg_governor *gov);

/* The drain: /health answers 503 "shutting_down" from now on, and every
 * answer says Connection: close; for cfg.drain_grace_ms the listener stays
 * open and requests are still served (a load balancer stops sending once it
 * sees the 503; what it sent meanwhile is answered). Then it stops accepting
 * (a request on a connection kept open gets 503 "shutting_down"), answers
 * every request taken, queued ones included, for up to cfg.drain_timeout_s
 * (then cancels what is still queued and lets the running finish), waits for
 * the answers still being sent (a stream's tail, a slow reader), closes every
 * connection and frees the server, the model and the scheduler. NULL: no-op. */
void http_stop(http_server *s);

#endif
