/* fake_hub.c - see fake_hub.h. */
#include "fake_hub.h"

#include <dirent.h>
#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FH_MAX_REPOS 8
#define FH_MAX_FILES 32
#define FH_MAX_LOG   512

typedef struct {
    char name[256];
    uint8_t *data;
    size_t len;
    bool lfs;
    char etag[65]; /* sha256 (lfs) or git blob sha1 */
} fh_file;

typedef struct {
    char id[200];
    char commit[41];
    fh_file files[FH_MAX_FILES];
    int n;
} fh_repo;

struct fake_hub {
    struct MHD_Daemon *d;
    char endpoint[64];
    pthread_mutex_t mu; /* everything below: the daemon's threads read it */
    fh_repo repos[FH_MAX_REPOS];
    int n_repos;
    char cut_name[256];
    size_t cut_after;
    bool cut_armed;
    char corrupt_name[256];
    char token[128];
    fh_req log[FH_MAX_LOG];
    size_t n_log;
    int64_t served;
};

static void digest_hex(const EVP_MD *md, const void *prefix, size_t plen, const void *data,
                       size_t len, char *out) {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c, md, NULL);
    if (plen) EVP_DigestUpdate(c, prefix, plen);
    EVP_DigestUpdate(c, data, len);
    EVP_DigestFinal_ex(c, d, &n);
    EVP_MD_CTX_free(c);
    for (unsigned i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", d[i]);
}

void fh_sha256_hex(const void *data, size_t len, char out[65]) {
    digest_hex(EVP_sha256(), NULL, 0, data, len, out);
}

/* ---- bodies ---------------------------------------------------------------------------- */

typedef struct {
    fake_hub *h;
    uint8_t *data; /* a private copy of the file (corrupted when asked) */
    size_t len, start;
    size_t cut; /* close the connection at this file offset; SIZE_MAX: never */
} body;

static ssize_t read_body(void *cls, uint64_t pos, char *buf, size_t max) {
    body *b = cls;
    size_t off = b->start + (size_t)pos;
    if (off >= b->cut) return MHD_CONTENT_READER_END_WITH_ERROR;
    if (off >= b->len) return MHD_CONTENT_READER_END_OF_STREAM;
    size_t n = b->len - off;
    if (n > max) n = max;
    if (off + n > b->cut) n = b->cut - off;
    memcpy(buf, b->data + off, n);
    pthread_mutex_lock(&b->h->mu);
    b->h->served += (int64_t)n;
    pthread_mutex_unlock(&b->h->mu);
    return (ssize_t)n;
}

static void free_body(void *cls) {
    body *b = cls;
    free(b->data);
    free(b);
}

/* ---- the handler ----------------------------------------------------------------------- */

static enum MHD_Result reply(struct MHD_Connection *c, int status, const char *text,
                             const char *error_code, fh_req *r) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    if (error_code) MHD_add_response_header(resp, "X-Error-Code", error_code);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    r->status = status;
    return ret;
}

/* Splits "ORG/NAME/rest" into the repo (ORG/NAME) and rest; NULL repo if unknown. */
static fh_repo *find_repo(fake_hub *h, const char *path, const char **rest) {
    const char *s1 = strchr(path, '/'), *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
    if (!s2) return NULL;
    *rest = s2 + 1;
    for (int i = 0; i < h->n_repos; i++)
        if (strlen(h->repos[i].id) == (size_t)(s2 - path) &&
            strncmp(h->repos[i].id, path, (size_t)(s2 - path)) == 0)
            return &h->repos[i];
    return NULL;
}

static fh_file *find_file(fh_repo *r, const char *name) {
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->files[i].name, name) == 0) return &r->files[i];
    return NULL;
}

static enum MHD_Result api_revision(fake_hub *h, struct MHD_Connection *c, const char *path,
                                    fh_req *r) {
    const char *rest;
    fh_repo *repo = find_repo(h, path, &rest);
    if (!repo) return reply(c, 404, "{\"error\":\"Repository not found\"}", "RepoNotFound", r);
    if (strncmp(rest, "revision/", 9) != 0) return reply(c, 404, "{}", NULL, r);
    const char *rev = rest + 9;
    if (strcmp(rev, "main") != 0 && strcmp(rev, repo->commit) != 0)
        return reply(c, 404, "{\"error\":\"Invalid rev id\"}", "RevisionNotFound", r);
    json_t *sib = json_array();
    for (int i = 0; i < repo->n; i++)
        json_array_append_new(sib, json_pack("{s:s}", "rfilename", repo->files[i].name));
    json_t *o = json_pack("{s:s,s:s,s:o}", "id", repo->id, "sha", repo->commit, "siblings", sib);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    enum MHD_Result ret = reply(c, 200, text, NULL, r);
    free(text);
    return ret;
}

/* The bytes of f, from the request's Range. */
static enum MHD_Result send_file(fake_hub *h, struct MHD_Connection *c, fh_repo *repo, fh_file *f,
                                 bool head, fh_req *r) {
    body *b = calloc(1, sizeof *b);
    b->h = h;
    b->len = f->len;
    b->cut = SIZE_MAX;
    b->data = malloc(f->len ? f->len : 1);
    memcpy(b->data, f->data, f->len);
    if (!head && strcmp(h->corrupt_name, f->name) == 0 && f->len) b->data[f->len / 2] ^= 0xff;
    if (!head && h->cut_armed && strcmp(h->cut_name, f->name) == 0) {
        b->cut = h->cut_after;
        h->cut_armed = false;
    }
    int status = 200;
    if (r->range_from >= 0) {
        if ((size_t)r->range_from >= f->len) {
            free_body(b);
            return reply(c, 416, "", NULL, r);
        }
        b->start = (size_t)r->range_from;
        status = 206;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_callback(f->len - b->start, 32 * 1024, read_body, b, free_body);
    char v[128];
    if (status == 206) {
        snprintf(v, sizeof v, "bytes %zu-%zu/%zu", b->start, f->len - 1, f->len);
        MHD_add_response_header(resp, "Content-Range", v);
    }
    snprintf(v, sizeof v, "\"%s\"", f->etag);
    MHD_add_response_header(resp, "ETag", v);
    MHD_add_response_header(resp, "X-Repo-Commit", repo->commit);
    MHD_add_response_header(resp, "Accept-Ranges", "bytes");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    r->status = status;
    return ret;
}

static enum MHD_Result resolve(fake_hub *h, struct MHD_Connection *c, const char *path, bool head,
                               fh_req *r) {
    const char *rest;
    fh_repo *repo = find_repo(h, path, &rest);
    if (!repo) return reply(c, 404, "Repository not found", "RepoNotFound", r);
    if (strncmp(rest, "resolve/", 8) != 0) return reply(c, 404, "", NULL, r);
    const char *rev = rest + 8, *slash = strchr(rev, '/');
    if (!slash) return reply(c, 404, "", NULL, r);
    if (strncmp(rev, "main/", 5) != 0 && strncmp(rev, repo->commit, 40) != 0)
        return reply(c, 404, "Invalid rev id", "RevisionNotFound", r);
    fh_file *f = find_file(repo, slash + 1);
    if (!f) return reply(c, 404, "Entry not found", "EntryNotFound", r);
    if (!f->lfs) return send_file(h, c, repo, f, head, r);
    /* LFS: the CDN serves the bytes; the hub says what they are. */
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    char v[1024];
    snprintf(v, sizeof v, "%s/cdn/%s/%s", h->endpoint, repo->id, f->name);
    MHD_add_response_header(resp, "Location", v);
    snprintf(v, sizeof v, "\"%s\"", f->etag);
    MHD_add_response_header(resp, "X-Linked-Etag", v);
    snprintf(v, sizeof v, "%zu", f->len);
    MHD_add_response_header(resp, "X-Linked-Size", v);
    MHD_add_response_header(resp, "X-Repo-Commit", repo->commit);
    MHD_add_response_header(resp, "ETag", "\"not-the-blob-id\"");
    enum MHD_Result ret = MHD_queue_response(c, 302, resp);
    MHD_destroy_response(resp);
    r->status = 302;
    return ret;
}

static enum MHD_Result cdn(fake_hub *h, struct MHD_Connection *c, const char *path, bool head,
                           fh_req *r) {
    const char *rest;
    fh_repo *repo = find_repo(h, path, &rest);
    fh_file *f = repo ? find_file(repo, rest) : NULL;
    if (!f) return reply(c, 404, "NoSuchKey", NULL, r);
    return send_file(h, c, repo, f, head, r);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls) {
    fake_hub *h = cls;
    fh_req r = {.range_from = -1};
    snprintf(r.method, sizeof r.method, "%s", method);
    snprintf(r.url, sizeof r.url, "%s", url);
    const char *range = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range");
    if (range && strncmp(range, "bytes=", 6) == 0) r.range_from = strtoll(range + 6, NULL, 10);
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    snprintf(r.auth, sizeof r.auth, "%s", auth ? auth : "");
    bool head = strcmp(method, "HEAD") == 0;

    pthread_mutex_lock(&h->mu);
    enum MHD_Result ret;
    char want[160];
    snprintf(want, sizeof want, "Bearer %s", h->token);
    bool is_cdn = strncmp(url, "/cdn/", 5) == 0;
    if (h->token[0] && !is_cdn && strcmp(r.auth, want) != 0)
        ret = reply(c, 401, "Access to model is restricted. You must be authenticated.",
                    "GatedRepo", &r);
    else if (strncmp(url, "/api/models/", 12) == 0)
        ret = api_revision(h, c, url + 12, &r);
    else if (is_cdn)
        ret = cdn(h, c, url + 5, head, &r);
    else
        ret = resolve(h, c, url + 1, head, &r);
    if (h->n_log < FH_MAX_LOG) h->log[h->n_log++] = r;
    pthread_mutex_unlock(&h->mu);
    return ret;
}

/* ---- setup ----------------------------------------------------------------------------- */

fake_hub *fh_start(void) {
    fake_hub *h = calloc(1, sizeof *h);
    pthread_mutex_init(&h->mu, NULL);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
                            NULL, NULL, handle, h, MHD_OPTION_SOCK_ADDR, &a, MHD_OPTION_END);
    if (!h->d) {
        free(h);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(h->endpoint, sizeof h->endpoint, "http://127.0.0.1:%u", (unsigned)info->port);
    return h;
}

const char *fh_endpoint(const fake_hub *h) {
    return h->endpoint;
}

void fh_stop(fake_hub *h) {
    if (!h) return;
    MHD_stop_daemon(h->d);
    for (int i = 0; i < h->n_repos; i++)
        for (int k = 0; k < h->repos[i].n; k++) free(h->repos[i].files[k].data);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

void fh_add_repo(fake_hub *h, const char *repo, const char *commit) {
    pthread_mutex_lock(&h->mu);
    if (h->n_repos < FH_MAX_REPOS) {
        fh_repo *r = &h->repos[h->n_repos++];
        memset(r, 0, sizeof *r);
        snprintf(r->id, sizeof r->id, "%s", repo);
        snprintf(r->commit, sizeof r->commit, "%s", commit);
    }
    pthread_mutex_unlock(&h->mu);
}

void fh_add_file(fake_hub *h, const char *repo, const char *name, const void *data, size_t len,
                 bool lfs) {
    pthread_mutex_lock(&h->mu);
    for (int i = 0; i < h->n_repos; i++) {
        fh_repo *r = &h->repos[i];
        if (strcmp(r->id, repo) != 0 || r->n == FH_MAX_FILES) continue;
        fh_file *f = &r->files[r->n++];
        snprintf(f->name, sizeof f->name, "%s", name);
        f->data = malloc(len ? len : 1);
        memcpy(f->data, data, len);
        f->len = len;
        f->lfs = lfs;
        if (lfs) {
            fh_sha256_hex(data, len, f->etag);
        } else { /* git's blob id: sha1 of "blob <len>\0" + contents */
            char hdr[32];
            int n = snprintf(hdr, sizeof hdr, "blob %zu", len);
            digest_hex(EVP_sha1(), hdr, (size_t)n + 1, data, len, f->etag);
        }
    }
    pthread_mutex_unlock(&h->mu);
}

void fh_add_dir(fake_hub *h, const char *repo, const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char p[2048];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (e->d_name[0] == '.' || stat(p, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        FILE *f = fopen(p, "rb");
        uint8_t *buf = malloc((size_t)sb.st_size + 1);
        size_t n = f ? fread(buf, 1, (size_t)sb.st_size, f) : 0;
        if (f) fclose(f);
        size_t k = strlen(e->d_name);
        bool lfs = (k > 12 && strcmp(e->d_name + k - 12, ".safetensors") == 0) ||
                   (k > 5 && strcmp(e->d_name + k - 5, ".gguf") == 0);
        fh_add_file(h, repo, e->d_name, buf, n, lfs);
        free(buf);
    }
    if (d) closedir(d);
}

void fh_cut_once(fake_hub *h, const char *name, size_t after) {
    pthread_mutex_lock(&h->mu);
    snprintf(h->cut_name, sizeof h->cut_name, "%s", name);
    h->cut_after = after;
    h->cut_armed = true;
    pthread_mutex_unlock(&h->mu);
}

void fh_corrupt(fake_hub *h, const char *name, bool on) {
    pthread_mutex_lock(&h->mu);
    snprintf(h->corrupt_name, sizeof h->corrupt_name, "%s", on ? name : "");
    pthread_mutex_unlock(&h->mu);
}

void fh_require_token(fake_hub *h, const char *token) {
    pthread_mutex_lock(&h->mu);
    snprintf(h->token, sizeof h->token, "%s", token ? token : "");
    pthread_mutex_unlock(&h->mu);
}

fh_req *fh_log(fake_hub *h, size_t *n) {
    pthread_mutex_lock(&h->mu);
    fh_req *copy = malloc((h->n_log ? h->n_log : 1) * sizeof *copy);
    memcpy(copy, h->log, h->n_log * sizeof *copy);
    *n = h->n_log;
    pthread_mutex_unlock(&h->mu);
    return copy;
}

void fh_clear_log(fake_hub *h) {
    pthread_mutex_lock(&h->mu);
    h->n_log = 0;
    h->served = 0;
    pthread_mutex_unlock(&h->mu);
}

int64_t fh_bytes_served(fake_hub *h) {
    pthread_mutex_lock(&h->mu);
    int64_t n = h->served;
    pthread_mutex_unlock(&h->mu);
    return n;
}
