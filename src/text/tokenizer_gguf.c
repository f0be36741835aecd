/*
 * tokenizer_gguf.c - tok from a GGUF vocabulary (see tokenizer_gguf.h).
 *
 * The vocabulary is rewritten as the tokenizer.json transformers makes for a
 * SentencePiece Llama/Mistral tokenizer (LlamaConverter: BPE with
 * byte_fallback and fuse_unk; normalizer Prepend "▁" + Replace " " → "▁";
 * decoder Replace "▁" → " ", ByteFallback, Fuse, Strip one leading space)
 * and loaded by tok_load_mem, so both paths share one BPE and one set of
 * rules. BOS/EOS are then set from the GGUF ids.
 *
 *   tokenizer.ggml.tokens      ARRAY STRING   piece per id          → model.vocab
 *   tokenizer.ggml.scores      ARRAY FLOAT32  merge priority        → merges (if none given)
 *   tokenizer.ggml.token_type  ARRAY INT32    2 unk, 3 control, 4 user-defined → added_tokens
 *   tokenizer.ggml.merges      ARRAY STRING   "left right"          → model.merges
 *
 * A "gpt2" vocabulary is rewritten as the byte-level tokenizer.json of the
 * Hugging Face checkpoint it came from (gpt2_pipeline): tokens of type 3
 * (CONTROL) become special added tokens and type 4 (USER_DEFINED) plain
 * added tokens, both matched before pre-tokenization, as tokenizers does
 * for the added tokens convert_hf_to_gguf.py turned into them
 * (ggml-org/llama.cpp conversion/base.py get_vocab_base: special ->
 * CONTROL, else USER_DEFINED). llama.cpp itself matches CONTROL tokens only
 * with parse_special (src/llama-vocab.cpp tokenizer_st_partition);
 * tok_encode has no such switch and always matches them, as tokenizers does.
 *
 * For a LLaVA model (tok_load_gguf_llava_file), a vocabulary without
 * "<image>" (GGUFs converted from the original liuhaotian checkpoints: 32000
 * SentencePiece pieces, llama.cpp splices the image in by position) gets it
 * as the special token number n_tokens, one past the last piece (in
 * model.vocab too, so that its id is fixed whatever pieces were skipped):
 * the virtual image id of gguf_model.c, which the model replaces by image
 * rows and never looks up in embed_tokens.
 */
#include "text/tokenizer_gguf.h"

#include "io/gguf_model.h"
#include "io/json_type.h"
#include "text/tokenizer_internal.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

typedef struct {
    float score;
    int32_t piece, left, right;
} merge_cand;

static int cand_cmp(const void *a, const void *b) {
    const merge_cand *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->piece != y->piece) return x->piece < y->piece ? -1 : 1;
    if (x->left != y->left) return x->left < y->left ? -1 : 1;
    return x->right < y->right ? -1 : x->right > y->right;
}

static size_t u8len(uint8_t c) {
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* Merges from the scores (SentencePieceExtractor.extract). */
static lv_status derive_merges(const gguf *g, const gguf_kv *tokens, json_t *vocab, json_t *merges,
                               lv_err *err) {
    const gguf_kv *scores;
    lv_status st = gguf_get_arr(g, "tokenizer.ggml.scores", &scores, NULL, err);
    if (st) return st;
    if (!gguf_arr_is_float(scores) || scores->n != tokens->n)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: tokenizer.ggml.scores must be %llu floats (one per token)",
                       gguf_path(g), (unsigned long long)tokens->n);
    merge_cand *c = NULL;
    size_t n = 0, cap = 0;
    for (uint64_t id = 0; id < tokens->n; id++) {
        size_t len;
        const char *s = gguf_arr_str(tokens, id, &len);
        if (len < 2) continue;
        for (size_t k = u8len((uint8_t)s[0]); k < len; k += u8len((uint8_t)s[k])) {
            json_t *l = json_object_getn(vocab, s, k), *r = json_object_getn(vocab, s + k, len - k);
            if (!l || !r) continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 4096;
                merge_cand *nc = realloc(c, cap * sizeof *nc);
                if (!nc) {
                    free(c);
                    return lv_fail(err, LV_ERR_NOMEM, "out of memory deriving merges");
                }
                c = nc;
            }
            c[n++] = (merge_cand){(float)gguf_arr_float(scores, id), (int32_t)id,
                                  (int32_t)json_integer_value(l), (int32_t)json_integer_value(r)};
        }
    }
    if (n) qsort(c, n, sizeof *c, cand_cmp);
    for (size_t i = 0; i < n; i++) {
        size_t la, lb;
        const char *a = gguf_arr_str(tokens, (uint64_t)c[i].left, &la);
        const char *b = gguf_arr_str(tokens, (uint64_t)c[i].right, &lb);
        json_t *pair = json_pack("[s%s%]", a, la, b, lb);
        if (!pair || json_array_append_new(merges, pair)) {
            free(c);
            return lv_fail(err, LV_ERR_NOMEM, "out of memory deriving merges");
        }
    }
    free(c);
    return LV_OK;
}

/* Merges as the file lists them ("left right", split at the first space
 * after the first byte, as llama.cpp does). */
static lv_status copy_merges(const gguf *g, const gguf_kv *kv, json_t *merges, lv_err *err) {
    if (kv->arr_type != GGUF_STRING)
        return lv_fail(err, LV_ERR_FORMAT, "%s: tokenizer.ggml.merges must be strings",
                       gguf_path(g));
    for (uint64_t i = 0; i < kv->n; i++) {
        size_t len;
        const char *s = gguf_arr_str(kv, i, &len);
        const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
        if (!sp)
            return lv_fail(err, LV_ERR_FORMAT, "%s: tokenizer.ggml.merges[%llu] has no space",
                           gguf_path(g), (unsigned long long)i);
        size_t la = (size_t)(sp - s);
        json_t *pair = json_pack("[s%s%]", s, la, sp + 1, len - la - 1);
        if (!pair || json_array_append_new(merges, pair))
            return lv_fail(err, LV_ERR_FORMAT, "%s: tokenizer.ggml.merges[%llu] is not UTF-8",
                           gguf_path(g), (unsigned long long)i);
    }
    return LV_OK;
}

static json_t *str_pattern(const char *s) {
    return json_pack("{s:s}", "String", s);
}

/* normalizer, decoder, as LlamaConverter writes them (legacy, add_prefix_space). */
static json_t *pipeline_json(bool prefix, json_t **decoder) {
    json_t *norms = json_array();
    if (prefix)
        json_array_append_new(norms,
                              json_pack("{s:s,s:s}", "type", "Prepend", "prepend", "\xe2\x96\x81"));
    json_array_append_new(norms, json_pack("{s:s,s:o,s:s}", "type", "Replace", "pattern",
                                           str_pattern(" "), "content", "\xe2\x96\x81"));
    json_t *decs = json_array();
    json_array_append_new(decs, json_pack("{s:s,s:o,s:s}", "type", "Replace", "pattern",
                                          str_pattern("\xe2\x96\x81"), "content", " "));
    json_array_append_new(decs, json_pack("{s:s}", "type", "ByteFallback"));
    json_array_append_new(decs, json_pack("{s:s}", "type", "Fuse"));
    if (prefix)
        json_array_append_new(decs, json_pack("{s:s,s:s,s:i,s:i}", "type", "Strip", "content", " ",
                                              "start", 1, "stop", 0));
    *decoder = json_pack("{s:s,s:o}", "type", "Sequence", "decoders", decs);
    return json_pack("{s:s,s:o}", "type", "Sequence", "normalizers", norms);
}

/* The byte-level pipeline of a "gpt2" vocabulary, by tokenizer.ggml.pre:
 * pre_tokenizer and decoder as the Hugging Face tokenizer.json of the
 * checkpoints llama.cpp gives that name. llama.cpp's regexes for them
 * (ggml-org/llama.cpp src/llama-vocab.cpp, LLAMA_VOCAB_PRE_TYPE_SMOLLM and
 * _GPT2): "smollm" isolates every \p{N} character and then applies the
 * GPT-2 regex, which is HF's Digits(individual_digits) + ByteLevel of
 * SmolLM2; "gpt-2" (or "gpt2") is the GPT-2 regex alone. llama.cpp's
 * "default" (also used when the key is missing) is a different chain
 * (punctuation runs, \p{N}+, 3-digit groups) and is refused, like every
 * other name. */
static lv_status gpt2_pipeline(const gguf *g, json_t **pre, json_t **dec, lv_err *err) {
    const char *name = NULL;
    size_t n = 0;
    bool found = false;
    lv_status st = gguf_get_str(g, "tokenizer.ggml.pre", &name, &n, &found, err);
    if (st) return st;
    bool smollm = found && n == 6 && memcmp(name, "smollm", 6) == 0;
    bool gpt2 = found && ((n == 5 && memcmp(name, "gpt-2", 5) == 0) ||
                          (n == 4 && memcmp(name, "gpt2", 4) == 0));
    if (!smollm && !gpt2)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "%s: tokenizer.ggml.pre \"%.*s\" is not supported for a \"gpt2\" "
                       "vocabulary (supported: \"smollm\", \"gpt-2\")",
                       gguf_path(g), found ? (int)(n > 40 ? 40 : n) : 9,
                       found ? name : "(missing)");
    json_t *bl = json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                           "trim_offsets", 1, "use_regex", 1);
    *dec = json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space", 1,
                     "trim_offsets", 1, "use_regex", 1);
    if (smollm && bl)
        bl = json_pack("{s:s,s:[{s:s,s:b},o]}", "type", "Sequence", "pretokenizers", "type",
                       "Digits", "individual_digits", 1, bl);
    *pre = bl;
    if (!*pre || !*dec) {
        json_decref(*pre), json_decref(*dec);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    }
    return LV_OK;
}

static lv_status build_json(const gguf *g, bool image_token, bool *byte_level, json_t **out,
                            lv_err *err) {
    const char *path = gguf_path(g), *model;
    size_t model_n;
    lv_status st;
    if ((st = gguf_get_str(g, "tokenizer.ggml.model", &model, &model_n, NULL, err))) return st;
    bool gpt2 = model_n == 4 && memcmp(model, "gpt2", 4) == 0;
    *byte_level = gpt2;
    if (!gpt2 && (model_n != 5 || memcmp(model, "llama", 5) != 0))
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "%s: tokenizer.ggml.model \"%.*s\" (only \"llama\", SentencePiece, and "
                       "\"gpt2\", byte-level BPE, are supported)",
                       path, (int)(model_n > 40 ? 40 : model_n), model);
    const gguf_kv *tokens, *types, *mkv;
    bool found;
    if ((st = gguf_get_arr(g, "tokenizer.ggml.tokens", &tokens, NULL, err)) ||
        (st = gguf_get_arr(g, "tokenizer.ggml.token_type", &types, &found, err)) ||
        (st = gguf_get_arr(g, "tokenizer.ggml.merges", &mkv, &found, err)))
        return st;
    if (tokens->arr_type != GGUF_STRING || tokens->n == 0 || tokens->n > (1u << 24))
        return lv_fail(err, LV_ERR_FORMAT, "%s: tokenizer.ggml.tokens must be 1..%u strings", path,
                       1u << 24);
    if (types && (!gguf_arr_is_int(types) || types->n != tokens->n))
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: tokenizer.ggml.token_type must be %llu integers (one per token)", path,
                       (unsigned long long)tokens->n);
    int64_t unk = -1;
    bool prefix = true;
    if ((st = gguf_get_int(g, "tokenizer.ggml.unknown_token_id", &unk, &found, err)) ||
        (st = gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &prefix, &found, err)))
        return st;
    if (!found) prefix = true;
    if (unk >= (int64_t)tokens->n || gpt2) unk = -1; /* HF byte-level files have no unk_token */
    if (gpt2 && !mkv)
        return lv_fail(err, LV_ERR_FORMAT, "%s: a \"gpt2\" vocabulary needs tokenizer.ggml.merges",
                       path);
    json_t *pre = json_null(), *dec = NULL, *norm = NULL;
    if (gpt2 && (st = gpt2_pipeline(g, &pre, &dec, err))) return st;

    json_t *root = json_object(), *vocab = json_object(), *added = json_array(),
           *merges = json_array();
    if (!root || !vocab || !added || !merges) {
        json_decref(root), json_decref(vocab), json_decref(added), json_decref(merges);
        json_decref(pre), json_decref(dec);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    }
    st = LV_OK;
    for (uint64_t id = 0; id < tokens->n && !st; id++) {
        size_t len;
        const char *s = gguf_arr_str(tokens, id, &len);
        int64_t type = types ? gguf_arr_int(types, id) : TT_NORMAL;
        /* an empty piece, or a repeated one, can never be produced: its id stays unused */
        if (len == 0 || memchr(s, 0, len) || json_object_getn(vocab, s, len)) continue;
        if (json_object_setn_new(vocab, s, len, json_integer((json_int_t)id)))
            st = lv_fail(err, LV_ERR_FORMAT, "%s: tokenizer.ggml.tokens[%llu] is not UTF-8", path,
                         (unsigned long long)id);
        if (!st && (type == TT_UNKNOWN || type == TT_CONTROL || type == TT_USER))
            json_array_append_new(added, json_pack("{s:I,s:s%,s:b,s:b,s:b,s:b,s:b}", "id",
                                                   (json_int_t)id, "content", s, len, "single_word",
                                                   0, "lstrip", 0, "rstrip", 0, "normalized", 0,
                                                   "special", type != TT_USER));
    }
    if (!st)
        st = mkv ? copy_merges(g, mkv, merges, err) : derive_merges(g, tokens, vocab, merges, err);
    /* no "<image>" (a vocabulary converted from the original liuhaotian
     * checkpoint): the virtual image id, one past the last piece */
    if (!st && image_token && !json_object_get(vocab, GGUF_IMAGE_TOKEN) &&
        (json_object_set_new(vocab, GGUF_IMAGE_TOKEN, json_integer((json_int_t)tokens->n)) ||
         json_array_append_new(added, json_pack("{s:I,s:s,s:b,s:b,s:b,s:b,s:b}", "id",
                                                (json_int_t)tokens->n, "content", GGUF_IMAGE_TOKEN,
                                                "single_word", 0, "lstrip", 0, "rstrip", 0,
                                                "normalized", 0, "special", 1))))
        st = lv_fail(err, LV_ERR_NOMEM, "out of memory");
    if (st) {
        json_decref(root), json_decref(vocab), json_decref(added), json_decref(merges);
        json_decref(pre), json_decref(dec);
        return st;
    }
    json_t *unk_tok = json_null();
    if (unk >= 0) {
        size_t len;
        const char *s = gguf_arr_str(tokens, (uint64_t)unk, &len);
        unk_tok = json_stringn(s, len);
    }
    json_t *m = json_pack("{s:s,s:n,s:o,s:n,s:n,s:b,s:b,s:b,s:o,s:o}", "type", "BPE", "dropout",
                          "unk_token", unk_tok, "continuing_subword_prefix", "end_of_word_suffix",
                          "fuse_unk", !gpt2, "byte_fallback", !gpt2, "ignore_merges", 0, "vocab",
                          vocab, "merges", merges);
    if (!gpt2)
        norm = pipeline_json(prefix, &dec);
    else
        norm = json_null();
    json_object_set_new(root, "version", json_string("1.0"));
    json_object_set_new(root, "added_tokens", added);
    json_object_set_new(root, "normalizer", norm ? norm : json_null());
    json_object_set_new(root, "pre_tokenizer", pre);
    json_object_set_new(root, "post_processor", json_null());
    json_object_set_new(root, "decoder", dec ? dec : json_null());
    if (!m || !norm || !dec || json_object_set_new(root, "model", m)) {
        json_decref(root);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    }
    *out = root;
    return LV_OK;
}

static lv_status load(const gguf *g, bool image_token, tok **out, lv_err *err) {
    *out = NULL;
    json_t *root = NULL;
    bool byte_level = false;
    lv_status st = build_json(g, image_token, &byte_level, &root, err);
    if (st) return st;
    char *text = json_dumps_whole(root, JSON_COMPACT);
    json_decref(root);
    if (!text) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    tok *t = NULL;
    st = tok_load_mem(text, strlen(text), &t, err);
    free(text);
    if (st) {
        lv_err_prefix(err, "%s", gguf_path(g));
        return st;
    }
    int64_t bos = -1, eos = -1;
    bool add_bos = true, add_eos = false, found;
    if ((st = gguf_get_int(g, "tokenizer.ggml.bos_token_id", &bos, &found, err)) ||
        (st = gguf_get_int(g, "tokenizer.ggml.eos_token_id", &eos, &found, err)) ||
        (st = gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos, &found, err)) ||
        (st = gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &add_eos, &found, err))) {
        tok_free(t);
        return st;
    }
    if (!found) add_eos = false;
    if (byte_level) { /* llama.cpp's defaults for a BPE vocabulary: no BOS unless asked */
        bool f = false;
        if ((st = gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos, &f, err))) {
            tok_free(t);
            return st;
        }
        if (!f) add_bos = false;
    }
    t->bos_id = bos >= 0 && bos < t->n_ids ? (int32_t)bos : -1;
    t->eos_id = eos >= 0 && eos < t->n_ids ? (int32_t)eos : -1;
    tok_set_add_special(t, add_bos, add_eos);
    *out = t;
    return LV_OK;
}

lv_status tok_load_gguf(const gguf *g, tok **out, lv_err *err) {
    return load(g, false, out, err);
}

static lv_status load_file(const char *path, bool image_token, tok **out, lv_err *err) {
    gguf *g;
    *out = NULL;
    lv_status st = gguf_open(path, &g, err);
    if (st) return st;
    st = load(g, image_token, out, err);
    gguf_close(g);
    return st;
}

lv_status tok_load_gguf_file(const char *path, tok **out, lv_err *err) {
    return load_file(path, false, out, err);
}

lv_status tok_load_gguf_llava_file(const char *path, tok **out, lv_err *err) {
    return load_file(path, true, out, err);
}
