/*
 * test_gguf_model.c - a llama.cpp GGUF pair written by gguf_export
 * (quant/gguf_export.h) and loaded back (io/gguf_model.h, model_dir,
 * llava_open2): configs equal to the directory's, the q/k permutation as
 * convert_hf_to_gguf.py writes it, the same prompt ids, and the same
 * logits as the safetensors model it came from: F16 to fp32 rounding,
 * Q8_0 / Q4_0 / Q4_K within the format's error (same greedy ids on the
 * demo model). Also the errors a wrong pair gives, and a pair shaped like
 * the GGUFs converted from the original liuhaotian checkpoints (base
 * vocabulary without <image>: the virtual image id).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/file.h"
#include "engine/generate.h"
#include "engine/request.h"
#include "io/gguf.h"
#include "io/gguf_model.h"
#include "engine/run.h"
#include "engine/scheduler.h"
#include "model/llava.h"
#include "model/llava_impl.h" /* white-box: what the loader filled */
#include "quant/ggml_quantize.h"
#include "quant/gguf_export.h"
#include "quant/qsource.h"
#include "text/tokenizer.h"
#include "text/tokenizer_gguf.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_STEPS 4

static const char *tiny_dir(void) {
    static char p[1024];
    snprintf(p, sizeof p, "%s/forward/llava-next-tiny", tu_env("LLAVA_TEST_DATA"));
    return p;
}

static const char *demo_dir(void) {
    static char p[512];
    snprintf(p, sizeof p, "%s/../../models/demo", tu_env("LLAVA_TEST_DATA"));
    return p;
}

static const char *sample(int i) {
    static const char *names[] = {"sample_01_320x240.png", "sample_03_400x400.png",
                                  "sample_06_120x360.png"};
    static char p[1024];
    snprintf(p, sizeof p, "%.512s/samples/%.64s", demo_dir(), names[i]);
    return p;
}

/* Exports model_dir as type into a fresh directory; returns its path (static per tag). */
static const char *export_pair(const char *model_dir, lv_dtype type, const char *tag) {
    const char *out = tu_tmpdir(tag);
    qsource *src;
    lv_err err;
    if (qsource_open_dir(model_dir, &src, &err)) fail_msg("%s", err.msg);
    if (gguf_export(src, out, type, NULL, NULL, &err)) fail_msg("export %s: %s", tag, err.msg);
    qsource_close(src);
    return out;
}

static llava *open_pair(const char *dir) {
    char text[1100], mm[1100];
    snprintf(text, sizeof text, "%s/text.gguf", dir);
    snprintf(mm, sizeof mm, "%s/mmproj.gguf", dir);
    llava *m;
    lv_err err;
    if (llava_open2(text, mm, &m, &err)) fail_msg("%s", err.msg);
    if (llava_load(m, "cpu", 2, &err)) fail_msg("%s", err.msg);
    return m;
}

static llava *open_dir(const char *dir) {
    llava *m;
    lv_err err;
    if (llava_open(dir, &m, &err)) fail_msg("%s", err.msg);
    if (llava_load(m, "cpu", 2, &err)) fail_msg("%s", err.msg);
    return m;
}

/* ---- running ------------------------------------------------------------------ */

typedef struct {
    int n, vocab;
    int32_t ids[N_STEPS];
    float *logits; /* (N_STEPS, vocab) */
} run_out;

static void on_token(void *ud, const gen_token *t) {
    run_out *o = ud;
    if (t->index >= N_STEPS) return;
    o->ids[o->n++] = t->id;
    memcpy(o->logits + (size_t)t->index * t->vocab, t->logits, t->vocab * sizeof(float));
}

/* Greedy N_STEPS tokens for the raw prompt, with image (may be NULL). */
static void run_prompt(llava *m, const char *image, const char *prompt, run_out *o) {
    memset(o, 0, sizeof *o);
    o->vocab = m->text.vocab_size;
    o->logits = calloc((size_t)N_STEPS * o->vocab, sizeof(float));
    img_tensor px = {0};
    int n_tok = 0, n_img = image != NULL;
    lv_err err;
    if (image && request_load_image(m, image, &px, &n_tok, NULL, NULL, &err))
        fail_msg("%s", err.msg);
    int32_t *ids;
    size_t n_ids;
    if (request_prompt_ids(m, prompt, true, &px, n_img, &ids, &n_ids, &err))
        fail_msg("%s", err.msg);
    gen_params p;
    gen_params_default(&p, m);
    p.max_tokens = N_STEPS;
    p.sampling.temperature = 0;
    p.ignore_eos = true;
    gen_callbacks cb = {.on_token = on_token, .ud = o};
    gen_result r;
    if (gen_run(m, ids, (int)n_ids, n_img ? &px : NULL, n_img, &p, &cb, &r, &err))
        fail_msg("%s", err.msg);
    gen_result_free(&r);
    free(ids);
    if (image) img_tensor_free(&px);
}

/* Greedy N_STEPS tokens for "[INST] <image>\n<question> [/INST]" on image. */
static void run(llava *m, const char *image, const char *question, run_out *o) {
    char prompt[512];
    snprintf(prompt, sizeof prompt, "[INST] <image>\n%s [/INST]", question);
    run_prompt(m, image, prompt, o);
}

/* max |a - b| over the logits of every step, and the largest |b|. */
static double max_diff(const run_out *a, const run_out *b, double *scale) {
    double d = 0, s = 0;
    for (size_t i = 0; i < (size_t)N_STEPS * a->vocab; i++) {
        double e = fabs((double)a->logits[i] - b->logits[i]);
        if (e > d || isnan(e)) d = e;
        if (fabs(b->logits[i]) > s) s = fabs(b->logits[i]);
    }
    *scale = s;
    return d;
}

/* The gap between the largest and the second largest logit. */
static double top1_margin(const float *l, int n) {
    double a = -INFINITY, b = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (l[i] > a) {
            b = a;
            a = l[i];
        } else if (l[i] > b) {
            b = l[i];
        }
    }
    return a - b;
}

/* ---- rewriting a GGUF file (variants other converters write) ------------------- */

/* New name of tensor `name`, into buf; NULL keeps it. */
typedef const char *(*rename_fn)(const char *name, char *buf, size_t cap);

/* Copies in to out without the keys in drop (NULL-terminated) and with
 * tensors renamed by rn (may be NULL). */
static void rewrite_as(const char *in, const char *out, const char *const *drop, rename_fn rn,
                       const char *retype, uint32_t new_type) {
    gguf *g;
    lv_err err;
    if (gguf_open(in, &g, &err)) fail_msg("%s", err.msg);
    gguf_writer *w = gguf_writer_new();
    for (size_t i = 0; i < gguf_kv_count(g); i++) {
        const gguf_kv *kv = gguf_kv_at(g, i);
        bool skip = false;
        for (size_t d = 0; drop && drop[d]; d++) skip |= strcmp(kv->key, drop[d]) == 0;
        if (skip) continue;
        if (kv->type == GGUF_ARRAY && kv->arr_type == GGUF_STRING) {
            char **v = malloc((kv->n + 1) * sizeof *v);
            for (uint64_t j = 0; j < kv->n; j++) {
                size_t n;
                const char *s = gguf_arr_str(kv, j, &n);
                v[j] = strndup(s, n);
            }
            gguf_w_arr_str(w, kv->key, (const char *const *)v, kv->n);
            for (uint64_t j = 0; j < kv->n; j++) free(v[j]);
            free(v);
        } else if (kv->type == GGUF_ARRAY && gguf_arr_is_float(kv)) {
            float *v = malloc((kv->n + 1) * sizeof *v);
            for (uint64_t j = 0; j < kv->n; j++) v[j] = (float)gguf_arr_float(kv, j);
            gguf_w_arr_f32(w, kv->key, v, kv->n);
            free(v);
        } else if (kv->type == GGUF_ARRAY) {
            int32_t *v = malloc((kv->n + 1) * sizeof *v);
            for (uint64_t j = 0; j < kv->n; j++) v[j] = (int32_t)gguf_arr_int(kv, j);
            gguf_w_arr_i32(w, kv->key, v, kv->n);
            free(v);
        } else if (kv->type == GGUF_STRING) {
            const char *s;
            size_t n;
            assert_int_equal(gguf_get_str(g, kv->key, &s, &n, NULL, &err), LV_OK);
            char *c = strndup(s, n);
            gguf_w_str(w, kv->key, c);
            free(c);
        } else if (kv->type == GGUF_FLOAT32) {
            double d;
            assert_int_equal(gguf_get_float(g, kv->key, &d, NULL, &err), LV_OK);
            gguf_w_f32(w, kv->key, (float)d);
        } else if (kv->type == GGUF_BOOL) {
            bool b;
            assert_int_equal(gguf_get_bool(g, kv->key, &b, NULL, &err), LV_OK);
            gguf_w_bool(w, kv->key, b);
        } else {
            int64_t v;
            assert_int_equal(gguf_get_int(g, kv->key, &v, NULL, &err), LV_OK);
            gguf_w_u32(w, kv->key, (uint32_t)v);
        }
    }
    for (size_t i = 0; i < gguf_tensor_count(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        char buf[GGUF_MAX_NAME];
        const char *name = rn ? rn(t->name, buf, sizeof buf) : NULL;
        uint32_t type = retype && strcmp(t->name, retype) == 0 ? new_type : t->type;
        gguf_w_tensor(w, name ? name : t->name, t->n_dims, t->ne, type);
    }
    if (gguf_w_begin(w, out, &err)) fail_msg("%s", err.msg);
    for (size_t i = 0; i < gguf_tensor_count(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (gguf_w_data(w, t->data, t->nbytes, &err)) fail_msg("%s", err.msg);
    }
    if (gguf_w_finish(w, &err)) fail_msg("%s", err.msg);
    gguf_writer_free(w);
    gguf_close(g);
}

static void rewrite(const char *in, const char *out, const char *const *drop, rename_fn rn) {
    rewrite_as(in, out, drop, rn, NULL, 0);
}

/* current clip-impl.h names: v.image_newline, and ffn_up = fc1 (no legacy swap) */
static const char *modern_names(const char *name, char *buf, size_t cap) {
    if (strcmp(name, "model.image_newline") == 0) return "v.image_newline";
    const char *p = strstr(name, ".ffn_");
    if (!p || strncmp(name, "v.blk.", 6) != 0) return NULL;
    bool down = strncmp(p, ".ffn_down.", 10) == 0;
    snprintf(buf, cap, "%.*s.ffn_%s.%s", (int)(p - name), name, down ? "up" : "down",
             strrchr(name, '.') + 1);
    return buf;
}

/* Files as other converters write them load to the same model: an mmproj
 * without clip.vision.feature_layer (the legacy converter: the stored
 * blocks are the ones to run), v.image_newline and fc1 named ffn_up; a text
 * model without tokenizer.ggml.merges (merges from the scores). */
static void other_writers(void **state) {
    const char *out = export_pair(tiny_dir(), LV_DTYPE_F16, "gguf_variants");
    char text[1100], mm[1100], text2[1100], mm2[1100];
    snprintf(text, sizeof text, "%s/text.gguf", out);
    snprintf(mm, sizeof mm, "%s/mmproj.gguf", out);
    snprintf(text2, sizeof text2, "%s/text-nomerges.gguf", out);
    snprintf(mm2, sizeof mm2, "%s/mmproj-modern.gguf", out);
    const char *drop_text[] = {"tokenizer.ggml.merges", "llava.processor_chat_template", NULL};
    const char *drop_mm[] = {"clip.vision.feature_layer", NULL};
    rewrite(text, text2, drop_text, NULL);
    rewrite(mm, mm2, drop_mm, modern_names);
    llava *a = open_pair(out), *b;
    lv_err err;
    if (llava_open2(text2, mm2, &b, &err) || llava_load(b, "cpu", 2, &err)) fail_msg("%s", err.msg);
    assert_int_equal(b->md.config.feature_layers[0], a->md.config.feature_layers[0]);
    run_out x, y;
    run(a, sample(2), "What color is the star?", &x);
    run(b, sample(2), "What color is the star?", &y);
    double scale, d = max_diff(&y, &x, &scale);
    print_message("variant pair: max |logit diff| %.3g\n", d);
    assert_true(d == 0);
    free(x.logits);
    free(y.logits);
    llava_free(a);
    llava_free(b);
}

/* ---- tests -------------------------------------------------------------------- */

static void config_matches(const lv_model_config *a, const lv_model_config *b) {
    assert_string_equal(a->model_type, b->model_type);
    assert_int_equal(a->text.vocab_size, b->text.vocab_size);
    assert_int_equal(a->text.dim, b->text.dim);
    assert_int_equal(a->text.hidden_dim, b->text.hidden_dim);
    assert_int_equal(a->text.n_layers, b->text.n_layers);
    assert_int_equal(a->text.n_heads, b->text.n_heads);
    assert_int_equal(a->text.n_kv_heads, b->text.n_kv_heads);
    assert_int_equal(a->text.head_dim, b->text.head_dim);
    assert_true(fabs(a->text.rope_theta - b->text.rope_theta) < 1e-3 * b->text.rope_theta);
    assert_true(fabs(a->text.rms_eps - b->text.rms_eps) < 1e-9);
    assert_int_equal(a->vision.dim, b->vision.dim);
    assert_int_equal(a->vision.image_size, b->vision.image_size);
    assert_int_equal(a->vision.patch_size, b->vision.patch_size);
    assert_int_equal(a->vision.n_heads, b->vision.n_heads);
    assert_string_equal(a->vision.hidden_act, b->vision.hidden_act);
    assert_int_equal(a->image_token_id, b->image_token_id);
    assert_int_equal(a->n_pinpoints, b->n_pinpoints);
    for (int i = 0; i < a->n_pinpoints; i++) {
        assert_int_equal(a->pinpoints[i][0], b->pinpoints[i][0]);
        assert_int_equal(a->pinpoints[i][1], b->pinpoints[i][1]);
    }
}

/* F16: the same bytes reach the same kernels, so the logits are identical. */
static void f16_matches(const char *model, const char *tag, int n_samples) {
    const char *out = export_pair(model, LV_DTYPE_F16, tag);
    llava *ref = open_dir(model), *g = open_pair(out);
    config_matches(&g->md.config, &ref->md.config);
    assert_int_equal(g->image.n_pinpoints, ref->image.n_pinpoints);
    for (int c = 0; c < 3; c++) assert_true(fabs(g->image.mean[c] - ref->image.mean[c]) < 1e-6);
    /* the directory holding the pair opens as well */
    llava *by_dir;
    lv_err err;
    if (llava_open(out, &by_dir, &err)) fail_msg("%s", err.msg);
    assert_non_null(by_dir->md.gguf_text);
    llava_free(by_dir);
    for (int i = 0; i < n_samples; i++) {
        run_out a, b;
        run(ref, sample(i), "What color is the star?", &a);
        run(g, sample(i), "What color is the star?", &b);
        double scale, d = max_diff(&b, &a, &scale);
        print_message("%s F16 sample %d: max |logit diff| %.3g (|logit| up to %.3g)\n", tag, i, d,
                      scale);
        assert_true(d <= 1e-4 * (1 + scale));
        assert_memory_equal(a.ids, b.ids, sizeof a.ids);
        free(a.logits);
        free(b.logits);
    }
    llava_free(ref);
    llava_free(g);
}

static void tiny_f16(void **state) {
    f16_matches(tiny_dir(), "gguf_tiny_f16", 2);
}

static void demo_f16(void **state) {
    f16_matches(demo_dir(), "gguf_demo_f16", 1);
}

/* The text model's q/k rows as convert_hf_to_gguf.py permutes them. */
static void qk_permutation(void **state) {
    const char *out = export_pair(tiny_dir(), LV_DTYPE_F16, "gguf_perm");
    char path[1100];
    snprintf(path, sizeof path, "%s/text.gguf", out);
    gguf *g;
    lv_err err;
    if (gguf_open(path, &g, &err)) fail_msg("%s", err.msg);
    qsource *src;
    if (qsource_open_dir(tiny_dir(), &src, &err)) fail_msg("%s", err.msg);
    const lv_text_config *tc = &qsource_config(src)->text;
    const char *names[2] = {"self_attn.q_proj", "self_attn.k_proj"};
    const char *gnames[2] = {"blk.1.attn_q.weight", "blk.1.attn_k.weight"};
    for (int w = 0; w < 2; w++) {
        char hf[256];
        snprintf(hf, sizeof hf, "language_model.model.layers.1.%s.weight", names[w]);
        long i = qsource_find(src, hf);
        assert_true(i >= 0);
        const qs_tensor *t = qsource_at(src, (size_t)i);
        float *x = malloc(t->n_elems * sizeof *x), *row = malloc(t->shape[1] * sizeof *row);
        assert_int_equal(qsource_read(src, (size_t)i, x, &err), LV_OK);
        const gguf_tensor *gt = gguf_find_tensor(g, gnames[w]);
        assert_non_null(gt);
        assert_int_equal(gt->type, GGML_F16);
        int heads = w ? tc->n_kv_heads : tc->n_heads, d = (int)t->shape[0] / heads, half = d / 2;
        int64_t cols = t->shape[1];
        for (int h = 0; h < heads; h++)
            for (int j = 0; j < d; j++) {
                /* HF row h·D + j sits at GGUF row h·D + 2·(j mod half) + j div half */
                int64_t gr = (int64_t)h * d + 2 * (j % half) + j / half;
                ggml_dequantize_row(GGML_F16, (const uint8_t *)gt->data + gr * cols * 2, cols, row);
                assert_memory_equal(row, x + ((int64_t)h * d + j) * cols, cols * sizeof *row);
            }
        free(x);
        free(row);
    }
    qsource_close(src);
    gguf_close(g);
    /* and the loader undoes it: the canonical tensor equals the source */
    st_set *s;
    char mm[1100];
    snprintf(mm, sizeof mm, "%s/mmproj.gguf", out);
    if (gguf_model_weights(path, mm, &s, &err)) fail_msg("%s", err.msg);
    st_set *ref;
    if (st_open(tiny_dir(), &ref, &err)) fail_msg("%s", err.msg);
    size_t n_cmp = 0;
    for (size_t i = 0; i < st_count(ref); i++) {
        const st_tensor *a = st_at(ref, i), *b = st_find(s, a->name);
        if (!b) {
            /* only the unused post_layernorm and the vision layers past the feature layer */
            assert_true(strstr(a->name, "post_layernorm") || strstr(a->name, "encoder.layers.3."));
            continue;
        }
        assert_int_equal(a->n_dims, b->n_dims);
        assert_memory_equal(a->shape, b->shape, a->n_dims * sizeof a->shape[0]);
        if (a->dtype == b->dtype) {
            assert_int_equal(a->nbytes, b->nbytes);
            if (memcmp(a->data, b->data, a->nbytes)) fail_msg("tensor %s differs", a->name);
            n_cmp++;
        }
    }
    print_message("%zu tensors byte-identical after the round trip\n", n_cmp);
    assert_true(n_cmp > 20);
    st_close(ref);
    st_close(s);
}

/* Q8_0 / Q4_0 / Q4_K on the demo: logits near the float model's, same greedy ids. */
static void demo_quantized(void **state) {
    static const struct {
        lv_dtype type;
        const char *tag;
        double tol; /* max |diff| relative to the largest |logit| */
        bool same_ids;
    } Q[] = {
        {LV_DTYPE_Q8_0, "gguf_demo_q8_0", 0.02, true},
        {LV_DTYPE_Q4_0, "gguf_demo_q4_0", 0.25, false},
        {LV_DTYPE_Q4_K, "gguf_demo_q4_k", 0.25, false},
    };
    llava *ref = open_dir(demo_dir());
    run_out base[3];
    const char *qs[3] = {"What color is the star?", "What shape is in the picture?",
                         "Describe the image."};
    for (int i = 0; i < 3; i++) run(ref, sample(i), qs[i], &base[i]);
    for (size_t k = 0; k < LV_ARRAY_LEN(Q); k++) {
        const char *out = export_pair(demo_dir(), Q[k].type, Q[k].tag);
        llava *g = open_pair(out);
        int same_first = 0;
        for (int i = 0; i < 3; i++) {
            run_out o;
            run(g, sample(i), qs[i], &o);
            double scale, d = max_diff(&o, &base[i], &scale);
            bool ids_equal = memcmp(o.ids, base[i].ids, sizeof o.ids) == 0;
            same_first += o.ids[0] == base[i].ids[0];
            print_message("%s sample %d: max |logit diff| %.3g of |logit| %.3g, ids %s\n", Q[k].tag,
                          i, d, scale, ids_equal ? "equal" : "differ");
            assert_true(d <= Q[k].tol * scale);
            if (Q[k].same_ids) assert_true(ids_equal);
            /* ids may part only where the float model's top-1 margin is within the error */
            int s = 0;
            while (s < N_STEPS && o.ids[s] == base[i].ids[s]) s++;
            if (s < N_STEPS) {
                double m = top1_margin(base[i].logits + (size_t)s * o.vocab, o.vocab);
                print_message("  first difference at step %d: float top-1 margin %.3g\n", s, m);
                assert_true(m <= 2 * d);
            }
            free(o.logits);
        }
        assert_true(same_first >= 2);
        llava_free(g);
    }
    for (int i = 0; i < 3; i++) free(base[i].logits);
    llava_free(ref);
}

/* ---- a pair as converted from the original liuhaotian checkpoint ------------ */

/* max |a - b| over the first a->vocab logits of every step (b may be wider). */
static double max_diff_prefix(const run_out *a, const run_out *b, double *scale) {
    double d = 0, s = 0;
    for (int k = 0; k < N_STEPS; k++)
        for (int i = 0; i < a->vocab; i++) {
            double x = a->logits[(size_t)k * a->vocab + i], y = b->logits[(size_t)k * b->vocab + i];
            double e = fabs(x - y);
            if (e > d || isnan(e)) d = e;
            if (fabs(y) > s) s = fabs(y);
        }
    *scale = s;
    return d;
}

static bool has_key(const char *path, const char *key) {
    gguf *g;
    lv_err err;
    if (gguf_open(path, &g, &err)) fail_msg("%s", err.msg);
    bool found = false;
    for (size_t i = 0; i < gguf_kv_count(g); i++) found |= strcmp(gguf_kv_at(g, i)->key, key) == 0;
    gguf_close(g);
    return found;
}

/* A greedy worker job of N_STEPS tokens for prompt on image (may be NULL). */
static sched_job *worker_job(llava *m, const char *image, const char *prompt) {
    sched_job *j = sched_job_new();
    assert_non_null(j);
    lv_err err;
    int n_tok = 0;
    if (image) {
        j->images = calloc(1, sizeof *j->images);
        assert_non_null(j->images);
        if (request_load_image(m, image, &j->images[0], &n_tok, NULL, NULL, &err))
            fail_msg("%s", err.msg);
        j->n_images = 1;
    }
    size_t n_ids;
    if (request_prompt_ids(m, prompt, true, j->images, j->n_images, &j->ids, &n_ids, &err))
        fail_msg("%s", err.msg);
    j->n_ids = (int)n_ids;
    gen_params_default(&j->params, m);
    j->params.max_tokens = N_STEPS;
    j->params.sampling.temperature = 0;
    j->params.ignore_eos = true;
    return j;
}

/* The batched server path on the virtual image id: an image job and a
 * text-only job together give the ids gen_run gave (want[0], want[1]); a
 * job whose ids hold the virtual id without an image fails alone. */
static void worker_matches(llava *m, const char *image, const char *q, const char *text_only,
                           const int32_t want[2][N_STEPS]) {
    sched *w;
    lv_err err;
    sched_config cfg = {.queue_size = 4, .parallel = 2, .ctx_size = 2048};
    if (sched_new(m, &cfg, &w, &err) || sched_start(w, &err)) fail_msg("sched_new: %s", err.msg);
    sched_job *jobs[3] = {worker_job(m, image, q), worker_job(m, NULL, text_only),
                          worker_job(m, NULL, text_only)};
    jobs[2]->ids[1] = m->md.config.image_token_id; /* smuggled, no image */
    for (int i = 0; i < 3; i++)
        if (sched_submit(w, jobs[i], &err)) fail_msg("sched_submit: %s", err.msg);
    for (int i = 0; i < 3; i++) sched_job_wait(jobs[i]);
    for (int i = 0; i < 2; i++) {
        if (jobs[i]->st) fail_msg("job %d: %s", i, jobs[i]->err.msg);
        assert_int_equal(jobs[i]->result.n_ids, N_STEPS);
        assert_memory_equal(jobs[i]->result.ids, want[i], sizeof want[i]);
    }
    assert_int_equal(jobs[2]->st, LV_ERR_ARG);
    assert_non_null(strstr(jobs[2]->err.msg, "outside the vocabulary"));
    sched_stop(w, false);
    sched_free(w);
    for (int i = 0; i < 3; i++) sched_job_release(jobs[i]);
}

/* The demo exported with the base vocabulary only (no <image>, no <pad>,
 * embed_tokens / lm_head cut to it, no merges, no feature_layer): the model
 * uses the virtual image id vocab_size, and answers as the safetensors
 * model does, logit for logit over the shared ids. */
static void demo_base_vocab(void **state) {
    const char *out = tu_tmpdir("gguf_demo_base");
    qsource *src;
    lv_err err;
    if (qsource_open_dir(demo_dir(), &src, &err)) fail_msg("%s", err.msg);
    gguf_export_opts opts = {.base_vocab = true};
    if (gguf_export_ex(src, out, LV_DTYPE_F16, &opts, NULL, NULL, &err)) fail_msg("%s", err.msg);
    qsource_close(src);
    char text[1100], mm[1100];
    snprintf(text, sizeof text, "%s/text.gguf", out);
    snprintf(mm, sizeof mm, "%s/mmproj.gguf", out);
    assert_false(has_key(text, "tokenizer.ggml.merges"));
    assert_false(has_key(mm, "clip.vision.feature_layer"));
    assert_true(has_key(mm, "clip.vision.image_grid_pinpoints"));

    llava *ref = open_dir(demo_dir()), *g = open_pair(out);
    const lv_model_config *rc = &ref->md.config, *gc = &g->md.config;
    /* the vocabulary ends where the image token was: nothing of it in the file */
    assert_true(gc->text.vocab_size < rc->text.vocab_size);
    assert_int_equal(gc->text.vocab_size, rc->image_token_id);
    assert_int_equal(gc->image_token_id, gc->text.vocab_size);
    assert_int_equal(g->text.vocab_size, gc->text.vocab_size);
    assert_int_equal(tok_vocab_size(g->tok), gc->text.vocab_size + 1);
    tok *plain; /* the vocabulary alone has no virtual token */
    if (tok_load_gguf_file(text, &plain, &err)) fail_msg("%s", err.msg);
    assert_int_equal(tok_vocab_size(plain), gc->text.vocab_size);
    tok_free(plain);
    assert_int_equal(gc->feature_layers[0], rc->feature_layers[0] < 0
                                                ? rc->vision.n_layers + 1 + rc->feature_layers[0]
                                                : rc->feature_layers[0]);

    /* the same ids, <image> mapped to the virtual id */
    const char *prompt = "[INST] <image>\nWhat color is the star? [/INST]";
    int32_t *a, *b;
    size_t na, nb;
    assert_int_equal(tok_encode(ref->tok, prompt, strlen(prompt), true, &a, &na, &err), LV_OK);
    assert_int_equal(tok_encode(g->tok, prompt, strlen(prompt), true, &b, &nb, &err), LV_OK);
    assert_int_equal(na, nb);
    for (size_t i = 0; i < na; i++)
        assert_int_equal(a[i] == rc->image_token_id ? gc->image_token_id : a[i], b[i]);
    /* detokenized: "<image>", nothing when special tokens are skipped */
    char *txt;
    size_t tl;
    int32_t img = gc->image_token_id;
    assert_int_equal(tok_decode(g->tok, &img, 1, false, &txt, &tl, &err), LV_OK);
    assert_string_equal(txt, "<image>");
    free(txt);
    assert_int_equal(tok_decode(g->tok, &img, 1, true, &txt, &tl, &err), LV_OK);
    assert_int_equal(tl, 0);
    free(txt);

    /* image questions and a text-only prompt: same logits, same greedy ids */
    const char *qs[3] = {"What color is the star?", "What shape is in the picture?",
                         "Describe the image."};
    int32_t want[2][N_STEPS];
    for (int i = 0; i < 4; i++) {
        run_out x, y;
        if (i < 3) {
            run(ref, sample(i), qs[i], &x);
            run(g, sample(i), qs[i], &y);
        } else {
            run_prompt(ref, NULL, "[INST] What is a star? [/INST]", &x);
            run_prompt(g, NULL, "[INST] What is a star? [/INST]", &y);
        }
        assert_int_equal(y.vocab, gc->text.vocab_size);
        double scale, d = max_diff_prefix(&y, &x, &scale);
        print_message(
            "base vocab %s %d: max |logit diff| %.3g (|logit| up to %.3g), ids %d %d %d %d\n",
            i < 3 ? "sample" : "text-only", i, d, scale, y.ids[0], y.ids[1], y.ids[2], y.ids[3]);
        assert_true(d <= 1e-4 * (1 + scale));
        assert_memory_equal(x.ids, y.ids, sizeof x.ids);
        if (i == 0 || i == 3) memcpy(want[i ? 1 : 0], y.ids, sizeof y.ids);
        free(x.logits);
        free(y.logits);
    }
    worker_matches(g, sample(0), "[INST] <image>\nWhat color is the star? [/INST]",
                   "[INST] What is a star? [/INST]", want);

    /* more "<image>" than images, or image ids without features, fail cleanly */
    const char *two = "[INST] <image><image>\nWhat color is the star? [/INST]";
    int32_t *ids;
    size_t n_ids;
    img_tensor none = {0};
    assert_int_equal(request_prompt_ids(g, two, true, &none, 1, &ids, &n_ids, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "2 <image> tokens but 1 image"));
    llava_seq *sq;
    llava_batch *bt;
    llava_features *f;
    float *logits = malloc((size_t)gc->text.vocab_size * sizeof *logits);
    assert_int_equal(llava_seq_new(g, 64, &sq, &err), LV_OK);
    assert_int_equal(llava_batch_new(g, 64, 1, &bt, &err), LV_OK);
    assert_int_equal(llava_features_new(g, 1, &f, &err), LV_OK);
    llava_input in = {.seq = sq, .ids = b, .n = (int)nb};
    assert_int_equal(llava_forward(g, bt, &in, 1, logits, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "needs image features"));
    in.features = f;
    in.feature_row = 1; /* none left */
    assert_int_equal(llava_forward(g, bt, &in, 1, logits, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "image tokens"));
    int32_t past[2] = {1, img + 1};
    in = (llava_input){.seq = sq, .ids = past, .n = 2};
    assert_int_equal(llava_forward(g, bt, &in, 1, logits, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "outside the vocabulary"));
    /* decoding never takes (nor produces) the virtual id */
    in.n = 1;
    assert_int_equal(llava_forward(g, bt, &in, 1, logits, &err), LV_OK);
    in.ids = &img;
    assert_int_equal(llava_forward(g, bt, &in, 1, logits, &err), LV_ERR_ARG);
    llava_features_free(f);
    llava_batch_free(bt);
    llava_seq_free(sq);
    free(logits);
    free(a);
    free(b);
    llava_free(ref);
    llava_free(g);
}

static void pair_errors(void **state) {
    const char *out = export_pair(tiny_dir(), LV_DTYPE_F16, "gguf_err");
    char text[1100], mm[1100];
    snprintf(text, sizeof text, "%s/text.gguf", out);
    snprintf(mm, sizeof mm, "%s/mmproj.gguf", out);
    llava *m = NULL;
    lv_err err;
    /* swapped */
    assert_int_equal(llava_open2(mm, text, &m, &err), LV_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "general.architecture \"clip\""));
    assert_null(m);
    /* a missing mmproj */
    char none[1100];
    snprintf(none, sizeof none, "%s/none.gguf", out);
    assert_int_equal(llava_open2(text, none, &m, &err), LV_ERR_IO);
    assert_non_null(strstr(err.msg, "none.gguf"));
    /* a truncated text model */
    const char *bad = tu_tmpdir("gguf_err_trunc");
    char *data;
    size_t len;
    assert_int_equal(lv_read_file(text, 1u << 30, &data, &len, &err), LV_OK);
    tu_write_file(bad, "text.gguf", data, len - 100);
    free(data);
    char tpath[1100];
    snprintf(tpath, sizeof tpath, "%s/text.gguf", bad);
    assert_int_equal(llava_open2(tpath, mm, &m, &err), LV_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "run past its end"));
    /* a tensor type the reader knows but the engine has no dtype for (I32: same size as F32) */
    char i32[1100];
    snprintf(i32, sizeof i32, "%s/text-i32.gguf", bad);
    rewrite_as(text, i32, NULL, NULL, "output_norm.weight", 26);
    assert_int_equal(llava_open2(i32, mm, &m, &err), LV_OK);
    assert_int_equal(llava_load(m, "cpu", 1, &err), LV_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "tensor 'output_norm.weight': ggml type 26 (I32)"));
    llava_free(m);
    m = NULL;
    /* export of an unsupported type, and into a path that is a file */
    qsource *src;
    assert_int_equal(qsource_open_dir(tiny_dir(), &src, &err), LV_OK);
    assert_int_equal(gguf_export(src, out, LV_DTYPE_Q6_K, NULL, NULL, &err), LV_ERR_ARG);
    assert_int_equal(gguf_export(src, text, LV_DTYPE_F16, NULL, NULL, &err), LV_ERR_IO);
    qsource_close(src);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(qk_permutation),  cmocka_unit_test(tiny_f16),
        cmocka_unit_test(pair_errors),     cmocka_unit_test(other_writers),
        cmocka_unit_test(demo_f16),        cmocka_unit_test(demo_quantized),
        cmocka_unit_test(demo_base_vocab),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
