/*
 * tokenizer_gguf.h - the tokenizer of a GGUF text model, from its
 * tokenizer.ggml.* vocabulary (shared/spec/formats.md §4.6).
 *
 * Two vocabulary kinds (tokenizer.ggml.model):
 *
 * "gpt2" (byte-level BPE, what llama.cpp's convert_hf_to_gguf.py
 * _set_vocab_gpt2 writes for SmolLM2 / SmolVLM / GPT-2): becomes the
 * byte-level tokenizer of a Hugging Face tokenizer.json (BPE without
 * byte_fallback or unk, decoder ByteLevel, no BOS unless
 * tokenizer.ggml.add_bos_token says so, llama.cpp's default for BPE).
 * tokenizer.ggml.pre picks the pre-tokenizer: "smollm" = Digits
 * (individual) + ByteLevel, "gpt-2"/"gpt2" = ByteLevel alone; any other
 * name (llama.cpp's "default" too, or none) is LV_ERR_UNSUPPORTED naming it.
 * tokenizer.ggml.merges is required.
 *
 * "llama" (SentencePiece) vocabularies: llama.cpp runs them with
 * score-driven merges and byte fallback, which is what our BPE with
 * byte_fallback does once the merges are known. They are taken from
 * tokenizer.ggml.merges when the file has them (llava-quantize writes them,
 * so its files encode exactly like the tokenizer.json they came from);
 * otherwise they are derived from the scores the way transformers turns a
 * SentencePiece model into merges (convert_slow_tokenizer
 * SentencePieceExtractor: every split of a piece into two pieces, ordered
 * by the piece's score, then by the ids of the parts).
 */
#ifndef LV_TOKENIZER_GGUF_H
#define LV_TOKENIZER_GGUF_H

#include "base/common.h"
#include "io/gguf.h"
#include "text/tokenizer.h"

/* Builds the tokenizer of g. Types 2 (UNKNOWN), 3 (CONTROL) and 4
 * (USER_DEFINED) become added tokens (special unless USER_DEFINED), split
 * out of the text before BPE; add_space_prefix (default true) prepends "▁";
 * BOS/EOS follow tokenizer.ggml.add_bos_token / add_eos_token (defaults true
 * / false; "gpt2": false / false). Errors: LV_ERR_UNSUPPORTED for a
 * tokenizer.ggml.model other than "llama" or "gpt2" (or a "gpt2" pre-tokenizer
 * other than those above), LV_ERR_FORMAT for inconsistent arrays (naming the key).
 * The caller frees *out with tok_free. */
lv_status tok_load_gguf(const gguf *g, tok **out, lv_err *err);

/* The same, opening path. */
lv_status tok_load_gguf_file(const char *path, tok **out, lv_err *err);

/* tok_load_gguf_file for a LLaVA model: a vocabulary without "<image>"
 * (GGUF_IMAGE_TOKEN, io/gguf_model.h) gets it as a special added token with
 * id n_tokens, the virtual image id gguf_model_config gives the model.
 * tok_vocab_size is then n_tokens + 1; decode prints "<image>" for it,
 * nothing with skip_special. */
lv_status tok_load_gguf_llava_file(const char *path, tok **out, lv_err *err);

#endif
