/*
 * qsource.h - the tensors a converter reads: a float checkpoint on disk, or
 * random weights of a preset's real shapes.
 *
 * llava-quantize (tools/llava-quantize.c) opens one source and hands it to
 * a writer (quant/mlx_export.h: MLX affine safetensors; quant/gguf_export.h:
 * a llama.cpp GGUF pair). Writers see every tensor by its canonical name
 * (io/tensor_names.h: the transformers 4.4x llava-hf layout, e.g.
 * "language_model.model.layers.0.self_attn.q_proj.weight"), its PyTorch
 * shape, and its values as float32, one tensor at a time, so a 7B model is
 * never held in memory as float32 at once.
 */
#ifndef LV_QUANT_QSOURCE_H
#define LV_QUANT_QSOURCE_H

#include "base/common.h"
#include "io/dtype.h"
#include "io/hf_config.h"
#include "quant/presets.h"

#include <stdbool.h>

#include <stddef.h>
#include <stdint.h>

#define QS_MAX_DIMS 4

typedef struct {
    const char *name; /* canonical name */
    int n_dims;
    int64_t shape[QS_MAX_DIMS]; /* PyTorch order (slowest first) */
    int64_t n_elems;
    bool is_float;  /* F16/BF16/F32 in the source (random: always) */
    lv_dtype dtype; /* the source dtype (random: F16); writers keep float tensors in it */
} qs_tensor;

typedef struct qsource qsource;

/* A float (F16/BF16/F32) llava-hf checkpoint directory: config.json,
 * safetensors, tokenizer and processor files. LV_ERR_UNSUPPORTED for an
 * already quantized checkpoint. */
lv_status qsource_open_dir(const char *model_dir, qsource **out, lv_err *err);

/* Random weights (seeded, deterministic) in the real shapes of a preset:
 * "llava-v1.6-mistral-7b", "llava-1.5-7b", "llava-v1.6-vicuna-13b", "llava-v1.6-34b" (and
 * "tiny-llava-next", for tests). tokenizer_json: a tokenizer.json to ship
 * with the model (may be NULL: then the written model has none); a file
 * whose vocabulary ends just before the config's image_token_index (the
 * Mistral/Llama tokenizer.json of 32000 ids) gets the two added tokens
 * llava-hf's converters add, "<image>" at that id and "<pad>" after it,
 * both special (qsource_tokenizer_read). LV_ERR_ARG for an unknown preset
 * (the message lists the known ones), LV_ERR_IO for a missing tokenizer. */
lv_status qsource_open_random(const char *preset, uint64_t seed, const char *tokenizer_json,
                              qsource **out, lv_err *err);
/* SmolVLM presets (smolvlm-*, smolvlm2-*, tiny-smolvlm): the tensors of
 * transformers' Idefics3 / SmolVLM checkpoints under the canonical names
 * (SigLIP tower with patch bias and post_layernorm, connector.modality_
 * projection.proj, a Llama text model). Without tokenizer_json their
 * vocabulary is the synthetic byte-level one of quant/synth_tokenizer.h
 * (qsource_tokenizer_json then returns QS_SYNTHETIC_TOKENIZER, a label, not
 * a path; qsource_tokenizer_read gives its text). */
#define QS_SYNTHETIC_TOKENIZER "(synthetic SmolLM2-style tokenizer)"

/* The preset of a random source; NULL for a directory source. */
const qs_preset *qsource_preset(const qsource *s);

/* The resolved config (every key filled as io/hf_config does). */
const lv_model_config *qsource_config(const qsource *s);

/* The directory the auxiliary files (tokenizer.json, tokenizer_config.json,
 * preprocessor_config.json, generation_config.json, chat_template.json,
 * config.json) come from; NULL for a random source. */
const char *qsource_dir(const qsource *s);

/* Raw config.json text to start from (the source's, or the preset's). */
const char *qsource_config_json(const qsource *s);

/* preprocessor_config.json text of a random source's preset; NULL for a
 * directory source (its file is copied instead). */
const char *qsource_preproc_json(const qsource *s);

/* tokenizer.json path (the source's or the one given); may be NULL. For
 * messages and for copying a directory source's file as it is. */
const char *qsource_tokenizer_json(const qsource *s);

/* The tokenizer.json text a writer ships: the file's bytes, or for a random
 * source the vocabulary with llava-hf's added tokens (qsource_open_random).
 * *text is NULL (LV_OK) when the source has none; else the caller frees it.
 * Errors: LV_ERR_IO, LV_ERR_FORMAT naming the file, LV_ERR_NOMEM. */
lv_status qsource_tokenizer_read(const qsource *s, char **text, size_t *len, lv_err *err);

/* A random source's chat template (its preset's, presets.h); NULL for a
 * directory source (writers read its files) or a preset without one. */
const char *qsource_chat_template(const qsource *s);

size_t qsource_count(const qsource *s);
const qs_tensor *qsource_at(const qsource *s, size_t i);
/* Index of a canonical name, or -1. */
long qsource_find(const qsource *s, const char *name);

/* Values of tensor i as float32 into out (n_elems floats). */
lv_status qsource_read(const qsource *s, size_t i, float *out, lv_err *err);

void qsource_close(qsource *s); /* NULL is a no-op */

/* Progress of a long conversion: done of total (bytes or tensors). */
typedef void (*qs_progress_fn)(void *ud, size_t done, size_t total, const char *what);

#endif
