/*
 * generate.c - a generation request's rules, a token at a time (see
 * generate.h): sample → stream text → stop?
 *
 * The loop it serves follows transformers generate(): the first token comes
 * from the prefill's logits, each later one from the forward pass of the
 * token before it; EOS ids are the generation config's.
 */
#include "engine/generate.h"

#include "base/buf.h"
#include "base/clock.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void gen_params_default(gen_params *p, const llava *m) {
    memset(p, 0, sizeof *p);
    p->max_tokens = 256;
    sample_params_from_generation_config(&p->sampling, llava_generation_config(m));
}

static lv_status check_params(const gen_params *p, lv_err *err) {
    if (p->max_tokens < 1)
        return lv_fail(err, LV_ERR_ARG, "max_tokens %d: expected >= 1", p->max_tokens);
    if (p->n_stop < 0 || p->n_stop > GEN_MAX_STOP)
        return lv_fail(err, LV_ERR_ARG, "%d stop strings; at most %d", p->n_stop, GEN_MAX_STOP);
    for (int i = 0; i < p->n_stop; i++)
        if (!p->stop[i] || !p->stop[i][0])
            return lv_fail(err, LV_ERR_ARG, "stop string %d is empty", i);
    if (!p->grammar != !p->vocab)
        return lv_fail(err, LV_ERR_ARG, "a grammar needs the vocabulary's tries, and only then");
    return sample_params_check(&p->sampling, err);
}

/* ---- text and stop strings ------------------------------------------------------ */

static const char *find_bytes(const char *hay, size_t n, const char *needle, size_t m) {
    for (size_t i = 0; m <= n && i <= n - m; i++)
        if (memcmp(hay + i, needle, m) == 0) return hay + i;
    return NULL;
}

/* Sets g->cut at the earliest stop string in the text, if there is one. */
static void find_stop(gen_state *g) {
    size_t max_len = 0;
    for (int i = 0; i < g->p->n_stop; i++) {
        size_t n = strlen(g->p->stop[i]);
        if (n > max_len) max_len = n;
    }
    size_t from = g->scanned > max_len ? g->scanned - max_len + 1 : 0;
    for (int i = 0; i < g->p->n_stop; i++) {
        const char *hit = find_bytes(g->text.data + from, g->text.len - from, g->p->stop[i],
                                     strlen(g->p->stop[i]));
        if (hit && (size_t)(hit - g->text.data) < g->cut) g->cut = hit - g->text.data;
    }
    g->scanned = g->text.len;
}

/* Bytes at the end of the text that begin some stop string (held back). */
static size_t stop_prefix_len(const gen_state *g) {
    size_t hold = 0;
    for (int i = 0; i < g->p->n_stop; i++) {
        size_t n = strlen(g->p->stop[i]);
        for (size_t k = n - 1; k > hold; k--)
            if (k <= g->text.len && memcmp(g->text.data + g->text.len - k, g->p->stop[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return hold;
}

/* Passes the final part of the text to on_text: up to the stop string, or
 * (at_end false) up to what could still begin one. */
static void release_text(gen_state *g, bool at_end) {
    size_t end = g->cut != SIZE_MAX ? g->cut : g->text.len;
    if (g->cut == SIZE_MAX && !at_end) end -= stop_prefix_len(g);
    if (end > g->emitted && g->cb && g->cb->on_text)
        g->cb->on_text(g->cb->ud, g->text.data + g->emitted, end - g->emitted);
    if (end > g->emitted) g->emitted = end;
}

/* Adds the text of id (or, id < 0, what the stream still holds). */
static lv_status add_text(gen_state *g, int32_t id, lv_err *err) {
    char piece[1024];
    int n = id >= 0 ? tok_stream_push(&g->stream, id, piece, sizeof piece)
                    : tok_stream_flush(&g->stream, piece, sizeof piece);
    if (n <= 0) return LV_OK; /* nothing completed, or an id the tokenizer lacks (padding rows) */
    if (lv_buf_append(&g->text, piece, (size_t)n))
        return lv_fail(err, LV_ERR_NOMEM, "out of memory for the generated text");
    if (g->p->n_stop) find_stop(g);
    return LV_OK;
}

/* ---- the state ----------------------------------------------------------------------- */

bool gen_is_eos(const llava *m, int32_t id) {
    const lv_generation_config *gc = llava_generation_config(m);
    const lv_text_config *tc = &llava_config(m)->text;
    int n = gc->has_eos_token_id ? gc->n_eos : tc->n_eos;
    const int *ids = gc->has_eos_token_id ? gc->eos_token_ids : tc->eos_ids;
    for (int i = 0; i < n; i++)
        if (ids[i] == id) return true;
    return false;
}

lv_status gen_state_init(gen_state *g, llava *m, const int32_t *prompt, int n_prompt,
                         const gen_params *p, const gen_callbacks *cb, lv_err *err) {
    memset(g, 0, sizeof *g);
    lv_status st = check_params(p, err);
    if (st) return st;
    g->cap_ids = p->max_tokens < 256 ? p->max_tokens : 256; /* grows: max_tokens may be huge */
    g->ids = malloc((size_t)g->cap_ids * sizeof *g->ids);
    if (!g->ids) return lv_fail(err, LV_ERR_NOMEM, "out of memory for %d tokens", g->cap_ids);
    if ((st = sampler_init(&g->sm, llava_vocab_size(m), &p->sampling, err))) {
        free(g->ids);
        g->ids = NULL;
        return st;
    }
    sampler_reset(&g->sm, prompt, n_prompt);
    g->m = m;
    g->p = p;
    g->cb = cb;
    g->cut = SIZE_MAX;
    g->finish_reason = "length";
    g->next = -1;
    tok_stream_init(&g->stream, llava_tokenizer(m), true);
    if (p->grammar) {
        int vocab = llava_vocab_size(m);
        g->allowed = malloc(((size_t)vocab + 31) / 32 * sizeof *g->allowed);
        g->masked = malloc((size_t)vocab * sizeof *g->masked);
        st = g->allowed && g->masked ? grammar_matcher_new(p->grammar, &g->gm, err)
                                     : lv_fail(err, LV_ERR_NOMEM, "out of memory");
        if (st) {
            gen_state_deinit(g);
            return st;
        }
    }
    return LV_OK;
}

/* The logits with the grammar's mask: only tokens it can take keep theirs,
 * EOS once it is complete. LV_ERR_ARG when nothing may follow (a grammar
 * that cannot go on and is not complete: the vocabulary lacks what it needs). */
static lv_status mask_logits(gen_state *g, const float *logits, lv_err *err) {
    const grammar_vocab *v = structured_vocab_at(g->p->vocab, g->n_ids == 0);
    lv_status st = grammar_matcher_mask(g->gm, v, g->allowed, err);
    if (st) return st;
    bool complete = grammar_matcher_is_complete(g->gm), any = false;
    int n = llava_vocab_size(g->m), nv = grammar_vocab_size(v);
    for (int i = 0; i < n; i++) {
        bool ok =
            (i < nv && (g->allowed[i >> 5] >> (i & 31)) & 1) || (complete && gen_is_eos(g->m, i));
        g->masked[i] = ok ? logits[i] : -INFINITY;
        any |= ok;
    }
    if (!any)
        return lv_fail(err, LV_ERR_ARG,
                       "the grammar allows no token after %d generated (the vocabulary cannot "
                       "spell what it needs next)",
                       g->n_ids);
    return LV_OK;
}

lv_status gen_state_step(gen_state *g, const float *logits, bool ctx_full, lv_err *err) {
    const gen_params *p = g->p;
    if (g->n_ids == g->cap_ids) {
        int cap = g->cap_ids > p->max_tokens / 2 ? p->max_tokens : 2 * g->cap_ids;
        int32_t *grown = realloc(g->ids, (size_t)cap * sizeof *grown);
        if (!grown) return lv_fail(err, LV_ERR_NOMEM, "out of memory for %d tokens", cap);
        g->ids = grown;
        g->cap_ids = cap;
    }
    double t0 = lv_now_ms();
    if (g->gm) {
        lv_status sm = mask_logits(g, logits, err);
        if (sm) return sm;
        logits = g->masked;
    }
    sample_result r;
    int32_t id = sampler_sample(&g->sm, logits, p->logprobs ? &r : NULL);
    /* The mask allowed id, so only a limit or out of memory can refuse it;
     * going on would sample against a state that did not advance. */
    if (g->gm && !gen_is_eos(g->m, id) &&
        !grammar_matcher_accept_token(g->gm, structured_vocab_at(p->vocab, g->n_ids == 0), id)) {
        lv_status ge = grammar_matcher_error(g->gm, err);
        return ge ? ge : lv_fail(err, LV_ERR_NOMEM, "the grammar could not take token %d", id);
    }
    sampler_accept(&g->sm, id);
    int index = g->n_ids;
    g->ids[g->n_ids++] = id;
    if (g->cb && g->cb->on_token)
        g->cb->on_token(g->cb->ud, &(gen_token){index, id, logits, llava_vocab_size(g->m),
                                                p->logprobs ? &r : NULL});
    bool eos = !p->ignore_eos && gen_is_eos(g->m, id);
    lv_status st = eos ? LV_OK : add_text(g, id, err);
    g->timings.sample_ms += lv_now_ms() - t0;
    if (st) return st;
    if (eos || g->cut != SIZE_MAX) {
        g->done = true;
        g->finish_reason = "stop";
        return LV_OK;
    }
    release_text(g, false);
    if (g->n_ids == p->max_tokens || ctx_full) {
        g->done = true;
        g->finish_reason = "length";
        return LV_OK;
    }
    g->next = id;
    return LV_OK;
}

lv_status gen_state_finish(gen_state *g, gen_result *out, lv_err *err) {
    memset(out, 0, sizeof *out);
    lv_status st;
    if (g->cut == SIZE_MAX && (st = add_text(g, -1, err))) return st; /* held UTF-8 bytes */
    if (g->cut != SIZE_MAX) g->finish_reason = "stop";
    release_text(g, true);
    out->text_len = g->cut != SIZE_MAX ? g->cut : g->text.len;
    out->text = malloc(out->text_len + 1);
    if (!out->text) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    if (out->text_len) memcpy(out->text, g->text.data, out->text_len);
    out->text[out->text_len] = '\0';
    out->ids = g->ids;
    out->n_ids = g->n_ids;
    g->ids = NULL;
    g->n_ids = 0;
    out->finish_reason = g->finish_reason;
    out->timings = g->timings;
    return LV_OK;
}

void gen_state_deinit(gen_state *g) {
    grammar_matcher_free(g->gm);
    free(g->allowed);
    free(g->masked);
    sampler_deinit(&g->sm);
    lv_buf_free(&g->text);
    free(g->ids);
    memset(g, 0, sizeof *g);
}

void gen_result_free(gen_result *r) {
    free(r->ids);
    free(r->text);
    memset(r, 0, sizeof *r);
}
