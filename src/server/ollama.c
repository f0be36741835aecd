/*
 * ollama.c - Ollama's API on llava-server (ollama.h): requests translated
 * into OpenAI bodies, answers and model information in Ollama's shapes.
 *
 * Facts from ollama/ollama docs/api.md and api/types.go (read, not copied).
 *
 * /api/chat and /api/generate, field by field:
 *   model        required (400 "model is required"); any name is served by
 *                the loaded model and echoed back
 *   stream       default true (NDJSON); false: one JSON object
 *   messages     [{role, content, images: [base64], tool_calls, tool_name,
 *                tool_call_id}]; each image becomes an image_url data: URI
 *                part before the text (the template puts images first anyway);
 *                missing or [] is Ollama's load request
 *   prompt, system, images (/api/generate): a user turn after a system one;
 *                an empty prompt is the load request; raw: true sends the
 *                prompt as written (/v1/completions: BOS + its tokens)
 *   format       "json" → response_format json_object, a schema → json_schema
 *   options      temperature, top_p, top_k, min_p, seed, stop, num_predict
 *                (→ max_tokens; -1, -2 and 0 mean as long as the server
 *                allows, larger values are capped there), repeat_penalty (→
 *                repetition_penalty), presence_penalty, frequency_penalty.
 *                Every other option (num_ctx, num_gpu, typical_p, mirostat,
 *                ...) is ignored, as Ollama ignores names it does not know:
 *                the server's command line sets those
 *   tools        as OpenAI's (same shape); answers carry message.tool_calls
 *                [{id, function: {index, name, arguments: {object}}}]. Ollama
 *                has no tool_choice (always "auto"); OpenAI's tool_choice and
 *                parallel_tool_calls are passed through as an extension
 *   keep_alive   accepted and ignored (one model, always loaded); 0 with the
 *                load request answers done_reason "unload", and it stays loaded
 *   think        false accepted; true or a level is 400 "does not support
 *                thinking", as Ollama answers for a model without it
 *   refused (400): suffix ("does not support insert", as Ollama for a model
 *                without fill-in-the-middle), template (prompts use the
 *                model's own template; raw: true takes a full prompt), a
 *                non-empty context (the deprecated token memory; /api/chat
 *                keeps history instead), logprobs (use /v1/chat/completions)
 *
 * Answers carry no "context" (see above) and no "thinking".
 */
#include "server/ollama.h"

#include "base/clock.h"
#include "base/version.h"
#include "io/json_type.h"
#include "server/tools.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define BAD(e, ...) oai_fail(e, LV_ERR_ARG, 0, NULL, NULL, __VA_ARGS__)
#define NOMEM(e)    oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "out of memory")

/* ---- requests -------------------------------------------------------------------------------
 * The Ollama body is read with jansson and an OpenAI body built beside it;
 * a value of the wrong type in a field both APIs share is copied as it is,
 * so the OpenAI parser names it in its usual words. */

static lv_status bad_type(oai_error *e, const char *field, const char *want, const json_t *v) {
    return BAD(e, "invalid type for '%s': expected %s, got %s", field, want, json_type_name(v));
}

/* Sets key to val (stolen) in o; false when out of memory. */
static bool put(json_t *o, const char *key, json_t *val) {
    return val && !json_object_set_new(o, key, val);
}

/* The media type of base64 image data, from its first bytes. It only names
 * the data: URI's type: the decoder goes by the bytes themselves. */
static const char *image_type(const char *b64) {
    static const struct {
        const char *prefix, *type;
    } kinds[] = {
        {"iVBOR", "png"}, {"/9j/", "jpeg"}, {"R0lGOD", "gif"}, {"UklGR", "webp"}, {"Qk", "bmp"}};
    for (size_t i = 0; i < LV_ARRAY_LEN(kinds); i++)
        if (!strncmp(b64, kinds[i].prefix, strlen(kinds[i].prefix))) return kinds[i].type;
    return "unknown";
}

/* An Ollama image (base64 without a data: prefix; a data: URI is taken as
 * it is) as an OpenAI image_url part. */
static lv_status image_part(const json_t *img, const char *field, json_t *parts, oai_error *e) {
    if (!json_is_string(img)) return bad_type(e, field, "a base64 string", img);
    const char *s = json_string_value(img);
    json_t *url;
    if (!strncmp(s, "data:", 5)) {
        url = json_incref((json_t *)img);
    } else {
        const char *type = image_type(s);
        size_t n = json_string_length(img) + strlen(type) + 32;
        char *uri = malloc(n);
        if (!uri) return NOMEM(e);
        snprintf(uri, n, "data:image/%s;base64,%s", type, s);
        url = json_string(uri);
        free(uri);
    }
    json_t *part =
        url ? json_pack("{s:s, s:{s:o}}", "type", "image_url", "image_url", "url", url) : NULL;
    if (!part || json_array_append_new(parts, part)) return NOMEM(e);
    return LV_OK;
}

/* A message's content: text alone, or (with images) image parts then the text. */
static lv_status content_of(const json_t *text, const json_t *images, const char *param,
                            json_t **out, oai_error *e) {
    char field[96];
    *out = NULL;
    size_t n = json_is_array(images) ? json_array_size(images) : 0;
    if (images && !json_is_null(images) && !json_is_array(images)) {
        snprintf(field, sizeof field, "%s.images", param);
        return bad_type(e, field, "an array of base64 strings", images);
    }
    if (!text || json_is_null(text)) text = NULL;
    if (!n) {
        *out = text ? json_incref((json_t *)text) : json_string("");
        return *out ? LV_OK : NOMEM(e);
    }
    snprintf(field, sizeof field, "%s.content", param);
    if (text && !json_is_string(text)) return bad_type(e, field, "a string", text);
    json_t *parts = json_array();
    if (!parts) return NOMEM(e);
    lv_status st = LV_OK;
    for (size_t i = 0; !st && i < n; i++) {
        snprintf(field, sizeof field, "%s.images[%zu]", param, i);
        st = image_part(json_array_get(images, i), field, parts, e);
    }
    json_t *tp =
        st ? NULL
           : json_pack("{s:s, s:s%}", "type", "text", "text", text ? json_string_value(text) : "",
                       text ? json_string_length(text) : (size_t)0);
    if (!st && (!tp || json_array_append_new(parts, tp))) st = NOMEM(e);
    if (st) {
        json_decref(parts);
        return st;
    }
    *out = parts;
    return LV_OK;
}

/* One Ollama tool call {function: {name, arguments: {...}}} as OpenAI's
 * {id, type, function: {name, arguments: "<JSON text>"}}; k numbers calls
 * without an id. Anything else is copied for the OpenAI parser to name. */
static json_t *tool_call(const json_t *c, size_t k) {
    const json_t *f = json_object_get(c, "function");
    if (!json_is_object(f)) return json_incref((json_t *)c);
    const json_t *args = json_object_get(f, "arguments"), *id = json_object_get(c, "id");
    char *text = json_is_string(args)          ? strdup(json_string_value(args))
                 : args && !json_is_null(args) ? json_dumps_whole(args, JSON_COMPACT)
                                               : strdup("{}");
    char idbuf[32];
    snprintf(idbuf, sizeof idbuf, "call_%zu", k);
    json_t *name = json_object_get(f, "name");
    json_t *o =
        text ? json_pack("{s:s, s:s, s:{s:O, s:s}}", "id",
                         json_is_string(id) ? json_string_value(id) : idbuf, "type", "function",
                         "function", "name", name ? name : json_null(), "arguments", text)
             : NULL;
    free(text);
    return o;
}

/* Ollama message i as an OpenAI message appended to msgs. */
static lv_status put_message(const json_t *m, size_t i, json_t *msgs, oai_error *e) {
    char param[48];
    snprintf(param, sizeof param, "messages[%zu]", i);
    if (!json_is_object(m)) return bad_type(e, param, "an object", m);
    json_t *o = json_object();
    if (!o || json_array_append_new(msgs, o)) return NOMEM(e);
    json_t *role = json_object_get(m, "role");
    if (json_is_string(role)) { /* Ollama reads roles case-insensitively */
        char r[16] = {0};
        snprintf(r, sizeof r, "%s", json_string_value(role));
        for (char *p = r; *p; p++) *p = (char)tolower((unsigned char)*p);
        if (!put(o, "role", json_string(r))) return NOMEM(e);
    } else if (role && !put(o, "role", json_incref(role))) {
        return NOMEM(e);
    }
    json_t *content = NULL;
    lv_status st =
        content_of(json_object_get(m, "content"), json_object_get(m, "images"), param, &content, e);
    if (st) return st;
    if (!put(o, "content", content)) return NOMEM(e);
    json_t *calls = json_object_get(m, "tool_calls");
    if (json_is_array(calls) && json_array_size(calls)) {
        json_t *a = json_array();
        if (!put(o, "tool_calls", a)) return NOMEM(e);
        for (size_t k = 0; k < json_array_size(calls); k++)
            if (json_array_append_new(a, tool_call(json_array_get(calls, k), k))) return NOMEM(e);
    }
    if (json_is_string(role) && !strcasecmp(json_string_value(role), "tool")) {
        /* OpenAI needs the call's id; Ollama clients send the id or the tool's name */
        json_t *id = json_object_get(m, "tool_call_id");
        if (!json_is_string(id)) id = json_object_get(m, "tool_name");
        char idbuf[32];
        snprintf(idbuf, sizeof idbuf, "call_%zu", i);
        if (!put(o, "tool_call_id",
                 json_string(json_is_string(id) ? json_string_value(id) : idbuf)))
            return NOMEM(e);
    }
    return LV_OK;
}

/* Ollama option → OpenAI field. Options not listed are ignored (see the top). */
static const struct {
    const char *ollama, *openai;
} option_map[] = {
    {"temperature", "temperature"},
    {"top_p", "top_p"},
    {"top_k", "top_k"},
    {"min_p", "min_p"},
    {"seed", "seed"},
    {"stop", "stop"},
    {"repeat_penalty", "repetition_penalty"},
    {"presence_penalty", "presence_penalty"},
    {"frequency_penalty", "frequency_penalty"},
};

static lv_status put_options(const json_t *opts, const oai_limits *lim, json_t *o, oai_error *e) {
    if (!opts || json_is_null(opts)) return LV_OK;
    if (!json_is_object(opts)) return bad_type(e, "options", "an object", opts);
    for (size_t i = 0; i < LV_ARRAY_LEN(option_map); i++) {
        json_t *v = json_object_get(opts, option_map[i].ollama);
        if (v && !json_is_null(v) && !put(o, option_map[i].openai, json_incref(v))) return NOMEM(e);
    }
    json_t *np = json_object_get(opts, "num_predict");
    if (!np || json_is_null(np)) return LV_OK;
    int64_t n;
    if (!json_as_int64(np, &n)) return bad_type(e, "options.num_predict", "an integer", np);
    /* -1 (no limit), -2 (fill the context), 0: as long as the server allows */
    int64_t most = lim->max_tokens > 0 ? lim->max_tokens : INT32_MAX;
    if (n <= 0 || n > most) n = most;
    return put(o, "max_tokens", json_integer(n)) ? LV_OK : NOMEM(e);
}

/* "json" → json_object; a schema → json_schema; "" or null: free text. */
static lv_status put_format(const json_t *f, json_t *o, oai_error *e) {
    if (!f || json_is_null(f) || (json_is_string(f) && !json_string_length(f))) return LV_OK;
    json_t *rf = NULL;
    if (json_is_string(f) && !strcmp(json_string_value(f), "json"))
        rf = json_pack("{s:s}", "type", "json_object");
    else if (json_is_object(f))
        rf = json_pack("{s:s, s:{s:s, s:O}}", "type", "json_schema", "json_schema", "name",
                       "format", "schema", f);
    else
        return BAD(e, "invalid format: expected \"json\" or a JSON schema object, got %s",
                   json_type_name(f));
    return put(o, "response_format", rf) ? LV_OK : NOMEM(e);
}

/* keep_alive 0 (a number, or a duration such as "0", "0s", "0m"). */
static bool keep_alive_zero(const json_t *v) {
    if (json_is_number(v)) return json_number_value(v) == 0;
    if (!json_is_string(v)) return false;
    const char *s = json_string_value(v);
    char *end;
    double d = strtod(s, &end);
    return end != s && d == 0 &&
           (!*end || !strcmp(end, "s") || !strcmp(end, "m") || !strcmp(end, "h") ||
            !strcmp(end, "ms"));
}

/* A field that must be absent, null, false or empty. */
static bool empty(const json_t *v) {
    return !v || json_is_null(v) || json_is_false(v) ||
           (json_is_string(v) && !json_string_length(v)) ||
           (json_is_array(v) && !json_array_size(v));
}

/* The fields both routes share: model, stream, think, logprobs, format, options. */
static lv_status put_common(const json_t *root, const oai_limits *lim, ollama_request *r, json_t *o,
                            bool *stream, oai_error *e) {
    json_t *model = json_object_get(root, "model");
    if (!json_is_string(model) || !json_string_length(model)) return BAD(e, "model is required");
    if (json_string_length(model) >= OLLAMA_NAME_MAX)
        return BAD(e, "model name is %zu bytes; at most %d are accepted", json_string_length(model),
                   OLLAMA_NAME_MAX - 1);
    snprintf(r->meta.model, sizeof r->meta.model, "%s", json_string_value(model));
    json_t *s = json_object_get(root, "stream");
    if (s && !json_is_null(s) && !json_is_boolean(s)) return bad_type(e, "stream", "a boolean", s);
    *stream = !json_is_false(s);
    if (!empty(json_object_get(root, "think")))
        return BAD(e, "\"%s\" does not support thinking", r->meta.model);
    if (!empty(json_object_get(root, "logprobs")))
        return BAD(e, "'logprobs' is not supported on the Ollama routes; /v1/chat/completions "
                      "returns them");
    if (!put(o, "model", json_incref(model)) || !put(o, "stream", json_boolean(*stream)))
        return NOMEM(e);
    lv_status st = put_format(json_object_get(root, "format"), o, e);
    return st ? st : put_options(json_object_get(root, "options"), lim, o, e);
}

static lv_status translate_chat(const json_t *root, ollama_request *r, json_t *o, oai_error *e) {
    json_t *ms = json_object_get(root, "messages");
    if (empty(ms)) return LV_OK; /* the load request */
    if (!json_is_array(ms)) return bad_type(e, "messages", "an array", ms);
    json_t *out = json_array();
    if (!put(o, "messages", out)) return NOMEM(e);
    for (size_t i = 0; i < json_array_size(ms); i++) {
        lv_status st = put_message(json_array_get(ms, i), i, out, e);
        if (st) return st;
    }
    json_t *tools = json_object_get(root, "tools");
    if (!empty(tools) && !put(o, "tools", json_incref(tools))) return NOMEM(e);
    /* this server's extension: OpenAI's tool_choice and parallel_tool_calls (Ollama has
     * neither: its tools are always "auto") */
    static const char *const ext[] = {"tool_choice", "parallel_tool_calls"};
    for (size_t i = 0; i < LV_ARRAY_LEN(ext); i++) {
        json_t *v = json_object_get(root, ext[i]);
        if (v && !json_is_null(v) && !put(o, ext[i], json_incref(v))) return NOMEM(e);
    }
    r->kind = OAI_CHAT;
    return LV_OK;
}

static lv_status translate_generate(const json_t *root, ollama_request *r, json_t *o,
                                    oai_error *e) {
    json_t *prompt = json_object_get(root, "prompt"), *system = json_object_get(root, "system"),
           *images = json_object_get(root, "images"), *raw = json_object_get(root, "raw");
    if (prompt && !json_is_null(prompt) && !json_is_string(prompt))
        return bad_type(e, "prompt", "a string", prompt);
    if (system && !json_is_null(system) && !json_is_string(system))
        return bad_type(e, "system", "a string", system);
    if (raw && !json_is_null(raw) && !json_is_boolean(raw))
        return bad_type(e, "raw", "a boolean", raw);
    if (!empty(json_object_get(root, "suffix")))
        return BAD(e, "\"%s\" does not support insert", r->meta.model);
    if (!empty(json_object_get(root, "template")))
        return BAD(e, "'template' is not supported: prompts are rendered with the model's own "
                      "chat template (send \"raw\": true with a full prompt instead)");
    if (!empty(json_object_get(root, "context")))
        return BAD(e, "'context' (the deprecated token memory) is not supported; send the "
                      "history to /api/chat instead");
    if (empty(prompt)) return LV_OK; /* the load request */
    if (json_is_true(raw)) {
        if (!empty(system) || !empty(images))
            return BAD(e, "raw mode does not support system or images");
        r->kind = OAI_COMPLETION;
        return put(o, "prompt", json_incref(prompt)) ? LV_OK : NOMEM(e);
    }
    json_t *msgs = json_array(), *content = NULL;
    if (!put(o, "messages", msgs)) return NOMEM(e);
    if (!empty(system) &&
        json_array_append_new(msgs, json_pack("{s:s, s:O}", "role", "system", "content", system)))
        return NOMEM(e);
    lv_status st = content_of(prompt, images, "request", &content, e);
    if (st) return st;
    json_t *user = json_pack("{s:s, s:o}", "role", "user", "content", content);
    if (!user || json_array_append_new(msgs, user)) return NOMEM(e);
    r->kind = OAI_CHAT;
    return LV_OK;
}

lv_status ollama_translate(ollama_route route, const char *body, size_t len, const oai_limits *lim,
                           double t0_ms, ollama_request *out, oai_error *e) {
    memset(out, 0, sizeof *out);
    out->meta.route = route;
    out->meta.t0_ms = t0_ms;
    if (len > lim->max_body)
        return oai_fail(e, LV_ERR_TOO_LARGE, 0, NULL, "request_too_large",
                        "request body is %zu bytes; the limit is %zu bytes", len, lim->max_body);
    if (!len) return BAD(e, "missing request body");
    json_error_t je;
    json_t *root = json_loadb_whole(body, len, 0, &je);
    if (!root && json_load_nomem(&je))
        return oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "out of memory reading the body");
    if (!root)
        return BAD(e, "invalid JSON body: %s (line %d, column %d)", je.text, je.line, je.column);
    json_t *o = json_object();
    bool stream = true;
    lv_status st = !json_is_object(root) ? BAD(e, "the request body must be a JSON object")
                   : !o                  ? NOMEM(e)
                                         : put_common(root, lim, out, o, &stream, e);
    if (!st)
        st = route == OLLAMA_CHAT ? translate_chat(root, out, o, e)
                                  : translate_generate(root, out, o, e);
    bool load = !st && !json_object_get(o, "messages") && !json_object_get(o, "prompt");
    if (load)
        out->load_reason = keep_alive_zero(json_object_get(root, "keep_alive")) ? "unload" : "load";
    else if (!st && !(out->body = json_dumps_whole(o, JSON_COMPACT)))
        st = NOMEM(e);
    if (out->body) out->len = strlen(out->body);
    json_decref(o);
    json_decref(root);
    if (st) ollama_request_free(out);
    return st;
}

void ollama_request_free(ollama_request *r) {
    if (!r) return;
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* ---- answers --------------------------------------------------------------------------------
 * Every object starts {"model","created_at"}; created_at is RFC 3339 in UTC
 * with nanoseconds, as Ollama writes it. Durations are nanoseconds. */

static json_t *head(const ollama_meta *m) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[48];
    size_t n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof when - n, ".%09ldZ", ts.tv_nsec);
    return json_pack("{s:s, s:s}", "model", m->model, "created_at", when);
}

/* Serialises and releases o, with a '\n' when line (NULL in → NULL out). */
static char *dump(json_t *o, bool line) {
    char *s = o ? json_dumps_whole(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s || !line) return s;
    size_t n = strlen(s);
    char *l = realloc(s, n + 2);
    if (!l) {
        free(s);
        return NULL;
    }
    memcpy(l + n, "\n", 2);
    return l;
}

/* Adds key: val (stolen) to o; on failure releases o and returns NULL. */
static json_t *with(json_t *o, const char *key, json_t *val) {
    if (!o || !val || json_object_set_new(o, key, val)) {
        json_decref(o);
        json_decref(val);
        return NULL;
    }
    return o;
}

/* [{"id","function":{"index","name","arguments":{...}}}]: arguments as the
 * object the JSON text holds. */
static json_t *calls_json(const oai_tool_call *c, int n) {
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) {
        json_t *args = json_loadb_whole(c[i].arguments, strlen(c[i].arguments), 0, NULL);
        if (!args) args = json_string(c[i].arguments);
        json_t *call = json_pack("{s:s, s:{s:i, s:s, s:o}}", "id", c[i].id, "function", "index", i,
                                 "name", c[i].name, "arguments", args);
        if (json_array_append_new(a, call)) json_decref(a), a = NULL;
    }
    return a;
}

/* The answer's text: chat's "message" (with tool_calls when given) or generate's "response". */
static json_t *with_text(json_t *o, const ollama_meta *m, const char *text, size_t len,
                         const oai_tool_call *calls, int n_calls) {
    json_t *t = oai_content_json(text, len);
    if (m->route == OLLAMA_GENERATE) return with(o, "response", t);
    json_t *msg = with(json_pack("{s:s}", "role", "assistant"), "content", t);
    if (n_calls) msg = with(msg, "tool_calls", calls_json(calls, n_calls));
    return with(o, "message", msg);
}

/* done true, done_reason and the counts and durations of g's job. Ollama's
 * fields, read from ours: prompt_eval_count the prompt's tokens (image rows
 * included), prompt_eval_duration the images' encoding and the prefill,
 * eval_count and eval_duration the generated tokens' steps, total_duration
 * from the request's arrival to now, load_duration from the arrival until
 * the job was queued (the body read, images decoded, prompt tokenized: the
 * model itself is always loaded). */
static json_t *with_done(json_t *o, const ollama_meta *m, const job_group *g) {
    oai_usage u;
    oai_timings t;
    jobs_usage(g, &u, &t);
    const sched_job *j = g->jobs[0];
    const char *reason = j->result.finish_reason ? j->result.finish_reason : "stop";
    if (!strcmp(reason, "tool_calls")) reason = "stop";
    double now = lv_now_ms(), queued = j->t_submit_ms > m->t0_ms ? j->t_submit_ms : m->t0_ms;
    o = with(o, "done", json_true());
    o = with(o, "done_reason", json_string(reason));
    o = with(o, "total_duration", json_integer((json_int_t)((now - m->t0_ms) * 1e6)));
    o = with(o, "load_duration", json_integer((json_int_t)((queued - m->t0_ms) * 1e6)));
    o = with(o, "prompt_eval_count", json_integer(u.prompt_tokens));
    o = with(o, "prompt_eval_duration", json_integer((json_int_t)(t.prompt_ms * 1e6)));
    o = with(o, "eval_count", json_integer(u.completion_tokens));
    return with(o, "eval_duration", json_integer((json_int_t)(t.predicted_ms * 1e6)));
}

/* {"error": message}; a message quoting client bytes that are not UTF-8
 * gets U+FFFD for them (json_pack would fail, and the error turn into a
 * 503 "out of memory"). */
static json_t *error_object(const oai_error *e) {
    return json_pack("{s:o}", "error", oai_content_json(e->message, strlen(e->message)));
}

char *ollama_error_json(const oai_error *e) {
    return dump(error_object(e), false);
}

char *ollama_error_line(const oai_error *e) {
    return dump(error_object(e), true);
}

char *ollama_chunk(const ollama_meta *m, const char *text, size_t len) {
    return dump(with(with_text(head(m), m, text, len, NULL, 0), "done", json_false()), true);
}

char *ollama_tool_calls_line(const ollama_meta *m, const oai_tool_call *calls, int n) {
    return dump(with(with_text(head(m), m, "", 0, calls, n), "done", json_false()), true);
}

char *ollama_done_line(const ollama_meta *m, const job_group *g) {
    return dump(with_done(with_text(head(m), m, "", 0, NULL, 0), m, g), true);
}

char *ollama_answer(const jobs_ctx *ctx, const job_group *g, const ollama_meta *m, oai_error *e) {
    const sched_job *j = g->jobs[0];
    jobs_note(ctx, j);
    if (j->st) {
        jobs_error(ctx, j, e);
        return NULL;
    }
    oai_tool_call *calls = NULL;
    int n = 0;
    bool is_call = tools_parse_output(g->r, j->result.text, j->result.text_len, &calls, &n);
    json_t *o = is_call ? with_text(head(m), m, "", 0, calls, n)
                        : with_text(head(m), m, j->result.text, j->result.text_len, NULL, 0);
    tools_free_calls(calls, n);
    char *body = dump(with_done(o, m, g), false);
    if (!body) oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "out of memory");
    return body;
}

char *ollama_load_json(const ollama_request *r) {
    json_t *o = with_text(head(&r->meta), &r->meta, "", 0, NULL, 0);
    o = with(o, "done", json_true());
    return dump(with(o, "done_reason", json_string(r->load_reason)), false);
}

/* ---- model information ----------------------------------------------------------------------
 * Ollama describes a GGUF file; we describe the loaded checkpoint from its
 * config.json: the text model's type is the family ("mistral", "llama"),
 * with "clip" for the vision tower, as Ollama lists llava's. */

/* Parameters counted from config.json's shapes: the decoder (embeddings,
 * attention, MLP, norms, lm_head unless tied), the CLIP tower (patch and
 * position embeddings, layers with their biases and norms) and the
 * projector. */
static int64_t parameter_count(const lv_model_config *c) {
    const lv_text_config *t = &c->text;
    const lv_vision_config *v = &c->vision;
    int64_t q = (int64_t)t->n_heads * t->head_dim, kv = (int64_t)t->n_kv_heads * t->head_dim;
    int64_t layer = t->dim * (q + 2 * kv) + q * t->dim + 3 * (int64_t)t->dim * t->hidden_dim +
                    2 * (int64_t)t->dim;
    int64_t text = (int64_t)t->vocab_size * t->dim * (t->tie_word_embeddings ? 1 : 2) +
                   t->n_layers * layer + t->dim;
    int64_t side = v->patch_size ? v->image_size / v->patch_size : 0;
    int64_t vlayer = 4 * ((int64_t)v->dim * v->dim + v->dim) + 2 * (int64_t)v->dim * v->hidden_dim +
                     v->hidden_dim + v->dim + 4 * v->dim;
    int64_t vision = (int64_t)v->n_channels * v->patch_size * v->patch_size * v->dim +
                     (side * side + 2) * v->dim + 4 * v->dim + v->n_layers * vlayer;
    int64_t in = (int64_t)v->dim * (c->n_feature_layers > 0 ? c->n_feature_layers : 1);
    int64_t projector = in * t->dim + (int64_t)t->dim * t->dim + 2 * t->dim;
    return text + vision + projector + (c->use_image_newline ? t->dim : 0);
}

/* "7.2B", "137M", as Ollama prints a parameter count. */
static void parameter_size(int64_t n, char *out, size_t size) {
    if (n >= 1000000000)
        snprintf(out, size, "%.1fB", n / 1e9);
    else if (n >= 1000000)
        snprintf(out, size, "%.0fM", n / 1e6);
    else
        snprintf(out, size, "%.0fK", n / 1e3);
}

/* The name with ":latest" when it has no tag, as Ollama lists names. */
static void full_name(const char *name, char *out, size_t size) {
    const char *slash = strrchr(name, '/');
    bool tagged = strchr(slash ? slash : name, ':') != NULL;
    snprintf(out, size, "%s%s", name, tagged ? "" : ":latest");
}

/* 64 hex digits naming the served model and its shapes, in the place of
 * Ollama's manifest digest. Not a content hash: the weights are never read
 * for it. FNV-1a over the name and the config's sizes, four ways. */
static void digest(const ollama_model *om, char out[65]) {
    const lv_model_config *c = llava_config(om->m);
    int64_t shape[] = {c->text.vocab_size, c->text.dim,        c->text.n_layers, c->text.hidden_dim,
                       c->vision.dim,      c->vision.n_layers, om->size};
    for (int k = 0; k < 4; k++) {
        uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)k;
        for (const char *p = om->name; *p; p++) h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
        for (size_t i = 0; i < LV_ARRAY_LEN(shape); i++)
            for (int b = 0; b < 8; b++)
                h = (h ^ (uint8_t)((uint64_t)shape[i] >> (8 * b))) * 0x100000001b3ull;
        snprintf(out + 16 * k, 17, "%016llx", (unsigned long long)h);
    }
}

/* "2024-06-04T14:38:31Z" of unix seconds. */
static json_t *time_json(int64_t unix_s) {
    time_t t = (time_t)unix_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    char s[32];
    strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(s);
}

/* details: {parent_model, format, family, families, parameter_size, quantization_level}.
 * The format is read from the config: GGUF pairs fill neither torch_dtype
 * nor an MLX quantization block, checkpoints in safetensors have one. */
static json_t *details_json(const ollama_model *om) {
    const lv_model_config *c = llava_config(om->m);
    char size[32], quant[32];
    parameter_size(parameter_count(c), size, sizeof size);
    const char *dt = c->torch_dtype;
    if (c->quant.present)
        snprintf(quant, sizeof quant, "MLX_Q%d_G%d", c->quant.bits, c->quant.group_size);
    else
        snprintf(quant, sizeof quant, "%s",
                 !strcmp(dt, "float16")    ? "F16"
                 : !strcmp(dt, "bfloat16") ? "BF16"
                 : !strcmp(dt, "float32")  ? "F32"
                                           : "unknown");
    bool safetensors = c->quant.present || dt[0];
    return json_pack("{s:s, s:s, s:s, s:[s, s], s:s, s:s}", "parent_model", "", "format",
                     safetensors ? "safetensors" : "gguf", "family", c->text.model_type, "families",
                     c->text.model_type, "clip", "parameter_size", size, "quantization_level",
                     quant);
}

/* {name, model, size, digest, details}: what /api/tags and /api/ps share. */
static json_t *model_entry(const ollama_model *om) {
    char name[OLLAMA_NAME_MAX + 8], dg[65];
    full_name(om->name, name, sizeof name);
    digest(om, dg);
    return with(json_pack("{s:s, s:s, s:I, s:s}", "name", name, "model", name, "size",
                          (json_int_t)om->size, "digest", dg),
                "details", details_json(om));
}

char *ollama_tags_json(const ollama_model *om) {
    json_t *e = with(model_entry(om), "modified_at", time_json(om->created));
    return dump(json_pack("{s:[o]}", "models", e), false);
}

char *ollama_ps_json(const ollama_model *om) {
    json_t *e = model_entry(om);
    /* one model, never unloaded: it expires at the end of time as Ollama counts it */
    e = with(e, "expires_at", json_string("9999-12-31T23:59:59Z"));
    e = with(e, "size_vram", json_integer(om->on_gpu ? (json_int_t)om->size : 0));
    e = with(e, "context_length", json_integer(om->ctx_size));
    return dump(json_pack("{s:[o]}", "models", e), false);
}

/* The chat template (text/chat_template.c) in Go template syntax, for show. */
static const char template_text[] =
    "{{- range .Messages }}{{ if eq .Role \"system\" }}<<SYS>>\n{{ .Content }}\n<</SYS>>\n\n"
    "{{ else if eq .Role \"user\" }}[INST] {{ .Content }} [/INST]"
    "{{ else if eq .Role \"assistant\" }} {{ .Content }}</s> {{ end }}{{ end }}";

/* model_info: Ollama's GGUF keys, from the config. */
static json_t *model_info_json(const ollama_model *om) {
    const lv_model_config *c = llava_config(om->m);
    const lv_text_config *t = &c->text;
    const char *a = t->model_type;
    json_t *o = json_pack("{s:s, s:I}", "general.architecture", a, "general.parameter_count",
                          (json_int_t)parameter_count(c));
    char key[96];
#define KEY(suffix, val) (snprintf(key, sizeof key, "%s.%s", a, suffix), o = with(o, key, val))
    KEY("context_length", json_integer(t->max_pos));
    KEY("embedding_length", json_integer(t->dim));
    KEY("block_count", json_integer(t->n_layers));
    KEY("feed_forward_length", json_integer(t->hidden_dim));
    KEY("attention.head_count", json_integer(t->n_heads));
    KEY("attention.head_count_kv", json_integer(t->n_kv_heads));
    KEY("attention.layer_norm_rms_epsilon", json_real(t->rms_eps));
    KEY("rope.dimension_count", json_integer(t->head_dim));
    KEY("rope.freq_base", json_real(t->rope_theta));
    KEY("vocab_size", json_integer(t->vocab_size));
#undef KEY
    if (t->bos_id >= 0) o = with(o, "tokenizer.ggml.bos_token_id", json_integer(t->bos_id));
    if (t->n_eos) o = with(o, "tokenizer.ggml.eos_token_id", json_integer(t->eos_ids[0]));
    return o;
}

/* projector_info: the vision tower's, with Ollama's clip.* keys. */
static json_t *projector_info_json(const ollama_model *om) {
    const lv_vision_config *v = &llava_config(om->m)->vision;
    return json_pack("{s:s, s:b, s:i, s:i, s:i, s:i, s:i, s:i}", "general.architecture", "clip",
                     "clip.has_vision_encoder", 1, "clip.vision.image_size", v->image_size,
                     "clip.vision.patch_size", v->patch_size, "clip.vision.embedding_length",
                     v->dim, "clip.vision.feed_forward_length", v->hidden_dim,
                     "clip.vision.block_count", v->n_layers, "clip.vision.attention.head_count",
                     v->n_heads);
}

char *ollama_show_json(const ollama_model *om) {
    char name[OLLAMA_NAME_MAX + 8], params[128];
    full_name(om->name, name, sizeof name);
    snprintf(params, sizeof params,
             "num_ctx                        %d\nstop                    "
             "       \"</s>\"",
             om->ctx_size);
    size_t n = sizeof template_text + sizeof name + 256;
    char *mf = malloc(n);
    if (mf)
        snprintf(mf, n,
                 "# Modelfile generated by llava-server (for reading: it cannot be built)\n"
                 "FROM %s\nTEMPLATE \"\"\"%s\"\"\"\nPARAMETER num_ctx %d\n"
                 "PARAMETER stop \"</s>\"\n",
                 name, template_text, om->ctx_size);
    json_t *o = mf ? json_pack("{s:s, s:s, s:s}", "modelfile", mf, "parameters", params, "template",
                               template_text)
                   : NULL;
    free(mf);
    o = with(o, "details", details_json(om));
    o = with(o, "model_info", model_info_json(om));
    o = with(o, "projector_info", projector_info_json(om));
    o = with(o, "capabilities", json_pack("[s, s, s]", "completion", "vision", "tools"));
    return dump(with(o, "modified_at", time_json(om->created)), false);
}

char *ollama_version_json(void) {
    return dump(json_pack("{s:s}", "version", LLAVA_VERSION), false);
}

lv_status ollama_parse_show(const char *body, size_t len, oai_error *e) {
    json_error_t je;
    json_t *root = len ? json_loadb_whole(body, len, 0, &je) : NULL;
    if (!len) return BAD(e, "missing request body");
    if (!root) return BAD(e, "invalid JSON body: %s", je.text);
    json_t *m = json_object_get(root, "model");
    if (!json_is_string(m) || !json_string_length(m)) m = json_object_get(root, "name");
    lv_status st = json_is_string(m) && json_string_length(m) ? LV_OK : BAD(e, "model is required");
    json_decref(root);
    return st;
}
