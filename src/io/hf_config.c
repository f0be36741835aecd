/*
 * hf_config.c - Hugging Face config files (see hf_config.h).
 *
 * FORMAT. config.json of a LLaVA checkpoint (llava-hf/llava-v1.6-mistral-7b-hf):
 *
 *   { "model_type": "llava_next",            LlavaNextConfig | LlavaConfig ("llava")
 *     "image_token_index": 32000,            5.x may write "image_token_id"
 *     "image_grid_pinpoints": [[336,672],..] (height, width) each
 *     "projector_hidden_act": "gelu",
 *     "vision_feature_layer": -2,            or a list of layers
 *     "vision_feature_select_strategy": "default",
 *     "text_config":   { "model_type": "mistral", "intermediate_size": 14336,
 *                        "rope_theta": 1e6, "rms_norm_eps": 1e-5,
 *                        "sliding_window": null, "vocab_size": 32064, ... },
 *     "vision_config": { "model_type": "clip_vision_model", "hidden_size": 1024, ... },
 *     ... }
 *
 * DEFAULTS. transformers builds the sub-configs with the omitted keys taking
 * the class defaults, and so do we:
 *   - text_config absent/null -> LlamaConfig(); a dict without model_type is
 *     a "llama" dict (LlavaNextConfig.__init__, LlavaConfig.__init__:
 *     models/llava_next/configuration_llava_next.py,
 *     models/llava/configuration_llava.py);
 *   - vision_config absent/null -> CLIPVisionConfig(hidden 1024, intermediate
 *     4096, patch 14, image 336, 24 layers, 16 heads, projection_dim 768)
 *     and CLIPVisionConfig defaults for the rest; a dict -> CLIPVisionConfig
 *     defaults (768/3072/12/12/224/32, quick_gelu, 1e-5, projection 512) for
 *     what it omits (models/clip/configuration_clip.py);
 *   - MistralConfig (models/mistral/configuration_mistral.py): vocab 32000,
 *     hidden 4096, intermediate 14336, 32 layers, 32 heads,
 *     num_key_value_heads 8 (an explicit null means = heads), head_dim null
 *     -> hidden/heads, silu, max_position_embeddings 4096*32, rms_norm_eps
 *     1e-6, bos 1, eos 2, pad none, untied, sliding_window 4096 (an explicit
 *     null means none, which llava-v1.6-mistral uses);
 *   - LlamaConfig (models/llama/configuration_llama.py): vocab 32000, hidden
 *     4096, intermediate 11008, 32 layers, 32 heads, num_key_value_heads null
 *     -> heads, silu, max_position_embeddings 2048, rms_norm_eps 1e-6, bos 1,
 *     eos 2, untied, attention_bias and mlp_bias false; no sliding window;
 *   - RoPE (modeling_rope_utils.py, RotaryEmbeddingConfigMixin
 *     .convert_rope_params_to_dict): the parameters are "rope_scaling" if it
 *     is set, else "rope_parameters" (the 5.x key); rope_theta is theirs if
 *     they have one, else the top-level "rope_theta", else 10000. A rope_type
 *     (or legacy "type") other than "default" is LV_ERR_UNSUPPORTED;
 *   - LlavaNextConfig/LlavaConfig top level: image_token_index 32000,
 *     projector_hidden_act "gelu", vision_feature_select_strategy "default",
 *     vision_feature_layer -2, image_seq_length 576,
 *     multimodal_projector_bias true, tie_word_embeddings false; llava_next
 *     image_grid_pinpoints [[336,672],[672,336],[672,672],[1008,336],[336,1008]].
 * A JSON null is treated as "absent" (HF passes None, and the class picks its
 * default), except where noted above.
 *
 * preprocessor_config.json defaults: LlavaNextImageProcessor
 * (models/llava_next/image_processing_llava_next.py), CLIPImageProcessor
 * (models/clip/image_processing_clip.py), LlavaImageProcessor
 * (models/llava/image_processing_llava.py): size {shortest_edge: 224},
 * crop_size 224x224, resample bicubic (3), rescale 1/255, OpenAI CLIP
 * mean/std, every do_* true except do_pad (true only for LlavaNext).
 * Idefics3ImageProcessor / SmolVLMImageProcessor (huggingface/transformers
 * src/transformers/models/smolvlm/image_processing_pil_smolvlm.py and
 * models/idefics3/image_processing_pil_idefics3.py, class attributes; the v4
 * slow image_processing_idefics3.py / image_processing_smolvlm.py __init__
 * has the same): resample LANCZOS (1), IMAGENET_STANDARD mean/std 0.5, size
 * {longest_edge: 4 * 364}, max_image_size {longest_edge: 364}, do_resize,
 * do_rescale (1/255), do_normalize, do_convert_rgb, do_image_splitting and
 * do_pad true; no centre crop.
 * generation_config.json defaults: transformers
 * generation/configuration_utils.py GenerationConfig. tokenizer_config.json
 * defaults: models/llama/tokenization_llama.py (add_bos_token true,
 * add_eos_token false, legacy true).
 */
#include "hf_config.h"

#include "base/file.h"
#include "io/json_type.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_MAX_BYTES    (16u * 1024u * 1024u)
#define TOKCONFIG_MAX_BYTES (64u * 1024u * 1024u) /* added_tokens_decoder can be large */

static const double clip_mean[3] = {0.48145466, 0.4578275, 0.40821073}; /* OPENAI_CLIP_MEAN */
static const double clip_std[3] = {0.26862954, 0.26130258, 0.27577711}; /* OPENAI_CLIP_STD */
static const int llava_next_pinpoints[5][2] = {
    {336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}};

/* ---- typed access to JSON with messages that name the key --------------
 *
 * The json_type.h getters, bound to a key of an object. Every getter leaves *out untouched when the
 * key is absent or null, so the caller sets the default first and reads the key over it. A present
 * value of the wrong type or outside its range is LV_ERR_FORMAT: "config.json:
 * text_config.num_attention_heads: expected an integer in [1, 1024], got -1"
 */

typedef struct {
    const char *file;    /* for messages: the path */
    const char *section; /* "" or "text_config." */
    lv_err *err;
} jctx;

/* A miss from a json_type.h getter, prefixed with where it happened:
 * "config.json: text_config.hidden_size: expected ..., got ...". */
static lv_status at(jctx *c, const char *key, lv_status st) {
    if (st) lv_err_prefix(c->err, "%s: %s%s", c->file, c->section, key);
    return st;
}

static lv_status bad(jctx *c, const char *key, const char *expected, const json_t *v) {
    return at(c, key, json_expected(c->err, expected, v));
}

static lv_status int_value(jctx *c, const char *key, const json_t *v, int64_t lo, int64_t hi,
                           int *out) {
    int64_t x;
    lv_status st = at(c, key, json_get_int(v, lo, hi, &x, c->err));
    if (!st) *out = (int)x;
    return st;
}

static lv_status jint(jctx *c, const json_t *obj, const char *key, int64_t lo, int64_t hi,
                      int *out) {
    const json_t *v = json_member(obj, key);
    return v ? int_value(c, key, v, lo, hi, out) : LV_OK;
}

/* A number > 0 (and finite). */
static lv_status jpos(jctx *c, const json_t *obj, const char *key, double *out) {
    const json_t *v = json_member(obj, key);
    if (!v) return LV_OK;
    if (!json_is_number(v) || !(json_number_value(v) > 0) || !isfinite(json_number_value(v)))
        return bad(c, key, "a positive number", v);
    *out = json_number_value(v);
    return LV_OK;
}

/* A number in [lo, hi]. */
static lv_status jrange(jctx *c, const json_t *obj, const char *key, double lo, double hi,
                        double *out) {
    const json_t *v = json_member(obj, key);
    return v ? at(c, key, json_get_number(v, lo, hi, out, c->err)) : LV_OK;
}

static lv_status jbool(jctx *c, const json_t *obj, const char *key, bool *out) {
    const json_t *v = json_member(obj, key);
    return v ? at(c, key, json_get_bool(v, out, c->err)) : LV_OK;
}

/* Like jbool, also recording presence. */
static lv_status jbool_has(jctx *c, const json_t *obj, const char *key, bool *has, bool *out) {
    *has = json_member(obj, key) != NULL;
    return jbool(c, obj, key, out);
}

static lv_status jstr(jctx *c, const json_t *obj, const char *key, char *out, size_t cap) {
    const json_t *v = json_member(obj, key);
    const char *str;
    if (!v) return LV_OK;
    lv_status st = at(c, key, json_get_string(v, &str, c->err));
    if (st) return st;
    if (json_string_length(v) >= cap)
        return lv_fail(c->err, LV_ERR_FORMAT, "%s: %s%s: \"%.40s...\" is longer than %zu bytes",
                       c->file, c->section, key, str, cap - 1);
    memcpy(out, str, json_string_length(v) + 1);
    return LV_OK;
}

/* An int or a list of ints (eos_token_id, vision_feature_layer). */
static lv_status jint_list(jctx *c, const json_t *obj, const char *key, int64_t lo, int64_t hi,
                           int max_n, int *n, int *out) {
    const json_t *v = json_member(obj, key);
    if (!v) return LV_OK;
    if (!json_is_array(v)) {
        if ((int_value(c, key, v, lo, hi, &out[0])) != LV_OK) return LV_ERR_FORMAT;
        *n = 1;
        return LV_OK;
    }
    size_t len = json_array_size(v);
    if (len == 0 || len > (size_t)max_n) {
        char expected[80];
        snprintf(expected, sizeof expected, "an integer or a list of 1 to %d integers", max_n);
        return bad(c, key, expected, v);
    }
    for (size_t i = 0; i < len; i++) {
        char sub[96];
        snprintf(sub, sizeof sub, "%s[%zu]", key, i);
        if (int_value(c, sub, json_array_get(v, i), lo, hi, &out[i]) != LV_OK) return LV_ERR_FORMAT;
    }
    *n = (int)len;
    return LV_OK;
}

/* image_grid_pinpoints: a list of [height, width]. */
static lv_status jpinpoints(jctx *c, const json_t *obj, const char *key, int *n, int (*out)[2]) {
    const json_t *v = json_member(obj, key);
    if (!v) return LV_OK;
    if (!json_is_array(v) || json_array_size(v) == 0)
        return bad(c, key, "a non-empty list of [height, width] pairs", v);
    if (json_array_size(v) > HF_MAX_PINPOINTS)
        return lv_fail(c->err, LV_ERR_UNSUPPORTED, "%s: %s%s: %zu entries; at most %d supported",
                       c->file, c->section, key, json_array_size(v), HF_MAX_PINPOINTS);
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *p = json_array_get(v, i);
        char sub[96];
        snprintf(sub, sizeof sub, "%s[%zu]", key, i);
        if (!json_is_array(p) || json_array_size(p) != 2)
            return bad(c, sub, "a [height, width] pair", p);
        for (int k = 0; k < 2; k++)
            if (int_value(c, sub, json_array_get(p, k), 1, 1 << 16, &out[i][k]) != LV_OK)
                return LV_ERR_FORMAT;
    }
    *n = (int)json_array_size(v);
    return LV_OK;
}

/* Parses text (len bytes) into *root; a message names the file on failure. */
static lv_status load_json(const char *text, size_t len, const char *name, size_t flags,
                           json_t **root, lv_err *err) {
    json_error_t jerr;
    *root = json_loadb_whole(text, len, flags | JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!*root)
        return lv_fail(err, LV_ERR_FORMAT, "%s: invalid JSON: %s (line %d, column %d)", name,
                       jerr.text, jerr.line, jerr.column);
    if (!json_is_object(*root)) {
        json_decref(*root);
        *root = NULL;
        return lv_fail(err, LV_ERR_FORMAT, "%s: expected a JSON object at the top level", name);
    }
    return LV_OK;
}

/* ---- text_config ------------------------------------------------------ */

static void text_defaults(lv_text_config *t, bool mistral) {
    memset(t, 0, sizeof *t);
    snprintf(t->model_type, sizeof t->model_type, "%s", mistral ? "mistral" : "llama");
    t->vocab_size = 32000;
    t->dim = 4096;
    t->hidden_dim = mistral ? 14336 : 11008;
    t->n_layers = 32;
    t->n_heads = 32;
    t->n_kv_heads = mistral ? 8 : 0; /* llama: 0 = "same as n_heads", resolved later */
    t->head_dim = 0;                 /* 0 = dim / n_heads, resolved later */
    t->max_pos = mistral ? 4096 * 32 : 2048;
    t->rms_eps = 1e-6;
    t->rope_theta = 10000.0;
    t->sliding_window = mistral ? 4096 : 0;
    snprintf(t->hidden_act, sizeof t->hidden_act, "silu");
    t->bos_id = 1;
    t->pad_id = -1;
    t->n_eos = 1;
    t->eos_ids[0] = 2;
}

/* rope_scaling / rope_parameters / rope_theta (see DEFAULTS above). */
static lv_status parse_rope(jctx *c, const json_t *tc, lv_text_config *t) {
    const json_t *params = json_member(tc, "rope_scaling");
    const char *pkey = "rope_scaling";
    if (!params) {
        params = json_member(tc, "rope_parameters");
        pkey = "rope_parameters";
    }
    if (params && !json_is_object(params)) return bad(c, pkey, "an object", params);
    lv_status st = jpos(c, tc, "rope_theta", &t->rope_theta);
    if (st != LV_OK || !params) return st;
    const json_t *type = json_member(params, "rope_type");
    if (!type) type = json_member(params, "type");
    if (type && !json_is_string(type)) return bad(c, pkey, "a string rope_type", type);
    if (type && strcmp(json_string_value(type), "default") != 0)
        return lv_fail(c->err, LV_ERR_UNSUPPORTED,
                       "%s: %s%s: rope type \"%s\" is not supported (only plain RoPE, \"default\")",
                       c->file, c->section, pkey, json_string_value(type));
    if (!type && !json_member(params, "rope_theta"))
        return lv_fail(c->err, LV_ERR_UNSUPPORTED,
                       "%s: %s%s: per-layer-type or untyped rope parameters are not supported",
                       c->file, c->section, pkey);
    jctx sub = *c;
    char section[64];
    snprintf(section, sizeof section, "%s%s.", c->section, pkey);
    sub.section = section;
    return jpos(&sub, params, "rope_theta", &t->rope_theta);
}

static lv_status parse_text(const char *file, const json_t *tc, bool idefics3, lv_text_config *t,
                            lv_err *err) {
    jctx c = {file, "text_config.", err};
    char type[HF_NAME_LEN] = "llama";
    lv_status st;
    jctx top = {file, "", err};
    if (tc && !json_is_object(tc)) return bad(&top, "text_config", "an object", tc);
    if ((st = jstr(&c, tc, "model_type", type, sizeof type)) != LV_OK) return st;
    bool mistral = strcmp(type, "mistral") == 0;
    if (!mistral && strcmp(type, "llama") != 0)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "%s: text_config.model_type \"%s\" is not supported (expected \"mistral\" "
                       "or \"llama\")",
                       file, type);
    text_defaults(t, mistral);
    /* Idefics3Config / SmolVLMConfig: no text_config is LlamaConfig(rms_norm_eps
     * 1e-5, pad_token_id = the top level's, untied); the pad id is set by the caller. */
    if (idefics3 && !tc) t->rms_eps = 1e-5;
    if ((st = jint(&c, tc, "vocab_size", 1, 1 << 24, &t->vocab_size)) ||
        (st = jint(&c, tc, "hidden_size", 1, 1 << 16, &t->dim)) ||
        (st = jint(&c, tc, "intermediate_size", 1, 1 << 18, &t->hidden_dim)) ||
        (st = jint(&c, tc, "num_hidden_layers", 1, 1024, &t->n_layers)) ||
        (st = jint(&c, tc, "num_attention_heads", 1, 1024, &t->n_heads)) ||
        (st = jint(&c, tc, "num_key_value_heads", 1, 1024, &t->n_kv_heads)) ||
        (st = jint(&c, tc, "head_dim", 1, 4096, &t->head_dim)) ||
        (st = jint(&c, tc, "max_position_embeddings", 1, INT32_MAX, &t->max_pos)) ||
        (st = jpos(&c, tc, "rms_norm_eps", &t->rms_eps)) ||
        (st = jstr(&c, tc, "hidden_act", t->hidden_act, sizeof t->hidden_act)) ||
        (st = jbool(&c, tc, "tie_word_embeddings", &t->tie_word_embeddings)) ||
        (st = jint(&c, tc, "bos_token_id", 0, INT32_MAX, &t->bos_id)) ||
        (st = jint(&c, tc, "pad_token_id", 0, INT32_MAX, &t->pad_id)) ||
        (st = jint_list(&c, tc, "eos_token_id", 0, INT32_MAX, HF_MAX_EOS, &t->n_eos, t->eos_ids)) ||
        (st = parse_rope(&c, tc, t)))
        return st;
    /* Explicit nulls that mean something other than the default. */
    const json_t *v;
    if (tc && json_is_null(json_object_get(tc, "bos_token_id"))) t->bos_id = -1;
    if (tc && json_is_null(json_object_get(tc, "eos_token_id"))) t->n_eos = 0;
    if (tc && json_is_null(json_object_get(tc, "num_key_value_heads"))) t->n_kv_heads = 0;
    if (mistral) {
        /* MistralConfig: absent -> 4096, null -> no window. */
        v = tc ? json_object_get(tc, "sliding_window") : NULL;
        if (json_is_null(v))
            t->sliding_window = 0;
        else if ((st = jint(&c, tc, "sliding_window", 1, INT32_MAX, &t->sliding_window)))
            return st;
    } else {
        /* Only LlamaConfig has these; MistralModel's projections never have biases. */
        if ((st = jbool(&c, tc, "attention_bias", &t->attention_bias)) ||
            (st = jbool(&c, tc, "mlp_bias", &t->mlp_bias)))
            return st;
    }
    if (t->n_kv_heads == 0) t->n_kv_heads = t->n_heads;
    if (t->dim % t->n_heads != 0)
        return lv_fail(
            err, LV_ERR_FORMAT,
            "%s: text_config: hidden_size %d is not a multiple of num_attention_heads %d", file,
            t->dim, t->n_heads);
    if (t->head_dim == 0) t->head_dim = t->dim / t->n_heads;
    if (t->n_heads % t->n_kv_heads != 0)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: text_config: num_attention_heads %d is not a multiple of "
                       "num_key_value_heads %d",
                       file, t->n_heads, t->n_kv_heads);
    return LV_OK;
}

/* ---- vision_config ---------------------------------------------------- */

/* The SigLIP tower's class defaults (Idefics3VisionConfig and
 * SmolVLMVisionConfig agree: models/idefics3/configuration_idefics3.py,
 * models/smolvlm/configuration_smolvlm.py): hidden 1152, intermediate 3072,
 * 12 layers, 16 heads, image 224, patch 32, gelu_pytorch_tanh, eps 1e-6. */
static void siglip_defaults(lv_vision_config *v, const char *model_type) {
    snprintf(v->model_type, sizeof v->model_type, "%s", model_type);
    v->dim = 1152;
    v->hidden_dim = 3072;
    v->n_layers = 12;
    v->n_heads = 16;
    v->image_size = 224;
    v->patch_size = 32;
    v->projection_dim = 0;
    v->n_channels = 3;
    v->ln_eps = 1e-6;
    snprintf(v->hidden_act, sizeof v->hidden_act, "gelu_pytorch_tanh");
}

/* family: the top-level model_type, which decides the class a vision_config
 * dict (or its absence) becomes: CLIPVisionConfig for the LLaVA classes,
 * the family's SigLIP config for idefics3 / smolvlm. */
static lv_status parse_vision(const char *file, const json_t *vc, const char *family,
                              lv_vision_config *v, lv_err *err) {
    jctx c = {file, "vision_config.", err};
    lv_status st;
    jctx top = {file, "", err};
    if (vc && !json_is_object(vc)) return bad(&top, "vision_config", "an object", vc);
    memset(v, 0, sizeof *v);
    bool siglip = strcmp(family, "idefics3") == 0 || strcmp(family, "smolvlm") == 0;
    const char *want = !siglip                           ? "clip_vision_model"
                       : strcmp(family, "idefics3") == 0 ? "idefics3_vision"
                                                         : "smolvlm_vision";
    snprintf(v->model_type, sizeof v->model_type, "%s", want);
    if ((st = jstr(&c, vc, "model_type", v->model_type, sizeof v->model_type))) return st;
    /* Idefics3Config / SmolVLMConfig build their vision config from the dict
     * whatever its model_type says (SmolVLMVisionConfig(**vision_config)). */
    if (!siglip && strcmp(v->model_type, want) != 0)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "%s: vision_config.model_type \"%s\" is not supported for a %s model "
                       "(expected \"%s\")",
                       file, v->model_type, family, want);
    /* CLIPVisionConfig defaults, or the CLIP-L/336 values the LLaVA classes
     * pass when vision_config is absent. */
    bool clip_l = vc == NULL;
    v->dim = clip_l ? 1024 : 768;
    v->hidden_dim = clip_l ? 4096 : 3072;
    v->n_layers = clip_l ? 24 : 12;
    v->n_heads = clip_l ? 16 : 12;
    v->image_size = clip_l ? 336 : 224;
    v->patch_size = clip_l ? 14 : 32;
    v->projection_dim = clip_l ? 768 : 512;
    v->n_channels = 3;
    v->ln_eps = 1e-5;
    snprintf(v->hidden_act, sizeof v->hidden_act, "quick_gelu");
    if (siglip) siglip_defaults(v, want);
    if ((st = jint(&c, vc, "hidden_size", 1, 1 << 16, &v->dim)) ||
        (st = jint(&c, vc, "intermediate_size", 1, 1 << 18, &v->hidden_dim)) ||
        (st = jint(&c, vc, "num_hidden_layers", 1, 1024, &v->n_layers)) ||
        (st = jint(&c, vc, "num_attention_heads", 1, 1024, &v->n_heads)) ||
        (st = jint(&c, vc, "image_size", 1, 1 << 14, &v->image_size)) ||
        (st = jint(&c, vc, "patch_size", 1, 1 << 10, &v->patch_size)) ||
        (st = jint(&c, vc, "num_channels", 1, 16, &v->n_channels)) ||
        (st = jint(&c, vc, "projection_dim", 1, 1 << 16, &v->projection_dim)) ||
        (st = jpos(&c, vc, "layer_norm_eps", &v->ln_eps)) ||
        (st = jstr(&c, vc, "hidden_act", v->hidden_act, sizeof v->hidden_act)))
        return st;
    if (v->dim % v->n_heads != 0)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: vision_config: hidden_size %d is not a multiple of "
                       "num_attention_heads %d",
                       file, v->dim, v->n_heads);
    v->head_dim = v->dim / v->n_heads;
    if (siglip && v->image_size < v->patch_size)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: vision_config: image_size %d is smaller than patch_size %d", file,
                       v->image_size, v->patch_size);
    if (!siglip && v->image_size % v->patch_size != 0)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: vision_config: image_size %d is not a multiple of patch_size %d", file,
                       v->image_size, v->patch_size);
    return LV_OK;
}

/* ---- quantization / quantization_config -------------------------------- */

/*
 * MLX writes {"group_size": 64, "bits": 4} (2024) or that plus "mode":
 * "affine" (current mlx-vlm, under both "quantization" and a duplicate
 * "quantization_config"). Any other key whose value is an object (its own
 * group_size/bits) or `false` is a per-module override. The two blocks, when
 * both present, must agree on the global values; "quantization" wins for
 * overrides. A "quantization_config" without group_size/bits (a transformers
 * bitsandbytes/GPTQ block) is not MLX: refused as unsupported.
 */

static bool quant_bits_ok(int bits) {
    return bits == 2 || bits == 3 || bits == 4 || bits == 5 || bits == 6 || bits == 8;
}

static lv_status quant_values(jctx *c, const json_t *obj, const char *mode, int *bits, int *group) {
    lv_status st;
    if ((st = jint(c, obj, "bits", 1, 16, bits)) ||
        (st = jint(c, obj, "group_size", 1, 1 << 16, group)))
        return st;
    if (strcmp(mode, "affine") != 0) return LV_OK; /* other modes are refused at load */
    if (!quant_bits_ok(*bits))
        return lv_fail(c->err, LV_ERR_FORMAT, "%s: %sbits: %d is not one of 2, 3, 4, 5, 6, 8",
                       c->file, c->section, *bits);
    if (*group != 32 && *group != 64 && *group != 128)
        return lv_fail(c->err, LV_ERR_FORMAT, "%s: %sgroup_size: %d is not one of 32, 64, 128",
                       c->file, c->section, *group);
    return LV_OK;
}

static lv_status parse_quant_block(const char *file, const char *name, const json_t *blk,
                                   lv_quant_config *q, lv_err *err) {
    char section[64];
    snprintf(section, sizeof section, "%s.", name);
    jctx c = {file, section, err};
    if (!json_is_object(blk)) {
        jctx top = {file, "", err};
        return bad(&top, name, "an object", blk);
    }
    if (!json_member(blk, "bits") && !json_member(blk, "group_size") && !json_member(blk, "mode"))
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "%s: %s has no group_size/bits: not an MLX affine quantization block "
                       "(only MLX affine checkpoints are supported)",
                       file, name);
    lv_status st;
    char mode[HF_NAME_LEN] = "affine";
    int bits = 4, group = 64;
    if ((st = jstr(&c, blk, "mode", mode, sizeof mode)) ||
        (st = quant_values(&c, blk, mode, &bits, &group)))
        return st;
    if (q->present) { /* the second of the two blocks: must agree */
        if (strcmp(mode, q->mode) != 0 || bits != q->bits || group != q->group_size)
            return lv_fail(err, LV_ERR_FORMAT,
                           "%s: \"quantization\" (%s, bits %d, group %d) and \"%s\" (%s, bits "
                           "%d, group %d) disagree",
                           file, q->mode, q->bits, q->group_size, name, mode, bits, group);
        return LV_OK;
    }
    q->present = true;
    snprintf(q->mode, sizeof q->mode, "%s", mode);
    q->bits = bits;
    q->group_size = group;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)blk, key, v) {
        if (!json_is_object(v) && !json_is_false(v)) continue; /* bits, mode, ... */
        if (q->n_overrides == HF_MAX_QUANT_OVERRIDES)
            return lv_fail(err, LV_ERR_UNSUPPORTED, "%s: %s: more than %d per-module overrides",
                           file, name, HF_MAX_QUANT_OVERRIDES);
        if (strlen(key) >= HF_QUANT_PATH_LEN)
            return lv_fail(err, LV_ERR_UNSUPPORTED,
                           "%s: %s: module path \"%.60s...\" is "
                           "longer than %d bytes",
                           file, name, key, HF_QUANT_PATH_LEN - 1);
        lv_quant_override *o = &q->overrides[q->n_overrides++];
        snprintf(o->path, sizeof o->path, "%s", key);
        o->quantized = json_is_object(v);
        int ob = bits, og = group;
        if (o->quantized) {
            char sub[HF_QUANT_PATH_LEN + 80];
            snprintf(sub, sizeof sub, "%s.%s.", name, key);
            jctx oc = {file, sub, err};
            if ((st = quant_values(&oc, v, mode, &ob, &og))) return st;
        }
        o->bits = (int16_t)ob;
        o->group_size = (int16_t)og;
    }
    return LV_OK;
}

static lv_status parse_quant(const char *file, const json_t *root, lv_quant_config *q,
                             lv_err *err) {
    memset(q, 0, sizeof *q);
    snprintf(q->mode, sizeof q->mode, "affine");
    q->bits = 4;
    q->group_size = 64;
    const char *names[2] = {"quantization", "quantization_config"};
    for (int i = 0; i < 2; i++) {
        const json_t *blk = json_member(root, names[i]);
        if (!blk) continue;
        lv_status st = parse_quant_block(file, names[i], blk, q, err);
        if (st) return st;
    }
    return LV_OK;
}

const lv_quant_override *hf_quant_override(const lv_quant_config *q, const char *path) {
    static const char prefix[] = "language_model.";
    const char *alias =
        strncmp(path, prefix, sizeof prefix - 1) == 0 ? path + sizeof prefix - 1 : NULL;
    for (int i = 0; i < q->n_overrides; i++)
        if (strcmp(q->overrides[i].path, path) == 0) return &q->overrides[i];
    for (int i = 0; alias && i < q->n_overrides; i++)
        if (strcmp(q->overrides[i].path, alias) == 0) return &q->overrides[i];
    return NULL;
}

/* ---- config.json ------------------------------------------------------ */

bool hf_is_idefics3(const lv_model_config *cfg) {
    return strcmp(cfg->model_type, "idefics3") == 0 || strcmp(cfg->model_type, "smolvlm") == 0;
}

/*
 * Idefics3Config ("idefics3", SmolVLM v1) and SmolVLMConfig ("smolvlm",
 * SmolVLM2): models/idefics3/configuration_idefics3.py,
 * models/smolvlm/configuration_smolvlm.py. Top-level defaults:
 * image_token_id 128257, scale_factor 2, pad_token_id 128002,
 * tie_word_embeddings false; a text_config dict without model_type is
 * "llama". The connector is a pixel shuffle by scale_factor and one linear
 * without bias (no activation, no projector keys); every frame gives
 * (image_size / patch)² / scale² rows. Keys such as "perceiver_config" or
 * "use_resampler" in text_config are ignored by LlamaConfig, and so here.
 */
static lv_status parse_idefics3(const char *file, const json_t *root, lv_model_config *m,
                                lv_err *err) {
    jctx c = {file, "", err};
    lv_status st;
    const json_t *tc = json_member(root, "text_config");
    if ((st = parse_text(file, tc, true, &m->text, err)) ||
        (st = parse_vision(file, json_member(root, "vision_config"), m->model_type, &m->vision,
                           err)))
        return st;
    m->image_token_id = 128257;
    m->pad_token_id = 128002;
    m->scale_factor = 2;
    snprintf(m->projector_hidden_act, sizeof m->projector_hidden_act, "none");
    m->projector_bias = false;
    m->n_feature_layers = 1;
    m->feature_layers[0] = -1; /* the last layer, after post_layernorm */
    snprintf(m->feature_select_strategy, sizeof m->feature_select_strategy, "full");
    bool tie = false;
    if ((st = jint(&c, root, "image_token_id", 0, INT32_MAX, &m->image_token_id)) ||
        (st = jint(&c, root, "pad_token_id", 0, INT32_MAX, &m->pad_token_id)) ||
        (st = jint(&c, root, "scale_factor", 1, 64, &m->scale_factor)) ||
        (st = jbool(&c, root, "tie_word_embeddings", &tie)) ||
        (st = jstr(&c, root, "dtype", m->torch_dtype, sizeof m->torch_dtype)) ||
        (st = jstr(&c, root, "torch_dtype", m->torch_dtype, sizeof m->torch_dtype)) ||
        (st = parse_quant(file, root, &m->quant, err)))
        return st;
    if (!tc) m->text.pad_id = m->pad_token_id;
    if (json_is_null(json_object_get(root, "pad_token_id"))) m->pad_token_id = -1;
    int side = m->vision.image_size / m->vision.patch_size;
    if (side % m->scale_factor != 0)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: scale_factor %d does not divide the %d patches per side "
                       "(vision image_size %d / patch_size %d)",
                       file, m->scale_factor, side, m->vision.image_size, m->vision.patch_size);
    m->image_seq_length = side * side / (m->scale_factor * m->scale_factor);
    m->text.tie_word_embeddings = m->text.tie_word_embeddings || tie;
    return LV_OK;
}

static lv_status parse_top(const char *file, const json_t *root, lv_model_config *m, lv_err *err) {
    jctx c = {file, "", err};
    lv_status st;
    const json_t *mt = json_object_get(root, "model_type");
    if (!json_is_string(mt))
        return lv_fail(err, LV_ERR_FORMAT, "%s: no \"model_type\" string at the top level", file);
    if ((st = jstr(&c, root, "model_type", m->model_type, sizeof m->model_type))) return st;
    bool next = strcmp(m->model_type, "llava_next") == 0;
    if (hf_is_idefics3(m)) return parse_idefics3(file, root, m, err);
    if (!next && strcmp(m->model_type, "llava") != 0)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "%s: model_type \"%s\" is not supported (expected \"llava_next\", "
                       "\"llava\", \"idefics3\" or \"smolvlm\")",
                       file, m->model_type);
    if ((st = parse_text(file, json_member(root, "text_config"), false, &m->text, err)) ||
        (st = parse_vision(file, json_member(root, "vision_config"), m->model_type, &m->vision,
                           err)))
        return st;

    m->image_token_id = 32000;
    m->pad_token_id = -1;
    snprintf(m->projector_hidden_act, sizeof m->projector_hidden_act, "gelu");
    m->projector_bias = true;
    m->n_feature_layers = 1;
    m->feature_layers[0] = -2;
    snprintf(m->feature_select_strategy, sizeof m->feature_select_strategy, "default");
    m->n_pinpoints = 0;
    if (next) {
        m->n_pinpoints = 5;
        memcpy(m->pinpoints, llava_next_pinpoints, sizeof llava_next_pinpoints);
    }
    m->use_image_newline = next;
    m->image_seq_length = 576;
    bool tie = false;
    int n_layers = m->vision.n_layers;
    if ((st = jint(&c, root, "image_token_id", 0, INT32_MAX, &m->image_token_id)) ||
        (st = jint(&c, root, "image_token_index", 0, INT32_MAX, &m->image_token_id)) ||
        (st = jint(&c, root, "pad_token_id", 0, INT32_MAX, &m->pad_token_id)) ||
        (st = jstr(&c, root, "projector_hidden_act", m->projector_hidden_act,
                   sizeof m->projector_hidden_act)) ||
        (st = jbool(&c, root, "multimodal_projector_bias", &m->projector_bias)) ||
        (st = jint_list(&c, root, "vision_feature_layer", -(n_layers + 1), n_layers,
                        HF_MAX_FEATURE_LAYERS, &m->n_feature_layers, m->feature_layers)) ||
        (st = jstr(&c, root, "vision_feature_select_strategy", m->feature_select_strategy,
                   sizeof m->feature_select_strategy)) ||
        (st = jpinpoints(&c, root, "image_grid_pinpoints", &m->n_pinpoints, m->pinpoints)) ||
        (st = jbool(&c, root, "use_image_newline_parameter", &m->use_image_newline)) ||
        (st = jint(&c, root, "image_seq_length", 1, 1 << 20, &m->image_seq_length)) ||
        (st = jbool(&c, root, "tie_word_embeddings", &tie)) ||
        (st = jstr(&c, root, "dtype", m->torch_dtype, sizeof m->torch_dtype)) ||
        (st = jstr(&c, root, "torch_dtype", m->torch_dtype, sizeof m->torch_dtype)) ||
        (st = parse_quant(file, root, &m->quant, err)))
        return st;
    /* Both spellings present: they must agree (image_token_index won above). */
    int alt = m->image_token_id;
    if ((st = jint(&c, root, "image_token_id", 0, INT32_MAX, &alt))) return st;
    if (alt != m->image_token_id)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: image_token_index %d and image_token_id %d disagree", file,
                       m->image_token_id, alt);
    if (strcmp(m->feature_select_strategy, "default") != 0 &&
        strcmp(m->feature_select_strategy, "full") != 0)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: vision_feature_select_strategy \"%s\" must be \"default\" or \"full\"",
                       file, m->feature_select_strategy);
    if (next && m->n_pinpoints == 0)
        return lv_fail(err, LV_ERR_FORMAT, "%s: llava_next needs image_grid_pinpoints", file);
    /* LlavaConfig forwards a tied text config to the top level; either tying
     * means lm_head is embed_tokens. */
    m->text.tie_word_embeddings = m->text.tie_word_embeddings || tie;
    return LV_OK;
}

lv_status hf_config_parse(const char *json, size_t len, const char *name, lv_model_config *cfg,
                          lv_err *err) {
    memset(cfg, 0, sizeof *cfg);
    json_t *root;
    lv_status st = load_json(json, len, name, 0, &root, err);
    if (st != LV_OK) return st;
    st = parse_top(name, root, cfg, err);
    json_decref(root);
    return st;
}

lv_status hf_config_load(const char *path, lv_model_config *cfg, lv_err *err) {
    char *text;
    size_t len;
    lv_status st = lv_read_file(path, CONFIG_MAX_BYTES, &text, &len, err);
    if (st != LV_OK) return st;
    st = hf_config_parse(text, len, path, cfg, err);
    free(text);
    return st;
}

/* ---- preprocessor_config.json ----------------------------------------- */

void hf_preproc_defaults(lv_imgproc_kind kind, lv_preproc_config *pp) {
    memset(pp, 0, sizeof *pp);
    pp->kind = kind;
    pp->do_resize = pp->do_center_crop = pp->do_rescale = true;
    pp->do_normalize = pp->do_convert_rgb = true;
    pp->do_pad = kind == LV_IMGPROC_LLAVA_NEXT;
    pp->shortest_edge = 224;
    pp->crop_height = pp->crop_width = 224;
    pp->resample = 3; /* PILImageResampling.BICUBIC */
    pp->rescale_factor = 1.0 / 255.0;
    memcpy(pp->image_mean, clip_mean, sizeof clip_mean);
    memcpy(pp->image_std, clip_std, sizeof clip_std);
    if (kind == LV_IMGPROC_LLAVA_NEXT) {
        pp->n_pinpoints = 5;
        memcpy(pp->pinpoints, llava_next_pinpoints, sizeof llava_next_pinpoints);
    }
    if (kind == LV_IMGPROC_IDEFICS3) {
        pp->do_center_crop = false;
        pp->do_pad = pp->do_image_splitting = true;
        pp->shortest_edge = pp->crop_height = pp->crop_width = 0;
        pp->longest_edge = 4 * 364;
        pp->max_image_size = 364;
        pp->resample = 1; /* PILImageResampling.LANCZOS */
        for (int c = 0; c < 3; c++) pp->image_mean[c] = pp->image_std[c] = 0.5;
    }
}

/* The class from its name; the Fast/Pil backends share the defaults. */
static bool imgproc_kind(const char *type, lv_imgproc_kind *kind) {
    static const struct {
        const char *prefix;
        lv_imgproc_kind kind;
    } classes[] = {
        {"LlavaNextImageProcessor", LV_IMGPROC_LLAVA_NEXT},
        {"CLIPImageProcessor", LV_IMGPROC_CLIP},
        {"CLIPFeatureExtractor", LV_IMGPROC_CLIP},
        {"LlavaImageProcessor", LV_IMGPROC_LLAVA},
        {"Idefics3ImageProcessor", LV_IMGPROC_IDEFICS3},
        {"SmolVLMImageProcessor", LV_IMGPROC_IDEFICS3},
    };
    for (size_t i = 0; i < LV_ARRAY_LEN(classes); i++) {
        size_t n = strlen(classes[i].prefix);
        const char *rest = type + n;
        if (strncmp(type, classes[i].prefix, n) == 0 &&
            (!*rest || !strcmp(rest, "Fast") || !strcmp(rest, "Pil"))) {
            *kind = classes[i].kind;
            return true;
        }
    }
    return false;
}

/* size / crop_size: {"shortest_edge": n}, {"height": h, "width": w}, or an
 * int (get_size_dict: shortest edge for size, a square for crop_size). */
static lv_status parse_size(jctx *c, const json_t *root, const char *key, bool square, int *edge,
                            int *h, int *w) {
    const json_t *v = json_member(root, key);
    if (!v) return LV_OK;
    int n;
    if (!json_is_object(v)) {
        if (int_value(c, key, v, 1, 1 << 14, &n) != LV_OK) return LV_ERR_FORMAT;
        if (square) {
            *h = *w = n;
        } else {
            *edge = n;
            *h = *w = 0;
        }
        return LV_OK;
    }
    jctx sub = *c;
    char section[64];
    snprintf(section, sizeof section, "%s.", key);
    sub.section = section;
    if (json_member(v, "height") && json_member(v, "width")) {
        if (jint(&sub, v, "height", 1, 1 << 14, h) || jint(&sub, v, "width", 1, 1 << 14, w))
            return LV_ERR_FORMAT;
        if (edge) *edge = 0;
        return LV_OK;
    }
    if (edge && json_member(v, "shortest_edge") && !json_member(v, "longest_edge")) {
        if (jint(&sub, v, "shortest_edge", 1, 1 << 14, edge)) return LV_ERR_FORMAT;
        *h = *w = 0;
        return LV_OK;
    }
    return lv_fail(c->err, LV_ERR_FORMAT, "%s: %s must have %s\"height\" and \"width\"", c->file,
                   key, edge ? "\"shortest_edge\" or " : "");
}

/* Idefics3's size / max_image_size: {"longest_edge": n}. HF also takes
 * {"height", "width"} for size (a plain resize), which the engine's
 * processor does not reproduce: LV_ERR_UNSUPPORTED. */
static lv_status parse_longest_edge(jctx *c, const json_t *root, const char *key, int *edge) {
    const json_t *v = json_member(root, key);
    if (!v) return LV_OK;
    if (!json_is_object(v) || !json_member(v, "longest_edge")) {
        if (json_is_object(v) && json_member(v, "height") && json_member(v, "width"))
            return lv_fail(c->err, LV_ERR_UNSUPPORTED,
                           "%s: %s {\"height\", \"width\"} is not supported for %s (only "
                           "{\"longest_edge\": n})",
                           c->file, key, "Idefics3/SmolVLM image processors");
        return lv_fail(c->err, LV_ERR_FORMAT, "%s: %s must be {\"longest_edge\": n}", c->file, key);
    }
    jctx sub = *c;
    char section[64];
    snprintf(section, sizeof section, "%s.", key);
    sub.section = section;
    return jint(&sub, v, "longest_edge", 1, 1 << 14, edge);
}

/* image_mean / image_std: one number or three. */
static lv_status parse_triple(jctx *c, const json_t *root, const char *key, bool positive,
                              double out[3]) {
    const json_t *v = json_member(root, key);
    if (!v) return LV_OK;
    const char *expected =
        positive ? "a positive number or a list of 3" : "a number or a list of 3";
    if (json_is_number(v)) {
        out[0] = out[1] = out[2] = json_number_value(v);
    } else if (json_is_array(v) && json_array_size(v) == 3) {
        for (int i = 0; i < 3; i++) {
            const json_t *x = json_array_get(v, (size_t)i);
            if (!json_is_number(x)) return bad(c, key, expected, v);
            out[i] = json_number_value(x);
        }
    } else {
        return bad(c, key, expected, v);
    }
    for (int i = 0; i < 3; i++)
        if (!isfinite(out[i]) || (positive && !(out[i] > 0))) return bad(c, key, expected, v);
    return LV_OK;
}

static lv_status parse_preproc(const char *file, const json_t *root, lv_imgproc_kind default_kind,
                               lv_preproc_config *pp, lv_err *err) {
    jctx c = {file, "", err};
    char type[HF_NAME_LEN] = "";
    lv_status st;
    const char *tkey = json_member(root, "image_processor_type") ? "image_processor_type"
                                                                 : "feature_extractor_type";
    if ((st = jstr(&c, root, tkey, type, sizeof type))) return st;
    lv_imgproc_kind kind = default_kind;
    if (*type && !imgproc_kind(type, &kind))
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "%s: image processor \"%s\" is not supported (expected "
                       "LlavaNextImageProcessor, CLIPImageProcessor, LlavaImageProcessor, "
                       "Idefics3ImageProcessor or SmolVLMImageProcessor)",
                       file, type);
    hf_preproc_defaults(kind, pp);
    memcpy(pp->image_processor_type, type, sizeof type);
    if ((st = jbool(&c, root, "do_resize", &pp->do_resize)) ||
        (st = jbool(&c, root, "do_center_crop", &pp->do_center_crop)) ||
        (st = jbool(&c, root, "do_rescale", &pp->do_rescale)) ||
        (st = jbool(&c, root, "do_normalize", &pp->do_normalize)) ||
        (st = jbool(&c, root, "do_convert_rgb", &pp->do_convert_rgb)) ||
        (st = jbool(&c, root, "do_pad", &pp->do_pad)))
        return st;
    if (kind == LV_IMGPROC_IDEFICS3) {
        if ((st = parse_longest_edge(&c, root, "size", &pp->longest_edge)) ||
            (st = parse_longest_edge(&c, root, "max_image_size", &pp->max_image_size)) ||
            (st = jbool(&c, root, "do_image_splitting", &pp->do_image_splitting)))
            return st;
        const json_t *vs = json_member(root, "video_sampling");
        if (vs && !json_is_null(vs)) {
            if (!json_is_object(vs)) return bad(&c, "video_sampling", "an object", vs);
            jctx sub = {file, "video_sampling.", err};
            pp->has_video = true;
            pp->video_fps = 1;
            pp->video_max_frames = 64;
            pp->video_longest_edge = pp->longest_edge;
            if ((st = jpos(&sub, vs, "fps", &pp->video_fps)) ||
                (st = jint(&sub, vs, "max_frames", 1, 1024, &pp->video_max_frames)) ||
                (st = parse_longest_edge(&sub, vs, "video_size", &pp->video_longest_edge)))
                return st;
            /* SmolVLMVideoProcessor.__init__: "size" given with "video_sampling"
             * replaces video_size */
            if (json_member(root, "size")) pp->video_longest_edge = pp->longest_edge;
        }
    } else if ((st = parse_size(&c, root, "size", false, &pp->shortest_edge, &pp->size_height,
                                &pp->size_width))) {
        return st;
    }
    if ((st = parse_size(&c, root, "crop_size", true, NULL, &pp->crop_height, &pp->crop_width)) ||
        (st = jint(&c, root, "resample", 0, 5, &pp->resample)) ||
        (st = jpos(&c, root, "rescale_factor", &pp->rescale_factor)) ||
        (st = parse_triple(&c, root, "image_mean", false, pp->image_mean)) ||
        (st = parse_triple(&c, root, "image_std", true, pp->image_std)) ||
        (st = jpinpoints(&c, root, "image_grid_pinpoints", &pp->n_pinpoints, pp->pinpoints)) ||
        (st = jstr(&c, root, "aspect_ratio_setting", pp->aspect_ratio_setting,
                   sizeof pp->aspect_ratio_setting)))
        return st;
    return LV_OK;
}

lv_status hf_preproc_parse(const char *json, size_t len, const char *name,
                           lv_imgproc_kind default_kind, lv_preproc_config *pp, lv_err *err) {
    hf_preproc_defaults(default_kind, pp);
    json_t *root;
    lv_status st = load_json(json, len, name, 0, &root, err);
    if (st != LV_OK) return st;
    st = parse_preproc(name, root, default_kind, pp, err);
    json_decref(root);
    return st;
}

lv_status hf_preproc_load(const char *path, lv_imgproc_kind default_kind, lv_preproc_config *pp,
                          lv_err *err) {
    char *text;
    size_t len;
    lv_status st = lv_read_file(path, CONFIG_MAX_BYTES, &text, &len, err);
    if (st != LV_OK) return st;
    st = hf_preproc_parse(text, len, path, default_kind, pp, err);
    free(text);
    return st;
}

/* ---- tokenizer_config.json -------------------------------------------- */

void hf_tokcfg_deinit(lv_tokenizer_config *tc) {
    free(tc->bos_token);
    free(tc->eos_token);
    free(tc->unk_token);
    free(tc->pad_token);
    free(tc->chat_template);
    free(tc->processor_chat_template);
    memset(tc, 0, sizeof *tc);
}

static lv_status dup_str(jctx *c, const char *key, const char *s, char **out) {
    char *d = strdup(s);
    if (!d) return lv_fail(c->err, LV_ERR_NOMEM, "%s: %s: out of memory", c->file, key);
    free(*out);
    *out = d;
    return LV_OK;
}

/* A special token: a string, or an AddedToken object {"content": "...", ...}. */
static lv_status jtoken(jctx *c, const json_t *root, const char *key, char **out) {
    const json_t *v = json_member(root, key);
    if (!v) return LV_OK;
    const json_t *s = json_is_object(v) ? json_object_get(v, "content") : v;
    if (!json_is_string(s))
        return bad(c, key, "a string or an object with a \"content\" string", v);
    return dup_str(c, key, json_string_value(s), out);
}

/* chat_template: a string, or a list of {"name", "template"} of which we take
 * "default" (what apply_chat_template uses without a name). */
static lv_status jtemplate(jctx *c, const json_t *root, char **out) {
    const json_t *v = json_member(root, "chat_template");
    if (!v) return LV_OK;
    if (json_is_string(v)) return dup_str(c, "chat_template", json_string_value(v), out);
    const char *expected = "a string or a list of {\"name\", \"template\"} objects";
    if (!json_is_array(v)) return bad(c, "chat_template", expected, v);
    size_t i;
    const json_t *e;
    json_array_foreach(v, i, e) {
        const json_t *name = json_object_get(e, "name"), *tmpl = json_object_get(e, "template");
        if (!json_is_string(name) || !json_is_string(tmpl))
            return bad(c, "chat_template", expected, e);
        if (strcmp(json_string_value(name), "default") == 0)
            return dup_str(c, "chat_template", json_string_value(tmpl), out);
    }
    return LV_OK; /* named templates only: none is the default */
}

void hf_tokcfg_defaults(lv_tokenizer_config *tc) {
    memset(tc, 0, sizeof *tc);
    tc->add_bos_token = true;
    tc->legacy = true;
    tc->model_max_length = INT64_MAX;
}

static lv_status parse_tokcfg(const char *file, const json_t *root, lv_tokenizer_config *tc,
                              lv_err *err) {
    jctx c = {file, "", err};
    lv_status st;
    if ((st = jbool_has(&c, root, "add_bos_token", &tc->has_add_bos_token, &tc->add_bos_token)) ||
        (st = jbool_has(&c, root, "add_eos_token", &tc->has_add_eos_token, &tc->add_eos_token)) ||
        (st = jbool_has(&c, root, "legacy", &tc->has_legacy, &tc->legacy)) ||
        (st =
             jbool_has(&c, root, "clean_up_tokenization_spaces",
                       &tc->has_clean_up_tokenization_spaces, &tc->clean_up_tokenization_spaces)) ||
        (st = jbool_has(&c, root, "spaces_between_special_tokens",
                        &tc->has_spaces_between_special_tokens,
                        &tc->spaces_between_special_tokens)) ||
        (st = jtoken(&c, root, "bos_token", &tc->bos_token)) ||
        (st = jtoken(&c, root, "eos_token", &tc->eos_token)) ||
        (st = jtoken(&c, root, "unk_token", &tc->unk_token)) ||
        (st = jtoken(&c, root, "pad_token", &tc->pad_token)) ||
        (st = jtemplate(&c, root, &tc->chat_template)) ||
        (st = jstr(&c, root, "tokenizer_class", tc->tokenizer_class, sizeof tc->tokenizer_class)))
        return st;
    const json_t *v = json_member(root, "model_max_length");
    if (v) {
        /* Often 1000000000000000019884624838656 (int(1e30)) for "no limit". */
        if (!json_is_number(v) || !(json_number_value(v) > 0))
            return bad(&c, "model_max_length", "a positive integer", v);
        double d = json_number_value(v);
        tc->has_model_max_length = true;
        tc->model_max_length = d >= 9.2e18 ? INT64_MAX : (int64_t)d;
    }
    return LV_OK;
}

lv_status hf_tokcfg_parse(const char *json, size_t len, const char *name, lv_tokenizer_config *tc,
                          lv_err *err) {
    hf_tokcfg_defaults(tc);
    json_t *root;
    /* INT_AS_REAL: model_max_length overflows json_int_t in real files. */
    lv_status st = load_json(json, len, name, JSON_DECODE_INT_AS_REAL, &root, err);
    if (st != LV_OK) return st;
    st = parse_tokcfg(name, root, tc, err);
    json_decref(root);
    if (st != LV_OK) hf_tokcfg_deinit(tc);
    return st;
}

lv_status hf_tokcfg_load(const char *path, lv_tokenizer_config *tc, lv_err *err) {
    char *text;
    size_t len;
    lv_status st = lv_read_file(path, TOKCONFIG_MAX_BYTES, &text, &len, err);
    if (st != LV_OK) return st;
    st = hf_tokcfg_parse(text, len, path, tc, err);
    free(text);
    return st;
}

static bool has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

lv_status hf_chat_template_load(const char *path, lv_tokenizer_config *tc, lv_err *err) {
    char *text;
    size_t len;
    lv_status st = lv_read_file(path, CONFIG_MAX_BYTES, &text, &len, err);
    if (st != LV_OK) return st;
    if (has_suffix(path, ".jinja")) {
        if (strlen(text) != len) {
            free(text);
            return lv_fail(err, LV_ERR_FORMAT, "%s: contains a NUL byte", path);
        }
        free(tc->processor_chat_template);
        tc->processor_chat_template = text;
        return LV_OK;
    }
    json_t *root;
    st = load_json(text, len, path, 0, &root, err);
    free(text);
    if (st != LV_OK) return st;
    jctx c = {path, "", err};
    const json_t *v = json_object_get(root, "chat_template");
    if (!json_is_string(v))
        st = bad(&c, "chat_template", "a string", v ? v : json_null());
    else
        st = dup_str(&c, "chat_template", json_string_value(v), &tc->processor_chat_template);
    json_decref(root);
    return st;
}

/* ---- generation_config.json ------------------------------------------- */

static lv_status parse_gencfg(const char *file, const json_t *root, lv_generation_config *g,
                              lv_err *err) {
    jctx c = {file, "", err};
    lv_status st;
    g->has_bos_token_id = json_member(root, "bos_token_id") != NULL;
    g->has_eos_token_id = json_member(root, "eos_token_id") != NULL;
    g->has_pad_token_id = json_member(root, "pad_token_id") != NULL;
    g->has_do_sample = json_member(root, "do_sample") != NULL;
    g->has_temperature = json_member(root, "temperature") != NULL;
    g->has_top_k = json_member(root, "top_k") != NULL;
    g->has_top_p = json_member(root, "top_p") != NULL;
    g->has_max_new_tokens = json_member(root, "max_new_tokens") != NULL;
    g->has_max_length = json_member(root, "max_length") != NULL;
    g->has_repetition_penalty = json_member(root, "repetition_penalty") != NULL;
    if ((st = jint(&c, root, "bos_token_id", 0, INT32_MAX, &g->bos_token_id)) ||
        (st = jint_list(&c, root, "eos_token_id", 0, INT32_MAX, HF_MAX_EOS, &g->n_eos,
                        g->eos_token_ids)) ||
        (st = jint(&c, root, "pad_token_id", 0, INT32_MAX, &g->pad_token_id)) ||
        (st = jbool(&c, root, "do_sample", &g->do_sample)) ||
        (st = jrange(&c, root, "temperature", 0.0, 1e6, &g->temperature)) ||
        (st = jint(&c, root, "top_k", 0, INT32_MAX, &g->top_k)) ||
        (st = jrange(&c, root, "top_p", 0.0, 1.0, &g->top_p)) ||
        (st = jint(&c, root, "max_new_tokens", 0, INT32_MAX, &g->max_new_tokens)) ||
        (st = jint(&c, root, "max_length", 0, INT32_MAX, &g->max_length)) ||
        (st = jpos(&c, root, "repetition_penalty", &g->repetition_penalty)))
        return st;
    return LV_OK;
}

void hf_gencfg_defaults(lv_generation_config *gc) {
    memset(gc, 0, sizeof *gc);
    gc->bos_token_id = -1;
    gc->pad_token_id = -1;
    gc->temperature = 1.0;
    gc->top_k = 50;
    gc->top_p = 1.0;
    gc->max_length = 20;
    gc->repetition_penalty = 1.0;
}

lv_status hf_gencfg_parse(const char *json, size_t len, const char *name, lv_generation_config *gc,
                          lv_err *err) {
    hf_gencfg_defaults(gc);
    json_t *root;
    lv_status st = load_json(json, len, name, 0, &root, err);
    if (st != LV_OK) return st;
    st = parse_gencfg(name, root, gc, err);
    json_decref(root);
    return st;
}

lv_status hf_gencfg_load(const char *path, lv_generation_config *gc, lv_err *err) {
    char *text;
    size_t len;
    lv_status st = lv_read_file(path, CONFIG_MAX_BYTES, &text, &len, err);
    if (st != LV_OK) return st;
    st = hf_gencfg_parse(text, len, path, gc, err);
    free(text);
    return st;
}
