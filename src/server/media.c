/* media.c - see media.h. */
#include "media.h"

#include "base/base64.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

void media_policy_default(media_policy *pol) {
    pol->max_bytes = MEDIA_DEFAULT_MAX_BYTES;
    pol->allowed_local_dir = NULL;
    pol->allow_remote = true;
    pol->allow_private_addresses = false;
    pol->timeout_s = MEDIA_DEFAULT_TIMEOUT_S;
    pol->video = false;
}

/* A printable, shortened form of url for messages: at most 60 bytes, with
 * control characters replaced, "..." when cut. */
static const char *url_label(const char *url, char out[72]) {
    size_t i = 0;
    for (; url[i] && i < 60; i++) {
        unsigned char c = (unsigned char)url[i];
        out[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (url[i]) memcpy(out + i, "...", 3), i += 3;
    out[i] = '\0';
    return out;
}

/* ------------------------------------------------------------------------ */
/* Address classification                                                    */

static bool v4_blocked(uint32_t a) { /* a in host order */
    uint32_t o1 = a >> 24, o2 = a >> 16 & 0xff, o3 = a >> 8 & 0xff;
    if (o1 == 0 || o1 == 10 || o1 == 127) return true;             /* this-net, private, loopback */
    if (o1 == 100 && (o2 & 0xc0) == 64) return true;               /* 100.64/10 carrier NAT */
    if (o1 == 169 && o2 == 254) return true;                       /* link-local (cloud metadata) */
    if (o1 == 172 && (o2 & 0xf0) == 16) return true;               /* 172.16/12 */
    if (o1 == 192 && o2 == 168) return true;                       /* 192.168/16 */
    if (o1 == 192 && o2 == 0 && (o3 == 0 || o3 == 2)) return true; /* IETF, TEST-NET-1 */
    if (o1 == 198 && (o2 & 0xfe) == 18) return true;               /* 198.18/15 benchmarking */
    if (o1 == 198 && o2 == 51 && o3 == 100) return true;           /* TEST-NET-2 */
    if (o1 == 203 && o2 == 0 && o3 == 113) return true;            /* TEST-NET-3 */
    if (o1 >= 224) return true; /* multicast 224/4, reserved 240/4, broadcast */
    return false;
}

static uint32_t v4_at(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static bool v6_blocked(const uint8_t b[16]) {
    static const uint8_t zero[16];
    bool first10_zero = memcmp(b, zero, 10) == 0;
    if (first10_zero && b[10] == 0xff && b[11] == 0xff)
        return v4_blocked(v4_at(b + 12)); /* mapped */
    if (first10_zero && b[10] == 0 && b[11] == 0) {
        /* :: and ::1, and the deprecated IPv4-compatible ::a.b.c.d. */
        if (memcmp(b + 12, zero, 3) == 0 && b[15] <= 1) return true;
        return v4_blocked(v4_at(b + 12));
    }
    if ((b[0] & 0xfe) == 0xfc) return true;                 /* fc00::/7 ULA */
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return true; /* fe80::/10 link-local */
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) return true; /* fec0::/10 site-local */
    if (b[0] == 0xff) return true;                          /* ff00::/8 multicast */
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) return true; /* doc */
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0) return true;       /* Teredo */
    if (b[0] == 0x01 && b[1] == 0 && memcmp(b + 2, zero, 6) == 0) return true;     /* 100::/64 */
    if (b[0] == 0 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && memcmp(b + 4, zero, 8) == 0)
        return v4_blocked(v4_at(b + 12));                              /* 64:ff9b::/96 NAT64 */
    if (b[0] == 0x20 && b[1] == 0x02) return v4_blocked(v4_at(b + 2)); /* 2002::/16 6to4 */
    return false;
}

bool media_addr_blocked(int family, const void *addr) {
    if (!addr) return true;
    if (family == AF_INET) {
        const struct in_addr *a = addr;
        return v4_blocked(ntohl(a->s_addr));
    }
    if (family == AF_INET6) {
        const struct in6_addr *a = addr;
        return v6_blocked(a->s6_addr);
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* data: URIs                                                                */

/* data:[<mediatype>][;param=value]*[;base64],<data> (RFC 2397). */
static lv_status fetch_data(const char *url, const media_policy *pol, uint8_t **data, size_t *len,
                            lv_err *err) {
    const char *hdr = url + 5; /* after "data:" */
    const char *comma = strchr(hdr, ',');
    if (!comma) return lv_fail(err, LV_ERR_FORMAT, "data: URI has no ',' before its data");
    size_t hlen = (size_t)(comma - hdr);
    size_t mlen = strcspn(hdr, ";,");
    char mt[64];
    if (mlen == 0)
        return lv_fail(err, LV_ERR_ARG,
                       "data: URI has no media type (text/plain by default); expected "
                       "data:image/...;base64,...");
    snprintf(mt, sizeof mt, "%.*s", (int)(mlen < 60 ? mlen : 60), hdr);
    for (char *p = mt; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    bool ok = mlen > 6 && strncasecmp(hdr, "image/", 6) == 0;
    if (pol->video)
        ok = ok || (mlen > 6 && strncasecmp(hdr, "video/", 6) == 0) ||
             (mlen == 24 && strncasecmp(hdr, "application/octet-stream", 24) == 0);
    if (!ok)
        return lv_fail(err, LV_ERR_ARG, "data: URI has media type '%s'%s, expected %s", mt,
                       mlen > 60 ? "..." : "", pol->video ? "video/* or image/*" : "image/*");
    /* ";base64" must be the last parameter, right before the comma. */
    if (hlen < mlen + 7 || strncasecmp(comma - 7, ";base64", 7) != 0)
        return lv_fail(err, LV_ERR_ARG,
                       "data: URI for %s is not base64-encoded (expected data:%s;base64,...)", mt,
                       mt);
    const char *b64 = comma + 1;
    if (!*b64) return lv_fail(err, LV_ERR_FORMAT, "data: URI for %s has no data", mt);
    lv_status st = lv_base64_decode(b64, strlen(b64), pol->max_bytes, data, len, err);
    if (st != LV_OK) lv_err_prefix(err, "data: URI");
    return st;
}

/* ------------------------------------------------------------------------ */
/* file:// URLs                                                              */

/* Lexically normalises an absolute path in place: collapses "//", "." and
 * ".." (never above "/"). No file system access. */
static void normalize_lexical(char *p) {
    char *out = p, *in = p;
    /* p[0] == '/' */
    out++;
    in++;
    while (*in) {
        while (*in == '/') in++;
        if (!*in) break;
        size_t n = strcspn(in, "/");
        if (n == 1 && in[0] == '.') {
            /* skip */
        } else if (n == 2 && in[0] == '.' && in[1] == '.') {
            if (out > p + 1) {
                out--; /* the '/' after the last component */
                while (out > p + 1 && out[-1] != '/') out--;
            }
        } else {
            memmove(out, in, n);
            out += n;
            *out++ = '/';
        }
        in += n;
    }
    if (out > p + 1) out--; /* drop the trailing '/' */
    *out = '\0';
}

/* path lies at or below dir (both normalised absolute paths). */
static bool path_under(const char *dir, const char *path) {
    size_t dl = strlen(dir);
    if (dl == 1 && dir[0] == '/') return path[0] == '/';
    return strncmp(path, dir, dl) == 0 && (path[dl] == '/' || path[dl] == '\0');
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static lv_status fetch_file(const char *url, const media_policy *pol, uint8_t **data, size_t *len,
                            lv_err *err) {
    char label[72];
    url_label(url, label);
    if (!pol->allowed_local_dir)
        return lv_fail(err, LV_ERR_ARG,
                       "file:// image URLs are disabled on this server (start it with "
                       "--allowed-local-media-path DIR)");
    const char *p = url + 7; /* after "file://" */
    if (strncasecmp(p, "localhost/", 10) == 0) p += 9;
    if (*p != '/')
        return lv_fail(err, LV_ERR_ARG, "%s: file:// URLs must be file:///absolute/path (no host)",
                       label);

    /* Percent-decode the path. */
    char path[PATH_MAX];
    size_t n = 0;
    for (; *p; p++) {
        char c = *p;
        if (c == '%') {
            int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return lv_fail(err, LV_ERR_ARG, "%s: bad percent-escape in file:// URL", label);
            c = (char)(hi << 4 | lo);
            p += 2;
        }
        if (n + 1 >= sizeof path) return lv_fail(err, LV_ERR_ARG, "%s: path too long", label);
        path[n++] = c;
    }
    path[n] = '\0';

    char *dir_real = realpath(pol->allowed_local_dir, NULL);
    if (!dir_real)
        return lv_fail(err, LV_ERR_IO, "allowed media directory %s: cannot resolve: %s",
                       pol->allowed_local_dir, strerror(errno));
    char dir_lex[PATH_MAX];
    int dn = snprintf(dir_lex, sizeof dir_lex, "%s", pol->allowed_local_dir);
    bool have_lex = dir_lex[0] == '/' && dn > 0 && dn < (int)sizeof dir_lex;
    if (have_lex) normalize_lexical(dir_lex);

    /* First lexically (no file system access, so a refused path cannot be
     * used to probe which files exist elsewhere), then after resolving
     * symlinks (so a link inside the directory cannot point outside it). */
    char lex[PATH_MAX];
    memcpy(lex, path, n + 1);
    normalize_lexical(lex);
    lv_status st = LV_OK;
    char *real = NULL;
    int fd = -1;
    if (!path_under(dir_real, lex) && !(have_lex && path_under(dir_lex, lex))) {
        st = lv_fail(err, LV_ERR_ARG, "%s is outside the allowed media directory %s", label,
                     pol->allowed_local_dir);
        goto done;
    }
    real = realpath(path, NULL);
    if (!real) {
        st = lv_fail(err, LV_ERR_IO, "%s: cannot open: %s", label, strerror(errno));
        goto done;
    }
    if (!path_under(dir_real, real)) {
        st = lv_fail(err, LV_ERR_ARG,
                     "%s resolves (through a symbolic link) outside the allowed media directory %s",
                     label, pol->allowed_local_dir);
        goto done;
    }
    /* O_NOFOLLOW: the last component cannot have become a link since
     * realpath; O_NONBLOCK: a FIFO cannot hang the request. */
    fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        st = lv_fail(err, LV_ERR_IO, "%s: cannot open: %s", label, strerror(errno));
        goto done;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = lv_fail(err, LV_ERR_IO, "%s: not a regular file", label);
        goto done;
    }
    if ((uint64_t)sb.st_size > pol->max_bytes) {
        st = lv_fail(err, LV_ERR_TOO_LARGE, "%s: file is %lld bytes, over the limit of %zu", label,
                     (long long)sb.st_size, pol->max_bytes);
        goto done;
    }
    size_t size = (size_t)sb.st_size;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) {
        st = lv_fail(err, LV_ERR_NOMEM, "%s: cannot allocate %zu bytes", label, size);
        goto done;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            free(buf);
            st =
                lv_fail(err, LV_ERR_IO, "%s: read failed after %zu of %zu bytes", label, got, size);
            goto done;
        }
        got += (size_t)r;
    }
    *data = buf;
    *len = size;
done:
    if (fd >= 0) close(fd);
    free(real);
    free(dir_real);
    return st;
}

/* ------------------------------------------------------------------------ */
/* http(s):// through libcurl                                                */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;
static void curl_init(void) {
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

typedef struct {
    uint8_t *buf;
    size_t len, cap, max;
    bool too_big;       /* the body went past max */
    bool allow_private; /* policy */
    bool blocked;       /* a connection to a refused address was stopped */
    char blocked_ip[INET6_ADDRSTRLEN];
} http_ctx;

/* Called by curl for every socket it is about to connect, after DNS and on
 * every redirect: the address here is the one that will be connected to. */
static curl_socket_t open_socket(void *user, curlsocktype purpose, struct curl_sockaddr *a) {
    http_ctx *c = user;
    if (purpose != CURLSOCKTYPE_IPCXN) return CURL_SOCKET_BAD;
    const void *ip = NULL;
    if (a->family == AF_INET && a->addrlen >= sizeof(struct sockaddr_in))
        ip = &((const struct sockaddr_in *)(const void *)&a->addr)->sin_addr;
    else if (a->family == AF_INET6 && a->addrlen >= sizeof(struct sockaddr_in6))
        ip = &((const struct sockaddr_in6 *)(const void *)&a->addr)->sin6_addr;
    if (!c->allow_private && (!ip || media_addr_blocked(a->family, ip))) {
        c->blocked = true;
        if (!ip || !inet_ntop(a->family, ip, c->blocked_ip, sizeof c->blocked_ip))
            snprintf(c->blocked_ip, sizeof c->blocked_ip, "(family %d)", a->family);
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *user) {
    http_ctx *c = user;
    size_t n = size * nmemb;
    if (n > c->max - c->len) {
        c->too_big = true;
        return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    }
    if (c->len + n > c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64 * 1024;
        while (cap < c->len + n) cap *= 2;
        if (cap > c->max) cap = c->max;
        uint8_t *nb = realloc(c->buf, cap ? cap : 1);
        if (!nb) return 0;
        c->buf = nb;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, ptr, n);
    c->len += n;
    return n;
}

static lv_status fetch_http(const char *url, const media_policy *pol, uint8_t **data, size_t *len,
                            lv_err *err) {
    char label[72];
    url_label(url, label);
    if (!pol->allow_remote)
        return lv_fail(err, LV_ERR_ARG, "%s: remote image URLs are disabled on this server", label);
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return lv_fail(err, LV_ERR_IO, "libcurl initialisation failed: %s",
                       curl_easy_strerror(curl_init_rc));
    CURL *h = curl_easy_init();
    if (!h) return lv_fail(err, LV_ERR_NOMEM, "libcurl: cannot create a handle");
    http_ctx c = {.max = pol->max_bytes, .allow_private = pol->allow_private_addresses};
    char cerr[CURL_ERROR_SIZE] = "";
    long timeout = pol->timeout_s > 0 ? pol->timeout_s : MEDIA_DEFAULT_TIMEOUT_S;
    CURLcode rc = CURLE_OK;
#define SETOPT(opt, val)                                                                           \
    if (rc == CURLE_OK) rc = curl_easy_setopt(h, opt, val)
    SETOPT(CURLOPT_URL, url);
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SETOPT(CURLOPT_FOLLOWLOCATION, 1L);
    SETOPT(CURLOPT_MAXREDIRS, (long)MEDIA_MAX_REDIRECTS);
    SETOPT(CURLOPT_TIMEOUT, timeout);
    SETOPT(CURLOPT_CONNECTTIMEOUT, timeout);
    SETOPT(CURLOPT_NOSIGNAL, 1L); /* no SIGALRM in a threaded server */
    /* A proxy (from http_proxy & co.) would make the address we check the
     * proxy's, not the target's: fetch directly. */
    SETOPT(CURLOPT_PROXY, "");
    SETOPT(CURLOPT_OPENSOCKETFUNCTION, open_socket);
    SETOPT(CURLOPT_OPENSOCKETDATA, &c);
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, &c);
    SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)pol->max_bytes);
    SETOPT(CURLOPT_ERRORBUFFER, cerr);
    SETOPT(CURLOPT_USERAGENT, "llava-server");
#undef SETOPT
    if (rc != CURLE_OK) {
        curl_easy_cleanup(h);
        return lv_fail(err, LV_ERR_IO, "libcurl: cannot configure: %s", curl_easy_strerror(rc));
    }
    rc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);

    lv_status st = LV_OK;
    if (c.blocked && rc != CURLE_OK)
        st = lv_fail(err, LV_ERR_ARG,
                     "%s: refused to connect to %s (loopback, private, link-local or reserved "
                     "address)",
                     label, c.blocked_ip);
    else if (c.too_big || rc == CURLE_FILESIZE_EXCEEDED)
        st = lv_fail(err, LV_ERR_TOO_LARGE, "%s: image is over the limit of %zu bytes", label,
                     pol->max_bytes);
    else if (rc == CURLE_OPERATION_TIMEDOUT)
        st = lv_fail(err, LV_ERR_IO, "%s: timed out after %ld s", label, timeout);
    else if (rc == CURLE_TOO_MANY_REDIRECTS)
        st = lv_fail(err, LV_ERR_ARG, "%s: more than %d redirects", label, MEDIA_MAX_REDIRECTS);
    else if (rc == CURLE_UNSUPPORTED_PROTOCOL)
        st = lv_fail(err, LV_ERR_ARG, "%s: redirected to a URL that is not http(s)", label);
    else if (rc != CURLE_OK)
        st = lv_fail(err, LV_ERR_IO, "%s: %s", label, cerr[0] ? cerr : curl_easy_strerror(rc));
    else if (code < 200 || code > 299)
        st = lv_fail(err, LV_ERR_IO, "%s: server answered HTTP %ld", label, code);
    else if (c.len == 0)
        st = lv_fail(err, LV_ERR_IO, "%s: empty response body", label);
    if (st != LV_OK) {
        free(c.buf);
        return st;
    }
    *data = c.buf;
    *len = c.len;
    return LV_OK;
}

/* ------------------------------------------------------------------------ */

lv_status media_fetch(const char *url, const media_policy *pol, uint8_t **data, size_t *len,
                      lv_err *err) {
    *data = NULL;
    *len = 0;
    media_policy def;
    if (!pol) {
        media_policy_default(&def);
        pol = &def;
    }
    if (!url || !*url) return lv_fail(err, LV_ERR_ARG, "image URL is empty");
    /* scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":" (RFC 3986) */
    size_t sl = 0;
    for (;; sl++) {
        unsigned char c = (unsigned char)url[sl];
        if (!(isalpha(c) || (sl && (isdigit(c) || c == '+' || c == '-' || c == '.')))) break;
    }
    if (url[sl] != ':' || sl == 0) {
        char label[72];
        return lv_fail(err, LV_ERR_ARG,
                       "image URL '%s' has no scheme (use data:, http(s):// or file:// with "
                       "--allowed-local-media-path)",
                       url_label(url, label));
    }
    if (sl == 4 && strncasecmp(url, "data", 4) == 0) return fetch_data(url, pol, data, len, err);
    if (sl == 4 && strncasecmp(url, "file", 4) == 0 && strncmp(url + 5, "//", 2) == 0)
        return fetch_file(url, pol, data, len, err);
    if (((sl == 4 && strncasecmp(url, "http", 4) == 0) ||
         (sl == 5 && strncasecmp(url, "https", 5) == 0)) &&
        strncmp(url + sl + 1, "//", 2) == 0)
        return fetch_http(url, pol, data, len, err);
    char scheme[24];
    snprintf(scheme, sizeof scheme, "%.*s%s", (int)(sl < 16 ? sl : 16), url, sl > 16 ? "..." : "");
    return lv_fail(err, LV_ERR_ARG,
                   "unsupported image URL scheme '%s' (use data:, http(s):// or file:// with "
                   "--allowed-local-media-path)",
                   scheme);
}
