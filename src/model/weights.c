/*
 * weights.c - loading a LLaVA checkpoint's tensors into a backend (see
 * weights.h for the name and shape table).
 *
 * Every tensor goes through one of two helpers: load_matrix (a be_weight,
 * backend weight_init) and load_vector (float32 buffer, backend
 * vector_init). Both find the tensor by canonical name and check its shape
 * and dtype first, so a bad checkpoint is refused at load with a message
 * that names the tensor, never discovered mid-forward.
 */
#include "model/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_LEN 192

typedef struct {
    be *b;
    const st_set *st;
    lv_err *err;
} loader;

/* ---- shape checks ---------------------------------------------------- */

static void shape_str(char *out, size_t cap, int n_dims, const int64_t *shape) {
    size_t o = (size_t)snprintf(out, cap, "[");
    for (int i = 0; i < n_dims && o < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < cap) snprintf(out + o, cap - o, "]");
}

static lv_status to_be_dtype(const st_tensor *t, be_dtype *out, lv_err *err) {
    switch (t->dtype) {
        case LV_DTYPE_F32:
            *out = BE_F32;
            return LV_OK;
        case LV_DTYPE_F16:
            *out = BE_F16;
            return LV_OK;
        case LV_DTYPE_BF16:
            *out = BE_BF16;
            return LV_OK;
        default:
            return lv_fail(err, LV_ERR_UNSUPPORTED,
                           "%s: tensor '%s': dtype %s is not supported (expected F16, BF16 or F32)",
                           t->file_name, t->orig_name, dtype_name(t->dtype));
    }
}

/* Finds name and checks it has exactly shape (n_dims entries) and an
 * accepted dtype (*dt). */
static lv_status find(loader *L, const char *name, int n_dims, const int64_t *shape,
                      const st_tensor **out, be_dtype *dt) {
    const st_tensor *t = st_find(L->st, name);
    char want[96], got[96];
    shape_str(want, sizeof want, n_dims, shape);
    if (!t)
        return lv_fail(L->err, LV_ERR_FORMAT,
                       "the checkpoint has no tensor '%s' (expected shape %s)", name, want);
    bool ok = t->n_dims == n_dims;
    for (int i = 0; ok && i < n_dims; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        shape_str(got, sizeof got, t->n_dims, t->shape);
        return lv_fail(L->err, LV_ERR_FORMAT, "%s: tensor '%s': expected shape %s, got %s",
                       t->file_name, t->orig_name, want, got);
    }
    lv_status st = to_be_dtype(t, dt, L->err);
    if (st) return st;
    *out = t;
    return LV_OK;
}

/* A matrix weight; a tensor of more than 2 dims (the patch conv) is
 * flattened to (shape[0], prod(rest)). */
static lv_status load_matrix_nd(loader *L, be_weight *w, const char *name, int n_dims,
                                const int64_t *shape) {
    const st_tensor *t;
    be_dtype dt;
    lv_status st = find(L, name, n_dims, shape, &t, &dt);
    if (st) return st;
    int64_t cols = 1;
    for (int i = 1; i < n_dims; i++) cols *= shape[i];
    st = L->b->ops->weight_init(L->b, w, dt, (int)shape[0], (int)cols, t->data, L->err);
    if (st) lv_err_prefix(L->err, "tensor '%s'", name);
    return st;
}

static lv_status load_matrix(loader *L, be_weight *w, const char *name, int rows, int cols) {
    int64_t shape[2] = {rows, cols};
    return load_matrix_nd(L, w, name, 2, shape);
}

static lv_status load_vector(loader *L, float **v, const char *name, int n) {
    const st_tensor *t;
    int64_t shape[1] = {n};
    be_dtype dt;
    lv_status st = find(L, name, 1, shape, &t, &dt);
    if (st) return st;
    *v = L->b->ops->vector_init(L->b, dt, n, t->data);
    if (!*v) return lv_fail(L->err, LV_ERR_NOMEM, "out of memory loading tensor '%s'", name);
    return LV_OK;
}

static void free_matrix(be *b, be_weight *w) {
    if (w->data || w->owned) b->ops->weight_free(b, w);
    memset(w, 0, sizeof *w);
}

static void free_vector(be *b, float **v) {
    b->ops->release(b, *v);
    *v = NULL;
}

/* n values of t, any accepted dtype, into float32 out (t->data may be unaligned). */
static void read_floats(const st_tensor *t, float *out, int64_t n) {
    const unsigned char *p = t->data;
    for (int64_t i = 0; i < n; i++) {
        if (t->dtype == LV_DTYPE_F32) {
            memcpy(&out[i], p + 4 * i, 4);
        } else {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = t->dtype == LV_DTYPE_F16 ? be_f16_to_f32(h) : be_bf16_to_f32(h);
        }
    }
}

lv_status weights_read_vector(const st_set *st, const char *name, int n, float *out, lv_err *err) {
    loader L = {NULL, st, err};
    const st_tensor *t;
    int64_t shape[1] = {n};
    be_dtype dt;
    lv_status s = find(&L, name, 1, shape, &t, &dt);
    if (s) return s;
    read_floats(t, out, n);
    return LV_OK;
}

/* ---- CLIP vision tower ----------------------------------------------- */

#define VT "vision_tower.vision_model."

int clip_layers_needed(const lv_model_config *cfg) {
    int k = cfg->feature_layers[0];
    return k < 0 ? cfg->vision.n_layers + 1 + k : k;
}

/* class_embedding + position_embedding → cls_pos (see clip_weights). */
static lv_status load_cls_pos(loader *L, clip_weights *w, int n_pos, int dim) {
    const st_tensor *cls, *pos;
    int64_t s_cls[1] = {dim}, s_pos[2] = {n_pos, dim};
    be_dtype dt;
    lv_status st;
    if ((st = find(L, VT "embeddings.class_embedding", 1, s_cls, &cls, &dt)) ||
        (st = find(L, VT "embeddings.position_embedding.weight", 2, s_pos, &pos, &dt)))
        return st;
    float *host = malloc((size_t)n_pos * dim * sizeof *host), *c = malloc(dim * sizeof *c);
    if (host && c) {
        read_floats(pos, host, (int64_t)n_pos * dim);
        read_floats(cls, c, dim);
        /* CLIPVisionEmbeddings: cat(class_embeds, patch_embeds) + position_embedding */
        for (int i = 0; i < dim; i++) host[i] += c[i];
        w->cls_pos = L->b->ops->vector_init(L->b, BE_F32, n_pos * dim, host);
    }
    free(host);
    free(c);
    if (!w->cls_pos)
        return lv_fail(L->err, LV_ERR_NOMEM, "out of memory loading the CLIP embeddings");
    return LV_OK;
}

static lv_status load_clip_layer(loader *L, clip_layer_weights *l, int i, int dim, int hidden) {
    char n[NAME_LEN];
    lv_status st = LV_OK;
#define LAYER(suffix) (snprintf(n, sizeof n, VT "encoder.layers.%d." suffix, i), n)
    if ((st = load_vector(L, &l->ln1_g, LAYER("layer_norm1.weight"), dim)) ||
        (st = load_vector(L, &l->ln1_b, LAYER("layer_norm1.bias"), dim)) ||
        (st = load_matrix(L, &l->wq, LAYER("self_attn.q_proj.weight"), dim, dim)) ||
        (st = load_vector(L, &l->bq, LAYER("self_attn.q_proj.bias"), dim)) ||
        (st = load_matrix(L, &l->wk, LAYER("self_attn.k_proj.weight"), dim, dim)) ||
        (st = load_vector(L, &l->bk, LAYER("self_attn.k_proj.bias"), dim)) ||
        (st = load_matrix(L, &l->wv, LAYER("self_attn.v_proj.weight"), dim, dim)) ||
        (st = load_vector(L, &l->bv, LAYER("self_attn.v_proj.bias"), dim)) ||
        (st = load_matrix(L, &l->wo, LAYER("self_attn.out_proj.weight"), dim, dim)) ||
        (st = load_vector(L, &l->bo, LAYER("self_attn.out_proj.bias"), dim)) ||
        (st = load_vector(L, &l->ln2_g, LAYER("layer_norm2.weight"), dim)) ||
        (st = load_vector(L, &l->ln2_b, LAYER("layer_norm2.bias"), dim)) ||
        (st = load_matrix(L, &l->fc1, LAYER("mlp.fc1.weight"), hidden, dim)) ||
        (st = load_vector(L, &l->fc1_b, LAYER("mlp.fc1.bias"), hidden)) ||
        (st = load_matrix(L, &l->fc2, LAYER("mlp.fc2.weight"), dim, hidden)) ||
        (st = load_vector(L, &l->fc2_b, LAYER("mlp.fc2.bias"), dim)))
        return st;
#undef LAYER
    return LV_OK;
}

lv_status clip_weights_load(be *b, const st_set *st, const lv_model_config *cfg, clip_weights *w,
                            lv_err *err) {
    memset(w, 0, sizeof *w);
    loader L = {b, st, err};
    const lv_vision_config *v = &cfg->vision;
    if (cfg->n_feature_layers != 1)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "vision_feature_layer lists %d layers; only a single layer is supported",
                       cfg->n_feature_layers);
    int side = v->image_size / v->patch_size, n_pos = 1 + side * side;
    int64_t patch_shape[4] = {v->dim, v->n_channels, v->patch_size, v->patch_size};
    lv_status s;
    if ((s = load_matrix_nd(&L, &w->patch, VT "embeddings.patch_embedding.weight", 4,
                            patch_shape)) ||
        (s = load_cls_pos(&L, w, n_pos, v->dim)) ||
        (s = load_vector(&L, &w->pre_ln_g, VT "pre_layrnorm.weight", v->dim)) ||
        (s = load_vector(&L, &w->pre_ln_b, VT "pre_layrnorm.bias", v->dim)))
        goto fail;
    int n = clip_layers_needed(cfg);
    w->layers = calloc(n > 0 ? (size_t)n : 1, sizeof *w->layers);
    if (!w->layers) {
        s = lv_fail(err, LV_ERR_NOMEM, "out of memory");
        goto fail;
    }
    w->n_layers = n;
    for (int i = 0; i < n; i++)
        if ((s = load_clip_layer(&L, &w->layers[i], i, v->dim, v->hidden_dim))) goto fail;
    return LV_OK;
fail:
    clip_weights_free(b, w);
    return s;
}

void clip_weights_free(be *b, clip_weights *w) {
    if (!b) return;
    for (int i = 0; w->layers && i < w->n_layers; i++) {
        clip_layer_weights *l = &w->layers[i];
        be_weight *m[] = {&l->wq, &l->wk, &l->wv, &l->wo, &l->fc1, &l->fc2};
        float **v[] = {&l->ln1_g, &l->ln1_b, &l->bq,    &l->bk,    &l->bv,
                       &l->bo,    &l->ln2_g, &l->ln2_b, &l->fc1_b, &l->fc2_b};
        for (size_t j = 0; j < LV_ARRAY_LEN(m); j++) free_matrix(b, m[j]);
        for (size_t j = 0; j < LV_ARRAY_LEN(v); j++) free_vector(b, v[j]);
    }
    free(w->layers);
    free_matrix(b, &w->patch);
    free_vector(b, &w->cls_pos);
    free_vector(b, &w->pre_ln_g);
    free_vector(b, &w->pre_ln_b);
    memset(w, 0, sizeof *w);
}

/* ---- projector --------------------------------------------------------- */

lv_status projector_weights_load(be *b, const st_set *st, const lv_model_config *cfg,
                                 projector_weights *w, lv_err *err) {
    memset(w, 0, sizeof *w);
    loader L = {b, st, err};
    int vd = cfg->vision.dim, td = cfg->text.dim;
    lv_status s;
    if ((s = load_matrix(&L, &w->w1, "multi_modal_projector.linear_1.weight", td, vd)) ||
        (s = load_matrix(&L, &w->w2, "multi_modal_projector.linear_2.weight", td, td)))
        goto fail;
    if (cfg->projector_bias &&
        ((s = load_vector(&L, &w->b1, "multi_modal_projector.linear_1.bias", td)) ||
         (s = load_vector(&L, &w->b2, "multi_modal_projector.linear_2.bias", td))))
        goto fail;
    return LV_OK;
fail:
    projector_weights_free(b, w);
    return s;
}

void projector_weights_free(be *b, projector_weights *w) {
    if (!b) return;
    free_matrix(b, &w->w1);
    free_matrix(b, &w->w2);
    free_vector(b, &w->b1);
    free_vector(b, &w->b2);
}

/* ---- language model ---------------------------------------------------- */

#define LM "language_model.model."

static lv_status load_llm_layer(loader *L, llm_layer_weights *l, int i, const lv_text_config *c) {
    int dim = c->dim, q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    int hid = c->hidden_dim;
    char n[NAME_LEN];
    lv_status st;
#define LAYER(suffix) (snprintf(n, sizeof n, LM "layers.%d." suffix, i), n)
    if ((st = load_vector(L, &l->attn_norm, LAYER("input_layernorm.weight"), dim)) ||
        (st = load_matrix(L, &l->wq, LAYER("self_attn.q_proj.weight"), q_dim, dim)) ||
        (st = load_matrix(L, &l->wk, LAYER("self_attn.k_proj.weight"), kv_dim, dim)) ||
        (st = load_matrix(L, &l->wv, LAYER("self_attn.v_proj.weight"), kv_dim, dim)) ||
        (st = load_matrix(L, &l->wo, LAYER("self_attn.o_proj.weight"), dim, q_dim)) ||
        (st = load_vector(L, &l->ffn_norm, LAYER("post_attention_layernorm.weight"), dim)) ||
        (st = load_matrix(L, &l->w_gate, LAYER("mlp.gate_proj.weight"), hid, dim)) ||
        (st = load_matrix(L, &l->w_up, LAYER("mlp.up_proj.weight"), hid, dim)) ||
        (st = load_matrix(L, &l->w_down, LAYER("mlp.down_proj.weight"), dim, hid)))
        return st;
    if (c->attention_bias &&
        ((st = load_vector(L, &l->bq, LAYER("self_attn.q_proj.bias"), q_dim)) ||
         (st = load_vector(L, &l->bk, LAYER("self_attn.k_proj.bias"), kv_dim)) ||
         (st = load_vector(L, &l->bv, LAYER("self_attn.v_proj.bias"), kv_dim)) ||
         (st = load_vector(L, &l->bo, LAYER("self_attn.o_proj.bias"), dim))))
        return st;
    if (c->mlp_bias && ((st = load_vector(L, &l->b_gate, LAYER("mlp.gate_proj.bias"), hid)) ||
                        (st = load_vector(L, &l->b_up, LAYER("mlp.up_proj.bias"), hid)) ||
                        (st = load_vector(L, &l->b_down, LAYER("mlp.down_proj.bias"), dim))))
        return st;
#undef LAYER
    return LV_OK;
}

lv_status llm_weights_load(be *b, const st_set *st, const lv_text_config *c, llm_weights *w,
                           lv_err *err) {
    memset(w, 0, sizeof *w);
    loader L = {b, st, err};
    lv_status s;
    if ((s = load_matrix(&L, &w->embed, LM "embed_tokens.weight", c->vocab_size, c->dim)) ||
        (s = load_vector(&L, &w->norm, LM "norm.weight", c->dim)))
        goto fail;
    if (c->tie_word_embeddings) {
        w->lm_head = w->embed; /* HF ties lm_head to embed_tokens even if the file has both */
        w->tied = true;
    } else if ((s = load_matrix(&L, &w->lm_head, "language_model.lm_head.weight", c->vocab_size,
                                c->dim))) {
        goto fail;
    }
    w->layers = calloc((size_t)c->n_layers, sizeof *w->layers);
    if (!w->layers) {
        s = lv_fail(err, LV_ERR_NOMEM, "out of memory");
        goto fail;
    }
    w->n_layers = c->n_layers;
    for (int i = 0; i < c->n_layers; i++)
        if ((s = load_llm_layer(&L, &w->layers[i], i, c))) goto fail;
    return LV_OK;
fail:
    llm_weights_free(b, w);
    return s;
}

void llm_weights_free(be *b, llm_weights *w) {
    if (!b) return;
    for (int i = 0; w->layers && i < w->n_layers; i++) {
        llm_layer_weights *l = &w->layers[i];
        be_weight *m[] = {&l->wq, &l->wk, &l->wv, &l->wo, &l->w_gate, &l->w_up, &l->w_down};
        float **v[] = {&l->attn_norm, &l->ffn_norm, &l->bq,   &l->bk,    &l->bv,
                       &l->bo,        &l->b_gate,   &l->b_up, &l->b_down};
        for (size_t j = 0; j < LV_ARRAY_LEN(m); j++) free_matrix(b, m[j]);
        for (size_t j = 0; j < LV_ARRAY_LEN(v); j++) free_vector(b, v[j]);
    }
    free(w->layers);
    if (!w->tied) free_matrix(b, &w->lm_head);
    free_matrix(b, &w->embed);
    free_vector(b, &w->norm);
    memset(w, 0, sizeof *w);
}
