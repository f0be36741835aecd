/* test_forward.c - the whole model against transformers (tests/data/forward,
 * see its README.md): for every case, on the cpu and ref backends, the
 * vision features, projected and packed image features, the logits of all
 * 40 greedy steps and the greedy ids. Then: requests run back to back on one
 * loaded model equal each run alone, and bad checkpoints or requests fail
 * with clear errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/file.h"
#include "backend/backend.h"
#include "base/half.h"
#include "engine/generate.h"
#include "engine/run.h"
#include "io/tensor_names.h"
#include "model/llava.h"
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_STEPS   40
#define MAX_IMGS  4
#define LOGIT_TOL 1e-3 /* max-abs, every step (the bar) */
#define FEAT_ABS  1e-3 /* features: |a - b| <= FEAT_ABS + FEAT_REL·|b| */
#define FEAT_REL  1e-4

/* The bars of the suite being run: the CPU's above, looser on the GPU's fast
 * path (16-bit weights and activations on the tensor cores; see
 * forward_matches_cuda). margin_ids: greedy ids must match only up to the
 * first step where transformers' top two logits are closer than 4x the bar. */
static double g_logit_tol = LOGIT_TOL, g_feat_abs = FEAT_ABS, g_feat_rel = FEAT_REL;
static bool g_margin_ids;

/* ---- fixtures ----------------------------------------------------------------- */

typedef struct {
    char dir[1024]; /* the case folder */
    json_t *j;      /* case.json */
    int n_images;
    img_tensor px[MAX_IMGS];
    int32_t *ids; /* input_ids (expanded) */
    int n_ids;
    int32_t want_ids[N_STEPS];
} fx_case;

static const char *model_dir(const char *model) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/forward/%s", tu_env("LLAVA_TEST_DATA"), model);
    return path;
}

/* A float32 file of exactly n values (heap). */
static float *read_bin(const char *dir, const char *file, size_t n) {
    char path[2048], *data;
    size_t len;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (lv_read_file(path, 256u << 20, &data, &len, NULL) != LV_OK)
        fail_msg("cannot read %s", path);
    if (len != n * sizeof(float)) fail_msg("%s: %zu bytes, expected %zu", path, len, n * 4);
    return (float *)data;
}

static int jint_at(json_t *arr, size_t i) {
    return (int)json_integer_value(json_array_get(arr, i));
}

static void load_case(const char *model, const char *name, fx_case *c) {
    memset(c, 0, sizeof *c);
    if ((size_t)snprintf(c->dir, sizeof c->dir, "%s/cases/%s", model_dir(model), name) >=
        sizeof c->dir)
        fail_msg("path too long");
    char path[2048];
    snprintf(path, sizeof path, "%s/case.json", c->dir);
    json_error_t je;
    c->j = json_load_file(path, 0, &je);
    if (!c->j) fail_msg("%s: %s", path, je.text);
    json_t *ids = json_object_get(c->j, "input_ids"), *gen = json_object_get(c->j, "generated_ids");
    c->n_ids = (int)json_array_size(ids);
    c->ids = malloc(c->n_ids * sizeof *c->ids);
    for (int i = 0; i < c->n_ids; i++) c->ids[i] = jint_at(ids, i);
    assert_int_equal(json_array_size(gen), N_STEPS);
    for (int i = 0; i < N_STEPS; i++) c->want_ids[i] = jint_at(gen, i);

    json_t *ppi = json_object_get(c->j, "patches_per_image");
    c->n_images = (int)json_array_size(ppi);
    assert_true(c->n_images <= MAX_IMGS);
    if (!c->n_images) return;
    int total = 0;
    for (int i = 0; i < c->n_images; i++) total += jint_at(ppi, i);
    size_t tile = 3 * 56 * 56;
    float *px = read_bin(c->dir, "pixel_values.bin", total * tile);
    json_t *info = json_object_get(c->j, "image_info");
    for (int i = 0, t0 = 0; i < c->n_images; i++) {
        json_t *ii = json_array_get(info, i), *grid = json_object_get(ii, "grid_tiles_hw");
        json_t *hw = json_object_get(ii, "size_hw");
        img_tensor *t = &c->px[i];
        t->n_tiles = jint_at(ppi, i);
        t->tile_h = t->tile_w = 56;
        t->image_h = jint_at(hw, 0);
        t->image_w = jint_at(hw, 1);
        t->grid_h = grid ? jint_at(grid, 0) : 0;
        t->grid_w = grid ? jint_at(grid, 1) : 0;
        t->data = malloc(t->n_tiles * tile * sizeof(float));
        memcpy(t->data, px + t0 * tile, t->n_tiles * tile * sizeof(float));
        t0 += t->n_tiles;
    }
    free(px);
}

static void free_case(fx_case *c) {
    for (int i = 0; i < c->n_images; i++) img_tensor_free(&c->px[i]);
    free(c->ids);
    json_decref(c->j);
}

/* ---- running ---------------------------------------------------------------------- */

typedef struct {
    int n;
    int32_t ids[N_STEPS];
    float *logits; /* (N_STEPS, vocab) */
    int vocab;
} run_out;

static void on_token(void *ud, const gen_token *t) {
    run_out *o = ud;
    assert_int_equal(t->index, o->n);
    assert_true(t->index < N_STEPS);
    o->ids[o->n++] = t->id;
    memcpy(o->logits + (size_t)t->index * t->vocab, t->logits, t->vocab * sizeof(float));
}

/* Greedy generation of N_STEPS tokens for case c, every step's logits kept. */
static void run_case(llava *m, const fx_case *c, run_out *o, gen_timings *tm) {
    memset(o, 0, sizeof *o);
    o->vocab = llava_vocab_size(m);
    o->logits = malloc((size_t)N_STEPS * o->vocab * sizeof(float));
    gen_params p;
    gen_params_default(&p, m);
    p.max_tokens = N_STEPS;
    gen_callbacks cb = {.on_token = on_token, .ud = o};
    gen_result r;
    lv_err err = {{0}};
    lv_status st = gen_run(m, c->ids, c->n_ids, c->px, c->n_images, &p, &cb, &r, &err);
    if (st) fail_msg("%s: %s", c->dir, err.msg);
    assert_int_equal(r.n_ids, N_STEPS);
    assert_string_equal(r.finish_reason, "length");
    if (tm) *tm = r.timings;
    gen_result_free(&r);
}

/* max |a-b|, and whether every element is within abs + rel·|b|. */
static double compare(const float *a, const float *b, size_t n, double abs_tol, double rel_tol,
                      bool *ok) {
    double worst = 0;
    *ok = true;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= abs_tol + rel_tol * fabs(b[i]))) *ok = false;
        if (d > worst || isnan(d)) worst = d;
    }
    return worst;
}

/* A model on backend with its KV cache in f32 (exact mode: the golden
 * comparisons) or f16 (the default). */
static llava *open_model_kv(const char *model, const char *backend, bool kv_f16) {
    llava *m;
    lv_err err = {{0}};
    if (llava_open(model_dir(model), &m, &err)) fail_msg("%s", err.msg);
    llava_set_exact(m, !kv_f16); /* f32 weights: exact mode changes only the cache */
    if (llava_load(m, backend, 0, &err)) fail_msg("%s", err.msg);
    return m;
}

static llava *open_model(const char *model, const char *backend) {
    return open_model_kv(model, backend, false);
}

/* Vision features, projected and packed rows of every image, concatenated,
 * against the case's files. */
static void check_features(llava *m, const fx_case *c, const char *label) {
    if (!c->n_images) return;
    const lv_vision_config *vc = &llava_config(m)->vision;
    int vd = vc->dim, td = llava_text_dim(m), side = vc->image_size / vc->patch_size;
    json_t *tensors = json_object_get(c->j, "tensors");
    int n_rows = (int)json_integer_value(
        json_array_get(json_object_get(json_object_get(tensors, "image_features"), "shape"), 0));
    int tiles = 0;
    for (int i = 0; i < c->n_images; i++) tiles += c->px[i].n_tiles;
    int n_feat = side * side;
    float *want_v = read_bin(c->dir, "vision_features.bin", (size_t)tiles * n_feat * vd);
    float *want_p = read_bin(c->dir, "projected.bin", (size_t)tiles * n_feat * td);
    float *want_f = read_bin(c->dir, "image_features.bin", (size_t)n_rows * td);
    size_t ov = 0, op = 0, of = 0;
    double worst[3] = {0};
    bool all_ok = true;
    for (int i = 0; i < c->n_images; i++) {
        llava_image im;
        lv_err err = {{0}};
        if (llava_encode_image(m, &c->px[i], true, &im, &err)) fail_msg("%s", err.msg);
        assert_int_equal(im.n_feat, n_feat);
        size_t nv = (size_t)im.n_tiles * n_feat * vd, np = (size_t)im.n_tiles * n_feat * td;
        size_t nf = (size_t)im.n_tokens * td;
        assert_true(of + nf <= (size_t)n_rows * td);
        bool ok;
        worst[0] = fmax(worst[0], compare(im.vision, want_v + ov, nv, g_feat_abs, g_feat_rel, &ok));
        all_ok &= ok;
        worst[1] =
            fmax(worst[1], compare(im.projected, want_p + op, np, g_feat_abs, g_feat_rel, &ok));
        all_ok &= ok;
        worst[2] = fmax(worst[2], compare(im.rows, want_f + of, nf, g_feat_abs, g_feat_rel, &ok));
        all_ok &= ok;
        ov += nv, op += np, of += nf;
        llava_image_free(&im);
    }
    assert_int_equal(of, (size_t)n_rows * td);
    printf("    %-32s vision %.2e  projected %.2e  packed %.2e (max abs)\n", label, worst[0],
           worst[1], worst[2]);
    if (!all_ok) fail_msg("%s: image features differ from transformers", label);
    free(want_v);
    free(want_p);
    free(want_f);
}

/* Transformers' top-1 minus top-2 logit at one step. */
static double ref_margin(const float *l, int vocab) {
    float a = -INFINITY, b = -INFINITY;
    for (int i = 0; i < vocab; i++) {
        if (l[i] > a) {
            b = a;
            a = l[i];
        } else if (l[i] > b) {
            b = l[i];
        }
    }
    return (double)a - b;
}

static void check_generation(llava *m, const fx_case *c, const char *label) {
    run_out o;
    gen_timings tm;
    run_case(m, c, &o, &tm);
    float *want = read_bin(c->dir, "logits.bin", (size_t)N_STEPS * o.vocab);
    /* steps whose prefix is the same as transformers' (all, unless a margin is unclear) */
    int n_steps = N_STEPS;
    if (g_margin_ids)
        for (int s = 0; s < N_STEPS; s++)
            if (ref_margin(want + (size_t)s * o.vocab, o.vocab) < 4 * g_logit_tol) {
                n_steps = s + 1; /* this step's logits still compare; its id may flip */
                break;
            }
    double worst = 0;
    int first_bad = -1;
    for (int s = 0; s < n_steps; s++) {
        bool ok;
        double d = compare(o.logits + (size_t)s * o.vocab, want + (size_t)s * o.vocab, o.vocab,
                           g_logit_tol, 0, &ok);
        worst = fmax(worst, d);
        if (!ok && first_bad < 0) first_bad = s;
    }
    int same = 0, want_same = n_steps < N_STEPS ? n_steps - 1 : N_STEPS;
    while (same < N_STEPS && o.ids[same] == c->want_ids[same]) same++;
    printf("    %-32s logits %.2e (max abs, %d steps), %d/40 ids equal; vision %.2f ms/tile, "
           "prefill %.0f tok/s, decode %.0f tok/s\n",
           label, worst, n_steps, same, tm.n_tiles ? tm.vision_ms / tm.n_tiles : 0.0,
           tm.n_prefill / (tm.prefill_ms / 1e3), tm.n_decode / (tm.decode_ms / 1e3));
    if (first_bad >= 0)
        fail_msg("%s: logits of step %d differ by more than %g", label, first_bad, g_logit_tol);
    if (same < want_same)
        fail_msg("%s: greedy id %d is %d, transformers %d", label, same, o.ids[same],
                 c->want_ids[same]);
    free(want);
    free(o.logits);
}

typedef struct {
    const char *model, *backend;
    const char *cases[4];
    int tp;           /* > 0: tensor parallel over this many ranks (backend/tp.h) */
    bool whole_tower; /* tensor parallel: the tower replicated, not split */
} suite;

static void forward_matches(void **state) {
    const suite *s = *state;
    llava *m;
    if (s->tp > 0) {
        lv_err err = {{0}};
        if (llava_open(model_dir(s->model), &m, &err)) fail_msg("%s", err.msg);
        llava_set_exact(m, true); /* as open_model: the f32 cache of the fixtures */
        llava_set_tensor_parallel(m, s->tp, s->whole_tower);
        if (llava_load(m, s->backend, 0, &err)) fail_msg("%s", err.msg);
        assert_int_equal(llava_tensor_parallel(m), s->tp);
    } else {
        m = open_model(s->model, s->backend);
    }
    for (int i = 0; i < 4 && s->cases[i]; i++) {
        fx_case c;
        load_case(s->model, s->cases[i], &c);
        char label[128];
        snprintf(label, sizeof label, "%s/%s [%s%s%.0d%s]", s->model, s->cases[i], s->backend,
                 s->tp ? " tp " : "", s->tp, s->whole_tower ? ", whole tower" : "");
        check_features(m, &c, label);
        check_generation(m, &c, label);
        free_case(&c);
    }
    llava_free(m);
}

static const suite next_cpu = {
    "llava-next-tiny", "cpu", {"one_image", "text_only", "two_images", "multi_turn"}, 0, false};
static const suite next_ref = {
    "llava-next-tiny", "ref", {"one_image", "text_only", "two_images", "multi_turn"}, 0, false};
static const suite v15_cpu = {"llava-1.5-tiny", "cpu", {"one_image", "text_only"}, 0, false};
static const suite v15_ref = {"llava-1.5-tiny", "ref", {"one_image", "text_only"}, 0, false};
/* Tensor parallelism (backend/tp.h) over CPU ranks: the same code a GPU's
 * ranks run, held to the same bars. One rank is the plain path through it;
 * two split heads, KV heads, FFN columns and the vocabulary (and the tower,
 * except llava-1.5-tiny's, whose 3 heads do not split two ways). */
static const suite next_tp1 = {
    "llava-next-tiny", "cpu", {"one_image", "text_only", "two_images", "multi_turn"}, 1, false};
static const suite next_tp2 = {
    "llava-next-tiny", "cpu", {"one_image", "text_only", "two_images", "multi_turn"}, 2, false};
static const suite next_tp2_whole = {
    "llava-next-tiny", "cpu", {"one_image", "multi_turn"}, 2, true};
static const suite v15_tp2 = {"llava-1.5-tiny", "cpu", {"one_image", "text_only"}, 2, true};

#ifdef LLAVA_HAVE_CUDA
/* The same fixtures on the GPU (ctest cuda_forward, LLAVA_TEST_CUDA=1; skipped
 * without a device). Exact mode (float32 weights, f32 KV: the fixtures' own
 * setting) holds the CPU's bars; the fast path (16-bit weights and activations
 * on the tensor cores, f16 KV) holds 5e-2 on logits and 1e-2 + 1e-2·|v| on
 * features (half rounding through the tower's layers), with greedy ids equal
 * wherever transformers' margin is clear. */
typedef struct {
    const suite *s;
    bool exact;
} cuda_suite;

static void forward_matches_cuda(void **state) {
    const cuda_suite *cs = *state;
    const suite *s = cs->s;
    llava *m;
    lv_err err = {{0}};
    if (llava_open(model_dir(s->model), &m, &err)) fail_msg("%s", err.msg);
    llava_set_exact(m, cs->exact);
    if (llava_load(m, "cuda", 0, &err)) {
        llava_free(m);
        if (strstr(err.msg, "no CUDA device")) skip();
        fail_msg("%s", err.msg);
    }
    g_logit_tol = cs->exact ? LOGIT_TOL : 5e-2;
    g_feat_abs = cs->exact ? FEAT_ABS : 1e-2;
    g_feat_rel = cs->exact ? FEAT_REL : 1e-2;
    g_margin_ids = !cs->exact;
    for (int i = 0; i < 4 && s->cases[i]; i++) {
        fx_case c;
        load_case(s->model, s->cases[i], &c);
        char label[128];
        snprintf(label, sizeof label, "%s/%s [cuda%s]", s->model, s->cases[i],
                 cs->exact ? " exact" : "");
        check_features(m, &c, label);
        check_generation(m, &c, label);
        free_case(&c);
    }
    g_logit_tol = LOGIT_TOL, g_feat_abs = FEAT_ABS, g_feat_rel = FEAT_REL, g_margin_ids = false;
    llava_free(m);
}

static const cuda_suite next_cuda_exact = {&next_cpu, true}, v15_cuda_exact = {&v15_cpu, true},
                        next_cuda_fast = {&next_cpu, false}, v15_cuda_fast = {&v15_cpu, false};
#endif

/* Every case run back to back on one loaded model gives, bit for bit, what
 * each gives on a freshly loaded model. */
static void back_to_back_equals_alone(void **state) {
    const suite *s = &next_cpu;
    fx_case c[4];
    run_out seq[4];
    llava *m = open_model(s->model, "cpu");
    for (int i = 0; i < 4; i++) {
        load_case(s->model, s->cases[i], &c[i]);
        run_case(m, &c[i], &seq[i], NULL);
    }
    /* and once more, in reverse order, on the same model */
    for (int i = 3; i >= 0; i--) {
        run_out again;
        run_case(m, &c[i], &again, NULL);
        assert_memory_equal(again.logits, seq[i].logits, (size_t)N_STEPS * again.vocab * 4);
        free(again.logits);
    }
    llava_free(m);
    for (int i = 0; i < 4; i++) {
        llava *fresh = open_model(s->model, "cpu");
        run_out alone;
        run_case(fresh, &c[i], &alone, NULL);
        assert_memory_equal(alone.ids, seq[i].ids, sizeof alone.ids);
        assert_memory_equal(alone.logits, seq[i].logits, (size_t)N_STEPS * alone.vocab * 4);
        free(alone.logits);
        free(seq[i].logits);
        llava_free(fresh);
        free_case(&c[i]);
    }
}

/* ---- bad inputs ---------------------------------------------------------------------- */

/* A copy of a fixture model directory under LLAVA_TMP (returns a static path). */
static const char *copy_model(const char *model, const char *tag) {
    const char *dir = tu_tmpdir(tag);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cp '%s'/*.json '%s'/*.safetensors '%s'/", model_dir(model),
             model_dir(model), dir);
    assert_int_equal(system(cmd), 0);
    return dir;
}

/* Replaces the first `from` after `after` in dir/file with `to` (same length). */
static void patch_file(const char *dir, const char *file, const char *after, const char *from,
                       const char *to) {
    char path[2048], *data;
    size_t len;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    assert_int_equal(lv_read_file(path, 64u << 20, &data, &len, NULL), LV_OK);
    assert_int_equal(strlen(from), strlen(to));
    char *a = strstr(data + (strstr(file, ".safetensors") ? 8 : 0), after); /* after the length */
    assert_non_null(a);
    char *p = strstr(a, from);
    assert_non_null(p);
    memcpy(p, to, strlen(to));
    tu_write_file(dir, file, data, len);
    free(data);
}

static void expect_load_error(const char *dir, lv_status want, const char *needle) {
    llava *m = NULL;
    lv_err err = {{0}};
    lv_status st = llava_open(dir, &m, &err);
    if (st == LV_OK) st = llava_load(m, "cpu", 1, &err);
    if (st != want || !strstr(err.msg, needle))
        fail_msg("want %s with \"%s\", got %s: %s", lv_status_str(want), needle, lv_status_str(st),
                 err.msg);
    printf("    ok: %s\n", err.msg);
    llava_free(m);
}

static void bad_checkpoints(void **state) {
    const char *d = copy_model("llava-1.5-tiny", "fwd_type");
    patch_file(d, "config.json", "\"model_type\"", "\"llava\"", "\"lluva\"");
    expect_load_error(d, LV_ERR_UNSUPPORTED, "lluva");

    d = copy_model("llava-1.5-tiny", "fwd_missing");
    patch_file(d, "model.safetensors", "", "model.norm.weight", "model.norm.weighz");
    expect_load_error(d, LV_ERR_FORMAT, "language_model.model.norm.weight");

    d = copy_model("llava-1.5-tiny", "fwd_shape");
    patch_file(d, "model.safetensors", "layers.1.mlp.gate_proj.weight", "[128,64]", "[64,128]");
    expect_load_error(d, LV_ERR_FORMAT, "expected shape [128, 64], got [64, 128]");

    d = copy_model("llava-1.5-tiny", "fwd_dtype");
    patch_file(d, "model.safetensors", "multi_modal_projector.linear_1.bias", "F16", "I16");
    expect_load_error(d, LV_ERR_UNSUPPORTED, "dtype I16");

    d = copy_model("llava-next-tiny", "fwd_vshape");
    patch_file(d, "config.json", "\"vision_config\"", "\"intermediate_size\": 128",
               "\"intermediate_size\": 256");
    expect_load_error(d, LV_ERR_FORMAT, "fc1.weight");

    d = copy_model("llava-1.5-tiny", "fwd_backend");
    llava *m;
    lv_err err = {{0}};
    assert_int_equal(llava_open(d, &m, &err), LV_OK);
    assert_int_equal(llava_load(m, "tpu", 1, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "tpu"));
    llava_free(m);
}

static void expect_gen_error(llava *m, const int32_t *ids, int n, const img_tensor *px, int n_px,
                             const char *needle) {
    gen_params p;
    gen_params_default(&p, m);
    p.max_tokens = 4;
    gen_result r;
    lv_err err = {{0}};
    lv_status st = gen_run(m, ids, n, px, n_px, &p, NULL, &r, &err);
    if (st != LV_ERR_ARG || !strstr(err.msg, needle))
        fail_msg("want \"%s\", got %s: %s", needle, lv_status_str(st), err.msg);
    printf("    ok: %s\n", err.msg);
    assert_null(r.ids);
}

static void bad_requests(void **state) {
    llava *m = open_model("llava-next-tiny", "cpu");
    fx_case one, two;
    load_case("llava-next-tiny", "one_image", &one);
    load_case("llava-next-tiny", "two_images", &two);
    /* two images for a prompt with one image's tokens, and the reverse */
    expect_gen_error(m, one.ids, one.n_ids, two.px, 2, "image tokens");
    expect_gen_error(m, two.ids, two.n_ids, one.px, 1, "image tokens");
    /* a prompt longer than the context (max_position_embeddings 4096) */
    int n = 4100;
    int32_t *ids = malloc(n * sizeof *ids);
    for (int i = 0; i < n; i++) ids[i] = 300 + i % 100;
    expect_gen_error(m, ids, n, NULL, 0, "context");
    ids[5] = 100000;
    expect_gen_error(m, ids, 10, NULL, 0, "vocabulary");
    free(ids);
    /* a tensor whose tile size the tower does not take */
    img_tensor bad = one.px[0];
    bad.tile_h = bad.tile_w = 28;
    expect_gen_error(m, one.ids, one.n_ids, &bad, 1, "tiles");
    /* the model still works afterwards */
    run_out o;
    run_case(m, &one, &o, NULL);
    assert_memory_equal(o.ids, one.want_ids, sizeof o.ids);
    free(o.logits);
    free_case(&one);
    free_case(&two);
    llava_free(m);

    /* a model whose context is shorter than the prompt */
    const char *d = copy_model("llava-next-tiny", "fwd_ctx");
    patch_file(d, "config.json", "max_position_embeddings", "4096", "32  ");
    llava *small;
    lv_err err = {{0}};
    assert_int_equal(llava_open(d, &small, &err), LV_OK);
    assert_int_equal(llava_load(small, "cpu", 1, &err), LV_OK);
    load_case("llava-next-tiny", "one_image", &one);
    expect_gen_error(small, one.ids, one.n_ids, one.px, 1, "context is 32 tokens");
    free_case(&one);
    llava_free(small);
}

/* transformers 5.x holds CLIP without the vision_model level; such names
 * are found under the canonical one. */
static void clip_names_without_vision_model(void **state) {
    char out[256];
    tn_canonical("vision_tower.embeddings.class_embedding", out, sizeof out);
    assert_string_equal(out, "vision_tower.vision_model.embeddings.class_embedding");
    tn_canonical("model.vision_tower.encoder.layers.3.mlp.fc1.bias", out, sizeof out);
    assert_string_equal(out, "vision_tower.vision_model.encoder.layers.3.mlp.fc1.bias");
    tn_canonical("model.vision_tower.pre_layrnorm.weight", out, sizeof out);
    assert_string_equal(out, "vision_tower.vision_model.pre_layrnorm.weight");
    tn_canonical("vision_tower.vision_model.post_layernorm.bias", out, sizeof out);
    assert_string_equal(out, "vision_tower.vision_model.post_layernorm.bias");
    assert_int_equal(tn_canonical_len("vision_tower.embeddings.x"),
                     strlen("vision_tower.vision_model.embeddings.x"));
}

/* Replaces every `from` in the header of dir/file (a safetensors file) with
 * `to`, fixing the header length; tensor data is unchanged. */
static void rename_in_header(const char *dir, const char *file, const char *from, const char *to) {
    char path[2048], *data;
    size_t len;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    assert_int_equal(lv_read_file(path, 64u << 20, &data, &len, NULL), LV_OK);
    uint64_t n;
    memcpy(&n, data, 8);
    char *out = malloc(len + n), *o = out + 8;
    for (size_t i = 8; i < 8 + n;) {
        if (strncmp(data + i, from, strlen(from)) == 0) {
            memcpy(o, to, strlen(to));
            o += strlen(to);
            i += strlen(from);
        } else {
            *o++ = data[i++];
        }
    }
    uint64_t new_n = (uint64_t)(o - out - 8);
    memcpy(out, &new_n, 8);
    memcpy(o, data + 8 + n, len - 8 - n);
    tu_write_file(dir, file, out, (size_t)(o - out) + len - 8 - n);
    free(out);
    free(data);
}

/* A checkpoint written with transformers 5.x names, CLIP without its
 * vision_model level included, gives the same logits. */
static void new_tensor_names_load(void **state) {
    const char *d = copy_model("llava-1.5-tiny", "fwd_names");
    rename_in_header(d, "model.safetensors", "vision_tower.vision_model.", "model.vision_tower.");
    rename_in_header(d, "model.safetensors", "language_model.model.", "model.language_model.");
    rename_in_header(d, "model.safetensors", "language_model.lm_head.", "lm_head.");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", d);
    llava *renamed, *orig = open_model_kv("llava-1.5-tiny", "cpu", true); /* both f16 KV */
    lv_err err = {{0}};
    if (llava_open(dir, &renamed, &err) || llava_load(renamed, "cpu", 0, &err))
        fail_msg("%s", err.msg);
    fx_case c;
    load_case("llava-1.5-tiny", "one_image", &c);
    run_out a, b;
    run_case(orig, &c, &a, NULL);
    run_case(renamed, &c, &b, NULL);
    assert_memory_equal(a.logits, b.logits, (size_t)N_STEPS * a.vocab * sizeof(float));
    free(a.logits);
    free(b.logits);
    free_case(&c);
    llava_free(orig);
    llava_free(renamed);
}

/* float32 → bfloat16, round to nearest even (finite values). */
static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* Rewrites dir/model.safetensors with every F16 tensor stored as `dtype`
 * ("F32": exact; "BF16": rounded). */
static void convert_checkpoint(const char *dir, const char *dtype) {
    char path[2048], *data;
    size_t len;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    assert_int_equal(lv_read_file(path, 64u << 20, &data, &len, NULL), LV_OK);
    uint64_t n;
    memcpy(&n, data, 8);
    json_t *hdr = json_loadb(data + 8, n, 0, NULL);
    assert_non_null(hdr);
    bool f32 = strcmp(dtype, "F32") == 0;
    char *body = malloc(2 * len), *o = body;
    const char *name;
    json_t *t;
    json_object_foreach(hdr, name, t) {
        if (strcmp(name, "__metadata__") == 0) continue;
        json_t *offs = json_object_get(t, "data_offsets");
        size_t a = json_integer_value(json_array_get(offs, 0));
        size_t b = json_integer_value(json_array_get(offs, 1));
        const unsigned char *src = (const unsigned char *)data + 8 + n + a;
        size_t start = (size_t)(o - body);
        for (size_t i = 0; i < (b - a) / 2; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            float f = lv_f16_to_f32(h);
            if (f32) {
                memcpy(o, &f, 4);
                o += 4;
            } else {
                uint16_t bf = to_bf16(f);
                memcpy(o, &bf, 2);
                o += 2;
            }
        }
        json_object_set_new(t, "dtype", json_string(dtype));
        json_object_set_new(t, "data_offsets",
                            json_pack("[I, I]", (json_int_t)start, (json_int_t)(o - body)));
    }
    char *h = json_dumps(hdr, JSON_COMPACT);
    size_t hn = strlen(h), padded = (hn + 7) / 8 * 8;
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t hl = padded;
    fwrite(&hl, 8, 1, f);
    fwrite(h, 1, hn, f);
    for (size_t i = hn; i < padded; i++) fputc(' ', f);
    fwrite(body, 1, (size_t)(o - body), f);
    fclose(f);
    free(h);
    free(body);
    free(data);
    json_decref(hdr);
}

/* The same checkpoint stored as F32 matches transformers as F16 does (the
 * values are the same); stored as BF16 it loads and runs, within bf16's
 * rounding of the reference. */
static void f32_and_bf16_checkpoints(void **state) {
    fx_case c;
    load_case("llava-1.5-tiny", "one_image", &c);
    const char *dtypes[2] = {"F32", "BF16"};
    for (int k = 0; k < 2; k++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s", copy_model("llava-1.5-tiny", dtypes[k]));
        convert_checkpoint(dir, dtypes[k]);
        llava *m;
        lv_err err = {{0}};
        if (llava_open(dir, &m, &err)) fail_msg("%s", err.msg);
        llava_set_exact(m, true); /* the f32 KV cache the golden holds for */
        if (llava_load(m, "cpu", 0, &err)) fail_msg("%s", err.msg);
        if (k == 0) {
            char label[64];
            snprintf(label, sizeof label, "llava-1.5-tiny/one_image as %s", dtypes[k]);
            check_features(m, &c, label);
            check_generation(m, &c, label);
        } else {
            run_out o;
            run_case(m, &c, &o, NULL);
            float *want = read_bin(c.dir, "logits.bin", (size_t)N_STEPS * o.vocab);
            bool ok;
            double d = compare(o.logits, want, o.vocab, 0.5, 0, &ok); /* step 0 only */
            printf("    llava-1.5-tiny/one_image as BF16: step-0 logits max-abs %.3f, first id %d "
                   "(transformers, F16: %d)\n",
                   d, o.ids[0], c.want_ids[0]);
            assert_true(ok);
            free(want);
            free(o.logits);
        }
        llava_free(m);
    }
    free_case(&c);
}

/* The default f16 KV cache against transformers (which ran in f32): how far
 * the logits move. Reported per case over the steps before the first greedy
 * id that differs (after it the two runs see different tokens), with the
 * same run's f32-cache logits as a second yardstick: the difference between
 * the two is the cache's rounding alone. */
static void f16_kv_logits(void **state) {
    const suite *suites[2] = {&next_cpu, &v15_cpu};
    for (int si = 0; si < 2; si++) {
        const suite *s = suites[si];
        llava *m16 = open_model_kv(s->model, "cpu", true), *m32 = open_model(s->model, "cpu");
        assert_int_equal(2 * llava_kv_bytes_per_pos(m16), llava_kv_bytes_per_pos(m32));
        for (int i = 0; i < 4 && s->cases[i]; i++) {
            fx_case c;
            load_case(s->model, s->cases[i], &c);
            run_out o16, o32;
            run_case(m16, &c, &o16, NULL);
            run_case(m32, &c, &o32, NULL);
            float *want = read_bin(c.dir, "logits.bin", (size_t)N_STEPS * o16.vocab);
            int same = 0;
            while (same < N_STEPS && o16.ids[same] == c.want_ids[same]) same++;
            double vs_hf = 0, vs_f32 = 0;
            bool ok;
            for (int t = 0; t < (same < N_STEPS ? same + 1 : N_STEPS); t++) {
                size_t at = (size_t)t * o16.vocab;
                vs_hf = fmax(vs_hf, compare(o16.logits + at, want + at, o16.vocab, 0, 0, &ok));
                vs_f32 =
                    fmax(vs_f32, compare(o16.logits + at, o32.logits + at, o16.vocab, 0, 0, &ok));
            }
            printf("    %s/%s f16 KV: logits max-abs %.2e vs transformers, %.2e vs the f32 cache "
                   "(steps 0..%d); %d/40 greedy ids equal\n",
                   s->model, s->cases[i], vs_hf, vs_f32, same < N_STEPS ? same : N_STEPS - 1, same);
            free(want);
            free(o16.logits);
            free(o32.logits);
            free_case(&c);
        }
        llava_free(m16);
        llava_free(m32);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(clip_names_without_vision_model),
        cmocka_unit_test_prestate(forward_matches, (void *)&next_cpu),
        cmocka_unit_test_prestate(forward_matches, (void *)&v15_cpu),
        cmocka_unit_test_prestate(forward_matches, (void *)&next_ref),
        cmocka_unit_test_prestate(forward_matches, (void *)&v15_ref),
        cmocka_unit_test_prestate(forward_matches, (void *)&next_tp1),
        cmocka_unit_test_prestate(forward_matches, (void *)&next_tp2),
        cmocka_unit_test_prestate(forward_matches, (void *)&next_tp2_whole),
        cmocka_unit_test_prestate(forward_matches, (void *)&v15_tp2),
        cmocka_unit_test(back_to_back_equals_alone),
        cmocka_unit_test(bad_checkpoints),
        cmocka_unit_test(bad_requests),
        cmocka_unit_test(new_tensor_names_load),
        cmocka_unit_test(f32_and_bf16_checkpoints),
        cmocka_unit_test(f16_kv_logits),
    };
#ifdef LLAVA_HAVE_CUDA
    const struct CMUnitTest cuda_tests[] = {
        cmocka_unit_test_prestate(forward_matches_cuda, (void *)&next_cuda_exact),
        cmocka_unit_test_prestate(forward_matches_cuda, (void *)&v15_cuda_exact),
        cmocka_unit_test_prestate(forward_matches_cuda, (void *)&next_cuda_fast),
        cmocka_unit_test_prestate(forward_matches_cuda, (void *)&v15_cuda_fast),
    };
    const char *on_gpu = getenv("LLAVA_TEST_CUDA");
    if (on_gpu && strcmp(on_gpu, "1") == 0)
        return cmocka_run_group_tests_name("forward on cuda", cuda_tests, NULL, NULL);
#endif
    return cmocka_run_group_tests_name("forward", tests, NULL, NULL);
}
