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
 *   llava-bench image --image FILE [--repeat N] [--processor next|clip|pad]
 *       Single-threaded image pipeline: img_decode_file, then img_preprocess
 *       with the llava-v1.6 (next, default), llava-1.5 CLIP or pad settings.
 *       Runs each N times (default 10) and reports the fastest: decode ms,
 *       preprocess ms, and for next the two Pillow bicubic resizes alone
 *       (grid fit + base squash) inside it.
 */
#include "base/common.h"
#include "base/file.h"
#include "image/anyres.h"
#include "image/decode.h"
#include "image/preprocess.h"
#include "image/resample.h"
#include "text/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int usage(void) {
    fprintf(stderr,
            "usage: llava-bench tokenizer --tokenizer PATH [--text FILE] [--repeat N]\n"
            "       llava-bench image --image FILE [--repeat N] [--processor next|clip|pad]\n");
    return 2;
}

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
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--tokenizer") == 0 && i + 1 < argc)
            tok_path = argv[++i];
        else if (strcmp(argv[i], "--text") == 0 && i + 1 < argc)
            text_path = argv[++i];
        else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc)
            repeat = atoi(argv[++i]);
        else
            return usage();
    }
    if (!tok_path || repeat < 1) return usage();

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
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--image") == 0 && i + 1 < argc)
            path = argv[++i];
        else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc)
            repeat = atoi(argv[++i]);
        else if (strcmp(argv[i], "--processor") == 0 && i + 1 < argc)
            proc = argv[++i];
        else
            return usage();
    }
    img_proc_params p;
    if (strcmp(proc, "next") == 0) {
        img_proc_params_llava_next_default(&p);
    } else if (strcmp(proc, "clip") == 0 || strcmp(proc, "pad") == 0) {
        img_proc_params_clip_default(&p);
        if (proc[0] == 'p') {
            p.kind = IMG_PROC_LLAVA_PAD;
            p.do_pad = true;
        }
    } else {
        return usage();
    }
    if (!path || repeat < 1) return usage();

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
    printf("image: %s  %dx%d  processor %s  patches %d  tokens %d\n", path, im.w, im.h, proc,
           t.n_tiles, img_num_image_tokens(im.h, im.w, &p));
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

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "tokenizer") == 0) return bench_tokenizer(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "image") == 0) return bench_image(argc - 2, argv + 2);
    return usage();
}
