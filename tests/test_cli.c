/* test_cli.c - llava-cli's contract, end to end on a model directory laid out
 * like llava-hf/llava-v1.6-mistral-7b-hf (real config.json and tokenizer, no
 * weights needed to tokenize):
 *   llava-cli --model PATH --prompt TEXT --raw-prompt --max-tokens 0 --json
 * prints one JSON object whose "prompt_ids" are the ids of TEXT. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/file.h"
#include "testutil.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *TOKENIZER_CONFIG =
    "{\"add_bos_token\": true, \"add_eos_token\": false, \"bos_token\": \"<s>\","
    " \"eos_token\": \"</s>\", \"pad_token\": \"<pad>\", \"unk_token\": \"<unk>\","
    " \"legacy\": true, \"tokenizer_class\": \"LlamaTokenizer\"}";

/* A model directory with the real llava-v1.6 config.json and tokenizer. */
static const char *make_model_dir(const char *tag, const char *tokenizer_config) {
    const char *dir = tu_tmpdir(tag);
    char src[1024], *cfg;
    size_t len;
    snprintf(src, sizeof src, "%s/configs/llava-v1.6-mistral-7b-hf.json",
             tu_env("LLAVA_TEST_DATA"));
    assert_int_equal(lv_read_file(src, 1 << 20, &cfg, &len, NULL), LV_OK);
    tu_write_file(dir, "config.json", cfg, len);
    free(cfg);
    tu_write_llava_tokenizer(dir);
    tu_write_file(dir, "tokenizer_config.json", tokenizer_config, strlen(tokenizer_config));
    return dir;
}

/* Runs llava-cli with args (already shell-quoted); returns its exit status
 * and, if json_out, the parsed stdout. */
static int cli(const char *args, json_t **json_out) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s/llava-cli' %s 2>/dev/null", tu_env("LLAVA_BIN_DIR"), args);
    char *out;
    int rc = tu_run(cmd, &out);
    if (json_out) {
        json_error_t je;
        *json_out = json_loads(out, 0, &je);
        if (!*json_out) fail_msg("llava-cli printed no JSON (%s): %s", je.text, out);
    }
    free(out);
    return rc;
}

static void assert_ids(json_t *o, const int *want, size_t n) {
    json_t *ids = json_object_get(o, "prompt_ids");
    assert_true(json_is_array(ids));
    assert_int_equal(json_array_size(ids), n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(json_integer_value(json_array_get(ids, i)), want[i]);
    assert_int_equal(json_integer_value(json_object_get(o, "n_prompt_tokens")), n);
}

static void raw_prompt_keeps_image_token(void **state) {
    const char *dir = make_model_dir("cli_raw", TOKENIZER_CONFIG);
    char args[2048];
    snprintf(args, sizeof args,
             "--model '%s' --prompt \"$(printf '[INST] <image>\\nWhat is this? [/INST]')\" "
             "--raw-prompt --max-tokens 0 --json",
             dir);
    json_t *o;
    assert_int_equal(cli(args, &o), 0);
    /* ids from Hugging Face tokenizers on the same tokenizer.json */
    static const int want[] = {1,    733, 16289, 28793, 28705, 32000, 28705, 13,
                               3195, 349, 456,   28804, 733,   28748, 16289, 28793};
    assert_ids(o, want, LV_ARRAY_LEN(want));
    assert_true(json_is_array(json_object_get(o, "generated_ids")));
    assert_string_equal(json_string_value(json_object_get(o, "text")), "");
    assert_non_null(json_object_get(o, "timings"));
    json_decref(o);
}

static void chat_template_wraps_prompt(void **state) {
    const char *dir = make_model_dir("cli_chat", TOKENIZER_CONFIG);
    char args[2048];
    snprintf(args, sizeof args, "--model '%s' --prompt 'Hello' --max-tokens 0 --json", dir);
    json_t *o;
    assert_int_equal(cli(args, &o), 0);
    /* "[INST] Hello [/INST]" */
    static const int want[] = {1, 733, 16289, 28793, 22557, 733, 28748, 16289, 28793};
    assert_ids(o, want, LV_ARRAY_LEN(want));
    json_decref(o);
}

static void tokenizer_config_can_drop_bos(void **state) {
    const char *dir = make_model_dir("cli_nobos", "{\"add_bos_token\": false}");
    char args[2048];
    snprintf(args, sizeof args,
             "--model '%s' --prompt 'Hello world' --raw-prompt --max-tokens 0 --json", dir);
    json_t *o;
    assert_int_equal(cli(args, &o), 0);
    static const int want[] = {22557, 1526};
    assert_ids(o, want, LV_ARRAY_LEN(want));
    json_decref(o);
}

static void bad_usage_and_bad_models(void **state) {
    char args[2048], cmd[4096], *out;
    const char *bin = tu_env("LLAVA_BIN_DIR");
    assert_int_equal(cli("--prompt x", NULL), 2); /* no --model */
    assert_int_equal(cli("--model . --prompt x --max-tokens -3", NULL), 2);
    assert_int_equal(cli("--model . --prompt x --bogus", NULL), 2);
    assert_int_equal(cli("--help", NULL), 0);

    /* a directory with no config.json: exit 1 and a message naming the file */
    const char *empty = tu_tmpdir("cli_empty");
    snprintf(cmd, sizeof cmd, "'%s/llava-cli' --model '%s' --prompt x 2>&1", bin, empty);
    assert_int_equal(tu_run(cmd, &out), 1);
    assert_non_null(strstr(out, "config.json"));
    free(out);

    /* a broken tokenizer.json: exit 1, message names tokenizer.json */
    const char *dir = make_model_dir("cli_badtok", TOKENIZER_CONFIG);
    tu_write_file(dir, "tokenizer.json", "{\"model\": ", 10);
    snprintf(cmd, sizeof cmd, "'%s/llava-cli' --model '%s' --prompt x 2>&1", bin, dir);
    assert_int_equal(tu_run(cmd, &out), 1);
    assert_non_null(strstr(out, "tokenizer.json"));
    free(out);

    /* invalid UTF-8 in the prompt */
    dir = make_model_dir("cli_badutf8", TOKENIZER_CONFIG);
    snprintf(args, sizeof args, "--model '%s' --prompt \"$(printf 'a\\377b')\" --raw-prompt", dir);
    assert_int_equal(cli(args, NULL), 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(raw_prompt_keeps_image_token),
        cmocka_unit_test(chat_template_wraps_prompt),
        cmocka_unit_test(tokenizer_config_can_drop_bos),
        cmocka_unit_test(bad_usage_and_bad_models),
    };
    return cmocka_run_group_tests_name("cli", tests, NULL, NULL);
}
