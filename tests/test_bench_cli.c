/* test_bench_cli.c - llava-bench serve's command line (tools/bench/serve_bench.c):
 * bad usage is refused with a message naming the option and exit status 2;
 * --help exits 0; a tiny run on the demo model prints its figures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Runs llava-bench serve with args (stderr merged); its exit status, output in *out. */
static int serve(const char *args, char **out) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s/llava-bench' serve %s 2>&1", tu_env("LLAVA_BIN_DIR"), args);
    return tu_run(cmd, out);
}

static void expect(const char *args, int rc, const char *msg) {
    char *out = NULL;
    int got = serve(args, &out);
    if (got != rc || !strstr(out, msg))
        fail_msg("llava-bench serve %s: exit %d (want %d), output: %s", args, got, rc, out);
    free(out);
}

static void bad_usage(void **state) {
    (void)state;
    expect("--streams 8", 2, "--model is required");
    expect("--model x --streams 0", 2, "--streams wants an integer in [1, 256], got '0'");
    expect("--model x --tokens 1", 2, "--tokens wants an integer");
    expect("--model x --repeat two", 2, "--repeat wants an integer");
    expect("--model x --bogus 1", 2, "unknown or incomplete option '--bogus'");
    expect("--help", 0, "usage: llava-bench serve --model PATH");
    expect("--model /nonexistent/model --streams 2", 1, "/nonexistent/model");
}

static void tiny_run(void **state) {
    (void)state;
    char args[2048];
    snprintf(args, sizeof args,
             "--model '%s/../../models/demo' --streams 2 --tokens 4 --threads 2",
             tu_env("LLAVA_TEST_DATA"));
    expect(args, 0, "ratio 2/1 streams");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_usage),
        cmocka_unit_test(tiny_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
