/* status.c - lv_status names and the error-buffer helpers of common.h. */
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *lv_status_str(lv_status st) {
    switch (st) {
#define LV_STATUS_CASE(name, text)                                                                 \
    case name:                                                                                     \
        return text;
        LV_STATUS_MAP(LV_STATUS_CASE)
#undef LV_STATUS_CASE
    }
    return "unknown status";
}

lv_status lv_fail(lv_err *err, lv_status st, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return st;
}

void lv_err_prefix(lv_err *err, const char *fmt, ...) {
    if (!err) return;
    char old[LV_ERR_LEN];
    memcpy(old, err->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n + 2 >= sizeof err->msg) return; /* prefix alone fills the buffer */
    /* Messages are truncated to fit, never overflow. */
    size_t room = sizeof err->msg - (size_t)n - 2;
    size_t keep = strnlen(old, sizeof old);
    if (keep > room - 1) keep = room - 1;
    memcpy(err->msg + n, ": ", 2);
    memcpy(err->msg + n + 2, old, keep);
    err->msg[n + 2 + keep] = '\0';
}
