/*
 * model_bench.c - `llava-bench model` (model_bench.h).
 *
 *   llava-bench model --model PATH [--mmproj F] [--threads T] [--tg N] [--pp P]
 *                     [--image FILE] [--prompt TEXT] [--repeat R] [--no-warmup] [--json]
 *                     [--device cpu|ref|cuda[:N]]
 *
 * Loads the model (a directory, or a GGUF pair: --model text.gguf --mmproj
 * mmproj.gguf) on the --device backend (default cpu) with T threads (default
 * all cores), then
 * measures, each R times (default 1), reporting the median and every run:
 *
 *   without --image (the text rows; N, P = 0 skips one)
 *     decode tg N (default 128): N forwards of one random token each on a
 *       fresh sequence of N positions, from position 0, logits included:
 *       N / their wall time. What llama-bench's tg N measures.
 *     prefill pp P (default 512): P random tokens on a fresh sequence, in
 *       forwards of LLAVA_BATCH rows (one for P = 512): P / their wall
 *       time. What llama-bench's pp P measures.
 *   with --image FILE (the image rows; --pp is refused)
 *     the request an image question is: the image decoded and
 *     preprocessed (its ms reported apart), the prompt (default "Describe
 *     the image in detail.") through the chat template, then gen_run (the
 *     path llava-cli and the server take) generating N tokens greedily past
 *     EOS (N = --tg, at least 1). Reported: tiles, image tokens, prompt
 *     tokens; vision ms per tile (tower + projector + packing / tiles);
 *     prefill t/s (prompt tokens / the prefill's forwards); time to first
 *     token (gen_run's start to the first token's callback: encoding,
 *     prefill and the first sampling; the image's decode and preprocess
 *     and the model's load excluded); decode t/s after it (tokens after
 *     the first / their forwards).
 *
 * Before the first measurement one token goes through the model once
 * (--no-warmup: not), as llama-bench and llama.cpp's tools warm up, so
 * that mapping the weights in from the page cache is not timed. The random
 * tokens never include the image token. Peak RSS is the process's VmHWM
 * at the end (Linux). --json prints one JSON object instead of the lines.
 */
#include "bench/model_bench.h"

#include "base/clock.h"
#include "base/log.h"
#include "common/model_report.h"
#include "common/tool_args.h"
#include "engine/request.h"
#include "engine/run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REPEAT 64 /* --repeat at most */

typedef struct {
    llava *m;
    llava_batch *bt;
    float *logits; /* (vocab) */
    uint32_t seed;
} bench_ctx;

/* One run of the image request. */
typedef struct {
    int n_tiles, n_image_tokens, n_prompt, n_decode;
    double vision_ms_per_tile, prefill_tps, ttft_ms, decode_tps;
} image_figs;

static uint32_t lcg(uint32_t *seed) {
    *seed = *seed * 1664525u + 1013904223u;
    return *seed;
}

/* A random id of the vocabulary, never the image token. */
static int32_t random_id(bench_ctx *c) {
    int vocab = llava_vocab_size(c->m), image = llava_image_token_id(c->m);
    for (;;) {
        int32_t id = (int32_t)((lcg(&c->seed) >> 8) % (uint32_t)vocab);
        if (id != image) return id;
    }
}

/* n tokens on a fresh sequence of ctx positions, in forwards of `rows` ids:
 * tokens per second of wall time. */
static lv_status run_tokens(bench_ctx *c, int n, int rows, double *tps, lv_err *err) {
    llava_seq *s = NULL;
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    if (!ids) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) ids[i] = random_id(c);
    lv_status st = llava_seq_new(c->m, n, &s, err);
    double t0 = lv_now_ms();
    for (int i = 0; i < n && !st; i += rows) {
        llava_input in = {s, ids + i, n - i < rows ? n - i : rows, NULL, 0};
        st = llava_forward(c->m, c->bt, &in, 1, c->logits, err);
    }
    double ms = lv_now_ms() - t0;
    if (!st) *tps = n / (ms / 1e3);
    llava_seq_free(s);
    free(ids);
    return st;
}

static void first_token(void *ud, const gen_token *t) {
    if (t->index == 0) *(double *)ud = lv_now_ms();
}

static lv_status run_image(bench_ctx *c, const int32_t *ids, int n_ids, const img_tensor *px,
                           int n_gen, image_figs *f, lv_err *err) {
    gen_params p;
    gen_params_default(&p, c->m);
    sample_params_default(&p.sampling); /* greedy */
    p.max_tokens = n_gen;
    p.ignore_eos = true;
    double t_first = 0;
    gen_callbacks cb = {.on_token = first_token, .ud = &t_first};
    gen_result r;
    double t0 = lv_now_ms();
    lv_status st = gen_run(c->m, ids, n_ids, px, 1, &p, &cb, &r, err);
    if (st) return st;
    const gen_timings *t = &r.timings;
    f->n_tiles = t->n_tiles;
    f->n_prompt = t->n_prefill;
    f->n_decode = t->n_decode;
    f->vision_ms_per_tile = t->n_tiles ? t->vision_ms / t->n_tiles : 0;
    f->prefill_tps = t->prefill_ms > 0 ? t->n_prefill / (t->prefill_ms / 1e3) : 0;
    f->ttft_ms = t_first - t0;
    f->decode_tps = t->decode_ms > 0 ? t->n_decode / (t->decode_ms / 1e3) : 0;
    gen_result_free(&r);
    return LV_OK;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v[0..n) (n >= 1); v is left as it was. */
static double median(const double *v, int n) {
    double s[MAX_REPEAT];
    if (n > MAX_REPEAT) n = MAX_REPEAT;
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* The process's peak resident set (VmHWM), bytes; -1 where unknown. */
static long long peak_rss(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %lld kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

/* s as a JSON string (quotes, backslashes and control characters escaped). */
static void print_json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

/* "[a, b, c]": v[0..n) with `dig` decimals. */
static void print_list(const double *v, int n, int dig) {
    printf("[");
    for (int i = 0; i < n; i++) printf("%s%.*f", i ? ", " : "", dig, v[i]);
    printf("]");
}

static void usage_text(FILE *f) {
    fprintf(f, "usage: llava-bench model --model PATH [--mmproj F] [--threads T] [--tg N] "
               "[--pp P]\n"
               "                         [--image FILE] [--prompt TEXT] [--repeat R] "
               "[--no-warmup] [--json]\n"
               "                         [--device cpu|ref|cuda[:N]]   (default cpu)\n"
               "                         [--tensor-parallel N] [--tp-whole-tower]\n");
}

/* What one invocation measured, for the printers. */
typedef struct {
    const char *model, *image; /* as given */
    const char *device;        /* the backend: --device */
    int threads, repeat, tg, pp;
    double load_s;
    double tg_tps[MAX_REPEAT], pp_tps[MAX_REPEAT]; /* the text rows, per run */
    double vision[MAX_REPEAT], prefill[MAX_REPEAT], ttft_s[MAX_REPEAT],
        decode[MAX_REPEAT]; /* the image rows, per run */
    image_figs last;        /* the last image run (its counts) */
    int image_w, image_h, n_image_tokens;
    double img_decode_ms, img_pre_ms;
    long long rss; /* peak, bytes; -1 unknown */
} bench_out;

static void print_json(const bench_out *o) {
    int r = o->repeat;
    printf("{\"model\":");
    print_json_str(o->model);
    printf(",\"device\":");
    print_json_str(o->device);
    printf(",\"threads\":%d,\"repeat\":%d,\"load_s\":%.3f", o->threads, r, o->load_s);
    if (!o->image && o->tg > 0) {
        printf(",\"tg\":{\"n\":%d,\"tps\":%.4f,\"runs\":", o->tg, median(o->tg_tps, r));
        print_list(o->tg_tps, r, 4);
        printf("}");
    }
    if (!o->image && o->pp > 0) {
        printf(",\"pp\":{\"n\":%d,\"tps\":%.4f,\"runs\":", o->pp, median(o->pp_tps, r));
        print_list(o->pp_tps, r, 4);
        printf("}");
    }
    if (o->image) {
        printf(",\"image\":{\"file\":");
        print_json_str(o->image);
        printf(",\"width\":%d,\"height\":%d,\"tiles\":%d,\"image_tokens\":%d,"
               "\"prompt_tokens\":%d,\"decode_tokens\":%d,\"decode_ms\":%.2f,"
               "\"preprocess_ms\":%.2f",
               o->image_w, o->image_h, o->last.n_tiles, o->n_image_tokens, o->last.n_prompt,
               o->last.n_decode, o->img_decode_ms, o->img_pre_ms);
        printf(",\"vision_ms_per_tile\":%.3f,\"prefill_tps\":%.4f,\"ttft_s\":%.4f,"
               "\"decode_tps\":%.4f",
               median(o->vision, r), median(o->prefill, r), median(o->ttft_s, r),
               median(o->decode, r));
        printf(",\"runs\":{\"vision_ms_per_tile\":");
        print_list(o->vision, r, 3);
        printf(",\"prefill_tps\":");
        print_list(o->prefill, r, 4);
        printf(",\"ttft_s\":");
        print_list(o->ttft_s, r, 4);
        printf(",\"decode_tps\":");
        print_list(o->decode, r, 4);
        printf("}}");
    }
    printf(",\"peak_rss_bytes\":%lld}\n", o->rss);
}

static void print_text(const bench_out *o) {
    int r = o->repeat;
    printf("model %s, %s, %d threads, loaded in %.2f s; median of %d run%s\n", o->model, o->device,
           o->threads, o->load_s, r, r == 1 ? "" : "s");
    if (!o->image && o->tg > 0) {
        printf("decode  tg%-5d %9.2f t/s   runs ", o->tg, median(o->tg_tps, r));
        print_list(o->tg_tps, r, 2);
        printf("\n");
    }
    if (!o->image && o->pp > 0) {
        printf("prefill pp%-5d %9.2f t/s   runs ", o->pp, median(o->pp_tps, r));
        print_list(o->pp_tps, r, 2);
        printf("\n");
    }
    if (o->image) {
        printf("image %s (%dx%d): %d tiles, %d image tokens, prompt %d tokens; decode %.1f ms, "
               "preprocess %.1f ms\n",
               o->image, o->image_w, o->image_h, o->last.n_tiles, o->n_image_tokens,
               o->last.n_prompt, o->img_decode_ms, o->img_pre_ms);
        printf("  vision   %9.1f ms/tile   prefill %8.2f t/s   TTFT %8.2f s   decode after %7.2f "
               "t/s (%d tokens)\n",
               median(o->vision, r), median(o->prefill, r), median(o->ttft_s, r),
               median(o->decode, r), o->last.n_decode);
    }
    printf("peak RSS %.2f GiB\n", o->rss < 0 ? -1.0 : o->rss / 1073741824.0);
}

int model_bench_main(int argc, char **argv) {
    const char *mmproj = NULL, *prompt = "Describe the image in detail.";
    bench_out o = {.tg = 128, .pp = -1, .repeat = 1, .device = "cpu"};
    int threads = 0, tp = 0;
    bool json = false, no_warmup = false, tp_whole_tower = false;
    const tool_opt opts[] = {
        TOOL_STR("model", 'm', &o.model),
        TOOL_STR("mmproj", 0, &mmproj),
        TOOL_STR("device", 0, &o.device),
        TOOL_INT("threads", 0, &threads, 0, 4096),
        TOOL_INT("tensor-parallel", 0, &tp, 0, 8),
        TOOL_FLAG("tp-whole-tower", 0, &tp_whole_tower),
        TOOL_INT("tg", 0, &o.tg, 0, 1000000),
        TOOL_INT("pp", 0, &o.pp, 0, 1000000),
        TOOL_STR("image", 0, &o.image),
        TOOL_STR("prompt", 0, &prompt),
        TOOL_INT("repeat", 0, &o.repeat, 1, MAX_REPEAT),
        TOOL_FLAG("no-warmup", 0, &no_warmup),
        TOOL_FLAG("json", 0, &json),
    };
    static const tool_info tool = {"llava-bench model", usage_text, false};
    int rc = tool_parse(&tool, opts, LV_ARRAY_LEN(opts), argc, argv);
    if (rc) return rc == TOOL_HELP ? 0 : 2;
    if (!o.model) {
        fprintf(stderr, "llava-bench model: --model is required\n");
        usage_text(stderr);
        return 2;
    }
    if (o.image && o.pp > 0) {
        fprintf(stderr, "llava-bench model: --pp is for the text rows; with --image the prompt "
                        "is the image's (run them apart)\n");
        return 2;
    }
    if (o.pp < 0) o.pp = o.image ? 0 : 512;
    if (!tool_device("llava-bench model", o.device)) return 1;

    lv_err err;
    bench_ctx c = {.seed = 12345};
    img_tensor px;
    memset(&px, 0, sizeof px);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    rc = 1;
    double t0 = lv_now_ms();
    if (llava_open2(o.model, mmproj, &c.m, &err)) goto fail;
    tool_report_load(c.m);
    llava_set_tensor_parallel(c.m, tp, tp_whole_tower);
    if (llava_load(c.m, o.device, threads, &err)) goto fail;
    o.load_s = (lv_now_ms() - t0) / 1e3;
    tool_report_model(c.m, 0, NULL);
    lv_log_set_level(LV_LOG_WARN); /* the load said what it is; the timed runs stay quiet */
    o.threads = llava_n_threads(c.m);
    if (o.pp > llava_max_ctx(c.m) || o.tg > llava_max_ctx(c.m)) {
        lv_fail(&err, LV_ERR_ARG, "--pp %d / --tg %d: the model's context is %d", o.pp, o.tg,
                llava_max_ctx(c.m));
        goto fail;
    }
    if (llava_batch_new(c.m, LLAVA_BATCH, 1, &c.bt, &err)) goto fail;
    if (!(c.logits = malloc((size_t)llava_vocab_size(c.m) * sizeof *c.logits))) {
        lv_fail(&err, LV_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (o.image) {
        if (request_load_image(c.m, o.image, &px, &o.n_image_tokens, &o.img_decode_ms,
                               &o.img_pre_ms, &err) ||
            request_prompt_ids(c.m, prompt, false, &px, 1, &ids, &n_ids, &err))
            goto fail;
        o.image_w = px.image_w;
        o.image_h = px.image_h;
    }
    double warm_tps;
    if (!no_warmup && run_tokens(&c, 1, 1, &warm_tps, &err)) goto fail;
    for (int k = 0; k < o.repeat; k++) {
        if (!o.image && o.tg > 0 && run_tokens(&c, o.tg, 1, &o.tg_tps[k], &err)) goto fail;
        if (!o.image && o.pp > 0 && run_tokens(&c, o.pp, LLAVA_BATCH, &o.pp_tps[k], &err))
            goto fail;
        if (o.image) {
            if (run_image(&c, ids, (int)n_ids, &px, o.tg > 0 ? o.tg : 1, &o.last, &err)) goto fail;
            o.vision[k] = o.last.vision_ms_per_tile;
            o.prefill[k] = o.last.prefill_tps;
            o.ttft_s[k] = o.last.ttft_ms / 1e3;
            o.decode[k] = o.last.decode_tps;
        }
    }
    o.rss = peak_rss();
    if (json)
        print_json(&o);
    else
        print_text(&o);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "llava-bench model: %s\n", err.msg);
done:
    free(ids);
    free(c.logits);
    img_tensor_free(&px);
    llava_batch_free(c.bt);
    llava_free(c.m);
    return rc;
}
