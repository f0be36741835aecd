/*
 * test_tokenizer.c - the tokenizer against Hugging Face tokenizers.
 *
 * The real Mistral-7B tokenizer.json ($LLAVA_MISTRAL_TOKENIZER) and its
 * llava variant (<image>=32000, <pad>=32001 appended in memory) are checked
 * against known ids and against the golden corpus that
 * tools/reference/tokenizer_golden.py wrote with HF tokenizers
 * ($LLAVA_TEST_DATA/tokenizer/golden.json): ids, llava ids, decodes with
 * and without special tokens, and tok_stream over the same ids. Small
 * hand-written tokenizer.json files cover what Mistral's file does not use
 * (Metaspace, lstrip/rstrip, unk handling, other decoders) and the errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/buf.h"
#include "text/tokenizer.h"
#include "text/tokenizer_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static tok *g_base;  /* the Mistral-7B tokenizer.json */
static tok *g_llava; /* the same with <image> and <pad> added */

static const char *env(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) fail_msg("$%s is not set (ctest sets it; see tests/CMakeLists.txt)", name);
    return v;
}

/* The llava-hf variant, built as llava-hf's converter does: two special
 * added tokens appended to the real file, loaded from memory. */
static tok *load_llava(const char *path) {
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return NULL;
    json_t *added = json_object_get(root, "added_tokens");
    const char *names[] = {"<image>", "<pad>"};
    for (int i = 0; i < 2; i++)
        json_array_append_new(added,
                              json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", 32000 + i,
                                        "content", names[i], "single_word", 0, "lstrip", 0,
                                        "rstrip", 0, "normalized", 0, "special", 1));
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    tok *t = NULL;
    lv_err err;
    if (text && tok_load_mem(text, strlen(text), &t, &err) != LV_OK)
        print_message("llava variant: %s\n", err.msg);
    free(text);
    return t;
}

static int setup(void **state) {
    lv_err err;
    const char *path = getenv("LLAVA_MISTRAL_TOKENIZER");
    if (!path || tok_load(path, &g_base, &err) != LV_OK) {
        print_message("cannot load $LLAVA_MISTRAL_TOKENIZER (%s): %s\n", path ? path : "unset",
                      path ? err.msg : "run scripts/setup.sh, or ctest");
        return -1;
    }
    g_llava = load_llava(path);
    return g_llava ? 0 : -1;
}

static int teardown(void **state) {
    tok_free(g_base);
    tok_free(g_llava);
    return 0;
}

/* ===== Helpers ===== */

static size_t encode(const tok *t, const char *text, bool special, int32_t **ids) {
    size_t n;
    lv_err err;
    lv_status st = tok_encode(t, text, strlen(text), special, ids, &n, &err);
    if (st != LV_OK) fail_msg("encode \"%s\": %s", text, err.msg);
    return n;
}

static void expect_ids(const tok *t, const char *text, bool special, const int32_t *want,
                       size_t n_want) {
    int32_t *ids;
    size_t n = encode(t, text, special, &ids);
    for (size_t i = 0; i < n || i < n_want; i++) {
        if (i < n && i < n_want && ids[i] == want[i]) continue;
        print_message("\"%s\": position %zu: got %d, want %d\n", text, i, i < n ? ids[i] : -1,
                      i < n_want ? want[i] : -1);
        free(ids);
        fail();
    }
    free(ids);
}

/* True when want[0..n_want) occurs in ids[0..n). */
static bool contains(const int32_t *ids, size_t n, const int32_t *want, size_t n_want) {
    for (size_t i = 0; i + n_want <= n; i++)
        if (memcmp(ids + i, want, n_want * sizeof *want) == 0) return true;
    return false;
}

/* Decoded text (heap, NUL-terminated; *len counts bytes, text may hold NULs). */
static char *decode_n(const tok *t, const int32_t *ids, size_t n, bool skip, size_t *len) {
    char *out;
    lv_err err;
    if (tok_decode(t, ids, n, skip, &out, len, &err) != LV_OK) fail_msg("decode: %s", err.msg);
    return out;
}

static char *decode(const tok *t, const int32_t *ids, size_t n, bool skip) {
    return decode_n(t, ids, n, skip, NULL);
}

/* Streams ids through tok_stream; every chunk must be whole UTF-8. Returns
 * the concatenation (heap; *len its bytes). */
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

static char *stream(const tok *t, const int32_t *ids, size_t n, bool skip) {
    return stream_n(t, ids, n, skip, NULL);
}

static int32_t byte_tok(const tok *t, unsigned b) {
    char name[8];
    snprintf(name, sizeof name, "<0x%02X>", b);
    int32_t id = tok_token_to_id(t, name);
    assert_true(id >= 0);
    return id;
}

static tok *load_json(const char *json, lv_status want, const char *word) {
    tok *t = NULL;
    lv_err err = {{0}};
    lv_status st = tok_load_mem(json, strlen(json), &t, &err);
    if (st != want || (word && !strstr(err.msg, word)))
        fail_msg("load: got %s \"%s\", want %s with \"%s\"", lv_status_str(st), err.msg,
                 lv_status_str(want), word ? word : "");
    return t;
}

/* ===== The real tokenizer: known ids ===== */

static void known_ids(void **state) {
    expect_ids(g_base, "Hello world", true, (int32_t[]){1, 22557, 1526}, 3);
    expect_ids(g_base, "Hello world", false, (int32_t[]){22557, 1526}, 2);
    expect_ids(g_base, "", true, (int32_t[]){1}, 1);
    expect_ids(g_base, "", false, NULL, 0);
    expect_ids(g_base, " ", true, (int32_t[]){1, 259}, 2);
    expect_ids(g_base, "a</s>b", true, (int32_t[]){1, 264, 2, 287}, 4);
    expect_ids(g_base, "</s>", true, (int32_t[]){1, 2}, 2);

    int32_t *ids;
    size_t n = encode(g_base, "[INST] Hi [/INST]", true, &ids);
    assert_true(n >= 4 && contains(ids, 4, (int32_t[]){1, 733, 16289, 28793}, 4));
    free(ids);
    n = encode(g_base, "[INST] Hi [/INST]", false, &ids);
    assert_true(contains(ids, n, (int32_t[]){733, 28748, 16289, 28793}, 4));
    free(ids);

    assert_int_equal(tok_vocab_size(g_base), 32000);
    assert_int_equal(tok_bos_id(g_base), 1);
    assert_int_equal(tok_eos_id(g_base), 2);
    assert_int_equal(tok_token_to_id(g_base, "▁Hello"), 22557);
    assert_int_equal(tok_token_to_id(g_base, "no such token"), -1);
    assert_string_equal(tok_id_to_token(g_base, 22557), "▁Hello");
    assert_null(tok_id_to_token(g_base, 32000));
    assert_true(tok_is_special(g_base, 1) && !tok_is_special(g_base, 22557));

    char *s = decode(g_base, (int32_t[]){1, 22557, 1526}, 3, false);
    assert_string_equal(s, "<s> Hello world");
    free(s);
    s = decode(g_base, (int32_t[]){1, 22557, 1526}, 3, true);
    assert_string_equal(s, "Hello world");
    free(s);
}

static void llava_variant(void **state) {
    const char *text = "[INST] <image>\nWhat is shown in this image? [/INST]";
    int32_t want[] = {1, 733, 16289, 28793, 28705, 32000, 28705, 13};
    int32_t *ids, *rest;
    size_t n = encode(g_llava, text, true, &ids);
    assert_true(n > 8 && memcmp(ids, want, sizeof want) == 0);
    /* The rest is "\nWhat ... [/INST]" encoded on its own (its own "▁" is 28705). */
    size_t n_rest = encode(g_base, "\nWhat is shown in this image? [/INST]", false, &rest);
    assert_int_equal(n, 6 + n_rest);
    assert_memory_equal(ids + 6, rest, n_rest * sizeof *rest);
    char *s = decode(g_llava, ids, n, true);
    assert_string_equal(s, "[INST]  \nWhat is shown in this image? [/INST]");
    free(s);
    free(ids);
    free(rest);

    assert_int_equal(tok_vocab_size(g_llava), 32002);
    assert_int_equal(tok_token_to_id(g_llava, "<image>"), 32000);
    assert_int_equal(tok_token_to_id(g_llava, "<pad>"), 32001);
    assert_true(tok_is_special(g_llava, 32000));
    expect_ids(g_llava, "<<image>>", true, (int32_t[]){1, 523, 32000, 876}, 4);
    s = decode(g_llava, (int32_t[]){32000, 32001}, 2, false);
    assert_string_equal(s, "<image><pad>");
    free(s);
}

static void add_special_override(void **state) {
    tok_set_add_special(g_llava, true, true);
    expect_ids(g_llava, "Hello world", true, (int32_t[]){1, 22557, 1526, 2}, 4);
    tok_set_add_special(g_llava, false, false);
    expect_ids(g_llava, "Hello world", true, (int32_t[]){22557, 1526}, 2);
    tok_set_add_special(g_llava, true, false); /* the file's own template again */
    expect_ids(g_llava, "Hello world", true, (int32_t[]){1, 22557, 1526}, 3);
}

/* ===== Golden corpus ===== */

static size_t ids_of(json_t *arr, int32_t **out) {
    size_t n = json_array_size(arr);
    *out = malloc((n + 1) * sizeof **out);
    for (size_t i = 0; i < n; i++) (*out)[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    return n;
}

/* Prints the first difference between got and want; returns 1 if any. */
static int diff_ids(size_t c, const char *what, const char *text, const int32_t *got, size_t n_got,
                    const int32_t *want, size_t n_want) {
    for (size_t i = 0; i < n_got || i < n_want; i++) {
        if (i < n_got && i < n_want && got[i] == want[i]) continue;
        print_message("case %zu %s, text \"%.80s\": first difference at id %zu: got %d, want %d "
                      "(%zu vs %zu ids)\n",
                      c, what, text, i, i < n_got ? got[i] : -1, i < n_want ? want[i] : -1, n_got,
                      n_want);
        return 1;
    }
    return 0;
}

static int diff_str(size_t c, const char *what, const char *text, const char *got, size_t n_got,
                    json_t *want_j) {
    const char *want = json_string_value(want_j);
    size_t n_want = json_string_length(want_j);
    if (n_got == n_want && memcmp(got, want, n_got) == 0) return 0;
    size_t i = 0;
    while (i < n_got && i < n_want && got[i] == want[i]) i++;
    print_message("case %zu %s, text \"%.80s\": first difference at byte %zu: got \"%.40s\", "
                  "want \"%.40s\"\n",
                  c, what, text, i, got + i, want + i);
    return 1;
}

/* One tokenizer over one case: encode, decode both ways, stream both ways. */
static int check_case(const tok *t, size_t c, const char *name, const char *text, size_t len,
                      json_t *ids_j, json_t *dec_j, json_t *dec_skip_j) {
    int32_t *want, *got = NULL;
    size_t n_want = ids_of(ids_j, &want), n_got = 0;
    lv_err err;
    int bad = 0;
    if (tok_encode(t, text, len, true, &got, &n_got, &err) != LV_OK) {
        print_message("case %zu %s: encode failed: %s\n", c, name, err.msg);
        bad = 1;
    } else {
        bad |= diff_ids(c, name, text, got, n_got, want, n_want);
    }
    for (int skip = 0; skip < 2; skip++) {
        json_t *dj = skip ? dec_skip_j : dec_j;
        if (!dj) continue;
        size_t n_d, n_s;
        char *d = decode_n(t, want, n_want, skip, &n_d);
        char *s = stream_n(t, want, n_want, skip, &n_s);
        bad |= diff_str(c, skip ? "decode(skip)" : "decode", text, d, n_d, dj);
        bad |= diff_str(c, skip ? "stream(skip)" : "stream", text, s, n_s, dj);
        free(d);
        free(s);
    }
    free(want);
    free(got);
    return bad;
}

static void golden_corpus(void **state) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer/golden.json", env("LLAVA_TEST_DATA"));
    json_error_t je;
    json_t *root = json_load_file(path, JSON_ALLOW_NUL, &je);
    if (!root)
        fail_msg("%s: cannot read the golden corpus (%s); it is written by "
                 "tools/reference/tokenizer_golden.py",
                 path, je.text);
    json_t *cases = json_object_get(root, "cases");
    assert_true(json_array_size(cases) > 0);
    int bad = 0;
    size_t i;
    json_t *cs;
    json_array_foreach(cases, i, cs) {
        json_t *tj = json_object_get(cs, "text");
        const char *text = json_string_value(tj);
        size_t len = json_string_length(tj);
        bad += check_case(g_base, i, "base", text, len, json_object_get(cs, "ids"),
                          json_object_get(cs, "decoded"), json_object_get(cs, "decoded_skip"));
        bad += check_case(g_llava, i, "llava", text, len, json_object_get(cs, "ids_llava"), NULL,
                          json_object_get(cs, "decoded_llava_skip"));
    }
    print_message("golden: %zu cases, %d mismatching\n", json_array_size(cases), bad);
    json_decref(root);
    assert_int_equal(bad, 0);
}

/* bpe.c cuts words before "▁" when the merges allow it; the ids must be
 * those of the uncut merge loop (HF's), on every golden text. */
static void word_cut_changes_nothing(void **state) {
    assert_true(g_base->split_words); /* Mistral's merges allow it */
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer/golden.json", env("LLAVA_TEST_DATA"));
    json_t *root = json_load_file(path, JSON_ALLOW_NUL, NULL);
    assert_non_null(root);
    size_t i;
    json_t *cs;
    json_array_foreach(json_object_get(root, "cases"), i, cs) {
        json_t *tj = json_object_get(cs, "text");
        int32_t *cut, *whole;
        size_t n_cut, n_whole;
        lv_err err;
        assert_int_equal(tok_encode(g_base, json_string_value(tj), json_string_length(tj), true,
                                    &cut, &n_cut, &err),
                         LV_OK);
        g_base->split_words = false;
        assert_int_equal(tok_encode(g_base, json_string_value(tj), json_string_length(tj), true,
                                    &whole, &n_whole, &err),
                         LV_OK);
        g_base->split_words = true;
        assert_int_equal(n_cut, n_whole);
        assert_memory_equal(cut, whole, n_cut * sizeof *cut);
        free(cut);
        free(whole);
    }
    json_decref(root);
}

/* ===== Streaming ===== */

static void stream_emoji(void **state) {
    const tok *t = g_base;
    int32_t hi = tok_token_to_id(t, "▁Hi");
    int32_t ids[] = {byte_tok(t, 0xF0), byte_tok(t, 0x9F), byte_tok(t, 0x98), byte_tok(t, 0x80),
                     hi};
    tok_stream s;
    tok_stream_init(&s, t, false);
    char out[256];
    for (int i = 0; i < 4; i++) assert_int_equal(tok_stream_push(&s, ids[i], out, sizeof out), 0);
    assert_int_equal(tok_stream_push(&s, hi, out, 4), -1); /* too small: nothing changes */
    assert_true(tok_stream_push(&s, hi, out, sizeof out) > 0);
    assert_string_equal(out, "\xF0\x9F\x98\x80 Hi");
    assert_int_equal(tok_stream_flush(&s, out, sizeof out), 0);

    /* Encoded text with emoji streams to what decode gives, chunk by chunk whole. */
    const char *text = "Smile 😀 and 🐫 camel, ünïcödé";
    int32_t *enc;
    size_t n = encode(t, text, true, &enc);
    char *d = decode(t, enc, n, true), *st = stream(t, enc, n, true);
    assert_string_equal(d, text);
    assert_string_equal(st, text);
    free(d);
    free(st);
    free(enc);

    /* A valid run longer than the stream's buffer: 40 emoji = 160 bytes. */
    int32_t run[161];
    for (int i = 0; i < 40; i++)
        for (int k = 0; k < 4; k++) run[4 * i + k] = byte_tok(t, "\xF0\x9F\x98\x80"[k] & 0xFF);
    run[160] = hi;
    d = decode(t, run, 161, false);
    st = stream(t, run, 161, false);
    assert_string_equal(st, d);
    free(d);
    free(st);
}

static void stream_invalid_bytes(void **state) {
    const tok *t = g_base;
    struct {
        unsigned bytes[4];
        size_t n;
        const char *want;
    } cases[] = {
        {{0xF0, 0x28}, 2, "\xEF\xBF\xBD\xEF\xBF\xBD"},                   /* bad continuation */
        {{0xE2, 0x96}, 2, "\xEF\xBF\xBD\xEF\xBF\xBD"},                   /* cut off at the end */
        {{0xC3, 0xA9, 0xFF}, 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* whole run replaced */
        {{0xC3, 0xA9, 0x41},
         3,
         "\xC3\xA9"
         "A"},                                                           /* valid */
        {{0xED, 0xA0, 0x80}, 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* surrogate */
    };
    for (size_t c = 0; c < LV_ARRAY_LEN(cases); c++) {
        int32_t ids[4];
        for (size_t i = 0; i < cases[c].n; i++) ids[i] = byte_tok(t, cases[c].bytes[i]);
        char *d = decode(t, ids, cases[c].n, false), *s = stream(t, ids, cases[c].n, false);
        assert_string_equal(d, cases[c].want);
        assert_string_equal(s, cases[c].want);
        free(d);
        free(s);
    }
    /* A run that turns invalid goes out at once, as U+FFFD per byte. */
    tok_stream s;
    tok_stream_init(&s, t, false);
    char out[256];
    assert_int_equal(tok_stream_push(&s, byte_tok(t, 0xF0), out, sizeof out), 0);
    assert_int_equal(tok_stream_push(&s, byte_tok(t, 0x28), out, sizeof out), 6);
    assert_int_equal(tok_stream_push(&s, byte_tok(t, 0x41), out, sizeof out), 3);
    assert_int_equal(tok_stream_push(&s, 22557, out, sizeof out), 6);
    assert_string_equal(out, " Hello");
    assert_int_equal(tok_stream_push(&s, 99999, out, sizeof out), -1);
}

static void stream_leading_space(void **state) {
    tok_stream s;
    char out[64];
    tok_stream_init(&s, g_base, true);
    assert_int_equal(tok_stream_push(&s, 1, out, sizeof out), 0); /* <s> skipped */
    tok_stream_push(&s, 22557, out, sizeof out);
    assert_string_equal(out, "Hello");
    tok_stream_push(&s, 1526, out, sizeof out);
    assert_string_equal(out, " world");
    tok_stream_flush(&s, out, sizeof out);
    tok_stream_push(&s, 1526, out, sizeof out); /* flush reset it: a new text */
    assert_string_equal(out, "world");
}

/* Random ids, heavy on byte tokens, on the real tokenizer: the stream must
 * equal decode. Runs of byte tokens stay under the stream's 64-byte buffer,
 * where the two are exactly equal (see tokenizer.h). */
static void stream_matches_decode_random(void **state) {
    uint64_t rs = 0x9E3779B97F4A7C15ull;
    int32_t ids[48];
    for (int it = 0; it < 3000; it++) {
        size_t n = 0, run = 0;
        while (n < LV_ARRAY_LEN(ids)) {
            rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
            unsigned r = (unsigned)(rs >> 11);
            int32_t id = r % 4 == 0 ? (int32_t)(r >> 3) % 32000 : 3 + (int32_t)((r >> 3) % 256);
            if (r % 97 == 1) id = (int32_t)(r >> 8) % 3; /* <unk> <s> </s> */
            bool is_byte = id >= 3 && id < 259;
            if (is_byte && run == 60) continue;
            run = is_byte ? run + 1 : 0;
            ids[n++] = id;
        }
        for (int skip = 0; skip < 2; skip++) {
            size_t n_d, n_s;
            char *d = decode_n(g_base, ids, n, skip, &n_d),
                 *st = stream_n(g_base, ids, n, skip, &n_s);
            if (n_d != n_s || memcmp(d, st, n_d) != 0)
                fail_msg("iteration %d: stream != decode", it);
            free(d);
            free(st);
        }
    }
}

/* ===== Small hand-written tokenizers ===== */

#define VOCAB_A                                                                                      \
    "\"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"▁\": 2, \"a\": 3, \"b\": 4, \"▁a\": 5, \"ab\": 6, " \
    "\"▁ab\": 7, \"x\": 8, \"<0x21>\": 9}"

static void metaspace_pretokenizer(void **state) {
    char json[2048];
    const char *fmt =
        "{\"added_tokens\": [{\"id\": 1, \"content\": \"<s>\", \"special\": true, "
        "\"normalized\": false}],"
        "\"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"▁\", "
        "\"prepend_scheme\": \"%s\", \"split\": %s},"
        "\"decoder\": {\"type\": \"Metaspace\", \"replacement\": \"▁\", \"prepend_scheme\": "
        "\"%s\", \"split\": true},"
        "\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true, "
        "\"byte_fallback\": true, " VOCAB_A ", \"merges\": [[\"a\", \"b\"], [\"▁\", \"a\"], "
        "[\"▁\", \"ab\"]]}}";
    snprintf(json, sizeof json, fmt, "always", "true", "always");
    tok *t = load_json(json, LV_OK, NULL);
    expect_ids(t, "ab ab", false, (int32_t[]){7, 7}, 2);
    expect_ids(t, "<s>ab", false, (int32_t[]){1, 7}, 2);
    expect_ids(t, "a  b", false, (int32_t[]){5, 2, 2, 4}, 4);     /* words "▁a" "▁" "▁b" */
    expect_ids(t, "xyzx!", false, (int32_t[]){2, 8, 0, 8, 9}, 5); /* unk fused; bytes */
    char *s = decode(t, (int32_t[]){7, 2, 5}, 3, false);
    assert_string_equal(s, "ab  a"); /* the first token's ▁ is dropped */
    free(s);
    tok_free(t);

    snprintf(json, sizeof json, fmt, "first", "false", "never");
    t = load_json(json, LV_OK, NULL);
    expect_ids(t, "ab<s>ab", false, (int32_t[]){7, 1, 6}, 3); /* only offset 0 gets ▁ */
    expect_ids(t, "a b", false, (int32_t[]){5, 2, 4}, 3);     /* no split: one word */
    s = decode(t, (int32_t[]){7, 2, 5}, 3, false);
    assert_string_equal(s, " ab  a");
    free(s);
    tok_free(t);
}

static void added_token_options(void **state) {
    const char *json =
        "{\"added_tokens\": ["
        "{\"id\": 9, \"content\": \"<m>\", \"lstrip\": true, \"rstrip\": true, \"normalized\": "
        "false, "
        "\"special\": true},"
        "{\"id\": 10, \"content\": \"ab\", \"single_word\": true, \"normalized\": false},"
        "{\"id\": 11, \"content\": \"xx\", \"normalized\": true}],"
        "\"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"String\": \"q\"}, \"content\": "
        "\"x\"},"
        "\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"vocab\": {\"<unk>\": 0, "
        "\" \": 1, \"a\": 2, \"b\": 3, \"x\": 4, \"c\": 5, \"<0x41>\": 6, \"y\": 7, \"z\": 8}, "
        "\"merges\": []}}";
    tok *t = load_json(json, LV_OK, NULL);
    /* New added ids follow the model's 9 entries: 9, 10, 11, as HF assigns them. */
    assert_int_equal(tok_token_to_id(t, "<m>"), 9);
    expect_ids(t, "a  <m>  b", false, (int32_t[]){2, 9, 3}, 3); /* spaces absorbed */
    expect_ids(t, "ab c", false, (int32_t[]){10, 1, 5}, 3);     /* a single word */
    expect_ids(t, "cab", false, (int32_t[]){5, 2, 3}, 3);       /* inside a word: not */
    expect_ids(t, "cqq", false, (int32_t[]){5, 11}, 2);         /* matched after normalizing */
    char *s = decode(t, (int32_t[]){2, 9, 3}, 3, false);
    assert_string_equal(s, "a <m> b"); /* no decoder: joined with spaces */
    free(s);
    s = decode(t, (int32_t[]){2, 9, 3}, 3, true);
    assert_string_equal(s, "a b");
    free(s);
    s = stream(t, (int32_t[]){2, 9, 3}, 3, false);
    assert_string_equal(s, "a <m> b");
    free(s);
    tok_free(t);
}

/* Every decoder step at once: per-token Replace, ByteFallback, Metaspace
 * and Strip, then Fuse and a Strip of the whole text at both ends. */
static void decoder_chain(void **state) {
    const char *json =
        "{\"decoder\": {\"type\": \"Sequence\", \"decoders\": ["
        "{\"type\": \"Replace\", \"pattern\": {\"String\": \"▁\"}, \"content\": \" \"},"
        "{\"type\": \"ByteFallback\"}, {\"type\": \"Metaspace\", \"replacement\": \"x\"},"
        "{\"type\": \"Strip\", \"content\": \"a\", \"start\": 1, \"stop\": 1}, {\"type\": "
        "\"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \", \"start\": 2, \"stop\": 2}]},"
        "\"model\": {\"byte_fallback\": true, " VOCAB_A ", \"merges\": []}}";
    tok *t = load_json(json, LV_OK, NULL);
    /* " a" "ab" " " " " -> per-token Strip "a": " " "b" " " " " -> fused " b  " -> "b" */
    int32_t ids[] = {5, 6, 2, 2};
    char *d = decode(t, ids, 4, false), *s = stream(t, ids, 4, false);
    assert_string_equal(d, "b");
    assert_string_equal(s, "b");
    free(d);
    free(s);
    /* "x" " ab" " " "x" " " "!": Metaspace drops the first token's x and
     * makes the other a space; the global Strip takes one leading space. */
    int32_t ids2[] = {8, 7, 2, 8, 2, 9};
    d = decode(t, ids2, 6, false);
    s = stream(t, ids2, 6, false);
    assert_string_equal(d, "ab   !");
    assert_string_equal(s, d);
    free(d);
    free(s);
    /* "b" " " " " " ": the last two spaces are stripped, the first is not. */
    int32_t ids3[] = {4, 2, 2, 2};
    d = decode(t, ids3, 4, false);
    s = stream(t, ids3, 4, false);
    assert_string_equal(d, "b ");
    assert_string_equal(s, d);
    free(d);
    free(s);
    tok_free(t);
}

static void bpe_merge_order(void **state) {
    /* Ranks decide, not lengths: "b c" (rank 0) beats "a b" (rank 1), and
     * the pair listed twice keeps its later rank (a HashMap insert). */
    const char *json =
        "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"bc\": 4, \"abc\": 5, "
        "\"cc\": 6}, \"merges\": [\"#version: 0.2\", \"b c\", \"a b\", \"a bc\", \"c c\", \"b "
        "c\"]}}";
    tok *t = load_json(json, LV_OK, NULL);
    expect_ids(t, "abc", false, (int32_t[]){3, 2}, 2); /* "b c" moved to rank 4 */
    expect_ids(t, "ccc", false, (int32_t[]){6, 2}, 2); /* leftmost first on equal rank */
    expect_ids(t, "d", false, NULL, 0);                /* no unk token: dropped */
    tok_free(t);
}

static void long_word_is_fast(void **state) {
    /* No pre-tokenizer: HF merges 1 MB of text as one word. Without spaces
     * it really is one word here too (with spaces, bpe.c may cut it); a
     * quadratic merge loop would take minutes, O(n log n) well under a
     * second (more under ASan). */
    size_t n = 1 << 20;
    char *text = malloc(n + 1);
    const char *paras[] = {"The quick brown fox jumps over the lazy dog. ",
                           "Thequickbrownfoxjumpsoverthelazydog,0123456789!"};
    for (int p = 0; p < 2; p++) {
        for (size_t i = 0; i < n; i++) text[i] = paras[p][i % strlen(paras[p])];
        text[n] = '\0';
        clock_t c0 = clock();
        int32_t *ids;
        size_t n_ids = encode(g_base, text, false, &ids);
        double sec = (double)(clock() - c0) / CLOCKS_PER_SEC;
        print_message("1 MB %s: %zu ids in %.3f s\n", p ? "without spaces" : "of English", n_ids,
                      sec);
        assert_true(n_ids > n / 8 && sec < 20.0);
        char *back = decode(g_base, ids, n_ids, false);
        assert_string_equal(back, text);
        free(back);
        free(ids);
    }
    free(text);
}

/* ===== Errors ===== */

static void bad_files(void **state) {
    load_json("{\"model\": ", LV_ERR_FORMAT, "JSON");
    load_json("[1, 2]", LV_ERR_FORMAT, "object");
    load_json("{}", LV_ERR_FORMAT, "model");
    load_json("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", LV_ERR_UNSUPPORTED, "Unigram");
    load_json("{\"model\": {\"type\": \"BPE\", \"merges\": []}}", LV_ERR_FORMAT, "vocab");
    load_json("{\"model\": {\"vocab\": {\"a\": 0}}}", LV_ERR_FORMAT, "merges");
    load_json("{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a c\"]}}",
              LV_ERR_FORMAT, "'c' is not in model.vocab");
    load_json("{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}",
              LV_ERR_FORMAT, "merged token 'ab'");
    load_json("{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b c\"]}}",
              LV_ERR_FORMAT, "merges[0]");
    load_json("{\"model\": {\"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}}", LV_ERR_FORMAT,
              "id 0");
    load_json("{\"model\": {\"vocab\": {\"a\": -1}, \"merges\": []}}", LV_ERR_FORMAT, "id");
    load_json("{\"model\": {\"vocab\": {\"a\": 0, \"a\": 1}, \"merges\": []}}", LV_ERR_FORMAT,
              "duplicate");
    load_json("{\"normalizer\": {\"type\": \"NFKC\"}, \"model\": {\"vocab\": {}, \"merges\": []}}",
              LV_ERR_UNSUPPORTED, "NFKC");
    load_json("{\"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"Regex\": \" +\"}, "
              "\"content\": \"x\"}, \"model\": {\"vocab\": {}, \"merges\": []}}",
              LV_ERR_UNSUPPORTED, "Regex");
    /* ByteLevel is supported now (test_tokenizer_bytelevel); Whitespace is not */
    load_json("{\"pre_tokenizer\": {\"type\": \"Whitespace\"}, \"model\": {\"vocab\": {}, "
              "\"merges\": []}}",
              LV_ERR_UNSUPPORTED, "Whitespace");
    load_json("{\"decoder\": {\"type\": \"WordPiece\"}, \"model\": {\"vocab\": {}, \"merges\": "
              "[]}}",
              LV_ERR_UNSUPPORTED, "WordPiece");
    load_json("{\"post_processor\": {\"type\": \"BertProcessing\"}, \"model\": {\"vocab\": {}, "
              "\"merges\": []}}",
              LV_ERR_UNSUPPORTED, "BertProcessing");
    load_json("{\"truncation\": {\"max_length\": 5}, \"model\": {\"vocab\": {}, \"merges\": []}}",
              LV_ERR_UNSUPPORTED, "truncation");
    load_json("{\"model\": {\"dropout\": 0.1, \"vocab\": {}, \"merges\": []}}", LV_ERR_UNSUPPORTED,
              "dropout");

    tok *t = NULL;
    lv_err err;
    assert_int_equal(tok_load("/nonexistent/tokenizer.json", &t, &err), LV_ERR_IO);
    assert_null(t);
    assert_non_null(strstr(err.msg, "/nonexistent/tokenizer.json"));
    tok_free(NULL);
}

static void bad_inputs(void **state) {
    int32_t *ids = (int32_t *)1;
    size_t n = 7;
    lv_err err;
    const char *bad[] = {"abc\xFF", "\xC3", "\xED\xA0\x80", "\xC0\xAF", "ok\xF4\x90\x80\x80"};
    for (size_t i = 0; i < LV_ARRAY_LEN(bad); i++) {
        assert_int_equal(tok_encode(g_base, bad[i], strlen(bad[i]), true, &ids, &n, &err),
                         LV_ERR_ARG);
        assert_null(ids);
        assert_non_null(strstr(err.msg, "UTF-8"));
    }
    char *out;
    assert_int_equal(tok_decode(g_base, (int32_t[]){1, 32000}, 2, false, &out, NULL, &err),
                     LV_ERR_ARG);
    assert_int_equal(tok_decode(g_base, (int32_t[]){-5}, 1, false, &out, NULL, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "-5"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(known_ids),
        cmocka_unit_test(llava_variant),
        cmocka_unit_test(add_special_override),
        cmocka_unit_test(golden_corpus),
        cmocka_unit_test(word_cut_changes_nothing),
        cmocka_unit_test(stream_emoji),
        cmocka_unit_test(stream_invalid_bytes),
        cmocka_unit_test(stream_leading_space),
        cmocka_unit_test(stream_matches_decode_random),
        cmocka_unit_test(decoder_chain),
        cmocka_unit_test(metaspace_pretokenizer),
        cmocka_unit_test(added_token_options),
        cmocka_unit_test(bpe_merge_order),
        cmocka_unit_test(long_word_is_fast),
        cmocka_unit_test(bad_files),
        cmocka_unit_test(bad_inputs),
    };
    return cmocka_run_group_tests_name("tokenizer", tests, setup, teardown);
}
