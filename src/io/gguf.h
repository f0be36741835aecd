/*
 * gguf.h - llama.cpp's GGUF container (v2/v3): a strict, memory-mapped
 * reader and a streaming writer.
 *
 * Reading:
 *     gguf *g;
 *     if (gguf_open("text.gguf", &g, &err) != LV_OK) ...
 *     int64_t n_layers;
 *     gguf_get_int(g, "llama.block_count", &n_layers, NULL, &err);   // required key
 *     const gguf_tensor *t = gguf_find_tensor(g, "blk.0.attn_q.weight");
 *     ... t->data (inside the mapping), t->ne[0] (fastest), t->type (ggml id) ...
 *     gguf_close(g);
 *
 * Writing (tensor infos first, then the bytes of each tensor in order):
 *     gguf_writer *w = gguf_writer_new();
 *     gguf_w_str(w, "general.architecture", "llama"); ...
 *     gguf_w_tensor(w, "token_embd.weight", 2, ne, GGML_F16);   ...
 *     gguf_w_begin(w, "out/text.gguf", &err);      // writes out/text.gguf.tmp
 *     gguf_w_data(w, bytes, nbytes, &err);         // once per tensor, in order
 *     gguf_w_finish(w, &err);                      // renames .tmp onto the path
 *     gguf_writer_free(w);                         // unfinished: the .tmp is removed
 *
 * The layout and every rule the reader enforces are described at the top of
 * gguf.c (shared/spec/formats.md §4). A gguf is immutable once opened.
 */
#ifndef LV_GGUF_H
#define LV_GGUF_H

#include "base/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GGUF_MAX_DIMS          4
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_NAME          64 /* tensor names are shorter (GGML_MAX_NAME) */

/* Metadata value types (gguf.h `enum gguf_type`). */
typedef enum {
    GGUF_UINT8 = 0,
    GGUF_INT8 = 1,
    GGUF_UINT16 = 2,
    GGUF_INT16 = 3,
    GGUF_UINT32 = 4,
    GGUF_INT32 = 5,
    GGUF_FLOAT32 = 6,
    GGUF_BOOL = 7,
    GGUF_STRING = 8,
    GGUF_ARRAY = 9,
    GGUF_UINT64 = 10,
    GGUF_INT64 = 11,
    GGUF_FLOAT64 = 12,
    GGUF_TYPE_COUNT
} gguf_type;

/* ggml tensor types this code names (formats.md §4.3). */
enum {
    GGML_F32 = 0,
    GGML_F16 = 1,
    GGML_Q4_0 = 2,
    GGML_Q4_1 = 3,
    GGML_Q8_0 = 8,
    GGML_Q4_K = 12,
    GGML_Q5_K = 13,
    GGML_Q6_K = 14,
    GGML_BF16 = 30,
};

/* Name of a ggml type id ("Q4_K"), "?" if unknown; block elements and bytes
 * (false for an id whose layout this reader does not know). */
const char *ggml_type_name(uint32_t type);
bool ggml_type_block(uint32_t type, int *elems, int *bytes);

typedef struct {
    const char *key;         /* NUL-terminated copy */
    gguf_type type;          /* GGUF_ARRAY for arrays */
    gguf_type arr_type;      /* element type of an array */
    uint64_t n;              /* array elements (1 for a scalar) */
    const uint8_t *data;     /* scalar value / first array element, in the mapping */
    size_t size;             /* bytes of the value (all elements) */
    const uint64_t *str_off; /* string arrays: (n) offset of each u64 length from data */
} gguf_kv;

typedef struct {
    const char *name;          /* NUL-terminated copy */
    int n_dims;                /* 1..4 */
    int64_t ne[GGUF_MAX_DIMS]; /* fastest-varying first; missing dims are 1 */
    uint32_t type;             /* ggml type id */
    uint64_t offset;           /* relative to the data section */
    size_t nbytes;             /* from type and ne */
    const void *data;          /* inside the mapping (aligned to the file's alignment) */
} gguf_tensor;

typedef struct gguf gguf;

/* Opens and validates path (mapped read-only). Errors name the file:
 * LV_ERR_IO (cannot read), LV_ERR_FORMAT (any rule of gguf.c),
 * LV_ERR_UNSUPPORTED (version, unknown tensor type: names tensor and id).
 * On success the caller releases *out with gguf_close. */
lv_status gguf_open(const char *path, gguf **out, lv_err *err);
/* Same over bytes in memory (borrowed: they must outlive the gguf). */
lv_status gguf_open_mem(const void *data, size_t size, const char *name, gguf **out, lv_err *err);
void gguf_close(gguf *g); /* NULL is a no-op */

const char *gguf_path(const gguf *g);
uint32_t gguf_version(const gguf *g);
uint32_t gguf_alignment(const gguf *g);
/* The whole mapping (for madvise of pages a loader copied out). */
const uint8_t *gguf_base(const gguf *g, size_t *size);

size_t gguf_kv_count(const gguf *g);
const gguf_kv *gguf_kv_at(const gguf *g, size_t i);
const gguf_kv *gguf_find_kv(const gguf *g, const char *key); /* NULL if absent */

size_t gguf_tensor_count(const gguf *g);
const gguf_tensor *gguf_tensor_at(const gguf *g, size_t i); /* in file (info) order */
const gguf_tensor *gguf_find_tensor(const gguf *g, const char *name);

/* Typed lookups. found == NULL: the key is required (absent → LV_ERR_FORMAT
 * naming file and key); else *found says whether it exists (LV_OK either
 * way). A wrong value type is LV_ERR_FORMAT naming expected and actual.
 * Integers: any integer type (bool too); floats: FLOAT32 or FLOAT64. */
lv_status gguf_get_int(const gguf *g, const char *key, int64_t *out, bool *found, lv_err *err);
lv_status gguf_get_float(const gguf *g, const char *key, double *out, bool *found, lv_err *err);
lv_status gguf_get_bool(const gguf *g, const char *key, bool *out, bool *found, lv_err *err);
/* A STRING value: *s points into the mapping (NOT NUL-terminated), *len bytes. */
lv_status gguf_get_str(const gguf *g, const char *key, const char **s, size_t *len, bool *found,
                       lv_err *err);
/* An ARRAY: *kv is the record (absent: NULL when found != NULL). */
lv_status gguf_get_arr(const gguf *g, const char *key, gguf_kv const **kv, bool *found,
                       lv_err *err);

/* Array elements (i < kv->n; the element type must match the accessor's
 * family: integer, float, string; checked by the caller via arr_type). */
bool gguf_arr_is_int(const gguf_kv *kv);
bool gguf_arr_is_float(const gguf_kv *kv);
int64_t gguf_arr_int(const gguf_kv *kv, uint64_t i);
double gguf_arr_float(const gguf_kv *kv, uint64_t i);
const char *gguf_arr_str(const gguf_kv *kv, uint64_t i, size_t *len);

/* ---- writer ------------------------------------------------------------ */

typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_new(void); /* NULL when out of memory */
/* Metadata (in call order). Strings are copied. An allocation failure is
 * remembered and reported by gguf_w_begin. */
void gguf_w_str(gguf_writer *w, const char *key, const char *val);
void gguf_w_u32(gguf_writer *w, const char *key, uint32_t val);
void gguf_w_i32(gguf_writer *w, const char *key, int32_t val);
void gguf_w_f32(gguf_writer *w, const char *key, float val);
void gguf_w_bool(gguf_writer *w, const char *key, bool val);
void gguf_w_arr_str(gguf_writer *w, const char *key, const char *const *vals, size_t n);
void gguf_w_arr_f32(gguf_writer *w, const char *key, const float *vals, size_t n);
void gguf_w_arr_i32(gguf_writer *w, const char *key, const int32_t *vals, size_t n);
/* A tensor info (ne fastest first); data follow later with gguf_w_data. */
void gguf_w_tensor(gguf_writer *w, const char *name, int n_dims, const int64_t *ne, uint32_t type);
/* Bytes of the tensors, in order of gguf_w_tensor; nbytes must be the
 * tensor's size. Validates the pending metadata on begin. */
lv_status gguf_w_begin(gguf_writer *w, const char *path, lv_err *err);
lv_status gguf_w_data(gguf_writer *w, const void *data, size_t nbytes, lv_err *err);
lv_status gguf_w_finish(gguf_writer *w, lv_err *err);
/* Frees w; a file begun but not finished is removed (no half-written file). */
void gguf_writer_free(gguf_writer *w);

#endif
