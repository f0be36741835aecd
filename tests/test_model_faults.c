/* test_model_faults.c - what happens when the files under the engine go
 * wrong, against the real binaries on the demo model:
 *   - a model file truncated before it is loaded (safetensors and GGUF, cut
 *     mid-header and mid-tensor-data): llava-cli exits 1 with a message
 *     naming the file and what is missing;
 *   - a model file replaced while llava-server serves (a new file renamed
 *     over the old path, the usual update): the server keeps the old inode
 *     mapped and answers exactly as before;
 *   - a model file truncated in place while llava-server serves: the next
 *     read of a lost page raises SIGBUS, and the server prints that the file
 *     changed under it and exits with status 3 (base/file.h
 *     lv_map_guard_install), instead of an unexplained crash;
 *   - the disk filling up while llava-quantize writes (RLIMIT_FSIZE in the
 *     child, SIGXFSZ ignored, so write fails with EFBIG as it would with
 *     ENOSPC), for an MLX and a GGUF format: exit 1, the error named, and
 *     nothing left behind (no DST, no DST.tmp-*). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "server_harness.h"
#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Runs a shell command (fails the test unless it exits 0). */
static void sh(const char *cmd) {
    char *out;
    int rc = tu_run(cmd, &out);
    if (rc != 0) fail_msg("%s: exit %d: %s", cmd, rc, out);
    free(out);
}

/* A private copy of the demo model in tmp/name. */
static void copy_demo(const char *tmp, const char *name, char *dir, size_t cap) {
    snprintf(dir, cap, "%s/%s", tmp, name);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", srv_demo_model(), dir);
    sh(cmd);
}

/* Runs bin/<tool> with args (a shell fragment), stderr into *out; returns the exit status. */
static int tool(const char *name, const char *args, char **out) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s/%s' %s 2>&1", tu_env("LLAVA_BIN_DIR"), name, args);
    return tu_run(cmd, out);
}

static void truncate_to(const char *path, off_t size) {
    if (truncate(path, size) != 0) fail_msg("truncate %s: failed", path);
}

/* Whether any entry of dir begins with prefix. */
static int count_prefixed(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0) n++;
    if (d) closedir(d);
    return n;
}

/* ---- truncated before loading ------------------------------------------------------------- */

/* llava-cli on dir must fail with exit 1 and name file and one of the words. */
static void expect_load_error(const char *dir, const char *file, const char *w1, const char *w2) {
    char args[2048], *out;
    snprintf(args, sizeof args, "--model '%s' --prompt hi --max-tokens 1", dir);
    int rc = tool("llava-cli", args, &out);
    if (rc != 1 || !strstr(out, file) || (!strstr(out, w1) && !strstr(out, w2)))
        fail_msg("llava-cli on %s with %s truncated: exit %d: %s", dir, file, rc, out);
    free(out);
}

static void test_truncated_before_loading(void **state) {
    (void)state;
    const char *tmp = tu_tmpdir("faults_load");
    char dir[1024], st_path[1100], cmd[4096];
    copy_demo(tmp, "st", dir, sizeof dir);
    snprintf(st_path, sizeof st_path, "%s/model.safetensors", dir);
    struct stat sb;
    assert_int_equal(stat(st_path, &sb), 0);
    /* mid-header: the demo's header is ~18 KB; mid-data: half the file */
    truncate_to(st_path, 9000);
    expect_load_error(dir, "model.safetensors", "past the end", "too short");
    snprintf(cmd, sizeof cmd, "cp '%s/model.safetensors' '%s'", srv_demo_model(), st_path);
    sh(cmd);
    truncate_to(st_path, sb.st_size / 2);
    expect_load_error(dir, "model.safetensors", "past the end", "too short");

    /* A GGUF pair written by llava-quantize, then its text model cut. */
    char gdir[1100], text[1200], args[4096], *out;
    snprintf(gdir, sizeof gdir, "%s/gguf", tmp);
    snprintf(args, sizeof args, "--model '%s' --out '%s' --format gguf-f16", srv_demo_model(),
             gdir);
    if (tool("llava-quantize", args, &out) != 0) fail_msg("llava-quantize: %s", out);
    free(out);
    snprintf(text, sizeof text, "%s/text.gguf", gdir);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s/text.gguf.whole'", text, tmp);
    sh(cmd);
    assert_int_equal(stat(text, &sb), 0);
    truncate_to(text, 3000); /* inside the key-value records */
    expect_load_error(gdir, "text.gguf", "cannot fit", "truncated");
    snprintf(cmd, sizeof cmd, "cp '%s/text.gguf.whole' '%s'", tmp, text);
    sh(cmd);
    truncate_to(text, sb.st_size / 2 + 12345); /* inside the tensor data */
    expect_load_error(gdir, "text.gguf", "past its end", "truncated");
}

/* ---- changed while serving ---------------------------------------------------------------- */

static const char *const PROMPTS[2] = {
    "{\"messages\":[{\"role\":\"user\",\"content\":\"Name a shape.\"}],\"max_tokens\":16,"
    "\"temperature\":0}",
    "{\"messages\":[{\"role\":\"user\",\"content\":\"What colour is the cross?\"}],"
    "\"max_tokens\":16,\"temperature\":0}"};

/* The message content of a chat answer (heap), or fails. */
static char *ask(srv *s, const char *body) {
    char *resp = NULL;
    long code = srv_http(s, "POST", "/v1/chat/completions", body, strlen(body), NULL, NULL, &resp);
    if (code != 200) fail_msg("status %ld: %s", code, resp ? resp : "");
    const char *c = strstr(resp, "\"content\":\"");
    assert_non_null(c);
    c += strlen("\"content\":\"");
    const char *e = strchr(c, '"');
    assert_non_null(e);
    char *t = strndup(c, (size_t)(e - c));
    free(resp);
    return t;
}

static void start(srv *s, const char *tmp, const char *dir) {
    char log[1024];
    snprintf(log, sizeof log, "%s/server.log", tmp);
    const char *argv[] = {"--model", dir, "--port", "0", NULL};
    assert_true(srv_start(s, log, argv, NULL));
    assert_true(srv_wait_healthy(s, 120));
}

static void test_replaced_while_serving(void **state) {
    (void)state;
    const char *tmp = tu_tmpdir("faults_replace");
    char dir[1024], path[1100], cmd[4096];
    copy_demo(tmp, "m", dir, sizeof dir);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    srv s;
    start(&s, tmp, dir);
    char *before[2] = {ask(&s, PROMPTS[0]), ask(&s, PROMPTS[1])};
    /* A different file renamed over the path: here a garbage one, so any
     * read through the path (rather than the mapping) would show. */
    snprintf(cmd, sizeof cmd, "head -c 4096 /dev/urandom > '%s.new' && mv '%s.new' '%s'", path,
             path, path);
    sh(cmd);
    for (int round = 0; round < 2; round++)
        for (int k = 0; k < 2; k++) {
            char *after = ask(&s, PROMPTS[k]);
            assert_string_equal(after, before[k]);
            free(after);
        }
    assert_int_equal(srv_stop(&s), 0);
    free(before[0]);
    free(before[1]);
}

static void test_truncated_while_serving(void **state) {
    (void)state;
    const char *tmp = tu_tmpdir("faults_truncate");
    char dir[1024], path[1100];
    copy_demo(tmp, "m", dir, sizeof dir);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    srv s;
    start(&s, tmp, dir);
    free(ask(&s, PROMPTS[0]));
    truncate_to(path, 4096); /* in place: the mapping's pages past 4096 are gone */
    /* The next request reads embedding rows from the mapping: SIGBUS. */
    char *resp = NULL;
    long code = srv_http(&s, "POST", "/v1/chat/completions", PROMPTS[1], strlen(PROMPTS[1]), NULL,
                         NULL, &resp);
    free(resp);
    int status = -1;
    for (int i = 0; i < 600 && waitpid(s.pid, &status, WNOHANG) != s.pid; i++) srv_sleep_ms(50);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 3)
        fail_msg("server after truncation: request status %ld, wait status 0x%x", code, status);
    s.pid = 0;
    assert_true(srv_log_has(&s, "was truncated or changed on disk while in use"));
    assert_true(srv_log_has(&s, path));
}

/* ---- disk full while quantizing ----------------------------------------------------------- */

/* llava-quantize with args, every file it writes limited to limit bytes. */
static int quantize_limited(const char *const *args, rlim_t limit, const char *log) {
    char bin[1024];
    snprintf(bin, sizeof bin, "%s/llava-quantize", tu_env("LLAVA_BIN_DIR"));
    const char *argv[16] = {bin};
    int n = 1;
    for (; args[n - 1] && n < 15; n++) argv[n] = args[n - 1];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit rl = {limit, limit};
        signal(SIGXFSZ, SIG_IGN); /* write fails with EFBIG instead of killing */
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(125);
        if (!freopen(log, "w", stderr)) _exit(126);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void test_disk_full_while_quantizing(void **state) {
    (void)state;
    const char *tmp = tu_tmpdir("faults_quantize");
    static const char *const fmts[] = {"mlx-int4", "gguf-q8_0"};
    for (size_t k = 0; k < 2; k++) {
        char dst[1100], log[1100];
        snprintf(dst, sizeof dst, "%s/out-%s", tmp, fmts[k]);
        snprintf(log, sizeof log, "%s/%s.log", tmp, fmts[k]);
        const char *args[] = {"--model", srv_demo_model(), "--out", dst, "--format", fmts[k], NULL};
        int rc = quantize_limited(args, 512 * 1024, log);
        char *text = NULL;
        size_t len;
        FILE *f = fopen(log, "r");
        assert_non_null(f);
        text = calloc(1, 1 << 16);
        len = fread(text, 1, (1 << 16) - 1, f);
        text[len] = '\0';
        fclose(f);
        if (rc != 1 || !strstr(text, "File too large"))
            fail_msg("%s with a 512 KiB file limit: exit %d: %s", fmts[k], rc, text);
        free(text);
        struct stat sb;
        assert_true(lstat(dst, &sb) != 0);
        char prefix[64];
        snprintf(prefix, sizeof prefix, "out-%s.", fmts[k]); /* out-X.tmp-XXXXXX */
        if (count_prefixed(tmp, prefix) != 0)
            fail_msg("%s: a temporary directory was left", fmts[k]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_truncated_before_loading),
        cmocka_unit_test(test_replaced_while_serving),
        cmocka_unit_test(test_truncated_while_serving),
        cmocka_unit_test(test_disk_full_while_quantizing),
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
