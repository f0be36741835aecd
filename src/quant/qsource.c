/*
 * qsource.c - the tensors a converter reads (see qsource.h).
 *
 * Two kinds of source share one tensor list:
 *   - a directory: a float llava-hf checkpoint opened with io/model_dir
 *     (weights mapped, never copied); qsource_read converts one tensor's
 *     F16/BF16/F32 values to float32. Non-float tensors (the I64
 *     position_ids buffer of some exports) are not listed: no writer wants
 *     them. A checkpoint that is already quantized (a config "quantization"
 *     block, a U32 weight or a ".scales" tensor) is LV_ERR_UNSUPPORTED:
 *     re-quantizing dequantized weights would compound the error silently.
 *   - a preset (presets.h): the tensor list is derived from the config the
 *     way transformers builds the modules (names and PyTorch shapes of
 *     formats.md §2), and the values are generated on demand.
 *
 * RANDOM VALUES. Scaled like a trained checkpoint: linear, embedding and
 * conv weights and biases ~ N(0, 0.02) (transformers' initializer_range),
 * norm gains 1 and norm biases 0. A tensor's values depend only on the seed
 * and its name, in chunks of RAND_CHUNK elements each seeded on its own, so
 * any order of reading gives the same model. The normal is approximated by
 * the sum of four uniform 16-bit numbers (Irwin-Hall, 4 terms), which costs
 * one 64-bit generator step per value: a 7B model is 7.5e9 values, and this
 * must take seconds, not the minutes a Box-Muller transform would.
 */
#include "qsource.h"

#include "backend/backend.h"
#include "io/json_type.h"
#include "base/file.h"
#include "base/half.h"
#include "io/model_dir.h"
#include "io/safetensors.h"
#include "quant/presets.h"
#include "quant/synth_tokenizer.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_MAX_BYTES (1u << 20)
#define RAND_CHUNK       65536
#define RAND_STD         0.02f

struct qsource {
    lv_model_config config;
    qs_tensor *tensors;
    size_t n, cap;
    /* directory source */
    lv_model_dir md;
    bool has_md;
    const st_tensor **st; /* st[i]: the stored tensor behind tensors[i] */
    char *config_json;    /* heap copy (directory) or NULL (preset: borrowed) */
    const char *config_text;
    /* random source */
    const qs_preset *preset;
    uint64_t seed;
    char *tokenizer_json; /* path (heap) or NULL */
    bool synthetic;       /* the tokenizer is quant/synth_tokenizer.h's */
};

/* ---- tensor list ------------------------------------------------------- */

static lv_status add_tensor(qsource *s, const char *name, int n_dims, const int64_t *shape,
                            lv_dtype dt, lv_err *err) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        qs_tensor *t = realloc(s->tensors, cap * sizeof(*t));
        if (!t) return lv_fail(err, LV_ERR_NOMEM, "out of memory listing tensors");
        s->tensors = t;
        s->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy) return lv_fail(err, LV_ERR_NOMEM, "out of memory listing tensors");
    qs_tensor *t = &s->tensors[s->n++];
    memset(t, 0, sizeof(*t));
    t->name = copy;
    t->n_dims = n_dims;
    t->n_elems = 1;
    for (int d = 0; d < n_dims; d++) {
        t->shape[d] = shape[d];
        t->n_elems *= shape[d];
    }
    t->is_float = true;
    t->dtype = dt;
    return LV_OK;
}

/* add_tensor with the name from a format and the shape as arguments. */
static lv_status addf(qsource *s, lv_err *err, int n_dims, int64_t d0, int64_t d1, int64_t d2,
                      int64_t d3, const char *fmt, ...) __attribute__((format(printf, 8, 9)));
static lv_status addf(qsource *s, lv_err *err, int n_dims, int64_t d0, int64_t d1, int64_t d2,
                      int64_t d3, const char *fmt, ...) {
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof(name), fmt, ap);
    va_end(ap);
    int64_t shape[4] = {d0, d1, d2, d3};
    return add_tensor(s, name, n_dims, shape, LV_DTYPE_F16, err);
}

#define ADD1(d0, ...)                                                                              \
    do {                                                                                           \
        if ((st = addf(s, err, 1, d0, 0, 0, 0, __VA_ARGS__)) != LV_OK) return st;                  \
    } while (0)
#define ADD2(d0, d1, ...)                                                                          \
    do {                                                                                           \
        if ((st = addf(s, err, 2, d0, d1, 0, 0, __VA_ARGS__)) != LV_OK) return st;                 \
    } while (0)

/* The encoder layers and post_layernorm of a CLIP or SigLIP tower (the same
 * names and shapes in both) under the prefix vp. */
static lv_status list_encoder_layers(qsource *s, const lv_vision_config *v, const char *vp,
                                     lv_err *err) {
    lv_status st;
    const int64_t VD = v->dim, VF = v->hidden_dim;
    static const char *const attn[] = {"k_proj", "v_proj", "q_proj", "out_proj"};
    for (int l = 0; l < v->n_layers; l++) {
        for (int k = 0; k < 4; k++) {
            ADD2(VD, VD, "%s.encoder.layers.%d.self_attn.%s.weight", vp, l, attn[k]);
            ADD1(VD, "%s.encoder.layers.%d.self_attn.%s.bias", vp, l, attn[k]);
        }
        ADD1(VD, "%s.encoder.layers.%d.layer_norm1.weight", vp, l);
        ADD1(VD, "%s.encoder.layers.%d.layer_norm1.bias", vp, l);
        ADD2(VF, VD, "%s.encoder.layers.%d.mlp.fc1.weight", vp, l);
        ADD1(VF, "%s.encoder.layers.%d.mlp.fc1.bias", vp, l);
        ADD2(VD, VF, "%s.encoder.layers.%d.mlp.fc2.weight", vp, l);
        ADD1(VD, "%s.encoder.layers.%d.mlp.fc2.bias", vp, l);
        ADD1(VD, "%s.encoder.layers.%d.layer_norm2.weight", vp, l);
        ADD1(VD, "%s.encoder.layers.%d.layer_norm2.bias", vp, l);
    }
    ADD1(VD, "%s.post_layernorm.weight", vp);
    ADD1(VD, "%s.post_layernorm.bias", vp);
    return LV_OK;
}

/* The SigLIP tower and connector of Idefics3 / SmolVLM (shared/spec/smolvlm.md
 * §1.3, canonical names): a patch conv with bias, one position row per patch
 * (no class embedding, no pre-norm), post_layernorm, and the connector's one
 * matrix [text dim, vision dim · scale²] without bias. */
static lv_status list_idefics3_vision(qsource *s, const lv_model_config *c, lv_err *err) {
    lv_status st;
    const lv_vision_config *v = &c->vision;
    const int64_t VD = v->dim, side = v->image_size / v->patch_size;
    const char *vp = "vision_tower.vision_model";
    if ((st = addf(s, err, 4, VD, v->n_channels, v->patch_size, v->patch_size,
                   "%s.embeddings.patch_embedding.weight", vp)) != LV_OK)
        return st;
    ADD1(VD, "%s.embeddings.patch_embedding.bias", vp);
    ADD2(side * side, VD, "%s.embeddings.position_embedding.weight", vp);
    if ((st = list_encoder_layers(s, v, vp, err))) return st;
    int64_t sf = c->scale_factor;
    ADD2(c->text.dim, VD * sf * sf, "connector.modality_projection.proj.weight");
    return LV_OK;
}

/* The llava-hf (transformers 4.4x) tensors of the model cfg describes:
 * formats.md §2.1-2.3, generalised over the config's dims. */
static lv_status list_from_config(qsource *s, const lv_model_config *c, lv_err *err) {
    lv_status st;
    const lv_text_config *t = &c->text;
    const int64_t D = t->dim, F = t->hidden_dim, V = t->vocab_size;
    const int64_t QD = (int64_t)t->n_heads * t->head_dim, KD = (int64_t)t->n_kv_heads * t->head_dim;
    ADD2(V, D, "language_model.model.embed_tokens.weight");
    for (int l = 0; l < t->n_layers; l++) {
        const char *p = "language_model.model.layers";
        ADD2(QD, D, "%s.%d.self_attn.q_proj.weight", p, l);
        ADD2(KD, D, "%s.%d.self_attn.k_proj.weight", p, l);
        ADD2(KD, D, "%s.%d.self_attn.v_proj.weight", p, l);
        ADD2(D, QD, "%s.%d.self_attn.o_proj.weight", p, l);
        if (t->attention_bias) {
            ADD1(QD, "%s.%d.self_attn.q_proj.bias", p, l);
            ADD1(KD, "%s.%d.self_attn.k_proj.bias", p, l);
            ADD1(KD, "%s.%d.self_attn.v_proj.bias", p, l);
            ADD1(D, "%s.%d.self_attn.o_proj.bias", p, l);
        }
        ADD2(F, D, "%s.%d.mlp.gate_proj.weight", p, l);
        ADD2(F, D, "%s.%d.mlp.up_proj.weight", p, l);
        ADD2(D, F, "%s.%d.mlp.down_proj.weight", p, l);
        if (t->mlp_bias) {
            ADD1(F, "%s.%d.mlp.gate_proj.bias", p, l);
            ADD1(F, "%s.%d.mlp.up_proj.bias", p, l);
            ADD1(D, "%s.%d.mlp.down_proj.bias", p, l);
        }
        ADD1(D, "%s.%d.input_layernorm.weight", p, l);
        ADD1(D, "%s.%d.post_attention_layernorm.weight", p, l);
    }
    ADD1(D, "language_model.model.norm.weight");
    if (!t->tie_word_embeddings) ADD2(V, D, "language_model.lm_head.weight");

    if (hf_is_idefics3(c)) return list_idefics3_vision(s, c, err);
    const lv_vision_config *v = &c->vision;
    const int64_t VD = v->dim, side = v->image_size / v->patch_size;
    const char *vp = "vision_tower.vision_model";
    ADD1(VD, "%s.embeddings.class_embedding", vp);
    if ((st = addf(s, err, 4, VD, v->n_channels, v->patch_size, v->patch_size,
                   "%s.embeddings.patch_embedding.weight", vp)) != LV_OK)
        return st;
    ADD2(side * side + 1, VD, "%s.embeddings.position_embedding.weight", vp);
    ADD1(VD, "%s.pre_layrnorm.weight", vp);
    ADD1(VD, "%s.pre_layrnorm.bias", vp);
    if ((st = list_encoder_layers(s, v, vp, err))) return st;

    ADD2(D, VD * c->n_feature_layers, "multi_modal_projector.linear_1.weight");
    if (c->projector_bias) ADD1(D, "multi_modal_projector.linear_1.bias");
    ADD2(D, D, "multi_modal_projector.linear_2.weight");
    if (c->projector_bias) ADD1(D, "multi_modal_projector.linear_2.bias");
    if (strcmp(c->model_type, "llava_next") == 0) ADD1(D, "image_newline");
    return LV_OK;
}

/* ---- opening ----------------------------------------------------------- */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

lv_status qsource_open_dir(const char *model_dir, qsource **out, lv_err *err) {
    *out = NULL;
    qsource *s = calloc(1, sizeof(*s));
    if (!s) return lv_fail(err, LV_ERR_NOMEM, "%s: out of memory", model_dir);
    /* the writers read preprocessor_config.json themselves (gguf_export) or copy it
     * (mlx_export), so a processor class io/hf_config does not know (SmolVLM's, on
     * branches without it) does not stop a conversion */
    lv_status st =
        mdir_open(model_dir, MDIR_WEIGHTS | MDIR_NO_TOKENIZER | MDIR_NO_PREPROC, &s->md, err);
    if (st != LV_OK) goto fail;
    s->has_md = true;
    s->config = s->md.config;
    char path[4096];
    size_t len = 0;
    if ((st = lv_path_join(path, sizeof(path), model_dir, "config.json", err)) != LV_OK ||
        (st = lv_read_file(path, CONFIG_MAX_BYTES, &s->config_json, &len, err)) != LV_OK)
        goto fail;
    s->config_text = s->config_json;
    json_t *root = json_loadb_whole(s->config_json, strlen(s->config_json), 0, NULL);
    bool quantized = root && (json_object_get(root, "quantization") ||
                              json_object_get(root, "quantization_config"));
    json_decref(root);
    if (quantized) {
        st = lv_fail(err, LV_ERR_UNSUPPORTED,
                     "%s: the checkpoint is already quantized (config.json has a quantization "
                     "block); llava-quantize needs a float (F16/BF16/F32) checkpoint",
                     path);
        goto fail;
    }
    size_t n = st_count(s->md.weights);
    s->st = calloc(n ? n : 1, sizeof(*s->st));
    if (!s->st) {
        st = lv_fail(err, LV_ERR_NOMEM, "%s: out of memory", model_dir);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_at(s->md.weights, i);
        if (t->dtype == LV_DTYPE_U32 || ends_with(t->name, ".scales")) {
            st = lv_fail(err, LV_ERR_UNSUPPORTED,
                         "%s: tensor '%s' (%s) is already quantized; llava-quantize needs a "
                         "float (F16/BF16/F32) checkpoint",
                         t->file_name, t->name, dtype_name(t->dtype));
            goto fail;
        }
        if (t->dtype != LV_DTYPE_F16 && t->dtype != LV_DTYPE_BF16 && t->dtype != LV_DTYPE_F32)
            continue; /* position_ids and other buffers */
        if (t->n_dims > QS_MAX_DIMS) {
            st = lv_fail(err, LV_ERR_UNSUPPORTED, "%s: tensor '%s' has %d dims; at most %d",
                         t->file_name, t->name, t->n_dims, QS_MAX_DIMS);
            goto fail;
        }
        if ((st = add_tensor(s, t->name, t->n_dims, t->shape, t->dtype, err)) != LV_OK) goto fail;
        s->st[s->n - 1] = t;
    }
    if (s->md.tokenizer_path) {
        s->tokenizer_json = strdup(s->md.tokenizer_path);
        if (!s->tokenizer_json) {
            st = lv_fail(err, LV_ERR_NOMEM, "%s: out of memory", model_dir);
            goto fail;
        }
    }
    *out = s;
    return LV_OK;
fail:
    qsource_close(s);
    return st;
}

lv_status qsource_open_random(const char *preset, uint64_t seed, const char *tokenizer_json,
                              qsource **out, lv_err *err) {
    *out = NULL;
    const qs_preset *p = qs_preset_find(preset);
    if (!p) {
        char names[256] = "";
        for (size_t i = 0; i < qs_preset_count(); i++) {
            size_t l = strlen(names);
            snprintf(names + l, sizeof(names) - l, "%s%s", i ? ", " : "", qs_preset_at(i)->name);
        }
        return lv_fail(err, LV_ERR_ARG, "unknown preset '%s'; known presets: %s", preset, names);
    }
    if (tokenizer_json && !lv_is_file(tokenizer_json))
        return lv_fail(err, LV_ERR_IO, "%s: no such tokenizer file", tokenizer_json);
    qsource *s = calloc(1, sizeof(*s));
    if (!s) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    lv_status st =
        hf_config_parse(p->config_json, strlen(p->config_json), p->name, &s->config, err);
    if (st != LV_OK) goto fail;
    s->preset = p;
    s->seed = seed;
    s->config_text = p->config_json;
    if (tokenizer_json && !(s->tokenizer_json = strdup(tokenizer_json))) {
        st = lv_fail(err, LV_ERR_NOMEM, "out of memory");
        goto fail;
    }
    /* SmolVLM presets without --tokenizer: the synthetic vocabulary */
    if (!tokenizer_json && p->synth_added > 0) {
        s->synthetic = true;
        if (!(s->tokenizer_json = strdup(QS_SYNTHETIC_TOKENIZER))) {
            st = lv_fail(err, LV_ERR_NOMEM, "out of memory");
            goto fail;
        }
    }
    if ((st = list_from_config(s, &s->config, err)) != LV_OK) goto fail;
    *out = s;
    return LV_OK;
fail:
    qsource_close(s);
    return st;
}

/* ---- accessors --------------------------------------------------------- */

const lv_model_config *qsource_config(const qsource *s) {
    return &s->config;
}
const char *qsource_dir(const qsource *s) {
    return s->has_md ? s->md.dir : NULL;
}
const char *qsource_config_json(const qsource *s) {
    return s->config_text;
}
const char *qsource_preproc_json(const qsource *s) {
    return s->preset ? s->preset->preproc_json : NULL;
}
const char *qsource_tokenizer_json(const qsource *s) {
    return s->tokenizer_json;
}
const qs_preset *qsource_preset(const qsource *s) {
    return s->preset;
}
const char *qsource_chat_template(const qsource *s) {
    return s->preset ? s->preset->chat_template : NULL;
}
size_t qsource_count(const qsource *s) {
    return s->n;
}
const qs_tensor *qsource_at(const qsource *s, size_t i) {
    return i < s->n ? &s->tensors[i] : NULL;
}
long qsource_find(const qsource *s, const char *name) {
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->tensors[i].name, name) == 0) return (long)i;
    return -1;
}

/* ---- the tokenizer ------------------------------------------------------ */

#define TOKENIZER_MAX_BYTES (64u << 20)

/* 1 + the largest id of model.vocab and added_tokens. */
static json_int_t vocab_end(json_t *root) {
    json_int_t top = -1;
    const char *key;
    json_t *v, *a;
    size_t i;
    json_object_foreach(json_object_get(json_object_get(root, "model"), "vocab"), key, v) {
        if (json_integer_value(v) > top) top = json_integer_value(v);
    }
    json_array_foreach(json_object_get(root, "added_tokens"), i, a) {
        json_int_t id = json_integer_value(json_object_get(a, "id"));
        if (id > top) top = id;
    }
    return top + 1;
}

/* An added_tokens entry as tokenizers writes a special token. */
static json_t *added_token(json_int_t id, const char *content) {
    return json_pack("{s:I, s:s, s:b, s:b, s:b, s:b, s:b}", "id", id, "content", content,
                     "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1);
}

lv_status qsource_tokenizer_read(const qsource *s, char **text, size_t *len, lv_err *err) {
    *text = NULL;
    *len = 0;
    if (!s->tokenizer_json) return LV_OK;
    if (s->synthetic) return synth_tokenizer_json(s->preset->synth_added, text, len, err);
    lv_status st = lv_read_file(s->tokenizer_json, TOKENIZER_MAX_BYTES, text, len, err);
    if (st != LV_OK || !s->preset) return st;
    /* A random source: the vocabulary as llava-hf ships it (qsource_open_random). */
    json_error_t je;
    json_t *root = json_loadb_whole(*text, *len, 0, &je);
    if (!root || !json_is_array(json_object_get(root, "added_tokens"))) {
        json_decref(root);
        free(*text);
        *text = NULL;
        return lv_fail(err, LV_ERR_FORMAT, "%s: not a tokenizer.json (%s)", s->tokenizer_json,
                       root ? "no added_tokens" : je.text);
    }
    /* Right after the vocabulary (32000 for every Mistral/Llama preset), or
     * past it: llava-v1.6-34b's <image> is 64000, after Yi's 64000 ids. The
     * borrowed 32000-id vocabulary is filled up to it with "<unused_N>"
     * pieces no merge makes (never produced by encoding), since tokenizers
     * gives an added token the next free id, not the one written beside it. */
    json_int_t image = s->config.image_token_id;
    json_int_t end = vocab_end(root);
    json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
    if (end <= image && image + 1 < s->config.text.vocab_size && json_is_object(vocab)) {
        for (json_int_t id = end; id < image; id++) {
            char piece[32];
            snprintf(piece, sizeof piece, "<unused_%lld>", (long long)id);
            json_object_set_new(vocab, piece, json_integer(id));
        }
        json_t *added = json_object_get(root, "added_tokens");
        json_array_append_new(added, added_token(image, "<image>"));
        json_array_append_new(added, added_token(image + 1, "<pad>"));
        char *patched = json_dumps_whole(root, JSON_COMPACT);
        if (!patched) {
            json_decref(root);
            free(*text);
            *text = NULL;
            return lv_fail(err, LV_ERR_NOMEM, "%s: out of memory", s->tokenizer_json);
        }
        free(*text);
        *text = patched;
        *len = strlen(patched);
    }
    json_decref(root);
    return LV_OK;
}

/* ---- values ------------------------------------------------------------ */

static uint64_t mix64(uint64_t z) { /* splitmix64's finaliser */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t name_hash(const char *s) { /* FNV-1a */
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

static bool is_norm(const char *name) {
    return strstr(name, "norm") || strstr(name, "layrnorm") || strstr(name, "layer_norm");
}

static void fill_random(const qsource *s, const qs_tensor *t, float *out) {
    if (t->n_dims == 1 && is_norm(t->name)) {
        float v = ends_with(t->name, ".weight") ? 1.0f : 0.0f;
        for (int64_t j = 0; j < t->n_elems; j++) out[j] = v;
        return;
    }
    /* Sum of four U(0..65535): mean 131070, std 65536/sqrt(3). */
    const float scale = RAND_STD * 1.7320508f / 65536.0f;
    uint64_t tseed = mix64(s->seed ^ name_hash(t->name));
    for (int64_t c = 0; c * RAND_CHUNK < t->n_elems; c++) {
        uint64_t x = mix64(tseed + (uint64_t)c * 0x9e3779b97f4a7c15ull);
        int64_t end = (c + 1) * RAND_CHUNK < t->n_elems ? (c + 1) * RAND_CHUNK : t->n_elems;
        for (int64_t j = c * RAND_CHUNK; j < end; j++) {
            x += 0x9e3779b97f4a7c15ull;
            uint64_t r = mix64(x);
            int32_t sum = (int32_t)(r & 0xffff) + (int32_t)((r >> 16) & 0xffff) +
                          (int32_t)((r >> 32) & 0xffff) + (int32_t)(r >> 48);
            out[j] = (float)(sum - 131070) * scale;
        }
    }
}

lv_status qsource_read(const qsource *s, size_t i, float *out, lv_err *err) {
    if (i >= s->n) return lv_fail(err, LV_ERR_ARG, "tensor index %zu out of range (%zu)", i, s->n);
    const qs_tensor *t = &s->tensors[i];
    if (!s->has_md) {
        fill_random(s, t, out);
        return LV_OK;
    }
    const st_tensor *w = s->st[i];
    const uint8_t *p = w->data;
    switch (w->dtype) {
        case LV_DTYPE_F32:
            memcpy(out, p, (size_t)w->n_elems * 4);
            break;
        case LV_DTYPE_F16:
        case LV_DTYPE_BF16:
            for (int64_t j = 0; j < w->n_elems; j++) {
                uint16_t h = (uint16_t)(p[2 * j] | (p[2 * j + 1] << 8));
                out[j] = w->dtype == LV_DTYPE_F16 ? lv_f16_to_f32(h) : lv_bf16_to_f32(h);
            }
            break;
        default:
            return lv_fail(err, LV_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s, not a float",
                           w->file_name, w->name, dtype_name(w->dtype));
    }
    return LV_OK;
}

void qsource_close(qsource *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) free((char *)s->tensors[i].name);
    free(s->tensors);
    free(s->st);
    if (s->has_md) mdir_close(&s->md);
    free(s->config_json);
    free(s->tokenizer_json);
    free(s);
}
