/* test_server_sdk.c - llava-server with the official OpenAI Node SDK as the
 * client: starts two servers on the demo model (one with --api-key, one
 * with --parallel 1 --queue-size 1 for the 429) and runs
 * tests/node/sdk_test.mjs with node; then, on a third server (--parallel 4),
 * tests/node/structured_test.mjs: structured outputs through the SDK's
 * zodResponseFormat + parse helpers, every answer validated by ajv; on a
 * fourth (--parallel 4), tests/node/tools_test.mjs: tool calling through the
 * SDK (tool_choice required / named / parallel_tool_calls false, the round
 * trip with tool results, runTools, the stream helper), every call's
 * arguments validated by ajv; on a fifth (--parallel 4), tests/node/ollama_test.mjs:
 * Ollama's API through the official Ollama JavaScript library. Each is
 * skipped, saying why, when node or its npm packages (`openai`; `zod` and
 * `ajv` for the second, `ajv` for the third, `ollama` and `whatwg-fetch` for
 * the fifth; scripts/setup.sh installs them into the cache directory, next
 * to the tokenizer package) are missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "node_harness.h"
#include "server_harness.h"

#define KEY "sdk-key"

/* The installed SDK: <cache>/npm/node_modules/openai. */
static bool sdk_dir(char *out, size_t n) {
    static const char *const names[] = {"openai", NULL};
    if (!node_modules(out, n, names)) return false;
    size_t len = strlen(out);
    snprintf(out + len, n - len, "/openai");
    return true;
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
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "OPENAI_SDK_DIR='%s' LLAVA_BASE_URL='http://127.0.0.1:%d' "
             "LLAVA_SMALL_URL='http://127.0.0.1:%d' LLAVA_API_KEY='%s' LLAVA_IMAGE='%s' "
             "node '%s/../node/sdk_test.mjs' 2>&1",
             sdk, main_srv.port, small.port, KEY, srv_demo_sample("sample_01_320x240.png"),
             tu_env("LLAVA_TEST_DATA"));
    int rc = run_node(cmd);
    int rc1 = srv_stop(&main_srv), rc2 = srv_stop(&small);
    assert_int_equal(rc, 0);
    assert_int_equal(rc1, 0);
    assert_int_equal(rc2, 0);
}

/* Runs tests/node/<script> against a server of its own (--parallel 4, plus
 * --ctx-size ctx when given) with the npm packages it needs (packages,
 * described as `what` in the skip message) found in the cache. */
static void run_node_script(const char *script, const char *const *packages, const char *what,
                            const char *ctx) {
    char nm[1100];
    if (system("node --version > /dev/null 2>&1") != 0) {
        print_message("SKIP: node is not installed\n");
        skip();
    }
    if (!node_modules(nm, sizeof nm, packages)) {
        print_message("SKIP: the npm packages %s are not all installed in the cache directory "
                      "(run scripts/setup.sh)\n",
                      what);
        skip();
    }
    const char *tmp = tu_tmpdir(script);
    char log[1200];
    snprintf(log, sizeof log, "%.1100s/server.log", tmp);
    srv s;
    const char *argv[16] = {"--model", srv_demo_model(), "--port", "0",       "--parallel",
                            "4",       "--api-key",      KEY,      "--alias", "demo"};
    int n = 10;
    if (ctx) argv[n++] = "--ctx-size", argv[n++] = ctx;
    argv[n] = NULL;
    assert_true(srv_start(&s, log, argv, NULL));
    assert_true(srv_wait_healthy(&s, 60));
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "NODE_PACKAGES='%s' LLAVA_BASE_URL='http://127.0.0.1:%d' LLAVA_API_KEY='%s' "
             "LLAVA_IMAGE='%s' node '%s/../node/%s' 2>&1",
             nm, s.port, KEY, srv_demo_sample("sample_01_320x240.png"), tu_env("LLAVA_TEST_DATA"),
             script);
    int rc = run_node(cmd);
    int rc1 = srv_stop(&s);
    assert_int_equal(rc, 0);
    assert_int_equal(rc1, 0);
}

static void test_structured_outputs_node_sdk(void **state) {
    (void)state;
    static const char *const names[] = {"openai",
                                        "zod",
                                        "ajv",
                                        "fast-deep-equal",
                                        "fast-uri",
                                        "json-schema-traverse",
                                        "require-from-string",
                                        NULL};
    run_node_script("structured_test.mjs", names, "openai, zod and ajv (with its dependencies)",
                    NULL);
}

static void test_tool_calling_node_sdk(void **state) {
    (void)state;
    static const char *const names[] = {"openai",
                                        "ajv",
                                        "fast-deep-equal",
                                        "fast-uri",
                                        "json-schema-traverse",
                                        "require-from-string",
                                        NULL};
    run_node_script("tools_test.mjs", names, "openai and ajv (with its dependencies)", "2048");
}

static void test_ollama_js_library(void **state) {
    (void)state;
    static const char *const names[] = {"ollama", "whatwg-fetch", NULL};
    run_node_script("ollama_test.mjs", names, "ollama and whatwg-fetch", NULL);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openai_node_sdk), cmocka_unit_test(test_structured_outputs_node_sdk),
        cmocka_unit_test(test_tool_calling_node_sdk), cmocka_unit_test(test_ollama_js_library)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
