/* test_cli_generate.c - llava-cli generating, end to end, against the
 * transformers fixtures in tests/data/forward:
 *   llava-cli --model DIR [--image F]... --prompt P [--raw-prompt]
 *             --max-tokens 40 --json --logits-out L --dump-pixels X
 * must print the case's prompt ids and greedy ids, and write its pixels
 * (bit for bit) and logits (within 1e-3 at every step). Then streaming,
 * stop strings, EOS and errors; constrained output (--json-schema,
 * --grammar, --json-object) on the demo model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "backend/backend.h"
#include "base/file.h"
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *fixtures(void) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/forward", tu_env("LLAVA_TEST_DATA"));
    return path;
}

/* Runs llava-cli with args (already shell-quoted); returns its exit status
 * and its stdout (heap) in *out. */
static int cli(const char *args, char **out) {
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "'%s/llava-cli' %s", tu_env("LLAVA_BIN_DIR"), args);
    return tu_run(cmd, out);
}

static json_t *parse(const char *text) {
    json_error_t je;
    json_t *o = json_loads(text, 0, &je);
    if (!o) fail_msg("llava-cli printed no JSON (%s): %s", je.text, text);
    return o;
}

static void assert_same_ids(json_t *got, json_t *want, size_t n) {
    assert_true(json_array_size(got) >= n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(json_integer_value(json_array_get(got, i)),
                         json_integer_value(json_array_get(want, i)));
}

static char *read_all(const char *path, size_t *len) {
    char *data;
    if (lv_read_file(path, 256u << 20, &data, len, NULL) != LV_OK) fail_msg("cannot read %s", path);
    return data;
}

/* The CLI arguments that give case c: images, and the chat prompt or the raw one
 * (written to a file in tmp so the shell passes it unchanged). */
static void case_args(json_t *c, const char *model, const char *tmp, char *args, size_t cap) {
    const char *chat = json_string_value(json_object_get(c, "chat_prompt"));
    const char *prompt = chat ? chat : json_string_value(json_object_get(c, "prompt"));
    tu_write_file(tmp, "prompt.txt", prompt, strlen(prompt));
    size_t o = (size_t)snprintf(args, cap, "--model '%s/%s' --prompt \"$(cat '%s/prompt.txt')\"%s",
                                fixtures(), model, tmp, chat ? "" : " --raw-prompt");
    size_t i;
    json_t *img;
    json_array_foreach(json_object_get(c, "images"), i, img) o +=
        (size_t)snprintf(args + o, cap - o, " --image '%s/%s'", fixtures(), json_string_value(img));
}

static void run_case(const char *model, const char *name) {
    char path[2048], args[8192], *out;
    snprintf(path, sizeof path, "%s/%s/cases/%s/case.json", fixtures(), model, name);
    json_error_t je;
    json_t *c = json_load_file(path, 0, &je);
    if (!c) fail_msg("%s: %s", path, je.text);
    const char *tmp = tu_tmpdir("cli_gen");
    case_args(c, model, tmp, args, sizeof args);
    size_t o = strlen(args);
    snprintf(args + o, sizeof args - o,
             " --max-tokens 40 --json --exact --logits-out '%s/logits.bin' --dump-pixels "
             "'%s/px.bin'",
             tmp, tmp);
    assert_int_equal(cli(args, &out), 0);
    json_t *r = parse(out);
    free(out);
    json_t *want_ids = json_object_get(c, "input_ids");
    assert_int_equal(json_array_size(json_object_get(r, "prompt_ids")), json_array_size(want_ids));
    assert_same_ids(json_object_get(r, "prompt_ids"), want_ids, json_array_size(want_ids));
    assert_int_equal(json_integer_value(json_object_get(r, "n_image_tokens")),
                     json_integer_value(json_object_get(c, "n_image_tokens")));
    assert_same_ids(json_object_get(r, "generated_ids"), json_object_get(c, "generated_ids"), 40);
    assert_string_equal(json_string_value(json_object_get(r, "finish_reason")), "length");

    /* logits: [40, V], within 1e-3 of transformers at every step */
    size_t n_got, n_want;
    snprintf(path, sizeof path, "%s/logits.bin", tmp);
    float *got = (float *)read_all(path, &n_got);
    snprintf(path, sizeof path, "%s/%s/cases/%s/logits.bin", fixtures(), model, name);
    float *want = (float *)read_all(path, &n_want);
    assert_int_equal(n_got, n_want);
    double worst = 0;
    for (size_t i = 0; i < n_got / 4; i++) worst = fmax(worst, fabs((double)got[i] - want[i]));
    json_t *t = json_object_get(r, "timings");
    printf("    %s/%s: logits max-abs %.2e; threads %lld, vision %.3f ms/tile, prefill %.0f tok/s, "
           "decode %.0f tok/s\n",
           model, name, worst, json_integer_value(json_object_get(t, "threads")),
           json_real_value(json_object_get(t, "vision_ms_per_tile")),
           json_real_value(json_object_get(t, "prefill_tokens_per_s")),
           json_real_value(json_object_get(t, "decode_tokens_per_s")));
    assert_true(worst < 1e-3);
    free(got);
    free(want);

    /* pixels: byte for byte */
    if (json_array_size(json_object_get(c, "images"))) {
        snprintf(path, sizeof path, "%s/px.bin", tmp);
        char *px = read_all(path, &n_got);
        snprintf(path, sizeof path, "%s/%s/cases/%s/pixel_values.bin", fixtures(), model, name);
        char *want_px = read_all(path, &n_want);
        assert_int_equal(n_got, n_want);
        assert_memory_equal(px, want_px, n_got);
        free(px);
        free(want_px);
    }
    json_decref(r);
    json_decref(c);
}

static void every_case_matches(void **state) {
    run_case("llava-next-tiny", "one_image");
    run_case("llava-next-tiny", "text_only");
    run_case("llava-next-tiny", "two_images");
    run_case("llava-next-tiny", "multi_turn");
    run_case("llava-1.5-tiny", "one_image");
    run_case("llava-1.5-tiny", "text_only");
}

/* The one_image case's arguments, with extra flags appended; stderr joins
 * stdout (for the error messages), so the load report (INFO) is off. */
static int one_image(const char *model_dir, const char *extra, char **out) {
    char args[4096];
    snprintf(args, sizeof args,
             "--model '%s' --image '%s/images/a_100x60.png' --prompt 'What is shown?' "
             "--max-tokens 40 --log-level warn %s 2>&1",
             model_dir, fixtures(), extra);
    return cli(args, out);
}

/* Its greedy text is "!\uFFFD\uFFFD greenpound b\n/hitehitehite..." (case.json
 * generated_text): "eh" first appears across two "hite" tokens. */
static void streaming_and_stop_strings(void **state) {
    char model[2048], *out, *streamed;
    snprintf(model, sizeof model, "%s/llava-next-tiny", fixtures());
    assert_int_equal(one_image(model, "--json", &out), 0);
    json_t *r = parse(out);
    const char *text = json_string_value(json_object_get(r, "text"));
    assert_int_equal(one_image(model, "", &streamed), 0);
    assert_int_equal(strlen(streamed), strlen(text) + 1); /* streamed text + "\n" */
    assert_memory_equal(streamed, text, strlen(text));
    free(out);
    free(streamed);
    json_decref(r);

    assert_int_equal(one_image(model, "--json --stop eh --stop zzz", &out), 0);
    r = parse(out);
    assert_string_equal(json_string_value(json_object_get(r, "text")),
                        "!\xef\xbf\xbd\xef\xbf\xbd greenpound b\n/hit");
    assert_string_equal(json_string_value(json_object_get(r, "finish_reason")), "stop");
    assert_int_equal(json_array_size(json_object_get(r, "generated_ids")), 11);
    assert_int_equal(one_image(model, "--stop eh --stop zzz", &streamed), 0);
    assert_string_equal(streamed, "!\xef\xbf\xbd\xef\xbf\xbd greenpound b\n/hit\n");
    free(out);
    free(streamed);
    json_decref(r);
}

/* A generation config naming the repeated token 468 ("hite") as an EOS id:
 * generation stops right after its first appearance (step 9). */
static void stops_at_eos(void **state) {
    const char *dir = tu_tmpdir("cli_eos");
    char cmd[4096], *out;
    snprintf(cmd, sizeof cmd,
             "cp '%s/llava-next-tiny'/*.json '%s/llava-next-tiny'/*.safetensors '%s/'", fixtures(),
             fixtures(), dir);
    assert_int_equal(system(cmd), 0);
    const char *gc = "{\"bos_token_id\": 1, \"eos_token_id\": [2, 468], \"pad_token_id\": 501}";
    tu_write_file(dir, "generation_config.json", gc, strlen(gc));
    assert_int_equal(one_image(dir, "--json", &out), 0);
    json_t *r = parse(out);
    json_t *ids = json_object_get(r, "generated_ids");
    assert_int_equal(json_array_size(ids), 10);
    assert_int_equal(json_integer_value(json_array_get(ids, 9)), 468);
    assert_string_equal(json_string_value(json_object_get(r, "finish_reason")), "stop");
    assert_string_equal(json_string_value(json_object_get(r, "text")),
                        "!\xef\xbf\xbd\xef\xbf\xbd greenpound b\n/");
    free(out);
    json_decref(r);
}

static void seeded_sampling_reproduces(void **state) {
    char model[2048], *a, *b, *c;
    snprintf(model, sizeof model, "%s/llava-next-tiny", fixtures());
    const char *flags = "--json --temperature 0.9 --top-k 40 --top-p 0.95 --min-p 0.01 "
                        "--repeat-penalty 1.1 --seed %d";
    char extra[512];
    snprintf(extra, sizeof extra, flags, 42);
    assert_int_equal(one_image(model, extra, &a), 0);
    assert_int_equal(one_image(model, extra, &b), 0);
    snprintf(extra, sizeof extra, flags, 43);
    assert_int_equal(one_image(model, extra, &c), 0);
    json_t *ja = parse(a), *jb = parse(b), *jc = parse(c);
    assert_true(
        json_equal(json_object_get(ja, "generated_ids"), json_object_get(jb, "generated_ids")));
    assert_false(
        json_equal(json_object_get(ja, "generated_ids"), json_object_get(jc, "generated_ids")));
    assert_int_equal(json_integer_value(json_object_get(ja, "seed")), 42);
    json_decref(ja);
    json_decref(jb);
    json_decref(jc);
    free(a);
    free(b);
    free(c);
}

static void errors(void **state) {
    char model[2048], *out;
    snprintf(model, sizeof model, "%s/llava-next-tiny", fixtures());
    assert_int_equal(one_image(model, "--backend tpu", &out), 1);
    assert_non_null(strstr(out, "unknown backend \"tpu\""));
    free(out);
    /* --device is --backend's new name: cpu runs and is reported; a bad name
     * fails before the model is read */
    assert_int_equal(one_image(model, "--device cpu --max-tokens 2 --json", &out), 0);
    json_t *o = parse(out);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(o, "timings"), "backend")), "cpu");
    json_decref(o);
    free(out);
    static const char *const bad_devices[] = {"tpu", "cuda:x", "cuda:", "cpu:1"};
    for (size_t i = 0; i < LV_ARRAY_LEN(bad_devices); i++) {
        char flag[64], want[64];
        snprintf(flag, sizeof flag, "--device '%s'", bad_devices[i]);
        snprintf(want, sizeof want, "llava-cli: unknown backend \"%s\"", bad_devices[i]);
        assert_int_equal(one_image(model, flag, &out), 1);
        if (!strstr(out, want)) fail_msg("%s: %s", flag, out);
        free(out);
    }
    if (!be_find("cuda")) { /* a CPU-only build says so */
        assert_int_equal(one_image(model, "--device cuda", &out), 1);
        assert_non_null(strstr(out, "unknown backend \"cuda\""));
        assert_non_null(strstr(out, "this build has no CUDA"));
        free(out);
    }
    assert_int_equal(one_image(model, "--top-p 1.5", &out), 2);
    free(out);
    assert_int_equal(one_image(model, "--temperature -1", &out), 2);
    free(out);

    /* a context shorter than the prompt; nothing written to --logits-out */
    const char *dir = tu_tmpdir("cli_ctx");
    char cmd[16384], path[2048];
    snprintf(cmd, sizeof cmd,
             "cp '%s'/*.json '%s'/*.safetensors '%s/' && sed -i 's/\"max_position_embeddings\": "
             "4096/\"max_position_embeddings\": 40/' '%s/config.json'",
             model, model, dir, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "--logits-out '%s/l.bin'", dir);
    assert_int_equal(one_image(dir, path, &out), 1);
    assert_non_null(strstr(out, "the prompt is 64 tokens long; the model's context is 40 tokens"));
    free(out);
    snprintf(path, sizeof path, "%s/l.bin", dir);
    assert_false(lv_is_file(path));

    /* a missing tensor: exit 1 naming it */
    dir = tu_tmpdir("cli_notensor");
    snprintf(cmd, sizeof cmd,
             "cp '%s'/*.json '%s'/*.safetensors '%s/' && sed -i 's/image_newline/image_nowline/' "
             "'%s/model.safetensors.index.json' '%s'/model-0000*.safetensors",
             model, model, dir, dir, dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(one_image(dir, "", &out), 1);
    assert_non_null(strstr(out, "image_newline"));
    free(out);

    /* an unknown model_type: exit 1 naming it */
    dir = tu_tmpdir("cli_modeltype");
    snprintf(cmd, sizeof cmd,
             "cp '%s'/*.json '%s'/*.safetensors '%s/' && sed -i "
             "'s/\"model_type\": \"llava_next\"/\"model_type\": \"llava_onevision9\"/' "
             "'%s/config.json'",
             model, model, dir, dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(one_image(dir, "", &out), 1);
    assert_non_null(strstr(out, "llava_onevision9"));
    free(out);

    /* an unreadable image: exit 1 naming the file */
    snprintf(path, sizeof path, "%s/config.json", dir);
    snprintf(cmd, sizeof cmd, "'%s/llava-cli' --model '%s' --image '%s' --prompt x 2>&1",
             tu_env("LLAVA_BIN_DIR"), model, path);
    assert_int_equal(tu_run(cmd, &out), 1);
    assert_non_null(strstr(out, path));
    free(out);
}

/* The demo model's directory (models/demo). */
static const char *demo_model(void) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/../../models/demo", tu_env("LLAVA_TEST_DATA"));
    return path;
}

/* llava-cli on the demo model with a text prompt and extra flags: its exit
 * status, stdout in *out and stderr in *err_out (both heap). */
static int demo_cli(const char *extra, char **out, char **err_out) {
    const char *tmp = tu_tmpdir("cli_structured_run");
    char args[4096], path[2048];
    snprintf(path, sizeof path, "%s/stderr.txt", tmp);
    snprintf(args, sizeof args, "--model '%s' --prompt 'What shapes are there?' %s 2>'%s'",
             demo_model(), extra, path);
    int rc = cli(args, out);
    size_t len;
    *err_out = read_all(path, &len);
    return rc;
}

static const char *SHAPE_SCHEMA =
    "{\"type\": \"object\", \"properties\": {"
    "\"shape\": {\"type\": \"string\", \"enum\": [\"circle\", \"square\", \"star\"]},"
    "\"count\": {\"type\": \"integer\"},"
    "\"note\": {\"type\": \"string\", \"maxLength\": 12},"
    "\"colors\": {\"type\": \"array\", \"items\": {\"type\": \"string\", \"maxLength\": 8},"
    " \"maxItems\": 3}},"
    " \"required\": [\"shape\", \"count\", \"note\", \"colors\"], \"additionalProperties\": false}";

/* o is an object of SHAPE_SCHEMA: exactly its keys, the enum, the bounds. */
static void check_shape_object(json_t *o) {
    assert_true(json_is_object(o));
    assert_int_equal(json_object_size(o), 4);
    const char *shape = json_string_value(json_object_get(o, "shape"));
    assert_non_null(shape);
    assert_true(!strcmp(shape, "circle") || !strcmp(shape, "square") || !strcmp(shape, "star"));
    assert_true(json_is_integer(json_object_get(o, "count")));
    json_t *note = json_object_get(o, "note"), *colors = json_object_get(o, "colors"), *c;
    assert_true(json_is_string(note));
    assert_true(json_string_length(note) <= 12); /* ASCII here: bytes are characters */
    assert_true(json_is_array(colors) && json_array_size(colors) <= 3);
    size_t i;
    json_array_foreach(colors, i, c) assert_true(json_is_string(c) && json_string_length(c) <= 8);
}

/* --json-schema FILE: the text on stdout is JSON the schema accepts, with
 * and without --json, greedy and sampled; --json-object and --grammar too. */
static void structured_output(void **state) {
    char dir[1024]; /* tu_tmpdir's buffer is reused by demo_cli */
    snprintf(dir, sizeof dir, "%s", tu_tmpdir("cli_structured"));
    tu_write_file(dir, "shape.json", SHAPE_SCHEMA, strlen(SHAPE_SCHEMA));
    const char *gbnf = "root ::= \"yes\" | \"no\" | \"maybe\"\n";
    tu_write_file(dir, "yn.gbnf", gbnf, strlen(gbnf));
    char extra[4096], *out, *err;

    snprintf(extra, sizeof extra, "--json-schema '%s/shape.json' --max-tokens 300", dir);
    assert_int_equal(demo_cli(extra, &out, &err), 0);
    json_error_t je;
    json_t *o = json_loads(out, 0, &je); /* the streamed text and its "\n" */
    if (!o) fail_msg("not JSON (%s): %s", je.text, out);
    check_shape_object(o);
    json_decref(o);
    free(out);
    free(err);

    for (int seed = 1; seed <= 3; seed++) {
        snprintf(extra, sizeof extra,
                 "--json-schema '%s/shape.json' --max-tokens 300 --json --temperature 1.2 "
                 "--seed %d",
                 dir, seed);
        assert_int_equal(demo_cli(extra, &out, &err), 0);
        json_t *r = parse(out);
        assert_string_equal(json_string_value(json_object_get(r, "finish_reason")), "stop");
        o = json_loads(json_string_value(json_object_get(r, "text")), 0, &je);
        if (!o) fail_msg("seed %d: not JSON (%s): %s", seed, je.text, out);
        check_shape_object(o);
        json_decref(o);
        json_decref(r);
        free(out);
        free(err);
    }

    snprintf(extra, sizeof extra, "--json-object --max-tokens 400 --json");
    assert_int_equal(demo_cli(extra, &out, &err), 0);
    json_t *r = parse(out);
    const char *text = json_string_value(json_object_get(r, "text"));
    assert_true(text[0] == '{'); /* complete or cut by --max-tokens: an object's start */
    if (!strcmp(json_string_value(json_object_get(r, "finish_reason")), "stop")) {
        o = json_loads(text, 0, &je);
        if (!o) fail_msg("--json-object: not JSON (%s): %s", je.text, text);
        assert_true(json_is_object(o));
        json_decref(o);
    }
    json_decref(r);
    free(out);
    free(err);

    snprintf(extra, sizeof extra, "--grammar '%s/yn.gbnf' --max-tokens 20", dir);
    assert_int_equal(demo_cli(extra, &out, &err), 0);
    assert_true(!strcmp(out, "yes\n") || !strcmp(out, "no\n") || !strcmp(out, "maybe\n"));
    free(out);
    free(err);
}

/* A schema or grammar that does not compile: exit 2, the message on stderr
 * naming the keyword or the line and column, nothing on stdout. Two of the
 * flags together, or a file over 1 MiB: a usage error too. */
static void structured_errors(void **state) {
    char dir[1024]; /* tu_tmpdir's buffer is reused by demo_cli */
    snprintf(dir, sizeof dir, "%s", tu_tmpdir("cli_structured_bad"));
    const char *bad_schema = "{\"type\": \"object\", \"properties\": {\"age\": "
                             "{\"type\": \"integer\", \"minimum\": 0}}}";
    tu_write_file(dir, "bad.json", bad_schema, strlen(bad_schema));
    tu_write_file(dir, "notjson.json", "{\"type\": ", 10);
    const char *bad_grammar = "root ::= item+\nitem ::= \"a\" [b-\n";
    tu_write_file(dir, "bad.gbnf", bad_grammar, strlen(bad_grammar));
    const char *undefined = "root ::= item\n";
    tu_write_file(dir, "undef.gbnf", undefined, strlen(undefined));
    const char *good = "{\"type\": \"string\"}";
    tu_write_file(dir, "good.json", good, strlen(good));
    char *big = malloc((1u << 20) + 2);
    memset(big, ' ', (1u << 20) + 2);
    tu_write_file(dir, "big.json", big, (1u << 20) + 2);
    free(big);
    struct {
        const char *flags; /* %s: dir */
        int rc;
        const char *msg;
    } cases[] = {
        {"--json-schema '%s/bad.json'", 2, "schema.properties.age: \"minimum\" is not supported"},
        {"--json-schema '%s/notjson.json'", 2, "notjson.json: "},
        {"--grammar '%s/bad.gbnf'", 2, "bad.gbnf: grammar line 2, column"},
        {"--grammar '%s/undef.gbnf'", 2, "'item'"},
        {"--json-schema '%s/good.json' --grammar '%s/bad.gbnf'", 2, "exclude each other"},
        {"--json-object --json-schema '%s/good.json'", 2, "exclude each other"},
        {"--json-schema '%s/big.json'", 2, "the limit for this file is 1048576"},
        {"--json-schema '%s/missing.json'", 1, "missing.json: cannot open"},
    };
    for (size_t i = 0; i < LV_ARRAY_LEN(cases); i++) {
        char flags[2048], *out, *err;
        snprintf(flags, sizeof flags, cases[i].flags, dir, dir);
        int rc = demo_cli(flags, &out, &err);
        if (rc != cases[i].rc || !strstr(err, cases[i].msg) || !strstr(err, "llava-cli: ") || *out)
            fail_msg("%s: exit %d (want %d), stdout '%s', stderr: %s", flags, rc, cases[i].rc, out,
                     err);
        free(out);
        free(err);
    }
}

/* While the weights load and once they have, stderr says what is happening
 * and what was loaded (tools/common/model_report.h); stdout has only the
 * answer; --log-level warn silences it. */
static void load_report(void **state) {
    (void)state;
    char *out, *err;
    assert_int_equal(demo_cli("--max-tokens 1", &out, &err), 0);
    static const char *const lines[] = {
        " I load: 1 file, ",
        " mapped, 149 tensors\n",
        " I model: llava_next (mistral), ",
        " parameters (text ",
        " I weights: F16 (safetensors); vision F16\n",
        " I context: 4096 tokens; an image takes 65 (base view) to 336 tokens (224x224)\n",
        " I memory: weights 13.1 MiB mapped, ",
        "KV cache 3 KiB a token, 12.0 MiB at most (one sequence of 4096)\n",
        " I loaded in ",
    };
    for (size_t i = 0; i < LV_ARRAY_LEN(lines); i++)
        if (!strstr(err, lines[i])) fail_msg("stderr lacks '%s':\n%s", lines[i], err);
    assert_null(strstr(out, "load:"));
    free(out);
    free(err);
    assert_int_equal(demo_cli("--max-tokens 1 --log-level warn", &out, &err), 0);
    assert_string_equal(err, "");
    free(out);
    free(err);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_case_matches),         cmocka_unit_test(load_report),
        cmocka_unit_test(streaming_and_stop_strings), cmocka_unit_test(stops_at_eos),
        cmocka_unit_test(seeded_sampling_reproduces), cmocka_unit_test(errors),
        cmocka_unit_test(structured_output),          cmocka_unit_test(structured_errors),
    };
    return cmocka_run_group_tests_name("cli_generate", tests, NULL, NULL);
}
