/* test_tools.c - tool calling without a model (server/tools.h): the prompt
 * text of tools, calls and results, exactly; the grammar composed from the
 * functions' parameter schemas (compiled and run over accepted and refused
 * answers); the calls read back out of an answer; the 400s of bad tools. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "engine/grammar.h"
#include "server/oai.h"
#include "server/tools.h"
#include "text/chat_template.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools_fixtures.h"

static oai_request parse_ok(const char *body) {
    oai_limits lim;
    oai_limits_default(&lim);
    oai_request r;
    oai_error e;
    lv_status st = oai_parse_chat(body, strlen(body), &lim, &r, &e);
    if (st) fail_msg("parse failed: %s (param %s)", e.message, e.param);
    return r;
}

static void parse_bad(const char *body, const char *param, const char *msg) {
    oai_limits lim;
    oai_limits_default(&lim);
    oai_request r;
    oai_error e;
    lv_status st = oai_parse_chat(body, strlen(body), &lim, &r, &e);
    if (st != LV_ERR_ARG || e.status != 400 || strcmp(e.param, param) || !strstr(e.message, msg))
        fail_msg("%s: status %d param '%s' message '%s'; want 400 '%s' '%s'", body, e.status,
                 e.param, e.message, param, msg);
}

static char *render(const oai_request *r) {
    lv_buf out = {0};
    size_t n_img = 0;
    lv_err err = {{0}};
    assert_int_equal(
        chat_render(CHAT_TEMPLATE_LLAVA_MISTRAL, r->messages, r->n_messages, &out, &n_img, &err),
        LV_OK);
    return out.data;
}

static void expect_text(const char *got, const char *want) {
    if (strcmp(got, want)) fail_msg("rendered:\n%s\n---- want:\n%s\n----", got, want);
}

/* The tools' text first in the last user turn; an assistant's calls and the
 * results that answer them, exactly. */
static void prompt_text(void **state) {
    (void)state;
    oai_request r =
        parse_ok("{" TOOLS ",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                 "{\"role\":\"user\",\"content\":\"Weather in Paris and Rome?\"},"
                 "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
                 "{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                 "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\",\\\"unit\\\":\\\"c\\\"}\"}},"
                 "{\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                 "\"arguments\":\"{\\\"city\\\":\\\"Rome\\\",\\\"unit\\\":\\\"c\\\"}\"}}]},"
                 "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"22 C\"},"
                 "{\"role\":\"tool\",\"tool_call_id\":\"call_2\",\"content\":[{\"type\":\"text\","
                 "\"text\":\"25 \\\"C\\\"\"}]}]}");
    assert_int_equal(r.n_messages, 4); /* the two results are one turn */
    assert_int_equal(r.tool_mode, OAI_TOOLS_AUTO);
    assert_null(r.grammar_text); /* auto: free text */
    char *text = render(&r);
    expect_text(
        text,
        "<<SYS>>\nBe brief.\n<</SYS>>\n\n"
        "[INST] Weather in Paris and Rome? [/INST]"
        " [TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": "
        "\"c\"}}, {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\", \"unit\": "
        "\"c\"}}]</s> "
        "[INST] You can call these functions:\n"
        "{\"name\": \"get_weather\", \"description\": \"Weather of a city\", \"parameters\": "
        "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"maxLength\": "
        "8}, \"unit\": {\"enum\": [\"c\", \"f\"]}}, \"required\": [\"city\", \"unit\"]}}\n"
        "{\"name\": \"count\", \"parameters\": {\"type\": \"object\", \"properties\": {\"n\": "
        "{\"type\": \"integer\"}, \"ok\": {\"type\": \"boolean\"}}, \"required\": [\"n\", "
        "\"ok\"]}}\n"
        "To call functions, answer with only [TOOL_CALLS] and a JSON list of calls: "
        "[TOOL_CALLS] [{\"name\": \"<function name>\", \"arguments\": {...}}]\n"
        "Otherwise answer the user normally.\n\n"
        "[TOOL_RESULTS] {\"call_id\": \"call_1\", \"content\": \"22 C\"} [/TOOL_RESULTS]\n"
        "[TOOL_RESULTS] {\"call_id\": \"call_2\", \"content\": \"25 \\\"C\\\"\"} "
        "[/TOOL_RESULTS] [/INST]");
    free(text);
    oai_request_free(&r);

    /* One user turn, a named function, one call: the instruction says so. */
    r = parse_ok("{\"tools\":[" COUNT "],\"tool_choice\":{\"type\":\"function\",\"function\":"
                 "{\"name\":\"count\"}},\"parallel_tool_calls\":false,\"messages\":[{\"role\":"
                 "\"user\",\"content\":\"Count.\"}]}");
    text = render(&r);
    expect_text(text,
                "[INST] You can call these functions:\n"
                "{\"name\": \"count\", \"parameters\": {\"type\": \"object\", \"properties\": "
                "{\"n\": {\"type\": \"integer\"}, \"ok\": {\"type\": \"boolean\"}}, \"required\": "
                "[\"n\", \"ok\"]}}\n"
                "To call functions, answer with only [TOOL_CALLS] and a JSON list of one call: "
                "[TOOL_CALLS] [{\"name\": \"<function name>\", \"arguments\": {...}}]\n"
                "You must call the function count now.\n\n"
                "Count. [/INST]");
    free(text);
    oai_request_free(&r);

    /* "none": the tools are not shown, the answer is not read for calls. */
    r = parse_ok("{" TOOLS ",\"tool_choice\":\"none\",\"messages\":[{\"role\":\"user\","
                 "\"content\":\"Hi\"}]}");
    text = render(&r);
    expect_text(text, "[INST] Hi [/INST]");
    assert_false(tools_active(&r));
    free(text);
    oai_request_free(&r);
}

static bool accepts(const grammar *g, const char *s) {
    grammar_matcher *m = NULL;
    lv_err err = {{0}};
    assert_int_equal(grammar_matcher_new(g, &m, &err), LV_OK);
    bool ok = grammar_matcher_accept_bytes(m, s, strlen(s)) && grammar_matcher_is_complete(m);
    grammar_matcher_free(m);
    return ok;
}

static grammar *compile_of(const oai_request *r) {
    assert_non_null(r->grammar_text);
    assert_string_equal(r->grammar_param, "tools");
    grammar *g = NULL;
    lv_err err = {{0}};
    if (grammar_compile(r->grammar_text, r->grammar_len, &g, &err))
        fail_msg("%s\n%s", err.msg, r->grammar_text);
    return g;
}

/* required: any function, any number of calls; named: that one; parallel
 * false: exactly one call. Arguments follow each function's schema. */
static void grammar_composition(void **state) {
    (void)state;
    const char *one = "[TOOL_CALLS] [{\"name\":\"count\",\"arguments\":{\"n\":3,\"ok\":true}}]";
    const char *two =
        "[TOOL_CALLS] [{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Rome\","
        "\"unit\":\"c\"}},{\"name\":\"count\",\"arguments\":{\"n\":-1,\"ok\":false}}]";
    oai_request r = parse_ok("{" TOOLS ",\"tool_choice\":\"required\",\"messages\":[{\"role\":"
                             "\"user\",\"content\":\"x\"}]}");
    grammar *g = compile_of(&r);
    assert_true(accepts(g, one));
    assert_true(accepts(g, two));
    assert_false(accepts(g, "[TOOL_CALLS] []"));
    assert_false(accepts(g, "plain text"));
    assert_false(accepts(g, "[TOOL_CALLS] [{\"name\":\"other\",\"arguments\":{}}]"));
    /* arguments under the schema: enum, maxLength, required, types */
    assert_false(accepts(g, "[TOOL_CALLS] [{\"name\":\"get_weather\",\"arguments\":{\"city\":"
                            "\"Rome\",\"unit\":\"k\"}}]"));
    assert_false(accepts(g, "[TOOL_CALLS] [{\"name\":\"get_weather\",\"arguments\":{\"city\":"
                            "\"Rome-the-eternal\",\"unit\":\"c\"}}]"));
    assert_false(accepts(g, "[TOOL_CALLS] [{\"name\":\"count\",\"arguments\":{\"n\":3}}]"));
    assert_false(accepts(g, "[TOOL_CALLS] [{\"name\":\"count\",\"arguments\":{\"n\":\"3\","
                            "\"ok\":true}}]"));
    grammar_free(g);
    /* parsed back: ids, names, arguments as compact JSON text */
    oai_tool_call *calls = NULL;
    int n = 0;
    assert_true(tools_parse_output(&r, two, strlen(two), &calls, &n));
    assert_int_equal(n, 2);
    assert_string_equal(calls[0].name, "get_weather");
    assert_string_equal(calls[0].arguments, "{\"city\":\"Rome\",\"unit\":\"c\"}");
    assert_string_equal(calls[1].name, "count");
    assert_int_equal(strlen(calls[0].id), 5 + 24);
    assert_memory_equal(calls[0].id, "call_", 5);
    assert_string_not_equal(calls[0].id, calls[1].id);
    tools_free_calls(calls, n);
    oai_request_free(&r);

    r = parse_ok("{" TOOLS ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":"
                 "\"count\"}},\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    g = compile_of(&r);
    assert_true(accepts(g, one));
    assert_false(accepts(g, two));
    grammar_free(g);
    oai_request_free(&r);

    r = parse_ok("{" TOOLS ",\"tool_choice\":\"required\",\"parallel_tool_calls\":false,"
                 "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    g = compile_of(&r);
    assert_true(accepts(g, one));
    assert_false(accepts(g, two));
    grammar_free(g);
    oai_request_free(&r);
}

/* auto: an answer is a call only if it is "[TOOL_CALLS]" and a list of
 * known functions; a stream holds text back while it may become one. */
static void auto_answers(void **state) {
    (void)state;
    oai_request r = parse_ok("{" TOOLS ",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    oai_tool_call *calls = NULL;
    int n = 0;
    static const char *const plain[] = {
        "The weather is fine.",
        "[TOOL_CALLS] [{\"name\":\"nope\",\"arguments\":{}}]",
        "[TOOL_CALLS] [{\"name\":\"count\"}]",
        "[TOOL_CALLS] []",
        "[TOOL_CALLS] [{\"name\":\"count\",\"arguments\":{\"n\":1,\"ok\":true}}] and more",
        "[TOOL_CALLS] [{\"name\":\"count\",\"arguments\":{\"n\":1,",
    };
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
        if (tools_parse_output(&r, plain[i], strlen(plain[i]), &calls, &n))
            fail_msg("read as a call: %s", plain[i]);
        assert_null(calls);
    }
    const char *call =
        " [TOOL_CALLS] [{\"name\": \"count\", \"arguments\": {\"n\": 1, \"ok\": true}}]";
    assert_true(tools_parse_output(&r, call, strlen(call), &calls, &n));
    assert_int_equal(n, 1);
    assert_string_equal(calls[0].arguments, "{\"n\":1,\"ok\":true}");
    tools_free_calls(calls, n);
    assert_true(tools_may_be_call("", 0));
    assert_true(tools_may_be_call(" [TOOL", 6));
    assert_true(tools_may_be_call("[TOOL_CALLS] [{", 15));
    assert_false(tools_may_be_call("[TOOLS", 6));
    assert_false(tools_may_be_call("Hello", 5));
    oai_request_free(&r);
}

/* 400s naming the field. */
static void bad_tools(void **state) {
    (void)state;
#define U ",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}"
    parse_bad("{\"tools\":[" WEATHER ",{\"type\":\"function\",\"function\":{\"name\":\"n\","
              "\"parameters\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\","
              "\"minimum\":3}}}}}]" U,
              "tools[1].function.parameters", "\"minimum\" is not supported");
    parse_bad("{\"tools\":[" COUNT "," COUNT "]" U, "tools[1].function.name", "duplicate");
    parse_bad("{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a b\"}}]" U,
              "tools[0].function.name", "1 to 64");
    parse_bad("{\"tools\":[{\"type\":\"function\",\"function\":{}}]" U, "tools[0].function.name",
              "Missing required");
    parse_bad("{\"tools\":[{\"type\":\"retrieval\"}]" U, "tools[0].type", "'function'");
    parse_bad("{" TOOLS ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":"
              "\"nope\"}}" U,
              "tool_choice", "no function named 'nope'");
    parse_bad("{" TOOLS ",\"tool_choice\":\"sometimes\"" U, "tool_choice", "Supported values");
    parse_bad("{\"tool_choice\":\"required\"" U, "tool_choice", "only allowed when 'tools'");
    parse_bad("{" TOOLS ",\"parallel_tool_calls\":1" U, "parallel_tool_calls", "a boolean");
    parse_bad("{" TOOLS ",\"tool_choice\":\"required\",\"response_format\":{\"type\":"
              "\"json_object\"}" U,
              "tool_choice", "cannot be combined");
    parse_bad("{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", "messages[0].tool_call_id",
              "Missing required");
    parse_bad("{\"messages\":[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"
              "\"c\",\"type\":\"function\",\"function\":{\"arguments\":\"{}\"}}]}]}",
              "messages[0].tool_calls[0].function.name", "a string");
    parse_bad("{\"messages\":[{\"role\":\"assistant\",\"content\":null}]}", "messages[0].content",
              "Missing required");
#undef U
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(prompt_text),
        cmocka_unit_test(grammar_composition),
        cmocka_unit_test(auto_answers),
        cmocka_unit_test(bad_tools),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
