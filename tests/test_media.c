/* test_media.c - image_url fetching: data: URIs, file:// under the allowed
 * directory, the address classifier, and http(s) against a responder on
 * 127.0.0.1 inside this process. Nothing here reaches beyond loopback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/base64.h"
#include "server/media.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const uint8_t PNG_SIG[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 1, 2, 3};

static void expect_fail(const char *url, const media_policy *pol, lv_status want,
                        const char *msg_part) {
    uint8_t *data = (uint8_t *)"x";
    size_t len = 9;
    lv_err err = {""};
    lv_status st = media_fetch(url, pol, &data, &len, &err);
    if (st != want)
        fail_msg("%.80s: status %s, want %s (%s)", url, lv_status_str(st), lv_status_str(want),
                 err.msg);
    assert_null(data);
    assert_int_equal(len, 0);
    if (!strstr(err.msg, msg_part))
        fail_msg("%.80s: message '%s' lacks '%s'", url, err.msg, msg_part);
}

static void expect_bytes(const char *url, const media_policy *pol, const void *want, size_t n) {
    uint8_t *data;
    size_t len;
    lv_err err = {""};
    lv_status st = media_fetch(url, pol, &data, &len, &err);
    if (st != LV_OK) fail_msg("%.80s: %s", url, err.msg);
    assert_int_equal(len, n);
    assert_memory_equal(data, want, n);
    free(data);
}

/* ---- address classifier ---- */

static bool blocked(const char *ip) {
    uint8_t a[16];
    if (strchr(ip, ':')) {
        if (inet_pton(AF_INET6, ip, a) != 1) fail_msg("bad test address %s", ip);
        return media_addr_blocked(AF_INET6, a);
    }
    if (inet_pton(AF_INET, ip, a) != 1) fail_msg("bad test address %s", ip);
    return media_addr_blocked(AF_INET, a);
}

static void address_classifier(void **state) {
    static const char *blocked_ips[] = {"127.0.0.1",
                                        "127.255.255.254",
                                        "10.0.0.1",
                                        "10.255.255.255",
                                        "172.16.0.1",
                                        "172.31.255.255",
                                        "192.168.0.1",
                                        "192.168.255.255",
                                        "169.254.169.254",
                                        "0.0.0.0",
                                        "0.1.2.3",
                                        "100.64.0.1",
                                        "100.127.255.255",
                                        "224.0.0.1",
                                        "239.255.255.250",
                                        "240.0.0.1",
                                        "255.255.255.255",
                                        "192.0.0.8",
                                        "192.0.2.1",
                                        "198.18.0.1",
                                        "198.19.255.1",
                                        "198.51.100.7",
                                        "203.0.113.9",
                                        "::",
                                        "::1",
                                        "fc00::1",
                                        "fd12:3456::1",
                                        "fe80::1",
                                        "febf::1",
                                        "fec0::1",
                                        "ff02::1",
                                        "ff0e::1",
                                        "::ffff:127.0.0.1",
                                        "::ffff:10.1.2.3",
                                        "::ffff:169.254.169.254",
                                        "::ffff:192.168.1.1",
                                        "::ffff:0.0.0.0",
                                        "::127.0.0.1",
                                        "::10.0.0.1",
                                        "64:ff9b::127.0.0.1",
                                        "64:ff9b::a9fe:a9fe",
                                        "2002:7f00:1::1",
                                        "2002:c0a8:101::",
                                        "2001:db8::1",
                                        "2001:0:4136:e378::1",
                                        "100::1"};
    static const char *public_ips[] = {"8.8.8.8",
                                       "1.1.1.1",
                                       "93.184.216.34",
                                       "172.15.255.255",
                                       "172.32.0.1",
                                       "192.169.0.1",
                                       "100.63.255.255",
                                       "100.128.0.1",
                                       "169.253.1.1",
                                       "11.0.0.1",
                                       "126.255.255.255",
                                       "128.0.0.1",
                                       "223.255.255.255",
                                       "198.17.255.255",
                                       "198.20.0.1",
                                       "2606:4700::1111",
                                       "2001:4860:4860::8888",
                                       "::ffff:8.8.8.8",
                                       "64:ff9b::808:808",
                                       "2002:808:808::1",
                                       "2a00:1450:4001::1",
                                       "fbff::1",
                                       "fe00::1"};
    for (size_t i = 0; i < sizeof blocked_ips / sizeof *blocked_ips; i++)
        if (!blocked(blocked_ips[i])) fail_msg("%s should be blocked", blocked_ips[i]);
    for (size_t i = 0; i < sizeof public_ips / sizeof *public_ips; i++)
        if (blocked(public_ips[i])) fail_msg("%s should be allowed", public_ips[i]);
    uint8_t a[16] = {0};
    assert_true(media_addr_blocked(AF_UNIX, a)); /* unknown families are blocked */
    assert_true(media_addr_blocked(AF_INET, NULL));
}

/* ---- data: URIs ---- */

static char *data_uri(const char *prefix, const void *bytes, size_t n) {
    char *b64;
    assert_int_equal(lv_base64_encode(bytes, n, &b64, NULL), LV_OK);
    char *uri = malloc(strlen(prefix) + strlen(b64) + 1);
    strcpy(uri, prefix);
    strcat(uri, b64);
    free(b64);
    return uri;
}

static void data_uris(void **state) {
    static const char *ok_prefixes[] = {
        "data:image/png;base64,",  "data:image/jpeg;base64,",
        "data:image/webp;base64,", "data:image/gif;base64,",
        "data:image/bmp;base64,",  "data:image/x-anything;base64,",
        "DATA:IMAGE/PNG;BASE64,",  "data:image/png;name=a.png;base64,"};
    for (size_t i = 0; i < sizeof ok_prefixes / sizeof *ok_prefixes; i++) {
        char *uri = data_uri(ok_prefixes[i], PNG_SIG, sizeof PNG_SIG);
        expect_bytes(uri, NULL, PNG_SIG, sizeof PNG_SIG);
        free(uri);
    }
    expect_fail("data:image/png,%89PNG", NULL, LV_ERR_ARG, "not base64-encoded");
    expect_fail("data:image/png;base64x,AAAA", NULL, LV_ERR_ARG, "not base64-encoded");
    expect_fail("data:text/plain;base64,AAAA", NULL, LV_ERR_ARG,
                "media type 'text/plain', expected image/*");
    expect_fail("data:application/octet-stream;base64,AAAA", NULL, LV_ERR_ARG, "expected image/*");
    expect_fail("data:image/;base64,AAAA", NULL, LV_ERR_ARG, "expected image/*");
    expect_fail("data:;base64,AAAA", NULL, LV_ERR_ARG, "no media type");
    expect_fail("data:image/png;base64", NULL, LV_ERR_FORMAT, "no ','");
    expect_fail("data:image/png;base64,", NULL, LV_ERR_FORMAT, "has no data");
    /* Bad base64: characters, padding, truncation; prefixed with "data: URI". */
    expect_fail("data:image/png;base64,iVBO R0", NULL, LV_ERR_FORMAT,
                "data: URI: base64: invalid character");
    expect_fail("data:image/png;base64,iVBOR0=", NULL, LV_ERR_FORMAT, "truncated");
    expect_fail("data:image/png;base64,iVBORw0KGgo", NULL, LV_ERR_FORMAT, "truncated");
    expect_fail("data:image/png;base64,iV==iV==", NULL, LV_ERR_FORMAT, "after '='");
    expect_fail("data:image/png;base64,iVBORw0K-_o=", NULL, LV_ERR_FORMAT, "'-'");
    /* Line breaks inside the data are fine. */
    expect_bytes("data:image/png;base64,Zm9v\nYmFy", NULL, "foobar", 6);
}

static void data_uri_over_limit(void **state) {
    media_policy pol;
    media_policy_default(&pol);
    assert_int_equal(pol.max_bytes, 20u * 1000u * 1000u);
    pol.max_bytes = 1000;
    uint8_t big[1001];
    memset(big, 7, sizeof big);
    char *uri = data_uri("data:image/png;base64,", big, sizeof big);
    expect_fail(uri, &pol, LV_ERR_TOO_LARGE, "decodes to 1001 bytes, over the limit of 1000");
    free(uri);
    uri = data_uri("data:image/png;base64,", big, 1000);
    expect_bytes(uri, &pol, big, 1000);
    free(uri);
}

static void unsupported_schemes(void **state) {
    expect_fail("ftp://example.com/a.png", NULL, LV_ERR_ARG,
                "unsupported image URL scheme 'ftp' (use data:, http(s):// or file:// with "
                "--allowed-local-media-path)");
    expect_fail("gopher://x/", NULL, LV_ERR_ARG, "scheme 'gopher'");
    expect_fail("javascript:alert(1)", NULL, LV_ERR_ARG, "scheme 'javascript'");
    expect_fail("dict://127.0.0.1:11211/", NULL, LV_ERR_ARG, "scheme 'dict'");
    expect_fail("ldap://x", NULL, LV_ERR_ARG, "scheme 'ldap'");
    expect_fail("file:/etc/passwd", NULL, LV_ERR_ARG, "scheme 'file'");
    expect_fail("http:/x", NULL, LV_ERR_ARG, "scheme 'http'");
    expect_fail("", NULL, LV_ERR_ARG, "image URL is empty");
    expect_fail(NULL, NULL, LV_ERR_ARG, "image URL is empty");
    expect_fail("/tmp/cat.png", NULL, LV_ERR_ARG, "has no scheme");
    expect_fail("cat.png", NULL, LV_ERR_ARG, "has no scheme");
    expect_fail("://x", NULL, LV_ERR_ARG, "has no scheme");
}

/* ---- file:// ---- */

static char g_dir[1024]; /* $LLAVA_TMP/media */

static void file_urls(void **state) {
    snprintf(g_dir, sizeof g_dir, "%s", tu_tmpdir("media"));
    char allowed[PATH_MAX + 16], outside[PATH_MAX + 16], cmd[8 * PATH_MAX], url[2 * PATH_MAX];
    snprintf(allowed, sizeof allowed, "%s/allowed", g_dir);
    snprintf(outside, sizeof outside, "%s/outside", g_dir);
    snprintf(cmd, sizeof cmd,
             "set -e; cd '%s'; mkdir -p allowed/sub outside; printf IMG > allowed/img.bin;"
             "printf SPACE > 'allowed/a b.bin'; printf SECRET > outside/secret.bin;"
             "ln -s ../outside/secret.bin allowed/escape.bin; ln -s ../outside allowed/dirlink;"
             "ln -s img.bin allowed/inner-link.bin; ln -s allowed allowed-link;"
             "head -c 2000 /dev/zero > allowed/big.bin; mkfifo allowed/fifo",
             g_dir);
    assert_int_equal(system(cmd), 0);

    media_policy pol;
    media_policy_default(&pol);
    snprintf(url, sizeof url, "file://%s/img.bin", allowed);
    expect_fail(url, &pol, LV_ERR_ARG, "file:// image URLs are disabled");
    pol.allowed_local_dir = allowed;
    expect_bytes(url, &pol, "IMG", 3);
    snprintf(url, sizeof url, "file://localhost%s/img.bin", allowed);
    expect_bytes(url, &pol, "IMG", 3);
    snprintf(url, sizeof url, "file://%s/sub/../img.bin", allowed);
    expect_bytes(url, &pol, "IMG", 3);
    snprintf(url, sizeof url, "file://%s/a%%20b.bin", allowed);
    expect_bytes(url, &pol, "SPACE", 5);
    snprintf(url, sizeof url, "file://%s/inner-link.bin", allowed); /* link staying inside */
    expect_bytes(url, &pol, "IMG", 3);

    /* Outside, by "..", by a symlink to a file, by a symlinked directory. */
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "outside the allowed media directory %s", allowed);
    snprintf(url, sizeof url, "file://%s/../outside/secret.bin", allowed);
    expect_fail(url, &pol, LV_ERR_ARG, want);
    snprintf(url, sizeof url, "file://%s/%%2e%%2e/outside/secret.bin", allowed);
    expect_fail(url, &pol, LV_ERR_ARG, want);
    snprintf(url, sizeof url, "file://%s/secret.bin", outside);
    expect_fail(url, &pol, LV_ERR_ARG, want);
    expect_fail("file:///etc/passwd", &pol, LV_ERR_ARG, want);
    snprintf(url, sizeof url, "file://%s/escape.bin", allowed);
    expect_fail(url, &pol, LV_ERR_ARG, "through a symbolic link");
    snprintf(url, sizeof url, "file://%s/dirlink/secret.bin", allowed);
    expect_fail(url, &pol, LV_ERR_ARG, "through a symbolic link");
    snprintf(url, sizeof url, "file://%sx/img.bin",
             allowed); /* "allowedx" is not below "allowed" */
    expect_fail(url, &pol, LV_ERR_ARG, want);

    /* The allowed directory given through a symlink: both spellings work. */
    char alink[PATH_MAX + 16];
    snprintf(alink, sizeof alink, "%s/allowed-link", g_dir);
    pol.allowed_local_dir = alink;
    snprintf(url, sizeof url, "file://%s/img.bin", alink);
    expect_bytes(url, &pol, "IMG", 3);
    snprintf(url, sizeof url, "file://%s/img.bin", allowed);
    expect_bytes(url, &pol, "IMG", 3);
    pol.allowed_local_dir = allowed;

    /* Missing, directory, FIFO, too big, host, bad escapes. */
    snprintf(url, sizeof url, "file://%s/none.bin", allowed);
    expect_fail(url, &pol, LV_ERR_IO, "No such file");
    snprintf(url, sizeof url, "file://%s/sub", allowed);
    expect_fail(url, &pol, LV_ERR_IO, "not a regular file");
    snprintf(url, sizeof url, "file://%s/fifo", allowed);
    expect_fail(url, &pol, LV_ERR_IO, "not a regular file");
    pol.max_bytes = 1999;
    snprintf(url, sizeof url, "file://%s/big.bin", allowed);
    expect_fail(url, &pol, LV_ERR_TOO_LARGE, "file is 2000 bytes, over the limit of 1999");
    pol.max_bytes = 2000;
    uint8_t zeros[2000] = {0};
    expect_bytes(url, &pol, zeros, 2000);
    expect_fail("file://example.com/etc/passwd", &pol, LV_ERR_ARG, "no host");
    snprintf(url, sizeof url, "file://%s/img%%00.bin", allowed);
    expect_fail(url, &pol, LV_ERR_ARG, "bad percent-escape");
    snprintf(url, sizeof url, "file://%s/img%%zz.bin", allowed);
    expect_fail(url, &pol, LV_ERR_ARG, "bad percent-escape");
}

/* ---- http(s):// ---- */

/* A one-connection-at-a-time HTTP responder on 127.0.0.1 (port 0), routed by
 * path. It stops when g_stop is set; every wait is bounded. */
typedef struct {
    int fd;
    int port;
    volatile int stop;
    pthread_t thread;
} responder;

static void send_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        c += w;
        n -= (size_t)w;
    }
}

static void respond(int c, const char *path, int port) {
    char hdr[512];
    if (strcmp(path, "/ok") == 0) {
        const char *body = "hello image";
        int n = snprintf(hdr, sizeof hdr,
                         "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                         strlen(body), body);
        send_all(c, hdr, (size_t)n);
    } else if (strcmp(path, "/big") == 0 || strcmp(path, "/bigcl") == 0) {
        /* 100000 bytes; /big without Content-Length, so the cap is hit while streaming. */
        int n = strcmp(path, "/bigcl") == 0
                    ? snprintf(hdr, sizeof hdr,
                               "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nConnection: "
                               "close\r\n\r\n")
                    : snprintf(hdr, sizeof hdr, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        send_all(c, hdr, (size_t)n);
        static char chunk[10000];
        memset(chunk, 'z', sizeof chunk);
        for (int i = 0; i < 10; i++) send_all(c, chunk, sizeof chunk);
    } else if (strcmp(path, "/redir-ok") == 0) {
        int n = snprintf(hdr, sizeof hdr,
                         "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:%d/ok\r\n"
                         "Content-Length: 0\r\nConnection: close\r\n\r\n",
                         port);
        send_all(c, hdr, (size_t)n);
    } else if (strcmp(path, "/redir-file") == 0) {
        const char *r = "HTTP/1.1 302 Found\r\nLocation: file:///etc/passwd\r\n"
                        "Content-Length: 0\r\nConnection: close\r\n\r\n";
        send_all(c, r, strlen(r));
    } else if (strcmp(path, "/loop") == 0) {
        const char *r = "HTTP/1.1 302 Found\r\nLocation: /loop\r\n"
                        "Content-Length: 0\r\nConnection: close\r\n\r\n";
        send_all(c, r, strlen(r));
    } else if (strcmp(path, "/slow") == 0) {
        usleep(2500 * 1000); /* past the 1 s timeout of the test */
    } else {
        const char *r = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        send_all(c, r, strlen(r));
    }
}

static void *responder_main(void *arg) {
    responder *r = arg;
    while (!r->stop) {
        struct pollfd p = {.fd = r->fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0) continue;
        int c = accept(r->fd, NULL, NULL);
        if (c < 0) continue;
        struct timeval tv = {.tv_sec = 2};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char req[4096];
        size_t n = 0;
        while (n < sizeof req - 1) {
            ssize_t got = recv(c, req + n, sizeof req - 1 - n, 0);
            if (got <= 0) break;
            n += (size_t)got;
            req[n] = '\0';
            if (strstr(req, "\r\n\r\n")) break;
        }
        req[n] = '\0';
        char path[256] = "";
        sscanf(req, "GET %255s ", path);
        respond(c, path, r->port);
        close(c);
    }
    return NULL;
}

static void responder_start(responder *r) {
    memset(r, 0, sizeof *r);
    r->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(r->fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(r->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(r->fd, 8), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(r->fd, (struct sockaddr *)&a, &al), 0);
    r->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&r->thread, NULL, responder_main, r), 0);
}

static void responder_stop(responder *r) {
    r->stop = 1;
    pthread_join(r->thread, NULL);
    close(r->fd);
}

static void http_private_refused_before_connecting(void **state) {
    /* Port 9 (discard) with nothing listening is fine: the refusal comes
     * before any connect, from the open-socket check. */
    expect_fail("http://127.0.0.1:9/cat.png", NULL, LV_ERR_ARG, "refused to connect to 127.0.0.1");
    expect_fail("http://[::1]:9/cat.png", NULL, LV_ERR_ARG, "refused to connect to ::1");
    expect_fail("https://10.0.0.1:9/cat.png", NULL, LV_ERR_ARG, "refused to connect to 10.0.0.1");
    expect_fail("http://169.254.169.254/latest/meta-data/", NULL, LV_ERR_ARG,
                "refused to connect to 169.254.169.254");
    expect_fail("http://[::ffff:127.0.0.1]:9/", NULL, LV_ERR_ARG, "refused to connect");
    expect_fail("http://0.0.0.0:9/", NULL, LV_ERR_ARG, "refused to connect to 0.0.0.0");
    expect_fail("http://2130706433:9/", NULL, LV_ERR_ARG, "refused to connect to 127.0.0.1");
    expect_fail("http://localhost:9/", NULL, LV_ERR_ARG, "refused to connect");

    /* A real listener on loopback is refused just the same. */
    responder r;
    responder_start(&r);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/ok", r.port);
    expect_fail(url, NULL, LV_ERR_ARG, "loopback, private, link-local or reserved address");
    media_policy pol;
    media_policy_default(&pol);
    pol.allow_remote = false;
    expect_fail(url, &pol, LV_ERR_ARG, "remote image URLs are disabled");
    responder_stop(&r);
}

static void http_loopback_allowed(void **state) {
    responder r;
    responder_start(&r);
    media_policy pol;
    media_policy_default(&pol);
    pol.allow_private_addresses = true;
    pol.timeout_s = 1;
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/ok", r.port);
    expect_bytes(url, &pol, "hello image", 11);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/redir-ok", r.port);
    expect_bytes(url, &pol, "hello image", 11);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/missing", r.port);
    expect_fail(url, &pol, LV_ERR_IO, "server answered HTTP 404");
    snprintf(url, sizeof url, "http://127.0.0.1:%d/redir-file", r.port);
    expect_fail(url, &pol, LV_ERR_ARG, "redirected to a URL that is not http(s)");
    snprintf(url, sizeof url, "http://127.0.0.1:%d/loop", r.port);
    expect_fail(url, &pol, LV_ERR_ARG, "more than 3 redirects");
    pol.max_bytes = 1000;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/big", r.port);
    expect_fail(url, &pol, LV_ERR_TOO_LARGE, "over the limit of 1000 bytes");
    snprintf(url, sizeof url, "http://127.0.0.1:%d/bigcl", r.port);
    expect_fail(url, &pol, LV_ERR_TOO_LARGE, "over the limit of 1000 bytes");
    pol.max_bytes = 100000;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/big", r.port);
    uint8_t *data;
    size_t len;
    assert_int_equal(media_fetch(url, &pol, &data, &len, NULL), LV_OK);
    assert_int_equal(len, 100000);
    free(data);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/slow", r.port);
    expect_fail(url, &pol, LV_ERR_IO, "timed out after 1 s");
    responder_stop(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(address_classifier),
        cmocka_unit_test(data_uris),
        cmocka_unit_test(data_uri_over_limit),
        cmocka_unit_test(unsupported_schemes),
        cmocka_unit_test(file_urls),
        cmocka_unit_test(http_private_refused_before_connecting),
        cmocka_unit_test(http_loopback_allowed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
