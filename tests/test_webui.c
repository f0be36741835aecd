/* test_webui.c - the chat page llava-server serves at / (server/webui.h).
 *
 * Two parts, each against a server of its own on the demo model with
 * --api-key. First, over HTTP with libcurl: the page's three files with
 * their content types, the Content-Security-Policy and the other headers,
 * public although a key is set (the generation route still wants it), an
 * ETag revalidated with 304, HEAD, 404 and 405 around them. Second, in a
 * real browser: tests/node/webui_test.mjs drives Debian's chromium through
 * playwright-core (the sample attached, a streamed answer, a follow-up that
 * carries the first turn, Regenerate, Stop mid-stream, conversations kept
 * over a reload, injected HTML staying text, a 375 px screen), saving a
 * screenshot of each step in <build>/webui-screens/. It is skipped, saying
 * why, when node, chromium or playwright-core (scripts/setup.sh installs
 * both) is missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "node_harness.h"
#include "server_harness.h"

#include <strings.h>
#include <sys/stat.h>

#define KEY "webui-key"

static bool start_server(srv *s, const char *tag) {
    const char *tmp = tu_tmpdir(tag);
    char log[1200];
    snprintf(log, sizeof log, "%.1100s/server.log", tmp);
    const char *argv[] = {"--model", srv_demo_model(), "--port", "0",       "--parallel",
                          "2",       "--api-key",      KEY,      "--alias", "demo",
                          NULL};
    return srv_start(s, log, argv, NULL) && srv_wait_healthy(s, 60);
}

/* ---- over HTTP --------------------------------------------------------------------------- */

typedef struct {
    long status;
    char headers[4096]; /* as received, "Name: value\r\n" lines */
    char *body;         /* heap, may be NULL */
    size_t body_len;
} reply;

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
    reply *r = ud;
    size_t len = strlen(r->headers), add = size * n;
    if (len + add < sizeof r->headers) {
        memcpy(r->headers + len, p, add);
        r->headers[len + add] = '\0';
    }
    return add;
}

/* method on path with an optional extra header line; HEAD sends no body back. */
static void request(const srv *s, const char *method, const char *path, const char *header,
                    reply *r) {
    memset(r, 0, sizeof *r);
    srv_body b = {0};
    struct curl_slist *h;
    CURL *c = srv_handle(s, method, path, NULL, 0, header, NULL, &b, &h);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    if (!strcmp(method, "HEAD")) curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    r->body = b.data;
    r->body_len = b.len;
}

/* The value of header name in r (copied into out), or NULL. */
static const char *header(const reply *r, const char *name, char *out, size_t n) {
    size_t len = strlen(name);
    for (const char *p = r->headers; *p;) {
        const char *e = strstr(p, "\r\n");
        if (!e) break;
        if (!strncasecmp(p, name, len) && p[len] == ':') {
            const char *v = p + len + 1;
            while (*v == ' ') v++;
            snprintf(out, n, "%.*s", (int)(e - v), v);
            return out;
        }
        p = e + 2;
    }
    return NULL;
}

/* GET path answers 200 with type and the page's headers; its ETag into etag. */
static void check_file(const srv *s, const char *path, const char *type, const char *needle,
                       char *etag, size_t n) {
    reply r;
    char v[1024];
    request(s, "GET", path, NULL, &r);
    print_message("GET %s: %ld, %zu bytes\n", path, r.status, r.body_len);
    assert_int_equal(r.status, 200);
    assert_non_null(header(&r, "Content-Type", v, sizeof v));
    assert_string_equal(v, type);
    assert_non_null(header(&r, "Content-Security-Policy", v, sizeof v));
    assert_non_null(strstr(v, "default-src 'self'"));
    assert_non_null(strstr(v, "img-src 'self' data: blob:"));
    assert_null(strstr(v, "unsafe-inline"));
    assert_non_null(header(&r, "X-Content-Type-Options", v, sizeof v));
    assert_string_equal(v, "nosniff");
    assert_non_null(header(&r, "Cache-Control", v, sizeof v));
    assert_non_null(header(&r, "ETag", etag, n));
    assert_non_null(r.body);
    assert_non_null(strstr(r.body, needle));
    free(r.body);
}

static void test_webui_files(void **state) {
    (void)state;
    srv s;
    assert_true(start_server(&s, "webui_files"));
    char etag[128], v[256];
    check_file(&s, "/", "text/html; charset=utf-8", "<script src=\"/webui/app.js\"", etag,
               sizeof etag);
    char etag_js[128];
    check_file(&s, "/webui/app.js", "text/javascript; charset=utf-8", "readSSE", etag_js,
               sizeof etag_js);
    check_file(&s, "/webui/style.css", "text/css; charset=utf-8", "@media", v, sizeof v);
    assert_string_not_equal(etag, etag_js);

    reply r;
    char inm[200];
    snprintf(inm, sizeof inm, "If-None-Match: %s", etag);
    request(&s, "GET", "/", inm, &r); /* unchanged: 304, no body */
    assert_int_equal(r.status, 304);
    assert_int_equal(r.body_len, 0);
    free(r.body);
    request(&s, "HEAD", "/", NULL, &r); /* headers only */
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    assert_non_null(header(&r, "Content-Security-Policy", v, sizeof v));
    free(r.body);
    request(&s, "GET", "/webui/missing.js", NULL, &r);
    assert_int_equal(r.status, 404);
    free(r.body);
    request(&s, "POST", "/", NULL, &r);
    assert_int_equal(r.status, 405);
    free(r.body);
    /* the page is public; what it calls is not */
    assert_int_equal(srv_http(&s, "POST", "/v1/chat/completions", "{}", 2, NULL, NULL, NULL), 401);
    assert_int_equal(srv_stop(&s), 0);
}

/* ---- in a browser ------------------------------------------------------------------------ */

#define CHROMIUM "/usr/bin/chromium"

static void test_webui_browser(void **state) {
    (void)state;
    static const char *const names[] = {"playwright-core", NULL};
    char nm[1100];
    struct stat st;
    if (system("node --version > /dev/null 2>&1") != 0) {
        print_message("SKIP: node is not installed\n");
        skip();
    }
    if (stat(CHROMIUM, &st) != 0) {
        print_message("SKIP: %s is not installed (Debian's chromium; run scripts/setup.sh)\n",
                      CHROMIUM);
        skip();
    }
    if (!node_modules(nm, sizeof nm, names)) {
        print_message("SKIP: the npm package playwright-core is not installed in the cache "
                      "directory (run scripts/setup.sh)\n");
        skip();
    }
    char screens[1200];
    snprintf(screens, sizeof screens, "%.1100s/../webui-screens", tu_env("LLAVA_BIN_DIR"));
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", screens, screens);
    assert_int_equal(system(cmd), 0);
    srv s;
    assert_true(start_server(&s, "webui_browser"));
    snprintf(cmd, sizeof cmd,
             "NODE_PACKAGES='%s' CHROMIUM='%s' LLAVA_BASE_URL='http://127.0.0.1:%d' "
             "LLAVA_API_KEY='%s' LLAVA_IMAGE='%s' WEBUI_SCREENS='%s' WEBUI_SLOW=%d "
             "node '%s/../node/webui_test.mjs' 2>&1",
             nm, CHROMIUM, s.port, KEY, srv_demo_sample("sample_01_320x240.png"), screens,
             SANITIZED, tu_env("LLAVA_TEST_DATA"));
    int rc = run_node(cmd);
    int rc_srv = srv_stop(&s);
    print_message("screenshots: %s\n", screens);
    assert_int_equal(rc, 0);
    assert_int_equal(rc_srv, 0);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_webui_files),
                                       cmocka_unit_test(test_webui_browser)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
