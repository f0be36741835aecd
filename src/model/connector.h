/*
 * connector.h - the Idefics3 / SmolVLM connector: a frame's vision features
 * into the language model's embedding space.
 *
 * transformers models/idefics3/modeling_idefics3.py (Idefics3Connector:
 * pixel_shuffle, then Idefics3SimpleMLP modality_projection = nn.Linear(
 * vision dim·s², text dim, bias=False), no activation; SmolVLMConnector in
 * models/smolvlm/modeling_smolvlm.py is the same). The pixel shuffle's view /
 * permute / reshape sequence is, in closed form (spec smolvlm.md §6), with Q
 * patches per side, s = scale_factor, G = Q / s, D = vision dim:
 *     out[t = i2·G + j2][c = (dh·s + dw)·D + e] = in[(i2·s + dh)·Q + (j2·s + dw)][e]
 * so output row t gathers s runs of s·D contiguous input values (one per dh),
 * and the G output rows of grid row i2 ("band" i2) read only input rows
 * [i2·s·Q, (i2 + 1)·s·Q): a frame can be connected band by band as its rows
 * come out of the tower.
 *
 * Usage:
 *     connector cn;
 *     connector_init(&cn, b, &cfg, &weights, &err);
 *     connector_bands(&cn, y, x, tmp, 0, cn.grid);   // a whole frame: G² rows of y
 */
#ifndef LV_MODEL_CONNECTOR_H
#define LV_MODEL_CONNECTOR_H

#include "backend/backend.h"
#include "base/common.h"
#include "io/hf_config.h"
#include "model/weights.h"

typedef struct {
    be *b;                      /* backend (borrowed) */
    const connector_weights *w; /* borrowed */
    int side;                   /* Q: patches per frame side */
    int scale;                  /* s: scale_factor */
    int grid;                   /* G = Q / s: output rows per band, and bands per frame */
    int in_dim;                 /* D: vision hidden */
    int out_dim;                /* text hidden */
} connector;

/* LV_ERR_FORMAT when scale_factor does not divide the patches per side. */
lv_status connector_init(connector *cn, be *b, const lv_model_config *cfg,
                         const connector_weights *w, lv_err *err);

/* Rows of one frame's output: G² (image_seq_length). */
static inline int connector_rows(const connector *cn) {
    return cn->grid * cn->grid;
}

/*
 * The pixel shuffle of bands [band0, band0 + n_bands) of one frame: from x,
 * the frame's (Q², D) features (a backend buffer), into tmp, (n_bands·G,
 * D·s²) rows (buffer copies only, so exact). Row k of tmp is output row
 * band0·G + k.
 */
void connector_shuffle(const connector *cn, float *tmp, const float *x, int band0, int n_bands);

/* The connector over bands [band0, band0 + n_bands) of one frame:
 * connector_shuffle into tmp (n_bands·G·D·s² floats of scratch), then the
 * linear into y, (n_bands·G, text dim) rows: output rows band0·G.. of the
 * frame. y, tmp and x are distinct backend buffers. Cannot fail. */
void connector_bands(const connector *cn, float *y, const float *x, float *tmp, int band0,
                     int n_bands);

#endif
