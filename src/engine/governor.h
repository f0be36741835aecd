/*
 * governor.h - the memory governor: one budget for what the server holds,
 * and what to do as it fills.
 *
 * Accounting. The governor adds up what it is told: a fixed part (weights,
 * scratch, the program: what was resident once the model was loaded) and
 * pools. MG_REQUESTS is what requests will hold, reserved by the server
 * when one arrives and given back when its answer is sent: its body, image
 * tensors, prompt ids, then (the jobs made) its KV sequences, image feature
 * rows and encoder scratch (sched_job_bytes). MG_CONNECTIONS is what
 * open HTTP connections hold, idle keep-alive ones too. MG_KV_CACHED and
 * MG_IMAGE_CACHE are what the scheduler's caches keep, set by it after
 * every change. Beside the accounting it samples the memory really in use
 * (a measure callback: the resident set on a CPU, the device's memory on a
 * GPU; at most every MG_SAMPLE_MS): the use is the larger of the two, so
 * an estimate that is short, or a heap that keeps freed pages, still
 * counts.
 *
 * Levels, as shares of the limit: below evict_at (80%) normal; from there
 * the scheduler evicts cached prefixes and images, least recently used
 * first, until the use is back under it; from refuse_at (95%) no new
 * request is admitted: a reservation that would cross it fails (the server
 * answers 503 with Retry-After) once the caches have been asked to make
 * room (mg_reserve_wait). Requests already admitted always finish: their
 * memory was reserved before they started.
 *
 * A governor without a limit (0) only accounts: every reservation
 * succeeds and the level stays normal. Every call is thread-safe; a NULL
 * governor is accepted everywhere and does nothing.
 */
#ifndef LV_ENGINE_GOVERNOR_H
#define LV_ENGINE_GOVERNOR_H

#include "base/common.h"

#include <stdbool.h>
#include <stdint.h>

#define MG_SAMPLE_MS 5.0 /* the measure is read at most this often (a read costs ~20 us) */

typedef enum { MG_NORMAL = 0, MG_EVICT, MG_REFUSE } mg_level;

typedef enum {
    MG_REQUESTS,    /* requests from arrival to answer: inputs, KV, features, scratch */
    MG_KV_CACHED,   /* sequences the prefix cache keeps */
    MG_IMAGE_CACHE, /* feature rows the image cache keeps */
    MG_CONNECTIONS, /* open HTTP connections (buffers, their threads' stacks) */
    MG_DECODED,     /* images' tensors the server keeps for resent images (image_memo) */
    MG_N_POOLS
} mg_pool;

typedef struct {
    int64_t limit;    /* bytes at most; 0: no limit (accounting only) */
    double evict_at;  /* share of the limit from which caches are evicted (0: 0.80) */
    double refuse_at; /* share from which new requests are refused (0: 0.95) */
    /* The memory really in use, in bytes (< 0: unknown this time); NULL:
     * accounting only (the seed config's adaptive_pressure_detection false). */
    int64_t (*measure)(void *ud);
    void *measure_ud;
} mg_config;

typedef struct {
    int64_t limit;
    int64_t fixed;
    int64_t pools[MG_N_POOLS];
    int64_t accounted; /* fixed + pools */
    int64_t measured;  /* the last sample, -1 when none */
    int64_t use;       /* the larger of the two: what the level is taken from */
    mg_level level;
    uint64_t refused;            /* reservations refused since the start */
    uint64_t pressure_evictions; /* cache entries evicted because of pressure */
    int64_t peak_use;            /* the highest use seen (at a change or a sample) */
    int64_t peak_requests;       /* the highest MG_REQUESTS seen */
} mg_stats;

typedef struct mg_governor mg_governor;

/* A governor (LV_ERR_ARG for shares outside 0 < evict_at <= refuse_at <= 1, LV_ERR_NOMEM). */
lv_status mg_new(const mg_config *cfg, mg_governor **out, lv_err *err);
void mg_free(mg_governor *g); /* NULL: no-op */

/* The fixed part: what is held before any request (set once loaded). */
void mg_set_fixed(mg_governor *g, int64_t bytes);

/* Adds bytes to pool if the use stays within the refuse line (or there is
 * no limit); else adds nothing and counts a refusal. */
bool mg_reserve(mg_governor *g, mg_pool pool, int64_t bytes);

/* mg_reserve; when it fails, asks the caches to make room for bytes (the
 * waker below) and tries again as they do, for up to wait_ms. */
bool mg_reserve_wait(mg_governor *g, mg_pool pool, int64_t bytes, int wait_ms);

/* Adds bytes (negative: gives back) without a check. */
void mg_add(mg_governor *g, mg_pool pool, int64_t bytes);

/* Sets the pool to bytes (the caches' owner, after every change). */
void mg_set(mg_governor *g, mg_pool pool, int64_t bytes);

/* The level now, the measure read again first when fresh (else when due). */
mg_level mg_level_now(mg_governor *g, bool fresh);

/* Bytes the caches should give up now: how far the use (plus what a
 * waiting reservation asks for) is above the evict line; 0 when under. */
int64_t mg_excess(mg_governor *g);

/* The one who evicts (the scheduler): woken when a reservation waits for
 * room. Called with no lock held. */
void mg_set_waker(mg_governor *g, void (*wake)(void *ud), void *ud);

/* The evicting side is done with a pass (freed what it could): counts the
 * entries and wakes the reservations waiting. */
void mg_evicted(mg_governor *g, int entries);

void mg_get_stats(mg_governor *g, mg_stats *out);

/* "normal", "evict", "refuse". */
const char *mg_level_name(mg_level level);

#endif
