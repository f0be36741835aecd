/* test_load_bench.c - `llava-bench load` (tools/bench/load_bench.c) against
 * the real llava-server on the demo model: bad usage is refused with exit 2;
 * a short run with every request kind (plain, streamed, images, n > 1,
 * cancelled, bad on purpose) and answers checked reports JSON whose counts
 * add up, with no failure and exit 0; a run against a route that answers
 * 404, and one against a port nobody listens on, fail with exit 1. The
 * server must then stop cleanly (under ASan: without leaks). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "server_harness.h"

#include <jansson.h>

static srv S;

/* Runs llava-bench load with args (stderr to the log, or merged when
 * merge); its exit status, stdout in *out. */
static int load(const char *args, bool merge, char **out) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s/llava-bench' load %s %s", tu_env("LLAVA_BIN_DIR"), args,
             merge ? "2>&1" : "2>/dev/null");
    return tu_run(cmd, out);
}

/* The JSON report of a run, or a test failure naming the output. */
static json_t *report(const char *args, int want_rc) {
    char *out = NULL;
    int rc = load(args, false, &out);
    json_t *j = json_loads(out ? out : "", 0, NULL);
    if (rc != want_rc || !j)
        fail_msg("llava-bench load %s: exit %d (want %d): %s", args, rc, want_rc, out);
    free(out);
    return j;
}

static long num(json_t *o, const char *key) {
    return (long)json_integer_value(json_object_get(o, key));
}

static int setup(void **state) {
    (void)state;
    const char *argv[] = {"--model", srv_demo_model(), "--port", "0", "--threads",
                          "2",       "--parallel",     "4",      NULL};
    char log[1024];
    snprintf(log, sizeof log, "%s/server.log", tu_tmpdir("load_bench"));
    if (!srv_start(&S, log, argv, NULL)) return -1;
    return srv_wait_healthy(&S, 120) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    assert_int_equal(srv_stop(&S), 0);
    return 0;
}

static void bad_usage(void **state) {
    (void)state;
    static const struct {
        const char *args, *msg;
        int rc;
    } cases[] = {
        {"--clients 4", "--url is required", 2},
        {"--url http://x --mix stream_image=1,frob=2", "unknown kind 'frob'", 2},
        {"--url http://x --mix bad=0", "every kind weight 0", 2},
        {"--url http://x --clients 0", "--clients wants an integer", 2},
        {"--url http://x --mix stream_image --image /nonexistent.png", "/nonexistent.png", 1},
        {"--help", "usage: llava-bench load --url", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *out = NULL;
        int rc = load(cases[i].args, true, &out);
        if (rc != cases[i].rc || !strstr(out, cases[i].msg))
            fail_msg("llava-bench load %s: exit %d (want %d), output: %s", cases[i].args, rc,
                     cases[i].rc, out);
        free(out);
    }
}

/* Every kind, answers checked: the outcomes add up to what was sent, none failed.
 * Seed 7 draws every kind of the default mix within the first 16 requests. */
static void mixed_run(void **state) {
    (void)state;
    char args[4096];
    int requests = SANITIZED ? 16 : 40;
    snprintf(args, sizeof args,
             "--url http://127.0.0.1:%d --clients %d --requests %d --max-tokens 8 --seed 7 "
             "--cancel-ms 300 --check-answers --json --pid %d --image '%s' --image '%s'",
             S.port, SANITIZED ? 4 : 6, requests, (int)S.pid,
             srv_demo_sample("sample_04_96x96.png"), srv_demo_sample("sample_01_320x240.png"));
    json_t *j = report(args, 0);
    json_t *outcomes = json_object_get(j, "outcomes"), *kinds = json_object_get(j, "kinds");
    assert_int_equal(num(j, "sent"), requests);
    long sum = 0, sent = 0;
    const char *key;
    json_t *v;
    json_object_foreach(outcomes, key, v) sum += (long)json_integer_value(v);
    json_object_foreach(kinds, key, v) {
        if (num(v, "sent") < 1) fail_msg("kind %s was never sent", key);
        sent += num(v, "sent");
    }
    assert_int_equal(sum, requests);
    assert_int_equal(sent, requests);
    assert_int_equal(num(j, "failed"), 0);
    assert_true(json_is_true(json_object_get(j, "health_after")));
    assert_true(num(outcomes, "ok") > 0);
    assert_int_equal(num(outcomes, "bad_rejected"), num(json_object_get(kinds, "bad"), "sent"));
    /* every answered request has its status counted (the cut ones have none) */
    long statuses = 0;
    json_object_foreach(json_object_get(j, "statuses"), key, v) statuses +=
        (long)json_integer_value(v);
    assert_int_equal(statuses, requests - num(outcomes, "cancelled"));
    assert_true(num(j, "generated_tokens") > 0);
    json_t *stream = json_object_get(json_object_get(j, "latency_ms"), "stream");
    assert_true(num(json_object_get(stream, "ttft"), "n") > 0);
    json_t *server = json_object_get(j, "server");
    assert_int_equal(num(server, "pid"), S.pid);
    assert_true(json_real_value(json_object_get(json_object_get(server, "rss_mib"), "max")) > 1);
    json_decref(j);

    /* the table: the same figures in words */
    char *out = NULL;
    snprintf(args, sizeof args,
             "--url http://127.0.0.1:%d --clients 2 --requests 4 --mix plain_text=1,bad=1 "
             "--max-tokens 4",
             S.port);
    int rc = load(args, true, &out);
    if (rc != 0 || !strstr(out, "failures: none") || !strstr(out, "4 sent") ||
        !strstr(out, "server pid "))
        fail_msg("llava-bench load %s: exit %d, output: %s", args, rc, out);
    free(out);
}

/* A server that answers errors, and no server at all: exit 1, counted as failed. */
static void failing_runs(void **state) {
    (void)state;
    char args[1024];
    snprintf(args, sizeof args,
             "--url http://127.0.0.1:%d/nowhere --clients 2 --requests 3 --mix plain_text --json",
             S.port);
    json_t *j = report(args, 1);
    assert_int_equal(num(j, "failed"), 3);
    assert_int_equal(num(json_object_get(j, "outcomes"), "unexpected_status"), 3);
    assert_int_equal(num(json_object_get(j, "statuses"), "404"), 3);
    assert_non_null(strstr(json_string_value(json_object_get(j, "first_failure")), "status 404"));
    json_decref(j);

    j = report("--url http://127.0.0.1:1 --clients 1 --requests 2 --mix plain_text --json", 1);
    assert_int_equal(num(json_object_get(j, "outcomes"), "transport"), 2);
    assert_false(json_is_true(json_object_get(j, "health_after")));
    json_decref(j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_usage),
        cmocka_unit_test(mixed_run),
        cmocka_unit_test(failing_runs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
