/*
 * image_memo.c - recently sent images' tensors, LRU within a byte budget
 * (image_memo.h).
 */
#include "server/image_memo.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t *bytes; /* the encoded image, len bytes */
    size_t len;
    img_options opt;
    img_tensor t;
    int n_tokens;
    uint64_t key; /* pc_image_key(&t) */
    size_t cost;  /* bytes counted against the budget */
    long last_used;
} entry;

struct image_memo {
    pthread_mutex_t mu;
    entry *e;
    int n, cap;
    size_t budget, bytes;
    long clock;
};

static size_t tensor_bytes(const img_tensor *t) {
    return (size_t)t->n_tiles * 3 * t->tile_h * t->tile_w * sizeof(float);
}

/* Options compared field by field (a struct's padding is not its value). */
static bool same_options(const img_options *a, const img_options *b) {
    return a->max_size == b->max_size && a->min_size == b->min_size &&
           a->keep_aspect == b->keep_aspect && a->has_padding_color == b->has_padding_color &&
           (!a->has_padding_color || !memcmp(a->padding_color, b->padding_color, 3)) &&
           a->base_only == b->base_only;
}

static void drop(image_memo *m, int i) {
    m->bytes -= m->e[i].cost;
    free(m->e[i].bytes);
    img_tensor_free(&m->e[i].t);
    m->e[i] = m->e[--m->n];
}

static bool copy_tensor(const img_tensor *src, img_tensor *dst) {
    *dst = *src;
    dst->data = malloc(tensor_bytes(src));
    if (!dst->data) return false;
    memcpy(dst->data, src->data, tensor_bytes(src));
    return true;
}

image_memo *image_memo_new(size_t budget) {
    image_memo *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    pthread_mutex_init(&m->mu, NULL);
    m->budget = budget;
    return m;
}

void image_memo_clear(image_memo *m) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    while (m->n) drop(m, m->n - 1);
    pthread_mutex_unlock(&m->mu);
}

void image_memo_free(image_memo *m) {
    if (!m) return;
    image_memo_clear(m);
    free(m->e);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static int find_locked(const image_memo *m, const uint8_t *bytes, size_t len,
                       const img_options *opt) {
    for (int i = 0; i < m->n; i++)
        if (m->e[i].len == len && same_options(&m->e[i].opt, opt) &&
            !memcmp(m->e[i].bytes, bytes, len))
            return i;
    return -1;
}

bool image_memo_get(image_memo *m, const uint8_t *bytes, size_t len, const img_options *opt,
                    img_tensor *out, int *n_tokens, uint64_t *key) {
    if (!m) return false;
    pthread_mutex_lock(&m->mu);
    int i = find_locked(m, bytes, len, opt);
    bool ok = i >= 0 && copy_tensor(&m->e[i].t, out);
    if (ok) {
        *n_tokens = m->e[i].n_tokens;
        *key = m->e[i].key;
        m->e[i].last_used = ++m->clock;
    }
    pthread_mutex_unlock(&m->mu);
    return ok;
}

void image_memo_put(image_memo *m, const uint8_t *bytes, size_t len, const img_options *opt,
                    const img_tensor *t, int n_tokens, uint64_t key) {
    if (!m) return;
    size_t cost = len + tensor_bytes(t) + sizeof(entry);
    if (cost > m->budget) return;
    entry e = {.len = len, .opt = *opt, .n_tokens = n_tokens, .key = key, .cost = cost};
    e.bytes = malloc(len ? len : 1);
    if (!e.bytes || !copy_tensor(t, &e.t)) {
        free(e.bytes);
        return;
    }
    memcpy(e.bytes, bytes, len);
    pthread_mutex_lock(&m->mu);
    if (find_locked(m, bytes, len, opt) >= 0) { /* another thread kept it meanwhile */
        pthread_mutex_unlock(&m->mu);
        free(e.bytes);
        img_tensor_free(&e.t);
        return;
    }
    while (m->n && m->bytes + cost > m->budget) {
        int lru = 0;
        for (int i = 1; i < m->n; i++)
            if (m->e[i].last_used < m->e[lru].last_used) lru = i;
        drop(m, lru);
    }
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 8;
        entry *p = realloc(m->e, (size_t)cap * sizeof *p);
        if (!p) {
            pthread_mutex_unlock(&m->mu);
            free(e.bytes);
            img_tensor_free(&e.t);
            return;
        }
        m->e = p;
        m->cap = cap;
    }
    e.last_used = ++m->clock;
    m->e[m->n++] = e;
    m->bytes += cost;
    pthread_mutex_unlock(&m->mu);
}

size_t image_memo_bytes(image_memo *m) {
    if (!m) return 0;
    pthread_mutex_lock(&m->mu);
    size_t b = m->bytes;
    pthread_mutex_unlock(&m->mu);
    return b;
}

int image_memo_count(image_memo *m) {
    if (!m) return 0;
    pthread_mutex_lock(&m->mu);
    int n = m->n;
    pthread_mutex_unlock(&m->mu);
    return n;
}
