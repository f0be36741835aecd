/*
 * hf_cache.h - a model reference (local path or Hugging Face repo id) to a
 * local directory, using the cache that transformers, huggingface_hub and
 * mlx-vlm already fill.
 *
 * Cache layout (huggingface_hub):
 *   <cache>/models--ORG--NAME/refs/main        the commit hash main points at
 *   <cache>/models--ORG--NAME/snapshots/<hash>/ one directory per commit; its
 *                                              files are symlinks into ../../blobs/
 *   <cache>/models--ORG--NAME/blobs/<sha>      the file contents
 * The snapshot directory is returned as is: opening <dir>/config.json follows
 * the symlink into blobs/, so callers never see the blob names.
 *
 * Caches searched, in order (each only when its variable is set and non-empty):
 *   $HF_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub,
 *   $HOME/.cache/huggingface/hub
 *
 * Side effects: none beyond reading the environment and the file system.
 * Nothing is downloaded here: io/hf_download.h fetches a repo from the hub
 * into the first of these caches, in this same layout, and then resolves
 * it through hf_resolve_model.
 */
#ifndef LV_HF_CACHE_H
#define LV_HF_CACHE_H

#include "base/common.h"

#include <limits.h>
#include <stdbool.h>

#define HF_MAX_ROOTS 4 /* the number of cache roots below */

/* Resolves ref to a directory (or file) path, heap-allocated into *dir_out
 * (caller frees; NULL on failure):
 *   - ref names an existing file or directory → its realpath;
 *   - else ref is a repo id "ORG/NAME" → the snapshot that refs/main names in
 *     the first cache holding models--ORG--NAME (or, without refs/main, its
 *     only snapshot).
 * Errors:
 *   LV_ERR_ARG  ref is empty, or neither an existing path nor a valid repo id
 *   LV_ERR_IO   a valid repo id not found in any cache; the message lists
 *               every folder looked in ("model 'org/name' is not a local path
 *               and is not in the Hugging Face cache; looked in: ...");
 *               or found but broken (refs/main names a missing snapshot,
 *               several snapshots and no refs/main)
 *   LV_ERR_NOMEM */
lv_status hf_resolve_model(const char *ref, char **dir_out, lv_err *err);

/* True if id has the shape of a Hugging Face repo id: ORG/NAME, exactly one
 * '/', each part 1..96 characters of [A-Za-z0-9._-], not starting or ending
 * with '.' or '-', and no "..". */
bool hf_is_repo_id(const char *id);

/* The cache roots in search order (the list above, those whose variable is
 * set), into bufs; returns how many (0 when none is set). A download goes
 * into bufs[0], so that hf_resolve_model finds it first. */
int hf_cache_roots(char bufs[HF_MAX_ROOTS][PATH_MAX]);

#endif
