/*
 * synth_tokenizer.c - the synthetic SmolLM2-style tokenizer (see
 * synth_tokenizer.h). The byte map is GPT-2's bytes_to_unicode (openai/gpt-2
 * src/encoder.py, the convention every byte-level BPE tokenizer.json uses):
 * bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF stand for themselves, the other
 * 68 bytes, in order, for U+0100, U+0101, ...
 */
#include "quant/synth_tokenizer.h"

#include "io/json_type.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PIECE 16 /* bytes of text a synthetic token stands for, at most */
#define HASH_BITS 17

static const char *const SPECIALS[17] = {
    "<|endoftext|>",    "<|im_start|>",    "<|im_end|>",     "<repo_name>",    "<reponame>",
    "<file_sep>",       "<filename>",      "<gh_stars>",     "<issue_start>",  "<issue_comment>",
    "<issue_closed>",   "<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>",
    "<jupyter_script>", "<empty_output>"};

typedef struct {
    char *s; /* UTF-8 of the byte-level symbols */
    int len; /* bytes of text it stands for */
} piece;

/* Open-addressing set of piece strings -> index. */
typedef struct {
    int32_t slot[1 << HASH_BITS]; /* -1 empty, else index into pieces */
} strset;

static uint32_t str_hash(const char *s) { /* FNV-1a */
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static bool set_has(const strset *t, const piece *p, const char *s) {
    uint32_t m = (1u << HASH_BITS) - 1, i = str_hash(s) & m;
    for (; t->slot[i] >= 0; i = (i + 1) & m)
        if (strcmp(p[t->slot[i]].s, s) == 0) return true;
    return false;
}

static void set_add(strset *t, const piece *p, int idx) {
    uint32_t m = (1u << HASH_BITS) - 1, i = str_hash(p[idx].s) & m;
    while (t->slot[i] >= 0) i = (i + 1) & m;
    t->slot[i] = idx;
}

static uint64_t next_u64(uint64_t *x) { /* splitmix64 */
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* UTF-8 of code point c (< 0x800) into out; returns bytes written. */
static int utf8(unsigned c, char *out) {
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    out[0] = (char)(0xC0 | (c >> 6));
    out[1] = (char)(0x80 | (c & 0x3F));
    return 2;
}

/* The 256 byte symbols in bytes_to_unicode's order (printable bytes first). */
static int byte_symbols(char out[256][4]) {
    int n = 0, extra = 0;
    bool direct[256] = {false};
    for (int b = '!'; b <= '~'; b++) direct[b] = true;
    for (int b = 0xA1; b <= 0xAC; b++) direct[b] = true;
    for (int b = 0xAE; b <= 0xFF; b++) direct[b] = true;
    for (int b = 0; b < 256; b++)
        if (direct[b]) out[n][utf8((unsigned)b, out[n])] = 0, n++;
    for (int b = 0; b < 256; b++)
        if (!direct[b]) out[n][utf8(256u + (unsigned)extra++, out[n])] = 0, n++;
    return n;
}

static json_t *added(int id, const char *content) {
    return json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", id, "content", content,
                     "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1);
}

lv_status synth_tokenizer_json(int n_added, char **text, size_t *len, lv_err *err) {
    *text = NULL;
    *len = 0;
    if (n_added != 128 && n_added != 3)
        return lv_fail(err, LV_ERR_ARG, "synthetic tokenizer: %d added tokens (128 or 3)", n_added);
    piece *p = calloc(SYNTH_BASE_VOCAB, sizeof *p);
    strset *set = malloc(sizeof *set);
    json_t *vocab = json_object(), *merges = json_array(), *add = json_array();
    lv_status st = LV_OK;
    if (!p || !set || !vocab || !merges || !add) goto nomem;
    memset(set->slot, 0xff, sizeof set->slot);
    int n = 0;
    for (int i = 0; i < 17; i++, n++) {
        if (!(p[n].s = strdup(SPECIALS[i]))) goto nomem;
        p[n].len = MAX_PIECE + 1; /* never merged */
        set_add(set, p, n);
    }
    char sym[256][4];
    byte_symbols(sym);
    for (int i = 0; i < 256; i++, n++) {
        if (!(p[n].s = strdup(sym[i]))) goto nomem;
        p[n].len = 1;
        set_add(set, p, n);
    }
    /* merges: "\n\n" first (SmolLM2 has it as one token, and llama.cpp's
     * SmolVLM prompt looks it up as one: mtmd's image slices), then pairs of
     * earlier pieces, weighted towards low ids (r² skew) */
    uint64_t rng = 0x536d6f6c4c4d32ull; /* fixed: the same vocabulary every time */
    char buf[2 * MAX_PIECE * 2 + 1];
    bool first = true;
    while (n < SYNTH_BASE_VOCAB) {
        double ra = (double)(next_u64(&rng) >> 11) / 9007199254740992.0;
        double rb = (double)(next_u64(&rng) >> 11) / 9007199254740992.0;
        int span = n - 17;
        int a = 17 + (int)(ra * ra * span), b = 17 + (int)(rb * rb * span);
        if (first) /* "Ċ", the symbol of byte 0x0A */
            for (int k = 17; k < 17 + 256; k++)
                if (strcmp(p[k].s, "\xC4\x8A") == 0) a = b = k;
        first = false;
        if (p[a].len + p[b].len > MAX_PIECE) continue;
        snprintf(buf, sizeof buf, "%s%s", p[a].s, p[b].s);
        if (set_has(set, p, buf)) continue;
        if (!(p[n].s = strdup(buf))) goto nomem;
        p[n].len = p[a].len + p[b].len;
        set_add(set, p, n);
        char m[sizeof buf + 1];
        snprintf(m, sizeof m, "%s %s", p[a].s, p[b].s);
        if (json_array_append_new(merges, json_string(m))) goto nomem;
        n++;
    }
    for (int i = 0; i < n; i++)
        if (json_object_set_new(vocab, p[i].s, json_integer(i))) goto nomem;
    for (int i = 0; i < 17; i++)
        if (json_array_append_new(add, added(i, SPECIALS[i]))) goto nomem;
    int id = SYNTH_BASE_VOCAB;
    char name[48];
    if (n_added == 128) {
        if (json_array_append_new(add, added(id++, "<global-img>"))) goto nomem;
        for (int r = 1; r <= 6; r++)
            for (int c = 1; c <= 6; c++) {
                snprintf(name, sizeof name, "<row_%d_col_%d>", r, c);
                if (json_array_append_new(add, added(id++, name))) goto nomem;
            }
    }
    if (json_array_append_new(add, added(id++, "<fake_token_around_image>")) ||
        json_array_append_new(add, added(id++, "<image>")))
        goto nomem;
    for (int i = 0; n_added == 128 && i < 88; i++) {
        snprintf(name, sizeof name, "<|reserved_special_token_%d|>", i);
        if (json_array_append_new(add, added(id++, name))) goto nomem;
    }
    if (json_array_append_new(add, added(id++, "<end_of_utterance>"))) goto nomem;
    json_t *root = json_pack(
        "{s:s, s:n, s:n, s:O, s:n, "
        "s:{s:s, s:[{s:s, s:b}, {s:s, s:b, s:b, s:b}]}, "
        "s:{s:s, s:b, s:b, s:b}, s:{s:s, s:b, s:b, s:b}, "
        "s:{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:O, s:O}}",
        "version", "1.0", "truncation", "padding", "added_tokens", add, "normalizer",
        "pre_tokenizer", "type", "Sequence", "pretokenizers", "type", "Digits", "individual_digits",
        1, "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 1,
        "post_processor", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 0,
        "use_regex", 1, "decoder", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1,
        "use_regex", 1, "model", "type", "BPE", "dropout", "unk_token", "continuing_subword_prefix",
        "end_of_word_suffix", "fuse_unk", 0, "byte_fallback", 0, "ignore_merges", 0, "vocab", vocab,
        "merges", merges);
    if (!root) goto nomem;
    *text = json_dumps_whole(root, JSON_COMPACT);
    json_decref(root);
    if (!*text) goto nomem;
    *len = strlen(*text);
    goto done;
nomem:
    st = lv_fail(err, LV_ERR_NOMEM, "synthetic tokenizer: out of memory");
done:
    for (int i = 0; p && i < SYNTH_BASE_VOCAB; i++) free(p[i].s);
    free(p);
    free(set);
    json_decref(vocab);
    json_decref(merges);
    json_decref(add);
    return st;
}
