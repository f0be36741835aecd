/*
 * structured.c - a tokenizer's vocabulary as grammar tries (structured.h).
 */
#include "engine/structured.h"

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
    tok_stream s;
    tok_stream_init(&s, t, true);
    char skip[256];
    if (before >= 0 && tok_stream_push(&s, before, skip, sizeof skip) < 0) return -1;
    int n = tok_stream_push(&s, id, out, cap);
    if (n < 0) return -1;
    int m = tok_stream_flush(&s, out + n, cap - (size_t)n);
    return m < 0 ? -1 : n + m;
}

lv_status structured_vocab_new(const tok *t, structured_vocab **out, lv_err *err) {
    *out = NULL;
    int n = tok_vocab_size(t);
    int32_t plain = plain_token(t);
    char *buf = malloc((size_t)n * 2 * 512);
    const char **mid = calloc((size_t)n, sizeof *mid), **first = calloc((size_t)n, sizeof *first);
    size_t *mid_len = calloc((size_t)n, sizeof *mid_len),
           *first_len = calloc((size_t)n, sizeof *first_len);
    structured_vocab *v = calloc(1, sizeof *v);
    lv_status st = buf && mid && first && mid_len && first_len && v
                       ? LV_OK
                       : lv_fail(err, LV_ERR_NOMEM, "out of memory for the vocabulary's tries");
    for (int i = 0; !st && i < n; i++) {
        char *a = buf + (size_t)i * 1024, *b = a + 512;
        int la = token_text(t, plain, i, a, 512), lb = token_text(t, -1, i, b, 512);
        mid[i] = a, first[i] = b;
        mid_len[i] = la > 0 ? (size_t)la : 0; /* too long to stream: never allowed */
        first_len[i] = lb > 0 ? (size_t)lb : 0;
    }
    if (!st) st = grammar_vocab_new(mid, mid_len, n, &v->mid, err);
    if (!st) st = grammar_vocab_new(first, first_len, n, &v->first, err);
    free(buf), free(mid), free(first), free(mid_len), free(first_len);
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
