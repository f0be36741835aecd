/* test_oai.c - the OpenAI layer without a server: bad bodies get the right
 * status, param and message; good bodies parse field by field; response
 * builders produce OpenAI's shapes (checked by parsing them back). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "server/oai.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static oai_limits limits(void) {
    oai_limits l;
    oai_limits_default(&l);
    l.max_body = 64 * 1024;
    l.max_n = 4;
    l.max_images = 3;
    l.max_messages = 8;
    l.max_logit_bias = 4;
    return l;
}

/* ---- bad requests ------------------------------------------------------- */

typedef struct {
    bool completion;
    const char *body;
    int status;
    const char *param; /* "" = null */
    const char *msg;   /* substring of the message */
} bad_case;

#define U        "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
#define IMG(url) "{\"type\":\"image_url\",\"image_url\":{\"url\":\"" url "\"}}"

static const bad_case bad_cases[] = {
    /* body */
    {0, "{", 400, "", "could not parse the JSON"},
    {0, "", 400, "", "could not parse the JSON"},
    {0, "[1,2]", 400, "", "must be a JSON object"},
    {0, "{\"messages\":[],\"messages\":[]}", 400, "", "duplicate"},
    {0, "{\"a\":\"\\u0000\"}", 400, "", "could not parse"},
    /* messages */
    {0, "{}", 400, "messages", "Missing required parameter: 'messages'"},
    {0, "{\"messages\":null}", 400, "messages", "Missing required parameter"},
    {0, "{\"messages\":\"hi\"}", 400, "messages", "expected an array, but got a string"},
    {0, "{\"messages\":[]}", 400, "messages", "empty array"},
    {0, "{\"messages\":[1]}", 400, "messages[0]", "expected an object, but got an integer"},
    {0, "{\"messages\":[{\"content\":\"x\"}]}", 400, "messages[0].role", "Missing required"},
    {0, "{\"messages\":[{\"role\":5,\"content\":\"x\"}]}", 400, "messages[0].role",
     "expected a string"},
    {0, "{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", 400, "messages[0].role",
     "Invalid value: 'robot'"},
    {0, "{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", 400, "messages[0].tool_call_id",
     "Missing required parameter"},
    {0, "{\"messages\":[{\"role\":\"user\"}]}", 400, "messages[0].content",
     "Missing required parameter: 'messages[0].content'"},
    {0, "{\"messages\":[{\"role\":\"user\",\"content\":42}]}", 400, "messages[0].content",
     "expected a string or an array"},
    {0, "{\"messages\":[{\"role\":\"user\",\"content\":[]}]}", 400, "messages[0].content",
     "empty array"},
    {0, "{\"messages\":[{\"role\":\"user\",\"content\":[\"hi\"]}]}", 400, "messages[0].content[0]",
     "expected an object, but got a string"},
    {0, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"hi\"}]}]}", 400,
     "messages[0].content[0].type", "Missing required"},
    {0, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\"}]}]}", 400,
     "messages[0].content[0].type", "Invalid value: 'input_audio'"},
    {0, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}", 400,
     "messages[0].content[0].text", "Missing required"},
    {0, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":1}]}]}", 400,
     "messages[0].content[0].text", "expected a string, but got an integer"},
    {0, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", 400,
     "messages[0].content[0].image_url", "Missing required"},
    {0,
     "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":7}]}]}",
     400, "messages[0].content[0].image_url", "expected an object or a string"},
    {0,
     "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}}]}]}",
     400, "messages[0].content[0].image_url.url", "Missing required"},
    {0, "{\"messages\":[{\"role\":\"user\",\"content\":[" IMG("ftp://x/a.png") "]}]}", 400,
     "messages[0].content[0].image_url.url", "Invalid image URL 'ftp://x/a.png'"},
    {0,
     "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{"
     "\"url\":\"data:x\",\"detail\":\"ultra\"}}]}]}",
     400, "messages[0].content[0].image_url.detail", "Invalid value: 'ultra'"},
    {0,
     "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{"
     "\"url\":3}}]}]}",
     400, "messages[0].content[0].image_url.url", "expected a string"},
    {0,
     "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\",\"content\":"
     "[" IMG("data:x") "]}]}",
     400, "messages[1].content[0]", "only supported in 'user' messages"},
    {0,
     "{\"messages\":[{\"role\":\"user\",\"content\":[" IMG("data:a") "," IMG(
         "data:b") "]},"
                   "{\"role\":\"user\",\"content\":[" IMG("data:c") "," IMG("data:d") "]}]}",
     400, "messages[1].content[1]", "Too many images: at most 3"},
    {0,
     "{\"messages\":[{\"role\":\"user\",\"content\":\"1\"},{\"role\":\"user\",\"content\":\"2\"},"
     "{\"role\":\"user\",\"content\":\"3\"},{\"role\":\"user\",\"content\":\"4\"},{\"role\":"
     "\"user\",\"content\":\"5\"},{\"role\":\"user\",\"content\":\"6\"},{\"role\":\"user\","
     "\"content\":\"7\"},{\"role\":\"user\",\"content\":\"8\"},{\"role\":\"user\",\"content\":"
     "\"9\"}]}",
     400, "messages", "array too long"},
    /* scalars */
    {0, "{" U ",\"model\":1}", 400, "model", "Invalid type for 'model'"},
    {0, "{" U ",\"max_tokens\":\"10\"}", 400, "max_tokens",
     "expected an integer, but got a string"},
    {0, "{" U ",\"max_tokens\":1.5}", 400, "max_tokens", "expected an integer, but got a decimal"},
    {0, "{" U ",\"max_tokens\":0}", 400, "max_tokens", "Expected a value >= 1, but got 0"},
    {0, "{" U ",\"max_tokens\":-5}", 400, "max_tokens", "integer below minimum value"},
    {0, "{" U ",\"max_tokens\":1000000000}", 400, "max_tokens", "Expected a value <= 4096"},
    {0, "{" U ",\"max_completion_tokens\":0}", 400, "max_completion_tokens", ">= 1"},
    {0, "{" U ",\"temperature\":\"hot\"}", 400, "temperature", "expected a number"},
    {0, "{" U ",\"temperature\":2.5}", 400, "temperature", "decimal above maximum value"},
    {0, "{" U ",\"temperature\":-0.1}", 400, "temperature", "decimal below minimum value"},
    {0, "{" U ",\"top_p\":1.01}", 400, "top_p", "Expected a value <= 1"},
    {0, "{" U ",\"top_k\":-2}", 400, "top_k", "Expected a value >= -1"},
    {0, "{" U ",\"top_k\":true}", 400, "top_k", "expected an integer, but got a boolean"},
    {0, "{" U ",\"min_p\":2}", 400, "min_p", "decimal above maximum"},
    {0, "{" U ",\"repetition_penalty\":0}", 400, "repetition_penalty", "Expected a value > 0"},
    {0, "{" U ",\"frequency_penalty\":3}", 400, "frequency_penalty", "<= 2"},
    {0, "{" U ",\"presence_penalty\":-2.5}", 400, "presence_penalty", ">= -2"},
    {0, "{" U ",\"seed\":\"42\"}", 400, "seed", "expected an integer"},
    {0, "{" U ",\"n\":0}", 400, "n", "Expected a value >= 1"},
    {0, "{" U ",\"n\":5}", 400, "n", "Expected a value <= 4, but got 5"},
    {0, "{" U ",\"stop\":5}", 400, "stop", "expected a string or an array of strings"},
    {0, "{" U ",\"stop\":\"\"}", 400, "stop", "empty string"},
    {0, "{" U ",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 400, "stop",
     "Expected an array with maximum length 4, but got an array with length 5"},
    {0, "{" U ",\"stop\":[\"a\",1]}", 400, "stop[1]", "expected a string"},
    {0, "{" U ",\"logprobs\":1}", 400, "logprobs", "expected a boolean"},
    {0, "{" U ",\"top_logprobs\":3}", 400, "top_logprobs", "'logprobs' must be set to true"},
    {0, "{" U ",\"logprobs\":true,\"top_logprobs\":21}", 400, "top_logprobs", "<= 20"},
    {0, "{" U ",\"logit_bias\":[1]}", 400, "logit_bias", "expected an object"},
    {0, "{" U ",\"logit_bias\":{\"abc\":1}}", 400, "logit_bias", "key 'abc' is not a token id"},
    {0, "{" U ",\"logit_bias\":{\"-3\":1}}", 400, "logit_bias", "not a token id"},
    {0, "{" U ",\"logit_bias\":{\"7\":101}}", 400, "logit_bias.7", "Expected a value <= 100"},
    {0, "{" U ",\"logit_bias\":{\"7\":\"x\"}}", 400, "logit_bias.7", "expected a number"},
    {0, "{" U ",\"logit_bias\":{\"1\":1,\"2\":1,\"3\":1,\"4\":1,\"5\":1}}", 400, "logit_bias",
     "too many entries"},
    {0, "{" U ",\"stream\":\"yes\"}", 400, "stream", "expected a boolean"},
    {0, "{" U ",\"stream_options\":{\"include_usage\":true}}", 400, "stream_options",
     "only allowed when 'stream' is enabled"},
    {0, "{" U ",\"stream\":true,\"stream_options\":3}", 400, "stream_options",
     "expected an object"},
    {0, "{" U ",\"stream\":true,\"stream_options\":{\"include_usage\":1}}", 400,
     "stream_options.include_usage", "expected a boolean"},
    /* completions */
    {1, "{}", 400, "prompt", "Missing required parameter: 'prompt'"},
    {1, "{\"prompt\":5}", 400, "prompt", "expected a string or an array"},
    {1, "{\"prompt\":[]}", 400, "prompt", "empty array"},
    {1, "{\"prompt\":[[]]}", 400, "prompt[0]", "empty array"},
    {1, "{\"prompt\":[1,-2]}", 400, "prompt[1]", "Expected a value >= 0"},
    {1, "{\"prompt\":[1,\"a\"]}", 400, "prompt[1]", "expected an integer"},
    {1, "{\"prompt\":[\"a\",{}]}", 400, "prompt[1]", "expected a string or an array of token ids"},
    {1, "{\"prompt\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 400, "prompt", "at most 4 prompts"},
    {1, "{\"prompt\":[\"a\",\"b\"],\"n\":3}", 400, "n", "3 choices for each of 2 prompts"},
    {1, "{\"prompt\":\"a\",\"logprobs\":6}", 400, "logprobs", "Expected a value <= 5"},
    {1, "{\"prompt\":\"a\",\"logprobs\":true}", 400, "logprobs", "expected an integer"},
};

static void bad_requests(void **state) {
    oai_limits lim = limits();
    assert_true(LV_ARRAY_LEN(bad_cases) >= 40);
    for (size_t i = 0; i < LV_ARRAY_LEN(bad_cases); i++) {
        const bad_case *c = &bad_cases[i];
        oai_request r;
        oai_error e;
        memset(&e, 0, sizeof e);
        lv_status st = c->completion ? oai_parse_completion(c->body, strlen(c->body), &lim, &r, &e)
                                     : oai_parse_chat(c->body, strlen(c->body), &lim, &r, &e);
        if (st != LV_ERR_ARG || e.status != c->status || strcmp(e.param, c->param) ||
            !strstr(e.message, c->msg))
            fail_msg("case %zu %s: st %d status %d param '%s' message '%s'", i, c->body, st,
                     e.status, e.param, e.message);
        assert_string_equal(e.type, "invalid_request_error");
        assert_true(e.code[0] != 0);
        assert_null(r.json_); /* zeroed on failure */
        assert_int_equal(r.n_messages, 0);
    }
}

static void body_too_large(void **state) {
    oai_limits lim = limits();
    size_t n = lim.max_body + 1;
    char *body = malloc(n);
    memset(body, ' ', n);
    oai_request r;
    oai_error e;
    assert_int_equal(oai_parse_chat(body, n, &lim, &r, &e), LV_ERR_TOO_LARGE);
    assert_int_equal(e.status, 413);
    assert_string_equal(e.code, "request_too_large");
    assert_non_null(strstr(e.message, "the limit is 65536 bytes"));
    free(body);
}

/* ---- good requests ------------------------------------------------------ */

static void parse_ok(const char *body, oai_request *r, bool completion) {
    oai_limits lim = limits();
    oai_error e;
    lv_status st = completion ? oai_parse_completion(body, strlen(body), &lim, r, &e)
                              : oai_parse_chat(body, strlen(body), &lim, r, &e);
    if (st) fail_msg("%s: %s", body, e.message);
}

static void chat_minimal(void **state) {
    oai_request r;
    parse_ok("{\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}", &r, false);
    assert_int_equal(r.kind, OAI_CHAT);
    assert_null(r.model);
    assert_int_equal(r.n_messages, 1);
    assert_int_equal(r.messages[0].role, CHAT_USER);
    assert_int_equal(r.messages[0].n_parts, 1);
    assert_int_equal(r.messages[0].parts[0].type, CHAT_PART_TEXT);
    assert_int_equal(r.messages[0].parts[0].len, 5);
    assert_memory_equal(r.messages[0].parts[0].text, "Hello", 5);
    assert_int_equal(r.n_images, 0);
    assert_int_equal(r.max_tokens, 0); /* not given: the rest of the context (jobs.c) */
    assert_int_equal(r.set, 0);
    assert_int_equal(r.n, 1);
    assert_false(r.stream);
    assert_false(r.logprobs);
    assert_int_equal(r.n_stop, 0);
    oai_request_free(&r);
    oai_request_free(&r); /* zeroed: no-op */
}

static void chat_every_field(void **state) {
    const char *body =
        "{\"model\":\"llava\",\"messages\":["
        "{\"role\":\"developer\",\"content\":\"Be brief.\"},"
        "{\"role\":\"system\",\"content\":[{\"type\":\"text\",\"text\":\"Sys\"}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Compare\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAA\","
        "\"detail\":\"low\"}},"
        "{\"type\":\"image_url\",\"image_url\":\"https://example.com/b.jpg\"}]},"
        "{\"role\":\"assistant\",\"content\":\"They differ.\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":"
        "\"file:///tmp/c.webp\",\"detail\":\"high\"}},{\"type\":\"text\",\"text\":\"And?\"}]}],"
        "\"max_completion_tokens\":64,\"max_tokens\":9,\"temperature\":0.7,\"top_p\":0.9,"
        "\"top_k\":40,\"min_p\":0.05,\"repetition_penalty\":1.1,\"frequency_penalty\":0.5,"
        "\"presence_penalty\":-0.5,\"seed\":-1,\"stop\":[\"\\n\\n\",\"END\"],\"n\":2,"
        "\"logprobs\":true,\"top_logprobs\":5,\"logit_bias\":{\"42\":-100,\"7\":2.5},"
        "\"stream\":true,\"stream_options\":{\"include_usage\":true},"
        "\"tools\":[],\"user\":\"u1\",\"unknown\":{\"x\":1}}";
    oai_request r;
    parse_ok(body, &r, false);
    assert_string_equal(r.model, "llava");
    assert_int_equal(r.n_messages, 5);
    assert_int_equal(r.messages[0].role, CHAT_SYSTEM);
    assert_int_equal(r.messages[1].role, CHAT_SYSTEM);
    assert_int_equal(r.messages[2].role, CHAT_USER);
    assert_int_equal(r.messages[3].role, CHAT_ASSISTANT);
    assert_int_equal(r.messages[2].n_parts, 3);
    assert_int_equal(r.messages[2].parts[0].type, CHAT_PART_TEXT);
    assert_int_equal(r.messages[2].parts[1].type, CHAT_PART_IMAGE);
    assert_int_equal(r.messages[2].parts[2].type, CHAT_PART_IMAGE);
    assert_int_equal(r.messages[4].parts[0].type, CHAT_PART_IMAGE);
    assert_memory_equal(r.messages[4].parts[1].text, "And?", 4);
    assert_int_equal(r.n_images, 3);
    assert_string_equal(r.images[0].url, "data:image/png;base64,AAA");
    assert_int_equal(r.images[0].detail, OAI_DETAIL_LOW);
    assert_int_equal(r.images[0].message, 2);
    assert_string_equal(r.images[1].url, "https://example.com/b.jpg");
    assert_int_equal(r.images[1].detail, OAI_DETAIL_AUTO);
    assert_string_equal(r.images[2].url, "file:///tmp/c.webp");
    assert_int_equal(r.images[2].detail, OAI_DETAIL_HIGH);
    assert_int_equal(r.images[2].message, 4);
    assert_int_equal(r.max_tokens, 64); /* max_completion_tokens wins */
    assert_float_equal(r.sampling.temperature, 0.7, 1e-6);
    assert_float_equal(r.sampling.top_p, 0.9, 1e-6);
    assert_int_equal(r.sampling.top_k, 40);
    assert_float_equal(r.sampling.min_p, 0.05, 1e-6);
    assert_float_equal(r.sampling.repetition_penalty, 1.1, 1e-6);
    assert_float_equal(r.sampling.frequency_penalty, 0.5, 1e-6);
    assert_float_equal(r.sampling.presence_penalty, -0.5, 1e-6);
    assert_true(r.sampling.seed == UINT64_MAX);
    assert_int_equal(r.set, 0x1ff);
    assert_int_equal(r.n_stop, 2);
    assert_string_equal(r.stop[0], "\n\n");
    assert_string_equal(r.stop[1], "END");
    assert_int_equal(r.n, 2);
    assert_true(r.logprobs);
    assert_int_equal(r.top_logprobs, 5);
    assert_int_equal(r.sampling.n_top_logprobs, 5);
    assert_int_equal(r.n_logit_bias, 2);
    for (int i = 0; i < 2; i++) {
        const oai_logit_bias *b = &r.logit_bias[i];
        assert_true((b->id == 42 && b->bias == -100) || (b->id == 7 && b->bias == 2.5f));
    }
    assert_true(r.stream);
    assert_true(r.include_usage);

    /* apply overlays onto engine defaults, borrowing the stop strings */
    gen_params p = {0};
    p.max_tokens = 256;
    sample_params_default(&p.sampling);
    oai_request_apply(&r, &p);
    assert_int_equal(p.max_tokens, 64);
    assert_float_equal(p.sampling.temperature, 0.7, 1e-6);
    assert_int_equal(p.sampling.top_k, 40);
    assert_int_equal(p.sampling.n_top_logprobs, 5);
    assert_int_equal(p.sampling.n_logit_bias, 2); /* logit_bias reaches the sampler */
    for (int i = 0; i < 2; i++)
        assert_true((p.sampling.logit_bias[i].id == 42 && p.sampling.logit_bias[i].bias == -100) ||
                    (p.sampling.logit_bias[i].id == 7 && p.sampling.logit_bias[i].bias == 2.5f));
    assert_int_equal(p.n_stop, 2);
    assert_ptr_equal(p.stop[1], r.stop[1]);
    lv_err err;
    assert_int_equal(sample_params_check(&p.sampling, &err), LV_OK);
    oai_request_free(&r);
}

static void chat_apply_keeps_defaults(void **state) {
    oai_request r;
    parse_ok("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":null,"
             "\"stop\":\"###\",\"top_p\":0,\"top_k\":-1,\"n\":2.0,\"stream\":false}",
             &r, false);
    assert_int_equal(r.set, OAI_SET_TOP_P | OAI_SET_TOP_K);
    assert_int_equal(r.n, 2);
    gen_params p = {0};
    sample_params_default(&p.sampling);
    p.sampling.temperature = 0.3f; /* a checkpoint default */
    p.sampling.top_k = 50;
    oai_request_apply(&r, &p);
    assert_float_equal(p.sampling.temperature, 0.3, 1e-6); /* null = not given */
    assert_int_equal(p.sampling.top_k, 0);                 /* -1 = off */
    assert_true(p.sampling.top_p > 0 && p.sampling.top_p < 1e-30);
    assert_int_equal(p.max_tokens, 0); /* jobs.c makes it the rest of the context */
    assert_int_equal(p.n_stop, 1);
    assert_string_equal(p.stop[0], "###");
    lv_err err;
    assert_int_equal(sample_params_check(&p.sampling, &err), LV_OK);
    oai_request_free(&r);
}

static void completion_prompts(void **state) {
    oai_request r;
    parse_ok("{\"prompt\":\"Once upon\",\"max_tokens\":5,\"logprobs\":2}", &r, true);
    assert_int_equal(r.kind, OAI_COMPLETION);
    assert_int_equal(r.n_prompts, 1);
    assert_string_equal(r.prompts[0].text, "Once upon");
    assert_int_equal(r.prompts[0].len, 9);
    assert_null(r.prompts[0].ids);
    assert_int_equal(r.max_tokens, 5);
    assert_true(r.logprobs);
    assert_int_equal(r.top_logprobs, 2);
    oai_request_free(&r);

    parse_ok("{\"prompt\":[\"a\",\"bc\"],\"n\":2}", &r, true);
    assert_int_equal(r.n_prompts, 2);
    assert_string_equal(r.prompts[1].text, "bc");
    oai_request_free(&r);

    parse_ok("{\"prompt\":[1,15043,29871]}", &r, true);
    assert_int_equal(r.n_prompts, 1);
    assert_int_equal(r.prompts[0].n_ids, 3);
    assert_int_equal(r.prompts[0].ids[1], 15043);
    assert_null(r.prompts[0].text);
    oai_request_free(&r);

    parse_ok("{\"prompt\":[[1,2],\"text\",[3]]}", &r, true);
    assert_int_equal(r.n_prompts, 3);
    assert_int_equal(r.prompts[0].n_ids, 2);
    assert_string_equal(r.prompts[1].text, "text");
    assert_int_equal(r.prompts[2].ids[0], 3);
    oai_request_free(&r);
}

/* ---- errors ------------------------------------------------------------- */

static void status_mapping(void **state) {
    assert_int_equal(oai_status_for(LV_OK, 0), 200);
    assert_int_equal(oai_status_for(LV_ERR_ARG, 0), 400);
    assert_int_equal(oai_status_for(LV_ERR_FORMAT, 0), 400);
    assert_int_equal(oai_status_for(LV_ERR_UNSUPPORTED, 0), 400);
    assert_int_equal(oai_status_for(LV_ERR_ARG, OAI_HINT_TOO_LARGE), 413);
    assert_int_equal(oai_status_for(LV_ERR_TOO_LARGE, 0), 413);
    assert_int_equal(oai_status_for(LV_ERR_BUSY, 0), 429);
    assert_int_equal(oai_status_for(LV_ERR_NOMEM, 0), 503);
    assert_int_equal(oai_status_for(LV_ERR_DEVICE, 0), 503);
    assert_int_equal(oai_status_for(LV_OK, OAI_HINT_LOADING), 503);
    assert_int_equal(oai_status_for(LV_ERR_CANCELLED, 0), 499);
    assert_int_equal(oai_status_for(LV_ERR_IO, 0), 500);
    assert_string_equal(oai_error_type(429), "rate_limit_error");
    assert_string_equal(oai_error_type(503), "unavailable_error");
    assert_string_equal(oai_error_type(500), "server_error");
    assert_string_equal(oai_error_type(401), "authentication_error");
}

static void error_json(void **state) {
    oai_error e;
    assert_int_equal(oai_fail(&e, LV_ERR_BUSY, 0, NULL, NULL, "Queue full (%d).", 64), LV_ERR_BUSY);
    char *s = oai_error_json(&e);
    json_t *j = json_loads(s, 0, NULL);
    assert_non_null(j);
    json_t *err = json_object_get(j, "error");
    assert_int_equal(json_object_size(j), 1);
    assert_string_equal(json_string_value(json_object_get(err, "message")), "Queue full (64).");
    assert_string_equal(json_string_value(json_object_get(err, "type")), "rate_limit_error");
    assert_true(json_is_null(json_object_get(err, "param")));
    assert_true(json_is_null(json_object_get(err, "code")));
    json_decref(j);
    free(s);

    oai_fail(&e, LV_ERR_ARG, 0, "n", "integer_above_max_value", "bad");
    s = oai_error_json(&e);
    j = json_loads(s, 0, NULL);
    err = json_object_get(j, "error");
    assert_string_equal(json_string_value(json_object_get(err, "param")), "n");
    assert_string_equal(json_string_value(json_object_get(err, "code")), "integer_above_max_value");
    json_decref(j);
    free(s);
    s = oai_sse_error(&e);
    assert_true(!strncmp(s, "data: {\"error\":", 15));
    assert_string_equal(s + strlen(s) - 2, "\n\n");
    free(s);
    assert_int_equal(oai_fail(NULL, LV_ERR_IO, 0, NULL, NULL, "x"), LV_ERR_IO);
}

/* ---- responses ---------------------------------------------------------- */

static json_t *load(char *s) {
    assert_non_null(s);
    json_error_t je;
    json_t *j = json_loads(s, 0, &je);
    if (!j) fail_msg("%s: %s", s, je.text);
    free(s);
    return j;
}

/* Parses one SSE event "data: {...}\n\n". */
static json_t *load_sse(char *s) {
    assert_non_null(s);
    assert_true(!strncmp(s, "data: ", 6));
    size_t n = strlen(s);
    assert_true(n > 8 && !strcmp(s + n - 2, "\n\n"));
    assert_null(memchr(s + 6, '\n', n - 8)); /* one line */
    json_t *j = json_loadb(s + 6, n - 8, 0, NULL);
    assert_non_null(j);
    free(s);
    return j;
}

static const char *jstr(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    if (!json_is_string(v)) fail_msg("'%s' is not a string", k);
    return json_string_value(v);
}

static json_int_t jint(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v)) fail_msg("'%s' is not an integer", k);
    return json_integer_value(v);
}

static void ids_unique(void **state) {
    char a[64], b[64];
    oai_make_id(a, sizeof a, "chatcmpl-");
    assert_true(!strncmp(a, "chatcmpl-", 9));
    assert_int_equal(strlen(a), 9 + 24);
    for (int i = 0; i < 1000; i++) {
        oai_make_id(b, sizeof b, "chatcmpl-");
        assert_string_not_equal(a, b);
        if (i == 500) strcpy(a, b);
    }
}

static void chat_response_shape(void **state) {
    oai_meta m = {"chatcmpl-abc", 1700000000, "llava-v1.6", false};
    oai_token_logprob lp[2] = {
        {{"Hi", 2, -0.25f}, 2, {{"Hi", 2, -0.25f}, {"Hey", 3, -1.5f}}},
        {{"\xe2\x80", 2, -INFINITY}, 0, {{0}}}, /* partial UTF-8, masked */
    };
    oai_choice c[2] = {{"Hi there", 8, "stop", lp, 2, NULL, 0},
                       {"Hello", 5, "length", NULL, 0, NULL, 0}};
    oai_usage u = {100, 7, 64};
    oai_timings t = {100, 50.0, 6, 30.0};
    json_t *j = load(oai_chat_response(&m, c, 2, &u, &t));
    assert_string_equal(jstr(j, "id"), "chatcmpl-abc");
    assert_string_equal(jstr(j, "object"), "chat.completion");
    assert_int_equal(jint(j, "created"), 1700000000);
    assert_string_equal(jstr(j, "model"), "llava-v1.6");
    json_t *ch = json_object_get(j, "choices");
    assert_int_equal(json_array_size(ch), 2);
    json_t *c0 = json_array_get(ch, 0), *c1 = json_array_get(ch, 1);
    assert_int_equal(jint(c0, "index"), 0);
    assert_int_equal(jint(c1, "index"), 1);
    json_t *msg = json_object_get(c0, "message");
    assert_string_equal(jstr(msg, "role"), "assistant");
    assert_string_equal(jstr(msg, "content"), "Hi there");
    assert_string_equal(jstr(c0, "finish_reason"), "stop");
    assert_string_equal(jstr(c1, "finish_reason"), "length");
    assert_true(json_is_null(json_object_get(c1, "logprobs")));
    json_t *content = json_object_get(json_object_get(c0, "logprobs"), "content");
    assert_int_equal(json_array_size(content), 2);
    json_t *t0 = json_array_get(content, 0);
    assert_string_equal(jstr(t0, "token"), "Hi");
    assert_float_equal(json_real_value(json_object_get(t0, "logprob")), -0.25, 1e-9);
    json_t *bytes = json_object_get(t0, "bytes");
    assert_int_equal(json_array_size(bytes), 2);
    assert_int_equal(json_integer_value(json_array_get(bytes, 0)), 'H');
    json_t *top = json_object_get(t0, "top_logprobs");
    assert_int_equal(json_array_size(top), 2);
    assert_string_equal(jstr(json_array_get(top, 1), "token"), "Hey");
    assert_non_null(json_object_get(json_array_get(top, 1), "bytes"));
    json_t *t1 = json_array_get(content, 1);
    assert_string_equal(jstr(t1, "token"), "\\xe2\\x80");
    assert_float_equal(json_real_value(json_object_get(t1, "logprob")), -9999.0, 0);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(t1, "bytes"), 1)), 0x80);
    assert_int_equal(json_array_size(json_object_get(t1, "top_logprobs")), 0);
    json_t *us = json_object_get(j, "usage");
    assert_int_equal(jint(us, "prompt_tokens"), 100);
    assert_int_equal(jint(us, "completion_tokens"), 7);
    assert_int_equal(jint(us, "total_tokens"), 107);
    assert_int_equal(jint(json_object_get(us, "prompt_tokens_details"), "cached_tokens"), 64);
    json_t *tm = json_object_get(j, "timings");
    assert_int_equal(jint(tm, "prompt_n"), 100);
    assert_float_equal(json_real_value(json_object_get(tm, "prompt_per_second")), 2000, 1e-9);
    assert_float_equal(json_real_value(json_object_get(tm, "predicted_per_token_ms")), 5, 1e-9);
    json_decref(j);

    /* no timings; text cut inside a character gets U+FFFD */
    oai_choice cut = {"ok\xe2\x80", 4, "length", NULL, 0, NULL, 0};
    j = load(oai_chat_response(&m, &cut, 1, &u, NULL));
    assert_null(json_object_get(j, "timings"));
    msg = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    assert_string_equal(jstr(msg, "content"), "ok\xef\xbf\xbd\xef\xbf\xbd");
    json_decref(j);
}

static void completion_response_shape(void **state) {
    oai_meta m = {"cmpl-1", 5, "m", false};
    oai_token_logprob lp[2] = {{{"Hel", 3, -0.5f}, 1, {{"Hel", 3, -0.5f}}},
                               {{"lo", 2, -0.1f}, 1, {{"lo", 2, -0.1f}}}};
    oai_choice c = {"Hello", 5, "length", lp, 2, NULL, 0};
    oai_usage u = {3, 2, 0};
    json_t *j = load(oai_completion_response(&m, &c, 1, &u, NULL));
    assert_string_equal(jstr(j, "object"), "text_completion");
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    assert_string_equal(jstr(c0, "text"), "Hello");
    assert_string_equal(jstr(c0, "finish_reason"), "length");
    json_t *lps = json_object_get(c0, "logprobs");
    assert_string_equal(json_string_value(json_array_get(json_object_get(lps, "tokens"), 1)), "lo");
    assert_float_equal(json_real_value(json_array_get(json_object_get(lps, "token_logprobs"), 0)),
                       -0.5, 1e-9);
    json_t *tops = json_object_get(lps, "top_logprobs");
    assert_float_equal(json_real_value(json_object_get(json_array_get(tops, 1), "lo")), -0.1, 1e-6);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(lps, "text_offset"), 1)), 3);
    assert_int_equal(jint(json_object_get(j, "usage"), "total_tokens"), 5);
    json_decref(j);
}

static void chat_stream_events(void **state) {
    char id[64];
    oai_meta m = {oai_make_id(id, sizeof id, "chatcmpl-"), 77, "llava", true};
    json_t *j = load_sse(oai_chat_chunk_role(&m, 0));
    assert_string_equal(jstr(j, "object"), "chat.completion.chunk");
    assert_string_equal(jstr(j, "id"), id);
    assert_int_equal(jint(j, "created"), 77);
    assert_true(json_is_null(json_object_get(j, "usage")));
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    json_t *d = json_object_get(c0, "delta");
    assert_string_equal(jstr(d, "role"), "assistant");
    assert_string_equal(jstr(d, "content"), "");
    assert_true(json_is_null(json_object_get(c0, "finish_reason")));
    json_decref(j);

    oai_token_logprob lp = {{"ab", 2, -0.5f}, 1, {{"ab", 2, -0.5f}}};
    j = load_sse(oai_chat_chunk_delta(&m, 1, "ab", 2, &lp, 1));
    c0 = json_array_get(json_object_get(j, "choices"), 0);
    assert_int_equal(jint(c0, "index"), 1);
    d = json_object_get(c0, "delta");
    assert_string_equal(jstr(d, "content"), "ab");
    assert_null(json_object_get(d, "role"));
    json_t *content = json_object_get(json_object_get(c0, "logprobs"), "content");
    assert_string_equal(jstr(json_array_get(content, 0), "token"), "ab");
    json_decref(j);

    j = load_sse(oai_chat_chunk_delta(&m, 0, "x", 1, NULL, 0));
    c0 = json_array_get(json_object_get(j, "choices"), 0);
    assert_true(json_is_null(json_object_get(c0, "logprobs")));
    json_decref(j);

    j = load_sse(oai_chat_chunk_finish(&m, 0, "stop"));
    c0 = json_array_get(json_object_get(j, "choices"), 0);
    assert_int_equal(json_object_size(json_object_get(c0, "delta")), 0);
    assert_string_equal(jstr(c0, "finish_reason"), "stop");
    json_decref(j);

    oai_usage u = {10, 3, 0};
    oai_timings t = {10, 5, 2, 4};
    j = load_sse(oai_chat_chunk_usage(&m, &u, &t));
    assert_int_equal(json_array_size(json_object_get(j, "choices")), 0);
    assert_true(json_is_array(json_object_get(j, "choices")));
    assert_int_equal(jint(json_object_get(j, "usage"), "total_tokens"), 13);
    assert_non_null(json_object_get(j, "timings"));
    json_decref(j);
    assert_string_equal(oai_sse_done(), "data: [DONE]\n\n");

    m.include_usage = false; /* no "usage" key at all */
    j = load_sse(oai_chat_chunk_role(&m, 0));
    assert_null(json_object_get(j, "usage"));
    json_decref(j);
}

static void completion_stream_events(void **state) {
    oai_meta m = {"cmpl-x", 1, "m", false};
    json_t *j = load_sse(oai_completion_chunk(&m, 0, "tok", 3, NULL));
    assert_string_equal(jstr(j, "object"), "text_completion");
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    assert_string_equal(jstr(c0, "text"), "tok");
    assert_true(json_is_null(json_object_get(c0, "finish_reason")));
    json_decref(j);
    j = load_sse(oai_completion_chunk(&m, 0, "", 0, "length"));
    c0 = json_array_get(json_object_get(j, "choices"), 0);
    assert_string_equal(jstr(c0, "finish_reason"), "length");
    json_decref(j);
    /* with logprobs: the legacy object for this piece's tokens */
    oai_token_logprob lp = {{" tok", 4, -0.25f}, 1, {{" tok", 4, -0.25f}}};
    j = load_sse(oai_completion_chunk_lp(&m, 1, " tok", 4, &lp, 1, NULL));
    c0 = json_array_get(json_object_get(j, "choices"), 0);
    assert_int_equal(jint(c0, "index"), 1);
    json_t *l = json_object_get(c0, "logprobs");
    assert_string_equal(json_string_value(json_array_get(json_object_get(l, "tokens"), 0)), " tok");
    assert_float_equal(json_real_value(json_array_get(json_object_get(l, "token_logprobs"), 0)),
                       -0.25, 1e-6);
    assert_int_equal(json_array_size(json_object_get(l, "top_logprobs")), 1);
    json_decref(j);
    oai_usage u = {1, 1, 0};
    j = load_sse(oai_completion_chunk_usage(&m, &u, NULL));
    assert_int_equal(json_array_size(json_object_get(j, "choices")), 0);
    json_decref(j);
}

static void models_and_health(void **state) {
    const char *ids[] = {"llava-v1.6-mistral-7b", "alias"};
    json_t *j = load(oai_models_json(ids, 2, 123, "llava"));
    assert_string_equal(jstr(j, "object"), "list");
    json_t *d = json_object_get(j, "data");
    assert_int_equal(json_array_size(d), 2);
    json_t *m0 = json_array_get(d, 0);
    assert_string_equal(jstr(m0, "id"), "llava-v1.6-mistral-7b");
    assert_string_equal(jstr(m0, "object"), "model");
    assert_int_equal(jint(m0, "created"), 123);
    assert_string_equal(jstr(m0, "owned_by"), "llava");
    json_decref(j);

    oai_health h = {.model = "llava",
                    .device = "cpu",
                    .uptime_s = 12.5,
                    .rss_bytes = 1 << 20,
                    .kv_bytes = 4096,
                    .kv_bytes_total = 8192,
                    .kv_used = 16,
                    .kv_capacity = 1024,
                    .running = 2,
                    .waiting = 3,
                    .queue_capacity = 64,
                    .parallel = 4};
    j = load(oai_health_json(&h));
    assert_string_equal(jstr(j, "status"), "healthy");
    assert_string_equal(jstr(j, "model"), "llava");
    assert_float_equal(json_real_value(json_object_get(j, "uptime_s")), 12.5, 0);
    assert_int_equal(jint(json_object_get(j, "memory"), "rss_bytes"), 1 << 20);
    json_t *q = json_object_get(j, "queue");
    assert_int_equal(jint(q, "running"), 2);
    assert_int_equal(jint(q, "waiting"), 3);
    assert_int_equal(jint(q, "capacity"), 64);
    assert_int_equal(jint(q, "parallel"), 4);
    assert_int_equal(jint(json_object_get(j, "memory"), "kv_bytes_total"), 8192);
    assert_int_equal(jint(json_object_get(j, "kv_cache"), "used"), 16);
    assert_int_equal(jint(json_object_get(j, "kv_cache"), "capacity"), 1024);
    assert_string_equal(jstr(j, "device"), "cpu");
    assert_null(json_object_get(j, "gpu_memory")); /* unknown: left out */
    json_decref(j);
    h.device = "cuda:1";
    h.has_gpu_memory = true;
    h.gpu_used = 5000000000;
    h.gpu_total = 80000000000;
    j = load(oai_health_json(&h));
    assert_string_equal(jstr(j, "device"), "cuda:1");
    assert_int_equal(jint(json_object_get(j, "gpu_memory"), "used_bytes"), 5000000000);
    assert_int_equal(jint(json_object_get(j, "gpu_memory"), "total_bytes"), 80000000000);
    json_decref(j);

    oai_error e;
    oai_fail(&e, LV_OK, OAI_HINT_LOADING, NULL, "model_loading", "Loading model.");
    assert_int_equal(e.status, 503);
    j = load(oai_error_json(&e));
    assert_string_equal(jstr(json_object_get(j, "error"), "code"), "model_loading");
    json_decref(j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_requests),
        cmocka_unit_test(body_too_large),
        cmocka_unit_test(chat_minimal),
        cmocka_unit_test(chat_every_field),
        cmocka_unit_test(chat_apply_keeps_defaults),
        cmocka_unit_test(completion_prompts),
        cmocka_unit_test(status_mapping),
        cmocka_unit_test(error_json),
        cmocka_unit_test(ids_unique),
        cmocka_unit_test(chat_response_shape),
        cmocka_unit_test(completion_response_shape),
        cmocka_unit_test(chat_stream_events),
        cmocka_unit_test(completion_stream_events),
        cmocka_unit_test(models_and_health),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
