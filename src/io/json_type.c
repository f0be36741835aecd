/* json_type.c - see json_type.h. */
#include "io/json_type.h"

#include "base/buf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a value of each type is called, and what a reader that wants the type
 * asks for (a number where any number will do, either boolean). */
static const char *const TYPE_NAME[] = {
    [JSON_OBJECT] = "an object",   [JSON_ARRAY] = "an array", [JSON_STRING] = "a string",
    [JSON_INTEGER] = "an integer", [JSON_REAL] = "a decimal", [JSON_TRUE] = "a boolean",
    [JSON_FALSE] = "a boolean",    [JSON_NULL] = "null",
};

static const char *want_name(json_type t) {
    if (t == JSON_REAL) return "a number";
    if (t == JSON_TRUE || t == JSON_FALSE) return "true or false";
    return TYPE_NAME[t];
}

const char *json_type_name(const json_t *v) {
    return v ? TYPE_NAME[json_typeof(v)] : "nothing";
}

const char *json_describe(const json_t *v, char *buf, size_t cap) {
    switch (v ? json_typeof(v) : JSON_NULL) {
        case JSON_INTEGER:
            snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
            break;
        case JSON_REAL:
            snprintf(buf, cap, "%g", json_real_value(v));
            break;
        case JSON_STRING:
            snprintf(buf, cap, "\"%.40s\"", json_string_value(v));
            break;
        case JSON_TRUE:
            snprintf(buf, cap, "true");
            break;
        case JSON_FALSE:
            snprintf(buf, cap, "false");
            break;
        default:
            snprintf(buf, cap, "%s", json_type_name(v));
    }
    return buf;
}

json_t *json_member(const json_t *o, const char *key) {
    json_t *v = json_object_get(o, key); /* NULL when o is NULL or not an object */
    return json_is_null(v) ? NULL : v;
}

bool json_as_int64(const json_t *v, int64_t *out) {
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d != floor(d) || d < -9.2e18 || d > 9.2e18) return false;
        *out = (int64_t)d;
        return true;
    }
    return false;
}

lv_status json_expected(lv_err *err, const char *expected, const json_t *v) {
    char got[64];
    return lv_fail(err, LV_ERR_FORMAT, "expected %s, got %s", expected,
                   json_describe(v, got, sizeof got));
}

lv_status json_check_type(const json_t *v, json_type want, lv_err *err) {
    int64_t i;
    bool ok = want == JSON_NULL                         ? true
              : want == JSON_INTEGER                    ? json_as_int64(v, &i)
              : want == JSON_REAL                       ? json_is_number(v)
              : want == JSON_TRUE || want == JSON_FALSE ? json_is_boolean(v)
                                                        : v && json_typeof(v) == want;
    return ok ? LV_OK : json_expected(err, want_name(want), v);
}

lv_status json_get_int(const json_t *v, int64_t lo, int64_t hi, int64_t *out, lv_err *err) {
    int64_t x;
    if (!json_as_int64(v, &x) || x < lo || x > hi) {
        char expected[80];
        snprintf(expected, sizeof expected, "an integer in [%lld, %lld]", (long long)lo,
                 (long long)hi);
        return json_expected(err, expected, v);
    }
    *out = x;
    return LV_OK;
}

lv_status json_get_number(const json_t *v, double lo, double hi, double *out, lv_err *err) {
    if (!json_is_number(v) || !(json_number_value(v) >= lo) || !(json_number_value(v) <= hi)) {
        char expected[80];
        snprintf(expected, sizeof expected, "a number in [%g, %g]", lo, hi);
        return json_expected(err, expected, v);
    }
    *out = json_number_value(v);
    return LV_OK;
}

lv_status json_get_bool(const json_t *v, bool *out, lv_err *err) {
    if (!json_is_boolean(v)) return json_expected(err, want_name(JSON_TRUE), v);
    *out = json_is_true(v);
    return LV_OK;
}

lv_status json_get_string(const json_t *v, const char **out, lv_err *err) {
    if (!json_is_string(v)) return json_expected(err, want_name(JSON_STRING), v);
    *out = json_string_value(v);
    return LV_OK;
}

/* json_dump_callback's sink: appends, remembering a failure jansson may drop. */
typedef struct {
    lv_buf b;
    bool failed;
} dump_sink;

static int dump_piece(const char *p, size_t n, void *ud) {
    dump_sink *d = ud;
    if (!d->failed && lv_buf_append(&d->b, p, n) != LV_OK) d->failed = true;
    return d->failed ? -1 : 0;
}

char *json_dumps_whole(const json_t *j, size_t flags) {
    dump_sink d = {.failed = false};
    if (!j || json_dump_callback(j, dump_piece, &d, flags) != 0 || d.failed) {
        lv_buf_free(&d.b);
        return NULL;
    }
    if (!d.b.data && lv_buf_append(&d.b, "", 0) != LV_OK) return NULL; /* "" for an empty dump */
    return d.b.data;
}

bool json_load_nomem(const json_error_t *je) {
    return json_error_code(je) == json_error_out_of_memory || (je->line == -1 && !je->text[0]);
}

/* Whether an allocation jansson asked for failed on this thread since the
 * last reset: jansson 2.14's lexer ignores a failed append to its token
 * buffer and reads on, so a string or key comes out cut short ("response_forma")
 * in a document that otherwise parses. Every allocation of jansson's goes
 * through counted_malloc (installed before main), so a load can tell. */
static _Thread_local bool jansson_alloc_failed;

static void *counted_malloc(size_t n) {
    void *p = malloc(n);
    if (!p) jansson_alloc_failed = true;
    return p;
}

__attribute__((constructor)) static void count_jansson_allocations(void) {
    json_set_alloc_funcs(counted_malloc, free);
}

json_t *json_loadb_whole(const char *buf, size_t len, size_t flags, json_error_t *je) {
    jansson_alloc_failed = false;
    json_t *root = json_loadb(buf, len, flags, je);
    if (!jansson_alloc_failed) return root;
    json_decref(root);
    if (je) {
        memset(je, 0, sizeof *je);
        je->line = je->column = -1;
        je->position = -1;
        snprintf(je->text, sizeof je->text, "out of memory");
        je->text[JSON_ERROR_TEXT_LENGTH - 1] = (char)json_error_out_of_memory;
    }
    return NULL;
}
