/*
 * presets.h - the config files of published LLaVA checkpoints, for random
 * models of the real shapes (llava-quantize --random --preset NAME).
 *
 * Sources:
 *   llava-v1.6-mistral-7b  llava-hf/llava-v1.6-mistral-7b-hf config.json and
 *                          preprocessor_config.json, as in tests/data/configs/.
 *   llava-1.5-7b           llava-hf/llava-1.5-7b-hf config.json
 *                          (tests/data/configs/); CLIPImageProcessor 336.
 *   llava-v1.6-vicuna-13b  llava-hf/llava-v1.6-vicuna-13b-hf: the llava_next
 *                          top level of the Mistral 7B file (same CLIP-L/336
 *                          tower, pinpoints, image token 32000) with a Llama
 *                          text_config of vicuna-13b-v1.5's published facts
 *                          (hidden 5120, intermediate 13824, 40 layers, 40
 *                          heads, no GQA, max_position 4096) and the llava-hf
 *                          vocabulary of 32064 (pad 32001). Written from those
 *                          facts, not copied from the file.
 *   llava-v1.6-34b         llava-hf/llava-v1.6-34b-hf: the same llava_next top
 *                          level and CLIP-L/336 tower with a Llama text_config
 *                          of Nous-Hermes-2-Yi-34B's published architecture
 *                          (Yi-34B: hidden 7168, intermediate 20480, 60
 *                          layers, 56 heads, 8 KV heads, rope_theta 5e6,
 *                          max_position 4096, a 64000-id vocabulary, eos 7)
 *                          and llava-hf's 64 more ids (image 64000, pad
 *                          64001: vocab_size 64064). Written from those facts,
 *                          not copied from the file, which was not found to
 *                          check; for shapes (benchmarks, tensor parallelism).
 *   tiny-llava-next        not a published model: the Mistral 7B file's
 *                          llava_next top level with a small Mistral text
 *                          model (dim 256, 8 layers, 4 heads, 2 KV heads,
 *                          FFN 512: every row whole Q4_K/Q6_K blocks) and a
 *                          2-layer CLIP tower at 336/14, for tests of the
 *                          writers and the engine on their output.
 *
 *   smolvlm-256m, smolvlm-500m, smolvlm-2.2b
 *                          HuggingFaceTB/SmolVLM-{256M,500M}-Instruct and
 *                          SmolVLM-Instruct (v1, model_type "idefics3");
 *   smolvlm2-256m, smolvlm2-500m, smolvlm2-2.2b
 *                          HuggingFaceTB/SmolVLM2-{256M,500M}-Video-Instruct
 *                          and SmolVLM2-2.2B-Instruct ("smolvlm"). config.json,
 *                          preprocessor_config.json, processor_config.json
 *                          and generation_config.json written from the facts
 *                          of shared/spec/smolvlm.md §1.1 (dims, ids, the keys
 *                          the hub files omit, e.g. SmolVLM2-500M's vision
 *                          intermediate_size / num_hidden_layers and
 *                          SmolVLM2-2.2B's text num_attention_heads, vision
 *                          hidden_size / num_attention_heads), §1.2, §9, with
 *                          the hub files' key layout (text_config
 *                          architectures ["VLlama3ForCausalLM"], which
 *                          llama.cpp's converter keys on); not copies of the
 *                          files. Their vocabulary is synthetic
 *                          (qsource.h): 49152 byte-level BPE ids + the 128
 *                          added tokens of §1.2 (3 for smolvlm-2.2b).
 *   tiny-smolvlm           not a published model: SmolVLM2's top level with a
 *                          2-layer SigLIP (hidden 64, 4 heads, FFN 128) at
 *                          image 64 / patch 16, scale_factor 2 (4 rows per
 *                          tile), and tiny-llava-next's small text sizes as a
 *                          2-layer Llama over the 49280-id vocabulary.
 *
 * Chat templates (the processor's chat_template.json of the llava-hf repo,
 * the Jinja text byte for byte, "\n" being Jinja's escape inside a string):
 *   llava-v1.6-mistral-7b, tiny-llava-next: llava-hf/llava-v1.6-mistral-7b-hf
 *       (the [INST] template; shared/spec/llava-next.md §7 describes what it
 *       renders; the text as LlavaNextProcessor prints it, find_string id
 *       35614015929, and as another public script embeds it, id 67120631862).
 *   llava-1.5-7b: llava-hf/llava-1.5-7b-hf (USER: / ASSISTANT:; the text in
 *       two public template tables, ids 6316060901 and 45466028003).
 *   llava-v1.6-vicuna-13b: none (its repo's text was not found to check).
 */
#ifndef LV_QUANT_PRESETS_H
#define LV_QUANT_PRESETS_H

#include <stddef.h>

typedef struct {
    const char *name;          /* "llava-v1.6-mistral-7b" */
    const char *config_json;   /* config.json text */
    const char *preproc_json;  /* preprocessor_config.json text */
    const char *chat_template; /* the processor's Jinja chat template, or NULL */
    /* SmolVLM presets only (NULL / 0 for the LLaVA ones): */
    const char *processor_json;        /* processor_config.json text */
    const char *generation_json;       /* generation_config.json text */
    const char *tokenizer_config_json; /* tokenizer_config.json text */
    int synth_added;                   /* > 0: the synthetic byte-level vocabulary (qsource.h)
                                          with this many added tokens (128, or 3) */
} qs_preset;

/* The preset with this name, or NULL. */
const qs_preset *qs_preset_find(const char *name);

/* Number of presets, and preset i (for listing them in messages). */
size_t qs_preset_count(void);
const qs_preset *qs_preset_at(size_t i);

#endif
