/*
 * llava-eval - a model's VQA accuracy on a set in the VQA v2 format: every
 * question asked about its image, the answer scored as the official VQA
 * evaluation scores it (text/vqa_score.h), overall, per question type and
 * per answer type, with latency and speed.
 *
 *   llava-eval --model PATH --questions Q.json --annotations A.json --images DIR
 *              [--image-prefix PREFIX] [--limit N] [--threads N] [--exact] [--max-tokens N]
 *              [--prompt-suffix TEXT] [--report OUT.json] [--device cpu|ref|cuda[:N]]
 *
 * --device picks the backend (--backend is the same flag under its older
 * name); a name this build lacks is an error before anything is read.
 *
 * Input (VQA v2; other keys are ignored):
 *   Q.json  {"questions": [{"image_id", "question", "question_id"}, ...]}
 *   A.json  {"annotations": [{"question_id", "image_id", "question_type",
 *            "answer_type", "answers": [{"answer", ...} x 10], ...}, ...]}
 *   DIR     image files named <prefix><id>.<ext>: the VQA naming
 *           COCO_val2014_000000000042.jpg (prefix "COCO_val2014_", the id
 *           zero-padded to 12 digits) or plain 42.png; any number of digits,
 *           ext jpg/jpeg/png/webp/gif/bmp. Without --image-prefix the prefix
 *           is the one most files in DIR use (a prefix that ends in a digit
 *           cannot be told apart from the id: give it with --image-prefix).
 *
 * Each question (the first N with --limit) goes through the same path as
 * `llava-cli --image F --prompt QUESTION --temperature 0` (engine/request):
 * the question (+ --prompt-suffix) as one user turn of the chat template
 * with the image, generated greedily, up to --max-tokens (default 64). The
 * model is loaded once. Questions run grouped by image, in the order the
 * images first appear, so each image is decoded and preprocessed once and
 * freed once its questions are done; results keep the questions' order.
 *
 * Bad input is an error before the model loads (exit 1, the file and entry
 * named): a missing or malformed file, a question without annotation, an
 * annotation without answers, duplicate question ids. A missing or
 * undecodable image is NOT an error: its questions are skipped with a
 * warning, counted, listed under "skipped" in the report and left out of
 * every average (an image folder is often a partial download). A question
 * whose prompt does not fit the context is skipped the same way.
 *
 * Output: a Markdown table on stdout; progress on stderr (a bar on a
 * terminal, else a line every 10% or 15 s). --report writes JSON:
 *   {"model", "input", "settings", "n_questions", "n_scored", "n_skipped",
 *    "accuracy": {"overall", "per_question_type": {type: {"accuracy", "n"}},
 *                 "per_answer_type": {...}},
 *    "latency_ms": {"mean", "p50", "p95", "p99", "max"},
 *    "tokens": {"generated", "per_s", "decode_per_s"},
 *    "images": {"decoded", "failed", "decode_ms", "preprocess_ms"}, "wall_s",
 *    "questions": [{"question_id", "image_id", "question", "question_type",
 *                   "answer_type", "prediction", "accuracy", "latency_ms",
 *                   "n_tokens", "finish_reason"}],
 *    "skipped": [{"question_id", "image_id", "reason"}]}
 * Accuracies are percentages like the official script's, not rounded (the
 * script rounds to 2 decimals, as the table does). latency_ms is one
 * question from prompt to last token: vision encoder, prefill, decode (image
 * decoding and preprocessing, once per image, are under "images").
 * Percentiles interpolate linearly between ranks (numpy's default).
 * tokens.generated counts generated ids (EOS included); per_s divides by the
 * summed latencies, decode_per_s is decode steps over their forward time.
 *
 * Exit status: 0 success, 1 the model or data could not be used (or no
 * question could be evaluated), 2 bad usage.
 */
#include "base/buf.h"
#include "base/clock.h"
#include "base/common.h"
#include "base/file.h"
#include "base/log.h"
#include "engine/generate.h"
#include "engine/scheduler.h"
#include "engine/request.h"
#include "model/llava.h"
#include "text/vqa_score.h"
#include "common/model_report.h"
#include "common/tool_args.h"

#include <ctype.h>
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

typedef struct {
    const char *model, *questions, *annotations, *images;
    const char *image_prefix;  /* NULL: detect from DIR */
    const char *prompt_suffix; /* appended to each question */
    const char *report;        /* JSON report path, or NULL */
    const char *device;        /* --device / --backend: "cpu", "ref", "cuda[:N]" */
    const char *log_level;     /* NULL: LOG_LEVEL or info */
    const char *predictions;   /* score this results file instead of running a model */
    long limit;                /* questions to run; -1 = all */
    int threads;               /* 0 = all cores */
    bool exact;                /* --exact: llava_set_exact */
    int tp;                    /* --tensor-parallel N (0: none): llava_set_tensor_parallel */
    bool tp_whole_tower;       /* --tp-whole-tower */
    int parallel;              /* questions decoded together (the scheduler's --parallel) */
    int max_tokens;
} eval_args;

/* ---- command line -------------------------------------------------------------------- */

static void usage(FILE *f) {
    fprintf(f,
            "usage: llava-eval --model PATH --questions Q.json --annotations A.json --images DIR\n"
            "                  [options]\n"
            "  --model PATH          model directory\n"
            "  --questions FILE      VQA v2 questions JSON\n"
            "  --annotations FILE    VQA v2 annotations JSON\n"
            "  --images DIR          image folder (<prefix><id>.jpg/.png...)\n"
            "  --image-prefix P      file name prefix before the id (default: detected from DIR;\n"
            "                        \"\" for plain <id>.png)\n"
            "  --limit N             only the first N questions\n"
            "  --max-tokens N        tokens to generate per answer (default 64)\n"
            "  --prompt-suffix TEXT  appended to every question (e.g. \"\\nAnswer the question\n"
            "                        using a single word or phrase.\")\n"
            "  --threads N           CPU threads (default: all cores)\n" TOOL_HELP_TENSOR_PARALLEL
            "  --exact               exact arithmetic: float32 on the dequantized weights and a\n"
            "                        float32 KV cache, as transformers computes (default: int8\n"
            "                        activations with quantized weights, f16 KV cache)\n"
            "  --parallel N          questions decoded together through the scheduler, as\n"
            "                        llava-server --parallel (default 1; the answers are the\n"
            "                        same for any N)\n"
            "  --device NAME         cpu (default), ref (the scalar reference), cuda or cuda:N\n"
            "                        (CUDA builds); --backend NAME is the same\n"
            "  --report FILE         write a JSON report with every number and answer\n"
            "  --predictions FILE    score a VQA results file ([{\"question_id\", \"answer\"}],\n"
            "                        e.g. another engine's answers) instead of running a model;\n"
            "                        --model and --images are then not needed\n"
            "  --log-level L         error|warn|info|debug (default: $LOG_LEVEL or info)\n"
            "  -h, --help            this text\n"
            "  --version             the version, commit and CPU kernels\n");
}

/* Returns 0 to go on, 1 after --help, 2 on a usage error (message printed). */
static int parse_args(int argc, char **argv, eval_args *a) {
    *a = (eval_args){
        .device = "cpu", .prompt_suffix = "", .limit = -1, .parallel = 1, .max_tokens = 64};
    const tool_opt opts[] = {
        TOOL_STR("model", 'm', &a->model),
        TOOL_STR("questions", 0, &a->questions),
        TOOL_STR("annotations", 0, &a->annotations),
        TOOL_STR("images", 0, &a->images),
        TOOL_STR("image-prefix", 0, &a->image_prefix),
        TOOL_LONG("limit", 0, &a->limit, 1, 1000000000L),
        TOOL_INT("threads", 0, &a->threads, 0, 4096),
        TOOL_FLAG("exact", 0, &a->exact),
        TOOL_INT("tensor-parallel", 0, &a->tp, 0, 8),
        TOOL_FLAG("tp-whole-tower", 0, &a->tp_whole_tower),
        TOOL_INT("parallel", 0, &a->parallel, 1, 256),
        TOOL_INT("max-tokens", 0, &a->max_tokens, 1, 1000000),
        TOOL_STR("prompt-suffix", 0, &a->prompt_suffix),
        TOOL_STR("report", 0, &a->report),
        TOOL_STR("device", 0, &a->device),
        TOOL_STR("backend", 0, &a->device), /* the older name */
        TOOL_STR("log-level", 0, &a->log_level),
        TOOL_STR("predictions", 0, &a->predictions),
    };
    static const tool_info tool = {"llava-eval", usage, false};
    int rc = tool_parse(&tool, opts, LV_ARRAY_LEN(opts), argc, argv);
    if (rc) return rc;
    if (!tool_log_level("llava-eval", a->log_level)) return 2;
    if (!a->questions || !a->annotations || (!a->predictions && (!a->model || !a->images))) {
        fprintf(stderr, "llava-eval: --questions and --annotations are required, and --model and "
                        "--images unless --predictions is given\n");
        usage(stderr);
        return 2;
    }
    return 0;
}

/* ---- the data set ----------------------------------------------------------------------
 *
 * Both JSON files stay parsed for the whole run: items borrow their strings.
 * The questions file gives the order and the items; each item's annotation
 * is found by question_id in a sorted index of the annotations file. */

typedef struct {
    int64_t question_id, image_id;
    const char *question;                    /* borrowed from the questions JSON */
    const char *question_type, *answer_type; /* borrowed from the annotations JSON */
    const char **answers;                    /* (n_answers) borrowed strings; the array is heap */
    int n_answers;
    /* results */
    bool scored;               /* generated and scored */
    char *prediction;          /* generated text (heap) */
    double accuracy;           /* percent */
    double latency_ms;         /* prompt to last token */
    int n_tokens, n_decode;    /* generated ids (EOS included); decode steps */
    double decode_ms;          /* forward time of the decode steps */
    const char *finish_reason; /* static string */
    char *skipped;             /* why the question was not run (heap), or NULL */
} eval_item;

typedef struct {
    json_t *questions, *annotations; /* parsed files (own the borrowed strings) */
    eval_item *items;
    int n_items;
    int n_images_decoded, n_images_failed;
    double decode_ms, preprocess_ms;
    int n_threads; /* the backend's, once loaded */
} eval_set;

static void set_free(eval_set *s) {
    for (int i = 0; i < s->n_items; i++) {
        free(s->items[i].answers);
        free(s->items[i].prediction);
        free(s->items[i].skipped);
    }
    free(s->items);
    json_decref(s->questions);
    json_decref(s->annotations);
}

/* Parses path and returns its top-level array `key` in *arr. */
static lv_status load_json(const char *path, const char *key, json_t **root, json_t **arr,
                           lv_err *err) {
    json_error_t je;
    *root = json_load_file(path, 0, &je);
    if (!*root && !lv_is_file(path)) return lv_fail(err, LV_ERR_IO, "%s: no such file", path);
    if (!*root)
        return lv_fail(err, LV_ERR_FORMAT, "%s: line %d, column %d: %s", path, je.line, je.column,
                       je.text);
    *arr = json_object_get(*root, key);
    if (!json_is_array(*arr))
        return lv_fail(err, LV_ERR_FORMAT, "%s: expected an object with a \"%s\" array", path, key);
    return LV_OK;
}

static bool get_id(json_t *o, const char *key, int64_t *out) {
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) return false;
    *out = (int64_t)json_integer_value(v);
    return true;
}

static const char *get_str(json_t *o, const char *key) {
    return json_string_value(json_object_get(o, key)); /* NULL if missing or not a string */
}

typedef struct {
    int64_t question_id;
    size_t index; /* in the annotations array */
} ann_key;

static int cmp_i64(const void *x, const void *y) {
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return a < b ? -1 : a > b;
}

static int cmp_ann_key(const void *x, const void *y) {
    const ann_key *a = x, *b = y;
    return a->question_id < b->question_id ? -1 : a->question_id > b->question_id;
}

/* Fills item it from annotation ann (annotations[index] of path). */
static lv_status take_annotation(eval_item *it, json_t *ann, size_t index, const char *path,
                                 int *n_dup_records, lv_err *err) {
    int64_t image_id;
    if (!get_id(ann, "image_id", &image_id) || image_id != it->image_id)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: annotations[%zu] (question %lld): image_id is not %lld as in the "
                       "questions file",
                       path, index, (long long)it->question_id, (long long)it->image_id);
    it->question_type = get_str(ann, "question_type");
    it->answer_type = get_str(ann, "answer_type");
    if (!it->question_type || !it->answer_type)
        return lv_fail(
            err, LV_ERR_FORMAT,
            "%s: annotations[%zu]: \"question_type\" and \"answer_type\" must be strings", path,
            index);
    json_t *answers = json_object_get(ann, "answers");
    size_t n = json_array_size(answers);
    if (!json_is_array(answers) || n == 0 || n > 1000)
        return lv_fail(
            err, LV_ERR_FORMAT,
            "%s: annotations[%zu] (question %lld): \"answers\" must be a non-empty array", path,
            index, (long long)it->question_id);
    it->answers = malloc(n * sizeof *it->answers);
    if (!it->answers) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    it->n_answers = (int)n;
    bool dup = false;
    for (size_t k = 0; k < n; k++) {
        json_t *rec = json_array_get(answers, k);
        it->answers[k] = get_str(rec, "answer");
        if (!it->answers[k])
            return lv_fail(err, LV_ERR_FORMAT,
                           "%s: annotations[%zu].answers[%zu]: expected {\"answer\": string, ...}",
                           path, index, k);
        for (size_t j = 0; j < k && !dup; j++) dup = json_equal(rec, json_array_get(answers, j));
    }
    *n_dup_records += dup;
    return LV_OK;
}

/* Reads both files into s->items (the first `limit` questions). */
static lv_status load_set(const eval_args *a, eval_set *s, lv_err *err) {
    json_t *qs, *anns;
    lv_status st = load_json(a->questions, "questions", &s->questions, &qs, err);
    if (!st) st = load_json(a->annotations, "annotations", &s->annotations, &anns, err);
    if (st) return st;
    size_t n = json_array_size(qs);
    if (a->limit > 0 && (size_t)a->limit < n) n = (size_t)a->limit;
    if (n == 0) return lv_fail(err, LV_ERR_FORMAT, "%s: no questions", a->questions);
    s->items = calloc(n, sizeof *s->items);
    size_t n_ann = json_array_size(anns);
    ann_key *keys = malloc((n_ann ? n_ann : 1) * sizeof *keys);
    int64_t *qids = malloc(n * sizeof *qids);
    if (!s->items || !keys || !qids) {
        st = lv_fail(err, LV_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n_ann; i++) {
        keys[i].index = i;
        if (!get_id(json_array_get(anns, i), "question_id", &keys[i].question_id)) {
            st = lv_fail(err, LV_ERR_FORMAT, "%s: annotations[%zu]: no integer \"question_id\"",
                         a->annotations, i);
            goto done;
        }
    }
    qsort(keys, n_ann, sizeof *keys, cmp_ann_key);
    for (size_t i = 1; i < n_ann; i++)
        if (keys[i].question_id == keys[i - 1].question_id) {
            st = lv_fail(err, LV_ERR_FORMAT, "%s: question_id %lld is annotated twice",
                         a->annotations, (long long)keys[i].question_id);
            goto done;
        }
    int n_dup = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *q = json_array_get(qs, i);
        eval_item *it = &s->items[i];
        s->n_items = (int)i + 1;
        it->question = get_str(q, "question");
        if (!get_id(q, "question_id", &it->question_id) || !get_id(q, "image_id", &it->image_id) ||
            !it->question) {
            st = lv_fail(err, LV_ERR_FORMAT,
                         "%s: questions[%zu]: expected {\"question_id\": integer, \"image_id\": "
                         "integer, \"question\": string}",
                         a->questions, i);
            goto done;
        }
        ann_key want = {it->question_id, 0};
        const ann_key *hit = bsearch(&want, keys, n_ann, sizeof *keys, cmp_ann_key);
        if (!hit) {
            st = lv_fail(err, LV_ERR_FORMAT,
                         "%s: question %lld (questions[%zu]) has no annotation in %s", a->questions,
                         (long long)it->question_id, i, a->annotations);
            goto done;
        }
        st = take_annotation(it, json_array_get(anns, hit->index), hit->index, a->annotations,
                             &n_dup, err);
        if (st) goto done;
        qids[i] = it->question_id;
    }
    qsort(qids, n, sizeof *qids, cmp_i64);
    for (size_t i = 1; i < n; i++)
        if (qids[i] == qids[i - 1]) {
            st = lv_fail(err, LV_ERR_FORMAT, "%s: question_id %lld appears twice", a->questions,
                         (long long)qids[i]);
            goto done;
        }
    if (n_dup)
        LV_WARN("%d question%s identical answer records (no distinct answer_id): each "
                "leave-one-out subset drops one record; the official vqaEval.py would drop all "
                "copies at once",
                n_dup, n_dup == 1 ? " has" : "s have");
done:
    free(keys);
    free(qids);
    return st;
}

/* ---- the image folder ------------------------------------------------------------------
 *
 * DIR is listed once. A file counts if its name is <prefix><digits>.<ext>
 * with a known image extension; the id is the digits' value, so 12-digit
 * zero-padded names and plain ones both work. */

typedef struct {
    int64_t id;
    char *name;        /* file name in DIR (heap) */
    size_t prefix_len; /* bytes of name before the id */
} img_file;

typedef struct {
    img_file *files; /* sorted by (id, name); only the chosen prefix */
    size_t n;
    char *prefix;   /* the prefix in use (heap) */
    size_t n_other; /* image files with another prefix (ignored) */
} img_index;

static void index_free(img_index *ix) {
    for (size_t i = 0; i < ix->n; i++) free(ix->files[i].name);
    free(ix->files);
    free(ix->prefix);
}

/* Parses name as <prefix><digits>.<ext>. With want_prefix the prefix must
 * be exactly it; else it is whatever precedes the last run of digits. */
static bool parse_image_name(const char *name, const char *want_prefix, int64_t *id,
                             size_t *prefix_len) {
    static const char *exts[] = {"jpg", "jpeg", "png", "webp", "gif", "bmp"};
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name) return false;
    bool known = false;
    for (size_t i = 0; i < LV_ARRAY_LEN(exts) && !known; i++) known = !strcasecmp(dot + 1, exts[i]);
    if (!known) return false;
    size_t stem = (size_t)(dot - name), start = stem;
    if (want_prefix) {
        start = strlen(want_prefix);
        if (start >= stem || strncmp(name, want_prefix, start) != 0) return false;
        for (size_t i = start; i < stem; i++)
            if (!isdigit((unsigned char)name[i])) return false;
    } else {
        while (start > 0 && isdigit((unsigned char)name[start - 1])) start--;
    }
    if (stem - start < 1 || stem - start > 18) return false;
    int64_t v = 0;
    for (size_t i = start; i < stem; i++) v = v * 10 + (name[i] - '0');
    *id = v;
    *prefix_len = start;
    return true;
}

static int cmp_prefix(const img_file *a, const img_file *b) {
    size_t n = a->prefix_len < b->prefix_len ? a->prefix_len : b->prefix_len;
    int c = memcmp(a->name, b->name, n);
    return c ? c : (a->prefix_len > b->prefix_len) - (a->prefix_len < b->prefix_len);
}

static int cmp_by_prefix(const void *x, const void *y) {
    return cmp_prefix(x, y);
}

static int cmp_by_id(const void *x, const void *y) {
    const img_file *a = x, *b = y;
    if (a->id != b->id) return a->id < b->id ? -1 : 1;
    return strcmp(a->name, b->name);
}

/* Keeps the files whose prefix is the most common one (ties: the smaller). */
static void keep_common_prefix(img_index *ix) {
    if (ix->n == 0) return;
    qsort(ix->files, ix->n, sizeof *ix->files, cmp_by_prefix);
    size_t best = 0, best_n = 0;
    for (size_t i = 0, j; i < ix->n; i = j) {
        for (j = i + 1; j < ix->n && cmp_prefix(&ix->files[i], &ix->files[j]) == 0; j++) {
        }
        if (j - i > best_n) best = i, best_n = j - i;
    }
    size_t o = 0;
    for (size_t i = 0; i < ix->n; i++) {
        if (i >= best && i < best + best_n)
            ix->files[o++] = ix->files[i];
        else
            free(ix->files[i].name);
    }
    ix->n_other = ix->n - o;
    ix->n = o;
}

static lv_status index_images(const char *dir, const char *want_prefix, img_index *ix,
                              lv_err *err) {
    *ix = (img_index){0};
    DIR *d = opendir(dir);
    if (!d) return lv_fail(err, LV_ERR_IO, "%s: cannot open the image folder", dir);
    size_t cap = 0;
    lv_status st = LV_OK;
    struct dirent *e;
    while (!st && (e = readdir(d))) {
        img_file f;
        if (!parse_image_name(e->d_name, want_prefix, &f.id, &f.prefix_len)) continue;
        if (ix->n == cap) {
            cap = cap ? cap * 2 : 1024;
            img_file *grown = realloc(ix->files, cap * sizeof *grown);
            if (!grown) {
                st = lv_fail(err, LV_ERR_NOMEM, "out of memory listing %s", dir);
                break;
            }
            ix->files = grown;
        }
        if (!(f.name = strdup(e->d_name)))
            st = lv_fail(err, LV_ERR_NOMEM, "out of memory");
        else
            ix->files[ix->n++] = f;
    }
    closedir(d);
    if (st) return st;
    if (!want_prefix) keep_common_prefix(ix);
    if (ix->n) qsort(ix->files, ix->n, sizeof *ix->files, cmp_by_id);
    size_t plen = want_prefix ? strlen(want_prefix) : ix->n ? ix->files[0].prefix_len : 0;
    ix->prefix = want_prefix ? strdup(want_prefix) : strndup(ix->n ? ix->files[0].name : "", plen);
    if (!ix->prefix) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    return LV_OK;
}

/* The path of image id in *path (heap), or (*path NULL) the reason it has
 * none in *why. LV_ERR_NOMEM only. */
static lv_status find_image(const img_index *ix, const char *dir, int64_t id, char **path,
                            lv_buf *why, lv_err *err) {
    size_t lo = 0, hi = ix->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ix->files[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t n = 0;
    while (lo + n < ix->n && ix->files[lo + n].id == id) n++;
    char msg[1024];
    if (n != 1) {
        if (n == 0)
            snprintf(msg, sizeof msg,
                     "no image file for image_id %lld in %s (looked for %s%012lld.jpg "
                     "or %s%lld.png and the like)",
                     (long long)id, dir, ix->prefix, (long long)id, ix->prefix, (long long)id);
        else
            snprintf(msg, sizeof msg, "image_id %lld: %zu files match (%s, %s%s)", (long long)id, n,
                     ix->files[lo].name, ix->files[lo + 1].name, n > 2 ? ", ..." : "");
        *path = NULL;
        return lv_buf_puts(why, msg) ? lv_fail(err, LV_ERR_NOMEM, "out of memory") : LV_OK;
    }
    size_t len = strlen(dir) + strlen(ix->files[lo].name) + 2;
    if (!(*path = malloc(len))) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    snprintf(*path, len, "%s/%s", dir, ix->files[lo].name);
    return LV_OK;
}

/* ---- progress ----------------------------------------------------------------------------
 *
 * On a terminal, one line redrawn in place; otherwise (a log file, a test)
 * a plain line each time another 10% is done or 15 s have passed. Warnings
 * clear the bar first so they do not land in the middle of it. */

typedef struct {
    bool tty;
    int total, done, n_scored;
    double acc_sum; /* percent, over scored questions */
    double t0, last_line;
    int last_decile;
    bool drawn; /* the bar is on screen */
} progress;

static void progress_clear(progress *p) {
    if (p->drawn) fputs("\r\033[K", stderr);
    p->drawn = false;
}

/* Seconds as h:mm:ss or m:ss. */
static void fmt_time(double s, char out[32]) {
    long t = s > 0 && s < 1e9 ? (long)(s + 0.5) : 0;
    if (t >= 3600)
        snprintf(out, 32, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(out, 32, "%ld:%02ld", t / 60, t % 60);
}

/* Redraws the bar (at most every 100 ms) or prints a line when due. */
static void progress_show(progress *p) {
    double t = lv_now_ms(), el = (t - p->t0) / 1e3, rate = el > 0 ? p->done / el : 0;
    double acc = p->n_scored ? p->acc_sum / p->n_scored : 0;
    char eta[32];
    fmt_time(rate > 0 ? (p->total - p->done) / rate : 0, eta);
    if (p->tty) {
        if (p->drawn && t - p->last_line < 100 && p->done < p->total) return;
        p->last_line = t;
        char bar[31];
        int fill = p->total ? (int)((long)p->done * 30 / p->total) : 30;
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '-';
        bar[30] = '\0';
        fprintf(stderr, "\r\033[K[%s] %d/%d  acc %.2f%%  %.2f q/s  ETA %s", bar, p->done, p->total,
                acc, rate, eta);
        p->drawn = true;
        fflush(stderr);
        return;
    }
    int decile = p->total ? (int)((long)p->done * 10 / p->total) : 10;
    if (decile == p->last_decile && t - p->last_line < 15e3 && p->done < p->total) return;
    p->last_decile = decile;
    p->last_line = t;
    fprintf(stderr, "llava-eval: %d/%d questions, accuracy %.2f%%, %.2f q/s, ETA %s\n", p->done,
            p->total, acc, rate, eta);
}

/* ---- running -------------------------------------------------------------------------- */

/* Marks it skipped for reason (copied) with a warning. */
static lv_status skip(progress *pg, eval_item *it, const char *reason, lv_err *err) {
    progress_clear(pg);
    LV_WARN("question %lld skipped: %s", (long long)it->question_id, reason);
    if (!(it->skipped = strdup(reason))) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    pg->done++;
    progress_show(pg);
    return LV_OK;
}

/* An image shared by the jobs of its questions: freed with the last one. */
typedef struct {
    img_tensor px;
    int n_tok;
    int refs;
} shared_image;

static void image_unref(shared_image *im) {
    if (im && --im->refs == 0) {
        img_tensor_free(&im->px);
        free(im);
    }
}

/* What a question's job owns: its prompt ids and a reference to its image. */
typedef struct {
    int32_t *ids;
    shared_image *im;
} job_keep;

static void keep_free(void *p) {
    job_keep *k = p;
    free(k->ids);
    image_unref(k->im);
    free(k);
}

/* A question in flight. */
typedef struct {
    eval_item *it;
    sched_job *j; /* NULL: skipped before it was submitted (why) */
    char *why;
} pending;

/* The job asking one question about its (preprocessed) image, or *why when
 * its prompt cannot be made (a skip). */
static lv_status make_job(const eval_args *a, llava *m, const gen_params *p, shared_image *im,
                          eval_item *it, sched_job **out, char **why, lv_err *err) {
    *out = NULL;
    *why = NULL;
    lv_buf text = {0};
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (lv_buf_puts(&text, it->question) || lv_buf_puts(&text, a->prompt_suffix)) {
        lv_buf_free(&text);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    }
    lv_status st = request_prompt_ids(m, text.data, false, &im->px, 1, &ids, &n_ids, err);
    lv_buf_free(&text);
    if (st == LV_ERR_ARG) return (*why = strdup(err->msg)) ? LV_OK : LV_ERR_NOMEM;
    if (st) return st;
    sched_job *j = sched_job_new();
    job_keep *k = malloc(sizeof *k);
    if (!j || !k) {
        free(ids);
        free(k);
        sched_job_release(j);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    }
    *k = (job_keep){ids, im};
    im->refs++;
    j->ids = ids;
    j->n_ids = (int)n_ids;
    j->images = &im->px;
    j->n_images = 1;
    j->borrowed = true; /* k owns them */
    j->keep = k;
    j->keep_free = keep_free;
    j->params = *p;
    *out = j;
    return LV_OK;
}

/* Waits for q's answer and scores it. A prompt that does not fit is a skip;
 * other failures end the run. */
static lv_status collect(pending *q, progress *pg, lv_err *err) {
    eval_item *it = q->it;
    lv_status st = LV_OK;
    if (!q->j) {
        st = skip(pg, it, q->why, err);
        free(q->why);
        return st;
    }
    sched_job *j = q->j;
    sched_job_wait(j);
    it->latency_ms = j->t_done_ms - j->t_submit_ms;
    if (j->st == LV_ERR_ARG) {
        st = skip(pg, it, j->err.msg, err);
    } else if (j->st) {
        *err = j->err;
        st = j->st;
    } else {
        gen_result *r = &j->result;
        vqa_result score;
        st = vqa_score(r->text, it->answers, it->n_answers, &score, err);
        if (!st) {
            it->prediction = r->text;
            r->text = NULL;
            it->scored = true;
            it->accuracy = 100.0 * score.accuracy;
            it->n_tokens = r->n_ids;
            it->n_decode = r->timings.n_decode;
            it->decode_ms = r->timings.decode_ms;
            it->finish_reason = r->finish_reason;
            pg->done++;
            pg->n_scored++;
            pg->acc_sum += it->accuracy;
            progress_show(pg);
        }
    }
    sched_job_release(j);
    q->j = NULL;
    return st;
}

typedef struct {
    int64_t image_id;
    int first; /* index of the image's first question */
    int index; /* the question's index */
} run_key;

static int cmp_image(const void *x, const void *y) {
    const run_key *a = x, *b = y;
    if (a->image_id != b->image_id) return a->image_id < b->image_id ? -1 : 1;
    return a->index - b->index;
}

static int cmp_first(const void *x, const void *y) {
    const run_key *a = x, *b = y;
    return a->first != b->first ? a->first - b->first : a->index - b->index;
}

/* The order to run in: grouped by image, images in order of first
 * appearance, questions in file order within an image. */
static run_key *run_order(const eval_set *s) {
    run_key *k = malloc((size_t)s->n_items * sizeof *k);
    if (!k) return NULL;
    for (int i = 0; i < s->n_items; i++) k[i] = (run_key){s->items[i].image_id, i, i};
    qsort(k, (size_t)s->n_items, sizeof *k, cmp_image);
    for (int i = 1; i < s->n_items; i++)
        if (k[i].image_id == k[i - 1].image_id) k[i].first = k[i - 1].first;
    qsort(k, (size_t)s->n_items, sizeof *k, cmp_first);
    return k;
}

/*
 * Runs every question through the scheduler (a.parallel at once); s->items
 * get their results. Jobs are submitted in run order and collected in the
 * same order, at most WINDOW · parallel in flight: each answer is what it
 * would be alone (batch invariance), so --parallel changes the time, never
 * a prediction.
 */
#define WINDOW 2
static lv_status run_all(const eval_args *a, llava *m, eval_set *s, const img_index *ix,
                         lv_err *err) {
    gen_params p;
    gen_params_default(&p, m);
    p.max_tokens = a->max_tokens;
    p.sampling.temperature = 0; /* greedy, as llava-cli --temperature 0 */
    int window = WINDOW * a->parallel;
    run_key *order = run_order(s);
    pending *q = calloc((size_t)window, sizeof *q);
    sched *w = NULL;
    /* throughput, not latency: images encode in whole pieces beside decoding */
    sched_config cfg = {.queue_size = window, .parallel = a->parallel, .max_itl_ratio = -1};
    lv_status st = order && q ? LV_OK : lv_fail(err, LV_ERR_NOMEM, "out of memory");
    if (!st && !(st = sched_new(m, &cfg, &w, err))) st = sched_start(w, err);
    progress pg = {.tty = isatty(2), .total = s->n_items, .t0 = lv_now_ms(), .last_decile = -1};
    pg.last_line = pg.t0;
    int head = 0, n_q = 0; /* ring of questions in flight */
    for (int g = 0, end; g < s->n_items && !st; g = end) {
        for (end = g + 1; end < s->n_items && order[end].first == order[g].first; end++) {
        }
        int64_t id = s->items[order[g].index].image_id;
        char *path = NULL;
        lv_buf why = {0};
        shared_image *im = calloc(1, sizeof *im);
        double dec = 0, pre = 0;
        if (!im) st = lv_fail(err, LV_ERR_NOMEM, "out of memory");
        im->refs = 1; /* this loop's */
        if (!st) st = find_image(ix, a->images, id, &path, &why, err);
        if (!st && path) {
            st = request_load_image(m, path, &im->px, &im->n_tok, &dec, &pre, err);
            s->decode_ms += dec;
            s->preprocess_ms += pre;
            if (st && st != LV_ERR_NOMEM) {
                s->n_images_failed++;
                st = lv_buf_puts(&why, err->msg) ? lv_fail(err, LV_ERR_NOMEM, "out of memory")
                                                 : LV_OK;
            } else if (!st) {
                s->n_images_decoded++;
            }
        }
        for (int k = g; k < end && !st; k++) {
            if (n_q == window) { /* the oldest answer first */
                st = collect(&q[head], &pg, err);
                head = (head + 1) % window;
                n_q--;
                if (st) break;
            }
            pending *slot = &q[(head + n_q) % window];
            *slot = (pending){.it = &s->items[order[k].index]};
            if (why.len) {
                if (!(slot->why = strdup(why.data))) st = lv_fail(err, LV_ERR_NOMEM, "oom");
            } else if (!(st = make_job(a, m, &p, im, slot->it, &slot->j, &slot->why, err)) &&
                       slot->j && (st = sched_submit(w, slot->j, err))) {
                sched_job_release(slot->j);
                slot->j = NULL;
            }
            if (!st) n_q++;
        }
        image_unref(im);
        lv_buf_free(&why);
        free(path);
    }
    for (; n_q > 0; n_q--, head = (head + 1) % window) {
        lv_status st2 = st ? LV_OK : collect(&q[head], &pg, err);
        if (st) { /* a failure ends the run: drop what is left */
            if (q[head].j) sched_job_cancel(q[head].j);
            sched_job_release(q[head].j);
            free(q[head].why);
        }
        if (st2) st = st2;
    }
    if (pg.drawn) fputc('\n', stderr); /* keep the finished bar */
    sched_free(w);
    free(q);
    free(order);
    return st;
}

/* ---- results -------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    double sum; /* percent */
    int n;
} group_acc;

/* Per-type sums, sorted by name. by_answer picks the answer type. */
static group_acc *group_by(const eval_set *s, bool by_answer, int *n_groups) {
    group_acc *g = calloc((size_t)s->n_items, sizeof *g);
    int n = 0;
    for (int i = 0; g && i < s->n_items; i++) {
        const eval_item *it = &s->items[i];
        if (!it->scored) continue;
        const char *name = by_answer ? it->answer_type : it->question_type;
        int k = 0;
        while (k < n && strcmp(g[k].name, name) != 0) k++;
        if (k == n) g[n++] = (group_acc){name, 0, 0};
        g[k].sum += it->accuracy;
        g[k].n++;
    }
    for (int i = 1; g && i < n; i++) /* insertion sort: few groups */
        for (int j = i; j > 0 && strcmp(g[j - 1].name, g[j].name) > 0; j--) {
            group_acc t = g[j];
            g[j] = g[j - 1];
            g[j - 1] = t;
        }
    *n_groups = n;
    return g;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* q-th percentile of sorted v[n], interpolating linearly between ranks. */
static double percentile(const double *v, int n, double q) {
    if (n == 0) return 0;
    double r = q / 100 * (n - 1);
    int lo = (int)floor(r);
    int hi = lo + 1 < n ? lo + 1 : lo;
    return v[lo] + (v[hi] - v[lo]) * (r - lo);
}

typedef struct {
    int n_scored, n_skipped;
    double overall;                  /* percent */
    double mean, p50, p95, p99, max; /* latency, ms */
    long tokens, decode_steps;
    double tokens_per_s, decode_per_s;
} summary;

static void summarize(const eval_set *s, summary *sum) {
    *sum = (summary){0};
    double *lat = malloc(((size_t)s->n_items + 1) * sizeof *lat), acc = 0, ms = 0, dec_ms = 0;
    for (int i = 0; i < s->n_items; i++) {
        const eval_item *it = &s->items[i];
        if (!it->scored) {
            sum->n_skipped++;
            continue;
        }
        if (lat) lat[sum->n_scored] = it->latency_ms;
        sum->n_scored++;
        acc += it->accuracy;
        ms += it->latency_ms;
        sum->tokens += it->n_tokens;
        sum->decode_steps += it->n_decode;
        dec_ms += it->decode_ms;
    }
    int n = sum->n_scored;
    sum->overall = n ? acc / n : 0;
    sum->mean = n ? ms / n : 0;
    sum->tokens_per_s = ms > 0 ? sum->tokens / (ms / 1e3) : 0;
    sum->decode_per_s = dec_ms > 0 ? sum->decode_steps / (dec_ms / 1e3) : 0;
    if (lat && n) {
        qsort(lat, (size_t)n, sizeof *lat, cmp_double);
        sum->p50 = percentile(lat, n, 50);
        sum->p95 = percentile(lat, n, 95);
        sum->p99 = percentile(lat, n, 99);
        sum->max = lat[n - 1];
    }
    free(lat);
}

/* A JSON string of text; invalid UTF-8 (never expected from the
 * detokenizer) is kept readable with its non-ASCII bytes as '?'. */
static json_t *jstr(const char *text) {
    json_t *j = json_string(text ? text : "");
    if (j) return j;
    char *copy = strdup(text);
    for (char *c = copy; c && *c; c++)
        if ((unsigned char)*c >= 0x80) *c = '?';
    j = json_string(copy ? copy : "");
    free(copy);
    return j;
}

static json_t *groups_json(const group_acc *g, int n) {
    json_t *o = json_object();
    for (int i = 0; i < n; i++)
        json_object_set_new(o, g[i].name,
                            json_pack("{s:f, s:i}", "accuracy", g[i].sum / g[i].n, "n", g[i].n));
    return o;
}

static json_t *report_json(const eval_args *a, const eval_set *s, const img_index *ix,
                           const summary *sum, const group_acc *qt, int n_qt, const group_acc *at,
                           int n_at, double wall_s) {
    json_t *o = json_object(), *qs = json_array(), *sk = json_array();
    json_object_set_new(o, "model", jstr(a->model));
    json_object_set_new(o, "input",
                        json_pack("{s:o, s:o, s:o, s:o}", "questions", jstr(a->questions),
                                  "annotations", jstr(a->annotations), "images", jstr(a->images),
                                  "image_prefix", jstr(ix->prefix)));
    json_object_set_new(o, "settings",
                        json_pack("{s:s, s:i, s:i, s:i, s:o, s:f}", "backend", a->device, "threads",
                                  s->n_threads, "parallel", a->parallel, "max_tokens",
                                  a->max_tokens, "prompt_suffix", jstr(a->prompt_suffix),
                                  "temperature", 0.0));
    json_object_set_new(o, "n_questions", json_integer(s->n_items));
    json_object_set_new(o, "n_scored", json_integer(sum->n_scored));
    json_object_set_new(o, "n_skipped", json_integer(sum->n_skipped));
    json_object_set_new(o, "accuracy",
                        json_pack("{s:f, s:o, s:o}", "overall", sum->overall, "per_question_type",
                                  groups_json(qt, n_qt), "per_answer_type", groups_json(at, n_at)));
    json_object_set_new(o, "latency_ms",
                        json_pack("{s:f, s:f, s:f, s:f, s:f}", "mean", sum->mean, "p50", sum->p50,
                                  "p95", sum->p95, "p99", sum->p99, "max", sum->max));
    json_object_set_new(o, "tokens",
                        json_pack("{s:I, s:f, s:f}", "generated", (json_int_t)sum->tokens, "per_s",
                                  sum->tokens_per_s, "decode_per_s", sum->decode_per_s));
    json_object_set_new(o, "images",
                        json_pack("{s:i, s:i, s:f, s:f}", "decoded", s->n_images_decoded, "failed",
                                  s->n_images_failed, "decode_ms", s->decode_ms, "preprocess_ms",
                                  s->preprocess_ms));
    json_object_set_new(o, "wall_s", json_real(wall_s));
    for (int i = 0; i < s->n_items; i++) {
        const eval_item *it = &s->items[i];
        if (!it->scored) {
            json_array_append_new(
                sk, json_pack("{s:I, s:I, s:o}", "question_id", (json_int_t)it->question_id,
                              "image_id", (json_int_t)it->image_id, "reason", jstr(it->skipped)));
            continue;
        }
        json_array_append_new(
            qs, json_pack("{s:I, s:I, s:o, s:o, s:o, s:o, s:f, s:f, s:i, s:s}", "question_id",
                          (json_int_t)it->question_id, "image_id", (json_int_t)it->image_id,
                          "question", jstr(it->question), "question_type", jstr(it->question_type),
                          "answer_type", jstr(it->answer_type), "prediction", jstr(it->prediction),
                          "accuracy", it->accuracy, "latency_ms", it->latency_ms, "n_tokens",
                          it->n_tokens, "finish_reason", it->finish_reason));
    }
    json_object_set_new(o, "questions", qs);
    json_object_set_new(o, "skipped", sk);
    return o;
}

/* Writes the report to path.tmp.PID, then renames it over path. */
static lv_status write_report(const char *path, json_t *report, lv_err *err) {
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
        return lv_fail(err, LV_ERR_ARG, "%s: path too long", path);
    if (!report || json_dump_file(report, tmp, JSON_INDENT(1) | JSON_PRESERVE_ORDER) != 0 ||
        rename(tmp, path) != 0) {
        unlink(tmp);
        return lv_fail(err, LV_ERR_IO, "%s: cannot write the report", path);
    }
    return LV_OK;
}

/* A table cell: '|' escaped, newlines as spaces. */
static void cell(const char *s) {
    for (; *s; s++) {
        if (*s == '|')
            fputs("\\|", stdout);
        else
            putchar(*s == '\n' || *s == '\r' ? ' ' : *s);
    }
}

static void print_table(const eval_args *a, const summary *sum, const group_acc *qt, int n_qt,
                        const group_acc *at, int n_at) {
    printf("## VQA accuracy: ");
    cell(a->model ? a->model : a->predictions);
    printf("\n\n| | questions | accuracy (%%) |\n|:--|--:|--:|\n");
    printf("| **overall** | %d | %.2f |\n", sum->n_scored, sum->overall);
    for (int pass = 0; pass < 2; pass++) {
        const group_acc *g = pass ? qt : at;
        int n = pass ? n_qt : n_at;
        for (int i = 0; i < n; i++) {
            printf("| %s: ", pass ? "question type" : "answer type");
            cell(g[i].name);
            printf(" | %d | %.2f |\n", g[i].n, g[i].sum / g[i].n);
        }
    }
    printf("\n| skipped | latency p50 (ms) | p95 | p99 | generated tokens | tokens/s | "
           "decode tokens/s |\n|--:|--:|--:|--:|--:|--:|--:|\n");
    printf("| %d | %.1f | %.1f | %.1f | %ld | %.1f | %.1f |\n", sum->n_skipped, sum->p50, sum->p95,
           sum->p99, sum->tokens, sum->tokens_per_s, sum->decode_per_s);
}

/* Summary, table, report. LV_ERR_ARG (after both are out) when nothing was scored. */
static lv_status finish(const eval_args *a, const eval_set *s, const img_index *ix, double wall_s,
                        lv_err *err) {
    summary sum;
    summarize(s, &sum);
    int n_qt = 0, n_at = 0;
    group_acc *qt = group_by(s, false, &n_qt), *at = group_by(s, true, &n_at);
    lv_status st = (!qt || !at) ? lv_fail(err, LV_ERR_NOMEM, "out of memory") : LV_OK;
    if (!st) print_table(a, &sum, qt, n_qt, at, n_at);
    fflush(stdout);
    if (!st && a->report) {
        json_t *r = report_json(a, s, ix, &sum, qt, n_qt, at, n_at, wall_s);
        st = write_report(a->report, r, err);
        json_decref(r);
    }
    if (!st && sum.n_scored == 0)
        st = lv_fail(err, LV_ERR_ARG, "no question could be evaluated (%d skipped)", sum.n_skipped);
    free(qt);
    free(at);
    return st;
}

/* --predictions: scores a VQA results file ([{"question_id", "answer"}], the
 * official evaluation's input) with the same scorer, so another engine's
 * answers (e.g. transformers' on the same weights) compare number for number.
 * A question without an answer in the file is a counted skip. */
static lv_status score_predictions(const char *path, eval_set *s, lv_err *err) {
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return lv_fail(err, LV_ERR_FORMAT, "%s: line %d: %s", path, je.line, je.text);
    lv_status st = LV_OK;
    if (!json_is_array(root)) {
        st = lv_fail(err, LV_ERR_FORMAT, "%s: expected a JSON array of results", path);
        goto done;
    }
    for (int i = 0; i < s->n_items && st == LV_OK; i++) {
        eval_item *it = &s->items[i];
        const char *answer = NULL;
        size_t k;
        json_t *r;
        json_array_foreach(root, k, r) {
            int64_t qid;
            if (get_id(r, "question_id", &qid) && qid == it->question_id) {
                answer = get_str(r, "answer");
                break;
            }
        }
        if (!answer) {
            it->skipped = strdup("no answer in the predictions file");
            continue;
        }
        vqa_result score;
        st = vqa_score(answer, it->answers, it->n_answers, &score, err);
        if (st) break;
        it->prediction = strdup(answer);
        it->scored = true;
        it->accuracy = 100.0 * score.accuracy;
        it->finish_reason = "stop";
    }
done:
    json_decref(root);
    return st;
}

int main(int argc, char **argv) {
    eval_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc == 1 ? 0 : 2;
    if (!tool_device("llava-eval", a.device)) return 1; /* as llava_load would, sooner */

    lv_err err = {{0}};
    eval_set set = {0};
    img_index ix = {0};
    llava *m = NULL;
    rc = 1;
    if (load_set(&a, &set, &err)) goto fail;
    if (a.predictions) {
        if (score_predictions(a.predictions, &set, &err)) goto fail;
        if (finish(&a, &set, &ix, 0, &err)) goto fail;
        rc = 0;
        goto done;
    }
    if (index_images(a.images, a.image_prefix, &ix, &err)) goto fail;
    LV_INFO("%d questions; %zu images in %s named %s<id>%s", set.n_items, ix.n, a.images, ix.prefix,
            ix.n_other ? " (other names ignored: give --image-prefix to pick another)" : "");
    if (llava_open(a.model, &m, &err)) goto fail;
    llava_set_exact(m, a.exact);
    llava_set_tensor_parallel(m, a.tp, a.tp_whole_tower);
    tool_report_load(m);
    if (llava_load(m, a.device, a.threads, &err)) goto fail;
    tool_report_model(m, 0, NULL);
    set.n_threads = llava_n_threads(m);
    double t0 = lv_now_ms();
    if (run_all(&a, m, &set, &ix, &err)) goto fail;
    if (finish(&a, &set, &ix, (lv_now_ms() - t0) / 1e3, &err)) goto fail;
    rc = 0;
    goto done;
fail:
    fflush(stdout);
    fprintf(stderr, "llava-eval: %s\n", err.msg);
done:
    llava_free(m);
    index_free(&ix);
    set_free(&set);
    return rc;
}
