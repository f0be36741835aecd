/* test_server_ollama.c - Ollama's API on llava-server (server/ollama.h), the
 * real binary on 127.0.0.1 with the bundled demo model (models/demo):
 *   - the request bodies of Ollama's API docs examples (tests/data/ollama,
 *     verbatim; README there names each one's source), sent as they are and
 *     again with the demo's name and a demo sample for the docs' image: each
 *     answer has the documented fields with their JSON types, streamed as
 *     NDJSON (application/x-ndjson, every line parses, the last one done with
 *     the counts) or, with "stream": false, one object;
 *   - /api/tags, /api/ps, /api/show, /api/version;
 *   - an image question answered "green" through /api/chat and /api/generate,
 *     and the same text as /v1/chat/completions for the same question;
 *   - format "json" and a schema, tools (message.tool_calls with argument
 *     objects, plain and streamed), load and unload requests;
 *   - errors in Ollama's {"error"} shape with their statuses;
 *   - a client leaving mid-stream frees its sequence; SIGTERM → exit 0.
 * The demo model's answers are not hard-coded beyond the samples' README
 * ("green" for the circle of sample_01). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/base64.h"
#include "base/file.h"
#include "server_harness.h"
#include "tools_fixtures.h"

#include <jansson.h>

#define NAME     "llava-demo" /* the served name (--alias) */
#define QUESTION "What is the color of the circle?"

static srv S;
static char *demo_b64; /* sample_01 as base64, without a data: prefix (Ollama's "images") */

/* ---- helpers ------------------------------------------------------------------------------- */

typedef struct {
    long status;
    char *body;
    char type[96]; /* Content-Type */
} reply;

static reply request(const char *method, const char *path, const char *body) {
    srv_body b = {0};
    struct curl_slist *h;
    CURL *c = srv_handle(&S, method, path, body, body ? strlen(body) : 0, NULL, NULL, &b, &h);
    reply r = {0};
    if (curl_easy_perform(c) == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
        char *ct = NULL;
        curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
        snprintf(r.type, sizeof r.type, "%s", ct ? ct : "");
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    r.body = b.data ? b.data : strdup("");
    return r;
}

static char *fixture(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%.900s/ollama/%.100s.json", tu_env("LLAVA_TEST_DATA"), name);
    char *text;
    size_t len;
    assert_int_equal(lv_read_file(path, 1u << 20, &text, &len, NULL), LV_OK);
    return text;
}

static json_t *parse(const char *text) {
    json_t *o = json_loads(text, 0, NULL);
    if (!o) fail_msg("not JSON: %.300s", text);
    return o;
}

/* The body with "model" NAME and every image replaced by the demo sample. */
static char *with_demo(const char *body) {
    json_t *o = parse(body);
    json_object_set_new(o, "model", json_string(NAME));
    json_t *lists[64];
    size_t n = 0;
    lists[n++] = json_object_get(o, "images");
    json_t *ms = json_object_get(o, "messages");
    for (size_t i = 0; i < json_array_size(ms) && n < 64; i++)
        lists[n++] = json_object_get(json_array_get(ms, i), "images");
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < json_array_size(lists[i]); k++)
            json_array_set_new(lists[i], k, json_string(demo_b64));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* RFC 3339 in UTC, "2023-08-04T19:22:45.499127Z" (fraction: required). */
static void check_time(const json_t *v, bool fraction) {
    const char *s = json_string_value(v);
    if (!s) fail_msg("a time is not a string");
    size_t n = strlen(s);
    if (n < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' ||
        s[n - 1] != 'Z' || (fraction && (n < 22 || s[19] != '.')) ||
        (!fraction && n != 20 && s[19] != '.'))
        fail_msg("not an RFC 3339 time%s: %s", fraction ? " with fractional seconds" : "", s);
}

static void check_int(const json_t *o, const char *key, long long min) {
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) fail_msg("'%s' is not an integer", key);
    if (json_integer_value(v) < min)
        fail_msg("'%s' is %lld < %lld", key, json_integer_value(v), min);
}

/* The answer's text of one object: message.content (chat) or response (generate). */
static const char *text_of(const json_t *o, bool chat) {
    const json_t *v = chat ? json_object_get(json_object_get(o, "message"), "content")
                           : json_object_get(o, "response");
    if (!json_is_string(v)) fail_msg("no text in %s", chat ? "message.content" : "response");
    return json_string_value(v);
}

/* {"model","created_at", message {role, content} | response, "done"} */
static void check_object(const json_t *o, const char *model, bool chat, bool done) {
    assert_string_equal(json_string_value(json_object_get(o, "model")), model);
    check_time(json_object_get(o, "created_at"), true);
    assert_true(json_is_boolean(json_object_get(o, "done")));
    assert_int_equal(json_is_true(json_object_get(o, "done")), done);
    if (chat)
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(o, "message"), "role")), "assistant");
    text_of(o, chat);
}

/* The last object: done_reason and the counts and durations. */
static void check_done(const json_t *o, const char *model, bool chat) {
    check_object(o, model, chat, true);
    const char *why = json_string_value(json_object_get(o, "done_reason"));
    assert_non_null(why);
    assert_true(!strcmp(why, "stop") || !strcmp(why, "length"));
    check_int(o, "total_duration", 1);
    check_int(o, "load_duration", 0);
    check_int(o, "prompt_eval_count", 1);
    check_int(o, "prompt_eval_duration", 0);
    check_int(o, "eval_count", 1);
    check_int(o, "eval_duration", 0);
    assert_true(json_integer_value(json_object_get(o, "total_duration")) >=
                json_integer_value(json_object_get(o, "eval_duration")));
}

/* The tool calls of a message, each {function: {name, arguments: {object}}}; the count. */
static size_t check_calls(const json_t *msg) {
    json_t *calls = json_object_get(msg, "tool_calls");
    if (!calls) return 0;
    assert_true(json_is_array(calls));
    for (size_t i = 0; i < json_array_size(calls); i++) {
        json_t *f = json_object_get(json_array_get(calls, i), "function");
        assert_true(json_is_string(json_object_get(f, "name")));
        assert_true(json_is_object(json_object_get(f, "arguments")));
        assert_int_equal(json_integer_value(json_object_get(f, "index")), (long long)i);
    }
    return json_array_size(calls);
}

typedef struct {
    char *text;     /* the answer's text, all pieces together (heap) */
    json_t *last;   /* the last object (owned) */
    size_t n_calls; /* tool calls seen */
} answer;

static void answer_free(answer *a) {
    free(a->text);
    json_decref(a->last);
}

/* A 200 answer in its framing: NDJSON lines (every one an object; all but
 * the last not done; the last done with the counts) or one object. */
static answer check_answer(const reply *r, const char *model, bool chat, bool stream) {
    if (r->status != 200) fail_msg("expected 200, got %ld: %s", r->status, r->body);
    answer a = {calloc(1, 1), NULL, 0};
    size_t used = 0;
    if (!stream) {
        assert_non_null(strstr(r->type, "application/json"));
        a.last = parse(r->body);
        check_done(a.last, model, chat);
        a.n_calls = chat ? check_calls(json_object_get(a.last, "message")) : 0;
        free(a.text);
        a.text = strdup(text_of(a.last, chat));
        return a;
    }
    assert_string_equal(r->type, "application/x-ndjson");
    size_t len = strlen(r->body);
    assert_true(len > 0 && r->body[len - 1] == '\n');
    int lines = 0;
    for (char *p = r->body; *p;) {
        char *nl = strchr(p, '\n');
        assert_non_null(nl);
        *nl = '\0';
        json_t *o = parse(p);
        assert_null(a.last); /* nothing after the done line */
        bool done = json_is_true(json_object_get(o, "done"));
        check_object(o, model, chat, done);
        if (chat) a.n_calls += check_calls(json_object_get(o, "message"));
        const char *t = text_of(o, chat);
        a.text = realloc(a.text, used + strlen(t) + 1);
        memcpy(a.text + used, t, strlen(t) + 1);
        used += strlen(t);
        if (done) {
            check_done(o, model, chat);
            assert_string_equal(t, ""); /* streamed: the last line carries no text */
            a.last = o;
        } else {
            json_decref(o);
        }
        lines++;
        p = nl + 1;
    }
    assert_non_null(a.last);
    assert_true(lines >= 2);
    return a;
}

/* The error body {"error": "..."} with status; the message (static copy). */
static const char *check_error(const reply *r, long status) {
    static char msg[512];
    if (r->status != status) fail_msg("expected %ld, got %ld: %s", status, r->status, r->body);
    json_t *o = parse(r->body);
    const char *m = json_string_value(json_object_get(o, "error"));
    if (!m || json_object_size(o) != 1) fail_msg("not Ollama's error shape: %s", r->body);
    snprintf(msg, sizeof msg, "%s", m);
    json_decref(o);
    return msg;
}

/* ---- the server ------------------------------------------------------------------------------ */

static char tmp_dir[1024];

static int start(void **state) {
    (void)state;
    snprintf(tmp_dir, sizeof tmp_dir, "%s", tu_tmpdir("server_ollama"));
    char cfg[2048], cfg_path[1200], log[1200];
    /* max_tokens: the default of a request without num_predict, short enough for ASan */
    snprintf(cfg, sizeof cfg, "{\"model_id\": \"%s\", \"model_name\": \"%s\", \"max_tokens\": 40}",
             srv_demo_model(), NAME);
    tu_write_file(tmp_dir, "config.json", cfg, strlen(cfg));
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", tmp_dir);
    snprintf(log, sizeof log, "%s/server.log", tmp_dir);
    const char *argv[] = {"--config",   cfg_path, "--port",    "0",   "--parallel", "2",
                          "--ctx-size", "2048",   "--timeout", "300", NULL};
    if (!srv_start(&S, log, argv, NULL)) return -1;
    size_t len;
    char *png;
    assert_int_equal(
        lv_read_file(srv_demo_sample("sample_01_320x240.png"), 1u << 24, &png, &len, NULL), LV_OK);
    assert_int_equal(lv_base64_encode((const uint8_t *)png, len, &demo_b64, NULL), LV_OK);
    free(png);
    return srv_wait_healthy(&S, 60) ? 0 : -1;
}

static int stop(void **state) {
    (void)state;
    if (S.pid > 0) kill(S.pid, SIGKILL), waitpid(S.pid, NULL, 0);
    free(demo_b64);
    return 0;
}

/* ---- tests ----------------------------------------------------------------------------------- */

/* Each docs example body, verbatim and with the demo's name and image. */
static const struct {
    const char *name;
    bool chat, stream;
} docs[] = {
    {"generate_stream", false, true},
    {"generate_no_stream", false, false},
    {"generate_structured", false, false},
    {"generate_json_mode", false, false},
    {"generate_images", false, false},
    {"generate_raw", false, false},
    {"generate_seed", false, true},
    {"generate_options", false, false},
    {"chat_stream", true, true},
    {"chat_stream_tools", true, true},
    {"chat_no_stream", true, false},
    {"chat_no_stream_tools", true, false},
    {"chat_structured", true, false},
    {"chat_history", true, true},
    {"chat_history_tools", true, false},
    {"chat_images", true, true},
    {"chat_seed", true, true},
    {"chat_tools", true, false},
};

static void test_docs_examples(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        char *body = fixture(docs[i].name);
        json_t *o = parse(body);
        char model[128];
        snprintf(model, sizeof model, "%s", json_string_value(json_object_get(o, "model")));
        json_decref(o);
        const char *path = docs[i].chat ? "/api/chat" : "/api/generate";
        for (int demo = 0; demo < 2; demo++) {
            char *sent = demo ? with_demo(body) : strdup(body);
            reply r = request("POST", path, sent);
            print_message("%s%s: %ld\n", docs[i].name, demo ? " (demo name and image)" : "",
                          r.status);
            answer a = check_answer(&r, demo ? NAME : model, docs[i].chat, docs[i].stream);
            /* {"age": integer, "available": boolean}, unless cut by the default max_tokens */
            const char *why = json_string_value(json_object_get(a.last, "done_reason"));
            if (strstr(docs[i].name, "structured") && !strcmp(why, "length"))
                assert_int_equal(a.text[0], '{');
            else if (strstr(docs[i].name, "structured")) {
                json_t *v = json_loads(a.text, 0, NULL);
                if (!v) fail_msg("%s: not JSON: %s", docs[i].name, a.text);
                assert_true(json_is_integer(json_object_get(v, "age")));
                assert_true(json_is_boolean(json_object_get(v, "available")));
                json_decref(v);
            }
            answer_free(&a);
            free(r.body);
            free(sent);
        }
        free(body);
    }
}

/* Load and unload requests (empty prompt or messages): done with no text. */
static void test_docs_load_unload(void **state) {
    (void)state;
    static const struct {
        const char *name, *reason;
        bool chat;
    } cases[] = {{"generate_load", "load", false},
                 {"generate_unload", "unload", false},
                 {"chat_load", "load", true},
                 {"chat_unload", "unload", true}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *body = fixture(cases[i].name);
        reply r = request("POST", cases[i].chat ? "/api/chat" : "/api/generate", body);
        assert_int_equal(r.status, 200);
        json_t *o = parse(r.body);
        check_object(o, "llama3.2", cases[i].chat, true);
        assert_string_equal(json_string_value(json_object_get(o, "done_reason")), cases[i].reason);
        assert_string_equal(text_of(o, cases[i].chat), "");
        json_decref(o);
        free(r.body);
        free(body);
    }
    /* the model is still served after an "unload" */
    reply r = request("POST", "/api/generate",
                      "{\"model\":\"x\",\"prompt\":\"hi\",\"stream\":false,"
                      "\"options\":{\"num_predict\":3}}");
    answer a = check_answer(&r, "x", false, false);
    answer_free(&a);
    free(r.body);
}

static void check_details(const json_t *d) {
    static const char *const strings[] = {"parent_model", "format", "family", "parameter_size",
                                          "quantization_level"};
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++)
        if (!json_is_string(json_object_get(d, strings[i])))
            fail_msg("details.%s is not a string", strings[i]);
    assert_string_equal(json_string_value(json_object_get(d, "family")), "mistral");
    json_t *fam = json_object_get(d, "families");
    assert_true(json_is_array(fam) && json_array_size(fam) >= 1);
    assert_string_equal(json_string_value(json_array_get(fam, 0)), "mistral");
}

/* {name, model, size, digest, details} of the served model. */
static void check_entry(const json_t *m) {
    assert_string_equal(json_string_value(json_object_get(m, "name")), NAME ":latest");
    assert_string_equal(json_string_value(json_object_get(m, "model")), NAME ":latest");
    check_int(m, "size", 1);
    const char *dg = json_string_value(json_object_get(m, "digest"));
    assert_non_null(dg);
    assert_int_equal(strlen(dg), 64);
    assert_int_equal(strspn(dg, "0123456789abcdef"), 64);
    check_details(json_object_get(m, "details"));
}

static void test_tags_ps_show_version(void **state) {
    (void)state;
    reply r = request("GET", "/api/version", NULL);
    assert_int_equal(r.status, 200);
    json_t *o = parse(r.body);
    assert_true(json_is_string(json_object_get(o, "version")));
    json_decref(o);
    free(r.body);

    r = request("GET", "/api/tags", NULL);
    assert_int_equal(r.status, 200);
    o = parse(r.body);
    json_t *models = json_object_get(o, "models");
    assert_int_equal(json_array_size(models), 1);
    check_entry(json_array_get(models, 0));
    check_time(json_object_get(json_array_get(models, 0), "modified_at"), false);
    json_decref(o);
    free(r.body);

    r = request("GET", "/api/ps", NULL);
    assert_int_equal(r.status, 200);
    o = parse(r.body);
    models = json_object_get(o, "models");
    assert_int_equal(json_array_size(models), 1);
    json_t *m = json_array_get(models, 0);
    check_entry(m);
    check_time(json_object_get(m, "expires_at"), false);
    check_int(m, "size_vram", 0);
    check_int(m, "context_length", 2048);
    json_decref(o);
    free(r.body);

    /* the docs' example asks for "llava": any name is the served model */
    char *body = fixture("show");
    for (int older = 0; older < 2; older++) {
        r = request("POST", "/api/show", older ? "{\"name\":\"llava-demo\"}" : body);
        assert_int_equal(r.status, 200);
        o = parse(r.body);
        static const char *const strings[] = {"modelfile", "parameters", "template"};
        for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++)
            if (!json_is_string(json_object_get(o, strings[i])))
                fail_msg("show: '%s' is not a string", strings[i]);
        check_details(json_object_get(o, "details"));
        check_time(json_object_get(o, "modified_at"), false);
        json_t *info = json_object_get(o, "model_info");
        assert_string_equal(json_string_value(json_object_get(info, "general.architecture")),
                            "mistral");
        check_int(info, "general.parameter_count", 1000000);
        check_int(info, "mistral.context_length", 1);
        check_int(info, "mistral.embedding_length", 1);
        json_t *caps = json_object_get(o, "capabilities");
        bool completion = false, vision = false;
        for (size_t i = 0; i < json_array_size(caps); i++) {
            const char *c = json_string_value(json_array_get(caps, i));
            completion |= c && !strcmp(c, "completion");
            vision |= c && !strcmp(c, "vision");
        }
        assert_true(completion && vision);
        json_decref(o);
        free(r.body);
    }
    free(body);
    r = request("POST", "/api/show", "{}");
    assert_string_equal(check_error(&r, 400), "model is required");
    free(r.body);
}

/* A chat body: one user turn (the demo image when image), extra fields merged. */
static char *chat(const char *text, bool image, const char *extra) {
    json_t *msg = json_pack("{s:s, s:s}", "role", "user", "content", text);
    if (image) json_object_set_new(msg, "images", json_pack("[s]", demo_b64));
    json_t *o = json_pack("{s:s, s:[o], s:{s:f}}", "model", NAME, "messages", msg, "options",
                          "temperature", 0.0);
    if (extra) {
        json_t *x = parse(extra);
        json_object_update(o, x);
        json_decref(x);
    }
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* The demo's answer to sample_01's question, through both routes, streamed and not. */
static void test_image_question(void **state) {
    (void)state;
    for (int stream = 0; stream < 2; stream++) {
        char *body = chat(QUESTION, true, stream ? NULL : "{\"stream\":false}");
        reply r = request("POST", "/api/chat", body);
        answer a = check_answer(&r, NAME, true, stream);
        assert_string_equal(a.text, "green");
        assert_true(json_integer_value(json_object_get(a.last, "prompt_eval_count")) > 100);
        answer_free(&a);
        free(r.body);
        free(body);

        json_t *g = json_pack("{s:s, s:s, s:[s], s:b, s:{s:f}}", "model", NAME, "prompt", QUESTION,
                              "images", demo_b64, "stream", stream, "options", "temperature", 0.0);
        body = json_dumps(g, JSON_COMPACT);
        json_decref(g);
        r = request("POST", "/api/generate", body);
        a = check_answer(&r, NAME, false, stream);
        assert_string_equal(a.text, "green");
        answer_free(&a);
        free(r.body);
        free(body);
    }
}

/* The same question through /api/chat and /v1/chat/completions, greedy: the same text. */
static void test_same_as_openai(void **state) {
    (void)state;
    static const struct {
        const char *text;
        bool image;
    } qs[] = {{QUESTION, true}, {"Describe the image.", true}, {"why is the sky blue?", false}};
    char uri_head[] = "data:image/png;base64,";
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        char *body = chat(qs[i].text, qs[i].image,
                          "{\"stream\":false,\"options\":"
                          "{\"temperature\":0,\"num_predict\":24}}");
        reply r = request("POST", "/api/chat", body);
        answer a = check_answer(&r, NAME, true, false);
        free(r.body);
        free(body);

        json_t *parts = json_array();
        if (qs[i].image) {
            char *uri = malloc(strlen(demo_b64) + sizeof uri_head);
            sprintf(uri, "%s%s", uri_head, demo_b64);
            json_array_append_new(
                parts, json_pack("{s:s, s:{s:s}}", "type", "image_url", "image_url", "url", uri));
            free(uri);
        }
        json_array_append_new(parts, json_pack("{s:s, s:s}", "type", "text", "text", qs[i].text));
        json_t *o = json_pack("{s:s, s:i, s:f, s:[{s:s, s:o}]}", "model", NAME, "max_tokens", 24,
                              "temperature", 0.0, "messages", "role", "user", "content", parts);
        body = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        r = request("POST", "/v1/chat/completions", body);
        assert_int_equal(r.status, 200);
        o = parse(r.body);
        json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
        assert_string_equal(
            a.text, json_string_value(json_object_get(json_object_get(ch, "message"), "content")));
        /* the counts agree too */
        json_t *u = json_object_get(o, "usage");
        assert_int_equal(json_integer_value(json_object_get(a.last, "prompt_eval_count")),
                         json_integer_value(json_object_get(u, "prompt_tokens")));
        assert_int_equal(json_integer_value(json_object_get(a.last, "eval_count")),
                         json_integer_value(json_object_get(u, "completion_tokens")));
        json_decref(o);
        free(r.body);
        free(body);
        answer_free(&a);
    }
}

/* format "json" gives a JSON object; a schema gives an object of that schema. */
static void test_format(void **state) {
    (void)state;
    char *body = chat("Describe the image.", true,
                      "{\"stream\":false,\"format\":{\"type\":\"object\",\"properties\":{"
                      "\"shape\":{\"enum\":[\"circle\",\"square\",\"cross\"]},\"count\":{"
                      "\"type\":\"integer\"}},\"required\":[\"shape\",\"count\"]},"
                      "\"options\":{\"temperature\":0,\"num_predict\":60}}");
    reply r = request("POST", "/api/chat", body);
    answer a = check_answer(&r, NAME, true, false);
    json_t *v = json_loads(a.text, 0, NULL);
    if (!v) fail_msg("format schema: not JSON: %s", a.text);
    assert_non_null(json_string_value(json_object_get(v, "shape")));
    assert_true(json_is_integer(json_object_get(v, "count")));
    json_decref(v);
    answer_free(&a);
    free(r.body);
    free(body);
    /* json mode, streamed through /api/generate: the pieces make one object */
    json_t *g = json_pack("{s:s, s:s, s:[s], s:s, s:{s:f, s:i}}", "model", NAME, "prompt",
                          "Describe the image.", "images", demo_b64, "format", "json", "options",
                          "temperature", 0.0, "num_predict", 60);
    body = json_dumps(g, JSON_COMPACT);
    json_decref(g);
    r = request("POST", "/api/generate", body);
    a = check_answer(&r, NAME, false, true);
    if (!strcmp(json_string_value(json_object_get(a.last, "done_reason")), "stop")) {
        v = json_loads(a.text, 0, NULL);
        if (!json_is_object(v)) fail_msg("format json: not a JSON object: %s", a.text);
        json_decref(v);
    } else {
        assert_int_equal(a.text[0], '{'); /* cut by num_predict: still an object's start */
    }
    answer_free(&a);
    free(r.body);
    free(body);
}

/* Tool calls in Ollama's shape. The demo model answers "auto" (Ollama's only
 * mode) with text, so the calls are asked for with tool_choice, this server's
 * extension of /api/chat (OpenAI's fields, passed through: one call); the functions
 * are tools_fixtures.h's, whose bounded parameters let the demo's calls end
 * (the docs' unbounded "location" string would run to num_predict). */
static void test_tools(void **state) {
    (void)state;
    for (int stream = 0; stream < 2; stream++) {
        char extra[4096];
        snprintf(extra, sizeof extra,
                 "{\"stream\":%s," TOOLS
                 ",\"tool_choice\":\"required\",\"parallel_tool_calls\":false,"
                 "\"options\":{\"temperature\":1.0,\"seed\":3,\"num_predict\":120}}",
                 stream ? "true" : "false");
        char *body = chat("What is the weather in Paris?", false, extra);
        reply r = request("POST", "/api/chat", body);
        answer a = check_answer(&r, NAME, true, stream);
        assert_int_equal(a.n_calls, 1);
        assert_string_equal(a.text, "");
        assert_string_equal(json_string_value(json_object_get(a.last, "done_reason")), "stop");
        if (!stream) {
            json_t *calls = json_object_get(json_object_get(a.last, "message"), "tool_calls");
            for (size_t i = 0; i < json_array_size(calls); i++) {
                json_t *call = json_array_get(calls, i), *f = json_object_get(call, "function");
                assert_true(json_is_string(json_object_get(call, "id")));
                const char *name = json_string_value(json_object_get(f, "name"));
                json_t *args = json_object_get(f, "arguments");
                if (!strcmp(name, "get_weather")) {
                    assert_true(json_is_string(json_object_get(args, "city")));
                    const char *unit = json_string_value(json_object_get(args, "unit"));
                    assert_true(unit && (!strcmp(unit, "c") || !strcmp(unit, "f")));
                } else {
                    assert_string_equal(name, "count");
                    assert_true(json_is_integer(json_object_get(args, "n")));
                    assert_true(json_is_boolean(json_object_get(args, "ok")));
                }
            }
        }
        answer_free(&a);
        free(r.body);
        free(body);
    }
}

/* Errors: Ollama's {"error"} with the status. */
static void test_errors(void **state) {
    (void)state;
    static const struct {
        const char *method, *path, *body;
        long status;
        const char *says; /* part of the message */
    } cases[] = {
        {"POST", "/api/chat", "{\"model\":\"x\",", 400, "invalid JSON"},
        {"POST", "/api/chat", "[1]", 400, "JSON object"},
        {"POST", "/api/chat", "", 400, "missing request body"},
        {"POST", "/api/chat", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 400,
         "model is required"},
        {"POST", "/api/chat", "{\"model\":\"x\",\"messages\":\"hi\"}", 400, "messages"},
        {"POST", "/api/chat", "{\"model\":\"x\",\"messages\":[{\"content\":\"hi\"}]}", 400, "role"},
        {"POST", "/api/chat",
         "{\"model\":\"x\",\"messages\":[{\"role\":\"robot\",\"content\":"
         "\"hi\"}]}",
         400, "robot"},
        {"POST", "/api/chat",
         "{\"model\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":"
         "\"hi\",\"images\":[\"@@@@\"]}]}",
         400, "base64"},
        {"POST", "/api/chat",
         "{\"model\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":"
         "\"hi\",\"images\":[\"aGVsbG8gd29ybGQ=\"]}]}",
         400, "image 0"},
        {"POST", "/api/chat",
         "{\"model\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":"
         "\"hi\",\"images\":\"abc\"}]}",
         400, "images"},
        {"POST", "/api/chat", "{\"model\":\"x\",\"stream\":\"yes\",\"messages\":[]}", 400,
         "stream"},
        {"POST", "/api/chat", "{\"model\":\"x\",\"think\":true,\"messages\":[]}", 400,
         "does not support thinking"},
        {"POST", "/api/chat",
         "{\"model\":\"x\",\"format\":42,\"messages\":[{\"role\":\"user\","
         "\"content\":\"hi\"}]}",
         400, "format"},
        {"POST", "/api/chat",
         "{\"model\":\"x\",\"format\":{\"type\":\"integer\",\"minimum\":3},"
         "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
         400, "minimum"},
        {"POST", "/api/chat",
         "{\"model\":\"x\",\"options\":{\"num_predict\":\"many\"},"
         "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
         400, "num_predict"},
        {"POST", "/api/chat",
         "{\"model\":\"x\",\"options\":{\"temperature\":\"hot\"},"
         "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
         400, "temperature"},
        {"POST", "/api/chat", "{\"model\":\"x\",\"logprobs\":true,\"messages\":[]}", 400,
         "logprobs"},
        {"POST", "/api/generate", "{\"model\":\"x\",\"prompt\":3}", 400, "prompt"},
        {"POST", "/api/generate",
         "{\"model\":\"x\",\"prompt\":\"hi\",\"template\":\"{{ .Prompt "
         "}}\"}",
         400, "template"},
        {"POST", "/api/generate", "{\"model\":\"x\",\"prompt\":\"hi\",\"context\":[1,2,3]}", 400,
         "context"},
        {"POST", "/api/generate",
         "{\"model\":\"x\",\"prompt\":\"hi\",\"raw\":true,\"system\":"
         "\"be brief\"}",
         400, "raw mode"},
        {"GET", "/api/chat", NULL, 405, "not allowed"},
        {"POST", "/api/tags", "{}", 405, "not allowed"},
        {"POST", "/api/pull", NULL, 404, "no route"},
        {"DELETE", "/api/delete", "{\"model\":\"x\"}", 404, "no route"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *pull = !strcmp(cases[i].path, "/api/pull") ? fixture("pull") : NULL;
        reply r = request(cases[i].method, cases[i].path, pull ? pull : cases[i].body);
        const char *msg = check_error(&r, cases[i].status);
        if (!strstr(msg, cases[i].says))
            fail_msg("case %zu: '%s' does not say '%s'", i, msg, cases[i].says);
        free(r.body);
        free(pull);
    }
    /* the docs' suffix example: this model has no fill-in-the-middle */
    char *body = fixture("generate_suffix");
    reply r = request("POST", "/api/generate", body);
    assert_string_equal(check_error(&r, 400), "\"codellama:code\" does not support insert");
    free(r.body);
    free(body);
    /* an unknown model name is served (as on /v1), not 404 */
    r = request("POST", "/api/chat",
                "{\"model\":\"no-such-model:7b\",\"stream\":false,\"messages\":[{\"role\":"
                "\"user\",\"content\":\"hi\"}],\"options\":{\"num_predict\":2}}");
    answer a = check_answer(&r, "no-such-model:7b", true, false);
    answer_free(&a);
    free(r.body);
}

/* /health's queue.running and kv_cache.used. */
static void health_counts(long *running, long *kv) {
    char *out = NULL;
    assert_int_equal(srv_http(&S, "GET", "/health", NULL, 0, NULL, NULL, &out), 200);
    json_t *o = parse(out);
    *running = (long)json_integer_value(json_object_get(json_object_get(o, "queue"), "running"));
    *kv = (long)json_integer_value(json_object_get(json_object_get(o, "kv_cache"), "used"));
    json_decref(o);
    free(out);
}

static long seen_running = -1, seen_kv = -1;
static void scrape_now(void *ud) { /* while the stream runs: its sequence is counted */
    (void)ud;
    health_counts(&seen_running, &seen_kv);
}

/* A stream the client leaves after its first line: the job is cancelled and
 * its sequence freed. The answer is held long by its format (an array of at
 * least 100 shapes: EOS is not allowed before). */
static void test_disconnect_frees_sequence(void **state) {
    (void)state;
    char *body = chat("List the shapes.", false,
                      "{\"format\":{\"type\":\"array\",\"items\":{\"enum\":[\"circle\","
                      "\"square\"]},\"minItems\":100},\"options\":{\"num_predict\":4000}}");
    srv_body b = {.stop_after = 1, .on_stop = scrape_now};
    struct curl_slist *h;
    CURL *c = srv_handle(&S, "POST", "/api/chat", body, strlen(body), NULL, NULL, &b, &h);
    curl_easy_perform(c); /* ends with a write error: we hung up */
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    assert_true(b.stopped);
    free(b.data);
    free(body);
    long running = -1, kv = -1;
    for (int i = 0; i < 200; i++) {
        health_counts(&running, &kv);
        if (running == 0 && kv == 0 && srv_log_has(&S, "client disconnected")) break;
        srv_sleep_ms(50);
    }
    print_message("during the stream: running %ld, KV %ld; after: running %ld, KV %ld\n",
                  seen_running, seen_kv, running, kv);
    assert_true(seen_running >= 1 && seen_kv > 0);
    assert_true(running == 0 && kv == 0);
    assert_true(srv_log_has(&S, "client disconnected"));
}

static void test_sigterm_exits_zero(void **state) {
    (void)state;
    assert_int_equal(srv_stop(&S), 0);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tags_ps_show_version),
        cmocka_unit_test(test_docs_examples),
        cmocka_unit_test(test_docs_load_unload),
        cmocka_unit_test(test_image_question),
        cmocka_unit_test(test_same_as_openai),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_tools),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_disconnect_frees_sequence),
        cmocka_unit_test(test_sigterm_exits_zero),
    };
    int rc = cmocka_run_group_tests(tests, start, stop);
    curl_global_cleanup();
    return rc;
}
