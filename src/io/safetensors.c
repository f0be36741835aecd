/*
 * safetensors.c - the safetensors reader (see safetensors.h for the API).
 *
 * FORMAT (huggingface/safetensors README "Format"; safetensors/src/tensor.rs
 * `read_metadata`, `Metadata::validate`; shared/spec/formats.md §1)
 *
 *   offset   size  content
 *   0        8     N: u64 little-endian, byte length of the JSON header
 *   8        N     UTF-8 JSON object (writers pad it with spaces so that the
 *                  data starts 8-aligned; the spaces are JSON whitespace)
 *   8+N      rest  data buffer: raw little-endian tensor bytes, C order,
 *                  concatenated with no padding
 *
 *   header = { "<tensor name>": { "dtype": "F16",
 *                                 "shape": [d0, d1, ...],
 *                                 "data_offsets": [BEGIN, END] },
 *              ...,
 *              "__metadata__": { "format": "pt", ... } }   (optional)
 *
 * BEGIN/END are byte offsets into the data buffer (END exclusive). shape []
 * is a scalar (1 element); a dim of 0 is an empty tensor with BEGIN == END.
 *
 * RULES ENFORCED (each violation is LV_ERR_FORMAT naming the file):
 *   - the file holds at least the 8-byte length; N <= ST_MAX_HEADER (100 MB)
 *     and 8 + N <= file size;
 *   - the header is valid UTF-8, valid JSON, and an object; no key appears
 *     twice (jansson JSON_REJECT_DUPLICATES);
 *   - "__metadata__", if present, is an object whose values are strings; it
 *     is not a tensor;
 *   - every other value is an object with "dtype" (a known dtype string,
 *     dtype.h), "shape" (array of integers >= 0) and "data_offsets" (array of
 *     two integers >= 0, BEGIN <= END); other keys are ignored, as serde does;
 *   - prod(shape) * dtype size does not overflow, and equals END - BEGIN;
 *   - sorted by BEGIN, the tensors tile the data buffer exactly: the first
 *     starts at 0, each starts where the previous ends (no overlap, no gap),
 *     and the last ends at the end of the file;
 *   - no two tensors share a name, also after canonicalisation
 *     (tensor_names.h) and across shards.
 * More than ST_MAX_DIMS dims is LV_ERR_UNSUPPORTED.
 *
 * ALIGNMENT. The reference writer sorts tensors by descending alignment and
 * pads the header, so data is naturally aligned in files it wrote. Other
 * writers promise nothing, and a mapping of a shard is only page-aligned at
 * offset 0, so callers must not assume t->data is aligned.
 *
 * SHARDS (formats.md §1.3). model.safetensors.index.json holds
 * {"metadata": {...}, "weight_map": {"<tensor>": "<shard file>", ...}}. Each
 * distinct shard is opened once, as an independent safetensors file. A shard
 * the index names but the directory lacks is LV_ERR_IO naming the shard and
 * one tensor it should hold; a tensor the index lists but its shard lacks is
 * LV_ERR_FORMAT. A tensor present in a shard but absent from the index is
 * kept (transformers loads whole shards too).
 */
#include "safetensors.h"
#include "io/json_type.h"

#include "base/file.h"
#include "io/tensor_names.h"

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INDEX_MAX_BYTES (64u * 1024u * 1024u) /* a 700-tensor index is ~60 KB */

typedef struct {
    char *path; /* as opened (dir + shard name); st_tensor.file_name points here */
    lv_map map; /* read-only mapping of the whole file (zeroed until mapped) */
} st_file;

struct st_set {
    st_file *files; /* every file opened, in order */
    size_t n_files, cap_files;
    st_tensor *tensors; /* by file, then by data offset */
    size_t n_tensors, cap_tensors;
    int32_t *slots; /* open-addressing hash of canonical names: tensor index or -1 */
    size_t n_slots; /* power of two, >= 2 * n_tensors */
    struct st_owned {
        void *p;
        void (*free_fn)(void *);
    } * owned; /* st_set_add / st_set_own: released by st_close, last first */
    size_t n_owned, cap_owned;
};

/* ---- small helpers ---------------------------------------------------- */

static uint64_t read_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF). Returns the
 * offset of the first bad byte, or n if all are valid. */
static size_t utf8_check(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            return i;
        }
        if (n - i < len) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return i;
        i += len;
    }
    return n;
}

/* "[2, 3]" into buf, for messages. */
static const char *shape_str(const int64_t *shape, int n, char *buf, size_t cap) {
    size_t at = 0;
    at += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n && at < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (at < cap) snprintf(buf + at, cap - at, "]");
    return buf;
}

static lv_status nomem(lv_err *err, const char *what) {
    return lv_fail(err, LV_ERR_NOMEM, "%s: out of memory", what);
}

/* ---- the set ---------------------------------------------------------- */

void st_close(st_set *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n_tensors; i++) free((void *)s->tensors[i].name);
    for (size_t i = 0; i < s->n_files; i++) {
        lv_unmap(&s->files[i].map);
        free(s->files[i].path);
    }
    free(s->tensors);
    free(s->files);
    free(s->slots);
    for (size_t i = s->n_owned; i-- > 0;) s->owned[i].free_fn(s->owned[i].p);
    free(s->owned);
    free(s);
}

size_t st_count(const st_set *s) {
    return s->n_tensors;
}

size_t st_file_count(const st_set *s) {
    return s->n_files;
}

const st_tensor *st_at(const st_set *s, size_t i) {
    return i < s->n_tensors ? &s->tensors[i] : NULL;
}

const st_tensor *st_find(const st_set *s, const char *canonical_name) {
    if (s->n_slots == 0) return NULL;
    size_t mask = s->n_slots - 1;
    for (size_t i = (size_t)hash_name(canonical_name) & mask;; i = (i + 1) & mask) {
        int32_t k = s->slots[i];
        if (k < 0) return NULL;
        if (strcmp(s->tensors[k].name, canonical_name) == 0) return &s->tensors[k];
    }
}

/* Builds the name hash over every tensor; a second tensor with the same
 * canonical name is a format error naming both spellings and files. */
static lv_status build_index(st_set *s, lv_err *err) {
    size_t n = 16;
    while (n < 2 * s->n_tensors) n *= 2;
    s->slots = malloc(n * sizeof *s->slots);
    if (!s->slots) return nomem(err, "safetensors index");
    s->n_slots = n;
    memset(s->slots, 0xff, n * sizeof *s->slots); /* all -1 */
    for (size_t t = 0; t < s->n_tensors; t++) {
        const st_tensor *a = &s->tensors[t];
        size_t i = (size_t)hash_name(a->name) & (n - 1);
        for (; s->slots[i] >= 0; i = (i + 1) & (n - 1)) {
            const st_tensor *b = &s->tensors[s->slots[i]];
            if (strcmp(a->name, b->name) == 0)
                return lv_fail(
                    err, LV_ERR_FORMAT,
                    "%s: duplicate tensor '%s': '%s' (in %s) and '%s' name the same tensor",
                    a->file_name, a->name, b->orig_name, b->file_name, a->orig_name);
        }
        s->slots[i] = (int32_t)t;
    }
    return LV_OK;
}

static lv_status push_file(st_set *s, const char *path, lv_err *err) {
    if (s->n_files == s->cap_files) {
        size_t cap = s->cap_files ? 2 * s->cap_files : 4;
        st_file *f = realloc(s->files, cap * sizeof *f);
        if (!f) return nomem(err, path);
        s->files = f;
        s->cap_files = cap;
    }
    st_file *f = &s->files[s->n_files];
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path) return nomem(err, path);
    s->n_files++;
    return LV_OK;
}

/* ---- one file's header ------------------------------------------------ */

/* A tensor entry while its file is validated: where its bytes lie. */
typedef struct {
    uint64_t begin, end;
    size_t tensor; /* index into s->tensors */
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* A JSON integer >= 0, or false. */
static bool get_u64(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static lv_status check_metadata(const char *file, const json_t *meta, lv_err *err) {
    if (!json_is_object(meta))
        return lv_fail(err, LV_ERR_FORMAT, "%s: __metadata__ must be an object of strings, got %s",
                       file, json_type_name(meta));
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)meta, k, v) {
        if (!json_is_string(v))
            return lv_fail(err, LV_ERR_FORMAT,
                           "%s: __metadata__ must be an object of strings; \"%s\" is %s", file, k,
                           json_type_name(v));
    }
    return LV_OK;
}

/* Appends a tensor whose canonical + original names are stored in one block. */
static lv_status push_tensor(st_set *s, const char *file, const char *orig, st_tensor **out,
                             lv_err *err) {
    if (s->n_tensors == s->cap_tensors) {
        size_t cap = s->cap_tensors ? 2 * s->cap_tensors : 64;
        st_tensor *t = realloc(s->tensors, cap * sizeof *t);
        if (!t) return nomem(err, file);
        s->tensors = t;
        s->cap_tensors = cap;
    }
    size_t nc = tn_canonical_len(orig), no = strlen(orig);
    char *names = malloc(nc + 1 + no + 1);
    if (!names) return nomem(err, file);
    tn_canonical(orig, names, nc + 1);
    memcpy(names + nc + 1, orig, no + 1);
    st_tensor *t = &s->tensors[s->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = names;
    t->orig_name = names + nc + 1;
    t->file_name = file;
    *out = t;
    return LV_OK;
}

/* Validates one entry of the header and fills *t and *sp (bytes not yet
 * checked against the buffer). */
static lv_status parse_entry(const char *file, const char *name, const json_t *v, st_tensor *t,
                             span *sp, lv_err *err) {
    if (!json_is_object(v))
        return lv_fail(err, LV_ERR_FORMAT, "%s: tensor '%s': entry must be an object, got %s", file,
                       name, json_type_name(v));
    const json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
                 *jo = json_object_get(v, "data_offsets");
    if (!jd || !js || !jo)
        return lv_fail(err, LV_ERR_FORMAT, "%s: tensor '%s': entry is missing \"%s\"", file, name,
                       !jd   ? "dtype"
                       : !js ? "shape"
                             : "data_offsets");
    if (!json_is_string(jd))
        return lv_fail(err, LV_ERR_FORMAT, "%s: tensor '%s': dtype must be a string, got %s", file,
                       name, json_type_name(jd));
    if (!dtype_from_name(json_string_value(jd), &t->dtype))
        return lv_fail(err, LV_ERR_FORMAT, "%s: tensor '%s': unknown dtype \"%s\"", file, name,
                       json_string_value(jd));
    if (!json_is_array(js))
        return lv_fail(err, LV_ERR_FORMAT, "%s: tensor '%s': shape must be an array, got %s", file,
                       name, json_type_name(js));
    size_t nd = json_array_size(js);
    if (nd > ST_MAX_DIMS)
        return lv_fail(err, LV_ERR_UNSUPPORTED, "%s: tensor '%s': %zu dims; at most %d supported",
                       file, name, nd, ST_MAX_DIMS);
    t->n_dims = (int)nd;
    /* n_elems and nbytes must fit both size_t and int64_t. */
    uint64_t limit = SIZE_MAX < INT64_MAX ? (uint64_t)SIZE_MAX : (uint64_t)INT64_MAX;
    uint64_t n = 1;
    bool overflow = false;
    for (size_t i = 0; i < nd; i++) {
        uint64_t d;
        if (!get_u64(json_array_get(js, i), &d))
            return lv_fail(err, LV_ERR_FORMAT,
                           "%s: tensor '%s': shape[%zu] must be an integer >= 0, got %s", file,
                           name, i, json_type_name(json_array_get(js, i)));
        t->shape[i] = (int64_t)d;
        if (d != 0 && n > limit / d)
            overflow = true;
        else
            n *= d;
    }
    char sbuf[160];
    size_t es = dtype_size(t->dtype);
    /* A zero dim makes the product 0 even after an overflowing prefix. */
    for (size_t i = 0; i < nd; i++) {
        if (t->shape[i] == 0) {
            overflow = false;
            n = 0;
        }
    }
    if (overflow || n > limit / es)
        return lv_fail(err, LV_ERR_FORMAT, "%s: tensor '%s': size of %s %s overflows", file, name,
                       dtype_name(t->dtype), shape_str(t->shape, t->n_dims, sbuf, sizeof sbuf));
    t->n_elems = (int64_t)n;
    t->nbytes = (size_t)(n * es);
    if (!json_is_array(jo) || json_array_size(jo) != 2 ||
        !get_u64(json_array_get(jo, 0), &sp->begin) || !get_u64(json_array_get(jo, 1), &sp->end))
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets must be [BEGIN, END], two integers >= 0",
                       file, name);
    if (sp->begin > sp->end)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets [%llu, %llu] are reversed", file, name,
                       (unsigned long long)sp->begin, (unsigned long long)sp->end);
    if (sp->end - sp->begin != (uint64_t)t->nbytes)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: tensor '%s': shape/size mismatch: %s %s needs %zu bytes, data_offsets "
                       "[%llu, %llu] hold %llu",
                       file, name, dtype_name(t->dtype),
                       shape_str(t->shape, t->n_dims, sbuf, sizeof sbuf), t->nbytes,
                       (unsigned long long)sp->begin, (unsigned long long)sp->end,
                       (unsigned long long)(sp->end - sp->begin));
    return LV_OK;
}

/* Checks that the spans (sorted) tile [0, data_len) exactly. */
static lv_status check_tiling(const st_set *s, const char *file, const span *sp, size_t n,
                              uint64_t data_len, lv_err *err) {
    uint64_t expect = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = s->tensors[sp[i].tensor].orig_name;
        if (sp[i].begin < expect)
            return lv_fail(err, LV_ERR_FORMAT,
                           "%s: tensors '%s' and '%s' overlap (data_offsets start at %llu, the "
                           "previous tensor ends at %llu)",
                           file, s->tensors[sp[i - 1].tensor].orig_name, name,
                           (unsigned long long)sp[i].begin, (unsigned long long)expect);
        if (sp[i].begin > expect) {
            if (i == 0)
                return lv_fail(err, LV_ERR_FORMAT,
                               "%s: data does not start at 0: first tensor '%s' starts at %llu",
                               file, name, (unsigned long long)sp[i].begin);
            return lv_fail(err, LV_ERR_FORMAT,
                           "%s: gap of %llu bytes in the data before tensor '%s' (starts at %llu, "
                           "previous tensor ends at %llu)",
                           file, (unsigned long long)(sp[i].begin - expect), name,
                           (unsigned long long)sp[i].begin, (unsigned long long)expect);
        }
        if (sp[i].end > data_len)
            return lv_fail(err, LV_ERR_FORMAT,
                           "%s: tensor '%s' ends at data byte %llu, past the end of the file (data "
                           "buffer is %llu bytes)",
                           file, name, (unsigned long long)sp[i].end, (unsigned long long)data_len);
        expect = sp[i].end;
    }
    if (expect != data_len)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: tensors do not end at the end of the file: data buffer is %llu bytes, "
                       "tensors cover %llu",
                       file, (unsigned long long)data_len, (unsigned long long)expect);
    return LV_OK;
}

/* Parses and validates the header of s->files[fi] (already mapped) and
 * appends its tensors, ordered by data offset. */
static lv_status parse_file(st_set *s, size_t fi, lv_err *err) {
    const char *file = s->files[fi].path;
    const uint8_t *data = s->files[fi].map.data;
    size_t size = s->files[fi].map.size;
    if (size < 8)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: file is %zu bytes, too short for a safetensors header (8-byte length)",
                       file, size);
    uint64_t hlen = read_le64(data);
    if (hlen > ST_MAX_HEADER)
        return lv_fail(err, LV_ERR_FORMAT, "%s: header length %llu exceeds the %u-byte limit", file,
                       (unsigned long long)hlen, ST_MAX_HEADER);
    if (hlen > size - 8)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: header length %llu runs past the end of the file (%zu bytes)", file,
                       (unsigned long long)hlen, size);
    size_t bad = utf8_check(data + 8, (size_t)hlen);
    if (bad != hlen)
        return lv_fail(err, LV_ERR_FORMAT, "%s: header is not valid UTF-8 (byte %zu of the header)",
                       file, bad);

    lv_status st = LV_OK;
    span *spans = NULL;
    json_error_t jerr;
    json_t *root = json_loadb_whole((const char *)data + 8, (size_t)hlen,
                                    JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root)
        return lv_fail(err, LV_ERR_FORMAT, "%s: header is not valid JSON: %s (header byte %d)",
                       file, jerr.text, jerr.position);
    if (!json_is_object(root)) {
        st = lv_fail(err, LV_ERR_FORMAT, "%s: header is not a JSON object (got %s)", file,
                     json_type_name(root));
        goto fail;
    }
    size_t n = json_object_size(root), ns = 0;
    spans = malloc((n ? n : 1) * sizeof *spans);
    if (!spans) {
        st = nomem(err, file);
        goto fail;
    }
    size_t first = s->n_tensors;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if ((st = check_metadata(file, val, err)) != LV_OK) goto fail;
            continue;
        }
        st_tensor *t = NULL;
        if ((st = push_tensor(s, file, key, &t, err)) != LV_OK) goto fail;
        if ((st = parse_entry(file, key, val, t, &spans[ns], err)) != LV_OK) goto fail;
        spans[ns].tensor = s->n_tensors - 1;
        ns++;
    }
    qsort(spans, ns, sizeof *spans, span_cmp);
    uint64_t data_len = (uint64_t)(size - 8 - (size_t)hlen);
    if ((st = check_tiling(s, file, spans, ns, data_len, err)) != LV_OK) goto fail;

    /* Reorder this file's tensors by offset and point them into the map. */
    st_tensor *tmp = malloc((ns ? ns : 1) * sizeof *tmp);
    if (!tmp) {
        st = nomem(err, file);
        goto fail;
    }
    const uint8_t *base = data + 8 + hlen;
    for (size_t i = 0; i < ns; i++) {
        tmp[i] = s->tensors[spans[i].tensor];
        tmp[i].data = base + spans[i].begin;
    }
    if (ns) memcpy(&s->tensors[first], tmp, ns * sizeof *tmp);
    free(tmp);
fail:
    free(spans);
    json_decref(root);
    return st;
}

/* Maps path and appends its tensors. */
static lv_status add_file(st_set *s, const char *path, lv_err *err) {
    lv_status st = push_file(s, path, err);
    if (st != LV_OK) return st;
    st_file *f = &s->files[s->n_files - 1];
    if ((st = lv_map_file(path, &f->map, err)) != LV_OK) return st;
    return parse_file(s, s->n_files - 1, err);
}

/* ---- sharded checkpoints ---------------------------------------------- */

/* A shard name from the index must stay inside the index's directory. */
static bool safe_shard_name(const char *name) {
    if (!*name || name[0] == '/') return false;
    for (const char *p = name; *p;) {
        const char *q = strchr(p, '/');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.') return false;
        if (!q) break;
        p = q + 1;
    }
    return true;
}

static int str_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* dirname of path into out ("." if none). */
static lv_status dir_of(const char *path, char *out, size_t cap, lv_err *err) {
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 1;
    if (slash && n == 0) n = 1; /* "/x.json" -> "/" */
    if (n + 1 > cap) return lv_fail(err, LV_ERR_ARG, "path too long: %s", path);
    memcpy(out, slash ? path : ".", n);
    out[n] = '\0';
    return LV_OK;
}

static lv_status open_index(st_set *s, const char *index_path, lv_err *err) {
    char *text = NULL;
    size_t len;
    const char **shards = NULL;
    json_t *root = NULL;
    lv_status st = lv_read_file(index_path, INDEX_MAX_BYTES, &text, &len, err);
    if (st != LV_OK) return st;
    json_error_t jerr;
    root = json_loadb_whole(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        st = lv_fail(err, LV_ERR_FORMAT, "%s: not valid JSON: %s (line %d)", index_path, jerr.text,
                     jerr.line);
        goto fail;
    }
    json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(wm)) {
        st = lv_fail(err, LV_ERR_FORMAT, "%s: no \"weight_map\" object", index_path);
        goto fail;
    }
    size_t n = json_object_size(wm), n_shards = 0;
    if (n == 0) {
        st = lv_fail(err, LV_ERR_FORMAT, "%s: weight_map is empty", index_path);
        goto fail;
    }
    shards = malloc(n * sizeof *shards);
    if (!shards) {
        st = nomem(err, index_path);
        goto fail;
    }
    const char *key;
    json_t *val;
    json_object_foreach(wm, key, val) {
        if (!json_is_string(val)) {
            st = lv_fail(err, LV_ERR_FORMAT, "%s: weight_map[\"%s\"] must be a string, got %s",
                         index_path, key, json_type_name(val));
            goto fail;
        }
        const char *shard = json_string_value(val);
        if (!safe_shard_name(shard)) {
            st = lv_fail(err, LV_ERR_FORMAT,
                         "%s: weight_map[\"%s\"]: shard \"%s\" is not a file name inside the "
                         "index's directory",
                         index_path, key, shard);
            goto fail;
        }
        shards[n_shards++] = shard;
    }
    /* Distinct shards, in name order (model-00001-of-... first). */
    qsort(shards, n_shards, sizeof *shards, str_cmp);
    size_t u = 0;
    for (size_t i = 0; i < n_shards; i++)
        if (u == 0 || strcmp(shards[u - 1], shards[i]) != 0) shards[u++] = shards[i];
    n_shards = u;

    char dir[4096], path[4096];
    if ((st = dir_of(index_path, dir, sizeof dir, err)) != LV_OK) goto fail;
    for (size_t i = 0; i < n_shards; i++) {
        if ((st = lv_path_join(path, sizeof path, dir, shards[i], err)) != LV_OK) goto fail;
        if (!lv_is_file(path)) {
            const char *holds = "?";
            json_object_foreach(wm, key, val) {
                if (strcmp(json_string_value(val), shards[i]) == 0) {
                    holds = key;
                    break;
                }
            }
            st = lv_fail(err, LV_ERR_IO,
                         "%s: shard file %s is missing (it should hold tensor '%s'; looked for %s)",
                         index_path, shards[i], holds, path);
            goto fail;
        }
        if ((st = add_file(s, path, err)) != LV_OK) goto fail;
    }
    if ((st = build_index(s, err)) != LV_OK) goto fail;

    /* Every listed tensor must be in the shard the index says. */
    json_object_foreach(wm, key, val) {
        size_t nc = tn_canonical_len(key);
        char small[512], *canon = nc < sizeof small ? small : malloc(nc + 1);
        if (!canon) {
            st = nomem(err, index_path);
            goto fail;
        }
        tn_canonical(key, canon, nc + 1);
        const st_tensor *t = st_find(s, canon);
        if (canon != small) free(canon);
        if ((st = lv_path_join(path, sizeof path, dir, json_string_value(val), err)) != LV_OK)
            goto fail;
        if (!t || strcmp(t->file_name, path) != 0) {
            st = lv_fail(err, LV_ERR_FORMAT,
                         "%s: index lists tensor '%s' in %s, but that file has no such tensor%s%s",
                         index_path, key, json_string_value(val), t ? "; it is in " : "",
                         t ? t->file_name : "");
            goto fail;
        }
    }
fail:
    free(shards);
    json_decref(root);
    free(text);
    return st;
}

/* ---- directories ------------------------------------------------------ */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* No index and no model.safetensors: every *.safetensors file, by name. */
static lv_status open_glob(st_set *s, const char *dir, lv_err *err) {
    DIR *d = opendir(dir);
    if (!d) return lv_fail(err, LV_ERR_IO, "%s: cannot list directory", dir);
    char **names = NULL;
    size_t n = 0, cap = 0;
    lv_status st = LV_OK;
    char path[4096];
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!ends_with(e->d_name, ".safetensors") || e->d_name[0] == '.') continue;
        if ((st = lv_path_join(path, sizeof path, dir, e->d_name, err)) != LV_OK) goto fail;
        if (!lv_is_file(path)) continue;
        if (n == cap) {
            size_t nc = cap ? 2 * cap : 8;
            char **p = realloc(names, nc * sizeof *p);
            if (!p) {
                st = nomem(err, dir);
                goto fail;
            }
            names = p;
            cap = nc;
        }
        if (!(names[n] = strdup(e->d_name))) {
            st = nomem(err, dir);
            goto fail;
        }
        n++;
    }
    if (n == 0) {
        st = lv_fail(err, LV_ERR_IO,
                     "%s: no model.safetensors.index.json, model.safetensors or *.safetensors file",
                     dir);
        goto fail;
    }
    qsort(names, n, sizeof *names, str_cmp);
    for (size_t i = 0; i < n; i++) {
        if ((st = lv_path_join(path, sizeof path, dir, names[i], err)) != LV_OK) goto fail;
        if ((st = add_file(s, path, err)) != LV_OK) goto fail;
    }
    st = build_index(s, err);
fail:
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    closedir(d);
    return st;
}

lv_status st_open(const char *path, st_set **out, lv_err *err) {
    *out = NULL;
    st_set *s = calloc(1, sizeof *s);
    if (!s) return nomem(err, path);
    lv_status st;
    char p[4096];
    if (lv_is_dir(path)) {
        if ((st = lv_path_join(p, sizeof p, path, "model.safetensors.index.json", err)) != LV_OK)
            goto fail;
        if (lv_is_file(p)) {
            st = open_index(s, p, err);
            goto done;
        }
        if ((st = lv_path_join(p, sizeof p, path, "model.safetensors", err)) != LV_OK) goto fail;
        if (lv_is_file(p)) {
            if ((st = add_file(s, p, err)) == LV_OK) st = build_index(s, err);
            goto done;
        }
        st = open_glob(s, path, err);
    } else if (ends_with(path, ".json")) {
        st = open_index(s, path, err);
    } else {
        if ((st = add_file(s, path, err)) == LV_OK) st = build_index(s, err);
    }
done:
    if (st != LV_OK) goto fail;
    *out = s;
    return LV_OK;
fail:
    st_close(s);
    return st;
}

/* ---- sets built in memory ------------------------------------------------- */

lv_status st_set_new(st_set **out, lv_err *err) {
    *out = calloc(1, sizeof **out);
    return *out ? LV_OK : nomem(err, "tensor set");
}

lv_status st_set_own(st_set *s, void *p, void (*free_fn)(void *), lv_err *err) {
    if (s->n_owned == s->cap_owned) {
        size_t cap = s->cap_owned ? 2 * s->cap_owned : 16;
        struct st_owned *o = realloc(s->owned, cap * sizeof *o);
        if (!o) {
            free_fn(p);
            return nomem(err, "tensor set");
        }
        s->owned = o;
        s->cap_owned = cap;
    }
    s->owned[s->n_owned].p = p;
    s->owned[s->n_owned].free_fn = free_fn;
    s->n_owned++;
    return LV_OK;
}

/* The file entry named file_name (added once, unmapped: its lv_map is zero). */
static lv_status file_entry(st_set *s, const char *file_name, const char **out, lv_err *err) {
    for (size_t i = s->n_files; i-- > 0;)
        if (strcmp(s->files[i].path, file_name) == 0) {
            *out = s->files[i].path;
            return LV_OK;
        }
    lv_status st = push_file(s, file_name, err);
    if (st) return st;
    *out = s->files[s->n_files - 1].path;
    return LV_OK;
}

lv_status st_set_add(st_set *s, const char *name, const char *file_name, lv_dtype dtype, int n_dims,
                     const int64_t *shape, const void *data, void *owned, lv_err *err) {
    lv_status st;
    if (owned && (st = st_set_own(s, owned, free, err))) return st;
    if (n_dims < 0 || n_dims > ST_MAX_DIMS)
        return lv_fail(err, LV_ERR_ARG, "%s: tensor '%s': %d dims (max %d)", file_name, name,
                       n_dims, ST_MAX_DIMS);
    int64_t n = 1;
    for (int i = 0; i < n_dims; i++) {
        if (shape[i] < 0 || (shape[i] && n > INT64_MAX / shape[i]))
            return lv_fail(err, LV_ERR_ARG, "%s: tensor '%s': bad shape", file_name, name);
        n *= shape[i];
    }
    int be, bb;
    size_t nbytes;
    if (dtype_block(dtype, &be, &bb)) {
        int64_t row = n_dims ? shape[n_dims - 1] : 1;
        if (row % be)
            return lv_fail(err, LV_ERR_ARG, "%s: tensor '%s': row of %lld is not whole %s blocks",
                           file_name, name, (long long)row, dtype_name(dtype));
        nbytes = (size_t)(n / be) * (size_t)bb;
    } else {
        nbytes = (size_t)n * dtype_size(dtype);
    }
    if (st_find(s, name))
        return lv_fail(err, LV_ERR_FORMAT, "%s: duplicate tensor '%s'", file_name, name);
    const char *file;
    if ((st = file_entry(s, file_name, &file, err))) return st;
    st_tensor *t;
    if ((st = push_tensor(s, file, name, &t, err))) return st;
    t->dtype = dtype;
    t->n_dims = n_dims;
    for (int i = 0; i < n_dims; i++) t->shape[i] = shape[i];
    t->n_elems = n;
    t->data = data;
    t->nbytes = nbytes;
    if (s->n_slots >= 2 * s->n_tensors) {
        size_t mask = s->n_slots - 1, i = (size_t)hash_name(t->name) & mask;
        while (s->slots[i] >= 0) i = (i + 1) & mask;
        s->slots[i] = (int32_t)(s->n_tensors - 1);
        return LV_OK;
    }
    free(s->slots);
    s->slots = NULL;
    s->n_slots = 0;
    if ((st = build_index(s, err))) {
        s->n_tensors--; /* drop it again: names are checked unique above */
        free((void *)t->name);
        return st;
    }
    return LV_OK;
}
