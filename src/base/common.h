/*
 * common.h - the few types every module shares: status codes and the
 * caller-owned error buffer.
 *
 * Every fallible function returns an lv_status and takes an `lv_err *err`
 * (which may be NULL). On failure it writes one sentence a user can act on
 * into err->msg: what was expected and what was found, and where
 * ("model.safetensors: tensor 'x' needs 32 bytes, has 30"). There is no
 * global error string, so any number of threads can fail independently.
 */
#ifndef LV_COMMON_H
#define LV_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* X-macro: name, text. LV_OK must stay 0. */
#define LV_STATUS_MAP(X)                                                                           \
    X(LV_OK, "ok")                                                                                 \
    X(LV_ERR_NOMEM, "out of memory")                                                               \
    X(LV_ERR_IO, "i/o error")                                                                      \
    X(LV_ERR_FORMAT, "malformed input")                                                            \
    X(LV_ERR_UNSUPPORTED, "unsupported")                                                           \
    X(LV_ERR_ARG, "invalid argument")                                                              \
    X(LV_ERR_DEVICE, "device error")                                                               \
    X(LV_ERR_BUSY, "busy")                                                                         \
    X(LV_ERR_CANCELLED, "cancelled")                                                               \
    X(LV_ERR_TOO_LARGE, "over a size limit")

typedef enum {
#define LV_STATUS_ENUM(name, text) name,
    LV_STATUS_MAP(LV_STATUS_ENUM)
#undef LV_STATUS_ENUM
} lv_status;

#define LV_ERR_LEN 256

typedef struct {
    char msg[LV_ERR_LEN]; /* NUL-terminated message of the last failure */
} lv_err;

/* "ok", "out of memory", ... Never NULL. */
const char *lv_status_str(lv_status st);

/* Formats a message into err (if not NULL) and returns st, so a failure
 * reads `return lv_fail(err, LV_ERR_FORMAT, "%s: ...", path);`. */
lv_status lv_fail(lv_err *err, lv_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to an existing message, for adding context on the way up. */
void lv_err_prefix(lv_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LV_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
