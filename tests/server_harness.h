/* server_harness.h - what the llava-server tests share: start the real
 * binary on 127.0.0.1 (port 0, read back from its "listening on" line),
 * talk to it with libcurl, stop it with SIGTERM and check it exits 0 (under
 * ASan, LeakSanitizer turns a leak at exit into a non-zero status).
 * Header-only (static inline) so each test program stays one file. */
#ifndef LV_TEST_SERVER_HARNESS_H
#define LV_TEST_SERVER_HARNESS_H

#include "base/base64.h"
#include "base/file.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Under ASan (-O0, 2 shared cores) the vision tower is ~30x slower and
 * the resident set is ASan's: the server tests use a smaller scale there. */
#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

typedef struct {
    pid_t pid;
    int port;
    char log[1024];
} srv;

static inline void srv_sleep_ms(long ms) {
    nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000L}, NULL);
}

/* The model the server tests serve: the demo model bundled with the
 * repository (models/demo), or LLAVA_TEST_MODEL when set (tests/CMakeLists.txt
 * runs the same programs again on a SmolVLM model that way). */
static inline const char *srv_demo_model(void) {
    static char path[1024];
    const char *other = getenv("LLAVA_TEST_MODEL");
    if (other && *other)
        snprintf(path, sizeof path, "%.1000s", other);
    else
        snprintf(path, sizeof path, "%.900s/../../models/demo", tu_env("LLAVA_TEST_DATA"));
    return path;
}

/* The demo model's sample images (whatever model is served). */
static inline const char *srv_demo_sample(const char *name) {
    static char path[4][1200];
    static int k;
    k = (k + 1) % 4;
    snprintf(path[k], sizeof path[k], "%.900s/../../models/demo/samples/%.100s",
             tu_env("LLAVA_TEST_DATA"), name);
    return path[k];
}

/* Starts llava-server with argv (NULL-terminated, without the program
 * name), stderr to log; env_kv: "NAME=VALUE" or NULL. Returns false if it
 * never said where it listens within 20 s. */
static inline bool srv_start(srv *s, const char *log, const char *const *argv, const char *env_kv) {
    memset(s, 0, sizeof *s);
    snprintf(s->log, sizeof s->log, "%.1000s", log);
    char bin[1024];
    snprintf(bin, sizeof bin, "%s/llava-server", tu_env("LLAVA_BIN_DIR"));
    const char *args[64] = {bin};
    int n = 1;
    for (; argv[n - 1] && n < 63; n++) args[n] = argv[n - 1];
    args[n] = NULL;
    s->pid = fork();
    if (s->pid == 0) {
        /* a test that fails midway must not leave its server behind, holding
         * ctest's output pipe open */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (!freopen(log, "w", stderr) || !freopen("/dev/null", "w", stdout)) _exit(126);
        if (env_kv) putenv((char *)env_kv);
        execv(bin, (char *const *)args);
        _exit(127);
    }
    for (int i = 0; i < 400 && !s->port; i++) {
        srv_sleep_ms(50);
        FILE *f = fopen(log, "r");
        char line[1024];
        while (f && fgets(line, sizeof line, f)) {
            const char *p = strstr(line, "listening on 127.0.0.1:");
            if (p) s->port = atoi(p + strlen("listening on 127.0.0.1:"));
        }
        if (f) fclose(f);
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = 0;
            return false;
        }
    }
    return s->port > 0;
}

/* SIGTERM, then the exit status (-1 if it did not exit within 30 s: killed). */
static inline int srv_stop(srv *s) {
    if (s->pid <= 0) return -1;
    kill(s->pid, SIGTERM);
    int status = -1;
    for (int i = 0; i < 600; i++) {
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        srv_sleep_ms(50);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &status, 0);
    s->pid = 0;
    return -1;
}

/* Whether the server log contains needle. */
static inline bool srv_log_has(const srv *s, const char *needle) {
    FILE *f = fopen(s->log, "r");
    char line[2048];
    bool found = false;
    while (f && !found && fgets(line, sizeof line, f)) found = strstr(line, needle) != NULL;
    if (f) fclose(f);
    return found;
}

/* ---- raw sockets ---------------------------------------------------------------------------
 * For clients libcurl will not play: one that stops reading, stalls its
 * upload or trickles it. */

/* A socket connected to the server (-1 on failure); rcvbuf > 0 makes its
 * receive buffer that small, so the server's writes block as soon as this
 * side stops reading. */
static inline int srv_connect(const srv *s, int rcvbuf) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends all n bytes; false if the peer is gone (no SIGPIPE). */
static inline bool srv_send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k <= 0) return false;
        p += k;
        n -= (size_t)k;
    }
    return true;
}

/* Appends what fd delivers to *buf (heap, NUL-terminated) until EOF or an
 * error, or until it holds need (NULL: until EOF). */
static inline void srv_recv_until(int fd, char **buf, size_t *len, const char *need) {
    char chunk[65536];
    while (!need || !*buf || !strstr(*buf, need)) {
        ssize_t k = recv(fd, chunk, sizeof chunk, 0);
        if (k <= 0) return;
        char *d = realloc(*buf, *len + (size_t)k + 1);
        if (!d) return;
        memcpy(d + *len, chunk, (size_t)k);
        *len += (size_t)k;
        d[*len] = '\0';
        *buf = d;
    }
}

/* A streamed request too big for the socket buffers: 8 choices of up to
 * 2000 tokens with 20 top_logprobs each (~1.8 KB a token, MBs in all, more
 * than tcp_wmem's 4 MiB), on a connection with a small receive buffer, read
 * until every choice has begun (with --parallel 8 none is queued). The
 * caller then stops reading, so the server's writes block. Returns the
 * socket (-1 on failure); what came so far is in *got (heap) / *len. */
static inline int srv_open_blocking_stream(const srv *s, char **got, size_t *len) {
    char body[512], req[1024];
    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"Tell a long story.\"}],"
             "\"stream\":true,\"max_tokens\":2000,\"stop\":[\"@@@@never\"],"
             "\"logprobs\":true,\"top_logprobs\":20,\"n\":8,"
             "\"stream_options\":{\"include_usage\":true}}");
    snprintf(req, sizeof req,
             "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    int fd = srv_connect(s, 4096);
    if (fd < 0) return -1;
    if (!srv_send_all(fd, req, strlen(req))) {
        close(fd);
        return -1;
    }
    srv_recv_until(fd, got, len, "\"index\":7,\"delta\":{\"content\"");
    return fd;
}

/* A PNG file as a data: URI (heap; the caller frees it). A file that cannot
 * be read is the test's own fault: it aborts, naming the file. */
static inline char *srv_png_data_uri(const char *file) {
    char *bytes, *b64 = NULL;
    size_t len;
    if (lv_read_file(file, 1u << 24, &bytes, &len, NULL) != LV_OK ||
        lv_base64_encode((const uint8_t *)bytes, len, &b64, NULL) != LV_OK) {
        fprintf(stderr, "srv_png_data_uri: cannot read or encode %s\n", file);
        abort();
    }
    free(bytes);
    char *uri = malloc(strlen(b64) + 32);
    if (!uri) abort();
    sprintf(uri, "data:image/png;base64,%s", b64);
    free(b64);
    return uri;
}

/* ---- client ------------------------------------------------------------------------------ */

typedef struct {
    char *data;
    size_t len;
    size_t stop_after;         /* > 0: abort the transfer once this many bytes came */
    void (*on_stop)(void *ud); /* called once when stop_after is reached */
    void *ud;
    bool stopped;
} srv_body;

static inline size_t srv_on_data(char *p, size_t size, size_t n, void *ud) {
    srv_body *b = ud;
    size_t add = size * n;
    char *d = realloc(b->data, b->len + add + 1);
    if (!d) return 0;
    b->data = d;
    memcpy(b->data + b->len, p, add);
    b->len += add;
    b->data[b->len] = '\0';
    if (b->stop_after && b->len >= b->stop_after) {
        if (!b->stopped && b->on_stop) b->on_stop(b->ud);
        b->stopped = true;
        return 0;
    }
    return add;
}

/* A prepared request (for curl multi too); headers: up to 2 lines or NULL. */
static inline CURL *srv_handle(const srv *s, const char *method, const char *path, const char *data,
                               size_t len, const char *h1, const char *h2, srv_body *b,
                               struct curl_slist **hdrs) {
    CURL *c = curl_easy_init();
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", s->port, path);
    *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    if (h1) *hdrs = curl_slist_append(*hdrs, h1);
    if (h2) *hdrs = curl_slist_append(*hdrs, h2);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (data) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, data);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, *hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, srv_on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    return c;
}

/* One request: the HTTP status (0 if the transfer failed) and the body in
 * *out (heap, may be NULL; out may be NULL). */
static inline long srv_http(const srv *s, const char *method, const char *path, const char *data,
                            size_t len, const char *h1, const char *h2, char **out) {
    srv_body b = {0};
    struct curl_slist *h;
    CURL *c = srv_handle(s, method, path, data, len, h1, h2, &b, &h);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (out)
        *out = b.data;
    else
        free(b.data);
    return status;
}

static inline bool srv_wait_healthy(const srv *s, int seconds) {
    for (int i = 0; i < seconds * 20; i++) {
        if (srv_http(s, "GET", "/health", NULL, 0, NULL, NULL, NULL) == 200) return true;
        srv_sleep_ms(50);
    }
    return false;
}

#endif
