/*
 * gguf_names.h - the one table of llama.cpp GGUF tensor names and the
 * canonical (transformers 4.4x llava-hf, io/tensor_names.h) names they stand
 * for. io/gguf_model.c reads a GGUF pair through it and quant/gguf_export.c
 * writes one from it, so the two directions cannot drift apart.
 *
 * An entry pairs a GGUF stem with a canonical stem; in a per-block entry
 * both hold one "%d", the block number. A tensor is the stem plus ".weight"
 * or ".bias" (both are read; what is written, the flags say), or the stem
 * alone for a bare name (v.class_embd):
 *   blk.%d.attn_q   <-> language_model.model.layers.%d.self_attn.q_proj
 *   v.blk.%d.ln1    <-> vision_tower.vision_model.encoder.layers.%d.layer_norm1
 * Some GGUF names have two spellings (v.image_newline and the legacy
 * model.image_newline; attn_out and attn_output in the vision blocks): all
 * are read, one is written. The legacy clip converter swapped the vision MLP
 * (ffn_down = fc1, ffn_up = fc2, what clip.cpp still undoes by shape); the
 * current names (ffn_up = fc1) are the ones read unless the reader says the
 * file is legacy, and the legacy ones are the ones written (llama.cpp reads
 * both). The entries are in the order convert_hf_to_gguf.py writes tensors.
 *
 * SmolVLM / Idefics3 mmproj files (projector type "idefics3", written by
 * convert_hf_to_gguf.py's SmolVLMModel, ggml-org/llama.cpp
 * conversion/smolvlm.py; names from gguf-py/gguf/tensor_mapping.py) share the
 * vision names with the current meaning of the MLP (ffn_up = fc1), have a
 * patch bias and v.post_ln, no class embedding or pre_ln, and one connector
 * matrix mm.model.fc (<-> connector.modality_projection.proj). Reading needs
 * no switch (every spelling maps to one canonical name); writing takes the
 * convention (gguf_names_each_conv).
 */
#ifndef LV_IO_GGUF_NAMES_H
#define LV_IO_GGUF_NAMES_H

#include "base/common.h"

#include <stdbool.h>
#include <stddef.h>

/* Which file of the pair a tensor lives in. */
typedef enum { GN_TEXT = 1, GN_MMPROJ = 2 } gn_file;

/* How an entry is spelled and written. */
enum {
    GN_BARE = 1 << 0,        /* no .weight / .bias: the stem is the name */
    GN_BIAS = 1 << 1,        /* a .bias is written after the .weight */
    GN_OPT_BIAS = 1 << 2,    /* ... when the source has one */
    GN_OPTIONAL = 1 << 3,    /* the tensor itself may be missing from a source */
    GN_PERM_Q = 1 << 4,      /* rows permuted per attention head (gguf_model.c: Q/K PERMUTATION) */
    GN_PERM_K = 1 << 5,      /* rows permuted per key/value head */
    GN_VOCAB = 1 << 6,       /* one row per token (a base vocabulary keeps the first rows) */
    GN_LM_HEAD = 1 << 7,     /* the output projection: absent when tied to the embeddings */
    GN_READ_ONLY = 1 << 8,   /* read, never written (another spelling, or left out) */
    GN_MLP = 1 << 9,         /* a vision MLP name: its meaning depends on the convention */
    GN_LEGACY = 1 << 10,     /* the legacy convention's meaning: written; read only when asked */
    GN_ONLY_LLAVA = 1 << 11, /* written only for a LLaVA mmproj (GN_CONV_LLAVA) */
    GN_ONLY_IDEFICS3 = 1 << 12, /* written only for a SmolVLM mmproj (GN_CONV_IDEFICS3) */
};

/* Which mmproj layout a writer produces. */
typedef enum {
    GN_CONV_LLAVA = 0, /* the llava legacy clip converter's (gguf_names_each) */
    GN_CONV_IDEFICS3,  /* convert_hf_to_gguf.py's SmolVLMModel (projector "idefics3") */
} gn_conv;

typedef struct {
    const char *gguf; /* GGUF stem ("%d": block number) */
    const char *hf;   /* canonical stem (same "%d") */
    gn_file file;
    unsigned flags; /* GN_* */
} gguf_name;

/* The entry for GGUF tensor name in file, with its canonical name in hf (cap
 * bytes) and its block number in *block (-1 outside the blocks); NULL for a
 * name the table lacks or an hf that does not fit. legacy: read the vision
 * MLP with the legacy meaning. */
const gguf_name *gguf_name_find(const char *name, gn_file file, bool legacy, char *hf, size_t cap,
                                int *block);

/* Calls fn for every tensor written to file, with both names formatted
 * (bias: the entry's .bias, after its .weight): the entries before the
 * blocks, then blocks 0 .. n_blocks-1 (each with the per-block entries in
 * table order), then the entries after them. Returns fn's first failure,
 * else LV_OK. */
typedef lv_status (*gguf_name_fn)(void *ud, const gguf_name *e, const char *gguf, const char *hf,
                                  bool bias, lv_err *err);
lv_status gguf_names_each(gn_file file, int n_blocks, gguf_name_fn fn, void *ud, lv_err *err);

/* The same for the layout conv (gguf_names_each is GN_CONV_LLAVA). */
lv_status gguf_names_each_conv(gn_file file, gn_conv conv, int n_blocks, gguf_name_fn fn, void *ud,
                               lv_err *err);

#endif
