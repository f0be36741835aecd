/* test_server_defaults.c - a request's max_tokens when it gives none, on
 * the demo model: the rest of the context by default (context length -
 * prompt tokens, as vLLM does: an answer ends at EOS, never at a fixed
 * count such as the 150 it once was), or --max-tokens / -n when the
 * server was started with it; an explicit max_tokens is kept either way.
 * The seed config's max_tokens is checked by test_server_api. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/base64.h"
#include "base/file.h"
#include "server_harness.h"

#include <jansson.h>

#define CTX     "512" /* --ctx-size: an answer run to the end of it stays short */
#define EOS_BAN "\"logit_bias\":{\"2\":-100}" /* the demo's </s>: the answer never ends */

static srv S;

/* A chat body asking question about the demo's first sample, greedy, with
 * extra members (a JSON object's inside, may be ""). */
static char *chat_body(const char *question, const char *extra) {
    char *bytes, *b64;
    size_t len;
    assert_int_equal(
        lv_read_file(srv_demo_sample("sample_01_320x240.png"), 1u << 24, &bytes, &len, NULL),
        LV_OK);
    assert_int_equal(lv_base64_encode((const uint8_t *)bytes, len, &b64, NULL), LV_OK);
    free(bytes);
    size_t cap = strlen(b64) + strlen(question) + strlen(extra) + 512;
    char *body = malloc(cap);
    snprintf(body, cap,
             "{\"temperature\":0,\"messages\":[{\"role\":\"user\",\"content\":["
             "{\"type\":\"text\",\"text\":\"%s\"},{\"type\":\"image_url\",\"image_url\":"
             "{\"url\":\"data:image/png;base64,%s\"}}]}]%s%s}",
             question, b64, *extra ? "," : "", extra);
    free(b64);
    return body;
}

typedef struct {
    const char *content, *finish;
    long prompt, completion;
    json_t *o;
} answer;

static answer ask(const srv *s, const char *question, const char *extra) {
    char *body = chat_body(question, extra), *out = NULL;
    long st = srv_http(s, "POST", "/v1/chat/completions", body, strlen(body), NULL, NULL, &out);
    free(body);
    if (st != 200) fail_msg("HTTP %ld: %s", st, out ? out : "");
    answer a = {.o = json_loads(out, 0, NULL)};
    free(out);
    assert_non_null(a.o);
    json_t *c = json_array_get(json_object_get(a.o, "choices"), 0);
    a.content = json_string_value(json_object_get(json_object_get(c, "message"), "content"));
    a.finish = json_string_value(json_object_get(c, "finish_reason"));
    json_t *u = json_object_get(a.o, "usage");
    a.prompt = (long)json_integer_value(json_object_get(u, "prompt_tokens"));
    a.completion = (long)json_integer_value(json_object_get(u, "completion_tokens"));
    return a;
}

static bool start(srv *s, const char *name, const char *n_flag) {
    char log[1200];
    snprintf(log, sizeof log, "%.1100s/%s.log", tu_tmpdir(name), name);
    const char *argv[12] = {"--model", srv_demo_model(), "--port", "0", "--ctx-size",
                            CTX,       "--alias",        "demo"};
    int n = 8;
    if (n_flag) argv[n++] = "-n", argv[n++] = n_flag;
    argv[n] = NULL;
    return srv_start(s, log, argv, NULL) && srv_wait_healthy(s, 60);
}

static void default_is_the_rest_of_the_context(void **state) {
    (void)state;
    assert_true(start(&S, "defaults", NULL));
    /* An ordinary question ends at EOS. */
    answer a = ask(&S, "What is the color of the circle?", "");
    assert_string_equal(a.content, "green");
    assert_string_equal(a.finish, "stop");
    json_decref(a.o);
    /* With EOS banned, generation runs until the context is full. */
    a = ask(&S, "Describe the image.", EOS_BAN);
    print_message("EOS banned, no max_tokens: %ld prompt + %ld generated tokens, %s\n", a.prompt,
                  a.completion, a.finish);
    assert_string_equal(a.finish, "length");
    assert_int_equal(a.prompt + a.completion, atoi(CTX));
    assert_true(a.completion > 150);
    json_decref(a.o);
    /* An explicit max_tokens still bounds it. */
    a = ask(&S, "Describe the image.", EOS_BAN ",\"max_tokens\":5");
    assert_string_equal(a.finish, "length");
    assert_int_equal(a.completion, 5);
    json_decref(a.o);
    assert_int_equal(srv_stop(&S), 0);
}

static void max_tokens_flag_sets_the_default(void **state) {
    (void)state;
    assert_true(start(&S, "defaults_n", "7"));
    answer a = ask(&S, "Describe the image.", EOS_BAN);
    assert_string_equal(a.finish, "length");
    assert_int_equal(a.completion, 7);
    json_decref(a.o);
    a = ask(&S, "Describe the image.", EOS_BAN ",\"max_tokens\":12"); /* the request's wins */
    assert_int_equal(a.completion, 12);
    json_decref(a.o);
    assert_int_equal(srv_stop(&S), 0);
}

static int teardown(void **state) {
    (void)state;
    if (S.pid > 0) kill(S.pid, SIGKILL), waitpid(S.pid, NULL, 0);
    S.pid = 0;
    return 0;
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(default_is_the_rest_of_the_context, teardown),
        cmocka_unit_test_teardown(max_tokens_flag_sets_the_default, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
