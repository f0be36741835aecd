/*
 * hf_download.h - a model fetched from a Hugging Face hub into the local
 * cache, as huggingface_hub's snapshot_download, llama-server -hf and
 * `ollama pull` do, then found there by io/hf_cache.h like any cached
 * model.
 *
 * Protocol (huggingface_hub's file_download.py and hf_api.py):
 *   GET  {endpoint}/api/models/{ORG/NAME}/revision/{rev}
 *        → {"sha": "<commit>", "siblings": [{"rfilename": "config.json"}, ...]}
 *   HEAD {endpoint}/{ORG/NAME}/resolve/{commit}/{file}, redirects not followed:
 *        X-Repo-Commit: the commit; ETag, or X-Linked-Etag when the answer is
 *        a redirect to a CDN (LFS files): the blob id, the sha256 of the
 *        contents for LFS files, the git blob sha1 for small ones;
 *        X-Linked-Size or Content-Length: the size; Location: where to GET.
 *        A redirect without X-Linked-Etag is a renamed repo: HEAD again there.
 *   GET  that location (redirects followed), "Range: bytes=N-" to resume.
 *   Errors come as 401 / 403 / 404 with X-Error-Code (RepoNotFound,
 *   RevisionNotFound, EntryNotFound, GatedRepo).
 * Every request carries "Authorization: Bearer $HF_TOKEN" when it is set
 * (libcurl drops it on a redirect to another host, the CDN).
 *
 * Cache (io/hf_cache.h's layout, in the first cache hf_cache searches):
 *   models--ORG--NAME/blobs/<etag>             the contents, by blob id
 *   models--ORG--NAME/blobs/<etag>.incomplete  a download under way or cut
 *                                              off: resumed from its size
 *   models--ORG--NAME/snapshots/<commit>/<file> → ../../blobs/<etag>
 *   models--ORG--NAME/refs/<rev>               the commit (unless rev is one)
 *   .locks/models--ORG--NAME/<etag>.lock       held while a blob downloads,
 *                                              so two processes never write
 *                                              the same one
 * Nothing is half-written: a blob is renamed into place once its size (and,
 * for an LFS file, its sha256 against the etag) is checked; a new snapshot
 * directory is built aside and renamed in; refs/<rev> is written last, by
 * rename. A cut connection, a timeout or a 5xx is retried (5 tries, backoff
 * doubling from 0.5 s), resuming where the partial file ends.
 *
 * Which files: io/hf_files.h (the configs and safetensors, or a GGUF pair
 * picked by the ORG/NAME:QUANT tag).
 *
 * Environment: HF_ENDPOINT (default https://huggingface.co), HF_TOKEN,
 * HF_HUB_OFFLINE=1 (no downloads), and the cache variables of hf_cache.h.
 *
 * Side effects: network requests, files under the cache, a progress bar
 * (base/progress.h) on opts->progress and log lines (base/log.h).
 */
#ifndef LV_HF_DOWNLOAD_H
#define LV_HF_DOWNLOAD_H

#include "base/common.h"

#include <stdbool.h>
#include <stdio.h>

typedef struct {
    const char *revision; /* branch, tag or commit; NULL: "main" */
    bool offline;         /* never contact the hub (HF_HUB_OFFLINE=1 counts too) */
    FILE *progress;       /* the progress bar's stream; NULL: stderr */
    int backoff_ms;       /* the first retry's wait, doubling after; 0: 500 */
} hf_dl_opts;

typedef struct {
    char *dir;             /* the snapshot directory (or the local path given) */
    char *model;           /* what llava_open2 takes: dir, or the GGUF text model in it */
    char *mmproj;          /* the GGUF mmproj in dir; NULL for a safetensors model */
    int n_fetched;         /* files downloaded by this call (0: all were cached) */
    int64_t bytes_fetched; /* bytes they took from the network */
} hf_model;

/* Downloads ref ("ORG/NAME" or "ORG/NAME:QUANT") at opts->revision into
 * the cache, skipping blobs already there, and fills out (caller frees
 * with hf_model_free; zeroed on failure). Always asks the hub which commit
 * the revision is (it may have moved). Errors, each naming the repo and
 * the file:
 *   LV_ERR_ARG  not a repo id; offline; 401/403 (gated or private: what to
 *               do with HF_TOKEN); 404 (no such repo, revision or file); a
 *               repo without weights this engine reads, or without the tag
 *   LV_ERR_IO   the network failed after the retries; the hub's answer was
 *               not what the protocol says; a disk error (the path and
 *               strerror); no cache directory (HF_HOME and HOME unset)
 *   LV_ERR_FORMAT  a size or sha256 that does not match the hub's (the
 *               partial file is deleted)
 *   LV_ERR_NOMEM */
lv_status hf_download(const char *ref, const hf_dl_opts *opts, hf_model *out, lv_err *err);

/* What the tools call with --model: ref as a local path (file or
 * directory) if it exists; else the repo in the local cache (with a tag,
 * the snapshot must hold that GGUF); else, unless offline, hf_download.
 * Offline, the error is hf_resolve_model's (the caches looked in). */
lv_status hf_get_model(const char *ref, const hf_dl_opts *opts, hf_model *out, lv_err *err);

/* Releases what out holds and zeroes it; a zeroed one is a no-op. */
void hf_model_free(hf_model *m);

/* HF_HUB_OFFLINE is set to 1 / true / yes / on (huggingface_hub's rule). */
bool hf_offline_env(void);

#endif
