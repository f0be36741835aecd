/*
 * gguf_model.h - a llama.cpp LLaVA GGUF pair (text model + mmproj) seen as
 * the same structs a Hugging Face directory gives: lv_model_config and the
 * processor/tokenizer/generation configs from the metadata, and an st_set
 * of canonical (transformers 4.4x llava-hf) tensor names over the mapped
 * files.
 *
 *   text.gguf    general.architecture "llama"  (convert_hf_to_gguf.py)
 *   mmproj.gguf  general.architecture "clip"   (llava legacy converter, clip.*)
 *
 * or a SmolVLM / SmolVLM2 pair (mmproj clip.projector_type "idefics3", as
 * convert_hf_to_gguf.py writes it): model_type "smolvlm", the SigLIP tower,
 * scale_factor, image_seq_length, an LV_IMGPROC_IDEFICS3 preprocessor config
 * (longest_edge = clip.vision.preproc_image_size, else 4 x image_size), the
 * connector as connector.modality_projection.proj (gguf_model.c: SMOLVLM).
 *
 * Every key, name and layout rule is in shared/spec/formats.md §4 and at
 * the top of gguf_model.c. The tokenizer comes from the same file through
 * text/tokenizer.h tok_load_gguf.
 */
#ifndef LV_GGUF_MODEL_H
#define LV_GGUF_MODEL_H

#include "base/common.h"
#include "io/gguf.h"
#include "io/hf_config.h"
#include "io/safetensors.h"

/* The text that marks an image in a prompt; a vocabulary without it gets
 * it as the virtual id vocab_size (gguf_model_config, tok_load_gguf). */
#define GGUF_IMAGE_TOKEN "<image>"

/* Fills the four configs from the metadata of the pair (each struct is
 * initialised first; tc's strings are heap copies the caller releases with
 * hf_tokcfg_deinit). Errors name the file and the key: LV_ERR_FORMAT
 * (missing or mistyped key, inconsistent values), LV_ERR_UNSUPPORTED (an
 * architecture, projector or rope variant the engine lacks). A vocabulary
 * without an "<image>" token (converted from the original liuhaotian
 * checkpoint) gets the virtual image_token_id = text.vocab_size. */
lv_status gguf_model_config(const gguf *text, const gguf *mmproj, lv_model_config *cfg,
                            lv_preproc_config *pp, lv_tokenizer_config *tc,
                            lv_generation_config *gc, lv_err *err);

/* Opens both files and presents their tensors under canonical names, with
 * PyTorch-order shapes (ne reversed). Tensors stay in the mappings, except
 * the text model's q/k projections, whose rows are copied into heap memory
 * in the Hugging Face order (the converter's permutation undone; the source
 * pages are dropped with madvise). The set owns both mappings: st_close
 * releases everything. Errors: as gguf_open, LV_ERR_UNSUPPORTED for a ggml
 * type the engine has no dtype for (naming the tensor), LV_ERR_FORMAT for a
 * shape that does not fit the permutation. */
lv_status gguf_model_weights(const char *text_path, const char *mmproj_path, st_set **out,
                             lv_err *err);

/* The lv_dtype of a ggml type id; false if the engine has none. */
bool gguf_model_dtype(uint32_t ggml_type, lv_dtype *out);

/* GGUF name -> canonical name for the text (mmproj false) or the mmproj
 * file, into out (cap bytes). false for a name the model does not use.
 * The vision MLP is returned as named ("ffn_down" -> fc2, "ffn_up" -> fc1);
 * gguf_model_weights swaps them when the file uses the legacy naming. */
bool gguf_model_name(const char *gguf_name, bool mmproj, char *out, size_t cap);

#endif
