/*
 * tokenizer_load.c - reading a Hugging Face tokenizer.json into a tok.
 *
 * FORMAT (what tokenizers' serde writes; only the parts we accept):
 *
 *   {
 *     "truncation": null, "padding": null,      anything else is refused
 *     "added_tokens": [{"id": 1, "content": "<s>", "single_word": false,
 *                       "lstrip": false, "rstrip": false,
 *                       "normalized": false, "special": true}, ...],
 *     "normalizer":  null | Sequence{"normalizers": [...]}
 *                    | Prepend{"prepend": "▁"}
 *                    | Replace{"pattern": {"String": " "}, "content": "▁"},
 *     "pre_tokenizer": null | Sequence{"pretokenizers": [...]}
 *                    | Metaspace{"replacement": "▁", "prepend_scheme":
 *                      "always"|"first"|"never", "split": true}
 *                      (older files: "add_prefix_space": bool)
 *                    | Digits{"individual_digits": bool}
 *                    | ByteLevel{"add_prefix_space": bool, "trim_offsets": bool,
 *                      "use_regex": bool}   (byte-level family, GPT-2 / SmolLM2:
 *                      Digits then ByteLevel, ByteLevel last, no Metaspace),
 *     "post_processor": null | ByteLevel{...} (adds nothing) | Sequence{"processors"}
 *                    | TemplateProcessing{
 *                      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
 *                                 {"Sequence": {"id": "A", "type_id": 0}}],
 *                      "special_tokens": {"<s>": {"id": "<s>", "ids": [1], ...}}},
 *     "decoder":     null | Sequence{"decoders": [...]} | Replace | ByteFallback
 *                    | Fuse | Strip{"content": " ", "start": 1, "stop": 0}
 *                    | Metaspace{...} | ByteLevel{...} (fuses, like Fuse),
 *     "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
 *               "continuing_subword_prefix": null, "end_of_word_suffix": null,
 *               "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
 *               "vocab": {"<unk>": 0, "<s>": 1, ..., "▁t": 261, ...},
 *               "merges": ["▁ t", "i n", ...]     (or [["▁", "t"], ...] in newer files)}
 *   }
 *
 * Every object is tagged by "type"; "Sequence" nests. Types outside this list
 * are refused with LV_ERR_UNSUPPORTED naming them, never approximated.
 *
 * Ids of added tokens. HF does not trust the "id" written next to an added
 * token: it re-adds the tokens in file order, giving each the vocabulary id
 * of its content if the model has it, else the next free id (the model's
 * size, or one past the largest added id once that is at least the model
 * size), and only warns when that differs from the file. We assign ids the
 * same way, so a hand-edited file encodes as HF would encode it.
 *
 * Merges. Rank r is the r-th entry ("#version" lines skipped, as HF does).
 * A pair listed twice keeps its later rank (HF collects into a HashMap). A
 * merge naming a token, or producing a token, that is not in the vocabulary
 * is an error, as in HF.
 */
#include "base/file.h"
#include "base/log.h"
#include "io/json_type.h"
#include "text/tokenizer_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_FILE_MAX   (512u << 20) /* refuse a tokenizer.json over 512 MB */
#define TOK_ID_LIMIT   (1 << 24)    /* ids must be below this */
#define TOK_JSON_DEPTH 8            /* nesting of Sequence inside Sequence */

static lv_status nomem(lv_err *err) {
    return lv_fail(err, LV_ERR_NOMEM, "out of memory while loading the tokenizer");
}

/* ===== JSON field helpers =====
 * Absent and null are the same (serde's Option). A field of the wrong JSON
 * type is a format error naming where it is. */

static lv_status get_bool(json_t *obj, const char *key, bool def, bool *out, const char *where,
                          lv_err *err) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return LV_OK;
    }
    if (!json_is_boolean(v))
        return lv_fail(err, LV_ERR_FORMAT, "%s.%s: expected true or false", where, key);
    *out = json_is_true(v);
    return LV_OK;
}

/* *out is NULL when the field is absent or null. */
static lv_status get_str(json_t *obj, const char *key, const char **out, size_t *len,
                         const char *where, lv_err *err) {
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (len) *len = 0;
    if (!v || json_is_null(v)) return LV_OK;
    if (!json_is_string(v))
        return lv_fail(err, LV_ERR_FORMAT, "%s.%s: expected a string", where, key);
    *out = json_string_value(v);
    if (len) *len = json_string_length(v);
    return LV_OK;
}

static lv_status get_type(json_t *obj, const char **type, const char *where, lv_err *err) {
    if (!json_is_object(obj))
        return lv_fail(err, LV_ERR_FORMAT, "%s: expected an object or null", where);
    lv_status st = get_str(obj, "type", type, NULL, where, err);
    if (st == LV_OK && !*type) st = lv_fail(err, LV_ERR_FORMAT, "%s: no \"type\"", where);
    return st;
}

/* A Rust `char` field: a string of exactly one character. */
static lv_status get_char(json_t *obj, const char *key, char out[5], size_t *out_len,
                          const char *where, lv_err *err) {
    const char *s;
    size_t n;
    lv_status st = get_str(obj, key, &s, &n, where, err);
    if (st != LV_OK) return st;
    if (!s || n == 0 || utf8_len((uint8_t)s[0]) != n)
        return lv_fail(err, LV_ERR_FORMAT, "%s.%s: expected a single character", where, key);
    memcpy(out, s, n);
    out[n] = '\0';
    *out_len = n;
    return LV_OK;
}

static lv_status get_uint(json_t *obj, const char *key, uint32_t *out, const char *where,
                          lv_err *err) {
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
        return lv_fail(err, LV_ERR_FORMAT, "%s.%s: expected a non-negative integer", where, key);
    *out = (uint32_t)json_integer_value(v);
    return LV_OK;
}

/* Metaspace's prepend_scheme, with the older add_prefix_space (false means
 * never; it may not contradict an explicit scheme). */
static lv_status get_scheme(json_t *obj, prepend_scheme *out, const char *where, lv_err *err) {
    const char *s;
    lv_status st = get_str(obj, "prepend_scheme", &s, NULL, where, err);
    if (st != LV_OK) return st;
    *out = PREPEND_ALWAYS;
    if (s && strcmp(s, "first") == 0)
        *out = PREPEND_FIRST;
    else if (s && strcmp(s, "never") == 0)
        *out = PREPEND_NEVER;
    else if (s && strcmp(s, "always") != 0)
        return lv_fail(err, LV_ERR_FORMAT, "%s.prepend_scheme: unknown value '%s'", where, s);
    json_t *aps = json_object_get(obj, "add_prefix_space");
    if (json_is_false(aps)) {
        if (s && *out != PREPEND_NEVER)
            return lv_fail(err, LV_ERR_FORMAT,
                           "%s: add_prefix_space false contradicts prepend_scheme '%s'", where, s);
        *out = PREPEND_NEVER;
    }
    return LV_OK;
}

/* ===== Model options ===== */

static lv_status load_model_options(tok *t, json_t *model, lv_err *err) {
    const char *type, *s;
    lv_status st = get_str(model, "type", &type, NULL, "model", err);
    if (st != LV_OK) return st;
    if (type && strcmp(type, "BPE") != 0)
        return lv_fail(err, LV_ERR_UNSUPPORTED, "model type '%s' is not supported (only BPE)",
                       type);
    json_t *d = json_object_get(model, "dropout");
    if (d && !json_is_null(d) && (!json_is_number(d) || json_number_value(d) != 0.0))
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "model.dropout is set: BPE dropout makes encoding random");
    const char *affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t i = 0; i < LV_ARRAY_LEN(affixes); i++) {
        if ((st = get_str(model, affixes[i], &s, NULL, "model", err)) != LV_OK) return st;
        if (s && *s)
            return lv_fail(err, LV_ERR_UNSUPPORTED, "model.%s '%s' is not supported", affixes[i],
                           s);
    }
    if ((st = get_str(model, "unk_token", &s, NULL, "model", err)) != LV_OK) return st;
    if (s && !(t->unk_name = strdup(s))) return nomem(err);
    if ((st = get_bool(model, "fuse_unk", false, &t->fuse_unk, "model", err)) != LV_OK) return st;
    if ((st = get_bool(model, "byte_fallback", false, &t->byte_fallback, "model", err)) != LV_OK)
        return st;
    return get_bool(model, "ignore_merges", false, &t->ignore_merges, "model", err);
}

/* ===== Vocabulary and added tokens ===== */

static lv_status check_added_entry(json_t *a, size_t i, lv_err *err) {
    json_t *c = json_object_get(a, "content"), *id = json_object_get(a, "id");
    if (!json_is_object(a) || !json_is_string(c) || !json_is_integer(id) ||
        json_integer_value(id) < 0 || json_integer_value(id) >= TOK_ID_LIMIT)
        return lv_fail(err, LV_ERR_FORMAT,
                       "added_tokens[%zu]: expected {\"id\": 0..%d, \"content\": string, ...}", i,
                       TOK_ID_LIMIT - 1);
    return LV_OK;
}

/* Pass 1: validate ids, size the arrays. */
static lv_status size_ids(json_t *vocab, json_t *added, size_t *n_vocab, size_t *cap_ids,
                          size_t *pool_bytes, lv_err *err) {
    const char *key;
    json_t *val;
    int64_t max_id = -1;
    size_t n = 0, bytes = 0;
    json_object_foreach(vocab, key, val) {
        json_int_t id = json_is_integer(val) ? json_integer_value(val) : -1;
        if (id < 0 || id >= TOK_ID_LIMIT)
            return lv_fail(err, LV_ERR_FORMAT,
                           "model.vocab[\"%.60s\"]: the id must be an integer in 0..%d", key,
                           TOK_ID_LIMIT - 1);
        if (id > max_id) max_id = id;
        n++;
        bytes += strlen(key) + 1;
    }
    if ((size_t)(max_id + 1) > 2 * n + 1024)
        return lv_fail(err, LV_ERR_FORMAT, "model.vocab: %zu tokens but ids up to %lld", n,
                       (long long)max_id);
    size_t n_added = json_array_size(added);
    for (size_t i = 0; i < n_added; i++) {
        json_t *a = json_array_get(added, i);
        lv_status st = check_added_entry(a, i, err);
        if (st != LV_OK) return st;
        bytes += json_string_length(json_object_get(a, "content")) + 1;
    }
    *n_vocab = n;
    *cap_ids = ((size_t)(max_id + 1) > n ? (size_t)(max_id + 1) : n) + n_added + 1;
    *pool_bytes = bytes + 1;
    return LV_OK;
}

static void set_str(tok *t, int32_t id, const char *s, size_t len, size_t *pool_used) {
    memcpy(t->pool + *pool_used, s, len);
    t->pool[*pool_used + len] = '\0';
    t->str_off[id] = (uint32_t)*pool_used;
    t->str_len[id] = (uint32_t)len;
    *pool_used += len + 1;
}

static lv_status fill_vocab(tok *t, json_t *vocab, size_t *pool_used, lv_err *err) {
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        int32_t id = (int32_t)json_integer_value(val);
        if (t->str_off[id] != UINT32_MAX)
            return lv_fail(err, LV_ERR_FORMAT,
                           "model.vocab: id %d is given to both '%.60s' and '%.60s'", id,
                           t->pool + t->str_off[id], key);
        set_str(t, id, key, strlen(key), pool_used);
        t->flags[id] = TOKF_MODEL;
        if (id >= t->n_ids) t->n_ids = id + 1;
    }
    if (str_map_init(&t->vocab, t->n_model) != LV_OK) return nomem(err);
    for (int32_t id = 0; id < t->n_ids; id++)
        if (t->flags[id] & TOKF_MODEL)
            str_map_put(t, &t->vocab, id); /* keys are unique JSON keys */
    return LV_OK;
}

/* The id HF gives a new added token (AddedVocabulary::add_tokens). */
static int32_t next_added_id(const tok *t, int64_t max_added) {
    if (max_added < 0) return t->n_model;
    return (max_added >= t->n_model || t->n_model == 0) ? (int32_t)max_added + 1 : t->n_model;
}

static lv_status read_added_flags(json_t *a, added_tok *tk, size_t i, lv_err *err) {
    char where[48];
    snprintf(where, sizeof where, "added_tokens[%zu]", i);
    lv_status st;
    if ((st = get_bool(a, "special", false, &tk->special, where, err)) != LV_OK) return st;
    if ((st = get_bool(a, "normalized", true, &tk->normalized, where, err)) != LV_OK) return st;
    if ((st = get_bool(a, "lstrip", false, &tk->lstrip, where, err)) != LV_OK) return st;
    if ((st = get_bool(a, "rstrip", false, &tk->rstrip, where, err)) != LV_OK) return st;
    return get_bool(a, "single_word", false, &tk->single_word, where, err);
}

static lv_status fill_added(tok *t, json_t *added, size_t *pool_used, lv_err *err) {
    size_t n = json_array_size(added);
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added) return nomem(err);
    int64_t max_added = -1; /* largest id HF's added_tokens_map holds so far */
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_array_get(added, i);
        json_t *c = json_object_get(a, "content");
        const char *content = json_string_value(c);
        size_t len = json_string_length(c);
        if (len == 0) continue; /* HF ignores empty added tokens */
        added_tok tk = {0};
        lv_status st = read_added_flags(a, &tk, i, err);
        if (st != LV_OK) return st;
        for (size_t j = 0; j < t->n_added; j++)
            if (t->added[j].len == len && memcmp(t->added[j].content, content, len) == 0)
                return lv_fail(err, LV_ERR_FORMAT, "added_tokens[%zu]: '%.60s' is listed twice", i,
                               content);
        int32_t id = str_map_get(t, &t->vocab, content, len);
        if (id < 0) {
            id = next_added_id(t, max_added);
            if (t->str_off[id] != UINT32_MAX)
                return lv_fail(err, LV_ERR_FORMAT,
                               "added_tokens[%zu]: '%.60s' gets id %d, which model.vocab gives "
                               "to '%.60s'",
                               i, content, id, t->pool + t->str_off[id]);
            set_str(t, id, content, len, pool_used);
        }
        json_int_t file_id = json_integer_value(json_object_get(a, "id"));
        if (file_id != id)
            LV_WARN("tokenizer.json: added token '%.60s' is listed with id %lld, but Hugging Face "
                    "tokenizers (and so this tokenizer) gives it id %d",
                    content, (long long)file_id, id);
        t->flags[id] |= TOKF_ADDED | (tk.special ? TOKF_SPECIAL : 0);
        if (id > max_added) max_added = id;
        if (id >= t->n_ids) t->n_ids = id + 1;
        tk.id = id;
        tk.content = t->pool + t->str_off[id];
        tk.len = len;
        t->added[t->n_added++] = tk;
    }
    return LV_OK;
}

static lv_status load_ids(tok *t, json_t *model, json_t *added, lv_err *err) {
    json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab))
        return lv_fail(err, LV_ERR_FORMAT, "model.vocab: missing, or not an object");
    if (added && !json_is_null(added) && !json_is_array(added))
        return lv_fail(err, LV_ERR_FORMAT, "added_tokens: expected an array");
    size_t n_vocab = 0, cap_ids = 0, pool_bytes = 0, pool_used = 0;
    lv_status st = size_ids(vocab, added, &n_vocab, &cap_ids, &pool_bytes, err);
    if (st != LV_OK) return st;
    t->n_model = (int32_t)n_vocab;
    t->pool = malloc(pool_bytes);
    t->str_off = malloc(cap_ids * sizeof *t->str_off);
    t->str_len = calloc(cap_ids, sizeof *t->str_len);
    t->flags = calloc(cap_ids, 1);
    if (!t->pool || !t->str_off || !t->str_len || !t->flags) return nomem(err);
    memset(t->str_off, 0xFF, cap_ids * sizeof *t->str_off);
    if ((st = fill_vocab(t, vocab, &pool_used, err)) != LV_OK) return st;
    return fill_added(t, added, &pool_used, err);
}

/* ===== Merges ===== */

/* One merge entry as (left, right) strings; *skip for "#version" lines. */
static lv_status merge_parts(json_t *m, size_t i, const char **a, size_t *la, const char **b,
                             size_t *lb, bool *skip, lv_err *err) {
    *skip = false;
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        size_t n = json_string_length(m);
        if (strncmp(s, "#version", 8) == 0) {
            *skip = true;
            return LV_OK;
        }
        const char *sp = memchr(s, ' ', n);
        if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s)))
            return lv_fail(err, LV_ERR_FORMAT,
                           "model.merges[%zu]: expected \"left right\" with one space, got "
                           "\"%.60s\"",
                           i, s);
        *a = s, *la = (size_t)(sp - s), *b = sp + 1, *lb = n - *la - 1;
        return LV_OK;
    }
    json_t *x = json_array_get(m, 0), *y = json_array_get(m, 1);
    if (!json_is_array(m) || json_array_size(m) != 2 || !json_is_string(x) || !json_is_string(y))
        return lv_fail(err, LV_ERR_FORMAT,
                       "model.merges[%zu]: expected \"left right\" or [\"left\", \"right\"]", i);
    *a = json_string_value(x), *la = json_string_length(x);
    *b = json_string_value(y), *lb = json_string_length(y);
    return LV_OK;
}

static lv_status load_merges(tok *t, json_t *merges, lv_err *err) {
    if (!json_is_array(merges))
        return lv_fail(err, LV_ERR_FORMAT, "model.merges: missing, or not an array");
    size_t n = json_array_size(merges);
    t->rank_id = malloc((n ? n : 1) * sizeof *t->rank_id);
    if (!t->rank_id || pair_map_init(&t->merges, n) != LV_OK) return nomem(err);
    lv_buf cat = {0};
    lv_status st = LV_OK;
    for (size_t i = 0; i < n; i++) {
        const char *a = NULL, *b = NULL;
        size_t la = 0, lb = 0;
        bool skip;
        if ((st = merge_parts(json_array_get(merges, i), i, &a, &la, &b, &lb, &skip, err))) break;
        if (skip) continue;
        int32_t ia = str_map_get(t, &t->vocab, a, la), ib = str_map_get(t, &t->vocab, b, lb);
        if (ia < 0 || ib < 0) {
            st = lv_fail(err, LV_ERR_FORMAT, "model.merges[%zu]: '%.*s' is not in model.vocab", i,
                         (int)(ia < 0 ? la : lb), ia < 0 ? a : b);
            break;
        }
        cat.len = 0;
        if (lv_buf_append(&cat, a, la) != LV_OK || lv_buf_append(&cat, b, lb) != LV_OK) {
            st = nomem(err);
            break;
        }
        int32_t inew = str_map_get(t, &t->vocab, cat.data, cat.len);
        if (inew < 0) {
            st = lv_fail(err, LV_ERR_FORMAT,
                         "model.merges[%zu]: the merged token '%.60s' is not in model.vocab", i,
                         cat.data);
            break;
        }
        pair_map_put(&t->merges, ia, ib, t->n_ranks, inew);
        t->rank_id[t->n_ranks++] = inew;
    }
    lv_buf_free(&cat);
    return st;
}

/* Lookup tables for the first BPE step: one-character tokens by code point
 * and the 256 byte-fallback tokens. */
static lv_status build_char_tables(tok *t, lv_err *err) {
    t->bmp_id = malloc(65536 * sizeof *t->bmp_id);
    if (!t->bmp_id) return nomem(err);
    memset(t->bmp_id, 0xFF, 65536 * sizeof *t->bmp_id);
    for (int32_t id = 0; id < t->n_ids; id++) {
        size_t len = 0;
        const uint8_t *s = (const uint8_t *)tok_str(t, id, &len);
        if (!(t->flags[id] & TOKF_MODEL) || len == 0 || utf8_len(s[0]) != len) continue;
        uint32_t cp = utf8_decode(s, len);
        if (cp < 0x10000) t->bmp_id[cp] = id;
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_id[b] = str_map_get(t, &t->vocab, name, 6);
    }
    t->unk_id = t->unk_name ? str_map_get(t, &t->vocab, t->unk_name, strlen(t->unk_name)) : -1;
    t->split_words = bpe_can_split_words(t);
    return LV_OK;
}

/* ===== Normalizer and pre-tokenizer ===== */

static lv_status add_norm(tok *t, norm_kind kind, const char *a, size_t la, const char *b,
                          size_t lb, lv_err *err) {
    norm_step *p = realloc(t->norm, (t->n_norm + 1) * sizeof *p);
    if (!p) return nomem(err);
    t->norm = p;
    norm_step *s = &p[t->n_norm];
    *s = (norm_step){kind, malloc(la + 1), la, b ? malloc(lb + 1) : NULL, lb};
    t->n_norm++; /* counted now so tok_free releases a half-built step */
    if (!s->a || (b && !s->b)) return nomem(err);
    memcpy(s->a, a, la), s->a[la] = '\0';
    if (b) memcpy(s->b, b, lb), s->b[lb] = '\0';
    return LV_OK;
}

/* Replace's {"String": s} pattern; a {"Regex": ...} one is refused. */
static lv_status get_pattern(json_t *obj, const char **s, size_t *n, const char *where,
                             lv_err *err) {
    json_t *p = json_object_get(obj, "pattern");
    if (json_is_object(p) && json_object_get(p, "Regex"))
        return lv_fail(err, LV_ERR_UNSUPPORTED, "%s Replace with a Regex pattern is not supported",
                       where);
    lv_status st = json_is_object(p) ? get_str(p, "String", s, n, where, err) : LV_OK;
    if (st == LV_OK && (!json_is_object(p) || !*s || *n == 0))
        st = lv_fail(err, LV_ERR_FORMAT, "%s Replace: expected \"pattern\": {\"String\": ...}",
                     where);
    return st;
}

static lv_status load_normalizer(tok *t, json_t *j, int depth, lv_err *err) {
    if (!j || json_is_null(j)) return LV_OK;
    const char *type, *a, *b;
    size_t la, lb;
    lv_status st = get_type(j, &type, "normalizer", err);
    if (st != LV_OK) return st;
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(j, "normalizers");
        if (!json_is_array(list) || depth >= TOK_JSON_DEPTH)
            return lv_fail(err, LV_ERR_FORMAT, "normalizer Sequence: bad \"normalizers\"");
        for (size_t i = 0; i < json_array_size(list); i++)
            if ((st = load_normalizer(t, json_array_get(list, i), depth + 1, err))) return st;
        return LV_OK;
    }
    if (strcmp(type, "Prepend") == 0) {
        if ((st = get_str(j, "prepend", &a, &la, "normalizer Prepend", err))) return st;
        if (!a) return lv_fail(err, LV_ERR_FORMAT, "normalizer Prepend: no \"prepend\"");
        return la ? add_norm(t, NORM_PREPEND, a, la, NULL, 0, err) : LV_OK;
    }
    if (strcmp(type, "Replace") == 0) {
        if ((st = get_pattern(j, &a, &la, "normalizer", err))) return st;
        if ((st = get_str(j, "content", &b, &lb, "normalizer Replace", err))) return st;
        if (!b) return lv_fail(err, LV_ERR_FORMAT, "normalizer Replace: no \"content\"");
        return add_norm(t, NORM_REPLACE, a, la, b, lb, err);
    }
    return lv_fail(err, LV_ERR_UNSUPPORTED,
                   "normalizer type '%s' is not supported (supported: Sequence, Prepend, Replace)",
                   type);
}

static lv_status load_pretok(tok *t, json_t *j, int depth, lv_err *err) {
    if (!j || json_is_null(j)) return LV_OK;
    const char *type;
    lv_status st = get_type(j, &type, "pre_tokenizer", err);
    if (st != LV_OK) return st;
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(j, "pretokenizers");
        if (!json_is_array(list) || depth >= TOK_JSON_DEPTH)
            return lv_fail(err, LV_ERR_FORMAT, "pre_tokenizer Sequence: bad \"pretokenizers\"");
        for (size_t i = 0; i < json_array_size(list); i++)
            if ((st = load_pretok(t, json_array_get(list, i), depth + 1, err))) return st;
        return LV_OK;
    }
    if (t->bl.on)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "pre_tokenizer %s after ByteLevel is not supported (ByteLevel must be last)",
                       type);
    if (strcmp(type, "Digits") == 0) {
        if (t->meta.on || t->bl.digits)
            return lv_fail(err, LV_ERR_UNSUPPORTED,
                           "pre_tokenizer Digits with Metaspace, or twice, is not supported");
        t->bl.digits = true;
        return get_bool(j, "individual_digits", false, &t->bl.individual_digits,
                        "pre_tokenizer Digits", err);
    }
    if (strcmp(type, "ByteLevel") == 0) {
        if (t->meta.on)
            return lv_fail(err, LV_ERR_UNSUPPORTED,
                           "pre_tokenizer ByteLevel with Metaspace is not supported");
        t->bl.on = true;
        if ((st = get_bool(j, "add_prefix_space", true, &t->bl.add_prefix_space,
                           "pre_tokenizer ByteLevel", err)))
            return st;
        return get_bool(j, "use_regex", true, &t->bl.use_regex, "pre_tokenizer ByteLevel", err);
    }
    if (strcmp(type, "Metaspace") != 0)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "pre_tokenizer type '%s' is not supported (supported: Metaspace, ByteLevel, "
                       "Digits, Sequence)",
                       type);
    if (t->meta.on)
        return lv_fail(err, LV_ERR_UNSUPPORTED, "more than one Metaspace pre-tokenizer");
    if (t->bl.digits)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "pre_tokenizer Metaspace with Digits is not supported");
    metaspace_cfg *m = &t->meta;
    m->on = true;
    if ((st = get_char(j, "replacement", m->repl, &m->repl_len, "pre_tokenizer Metaspace", err)))
        return st;
    if ((st = get_scheme(j, &m->scheme, "pre_tokenizer Metaspace", err))) return st;
    return get_bool(j, "split", true, &m->split, "pre_tokenizer Metaspace", err);
}

/* ===== Post-processor ===== */

static lv_status template_ids(tok *t, json_t *specials, const char *name, bool after_a,
                              lv_err *err) {
    json_t *ids = json_object_get(json_object_get(specials, name), "ids");
    if (!json_is_array(ids))
        return lv_fail(err, LV_ERR_FORMAT, "post_processor.special_tokens has no ids for '%.60s'",
                       name);
    for (size_t i = 0; i < json_array_size(ids); i++) {
        json_t *v = json_array_get(ids, i);
        json_int_t id = json_is_integer(v) ? json_integer_value(v) : -1;
        if (id < 0 || id >= t->n_ids || !tok_str(t, (int32_t)id, NULL))
            return lv_fail(err, LV_ERR_FORMAT, "post_processor: '%.60s' has unknown id %lld", name,
                           (long long)id);
        size_t *n = after_a ? &t->n_tpl_post : &t->n_tpl_pre;
        if (*n == LV_ARRAY_LEN(t->tpl_pre))
            return lv_fail(err, LV_ERR_UNSUPPORTED, "post_processor: too many special tokens");
        (after_a ? t->tpl_post : t->tpl_pre)[(*n)++] = (int32_t)id;
    }
    return LV_OK;
}

/* TemplateProcessing; ByteLevel (offsets only: adds no ids); or a Sequence
 * of those (post_processors, as Llama-3 files have), one template at most. */
static lv_status load_template(tok *t, json_t *j, int depth, bool *have_tpl, lv_err *err) {
    if (!j || json_is_null(j)) return LV_OK;
    const char *type, *id;
    lv_status st = get_type(j, &type, "post_processor", err);
    if (st != LV_OK) return st;
    if (strcmp(type, "ByteLevel") == 0) return LV_OK;
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(j, "processors");
        if (!json_is_array(list) || depth >= TOK_JSON_DEPTH)
            return lv_fail(err, LV_ERR_FORMAT, "post_processor Sequence: bad \"processors\"");
        for (size_t i = 0; i < json_array_size(list); i++)
            if ((st = load_template(t, json_array_get(list, i), depth + 1, have_tpl, err)))
                return st;
        return LV_OK;
    }
    if (strcmp(type, "TemplateProcessing") != 0)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "post_processor type '%s' is not supported (supported: TemplateProcessing, "
                       "ByteLevel, Sequence)",
                       type);
    if (*have_tpl)
        return lv_fail(err, LV_ERR_UNSUPPORTED, "post_processor: two TemplateProcessing");
    *have_tpl = true;
    json_t *single = json_object_get(j, "single"), *specials = json_object_get(j, "special_tokens");
    if (!json_is_array(single))
        return lv_fail(err, LV_ERR_FORMAT, "post_processor.single: expected an array");
    bool seen_a = false;
    for (size_t i = 0; i < json_array_size(single); i++) {
        json_t *it = json_array_get(single, i);
        json_t *sp = json_object_get(it, "SpecialToken"), *sq = json_object_get(it, "Sequence");
        if (sp) {
            if ((st = get_str(sp, "id", &id, NULL, "post_processor.single", err))) return st;
            if (!id) return lv_fail(err, LV_ERR_FORMAT, "post_processor.single: SpecialToken id");
            if ((st = template_ids(t, specials, id, seen_a, err))) return st;
        } else if (sq) {
            if ((st = get_str(sq, "id", &id, NULL, "post_processor.single", err))) return st;
            if (!id || strcmp(id, "A") != 0 || seen_a)
                return lv_fail(err, LV_ERR_FORMAT,
                               "post_processor.single: expected one Sequence $A");
            seen_a = true;
        } else {
            return lv_fail(err, LV_ERR_FORMAT,
                           "post_processor.single[%zu]: expected SpecialToken or Sequence", i);
        }
    }
    if (!seen_a) return lv_fail(err, LV_ERR_FORMAT, "post_processor.single has no $A");
    return LV_OK;
}

/* ===== Decoder =====
 * Steps before the first Fuse work token by token (dec[]); after it the
 * text is one string, and only a Strip may follow (post_strip). Without any
 * decoder HF joins the tokens with spaces. */

static lv_status add_dec(tok *t, dec_step s, lv_err *err) {
    if (t->n_dec == TOK_MAX_DEC_STEPS) {
        free(s.a);
        free(s.b);
        return lv_fail(err, LV_ERR_UNSUPPORTED, "decoder: more than %d steps", TOK_MAX_DEC_STEPS);
    }
    t->dec[t->n_dec++] = s;
    return LV_OK;
}

static lv_status dec_strip(tok *t, json_t *j, bool fused, lv_err *err) {
    char ch[5];
    size_t n = 0;
    uint32_t start = 0, stop = 0;
    lv_status st;
    if ((st = get_char(j, "content", ch, &n, "decoder Strip", err))) return st;
    if ((st = get_uint(j, "start", &start, "decoder Strip", err))) return st;
    if ((st = get_uint(j, "stop", &stop, "decoder Strip", err))) return st;
    if (fused) {
        if (t->post_strip) return lv_fail(err, LV_ERR_UNSUPPORTED, "decoder: two Strip after Fuse");
        t->post_strip = true;
        memcpy(t->strip_ch, ch, sizeof ch);
        t->strip_ch_len = n;
        t->strip_start = start;
        t->strip_stop = stop;
        return LV_OK;
    }
    char *a = strdup(ch);
    if (!a) return nomem(err);
    return add_dec(
        t, (dec_step){.kind = DEC_STRIP, .a = a, .a_len = n, .start = start, .stop = stop}, err);
}

static lv_status dec_step_of(tok *t, json_t *j, const char *type, bool fused, lv_err *err) {
    lv_status st;
    if (strcmp(type, "Fuse") == 0) return LV_OK; /* load_decoder notes it */
    if (fused && strcmp(type, "Strip") != 0)
        return lv_fail(err, LV_ERR_UNSUPPORTED, "decoder %s after Fuse is not supported", type);
    if (strcmp(type, "Strip") == 0) return dec_strip(t, j, fused, err);
    if (strcmp(type, "ByteFallback") == 0) {
        for (size_t i = 0; i < t->n_dec; i++)
            if (t->dec[i].kind == DEC_BYTE_FALLBACK)
                return lv_fail(err, LV_ERR_UNSUPPORTED, "decoder: two ByteFallback steps");
        return add_dec(t, (dec_step){.kind = DEC_BYTE_FALLBACK}, err);
    }
    if (strcmp(type, "ByteLevel") == 0) { /* it fuses: load_decoder notes it */
        for (size_t i = 0; i < t->n_dec; i++)
            if (t->dec[i].kind == DEC_BYTE_FALLBACK)
                return lv_fail(err, LV_ERR_UNSUPPORTED,
                               "decoder: ByteLevel after ByteFallback is not supported");
        return add_dec(t, (dec_step){.kind = DEC_BYTE_LEVEL}, err);
    }
    if (strcmp(type, "Replace") == 0) {
        const char *a, *b;
        size_t la, lb;
        if ((st = get_pattern(j, &a, &la, "decoder", err))) return st;
        if ((st = get_str(j, "content", &b, &lb, "decoder Replace", err))) return st;
        if (!b) return lv_fail(err, LV_ERR_FORMAT, "decoder Replace: no \"content\"");
        dec_step s = {.kind = DEC_REPLACE,
                      .a = strndup(a, la),
                      .a_len = la,
                      .b = strndup(b, lb),
                      .b_len = lb};
        if (!s.a || !s.b) {
            free(s.a);
            free(s.b);
            return nomem(err);
        }
        return add_dec(t, s, err);
    }
    /* Metaspace */
    char ch[5];
    dec_step s = {.kind = DEC_METASPACE};
    if ((st = get_char(j, "replacement", ch, &s.a_len, "decoder Metaspace", err))) return st;
    if ((st = get_scheme(j, &s.scheme, "decoder Metaspace", err))) return st;
    if (!(s.a = strdup(ch))) return nomem(err);
    return add_dec(t, s, err);
}

static lv_status load_decoder(tok *t, json_t *j, bool *fused, int depth, lv_err *err) {
    const char *type;
    lv_status st = get_type(j, &type, "decoder", err);
    if (st != LV_OK) return st;
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(j, "decoders");
        if (!json_is_array(list) || depth >= TOK_JSON_DEPTH)
            return lv_fail(err, LV_ERR_FORMAT, "decoder Sequence: bad \"decoders\"");
        for (size_t i = 0; i < json_array_size(list); i++)
            if ((st = load_decoder(t, json_array_get(list, i), fused, depth + 1, err))) return st;
        return LV_OK;
    }
    static const char *known[] = {"Replace", "ByteFallback", "Fuse",
                                  "Strip",   "Metaspace",    "ByteLevel"};
    bool ok = false;
    for (size_t i = 0; i < LV_ARRAY_LEN(known); i++) ok |= strcmp(type, known[i]) == 0;
    if (!ok)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "decoder type '%s' is not supported (supported: Sequence, Replace, "
                       "ByteFallback, Fuse, Strip, Metaspace, ByteLevel)",
                       type);
    if ((st = dec_step_of(t, j, type, *fused, err))) return st;
    /* ByteLevel's decode_chain returns one string: it fuses, as Fuse does */
    if (strcmp(type, "Fuse") == 0 || strcmp(type, "ByteLevel") == 0) *fused = true;
    return LV_OK;
}

/* ===== Putting it together ===== */

/* Patterns of the added tokens (normalized=true ones are matched by their
 * normalized form, as AddedVocabulary::refresh_added_tokens does), then the
 * two matchers. */
static lv_status build_added(tok *t, lv_err *err) {
    lv_buf b0 = {0}, b1 = {0};
    lv_status st = LV_OK;
    for (size_t i = 0; i < t->n_added && st == LV_OK; i++) {
        added_tok *a = &t->added[i];
        const char *p = a->content;
        size_t n = a->len;
        if (a->normalized && normalize_piece(t, a->content, a->len, &b0, &b1, &p, &n) != LV_OK)
            st = nomem(err);
        else if (!(a->pattern = malloc(n + 1)))
            st = nomem(err);
        else
            memcpy(a->pattern, p, n), a->pattern[n] = '\0', a->pat_len = n;
    }
    lv_buf_free(&b0);
    lv_buf_free(&b1);
    if (st != LV_OK) return st;
    if (added_set_build(t, &t->raw_set, false) != LV_OK ||
        added_set_build(t, &t->norm_set, true) != LV_OK)
        return nomem(err);
    t->bos_id = t->n_tpl_pre ? t->tpl_pre[0] : tok_token_to_id(t, "<s>");
    t->eos_id = t->n_tpl_post ? t->tpl_post[0] : tok_token_to_id(t, "</s>");
    return LV_OK;
}

static lv_status load_root(tok *t, json_t *root, lv_err *err) {
    if (!json_is_object(root)) return lv_fail(err, LV_ERR_FORMAT, "the top level is not an object");
    static const char *unsup[] = {"truncation", "padding"};
    for (size_t i = 0; i < LV_ARRAY_LEN(unsup); i++) {
        json_t *v = json_object_get(root, unsup[i]);
        if (v && !json_is_null(v))
            return lv_fail(err, LV_ERR_UNSUPPORTED,
                           "\"%s\" is set; only null is supported (it changes the ids)", unsup[i]);
    }
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return lv_fail(err, LV_ERR_FORMAT, "no \"model\" object");
    lv_status st;
    if ((st = load_model_options(t, model, err))) return st;
    if ((st = load_ids(t, model, json_object_get(root, "added_tokens"), err))) return st;
    if ((st = load_merges(t, json_object_get(model, "merges"), err))) return st;
    if ((st = build_char_tables(t, err))) return st;
    if ((st = load_normalizer(t, json_object_get(root, "normalizer"), 0, err))) return st;
    if ((st = load_pretok(t, json_object_get(root, "pre_tokenizer"), 0, err))) return st;
    bool have_tpl = false;
    if ((st = load_template(t, json_object_get(root, "post_processor"), 0, &have_tpl, err)))
        return st;
    json_t *dec = json_object_get(root, "decoder");
    bool fused = false;
    t->dec_join_space = !dec || json_is_null(dec);
    if (!t->dec_join_space && (st = load_decoder(t, dec, &fused, 0, err))) return st;
    return build_added(t, err);
}

lv_status tok_load_mem(const char *json, size_t len, tok **out, lv_err *err) {
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb_whole(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return lv_fail(err, LV_ERR_FORMAT, "invalid JSON at line %d, column %d: %s", je.line,
                       je.column, je.text);
    lv_status st;
    tok *t = calloc(1, sizeof *t);
    if (!t) {
        st = nomem(err);
        goto fail;
    }
    t->unk_id = t->bos_id = t->eos_id = -1;
    if ((st = load_root(t, root, err)) != LV_OK) goto fail;
    json_decref(root);
    *out = t;
    return LV_OK;
fail:
    tok_free(t);
    json_decref(root);
    return st;
}

lv_status tok_load(const char *path, tok **out, lv_err *err) {
    *out = NULL;
    char *buf;
    size_t len;
    lv_status st = lv_read_file(path, TOK_FILE_MAX, &buf, &len, err);
    if (st != LV_OK) return st;
    st = tok_load_mem(buf, len, out, err);
    free(buf);
    if (st != LV_OK) lv_err_prefix(err, "%s", path);
    return st;
}

void tok_free(tok *t) {
    if (!t) return;
    free(t->pool);
    free(t->str_off);
    free(t->str_len);
    free(t->flags);
    str_map_free(&t->vocab);
    pair_map_free(&t->merges);
    free(t->rank_id);
    free(t->bmp_id);
    free(t->unk_name);
    for (size_t i = 0; i < t->n_added; i++) free(t->added[i].pattern);
    free(t->added);
    added_set_free(&t->raw_set);
    added_set_free(&t->norm_set);
    for (size_t i = 0; i < t->n_norm; i++) free(t->norm[i].a), free(t->norm[i].b);
    free(t->norm);
    for (size_t i = 0; i < t->n_dec; i++) free(t->dec[i].a), free(t->dec[i].b);
    free(t);
}
