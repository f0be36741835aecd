/*
 * json_type.h - typed access to JSON values, with one wording for what went
 * wrong.
 *
 * Every reader of JSON (safetensors headers, Hugging Face configs, the
 * server's config file, OpenAI request bodies) asks the same questions of a
 * value (is this member given? is it an integer? in range?) and answers a
 * miss with "expected X, got Y". The answers live here:
 *   - what a value is called: OpenAI's wording, "an object", "an array",
 *     "a string", "an integer", "a decimal", "a boolean", "null";
 *   - what counts as given (a member that is absent or null is not: HF's
 *     None, serde's Option, OpenAI's null) and as an integer (2 or 2.0);
 *   - for files, the typed getters below, whose message reads
 *     "expected an integer in [1, 1024], got -1". The caller puts the file
 *     and the key in front with lv_err_prefix:
 *       "config.json: text_config.num_attention_heads: expected ..."
 * OpenAI request bodies keep OpenAI's own sentences (server/oai_request.c)
 * on top of json_member, json_as_int64 and json_type_name.
 */
#ifndef LV_IO_JSON_TYPE_H
#define LV_IO_JSON_TYPE_H

#include "base/common.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* The type of v with its article ("an integer"); "nothing" for NULL. */
const char *json_type_name(const json_t *v);

/* v for a message: a scalar by its value (-1, 2.5, "abc" quoted and cut at
 * 40 bytes, true), anything else by its type ("an object", "null"). Writes
 * into buf (64 bytes is enough) and returns it. */
const char *json_describe(const json_t *v, char *buf, size_t cap);

/* Member key of object o, or NULL when o is not an object or the member is
 * absent or null. */
json_t *json_member(const json_t *o, const char *key);

/* The integer v holds: a JSON integer, or a real with an integral value
 * within int64 (4096.0, as files decoded with JSON_DECODE_INT_AS_REAL or
 * written with floats carry it). False for anything else. */
bool json_as_int64(const json_t *v, int64_t *out);

/* Writes "expected <expected>, got <json_describe(v)>" into err and returns
 * LV_ERR_FORMAT. */
lv_status json_expected(lv_err *err, const char *expected, const json_t *v);

/* The typed getters. On success each fills *out and returns LV_OK; on a
 * wrong type or a value out of range *out is untouched and the return is
 * json_expected's (LV_ERR_FORMAT, "expected ..., got ..."). */

/* want: JSON_OBJECT, JSON_ARRAY, JSON_STRING, JSON_INTEGER (json_as_int64),
 * JSON_REAL (any number), JSON_TRUE (either boolean); JSON_NULL takes any
 * value. */
lv_status json_check_type(const json_t *v, json_type want, lv_err *err);
/* An integer (json_as_int64) in [lo, hi]. */
lv_status json_get_int(const json_t *v, int64_t lo, int64_t hi, int64_t *out, lv_err *err);
/* A number in [lo, hi]. */
lv_status json_get_number(const json_t *v, double lo, double hi, double *out, lv_err *err);
lv_status json_get_bool(const json_t *v, bool *out, lv_err *err);
/* The string, borrowed from v. */
lv_status json_get_string(const json_t *v, const char **out, lv_err *err);

/* json_dumps(j, flags) that never returns damaged text. jansson 2.14's
 * dumper ignores a failed write of an object key (its buffer could not
 * grow: out of memory) and returns the text without it, e.g. {":0}; this
 * serialises through a callback into a buffer of ours and returns NULL on
 * any failure. Caller frees. Every JSON text this program writes goes
 * through it. */
char *json_dumps_whole(const json_t *j, size_t flags);

/* Whether json_loadb failed for want of memory rather than bad text:
 * jansson says so with json_error_out_of_memory, or fails before reading
 * anything (its lexer's buffer) and leaves the error at line -1 with no
 * text. Out of memory inside a token can still read as a syntax error: a
 * jansson limitation, not caught here. */
bool json_load_nomem(const json_error_t *je);

/* json_loadb that never returns a damaged document: when any allocation of
 * jansson's failed during the load (its lexer then cuts a string or key
 * short and parses on), the result is dropped and NULL returned with je
 * saying out of memory (json_load_nomem true). Every document read from a
 * client or a file goes through it. */
json_t *json_loadb_whole(const char *buf, size_t len, size_t flags, json_error_t *je);

#endif
