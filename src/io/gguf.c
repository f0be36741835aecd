/*
 * gguf.c - the GGUF reader and writer (see gguf.h for the API).
 *
 * FORMAT (ggml-org/llama.cpp ggml/include/gguf.h layout comment,
 * ggml/src/gguf.cpp gguf_init_from_reader / gguf_write_out;
 * shared/spec/formats.md §4.1-§4.4). Little-endian throughout.
 *
 *   offset  size  content
 *   0       4     magic "GGUF"
 *   4       4     version u32: 2 or 3 (same layout; 1 used u32 counts)
 *   8       8     n_tensors i64
 *   16      8     n_kv i64
 *   24      ...   n_kv records:  key (string) · type (i32) · value
 *                   string = u64 length · bytes (no NUL)
 *                   value  = scalar | string | ARRAY: elem type (i32) · count (u64) · elements
 *           ...   n_tensors infos: name (string) · n_dims (u32) · ne[n_dims] (i64, fastest
 *                   first) · type (i32, ggml id) · offset (u64, from the data section)
 *           pad   zeros up to a multiple of ALIGN (from file offset 0)
 *           ...   data section: each tensor at data_start + offset, padded to ALIGN
 *
 * ALIGN is general.alignment (UINT32, a nonzero power of two) or 32.
 *
 * RULES ENFORCED (LV_ERR_FORMAT naming the file unless said otherwise):
 *   - magic; version 2 or 3 (0, 1, > 3 and byte-swapped files:
 *     LV_ERR_UNSUPPORTED); the header is not truncated;
 *   - n_kv and n_tensors are >= 0 and no larger than the file could hold
 *     (each record needs a minimum number of bytes);
 *   - every string and array length fits in the rest of the file; keys and
 *     names are non-empty and hold no NUL byte; tensor names are shorter
 *     than GGUF_MAX_NAME; value types are known; arrays do not nest;
 *   - no key and no tensor name appears twice;
 *   - n_dims is 1..4, every ne >= 0, ne[0] is a multiple of the type's
 *     block, the byte size does not overflow; an unknown ggml type is
 *     LV_ERR_UNSUPPORTED naming the tensor and the type id;
 *   - offsets are multiples of ALIGN; every tensor lies inside the file;
 *     no two tensors overlap.
 * Unlike current llama.cpp, tensors need not be stored in info order nor
 * packed without gaps: the format does not require it.
 *
 * The writer emits what gguf_write_out emits: the header, the KV records in
 * call order, the tensor infos with offsets packed in order (each padded to
 * ALIGN = 32), zero padding, then the data. It writes "<path>.tmp" and
 * renames it onto path only once every tensor has been written and flushed.
 */
#include "gguf.h"

#include "base/buf.h"
#include "base/file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- ggml types ---------------------------------------------------------- */

typedef struct {
    uint32_t id;
    const char *name;
    int elems, bytes; /* per block */
} ggml_type_info;

static const ggml_type_info GGML_TYPES[] = {
    {0, "F32", 1, 4},       {1, "F16", 1, 2},       {2, "Q4_0", 32, 18},    {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},    {7, "Q5_1", 32, 24},    {8, "Q8_0", 32, 34},    {9, "Q8_1", 32, 36},
    {10, "Q2_K", 256, 84},  {11, "Q3_K", 256, 110}, {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210}, {15, "Q8_K", 256, 292}, {24, "I8", 1, 1},       {25, "I16", 1, 2},
    {26, "I32", 1, 4},      {27, "I64", 1, 8},      {28, "F64", 1, 8},      {30, "BF16", 1, 2},
};

static const ggml_type_info *type_info(uint32_t id) {
    for (size_t i = 0; i < LV_ARRAY_LEN(GGML_TYPES); i++)
        if (GGML_TYPES[i].id == id) return &GGML_TYPES[i];
    return NULL;
}

const char *ggml_type_name(uint32_t type) {
    static const char *iq[] = {"IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
                               "IQ4_NL",  "IQ3_S",  "IQ2_S",   "IQ4_XS"};
    const ggml_type_info *t = type_info(type);
    if (t) return t->name;
    if (type >= 16 && type <= 23) return iq[type - 16];
    if (type == 29) return "IQ1_M";
    if (type == 34) return "TQ1_0";
    if (type == 35) return "TQ2_0";
    if (type == 39) return "MXFP4";
    return "?";
}

bool ggml_type_block(uint32_t type, int *elems, int *bytes) {
    const ggml_type_info *t = type_info(type);
    if (!t) return false;
    if (elems) *elems = t->elems;
    if (bytes) *bytes = t->bytes;
    return true;
}

static size_t value_size(gguf_type t) {
    switch (t) {
        case GGUF_UINT8:
        case GGUF_INT8:
        case GGUF_BOOL:
            return 1;
        case GGUF_UINT16:
        case GGUF_INT16:
            return 2;
        case GGUF_UINT32:
        case GGUF_INT32:
        case GGUF_FLOAT32:
            return 4;
        case GGUF_UINT64:
        case GGUF_INT64:
        case GGUF_FLOAT64:
            return 8;
        default:
            return 0; /* STRING, ARRAY: variable */
    }
}

static const char *type_str(gguf_type t) {
    static const char *names[] = {"UINT8",  "INT8",    "UINT16", "INT16",  "UINT32",
                                  "INT32",  "FLOAT32", "BOOL",   "STRING", "ARRAY",
                                  "UINT64", "INT64",   "FLOAT64"};
    return (unsigned)t < GGUF_TYPE_COUNT ? names[t] : "?";
}

/* ---- the reader ---------------------------------------------------------- */

struct gguf {
    char *path;
    lv_map map;          /* zeroed for gguf_open_mem */
    const uint8_t *base; /* file bytes */
    size_t size;
    uint32_t version, alignment;
    gguf_kv *kv;
    size_t n_kv;
    gguf_tensor *tensors;
    size_t n_tensors;
    int32_t *kv_slots, *t_slots; /* open-addressing hashes of keys / names: index or -1 */
    size_t n_kv_slots, n_t_slots;
};

typedef struct {
    const uint8_t *p;
    size_t pos, size;
    const char *file;
    lv_err *err;
} cursor;

static uint64_t le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static lv_status need(cursor *c, size_t n, const char *what) {
    if (c->size - c->pos < n)
        return lv_fail(c->err, LV_ERR_FORMAT,
                       "%s: truncated: %s needs %zu bytes at offset %zu, the file has %zu", c->file,
                       what, n, c->pos, c->size - c->pos);
    return LV_OK;
}

static lv_status rd_u32(cursor *c, uint32_t *v, const char *what) {
    lv_status st = need(c, 4, what);
    if (st) return st;
    *v = (uint32_t)le(c->p + c->pos, 4);
    c->pos += 4;
    return LV_OK;
}

static lv_status rd_u64(cursor *c, uint64_t *v, const char *what) {
    lv_status st = need(c, 8, what);
    if (st) return st;
    *v = le(c->p + c->pos, 8);
    c->pos += 8;
    return LV_OK;
}

/* A string: *s into the mapping, *len bytes (checked against the file). */
static lv_status rd_str(cursor *c, const uint8_t **s, size_t *len, const char *what) {
    uint64_t n;
    lv_status st = rd_u64(c, &n, what);
    if (st) return st;
    if (n > c->size - c->pos)
        return lv_fail(c->err, LV_ERR_FORMAT,
                       "%s: %s: string length %llu at offset %zu runs past the end of the file "
                       "(%zu bytes left)",
                       c->file, what, (unsigned long long)n, c->pos - 8, c->size - c->pos);
    *s = c->p + c->pos;
    *len = (size_t)n;
    c->pos += (size_t)n;
    return LV_OK;
}

/* A key or tensor name copied NUL-terminated; empty or NUL-holding is an error. */
static lv_status rd_name(cursor *c, char **out, const char *what) {
    const uint8_t *s = NULL;
    size_t n = 0;
    lv_status st = rd_str(c, &s, &n, what);
    if (st) return st;
    if (n == 0) return lv_fail(c->err, LV_ERR_FORMAT, "%s: empty %s", c->file, what);
    if (memchr(s, 0, n))
        return lv_fail(c->err, LV_ERR_FORMAT, "%s: %s holds a NUL byte", c->file, what);
    *out = malloc(n + 1);
    if (!*out) return lv_fail(c->err, LV_ERR_NOMEM, "%s: out of memory", c->file);
    memcpy(*out, s, n);
    (*out)[n] = 0;
    return LV_OK;
}

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/* Builds an open-addressing index over n names (name_at(i)); a duplicate is
 * reported as "duplicate <what> 'x'". */
static lv_status build_hash(const gguf *g, size_t n, const char *(*name_at)(const gguf *, size_t),
                            int32_t **slots, size_t *n_slots, const char *what, lv_err *err) {
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    *slots = malloc(cap * sizeof **slots);
    if (!*slots) return lv_fail(err, LV_ERR_NOMEM, "%s: out of memory", g->path);
    memset(*slots, 0xff, cap * sizeof **slots);
    *n_slots = cap;
    for (size_t i = 0; i < n; i++) {
        const char *s = name_at(g, i);
        size_t k = (size_t)hash_str(s) & (cap - 1);
        for (; (*slots)[k] >= 0; k = (k + 1) & (cap - 1))
            if (strcmp(name_at(g, (size_t)(*slots)[k]), s) == 0)
                return lv_fail(err, LV_ERR_FORMAT, "%s: duplicate %s '%s'", g->path, what, s);
        (*slots)[k] = (int32_t)i;
    }
    return LV_OK;
}

static const char *kv_name(const gguf *g, size_t i) {
    return g->kv[i].key;
}
static const char *t_name(const gguf *g, size_t i) {
    return g->tensors[i].name;
}

static int32_t hash_find(const int32_t *slots, size_t n_slots, const gguf *g,
                         const char *(*name_at)(const gguf *, size_t), const char *s) {
    if (!n_slots) return -1;
    for (size_t k = (size_t)hash_str(s) & (n_slots - 1);; k = (k + 1) & (n_slots - 1)) {
        if (slots[k] < 0) return -1;
        if (strcmp(name_at(g, (size_t)slots[k]), s) == 0) return slots[k];
    }
}

/* The value of one KV record (type already read). */
static lv_status rd_value(cursor *c, gguf_kv *kv) {
    lv_status st;
    if (kv->type == GGUF_ARRAY) {
        uint32_t et;
        uint64_t n;
        if ((st = rd_u32(c, &et, "array type")) || (st = rd_u64(c, &n, "array length"))) return st;
        kv->arr_type = (gguf_type)et;
        kv->n = n;
        if (et == GGUF_ARRAY)
            return lv_fail(c->err, LV_ERR_FORMAT, "%s: key '%s': nested arrays are not allowed",
                           c->file, kv->key);
        if (et >= GGUF_TYPE_COUNT)
            return lv_fail(c->err, LV_ERR_FORMAT, "%s: key '%s': unknown array element type %u",
                           c->file, kv->key, et);
        size_t left = c->size - c->pos;
        kv->data = c->p + c->pos;
        if (et == GGUF_STRING) {
            if (n > left / 8)
                return lv_fail(c->err, LV_ERR_FORMAT,
                               "%s: key '%s': %llu strings cannot fit in the %zu bytes left",
                               c->file, kv->key, (unsigned long long)n, left);
            uint64_t *off = malloc((n ? n : 1) * sizeof *off);
            if (!off) return lv_fail(c->err, LV_ERR_NOMEM, "%s: out of memory", c->file);
            kv->str_off = off;
            size_t start = c->pos;
            for (uint64_t i = 0; i < n; i++) {
                off[i] = c->pos - start;
                const uint8_t *s;
                size_t len;
                if ((st = rd_str(c, &s, &len, kv->key))) return st;
            }
            kv->size = c->pos - start;
            return LV_OK;
        }
        size_t es = value_size((gguf_type)et);
        if (n > left / es)
            return lv_fail(c->err, LV_ERR_FORMAT,
                           "%s: key '%s': array of %llu %s runs past the end of the file", c->file,
                           kv->key, (unsigned long long)n, type_str((gguf_type)et));
        kv->size = (size_t)n * es;
        c->pos += kv->size;
        return LV_OK;
    }
    kv->n = 1;
    if (kv->type == GGUF_STRING) {
        const uint8_t *s;
        size_t len;
        size_t at = c->pos;
        if ((st = rd_str(c, &s, &len, kv->key))) return st;
        kv->data = c->p + at; /* the u64 length, like an array element */
        kv->size = len + 8;
        return LV_OK;
    }
    if (kv->type >= GGUF_TYPE_COUNT)
        return lv_fail(c->err, LV_ERR_FORMAT, "%s: key '%s': unknown value type %u", c->file,
                       kv->key, (unsigned)kv->type);
    size_t es = value_size(kv->type);
    if ((st = need(c, es, kv->key))) return st;
    kv->data = c->p + c->pos;
    kv->size = es;
    c->pos += es;
    return LV_OK;
}

static lv_status read_alignment(gguf *g, lv_err *err) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *kv = gguf_find_kv(g, "general.alignment");
    if (!kv) return LV_OK;
    if (kv->type != GGUF_UINT32)
        return lv_fail(err, LV_ERR_FORMAT, "%s: general.alignment must be UINT32, got %s", g->path,
                       type_str(kv->type));
    uint32_t a = (uint32_t)le(kv->data, 4);
    if (a == 0 || (a & (a - 1)))
        return lv_fail(err, LV_ERR_FORMAT, "%s: general.alignment %u is not a nonzero power of two",
                       g->path, a);
    g->alignment = a;
    return LV_OK;
}

static lv_status rd_tensor_info(cursor *c, gguf_tensor *t) {
    lv_status st;
    char *name = NULL;
    if ((st = rd_name(c, &name, "tensor name"))) return st;
    t->name = name;
    if (strlen(name) >= GGUF_MAX_NAME)
        return lv_fail(c->err, LV_ERR_FORMAT, "%s: tensor name '%.40s...' is %zu bytes (max %d)",
                       c->file, name, strlen(name), GGUF_MAX_NAME - 1);
    uint32_t nd, type;
    if ((st = rd_u32(c, &nd, name))) return st;
    if (nd < 1 || nd > GGUF_MAX_DIMS)
        return lv_fail(c->err, LV_ERR_FORMAT, "%s: tensor '%s': n_dims %u (expected 1..%d)",
                       c->file, name, nd, GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    for (int i = 0; i < GGUF_MAX_DIMS; i++) t->ne[i] = 1;
    for (uint32_t i = 0; i < nd; i++) {
        uint64_t v;
        if ((st = rd_u64(c, &v, name))) return st;
        if ((int64_t)v < 0)
            return lv_fail(c->err, LV_ERR_FORMAT, "%s: tensor '%s': ne[%u] = %lld is negative",
                           c->file, name, i, (long long)(int64_t)v);
        t->ne[i] = (int64_t)v;
    }
    if ((st = rd_u32(c, &type, name)) || (st = rd_u64(c, &t->offset, name))) return st;
    t->type = type;
    int be, bb;
    if (!ggml_type_block(type, &be, &bb))
        return lv_fail(c->err, LV_ERR_UNSUPPORTED,
                       "%s: tensor '%s': ggml type %u (%s) is not supported", c->file, name, type,
                       ggml_type_name(type));
    if (t->ne[0] % be)
        return lv_fail(c->err, LV_ERR_FORMAT,
                       "%s: tensor '%s': ne[0] = %lld is not a multiple of the %s block (%d)",
                       c->file, name, (long long)t->ne[0], ggml_type_name(type), be);
    /* nbytes = ne0/be·bb · ne1 · ne2 · ne3, every product checked */
    uint64_t n = (uint64_t)(t->ne[0] / be) * (uint64_t)bb; /* ne0 < 2^63, bb < 300: check */
    if (t->ne[0] / be != 0 && n / (uint64_t)bb != (uint64_t)(t->ne[0] / be)) n = UINT64_MAX;
    for (int i = 1; i < GGUF_MAX_DIMS && n != UINT64_MAX; i++) {
        uint64_t d = (uint64_t)t->ne[i];
        if (d && n > UINT64_MAX / d)
            n = UINT64_MAX;
        else
            n *= d;
    }
    if (n == UINT64_MAX || n > c->size)
        return lv_fail(c->err, LV_ERR_FORMAT,
                       "%s: tensor '%s': %s [%lld, %lld, %lld, %lld] is larger than the file",
                       c->file, name, ggml_type_name(type), (long long)t->ne[0],
                       (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3]);
    t->nbytes = (size_t)n;
    return LV_OK;
}

static int by_offset(const void *a, const void *b) {
    const gguf_tensor *x = *(const gguf_tensor *const *)a, *y = *(const gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset ? 1 : 0;
}

/* Offsets aligned, inside the file, no overlaps. */
static lv_status place_tensors(gguf *g, size_t data_start, lv_err *err) {
    if (g->n_tensors == 0) return LV_OK;
    if (data_start > g->size)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: truncated: the data section starts at %zu, the file has %zu bytes",
                       g->path, data_start, g->size);
    size_t avail = g->size - data_start;
    for (size_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment)
            return lv_fail(err, LV_ERR_FORMAT,
                           "%s: tensor '%s': offset %llu is not a multiple of the alignment %u",
                           g->path, t->name, (unsigned long long)t->offset, g->alignment);
        if (t->offset > avail || t->nbytes > avail - t->offset)
            return lv_fail(err, LV_ERR_FORMAT,
                           "%s: tensor '%s': bytes [%llu, %llu) of the data section run past its "
                           "end (%zu bytes)",
                           g->path, t->name, (unsigned long long)t->offset,
                           (unsigned long long)(t->offset + t->nbytes), avail);
        t->data = g->base + data_start + t->offset;
    }
    gguf_tensor **ord = malloc(g->n_tensors * sizeof *ord);
    if (!ord) return lv_fail(err, LV_ERR_NOMEM, "%s: out of memory", g->path);
    for (size_t i = 0; i < g->n_tensors; i++) ord[i] = &g->tensors[i];
    qsort(ord, g->n_tensors, sizeof *ord, by_offset);
    lv_status st = LV_OK;
    for (size_t i = 1; i < g->n_tensors; i++)
        if (ord[i - 1]->offset + ord[i - 1]->nbytes > ord[i]->offset) {
            st = lv_fail(err, LV_ERR_FORMAT,
                         "%s: tensors '%s' [%llu, %llu) and '%s' (at %llu) overlap", g->path,
                         ord[i - 1]->name, (unsigned long long)ord[i - 1]->offset,
                         (unsigned long long)(ord[i - 1]->offset + ord[i - 1]->nbytes),
                         ord[i]->name, (unsigned long long)ord[i]->offset);
            break;
        }
    free(ord);
    return st;
}

static lv_status parse(gguf *g, lv_err *err) {
    cursor c = {g->base, 0, g->size, g->path, err};
    lv_status st;
    if (g->size < 4 || memcmp(g->base, "GGUF", 4) != 0)
        return lv_fail(err, LV_ERR_FORMAT, "%s: not a GGUF file (magic \"GGUF\" missing)", g->path);
    c.pos = 4;
    uint64_t nt, nkv;
    if ((st = rd_u32(&c, &g->version, "version"))) return st;
    if ((g->version & 0xFFFF) == 0 && g->version)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "%s: GGUF version 0x%08x: a big-endian file (only little-endian is "
                       "supported)",
                       g->path, g->version);
    if (g->version < 2 || g->version > 3)
        return lv_fail(err, LV_ERR_UNSUPPORTED, "%s: GGUF version %u (expected 2 or 3)", g->path,
                       g->version);
    if ((st = rd_u64(&c, &nt, "tensor count")) || (st = rd_u64(&c, &nkv, "metadata count")))
        return st;
    /* a KV record takes >= 13 bytes (key length, a 1-byte key, type... ), a tensor info >= 33 */
    if ((int64_t)nkv < 0 || nkv > (g->size - c.pos) / 13)
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: %lld metadata records cannot fit in a file of %zu bytes", g->path,
                       (long long)(int64_t)nkv, g->size);
    if ((int64_t)nt < 0 || nt > (g->size - c.pos) / 33)
        return lv_fail(err, LV_ERR_FORMAT, "%s: %lld tensors cannot fit in a file of %zu bytes",
                       g->path, (long long)(int64_t)nt, g->size);
    g->kv = calloc(nkv ? nkv : 1, sizeof *g->kv);
    g->tensors = calloc(nt ? nt : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors) return lv_fail(err, LV_ERR_NOMEM, "%s: out of memory", g->path);
    for (uint64_t i = 0; i < nkv; i++) {
        gguf_kv *kv = &g->kv[i];
        char *key = NULL;
        uint32_t type;
        if ((st = rd_name(&c, &key, "metadata key"))) return st;
        kv->key = key;
        g->n_kv++;
        if ((st = rd_u32(&c, &type, key))) return st;
        kv->type = (gguf_type)type;
        if ((st = rd_value(&c, kv))) return st;
    }
    if ((st = build_hash(g, g->n_kv, kv_name, &g->kv_slots, &g->n_kv_slots, "metadata key", err)))
        return st;
    if ((st = read_alignment(g, err))) return st;
    for (uint64_t i = 0; i < nt; i++) {
        st = rd_tensor_info(&c, &g->tensors[i]);
        if (g->tensors[i].name) g->n_tensors++;
        if (st) return st;
    }
    if ((st = build_hash(g, g->n_tensors, t_name, &g->t_slots, &g->n_t_slots, "tensor", err)))
        return st;
    size_t a = g->alignment, data_start = c.pos + (a - c.pos % a) % a;
    if (data_start < c.pos) data_start = SIZE_MAX; /* cannot overflow with real sizes */
    return place_tensors(g, data_start, err);
}

static lv_status open_common(gguf *g, gguf **out, lv_err *err) {
    lv_status st = parse(g, err);
    if (st) {
        gguf_close(g);
        return st;
    }
    *out = g;
    return LV_OK;
}

lv_status gguf_open_mem(const void *data, size_t size, const char *name, gguf **out, lv_err *err) {
    *out = NULL;
    gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(name ? name : "<memory>"))) {
        free(g);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    }
    g->base = data;
    g->size = size;
    return open_common(g, out, err);
}

lv_status gguf_open(const char *path, gguf **out, lv_err *err) {
    *out = NULL;
    gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(path))) {
        free(g);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    }
    lv_status st = lv_map_file(path, &g->map, err);
    if (st) {
        gguf_close(g);
        return st;
    }
    g->base = g->map.data;
    g->size = g->map.size;
    return open_common(g, out, err);
}

void gguf_close(gguf *g) {
    if (!g) return;
    for (size_t i = 0; i < g->n_kv; i++) {
        free((void *)g->kv[i].key);
        free((void *)g->kv[i].str_off);
    }
    for (size_t i = 0; i < g->n_tensors; i++) free((void *)g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    free(g->kv_slots);
    free(g->t_slots);
    lv_unmap(&g->map);
    free(g->path);
    free(g);
}

const char *gguf_path(const gguf *g) {
    return g->path;
}
uint32_t gguf_version(const gguf *g) {
    return g->version;
}
uint32_t gguf_alignment(const gguf *g) {
    return g->alignment;
}
const uint8_t *gguf_base(const gguf *g, size_t *size) {
    if (size) *size = g->size;
    return g->base;
}
size_t gguf_kv_count(const gguf *g) {
    return g->n_kv;
}
const gguf_kv *gguf_kv_at(const gguf *g, size_t i) {
    return i < g->n_kv ? &g->kv[i] : NULL;
}
const gguf_kv *gguf_find_kv(const gguf *g, const char *key) {
    int32_t i = hash_find(g->kv_slots, g->n_kv_slots, g, kv_name, key);
    return i < 0 ? NULL : &g->kv[i];
}
size_t gguf_tensor_count(const gguf *g) {
    return g->n_tensors;
}
const gguf_tensor *gguf_tensor_at(const gguf *g, size_t i) {
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}
const gguf_tensor *gguf_find_tensor(const gguf *g, const char *name) {
    int32_t i = hash_find(g->t_slots, g->n_t_slots, g, t_name, name);
    return i < 0 ? NULL : &g->tensors[i];
}

/* ---- typed access -------------------------------------------------------- */

static bool is_int_type(gguf_type t) {
    return t == GGUF_UINT8 || t == GGUF_INT8 || t == GGUF_UINT16 || t == GGUF_INT16 ||
           t == GGUF_UINT32 || t == GGUF_INT32 || t == GGUF_UINT64 || t == GGUF_INT64 ||
           t == GGUF_BOOL;
}

static int64_t int_at(gguf_type t, const uint8_t *p) {
    switch (t) {
        case GGUF_UINT8:
        case GGUF_BOOL:
            return p[0];
        case GGUF_INT8:
            return (int8_t)p[0];
        case GGUF_UINT16:
            return (uint16_t)le(p, 2);
        case GGUF_INT16:
            return (int16_t)le(p, 2);
        case GGUF_UINT32:
            return (uint32_t)le(p, 4);
        case GGUF_INT32:
            return (int32_t)le(p, 4);
        default:
            return (int64_t)le(p, 8); /* UINT64 beyond INT64_MAX wraps: callers range-check */
    }
}

static double float_at(gguf_type t, const uint8_t *p) {
    if (t == GGUF_FLOAT32) {
        uint32_t u = (uint32_t)le(p, 4);
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    uint64_t u = le(p, 8);
    double d;
    memcpy(&d, &u, 8);
    return d;
}

/* The record of key with the right type family, or a status. */
static lv_status lookup(const gguf *g, const char *key, bool *found, const gguf_kv **kv,
                        lv_err *err) {
    *kv = gguf_find_kv(g, key);
    if (found) *found = *kv != NULL;
    if (!*kv && !found)
        return lv_fail(err, LV_ERR_FORMAT, "%s: required key '%s' is missing", g->path, key);
    return LV_OK;
}

static lv_status wrong(const gguf *g, const gguf_kv *kv, const char *expected, lv_err *err) {
    return lv_fail(err, LV_ERR_FORMAT, "%s: key '%s': expected %s, got %s%s%s", g->path, kv->key,
                   expected, type_str(kv->type), kv->type == GGUF_ARRAY ? " of " : "",
                   kv->type == GGUF_ARRAY ? type_str(kv->arr_type) : "");
}

lv_status gguf_get_int(const gguf *g, const char *key, int64_t *out, bool *found, lv_err *err) {
    const gguf_kv *kv;
    lv_status st = lookup(g, key, found, &kv, err);
    if (st || !kv) return st;
    if (!is_int_type(kv->type)) return wrong(g, kv, "an integer", err);
    *out = int_at(kv->type, kv->data);
    return LV_OK;
}

lv_status gguf_get_float(const gguf *g, const char *key, double *out, bool *found, lv_err *err) {
    const gguf_kv *kv;
    lv_status st = lookup(g, key, found, &kv, err);
    if (st || !kv) return st;
    if (kv->type != GGUF_FLOAT32 && kv->type != GGUF_FLOAT64) return wrong(g, kv, "a float", err);
    *out = float_at(kv->type, kv->data);
    return LV_OK;
}

lv_status gguf_get_bool(const gguf *g, const char *key, bool *out, bool *found, lv_err *err) {
    const gguf_kv *kv;
    lv_status st = lookup(g, key, found, &kv, err);
    if (st || !kv) return st;
    if (!is_int_type(kv->type)) return wrong(g, kv, "BOOL", err);
    *out = int_at(kv->type, kv->data) != 0;
    return LV_OK;
}

lv_status gguf_get_str(const gguf *g, const char *key, const char **s, size_t *len, bool *found,
                       lv_err *err) {
    const gguf_kv *kv;
    lv_status st = lookup(g, key, found, &kv, err);
    if (st || !kv) return st;
    if (kv->type != GGUF_STRING) return wrong(g, kv, "STRING", err);
    *s = (const char *)kv->data + 8;
    *len = kv->size - 8;
    return LV_OK;
}

lv_status gguf_get_arr(const gguf *g, const char *key, gguf_kv const **out, bool *found,
                       lv_err *err) {
    const gguf_kv *kv;
    lv_status st = lookup(g, key, found, &kv, err);
    *out = NULL;
    if (st || !kv) return st;
    if (kv->type != GGUF_ARRAY) return wrong(g, kv, "an ARRAY", err);
    *out = kv;
    return LV_OK;
}

bool gguf_arr_is_int(const gguf_kv *kv) {
    return kv->type == GGUF_ARRAY && is_int_type(kv->arr_type);
}

bool gguf_arr_is_float(const gguf_kv *kv) {
    return kv->type == GGUF_ARRAY && (kv->arr_type == GGUF_FLOAT32 || kv->arr_type == GGUF_FLOAT64);
}

int64_t gguf_arr_int(const gguf_kv *kv, uint64_t i) {
    return int_at(kv->arr_type, kv->data + i * value_size(kv->arr_type));
}

double gguf_arr_float(const gguf_kv *kv, uint64_t i) {
    return float_at(kv->arr_type, kv->data + i * value_size(kv->arr_type));
}

const char *gguf_arr_str(const gguf_kv *kv, uint64_t i, size_t *len) {
    const uint8_t *p = kv->data + kv->str_off[i];
    *len = (size_t)le(p, 8);
    return (const char *)p + 8;
}

/* ---- the writer ---------------------------------------------------------- */

typedef struct {
    char *name;
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    uint32_t type;
    size_t nbytes;
} w_tensor;

struct gguf_writer {
    lv_buf kv; /* encoded KV records */
    uint64_t n_kv;
    w_tensor *t;
    size_t n_t, cap_t;
    bool oom;      /* an allocation failed while recording: begin reports it */
    char bad[200]; /* a recording error (bad tensor), reported by begin */
    FILE *f;
    char *tmp_path, *path;
    size_t next; /* tensor whose bytes come next */
    bool finished;
};

gguf_writer *gguf_writer_new(void) {
    return calloc(1, sizeof(gguf_writer));
}

static void put(gguf_writer *w, const void *p, size_t n) {
    if (lv_buf_append(&w->kv, p, n)) w->oom = true;
}
static void put_u32(gguf_writer *w, uint32_t v) {
    uint8_t b[4];
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
    put(w, b, 4);
}
static void put_u64(gguf_writer *w, uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    put(w, b, 8);
}
static void put_str(gguf_writer *w, const char *s) {
    size_t n = strlen(s);
    put_u64(w, n);
    put(w, s, n);
}
static void put_key(gguf_writer *w, const char *key, gguf_type t) {
    put_str(w, key);
    put_u32(w, (uint32_t)t);
    w->n_kv++;
}
static void put_f32(gguf_writer *w, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    put_u32(w, u);
}

void gguf_w_str(gguf_writer *w, const char *key, const char *val) {
    put_key(w, key, GGUF_STRING);
    put_str(w, val);
}
void gguf_w_u32(gguf_writer *w, const char *key, uint32_t val) {
    put_key(w, key, GGUF_UINT32);
    put_u32(w, val);
}
void gguf_w_i32(gguf_writer *w, const char *key, int32_t val) {
    put_key(w, key, GGUF_INT32);
    put_u32(w, (uint32_t)val);
}
void gguf_w_f32(gguf_writer *w, const char *key, float val) {
    put_key(w, key, GGUF_FLOAT32);
    put_f32(w, val);
}
void gguf_w_bool(gguf_writer *w, const char *key, bool val) {
    uint8_t b = val ? 1 : 0;
    put_key(w, key, GGUF_BOOL);
    put(w, &b, 1);
}
void gguf_w_arr_str(gguf_writer *w, const char *key, const char *const *vals, size_t n) {
    put_key(w, key, GGUF_ARRAY);
    put_u32(w, GGUF_STRING);
    put_u64(w, n);
    for (size_t i = 0; i < n; i++) put_str(w, vals[i]);
}
void gguf_w_arr_f32(gguf_writer *w, const char *key, const float *vals, size_t n) {
    put_key(w, key, GGUF_ARRAY);
    put_u32(w, GGUF_FLOAT32);
    put_u64(w, n);
    for (size_t i = 0; i < n; i++) put_f32(w, vals[i]);
}
void gguf_w_arr_i32(gguf_writer *w, const char *key, const int32_t *vals, size_t n) {
    put_key(w, key, GGUF_ARRAY);
    put_u32(w, GGUF_INT32);
    put_u64(w, n);
    for (size_t i = 0; i < n; i++) put_u32(w, (uint32_t)vals[i]);
}

void gguf_w_tensor(gguf_writer *w, const char *name, int n_dims, const int64_t *ne, uint32_t type) {
    int be, bb;
    if (w->bad[0]) return;
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS || !ggml_type_block(type, &be, &bb) || ne[0] % be ||
        strlen(name) >= GGUF_MAX_NAME) {
        snprintf(w->bad, sizeof w->bad, "tensor '%s': cannot store %d dims of type %s", name,
                 n_dims, ggml_type_name(type));
        return;
    }
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 64;
        w_tensor *t = realloc(w->t, cap * sizeof *t);
        if (!t) {
            w->oom = true;
            return;
        }
        w->t = t;
        w->cap_t = cap;
    }
    w_tensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) {
        w->oom = true;
        return;
    }
    w->n_t++;
    t->n_dims = n_dims;
    t->type = type;
    size_t n = (size_t)(ne[0] / be) * (size_t)bb;
    for (int i = 0; i < GGUF_MAX_DIMS; i++) {
        t->ne[i] = i < n_dims ? ne[i] : 1;
        if (i) n *= (size_t)t->ne[i];
    }
    t->nbytes = n;
}

static size_t pad_to(size_t n, size_t a) {
    return (a - n % a) % a;
}

static lv_status wr(gguf_writer *w, const void *p, size_t n, lv_err *err) {
    if (n && fwrite(p, 1, n, w->f) != n)
        return lv_fail(err, LV_ERR_IO, "%s: write failed: %s", w->tmp_path, strerror(errno));
    return LV_OK;
}

static lv_status wr_zeros(gguf_writer *w, size_t n, lv_err *err) {
    static const uint8_t z[GGUF_DEFAULT_ALIGNMENT];
    return wr(w, z, n, err);
}

lv_status gguf_w_begin(gguf_writer *w, const char *path, lv_err *err) {
    if (w->bad[0]) return lv_fail(err, LV_ERR_ARG, "%s: %s", path, w->bad);
    if (w->f || w->path) return lv_fail(err, LV_ERR_ARG, "%s: writer already begun", path);
    /* the tensor infos go into the same buffer, after the KV records */
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const w_tensor *t = &w->t[i];
        put_str(w, t->name);
        put_u32(w, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) put_u64(w, (uint64_t)t->ne[d]);
        put_u32(w, t->type);
        put_u64(w, off);
        off += t->nbytes + pad_to(t->nbytes, GGUF_DEFAULT_ALIGNMENT);
    }
    w->path = strdup(path);
    w->tmp_path = malloc(strlen(path) + 5);
    if (w->oom || !w->path || !w->tmp_path)
        return lv_fail(err, LV_ERR_NOMEM, "%s: out of memory", path);
    snprintf(w->tmp_path, strlen(path) + 5, "%s.tmp", path);
    w->f = fopen(w->tmp_path, "wb");
    if (!w->f)
        return lv_fail(err, LV_ERR_IO, "%s: cannot create: %s", w->tmp_path, strerror(errno));
    uint8_t head[24];
    memcpy(head, "GGUF", 4);
    uint64_t fields[3] = {3, w->n_t, w->n_kv};
    for (int i = 0; i < 4; i++) head[4 + i] = (uint8_t)(fields[0] >> (8 * i));
    for (int i = 0; i < 8; i++) head[8 + i] = (uint8_t)(fields[1] >> (8 * i));
    for (int i = 0; i < 8; i++) head[16 + i] = (uint8_t)(fields[2] >> (8 * i));
    lv_status st;
    if ((st = wr(w, head, sizeof head, err)) || (st = wr(w, w->kv.data, w->kv.len, err)) ||
        (st = wr_zeros(w, pad_to(24 + w->kv.len, GGUF_DEFAULT_ALIGNMENT), err)))
        return st;
    lv_buf_free(&w->kv);
    return LV_OK;
}

lv_status gguf_w_data(gguf_writer *w, const void *data, size_t nbytes, lv_err *err) {
    if (!w->f) return lv_fail(err, LV_ERR_ARG, "gguf writer: data before begin");
    if (w->next >= w->n_t)
        return lv_fail(err, LV_ERR_ARG, "%s: more tensor data than the %zu tensors declared",
                       w->path, w->n_t);
    const w_tensor *t = &w->t[w->next];
    if (nbytes != t->nbytes)
        return lv_fail(err, LV_ERR_ARG, "%s: tensor '%s': %zu bytes given, %zu expected", w->path,
                       t->name, nbytes, t->nbytes);
    lv_status st;
    if ((st = wr(w, data, nbytes, err)) ||
        (st = wr_zeros(w, pad_to(nbytes, GGUF_DEFAULT_ALIGNMENT), err)))
        return st;
    w->next++;
    return LV_OK;
}

lv_status gguf_w_finish(gguf_writer *w, lv_err *err) {
    if (!w->f) return lv_fail(err, LV_ERR_ARG, "gguf writer: finish before begin");
    if (w->next != w->n_t)
        return lv_fail(err, LV_ERR_ARG, "%s: %zu of %zu tensors written", w->path, w->next, w->n_t);
    int e = 0; /* the first failure's errno (fclose after a failed flush may change it) */
    if (fflush(w->f) != 0 || fsync(fileno(w->f)) != 0) e = errno;
    if (fclose(w->f) != 0 && !e) e = errno;
    w->f = NULL;
    if (e) return lv_fail(err, LV_ERR_IO, "%s: write failed: %s", w->tmp_path, strerror(e));
    if (rename(w->tmp_path, w->path) != 0)
        return lv_fail(err, LV_ERR_IO, "%s: cannot rename to %s: %s", w->tmp_path, w->path,
                       strerror(errno));
    w->finished = true;
    return LV_OK;
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    if (w->f) fclose(w->f);
    if (w->tmp_path && !w->finished) unlink(w->tmp_path);
    for (size_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->t);
    lv_buf_free(&w->kv);
    free(w->tmp_path);
    free(w->path);
    free(w);
}
