/*
 * ollama.h - Ollama's API (github.com/ollama/ollama docs/api.md) on
 * llava-server, so Ollama clients (the ollama CLI with OLLAMA_HOST, the
 * ollama Python and JS libraries, Open WebUI) work unchanged. Private to
 * server/: http.c routes the /api/ paths here, stream.c writes its NDJSON lines.
 *
 * One path. An /api/chat or /api/generate body is translated into the
 * OpenAI body the server already serves (/v1/chat/completions, or
 * /v1/completions for a raw prompt) and goes through oai_parse_*, jobs.h
 * and stream.h like any other request: the same validation, image
 * decoding, chat template, scheduling, memory reservation, cancellation
 * and metrics. Only the answer's shape differs:
 *   - streamed (Ollama's default) as application/x-ndjson, one JSON object
 *     a line: {"model","created_at","message":{"role","content"},"done":false}
 *     (/api/generate: "response" instead of "message"), then a last line with
 *     "done":true, "done_reason" and the counts and durations (nanoseconds);
 *   - with "stream": false, that last line alone, holding the whole answer;
 *   - errors {"error":"message"} with the status the OpenAI routes give
 *     (400, 404, 413, 429, 503); after a stream has started, as its last line.
 *
 * Field by field (what is accepted, ignored or refused) is in ollama.c and
 * README "Ollama clients". Any model name is served by the loaded model, as
 * on /v1 (a client's "llava" or "llama3" answers with this model); the
 * name is echoed back, as Ollama does.
 */
#ifndef LV_SERVER_OLLAMA_H
#define LV_SERVER_OLLAMA_H

#include "base/common.h"
#include "server/jobs.h"
#include "server/oai.h"

#include <stdbool.h>
#include <stdint.h>

#define OLLAMA_NAME_MAX 256 /* bytes of a model name, with its NUL */

typedef enum { OLLAMA_CHAT, OLLAMA_GENERATE } ollama_route;

/* What every answer of one request shares (copied by value: a stream keeps its own). */
typedef struct {
    ollama_route route;
    char model[OLLAMA_NAME_MAX]; /* the request's "model", echoed back */
    double t0_ms;                /* the request's arrival (lv_now_ms), for total_duration */
} ollama_meta;

/* An Ollama request made into an OpenAI one. */
typedef struct {
    ollama_meta meta;
    oai_kind kind;           /* what body is: OAI_CHAT, or OAI_COMPLETION (raw /api/generate) */
    char *body;              /* the OpenAI body (JSON text, heap); NULL: nothing to generate */
    size_t len;              /* bytes of body */
    const char *load_reason; /* body NULL: "load" or "unload" (empty prompt or messages) */
} ollama_request;

/*
 * Translates an /api/chat or /api/generate body (len bytes) into *out. On
 * failure *out is zeroed and e says why (400 for bad JSON, a missing model,
 * a field of the wrong type or one this server cannot honour: think,
 * suffix, template, context, logprobs; 413 over lim->max_body; 503 out of
 * memory). Everything the OpenAI parser checks is checked later, by it.
 * Free with ollama_request_free.
 */
lv_status ollama_translate(ollama_route route, const char *body, size_t len, const oai_limits *lim,
                           double t0_ms, ollama_request *out, oai_error *e);
void ollama_request_free(ollama_request *r); /* zeroed: no-op */

/* ---- answers --------------------------------------------------------------------------------
 * Every builder returns a heap string the caller frees, or NULL when out of
 * memory. Stream lines end with '\n'; whole bodies do not. */

/* {"error":"message"}: the body of every error on /api/ (e->message). */
char *ollama_error_json(const oai_error *e);
/* The same as a stream's last line. */
char *ollama_error_line(const oai_error *e);

/* A stream line with a piece of the answer (done false). */
char *ollama_chunk(const ollama_meta *m, const char *text, size_t len);
/* A stream line with the answer's tool calls (done false), before the last line. */
char *ollama_tool_calls_line(const ollama_meta *m, const oai_tool_call *calls, int n);
/* The stream's last line: done true, done_reason, the counts and durations of g. */
char *ollama_done_line(const ollama_meta *m, const job_group *g);

/*
 * The plain answer of a group whose job is done: one object with the whole
 * answer (and its tool calls), done true, the counts and durations. The
 * job's counts go to the metrics (jobs_note). NULL when it failed (*e is its
 * error) or out of memory (*e is the 503).
 */
char *ollama_answer(const jobs_ctx *ctx, const job_group *g, const ollama_meta *m, oai_error *e);

/* The answer to a request with nothing to generate: done true, done_reason
 * r->load_reason. */
char *ollama_load_json(const ollama_request *r);

/* ---- model information ----------------------------------------------------------------------
 * /api/tags, /api/show, /api/ps and /api/version describe the one served
 * model from what http.c knows of it. */

typedef struct {
    const char *name; /* the served name; ":latest" is added when it has no tag */
    const llava *m;   /* the loaded model */
    int64_t created;  /* unix seconds the server started: "modified_at" */
    int64_t size;     /* bytes the model holds once loaded (the governor's fixed part) */
    int ctx_size;     /* the context a request gets (the scheduler's) */
    bool on_gpu;      /* its weights are in device memory ("size_vram") */
} ollama_model;

/* GET /api/tags: {"models":[{name, model, modified_at, size, digest, details}]}. */
char *ollama_tags_json(const ollama_model *om);
/* GET /api/ps: {"models":[{name, model, size, digest, details, expires_at, size_vram,
 * context_length}]}. */
char *ollama_ps_json(const ollama_model *om);
/* POST /api/show: {modelfile, parameters, template, details, model_info, projector_info,
 * capabilities, modified_at}. */
char *ollama_show_json(const ollama_model *om);
/* GET /api/version: {"version": LLAVA_VERSION}. */
char *ollama_version_json(void);

/* The "model" (or older clients' "name") of an /api/show body, checked:
 * 400 for bad JSON or no name. */
lv_status ollama_parse_show(const char *body, size_t len, oai_error *e);

#endif
