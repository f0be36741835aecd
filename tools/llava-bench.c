/*
 * llava-bench.c - micro-benchmarks of the engine's parts, one subcommand
 * each, for numbers that can be compared across commits and against the
 * reference implementations.
 *
 *   llava-bench tokenizer --tokenizer PATH [--text FILE] [--repeat N]
 *       Single-threaded tok_encode throughput on English text: FILE, or a
 *       built-in paragraph repeated to about 1 MB. Encodes N times (default
 *       5) and reports the fastest run: bytes, tokens, seconds, MB/s
 *       (MB = 10^6 bytes, as tools/reference/tokenizer_golden.py reports
 *       Hugging Face tokenizers' speed).
 *
 *   llava-bench image --image FILE [--repeat N] [--processor next|clip|pad|smolvlm|smolvlm-384]
 *       Single-threaded image pipeline: img_decode_file, then img_preprocess
 *       with the llava-v1.6 (next, default), llava-1.5 CLIP or pad settings,
 *       or SmolVLM's (smolvlm: longest edge 2048, 512 tiles; smolvlm-384:
 *       1536 / 384), LANCZOS.
 *       Runs each N times (default 10) and reports the fastest: decode ms,
 *       preprocess ms, and for next the two Pillow bicubic resizes alone
 *       (grid fit + base squash) inside it.
 *
 *   llava-bench matmul [--rows R] [--cols C] [--n N] [--threads T] [--dtype D] [--group G]
 *                      [--device cpu|cuda[:N]]
 *       D: f32, f16 (default), bf16; mlx2, mlx3, mlx4, mlx5, mlx6, mlx8 (MLX
 *       affine, group G = 32/64/128, default 64, F16 scales and biases, made
 *       by quant/mlx_affine's quantizer); q8_0, q4_0, q4_1, q4_k, q5_k, q6_k
 *       (ggml blocks, random codes).
 *       One matmul y (N, R) = x (N, C) · Wᵀ on the --device backend (default
 *       cpu, T threads, default all cores) and on the scalar reference, random
 *       data. Defaults R = C = 4096, N = 1, f16. Each backend repeats until
 *       about a second has passed (at least 3 runs for the device, 1 for ref)
 *       and reports its fastest run: ms, GFLOP/s (2·N·R·C) and GB/s of weight
 *       traffic (the weight's bytes, scales included, read once per call),
 *       then the device's speed-up over ref and the relative difference
 *       ‖dev − ref‖ / ‖ref‖ of the outputs. x and y live in the backend's
 *       buffers (upload, download) and each run ends with a synchronize, so
 *       an asynchronous device is timed to the end of its work.
 *       A weight smaller than the last-level cache is read from the cache
 *       after the first run: pick R·C above it to measure DRAM bandwidth.
 *
 *   llava-bench tower [--layers L] [--threads T] [--dtype f16|bf16|f32] [--repeat N]
 *       The CLIP ViT-L/14-336 vision tower on one tile, random weights:
 *       ms per tile and where it goes, op by op (tools/bench/tower_bench.c).
 *
 *   llava-bench serve --model PATH [--streams N] [--tokens T] [--threads K] [--image FILE]
 *       The continuous-batching worker driven in-process by N concurrent
 *       streams, and by one in the same run: aggregate tokens/s and the
 *       ratio (tools/bench/serve_bench.c says how each figure is measured).
 *
 *   llava-bench model --model PATH [--mmproj F] [--threads T] [--tg N] [--pp P]
 *                     [--image FILE] [--prompt TEXT] [--repeat R] [--no-warmup] [--json]
 *       A whole model's speed, the figures of issue 13's table for llava
 *       alone: decode tg N and prefill of a P-token prompt (t/s), or for an
 *       image: vision ms per tile, prefill t/s, time to first token, decode
 *       t/s after it; peak RSS (tools/bench/model_bench.c says how each is
 *       measured).
 *
 *   llava-bench bandwidth [--threads T] [--mb M] [--passes P] [--isa I] [--json] [--device D]
 *       Memory read bandwidth with T threads over M MiB (default 1024),
 *       AVX-512 / AVX2 / portable loop picked at run time: median GB/s of
 *       P passes; with --device cuda[:N] the device's copy bandwidth through
 *       the backend's ops instead (tools/bench/bandwidth.c).
 *
 *   llava-bench grammar (--tokenizer PATH | --model PATH [--mmproj F])
 *                       [--json-schema FILE --instance FILE] [--steps N] [--vocab V]
 *                       [--decode-ms X] [--json]
 *       Constrained decoding's cost per decode step: a generation of a JSON
 *       Schema's instance played token by token, each step's mask, logits
 *       masking and accept timed as gen_state does them (mean, median, p99
 *       µs; the mask cache's hit rate; with --decode-ms the overhead in %)
 *       (tools/bench/grammar_bench.c).
 *
 *   llava-bench load --url http://127.0.0.1:PORT [--clients N] [--requests N] [--duration S]
 *                    [--mix KIND=W,...] [--image FILE]... [--check-answers] [--json] ...
 *       N concurrent HTTP clients against a running llava-server: a weighted
 *       mix of plain, streamed, image, n > 1, cancelled and bad requests,
 *       every answer checked; throughput, latency percentiles, errors and
 *       the server's RSS and descriptors over time; exit 1 when any request
 *       failed (tools/bench/load_bench.c).
 *
 *   tower, serve and model take --device cpu|ref|cuda[:N] too (default cpu).
 *   A name this build lacks is llava_load's error, exit 1.
 */
#include "base/clock.h"
#include "base/common.h"
#include "backend/backend.h"
#include "backend/quant.h"
#include "quant/mlx_affine.h"
#include "base/file.h"
#include "base/half.h"
#include "image/anyres.h"
#include "image/decode.h"
#include "image/idefics3.h"
#include "image/preprocess.h"
#include "image/resample.h"
#include "bench/bandwidth.h"
#include "bench/grammar_bench.h"
#include "bench/load_bench.h"
#include "bench/model_bench.h"
#include "bench/serve_bench.h"
#include "bench/tower_bench.h"
#include "text/tokenizer.h"
#include "common/tool_args.h"
#include "common/tool_version.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char ENGLISH[] =
    "Small harbours wake up slowly. Before the sun clears the hills, the fishermen are already "
    "checking their nets, the baker has lit the oven, and a few gulls argue over whatever the "
    "tide left on the stones. Visitors rarely see this hour; they arrive later, when the cafes "
    "open their shutters and the first ferry blows its horn. Yet the morning explains the town "
    "better than any guidebook could. Each boat returns with a different story: a broken winch, "
    "a record catch, a storm that never came. Prices at the market rise and fall with those "
    "stories, and by noon everyone knows which ones were true. In the afternoon the streets grow "
    "quiet again, children run down to the water, and old men play cards in the shade of the "
    "church, keeping score on the back of a receipt. ";

/* Seconds on the monotonic clock. */
static double now_s(void) {
    return lv_now_ms() / 1e3;
}

static void print_usage(FILE *f) {
    fprintf(f,
            "usage: llava-bench tokenizer --tokenizer PATH [--text FILE] [--repeat N]\n"
            "       llava-bench serve --model PATH [--streams N] [--tokens T] [--image FILE]\n"
            "                         [--device D]\n"
            "       llava-bench model --model PATH [--mmproj F] [--threads T] [--tg N] [--pp P]\n"
            "                         [--image FILE] [--prompt TEXT] [--repeat R] [--json]\n"
            "                         [--device D]\n"
            "       llava-bench bandwidth [--threads T] [--mb M] [--passes P] [--isa I] "
            "[--json]\n"
            "                             [--device D]\n"
            "       llava-bench grammar (--tokenizer PATH | --model PATH [--mmproj F])\n"
            "                           [--json-schema FILE --instance FILE] [--steps N]\n"
            "                           [--vocab V] [--decode-ms X] [--json]\n"
            "       llava-bench load --url http://127.0.0.1:PORT [--clients N] [--requests N]\n"
            "                        [--duration S] [--mix KIND=W,...] [--image FILE]...\n"
            "                        [--check-answers] [--json]   (load --help: all options)\n"
            "       llava-bench image --image FILE [--repeat N]\n"
            "                         [--processor next|clip|pad|smolvlm|smolvlm-384]\n"
            "       llava-bench tower [--layers L] [--threads T] [--dtype f16|bf16|f32] "
            "[--repeat N]\n"
            "                         [--device D]\n"
            "       llava-bench matmul [--rows R] [--cols C] [--n N] [--threads T]\n"
            "                          [--dtype f32|f16|bf16|mlx2..mlx8|q8_0|q4_0|q4_1|q4_k|q5_k|"
            "q6_k] [--group G]\n"
            "                          [--device D]   (compared with ref)\n"
            "  D: cpu (default), ref, cuda or cuda:N (CUDA builds)\n");
}

static int usage(void) {
    print_usage(stderr);
    return 2;
}

/* For every subcommand's options (tool_parse: argv[0] is the subcommand's word). */
static const tool_info TOOL = {"llava-bench", print_usage, false};

/* The built-in text: ENGLISH repeated to at least 1,000,000 bytes (heap). */
static char *builtin_text(size_t *len) {
    size_t unit = sizeof ENGLISH - 1, reps = (1000000 + unit - 1) / unit;
    char *s = malloc(reps * unit + 1);
    if (!s) return NULL;
    for (size_t i = 0; i < reps; i++) memcpy(s + i * unit, ENGLISH, unit);
    s[reps * unit] = '\0';
    *len = reps * unit;
    return s;
}

static int bench_tokenizer(int argc, char **argv) {
    const char *tok_path = NULL, *text_path = NULL;
    int repeat = 5;
    const tool_opt opts[] = {
        TOOL_STR("tokenizer", 0, &tok_path),
        TOOL_STR("text", 0, &text_path),
        TOOL_INT("repeat", 0, &repeat, 1, INT_MAX),
    };
    int parsed = tool_parse(&TOOL, opts, LV_ARRAY_LEN(opts), argc, argv);
    if (parsed) return parsed == TOOL_HELP ? 0 : 2;
    if (!tok_path) return usage();

    lv_err err;
    tok *t = NULL;
    char *text = NULL;
    size_t len = 0;
    int rc = 1;
    double t0 = now_s();
    if (tok_load(tok_path, &t, &err) != LV_OK) {
        fprintf(stderr, "llava-bench: %s\n", err.msg);
        goto done;
    }
    double load_s = now_s() - t0;
    if (text_path) {
        if (lv_read_file(text_path, (size_t)1 << 30, &text, &len, &err) != LV_OK) {
            fprintf(stderr, "llava-bench: %s\n", err.msg);
            goto done;
        }
    } else if (!(text = builtin_text(&len))) {
        fprintf(stderr, "llava-bench: out of memory\n");
        goto done;
    }

    double best = 1e30;
    size_t n_ids = 0;
    for (int r = 0; r < repeat; r++) {
        int32_t *ids;
        t0 = now_s();
        lv_status st = tok_encode(t, text, len, true, &ids, &n_ids, &err);
        double dt = now_s() - t0;
        if (st != LV_OK) {
            fprintf(stderr, "llava-bench: encode: %s\n", err.msg);
            goto done;
        }
        free(ids);
        if (dt < best) best = dt;
    }
    printf("tokenizer: load %.3f s\n", load_s);
    printf("tokenizer encode (1 thread, best of %d): bytes %zu  tokens %zu  seconds %.4f  "
           "MB/s %.2f\n",
           repeat, len, n_ids, best, (double)len / best / 1e6);
    rc = 0;
done:
    free(text);
    tok_free(t);
    return rc;
}

/* The two bicubic resizes of LLaVA-NeXT anyres (fit into the best pinpoint,
 * base squash), timed alone; seconds, or < 0 on failure. */
static double time_anyres_resizes(const img_rgb *im, const img_proc_params *p) {
    bool hw = p->size_height > 0 && p->size_width > 0;
    int bh, bw, nh, nw, base_h = hw ? p->size_height : p->shortest_edge,
                        base_w = hw ? p->size_width : p->shortest_edge;
    img_select_best_resolution(im->h, im->w, (const int(*)[2])p->pinpoints, p->n_pinpoints, &bh,
                               &bw);
    img_patch_output_size(im->h, im->w, bh, bw, &nh, &nw);
    uint8_t *a = malloc((size_t)nh * (size_t)nw * 3);
    uint8_t *b = malloc((size_t)base_h * (size_t)base_w * 3);
    double t0 = now_s(), dt = -1;
    if (a && b && img_resize_bicubic(im->rgb, im->w, im->h, 3, a, nw, nh, NULL) == LV_OK &&
        img_resize_bicubic(im->rgb, im->w, im->h, 3, b, base_w, base_h, NULL) == LV_OK)
        dt = now_s() - t0;
    free(a);
    free(b);
    return dt;
}

static int bench_image(int argc, char **argv) {
    const char *path = NULL, *proc = "next";
    int repeat = 10;
    const tool_opt opts[] = {
        TOOL_STR("image", 0, &path),
        TOOL_INT("repeat", 0, &repeat, 1, INT_MAX),
        TOOL_STR("processor", 0, &proc),
    };
    int parsed = tool_parse(&TOOL, opts, LV_ARRAY_LEN(opts), argc, argv);
    if (parsed) return parsed == TOOL_HELP ? 0 : 2;
    img_proc_params p;
    if (strcmp(proc, "next") == 0) {
        img_proc_params_llava_next_default(&p);
    } else if (strcmp(proc, "clip") == 0 || strcmp(proc, "pad") == 0) {
        img_proc_params_clip_default(&p);
        if (proc[0] == 'p') {
            p.kind = IMG_PROC_LLAVA_PAD;
            p.do_pad = true;
        }
    } else if (strcmp(proc, "smolvlm") == 0) { /* SmolVLM(2)-256M/500M: 2048 / 512 */
        img_proc_params_idefics3_default(&p, 2048, 512, 16);
    } else if (strcmp(proc, "smolvlm-384") == 0) { /* SmolVLM-Instruct, SmolVLM2-2.2B */
        img_proc_params_idefics3_default(&p, 1536, 384, 14);
    } else {
        return usage();
    }
    if (!path) return usage();

    lv_err err;
    img_rgb im = {0};
    img_tensor t = {0};
    double best_dec = 1e30, best_pre = 1e30, best_rs = 1e30;
    int rc = 1;
    for (int r = 0; r < repeat; r++) {
        img_rgb_free(&im);
        double t0 = now_s();
        if (img_decode_file(path, NULL, &im, NULL, &err) != LV_OK) {
            fprintf(stderr, "llava-bench: %s\n", err.msg);
            goto done;
        }
        double dt = now_s() - t0;
        if (dt < best_dec) best_dec = dt;
    }
    for (int r = 0; r < repeat; r++) {
        img_tensor_free(&t);
        double t0 = now_s();
        if (img_preprocess(&im, &p, NULL, &t, &err) != LV_OK) {
            fprintf(stderr, "llava-bench: %s\n", err.msg);
            goto done;
        }
        double dt = now_s() - t0;
        if (dt < best_pre) best_pre = dt;
        if (p.kind == IMG_PROC_LLAVA_NEXT) {
            double rs = time_anyres_resizes(&im, &p);
            if (rs >= 0 && rs < best_rs) best_rs = rs;
        }
    }
    int tokens = p.kind == IMG_PROC_IDEFICS3 /* image_seq_len 64 at T = 512, 81 at 384 */
                     ? img_idefics3_num_image_tokens(im.h, im.w, &p, false,
                                                     p.max_image_size == 512 ? 64 : 81)
                     : img_num_image_tokens(im.h, im.w, &p);
    printf("image: %s  %dx%d  processor %s  patches %d  tokens %d\n", path, im.w, im.h, proc,
           t.n_tiles, tokens);
    printf("image (1 thread, best of %d): decode %.2f ms  preprocess %.2f ms", repeat,
           best_dec * 1e3, best_pre * 1e3);
    if (p.kind == IMG_PROC_LLAVA_NEXT) printf(" (of which bicubic resizes %.2f ms)", best_rs * 1e3);
    printf("  total %.2f ms\n", (best_dec + best_pre) * 1e3);
    rc = 0;
done:
    img_tensor_free(&t);
    img_rgb_free(&im);
    return rc;
}

/* The fastest of repeated matmuls on b: runs until `budget_s` has passed,
 * at least `min_runs` times. Seconds, each run waited for to its end. */
static double time_matmul(be *b, float *y, const float *x, const be_weight *w, int n, int min_runs,
                          double budget_s) {
    double best = 1e30, start = now_s();
    for (int r = 0; r < min_runs || now_s() - start < budget_s; r++) {
        double t0 = now_s();
        b->ops->matmul(b, y, x, w, NULL, n);
        b->ops->synchronize(b);
        double dt = now_s() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

/* --dtype names: plain types, MLX affine (mlxB, group from --group), ggml blocks. */
static const struct {
    const char *name;
    be_dtype dtype;
    int bits; /* MLX only */
} MATMUL_DTYPES[] = {
    {"f32", BE_F32, 0},   {"f16", BE_F16, 0},   {"bf16", BE_BF16, 0}, {"mlx2", BE_MLX, 2},
    {"mlx3", BE_MLX, 3},  {"mlx4", BE_MLX, 4},  {"mlx5", BE_MLX, 5},  {"mlx6", BE_MLX, 6},
    {"mlx8", BE_MLX, 8},  {"q8_0", BE_Q8_0, 0}, {"q4_0", BE_Q4_0, 0}, {"q4_1", BE_Q4_1, 0},
    {"q4_k", BE_Q4_K, 0}, {"q5_k", BE_Q5_K, 0}, {"q6_k", BE_Q6_K, 0},
};

static uint32_t lcg(uint32_t *seed) {
    *seed = *seed * 1664525u + 1013904223u;
    return *seed;
}

/* A random half of magnitude in [2^-9, 2^-4), either sign (block scales). */
static uint16_t rnd_half_scale(uint32_t *seed) {
    uint32_t r = lcg(seed);
    return (uint16_t)((r >> 31) << 15 | (6 + (r >> 20) % 5) << 10 | (r >> 8 & 0x3ff));
}

/* Random weights of any dtype into *wdata (+ MLX side data in *side). */
static int make_weight(be_dtype dtype, int rows, int cols, be_quant *q, unsigned char **wdata,
                       unsigned char **side, size_t *bytes) {
    uint32_t seed = 12345;
    size_t rb = be_row_bytes(dtype, cols, q), n_w = (size_t)rows * cols;
    if (!rb) {
        fprintf(stderr, "llava-bench: --cols %d is not whole blocks of %s\n", cols,
                be_dtype_name(dtype));
        return 1;
    }
    *wdata = malloc(rb * rows);
    if (!*wdata) return 1;
    *bytes = rb * rows;
    if (dtype == BE_MLX) { /* MLX's own quantizer on random rows, F16 scales and biases */
        size_t ng = (size_t)rows * (cols / q->group);
        *side = malloc(ng * 4);
        float *row = malloc((size_t)cols * 4), *sc = malloc((size_t)cols / q->group * 8);
        if (!*side || !row || !sc) {
            free(row);
            free(sc);
            return 1;
        }
        float *bi = sc + cols / q->group;
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < cols; c++) row[c] = (float)(lcg(&seed) >> 8) / 8388608.0f - 1.0f;
            lv_err err;
            if (mlx_affine_quantize(row, 1, cols, q->bits, q->group, (uint32_t *)(*wdata + rb * r),
                                    sc, bi, &err)) {
                fprintf(stderr, "llava-bench: %s\n", err.msg);
                free(row);
                free(sc);
                return 1;
            }
            for (int g = 0; g < cols / q->group; g++) {
                uint16_t hs = lv_f32_to_f16(sc[g]), hb = lv_f32_to_f16(bi[g]);
                memcpy(*side + 2 * ((size_t)r * (cols / q->group) + g), &hs, 2);
                memcpy(*side + 2 * (ng + (size_t)r * (cols / q->group) + g), &hb, 2);
            }
        }
        free(row);
        free(sc);
        q->scale_dtype = BE_F16;
        q->scales = *side;
        q->biases = *side + 2 * ng;
        *bytes += ng * 4;
    } else if (be_dtype_quantized(dtype)) { /* random codes, sane f16 scales */
        for (size_t i = 0; i < rb * rows; i++) (*wdata)[i] = (unsigned char)(lcg(&seed) >> 24);
        int bb = be_block_bytes(dtype);
        for (size_t b = 0; b < rb * rows / bb; b++) {
            unsigned char *blk = *wdata + b * bb;
            uint16_t h1 = rnd_half_scale(&seed), h2 = rnd_half_scale(&seed);
            if (dtype == BE_Q6_K) {
                memcpy(blk + 208, &h1, 2);
            } else {
                memcpy(blk, &h1, 2);
                if (dtype == BE_Q4_1 || dtype == BE_Q4_K || dtype == BE_Q5_K)
                    memcpy(blk + 2, &h2, 2);
            }
        }
    } else { /* random weights in [-1, 1) (bf16/f16 as their rounded-down halves) */
        for (size_t i = 0; i < n_w; i++) {
            float f = (float)(lcg(&seed) >> 8) / 8388608.0f - 1.0f;
            uint32_t u;
            memcpy(&u, &f, 4);
            uint16_t h = dtype == BE_BF16 ? (uint16_t)(u >> 16)
                                          : (uint16_t)((u >> 16 & 0x8000) | (seed >> 8 & 0x3ff) |
                                                       (uint16_t)(10 + (seed >> 20) % 5) << 10);
            if (dtype == BE_F32)
                memcpy(*wdata + 4 * i, &f, 4);
            else
                memcpy(*wdata + 2 * i, &h, 2);
        }
    }
    return 0;
}

/* x (n, cols) uploaded into a buffer of b, and room for y (n, rows) there. */
static bool matmul_buffers(be *b, const float *x_host, int n, int rows, int cols, float **x,
                           float **y) {
    *x = b->ops->alloc(b, (size_t)n * cols * sizeof **x);
    *y = b->ops->alloc(b, (size_t)n * rows * sizeof **y);
    if (*x) b->ops->upload(b, *x, x_host, (size_t)n * cols * sizeof **x);
    return *x && *y;
}

static int bench_matmul(int argc, char **argv) {
    int rows = 4096, cols = 4096, n = 1, threads = 0, group = 64, di = -1, index;
    const char *dname = "f16", *device = "cpu";
    const tool_opt opts[] = {
        TOOL_INT("rows", 0, &rows, 1, INT_MAX),   TOOL_INT("cols", 0, &cols, 1, INT_MAX),
        TOOL_INT("n", 0, &n, 1, INT_MAX),         TOOL_INT("threads", 0, &threads, 0, 4096),
        TOOL_INT("group", 0, &group, 1, 1 << 20), TOOL_STR("dtype", 0, &dname),
        TOOL_STR("device", 0, &device),
    };
    int parsed = tool_parse(&TOOL, opts, LV_ARRAY_LEN(opts), argc, argv);
    if (parsed) return parsed == TOOL_HELP ? 0 : 2;
    for (size_t k = 0; k < LV_ARRAY_LEN(MATMUL_DTYPES); k++)
        if (strcmp(dname, MATMUL_DTYPES[k].name) == 0) di = (int)k;
    if (di < 0) return usage();
    if (!tool_device("llava-bench matmul", device)) return 1;
    be_dtype dtype = MATMUL_DTYPES[di].dtype;
    be_quant q = {.bits = MATMUL_DTYPES[di].bits, .group = group};

    unsigned char *wdata = NULL, *side = NULL;
    size_t bytes_w = 0, n_w = (size_t)rows * cols;
    float *x = malloc((size_t)n * cols * sizeof *x);
    float *y_dev = malloc((size_t)n * rows * sizeof *y_dev);
    float *y_ref = malloc((size_t)n * rows * sizeof *y_ref);
    float *dx = NULL, *dy = NULL, *rx = NULL, *ry = NULL; /* the backends' buffers */
    be dev = {.ops = be_find_device(device, &index), .device = index}, ref = {.ops = &be_ref_ops};
    be_weight w_dev = {0}, w_ref = {0};
    lv_err err;
    int rc = 1;
    bool dev_up = false; /* dev's init succeeded: deinit it */
    if (!x || !y_dev || !y_ref || make_weight(dtype, rows, cols, &q, &wdata, &side, &bytes_w)) {
        fprintf(stderr, "llava-bench: cannot make the weight\n");
        goto done;
    }
    uint32_t seed = 777;
    for (size_t i = 0; i < (size_t)n * cols; i++)
        x[i] = (float)(lcg(&seed) >> 8) / 8388608.0f - 1.0f;
    const be_quant *qp = dtype == BE_MLX ? &q : NULL;
    if (!(dev_up = dev.ops->init(&dev, threads, &err) == LV_OK) ||
        ref.ops->init(&ref, 1, &err) != LV_OK ||
        dev.ops->weight_init(&dev, &w_dev, dtype, rows, cols, wdata, qp, &err) != LV_OK ||
        ref.ops->weight_init(&ref, &w_ref, dtype, rows, cols, wdata, qp, &err) != LV_OK) {
        fprintf(stderr, "llava-bench: %s\n", err.msg);
        goto done;
    }
    if (!matmul_buffers(&dev, x, n, rows, cols, &dx, &dy) ||
        !matmul_buffers(&ref, x, n, rows, cols, &rx, &ry)) {
        fprintf(stderr, "llava-bench: out of memory for x and y on %s\n", device);
        goto done;
    }
    double t_dev = time_matmul(&dev, dy, dx, &w_dev, n, 3, 1.0);
    double t_ref = time_matmul(&ref, ry, rx, &w_ref, n, 1, 1.0);
    dev.ops->download(&dev, y_dev, dy, (size_t)n * rows * sizeof *y_dev);
    ref.ops->download(&ref, y_ref, ry, (size_t)n * rows * sizeof *y_ref);
    if (dev.ops->status && dev.ops->status(&dev, &err)) {
        fprintf(stderr, "llava-bench: %s: %s\n", device, err.msg);
        goto done;
    }
    double flop = 2.0 * n * (double)n_w, bytes = (double)bytes_w, num = 0, den = 0;
    for (size_t i = 0; i < (size_t)n * rows; i++) {
        num += ((double)y_dev[i] - y_ref[i]) * ((double)y_dev[i] - y_ref[i]);
        den += (double)y_ref[i] * y_ref[i];
    }
    char label[32];
    if (dtype == BE_MLX)
        snprintf(label, sizeof label, "mlx %d-bit g%d", q.bits, q.group);
    else
        snprintf(label, sizeof label, "%s", MATMUL_DTYPES[di].name);
    printf("matmul: y (%d, %d) = x (%d, %d) . W^T, W %s (%.1f MB, %.3f bytes/weight)\n", n, rows, n,
           cols, label, bytes / 1e6, bytes / (double)n_w);
    printf("  %-4s (%2d threads): %9.3f ms  %8.2f GFLOP/s  %8.2f GB/s\n", device, dev.n_threads,
           t_dev * 1e3, flop / t_dev / 1e9, bytes / t_dev / 1e9);
    printf("  ref  ( 1 thread ): %9.3f ms  %8.2f GFLOP/s  %8.2f GB/s\n", t_ref * 1e3,
           flop / t_ref / 1e9, bytes / t_ref / 1e9);
    printf("  %s / ref speed: %.1fx   relative difference %.2e\n", device, t_ref / t_dev,
           den > 0 ? sqrt(num / den) : 0.0);
    rc = 0;
done:
    if (w_dev.data) dev.ops->weight_free(&dev, &w_dev);
    if (w_ref.data) ref.ops->weight_free(&ref, &w_ref);
    if (dev_up) {
        dev.ops->release(&dev, dx);
        dev.ops->release(&dev, dy);
        dev.ops->deinit(&dev);
    }
    ref.ops->release(&ref, rx);
    ref.ops->release(&ref, ry);
    ref.ops->deinit(&ref);
    free(y_ref);
    free(y_dev);
    free(x);
    free(wdata);
    free(side);
    return rc;
}

int main(int argc, char **argv) {
    /* a subcommand parses its options as a program named by its word */
    if (argc >= 2 && strcmp(argv[1], "tokenizer") == 0) return bench_tokenizer(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "image") == 0) return bench_image(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "matmul") == 0) return bench_matmul(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "tower") == 0) return tower_bench_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "serve") == 0) return serve_bench_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "model") == 0) return model_bench_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "load") == 0) return load_bench_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "grammar") == 0) return grammar_bench_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "bandwidth") == 0)
        return bandwidth_bench_main(argc - 1, argv + 1);
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        print_usage(stdout);
        return 0;
    }
    if (argc == 2 && !strcmp(argv[1], "--version")) {
        tool_print_version(stdout, "llava-bench");
        return 0;
    }
    return usage();
}
