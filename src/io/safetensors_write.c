/*
 * safetensors_write.c - the safetensors writer (see safetensors_write.h).
 *
 * The header is built with jansson from the entry list before any data is
 * written: every tensor's offsets follow from the shapes alone, which is
 * what lets the data be streamed afterwards. The header is padded with
 * spaces (legal JSON whitespace) so its length is a multiple of 8 and the
 * data buffer starts 8-aligned, as the reference writer does
 * (huggingface/safetensors README "Format"; formats.md §1.1).
 */
#include "safetensors_write.h"

#include "json_type.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

struct stw {
    FILE *f;
    char *path;        /* final name */
    char *tmp_path;    /* "<path>.tmp": what is being written */
    size_t *sizes;     /* bytes of each entry */
    size_t *offsets;   /* offset of each entry in the data buffer */
    bool *written;     /* entry i has been written */
    size_t n;          /* entries */
    size_t data_start; /* file offset of the data buffer: 8 + padded header */
};

size_t stw_entry_bytes(const stw_entry *e) {
    size_t n = dtype_size(e->dtype);
    for (int d = 0; d < e->n_dims; d++) n *= (size_t)e->shape[d];
    return n;
}

static void free_writer(stw *w) {
    if (!w) return;
    if (w->f) fclose(w->f);
    free(w->path);
    free(w->tmp_path);
    free(w->sizes);
    free(w->offsets);
    free(w->written);
    free(w);
}

void stw_abort(stw *w) {
    if (!w) return;
    if (w->f) {
        fclose(w->f);
        w->f = NULL;
    }
    if (w->tmp_path) remove(w->tmp_path);
    free_writer(w);
}

/* The header JSON for the entries, unpadded (caller frees). */
static lv_status build_header(const char *path, const stw_entry *e, size_t n, const size_t *sizes,
                              const char *format, char **out, lv_err *err) {
    json_t *root = json_object();
    if (!root) return lv_fail(err, LV_ERR_NOMEM, "%s: out of memory building the header", path);
    lv_status st = LV_OK;
    if (format) {
        json_t *meta = json_pack("{s:s}", "format", format);
        if (!meta || json_object_set_new(root, "__metadata__", meta) != 0) {
            st = lv_fail(err, LV_ERR_NOMEM, "%s: out of memory building the header", path);
            goto done;
        }
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        if (json_object_get(root, e[i].name)) {
            st = lv_fail(err, LV_ERR_ARG, "%s: tensor '%s' is listed twice", path, e[i].name);
            goto done;
        }
        json_t *shape = json_array();
        for (int d = 0; shape && d < e[i].n_dims; d++)
            json_array_append_new(shape, json_integer(e[i].shape[d]));
        json_t *t =
            shape ? json_pack("{s:s,s:o,s:[I,I]}", "dtype", dtype_name(e[i].dtype), "shape", shape,
                              "data_offsets", (json_int_t)off, (json_int_t)(off + sizes[i]))
                  : NULL;
        if (!t || json_object_set_new(root, e[i].name, t) != 0) {
            st = lv_fail(err, LV_ERR_NOMEM, "%s: out of memory building the header", path);
            goto done;
        }
        off += sizes[i];
    }
    *out = json_dumps_whole(root, JSON_COMPACT);
    if (!*out) st = lv_fail(err, LV_ERR_NOMEM, "%s: out of memory building the header", path);
done:
    json_decref(root);
    return st;
}

lv_status stw_begin(const char *path, const stw_entry *entries, size_t n, const char *format,
                    stw **out, lv_err *err) {
    *out = NULL;
    stw *w = calloc(1, sizeof(*w));
    char *header = NULL;
    lv_status st = LV_OK;
    if (!w) return lv_fail(err, LV_ERR_NOMEM, "%s: out of memory", path);
    size_t plen = strlen(path);
    w->path = malloc(plen + 1);
    w->tmp_path = malloc(plen + 5);
    w->sizes = calloc(n ? n : 1, sizeof(size_t));
    w->offsets = calloc(n ? n : 1, sizeof(size_t));
    w->written = calloc(n ? n : 1, sizeof(bool));
    if (!w->path || !w->tmp_path || !w->sizes || !w->offsets || !w->written) {
        st = lv_fail(err, LV_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    memcpy(w->path, path, plen + 1);
    memcpy(w->tmp_path, path, plen);
    memcpy(w->tmp_path + plen, ".tmp", 5);
    w->n = n;
    for (size_t i = 0; i < n; i++) {
        const stw_entry *e = &entries[i];
        if ((int)e->dtype < 0 || (int)e->dtype >= LV_DTYPE_COUNT || e->n_dims < 0 ||
            e->n_dims > STW_MAX_DIMS) {
            st = lv_fail(err, LV_ERR_ARG, "%s: tensor '%s': bad dtype or %d dims", path, e->name,
                         e->n_dims);
            goto fail;
        }
        for (int d = 0; d < e->n_dims; d++) {
            if (e->shape[d] < 0) {
                st = lv_fail(err, LV_ERR_ARG, "%s: tensor '%s': negative dim %d", path, e->name, d);
                goto fail;
            }
        }
        w->sizes[i] = stw_entry_bytes(e);
        w->offsets[i] = i ? w->offsets[i - 1] + w->sizes[i - 1] : 0;
    }
    st = build_header(path, entries, n, w->sizes, format, &header, err);
    if (st != LV_OK) goto fail;
    size_t hlen = strlen(header);
    size_t padded = (hlen + 7) & ~(size_t)7;
    w->data_start = 8 + padded;
    w->f = fopen(w->tmp_path, "wb");
    if (!w->f) {
        st = lv_fail(err, LV_ERR_IO, "%s: cannot create: %s", w->tmp_path, strerror(errno));
        goto fail;
    }
    uint8_t len8[8];
    for (int b = 0; b < 8; b++) len8[b] = (uint8_t)((uint64_t)padded >> (8 * b));
    bool ok = fwrite(len8, 1, 8, w->f) == 8 && fwrite(header, 1, hlen, w->f) == hlen;
    for (size_t i = hlen; ok && i < padded; i++) ok = fputc(' ', w->f) != EOF;
    if (!ok) {
        st = lv_fail(err, LV_ERR_IO, "%s: write failed: %s", w->tmp_path, strerror(errno));
        goto fail;
    }
    free(header);
    *out = w;
    return LV_OK;
fail:
    free(header);
    stw_abort(w);
    return st;
}

lv_status stw_write_tensor(stw *w, size_t i, const void *data, lv_err *err) {
    if (i >= w->n)
        return lv_fail(err, LV_ERR_ARG, "%s: tensor %zu out of range (%zu)", w->path, i, w->n);
    if (w->written[i]) return lv_fail(err, LV_ERR_ARG, "%s: tensor %zu written twice", w->path, i);
    if (fseeko(w->f, (off_t)(w->data_start + w->offsets[i]), SEEK_SET) != 0 ||
        fwrite(data, 1, w->sizes[i], w->f) != w->sizes[i])
        return lv_fail(err, LV_ERR_IO, "%s: write failed: %s", w->tmp_path, strerror(errno));
    w->written[i] = true;
    return LV_OK;
}

lv_status stw_finish(stw *w, lv_err *err) {
    lv_status st = LV_OK;
    for (size_t i = 0; i < w->n; i++) {
        if (!w->written[i]) {
            st = lv_fail(err, LV_ERR_ARG, "%s: tensor %zu of %zu was never written", w->path, i + 1,
                         w->n);
            goto fail;
        }
    }
    /* Buffered bytes reach the file only now: a full disk (ENOSPC) or a
     * file size limit (EFBIG) often shows here first. fsync, as the GGUF
     * writer does, so the rename never publishes a file still in flight. */
    int e = 0;
    if (fflush(w->f) != 0 || fsync(fileno(w->f)) != 0) e = errno;
    if (fclose(w->f) != 0 && !e) e = errno;
    w->f = NULL;
    if (e) {
        st = lv_fail(err, LV_ERR_IO, "%s: write failed: %s", w->tmp_path, strerror(e));
        goto fail;
    }
    if (rename(w->tmp_path, w->path) != 0) {
        st = lv_fail(err, LV_ERR_IO, "%s: cannot rename to %s: %s", w->tmp_path, w->path,
                     strerror(errno));
        goto fail;
    }
    free_writer(w);
    return LV_OK;
fail:
    stw_abort(w);
    return st;
}
