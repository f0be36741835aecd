/*
 * governor.c - the memory budget's accounting, sampling and levels
 * (governor.h).
 */
#include "engine/governor.h"

#include "base/clock.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct mg_governor {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* an eviction pass ended */
    mg_config cfg;
    int64_t fixed;
    int64_t pools[MG_N_POOLS];
    int64_t measured; /* -1: none yet */
    double t_measured;
    int64_t want;  /* bytes that waiting reservations ask the caches for */
    long passes;   /* eviction passes so far */
    int last_pass; /* entries the last pass evicted */
    uint64_t refused, pressure_evictions;
    int64_t peak_use, peak_requests; /* high-water marks */
    void (*wake)(void *ud);
    void *wake_ud;
};

lv_status mg_new(const mg_config *cfg, mg_governor **out, lv_err *err) {
    *out = NULL;
    mg_config c = *cfg;
    if (c.evict_at == 0) c.evict_at = 0.80;
    if (c.refuse_at == 0) c.refuse_at = 0.95;
    if (c.limit < 0 || !(c.evict_at > 0 && c.evict_at <= c.refuse_at && c.refuse_at <= 1))
        return lv_fail(err, LV_ERR_ARG,
                       "memory governor: limit %lld must be >= 0 and 0 < evict_at (%g) <= "
                       "refuse_at (%g) <= 1",
                       (long long)c.limit, c.evict_at, c.refuse_at);
    mg_governor *g = calloc(1, sizeof *g);
    if (!g) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->cfg = c;
    g->measured = -1;
    *out = g;
    return LV_OK;
}

void mg_free(mg_governor *g) {
    if (!g) return;
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

/* ---- under g->mu ---------------------------------------------------------------------------- */

static void note_peaks_locked(mg_governor *g);

static void sample_locked(mg_governor *g, bool fresh) {
    if (!g->cfg.measure) return;
    double now = lv_now_ms();
    if (!fresh && g->measured >= 0 && now - g->t_measured < MG_SAMPLE_MS) return;
    int64_t v = g->cfg.measure(g->cfg.measure_ud);
    if (v >= 0) {
        g->measured = v;
        g->t_measured = now;
        note_peaks_locked(g);
    }
}

static int64_t accounted_locked(const mg_governor *g) {
    int64_t a = g->fixed;
    for (int p = 0; p < MG_N_POOLS; p++) a += g->pools[p];
    return a;
}

static int64_t use_locked(const mg_governor *g) {
    int64_t a = accounted_locked(g);
    return g->measured > a ? g->measured : a;
}

/* After any change: the high-water marks. */
static void note_peaks_locked(mg_governor *g) {
    int64_t u = use_locked(g);
    if (u > g->peak_use) g->peak_use = u;
    if (g->pools[MG_REQUESTS] > g->peak_requests) g->peak_requests = g->pools[MG_REQUESTS];
}

static int64_t line(const mg_governor *g, double share) {
    return (int64_t)(share * (double)g->cfg.limit);
}

static mg_level level_locked(const mg_governor *g) {
    if (!g->cfg.limit) return MG_NORMAL;
    int64_t u = use_locked(g);
    return u >= line(g, g->cfg.refuse_at)  ? MG_REFUSE
           : u >= line(g, g->cfg.evict_at) ? MG_EVICT
                                           : MG_NORMAL;
}

static bool fits_locked(mg_governor *g, int64_t bytes) {
    sample_locked(g, false);
    return !g->cfg.limit || use_locked(g) + bytes <= line(g, g->cfg.refuse_at);
}

/* ---- the calls ------------------------------------------------------------------------------ */

void mg_set_fixed(mg_governor *g, int64_t bytes) {
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    g->fixed = bytes;
    pthread_mutex_unlock(&g->mu);
}

bool mg_reserve_wait(mg_governor *g, mg_pool pool, int64_t bytes, int wait_ms) {
    if (!g) return true;
    double deadline = lv_now_ms() + wait_ms;
    pthread_mutex_lock(&g->mu);
    bool ok = fits_locked(g, bytes);
    if (!ok && g->wake && wait_ms > 0) {
        g->want += bytes;
        while (!ok) {
            long pass = g->passes;
            void (*wake)(void *) = g->wake;
            void *ud = g->wake_ud;
            pthread_mutex_unlock(&g->mu);
            wake(ud);
            pthread_mutex_lock(&g->mu);
            double left = deadline - lv_now_ms();
            if (left <= 0) break;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            long long ns = ts.tv_nsec + (long long)(left * 1e6);
            ts.tv_sec += (time_t)(ns / 1000000000LL);
            ts.tv_nsec = (long)(ns % 1000000000LL);
            while (g->passes == pass)
                if (pthread_cond_timedwait(&g->cv, &g->mu, &ts)) break;
            sample_locked(g, true); /* what the eviction freed */
            ok = fits_locked(g, bytes);
            if (g->passes == pass || g->last_pass == 0) break; /* timed out, or nothing left */
        }
        g->want -= bytes;
    }
    if (ok)
        g->pools[pool] += bytes;
    else
        g->refused++;
    note_peaks_locked(g);
    pthread_mutex_unlock(&g->mu);
    return ok;
}

bool mg_reserve(mg_governor *g, mg_pool pool, int64_t bytes) {
    return mg_reserve_wait(g, pool, bytes, 0);
}

void mg_add(mg_governor *g, mg_pool pool, int64_t bytes) {
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    g->pools[pool] += bytes;
    note_peaks_locked(g);
    pthread_mutex_unlock(&g->mu);
}

void mg_set(mg_governor *g, mg_pool pool, int64_t bytes) {
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    g->pools[pool] = bytes;
    note_peaks_locked(g);
    pthread_mutex_unlock(&g->mu);
}

mg_level mg_level_now(mg_governor *g, bool fresh) {
    if (!g) return MG_NORMAL;
    pthread_mutex_lock(&g->mu);
    sample_locked(g, fresh);
    mg_level l = level_locked(g);
    pthread_mutex_unlock(&g->mu);
    return l;
}

int64_t mg_excess(mg_governor *g) {
    if (!g) return 0;
    pthread_mutex_lock(&g->mu);
    int64_t x = 0;
    if (g->cfg.limit) {
        sample_locked(g, false);
        x = use_locked(g) + g->want - line(g, g->cfg.evict_at);
    }
    pthread_mutex_unlock(&g->mu);
    return x > 0 ? x : 0;
}

void mg_set_waker(mg_governor *g, void (*wake)(void *ud), void *ud) {
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    g->wake = wake;
    g->wake_ud = ud;
    pthread_mutex_unlock(&g->mu);
}

void mg_evicted(mg_governor *g, int entries) {
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    g->passes++;
    g->last_pass = entries;
    g->pressure_evictions += (uint64_t)(entries > 0 ? entries : 0);
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

void mg_get_stats(mg_governor *g, mg_stats *out) {
    memset(out, 0, sizeof *out);
    out->measured = -1;
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    sample_locked(g, false);
    out->limit = g->cfg.limit;
    out->fixed = g->fixed;
    memcpy(out->pools, g->pools, sizeof out->pools);
    out->accounted = accounted_locked(g);
    out->measured = g->measured;
    out->use = use_locked(g);
    out->level = level_locked(g);
    out->refused = g->refused;
    out->pressure_evictions = g->pressure_evictions;
    out->peak_use = g->peak_use;
    out->peak_requests = g->peak_requests;
    pthread_mutex_unlock(&g->mu);
}

const char *mg_level_name(mg_level level) {
    return level == MG_REFUSE ? "refuse" : level == MG_EVICT ? "evict" : "normal";
}
