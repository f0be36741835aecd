/*
 * scheduler.h - every request goes through here: a bounded queue of jobs
 * feeding an engine that runs up to `parallel` of them at once with
 * continuous batching (scheduler.c). A new job joins the running batch
 * between decode steps; each step is one forward over every running job's
 * next token plus prompt rows of joining jobs; a cancelled job frees its
 * sequence at once, one that ends well leaves it to the prefix cache, so
 * that a later prompt starting the same way (a conversation's history, a
 * shared system prompt) prefills only the rest; an image's feature rows are
 * kept too, so the same picture in another prompt skips the vision tower.
 * Image encoding and long prompts are cut into pieces run between decode
 * steps, within a time budget that
 * bounds the running streams' inter-token latency (sched_config
 * max_itl_ratio). A job's output does not depend on what runs beside it.
 *
 * Two ways to drive it: sched_start runs the engine on its own thread
 * (llava-server, llava-eval --parallel, llava-bench serve); without it the
 * caller runs turns with sched_step (gen_run: llava-cli, llava-eval). Both
 * run the same turn.
 *
 * The boundary is the job: a caller fills one (prompt ids, image tensors,
 * gen_params), submits it, then waits for it to finish or reads its events
 * as they come: the text (sched_job_take), and with record_tokens each
 * token's id and logprobs.
 *
 * A job is shared by its caller and the engine, so it is reference
 * counted: sched_job_new gives the caller one reference, sched_submit takes
 * another, and whoever drops the last frees it. Cancellation (client gone,
 * timeout, shutdown) is a flag the engine polls every turn; the job then
 * ends with LV_ERR_CANCELLED.
 */
#ifndef LV_ENGINE_SCHEDULER_H
#define LV_ENGINE_SCHEDULER_H

#include "base/buf.h"
#include "base/common.h"
#include "engine/generate.h"
#include "engine/governor.h"
#include "image/image.h"
#include "model/llava.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

typedef struct sched_job {
    /* Input: set before sched_submit, then read-only. */
    int32_t *ids; /* (n_ids) prompt ids, <image> ids expanded */
    int n_ids;
    img_tensor *images; /* (n_images) in prompt order */
    int n_images;
    uint64_t *image_keys; /* (n_images) pc_image_key of each image when the caller knows it
                             (freed with the job unless borrowed), or NULL: computed */
    bool borrowed;        /* ids and images belong to the caller (outlive the job); else the job
                             frees them (free, img_tensor_free) */
    gen_params params;    /* may borrow from keep */
    double deadline_ms;   /* lv_now_ms() after which it is cancelled; 0 = none */
    void *keep;           /* what params borrows from; freed with keep_free when the job goes */
    void (*keep_free)(void *keep);
    char rid[32]; /* request id for log lines */
    /* Another choice of the same prompt (same ids, same images), submitted
     * before this one, or NULL: this job waits for it to prefill the prompt
     * and copies its KV instead of encoding and prefilling again (n > 1
     * choices prefill once). Set with sched_job_share_prompt. */
    struct sched_job *prompt_of;
    bool record_tokens; /* fill tokens[] below (logprobs); sets params.logprobs */
    /* Optional: called on the engine's thread as the job advances (gen_run's
     * callers: llava-cli streams its text through on_text); cancelled is
     * polled every turn. Borrowed. */
    const gen_callbacks *callbacks;

    /* Output: under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    lv_buf pending;    /* text generated and not yet taken (streaming) */
    bool text_lost;    /* a piece of text could not join pending (out of memory) */
    bool done;         /* finished: st, err, result are final */
    bool timed_out;    /* cancelled because deadline_ms passed */
    bool shut_down;    /* cancelled while queued because the scheduler stopped (sched_stop) */
    lv_status st;      /* LV_OK, or why it failed (LV_ERR_CANCELLED when cancelled) */
    lv_err err;        /* message when st != LV_OK */
    gen_result result; /* on LV_OK: ids, full text, finish_reason, timings */
    /* Per generated token (EOS included), appended as each is chosen when
     * record_tokens (logprobs asked): id, logprob and top_logprobs
     * (params.sampling.n_top_logprobs entries). Readers keep their own
     * cursor; n_tokens only grows. */
    sample_result *tokens;
    int n_tokens, cap_tokens;
    /* Timing (lv_now_ms): submitted, first token chosen, done; 0 = not yet. */
    double t_submit_ms, t_first_ms, t_done_ms;

    bool started;       /* taken into a slot (engine thread only) */
    atomic_bool cancel; /* set by sched_job_cancel; polled by the engine */
    atomic_int refs;
} sched_job;

/* A zeroed job with one reference (the caller's); NULL when out of memory. */
sched_job *sched_job_new(void);
/* Drops a reference; the last one frees the inputs (unless borrowed), outputs and keep.
 * NULL: no-op. */
void sched_job_release(sched_job *j);
/* j shares first's prompt (its ids and images are copies of first's): takes
 * a reference to first, dropped with j. */
void sched_job_share_prompt(sched_job *j, sched_job *first);

/* Asks the engine to stop the job at its next turn (or not start it). */
void sched_job_cancel(sched_job *j);
/* Blocks until j->done. */
void sched_job_wait(sched_job *j);
/*
 * Moves the pending text into out (appended) and returns whether the job is
 * done; waits up to wait_ms for text or the end when there is none yet.
 * Once it returns true with nothing appended, the stream is over.
 */
bool sched_job_take(sched_job *j, lv_buf *out, int wait_ms);
/* Whether a piece of j's streamed text was lost (no memory to keep it):
 * what sched_job_take gives then has a gap, and a stream must not be sent
 * as if whole. The final result.text is unaffected. */
bool sched_job_text_lost(sched_job *j);

typedef struct sched sched;

typedef struct {
    int queue_size; /* waiting jobs at most (>= 1) */
    int parallel;   /* sequences decoded together at most (>= 1) */
    int ctx_size;   /* KV positions per sequence at most (0: the model's context, capped so
                       that parallel sequences take at most 8 GiB of KV cache; see scheduler.c) */
    /* The running streams' inter-token latency while images are encoded and
     * prompts prefilled beside them, as a multiple of a decode-only step
     * (>= 1; 0: the default, 2; < 0: no bound, for throughput: llava-eval).
     * Background work gets a share of each turn sized from measured costs
     * so that a turn stays under it. */
    double max_itl_ratio;
    /* Sequences kept after their jobs end, for the prefix cache (0: parallel;
     * < 0: none, every prompt is prefilled whole). See scheduler.c. */
    int cache_slots;
    /* Bytes of image feature rows kept for images sent again (engine/image_cache.h;
     * 0: SCHED_IMAGE_CACHE_DEFAULT; < 0: none, every image is encoded). Device
     * memory on a GPU, besides the KV cache. */
    int64_t image_cache_bytes;
    /* Bytes of KV cache the prefix cache's kept sequences hold at most
     * (0: no bound of its own, only the KV bound below; < 0 is cache_slots < 0). */
    int64_t prefix_cache_bytes;
    /* The memory governor (borrowed, outlives the scheduler; NULL: none):
     * the caches are reported to it and evicted, least recently used first,
     * while it is above its evict line (engine/governor.h). */
    mg_governor *governor;
    /* Seconds between two hand-backs of freed heap to the system while
     * busy (lv_allocator_trim; also once each time the engine goes idle);
     * 0: 30; < 0: never (the seed config's periodic_cleanup false). */
    double trim_interval_s;
} sched_config;

#define SCHED_IMAGE_CACHE_DEFAULT ((int64_t)256 << 20) /* 256 MiB: five 7B LLaVA-NeXT images */

/* Figures for /health and /metrics. */
typedef struct {
    int running;                    /* jobs holding a slot */
    int waiting;                    /* jobs queued */
    int queue_capacity;             /* queue_size */
    int parallel;                   /* sequences at most */
    int64_t kv_used;                /* KV positions filled, all running sequences */
    int64_t kv_capacity;            /* KV positions that may exist (parallel x ctx) */
    size_t kv_bytes_used;           /* bytes of kv_used */
    size_t kv_bytes_total;          /* bytes of kv_capacity: the most KV cache it allocates */
    size_t kv_bytes_allocated;      /* KV cache allocated now for running sequences (each is sized
                                       to prompt + max_tokens, at most ctx) */
    size_t kv_bytes_retained;       /* KV cache held by the prefix cache's kept sequences; with
                                       kv_bytes_allocated at most kv_bytes_total */
    int ctx_size;                   /* ctx: positions per sequence at most */
    int cache_sequences;            /* sequences kept by the prefix cache */
    uint64_t cache_hits;            /* jobs that took a prefix from the cache, since the start */
    uint64_t cache_tokens;          /* prompt ids they took from it */
    uint64_t image_cache_hits;      /* images whose rows came from the image cache */
    uint64_t image_cache_misses;    /* images looked up and encoded */
    uint64_t image_cache_evictions; /* entries evicted to make room */
    int image_cache_images;         /* entries kept now */
    size_t image_cache_bytes;       /* their bytes */
    size_t image_cache_budget;      /* bytes at most (0: off) */
    uint64_t cache_evictions;       /* kept sequences evicted (room, budget or pressure) */
    uint64_t prompt_shares;         /* jobs that copied their prompt from another choice (n > 1) */
} sched_stats;

/* A scheduler on m (borrowed; loaded; outlives it), no thread yet. Caller
 * frees with sched_free. LV_ERR_ARG for a bad config (ctx_size beyond the
 * model's context included), LV_ERR_NOMEM. A job whose prompt exceeds ctx
 * fails alone with LV_ERR_ARG. */
lv_status sched_new(llava *m, const sched_config *cfg, sched **out, lv_err *err);

/* Runs the engine on its own thread from now on. LV_ERR_NOMEM. */
lv_status sched_start(sched *s, lv_err *err);

/* One turn on the caller's thread (a scheduler never started): admits,
 * cancels, runs background pieces and one forward. Returns whether jobs
 * are still queued or running. */
bool sched_step(sched *s);

/*
 * Queues j (takes a reference). LV_ERR_BUSY when the queue is full or the
 * scheduler is shutting down (the message says which); j is untouched then.
 */
lv_status sched_submit(sched *s, sched_job *j, lv_err *err);

/*
 * The memory a job will hold from its submission to its end, for the
 * memory governor: its prompt ids and image tensors, its KV sequence
 * (prompt + max_tokens, at most ctx positions), its images' feature rows
 * and the largest image's encoder scratch. An upper bound: a prefix or
 * image cache hit holds less.
 */
int64_t sched_job_bytes(const sched *s, const sched_job *j);

/* Figures now (a consistent snapshot). */
void sched_get_stats(sched *s, sched_stats *out);

/* Stops taking jobs (sched_submit answers LV_ERR_BUSY from now on),
 * cancels the queued ones, lets the running ones finish (or cancels them if
 * cancel_running), and joins the engine thread. A queued choice of a request
 * that has begun (prompt_of started: n > 1 with more choices than free
 * slots) is not refused: it runs and finishes with its siblings, unless
 * cancel_running. Every job submitted is done
 * when it returns. Idempotent. */
void sched_stop(sched *s, bool cancel_running);

/* sched_stop(s, true) if not stopped yet, then frees. NULL: no-op. */
void sched_free(sched *s);

#endif
