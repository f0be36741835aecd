/*
 * prefix_cache.h - sequences kept after their job ended, with what their
 * positions hold, so that a later job whose prompt starts the same way
 * (a conversation's history resent, a shared system prompt) skips that
 * part of its prefill (engine/scheduler.c is the caller).
 *
 * A position's KV cache depends only on the ids at and before it, image
 * ids included through their feature rows, which depend only on the image.
 * So an entry records the ids it was fed and, for its images in order, a
 * key of each image's preprocessed pixels (pc_image_key) and its number of
 * <image> ids; two prompts share a prefix where their ids are equal and
 * every image that starts inside it has the same key. A prefix never ends
 * inside an image (the image would need its feature rows anyway), so
 * reusing one gives the bits a cold prefill gives: the prefill is chunk
 * invariant (model/llm.c reads every position back from the cache).
 *
 * Entries are few (the scheduler's parallel by default) and evicted least
 * recently used. Engine thread only; no locking.
 */
#ifndef LV_ENGINE_PREFIX_CACHE_H
#define LV_ENGINE_PREFIX_CACHE_H

#include "base/common.h"
#include "image/image.h"
#include "model/llava.h"

#include <stdbool.h>
#include <stdint.h>

/* What a sequence's positions hold, or what a prompt would put there. */
typedef struct {
    const int32_t *ids; /* (n) one id a position */
    int n;
    const uint64_t *image_keys; /* (n_images) pc_image_key of each image, prompt order */
    const int *image_rows;      /* (n_images) its <image> ids (feature rows) */
    int n_images;
} pc_content;

/* One kept sequence: the content is the entry's own copy. */
typedef struct {
    llava_seq *seq;
    int32_t *ids;
    int n;
    uint64_t *image_keys;
    int *image_rows;
    int n_images;
    long last_used; /* the cache's clock when put or matched: LRU order */
} pc_entry;

typedef struct {
    pc_entry *entries; /* (cap) the first n in use */
    int cap, n;
    int image_id; /* the model's <image> id */
    long clock;
    uint64_t evictions; /* entries evicted (pc_evict_lru, pc_put when full) */
} prefix_cache;

/* A cache of up to cap (>= 1) sequences for a model whose <image> id is
 * image_id. LV_ERR_NOMEM. */
lv_status pc_init(prefix_cache *c, int cap, int image_id, lv_err *err);
/* Frees every entry's sequence and the cache; zeroed: no-op. */
void pc_deinit(prefix_cache *c);

/* A 64-bit key of a preprocessed image: FNV-1a over its shape fields and
 * float pixels. Equal keys are taken as equal images. */
uint64_t pc_image_key(const img_tensor *px);

/* The positions a and b share from the start, at most limit: equal ids,
 * equal keys and sizes for the images starting there, cut back to the
 * start of an image the prefix would not wholly cover. */
int pc_common_prefix(const pc_content *a, const pc_content *b, int limit, int image_id);

/* The entry sharing the longest prefix (at most limit positions) with q,
 * -1 when none shares any; *n_prefix is that length. Marks it used. */
int pc_find(prefix_cache *c, const pc_content *q, int limit, int *n_prefix);

/* Removes entry i and hands its sequence to the caller (positions as kept). */
llava_seq *pc_take(prefix_cache *c, int i);

/* Keeps seq (taken: freed on failure too) with a copy of what it holds
 * (what->n == llava_seq_pos(seq)), evicting the least recently used entry
 * when full. LV_ERR_NOMEM. */
lv_status pc_put(prefix_cache *c, llava_seq *seq, const pc_content *what, lv_err *err);

/* Frees the least recently used entry other than `keep` (may be NULL);
 * false when there is none. */
bool pc_evict_lru(prefix_cache *c, const llava_seq *keep);

/* Frees every entry. */
void pc_clear(prefix_cache *c);

/* KV positions allocated by the entries' sequences (their ctx, summed). */
int64_t pc_ctx_positions(const prefix_cache *c);

#endif
