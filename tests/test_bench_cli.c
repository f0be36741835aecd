/* test_bench_cli.c - the command lines of llava-bench serve, model,
 * bandwidth and grammar (tools/bench/serve_bench.c, model_bench.c,
 * bandwidth.c, grammar_bench.c): bad
 * usage is refused with a message naming the option and exit status 2;
 * --help exits 0; a tiny run on the demo model (or a small buffer) prints
 * its figures; --device picks the backend of every subcommand that runs one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "backend/backend.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Runs llava-bench SUB with args (stderr merged); its exit status, output in *out. */
static int bench(const char *sub, const char *args, char **out) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s/llava-bench' %s %s 2>&1", tu_env("LLAVA_BIN_DIR"), sub, args);
    return tu_run(cmd, out);
}

/* llava-bench SUB args exits with rc and prints msg (and msg2, unless NULL). */
static void expect_sub(const char *sub, const char *args, int rc, const char *msg,
                       const char *msg2) {
    char *out = NULL;
    int got = bench(sub, args, &out);
    if (got != rc || !strstr(out, msg) || (msg2 && !strstr(out, msg2)))
        fail_msg("llava-bench %s %s: exit %d (want %d), output: %s", sub, args, got, rc, out);
    free(out);
}

static void expect(const char *args, int rc, const char *msg) {
    expect_sub("serve", args, rc, msg, NULL);
}

/* The demo model's directory, quoted for the shell, into buf. */
static const char *demo(char *buf, size_t size) {
    snprintf(buf, size, "'%s/../../models/demo'", tu_env("LLAVA_TEST_DATA"));
    return buf;
}

/* llava-gpu-bench: --help, and bad usage or a device this build lacks refused
 * with a message and exit status 2 (its figures need a GPU: tests/cuda/). */
static void gpu_bench_cli(void **state) {
    struct {
        const char *args;
        int rc;
        const char *msg;
    } cases[] = {
        {"--help", 0, "usage: llava-gpu-bench"},
        {"--only", 2, "--only needs a value"},
        {"--frobnicate 1", 2, "unknown option --frobnicate"},
        {"--device tpu", 2, "unknown device \"tpu\""},
        {"--device cuda:x", 2, "unknown device"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char cmd[4096], *out = NULL;
        snprintf(cmd, sizeof cmd, "'%s/llava-gpu-bench' %s 2>&1", tu_env("LLAVA_BIN_DIR"),
                 cases[i].args);
        int got = tu_run(cmd, &out);
        if (got != cases[i].rc || !strstr(out, cases[i].msg))
            fail_msg("llava-gpu-bench %s: exit %d (want %d), output: %s", cases[i].args, got,
                     cases[i].rc, out);
        free(out);
    }
}

static void bad_usage(void **state) {
    (void)state;
    expect("--streams 8", 2, "--model is required");
    expect("--model x --streams 0", 2, "--streams wants an integer in [1, 256], got '0'");
    expect("--model x --tokens 1", 2, "--tokens wants an integer");
    expect("--model x --repeat two", 2, "--repeat wants an integer");
    expect("--model x --bogus 1", 2, "unknown or incomplete option '--bogus'");
    expect("--help", 0, "usage: llava-bench serve --model PATH");
    expect("--model /nonexistent/model --streams 2", 1, "/nonexistent/model");
}

static void tiny_run(void **state) {
    (void)state;
    char args[2048];
    snprintf(args, sizeof args, "--model '%s/../../models/demo' --streams 2 --tokens 4 --threads 2",
             tu_env("LLAVA_TEST_DATA"));
    expect(args, 0, "ratio 2/1 streams");
}

static void model_bad_usage(void **state) {
    (void)state;
    expect_sub("model", "--tg 8", 2, "--model is required", NULL);
    expect_sub("model", "--model x --tg -1", 2, "--tg wants an integer in [0, 1000000], got '-1'",
               NULL);
    expect_sub("model", "--model x --pp lots", 2, "--pp wants an integer", NULL);
    expect_sub("model", "--model x --repeat 65", 2, "--repeat wants an integer in [1, 64]", NULL);
    expect_sub("model", "--model x --threads -2", 2, "--threads wants an integer", NULL);
    expect_sub("model", "--model x --image a.png --pp 16", 2, "--pp is for the text rows", NULL);
    expect_sub("model", "--model x --frobnicate", 2, "unknown or incomplete option '--frobnicate'",
               NULL);
    expect_sub("model", "--help", 0, "usage: llava-bench model --model PATH", NULL);
    expect_sub("model", "--model /nonexistent/model --tg 2 --pp 0", 1, "/nonexistent/model", NULL);
}

static void model_tiny_text(void **state) {
    (void)state;
    char d[1024], args[2048];
    snprintf(args, sizeof args, "--model %s --tg 4 --pp 16 --threads 2 --repeat 3",
             demo(d, sizeof d));
    expect_sub("model", args, 0, "decode  tg4 ", "prefill pp16 ");
    snprintf(args, sizeof args, "--model %s --tg 3 --pp 0 --threads 1 --json", demo(d, sizeof d));
    expect_sub("model", args, 0, "\"tg\":{\"n\":3,\"tps\":", "\"peak_rss_bytes\":");
    /* a context longer than the model's is refused before anything runs */
    snprintf(args, sizeof args, "--model %s --tg 0 --pp 999999", demo(d, sizeof d));
    expect_sub("model", args, 1, "--pp 999999", "the model's context is");
}

static void model_tiny_image(void **state) {
    (void)state;
    char d[1024], args[3072];
    snprintf(args, sizeof args,
             "--model %s --image %s/samples/sample_01_320x240.png --tg 3 --threads 2 --json",
             demo(d, sizeof d), d);
    expect_sub("model", args, 0, "\"decode_tokens\":2,", "\"vision_ms_per_tile\":");
    snprintf(args, sizeof args, "--model %s --image %s/samples/sample_01_320x240.png --tg 1",
             demo(d, sizeof d), d);
    expect_sub("model", args, 0, "vision ", "TTFT");
    snprintf(args, sizeof args, "--model %s --image /nonexistent.png", demo(d, sizeof d));
    expect_sub("model", args, 1, "/nonexistent.png", NULL);
}

static void bandwidth_cli(void **state) {
    (void)state;
    expect_sub("bandwidth", "--isa sse9", 2,
               "--isa wants auto, avx512, avx2 or portable, got 'sse9'", NULL);
    expect_sub("bandwidth", "--mb 0", 2, "--mb wants an integer", NULL);
    expect_sub("bandwidth", "--passes x", 2, "--passes wants an integer", NULL);
    expect_sub("bandwidth", "--threads 64 --mb 1", 0, "with 64 threads", NULL);
    expect_sub("bandwidth", "--threads 2 --mb 8 --passes 3", 0, "read 8 MiB with 2 threads",
               "GB/s");
    expect_sub("bandwidth", "--threads 1 --mb 4 --passes 2 --isa portable --json", 0,
               "\"loop\":\"portable\"", "\"gb_s\":");
    expect_sub("bandwidth", "--help", 0, "usage: llava-bench bandwidth", NULL);
    /* a backend other than cpu: its copy through the ops (ref's is memcpy) */
    expect_sub("bandwidth", "--device ref --mb 4 --passes 2 --json", 0, "\"device\":\"ref\"",
               "\"copies_per_pass\":10");
}

/* Every subcommand that runs on a backend takes --device; a name this build
 * lacks is llava_load's error and exit 1, before any work. */
static void device_flag(void **state) {
    (void)state;
    char d[1024], args[2048];
    static const char *const subs[] = {"model", "serve", "tower", "matmul", "bandwidth"};
    for (size_t i = 0; i < LV_ARRAY_LEN(subs); i++) {
        bool takes_model = i < 2; /* model and serve; the name is checked first anyway */
        char want[96];
        snprintf(args, sizeof args, "%s--device tpu", takes_model ? "--model x " : "");
        snprintf(want, sizeof want, "llava-bench %s: unknown backend \"tpu\"", subs[i]);
        expect_sub(subs[i], args, 1, want, NULL);
        snprintf(args, sizeof args, "%s--device cuda:x", takes_model ? "--model x " : "");
        expect_sub(subs[i], args, 1, "unknown backend \"cuda:x\"", NULL);
    }
    if (!be_find("cuda"))
        expect_sub("bandwidth", "--device cuda", 1, "this build has no CUDA", NULL);
    snprintf(args, sizeof args, "--model %s --tg 2 --pp 0 --device cpu --json", demo(d, sizeof d));
    expect_sub("model", args, 0, "\"device\":\"cpu\"", NULL);
    expect_sub("tower", "--layers 1 --repeat 1 --threads 2 --device cpu", 0, "1 layers", ", cpu,");
    expect_sub("matmul", "--rows 64 --cols 64 --device cpu", 0, "cpu / ref speed", NULL);
}

/* llava-bench grammar: bad usage refused; a tiny run on the demo model's
 * tokenizer, its model and the Mistral tokenizer prints its figures; an
 * instance the schema does not accept is an error naming the token. */
static void grammar_cli(void **state) {
    (void)state;
    char d[1024], args[3072];
    expect_sub("grammar", "--steps 10", 2, "one of --tokenizer and --model is required", NULL);
    expect_sub("grammar", "--tokenizer a --model b", 2, "one of --tokenizer and --model", NULL);
    expect_sub("grammar", "--tokenizer a --json-schema s.json", 2,
               "--json-schema and --instance go together", NULL);
    expect_sub("grammar", "--tokenizer a --steps 0", 2, "--steps wants an integer", NULL);
    expect_sub("grammar", "--tokenizer a --decode-ms 0", 2, "--decode-ms wants a positive", NULL);
    expect_sub("grammar", "--tokenizer a --mmproj b", 2, "--mmproj goes with --model", NULL);
    expect_sub("grammar", "--help", 0, "usage: llava-bench grammar", NULL);
    expect_sub("grammar", "--tokenizer /nonexistent/tokenizer.json", 1,
               "/nonexistent/tokenizer.json", NULL);
    snprintf(args, sizeof args, "--tokenizer %s/tokenizer.json --steps 50 --decode-ms 10",
             demo(d, sizeof d));
    expect_sub("grammar", args, 0, "50 steps: ", "ms of a 10.0 ms decode step: ");
    snprintf(args, sizeof args, "--model %s --steps 20 --json", demo(d, sizeof d));
    expect_sub("grammar", args, 0, "\"steps\":20,", "\"cache_hit_pct\":");
    snprintf(args, sizeof args, "--tokenizer %s/tokenizer.json --vocab 10", demo(d, sizeof d));
    expect_sub("grammar", args, 1, "--vocab 10 is below the tokenizer's", NULL);
    snprintf(args, sizeof args, "--tokenizer '%s' --vocab 32064 --steps 30",
             tu_env("LLAVA_MISTRAL_TOKENIZER"));
    expect_sub("grammar", args, 0, "vocabulary 32000 tokens, logits 32064", "hit rate");

    /* a schema of its own and an instance: one it accepts, one it does not */
    const char *dir = tu_tmpdir("bench_grammar");
    const char *schema = "{\"type\": \"object\", \"properties\": {\"n\": {\"type\": "
                         "\"integer\"}}, \"required\": [\"n\"]}";
    tu_write_file(dir, "s.json", schema, strlen(schema));
    tu_write_file(dir, "good.json", "{\"n\": 12}", 9);
    tu_write_file(dir, "bad.json", "{\"m\": 12}", 9);
    const char *refused = "{\"type\": \"string\", \"pattern\": \"a\"}";
    tu_write_file(dir, "refused.json", refused, strlen(refused));
    snprintf(args, sizeof args,
             "--tokenizer %s/tokenizer.json --json-schema '%s/s.json' --instance '%s/good.json' "
             "--steps 40",
             demo(d, sizeof d), dir, dir);
    expect_sub("grammar", args, 0, "40 steps: ", "cached: hit rate");
    snprintf(args, sizeof args,
             "--tokenizer %s/tokenizer.json --json-schema '%s/s.json' --instance '%s/bad.json'",
             demo(d, sizeof d), dir, dir);
    expect_sub("grammar", args, 1, "is not allowed by the schema's grammar", NULL);
    snprintf(args, sizeof args,
             "--tokenizer %s/tokenizer.json --json-schema '%s/refused.json' --instance "
             "'%s/good.json'",
             demo(d, sizeof d), dir, dir);
    expect_sub("grammar", args, 1, "refused.json: ", "\"pattern\" is not supported");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_usage),        cmocka_unit_test(tiny_run),
        cmocka_unit_test(model_bad_usage),  cmocka_unit_test(model_tiny_text),
        cmocka_unit_test(model_tiny_image), cmocka_unit_test(bandwidth_cli),
        cmocka_unit_test(device_flag),      cmocka_unit_test(gpu_bench_cli),
        cmocka_unit_test(grammar_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
