/*
 * clip.h - the CLIP ViT vision tower of LLaVA, run over image tiles.
 *
 * transformers models/clip/modeling_clip.py (CLIPVisionEmbeddings,
 * CLIPEncoderLayer, CLIPVisionTransformer) with LLaVA's use of it
 * (models/llava_next/modeling_llava_next.py get_image_features): the output
 * is hidden_states[vision_feature_layer], so only the layers up to it run and
 * post_layernorm never does (spec llava-next.md §4).
 *
 * Usage:
 *     clip c;
 *     clip_init(&c, b, &cfg, &weights);             // borrows b and weights
 *     float *out = be alloc(clip_out_rows(&c, n_tiles) * c.dim floats);
 *     clip_encode(&c, pixels, n_tiles, out, &err);  // (n_tiles·n_pos, dim), CLS row first
 */
#ifndef LV_MODEL_CLIP_H
#define LV_MODEL_CLIP_H

#include "backend/backend.h"
#include "base/common.h"
#include "io/hf_config.h"
#include "model/weights.h"

#include <stdbool.h>

typedef struct {
    be *b;                 /* backend (borrowed) */
    const clip_weights *w; /* borrowed */
    int dim;               /* hidden_size */
    int hidden_dim;        /* intermediate_size */
    int n_heads, head_dim; /* attention heads, dim / n_heads */
    int image_size;        /* tile side in pixels */
    int patch_size;        /* conv kernel and stride */
    int side;              /* patches per tile side: image_size / patch_size */
    int n_pos;             /* positions per tile: 1 (CLS) + side² */
    int n_layers;          /* encoder layers run (w->n_layers) */
    float eps;             /* layer_norm_eps */
    bool quick_gelu;       /* MLP activation: quick_gelu (CLIP) or exact gelu */
} clip;

/* Sets c up for cfg's vision tower with loaded weights. LV_ERR_UNSUPPORTED
 * for an MLP activation other than quick_gelu / gelu or channels != 3. */
lv_status clip_init(clip *c, be *b, const lv_model_config *cfg, const clip_weights *w, lv_err *err);

/* Rows clip_encode writes for n_tiles tiles: n_tiles · n_pos. */
static inline int clip_out_rows(const clip *c, int n_tiles) {
    return n_tiles * c->n_pos;
}

/*
 * Encodes n_tiles tiles of host pixels (n_tiles, 3, image_size, image_size)
 * float32 into out, a backend buffer of (n_tiles · n_pos, dim): for each
 * tile its n_pos hidden states after c->n_layers layers, CLS first, then the
 * patches in raster order. Scratch is allocated per call and released
 * before returning. Errors: LV_ERR_NOMEM.
 */
lv_status clip_encode(const clip *c, const float *pixels, int n_tiles, float *out, lv_err *err);

#endif
