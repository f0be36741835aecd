/*
 * gguf_export.h - writes a model as the llama.cpp GGUF pair a LLaVA-1.6
 * user loads with `--model text.gguf --mmproj mmproj.gguf`
 * (shared/spec/formats.md §4): out_dir/text.gguf (general.architecture
 * "llama", as convert_hf_to_gguf.py writes a Mistral/Llama text model,
 * q/k rows permuted for llama.cpp's adjacent-pair RoPE, tokenizer.ggml.*
 * vocabulary from the source's tokenizer.json, tokenizer.chat_template from
 * its tokenizer_config.json, else its processor template, else a random
 * preset's) and out_dir/mmproj.gguf
 * (general.architecture "clip", as the llava legacy converter writes it:
 * clip.* keys, mm.0/mm.2 projector, the vision blocks up to the feature
 * layer, model.image_newline). A SmolVLM / SmolVLM2 source (model_type
 * "idefics3" / "smolvlm") is written as convert_hf_to_gguf.py writes it
 * (ggml-org/llama.cpp conversion/smolvlm.py, conversion/llama.py): a "gpt2"
 * vocabulary (tokenizer.ggml.pre "smollm", merges, no scores; bos/eos/pad
 * from tokenizer_config.json's strings, then generation_config.json's ids),
 * and an mmproj with clip.projector_type "idefics3", every SigLIP block,
 * v.post_ln and mm.model.fc, the embeddings' tensors in F32.
 *
 * Tensor types, as llama-quantize chooses them (the rules and their source:
 * the top of gguf_export.c):
 *   norms, biases, class embedding, image_newline     F32
 *   the mmproj's matrices and the patch convolution   F16 (whatever `type`)
 *   text matrices, token_embd                         `type`
 *   output.weight when `type` is Q4_0/Q4_K            Q6_K
 *   attn_v, ffn_down on half the layers (Q4_K_M mix)  Q6_K
 *   a matrix whose rows are not whole blocks          Q8_0, else F16
 */
#ifndef LV_QUANT_GGUF_EXPORT_H
#define LV_QUANT_GGUF_EXPORT_H

#include "base/common.h"
#include "io/dtype.h"
#include "io/gguf.h"
#include "io/hf_config.h"
#include "quant/qsource.h"

/* A llama-quantize mixture on top of the file's type. */
typedef enum {
    GGUF_MIX_NONE = 0, /* every text matrix `type` (output.weight as above) */
    GGUF_MIX_Q4_K_M,   /* llama.cpp's Q4_K_M (type Q4_K): attn_v / ffn_down Q6_K on
                          the layers use_more_bits picks; general.file_type 15 */
} gguf_mix;

/* How the pair is laid out beyond the tensor type. Zero = gguf_export. */
typedef struct {
    gguf_mix mix;
    /* As the GGUFs converted from the original liuhaotian checkpoints look
     * (llava_surgery_v2.py, convert_hf_to_gguf.py on the base SentencePiece
     * model, the legacy image encoder converter with config_vit.json): the
     * vocabulary is the tokenizer model's pieces only (added tokens past
     * them, such as <image> and <pad>, are dropped), token_embd and output
     * keep only those rows, there are no tokenizer.ggml.merges (the scores
     * alone), no llava.processor_chat_template, and the mmproj has no
     * clip.vision.feature_layer (its block_count is the blocks to run) but
     * config_vit.json's image_crop_resolution, image_split_resolution and
     * mm_projector_type. Loaders then use the virtual image id. */
    bool base_vocab;
} gguf_export_opts;

/* Writes src into out_dir (created if absent) as text.gguf + mmproj.gguf.
 * type: LV_DTYPE_F16, LV_DTYPE_Q8_0, LV_DTYPE_Q4_0 or LV_DTYPE_Q4_K.
 * Tensors are read with qsource_read one at a time. progress (may be NULL)
 * is called after each tensor with tensors done and in all. Each file is
 * written as "<file>.tmp" and renamed when complete; on failure neither
 * file of this run is left behind. Errors: LV_ERR_ARG (type, a mix that
 * does not go with it; a source without tokenizer.json), LV_ERR_UNSUPPORTED (a model llama.cpp's
 * llava path cannot express: several feature layers, "full" features), LV_ERR_IO naming the file,
 * LV_ERR_NOMEM, and what the source reports. */
lv_status gguf_export(const qsource *src, const char *out_dir, lv_dtype type,
                      qs_progress_fn progress, void *ud, lv_err *err);

/* The same with options (opts may be NULL: gguf_export). */
lv_status gguf_export_ex(const qsource *src, const char *out_dir, lv_dtype type,
                         const gguf_export_opts *opts, qs_progress_fn progress, void *ud,
                         lv_err *err);

/* The tokenizer.ggml.* keys of tokenizer_json (n_vocab ids; ids it lacks
 * become "[PAD<id>]", UNUSED) into w, as gguf_export writes them; BOS/EOS
 * are the ids of tc's bos/eos strings ("<s>" / "</s>" if NULL). For tests
 * and tools that write a vocabulary alone. */
lv_status gguf_export_vocab(gguf_writer *w, const char *tokenizer_json, int n_vocab,
                            const lv_tokenizer_config *tc, lv_err *err);

#endif
