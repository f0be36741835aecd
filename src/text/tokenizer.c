/*
 * tokenizer.c - encoding text to ids, and the small public accessors.
 *
 * tok_encode runs Tokenizer::encode of Hugging Face tokenizers
 * (tokenizers/src/tokenizer/mod.rs, added_vocabulary.rs
 * extract_and_normalize) for a single sequence:
 *
 *   1. split the raw text on added tokens with normalized=false
 *      (added_vocab.c); the tokens become their ids;
 *   2. normalize every other non-empty piece on its own, so a Prepend "▁"
 *      applies to each piece ("[INST] <image>\nWhat" -> "▁[INST]▁", <image>,
 *      "▁\nWhat"); then split it on normalized=true added tokens;
 *   3. pre-tokenize, and BPE each word (bpe.c). Two families:
 *      Metaspace (spaces to "▁", prepend, split before each "▁"), or the
 *      byte-level one (optional Digits, then ByteLevel: GPT-2 regex split,
 *      bytes to printable characters; bytelevel.c);
 *   4. put the template's special tokens around the result
 *      (TemplateProcessing, or tok_set_add_special's override).
 * Empty pieces are dropped at every step, as PreTokenizedString::split does,
 * so "" encodes to the template alone ([<s>]).
 */
#include "text/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

/* ===== UTF-8 and character classes ===== */

size_t utf8_check(const uint8_t *s, size_t n, bool *truncated) {
    if (truncated) *truncated = false;
    size_t i = 0;
    while (i < n) {
        uint64_t w;
        if (i + 8 <= n && (memcpy(&w, s + i, 8), (w & 0x8080808080808080ull) == 0)) {
            i += 8; /* eight ASCII bytes */
            continue;
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF)
            need = 1;
        else if (c == 0xE0)
            need = 2, lo = 0xA0; /* no overlongs */
        else if (c >= 0xE1 && c <= 0xEF)
            need = 2, hi = c == 0xED ? 0x9F : 0xBF; /* no surrogates */
        else if (c == 0xF0)
            need = 3, lo = 0x90;
        else if (c >= 0xF1 && c <= 0xF3)
            need = 3;
        else if (c == 0xF4)
            need = 3, hi = 0x8F; /* nothing past U+10FFFF */
        else
            return i;
        for (size_t k = 1; k <= need; k++) {
            if (i + k >= n) {
                if (truncated) *truncated = true;
                return i;
            }
            uint8_t d = s[i + k];
            if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xBF)) return i;
        }
        i += need + 1;
    }
    return n;
}

bool uni_is_space(uint32_t cp) {
    if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
    if (cp < 0x85) return false;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* Regex \w is Alphabetic, marks, decimal digits, connector punctuation and
 * joiners. Exact for ASCII and Latin-1; beyond that, the punctuation and
 * symbol blocks count as non-word and everything else as word. Only
 * single_word added tokens use it, and Llama/Mistral files have none. */
bool uni_is_word(uint32_t cp) {
    if (cp < 0x80)
        return (cp >= '0' && cp <= '9') || (cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z') ||
               cp == '_';
    if (cp < 0xC0) return cp == 0xAA || cp == 0xB5 || cp == 0xBA;
    if (cp < 0x100) return cp != 0xD7 && cp != 0xF7;
    if (uni_is_space(cp)) return false;
    if (cp >= 0x2000 && cp <= 0x2BFF) /* punctuation, symbols, arrows, math, boxes */
        return cp == 0x200C || cp == 0x200D || cp == 0x203F || cp == 0x2040 || cp == 0x2054 ||
               (cp >= 0x2070 && cp <= 0x209F) || (cp >= 0x2100 && cp <= 0x214F) ||
               (cp >= 0x2160 && cp <= 0x2188);
    if ((cp >= 0x2E00 && cp <= 0x2E7F) || (cp >= 0x3000 && cp <= 0x3004) ||
        (cp >= 0x3008 && cp <= 0x3020) || (cp >= 0xFE10 && cp <= 0xFE1F) ||
        (cp >= 0xFE30 && cp <= 0xFE4F && cp != 0xFE33 && cp != 0xFE34 && cp < 0xFE4D) ||
        (cp >= 0xFF01 && cp <= 0xFF0F) || (cp >= 0xFF1A && cp <= 0xFF20) ||
        (cp >= 0xFF3B && cp <= 0xFF40 && cp != 0xFF3F) || (cp >= 0xFF5B && cp <= 0xFF65) ||
        (cp >= 0x1F000 && cp <= 0x1FAFF))
        return false;
    return true;
}

lv_status idv_push(id_vec *iv, int32_t id) {
    if (iv->n == iv->cap) {
        size_t cap = iv->cap ? iv->cap * 2 : 256;
        int32_t *p = realloc(iv->v, cap * sizeof *p);
        if (!p) return LV_ERR_NOMEM;
        iv->v = p;
        iv->cap = cap;
    }
    iv->v[iv->n++] = id;
    return LV_OK;
}

/* ===== Step 2: normalizers ===== */

/* Appends s with every non-overlapping occurrence of pat (leftmost first)
 * replaced by rep. */
static lv_status replace_all(lv_buf *dst, const char *s, size_t n, const char *pat, size_t pat_len,
                             const char *rep, size_t rep_len) {
    size_t i = 0, last = 0;
    while (n >= pat_len && i <= n - pat_len) {
        const char *p = memchr(s + i, pat[0], n - pat_len - i + 1);
        if (!p) break;
        i = (size_t)(p - s);
        if (memcmp(p, pat, pat_len) != 0) {
            i++;
            continue;
        }
        if (lv_buf_append(dst, s + last, i - last) || lv_buf_append(dst, rep, rep_len))
            return LV_ERR_NOMEM;
        i += pat_len;
        last = i;
    }
    return lv_buf_append(dst, s + last, n - last);
}

lv_status normalize_piece(const tok *t, const char *s, size_t n, lv_buf *b0, lv_buf *b1,
                          const char **out, size_t *out_n) {
    lv_buf *dst = b0;
    for (size_t k = 0; k < t->n_norm; k++) {
        const norm_step *st = &t->norm[k];
        if (n == 0) break; /* Prepend skips empty text; Replace has nothing to do */
        dst->len = 0;
        if (st->kind == NORM_PREPEND) {
            if (lv_buf_append(dst, st->a, st->a_len) || lv_buf_append(dst, s, n))
                return LV_ERR_NOMEM;
        } else if (replace_all(dst, s, n, st->a, st->a_len, st->b, st->b_len) != LV_OK) {
            return LV_ERR_NOMEM;
        }
        s = dst->data;
        n = dst->len;
        dst = dst == b0 ? b1 : b0;
    }
    *out = s;
    *out_n = n;
    return LV_OK;
}

/* ===== Steps 2-3 on one piece ===== */

typedef struct {
    id_vec ids;              /* the result */
    lv_buf nb0, nb1;         /* normalizer output */
    lv_buf mb;               /* Metaspace / ByteLevel output */
    lv_buf pb;               /* ByteLevel: a split with its prefix space */
    added_piece *raw, *norm; /* splits of step 1 and of step 2 */
    size_t n_raw, n_norm, cap_raw, cap_norm;
    bpe_work bw;
} enc_ctx;

static void enc_ctx_free(enc_ctx *c) {
    free(c->ids.v);
    lv_buf_free(&c->nb0);
    lv_buf_free(&c->nb1);
    lv_buf_free(&c->mb);
    lv_buf_free(&c->pb);
    free(c->raw);
    free(c->norm);
    bpe_work_free(&c->bw);
}

/* ByteLevel::pre_tokenize on one split (non-empty), then BPE per piece:
 * the prefix space (per split: see bytelevel.c), the GPT-2 regex pieces,
 * each mapped to its byte-level characters. Without a ByteLevel step (a
 * Digits step alone) the split is one BPE word. */
static lv_status bytelevel_split(const tok *t, enc_ctx *c, const char *s, size_t n, lv_err *err) {
    const bytelevel_cfg *b = &t->bl;
    if (!b->on) return bpe_encode(t, &c->bw, s, n, &c->ids, err);
    if (b->add_prefix_space && s[0] != ' ') {
        c->pb.len = 0;
        if (lv_buf_append(&c->pb, " ", 1) || lv_buf_append(&c->pb, s, n))
            return lv_fail(err, LV_ERR_NOMEM, "out of memory");
        s = c->pb.data;
        n = c->pb.len;
    }
    const uint8_t *u = (const uint8_t *)s;
    for (size_t i = 0; i < n;) {
        size_t e = b->use_regex ? bl_regex_next(u, n, i) : n;
        c->mb.len = 0;
        if (bl_map(&c->mb, s + i, e - i) != LV_OK)
            return lv_fail(err, LV_ERR_NOMEM, "out of memory");
        lv_status st = bpe_encode(t, &c->bw, c->mb.data, c->mb.len, &c->ids, err);
        if (st != LV_OK) return st;
        i = e;
    }
    return LV_OK;
}

/* The byte-level family: Digits (if any) cuts the piece, ByteLevel runs on
 * every split it made. */
static lv_status pretok_bytelevel(const tok *t, enc_ctx *c, const char *s, size_t n, lv_err *err) {
    if (!t->bl.digits) return bytelevel_split(t, c, s, n, err);
    const uint8_t *u = (const uint8_t *)s;
    for (size_t i = 0; i < n;) {
        size_t e = bl_digits_next(u, n, i, t->bl.individual_digits);
        lv_status st = bytelevel_split(t, c, s + i, e - i, err);
        if (st != LV_OK) return st;
        i = e;
    }
    return LV_OK;
}

/* Metaspace::pre_tokenize, then BPE per word. at_start: the piece begins at
 * offset 0 of the original text (prepend_scheme "first"). */
static lv_status pretok_bpe(const tok *t, enc_ctx *c, const char *s, size_t n, bool at_start,
                            lv_err *err) {
    if (t->bl.on || t->bl.digits) return pretok_bytelevel(t, c, s, n, err);
    const metaspace_cfg *m = &t->meta;
    if (!m->on) return bpe_encode(t, &c->bw, s, n, &c->ids, err);
    lv_buf *b = &c->mb;
    b->len = 0;
    bool starts = s[0] == ' ' || (n >= m->repl_len && memcmp(s, m->repl, m->repl_len) == 0);
    bool prepend = m->scheme == PREPEND_ALWAYS || (m->scheme == PREPEND_FIRST && at_start);
    if ((prepend && !starts && lv_buf_append(b, m->repl, m->repl_len)) ||
        replace_all(b, s, n, " ", 1, m->repl, m->repl_len))
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    if (!m->split) return bpe_encode(t, &c->bw, b->data, b->len, &c->ids, err);
    /* MergedWithNext: a word starts at every replacement character. */
    size_t start = 0;
    for (size_t i = 1; i + m->repl_len <= b->len; i++) {
        if (memcmp(b->data + i, m->repl, m->repl_len) != 0) continue;
        lv_status st = bpe_encode(t, &c->bw, b->data + start, i - start, &c->ids, err);
        if (st != LV_OK) return st;
        start = i;
    }
    return bpe_encode(t, &c->bw, b->data + start, b->len - start, &c->ids, err);
}

/* A piece of raw text between added tokens. at_start as above; for pieces
 * cut again by normalized added tokens, only the first keeps it (offsets
 * through a normalizer are not tracked; real Metaspace files have none). */
static lv_status encode_piece(const tok *t, enc_ctx *c, const char *s, size_t n, bool at_start,
                              lv_err *err) {
    const char *ns;
    size_t nn;
    if (normalize_piece(t, s, n, &c->nb0, &c->nb1, &ns, &nn) != LV_OK)
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    if (nn == 0) return LV_OK;
    if (t->norm_set.n == 0) return pretok_bpe(t, c, ns, nn, at_start, err);
    if (added_split(t, &t->norm_set, ns, nn, &c->norm, &c->n_norm, &c->cap_norm) != LV_OK)
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < c->n_norm; i++) {
        const added_piece *p = &c->norm[i];
        lv_status st = LV_OK;
        if (p->id >= 0)
            st = idv_push(&c->ids, p->id) ? lv_fail(err, LV_ERR_NOMEM, "out of memory") : LV_OK;
        else if (p->end > p->start)
            st = pretok_bpe(t, c, ns + p->start, p->end - p->start, at_start && p->start == 0, err);
        if (st != LV_OK) return st;
    }
    return LV_OK;
}

lv_status tok_encode(const tok *t, const char *text, size_t len, bool add_special, int32_t **ids,
                     size_t *n_ids, lv_err *err) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && len) return lv_fail(err, LV_ERR_ARG, "tok_encode: NULL text");
    bool trunc;
    size_t bad = utf8_check((const uint8_t *)text, len, &trunc);
    if (bad != len)
        return lv_fail(err, LV_ERR_ARG, "text is not valid UTF-8: %s at byte %zu of %zu",
                       trunc ? "truncated character" : "invalid byte", bad, len);
    enc_ctx c = {0};
    lv_status st = LV_OK;
    for (size_t i = 0; add_special && i < t->n_tpl_pre && st == LV_OK; i++)
        st = idv_push(&c.ids, t->tpl_pre[i]);
    if (st == LV_OK) st = added_split(t, &t->raw_set, text, len, &c.raw, &c.n_raw, &c.cap_raw);
    if (st != LV_OK) {
        st = lv_fail(err, LV_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < c.n_raw; i++) {
        const added_piece *p = &c.raw[i];
        if (p->id >= 0)
            st = idv_push(&c.ids, p->id) ? lv_fail(err, LV_ERR_NOMEM, "out of memory") : LV_OK;
        else if (p->end > p->start)
            st = encode_piece(t, &c, text + p->start, p->end - p->start, p->start == 0, err);
        if (st != LV_OK) goto fail;
    }
    for (size_t i = 0; add_special && i < t->n_tpl_post && st == LV_OK; i++)
        st = idv_push(&c.ids, t->tpl_post[i]);
    if (st == LV_OK && c.ids.n == 0 && (st = idv_push(&c.ids, -1)) == LV_OK)
        c.ids.n = 0; /* an empty result is still a heap array, never NULL */
    if (st != LV_OK) {
        st = lv_fail(err, LV_ERR_NOMEM, "out of memory");
        goto fail;
    }
    *ids = c.ids.v;
    *n_ids = c.ids.n;
    c.ids.v = NULL;
    enc_ctx_free(&c);
    return LV_OK;
fail:
    enc_ctx_free(&c);
    return st;
}

/* ===== Accessors ===== */

void tok_set_add_special(tok *t, bool add_bos, bool add_eos) {
    t->n_tpl_pre = 0;
    t->n_tpl_post = 0;
    if (add_bos && t->bos_id >= 0) t->tpl_pre[t->n_tpl_pre++] = t->bos_id;
    if (add_eos && t->eos_id >= 0) t->tpl_post[t->n_tpl_post++] = t->eos_id;
}

int32_t tok_vocab_size(const tok *t) {
    return t->n_ids;
}

int32_t tok_bos_id(const tok *t) {
    return t->bos_id;
}

int32_t tok_eos_id(const tok *t) {
    return t->eos_id;
}

int32_t tok_token_to_id(const tok *t, const char *piece) {
    size_t n = strlen(piece);
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == n && memcmp(t->added[i].content, piece, n) == 0)
            return t->added[i].id;
    return str_map_get(t, &t->vocab, piece, n);
}

const char *tok_id_to_token(const tok *t, int32_t id) {
    return tok_str(t, id, NULL);
}

bool tok_is_special(const tok *t, int32_t id) {
    return id >= 0 && id < t->n_ids && (t->flags[id] & TOKF_SPECIAL);
}
