/* node_harness.h - what the tests that run a Node script share
 * (test_server_sdk, test_webui): the npm packages scripts/setup.sh installs
 * into the cache directory, and running node with its output printed.
 * Header-only (static inline), like server_harness.h; include it after
 * cmocka.h. */
#ifndef LV_TEST_NODE_HARNESS_H
#define LV_TEST_NODE_HARNESS_H

#include "testutil.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The cache's node_modules, found from the tokenizer package's path that
 * ctest passes, if it holds the packages `names` (NULL-terminated). */
static inline bool node_modules(char *out, size_t n, const char *const *names) {
    const char *tokp = getenv("LLAVA_MISTRAL_TOKENIZER");
    const char *nm = tokp ? strstr(tokp, "/node_modules/") : NULL;
    if (!nm) return false;
    snprintf(out, n, "%.*s/node_modules", (int)(nm - tokp), tokp);
    for (; *names; names++) {
        char pkg[1200];
        snprintf(pkg, sizeof pkg, "%.1000s/%s/package.json", out, *names);
        struct stat st;
        if (stat(pkg, &st) != 0) return false;
    }
    return true;
}

/* Runs cmd, printing its output line by line (cmocka's print_message has a
 * small buffer); its exit status. */
static inline int run_node(const char *cmd) {
    char *out = NULL;
    int rc = tu_run(cmd, &out);
    for (char *line = out, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        print_message("%s\n", line);
    }
    free(out);
    return rc;
}

#endif
