/*
 * vqa_score.h - the VQA accuracy of one predicted answer, as the official
 * VQA evaluation computes it.
 *
 * Reference: GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/
 * vqaEval.py at a013f00 (master; VQAEval.evaluate, processPunctuation,
 * processDigitArticle). For one question with n human answers (10 in VQA
 * v2) and a predicted answer:
 *
 *   1. clean: every answer and the prediction get '\n' and '\t' replaced by
 *      ' ', then Python's str.strip() (Unicode whitespace at both ends);
 *   2. only if the cleaned human answers are NOT all the same string, the
 *      answers and the prediction are normalised: punctuation, then digits
 *      and articles (below). When all humans agree, nothing is normalised and
 *      the prediction must equal their answer exactly after cleaning ("yes."
 *      or "Yes" against ten "yes" scores 0). The authors keep this on purpose:
 *      unanimous answers are often text read from the image (OCR).
 *   3. accuracy = mean over the n leave-one-out subsets (each human answer
 *      left out in turn) of min(1, #matches among the other n-1 / 3).
 *      With m of 10 humans matching: m=0 → 0, 1 → 0.3, 2 → 0.6, 3 → 0.9,
 *      m >= 4 → 1.
 *
 * Punctuation (processPunctuation), on the text t as it comes in:
 *   - the 21 characters ; / [ ] " { } ( ) = + \ _ - > < @ ` , ? ! are each
 *     deleted if t contains that character followed by a space or preceded
 *     by one, or if t contains digit,digit anywhere ("1,000"); otherwise
 *     each occurrence becomes a space. Every other character (':', '\'',
 *     '#', '%', '&', '*', ...) is kept.
 *   - then every '.' not followed by a digit is deleted (so "1.5" keeps its
 *     point, "yes." and "3." lose theirs), at most 32 of them: the script
 *     passes re.UNICODE (32) in the position of re.sub's count argument.
 * Digits and articles (processDigitArticle):
 *   - lower-case, split on whitespace, each word mapped by the number table
 *     (none→0, zero→0, one→1 ... ten→10), the articles a / an / the dropped,
 *     each remaining word mapped by the contractions table (dont→don't,
 *     isnt→isn't, ...), then joined with single spaces.
 *
 * Where this differs from the Python script (never for VQA v2's data):
 *   - lower-casing is ASCII only (str.lower() maps all of Unicode) and a
 *     digit is 0-9 (Python's \d also matches other scripts' digits);
 *     whitespace is Python's full set (str.isspace), UTF-8 encoded.
 *   - leave-one-out drops answer i by position. The script drops every
 *     answer record equal to record i as a whole dict, which is the same
 *     thing as long as records differ (VQA v2 numbers them with answer_id
 *     1..10); with identical records it would drop all copies at once.
 *   - the accuracy is computed as one division, sum(min(3, matches_i)) /
 *     (3 n), the exact fraction rounded once; the script sums n floats
 *     (which may differ in the last bit).
 *
 * Usage:
 *     const char *answers[10] = {"2", "2", "two", ...};
 *     vqa_result r;
 *     if (vqa_score("Two.", answers, 10, &r, &err) != LV_OK) ... err.msg ...
 *     ... r.accuracy in [0, 1] ...
 *
 * Pure functions: no global state, safe from any number of threads.
 */
#ifndef LV_TEXT_VQA_SCORE_H
#define LV_TEXT_VQA_SCORE_H

#include "base/buf.h"
#include "base/common.h"

#include <stdbool.h>

/* Each step on its own, for tests and reports. s is NUL-terminated UTF-8
 * and must not point into out; out is emptied, then receives the result.
 * LV_ERR_NOMEM only. */
lv_status vqa_clean(const char *s, lv_buf *out, lv_err *err);         /* step 1 */
lv_status vqa_punctuation(const char *s, lv_buf *out, lv_err *err);   /* processPunctuation */
lv_status vqa_digit_article(const char *s, lv_buf *out, lv_err *err); /* processDigitArticle */
/* clean, punctuation, digit_article: what a prediction becomes when the
 * human answers disagree. */
lv_status vqa_normalize(const char *s, lv_buf *out, lv_err *err);

typedef struct {
    double accuracy; /* [0, 1]: the mean over the leave-one-out subsets */
    int n_matches;   /* human answers equal to the prediction (after the rules) */
    bool normalized; /* the humans disagreed, so both sides were normalised */
} vqa_result;

/*
 * Scores pred against n_answers human answers (NUL-terminated UTF-8,
 * borrowed). Errors: LV_ERR_ARG (no answers, a NULL string), LV_ERR_NOMEM.
 * On failure *out is zeroed.
 */
lv_status vqa_score(const char *pred, const char *const *answers, int n_answers, vqa_result *out,
                    lv_err *err);

#endif
