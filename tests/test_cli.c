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
#include <zlib.h>
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
    snprintf(src, sizeof src, "%s/configs/llava-v1.6-mistral-7b-hf.preprocessor_config.json",
             tu_env("LLAVA_TEST_DATA"));
    assert_int_equal(lv_read_file(src, 1 << 20, &cfg, &len, NULL), LV_OK);
    tu_write_file(dir, "preprocessor_config.json", cfg, len);
    free(cfg);
    return dir;
}

/* golden.json's llava_next entry for an image file ("images/x.png"). */
static json_t *golden_case(json_t *golden, const char *file) {
    json_t *cases = json_object_get(golden, "cases"), *c;
    size_t i;
    json_array_foreach(cases, i, c) {
        if (strcmp(json_string_value(json_object_get(c, "file")), file) == 0)
            return json_object_get(c, "llava_next");
    }
    fail_msg("%s not in golden.json", file);
    return NULL;
}

/* Runs llava-cli with args (already shell-quoted); returns its exit status
 * and, if json_out, the parsed stdout. */
static int cli(const char *args, json_t **json_out) {
    char cmd[8192];
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

/* Two images through the chat template: the pixel dump is the reference
 * processor's pixel_values, image after image, and each <image> becomes that
 * image's feature count (rgb_hubble 1000x872 -> 2634, exif_orient_6 shown
 * as 200x300 -> 984, by the formula of spec llava-next.md §5.1). */
static void images_expand_and_dump_pixels(void **state) {
    const char *dir = make_model_dir("cli_images", TOKENIZER_CONFIG);
    const char *assets = tu_env("LLAVA_TEST_ASSETS");
    char dump[2048], args[4096];
    snprintf(dump, sizeof dump, "%s/pixels.bin", dir);
    snprintf(args, sizeof args,
             "--model '%s' --image '%s/images/rgb_hubble_1000x872.jpg' "
             "--image '%s/images/exif_orient_6.jpg' --prompt 'Compare' --max-tokens 0 --json "
             "--dump-pixels '%s'",
             dir, assets, assets, dump);
    json_t *o;
    assert_int_equal(cli(args, &o), 0);
    assert_int_equal(json_integer_value(json_object_get(o, "n_image_tokens")), 2634 + 984);
    json_t *ids = json_object_get(o, "prompt_ids");
    /* [INST] <image>\n<image>\nCompare [/INST] with each image expanded */
    assert_int_equal(json_array_size(ids), 1 + 3 + 1 + 2634 + 2 + 984 + 2 + 1 + 4);
    size_t n_img = 0, i;
    json_t *v;
    json_array_foreach(ids, i, v) n_img += json_integer_value(v) == 32000;
    assert_int_equal(n_img, 2634 + 984);
    assert_int_equal(json_integer_value(json_array_get(ids, 5)), 32000);
    assert_int_equal(json_integer_value(json_array_get(ids, 4)), 28705);
    json_decref(o);

    char golden_path[2048];
    snprintf(golden_path, sizeof golden_path, "%s/image/golden.json", tu_env("LLAVA_TEST_DATA"));
    json_error_t je;
    json_t *golden = json_load_file(golden_path, 0, &je);
    assert_non_null(golden);
    json_t *a = golden_case(golden, "images/rgb_hubble_1000x872.jpg");
    json_t *b = golden_case(golden, "images/exif_orient_6.jpg");
    size_t tile = 3 * 336 * 336 * sizeof(float);
    size_t na = json_integer_value(json_array_get(json_object_get(a, "shape"), 0)) * tile;
    size_t nb = json_integer_value(json_array_get(json_object_get(b, "shape"), 0)) * tile;
    char *px;
    size_t len;
    assert_int_equal(lv_read_file(dump, 64u << 20, &px, &len, NULL), LV_OK);
    assert_int_equal(len, na + nb);
    assert_int_equal(crc32(0, (const Bytef *)px, na),
                     json_integer_value(json_object_get(a, "crc32")));
    assert_int_equal(crc32(0, (const Bytef *)px + na, nb),
                     json_integer_value(json_object_get(b, "crc32")));
    free(px);
    json_decref(golden);
}

/* Bad images and mismatched placeholders fail cleanly and leave no dump. */
static void bad_images(void **state) {
    const char *dir = make_model_dir("cli_badimg", TOKENIZER_CONFIG);
    const char *assets = tu_env("LLAVA_TEST_ASSETS");
    const char *bin = tu_env("LLAVA_BIN_DIR");
    char cmd[4096], *out;
    snprintf(cmd, sizeof cmd,
             "'%s/llava-cli' --model '%s' --image '%s/config.json' --prompt x "
             "--dump-pixels '%s/px.bin' 2>&1",
             bin, dir, dir, dir);
    assert_int_equal(tu_run(cmd, &out), 1);
    assert_non_null(strstr(out, "config.json"));
    assert_non_null(strstr(out, "unrecognised image format"));
    free(out);
    char dump[2048];
    snprintf(dump, sizeof dump, "%s/px.bin", dir);
    assert_false(lv_is_file(dump));

    snprintf(cmd, sizeof cmd,
             "'%s/llava-cli' --model '%s' --image '%s/images/size_1x1.png' --raw-prompt "
             "--prompt 'a <image> b <image>' 2>&1",
             bin, dir, assets);
    assert_int_equal(tu_run(cmd, &out), 1);
    assert_non_null(strstr(out, "2 <image> tokens but 1 image was given"));
    free(out);

    /* a pixel dump into a folder that does not exist: error, nothing written */
    snprintf(cmd, sizeof cmd,
             "'%s/llava-cli' --model '%s' --image '%s/images/size_1x1.png' --prompt x "
             "--dump-pixels '%s/nope/px.bin' 2>&1",
             bin, dir, assets, dir);
    assert_int_equal(tu_run(cmd, &out), 1);
    assert_non_null(strstr(out, "px.bin"));
    free(out);
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
        cmocka_unit_test(images_expand_and_dump_pixels),
        cmocka_unit_test(bad_images),
        cmocka_unit_test(bad_usage_and_bad_models),
    };
    return cmocka_run_group_tests_name("cli", tests, NULL, NULL);
}
