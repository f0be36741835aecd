/*
 * scheduler.c - the bounded job queue and the engine turn that runs the
 * admitted jobs with continuous batching (scheduler.h).
 *
 * The queue is a ring of job pointers under one mutex. The engine keeps up
 * to `parallel` jobs in slots, each with its own llava_seq (KV cache),
 * llava_features (its images' rows) and gen_state (sampler, stop strings,
 * streamed text). A slot goes ENCODE (its images, piece by piece) →
 * PREFILL (its prompt, in chunks) → DECODE (a token per turn). Every turn
 *   1. admits queued jobs into free slots (new requests join between
 *      steps);
 *   2. drops the jobs that were cancelled (sched_job_cancel, deadline,
 *      shutdown, the caller's cancelled callback): their sequence is freed
 *      at once;
 *   3. spends the turn's background budget: encoder pieces (model/llava.h:
 *      a few rows of one stage of one tile) for the oldest slots with
 *      images left, then prompt rows for the joining slots, oldest first;
 *   4. runs ONE forward (llava_forward): the last token of every decoding
 *      job and the prompt chunks, image features in place of their <image>
 *      ids; then every decoding job samples (gen_state_step), its text and
 *      tokens go into the job, a job whose prompt is complete samples its
 *      first token, and jobs that stop are finished and their sequence
 *      freed.
 *
 * The budget. With no job decoding, a turn encodes for up to TURN_MS and
 * prefills up to PREFILL_ROWS rows: nothing waits but new arrivals, which
 * join at the next turn. With jobs decoding, a turn aims at the quiet step
 * (a forward of the decoding rows alone) times 1 + (max_itl_ratio − 1) ·
 * ITL_MARGIN, so the running streams' inter-token latency stays within
 * max_itl_ratio of what it is without arrivals. Costs are measured, not
 * assumed, each a moving average: the quiet step per number of decoding
 * rows (from turns without background work only, measured again every
 * QUIET_EVERY turns as the contexts grow), the cost of a prompt row (the
 * forward's time beyond the quiet step) and of a row of each encoder piece
 * kind. The background allowance sizes the pieces and chunks; after every
 * turn that carried background work it is corrected by half of how far
 * the turn missed its target. A piece never runs fewer than one row, so
 * work always advances.
 *
 * Jobs are independent: each row of a forward gives bit-identical results
 * whatever else runs beside it (the CPU matmul computes a row the same for
 * any n: backend/cpu/matmul.c), and encoder pieces give the bits of one
 * pass, so a greedy request gives the same answer alone or among others,
 * through gen_run or the server.
 *
 * KV memory: a sequence is allocated when its prefill starts, sized to
 * what the job can use (prompt + max_tokens) but at most ctx positions,
 * where ctx is sched_config.ctx_size or, when that is 0, the model's
 * context capped so that parallel sequences of ctx positions fit in
 * KV_BUDGET bytes (8 GiB: 7B Mistral, 128 KiB a position with the default
 * f16 cache, 256 KiB with f32, gets its full 32768 positions at parallel 2
 * (f32: 1) and 4096 (f32: 2048) at parallel 16). A cancelled or failed
 * job's sequence is freed at once.
 *
 * The prefix cache (engine/prefix_cache.h). A job that ends well leaves its
 * sequence in the cache (up to cache_slots of them, least recently used
 * evicted) with the ids it was fed and its images' keys. A new job takes
 * the sequence sharing the longest prefix with its prompt (at least
 * PREFIX_MIN ids, never ending inside an image, at least one prompt id left
 * to prefill): it continues it where the prefix ends (or gets a copy of the
 * prefix when the sequence is too short for it or holds more than the
 * prefix), skips encoding the images inside the prefix and prefills the
 * rest. The prefill is chunk invariant, so the tokens and logprobs are
 * those of a cold prefill, bit for bit. Kept sequences count against the
 * same KV bound as running ones (parallel x ctx positions): they are
 * evicted before a new sequence would pass it, or fails to allocate.
 *
 * The image cache (engine/image_cache.h). When a job's image is about to
 * be encoded, its key (pc_image_key of the preprocessed tensor) is looked
 * up: a hit copies the kept rows into the job's features at the image's
 * row offset and the encoder is skipped; a miss encodes, and the finished
 * rows are copied into a new entry (least recently used ones evicted to
 * stay within image_cache_bytes). The encoder's rows depend only on its
 * input tensor, so a hit gives the bits of a cold encode. Images inside a
 * reused prefix are not looked up: their rows are never read.
 *
 * Choices sharing a prompt (sched_job.prompt_of: the server's n > 1). A
 * later choice admitted while the first is still encoding or prefilling
 * waits in its slot (SL_WAIT, no memory held but its inputs); once the
 * first decodes, it copies the first's prompt KV but the last id (a
 * copy: both go on from there) and prefills that one id. If the first has
 * ended, its sequence is in the prefix cache or gone, and the choice
 * begins as any job does.
 *
 * Memory (sched_config.governor, engine/governor.h). The scheduler tells
 * the governor what its caches hold after every change; at the start of
 * every turn, and when a reservation waits for room (the governor wakes
 * the engine), it evicts cache entries while the governor is above its
 * evict line, then hands the freed heap back (lv_allocator_trim), as it
 * does when it goes idle and every trim interval while busy. Admission
 * does not check memory: the server reserved each request's before
 * submitting it.
 *
 * Device faults. A backend's ops cannot return errors; one whose work may
 * fail asynchronously (CUDA: a kernel error, out of memory inside an op)
 * records the first fault, and llava_device_status reports it. It is asked
 * after every forward, before any job samples: a faulted step's logits are
 * garbage. From then on every job fails with that message (the running ones
 * at once, new ones as they are admitted): nothing on the device can be
 * trusted until the process restarts.
 */
#include "engine/scheduler.h"

#include "base/clock.h"
#include "base/log.h"
#include "base/sysmem.h"
#include "engine/image_cache.h"
#include "engine/prefix_cache.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KV_BUDGET    ((size_t)8 << 30) /* bytes of KV cache, all sequences, default ctx */
#define MIN_CTX      512               /* the default ctx is never capped below this */
#define PREFILL_ROWS LLAVA_BATCH       /* prompt rows per forward at most */
#define TURN_MS      50.0              /* encoding per turn while nothing decodes */
#define ITL_MARGIN   0.75              /* share of the allowed latency budgeted (noise) */
#define EWMA         0.25              /* weight of a new cost sample */
#define FIRST_ROWS   8                 /* rows of a piece whose cost is not known yet */
#define QUIET_EVERY  32                /* turns between two measurements of the quiet step */
#define PREFIX_MIN   16                /* cached positions worth taking over a sequence for */
#define TRIM_EVERY_S 30.0              /* freed heap handed back while busy, seconds between */

typedef enum { SL_FREE = 0, SL_WAIT, SL_ENCODE, SL_PREFILL, SL_DECODE } slot_phase;

/* One admitted job and its engine state. */
typedef struct {
    slot_phase phase;
    sched_job *j;
    long order;       /* admission order: the oldest joining slot is served first */
    gen_callbacks cb; /* the job's callbacks (ud = j) */
    gen_state g;
    llava_seq *s;
    llava_features *f; /* the images' feature rows, NULL without images */
    llava_encoder *enc;
    int next_image;       /* images whose encoder started */
    int feat_rows;        /* feature rows given to encoders so far */
    int looked_up;        /* images looked up in the image cache so far (once each) */
    int n_image_ids;      /* <image> ids in the prompt */
    int prefilled;        /* prompt ids prefilled so far (the cached prefix included) */
    int feat_used;        /* feature rows consumed by the prefill so far */
    int n_cached;         /* prompt ids whose KV came from the prefix cache */
    uint64_t *image_keys; /* (n_images) pc_image_key of each image, with either cache */
    int *image_rows;      /* (n_images) each image's <image> ids */
} slot;

/* Measured costs (moving averages, ms; 0 = not measured yet). */
typedef struct {
    double *decode;     /* (parallel + 1) a forward of n decode rows alone: the quiet step */
    long *decode_turn;  /* (parallel + 1) the turn that measured it last */
    double prefill_row; /* one prompt row in a forward */
    double encode_row[LLAVA_ENCODER_KINDS]; /* one row of an encoder piece of each kind */
} costs;

struct sched {
    llava *m; /* borrowed */
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sched_job **ring; /* (cap) waiting jobs, FIFO from head */
    int cap, head, n;
    bool stopping;
    bool joined;
    bool cancel_running;

    /* engine only */
    int parallel;
    int ctx; /* KV positions per sequence at most */
    double max_itl_ratio;
    slot *slots;       /* (parallel) */
    long admitted;     /* jobs admitted so far */
    llava_batch *bt;   /* scratch of the forward */
    float *logits;     /* (parallel, vocab) host */
    llava_input *in;   /* (parallel) the step's inputs */
    int *who;          /* (parallel) slot of each input */
    sched_job **admit; /* (parallel) jobs taken from the queue this turn */
    slot **order;      /* (parallel) slots of one phase, oldest first */
    costs cost;
    double allow;         /* ms of background work a turn may carry while jobs decode (feedback) */
    long turns;           /* forwards run */
    lv_status fault;      /* the device's first fault (llava_device_status), or LV_OK */
    lv_err fault_err;     /* and its message */
    prefix_cache cache;   /* sequences kept after their jobs (cap 0: none) */
    image_cache images;   /* images' feature rows kept after their encoding (budget 0: none) */
    size_t prefix_budget; /* bytes of KV the kept sequences hold at most (0: no own bound) */
    mg_governor *gov;     /* borrowed; NULL: none */
    double trim_every_ms; /* freed heap handed back this often while busy (0: never) */
    double t_trim;        /* when it was last */
    bool busy_since_trim; /* work ran since (handed back once more on going idle) */
    bool wake;            /* under mu: the governor asks for room (sched_wake) */

    /* figures, under mu */
    int n_running;
    int64_t kv_used;
    size_t kv_bytes_alloc;
    size_t kv_bytes_retained;
    size_t kv_per_pos;
    uint64_t cache_hits, cache_tokens; /* jobs that reused a prefix, and its positions */
    uint64_t cache_evictions;
    uint64_t prompt_shares; /* jobs that copied their prompt's KV from another choice */
    int n_retained;
    image_cache image_figures; /* a copy of images' counters and sizes (no entries) */
};

static void ewma(double *avg, double sample) {
    if (sample < 0) sample = 0;
    *avg = *avg > 0 ? (1 - EWMA) * *avg + EWMA * sample : sample;
}

/* ---- jobs ------------------------------------------------------------------------------ */

sched_job *sched_job_new(void) {
    sched_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    atomic_init(&j->cancel, false);
    atomic_init(&j->refs, 1);
    return j;
}

void sched_job_release(sched_job *j) {
    if (!j || atomic_fetch_sub(&j->refs, 1) != 1) return;
    if (!j->borrowed) {
        free(j->ids);
        for (int i = 0; i < j->n_images; i++) img_tensor_free(&j->images[i]);
        free(j->images);
        free(j->image_keys);
    }
    if (j->keep_free) j->keep_free(j->keep);
    sched_job_release(j->prompt_of);
    lv_buf_free(&j->pending);
    free(j->tokens);
    gen_result_free(&j->result);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

void sched_job_share_prompt(sched_job *j, sched_job *first) {
    atomic_fetch_add(&first->refs, 1);
    j->prompt_of = first;
}

void sched_job_cancel(sched_job *j) {
    atomic_store(&j->cancel, true);
}

void sched_job_wait(sched_job *j) {
    pthread_mutex_lock(&j->mu);
    while (!j->done) pthread_cond_wait(&j->cv, &j->mu);
    pthread_mutex_unlock(&j->mu);
}

bool sched_job_take(sched_job *j, lv_buf *out, int wait_ms) {
    pthread_mutex_lock(&j->mu);
    if (!j->done && j->pending.len == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long ns = ts.tv_nsec + (long long)wait_ms * 1000000LL;
        ts.tv_sec += (time_t)(ns / 1000000000LL);
        ts.tv_nsec = (long)(ns % 1000000000LL);
        while (!j->done && j->pending.len == 0)
            if (pthread_cond_timedwait(&j->cv, &j->mu, &ts)) break;
    }
    if (j->pending.len && lv_buf_append(out, j->pending.data, j->pending.len) == LV_OK)
        j->pending.len = 0;
    bool done = j->done && j->pending.len == 0;
    pthread_mutex_unlock(&j->mu);
    return done;
}

bool sched_job_text_lost(sched_job *j) {
    pthread_mutex_lock(&j->mu);
    bool lost = j->text_lost;
    pthread_mutex_unlock(&j->mu);
    return lost;
}

static void finish(sched_job *j, lv_status st) {
    pthread_mutex_lock(&j->mu);
    j->t_done_ms = lv_now_ms();
    j->st = st;
    j->done = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

/* ---- the job's callbacks ------------------------------------------------------------ */

static void on_text(void *ud, const char *text, size_t len) {
    sched_job *j = ud;
    const gen_callbacks *u = j->callbacks;
    if (u && u->on_text) u->on_text(u->ud, text, len);
    pthread_mutex_lock(&j->mu);
    /* out of memory: the delta is lost, not the job; a stream sees text_lost */
    if (lv_buf_append(&j->pending, text, len) != LV_OK) j->text_lost = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static void on_token(void *ud, const gen_token *t) {
    sched_job *j = ud;
    const gen_callbacks *u = j->callbacks;
    if (u && u->on_token) u->on_token(u->ud, t);
    pthread_mutex_lock(&j->mu);
    if (!j->t_first_ms) j->t_first_ms = lv_now_ms();
    if (j->record_tokens && t->sample) {
        if (j->n_tokens == j->cap_tokens) {
            int cap = j->cap_tokens ? 2 * j->cap_tokens : 64;
            sample_result *p = realloc(j->tokens, (size_t)cap * sizeof *p);
            if (p) {
                j->tokens = p;
                j->cap_tokens = cap;
            }
        }
        if (j->n_tokens < j->cap_tokens) j->tokens[j->n_tokens++] = *t->sample;
    }
    pthread_mutex_unlock(&j->mu);
}

static bool is_cancelled(sched_job *j) {
    if (atomic_load(&j->cancel)) return true;
    if (j->callbacks && j->callbacks->cancelled && j->callbacks->cancelled(j->callbacks->ud))
        return true;
    if (j->deadline_ms > 0 && lv_now_ms() > j->deadline_ms) {
        j->timed_out = true; /* read by others only after done */
        return true;
    }
    return false;
}

/* ---- slots ------------------------------------------------------------------------------ */

/* Recomputes the figures from the slots (engine, under s->mu). */
static void update_stats_locked(sched *s) {
    int running = 0;
    int64_t used = 0;
    size_t alloc = 0;
    for (int i = 0; i < s->parallel; i++) {
        slot *sl = &s->slots[i];
        if (sl->phase == SL_FREE) continue;
        running++;
        if (sl->s) {
            used += llava_seq_pos(sl->s);
            alloc += (size_t)llava_seq_ctx(sl->s) * s->kv_per_pos;
        }
    }
    s->n_running = running;
    s->kv_used = used;
    s->kv_bytes_alloc = alloc;
    s->kv_bytes_retained = (size_t)pc_ctx_positions(&s->cache) * s->kv_per_pos;
    s->n_retained = s->cache.n;
    s->cache_evictions = s->cache.evictions;
    s->image_figures = s->images;
    s->image_figures.entries = NULL; /* the engine's own */
    mg_set(s->gov, MG_KV_CACHED, (int64_t)s->kv_bytes_retained);
    mg_set(s->gov, MG_IMAGE_CACHE, (int64_t)s->images.bytes);
}

static void update_stats(sched *s) {
    pthread_mutex_lock(&s->mu);
    update_stats_locked(s);
    pthread_mutex_unlock(&s->mu);
}

/* Ends the slot's job with st (its result already in place when LV_OK):
 * frees the sequence and the state first, so that the figures show the
 * memory back when the job is seen done. */
static void end_slot(sched *s, slot *sl, lv_status st) {
    sched_job *j = sl->j;
    /* a job with a request id is the server's: one line each; gen_run's are quiet */
    lv_log_level level = j->rid[0] ? LV_LOG_INFO : LV_LOG_DEBUG;
    if (st == LV_OK)
        lv_log(level, "[%s] generated %d tokens in %.0f ms (%s)", j->rid, j->result.n_ids,
               lv_now_ms() - j->t_submit_ms, j->result.finish_reason);
    else
        lv_log(level, "[%s] %s: %s%s", j->rid, lv_status_str(st), j->err.msg,
               j->timed_out ? " (timeout)" : "");
    gen_state_deinit(&sl->g);
    llava_seq_free(sl->s);
    llava_encoder_free(sl->enc);
    llava_features_free(sl->f);
    free(sl->image_keys);
    free(sl->image_rows);
    memset(sl, 0, sizeof *sl);
    update_stats(s);
    finish(j, st);
    sched_job_release(j);
}

/* ---- the prefix cache ------------------------------------------------------------------ */

/* What the job's prompt puts in its positions. */
static pc_content prompt_content(const slot *sl) {
    const sched_job *j = sl->j;
    return (pc_content){j->ids, j->n_ids, sl->image_keys, sl->image_rows, j->n_images};
}

/* KV positions the job can use: prompt + max_tokens, at most ctx. */
static int job_ctx(const sched *s, const sched_job *j) {
    long want = (long)j->n_ids + j->params.max_tokens;
    return want < s->ctx ? (int)want : s->ctx;
}

/* Evicts kept sequences (never `keep`) until ctx more positions fit in the
 * KV the scheduler may allocate (parallel x ctx, as without the cache). */
static void make_room(sched *s, int ctx, const llava_seq *keep) {
    size_t total = (size_t)s->parallel * s->ctx * s->kv_per_pos;
    for (;;) {
        update_stats(s);
        size_t in_use = s->kv_bytes_alloc + s->kv_bytes_retained;
        if (in_use + (size_t)ctx * s->kv_per_pos <= total || !pc_evict_lru(&s->cache, keep)) break;
    }
}

/* A sequence of ctx positions, empty or holding src's first n_pos; kept
 * sequences make room for it first, and again while memory runs out. */
static lv_status new_sequence(sched *s, int ctx, const llava_seq *src, int n_pos, llava_seq **out,
                              lv_err *err) {
    make_room(s, ctx, src);
    for (;;) {
        lv_status st = src ? llava_seq_copy_prefix(src, n_pos, ctx, out, err)
                           : llava_seq_new(s->m, ctx, out, err);
        if (st != LV_ERR_NOMEM || !pc_evict_lru(&s->cache, src)) return st;
    }
}

/* The index of the kept entry holding seq, -1 if none. */
static int entry_of(const prefix_cache *c, const llava_seq *seq) {
    for (int i = 0; i < c->n; i++)
        if (c->entries[i].seq == seq) return i;
    return -1;
}

/* The kept sequence sharing the longest prefix with the job's prompt (at
 * least PREFIX_MIN positions, and at least one prompt id left to prefill,
 * whose logits the job samples from), at the prefix's end: taken over
 * when the job continues it and its context fits, else its prefix copied
 * into a sequence of the job's size (an entry the copy covers wholly is
 * dropped, the new one supersedes it). NULL when none fits. */
static llava_seq *cached_prefix(sched *s, slot *sl, int *n_prefix) {
    pc_content q = prompt_content(sl);
    int i = pc_find(&s->cache, &q, sl->j->n_ids - 1, n_prefix);
    if (i < 0 || *n_prefix < PREFIX_MIN) return NULL;
    int ctx = job_ctx(s, sl->j);
    pc_entry *e = &s->cache.entries[i];
    bool whole = *n_prefix == e->n;
    if (whole && llava_seq_ctx(e->seq) >= ctx) return pc_take(&s->cache, i);
    const llava_seq *src = e->seq;
    llava_seq *seq;
    lv_err err;
    if (new_sequence(s, ctx, src, *n_prefix, &seq, &err)) {
        LV_DEBUG("[%s] prefix cache: %s", sl->j->rid, err.msg);
        return NULL;
    }
    if (whole && (i = entry_of(&s->cache, src)) >= 0) llava_seq_free(pc_take(&s->cache, i));
    return seq;
}

/* Each image's key and rows, what both caches and choices sharing a prompt
 * match images by (once per slot). */
static lv_status compute_image_keys(sched *s, slot *sl, lv_err *err) {
    sched_job *j = sl->j;
    if (sl->image_keys) return LV_OK;
    int n = j->n_images > 0 ? j->n_images : 1;
    sl->image_keys = malloc((size_t)n * sizeof *sl->image_keys);
    sl->image_rows = malloc((size_t)n * sizeof *sl->image_rows);
    if (!sl->image_keys || !sl->image_rows) {
        free(sl->image_keys), free(sl->image_rows);
        sl->image_keys = NULL, sl->image_rows = NULL;
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < j->n_images; i++) {
        sl->image_keys[i] = j->image_keys ? j->image_keys[i] : pc_image_key(&j->images[i]);
        sl->image_rows[i] = llava_tensor_token_count(s->m, &j->images[i]);
    }
    return LV_OK;
}

/* The slot running the job's first choice (prompt_of), NULL when none does. */
static slot *sibling_of(sched *s, const slot *sl) {
    if (!sl->j->prompt_of) return NULL;
    for (int i = 0; i < s->parallel; i++)
        if (s->slots[i].phase != SL_FREE && s->slots[i].j == sl->j->prompt_of) return &s->slots[i];
    return NULL;
}

/* Another choice of the same prompt, decoding: a copy of the prompt's KV
 * (all but its last id, whose logits the job samples from). NULL if none. */
static llava_seq *sibling_prefix(sched *s, slot *sl, int *n_prefix) {
    slot *sib = sibling_of(s, sl);
    lv_err err;
    if (!sib || sib->phase != SL_DECODE || !sib->s || compute_image_keys(s, sib, &err)) return NULL;
    pc_content q = prompt_content(sl), have = prompt_content(sib);
    int limit = sl->j->n_ids - 1, fed = llava_seq_pos(sib->s);
    *n_prefix = pc_common_prefix(&q, &have, limit < fed ? limit : fed, llava_image_token_id(s->m));
    llava_seq *seq;
    if (*n_prefix < 1 || new_sequence(s, job_ctx(s, sl->j), sib->s, *n_prefix, &seq, &err))
        return NULL;
    LV_DEBUG("[%s] prompt shared with %s: %d of %d ids", sl->j->rid, sib->j->rid, *n_prefix,
             sl->j->n_ids);
    return seq;
}

/* The keys, when something will match by them (hashing the pixels costs a
 * pass over them: skipped when both caches are off and no choice shares). */
static lv_status image_keys(sched *s, slot *sl, lv_err *err) {
    if (s->cache.cap == 0 && !ic_enabled(&s->images) && !sl->j->prompt_of) return LV_OK;
    return compute_image_keys(s, sl, err);
}

/* Before the job encodes: its prompt from another choice of it, else the
 * longest cached prefix. The prefill starts after it, and images wholly
 * inside it are not encoded (their feature rows would not be read). */
static lv_status reuse_prefix(sched *s, slot *sl) {
    sched_job *j = sl->j;
    int n_prefix = 0;
    llava_seq *seq = sibling_prefix(s, sl, &n_prefix);
    bool shared = seq != NULL;
    if (!seq && s->cache.cap == 0) return LV_OK;
    if (!seq) seq = cached_prefix(s, sl, &n_prefix);
    if (!seq) return LV_OK;
    llava_seq_truncate(seq, n_prefix);
    sl->s = seq;
    sl->prefilled = sl->n_cached = n_prefix;
    /* the prefix ends between images: the first ones are wholly inside */
    int rows = llava_count_image_ids(s->m, j->ids, n_prefix);
    while (sl->next_image < j->n_images && sl->feat_rows + sl->image_rows[sl->next_image] <= rows)
        sl->feat_rows += sl->image_rows[sl->next_image++];
    sl->feat_used = sl->feat_rows;
    if (shared) {
        s->prompt_shares++;
        update_stats(s);
        return LV_OK;
    }
    s->cache_hits++;
    s->cache_tokens += (uint64_t)n_prefix;
    LV_DEBUG("[%s] prefix cache: %d of %d prompt ids cached, %d of %d images skipped", j->rid,
             n_prefix, j->n_ids, sl->next_image, j->n_images);
    update_stats(s);
    return LV_OK;
}

/* The job ended well: its sequence is kept with the ids it was fed (the
 * prompt, then every generated id but the last, which was never run). */
static void keep_sequence(sched *s, slot *sl) {
    sched_job *j = sl->j;
    if (s->cache.cap == 0 || !sl->s || !sl->image_keys) return; /* keys: the image cache's */
    int n = llava_seq_pos(sl->s), n_gen = n - j->n_ids;
    if (n_gen < 0 || n_gen > j->result.n_ids) return;
    int32_t *fed = malloc((size_t)(n > 0 ? n : 1) * sizeof *fed);
    if (!fed) return;
    memcpy(fed, j->ids, (size_t)j->n_ids * sizeof *fed);
    memcpy(fed + j->n_ids, j->result.ids, (size_t)n_gen * sizeof *fed);
    pc_content what = prompt_content(sl);
    what.ids = fed;
    what.n = n;
    lv_err err;
    if (pc_put(&s->cache, sl->s, &what, &err)) LV_DEBUG("[%s] prefix cache: %s", j->rid, err.msg);
    sl->s = NULL; /* the cache's now, or freed by pc_put */
    free(fed);
    while (s->prefix_budget &&
           (size_t)pc_ctx_positions(&s->cache) * s->kv_per_pos > s->prefix_budget &&
           pc_evict_lru(&s->cache, NULL)) {
    }
}

/* The job's generation is over: its result, its sequence kept, then the end. */
static void complete_slot(sched *s, slot *sl) {
    sched_job *j = sl->j;
    lv_status st = gen_state_finish(&sl->g, &j->result, &j->err);
    if (!st) keep_sequence(s, sl);
    end_slot(s, sl, st);
}

/* Ends the slot's job with the device's fault. */
static void fail_with_fault(sched *s, slot *sl) {
    sl->j->err = s->fault_err;
    end_slot(s, sl, s->fault);
}

/* After a forward: whether the device faulted (now or before). The first
 * fault is kept and every active job ends with it. */
static bool device_faulted(sched *s) {
    if (s->fault) return true;
    if (!(s->fault = llava_device_status(s->m, &s->fault_err))) return false;
    LV_ERROR("device fault: %s; every job fails from now on", s->fault_err.msg);
    pc_clear(&s->cache); /* nothing the device holds can be trusted */
    ic_clear(&s->images);
    for (int i = 0; i < s->parallel; i++)
        if (s->slots[i].phase != SL_FREE) fail_with_fault(s, &s->slots[i]);
    return true;
}

/* The admitted job's work begins: its prompt's prefix from another choice
 * or the cache, room for the rows of the images it must encode, its
 * generation state. */
static void begin_job(sched *s, slot *sl) {
    sched_job *j = sl->j;
    lv_status st = reuse_prefix(s, sl);
    /* the images the cached prefix does not hold need their feature rows */
    if (!st && sl->next_image < j->n_images)
        st = llava_features_new(s->m, sl->n_image_ids, &sl->f, &j->err);
    j->params.logprobs = j->record_tokens;
    if (!st) st = gen_state_init(&sl->g, s->m, j->ids, j->n_ids, &j->params, &sl->cb, &j->err);
    if (st) end_slot(s, sl, st);
}

/* Admits j into the free slot sl: checks what can be checked now. */
static void start_slot(sched *s, slot *sl, sched_job *j) {
    memset(sl, 0, sizeof *sl);
    sl->j = j;
    j->started = true;
    sl->order = s->admitted++;
    sl->phase = SL_ENCODE;
    sl->cb = (gen_callbacks){.on_token = on_token, .on_text = on_text, .ud = j};
    if (s->fault) { /* the device is gone: nothing it computes can be trusted */
        fail_with_fault(s, sl);
        return;
    }
    lv_status st = LV_OK;
    if (j->n_ids < 1)
        st = lv_fail(&j->err, LV_ERR_ARG, "empty prompt");
    else if (j->n_images < 0 || (j->n_images > 0 && !j->images))
        st = lv_fail(&j->err, LV_ERR_ARG, "%d images announced but none given", j->n_images);
    else if (j->n_ids > s->ctx)
        st = lv_fail(&j->err, LV_ERR_ARG, "the prompt is %d tokens long; %s %d tokens", j->n_ids,
                     s->ctx == llava_max_ctx(s->m) ? "the model's context is" : "the context holds",
                     s->ctx);
    /* a bad id fails this job alone, before it can join a batch */
    if (!st) st = llava_check_ids(s->m, j->ids, j->n_ids, j->n_images > 0, &j->err);
    if (!st && j->n_images > 0) {
        /* masked_scatter: every <image> id takes one feature row */
        long rows = 0;
        for (int i = 0; !st && i < j->n_images; i++) {
            int n = llava_tensor_token_count(s->m, &j->images[i]);
            if (n < 1)
                st = lv_fail(&j->err, LV_ERR_ARG, "image %d: the image tensor fits no grid", i + 1);
            rows += n;
        }
        sl->n_image_ids = llava_count_image_ids(s->m, j->ids, j->n_ids);
        if (!st && sl->n_image_ids != rows)
            st = lv_fail(&j->err, LV_ERR_ARG,
                         "the prompt has %d image tokens but the images give %ld features",
                         sl->n_image_ids, rows);
    }
    if (!st) st = image_keys(s, sl, &j->err);
    if (st) {
        end_slot(s, sl, st);
        return;
    }
    /* another choice of this prompt still prefilling: wait for it, then copy */
    slot *sib = sibling_of(s, sl);
    if (sib && sib->phase != SL_DECODE) {
        sl->phase = SL_WAIT;
        return;
    }
    begin_job(s, sl);
}

/* The slots waiting for another choice of their prompt whose prompt is now
 * in (or which ended): they begin. */
static void release_waiting(sched *s) {
    for (int i = 0; i < s->parallel; i++) {
        slot *sl = &s->slots[i];
        if (sl->phase != SL_WAIT) continue;
        slot *sib = sibling_of(s, sl);
        if (sib && sib->phase != SL_DECODE) continue;
        sl->phase = SL_ENCODE;
        begin_job(s, sl);
    }
}

/* After the last image: the slot gets its sequence and waits for prefill. */
static lv_status start_prefill(sched *s, slot *sl, lv_err *err) {
    lv_status st = sl->s ? LV_OK : new_sequence(s, job_ctx(s, sl->j), NULL, 0, &sl->s, err);
    if (st) return st;
    sl->phase = SL_PREFILL;
    update_stats(s);
    return LV_OK;
}

/* Keeps the rows of image i, just encoded into the slot's features at
 * row0, in the image cache (a copy: the job's features are consumed by its
 * prefill). Best effort: without memory the image is simply not kept. */
static void keep_image_rows(sched *s, slot *sl, int i, int row0) {
    image_cache *c = &s->images;
    int n = sl->image_rows[i];
    size_t bytes = (size_t)n * llava_text_dim(s->m) * sizeof(float);
    if (!ic_fits(c, bytes)) return;
    ic_make_room(c, bytes); /* before allocating: the peak stays within the budget */
    llava_features *rows;
    lv_err err;
    lv_status st = llava_features_new(s->m, n, &rows, &err);
    if (!st) {
        llava_features_copy_rows(rows, 0, sl->f, row0, n);
        st = ic_put(c, sl->image_keys[i], n, rows, bytes, &err);
    }
    if (st) LV_DEBUG("[%s] image cache: %s", sl->j->rid, err.msg);
}

/* The slot's next images whose rows the image cache holds: copied into
 * the job's features, not encoded. Stops at the first miss (an image is
 * looked up once: the hit and miss counts are per image). */
static void take_cached_images(sched *s, slot *sl) {
    sched_job *j = sl->j;
    while (ic_enabled(&s->images) && sl->next_image < j->n_images) {
        int i = sl->next_image, n = sl->image_rows[i];
        if (i < sl->looked_up) return; /* missed already: being encoded */
        sl->looked_up = i + 1;
        int e = ic_find(&s->images, sl->image_keys[i], n);
        if (e < 0) return;
        llava_features_copy_rows(sl->f, sl->feat_rows, s->images.entries[e].rows, 0, n);
        sl->next_image++;
        sl->feat_rows += n;
        sl->g.timings.n_images_cached++;
        LV_DEBUG("[%s] image cache: image %d of %d not encoded", j->rid, i + 1, j->n_images);
    }
}

/* The slot's encoder is done: its timings, its rows kept, then freed. */
static void finish_encoder(sched *s, slot *sl) {
    int i = sl->next_image - 1,
        row0 = sl->feat_rows - llava_tensor_token_count(s->m, &sl->j->images[i]);
    sl->g.timings.vision_ms += llava_encoder_ms(sl->enc);
    sl->g.timings.n_tiles += llava_encoder_tiles(sl->enc);
    sl->g.timings.n_images++;
    if (ic_enabled(&s->images)) keep_image_rows(s, sl, i, row0);
    llava_encoder_free(sl->enc);
    sl->enc = NULL;
}

/* Starts the encoder of the slot's next image not in the image cache, or
 * its prefill after the last. */
static lv_status next_image(sched *s, slot *sl, lv_err *err) {
    sched_job *j = sl->j;
    if (sl->enc) finish_encoder(s, sl);
    take_cached_images(s, sl);
    if (sl->next_image == j->n_images) return start_prefill(s, sl, err);
    const img_tensor *px = &j->images[sl->next_image];
    int n_tok = llava_tensor_token_count(s->m, px);
    lv_status st = n_tok < 1
                       ? lv_fail(err, LV_ERR_ARG, "the image tensor fits no grid")
                       : llava_encoder_new(s->m, px, sl->f, sl->feat_rows, false, &sl->enc, err);
    if (st) {
        lv_err_prefix(err, "image %d", sl->next_image + 1);
        return st;
    }
    sl->next_image++;
    sl->feat_rows += n_tok;
    return LV_OK;
}

/* Encoder pieces for sl: bounded (jobs decode), within budget_ms, each
 * piece sized from the measured cost of its kind; else whole pieces for up
 * to TURN_MS. Returns the time spent; *ran is set when a piece ran. */
static double encode_slot(sched *s, slot *sl, double budget_ms, bool bounded, bool *ran) {
    sched_job *j = sl->j;
    double t0 = lv_now_ms(), spent = 0, limit = bounded ? budget_ms : TURN_MS;
    lv_status st = LV_OK;
    while (sl->phase == SL_ENCODE && spent < limit) {
        if ((!sl->enc || llava_encoder_done(sl->enc)) && (st = next_image(s, sl, &j->err))) break;
        if (!sl->enc) break; /* prefill next */
        int kind, left = llava_encoder_next(sl->enc, &kind);
        double rate = s->cost.encode_row[kind];
        int rows = !bounded ? left : rate > 0 ? (int)((limit - spent) / rate) : FIRST_ROWS;
        rows = rows < 1 ? 1 : rows > left ? left : rows;
        double p0 = lv_now_ms();
        if ((st = llava_encoder_run(sl->enc, rows, &j->err))) {
            lv_err_prefix(&j->err, "image %d", sl->next_image);
            break;
        }
        ewma(&s->cost.encode_row[kind], (lv_now_ms() - p0) / rows);
        *ran = true;
        spent = lv_now_ms() - t0;
    }
    /* a finished last image starts the prefill at once */
    if (!st && sl->phase == SL_ENCODE && sl->enc && llava_encoder_done(sl->enc))
        st = next_image(s, sl, &j->err);
    if (st) end_slot(s, sl, st);
    return lv_now_ms() - t0;
}

/* The slots in admission order, those in phase ph. */
static int oldest_first(const sched *s, slot_phase ph, slot **out) {
    int n = 0;
    for (int i = 0; i < s->parallel; i++) {
        slot *c = &s->slots[i];
        if (c->phase != ph) continue;
        int k = n++;
        while (k > 0 && out[k - 1]->order > c->order) {
            out[k] = out[k - 1];
            k--;
        }
        out[k] = c;
    }
    return n;
}

/*
 * One turn's work after admission: encoder pieces, then ONE forward holding
 * the last token of every decoding slot and prompt chunks of the joining
 * slots (oldest first). Then each decoding slot samples its next token,
 * and a slot whose prompt is complete samples its first and starts
 * decoding.
 */
static void run_turn(sched *s) {
    llava *m = s->m;
    slot **order = s->order;
    int n = 0, n_dec = 0;
    for (int i = 0; i < s->parallel; i++) {
        slot *sl = &s->slots[i];
        if (sl->phase != SL_DECODE) continue;
        s->in[n] = (llava_input){.seq = sl->s, .ids = &sl->g.next, .n = 1};
        s->who[n++] = i;
    }
    n_dec = n;
    /* the background budget: none when nothing decodes (background work runs
     * freely); else what keeps the turn near target, the quiet decode step
     * stretched by (max_itl_ratio - 1) * ITL_MARGIN: s->allow, corrected after
     * every turn that carried background work by how far it missed */
    double dec_ms = s->cost.decode[n_dec];
    bool bounded = n_dec > 0 && s->max_itl_ratio > 0;
    double target = dec_ms * (1 + (s->max_itl_ratio - 1) * ITL_MARGIN);
    if (bounded && s->allow <= 0) s->allow = target - dec_ms;
    /* the quiet step grows with the streams' contexts: a turn without
     * background work measures it again every QUIET_EVERY turns */
    bool stale = s->turns - s->cost.decode_turn[n_dec] >= QUIET_EVERY;
    double budget = !bounded ? -1 : dec_ms > 0 && !stale ? s->allow : 0, enc_ms = 0;
    bool encoded = false;
    int n_enc = oldest_first(s, SL_ENCODE, order);
    for (int k = 0; k < n_enc; k++) { /* no images (left), or all cached: the sequence at once */
        if (!order[k]->enc) take_cached_images(s, order[k]);
        if (!order[k]->enc && order[k]->next_image == order[k]->j->n_images) {
            lv_status st = next_image(s, order[k], &order[k]->j->err);
            if (st) end_slot(s, order[k], st);
        }
    }
    n_enc = oldest_first(s, SL_ENCODE, order);
    for (int k = 0; k < n_enc; k++) {
        if (bounded && budget <= 0) break;
        double spent = encode_slot(s, order[k], budget, bounded, &encoded);
        enc_ms += spent;
        if (bounded) budget -= spent;
    }
    int rows_budget = PREFILL_ROWS;
    if (bounded) {
        double rate = s->cost.prefill_row;
        rows_budget = budget <= 0 ? 0 : rate > 0 ? (int)(budget / rate) : FIRST_ROWS;
        /* a prompt must advance even when the budget is spent on encoding */
        if (rows_budget < 1) rows_budget = n_enc || dec_ms <= 0 || stale ? 0 : 1;
        if (rows_budget > PREFILL_ROWS) rows_budget = PREFILL_ROWS;
    }
    int n_pre = oldest_first(s, SL_PREFILL, order), pre_rows = 0;
    for (int k = 0; k < n_pre && rows_budget > 0; k++) {
        slot *sl = order[k];
        sched_job *j = sl->j;
        int chunk = j->n_ids - sl->prefilled < rows_budget ? j->n_ids - sl->prefilled : rows_budget;
        const int32_t *ids = j->ids + sl->prefilled;
        s->in[n] = (llava_input){
            .seq = sl->s, .ids = ids, .n = chunk, .features = sl->f, .feature_row = sl->feat_used};
        s->who[n++] = (int)(sl - s->slots);
        pre_rows += chunk;
        rows_budget -= chunk;
    }
    if (!n) return;

    lv_err err;
    double t0 = lv_now_ms();
    lv_status st = llava_forward(m, s->bt, s->in, n, s->logits, &err);
    double ms = lv_now_ms() - t0;
    s->turns++;
    if (!st && device_faulted(s)) return; /* its jobs are ended; the logits are garbage */
    LV_DEBUG("turn: %d decoding (quiet step %.2f ms), budget %.2f ms: encoder %.2f ms, "
             "%d prompt rows, forward %.2f ms",
             n_dec, dec_ms, budget + enc_ms, enc_ms, pre_rows, ms);
    if (st) {
    } else if (!encoded && pre_rows == 0) { /* a quiet turn: the baseline */
        /* a step slowed by work outside the scheduler (a request's image
         * decoded on its connection's thread) moves it up by half at most */
        double *q = &s->cost.decode[n_dec];
        ewma(q, *q > 0 && ms > 1.5 * *q ? 1.5 * *q : ms);
        s->cost.decode_turn[n_dec] = s->turns;
    } else {
        if (pre_rows && (n_dec == 0 || dec_ms > 0))
            ewma(&s->cost.prefill_row, (ms - (n_dec ? dec_ms : 0)) / pre_rows);
        if (bounded && dec_ms > 0) { /* feedback: what the turn took against the target */
            s->allow += 0.5 * (target - (enc_ms + ms));
            if (s->allow < 0.1 * dec_ms) s->allow = 0.1 * dec_ms;
            if (s->allow > target) s->allow = target;
        }
    }
    size_t vocab = (size_t)llava_vocab_size(m);
    for (int q = 0; q < n; q++) {
        slot *sl = &s->slots[s->who[q]];
        if (st) {
            sl->j->err = err;
            end_slot(s, sl, st);
            continue;
        }
        if (sl->phase == SL_PREFILL) {
            sl->g.timings.prefill_ms += ms;
            sl->feat_used += llava_count_image_ids(m, s->in[q].ids, s->in[q].n) * (sl->f != NULL);
            sl->prefilled += s->in[q].n;
            if (sl->prefilled < sl->j->n_ids) continue;
            sl->g.timings.n_prefill = sl->j->n_ids - sl->n_cached;
            sl->g.timings.n_cached = sl->n_cached;
            llava_features_free(sl->f); /* consumed */
            sl->f = NULL;
            sl->phase = SL_DECODE;
        } else {
            sl->g.timings.decode_ms += ms;
            sl->g.timings.n_decode++;
        }
        bool ctx_full = llava_seq_pos(sl->s) >= llava_seq_ctx(sl->s);
        lv_status st2 = gen_state_step(&sl->g, s->logits + q * vocab, ctx_full, &sl->j->err);
        if (st2)
            end_slot(s, sl, st2);
        else if (sl->g.done)
            complete_slot(s, sl);
    }
    update_stats(s);
}

/* ---- the engine turn ------------------------------------------------------------------- */

static int n_active(const sched *s) {
    int n = 0;
    for (int i = 0; i < s->parallel; i++) n += s->slots[i].phase != SL_FREE;
    return n;
}

/* Takes queued jobs into free slots, refuses them when stopping; under s->mu
 * on entry and on return. Returns the jobs taken (in s->admit). */
static int take_queued_locked(sched *s, int active) {
    int n_admit = 0;
    if (s->stopping) {
        /* queued jobs are refused; running ones finish unless cancel_running,
         * and so do the queued choices of a request that has begun (they go
         * back to the queue's end, in order) */
        for (int k = 0, n = s->n; k < n; k++) {
            sched_job *j = s->ring[s->head];
            s->head = (s->head + 1) % s->cap;
            s->n--;
            if (!s->cancel_running && j->prompt_of && j->prompt_of->started) {
                s->ring[(s->head + s->n) % s->cap] = j;
                s->n++;
                continue;
            }
            pthread_mutex_unlock(&s->mu);
            lv_fail(&j->err, LV_ERR_CANCELLED, "cancelled: the server is shutting down");
            j->shut_down = true; /* not the client's doing: it is still there to be told */
            LV_INFO("[%s] %s", j->rid, j->err.msg);
            finish(j, LV_ERR_CANCELLED);
            sched_job_release(j);
            pthread_mutex_lock(&s->mu);
        }
        if (s->cancel_running) {
            for (int i = 0; i < s->parallel; i++)
                if (s->slots[i].phase != SL_FREE) sched_job_cancel(s->slots[i].j);
            return 0;
        }
    }
    while (active + n_admit < s->parallel && s->n > 0) {
        s->admit[n_admit++] = s->ring[s->head];
        s->head = (s->head + 1) % s->cap;
        s->n--;
    }
    return n_admit;
}

/* ---- memory ------------------------------------------------------------------------------ */

/* Called by the governor (any thread) when a reservation waits for room. */
static void sched_wake(void *ud) {
    sched *s = ud;
    pthread_mutex_lock(&s->mu);
    s->wake = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* One cache entry less: a kept sequence first (the larger: a whole
 * conversation's KV), then an image's rows (the dearer to recompute). */
static bool evict_one(sched *s) {
    return pc_evict_lru(&s->cache, NULL) || ic_evict_lru(&s->images);
}

/* While the governor is above its evict line (or a reservation waits for
 * room), the caches give up entries, least recently used first, and the
 * freed heap goes back to the system; then whoever waits is told. */
static void relieve_pressure(sched *s) {
    if (!s->gov) return;
    int n = 0;
    while (mg_excess(s->gov) > 0 && evict_one(s)) {
        n++;
        update_stats(s);
        mg_level_now(s->gov, true); /* what the eviction freed, sampled again */
    }
    if (n) {
        lv_allocator_trim();
        mg_level_now(s->gov, true);
        LV_INFO("memory pressure: %d cache entries evicted (%d sequences and %d images kept)", n,
                s->cache.n, s->images.n);
    }
    mg_evicted(s->gov, n);
}

/* Freed heap back to the system every trim_every_ms while busy. */
static void trim_if_due(sched *s) {
    if (s->trim_every_ms <= 0) return;
    double now = lv_now_ms();
    if (now - s->t_trim < s->trim_every_ms) return;
    lv_allocator_trim();
    s->t_trim = now;
}

/* Everything after taking the queue: admission, cancellation, the work. */
static void turn(sched *s, int n_admit) {
    relieve_pressure(s);
    trim_if_due(s);
    s->busy_since_trim = true;
    for (int k = 0, i = 0; k < n_admit; k++) {
        while (s->slots[i].phase != SL_FREE) i++;
        start_slot(s, &s->slots[i], s->admit[k]);
    }
    release_waiting(s); /* choices whose prompt another has prefilled */
    /* cancelled jobs leave at once */
    for (int i = 0; i < s->parallel; i++) {
        slot *sl = &s->slots[i];
        if (sl->phase == SL_FREE || !is_cancelled(sl->j)) continue;
        lv_fail(&sl->j->err, LV_ERR_CANCELLED, "cancelled after %d tokens", sl->g.n_ids);
        end_slot(s, sl, LV_ERR_CANCELLED);
    }
    run_turn(s);
}

static void *engine_main(void *arg) {
    sched *s = arg;
    for (;;) {
        int active = n_active(s);
        pthread_mutex_lock(&s->mu);
        if (!s->stopping && s->n == 0 && active == 0 && !s->wake && s->busy_since_trim &&
            s->trim_every_ms > 0) { /* going idle: the freed heap goes back once */
            pthread_mutex_unlock(&s->mu);
            lv_allocator_trim();
            s->t_trim = lv_now_ms();
            s->busy_since_trim = false;
            pthread_mutex_lock(&s->mu);
        }
        while (!s->stopping && s->n == 0 && active == 0 && !s->wake)
            pthread_cond_wait(&s->cv, &s->mu);
        s->wake = false;
        int n_admit = take_queued_locked(s, active);
        bool quit = s->stopping && active == 0 && n_admit == 0 && s->n == 0;
        pthread_mutex_unlock(&s->mu);
        if (quit) break;
        turn(s, n_admit);
    }
    return NULL;
}

bool sched_step(sched *s) {
    int active = n_active(s);
    pthread_mutex_lock(&s->mu);
    int n_admit = take_queued_locked(s, active);
    bool queued = s->n > 0;
    pthread_mutex_unlock(&s->mu);
    if (active + n_admit == 0) return queued;
    turn(s, n_admit);
    pthread_mutex_lock(&s->mu);
    queued = s->n > 0;
    pthread_mutex_unlock(&s->mu);
    return queued || n_active(s) > 0;
}

/* ---- the queue ------------------------------------------------------------------------- */

/* The longest sequence: cfg->ctx_size, or the model's context within KV_BUDGET. */
static lv_status choose_ctx(const llava *m, const sched_config *cfg, int *ctx, lv_err *err) {
    int max_ctx = llava_max_ctx(m);
    if (cfg->ctx_size > 0) {
        if (cfg->ctx_size > max_ctx)
            return lv_fail(err, LV_ERR_ARG, "ctx_size %d exceeds the model's context (%d)",
                           cfg->ctx_size, max_ctx);
        *ctx = cfg->ctx_size;
        return LV_OK;
    }
    size_t per_seq = KV_BUDGET / (size_t)cfg->parallel / llava_kv_bytes_per_pos(m);
    *ctx = per_seq < (size_t)max_ctx ? (int)per_seq : max_ctx;
    if (*ctx < MIN_CTX) *ctx = max_ctx < MIN_CTX ? max_ctx : MIN_CTX;
    return LV_OK;
}

static void free_engine(sched *s) {
    llava_batch_free(s->bt);
    free(s->slots);
    free(s->logits);
    free(s->in);
    free(s->who);
    free(s->admit);
    free(s->order);
    free(s->ring);
    free(s->cost.decode);
    free(s->cost.decode_turn);
    pc_deinit(&s->cache);
    ic_deinit(&s->images);
    mg_set(s->gov, MG_KV_CACHED, 0);
    mg_set(s->gov, MG_IMAGE_CACHE, 0);
}

lv_status sched_new(llava *m, const sched_config *cfg, sched **out, lv_err *err) {
    *out = NULL;
    if (cfg->queue_size < 1 || cfg->parallel < 1 || cfg->ctx_size < 0 ||
        (cfg->max_itl_ratio > 0 && cfg->max_itl_ratio < 1))
        return lv_fail(err, LV_ERR_ARG,
                       "scheduler: queue_size (%d) and parallel (%d) must be >= 1, ctx_size (%d) "
                       ">= 0, max_itl_ratio (%g) >= 1 (or <= 0)",
                       cfg->queue_size, cfg->parallel, cfg->ctx_size, cfg->max_itl_ratio);
    if (!llava_is_loaded(m))
        return lv_fail(err, LV_ERR_ARG, "scheduler: the model's weights are not loaded");
    sched *s = calloc(1, sizeof *s);
    if (!s) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    lv_status st = choose_ctx(m, cfg, &s->ctx, err);
    if (st) {
        free(s);
        return st;
    }
    int np = cfg->parallel;
    s->m = m;
    s->cap = cfg->queue_size;
    s->parallel = np;
    s->max_itl_ratio = cfg->max_itl_ratio != 0 ? cfg->max_itl_ratio : 2.0;
    s->kv_per_pos = llava_kv_bytes_per_pos(m);
    s->ring = calloc((size_t)s->cap, sizeof *s->ring);
    s->slots = calloc((size_t)np, sizeof *s->slots);
    s->logits = malloc((size_t)np * llava_vocab_size(m) * sizeof *s->logits);
    s->in = calloc((size_t)np, sizeof *s->in);
    s->who = calloc((size_t)np, sizeof *s->who);
    s->admit = calloc((size_t)np, sizeof *s->admit);
    s->order = calloc((size_t)np, sizeof *s->order);
    s->cost.decode = calloc((size_t)np + 1, sizeof *s->cost.decode);
    s->cost.decode_turn = calloc((size_t)np + 1, sizeof *s->cost.decode_turn);
    if (!s->ring || !s->slots || !s->logits || !s->in || !s->who || !s->admit || !s->order ||
        !s->cost.decode || !s->cost.decode_turn) {
        free_engine(s);
        free(s);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory for %d parallel sequences", np);
    }
    int cache_slots = cfg->cache_slots == 0 ? np : cfg->cache_slots;
    if (cache_slots > 0 && (st = pc_init(&s->cache, cache_slots, llava_image_token_id(m), err))) {
        free_engine(s);
        free(s);
        return st;
    }
    int64_t image_bytes =
        cfg->image_cache_bytes == 0 ? SCHED_IMAGE_CACHE_DEFAULT : cfg->image_cache_bytes;
    ic_init(&s->images, image_bytes > 0 ? (size_t)image_bytes : 0);
    if ((st = llava_batch_new(m, np + PREFILL_ROWS, np, &s->bt, err))) {
        free_engine(s);
        free(s);
        return st;
    }
    s->prefix_budget = cfg->prefix_cache_bytes > 0 ? (size_t)cfg->prefix_cache_bytes : 0;
    s->trim_every_ms = cfg->trim_interval_s < 0    ? 0
                       : cfg->trim_interval_s == 0 ? TRIM_EVERY_S * 1e3
                                                   : cfg->trim_interval_s * 1e3;
    s->t_trim = lv_now_ms();
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->gov = cfg->governor;
    mg_set_waker(s->gov, sched_wake, s);
    update_stats(s); /* the figures of the empty caches (their budgets) */
    LV_DEBUG("scheduler: %d parallel sequences of up to %d positions (KV %.1f MB each at most), "
             "queue %d",
             np, s->ctx, (double)s->ctx * s->kv_per_pos / 1e6, s->cap);
    *out = s;
    return LV_OK;
}

lv_status sched_start(sched *s, lv_err *err) {
    if (s->started) return LV_OK;
    if (pthread_create(&s->thread, NULL, engine_main, s))
        return lv_fail(err, LV_ERR_NOMEM, "cannot start the engine thread");
    s->started = true;
    LV_INFO("scheduler: %d parallel sequences of up to %d positions (KV %.1f MB each at most), "
            "queue %d",
            s->parallel, s->ctx, (double)s->ctx * s->kv_per_pos / 1e6, s->cap);
    return LV_OK;
}

lv_status sched_submit(sched *s, sched_job *j, lv_err *err) {
    lv_status st = LV_OK;
    pthread_mutex_lock(&s->mu);
    if (s->stopping) {
        st = lv_fail(err, LV_ERR_BUSY, "the server is shutting down");
    } else if (s->n == s->cap) {
        st = lv_fail(err, LV_ERR_BUSY, "the queue is full (%d requests waiting); retry later",
                     s->cap);
    } else {
        atomic_fetch_add(&j->refs, 1);
        j->t_submit_ms = lv_now_ms();
        s->ring[(s->head + s->n) % s->cap] = j;
        s->n++;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return st;
}

int64_t sched_job_bytes(const sched *s, const sched_job *j) {
    int64_t bytes = (int64_t)j->n_ids * (int64_t)sizeof *j->ids, encoder = 0, rows = 0;
    for (int i = 0; i < j->n_images && j->images; i++) {
        const img_tensor *t = &j->images[i];
        bytes += (int64_t)t->n_tiles * 3 * t->tile_h * t->tile_w * (int64_t)sizeof(float);
        int64_t e = (int64_t)llava_encoder_bytes(s->m, t);
        if (e > encoder) encoder = e;
        int n = llava_tensor_token_count(s->m, t);
        if (n > 0) rows += n;
    }
    return bytes + encoder + rows * llava_text_dim(s->m) * (int64_t)sizeof(float) +
           (int64_t)job_ctx(s, j) * (int64_t)s->kv_per_pos;
}

void sched_get_stats(sched *s, sched_stats *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&s->mu);
    out->running = s->n_running;
    out->waiting = s->n;
    out->queue_capacity = s->cap;
    out->parallel = s->parallel;
    out->kv_used = s->kv_used;
    out->kv_capacity = (int64_t)s->parallel * s->ctx;
    out->kv_bytes_used = (size_t)s->kv_used * s->kv_per_pos;
    out->kv_bytes_total = (size_t)out->kv_capacity * s->kv_per_pos;
    out->kv_bytes_allocated = s->kv_bytes_alloc;
    out->kv_bytes_retained = s->kv_bytes_retained;
    out->ctx_size = s->ctx;
    out->cache_sequences = s->n_retained;
    out->cache_hits = s->cache_hits;
    out->cache_tokens = s->cache_tokens;
    out->image_cache_hits = s->image_figures.hits;
    out->image_cache_misses = s->image_figures.misses;
    out->image_cache_evictions = s->image_figures.evictions;
    out->image_cache_images = s->image_figures.n;
    out->image_cache_bytes = s->image_figures.bytes;
    out->image_cache_budget = s->image_figures.budget;
    out->cache_evictions = s->cache_evictions;
    out->prompt_shares = s->prompt_shares;
    pthread_mutex_unlock(&s->mu);
}

void sched_stop(sched *s, bool cancel_running) {
    if (s->joined) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    s->cancel_running = cancel_running;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->started)
        pthread_join(s->thread, NULL);
    else
        while (sched_step(s)) {
        } /* the caller's thread finishes (or cancels) the work */
    s->joined = true;
}

void sched_free(sched *s) {
    if (!s) return;
    sched_stop(s, true);
    mg_set_waker(s->gov, NULL, NULL);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free_engine(s);
    free(s);
}
