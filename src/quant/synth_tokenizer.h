/*
 * synth_tokenizer.h - a deterministic stand-in for SmolLM2's byte-level BPE
 * tokenizer, for random SmolVLM models (llava-quantize --random --preset
 * smolvlm*): no real tokenizer.json can be fetched where the presets are
 * used, and a GGUF text model or an MLX directory needs one.
 *
 * It has SmolLM2's shape and pipeline, not its merges:
 *   ids 0..16     the 17 SmolLM2 special tokens (<|endoftext|>, <|im_start|>,
 *                 <|im_end|>, <repo_name>, ..., <empty_output>), in the
 *                 vocabulary and as special added tokens;
 *   ids 17..272   the 256 byte-level symbols (GPT-2's bytes_to_unicode, in
 *                 its order: the printable bytes first);
 *   ids 273..     synthetic merges of existing tokens (a fixed generator
 *                 picks pairs, favouring short and early tokens; a pair whose
 *                 result already exists or would exceed 16 bytes is skipped)
 *                 up to 49152 ids;
 *   then the added tokens of shared/spec/smolvlm.md §1.2: 128 (<global-img>,
 *   <row_r_col_c>, <fake_token_around_image>, <image>, 88 reserved,
 *   <end_of_utterance>) or, for SmolVLM-Instruct 2.2B, 3
 *   (<fake_token_around_image>, <image>, <end_of_utterance>), all special.
 * Pipeline as SmolLM2's tokenizer.json: pre_tokenizer Sequence[Digits
 * (individual_digits), ByteLevel (add_prefix_space false)], ByteLevel
 * post-processor and decoder, no normalizer, BPE without byte_fallback.
 * Text tokenizes to valid ids and decodes back exactly; the ids are not the
 * real SmolLM2 ids (beyond the special and added tokens).
 */
#ifndef LV_QUANT_SYNTH_TOKENIZER_H
#define LV_QUANT_SYNTH_TOKENIZER_H

#include "base/common.h"

#include <stddef.h>

#define SYNTH_BASE_VOCAB 49152

/* The tokenizer.json text (heap, NUL-terminated; *len without the NUL) with
 * n_added (128 or 3) added tokens after the 49152 base ids. Same bytes on
 * every call. LV_ERR_ARG for another n_added, LV_ERR_NOMEM. */
lv_status synth_tokenizer_json(int n_added, char **text, size_t *len, lv_err *err);

#endif
