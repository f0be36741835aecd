/* test_server_sdk.c - llava-server with the official OpenAI Node SDK as the
 * client: starts two servers on the demo model (one with --api-key, one
 * with --parallel 1 --queue-size 1 for the 429) and runs
 * tests/node/sdk_test.mjs with node. Skipped, saying why, when node or the
 * npm package `openai` (scripts/setup.sh installs it into the cache
 * directory, next to the tokenizer package) is missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "server_harness.h"

#include <sys/stat.h>

#define KEY "sdk-key"

/* The installed SDK: <cache>/npm/node_modules/openai, the cache found from
 * the tokenizer package's path that ctest passes. */
static bool sdk_dir(char *out, size_t n) {
    const char *tokp = getenv("LLAVA_MISTRAL_TOKENIZER");
    const char *nm = tokp ? strstr(tokp, "/node_modules/") : NULL;
    if (!nm) return false;
    snprintf(out, n, "%.*s/node_modules/openai", (int)(nm - tokp), tokp);
    char pkg[1200];
    snprintf(pkg, sizeof pkg, "%.1100s/index.mjs", out);
    struct stat st;
    return stat(pkg, &st) == 0;
}

static void test_openai_node_sdk(void **state) {
    (void)state;
    char sdk[1100];
    if (system("node --version > /dev/null 2>&1") != 0) {
        print_message("SKIP: node is not installed\n");
        skip();
    }
    if (!sdk_dir(sdk, sizeof sdk)) {
        print_message("SKIP: the npm package 'openai' is not installed in the cache "
                      "directory (run scripts/setup.sh)\n");
        skip();
    }
    const char *tmp = tu_tmpdir("server_sdk");
    char log1[1200], log2[1200];
    snprintf(log1, sizeof log1, "%.1100s/server.log", tmp);
    snprintf(log2, sizeof log2, "%.1100s/small.log", tmp);
    srv main_srv, small;
    const char *argv1[] = {"--model", srv_demo_model(), "--port", "0",       "--parallel",
                           "4",       "--api-key",      KEY,      "--alias", "demo",
                           NULL};
    const char *argv2[] = {"--model", srv_demo_model(), "--port", "0",         "--parallel",
                           "1",       "--queue-size",   "1",      "--api-key", KEY,
                           "--alias", "demo",           NULL};
    assert_true(srv_start(&main_srv, log1, argv1, NULL));
    if (!srv_start(&small, log2, argv2, NULL)) {
        srv_stop(&main_srv);
        fail_msg("the second server did not start");
    }
    assert_true(srv_wait_healthy(&main_srv, 60) && srv_wait_healthy(&small, 60));
    char cmd[8192], *out = NULL;
    snprintf(cmd, sizeof cmd,
             "OPENAI_SDK_DIR='%s' LLAVA_BASE_URL='http://127.0.0.1:%d' "
             "LLAVA_SMALL_URL='http://127.0.0.1:%d' LLAVA_API_KEY='%s' LLAVA_IMAGE='%s' "
             "node '%s/../node/sdk_test.mjs' 2>&1",
             sdk, main_srv.port, small.port, KEY, srv_demo_sample("sample_01_320x240.png"),
             tu_env("LLAVA_TEST_DATA"));
    int rc = tu_run(cmd, &out);
    /* line by line: cmocka's print_message has a small buffer */
    for (char *line = out, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        print_message("%s\n", line);
    }
    free(out);
    int rc1 = srv_stop(&main_srv), rc2 = srv_stop(&small);
    assert_int_equal(rc, 0);
    assert_int_equal(rc1, 0);
    assert_int_equal(rc2, 0);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_openai_node_sdk)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
