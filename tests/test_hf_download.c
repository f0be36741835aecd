/* test_hf_download.c - io/hf_download.h against a fake hub on loopback
 * (tests/fake_hub.h) serving models/demo's files and a GGUF repo: the cache
 * layout it leaves, resuming a cut download (within a run and across runs),
 * a corrupt file refused, the token, the quantization tag, errors, and a
 * second run that downloads nothing. Every test starts from an empty
 * HF_HOME under $LLAVA_TMP/hf_download, removed at the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/file.h"
#include "fake_hub.h"
#include "io/hf_cache.h"
#include "io/hf_download.h"
#include "io/hf_files.h"
#include "testutil.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEMO           "demo-org/llava-demo"
#define DEMO_COMMIT    "0123456789abcdef0123456789abcdef01234567"
#define GGUF           "gguf-org/llava-gguf"
#define GGUF_COMMIT    "fedcba9876543210fedcba9876543210fedcba98"
#define SHARDED        "shard-org/llava-sharded"
#define SHARDED_COMMIT "5555555555555555555555555555555555555555"
#define CUT_AT         (5u << 20)

static fake_hub *H;
static char g_root[1024]; /* $LLAVA_TMP/hf_download */
static char g_home[1200]; /* this test's HF_HOME */
static char g_repo[1400]; /* its models--demo-org--llava-demo */
static char g_sha[65];    /* model.safetensors' sha256 */

static const char *demo_dir(void) {
    static char path[1024];
    snprintf(path, sizeof path, "%.900s/../../models/demo", tu_env("LLAVA_TEST_DATA"));
    return path;
}

static char *read_all(const char *path, size_t *len) {
    char *data = NULL;
    size_t n = 0;
    if (lv_read_file(path, 1u << 26, &data, &n, NULL) != LV_OK) return NULL;
    if (len) *len = n;
    return data;
}

static int group_setup(void **state) {
    snprintf(g_root, sizeof g_root, "%s", tu_tmpdir("hf_download"));
    H = fh_start();
    assert_non_null(H);
    fh_add_repo(H, DEMO, DEMO_COMMIT);
    fh_add_dir(H, DEMO, demo_dir());
    fh_add_repo(H, GGUF, GGUF_COMMIT);
    static const char *const gguf_files[] = {"model-Q4_K_M.gguf", "model-Q8_0.gguf",
                                             "mmproj-model-Q8_0.gguf", "mmproj-model-f16.gguf"};
    for (size_t i = 0; i < LV_ARRAY_LEN(gguf_files); i++)
        fh_add_file(H, GGUF, gguf_files[i], gguf_files[i], strlen(gguf_files[i]), true);
    fh_add_file(H, GGUF, "README.md", "# gguf", 6, false);
    /* Shards named by an index, beside weights the index does not name. */
    fh_add_repo(H, SHARDED, SHARDED_COMMIT);
    static const char index[] =
        "{\"metadata\": {}, \"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", "
        "\"b\": \"model-00002-of-00002.safetensors\", \"c\": "
        "\"model-00001-of-00002.safetensors\"}}";
    fh_add_file(H, SHARDED, "model.safetensors.index.json", index, strlen(index), false);
    fh_add_file(H, SHARDED, "config.json", "{}", 2, false);
    fh_add_file(H, SHARDED, "model-00001-of-00002.safetensors", "one", 3, true);
    fh_add_file(H, SHARDED, "model-00002-of-00002.safetensors", "two", 3, true);
    fh_add_file(H, SHARDED, "consolidated.safetensors", "all", 3, true);
    fh_add_file(H, SHARDED, "pytorch_model.bin", "pt", 2, true);
    fh_add_file(H, SHARDED, "onnx/model.safetensors", "onnx", 4, true);
    setenv("HF_ENDPOINT", fh_endpoint(H), 1);
    unsetenv("HF_HUB_CACHE");
    unsetenv("HF_TOKEN");
    unsetenv("HF_HUB_OFFLINE");
    unsetenv("XDG_CACHE_HOME");
    char path[1200];
    snprintf(path, sizeof path, "%s/model.safetensors", demo_dir());
    size_t len = 0;
    char *data = read_all(path, &len);
    assert_non_null(data);
    fh_sha256_hex(data, len, g_sha);
    free(data);
    return 0;
}

static int group_teardown(void **state) {
    fh_stop(H);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
    return system(cmd);
}

/* A fresh, empty HF_HOME (and HOME, so that no real cache is read). */
static int setup(void **state) {
    static int n;
    snprintf(g_home, sizeof g_home, "%s/home%d", g_root, ++n);
    mkdir(g_home, 0755);
    setenv("HF_HOME", g_home, 1);
    setenv("HOME", g_home, 1);
    snprintf(g_repo, sizeof g_repo, "%s/hub/models--demo-org--llava-demo", g_home);
    fh_clear_log(H);
    return 0;
}

static const hf_dl_opts FAST = {.backoff_ms = 10};

/* The GETs of a file's bytes (through the CDN or directly) in the log. */
static size_t file_gets(const char *suffix, fh_req *out, size_t cap) {
    size_t n, k = 0;
    fh_req *log = fh_log(H, &n);
    for (size_t i = 0; i < n; i++) {
        size_t ul = strlen(log[i].url), sl = strlen(suffix);
        bool bytes = strncmp(log[i].url, "/cdn/", 5) == 0 || log[i].status != 302;
        if (strcmp(log[i].method, "GET") == 0 && bytes && strncmp(log[i].url, "/api/", 5) != 0 &&
            ul >= sl && strcmp(log[i].url + ul - sl, suffix) == 0 && k < cap)
            out[k++] = log[i];
    }
    free(log);
    return k;
}

static void assert_same_file(const char *a, const char *b) {
    size_t na, nb;
    char *da = read_all(a, &na), *db = read_all(b, &nb);
    assert_non_null(da);
    assert_non_null(db);
    assert_int_equal(na, nb);
    assert_memory_equal(da, db, na);
    free(da);
    free(db);
}

/* Download into an empty HF_HOME: refs/main, snapshot links into blobs
 * named by their ids, only the files a model needs, found by hf_cache. */
static void test_layout(void **state) {
    char progress_path[1400];
    snprintf(progress_path, sizeof progress_path, "%s/progress.txt", g_home);
    FILE *pf = fopen(progress_path, "w");
    hf_dl_opts o = FAST;
    o.progress = pf;
    hf_model m;
    lv_err err = {{0}};
    lv_status st = hf_download(DEMO, &o, &m, &err);
    fclose(pf);
    assert_int_equal(st, LV_OK);
    assert_string_equal(m.model, m.dir);
    assert_null(m.mmproj);
    assert_int_equal(m.n_fetched, 9);

    char path[2048], link[PATH_MAX];
    snprintf(path, sizeof path, "%s/refs/main", g_repo);
    char *ref = read_all(path, NULL);
    assert_non_null(ref);
    assert_string_equal(ref, DEMO_COMMIT);
    free(ref);

    /* The snapshot holds exactly the model's files, each a relative link. */
    static const char *const want[] = {"chat_template.json",       "config.json",
                                       "generation_config.json",   "model.safetensors",
                                       "preprocessor_config.json", "processor_config.json",
                                       "special_tokens_map.json",  "tokenizer.json",
                                       "tokenizer_config.json"};
    for (size_t i = 0; i < LV_ARRAY_LEN(want); i++) {
        snprintf(path, sizeof path, "%s/snapshots/%s/%s", g_repo, DEMO_COMMIT, want[i]);
        ssize_t n = readlink(path, link, sizeof link - 1);
        assert_true(n > 0);
        link[n] = '\0';
        assert_int_equal(strncmp(link, "../../blobs/", 12), 0);
        char orig[1400];
        snprintf(orig, sizeof orig, "%s/%s", demo_dir(), want[i]);
        assert_same_file(path, orig);
    }
    snprintf(path, sizeof path, "%s/snapshots/%s/MODEL_CARD.md", g_repo, DEMO_COMMIT);
    assert_false(lv_is_file(path));
    char cmd[4200], *out = NULL;
    snprintf(cmd, sizeof cmd, "ls '%s/snapshots/%s' | wc -l; ls -a '%s/snapshots' | wc -l", g_repo,
             DEMO_COMMIT, g_repo);
    assert_int_equal(tu_run(cmd, &out), 0);
    assert_string_equal(out, "9\n3\n"); /* nothing else; no staging folder left */
    free(out);

    /* The weights' blob is named by its sha256; the config's by git's sha1. */
    snprintf(path, sizeof path, "%s/snapshots/%s/model.safetensors", g_repo, DEMO_COMMIT);
    ssize_t n = readlink(path, link, sizeof link - 1);
    link[n > 0 ? n : 0] = '\0';
    char want_link[128];
    snprintf(want_link, sizeof want_link, "../../blobs/%s", g_sha);
    assert_string_equal(link, want_link);
    snprintf(path, sizeof path, "%s/snapshots/%s/config.json", g_repo, DEMO_COMMIT);
    n = readlink(path, link, sizeof link - 1);
    link[n > 0 ? n : 0] = '\0';
    assert_int_equal(strlen(link), strlen("../../blobs/") + 40);
    snprintf(cmd, sizeof cmd, "ls '%s/blobs' | grep -c incomplete", g_repo);
    assert_int_not_equal(tu_run(cmd, &out), 0); /* grep found none */
    free(out);

    char *dir = NULL;
    assert_int_equal(hf_resolve_model(DEMO, &dir, &err), LV_OK);
    assert_string_equal(dir, m.dir);
    free(dir);
    hf_model_free(&m);

    /* The progress bar, as a log shows it (not a tty): a final line per file. */
    char *bar = read_all(progress_path, NULL);
    assert_non_null(bar);
    assert_non_null(strstr(bar, "model.safetensors  [####################]  13.2/13.2 MiB  100%"));
    assert_non_null(strstr(bar, "MiB/s"));
    assert_non_null(strstr(bar, "done in"));
    assert_null(strchr(bar, '\r'));
    free(bar);
}

/* A second run asks for the commit again but fetches no file; hf_get_model
 * does not even ask. */
static void test_second_run_downloads_nothing(void **state) {
    hf_model m;
    lv_err err = {{0}};
    assert_int_equal(hf_download(DEMO, &FAST, &m, &err), LV_OK);
    hf_model_free(&m);
    fh_clear_log(H);
    assert_int_equal(hf_download(DEMO, &FAST, &m, &err), LV_OK);
    assert_int_equal(m.n_fetched, 0);
    assert_int_equal(m.bytes_fetched, 0);
    hf_model_free(&m);
    assert_int_equal(fh_bytes_served(H), 0);
    fh_req r[4];
    assert_int_equal(file_gets(".json", r, 4) + file_gets(".safetensors", r, 4), 0);

    fh_clear_log(H);
    assert_int_equal(hf_get_model(DEMO, &FAST, &m, &err), LV_OK);
    size_t n;
    free(fh_log(H, &n));
    assert_int_equal(n, 0);
    hf_model_free(&m);
}

/* The connection closes 5 MiB into the weights: the next request resumes
 * with a Range where the partial ends, and the file is whole. */
static void test_resume_after_cut(void **state) {
    fh_cut_once(H, "model.safetensors", CUT_AT);
    hf_model m;
    lv_err err = {{0}};
    assert_int_equal(hf_download(DEMO, &FAST, &m, &err), LV_OK);
    fh_req r[4];
    assert_int_equal(file_gets("/model.safetensors", r, 4), 2);
    assert_int_equal(r[0].range_from, -1);
    assert_true(r[1].range_from > 0 && r[1].range_from <= CUT_AT);
    assert_int_equal(r[1].status, 206);
    char path[2048], orig[1400];
    snprintf(path, sizeof path, "%s/model.safetensors", m.dir);
    snprintf(orig, sizeof orig, "%s/model.safetensors", demo_dir());
    assert_same_file(path, orig);
    hf_model_free(&m);
}

/* A partial left by an earlier run is resumed from exactly its size. */
static void test_resume_across_runs(void **state) {
    char path[2048], orig[1400];
    snprintf(orig, sizeof orig, "%s/model.safetensors", demo_dir());
    size_t len = 0;
    char *data = read_all(orig, &len);
    char blobs[1500];
    snprintf(blobs, sizeof blobs, "%s/blobs", g_repo);
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", blobs);
    assert_int_equal(system(cmd), 0);
    char name[80];
    snprintf(name, sizeof name, "%s.incomplete", g_sha);
    tu_write_file(blobs, name, data, 3000000);
    free(data);

    hf_model m;
    lv_err err = {{0}};
    assert_int_equal(hf_download(DEMO, &FAST, &m, &err), LV_OK);
    fh_req r[4];
    assert_int_equal(file_gets("/model.safetensors", r, 4), 1);
    assert_int_equal(r[0].range_from, 3000000);
    snprintf(path, sizeof path, "%s/model.safetensors", m.dir);
    assert_same_file(path, orig);
    hf_model_free(&m);
}

/* Bytes that do not hash to the etag: refused, naming the file, and
 * nothing of it is left behind. */
static void test_sha256_mismatch(void **state) {
    fh_corrupt(H, "model.safetensors", true);
    hf_model m;
    lv_err err = {{0}};
    lv_status st = hf_download(DEMO, &FAST, &m, &err);
    fh_corrupt(H, "model.safetensors", false);
    assert_int_equal(st, LV_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "model.safetensors"));
    assert_non_null(strstr(err.msg, "sha256"));
    assert_non_null(strstr(err.msg, g_sha));
    assert_null(m.dir);
    char path[2048];
    snprintf(path, sizeof path, "%s/blobs/%s", g_repo, g_sha);
    assert_false(lv_is_file(path));
    snprintf(path, sizeof path, "%s/blobs/%s.incomplete", g_repo, g_sha);
    assert_false(lv_is_file(path));
    snprintf(path, sizeof path, "%s/snapshots", g_repo);
    assert_false(lv_is_dir(path));
    snprintf(path, sizeof path, "%s/refs/main", g_repo);
    assert_false(lv_is_file(path));
    char *dir = NULL;
    assert_int_not_equal(hf_resolve_model(DEMO, &dir, NULL), LV_OK);
}

/* A gated repo: 401 without HF_TOKEN says to set it; with it, every hub
 * request carries it. */
static void test_token(void **state) {
    fh_require_token(H, "hf_secret");
    hf_model m;
    lv_err err = {{0}};
    lv_status st = hf_download(DEMO, &FAST, &m, &err);
    assert_int_equal(st, LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "HTTP 401"));
    assert_non_null(strstr(err.msg, "gated"));
    assert_non_null(strstr(err.msg, "set HF_TOKEN"));

    setenv("HF_TOKEN", "hf_wrong", 1);
    st = hf_download(DEMO, &FAST, &m, &err);
    assert_int_equal(st, LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "the token in HF_TOKEN"));

    setenv("HF_TOKEN", "hf_secret", 1);
    fh_clear_log(H);
    st = hf_download(DEMO, &FAST, &m, &err);
    unsetenv("HF_TOKEN");
    fh_require_token(H, NULL);
    assert_int_equal(st, LV_OK);
    hf_model_free(&m);
    size_t n;
    fh_req *log = fh_log(H, &n);
    assert_true(n > 10);
    for (size_t i = 0; i < n; i++)
        if (strncmp(log[i].url, "/cdn/", 5) != 0)
            assert_string_equal(log[i].auth, "Bearer hf_secret");
    free(log);
}

static const char *base(const char *p) {
    return strrchr(p, '/') ? strrchr(p, '/') + 1 : p;
}

/* GGUF: the tag picks the text model, f16 the mmproj; only those two come. */
static void test_gguf_quant(void **state) {
    hf_model m;
    lv_err err = {{0}};
    assert_int_equal(hf_download(GGUF ":Q8_0", &FAST, &m, &err), LV_OK);
    assert_string_equal(base(m.model), "model-Q8_0.gguf");
    assert_string_equal(base(m.mmproj), "mmproj-model-f16.gguf");
    assert_int_equal(m.n_fetched, 2);
    char *link = read_all(m.model, NULL);
    assert_string_equal(link, "model-Q8_0.gguf");
    free(link);
    hf_model_free(&m);

    /* No tag: Q4_K_M, into the same snapshot. */
    assert_int_equal(hf_download(GGUF, &FAST, &m, &err), LV_OK);
    assert_string_equal(base(m.model), "model-Q4_K_M.gguf");
    assert_string_equal(base(m.mmproj), "mmproj-model-f16.gguf");
    assert_int_equal(m.n_fetched, 1);
    hf_model_free(&m);

    /* From the cache, by tag, without asking the hub. */
    fh_clear_log(H);
    assert_int_equal(hf_get_model(GGUF ":q8_0", &FAST, &m, &err), LV_OK);
    assert_string_equal(base(m.model), "model-Q8_0.gguf");
    hf_model_free(&m);
    size_t n;
    free(fh_log(H, &n));
    assert_int_equal(n, 0);

    lv_status st = hf_download(GGUF ":Q5_K_S", &FAST, &m, &err);
    assert_int_equal(st, LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "Q5_K_S"));
    assert_non_null(strstr(err.msg, "model-Q4_K_M.gguf"));
}

/* A sharded repo: the index, then exactly the shards it names. */
static void test_sharded_index(void **state) {
    hf_model m;
    lv_err err = {{0}};
    assert_int_equal(hf_download(SHARDED, &FAST, &m, &err), LV_OK);
    assert_int_equal(m.n_fetched, 4);
    char cmd[2200], *out = NULL;
    snprintf(cmd, sizeof cmd, "ls '%s'", m.dir);
    assert_int_equal(tu_run(cmd, &out), 0);
    assert_string_equal(out, "config.json\nmodel-00001-of-00002.safetensors\n"
                             "model-00002-of-00002.safetensors\nmodel.safetensors.index.json\n");
    free(out);
    hf_model_free(&m);
}

/* The GGUF pick on file lists alone: tags as words, the defaults. */
static void test_pick_gguf(void **state) {
    static const char *const files[] = {"llava-v1.6-mistral-7b.Q4_K.gguf",
                                        "llava-v1.6-mistral-7b.Q4_K_M.gguf",
                                        "llava-v1.6-mistral-7b.Q8_0.gguf",
                                        "mmproj-model-Q8_0.gguf",
                                        "mmproj-model-f16.gguf",
                                        "big/model-Q6_K-00001-of-00002.gguf",
                                        "big/model-Q6_K-00002-of-00002.gguf",
                                        "README.md"};
    size_t n = LV_ARRAY_LEN(files);
    int text, mm;
    hf_pick_gguf(files, n, "Q4_K", &text, &mm);
    assert_int_equal(text, 0); /* not Q4_K_M */
    assert_int_equal(mm, 4);   /* f16 */
    hf_pick_gguf(files, n, "q4_k_m", &text, &mm);
    assert_int_equal(text, 1);
    hf_pick_gguf(files, n, NULL, &text, &mm);
    assert_int_equal(text, 1); /* Q4_K_M by default */
    hf_pick_gguf(files, n, "Q6_K", &text, &mm);
    assert_int_equal(text, -1); /* split files are never picked */
    hf_pick_gguf(files, 3, NULL, &text, &mm);
    assert_int_equal(mm, -1);
    hf_pick_gguf(files + 2, 2, NULL, &text, &mm); /* the Q8_0 text model, a Q8_0 mmproj */
    assert_int_equal(text, 0);                    /* no Q4_K_M: the first */
    assert_int_equal(mm, 1);                      /* no f16: the first */
}

static void test_not_found(void **state) {
    hf_model m;
    lv_err err = {{0}};
    assert_int_equal(hf_download("nobody/nothing", &FAST, &m, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "nobody/nothing"));
    assert_non_null(strstr(err.msg, "HTTP 404"));
    hf_dl_opts o = FAST;
    o.revision = "v9";
    assert_int_equal(hf_download(DEMO, &o, &m, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "no revision 'v9'"));
    assert_int_equal(hf_download("not a repo", &FAST, &m, &err), LV_ERR_ARG);
}

/* A revision given as the commit: its snapshot, and no refs file for it. */
static void test_revision_commit(void **state) {
    hf_dl_opts o = FAST;
    o.revision = DEMO_COMMIT;
    hf_model m;
    lv_err err = {{0}};
    assert_int_equal(hf_download(DEMO, &o, &m, &err), LV_OK);
    assert_non_null(strstr(m.dir, "snapshots/" DEMO_COMMIT));
    char path[2048];
    snprintf(path, sizeof path, "%s/refs", g_repo);
    assert_false(lv_is_dir(path));
    hf_model_free(&m);
}

/* Offline (HF_HUB_OFFLINE or the option): today's cache error, no request. */
static void test_offline(void **state) {
    setenv("HF_HUB_OFFLINE", "1", 1);
    hf_model m;
    lv_err err = {{0}};
    lv_status st = hf_get_model(DEMO, &FAST, &m, &err);
    unsetenv("HF_HUB_OFFLINE");
    assert_int_equal(st, LV_ERR_IO);
    assert_non_null(strstr(err.msg, "is not in the Hugging Face cache"));
    hf_dl_opts o = FAST;
    o.offline = true;
    assert_int_equal(hf_get_model(DEMO, &o, &m, &err), LV_ERR_IO);
    size_t n;
    free(fh_log(H, &n));
    assert_int_equal(n, 0);
    /* Online, the same call downloads. */
    assert_int_equal(hf_get_model(DEMO, &FAST, &m, &err), LV_OK);
    assert_int_equal(m.n_fetched, 9);
    hf_model_free(&m);
}

/* Nothing listens: the retries, then a network error. */
static void test_network_failure(void **state) {
    setenv("HF_ENDPOINT", "http://127.0.0.1:1", 1);
    hf_model m;
    lv_err err = {{0}};
    lv_status st = hf_download(DEMO, &FAST, &m, &err);
    setenv("HF_ENDPOINT", fh_endpoint(H), 1);
    assert_int_equal(st, LV_ERR_IO);
    assert_non_null(strstr(err.msg, "cannot reach http://127.0.0.1:1 after 5 tries"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_layout, setup),
        cmocka_unit_test_setup(test_second_run_downloads_nothing, setup),
        cmocka_unit_test_setup(test_resume_after_cut, setup),
        cmocka_unit_test_setup(test_resume_across_runs, setup),
        cmocka_unit_test_setup(test_sha256_mismatch, setup),
        cmocka_unit_test_setup(test_token, setup),
        cmocka_unit_test_setup(test_gguf_quant, setup),
        cmocka_unit_test_setup(test_sharded_index, setup),
        cmocka_unit_test(test_pick_gguf),
        cmocka_unit_test_setup(test_not_found, setup),
        cmocka_unit_test_setup(test_revision_commit, setup),
        cmocka_unit_test_setup(test_offline, setup),
        cmocka_unit_test_setup(test_network_failure, setup),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
