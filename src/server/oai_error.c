/*
 * oai_error.c - the one place an lv_status becomes an HTTP status and an
 * OpenAI error body (STYLE.md §2.4).
 *
 * OpenAI's error object is {"error": {"message", "type", "param", "code"}},
 * param and code null when they do not apply; SDKs pick their exception
 * class from the HTTP status alone (openai-node: BadRequestError 400,
 * AuthenticationError 401, NotFoundError 404, RateLimitError 429,
 * InternalServerError >= 500), and show the message.
 */
#include "server/oai.h"
#include "io/json_type.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int oai_status_for(lv_status st, unsigned hints) {
    if (hints & OAI_HINT_LOADING) return 503;
    switch (st) {
        case LV_OK:
            return 200;
        case LV_ERR_ARG:
        case LV_ERR_FORMAT:
        case LV_ERR_UNSUPPORTED:
            return (hints & OAI_HINT_TOO_LARGE) ? 413 : 400;
        case LV_ERR_TOO_LARGE:
            return 413;
        case LV_ERR_BUSY:
            return 429;
        case LV_ERR_NOMEM:
        case LV_ERR_DEVICE:
            return 503;
        case LV_ERR_CANCELLED:
            return 499; /* nginx's "client closed request" */
        default:
            return 500; /* LV_ERR_IO and anything new: our side */
    }
}

const char *oai_error_type(int status) {
    switch (status) {
        case 401:
            return "authentication_error";
        case 403:
            return "permission_error";
        case 404:
            return "not_found_error";
        case 429:
            return "rate_limit_error";
        case 503:
            return "unavailable_error";
        default:
            return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

static void copy(char *dst, size_t n, const char *src) {
    snprintf(dst, n, "%s", src ? src : "");
}

lv_status oai_fail(oai_error *e, lv_status st, unsigned hints, const char *param, const char *code,
                   const char *fmt, ...) {
    if (!e) return st;
    e->status = oai_status_for(st, hints);
    copy(e->type, sizeof e->type, oai_error_type(e->status));
    copy(e->param, sizeof e->param, param);
    copy(e->code, sizeof e->code, code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return st;
}

/* A JSON string, or null for "". A message quoting client bytes (a path,
 * a header) may not be valid UTF-8: each bad byte becomes U+FFFD, as in
 * generated text, so the rest of the message still says what was wrong. */
static json_t *str_or_null(const char *s) {
    return s[0] ? oai_content_json(s, strlen(s)) : json_null();
}

char *oai_error_json(const oai_error *e) {
    json_t *err = json_object();
    json_t *root = json_object();
    char *out = NULL;
    if (!err || !root) goto fail;
    if (json_object_set_new(err, "message", str_or_null(e->message)) ||
        json_object_set_new(err, "type", str_or_null(e->type)) ||
        json_object_set_new(err, "param", str_or_null(e->param)) ||
        json_object_set_new(err, "code", str_or_null(e->code)))
        goto fail;
    if (json_object_set(root, "error", err)) goto fail;
    out = json_dumps_whole(root, JSON_COMPACT);
fail:
    json_decref(err);
    json_decref(root);
    return out;
}
