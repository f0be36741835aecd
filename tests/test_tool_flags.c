/* test_tool_flags.c - the flags every tool answers the same way: --help
 * prints its usage on stdout and exits 0, --version prints one line
 * "<tool> <LLAVA_VERSION> (git <commit>, <arch> <kernels>, CUDA on|off)" on
 * stdout and exits 0, and an option it does not know exits 2 with nothing
 * on stdout and the usage (or a pointer to --help) on stderr. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/common.h"
#include "base/file.h"
#include "base/version.h"
#include "testutil.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const TOOLS[] = {"llava-cli",       "llava-server", "llava-eval",
                                    "llava-quantize",  "llava-bench",  "llava-attn-bench",
                                    "llava-gpu-bench", "llava-pull"};

/* Runs tool with args: its exit status, stdout in *out and stderr in *err (heap). */
static int run_tool(const char *tool, const char *args, char **out, char **err) {
    char path[2048], cmd[4096];
    snprintf(path, sizeof path, "%s/stderr-%s", tu_tmpdir("tool_flags"), tool);
    snprintf(cmd, sizeof cmd, "'%s/%s' %s 2>'%s'", tu_env("LLAVA_BIN_DIR"), tool, args, path);
    int rc = tu_run(cmd, out);
    size_t len;
    lv_err e = {{0}};
    if (lv_read_file(path, 1 << 20, err, &len, &e)) fail_msg("%s", e.msg);
    return rc;
}

static void help_exits_0(void **state) {
    (void)state;
    for (size_t i = 0; i < LV_ARRAY_LEN(TOOLS); i++) {
        char *out, *err, want[64];
        int rc = run_tool(TOOLS[i], "--help", &out, &err);
        snprintf(want, sizeof want, "usage: %s", TOOLS[i]);
        if (rc != 0 || !strstr(out, want) || *err)
            fail_msg("%s --help: exit %d, stdout '%s', stderr '%s'", TOOLS[i], rc, out, err);
        free(out);
        free(err);
    }
}

/* "<tool> <version> (git <7 hex digits or unknown>, <arch> <KERNELS>, CUDA on|off)\n" */
static bool version_line(const char *tool, const char *s) {
    char want[128];
    size_t n = (size_t)snprintf(want, sizeof want, "%s %s (git ", tool, LLAVA_VERSION);
    if (strncmp(s, want, n)) return false;
    s += n;
    if (!strncmp(s, "unknown", 7)) {
        s += 7;
    } else {
        for (int k = 0; k < 7; k++, s++)
            if (!isxdigit((unsigned char)*s)) return false;
    }
    if (strncmp(s, ", ", 2) || !strchr(s, ' ')) return false;
    const char *cuda = strstr(s, ", CUDA ");
    return cuda && (!strcmp(cuda, ", CUDA on)\n") || !strcmp(cuda, ", CUDA off)\n"));
}

static void version_exits_0(void **state) {
    (void)state;
    for (size_t i = 0; i < LV_ARRAY_LEN(TOOLS); i++) {
        char *out, *err;
        int rc = run_tool(TOOLS[i], "--version", &out, &err);
        if (rc != 0 || !version_line(TOOLS[i], out) || *err)
            fail_msg("%s --version: exit %d, stdout '%s', stderr '%s'", TOOLS[i], rc, out, err);
        free(out);
        free(err);
    }
}

static void bad_option_exits_2(void **state) {
    (void)state;
    for (size_t i = 0; i < LV_ARRAY_LEN(TOOLS); i++) {
        char *out, *err;
        int rc = run_tool(TOOLS[i], "--no-such-option 1", &out, &err);
        if (rc != 2 || *out || !(strstr(err, "usage: ") || strstr(err, "--help")))
            fail_msg("%s --no-such-option: exit %d, stdout '%s', stderr '%s'", TOOLS[i], rc, out,
                     err);
        free(out);
        free(err);
    }
}

/* Values a flag refuses: exit 2 with the flag named, before anything loads. */
static void bad_values_exit_2(void **state) {
    (void)state;
    static const struct {
        const char *tool, *args, *says;
    } cases[] = {
        {"llava-server", "--model x --replica-id 'r 1'", "--replica-id 'r 1'"},
        {"llava-server", "--model x --replica-id ''", "--replica-id ''"},
        {"llava-server",
         "--model x --replica-id 0123456789012345678901234567890123456789012345678901234567890123",
         "1 to 63 letters"},
        {"llava-server", "--model x --tensor-parallel 9", "--tensor-parallel"},
        {"llava-cli", "--model x --tensor-parallel -1", "--tensor-parallel"},
    };
    for (size_t i = 0; i < LV_ARRAY_LEN(cases); i++) {
        char *out, *err;
        int rc = run_tool(cases[i].tool, cases[i].args, &out, &err);
        if (rc != 2 || !strstr(err, cases[i].says))
            fail_msg("%s %s: exit %d, stderr '%s'", cases[i].tool, cases[i].args, rc, err);
        print_message("    ok: %s %s: %s", cases[i].tool, cases[i].args, err);
        free(out);
        free(err);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(help_exits_0),
        cmocka_unit_test(version_exits_0),
        cmocka_unit_test(bad_option_exits_2),
        cmocka_unit_test(bad_values_exit_2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
