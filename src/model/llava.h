/*
 * llava.h - a whole LLaVA model: configs, tokenizer, vision tower,
 * projector and language model, on one backend.
 *
 * transformers LlavaNextForConditionalGeneration (model_type "llava_next")
 * and LlavaForConditionalGeneration ("llava"): images become rows of
 * features (CLIP → projector → packing) that replace the <image> ids of the
 * prompt in the embedded input of the decoder (spec llava-next.md §4-§6).
 *
 * Usage:
 *     llava *m;
 *     llava_open("models/llava-v1.6-mistral-7b-hf", &m, &err);  // configs + tokenizer
 *     llava_load(m, "cpu", 0, &err);                             // weights on a backend
 *     llava_image im;
 *     llava_encode_image(m, &pixels, false, &im, &err);          // img_tensor → rows
 *     llm_seq s; llm_seq_init(&m->text, ctx, LLAVA_BATCH, &s, &err);
 *     llava_prefill(m, &s, ids, n, im.rows, im.n_tokens, logits, &err);
 *     llava_decode(m, &s, next_id, logits, &err);                // one token per call
 *     ... llm_seq_deinit(&s); llava_image_free(&im); llava_free(m);
 *
 * The model is read-only after llava_load: encoding and sequences may run
 * one after another without any state carried between requests (all
 * per-request state is in llava_image and llm_seq). It is not thread-safe
 * to run two forwards at once on one backend instance.
 */
#ifndef LV_MODEL_LLAVA_H
#define LV_MODEL_LLAVA_H

#include "backend/backend.h"
#include "base/common.h"
#include "image/image.h"
#include "io/model_dir.h"
#include "model/clip.h"
#include "model/llm.h"
#include "model/projector.h"
#include "model/weights.h"
#include "text/tokenizer.h"

#include <stdbool.h>

#define LLAVA_BATCH 512 /* prompt tokens per decoder call during prefill */

typedef struct {
    lv_model_dir md;       /* configs; md.weights once loaded */
    tok *tok;              /* tokenizer, BOS/EOS as tokenizer_config.json says */
    img_proc_params image; /* the image processor's parameters (preprocessor_config) */
    bool next;             /* llava_next packing (anyres + image_newline); else llava-1.5 */
    bool full_features;    /* vision_feature_select_strategy "full": CLS kept */
    bool loaded;           /* llava_load succeeded */
    be backend;            /* the backend instance the weights live on */
    clip_weights vision_w;
    projector_weights proj_w;
    llm_weights text_w;
    clip vision;
    projector proj;
    llm text;
    float *image_newline; /* host (text dim); llava_next only */
} llava;

/* Opens a model directory: configs, tokenizer and image parameters, no
 * weights. Errors as mdir_open / tok_load / model_image_params, with the
 * file named. On success the caller frees *out with llava_free. */
lv_status llava_open(const char *path, llava **out, lv_err *err);

/* The same for a llama.cpp GGUF pair: path is the text model .gguf and
 * mmproj the mmproj .gguf (io/model_dir.h mdir_open_gguf). mmproj NULL is
 * llava_open (a directory, which may itself hold a GGUF pair). */
lv_status llava_open2(const char *path, const char *mmproj, llava **out, lv_err *err);

/* Maps the weights and prepares them on backend `backend_name` ("cpu",
 * "ref") with n_threads (<= 0: all cores). Errors: LV_ERR_ARG (unknown
 * backend), LV_ERR_FORMAT / LV_ERR_UNSUPPORTED (missing, mis-shaped or
 * unsupported tensors; features the engine lacks), LV_ERR_NOMEM. On
 * failure m holds no weights and llava_load may be tried again. */
lv_status llava_load(llava *m, const char *backend_name, int n_threads, lv_err *err);

/* Releases everything. NULL is a no-op. */
void llava_free(llava *m);

/* ---- what callers may read (the handle is opaque outside model/) ------------------------ */

const lv_model_config *llava_config(const llava *m);                   /* config.json, filled */
const lv_generation_config *llava_generation_config(const llava *m);   /* generation_config.json */
const tok *llava_tokenizer(const llava *m);                             /* BOS/EOS as configured */
const img_proc_params *llava_image_params(const llava *m);             /* the image processor */
int llava_image_token_id(const llava *m); /* <image>; == vocab size for the GGUF virtual id */
int llava_vocab_size(const llava *m);     /* rows of embed_tokens / lm_head */
int llava_text_dim(const llava *m);       /* the decoder's hidden size (feature row width) */
int llava_max_ctx(const llava *m);        /* the longest sequence the decoder takes */
bool llava_is_loaded(const llava *m);     /* llava_load succeeded */
int llava_n_threads(const llava *m);      /* the backend's threads (0 before llava_load) */
const char *llava_dir(const llava *m);    /* the model directory or file opened */
size_t llava_kv_bytes_per_pos(const llava *m); /* KV cache bytes per position of one sequence */

/* The number of <image> ids (feature rows) an image of image_h x image_w
 * (img_tensor's image_h/image_w) becomes; -1 if the size is invalid.
 * Needs no weights. */
int llava_image_token_count(const llava *m, int image_h, int image_w);

/* The same for a tensor as it will be encoded: equal to the above for
 * img_preprocess output; for a base-only tensor (n_tiles 1, grid 0: the
 * image_url detail "low" view) LLaVA-NeXT gives side² + 1 (the base tile's
 * features and one image_newline, as pack_image_features does for a single
 * tile). -1 if inconsistent. Needs the model loaded (the tower's geometry). */
int llava_tensor_token_count(const llava *m, const img_tensor *px);

/* One image's features, host memory owned by the struct. */
typedef struct {
    int n_tokens;     /* rows of `rows` */
    float *rows;      /* (n_tokens, text dim): what replaces the image's <image> ids */
    int n_tiles;      /* tiles encoded */
    int n_feat;       /* features per tile: side² (CLS dropped) or n_pos ("full") */
    float *vision;    /* with keep: (n_tiles, n_feat, vision dim) tower output; else NULL */
    float *projected; /* with keep: (n_tiles, n_feat, text dim) projector output; else NULL */
    double ms;        /* wall time of tower + projector + packing */
} llava_image;

/*
 * Encodes one preprocessed image (img_preprocess output: tiles of the tower's
 * image_size, base first; image_h/w and grid_h/w as the processor set them)
 * into out. keep: also return the tower and projector outputs (for tests).
 * Errors: LV_ERR_ARG (tile size or grid inconsistent with the model),
 * LV_ERR_NOMEM. On failure out is zeroed. Free with llava_image_free.
 */
lv_status llava_encode_image(llava *m, const img_tensor *px, bool keep, llava_image *out,
                             lv_err *err);
void llava_image_free(llava_image *im); /* zeroed: no-op */

/*
 * Prefill: runs n prompt ids at the sequence's current position. Every
 * image id (config image_token_id) takes the next row of image_rows, in
 * order (masked_scatter); with image_rows NULL the ids stay ordinary tokens.
 * logits (host, vocab; may be NULL) receives the last position's logits.
 * Errors: LV_ERR_ARG (an id outside the vocabulary, image id count !=
 * n_image_rows, a prompt longer than the sequence's free context: the
 * message gives both lengths).
 */
lv_status llava_prefill(llava *m, llm_seq *s, const int32_t *ids, int n, const float *image_rows,
                        int n_image_rows, float *logits, lv_err *err);

/* Decode: one token at the next position; logits (host, vocab) of it. */
lv_status llava_decode(llava *m, llm_seq *s, int32_t id, float *logits, lv_err *err);

#endif
