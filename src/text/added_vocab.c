/*
 * added_vocab.c - step 1 of encoding: cutting the text on added tokens
 * (<s>, </s>, <image>, ...) before anything else sees it.
 *
 * Mirrors AddedVocabulary::find_matches (tokenizers/src/tokenizer/
 * added_vocabulary.rs). HF builds an Aho-Corasick automaton with
 * MatchKind::LeftmostLongest and walks its non-overlapping matches; with the
 * handful of added tokens a checkpoint has, a first-byte bucket of
 * candidates sorted longest-first gives the same matches: at the leftmost
 * position where any token matches, the longest one wins, and the search
 * resumes after it. For each match, as HF does:
 *   - single_word: dropped when a word character (regex \w) touches it on
 *     either side; the search still resumes after it;
 *   - lstrip: the match grows left over whitespace (regex \s), but not into
 *     what the previous match already took;
 *   - rstrip: the match grows right over whitespace (the search still
 *     resumes at the end of the token itself).
 * Tokens with normalized=false are matched on the raw text; tokens with
 * normalized=true are matched, by their normalized form, on each normalized
 * piece (tokenizer.c runs both passes).
 */
#include "text/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t first; /* first byte of the pattern */
    size_t len;    /* pattern bytes */
    uint32_t idx;  /* index into tok.added (file order breaks ties) */
} cand;

static int cand_cmp(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1; /* longest first */
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

lv_status added_set_build(const tok *t, added_set *set, bool normalized) {
    memset(set, 0, sizeof *set);
    size_t n = 0;
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].normalized == normalized && t->added[i].pat_len > 0) n++;
    if (n == 0) return LV_OK;
    cand *c = malloc(n * sizeof *c);
    set->order = malloc(n * sizeof *set->order);
    if (!c || !set->order) {
        free(c);
        added_set_free(set);
        return LV_ERR_NOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < t->n_added; i++) {
        const added_tok *a = &t->added[i];
        if (a->normalized != normalized || a->pat_len == 0) continue;
        c[k++] = (cand){(uint8_t)a->pattern[0], a->pat_len, (uint32_t)i};
    }
    qsort(c, n, sizeof *c, cand_cmp);
    size_t j = 0;
    for (unsigned b = 0; b < 256; b++) {
        set->first[b] = (uint32_t)j;
        while (j < n && c[j].first == b) set->order[j] = c[j].idx, j++;
    }
    set->first[256] = (uint32_t)n;
    set->n = n;
    free(c);
    return LV_OK;
}

void added_set_free(added_set *set) {
    free(set->order);
    memset(set, 0, sizeof *set);
}

/* ===== Character classes around a match ===== */

/* Code point of the character that ends at s[end] (end > 0). */
static uint32_t char_before(const uint8_t *s, size_t end, size_t *start) {
    size_t i = end - 1;
    while (i > 0 && (s[i] & 0xC0) == 0x80) i--;
    if (start) *start = i;
    return utf8_decode(s + i, utf8_len(s[i]));
}

static bool ends_with_word(const uint8_t *s, size_t end) {
    return end > 0 && uni_is_word(char_before(s, end, NULL));
}

static bool starts_with_word(const uint8_t *s, size_t at, size_t len) {
    return at < len && uni_is_word(utf8_decode(s + at, utf8_len(s[at])));
}

/* Start of the whitespace run that ends at end (regex \s*$ on s[..end]). */
static size_t space_start_before(const uint8_t *s, size_t end) {
    while (end > 0) {
        size_t start;
        if (!uni_is_space(char_before(s, end, &start))) break;
        end = start;
    }
    return end;
}

/* End of the whitespace run that starts at at (regex ^\s* on s[at..]). */
static size_t space_end_after(const uint8_t *s, size_t at, size_t len) {
    while (at < len) {
        size_t cl = utf8_len(s[at]);
        if (!uni_is_space(utf8_decode(s + at, cl))) break;
        at += cl;
    }
    return at;
}

/* ===== Splitting ===== */

/* The longest token of set that matches at s[at..]; -1 if none. */
static int64_t match_at(const tok *t, const added_set *set, const uint8_t *s, size_t at,
                        size_t len) {
    uint8_t b = s[at];
    for (uint32_t k = set->first[b]; k < set->first[b + 1]; k++) {
        const added_tok *a = &t->added[set->order[k]];
        if (a->pat_len <= len - at && memcmp(s + at, a->pattern, a->pat_len) == 0)
            return set->order[k];
    }
    return -1;
}

static lv_status piece_push(added_piece **pieces, size_t *n, size_t *cap, size_t start, size_t end,
                            int32_t id) {
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        added_piece *p = realloc(*pieces, nc * sizeof *p);
        if (!p) return LV_ERR_NOMEM;
        *pieces = p;
        *cap = nc;
    }
    (*pieces)[(*n)++] = (added_piece){start, end, id};
    return LV_OK;
}

lv_status added_split(const tok *t, const added_set *set, const char *text, size_t len,
                      added_piece **pieces, size_t *n_pieces, size_t *cap) {
    const uint8_t *s = (const uint8_t *)text;
    size_t done = 0; /* end of the previous match (HF's start_offset) */
    *n_pieces = 0;
    for (size_t at = 0; set->n > 0 && at < len;) {
        if (set->first[s[at] + 1] == set->first[s[at]]) { /* no token starts with this byte */
            at++;
            continue;
        }
        int64_t k = match_at(t, set, s, at, len);
        if (k < 0) {
            at++;
            continue;
        }
        const added_tok *a = &t->added[k];
        size_t start = at, stop = at + a->pat_len;
        at = stop; /* the automaton resumes after the token, whatever happens to it */
        if (a->single_word && (ends_with_word(s, start) || starts_with_word(s, stop, len)))
            continue;
        if (a->lstrip) {
            size_t ns = space_start_before(s, start);
            start = ns > done ? ns : done;
        }
        if (a->rstrip) stop = space_end_after(s, stop, len);
        if (done < start && piece_push(pieces, n_pieces, cap, done, start, -1) != LV_OK)
            return LV_ERR_NOMEM;
        if (piece_push(pieces, n_pieces, cap, start, stop, a->id) != LV_OK) return LV_ERR_NOMEM;
        done = stop;
    }
    if (done < len && piece_push(pieces, n_pieces, cap, done, len, -1) != LV_OK)
        return LV_ERR_NOMEM;
    return LV_OK;
}
