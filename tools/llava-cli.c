/*
 * llava-cli - run the engine from the command line.
 *
 * Today (issue 2) it loads a model directory's configs and tokenizer, renders
 * the prompt through the chat template (or takes it raw) and prints the
 * prompt's token ids. Generation joins with the forward pass (issue 4); the
 * flags and the JSON shape below are the contract later checks rely on:
 *
 *   llava-cli --model PATH --prompt TEXT [--raw-prompt] [--max-tokens N] [--json]
 *   --json prints one object: {"prompt_ids", "n_prompt_tokens", "n_image_tokens",
 *                              "generated_ids", "text", "finish_reason", "timings"}
 *
 * Exit status: 0 success, 1 the model or input could not be used, 2 bad usage.
 */
#include "base/buf.h"
#include "base/common.h"
#include "base/log.h"
#include "io/model_dir.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const char *model;     /* model directory */
    const char *prompt;    /* user text (UTF-8) */
    bool raw_prompt;       /* tokenize prompt as given, no chat template */
    bool json;             /* one JSON object on stdout */
    long max_tokens;       /* tokens to generate */
    const char *log_level; /* NULL: LOG_LEVEL or "info" */
} cli_args;

static void usage(FILE *f) {
    fprintf(f, "usage: llava-cli --model PATH --prompt TEXT [options]\n"
               "  --model PATH      model directory (config.json, tokenizer.json, weights)\n"
               "  --prompt TEXT     the user's message (goes through the chat template)\n"
               "  --raw-prompt      tokenize TEXT as given; <image> stays the image token\n"
               "  --max-tokens N    tokens to generate (only 0 until the forward pass lands)\n"
               "  --json            print one JSON object with prompt_ids, text, timings...\n"
               "  --log-level L     error|warn|info|debug (default: $LOG_LEVEL or info)\n"
               "  -h, --help        this text\n");
}

/* Returns 0 to go on, 1 after --help, 2 on a usage error (message printed). */
static int parse_args(int argc, char **argv, cli_args *a) {
    enum { OPT_RAW = 256, OPT_MAXTOK, OPT_JSON, OPT_LOG };
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},
        {"prompt", required_argument, NULL, 'p'},
        {"raw-prompt", no_argument, NULL, OPT_RAW},
        {"max-tokens", required_argument, NULL, OPT_MAXTOK},
        {"json", no_argument, NULL, OPT_JSON},
        {"log-level", required_argument, NULL, OPT_LOG},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *a = (cli_args){.max_tokens = 0};
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "m:p:h", opts, NULL)) != -1) {
        char *end;
        switch (c) {
            case 'm':
                a->model = optarg;
                break;
            case 'p':
                a->prompt = optarg;
                break;
            case OPT_RAW:
                a->raw_prompt = true;
                break;
            case OPT_JSON:
                a->json = true;
                break;
            case OPT_LOG:
                a->log_level = optarg;
                break;
            case OPT_MAXTOK:
                a->max_tokens = strtol(optarg, &end, 10);
                if (*optarg == '\0' || *end != '\0' || a->max_tokens < 0) {
                    fprintf(stderr, "llava-cli: --max-tokens wants a count >= 0, got '%s'\n",
                            optarg);
                    return 2;
                }
                break;
            case 'h':
                usage(stdout);
                return 1;
            default:
                fprintf(stderr, "llava-cli: unknown or incomplete option '%s'\n", argv[optind - 1]);
                usage(stderr);
                return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "llava-cli: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!a->model || !a->prompt) {
        fprintf(stderr, "llava-cli: --model and --prompt are required\n");
        usage(stderr);
        return 2;
    }
    return 0;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Loads the tokenizer of a model directory, with BOS/EOS as its
 * tokenizer_config.json says. Caller frees *out with tok_free. */
static lv_status load_tokenizer(const lv_model_dir *md, tok **out, lv_err *err) {
    lv_status st = tok_load(md->tokenizer_path, out, err);
    if (st) return st;
    const lv_tokenizer_config *tc = &md->tokenizer_config;
    if (md->has_tokenizer_config && (tc->has_add_bos_token || tc->has_add_eos_token)) {
        bool bos = tc->has_add_bos_token ? tc->add_bos_token : tok_bos_id(*out) >= 0;
        bool eos = tc->has_add_eos_token ? tc->add_eos_token : false;
        tok_set_add_special(*out, bos, eos);
    }
    return LV_OK;
}

/* The text to tokenize: the prompt as given (--raw-prompt) or rendered as one
 * user turn of the model's chat template. */
static lv_status build_prompt(const cli_args *a, lv_buf *text, lv_err *err) {
    if (a->raw_prompt) {
        lv_status st = lv_buf_puts(text, a->prompt);
        return st ? lv_fail(err, st, "out of memory") : LV_OK;
    }
    chat_part part = {CHAT_PART_TEXT, a->prompt, strlen(a->prompt)};
    chat_message msg = {CHAT_USER, &part, 1};
    size_t n_images;
    return chat_render(CHAT_TEMPLATE_LLAVA_MISTRAL, &msg, 1, text, &n_images, err);
}

static int print_json(const int32_t *ids, size_t n_ids, double load_ms, double tok_ms) {
    json_t *o = json_object(), *arr = json_array(), *timings = json_object();
    for (size_t i = 0; i < n_ids; i++) json_array_append_new(arr, json_integer(ids[i]));
    json_object_set_new(o, "prompt_ids", arr);
    json_object_set_new(o, "n_prompt_tokens", json_integer((json_int_t)n_ids));
    json_object_set_new(o, "n_image_tokens", json_integer(0));
    json_object_set_new(o, "generated_ids", json_array());
    json_object_set_new(o, "text", json_string(""));
    json_object_set_new(o, "finish_reason", json_string("length"));
    json_object_set_new(timings, "load_ms", json_real(load_ms));
    json_object_set_new(timings, "tokenize_ms", json_real(tok_ms));
    json_object_set_new(o, "timings", timings);
    int rc = json_dumpf(o, stdout, JSON_COMPACT | JSON_ENSURE_ASCII) == 0 ? 0 : 1;
    fputc('\n', stdout);
    json_decref(o);
    return rc;
}

int main(int argc, char **argv) {
    cli_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc == 1 ? 0 : 2;
    const char *level = a.log_level ? a.log_level : getenv("LOG_LEVEL");
    if (level) {
        int l = lv_log_parse_level(level);
        if (l < 0) {
            fprintf(stderr, "llava-cli: unknown log level '%s'\n", level);
            return 2;
        }
        lv_log_set_level((lv_log_level)l);
    }
    if (a.max_tokens > 0) {
        fprintf(stderr, "llava-cli: generation is not built yet (the forward pass is issue 4); "
                        "use --max-tokens 0\n");
        return 2;
    }

    lv_err err = {{0}};
    lv_model_dir md;
    tok *t = NULL;
    lv_buf text = {0};
    int32_t *ids = NULL;
    size_t n_ids = 0;
    rc = 1;

    double t0 = now_ms();
    if (mdir_open(a.model, 0, &md, &err)) goto fail_nomd;
    if (load_tokenizer(&md, &t, &err)) goto fail;
    double t1 = now_ms();
    if (build_prompt(&a, &text, &err)) goto fail;
    if (tok_encode(t, text.data, text.len, true, &ids, &n_ids, &err)) goto fail;
    double t2 = now_ms();

    if (a.json) {
        rc = print_json(ids, n_ids, t1 - t0, t2 - t1);
    } else {
        for (size_t i = 0; i < n_ids; i++) printf("%s%d", i ? " " : "", ids[i]);
        printf("\n");
        rc = 0;
    }
    goto done;
fail:
    fprintf(stderr, "llava-cli: %s\n", err.msg);
done:
    free(ids);
    lv_buf_free(&text);
    tok_free(t);
    mdir_close(&md);
    return rc;
fail_nomd:
    fprintf(stderr, "llava-cli: %s\n", err.msg);
    return 1;
}
