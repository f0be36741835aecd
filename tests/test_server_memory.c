/* test_server_memory.c - llava-server under a memory budget (engine/governor.h)
 * on the demo model: many concurrent image requests under a budget that
 * fits a few of them. First the server runs FIT requests at once with no
 * budget and reports the most memory it used for them (/health
 * peak_used_bytes, peak_requests_bytes); that over the refuse line (95%)
 * is the budget. Then N requests arrive together under it: every one is
 * answered 200 or a clean 503 with Retry-After ("memory_pressure"), the
 * answers are all the same (one greedy prompt), the server's resident set,
 * sampled every 100 ms, never passes the budget, every reservation is
 * given back, and the server still serves and exits 0 on SIGTERM (under
 * ASan: LeakSanitizer finds no leak). Under ASan the scale is smaller (16
 * requests, a budget for 2) and the resident set is not compared (ASan's
 * shadow and quarantine are not the server's): the governor only accounts
 * there, as the seed config's adaptive_pressure_detection false asks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/base64.h"
#include "base/file.h"
#include "server_harness.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <strings.h>

#define N   (SANITIZED ? 16 : 64) /* requests at once */
#define FIT (SANITIZED ? 2 : 8)   /* what the budget is made to fit */

static char tmp_dir[1024];
static pid_t g_live = -1; /* the server running now: killed if a test fails midway */

/* ---- the resident set, sampled from outside ------------------------------------------------ */

typedef struct {
    pid_t pid;
    int every_ms;
    atomic_bool stop;
    int64_t max_rss;
    int samples;
    int64_t trace[4096]; /* the samples, for the message when over */
} sampler;

static int64_t rss_of(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long total = 0, resident = 0;
    int n = fscanf(f, "%ld %ld", &total, &resident);
    fclose(f);
    return n == 2 ? (int64_t)resident * sysconf(_SC_PAGESIZE) : -1;
}

static void *sample_main(void *arg) {
    sampler *s = arg;
    while (!atomic_load(&s->stop)) {
        int64_t r = rss_of(s->pid);
        if (r > s->max_rss) s->max_rss = r;
        if (s->samples < 4096) s->trace[s->samples] = r;
        s->samples++;
        srv_sleep_ms(s->every_ms);
    }
    return NULL;
}

/* ---- helpers ----------------------------------------------------------------------------------
 */

static char *image_body(void) {
    size_t len;
    char *bytes, *b64;
    assert_int_equal(
        lv_read_file(srv_demo_sample("sample_01_320x240.png"), 1u << 24, &bytes, &len, NULL),
        LV_OK);
    assert_int_equal(lv_base64_encode((const uint8_t *)bytes, len, &b64, NULL), LV_OK);
    free(bytes);
    char *uri = malloc(strlen(b64) + 64);
    sprintf(uri, "data:image/png;base64,%s", b64);
    free(b64);
    json_t *o =
        json_pack("{s:s, s:i, s:f, s:[{s:s, s:[{s:s, s:{s:s, s:s}}, {s:s, s:s}]}]}", "model",
                  "demo", "max_tokens", SANITIZED ? 8 : 16, "temperature", 0.0, "messages", "role",
                  "user", "content", "type", "image_url", "image_url", "url", uri, "detail",
                  SANITIZED ? "low" : "auto", "type", "text", "text", "Describe the image.");
    free(uri);
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return body;
}

/* /health's "memory" member (a new reference). */
static json_t *health_memory(const srv *s) {
    char *out = NULL;
    assert_int_equal(srv_http(s, "GET", "/health", NULL, 0, NULL, NULL, &out), 200);
    json_t *o = json_loads(out, 0, NULL);
    free(out);
    assert_non_null(o);
    json_t *m = json_incref(json_object_get(o, "memory"));
    json_decref(o);
    assert_non_null(m);
    return m;
}

static int64_t field(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) fail_msg("/health memory.%s missing", key);
    return (int64_t)json_integer_value(v);
}

/* /health's requests_bytes once it is 0: a request's memory is given back
 * when its connection finishes the answer, just after the client has it
 * (up to 5 s; else the last value). */
static int64_t requests_bytes_settled(const srv *s) {
    int64_t v = -1;
    for (int i = 0; i < 100 && v != 0; i++) {
        if (i) srv_sleep_ms(50);
        json_t *m = health_memory(s);
        v = field(m, "requests_bytes");
        json_decref(m);
    }
    return v;
}

/* Starts the server with --memory-limit limit (text, "0": none). */
static void start(srv *s, const char *limit, const char *log_name) {
    char cfg[256], cfg_path[1200], log[1200], par[16];
    /* ASan's resident set is not the server's: account only there */
    snprintf(cfg, sizeof cfg,
             "{\"enhanced_memory_management\": {\"adaptive_pressure_detection\": %s}}",
             SANITIZED ? "false" : "true");
    tu_write_file(tmp_dir, "memory.json", cfg, strlen(cfg));
    snprintf(cfg_path, sizeof cfg_path, "%s/memory.json", tmp_dir);
    snprintf(log, sizeof log, "%s/%s", tmp_dir, log_name);
    snprintf(par, sizeof par, "%d", FIT);
    const char *argv[] = {"--model",
                          srv_demo_model(),
                          "--config",
                          cfg_path,
                          "--port",
                          "0",
                          "--parallel",
                          par,
                          "--threads",
                          "2",
                          "--memory-limit",
                          limit,
                          "--queue-size",
                          "256",
                          NULL};
    assert_true(srv_start(s, log, argv, NULL));
    g_live = s->pid;
    assert_true(srv_wait_healthy(s, 60));
}

/* SIGTERM; the exit status must be 0 (under ASan: no leak). */
static void stop(srv *s) {
    g_live = -1;
    assert_int_equal(srv_stop(s), 0);
}

typedef struct {
    long status;
    char *body;
    bool retry_after;
} answer;

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
    if (!strncasecmp(p, "Retry-After:", 12)) ((answer *)ud)->retry_after = true;
    return size * n;
}

/* n copies of body at once; answers into a[]. */
static void send_all(const srv *s, const char *body, int n, answer *a) {
    CURLM *multi = curl_multi_init();
    CURL **h = calloc((size_t)n, sizeof *h);
    srv_body *out = calloc((size_t)n, sizeof *out);
    struct curl_slist **hdr = calloc((size_t)n, sizeof *hdr);
    for (int i = 0; i < n; i++) {
        h[i] = srv_handle(s, "POST", "/v1/chat/completions", body, strlen(body), NULL, NULL,
                          &out[i], &hdr[i]);
        curl_easy_setopt(h[i], CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h[i], CURLOPT_HEADERDATA, &a[i]);
        curl_multi_add_handle(multi, h[i]);
    }
    int running = 1;
    while (running) {
        curl_multi_perform(multi, &running);
        curl_multi_poll(multi, NULL, 0, 100, NULL);
    }
    for (int i = 0; i < n; i++) {
        curl_easy_getinfo(h[i], CURLINFO_RESPONSE_CODE, &a[i].status);
        a[i].body = out[i].data;
        curl_multi_remove_handle(multi, h[i]);
        curl_easy_cleanup(h[i]);
        curl_slist_free_all(hdr[i]);
    }
    curl_multi_cleanup(multi);
    free(h), free(out), free(hdr);
}

static const char *text_of(const char *body) {
    static char text[512];
    json_t *o = json_loads(body, 0, NULL);
    json_t *c = json_object_get(
        json_object_get(json_array_get(json_object_get(o, "choices"), 0), "message"), "content");
    snprintf(text, sizeof text, "%s", json_is_string(c) ? json_string_value(c) : "(none)");
    json_decref(o);
    return text;
}

/* ---- the test ----------------------------------------------------------------------------------
 */

static void test_many_under_a_budget_for_few(void **state) {
    (void)state;
    char *body = image_body();
    answer a[N];

    /* 1. FIT at once, no budget: what they take */
    srv s;
    start(&s, "0", "unbounded.log");
    sampler smp = {.pid = s.pid, .every_ms = 2};
    atomic_init(&smp.stop, false);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, sample_main, &smp), 0);
    memset(a, 0, sizeof a);
    send_all(&s, body, FIT, a);
    atomic_store(&smp.stop, true);
    pthread_join(th, NULL);
    int64_t peak_rss = smp.max_rss;
    for (int i = 0; i < FIT; i++)
        if (a[i].status != 200) fail_msg("unbounded request %d: %ld %s", i, a[i].status, a[i].body);
    char expect[512];
    snprintf(expect, sizeof expect, "%s", text_of(a[0].body));
    for (int i = 0; i < FIT; i++) free(a[i].body);
    json_t *m = health_memory(&s);
    int64_t fixed = field(m, "fixed_bytes"), peak_used = field(m, "peak_used_bytes"),
            peak_req = field(m, "peak_requests_bytes");
    json_decref(m);
    stop(&s);
    int64_t need = peak_used > fixed + peak_req ? peak_used : fixed + peak_req;
    if (!SANITIZED && peak_rss > need) need = peak_rss;
    int64_t budget = (int64_t)((double)need * 1.02 / 0.95);
    print_message("%d requests at once: %.1f MiB fixed, %.1f MiB reserved at most, %.1f MiB used "
                  "at most, resident set at most %.1f MiB (every 2 ms) -> budget %.1f MiB\n",
                  FIT, fixed / 1048576.0, peak_req / 1048576.0, peak_used / 1048576.0,
                  peak_rss / 1048576.0, budget / 1048576.0);

    /* 2. N at once under that budget */
    char limit[32];
    snprintf(limit, sizeof limit, "%lld", (long long)budget);
    start(&s, limit, "bounded.log");
    smp = (sampler){.pid = s.pid, .every_ms = 10}; /* stricter than the 100 ms asked */
    atomic_init(&smp.stop, false);
    assert_int_equal(pthread_create(&th, NULL, sample_main, &smp), 0);
    memset(a, 0, sizeof a);
    send_all(&s, body, N, a);
    atomic_store(&smp.stop, true);
    pthread_join(th, NULL);
    int ok = 0, refused = 0;
    for (int i = 0; i < N; i++) {
        if (a[i].status == 200) {
            ok++;
            if (strcmp(text_of(a[i].body), expect))
                fail_msg("request %d answered \"%s\", alone \"%s\"", i, text_of(a[i].body), expect);
        } else if (a[i].status == 503 || a[i].status == 429) {
            refused++;
            assert_true(a[i].retry_after);
            assert_non_null(a[i].body);
            if (a[i].status == 503) assert_non_null(strstr(a[i].body, "memory_pressure"));
        } else {
            fail_msg("request %d: status %ld: %s", i, a[i].status, a[i].body ? a[i].body : "");
        }
        free(a[i].body);
    }
    m = health_memory(&s);
    print_message("%d requests at once under %.1f MiB: %d answered, %d refused (503/429); resident "
                  "set at most %.1f MiB over %d samples; governor: %.1f MiB used at most, %lld "
                  "refusals, pressure now %s\n",
                  N, budget / 1048576.0, ok, refused, smp.max_rss / 1048576.0, smp.samples,
                  field(m, "peak_used_bytes") / 1048576.0, (long long)field(m, "refused_total"),
                  json_string_value(json_object_get(m, "pressure")));
    assert_true(ok >= 1);
    assert_int_equal(ok + refused, N);
    assert_int_equal(field(m, "budget_bytes"), budget);
    assert_int_equal(requests_bytes_settled(&s), 0); /* every reservation given back */
    assert_true(field(m, "refused_total") >= refused);
    if (!SANITIZED) {
        assert_true(smp.samples > 0);
        if (smp.max_rss > budget) {
            for (int i = 0; i < smp.samples && i < 4096; i++)
                print_message("%d ms: %.1f MiB\n", i * smp.every_ms, smp.trace[i] / 1048576.0);
            fail_msg("the resident set reached %.1f MiB, over the %.1f MiB budget",
                     smp.max_rss / 1048576.0, budget / 1048576.0);
        }
    }
    json_decref(m);

    /* 3. still serving, then a clean exit */
    memset(a, 0, sizeof a);
    send_all(&s, body, 1, a);
    assert_int_equal(a[0].status, 200);
    assert_string_equal(text_of(a[0].body), expect);
    free(a[0].body);
    stop(&s);
    free(body);
}

/* A request larger than the whole budget: a clean 503 at once, nothing held. */
static void test_request_over_budget(void **state) {
    (void)state;
    srv s;
    json_t *m;
    start(&s, "0", "probe.log");
    m = health_memory(&s);
    int64_t fixed = field(m, "fixed_bytes");
    json_decref(m);
    stop(&s);
    /* room for the program, not for an image request */
    char limit[32];
    snprintf(limit, sizeof limit, "%lld", (long long)(fixed + (fixed >> 4) + (1 << 20)));
    start(&s, limit, "tiny.log");
    char *body = image_body(), *out = NULL;
    long st = srv_http(&s, "POST", "/v1/chat/completions", body, strlen(body), NULL, NULL, &out);
    assert_int_equal(st, 503);
    assert_non_null(strstr(out, "memory_pressure"));
    free(out);
    assert_int_equal(requests_bytes_settled(&s), 0); /* nothing held */
    m = health_memory(&s);
    assert_true(field(m, "refused_total") >= 1);
    json_decref(m);
    free(body);
    stop(&s);
}

static int setup(void **state) {
    (void)state;
    snprintf(tmp_dir, sizeof tmp_dir, "%s", tu_tmpdir("server_memory"));
    return 0;
}

static int teardown(void **state) {
    (void)state;
    if (g_live > 0) kill(g_live, SIGKILL), waitpid(g_live, NULL, 0);
    return 0;
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_over_budget),
        cmocka_unit_test(test_many_under_a_budget_for_few),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
