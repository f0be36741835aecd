/*
 * generate.c - a generation request (see generate.h).
 *
 *   encode_images   every image → rows, concatenated in prompt order
 *   llava_prefill   the prompt with the rows in place of the <image> ids
 *   decode_loop     sample → stream text → stop? → decode the token
 *
 * The loop follows transformers generate(): the first token comes from the
 * prefill's logits, each later one from the forward pass of the token
 * before it; EOS ids are the generation config's.
 */
#include "engine/generate.h"

#include "base/buf.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void gen_params_default(gen_params *p, const llava *m) {
    memset(p, 0, sizeof *p);
    p->max_tokens = 256;
    sample_params_from_generation_config(&p->sampling, &m->md.generation_config);
}

static lv_status check_params(const gen_params *p, lv_err *err) {
    if (p->max_tokens < 1)
        return lv_fail(err, LV_ERR_ARG, "max_tokens %d: expected >= 1", p->max_tokens);
    if (p->n_stop < 0 || p->n_stop > GEN_MAX_STOP)
        return lv_fail(err, LV_ERR_ARG, "%d stop strings; at most %d", p->n_stop, GEN_MAX_STOP);
    for (int i = 0; i < p->n_stop; i++)
        if (!p->stop[i] || !p->stop[i][0])
            return lv_fail(err, LV_ERR_ARG, "stop string %d is empty", i);
    return sample_params_check(&p->sampling, err);
}

/* ---- images ------------------------------------------------------------------ */

/* All images' rows, concatenated in order, into *rows (heap) / *n_rows. */
static lv_status encode_images(llava *m, const img_tensor *images, int n_images, float **rows,
                               int *n_rows, gen_timings *t, lv_err *err) {
    size_t dim = (size_t)m->text.dim, total = 0;
    *rows = NULL;
    *n_rows = 0;
    for (int i = 0; i < n_images; i++) {
        llava_image im;
        lv_status st = llava_encode_image(m, &images[i], false, &im, err);
        if (st) {
            lv_err_prefix(err, "image %d", i + 1);
            return st;
        }
        float *grown = realloc(*rows, (total + im.n_tokens) * dim * sizeof *grown);
        if (!grown) {
            llava_image_free(&im);
            return lv_fail(err, LV_ERR_NOMEM, "out of memory for image features");
        }
        *rows = grown;
        memcpy(*rows + total * dim, im.rows, (size_t)im.n_tokens * dim * sizeof *grown);
        total += (size_t)im.n_tokens;
        t->vision_ms += im.ms;
        t->n_tiles += im.n_tiles;
        llava_image_free(&im);
    }
    t->n_images = n_images;
    *n_rows = (int)total;
    return LV_OK;
}

/* ---- text and stop strings ------------------------------------------------------ */

typedef struct {
    const gen_params *p;
    const gen_callbacks *cb;
    tok_stream stream;
    lv_buf text;    /* everything decoded so far */
    size_t emitted; /* bytes of text passed to on_text */
    size_t cut;     /* text length once a stop string is found; SIZE_MAX while none is */
    size_t scanned; /* text before this offset holds no complete stop string */
} text_state;

static const char *find_bytes(const char *hay, size_t n, const char *needle, size_t m) {
    for (size_t i = 0; m <= n && i <= n - m; i++)
        if (memcmp(hay + i, needle, m) == 0) return hay + i;
    return NULL;
}

/* Sets ts->cut at the earliest stop string in the text, if there is one. */
static void find_stop(text_state *ts) {
    size_t max_len = 0;
    for (int i = 0; i < ts->p->n_stop; i++) {
        size_t n = strlen(ts->p->stop[i]);
        if (n > max_len) max_len = n;
    }
    size_t from = ts->scanned > max_len ? ts->scanned - max_len + 1 : 0;
    for (int i = 0; i < ts->p->n_stop; i++) {
        const char *hit = find_bytes(ts->text.data + from, ts->text.len - from, ts->p->stop[i],
                                     strlen(ts->p->stop[i]));
        if (hit && (size_t)(hit - ts->text.data) < ts->cut) ts->cut = hit - ts->text.data;
    }
    ts->scanned = ts->text.len;
}

/* Bytes at the end of the text that begin some stop string (held back). */
static size_t stop_prefix_len(const text_state *ts) {
    size_t hold = 0;
    for (int i = 0; i < ts->p->n_stop; i++) {
        size_t n = strlen(ts->p->stop[i]);
        for (size_t k = n - 1; k > hold; k--)
            if (k <= ts->text.len &&
                memcmp(ts->text.data + ts->text.len - k, ts->p->stop[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return hold;
}

/* Passes the final part of the text to on_text: up to the stop string, or
 * (at_end false) up to what could still begin one. */
static void release_text(text_state *ts, bool at_end) {
    size_t end = ts->cut != SIZE_MAX ? ts->cut : ts->text.len;
    if (ts->cut == SIZE_MAX && !at_end) end -= stop_prefix_len(ts);
    if (end > ts->emitted && ts->cb && ts->cb->on_text)
        ts->cb->on_text(ts->cb->ud, ts->text.data + ts->emitted, end - ts->emitted);
    if (end > ts->emitted) ts->emitted = end;
}

/* Adds the text of id (or, id < 0, what the stream still holds). */
static lv_status add_text(text_state *ts, int32_t id, lv_err *err) {
    char piece[1024];
    int n = id >= 0 ? tok_stream_push(&ts->stream, id, piece, sizeof piece)
                    : tok_stream_flush(&ts->stream, piece, sizeof piece);
    if (n <= 0) return LV_OK; /* nothing completed, or an id the tokenizer lacks (padding rows) */
    if (lv_buf_append(&ts->text, piece, (size_t)n))
        return lv_fail(err, LV_ERR_NOMEM, "out of memory for the generated text");
    if (ts->p->n_stop) find_stop(ts);
    return LV_OK;
}

/* ---- the loop ------------------------------------------------------------------------ */

static bool is_eos(const llava *m, int32_t id) {
    const lv_generation_config *gc = &m->md.generation_config;
    const lv_text_config *tc = &m->md.config.text;
    int n = gc->has_eos_token_id ? gc->n_eos : tc->n_eos;
    const int *ids = gc->has_eos_token_id ? gc->eos_token_ids : tc->eos_ids;
    for (int i = 0; i < n; i++)
        if (ids[i] == id) return true;
    return false;
}

static bool cancelled(const text_state *ts) {
    return ts->cb && ts->cb->cancelled && ts->cb->cancelled(ts->cb->ud);
}

static lv_status decode_loop(llava *m, llm_seq *s, sampler *sm, float *logits, text_state *ts,
                             gen_result *out, lv_err *err) {
    const gen_params *p = ts->p;
    out->finish_reason = "length";
    for (int i = 0; i < p->max_tokens; i++) {
        double t0 = now_ms();
        sample_result r;
        int32_t id = sampler_sample(sm, logits, &r);
        sampler_accept(sm, id);
        out->ids[out->n_ids++] = id;
        if (ts->cb && ts->cb->on_token)
            ts->cb->on_token(ts->cb->ud, &(gen_token){i, id, logits, m->text.vocab_size, &r});
        bool eos = !p->ignore_eos && is_eos(m, id);
        lv_status st = eos ? LV_OK : add_text(ts, id, err);
        if (st) return st;
        out->timings.sample_ms += now_ms() - t0;
        if (eos || ts->cut != SIZE_MAX) {
            out->finish_reason = "stop";
            return LV_OK;
        }
        release_text(ts, false);
        if (i + 1 == p->max_tokens || s->pos >= s->ctx) return LV_OK;
        if (cancelled(ts))
            return lv_fail(err, LV_ERR_CANCELLED, "cancelled after %d tokens", i + 1);
        double t1 = now_ms();
        if ((st = llava_decode(m, s, id, logits, err))) return st;
        out->timings.decode_ms += now_ms() - t1;
        out->timings.n_decode++;
    }
    return LV_OK;
}

/* Prefill and decode with the images' rows ready. */
static lv_status run_sequence(llava *m, const int32_t *prompt, int n_prompt, const float *rows,
                              int n_rows, bool have_images, text_state *ts, gen_result *out,
                              lv_err *err) {
    const gen_params *p = ts->p;
    int max_ctx = m->text.max_ctx;
    if (n_prompt > max_ctx)
        return lv_fail(err, LV_ERR_ARG,
                       "the prompt is %d tokens long; the model's context is %d tokens", n_prompt,
                       max_ctx);
    int ctx = (long)n_prompt + p->max_tokens < max_ctx ? n_prompt + p->max_tokens : max_ctx;
    llm_seq s;
    sampler sm;
    float *logits = malloc((size_t)m->text.vocab_size * sizeof *logits);
    out->ids = malloc((size_t)p->max_tokens * sizeof *out->ids);
    lv_status st = logits && out->ids ? LV_OK : lv_fail(err, LV_ERR_NOMEM, "out of memory");
    memset(&s, 0, sizeof s);
    memset(&sm, 0, sizeof sm);
    if (st || (st = llm_seq_init(&m->text, ctx, LLAVA_BATCH, &s, err)) ||
        (st = sampler_init(&sm, m->text.vocab_size, &p->sampling, err)))
        goto done;
    sampler_reset(&sm, prompt, n_prompt);
    if (cancelled(ts)) {
        st = lv_fail(err, LV_ERR_CANCELLED, "cancelled before prefill");
        goto done;
    }
    double t0 = now_ms();
    st = llava_prefill(m, &s, prompt, n_prompt, have_images ? rows : NULL, n_rows, logits, err);
    out->timings.prefill_ms = now_ms() - t0;
    out->timings.n_prefill = n_prompt;
    if (!st) st = decode_loop(m, &s, &sm, logits, ts, out, err);
done:
    sampler_deinit(&sm);
    llm_seq_deinit(&s);
    free(logits);
    return st;
}

lv_status gen_run(llava *m, const int32_t *prompt, int n_prompt, const img_tensor *images,
                  int n_images, const gen_params *p, const gen_callbacks *cb, gen_result *out,
                  lv_err *err) {
    memset(out, 0, sizeof *out);
    if (!m->loaded) return lv_fail(err, LV_ERR_ARG, "the model's weights are not loaded");
    lv_status st = check_params(p, err);
    if (st) return st;
    text_state ts = {.p = p, .cb = cb, .cut = SIZE_MAX};
    tok_stream_init(&ts.stream, m->tok, true);
    float *rows = NULL;
    int n_rows = 0;
    if ((st = encode_images(m, images, n_images, &rows, &n_rows, &out->timings, err))) goto done;
    st = run_sequence(m, prompt, n_prompt, rows, n_rows, n_images > 0, &ts, out, err);
    if (st) goto done;
    if (ts.cut == SIZE_MAX && (st = add_text(&ts, -1, err))) goto done; /* held UTF-8 bytes */
    if (ts.cut != SIZE_MAX) out->finish_reason = "stop";
    release_text(&ts, true);
    out->text_len = ts.cut != SIZE_MAX ? ts.cut : ts.text.len;
    out->text = malloc(out->text_len + 1);
    if (!out->text) {
        st = lv_fail(err, LV_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (out->text_len) memcpy(out->text, ts.text.data, out->text_len);
    out->text[out->text_len] = '\0';
done:
    free(rows);
    lv_buf_free(&ts.text);
    if (st) gen_result_free(out);
    return st;
}

void gen_result_free(gen_result *r) {
    free(r->ids);
    free(r->text);
    memset(r, 0, sizeof *r);
}
