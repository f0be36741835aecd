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
 */
#include "base/common.h"
#include "base/file.h"
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
    fprintf(stderr, "usage: llava-bench tokenizer --tokenizer PATH [--text FILE] [--repeat N]\n");
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

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "tokenizer") == 0) return bench_tokenizer(argc - 2, argv + 2);
    return usage();
}
