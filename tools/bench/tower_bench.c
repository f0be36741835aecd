/*
 * tower_bench.c - `llava-bench tower` (tower_bench.h).
 *
 *   llava-bench tower [--layers L] [--threads T] [--dtype f16|bf16|f32] [--repeat N]
 *                     [--device cpu|ref|cuda[:N]]
 *
 * Builds a CLIP ViT-L/14-336 tower (the vision tower of every LLaVA 1.5 /
 * 1.6 checkpoint) with random weights in memory: L layers (default 24),
 * dtype D (default f16, the mmproj file's) for the matrices, f32 vectors.
 * Encodes one random 336² tile N times (default 3) on the --device backend
 * (default cpu) with T threads (default all cores) and reports the fastest
 * tile in ms, the tower's GFLOP (matmuls 2·n·rows·cols, attention 4·n²·dim
 * per layer) and GFLOP/s, and where that tile's time went, op by op: the
 * backend's op table is wrapped by one that times each call. The cpu and ref
 * ops are synchronous, so a call's wall time is its cost; on a device
 * backend, whose ops return once queued, each timed call is followed by a
 * synchronize (the tile then costs a little more than it would unbroken).
 */
#include "bench/tower_bench.h"

#include "backend/backend.h"
#include "base/clock.h"
#include "base/common.h"
#include "base/half.h"
#include "common/tool_args.h"
#include "model/clip.h"
#include "model/weights.h"

#include <limits.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

enum { OP_MATMUL, OP_ATTENTION, OP_LAYERNORM, OP_ACT, OP_ADD, OP_OTHER, N_OPS };
static const char *const OP_NAMES[N_OPS] = {"matmul",   "attention", "layernorm",
                                            "gelu/act", "add",       "other"};

/* Wall time and the calling thread's CPU time (ms) per op kind. */
static double g_ms[N_OPS], g_cpu[N_OPS];
static long g_calls[N_OPS];
static const struct be_ops *g_inner;
static bool g_async; /* a device backend: wait for each timed op to finish */

static double tick(void) {
    return lv_now_ms();
}

static double clock_ms(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Runs CALL, adding its wall and thread CPU time to op kind K. */
#define TIMED(K, CALL)                                                                             \
    do {                                                                                           \
        double t0 = tick(), c0 = clock_ms(CLOCK_THREAD_CPUTIME_ID);                                \
        CALL;                                                                                      \
        if (g_async) g_inner->synchronize(b);                                                      \
        g_ms[K] += tick() - t0;                                                                    \
        g_cpu[K] += clock_ms(CLOCK_THREAD_CPUTIME_ID) - c0;                                        \
        g_calls[K]++;                                                                              \
    } while (0)

/* The matmuls by weight shape: rows × cols, flops, wall and thread CPU ms. */
enum { MAX_SHAPES = 8 };
static struct {
    int rows, cols;
    double flop, ms, cpu;
} g_shape[MAX_SHAPES];
static int g_n_shapes;

static void t_matmul(be *b, float *y, const float *x, const be_weight *w, const float *bias,
                     int n) {
    double ms = g_ms[OP_MATMUL], cpu = g_cpu[OP_MATMUL];
    TIMED(OP_MATMUL, g_inner->matmul(b, y, x, w, bias, n));
    int i = 0;
    while (i < g_n_shapes && (g_shape[i].rows != w->rows || g_shape[i].cols != w->cols)) i++;
    if (i == MAX_SHAPES) return;
    if (i == g_n_shapes) g_shape[g_n_shapes++] = (typeof(g_shape[0])){w->rows, w->cols, 0, 0, 0};
    g_shape[i].flop += 2.0 * n * w->rows * w->cols;
    g_shape[i].ms += g_ms[OP_MATMUL] - ms;
    g_shape[i].cpu += g_cpu[OP_MATMUL] - cpu;
}

static void t_attention(be *b, float *out, const float *q, const void *k, const void *v,
                        be_dtype kv_dtype, int n_q, int q_pos0, int n_kv, int n_heads,
                        int n_kv_heads, int head_dim, bool causal) {
    TIMED(OP_ATTENTION, g_inner->attention(b, out, q, k, v, kv_dtype, n_q, q_pos0, n_kv, n_heads,
                                           n_kv_heads, head_dim, causal));
}

static void t_layernorm(be *b, float *y, const float *x, const float *g, const float *beta, int n,
                        int dim, float eps) {
    TIMED(OP_LAYERNORM, g_inner->layernorm(b, y, x, g, beta, n, dim, eps));
}

static void t_quick_gelu(be *b, float *x, size_t n) {
    TIMED(OP_ACT, g_inner->quick_gelu(b, x, n));
}

static void t_gelu(be *b, float *x, size_t n) {
    TIMED(OP_ACT, g_inner->gelu(b, x, n));
}

static void t_add(be *b, float *y, const float *x, size_t n) {
    TIMED(OP_ADD, g_inner->add(b, y, x, n));
}

static uint32_t lcg(uint32_t *seed) {
    *seed = *seed * 1664525u + 1013904223u;
    return *seed;
}

/* Uniform in [-a, a). */
static float rnd(uint32_t *seed, float a) {
    return ((float)(lcg(seed) >> 8) / 8388608.0f - 1.0f) * a;
}

/* A random (rows, cols) matrix of dtype in [-a, a), weight_init'ed on b;
 * the bytes go into *keep (freed by the caller). */
static int make_matrix(be *b, be_weight *w, be_dtype dt, int rows, int cols, float a,
                       uint32_t *seed, void **keep, lv_err *err) {
    size_t n = (size_t)rows * cols, es = dt == BE_F32 ? 4 : 2;
    unsigned char *p = malloc(n * es);
    if (!p) return 1;
    *keep = p;
    for (size_t i = 0; i < n; i++) {
        float f = rnd(seed, a);
        if (dt == BE_F32) {
            memcpy(p + 4 * i, &f, 4);
        } else {
            uint16_t h = dt == BE_F16 ? lv_f32_to_f16(f) : lv_f32_to_bf16(f);
            memcpy(p + 2 * i, &h, 2);
        }
    }
    return b->ops->weight_init(b, w, dt, rows, cols, p, NULL, err) != LV_OK;
}

/* A float vector of n values on b: c + [-a, a). */
static float *make_vector(be *b, int n, float c, float a, uint32_t *seed) {
    float *h = malloc((size_t)n * sizeof *h);
    if (!h) return NULL;
    for (int i = 0; i < n; i++) h[i] = c + rnd(seed, a);
    float *v = b->ops->vector_init(b, BE_F32, n, h);
    free(h);
    return v;
}

static void usage_text(FILE *f) {
    fprintf(f, "usage: llava-bench tower [--layers L] [--threads T] [--dtype f16|bf16|f32] "
               "[--repeat N]\n"
               "                         [--device cpu|ref|cuda[:N]]   (default cpu)\n");
}

int tower_bench_main(int argc, char **argv) {
    int layers = 24, threads = 0, repeat = 3;
    const char *dname = "f16", *device = "cpu";
    const tool_opt opts[] = {
        TOOL_STR("device", 0, &device),
        TOOL_INT("layers", 0, &layers, 1, 64),
        TOOL_INT("threads", 0, &threads, 0, 4096),
        TOOL_INT("repeat", 0, &repeat, 1, INT_MAX),
        TOOL_STR("dtype", 0, &dname),
    };
    static const tool_info tool = {"llava-bench tower", usage_text, false};
    int parsed = tool_parse(&tool, opts, LV_ARRAY_LEN(opts), argc, argv);
    if (parsed) return parsed == TOOL_HELP ? 0 : 2;
    int device_index;
    const struct be_ops *inner = be_find_device(device, &device_index);
    if (!tool_device("llava-bench tower", device)) return 1;
    be_dtype dt;
    if (strcmp(dname, "f16") == 0)
        dt = BE_F16;
    else if (strcmp(dname, "bf16") == 0)
        dt = BE_BF16;
    else if (strcmp(dname, "f32") == 0)
        dt = BE_F32;
    else {
        usage_text(stderr);
        return 2;
    }

    /* ViT-L/14-336 (openai/clip-vit-large-patch14-336) */
    lv_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    lv_vision_config *vc = &cfg.vision;
    vc->dim = 1024;
    vc->hidden_dim = 4096;
    vc->n_layers = layers;
    vc->n_heads = 16;
    vc->head_dim = 64;
    vc->image_size = 336;
    vc->patch_size = 14;
    vc->n_channels = 3;
    vc->ln_eps = 1e-5;
    snprintf(vc->hidden_act, sizeof vc->hidden_act, "quick_gelu");
    int dim = vc->dim, hid = vc->hidden_dim, pcols = 3 * 14 * 14, n_pos = 1 + 24 * 24;

    static struct be_ops timed;
    g_inner = inner;
    g_async = inner != &be_cpu_ops && inner != &be_ref_ops;
    timed = *inner;
    timed.matmul = t_matmul;
    timed.attention = t_attention;
    timed.layernorm = t_layernorm;
    timed.quick_gelu = t_quick_gelu;
    timed.gelu = t_gelu;
    timed.add = t_add;
    be b = {.ops = &timed, .device = device_index};
    lv_err err;
    if (b.ops->init(&b, threads, &err) != LV_OK) {
        fprintf(stderr, "llava-bench: %s\n", err.msg);
        return 1;
    }

    int rc = 1, n_keep = 0;
    void **keep = calloc((size_t)layers * 6 + 1, sizeof *keep);
    clip_layer_weights *lw = calloc((size_t)layers, sizeof *lw);
    clip_weights w = {.n_layers = layers, .layers = lw};
    float *pixels = malloc((size_t)3 * 336 * 336 * sizeof *pixels);
    float *out = b.ops->alloc(&b, (size_t)n_pos * dim * sizeof(float));
    uint32_t seed = 4242;
    if (!keep || !lw || !pixels || !out) goto nomem;
    float sd = 0.03f, sh = 0.015f; /* weight ranges: outputs stay O(1) */
    if (make_matrix(&b, &w.patch, dt, dim, pcols, sd, &seed, &keep[n_keep++], &err)) goto fail;
    if (!(w.cls_pos = make_vector(&b, n_pos * dim, 0, 0.1f, &seed)) ||
        !(w.pre_ln_g = make_vector(&b, dim, 1, 0.1f, &seed)) ||
        !(w.pre_ln_b = make_vector(&b, dim, 0, 0.1f, &seed)))
        goto nomem;
    for (int l = 0; l < layers; l++) {
        clip_layer_weights *L = &lw[l];
        be_weight *sq[] = {&L->wq, &L->wk, &L->wv, &L->wo};
        for (int i = 0; i < 4; i++)
            if (make_matrix(&b, sq[i], dt, dim, dim, sd, &seed, &keep[n_keep++], &err)) goto fail;
        if (make_matrix(&b, &L->fc1, dt, hid, dim, sd, &seed, &keep[n_keep++], &err) ||
            make_matrix(&b, &L->fc2, dt, dim, hid, sh, &seed, &keep[n_keep++], &err))
            goto fail;
        float **vecs[] = {&L->ln1_g, &L->ln1_b, &L->bq,    &L->bk,   &L->bv,
                          &L->bo,    &L->ln2_g, &L->ln2_b, &L->fc2_b};
        for (size_t i = 0; i < LV_ARRAY_LEN(vecs); i++) {
            bool gain = vecs[i] == &L->ln1_g || vecs[i] == &L->ln2_g;
            if (!(*vecs[i] = make_vector(&b, dim, gain ? 1.0f : 0.0f, 0.1f, &seed))) goto nomem;
        }
        if (!(L->fc1_b = make_vector(&b, hid, 0, 0.1f, &seed))) goto nomem;
    }
    for (int i = 0; i < 3 * 336 * 336; i++) pixels[i] = rnd(&seed, 2.0f);

    clip c;
    if (clip_init(&c, &b, &cfg, &w, &err) != LV_OK) goto fail;
    typeof(g_shape[0]) best_shape[MAX_SHAPES];
    int n_best_shapes = 0;
    double best = 1e30, best_ms[N_OPS] = {0}, best_cpu[N_OPS] = {0}, best_proc = 0, min_proc = 1e30;
    for (int r = 0; r < repeat; r++) {
        memset(g_ms, 0, sizeof g_ms);
        memset(g_cpu, 0, sizeof g_cpu);
        memset(g_calls, 0, sizeof g_calls);
        memset(g_shape, 0, sizeof g_shape);
        g_n_shapes = 0;
        double t0 = tick(), p0 = clock_ms(CLOCK_PROCESS_CPUTIME_ID);
        if (clip_encode(&c, pixels, 1, out, &err) != LV_OK) goto fail;
        b.ops->synchronize(&b);
        double dt_ms = tick() - t0, proc = clock_ms(CLOCK_PROCESS_CPUTIME_ID) - p0;
        if (proc < min_proc) min_proc = proc;
        if (dt_ms < best) {
            best = dt_ms;
            memcpy(best_shape, g_shape, sizeof g_shape);
            n_best_shapes = g_n_shapes;
            best_proc = proc;
            memcpy(best_ms, g_ms, sizeof g_ms);
            memcpy(best_cpu, g_cpu, sizeof g_cpu);
        }
    }
    double mm_flop =
        2.0 * n_pos * ((double)dim * pcols + layers * (4.0 * dim * dim + 2.0 * dim * hid));
    double at_flop = layers * 4.0 * n_pos * (double)n_pos * dim;
    double sum = 0, fsum = 0;
    float first_row[1024]; /* dim: the CLS row, read back through the backend */
    b.ops->download(&b, first_row, out, sizeof first_row);
    for (int i = 0; i < dim; i++) fsum += first_row[i]; /* keeps the work observable */
    printf("tower: CLIP ViT-L/14-336, %d layers, %s weights, 1 tile (%d positions), %s, %d "
           "threads\n",
           layers, dname, n_pos, device, b.n_threads);
    printf("  tile: %9.1f ms  %7.1f GFLOP  %7.1f GFLOP/s  (fastest of %d; checksum %.4g)\n", best,
           (mm_flop + at_flop) / 1e9, (mm_flop + at_flop) / best / 1e6, repeat, fsum);
    printf("  process CPU time: %.1f ms in that tile, %.1f ms the least of the %d tiles\n",
           best_proc, min_proc, repeat);
    for (int i = 0; i < N_OPS; i++) sum += best_ms[i];
    best_ms[OP_OTHER] = best - sum;
    printf("  op         wall (ms)  share  [calling thread's CPU ms]\n");
    for (int i = 0; i < N_OPS; i++) {
        printf("  %-10s %9.1f ms  %5.1f%%  [%7.1f]", OP_NAMES[i], best_ms[i],
               100 * best_ms[i] / best, best_cpu[i]);
        if (i == OP_MATMUL) printf("  %7.1f GFLOP/s", mm_flop / best_ms[i] / 1e6);
        if (i == OP_ATTENTION) printf("  %7.1f GFLOP/s", at_flop / best_ms[i] / 1e6);
        printf("\n");
    }
    printf("  matmul by weight shape (rows x cols; GFLOP/s on wall and on the calling thread's "
           "CPU time x threads):\n");
    for (int i = 0; i < n_best_shapes; i++)
        printf("    %5d x %-5d %7.1f GFLOP %9.1f ms  %7.1f GFLOP/s  [%7.1f]\n", best_shape[i].rows,
               best_shape[i].cols, best_shape[i].flop / 1e9, best_shape[i].ms,
               best_shape[i].flop / best_shape[i].ms / 1e6,
               best_shape[i].flop / (best_shape[i].cpu * b.n_threads) / 1e6);
    rc = 0;
    goto done;
nomem:
    snprintf(err.msg, sizeof err.msg, "out of memory");
fail:
    fprintf(stderr, "llava-bench: %s\n", err.msg);
done:
    if (lw)
        for (int l = 0; l < layers; l++) {
            clip_layer_weights *L = &lw[l];
            be_weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->fc1, &L->fc2};
            for (int i = 0; i < 6; i++)
                if (ws[i]->data) b.ops->weight_free(&b, ws[i]);
            float *vs[] = {L->ln1_g, L->ln1_b, L->bq,    L->bk,    L->bv,
                           L->bo,    L->ln2_g, L->ln2_b, L->fc2_b, L->fc1_b};
            for (size_t i = 0; i < LV_ARRAY_LEN(vs); i++)
                if (vs[i]) b.ops->release(&b, vs[i]);
        }
    if (w.patch.data) b.ops->weight_free(&b, &w.patch);
    float *tv[] = {w.cls_pos, w.pre_ln_g, w.pre_ln_b, out};
    for (size_t i = 0; i < LV_ARRAY_LEN(tv); i++)
        if (tv[i]) b.ops->release(&b, tv[i]);
    for (int i = 0; i < n_keep; i++) free(keep[i]);
    free(keep);
    free(lw);
    free(pixels);
    b.ops->deinit(&b);
    return rc;
}
