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
 *   tiny-llava-next        not a published model: the Mistral 7B file's
 *                          llava_next top level with a small Mistral text
 *                          model (dim 256, 8 layers, 4 heads, 2 KV heads,
 *                          FFN 512: every row whole Q4_K/Q6_K blocks) and a
 *                          2-layer CLIP tower at 336/14, for tests of the
 *                          writers and the engine on their output.
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
} qs_preset;

/* The preset with this name, or NULL. */
const qs_preset *qs_preset_find(const char *name);

/* Number of presets, and preset i (for listing them in messages). */
size_t qs_preset_count(void);
const qs_preset *qs_preset_at(size_t i);

#endif
