/*
 * worker.c - the bounded job queue and the engine thread that runs the
 * admitted jobs with continuous batching (worker.h).
 *
 * The queue is a ring of job pointers under one mutex. The engine thread
 * keeps up to `parallel` jobs in slots, each with its own llm_seq (KV
 * cache) and gen_state (sampler, stop strings, streamed text). A slot goes
 * ENCODE (its images, one per turn) → PREFILL (its prompt, in chunks) →
 * DECODE (a token per turn). Every turn of the loop
 *   1. admits queued jobs into free slots (new requests join between
 *      steps);
 *   2. drops the jobs that were cancelled (wk_job_cancel, deadline,
 *      shutdown): their sequence is freed at once;
 *   3. encodes one image of the oldest job that has images left (the
 *      vision tower runs one image at a time, between steps);
 *   4. runs ONE batched forward (llm_forward_batch_rows): the last token of
 *      every decoding job, plus prompt chunks of the joining jobs (oldest
 *      first, WK_PREFILL_ROWS rows in all; image features in place of
 *      their <image> ids), so a long prompt delays the running streams by
 *      one chunk per step and short prompts join at once; then every
 *      decoding job samples (gen_state_step), its text and tokens go into
 *      the job, a job whose prompt is complete samples its first token, and
 *      jobs that stop are finished and their sequence freed.
 * Jobs are independent: each row of the batch gives bit-identical results
 * whatever else runs beside it (the CPU matmul computes a row the same for
 * any n, n == 1 included: backend/cpu/matmul.c), so a greedy request gives
 * the same answer alone or among others, and a lone row runs as one row
 * (no padding, no GEMM for one row).
 *
 * KV memory: a sequence is allocated when its prefill starts, sized to
 * what the job can use (prompt + max_tokens) but at most ctx positions,
 * where ctx is wk_config.ctx_size or, when that is 0, the model's context
 * capped so that parallel sequences of ctx positions fit in
 * WK_KV_BUDGET bytes (8 GiB: 7B Mistral, 256 KiB a position, gets 8192
 * positions a sequence at parallel 4 and 2048 at parallel 16). The
 * sequence is freed when its job ends, so nothing is held while idle.
 */
#include "server/worker.h"

#include "base/log.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WK_KV_BUDGET    ((size_t)8 << 30) /* bytes of KV cache, all sequences, default ctx */
#define WK_MIN_CTX      512               /* the default ctx is never capped below this */
#define WK_PREFILL_ROWS LLAVA_BATCH       /* prompt rows per batched forward at most */

typedef enum { SL_FREE = 0, SL_ENCODE, SL_PREFILL, SL_DECODE } slot_phase;

/* One admitted job and its engine state. */
typedef struct {
    slot_phase phase;
    wk_job *j;
    long order;       /* admission order: the oldest joining slot is served first */
    gen_callbacks cb; /* the job's callbacks (ud = j) */
    gen_state g;
    llm_seq s;
    float *rows; /* the images' feature rows, concatenated (heap) */
    int n_rows;
    int next_image;  /* images encoded so far */
    int n_image_ids; /* <image> ids in the prompt */
    int prefilled;   /* prompt ids prefilled so far */
    int rows_used;   /* image rows consumed by the prefill so far */
} slot;

struct worker {
    llava *m; /* borrowed */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    wk_job **ring; /* (cap) waiting jobs, FIFO from head */
    int cap, head, n;
    bool stopping;
    bool joined;
    bool cancel_running;

    /* engine thread only */
    int parallel;
    int ctx;        /* KV positions per sequence at most */
    slot *slots;    /* (parallel) */
    long admitted;  /* jobs admitted so far */
    llm_batch bt;   /* scratch of the batched decode */
    float *logits;  /* (parallel, vocab) host */
    llm_seq **seqs; /* (parallel) the step's sequences */
    int *n_tok;     /* (parallel) rows of each sequence in the step */
    int32_t *ids;   /* (parallel) the decoding sequences' tokens */
    int *who;       /* (parallel) slot of each batch row */
    wk_job **admit; /* (parallel) jobs taken from the queue this turn */

    /* figures, under mu */
    int n_running;
    int64_t kv_used;
    size_t kv_bytes_alloc;
    size_t kv_per_pos;
};

static double mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- jobs ------------------------------------------------------------------------------ */

wk_job *wk_job_new(void) {
    wk_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    atomic_init(&j->cancel, false);
    atomic_init(&j->refs, 1);
    return j;
}

void wk_job_release(wk_job *j) {
    if (!j || atomic_fetch_sub(&j->refs, 1) != 1) return;
    free(j->ids);
    for (int i = 0; i < j->n_images; i++) img_tensor_free(&j->images[i]);
    free(j->images);
    if (j->keep_free) j->keep_free(j->keep);
    lv_buf_free(&j->pending);
    free(j->tokens);
    gen_result_free(&j->result);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

void wk_job_cancel(wk_job *j) {
    atomic_store(&j->cancel, true);
}

void wk_job_wait(wk_job *j) {
    pthread_mutex_lock(&j->mu);
    while (!j->done) pthread_cond_wait(&j->cv, &j->mu);
    pthread_mutex_unlock(&j->mu);
}

bool wk_job_take(wk_job *j, lv_buf *out, int wait_ms) {
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

static void finish(wk_job *j, lv_status st) {
    pthread_mutex_lock(&j->mu);
    j->t_done_ms = mono_ms();
    j->st = st;
    j->done = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

/* ---- the job's callbacks ------------------------------------------------------------ */

static void on_text(void *ud, const char *text, size_t len) {
    wk_job *j = ud;
    pthread_mutex_lock(&j->mu);
    lv_buf_append(&j->pending, text, len); /* out of memory: the delta is lost, not the job */
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static void on_token(void *ud, const gen_token *t) {
    wk_job *j = ud;
    pthread_mutex_lock(&j->mu);
    if (!j->t_first_ms) j->t_first_ms = mono_ms();
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

static bool is_cancelled(void *ud) {
    wk_job *j = ud;
    if (atomic_load(&j->cancel)) return true;
    if (j->deadline_ms > 0 && mono_ms() > j->deadline_ms) {
        j->timed_out = true; /* read by others only after done */
        return true;
    }
    return false;
}

/* ---- slots ------------------------------------------------------------------------------ */

/* Recomputes the figures from the slots (engine thread, under w->mu). */
static void update_stats_locked(worker *w) {
    int running = 0;
    int64_t used = 0;
    size_t alloc = 0;
    for (int i = 0; i < w->parallel; i++) {
        slot *sl = &w->slots[i];
        if (sl->phase == SL_FREE) continue;
        running++;
        if (sl->s.m) {
            used += sl->s.pos;
            alloc += (size_t)sl->s.ctx * w->kv_per_pos;
        }
    }
    w->n_running = running;
    w->kv_used = used;
    w->kv_bytes_alloc = alloc;
}

/* Ends the slot's job with st (its result already in place when LV_OK):
 * frees the sequence and the state first, so that the figures show the
 * memory back when the job is seen done. */
static void end_slot(worker *w, slot *sl, lv_status st) {
    wk_job *j = sl->j;
    if (st == LV_OK)
        LV_INFO("[%s] generated %d tokens in %.0f ms (%s)", j->rid, j->result.n_ids,
                mono_ms() - j->t_submit_ms, j->result.finish_reason);
    else
        LV_INFO("[%s] %s: %s%s", j->rid, lv_status_str(st), j->err.msg,
                j->timed_out ? " (timeout)" : "");
    gen_state_deinit(&sl->g);
    llm_seq_deinit(&sl->s);
    free(sl->rows);
    memset(sl, 0, sizeof *sl);
    pthread_mutex_lock(&w->mu);
    update_stats_locked(w);
    pthread_mutex_unlock(&w->mu);
    finish(j, st);
    wk_job_release(j);
}

/* The job's generation is over: its result, then the end. */
static void complete_slot(worker *w, slot *sl) {
    wk_job *j = sl->j;
    lv_status st = gen_state_finish(&sl->g, &j->result, &j->err);
    end_slot(w, sl, st);
}

/* Admits j into the free slot sl: checks what can be checked now. */
static void start_slot(worker *w, slot *sl, wk_job *j) {
    memset(sl, 0, sizeof *sl);
    sl->j = j;
    sl->order = w->admitted++;
    sl->phase = SL_ENCODE;
    sl->cb = (gen_callbacks){
        .on_token = on_token, .on_text = on_text, .cancelled = is_cancelled, .ud = j};
    int vocab = w->m->text.vocab_size, image_id = w->m->md.config.image_token_id;
    lv_status st = LV_OK;
    if (is_cancelled(j))
        st = lv_fail(&j->err, LV_ERR_CANCELLED, "cancelled while queued");
    else if (j->n_ids < 1 || !j->ids)
        st = lv_fail(&j->err, LV_ERR_ARG, "empty prompt");
    else if (j->n_images > 0 && !j->images)
        st = lv_fail(&j->err, LV_ERR_ARG, "%d images announced but none given", j->n_images);
    else if (j->n_ids > w->ctx)
        st = lv_fail(&j->err, LV_ERR_ARG,
                     "the prompt is %d tokens long; the context holds %d tokens", j->n_ids, w->ctx);
    for (int i = 0; !st && i < j->n_ids; i++) {
        /* image_id == vocab: the virtual id of a GGUF without <image>, only with images */
        bool virt = j->ids[i] == image_id && j->n_images > 0;
        if (j->ids[i] < 0 || (j->ids[i] >= vocab && !virt))
            st = lv_fail(&j->err, LV_ERR_ARG, "token id %d at %d is outside the vocabulary (%d)",
                         j->ids[i], i, vocab);
        sl->n_image_ids += j->ids[i] == image_id;
    }
    j->params.logprobs = j->record_tokens;
    if (!st) st = gen_state_init(&sl->g, w->m, j->ids, j->n_ids, &j->params, &sl->cb, &j->err);
    if (st) end_slot(w, sl, st);
}

/* Encodes the slot's next image, appending its rows; after the last one
 * the slot gets its sequence and waits for prefill. */
static lv_status encode_next_image(worker *w, slot *sl, lv_err *err) {
    wk_job *j = sl->j;
    lv_status st;
    if (sl->next_image < j->n_images) {
        llava_image im;
        if ((st = llava_encode_image(w->m, &j->images[sl->next_image], false, &im, err))) {
            lv_err_prefix(err, "image %d", sl->next_image + 1);
            return st;
        }
        size_t dim = (size_t)w->m->text.dim;
        float *grown = realloc(sl->rows, ((size_t)sl->n_rows + im.n_tokens) * dim * sizeof *grown);
        if (!grown) {
            llava_image_free(&im);
            return lv_fail(err, LV_ERR_NOMEM, "out of memory for image features");
        }
        sl->rows = grown;
        memcpy(sl->rows + (size_t)sl->n_rows * dim, im.rows,
               (size_t)im.n_tokens * dim * sizeof *grown);
        sl->n_rows += im.n_tokens;
        sl->g.timings.vision_ms += im.ms;
        sl->g.timings.n_tiles += im.n_tiles;
        sl->g.timings.n_images++;
        llava_image_free(&im);
        sl->next_image++;
    }
    if (sl->next_image < j->n_images) return LV_OK;
    /* masked_scatter: every <image> id takes one feature row (with images) */
    if (j->n_images > 0 && sl->n_image_ids != sl->n_rows)
        return lv_fail(err, LV_ERR_ARG,
                       "the prompt has %d image tokens but the images give %d features",
                       sl->n_image_ids, sl->n_rows);
    long want = (long)j->n_ids + j->params.max_tokens;
    int ctx = want < w->ctx ? (int)want : w->ctx;
    if ((st = llm_seq_init(&w->m->text, ctx, 1, &sl->s, err))) return st;
    llm_seq_drop_scratch(&sl->s); /* only the batch runs it */
    sl->phase = SL_PREFILL;
    pthread_mutex_lock(&w->mu);
    update_stats_locked(w);
    pthread_mutex_unlock(&w->mu);
    return LV_OK;
}

/* One image for the oldest slot that still has images to encode (the
 * vision tower is not batched); slots without images left get their
 * sequence at once. */
static void encode_step(worker *w) {
    bool encoded = false;
    for (;;) {
        slot *sl = NULL;
        for (int i = 0; i < w->parallel; i++) {
            slot *c = &w->slots[i];
            bool cheap = c->next_image == (c->j ? c->j->n_images : 0);
            if (c->phase == SL_ENCODE && (cheap || !encoded) && (!sl || c->order < sl->order))
                sl = c;
        }
        if (!sl) return;
        encoded |= sl->next_image < sl->j->n_images;
        lv_status st = encode_next_image(w, sl, &sl->j->err);
        if (st) end_slot(w, sl, st);
    }
}

/* Writes image rows over the image ids among ids[0..n) (input rows row0 ..),
 * one upload per run of consecutive image ids. */
static void scatter_rows(worker *w, slot *sl, const int32_t *ids, int n, int row0) {
    be *b = &w->m->backend;
    int dim = w->m->text.dim, image_id = w->m->md.config.image_token_id;
    float *x = llm_batch_input(&w->bt) + (size_t)row0 * dim;
    for (int i = 0; i < n;) {
        if (ids[i] != image_id) {
            i++;
            continue;
        }
        int k = i;
        while (k < n && ids[k] == image_id) k++;
        b->ops->upload(b, x + (size_t)i * dim, sl->rows + (size_t)sl->rows_used * dim,
                       (size_t)(k - i) * dim * sizeof *x);
        sl->rows_used += k - i;
        i = k;
    }
}

/* embed_tokens of ids[0..n) into input rows row0 ..; a virtual image id
 * (vocab_size, io/gguf_model.h) has no row: only the text runs around it
 * are embedded, scatter_rows fills the rest. */
static void embed_prompt(worker *w, const int32_t *ids, int n, int row0) {
    const llm *t = &w->m->text;
    int image_id = w->m->md.config.image_token_id;
    for (int i = 0; i < n;) {
        int k = i;
        while (k < n && (ids[k] != image_id || image_id < t->vocab_size)) k++;
        if (k > i) llm_batch_embed(t, &w->bt, row0 + i, ids + i, k - i);
        i = k + 1;
    }
}

/*
 * One batched forward: the last token of every decoding slot, then prompt
 * chunks of the joining slots (oldest first) up to WK_PREFILL_ROWS rows.
 * Then each decoding slot samples its next token, and a slot whose prompt
 * is complete samples its first and starts decoding.
 */
static void batch_step(worker *w) {
    llava *m = w->m;
    int n = 0, rows = 0, n_dec = 0;
    for (int i = 0; i < w->parallel; i++) {
        slot *sl = &w->slots[i];
        if (sl->phase != SL_DECODE) continue;
        w->seqs[n] = &sl->s;
        w->n_tok[n] = 1;
        w->ids[n] = sl->g.next;
        w->who[n++] = i;
        rows++;
    }
    n_dec = n;
    if (n_dec) llm_batch_embed(&m->text, &w->bt, 0, w->ids, n_dec);
    for (int budget = WK_PREFILL_ROWS; budget > 0;) {
        slot *sl = NULL;
        int at = -1;
        for (int i = 0; i < w->parallel; i++) {
            slot *c = &w->slots[i];
            bool taken = false;
            for (int q = n_dec; q < n; q++) taken |= w->who[q] == i;
            if (c->phase == SL_PREFILL && !taken && (!sl || c->order < sl->order)) {
                sl = c;
                at = i;
            }
        }
        if (!sl) break;
        wk_job *j = sl->j;
        int chunk = j->n_ids - sl->prefilled < budget ? j->n_ids - sl->prefilled : budget;
        const int32_t *ids = j->ids + sl->prefilled;
        embed_prompt(w, ids, chunk, rows);
        /* inputs_embeds[ids == image] = image features */
        if (j->n_images > 0) scatter_rows(w, sl, ids, chunk, rows);
        w->seqs[n] = &sl->s;
        w->n_tok[n] = chunk;
        w->who[n++] = at;
        rows += chunk;
        budget -= chunk;
    }
    if (!n) return;

    lv_err err;
    double t0 = mono_ms();
    lv_status st = llm_forward_batch_rows(&m->text, &w->bt, w->seqs, w->n_tok, n, w->logits, &err);
    double ms = mono_ms() - t0;
    size_t vocab = (size_t)m->text.vocab_size;
    for (int q = 0; q < n; q++) {
        slot *sl = &w->slots[w->who[q]];
        if (st) {
            sl->j->err = err;
            end_slot(w, sl, st);
            continue;
        }
        if (sl->phase == SL_PREFILL) {
            sl->g.timings.prefill_ms += ms;
            sl->prefilled += w->n_tok[q];
            if (sl->prefilled < sl->j->n_ids) continue;
            sl->g.timings.n_prefill = sl->j->n_ids;
            free(sl->rows);
            sl->rows = NULL;
            sl->phase = SL_DECODE;
        } else {
            sl->g.timings.decode_ms += ms;
            sl->g.timings.n_decode++;
        }
        lv_status st2 =
            gen_state_step(&sl->g, w->logits + q * vocab, sl->s.pos >= sl->s.ctx, &sl->j->err);
        if (st2)
            end_slot(w, sl, st2);
        else if (sl->g.done)
            complete_slot(w, sl);
    }
    pthread_mutex_lock(&w->mu);
    update_stats_locked(w);
    pthread_mutex_unlock(&w->mu);
}

/* ---- the engine thread ------------------------------------------------------------------ */

static int n_active(const worker *w) {
    int n = 0;
    for (int i = 0; i < w->parallel; i++) n += w->slots[i].phase != SL_FREE;
    return n;
}

static void *engine_main(void *arg) {
    worker *w = arg;
    wk_job **admit = w->admit;
    for (;;) {
        int active = n_active(w), n_admit = 0;
        pthread_mutex_lock(&w->mu);
        while (!w->stopping && w->n == 0 && active == 0) pthread_cond_wait(&w->cv, &w->mu);
        if (w->stopping) {
            /* queued jobs are refused; running ones finish unless cancel_running */
            while (w->n > 0) {
                wk_job *j = w->ring[w->head];
                w->head = (w->head + 1) % w->cap;
                w->n--;
                pthread_mutex_unlock(&w->mu);
                lv_fail(&j->err, LV_ERR_CANCELLED, "cancelled: the server is shutting down");
                LV_INFO("[%s] %s", j->rid, j->err.msg);
                finish(j, LV_ERR_CANCELLED);
                wk_job_release(j);
                pthread_mutex_lock(&w->mu);
            }
            if (w->cancel_running)
                for (int i = 0; i < w->parallel; i++)
                    if (w->slots[i].phase != SL_FREE) wk_job_cancel(w->slots[i].j);
            if (active == 0) {
                pthread_mutex_unlock(&w->mu);
                break;
            }
        }
        while (active + n_admit < w->parallel && w->n > 0) {
            admit[n_admit++] = w->ring[w->head];
            w->head = (w->head + 1) % w->cap;
            w->n--;
        }
        pthread_mutex_unlock(&w->mu);

        for (int k = 0, i = 0; k < n_admit; k++) {
            while (w->slots[i].phase != SL_FREE) i++;
            start_slot(w, &w->slots[i], admit[k]);
        }
        /* cancelled jobs leave at once */
        for (int i = 0; i < w->parallel; i++) {
            slot *sl = &w->slots[i];
            if (sl->phase == SL_FREE || !is_cancelled(sl->j)) continue;
            lv_fail(&sl->j->err, LV_ERR_CANCELLED, "cancelled after %d tokens", sl->g.n_ids);
            end_slot(w, sl, LV_ERR_CANCELLED);
        }
        encode_step(w);
        batch_step(w);
    }
    return NULL;
}

/* ---- the queue ------------------------------------------------------------------------- */

/* The longest sequence: cfg->ctx_size, or the model's context within WK_KV_BUDGET. */
static lv_status choose_ctx(const llava *m, const wk_config *cfg, int *ctx, lv_err *err) {
    int max_ctx = m->text.max_ctx;
    if (cfg->ctx_size > 0) {
        if (cfg->ctx_size > max_ctx)
            return lv_fail(err, LV_ERR_ARG, "ctx_size %d exceeds the model's context (%d)",
                           cfg->ctx_size, max_ctx);
        *ctx = cfg->ctx_size;
        return LV_OK;
    }
    size_t per_seq = WK_KV_BUDGET / (size_t)cfg->parallel / llm_kv_bytes_per_pos(&m->text);
    *ctx = per_seq < (size_t)max_ctx ? (int)per_seq : max_ctx;
    if (*ctx < WK_MIN_CTX) *ctx = max_ctx < WK_MIN_CTX ? max_ctx : WK_MIN_CTX;
    return LV_OK;
}

static void free_engine(worker *w) {
    llm_batch_deinit(&w->bt);
    free(w->slots);
    free(w->logits);
    free(w->seqs);
    free(w->n_tok);
    free(w->ids);
    free(w->who);
    free(w->admit);
    free(w->ring);
}

lv_status worker_new(llava *m, const wk_config *cfg, worker **out, lv_err *err) {
    *out = NULL;
    if (cfg->queue_size < 1 || cfg->parallel < 1 || cfg->ctx_size < 0)
        return lv_fail(err, LV_ERR_ARG,
                       "worker: queue_size (%d) and parallel (%d) must be >= 1, ctx_size (%d) "
                       ">= 0",
                       cfg->queue_size, cfg->parallel, cfg->ctx_size);
    if (!m->loaded) return lv_fail(err, LV_ERR_ARG, "worker: the model's weights are not loaded");
    worker *w = calloc(1, sizeof *w);
    if (!w) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    lv_status st = choose_ctx(m, cfg, &w->ctx, err);
    if (st) {
        free(w);
        return st;
    }
    int np = cfg->parallel;
    w->m = m;
    w->cap = cfg->queue_size;
    w->parallel = np;
    w->kv_per_pos = llm_kv_bytes_per_pos(&m->text);
    w->ring = calloc((size_t)w->cap, sizeof *w->ring);
    w->slots = calloc((size_t)np, sizeof *w->slots);
    w->logits = malloc((size_t)np * m->text.vocab_size * sizeof *w->logits);
    w->seqs = calloc((size_t)np, sizeof *w->seqs);
    w->n_tok = calloc((size_t)np, sizeof *w->n_tok);
    w->ids = calloc((size_t)np, sizeof *w->ids);
    w->who = calloc((size_t)np, sizeof *w->who);
    w->admit = calloc((size_t)np, sizeof *w->admit);
    if (!w->ring || !w->slots || !w->logits || !w->seqs || !w->n_tok || !w->ids || !w->who ||
        !w->admit) {
        free_engine(w);
        free(w);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory for %d parallel sequences", np);
    }
    if ((st = llm_batch_init(&m->text, np + WK_PREFILL_ROWS, np, &w->bt, err))) {
        free_engine(w);
        free(w);
        return st;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, engine_main, w)) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free_engine(w);
        free(w);
        return lv_fail(err, LV_ERR_NOMEM, "cannot start the engine thread");
    }
    LV_INFO("worker: %d parallel sequences of up to %d positions (KV %.1f MB each at most), "
            "queue %d",
            np, w->ctx, (double)w->ctx * w->kv_per_pos / 1e6, w->cap);
    *out = w;
    return LV_OK;
}

lv_status worker_submit(worker *w, wk_job *j, lv_err *err) {
    lv_status st = LV_OK;
    pthread_mutex_lock(&w->mu);
    if (w->stopping) {
        st = lv_fail(err, LV_ERR_BUSY, "the server is shutting down");
    } else if (w->n == w->cap) {
        st = lv_fail(err, LV_ERR_BUSY, "the queue is full (%d requests waiting); retry later",
                     w->cap);
    } else {
        atomic_fetch_add(&j->refs, 1);
        j->t_submit_ms = mono_ms();
        w->ring[(w->head + w->n) % w->cap] = j;
        w->n++;
        pthread_cond_signal(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return st;
}

void worker_get_stats(worker *w, wk_stats *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&w->mu);
    out->running = w->n_running;
    out->waiting = w->n;
    out->queue_capacity = w->cap;
    out->parallel = w->parallel;
    out->kv_used = w->kv_used;
    out->kv_capacity = (int64_t)w->parallel * w->ctx;
    out->kv_bytes_used = (size_t)w->kv_used * w->kv_per_pos;
    out->kv_bytes_total = (size_t)out->kv_capacity * w->kv_per_pos;
    out->kv_bytes_allocated = w->kv_bytes_alloc;
    out->ctx_size = w->ctx;
    pthread_mutex_unlock(&w->mu);
}

void worker_stop(worker *w, bool cancel_running) {
    if (w->joined) return;
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    w->cancel_running = cancel_running;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    w->joined = true;
}

void worker_free(worker *w) {
    if (!w) return;
    worker_stop(w, true);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free_engine(w);
    free(w);
}
