/* buf.c - see buf.h. Grows by doubling. */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

lv_status lv_buf_append(lv_buf *b, const char *s, size_t n) {
    if (n > SIZE_MAX - b->len - 1) return LV_ERR_NOMEM;
    size_t need = b->len + n + 1;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        char *p = realloc(b->data, cap);
        if (!p) return LV_ERR_NOMEM;
        b->data = p;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return LV_OK;
}

lv_status lv_buf_puts(lv_buf *b, const char *s) {
    return lv_buf_append(b, s, strlen(s));
}

void lv_buf_free(lv_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
