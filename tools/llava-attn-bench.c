/*
 * llava-attn-bench.c - the attention op alone, at the shapes LLaVA runs it,
 * on the cpu backend with random data.
 *
 *   llava-attn-bench [--threads T] [--repeat N] [--kv f16|f32] [--only NAME]
 *
 * Cases (NAME), each one op call per layer, every layer with its own K/V
 * buffers so a decode streams its cache from memory as a model does:
 *   clip        577 queries × 577 keys, 16 heads of 64, not causal, f32 K/V
 *               (always: the tower's K/V are activations), 24 layers: one
 *               336² tile of the vision tower;
 *   prefill512  512 queries from position 0, causal, 32 query heads over 8
 *               kv heads of 128 (Mistral 7B), 32 layers;
 *   decode512   1 query at position 511 over 512 keys, 7B shape, 32 layers;
 *   decode2900  the same at position 2899 (after a 672×672 image prompt).
 * Each case runs N times (default 7) after one warm-up run; the median
 * and the fastest total over the layers are printed in ms, with the K/V
 * bytes one run reads and the rate that makes, and the median CPU time of
 * the process (all threads; the steadier figure on a loaded machine, but
 * it counts the pool's spinning threads too).
 *
 * Built against the backend.h of before the f16 KV cache (no dtype
 * argument) when ATTN_BENCH_F32_ONLY is defined, to time the old kernel.
 */
#include "backend/backend.h"
#include "backend/cpu/cpu.h"
#include "base/clock.h"
#include "base/half.h"
#include "common/tool_version.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* CPU time of the whole process (every thread), ms. */
static double cpu_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

typedef struct {
    const char *name;
    int n_q, q_pos0, n_kv, n_heads, n_kv_heads, head_dim, n_layers;
    bool causal, f32_always;
} attn_case;

static const attn_case CASES[] = {
    {"clip", 577, 0, 577, 16, 16, 64, 24, false, true},
    {"prefill512", 512, 0, 512, 32, 8, 128, 32, true, false},
    {"decode512", 1, 511, 512, 32, 8, 128, 32, true, false},
    {"decode2900", 1, 2899, 2900, 32, 8, 128, 32, true, false},
};

static uint64_t g_rng = 0x2545f4914f6cdd1du;
static float rnd_float(void) { /* xorshift64*, uniform in [-1, 1) */
    g_rng ^= g_rng >> 12, g_rng ^= g_rng << 25, g_rng ^= g_rng >> 27;
    return (float)((g_rng * 0x2545f4914f6cdd1du) >> 40) / (float)(1 << 23) - 1.0f;
}

static void fill(be *b, void *dst, be_dtype dt, size_t n) {
    size_t es = dt == BE_F16 ? 2 : 4;
    unsigned char *host = malloc(n * es);
    if (!host) abort();
    for (size_t i = 0; i < n; i++) {
        float f = 2 * rnd_float();
        if (dt == BE_F16)
            ((uint16_t *)host)[i] = lv_f32_to_f16(f);
        else
            ((float *)host)[i] = f;
    }
    b->ops->upload(b, dst, host, n * es);
    free(host);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void run_case(be *b, const attn_case *c, be_dtype dt, int repeat) {
    if (c->f32_always) dt = BE_F32;
    size_t es = dt == BE_F16 ? 2 : 4;
    size_t q_len = (size_t)c->n_q * c->n_heads * c->head_dim;
    size_t kv_len = (size_t)c->n_kv * c->n_kv_heads * c->head_dim;
    float *q = b->ops->alloc(b, q_len * 4), *out = b->ops->alloc(b, q_len * 4);
    void **k = calloc((size_t)c->n_layers, sizeof *k), **v = calloc((size_t)c->n_layers, sizeof *v);
    if (!q || !out || !k || !v) abort();
    fill(b, q, BE_F32, q_len);
    for (int l = 0; l < c->n_layers; l++) {
        k[l] = b->ops->alloc(b, kv_len * es);
        v[l] = b->ops->alloc(b, kv_len * es);
        if (!k[l] || !v[l]) abort();
        fill(b, k[l], dt, kv_len);
        fill(b, v[l], dt, kv_len);
    }
    double *ms = calloc((size_t)repeat + 1, sizeof *ms), *cms = calloc((size_t)repeat + 1, 8);
    for (int r = 0; r <= repeat; r++) { /* run 0 warms up */
        double t0 = lv_now_ms(), c0 = cpu_ms();
        for (int l = 0; l < c->n_layers; l++)
#ifdef ATTN_BENCH_F32_ONLY
            b->ops->attention(b, out, q, k[l], v[l], c->n_q, c->q_pos0, c->n_kv, c->n_heads,
                              c->n_kv_heads, c->head_dim, c->causal);
#else
            b->ops->attention(b, out, q, k[l], v[l], dt, c->n_q, c->q_pos0, c->n_kv, c->n_heads,
                              c->n_kv_heads, c->head_dim, c->causal);
#endif
        b->ops->synchronize(b);
        ms[r] = lv_now_ms() - t0;
        cms[r] = cpu_ms() - c0;
    }
    qsort(ms + 1, (size_t)repeat, sizeof *ms, cmp_double);
    qsort(cms + 1, (size_t)repeat, sizeof *cms, cmp_double);
    double med = ms[1 + repeat / 2], best = ms[1];
    double bytes = 2.0 * kv_len * es * c->n_layers;
    printf("%-11s kv %s  median %9.3f ms  fastest %9.3f ms  cpu-time median %9.3f ms  (%d layers; "
           "K/V %.1f MB, %.1f GB/s)\n",
           c->name, dt == BE_F16 ? "f16" : "f32", med, best, cms[1 + repeat / 2], c->n_layers,
           bytes / 1e6, bytes / 1e6 / med);
    for (int l = 0; l < c->n_layers; l++) {
        b->ops->release(b, k[l]);
        b->ops->release(b, v[l]);
    }
    free(ms);
    free(cms);
    free(k);
    free(v);
    b->ops->release(b, q);
    b->ops->release(b, out);
}

static void usage(FILE *f) {
    fprintf(f, "usage: llava-attn-bench [--threads T] [--repeat N] [--kv f16|f32] "
               "[--only clip|prefill512|decode512|decode2900]\n");
}

int main(int argc, char **argv) {
    int threads = 0, repeat = 7;
    const char *only = NULL;
    be_dtype dt = BE_F16;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc)
            repeat = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--kv") && i + 1 < argc) {
            const char *d = argv[++i];
            if (strcmp(d, "f16") && strcmp(d, "f32")) {
                fprintf(stderr, "llava-attn-bench: --kv takes f16 or f32, not %s\n", d);
                return 2;
            }
            dt = d[1] == '1' ? BE_F16 : BE_F32;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--version")) {
            tool_print_version(stdout, "llava-attn-bench");
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (repeat < 1) repeat = 1;
#ifdef ATTN_BENCH_F32_ONLY
    dt = BE_F32;
#endif
    be b = {.ops = &be_cpu_ops};
    lv_err err;
    if (b.ops->init(&b, threads, &err) != LV_OK) {
        fprintf(stderr, "llava-attn-bench: %s\n", err.msg);
        return 1;
    }
    printf("cpu backend, %s kernels, %d threads\n", cpu_ctx_of(&b)->k->isa, b.n_threads);
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++)
        if (!only || !strcmp(only, CASES[i].name)) run_case(&b, &CASES[i], dt, repeat);
    b.ops->deinit(&b);
    return 0;
}
