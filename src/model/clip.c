/*
 * clip.c - CLIP ViT forward over tiles (see clip.h).
 *
 * All tiles of one image go through the tower together as one batch of
 * n_tiles · n_pos rows: every matmul sees the whole batch, attention runs
 * per tile (tiles never see each other). Reference: transformers
 * models/clip/modeling_clip.py.
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
    bool quick = strcmp(v->hidden_act, "quick_gelu") == 0;
    if (!quick && strcmp(v->hidden_act, "gelu") != 0)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "vision_config.hidden_act \"%s\" is not supported (quick_gelu or gelu)",
                       v->hidden_act);
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
                .quick_gelu = quick};
    c->n_pos = 1 + c->side * c->side;
    return LV_OK;
}

/*
 * im2col for the patch conv (Conv2d(3, dim, kernel p, stride p, bias=False)):
 * row t·n_pos + 1 + (py·side + px) holds patch (py, px) of tile t flattened
 * in (c, ky, kx) order, the conv weight's layout. Row t·n_pos (the CLS slot)
 * is zero, so the matmul leaves it 0 and adding cls_pos puts
 * class_embedding + pos[0] there.
 */
static void im2col(const clip *c, const float *px, int n_tiles, float *out) {
    int p = c->patch_size, S = c->image_size, cols = 3 * p * p;
    for (int t = 0; t < n_tiles; t++) {
        float *tile_rows = out + (size_t)t * c->n_pos * cols;
        memset(tile_rows, 0, (size_t)cols * sizeof *out);
        for (int py = 0; py < c->side; py++)
            for (int pxi = 0; pxi < c->side; pxi++) {
                float *row = tile_rows + (size_t)(1 + py * c->side + pxi) * cols;
                for (int ch = 0; ch < 3; ch++)
                    for (int ky = 0; ky < p; ky++) {
                        const float *src =
                            px + (((size_t)t * 3 + ch) * S + (size_t)py * p + ky) * S + pxi * p;
                        memcpy(row + (ch * p + ky) * p, src, (size_t)p * sizeof *src);
                    }
            }
    }
}

/* Scratch for one clip_encode call, all (rows, ·) backend buffers. */
typedef struct {
    float *h, *q, *k, *v, *att; /* (rows, dim) */
    float *ff;                  /* (rows, hidden_dim); also holds the im2col patches */
} clip_scratch;

static void scratch_free(be *b, clip_scratch *s) {
    float *all[] = {s->h, s->q, s->k, s->v, s->att, s->ff};
    for (size_t i = 0; i < LV_ARRAY_LEN(all); i++) b->ops->release(b, all[i]);
    memset(s, 0, sizeof *s);
}

static lv_status scratch_alloc(const clip *c, int rows, clip_scratch *s, lv_err *err) {
    be *b = c->b;
    size_t d = (size_t)rows * c->dim * sizeof(float);
    int ff_cols = c->hidden_dim > 3 * c->patch_size * c->patch_size
                      ? c->hidden_dim
                      : 3 * c->patch_size * c->patch_size;
    memset(s, 0, sizeof *s);
    s->h = b->ops->alloc(b, d);
    s->q = b->ops->alloc(b, d);
    s->k = b->ops->alloc(b, d);
    s->v = b->ops->alloc(b, d);
    s->att = b->ops->alloc(b, d);
    s->ff = b->ops->alloc(b, (size_t)rows * ff_cols * sizeof(float));
    if (s->h && s->q && s->k && s->v && s->att && s->ff) return LV_OK;
    scratch_free(b, s);
    return lv_fail(err, LV_ERR_NOMEM, "out of memory for the vision tower (%d positions)", rows);
}

/* CLIPEncoderLayer (pre-norm) on x (rows, dim), in place. */
static void encoder_layer(const clip *c, const clip_layer_weights *l, float *x, int n_tiles,
                          clip_scratch *s) {
    be *b = c->b;
    const struct be_ops *op = b->ops;
    int rows = n_tiles * c->n_pos;
    size_t n = (size_t)rows * c->dim, tile = (size_t)c->n_pos * c->dim;
    /* h = layer_norm1(x) */
    op->layernorm(b, s->h, x, l->ln1_g, l->ln1_b, rows, c->dim, c->eps);
    /* q, k, v = h·Wᵀ + b (CLIPAttention q_proj, k_proj, v_proj) */
    op->matmul(b, s->q, s->h, &l->wq, l->bq, rows);
    op->matmul(b, s->k, s->h, &l->wk, l->bk, rows);
    op->matmul(b, s->v, s->h, &l->wv, l->bv, rows);
    /* softmax(q·kᵀ·head_dim^-0.5)·v per tile, no mask */
    for (int t = 0; t < n_tiles; t++)
        op->attention(b, s->att + t * tile, s->q + t * tile, s->k + t * tile, s->v + t * tile,
                      c->n_pos, 0, c->n_pos, c->n_heads, c->n_heads, c->head_dim, false);
    /* x = x + out_proj(att) */
    op->matmul(b, s->h, s->att, &l->wo, l->bo, rows);
    op->add(b, x, s->h, n);
    /* x = x + fc2(act(fc1(layer_norm2(x)))) (CLIPMLP) */
    op->layernorm(b, s->h, x, l->ln2_g, l->ln2_b, rows, c->dim, c->eps);
    op->matmul(b, s->ff, s->h, &l->fc1, l->fc1_b, rows);
    if (c->quick_gelu)
        op->quick_gelu(b, s->ff, (size_t)rows * c->hidden_dim);
    else
        op->gelu(b, s->ff, (size_t)rows * c->hidden_dim);
    op->matmul(b, s->h, s->ff, &l->fc2, l->fc2_b, rows);
    op->add(b, x, s->h, n);
}

lv_status clip_encode(const clip *c, const float *pixels, int n_tiles, float *out, lv_err *err) {
    be *b = c->b;
    const struct be_ops *op = b->ops;
    int rows = clip_out_rows(c, n_tiles), cols = 3 * c->patch_size * c->patch_size;
    clip_scratch s;
    lv_status st = scratch_alloc(c, rows, &s, err);
    if (st) return st;
    float *patches = malloc((size_t)rows * cols * sizeof *patches);
    if (!patches) {
        scratch_free(b, &s);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory for %d image tiles", n_tiles);
    }
    /* patch_embedding: the stride-p conv as im2col + matmul (no bias) */
    im2col(c, pixels, n_tiles, patches);
    op->upload(b, s.ff, patches, (size_t)rows * cols * sizeof *patches);
    free(patches);
    op->matmul(b, out, s.ff, &c->w->patch, NULL, rows);
    /* embeddings = cat(class_embedding, patches) + position_embedding */
    for (int t = 0; t < n_tiles; t++)
        op->add(b, out + (size_t)t * c->n_pos * c->dim, c->w->cls_pos, (size_t)c->n_pos * c->dim);
    /* pre_layrnorm: hidden_states[0] */
    op->layernorm(b, out, out, c->w->pre_ln_g, c->w->pre_ln_b, rows, c->dim, c->eps);
    /* encoder layers 0 .. n_layers-1: hidden_states[n_layers] */
    for (int i = 0; i < c->n_layers; i++) encoder_layer(c, &c->w->layers[i], out, n_tiles, &s);
    scratch_free(b, &s);
    return LV_OK;
}
