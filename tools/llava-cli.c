/*
 * llava-cli - run the engine from the command line: images + prompt in,
 * generated text out.
 *
 * It loads a model directory's configs and tokenizer, decodes and
 * preprocesses the images exactly as the checkpoint's image processor does,
 * renders the prompt through the chat template (or takes it raw), expands
 * each <image> into that image's feature count as the Hugging Face processor
 * does, then (with --max-tokens > 0) loads the weights and generates. The
 * flags and the JSON shape below are the contract later checks rely on:
 *
 *   llava-cli --model PATH|ORG/NAME[:QUANT] [--mmproj FILE] [--offline] [--image FILE]...
 *             --prompt TEXT [--raw-prompt]
 *             [--max-tokens N] [--temperature T] [--top-k K] [--top-p P]
 *             [--min-p P] [--repeat-penalty R] [--seed S] [--threads N] [--exact]
 *             [--device cpu|ref|cuda[:N]] [--stop TEXT]... [--json]
 *             [--json-schema FILE | --grammar FILE | --json-object]
 *             [--logits-out FILE] [--dump-pixels FILE]
 *   --json prints one object: {"prompt_ids", "n_prompt_tokens", "n_image_tokens",
 *                              "generated_ids", "text", "finish_reason", "timings"}
 *   (plus "seed"); without it the text streams to stdout as it is generated
 *   (with --max-tokens 0: the prompt ids, space-separated).
 *   --logits-out writes the raw logits of every generated step as
 *   little-endian float32 [n_generated, vocab]; --dump-pixels every image's
 *   tensor, in order, as float32 [tiles, 3, H, W]. Both are written to a
 *   temporary file renamed over the target once complete.
 * --model ORG/NAME not in the local Hugging Face cache is downloaded into it
 * first, with a progress bar on stderr (tools/common/tool_model.h; not with
 * --offline or HF_HUB_OFFLINE=1).
 * --device picks the backend (--backend is the same flag under its older
 * name); a name this build lacks fails at once, before the model is read.
 * Sampling defaults come from the checkpoint's generation_config.json
 * (greedy unless it sets do_sample); each flag overrides one value.
 * --json-schema, --grammar and --json-object constrain the output (one of
 * them at most): the text can only be JSON the schema accepts (the server's
 * response_format json_schema), a sentence of the grammar (engine/grammar.h's
 * syntax, the server's `grammar`) or any JSON object; EOS comes once it is
 * complete. The file (at most 1 MiB) is compiled before the model is read.
 *
 * Exit status: 0 success, 1 the model or input could not be used, 2 bad usage
 * (a schema or grammar that does not compile included: the message names the
 * keyword and its place, or the grammar's line and column).
 */
#include "base/clock.h"
#include "base/common.h"
#include "base/log.h"
#include "base/buf.h"
#include "base/file.h"
#include "engine/generate.h"
#include "engine/grammar.h"
#include "engine/json_schema.h"
#include "engine/run.h"
#include "engine/request.h"
#include "engine/request_video.h"
#include "engine/structured.h"
#include "model/llava.h"
#include "common/model_report.h"
#include "common/tool_args.h"
#include "common/tool_model.h"

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_IMAGES       16
#define MAX_GRAMMAR_FILE (1u << 20) /* --json-schema and --grammar files, bytes */

typedef struct {
    const char *model;              /* model directory, or a GGUF text model with --mmproj */
    const char *mmproj;             /* --mmproj: the GGUF pair's mmproj file, or NULL */
    bool offline;                   /* --offline: never download the model */
    const char *prompt;             /* user text (UTF-8) */
    bool raw_prompt;                /* tokenize prompt as given, no chat template */
    bool json;                      /* one JSON object on stdout */
    long max_tokens;                /* tokens to generate; -1 = the checkpoint's default */
    const char *log_level;          /* NULL: LOG_LEVEL or "info" */
    const char *images[MAX_IMAGES]; /* --image files, in order */
    int n_images;
    const char
        *video_frames; /* --video-frames F1,F2,...: a video as its frames (SmolVLM2), or NULL */
    double video_fps;  /* --video-fps: the frames' rate (0: transformers' 24) */
    const char *video; /* --video FILE: a video file (SmolVLM2), or NULL */
    const char *dump_pixels; /* --dump-pixels output file, or NULL */
    const char *logits_out;  /* --logits-out output file, or NULL */
    const char *device;      /* --device / --backend: "cpu" (default), "ref", "cuda[:N]" */
    int threads;             /* 0 = all cores */
    bool exact;              /* --exact: llava_set_exact */
    int tp;                  /* --tensor-parallel N (0: none): llava_set_tensor_parallel */
    bool tp_whole_tower;     /* --tp-whole-tower */
    /* sampling overrides; NaN / -1 = not given */
    double temperature, top_p, min_p, repeat_penalty;
    long top_k;
    bool has_seed;
    unsigned long long seed;
    const char *stop[GEN_MAX_STOP];
    int n_stop;
    const char *json_schema; /* --json-schema FILE, or NULL */
    const char *grammar;     /* --grammar FILE, or NULL */
    bool json_object;        /* --json-object */
} cli_args;

static void usage(FILE *f) {
    fprintf(f,
            "usage: llava-cli --model PATH [--image FILE]... --prompt TEXT [options]\n"
            "  --model PATH          model directory (config.json, tokenizer.json, weights;\n"
            "                        or a llama.cpp GGUF pair: text .gguf + mmproj*.gguf), or\n"
            "                        a Hugging Face repo id ORG/NAME[:QUANT]: from the local\n"
            "                        cache, else downloaded into it from HF_ENDPOINT\n"
            "  --offline             never download (also HF_HUB_OFFLINE=1)\n"
            "  --mmproj FILE         with --model text.gguf: the GGUF pair's mmproj file\n"
            "  --image FILE          an image (JPEG, PNG, WebP, GIF, BMP); repeat for several\n"
            "  --prompt TEXT         the user's message (goes through the chat template)\n"
            "  --video-frames LIST   a video given as its frames, comma-separated image files\n"
            "                        in order (SmolVLM2 only; not with --image; more than the\n"
            "                        model's video_sampling.max_frames are thinned evenly)\n"
            "  --video-fps F         the frames' rate, for their timestamps (default 24, as\n"
            "                        transformers assumes for frames without metadata)\n"
            "  --video FILE          a video file (MP4, WebM, AVI, ...: what FFmpeg reads),\n"
            "                        sampled as SmolVLM2's processor does (SmolVLM2 only)\n"
            "  --raw-prompt          tokenize TEXT as given; each <image> takes the next image\n"
            "                        (with no --image, <image> stays one ordinary token)\n"
            "  --max-tokens N        tokens to generate (default: generation_config's\n"
            "                        max_new_tokens, else the rest of the context);\n"
            "                        0 = only tokenize\n"
            "  --temperature T       0 = greedy; default from generation_config.json\n"
            "  --top-k K             keep the K most likely tokens (0 = off)\n"
            "  --top-p P             nucleus sampling mass (1 = off)\n"
            "  --min-p P             drop tokens below P x the top probability (0 = off)\n"
            "  --repeat-penalty R    HF repetition_penalty (1 = off)\n"
            "  --seed S              sampling seed (default: random, printed with --json)\n"
            "  --stop TEXT           stop before TEXT (repeatable, up to %d)\n"
            "  --threads N           CPU threads (default: all cores)\n" TOOL_HELP_TENSOR_PARALLEL
            "  --exact               exact arithmetic: float32 on the dequantized weights and a\n"
            "                        float32 KV cache, as transformers computes (default: int8\n"
            "                        activations with quantized weights, f16 KV cache)\n"
            "  --device NAME         cpu (default), ref (the scalar reference), cuda or cuda:N\n"
            "                        (CUDA builds); --backend NAME is the same\n"
            "  --json                print one JSON object with prompt_ids, text, timings...\n"
            "  --json-schema FILE    constrain the output to JSON that the JSON Schema in FILE\n"
            "                        accepts (as response_format json_schema; at most 1 MiB)\n"
            "  --grammar FILE        constrain the output to the grammar in FILE (GBNF-like,\n"
            "                        root ::= ...; at most 1 MiB)\n"
            "  --json-object         constrain the output to any JSON object\n"
            "                        (the three are exclusive)\n"
            "  --logits-out F        write every step's logits as float32 [n, vocab]\n"
            "  --dump-pixels F       write the preprocessed images as float32 [tiles,3,H,W]\n"
            "  --log-level L         error|warn|info|debug (default: $LOG_LEVEL or info)\n"
            "  -h, --help            this text\n"
            "  --version             the version, commit and CPU kernels\n",
            GEN_MAX_STOP);
}

/* --seed: an integer in [0, 2^63). */
static bool set_seed(void *dst, const char *s) {
    cli_args *a = dst;
    a->has_seed = tool_seed("llava-cli", "seed", s, INT64_MAX, &a->seed);
    return a->has_seed;
}

static bool add_stop(void *dst, const char *s) {
    cli_args *a = dst;
    if (a->n_stop == GEN_MAX_STOP || !*s) {
        fprintf(stderr, "llava-cli: --stop wants non-empty text, at most %d times\n", GEN_MAX_STOP);
        return false;
    }
    a->stop[a->n_stop++] = s;
    return true;
}

static bool add_image(void *dst, const char *s) {
    cli_args *a = dst;
    if (a->n_images == MAX_IMAGES) {
        fprintf(stderr, "llava-cli: at most %d images\n", MAX_IMAGES);
        return false;
    }
    a->images[a->n_images++] = s;
    return true;
}

/* Returns 0 to go on, 1 after --help, 2 on a usage error (message printed). */
static int parse_args(int argc, char **argv, cli_args *a) {
    *a = (cli_args){.max_tokens = -1,
                    .device = "cpu",
                    .temperature = NAN,
                    .top_p = NAN,
                    .min_p = NAN,
                    .repeat_penalty = NAN,
                    .top_k = -1};
    const tool_opt opts[] = {
        TOOL_STR("model", 'm', &a->model),
        TOOL_STR("mmproj", 0, &a->mmproj),
        TOOL_FLAG("offline", 0, &a->offline),
        TOOL_STR("prompt", 'p', &a->prompt),
        TOOL_FLAG("raw-prompt", 0, &a->raw_prompt),
        TOOL_LONG("max-tokens", 0, &a->max_tokens, 0, 1e9),
        TOOL_FLAG("json", 0, &a->json),
        TOOL_FLAG("exact", 0, &a->exact),
        TOOL_INT("tensor-parallel", 0, &a->tp, 0, 8),
        TOOL_FLAG("tp-whole-tower", 0, &a->tp_whole_tower),
        TOOL_STR("log-level", 0, &a->log_level),
        TOOL_FN("image", 'i', add_image, a),
        TOOL_STR("dump-pixels", 0, &a->dump_pixels),
        TOOL_STR("video-frames", 0, &a->video_frames),
        TOOL_STR("video", 0, &a->video),
        TOOL_NUM("video-fps", 0, &a->video_fps, 1e-3, 1000),
        TOOL_NUM("temperature", 0, &a->temperature, 0, 1e6),
        TOOL_LONG("top-k", 0, &a->top_k, 0, 1e9),
        TOOL_NUM("top-p", 0, &a->top_p, 1e-9, 1),
        TOOL_NUM("min-p", 0, &a->min_p, 0, 1),
        TOOL_NUM("repeat-penalty", 0, &a->repeat_penalty, 1e-6, 1e6),
        TOOL_FN("seed", 0, set_seed, a),
        TOOL_INT("threads", 0, &a->threads, 0, 4096),
        TOOL_STR("logits-out", 0, &a->logits_out),
        TOOL_STR("device", 0, &a->device),
        TOOL_STR("backend", 0, &a->device), /* the older name */
        TOOL_FN("stop", 0, add_stop, a),
        TOOL_STR("json-schema", 0, &a->json_schema),
        TOOL_STR("grammar", 0, &a->grammar),
        TOOL_FLAG("json-object", 0, &a->json_object),
    };
    static const tool_info tool = {"llava-cli", usage, false};
    int rc = tool_parse(&tool, opts, LV_ARRAY_LEN(opts), argc, argv);
    if (rc) return rc;
    if (!tool_log_level("llava-cli", a->log_level)) return 2;
    if (!a->model || !a->prompt) {
        fprintf(stderr, "llava-cli: --model and --prompt are required\n");
        usage(stderr);
        return 2;
    }
    if (a->video && a->video_frames) {
        fprintf(stderr, "llava-cli: one video: --video or --video-frames\n");
        return 2;
    }
    if (a->video && (a->n_images || a->raw_prompt)) {
        fprintf(stderr, "llava-cli: --video cannot be mixed with --image (SmolVLM's processor "
                        "takes images or videos, not both) nor used with --raw-prompt\n");
        return 2;
    }
    if (a->video_frames && a->n_images) {
        fprintf(stderr, "llava-cli: --image and --video-frames cannot be mixed (SmolVLM's "
                        "processor takes images or videos, not both)\n");
        return 2;
    }
    if (a->video_frames && a->raw_prompt) {
        fprintf(stderr, "llava-cli: --video-frames goes through the chat template (no "
                        "--raw-prompt)\n");
        return 2;
    }
    if ((a->json_schema != NULL) + (a->grammar != NULL) + a->json_object > 1) {
        fprintf(stderr, "llava-cli: --json-schema, --grammar and --json-object exclude each "
                        "other\n");
        return 2;
    }
    return 0;
}

/* ---- constrained output ------------------------------------------------------------ */

/* The grammar of --json-schema, --grammar or --json-object (*out NULL when
 * none was given). Returns 0; 1 when the file cannot be read; 2 when it is
 * over MAX_GRAMMAR_FILE or does not compile (err says why, naming the file). */
static int load_grammar(const cli_args *a, grammar **out, lv_err *err) {
    *out = NULL;
    const char *path = a->json_schema ? a->json_schema : a->grammar;
    if (!path && !a->json_object) return 0;
    char *text = NULL;
    size_t len = 0;
    lv_buf g = {0};
    lv_status st = LV_OK;
    if (path && (st = lv_read_file(path, MAX_GRAMMAR_FILE, &text, &len, err)))
        return st == LV_ERR_FORMAT ? 2 : 1; /* FORMAT: over the limit */
    if (a->json_object)
        st = json_object_grammar(&g, err);
    else if (a->json_schema)
        st = json_schema_to_grammar(text, len, &g, err);
    if (!st)
        st = a->grammar ? grammar_compile(text, len, out, err)
                        : grammar_compile(g.data, g.len, out, err);
    lv_buf_free(&g);
    free(text);
    if (!st) return 0;
    if (st != LV_ERR_NOMEM) lv_err_prefix(err, "%s", a->json_object ? "--json-object" : path);
    return st == LV_ERR_NOMEM ? 1 : 2;
}

/* ---- images ------------------------------------------------------------------------ */

/* Decodes and preprocesses every --image (engine/request); n_tokens[i] is
 * image i's feature count. On failure the tensors made so far stay in
 * tensors[] for the caller to free. */
static lv_status load_images(const cli_args *a, const llava *m, img_tensor *tensors, int *n_tokens,
                             double *decode_ms, double *preprocess_ms, lv_err *err) {
    for (int i = 0; i < a->n_images; i++) {
        double dec = 0, pre = 0;
        lv_status st =
            request_load_image(m, a->images[i], &tensors[i], &n_tokens[i], &dec, &pre, err);
        *decode_ms += dec;
        *preprocess_ms += pre;
        if (st) return st;
    }
    return LV_OK;
}

/* --video-frames: the files of the list, the kept ones (request_video's
 * thinning) made into frames; *n_frames of them in tensors (room for the
 * model's max_frames). On failure the tensors made so far stay for the
 * caller to free. */
static lv_status load_video(const cli_args *a, const llava *m, img_tensor *tensors, int *n_frames,
                            int *n_image_tokens, request_video *v, double *decode_ms, lv_err *err) {
    *n_frames = 0;
    int max_frames = 0;
    if (!request_video_supported(m, &max_frames, NULL, NULL))
        return lv_fail(err, LV_ERR_UNSUPPORTED, "--video-frames: %s", request_video_refusal(m));
    const char *paths[VIDEO_MAX_INPUT_FRAMES];
    int n = 0;
    char *list = strdup(a->video_frames);
    if (!list) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    lv_status st = LV_OK;
    for (char *item = list; item && !st; n++) {
        char *comma = strchr(item, ',');
        if (comma) *comma = '\0';
        if (n == VIDEO_MAX_INPUT_FRAMES)
            st = lv_fail(err, LV_ERR_ARG, "--video-frames: at most %d frames",
                         VIDEO_MAX_INPUT_FRAMES);
        else if (!*item)
            st = lv_fail(err, LV_ERR_ARG, "--video-frames: an empty file name");
        else
            paths[n] = item;
        item = comma ? comma + 1 : NULL;
    }
    int64_t keep[VIDEO_MAX_INPUT_FRAMES];
    int n_keep = 0;
    if (!st) st = video_from_frame_list(n, a->video_fps, max_frames, keep, &n_keep, v, err);
    for (int i = 0; !st && i < n_keep; i++) {
        const char *path = paths[keep[i]];
        char *bytes = NULL;
        size_t len = 0;
        int n_tok = 0;
        double t0 = lv_now_ms();
        st = lv_read_file(path, IMG_DEFAULT_MAX_ENCODED_BYTES, &bytes, &len, err);
        if (!st)
            st = request_video_frame_from_bytes(m, (const uint8_t *)bytes, len, &tensors[i], &n_tok,
                                                err);
        free(bytes);
        *decode_ms += lv_now_ms() - t0;
        if (st) {
            lv_err_prefix(err, "--video-frames: %s", path);
            break;
        }
        *n_frames = i + 1;
        *n_image_tokens += n_tok;
    }
    free(list);
    return st;
}

/* --video FILE: decoded and sampled (request_video_from_bytes). */
static lv_status load_video_file(const cli_args *a, const llava *m, img_tensor *tensors,
                                 int *n_frames, int *n_image_tokens, request_video *v,
                                 double *decode_ms, lv_err *err) {
    const char *why = request_video_refusal(m);
    if (why) return lv_fail(err, LV_ERR_UNSUPPORTED, "--video: %s", why);
    char *bytes = NULL;
    size_t len = 0;
    double t0 = lv_now_ms();
    lv_status st = lv_read_file(a->video, VIDEO_MAX_FILE_BYTES, &bytes, &len, err);
    if (st == LV_ERR_FORMAT)
        st = lv_fail(err, LV_ERR_TOO_LARGE, "over %u bytes", VIDEO_MAX_FILE_BYTES);
    if (!st)
        st = request_video_from_bytes(m, (const uint8_t *)bytes, len, tensors, n_frames,
                                      n_image_tokens, v, err);
    free(bytes);
    *decode_ms += lv_now_ms() - t0;
    if (st) lv_err_prefix(err, "--video: %s", a->video);
    return st;
}

/* ---- output files ------------------------------------------------------------------ */

/* An output written to path.tmp.PID and renamed over path when complete. */
typedef struct {
    const char *path;
    char tmp[4096];
    FILE *f;
    bool ok;
} out_file;

static lv_status out_open(out_file *o, const char *path, lv_err *err) {
    o->path = path;
    o->ok = true;
    if ((size_t)snprintf(o->tmp, sizeof o->tmp, "%s.tmp.%ld", path, (long)getpid()) >=
        sizeof o->tmp)
        return lv_fail(err, LV_ERR_ARG, "%s: path too long", path);
    o->f = fopen(o->tmp, "wb");
    return o->f ? LV_OK : lv_fail(err, LV_ERR_IO, "%s: cannot create", o->tmp);
}

static void out_write(out_file *o, const void *data, size_t bytes) {
    if (o->f && o->ok) o->ok = fwrite(data, 1, bytes, o->f) == bytes; /* x86/ARM: LE */
}

/* keep false: discard. Otherwise rename into place; LV_ERR_IO if anything failed. */
static lv_status out_close(out_file *o, bool keep, lv_err *err) {
    if (!o->f) return LV_OK;
    bool ok = (fclose(o->f) == 0) && o->ok;
    o->f = NULL;
    if (keep && ok && rename(o->tmp, o->path) == 0) return LV_OK;
    unlink(o->tmp);
    return keep ? lv_fail(err, LV_ERR_IO, "%s: cannot write", o->path) : LV_OK;
}

static lv_status dump_pixels(const char *path, const img_tensor *tensors, int n, lv_err *err) {
    out_file o;
    lv_status st = out_open(&o, path, err);
    if (st) return st;
    for (int i = 0; i < n; i++)
        out_write(&o, tensors[i].data,
                  (size_t)tensors[i].n_tiles * 3 * tensors[i].tile_h * tensors[i].tile_w * 4);
    return out_close(&o, true, err);
}

/* ---- generation ----------------------------------------------------------------------- */

typedef struct {
    bool stream;     /* print text to stdout as it comes */
    out_file logits; /* --logits-out, when f != NULL */
} gen_sink;

static void on_text(void *ud, const char *text, size_t len) {
    gen_sink *s = ud;
    if (!s->stream) return;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
}

static void on_token(void *ud, const gen_token *t) {
    gen_sink *s = ud;
    out_write(&s->logits, t->logits, (size_t)t->vocab * sizeof *t->logits);
}

/* The request's parameters: the checkpoint's defaults, then the flags.
 * max_tokens: --max-tokens, else generation_config.json's max_new_tokens,
 * else the rest of the context (context length - the n_ids prompt ids), so
 * an answer ends at EOS rather than at an arbitrary count. */
static void make_params(const cli_args *a, const llava *m, size_t n_ids, gen_params *p) {
    gen_params_default(p, m);
    const lv_generation_config *gc = llava_generation_config(m);
    long rest = (long)llava_max_ctx(m) - (long)n_ids;
    p->max_tokens = a->max_tokens >= 0       ? (int)a->max_tokens
                    : gc->has_max_new_tokens ? gc->max_new_tokens
                    : rest > 0               ? (int)rest
                                             : 1; /* gen_run then says the prompt is too long */
    sample_params *s = &p->sampling;
    if (!isnan(a->temperature)) s->temperature = (float)a->temperature;
    if (a->top_k >= 0) s->top_k = (int)a->top_k;
    if (!isnan(a->top_p)) s->top_p = (float)a->top_p;
    if (!isnan(a->min_p)) s->min_p = (float)a->min_p;
    if (!isnan(a->repeat_penalty)) s->repetition_penalty = (float)a->repeat_penalty;
    s->seed =
        a->has_seed ? a->seed : ((uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32)) & INT64_MAX;
    for (int i = 0; i < a->n_stop; i++) p->stop[i] = a->stop[i];
    p->n_stop = a->n_stop;
}

typedef struct {
    double load_ms, decode_ms, preprocess_ms, tokenize_ms, weights_ms;
} cli_timings;

static void add_timings(json_t *t, const gen_timings *g, const llava *m) {
    json_object_set_new(t, "backend", json_string(llava_device(m)));
    json_object_set_new(t, "threads", json_integer(llava_n_threads(m)));
    json_object_set_new(t, "n_tiles", json_integer(g->n_tiles));
    json_object_set_new(t, "vision_ms", json_real(g->vision_ms));
    json_object_set_new(t, "vision_ms_per_tile",
                        json_real(g->n_tiles ? g->vision_ms / g->n_tiles : 0.0));
    json_object_set_new(t, "prefill_ms", json_real(g->prefill_ms));
    json_object_set_new(t, "prefill_tokens_per_s",
                        json_real(g->prefill_ms > 0 ? g->n_prefill / (g->prefill_ms / 1e3) : 0.0));
    json_object_set_new(t, "n_decode", json_integer(g->n_decode));
    json_object_set_new(t, "decode_ms", json_real(g->decode_ms));
    json_object_set_new(t, "decode_tokens_per_s",
                        json_real(g->decode_ms > 0 ? g->n_decode / (g->decode_ms / 1e3) : 0.0));
    json_object_set_new(t, "sample_ms", json_real(g->sample_ms));
}

static int print_json(const int32_t *ids, size_t n_ids, int n_image_tokens, const gen_result *r,
                      const cli_timings *tm, const llava *m, const gen_params *p) {
    json_t *o = json_object(), *arr = json_array(), *gen = json_array(), *t = json_object();
    for (size_t i = 0; i < n_ids; i++) json_array_append_new(arr, json_integer(ids[i]));
    for (int i = 0; r && i < r->n_ids; i++) json_array_append_new(gen, json_integer(r->ids[i]));
    json_object_set_new(o, "prompt_ids", arr);
    json_object_set_new(o, "n_prompt_tokens", json_integer((json_int_t)n_ids));
    json_object_set_new(o, "n_image_tokens", json_integer(n_image_tokens));
    json_object_set_new(o, "generated_ids", gen);
    json_object_set_new(o, "text", json_stringn(r ? r->text : "", r ? r->text_len : 0));
    json_object_set_new(o, "finish_reason", json_string(r ? r->finish_reason : "length"));
    if (r) json_object_set_new(o, "seed", json_integer((json_int_t)p->sampling.seed));
    json_object_set_new(t, "load_ms", json_real(tm->load_ms));
    json_object_set_new(t, "image_decode_ms", json_real(tm->decode_ms));
    json_object_set_new(t, "image_preprocess_ms", json_real(tm->preprocess_ms));
    json_object_set_new(t, "tokenize_ms", json_real(tm->tokenize_ms));
    if (r) {
        json_object_set_new(t, "weights_load_ms", json_real(tm->weights_ms));
        add_timings(t, &r->timings, m);
    }
    json_object_set_new(o, "timings", t);
    int rc = json_dumpf(o, stdout, JSON_COMPACT | JSON_ENSURE_ASCII) == 0 ? 0 : 1;
    fputc('\n', stdout);
    json_decref(o);
    return rc;
}

/* Loads the weights and generates; r is filled on success. */
static lv_status generate(const cli_args *a, llava *m, const int32_t *ids, size_t n_ids,
                          const img_tensor *tensors, int n_tensors, gen_params *p, gen_result *r,
                          cli_timings *tm, lv_err *err) {
    double t0 = lv_now_ms();
    llava_set_exact(m, a->exact);
    llava_set_tensor_parallel(m, a->tp, a->tp_whole_tower);
    tool_report_load(m);
    lv_status st = llava_load(m, a->device, a->threads, err);
    tm->weights_ms = lv_now_ms() - t0;
    if (st) return st;
    tool_report_model(m, 0, NULL);
    gen_sink sink = {.stream = !a->json};
    if (a->logits_out && (st = out_open(&sink.logits, a->logits_out, err))) return st;
    gen_callbacks cb = {.on_token = on_token, .on_text = on_text, .ud = &sink};
    st = gen_run(m, ids, (int)n_ids, tensors, n_tensors, p, &cb, r, err);
    lv_status st2 = out_close(&sink.logits, st == LV_OK, err);
    if (st == LV_OK && st2) gen_result_free(r);
    return st ? st : st2;
}

int main(int argc, char **argv) {
    cli_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc == 1 ? 0 : 2;
    if (!tool_device("llava-cli", a.device)) return 1; /* as llava_load would, sooner */
    lv_map_guard_install("llava-cli"); /* a model file cut short under us: named, exit 3 */

    lv_err err = {{0}};
    llava *m = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    img_tensor *tensors = calloc(MAX_IMAGES + VIDEO_MAX_INPUT_FRAMES, sizeof *tensors);
    int n_tokens[MAX_IMAGES] = {0}, n_image_tokens = 0, n_tensors = a.n_images;
    request_video video = {0};
    cli_timings tm = {0};
    gen_params p;
    gen_result r = {0};
    grammar *gr = NULL;
    structured_vocab *sv = NULL;
    bool generated = false;
    rc = load_grammar(&a, &gr, &err); /* before the model: a bad schema fails at once */
    if (rc) goto fail;
    rc = 1;
    if (!tensors) {
        lv_fail(&err, LV_ERR_NOMEM, "out of memory");
        goto fail;
    }

    double t0 = lv_now_ms();
    if (tool_open_model(a.model, a.mmproj, a.offline, &m, NULL, &err)) goto fail;
    tm.load_ms = lv_now_ms() - t0;
    if (load_images(&a, m, tensors, n_tokens, &tm.decode_ms, &tm.preprocess_ms, &err)) goto fail;
    for (int i = 0; i < a.n_images; i++) n_image_tokens += n_tokens[i];
    if (a.video_frames &&
        load_video(&a, m, tensors, &n_tensors, &n_image_tokens, &video, &tm.decode_ms, &err))
        goto fail;
    if (a.video &&
        load_video_file(&a, m, tensors, &n_tensors, &n_image_tokens, &video, &tm.decode_ms, &err))
        goto fail;
    double t1 = lv_now_ms();
    if (a.video_frames || a.video
            ? request_video_prompt_ids(m, a.prompt, &video, tensors, &ids, &n_ids, &err)
            : request_prompt_ids(m, a.prompt, a.raw_prompt, tensors, a.n_images, &ids, &n_ids,
                                 &err))
        goto fail;
    tm.tokenize_ms = lv_now_ms() - t1;
    if (a.dump_pixels && dump_pixels(a.dump_pixels, tensors, n_tensors, &err)) goto fail;
    make_params(&a, m, n_ids, &p);
    if (gr) { /* the tokens as grammar tries: what each adds to the text */
        if (structured_vocab_new(llava_tokenizer(m), &sv, &err)) goto fail;
        p.grammar = gr;
        p.vocab = sv;
    }
    if (p.max_tokens > 0) {
        if (generate(&a, m, ids, n_ids, tensors, n_tensors, &p, &r, &tm, &err)) goto fail;
        generated = true;
    }

    if (a.json) {
        rc = print_json(ids, n_ids, n_image_tokens, generated ? &r : NULL, &tm, m, &p);
    } else if (generated) {
        printf("\n");
        rc = 0;
    } else {
        for (size_t i = 0; i < n_ids; i++) printf("%s%d", i ? " " : "", ids[i]);
        printf("\n");
        rc = 0;
    }
    goto done;
fail:
    fflush(stdout);
    fprintf(stderr, "llava-cli: %s\n", err.msg);
done:
    for (int i = 0; tensors && i < n_tensors; i++) img_tensor_free(&tensors[i]);
    free(tensors);
    request_video_free(&video);
    gen_result_free(&r);
    free(ids);
    llava_free(m);
    structured_vocab_free(sv);
    grammar_free(gr);
    return rc;
}
