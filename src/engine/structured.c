/*
 * structured.c - a tokenizer's vocabulary as grammar tries (structured.h).
 */
#include "engine/structured.h"

#include "base/buf.h"

#include <stdlib.h>
#include <string.h>

struct structured_vocab {
    grammar_vocab *mid, *first;
};

/* "<0xNN>": the byte NN; -1 for any other piece. */
static int byte_piece(const char *p) {
    if (!p || strlen(p) != 6 || strncmp(p, "<0x", 3) || p[5] != '>') return -1;
    char *end;
    long v = strtol(p + 3, &end, 16);
    return end == p + 5 ? (int)v : -1;
}

/* A token whose text is plain and never stripped: what "after another token" follows. */
static int32_t plain_token(const tok *t) {
    static const char *const tries[] = {"a", "x", "the", "A"};
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        int32_t id = tok_token_to_id(t, tries[i]);
        if (id >= 0 && !tok_is_special(t, id)) return id;
    }
    return -1;
}

/* The bytes id adds to the text: first, or after `before` (-1: first). */
static int token_text(const tok *t, int32_t before, int32_t id, char *out, size_t cap) {
    int b = byte_piece(tok_id_to_token(t, id));
    if (b >= 0) {
        out[0] = (char)b;
        return 1;
    }
    if (tok_is_special(t, id)) return 0;
    /* byte-level vocabularies: a token's bytes, whatever came before, even
     * when they end inside a character (the stream would hold them back) */
    int nb = tok_token_bytes(t, id, out, cap);
    if (nb >= 0) return nb;
    tok_stream s;
    tok_stream_init(&s, t, true);
    char skip[256];
    if (before >= 0 && tok_stream_push(&s, before, skip, sizeof skip) < 0) return -1;
    int n = tok_stream_push(&s, id, out, cap);
    if (n < 0) return -1;
    int m = tok_stream_flush(&s, out + n, cap - (size_t)n);
    return m < 0 ? -1 : n + m;
}

/* The trie of every token's text after `before` (-1: as the first token).
 * The texts are packed in one buffer (a token's is at most 512 bytes; a
 * longer one, which cannot be streamed, is never allowed: length 0). */
static lv_status build_trie(const tok *t, int32_t before, grammar_vocab **out, lv_err *err) {
    int n = tok_vocab_size(t);
    lv_buf text = {0};
    size_t *off = malloc((size_t)n * sizeof *off), *len = malloc((size_t)n * sizeof *len);
    const char **ptr = malloc((size_t)n * sizeof *ptr);
    lv_status st = off && len && ptr ? LV_OK : LV_ERR_NOMEM;
    for (int i = 0; !st && i < n; i++) {
        char piece[512];
        int k = token_text(t, before, i, piece, sizeof piece);
        off[i] = text.len;
        len[i] = k > 0 ? (size_t)k : 0;
        if (len[i]) st = lv_buf_append(&text, piece, len[i]);
    }
    for (int i = 0; !st && i < n; i++) ptr[i] = text.data ? text.data + off[i] : "";
    if (st)
        st = lv_fail(err, LV_ERR_NOMEM, "out of memory for the vocabulary's tries");
    else
        st = grammar_vocab_new(ptr, len, n, out, err);
    lv_buf_free(&text);
    free(off), free(len), free(ptr);
    return st;
}

lv_status structured_vocab_new(const tok *t, structured_vocab **out, lv_err *err) {
    *out = NULL;
    structured_vocab *v = calloc(1, sizeof *v);
    if (!v) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    lv_status st = build_trie(t, plain_token(t), &v->mid, err);
    if (!st) st = build_trie(t, -1, &v->first, err);
    if (st) {
        structured_vocab_free(v);
        return st;
    }
    *out = v;
    return LV_OK;
}

void structured_vocab_free(structured_vocab *v) {
    if (!v) return;
    grammar_vocab_free(v->mid);
    grammar_vocab_free(v->first);
    free(v);
}

const grammar_vocab *structured_vocab_at(const structured_vocab *v, bool at_start) {
    return at_start ? v->first : v->mid;
}
