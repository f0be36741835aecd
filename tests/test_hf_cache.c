/* test_hf_cache.c - model references: local paths, the four cache roots in
 * order, refs/main, snapshots, repo-id validation and symlinked blobs, all
 * in fake caches under $LLAVA_TMP. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/file.h"
#include "io/hf_cache.h"
#include "testutil.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_root[1024]; /* $LLAVA_TMP/hf_cache */

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (system(cmd) != 0) fail_msg("command failed: %s", cmd);
}

/* A repo in <cache>/models--ORG--NAME with snapshot `rev` whose config.json is
 * a relative symlink into blobs/ (as huggingface_hub makes them) holding
 * `content`. refs_main: the text of refs/main, or NULL for none. */
static void make_repo(const char *cache, const char *folder, const char *rev, const char *refs_main,
                      const char *content) {
    sh("mkdir -p '%s/%s/blobs' '%s/%s/refs' '%s/%s/snapshots/%s'", cache, folder, cache, folder,
       cache, folder, rev);
    sh("printf '%%s' '%s' > '%s/%s/blobs/blob-%s'", content, cache, folder, rev);
    sh("ln -sf '../../blobs/blob-%s' '%s/%s/snapshots/%s/config.json'", rev, cache, folder, rev);
    if (refs_main) sh("printf '%%s' '%s' > '%s/%s/refs/main'", refs_main, cache, folder);
}

static void clear_env(void) {
    unsetenv("HF_HUB_CACHE");
    unsetenv("HF_HOME");
    unsetenv("XDG_CACHE_HOME");
    char home[PATH_MAX];
    snprintf(home, sizeof home, "%s/emptyhome", g_root);
    mkdir(home, 0755);
    setenv("HOME", home, 1);
}

static int setup(void **state) {
    snprintf(g_root, sizeof g_root, "%s", tu_tmpdir("hf_cache"));
    clear_env();
    return 0;
}

/* Resolves ref and checks that <dir>/config.json reads `content`. */
static void expect_model(const char *ref, const char *content) {
    char *dir = NULL;
    lv_err err = {""};
    lv_status st = hf_resolve_model(ref, &dir, &err);
    if (st != LV_OK) fail_msg("%s: %s", ref, err.msg);
    char path[PATH_MAX], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/config.json", dir);
    assert_int_equal(lv_read_file(path, 1000, &text, &len, &err), LV_OK);
    assert_string_equal(text, content);
    free(text);
    free(dir);
}

static void local_paths(void **state) {
    clear_env();
    char d[PATH_MAX], f[PATH_MAX + 16], *out, *real;
    snprintf(d, sizeof d, "%s/local/model", g_root);
    sh("mkdir -p '%s'", d);
    tu_write_file(d, "config.json", "{}", 2);
    real = realpath(d, NULL);
    assert_int_equal(hf_resolve_model(d, &out, NULL), LV_OK);
    assert_string_equal(out, real);
    free(out);
    /* Trailing slash and ".." are resolved. */
    snprintf(f, sizeof f, "%s/local/model/../model/", g_root);
    assert_int_equal(hf_resolve_model(f, &out, NULL), LV_OK);
    assert_string_equal(out, real);
    free(out);
    free(real);
    /* A file (a single .safetensors, say). */
    snprintf(f, sizeof f, "%s/config.json", d);
    real = realpath(f, NULL);
    assert_int_equal(hf_resolve_model(f, &out, NULL), LV_OK);
    assert_string_equal(out, real);
    free(out);
    free(real);
    /* A relative path that also looks like a repo id: the local one wins. */
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(f, sizeof f, "%s/local", g_root);
    assert_int_equal(chdir(f), 0);
    assert_int_equal(hf_resolve_model("local/model", &out, NULL), LV_ERR_IO); /* not cached */
    assert_int_equal(chdir(g_root), 0);
    assert_int_equal(hf_resolve_model("local/model", &out, NULL), LV_OK);
    real = realpath(d, NULL);
    assert_string_equal(out, real);
    free(out);
    free(real);
    assert_int_equal(chdir(cwd), 0);
}

static void cache_precedence(void **state) {
    clear_env();
    const char *folder = "models--org--name";
    char hub[PATH_MAX], home[PATH_MAX], xdg[PATH_MAX], user[PATH_MAX];
    snprintf(hub, sizeof hub, "%s/prec/hubcache", g_root);
    snprintf(home, sizeof home, "%s/prec/hfhome", g_root);
    snprintf(xdg, sizeof xdg, "%s/prec/xdg", g_root);
    snprintf(user, sizeof user, "%s/prec/user", g_root);
    char c_home[PATH_MAX + 8], c_xdg[PATH_MAX + 32], c_user[PATH_MAX + 32];
    snprintf(c_home, sizeof c_home, "%s/hub", home);
    snprintf(c_xdg, sizeof c_xdg, "%s/huggingface/hub", xdg);
    snprintf(c_user, sizeof c_user, "%s/.cache/huggingface/hub", user);
    make_repo(hub, folder, "aaa1", "aaa1", "hub");
    make_repo(c_home, folder, "bbb2", "bbb2", "hfhome");
    make_repo(c_xdg, folder, "ccc3", "ccc3", "xdg");
    make_repo(c_user, folder, "ddd4", "ddd4", "user");
    setenv("HF_HUB_CACHE", hub, 1);
    setenv("HF_HOME", home, 1);
    setenv("XDG_CACHE_HOME", xdg, 1);
    setenv("HOME", user, 1);
    expect_model("org/name", "hub");
    unsetenv("HF_HUB_CACHE");
    expect_model("org/name", "hfhome");
    setenv("HF_HUB_CACHE", "", 1); /* empty counts as unset */
    unsetenv("HF_HOME");
    expect_model("org/name", "xdg");
    unsetenv("XDG_CACHE_HOME");
    expect_model("org/name", "user");
    /* A later cache is used when an earlier one lacks the repo. */
    setenv("HF_HUB_CACHE", hub, 1);
    make_repo(c_user, "models--org--other", "eee5", "eee5", "other-user");
    expect_model("org/other", "other-user");
    expect_model("org/name", "hub");
}

static void refs_main_whitespace_and_snapshots(void **state) {
    clear_env();
    char cache[PATH_MAX];
    snprintf(cache, sizeof cache, "%s/refs", g_root);
    setenv("HF_HUB_CACHE", cache, 1);
    /* refs/main with a trailing newline (and CR, and leading spaces). */
    make_repo(cache, "models--o--nl", "0123abcdef", "0123abcdef\n", "nl");
    expect_model("o/nl", "nl");
    make_repo(cache, "models--o--crlf", "4567", "  4567\r\n", "crlf");
    expect_model("o/crlf", "crlf");
    /* refs/main names a snapshot that is not there. */
    make_repo(cache, "models--o--gone", "1111", "2222\n", "gone");
    char *out = (char *)"x";
    lv_err err;
    assert_int_equal(hf_resolve_model("o/gone", &out, &err), LV_ERR_IO);
    assert_null(out);
    assert_non_null(strstr(err.msg, "refs/main names snapshot 2222"));
    assert_non_null(strstr(err.msg, "incomplete download"));
    /* refs/main holding a path is refused, not followed. */
    make_repo(cache, "models--o--evil", "ab", "../../../etc", "evil");
    assert_int_equal(hf_resolve_model("o/evil", &out, &err), LV_ERR_IO);
    assert_non_null(strstr(err.msg, "does not hold a commit hash"));
    /* No refs/main: the only snapshot is used... */
    make_repo(cache, "models--o--one", "9999", NULL, "one");
    expect_model("o/one", "one");
    /* ...but two are ambiguous. */
    make_repo(cache, "models--o--two", "aaaa", NULL, "two-a");
    make_repo(cache, "models--o--two", "bbbb", NULL, "two-b");
    assert_int_equal(hf_resolve_model("o/two", &out, &err), LV_ERR_IO);
    assert_non_null(strstr(err.msg, "no refs/main and 2 snapshots"));
    /* A broken repo in one cache does not hide a good one in a later cache. */
    char home[PATH_MAX], c_home[PATH_MAX + 8];
    snprintf(home, sizeof home, "%s/refs-home", g_root);
    snprintf(c_home, sizeof c_home, "%s/hub", home);
    make_repo(c_home, "models--o--gone", "2222", "2222", "gone-but-found");
    setenv("HF_HOME", home, 1);
    expect_model("o/gone", "gone-but-found");
}

static void not_found_lists_where_it_looked(void **state) {
    clear_env();
    char hub[PATH_MAX], home[PATH_MAX];
    snprintf(hub, sizeof hub, "%s/nf/hub", g_root);
    snprintf(home, sizeof home, "%s/nf/home", g_root);
    setenv("HF_HUB_CACHE", hub, 1);
    setenv("HOME", home, 1);
    char *out;
    lv_err err;
    assert_int_equal(hf_resolve_model("Org/Name", &out, &err), LV_ERR_IO);
    char want[3 * PATH_MAX];
    snprintf(want, sizeof want,
             "model 'Org/Name' is not a local path and is not in the Hugging Face cache; "
             "looked in: %s/models--Org--Name, %s/.cache/huggingface/hub/models--Org--Name",
             hub, home);
    assert_string_equal(err.msg, want);
    unsetenv("HF_HUB_CACHE");
    unsetenv("HOME");
    assert_int_equal(hf_resolve_model("Org/Name", &out, &err), LV_ERR_IO);
    assert_non_null(strstr(err.msg, "all unset"));
    clear_env();
}

static void bad_ids(void **state) {
    clear_env();
    static const char *bad[] = {"",      "../x", "a/b/c",   "a/",    "/b-nonexistent", "a//b",
                                "a/..",  "../a", ".a/b",    "a-/b",  "a b/c",          "a/b\n",
                                "a/b;c", "a/b?", "a/..b/c", "x/y..z"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(hf_is_repo_id(bad[i]));
        char *out = (char *)"x";
        lv_err err;
        assert_int_equal(hf_resolve_model(bad[i], &out, &err), LV_ERR_ARG);
        assert_null(out);
        assert_true(strlen(err.msg) > 0);
    }
    char long_part[120];
    memset(long_part, 'a', sizeof long_part);
    long_part[0] = 'o', long_part[1] = '/', long_part[sizeof long_part - 1] = '\0';
    assert_false(hf_is_repo_id(long_part)); /* 117-char name */
    assert_false(hf_is_repo_id(NULL));
    assert_true(hf_is_repo_id("mlx-community/llava-v1.6-mistral-7b-4bit"));
    assert_true(hf_is_repo_id("llava-hf/llava-v1.6-mistral-7b-hf"));
    assert_true(hf_is_repo_id("a/b"));
    assert_true(hf_is_repo_id("A_1/b.c_d-e"));
}

static void symlinked_cache(void **state) {
    clear_env();
    /* The snapshot files are symlinks into blobs/ (make_repo); the cache root
     * itself is a symlink too, as when ~/.cache is linked to another disk. */
    char real_cache[PATH_MAX], link[PATH_MAX];
    snprintf(real_cache, sizeof real_cache, "%s/sym/real", g_root);
    snprintf(link, sizeof link, "%s/sym/link", g_root);
    make_repo(real_cache, "models--o--s", "cafe", "cafe", "blob-content");
    sh("ln -sfn '%s' '%s'", real_cache, link);
    setenv("HF_HUB_CACHE", link, 1);
    expect_model("o/s", "blob-content");
    char *out;
    assert_int_equal(hf_resolve_model("o/s", &out, NULL), LV_OK);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "%s/models--o--s/snapshots/cafe", real_cache);
    char *want_real = realpath(want, NULL);
    assert_string_equal(out, want_real);
    /* config.json in the result is still the link (not the blob's name). */
    struct stat sb;
    char cfg[PATH_MAX + 16];
    snprintf(cfg, sizeof cfg, "%s/config.json", out);
    assert_int_equal(lstat(cfg, &sb), 0);
    assert_true(S_ISLNK(sb.st_mode));
    assert_true(lv_is_file(cfg));
    free(want_real);
    free(out);
    /* A dangling blob link: resolution succeeds (the snapshot is there), the
     * reader of config.json gets the error. */
    sh("rm '%s/models--o--s/blobs/blob-cafe'", real_cache);
    assert_int_equal(hf_resolve_model("o/s", &out, NULL), LV_OK);
    snprintf(cfg, sizeof cfg, "%s/config.json", out);
    assert_false(lv_is_file(cfg));
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(local_paths),
        cmocka_unit_test(cache_precedence),
        cmocka_unit_test(refs_main_whitespace_and_snapshots),
        cmocka_unit_test(not_found_lists_where_it_looked),
        cmocka_unit_test(bad_ids),
        cmocka_unit_test(symlinked_cache),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
