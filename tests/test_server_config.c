/* test_server_config.c - the seed's config file (server/config.h) and the
 * Prometheus text of /metrics (server/metrics.h), as pure functions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "backend/backend.h"
#include "base/log.h"
#include "server/config.h"
#include "server/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lv_status parse(const char *json, srv_config *c, lv_err *err) {
    return srv_config_parse(json, strlen(json), "test.json", c, err);
}

static void seed_file_applies(void **state) {
    (void)state;
    /* The seed's README example, plus its "advanced" blocks and an unknown key. */
    const char *seed =
        "{\"model_name\": \"LLaVA-MLX\", \"model_id\": "
        "\"mlx-community/llava-v1.6-mistral-7b-4bit\","
        " \"device\": \"mps\", \"quantization\": \"int4\", \"max_tokens\": 150,"
        " \"image_processing\": {\"max_size\": 768, \"min_size\": 224, \"format\": \"RGB\","
        "   \"quality\": 95, \"preprocessing_quality\": \"high\", \"maintain_aspect_ratio\": true,"
        "   \"padding_color\": [255, 255, 255]},"
        " \"enhanced_memory_management\": {\"periodic_cleanup\": true, \"cleanup_interval\": 1,"
        "   \"adaptive_pressure_detection\": true, \"mlx_memory_clearing\": true,"
        "   \"model_reloading\": true},"
        " \"mlx_config\": {\"memory_pool_size\": \"8GB\", \"cache_size\": 512, \"batch_size\": 1},"
        " \"something_new\": {\"x\": 1}}";
    srv_config c;
    lv_err err = {{0}};
    assert_int_equal(parse(seed, &c, &err), LV_OK);
    assert_string_equal(c.model_name, "LLaVA-MLX");
    assert_string_equal(c.model_id, "mlx-community/llava-v1.6-mistral-7b-4bit");
    assert_int_equal(c.max_tokens, 150);
    assert_int_equal(c.image.max_size, 768);
    assert_int_equal(c.image.min_size, 224);
    assert_true(c.image.keep_aspect);
    assert_true(c.image.has_padding_color);
    assert_int_equal(c.image.padding_color[0], 255);
    /* Not needed: device, quantization, format, quality, preprocessing_quality,
     * mlx_memory_clearing, model_reloading, batch_size. The memory keys map
     * onto the governor and the caches. */
    assert_int_equal(c.n_notes, 8);
    assert_int_equal(c.n_unknown, 1);
    assert_int_equal(c.periodic_cleanup, 1);
    assert_true(c.cleanup_interval_s == 1.0);
    assert_int_equal(c.pressure_detection, 1);
    assert_int_equal(c.prefix_cache_bytes, (int64_t)8 << 30);  /* "8GB" */
    assert_int_equal(c.image_cache_bytes, (int64_t)512 << 20); /* 512: MiB */
    srv_config_free(&c);

    /* Without image_processing the pipeline stays the exact reference. */
    assert_int_equal(parse("{\"model_id\": \"x\"}", &c, &err), LV_OK);
    assert_int_equal(c.image.max_size, 0);
    assert_false(c.image.keep_aspect);
    assert_false(c.image.has_padding_color);
    /* absent memory keys: the defaults */
    assert_int_equal(c.periodic_cleanup, -1);
    assert_int_equal(c.pressure_detection, -1);
    assert_int_equal(c.prefix_cache_bytes, -1);
    assert_int_equal(c.image_cache_bytes, -1);
    srv_config_free(&c);

    /* false turns them off; sizes take units */
    assert_int_equal(
        parse("{\"enhanced_memory_management\": {\"periodic_cleanup\": false,"
              " \"adaptive_pressure_detection\": false},"
              " \"mlx_config\": {\"memory_pool_size\": null, \"cache_size\": \"64MiB\"}}",
              &c, &err),
        LV_OK);
    assert_int_equal(c.periodic_cleanup, 0);
    assert_int_equal(c.pressure_detection, 0);
    assert_int_equal(c.prefix_cache_bytes, -1);
    assert_int_equal(c.image_cache_bytes, (int64_t)64 << 20);
    srv_config_free(&c);
}

/* cpu and cuda[:N] select the backend; the seed's torch/MLX devices run on
 * the cpu (a note), gpu and auto take CUDA where this build has it. */
static void device_selects_the_backend(void **state) {
    (void)state;
    static const struct {
        const char *json, *device; /* NULL: the default (cpu), with a note */
    } cases[] = {
        {"{\"device\": \"cpu\"}", "cpu"},       {"{\"device\": \"CUDA\"}", "cuda"},
        {"{\"device\": \"cuda:1\"}", "cuda:1"}, {"{\"device\": \"mps\"}", NULL},
        {"{\"device\": \"metal\"}", NULL},
    };
    for (size_t i = 0; i < LV_ARRAY_LEN(cases); i++) {
        srv_config c;
        lv_err err = {{0}};
        assert_int_equal(parse(cases[i].json, &c, &err), LV_OK);
        if (cases[i].device)
            assert_string_equal(c.device, cases[i].device);
        else
            assert_null(c.device);
        assert_int_equal(c.n_notes, cases[i].device ? 0 : 1);
        srv_config_free(&c);
    }
    static const char *const any_gpu[] = {"{\"device\": \"gpu\"}", "{\"device\": \"auto\"}"};
    for (size_t i = 0; i < LV_ARRAY_LEN(any_gpu); i++) {
        srv_config c;
        lv_err err = {{0}};
        assert_int_equal(parse(any_gpu[i], &c, &err), LV_OK);
        if (be_find("cuda"))
            assert_string_equal(c.device, "cuda");
        else
            assert_null(c.device);
        srv_config_free(&c);
    }
}

static void bad_values_name_the_key(void **state) {
    (void)state;
    static const struct {
        const char *json, *key;
        lv_status st;
    } cases[] = {
        {"{\"max_tokens\": -1}", "max_tokens", LV_ERR_ARG},
        {"{\"max_tokens\": 1.5}", "max_tokens", LV_ERR_ARG},
        {"{\"model_name\": \"\"}", "model_name", LV_ERR_ARG},
        {"{\"model_id\": 5}", "model_id", LV_ERR_ARG},
        {"{\"device\": \"tpu\"}", "device", LV_ERR_ARG},
        {"{\"device\": \"cuda:\"}", "device", LV_ERR_ARG},
        {"{\"device\": \"cuda:x\"}", "device", LV_ERR_ARG},
        {"{\"device\": \"cuda:-1\"}", "device", LV_ERR_ARG},
        {"{\"device\": \"cpu:1\"}", "device", LV_ERR_ARG},
        {"{\"quantization\": 4}", "quantization", LV_ERR_ARG},
        {"{\"image_processing\": 3}", "image_processing", LV_ERR_ARG},
        {"{\"image_processing\": {\"max_size\": 0}}", "image_processing.max_size", LV_ERR_ARG},
        {"{\"image_processing\": {\"padding_color\": [0, 0, 256]}}",
         "image_processing.padding_color", LV_ERR_ARG},
        {"{\"image_processing\": {\"maintain_aspect_ratio\": 1}}",
         "image_processing.maintain_aspect_ratio", LV_ERR_ARG},
        {"{\"image_processing\": {\"quality\": 101}}", "image_processing.quality", LV_ERR_ARG},
        {"{\"enhanced_memory_management\": {\"cleanup_interval\": \"often\"}}",
         "enhanced_memory_management.cleanup_interval", LV_ERR_ARG},
        {"{\"mlx_config\": {\"batch_size\": \"one\"}}", "mlx_config.batch_size", LV_ERR_ARG},
        {"{\"mlx_config\": {\"cache_size\": \"lots\"}}", "mlx_config.cache_size", LV_ERR_ARG},
        {"{\"mlx_config\": {\"memory_pool_size\": -1}}", "mlx_config.memory_pool_size", LV_ERR_ARG},
        {"{\"enhanced_memory_management\": {\"cleanup_interval\": 0}}",
         "enhanced_memory_management.cleanup_interval", LV_ERR_ARG},
        {"{\"a\": 1, \"a\": 2}", "test.json", LV_ERR_FORMAT},
        {"", "test.json", LV_ERR_FORMAT},
    };
    for (size_t i = 0; i < LV_ARRAY_LEN(cases); i++) {
        srv_config c;
        lv_err err = {{0}};
        lv_status st = parse(cases[i].json, &c, &err);
        if (st != cases[i].st || !strstr(err.msg, cases[i].key))
            fail_msg("case %zu %s: status %d, message '%s'", i, cases[i].json, st, err.msg);
        srv_config_free(&c);
    }
    srv_config c;
    lv_err err = {{0}};
    assert_int_equal(srv_config_load("/nonexistent/seed.json", &c, &err), LV_ERR_IO);
    srv_config_free(&c);
}

/* Messages are json_type.h's "expected X, got Y" after the file and the key;
 * an integral 2048.0 is an integer, as in Hugging Face configs. */
static void typed_values(void **state) {
    (void)state;
    static const struct {
        const char *json, *msg;
    } cases[] = {
        {"{\"max_tokens\": 1.5}", "test.json: max_tokens: expected an integer, got 1.5"},
        {"{\"max_tokens\": -1}",
         "test.json: max_tokens: expected an integer in [1, 1048576], got -1"},
        {"{\"model_id\": 5}", "test.json: model_id: expected a string, got 5"},
        {"{\"quantization\": [4]}",
         "test.json: quantization: expected a string or null, got an array"},
        {"{\"image_processing\": {\"maintain_aspect_ratio\": \"yes\"}}",
         "test.json: image_processing.maintain_aspect_ratio: expected true or false, got \"yes\""},
        {"{\"enhanced_memory_management\": {\"cleanup_interval\": null}}",
         "test.json: enhanced_memory_management.cleanup_interval: expected a number, got null"},
    };
    for (size_t i = 0; i < LV_ARRAY_LEN(cases); i++) {
        srv_config c;
        lv_err err = {{0}};
        assert_int_equal(parse(cases[i].json, &c, &err), LV_ERR_ARG);
        assert_string_equal(err.msg, cases[i].msg);
        srv_config_free(&c);
    }
    srv_config c;
    lv_err err = {{0}};
    assert_int_equal(parse("{\"max_tokens\": 2048.0}", &c, &err), LV_OK);
    assert_int_equal(c.max_tokens, 2048);
    srv_config_free(&c);
}

/* The label every llava_* sample of metrics_text carries first: the model
 * name 'demo "v1"\' escaped as the exposition format wants. */
#define MODEL_LABEL "model_name=\"demo \\\"v1\\\"\\\\\""

static double sample(const char *text, const char *series) {
    const char *p = strstr(text, series);
    size_t n = strlen(series);
    while (p && (p[n] != ' ' || (p != text && p[-1] != '\n'))) p = strstr(p + 1, series);
    return p ? atof(p + n + 1) : -1;
}

/* The value of name (which may hold labels: "x{le=\"1\"}") with the model's
 * label put first, as metrics_render writes every llava_* sample. */
static double value(const char *text, const char *name) {
    char series[512];
    const char *brace = strchr(name, '{');
    if (strncmp(name, "llava_", 6))
        snprintf(series, sizeof series, "%s", name);
    else if (brace)
        snprintf(series, sizeof series, "%.*s{" MODEL_LABEL ",%s", (int)(brace - name), name,
                 brace + 1);
    else
        snprintf(series, sizeof series, "%s{" MODEL_LABEL "}", name);
    return sample(text, series);
}

static void metrics_text(void **state) {
    (void)state;
    metrics *m = metrics_new("demo \"v1\"\\", NULL);
    assert_non_null(m);
    metrics_request(m, "/v1/chat/completions", 200);
    metrics_request(m, "/v1/chat/completions", 200);
    metrics_request(m, "/v1/chat/completions", 400);
    /* submitted at 1000 ms, first token at 1200, done at 2200 after 11 tokens */
    metrics_generation(m, 100, 11, 1000, 1200, 2200);
    metrics_generation(m, 50, 1, 3000, 3040, 3040);
    metrics_gauges g = {.ready = true,
                        .ws = {.running = 2,
                               .waiting = 1,
                               .queue_capacity = 8,
                               .parallel = 4,
                               .kv_used = 256,
                               .kv_capacity = 1024,
                               .kv_bytes_used = 1000,
                               .kv_bytes_total = 4000},
                        .rss_bytes = 123456,
                        .uptime_s = 5};
    char *t = metrics_render(m, &g);
    assert_non_null(t);
    assert_null(strstr(t, "llava_gpu_memory")); /* the cpu cannot tell: no gauge at all */
    free(t);
    g.has_gpu_memory = true;
    g.gpu_used_bytes = 3000000000;
    g.gpu_total_bytes = 80000000000;
    t = metrics_render(m, &g);
    assert_non_null(t);
    assert_true(value(t, "llava_gpu_memory_used_bytes") == 3e9);
    assert_true(value(t, "llava_gpu_memory_total_bytes") == 8e10);
    assert_true(
        value(t, "llava_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"}") == 2);
    assert_true(
        value(t, "llava_requests_total{endpoint=\"/v1/chat/completions\",status=\"400\"}") == 1);
    assert_true(value(t, "llava_prompt_tokens_total") == 150);
    assert_true(value(t, "llava_generation_tokens_total") == 12);
    /* TTFT 0.2 s and 0.04 s: cumulative buckets */
    assert_true(value(t, "llava_time_to_first_token_seconds_bucket{le=\"0.05\"}") == 1);
    assert_true(value(t, "llava_time_to_first_token_seconds_bucket{le=\"0.25\"}") == 2);
    assert_true(value(t, "llava_time_to_first_token_seconds_bucket{le=\"+Inf\"}") == 2);
    assert_true(value(t, "llava_time_to_first_token_seconds_count") == 2);
    /* per output token: 1 s over 10 tokens = 0.1 s; the 1-token request has none */
    assert_true(value(t, "llava_time_per_output_token_seconds_count") == 1);
    assert_true(value(t, "llava_time_per_output_token_seconds_bucket{le=\"0.1\"}") == 1);
    assert_true(value(t, "llava_time_per_output_token_seconds_bucket{le=\"0.05\"}") == 0);
    assert_true(value(t, "llava_e2e_request_latency_seconds_sum") > 1.23 &&
                value(t, "llava_e2e_request_latency_seconds_sum") < 1.25);
    assert_true(value(t, "llava_requests_running") == 2);
    assert_true(value(t, "llava_requests_waiting") == 1);
    assert_true(value(t, "llava_kv_cache_used_positions") == 256);
    assert_true(value(t, "llava_kv_cache_usage_ratio") == 0.25);
    assert_true(value(t, "process_resident_memory_bytes") == 123456);
    assert_non_null(strstr(t, "# TYPE llava_e2e_request_latency_seconds histogram\n"));
    /* tokens per request: 100 and 50 prompt tokens, 11 and 1 generated */
    assert_true(value(t, "llava_request_prompt_tokens_bucket{le=\"50\"}") == 1);
    assert_true(value(t, "llava_request_prompt_tokens_bucket{le=\"100\"}") == 2);
    assert_true(value(t, "llava_request_generation_tokens_sum") == 12);
    /* every line is a comment or "name[{labels}] value", and every llava_*
     * sample is the served model's */
    for (const char *p = t; *p; p = strchr(p, '\n') + 1) {
        const char *e = strchr(p, '\n');
        assert_non_null(e);
        if (*p != '#') assert_non_null(memchr(p, ' ', (size_t)(e - p)));
        if (!strncmp(p, "llava_", 6) && !strstr(p, "{" MODEL_LABEL))
            fail_msg("a sample without the model's label: %.*s", (int)(e - p), p);
    }
    free(t);
    metrics_free(m);
}

/* --replica-id: every llava_* sample carries replica="..." after model_name,
 * escaped the same way. */
static void metrics_replica_label(void **state) {
    (void)state;
    metrics *m = metrics_new("demo", "r\"1");
    assert_non_null(m);
    metrics_request(m, "/health", 200);
    metrics_gauges g = {.ready = false, .rss_bytes = 1, .uptime_s = 1};
    char *t = metrics_render(m, &g);
    assert_non_null(t);
    assert_non_null(strstr(
        t, "llava_requests_total{model_name=\"demo\",replica=\"r\\\"1\",endpoint=\"/health\","
           "status=\"200\"} 1\n"));
    for (const char *p = t; *p; p = strchr(p, '\n') + 1) {
        const char *e = strchr(p, '\n');
        assert_non_null(e);
        if (!strncmp(p, "llava_", 6) && !strstr(p, "{model_name=\"demo\",replica=\"r\\\"1\""))
            fail_msg("a sample without the replica's label: %.*s", (int)(e - p), p);
    }
    free(t);
    metrics_free(m);
}

int main(void) {
    lv_log_set_level(LV_LOG_ERROR); /* the config's INFO lines are not the test's output */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(seed_file_applies),
        cmocka_unit_test(device_selects_the_backend),
        cmocka_unit_test(bad_values_name_the_key),
        cmocka_unit_test(typed_values),
        cmocka_unit_test(metrics_text),
        cmocka_unit_test(metrics_replica_label),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
