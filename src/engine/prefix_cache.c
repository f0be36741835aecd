/*
 * prefix_cache.c - kept sequences and the longest shared prefix
 * (prefix_cache.h).
 */
#include "engine/prefix_cache.h"

#include <stdlib.h>
#include <string.h>

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME  0x100000001b3ull

lv_status pc_init(prefix_cache *c, int cap, int image_id, lv_err *err) {
    memset(c, 0, sizeof *c);
    c->entries = calloc((size_t)cap, sizeof *c->entries);
    if (!c->entries) return lv_fail(err, LV_ERR_NOMEM, "out of memory for the prefix cache");
    c->cap = cap;
    c->image_id = image_id;
    return LV_OK;
}

static void free_entry(pc_entry *e) {
    llava_seq_free(e->seq);
    free(e->ids);
    free(e->image_keys);
    free(e->image_rows);
    memset(e, 0, sizeof *e);
}

/* Removes entry i, keeping the others in place order (the last moves in). */
static void drop(prefix_cache *c, int i) {
    c->entries[i] = c->entries[--c->n];
    memset(&c->entries[c->n], 0, sizeof c->entries[c->n]);
}

void pc_clear(prefix_cache *c) {
    while (c->n > 0) {
        free_entry(&c->entries[c->n - 1]);
        c->n--;
    }
}

void pc_deinit(prefix_cache *c) {
    if (!c->entries) return;
    pc_clear(c);
    free(c->entries);
    memset(c, 0, sizeof *c);
}

static uint64_t fnv_bytes(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * FNV_PRIME;
    return h;
}

uint64_t pc_image_key(const img_tensor *px) {
    int shape[7] = {px->n_tiles, px->tile_h, px->tile_w, px->image_h,
                    px->image_w, px->grid_h, px->grid_w};
    uint64_t h = fnv_bytes(FNV_OFFSET, shape, sizeof shape);
    size_t n = (size_t)px->n_tiles * 3 * px->tile_h * px->tile_w;
    /* a pixel at a time (FNV-1a over 32-bit words): a megapixel-sized image
     * in a few milliseconds, once per job */
    const uint32_t *w = (const uint32_t *)px->data;
    for (size_t i = 0; px->data && i < n; i++) h = (h ^ w[i]) * FNV_PRIME;
    return h;
}

int pc_common_prefix(const pc_content *a, const pc_content *b, int limit, int image_id) {
    if (limit > a->n) limit = a->n;
    if (limit > b->n) limit = b->n;
    /* the image the walk is in (-1 before the first), its <image> ids seen,
     * and where its first one was */
    int img = -1, seen = 0, img_start = 0, p = 0;
    for (; p < limit && a->ids[p] == b->ids[p]; p++) {
        if (a->ids[p] != image_id) continue;
        if (img < 0 || seen == a->image_rows[img]) { /* the next image starts here */
            img++;
            seen = 0;
            img_start = p;
            if (img >= a->n_images || img >= b->n_images ||
                a->image_keys[img] != b->image_keys[img] ||
                a->image_rows[img] != b->image_rows[img])
                return p;
        }
        seen++;
    }
    /* an image the prefix covers in part would need its feature rows anyway */
    if (img >= 0 && seen < a->image_rows[img]) return img_start;
    return p;
}

int pc_find(prefix_cache *c, const pc_content *q, int limit, int *n_prefix) {
    int best = -1, best_n = 0;
    for (int i = 0; i < c->n; i++) {
        pc_entry *e = &c->entries[i];
        pc_content ec = {e->ids, e->n, e->image_keys, e->image_rows, e->n_images};
        int n = pc_common_prefix(&ec, q, limit, c->image_id);
        if (n > best_n) {
            best = i;
            best_n = n;
        }
    }
    if (best >= 0) c->entries[best].last_used = ++c->clock;
    *n_prefix = best_n;
    return best;
}

llava_seq *pc_take(prefix_cache *c, int i) {
    pc_entry *e = &c->entries[i];
    llava_seq *seq = e->seq;
    e->seq = NULL;
    free_entry(e);
    drop(c, i);
    return seq;
}

bool pc_evict_lru(prefix_cache *c, const llava_seq *keep) {
    int lru = -1;
    for (int i = 0; i < c->n; i++)
        if (c->entries[i].seq != keep &&
            (lru < 0 || c->entries[i].last_used < c->entries[lru].last_used))
            lru = i;
    if (lru < 0) return false;
    c->evictions++;
    free_entry(&c->entries[lru]);
    drop(c, lru);
    return true;
}

lv_status pc_put(prefix_cache *c, llava_seq *seq, const pc_content *what, lv_err *err) {
    if (c->n == c->cap) pc_evict_lru(c, NULL);
    pc_entry e = {.seq = seq, .n = what->n, .n_images = what->n_images, .last_used = ++c->clock};
    e.ids = malloc((size_t)(what->n > 0 ? what->n : 1) * sizeof *e.ids);
    e.image_keys = malloc((size_t)(what->n_images > 0 ? what->n_images : 1) * sizeof *e.image_keys);
    e.image_rows = malloc((size_t)(what->n_images > 0 ? what->n_images : 1) * sizeof *e.image_rows);
    if (!e.ids || !e.image_keys || !e.image_rows) {
        free_entry(&e);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory for a prefix cache entry");
    }
    memcpy(e.ids, what->ids, (size_t)what->n * sizeof *e.ids);
    if (what->n_images > 0) {
        memcpy(e.image_keys, what->image_keys, (size_t)what->n_images * sizeof *e.image_keys);
        memcpy(e.image_rows, what->image_rows, (size_t)what->n_images * sizeof *e.image_rows);
    }
    c->entries[c->n++] = e;
    return LV_OK;
}

int64_t pc_ctx_positions(const prefix_cache *c) {
    int64_t n = 0;
    for (int i = 0; i < c->n; i++) n += llava_seq_ctx(c->entries[i].seq);
    return n;
}
