/* test_grammar.c - grammar syntax, compile errors, matching (UTF-8 split
 * across calls included), a JSON-object grammar, token masks against brute
 * force, the mask cache, the limits, and a mask-speed figure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/clock.h"
#include "engine/grammar.h"
#include "testutil.h"
#include "text/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Any JSON object; whitespace runs of at most 20. */
static const char JSON_GRAMMAR[] =
    "# any JSON object\n"
    "root   ::= ws object ws\n"
    "value  ::= object | array | string | number | \"true\" | \"false\" | \"null\"\n"
    "object ::= \"{\" ws ( member ( \",\" ws member )* )? \"}\"\n"
    "member ::= string ws \":\" ws value ws\n"
    "array  ::= \"[\" ws ( value ws ( \",\" ws value ws )* )? \"]\"\n"
    "string ::= \"\\\"\" char* \"\\\"\"\n"
    "char   ::= [^\"\\\\\\x00-\\x1f] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4} )\n"
    "number ::= \"-\"? ( \"0\" | [1-9] [0-9]{0,15} ) ( \".\" [0-9]+ )? ( [eE] [-+]? [0-9]+ )?\n"
    "ws     ::= [ \\t\\n]{0,20}\n";

static grammar *compile_ok(const char *text) {
    grammar *g = NULL;
    lv_err err = {{0}};
    lv_status st = grammar_compile(text, strlen(text), &g, &err);
    if (st != LV_OK) fail_msg("compile failed: %s\n--- grammar:\n%s", err.msg, text);
    return g;
}

static void compile_err(const char *text, const char *want) {
    grammar *g = NULL;
    lv_err err = {{0}};
    lv_status st = grammar_compile(text, strlen(text), &g, &err);
    if (st != LV_ERR_ARG || !strstr(err.msg, want))
        fail_msg("grammar %s\nexpected an error with '%s', got status %d: %s", text, want, st,
                 err.msg);
    assert_null(g);
}

/* 1: whole text matched (root complete); 0: accepted, not complete; -1: rejected. */
static int match(const grammar *g, const char *s, size_t n) {
    grammar_matcher *m;
    assert_int_equal(grammar_matcher_new(g, &m, NULL), LV_OK);
    int r = !grammar_matcher_accept_bytes(m, s, n) ? -1 : grammar_matcher_is_complete(m) ? 1 : 0;
    grammar_matcher_free(m);
    return r;
}

static int matchs(const grammar *g, const char *s) {
    return match(g, s, strlen(s));
}

/* Each string of yes matches g completely; each of no is rejected or incomplete. */
static void check_language(const char *text, const char *const *yes, const char *const *no) {
    grammar *g = compile_ok(text);
    for (int i = 0; yes[i]; i++)
        if (matchs(g, yes[i]) != 1) fail_msg("%s\nshould match \"%s\"", text, yes[i]);
    for (int i = 0; no[i]; i++)
        if (matchs(g, no[i]) == 1) fail_msg("%s\nshould not match \"%s\"", text, no[i]);
    grammar_free(g);
}

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

static void syntax_constructs(void **state) {
    check_language("root ::= \"ab\"", L("ab"), L("", "a", "abc", "b"));
    check_language("root ::= \"a\" | \"b\" | \"\"", L("a", "b", ""), L("ab", "c"));
    check_language("root ::= \"\\n\\t\\r\\\\\\\"\\x41\\u00e9\"", L("\n\t\r\\\"A\xc3\xa9"), L("A"));
    check_language("root ::= \"\\xC3\\xA9\" \"\\u4e2d\"", L("\xc3\xa9\xe4\xb8\xad"), L("é"));
    check_language("root ::= [a-c_] [^a-z]", L("a0", "_A", "c\xe4\xb8\xad"), L("aa", "d0", "a"));
    check_language("root ::= [-a] [a-] [\\]\\[\\-\\^]", L("-a]", "a-^", "--["),
                   L("-b]", "b-]", "-ab"));
    check_language("root ::= (\"a\" | \"b\") (\"c\" \"d\" | \"e\")", L("acd", "be"),
                   L("ac", "ab", "e"));
    check_language("root ::= \"a\"* \"b\"+ \"c\"?", L("b", "aabbc", "bc", "abbb"),
                   L("", "ac", "a"));
    check_language("root ::= \"ab\"{2} \"c\"{1,} \"d\"{0,2} \"e\"{1,3}",
                   L("ababce", "ababcccddeee", "ababcde"), L("abce", "ababe", "ababcdddde"));
    check_language("root ::= \"x\"{0} \"y\"{0,0} \"z\"", L("z"), L("xz", "yz"));
    check_language("root ::= . .", L("ab", "\xf0\x9f\x98\x80\xc3\xa9"), L("a", "abc"));
    check_language("root ::= [\\u0100-\\uffff]", L("\xc4\x80", "\xef\xbf\xbf"), L("\xc3\xbf"));
    /* rules used before defined, spread over lines, comments anywhere */
    check_language("# top\n"
                   "root ::= item\n"
                   "       | item \",\" root   # a list\n"
                   "item ::=\n"
                   "  [0-9]+ # digits\n",
                   L("1", "1,22,333"), L("", "1,", ",1"));
    check_language("root::=a b\na::=\"x\"\nb::=\"y\"", L("xy"), L("x", "y"));
    check_language("root ::= ( ( \"a\" ) ( \"b\" )* )+", L("a", "abab", "abbba"), L("b"));
    check_language("root ::= my-rule_2\nmy-rule_2 ::= \"ok\"", L("ok"), L(""));
    check_language("root ::= \"{\" ( \"x\" ){ 1 , 2 } \"}\"", L("{x}", "{xx}"), L("{}", "{xxx}"));
}

static void compile_errors(void **state) {
    compile_err("root ::= foo", "grammar line 1, column 10: rule 'foo' is used but never defined");
    compile_err("item ::= \"a\"", "no rule 'root'");
    compile_err("", "no rule 'root'");
    compile_err("root ::= \"a\"\nroot ::= \"b\"",
                "line 2, column 1: rule 'root' is defined twice (first at line 1, column 1)");
    compile_err("root ::= []", "empty character class");
    compile_err("root ::= [^]", "empty character class");
    compile_err("root ::= [^\\x00-\\U0010FFFF]", "bad escape \\U");
    compile_err("root ::= [^\\x00-\\uffff\xf0\x90\x80\x80-\xf4\x8f\xbf\xbf]", "matches nothing");
    compile_err("root ::= [z-a]", "backwards");
    compile_err("root ::= \"\\q\"", "line 1, column 11: bad escape \\q");
    compile_err("root ::= \"\\x4\"", "needs 2 hex digits");
    compile_err("root ::= \"\\ud800\"", "surrogate");
    compile_err("root ::= [\\q]", "bad escape \\q in a character class");
    compile_err("root ::= \"abc", "unterminated literal");
    compile_err("root ::= \"ab\nc\"", "newline inside a literal");
    compile_err("root ::= [abc", "unterminated character class");
    compile_err("root ::= [\xff]", "invalid UTF-8");
    compile_err("root ::= (\"a\"", "'(' is never closed");
    compile_err("root ::= \"a\" )", "line 1, column 14: expected a rule name");
    compile_err("root = \"a\"", "expected '::=' after the rule name 'root'");
    compile_err("root ::= \"a\"{2,1}", "max below min");
    compile_err("root ::= \"a\"{1001}", "over the limit 1000");
    compile_err("root ::= \"a\"{,3}", "expected a number");
    compile_err("root ::= \"a\"{2", "'{' is never closed");
    compile_err("root ::= \"a\" | *", "line 1, column 16: unexpected '*'");
    compile_err("root ::= \"a\"\n\n  x ::= \"b\" @", "line 3, column 13: unexpected '@'");
    /* left recursion, direct, through a nullable prefix, mutual */
    compile_err("root ::= root \"a\" | \"b\"", "rule 'root' is left-recursive");
    compile_err("root ::= x\nx ::= \"a\"? y \"b\" | \"c\"\ny ::= x \"d\"", "is left-recursive");
    compile_err("root ::= (\"a\"?)*", "rule 'root': a repetition");
    compile_err("root ::= \"x\" (\"\")+", "a repetition");
    /* rules that can never end */
    compile_err("root ::= \"a\" root", "rule 'root' can never end");
    compile_err("root ::= \"a\" | b\nb ::= \"(\" b \")\"", "rule 'b' can never end");
    /* nesting and size limits */
    char deep[1024] = "root ::= ";
    for (int i = 0; i < 65; i++) strcat(deep, "(");
    strcat(deep, "\"a\"");
    for (int i = 0; i < 65; i++) strcat(deep, ")");
    compile_err(deep, "nested more than 64 deep");
    deep[9 + 1] = ' '; /* one less: 64 deep is fine */
    deep[strlen(deep) - 1] = ' ';
    grammar_free(compile_ok(deep));
    char *huge = malloc(GRAMMAR_MAX_TEXT + 1);
    memset(huge, ' ', GRAMMAR_MAX_TEXT + 1);
    grammar *g = NULL;
    lv_err err;
    assert_int_equal(grammar_compile(huge, GRAMMAR_MAX_TEXT + 1, &g, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "at most 4194304"));
    free(huge);
    grammar_free(compile_ok("root ::= (\"ab\"{1000}){1000}")); /* the group is one rule */
    char *big = malloc(1100 * 10 + 16);
    strcpy(big, "root ::=");
    for (int i = 0; i < 1100; i++) strcat(big, " \"a\"{1000}");
    compile_err(big, "more than 1048576 elements");
    free(big);
    compile_err("root ::= \"a\"{0,1000} \"b\"{0,1000} \"c\"{0,1000} \"d\"{0,1000} \"e\"{0,1000} "
                "\"f\"{0,1000} \"g\"{0,1000} \"h\"{0,1000} \"i\"{0,1000} \"j\"{0,1000} "
                "\"k\"{0,1000} \"l\"{0,1000} \"m\"{0,1000} \"n\"{0,1000} \"o\"{0,1000} "
                "\"p\"{0,1000} \"q\"{0,1000}",
                "more than 16384 rules");
}

static void matching(void **state) {
    grammar *g = compile_ok("root ::= \"a\" \"b\"* | \"ac\"");
    grammar_matcher *m;
    assert_int_equal(grammar_matcher_new(g, &m, NULL), LV_OK);
    assert_false(grammar_matcher_is_complete(m));
    assert_true(grammar_matcher_can_continue(m));
    assert_true(grammar_matcher_accept_bytes(m, "", 0));
    assert_false(grammar_matcher_accept_bytes(m, "b", 1));
    assert_true(grammar_matcher_accept_bytes(m, "a", 1));
    assert_true(grammar_matcher_is_complete(m));
    assert_true(grammar_matcher_can_continue(m));
    assert_false(grammar_matcher_accept_bytes(m, "bbx", 3)); /* rejected: state unchanged */
    assert_true(grammar_matcher_is_complete(m));
    grammar_matcher *k;
    assert_int_equal(grammar_matcher_clone(m, &k, NULL), LV_OK);
    assert_true(grammar_matcher_accept_bytes(m, "c", 1));
    assert_true(grammar_matcher_is_complete(m));
    assert_false(grammar_matcher_can_continue(m)); /* only EOS now */
    assert_false(grammar_matcher_accept_bytes(m, "b", 1));
    assert_true(grammar_matcher_accept_bytes(k, "bbb", 3)); /* the clone went on its own way */
    assert_true(grammar_matcher_can_continue(k));
    assert_false(grammar_matcher_accept_bytes(k, "c", 1));
    assert_int_equal(grammar_matcher_error(k, NULL), LV_OK);
    grammar_matcher_free(k);
    grammar_matcher_free(m);
    grammar_free(g);

    /* a prefix is accepted but incomplete; recursion nests */
    g = compile_ok("root ::= \"(\" root \")\" | \"x\"");
    assert_int_equal(matchs(g, "((x))"), 1);
    assert_int_equal(matchs(g, "((x)"), 0);
    assert_int_equal(matchs(g, "(()"), -1);
    char deep[2001];
    memset(deep, '(', 1000), deep[1000] = 'x', memset(deep + 1001, ')', 1000);
    assert_int_equal(match(g, deep, 2001), 1);
    grammar_free(g);
}

static void utf8_classes(void **state) {
    grammar *g = compile_ok("root ::= [а-я]+ [^a-z\\u4e00]");
    /* а-я: U+0430-U+044F; "привет" then a CJK character other than U+4E00 */
    assert_int_equal(matchs(g, "привет中"), 1);
    assert_int_equal(matchs(g, "привет\xe4\xb8\x80"), -1); /* U+4E00 excluded */
    assert_int_equal(matchs(g, "приветz"), -1);
    assert_int_equal(matchs(g, "привет!"), 1);
    /* a lead byte no character of the class starts with is refused at once */
    assert_int_equal(matchs(g, "\xd3"), -1);
    assert_int_equal(matchs(g, "\xd0"), 0); /* U+0400-U+043F: some are in а-я */
    assert_int_equal(matchs(g, "\xd0\x80"), -1);
    /* a code point split over accepts, every way */
    const char *text = "я\xf0\x9f\x98\x80"; /* я then 😀 */
    size_t n = strlen(text);
    for (size_t cut1 = 0; cut1 <= n; cut1++)
        for (size_t cut2 = cut1; cut2 <= n; cut2++) {
            grammar_matcher *m;
            assert_int_equal(grammar_matcher_new(g, &m, NULL), LV_OK);
            assert_true(grammar_matcher_accept_bytes(m, text, cut1));
            assert_true(grammar_matcher_accept_bytes(m, text + cut1, cut2 - cut1));
            assert_true(grammar_matcher_accept_bytes(m, text + cut2, n - cut2));
            assert_true(grammar_matcher_is_complete(m));
            grammar_matcher_free(m);
        }
    grammar_free(g);

    /* only valid UTF-8: overlong, surrogates, past U+10FFFF, stray continuations */
    g = compile_ok("root ::= .");
    assert_int_equal(matchs(g, "\xc0\x80"), -1);
    assert_int_equal(matchs(g, "\xe0\x80\x80"), -1);
    assert_int_equal(matchs(g, "\xed\xa0\x80"), -1);
    assert_int_equal(matchs(g, "\xf4\x90\x80\x80"), -1);
    assert_int_equal(matchs(g, "\xf5"), -1);
    assert_int_equal(matchs(g, "\x80"), -1);
    assert_int_equal(matchs(g, "\xed\x9f\xbf"), 1);     /* U+D7FF */
    assert_int_equal(matchs(g, "\xee\x80\x80"), 1);     /* U+E000 */
    assert_int_equal(matchs(g, "\xf4\x8f\xbf\xbf"), 1); /* U+10FFFF */
    assert_int_equal(matchs(g, "\xf0\x90\x80"), 0);     /* incomplete, not yet wrong */
    grammar_free(g);

    /* literals match bytes: a literal and a class can share a code point's first bytes */
    g = compile_ok("root ::= \"\\xe4\\xb8\" [\\x00-\\x7f] | [中]");
    assert_int_equal(matchs(g, "\xe4\xb8"
                               "a"),
                     1);
    assert_int_equal(matchs(g, "中"), 1);
    assert_int_equal(matchs(g, "\xe4\xb8\xae"), -1);
    grammar_free(g);
}

static const char *const JSON_YES[] = {
    "{}",
    " { } ",
    "{\"a\":1}",
    "{\"a\": [1, 2.5, -3e10, 0, 1E+2, true, false, null], \"b\": {\"c\": \"d\"}}",
    "{\n  \"key\": \"value with \\\"escapes\\\" \\\\ \\n \\u00e9\",\n  \"n\": -0.5\n}",
    "{\"unicode\": \"привет 中文 😀\"}",
    "{\"nested\": [[[[{}]]], {\"x\": []}]}",
    "{\"\": \"\"}",
    NULL,
};

static const char *const JSON_NO[] = {
    "",
    "[]",
    "\"str\"",
    "{",
    "{\"a\"}",
    "{\"a\":}",
    "{\"a\":1,}",
    "{a:1}",
    "{\"a\":01}",
    "{\"a\":1.}",
    "{\"a\":tru}",
    "{\"a\":\"\\x\"}",
    "{\"a\":\"\\u12G4\"}",
    "{\"a\":\"line\nbreak\"}",
    "{\"a\":1}}",
    "{\"a\":1} x",
    "{\"a\":[1 2]}",
    "{                     }", /* 21 spaces: ws is at most 20 */
    NULL,
};

static void json_object(void **state) {
    grammar *g = compile_ok(JSON_GRAMMAR);
    for (int i = 0; JSON_YES[i]; i++)
        if (matchs(g, JSON_YES[i]) != 1) fail_msg("should match: %s", JSON_YES[i]);
    for (int i = 0; JSON_NO[i]; i++)
        if (matchs(g, JSON_NO[i]) == 1) fail_msg("should not match: %s", JSON_NO[i]);
    /* a prefix of a valid object is accepted, incomplete */
    assert_int_equal(matchs(g, "{\"a\": [1, {\"b\""), 0);
    grammar_free(g);
}

/* ---- masks against brute force ---------------------------------------------- */

typedef struct {
    char **bytes;
    size_t *len;
    int n;
} test_vocab;

static void vocab_free(test_vocab *tv) {
    for (int i = 0; i < tv->n; i++) free(tv->bytes[i]);
    free(tv->bytes);
    free(tv->len);
}

/* n random tokens: JSON-ish characters, whole and partial UTF-8 characters,
 * stray bytes, a few empty (special) tokens and a few duplicates. */
static test_vocab random_vocab(int n, uint64_t seed) {
    static const char *pieces[] = {
        "{",     "}",        "[",        "]",        "\"",       ":",    ",",    " ",
        "\n",    "\t",       "0",        "1",        "9",        "-",    ".",    "e",
        "E",     "+",        "a",        "b",        "x",        "u",    "\\",   "true",
        "false", "null",     "\"a\"",    "я",        "中",       "😀",    "\xd1", "\x8f",
        "\xe4",  "\xb8\xad", "\xe4\xb8", "\xf0\x9f", "\x98\x80", "\xff", "\x01",
    };
    test_vocab tv = {calloc((size_t)n, sizeof(char *)), calloc((size_t)n, sizeof(size_t)), n};
    for (int i = 0; i < n; i++) {
        tv.bytes[i] = malloc(64);
        size_t len = 0;
        int k = i < 8 ? 0 : 1 + (int)(tu_splitmix64(&seed) % 4);
        if (i >= 8 && i < 8 + (int)LV_ARRAY_LEN(pieces)) k = -1; /* every piece alone */
        if (k < 0) {
            len = strlen(pieces[i - 8]);
            memcpy(tv.bytes[i], pieces[i - 8], len);
        }
        for (int j = 0; j < k; j++) {
            const char *p = pieces[tu_splitmix64(&seed) % LV_ARRAY_LEN(pieces)];
            memcpy(tv.bytes[i] + len, p, strlen(p));
            len += strlen(p);
        }
        if (i >= 8 && i % 50 == 0) len = 0; /* a special token */
        if (i % 97 == 1 && i > 100) {       /* a duplicate of an earlier token */
            len = tv.len[i - 90];
            memcpy(tv.bytes[i], tv.bytes[i - 90], len);
        }
        tv.len[i] = len;
    }
    return tv;
}

/* At every byte of text (fed in one accepts), the mask equals the set of
 * tokens a fresh copy of the state accepts. */
static void masks_along(const grammar *g, const grammar_vocab *v, const test_vocab *tv,
                        const char *text) {
    grammar_matcher *m;
    assert_int_equal(grammar_matcher_new(g, &m, NULL), LV_OK);
    size_t words = (size_t)(tv->n + 31) / 32, n = strlen(text);
    uint32_t *bits = malloc(words * sizeof *bits);
    for (size_t pos = 0; pos <= n; pos++) {
        assert_int_equal(grammar_matcher_mask(m, v, bits, NULL), LV_OK);
        for (int t = 0; t < tv->n; t++) {
            bool want = false;
            if (tv->len[t] > 0) {
                grammar_matcher *k;
                assert_int_equal(grammar_matcher_clone(m, &k, NULL), LV_OK);
                want = grammar_matcher_accept_bytes(k, tv->bytes[t], tv->len[t]);
                grammar_matcher_free(k);
            }
            bool got = (bits[t / 32] >> (t % 32)) & 1;
            if (got != want)
                fail_msg("text '%s' at byte %zu: token %d ('%.*s') mask %d, accept %d", text, pos,
                         t, (int)tv->len[t], tv->bytes[t], got, want);
        }
        if (pos < n) assert_true(grammar_matcher_accept_bytes(m, text + pos, 1));
    }
    assert_true(grammar_matcher_is_complete(m));
    free(bits);
    grammar_matcher_free(m);
}

static void mask_brute_force(void **state) {
    test_vocab tv = random_vocab(400, 42);
    grammar_vocab *v;
    assert_int_equal(grammar_vocab_new((const char *const *)tv.bytes, tv.len, tv.n, &v, NULL),
                     LV_OK);
    assert_int_equal(grammar_vocab_size(v), 400);
    grammar *g = compile_ok(JSON_GRAMMAR);
    for (int i = 0; JSON_YES[i]; i++) masks_along(g, v, &tv, JSON_YES[i]);
    grammar_free(g);
    /* classes over multi-byte characters, split code points inside tokens */
    g = compile_ok("root ::= ( [а-я] | [^\\x00-\\x7fя] | \"a\" \"\\xe4\"? )+");
    masks_along(g, v, &tv, "яa中a\xe4\xb8\xad😀");
    grammar_free(g);
    /* the token ids map back: accept_token takes a masked token's bytes */
    g = compile_ok("root ::= \"true\" | \"tr\" \"ue\"");
    grammar_matcher *m;
    assert_int_equal(grammar_matcher_new(g, &m, NULL), LV_OK);
    uint32_t bits[(400 + 31) / 32];
    assert_int_equal(grammar_matcher_mask(m, v, bits, NULL), LV_OK);
    int n_true = 0;
    for (int t = 0; t < 400; t++)
        if ((bits[t / 32] >> (t % 32)) & 1) {
            assert_true(tv.len[t] <= 4 && memcmp(tv.bytes[t], "true", tv.len[t]) == 0);
            n_true += tv.len[t] == 4;
        }
    assert_true(n_true >= 1);
    for (int t = 0; t < 400; t++)
        if (tv.len[t] == 4 && memcmp(tv.bytes[t], "true", 4) == 0) {
            assert_true(grammar_matcher_accept_token(m, v, t));
            break;
        }
    assert_true(grammar_matcher_is_complete(m));
    assert_false(grammar_matcher_accept_token(m, v, 0)); /* empty: never */
    assert_false(grammar_matcher_accept_token(m, v, 400));
    grammar_matcher_free(m);
    grammar_free(g);
    grammar_vocab_free(v);
    vocab_free(&tv);
}

static void mask_cache(void **state) {
    test_vocab tv = random_vocab(300, 7);
    grammar_vocab *v;
    assert_int_equal(grammar_vocab_new((const char *const *)tv.bytes, tv.len, tv.n, &v, NULL),
                     LV_OK);
    grammar *g = compile_ok(JSON_GRAMMAR);
    grammar_matcher *m;
    assert_int_equal(grammar_matcher_new(g, &m, NULL), LV_OK);
    uint32_t a[10], b[10];
    assert_true(grammar_matcher_accept_bytes(m, "{\"k", 3));
    assert_int_equal(grammar_matcher_mask(m, v, a, NULL), LV_OK);
    uint64_t computed, cached;
    grammar_matcher_mask_stats(m, &computed, &cached);
    assert_int_equal(computed, 1);
    assert_int_equal(cached, 0);
    /* inside a string every character leaves the same state: a cache hit */
    assert_true(grammar_matcher_accept_bytes(m, "ey", 2));
    assert_int_equal(grammar_matcher_mask(m, v, b, NULL), LV_OK);
    assert_memory_equal(a, b, sizeof a);
    grammar_matcher_mask_stats(m, &computed, &cached);
    assert_int_equal(computed, 1);
    assert_int_equal(cached, 1);
    /* a different state computes again and gives another mask */
    assert_true(grammar_matcher_accept_bytes(m, "\"", 1));
    assert_int_equal(grammar_matcher_mask(m, v, b, NULL), LV_OK);
    assert_memory_not_equal(a, b, sizeof a);
    /* more states than the cache holds: the oldest goes, answers stay right */
    const char *text = "{\"a\": [1, 22, 333, {\"b\": null}], \"c\": \"dé\", \"e\": -1.5e3}";
    grammar_matcher *fresh;
    assert_int_equal(grammar_matcher_new(g, &fresh, NULL), LV_OK);
    for (int round = 0; round < 2; round++) {
        grammar_matcher *k;
        assert_int_equal(grammar_matcher_new(g, &k, NULL), LV_OK);
        for (size_t i = 0; text[i]; i++) {
            assert_int_equal(grammar_matcher_mask(k, v, a, NULL), LV_OK);
            grammar_matcher *c;
            assert_int_equal(grammar_matcher_clone(k, &c, NULL), LV_OK); /* clones start cold */
            assert_int_equal(grammar_matcher_mask(c, v, b, NULL), LV_OK);
            assert_memory_equal(a, b, sizeof a);
            grammar_matcher_free(c);
            assert_true(grammar_matcher_accept_bytes(k, text + i, 1));
        }
        grammar_matcher_mask_stats(k, &computed, &cached);
        assert_true(cached > 0 && computed > GRAMMAR_MASK_CACHE);
        grammar_matcher_free(k);
    }
    grammar_matcher_free(fresh);
    grammar_matcher_free(m);
    grammar_free(g);
    grammar_vocab_free(v);
    vocab_free(&tv);
}

static void limits(void **state) {
    /* ambiguity: after n x's, stacks owe 0..n y's */
    grammar *g = compile_ok("root ::= a\na ::= \"x\" a \"y\" | \"x\" a | \"\"");
    grammar_matcher *m;
    assert_int_equal(grammar_matcher_new(g, &m, NULL), LV_OK);
    char xs[600];
    memset(xs, 'x', sizeof xs);
    assert_true(grammar_matcher_accept_bytes(m, xs, 100));
    assert_false(grammar_matcher_accept_bytes(m, xs, sizeof xs));
    lv_err err;
    assert_int_equal(grammar_matcher_error(m, &err), LV_ERR_TOO_LARGE);
    assert_non_null(strstr(err.msg, "too ambiguous: more than 512 parse stacks"));
    assert_true(grammar_matcher_accept_bytes(m, "yy", 2)); /* state as before the failed call */
    test_vocab tv = random_vocab(50, 1);
    grammar_vocab *v;
    assert_int_equal(grammar_vocab_new((const char *const *)tv.bytes, tv.len, tv.n, &v, NULL),
                     LV_OK);
    uint32_t bits[2];
    assert_int_equal(grammar_matcher_mask(m, v, bits, &err), LV_ERR_TOO_LARGE); /* sticky */
    grammar_matcher_free(m);
    grammar_free(g);
    /* depth: nesting past GRAMMAR_MAX_DEPTH */
    g = compile_ok("root ::= \"(\" root \")\" | \"\"");
    assert_int_equal(grammar_matcher_new(g, &m, NULL), LV_OK);
    char *deep = malloc(GRAMMAR_MAX_DEPTH + 10);
    memset(deep, '(', GRAMMAR_MAX_DEPTH + 10);
    assert_false(grammar_matcher_accept_bytes(m, deep, GRAMMAR_MAX_DEPTH + 10));
    assert_int_equal(grammar_matcher_error(m, &err), LV_ERR_TOO_LARGE);
    assert_non_null(strstr(err.msg, "nested too deeply"));
    free(deep);
    grammar_matcher_free(m);
    grammar_free(g);
    /* an empty vocabulary has an empty mask */
    grammar_vocab *empty;
    assert_int_equal(grammar_vocab_new(NULL, NULL, 0, &empty, NULL), LV_OK);
    g = compile_ok("root ::= \"a\"");
    assert_int_equal(grammar_matcher_new(g, &m, NULL), LV_OK);
    assert_int_equal(grammar_matcher_mask(m, empty, bits, NULL), LV_OK);
    grammar_matcher_free(m);
    grammar_free(g);
    grammar_vocab_free(empty);
    grammar_vocab_free(v);
    vocab_free(&tv);
}

/* ---- mask speed ---------------------------------------------------------------- */

/* The Mistral vocabulary as bytes: "▁" → " ", <0xNN> → that byte, special
 * tokens empty. Without the tokenizer (setup.sh not run), 32000 made-up
 * pieces of the same kinds: words with and without a leading space, digits,
 * punctuation runs, byte tokens, UTF-8 characters. *what says which. */
static test_vocab mistral_vocab(const char **what) {
    const char *path = getenv("LLAVA_MISTRAL_TOKENIZER");
    tok *t = NULL;
    lv_err err;
    if (!path || tok_load(path, &t, &err) != LV_OK) {
        *what = "made-up";
        test_vocab tv = {calloc(32000, sizeof(char *)), calloc(32000, sizeof(size_t)), 32000};
        static const char *punct[] = {"{",  "}",  "\"", "\":", "\",", ",", ".", ":", "[", "]",
                                      "\n", "  ", "\\", "é",   "中",  "😀", "(", ")", "-", "_"};
        uint64_t seed = 3;
        for (int i = 0; i < 32000; i++) {
            char *b = tv.bytes[i] = malloc(32);
            size_t len = 0;
            if (i < 3)
                len = 0; /* <unk>, <s>, </s> */
            else if (i < 3 + 256)
                b[len++] = (char)(i - 3);
            else if (i % 10 == 0) {
                for (int k = 0; k < 1 + i % 3; k++) {
                    const char *p = punct[tu_splitmix64(&seed) % LV_ARRAY_LEN(punct)];
                    memcpy(b + len, p, strlen(p));
                    len += strlen(p);
                }
            } else if (i % 10 == 1)
                len = (size_t)snprintf(b, 32, "%d", (int)(i % 1000));
            else {
                if (i % 2) b[len++] = ' ';
                int n = 2 + (int)(tu_splitmix64(&seed) % 8);
                for (int k = 0; k < n; k++) b[len++] = (char)('a' + tu_splitmix64(&seed) % 26);
            }
            tv.len[i] = len;
        }
        return tv;
    }
    *what = "Mistral";
    int n = tok_vocab_size(t);
    test_vocab tv = {calloc((size_t)n, sizeof(char *)), calloc((size_t)n, sizeof(size_t)), n};
    for (int i = 0; i < n; i++) {
        const char *p = tok_id_to_token(t, i);
        size_t len = p ? strlen(p) : 0;
        tv.bytes[i] = malloc(len + 1);
        unsigned byte;
        if (!p || tok_is_special(t, i))
            len = 0;
        else if (len == 6 && sscanf(p, "<0x%2X>", &byte) == 1) {
            tv.bytes[i][0] = (char)byte;
            len = 1;
        } else {
            size_t k = 0;
            for (size_t j = 0; j < len; j++) {
                if (j + 3 <= len && memcmp(p + j, "\xe2\x96\x81", 3) == 0) {
                    tv.bytes[i][k++] = ' ';
                    j += 2;
                } else
                    tv.bytes[i][k++] = p[j];
            }
            len = k;
        }
        tv.len[i] = len;
    }
    tok_free(t);
    return tv;
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void mask_speed(void **state) {
    const char *what;
    test_vocab tv = mistral_vocab(&what);
    double t0 = now_us();
    grammar_vocab *v;
    assert_int_equal(grammar_vocab_new((const char *const *)tv.bytes, tv.len, tv.n, &v, NULL),
                     LV_OK);
    double t_vocab = now_us() - t0;
    grammar *g = compile_ok(JSON_GRAMMAR);
    uint32_t *bits = malloc((size_t)(tv.n + 31) / 32 * 4);
    static const struct {
        const char *name, *prefix;
    } at[] = {
        {"start", ""},
        {"after '{'", "{"},
        {"inside a key", "{\"na"},
        {"after ':'", "{\"name\":"},
        {"in a number", "{\"n\": 12"},
        {"in a string value", "{\"n\": \"hello wor"},
    };
    printf("grammar mask, JSON object grammar, %d-token %s vocabulary (trie built in %.0f us):\n",
           tv.n, what, t_vocab);
    for (size_t i = 0; i < LV_ARRAY_LEN(at); i++) {
        double first = 1e30, cached = 1e30; /* the best of 5: the machine may be busy */
        for (int rep = 0; rep < 5; rep++) {
            grammar_matcher *m;
            assert_int_equal(grammar_matcher_new(g, &m, NULL), LV_OK);
            assert_true(grammar_matcher_accept_bytes(m, at[i].prefix, strlen(at[i].prefix)));
            t0 = now_us();
            assert_int_equal(grammar_matcher_mask(m, v, bits, NULL), LV_OK);
            double t1 = now_us();
            assert_int_equal(grammar_matcher_mask(m, v, bits, NULL), LV_OK);
            double t2 = now_us();
            if (t1 - t0 < first) first = t1 - t0;
            if (t2 - t1 < cached) cached = t2 - t1;
            grammar_matcher_free(m);
        }
        int allowed = 0;
        for (int t = 0; t < tv.n; t++) allowed += (bits[t / 32] >> (t % 32)) & 1;
        printf("  %-18s %6d tokens allowed: first %8.0f us, cached %5.1f us\n", at[i].name, allowed,
               first, cached);
    }
    free(bits);
    grammar_free(g);
    grammar_vocab_free(v);
    vocab_free(&tv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(syntax_constructs), cmocka_unit_test(compile_errors),
        cmocka_unit_test(matching),          cmocka_unit_test(utf8_classes),
        cmocka_unit_test(json_object),       cmocka_unit_test(mask_brute_force),
        cmocka_unit_test(mask_cache),        cmocka_unit_test(limits),
        cmocka_unit_test(mask_speed),
    };
    return cmocka_run_group_tests_name("grammar", tests, NULL, NULL);
}
