/* test_vqa_score.c - text/vqa_score against the official VQA evaluation
 * (GT-Vision-Lab/VQA vqaEval.py at a013f00), on answer/annotation pairs
 * whose scores were worked out by hand from the script's rules:
 *
 *   clean (\n \t → space, strip) both sides; if the 10 cleaned human answers
 *   are not all equal, normalise both sides (punctuation, then lower-case /
 *   number words / articles / contractions); accuracy = mean over the 10
 *   leave-one-out subsets of min(1, matches among the other 9 / 3).
 *
 * With m of 10 human answers equal to the prediction, subset i has m-1
 * matches when it leaves out a matching answer (m subsets) and m otherwise
 * (10-m subsets), so accuracy = (m·min(1,(m-1)/3) + (10-m)·min(1,m/3)) / 10:
 *   m=0: 0
 *   m=1: (1·0   + 9·1/3) / 10 = 3/10 = 0.3
 *   m=2: (2·1/3 + 8·2/3) / 10 = 6/10 = 0.6
 *   m=3: (3·2/3 + 7·1)   / 10 = 9/10 = 0.9
 *   m>=4: every subset keeps >= 3 matches: 1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "text/vqa_score.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "yes*3|no*7" → 3 × "yes", 7 × "no" (static storage, valid until the next call). */
static int expand(const char *spec, const char **out, int cap) {
    static char store[1024];
    snprintf(store, sizeof store, "%s", spec);
    int n = 0;
    for (char *part = strtok(store, "|"); part; part = strtok(NULL, "|")) {
        char *star = strrchr(part, '*');
        assert_non_null(star);
        *star = '\0';
        for (int k = atoi(star + 1); k > 0; k--) {
            assert_true(n < cap);
            out[n++] = part;
        }
    }
    return n;
}

typedef struct {
    const char *pred;
    const char *answers; /* expand() spec */
    double want;
    const char *why;
} score_case;

/* Scores worked out by hand (see the top of the file for m → accuracy). */
static const score_case CASES[] = {
    /* leave-one-out averaging; answers differ, so normalisation is on */
    {"red", "red*1|blue*9", 0.3, "m=1: 9 subsets with 1 match (1/3), 1 with 0 → 3/10"},
    {"red", "red*2|blue*8", 0.6, "m=2: 2 subsets at 1/3, 8 at 2/3 → 6/10"},
    {"red", "red*3|blue*7", 0.9, "m=3: 3 subsets at 2/3, 7 at 1 → 9/10"},
    {"red", "red*4|blue*6", 1.0, "m=4: every subset keeps >= 3 matches"},
    {"green", "red*3|blue*7", 0.0, "no human gave it"},
    {"no", "yes*8|no*2", 0.6,
     "the VQA authors' own example (GitHub issue 1); the script's float sum gives "
     "0.5999999999999999, we round the exact 18/30 once"},
    {"yes", "yes*8|no*2", 1.0, "8 matches"},
    {"x", "x*2|y*1", 4.0 / 9, "3 answers: subsets 1/3, 1/3, 2/3 → 4/9"},
    /* punctuation */
    {"1,000", "1000*4|100*6", 1.0, "digit,digit anywhere: the comma is deleted, not spaced"},
    {"1,000", "1,000*3|1000*1|100*6", 1.0, "the humans' \"1,000\" becomes 1000 too: m=4"},
    {"red,blue", "red blue*3|red*7", 0.9, "no digit,digit and no \", \": comma → space"},
    {"red/blue 1,2", "redblue 12*3|red*7", 0.9,
     "a digit,digit anywhere deletes every listed mark, the '/' too"},
    {"red/blue", "red blue*3|red*7", 0.9, "'/' with no space next to it → space"},
    {"t-shirt", "t shirt*3|shirt*7", 0.9, "'-' → space"},
    {"t - shirt", "t shirt*3|shirt*7", 0.9,
     "\" -\" occurs: '-' deleted → \"t  shirt\"; split/join squeezes the spaces"},
    {"YES!", "yes*2|no*8", 0.6, "'!' → space, lower-cased"},
    {"10:30", "10:30*4|10*6", 1.0, "':' is not in the list: kept"},
    {"yes.", "yes*3|no*7", 0.9, "trailing period deleted (not followed by a digit)"},
    {"3.", "3*2|4*8", 0.6, "\"3.\" → \"3\": the period is followed by nothing"},
    {"1.5", "1.5*4|2*6", 1.0, "a period before a digit stays"},
    {"st. louis", "st louis*4|paris*6", 1.0, "a period before a space goes"},
    {"yes................................", "yes*3|no*7", 0.9, "32 periods: all deleted"},
    {"yes.................................", "yes*3|no*7", 0.0,
     "33 periods: re.sub's count is 32 (re.UNICODE passed by position), one stays: \"yes.\""},
    /* articles, number words, contractions */
    {"a dog", "dog*5|cat*5", 1.0, "article dropped"},
    {"the dog", "dog*1|cat*9", 0.3, "article dropped, m=1"},
    {"the", "the*3|a*2|yes*5", 1.0, "an answer of only articles becomes \"\" on both sides: m=5"},
    {"two", "2*3|3*7", 0.9, "two → 2"},
    {"ten", "10*1|9*9", 0.3, "ten → 10"},
    {"two dogs", "2 dogs*3|dogs*7", 0.9, "number words map inside phrases too"},
    {"none", "0*2|1*8", 0.6, "none → 0"},
    {"none", "none*1|1*9", 0.3, "the humans' \"none\" also becomes 0 (GitHub issue 7)"},
    {"dont", "don't*4|no*6", 1.0, "dont → don't ('\\'' is not punctuation)"},
    {"isnt", "isn't*1|is*9", 0.3, "isnt → isn't"},
    {"Im", "i'm*5|me*5", 0.0, "the table's key is \"Im\", but words are lower-cased first"},
    {"5 oclock", "5 o'clock*2|5*8", 0.6, "oclock → o'clock"},
    /* spaces and case */
    {"  red   car ", "red car*3|car*7", 0.9, "stripped; split/join squeezes inner spaces"},
    {"Yes", "yes*4|no*6", 1.0, "lower-cased"},
    /* unanimous humans: only clean, no normalisation (the script's len(set(...)) > 1) */
    {"yes.", "yes*10", 0.0, "all agree: \"yes.\" is compared as is"},
    {"Yes", "yes*10", 0.0, "all agree: no lower-casing"},
    {"a dog", "dog*10", 0.0, "all agree: the article stays"},
    {" red car\n", "red car*10", 1.0, "strip still applies"},
    {"red\tcar", "red car*10", 1.0, "a tab inside becomes a space"},
    {"red  car", "red car*10", 0.0, "all agree: inner double space is not squeezed"},
    {"\xc2\xa0yes", "yes*10", 1.0, "strip removes Unicode whitespace (U+00A0)"},
};

static void hand_checked_pairs(void **state) {
    int bad = 0;
    for (size_t c = 0; c < LV_ARRAY_LEN(CASES); c++) {
        const char *answers[16];
        int n = expand(CASES[c].answers, answers, 16);
        vqa_result r;
        lv_err err = {{0}};
        assert_int_equal(vqa_score(CASES[c].pred, answers, n, &r, &err), LV_OK);
        if (fabs(r.accuracy - CASES[c].want) > 1e-12) {
            printf("  pred \"%s\" vs %s: got %.17g, want %.17g (%s)\n", CASES[c].pred,
                   CASES[c].answers, r.accuracy, CASES[c].want, CASES[c].why);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

/* The accuracy is the exact fraction sum(min(3, matches_i)) / 30, rounded
 * once; n_matches and normalized say what happened. */
static void exact_fractions_and_details(void **state) {
    const char *answers[16];
    vqa_result r;
    int n = expand("no*2|yes*8", answers, 16);
    assert_int_equal(vqa_score("No.", answers, n, &r, NULL), LV_OK);
    assert_true(r.accuracy == 18.0 / 30); /* exactly the double nearest 0.6 */
    assert_int_equal(r.n_matches, 2);
    assert_true(r.normalized);
    n = expand("yes*10", answers, 16);
    assert_int_equal(vqa_score("yes", answers, n, &r, NULL), LV_OK);
    assert_true(r.accuracy == 1.0);
    assert_int_equal(r.n_matches, 10);
    assert_false(r.normalized);
    assert_int_equal(vqa_score("Yes", answers, n, &r, NULL), LV_OK);
    assert_true(r.accuracy == 0.0);
    assert_int_equal(r.n_matches, 0);
}

static void check_step(lv_status (*fn)(const char *, lv_buf *, lv_err *), const char *in,
                       const char *want) {
    lv_buf out = {0};
    assert_int_equal(fn(in, &out, NULL), LV_OK);
    if (strcmp(out.data, want) != 0) fail_msg("\"%s\" → \"%s\", want \"%s\"", in, out.data, want);
    lv_buf_free(&out);
}

/* Each step on its own, with the exact intermediate strings. */
static void steps(void **state) {
    check_step(vqa_clean, " \t red\ncar \r\n", "red car");
    check_step(vqa_clean, "\xe3\x80\x80yes\xe2\x80\x83", "yes"); /* U+3000, U+2003 */
    check_step(vqa_clean, "caf\xc3\xa9", "caf\xc3\xa9");         /* é is not a space */
    check_step(vqa_clean, "   ", "");

    check_step(vqa_punctuation, "1,000", "1000");
    check_step(vqa_punctuation, "red,blue", "red blue");
    check_step(vqa_punctuation, "red, blue", "red blue"); /* ", " occurs: comma deleted */
    check_step(vqa_punctuation, "what?", "what ");
    check_step(vqa_punctuation, "(2)", " 2 ");
    check_step(vqa_punctuation, "2 (two)", "2 two "); /* " (" deletes '(', ')' spaced */
    check_step(vqa_punctuation, "yes.", "yes");
    check_step(vqa_punctuation, "1.5", "1.5");
    check_step(vqa_punctuation, ".5 and 3.", ".5 and 3");
    check_step(vqa_punctuation, "a.b.c", "abc");
    check_step(vqa_punctuation, "it's 10:30 #1", "it's 10:30 #1"); /* ' : # kept */
    check_step(vqa_punctuation, "a;b/c[d]e\"f{g}h(i)j=k+l\\m_n-o>p<q@r`s,t?u!v",
               "a b c d e f g h i j k l m n o p q r s t u v");
    check_step(vqa_punctuation, "x_y 1,2", "xy 12");

    check_step(vqa_digit_article, "The  Two   DOGS", "2 dogs");
    check_step(vqa_digit_article, "a an the", "");
    check_step(vqa_digit_article, "none zero one two three four five six seven eight nine ten",
               "0 0 1 2 3 4 5 6 7 8 9 10");
    check_step(vqa_digit_article, "eleven", "eleven");
    check_step(vqa_digit_article, "dont isnt whats oclock cant",
               "don't isn't what's o'clock can't");
    check_step(vqa_digit_article, "somebody'd", "somebodyd"); /* the script's own entry */
    check_step(vqa_digit_article, "Im Ive", "im ive");        /* capital keys never match */
    check_step(vqa_digit_article, "\xc3\x89T\xc3\x89", "\xc3\x89t\xc3\x89"); /* ASCII only */

    check_step(vqa_normalize, "  The dog, isnt it?\n", "dog isn't it");
    check_step(vqa_normalize, "Two.", "2");
}

static void errors(void **state) {
    const char *answers[1] = {"yes"};
    vqa_result r = {.accuracy = 5};
    lv_err err = {{0}};
    assert_int_equal(vqa_score("yes", answers, 0, &r, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "no human answers"));
    assert_true(r.accuracy == 0);
    assert_int_equal(vqa_score(NULL, answers, 1, &r, &err), LV_ERR_ARG);
    const char *missing[2] = {"yes", NULL};
    assert_int_equal(vqa_score("yes", missing, 2, &r, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "answer 2"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hand_checked_pairs),
        cmocka_unit_test(exact_fractions_and_details),
        cmocka_unit_test(steps),
        cmocka_unit_test(errors),
    };
    return cmocka_run_group_tests_name("vqa_score", tests, NULL, NULL);
}
