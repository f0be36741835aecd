/*
 * image_cache.h - images' feature rows kept after they were encoded, so
 * that the same picture sent again (another conversation, another client,
 * a different question) skips the vision tower (engine/scheduler.c is the
 * caller).
 *
 * An entry is keyed by pc_image_key (engine/prefix_cache.h): a hash of the
 * preprocessed tensor, its float pixels and shape fields. The preprocessing
 * parameters (resize, crop, normalization, the anyres grid, the "low"
 * detail view) all show in those pixels and fields, so equal keys mean the
 * encoder would be fed the same input and would write the same rows: a hit
 * gives the bits of a cold encode. The entry also records its number of
 * rows, checked on lookup.
 *
 * The rows stay in a backend buffer (llava_features: device memory on a
 * GPU) and are copied with llava_features_copy_rows. Entries are evicted
 * least recently used while their bytes would pass the budget; an image
 * larger than the whole budget is never kept. Engine thread only; no
 * locking.
 */
#ifndef LV_ENGINE_IMAGE_CACHE_H
#define LV_ENGINE_IMAGE_CACHE_H

#include "base/common.h"
#include "model/llava.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One image's rows: the packed rows its encoder writes, (n_rows, text dim). */
typedef struct {
    uint64_t key;         /* pc_image_key of the preprocessed tensor */
    int n_rows;           /* its <image> ids */
    llava_features *rows; /* owned; (n_rows) rows */
    size_t bytes;         /* what it counts against the budget */
    long last_used;       /* the cache's clock when put or found: LRU order */
} ic_entry;

typedef struct {
    ic_entry *entries; /* (cap) the first n in use */
    int n, cap;
    size_t budget; /* bytes of entries at most; 0: the cache is off */
    size_t bytes;  /* bytes of the entries now */
    long clock;
    uint64_t hits, misses, evictions; /* since ic_init */
} image_cache;

/* An empty cache of at most budget bytes (0: off, nothing is ever kept). */
void ic_init(image_cache *c, size_t budget);
/* Frees every entry and the cache; zeroed: no-op. */
void ic_deinit(image_cache *c);

bool ic_enabled(const image_cache *c);

/* The entry of the image with this key and number of rows, -1 if none;
 * counts a hit (and marks it used) or a miss. */
int ic_find(image_cache *c, uint64_t key, int n_rows);

/* Whether an entry of `bytes` could be kept at all (within the budget). */
bool ic_fits(const image_cache *c, size_t bytes);

/* Evicts least recently used entries until `bytes` more fit in the
 * budget (call before allocating a new entry's rows: the peak stays within
 * it). */
void ic_make_room(image_cache *c, size_t bytes);

/* Frees the least recently used entry (memory pressure); false when empty. */
bool ic_evict_lru(image_cache *c);

/* Keeps rows (taken: freed when not kept) as the image's entry, evicting
 * as ic_make_room does. Not kept when it cannot fit, or the key is there
 * already (another job encoded the same image meanwhile: that entry is
 * marked used). LV_ERR_NOMEM (rows freed). */
lv_status ic_put(image_cache *c, uint64_t key, int n_rows, llava_features *rows, size_t bytes,
                 lv_err *err);

/* Frees every entry (a device fault: nothing it holds can be trusted). */
void ic_clear(image_cache *c);

#endif
