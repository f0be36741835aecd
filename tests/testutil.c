/* testutil.c - see testutil.h. Test code: failures abort the test via cmocka. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "testutil.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

const char *tu_env(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) fail_msg("%s is not set: run the tests through ctest (make test)", name);
    return v;
}

const char *tu_tmpdir(const char *tag) {
    static char path[1024];
    const char *root = tu_env("LLAVA_TMP");
    mkdir(root, 0755);
    if ((size_t)snprintf(path, sizeof path, "%s/%s", root, tag) >= sizeof path)
        fail_msg("LLAVA_TMP path too long");
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", path, path);
    assert_int_equal(system(cmd), 0);
    return path;
}

void tu_write_file(const char *dir, const char *name, const void *data, size_t len) {
    char path[2048];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        fail_msg("path too long: %s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot write %s", path);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static json_t *added_token(int id, const char *content) {
    return json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", id, "content", content,
                     "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1);
}

void tu_write_llava_tokenizer(const char *dir) {
    const char *src = tu_env("LLAVA_MISTRAL_TOKENIZER");
    json_error_t je;
    json_t *root = json_load_file(src, 0, &je);
    if (!root) fail_msg("%s: %s (run scripts/setup.sh)", src, je.text);
    json_t *added = json_object_get(root, "added_tokens");
    assert_non_null(added);
    json_array_append_new(added, added_token(32000, "<image>"));
    json_array_append_new(added, added_token(32001, "<pad>"));
    char path[2048];
    if ((size_t)snprintf(path, sizeof path, "%s/tokenizer.json", dir) >= sizeof path)
        fail_msg("path too long: %s", dir);
    assert_int_equal(json_dump_file(root, path, JSON_COMPACT), 0);
    json_decref(root);
}

int tu_run(const char *cmd, char **out) {
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 2) buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    int status = pclose(p);
    *out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
