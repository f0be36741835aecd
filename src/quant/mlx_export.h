/*
 * mlx_export.h - writes a model in the MLX affine-quantized layout, as
 * mlx-vlm's `convert` writes it (shared/spec/formats.md §3), so that both
 * this engine and mlx-vlm load it.
 *
 * What goes where (out_dir):
 *   config.json         the source's, plus "quantization" and
 *                       "quantization_config": {"group_size", "bits",
 *                       "mode": "affine"}
 *   model.safetensors   or model-0000i-of-0000K.safetensors + the
 *                       model.safetensors.index.json, shards of at most
 *                       shard_bytes (5 GB by default, as mlx-vlm's
 *                       MAX_FILE_SIZE_GB); "__metadata__": {"format": "mlx"}
 *   tokenizer, preprocessor, generation and chat-template files, copied
 *
 * Tensors (formats.md §3.3-3.4):
 *   - a quantized module P becomes P.weight (U32 [out, in*bits/32]),
 *     P.scales and P.biases (the source float dtype, [out, in/group]);
 *     its Linear .bias stays float;
 *   - which modules: every Linear and Embedding of the language model
 *     (q/k/v/o, gate/up/down, embed_tokens, lm_head): mlx-vlm's current
 *     layout, vision tower and projector float. With quantize_vision, the
 *     legacy 2024 layout: also the vision linears, the vision
 *     position_embedding and both projector linears. Either way a module
 *     whose in-dim is not a multiple of the group stays float, as
 *     mlx-vlm's quantize_model skips it;
 *   - SmolVLM (model_type "idefics3" / "smolvlm"): mlx-vlm's idefics3 names
 *     (vision_model.*, connector.*, language_model.{embed_tokens,layers,
 *     norm,lm_head}.*); the connector is quantized with the language model
 *     (mlx-vlm's predicate skips only vision paths; spec smolvlm.md §12);
 *   - the conv patch_embedding is transposed to OHWI [out, kh, kw, in];
 *   - every other tensor is copied in its source float dtype.
 *
 * Everything is written into "<out_dir>.tmp-XXXXXX" and renamed to out_dir
 * at the end, so an interrupted or failed run leaves no out_dir (the
 * temporary directory is removed on failure; a killed process leaves only
 * it, under a name that says what it is).
 */
#ifndef LV_QUANT_MLX_EXPORT_H
#define LV_QUANT_MLX_EXPORT_H

#include "base/common.h"
#include "quant/qsource.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    int bits;             /* 4 or 8 (2, 3, 5, 6 are accepted too) */
    int group;            /* 32, 64 or 128 */
    bool quantize_vision; /* the legacy layout (vision + projector quantized) */
    bool overwrite;       /* replace an existing out_dir (else LV_ERR_ARG) */
    uint64_t shard_bytes; /* 0: 5 GB */
    int threads;          /* quantizer threads; 0: the online CPUs (at most 8) */
    long fail_after;      /* test hook: fail with LV_ERR_IO after this many tensors; 0: never */
    const volatile int *cancel; /* non-zero (set by a signal handler): stop after the tensor
                                   in hand with LV_ERR_CANCELLED; may be NULL */
} mlx_export_opts;

/* Writes src to out_dir (see above). progress (may be NULL) is called after
 * each source tensor with bytes written so far and in all. Errors:
 * LV_ERR_ARG (bits/group, out_dir exists without overwrite), LV_ERR_CANCELLED, LV_ERR_IO
 * (naming the file), LV_ERR_NOMEM, and what the source reports. On failure
 * out_dir is untouched (absent, or the old one with overwrite). */
lv_status mlx_export(const qsource *src, const char *out_dir, const mlx_export_opts *opts,
                     qs_progress_fn progress, void *ud, lv_err *err);

#endif
