/*
 * image_cache.c - the LRU cache of images' feature rows within a byte
 * budget (image_cache.h). Entries are few (a budget holds a handful of
 * images: 7B LLaVA-NeXT's rows are about 45 MB an image), so lookups scan.
 */
#include "engine/image_cache.h"

#include <stdlib.h>
#include <string.h>

void ic_init(image_cache *c, size_t budget) {
    memset(c, 0, sizeof *c);
    c->budget = budget;
}

void ic_deinit(image_cache *c) {
    ic_clear(c);
    free(c->entries);
    memset(c, 0, sizeof *c);
}

bool ic_enabled(const image_cache *c) {
    return c->budget > 0;
}

/* The entry with this key and size, -1 if none; counts nothing. */
static int entry_of(const image_cache *c, uint64_t key, int n_rows) {
    for (int i = 0; i < c->n; i++)
        if (c->entries[i].key == key && c->entries[i].n_rows == n_rows) return i;
    return -1;
}

int ic_find(image_cache *c, uint64_t key, int n_rows) {
    int i = entry_of(c, key, n_rows);
    if (i < 0) {
        c->misses++;
        return -1;
    }
    c->entries[i].last_used = ++c->clock;
    c->hits++;
    return i;
}

bool ic_fits(const image_cache *c, size_t bytes) {
    return bytes <= c->budget;
}

/* Frees entry i; the last entry takes its place. */
static void remove_entry(image_cache *c, int i) {
    c->bytes -= c->entries[i].bytes;
    llava_features_free(c->entries[i].rows);
    c->entries[i] = c->entries[--c->n];
}

static int least_recently_used(const image_cache *c) {
    int lru = -1;
    for (int i = 0; i < c->n; i++)
        if (lru < 0 || c->entries[i].last_used < c->entries[lru].last_used) lru = i;
    return lru;
}

bool ic_evict_lru(image_cache *c) {
    if (c->n == 0) return false;
    remove_entry(c, least_recently_used(c));
    c->evictions++;
    return true;
}

void ic_make_room(image_cache *c, size_t bytes) {
    while (c->n > 0 && c->bytes + bytes > c->budget) {
        remove_entry(c, least_recently_used(c));
        c->evictions++;
    }
}

lv_status ic_put(image_cache *c, uint64_t key, int n_rows, llava_features *rows, size_t bytes,
                 lv_err *err) {
    int i = entry_of(c, key, n_rows);
    if (i >= 0 || !ic_fits(c, bytes)) {
        if (i >= 0) c->entries[i].last_used = ++c->clock;
        llava_features_free(rows);
        return LV_OK;
    }
    ic_make_room(c, bytes);
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 8;
        ic_entry *p = realloc(c->entries, (size_t)cap * sizeof *p);
        if (!p) {
            llava_features_free(rows);
            return lv_fail(err, LV_ERR_NOMEM, "out of memory for the image cache");
        }
        c->entries = p;
        c->cap = cap;
    }
    c->entries[c->n++] = (ic_entry){key, n_rows, rows, bytes, ++c->clock};
    c->bytes += bytes;
    return LV_OK;
}

void ic_clear(image_cache *c) {
    while (c->n > 0) remove_entry(c, c->n - 1);
}
