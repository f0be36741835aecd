/*
 * llava-cli - run the engine from the command line.
 *
 * Today it loads a model directory's configs and tokenizer, decodes and
 * preprocesses the images exactly as the checkpoint's image processor does,
 * renders the prompt through the chat template (or takes it raw) and prints
 * the prompt's token ids with each <image> expanded into that image's
 * feature count, as the Hugging Face processor does. Generation joins with
 * the forward pass (issue 4); the flags and the JSON shape below are the
 * contract later checks rely on:
 *
 *   llava-cli --model PATH [--image FILE]... --prompt TEXT [--raw-prompt]
 *             [--max-tokens N] [--json] [--dump-pixels FILE]
 *   --json prints one object: {"prompt_ids", "n_prompt_tokens", "n_image_tokens",
 *                              "generated_ids", "text", "finish_reason", "timings"}
 *   --dump-pixels writes every image's tensor, in order, as raw little-endian
 *   float32 [tiles, 3, H, W] (written to a temporary file, then renamed).
 *
 * Exit status: 0 success, 1 the model or input could not be used, 2 bad usage.
 */
#include "base/buf.h"
#include "base/common.h"
#include "base/log.h"
#include "engine/image_params.h"
#include "image/anyres.h"
#include "image/decode.h"
#include "image/preprocess.h"
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
#include <unistd.h>

#define MAX_IMAGES 16

typedef struct {
    const char *model;              /* model directory */
    const char *prompt;             /* user text (UTF-8) */
    bool raw_prompt;                /* tokenize prompt as given, no chat template */
    bool json;                      /* one JSON object on stdout */
    long max_tokens;                /* tokens to generate */
    const char *log_level;          /* NULL: LOG_LEVEL or "info" */
    const char *images[MAX_IMAGES]; /* --image files, in order */
    int n_images;
    const char *dump_pixels; /* --dump-pixels output file, or NULL */
} cli_args;

static void usage(FILE *f) {
    fprintf(f, "usage: llava-cli --model PATH [--image FILE]... --prompt TEXT [options]\n"
               "  --model PATH      model directory (config.json, tokenizer.json, weights)\n"
               "  --image FILE      an image (JPEG, PNG, WebP, GIF, BMP); repeat for several\n"
               "  --prompt TEXT     the user's message (goes through the chat template)\n"
               "  --raw-prompt      tokenize TEXT as given; each <image> takes the next image\n"
               "                    (with no --image, <image> stays one ordinary token)\n"
               "  --max-tokens N    tokens to generate (only 0 until the forward pass lands)\n"
               "  --json            print one JSON object with prompt_ids, text, timings...\n"
               "  --dump-pixels F   write the preprocessed images as float32 [tiles,3,H,W]\n"
               "  --log-level L     error|warn|info|debug (default: $LOG_LEVEL or info)\n"
               "  -h, --help        this text\n");
}

/* Returns 0 to go on, 1 after --help, 2 on a usage error (message printed). */
static int parse_args(int argc, char **argv, cli_args *a) {
    enum { OPT_RAW = 256, OPT_MAXTOK, OPT_JSON, OPT_LOG, OPT_DUMP };
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},
        {"prompt", required_argument, NULL, 'p'},
        {"raw-prompt", no_argument, NULL, OPT_RAW},
        {"max-tokens", required_argument, NULL, OPT_MAXTOK},
        {"json", no_argument, NULL, OPT_JSON},
        {"log-level", required_argument, NULL, OPT_LOG},
        {"image", required_argument, NULL, 'i'},
        {"dump-pixels", required_argument, NULL, OPT_DUMP},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *a = (cli_args){.max_tokens = 0};
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "m:p:i:h", opts, NULL)) != -1) {
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
            case OPT_DUMP:
                a->dump_pixels = optarg;
                break;
            case 'i':
                if (a->n_images == MAX_IMAGES) {
                    fprintf(stderr, "llava-cli: at most %d images\n", MAX_IMAGES);
                    return 2;
                }
                a->images[a->n_images++] = optarg;
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
 * user turn of the model's chat template, holding one <image> per image. */
static lv_status build_prompt(const cli_args *a, lv_buf *text, lv_err *err) {
    if (a->raw_prompt) {
        lv_status st = lv_buf_puts(text, a->prompt);
        return st ? lv_fail(err, st, "out of memory") : LV_OK;
    }
    chat_part parts[MAX_IMAGES + 1];
    for (int i = 0; i < a->n_images; i++) parts[i] = (chat_part){CHAT_PART_IMAGE, NULL, 0};
    parts[a->n_images] = (chat_part){CHAT_PART_TEXT, a->prompt, strlen(a->prompt)};
    chat_message msg = {CHAT_USER, parts, (size_t)a->n_images + 1};
    size_t n_images;
    return chat_render(CHAT_TEMPLATE_LLAVA_MISTRAL, &msg, 1, text, &n_images, err);
}

/* Decodes and preprocesses every --image; n_tokens[i] is image i's feature
 * count. On failure the tensors made so far stay in tensors[] for the caller
 * to free. */
static lv_status load_images(const cli_args *a, const lv_model_dir *md, img_tensor *tensors,
                             int *n_tokens, double *decode_ms, double *preprocess_ms, lv_err *err) {
    img_proc_params params;
    lv_status st = engine_image_params(&md->config, &md->preproc, &params, err);
    if (st) return st;
    img_limits lim;
    img_limits_default(&lim);
    for (int i = 0; i < a->n_images; i++) {
        img_rgb rgb = {0};
        double t0 = now_ms();
        st = img_decode_file(a->images[i], &lim, &rgb, NULL, err);
        double t1 = now_ms();
        if (!st) st = img_preprocess(&rgb, &params, NULL, &tensors[i], err);
        if (st == LV_OK) {
            n_tokens[i] = img_num_image_tokens(tensors[i].image_h, tensors[i].image_w, &params);
        } else if (!strstr(err->msg, a->images[i])) {
            lv_err_prefix(err, "%s", a->images[i]);
        }
        *decode_ms += t1 - t0;
        *preprocess_ms += now_ms() - t1;
        img_rgb_free(&rgb);
        if (st) return st;
    }
    return LV_OK;
}

/* Replaces the k-th image token in ids with n_tokens[k] copies of it, as
 * the Hugging Face processor does. The number of image tokens must equal the
 * number of images. *ids is reallocated. */
static lv_status expand_image_tokens(int32_t **ids, size_t *n_ids, int32_t image_id,
                                     const int *n_tokens, int n_images, lv_err *err) {
    size_t found = 0;
    for (size_t i = 0; i < *n_ids; i++) found += (*ids)[i] == image_id;
    if (found != (size_t)n_images)
        return lv_fail(err, LV_ERR_ARG, "the prompt has %zu <image> token%s but %d image%s given",
                       found, found == 1 ? "" : "s", n_images, n_images == 1 ? " was" : "s were");
    size_t total = *n_ids - found;
    for (int k = 0; k < n_images; k++) total += (size_t)n_tokens[k];
    int32_t *out = malloc(total * sizeof *out);
    if (!out) return lv_fail(err, LV_ERR_NOMEM, "out of memory expanding image tokens");
    size_t o = 0;
    int k = 0;
    for (size_t i = 0; i < *n_ids; i++) {
        if ((*ids)[i] != image_id) {
            out[o++] = (*ids)[i];
            continue;
        }
        for (int j = 0; j < n_tokens[k]; j++) out[o++] = image_id;
        k++;
    }
    free(*ids);
    *ids = out;
    *n_ids = o;
    return LV_OK;
}

/* Writes the tensors as raw float32 [tiles, 3, H, W], image after image, to
 * a temporary file renamed over path only when complete. */
static lv_status dump_pixels(const char *path, const img_tensor *tensors, int n, lv_err *err) {
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
        return lv_fail(err, LV_ERR_ARG, "%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return lv_fail(err, LV_ERR_IO, "%s: cannot create", tmp);
    bool ok = true;
    for (int i = 0; i < n && ok; i++) {
        size_t count = (size_t)tensors[i].n_tiles * 3 * tensors[i].tile_h * tensors[i].tile_w;
        ok = fwrite(tensors[i].data, sizeof(float), count, f) == count; /* x86/ARM: LE */
    }
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return lv_fail(err, LV_ERR_IO, "%s: cannot write the pixel dump", path);
    }
    return LV_OK;
}

typedef struct {
    double load_ms, decode_ms, preprocess_ms, tokenize_ms;
} cli_timings;

static int print_json(const int32_t *ids, size_t n_ids, int n_image_tokens, const cli_timings *tm) {
    json_t *o = json_object(), *arr = json_array(), *timings = json_object();
    for (size_t i = 0; i < n_ids; i++) json_array_append_new(arr, json_integer(ids[i]));
    json_object_set_new(o, "prompt_ids", arr);
    json_object_set_new(o, "n_prompt_tokens", json_integer((json_int_t)n_ids));
    json_object_set_new(o, "n_image_tokens", json_integer(n_image_tokens));
    json_object_set_new(o, "generated_ids", json_array());
    json_object_set_new(o, "text", json_string(""));
    json_object_set_new(o, "finish_reason", json_string("length"));
    json_object_set_new(timings, "load_ms", json_real(tm->load_ms));
    json_object_set_new(timings, "image_decode_ms", json_real(tm->decode_ms));
    json_object_set_new(timings, "image_preprocess_ms", json_real(tm->preprocess_ms));
    json_object_set_new(timings, "tokenize_ms", json_real(tm->tokenize_ms));
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
    lv_model_dir md = {0};
    tok *t = NULL;
    lv_buf text = {0};
    int32_t *ids = NULL;
    size_t n_ids = 0;
    img_tensor tensors[MAX_IMAGES] = {{0}};
    int n_tokens[MAX_IMAGES] = {0}, n_image_tokens = 0;
    cli_timings tm = {0};
    rc = 1;

    double t0 = now_ms();
    if (mdir_open(a.model, 0, &md, &err)) goto fail;
    if (load_tokenizer(&md, &t, &err)) goto fail;
    tm.load_ms = now_ms() - t0;
    if (load_images(&a, &md, tensors, n_tokens, &tm.decode_ms, &tm.preprocess_ms, &err)) goto fail;
    for (int i = 0; i < a.n_images; i++) n_image_tokens += n_tokens[i];
    double t1 = now_ms();
    if (build_prompt(&a, &text, &err)) goto fail;
    if (tok_encode(t, text.data, text.len, true, &ids, &n_ids, &err)) goto fail;
    if (a.n_images &&
        expand_image_tokens(&ids, &n_ids, md.config.image_token_id, n_tokens, a.n_images, &err))
        goto fail;
    tm.tokenize_ms = now_ms() - t1;
    if (a.dump_pixels && dump_pixels(a.dump_pixels, tensors, a.n_images, &err)) goto fail;

    if (a.json) {
        rc = print_json(ids, n_ids, n_image_tokens, &tm);
    } else {
        for (size_t i = 0; i < n_ids; i++) printf("%s%d", i ? " " : "", ids[i]);
        printf("\n");
        rc = 0;
    }
    goto done;
fail:
    fprintf(stderr, "llava-cli: %s\n", err.msg);
done:
    for (int i = 0; i < a.n_images; i++) img_tensor_free(&tensors[i]);
    free(ids);
    lv_buf_free(&text);
    tok_free(t);
    mdir_close(&md);
    return rc;
}
