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
 * Or a llama.cpp GGUF pair (io/gguf_model.h): a directory holding one text
 * model *.gguf and one mmproj*.gguf (and no config.json), or the two paths
 * given to mdir_open_gguf. Configs, tokenizer settings and weights then all
 * come from the two files; gguf_text / gguf_mmproj say so.
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
    MDIR_NO_PREPROC = 1u << 2,   /* preprocessor_config.json is not parsed (has_preproc stays
                                    false, preproc the class defaults): a converter that copies
                                    or reads the file itself */
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
    char *gguf_text;                        /* a GGUF pair: the text model's path; else NULL */
    char *gguf_mmproj;                      /* and the mmproj's path */
} lv_model_dir;

/* Opens the model directory at path (flags: MDIR_*). On success md owns
 * everything it points to; release with mdir_close. On failure md is zeroed
 * and nothing is held. Errors name the file: LV_ERR_IO for a missing
 * config.json / tokenizer.json or unreadable file, and whatever the parsers
 * and st_open report (LV_ERR_FORMAT, LV_ERR_UNSUPPORTED, ...). */
lv_status mdir_open(const char *path, unsigned flags, lv_model_dir *md, lv_err *err);

/* Opens a GGUF pair: text model + mmproj (both paths to .gguf files). The
 * configs are read from their metadata (has_preproc, has_tokenizer_config
 * and has_generation_config are true), tokenizer_path stays NULL (the
 * vocabulary is in gguf_text: text/tokenizer_gguf.h), dir is the text
 * path. Errors as gguf_open / gguf_model_config, naming the file. */
lv_status mdir_open_gguf(const char *text_path, const char *mmproj_path, unsigned flags,
                         lv_model_dir *md, lv_err *err);

/* Maps the weights of md (safetensors of the directory, or the GGUF pair)
 * into *out, which the caller closes with st_close. */
lv_status mdir_open_weights(const lv_model_dir *md, st_set **out, lv_err *err);

/* Releases md and zeroes it. A zeroed md is a no-op. */
void mdir_close(lv_model_dir *md);

#endif
