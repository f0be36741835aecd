/*
 * llava.c - the LLaVA model, one function per step (see llava.h).
 *
 *   llava_open          config.json, tokenizer, preprocessor → image parameters
 *   llava_load          weights → backend (clip, projector, llm)
 *   llava_encoder_*     pixels → CLIP (a tile, a stage, a few rows at a time)
 *                       → projector → rows packed into the request's features;
 *                       Idefics3 / SmolVLM: each frame → SigLIP → post_layernorm
 *                       → connector (pixel shuffle + linear), written straight into
 *                       the features in frame order (tiles row-major, global last)
 *   llava_forward       each sequence's ids → embed_tokens, feature rows over
 *                       the <image> ids (transformers: inputs_embeds.masked_scatter)
 *                       → the decoder over every row at once
 *
 * Image features stay in backend buffers from the tower to the decoder's
 * input: packing is a row map (model/pack.h) applied with buffer copies.
 */
#include "model/llava.h"

#include "base/clock.h"
#include "image/anyres.h"
#include "image/idefics3.h"
#include "model/image_params.h"
#include "model/llava_impl.h"
#include "model/pack.h"
#include "backend/tp.h"
#include "text/tokenizer_gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    m->idefics3 = hf_is_idefics3(c);
    if (m->idefics3) {
        /* The frames are the tower's input: max_image_size must be its
         * image_size (every released checkpoint). A directory without
         * preprocessor_config.json gets the class defaults (364), which fit
         * no released tower: there the frame is the tower's image_size and
         * the longest edge 4 frames, as in every released config. */
        if (!m->md.has_preproc) {
            m->image.max_image_size = m->image.crop_height = m->image.crop_width =
                c->vision.image_size;
            m->image.longest_edge = 4 * c->vision.image_size;
        }
        if (m->image.kind != IMG_PROC_IDEFICS3 || m->image.max_image_size != c->vision.image_size) {
            st = lv_fail(err, LV_ERR_FORMAT,
                         "%s: the image processor (%s, frames of %d) does not fit the vision "
                         "tower's image_size %d",
                         path,
                         m->image.kind == IMG_PROC_IDEFICS3 ? "Idefics3/SmolVLM" : "not Idefics3",
                         m->image.max_image_size, c->vision.image_size);
            goto fail;
        }
        m->full_features = true; /* no CLS to drop: every tower row is a feature */
    }
    m->full_features = strcmp(c->feature_select_strategy, "full") == 0;
    if (m->next && m->full_features && !m->idefics3) {
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
        b->ops->release(b, m->image_newline);
        clip_weights_free(b, &m->vision_w);
        projector_weights_free(b, &m->proj_w);
        connector_weights_free(b, &m->conn_w);
        llm_weights_free(b, &m->text_w);
        b->ops->deinit(b);
    }
    memset(b, 0, sizeof *b);
    m->device[0] = '\0';
    m->image_newline = NULL; /* released with the backend's buffers above */
    st_close(m->md.weights);
    m->md.weights = NULL;
    m->loaded = false;
}

/* The weights of each part (each tensor counted for the progress and the
 * summary, llava_info.c), then the parts set up over them. */
static lv_status load_parts(llava *m, lv_err *err) {
    be *b = &m->backend;
    const lv_model_config *c = &m->md.config;
    const st_set *st = m->md.weights;
    weights_progress hook = llava_load_hook(m);
    lv_status s;
    if (m->idefics3) {
        if ((llava_load_part(m, 0), s = clip_weights_load(b, st, c, &hook, &m->vision_w, err)) ||
            (llava_load_part(m, 1), s = connector_weights_load(b, st, c, &hook, &m->conn_w, err)) ||
            (llava_load_part(m, 2), s = llm_weights_load(b, st, c, &hook, &m->text_w, err)) ||
            (s = clip_init(&m->vision, b, c, &m->vision_w, err)) ||
            (s = connector_init(&m->conn, b, c, &m->conn_w, err)) ||
            (s = llm_init(&m->text, b, &c->text, &m->text_w, err)))
            return s;
        return LV_OK;
    }
    if ((llava_load_part(m, 0), s = clip_weights_load(b, st, c, &hook, &m->vision_w, err)) ||
        (llava_load_part(m, 1), s = projector_weights_load(b, st, c, &hook, &m->proj_w, err)) ||
        (llava_load_part(m, 2), s = llm_weights_load(b, st, c, &hook, &m->text_w, err)) ||
        (s = clip_init(&m->vision, b, c, &m->vision_w, err)) ||
        (s = projector_init(&m->proj, b, c, &m->proj_w, err)) ||
        (s = llm_init(&m->text, b, &c->text, &m->text_w, err)))
        return s;
    if (m->next) {
        float *host = malloc((size_t)c->text.dim * sizeof *host);
        if (!host) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
        if ((s = weights_read_vector(st, "image_newline", c->text.dim, host, err))) {
            free(host);
            return s;
        }
        m->image_newline = b->ops->vector_init(b, BE_F32, c->text.dim, host);
        free(host);
        if (!m->image_newline) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
        const st_tensor *t = st_find(st, "image_newline");
        llava_load_part(m, 1); /* the projector's side of the packing */
        hook.on_tensor(hook.ud, NULL, t ? t->nbytes : 0, c->text.dim);
    }
    return LV_OK;
}

/* Whether the model's shapes split n ways (tensor parallelism): heads, key/
 * value heads, FFN columns, the vocabulary (an untied lm_head), and the
 * tower's heads and widths unless it is replicated. */
static lv_status tp_check(const llava *m, int n, lv_err *err) {
    if (n < 1 || n > TP_MAX_RANKS)
        return lv_fail(err, LV_ERR_ARG, "tensor parallel: %d ranks (1..%d)", n, TP_MAX_RANKS);
    const lv_text_config *t = &m->md.config.text;
    const lv_vision_config *v = &m->md.config.vision;
    bool tower = !m->tp_whole_tower; /* the tower's shapes split too */
    struct {
        const char *what;
        int value;
        bool needed, in_tower;
    } need[] = {
        {"text attention heads", t->n_heads, true, false},
        {"text key/value heads", t->n_kv_heads, true, false},
        {"text FFN width (intermediate_size)", t->hidden_dim, true, false},
        {"vocabulary (lm_head rows)", t->vocab_size, !t->tie_word_embeddings, false},
        {"vision attention heads", v->n_heads, tower, true},
        {"vision width (hidden_size)", v->dim, tower, true},
        {"vision FFN width (intermediate_size)", v->hidden_dim, tower, true},
    };
    for (size_t i = 0; i < LV_ARRAY_LEN(need); i++)
        if (need[i].needed && need[i].value % n)
            return lv_fail(err, LV_ERR_UNSUPPORTED,
                           "tensor parallel %d: the model's %s (%d) do not split %d ways%s", n,
                           need[i].what, need[i].value, n,
                           need[i].in_tower ? " (replicate the vision tower: --tp-whole-tower)"
                                            : "");
    return LV_OK;
}

lv_status llava_load(llava *m, const char *backend_name, int n_threads, lv_err *err) {
    if (m->loaded) return LV_OK;
    int device = 0;
    const struct be_ops *ops = be_find_device(backend_name, &device);
    if (!ops)
        return lv_fail(err, LV_ERR_ARG, "unknown backend \"%s\" (%s)",
                       backend_name ? backend_name : "(null)", be_names());
    llava_load_begin(m);
    lv_status s = mdir_open_weights(&m->md, &m->md.weights, err);
    if (s) return s;
    llava_load_mapped(m, m->md.weights);
    m->backend.ops = ops;
    m->backend.exact = m->exact;
    m->backend.device = device;
    m->backend.replicate_tower = m->tp_whole_tower;
    if (m->tp > 0 && (s = tp_check(m, m->tp, err))) {
        m->backend.ops = NULL;
        unload(m);
        return s;
    }
    if (m->tp > 0) {                 /* n ranks of ops through backend/tp.c */
        tp_comm_factory comm = NULL; /* the host communicator: cpu, ref */
#ifdef LLAVA_HAVE_CUDA
        if (ops == &be_cuda_ops) comm = tp_nccl_comm_new;
#endif
        s = tp_setup(&m->backend, ops, m->tp, device, n_threads, comm, err);
    } else {
        s = ops->init(&m->backend, n_threads, err);
    }
    if (s) {
        m->backend.ops = NULL;
        unload(m);
        return s;
    }
    if ((s = load_parts(m, err))) {
        if (err && !strstr(err->msg, m->md.dir)) lv_err_prefix(err, "%s", m->md.dir);
        unload(m);
        return s;
    }
    m->text.kv_f16 = !m->exact; /* exact: the f32 cache the golden comparisons hold for */
    snprintf(m->device, sizeof m->device, "%s", backend_name);
    m->loaded = true;
    llava_load_end(m);
    return LV_OK;
}

bool llava_backend_known(const char *name) {
    return be_find_device(name, NULL) != NULL;
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
const lv_preproc_config *llava_preproc_config(const llava *m) {
    return &m->md.preproc;
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
void llava_set_exact(llava *m, bool exact) {
    if (!m->loaded) m->exact = exact;
}

void llava_set_tensor_parallel(llava *m, int n, bool replicate_tower) {
    if (m->loaded) return;
    m->tp = n;
    m->tp_whole_tower = replicate_tower;
}

int llava_tensor_parallel(const llava *m) {
    int n = tp_ranks(&m->backend);
    return n > 0 ? n : 1;
}

bool llava_exact(const llava *m) {
    return m->exact;
}

int llava_n_threads(const llava *m) {
    return m->loaded ? m->backend.n_threads : 0;
}
size_t llava_kv_bytes_per_pos(const llava *m) {
    if (m->loaded) return llm_kv_bytes_per_pos(&m->text); /* in the cache's dtype */
    const lv_text_config *t = &m->md.config.text;         /* llm_init's default: f16 */
    return 2 * (size_t)t->n_layers * (size_t)t->n_kv_heads * t->head_dim * 2;
}

const char *llava_device(const llava *m) {
    return m->device;
}

bool llava_memory_info(const llava *m, size_t *used, size_t *total) {
    be *b = (be *)&m->backend; /* the op reads the device; the model stays as it was */
    return m->loaded && b->ops->memory_info && b->ops->memory_info(b, used, total);
}

lv_status llava_device_status(const llava *m, lv_err *err) {
    be *b = (be *)&m->backend;
    return m->loaded && b->ops->status ? b->ops->status(b, err) : LV_OK;
}

/* ---- image features ------------------------------------------------------ */

/* The tower's geometry from the config (the same numbers clip_init sets). */
static int tower_side(const llava *m) {
    const lv_vision_config *v = &m->md.config.vision;
    return v->patch_size > 0 ? v->image_size / v->patch_size : 0;
}

/* Packing geometry of px (see pack.h). */
static pack_geom geom_of(const llava *m, const img_tensor *px) {
    int side = tower_side(m);
    return (pack_geom){.n_tiles = px->n_tiles,
                       .stride = 1 + side * side,
                       .first = m->full_features ? 0 : 1,
                       .side = side,
                       .dim = m->md.config.text.dim,
                       .image_h = px->image_h,
                       .image_w = px->image_w,
                       .grid_h = px->grid_h,
                       .grid_w = px->grid_w};
}

/* Idefics3 / SmolVLM: the frames an image becomes, rows·cols tiles + the
 * global image when split, else 1 (smolvlm.md §3.4); -1 for a bad size. */
static int idefics3_frames(const llava *m, int image_h, int image_w) {
    if (image_h < 1 || image_w < 1) return -1;
    int rows, cols;
    img_idefics3_grid(image_h, image_w, &m->image, false, &rows, &cols);
    return rows * cols > 0 ? rows * cols + 1 : 1;
}

int llava_image_token_count(const llava *m, int image_h, int image_w) {
    if (m->idefics3) {
        int frames = idefics3_frames(m, image_h, image_w);
        return frames < 0 ? -1 : frames * m->md.config.image_seq_length;
    }
    int n = img_num_image_tokens(image_h, image_w, &m->image);
    /* LlavaProcessor: (size/patch)² + 1, minus 1 for "default" */
    return n >= 0 && m->full_features ? n + 1 : n;
}

int llava_tensor_token_count(const llava *m, const img_tensor *px) {
    pack_geom g = geom_of(m, px);
    if (px->n_tiles < 1) return -1;
    if (m->idefics3) { /* grid_h·grid_w tiles + the global image, or one frame (grid 0x0) */
        if (px->grid_h < 0 || px->grid_w < 0) return -1;
        int want = px->grid_h * px->grid_w > 0 ? px->grid_h * px->grid_w + 1 : 1;
        return px->n_tiles == want ? px->n_tiles * m->md.config.image_seq_length : -1;
    }
    return m->next ? pack_next_count(&g) : pack_flat_count(&g);
}

lv_status llava_features_new(llava *m, int n_rows, llava_features **out, lv_err *err) {
    *out = NULL;
    if (!m->loaded) return lv_fail(err, LV_ERR_ARG, "the model's weights are not loaded");
    if (n_rows < 1) return lv_fail(err, LV_ERR_ARG, "%d image feature rows", n_rows);
    llava_features *f = calloc(1, sizeof *f);
    be *b = &m->backend;
    if (f) f->rows = b->ops->alloc(b, (size_t)n_rows * m->md.config.text.dim * sizeof(float));
    if (!f || !f->rows) {
        free(f);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory for %d image feature rows", n_rows);
    }
    f->m = m;
    f->n_rows = n_rows;
    *out = f;
    return LV_OK;
}

void llava_features_free(llava_features *f) {
    if (!f) return;
    be *b = &f->m->backend;
    b->ops->release(b, f->rows);
    free(f);
}

int llava_features_rows(const llava_features *f) {
    return f->n_rows;
}

void llava_features_read(const llava_features *f, int row0, int n, float *host) {
    be *b = &f->m->backend;
    size_t dim = (size_t)f->m->md.config.text.dim;
    b->ops->download(b, host, f->rows + (size_t)row0 * dim, (size_t)n * dim * sizeof *host);
}

void llava_features_copy_rows(llava_features *dst, int dst_row, const llava_features *src,
                              int src_row, int n) {
    be *b = &dst->m->backend;
    size_t dim = (size_t)dst->m->md.config.text.dim;
    b->ops->copy(b, dst->rows + (size_t)dst_row * dim, src->rows + (size_t)src_row * dim,
                 (size_t)n * dim * sizeof *dst->rows);
}

/* An image in pieces: tile after tile, stage after stage (clip.h), each a
 * range of rows, then the projector over the tile's rows, then the packing.
 * Idefics3 / SmolVLM: the last stage of a frame is post_layernorm of its
 * rows and the connector of every band they complete (connector.h),
 * written into the frame's rows of the features: no packing. */
enum { ST_EMBED, ST_IN, ST_OUT, ST_PROJ }; /* piece kinds (llava_encoder_next) */

struct llava_encoder {
    llava *m;
    const img_tensor *px;
    llava_features *f;
    int row0;  /* the image's first row in f */
    bool keep; /* vis holds every tile (llava_encode_image keep) */
    pack_geom g;
    int n_tokens; /* rows it packs */
    int tile;     /* the tile being encoded; n_tiles once all are */
    int stage;    /* 0 embed, 1 + 2l / 2 + 2l layer l in / out, 1 + 2L projector */
    int row;      /* the next row of the stage */
    bool done;
    float *vis;  /* backend: the tower's hidden states, (n_pos, vision dim) per tile kept */
    float *proj; /* backend (n_tiles · n_pos, text dim): projector output */
    float *tmp;  /* backend (n_pos, text dim): projector hidden; Idefics3: (n_pos, vision
                    dim), the pixel shuffle's rows */
    clip_tile_scratch s;
    double ms;
};

static int n_stages(const llava_encoder *e) {
    return 2 + 2 * e->m->vision.n_layers;
}

static lv_status check_pixels(const llava *m, const img_tensor *px, const pack_geom *g,
                              int *n_tokens, lv_err *err) {
    int s = m->vision.image_size;
    if (px->n_tiles < 1 || px->tile_h != s || px->tile_w != s || !px->data)
        return lv_fail(err, LV_ERR_ARG,
                       "image tensor of %d tiles of %dx%d; the vision tower "
                       "takes tiles of %dx%d",
                       px->n_tiles, px->tile_h, px->tile_w, s, s);
    *n_tokens = m->idefics3 ? llava_tensor_token_count(m, px)
                : m->next   ? pack_next_count(g)
                            : pack_flat_count(g);
    if (*n_tokens < 1)
        return lv_fail(err, LV_ERR_ARG,
                       "image tensor of %d tiles does not fit its %dx%d grid "
                       "(image %dx%d)",
                       px->n_tiles, px->grid_h, px->grid_w, px->image_w, px->image_h);
    return LV_OK;
}

void llava_encoder_free(llava_encoder *e) {
    if (!e) return;
    be *b = &e->m->backend;
    clip_tile_scratch_free(&e->m->vision, &e->s);
    b->ops->release(b, e->vis);
    b->ops->release(b, e->proj);
    b->ops->release(b, e->tmp);
    free(e);
}

size_t llava_encoder_bytes(const llava *m, const img_tensor *px) {
    const clip *c = &m->vision;
    size_t f4 = sizeof(float), n_pos = (size_t)c->n_pos,
           cols = 3 * (size_t)c->patch_size * c->patch_size;
    size_t ff = (size_t)c->hidden_dim > cols ? (size_t)c->hidden_dim : cols;
    size_t tiles = px->n_tiles > 0 ? (size_t)px->n_tiles : 1;
    if (m->idefics3)
        return f4 * (n_pos * c->dim                    /* vis */
                     + n_pos * c->dim                  /* tmp: the shuffled rows */
                     + 5 * n_pos * c->dim + n_pos * ff /* the tile scratch */
                     + n_pos * cols);                  /* patches */
    return f4 * (n_pos * c->dim                        /* vis */
                 + tiles * n_pos * m->proj.out_dim     /* proj */
                 + n_pos * m->proj.out_dim             /* tmp */
                 + 5 * n_pos * c->dim + n_pos * ff     /* the tile scratch */
                 + n_pos * cols);                      /* patches */
}

lv_status llava_encoder_new(llava *m, const img_tensor *px, llava_features *f, int row0, bool keep,
                            llava_encoder **out, lv_err *err) {
    *out = NULL;
    if (!m->loaded) return lv_fail(err, LV_ERR_ARG, "the model's weights are not loaded");
    pack_geom g = geom_of(m, px);
    int n_tokens = 0;
    lv_status st = check_pixels(m, px, &g, &n_tokens, err);
    if (st) return st;
    if (row0 < 0 || row0 > f->n_rows - n_tokens)
        return lv_fail(err, LV_ERR_ARG,
                       "the image gives %d features but rows %d.. of %d are left for it", n_tokens,
                       row0, f->n_rows);
    llava_encoder *e = calloc(1, sizeof *e);
    if (!e) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    *e = (llava_encoder){
        .m = m, .px = px, .f = f, .row0 = row0, .keep = keep, .g = g, .n_tokens = n_tokens};
    be *b = &m->backend;
    size_t f4 = sizeof(float), n_pos = (size_t)m->vision.n_pos;
    size_t vis_rows = keep ? (size_t)px->n_tiles * n_pos : n_pos;
    e->vis = b->ops->alloc(b, vis_rows * m->vision.dim * f4);
    if (m->idefics3) {
        e->tmp = b->ops->alloc(b, n_pos * m->vision.dim * f4);
    } else {
        e->proj = b->ops->alloc(b, (size_t)px->n_tiles * n_pos * m->proj.out_dim * f4);
        e->tmp = b->ops->alloc(b, n_pos * m->proj.out_dim * f4);
    }
    if (!e->vis || (!m->idefics3 && !e->proj) || !e->tmp) {
        llava_encoder_free(e);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory encoding %d tiles", px->n_tiles);
    }
    if ((st = clip_tile_scratch_init(&m->vision, &e->s, err))) {
        llava_encoder_free(e);
        return st;
    }
    *out = e;
    return LV_OK;
}

int llava_encoder_next(const llava_encoder *e, int *kind) {
    if (e->done) return 0;
    int k = e->stage == 0                 ? ST_EMBED
            : e->stage == n_stages(e) - 1 ? ST_PROJ
            : e->stage % 2                ? ST_IN
                                          : ST_OUT;
    if (kind) *kind = k;
    return e->m->vision.n_pos - e->row;
}

bool llava_encoder_done(const llava_encoder *e) {
    return e->done;
}

int llava_encoder_tiles(const llava_encoder *e) {
    return e->px->n_tiles;
}

double llava_encoder_ms(const llava_encoder *e) {
    return e->ms;
}

/* pack_image_features (llava_next) or flatten (llava): the packed rows
 * copied from the projector output (and image_newline) into the features,
 * one copy per run of consecutive source rows. */
static lv_status pack_rows(llava_encoder *e, lv_err *err) {
    llava *m = e->m;
    be *b = &m->backend;
    int *src = malloc((size_t)e->n_tokens * sizeof *src);
    if (!src) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    if (m->next)
        pack_next_map(&e->g, src);
    else
        pack_flat_map(&e->g, src);
    size_t dim = (size_t)m->md.config.text.dim, row = dim * sizeof(float);
    float *dst = e->f->rows + (size_t)e->row0 * dim;
    for (int i = 0; i < e->n_tokens;) {
        if (src[i] < 0) {
            b->ops->copy(b, dst + (size_t)i * dim, m->image_newline, row);
            i++;
            continue;
        }
        int j = i + 1;
        while (j < e->n_tokens && src[j] == src[j - 1] + 1) j++;
        b->ops->copy(b, dst + (size_t)i * dim, e->proj + (size_t)src[i] * dim,
                     (size_t)(j - i) * row);
        i = j;
    }
    free(src);
    return LV_OK;
}

lv_status llava_encoder_run(llava_encoder *e, int max_rows, lv_err *err) {
    if (e->done) return LV_OK;
    double t0 = lv_now_ms();
    llava *m = e->m;
    const clip *c = &m->vision;
    int n_pos = c->n_pos, left = n_pos - e->row;
    int n = max_rows > 0 && max_rows < left ? max_rows : left;
    size_t tile_px = (size_t)3 * c->image_size * c->image_size;
    const float *px = e->px->data + (size_t)e->tile * tile_px;
    float *vis = e->vis + (e->keep ? (size_t)e->tile * n_pos * c->dim : 0);
    if (e->stage == n_stages(e) - 1 && m->idefics3) {
        /* last_hidden_state = post_layernorm(encoder output) for the rows, then
         * connector(last_hidden_state) for the bands they complete, into the
         * frame's rows of the features */
        const connector *cn = &m->conn;
        clip_post_ln(c, vis, e->row, n);
        int band = cn->scale * cn->side, b0 = e->row / band, b1 = (e->row + n) / band;
        size_t td = (size_t)cn->out_dim;
        size_t out = (size_t)e->row0 + (size_t)e->tile * connector_rows(cn) + (size_t)b0 * cn->grid;
        connector_bands(cn, e->f->rows + out * td, vis, e->tmp, b0, b1 - b0);
    } else if (e->stage == n_stages(e) - 1) {
        /* image_features = multi_modal_projector(hidden_states[layer]) for the rows */
        size_t r = (size_t)e->tile * n_pos + e->row, td = m->proj.out_dim;
        projector_forward(&m->proj, e->proj + r * td, vis + (size_t)e->row * c->dim,
                          e->tmp + (size_t)e->row * td, n);
    } else {
        int l = (e->stage - 1) / 2;
        clip_stage st = e->stage == 0 ? CLIP_EMBED : e->stage % 2 ? CLIP_ATTN_IN : CLIP_ATTN_OUT;
        clip_tile_stage(c, st, l, px, vis, &e->s, e->row, n);
    }
    lv_status st = LV_OK;
    if ((e->row += n) == n_pos) {
        e->row = 0;
        if (++e->stage == n_stages(e)) {
            e->stage = 0;
            if (++e->tile == e->px->n_tiles) {
                st = m->idefics3 ? LV_OK : pack_rows(e, err);
                e->done = st == LV_OK;
                clip_tile_scratch_free(c, &e->s);
            }
        }
    }
    e->ms += lv_now_ms() - t0;
    return st;
}

/* Copies the feature rows of every tile (CLS dropped unless full; SigLIP has
 * none) from the backend buffer src (n_tiles · n_pos, dim) into host dst
 * (n_tiles · n_feat, dim). */
static void select_features(const llava *m, int n_tiles, int dim, const float *src, float *dst) {
    const be *b = &m->backend;
    int first = m->full_features || !m->vision.has_cls ? 0 : 1, n_pos = m->vision.n_pos,
        n_feat = n_pos - first;
    for (int t = 0; t < n_tiles; t++)
        b->ops->download((be *)b, dst + (size_t)t * n_feat * dim,
                         src + ((size_t)t * n_pos + first) * dim,
                         (size_t)n_feat * dim * sizeof *dst);
}

lv_status llava_encode_image(llava *m, const img_tensor *px, bool keep, llava_image *out,
                             lv_err *err) {
    memset(out, 0, sizeof *out);
    if (!m->loaded) return lv_fail(err, LV_ERR_ARG, "the model's weights are not loaded");
    pack_geom g = geom_of(m, px);
    int n_tokens = 0;
    lv_status st = check_pixels(m, px, &g, &n_tokens, err);
    if (st) return st;
    llava_features *f = NULL;
    llava_encoder *e = NULL;
    if ((st = llava_features_new(m, n_tokens, &f, err)) ||
        (st = llava_encoder_new(m, px, f, 0, keep, &e, err)))
        goto done;
    while (!st && !e->done) st = llava_encoder_run(e, 0, err);
    if (st) goto done;
    int td = m->md.config.text.dim, vd = m->vision.dim;
    out->n_tokens = n_tokens;
    out->n_tiles = px->n_tiles;
    out->n_feat = m->vision.n_pos - (m->full_features || !m->vision.has_cls ? 0 : 1);
    out->n_proj = m->idefics3 ? connector_rows(&m->conn) : out->n_feat;
    out->ms = e->ms;
    out->rows = malloc((size_t)n_tokens * td * sizeof *out->rows);
    if (keep) {
        size_t nf = (size_t)px->n_tiles * out->n_feat, np = (size_t)px->n_tiles * out->n_proj;
        out->vision = malloc(nf * vd * sizeof *out->vision);
        out->projected = malloc(np * td * sizeof *out->projected);
    }
    if (!out->rows || (keep && (!out->vision || !out->projected))) {
        st = lv_fail(err, LV_ERR_NOMEM, "out of memory for image features");
        goto done;
    }
    llava_features_read(f, 0, n_tokens, out->rows);
    if (keep) {
        select_features(m, px->n_tiles, vd, e->vis, out->vision);
        if (m->idefics3) /* the connector's rows are the features, frame after frame */
            memcpy(out->projected, out->rows, (size_t)n_tokens * td * sizeof *out->rows);
        else
            select_features(m, px->n_tiles, td, e->proj, out->projected);
    }
done:
    llava_encoder_free(e);
    llava_features_free(f);
    if (st) llava_image_free(out);
    return st;
}

void llava_image_free(llava_image *im) {
    free(im->rows);
    free(im->vision);
    free(im->projected);
    memset(im, 0, sizeof *im);
}

/* ---- sequences and the forward ----------------------------------------------- */

lv_status llava_seq_new(llava *m, int ctx, llava_seq **out, lv_err *err) {
    *out = NULL;
    if (!m->loaded) return lv_fail(err, LV_ERR_ARG, "the model's weights are not loaded");
    llava_seq *s = calloc(1, sizeof *s);
    if (!s) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    lv_status st = llm_seq_init(&m->text, ctx, &s->kv, err);
    if (st) {
        free(s);
        return st;
    }
    *out = s;
    return LV_OK;
}

void llava_seq_free(llava_seq *s) {
    if (!s) return;
    llm_seq_deinit(&s->kv);
    free(s);
}

int llava_seq_pos(const llava_seq *s) {
    return s->kv.pos;
}

int llava_seq_ctx(const llava_seq *s) {
    return s->kv.ctx;
}

void llava_seq_truncate(llava_seq *s, int pos) {
    llm_seq_truncate(&s->kv, pos);
}

lv_status llava_seq_copy_prefix(const llava_seq *src, int n_pos, int ctx, llava_seq **out,
                                lv_err *err) {
    *out = NULL;
    llava_seq *s = calloc(1, sizeof *s);
    if (!s) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    lv_status st = llm_seq_copy_prefix(&src->kv, n_pos, ctx, &s->kv, err);
    if (st) {
        free(s);
        return st;
    }
    *out = s;
    return LV_OK;
}

lv_status llava_batch_new(llava *m, int max_rows, int max_seqs, llava_batch **out, lv_err *err) {
    *out = NULL;
    if (!m->loaded) return lv_fail(err, LV_ERR_ARG, "the model's weights are not loaded");
    llava_batch *bt = calloc(1, sizeof *bt);
    if (!bt) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    lv_status st = llm_batch_init(&m->text, max_rows, max_seqs, &bt->bt, err);
    if (st) {
        free(bt);
        return st;
    }
    bt->m = m;
    bt->seqs = calloc((size_t)max_seqs, sizeof *bt->seqs);
    bt->n_tok = calloc((size_t)max_seqs, sizeof *bt->n_tok);
    if (!bt->seqs || !bt->n_tok) {
        llava_batch_free(bt);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    }
    *out = bt;
    return LV_OK;
}

void llava_batch_free(llava_batch *bt) {
    if (!bt) return;
    llm_batch_deinit(&bt->bt);
    free(bt->seqs);
    free(bt->n_tok);
    free(bt);
}

int llava_count_image_ids(const llava *m, const int32_t *ids, int n) {
    int image_id = m->md.config.image_token_id, k = 0;
    for (int i = 0; i < n; i++) k += ids[i] == image_id;
    return k;
}

lv_status llava_check_ids(const llava *m, const int32_t *ids, int n, bool with_images,
                          lv_err *err) {
    int vocab = m->md.config.text.vocab_size, image_id = m->md.config.image_token_id;
    for (int k = 0; k < n; k++) {
        /* the virtual image id (one past embed_tokens) has no embedding: it needs features */
        bool virt = ids[k] == image_id && image_id >= vocab;
        if (ids[k] < 0 || (ids[k] >= vocab && !(virt && with_images)))
            return lv_fail(err, LV_ERR_ARG, "token id %d at %d is outside the vocabulary (%d)%s",
                           ids[k], k, vocab,
                           virt ? ": the virtual image id, which needs image features" : "");
    }
    return LV_OK;
}

static lv_status check_input(const llava *m, const llava_input *in, int i, lv_err *err) {
    if (in->n < 1) return lv_fail(err, LV_ERR_ARG, "input %d brings %d ids", i, in->n);
    lv_status st = llava_check_ids(m, in->ids, in->n, in->features != NULL, err);
    if (st) return st;
    int n_img = llava_count_image_ids(m, in->ids, in->n);
    if (in->features && (in->feature_row < 0 || in->feature_row + n_img > in->features->n_rows))
        return lv_fail(err, LV_ERR_ARG,
                       "the prompt has %d more image tokens but the images give %d features "
                       "(%d used)",
                       n_img, in->features->n_rows, in->feature_row);
    if (llava_seq_pos(in->seq) + in->n > llava_seq_ctx(in->seq))
        return lv_fail(err, LV_ERR_ARG,
                       "the prompt is %d tokens long but the context holds %d (%d free)", in->n,
                       llava_seq_ctx(in->seq), llava_seq_ctx(in->seq) - llava_seq_pos(in->seq));
    return LV_OK;
}

/* inputs_embeds = embed_tokens(ids); inputs_embeds[ids == image] = image features
 * (masked_scatter, in order), for every input, rows one after another. Runs
 * of image ids are copied from their features; the text rows between them
 * (across inputs too: a decode step's tokens) are embedded in one op each.
 * With features the image id never reaches embed_tokens (so the virtual id
 * needs no row). */
static void embed_inputs(llava *m, llava_batch *bt, const llava_input *in, int n_in) {
    be *b = &m->backend;
    int dim = m->text.dim, image_id = m->md.config.image_token_id;
    float *x = llm_batch_input(&bt->bt);
    int text0 = 0, row = 0; /* text rows [text0, row) wait for their embedding */
    for (int k = 0; k < n_in; k++) {
        const int32_t *ids = in[k].ids;
        int next = in[k].feature_row;
        for (int i = 0; i < in[k].n;) {
            bool img = in[k].features && ids[i] == image_id;
            int j = i + 1;
            while (j < in[k].n && (in[k].features && ids[j] == image_id) == img) j++;
            if (img) {
                if (row > text0) llm_batch_embed_ids(&m->text, &bt->bt, text0, row - text0);
                b->ops->copy(b, x + (size_t)row * dim, in[k].features->rows + (size_t)next * dim,
                             (size_t)(j - i) * dim * sizeof *x);
                next += j - i;
                text0 = row + (j - i);
            } else {
                llm_batch_set_ids(&m->text, &bt->bt, row, ids + i, j - i);
            }
            row += j - i;
            i = j;
        }
    }
    if (row > text0) llm_batch_embed_ids(&m->text, &bt->bt, text0, row - text0);
}

lv_status llava_forward(llava *m, llava_batch *bt, const llava_input *in, int n_in, float *logits,
                        lv_err *err) {
    if (!m->loaded) return lv_fail(err, LV_ERR_ARG, "the model's weights are not loaded");
    if (n_in < 1 || n_in > bt->bt.max_seqs)
        return lv_fail(err, LV_ERR_ARG, "a batch of %d sequences; 1..%d allowed", n_in,
                       bt->bt.max_seqs);
    int rows = 0;
    for (int i = 0; i < n_in; i++) {
        lv_status st = check_input(m, &in[i], i, err);
        if (st) return st;
        if (rows > bt->bt.max_rows - in[i].n)
            return lv_fail(err, LV_ERR_ARG, "the batch holds %d rows at most", bt->bt.max_rows);
        rows += in[i].n;
    }
    embed_inputs(m, bt, in, n_in);
    for (int i = 0; i < n_in; i++) {
        bt->seqs[i] = &in[i].seq->kv;
        bt->n_tok[i] = in[i].n;
    }
    return llm_forward(&m->text, &bt->bt, bt->seqs, bt->n_tok, n_in, logits, err);
}
