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

#include "backend/quant.h"
#include "base/file.h"
#include "base/half.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_LEN 192

typedef struct {
    be *b;
    const st_set *st;
    const lv_quant_config *qc; /* config.json's quantization block (.present false if none) */
    const weights_progress *progress; /* told of every tensor taken; may be NULL */
    lv_err *err;
} loader;

/* A tensor taken: the progress hook hears of it. */
static void taken(loader *L, const be_weight *w, size_t bytes, int64_t params) {
    if (L->progress && L->progress->on_tensor)
        L->progress->on_tensor(L->progress->ud, w, bytes, params);
}

/* ---- shape checks ---------------------------------------------------- */

static void shape_str(char *out, size_t cap, int n_dims, const int64_t *shape) {
    size_t o = (size_t)snprintf(out, cap, "[");
    for (int i = 0; i < n_dims && o < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < cap) snprintf(out + o, cap - o, "]");
}

static bool plain_dtype(lv_dtype dt, be_dtype *out) {
    switch (dt) {
        case LV_DTYPE_F32:
            *out = BE_F32;
            return true;
        case LV_DTYPE_F16:
            *out = BE_F16;
            return true;
        case LV_DTYPE_BF16:
            *out = BE_BF16;
            return true;
        default:
            return false;
    }
}

/* The ggml block types an st_set from a GGUF file may hold. */
static bool block_dtype(lv_dtype dt, be_dtype *out) {
    switch (dt) {
        case LV_DTYPE_Q8_0:
            *out = BE_Q8_0;
            return true;
        case LV_DTYPE_Q4_0:
            *out = BE_Q4_0;
            return true;
        case LV_DTYPE_Q4_1:
            *out = BE_Q4_1;
            return true;
        case LV_DTYPE_Q4_K:
            *out = BE_Q4_K;
            return true;
        case LV_DTYPE_Q5_K:
            *out = BE_Q5_K;
            return true;
        case LV_DTYPE_Q6_K:
            *out = BE_Q6_K;
            return true;
        default:
            return false;
    }
}

static lv_status to_be_dtype(const st_tensor *t, be_dtype *out, lv_err *err) {
    if (plain_dtype(t->dtype, out)) return LV_OK;
    return lv_fail(err, LV_ERR_UNSUPPORTED,
                   "%s: tensor '%s': dtype %s is not supported (expected F16, BF16 or F32)",
                   t->file_name, t->orig_name, dtype_name(t->dtype));
}

static bool shape_is(const st_tensor *t, int n_dims, const int64_t *shape) {
    bool ok = t->n_dims == n_dims;
    for (int i = 0; ok && i < n_dims; i++) ok = t->shape[i] == shape[i];
    return ok;
}

static lv_status bad_shape(loader *L, const st_tensor *t, int n_dims, const int64_t *shape,
                           const char *why) {
    char want[96], got[96];
    shape_str(want, sizeof want, n_dims, shape);
    shape_str(got, sizeof got, t->n_dims, t->shape);
    return lv_fail(L->err, LV_ERR_FORMAT, "%s: tensor '%s': expected shape %s%s, got %s",
                   t->file_name, t->orig_name, want, why, got);
}

static lv_status missing(loader *L, const char *name, int n_dims, const int64_t *shape) {
    char want[96];
    shape_str(want, sizeof want, n_dims, shape);
    return lv_fail(L->err, LV_ERR_FORMAT, "the checkpoint has no tensor '%s' (expected shape %s)",
                   name, want);
}

/* Finds name and checks it has exactly shape (n_dims entries) and an
 * accepted dtype (*dt). */
static lv_status find(loader *L, const char *name, int n_dims, const int64_t *shape,
                      const st_tensor **out, be_dtype *dt) {
    const st_tensor *t = st_find(L->st, name);
    if (!t) return missing(L, name, n_dims, shape);
    if (!shape_is(t, n_dims, shape)) return bad_shape(L, t, n_dims, shape, "");
    lv_status st = to_be_dtype(t, dt, L->err);
    if (st) return st;
    *out = t;
    return LV_OK;
}

/* ---- quantized matrices ------------------------------------------------ */

/* bits and group of MLX module `module` (see describe_mlx). */
static lv_status mlx_params(loader *L, const char *module, const st_tensor *t,
                            const st_tensor *scales, int rows, int cols, int *bits, int *group) {
    const lv_quant_config *qc = L->qc;
    if (qc && qc->present) {
        const lv_quant_override *o = hf_quant_override(qc, module);
        bool own = o && o->quantized;
        *bits = own ? o->bits : qc->bits;
        *group = own ? o->group_size : qc->group_size;
        return LV_OK;
    }
    /* No quantization block: what the shapes say, if it is a valid pair. */
    int64_t ng = scales->n_dims == 2 ? scales->shape[1] : 0;
    int64_t nw = t->n_dims == 2 ? t->shape[1] : 0;
    *group = ng > 0 && cols % ng == 0 ? (int)(cols / ng) : 0;
    *bits = nw > 0 && nw * 32 % cols == 0 ? (int)(nw * 32 / cols) : 0;
    if (!(*bits == 2 || *bits == 3 || *bits == 4 || *bits == 5 || *bits == 6 || *bits == 8) ||
        !(*group == 32 || *group == 64 || *group == 128))
        return lv_fail(L->err, LV_ERR_FORMAT,
                       "tensor '%s.weight': config.json has no quantization block and the "
                       "shapes of the weight and its scales (%d x %d) give no valid bits and "
                       "group size",
                       module, rows, cols);
    return LV_OK;
}

/*
 * MLX affine (shared/spec/formats.md §3.3-3.4). Module P (the weight's name
 * without ".weight") is quantized iff "P.scales" exists; then
 *     P.weight  U32            (rows, cols·bits/32)   LSB-first codes per row
 *     P.scales  F16|BF16|F32   (rows, cols/group)
 *     P.biases  same dtype     (rows, cols/group)     (P.bias is the Linear bias)
 * bits and group come from the per-module override in config.json's
 * quantization block (looked up also without "language_model."), else
 * from its global values; without a block, from the tensors' shapes.
 * Everything is checked against the shape the model expects, so a
 * checkpoint quantized with other parameters than its config states is
 * refused, naming the tensor.
 */
static lv_status describe_mlx(loader *L, const char *module, const st_tensor *t,
                              const st_tensor *scales, int rows, int cols, be_weight *w) {
    char name[NAME_LEN + 16];
    const lv_quant_config *qc = L->qc;
    if (qc && qc->present && strcmp(qc->mode, "affine") != 0)
        return lv_fail(L->err, LV_ERR_UNSUPPORTED,
                       "tensor '%s.scales': quantization mode \"%s\" is not supported (only "
                       "\"affine\")",
                       module, qc->mode);
    int bits, group;
    lv_status st = mlx_params(L, module, t, scales, rows, cols, &bits, &group);
    if (st) return st;
    snprintf(name, sizeof name, "%s.biases", module);
    const st_tensor *biases = st_find(L->st, name);
    if (!biases)
        return lv_fail(L->err, LV_ERR_FORMAT,
                       "%s: tensor '%s.scales' exists but '%s' (the quantization offsets) is "
                       "missing",
                       scales->file_name, module, name);
    if (cols % group)
        return lv_fail(L->err, LV_ERR_FORMAT,
                       "tensor '%s.weight': %d input features are not a multiple of the group "
                       "size %d",
                       module, cols, group);
    if (t->dtype != LV_DTYPE_U32)
        return lv_fail(L->err, LV_ERR_FORMAT,
                       "%s: tensor '%s': a quantized weight (it has '%s.scales') must be U32, "
                       "got %s",
                       t->file_name, t->orig_name, module, dtype_name(t->dtype));
    int64_t ws[2] = {rows, (int64_t)cols * bits / 32}, ss[2] = {rows, cols / group};
    char why[96];
    snprintf(why, sizeof why, " (bits %d, group %d, %d x %d)", bits, group, rows, cols);
    if (!shape_is(t, 2, ws)) return bad_shape(L, t, 2, ws, why);
    if (!shape_is(scales, 2, ss)) return bad_shape(L, scales, 2, ss, why);
    if (!shape_is(biases, 2, ss)) return bad_shape(L, biases, 2, ss, why);
    be_quant q = {.bits = bits, .group = group, .scales = scales->data, .biases = biases->data};
    if (!plain_dtype(scales->dtype, &q.scale_dtype))
        return lv_fail(L->err, LV_ERR_FORMAT,
                       "%s: tensor '%s': scales must be F16, BF16 or F32, got %s",
                       scales->file_name, scales->orig_name, dtype_name(scales->dtype));
    if (biases->dtype != scales->dtype)
        return lv_fail(L->err, LV_ERR_FORMAT,
                       "%s: tensor '%s': dtype %s differs from its scales' %s", biases->file_name,
                       biases->orig_name, dtype_name(biases->dtype), dtype_name(scales->dtype));
    return be_weight_describe(w, BE_MLX, rows, cols, t->data, &q, L->err);
}

/*
 * The (rows, cols) matrix `name`, in whatever layout the checkpoint stores
 * it: F16/BF16/F32, MLX affine (see describe_mlx) or a ggml block type
 * (a GGUF tensor, shape [rows, cols]). Fills a host descriptor w (data
 * borrowed from the st_set); no backend involved.
 */
static lv_status describe_matrix(loader *L, const char *name, int rows, int cols, be_weight *w) {
    int64_t shape[2] = {rows, cols};
    const st_tensor *t = st_find(L->st, name);
    if (!t) return missing(L, name, 2, shape);
    char module[NAME_LEN], sname[NAME_LEN + 16];
    size_t len = strlen(name);
    if (len > 7 && strcmp(name + len - 7, ".weight") == 0 && len - 7 < sizeof module) {
        snprintf(module, sizeof module, "%.*s", (int)(len - 7), name);
        snprintf(sname, sizeof sname, "%s.scales", module);
        const st_tensor *scales = st_find(L->st, sname);
        if (scales) return describe_mlx(L, module, t, scales, rows, cols, w);
    }
    be_dtype dt;
    if (t->dtype == LV_DTYPE_U32)
        return lv_fail(L->err, LV_ERR_FORMAT,
                       "%s: tensor '%s' is U32 (packed quantized codes) but the checkpoint has no "
                       "'%s.scales'",
                       t->file_name, t->orig_name, len > 7 ? module : name);
    if (!plain_dtype(t->dtype, &dt) && !block_dtype(t->dtype, &dt))
        return to_be_dtype(t, &dt, L->err);
    if (!shape_is(t, 2, shape)) return bad_shape(L, t, 2, shape, "");
    lv_status st = be_weight_describe(w, dt, rows, cols, t->data, NULL, L->err);
    if (st) lv_err_prefix(L->err, "%s: tensor '%s'", t->file_name, t->orig_name);
    return st;
}

/* Hands a described matrix to the backend, with how tensor parallelism
 * splits it (backend/tp.h; other backends have no weight_init_split). */
static lv_status init_split(loader *L, be_weight *w, const be_weight *d, const char *name,
                            be_split split) {
    const be_quant *q = d->dtype == BE_MLX ? &d->q : NULL;
    lv_status st =
        L->b->ops->weight_init_split
            ? L->b->ops->weight_init_split(L->b, w, d->dtype, d->rows, d->cols, d->data, q, split,
                                           L->err)
            : L->b->ops->weight_init(L->b, w, d->dtype, d->rows, d->cols, d->data, q, L->err);
    if (st) {
        lv_err_prefix(L->err, "tensor '%s'", name);
        return st;
    }
    /* The backend keeps its own copy: the file's pages leave the resident
     * set (embed_rows reads a few back), so memory holds the weights once. */
    if (w->prep) lv_map_release_pages(d->data, (size_t)d->rows * d->row_bytes);
    taken(L, d, (size_t)d->rows * d->row_bytes, (int64_t)d->rows * d->cols);
    return LV_OK;
}

static lv_status init_matrix(loader *L, be_weight *w, const be_weight *d, const char *name) {
    return init_split(L, w, d, name, BE_SPLIT_NONE);
}

static lv_status load_split(loader *L, be_weight *w, const char *name, int rows, int cols,
                            be_split split) {
    be_weight d;
    lv_status st = describe_matrix(L, name, rows, cols, &d);
    return st ? st : init_split(L, w, &d, name, split);
}

static lv_status load_matrix(loader *L, be_weight *w, const char *name, int rows, int cols) {
    return load_split(L, w, name, rows, cols, BE_SPLIT_NONE);
}

/* A (rows, cols) matrix in any layout, dequantised to float32 on the host
 * (rows·cols floats into out): for small parameters used as vectors. */
static lv_status read_matrix(loader *L, const char *name, int rows, int cols, float *out) {
    be_weight d;
    lv_status st = describe_matrix(L, name, rows, cols, &d);
    if (st) return st;
    for (int r = 0; r < rows; r++) be_dequant_row(&d, r, out + (size_t)r * cols);
    taken(L, &d, (size_t)d.rows * d.row_bytes, (int64_t)rows * cols);
    return LV_OK;
}

/*
 * The patch-embedding conv as a (dim, c·p·p) matrix in (c, ky, kx) order,
 * what clip.c's im2col produces. PyTorch stores OIHW [dim, c, p, p] (used in
 * place); mlx-vlm's sanitize writes OHWI [dim, p, p, c] (formats.md §3.3),
 * which is transposed here into a float32 copy the weight then owns.
 */
static lv_status load_patch(loader *L, be_weight *w, const char *name, int dim, int c, int p) {
    int64_t oihw[4] = {dim, c, p, p}, ohwi[4] = {dim, p, p, c};
    const st_tensor *t = st_find(L->st, name);
    if (!t) return missing(L, name, 4, oihw);
    bool is_ohwi = !shape_is(t, 4, oihw) && shape_is(t, 4, ohwi);
    if (!is_ohwi) {
        be_dtype dt;
        lv_status st = find(L, name, 4, oihw, &t, &dt);
        if (st) return st;
        be_weight d = {.dtype = dt, .rows = dim, .cols = c * p * p, .data = t->data};
        return init_matrix(L, w, &d, name);
    }
    be_dtype dt = BE_F32;
    lv_status st = to_be_dtype(t, &dt, L->err);
    if (st) return st;
    size_t n = (size_t)dim * c * p * p;
    float *src = malloc(n * sizeof *src), *dst = malloc(n * sizeof *dst);
    if (!src || !dst) {
        free(src);
        free(dst);
        return lv_fail(L->err, LV_ERR_NOMEM, "out of memory loading tensor '%s'", name);
    }
    be_weight d = {.dtype = dt, .rows = 1, .cols = (int)n, .row_bytes = 0, .data = t->data};
    be_dequant_row(&d, 0, src);
    for (int o = 0; o < dim; o++)
        for (int y = 0; y < p; y++)
            for (int x = 0; x < p; x++)
                for (int ch = 0; ch < c; ch++)
                    dst[(((size_t)o * c + ch) * p + y) * p + x] =
                        src[(((size_t)o * p + y) * p + x) * c + ch];
    free(src);
    be_weight f = {.dtype = BE_F32, .rows = dim, .cols = c * p * p, .data = dst};
    st = init_matrix(L, w, &f, name);
    if (st) {
        free(dst);
        return st;
    }
    w->owned = dst; /* released by weight_free */
    return LV_OK;
}

/* ---- vectors ----------------------------------------------------------- */

static lv_status load_vector(loader *L, float **v, const char *name, int n) {
    const st_tensor *t;
    int64_t shape[1] = {n};
    be_dtype dt;
    lv_status st = find(L, name, 1, shape, &t, &dt);
    if (st) return st;
    *v = L->b->ops->vector_init(L->b, dt, n, t->data);
    if (!*v) return lv_fail(L->err, LV_ERR_NOMEM, "out of memory loading tensor '%s'", name);
    taken(L, NULL, t->nbytes, n);
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
            out[i] = t->dtype == LV_DTYPE_F16 ? lv_f16_to_f32(h) : lv_bf16_to_f32(h);
        }
    }
}

lv_status weights_read_vector(const st_set *st, const char *name, int n, float *out, lv_err *err) {
    loader L = {NULL, st, NULL, NULL, err};
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
    if (hf_is_idefics3(cfg)) return cfg->vision.n_layers;
    int k = cfg->feature_layers[0];
    return k < 0 ? cfg->vision.n_layers + 1 + k : k;
}

/* class_embedding + position_embedding → cls_pos (see clip_weights). */
static lv_status load_cls_pos(loader *L, clip_weights *w, int n_pos, int dim) {
    const st_tensor *cls;
    int64_t s_cls[1] = {dim};
    be_dtype dt;
    lv_status st;
    if ((st = find(L, VT "embeddings.class_embedding", 1, s_cls, &cls, &dt))) return st;
    float *host = malloc((size_t)n_pos * dim * sizeof *host), *c = malloc(dim * sizeof *c);
    if (!host || !c) {
        st = lv_fail(L->err, LV_ERR_NOMEM, "out of memory loading the CLIP embeddings");
        goto done;
    }
    /* An nn.Embedding: MLX checkpoints may quantize it (dequantised here, it is small). */
    if ((st = read_matrix(L, VT "embeddings.position_embedding.weight", n_pos, dim, host)))
        goto done;
    read_floats(cls, c, dim);
    taken(L, NULL, cls->nbytes, dim);
    /* CLIPVisionEmbeddings: cat(class_embeds, patch_embeds) + position_embedding */
    for (int i = 0; i < dim; i++) host[i] += c[i];
    w->cls_pos = L->b->ops->vector_init(L->b, BE_F32, n_pos * dim, host);
    if (!w->cls_pos)
        st = lv_fail(L->err, LV_ERR_NOMEM, "out of memory loading the CLIP embeddings");
done:
    free(host);
    free(c);
    return st;
}

static lv_status load_clip_layer(loader *L, clip_layer_weights *l, int i, int dim, int hidden) {
    char n[NAME_LEN];
    lv_status st = LV_OK;
    /* tensor parallel: heads and fc1 by output, out_proj and fc2 by input, as the text
     * model's, unless the tower is to be whole on every rank */
    be_split out = L->b->replicate_tower ? BE_SPLIT_NONE : BE_SPLIT_OUT;
    be_split in = L->b->replicate_tower ? BE_SPLIT_NONE : BE_SPLIT_IN;
#define LAYER(suffix) (snprintf(n, sizeof n, VT "encoder.layers.%d." suffix, i), n)
    if ((st = load_vector(L, &l->ln1_g, LAYER("layer_norm1.weight"), dim)) ||
        (st = load_vector(L, &l->ln1_b, LAYER("layer_norm1.bias"), dim)) ||
        (st = load_split(L, &l->wq, LAYER("self_attn.q_proj.weight"), dim, dim, out)) ||
        (st = load_vector(L, &l->bq, LAYER("self_attn.q_proj.bias"), dim)) ||
        (st = load_split(L, &l->wk, LAYER("self_attn.k_proj.weight"), dim, dim, out)) ||
        (st = load_vector(L, &l->bk, LAYER("self_attn.k_proj.bias"), dim)) ||
        (st = load_split(L, &l->wv, LAYER("self_attn.v_proj.weight"), dim, dim, out)) ||
        (st = load_vector(L, &l->bv, LAYER("self_attn.v_proj.bias"), dim)) ||
        (st = load_split(L, &l->wo, LAYER("self_attn.out_proj.weight"), dim, dim, in)) ||
        (st = load_vector(L, &l->bo, LAYER("self_attn.out_proj.bias"), dim)) ||
        (st = load_vector(L, &l->ln2_g, LAYER("layer_norm2.weight"), dim)) ||
        (st = load_vector(L, &l->ln2_b, LAYER("layer_norm2.bias"), dim)) ||
        (st = load_split(L, &l->fc1, LAYER("mlp.fc1.weight"), hidden, dim, out)) ||
        (st = load_vector(L, &l->fc1_b, LAYER("mlp.fc1.bias"), hidden)) ||
        (st = load_split(L, &l->fc2, LAYER("mlp.fc2.weight"), dim, hidden, in)) ||
        (st = load_vector(L, &l->fc2_b, LAYER("mlp.fc2.bias"), dim)))
        return st;
#undef LAYER
    return LV_OK;
}

/* SigLIP (Idefics3VisionEmbeddings / SmolVLMVisionEmbeddings, transformers
 * models/idefics3/modeling_idefics3.py): position_embedding (side², dim),
 * an nn.Embedding (dequantised here if an MLX checkpoint quantized it). */
static lv_status load_pos(loader *L, clip_weights *w, int n_pos, int dim) {
    float *host = malloc((size_t)n_pos * dim * sizeof *host);
    if (!host) return lv_fail(L->err, LV_ERR_NOMEM, "out of memory loading the vision embeddings");
    lv_status st = read_matrix(L, VT "embeddings.position_embedding.weight", n_pos, dim, host);
    if (!st) {
        w->cls_pos = L->b->ops->vector_init(L->b, BE_F32, n_pos * dim, host);
        if (!w->cls_pos)
            st = lv_fail(L->err, LV_ERR_NOMEM, "out of memory loading the vision embeddings");
    }
    free(host);
    return st;
}

/* The tower's embeddings and norms: CLIP's (class_embedding, pre_layrnorm)
 * or SigLIP's (conv bias, post_layernorm). */
static lv_status load_embeddings(loader *L, const lv_model_config *cfg, clip_weights *w) {
    const lv_vision_config *v = &cfg->vision;
    int side = v->image_size / v->patch_size, dim = v->dim;
    lv_status s;
    if ((s = load_patch(L, &w->patch, VT "embeddings.patch_embedding.weight", dim, v->n_channels,
                        v->patch_size)))
        return s;
    if (!hf_is_idefics3(cfg)) {
        w->has_cls = true;
        if ((s = load_cls_pos(L, w, 1 + side * side, dim)) ||
            (s = load_vector(L, &w->pre_ln_g, VT "pre_layrnorm.weight", dim)) ||
            (s = load_vector(L, &w->pre_ln_b, VT "pre_layrnorm.bias", dim)))
            return s;
        return LV_OK;
    }
    if ((s = load_vector(L, &w->patch_b, VT "embeddings.patch_embedding.bias", dim)) ||
        (s = load_pos(L, w, side * side, dim)) ||
        (s = load_vector(L, &w->post_ln_g, VT "post_layernorm.weight", dim)) ||
        (s = load_vector(L, &w->post_ln_b, VT "post_layernorm.bias", dim)))
        return s;
    return LV_OK;
}

lv_status clip_weights_load(be *b, const st_set *st, const lv_model_config *cfg,
                            const weights_progress *progress, clip_weights *w, lv_err *err) {
    memset(w, 0, sizeof *w);
    loader L = {b, st, &cfg->quant, progress, err};
    const lv_vision_config *v = &cfg->vision;
    if (cfg->n_feature_layers != 1)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "vision_feature_layer lists %d layers; only a single layer is supported",
                       cfg->n_feature_layers);
    lv_status s;
    if ((s = load_embeddings(&L, cfg, w))) goto fail;
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
    free_vector(b, &w->patch_b);
    free_vector(b, &w->cls_pos);
    free_vector(b, &w->pre_ln_g);
    free_vector(b, &w->pre_ln_b);
    free_vector(b, &w->post_ln_g);
    free_vector(b, &w->post_ln_b);
    memset(w, 0, sizeof *w);
}

/* ---- projector --------------------------------------------------------- */

lv_status projector_weights_load(be *b, const st_set *st, const lv_model_config *cfg,
                                 const weights_progress *progress, projector_weights *w,
                                 lv_err *err) {
    memset(w, 0, sizeof *w);
    loader L = {b, st, &cfg->quant, progress, err};
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

/* ---- connector (Idefics3 / SmolVLM) ------------------------------------- */

/* Idefics3SimpleMLP / SmolVLMSimpleMLP: nn.Linear(vision dim·scale², text
 * dim, bias=False) (transformers models/idefics3/modeling_idefics3.py). */
lv_status connector_weights_load(be *b, const st_set *st, const lv_model_config *cfg,
                                 const weights_progress *progress, connector_weights *w,
                                 lv_err *err) {
    memset(w, 0, sizeof *w);
    loader L = {b, st, &cfg->quant, progress, err};
    int s = cfg->scale_factor;
    if (s < 1)
        return lv_fail(err, LV_ERR_FORMAT, "config.json: scale_factor %d for the connector", s);
    lv_status r = load_matrix(&L, &w->proj, "connector.modality_projection.proj.weight",
                              cfg->text.dim, cfg->vision.dim * s * s);
    if (r) connector_weights_free(b, w);
    return r;
}

void connector_weights_free(be *b, connector_weights *w) {
    if (!b) return;
    free_matrix(b, &w->proj);
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
        (st = load_split(L, &l->wq, LAYER("self_attn.q_proj.weight"), q_dim, dim, BE_SPLIT_OUT)) ||
        (st = load_split(L, &l->wk, LAYER("self_attn.k_proj.weight"), kv_dim, dim, BE_SPLIT_OUT)) ||
        (st = load_split(L, &l->wv, LAYER("self_attn.v_proj.weight"), kv_dim, dim, BE_SPLIT_OUT)) ||
        (st = load_split(L, &l->wo, LAYER("self_attn.o_proj.weight"), dim, q_dim, BE_SPLIT_IN)) ||
        (st = load_vector(L, &l->ffn_norm, LAYER("post_attention_layernorm.weight"), dim)) ||
        (st = load_split(L, &l->w_gate, LAYER("mlp.gate_proj.weight"), hid, dim, BE_SPLIT_OUT)) ||
        (st = load_split(L, &l->w_up, LAYER("mlp.up_proj.weight"), hid, dim, BE_SPLIT_OUT)) ||
        (st = load_split(L, &l->w_down, LAYER("mlp.down_proj.weight"), dim, hid, BE_SPLIT_IN)))
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

lv_status llm_weights_load(be *b, const st_set *st, const lv_model_config *cfg,
                           const weights_progress *progress, llm_weights *w, lv_err *err) {
    memset(w, 0, sizeof *w);
    const lv_text_config *c = &cfg->text;
    loader L = {b, st, &cfg->quant, progress, err};
    lv_status s;
    if ((s = load_matrix(&L, &w->embed, LM "embed_tokens.weight", c->vocab_size, c->dim)) ||
        (s = load_vector(&L, &w->norm, LM "norm.weight", c->dim)))
        goto fail;
    if (c->tie_word_embeddings) {
        w->lm_head = w->embed; /* HF ties lm_head to embed_tokens even if the file has both */
        w->tied = true;
    } else if ((s = load_split(&L, &w->lm_head, "language_model.lm_head.weight", c->vocab_size,
                               c->dim, BE_SPLIT_OUT))) { /* by vocabulary: logits gathered */
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
