/*
 * clip.h - the ViT vision tower, run over image tiles: LLaVA's CLIP, and the
 * SigLIP tower of Idefics3 / SmolVLM, which differ only in a few flags.
 *
 * CLIP: transformers models/clip/modeling_clip.py (CLIPVisionEmbeddings,
 * CLIPEncoderLayer, CLIPVisionTransformer) with LLaVA's use of it
 * (models/llava_next/modeling_llava_next.py get_image_features): the output
 * is hidden_states[vision_feature_layer], so only the layers up to it run and
 * post_layernorm never does (spec llava-next.md §4).
 *
 * SigLIP: models/idefics3/modeling_idefics3.py (Idefics3VisionEmbeddings,
 * Idefics3EncoderLayer, Idefics3VisionTransformer; models/smolvlm/
 * modeling_smolvlm.py is the same): no CLS row, no pre-LayerNorm, the patch
 * conv has a bias and is "valid" (only the top-left side·patch pixels of a
 * tile are read: 384 / 14 → 27 patches), MLP activation gelu_pytorch_tanh,
 * every layer runs and post_layernorm follows (clip_post_ln; spec
 * smolvlm.md §5). Every frame is full, so position ids are the identity.
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

/* The MLP activation (vision_config.hidden_act). */
typedef enum {
    CLIP_ACT_QUICK_GELU, /* "quick_gelu": x·σ(1.702·x) (CLIP) */
    CLIP_ACT_GELU,       /* "gelu": exact erf GELU */
    CLIP_ACT_GELU_TANH,  /* "gelu_pytorch_tanh": the tanh approximation (SigLIP) */
} clip_act;

typedef struct {
    be *b;                 /* backend (borrowed) */
    const clip_weights *w; /* borrowed */
    int dim;               /* hidden_size */
    int hidden_dim;        /* intermediate_size */
    int n_heads, head_dim; /* attention heads, dim / n_heads */
    int image_size;        /* tile side in pixels */
    int patch_size;        /* conv kernel and stride */
    int side;              /* patches per tile side: image_size / patch_size (rounded down) */
    int n_pos;             /* positions per tile: side², + 1 with a CLS row */
    int n_layers;          /* encoder layers run (w->n_layers) */
    float eps;             /* layer_norm_eps */
    bool has_cls;          /* CLIP: row 0 is the class embedding */
    bool pre_ln;           /* CLIP: pre_layrnorm after the embeddings */
    bool post_ln;          /* SigLIP: post_layernorm on the output (clip_post_ln) */
    clip_act act;          /* MLP activation */
} clip;

/* Sets c up for cfg's vision tower with loaded weights (the flags follow
 * the weights: a class embedding, pre/post norms). LV_ERR_UNSUPPORTED for an
 * MLP activation other than quick_gelu / gelu / gelu_pytorch_tanh or
 * channels != 3. */
lv_status clip_init(clip *c, be *b, const lv_model_config *cfg, const clip_weights *w, lv_err *err);

/* Rows clip_encode writes for n_tiles tiles: n_tiles · n_pos. */
static inline int clip_out_rows(const clip *c, int n_tiles) {
    return n_tiles * c->n_pos;
}

/*
 * Encodes n_tiles tiles of host pixels (n_tiles, 3, image_size, image_size)
 * float32 into out, a backend buffer of (n_tiles · n_pos, dim): for each
 * tile its n_pos hidden states after c->n_layers layers, CLS first (if any),
 * then the patches in raster order; post_layernorm is NOT applied here
 * (clip_post_ln). Scratch is allocated per call and released
 * before returning. Errors: LV_ERR_NOMEM. The same as running the stages
 * below over every tile with all rows at once.
 */
lv_status clip_encode(const clip *c, const float *pixels, int n_tiles, float *out, lv_err *err);

/* ---- one tile in stages, a few rows at a time ----------------------------------------
 *
 * A tile's encode is a sequence of stages, each a row-wise pass over the
 * tile's n_pos rows that may be cut into row ranges run at different times
 * (the scheduler interleaves them with decode steps):
 *   CLIP_EMBED          patch conv (im2col rows + matmul, + bias for SigLIP),
 *                       + class/position embedding, pre_layrnorm (CLIP)
 *   CLIP_ATTN_IN  (l)   layer l: layer_norm1, q, k, v of the rows
 *   CLIP_ATTN_OUT (l)   layer l: attention of the rows' queries over all the
 *                       tile's keys, out_proj + residual, layer_norm2, MLP +
 *                       residual
 * ATTN_IN of layer l must be complete for every row before its ATTN_OUT
 * starts (attention reads every key). Every op computes a row the same
 * whatever the other rows (backend.h), so any cut gives the bits of one pass.
 */
typedef enum { CLIP_EMBED = 0, CLIP_ATTN_IN, CLIP_ATTN_OUT } clip_stage;

/* Scratch for one tile: (n_pos, ·) backend buffers. */
typedef struct {
    float *h, *q, *k, *v, *att; /* (n_pos, dim) */
    float *ff;                  /* (n_pos, max(hidden_dim, 3·patch²)); im2col rows too */
    float *patches;             /* host (n_pos, 3·patch²) im2col staging */
} clip_tile_scratch;

lv_status clip_tile_scratch_init(const clip *c, clip_tile_scratch *s, lv_err *err);
void clip_tile_scratch_free(const clip *c, clip_tile_scratch *s); /* zeroed: no-op */

/* Runs rows [r0, r0 + n) of stage st (layer l for the ATTN stages) of one
 * tile: pixels is the tile's host pixels (3, image_size, image_size), x its
 * (n_pos, dim) hidden states (a backend buffer; written by CLIP_EMBED). */
void clip_tile_stage(const clip *c, clip_stage st, int l, const float *pixels, float *x,
                     clip_tile_scratch *s, int r0, int n);

/* post_layernorm in place on rows [r0, r0 + n) of a tile's x (SigLIP's
 * last_hidden_state); a no-op without one (c->post_ln false). */
void clip_post_ln(const clip *c, float *x, int r0, int n);

#endif
