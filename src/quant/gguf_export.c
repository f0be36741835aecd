/*
 * gguf_export.c - a qsource as a llama.cpp GGUF pair (see gguf_export.h).
 *
 * Each file is planned first (metadata and the list of tensors with their
 * ggml types and ne), its header written, then every tensor is read from
 * the source as float32, q/k rows permuted (text model only), quantized row
 * by row and appended. Tensor names come from io/gguf_names.c, the table the
 * reader uses too; keys and the permutation are the inverse of
 * io/gguf_model.c, which documents them; the vocabulary follows
 * convert_hf_to_gguf.py for a SentencePiece tokenizer (tokens, scores,
 * token_type), plus tokenizer.ggml.merges from tokenizer.json so that this
 * engine's BPE reproduces the tokenizer.json exactly.
 *
 * TENSOR TYPES follow llama-quantize (llama.cpp src/llama-quant.cpp,
 * llama_tensor_get_type_impl and tensor_type_fallback, read at the
 * node-llama-cpp 3.22.1 bundle), for a llama-architecture text model without
 * experts and without an importance matrix:
 *   - 1-D tensors (norms, biases) stay F32; only 2-D weights are quantized.
 *   - output.weight (and token_embd.weight when the embeddings are tied and
 *     it stands in for output): Q8_0 if its rows are not whole blocks of the
 *     file's type; else Q6_K, unless the file's type is Q8_0 (kept) or not a
 *     quantized type (F16 kept).
 *   - token_embd.weight (untied): the file's type.
 *   - Q4_K_M (LLAMA_FTYPE_MOSTLY_Q4_K_M): attn_v and ffn_down are Q6_K on
 *     the layers use_more_bits picks, i < n/8 || i >= 7n/8 ||
 *     (i - n/8) % 3 == 2 (for n = 32: 0-3, 6, 9, ..., 27, 28-31: 16 of 32
 *     layers); every other matrix Q4_K.
 *   - A row that is not whole blocks of the chosen type falls back: Q6_K to
 *     Q8_0 (as llama.cpp), Q4_K to Q8_0 (llama.cpp: Q5_0, which this engine
 *     does not read), Q8_0 / Q4_0 to F16 (as llama.cpp).
 * The plain Q4_K file is Q4_K throughout but output.weight (Q6_K); its
 * general.file_type says MOSTLY_Q4_K_S, the nearest llama.cpp name (whose
 * real recipe also puts Q5_K on the first attn_v and ffn_down layers).
 * The mmproj keeps its matrices in F16 whatever the type, as llama.cpp's
 * llava converter writes them.
 */
#include "quant/gguf_export.h"

#include "base/file.h"
#include "io/gguf.h"
#include "io/gguf_names.h"
#include "io/json_type.h"
#include "quant/ggml_quantize.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* ---- the plan of one file ----------------------------------------------- */

typedef struct {
    char name[GGUF_MAX_NAME]; /* GGUF name */
    long src;                 /* qsource index */
    uint32_t type;            /* ggml type written */
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* fastest first */
    int heads;                 /* > 0: q/k rows permuted over this many heads */
} item;

typedef struct {
    item *v;
    size_t n, cap;
} plan;

/* want, or for rows of ne0 that are not whole blocks of it: Q8_0, else F16
 * (tensor_type_fallback, but Q4_K falls to Q8_0 where llama.cpp takes Q5_0). */
static uint32_t fit_type(uint32_t want, int64_t ne0) {
    if (ggml_row_size(want, ne0)) return want;
    if (ggml_row_size(GGML_Q8_0, ne0) && want != GGML_F16) return GGML_Q8_0;
    return GGML_F16;
}

/* Adds source tensor `canon` as `name`; a missing optional tensor is skipped. */
static lv_status add_item(plan *p, const qsource *src, const char *name, const char *canon,
                          bool optional, uint32_t matrix_type, int heads, lv_err *err) {
    long i = qsource_find(src, canon);
    if (i < 0) {
        if (optional) return LV_OK;
        return lv_fail(err, LV_ERR_FORMAT, "source: tensor '%s' is missing", canon);
    }
    const qs_tensor *t = qsource_at(src, (size_t)i);
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return lv_fail(err, LV_ERR_UNSUPPORTED, "tensor '%s': %d dims", canon, t->n_dims);
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 256;
        item *v = realloc(p->v, cap * sizeof *v);
        if (!v) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
        p->v = v;
        p->cap = cap;
    }
    item *it = &p->v[p->n++];
    memset(it, 0, sizeof *it);
    snprintf(it->name, sizeof it->name, "%s", name);
    it->src = i;
    it->n_dims = t->n_dims;
    for (int d = 0; d < t->n_dims; d++) it->ne[d] = t->shape[t->n_dims - 1 - d];
    it->type = t->n_dims == 1 ? GGML_F32 : fit_type(matrix_type, it->ne[0]);
    it->heads = heads;
    return LV_OK;
}

/* How one file's tensors are planned (gguf_names_each's callback). */
typedef struct {
    plan *p;
    const qsource *src;
    uint32_t matrix_type; /* ggml type of the matrices (the file's type) */
    gguf_mix mix;         /* GGUF_MIX_Q4_K_M: llama.cpp's Q4_K_M choices */
    int n_layers;         /* text blocks (use_more_bits's n) */
    int n_heads, n_kv_heads;
    bool tied;     /* embeddings tied: no output.weight */
    int n_vocab;   /* rows kept of one-row-per-token tensors */
    bool embd_f32; /* tensors of ".embeddings." stay F32 (SmolVLM's mmproj) */
} plan_ctx;

static bool is_quantized(uint32_t t) {
    return t != GGML_F32 && t != GGML_F16 && t != GGML_BF16;
}

/* llama-quant.cpp's use_more_bits: the first and last eighth of the layers
 * and every third one between. */
static bool use_more_bits(int i, int n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* The type llama-quantize gives a 2-D text tensor (rules at the top of this
 * file), before the fallback for rows that are not whole blocks. */
static uint32_t recipe_type(const plan_ctx *x, const gguf_name *e, const char *g, int64_t ne0) {
    uint32_t t = x->matrix_type;
    if (!is_quantized(t)) return t;
    if ((e->flags & GN_LM_HEAD) || ((e->flags & GN_VOCAB) && x->tied)) {
        int be, bb;
        if (!ggml_type_block(t, &be, &bb) || ne0 % be) return GGML_Q8_0;
        return t == GGML_Q8_0 ? t : GGML_Q6_K;
    }
    int layer;
    if (x->mix == GGUF_MIX_Q4_K_M && sscanf(g, "blk.%d.", &layer) == 1 &&
        (strstr(g, ".attn_v.weight") || strstr(g, ".ffn_down.weight")) &&
        use_more_bits(layer, x->n_layers))
        return GGML_Q6_K;
    return t;
}

static lv_status plan_name(void *ud, const gguf_name *e, const char *g, const char *hf, bool bias,
                           lv_err *err) {
    plan_ctx *x = ud;
    bool optional = bias ? (e->flags & GN_OPT_BIAS)
                         : (e->flags & GN_OPTIONAL) || ((e->flags & GN_LM_HEAD) && x->tied);
    int heads = e->flags & GN_PERM_Q ? x->n_heads : e->flags & GN_PERM_K ? x->n_kv_heads : 0;
    size_t before = x->p->n;
    lv_status st = add_item(x->p, x->src, g, hf, optional, x->matrix_type, heads, err);
    if (st || x->p->n == before) return st;
    item *it = &x->p->v[x->p->n - 1];
    if (!bias && (e->flags & GN_VOCAB)) it->ne[1] = x->n_vocab;
    if (it->n_dims >= 2) it->type = fit_type(recipe_type(x, e, g, it->ne[0]), it->ne[0]);
    if (x->embd_f32 && strstr(hf, ".embeddings.")) it->type = GGML_F32;
    return LV_OK;
}

/* ---- the vocabulary --------------------------------------------------------- */

typedef struct {
    int n;          /* vocab size of the text model */
    char **tokens;  /* (n) */
    float *scores;  /* (n) */
    int32_t *types; /* (n) */
    char **merges;  /* "left right" */
    size_t n_merges;
    bool base; /* base vocabulary: written without merges (scores only) */
    bool gpt2; /* byte-level BPE (SmolLM2): tokenizer.ggml.model "gpt2", no scores */
} vocab;

static void vocab_free(vocab *v) {
    for (int i = 0; v->tokens && i < v->n; i++) free(v->tokens[i]);
    for (size_t i = 0; i < v->n_merges; i++) free(v->merges[i]);
    free(v->tokens);
    free(v->scores);
    free(v->types);
    free(v->merges);
    memset(v, 0, sizeof *v);
}

static bool is_byte_piece(const char *s) {
    return strlen(s) == 6 && strncmp(s, "<0x", 3) == 0 && s[5] == '>';
}

/* The two halves of a merge entry ("a b" or ["a", "b"]) joined by a space. */
static char *merge_text(json_t *m, const char **a, size_t *la, const char **b, size_t *lb) {
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        const char *sp = strlen(s) > 1 ? strchr(s + 1, ' ') : NULL;
        if (!sp) return NULL;
        *a = s, *la = (size_t)(sp - s), *b = sp + 1, *lb = strlen(sp + 1);
    } else if (json_is_array(m) && json_array_size(m) == 2 &&
               json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0)), *la = strlen(*a);
        *b = json_string_value(json_array_get(m, 1)), *lb = strlen(*b);
    } else {
        return NULL;
    }
    char *t = malloc(*la + *lb + 2);
    if (t) {
        memcpy(t, *a, *la);
        t[*la] = ' ';
        memcpy(t + *la + 1, *b, *lb);
        t[*la + 1 + *lb] = 0;
    }
    return t;
}

/* Whether the tokenizer's pre_tokenizer is (or has, in a Sequence) ByteLevel. */
static bool has_byte_level(json_t *root) {
    json_t *pt = json_object_get(root, "pre_tokenizer");
    const char *t = json_string_value(json_object_get(pt, "type"));
    if (t && strcmp(t, "ByteLevel") == 0) return true;
    json_t *seq = json_object_get(pt, "pretokenizers"), *e;
    size_t i;
    json_array_foreach(seq, i, e) {
        t = json_string_value(json_object_get(e, "type"));
        if (t && strcmp(t, "ByteLevel") == 0) return true;
    }
    return false;
}

/* 1 + the largest id of model.vocab: the base (SentencePiece) vocabulary. */
static int base_size(json_t *jv) {
    const char *key;
    json_t *val;
    json_int_t top = -1;
    json_object_foreach(jv, key, val) {
        if (json_integer_value(val) > top) top = json_integer_value(val);
    }
    return top + 1 > INT32_MAX ? INT32_MAX : (int)(top + 1);
}

/* The vocabulary of n_vocab ids from tokenizer.json text (path names it in
 * messages); base: only model.vocab's ids (at most n_vocab), the added
 * tokens past them dropped. */
static lv_status load_vocab(const char *path, const char *text, size_t len, int n_vocab, bool base,
                            bool gpt2, vocab *v, lv_err *err) {
    memset(v, 0, sizeof *v);
    json_error_t je;
    json_t *root = json_loadb_whole(text, len, 0, &je);
    if (!root) return lv_fail(err, LV_ERR_FORMAT, "%s: %s (line %d)", path, je.text, je.line);
    lv_status st = LV_OK;
    json_t *model = json_object_get(root, "model"), *jv = json_object_get(model, "vocab"),
           *jm = json_object_get(model, "merges"), *added = json_object_get(root, "added_tokens");
    const char *type = json_string_value(json_object_get(model, "type"));
    if (gpt2) {
        /* SmolLM2's: byte-level BPE, no byte fallback (the "gpt2" GGUF vocabulary) */
        if (!type || strcmp(type, "BPE") != 0 || !json_is_object(jv) ||
            json_is_true(json_object_get(model, "byte_fallback")) || !has_byte_level(root)) {
            st = lv_fail(err, LV_ERR_UNSUPPORTED,
                         "%s: a SmolVLM text model needs a byte-level BPE tokenizer (a ByteLevel "
                         "pre-tokenizer, no byte_fallback) for its \"gpt2\" GGUF vocabulary",
                         path);
            goto done;
        }
        v->gpt2 = true;
    } else if (!type || strcmp(type, "BPE") != 0 || !json_is_object(jv) ||
               !json_is_true(json_object_get(model, "byte_fallback"))) {
        st = lv_fail(err, LV_ERR_UNSUPPORTED,
                     "%s: only a SentencePiece-style BPE tokenizer (byte_fallback) can be written "
                     "as a llama GGUF vocabulary",
                     path);
        goto done;
    }
    if (base) {
        int nb = base_size(jv);
        if (nb < 1 || nb > n_vocab) {
            st = lv_fail(err, LV_ERR_FORMAT, "%s: model.vocab has ids up to %d, the model %d", path,
                         nb - 1, n_vocab);
            goto done;
        }
        n_vocab = nb;
        v->base = true;
    }
    v->n = n_vocab;
    v->tokens = calloc((size_t)n_vocab, sizeof *v->tokens);
    v->scores = calloc((size_t)n_vocab, sizeof *v->scores);
    v->types = calloc((size_t)n_vocab, sizeof *v->types);
    size_t n_m = json_array_size(jm);
    v->merges = calloc(n_m ? n_m : 1, sizeof *v->merges);
    bool *scored = calloc((size_t)n_vocab, 1);
    if (!v->tokens || !v->scores || !v->types || !v->merges || !scored) {
        free(scored);
        st = lv_fail(err, LV_ERR_NOMEM, "out of memory");
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(jv, key, val) {
        json_int_t id = json_integer_value(val);
        if (!json_is_integer(val) || id < 0 || id >= n_vocab) {
            st = lv_fail(err, LV_ERR_FORMAT, "%s: token '%.40s' has id %lld outside 0..%d", path,
                         key, (long long)id, n_vocab - 1);
            break;
        }
        free(v->tokens[id]);
        v->tokens[id] = strdup(key);
        v->types[id] = !gpt2 && is_byte_piece(key) ? TT_BYTE : TT_NORMAL;
    }
    for (size_t i = 0; !st && i < json_array_size(added); i++) {
        json_t *a = json_array_get(added, i);
        json_int_t id = json_integer_value(json_object_get(a, "id"));
        const char *content = json_string_value(json_object_get(a, "content"));
        if (base && content && id >= n_vocab) continue;
        if (!content || id < 0 || id >= n_vocab) {
            st = lv_fail(err, LV_ERR_FORMAT, "%s: added_tokens[%zu] is outside the vocabulary (%d)",
                         path, i, n_vocab);
            break;
        }
        free(v->tokens[id]);
        v->tokens[id] = strdup(content);
        v->types[id] = json_is_true(json_object_get(a, "special")) ? TT_CONTROL : TT_USER;
    }
    const char *unk = json_string_value(json_object_get(model, "unk_token"));
    for (size_t i = 0; !st && i < n_m; i++) {
        const char *a, *b;
        size_t la, lb;
        char *t = merge_text(json_array_get(jm, i), &a, &la, &b, &lb);
        if (!t) {
            st = lv_fail(err, LV_ERR_FORMAT, "%s: model.merges[%zu] is malformed", path, i);
            break;
        }
        v->merges[v->n_merges++] = t;
        /* the merged piece's score: earlier merges rank higher */
        char *joined = malloc(la + lb + 1);
        if (!joined) {
            st = lv_fail(err, LV_ERR_NOMEM, "out of memory");
            break;
        }
        memcpy(joined, a, la);
        memcpy(joined + la, b, lb);
        joined[la + lb] = 0;
        json_t *idv = json_object_get(jv, joined);
        free(joined);
        json_int_t id = json_integer_value(idv);
        if (idv && id >= 0 && id < n_vocab && !scored[id]) {
            v->scores[id] = -(float)i;
            scored[id] = true;
        }
    }
    for (int id = 0; !st && id < n_vocab; id++) {
        if (!v->tokens[id]) {
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%d]", id);
            v->tokens[id] = strdup(pad);
            v->types[id] = TT_UNUSED;
            v->scores[id] = -10000.0f;
            continue;
        }
        if (unk && strcmp(v->tokens[id], unk) == 0) v->types[id] = TT_UNKNOWN;
        if (v->types[id] == TT_NORMAL && !scored[id]) v->scores[id] = -(float)(n_m + (size_t)id);
    }
    for (int id = 0; !st && id < n_vocab; id++)
        if (!v->tokens[id]) st = lv_fail(err, LV_ERR_NOMEM, "out of memory");
    free(scored);
done:
    json_decref(root);
    if (st) vocab_free(v);
    return st;
}

static int vocab_find(const vocab *v, const char *s) {
    if (!s) return -1;
    for (int i = 0; i < v->n; i++)
        if (strcmp(v->tokens[i], s) == 0) return i;
    return -1;
}

/* The tokenizer.ggml.* keys (and the chat templates of tc). */
static void put_vocab(gguf_writer *w, const vocab *voc, const lv_tokenizer_config *tc, int bos,
                      int eos, int pad) {
    /* byte-level: convert_hf_to_gguf.py's _set_vocab_gpt2 (tokens, token types,
     * merges; pre "smollm" is what get_vocab_base_pre names SmolLM2's) */
    gguf_w_str(w, "tokenizer.ggml.model", voc->gpt2 ? "gpt2" : "llama");
    gguf_w_str(w, "tokenizer.ggml.pre", voc->gpt2 ? "smollm" : "default");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)voc->tokens, (size_t)voc->n);
    if (!voc->gpt2) gguf_w_arr_f32(w, "tokenizer.ggml.scores", voc->scores, (size_t)voc->n);
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", voc->types, (size_t)voc->n);
    if (!voc->base)
        gguf_w_arr_str(w, "tokenizer.ggml.merges", (const char *const *)voc->merges, voc->n_merges);
    int unk = vocab_find(voc, tc->unk_token ? tc->unk_token : "<unk>");
    if (bos >= 0 && bos < voc->n) gguf_w_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    if (eos >= 0 && eos < voc->n) gguf_w_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
    if (unk >= 0) gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)unk);
    if (pad >= 0 && pad < voc->n) gguf_w_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)pad);
    gguf_w_bool(w, "tokenizer.ggml.add_bos_token", tc->add_bos_token);
    gguf_w_bool(w, "tokenizer.ggml.add_eos_token", tc->add_eos_token);
    /* tokenizer_config.json's template, else the processor's (chat_template.jinja /
     * .json), as convert_hf_to_gguf.py's SpecialVocab picks it: llama-mtmd-cli
     * refuses a text model without tokenizer.chat_template. */
    const char *tpl = tc->chat_template ? tc->chat_template
                      : voc->base       ? NULL
                                        : tc->processor_chat_template;
    if (tpl) gguf_w_str(w, "tokenizer.chat_template", tpl);
    if (tc->processor_chat_template && !voc->base)
        gguf_w_str(w, "llava.processor_chat_template", tc->processor_chat_template);
}

lv_status gguf_export_vocab(gguf_writer *w, const char *tokenizer_json, int n_vocab,
                            const lv_tokenizer_config *tc, lv_err *err) {
    char *text;
    size_t len;
    lv_status st = lv_read_file(tokenizer_json, 64u << 20, &text, &len, err);
    if (st) return st;
    vocab voc;
    st = load_vocab(tokenizer_json, text, len, n_vocab, false, false, &voc, err);
    free(text);
    if (st) return st;
    int bos = vocab_find(&voc, tc->bos_token ? tc->bos_token : "<s>");
    int eos = vocab_find(&voc, tc->eos_token ? tc->eos_token : "</s>");
    put_vocab(w, &voc, tc, bos, eos, -1);
    vocab_free(&voc);
    return LV_OK;
}

/* ---- metadata -------------------------------------------------------------- */

static uint32_t file_type_of(lv_dtype t, gguf_mix mix) {
    if (mix == GGUF_MIX_Q4_K_M) return 15; /* LLAMA_FTYPE_MOSTLY_Q4_K_M */
    switch (t) {
        case LV_DTYPE_Q8_0:
            return 7; /* LLAMA_FTYPE_MOSTLY_Q8_0 */
        case LV_DTYPE_Q4_0:
            return 2; /* MOSTLY_Q4_0 */
        case LV_DTYPE_Q4_K:
            return 14; /* MOSTLY_Q4_K_S, the nearest name (see the top of this file) */
        default:
            return 1; /* MOSTLY_F16 */
    }
}

/* The auxiliary files of a directory source: tokenizer + processor configs. */
typedef struct {
    lv_tokenizer_config tc;
    lv_preproc_config pp;
    lv_generation_config gc;
    bool has_gc; /* generation_config.json (SmolVLM: its eos) */
} aux_cfg;

/* What a SmolVLM mmproj needs of preprocessor_config.json, read here since
 * the LLaVA processor parser does not take Idefics3ImageProcessor: image_mean,
 * image_std (a number or 3; default 0.5, IMAGENET_STANDARD_*) and
 * size.longest_edge (default image_size, as convert_hf_to_gguf.py's
 * SmolVLMModel falls back). */
static lv_status idefics3_preproc(const char *json, size_t len, const char *name, int image_size,
                                  lv_preproc_config *pp, lv_err *err) {
    for (int i = 0; i < 3; i++) pp->image_mean[i] = pp->image_std[i] = 0.5;
    pp->kind = LV_IMGPROC_IDEFICS3;
    pp->longest_edge = pp->max_image_size = image_size;
    if (!json) return LV_OK;
    json_error_t je;
    json_t *root = json_loadb_whole(json, len, 0, &je);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return lv_fail(err, LV_ERR_FORMAT, "%s: not a JSON object (%s)", name, je.text);
    }
    lv_status st = LV_OK;
    const char *keys[2] = {"image_mean", "image_std"};
    double *dst[2] = {pp->image_mean, pp->image_std};
    for (int k = 0; k < 2 && !st; k++) {
        json_t *v = json_object_get(root, keys[k]);
        if (!v) continue;
        if (json_is_number(v)) {
            for (int i = 0; i < 3; i++) dst[k][i] = json_number_value(v);
        } else if (json_is_array(v) && json_array_size(v) == 3) {
            for (int i = 0; i < 3 && !st; i++) {
                json_t *x = json_array_get(v, (size_t)i);
                if (!json_is_number(x))
                    st =
                        lv_fail(err, LV_ERR_FORMAT, "%s: %s[%d] is not a number", name, keys[k], i);
                else
                    dst[k][i] = json_number_value(x);
            }
        } else {
            st = lv_fail(err, LV_ERR_FORMAT, "%s: %s must be a number or a list of 3", name,
                         keys[k]);
        }
    }
    for (int i = 0; i < 3 && !st; i++)
        if (!(pp->image_std[i] > 0))
            st = lv_fail(err, LV_ERR_FORMAT, "%s: image_std[%d] must be > 0", name, i);
    json_t *le = json_object_get(json_object_get(root, "size"), "longest_edge");
    if (!st && le) {
        if (!json_is_integer(le) || json_integer_value(le) < 1 ||
            json_integer_value(le) > (1 << 14))
            st = lv_fail(err, LV_ERR_FORMAT, "%s: size.longest_edge must be an integer 1..%d", name,
                         1 << 14);
        else
            pp->longest_edge = (int)json_integer_value(le);
    }
    json_decref(root);
    return st;
}

static lv_status load_aux(const qsource *src, aux_cfg *a, lv_err *err) {
    hf_tokcfg_defaults(&a->tc);
    hf_gencfg_defaults(&a->gc);
    hf_preproc_defaults(LV_IMGPROC_LLAVA_NEXT, &a->pp);
    const lv_model_config *c = qsource_config(src);
    bool smol = hf_is_idefics3(c);
    const char *dir = qsource_dir(src);
    lv_status st;
    char p[4096];
    if (!dir) {
        const qs_preset *ps = qsource_preset(src);
        const char *tpl = qsource_chat_template(src);
        if (tpl && !(a->tc.processor_chat_template = strdup(tpl)))
            return lv_fail(err, LV_ERR_NOMEM, "out of memory");
        const char *pj = qsource_preproc_json(src);
        if (smol) {
            const char *tj = ps ? ps->tokenizer_config_json : NULL;
            const char *gj = ps ? ps->generation_json : NULL;
            if (tj) {
                char *keep = a->tc.processor_chat_template;
                a->tc.processor_chat_template = NULL;
                hf_tokcfg_deinit(&a->tc);
                st = hf_tokcfg_parse(tj, strlen(tj), "preset tokenizer_config.json", &a->tc, err);
                if (st) {
                    free(keep);
                    return st;
                }
                a->tc.processor_chat_template = keep;
            }
            if (gj && (st = hf_gencfg_parse(gj, strlen(gj), "preset generation_config.json", &a->gc,
                                            err)))
                return st;
            a->has_gc = gj != NULL;
            return idefics3_preproc(pj, pj ? strlen(pj) : 0, "preset preprocessor_config.json",
                                    c->vision.image_size, &a->pp, err);
        }
        return pj ? hf_preproc_parse(pj, strlen(pj), "preset preprocessor_config.json",
                                     LV_IMGPROC_LLAVA_NEXT, &a->pp, err)
                  : LV_OK;
    }
    if ((st = lv_path_join(p, sizeof p, dir, "tokenizer_config.json", err))) return st;
    if (lv_is_file(p) && (st = hf_tokcfg_load(p, &a->tc, err))) return st;
    const char *tpl[2] = {"chat_template.json", "chat_template.jinja"};
    for (int i = 0; i < 2; i++) {
        if ((st = lv_path_join(p, sizeof p, dir, tpl[i], err))) return st;
        if (lv_is_file(p) && (st = hf_chat_template_load(p, &a->tc, err))) return st;
    }
    if ((st = lv_path_join(p, sizeof p, dir, "generation_config.json", err))) return st;
    if (lv_is_file(p)) {
        if ((st = hf_gencfg_load(p, &a->gc, err))) return st;
        a->has_gc = true;
    }
    if ((st = lv_path_join(p, sizeof p, dir, "preprocessor_config.json", err))) return st;
    if (smol) {
        char *text = NULL;
        size_t len = 0;
        if (lv_is_file(p) && (st = lv_read_file(p, 1u << 20, &text, &len, err))) return st;
        st = idefics3_preproc(text, len, p, c->vision.image_size, &a->pp, err);
        free(text);
        return st;
    }
    if (lv_is_file(p) && (st = hf_preproc_load(p, LV_IMGPROC_LLAVA_NEXT, &a->pp, err))) return st;
    return LV_OK;
}

static lv_status text_plan(const qsource *src, const vocab *voc, const aux_cfg *aux, lv_dtype type,
                           gguf_mix mix, gguf_writer *w, plan *p, lv_err *err) {
    const lv_model_config *c = qsource_config(src);
    const lv_text_config *t = &c->text;
    uint32_t mt = (uint32_t)(type == LV_DTYPE_F16 ? GGML_F16 : dtype_ggml_id(type));
    gguf_w_str(w, "general.architecture", "llama");
    gguf_w_str(w, "general.name", hf_is_idefics3(c) ? "SmolVLM text model" : "llava text model");
    gguf_w_u32(w, "general.file_type", file_type_of(type, mix));
    if (type != LV_DTYPE_F16) gguf_w_u32(w, "general.quantization_version", 2);
    gguf_w_u32(w, "llama.context_length", (uint32_t)t->max_pos);
    gguf_w_u32(w, "llama.embedding_length", (uint32_t)t->dim);
    gguf_w_u32(w, "llama.block_count", (uint32_t)t->n_layers);
    gguf_w_u32(w, "llama.feed_forward_length", (uint32_t)t->hidden_dim);
    gguf_w_u32(w, "llama.rope.dimension_count", (uint32_t)t->head_dim);
    gguf_w_u32(w, "llama.attention.head_count", (uint32_t)t->n_heads);
    gguf_w_u32(w, "llama.attention.head_count_kv", (uint32_t)t->n_kv_heads);
    if (t->head_dim * t->n_heads != t->dim) {
        gguf_w_u32(w, "llama.attention.key_length", (uint32_t)t->head_dim);
        gguf_w_u32(w, "llama.attention.value_length", (uint32_t)t->head_dim);
    }
    gguf_w_f32(w, "llama.attention.layer_norm_rms_epsilon", (float)t->rms_eps);
    gguf_w_f32(w, "llama.rope.freq_base", (float)t->rope_theta);
    gguf_w_u32(w, "llama.vocab_size", (uint32_t)voc->n);
    int bos = t->bos_id >= 0 ? t->bos_id : vocab_find(voc, aux->tc.bos_token);
    int eos = t->n_eos ? t->eos_ids[0] : vocab_find(voc, aux->tc.eos_token);
    int pad = c->pad_token_id >= 0 ? c->pad_token_id : t->pad_id;
    if (hf_is_idefics3(c)) {
        /* as convert_hf_to_gguf.py's SpecialVocab: tokenizer_config.json's token
         * strings first (SmolVLM: <|im_start|>, <end_of_utterance>), then the
         * ids of the configs; text_config's eos (2) is not the turn end, so
         * generation_config.json's comes before it */
        int tb = vocab_find(voc, aux->tc.bos_token), te = vocab_find(voc, aux->tc.eos_token);
        bos = tb >= 0 ? tb : aux->gc.has_bos_token_id ? aux->gc.bos_token_id : t->bos_id;
        eos = te >= 0                                   ? te
              : aux->has_gc && aux->gc.has_eos_token_id ? aux->gc.eos_token_ids[0]
              : t->n_eos                                ? t->eos_ids[0]
                                                        : -1;
        int tp = vocab_find(voc, aux->tc.pad_token);
        pad = tp >= 0 ? tp : aux->gc.has_pad_token_id ? aux->gc.pad_token_id : t->pad_id;
    }
    put_vocab(w, voc, &aux->tc, bos, eos, pad);

    /* tensors, in convert_hf_to_gguf.py's order (io/gguf_names.c) */
    plan_ctx x = {.p = p,
                  .src = src,
                  .matrix_type = mt,
                  .mix = mix,
                  .n_layers = t->n_layers,
                  .n_heads = t->n_heads,
                  .n_kv_heads = t->n_kv_heads,
                  .tied = t->tie_word_embeddings,
                  .n_vocab = voc->n};
    return gguf_names_each(GN_TEXT, t->n_layers, plan_name, &x, err);
}

/* The mmproj of a SmolVLM model as convert_hf_to_gguf.py's SmolVLMModel
 * writes it (ggml-org/llama.cpp conversion/smolvlm.py and MmprojModel in
 * conversion/base.py; spec smolvlm.md §11.1): projector "idefics3", every
 * block, v.post_ln, mm.model.fc; tensors of the embeddings (patch conv and
 * position table) forced to F32, other matrices F16, vectors F32. */
static lv_status mmproj_plan_idefics3(const qsource *src, const aux_cfg *aux, gguf_writer *w,
                                      plan *p, lv_err *err) {
    const lv_model_config *c = qsource_config(src);
    const lv_vision_config *v = &c->vision;
    gguf_w_str(w, "general.architecture", "clip");
    gguf_w_str(w, "general.type", "mmproj");
    gguf_w_str(w, "general.name", "SmolVLM mmproj");
    gguf_w_u32(w, "general.file_type", 1);
    gguf_w_bool(w, "clip.has_vision_encoder", true);
    gguf_w_u32(w, "clip.vision.projection_dim", (uint32_t)c->text.dim);
    gguf_w_u32(w, "clip.vision.image_size", (uint32_t)v->image_size);
    gguf_w_u32(w, "clip.vision.patch_size", (uint32_t)v->patch_size);
    gguf_w_u32(w, "clip.vision.embedding_length", (uint32_t)v->dim);
    gguf_w_u32(w, "clip.vision.feed_forward_length", (uint32_t)v->hidden_dim);
    gguf_w_u32(w, "clip.vision.block_count", (uint32_t)v->n_layers);
    gguf_w_u32(w, "clip.vision.attention.head_count", (uint32_t)v->n_heads);
    float mean[3], std[3];
    for (int i = 0; i < 3; i++)
        mean[i] = (float)aux->pp.image_mean[i], std[i] = (float)aux->pp.image_std[i];
    gguf_w_arr_f32(w, "clip.vision.image_mean", mean, 3);
    gguf_w_arr_f32(w, "clip.vision.image_std", std, 3);
    gguf_w_str(w, "clip.projector_type", "idefics3");
    gguf_w_f32(w, "clip.vision.attention.layer_norm_epsilon", (float)v->ln_eps);
    gguf_w_u32(w, "clip.vision.projector.scale_factor", (uint32_t)c->scale_factor);
    gguf_w_bool(w, "clip.use_gelu", true);
    gguf_w_u32(w, "clip.vision.preproc_image_size", (uint32_t)aux->pp.longest_edge);
    plan_ctx x = {.p = p, .src = src, .matrix_type = GGML_F16, .embd_f32 = true};
    return gguf_names_each_conv(GN_MMPROJ, GN_CONV_IDEFICS3, v->n_layers, plan_name, &x, err);
}

static lv_status mmproj_plan(const qsource *src, const aux_cfg *aux, bool legacy, gguf_writer *w,
                             plan *p, lv_err *err) {
    const lv_model_config *c = qsource_config(src);
    if (hf_is_idefics3(c)) return mmproj_plan_idefics3(src, aux, w, p, err);
    const lv_vision_config *v = &c->vision;
    if (c->n_feature_layers != 1)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "vision_feature_layer lists %d layers; one is supported",
                       c->n_feature_layers);
    if (strcmp(c->feature_select_strategy, "default") != 0)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "vision_feature_select_strategy \"%s\" (an mmproj drops CLS)",
                       c->feature_select_strategy);
    int k = c->feature_layers[0];
    int keep = k < 0 ? v->n_layers + 1 + k : k; /* hidden state index = blocks to run */
    if (keep < 0 || keep > v->n_layers)
        return lv_fail(err, LV_ERR_FORMAT, "vision_feature_layer %d outside the tower", k);
    bool next = strcmp(c->model_type, "llava_next") == 0;
    gguf_w_str(w, "general.architecture", "clip");
    gguf_w_str(w, "general.name", "llava mmproj");
    gguf_w_str(w, "general.description", "image encoder for LLaVA");
    gguf_w_u32(w, "general.file_type", 1);
    gguf_w_bool(w, "clip.has_text_encoder", false);
    gguf_w_bool(w, "clip.has_vision_encoder", true);
    gguf_w_bool(w, "clip.has_llava_projector", true);
    gguf_w_str(w, "clip.projector_type", "mlp");
    gguf_w_bool(w, "clip.use_gelu", strcmp(v->hidden_act, "gelu") == 0);
    gguf_w_u32(w, "clip.vision.image_size", (uint32_t)v->image_size);
    gguf_w_u32(w, "clip.vision.patch_size", (uint32_t)v->patch_size);
    gguf_w_u32(w, "clip.vision.embedding_length", (uint32_t)v->dim);
    gguf_w_u32(w, "clip.vision.feed_forward_length", (uint32_t)v->hidden_dim);
    gguf_w_u32(w, "clip.vision.projection_dim", (uint32_t)v->projection_dim);
    gguf_w_u32(w, "clip.vision.block_count", (uint32_t)keep);
    gguf_w_u32(w, "clip.vision.attention.head_count", (uint32_t)v->n_heads);
    gguf_w_f32(w, "clip.vision.attention.layer_norm_epsilon", (float)v->ln_eps);
    float mean[3], std[3];
    for (int i = 0; i < 3; i++)
        mean[i] = (float)aux->pp.image_mean[i], std[i] = (float)aux->pp.image_std[i];
    gguf_w_arr_f32(w, "clip.vision.image_mean", mean, 3);
    gguf_w_arr_f32(w, "clip.vision.image_std", std, 3);
    int32_t fl = keep;
    /* config_vit.json has no feature layer: the stored blocks are the ones to run */
    if (!legacy) gguf_w_arr_i32(w, "clip.vision.feature_layer", &fl, 1);
    if (next) {
        int n = c->n_pinpoints;
        const int(*pts)[2] = c->pinpoints;
        if (aux->pp.n_pinpoints) n = aux->pp.n_pinpoints, pts = aux->pp.pinpoints;
        int32_t flat[2 * HF_MAX_PINPOINTS];
        for (int i = 0; i < n; i++) flat[2 * i] = pts[i][0], flat[2 * i + 1] = pts[i][1];
        gguf_w_arr_i32(w, "clip.vision.image_grid_pinpoints", flat, (size_t)(2 * n));
        gguf_w_str(w, "clip.vision.mm_patch_merge_type", "spatial_unpad");
        gguf_w_str(w, "clip.vision.image_aspect_ratio", "anyres");
        if (legacy) {
            /* config_vit.json's (unused by clip.cpp and by us) */
            gguf_w_u32(w, "clip.vision.image_crop_resolution", 224);
            gguf_w_u32(w, "clip.vision.image_split_resolution", 224);
            gguf_w_str(w, "clip.vision.mm_projector_type", "mlp2x_gelu");
        }
    } else {
        gguf_w_str(w, "clip.vision.mm_patch_merge_type", "flat");
    }
    plan_ctx x = {.p = p, .src = src, .matrix_type = GGML_F16};
    return gguf_names_each(GN_MMPROJ, keep, plan_name, &x, err);
}

/* ---- writing ----------------------------------------------------------------- */

/* GGUF row h·D + 2i + t <- HF row h·D + t·half + i (convert_hf_to_gguf.py permute). */
static void permute_rows(const float *in, float *out, int64_t rows, int64_t cols, int heads) {
    int64_t d = rows / heads, half = d / 2;
    for (int64_t h = 0; h < heads; h++)
        for (int64_t t = 0; t < 2; t++)
            for (int64_t i = 0; i < half; i++)
                memcpy(out + (h * d + 2 * i + t) * cols, in + (h * d + t * half + i) * cols,
                       (size_t)cols * sizeof *out);
}

typedef struct {
    qs_progress_fn fn;
    void *ud;
    size_t done, total;
} progress_ctx;

static lv_status write_file(const qsource *src, const char *path, gguf_writer *w, const plan *p,
                            progress_ctx *pc, lv_err *err) {
    for (size_t i = 0; i < p->n; i++) {
        const item *it = &p->v[i];
        gguf_w_tensor(w, it->name, it->n_dims, it->ne, it->type);
    }
    lv_status st = gguf_w_begin(w, path, err);
    if (st) return st;
    for (size_t i = 0; i < p->n && !st; i++) {
        const item *it = &p->v[i];
        const qs_tensor *t = qsource_at(src, (size_t)it->src);
        /* it->ne may keep only the first rows of the source (a base vocabulary) */
        int64_t cols = it->ne[0], rows = 1;
        for (int d = 1; d < it->n_dims; d++) rows *= it->ne[d];
        size_t row_bytes = ggml_row_size(it->type, cols);
        float *x = malloc((size_t)t->n_elems * sizeof *x + 1);
        float *y = it->heads ? malloc((size_t)t->n_elems * sizeof *y + 1) : NULL;
        uint8_t *q = malloc(row_bytes * (size_t)rows + 1);
        if (!x || !q || (it->heads && !y)) {
            st = lv_fail(err, LV_ERR_NOMEM, "out of memory converting '%s'", t->name);
        } else if (!(st = qsource_read(src, (size_t)it->src, x, err))) {
            const float *rowsrc = x;
            if (it->heads) {
                int64_t prow = it->n_dims == 1 ? t->n_elems : rows,
                        pcol = it->n_dims == 1 ? 1 : cols;
                if (it->heads <= 0 || prow % it->heads || (prow / it->heads) % 2) {
                    st = lv_fail(err, LV_ERR_FORMAT, "'%s': %lld rows are not %d heads", t->name,
                                 (long long)prow, it->heads);
                } else {
                    permute_rows(x, y, prow, pcol, it->heads);
                    rowsrc = y;
                }
            }
            for (int64_t r = 0; r < rows && !st; r++)
                ggml_quantize_row(it->type, rowsrc + r * cols, cols, q + (size_t)r * row_bytes);
            if (!st) st = gguf_w_data(w, q, row_bytes * (size_t)rows, err);
        }
        free(x);
        free(y);
        free(q);
        pc->done++;
        if (!st && pc->fn) pc->fn(pc->ud, pc->done, pc->total, it->name);
    }
    if (!st) st = gguf_w_finish(w, err);
    return st;
}

lv_status gguf_export(const qsource *src, const char *out_dir, lv_dtype type,
                      qs_progress_fn progress, void *ud, lv_err *err) {
    return gguf_export_ex(src, out_dir, type, NULL, progress, ud, err);
}

lv_status gguf_export_ex(const qsource *src, const char *out_dir, lv_dtype type,
                         const gguf_export_opts *opts, qs_progress_fn progress, void *ud,
                         lv_err *err) {
    bool base = opts && opts->base_vocab;
    gguf_mix mix = opts ? opts->mix : GGUF_MIX_NONE;
    if (type != LV_DTYPE_F16 && type != LV_DTYPE_Q8_0 && type != LV_DTYPE_Q4_0 &&
        type != LV_DTYPE_Q4_K)
        return lv_fail(err, LV_ERR_ARG, "GGUF export type %s (F16, Q8_0, Q4_0 or Q4_K)",
                       dtype_name(type));
    if (mix == GGUF_MIX_Q4_K_M && type != LV_DTYPE_Q4_K)
        return lv_fail(err, LV_ERR_ARG, "the Q4_K_M mix goes with type Q4_K, got %s",
                       dtype_name(type));
    const char *tj = qsource_tokenizer_json(src);
    if (!tj)
        return lv_fail(err, LV_ERR_ARG,
                       "the source has no tokenizer.json: a GGUF text model needs its vocabulary");
    const lv_model_config *c = qsource_config(src);
    if (base && hf_is_idefics3(c))
        return lv_fail(err, LV_ERR_ARG,
                       "a base vocabulary (liuhaotian-style LLaVA GGUF) does not go with SmolVLM");
    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST)
        return lv_fail(err, LV_ERR_IO, "%s: cannot create: %s", out_dir, strerror(errno));
    char text_path[4096], mm_path[4096];
    lv_status st;
    if ((st = lv_path_join(text_path, sizeof text_path, out_dir, "text.gguf", err)) ||
        (st = lv_path_join(mm_path, sizeof mm_path, out_dir, "mmproj.gguf", err)))
        return st;
    vocab voc = {0};
    aux_cfg aux;
    memset(&aux, 0, sizeof aux);
    plan pt = {0}, pm = {0};
    char *tok_text = NULL;
    size_t tok_len = 0;
    gguf_writer *wt = gguf_writer_new(), *wm = gguf_writer_new();
    bool text_done = false;
    if (!wt || !wm) {
        st = lv_fail(err, LV_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = load_aux(src, &aux, err)) ||
        (st = qsource_tokenizer_read(src, &tok_text, &tok_len, err)) ||
        (st = load_vocab(tj, tok_text, tok_len, c->text.vocab_size, base, hf_is_idefics3(c), &voc,
                         err)) ||
        (st = text_plan(src, &voc, &aux, type, mix, wt, &pt, err)) ||
        (st = mmproj_plan(src, &aux, base, wm, &pm, err)))
        goto done;
    progress_ctx pc = {progress, ud, 0, pt.n + pm.n};
    if ((st = write_file(src, text_path, wt, &pt, &pc, err))) goto done;
    text_done = true;
    st = write_file(src, mm_path, wm, &pm, &pc, err);
done:
    if (st && text_done) unlink(text_path);
    gguf_writer_free(wt);
    gguf_writer_free(wm);
    free(pt.v);
    free(pm.v);
    vocab_free(&voc);
    free(tok_text);
    hf_tokcfg_deinit(&aux.tc);
    return st;
}
