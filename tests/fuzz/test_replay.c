/* test_replay.c - the fuzz regression replay (tests/fuzz/replay.c) cannot
 * pass vacuously: a missing or empty corpus folder, a missing regressions
 * folder and a crashing input each fail it, and a crash names its file.
 * Runs fuzz_replay_selftest (replay.c + replay_selftest.c, a target that
 * crashes on inputs starting with "crash") and one real target. ctest name:
 * fuzz_replay. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Runs BIN_DIR/prog with args (stderr joined to stdout); returns the exit
 * status, the output in *out (caller frees). */
static int replay(const char *prog, const char *args, char **out) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s/%s' %s 2>&1", tu_env("LLAVA_BIN_DIR"), prog, args);
    return tu_run(cmd, out);
}

static void expect(const char *out, const char *what) {
    if (!strstr(out, what)) fail_msg("expected \"%s\" in the output:\n%s", what, out);
}

/* A scratch folder tag/name, created; static buffer until the next call. */
static const char *subdir(const char *root, const char *name) {
    static char path[2048];
    snprintf(path, sizeof path, "%s/%s", root, name);
    mkdir(path, 0755);
    return path;
}

static void missing_corpus_folder_fails(void **state) {
    const char *root = tu_tmpdir("replay_missing");
    char args[4096], *out;
    snprintf(args, sizeof args, "-r '%s' '%s/no_such_folder'", subdir(root, "regr"), root);
    assert_int_equal(replay("fuzz_replay_selftest", args, &out), 2);
    expect(out, "no_such_folder");
    expect(out, "cannot open");
    free(out);
    /* the same from a real target, as ctest runs it */
    assert_int_equal(replay("fuzz_replay_tokenizer", args, &out), 2);
    expect(out, "no_such_folder");
    free(out);
}

static void missing_regressions_folder_fails(void **state) {
    const char *root = tu_tmpdir("replay_missing_regr");
    tu_write_file(subdir(root, "seeds"), "ok", "hello", 5);
    char args[4096], *out;
    snprintf(args, sizeof args, "-r '%s/no_regressions' '%s/seeds'", root, root);
    assert_int_equal(replay("fuzz_replay_selftest", args, &out), 2);
    expect(out, "no_regressions");
    free(out);
}

static void empty_corpus_folder_fails(void **state) {
    const char *root = tu_tmpdir("replay_empty");
    /* a README is not an input */
    tu_write_file(subdir(root, "seeds"), "README", "crash", 5);
    tu_write_file(subdir(root, "regr"), "README", "crash", 5);
    char args[4096], *out;
    snprintf(args, sizeof args, "-r '%s/regr' '%s/seeds'", root, root);
    assert_int_equal(replay("fuzz_replay_selftest", args, &out), 2);
    expect(out, "holds no inputs");
    free(out);
}

static void no_arguments_fails(void **state) {
    char *out;
    assert_int_equal(replay("fuzz_replay_selftest", "", &out), 2);
    expect(out, "usage");
    free(out);
}

static void clean_inputs_pass(void **state) {
    const char *root = tu_tmpdir("replay_clean");
    const char *seeds = subdir(root, "seeds");
    tu_write_file(seeds, "a", "hello", 5);
    tu_write_file(seeds, "empty", "", 0);
    tu_write_file(subdir(root, "regr"), "README", "crash", 5);
    char args[4096], *out;
    snprintf(args, sizeof args, "-r '%s/regr' '%s/seeds'", root, root);
    assert_int_equal(replay("fuzz_replay_selftest", args, &out), 0);
    expect(out, "2 inputs replayed, 0 failed");
    free(out);
}

static void crash_fails_and_names_the_input(void **state) {
    const char *root = tu_tmpdir("replay_crash");
    tu_write_file(subdir(root, "seeds"), "a", "hello", 5);
    const char *regr = subdir(root, "regr");
    tu_write_file(regr, "crash-0001", "crash!", 6);
    tu_write_file(regr, "exit-0002", "exit", 4);
    tu_write_file(regr, "fine", "fine", 4);
    char args[4096], *out;
    snprintf(args, sizeof args, "-r '%s/regr' '%s/seeds'", root, root);
    assert_int_equal(replay("fuzz_replay_selftest", args, &out), 1);
    expect(out, "FAILED");
    expect(out, "regr/crash-0001: killed by signal");
    expect(out, "regr/exit-0002: exited with status 1");
    expect(out, "4 inputs replayed, 2 failed"); /* every input runs */
    free(out);
}

#if defined(__SANITIZE_ADDRESS__)
/* Under ASan the child's exit runs LeakSanitizer: a leaking input fails. */
static void leak_fails_under_asan(void **state) {
    const char *root = tu_tmpdir("replay_leak");
    tu_write_file(subdir(root, "seeds"), "leak-0001", "leak", 4);
    subdir(root, "regr");
    char args[4096], *out;
    snprintf(args, sizeof args, "-r '%s/regr' '%s/seeds'", root, root);
    char cmd[8192];
    const char *asan = getenv("ASAN_OPTIONS");
    snprintf(cmd, sizeof cmd, "ASAN_OPTIONS='%s:detect_leaks=1' '%s/fuzz_replay_selftest' %s 2>&1",
             asan ? asan : "", tu_env("LLAVA_BIN_DIR"), args);
    assert_int_equal(tu_run(cmd, &out), 1);
    expect(out, "seeds/leak-0001: ");
    expect(out, "1 input replayed, 1 failed");
    free(out);
}
#endif

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(missing_corpus_folder_fails),
        cmocka_unit_test(missing_regressions_folder_fails),
        cmocka_unit_test(empty_corpus_folder_fails),
        cmocka_unit_test(no_arguments_fails),
        cmocka_unit_test(clean_inputs_pass),
        cmocka_unit_test(crash_fails_and_names_the_input),
#if defined(__SANITIZE_ADDRESS__)
        cmocka_unit_test(leak_fails_under_asan),
#endif
    };
    return cmocka_run_group_tests_name("fuzz_replay", tests, NULL, NULL);
}
