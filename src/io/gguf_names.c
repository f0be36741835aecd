/*
 * gguf_names.c - the GGUF <-> canonical tensor-name table (gguf_names.h).
 *
 * Sources: convert_hf_to_gguf.py (LlamaModel: token_embd, blk.N.*,
 * output_norm, output), the llava legacy clip converter and
 * tools/mtmd/clip-impl.h (mm.0/mm.2, mm.model.fc, v.*, v.blk.N.*), formats.md §4.4,
 * §4.7; SmolVLM: conversion/smolvlm.py, gguf-py/gguf/tensor_mapping.py
 * (ggml-org/llama.cpp), shared/spec/smolvlm.md §11.1.
 */
#include "io/gguf_names.h"

#include <stdio.h>
#include <string.h>

#define LM  "language_model.model."
#define LMB LM "layers.%d."
#define VT  "vision_tower.vision_model."
#define VTB VT "encoder.layers.%d."
#define MMP "multi_modal_projector."

static const gguf_name NAMES[] = {
    /* ---- text.gguf ---- */
    {"token_embd", LM "embed_tokens", GN_TEXT, GN_VOCAB},
    {"blk.%d.attn_norm", LMB "input_layernorm", GN_TEXT, 0},
    {"blk.%d.attn_q", LMB "self_attn.q_proj", GN_TEXT, GN_PERM_Q | GN_OPT_BIAS},
    {"blk.%d.attn_k", LMB "self_attn.k_proj", GN_TEXT, GN_PERM_K | GN_OPT_BIAS},
    {"blk.%d.attn_v", LMB "self_attn.v_proj", GN_TEXT, GN_OPT_BIAS},
    {"blk.%d.attn_output", LMB "self_attn.o_proj", GN_TEXT, GN_OPT_BIAS},
    {"blk.%d.ffn_norm", LMB "post_attention_layernorm", GN_TEXT, 0},
    {"blk.%d.ffn_gate", LMB "mlp.gate_proj", GN_TEXT, 0},
    {"blk.%d.ffn_up", LMB "mlp.up_proj", GN_TEXT, 0},
    {"blk.%d.ffn_down", LMB "mlp.down_proj", GN_TEXT, 0},
    {"output_norm", LM "norm", GN_TEXT, 0},
    {"output", "language_model.lm_head", GN_TEXT, GN_VOCAB | GN_LM_HEAD},

    /* ---- mmproj.gguf ---- */
    {"mm.0", MMP "linear_1", GN_MMPROJ, GN_OPT_BIAS | GN_ONLY_LLAVA},
    {"mm.2", MMP "linear_2", GN_MMPROJ, GN_OPT_BIAS | GN_ONLY_LLAVA},
    /* SmolVLM's connector (clip-impl.h TN_MM_PROJECTOR "mm.model.fc.%s") */
    {"mm.model.fc", "connector.modality_projection.proj", GN_MMPROJ,
     GN_OPT_BIAS | GN_ONLY_IDEFICS3},
    {"model.image_newline", "image_newline", GN_MMPROJ, GN_BARE | GN_OPTIONAL | GN_ONLY_LLAVA},
    {"v.image_newline", "image_newline", GN_MMPROJ, GN_BARE | GN_READ_ONLY},
    {"v.class_embd", VT "embeddings.class_embedding", GN_MMPROJ, GN_BARE | GN_ONLY_LLAVA},
    /* CLIP's conv has no bias, SigLIP's has one */
    {"v.patch_embd", VT "embeddings.patch_embedding", GN_MMPROJ, GN_OPT_BIAS},
    {"v.position_embd", VT "embeddings.position_embedding", GN_MMPROJ, 0},
    {"v.pre_ln", VT "pre_layrnorm", GN_MMPROJ, GN_BIAS | GN_ONLY_LLAVA},
    {"v.blk.%d.attn_q", VTB "self_attn.q_proj", GN_MMPROJ, GN_BIAS},
    {"v.blk.%d.attn_k", VTB "self_attn.k_proj", GN_MMPROJ, GN_BIAS},
    {"v.blk.%d.attn_v", VTB "self_attn.v_proj", GN_MMPROJ, GN_BIAS},
    {"v.blk.%d.attn_out", VTB "self_attn.out_proj", GN_MMPROJ, GN_BIAS},
    {"v.blk.%d.attn_output", VTB "self_attn.out_proj", GN_MMPROJ, GN_READ_ONLY},
    {"v.blk.%d.ln1", VTB "layer_norm1", GN_MMPROJ, GN_BIAS},
    {"v.blk.%d.ln2", VTB "layer_norm2", GN_MMPROJ, GN_BIAS},
    /* the vision MLP, the legacy meaning first so that it wins when asked for */
    {"v.blk.%d.ffn_down", VTB "mlp.fc1", GN_MMPROJ, GN_BIAS | GN_MLP | GN_LEGACY | GN_ONLY_LLAVA},
    {"v.blk.%d.ffn_up", VTB "mlp.fc2", GN_MMPROJ, GN_BIAS | GN_MLP | GN_LEGACY | GN_ONLY_LLAVA},
    /* the current meaning (SmolVLM's converter writes it; llava files may too) */
    {"v.blk.%d.ffn_up", VTB "mlp.fc1", GN_MMPROJ, GN_BIAS | GN_MLP | GN_ONLY_IDEFICS3},
    {"v.blk.%d.ffn_down", VTB "mlp.fc2", GN_MMPROJ, GN_BIAS | GN_MLP | GN_ONLY_IDEFICS3},
    /* a LLaVA writer keeps only the blocks that run, never the final norm;
     * SigLIP's output is post-normed (SmolVLM) */
    {"v.post_ln", VT "post_layernorm", GN_MMPROJ, GN_BIAS | GN_ONLY_IDEFICS3},
};

static bool per_block(const gguf_name *e) {
    return strstr(e->gguf, "%d") != NULL;
}

/* Whether stem matches pattern, whose only conversion may be one "%d"
 * (a block number of 1 to 5 digits, into *block; -1 without "%d"). */
static bool match(const char *pattern, const char *stem, size_t len, int *block) {
    const char *d = strstr(pattern, "%d");
    *block = -1;
    if (!d) return strlen(pattern) == len && strncmp(pattern, stem, len) == 0;
    size_t pl = (size_t)(d - pattern);
    if (len <= pl || strncmp(pattern, stem, pl) != 0) return false;
    size_t i = pl;
    long v = 0;
    while (i < len && i - pl < 6 && stem[i] >= '0' && stem[i] <= '9')
        v = v * 10 + (stem[i++] - '0');
    if (i == pl || v >= 100000) return false;
    size_t rest = strlen(d + 2);
    if (len - i != rest || strncmp(stem + i, d + 2, rest) != 0) return false;
    *block = (int)v;
    return true;
}

/* pattern (its "%d": block b; -1 without) + suffix into out; false if it
 * does not fit. */
static bool spell(const char *pattern, int b, const char *suffix, char *out, size_t cap) {
    char stem[160];
    int w = b >= 0 ? snprintf(stem, sizeof stem, pattern, b)
                   : snprintf(stem, sizeof stem, "%s", pattern);
    if (w < 0 || (size_t)w >= sizeof stem) return false;
    w = snprintf(out, cap, "%s%s", stem, suffix);
    return w > 0 && (size_t)w < cap;
}

const gguf_name *gguf_name_find(const char *name, gn_file file, bool legacy, char *hf, size_t cap,
                                int *block) {
    /* "stem.weight" / "stem.bias", or a bare name */
    const char *dot = strrchr(name, '.');
    const char *suffix = dot && (!strcmp(dot, ".weight") || !strcmp(dot, ".bias")) ? dot : NULL;
    for (size_t i = 0; i < LV_ARRAY_LEN(NAMES); i++) {
        const gguf_name *e = &NAMES[i];
        bool bare = e->flags & GN_BARE;
        if (e->file != file || ((e->flags & GN_LEGACY) && !legacy) || bare == (suffix != NULL))
            continue;
        size_t len = suffix ? (size_t)(suffix - name) : strlen(name);
        if (match(e->gguf, name, len, block))
            return spell(e->hf, *block, suffix ? suffix : "", hf, cap) ? e : NULL;
    }
    return NULL;
}

/* fn on entry e of block b (-1: none): its weight, then its bias if written. */
static lv_status visit(const gguf_name *e, int b, gguf_name_fn fn, void *ud, lv_err *err) {
    static const char *const part[2] = {".weight", ".bias"};
    bool bare = e->flags & GN_BARE;
    int n_parts = !bare && (e->flags & (GN_BIAS | GN_OPT_BIAS)) ? 2 : 1;
    for (int k = 0; k < n_parts; k++) {
        char g[96], hf[192];
        const char *suffix = bare ? "" : part[k];
        if (!spell(e->gguf, b, suffix, g, sizeof g) || !spell(e->hf, b, suffix, hf, sizeof hf))
            return lv_fail(err, LV_ERR_ARG, "block %d: tensor name too long", b);
        lv_status st = fn(ud, e, g, hf, k == 1, err);
        if (st) return st;
    }
    return LV_OK;
}

/* Whether entry e is written under conv. */
static bool written(const gguf_name *e, gn_conv conv) {
    if (e->flags & GN_READ_ONLY) return false;
    if ((e->flags & GN_ONLY_LLAVA) && conv != GN_CONV_LLAVA) return false;
    if ((e->flags & GN_ONLY_IDEFICS3) && conv != GN_CONV_IDEFICS3) return false;
    return true;
}

lv_status gguf_names_each_conv(gn_file file, gn_conv conv, int n_blocks, gguf_name_fn fn, void *ud,
                               lv_err *err) {
    size_t i = 0, n = LV_ARRAY_LEN(NAMES);
    lv_status st;
    while (i < n) {
        if (NAMES[i].file != file || !written(&NAMES[i], conv)) {
            i++;
            continue;
        }
        if (!per_block(&NAMES[i])) {
            if ((st = visit(&NAMES[i], -1, fn, ud, err))) return st;
            i++;
            continue;
        }
        /* a run of per-block entries: block by block */
        size_t end = i;
        while (end < n && NAMES[end].file == file && per_block(&NAMES[end])) end++;
        for (int b = 0; b < n_blocks; b++)
            for (size_t k = i; k < end; k++)
                if (written(&NAMES[k], conv) && (st = visit(&NAMES[k], b, fn, ud, err))) return st;
        i = end;
    }
    return LV_OK;
}

lv_status gguf_names_each(gn_file file, int n_blocks, gguf_name_fn fn, void *ud, lv_err *err) {
    return gguf_names_each_conv(file, GN_CONV_LLAVA, n_blocks, fn, ud, err);
}
