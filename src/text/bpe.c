/*
 * bpe.c - the BPE model: vocabulary and merge hash maps, and the merge loop
 * that turns one word into token ids.
 *
 * It reproduces Hugging Face tokenizers' BPE::merge_word and
 * Word::merge_all (tokenizers/src/models/bpe/model.rs and word.rs) step for
 * step, because the ids must be identical, not merely equally good:
 *
 *   1. Symbols: each character of the word looked up in the vocabulary. A
 *      character that is not there becomes one "<0xNN>" symbol per UTF-8
 *      byte (byte_fallback, all bytes must exist), else the unk token
 *      (consecutive unks fused into one with fuse_unk). Quirk kept from HF:
 *      a pending unk is not flushed before byte-fallback symbols, so it lands
 *      after them.
 *   2. Merges: a min-heap of (rank, position) holding every adjacent pair
 *      that has a merge. Pop the lowest rank (then the lowest position);
 *      skip it when the left symbol was merged away, has no right
 *      neighbour, or when the merge of the pair now at that position does
 *      not produce the popped entry's new id (HF's exact staleness test,
 *      which compares new ids, not pairs). Otherwise merge and push the new
 *      pairs with the left and right neighbours.
 *
 * Without a pre-tokenizer (Mistral/Llama-2 files) a whole paragraph is one
 * word, so everything here is O(n log n) in the word length: no rescans.
 */
#include "text/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

/* ===== Hash maps =====
 * Linear probing; capacity is a power of two at least twice the number of
 * keys, so probes stay short and a lookup of a missing key ends quickly. */

static uint32_t cap_for(size_t n_keys) {
    uint32_t cap = 16;
    while (cap < 2 * n_keys) cap <<= 1;
    return cap;
}

static uint64_t hash_str(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, then a final mix of the high bits */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 32);
}

static uint32_t hash_pair(uint64_t key) {
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32);
}

lv_status str_map_init(str_map *m, size_t n_keys) {
    uint32_t cap = cap_for(n_keys);
    m->slots = malloc(cap * sizeof *m->slots);
    if (!m->slots) return LV_ERR_NOMEM;
    memset(m->slots, 0xFF, cap * sizeof *m->slots); /* all -1 */
    m->mask = cap - 1;
    return LV_OK;
}

void str_map_free(str_map *m) {
    free(m->slots);
    m->slots = NULL;
}

int32_t str_map_put(const tok *t, str_map *m, int32_t id) {
    size_t len = 0;
    const char *s = tok_str(t, id, &len);
    uint32_t i = (uint32_t)hash_str(s, len) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        int32_t cur = m->slots[i];
        if (cur < 0) {
            m->slots[i] = id;
            return -1;
        }
        if (t->str_len[cur] == len && memcmp(t->pool + t->str_off[cur], s, len) == 0) return cur;
    }
}

int32_t str_map_get(const tok *t, const str_map *m, const char *s, size_t len) {
    uint32_t i = (uint32_t)hash_str(s, len) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        int32_t cur = m->slots[i];
        if (cur < 0) return -1;
        if (t->str_len[cur] == len && memcmp(t->pool + t->str_off[cur], s, len) == 0) return cur;
    }
}

lv_status pair_map_init(pair_map *m, size_t n_keys) {
    uint32_t cap = cap_for(n_keys);
    m->slots = malloc(cap * sizeof *m->slots);
    if (!m->slots) return LV_ERR_NOMEM;
    for (uint32_t i = 0; i < cap; i++) m->slots[i].key = PAIR_EMPTY;
    m->mask = cap - 1;
    return LV_OK;
}

void pair_map_free(pair_map *m) {
    free(m->slots);
    m->slots = NULL;
}

void pair_map_put(pair_map *m, int32_t a, int32_t b, uint32_t rank, int32_t new_id) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint32_t i = hash_pair(key) & m->mask;
    while (m->slots[i].key != PAIR_EMPTY && m->slots[i].key != key) i = (i + 1) & m->mask;
    m->slots[i].key = key;
    m->slots[i].rank = rank;
    m->slots[i].new_id = new_id;
}

const pair_slot *pair_map_get(const pair_map *m, int32_t a, int32_t b) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint32_t i = hash_pair(key) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        const pair_slot *s = &m->slots[i];
        if (s->key == key) return s;
        if (s->key == PAIR_EMPTY) return NULL;
    }
}

/* ===== Symbols =====
 * A word is a doubly linked list over an array, as in word.rs: merging
 * symbol i with its right neighbour j rewrites i and marks j dead (id -1),
 * so positions stay valid for the heap entries that name them. */

struct bpe_sym {
    int32_t id;   /* token id; -1 once merged into its left neighbour */
    int32_t prev; /* index of the left neighbour, -1 if first */
    int32_t next; /* index of the right neighbour, -1 if last */
};

void bpe_work_free(bpe_work *w) {
    free(w->syms);
    free(w->heap);
    memset(w, 0, sizeof *w);
}

static lv_status work_reserve(bpe_work *w, size_t n_syms) {
    if (w->sym_cap < n_syms) {
        struct bpe_sym *p = realloc(w->syms, n_syms * sizeof *p);
        if (!p) return LV_ERR_NOMEM;
        w->syms = p;
        w->sym_cap = n_syms;
    }
    /* The heap never holds more than the initial n - 1 pairs plus one net
     * push per merge (each merge pops one entry and pushes at most two). */
    size_t n_heap = 2 * n_syms + 2;
    if (w->heap_cap < n_heap) {
        uint64_t *p = realloc(w->heap, n_heap * sizeof *p);
        if (!p) return LV_ERR_NOMEM;
        w->heap = p;
        w->heap_cap = n_heap;
    }
    return LV_OK;
}

static void sym_add(struct bpe_sym *syms, size_t *n, int32_t id) {
    size_t i = (*n)++;
    syms[i].id = id;
    syms[i].prev = (int32_t)i - 1;
    syms[i].next = -1;
    if (i > 0) syms[i - 1].next = (int32_t)i;
}

/* Step 1 of the file comment: one symbol per character (or per byte). */
static lv_status init_symbols(const tok *t, const char *s, size_t len, struct bpe_sym *syms,
                              size_t *n_syms, lv_err *err) {
    const uint8_t *u = (const uint8_t *)s;
    bool unk_pending = false;
    for (size_t i = 0; i < len;) {
        size_t cl = utf8_len(u[i]);
        uint32_t cp = utf8_decode(u + i, cl);
        int32_t id = cp < 0x10000 ? t->bmp_id[cp] : str_map_get(t, &t->vocab, s + i, cl);
        if (id >= 0) {
            if (unk_pending) sym_add(syms, n_syms, t->unk_id);
            unk_pending = false;
            sym_add(syms, n_syms, id);
            i += cl;
            continue;
        }
        bool bytes_ok = t->byte_fallback;
        for (size_t k = 0; bytes_ok && k < cl; k++) bytes_ok = t->byte_id[u[i + k]] >= 0;
        if (bytes_ok) {
            for (size_t k = 0; k < cl; k++) sym_add(syms, n_syms, t->byte_id[u[i + k]]);
            i += cl;
            continue;
        }
        if (t->unk_name) {
            if (unk_pending && t->fuse_unk) { /* fused into the pending unk */
            } else {
                if (t->unk_id < 0)
                    return lv_fail(err, LV_ERR_FORMAT,
                                   "tokenizer.json: unk_token '%s' is not in the vocabulary",
                                   t->unk_name);
                if (unk_pending) sym_add(syms, n_syms, t->unk_id);
                unk_pending = true;
            }
        } /* no unk token: the character is dropped, as HF does */
        i += cl;
    }
    if (unk_pending) sym_add(syms, n_syms, t->unk_id);
    return LV_OK;
}

/* ===== The merge loop ===== */

static void heap_sift_down(uint64_t *h, size_t n, size_t i) {
    uint64_t v = h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h[c + 1] < h[c]) c++;
        if (h[c] >= v) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = v;
}

static void heap_push(uint64_t *h, size_t *n, uint64_t v) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p] <= v) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}

/* Entries order by rank, then position: (rank << 32 | pos) as one integer. */
static inline uint64_t heap_key(uint32_t rank, int32_t pos) {
    return (uint64_t)rank << 32 | (uint32_t)pos;
}

static void push_pair(const tok *t, uint64_t *heap, size_t *n_heap, const struct bpe_sym *syms,
                      int32_t left) {
    int32_t right = syms[left].next;
    if (right < 0) return;
    const pair_slot *m = pair_map_get(&t->merges, syms[left].id, syms[right].id);
    if (m) heap_push(heap, n_heap, heap_key(m->rank, left));
}

/* Word::merge_all without dropout. */
static void merge_all(const tok *t, bpe_work *w, size_t n_syms) {
    struct bpe_sym *syms = w->syms;
    uint64_t *heap = w->heap;
    size_t n_heap = 0;
    for (size_t i = 0; i + 1 < n_syms; i++) {
        const pair_slot *m = pair_map_get(&t->merges, syms[i].id, syms[i + 1].id);
        if (m) heap[n_heap++] = heap_key(m->rank, (int32_t)i);
    }
    for (size_t i = n_heap / 2; i-- > 0;) heap_sift_down(heap, n_heap, i);

    while (n_heap > 0) {
        uint64_t top = heap[0];
        heap[0] = heap[--n_heap];
        heap_sift_down(heap, n_heap, 0);
        int32_t pos = (int32_t)(uint32_t)top;
        int32_t new_id = t->rank_id[top >> 32];
        struct bpe_sym *cur = &syms[pos];
        if (cur->id < 0 || cur->next < 0) continue; /* merged away, or last */
        struct bpe_sym *right = &syms[cur->next];
        const pair_slot *m = pair_map_get(&t->merges, cur->id, right->id);
        if (!m || m->new_id != new_id) continue; /* stale entry */

        cur->id = new_id;
        cur->next = right->next;
        right->id = -1;
        if (cur->next >= 0) syms[cur->next].prev = pos;
        if (cur->prev >= 0) push_pair(t, heap, &n_heap, syms, cur->prev);
        push_pair(t, heap, &n_heap, syms, pos);
    }
}

/* BPE::merge_word plus the ids, for one word. */
static lv_status bpe_word(const tok *t, bpe_work *w, const char *s, size_t len, id_vec *out,
                          lv_err *err) {
    if (t->ignore_merges) {
        int32_t id = str_map_get(t, &t->vocab, s, len);
        if (id >= 0) return idv_push(out, id) ? lv_fail(err, LV_ERR_NOMEM, "out of memory") : LV_OK;
    }
    if (len > INT32_MAX / 2)
        return lv_fail(err, LV_ERR_ARG, "text piece of %zu bytes is too long", len);
    if (work_reserve(w, len) != LV_OK) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    size_t n_syms = 0;
    lv_status st = init_symbols(t, s, len, w->syms, &n_syms, err);
    if (st != LV_OK) return st;
    if (n_syms == 0) return LV_OK;
    merge_all(t, w, n_syms);
    for (int32_t i = 0; i >= 0; i = w->syms[i].next) /* symbol 0 is never merged away */
        if (idv_push(out, w->syms[i].id) != LV_OK)
            return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    return LV_OK;
}

/* ===== Cutting words =====
 * Mistral/Llama-2 files have no pre-tokenizer, so HF runs the merge loop
 * over a whole paragraph at once. When no merge can ever join a symbol that
 * ends in some other character to one that starts with "▁", cutting the
 * text before every such "▁" changes nothing: merges never cross the cut,
 * and merges on either side never interact (each heap entry only looks at
 * its own neighbours). The words are then small, their heaps stay in cache,
 * and the result is still exactly HF's. The condition is checked on the
 * file's merges at load time. */

#define META "\xE2\x96\x81" /* U+2581 "▁" */

static bool ends_with_meta(const char *s, size_t n) {
    return n >= 3 && memcmp(s + n - 3, META, 3) == 0;
}

bool bpe_can_split_words(const tok *t) {
    if (t->ignore_merges || t->bmp_id[0x2581] < 0) return false;
    if (t->unk_name && ends_with_meta(t->unk_name, strlen(t->unk_name))) return false;
    for (uint32_t i = 0; i <= t->merges.mask; i++) {
        uint64_t key = t->merges.slots[i].key;
        if (key == PAIR_EMPTY) continue;
        size_t la = 0, lb = 0;
        const char *a = tok_str(t, (int32_t)(key >> 32), &la);
        const char *b = tok_str(t, (int32_t)(uint32_t)key, &lb);
        if (lb >= 3 && memcmp(b, META, 3) == 0 && !ends_with_meta(a, la)) return false;
    }
    return true;
}

lv_status bpe_encode(const tok *t, bpe_work *w, const char *s, size_t len, id_vec *out,
                     lv_err *err) {
    if (!t->split_words) return bpe_word(t, w, s, len, out, err);
    size_t start = 0;
    for (size_t i = 1; i + 3 <= len; i++) {
        const char *p = memchr(s + i, 0xE2, len - 2 - i);
        if (!p) break;
        i = (size_t)(p - s);
        if (memcmp(p, META, 3) != 0 || ends_with_meta(s, i)) continue;
        lv_status st = bpe_word(t, w, s + start, i - start, out, err);
        if (st != LV_OK) return st;
        start = i;
    }
    return bpe_word(t, w, s + start, len - start, out, err);
}
