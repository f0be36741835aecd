/*
 * safetensors.h - read-only access to the tensors of a safetensors checkpoint
 * (one file, a sharded set with model.safetensors.index.json, or a model
 * directory), validated strictly and mapped, never copied.
 *
 * Usage:
 *     st_set *w;
 *     lv_err err;
 *     if (st_open("models/llava-v1.6-mistral-7b-hf", &w, &err) != LV_OK) {
 *         fprintf(stderr, "%s\n", err.msg);
 *         ...
 *     }
 *     const st_tensor *t = st_find(w, "language_model.model.norm.weight");
 *     if (t && t->dtype == LV_DTYPE_F16 && t->n_dims == 1) { ... t->data ... }
 *     st_close(w);
 *
 * Names are canonical (tensor_names.h): a file written by transformers
 * 4.52+/5.x ("model.language_model.norm.weight") is found under the same
 * legacy name as a 4.4x or MLX file. The format, and every rule the reader
 * enforces, is described at the top of safetensors.c.
 *
 * An st_set is immutable once opened: any number of threads may read it.
 */
#ifndef LV_SAFETENSORS_H
#define LV_SAFETENSORS_H

#include "base/common.h"
#include "io/dtype.h"

#include <stdbool.h>

#define ST_MAX_DIMS   8                      /* more dims: LV_ERR_UNSUPPORTED */
#define ST_MAX_HEADER (100u * 1000u * 1000u) /* MAX_HEADER_SIZE of the reference reader */

typedef struct st_set st_set;

typedef struct {
    const char *name;           /* canonical name (tensor_names.h) */
    const char *orig_name;      /* the name as the file spells it; equal to name if unchanged */
    const char *file_name;      /* path of the file (shard) holding it, for messages */
    lv_dtype dtype;             /* element type */
    int n_dims;                 /* 0 for a scalar */
    int64_t shape[ST_MAX_DIMS]; /* row-major (slowest first), PyTorch order; unused entries 0 */
    int64_t n_elems;            /* prod(shape); 1 for a scalar, 0 if any dim is 0 */
    const void *data;           /* n_bytes inside the read-only mapping: NOT aligned in general */
    size_t nbytes;              /* n_elems * dtype_size(dtype) */
} st_tensor;

/* Opens a checkpoint. path may be:
 *   - a .safetensors file;
 *   - a model.safetensors.index.json (any *.json): its "weight_map" names the
 *     shards, relative to the index's directory; each is opened once;
 *   - a directory: its model.safetensors.index.json if present, else its
 *     model.safetensors, else every *.safetensors in it (sorted by name; mlx-vlm
 *     also loads them all).
 * Every file is mapped read-only and its header validated (safetensors.c);
 * a violation is LV_ERR_FORMAT (LV_ERR_UNSUPPORTED for > ST_MAX_DIMS dims,
 * LV_ERR_IO for a file that cannot be read, LV_ERR_NOMEM) with a message that
 * names the file and the problem. On success *out owns the mappings; release
 * it with st_close. On failure *out is NULL and nothing is leaked.
 * Tensor data pointers are NOT guaranteed to be aligned to their element
 * size (the format does not promise it for files from arbitrary writers):
 * read through memcpy or an unaligned-safe load, or copy out. */
lv_status st_open(const char *path, st_set **out, lv_err *err);

/* The tensor with this canonical name, or NULL. Borrowed: valid until st_close. */
const st_tensor *st_find(const st_set *s, const char *canonical_name);

/* Number of tensors (over all shards). */
size_t st_count(const st_set *s);

/* Tensor i, 0 <= i < st_count (ordered by file, then by data offset).
 * Borrowed: valid until st_close. */
const st_tensor *st_at(const st_set *s, size_t i);

/* Number of files mapped (1 for a single file, the shard count otherwise). */
size_t st_file_count(const st_set *s);

/* Unmaps every file and frees s. NULL is a no-op. */
void st_close(st_set *s);

/* ---- sets built in memory ------------------------------------------------
 * A loader of another format (io/gguf_model.h) presents its tensors as an
 * st_set so the model code reads every format the same way:
 *     st_set *s;  st_set_new(&s, &err);
 *     st_set_add(s, "lm_head.weight", "text.gguf", LV_DTYPE_Q4_K, 2, shape, ptr, NULL, &err);
 *     st_set_own(s, g, close_fn);     // s now releases g in st_close
 * The set stays immutable for readers once the loader hands it out. */

/* An empty set (no files). */
lv_status st_set_new(st_set **out, lv_err *err);

/* Adds a tensor under a canonical name (copied). file_name names its origin
 * in messages (copied). shape is PyTorch order (slowest first); for a block
 * dtype the last dim must be a multiple of the block. data is borrowed
 * (it must outlive s) unless `owned` is non-NULL: then owned is a heap
 * block (normally == data) that st_close frees, also when this call fails.
 * Errors: a duplicate name (LV_ERR_FORMAT), > ST_MAX_DIMS dims, a row not a
 * whole number of blocks (LV_ERR_ARG), LV_ERR_NOMEM. */
lv_status st_set_add(st_set *s, const char *name, const char *file_name, lv_dtype dtype, int n_dims,
                     const int64_t *shape, const void *data, void *owned, lv_err *err);

/* Hands p to s: st_close calls free_fn(p) after releasing the tensors, in
 * reverse order of the calls. On failure (LV_ERR_NOMEM) free_fn(p) has
 * been called already. */
lv_status st_set_own(st_set *s, void *p, void (*free_fn)(void *), lv_err *err);

#endif
