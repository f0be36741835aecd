/* test_pull.c - downloading models end to end, through the tools, against
 * a fake hub on loopback (tests/fake_hub.h) serving models/demo as
 * demo-org/llava-demo: llava-pull, llava-server --model ORG/NAME and with
 * the seed config's model_id (download with a progress bar, then /health
 * and a chat completion), --offline, and llava-cli --model ORG/NAME. Each
 * test starts from an empty HF_HOME; $LLAVA_TMP/pull is removed at the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/file.h"
#include "base/version.h"
#include "fake_hub.h"
#include "server_harness.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DEMO        "demo-org/llava-demo"
#define DEMO_COMMIT "00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee"

static fake_hub *H;
static char g_root[1024]; /* $LLAVA_TMP/pull */
static char g_home[1200]; /* this test's HF_HOME */

static int group_setup(void **state) {
    snprintf(g_root, sizeof g_root, "%s", tu_tmpdir("pull"));
    H = fh_start();
    assert_non_null(H);
    fh_add_repo(H, DEMO, DEMO_COMMIT);
    fh_add_dir(H, DEMO, srv_demo_model());
    setenv("HF_ENDPOINT", fh_endpoint(H), 1); /* the tools inherit the environment */
    unsetenv("HF_HUB_CACHE");
    unsetenv("HF_TOKEN");
    unsetenv("HF_HUB_OFFLINE");
    unsetenv("XDG_CACHE_HOME");
    return 0;
}

static int group_teardown(void **state) {
    fh_stop(H);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
    return system(cmd);
}

static int setup(void **state) {
    static int n;
    snprintf(g_home, sizeof g_home, "%s/home%d", g_root, ++n);
    mkdir(g_home, 0755);
    setenv("HF_HOME", g_home, 1);
    setenv("HOME", g_home, 1);
    fh_clear_log(H);
    return 0;
}

static bool file_has(const char *path, const char *needle) {
    char *text = NULL;
    size_t len;
    if (lv_read_file(path, 1u << 24, &text, &len, NULL) != LV_OK) return false;
    bool found = strstr(text, needle) != NULL;
    free(text);
    return found;
}

/* The progress bar's final line for the weights (stderr is a file here). */
#define BAR_DONE "model.safetensors  [####################]  13.2/13.2 MiB  100%"

static void test_pull_tool(void **state) {
    char cmd[4096], err_log[1300], *out = NULL;
    snprintf(err_log, sizeof err_log, "%s/pull.err", g_home);
    snprintf(cmd, sizeof cmd, "'%s/llava-pull' " DEMO " 2>'%s'", tu_env("LLAVA_BIN_DIR"), err_log);
    int rc = tu_run(cmd, &out);
    if (rc) fail_msg("llava-pull exited %d", rc);
    char want[1400];
    char *real = realpath(g_home, NULL);
    snprintf(want, sizeof want, "%s/hub/models--demo-org--llava-demo/snapshots/" DEMO_COMMIT "\n",
             real);
    free(real);
    assert_string_equal(out, want);
    free(out);
    assert_true(file_has(err_log, BAR_DONE));
    assert_true(file_has(err_log, "MiB/s"));

    /* Again: nothing downloaded. */
    fh_clear_log(H);
    assert_int_equal(tu_run(cmd, &out), 0);
    free(out);
    assert_int_equal(fh_bytes_served(H), 0);

    /* --help, --version, usage and hub errors. */
    snprintf(cmd, sizeof cmd, "'%s/llava-pull' --help", tu_env("LLAVA_BIN_DIR"));
    assert_int_equal(tu_run(cmd, &out), 0);
    assert_non_null(strstr(out, "usage: llava-pull ORG/NAME[:QUANT]"));
    free(out);
    snprintf(cmd, sizeof cmd, "'%s/llava-pull' --version", tu_env("LLAVA_BIN_DIR"));
    assert_int_equal(tu_run(cmd, &out), 0);
    assert_true(!strncmp(out, "llava-pull " LLAVA_VERSION " (git ",
                         strlen("llava-pull " LLAVA_VERSION " (git ")));
    free(out);
    snprintf(cmd, sizeof cmd, "'%s/llava-pull' 2>&1", tu_env("LLAVA_BIN_DIR"));
    assert_int_equal(tu_run(cmd, &out), 2);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s/llava-pull' nobody/nothing 2>&1", tu_env("LLAVA_BIN_DIR"));
    assert_int_equal(tu_run(cmd, &out), 1);
    assert_non_null(strstr(out, "llava-pull: model 'nobody/nothing'"));
    assert_non_null(strstr(out, "HTTP 404"));
    free(out);
}

/* A chat completion against s answers 200 with a message. */
static void chat_once(const srv *s) {
    const char *body =
        "{\"model\":\"x\",\"max_tokens\":8,\"temperature\":0,"
        "\"messages\":[{\"role\":\"user\",\"content\":\"What is in the picture?\"}]}";
    char *out = NULL;
    long code = srv_http(s, "POST", "/v1/chat/completions", body, strlen(body), NULL, NULL, &out);
    if (code != 200) fail_msg("chat completion: HTTP %ld: %s", code, out ? out : "");
    assert_non_null(strstr(out, "\"choices\""));
    assert_non_null(strstr(out, "\"content\""));
    free(out);
}

/* The server downloads, loads and serves; the log has the progress bar. */
static void serve(const char *const *argv, const char *log) {
    srv s;
    assert_true(srv_start(&s, log, argv, NULL));
    bool healthy = srv_wait_healthy(&s, SANITIZED ? 300 : 120);
    if (!healthy) {
        srv_stop(&s);
        fail_msg("the server never became healthy; see %s", log);
    }
    chat_once(&s);
    assert_int_equal(srv_stop(&s), 0);
    assert_true(srv_log_has(&s, "is not in the local cache: downloading it"));
    assert_true(srv_log_has(&s, BAR_DONE));
}

static void test_server_model_repo(void **state) {
    char log[1300];
    snprintf(log, sizeof log, "%s/server.log", g_home);
    const char *argv[] = {"--model", DEMO, "--port", "0", NULL};
    serve(argv, log);
}

static void test_server_config_model_id(void **state) {
    const char *cfg = "{\"model_name\": \"demo\", \"model_id\": \"" DEMO "\"}\n";
    tu_write_file(g_home, "seed.json", cfg, strlen(cfg));
    char path[1300], log[1300];
    snprintf(path, sizeof path, "%s/seed.json", g_home);
    snprintf(log, sizeof log, "%s/server.log", g_home);
    const char *argv[] = {"--config", path, "--port", "0", NULL};
    serve(argv, log);
}

/* --offline (and HF_HUB_OFFLINE=1): the cache's error, no request. */
static void test_server_offline(void **state) {
    char cmd[4096], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s/llava-server' --model " DEMO " --port 0 --offline 2>&1",
             tu_env("LLAVA_BIN_DIR"));
    assert_int_equal(tu_run(cmd, &out), 1);
    assert_non_null(strstr(out, "is not in the Hugging Face cache"));
    free(out);
    snprintf(cmd, sizeof cmd, "HF_HUB_OFFLINE=1 '%s/llava-server' --model " DEMO " --port 0 2>&1",
             tu_env("LLAVA_BIN_DIR"));
    assert_int_equal(tu_run(cmd, &out), 1);
    assert_non_null(strstr(out, "is not in the Hugging Face cache"));
    free(out);
    size_t n;
    free(fh_log(H, &n));
    assert_int_equal(n, 0);
}

/* llava-cli downloads too (tokenizing only: --max-tokens 0), then finds
 * it in the cache with --offline. */
static void test_cli(void **state) {
    char cmd[4096], err_log[1300], *out = NULL;
    snprintf(err_log, sizeof err_log, "%s/cli.err", g_home);
    snprintf(cmd, sizeof cmd,
             "'%s/llava-cli' --model " DEMO " --prompt hello --max-tokens 0 2>'%s'",
             tu_env("LLAVA_BIN_DIR"), err_log);
    assert_int_equal(tu_run(cmd, &out), 0);
    assert_true(strlen(out) > 2);
    free(out);
    assert_true(file_has(err_log, BAR_DONE));
    snprintf(cmd, sizeof cmd,
             "'%s/llava-cli' --model " DEMO " --offline --prompt hello --max-tokens 0 2>&1",
             tu_env("LLAVA_BIN_DIR"));
    assert_int_equal(tu_run(cmd, &out), 0);
    assert_null(strstr(out, "downloading"));
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_pull_tool, setup),
        cmocka_unit_test_setup(test_server_model_repo, setup),
        cmocka_unit_test_setup(test_server_config_model_id, setup),
        cmocka_unit_test_setup(test_server_offline, setup),
        cmocka_unit_test_setup(test_cli, setup),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
