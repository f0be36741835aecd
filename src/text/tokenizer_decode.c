/*
 * tokenizer_decode.c - ids back to text: tok_decode and the streaming
 * decoder tok_stream, both driven by one engine so they cannot disagree.
 *
 * HF's Tokenizer::decode (tokenizers/src/tokenizer/mod.rs) maps ids to
 * token strings (dropping special added tokens when asked), runs the
 * decoder chain over the whole list (each decoder's decode_chain maps a
 * list of strings to a list of strings), and joins the result. Every
 * decoder we accept is causal, so the same chain runs token by token here:
 *
 *   Replace       per token;
 *   ByteFallback  a maximal run of "<0xNN>" tokens becomes its bytes as one
 *                 string when the run is valid UTF-8, else one U+FFFD per
 *                 byte (decoders/byte_fallback.rs) - so a run is held until
 *                 a non-byte token or the end closes it;
 *   Metaspace     replacement -> " ", except in the first token (where HF
 *                 drops it) unless prepend_scheme is never;
 *   Strip         before Fuse: per token; after Fuse: on the whole text,
 *                 i.e. the first `start` and last `stop` characters (trailing
 *                 ones are held until something else follows them);
 *   Fuse          concatenation, which is what the output is anyway;
 *   ByteLevel     every character of a token back to its byte (a token with
 *                 any character outside the table gives its own UTF-8
 *                 bytes), all bytes joined and read as UTF-8 lossily, each
 *                 maximal ill-formed subpart one U+FFFD (String::
 *                 from_utf8_lossy; decoders in huggingface/tokenizers
 *                 tokenizers/src/pre_tokenizers/byte_level.rs). It fuses;
 *                 the bytes of an incomplete character wait in the run
 *                 buffer (at most 3) until it completes or turns invalid.
 * With no decoder at all HF joins the tokens with " ".
 *
 * tok_decode feeds the engine growable buffers; tok_stream feeds it fixed
 * ones inside its struct and the caller's output buffer, copying its state
 * in and out so that a call that does not fit changes nothing.
 */
#include "text/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

#define FFFD              "\xEF\xBF\xBD" /* U+FFFD REPLACEMENT CHARACTER */
#define STREAM_STEP_BYTES 512

/* ===== Buffers ===== */

typedef struct {
    char *p;
    size_t len, cap;
    bool fixed; /* stream buffers: full is failure, not growth */
} sbuf;

static bool sb_put(sbuf *b, const void *s, size_t n) {
    if (n > b->cap - b->len) {
        if (b->fixed) return false;
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return false;
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    return true;
}

/* ===== The engine ===== */

typedef struct {
    const tok *t;
    sbuf out;                     /* decoded text */
    sbuf step[TOK_MAX_DEC_STEPS]; /* output of step k while steps after it run */
    sbuf run;                     /* bytes of the open <0xNN> run */
    bool run_bad;                 /* the open run is invalid: each byte was a U+FFFD */
    bool started;                 /* leading Strip done / (no decoder) a token went out */
    uint32_t n_stripped, n_held;  /* global Strip: chars removed at the start, held at the end */
    uint32_t seen;                /* bit k: step k has passed a token */
    bool failed;                  /* a fixed buffer was full, or out of memory */
} dec_ctx;

static void put(dec_ctx *c, const char *s, size_t n) {
    if (!sb_put(&c->out, s, n)) c->failed = true;
}

static void release_held(dec_ctx *c, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) put(c, c->t->strip_ch, c->t->strip_ch_len);
}

/* After every per-token step: the global Strip, then the output. */
static void post(dec_ctx *c, const char *s, size_t n) {
    const tok *t = c->t;
    if (t->dec_join_space) {
        if (c->started) put(c, " ", 1);
        c->started = true;
        put(c, s, n);
        return;
    }
    if (!t->post_strip) {
        put(c, s, n);
        return;
    }
    const char *ch = t->strip_ch;
    size_t cl = t->strip_ch_len, i = 0;
    while (!c->started && i < n) {
        if (c->n_stripped < t->strip_start && n - i >= cl && memcmp(s + i, ch, cl) == 0)
            c->n_stripped++, i += cl;
        else
            c->started = true;
    }
    if (t->strip_stop == 0) {
        put(c, s + i, n - i);
        return;
    }
    size_t seg = i; /* s[seg..i) is ready to go out */
    while (i < n) {
        if (n - i >= cl && memcmp(s + i, ch, cl) == 0) {
            put(c, s + seg, i - seg);
            c->n_held++;
            i += cl;
            seg = i;
            continue;
        }
        release_held(c, c->n_held); /* something follows them: they were not trailing */
        c->n_held = 0;
        i += utf8_len((uint8_t)s[i]);
    }
    put(c, s + seg, n - seg);
}

static void feed(dec_ctx *c, size_t k, const char *s, size_t n);

/* "<0xNN>" -> NN, as u8::from_str_radix(&token[3..5], 16) reads it. */
static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v[2];
    for (int i = 0; i < 2; i++) {
        char h = s[3 + i];
        v[i] = h >= '0' && h <= '9'   ? h - '0'
               : h >= 'a' && h <= 'f' ? h - 'a' + 10
               : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                      : -1;
    }
    if (s[3] == '+' && v[1] >= 0) return v[1]; /* Rust accepts a leading '+' */
    return v[0] < 0 || v[1] < 0 ? -1 : v[0] * 16 + v[1];
}

/* ByteFallback at step k: a non-byte token (or the end) closes the run. */
static void run_close(dec_ctx *c, size_t k) {
    size_t n = c->run.len;
    c->run.len = 0;
    if (c->run_bad || n == 0) {
        c->run_bad = false;
        return;
    }
    if (utf8_check((const uint8_t *)c->run.p, n, NULL) == n) {
        feed(c, k + 1, c->run.p, n);
        return;
    }
    for (size_t i = 0; i < n; i++) feed(c, k + 1, FFFD, 3);
}

/* Length of an incomplete character at the end of the valid prefix b[0..n). */
static size_t incomplete_tail(const uint8_t *b, size_t n) {
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        uint8_t x = b[n - back];
        if ((x & 0xC0) == 0x80) continue;
        return utf8_len(x) > back ? back : 0;
    }
    return 0;
}

static void run_add(dec_ctx *c, size_t k, uint8_t byte) {
    if (c->run_bad) {
        feed(c, k + 1, FFFD, 3);
        return;
    }
    if (!sb_put(&c->run, &byte, 1)) {
        if (!c->run.fixed) { /* out of memory */
            c->failed = true;
            return;
        }
        /* The stream's run buffer is full and the run is valid so far: let
         * its complete characters out now (the documented divergence). */
        size_t tail = incomplete_tail((const uint8_t *)c->run.p, c->run.len);
        feed(c, k + 1, c->run.p, c->run.len - tail);
        memmove(c->run.p, c->run.p + c->run.len - tail, tail);
        c->run.len = tail;
        sb_put(&c->run, &byte, 1);
    }
    bool truncated;
    size_t ok = utf8_check((const uint8_t *)c->run.p, c->run.len, &truncated);
    if (ok == c->run.len || truncated) return; /* still possibly valid: hold it */
    size_t n = c->run.len; /* invalid for good: decode gives a U+FFFD per byte */
    c->run.len = 0;
    c->run_bad = true;
    for (size_t i = 0; i < n; i++) feed(c, k + 1, FFFD, 3);
}

/* ByteLevel at step k over u[0..len) (the held bytes, then the token's):
 * every complete character passed on, each ill-formed subpart as one
 * U+FFFD, an incomplete tail held in the run buffer (or, when final, one
 * U+FFFD). */
static void bl_bytes(dec_ctx *c, size_t k, const uint8_t *u, size_t len, bool final) {
    size_t i = 0;
    while (i < len && !c->failed) {
        bool trunc;
        size_t ok = utf8_check(u + i, len - i, &trunc);
        if (ok) feed(c, k + 1, (const char *)u + i, ok);
        i += ok;
        if (i == len) break;
        if (trunc && !final) { /* at most 3 bytes: they always fit */
            sb_put(&c->run, u + i, len - i);
            break;
        }
        feed(c, k + 1, FFFD, 3);
        i += trunc ? len - i : utf8_bad_len(u + i, len - i);
    }
}

/* Appends to dst the bytes token s[0..n) stands for: each character's byte,
 * or, when some character has none, the token's own UTF-8 (decode_chain's
 * unwrap_or_else). Returns the bytes written (at most n). */
static size_t bl_token_bytes(const char *s, size_t n, uint8_t *dst) {
    const uint8_t *u = (const uint8_t *)s;
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        size_t cl = utf8_len(u[i]);
        int b = bl_cp_to_byte(utf8_decode(u + i, cl));
        if (b < 0) {
            memcpy(dst, s, n);
            return n;
        }
        dst[m++] = (uint8_t)b;
        i += cl;
    }
    return m;
}

static void byte_level(dec_ctx *c, size_t k, const char *s, size_t n) {
    uint8_t stack[STREAM_STEP_BYTES + 4], *buf = stack;
    if (n > STREAM_STEP_BYTES) {
        if (c->run.fixed) { /* tok_stream: tokens over 512 bytes are not streamed */
            c->failed = true;
            return;
        }
        if (!(buf = malloc(n + 4))) {
            c->failed = true;
            return;
        }
    }
    size_t held = c->run.len; /* at most 3 */
    if (held) memcpy(buf, c->run.p, held);
    c->run.len = 0;
    size_t m = bl_token_bytes(s, n, buf + held);
    bl_bytes(c, k, buf, held + m, false);
    if (buf != stack) free(buf);
}

/* Metaspace decoder on one token at step k; first: the first token to
 * reach this step (HF's i == 0). */
static void metaspace(dec_ctx *c, size_t k, const char *s, size_t n, bool first) {
    const dec_step *d = &c->t->dec[k];
    bool drop = first && d->scheme != PREPEND_NEVER;
    sbuf *b = &c->step[k];
    b->len = 0;
    size_t last = 0;
    for (size_t i = 0; i + d->a_len <= n;) {
        if (memcmp(s + i, d->a, d->a_len) != 0) {
            i += utf8_len((uint8_t)s[i]);
            continue;
        }
        if (!sb_put(b, s + last, i - last) || (!drop && !sb_put(b, " ", 1))) c->failed = true;
        i += d->a_len;
        last = i;
    }
    if (!sb_put(b, s + last, n - last)) c->failed = true;
    if (!c->failed) feed(c, k + 1, b->p, b->len);
}

/* Runs one token string through decoder steps k.. and on to the output. */
static void feed(dec_ctx *c, size_t k, const char *s, size_t n) {
    const tok *t = c->t;
    if (c->failed) return;
    if (k == t->n_dec) {
        post(c, s, n);
        return;
    }
    const dec_step *d = &t->dec[k];
    switch (d->kind) {
        case DEC_REPLACE: {
            sbuf *b = &c->step[k];
            b->len = 0;
            size_t i = 0, last = 0;
            while (i + d->a_len <= n) {
                if (memcmp(s + i, d->a, d->a_len) != 0) {
                    i++;
                    continue;
                }
                if (!sb_put(b, s + last, i - last) || !sb_put(b, d->b, d->b_len)) c->failed = true;
                i += d->a_len;
                last = i;
            }
            if (!sb_put(b, s + last, n - last)) c->failed = true;
            if (!c->failed) feed(c, k + 1, b->p, b->len);
            return;
        }
        case DEC_METASPACE: {
            bool first = !(c->seen & (1u << k));
            c->seen |= 1u << k;
            metaspace(c, k, s, n, first);
            return;
        }
        case DEC_STRIP: {
            size_t a = 0, e = n;
            for (uint32_t i = 0;
                 i < d->start && e - a >= d->a_len && !memcmp(s + a, d->a, d->a_len); i++)
                a += d->a_len;
            for (uint32_t i = 0;
                 i < d->stop && e - a >= d->a_len && !memcmp(s + e - d->a_len, d->a, d->a_len); i++)
                e -= d->a_len;
            feed(c, k + 1, s + a, e - a);
            return;
        }
        case DEC_BYTE_LEVEL:
            byte_level(c, k, s, n);
            return;
        case DEC_BYTE_FALLBACK: {
            int byte = byte_token(s, n);
            if (byte >= 0) {
                run_add(c, k, (uint8_t)byte);
                return;
            }
            run_close(c, k);
            feed(c, k + 1, s, n);
            return;
        }
    }
}

/* End of the ids: close the byte run, let out trailing Strip characters
 * beyond the ones the Strip removes. */
static void finish(dec_ctx *c) {
    for (size_t k = 0; k < c->t->n_dec; k++) {
        if (c->t->dec[k].kind == DEC_BYTE_FALLBACK) run_close(c, k);
        if (c->t->dec[k].kind == DEC_BYTE_LEVEL && c->run.len) {
            uint8_t held[4];
            size_t n = c->run.len;
            memcpy(held, c->run.p, n);
            c->run.len = 0;
            bl_bytes(c, k, held, n, true);
        }
    }
    uint32_t stop = c->t->strip_stop;
    if (c->n_held > stop) release_held(c, c->n_held - stop);
    c->n_held = 0;
}

/* ===== tok_decode ===== */

lv_status tok_decode(const tok *t, const int32_t *ids, size_t n_ids, bool skip_special, char **out,
                     size_t *out_len, lv_err *err) {
    *out = NULL;
    if (out_len) *out_len = 0;
    for (size_t i = 0; i < n_ids; i++)
        if (!tok_str(t, ids[i], NULL))
            return lv_fail(err, LV_ERR_ARG,
                           "id %d (position %zu) is not in the vocabulary (%d ids)", (int)ids[i], i,
                           (int)t->n_ids);
    dec_ctx c = {.t = t};
    for (size_t i = 0; i < n_ids && !c.failed; i++) {
        if (skip_special && tok_is_special(t, ids[i])) continue;
        size_t len = 0;
        const char *s = tok_str(t, ids[i], &len);
        feed(&c, 0, s, len);
    }
    finish(&c);
    put(&c, "", 1); /* NUL */
    for (size_t k = 0; k < TOK_MAX_DEC_STEPS; k++) free(c.step[k].p);
    free(c.run.p);
    if (c.failed) {
        free(c.out.p);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory while decoding %zu ids", n_ids);
    }
    *out = c.out.p;
    if (out_len) *out_len = c.out.len - 1;
    return LV_OK;
}

/* ===== tok_stream ===== */

void tok_stream_init(tok_stream *s, const tok *t, bool skip_special) {
    memset(s, 0, sizeof *s);
    s->t = t;
    s->skip_special = skip_special;
}

/* One push or flush: state copied into an engine over fixed buffers, and
 * copied back only if everything fitted. id < 0 means flush. */
static int stream_step(tok_stream *s, int32_t id, char *out, size_t cap) {
    const tok *t = s->t;
    size_t len = 0;
    const char *str = NULL;
    if (!out || cap == 0) return -1;
    if (id >= 0 && !(str = tok_str(t, id, &len))) return -1;
    if (str && s->skip_special && tok_is_special(t, id)) {
        out[0] = '\0';
        return 0;
    }
    char steps[TOK_MAX_DEC_STEPS][STREAM_STEP_BYTES];
    uint8_t pending[sizeof s->pending];
    memcpy(pending, s->pending, s->n_pending);
    dec_ctx c = {.t = t,
                 .out = {out, 0, cap - 1, true},
                 .run = {(char *)pending, s->n_pending, sizeof pending, true},
                 .run_bad = s->run_bad,
                 .started = s->started,
                 .n_stripped = s->n_stripped,
                 .n_held = s->n_held,
                 .seen = s->seen};
    for (size_t k = 0; k < TOK_MAX_DEC_STEPS; k++)
        c.step[k] = (sbuf){steps[k], 0, STREAM_STEP_BYTES, true};
    if (str)
        feed(&c, 0, str, len);
    else
        finish(&c);
    if (c.failed || c.out.len > INT32_MAX) return -1;
    out[c.out.len] = '\0';
    if (!str) {
        tok_stream_init(s, t, s->skip_special);
        return (int)c.out.len;
    }
    memcpy(s->pending, pending, c.run.len);
    s->n_pending = c.run.len;
    s->run_bad = c.run_bad;
    s->started = c.started;
    s->n_stripped = c.n_stripped;
    s->n_held = c.n_held;
    s->seen = c.seen;
    return (int)c.out.len;
}

int tok_stream_push(tok_stream *s, int32_t id, char *out, size_t cap) {
    if (id < 0) return -1;
    return stream_step(s, id, out, cap);
}

int tok_stream_flush(tok_stream *s, char *out, size_t cap) {
    return stream_step(s, -1, out, cap);
}

int tok_token_bytes(const tok *t, int32_t id, char *out, size_t cap) {
    bool byte_level = false;
    for (size_t k = 0; k < t->n_dec; k++) byte_level |= t->dec[k].kind == DEC_BYTE_LEVEL;
    if (!byte_level || id < 0 || id >= t->n_ids || t->str_off[id] == UINT32_MAX) return -1;
    if (t->flags[id] & TOKF_SPECIAL) return 0;
    size_t n = t->str_len[id];
    if (n > cap) return -1;
    return (int)bl_token_bytes(t->pool + t->str_off[id], n, (uint8_t *)out);
}
