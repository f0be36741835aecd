/* hf_download.c - see hf_download.h. */
#include "hf_download.h"

#include "base/buf.h"
#include "base/file.h"
#include "base/log.h"
#include "base/progress.h"
#include "base/version.h"
#include "io/hf_cache.h"
#include "io/json_type.h"
#include "io/hf_files.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HF_DEFAULT_ENDPOINT "https://huggingface.co"
#define HF_TRIES            5           /* attempts per request before a network failure is final */
#define HF_BACKOFF_MS       500         /* the first retry's wait; doubled after each */
#define HF_API_MAX          (64u << 20) /* the revision JSON (a big repo lists thousands of files) */
#define HF_MAX_HOPS         5           /* renamed-repo redirects followed by hand */
#define HF_ID_MAX           136         /* an etag or commit: 64 hex digits today; room to spare */

/* ---- one download's state -------------------------------------------------------------- */

typedef struct {
    CURL *h;                 /* reused, so requests share the connection */
    const hf_dl_opts *o;     /* the caller's options */
    FILE *progress;          /* o->progress or stderr */
    char endpoint[512];      /* HF_ENDPOINT without its trailing '/' */
    const char *token;       /* HF_TOKEN or NULL */
    char repo[200];          /* ORG/NAME */
    const char *rev;         /* the revision asked for */
    char commit[HF_ID_MAX];  /* what it points at */
    char repo_dir[PATH_MAX]; /* <cache>/models--ORG--NAME */
    char lock_dir[PATH_MAX]; /* <cache>/.locks/models--ORG--NAME */
    char **siblings;         /* the repo's files */
    size_t n_siblings;
    hf_selection sel; /* the ones fetched */
    char **etags;     /* sel.names[i]'s blob id (sel.cap entries) */
    int n_fetched;
    int64_t bytes_fetched;
} dl;

/* The headers of one response (a followed redirect starts them over). */
typedef struct {
    char commit[HF_ID_MAX], etag[HF_ID_MAX], linked_etag[HF_ID_MAX];
    char error_code[64], error_msg[160];
    int64_t linked_size, content_length;
} hf_headers;

/* ---- small helpers --------------------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;
static void curl_init(void) {
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

bool hf_offline_env(void) {
    const char *v = getenv("HF_HUB_OFFLINE");
    return v && (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0 || strcasecmp(v, "yes") == 0 ||
                 strcasecmp(v, "on") == 0);
}

void hf_model_free(hf_model *m) {
    free(m->dir);
    free(m->model);
    free(m->mmproj);
    memset(m, 0, sizeof *m);
}

static void sleep_ms(long ms) {
    nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000L}, NULL);
}

/* Percent-encodes s into out (cap bytes) keeping RFC 3986's unreserved
 * characters, and '/' when keep_slash (a file path); false if it does not
 * fit. */
static bool url_escape(char *out, size_t cap, const char *s, bool keep_slash) {
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    strchr("-._~", c) || (keep_slash && c == '/');
        if (n + (keep ? 1 : 3) >= cap) return false;
        if (keep) {
            out[n++] = (char)c;
        } else {
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    out[n] = '\0';
    return true;
}

/* A name that is safe as one path component: [A-Za-z0-9_-], at most
 * HF_ID_MAX - 1 (an etag or a commit). */
static bool id_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= HF_ID_MAX) return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              *s == '-' || *s == '_'))
            return false;
    return true;
}

/* A repo path or a revision that stays below the folder it lands in: no
 * leading '/', no empty, "." or ".." component, no backslash. */
static bool rel_path_ok(const char *s) {
    if (!*s || *s == '/' || strlen(s) > 1024 || strchr(s, '\\')) return false;
    for (const char *c = s; *c;) {
        const char *e = strchr(c, '/');
        size_t n = e ? (size_t)(e - c) : strlen(c);
        if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return false;
        c += n + (e ? 1 : 0);
        if (e && !*c) return false; /* a trailing '/' */
    }
    return true;
}

static bool is_sha256(const char *etag) {
    if (strlen(etag) != 64) return false;
    for (const char *c = etag; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f'))) return false;
    return true;
}

/* mkdir -p path (its every missing parent too). */
static lv_status mkdirs(const char *path, lv_err *err) {
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p)
        return lv_fail(err, LV_ERR_ARG, "%s: path too long", path);
    for (char *c = p + 1;; c++) {
        if (*c && *c != '/') continue;
        char keep = *c;
        *c = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            return lv_fail(err, LV_ERR_IO, "cannot create the directory %s: %s", p,
                           strerror(errno));
        if (!(*c = keep)) break;
    }
    return LV_OK;
}

/* mkdir -p of path's parent. */
static lv_status mkdir_parent(const char *path, lv_err *err) {
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", path);
    char *slash = strrchr(p, '/');
    if (!slash || slash == p) return LV_OK;
    *slash = '\0';
    return mkdirs(p, err);
}

/* printf into a path buffer; LV_ERR_ARG when it does not fit. */
static lv_status pathf(char *out, size_t cap, lv_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static lv_status pathf(char *out, size_t cap, lv_err *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) return lv_fail(err, LV_ERR_ARG, "path too long: %s...", out);
    return LV_OK;
}

/* ---- HTTP ------------------------------------------------------------------------------ */

/* "Name: value" into the fields hf_headers keeps. */
static size_t on_header(char *p, size_t size, size_t n, void *ud) {
    hf_headers *hd = ud;
    size_t len = size * n;
    if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) { /* a new response: a redirect's is gone */
        memset(hd, 0, sizeof *hd);
        hd->linked_size = hd->content_length = -1;
        return len;
    }
    const char *colon = memchr(p, ':', len);
    if (!colon) return len;
    size_t klen = (size_t)(colon - p);
    const char *v = colon + 1, *end = p + len;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ')) end--;
    int vlen = (int)(end - v);
    static const struct {
        const char *name;
        size_t off;
        size_t cap;
    } keep[] = {
        {"x-repo-commit", offsetof(hf_headers, commit), HF_ID_MAX},
        {"etag", offsetof(hf_headers, etag), HF_ID_MAX},
        {"x-linked-etag", offsetof(hf_headers, linked_etag), HF_ID_MAX},
        {"x-error-code", offsetof(hf_headers, error_code), 64},
        {"x-error-message", offsetof(hf_headers, error_msg), 160},
    };
    for (size_t i = 0; i < LV_ARRAY_LEN(keep); i++)
        if (klen == strlen(keep[i].name) && strncasecmp(p, keep[i].name, klen) == 0)
            snprintf((char *)hd + keep[i].off, keep[i].cap, "%.*s", vlen, v);
    if (klen == 13 && strncasecmp(p, "x-linked-size", klen) == 0)
        hd->linked_size = strtoll(v, NULL, 10);
    if (klen == 14 && strncasecmp(p, "content-length", klen) == 0)
        hd->content_length = strtoll(v, NULL, 10);
    return len;
}

/* Where a body goes: memory (the API's JSON) or a file (a blob). */
typedef struct {
    dl *d;
    lv_buf mem;       /* when f is NULL */
    FILE *f;          /* the .incomplete file, opened for appending */
    int64_t offset;   /* bytes it held before this request (the Range start) */
    int64_t written;  /* bytes written by this request */
    bool restarted;   /* the server ignored the Range: the file was emptied */
    int write_errno;  /* a failed write's errno */
    bool too_big;     /* mem went past HF_API_MAX */
    lv_progress *bar; /* with f */
} sink;

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
    sink *s = ud;
    size_t len = size * n;
    if (!s->f) {
        if (s->mem.len + len > HF_API_MAX) {
            s->too_big = true;
            return 0;
        }
        return lv_buf_append(&s->mem, p, len) == LV_OK ? len : 0;
    }
    if (s->written == 0 && s->offset > 0 && !s->restarted) {
        long code = 0;
        curl_easy_getinfo(s->d->h, CURLINFO_RESPONSE_CODE, &code);
        if (code == 200) { /* a whole body after all: start the file over */
            if (ftruncate(fileno(s->f), 0) != 0) {
                s->write_errno = errno;
                return 0;
            }
            s->offset = 0;
            s->restarted = true;
            if (s->bar) s->bar->done = s->bar->first = 0;
        }
    }
    if (fwrite(p, 1, len, s->f) != len) {
        s->write_errno = errno ? errno : EIO;
        return 0;
    }
    s->written += (int64_t)len;
    if (s->bar) lv_progress_update(s->bar, s->offset + s->written);
    return len;
}

/* One request: HEAD (body NULL) or GET into body, following redirects when
 * follow, from byte range_from when > 0. *code: the HTTP status (0 when
 * none came); cerr: libcurl's words on failure. */
static CURLcode perform(dl *d, const char *url, bool follow, int64_t range_from, sink *body,
                        hf_headers *hd, long *code, char cerr[CURL_ERROR_SIZE]) {
    CURL *h = d->h;
    curl_easy_reset(h);
    memset(hd, 0, sizeof *hd);
    hd->linked_size = hd->content_length = -1;
    cerr[0] = '\0';
    *code = 0;
    struct curl_slist *hl = curl_slist_append(NULL, "Accept-Encoding: identity");
    char line[600];
    if (d->token && hl) {
        snprintf(line, sizeof line, "Authorization: Bearer %.560s", d->token);
        hl = curl_slist_append(hl, line);
    }
    if (range_from > 0 && hl) {
        snprintf(line, sizeof line, "Range: bytes=%lld-", (long long)range_from);
        hl = curl_slist_append(hl, line);
    }
    if (!hl) return CURLE_OUT_OF_MEMORY;
    CURLcode rc = CURLE_OK;
#define SETOPT(opt, val)                                                                           \
    if (rc == CURLE_OK) rc = curl_easy_setopt(h, opt, val)
    SETOPT(CURLOPT_URL, url);
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SETOPT(CURLOPT_FOLLOWLOCATION, follow ? 1L : 0L);
    SETOPT(CURLOPT_MAXREDIRS, 10L);
    SETOPT(CURLOPT_HTTPHEADER, hl);
    SETOPT(CURLOPT_USERAGENT, "llava/" LLAVA_VERSION);
    SETOPT(CURLOPT_CONNECTTIMEOUT, 30L);
    /* A stalled transfer (under 1 KiB/s for a minute) is a cut connection: retried. */
    SETOPT(CURLOPT_LOW_SPEED_LIMIT, 1024L);
    SETOPT(CURLOPT_LOW_SPEED_TIME, 60L);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, hd);
    SETOPT(CURLOPT_ERRORBUFFER, cerr);
    if (body) {
        SETOPT(CURLOPT_WRITEFUNCTION, on_body);
        SETOPT(CURLOPT_WRITEDATA, body);
    } else {
        SETOPT(CURLOPT_NOBODY, 1L);
    }
#undef SETOPT
    if (rc == CURLE_OK) rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, code);
    curl_slist_free_all(hl);
    return rc;
}

/* A failure worth another try: the connection, not the request. */
static bool transient(CURLcode rc, long code) {
    switch (rc) {
        case CURLE_OK:
            return code == 429 || code >= 500;
        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_PARTIAL_FILE:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_OPERATION_TIMEDOUT:
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
            return true;
        default:
            return false;
    }
}

/* The wait before try number `attempt` (2, 3, ...). */
static long backoff(const dl *d, int attempt) {
    long ms = d->o->backoff_ms > 0 ? d->o->backoff_ms : HF_BACKOFF_MS;
    return ms << (attempt - 2);
}

/* An HTTP error status as a sentence the user can act on. what: "model
 * 'org/name'" or "org/name: config.json". */
static lv_status http_error(const dl *d, const char *what, long code, const hf_headers *hd,
                            lv_err *err) {
    const char *ec = hd->error_code;
    if (code == 401 || code == 403) {
        if (!d->token)
            return lv_fail(err, LV_ERR_ARG,
                           "%s: the hub refused access (HTTP %ld%s%s): the repo is gated or "
                           "private, or does not exist; set HF_TOKEN to an access token "
                           "(https://huggingface.co/settings/tokens) of an account that has "
                           "accepted the model's conditions on its page",
                           what, code, ec[0] ? " " : "", ec);
        return lv_fail(err, LV_ERR_ARG,
                       "%s: the hub refused the token in HF_TOKEN (HTTP %ld%s%s): it is not "
                       "valid, or its account has no access to this gated or private repo "
                       "(request access on the model's page)",
                       what, code, ec[0] ? " " : "", ec);
    }
    if (code == 404) {
        if (strcmp(ec, "RevisionNotFound") == 0)
            return lv_fail(err, LV_ERR_ARG, "%s: no revision '%s' on %s (HTTP 404)", what, d->rev,
                           d->endpoint);
        if (strcmp(ec, "EntryNotFound") == 0)
            return lv_fail(err, LV_ERR_ARG, "%s: no such file at commit %s (HTTP 404)", what,
                           d->commit);
        return lv_fail(err, LV_ERR_ARG, "%s: not found on %s (HTTP 404: no such repo%s)", what,
                       d->endpoint, d->commit[0] ? " or file" : " or revision");
    }
    return lv_fail(err, code >= 500 ? LV_ERR_IO : LV_ERR_ARG, "%s: the hub answered HTTP %ld%s%s",
                   what, code, hd->error_msg[0] ? ": " : "", hd->error_msg);
}

/* A request with the retries: transient failures are tried HF_TRIES times.
 * Then any failure (transport or HTTP >= 400) is an error about `what`;
 * 2xx and 3xx are LV_OK with *code set. Not for blobs (fetch_blob resumes). */
static lv_status request(dl *d, const char *what, const char *url, bool follow, sink *body,
                         hf_headers *hd, long *code, lv_err *err) {
    char cerr[CURL_ERROR_SIZE];
    CURLcode rc = CURLE_OK;
    for (int attempt = 1; attempt <= HF_TRIES; attempt++) {
        if (attempt > 1) {
            LV_WARN("%s: %s; trying again in %.1f s (try %d of %d)", what,
                    rc ? (cerr[0] ? cerr : curl_easy_strerror(rc)) : "server error",
                    backoff(d, attempt) / 1000.0, attempt, HF_TRIES);
            sleep_ms(backoff(d, attempt));
            if (body) body->mem.len = 0;
        }
        rc = perform(d, url, follow, 0, body, hd, code, cerr);
        if (!transient(rc, *code)) break;
    }
    if (body && body->too_big)
        return lv_fail(err, LV_ERR_IO, "%s: the hub's answer is over %u MiB", what,
                       HF_API_MAX >> 20);
    if (rc != CURLE_OK)
        return lv_fail(err, LV_ERR_IO, "%s: cannot reach %s after %d tries: %s", what, d->endpoint,
                       HF_TRIES, cerr[0] ? cerr : curl_easy_strerror(rc));
    if (*code >= 400) return http_error(d, what, *code, hd, err);
    return LV_OK;
}

/* ---- the revision: commit and file list ------------------------------------------------ */

static lv_status get_revision(dl *d, lv_err *err) {
    char rev[600], url[1400], what[256];
    if (!url_escape(rev, sizeof rev, d->rev, false))
        return lv_fail(err, LV_ERR_ARG, "revision '%s' is too long", d->rev);
    snprintf(url, sizeof url, "%s/api/models/%s/revision/%s", d->endpoint, d->repo, rev);
    snprintf(what, sizeof what, "model '%s' (revision %s)", d->repo, d->rev);
    sink body = {.d = d};
    hf_headers hd;
    long code;
    lv_status st = request(d, what, url, true, &body, &hd, &code, err);
    if (st) {
        lv_buf_free(&body.mem);
        return st;
    }
    json_error_t je;
    json_t *root = json_loadb_whole(body.mem.data ? body.mem.data : "", body.mem.len, 0, &je);
    lv_buf_free(&body.mem);
    const char *sha = json_string_value(json_object_get(root, "sha"));
    json_t *sib = json_object_get(root, "siblings");
    if (!sha || !id_ok(sha) || !json_is_array(sib)) {
        json_decref(root);
        return lv_fail(err, LV_ERR_IO,
                       "%s: %s/api/models/... did not answer with a commit (\"sha\") and a file "
                       "list (\"siblings\"): is HF_ENDPOINT a Hugging Face hub?",
                       what, d->endpoint);
    }
    snprintf(d->commit, sizeof d->commit, "%s", sha);
    size_t n = json_array_size(sib);
    if (!(d->siblings = calloc(n ? n : 1, sizeof *d->siblings))) {
        json_decref(root);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        const char *f = json_string_value(json_object_get(json_array_get(sib, i), "rfilename"));
        if (!f) continue;
        if (!(d->siblings[d->n_siblings] = strdup(f))) {
            json_decref(root);
            return lv_fail(err, LV_ERR_NOMEM, "out of memory");
        }
        d->n_siblings++;
    }
    json_decref(root);
    return LV_OK;
}

/* ---- one file -------------------------------------------------------------------------- */

/* The sha256 of the file at path, as 64 hex digits into hex[65]. */
static lv_status sha256_file(const char *path, char hex[65], lv_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return lv_fail(err, LV_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *buf = malloc(1u << 20), md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    lv_status st = LV_OK;
    if (!ctx || !buf || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        st = lv_fail(err, LV_ERR_NOMEM, "sha256: cannot start a digest");
        goto done;
    }
    size_t n;
    while ((n = fread(buf, 1, 1u << 20, f)) > 0) EVP_DigestUpdate(ctx, buf, n);
    if (ferror(f)) {
        st = lv_fail(err, LV_ERR_IO, "%s: read error", path);
        goto done;
    }
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    for (unsigned i = 0; i < mdlen && i < 32; i++) sprintf(hex + 2 * i, "%02x", md[i]);
    hex[64] = '\0';
done:
    EVP_MD_CTX_free(ctx);
    free(buf);
    fclose(f);
    return st;
}

/* The complete .incomplete file: its size and, for an LFS blob, its sha256
 * checked; then renamed to the blob. A mismatch deletes it. */
static lv_status finish_blob(dl *d, const char *name, const char *part, const char *blob,
                             const char *etag, int64_t size, lv_err *err) {
    struct stat sb;
    if (stat(part, &sb) != 0) return lv_fail(err, LV_ERR_IO, "%s: %s", part, strerror(errno));
    if (size >= 0 && sb.st_size != size) {
        unlink(part);
        return lv_fail(err, LV_ERR_FORMAT,
                       "%s: %s: the download has %lld bytes, the hub said %lld (deleted; try "
                       "again)",
                       d->repo, name, (long long)sb.st_size, (long long)size);
    }
    if (is_sha256(etag)) {
        char got[65];
        lv_status st = sha256_file(part, got, err);
        if (st) return st;
        if (strcmp(got, etag) != 0) {
            unlink(part);
            return lv_fail(err, LV_ERR_FORMAT,
                           "%s: %s is corrupt: its sha256 is %s, the hub's is %s (the download "
                           "was deleted; try again)",
                           d->repo, name, got, etag);
        }
    }
    if (rename(part, blob) != 0)
        return lv_fail(err, LV_ERR_IO, "cannot rename %s to %s: %s", part, blob, strerror(errno));
    return LV_OK;
}

/* The bytes of file `name` from url into part, resuming from its size,
 * with the retries. */
static lv_status download_part(dl *d, const char *name, const char *url, const char *part,
                               int64_t size, lv_err *err) {
    char cerr[CURL_ERROR_SIZE] = "";
    CURLcode rc = CURLE_OK;
    long code = 0;
    for (int attempt = 1;; attempt++) {
        struct stat sb;
        int64_t have = stat(part, &sb) == 0 ? (int64_t)sb.st_size : 0;
        if (size >= 0 && have > size) { /* not this blob's prefix: start over */
            if (truncate(part, 0) != 0)
                return lv_fail(err, LV_ERR_IO, "%s: %s", part, strerror(errno));
            have = 0;
        }
        if (size >= 0 && have == size) return LV_OK; /* a complete partial from a past run */
        FILE *f = fopen(part, "ab");
        if (!f) return lv_fail(err, LV_ERR_IO, "cannot write %s: %s", part, strerror(errno));
        lv_progress bar;
        lv_progress_start(&bar, d->progress, name, have, size);
        sink s = {.d = d, .f = f, .offset = have, .bar = &bar};
        hf_headers hd;
        rc = perform(d, url, true, have, &s, &hd, &code, cerr);
        bool ok = rc == CURLE_OK && code >= 200 && code < 300;
        if (fflush(f) != 0 || (ok && fsync(fileno(f)) != 0)) s.write_errno = errno;
        fclose(f);
        d->bytes_fetched += s.written;
        if (s.write_errno)
            return lv_fail(err, LV_ERR_IO, "disk error writing %s: %s", part,
                           strerror(s.write_errno));
        if (ok) {
            lv_progress_end(&bar, true);
            return LV_OK;
        }
        if (bar.drawn) fputc('\n', d->progress);
        if (rc == CURLE_OK && code == 416 && have > 0) { /* the partial is not a prefix */
            if (truncate(part, 0) != 0)
                return lv_fail(err, LV_ERR_IO, "%s: %s", part, strerror(errno));
        } else if (!transient(rc, code)) {
            break;
        }
        if (attempt == HF_TRIES) break;
        LV_WARN("%s: %s: %s after %.1f MiB; resuming in %.1f s (try %d of %d)", d->repo, name,
                rc ? (cerr[0] ? cerr : curl_easy_strerror(rc)) : "server error",
                (have + s.written) / 1048576.0, backoff(d, attempt + 1) / 1000.0, attempt + 1,
                HF_TRIES);
        sleep_ms(backoff(d, attempt + 1));
    }
    if (rc != CURLE_OK)
        return lv_fail(err, LV_ERR_IO,
                       "%s: %s: download failed after %d tries: %s (the partial file is kept "
                       "and resumed next time)",
                       d->repo, name, HF_TRIES, cerr[0] ? cerr : curl_easy_strerror(rc));
    char what[600];
    snprintf(what, sizeof what, "%s: %s", d->repo, name);
    hf_headers none = {.linked_size = -1, .content_length = -1};
    return http_error(d, what, code, &none, err);
}

/* The blob of file i: already there, or downloaded under its lock. */
static lv_status fetch_blob(dl *d, const char *name, const char *url, const char *etag,
                            int64_t size, lv_err *err) {
    char blob[PATH_MAX], part[PATH_MAX], lock[PATH_MAX];
    lv_status st;
    if ((st = pathf(blob, sizeof blob, err, "%s/blobs/%s", d->repo_dir, etag)) ||
        (st = pathf(part, sizeof part, err, "%s.incomplete", blob)) ||
        (st = pathf(lock, sizeof lock, err, "%s/%s.lock", d->lock_dir, etag)))
        return st;
    struct stat sb;
    if (stat(blob, &sb) == 0 && (size < 0 || sb.st_size == size)) return LV_OK;
    if ((st = mkdir_parent(blob, err)) || (st = mkdirs(d->lock_dir, err))) return st;
    /* Another process fetching the same blob holds the lock until its
     * rename: wait for it, then find the blob there. */
    int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return lv_fail(err, LV_ERR_IO, "cannot create %s: %s", lock, strerror(errno));
    if (flock(fd, LOCK_EX) != 0) {
        close(fd);
        return lv_fail(err, LV_ERR_IO, "cannot lock %s: %s", lock, strerror(errno));
    }
    if (stat(blob, &sb) == 0 && (size < 0 || sb.st_size == size)) {
        close(fd);
        return LV_OK;
    }
    st = download_part(d, name, url, part, size, err);
    if (!st) st = finish_blob(d, name, part, blob, etag, size, err);
    if (!st) d->n_fetched++;
    close(fd); /* releases the lock */
    return st;
}

/* File i of the selection: its metadata (HEAD), then its blob. */
static lv_status fetch_file(dl *d, size_t i, lv_err *err) {
    const char *name = d->sel.names[i];
    char what[600], path[2048], url[PATH_MAX + 1024];
    snprintf(what, sizeof what, "%s: %s", d->repo, name);
    if (!rel_path_ok(name) || !url_escape(path, sizeof path, name, true))
        return lv_fail(err, LV_ERR_IO, "%s: not a file name this cache can hold", what);
    snprintf(url, sizeof url, "%s/%s/resolve/%s/%s", d->endpoint, d->repo, d->commit, path);
    hf_headers hd;
    long code = 0;
    lv_status st;
    for (int hop = 0;; hop++) {
        if ((st = request(d, what, url, false, NULL, &hd, &code, err))) return st;
        if (code < 300 || code >= 400 || hd.linked_etag[0]) break;
        char *next = NULL; /* a renamed repo: ask again where it went */
        curl_easy_getinfo(d->h, CURLINFO_REDIRECT_URL, &next);
        if (!next || hop == HF_MAX_HOPS)
            return lv_fail(err, LV_ERR_IO, "%s: too many redirects", what);
        snprintf(url, sizeof url, "%s", next);
    }
    /* The blob id: the LFS sha256 when the answer is a CDN redirect, else
     * the ETag, without W/ and quotes. */
    const char *e = hd.linked_etag[0] ? hd.linked_etag : hd.etag;
    if (strncmp(e, "W/", 2) == 0) e += 2;
    char etag[HF_ID_MAX];
    snprintf(etag, sizeof etag, "%s", e + (*e == '"'));
    if (etag[0] && etag[strlen(etag) - 1] == '"') etag[strlen(etag) - 1] = '\0';
    if (!id_ok(etag))
        return lv_fail(err, LV_ERR_IO, "%s: the hub sent no usable ETag ('%s')", what, e);
    int64_t size = hd.linked_size >= 0 ? hd.linked_size : hd.content_length;
    if (code >= 300) { /* an LFS file: download from where it points */
        char *next = NULL;
        curl_easy_getinfo(d->h, CURLINFO_REDIRECT_URL, &next);
        if (next) snprintf(url, sizeof url, "%s", next);
    }
    if (!(d->etags[i] = strdup(etag))) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    return fetch_blob(d, name, url, etag, size, err);
}

/* ---- snapshot and refs ----------------------------------------------------------------- */

/* dir/name → ../(..)/blobs/etag, created aside and renamed into place. */
static lv_status link_file(const char *dir, const char *name, const char *etag, lv_err *err) {
    char path[PATH_MAX], tmp[PATH_MAX], target[PATH_MAX] = "";
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return lv_fail(err, LV_ERR_ARG, "%s/%s: path too long", dir, name);
    size_t len = 0;
    for (const char *c = name; *c; c++) /* one ".." per folder of name, then two */
        if (*c == '/') len += (size_t)snprintf(target + len, sizeof target - len, "../");
    snprintf(target + len, sizeof target - len, "../../blobs/%s", etag);
    lv_status st;
    if ((st = pathf(tmp, sizeof tmp, err, "%s.tmp-%ld", path, (long)getpid())) ||
        (st = mkdir_parent(path, err)))
        return st;
    unlink(tmp);
    if (symlink(target, tmp) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return lv_fail(err, LV_ERR_IO, "cannot link %s: %s", path, strerror(e));
    }
    return LV_OK;
}

/* rm -r path (a staging folder of links and folders; symlinks are not followed). */
static void remove_tree(const char *path) {
    struct stat sb;
    if (lstat(path, &sb) != 0) return;
    if (S_ISDIR(sb.st_mode)) {
        DIR *dd = opendir(path);
        struct dirent *e;
        while (dd && (e = readdir(dd))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char sub[PATH_MAX];
            if (snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) < (int)sizeof sub)
                remove_tree(sub);
        }
        if (dd) closedir(dd);
    }
    remove(path);
}

/* snapshots/<commit>/ with a link per file. A new one is built in a hidden
 * folder and renamed in, so hf_cache never sees it half made. */
static lv_status link_snapshot(dl *d, lv_err *err) {
    char snap[PATH_MAX], stage[PATH_MAX];
    lv_status st = pathf(snap, sizeof snap, err, "%s/snapshots/%s", d->repo_dir, d->commit);
    if (st) return st;
    if (lv_is_dir(snap)) {
        for (size_t i = 0; i < d->sel.n && !st; i++)
            st = link_file(snap, d->sel.names[i], d->etags[i], err);
        return st;
    }
    if ((st = pathf(stage, sizeof stage, err, "%s/snapshots/.%s.incomplete-%ld", d->repo_dir,
                    d->commit, (long)getpid())))
        return st;
    remove_tree(stage); /* a crashed run's, if any */
    if ((st = mkdirs(stage, err))) return st;
    for (size_t i = 0; i < d->sel.n && !st; i++)
        st = link_file(stage, d->sel.names[i], d->etags[i], err);
    if (!st && rename(stage, snap) != 0) {
        if (errno == EEXIST || errno == ENOTEMPTY) { /* another process made it meanwhile */
            for (size_t i = 0; i < d->sel.n && !st; i++)
                st = link_file(snap, d->sel.names[i], d->etags[i], err);
        } else {
            st =
                lv_fail(err, LV_ERR_IO, "cannot rename %s to %s: %s", stage, snap, strerror(errno));
        }
    }
    remove_tree(stage);
    return st;
}

/* refs/<rev> holds the commit (huggingface_hub writes none for a commit). */
static lv_status write_ref(dl *d, lv_err *err) {
    if (strcmp(d->rev, d->commit) == 0) return LV_OK;
    char path[PATH_MAX], tmp[PATH_MAX];
    lv_status st;
    if ((st = pathf(path, sizeof path, err, "%s/refs/%s", d->repo_dir, d->rev)) ||
        (st = pathf(tmp, sizeof tmp, err, "%s.tmp-%ld", path, (long)getpid())) ||
        (st = mkdir_parent(path, err)))
        return st;
    FILE *f = fopen(tmp, "w");
    if (!f) return lv_fail(err, LV_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    bool ok = fputs(d->commit, f) >= 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return lv_fail(err, LV_ERR_IO, "cannot write %s: %s", path, strerror(e));
    }
    return LV_OK;
}

/* ---- the whole download ---------------------------------------------------------------- */

/* ref → repo[cap] and the tag after ':' (NULL if none; points into ref). */
static lv_status split_ref(const char *ref, char *repo, size_t cap, const char **quant,
                           lv_err *err) {
    const char *colon = strchr(ref, ':');
    size_t n = colon ? (size_t)(colon - ref) : strlen(ref);
    *quant = colon && colon[1] ? colon + 1 : NULL;
    if (n >= cap) return lv_fail(err, LV_ERR_ARG, "model '%s' is not a repo id (ORG/NAME)", ref);
    memcpy(repo, ref, n);
    repo[n] = '\0';
    if (!hf_is_repo_id(repo))
        return lv_fail(err, LV_ERR_ARG,
                       "model '%s' is not a Hugging Face repo id (ORG/NAME or ORG/NAME:QUANT)",
                       ref);
    return LV_OK;
}

/* Endpoint, token and the cache folders from the environment. */
static lv_status dl_init(dl *d, const char *repo, const hf_dl_opts *o, lv_err *err) {
    d->o = o;
    d->progress = o->progress ? o->progress : stderr;
    d->rev = o->revision && *o->revision ? o->revision : "main";
    snprintf(d->repo, sizeof d->repo, "%s", repo);
    if (!rel_path_ok(d->rev))
        return lv_fail(err, LV_ERR_ARG, "revision '%s' is not a branch, tag or commit name",
                       d->rev);
    const char *ep = getenv("HF_ENDPOINT");
    snprintf(d->endpoint, sizeof d->endpoint, "%s", ep && *ep ? ep : HF_DEFAULT_ENDPOINT);
    for (size_t n = strlen(d->endpoint); n > 0 && d->endpoint[n - 1] == '/'; n--)
        d->endpoint[n - 1] = '\0';
    const char *tok = getenv("HF_TOKEN");
    d->token = tok && *tok ? tok : NULL;
    char roots[HF_MAX_ROOTS][PATH_MAX];
    if (hf_cache_roots(roots) == 0)
        return lv_fail(err, LV_ERR_IO,
                       "no cache directory to download into: set HF_HOME (or HF_HUB_CACHE)");
    const char *slash = strchr(repo, '/');
    if (snprintf(d->repo_dir, sizeof d->repo_dir, "%s/models--%.*s--%s", roots[0],
                 (int)(slash - repo), repo, slash + 1) >= (int)sizeof d->repo_dir ||
        snprintf(d->lock_dir, sizeof d->lock_dir, "%s/.locks/models--%.*s--%s", roots[0],
                 (int)(slash - repo), repo, slash + 1) >= (int)sizeof d->lock_dir)
        return lv_fail(err, LV_ERR_ARG, "%s: the cache path is too long", roots[0]);
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return lv_fail(err, LV_ERR_IO, "libcurl initialisation failed: %s",
                       curl_easy_strerror(curl_init_rc));
    if (!(d->h = curl_easy_init())) return lv_fail(err, LV_ERR_NOMEM, "libcurl: no handle");
    return LV_OK;
}

static void dl_free(dl *d) {
    if (d->h) curl_easy_cleanup(d->h);
    for (size_t i = 0; i < d->n_siblings; i++) free(d->siblings[i]);
    free(d->siblings);
    if (d->etags)
        for (size_t i = 0; i < d->sel.n; i++) free(d->etags[i]);
    free(d->etags);
    hf_selection_free(&d->sel);
}

/* Room for an etag per selected file (after the selection grew). */
static lv_status grow_etags(dl *d, size_t old_n, lv_err *err) {
    char **p = realloc(d->etags, (d->sel.n ? d->sel.n : 1) * sizeof *p);
    if (!p) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    d->etags = p;
    for (size_t i = old_n; i < d->sel.n; i++) p[i] = NULL;
    return LV_OK;
}

static lv_status fetch_range(dl *d, size_t from, lv_err *err) {
    lv_status st = grow_etags(d, from, err);
    for (size_t i = from; i < d->sel.n && !st; i++) st = fetch_file(d, i, err);
    return st;
}

/* out's paths: the snapshot (as hf_cache finds it, for main) and the GGUF pair in it. */
static lv_status fill_result(dl *d, hf_model *out, lv_err *err) {
    lv_status st;
    if (strcmp(d->rev, "main") == 0) {
        if ((st = hf_resolve_model(d->repo, &out->dir, err))) return st;
    } else {
        char snap[PATH_MAX];
        if ((st = pathf(snap, sizeof snap, err, "%s/snapshots/%s", d->repo_dir, d->commit)))
            return st;
        if (!(out->dir = realpath(snap, NULL)))
            return lv_fail(err, LV_ERR_IO, "%s: %s", snap, strerror(errno));
    }
    char p[PATH_MAX * 2];
    if (d->sel.gguf_text >= 0) {
        snprintf(p, sizeof p, "%s/%s", out->dir, d->sel.names[d->sel.gguf_text]);
        out->model = strdup(p);
        snprintf(p, sizeof p, "%s/%s", out->dir, d->sel.names[d->sel.gguf_mmproj]);
        if (!(out->mmproj = strdup(p))) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    } else {
        out->model = strdup(out->dir);
    }
    if (!out->model) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    out->n_fetched = d->n_fetched;
    out->bytes_fetched = d->bytes_fetched;
    return LV_OK;
}

lv_status hf_download(const char *ref, const hf_dl_opts *opts, hf_model *out, lv_err *err) {
    static const hf_dl_opts defaults = {0};
    const hf_dl_opts *o = opts ? opts : &defaults;
    memset(out, 0, sizeof *out);
    char repo[200];
    const char *quant;
    lv_status st = split_ref(ref ? ref : "", repo, sizeof repo, &quant, err);
    if (st) return st;
    if (o->offline || hf_offline_env())
        return lv_fail(err, LV_ERR_ARG,
                       "model '%s': cannot download while offline (--offline or HF_HUB_OFFLINE)",
                       ref);
    dl d = {0};
    d.sel.gguf_text = d.sel.gguf_mmproj = -1;
    if ((st = dl_init(&d, repo, o, err)) || (st = get_revision(&d, err))) goto done;
    LV_INFO("%s: revision %s is commit %s on %s; downloading into %s", repo, d.rev, d.commit,
            d.endpoint, d.repo_dir);
    const char *const *files = (const char *const *)d.siblings;
    if ((st = hf_select_files(files, d.n_siblings, quant, &d.sel, err))) {
        lv_err_prefix(err, "%s", repo);
        goto done;
    }
    if ((st = fetch_range(&d, 0, err))) goto done;
    if (d.sel.has_index) { /* the shards the index names, now that it is here */
        size_t n0 = d.sel.n;
        char index[PATH_MAX];
        for (size_t i = 0; i < n0; i++)
            if (strcmp(d.sel.names[i], "model.safetensors.index.json") == 0)
                st = pathf(index, sizeof index, err, "%s/blobs/%s", d.repo_dir, d.etags[i]);
        if (st) goto done;
        if ((st = hf_select_shards(&d.sel, index, files, d.n_siblings, err))) {
            lv_err_prefix(err, "%s", repo);
            goto done;
        }
        if ((st = fetch_range(&d, n0, err))) goto done;
    }
    if ((st = link_snapshot(&d, err)) || (st = write_ref(&d, err)) ||
        (st = fill_result(&d, out, err)))
        goto done;
    LV_INFO("%s: %d of %zu files downloaded (%.1f MiB); snapshot %s", repo, d.n_fetched, d.sel.n,
            d.bytes_fetched / 1048576.0, out->dir);
done:
    if (st) hf_model_free(out);
    dl_free(&d);
    return st;
}

/* ---- the tools' entry: local first ----------------------------------------------------- */

/* The GGUF pair of a cached snapshot for the tag (or the default pick):
 * true when dir holds one. */
static bool cached_gguf(const char *dir, const char *quant, hf_model *out) {
    DIR *dd = opendir(dir);
    if (!dd) return false;
    char *names[256];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(dd)) && n < LV_ARRAY_LEN(names))
        if (e->d_name[0] != '.' && (names[n] = strdup(e->d_name))) n++;
    closedir(dd);
    int text, mm;
    hf_pick_gguf((const char *const *)names, n, quant, &text, &mm);
    char p[PATH_MAX * 2];
    bool ok = text >= 0 && mm >= 0;
    if (ok) {
        snprintf(p, sizeof p, "%s/%s", dir, names[text]);
        out->model = strdup(p);
        snprintf(p, sizeof p, "%s/%s", dir, names[mm]);
        out->mmproj = strdup(p);
        ok = out->model && out->mmproj;
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    return ok;
}

lv_status hf_get_model(const char *ref, const hf_dl_opts *opts, hf_model *out, lv_err *err) {
    static const hf_dl_opts defaults = {0};
    const hf_dl_opts *o = opts ? opts : &defaults;
    memset(out, 0, sizeof *out);
    struct stat sb;
    if (!ref || !*ref || stat(ref, &sb) == 0) { /* a local path (or hf_resolve's "empty") */
        lv_status st = hf_resolve_model(ref, &out->dir, err);
        if (!st && !(out->model = strdup(out->dir)))
            st = lv_fail(err, LV_ERR_NOMEM, "out of memory");
        if (st) hf_model_free(out);
        return st;
    }
    char repo[200];
    const char *quant;
    if (split_ref(ref, repo, sizeof repo, &quant, NULL)) /* hf_resolve_model says why */
        return hf_resolve_model(ref, &out->dir, err);
    bool offline = o->offline || hf_offline_env();
    lv_err local;
    lv_status lst = hf_resolve_model(repo, &out->dir, &local);
    if (lst == LV_OK) {
        char config[PATH_MAX * 2];
        snprintf(config, sizeof config, "%s/config.json", out->dir);
        bool is_st = !quant && lv_is_file(config);
        if (is_st && (out->model = strdup(out->dir))) return LV_OK;
        if (!is_st && cached_gguf(out->dir, quant, out)) return LV_OK;
        lst = lv_fail(&local, LV_ERR_ARG,
                      "model '%s': the cached snapshot %s holds no %s GGUF pair (text model and "
                      "mmproj)",
                      ref, out->dir, quant ? quant : "usable");
        hf_model_free(out);
    }
    if (offline) {
        if (err) *err = local; /* the error there was before downloads existed */
        return lst;
    }
    LV_INFO("model '%s' is not in the local cache: downloading it", ref);
    return hf_download(ref, o, out, err);
}
