/*
 * gguf_model.c - a llama.cpp LLaVA GGUF pair as configs + canonical tensors
 * (see gguf_model.h).
 *
 * METADATA -> lv_model_config (shared/spec/formats.md §4.5, §4.6, §4.8)
 *   text.gguf   llama.embedding_length → text.dim, .feed_forward_length →
 *               hidden_dim, .block_count, .attention.head_count(_kv),
 *               .attention.key_length (else dim / heads), .context_length,
 *               .attention.layer_norm_rms_epsilon, .rope.freq_base (10000 if
 *               absent); .rope.dimension_count must equal head_dim and
 *               rope scaling must be absent (else LV_ERR_UNSUPPORTED).
 *               vocab_size = llama.vocab_size, else the token count; it must
 *               match token_embd's rows. No output.weight = tied embeddings.
 *   mmproj      clip.vision.{embedding_length, feed_forward_length,
 *               block_count, attention.head_count, attention.layer_norm_epsilon,
 *               image_size, patch_size, projection_dim, image_mean, image_std,
 *               image_grid_pinpoints, mm_patch_merge_type, feature_layer},
 *               clip.use_gelu / clip.use_silu, clip.projector_type ("mlp").
 *               Pinpoint pairs are kept in file order (the converter
 *               flattens the config's pairs as they are).
 *   Feature layer: with clip.vision.feature_layer [k] (k >= 0, hidden state
 *   k = output of block k-1) that index; without it the legacy converter
 *   already dropped the unused last block, so every stored block runs
 *   (hidden state block_count). Never post_ln (HF takes hidden_states[k]).
 *   The image token is the vocabulary's "<image>". GGUFs converted from the
 *   original liuhaotian checkpoints (llava_surgery_v2.py + convert_hf_to_gguf
 *   / the legacy convert.py, e.g. cjpais/llava-v1.6-mistral-7b-gguf) have the
 *   base SentencePiece vocabulary only (32000 ids, no <image>: llama.cpp's
 *   mtmd puts image embeddings between text chunks). For those the image id
 *   is virtual: image_token_id = vocab_size, one past the last row of
 *   token_embd. The tokenizer gives that id to the text "<image>"
 *   (tokenizer_gguf.h), the model overwrites its input rows with image
 *   features without reading embed_tokens, and decoding never produces it
 *   (the logits stay vocab_size wide).
 *   Their mmproj (legacy converter with config_vit.json: image_grid_pinpoints,
 *   mm_patch_merge_type "spatial_unpad", image_aspect_ratio "anyres",
 *   image_crop_resolution / image_split_resolution / mm_projector_type,
 *   which nothing reads, no feature_layer, block_count 23,
 *   model.image_newline) is the file this reader was written for.
 *
 * SMOLVLM (shared/spec/smolvlm.md §11; ggml-org/llama.cpp conversion/smolvlm.py,
 * conversion/llama.py, tools/mtmd/clip.cpp). convert_hf_to_gguf.py writes
 * SmolVLM / SmolVLM2 as a "llama" text model (text_model. stripped, q/k
 * permuted as above, a "gpt2" vocabulary with pre "smollm", handled by
 * text/tokenizer_gguf.c) and an mmproj with clip.projector_type "idefics3":
 *   clip.vision.{embedding_length, feed_forward_length, block_count,
 *   attention.head_count, image_size, patch_size}   required
 *   clip.vision.attention.layer_norm_epsilon         the file's value (the
 *       converter writes 1e-5 when config.json lacks layer_norm_eps, where
 *       transformers' SigLIP default is 1e-6; we keep what the file says)
 *   clip.vision.projector.scale_factor               pixel shuffle (absent: 2, the
 *       converter's and transformers' default; clip-model.h's n_merge is 1)
 *   clip.vision.preproc_image_size                   size.longest_edge (absent
 *       in uploads before llama.cpp PR #16206: 4 x image_size, what every
 *       released preprocessor_config.json has)
 *   clip.vision.image_mean / image_std               required
 *   clip.use_gelu                                    true (SigLIP's tanh GELU)
 * The config is model_type "smolvlm": nothing in the pair tells SmolVLM v1
 * ("idefics3") from SmolVLM2 (the same classes but for their names, and the
 * same math), and hf_is_idefics3 covers both. The vision tower is
 * "smolvlm_vision" (gelu_pytorch_tanh), every block then post_layernorm
 * ("full" features, feature layer -1), image_seq_length = (image_size /
 * patch)² / scale² rows per frame. The preprocessor is LV_IMGPROC_IDEFICS3:
 * longest_edge = preproc_image_size, max_image_size = image_size, splitting
 * on, LANCZOS. image_token_id is the vocabulary's "<image>" (required: no
 * virtual id). Tensors: v.patch_embd.{weight,bias}, v.position_embd,
 * v.blk.N.{attn_q,attn_k,attn_v,attn_out,ln1,ln2}, v.blk.N.ffn_up = fc1 and
 * ffn_down = fc2 (the current naming; the legacy test below never fires
 * since ffn_down's input is the MLP width), v.post_ln, and
 * mm.model.fc.weight -> connector.modality_projection.proj.weight
 * [text dim, vision dim · scale²].
 *
 * TENSORS -> canonical names (§4.4, §4.7; the table, shared with the writer
 * quant/gguf_export.c, is io/gguf_names.c)
 *   token_embd / output_norm / output          → language_model.model.embed_tokens /
 *                                                .model.norm / .lm_head
 *   blk.N.attn_{norm,q,k,v,output}, ffn_{norm,gate,up,down}
 *                                              → ...layers.N.{input_layernorm,
 *                                                self_attn.{q,k,v,o}_proj,
 *                                                post_attention_layernorm, mlp.*}
 *   mm.0 / mm.2                                → multi_modal_projector.linear_1 / _2
 *   model.image_newline | v.image_newline      → image_newline
 *   v.class_embd, v.patch_embd, v.position_embd, v.pre_ln, v.post_ln
 *   v.blk.N.{attn_q,attn_k,attn_v,attn_out|attn_output,ln1,ln2,ffn_up,ffn_down}
 * Shapes: PyTorch order = ne reversed (ne0 is the contiguous, input dim).
 * The legacy clip converter names mlp.fc1 "ffn_down" and fc2 "ffn_up";
 * clip.cpp swaps them back when ffn_down's ne0 is the embedding width, and
 * so do we (with their biases).
 *
 * Q/K PERMUTATION (convert_hf_to_gguf.py LlamaModel.permute). With H heads
 * (n_head for q, n_head_kv for k) of D rows, half = D/2:
 *     GGUF row h·D + 2i + t  =  HF row h·D + t·half + i   (i < half, t ∈ {0,1})
 * We copy the rows back into HF order: whole rows move, so this is exact for
 * block types too (a row is a whole number of blocks). Only q and k are
 * copied; the pages they came from are returned with MADV_DONTNEED, every
 * other tensor stays in the mapping.
 */
#include "gguf_model.h"

#include "io/gguf_names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- names: io/gguf_names.h ----------------------------------------------- */

bool gguf_model_name(const char *g, bool mmproj, char *out, size_t cap) {
    int block;
    return gguf_name_find(g, mmproj ? GN_MMPROJ : GN_TEXT, false, out, cap, &block) != NULL;
}

bool gguf_model_dtype(uint32_t t, lv_dtype *out) {
    switch (t) {
        case GGML_F32:
            *out = LV_DTYPE_F32;
            return true;
        case GGML_F16:
            *out = LV_DTYPE_F16;
            return true;
        case GGML_BF16:
            *out = LV_DTYPE_BF16;
            return true;
        default:
            break;
    }
    for (int d = LV_DTYPE_COUNT; d < LV_DTYPE_ALL_COUNT; d++)
        if (dtype_ggml_id((lv_dtype)d) == (int)t) {
            *out = (lv_dtype)d;
            return true;
        }
    return false;
}

/* ---- metadata -------------------------------------------------------------- */

/* A required positive integer key that fits an int. */
static lv_status get_dim(const gguf *g, const char *key, int *out, lv_err *err) {
    int64_t v;
    lv_status st = gguf_get_int(g, key, &v, NULL, err);
    if (st) return st;
    if (v <= 0 || v > (1 << 24))
        return lv_fail(err, LV_ERR_FORMAT, "%s: %s = %lld (expected 1..%d)", gguf_path(g), key,
                       (long long)v, 1 << 24);
    *out = (int)v;
    return LV_OK;
}

static lv_status get_opt_int(const gguf *g, const char *key, int def, int *out, lv_err *err) {
    int64_t v;
    bool found;
    lv_status st = gguf_get_int(g, key, &v, &found, err);
    if (st) return st;
    if (!found) {
        *out = def;
        return LV_OK;
    }
    if (v < -1 || v > INT32_MAX)
        return lv_fail(err, LV_ERR_FORMAT, "%s: %s = %lld is out of range", gguf_path(g), key,
                       (long long)v);
    *out = (int)v;
    return LV_OK;
}

static bool str_is(const char *s, size_t n, const char *lit) {
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

/* The id of a token string in tokenizer.ggml.tokens, or -1. */
static int find_token(const gguf_kv *tokens, const char *piece) {
    for (uint64_t i = 0; i < tokens->n; i++) {
        size_t n;
        const char *s = gguf_arr_str(tokens, i, &n);
        if (str_is(s, n, piece)) return (int)i;
    }
    return -1;
}

static char *token_dup(const gguf_kv *tokens, int id) {
    if (id < 0 || (uint64_t)id >= tokens->n) return NULL;
    size_t n;
    const char *s = gguf_arr_str(tokens, (uint64_t)id, &n);
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static lv_status text_config(const gguf *g, lv_model_config *cfg, const gguf_kv **tokens_out,
                             lv_err *err) {
    const char *path = gguf_path(g), *arch;
    size_t arch_n;
    lv_status st;
    if ((st = gguf_get_str(g, "general.architecture", &arch, &arch_n, NULL, err))) return st;
    if (!str_is(arch, arch_n, "llama"))
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "%s: general.architecture \"%.*s\" (the text model must be \"llama\")", path,
                       (int)(arch_n > 40 ? 40 : arch_n), arch);
    lv_text_config *t = &cfg->text;
    const gguf_kv *tokens;
    if ((st = gguf_get_arr(g, "tokenizer.ggml.tokens", &tokens, NULL, err))) return st;
    if (tokens->arr_type != GGUF_STRING || tokens->n == 0 || tokens->n > (1u << 24))
        return lv_fail(err, LV_ERR_FORMAT, "%s: tokenizer.ggml.tokens must be 1..%u strings", path,
                       1u << 24);
    *tokens_out = tokens;
    snprintf(t->model_type, sizeof t->model_type, "llama");
    snprintf(t->hidden_act, sizeof t->hidden_act, "silu");
    if ((st = get_dim(g, "llama.embedding_length", &t->dim, err)) ||
        (st = get_dim(g, "llama.feed_forward_length", &t->hidden_dim, err)) ||
        (st = get_dim(g, "llama.block_count", &t->n_layers, err)) ||
        (st = get_dim(g, "llama.attention.head_count", &t->n_heads, err)) ||
        (st = get_opt_int(g, "llama.attention.head_count_kv", t->n_heads, &t->n_kv_heads, err)) ||
        (st = get_opt_int(g, "llama.attention.key_length", t->dim / t->n_heads, &t->head_dim,
                          err)) ||
        (st = get_opt_int(g, "llama.context_length", 4096, &t->max_pos, err)) ||
        (st = get_opt_int(g, "llama.vocab_size", (int)tokens->n, &t->vocab_size, err)))
        return st;
    if (t->n_kv_heads <= 0 || t->n_heads % t->n_kv_heads || t->head_dim <= 0 || t->head_dim % 2 ||
        t->vocab_size <= 0)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: inconsistent attention shape: %d heads, %d kv heads, head_dim %d", path,
                       t->n_heads, t->n_kv_heads, t->head_dim);
    if ((uint64_t)t->vocab_size != tokens->n)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: llama.vocab_size %d but tokenizer.ggml.tokens has %llu entries", path,
                       t->vocab_size, (unsigned long long)tokens->n);
    int rope_dims = 0;
    if ((st = get_opt_int(g, "llama.rope.dimension_count", t->head_dim, &rope_dims, err)))
        return st;
    if (rope_dims != t->head_dim)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "%s: llama.rope.dimension_count %d (partial rotary; head_dim is %d)", path,
                       rope_dims, t->head_dim);
    const char *rs;
    size_t rs_n;
    bool found;
    if ((st = gguf_get_str(g, "llama.rope.scaling.type", &rs, &rs_n, &found, err))) return st;
    if (found && !str_is(rs, rs_n, "none"))
        return lv_fail(err, LV_ERR_UNSUPPORTED, "%s: llama.rope.scaling.type \"%.*s\"", path,
                       (int)(rs_n > 40 ? 40 : rs_n), rs);
    if (gguf_find_tensor(g, "rope_freqs.weight"))
        return lv_fail(err, LV_ERR_UNSUPPORTED, "%s: rope_freqs.weight (llama-3 rope scaling)",
                       path);
    t->rms_eps = 1e-5;
    t->rope_theta = 10000.0;
    if ((st =
             gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", &t->rms_eps, NULL, err)) ||
        (st = gguf_get_float(g, "llama.rope.freq_base", &t->rope_theta, &found, err)))
        return st;
    if (!(t->rms_eps > 0) || !(t->rope_theta > 0))
        return lv_fail(err, LV_ERR_FORMAT, "%s: rms epsilon %g / rope base %g must be > 0", path,
                       t->rms_eps, t->rope_theta);
    t->sliding_window = 0;
    t->tie_word_embeddings = gguf_find_tensor(g, "output.weight") == NULL;
    const gguf_tensor *emb = gguf_find_tensor(g, "token_embd.weight");
    if (!emb) return lv_fail(err, LV_ERR_FORMAT, "%s: tensor 'token_embd.weight' is missing", path);
    if (emb->ne[1] != t->vocab_size || emb->ne[0] != t->dim)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: token_embd.weight is [%lld, %lld], expected [%d, %d] (dim, vocab)",
                       path, (long long)emb->ne[0], (long long)emb->ne[1], t->dim, t->vocab_size);
    if ((st = get_opt_int(g, "tokenizer.ggml.bos_token_id", -1, &t->bos_id, err)) ||
        (st = get_opt_int(g, "tokenizer.ggml.padding_token_id", -1, &t->pad_id, err)) ||
        (st = get_opt_int(g, "tokenizer.ggml.eos_token_id", -1, &t->eos_ids[0], err)))
        return st;
    t->n_eos = t->eos_ids[0] >= 0;
    if (t->bos_id >= t->vocab_size || t->pad_id >= t->vocab_size || t->eos_ids[0] >= t->vocab_size)
        return lv_fail(err, LV_ERR_FORMAT, "%s: a bos/eos/padding token id is past the vocabulary",
                       path);
    return LV_OK;
}

/* An array of 3 floats (image_mean / image_std). */
static lv_status get_vec3(const gguf *g, const char *key, double out[3], lv_err *err) {
    const gguf_kv *kv;
    lv_status st = gguf_get_arr(g, key, &kv, NULL, err);
    if (st) return st;
    if (!gguf_arr_is_float(kv) || kv->n != 3)
        return lv_fail(err, LV_ERR_FORMAT, "%s: %s must be 3 floats", gguf_path(g), key);
    for (int i = 0; i < 3; i++) out[i] = gguf_arr_float(kv, (uint64_t)i);
    return LV_OK;
}

/* The mmproj of a SmolVLM / SmolVLM2 model (clip.projector_type "idefics3",
 * see SMOLVLM at the top of this file). */
static lv_status vision_config_idefics3(const gguf *g, lv_model_config *cfg, lv_preproc_config *pp,
                                        lv_err *err) {
    const char *path = gguf_path(g);
    lv_status st;
    bool found, silu = false;
    lv_vision_config *v = &cfg->vision;
    /* nothing in the pair tells SmolVLM (v1, "idefics3") from SmolVLM2: same math */
    snprintf(cfg->model_type, sizeof cfg->model_type, "smolvlm");
    snprintf(v->model_type, sizeof v->model_type, "smolvlm_vision");
    snprintf(v->hidden_act, sizeof v->hidden_act, "gelu_pytorch_tanh");
    if ((st = get_dim(g, "clip.vision.embedding_length", &v->dim, err)) ||
        (st = get_dim(g, "clip.vision.feed_forward_length", &v->hidden_dim, err)) ||
        (st = get_dim(g, "clip.vision.block_count", &v->n_layers, err)) ||
        (st = get_dim(g, "clip.vision.attention.head_count", &v->n_heads, err)) ||
        (st = get_dim(g, "clip.vision.image_size", &v->image_size, err)) ||
        (st = get_dim(g, "clip.vision.patch_size", &v->patch_size, err)) ||
        (st = get_opt_int(g, "clip.vision.projection_dim", 0, &v->projection_dim, err)) ||
        (st = get_opt_int(g, "clip.vision.projector.scale_factor", 2, &cfg->scale_factor, err)))
        return st;
    if (v->dim % v->n_heads || v->patch_size > v->image_size)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: vision dims: %d heads do not divide %d, or patch %d exceeds image %d",
                       path, v->n_heads, v->dim, v->patch_size, v->image_size);
    int side = v->image_size / v->patch_size; /* SigLIP's "valid" conv: 384 / 14 = 27 */
    if (cfg->scale_factor < 1 || side % cfg->scale_factor)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: clip.vision.projector.scale_factor %d does not divide the %d patches "
                       "per side",
                       path, cfg->scale_factor, side);
    v->head_dim = v->dim / v->n_heads;
    v->n_channels = 3;
    /* SigLIP's own default (HF 1e-6; clip-model.h's too) when the key is absent;
     * convert_hf_to_gguf.py always writes it, as 1e-5 when config.json has no
     * layer_norm_eps (smolvlm.md §11.1) */
    v->ln_eps = 1e-6;
    if ((st = gguf_get_float(g, "clip.vision.attention.layer_norm_epsilon", &v->ln_eps, &found,
                             err)))
        return st;
    if (!(v->ln_eps > 0))
        return lv_fail(err, LV_ERR_FORMAT, "%s: clip.vision.attention.layer_norm_epsilon %g", path,
                       v->ln_eps);
    if ((st = gguf_get_bool(g, "clip.use_silu", &silu, &found, err))) return st;
    if (silu)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "%s: clip.use_silu with projector \"idefics3\" (SigLIP uses GELU)", path);
    cfg->n_feature_layers = 1;
    cfg->feature_layers[0] = -1; /* the last block, then post_layernorm */
    snprintf(cfg->feature_select_strategy, sizeof cfg->feature_select_strategy, "full");
    snprintf(cfg->projector_hidden_act, sizeof cfg->projector_hidden_act, "none");
    cfg->image_seq_length = side * side / (cfg->scale_factor * cfg->scale_factor);
    cfg->use_image_newline = false;
    cfg->n_pinpoints = 0;

    hf_preproc_defaults(LV_IMGPROC_IDEFICS3, pp);
    pp->kind = LV_IMGPROC_IDEFICS3;
    snprintf(pp->image_processor_type, sizeof pp->image_processor_type, "SmolVLMImageProcessor");
    pp->do_resize = pp->do_rescale = pp->do_normalize = pp->do_convert_rgb = true;
    pp->do_center_crop = false;
    pp->do_pad = pp->do_image_splitting = true;
    pp->shortest_edge = pp->size_height = pp->size_width = 0;
    pp->crop_height = pp->crop_width = 0;
    pp->n_pinpoints = 0;
    pp->resample = 1; /* PIL LANCZOS */
    pp->rescale_factor = 1.0 / 255.0;
    pp->max_image_size = v->image_size;
    /* The ggml-org uploads of April 2025 predate clip.vision.preproc_image_size
     * (llama.cpp PR #16206); every released preprocessor_config.json has
     * size.longest_edge = 4 x max_image_size (2048 / 512, 1536 / 384). */
    if ((st = get_opt_int(g, "clip.vision.preproc_image_size", 4 * v->image_size, &pp->longest_edge,
                          err)))
        return st;
    if (pp->longest_edge < v->image_size || pp->longest_edge > (1 << 14))
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: clip.vision.preproc_image_size %d (expected %d..%d, at least the tile)",
                       path, pp->longest_edge, v->image_size, 1 << 14);
    if ((st = get_vec3(g, "clip.vision.image_mean", pp->image_mean, err)) ||
        (st = get_vec3(g, "clip.vision.image_std", pp->image_std, err)))
        return st;
    for (int i = 0; i < 3; i++)
        if (!(pp->image_std[i] > 0))
            return lv_fail(err, LV_ERR_FORMAT, "%s: clip.vision.image_std[%d] must be > 0", path,
                           i);
    const gguf_tensor *fc = gguf_find_tensor(g, "mm.model.fc.weight");
    if (!fc) return lv_fail(err, LV_ERR_FORMAT, "%s: tensor 'mm.model.fc.weight' is missing", path);
    cfg->projector_bias = gguf_find_tensor(g, "mm.model.fc.bias") != NULL;
    return LV_OK;
}

static lv_status vision_config(const gguf *g, lv_model_config *cfg, lv_preproc_config *pp,
                               lv_err *err) {
    const char *path = gguf_path(g), *s;
    size_t n;
    lv_status st;
    bool found, b;
    if ((st = gguf_get_str(g, "general.architecture", &s, &n, NULL, err))) return st;
    if (!str_is(s, n, "clip"))
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "%s: general.architecture \"%.*s\" (an mmproj file is \"clip\")", path,
                       (int)(n > 40 ? 40 : n), s);
    if ((st = gguf_get_bool(g, "clip.has_vision_encoder", &b, &found, err))) return st;
    if (found && !b)
        return lv_fail(err, LV_ERR_FORMAT, "%s: clip.has_vision_encoder is false", path);
    if ((st = gguf_get_str(g, "clip.projector_type", &s, &n, &found, err))) return st;
    if (found && str_is(s, n, "idefics3")) return vision_config_idefics3(g, cfg, pp, err);
    if (found && !str_is(s, n, "mlp"))
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "%s: clip.projector_type \"%.*s\" (\"mlp\", LLaVA's, or \"idefics3\", "
                       "SmolVLM's)",
                       path, (int)(n > 40 ? 40 : n), s);
    if (gguf_find_tensor(g, "mm.3.weight"))
        return lv_fail(err, LV_ERR_UNSUPPORTED, "%s: mm.3.weight: an MLP_NORM projector", path);
    lv_vision_config *v = &cfg->vision;
    snprintf(v->model_type, sizeof v->model_type, "clip_vision_model");
    if ((st = get_dim(g, "clip.vision.embedding_length", &v->dim, err)) ||
        (st = get_dim(g, "clip.vision.feed_forward_length", &v->hidden_dim, err)) ||
        (st = get_dim(g, "clip.vision.block_count", &v->n_layers, err)) ||
        (st = get_dim(g, "clip.vision.attention.head_count", &v->n_heads, err)) ||
        (st = get_dim(g, "clip.vision.image_size", &v->image_size, err)) ||
        (st = get_dim(g, "clip.vision.patch_size", &v->patch_size, err)) ||
        (st = get_opt_int(g, "clip.vision.projection_dim", 0, &v->projection_dim, err)))
        return st;
    if (v->dim % v->n_heads || v->image_size % v->patch_size)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: vision dims: %d heads do not divide %d, or patch %d image %d", path,
                       v->n_heads, v->dim, v->patch_size, v->image_size);
    v->head_dim = v->dim / v->n_heads;
    v->n_channels = 3;
    v->ln_eps = 1e-5;
    if ((st = gguf_get_float(g, "clip.vision.attention.layer_norm_epsilon", &v->ln_eps, &found,
                             err)))
        return st;
    bool gelu = false, silu = false;
    if ((st = gguf_get_bool(g, "clip.use_gelu", &gelu, &found, err)) ||
        (st = gguf_get_bool(g, "clip.use_silu", &silu, &found, err)))
        return st;
    snprintf(v->hidden_act, sizeof v->hidden_act, "%s",
             gelu   ? "gelu"
             : silu ? "silu"
                    : "quick_gelu");

    /* feature layer: an explicit hidden-state index, else every stored block */
    const gguf_kv *fl;
    if ((st = gguf_get_arr(g, "clip.vision.feature_layer", &fl, &found, err))) return st;
    cfg->n_feature_layers = 1;
    cfg->feature_layers[0] = v->n_layers;
    if (fl) {
        if (!gguf_arr_is_int(fl) || fl->n < 1 || fl->n > HF_MAX_FEATURE_LAYERS)
            return lv_fail(err, LV_ERR_FORMAT, "%s: clip.vision.feature_layer must be 1..%d ints",
                           path, HF_MAX_FEATURE_LAYERS);
        cfg->n_feature_layers = (int)fl->n;
        for (uint64_t i = 0; i < fl->n; i++) {
            int64_t k = gguf_arr_int(fl, i);
            if (k < 0 || k > v->n_layers)
                return lv_fail(err, LV_ERR_FORMAT,
                               "%s: clip.vision.feature_layer %lld is outside 0..%d", path,
                               (long long)k, v->n_layers);
            cfg->feature_layers[i] = (int)k;
        }
    }

    /* anyres: spatial_unpad with pinpoints is llava_next, else llava-1.5 */
    const char *merge = "flat";
    size_t merge_n = 4;
    if ((st = gguf_get_str(g, "clip.vision.mm_patch_merge_type", &s, &n, &found, err))) return st;
    if (found) merge = s, merge_n = n;
    const gguf_kv *pins;
    if ((st = gguf_get_arr(g, "clip.vision.image_grid_pinpoints", &pins, &found, err))) return st;
    bool next = str_is(merge, merge_n, "spatial_unpad");
    hf_preproc_defaults(next ? LV_IMGPROC_LLAVA_NEXT : LV_IMGPROC_CLIP, pp);
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", next ? "llava_next" : "llava");
    if (next) {
        if (!pins || !gguf_arr_is_int(pins) || pins->n < 2 || pins->n % 2 ||
            pins->n / 2 > HF_MAX_PINPOINTS)
            return lv_fail(err, LV_ERR_FORMAT,
                           "%s: spatial_unpad needs clip.vision.image_grid_pinpoints: 1..%d pairs "
                           "of ints",
                           path, HF_MAX_PINPOINTS);
        cfg->n_pinpoints = (int)(pins->n / 2);
        for (int i = 0; i < cfg->n_pinpoints; i++)
            for (int j = 0; j < 2; j++) {
                int64_t p = gguf_arr_int(pins, (uint64_t)(2 * i + j));
                if (p <= 0 || p > 65536)
                    return lv_fail(err, LV_ERR_FORMAT, "%s: image_grid_pinpoints[%d] = %lld", path,
                                   2 * i + j, (long long)p);
                cfg->pinpoints[i][j] = pp->pinpoints[i][j] = (int)p;
            }
        pp->n_pinpoints = cfg->n_pinpoints;
    }
    if ((st = get_vec3(g, "clip.vision.image_mean", pp->image_mean, err)) ||
        (st = get_vec3(g, "clip.vision.image_std", pp->image_std, err)))
        return st;
    pp->shortest_edge = v->image_size;
    pp->crop_height = pp->crop_width = v->image_size;
    if (next) snprintf(pp->aspect_ratio_setting, sizeof pp->aspect_ratio_setting, "anyres");
    int side = v->image_size / v->patch_size;
    cfg->image_seq_length = side * side;
    cfg->use_image_newline = next;
    snprintf(cfg->projector_hidden_act, sizeof cfg->projector_hidden_act, "gelu");
    snprintf(cfg->feature_select_strategy, sizeof cfg->feature_select_strategy, "default");
    cfg->projector_bias = gguf_find_tensor(g, "mm.0.bias") != NULL;
    const gguf_tensor *b2 = gguf_find_tensor(g, "mm.2.weight");
    if (!b2) return lv_fail(err, LV_ERR_FORMAT, "%s: tensor 'mm.2.weight' is missing", path);
    return LV_OK;
}

static lv_status tokenizer_configs(const gguf *g, const gguf_kv *tokens, const lv_text_config *t,
                                   lv_tokenizer_config *tc, lv_generation_config *gc, lv_err *err) {
    lv_status st;
    bool found;
    if ((st = gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &tc->add_bos_token,
                            &tc->has_add_bos_token, err)) ||
        (st = gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &tc->add_eos_token,
                            &tc->has_add_eos_token, err)))
        return st;
    int unk = -1;
    if ((st = get_opt_int(g, "tokenizer.ggml.unknown_token_id", -1, &unk, err))) return st;
    tc->bos_token = token_dup(tokens, t->bos_id);
    tc->eos_token = token_dup(tokens, t->n_eos ? t->eos_ids[0] : -1);
    tc->unk_token = token_dup(tokens, unk);
    tc->pad_token = token_dup(tokens, t->pad_id);
    const char *s;
    size_t n;
    const char *keys[2] = {"tokenizer.chat_template", "llava.processor_chat_template"};
    char **dst[2] = {&tc->chat_template, &tc->processor_chat_template};
    for (int i = 0; i < 2; i++) {
        if ((st = gguf_get_str(g, keys[i], &s, &n, &found, err))) return st;
        if (!found) continue;
        if (!(*dst[i] = malloc(n + 1))) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
        memcpy(*dst[i], s, n);
        (*dst[i])[n] = 0;
    }
    gc->has_bos_token_id = t->bos_id >= 0;
    gc->bos_token_id = t->bos_id;
    gc->has_eos_token_id = t->n_eos > 0;
    gc->n_eos = t->n_eos;
    gc->eos_token_ids[0] = t->eos_ids[0];
    gc->has_pad_token_id = t->pad_id >= 0;
    gc->pad_token_id = t->pad_id;
    return LV_OK;
}

/* The pair of a SmolVLM model: its vocabulary must have "<image>" (the
 * prompt marks every feature row with it), and the connector must take
 * scale² vision rows into the text width. */
static lv_status idefics3_check(const gguf *text, const gguf *mmproj, const lv_model_config *cfg,
                                lv_err *err) {
    if (cfg->image_token_id < 0)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: tokenizer.ggml.tokens has no \"" GGUF_IMAGE_TOKEN
                       "\" token (a SmolVLM vocabulary has one)",
                       gguf_path(text));
    const gguf_tensor *fc = gguf_find_tensor(mmproj, "mm.model.fc.weight");
    int64_t in = (int64_t)cfg->vision.dim * cfg->scale_factor * cfg->scale_factor;
    if (fc->n_dims != 2 || fc->ne[0] != in || fc->ne[1] != cfg->text.dim)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: mm.model.fc.weight is [%lld, %lld], expected [%lld, %d] (vision dim "
                       "%d x scale_factor² %d, the text width of %s)",
                       gguf_path(mmproj), (long long)fc->ne[0], (long long)fc->ne[1], (long long)in,
                       cfg->text.dim, cfg->vision.dim, cfg->scale_factor * cfg->scale_factor,
                       gguf_path(text));
    return LV_OK;
}

lv_status gguf_model_config(const gguf *text, const gguf *mmproj, lv_model_config *cfg,
                            lv_preproc_config *pp, lv_tokenizer_config *tc,
                            lv_generation_config *gc, lv_err *err) {
    memset(cfg, 0, sizeof *cfg);
    hf_tokcfg_defaults(tc);
    hf_gencfg_defaults(gc);
    const gguf_kv *tokens = NULL;
    lv_status st;
    if ((st = text_config(text, cfg, &tokens, err)) || (st = vision_config(mmproj, cfg, pp, err)) ||
        (st = tokenizer_configs(text, tokens, &cfg->text, tc, gc, err)))
        goto fail;
    cfg->pad_token_id = cfg->text.pad_id;
    cfg->image_token_id = find_token(tokens, GGUF_IMAGE_TOKEN);
    if (hf_is_idefics3(cfg)) {
        st = idefics3_check(text, mmproj, cfg, err);
        if (st) goto fail;
        return LV_OK;
    }
    /* the vocabulary's <image>, else the virtual id one past it */
    if (cfg->image_token_id < 0) cfg->image_token_id = cfg->text.vocab_size;
    const gguf_tensor *w1 = gguf_find_tensor(mmproj, "mm.0.weight");
    if (!w1 || w1->ne[0] != cfg->vision.dim * cfg->n_feature_layers) {
        st = lv_fail(err, LV_ERR_FORMAT, "%s: mm.0.weight is missing or its input is not %d",
                     gguf_path(mmproj), cfg->vision.dim * cfg->n_feature_layers);
        goto fail;
    }
    const gguf_tensor *w2 = gguf_find_tensor(mmproj, "mm.2.weight");
    if (w2->ne[1] != cfg->text.dim) {
        st = lv_fail(err, LV_ERR_FORMAT,
                     "%s: the projector outputs %lld features, the text model (%s) takes %d",
                     gguf_path(mmproj), (long long)w2->ne[1], gguf_path(text), cfg->text.dim);
        goto fail;
    }
    return LV_OK;
fail:
    hf_tokcfg_deinit(tc);
    return st;
}

/* ---- tensors --------------------------------------------------------------- */

static void close_gguf(void *p) {
    gguf_close(p);
}

/* Rows of t in HF order (the converter's q/k permutation undone) into heap
 * memory; drops the source pages. */
static lv_status unpermute(const gguf_tensor *t, int n_heads, void **out, lv_err *err,
                           const char *path) {
    /* a bias (1-D) is permuted element by element */
    int64_t rows = t->n_dims == 1 ? t->ne[0] : t->ne[1] * t->ne[2] * t->ne[3];
    if (n_heads <= 0 || rows % n_heads || (rows / n_heads) % 2)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: tensor '%s': %lld rows cannot be %d heads of an even head_dim", path,
                       t->name, (long long)rows, n_heads);
    size_t row_bytes = t->nbytes / (size_t)rows;
    int64_t d = rows / n_heads, half = d / 2;
    uint8_t *dst = malloc(t->nbytes ? t->nbytes : 1);
    if (!dst) return lv_fail(err, LV_ERR_NOMEM, "%s: out of memory for '%s'", path, t->name);
    const uint8_t *src = t->data;
    for (int64_t h = 0; h < n_heads; h++)
        for (int64_t tt = 0; tt < 2; tt++)
            for (int64_t i = 0; i < half; i++)
                memcpy(dst + (size_t)(h * d + tt * half + i) * row_bytes,
                       src + (size_t)(h * d + 2 * i + tt) * row_bytes, row_bytes);
    /* the mapping's pages of this tensor are not needed again */
    long page = sysconf(_SC_PAGESIZE);
    if (page > 0) {
        uintptr_t a = ((uintptr_t)src + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
        uintptr_t e = ((uintptr_t)src + t->nbytes) & ~((uintptr_t)page - 1);
        if (e > a) (void)madvise((void *)a, e - a, MADV_DONTNEED);
    }
    *out = dst;
    return LV_OK;
}

/* Whether block n of an mmproj names its MLP the legacy way (ffn_down = fc1):
 * clip.cpp's test, ffn_down's input (ne0) is the embedding width. */
static bool legacy_mlp(const gguf *g, int n, int vision_dim) {
    char name[GGUF_MAX_NAME];
    snprintf(name, sizeof name, "v.blk.%d.ffn_down.weight", n);
    const gguf_tensor *down = gguf_find_tensor(g, name);
    return down && down->ne[0] == vision_dim;
}

static lv_status add_file(st_set *s, const gguf *g, bool mmproj, int n_heads, int n_kv_heads,
                          int vision_dim, lv_err *err) {
    const char *path = gguf_path(g);
    for (size_t i = 0; i < gguf_tensor_count(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        char canon[160];
        gn_file file = mmproj ? GN_MMPROJ : GN_TEXT;
        int n;
        const gguf_name *e = gguf_name_find(t->name, file, false, canon, sizeof canon, &n);
        if (e && (e->flags & GN_MLP) && legacy_mlp(g, n, vision_dim))
            e = gguf_name_find(t->name, file, true, canon, sizeof canon, &n);
        if (!e) continue;
        lv_dtype dt;
        if (!gguf_model_dtype(t->type, &dt))
            return lv_fail(err, LV_ERR_UNSUPPORTED,
                           "%s: tensor '%s': ggml type %u (%s) is not supported (F32, F16, BF16, "
                           "Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K are)",
                           path, t->name, t->type, ggml_type_name(t->type));
        int64_t shape[GGUF_MAX_DIMS];
        for (int d = 0; d < t->n_dims; d++) shape[d] = t->ne[t->n_dims - 1 - d];
        int heads = e->flags & GN_PERM_Q ? n_heads : e->flags & GN_PERM_K ? n_kv_heads : 0;
        void *owned = NULL;
        lv_status st;
        if (heads && (st = unpermute(t, heads, &owned, err, path))) return st;
        if ((st = st_set_add(s, canon, path, dt, t->n_dims, shape, owned ? owned : t->data, owned,
                             err)))
            return st;
    }
    return LV_OK;
}

lv_status gguf_model_weights(const char *text_path, const char *mmproj_path, st_set **out,
                             lv_err *err) {
    *out = NULL;
    st_set *s = NULL;
    gguf *text = NULL, *mm = NULL;
    lv_status st;
    if ((st = st_set_new(&s, err))) return st;
    if ((st = gguf_open(text_path, &text, err)) || (st = st_set_own(s, text, close_gguf, err)) ||
        (st = gguf_open(mmproj_path, &mm, err)) || (st = st_set_own(s, mm, close_gguf, err)))
        goto fail;
    int64_t heads, kv_heads, vdim;
    bool found;
    if ((st = gguf_get_int(text, "llama.attention.head_count", &heads, NULL, err)) ||
        (st = gguf_get_int(text, "llama.attention.head_count_kv", &kv_heads, &found, err)))
        goto fail;
    if (!found) kv_heads = heads;
    if ((st = gguf_get_int(mm, "clip.vision.embedding_length", &vdim, NULL, err))) goto fail;
    if (heads <= 0 || heads > 65536 || kv_heads <= 0 || kv_heads > 65536) {
        st = lv_fail(err, LV_ERR_FORMAT, "%s: head counts %lld / %lld", text_path, (long long)heads,
                     (long long)kv_heads);
        goto fail;
    }
    if ((st = add_file(s, text, false, (int)heads, (int)kv_heads, 0, err)) ||
        (st = add_file(s, mm, true, 0, 0, (int)vdim, err)))
        goto fail;
    *out = s;
    return LV_OK;
fail:
    st_close(s);
    return st;
}
