/*
 * weights.h - the tensors of a LLaVA checkpoint, prepared for one backend.
 *
 * Three groups, one struct each, loaded from an st_set (io/safetensors.h) by
 * their canonical (transformers 4.4x llava-hf) names:
 *
 *   vision_tower.vision_model.                       CLIP ViT (clip_weights)
 *     embeddings.patch_embedding.weight              (dim, 3, p, p)   conv, no bias
 *     embeddings.class_embedding                     (dim)
 *     embeddings.position_embedding.weight           (1 + (image/p)², dim)
 *     pre_layrnorm.{weight,bias}                     (dim)            [sic]
 *     encoder.layers.N.layer_norm{1,2}.{weight,bias} (dim)
 *     encoder.layers.N.self_attn.{q,k,v,out}_proj.{weight,bias}   (dim, dim), (dim)
 *     encoder.layers.N.mlp.fc1.{weight,bias}         (hidden, dim), (hidden)
 *     encoder.layers.N.mlp.fc2.{weight,bias}         (dim, hidden), (dim)
 *     post_layernorm.*                               never used (spec llava-next.md §4.3)
 *   multi_modal_projector.linear_{1,2}.{weight,bias} (text dim, vision dim), (text dim, text dim)
 *
 * Idefics3 / SmolVLM (hf_is_idefics3; shared/spec/smolvlm.md §1.3, names
 * mapped by io/tensor_names.c) have a SigLIP tower under the same prefix:
 * the patch conv has a bias (embeddings.patch_embedding.bias (dim)), there
 * is no class_embedding and no pre_layrnorm, position_embedding has side²
 * rows (side = image_size / patch, rounded down: the conv is "valid"),
 * post_layernorm.{weight,bias} is applied and every layer runs; and a
 * connector instead of the projector:
 *   connector.modality_projection.proj.weight      (text dim, vision dim·scale_factor²), no bias
 *   image_newline                                    (text dim)      llava_next only
 *   language_model.                                  Mistral / Llama (llm_weights)
 *     model.embed_tokens.weight                      (vocab, dim)
 *     model.layers.N.input_layernorm.weight          (dim)
 *     model.layers.N.self_attn.{q,k,v,o}_proj.weight (n_heads·head_dim, dim), (kv_dim, dim) ×2,
 *                                                    (dim, n_heads·head_dim)
 *     model.layers.N.post_attention_layernorm.weight (dim)
 *     model.layers.N.mlp.{gate,up,down}_proj.weight  (hidden, dim) ×2, (dim, hidden)
 *     model.norm.weight                              (dim)
 *     lm_head.weight                                 (vocab, dim); absent when tied
 *
 * Element types F16, BF16 and F32 are accepted, any mix, and two quantized
 * layouts for matrices (backend/quant.h):
 *   - MLX affine (mlx-community checkpoints, formats.md §3): module P is
 *     quantized iff "P.scales" exists; P.weight is then U32 (rows,
 *     cols·bits/32) with P.scales and P.biases (rows, cols/group), bits and
 *     group from config.json's quantization block (per-module overrides
 *     first). Any Linear may be quantized, and embed_tokens; the vision
 *     position_embedding too (dequantised at load). The patch conv may be
 *     stored OHWI [dim, p, p, 3] (mlx-vlm) instead of OIHW: transposed at load.
 *   - ggml blocks (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K; an st_set filled from
 *     a GGUF file), shape [rows, cols].
 * Matrices stay where
 * the backend wants them (the CPU backend borrows the mmapped bytes, so the
 * st_set must outlive the weights); vectors become float32 backend buffers.
 * Only the CLIP layers the selected feature layer needs are loaded.
 */
#ifndef LV_MODEL_WEIGHTS_H
#define LV_MODEL_WEIGHTS_H

#include "backend/backend.h"
#include "base/common.h"
#include "io/hf_config.h"
#include "io/safetensors.h"

#include <stdbool.h>

/* One CLIP encoder layer. */
typedef struct {
    float *ln1_g, *ln1_b;     /* layer_norm1 (dim) */
    be_weight wq, wk, wv, wo; /* (dim, dim) */
    float *bq, *bk, *bv, *bo; /* (dim) */
    float *ln2_g, *ln2_b;     /* layer_norm2 (dim) */
    be_weight fc1, fc2;       /* (hidden, dim), (dim, hidden) */
    float *fc1_b, *fc2_b;     /* (hidden), (dim) */
} clip_layer_weights;

typedef struct {
    be_weight patch;            /* patch_embedding as a matrix (dim, 3·p·p), (c, ky, kx) order */
    float *patch_b;             /* its bias (dim): SigLIP only, else NULL */
    float *cls_pos;             /* (n_pos, dim): CLIP: row 0 = class_embedding + pos[0], row i =
                                   pos[i]; SigLIP (no CLS): row i = pos[i], side² rows */
    float *pre_ln_g, *pre_ln_b; /* pre_layrnorm (dim); NULL for SigLIP */
    float *post_ln_g, *post_ln_b; /* post_layernorm (dim): SigLIP only, else NULL */
    bool has_cls;                 /* CLIP: a class_embedding row first */
    int n_layers;                 /* layers loaded (= run): those the feature layer needs */
    clip_layer_weights *layers;
} clip_weights;

typedef struct {
    be_weight w1, w2; /* linear_1 (text dim, vision dim), linear_2 (text dim, text dim) */
    float *b1, *b2;   /* (text dim); NULL without multimodal_projector_bias */
} projector_weights;

/* The Idefics3 / SmolVLM connector's linear (after the pixel shuffle). */
typedef struct {
    be_weight proj; /* modality_projection.proj (text dim, vision dim·scale²), no bias */
} connector_weights;

/* One decoder layer. Biases exist only for Llama configs that ask for them. */
typedef struct {
    float *attn_norm;               /* input_layernorm (dim) */
    be_weight wq, wk, wv, wo;       /* (q_dim, dim), (kv_dim, dim) ×2, (dim, q_dim) */
    float *bq, *bk, *bv, *bo;       /* attention_bias only; else NULL */
    float *ffn_norm;                /* post_attention_layernorm (dim) */
    be_weight w_gate, w_up, w_down; /* (hidden, dim) ×2, (dim, hidden) */
    float *b_gate, *b_up, *b_down;  /* mlp_bias only; else NULL */
} llm_layer_weights;

typedef struct {
    be_weight embed; /* embed_tokens (vocab, dim) */
    int n_layers;
    llm_layer_weights *layers;
    float *norm;       /* final RMSNorm (dim) */
    be_weight lm_head; /* (vocab, dim); a copy of embed's descriptor when tied */
    bool tied;         /* lm_head is embed (tie_word_embeddings): freed once */
} llm_weights;

/* Told of every tensor a loader has taken (for llava_load's progress and
 * its summary of parameters and types): w is the matrix as the checkpoint
 * stores it (dtype, shape, MLX bits and group), NULL for a vector; bytes
 * what the file holds of it, params its values. */
typedef struct {
    void (*on_tensor)(void *ud, const be_weight *w, size_t bytes, int64_t params);
    void *ud;
} weights_progress;

/* How many CLIP layers must run for the config's feature layer:
 * hidden_states[k] is the output of k layers (k = 0: pre_layrnorm's output),
 * and a negative index counts from the end (-1 = all layers). Idefics3 /
 * SmolVLM: all layers (last_hidden_state, then post_layernorm). */
int clip_layers_needed(const lv_model_config *cfg);

/*
 * Loaders. Each checks every tensor against the config: presence, shape and
 * dtype, with messages naming the tensor and giving expected vs actual
 * ("tensor 'x': expected shape [96, 64], got [96, 65]"). Errors:
 * LV_ERR_FORMAT (missing or mis-shaped tensor, inconsistent quantization
 * tensors), LV_ERR_UNSUPPORTED (an unknown dtype, a quantization mode other
 * than affine, several feature layers), LV_ERR_NOMEM.
 * On failure nothing is held (*w is zeroed). Release with the _free
 * function (a zeroed struct is a no-op). progress (may be NULL) is told of
 * each tensor as it is taken.
 */
lv_status clip_weights_load(be *b, const st_set *st, const lv_model_config *cfg,
                            const weights_progress *progress, clip_weights *w, lv_err *err);
void clip_weights_free(be *b, clip_weights *w);

lv_status projector_weights_load(be *b, const st_set *st, const lv_model_config *cfg,
                                 const weights_progress *progress, projector_weights *w,
                                 lv_err *err);
void projector_weights_free(be *b, projector_weights *w);

/* The connector of an Idefics3 / SmolVLM checkpoint (hf_is_idefics3). */
lv_status connector_weights_load(be *b, const st_set *st, const lv_model_config *cfg,
                                 const weights_progress *progress, connector_weights *w,
                                 lv_err *err);
void connector_weights_free(be *b, connector_weights *w);

lv_status llm_weights_load(be *b, const st_set *st, const lv_model_config *cfg,
                           const weights_progress *progress, llm_weights *w, lv_err *err);
void llm_weights_free(be *b, llm_weights *w);

/* A 1-D float vector of n values from the tensor `name` (any accepted dtype),
 * converted on the host into out (caller-owned, n floats). Used for
 * parameters the model applies on the host (image_newline). */
lv_status weights_read_vector(const st_set *st, const char *name, int n, float *out, lv_err *err);

#endif
