/*
 * oai.h - the OpenAI API as pure functions: request bodies in, validated
 * structs out; results in, response JSON and SSE events out. No sockets,
 * no threads, no model: the HTTP layer (server/http.c) calls these and
 * moves bytes.
 *
 * Three parts, one file each:
 *   oai_request.c  POST /v1/chat/completions and /v1/completions bodies →
 *                  oai_request, or an oai_error naming the field the way
 *                  OpenAI does ("Invalid 'n': integer above maximum value.
 *                  Expected a value <= 8, but got 9 instead.", param "n").
 *   oai_error.c    the one place an lv_status becomes an HTTP status, and
 *                  the OpenAI error body {"error":{message,type,param,code}}
 *                  (STYLE.md §2.4).
 *   oai_response.c chat.completion, text_completion, chat.completion.chunk
 *                  SSE events, /v1/models and /health bodies.
 *
 * References: OpenAI API reference (Chat Completions, Completions, Models,
 * streaming), llama.cpp tools/server (the "timings" object, extra sampling
 * fields top_k / min_p / repetition_penalty).
 */
#ifndef LV_OAI_H
#define LV_OAI_H

#include "base/common.h"
#include "engine/generate.h"
#include "engine/governor.h"
#include "engine/scheduler.h"
#include "engine/sample.h"
#include "text/chat_template.h"

#include <stdbool.h>
#include <stdint.h>

/* ---- errors ------------------------------------------------------------ */

/* An error as the client will see it. Fixed-size: filling one never fails. */
typedef struct {
    int status;        /* HTTP status (400, 413, 429, 503, ...) */
    char type[32];     /* "invalid_request_error", "server_error", ... */
    char message[512]; /* one sentence naming the field and the problem */
    char param[96];    /* the field ("messages[0].content[1].image_url"), "" = null */
    char code[48];     /* "invalid_type", "integer_above_max_value", ..., "" = null */
} oai_error;

/* Hints oai_status_for needs beyond the status itself. */
enum {
    OAI_HINT_TOO_LARGE = 1u << 0, /* the input exceeds a size limit → 413 */
    OAI_HINT_LOADING = 1u << 1,   /* the model is not loaded yet → 503 */
};

/*
 * The single mapping lv_status → HTTP status: LV_OK 200; LV_ERR_ARG,
 * FORMAT, UNSUPPORTED 400 (413 with OAI_HINT_TOO_LARGE); TOO_LARGE 413; BUSY 429 (send
 * Retry-After); NOMEM, DEVICE 503; CANCELLED 499 (client closed the
 * connection: nothing is sent); IO and anything else 500. OAI_HINT_LOADING
 * gives 503 whatever st is.
 */
int oai_status_for(lv_status st, unsigned hints);

/* OpenAI's error "type" for an HTTP status ("invalid_request_error" for
 * 4xx requests, "authentication_error" 401, "not_found_error" 404,
 * "rate_limit_error" 429, "unavailable_error" 503, "server_error" 5xx). */
const char *oai_error_type(int status);

/*
 * Fills e: status from oai_status_for(st, hints), type from it, message
 * from fmt; param and code may be NULL (JSON null). Returns st, so a
 * failure reads `return oai_fail(e, LV_ERR_ARG, 0, "n", NULL, "...")`.
 * e may be NULL.
 */
lv_status oai_fail(oai_error *e, lv_status st, unsigned hints, const char *param, const char *code,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* {"error":{"message","type","param","code"}}; heap, caller frees with
 * free(). NULL only when out of memory. */
char *oai_error_json(const oai_error *e);

/* ---- requests ---------------------------------------------------------- */

/* Server-side limits, from the config and command line. */
typedef struct {
    size_t max_body;        /* bytes of request body (413 above) */
    int default_max_tokens; /* when the request gives none; 0: the rest of the context
                               (context length - prompt tokens, set by jobs.c) */
    int max_tokens;         /* largest max_tokens accepted (0 = no limit here) */
    int max_n;              /* largest n */
    int max_images;         /* images per request, all messages together */
    int max_messages;       /* messages per request */
    int max_logit_bias;     /* entries of logit_bias */
} oai_limits;

/* 32 MiB body, max_tokens the rest of the context by default and 4096 at
 * most when given, n <= 8, 16 images,
 * 1024 messages, 300 logit_bias entries (OpenAI's and the sampler's limit). */
void oai_limits_default(oai_limits *lim);

typedef enum { OAI_CHAT, OAI_COMPLETION } oai_kind;

/* image_url.detail: "auto" and "high" = full anyres (the reference); "low"
 * = the base view only (~5x fewer image tokens). */
typedef enum { OAI_DETAIL_AUTO, OAI_DETAIL_LOW, OAI_DETAIL_HIGH } oai_detail;

typedef struct {
    const char *url; /* "data:...", "file://...", "http(s)://..." (borrowed from the request) */
    oai_detail detail;
    int message; /* index of the message it came from */
} oai_image;

/* A video file, or a video given as its frames (SmolVLM2 only;
 * engine/request_video.h). A file is vLLM's part {"type": "video_url",
 * "video_url": {"url": u}} (or a bare string). Frames are
 * the content part {"type": "video_frames", "video_frames": {"frames":
 * [url | {"url": url}, ...], "fps": F}} (fps optional: 24, as
 * transformers assumes). Frame URLs take the forms image_url takes. */
typedef struct {
    const char *file_url; /* a video file ({"type": "video_url", "video_url": {"url": u}}),
                             or NULL for frames (borrowed) */
    const char **urls;    /* (n_frames) in order (the array is the request's; strings borrowed) */
    int n_frames;
    double fps;  /* 0: not given */
    int message; /* index of the message it came from */
} oai_video;

/* One prompt of /v1/completions: text or token ids (exactly one is set). */
typedef struct {
    const char *text; /* UTF-8, len bytes, or NULL (borrowed from the request) */
    size_t len;
    int32_t *ids; /* (n_ids) token ids, or NULL (owned by the request) */
    int n_ids;
} oai_prompt;

typedef struct {
    int32_t id;
    float bias; /* [-100, 100] added to the logit */
} oai_logit_bias;

/* Which optional sampling fields the client set (bit per field). */
enum {
    OAI_SET_TEMPERATURE = 1u << 0,
    OAI_SET_TOP_P = 1u << 1,
    OAI_SET_TOP_K = 1u << 2,
    OAI_SET_MIN_P = 1u << 3,
    OAI_SET_REPETITION_PENALTY = 1u << 4,
    OAI_SET_FREQUENCY_PENALTY = 1u << 5,
    OAI_SET_PRESENCE_PENALTY = 1u << 6,
    OAI_SET_SEED = 1u << 7,
    OAI_SET_MAX_TOKENS = 1u << 8,
};

/* tool_choice: "none" (the default without tools; tools are not shown to
 * the model), "auto" (the default with tools), "required", or one named
 * function (server/tools.h says how each is prompted and decoded). */
typedef enum { OAI_TOOLS_NONE, OAI_TOOLS_AUTO, OAI_TOOLS_REQUIRED, OAI_TOOLS_NAMED } oai_tool_mode;

/* A function of "tools" (validated; its parameters compiled once, to check
 * them and, when the output is constrained, to decode under). */
typedef struct {
    const char *name; /* [A-Za-z0-9_-]{1,64}, unique (borrowed) */
    const char *spec; /* {"name", "description", "parameters"} as shown to the model (borrowed) */
} oai_tool;

/*
 * A validated request. Every string is borrowed from the parsed JSON that
 * the request holds, so it lives until oai_request_free.
 */
typedef struct {
    oai_kind kind;
    const char *model; /* "model", or NULL if absent */

    /* OAI_CHAT: ready for chat_render (parts point into parts_storage). */
    chat_message *messages; /* (n_messages); developer → CHAT_SYSTEM */
    size_t n_messages;
    oai_image *images; /* (n_images) in prompt order: message order, then content order */
    size_t n_images;
    oai_video video; /* one video at most, never with images */
    bool has_video;

    /* OAI_COMPLETION: one choice set per prompt. */
    oai_prompt *prompts; /* (n_prompts) */
    size_t n_prompts;

    int max_tokens;         /* >= 1; lim->default_max_tokens unless set (0 there: the rest
                               of the context, decided once the prompt is tokenized) */
    sample_params sampling; /* fields the client set (see set); the rest default */
    unsigned set;           /* OAI_SET_* bits */
    const char *stop[4];    /* stop strings, non-empty (borrowed) */
    int n_stop;
    int n;                      /* choices per prompt, 1..lim->max_n */
    bool logprobs;              /* return logprobs */
    int top_logprobs;           /* 0..20 (chat: top_logprobs; completions: the logprobs integer) */
    oai_logit_bias *logit_bias; /* (n_logit_bias) */
    int n_logit_bias;
    bool stream;
    bool include_usage; /* stream_options.include_usage */
    /* Constrained decoding: the grammar text (engine/grammar.h syntax; heap)
     * of response_format json_object / json_schema (engine/json_schema.h) or
     * of llama.cpp's `grammar` field; NULL: free text. */
    char *grammar_text;
    size_t grammar_len;
    const char *grammar_param; /* where it came from, for errors ("response_format", "grammar",
                                  "tools") */
    /* Tool calling (server/tools.h). */
    oai_tool *tools; /* (n_tools) */
    size_t n_tools;
    oai_tool_mode tool_mode;
    int tool_named;           /* OAI_TOOLS_NAMED: the index in tools */
    bool parallel_tool_calls; /* more than one call per answer (default true) */

    void *json_;            /* the parsed body (json_t *); private */
    chat_part *parts_;      /* storage behind messages[].parts; private */
    chat_part *tool_parts_; /* the last user turn's parts with the tools text first; private */
    void *texts_;           /* rendered texts messages point into (json_t array); private */
} oai_request;

/*
 * Parses and validates a /v1/chat/completions body (len bytes, need not be
 * NUL-terminated). On success *out owns what it points to (release with
 * oai_request_free); on failure *out is zeroed and e says why: LV_ERR_ARG
 * for any bad input (e->status 400; 413 for a body over lim->max_body),
 * LV_ERR_NOMEM (503). Unknown fields are ignored.
 */
lv_status oai_parse_chat(const char *body, size_t len, const oai_limits *lim, oai_request *out,
                         oai_error *e);

/* The same for /v1/completions: "prompt" is a string, an array of strings,
 * an array of token ids, or an array of arrays of token ids. */
lv_status oai_parse_completion(const char *body, size_t len, const oai_limits *lim,
                               oai_request *out, oai_error *e);

void oai_request_free(oai_request *r); /* zeroed: no-op */

/*
 * Overlays what the client set onto p (already holding the checkpoint's
 * defaults from gen_params_default): max_tokens, the sampling fields in
 * r->set, top_logprobs, stop strings (borrowed from r), logit_bias (ids
 * not checked against the vocabulary here: the caller knows it).
 */
void oai_request_apply(const oai_request *r, gen_params *p);

/* ---- responses --------------------------------------------------------- */

/* What every response object of one request shares. */
typedef struct {
    const char *id;     /* from oai_make_id; the same for every chunk of a stream */
    int64_t created;    /* unix seconds */
    const char *model;  /* the served model's name */
    bool include_usage; /* streaming: chunks carry "usage": null, a final usage chunk follows */
} oai_meta;

/*
 * Writes prefix + 24 hex digits into buf (size n >= strlen(prefix) + 25),
 * unique within the process (an atomic counter through splitmix64, keyed by
 * a per-process random value) and unpredictable enough not to collide
 * across restarts. Thread-safe. Returns buf.
 */
char *oai_make_id(char *buf, size_t n, const char *prefix);

/* One token's log-probability, with its decoded text (raw bytes: may be a
 * partial UTF-8 sequence; the builders escape it and add "bytes"). */
typedef struct {
    const char *text;
    size_t len;
    float logprob;
} oai_tok;

typedef struct {
    oai_tok tok;
    int n_top;
    oai_tok top[SAMPLE_MAX_TOP]; /* most likely first */
} oai_token_logprob;

/* A function call the model made (server/tools.h parses them out of the text). */
typedef struct {
    char id[40];     /* "call_" + 24 alphanumerics */
    char *name;      /* heap */
    char *arguments; /* JSON text (heap) */
} oai_tool_call;

typedef struct {
    const char *text; /* the choice's final text, len bytes (UTF-8) */
    size_t len;
    const char *finish_reason;         /* "stop", "length" or "tool_calls" */
    const oai_token_logprob *logprobs; /* (n_logprobs), or NULL for "logprobs": null */
    int n_logprobs;
    const oai_tool_call *tool_calls; /* (n_tool_calls): "content": null, "tool_calls": [...] */
    int n_tool_calls;
} oai_choice;

typedef struct {
    int prompt_tokens;
    int completion_tokens;
    int cached_tokens; /* prompt tokens served from cache */
} oai_usage;

/* llama.cpp's "timings" (per-token and per-second figures are derived). */
typedef struct {
    int prompt_n;
    double prompt_ms;
    int predicted_n;
    double predicted_ms;
} oai_timings;

/*
 * Response bodies. All return a heap string the caller frees with free(),
 * or NULL when out of memory. Generated text that is not valid UTF-8 (cut
 * inside a character) gets U+FFFD for each bad byte. t may be NULL (no
 * "timings").
 */
char *oai_chat_response(const oai_meta *m, const oai_choice *c, int n_choices, const oai_usage *u,
                        const oai_timings *t);
char *oai_completion_response(const oai_meta *m, const oai_choice *c, int n_choices,
                              const oai_usage *u, const oai_timings *t);

/*
 * SSE events for a stream, each "data: {json}\n\n". chat.completion.chunk:
 * the first of each choice carries delta {"role":"assistant","content":""};
 * then content deltas (with logprobs {"content":[...]} when lp is not
 * NULL); then one with an empty delta and finish_reason; with
 * include_usage, one last chunk with "choices": [] and the usage. The
 * stream ends with oai_sse_done().
 */
char *oai_chat_chunk_role(const oai_meta *m, int index);
char *oai_chat_chunk_delta(const oai_meta *m, int index, const char *text, size_t len,
                           const oai_token_logprob *lp, int n_lp);
char *oai_chat_chunk_finish(const oai_meta *m, int index, const char *finish_reason);
/* A delta {"tool_calls":[{"index","id","type":"function","function":{"name",
 * "arguments"}}]} with every call of choice index (sent once its text is done). */
char *oai_chat_chunk_tool_calls(const oai_meta *m, int index, const oai_tool_call *calls, int n);
char *oai_chat_chunk_usage(const oai_meta *m, const oai_usage *u, const oai_timings *t);
/* text_completion stream events: finish_reason NULL for a content event. */
char *oai_completion_chunk(const oai_meta *m, int index, const char *text, size_t len,
                           const char *finish_reason);
/* The same with the legacy logprobs object of this piece's tokens (lp NULL:
 * "logprobs": null). */
char *oai_completion_chunk_lp(const oai_meta *m, int index, const char *text, size_t len,
                              const oai_token_logprob *lp, int n_lp, const char *finish_reason);
char *oai_completion_chunk_usage(const oai_meta *m, const oai_usage *u, const oai_timings *t);
/* "data: [DONE]\n\n" (static). */
const char *oai_sse_done(void);
/* "data: {error json}\n\n" for a failure after the stream started. */
char *oai_sse_error(const oai_error *e);

/* A JSON string (jansson's json_t) of generated text (len bytes), each
 * invalid UTF-8 byte as U+FFFD, as the bodies above write it; NULL when out
 * of memory. For server/ollama.c, which answers the same text in Ollama's
 * shape, and for error messages, which may quote a client's bytes. */
struct json_t *oai_content_json(const char *s, size_t len);

/* GET /v1/models: {"object":"list","data":[{"id","object":"model","created","owned_by"}]}. */
char *oai_models_json(const char *const *ids, int n, int64_t created, const char *owned_by);

/* GET /health figures, once the model is ready. */
typedef struct {
    const char *model;
    const char *device; /* the backend the model runs on ("cpu", "cuda:0") */
    double uptime_s;
    int64_t rss_bytes;      /* resident memory; < 0 = unknown */
    int64_t kv_bytes;       /* KV cache in use; < 0 = unknown */
    int64_t kv_bytes_total; /* KV cache allocated */
    int64_t kv_used;        /* KV positions filled */
    int64_t kv_capacity;    /* KV positions that exist */
    int running;            /* sequences decoding */
    int waiting;            /* requests queued */
    int queue_capacity;     /* queue size */
    int parallel;           /* sequences decoded together at most */
    bool has_gpu_memory;    /* the device told its memory (llava_memory_info) */
    int64_t gpu_used;       /* device memory in use, by every process */
    int64_t gpu_total;      /* device memory in all */
    mg_stats mem;           /* the memory governor's budget, use and level */
    sched_stats caches;     /* the prefix and image caches' figures */
    const char *replica;    /* --replica-id, or NULL: none ("replica" absent) */
} oai_health;

/* 200 body {"status":"healthy","model","device","uptime_s","memory":{"rss_bytes",
 * "kv_bytes","kv_bytes_total"},"queue":{"running","waiting","capacity",
 * "parallel"},"kv_cache":{"used","capacity"}}, plus "gpu_memory":{"used_bytes",
 * "total_bytes"} when the device's memory is known. "memory" also holds the
 * governor's "budget_bytes" (0: none), "used_bytes" (what the level is taken
 * from), "accounted_bytes", "measured_bytes", "fixed_bytes", "requests_bytes",
 * "connections_bytes", "decoded_images_bytes", "kv_cached_bytes", "image_cache_bytes", "pressure"
 * ("normal", "evict", "refuse"), "refused_total", "pressure_evictions_total", "peak_used_bytes",
 * "peak_requests_bytes" (high-water marks); "caches" holds
 * "prefix":{"sequences","bytes","hits","tokens","evictions"} and
 * "images":{"images","bytes","budget_bytes","hits","misses","evictions"}; "replica" (the
 * --replica-id) when there is one. While loading,
 * send oai_error_json of an error filled with OAI_HINT_LOADING instead. */
char *oai_health_json(const oai_health *h);

#endif
