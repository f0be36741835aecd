/* test_server_api.c - llava-server's API surface on the bundled demo model
 * (models/demo), the real binary on 127.0.0.1 with --parallel 4:
 *   - --config with the seed's keys: applied, accepted-and-not-needed,
 *     unknown (warned), bad values (exit 2 naming the key);
 *   - /health 503 while loading, then 200 with uptime, memory, queue, KV;
 *   - 16 concurrent requests (different images and prompts, greedy) each
 *     equal to the same request sent alone;
 *   - n > 1 (seeds seed, seed+1, ...), logprobs / top_logprobs in chat
 *     (plain and stream) and the legacy completions shape, logit_bias,
 *     image_url.detail "low" (fewer image tokens);
 *   - more than 40 kinds of bad input, each with its status and an OpenAI
 *     error body, the server serving on after each;
 *   - a client leaving mid-stream: /metrics shows running 0 and KV 0 again;
 *   - /metrics in Prometheus text; SIGTERM → exit 0 (no leak under ASan).
 * Outputs of the model are never hard-coded (it may be retrained): runs
 * are compared with each other. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/base64.h"
#include "base/buf.h"
#include "base/file.h"
#include "server_harness.h"

#include <jansson.h>
#include <sys/stat.h>
#include <zlib.h>

/* Under ASan (SANITIZED, server_harness.h) image requests use the base
 * view only (detail "low") and fewer tokens, so the program stays well
 * under two minutes; the release tree runs them in full. */

/* Whether s is valid UTF-8 (no overlongs, surrogates or values past U+10FFFF). */
static bool utf8_valid(const char *s) {
    const unsigned char *u = (const unsigned char *)s;
    while (*u) {
        int n = *u < 0x80 ? 0 : (*u >> 5) == 6 ? 1 : (*u >> 4) == 14 ? 2 : (*u >> 3) == 30 ? 3 : -1;
        if (n < 0) return false;
        uint32_t cp = n ? *u & (0x3F >> n) : *u;
        for (int k = 1; k <= n; k++) {
            if ((u[k] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (u[k] & 0x3F);
        }
        static const uint32_t least[] = {0, 0x80, 0x800, 0x10000};
        if (cp < least[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        u += n + 1;
    }
    return true;
}

/* head (a JSON object's text without its closing brace) with a logit_bias
 * that keeps the served model from ending: -100 on id 2 (the demo's </s>)
 * and on generation_config.json's eos_token_id (SmolVLM's
 * <end_of_utterance>). Static storage, one at a time. */
static const char *eos_bias(const char *head) {
    static char out[512];
    char path[1200];
    snprintf(path, sizeof path, "%.1100s/generation_config.json", srv_demo_model());
    json_t *g = json_load_file(path, 0, NULL), *e = json_object_get(g, "eos_token_id");
    long eos = json_is_array(e) ? (long)json_integer_value(json_array_get(e, 0))
                                : (long)json_integer_value(e);
    json_decref(g);
    if (eos > 0 && eos != 2)
        snprintf(out, sizeof out, "%s,\"logit_bias\":{\"2\":-100,\"%ld\":-100}}", head, eos);
    else
        snprintf(out, sizeof out, "%s,\"logit_bias\":{\"2\":-100}}", head);
    return out;
}

#define KEY  "sekret"
#define AUTH "Authorization: Bearer " KEY

static srv S;
static char media_dir[1024], tmp_dir[1024];

/* ---- helpers ------------------------------------------------------------------------------- */

static long post(const char *path, const char *json, char **out) {
    return srv_http(&S, "POST", path, json, strlen(json), AUTH, NULL, out);
}

static char *b64_of(const void *bytes, size_t len) {
    char *b64;
    assert_int_equal(lv_base64_encode(bytes, len, &b64, NULL), LV_OK);
    return b64;
}

static char *data_uri_bytes(const char *mime, const void *bytes, size_t len) {
    char *b64 = b64_of(bytes, len);
    char *uri = malloc(strlen(b64) + 64);
    sprintf(uri, "data:%s;base64,%s", mime, b64);
    free(b64);
    return uri;
}

static char *read_all(const char *path, size_t *len) {
    char *bytes;
    assert_int_equal(lv_read_file(path, 1u << 24, &bytes, len, NULL), LV_OK);
    return bytes;
}

static char *data_uri(const char *file) {
    size_t len;
    char *bytes = read_all(file, &len);
    char *uri = data_uri_bytes("image/png", bytes, len);
    free(bytes);
    return uri;
}

/* A chat body: one user turn with an image url (NULL: none) and text, plus extra fields. */
static char *chat_body(const char *url, const char *text, const char *extra) {
    json_t *parts = json_array();
    if (url)
        json_array_append_new(parts,
                              json_pack("{s:s,s:{s:s,s:s}}", "type", "image_url", "image_url",
                                        "url", url, "detail", SANITIZED ? "low" : "auto"));
    json_array_append_new(parts, json_pack("{s:s,s:s}", "type", "text", "text", text));
    json_t *o =
        json_pack("{s:s,s:i,s:f,s:[{s:s,s:o}]}", "model", "demo", "max_tokens", SANITIZED ? 12 : 24,
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

static json_t *post_json(const char *path, const char *body, long want) {
    char *out = NULL;
    long st = post(path, body, &out);
    if (st != want) fail_msg("POST %s: expected %ld, got %ld: %s", path, want, st, out ? out : "");
    json_t *o = json_loads(out ? out : "", 0, NULL);
    free(out);
    assert_non_null(o);
    return o;
}

static const char *choice_text(json_t *o, size_t i) {
    json_t *ch = json_array_get(json_object_get(o, "choices"), i);
    json_t *msg = json_object_get(ch, "message");
    return json_string_value(msg ? json_object_get(msg, "content") : json_object_get(ch, "text"));
}

static long usage_of(json_t *o, const char *key) {
    return (long)json_integer_value(json_object_get(json_object_get(o, "usage"), key));
}

/* A value of one metric line (name with labels exactly as printed), -1 if absent. */
/* The label /metrics puts first on every llava_* sample: the served name
 * (the seed config's model_name). */
#define MODEL_LABEL "model_name=\"LLaVA-Demo\""

/* The value of name (which may hold labels after the model's: "x{le=\"1\"}"). */
static double metric(const char *text, const char *name) {
    char series[512];
    const char *brace = strchr(name, '{');
    if (strncmp(name, "llava_", 6))
        snprintf(series, sizeof series, "%s", name);
    else if (brace)
        snprintf(series, sizeof series, "%.*s{" MODEL_LABEL ",%s", (int)(brace - name), name,
                 brace + 1);
    else
        snprintf(series, sizeof series, "%s{" MODEL_LABEL "}", name);
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (!strncmp(p, series, n) && p[n] == ' ') return atof(p + n + 1);
    return -1;
}

static char *get_metrics(void) {
    char *out = NULL;
    assert_int_equal(srv_http(&S, "GET", "/metrics", NULL, 0, NULL, NULL, &out), 200);
    return out;
}

/* ---- the server ------------------------------------------------------------------------------ */

static int start(void **state) {
    (void)state;
    snprintf(tmp_dir, sizeof tmp_dir, "%s", tu_tmpdir("server_api"));
    snprintf(media_dir, sizeof media_dir, "%.1000s/media", tmp_dir);
    mkdir(media_dir, 0755);
    /* The seed's file, as-is, with one key this server does not know. */
    char cfg[4096];
    snprintf(
        cfg, sizeof cfg,
        "{\"model_name\": \"LLaVA-Demo\", \"model_id\": \"%s\", \"device\": \"mps\",\n"
        " \"quantization\": \"int4\", \"max_tokens\": 9,\n"
        " \"image_processing\": {\"max_size\": 1024, \"min_size\": 16, \"format\": \"RGB\",\n"
        "   \"quality\": 95, \"maintain_aspect_ratio\": true},\n"
        " \"enhanced_memory_management\": {\"periodic_cleanup\": true, \"cleanup_interval\": 1,\n"
        "   \"adaptive_pressure_detection\": true, \"mlx_memory_clearing\": true,\n"
        "   \"model_reloading\": true},\n"
        " \"mlx_config\": {\"memory_pool_size\": \"8GB\", \"cache_size\": 512, \"batch_size\": "
        "1},\n"
        " \"future_key\": 1}\n",
        srv_demo_model());
    tu_write_file(tmp_dir, "seed.json", cfg, strlen(cfg));
    char cfg_path[1200], log[1200];
    snprintf(cfg_path, sizeof cfg_path, "%s/seed.json", tmp_dir);
    snprintf(log, sizeof log, "%s/server.log", tmp_dir);
    const char *argv[] = {"--config",  cfg_path,     "--port",
                          "0",         "--parallel", "4",
                          "--api-key", KEY,          "--allowed-local-media-path",
                          media_dir,   "--ctx-size", "1024",
                          "--timeout", "120",        NULL};
    if (!srv_start(&S, log, argv, "LLAVA_SERVER_TEST_LOAD_DELAY_MS=800")) return -1;
    return 0;
}

static int stop(void **state) {
    (void)state;
    if (S.pid > 0) kill(S.pid, SIGKILL), waitpid(S.pid, NULL, 0);
    return 0;
}

/* ---- tests ----------------------------------------------------------------------------------- */

static void test_health_loading_then_ready(void **state) {
    (void)state;
    char *out;
    assert_int_equal(srv_http(&S, "GET", "/health", NULL, 0, NULL, NULL, &out), 503);
    json_t *o = json_loads(out, 0, NULL);
    assert_non_null(json_object_get(json_object_get(o, "error"), "message"));
    json_decref(o);
    free(out);
    /* /metrics answers while loading, with the model not ready. */
    out = get_metrics();
    assert_true(metric(out, "llava_model_ready") == 0);
    free(out);
    assert_true(srv_wait_healthy(&S, 60));
    assert_int_equal(srv_http(&S, "GET", "/health", NULL, 0, NULL, NULL, &out), 200);
    o = json_loads(out, 0, NULL);
    free(out);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "healthy");
    assert_string_equal(json_string_value(json_object_get(o, "model")), "LLaVA-Demo");
    assert_true(json_real_value(json_object_get(o, "uptime_s")) > 0);
    assert_true(json_integer_value(json_object_get(json_object_get(o, "memory"), "rss_bytes")) > 0);
    json_t *q = json_object_get(o, "queue");
    assert_int_equal(json_integer_value(json_object_get(q, "capacity")), 64);
    assert_int_equal(json_integer_value(json_object_get(q, "parallel")), 4);
    assert_true(json_integer_value(json_object_get(json_object_get(o, "kv_cache"), "capacity")) >=
                4 * 1024);
    json_decref(o);
}

static void test_config_applied(void **state) {
    (void)state;
    assert_true(srv_wait_healthy(&S, 60));
    char *out;
    assert_int_equal(srv_http(&S, "GET", "/v1/models", NULL, 0, NULL, NULL, &out), 200);
    assert_non_null(strstr(out, "\"LLaVA-Demo\""));
    free(out);
    /* max_tokens 9 from the file is the default: a long answer stops at 9 tokens. */
    char *b = chat_body(NULL, "Describe the image.", NULL);
    json_t *x = json_loads(b, 0, NULL);
    json_object_del(x, "max_tokens");
    json_object_set_new(x, "logit_bias", json_pack("{s:i}", "2", -100)); /* no EOS */
    free(b);
    b = json_dumps(x, JSON_COMPACT);
    json_decref(x);
    json_t *o = post_json("/v1/chat/completions", b, 200);
    assert_true(usage_of(o, "completion_tokens") <= 9);
    json_decref(o);
    free(b);
    assert_true(srv_log_has(&S, "config enhanced_memory_management.model_reloading: accepted, "
                                "not needed: never needed here"));
    assert_true(srv_log_has(&S, "config device: accepted, not needed"));
    assert_true(srv_log_has(&S, "config mlx_config.batch_size: accepted, not needed"));
    assert_true(srv_log_has(&S, "config image_processing.max_size: applied"));
    assert_true(srv_log_has(&S, "config future_key: unknown key, ignored"));
}

/* Bad config files: exit 2 before loading anything, the message naming the key. */
static void test_config_errors(void **state) {
    (void)state;
    static const struct {
        const char *json, *needle;
    } cases[] = {
        {"{\"max_tokens\": \"many\"}", "max_tokens"},
        {"{\"max_tokens\": 0}", "max_tokens"},
        {"{\"image_processing\": {\"max_size\": -3}}", "image_processing.max_size"},
        {"{\"image_processing\": {\"min_size\": 500, \"max_size\": 100}}", "min_size"},
        {"{\"image_processing\": {\"padding_color\": [1, 2]}}", "image_processing.padding_color"},
        {"{\"image_processing\": {\"format\": \"CMYK\"}}", "image_processing.format"},
        {"{\"device\": \"tpu\"}", "device"},
        {"{\"quantization\": \"int3\"}", "quantization"},
        {"{\"enhanced_memory_management\": {\"model_reloading\": \"yes\"}}",
         "enhanced_memory_management.model_reloading"},
        {"{\"mlx_config\": []}", "mlx_config"},
        {"{\"model_name\": ", "not valid JSON"},
        {"[1]", "JSON object"},
    };
    for (size_t i = 0; i < LV_ARRAY_LEN(cases); i++) {
        tu_write_file(tmp_dir, "bad.json", cases[i].json, strlen(cases[i].json));
        char cmd[4096], *out = NULL;
        snprintf(cmd, sizeof cmd, "'%s/llava-server' --config '%s/bad.json' --model '%s' 2>&1",
                 tu_env("LLAVA_BIN_DIR"), tmp_dir, srv_demo_model());
        int rc = tu_run(cmd, &out);
        if (rc != 2 || !strstr(out ? out : "", cases[i].needle))
            fail_msg("config case %zu (%s): rc %d, output: %s", i, cases[i].json, rc,
                     out ? out : "");
        free(out);
    }
}

/* The requests of the concurrency test: sample image x question. */
static const char *const conc_images[] = {
    "sample_01_320x240.png", "sample_02_240x320.png", "sample_03_400x400.png",
    "sample_04_96x96.png",   "sample_05_360x120.png", "sample_06_120x360.png",
    "sample_07_200x100.png", "sample_08_100x200.png", "sample_09_256x256.png",
    "sample_10_300x200.png", "sample_11_150x150.png", "sample_12_384x160.png",
};
static const char *const conc_questions[] = {
    "Describe the image.",
    "What is in the image?",
    "Which shape is yellow?",
    "How many crosses are there?",
};

static void test_concurrent_equals_alone(void **state) {
    (void)state;
    assert_true(srv_wait_healthy(&S, 60));
    enum { N = 16 };
    char *bodies[N], *alone[N];
    for (int i = 0; i < N; i++) {
        char *uri = data_uri(srv_demo_sample(conc_images[i % 12]));
        bodies[i] = chat_body(i == 13 ? NULL : uri, conc_questions[(i * 7) % 4],
                              SANITIZED ? "{\"max_tokens\":12,\"seed\":1}"
                                        : "{\"max_tokens\":24,\"seed\":1}");
        free(uri);
        json_t *o = post_json("/v1/chat/completions", bodies[i], 200);
        alone[i] = strdup(choice_text(o, 0));
        json_decref(o);
    }
    /* All 16 at once. */
    CURLM *multi = curl_multi_init();
    CURL *h[N];
    srv_body out[N];
    struct curl_slist *hdr[N];
    memset(out, 0, sizeof out);
    for (int i = 0; i < N; i++) {
        h[i] = srv_handle(&S, "POST", "/v1/chat/completions", bodies[i], strlen(bodies[i]), AUTH,
                          NULL, &out[i], &hdr[i]);
        curl_multi_add_handle(multi, h[i]);
    }
    int running = 1;
    double peak_running = 0;
    while (running) {
        curl_multi_perform(multi, &running);
        curl_multi_poll(multi, NULL, 0, 100, NULL);
    }
    (void)peak_running;
    for (int i = 0; i < N; i++) {
        long code = 0;
        curl_easy_getinfo(h[i], CURLINFO_RESPONSE_CODE, &code);
        if (code != 200) fail_msg("concurrent request %d: status %ld: %s", i, code, out[i].data);
        json_t *o = json_loads(out[i].data, 0, NULL);
        assert_non_null(o);
        if (strcmp(choice_text(o, 0), alone[i]))
            fail_msg("request %d: alone \"%s\", concurrent \"%s\"", i, alone[i], choice_text(o, 0));
        json_decref(o);
        curl_multi_remove_handle(multi, h[i]);
        curl_easy_cleanup(h[i]);
        curl_slist_free_all(hdr[i]);
        free(out[i].data);
        free(bodies[i]);
        free(alone[i]);
    }
    curl_multi_cleanup(multi);
}

static void test_n_seeds_and_logprobs(void **state) {
    (void)state;
    assert_true(srv_wait_healthy(&S, 60));
    char *uri = data_uri(srv_demo_sample("sample_01_320x240.png"));
    /* n = 3 sampled: choice i uses seed + i, so choice 0 equals n = 1 with the
     * same seed and choice 1 equals n = 1 with seed + 1. */
    const char *q = "Describe the image.";
    char *b3 = chat_body(uri, q, "{\"n\":3,\"temperature\":1.5,\"seed\":42}");
    char *b1 = chat_body(uri, q, "{\"temperature\":1.5,\"seed\":42}");
    char *b1b = chat_body(uri, q, "{\"temperature\":1.5,\"seed\":43}");
    json_t *o3 = post_json("/v1/chat/completions", b3, 200);
    json_t *o1 = post_json("/v1/chat/completions", b1, 200);
    json_t *o1b = post_json("/v1/chat/completions", b1b, 200);
    assert_int_equal(json_array_size(json_object_get(o3, "choices")), 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(json_integer_value(json_object_get(
                             json_array_get(json_object_get(o3, "choices"), i), "index")),
                         i);
    assert_string_equal(choice_text(o3, 0), choice_text(o1, 0));
    assert_string_equal(choice_text(o3, 1), choice_text(o1b, 0));
    assert_int_equal(usage_of(o3, "prompt_tokens"), usage_of(o1, "prompt_tokens"));
    json_decref(o3), json_decref(o1), json_decref(o1b);
    free(b3), free(b1), free(b1b);

    /* logprobs, greedy: the chosen token is the top alternative; tokens spell the text. */
    char *bl = chat_body(uri, q, "{\"logprobs\":true,\"top_logprobs\":3}");
    json_t *o = post_json("/v1/chat/completions", bl, 200);
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
    json_t *content = json_object_get(json_object_get(ch, "logprobs"), "content");
    assert_true(json_array_size(content) > 0);
    /* The tokens' raw bytes, joined, are the text: "token" spells them (a
     * byte that is no valid UTF-8 there as "\xHH"), "bytes" holds them. */
    lv_buf spelled = {0};
    size_t i;
    json_t *t;
    json_array_foreach(content, i, t) {
        const char *tok = json_string_value(json_object_get(t, "token"));
        double lp = json_real_value(json_object_get(t, "logprob"));
        json_t *top = json_object_get(t, "top_logprobs"), *bytes = json_object_get(t, "bytes");
        assert_non_null(tok);
        assert_true(lp <= 0);
        assert_int_equal(json_array_size(top), 3);
        assert_string_equal(json_string_value(json_object_get(json_array_get(top, 0), "token")),
                            tok);
        if (!strstr(tok, "\\x")) assert_int_equal(json_array_size(bytes), strlen(tok));
        size_t k;
        json_t *b;
        json_array_foreach(bytes, k, b) {
            char c = (char)json_integer_value(b);
            lv_buf_append(&spelled, &c, 1);
        }
    }
    const char *text = choice_text(o, 0), *sp = spelled.data;
    while (*sp == ' ' && *text != ' ') sp++; /* the decoder strips the first space */
    if (utf8_valid(sp))
        assert_string_equal(sp, text);
    else /* bytes that are no UTF-8 (a random model's): the text has U+FFFD for them */
        assert_non_null(strstr(text, "\xEF\xBF\xBD"));

    /* The same through a stream: the deltas' logprobs name the same tokens. */
    char *bs = chat_body(uri, q, "{\"logprobs\":true,\"top_logprobs\":3,\"stream\":true}");
    char *out;
    assert_int_equal(post("/v1/chat/completions", bs, &out), 200);
    lv_buf streamed = {0};
    for (char *p = out; (p = strstr(p, "data: "));) {
        p += 6;
        char *end = strstr(p, "\n\n");
        assert_non_null(end);
        *end = '\0';
        json_t *ev = json_loads(p, 0, NULL);
        json_t *c = json_object_get(
            json_object_get(json_array_get(json_object_get(ev, "choices"), 0), "logprobs"),
            "content");
        json_array_foreach(c, i, t) {
            size_t k;
            json_t *b;
            json_array_foreach(json_object_get(t, "bytes"), k, b) {
                char byte = (char)json_integer_value(b);
                lv_buf_append(&streamed, &byte, 1);
            }
        }
        json_decref(ev);
        p = end + 2;
    }
    assert_true(streamed.len == spelled.len && !memcmp(streamed.data, spelled.data, spelled.len));
    lv_buf_free(&streamed);
    free(out);
    free(bs);

    /* logit_bias -100 on the first answer token: greedy picks another one. */
    json_t *first = json_array_get(content, 0);
    char tb[160];
    snprintf(tb, sizeof tb, "{\"content\":\"%s\"}",
             json_string_value(json_object_get(first, "token")));
    json_t *tk = post_json("/tokenize", tb, 200);
    json_t *ids = json_object_get(tk, "tokens");
    if (json_array_size(ids) == 1) {
        char extra[160];
        snprintf(extra, sizeof extra, "{\"logprobs\":true,\"logit_bias\":{\"%lld\":-100}}",
                 (long long)json_integer_value(json_array_get(ids, 0)));
        char *bb = chat_body(uri, q, extra);
        json_t *ob = post_json("/v1/chat/completions", bb, 200);
        json_t *c0 = json_array_get(
            json_object_get(
                json_object_get(json_array_get(json_object_get(ob, "choices"), 0), "logprobs"),
                "content"),
            0);
        assert_string_not_equal(json_string_value(json_object_get(c0, "token")),
                                json_string_value(json_object_get(first, "token")));
        json_decref(ob);
        free(bb);
    }
    json_decref(tk);
    lv_buf_free(&spelled);
    json_decref(o);
    free(bl);

    /* Completions: the legacy shape, arrays of one length. */
    json_t *oc = post_json("/v1/completions",
                           "{\"prompt\":[\"Hello\",\"A red\"],\"max_tokens\":5,\"logprobs\":2,"
                           "\"n\":2,\"temperature\":0}",
                           200);
    assert_int_equal(json_array_size(json_object_get(oc, "choices")), 4);
    json_t *lp = json_object_get(json_array_get(json_object_get(oc, "choices"), 3), "logprobs");
    size_t nt = json_array_size(json_object_get(lp, "tokens"));
    assert_true(nt > 0);
    assert_int_equal(json_array_size(json_object_get(lp, "token_logprobs")), nt);
    assert_int_equal(json_array_size(json_object_get(lp, "top_logprobs")), nt);
    assert_int_equal(json_array_size(json_object_get(lp, "text_offset")), nt);
    assert_true(json_object_size(json_array_get(json_object_get(lp, "top_logprobs"), 0)) >= 1);
    assert_string_equal(choice_text(oc, 2), choice_text(oc, 3)); /* greedy: n copies agree */
    json_decref(oc);
    free(uri);
}

static char *detail_body(const char *uri, const char *detail) {
    json_t *parts = json_pack("[{s:s,s:{s:s,s:s}},{s:s,s:s}]", "type", "image_url", "image_url",
                              "url", uri, "detail", detail, "type", "text", "text",
                              "Describe the picture in one sentence.");
    json_t *body = json_pack("{s:i,s:f,s:[{s:s,s:o}]}", "max_tokens", SANITIZED ? 8 : 24,
                             "temperature", 0.0, "messages", "role", "user", "content", parts);
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return s;
}

static void test_detail_low(void **state) {
    (void)state;
    assert_true(srv_wait_healthy(&S, 60));
    char *uri = data_uri(srv_demo_sample("sample_03_400x400.png"));
    char *low = detail_body(uri, "low"), *high = detail_body(uri, "high");
    char *aut = detail_body(uri, "auto");
    json_t *ol = post_json("/v1/chat/completions", low, 200);
    json_t *oh = post_json("/v1/chat/completions", high, 200);
    json_t *oa = post_json("/v1/chat/completions", aut, 200);
    long pl = usage_of(ol, "prompt_tokens"), ph = usage_of(oh, "prompt_tokens");
    print_message("detail low: %ld prompt tokens, high: %ld\n", pl, ph);
    assert_true(pl < ph);
    assert_int_equal(usage_of(oa, "prompt_tokens"), ph); /* auto = high = full anyres */
    assert_string_equal(choice_text(oa, 0), choice_text(oh, 0));
    assert_true(strlen(choice_text(ol, 0)) > 0);
    json_decref(ol), json_decref(oh), json_decref(oa);
    free(low), free(high), free(aut), free(uri);
}

/* A PNG whose header claims w x h (valid signature, IHDR with its CRC), no pixels. */
static size_t png_header(uint8_t *p, uint32_t w, uint32_t h) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(p, sig, 8);
    uint8_t *c = p + 8;
    c[0] = 0, c[1] = 0, c[2] = 0, c[3] = 13;
    memcpy(c + 4, "IHDR", 4);
    uint8_t *d = c + 8;
    d[0] = w >> 24, d[1] = w >> 16, d[2] = w >> 8, d[3] = w;
    d[4] = h >> 24, d[5] = h >> 16, d[6] = h >> 8, d[7] = h;
    d[8] = 8, d[9] = 2, d[10] = 0, d[11] = 0, d[12] = 0; /* 8-bit RGB */
    uLong crc = crc32(0, c + 4, 17);
    uint8_t *e = d + 13;
    e[0] = crc >> 24, e[1] = crc >> 16, e[2] = crc >> 8, e[3] = crc;
    /* an empty IDAT and IEND */
    static const uint8_t tail[] = {0, 0, 0, 0, 'I', 'D', 'A', 'T', 0x35, 0xaf, 0x06, 0x1e,
                                   0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xae, 0x42, 0x60, 0x82};
    memcpy(e + 4, tail, sizeof tail);
    return 8 + 25 + sizeof tail;
}

typedef struct {
    const char *what, *path, *body, *header;
    long status;
} bad_case;

static void test_bad_inputs(void **state) {
    (void)state;
    assert_true(srv_wait_healthy(&S, 60));
    size_t png_len;
    char *png = read_all(srv_demo_sample("sample_04_96x96.png"), &png_len);
    char *trunc_uri = data_uri_bytes("image/png", png, 60 < png_len ? 60 : png_len);
    char *corrupt = malloc(png_len);
    memcpy(corrupt, png, png_len);
    /* the compressed pixel data's zlib header broken (and the bytes after it) */
    char *idat = NULL;
    for (size_t i = 0; !idat && i + 4 < png_len; i++)
        if (!memcmp(corrupt + i, "IDAT", 4)) idat = corrupt + i;
    assert_non_null(idat);
    for (char *p = idat + 4; p < idat + 40 && p < corrupt + png_len; p++) *p = (char)0xff;
    char *corrupt_uri = data_uri_bytes("image/png", corrupt, png_len);
    uint8_t big[128];
    size_t big_len = png_header(big, 10000, 10000); /* 100 megapixels in 57 bytes */
    char *big_uri = data_uri_bytes("image/png", big, big_len);
    char *ok_uri = data_uri_bytes("image/png", png, png_len);
    char outside[1200], missing[1200], private_url[128];
    snprintf(outside, sizeof outside, "file://%s", srv_demo_sample("sample_04_96x96.png"));
    snprintf(missing, sizeof missing, "file://%s/missing.png", media_dir);
    snprintf(private_url, sizeof private_url, "http://127.0.0.1:%d/health", S.port);
    /* 17 images (the limit is 16). */
    json_t *many = json_array();
    for (int i = 0; i < 17; i++)
        json_array_append_new(
            many, json_pack("{s:s,s:{s:s}}", "type", "image_url", "image_url", "url", ok_uri));
    json_t *mb = json_pack("{s:[{s:s,s:o}]}", "messages", "role", "user", "content", many);
    char *b_many = json_dumps(mb, JSON_COMPACT);
    json_decref(mb);
    /* A prompt beyond the 1024-token context. */
    lv_buf longtext = {0};
    for (int i = 0; i < 1500; i++) lv_buf_puts(&longtext, "red star ");
    char *b_long = chat_body(NULL, longtext.data, NULL);
    lv_buf_free(&longtext);

    char *b[40];
    int nb = 0;
#define CHAT(url, text, extra) (b[nb++] = chat_body(url, text, extra))
    const bad_case cases[] = {
        {"malformed JSON", "/v1/chat/completions", "{not json", NULL, 400},
        {"body is an array", "/v1/chat/completions", "[1,2]", NULL, 400},
        {"empty body", "/v1/chat/completions", "", NULL, 400},
        {"no messages", "/v1/chat/completions", "{}", NULL, 400},
        {"messages a string", "/v1/chat/completions", "{\"messages\":\"hi\"}", NULL, 400},
        {"empty messages", "/v1/chat/completions", "{\"messages\":[]}", NULL, 400},
        {"message a number", "/v1/chat/completions", "{\"messages\":[5]}", NULL, 400},
        {"no role", "/v1/chat/completions", "{\"messages\":[{\"content\":\"x\"}]}", NULL, 400},
        {"unknown role", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", NULL, 400},
        {"role a number", "/v1/chat/completions", "{\"messages\":[{\"role\":1,\"content\":\"x\"}]}",
         NULL, 400},
        {"content a number", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", NULL, 400},
        {"no content", "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\"}]}", NULL, 400},
        {"unknown part type", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"audio\"}]}]}", NULL, 400},
        {"text part without text", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}", NULL, 400},
        {"image_url without url", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}}]"
         "}]}",
         NULL, 400},
        {"image url a number", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{"
         "\"url\":5}}]}]}",
         NULL, 400},
        {"bad detail", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{"
         "\"url\":\"data:image/png;base64,AAAA\",\"detail\":\"ultra\"}}]}]}",
         NULL, 400},
        {"bad base64", "/v1/chat/completions", CHAT("data:image/png;base64,@@@@", "x", NULL), NULL,
         400},
        {"data: URI not an image type", "/v1/chat/completions",
         CHAT("data:text/plain;base64,aGVsbG8=", "x", NULL), NULL, 400},
        {"bytes not an image", "/v1/chat/completions",
         CHAT("data:image/png;base64,aGVsbG8gd29ybGQ=", "x", NULL), NULL, 400},
        {"truncated PNG", "/v1/chat/completions", CHAT(trunc_uri, "x", NULL), NULL, 400},
        {"corrupt PNG", "/v1/chat/completions", CHAT(corrupt_uri, "x", NULL), NULL, 400},
        {"100-megapixel PNG", "/v1/chat/completions", CHAT(big_uri, "x", NULL), NULL, 413},
        {"ftp:// URL", "/v1/chat/completions", CHAT("ftp://example.com/a.png", "x", NULL), NULL,
         400},
        {"file:// outside the allowed dir", "/v1/chat/completions", CHAT(outside, "x", NULL), NULL,
         400},
        {"file:// missing", "/v1/chat/completions", CHAT(missing, "x", NULL), NULL, 400},
        {"http:// to loopback", "/v1/chat/completions", CHAT(private_url, "x", NULL), NULL, 400},
        {"17 images", "/v1/chat/completions", b_many, NULL, 400},
        {"prompt beyond the context", "/v1/chat/completions", b_long, NULL, 400},
        {"<image> in text", "/v1/chat/completions", CHAT(NULL, "two <image> tags <image>", NULL),
         NULL, 400},
        {"max_tokens -5", "/v1/chat/completions", CHAT(NULL, "x", "{\"max_tokens\":-5}"), NULL,
         400},
        {"max_tokens 10^9", "/v1/chat/completions", CHAT(NULL, "x", "{\"max_tokens\":1000000000}"),
         NULL, 400},
        {"max_tokens a string", "/v1/chat/completions", CHAT(NULL, "x", "{\"max_tokens\":\"ten\"}"),
         NULL, 400},
        {"temperature a string", "/v1/chat/completions",
         CHAT(NULL, "x", "{\"temperature\":\"hot\"}"), NULL, 400},
        {"temperature 5", "/v1/chat/completions", CHAT(NULL, "x", "{\"temperature\":5}"), NULL,
         400},
        {"top_p 2", "/v1/chat/completions", CHAT(NULL, "x", "{\"top_p\":2}"), NULL, 400},
        {"n 0", "/v1/chat/completions", CHAT(NULL, "x", "{\"n\":0}"), NULL, 400},
        {"n 100", "/v1/chat/completions", CHAT(NULL, "x", "{\"n\":100}"), NULL, 400},
        {"n a string", "/v1/chat/completions", CHAT(NULL, "x", "{\"n\":\"two\"}"), NULL, 400},
        {"top_logprobs 21", "/v1/chat/completions",
         CHAT(NULL, "x", "{\"logprobs\":true,\"top_logprobs\":21}"), NULL, 400},
        {NULL, NULL, NULL, NULL, 0},
    };
    const bad_case more[] = {
        {"top_logprobs without logprobs", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}", NULL, 400},
        {"logprobs a string", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":\"yes\"}", NULL, 400},
        {"logit_bias an array", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logit_bias\":[1]}", NULL, 400},
        {"logit_bias key not an id", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logit_bias\":{\"abc\":1}}", NULL,
         400},
        {"logit_bias 500", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logit_bias\":{\"5\":500}}", NULL,
         400},
        {"logit_bias id beyond the vocabulary", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logit_bias\":{\"99999\":1}}",
         NULL, 400},
        {"5 stop strings", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[\"a\",\"b\",\"c\",\"d\","
         "\"e\"]}",
         NULL, 400},
        {"stop a number", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":5}", NULL, 400},
        {"empty stop", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":\"\"}", NULL, 400},
        {"stream a string", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":\"yes\"}", NULL, 400},
        {"stream_options without stream", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream_options\":{"
         "\"include_usage\":true}}",
         NULL, 400},
        {"seed a string", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"seed\":\"x\"}", NULL, 400},
        {"frequency_penalty 3", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"frequency_penalty\":3}", NULL,
         400},
        {"presence_penalty -3", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"presence_penalty\":-3}", NULL,
         400},
        {"top_k a string", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_k\":\"a\"}", NULL, 400},
        {"model a number", "/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"model\":5}", NULL, 400},
        {"wrong API key", "/v1/chat/completions", "{}", "Authorization: Bearer wrong", 401},
        {"wrong X-Api-Key", "/v1/chat/completions", "{}", "X-Api-Key: wrong", 401},
        {"no API key", "/v1/chat/completions", "{}", "X-Nothing: 1", 401},
        {"completions: prompt a number", "/v1/completions", "{\"prompt\":5}", NULL, 400},
        {"completions: token out of vocabulary", "/v1/completions", "{\"prompt\":[99999999]}", NULL,
         400},
        {"completions: empty token list", "/v1/completions", "{\"prompt\":[]}", NULL, 400},
        {"completions: logprobs 6", "/v1/completions", "{\"prompt\":\"x\",\"logprobs\":6}", NULL,
         400},
        {"tokenize: content a number", "/tokenize", "{\"content\":5}", NULL, 400},
        {"detokenize: negative id", "/detokenize", "{\"tokens\":[-1]}", NULL, 400},
        {"unknown path", "/v1/nothing", "{}", NULL, 404},
        {NULL, NULL, NULL, NULL, 0},
    };
#undef CHAT
    int n_kinds = 0;
    const bad_case *lists[] = {cases, more};
    for (int l = 0; l < 2; l++)
        for (const bad_case *k = lists[l]; k->what; k++, n_kinds++) {
            char *out = NULL;
            long st = srv_http(&S, "POST", k->path, k->body, strlen(k->body),
                               k->header ? k->header : AUTH, NULL, &out);
            if (st != k->status)
                fail_msg("%s: expected %ld, got %ld: %s", k->what, k->status, st, out ? out : "");
            json_t *o = json_loads(out ? out : "", 0, NULL);
            const char *msg =
                json_string_value(json_object_get(json_object_get(o, "error"), "message"));
            if (!msg || strlen(msg) < 10)
                fail_msg("%s: no clear OpenAI error body: %s", k->what, out ? out : "");
            if (getenv("LLAVA_TEST_VERBOSE")) print_message("%-36s %ld %s\n", k->what, st, msg);
            json_decref(o);
            free(out);
        }
    /* Method not allowed, and a body over the 32 MiB cap. */
    assert_int_equal(srv_http(&S, "GET", "/v1/chat/completions", NULL, 0, AUTH, NULL, NULL), 405);
    n_kinds++;
    size_t huge_len = (32u << 20) + 16;
    char *huge = malloc(huge_len);
    memset(huge, ' ', huge_len);
    assert_int_equal(srv_http(&S, "POST", "/v1/chat/completions", huge, huge_len, AUTH, NULL, NULL),
                     413);
    n_kinds++;
    free(huge);
    print_message("%d kinds of bad input answered\n", n_kinds);
    assert_true(n_kinds >= 40);

    /* Still serving: a good request with an image, and any model name is accepted. */
    char *good =
        chat_body(ok_uri, "Which shape is yellow?", "{\"model\":\"gpt-4o\",\"max_tokens\":4}");
    json_t *o = post_json("/v1/chat/completions", good, 200);
    assert_true(usage_of(o, "completion_tokens") >= 1);
    json_decref(o);
    free(good);
    /* The 400s and the 413 are counted in /metrics. */
    char *m = get_metrics();
    assert_true(
        metric(m, "llava_requests_total{endpoint=\"/v1/chat/completions\",status=\"400\"}") >= 30);
    assert_true(
        metric(m, "llava_requests_total{endpoint=\"/v1/chat/completions\",status=\"413\"}") >= 2);
    free(m);

    for (int i = 0; i < nb; i++) free(b[i]);
    free(b_many), free(b_long), free(png), free(trunc_uri), free(corrupt), free(corrupt_uri);
    free(big_uri), free(ok_uri);
}

/* While the stream runs (called from the write callback): the sequence is counted. */
static double seen_running = -1, seen_kv = -1;
static void scrape_now(void *ud) {
    (void)ud;
    char *m = get_metrics();
    seen_running = metric(m, "llava_requests_running");
    seen_kv = metric(m, "llava_kv_cache_used_positions");
    free(m);
}

static void test_disconnect_frees_sequence(void **state) {
    (void)state;
    assert_true(srv_wait_healthy(&S, 60));
    /* EOS banned: the answer would run to 900 tokens. */
    char *b =
        chat_body(NULL, "Describe the image.", eos_bias("{\"stream\":true,\"max_tokens\":900"));
    srv_body out = {.stop_after = 1500, .on_stop = scrape_now};
    struct curl_slist *h;
    CURL *c = srv_handle(&S, "POST", "/v1/chat/completions", b, strlen(b), AUTH, NULL, &out, &h);
    curl_easy_perform(c); /* ends with a write error: we hung up */
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(out.data);
    free(b);
    assert_true(seen_running >= 1);
    assert_true(seen_kv > 0);
    /* The server notices at its next write, cancels, and the worker frees the sequence. */
    double running = -1, kv = -1;
    for (int i = 0; i < 200; i++) {
        char *m = get_metrics();
        running = metric(m, "llava_requests_running");
        kv = metric(m, "llava_kv_cache_used_positions");
        free(m);
        if (running == 0 && kv == 0) break;
        srv_sleep_ms(50);
    }
    print_message("during the stream: running %.0f, KV %.0f; after: running %.0f, KV %.0f\n",
                  seen_running, seen_kv, running, kv);
    assert_true(running == 0 && kv == 0);
    assert_true(srv_log_has(&S, "client disconnected"));

    /* A plain (non-stream) request whose client gives up after 0.1 s: the
     * server sees the hang-up while waiting and cancels it too. Eight choices
     * to the end of the 1024-token context, 8,100 tokens: about 0.35 s on the
     * smallest model served here (SmolVLM's 64-wide fixture decodes some 24k
     * tokens a second), far more than 0.1 s on any machine. */
    b = chat_body(NULL, "Describe the image.", eos_bias("{\"max_tokens\":3000,\"n\":8"));
    srv_body plain = {0};
    c = srv_handle(&S, "POST", "/v1/chat/completions", b, strlen(b), AUTH, NULL, &plain, &h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 100L);
    assert_int_equal(curl_easy_perform(c), CURLE_OPERATION_TIMEDOUT);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(plain.data);
    free(b);
    for (int i = 0; i < 200; i++) {
        char *m = get_metrics();
        running = metric(m, "llava_requests_running");
        kv = metric(m, "llava_kv_cache_used_positions");
        free(m);
        if (running == 0 && kv == 0 && srv_log_has(&S, "client disconnected while waiting")) break;
        srv_sleep_ms(50);
    }
    assert_true(running == 0 && kv == 0);
    assert_true(srv_log_has(&S, "client disconnected while waiting; cancelling"));
}

static void test_metrics_text(void **state) {
    (void)state;
    assert_true(srv_wait_healthy(&S, 60));
    char *m = get_metrics();
    static const char *const names[] = {
        "# TYPE llava_requests_total counter",
        "# TYPE llava_time_to_first_token_seconds histogram",
        "# TYPE llava_time_per_output_token_seconds histogram",
        "# TYPE llava_e2e_request_latency_seconds histogram",
        "llava_time_to_first_token_seconds_bucket{" MODEL_LABEL ",le=\"+Inf\"}",
        "# TYPE llava_requests_running gauge",
        "# TYPE llava_requests_waiting gauge",
        "# TYPE llava_kv_cache_used_bytes gauge",
        "# TYPE process_resident_memory_bytes gauge",
    };
    for (size_t i = 0; i < LV_ARRAY_LEN(names); i++)
        if (!strstr(m, names[i])) fail_msg("/metrics lacks %s", names[i]);
    assert_true(metric(m, "llava_prompt_tokens_total") > 0);
    assert_true(metric(m, "llava_generation_tokens_total") > 0);
    assert_true(metric(m, "llava_e2e_request_latency_seconds_count") > 0);
    assert_true(
        metric(m, "llava_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"}") > 0);
    assert_true(metric(m, "process_resident_memory_bytes") > 0);
    assert_true(metric(m, "llava_kv_cache_total_bytes") > 0);
    /* the memory governor: a budget by default (the cgroup's or what is available) */
    assert_true(metric(m, "llava_memory_budget_bytes") > 0);
    assert_true(metric(m, "llava_memory_used_bytes") > 0);
    assert_true(metric(m, "llava_memory_pressure") == 0);
    assert_true(metric(m, "llava_memory_refused_total") == 0);
    free(m);
}

static long cached_of(json_t *o) {
    json_t *d = json_object_get(json_object_get(o, "usage"), "prompt_tokens_details");
    return (long)json_integer_value(json_object_get(d, "cached_tokens"));
}

/* A chat body of the given messages (a JSON array, taken). */
static char *messages_body(json_t *messages) {
    json_t *o = json_pack("{s:s,s:i,s:f,s:o}", "model", "demo", "max_tokens", SANITIZED ? 12 : 24,
                          "temperature", 0.0, "messages", messages);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* The prefix cache as clients see it: a follow-up resending the history
 * has the first turn's prompt cached (usage.prompt_tokens_details), so does
 * a second client with the same long system prompt; /metrics counts them. */
static void test_prefix_cache_usage(void **state) {
    (void)state;
    assert_true(srv_wait_healthy(&S, 60));
    char *uri = data_uri(srv_demo_sample("sample_02_240x320.png"));
    json_t *image = json_pack("{s:s,s:{s:s,s:s}}", "type", "image_url", "image_url", "url", uri,
                              "detail", SANITIZED ? "low" : "auto");
    json_t *turn1 = json_pack("{s:s,s:[O,{s:s,s:s}]}", "role", "user", "content", image, "type",
                              "text", "text", "Which shapes are there?");
    char *b1 = messages_body(json_pack("[O]", turn1));
    json_t *o1 = post_json("/v1/chat/completions", b1, 200);
    char *b2 = messages_body(json_pack("[O,{s:s,s:s},{s:s,s:s}]", turn1, "role", "assistant",
                                       "content", choice_text(o1, 0), "role", "user", "content",
                                       "Which color is the largest one?"));
    json_t *o2 = post_json("/v1/chat/completions", b2, 200);
    print_message("turn 2: %ld of %ld prompt tokens cached (turn 1: %ld)\n", cached_of(o2),
                  usage_of(o2, "prompt_tokens"), usage_of(o1, "prompt_tokens"));
    assert_true(cached_of(o2) >= usage_of(o1, "prompt_tokens"));
    assert_true(cached_of(o2) < usage_of(o2, "prompt_tokens"));

    lv_buf sys = {0};
    for (int i = 0; i < 12; i++) {
        char rule[96];
        snprintf(rule, sizeof rule, "Rule %d: answer in few words and name every colour. ", i + 1);
        assert_int_equal(lv_buf_append(&sys, rule, strlen(rule)), LV_OK);
    }
    assert_int_equal(lv_buf_append(&sys, "", 1), LV_OK);
    char *ba = messages_body(json_pack("[{s:s,s:s},{s:s,s:s}]", "role", "system", "content",
                                       sys.data, "role", "user", "content", "Hello!"));
    char *bb = messages_body(json_pack("[{s:s,s:s},{s:s,s:s}]", "role", "system", "content",
                                       sys.data, "role", "user", "content", "Who are you?"));
    json_t *oa = post_json("/v1/chat/completions", ba, 200);
    json_t *ob = post_json("/v1/chat/completions", bb, 200);
    print_message("second client: %ld of %ld prompt tokens cached\n", cached_of(ob),
                  usage_of(ob, "prompt_tokens"));
    assert_int_equal(cached_of(oa), 0);
    assert_true(cached_of(ob) > 100);

    char *m = get_metrics();
    assert_true(metric(m, "llava_prefix_cache_hits_total") >= 2);
    assert_true(metric(m, "llava_prefix_cache_tokens_total") >= cached_of(o2) + cached_of(ob));
    assert_true(metric(m, "llava_prefix_cache_sequences") >= 1);
    double hits = metric(m, "llava_image_cache_hits_total");
    assert_true(hits >= 0);
    assert_true(metric(m, "llava_image_cache_misses_total") >= 1); /* turn 1's image */
    assert_true(metric(m, "llava_image_cache_evictions_total") >= 0);
    assert_true(metric(m, "llava_image_cache_bytes") > 0);
    assert_true(metric(m, "llava_image_cache_budget_bytes") > 0);
    free(m);

    /* a new conversation about turn 1's image after a system prompt (the
     * template puts a turn's images first: the system text keeps the
     * prefix cache from reaching the image): its rows come from the image
     * cache */
    json_t *turn3 = json_pack("{s:s,s:[O,{s:s,s:s}]}", "role", "user", "content", image, "type",
                              "text", "text", "How many shapes does it show?");
    char *b3 = messages_body(
        json_pack("[{s:s,s:s},O]", "role", "system", "content", "Answer briefly.", turn3));
    json_t *o3 = post_json("/v1/chat/completions", b3, 200);
    print_message("new conversation about the same image: %ld of %ld prompt tokens cached\n",
                  cached_of(o3), usage_of(o3, "prompt_tokens"));
    m = get_metrics();
    assert_true(metric(m, "llava_image_cache_hits_total") >= hits + 1);
    free(m);
    json_decref(o3), json_decref(turn3), free(b3);
    json_decref(o1), json_decref(o2), json_decref(oa), json_decref(ob);
    json_decref(turn1), json_decref(image);
    free(b1), free(b2), free(ba), free(bb), free(uri);
    lv_buf_free(&sys);
}

/* --model text.gguf --mmproj mmproj.gguf: the demo model converted by
 * llava-quantize (gguf-f16: its weights are float16 already) answers as the
 * safetensors directory does. Skipped when llava-quantize is not built. */
static void test_gguf_pair_same_answers(void **state) {
    (void)state;
    char quant[1200], out_dir[1200], cmd[4096], *out = NULL;
    snprintf(quant, sizeof quant, "%.1100s/llava-quantize", tu_env("LLAVA_BIN_DIR"));
    if (access(quant, X_OK)) {
        print_message("SKIP: %s is not built\n", quant);
        skip();
    }
    assert_true(srv_wait_healthy(&S, 60));
    /* The served model as a GGUF pair: llava-quantize's f16 (lossless for the
     * demo's fp16 weights), or LLAVA_TEST_MODEL_GGUF's pair (an fp32 model's
     * as llama.cpp's converter wrote it, for the SmolVLM run) */
    const char *given = getenv("LLAVA_TEST_MODEL_GGUF");
    if (given && *given) {
        snprintf(out_dir, sizeof out_dir, "%.1100s", given);
    } else {
        snprintf(out_dir, sizeof out_dir, "%.1100s/gguf", tmp_dir);
        snprintf(cmd, sizeof cmd, "'%s' --model '%s' --out '%s' --format gguf-f16 --force 2>&1",
                 quant, srv_demo_model(), out_dir);
        int rc = tu_run(cmd, &out);
        if (rc) fail_msg("llava-quantize: %s", out);
        free(out);
    }
    char text[1300], mmproj[1300], log[1300];
    snprintf(text, sizeof text, "%s/text.gguf", out_dir);
    snprintf(mmproj, sizeof mmproj, "%s/mmproj.gguf", out_dir);
    snprintf(log, sizeof log, "%s/gguf.log", tmp_dir);
    srv g;
    const char *argv[] = {"--model", text, "--mmproj", mmproj, "--port", "0", NULL};
    assert_true(srv_start(&g, log, argv, NULL));
    assert_true(srv_wait_healthy(&g, 60));
    static const char *const images[] = {"sample_02_240x320.png", "sample_05_360x120.png"};
    for (size_t i = 0; i < LV_ARRAY_LEN(images); i++) {
        char *uri = data_uri(srv_demo_sample(images[i]));
        char *b = chat_body(uri, "What is in the image?", NULL);
        json_t *want = post_json("/v1/chat/completions", b, 200);
        char *got_text = NULL;
        assert_int_equal(
            srv_http(&g, "POST", "/v1/chat/completions", b, strlen(b), NULL, NULL, &got_text), 200);
        json_t *got = json_loads(got_text, 0, NULL);
        assert_non_null(got);
        assert_string_equal(choice_text(got, 0), choice_text(want, 0));
        assert_int_equal(usage_of(got, "prompt_tokens"), usage_of(want, "prompt_tokens"));
        json_decref(want), json_decref(got);
        free(got_text), free(b), free(uri);
    }
    assert_int_equal(srv_stop(&g), 0);
}

static void test_sigterm_exits_zero(void **state) {
    (void)state;
    assert_true(srv_wait_healthy(&S, 60));
    assert_int_equal(srv_stop(&S), 0);
}

/* response_format json_schema: the answer is JSON valid for the schema (n
 * choices each); json_object gives an object; a keyword the server cannot
 * enforce, a bad grammar and bad tools are 400s naming the field. */
static void test_structured_outputs(void **state) {
    (void)state;
    assert_true(srv_wait_healthy(&S, 60));
    char *uri = data_uri(srv_demo_sample("sample_01_320x240.png"));
    const char *schema =
        "{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"shapes\",\"strict\":true,"
        "\"schema\":{\"type\":\"object\",\"properties\":{\"shape\":{\"enum\":[\"circle\","
        "\"square\",\"cross\"]},\"count\":{\"type\":\"integer\"}},\"required\":[\"shape\","
        "\"count\"],\"additionalProperties\":false}}}";
    char extra[1024];
    snprintf(extra, sizeof extra,
             "{\"response_format\":%s,\"n\":3,\"temperature\":1.0,\"seed\":5,\"max_tokens\":60}",
             schema);
    char *body = chat_body(uri, "Describe the image.", extra);
    json_t *o = post_json("/v1/chat/completions", body, 200);
    for (size_t k = 0; k < 3; k++) {
        json_t *v = json_loads(choice_text(o, k), 0, NULL);
        if (!v) fail_msg("choice %zu is not JSON: %s", k, choice_text(o, k));
        const char *shape = json_string_value(json_object_get(v, "shape"));
        assert_non_null(shape);
        assert_true(!strcmp(shape, "circle") || !strcmp(shape, "square") ||
                    !strcmp(shape, "cross"));
        assert_true(json_is_integer(json_object_get(v, "count")));
        assert_int_equal(json_object_size(v), 2);
        json_decref(v);
    }
    json_decref(o);
    free(body);
    /* refusals */
    static const struct {
        const char *extra, *param;
    } bad[] = {
        {"{\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
         "\"schema\":{\"type\":\"integer\",\"minimum\":3}}}}",
         "response_format.json_schema.schema"},
        {"{\"response_format\":{\"type\":\"yaml\"}}", "response_format.type"},
        {"{\"grammar\":\"root ::= undefined-rule\"}", "grammar"},
        {"{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f g\"}}]}",
         "tools[0].function.name"},
        {"{\"tool_choice\":\"required\"}", "tool_choice"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        body = chat_body(NULL, "hi", bad[i].extra);
        o = post_json("/v1/chat/completions", body, 400);
        const char *param =
            json_string_value(json_object_get(json_object_get(o, "error"), "param"));
        if (!param || strcmp(param, bad[i].param))
            fail_msg("case %zu: param %s, want %s", i, param ? param : "(null)", bad[i].param);
        json_decref(o);
        free(body);
    }
    free(uri);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_loading_then_ready),
        cmocka_unit_test(test_config_applied),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_concurrent_equals_alone),
        cmocka_unit_test(test_n_seeds_and_logprobs),
        cmocka_unit_test(test_detail_low),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_disconnect_frees_sequence),
        cmocka_unit_test(test_metrics_text),
        cmocka_unit_test(test_prefix_cache_usage),
        cmocka_unit_test(test_structured_outputs),
        cmocka_unit_test(test_gguf_pair_same_answers),
        cmocka_unit_test(test_sigterm_exits_zero),
    };
    int rc = cmocka_run_group_tests(tests, start, stop);
    curl_global_cleanup();
    return rc;
}
