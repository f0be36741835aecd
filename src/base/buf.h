/*
 * buf.h - a growable byte buffer (always NUL-terminated), for building
 * prompts, JSON and messages without fixed-size arrays.
 */
#ifndef LV_BUF_H
#define LV_BUF_H

#include "common.h"

typedef struct {
    char *data; /* NUL-terminated; NULL until the first append */
    size_t len; /* bytes, excluding the NUL */
    size_t cap; /* allocated bytes */
} lv_buf;

/* Appends n bytes. LV_ERR_NOMEM on allocation failure (buf unchanged). */
lv_status lv_buf_append(lv_buf *b, const char *s, size_t n);
lv_status lv_buf_puts(lv_buf *b, const char *s);
/* Releases the memory and zeroes the struct; a zeroed lv_buf is a no-op. */
void lv_buf_free(lv_buf *b);

#endif
