/* test_llava_eval.c - llava-eval end to end on a tiny VQA v2 set made here
 * from the fixture model tests/data/forward/llava-next-tiny (random weights)
 * and its images:
 *   - the report's structure and counts, one skipped question (no image),
 *     each image decoded once however many questions share it;
 *   - every prediction equals what llava-cli --temperature 0 answers to the
 *     same question about the same image;
 *   - scoring through the whole pipeline: the human answers are made from
 *     llava-cli's predictions, so some questions score 100 and 90;
 *   - image naming (COCO prefix, plain ids, --image-prefix), --limit;
 *   - bad input: clear errors (exit 1) or counted skips, never a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "backend/backend.h"
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOKENS "8"

static const char *fixtures(void) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/forward", tu_env("LLAVA_TEST_DATA"));
    return path;
}

static const char *model(void) {
    static char path[1100];
    snprintf(path, sizeof path, "%s/llava-next-tiny", fixtures());
    return path;
}

/* The questions of the set: image ids 1..3 have files, 4 has none. */
static const struct {
    int qid, image_id;
    const char *question, *qtype, *atype, *image;
} QS[] = {
    {10, 1, "What color is the box?", "what color is the", "other", "a_100x60.png"},
    {20, 2, "How many dogs are there?", "how many", "number", "b_45x130.png"},
    {11, 1, "Is it red?", "is it", "yes/no", "a_100x60.png"},
    {30, 3, "What is this?", "what is this", "other", "c_56x56.png"},
    {40, 4, "Where is it?", "where is the", "other", NULL},
};
#define N_QS ((int)(sizeof QS / sizeof QS[0]))

/* llava-cli's greedy answer to question i about its image. */
static char *cli_answer(int i) {
    char cmd[4096], *out;
    snprintf(cmd, sizeof cmd,
             "'%s/llava-cli' --model '%s' --image '%s/images/%s' --prompt '%s' --temperature 0 "
             "--max-tokens " MAX_TOKENS " --json 2>/dev/null",
             tu_env("LLAVA_BIN_DIR"), model(), fixtures(), QS[i].image, QS[i].question);
    assert_int_equal(tu_run(cmd, &out), 0);
    json_error_t je;
    json_t *o = json_loads(out, 0, &je);
    if (!o) fail_msg("llava-cli printed no JSON (%s): %s", je.text, out);
    char *text = strdup(json_string_value(json_object_get(o, "text")));
    json_decref(o);
    free(out);
    return text;
}

static void dump(json_t *o, const char *dir, const char *name) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_int_equal(json_dump_file(o, path, JSON_INDENT(1)), 0);
    json_decref(o);
}

static json_t *questions_json(void) {
    json_t *qs = json_array();
    for (int i = 0; i < N_QS; i++)
        json_array_append_new(qs, json_pack("{s:i, s:s, s:i}", "image_id", QS[i].image_id,
                                            "question", QS[i].question, "question_id", QS[i].qid));
    return json_pack("{s:{}, s:o}", "info", "questions", qs);
}

/* 10 answer records: n_pred copies of pred, then "zebra" (answer_id 1..10). */
static json_t *answers(const char *pred, int n_pred) {
    json_t *a = json_array();
    for (int k = 0; k < 10; k++)
        json_array_append_new(a, json_pack("{s:s, s:s, s:i}", "answer", k < n_pred ? pred : "zebra",
                                           "answer_confidence", "yes", "answer_id", k + 1));
    return a;
}

/* Annotations whose answers are built from preds: question 10 unanimous on
 * its prediction (100), question 11 with 3 of 10 (90), the rest "zebra". */
static json_t *annotations_json(char *const *preds) {
    json_t *anns = json_array();
    for (int i = 0; i < N_QS; i++) {
        int n = QS[i].qid == 10 ? 10 : QS[i].qid == 11 ? 3 : 0;
        json_array_append_new(
            anns, json_pack("{s:i, s:i, s:s, s:s, s:s, s:o}", "question_id", QS[i].qid, "image_id",
                            QS[i].image_id, "question_type", QS[i].qtype, "answer_type",
                            QS[i].atype, "multiple_choice_answer", "zebra", "answers",
                            answers(preds[i] ? preds[i] : "zebra", n)));
    }
    return json_pack("{s:o}", "annotations", anns);
}

/* Copies image i's file into dir as name_fmt % image_id. */
static void put_image(const char *dir, const char *name_fmt, int i) {
    char name[256], cmd[4096];
    snprintf(name, sizeof name, name_fmt, QS[i].image_id);
    snprintf(cmd, sizeof cmd, "cp '%s/images/%s' '%s/%s'", fixtures(), QS[i].image, dir, name);
    assert_int_equal(system(cmd), 0);
}

/* A set in $LLAVA_TMP/<tag>: q.json, a.json, img/ (images named by fmt).
 * preds: the answers' source (NULL: all "zebra"). Returns the folder. */
static const char *make_set(const char *tag, const char *fmt, char *const *preds) {
    const char *dir = tu_tmpdir(tag);
    static char img[1100];
    snprintf(img, sizeof img, "%s/img", dir);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", img);
    assert_int_equal(system(cmd), 0);
    for (int i = 0; i < N_QS; i++)
        if (QS[i].image) put_image(img, fmt, i);
    tu_write_file(img, "README.txt", "not an image\n", 13);
    char *none[N_QS] = {0};
    dump(questions_json(), dir, "q.json");
    dump(annotations_json(preds ? preds : none), dir, "a.json");
    return dir;
}

/* Runs llava-eval on the set in dir with extra flags; stdout in *out
 * (stderr too with merge). */
static int eval(const char *dir, const char *extra, bool merge, char **out) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "'%s/llava-eval' --model '%s' --questions '%s/q.json' --annotations '%s/a.json' "
             "--images '%s/img' --max-tokens " MAX_TOKENS " --threads 2 %s %s",
             tu_env("LLAVA_BIN_DIR"), model(), dir, dir, dir, extra,
             merge ? "2>&1" : "2>/dev/null");
    return tu_run(cmd, out);
}

static json_t *load_report(const char *dir) {
    char path[2048];
    snprintf(path, sizeof path, "%s/report.json", dir);
    json_error_t je;
    json_t *r = json_load_file(path, 0, &je);
    if (!r) fail_msg("%s: %s", path, je.text);
    return r;
}

static double num(json_t *o, const char *path) { /* "a.b.c" */
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *k = strtok(buf, "."); k; k = strtok(NULL, ".")) o = json_object_get(o, k);
    if (!json_is_number(o)) fail_msg("report: %s is not a number", path);
    return json_number_value(o);
}

static void report_matches_llava_cli(void **state) {
    char *preds[N_QS] = {0};
    for (int i = 0; i < N_QS; i++)
        if (QS[i].image) preds[i] = cli_answer(i);
    const char *dir = make_set("eval_main", "COCO_val2014_%012d.png", preds);
    char extra[2048], *out;
    snprintf(extra, sizeof extra, "--report '%s/report.json'", dir);
    assert_int_equal(eval(dir, extra, false, &out), 0);

    /* the Markdown table */
    assert_non_null(strstr(out, "| **overall** | 4 | 47.50 |"));
    assert_non_null(strstr(out, "| answer type: yes/no | 1 | 90.00 |"));
    assert_non_null(strstr(out, "| answer type: other | 2 | 50.00 |"));
    assert_non_null(strstr(out, "| question type: what color is the | 1 | 100.00 |"));
    free(out);

    json_t *r = load_report(dir);
    assert_int_equal(num(r, "n_questions"), 5);
    assert_int_equal(num(r, "n_scored"), 4);
    assert_int_equal(num(r, "n_skipped"), 1);
    assert_true(fabs(num(r, "accuracy.overall") - 47.5) < 1e-9);
    assert_true(fabs(num(r, "accuracy.per_answer_type.other.accuracy") - 50) < 1e-9);
    assert_int_equal(num(r, "accuracy.per_answer_type.other.n"), 2);
    assert_true(fabs(num(r, "accuracy.per_answer_type.yes/no.accuracy") - 90) < 1e-9);
    assert_true(num(r, "accuracy.per_answer_type.number.accuracy") == 0);
    assert_int_equal(
        json_object_size(json_object_get(json_object_get(r, "accuracy"), "per_question_type")), 4);
    assert_int_equal(num(r, "images.decoded"), 3); /* image 1 once for its two questions */
    assert_int_equal(num(r, "images.failed"), 0);
    assert_int_equal(num(r, "tokens.generated"), 4 * atoi(MAX_TOKENS));
    assert_true(num(r, "tokens.per_s") > 0);
    double p50 = num(r, "latency_ms.p50"), p95 = num(r, "latency_ms.p95");
    assert_true(p50 > 0 && p50 <= p95 && p95 <= num(r, "latency_ms.p99"));
    assert_true(num(r, "latency_ms.p99") <= num(r, "latency_ms.max"));
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r, "input"), "image_prefix")),
        "COCO_val2014_");
    assert_int_equal(num(r, "settings.threads"), 2);

    /* per question, in the questions file's order; predictions = llava-cli's */
    json_t *qs = json_object_get(r, "questions");
    assert_int_equal(json_array_size(qs), 4);
    const double want_acc[] = {100, 0, 90, 0};
    for (int i = 0; i < 4; i++) {
        json_t *q = json_array_get(qs, (size_t)i);
        assert_int_equal(num(q, "question_id"), QS[i].qid);
        assert_int_equal(num(q, "image_id"), QS[i].image_id);
        assert_string_equal(json_string_value(json_object_get(q, "question")), QS[i].question);
        assert_string_equal(json_string_value(json_object_get(q, "question_type")), QS[i].qtype);
        assert_string_equal(json_string_value(json_object_get(q, "answer_type")), QS[i].atype);
        assert_string_equal(json_string_value(json_object_get(q, "prediction")), preds[i]);
        assert_true(fabs(num(q, "accuracy") - want_acc[i]) < 1e-9);
        assert_true(num(q, "latency_ms") > 0);
        assert_int_equal(num(q, "n_tokens"), atoi(MAX_TOKENS));
        assert_string_equal(json_string_value(json_object_get(q, "finish_reason")), "length");
    }
    json_t *sk = json_array_get(json_object_get(r, "skipped"), 0);
    assert_int_equal(num(sk, "question_id"), 40);
    assert_non_null(strstr(json_string_value(json_object_get(sk, "reason")), "image_id 4"));
    json_decref(r);

    /* --predictions: the report's own answers, as a VQA results file, score
     * the same without running a model (how another engine's answers compare) */
    json_t *results = json_array();
    for (int i = 0; i < 4; i++)
        json_array_append_new(results, json_pack("{s:I, s:s}", "question_id", (json_int_t)QS[i].qid,
                                                 "answer", preds[i]));
    dump(results, dir, "results.json");
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "'%s/llava-eval' --questions '%s/q.json' --annotations '%s/a.json' "
             "--predictions '%s/results.json' --report '%s/report2.json' 2>/dev/null",
             tu_env("LLAVA_BIN_DIR"), dir, dir, dir, dir);
    assert_int_equal(tu_run(cmd, &out), 0);
    assert_non_null(strstr(out, "| **overall** | 4 | 47.50 |"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s/report2.json", dir);
    json_error_t je;
    json_t *r2 = json_load_file(cmd, 0, &je);
    assert_non_null(r2);
    assert_true(fabs(num(r2, "accuracy.overall") - 47.5) < 1e-9);
    assert_int_equal(num(r2, "n_skipped"), 1); /* question 40 has no answer in the file */
    json_decref(r2);

    /* --parallel 3: the questions decoded together through the scheduler give
     * the very same predictions (and so the same table); --device cpu names the default */
    snprintf(extra, sizeof extra, "--parallel 3 --device cpu --report '%s/report3.json'", dir);
    assert_int_equal(eval(dir, extra, false, &out), 0);
    assert_non_null(strstr(out, "| **overall** | 4 | 47.50 |"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s/report3.json", dir);
    json_t *r3 = json_load_file(cmd, 0, &je);
    assert_non_null(r3);
    assert_int_equal(num(r3, "settings.parallel"), 3);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r3, "settings"), "backend")), "cpu");
    json_t *qs3 = json_object_get(r3, "questions");
    assert_int_equal(json_array_size(qs3), 4);
    for (int i = 0; i < 4; i++)
        assert_string_equal(
            json_string_value(json_object_get(json_array_get(qs3, (size_t)i), "prediction")),
            preds[i]);
    json_decref(r3);
    assert_int_equal(eval(dir, "--parallel 0", true, &out), 2);
    assert_non_null(strstr(out, "parallel"));
    free(out);

    /* progress and the skip warning on stderr (not a terminal: plain lines) */
    assert_int_equal(eval(dir, "", true, &out), 0);
    assert_non_null(strstr(out, "llava-eval: 5/5 questions"));
    assert_non_null(strstr(out, "question 40 skipped: no image file for image_id 4"));
    free(out);
    for (int i = 0; i < N_QS; i++) free(preds[i]);
}

static void image_names_and_limit(void **state) {
    /* plain <id>.png, detected; and given as an empty prefix */
    const char *dir = make_set("eval_plain", "%d.png", NULL);
    char *out, extra[2048];
    snprintf(extra, sizeof extra, "--report '%s/report.json'", dir);
    assert_int_equal(eval(dir, extra, false, &out), 0);
    free(out);
    json_t *r = load_report(dir);
    assert_int_equal(num(r, "n_scored"), 4);
    json_decref(r);
    snprintf(extra, sizeof extra, "--image-prefix '' --limit 2 --report '%s/report.json'", dir);
    assert_int_equal(eval(dir, extra, false, &out), 0);
    free(out);
    r = load_report(dir);
    assert_int_equal(num(r, "n_questions"), 2);
    assert_int_equal(num(r, "n_scored"), 2);
    json_decref(r);

    /* a prefix that names no file: every question skipped → exit 1, report still written */
    snprintf(extra, sizeof extra, "--image-prefix img_ --report '%s/report.json'", dir);
    assert_int_equal(eval(dir, extra, true, &out), 1);
    assert_non_null(strstr(out, "no question could be evaluated (5 skipped)"));
    free(out);
    r = load_report(dir);
    assert_int_equal(num(r, "n_skipped"), 5);
    json_decref(r);
}

/* Replaces dir/name with text. */
static void put(const char *dir, const char *name, const char *text) {
    tu_write_file(dir, name, text, strlen(text));
}

static void expect_error(const char *dir, const char *extra, int rc, const char *msg) {
    char *out;
    int got = eval(dir, extra, true, &out);
    if (got != rc || !strstr(out, msg))
        fail_msg("exit %d (want %d), output lacks \"%s\":\n%s", got, rc, msg, out);
    free(out);
}

static void bad_input(void **state) {
    const char *dir = make_set("eval_bad", "COCO_val2014_%012d.png", NULL);
    char path[2048], cmd[4096];

    /* an undecodable image: its questions skipped, naming the file */
    snprintf(path, sizeof path, "%s/img/COCO_val2014_000000000003.png", dir);
    put(dir, "img/COCO_val2014_000000000003.png", "this is not a PNG");
    char *out;
    assert_int_equal(eval(dir, "", true, &out), 0);
    assert_non_null(strstr(out, "question 30 skipped"));
    assert_non_null(strstr(out, path));
    free(out);

    /* usage */
    expect_error(dir, "--limit 0", 2, "--limit wants an integer");
    expect_error(dir, "--max-tokens x", 2, "--max-tokens wants an integer");
    expect_error(dir, "--bogus", 2, "unknown or incomplete option");
    snprintf(cmd, sizeof cmd, "'%s/llava-eval' --model '%s' 2>&1", tu_env("LLAVA_BIN_DIR"),
             model());
    assert_int_equal(tu_run(cmd, &out), 2);
    assert_non_null(strstr(out, "are required"));
    free(out);

    /* files and folders */
    expect_error(dir, "--backend tpu", 1, "unknown backend");
    expect_error(dir, "--device tpu", 1, "llava-eval: unknown backend \"tpu\"");
    expect_error(dir, "--device cuda:x", 1, "llava-eval: unknown backend \"cuda:x\"");
    if (!be_find("cuda")) expect_error(dir, "--device cuda", 1, "this build has no CUDA");
    snprintf(cmd, sizeof cmd, "--images '%s/nowhere'", dir);
    expect_error(dir, cmd, 1, "cannot open the image folder");
    snprintf(cmd, sizeof cmd, "--questions '%s/missing.json'", dir);
    expect_error(dir, cmd, 1, "missing.json: no such file");

    /* malformed JSON and wrong shapes */
    put(dir, "bad.json", "{\"questions\": [ {\"image_id\": 1,");
    snprintf(cmd, sizeof cmd, "--questions '%s/bad.json'", dir);
    expect_error(dir, cmd, 1, "bad.json: line 1");
    put(dir, "bad.json", "{\"questionz\": []}");
    expect_error(dir, cmd, 1, "expected an object with a \"questions\" array");
    put(dir, "bad.json",
        "{\"questions\": [{\"image_id\": \"1\", \"question\": \"x\", "
        "\"question_id\": 10}]}");
    expect_error(dir, cmd, 1, "bad.json: questions[0]: expected");
    put(dir, "bad.json",
        "{\"questions\": [{\"image_id\": 1, \"question\": \"x\", "
        "\"question_id\": 99}]}");
    expect_error(dir, cmd, 1, "question 99 (questions[0]) has no annotation");
    put(dir, "bad.json",
        "{\"questions\": [{\"image_id\": 1, \"question\": \"x\", "
        "\"question_id\": 10}, {\"image_id\": 1, \"question\": \"y\", "
        "\"question_id\": 10}]}");
    expect_error(dir, cmd, 1, "question_id 10 appears twice");
    put(dir, "bad.json", "{\"questions\": []}");
    expect_error(dir, cmd, 1, "no questions");

    snprintf(cmd, sizeof cmd, "--annotations '%s/bad.json'", dir);
    put(dir, "bad.json",
        "{\"annotations\": [{\"question_id\": 10, \"image_id\": 1, "
        "\"question_type\": \"t\", \"answer_type\": \"a\", \"answers\": []}]}");
    expect_error(dir, cmd, 1, "\"answers\" must be a non-empty array");
    put(dir, "bad.json",
        "{\"annotations\": [{\"question_id\": 10, \"image_id\": 1, "
        "\"question_type\": \"t\", \"answer_type\": \"a\", "
        "\"answers\": [{\"answer\": 3}]}]}");
    expect_error(dir, cmd, 1, "annotations[0].answers[0]: expected {\"answer\": string");
    put(dir, "bad.json",
        "{\"annotations\": [{\"question_id\": 10, \"image_id\": 7, "
        "\"question_type\": \"t\", \"answer_type\": \"a\", "
        "\"answers\": [{\"answer\": \"x\"}]}]}");
    expect_error(dir, cmd, 1, "image_id is not 1 as in the questions file");
    put(dir, "bad.json", "{\"annotations\": [{\"question_id\": 10}, {\"question_id\": 10}]}");
    expect_error(dir, cmd, 1, "question_id 10 is annotated twice");
}

/* Identical answer records (no answer_id): scored by position, with a
 * warning that the official script would drop all copies at once. */
static void duplicate_answer_records_warn(void **state) {
    const char *dir = make_set("eval_dup", "COCO_val2014_%012d.png", NULL);
    char path[2048];
    snprintf(path, sizeof path, "%s/a.json", dir);
    json_t *a = json_load_file(path, 0, NULL);
    assert_non_null(a);
    json_t *first = json_array_get(json_object_get(a, "annotations"), 0);
    json_t *recs = json_array();
    for (int k = 0; k < 10; k++) json_array_append_new(recs, json_pack("{s:s}", "answer", "red"));
    json_object_set_new(first, "answers", recs);
    dump(a, dir, "a.json");
    char *out;
    assert_int_equal(eval(dir, "", true, &out), 0);
    assert_non_null(strstr(out, "1 question has identical answer records"));
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(report_matches_llava_cli),
        cmocka_unit_test(image_names_and_limit),
        cmocka_unit_test(bad_input),
        cmocka_unit_test(duplicate_answer_records_warn),
    };
    return cmocka_run_group_tests_name("llava_eval", tests, NULL, NULL);
}
