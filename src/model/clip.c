/*
 * clip.c - CLIP ViT forward over tiles (see clip.h).
 *
 * A tile goes through the tower in stages (clip.h), each a row-wise pass
 * that may run a few rows at a time; attention runs per tile (tiles never
 * see each other). Reference: transformers models/clip/modeling_clip.py.
 */
#include "model/clip.h"

#include <stdlib.h>
#include <string.h>

lv_status clip_init(clip *c, be *b, const lv_model_config *cfg, const clip_weights *w,
                    lv_err *err) {
    const lv_vision_config *v = &cfg->vision;
    memset(c, 0, sizeof *c);
    if (v->n_channels != 3)
        return lv_fail(err, LV_ERR_UNSUPPORTED, "vision_config.num_channels %d: only 3 (RGB)",
                       v->n_channels);
    clip_act act;
    if (strcmp(v->hidden_act, "quick_gelu") == 0)
        act = CLIP_ACT_QUICK_GELU;
    else if (strcmp(v->hidden_act, "gelu") == 0)
        act = CLIP_ACT_GELU;
    else if (strcmp(v->hidden_act, "gelu_pytorch_tanh") == 0)
        act = CLIP_ACT_GELU_TANH;
    else
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "vision_config.hidden_act \"%s\" is not supported (quick_gelu, gelu or "
                       "gelu_pytorch_tanh)",
                       v->hidden_act);
    if (v->patch_size < 1 || v->image_size < v->patch_size)
        return lv_fail(err, LV_ERR_FORMAT, "vision_config: image_size %d, patch_size %d",
                       v->image_size, v->patch_size);
    *c = (clip){.b = b,
                .w = w,
                .dim = v->dim,
                .hidden_dim = v->hidden_dim,
                .n_heads = v->n_heads,
                .head_dim = v->dim / v->n_heads,
                .image_size = v->image_size,
                .patch_size = v->patch_size,
                .side = v->image_size / v->patch_size,
                .n_layers = w->n_layers,
                .eps = (float)v->ln_eps,
                .has_cls = w->has_cls,
                .pre_ln = w->pre_ln_g != NULL,
                .post_ln = w->post_ln_g != NULL,
                .act = act};
    c->n_pos = (c->has_cls ? 1 : 0) + c->side * c->side;
    return LV_OK;
}

/*
 * im2col for the patch conv (Conv2d(3, dim, kernel p, stride p), bias=False
 * for CLIP, True for SigLIP; padding "valid": pixels past side·p are never
 * read): rows [r0, r0 + n) of one tile, row first + (py·side + px) holding
 * patch (py, px) flattened in (c, ky, kx) order, the conv weight's layout.
 * With a CLS row (first = 1) row 0 is zero, so the matmul leaves it 0 and
 * adding cls_pos puts class_embedding + pos[0] there.
 */
static void im2col(const clip *c, const float *px, int r0, int n, float *out) {
    int p = c->patch_size, S = c->image_size, cols = 3 * p * p, first = c->has_cls ? 1 : 0;
    for (int r = r0; r < r0 + n; r++) {
        float *row = out + (size_t)(r - r0) * cols;
        if (r < first) {
            memset(row, 0, (size_t)cols * sizeof *out);
            continue;
        }
        int py = (r - first) / c->side, pxi = (r - first) % c->side;
        for (int ch = 0; ch < 3; ch++)
            for (int ky = 0; ky < p; ky++) {
                const float *src = px + ((size_t)ch * S + (size_t)py * p + ky) * S + pxi * p;
                memcpy(row + (ch * p + ky) * p, src, (size_t)p * sizeof *src);
            }
    }
}

void clip_tile_scratch_free(const clip *c, clip_tile_scratch *s) {
    be *b = c->b;
    float *all[] = {s->h, s->q, s->k, s->v, s->att, s->ff};
    for (size_t i = 0; i < LV_ARRAY_LEN(all); i++) b->ops->release(b, all[i]);
    free(s->patches);
    memset(s, 0, sizeof *s);
}

lv_status clip_tile_scratch_init(const clip *c, clip_tile_scratch *s, lv_err *err) {
    be *b = c->b;
    int rows = c->n_pos, cols = 3 * c->patch_size * c->patch_size;
    size_t d = (size_t)rows * c->dim * sizeof(float);
    int ff_cols = c->hidden_dim > cols ? c->hidden_dim : cols;
    memset(s, 0, sizeof *s);
    s->h = b->ops->alloc(b, d);
    s->q = b->ops->alloc(b, d);
    s->k = b->ops->alloc(b, d);
    s->v = b->ops->alloc(b, d);
    s->att = b->ops->alloc(b, d);
    s->ff = b->ops->alloc(b, (size_t)rows * ff_cols * sizeof(float));
    s->patches = malloc((size_t)rows * cols * sizeof *s->patches);
    if (s->h && s->q && s->k && s->v && s->att && s->ff && s->patches) return LV_OK;
    clip_tile_scratch_free(c, s);
    return lv_fail(err, LV_ERR_NOMEM, "out of memory for the vision tower (%d positions)", rows);
}

/* embeddings = cat(class_embedding, patch_embedding(pixels)) + position_embedding,
 * then pre_layrnorm (hidden_states[0]), for rows [r0, r0 + n). SigLIP:
 * patch_embedding(pixels) (with its bias) + position_embedding, position
 * ids the identity for a full frame (smolvlm.md §5.2). The CLS row's bias
 * is never added: a CLIP conv has none. */
static void embed_rows(const clip *c, const float *pixels, float *x, clip_tile_scratch *s, int r0,
                       int n) {
    be *b = c->b;
    const struct be_ops *op = b->ops;
    int cols = 3 * c->patch_size * c->patch_size;
    float *xr = x + (size_t)r0 * c->dim;
    /* patch_embedding: the stride-p conv as im2col + matmul (+ bias) */
    im2col(c, pixels, r0, n, s->patches);
    op->upload(b, s->ff, s->patches, (size_t)n * cols * sizeof *s->patches);
    op->matmul(b, xr, s->ff, &c->w->patch, c->w->patch_b, n);
    op->add(b, xr, c->w->cls_pos + (size_t)r0 * c->dim, (size_t)n * c->dim);
    if (c->pre_ln) op->layernorm(b, xr, xr, c->w->pre_ln_g, c->w->pre_ln_b, n, c->dim, c->eps);
}

/* CLIPEncoderLayer (pre-norm), first half for rows [r0, r0 + n):
 * h = layer_norm1(x); q, k, v = h·Wᵀ + b (CLIPAttention q_proj, k_proj, v_proj). */
static void attn_in(const clip *c, const clip_layer_weights *l, const float *x,
                    clip_tile_scratch *s, int r0, int n) {
    be *b = c->b;
    const struct be_ops *op = b->ops;
    size_t at = (size_t)r0 * c->dim;
    op->layernorm(b, s->h + at, x + at, l->ln1_g, l->ln1_b, n, c->dim, c->eps);
    op->matmul(b, s->q + at, s->h + at, &l->wq, l->bq, n);
    op->matmul(b, s->k + at, s->h + at, &l->wk, l->bk, n);
    op->matmul(b, s->v + at, s->h + at, &l->wv, l->bv, n);
}

/* The second half for rows [r0, r0 + n), in place on x: softmax(q·kᵀ·head_dim^-0.5)·v
 * over all the tile's keys (no mask); x = x + out_proj(att); x = x +
 * fc2(act(fc1(layer_norm2(x)))) (CLIPMLP). */
static void attn_out(const clip *c, const clip_layer_weights *l, float *x, clip_tile_scratch *s,
                     int r0, int n) {
    be *b = c->b;
    const struct be_ops *op = b->ops;
    size_t at = (size_t)r0 * c->dim, nd = (size_t)n * c->dim;
    float *xr = x + at, *h = s->h + at, *att = s->att + at;
    op->attention(b, att, s->q + at, s->k, s->v, BE_F32, n, 0, c->n_pos, c->n_heads, c->n_heads,
                  c->head_dim, false);
    op->matmul(b, h, att, &l->wo, l->bo, n);
    op->add(b, xr, h, nd);
    op->layernorm(b, h, xr, l->ln2_g, l->ln2_b, n, c->dim, c->eps);
    op->matmul(b, s->ff, h, &l->fc1, l->fc1_b, n);
    size_t nh = (size_t)n * c->hidden_dim;
    if (c->act == CLIP_ACT_QUICK_GELU)
        op->quick_gelu(b, s->ff, nh);
    else if (c->act == CLIP_ACT_GELU)
        op->gelu(b, s->ff, nh);
    else
        op->gelu_tanh(b, s->ff, nh);
    op->matmul(b, h, s->ff, &l->fc2, l->fc2_b, n);
    op->add(b, xr, h, nd);
}

void clip_tile_stage(const clip *c, clip_stage st, int l, const float *pixels, float *x,
                     clip_tile_scratch *s, int r0, int n) {
    if (st == CLIP_EMBED)
        embed_rows(c, pixels, x, s, r0, n);
    else if (st == CLIP_ATTN_IN)
        attn_in(c, &c->w->layers[l], x, s, r0, n);
    else
        attn_out(c, &c->w->layers[l], x, s, r0, n);
}

void clip_post_ln(const clip *c, float *x, int r0, int n) {
    if (!c->post_ln) return;
    float *xr = x + (size_t)r0 * c->dim;
    c->b->ops->layernorm(c->b, xr, xr, c->w->post_ln_g, c->w->post_ln_b, n, c->dim, c->eps);
}

lv_status clip_encode(const clip *c, const float *pixels, int n_tiles, float *out, lv_err *err) {
    clip_tile_scratch s;
    lv_status st = clip_tile_scratch_init(c, &s, err);
    if (st) return st;
    size_t tile_px = (size_t)3 * c->image_size * c->image_size;
    for (int t = 0; t < n_tiles; t++) {
        const float *px = pixels + (size_t)t * tile_px;
        float *x = out + (size_t)t * c->n_pos * c->dim;
        clip_tile_stage(c, CLIP_EMBED, 0, px, x, &s, 0, c->n_pos);
        /* encoder layers 0 .. n_layers-1: hidden_states[n_layers] */
        for (int l = 0; l < c->n_layers; l++) {
            clip_tile_stage(c, CLIP_ATTN_IN, l, px, x, &s, 0, c->n_pos);
            clip_tile_stage(c, CLIP_ATTN_OUT, l, px, x, &s, 0, c->n_pos);
        }
    }
    clip_tile_scratch_free(c, &s);
    return LV_OK;
}
