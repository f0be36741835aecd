/* fuzz_http.c - libFuzzer target: llava-server's HTTP layer as far as it
 * is ours. One server (server/http.h) listens on loopback for the whole
 * run, with an API key and CORS on and no model (so every route answers
 * without generating: the public ones, the web page, Ollama's version, and
 * 401/404/405/413/503 with the errors' JSON). Each input is sent as raw
 * bytes on a new connection (so request lines, methods, paths, headers,
 * bodies and pipelined requests are all the fuzzer's), the write side is
 * closed, and the answer read to the end: it must be nothing (the parser
 * dropped the connection) or start with an HTTP status line, within the
 * timeout, and the first answer's JSON body (errors included) must parse
 * and never say "out of memory" (nothing runs out here: that was a JSON
 * builder failing on a path's bytes); the server must stay up for the next
 * input. */
#define _GNU_SOURCE /* memmem */
#include "server/http.h"

#include "base/log.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <strings.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* The first answer in buf (n bytes, NUL-terminated): when its headers say
 * JSON and its body is whole, the body must parse and, unless the request
 * itself said so (an error may quote its path), not be an OOM error. */
static void check_first_answer(const char *buf, size_t n, bool oom_quoted) {
    const char *end = strstr(buf, "\r\n\r\n");
    if (!end) return;
    long len = -1;
    bool json = false;
    for (const char *h = strstr(buf, "\r\n"); h && h < end; h = strstr(h + 2, "\r\n")) {
        if (!strncasecmp(h + 2, "Content-Length:", 15)) len = strtol(h + 17, NULL, 10);
        if (!strncasecmp(h + 2, "Content-Type: application/json", 30)) json = true;
    }
    const char *body = end + 4;
    if (!json || len < 0 || (size_t)(body - buf) + (size_t)len > n) return;
    json_t *o = json_loadb(body, (size_t)len, 0, NULL);
    if (!o || (!oom_quoted && memmem(body, (size_t)len, "out of memory", 13))) abort();
    json_decref(o);
}

static int server_port(void) {
    static http_server *s;
    if (!s) {
        signal(SIGPIPE, SIG_IGN);
        lv_log_set_level(LV_LOG_ERROR); /* a line per request otherwise */
        static const http_config cfg = {.host = "127.0.0.1",
                                        .port = 0,
                                        .api_key = "fuzz-key",
                                        .allowed_origins = "*",
                                        .model_name = "fuzz",
                                        .max_body = 1u << 16,
                                        .timeout_s = 5};
        if (http_start(&cfg, &s, NULL)) abort();
    }
    return http_port(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int port = server_port();
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) abort();
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    /* Tens of thousands of connections a minute: closing with a reset
     * (linger 0) leaves no TIME_WAIT to run the ephemeral ports out, and a
     * connect that still finds none waits for one. */
    struct linger no_wait = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &no_wait, sizeof no_wait);
    for (int tries = 0; connect(fd, (struct sockaddr *)&a, sizeof a); tries++) {
        if (errno == EINTR || errno == EISCONN) break; /* the connect goes on (or went) */
        if (errno != EADDRNOTAVAIL || tries == 100) abort();
        usleep(10000);
    }
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    for (size_t off = 0; off < size;) { /* the server may answer and close early */
        ssize_t k = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        off += (size_t)k;
    }
    shutdown(fd, SHUT_WR);
    static char first[65536 + 1]; /* the answer's first 64 KiB */
    char sink[65536];
    size_t got = 0, kept = 0;
    for (;;) {
        ssize_t k = recv(fd, sink, sizeof sink, 0);
        if (k == 0) break;
        if (k < 0) {
            if (errno == EINTR) continue;   /* libFuzzer's timer signal */
            if (errno == ECONNRESET) break; /* closed with our bytes unread: an answer or not */
            abort();                        /* no answer and no close within the timeout */
        }
        size_t take = (size_t)k < sizeof first - 1 - kept ? (size_t)k : sizeof first - 1 - kept;
        memcpy(first + kept, sink, take);
        kept += take;
        got += (size_t)k;
    }
    close(fd);
    first[kept] = '\0';
    if (got && (got < 9 || memcmp(first, "HTTP/1.", 7))) abort();
    if (!(size >= 5 && !memcmp(data, "HEAD ", 5))) /* HEAD: headers without their body */
        check_first_answer(first, kept, memmem(data, size, "out of memory", 13) != NULL);
    return 0;
}
