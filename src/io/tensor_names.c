/* tensor_names.c - see tensor_names.h. */
#include "tensor_names.h"

#include <string.h>

/* New prefix -> canonical (4.4x) prefix, tried in order; the first match wins.
 * The order matters only for readability: no new prefix is a prefix of
 * another. "model.image_newline" has no trailing dot because the tensor is
 * named exactly that. */
static const struct {
    const char *from, *to;
} rules[] = {
    {"model.language_model.", "language_model.model."},
    {"lm_head.", "language_model.lm_head."},
    {"model.vision_tower.", "vision_tower."},
    {"model.multi_modal_projector.", "multi_modal_projector."},
    {"model.image_newline", "image_newline"},
    /* Idefics3 / SmolVLM (transformers): model.{vision_model,connector,text_model} */
    {"model.vision_model.", "vision_tower.vision_model."},
    {"model.connector.", "connector."},
    {"model.text_model.", "language_model.model."},
    /* ... and as mlx-vlm's idefics3 sanitize() writes them (vision_model.*,
     * connector.*, language_model.{embed_tokens,layers,norm,lm_head}.*) */
    {"vision_model.", "vision_tower.vision_model."},
    {"language_model.embed_tokens.", "language_model.model.embed_tokens."},
    {"language_model.layers.", "language_model.model.layers."},
    {"language_model.norm.", "language_model.model.norm."},
};

#define VT    "vision_tower."
#define VT_VM "vision_tower.vision_model."

/* Finds the rule for name: sets *skip (bytes of name to drop) and *prefix
 * (what replaces them); both empty when no rule matches. Then, as
 * transformers 5.x holds the CLIP tower without its "vision_model." level
 * (CLIPVisionModel vs the bare CLIPVisionTransformer), a vision tower name
 * lacking that level gets it back. */
static void match_rule(const char *name, size_t *skip, const char **prefix) {
    *skip = 0;
    *prefix = "";
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        size_t n = strlen(rules[i].from);
        if (strncmp(name, rules[i].from, n) == 0) {
            *skip = n;
            *prefix = rules[i].to;
            break;
        }
    }
    const char *rest = name + *skip;
    if (strcmp(*prefix, VT) == 0 && strncmp(rest, "vision_model.", 13) != 0) {
        *prefix = VT_VM; /* model.vision_tower.embeddings... */
    } else if (**prefix == '\0' && strncmp(name, VT, strlen(VT)) == 0 &&
               strncmp(name + strlen(VT), "vision_model.", 13) != 0) {
        *skip = strlen(VT); /* vision_tower.embeddings... */
        *prefix = VT_VM;
    }
}

size_t tn_canonical_len(const char *name) {
    size_t skip;
    const char *prefix;
    match_rule(name, &skip, &prefix);
    return strlen(prefix) + strlen(name + skip);
}

size_t tn_canonical(const char *name, char *out, size_t cap) {
    size_t skip;
    const char *prefix;
    match_rule(name, &skip, &prefix);
    size_t np = strlen(prefix), nr = strlen(name + skip);
    if (cap > 0) {
        size_t a = np < cap - 1 ? np : cap - 1;
        memcpy(out, prefix, a);
        size_t b = nr < cap - 1 - a ? nr : cap - 1 - a;
        memcpy(out + a, name + skip, b);
        out[a + b] = '\0';
    }
    return np + nr;
}
