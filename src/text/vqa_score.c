/* vqa_score.c - see vqa_score.h. The rules are the official VQA evaluation's
 * (vqaEval.py at GT-Vision-Lab/VQA a013f00); each function names the Python
 * step it reproduces. Text is UTF-8 and handled byte by byte: every
 * character a rule looks at is ASCII, and ASCII bytes never occur inside a
 * multi-byte character. */
#include "text/vqa_score.h"

#include <stdlib.h>
#include <string.h>

/* ---- tables (vqaEval.py VQAEval.__init__) ------------------------------------ */

/* self.punct: deleted or turned into a space by processPunctuation. '.' is
 * handled apart (periodStrip); ':' and '\'' are not in the list. */
static const char PUNCT[] = ";/[]\"{}()=+\\_-><@`,?!";

/* self.manualMap: number words to digits ("none" counts as zero). */
static const char *const NUMBER_WORDS[][2] = {
    {"none", "0"}, {"zero", "0"}, {"one", "1"},   {"two", "2"},   {"three", "3"}, {"four", "4"},
    {"five", "5"}, {"six", "6"},  {"seven", "7"}, {"eight", "8"}, {"nine", "9"},  {"ten", "10"},
};

/* self.articles */
static const char *const ARTICLES[] = {"a", "an", "the"};

/* self.contractions, entry for entry. Keys with capitals ("Im", "Ive",
 * "Id've", "I'dve") are in the script's table but can never match, because
 * words are lower-cased first; "somebody'd" → "somebodyd" is the script's
 * own (odd) entry. */
static const char *const CONTRACTIONS[][2] = {
    {"aint", "ain't"},
    {"arent", "aren't"},
    {"cant", "can't"},
    {"couldve", "could've"},
    {"couldnt", "couldn't"},
    {"couldn'tve", "couldn't've"},
    {"couldnt've", "couldn't've"},
    {"didnt", "didn't"},
    {"doesnt", "doesn't"},
    {"dont", "don't"},
    {"hadnt", "hadn't"},
    {"hadnt've", "hadn't've"},
    {"hadn'tve", "hadn't've"},
    {"hasnt", "hasn't"},
    {"havent", "haven't"},
    {"hed", "he'd"},
    {"hed've", "he'd've"},
    {"he'dve", "he'd've"},
    {"hes", "he's"},
    {"howd", "how'd"},
    {"howll", "how'll"},
    {"hows", "how's"},
    {"Id've", "I'd've"},
    {"I'dve", "I'd've"},
    {"Im", "I'm"},
    {"Ive", "I've"},
    {"isnt", "isn't"},
    {"itd", "it'd"},
    {"itd've", "it'd've"},
    {"it'dve", "it'd've"},
    {"itll", "it'll"},
    {"let's", "let's"},
    {"maam", "ma'am"},
    {"mightnt", "mightn't"},
    {"mightnt've", "mightn't've"},
    {"mightn'tve", "mightn't've"},
    {"mightve", "might've"},
    {"mustnt", "mustn't"},
    {"mustve", "must've"},
    {"neednt", "needn't"},
    {"notve", "not've"},
    {"oclock", "o'clock"},
    {"oughtnt", "oughtn't"},
    {"ow's'at", "'ow's'at"},
    {"'ows'at", "'ow's'at"},
    {"'ow'sat", "'ow's'at"},
    {"shant", "shan't"},
    {"shed've", "she'd've"},
    {"she'dve", "she'd've"},
    {"she's", "she's"},
    {"shouldve", "should've"},
    {"shouldnt", "shouldn't"},
    {"shouldnt've", "shouldn't've"},
    {"shouldn'tve", "shouldn't've"},
    {"somebody'd", "somebodyd"},
    {"somebodyd've", "somebody'd've"},
    {"somebody'dve", "somebody'd've"},
    {"somebodyll", "somebody'll"},
    {"somebodys", "somebody's"},
    {"someoned", "someone'd"},
    {"someoned've", "someone'd've"},
    {"someone'dve", "someone'd've"},
    {"someonell", "someone'll"},
    {"someones", "someone's"},
    {"somethingd", "something'd"},
    {"somethingd've", "something'd've"},
    {"something'dve", "something'd've"},
    {"somethingll", "something'll"},
    {"thats", "that's"},
    {"thered", "there'd"},
    {"thered've", "there'd've"},
    {"there'dve", "there'd've"},
    {"therere", "there're"},
    {"theres", "there's"},
    {"theyd", "they'd"},
    {"theyd've", "they'd've"},
    {"they'dve", "they'd've"},
    {"theyll", "they'll"},
    {"theyre", "they're"},
    {"theyve", "they've"},
    {"twas", "'twas"},
    {"wasnt", "wasn't"},
    {"wed've", "we'd've"},
    {"we'dve", "we'd've"},
    {"weve", "we've"},
    {"werent", "weren't"},
    {"whatll", "what'll"},
    {"whatre", "what're"},
    {"whats", "what's"},
    {"whatve", "what've"},
    {"whens", "when's"},
    {"whered", "where'd"},
    {"wheres", "where's"},
    {"whereve", "where've"},
    {"whod", "who'd"},
    {"whod've", "who'd've"},
    {"who'dve", "who'd've"},
    {"wholl", "who'll"},
    {"whos", "who's"},
    {"whove", "who've"},
    {"whyll", "why'll"},
    {"whyre", "why're"},
    {"whys", "why's"},
    {"wont", "won't"},
    {"wouldve", "would've"},
    {"wouldnt", "wouldn't"},
    {"wouldnt've", "wouldn't've"},
    {"wouldn'tve", "wouldn't've"},
    {"yall", "y'all"},
    {"yall'll", "y'all'll"},
    {"y'allll", "y'all'll"},
    {"yall'd've", "y'all'd've"},
    {"y'alld've", "y'all'd've"},
    {"y'all'dve", "y'all'd've"},
    {"youd", "you'd"},
    {"youd've", "you'd've"},
    {"you'dve", "you'd've"},
    {"youll", "you'll"},
    {"youre", "you're"},
    {"youve", "you've"},
};

/* The script's re.sub(..., re.UNICODE) passes 32 as re.sub's count. */
#define PERIOD_STRIP_MAX 32

/* ---- helpers ------------------------------------------------------------------ */

static void buf_clear(lv_buf *b) {
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

static lv_status put(lv_buf *b, const char *s, size_t n, lv_err *err) {
    return lv_buf_append(b, s, n) ? lv_fail(err, LV_ERR_NOMEM, "out of memory scoring an answer")
                                  : LV_OK;
}

static bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

/* Bytes of the whitespace character at s (n bytes left), or 0 if s does not
 * start one: Python's str.isspace set, UTF-8 encoded. */
static size_t space_len(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    if (n == 0) return 0;
    if ((u[0] >= 0x09 && u[0] <= 0x0d) || (u[0] >= 0x1c && u[0] <= 0x20)) return 1;
    if (n >= 2 && u[0] == 0xc2 && (u[1] == 0x85 || u[1] == 0xa0)) return 2; /* U+0085, U+00A0 */
    if (n < 3) return 0;
    unsigned cp = ((unsigned)u[0] << 16) | ((unsigned)u[1] << 8) | u[2]; /* 3 bytes as written */
    bool space = cp == 0xe19a80                                          /* U+1680 */
                 || (cp >= 0xe28080 && cp <= 0xe2808a)                   /* U+2000..U+200A */
                 || cp == 0xe280a8 || cp == 0xe280a9                     /* U+2028, U+2029 */
                 || cp == 0xe280af || cp == 0xe2819f                     /* U+202F, U+205F */
                 || cp == 0xe38080;                                      /* U+3000 */
    return space ? 3 : 0;
}

static bool word_is(const char *w, size_t n, const char *s) {
    return strlen(s) == n && memcmp(w, s, n) == 0;
}

/* ---- the steps ---------------------------------------------------------------- */

/* evaluate(): s.replace('\n', ' ').replace('\t', ' ').strip(). Both
 * characters are whitespace, so replacing them before or after the strip is
 * the same. */
lv_status vqa_clean(const char *s, lv_buf *out, lv_err *err) {
    size_t n = strlen(s), start = 0, end = 0, k;
    while (start < n && (k = space_len(s + start, n - start)) > 0) start += k;
    for (size_t i = start; i < n;) { /* end: just after the last non-space character */
        k = space_len(s + i, n - i);
        i += k ? k : 1;
        if (!k) end = i;
    }
    buf_clear(out);
    if (put(out, "", 0, err)) return LV_ERR_NOMEM;
    for (size_t i = start; i < end; i++) {
        char c = (s[i] == '\n' || s[i] == '\t') ? ' ' : s[i];
        if (put(out, &c, 1, err)) return LV_ERR_NOMEM;
    }
    return LV_OK;
}

/* processPunctuation: each listed character is deleted when the input has it
 * next to a space (or has digit,digit anywhere), else replaced by a space;
 * then periodStrip deletes up to 32 '.' not followed by a digit. The
 * conditions look at the input text, the period's lookahead at the text
 * after the first pass (the regex runs on outText). */
lv_status vqa_punctuation(const char *s, lv_buf *out, lv_err *err) {
    size_t n = strlen(s);
    bool comma_digit = false;
    for (size_t i = 0; i + 2 < n && !comma_digit; i++)
        comma_digit = is_digit(s[i]) && s[i + 1] == ',' && is_digit(s[i + 2]);
    bool drop[sizeof PUNCT - 1];
    for (size_t p = 0; p < sizeof PUNCT - 1; p++) {
        char after[3] = {PUNCT[p], ' ', 0}, before[3] = {' ', PUNCT[p], 0};
        drop[p] = comma_digit || strstr(s, after) || strstr(s, before);
    }
    lv_buf mid = {0};
    lv_status st = put(&mid, "", 0, err);
    for (size_t i = 0; i < n && !st; i++) {
        const char *p = strchr(PUNCT, s[i]); /* s[i] != 0: i < strlen(s) */
        if (!p)
            st = put(&mid, &s[i], 1, err);
        else if (!drop[p - PUNCT])
            st = put(&mid, " ", 1, err);
    }
    buf_clear(out);
    if (!st) st = put(out, "", 0, err);
    int removed = 0;
    for (size_t i = 0; i < mid.len && !st; i++) {
        bool strip = mid.data[i] == '.' && !(i + 1 < mid.len && is_digit(mid.data[i + 1])) &&
                     removed < PERIOD_STRIP_MAX;
        if (strip)
            removed++;
        else
            st = put(out, &mid.data[i], 1, err);
    }
    lv_buf_free(&mid);
    return st;
}

/* Appends word w (n bytes, already lower-cased) as processDigitArticle
 * keeps it: number word → digits, article → nothing, contraction → with
 * its apostrophe. */
static lv_status put_word(lv_buf *out, const char *w, size_t n, lv_err *err) {
    for (size_t i = 0; i < LV_ARRAY_LEN(NUMBER_WORDS); i++)
        if (word_is(w, n, NUMBER_WORDS[i][0])) {
            w = NUMBER_WORDS[i][1];
            n = strlen(w);
            break;
        }
    for (size_t i = 0; i < LV_ARRAY_LEN(ARTICLES); i++)
        if (word_is(w, n, ARTICLES[i])) return LV_OK;
    for (size_t i = 0; i < LV_ARRAY_LEN(CONTRACTIONS); i++)
        if (word_is(w, n, CONTRACTIONS[i][0])) {
            w = CONTRACTIONS[i][1];
            n = strlen(w);
            break;
        }
    if (out->len && put(out, " ", 1, err)) return LV_ERR_NOMEM;
    return put(out, w, n, err);
}

/* processDigitArticle: lower(), split(), map and drop word by word,
 * ' '.join(). */
lv_status vqa_digit_article(const char *s, lv_buf *out, lv_err *err) {
    size_t n = strlen(s);
    lv_buf word = {0};
    lv_status st = LV_OK;
    buf_clear(out);
    if (put(out, "", 0, err)) return LV_ERR_NOMEM;
    for (size_t i = 0; i <= n && !st;) {
        size_t k = i < n ? space_len(s + i, n - i) : 1;
        if (k) { /* a space (or the end) ends the current word */
            if (word.len) st = put_word(out, word.data, word.len, err);
            buf_clear(&word);
            i += k;
            continue;
        }
        char c = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] - 'A' + 'a') : s[i];
        st = put(&word, &c, 1, err);
        i++;
    }
    lv_buf_free(&word);
    return st;
}

lv_status vqa_normalize(const char *s, lv_buf *out, lv_err *err) {
    lv_buf a = {0}, b = {0};
    lv_status st = vqa_clean(s, &a, err);
    if (!st) st = vqa_punctuation(a.data, &b, err);
    if (!st) st = vqa_digit_article(b.data, out, err);
    lv_buf_free(&a);
    lv_buf_free(&b);
    return st;
}

/* ---- accuracy (VQAEval.evaluate) --------------------------------------------- */

lv_status vqa_score(const char *pred, const char *const *answers, int n_answers, vqa_result *out,
                    lv_err *err) {
    *out = (vqa_result){0};
    if (n_answers < 1) return lv_fail(err, LV_ERR_ARG, "no human answers to score against");
    if (!pred) return lv_fail(err, LV_ERR_ARG, "no prediction to score");
    for (int i = 0; i < n_answers; i++)
        if (!answers[i]) return lv_fail(err, LV_ERR_ARG, "human answer %d is missing", i + 1);

    lv_buf *gt = calloc((size_t)n_answers, sizeof *gt), res = {0}, tmp = {0};
    if (!gt) return lv_fail(err, LV_ERR_NOMEM, "out of memory scoring an answer");
    lv_status st = vqa_clean(pred, &res, err);
    bool agree = true;
    for (int i = 0; i < n_answers && !st; i++) {
        st = vqa_clean(answers[i], &gt[i], err);
        if (!st && i > 0 && strcmp(gt[i].data, gt[0].data) != 0) agree = false;
    }
    /* len(set(gtAnswers)) > 1: only then are both sides normalised. */
    for (int i = -1; i < n_answers && !st && !agree; i++) {
        lv_buf *b = i < 0 ? &res : &gt[i];
        st = vqa_punctuation(b->data, &tmp, err);
        if (!st) st = vqa_digit_article(tmp.data, b, err);
    }
    if (!st) {
        int m = 0;
        for (int i = 0; i < n_answers; i++) m += strcmp(gt[i].data, res.data) == 0;
        /* Subset i leaves out answer i: min(1, matches/3) = min(3, matches) / 3. */
        long units = 0;
        for (int i = 0; i < n_answers; i++) {
            int others = m - (strcmp(gt[i].data, res.data) == 0);
            units += others < 3 ? others : 3;
        }
        *out = (vqa_result){
            .accuracy = (double)units / (3.0 * n_answers), .n_matches = m, .normalized = !agree};
    }
    for (int i = 0; i < n_answers; i++) lv_buf_free(&gt[i]);
    free(gt);
    lv_buf_free(&res);
    lv_buf_free(&tmp);
    return st;
}
