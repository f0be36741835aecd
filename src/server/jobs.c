/*
 * jobs.c - an OpenAI request made into the scheduler's jobs, and finished jobs
 * made into the answer (jobs.h).
 *
 * Making: the body is parsed into an oai_request, shared by the group and
 * its jobs through a reference count. The first job of each prompt gets the
 * inputs (chat: the images, then the template, then the ids; completion:
 * the text tokenized with BOS, or the ids as given) and the parameters; the
 * other n - 1 choices of that prompt are copies with the seeds that follow.
 */
#include "server/jobs.h"

#include "base/buf.h"
#include "base/clock.h"
#include "engine/prefix_cache.h"
#include "engine/request.h"
#include "engine/request_video.h"
#include "server/tools.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The parsed request, shared by the group and the jobs made from it. */
struct jobs_request {
    oai_request r;
    grammar *grammar; /* r.grammar_text compiled, shared by the choices; NULL: free text */
    atomic_int refs;
};

/* Drops one reference to the request (a sched_job's keep_free). */
static void request_release(void *p) {
    jobs_request *q = p;
    if (q && atomic_fetch_sub(&q->refs, 1) == 1) {
        oai_request_free(&q->r);
        grammar_free(q->grammar);
        free(q);
    }
}

void jobs_release(job_group *g) {
    mg_add(g->gov, MG_REQUESTS, -g->mem);
    for (int k = 0; k < g->n_jobs; k++) {
        if (!g->jobs[k]) continue;
        sched_job_cancel(g->jobs[k]);
        sched_job_release(g->jobs[k]);
    }
    free(g->jobs);
    request_release(g->q);
    memset(g, 0, sizeof *g);
}

/* ---- making the jobs ----------------------------------------------------------------------
 * Everything here runs on the connection's thread, before any job reaches
 * the scheduler: a request that fails here costs the model nothing. */

/* Fetches image k of r and makes it j->images[k] through the engine's
 * request_image_from_bytes (the path llava-cli's files take); "low" detail
 * keeps the base view only (one tile: side² features + newline). */
static lv_status load_image(const jobs_ctx *ctx, const oai_request *r, size_t k, sched_job *j,
                            int *n_tokens, oai_error *e) {
    char param[64];
    snprintf(param, sizeof param, "messages[%d].content", r->images[k].message);
    uint8_t *bytes = NULL;
    size_t len = 0;
    lv_err err = {{0}};
    lv_status st = media_fetch(r->images[k].url, ctx->media, &bytes, &len, &err);
    /* A URL that cannot be fetched or read is the client's problem (400). */
    if (st == LV_ERR_IO) st = LV_ERR_ARG;
    img_options opt = {0};
    if (ctx->image) opt = *ctx->image;
    opt.base_only = r->images[k].detail == OAI_DETAIL_LOW;
    /* a resent history's image: the tensor made last time */
    /* its key hashed here, off the engine's thread, once per image made */
    if (!st &&
        !image_memo_get(ctx->memo, bytes, len, &opt, &j->images[k], n_tokens, &j->image_keys[k])) {
        st = request_image_from_bytes(ctx->m, bytes, len, &opt, &j->images[k], n_tokens, NULL, NULL,
                                      &err);
        if (!st) {
            j->image_keys[k] = pc_image_key(&j->images[k]);
            image_memo_put(ctx->memo, bytes, len, &opt, &j->images[k], *n_tokens, j->image_keys[k]);
            mg_set(ctx->gov, MG_DECODED, (int64_t)image_memo_bytes(ctx->memo));
        }
    }
    free(bytes);
    if (st)
        return oai_fail(e, st, 0, param,
                        st == LV_ERR_TOO_LARGE ? "image_too_large" : "invalid_image",
                        "image %zu: %s", k, err.msg);
    j->n_images = (int)k + 1;
    return LV_OK;
}

/* The video of r (SmolVLM2 only): the frames request_video keeps, fetched
 * and made into j->images[0..) as the images are; v gets their times. */
static lv_status load_video(const jobs_ctx *ctx, const oai_request *r, sched_job *j, int *n_tokens,
                            request_video *v, oai_error *e) {
    char param[64];
    snprintf(param, sizeof param, "messages[%d].content", r->video.message);
    const char *why = request_video_refusal(ctx->m);
    if (why) return oai_fail(e, LV_ERR_ARG, 0, param, "invalid_value", "%s", why);
    int max_frames = 0;
    request_video_supported(ctx->m, &max_frames, NULL, NULL);
    lv_err err = {{0}};
    if (r->video.file_url) { /* a file: fetched as images are, decoded and sampled */
        uint8_t *bytes = NULL;
        size_t len = 0;
        int n = 0;
        media_policy pol;
        if (ctx->media)
            pol = *ctx->media;
        else
            media_policy_default(&pol);
        pol.video = true;
        lv_status st = media_fetch(r->video.file_url, &pol, &bytes, &len, &err);
        if (st == LV_ERR_IO) st = LV_ERR_ARG; /* the client's URL */
        if (!st) st = request_video_from_bytes(ctx->m, bytes, len, j->images, &n, NULL, v, &err);
        free(bytes);
        if (st)
            return oai_fail(e, st, 0, param,
                            st == LV_ERR_TOO_LARGE ? "video_too_large" : "invalid_video",
                            "video: %s", err.msg);
        for (int i = 0; i < n; i++) {
            n_tokens[i] = llava_tensor_token_count(ctx->m, &j->images[i]);
            j->image_keys[i] = pc_image_key(&j->images[i]);
        }
        j->n_images = n;
        return LV_OK;
    }
    int64_t *keep = calloc((size_t)r->video.n_frames, sizeof *keep);
    int n_keep = 0;
    lv_status st = keep ? video_from_frame_list(r->video.n_frames, r->video.fps, max_frames, keep,
                                                &n_keep, v, &err)
                        : lv_fail(&err, LV_ERR_NOMEM, "out of memory");
    if (st) {
        free(keep);
        return oai_fail(e, st, 0, param, "invalid_value", "video: %s", err.msg);
    }
    for (int i = 0; !st && i < n_keep; i++) {
        uint8_t *bytes = NULL;
        size_t len = 0;
        st = media_fetch(r->video.urls[keep[i]], ctx->media, &bytes, &len, &err);
        if (st == LV_ERR_IO) st = LV_ERR_ARG; /* the client's URL */
        if (!st)
            st = request_video_frame_from_bytes(ctx->m, bytes, len, &j->images[i], &n_tokens[i],
                                                &err);
        free(bytes);
        if (st) {
            st = oai_fail(e, st, 0, param,
                          st == LV_ERR_TOO_LARGE ? "image_too_large" : "invalid_image",
                          "video frame %lld: %s", (long long)keep[i], err.msg);
            break;
        }
        j->image_keys[i] = pc_image_key(&j->images[i]);
        j->n_images = i + 1;
    }
    free(keep);
    return st;
}

/* Chat: images (or a video's frames), then the template, then the ids. */
static lv_status prepare_chat(const jobs_ctx *ctx, const oai_request *r, sched_job *j,
                              oai_error *e) {
    size_t n_media = !r->has_video       ? r->n_images
                     : r->video.file_url ? (size_t)VIDEO_MAX_INPUT_FRAMES /* >= max_frames */
                                         : (size_t)r->video.n_frames;
    int *n_tokens = calloc(n_media + 1, sizeof *n_tokens);
    j->images = calloc(n_media + 1, sizeof *j->images);
    j->image_keys = calloc(n_media + 1, sizeof *j->image_keys);
    lv_buf text = {0};
    lv_err err = {{0}};
    size_t n_placeholders = 0, n_ids = 0;
    request_video video = {0};
    lv_status st = n_tokens && j->images && j->image_keys
                       ? LV_OK
                       : oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "oom");
    for (size_t k = 0; !st && k < r->n_images; k++) st = load_image(ctx, r, k, j, &n_tokens[k], e);
    if (!st && r->has_video) st = load_video(ctx, r, j, n_tokens, &video, e);
    if (st) goto done;
    st = chat_render(llava_chat_template(ctx->m), r->messages, r->n_messages, &text,
                     &n_placeholders, &err);
    if (!st && r->has_video) st = request_expand_videos(&text, &video, 1, &err);
    if (!st)
        st = request_prompt_ids(ctx->m, text.data ? text.data : "", true, j->images, j->n_images,
                                &j->ids, &n_ids, &err);
    if (st) oai_fail(e, st, 0, "messages", NULL, "%s", err.msg);
    j->n_ids = (int)n_ids;
    /* Text spelling "<image>" must not smuggle in image ids without features. */
    long want = 0, got = 0;
    for (int k = 0; k < j->n_images; k++) want += n_tokens[k];
    for (size_t i = 0; !st && i < n_ids; i++) got += j->ids[i] == llava_image_token_id(ctx->m);
    if (!st && got != want)
        st = oai_fail(e, LV_ERR_ARG, 0, "messages", "invalid_value",
                      "the message text contains the image token \"<image>\"; send images as "
                      "image_url parts");
done:
    free(n_tokens);
    lv_buf_free(&text);
    request_video_free(&video);
    return st;
}

/* Completion prompt p: text (tokenized with BOS) or ids (as given). */
static lv_status prepare_completion(const jobs_ctx *ctx, const oai_request *r, size_t pi,
                                    sched_job *j, oai_error *e) {
    const oai_prompt *p = &r->prompts[pi];
    lv_err err = {{0}};
    if (p->ids) {
        int32_t vocab = tok_vocab_size(llava_tokenizer(ctx->m));
        if (p->n_ids < 1)
            return oai_fail(e, LV_ERR_ARG, 0, "prompt", "invalid_value",
                            "prompt %zu is an empty list of token ids", pi);
        for (int i = 0; i < p->n_ids; i++)
            if (p->ids[i] < 0 || p->ids[i] >= vocab)
                return oai_fail(e, LV_ERR_ARG, 0, "prompt", "invalid_value",
                                "prompt token %d is %d, outside the vocabulary [0, %d)", i,
                                p->ids[i], vocab);
        if (!(j->ids = malloc((size_t)p->n_ids * sizeof *j->ids)))
            return oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "out of memory");
        memcpy(j->ids, p->ids, (size_t)p->n_ids * sizeof *j->ids);
        j->n_ids = p->n_ids;
        return LV_OK;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    lv_status st = tok_encode(llava_tokenizer(ctx->m), p->text, p->len, true, &ids, &n, &err);
    if (st) return oai_fail(e, st, 0, "prompt", NULL, "%s", err.msg);
    j->ids = ids;
    j->n_ids = (int)n;
    return LV_OK;
}

/* A job holding a reference to q; NULL when out of memory. */
static sched_job *new_job(jobs_request *q, const char *rid, int k, int n_jobs) {
    sched_job *j = sched_job_new();
    if (!j) return NULL;
    atomic_fetch_add(&q->refs, 1);
    j->keep = q;
    j->keep_free = request_release;
    if (n_jobs > 1)
        snprintf(j->rid, sizeof j->rid, "%.20s.%d", rid, k & 0xff);
    else
        snprintf(j->rid, sizeof j->rid, "%s", rid);
    return j;
}

/* A copy of src's inputs (ids, images, params) in a new job. */
static sched_job *clone_job(const sched_job *src, jobs_request *q, const char *rid, int k,
                            int n_jobs) {
    sched_job *j = new_job(q, rid, k, n_jobs);
    if (!j) return NULL;
    j->params = src->params;
    j->deadline_ms = src->deadline_ms;
    j->record_tokens = src->record_tokens;
    j->ids = malloc((size_t)(src->n_ids ? src->n_ids : 1) * sizeof *j->ids);
    j->images = calloc((size_t)src->n_images + 1, sizeof *j->images);
    if (src->image_keys &&
        (j->image_keys = calloc((size_t)src->n_images + 1, sizeof *j->image_keys)))
        memcpy(j->image_keys, src->image_keys, (size_t)src->n_images * sizeof *j->image_keys);
    bool ok = j->ids && j->images && (!src->image_keys || j->image_keys);
    if (ok) memcpy(j->ids, src->ids, (size_t)src->n_ids * sizeof *j->ids);
    j->n_ids = src->n_ids;
    for (int i = 0; ok && i < src->n_images; i++) {
        const img_tensor *a = &src->images[i];
        size_t n = (size_t)a->n_tiles * 3 * a->tile_h * a->tile_w;
        j->images[i] = *a;
        j->images[i].data = malloc(n * sizeof(float));
        if (!(ok = j->images[i].data != NULL)) break;
        memcpy(j->images[i].data, a->data, n * sizeof(float));
        j->n_images = i + 1;
    }
    if (!ok) {
        sched_job_release(j);
        return NULL;
    }
    return j;
}

/* Generation parameters of the first job of a prompt: the checkpoint's
 * defaults, what the client set, logit_bias, the seed; without a
 * max_tokens from the client, the config or --max-tokens, the rest of the
 * context (as vLLM and llama-server's n_predict -1 do), so a long answer
 * ends at EOS rather than at an arbitrary count. */
static lv_status set_params(const jobs_ctx *ctx, const jobs_request *q, sched_job *j,
                            oai_error *e) {
    const oai_request *r = &q->r;
    gen_params_default(&j->params, ctx->m);
    oai_request_apply(r, &j->params);
    if (q->grammar) {
        if (!ctx->vocab)
            return oai_fail(e, LV_ERR_DEVICE, 0, r->grammar_param, NULL,
                            "structured outputs are unavailable: the vocabulary's tries could not "
                            "be built");
        j->params.grammar = q->grammar;
        j->params.vocab = ctx->vocab;
    }
    int32_t vocab = tok_vocab_size(llava_tokenizer(ctx->m));
    for (int i = 0; i < r->n_logit_bias; i++)
        if (r->logit_bias[i].id >= vocab)
            return oai_fail(e, LV_ERR_ARG, 0, "logit_bias", "invalid_value",
                            "Invalid 'logit_bias': token id %d is outside the vocabulary [0, %d).",
                            r->logit_bias[i].id, vocab);
    if (!(r->set & OAI_SET_SEED)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        j->params.sampling.seed =
            ((uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)ts.tv_sec) & INT64_MAX;
    }
    j->record_tokens = r->logprobs;
    if (ctx->timeout_s > 0) j->deadline_ms = lv_now_ms() + ctx->timeout_s * 1e3;
    /* The prompt and at least one generated token must fit a sequence's context
     * (--ctx-size, or the model's within the scheduler's KV budget). */
    sched_stats ws;
    sched_get_stats(ctx->w, &ws);
    int max_ctx = ws.ctx_size;
    if (j->n_ids + 1 > max_ctx)
        return oai_fail(e, LV_ERR_ARG, 0, r->kind == OAI_CHAT ? "messages" : "prompt",
                        "context_length_exceeded",
                        "This model's maximum context length is %d tokens, but the prompt is %d "
                        "tokens (images included); shorten it.",
                        max_ctx, j->n_ids);
    if (r->max_tokens <= 0) j->params.max_tokens = max_ctx - j->n_ids;
    return LV_OK;
}

#define MAX_JOBS 64 /* choices per request: prompts x n */

/* The jobs for g's request, each holding a reference to it. On failure the
 * jobs made so far stay in g for the caller to release. */
static lv_status make_jobs(const jobs_ctx *ctx, const char *rid, job_group *g, oai_error *e) {
    const oai_request *r = g->r;
    jobs_request *q = g->q;
    int n_prompts = r->kind == OAI_CHAT ? 1 : (int)r->n_prompts;
    if (n_prompts < 1)
        return oai_fail(e, LV_ERR_ARG, 0, "prompt", "invalid_value", "Invalid 'prompt': empty.");
    if ((long)n_prompts * r->n > MAX_JOBS)
        return oai_fail(e, LV_ERR_ARG, 0, "n", "invalid_value",
                        "%d prompts x n = %d asks for %d choices; at most %d per request",
                        n_prompts, r->n, n_prompts * r->n, MAX_JOBS);
    if (r->grammar_text) { /* once for every choice */
        lv_err err = {{0}};
        lv_status gs = grammar_compile(r->grammar_text, r->grammar_len, &q->grammar, &err);
        if (gs == LV_ERR_NOMEM) /* the server's trouble, not the grammar's: 503 */
            return oai_fail(e, gs, 0, NULL, NULL, "out of memory compiling the grammar");
        if (gs)
            return oai_fail(e, LV_ERR_ARG, 0, r->grammar_param, "invalid_grammar", "Invalid %s: %s",
                            r->grammar_param, err.msg);
    }
    g->n = r->n;
    /* n_jobs only once the array exists: jobs_release walks it */
    if (!(g->jobs = calloc((size_t)(n_prompts * r->n), sizeof *g->jobs)))
        return oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "out of memory");
    g->n_jobs = n_prompts * r->n;
    lv_status st = LV_OK;
    for (int p = 0; !st && p < n_prompts; p++) {
        int k0 = p * r->n;
        sched_job *j = g->jobs[k0] = new_job(q, rid, k0, g->n_jobs);
        if (!j) st = oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "out of memory");
        if (!st)
            st = r->kind == OAI_CHAT ? prepare_chat(ctx, r, j, e)
                                     : prepare_completion(ctx, r, (size_t)p, j, e);
        if (!st) st = set_params(ctx, q, j, e);
        for (int i = 1; !st && i < r->n; i++) {
            sched_job *c = g->jobs[k0 + i] = clone_job(j, q, rid, k0 + i, g->n_jobs);
            if (!c)
                st = oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "out of memory");
            else {
                c->params.sampling.seed = j->params.sampling.seed + (uint64_t)i;
                sched_job_share_prompt(c, j); /* the prompt is prefilled once for all n */
            }
        }
    }
    return st;
}

/* ---- memory ---------------------------------------------------------------------------------
 * A request's memory is reserved with the governor before its images are
 * decoded (the body and, per image and choice, the largest tensor the
 * processor can make), then set to what its jobs will hold
 * (sched_job_bytes); it is given back by jobs_release, once the answer is
 * out. A reservation that does not fit, even after the caches made room, is
 * the 503 (with Retry-After) that says so. */

#define ROOM_WAIT_MS 2000 /* how long a request waits for the caches to make room */
/* What a request holds beyond sched_job_bytes' sum: the allocator's rounding
 * and the small things (the parsed body, the sampler, the stream buffers),
 * measured at ~15% on the demo model; a quarter is kept. */
#define REQUEST_SLACK 1.25

/* The largest image tensor the model's processor makes (anyres's most
 * tiles) into *t (no data), and the most <image> ids an image becomes. */
static void largest_image(const llava *m, img_tensor *t, int *rows) {
    const img_proc_params *p = llava_image_params(m);
    int side_h = p->crop_height > 0 ? p->crop_height : 336,
        side_w = p->crop_width > 0 ? p->crop_width : 336;
    *t = (img_tensor){.n_tiles = 1, .tile_h = side_h, .tile_w = side_w};
    *rows = llava_image_token_count(m, side_h, side_w);
    if (p->kind == IMG_PROC_IDEFICS3 && *rows > 0) {
        /* SmolVLM: a square image of the longest edge has the most frames */
        int most = llava_image_token_count(m, p->longest_edge, p->longest_edge);
        if (most > *rows) {
            t->n_tiles = most / *rows;
            *rows = most;
        }
        return;
    }
    if (p->kind != IMG_PROC_LLAVA_NEXT) return;
    for (int i = 0; i < p->n_pinpoints; i++) {
        int h = p->pinpoints[i][0], w = p->pinpoints[i][1];
        int tiles = 1 + (h / side_h) * (w / side_w), n = llava_image_token_count(m, h, w);
        if (tiles > t->n_tiles) t->n_tiles = tiles;
        if (n > *rows) *rows = n;
    }
}

/* The most a request can hold before its images are decoded, per choice:
 * each image's largest tensor twice (the decoder's and resizer's buffers
 * beside it), feature rows and encoder scratch, and KV for every position
 * it could fill (the images' rows, a token per byte of text, the template,
 * max_tokens; at most the context). */
static int64_t request_bytes_max(const jobs_ctx *ctx, const oai_request *r, size_t len) {
    img_tensor t;
    int rows;
    largest_image(ctx->m, &t, &rows);
    int64_t tensor = (int64_t)t.n_tiles * 3 * t.tile_h * t.tile_w * (int64_t)sizeof(float);
    int64_t text = (int64_t)len;
    for (size_t i = 0; i < r->n_images; i++) text -= (int64_t)strlen(r->images[i].url);
    for (int i = 0; r->has_video && i < r->video.n_frames; i++)
        text -= (int64_t)strlen(r->video.urls[i]);
    if (r->has_video && r->video.file_url) text -= (int64_t)strlen(r->video.file_url);
    sched_stats ws;
    sched_get_stats(ctx->w, &ws);
    int64_t gen = r->max_tokens > 0 ? r->max_tokens : ws.ctx_size; /* 0: the rest of it */
    int64_t positions = (int64_t)r->n_images * rows + (text > 0 ? text : 0) + 256 + gen;
    if (positions > ws.ctx_size) positions = ws.ctx_size;
    int64_t kv_per_pos = ws.kv_capacity ? (int64_t)(ws.kv_bytes_total / (size_t)ws.kv_capacity) : 0;
    int64_t per_image =
        2 * tensor + (int64_t)rows * llava_text_dim(ctx->m) * (int64_t)sizeof(float);
    int64_t encoder = r->n_images ? (int64_t)llava_encoder_bytes(ctx->m, &t) : 0;
    int64_t video = 0;
    int max_frames = 0;
    if (r->has_video && request_video_supported(ctx->m, &max_frames, NULL, NULL)) {
        /* each kept frame: one T x T tile (and its feature rows) */
        int T = llava_image_params(ctx->m)->max_image_size;
        img_tensor f = {.n_tiles = 1, .tile_h = T, .tile_w = T, .image_h = T, .image_w = T};
        int frames =
            !r->video.file_url && r->video.n_frames < max_frames ? r->video.n_frames : max_frames;
        int64_t frows = llava_tensor_token_count(ctx->m, &f);
        if (frows < 1) frows = rows;
        positions += frames * frows;
        if (positions > ws.ctx_size) positions = ws.ctx_size;
        video = frames * (2 * (int64_t)3 * T * T * (int64_t)sizeof(float) +
                          frows * llava_text_dim(ctx->m) * (int64_t)sizeof(float)) +
                (int64_t)llava_encoder_bytes(ctx->m, &f);
    }
    return (int64_t)r->n_images * per_image + encoder + video + positions * kv_per_pos;
}

static lv_status no_room(const jobs_ctx *ctx, int64_t bytes, oai_error *e) {
    mg_stats ms;
    mg_get_stats(ctx->gov, &ms);
    return oai_fail(e, LV_ERR_NOMEM, 0, NULL, "memory_pressure",
                    "the server is at its memory limit (%.0f of %.0f MiB in use; this request "
                    "needs %.1f MiB); retry later",
                    ms.use / 1048576.0, ms.limit / 1048576.0, bytes / 1048576.0);
}

/* Changes g's reservation to bytes (waiting for room when it grows). */
static lv_status reserve(const jobs_ctx *ctx, job_group *g, int64_t bytes, oai_error *e) {
    int64_t more = bytes - g->mem;
    if (more > 0 && !mg_reserve_wait(ctx->gov, MG_REQUESTS, more, ROOM_WAIT_MS)) {
        if (!image_memo_count(ctx->memo)) return no_room(ctx, bytes, e);
        image_memo_clear(ctx->memo); /* the kept tensors give way, then once more */
        mg_set(ctx->gov, MG_DECODED, 0);
        if (!mg_reserve(ctx->gov, MG_REQUESTS, more)) return no_room(ctx, bytes, e);
    }
    if (more < 0) mg_add(ctx->gov, MG_REQUESTS, more);
    g->gov = ctx->gov;
    g->mem = bytes;
    return LV_OK;
}

lv_status jobs_make(const jobs_ctx *ctx, oai_kind kind, const char *body, size_t len,
                    const char *rid, job_group *g, oai_error *e) {
    memset(g, 0, sizeof *g);
    jobs_request *q = calloc(1, sizeof *q);
    if (!q) return oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "out of memory");
    atomic_init(&q->refs, 1);
    lv_status st = kind == OAI_CHAT ? oai_parse_chat(body, len, ctx->lim, &q->r, e)
                                    : oai_parse_completion(body, len, ctx->lim, &q->r, e);
    if (st) {
        free(q);
        return st;
    }
    g->q = q;
    g->r = &q->r;
    int64_t choices = (int64_t)q->r.n * (kind == OAI_CHAT ? 1 : (int64_t)q->r.n_prompts);
    /* before decoding, the most it can hold; then what its jobs will hold */
    st = reserve(ctx, g, (int64_t)len + choices * request_bytes_max(ctx, &q->r, len), e);
    if (!st) st = make_jobs(ctx, rid, g, e);
    if (!st) { /* what the jobs will hold */
        int64_t bytes = 0;
        for (int k = 0; k < g->n_jobs; k++) bytes += sched_job_bytes(ctx->w, g->jobs[k]);
        st = reserve(ctx, g, (int64_t)len + (int64_t)(REQUEST_SLACK * (double)bytes), e);
    }
    if (st) jobs_release(g);
    return st;
}

lv_status jobs_submit(const jobs_ctx *ctx, job_group *g, oai_error *e) {
    lv_err err = {{0}};
    for (int k = 0; k < g->n_jobs; k++) {
        lv_status st = sched_submit(ctx->w, g->jobs[k], &err);
        if (st) {
            jobs_release(g); /* cancels the ones already queued */
            return oai_fail(e, st, 0, NULL, "queue_full", "%s", err.msg);
        }
    }
    return LV_OK;
}

/* ---- results ------------------------------------------------------------------------------
 * Read once the scheduler is done with a job (or, for the tokens, as it goes):
 * the same parts make the plain answer here and the SSE events in stream.c. */

void jobs_error(const jobs_ctx *ctx, const sched_job *j, oai_error *e) {
    if (j->st == LV_ERR_CANCELLED && j->timed_out)
        oai_fail(e, LV_ERR_DEVICE, 0, NULL, "timeout",
                 "the request did not finish within the server's timeout (%d s)", ctx->timeout_s);
    else if (j->st == LV_ERR_CANCELLED && j->shut_down) /* 503 with Retry-After, not 499 */
        oai_fail(e, LV_OK, OAI_HINT_LOADING, NULL, "shutting_down",
                 "the server is shutting down; this request was still queued");
    else
        oai_fail(e, j->st, 0, NULL, NULL, "%s", j->err.msg);
}

void jobs_usage(const job_group *g, oai_usage *u, oai_timings *t) {
    *u = (oai_usage){0, 0, 0};
    *t = (oai_timings){0, 0, 0, 0};
    for (int k = 0; k < g->n_jobs; k++) {
        const sched_job *j = g->jobs[k];
        const gen_timings *gt = &j->result.timings;
        if (k % g->n == 0) { /* a prompt's n choices: counted once */
            u->prompt_tokens += j->n_ids;
            u->cached_tokens += gt->n_cached;
        }
        u->completion_tokens += j->result.n_ids;
        t->prompt_n += gt->n_prefill;
        t->prompt_ms += gt->vision_ms + gt->prefill_ms;
        t->predicted_n += j->result.n_ids;
        t->predicted_ms += gt->decode_ms + gt->sample_ms;
    }
}

void jobs_note(const jobs_ctx *ctx, const sched_job *j) {
    if (!j->st)
        metrics_generation(ctx->metrics, j->n_ids, j->result.n_ids, j->t_submit_ms, j->t_first_ms,
                           j->t_done_ms);
}

#define TOK_TEXT 64 /* bytes kept per token text */

/* A token's text for logprobs: its vocabulary piece as the decoder spells
 * it: "▁" → " ", "<0xNN>" → the byte NN (so "bytes" gives the UTF-8 bytes
 * even for pieces of a character). */
static void token_text(const tok *t, int32_t id, char *out, size_t *len) {
    int nb = tok_token_bytes(t, id, out, TOK_TEXT - 4); /* byte-level vocabularies */
    if (nb >= 0) {
        *len = (size_t)nb;
        return;
    }
    const char *p = tok_id_to_token(t, id);
    size_t n = 0;
    unsigned byte;
    if (!p) p = "";
    if (strlen(p) == 6 && sscanf(p, "<0x%2X>", &byte) == 1) {
        out[0] = (char)byte;
        *len = 1;
        return;
    }
    while (*p && n + 4 < TOK_TEXT) {
        if (!strncmp(p, "\xe2\x96\x81", 3)) {
            out[n++] = ' ';
            p += 3;
        } else {
            out[n++] = *p++;
        }
    }
    *len = n;
}

oai_token_logprob *jobs_logprobs(const jobs_ctx *ctx, const sample_result *toks, int from, int to,
                                 size_t limit_bytes, char **texts, int *n_out) {
    int n = to > from ? to - from : 0;
    *n_out = 0;
    *texts = NULL;
    oai_token_logprob *lp = calloc((size_t)(n ? n : 1), sizeof *lp);
    char *store = malloc((size_t)(n ? n : 1) * (SAMPLE_MAX_TOP + 1) * TOK_TEXT);
    if (!lp || !store) {
        free(lp);
        free(store);
        return NULL;
    }
    const tok *t = llava_tokenizer(ctx->m);
    size_t used = 0;
    char *p = store;
    for (int i = from; i < to; i++) {
        const sample_result *r = &toks[i];
        if (gen_is_eos(ctx->m, r->id)) continue;
        if (used >= limit_bytes) break; /* past the text: a stop string cut it there */
        oai_token_logprob *o = &lp[(*n_out)++];
        token_text(t, r->id, p, &o->tok.len);
        o->tok.text = p;
        o->tok.logprob = r->logprob;
        used += o->tok.len;
        p += TOK_TEXT;
        o->n_top = r->n_top;
        for (int k = 0; k < r->n_top; k++) {
            token_text(t, r->top[k].id, p, &o->top[k].len);
            o->top[k].text = p;
            o->top[k].logprob = r->top[k].logprob;
            p += TOK_TEXT;
        }
    }
    *texts = store;
    return lp;
}

sample_result *jobs_new_tokens(sched_job *j, int *cursor, int *n) {
    pthread_mutex_lock(&j->mu);
    *n = j->n_tokens - *cursor;
    sample_result *copy = NULL;
    if (*n > 0 && (copy = malloc((size_t)*n * sizeof *copy)))
        memcpy(copy, j->tokens + *cursor, (size_t)*n * sizeof *copy);
    if (!copy) *n = 0;
    *cursor += *n;
    pthread_mutex_unlock(&j->mu);
    return copy;
}

char *jobs_answer(const jobs_ctx *ctx, const job_group *g, oai_error *e) {
    const oai_request *r = g->r;
    for (int k = 0; k < g->n_jobs; k++) jobs_note(ctx, g->jobs[k]);
    for (int k = 0; k < g->n_jobs; k++)
        if (g->jobs[k]->st) {
            jobs_error(ctx, g->jobs[k], e);
            return NULL;
        }
    size_t n_jobs = g->n_jobs > 0 ? (size_t)g->n_jobs : 1;
    oai_choice *ch = calloc(n_jobs, sizeof *ch);
    char **texts = calloc(n_jobs, sizeof *texts);
    bool ok = ch && texts;
    for (int k = 0; ok && k < g->n_jobs; k++) {
        sched_job *j = g->jobs[k];
        ch[k] = (oai_choice){.text = j->result.text,
                             .len = j->result.text_len,
                             .finish_reason = j->result.finish_reason};
        oai_tool_call *calls = NULL;
        int n_calls = 0;
        if (tools_parse_output(r, j->result.text, j->result.text_len, &calls, &n_calls)) {
            ch[k].tool_calls = calls;
            ch[k].n_tool_calls = n_calls;
            ch[k].finish_reason = "tool_calls";
        }
        if (!r->logprobs) continue;
        /* Tokens that start within the final text (a stop string cut the rest);
         * the first piece's leading space is the one the decoder strips. */
        ch[k].logprobs = jobs_logprobs(ctx, j->tokens, 0, j->n_tokens, j->result.text_len + 1,
                                       &texts[k], &ch[k].n_logprobs);
        ok = ch[k].logprobs != NULL;
    }
    char id[64];
    oai_make_id(id, sizeof id, r->kind == OAI_CHAT ? "chatcmpl-" : "cmpl-");
    oai_meta m = {id, (int64_t)time(NULL), ctx->model_name, false};
    oai_usage u;
    oai_timings t;
    jobs_usage(g, &u, &t);
    char *body = NULL;
    if (ok)
        body = r->kind == OAI_CHAT ? oai_chat_response(&m, ch, g->n_jobs, &u, &t)
                                   : oai_completion_response(&m, ch, g->n_jobs, &u, &t);
    if (!body) oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "out of memory");
    for (int k = 0; ch && k < g->n_jobs; k++) {
        free((void *)ch[k].logprobs);
        tools_free_calls((oai_tool_call *)ch[k].tool_calls, ch[k].n_tool_calls);
    }
    for (int k = 0; texts && k < g->n_jobs; k++) free(texts[k]);
    free(ch);
    free(texts);
    return body;
}
