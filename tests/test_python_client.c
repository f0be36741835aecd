/* test_python_client.c - examples/python/chat.py (the standard-library
 * client) against llava-server on the demo model, run exactly as README.md
 * prints it: every "    $ python3 examples/python/chat.py ..." line of the
 * README is run from the repository root (its http://127.0.0.1:8080 made
 * the test server's address) and must print the README's next line. The
 * plain answer, the streamed one (SSE) and the image sent as a base64
 * data: URI are all among them. Skipped, saying so, without python3. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/file.h"
#include "server_harness.h"

#define README_CMD   "    $ python3 examples/python/chat.py "
#define README_URL   "http://127.0.0.1:8080"
#define MAX_EXAMPLES 8

typedef struct {
    char cmd[1024];  /* from "python3 ...", the address replaced */
    char want[1024]; /* the README's next line: what it prints */
} example;

/* The README's chat.py examples, the server's port put in. */
static int readme_examples(const char *root, int port, example *ex) {
    char path[1200], *text;
    size_t len;
    snprintf(path, sizeof path, "%.1100s/README.md", root);
    if (lv_read_file(path, 1u << 22, &text, &len, NULL)) fail_msg("cannot read %s", path);
    int n = 0;
    for (char *p = strstr(text, README_CMD); p && n < MAX_EXAMPLES; p = strstr(p + 1, README_CMD)) {
        char *cmd = p + strlen("    $ "), *eol = strchr(cmd, '\n');
        if (!eol) break;
        char *out = eol + 1, *out_end = strchr(out, '\n');
        if (strncmp(out, "    ", 4) || !out_end) fail_msg("no output line after %.60s", cmd);
        char *url = strstr(cmd, README_URL);
        if (!url || url > eol) fail_msg("a README example without %s: %.80s", README_URL, cmd);
        snprintf(ex[n].cmd, sizeof ex[n].cmd, "%.*shttp://127.0.0.1:%d%.*s", (int)(url - cmd), cmd,
                 port, (int)(eol - url - strlen(README_URL)), url + strlen(README_URL));
        snprintf(ex[n].want, sizeof ex[n].want, "%.*s\n", (int)(out_end - out - 4), out + 4);
        n++;
    }
    free(text);
    return n;
}

static void readme_examples_answer(void **state) {
    (void)state;
    if (system("python3 --version > /dev/null 2>&1") != 0) {
        print_message("SKIP: python3 is not installed\n");
        skip();
    }
    char root[1100], log[1200];
    snprintf(root, sizeof root, "%.1000s/..", tu_env("LLAVA_SRC_DIR"));
    snprintf(log, sizeof log, "%.1100s/server.log", tu_tmpdir("python_client"));
    srv s;
    const char *argv[] = {"--model", srv_demo_model(), "--port", "0", NULL};
    assert_true(srv_start(&s, log, argv, NULL));
    assert_true(srv_wait_healthy(&s, 60));
    example ex[MAX_EXAMPLES];
    int n = readme_examples(root, s.port, ex);
    bool streamed = false, image = false;
    for (int i = 0; i < n; i++) {
        char cmd[4096], *out = NULL;
        snprintf(cmd, sizeof cmd, "cd '%.1100s' && %.1024s", root, ex[i].cmd);
        int rc = tu_run(cmd, &out);
        print_message("%s\n  -> %s", ex[i].cmd, out ? out : "(nothing)\n");
        if (rc != 0 || strcmp(out, ex[i].want))
            fail_msg("exit %d, printed '%s', the README says '%s'", rc, out, ex[i].want);
        free(out);
        streamed |= strstr(ex[i].cmd, " --stream") != NULL;
        image |= strstr(ex[i].cmd, " --image ") != NULL;
    }
    assert_true(n >= 2 && streamed && image); /* the README shows both kinds, with an image */
    assert_int_equal(srv_stop(&s), 0);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {cmocka_unit_test(readme_examples_answer)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
