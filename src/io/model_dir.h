/*
 * model_dir.h - a Hugging Face model directory, opened in one call.
 *
 * Layout (llava-hf/llava-v1.6-mistral-7b-hf; MLX conversions look the same):
 *   config.json                    required: the model shape (hf_config.h)
 *   preprocessor_config.json       image processor settings (optional)
 *   tokenizer.json                 the tokenizer (required unless MDIR_NO_TOKENIZER)
 *   tokenizer_config.json          BOS/EOS switches, special tokens, chat template (optional)
 *   chat_template.json / .jinja    the processor's chat template (optional)
 *   generation_config.json         sampling defaults, EOS ids (optional)
 *   model.safetensors[.index.json] or model-0000i-of-0000K.safetensors: weights
 *
 * Side effects: none beyond reading (and, with MDIR_WEIGHTS, mapping) files.
 */
#ifndef LV_MODEL_DIR_H
#define LV_MODEL_DIR_H

#include "base/common.h"
#include "io/hf_config.h"
#include "io/safetensors.h"

#include <stdbool.h>

enum {
    MDIR_WEIGHTS = 1u << 0,      /* also open the weights (st_open on the directory) */
    MDIR_NO_TOKENIZER = 1u << 1, /* tokenizer.json may be missing (e.g. a GGUF vocab is used) */
};

typedef struct {
    char *dir;                              /* the directory path as given */
    lv_model_config config;                 /* config.json */
    bool has_preproc;                       /* preprocessor_config.json was present */
    lv_preproc_config preproc;              /* its values; the processor-class defaults if absent */
    bool has_tokenizer_config;              /* tokenizer_config.json was present */
    lv_tokenizer_config tokenizer_config;   /* zeroed + LlamaTokenizer defaults if absent;
                                               .processor_chat_template from chat_template.* */
    bool has_generation_config;             /* generation_config.json was present */
    lv_generation_config generation_config; /* GenerationConfig defaults if absent */
    char *tokenizer_path;                   /* <dir>/tokenizer.json; NULL if absent */
    st_set *weights;                        /* with MDIR_WEIGHTS; else NULL */
} lv_model_dir;

/* Opens the model directory at path (flags: MDIR_*). On success md owns
 * everything it points to; release with mdir_close. On failure md is zeroed
 * and nothing is held. Errors name the file: LV_ERR_IO for a missing
 * config.json / tokenizer.json or unreadable file, and whatever the parsers
 * and st_open report (LV_ERR_FORMAT, LV_ERR_UNSUPPORTED, ...). */
lv_status mdir_open(const char *path, unsigned flags, lv_model_dir *md, lv_err *err);

/* Releases md and zeroes it. A zeroed md is a no-op. */
void mdir_close(lv_model_dir *md);

#endif
