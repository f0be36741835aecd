/*
 * safetensors_write.h - writes one safetensors file, streaming the tensors
 * one at a time so a multi-gigabyte shard is never held in memory.
 *
 * Usage:
 *     stw_entry e[2] = {{"a.weight", LV_DTYPE_U32, 2, {4096, 512}},
 *                       {"a.scales", LV_DTYPE_F16, 2, {4096, 64}}};
 *     stw *w;
 *     if (stw_begin("out/model.safetensors", e, 2, "mlx", &w, &err) != LV_OK) ...
 *     stw_write_tensor(w, 1, scales, &err);   // any order, each tensor once
 *     stw_write_tensor(w, 0, packed, &err);
 *     stw_finish(w, &err);    // or stw_abort(w) on any failure
 *
 * The file is written as "<path>.tmp" and renamed to path by stw_finish, so
 * an interrupted write never leaves a file under the final name. The layout
 * is the one safetensors.c reads (formats.md §1.1): the 8-byte header
 * length, the JSON header padded with spaces to a multiple of 8, then the
 * tensors in entry order with no gaps. Since every offset follows from the
 * shapes, tensors can be written in any order (each at its offset), which
 * lets a caller list entries by descending element size, as the reference
 * writer does, so every tensor is naturally aligned, while producing them
 * in whatever order it computes them.
 */
#ifndef LV_SAFETENSORS_WRITE_H
#define LV_SAFETENSORS_WRITE_H

#include "base/common.h"
#include "io/dtype.h"

#include <stddef.h>
#include <stdint.h>

#define STW_MAX_DIMS 8

typedef struct {
    const char *name; /* tensor name as it goes into the header (borrowed) */
    lv_dtype dtype;   /* a safetensors dtype (not a ggml block type) */
    int n_dims;       /* 0..STW_MAX_DIMS */
    int64_t shape[STW_MAX_DIMS];
} stw_entry;

typedef struct stw stw;

/* Bytes of an entry's data (prod(shape) * dtype size). */
size_t stw_entry_bytes(const stw_entry *e);

/* Creates "<path>.tmp" and writes the header for the n entries (format:
 * the "__metadata__" {"format": format}, omitted when format is NULL).
 * Errors: LV_ERR_ARG (bad dtype or dims, duplicate names), LV_ERR_IO
 * (naming the file and errno's text), LV_ERR_NOMEM. On failure nothing is
 * left on disk and *out is NULL. */
lv_status stw_begin(const char *path, const stw_entry *entries, size_t n, const char *format,
                    stw **out, lv_err *err);

/* Writes the data of entry i (stw_entry_bytes of it) at its offset.
 * LV_ERR_ARG for an index out of range or written twice; LV_ERR_IO. */
lv_status stw_write_tensor(stw *w, size_t i, const void *data, lv_err *err);

/* Checks every tensor was written in full, flushes, closes and renames the
 * file to its final name. Frees w whatever happens; on failure the
 * temporary file is removed. */
lv_status stw_finish(stw *w, lv_err *err);

/* Closes and removes the temporary file and frees w. NULL is a no-op. */
void stw_abort(stw *w);

#endif
