/* test_server.c - llava-server end to end: the real binary on 127.0.0.1
 * (port 0), the tiny llava-next fixture model, libcurl as the client.
 * Health 503 → 200, a chat completion identical to llava-cli's, SSE
 * streaming with the usage chunk, bad inputs each with their status (the
 * server serving on after each), a client vanishing mid-stream, SIGTERM →
 * exit 0. Plus gen_run's cancel hook on its own. Every wait is bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "backend/backend.h"
#include "base/base64.h"
#include "base/buf.h"
#include "base/file.h"
#include "engine/generate.h"
#include "engine/run.h"
#include "engine/request.h"
#include "server_harness.h"
#include "testutil.h"

#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KEY "sekret"

static srv S;
static char media_dir[1024];

/* The tiny llava-next fixture, or LLAVA_TEST_MODEL when set (the same
 * program runs again on a SmolVLM fixture: ctest server_smolvlm). */
static const char *model_dir(void) {
    static char path[1024];
    const char *other = getenv("LLAVA_TEST_MODEL");
    if (other && *other)
        snprintf(path, sizeof path, "%.1000s", other);
    else
        snprintf(path, sizeof path, "%s/forward/llava-next-tiny", tu_env("LLAVA_TEST_DATA"));
    return path;
}

static const char *image_path(const char *name) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/forward/images/%s", tu_env("LLAVA_TEST_DATA"), name);
    return path;
}

/* ---- client (tests/server_harness.h) -------------------------------------------------------- */

/* One request; returns the HTTP status (0 if the transfer failed) and the
 * body in *out (heap, may be NULL). extra: a header line or NULL;
 * stop_after > 0: hang up once that many bytes came. */
static long http(const char *method, const char *path, const char *data, size_t len,
                 const char *extra, size_t stop_after, char **out) {
    if (!stop_after) return srv_http(&S, method, path, data, len, extra, NULL, out);
    srv_body b = {.stop_after = stop_after};
    struct curl_slist *h;
    CURL *c = srv_handle(&S, method, path, data, len, extra, NULL, &b, &h);
    curl_easy_perform(c); /* ends with a write error: we hung up */
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (out)
        *out = b.data;
    else
        free(b.data);
    return 0;
}

static long post(const char *path, const char *json, char **out) {
    return http("POST", path, json, strlen(json), "Authorization: Bearer " KEY, 0, out);
}

/* A chat body: one user turn with an image url (NULL: none) and text. */
static char *chat_body(const char *url, const char *text, const char *extra) {
    json_t *parts = json_array();
    if (url)
        json_array_append_new(
            parts, json_pack("{s:s,s:{s:s}}", "type", "image_url", "image_url", "url", url));
    json_array_append_new(parts, json_pack("{s:s,s:s}", "type", "text", "text", text));
    json_t *o = json_pack("{s:s,s:i,s:f,s:[{s:s,s:o}]}", "model", "tiny", "max_tokens", 40,
                          "temperature", 0.0, "messages", "role", "user", "content", parts);
    if (extra) {
        json_t *x = json_loads(extra, 0, NULL);
        assert_non_null(x);
        json_object_update(o, x);
        json_decref(x);
    }
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* ---- the server process ------------------------------------------------------------------- */

static int start_server(void **state) {
    const char *tmp = tu_tmpdir("server");
    char log[1024];
    snprintf(log, sizeof log, "%s/server.log", tmp);
    snprintf(media_dir, sizeof media_dir, "%s/media", tmp);
    mkdir(media_dir, 0755);
    const char *argv[] = {"--model",
                          model_dir(),
                          "--port",
                          "0",
                          "--api-key",
                          KEY,
                          "--allowed-local-media-path",
                          media_dir,
                          "--queue-size",
                          "4",
                          "--timeout",
                          "60",
                          "--alias",
                          "tiny",
                          "--device",
                          "cpu",
                          NULL};
    return srv_start(&S, log, argv, "LLAVA_SERVER_TEST_LOAD_DELAY_MS=700") ? 0 : -1;
}

static int stop_server(void **state) {
    if (S.pid > 0) kill(S.pid, SIGKILL);
    if (S.pid > 0) waitpid(S.pid, NULL, 0);
    S.pid = 0;
    return 0;
}

static void wait_healthy(void) {
    if (!srv_wait_healthy(&S, 10)) fail_msg("the server never became healthy");
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_health_loading_then_ready(void **state) {
    char *out;
    assert_int_equal(http("GET", "/health", NULL, 0, NULL, 0, &out), 503);
    json_t *o = json_loads(out, 0, NULL);
    assert_non_null(json_object_get(o, "error"));
    json_decref(o);
    free(out);
    wait_healthy();
    assert_int_equal(http("GET", "/health", NULL, 0, NULL, 0, &out), 200);
    o = json_loads(out, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "healthy");
    assert_string_equal(json_string_value(json_object_get(o, "model")), "tiny");
    assert_string_equal(json_string_value(json_object_get(o, "device")), "cpu");
    assert_null(json_object_get(o, "gpu_memory")); /* the cpu backend cannot tell */
    json_decref(o);
    free(out);
    assert_int_equal(http("GET", "/v1/health", NULL, 0, NULL, 0, &out), 200); /* the alias */
    assert_non_null(strstr(out, "\"status\":\"healthy\""));
    free(out);
    assert_int_equal(http("GET", "/v1/models", NULL, 0, NULL, 0, &out), 200); /* public */
    assert_non_null(strstr(out, "\"tiny\""));
    free(out);
}

/* llava-cli's greedy answer for the same image and prompt. */
static json_t *cli_answer(const char *img, const char *prompt) {
    char cmd[4096], *out;
    snprintf(cmd, sizeof cmd,
             "'%s/llava-cli' --model '%s' --image '%s' --prompt '%s' --max-tokens 40 "
             "--temperature 0 --json",
             tu_env("LLAVA_BIN_DIR"), model_dir(), img, prompt);
    assert_int_equal(tu_run(cmd, &out), 0);
    json_t *o = json_loads(out, 0, NULL);
    free(out);
    assert_non_null(o);
    return o;
}

static void test_chat_matches_cli(void **state) {
    wait_healthy();
    json_t *want = cli_answer(image_path("a_100x60.png"), "What is shown?");
    char *uri = srv_png_data_uri(image_path("a_100x60.png")),
         *b = chat_body(uri, "What is shown?", NULL);
    char *out;
    assert_int_equal(post("/v1/chat/completions", b, &out), 200);
    json_t *o = json_loads(out, 0, NULL);
    assert_non_null(o);
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(ch, "message"), "content")),
        json_string_value(json_object_get(want, "text")));
    assert_string_equal(json_string_value(json_object_get(ch, "finish_reason")),
                        json_string_value(json_object_get(want, "finish_reason")));
    json_t *u = json_object_get(o, "usage");
    assert_int_equal(json_integer_value(json_object_get(u, "prompt_tokens")),
                     json_integer_value(json_object_get(want, "n_prompt_tokens")));
    assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")),
                     json_array_size(json_object_get(want, "generated_ids")));
    json_decref(o);
    free(out);
    free(b);
    free(uri);
    json_decref(want);
}

static void test_stream(void **state) {
    wait_healthy();
    json_t *want = cli_answer(image_path("b_45x130.png"), "Describe it.");
    char *uri = srv_png_data_uri(image_path("b_45x130.png"));
    char *b = chat_body(uri, "Describe it.",
                        "{\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
    char *out;
    assert_int_equal(post("/v1/chat/completions", b, &out), 200);
    /* Walk the events: role first, deltas, finish, usage, [DONE]. */
    lv_buf text = {0};
    int n_events = 0, n_usage = 0;
    bool role = false, finished = false, done = false;
    for (char *p = out; (p = strstr(p, "data: ")); n_events++) {
        p += 6;
        char *end = strstr(p, "\n\n");
        assert_non_null(end);
        *end = '\0';
        if (!strcmp(p, "[DONE]")) {
            done = true;
            assert_string_equal(end + 2, "");
            break;
        }
        json_t *o = json_loads(p, 0, NULL);
        assert_non_null(o);
        json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
        json_t *d = json_object_get(ch, "delta");
        if (n_events == 0)
            role = !strcmp(json_string_value(json_object_get(d, "role")), "assistant");
        json_t *content = json_object_get(d, "content");
        if (content) lv_buf_append(&text, json_string_value(content), json_string_length(content));
        if (json_is_string(json_object_get(ch, "finish_reason"))) finished = true;
        if (!ch && json_is_object(json_object_get(o, "usage"))) {
            n_usage++;
            assert_int_equal(json_integer_value(
                                 json_object_get(json_object_get(o, "usage"), "completion_tokens")),
                             json_array_size(json_object_get(want, "generated_ids")));
        }
        json_decref(o);
        p = end + 2;
    }
    assert_true(role && finished && done);
    assert_int_equal(n_usage, 1);
    assert_string_equal(text.data ? text.data : "",
                        json_string_value(json_object_get(want, "text")));
    lv_buf_free(&text);
    free(out);
    free(b);
    free(uri);
    json_decref(want);
}

typedef struct {
    const char *method, *path, *body, *header;
    long status;
} bad_case;

static void test_bad_inputs(void **state) {
    wait_healthy();
    char *png = srv_png_data_uri(image_path("c_56x56.png"));
    char outside[1200], inside[1200];
    snprintf(outside, sizeof outside, "file://%s", image_path("c_56x56.png"));
    snprintf(inside, sizeof inside, "file://%s/missing.png", media_dir);
    char *b_outside = chat_body(outside, "x", NULL), *b_inside = chat_body(inside, "x", NULL);
    char *b_badb64 = chat_body("data:image/png;base64,@@@@", "x", NULL);
    char *b_scheme = chat_body("ftp://example.com/a.png", "x", NULL);
    char *b_notimg = chat_body("data:image/png;base64,aGVsbG8gd29ybGQ=", "x", NULL);
    char *b_n = chat_body(NULL, "x", "{\"n\":9}");
    char *b_temp = chat_body(NULL, "x", "{\"temperature\":\"hot\"}");
    char *b_maxtok = chat_body(NULL, "x", "{\"max_tokens\":-5}");
    char *b_tag = chat_body(NULL, "two <image> tags <image>", NULL);
    const bad_case cases[] = {
        {"POST", "/v1/chat/completions", "{not json", NULL, 400},
        {"POST", "/v1/chat/completions", "[1,2]", NULL, 400},
        {"POST", "/v1/chat/completions", "{\"messages\":[]}", NULL, 400},
        {"POST", "/v1/chat/completions", "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}",
         NULL, 400},
        {"POST", "/v1/chat/completions", "{\"messages\":\"hi\"}", NULL, 400},
        {"POST", "/v1/chat/completions", b_badb64, NULL, 400},
        {"POST", "/v1/chat/completions", b_scheme, NULL, 400},
        {"POST", "/v1/chat/completions", b_outside, NULL, 400},
        {"POST", "/v1/chat/completions", b_inside, NULL, 400},
        {"POST", "/v1/chat/completions", b_notimg, NULL, 400},
        {"POST", "/v1/chat/completions", b_n, NULL, 400},
        {"POST", "/v1/chat/completions", b_temp, NULL, 400},
        {"POST", "/v1/chat/completions", b_maxtok, NULL, 400},
        {"POST", "/v1/chat/completions", b_tag, NULL, 400},
        {"POST", "/v1/chat/completions", "{}", "Authorization: Bearer wrong", 401},
        {"POST", "/v1/chat/completions", "{}", "X-Api-Key: wrong", 401},
        {"POST", "/v1/completions", "{\"prompt\":[99999999]}", NULL, 400},
        {"POST", "/v1/completions", "{\"prompt\":5}", NULL, 400},
        {"POST", "/tokenize", "{\"content\":5}", NULL, 400},
        {"POST", "/detokenize", "{\"tokens\":[-1]}", NULL, 400},
        {"GET", "/v1/nothing", NULL, NULL, 404},
        {"GET", "/v1/chat/completions", NULL, NULL, 405},
        {"DELETE", "/health", NULL, NULL, 405},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bad_case *k = &cases[i];
        char *out = NULL;
        long st = http(k->method, k->path, k->body, k->body ? strlen(k->body) : 0,
                       k->header ? k->header : "Authorization: Bearer " KEY, 0, &out);
        if (st != k->status)
            fail_msg("case %zu (%s %s): expected %ld, got %ld: %s", i, k->method, k->path,
                     k->status, st, out ? out : "");
        if (st >= 400) {
            json_t *o = json_loads(out, 0, NULL);
            if (!json_is_string(json_object_get(json_object_get(o, "error"), "message")))
                fail_msg("case %zu: no OpenAI error body: %s", i, out ? out : "");
            json_decref(o);
        }
        free(out);
        assert_int_equal(http("GET", "/health", NULL, 0, NULL, 0, NULL), 200);
    }
    /* 413: a body over the 32 MiB cap. */
    size_t big = (32u << 20) + 16;
    char *huge = malloc(big);
    memset(huge, ' ', big);
    assert_int_equal(http("POST", "/v1/chat/completions", huge, big, "X-Api-Key: " KEY, 0, NULL),
                     413);
    free(huge);
    /* file:// inside the allowed directory works. */
    char *bytes;
    size_t len;
    assert_int_equal(lv_read_file(image_path("c_56x56.png"), 1u << 24, &bytes, &len, NULL), LV_OK);
    tu_write_file(media_dir, "ok.png", bytes, len);
    free(bytes);
    char ok_url[1200];
    snprintf(ok_url, sizeof ok_url, "file://%s/ok.png", media_dir);
    char *b_ok = chat_body(ok_url, "x", "{\"max_tokens\":3}");
    assert_int_equal(post("/v1/chat/completions", b_ok, NULL), 200);
    assert_int_equal(post("/v1/completions", "{\"prompt\":\"hello\",\"max_tokens\":3}", NULL), 200);
    char *out;
    assert_int_equal(post("/tokenize", "{\"content\":\"hello\"}", &out), 200);
    json_t *tok_o = json_loads(out, 0, NULL), *req = json_object();
    json_object_set(req, "tokens", json_object_get(tok_o, "tokens"));
    char *detok = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    json_decref(tok_o);
    free(out);
    assert_int_equal(post("/detokenize", detok, &out), 200);
    assert_non_null(strstr(out, "hello"));
    free(out);
    free(detok);
    free(b_ok);
    free(b_outside), free(b_inside), free(b_badb64), free(b_scheme), free(b_notimg);
    free(b_n), free(b_temp), free(b_maxtok), free(b_tag), free(png);
}

static void test_disconnect_mid_stream(void **state) {
    wait_healthy();
    char *b = chat_body(NULL, "Tell a long story.",
                        "{\"stream\":true,\"max_tokens\":2000,\"stop\":[\"@@@@never\"]}");
    char *out = NULL;
    http("POST", "/v1/chat/completions", b, strlen(b), "X-Api-Key: " KEY, 200, &out);
    free(out);
    free(b);
    b = chat_body(NULL, "Hi", "{\"max_tokens\":4}");
    assert_int_equal(post("/v1/chat/completions", b, NULL), 200);
    free(b);
}

/* A device this build lacks: exit 1 at once, before listening, with
 * llava_load's message (the server under test keeps running). */
static void test_bad_device_exits_one(void **state) {
    static const char *const names[] = {"tpu", "cuda:x", "cuda:-1", "cuda"};
    for (size_t i = 0; i < LV_ARRAY_LEN(names); i++) {
        if (!strcmp(names[i], "cuda") && be_find("cuda")) continue; /* a CUDA build has it */
        char cmd[4096], want[64], *out;
        snprintf(cmd, sizeof cmd, "'%s/llava-server' --model '%s' --port 0 --device '%s' 2>&1",
                 tu_env("LLAVA_BIN_DIR"), model_dir(), names[i]);
        snprintf(want, sizeof want, "llava-server: unknown backend \"%s\"", names[i]);
        assert_int_equal(tu_run(cmd, &out), 1);
        if (!strstr(out, want) || strstr(out, "listening on")) fail_msg("%s: %s", names[i], out);
        free(out);
    }
}

static void test_sigterm_exits_zero(void **state) {
    wait_healthy();
    int rc = srv_stop(&S); /* SIGTERM, then its exit status */
    assert_int_equal(rc, 0);
}

/* gen_run's cancel hook: polled before prefill and before each decode step. */
static int polls;
static bool cancel_after_3(void *ud) {
    return ++polls > 3;
}

static void test_gen_cancel_hook(void **state) {
    llava *m;
    lv_err err = {{0}};
    assert_int_equal(llava_open(model_dir(), &m, &err), LV_OK);
    assert_int_equal(llava_load(m, "cpu", 1, &err), LV_OK);
    int32_t *ids;
    size_t n;
    assert_int_equal(request_prompt_ids(m, "Hello", false, NULL, 0, &ids, &n, &err), LV_OK);
    gen_params p;
    gen_params_default(&p, m);
    p.max_tokens = 50;
    p.ignore_eos = true;
    gen_callbacks cb = {.cancelled = cancel_after_3};
    gen_result r;
    polls = 0;
    assert_int_equal(gen_run(m, ids, (int)n, NULL, 0, &p, &cb, &r, &err), LV_ERR_CANCELLED);
    assert_int_equal(polls, 4);
    assert_null(r.ids);
    polls = -1000; /* never cancels: the full answer */
    assert_int_equal(gen_run(m, ids, (int)n, NULL, 0, &p, &cb, &r, &err), LV_OK);
    assert_int_equal(r.n_ids, 50);
    gen_result_free(&r);
    free(ids);
    llava_free(m);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gen_cancel_hook),
        cmocka_unit_test(test_health_loading_then_ready),
        cmocka_unit_test(test_chat_matches_cli),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_disconnect_mid_stream),
        cmocka_unit_test(test_bad_device_exits_one),
        cmocka_unit_test(test_sigterm_exits_zero),
    };
    int rc = cmocka_run_group_tests(tests, start_server, stop_server);
    curl_global_cleanup();
    return rc;
}
