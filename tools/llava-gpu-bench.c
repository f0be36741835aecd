/*
 * llava-gpu-bench.c - a device backend's kernels alone at the shapes of
 * llava-v1.6-mistral-7b, with random data, and the two ceilings they run
 * against (docs/CUDA_NOTES.md keeps the figures).
 *
 *   llava-gpu-bench [--device cuda[:N]] [--only bandwidth|matmul|attention]
 *                   [--dtype LIST] [--n LIST] [--repeat R]
 *
 *   bandwidth  device-to-device copies of 2 × 1 GiB: bytes read + written
 *              per second, the bound every memory-bound kernel is held to;
 *              with it, the decode bound of a 7B Q4_0 / F16 model (its
 *              weight bytes per token over that bandwidth).
 *   matmul     each 7B weight shape (q, k, v, o, gate, up, down, lm_head)
 *              for each dtype of LIST (default q4_0,q4_k,q6_k,q8_0,f16) and
 *              each token count of LIST (default 1,16,512): the median time
 *              of R runs (default 20), the weight bytes over it (GB/s, and
 *              the fraction of the measured copy bandwidth) and the TFLOP/s.
 *              Enough copies of each weight rotate that a run never finds
 *              its weight in L2 (over 4 × 50 MB).
 *   attention  a decode step over 512 / 2900 / 4000 cached positions and a
 *              2900-token causal prefill (32 heads over 8 kv heads of 128,
 *              f16 cache), and one 577-token CLIP tile (16 heads of 64):
 *              the time of the op for one layer.
 * Times are host wall time around ops->synchronize over 20 calls queued
 * back to back (one copy for bandwidth), recorded as one CUDA graph,
 * divided by 20: the synchronisation and the graph's launch are shared, the
 * host's per-kernel launch cost left out as a decode step leaves it out.
 * The median of R such runs is printed.
 */
#include "backend/backend.h"
#include "backend/quant.h"
#include "base/clock.h"
#include "base/half.h"
#include "common/tool_version.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t g_rng = 0x9e3779b97f4a7c15u;
static uint64_t rnd(void) {
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}
static float rnd_float(void) {
    return (float)((rnd() >> 40) * (2.0 / 16777216.0)) - 1.0f;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Random host bytes of a rows × cols weight: plain values in [-1, 1), or
 * random codes with f16 scales of magnitude 2^-9..2^-4. */
static void *rnd_weight(be_dtype dt, int rows, int cols) {
    size_t rb = be_row_bytes(dt, cols, NULL), n = rb * rows;
    unsigned char *p = malloc(n);
    if (!p) return NULL;
    if (dt == BE_F16 || dt == BE_BF16) {
        for (size_t i = 0; i < (size_t)rows * cols; i++) {
            uint16_t h = dt == BE_F16 ? lv_f32_to_f16(rnd_float()) : lv_f32_to_bf16(rnd_float());
            memcpy(p + 2 * i, &h, 2);
        }
        return p;
    }
    for (size_t i = 0; i < n; i += 8) {
        uint64_t r = rnd();
        memcpy(p + i, &r, n - i < 8 ? n - i : 8);
    }
    int bb = be_block_bytes(dt);
    for (size_t b = 0; b < n / bb; b++) {
        unsigned char *blk = p + b * bb;
        uint16_t h = (uint16_t)((rnd() & 1) << 15 | (6 + rnd() % 5) << 10 | (rnd() & 0x3ff));
        memcpy(dt == BE_Q6_K ? blk + 208 : blk, &h, 2);
        if (dt == BE_Q4_1 || dt == BE_Q4_K || dt == BE_Q5_K) memcpy(blk + 2, &h, 2);
    }
    return p;
}

/* Seconds of one fn(arg): R runs (median), each `inner` calls queued back to
 * back between two synchronizes and divided by inner, as a forward queues
 * its ops (so a run's fixed cost of launch and synchronisation is shared);
 * recorded as one unit where the backend records (a CUDA graph, as a decode
 * step is), so the host's cost of launching each kernel stays out. */
typedef void (*op_fn)(be *b, void *arg, int run);
static double time_op(be *b, op_fn fn, void *arg, int repeat, int inner) {
    double t[256];
    if (repeat > 256) repeat = 256;
    fn(b, arg, 0); /* warm-up */
    b->ops->synchronize(b);
    for (int r = 0; r < repeat; r++) {
        double t0 = lv_now_ms();
        if (b->ops->record_begin) b->ops->record_begin(b);
        for (int i = 0; i < inner; i++) fn(b, arg, r * inner + i + 1);
        if (b->ops->record_end) b->ops->record_end(b);
        b->ops->synchronize(b);
        t[r] = (lv_now_ms() - t0) / 1e3 / inner;
    }
    return median(t, repeat);
}

/* ---- bandwidth ---------------------------------------------------------------- */

typedef struct {
    void *a, *b;
    size_t bytes;
} copy_arg;

static void run_copy(be *b, void *arg, int run) {
    copy_arg *c = arg;
    b->ops->copy(b, run % 2 ? c->a : c->b, run % 2 ? c->b : c->a, c->bytes);
}

static double bandwidth(be *b, int repeat) {
    copy_arg c = {.bytes = (size_t)1 << 30};
    c.a = b->ops->alloc(b, c.bytes);
    c.b = b->ops->alloc(b, c.bytes);
    if (!c.a || !c.b) {
        fprintf(stderr, "llava-gpu-bench: cannot allocate 2 GiB on the device\n");
        b->ops->release(b, c.a);
        return 0;
    }
    double s = time_op(b, run_copy, &c, repeat, 1);
    b->ops->release(b, c.a);
    b->ops->release(b, c.b);
    return 2.0 * c.bytes / s / 1e9;
}

/* ---- matmul -------------------------------------------------------------------- */

static const struct {
    const char *name;
    int rows, cols;
} SHAPES[] = {
    {"q_proj", 4096, 4096},     {"k_proj", 1024, 4096},     {"o_proj", 4096, 4096},
    {"gate_proj", 14336, 4096}, {"down_proj", 4096, 14336}, {"lm_head", 32000, 4096},
};

#define MAX_COPIES 64
typedef struct {
    be_weight w[MAX_COPIES];
    int copies, n;
    float *x, *y;
} mm_arg;

static void run_matmul(be *b, void *arg, int run) {
    mm_arg *m = arg;
    b->ops->matmul(b, m->y, m->x, &m->w[run % m->copies], NULL, m->n);
}

static bool parse_dtype(const char *s, be_dtype *dt) {
    static const struct {
        const char *name;
        be_dtype dt;
    } T[] = {{"f16", BE_F16},   {"bf16", BE_BF16}, {"q4_0", BE_Q4_0}, {"q4_1", BE_Q4_1},
             {"q4_k", BE_Q4_K}, {"q5_k", BE_Q5_K}, {"q6_k", BE_Q6_K}, {"q8_0", BE_Q8_0}};
    for (size_t i = 0; i < sizeof T / sizeof *T; i++)
        if (strcmp(s, T[i].name) == 0) {
            *dt = T[i].dt;
            return true;
        }
    return false;
}

static int bench_matmul(be *b, const char *dtypes, const char *ns, int repeat, double bw) {
    printf("\nmatmul: y (n, rows) = x (n, cols) · Wᵀ; median of %d; GB/s = weight bytes / time "
           "(%% of the copy bandwidth)\n",
           repeat);
    printf("%-6s %-10s %6s %6s %5s %10s %9s %6s %9s\n", "dtype", "shape", "rows", "cols", "n", "us",
           "GB/s", "%bw", "TFLOP/s");
    char list[256];
    snprintf(list, sizeof list, "%s", dtypes);
    for (char *save = NULL, *d = strtok_r(list, ",", &save); d; d = strtok_r(NULL, ",", &save)) {
        be_dtype dt;
        if (!parse_dtype(d, &dt)) {
            fprintf(stderr, "llava-gpu-bench: unknown dtype \"%s\"\n", d);
            return 1;
        }
        for (size_t s = 0; s < sizeof SHAPES / sizeof *SHAPES; s++) {
            int rows = SHAPES[s].rows, cols = SHAPES[s].cols;
            size_t wbytes = be_row_bytes(dt, cols, NULL) * rows;
            void *host = rnd_weight(dt, rows, cols);
            mm_arg m = {0};
            m.copies = (int)((200u << 20) / wbytes) + 1;
            if (m.copies > MAX_COPIES) m.copies = MAX_COPIES;
            lv_err err = {{0}};
            for (int c = 0; c < m.copies; c++)
                if (b->ops->weight_init(b, &m.w[c], dt, rows, cols, host, NULL, &err)) {
                    fprintf(stderr, "llava-gpu-bench: %s\n", err.msg);
                    return 1;
                }
            free(host);
            char nl[128];
            snprintf(nl, sizeof nl, "%s", ns);
            for (char *s2 = NULL, *nt = strtok_r(nl, ",", &s2); nt; nt = strtok_r(NULL, ",", &s2)) {
                m.n = atoi(nt);
                if (m.n < 1) continue;
                float *hx = malloc((size_t)m.n * cols * sizeof *hx);
                for (size_t i = 0; i < (size_t)m.n * cols; i++) hx[i] = rnd_float();
                m.x = b->ops->alloc(b, (size_t)m.n * cols * sizeof(float));
                m.y = b->ops->alloc(b, (size_t)m.n * rows * sizeof(float));
                b->ops->upload(b, m.x, hx, (size_t)m.n * cols * sizeof(float));
                free(hx);
                double t = time_op(b, run_matmul, &m, repeat, 20);
                double gbs = wbytes / t / 1e9, tf = 2.0 * rows * cols * m.n / t / 1e12;
                printf("%-6s %-10s %6d %6d %5d %10.1f %9.1f %5.0f%% %9.2f\n", d, SHAPES[s].name,
                       rows, cols, m.n, t * 1e6, gbs, bw > 0 ? 100 * gbs / bw : 0, tf);
                fflush(stdout);
                b->ops->release(b, m.x);
                b->ops->release(b, m.y);
            }
            for (int c = 0; c < m.copies; c++) b->ops->weight_free(b, &m.w[c]);
        }
    }
    return 0;
}

/* ---- attention ------------------------------------------------------------------ */

typedef struct {
    float *q, *out;
    void *k, *v;
    be_dtype kv;
    int n_q, pos0, n_kv, heads, kv_heads, hd;
    bool causal;
} at_arg;

static void run_attention(be *b, void *arg, int run) {
    at_arg *a = arg;
    b->ops->attention(b, a->out, a->q, a->k, a->v, a->kv, a->n_q, a->pos0, a->n_kv, a->heads,
                      a->kv_heads, a->hd, a->causal);
}

static void *rnd_device(be *b, size_t n, be_dtype dt) {
    size_t es = dt == BE_F16 ? 2 : 4;
    unsigned char *h = malloc(n * es);
    for (size_t i = 0; i < n; i++) {
        float f = rnd_float();
        if (dt == BE_F16) {
            uint16_t v = lv_f32_to_f16(f);
            memcpy(h + 2 * i, &v, 2);
        } else {
            memcpy(h + 4 * i, &f, 4);
        }
    }
    void *d = b->ops->alloc(b, n * es);
    b->ops->upload(b, d, h, n * es);
    free(h);
    return d;
}

static void bench_attention(be *b, int repeat) {
    static const struct {
        const char *name;
        int n_q, pos0, n_kv, heads, kv_heads, hd;
        bool causal, f16;
    } C[] = {
        {"decode512", 1, 511, 512, 32, 8, 128, true, true},
        {"decode2900", 1, 2899, 2900, 32, 8, 128, true, true},
        {"decode4000", 1, 3999, 4000, 32, 8, 128, true, true},
        {"prefill2900", 2900, 0, 2900, 32, 8, 128, true, true},
        {"clip577", 577, 0, 577, 16, 16, 64, false, false},
    };
    printf("\nattention (one layer): median of %d\n", repeat);
    printf("%-12s %6s %6s %10s %9s %9s\n", "case", "n_q", "n_kv", "us", "KV GB/s", "TFLOP/s");
    for (size_t i = 0; i < sizeof C / sizeof *C; i++) {
        at_arg a = {.kv = C[i].f16 ? BE_F16 : BE_F32,
                    .n_q = C[i].n_q,
                    .pos0 = C[i].pos0,
                    .n_kv = C[i].n_kv,
                    .heads = C[i].heads,
                    .kv_heads = C[i].kv_heads,
                    .hd = C[i].hd,
                    .causal = C[i].causal};
        size_t qn = (size_t)a.n_q * a.heads * a.hd, kvn = (size_t)a.n_kv * a.kv_heads * a.hd;
        a.q = rnd_device(b, qn, BE_F32);
        a.out = b->ops->alloc(b, qn * sizeof(float));
        a.k = rnd_device(b, kvn, a.kv);
        a.v = rnd_device(b, kvn, a.kv);
        double t = time_op(b, run_attention, &a, repeat, 20);
        double kvb = 2.0 * kvn * (C[i].f16 ? 2 : 4);
        double pairs = C[i].causal ? (double)a.n_q * a.pos0 + 0.5 * a.n_q * (a.n_q + 1)
                                   : (double)a.n_q * a.n_kv;
        double flops = 4.0 * pairs * a.heads * a.hd;
        printf("%-12s %6d %6d %10.1f %9.1f %9.2f\n", C[i].name, a.n_q, a.n_kv, t * 1e6,
               kvb / t / 1e9, flops / t / 1e12);
        void *bufs[] = {a.q, a.out, a.k, a.v};
        for (int j = 0; j < 4; j++) b->ops->release(b, bufs[j]);
    }
}

int main(int argc, char **argv) {
    const char *device = "cuda", *only = NULL, *dtypes = "q4_0,q4_k,q6_k,q8_0,f16",
               *ns = "1,16,512";
    int repeat = 20;
    for (int i = 1; i < argc; i += 2) { /* --help, or NAME VALUE pairs */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            printf("usage: llava-gpu-bench [--device cuda[:N]] [--only bandwidth|matmul|attention] "
                   "[--dtype LIST] [--n LIST] [--repeat R]\n");
            return 0;
        }
        if (strcmp(a, "--version") == 0) {
            tool_print_version(stdout, "llava-gpu-bench");
            return 0;
        }
        if (!v) {
            fprintf(stderr, "llava-gpu-bench: %s needs a value (see --help)\n", a);
            return 2;
        }
        if (strcmp(a, "--device") == 0)
            device = v;
        else if (strcmp(a, "--only") == 0)
            only = v;
        else if (strcmp(a, "--dtype") == 0)
            dtypes = v;
        else if (strcmp(a, "--n") == 0)
            ns = v;
        else if (strcmp(a, "--repeat") == 0)
            repeat = atoi(v) > 0 ? atoi(v) : 1;
        else {
            fprintf(stderr, "llava-gpu-bench: unknown option %s (see --help)\n", a);
            return 2;
        }
    }
    int index = 0;
    be b = {.ops = be_find_device(device, &index)};
    b.device = index;
    if (!b.ops) {
        fprintf(stderr, "llava-gpu-bench: unknown device \"%s\" (%s)\n", device, be_names());
        return 2;
    }
    lv_err err = {{0}};
    if (b.ops->init(&b, 0, &err)) {
        fprintf(stderr, "llava-gpu-bench: %s\n", err.msg);
        return 1;
    }
    double bw = 0;
    if (!only || strcmp(only, "bandwidth") == 0 || strcmp(only, "matmul") == 0) {
        bw = bandwidth(&b, repeat);
        /* the 7B's weight bytes a decoded token reads: 32 layers of q, k, v, o, gate, up,
         * down, plus lm_head (Q6_K in llama.cpp's and our Q4_0 GGUF files) */
        double per_layer = 4096.0 * 4096 * 2 + 1024.0 * 4096 * 2 + 14336.0 * 4096 * 3;
        double q4 = per_layer * 32 * 18 / 32 + 32000.0 * 4096 * 210 / 256;
        double f16 = (per_layer * 32 + 32000.0 * 4096) * 2;
        printf("copy bandwidth: %.0f GB/s (read + write)\n", bw);
        printf("decode bound, 7B Q4_0 (+Q6_K lm_head, %.2f GB a token): %.0f t/s; F16 (%.2f GB): "
               "%.0f t/s\n",
               q4 / 1e9, bw * 1e9 / q4, f16 / 1e9, bw * 1e9 / f16);
    }
    int rc = 0;
    if (!only || strcmp(only, "matmul") == 0) rc = bench_matmul(&b, dtypes, ns, repeat, bw);
    if (!rc && (!only || strcmp(only, "attention") == 0)) bench_attention(&b, repeat);
    if (b.ops->status && b.ops->status(&b, &err)) {
        fprintf(stderr, "llava-gpu-bench: %s\n", err.msg);
        rc = 1;
    }
    b.ops->deinit(&b);
    return rc;
}
