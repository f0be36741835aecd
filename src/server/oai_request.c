/*
 * oai_request.c - POST /v1/chat/completions and /v1/completions bodies →
 * a validated oai_request.
 *
 * Validation follows OpenAI's API reference: ranges (temperature [0, 2],
 * top_p [0, 1], penalties [-2, 2], top_logprobs [0, 20], logit_bias
 * [-100, 100], stop at most 4 strings), and its error wording, so a client
 * sees the same message and "param" it would from api.openai.com:
 *   Invalid type for 'n': expected an integer, but got a string instead.
 *   Invalid 'n': integer above maximum value. Expected a value <= 8, but got 9 instead.
 *   Missing required parameter: 'messages'.
 *   Invalid value: 'robot'. Supported values are: 'system', 'user', 'assistant' and 'developer'.
 * llama.cpp's server adds top_k, min_p and repetition_penalty; we accept
 * them with the same meaning (engine/sample.h). Unknown fields are ignored.
 *
 * Strings are not copied: the request keeps the parsed json_t and points
 * into it, so one json_decref in oai_request_free releases everything.
 */
#include "server/oai.h"
#include "base/buf.h"
#include "engine/json_schema.h"
#include "engine/request_video.h"
#include "io/json_type.h"
#include "server/tools.h"

#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void oai_limits_default(oai_limits *lim) {
    lim->max_body = 32u << 20;
    lim->default_max_tokens = 0; /* the rest of the context (jobs.c, once the prompt is known) */
    lim->max_tokens = 4096;
    lim->max_n = 8;
    lim->max_images = 16;
    lim->max_messages = 1024;
    lim->max_logit_bias = SAMPLE_MAX_BIAS;
}

/* ---- field helpers ------------------------------------------------------
 * Callers fetch a member with json_member (absent or null: NULL, "not
 * given"); these check its value. A wrong type or a value out of range fills
 * e with OpenAI's wording and returns LV_ERR_ARG. */

#define BAD(e, param, code, ...) oai_fail(e, LV_ERR_ARG, 0, param, code, __VA_ARGS__)

static lv_status bad_type(oai_error *e, const char *param, const char *want, const json_t *v) {
    return BAD(e, param, "invalid_type", "Invalid type for '%s': expected %s, but got %s instead.",
               param, want, json_type_name(v));
}

/* An integral number (2 or 2.0) in [lo, hi]. */
static lv_status get_int(const json_t *v, const char *param, int64_t lo, int64_t hi, int64_t *out,
                         oai_error *e) {
    if (!json_as_int64(v, out)) return bad_type(e, param, "an integer", v);
    if (*out < lo)
        return BAD(e, param, "integer_below_min_value",
                   "Invalid '%s': integer below minimum value. Expected a value >= %lld, but got "
                   "%lld instead.",
                   param, (long long)lo, (long long)*out);
    if (*out > hi)
        return BAD(e, param, "integer_above_max_value",
                   "Invalid '%s': integer above maximum value. Expected a value <= %lld, but got "
                   "%lld instead.",
                   param, (long long)hi, (long long)*out);
    return LV_OK;
}

/* A number in [lo, hi] (lo excluded when lo_open). */
static lv_status get_num(const json_t *v, const char *param, double lo, bool lo_open, double hi,
                         double *out, oai_error *e) {
    if (!json_is_number(v)) return bad_type(e, param, "a number", v);
    *out = json_number_value(v);
    if (*out < lo || (lo_open && *out == lo))
        return BAD(e, param, "decimal_below_min_value",
                   "Invalid '%s': decimal below minimum value. Expected a value %s %g, but got %g "
                   "instead.",
                   param, lo_open ? ">" : ">=", lo, *out);
    if (*out > hi)
        return BAD(e, param, "decimal_above_max_value",
                   "Invalid '%s': decimal above maximum value. Expected a value <= %g, but got %g "
                   "instead.",
                   param, hi, *out);
    return LV_OK;
}

static lv_status get_bool(const json_t *v, const char *param, bool *out, oai_error *e) {
    if (!json_is_boolean(v)) return bad_type(e, param, "a boolean", v);
    *out = json_is_true(v);
    return LV_OK;
}

/* ---- sampling and output fields (both endpoints) ------------------------ */

/* Optional float field into *dst, marking bit in r->set. */
static lv_status opt_float(const json_t *root, const char *key, double lo, bool lo_open, double hi,
                           float *dst, unsigned bit, oai_request *r, oai_error *e) {
    json_t *v = json_member(root, key);
    if (!v) return LV_OK;
    double d = 0;
    lv_status st = get_num(v, key, lo, lo_open, hi, &d, e);
    if (st) return st;
    *dst = (float)d;
    r->set |= bit;
    return LV_OK;
}

static lv_status parse_max_tokens(const json_t *root, const oai_limits *lim, oai_request *r,
                                  oai_error *e) {
    /* max_completion_tokens replaces max_tokens in the current API; either works. */
    const char *key =
        json_member(root, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    json_t *v = json_member(root, key);
    r->max_tokens = lim->default_max_tokens;
    if (!v) return LV_OK;
    int64_t n = 0;
    lv_status st = get_int(v, key, 1, lim->max_tokens > 0 ? lim->max_tokens : INT32_MAX, &n, e);
    if (st) return st;
    r->max_tokens = (int)n;
    r->set |= OAI_SET_MAX_TOKENS;
    return LV_OK;
}

static lv_status parse_stop(const json_t *root, oai_request *r, oai_error *e) {
    json_t *v = json_member(root, "stop");
    if (!v) return LV_OK;
    if (json_is_string(v)) {
        if (!json_string_length(v))
            return BAD(e, "stop", "invalid_value", "Invalid 'stop': empty string.");
        r->stop[r->n_stop++] = json_string_value(v);
        return LV_OK;
    }
    if (!json_is_array(v)) return bad_type(e, "stop", "a string or an array of strings", v);
    size_t n = json_array_size(v);
    if (n > LV_ARRAY_LEN(r->stop))
        return BAD(e, "stop", "array_above_max_length",
                   "Invalid 'stop': array too long. Expected an array with maximum length %zu, "
                   "but got an array with length %zu instead.",
                   LV_ARRAY_LEN(r->stop), n);
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(v, i);
        char param[32];
        snprintf(param, sizeof param, "stop[%zu]", i);
        if (!json_is_string(s)) return bad_type(e, param, "a string", s);
        if (!json_string_length(s))
            return BAD(e, param, "invalid_value", "Invalid '%s': empty string.", param);
        r->stop[r->n_stop++] = json_string_value(s);
    }
    return LV_OK;
}

static lv_status parse_logit_bias(const json_t *root, const oai_limits *lim, oai_request *r,
                                  oai_error *e) {
    json_t *v = json_member(root, "logit_bias");
    if (!v) return LV_OK;
    if (!json_is_object(v)) return bad_type(e, "logit_bias", "an object", v);
    size_t n = json_object_size(v);
    if (n > (size_t)lim->max_logit_bias)
        return BAD(e, "logit_bias", "too_many_entries",
                   "Invalid 'logit_bias': too many entries. Expected at most %d, but got %zu.",
                   lim->max_logit_bias, n);
    if (!n) return LV_OK;
    r->logit_bias = calloc(n, sizeof *r->logit_bias);
    if (!r->logit_bias) return oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "Out of memory.");
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val) {
        char *end;
        errno = 0;
        long long id = strtoll(key, &end, 10);
        if (!key[0] || *end || errno || id < 0 || id > INT32_MAX || key[0] == '-' ||
            key[0] == '+' || key[0] == ' ')
            return BAD(e, "logit_bias", "invalid_value",
                       "Invalid 'logit_bias': key '%.40s' is not a token id (a non-negative "
                       "integer as a string).",
                       key);
        char param[64];
        snprintf(param, sizeof param, "logit_bias.%s", key);
        double b = 0;
        lv_status st = get_num(val, param, -100, false, 100, &b, e);
        if (st) return st;
        r->logit_bias[r->n_logit_bias++] = (oai_logit_bias){(int32_t)id, (float)b};
    }
    return LV_OK;
}

static lv_status parse_stream(const json_t *root, oai_request *r, oai_error *e) {
    json_t *v = json_member(root, "stream");
    lv_status st;
    if (v && (st = get_bool(v, "stream", &r->stream, e))) return st;
    json_t *so = json_member(root, "stream_options");
    if (!so) return LV_OK;
    if (!json_is_object(so)) return bad_type(e, "stream_options", "an object", so);
    if (!r->stream)
        return BAD(e, "stream_options", "invalid_value",
                   "The 'stream_options' parameter is only allowed when 'stream' is enabled.");
    json_t *iu = json_member(so, "include_usage");
    if (iu && (st = get_bool(iu, "stream_options.include_usage", &r->include_usage, e))) return st;
    return LV_OK;
}

static lv_status parse_logprobs(const json_t *root, oai_request *r, oai_error *e) {
    json_t *v = json_member(root, "logprobs");
    int64_t n = 0;
    lv_status st;
    if (r->kind == OAI_COMPLETION) {
        /* Completions: "logprobs" is the number of top alternatives, 0..5. */
        if (!v) return LV_OK;
        if ((st = get_int(v, "logprobs", 0, 5, &n, e))) return st;
        r->logprobs = true;
        r->top_logprobs = (int)n;
        return LV_OK;
    }
    if (v && (st = get_bool(v, "logprobs", &r->logprobs, e))) return st;
    json_t *t = json_member(root, "top_logprobs");
    if (!t) return LV_OK;
    if ((st = get_int(t, "top_logprobs", 0, SAMPLE_MAX_TOP, &n, e))) return st;
    if (!r->logprobs)
        return BAD(e, "top_logprobs", "invalid_value",
                   "Invalid value for 'top_logprobs': 'logprobs' must be set to true when "
                   "'top_logprobs' is used.");
    r->top_logprobs = (int)n;
    return LV_OK;
}

/* Everything but messages / prompt. */
/* ---- structured outputs ---------------------------------------------------
 * response_format {"type": "text" | "json_object" | "json_schema",
 * "json_schema": {"name", "schema", "strict", "description"}} or llama.cpp's
 * `grammar` (engine/grammar.h syntax) become the grammar text the request
 * decodes under; a schema keyword it cannot enforce is a 400 naming it. */

static lv_status take_grammar(oai_request *r, lv_buf *b, const char *param, oai_error *e) {
    /* No text means a builder lost it to a failed allocation: decoding
     * without the grammar would answer free text with a 200. */
    if (!b->data || !b->len)
        return oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "out of memory building the grammar");
    r->grammar_text = b->data;
    r->grammar_len = b->len;
    r->grammar_param = param;
    b->data = NULL;
    return LV_OK;
}

static lv_status parse_format(const json_t *root, oai_request *r, oai_error *e) {
    json_t *f = json_member(root, "response_format"), *g = json_member(root, "grammar");
    if (f && g)
        return BAD(e, "grammar", "invalid_value", "Give 'response_format' or 'grammar', not both.");
    lv_buf b = {0};
    lv_err err = {{0}};
    if (g) {
        if (!json_is_string(g) || !json_string_length(g))
            return bad_type(e, "grammar", "a non-empty string", g);
        if (lv_buf_append(&b, json_string_value(g), json_string_length(g)))
            return oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "out of memory");
        return take_grammar(r, &b, "grammar", e);
    }
    if (!f) return LV_OK;
    if (!json_is_object(f)) return bad_type(e, "response_format", "an object", f);
    json_t *type = json_object_get(f, "type");
    const char *t = json_string_value(type);
    if (!t)
        return BAD(e, "response_format.type", "invalid_value",
                   "'response_format.type' must be \"text\", \"json_object\" or \"json_schema\".");
    if (!strcmp(t, "text")) return LV_OK;
    lv_status st;
    if (!strcmp(t, "json_object")) {
        if ((st = json_object_grammar(&b, &err))) {
            lv_buf_free(&b);
            return oai_fail(e, st, 0, NULL, NULL, "%s", err.msg);
        }
        return take_grammar(r, &b, "response_format", e);
    }
    if (strcmp(t, "json_schema"))
        return BAD(e, "response_format.type", "invalid_value",
                   "'response_format.type' must be \"text\", \"json_object\" or \"json_schema\", "
                   "got \"%.40s\".",
                   t);
    json_t *js = json_object_get(f, "json_schema");
    if (!json_is_object(js))
        return BAD(e, "response_format.json_schema", "invalid_value",
                   "'response_format.json_schema' must be an object with 'name' and 'schema'.");
    json_t *schema = json_object_get(js, "schema");
    if (!json_is_object(schema))
        return BAD(e, "response_format.json_schema.schema", "invalid_value",
                   "'response_format.json_schema.schema' must be a JSON Schema object.");
    char *text = json_dumps_whole(schema, JSON_COMPACT);
    if (!text) return oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "out of memory");
    st = json_schema_to_grammar(text, strlen(text), &b, &err);
    free(text);
    if (st) {
        lv_buf_free(&b);
        return oai_fail(e, st, 0, "response_format.json_schema.schema", "invalid_schema",
                        "Invalid schema for response_format: %s", err.msg);
    }
    return take_grammar(r, &b, "response_format", e);
}

/* Fields this server does not implement are refused, never ignored; tools
 * only on /v1/chat/completions (server/tools.h). */
static lv_status refuse_unsupported(const json_t *root, oai_kind kind, oai_error *e) {
    static const char *const fields[] = {"functions",  "function_call", "audio",
                                         "prediction", "modalities",    "tools"};
    size_t n = sizeof fields / sizeof fields[0] - (kind == OAI_CHAT);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_member(root, fields[i]);
        if (!v || (json_is_array(v) && json_array_size(v) == 0)) continue;
        return BAD(e, fields[i], "unsupported_parameter", "'%s' is not supported by this server.",
                   fields[i]);
    }
    json_t *tc = json_member(root, "tool_choice");
    if (kind != OAI_CHAT && tc && !(json_is_string(tc) && !strcmp(json_string_value(tc), "none")))
        return BAD(e, "tool_choice", "unsupported_parameter",
                   "'tool_choice' is only supported on /v1/chat/completions.");
    return LV_OK;
}

static lv_status parse_common(const json_t *root, const oai_limits *lim, oai_request *r,
                              oai_error *e) {
    lv_status st;
    sample_params_default(&r->sampling);
    json_t *v = json_member(root, "model");
    if (v) {
        if (!json_is_string(v)) return bad_type(e, "model", "a string", v);
        r->model = json_string_value(v);
    }
    if ((st = parse_max_tokens(root, lim, r, e))) return st;
    sample_params *sp = &r->sampling;
    if ((st = opt_float(root, "temperature", 0, false, 2, &sp->temperature, OAI_SET_TEMPERATURE, r,
                        e)) ||
        (st = opt_float(root, "top_p", 0, false, 1, &sp->top_p, OAI_SET_TOP_P, r, e)) ||
        (st = opt_float(root, "min_p", 0, false, 1, &sp->min_p, OAI_SET_MIN_P, r, e)) ||
        (st = opt_float(root, "repetition_penalty", 0, true, 100, &sp->repetition_penalty,
                        OAI_SET_REPETITION_PENALTY, r, e)) ||
        (st = opt_float(root, "frequency_penalty", -2, false, 2, &sp->frequency_penalty,
                        OAI_SET_FREQUENCY_PENALTY, r, e)) ||
        (st = opt_float(root, "presence_penalty", -2, false, 2, &sp->presence_penalty,
                        OAI_SET_PRESENCE_PENALTY, r, e)))
        return st;
    /* top_p 0 (allowed by OpenAI) keeps only the most likely token; the
     * sampler wants (0, 1], and the smallest positive value does that. */
    if ((r->set & OAI_SET_TOP_P) && sp->top_p <= 0) sp->top_p = FLT_MIN;
    int64_t n = 0;
    if ((v = json_member(root, "top_k"))) { /* -1 or 0: off (vLLM, llama.cpp) */
        if ((st = get_int(v, "top_k", -1, INT32_MAX, &n, e))) return st;
        sp->top_k = n < 0 ? 0 : (int)n;
        r->set |= OAI_SET_TOP_K;
    }
    if ((v = json_member(root, "seed"))) {
        if ((st = get_int(v, "seed", INT64_MIN, INT64_MAX, &n, e))) return st;
        sp->seed = (uint64_t)n;
        r->set |= OAI_SET_SEED;
    }
    r->n = 1;
    if ((v = json_member(root, "n"))) {
        if ((st = get_int(v, "n", 1, lim->max_n, &n, e))) return st;
        r->n = (int)n;
    }
    if ((st = parse_stop(root, r, e)) || (st = parse_logprobs(root, r, e)) ||
        (st = parse_logit_bias(root, lim, r, e)) || (st = parse_stream(root, r, e)) ||
        (st = parse_format(root, r, e)) || (st = refuse_unsupported(root, r->kind, e)) ||
        (r->kind == OAI_CHAT && (st = tools_parse(root, r->texts_, r, e))))
        return st;
    sp->n_top_logprobs = r->top_logprobs;
    return LV_OK;
}

/* ---- messages -----------------------------------------------------------
 * OpenAI content is a string or an array of parts; we keep text and
 * image_url parts (image_url is {"url", "detail"} or, as several clients
 * send it, a bare string). Images only in user messages: system and
 * assistant content is text in OpenAI's schema, and the template has no
 * place for them. */

static lv_status parse_role(const json_t *m, const char *param, chat_role *role, bool *tool,
                            oai_error *e) {
    char p[64];
    snprintf(p, sizeof p, "%s.role", param);
    json_t *v = json_member(m, "role");
    if (!v) return BAD(e, p, "missing_required_parameter", "Missing required parameter: '%s'.", p);
    if (!json_is_string(v)) return bad_type(e, p, "a string", v);
    const char *s = json_string_value(v);
    if (!strcmp(s, "system") || !strcmp(s, "developer"))
        *role = CHAT_SYSTEM;
    else if (!strcmp(s, "user"))
        *role = CHAT_USER;
    else if (!strcmp(s, "assistant"))
        *role = CHAT_ASSISTANT;
    else if (!strcmp(s, "tool"))
        *role = CHAT_USER, *tool = true; /* a result: text in a user turn (server/tools.h) */
    else
        return BAD(e, p, "invalid_value",
                   "Invalid value: '%.40s'. Supported values are: 'system', 'user', 'assistant', "
                   "'tool' and 'developer'.",
                   s);
    return LV_OK;
}

static bool has_prefix(const char *s, const char *p) {
    return !strncmp(s, p, strlen(p));
}

/* A media URL the server can fetch (server/media.h): a data: URI, http(s)://
 * or file://; else the 400 at param naming kind ("image" or "video"). */
static lv_status check_media_url(const char *u, const char *param, const char *kind, oai_error *e) {
    if (has_prefix(u, "data:") || has_prefix(u, "file://") || has_prefix(u, "http://") ||
        has_prefix(u, "https://"))
        return LV_OK;
    return BAD(e, param, !strcmp(kind, "video") ? "invalid_video_url" : "invalid_image_url",
               "Invalid %s URL '%.40s': expected a data: URI, an http(s):// URL or a file:// path.",
               kind, u);
}

static lv_status parse_image(const json_t *part, const char *param, oai_image *img, oai_error *e) {
    char p[160];
    snprintf(p, sizeof p, "%s.image_url", param);
    json_t *iu = json_member(part, "image_url");
    if (!iu) return BAD(e, p, "missing_required_parameter", "Missing required parameter: '%s'.", p);
    json_t *url = iu;
    img->detail = OAI_DETAIL_AUTO;
    if (json_is_object(iu)) {
        json_t *d = json_member(iu, "detail");
        if (d) {
            snprintf(p, sizeof p, "%s.image_url.detail", param);
            const char *ds = json_is_string(d) ? json_string_value(d) : NULL;
            if (!ds) return bad_type(e, p, "a string", d);
            if (!strcmp(ds, "low"))
                img->detail = OAI_DETAIL_LOW;
            else if (!strcmp(ds, "high"))
                img->detail = OAI_DETAIL_HIGH;
            else if (strcmp(ds, "auto"))
                return BAD(e, p, "invalid_value",
                           "Invalid value: '%.40s'. Supported values are: 'auto', 'low' and "
                           "'high'.",
                           ds);
        }
        snprintf(p, sizeof p, "%s.image_url.url", param);
        url = json_member(iu, "url");
        if (!url)
            return BAD(e, p, "missing_required_parameter", "Missing required parameter: '%s'.", p);
    } else if (!json_is_string(iu)) {
        return bad_type(e, p, "an object or a string", iu);
    }
    if (!json_is_string(url)) return bad_type(e, p, "a string", url);
    const char *u = json_string_value(url);
    lv_status st = check_media_url(u, p, "image", e);
    if (st) return st;
    img->url = u;
    return LV_OK;
}

/* {"type": "video_frames", "video_frames": {"frames": [...], "fps": F}};
 * the flat form {"type": "video_frames", "frames": [...], "fps": F} too. */
static lv_status parse_video(const json_t *part, const char *param, oai_video *v, oai_error *e) {
    char p[200];
    const json_t *o = json_member(part, "video_frames");
    if (o && !json_is_object(o)) {
        snprintf(p, sizeof p, "%s.video_frames", param);
        return bad_type(e, p, "an object", o);
    }
    if (!o) o = part;
    snprintf(p, sizeof p, "%s.video_frames.frames", param);
    const json_t *fr = json_member(o, "frames");
    if (!fr) return BAD(e, p, "missing_required_parameter", "Missing required parameter: '%s'.", p);
    if (!json_is_array(fr)) return bad_type(e, p, "an array of image URLs", fr);
    size_t n = json_array_size(fr);
    if (n < 1 || n > VIDEO_MAX_INPUT_FRAMES)
        return BAD(e, p, n ? "array_above_max_length" : "empty_array",
                   "Invalid '%s': a video of %zu frames; 1 to %d frames are accepted.", p, n,
                   VIDEO_MAX_INPUT_FRAMES);
    snprintf(p, sizeof p, "%s.video_frames.fps", param);
    const json_t *fps = json_member(o, "fps");
    v->fps = 0;
    if (fps) {
        if (!json_is_number(fps)) return bad_type(e, p, "a number", fps);
        v->fps = json_number_value(fps);
        if (!(v->fps > 0 && v->fps <= 1000))
            return BAD(e, p, "invalid_value", "Invalid '%s': expected a number in (0, 1000].", p);
    }
    if (!(v->urls = calloc(n, sizeof *v->urls)))
        return oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "Out of memory.");
    for (size_t i = 0; i < n; i++) {
        snprintf(p, sizeof p, "%s.video_frames.frames[%zu]", param, i);
        const json_t *u = json_array_get(fr, i);
        if (json_is_object(u)) u = json_member(u, "url");
        if (!u || !json_is_string(u)) return bad_type(e, p, "a URL or {\"url\": URL}", u);
        const char *s = json_string_value(u);
        lv_status st = check_media_url(s, p, "image", e);
        if (st) return st;
        v->urls[i] = s;
    }
    v->n_frames = (int)n;
    return LV_OK;
}

/* {"type": "video_url", "video_url": {"url": u}} or "video_url": u. */
static lv_status parse_video_url(const json_t *part, const char *param, oai_video *v,
                                 oai_error *e) {
    char p[200];
    snprintf(p, sizeof p, "%s.video_url", param);
    const json_t *u = json_member(part, "video_url");
    if (!u) return BAD(e, p, "missing_required_parameter", "Missing required parameter: '%s'.", p);
    if (json_is_object(u)) {
        snprintf(p, sizeof p, "%s.video_url.url", param);
        u = json_member(u, "url");
        if (!u)
            return BAD(e, p, "missing_required_parameter", "Missing required parameter: '%s'.", p);
    }
    if (!json_is_string(u)) return bad_type(e, p, "a string", u);
    const char *s = json_string_value(u);
    lv_status st = check_media_url(s, p, "video", e);
    if (st) return st;
    v->file_url = s;
    return LV_OK;
}

static lv_status parse_part(const json_t *part, const char *param, chat_part *cp, oai_image *img,
                            bool *is_image, oai_video *vid, bool *is_video, oai_error *e) {
    char p[160];
    if (!json_is_object(part)) return bad_type(e, param, "an object", part);
    snprintf(p, sizeof p, "%s.type", param);
    json_t *t = json_member(part, "type");
    if (!t) return BAD(e, p, "missing_required_parameter", "Missing required parameter: '%s'.", p);
    if (!json_is_string(t)) return bad_type(e, p, "a string", t);
    const char *ts = json_string_value(t);
    *is_image = !strcmp(ts, "image_url");
    *is_video = !strcmp(ts, "video_frames");
    if (*is_image) {
        cp->type = CHAT_PART_IMAGE;
        return parse_image(part, param, img, e);
    }
    if (*is_video) {
        cp->type = CHAT_PART_VIDEO;
        return parse_video(part, param, vid, e);
    }
    if (!strcmp(ts, "video_url")) {
        cp->type = CHAT_PART_VIDEO;
        *is_video = true;
        return parse_video_url(part, param, vid, e);
    }
    if (strcmp(ts, "text"))
        return BAD(e, p, "invalid_value",
                   "Invalid value: '%.40s'. Supported values are: 'text', 'image_url', "
                   "'video_url' and 'video_frames'.",
                   ts);
    snprintf(p, sizeof p, "%s.text", param);
    json_t *x = json_member(part, "text");
    if (!x) return BAD(e, p, "missing_required_parameter", "Missing required parameter: '%s'.", p);
    if (!json_is_string(x)) return bad_type(e, p, "a string", x);
    cp->type = CHAT_PART_TEXT;
    cp->text = json_string_value(x);
    cp->len = json_string_length(x);
    return LV_OK;
}

/* Keeps text (taken) with the request; a part of it at *cp. */
static lv_status keep_part(oai_request *r, lv_buf *text, chat_part *cp, oai_error *e) {
    json_t *j = json_stringn(text->data ? text->data : "", text->len);
    lv_buf_free(text);
    if (!j || json_array_append_new(r->texts_, j))
        return oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "Out of memory.");
    *cp = (chat_part){CHAT_PART_TEXT, json_string_value(j), json_string_length(j)};
    return LV_OK;
}

/* The text of a tool or assistant message's content (a string or text parts) into out. */
static lv_status content_text(const json_t *c, const char *p, lv_buf *out, oai_error *e) {
    if (json_is_string(c))
        return lv_buf_append(out, json_string_value(c), json_string_length(c))
                   ? oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "Out of memory.")
                   : LV_OK;
    if (!json_is_array(c)) return bad_type(e, p, "a string or an array of text parts", c);
    for (size_t j = 0; j < json_array_size(c); j++) {
        char pp[128];
        snprintf(pp, sizeof pp, "%s[%zu]", p, j);
        chat_part cp = {0};
        oai_image img = {0};
        oai_video vid = {0};
        bool is_image = false, is_video = false;
        lv_status st =
            parse_part(json_array_get(c, j), pp, &cp, &img, &is_image, &vid, &is_video, e);
        free(vid.urls);
        if (st) return st;
        if (is_image || is_video)
            return BAD(e, pp, "invalid_value",
                       "Invalid '%s': %s are only supported in 'user' messages.", pp,
                       is_image ? "images" : "videos");
        if (lv_buf_append(out, cp.text, cp.len))
            return oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "Out of memory.");
    }
    return LV_OK;
}

/* A tool message (index i): its result line, a part of the user turn *msg
 * (merged with the tool messages just before it). */
static lv_status parse_tool_message(const json_t *m, size_t i, oai_request *r, chat_message *msg,
                                    size_t *n_parts, oai_error *e) {
    char p[96];
    snprintf(p, sizeof p, "messages[%zu].tool_call_id", i);
    json_t *id = json_member(m, "tool_call_id");
    if (!id) return BAD(e, p, "missing_required_parameter", "Missing required parameter: '%s'.", p);
    if (!json_is_string(id)) return bad_type(e, p, "a string", id);
    snprintf(p, sizeof p, "messages[%zu].content", i);
    json_t *c = json_member(m, "content");
    if (!c) return BAD(e, p, "missing_required_parameter", "Missing required parameter: '%s'.", p);
    lv_buf content = {0}, line = {0};
    lv_status st = content_text(c, p, &content, e);
    if (!st && msg->n_parts && lv_buf_puts(&line, "\n"))
        st = oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "Out of memory.");
    if (!st && tools_render_result(json_string_value(id), content.data ? content.data : "",
                                   content.len, &line))
        st = oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "Out of memory.");
    lv_buf_free(&content);
    if (!st) st = keep_part(r, &line, &r->parts_[(*n_parts)++], e);
    lv_buf_free(&line);
    if (!st) msg->n_parts++;
    return st;
}

/* An assistant message with tool_calls: its content (may be null), a space,
 * and the calls as "[TOOL_CALLS] [...]", one text part. */
static lv_status parse_call_message(const json_t *m, const json_t *calls, const char *param,
                                    oai_request *r, chat_message *msg, size_t *n_parts,
                                    oai_error *e) {
    char p[96];
    snprintf(p, sizeof p, "%s.content", param);
    json_t *c = json_member(m, "content");
    lv_buf text = {0};
    lv_status st = c ? content_text(c, p, &text, e) : LV_OK;
    if (!st && text.len && lv_buf_puts(&text, " "))
        st = oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "Out of memory.");
    snprintf(p, sizeof p, "%s.tool_calls", param);
    if (!st) st = tools_render_calls(calls, p, &text, e);
    msg->parts = r->parts_ + *n_parts;
    if (!st) st = keep_part(r, &text, &r->parts_[(*n_parts)++], e);
    lv_buf_free(&text);
    if (!st) msg->n_parts = 1;
    return st;
}

/* Parts of message i into r->parts_ + *n_parts, images into r->images; the
 * message is r->messages[*n_msgs] (a tool message may join the one before). */
static lv_status parse_message(const json_t *m, size_t i, const oai_limits *lim, oai_request *r,
                               size_t *n_parts, size_t *n_msgs, bool *in_tools, oai_error *e) {
    char param[48], p[96];
    snprintf(param, sizeof param, "messages[%zu]", i);
    if (!json_is_object(m)) return bad_type(e, param, "an object", m);
    chat_message *msg = &r->messages[*n_msgs];
    bool tool = false;
    lv_status st = parse_role(m, param, &msg->role, &tool, e);
    if (st) return st;
    if (tool) {
        if (*in_tools) msg = &r->messages[*n_msgs - 1]; /* results in a row: one turn */
        if (!*in_tools) {
            msg->parts = r->parts_ + *n_parts;
            msg->n_parts = 0;
            (*n_msgs)++;
        }
        *in_tools = true;
        return parse_tool_message(m, i, r, msg, n_parts, e);
    }
    *in_tools = false;
    (*n_msgs)++;
    json_t *calls = json_member(m, "tool_calls");
    if (calls && msg->role == CHAT_ASSISTANT)
        return parse_call_message(m, calls, param, r, msg, n_parts, e);
    msg->parts = r->parts_ + *n_parts;
    snprintf(p, sizeof p, "%s.content", param);
    json_t *c = json_member(m, "content");
    if (!c) return BAD(e, p, "missing_required_parameter", "Missing required parameter: '%s'.", p);
    if (json_is_string(c)) {
        chat_part *cp = &r->parts_[(*n_parts)++];
        *cp = (chat_part){CHAT_PART_TEXT, json_string_value(c), json_string_length(c)};
        msg->n_parts = 1;
        return LV_OK;
    }
    if (!json_is_array(c)) return bad_type(e, p, "a string or an array of content parts", c);
    if (!json_array_size(c))
        return BAD(e, p, "empty_array",
                   "Invalid '%s': empty array. Expected an array with minimum length 1, but got "
                   "an empty array instead.",
                   p);
    for (size_t j = 0; j < json_array_size(c); j++) {
        snprintf(p, sizeof p, "%s.content[%zu]", param, j);
        oai_image img = {0};
        oai_video vid = {0};
        bool is_image = false, is_video = false;
        chat_part *cp = &r->parts_[(*n_parts)++];
        st = parse_part(json_array_get(c, j), p, cp, &img, &is_image, &vid, &is_video, e);
        if (st || is_video) {
            if (!st && msg->role != CHAT_USER)
                st = BAD(e, p, "invalid_value",
                         "Invalid '%s': videos are only supported in 'user' messages.", p);
            if (!st && r->has_video)
                st = BAD(e, p, "invalid_value", "Invalid '%s': one video per request is supported.",
                         p);
            if (!st && r->n_images)
                st =
                    BAD(e, p, "invalid_value",
                        "Invalid '%s': images and videos cannot be mixed in one request (SmolVLM's "
                        "processor takes one or the other).",
                        p);
            if (st) {
                free(vid.urls);
                return st;
            }
            vid.message = (int)i;
            r->video = vid;
            r->has_video = true;
            msg->n_parts++;
            continue;
        }
        msg->n_parts++;
        if (!is_image) continue;
        if (r->has_video)
            return BAD(e, p, "invalid_value",
                       "Invalid '%s': images and videos cannot be mixed in one request (SmolVLM's "
                       "processor takes one or the other).",
                       p);
        if (msg->role != CHAT_USER)
            return BAD(e, p, "invalid_value",
                       "Invalid '%s': images are only supported in 'user' messages.", p);
        if (r->n_images >= (size_t)lim->max_images)
            return BAD(e, p, "too_many_images",
                       "Too many images: at most %d per request are supported.", lim->max_images);
        img.message = (int)i;
        r->images[r->n_images++] = img;
    }
    return LV_OK;
}

/* The tools' text first in the last user turn (server/tools.h says why). */
static lv_status put_tools_text(oai_request *r, oai_error *e) {
    chat_message *last = NULL;
    for (size_t i = 0; i < r->n_messages; i++)
        if (r->messages[i].role == CHAT_USER) last = &r->messages[i];
    if (!last) return LV_OK; /* no user turn: nowhere to put them */
    if (!(r->tool_parts_ = calloc(last->n_parts + 1, sizeof *r->tool_parts_)))
        return oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "Out of memory.");
    lv_buf text = {0};
    if (tools_render_prompt(r, &text)) {
        lv_buf_free(&text);
        return oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "Out of memory.");
    }
    lv_status st = keep_part(r, &text, &r->tool_parts_[0], e);
    if (st) return st;
    memcpy(r->tool_parts_ + 1, last->parts, last->n_parts * sizeof *last->parts);
    last->parts = r->tool_parts_;
    last->n_parts++;
    return LV_OK;
}

static lv_status parse_messages(const json_t *root, const oai_limits *lim, oai_request *r,
                                oai_error *e) {
    json_t *ms = json_member(root, "messages");
    if (!ms)
        return BAD(e, "messages", "missing_required_parameter",
                   "Missing required parameter: 'messages'.");
    if (!json_is_array(ms)) return bad_type(e, "messages", "an array", ms);
    size_t n = json_array_size(ms);
    if (!n)
        return BAD(e, "messages", "empty_array",
                   "Invalid 'messages': empty array. Expected an array with minimum length 1, "
                   "but got an empty array instead.");
    if (n > (size_t)lim->max_messages)
        return BAD(e, "messages", "array_above_max_length",
                   "Invalid 'messages': array too long. Expected an array with maximum length "
                   "%d, but got an array with length %zu instead.",
                   lim->max_messages, n);
    size_t total = 0; /* parts, an upper bound on images too */
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_object_get(json_array_get(ms, i), "content");
        total += (json_is_array(c) ? json_array_size(c) : 0) + 1; /* + 1: a string, tool calls */
    }
    r->messages = calloc(n, sizeof *r->messages);
    r->parts_ = calloc(total, sizeof *r->parts_);
    r->images = calloc(total, sizeof *r->images);
    if (!r->messages || !r->parts_ || !r->images)
        return oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "Out of memory.");
    size_t n_parts = 0, n_msgs = 0;
    bool in_tools = false;
    for (size_t i = 0; i < n; i++) {
        lv_status st =
            parse_message(json_array_get(ms, i), i, lim, r, &n_parts, &n_msgs, &in_tools, e);
        r->n_messages = n_msgs;
        if (st) return st;
    }
    return tools_active(r) ? put_tools_text(r, e) : LV_OK;
}

/* ---- completion prompts ------------------------------------------------- */

/* An array of token ids into p. */
static lv_status parse_ids(const json_t *a, const char *param, oai_prompt *p, oai_error *e) {
    size_t n = json_array_size(a);
    if (!n)
        return BAD(e, param, "empty_array",
                   "Invalid '%s': empty array. Expected an array with minimum length 1, but got "
                   "an empty array instead.",
                   param);
    p->ids = malloc(n * sizeof *p->ids);
    if (!p->ids) return oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "Out of memory.");
    p->n_ids = (int)n;
    for (size_t i = 0; i < n; i++) {
        char pp[64];
        snprintf(pp, sizeof pp, "%s[%zu]", param, i);
        int64_t id = 0;
        lv_status st = get_int(json_array_get(a, i), pp, 0, INT32_MAX, &id, e);
        if (st) return st;
        p->ids[i] = (int32_t)id;
    }
    return LV_OK;
}

static lv_status parse_prompts(const json_t *root, const oai_limits *lim, oai_request *r,
                               oai_error *e) {
    json_t *v = json_member(root, "prompt");
    if (!v)
        return BAD(e, "prompt", "missing_required_parameter",
                   "Missing required parameter: 'prompt'.");
    if (!json_is_string(v) && !json_is_array(v))
        return bad_type(e, "prompt", "a string or an array", v);
    size_t n = json_is_string(v) ? 1 : json_array_size(v);
    if (!n)
        return BAD(e, "prompt", "empty_array",
                   "Invalid 'prompt': empty array. Expected an array with minimum length 1, but "
                   "got an empty array instead.");
    /* An array of integers is one tokenized prompt. */
    bool one_ids = json_is_array(v) && json_is_number(json_array_get(v, 0));
    if (one_ids) n = 1;
    if (n > (size_t)lim->max_n)
        return BAD(e, "prompt", "array_above_max_length",
                   "Invalid 'prompt': array too long. Expected at most %d prompts, but got %zu.",
                   lim->max_n, n);
    r->prompts = calloc(n, sizeof *r->prompts);
    if (!r->prompts) return oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "Out of memory.");
    r->n_prompts = n;
    if (json_is_string(v)) {
        r->prompts[0].text = json_string_value(v);
        r->prompts[0].len = json_string_length(v);
        return LV_OK;
    }
    if (one_ids) return parse_ids(v, "prompt", &r->prompts[0], e);
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(v, i);
        char param[32];
        snprintf(param, sizeof param, "prompt[%zu]", i);
        if (json_is_string(x)) {
            r->prompts[i].text = json_string_value(x);
            r->prompts[i].len = json_string_length(x);
        } else if (json_is_array(x)) {
            lv_status st = parse_ids(x, param, &r->prompts[i], e);
            if (st) return st;
        } else {
            return bad_type(e, param, "a string or an array of token ids", x);
        }
    }
    if ((size_t)r->n * n > (size_t)lim->max_n)
        return BAD(e, "n", "integer_above_max_value",
                   "Invalid 'n': %d choices for each of %zu prompts is more than the %d "
                   "supported.",
                   r->n, n, lim->max_n);
    return LV_OK;
}

/* ---- entry points ------------------------------------------------------- */

static lv_status parse(oai_kind kind, const char *body, size_t len, const oai_limits *lim,
                       oai_request *out, oai_error *e) {
    memset(out, 0, sizeof *out);
    out->kind = kind;
    lv_status st;
    if (len > lim->max_body)
        return oai_fail(e, LV_ERR_TOO_LARGE, 0, NULL, "request_too_large",
                        "Request body is %zu bytes; the limit is %zu bytes.", len, lim->max_body);
    json_error_t je;
    json_t *root = json_loadb_whole(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root && json_load_nomem(&je))
        return oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "Out of memory reading the request body.");
    if (!root)
        return oai_fail(e, LV_ERR_ARG, 0, NULL, "invalid_json",
                        "We could not parse the JSON body of your request: %s (line %d, column "
                        "%d).",
                        je.text, je.line, je.column);
    out->json_ = root;
    if (!(out->texts_ = json_array())) {
        st = oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "Out of memory.");
        goto fail;
    }
    if (!json_is_object(root)) {
        st = oai_fail(e, LV_ERR_ARG, 0, NULL, "invalid_json",
                      "The request body must be a JSON object, but got %s.", json_type_name(root));
        goto fail;
    }
    if ((st = parse_common(root, lim, out, e))) goto fail;
    st = kind == OAI_CHAT ? parse_messages(root, lim, out, e) : parse_prompts(root, lim, out, e);
    if (st) goto fail;
    return LV_OK;
fail:
    oai_request_free(out);
    return st;
}

lv_status oai_parse_chat(const char *body, size_t len, const oai_limits *lim, oai_request *out,
                         oai_error *e) {
    return parse(OAI_CHAT, body, len, lim, out, e);
}

lv_status oai_parse_completion(const char *body, size_t len, const oai_limits *lim,
                               oai_request *out, oai_error *e) {
    return parse(OAI_COMPLETION, body, len, lim, out, e);
}

void oai_request_free(oai_request *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_prompts; i++) free(r->prompts[i].ids);
    free(r->prompts);
    free(r->messages);
    free(r->parts_);
    free(r->images);
    free(r->video.urls);
    free(r->logit_bias);
    free(r->grammar_text);
    free(r->tools);
    free(r->tool_parts_);
    json_decref(r->texts_);
    json_decref(r->json_);
    memset(r, 0, sizeof *r);
}

void oai_request_apply(const oai_request *r, gen_params *p) {
    const sample_params *s = &r->sampling;
    sample_params *d = &p->sampling;
    p->max_tokens = r->max_tokens;
    if (r->set & OAI_SET_TEMPERATURE) d->temperature = s->temperature;
    if (r->set & OAI_SET_TOP_P) d->top_p = s->top_p;
    if (r->set & OAI_SET_TOP_K) d->top_k = s->top_k;
    if (r->set & OAI_SET_MIN_P) d->min_p = s->min_p;
    if (r->set & OAI_SET_REPETITION_PENALTY) d->repetition_penalty = s->repetition_penalty;
    if (r->set & OAI_SET_FREQUENCY_PENALTY) d->frequency_penalty = s->frequency_penalty;
    if (r->set & OAI_SET_PRESENCE_PENALTY) d->presence_penalty = s->presence_penalty;
    if (r->set & OAI_SET_SEED) d->seed = s->seed;
    d->n_top_logprobs = r->logprobs ? r->top_logprobs : 0;
    d->n_logit_bias = 0;
    for (int i = 0; i < r->n_logit_bias && i < SAMPLE_MAX_BIAS; i++) {
        d->logit_bias[i].id = r->logit_bias[i].id;
        d->logit_bias[i].bias = r->logit_bias[i].bias;
        d->n_logit_bias = i + 1;
    }
    p->n_stop = r->n_stop;
    for (int i = 0; i < r->n_stop; i++) p->stop[i] = r->stop[i];
}
