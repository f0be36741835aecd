/*
 * tokenizer_internal.h - what the tokenizer's files share: struct tok, the
 * hash maps, the encode/decode stage descriptions, and UTF-8 helpers.
 *
 * Not a public header: only src/text/tokenizer*.c, bpe.c and added_vocab.c
 * include it. The split by file follows the pipeline of tokenizer.h:
 *   tokenizer_load.c    tokenizer.json -> struct tok (the format essay)
 *   added_vocab.c       step 1, splitting text on added tokens
 *   tokenizer.c         steps 2 and 4 (normalizers, pre-tokenizers, template)
 *                       and the public accessors
 *   bytelevel.c         the byte-level (GPT-2) pre-tokenizer pieces: the
 *                       bytes-to-unicode table, the GPT-2 regex, Digits
 *   bpe.c               step 3, vocabulary/merge hash maps and the merge loop
 *   tokenizer_decode.c  the decoder chain, tok_decode and tok_stream
 */
#ifndef LV_TOKENIZER_INTERNAL_H
#define LV_TOKENIZER_INTERNAL_H

#include "base/buf.h"
#include "text/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Hash maps ------------------------------------------------------------
 * Open addressing with linear probing, power-of-two capacity, at most half
 * full. The vocabulary map stores ids only: the key of a slot is the token
 * string of that id (tok.pool), so the map costs 4 bytes a slot. The merge
 * map is keyed by the packed id pair (a << 32 | b). */

typedef struct {
    int32_t *slots; /* (mask + 1) token id, or -1 for an empty slot */
    uint32_t mask;  /* capacity - 1 */
} str_map;

typedef struct {
    uint64_t key;   /* (uint64_t)left_id << 32 | right_id; PAIR_EMPTY when free */
    uint32_t rank;  /* position of the merge in the merges list (lower merges first) */
    int32_t new_id; /* id of the merged token */
} pair_slot;

#define PAIR_EMPTY UINT64_MAX

typedef struct {
    pair_slot *slots; /* (mask + 1) */
    uint32_t mask;    /* capacity - 1 */
} pair_map;

/* ---- Added tokens --------------------------------------------------------- */

typedef struct {
    char *content;    /* NUL-terminated, as written in tokenizer.json */
    size_t len;       /* bytes of content */
    char *pattern;    /* what is matched: content, or content normalized (normalized=true) */
    size_t pat_len;   /* bytes of pattern; 0 = never matched (normalizes to nothing) */
    int32_t id;       /* the id Hugging Face tokenizers assigns (see tokenizer_load.c) */
    bool single_word; /* only match when not inside a word */
    bool lstrip;      /* the match absorbs whitespace on its left */
    bool rstrip;      /* the match absorbs whitespace on its right */
    bool normalized;  /* matched on normalized text (true) or raw text (false) */
    bool special;     /* dropped by decode(skip_special) */
} added_tok;

/* Leftmost-longest matcher over a set of added tokens: candidates bucketed
 * by first byte, longest first inside a bucket. */
typedef struct {
    uint32_t *order;     /* (n) indices into tok.added, grouped by first byte, longest first */
    uint32_t first[257]; /* order[first[b] .. first[b + 1]) start with byte b */
    size_t n;
} added_set;

/* ---- Normalizer, pre-tokenizer, decoder steps ----------------------------- */

typedef enum { NORM_PREPEND, NORM_REPLACE } norm_kind;

typedef struct {
    norm_kind kind;
    char *a;      /* PREPEND: the prefix; REPLACE: the pattern (non-empty) */
    size_t a_len; /* bytes */
    char *b;      /* REPLACE: the replacement; NULL for PREPEND */
    size_t b_len; /* bytes */
} norm_step;

typedef enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER } prepend_scheme;

typedef struct {
    bool on;               /* a Metaspace pre-tokenizer is configured */
    char repl[5];          /* replacement character, UTF-8, NUL-terminated ("▁") */
    size_t repl_len;       /* bytes of repl */
    prepend_scheme scheme; /* when a piece gets the replacement prepended */
    bool split;            /* split into words before each replacement */
} metaspace_cfg;

/* The byte-level family (GPT-2, SmolLM2): an optional Digits split, then
 * ByteLevel (GPT-2 regex split, every byte mapped to a printable character).
 * Never combined with Metaspace. */
typedef struct {
    bool digits;            /* a Digits pre-tokenizer runs first */
    bool individual_digits; /* Digits: each number character alone (else runs of them) */
    bool on;                /* a ByteLevel pre-tokenizer (always the last step) */
    bool add_prefix_space;  /* ByteLevel: " " before every piece not starting with one */
    bool use_regex;         /* ByteLevel: split with the GPT-2 regex */
} bytelevel_cfg;

/* A decoder step applied token by token (everything before a Fuse).
 * DEC_BYTE_LEVEL fuses: only a Strip may follow it. */
typedef enum { DEC_REPLACE, DEC_BYTE_FALLBACK, DEC_METASPACE, DEC_STRIP, DEC_BYTE_LEVEL } dec_kind;

typedef struct {
    dec_kind kind;
    char *a;               /* REPLACE: pattern; METASPACE/STRIP: the character, UTF-8 */
    size_t a_len;          /* bytes of a */
    char *b;               /* REPLACE: replacement */
    size_t b_len;          /* bytes of b */
    prepend_scheme scheme; /* METASPACE: NEVER keeps the first token's replacements as spaces */
    uint32_t start, stop;  /* STRIP: at most this many characters from each end */
} dec_step;

#define TOK_MAX_DEC_STEPS 8

/* ---- The tokenizer --------------------------------------------------------- */

enum { TOKF_MODEL = 1, TOKF_ADDED = 2, TOKF_SPECIAL = 4 };

struct tok {
    /* Every id, model and added: its string and kind. */
    int32_t n_ids;     /* max id + 1 */
    char *pool;        /* all token strings, each NUL-terminated */
    uint32_t *str_off; /* (n_ids) offset of the id's string in pool; UINT32_MAX if unused */
    uint32_t *str_len; /* (n_ids) bytes */
    uint8_t *flags;    /* (n_ids) TOKF_* */

    /* The BPE model (tokenizers/src/models/bpe/model.rs). */
    int32_t n_model;      /* entries in model.vocab (HF's get_vocab_size) */
    str_map vocab;        /* model token string -> id */
    pair_map merges;      /* (left, right) -> (rank, new id) */
    int32_t *rank_id;     /* (n_ranks) new id of merge rank r */
    uint32_t n_ranks;     /* merges listed in the file */
    int32_t *bmp_id;      /* (65536) id of the one-character token for a BMP code point, -1 */
    int32_t byte_id[256]; /* id of "<0xNN>", -1 if absent */
    bool byte_fallback;   /* unknown characters become <0xNN> tokens */
    bool fuse_unk;        /* consecutive unknown characters make one unk */
    bool ignore_merges;   /* a word already in the vocabulary is one token */
    bool split_words;     /* BPE may cut before each "▁" that follows another character
                           * (no merge can join across it; see bpe_encode) */
    int32_t unk_id;       /* -1 if none (or not in the vocabulary, see unk_name) */
    char *unk_name;       /* model.unk_token, NULL if none */

    /* Added tokens (step 1). */
    added_tok *added; /* (n_added) in file order */
    size_t n_added;
    added_set raw_set;  /* normalized=false tokens, matched on the raw text */
    added_set norm_set; /* normalized=true tokens, matched on each normalized piece */

    /* Normalizer and pre-tokenizer (step 2). */
    norm_step *norm; /* (n_norm) applied in order to each piece */
    size_t n_norm;
    metaspace_cfg meta;
    bytelevel_cfg bl;

    /* Post-processor (step 4): ids around the sequence. */
    int32_t tpl_pre[8]; /* ids before $A */
    size_t n_tpl_pre;
    int32_t tpl_post[8]; /* ids after $A */
    size_t n_tpl_post;
    int32_t bos_id, eos_id; /* -1 if none; used by tok_set_add_special */

    /* Decoder. */
    dec_step dec[TOK_MAX_DEC_STEPS]; /* per-token steps, in order (before any Fuse) */
    size_t n_dec;
    bool dec_join_space;  /* no decoder: tokens joined with " " */
    bool post_strip;      /* a Strip after Fuse: applies to the whole text */
    char strip_ch[5];     /* its character, UTF-8 */
    size_t strip_ch_len;  /* bytes */
    uint32_t strip_start; /* leading characters it removes, at most */
    uint32_t strip_stop;  /* trailing characters it removes, at most */
};

/* ---- Shared helpers --------------------------------------------------------- */

/* A growable id array. */
typedef struct {
    int32_t *v;
    size_t n, cap;
} id_vec;

lv_status idv_push(id_vec *iv, int32_t id);

/* String of id (NUL-terminated, borrowed) or NULL when the id is unused. */
static inline const char *tok_str(const tok *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_ids || t->str_off[id] == UINT32_MAX) return NULL;
    if (len) *len = t->str_len[id];
    return t->pool + t->str_off[id];
}

/* Length of the UTF-8 character starting with byte c (1 for a stray byte).
 * Only meaningful on text already validated. */
static inline size_t utf8_len(uint8_t c) {
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* Code point of the valid UTF-8 character at s (n = utf8_len(s[0])). */
static inline uint32_t utf8_decode(const uint8_t *s, size_t n) {
    switch (n) {
        case 1:
            return s[0];
        case 2:
            return (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F);
        case 3:
            return (uint32_t)(s[0] & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
        default:
            return (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
                   (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
    }
}

/* Checks that s[0..n) is UTF-8 as Rust's str::from_utf8 accepts it (no
 * overlongs, surrogates or code points past U+10FFFF). Returns n when the
 * whole of it is valid and complete. Otherwise returns the offset of the
 * first byte that cannot start or continue a character, or, when the only
 * problem is a character cut off by the end, the offset where that
 * character starts with *truncated set. */
size_t utf8_check(const uint8_t *s, size_t n, bool *truncated);

/* Unicode White_Space (Rust char::is_whitespace, regex \s). */
bool uni_is_space(uint32_t cp);
/* Regex \w (word character), exact for ASCII, approximate beyond it. */
bool uni_is_word(uint32_t cp);

/* ---- bytelevel.c ---- */

/* GPT-2's bytes_to_unicode: the printable character that stands for byte b
 * (b itself for '!'..'~', U+00A1..U+00AC, U+00AE..U+00FF; the other 68
 * bytes, in order, become U+0100..U+0143). */
uint32_t bl_byte_to_cp(uint8_t b);
/* The inverse: the byte of code point cp, or -1 when cp stands for none. */
int bl_cp_to_byte(uint32_t cp);
/* Appends the byte-level form of s[0..n) (each byte as its character). */
lv_status bl_map(lv_buf *dst, const char *s, size_t n);
/* End of the GPT-2 regex match that starts at s[i] (i < n; valid UTF-8):
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * Every position starts a match, so successive matches cover the text. */
size_t bl_regex_next(const uint8_t *s, size_t n, size_t i);
/* End of the next Digits piece starting at s[i] (i < n). individual: each
 * number character is a piece of its own; else a run of them is. */
size_t bl_digits_next(const uint8_t *s, size_t n, size_t i, bool individual);
/* Length of the maximal subpart of an ill-formed UTF-8 sequence at s[0..n)
 * (n > 0, s[0] starts no valid complete character): what Rust's
 * String::from_utf8_lossy replaces by one U+FFFD. */
size_t utf8_bad_len(const uint8_t *s, size_t n);

/* ---- tokenizer.c ---- */

/* Runs the normalizer steps over s[0..n). *out is s itself (no steps) or the
 * data of b0 or b1, which the caller owns and reuses across calls. */
lv_status normalize_piece(const tok *t, const char *s, size_t n, lv_buf *b0, lv_buf *b1,
                          const char **out, size_t *out_n);

/* ---- bpe.c ---- */

lv_status str_map_init(str_map *m, size_t n_keys);
void str_map_free(str_map *m);
/* Inserts id under its own string (tok_str). Returns the id already there, or -1. */
int32_t str_map_put(const tok *t, str_map *m, int32_t id);
int32_t str_map_get(const tok *t, const str_map *m, const char *s, size_t len);

lv_status pair_map_init(pair_map *m, size_t n_keys);
void pair_map_free(pair_map *m);
/* Inserts or overwrites (a later merge of the same pair wins, as in HF's HashMap). */
void pair_map_put(pair_map *m, int32_t a, int32_t b, uint32_t rank, int32_t new_id);
const pair_slot *pair_map_get(const pair_map *m, int32_t a, int32_t b);

/* Scratch memory of one encode call, reused across words. */
typedef struct {
    struct bpe_sym *syms; /* (sym_cap) */
    size_t sym_cap;
    uint64_t *heap; /* (heap_cap) (rank << 32 | position) */
    size_t heap_cap;
} bpe_work;

void bpe_work_free(bpe_work *w);
/* At load: can BPE cut words before "▁" without changing any result? */
bool bpe_can_split_words(const tok *t);
/* Appends the BPE ids of one word (valid UTF-8, len > 0) to out. */
lv_status bpe_encode(const tok *t, bpe_work *w, const char *s, size_t len, id_vec *out,
                     lv_err *err);

/* ---- added_vocab.c ---- */

/* A piece of text: either an added token (id >= 0) or text to encode (id -1). */
typedef struct {
    size_t start, end; /* byte range in the text that was split */
    int32_t id;
} added_piece;

lv_status added_set_build(const tok *t, added_set *set, bool normalized);
void added_set_free(added_set *set);
/* Splits s[0..len) on the tokens of set, as AddedVocabulary::find_matches:
 * leftmost-longest, lstrip/rstrip/single_word honoured. Pieces cover the
 * text in order; *pieces is grown as needed (caller frees). */
lv_status added_split(const tok *t, const added_set *set, const char *s, size_t len,
                      added_piece **pieces, size_t *n_pieces, size_t *cap);

#endif
