/*
 * file.h - reading files: whole into memory (small JSON files) or mapped
 * read-only (weights), and joining paths.
 *
 * Weights are mapped, never copied: every request shares the same pages, and
 * a 4 GB checkpoint costs no heap. Small files (configs, tokenizer.json) are
 * read whole, NUL-terminated, with a size cap so a wrong path to a huge file
 * fails fast instead of eating memory.
 */
#ifndef LV_FILE_H
#define LV_FILE_H

#include "common.h"

#include <stdbool.h>

typedef struct {
    const uint8_t *data; /* read-only mapping of the whole file; NULL when size is 0 */
    size_t size;         /* bytes */
} lv_map;

/* Maps path read-only. On success the caller releases it with lv_unmap. */
lv_status lv_map_file(const char *path, lv_map *map, lv_err *err);
/* Releases a mapping made by lv_map_file; a zeroed lv_map is a no-op. */
void lv_unmap(lv_map *map);

/* Tells the kernel that the whole pages of [p, p + n) will not be read
 * soon, when they lie inside a live mapping made by lv_map_file: they leave
 * the process's resident set and are read from the file again if touched
 * (a backend that copied a weight into its own layout no longer keeps two
 * copies resident). Anywhere else (heap, a buffer given to gguf_open_mem)
 * it does nothing. */
void lv_map_release_pages(const void *p, size_t n);

/* The exit status of a process whose model file was truncated or changed
 * in place while mapped (see lv_map_guard_install). */
#define LV_EXIT_MODEL_CHANGED 3

/* Installs a SIGBUS handler for the process: a fault on an address inside a
 * live lv_map_file mapping (the file was truncated or rewritten in place
 * while in use) prints "<prog>: fatal: the model file PATH was truncated or
 * changed on disk while in use ..." on stderr and exits with
 * LV_EXIT_MODEL_CHANGED at once, without cleanup (other threads may hold
 * locks). Any other SIGBUS goes to the handler that was installed before.
 * A file replaced by rename keeps its old inode mapped and never faults.
 * For the tools (llava-server, llava-cli), called once in main. */
void lv_map_guard_install(const char *prog);

/* Reads a whole file into a NUL-terminated heap buffer (caller frees).
 * Files over max_bytes are refused with LV_ERR_FORMAT before reading. */
lv_status lv_read_file(const char *path, size_t max_bytes, char **out, size_t *len, lv_err *err);

/* dir + "/" + name into out (cap bytes). Fails with LV_ERR_ARG if it does not fit. */
lv_status lv_path_join(char *out, size_t cap, const char *dir, const char *name, lv_err *err);

bool lv_is_file(const char *path);
bool lv_is_dir(const char *path);

#endif
