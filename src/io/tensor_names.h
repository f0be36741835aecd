/*
 * tensor_names.h - one spelling for every LLaVA tensor name.
 *
 * The same checkpoint is written under two naming schemes
 * (shared/spec/formats.md §2.4):
 *   - transformers 4.4x (the published llava-hf files, and every MLX
 *     conversion): language_model.model.layers.0..., language_model.lm_head.,
 *     vision_tower.vision_model..., multi_modal_projector..., image_newline;
 *   - transformers 4.52+ / 5.x save_pretrained: model.language_model.layers.0...,
 *     lm_head., model.vision_tower..., model.multi_modal_projector...,
 *     model.image_newline.
 * The legacy names are canonical: the loader rewrites new names to them once,
 * when a file is opened, so the model code looks up exactly one spelling.
 * transformers 5.x also holds the CLIP tower without its "vision_model."
 * level in memory, so a file may say vision_tower.embeddings... (or
 * model.vision_tower.encoder...); such names get the level back
 * (vision_tower.vision_model.embeddings...).
 * Idefics3 / SmolVLM checkpoints map onto the same spelling:
 * model.vision_model. -> vision_tower.vision_model. (the SigLIP tower has
 * CLIP's layer names), model.text_model. -> language_model.model., lm_head.
 * as above, model.connector. -> connector.; mlx-vlm's sanitized names
 * (vision_model., language_model.layers. / embed_tokens. / norm.) too.
 * Reference: transformers models/llava_next/modeling_llava_next.py
 * (`_checkpoint_conversion_mapping`, which maps the other way on load).
 */
#ifndef LV_TENSOR_NAMES_H
#define LV_TENSOR_NAMES_H

#include <stddef.h>

/* Writes the canonical form of name into out (cap bytes, NUL-terminated,
 * truncated if it does not fit) and returns its full length, snprintf-style:
 * the result fits iff the return value < cap. The first matching prefix rule
 * of formats.md §2.4 is applied, then the vision_model rule above; a name no
 * rule matches is copied unchanged.
 * Pure function: no allocation, no failure. */
size_t tn_canonical(const char *name, char *out, size_t cap);

/* Length tn_canonical would return for name (without writing anything). */
size_t tn_canonical_len(const char *name);

#endif
