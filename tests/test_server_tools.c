/* test_server_tools.c - tool calling through the real llava-server on the
 * bundled demo model (server/tools.h): tool_choice "required" and a named
 * function give calls whose arguments follow the function's schema, in
 * every choice; parallel_tool_calls false gives one call; a stream sends
 * each choice's calls in one delta and finishes with "tool_calls"; a round
 * trip (calls, then the assistant's calls and the tool's result sent back)
 * ends in plain content; bad tools are 400s naming the field. The demo
 * model is random: the schemas are bounded (enums, integers, booleans,
 * strings of at most 8) so an answer ends within max_tokens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "server_harness.h"

#include <jansson.h>

static srv S;

#include "tools_fixtures.h"
#define ASK "\"messages\":[{\"role\":\"user\",\"content\":\"What is the weather in Paris?\"}]"

static json_t *post_json(const char *body, long want) {
    char *out = NULL;
    long st = srv_http(&S, "POST", "/v1/chat/completions", body, strlen(body), NULL, NULL, &out);
    if (st != want) fail_msg("expected %ld, got %ld: %s", want, st, out ? out : "");
    json_t *o = json_loads(out ? out : "", 0, NULL);
    free(out);
    assert_non_null(o);
    return o;
}

/* One call: a known name (only `only` if given), arguments valid for its schema. */
static void check_call(const json_t *c, const char *only) {
    assert_string_equal(json_string_value(json_object_get(c, "type")), "function");
    const char *id = json_string_value(json_object_get(c, "id"));
    assert_non_null(id);
    assert_int_equal(strlen(id), 5 + 24);
    assert_memory_equal(id, "call_", 5);
    json_t *f = json_object_get(c, "function");
    const char *name = json_string_value(json_object_get(f, "name"));
    const char *args = json_string_value(json_object_get(f, "arguments"));
    assert_non_null(name);
    assert_non_null(args);
    if (only) assert_string_equal(name, only);
    json_t *a = json_loads(args, 0, NULL);
    if (!json_is_object(a)) fail_msg("arguments of %s are not an object: %s", name, args);
    assert_int_equal(json_object_size(a), 2);
    if (!strcmp(name, "get_weather")) {
        const char *city = json_string_value(json_object_get(a, "city"));
        const char *unit = json_string_value(json_object_get(a, "unit"));
        assert_non_null(city);
        size_t cps = 0;
        for (const char *p = city; *p; p++) cps += ((unsigned char)*p & 0xc0) != 0x80;
        assert_true(cps <= 8);
        assert_non_null(unit);
        assert_true(!strcmp(unit, "c") || !strcmp(unit, "f"));
    } else {
        assert_string_equal(name, "count");
        assert_true(json_is_integer(json_object_get(a, "n")));
        assert_true(json_is_boolean(json_object_get(a, "ok")));
    }
    json_decref(a);
}

/* Every choice of o is a tool call (at most max_calls calls); returns the
 * most calls a choice made. */
static size_t check_choices(json_t *o, size_t n, const char *only, size_t max_calls) {
    json_t *choices = json_object_get(o, "choices");
    assert_int_equal(json_array_size(choices), n);
    size_t most = 0;
    for (size_t k = 0; k < n; k++) {
        json_t *ch = json_array_get(choices, k), *msg = json_object_get(ch, "message");
        const char *finish = json_string_value(json_object_get(ch, "finish_reason"));
        if (!finish || strcmp(finish, "tool_calls"))
            fail_msg("choice %zu: finish %s, content %s", k, finish ? finish : "(null)",
                     json_string_value(json_object_get(msg, "content")));
        assert_true(json_is_null(json_object_get(msg, "content")));
        json_t *calls = json_object_get(msg, "tool_calls");
        size_t m = json_array_size(calls);
        assert_true(m >= 1 && m <= max_calls);
        for (size_t i = 0; i < m; i++) check_call(json_array_get(calls, i), only);
        if (m > most) most = m;
    }
    assert_true(
        json_integer_value(json_object_get(json_object_get(o, "usage"), "completion_tokens")) > 0);
    return most;
}

/* ---- the server ------------------------------------------------------------------------------ */

static int start(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("server_tools");
    char log[1200];
    snprintf(log, sizeof log, "%s/server.log", dir);
    const char *argv[] = {"--model", srv_demo_model(), "--port", "0", "--parallel",
                          "4",       "--ctx-size",     "2048",   NULL};
    if (!srv_start(&S, log, argv, NULL)) return -1;
    return srv_wait_healthy(&S, 60) ? 0 : -1;
}

static int stop(void **state) {
    (void)state;
    if (S.pid > 0) kill(S.pid, SIGKILL), waitpid(S.pid, NULL, 0);
    return 0;
}

/* ---- tests ----------------------------------------------------------------------------------- */

/* "required" with two functions: n = 3 choices at temperature 1, each a
 * call (or several: seed 1 makes some) with schema-valid arguments. */
static void test_required(void **state) {
    (void)state;
    json_t *o = post_json("{" TOOLS "," ASK ",\"tool_choice\":\"required\",\"n\":3,"
                          "\"temperature\":1.0,\"seed\":1,\"max_tokens\":250}",
                          200);
    check_choices(o, 3, NULL, 64);
    json_decref(o);
}

/* A named function: only that one is called. */
static void test_named(void **state) {
    (void)state;
    json_t *o = post_json("{" TOOLS "," ASK ",\"tool_choice\":{\"type\":\"function\","
                          "\"function\":{\"name\":\"get_weather\"}},\"n\":2,\"temperature\":1.0,"
                          "\"seed\":2,\"max_tokens\":250}",
                          200);
    check_choices(o, 2, "get_weather", 64);
    json_decref(o);
}

/* parallel_tool_calls false: exactly one call per choice. */
static void test_one_call(void **state) {
    (void)state;
    json_t *o = post_json("{" TOOLS "," ASK ",\"tool_choice\":\"required\",\"parallel_tool_calls\":"
                          "false,\"n\":3,\"temperature\":1.0,\"seed\":1,\"max_tokens\":120}",
                          200);
    check_choices(o, 3, NULL, 1);
    json_decref(o);
}

/* A stream: per choice, one delta with the calls (index, id, type,
 * function) and a finish chunk "tool_calls"; no content deltas. */
static void test_stream(void **state) {
    (void)state;
    const char *body = "{" TOOLS "," ASK ",\"tool_choice\":\"required\",\"n\":2,"
                       "\"temperature\":1.0,\"seed\":1,\"max_tokens\":250,\"stream\":true}";
    char *out = NULL;
    assert_int_equal(
        srv_http(&S, "POST", "/v1/chat/completions", body, strlen(body), NULL, NULL, &out), 200);
    int calls_seen[2] = {0, 0}, finished[2] = {0, 0};
    for (char *p = strstr(out, "data: "); p; p = strstr(p + 6, "data: ")) {
        if (!strncmp(p + 6, "[DONE]", 6)) break;
        json_error_t je;
        json_t *ev = json_loadb(p + 6, strcspn(p + 6, "\n"), 0, &je);
        assert_non_null(ev);
        json_t *ch = json_array_get(json_object_get(ev, "choices"), 0);
        int k = (int)json_integer_value(json_object_get(ch, "index"));
        assert_true(k == 0 || k == 1);
        json_t *delta = json_object_get(ch, "delta");
        const char *content = json_string_value(json_object_get(delta, "content"));
        if (content && *content) fail_msg("a content delta in a tool call stream: %s", content);
        json_t *calls = json_object_get(delta, "tool_calls");
        for (size_t i = 0; i < json_array_size(calls); i++) {
            json_t *c = json_array_get(calls, i);
            assert_int_equal(json_integer_value(json_object_get(c, "index")), i);
            check_call(c, NULL);
            calls_seen[k]++;
        }
        const char *finish = json_string_value(json_object_get(ch, "finish_reason"));
        if (finish) {
            assert_string_equal(finish, "tool_calls");
            assert_true(calls_seen[k] > 0);
            finished[k]++;
        }
        json_decref(ev);
    }
    assert_int_equal(finished[0], 1);
    assert_int_equal(finished[1], 1);
    free(out);
}

/* Calls, then the assistant's calls and a result sent back (content null,
 * a tool message): the answer is content (the demo model writes no call
 * with tool_choice auto). */
static void test_round_trip(void **state) {
    (void)state;
    json_t *o = post_json("{" TOOLS "," ASK ",\"tool_choice\":{\"type\":\"function\",\"function\":"
                          "{\"name\":\"get_weather\"}},\"parallel_tool_calls\":false,"
                          "\"temperature\":1.0,\"seed\":3,\"max_tokens\":120}",
                          200);
    check_choices(o, 1, "get_weather", 1);
    json_t *msg = json_object_get(json_array_get(json_object_get(o, "choices"), 0), "message");
    json_t *call = json_array_get(json_object_get(msg, "tool_calls"), 0);
    json_t *body =
        json_pack("{s:s, s:i, s:f, s:[{s:s, s:s}, O, {s:s, s:s, s:s}], s:[o, o]}", "model", "demo",
                  "max_tokens", 60, "temperature", 0.0, "messages", "role", "user", "content",
                  "What is the weather in Paris?", msg, "role", "tool", "tool_call_id",
                  json_string_value(json_object_get(call, "id")), "content",
                  "{\"temp\": 22, \"unit\": \"c\"}", "tools", json_loads(WEATHER, 0, NULL),
                  json_loads(COUNT, 0, NULL));
    assert_non_null(body);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    json_decref(o);
    o = post_json(text, 200);
    free(text);
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
    const char *finish = json_string_value(json_object_get(ch, "finish_reason"));
    assert_non_null(finish);
    assert_true(!strcmp(finish, "stop") || !strcmp(finish, "length"));
    msg = json_object_get(ch, "message");
    assert_true(json_is_string(json_object_get(msg, "content")));
    assert_null(json_object_get(msg, "tool_calls"));
    json_decref(o);
}

/* Bad tools: 400s naming the field. */
static void test_bad_tools(void **state) {
    (void)state;
    static const struct {
        const char *body, *param, *msg;
    } bad[] = {
        {"{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":"
         "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"pattern\":\"x+\"}}}"
         "}}]," ASK "}",
         "tools[0].function.parameters", "\"pattern\" is not supported"},
        {"{\"tools\":[" COUNT "," WEATHER "," COUNT "]," ASK "}", "tools[2].function.name",
         "duplicate"},
        {"{" TOOLS ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"fly\"}}," ASK
         "}",
         "tool_choice", "no function named 'fly'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *o = post_json(bad[i].body, 400);
        json_t *err = json_object_get(o, "error");
        const char *param = json_string_value(json_object_get(err, "param"));
        const char *msg = json_string_value(json_object_get(err, "message"));
        if (!param || strcmp(param, bad[i].param) || !msg || !strstr(msg, bad[i].msg))
            fail_msg("case %zu: param %s message %s", i, param ? param : "(null)",
                     msg ? msg : "(null)");
        json_decref(o);
    }
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_required),   cmocka_unit_test(test_named),
        cmocka_unit_test(test_one_call),   cmocka_unit_test(test_stream),
        cmocka_unit_test(test_round_trip), cmocka_unit_test(test_bad_tools),
    };
    int rc = cmocka_run_group_tests(tests, start, stop);
    curl_global_cleanup();
    return rc;
}
