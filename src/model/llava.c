/*
 * llava.c - the LLaVA model, one function per step (see llava.h).
 *
 *   llava_open          config.json, tokenizer, preprocessor → image parameters
 *   llava_load          weights → backend (clip, projector, llm)
 *   llava_encode_image  pixels → CLIP → projector → packed rows (host)
 *   llava_prefill       ids → embed_tokens, image rows written over the <image>
 *                       ids (transformers: inputs_embeds.masked_scatter) → decoder
 *   llava_decode        one id → decoder
 *
 * Image rows come back to the host after packing: packing is a gather that
 * the op table has no op for, and the host copy is what tests compare and
 * what a request keeps until its prefill.
 */
#include "model/llava.h"

#include "model/image_params.h"
#include "image/anyres.h"
#include "model/pack.h"
#include "text/tokenizer_gguf.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- open / load / free ------------------------------------------------ */

/* The tokenizer, with BOS/EOS as tokenizer_config.json says (transformers
 * LlamaTokenizerFast add_bos_token / add_eos_token). */
static lv_status load_tokenizer(llava *m, lv_err *err) {
    lv_status st = m->md.gguf_text ? tok_load_gguf_llava_file(m->md.gguf_text, &m->tok, err)
                                   : tok_load(m->md.tokenizer_path, &m->tok, err);
    if (st) return st;
    const lv_tokenizer_config *tc = &m->md.tokenizer_config;
    if (m->md.has_tokenizer_config && (tc->has_add_bos_token || tc->has_add_eos_token)) {
        bool bos = tc->has_add_bos_token ? tc->add_bos_token : tok_bos_id(m->tok) >= 0;
        bool eos = tc->has_add_eos_token ? tc->add_eos_token : false;
        tok_set_add_special(m->tok, bos, eos);
    }
    return LV_OK;
}

lv_status llava_open(const char *path, llava **out, lv_err *err) {
    return llava_open2(path, NULL, out, err);
}

lv_status llava_open2(const char *path, const char *mmproj, llava **out, lv_err *err) {
    *out = NULL;
    llava *m = calloc(1, sizeof *m);
    if (!m) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    lv_status st;
    if ((st = mmproj ? mdir_open_gguf(path, mmproj, 0, &m->md, err)
                     : mdir_open(path, 0, &m->md, err)) ||
        (st = load_tokenizer(m, err)) ||
        (st = model_image_params(&m->md.config, &m->md.preproc, &m->image, err)))
        goto fail;
    const lv_model_config *c = &m->md.config;
    m->next = strcmp(c->model_type, "llava_next") == 0;
    m->full_features = strcmp(c->feature_select_strategy, "full") == 0;
    if (m->next && m->full_features) {
        st = lv_fail(err, LV_ERR_UNSUPPORTED,
                     "%s: vision_feature_select_strategy \"full\" with llava_next packing "
                     "(transformers refuses it too)",
                     path);
        goto fail;
    }
    /* image_token_id == vocab_size: the virtual id of a vocabulary without
     * <image> (io/gguf_model.h); its rows are image features, never embedded */
    if (c->image_token_id < 0 || c->image_token_id > c->text.vocab_size) {
        st = lv_fail(err, LV_ERR_FORMAT, "%s: image_token_index %d is outside the vocabulary (%d)",
                     path, c->image_token_id, c->text.vocab_size);
        goto fail;
    }
    *out = m;
    return LV_OK;
fail:
    llava_free(m);
    return st;
}

static void unload(llava *m) {
    be *b = &m->backend;
    if (b->ops) {
        clip_weights_free(b, &m->vision_w);
        projector_weights_free(b, &m->proj_w);
        llm_weights_free(b, &m->text_w);
        b->ops->deinit(b);
    }
    memset(b, 0, sizeof *b);
    free(m->image_newline);
    m->image_newline = NULL;
    st_close(m->md.weights);
    m->md.weights = NULL;
    m->loaded = false;
}

/* The weights of each part, then the parts set up over them. */
static lv_status load_parts(llava *m, lv_err *err) {
    be *b = &m->backend;
    const lv_model_config *c = &m->md.config;
    const st_set *st = m->md.weights;
    lv_status s;
    if ((s = clip_weights_load(b, st, c, &m->vision_w, err)) ||
        (s = projector_weights_load(b, st, c, &m->proj_w, err)) ||
        (s = llm_weights_load(b, st, c, &m->text_w, err)) ||
        (s = clip_init(&m->vision, b, c, &m->vision_w, err)) ||
        (s = projector_init(&m->proj, b, c, &m->proj_w, err)) ||
        (s = llm_init(&m->text, b, &c->text, &m->text_w, err)))
        return s;
    if (m->next) {
        m->image_newline = malloc((size_t)c->text.dim * sizeof *m->image_newline);
        if (!m->image_newline) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
        if ((s = weights_read_vector(st, "image_newline", c->text.dim, m->image_newline, err)))
            return s;
    }
    return LV_OK;
}

lv_status llava_load(llava *m, const char *backend_name, int n_threads, lv_err *err) {
    if (m->loaded) return LV_OK;
    const struct be_ops *ops = be_find(backend_name);
    if (!ops) return lv_fail(err, LV_ERR_ARG, "unknown backend \"%s\" (cpu or ref)", backend_name);
    lv_status s = mdir_open_weights(&m->md, &m->md.weights, err);
    if (s) return s;
    m->backend.ops = ops;
    if ((s = ops->init(&m->backend, n_threads, err))) {
        m->backend.ops = NULL;
        unload(m);
        return s;
    }
    if ((s = load_parts(m, err))) {
        if (err && !strstr(err->msg, m->md.dir)) lv_err_prefix(err, "%s", m->md.dir);
        unload(m);
        return s;
    }
    m->loaded = true;
    return LV_OK;
}

void llava_free(llava *m) {
    if (!m) return;
    unload(m);
    tok_free(m->tok);
    mdir_close(&m->md);
    free(m);
}

/* ---- accessors ------------------------------------------------------------- */

const lv_model_config *llava_config(const llava *m) {
    return &m->md.config;
}
const lv_generation_config *llava_generation_config(const llava *m) {
    return &m->md.generation_config;
}
const tok *llava_tokenizer(const llava *m) {
    return m->tok;
}
const img_proc_params *llava_image_params(const llava *m) {
    return &m->image;
}
int llava_image_token_id(const llava *m) {
    return m->md.config.image_token_id;
}
int llava_vocab_size(const llava *m) {
    return m->md.config.text.vocab_size;
}
int llava_text_dim(const llava *m) {
    return m->md.config.text.dim;
}
int llava_max_ctx(const llava *m) {
    const lv_text_config *t = &m->md.config.text; /* as llm_init: a sliding window caps it */
    return t->sliding_window > 0 && t->sliding_window < t->max_pos ? t->sliding_window : t->max_pos;
}
bool llava_is_loaded(const llava *m) {
    return m->loaded;
}
int llava_n_threads(const llava *m) {
    return m->loaded ? m->backend.n_threads : 0;
}
const char *llava_dir(const llava *m) {
    return m->md.dir;
}
size_t llava_kv_bytes_per_pos(const llava *m) {
    const lv_text_config *t = &m->md.config.text;
    return 2 * (size_t)t->n_layers * (size_t)t->n_kv_heads * t->head_dim * sizeof(float);
}

/* ---- images -------------------------------------------------------------- */

/* Packing geometry of px (see pack.h). */
static pack_geom geom_of(const llava *m, const img_tensor *px) {
    return (pack_geom){.n_tiles = px->n_tiles,
                       .stride = m->vision.n_pos,
                       .first = m->full_features ? 0 : 1,
                       .side = m->vision.side,
                       .dim = m->md.config.text.dim,
                       .image_h = px->image_h,
                       .image_w = px->image_w,
                       .grid_h = px->grid_h,
                       .grid_w = px->grid_w};
}

int llava_image_token_count(const llava *m, int image_h, int image_w) {
    int n = img_num_image_tokens(image_h, image_w, &m->image);
    /* LlavaProcessor: (size/patch)² + 1, minus 1 for "default" */
    return n >= 0 && m->full_features ? n + 1 : n;
}

int llava_tensor_token_count(const llava *m, const img_tensor *px) {
    pack_geom g = geom_of(m, px);
    if (px->n_tiles < 1) return -1;
    return m->next ? pack_next_count(&g) : pack_flat_count(&g);
}

/* The tower's output (rows, vision dim) and the projector's (rows, text dim),
 * both downloaded; vis_host may be NULL. */
static lv_status run_tower(llava *m, const img_tensor *px, float *vis_host, float *proj_host,
                           lv_err *err) {
    be *b = &m->backend;
    int rows = clip_out_rows(&m->vision, px->n_tiles), td = m->proj.out_dim;
    size_t f = sizeof(float);
    float *vis = b->ops->alloc(b, (size_t)rows * m->vision.dim * f);
    float *proj = b->ops->alloc(b, (size_t)rows * td * f);
    float *tmp = b->ops->alloc(b, (size_t)rows * td * f);
    lv_status st = LV_OK;
    if (!vis || !proj || !tmp) {
        st = lv_fail(err, LV_ERR_NOMEM, "out of memory encoding %d tiles", px->n_tiles);
        goto done;
    }
    /* image_outputs = vision_tower(pixel_values).hidden_states[vision_feature_layer] */
    if ((st = clip_encode(&m->vision, px->data, px->n_tiles, vis, err))) goto done;
    /* image_features = multi_modal_projector(selected features) */
    projector_forward(&m->proj, proj, vis, tmp, rows);
    b->ops->download(b, proj_host, proj, (size_t)rows * td * f);
    if (vis_host) b->ops->download(b, vis_host, vis, (size_t)rows * m->vision.dim * f);
done:
    b->ops->release(b, vis);
    b->ops->release(b, proj);
    b->ops->release(b, tmp);
    return st;
}

/* Copies the feature rows of every tile (CLS dropped unless full) from src
 * (n_tiles · n_pos, dim) into dst (n_tiles · n_feat, dim). */
static void select_features(const llava *m, int n_tiles, int dim, const float *src, float *dst) {
    int first = m->full_features ? 0 : 1, n_pos = m->vision.n_pos, n_feat = n_pos - first;
    for (int t = 0; t < n_tiles; t++)
        memcpy(dst + (size_t)t * n_feat * dim, src + ((size_t)t * n_pos + first) * dim,
               (size_t)n_feat * dim * sizeof *dst);
}

static lv_status check_pixels(const llava *m, const img_tensor *px, const pack_geom *g,
                              int *n_tokens, lv_err *err) {
    int s = m->vision.image_size;
    if (px->n_tiles < 1 || px->tile_h != s || px->tile_w != s || !px->data)
        return lv_fail(err, LV_ERR_ARG,
                       "image tensor of %d tiles of %dx%d; the vision tower "
                       "takes tiles of %dx%d",
                       px->n_tiles, px->tile_h, px->tile_w, s, s);
    *n_tokens = m->next ? pack_next_count(g) : pack_flat_count(g);
    if (*n_tokens < 1)
        return lv_fail(err, LV_ERR_ARG,
                       "image tensor of %d tiles does not fit its %dx%d grid "
                       "(image %dx%d)",
                       px->n_tiles, px->grid_h, px->grid_w, px->image_w, px->image_h);
    return LV_OK;
}

lv_status llava_encode_image(llava *m, const img_tensor *px, bool keep, llava_image *out,
                             lv_err *err) {
    memset(out, 0, sizeof *out);
    if (!m->loaded) return lv_fail(err, LV_ERR_ARG, "the model's weights are not loaded");
    double t0 = now_ms();
    pack_geom g = geom_of(m, px);
    lv_status st = check_pixels(m, px, &g, &out->n_tokens, err);
    if (st) return st;
    int td = m->proj.out_dim, vd = m->vision.dim, rows = clip_out_rows(&m->vision, px->n_tiles);
    out->n_tiles = px->n_tiles;
    out->n_feat = m->vision.n_pos - (m->full_features ? 0 : 1);
    float *proj = malloc((size_t)rows * td * sizeof *proj);
    float *vis = keep ? malloc((size_t)rows * vd * sizeof *vis) : NULL;
    out->rows = malloc((size_t)out->n_tokens * td * sizeof *out->rows);
    if (!proj || (keep && !vis) || !out->rows) {
        st = lv_fail(err, LV_ERR_NOMEM, "out of memory for image features");
        goto done;
    }
    if ((st = run_tower(m, px, vis, proj, err))) goto done;
    /* pack_image_features (llava_next) or flatten (llava) */
    if (m->next)
        pack_next(&g, proj, m->image_newline, out->rows);
    else
        pack_flat(&g, proj, out->rows);
    if (keep) {
        size_t n = (size_t)px->n_tiles * out->n_feat;
        out->vision = malloc(n * vd * sizeof *out->vision);
        out->projected = malloc(n * td * sizeof *out->projected);
        if (!out->vision || !out->projected) {
            st = lv_fail(err, LV_ERR_NOMEM, "out of memory for image features");
            goto done;
        }
        select_features(m, px->n_tiles, vd, vis, out->vision);
        select_features(m, px->n_tiles, td, proj, out->projected);
    }
done:
    free(proj);
    free(vis);
    if (st) llava_image_free(out);
    out->ms = now_ms() - t0;
    return st;
}

void llava_image_free(llava_image *im) {
    free(im->rows);
    free(im->vision);
    free(im->projected);
    memset(im, 0, sizeof *im);
}

/* ---- prompt ---------------------------------------------------------------- */

static lv_status check_ids(const llava *m, const llm_seq *s, const int32_t *ids, int n,
                           const float *image_rows, int n_image_rows, lv_err *err) {
    int vocab = m->text.vocab_size, image_id = m->md.config.image_token_id, n_img = 0;
    if (n < 1) return lv_fail(err, LV_ERR_ARG, "empty prompt");
    for (int i = 0; i < n; i++) {
        n_img += ids[i] == image_id;
        if (ids[i] < 0 || (ids[i] >= vocab && ids[i] != image_id))
            return lv_fail(err, LV_ERR_ARG, "token id %d at %d is outside the vocabulary (%d)",
                           ids[i], i, vocab);
    }
    /* the virtual image id has no embedding: it needs image rows */
    if (image_id >= vocab && n_img && !image_rows)
        return lv_fail(err, LV_ERR_ARG, "the prompt has %d image tokens but no image features",
                       n_img);
    if (image_rows && n_img != n_image_rows)
        return lv_fail(err, LV_ERR_ARG,
                       "the prompt has %d image tokens but the images give %d features", n_img,
                       n_image_rows);
    if (s->pos + n > s->ctx)
        return lv_fail(err, LV_ERR_ARG,
                       "the prompt is %d tokens long but the context holds %d (%d free)", n, s->ctx,
                       s->ctx - s->pos);
    return LV_OK;
}

/* Writes image rows over the image ids among ids[0..n) (input rows 0..n),
 * one upload per run of consecutive image ids. *next: rows used so far. */
static void scatter_image_rows(llava *m, llm_seq *s, const int32_t *ids, int n,
                               const float *image_rows, int *next) {
    be *b = &m->backend;
    int dim = m->text.dim, image_id = m->md.config.image_token_id;
    float *x = llm_seq_input(s);
    for (int i = 0; i < n;) {
        if (ids[i] != image_id) {
            i++;
            continue;
        }
        int j = i;
        while (j < n && ids[j] == image_id) j++;
        b->ops->upload(b, x + (size_t)i * dim, image_rows + (size_t)*next * dim,
                       (size_t)(j - i) * dim * sizeof *x);
        *next += j - i;
        i = j;
    }
}

lv_status llava_prefill(llava *m, llm_seq *s, const int32_t *ids, int n, const float *image_rows,
                        int n_image_rows, float *logits, lv_err *err) {
    if (!m->loaded) return lv_fail(err, LV_ERR_ARG, "the model's weights are not loaded");
    lv_status st = check_ids(m, s, ids, n, image_rows, n_image_rows, err);
    if (st) return st;
    /* the virtual image id (one past embed_tokens) is embedded as id 0: its
     * rows are overwritten by image features before the forward */
    int image_id = m->md.config.image_token_id, cap = n < s->max_batch ? n : s->max_batch;
    int32_t *safe = image_id >= m->text.vocab_size ? malloc((size_t)cap * sizeof *safe) : NULL;
    if (image_id >= m->text.vocab_size && !safe)
        return lv_fail(err, LV_ERR_NOMEM, "out of memory for %d prompt ids", cap);
    int used = 0;
    for (int c0 = 0; c0 < n && !st; c0 += s->max_batch) {
        int nb = n - c0 < s->max_batch ? n - c0 : s->max_batch;
        bool last = c0 + nb == n;
        const int32_t *chunk = ids + c0;
        if (safe) {
            for (int i = 0; i < nb; i++) safe[i] = chunk[i] == image_id ? 0 : chunk[i];
            chunk = safe;
        }
        /* inputs_embeds = embed_tokens(ids); inputs_embeds[ids == image] = image features */
        llm_embed(&m->text, s, chunk, nb);
        if (image_rows) scatter_image_rows(m, s, ids + c0, nb, image_rows, &used);
        st = llm_forward(&m->text, s, nb, last ? logits : NULL, false, err);
    }
    free(safe);
    return st;
}

lv_status llava_decode(llava *m, llm_seq *s, int32_t id, float *logits, lv_err *err) {
    if (id < 0 || id >= m->text.vocab_size)
        return lv_fail(err, LV_ERR_ARG, "token id %d is outside the vocabulary", id);
    if (s->pos >= s->ctx)
        return lv_fail(err, LV_ERR_ARG, "the context of %d tokens is full", s->ctx);
    llm_embed(&m->text, s, &id, 1);
    return llm_forward(&m->text, s, 1, logits, false, err);
}
