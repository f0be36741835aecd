/* test_smolvlm_ref.c - SmolVLM / SmolVLM2 against transformers
 * (tests/data/smolvlm, see its README.md): for every model and case of
 * index.json, through the project's own paths from the files up,
 *   - the chat template renders the case's messages to transformers' prompt;
 *   - each image file, decoded and preprocessed by us, gives the processor's
 *     pixel_values bit for bit;
 *   - the prompt ids (template + image expansion + tokenizer) equal the
 *     processor's input_ids;
 *   - the SigLIP tower (after post_layernorm) and the connector give its
 *     vision features and image features;
 *   - greedy generation gives its logits within 2e-3 at every step and its ids;
 * on the cpu backend (exact; LLAVA_TEST_DEVICE=cuda: the same bars on a GPU),
 * for the HF directories and for the GGUF pair llama.cpp's converter made of
 * smolvlm-tiny. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/buf.h"
#include "base/file.h"
#include "engine/generate.h"
#include "engine/request.h"
#include "engine/run.h"
#include "model/llava.h"
#include "text/chat_template.h"
#include "testutil.h"

#include <jansson.h>
#include <zlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STEPS 64
#define MAX_IMGS  4
#define LOGIT_TOL 2e-3 /* max-abs, every step (the bar) */
#define FEAT_ABS  1e-3 /* features: |a - b| <= FEAT_ABS + FEAT_REL·|b| */
#define FEAT_REL  1e-4

static char g_root[1024];
static const char *g_device = "cpu"; /* LLAVA_TEST_DEVICE: the same on "cuda" (a GPU machine) */

static json_t *load_json(const char *path) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) fail_msg("%s: %s", path, je.text);
    return j;
}

static float *read_bin(const char *dir, const char *file, size_t n) {
    char path[2600], *data;
    size_t len;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (lv_read_file(path, 512u << 20, &data, &len, NULL) != LV_OK)
        fail_msg("cannot read %s", path);
    if (len != n * sizeof(float)) fail_msg("%s: %zu bytes, expected %zu", path, len, n * 4);
    return (float *)data;
}

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

/* ---- one case ----------------------------------------------------------------------- */

typedef struct {
    char dir[2400];
    json_t *j;
    int n_images;
    img_tensor px[MAX_IMGS];
    int32_t *ids;
    int n_ids, n_steps;
    int32_t want_ids[MAX_STEPS];
} sm_case;

/* The case's messages as chat_message, rendered with the model's template. */
static void check_template(const llava *m, const sm_case *c, const char *label) {
    json_t *msgs = json_object_get(c->j, "messages");
    size_t n = json_array_size(msgs);
    chat_message *cm = calloc(n, sizeof *cm);
    chat_part **parts = calloc(n, sizeof *parts);
    for (size_t i = 0; i < n; i++) {
        json_t *msg = json_array_get(msgs, i), *content = json_object_get(msg, "content");
        const char *role = json_string_value(json_object_get(msg, "role"));
        cm[i].role = !strcmp(role, "system") ? CHAT_SYSTEM
                     : !strcmp(role, "user") ? CHAT_USER
                                             : CHAT_ASSISTANT;
        size_t np = json_array_size(content);
        parts[i] = calloc(np ? np : 1, sizeof **parts);
        for (size_t k = 0; k < np; k++) {
            json_t *p = json_array_get(content, k);
            if (!strcmp(json_string_value(json_object_get(p, "type")), "image")) {
                parts[i][k] = (chat_part){CHAT_PART_IMAGE, NULL, 0};
            } else {
                json_t *t = json_object_get(p, "text");
                parts[i][k] =
                    (chat_part){CHAT_PART_TEXT, json_string_value(t), json_string_length(t)};
            }
        }
        cm[i].parts = parts[i];
        cm[i].n_parts = np;
    }
    lv_buf out = {0};
    size_t n_img = 0;
    lv_err err = {{0}};
    if (chat_render(llava_chat_template(m), cm, n, &out, &n_img, &err)) fail_msg("%s", err.msg);
    const char *want = json_string_value(json_object_get(c->j, "prompt"));
    if (strcmp(out.data, want) != 0)
        fail_msg("%s: template renders\n%s\ntransformers\n%s", label, out.data, want);
    assert_int_equal((int)n_img, c->n_images);
    lv_buf_free(&out);
    for (size_t i = 0; i < n; i++) free(parts[i]);
    free(parts);
    free(cm);
}

/* Images through our decoder and processor; pixels against the processor's. */
static void load_case(const llava *m, const char *case_json, sm_case *c, const char *label) {
    memset(c, 0, sizeof *c);
    snprintf(c->dir, sizeof c->dir, "%s/%s", g_root, case_json);
    char *slash = strrchr(c->dir, '/');
    c->j = load_json(c->dir);
    *slash = '\0';
    json_t *ids = json_object_get(c->j, "input_ids"), *gen = json_object_get(c->j, "generated_ids");
    c->n_ids = (int)json_array_size(ids);
    c->ids = malloc(c->n_ids * sizeof *c->ids);
    for (int i = 0; i < c->n_ids; i++)
        c->ids[i] = (int32_t)json_integer_value(json_array_get(ids, i));
    c->n_steps = (int)json_array_size(gen);
    assert_true(c->n_steps > 0 && c->n_steps <= MAX_STEPS);
    for (int i = 0; i < c->n_steps; i++)
        c->want_ids[i] = (int32_t)json_integer_value(json_array_get(gen, i));
    json_t *imgs = json_object_get(c->j, "images");
    c->n_images = (int)json_array_size(imgs);
    assert_true(c->n_images <= MAX_IMGS);
    if (!c->n_images) return;
    json_t *info = json_object_get(c->j, "image_info");
    int frames = 0;
    for (int i = 0; i < c->n_images; i++) {
        char path[2600];
        snprintf(path, sizeof path, "%s/%s", g_root, json_string_value(json_array_get(imgs, i)));
        int n_tok;
        lv_err err = {{0}};
        if (request_load_image(m, path, &c->px[i], &n_tok, NULL, NULL, &err))
            fail_msg("%s", err.msg);
        json_t *ii = json_array_get(info, i);
        assert_int_equal(c->px[i].grid_h, json_integer_value(json_object_get(ii, "rows")));
        assert_int_equal(c->px[i].grid_w, json_integer_value(json_object_get(ii, "cols")));
        assert_int_equal(c->px[i].n_tiles, json_integer_value(json_object_get(ii, "frames")));
        assert_int_equal(n_tok, json_integer_value(json_object_get(ii, "n_tokens")));
        frames += c->px[i].n_tiles;
    }
    /* pixel_values: the crc32 of each frame's float32 bytes (README.md) */
    json_t *crcs = json_object_get(
        json_object_get(json_object_get(c->j, "tensors"), "pixel_values"), "frame_crc32");
    assert_int_equal((int)json_array_size(crcs), frames);
    int T = c->px[0].tile_h, f = 0;
    size_t frame = (size_t)3 * T * T * sizeof(float);
    for (int i = 0; i < c->n_images; i++)
        for (int k = 0; k < c->px[i].n_tiles; k++, f++) {
            uLong crc = crc32(0L, (const Bytef *)(c->px[i].data + (size_t)k * 3 * T * T), frame);
            if (crc != (uLong)json_integer_value(json_array_get(crcs, f)))
                fail_msg("%s: image %d frame %d: pixel_values differ from transformers' processor",
                         label, i, k);
        }
}

static void free_case(sm_case *c) {
    for (int i = 0; i < c->n_images; i++) img_tensor_free(&c->px[i]);
    free(c->ids);
    json_decref(c->j);
}

static void check_ids(const llava *m, const sm_case *c, const char *label) {
    const char *prompt = json_string_value(json_object_get(c->j, "prompt"));
    int32_t *ids;
    size_t n;
    lv_err err = {{0}};
    if (request_prompt_ids(m, prompt, true, c->px, c->n_images, &ids, &n, &err))
        fail_msg("%s: %s", label, err.msg);
    size_t same = 0;
    while (same < n && same < (size_t)c->n_ids && ids[same] == c->ids[same]) same++;
    if (n != (size_t)c->n_ids || same != n)
        fail_msg("%s: prompt ids differ at %zu (ours %zu ids, transformers %d): %d vs %d", label,
                 same, n, c->n_ids, same < n ? ids[same] : -1,
                 same < (size_t)c->n_ids ? c->ids[same] : -1);
    free(ids);
}

static void check_features(llava *m, const sm_case *c, const char *label) {
    if (!c->n_images) return;
    int vd = llava_config(m)->vision.dim, td = llava_text_dim(m);
    int frames = 0, rows = 0, n_feat = 0;
    for (int i = 0; i < c->n_images; i++) frames += c->px[i].n_tiles;
    json_t *t = json_object_get(json_object_get(c->j, "tensors"), "vision_features");
    n_feat = (int)json_integer_value(json_array_get(json_object_get(t, "shape"), 1));
    rows = (int)json_integer_value(json_object_get(c->j, "n_image_tokens"));
    float *want_v = read_bin(c->dir, "vision_features.bin", (size_t)frames * n_feat * vd);
    float *want_f = read_bin(c->dir, "image_features.bin", (size_t)rows * td);
    size_t ov = 0, of = 0;
    double worst[2] = {0};
    bool all_ok = true;
    for (int i = 0; i < c->n_images; i++) {
        llava_image im;
        lv_err err = {{0}};
        if (llava_encode_image(m, &c->px[i], true, &im, &err)) fail_msg("%s", err.msg);
        assert_int_equal(im.n_feat, n_feat);
        size_t nv = (size_t)im.n_tiles * n_feat * vd, nf = (size_t)im.n_tokens * td;
        assert_true(of + nf <= (size_t)rows * td);
        bool ok;
        worst[0] = fmax(worst[0], compare(im.vision, want_v + ov, nv, FEAT_ABS, FEAT_REL, &ok));
        all_ok &= ok;
        worst[1] = fmax(worst[1], compare(im.rows, want_f + of, nf, FEAT_ABS, FEAT_REL, &ok));
        all_ok &= ok;
        ov += nv, of += nf;
        llava_image_free(&im);
    }
    assert_int_equal(of, (size_t)rows * td);
    printf("    %-40s vision %.2e  image features %.2e (max abs)\n", label, worst[0], worst[1]);
    if (!all_ok) fail_msg("%s: image features differ from transformers", label);
    free(want_v);
    free(want_f);
}

typedef struct {
    int n;
    int32_t ids[MAX_STEPS];
    float *logits;
} run_out;

static void on_token(void *ud, const gen_token *t) {
    run_out *o = ud;
    assert_true(t->index < MAX_STEPS);
    o->ids[o->n++] = t->id;
    memcpy(o->logits + (size_t)t->index * t->vocab, t->logits, t->vocab * sizeof(float));
}

static void check_generation(llava *m, const sm_case *c, const char *label) {
    int vocab = llava_vocab_size(m);
    run_out o = {0};
    o.logits = malloc((size_t)c->n_steps * vocab * sizeof(float));
    gen_params p;
    gen_params_default(&p, m);
    p.max_tokens = c->n_steps;
    p.ignore_eos = true;
    gen_callbacks cb = {.on_token = on_token, .ud = &o};
    gen_result r;
    lv_err err = {{0}};
    if (gen_run(m, c->ids, c->n_ids, c->px, c->n_images, &p, &cb, &r, &err))
        fail_msg("%s: %s", label, err.msg);
    assert_int_equal(r.n_ids, c->n_steps);
    gen_result_free(&r);
    float *want = read_bin(c->dir, "logits.bin", (size_t)c->n_steps * vocab);
    double worst = 0;
    int first_bad = -1;
    for (int s = 0; s < c->n_steps; s++) {
        bool ok;
        worst = fmax(worst, compare(o.logits + (size_t)s * vocab, want + (size_t)s * vocab, vocab,
                                    LOGIT_TOL, 0, &ok));
        if (!ok && first_bad < 0) first_bad = s;
    }
    int same = 0;
    while (same < c->n_steps && o.ids[same] == c->want_ids[same]) same++;
    printf("    %-40s logits %.2e (max abs, %d steps), %d/%d greedy ids equal\n", label, worst,
           c->n_steps, same, c->n_steps);
    if (first_bad >= 0)
        fail_msg("%s: logits of step %d differ by more than %g", label, first_bad, LOGIT_TOL);
    if (same < c->n_steps)
        fail_msg("%s: greedy id %d is %d, transformers %d", label, same, o.ids[same],
                 c->want_ids[same]);
    free(want);
    free(o.logits);
}

/* ---- suites -------------------------------------------------------------------------- */

static bool have_fixtures(void) {
    char path[1100];
    snprintf(path, sizeof path, "%s/index.json", g_root);
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* Every case of model `name` on model m (opened from its directory, or a GGUF pair). */
static void run_model_cases(llava *m, const char *name, const char *tag) {
    char path[1100];
    snprintf(path, sizeof path, "%s/index.json", g_root);
    json_t *index = load_json(path), *cases = json_object_get(index, "cases");
    int ran = 0;
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *e = json_array_get(cases, i);
        const char *cj = json_string_value(json_object_get(e, "case"));
        if (strncmp(cj, name, strlen(name)) != 0 || cj[strlen(name)] != '/') continue;
        char label[160];
        snprintf(label, sizeof label, "%s/%s [%s]", name,
                 json_string_value(json_object_get(e, "name")), tag);
        sm_case c;
        load_case(m, cj, &c, label);
        check_template(m, &c, label);
        check_ids(m, &c, label);
        check_features(m, &c, label);
        check_generation(m, &c, label);
        free_case(&c);
        ran++;
    }
    assert_true(ran > 0);
    json_decref(index);
}

/* The CUDA attention takes head sizes that are multiples of 8 (the released
 * towers' are 64 and 72); smolvlm-tiny's 12-wide vision heads are not:
 * skipped there, saying why. */
static bool cuda_refuses(const char *hf_dir) {
    if (strncmp(g_device, "cuda", 4) != 0) return false;
    char path[1200];
    snprintf(path, sizeof path, "%s/config.json", hf_dir);
    json_t *c = load_json(path), *v = json_object_get(c, "vision_config");
    long hd = (long)(json_integer_value(json_object_get(v, "hidden_size")) /
                     json_integer_value(json_object_get(v, "num_attention_heads")));
    json_decref(c);
    if (hd % 8 == 0) return false;
    print_message("skipped on %s: %s's vision heads are %ld wide; the CUDA attention takes "
                  "multiples of 8\n",
                  g_device, hf_dir, hd);
    return true;
}

static llava *open_exact(const char *path, const char *mmproj) {
    llava *m;
    lv_err err = {{0}};
    if (llava_open2(path, mmproj, &m, &err)) fail_msg("%s", err.msg);
    llava_set_exact(m, true);
    if (llava_load(m, g_device, 0, &err)) fail_msg("%s", err.msg);
    return m;
}

static void hf_model_matches(void **state) {
    const char *name = *state;
    if (!have_fixtures()) skip();
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/%s", g_root, name);
    if (cuda_refuses(dir)) skip();
    llava *m = open_exact(dir, NULL);
    char tag[64];
    snprintf(tag, sizeof tag, "hf, %s", g_device);
    run_model_cases(m, name, tag);
    llava_free(m);
}

static void gguf_pair_matches(void **state) {
    (void)state;
    char text[1100], mmproj[1100];
    snprintf(text, sizeof text, "%s/smolvlm-tiny-gguf/text.gguf", g_root);
    snprintf(mmproj, sizeof mmproj, "%s/smolvlm-tiny-gguf/mmproj.gguf", g_root);
    FILE *f = fopen(text, "rb");
    if (!f) skip();
    fclose(f);
    char hf[1100];
    snprintf(hf, sizeof hf, "%s/smolvlm-tiny", g_root);
    if (cuda_refuses(hf)) skip();
    llava *m = open_exact(text, mmproj);
    char tag[64];
    snprintf(tag, sizeof tag, "gguf pair, %s", g_device);
    run_model_cases(m, "smolvlm-tiny", tag);
    llava_free(m);
}

int main(void) {
    snprintf(g_root, sizeof g_root, "%s/smolvlm", tu_env("LLAVA_TEST_DATA"));
    const char *dev = getenv("LLAVA_TEST_DEVICE");
    if (dev && *dev) g_device = dev;
    static const char *smol = "smolvlm-tiny", *idef = "idefics3-tiny";
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate(hf_model_matches, (void *)smol),
        cmocka_unit_test_prestate(hf_model_matches, (void *)idef),
        cmocka_unit_test(gguf_pair_matches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
