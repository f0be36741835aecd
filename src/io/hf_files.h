/*
 * hf_files.h - which files of a Hugging Face repo a model needs, from the
 * repo's file list (the hub's "siblings"), so that a download skips the
 * rest: other weight formats (pytorch_model.bin, *.onnx), every other
 * quantization of a GGUF repo, READMEs and images.
 *
 * A safetensors repo (transformers / MLX layout, io/model_dir.h): at the
 * top level
 *   config.json generation_config.json preprocessor_config.json
 *   processor_config.json tokenizer.json tokenizer_config.json
 *   special_tokens_map.json added_tokens.json chat_template.json
 *   chat_template.jinja
 * and the weights: model.safetensors.index.json and the shards its
 * weight_map names (hf_select_shards, once the index is read), or, without
 * an index, every top-level *.safetensors.
 *
 * A GGUF repo (llama.cpp, no top-level *.safetensors, or a quantization
 * tag given): two files, the text model and its mmproj, whatever folder
 * they are in. A file whose name contains "mmproj" is a projector; the
 * others are text models. The tag (ORG/NAME:Q4_K_M, as llama-server -hf
 * takes it) picks the text model whose name holds it as a word
 * ("-Q4_K_M.gguf", not the "Q4_K" inside "Q4_K_M"), case-insensitively;
 * without a tag Q4_K_M is preferred, else the first. The mmproj prefers
 * f16, else the first. Split GGUFs ("-00001-of-00003.gguf") are not
 * supported and are never picked.
 *
 * Side effects: none.
 */
#ifndef LV_HF_FILES_H
#define LV_HF_FILES_H

#include "base/common.h"

#include <stdbool.h>

typedef struct {
    char **names;    /* the files to fetch (heap; repo paths, in repo order) */
    size_t n, cap;   /* how many; allocated */
    int gguf_text;   /* a GGUF repo: the text model's index in names; else -1 */
    int gguf_mmproj; /* and the mmproj's */
    bool has_index;  /* names holds model.safetensors.index.json: the shards are
                        added by hf_select_shards once it is on disk */
} hf_selection;

/* The files the model needs out of files[0..n) (the repo's list). quant:
 * the GGUF tag, or NULL/"" for none. On success sel owns its names; free
 * with hf_selection_free. Errors (LV_ERR_ARG), naming the repo's contents:
 *   no config.json beside the safetensors, no weights at all, a tag that no
 *   text GGUF holds (the message lists the tags there are), a GGUF repo
 *   without an mmproj. */
lv_status hf_select_files(const char *const *files, size_t n, const char *quant, hf_selection *sel,
                          lv_err *err);

/* Adds to sel the shards that the index at index_path names (its
 * weight_map's values, each once), checking each is in files[0..n).
 * Errors: LV_ERR_FORMAT for an index that is not JSON with a weight_map
 * object, LV_ERR_ARG for a shard the repo does not have. */
lv_status hf_select_shards(hf_selection *sel, const char *index_path, const char *const *files,
                           size_t n, lv_err *err);

/* The GGUF pair out of files[0..n) as described above: indices into files
 * (-1 when none). Used on the repo's list and on a cached snapshot's. */
void hf_pick_gguf(const char *const *files, size_t n, const char *quant, int *text, int *mmproj);

void hf_selection_free(hf_selection *sel);

#endif
