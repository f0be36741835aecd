/* fake_hub.h - a Hugging Face hub on loopback for the download tests, so
 * that they need no network: libmicrohttpd on 127.0.0.1 (a free port)
 * answering the three requests io/hf_download.c makes, as the real hub
 * does:
 *   GET  /api/models/ORG/NAME/revision/REV  {"sha", "siblings"}; REV is
 *        "main" or the commit, else 404 RevisionNotFound
 *   HEAD|GET /ORG/NAME/resolve/REV/FILE     small files: 200 with ETag (the
 *        git blob sha1) and the body; LFS files (*.safetensors, *.gguf):
 *        302 to /cdn/ORG/NAME/FILE with X-Linked-Etag (the sha256) and
 *        X-Linked-Size; both with X-Repo-Commit
 *   GET  /cdn/ORG/NAME/FILE                  the bytes
 * Bodies honour "Range: bytes=N-" (206, or 416 past the end). An unknown
 * repo is 404 RepoNotFound. Knobs make it misbehave: cut the connection
 * once, serve wrong bytes, require a token. Every request is logged for
 * the tests to inspect. */
#ifndef LV_TEST_FAKE_HUB_H
#define LV_TEST_FAKE_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fake_hub fake_hub;

typedef struct {
    char method[8];
    char url[512];
    int64_t range_from; /* the Range header's start; -1 without one */
    char auth[160];     /* the Authorization header, "" without one */
    int status;         /* what was answered */
} fh_req;

/* Starts the hub on a free loopback port; NULL on failure. */
fake_hub *fh_start(void);
/* "http://127.0.0.1:PORT", for HF_ENDPOINT. */
const char *fh_endpoint(const fake_hub *h);
/* Stops it and frees everything. */
void fh_stop(fake_hub *h);

/* A repo at commit (40 hex digits), empty until files are added. */
void fh_add_repo(fake_hub *h, const char *repo, const char *commit);
/* A file of repo (the data is copied); lfs: served through the CDN
 * redirect with its sha256 as the etag. */
void fh_add_file(fake_hub *h, const char *repo, const char *name, const void *data, size_t len,
                 bool lfs);
/* Every regular file at the top of dir (*.safetensors and *.gguf as LFS). */
void fh_add_dir(fake_hub *h, const char *repo, const char *dir);

/* The next GET of name's bytes closes the connection after `after` bytes
 * of the file (counted from its start), once. */
void fh_cut_once(fake_hub *h, const char *name, size_t after);
/* Every GET of name's bytes flips the bits of one byte in the middle. */
void fh_corrupt(fake_hub *h, const char *name, bool on);
/* Requests other than /cdn/ need "Authorization: Bearer token" (NULL:
 * none), else 401 with X-Error-Code GatedRepo, as a gated repo answers. */
void fh_require_token(fake_hub *h, const char *token);

/* A copy of the request log (caller frees); its length in *n. */
fh_req *fh_log(fake_hub *h, size_t *n);
void fh_clear_log(fake_hub *h);
/* Body bytes served by GETs of files since the last fh_clear_log. */
int64_t fh_bytes_served(fake_hub *h);

/* The hex sha256 of data into out[65] (tests compare blob names with it). */
void fh_sha256_hex(const void *data, size_t len, char out[65]);

#endif
