/*
 * projector.h - LLaVA's multi-modal projector: vision features into the
 * language model's embedding space, token by token.
 *
 * transformers models/llava_next/modeling_llava_next.py
 * (LlavaNextMultiModalProjector; LlavaMultiModalProjector is the same):
 *     y = linear_2(gelu(linear_1(x)))
 * with the exact erf GELU (ACT2FN["gelu"]) and biases when
 * multimodal_projector_bias (spec llava-next.md §4.4).
 */
#ifndef LV_MODEL_PROJECTOR_H
#define LV_MODEL_PROJECTOR_H

#include "backend/backend.h"
#include "base/common.h"
#include "io/hf_config.h"
#include "model/weights.h"

typedef struct {
    be *b;                      /* backend (borrowed) */
    const projector_weights *w; /* borrowed */
    int in_dim, out_dim;        /* vision hidden, text hidden */
} projector;

/* LV_ERR_UNSUPPORTED for a projector_hidden_act other than "gelu". */
lv_status projector_init(projector *p, be *b, const lv_model_config *cfg,
                         const projector_weights *w, lv_err *err);

/* y (n, out_dim) = linear_2(gelu(linear_1(x (n, in_dim)))), backend buffers.
 * tmp is scratch of (n, out_dim); y, tmp and x are distinct. Cannot fail. */
void projector_forward(const projector *p, float *y, const float *x, float *tmp, int n);

#endif
