/*
 * llava.h - a whole LLaVA model: configs, tokenizer, vision tower,
 * projector and language model, on one backend; and the one forward every
 * request goes through.
 *
 * transformers LlavaNextForConditionalGeneration (model_type "llava_next")
 * and LlavaForConditionalGeneration ("llava"): images become rows of
 * features (CLIP → projector → packing) that replace the <image> ids of the
 * prompt in the embedded input of the decoder (spec llava-next.md §4-§6).
 * Idefics3ForConditionalGeneration ("idefics3", SmolVLM) and
 * SmolVLMForConditionalGeneration ("smolvlm", SmolVLM2): each frame of an
 * image (tiles row-major, then the global image) → SigLIP → post_layernorm
 * → connector (pixel shuffle + linear): image_seq_length rows per frame, in
 * frame order, no packing (spec smolvlm.md §5-§8); the decoder is Llama.
 *
 * The handle is opaque: callers read what they need through the accessors
 * below; the parts (model/clip, projector, pack, llm, weights) are model/'s
 * own. Usage (engine/scheduler.c is the real caller):
 *     llava *m;
 *     llava_open("models/llava-v1.6-mistral-7b-hf", &m, &err);  // configs + tokenizer
 *     llava_load(m, "cpu", 0, &err);                             // weights on a backend
 *     llava_features *f; llava_features_new(m, n_image_ids, &f, &err);
 *     llava_encoder *e; llava_encoder_new(m, &pixels, f, 0, &e, &err);
 *     while (!llava_encoder_done(e)) llava_encoder_run(e, 64, &err);  // a few rows a call
 *     llava_seq *s; llava_seq_new(m, ctx, &s, &err);
 *     llava_batch *bt; llava_batch_new(m, 512, 1, &bt, &err);
 *     llava_input in = {s, ids, n, f, 0};
 *     llava_forward(m, bt, &in, 1, logits, &err);   // prompt (chunks) or one token
 *     ... llava_batch_free(bt); llava_seq_free(s); llava_encoder_free(e);
 *     llava_features_free(f); llava_free(m);
 *
 * The model is read-only after llava_load: every per-request state is in a
 * llava_seq (KV cache), llava_features and llava_encoder, so requests never
 * see each other. It is not thread-safe to run two forwards at once on one
 * backend instance.
 */
#ifndef LV_MODEL_LLAVA_H
#define LV_MODEL_LLAVA_H

#include "base/common.h"
#include "image/image.h"
#include "io/hf_config.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>

#define LLAVA_BATCH 512 /* prompt rows per forward at most, by default */

typedef struct llava llava;

/* Opens a model directory: configs, tokenizer and image parameters, no
 * weights. Errors as mdir_open / tok_load / model_image_params, with the
 * file named. On success the caller frees *out with llava_free. */
lv_status llava_open(const char *path, llava **out, lv_err *err);

/* The same for a llama.cpp GGUF pair: path is the text model .gguf and
 * mmproj the mmproj .gguf (io/model_dir.h mdir_open_gguf). mmproj NULL is
 * llava_open (a directory, which may itself hold a GGUF pair). */
lv_status llava_open2(const char *path, const char *mmproj, llava **out, lv_err *err);

/* Maps the weights and prepares them on backend `backend_name` ("cpu",
 * "ref", "cuda", "cuda:N": backend/backend.h be_find_device) with n_threads
 * (<= 0: all cores). Errors: LV_ERR_ARG (unknown backend), LV_ERR_FORMAT / LV_ERR_UNSUPPORTED
 * (missing, mis-shaped or unsupported tensors; features the engine lacks), LV_ERR_NOMEM. On failure
 * m holds no weights and llava_load may be tried again. */
lv_status llava_load(llava *m, const char *backend_name, int n_threads, lv_err *err);

/* Whether this build has the backend `name` (llava_load's names), for the
 * layers above the model that pick one (the server's config: "gpu" means
 * cuda only where it exists). */
bool llava_backend_known(const char *name);

/* Before llava_load: exact arithmetic (true) or the fast default (false).
 * Exact: float32 on the weights' exact values, as transformers computes on
 * the dequantized weights, and a float32 KV cache. Fast: quantized weights
 * multiply int8-quantized activations (backend.h `exact`; the error bound
 * is tested) and the KV cache is f16. f32/f16/bf16 weights are exact
 * either way. */
void llava_set_exact(llava *m, bool exact);
bool llava_exact(const llava *m);

/* Before llava_load: tensor parallelism over n devices of the backend
 * (backend/tp.h): llava_load's "cuda:D" then means devices D .. D+n-1,
 * "cpu" n CPU ranks (the same code, for tests). 0 (the default): one
 * device, no tensor parallelism; 1: one rank through the same code.
 * replicate_tower: the vision tower whole on every rank instead of split
 * like the text model. Ignored once loaded. */
void llava_set_tensor_parallel(llava *m, int n, bool replicate_tower);
/* The ranks the model runs on (1 without tensor parallelism). */
int llava_tensor_parallel(const llava *m);

/* Releases everything. NULL is a no-op. */
void llava_free(llava *m);

/* ---- loading: progress and what was loaded ------------------------------------------------ */

/* How far llava_load has come (a 7B checkpoint takes seconds to tens of
 * seconds: its pages are read and quantized weights repacked). */
typedef struct {
    int n_files;         /* weight files mapped (a GGUF pair: 2) */
    size_t bytes_mapped; /* bytes of every tensor in them */
    int n_tensors;       /* tensors in them (the model may use fewer) */
    int tensors_loaded;  /* tensors taken onto the backend so far */
    size_t bytes_loaded; /* their bytes in the files */
    double seconds;      /* since llava_load began */
    bool done;           /* the last call: every part is ready */
} llava_load_progress;

typedef void (*llava_progress_fn)(void *ud, const llava_load_progress *p);

/* Before llava_load: fn(ud, p) is called once the weight files are mapped,
 * after every tensor taken, and once done (p borrowed for the call; on
 * the loading thread). NULL fn: none (the default). */
void llava_set_progress(llava *m, llava_progress_fn fn, void *ud);

/* What a loaded model is, for a summary at start-up. */
typedef struct {
    const char *arch;      /* config.json model_type: "llava_next", "llava", "idefics3" or
                              "smolvlm" */
    const char *text_arch; /* the decoder's: "mistral" or "llama" */
    int64_t params_vision; /* values loaded: the tower's layers the feature layer needs */
    int64_t params_projector;
    int64_t params_text;
    char weights[96];         /* the decoder's matrix types by share, and the container:
                                 "Q4_0 + Q6_K (gguf)", "mlx-int4 g64", "F16 (safetensors)" */
    char vision_weights[32];  /* the tower's and projector's main matrix type: "F16" */
    int ctx;                  /* llava_max_ctx */
    int image_tokens_base;    /* one image's rows at their fewest: the base view (LLaVA-NeXT,
                                 image_url detail "low") or the one fixed count (LLaVA-1.5) */
    int image_tokens_max;     /* at their most: anyres at the pinpoint that gives most;
                                 Idefics3: the most frames (4x4 tiles + global = 17) */
    int max_h, max_w;         /* that pinpoint (0 for LLaVA-1.5); Idefics3: longest_edge */
    size_t kv_bytes_per_pos;  /* llava_kv_bytes_per_pos */
    llava_load_progress load; /* files, tensors, bytes and seconds of the load */
} llava_info;

/* Fills *out; the parameter counts, types and load figures are those of
 * the last llava_load (zero before). */
void llava_get_info(const llava *m, llava_info *out);

/* ---- what callers may read ------------------------------------------------------------ */

const lv_model_config *llava_config(const llava *m);                 /* config.json, filled */
const lv_generation_config *llava_generation_config(const llava *m); /* generation_config.json */
const tok *llava_tokenizer(const llava *m);                          /* BOS/EOS as configured */
const img_proc_params *llava_image_params(const llava *m);           /* the image processor */
/* preprocessor_config.json as read (its class's defaults where absent; a GGUF
 * pair's from its mmproj): what the image parameters and SmolVLM2's
 * video_sampling come from. */
const lv_preproc_config *llava_preproc_config(const llava *m);
int llava_image_token_id(const llava *m);      /* <image>; == vocab size for the GGUF virtual id */
int llava_vocab_size(const llava *m);          /* rows of embed_tokens / lm_head */
int llava_text_dim(const llava *m);            /* the decoder's hidden size (feature row width) */
int llava_max_ctx(const llava *m);             /* the longest sequence the decoder takes */
bool llava_is_loaded(const llava *m);          /* llava_load succeeded */
int llava_n_threads(const llava *m);           /* the backend's threads (0 before llava_load) */
size_t llava_kv_bytes_per_pos(const llava *m); /* KV cache bytes per position of one sequence */

/* The backend name given to llava_load ("cpu", "cuda:0"), for reports; ""
 * before it. */
const char *llava_device(const llava *m);

/* The device's memory in bytes (in use by every process, and the total), for
 * /health and /metrics: false when the backend cannot tell (the cpu and ref
 * backends) or no weights are loaded. */
bool llava_memory_info(const llava *m, size_t *used, size_t *total);

/* The first device fault of the backend (backend.h status: an asynchronous
 * kernel error, an out-of-memory inside an op), its message in err; LV_OK
 * when there is none, when the backend cannot fail that way (cpu, ref) or
 * no weights are loaded. The scheduler asks after every forward, since the
 * ops themselves cannot return errors and a faulted step's logits are
 * garbage. */
lv_status llava_device_status(const llava *m, lv_err *err);

/* The number of <image> ids (feature rows) an image of image_h x image_w
 * (img_tensor's image_h/image_w) becomes; -1 if the size is invalid.
 * Idefics3: frames · image_seq_length, frames = rows·cols + 1 when split
 * (image/idefics3.h), else 1. Needs no weights. */
int llava_image_token_count(const llava *m, int image_h, int image_w);

/* The same for a tensor as it will be encoded: equal to the above for
 * img_preprocess output; for a base-only tensor (n_tiles 1, grid 0: the
 * image_url detail "low" view) LLaVA-NeXT gives side² + 1 (the base tile's
 * features and one image_newline, as pack_image_features does for a single
 * tile). Idefics3: n_tiles · image_seq_length, with n_tiles = grid_h·grid_w
 * + 1 (grid 0x0: 1). -1 if inconsistent. Needs no weights. */
int llava_tensor_token_count(const llava *m, const img_tensor *px);

/* ---- prompts (model/image_prompt.c) ------------------------------------------------- */

/* The chat template the checkpoint was trained with: LLaVA's [INST] one, or
 * SmolVLM's (Idefics3 / SmolVLM models). */
chat_template_kind llava_chat_template(const llava *m);

/* The ids that stand for image px in a prompt, in place of the one <image>
 * id of the rendered template, as the checkpoint's processor expands it:
 * LLaVA, llava_tensor_token_count(px) <image> ids; Idefics3 / SmolVLM, each
 * tile's <fake_token_around_image><row_r_col_c> and image_seq_len <image>
 * ids, then the global image's, tokenized (the image ids among them are
 * the feature rows, frame by frame, in llava_encoder's order). *ids is a
 * heap array the caller frees. Errors: LV_ERR_ARG (px does not fit the
 * model), LV_ERR_FORMAT (the vocabulary lacks the image tokens), LV_ERR_NOMEM. */
lv_status llava_image_prompt_ids(const llava *m, const img_tensor *px, int32_t **ids, int *n,
                                 lv_err *err);

/* ---- image features ---------------------------------------------------------------- */

/* A request's image feature rows, (n_rows, text dim), in a backend buffer:
 * what replaces its <image> ids, every image's rows one after another. */
typedef struct llava_features llava_features;

/* LV_ERR_ARG (n_rows < 1 or no weights), LV_ERR_NOMEM. */
lv_status llava_features_new(llava *m, int n_rows, llava_features **out, lv_err *err);
void llava_features_free(llava_features *f); /* NULL: no-op */
int llava_features_rows(const llava_features *f);
/* Copies rows [row0, row0 + n) to host memory (n · text dim floats). */
void llava_features_read(const llava_features *f, int row0, int n, float *host);
/* Copies src's rows [src_row, src_row + n) over dst's rows [dst_row,
 * dst_row + n), on the backend (no trip through the host: on a GPU both
 * stay in device memory). Both belong to one model; the ranges must fit.
 * What the scheduler's image cache (engine/image_cache.h) keeps and gives
 * back an image's rows with. */
void llava_features_copy_rows(llava_features *dst, int dst_row, const llava_features *src,
                              int src_row, int n);

/*
 * One image being encoded, in pieces: a tile at a time, each stage of the
 * tower (clip.h) a few rows at a time, then the projector, then the
 * packing into its features' rows [row0, row0 + token count). The
 * scheduler runs pieces between decode steps, so a new image does not
 * stall the running streams; any cut gives the same bits as one pass.
 */
typedef struct llava_encoder llava_encoder;

/* Bytes of scratch an encoder of px holds while it runs (its tile's
 * activations, the projected rows of every tile), for memory accounting. */
size_t llava_encoder_bytes(const llava *m, const img_tensor *px);

/* Checks px against the model (tile size, grid) and that f has room; keeps
 * a borrowed pointer to px and f (both outlive the encoder). keep: also
 * keep the tower and projector outputs (llava_encode_image's keep).
 * Errors: LV_ERR_ARG (the message says what does not fit), LV_ERR_NOMEM. */
lv_status llava_encoder_new(llava *m, const img_tensor *px, llava_features *f, int row0, bool keep,
                            llava_encoder **out, lv_err *err);
void llava_encoder_free(llava_encoder *e); /* NULL: no-op */

/* Rows left in the piece that runs next (0 once done); *kind (may be NULL)
 * names its stage, 0 .. LLAVA_ENCODER_KINDS-1 (rows of one kind cost about
 * the same: what a scheduler's cost estimate is keyed by). */
#define LLAVA_ENCODER_KINDS 4
int llava_encoder_next(const llava_encoder *e, int *kind);
/* Runs up to max_rows rows (<= 0: all) of the next piece; after the last
 * one the features are packed and the encoder is done. */
lv_status llava_encoder_run(llava_encoder *e, int max_rows, lv_err *err);
bool llava_encoder_done(const llava_encoder *e);
int llava_encoder_tiles(const llava_encoder *e);
double llava_encoder_ms(const llava_encoder *e); /* wall time spent in llava_encoder_run */

/* One image's features, host memory owned by the struct (tests, tools). */
typedef struct {
    int n_tokens;     /* rows of `rows` */
    float *rows;      /* (n_tokens, text dim): what replaces the image's <image> ids */
    int n_tiles;      /* tiles encoded */
    int n_feat;       /* features per tile: side² (CLS dropped) or n_pos ("full"; SigLIP) */
    int n_proj;       /* projected rows per tile: n_feat, or Idefics3's image_seq_length */
    float *vision;    /* with keep: (n_tiles, n_feat, vision dim) tower output (SigLIP:
                         after post_layernorm); else NULL */
    float *projected; /* with keep: (n_tiles, n_proj, text dim) projector / connector
                         output; else NULL */
    double ms;        /* wall time of tower + projector + packing */
} llava_image;

/*
 * Encodes one preprocessed image (img_preprocess output: tiles of the tower's
 * image_size, base first; image_h/w and grid_h/w as the processor set them)
 * in one go, into host memory: an encoder run to the end. keep: also
 * return the tower and projector outputs (for tests). Errors: LV_ERR_ARG
 * (tile size or grid inconsistent with the model), LV_ERR_NOMEM. On failure
 * out is zeroed. Free with llava_image_free.
 */
lv_status llava_encode_image(llava *m, const img_tensor *px, bool keep, llava_image *out,
                             lv_err *err);
void llava_image_free(llava_image *im); /* zeroed: no-op */

/* ---- sequences and the forward -------------------------------------------------------- */

/* One request's decoder state: its KV cache (ctx positions) and position. */
typedef struct llava_seq llava_seq;

/* LV_ERR_ARG (ctx outside 1..llava_max_ctx, no weights), LV_ERR_NOMEM. */
lv_status llava_seq_new(llava *m, int ctx, llava_seq **out, lv_err *err);
void llava_seq_free(llava_seq *s);     /* NULL: no-op */
int llava_seq_pos(const llava_seq *s); /* positions filled */
int llava_seq_ctx(const llava_seq *s); /* positions it holds */
/* Forgets positions pos.. (0 <= pos <= llava_seq_pos): the prefix stays
 * valid (a position's cache depends only on the ids before it), the next
 * forward continues at pos. What the prefix cache reuses. */
void llava_seq_truncate(llava_seq *s, int pos);
/* A new sequence of ctx positions holding a copy of src's first n_pos
 * positions, at position n_pos; src is unchanged. Errors as llava_seq_new;
 * LV_ERR_ARG for n_pos beyond src or ctx. */
lv_status llava_seq_copy_prefix(const llava_seq *src, int n_pos, int ctx, llava_seq **out,
                                lv_err *err);

/* Scratch for forwards of up to max_rows rows from up to max_seqs sequences. */
typedef struct llava_batch llava_batch;
lv_status llava_batch_new(llava *m, int max_rows, int max_seqs, llava_batch **out, lv_err *err);
void llava_batch_free(llava_batch *bt); /* NULL: no-op */

/* What one sequence brings to a forward: n ids at its next positions. The
 * image ids among them take feature rows of `features` in order, starting
 * at feature_row (features NULL: the ids stay ordinary tokens, which the
 * virtual image id of a GGUF vocabulary cannot be). */
typedef struct {
    llava_seq *seq;
    const int32_t *ids;
    int n;
    const llava_features *features;
    int feature_row;
} llava_input;

/* The <image> ids among ids[0..n). */
int llava_count_image_ids(const llava *m, const int32_t *ids, int n);

/* Whether ids[0..n) can go through llava_forward: every id in the
 * vocabulary, or the image id (which, when it is the virtual id one past a
 * GGUF vocabulary, needs images: with_images). LV_ERR_ARG naming the id and
 * its position. What llava_forward checks, for callers that check first. */
lv_status llava_check_ids(const llava *m, const int32_t *ids, int n, bool with_images, lv_err *err);

/*
 * The one forward: every input's ids embedded (embed_tokens; image ids take
 * their feature rows, the only place the GGUF virtual image id is
 * handled), then the decoder over all rows at once (model/llm.h). logits
 * (host, may be NULL): (n_in, vocab), each input's last row. Each
 * sequence's position advances by its n. A row's result does not depend on
 * the other rows (batch invariance). Errors: LV_ERR_ARG (an id outside the
 * vocabulary, image ids beyond the features, a context that is full, too
 * many rows or sequences: the message names the input); nothing changes.
 */
lv_status llava_forward(llava *m, llava_batch *bt, const llava_input *in, int n_in, float *logits,
                        lv_err *err);

#endif
