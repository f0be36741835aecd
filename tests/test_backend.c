/*
 * test_backend.c - every op of the CPU backend against the scalar reference.
 *
 * Each op runs on the reference (backend/ref.c) and on four CPU setups: 1 and
 * 3 threads, with the best kernels this machine has (AVX2 where present) and
 * with the portable ones. Every check draws fresh random data (never zeros),
 * poisons the outputs with NaN first so an element left unwritten fails, and
 * compares with the relative error ‖got − want‖ / ‖want‖. Shapes include odd
 * sizes (head_dim 24, dims not a multiple of 8, n = 1 and 7, GQA), all three
 * weight dtypes, weights at unaligned addresses, and the in-place calls the
 * header allows. The half -> float conversions are checked exhaustively.
 * Quantized weights (every MLX bits/group, every ggml block type) run the
 * same comparison over n = 1, 3, 17 and rows of 32 to 4096 columns.
 * matmul_batch_invariant checks that a token's outputs are the same bits
 * alone (n = 1) or in any batch of up to 20, for every weight dtype, with
 * each kernel table (AVX2 with and without AVX-512VL, portable).
 * Attention runs with f32 and f16 keys and values on every kernel table,
 * which must give the same bits; attention_batch_invariant checks that a
 * query's output is the same bits in any cut of the queries into calls;
 * store_as_f16 checks the cache's f16 rounding against the reference. gelu is
 * also checked on large negative inputs alone, where a naive
 * 0.5·x·(1 + erf(x/√2)) cancels.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "backend/backend.h"
#include "backend/cpu/cpu.h"
#include "backend/cpu/threadpool.h"
#include "backend/quant.h"
#include "base/half.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Relative-error bounds. Ops whose float32 sums run over thousands of terms
 * get a looser bound than elementwise ones; gathers must be exact. */
#define TOL_ELEM 5e-7
#define TOL_SUM  1e-6

/* ---------------------------------------------------------------------------
 * Backends under test
 */

typedef struct {
    char label[48];
    be b;
} cpu_setup;

static be g_ref;
static cpu_setup g_cpu[4];
static int g_n_cpu;

static void open_backend(be *b, const struct be_ops *ops, int n_threads) {
    lv_err err;
    b->ops = ops;
    b->exact = true; /* the float path; the integer path is test_qdot.c's */
    if (ops->init(b, n_threads, &err) != LV_OK) fail_msg("%s init: %s", ops->name, err.msg);
}

static int setup(void **state) {
    open_backend(&g_ref, &be_ref_ops, 1);
    const int threads[] = {1, 3};
    for (int p = 0; p < 2; p++) {
        for (int t = 0; t < 2; t++) {
            cpu_setup *c = &g_cpu[g_n_cpu++];
            open_backend(&c->b, &be_cpu_ops, threads[t]);
            if (p == 1) cpu_ctx_of(&c->b)->k = cpu_kernels_portable();
            snprintf(c->label, sizeof c->label, "cpu %s, %d thread%s", cpu_ctx_of(&c->b)->k->isa,
                     threads[t], threads[t] > 1 ? "s" : "");
        }
    }
    return 0;
}

static int teardown(void **state) {
    for (int i = 0; i < g_n_cpu; i++) g_cpu[i].b.ops->deinit(&g_cpu[i].b);
    g_ref.ops->deinit(&g_ref);
    return 0;
}

/* ---------------------------------------------------------------------------
 * Random data, poison, comparison
 */

static uint64_t g_rng = 0x9e3779b97f4a7c15u;

static uint64_t rnd(void) { /* splitmix64 */
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi), never exactly 0. */
static float rnd_float(float lo, float hi) {
    for (;;) {
        float f = lo + (hi - lo) * (float)((rnd() >> 40) * (1.0 / 16777216.0));
        if (f != 0.0f) return f;
    }
}

static float *rnd_floats(size_t n, float lo, float hi) {
    float *v = malloc((n ? n : 1) * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) v[i] = rnd_float(lo, hi);
    return v;
}

static float *dup_floats(const float *v, size_t n) {
    float *d = malloc((n ? n : 1) * sizeof *d);
    assert_non_null(d);
    memcpy(d, v, n * sizeof *d);
    return d;
}

/* A quiet NaN no op computes: any element still holding it was never written. */
static const uint32_t POISON = 0x7fc0dead;

static float *poisoned(size_t n) {
    float *v = malloc((n ? n : 1) * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) memcpy(&v[i], &POISON, 4);
    return v;
}

static double rel_err(const float *got, const float *want, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        num += d * d;
        den += (double)want[i] * want[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void check_close(const char *what, const cpu_setup *c, const float *got, const float *want,
                        size_t n, double tol) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(got[i]))
            fail_msg("%s [%s]: element %zu of %zu is %g (not written?), want %g", what, c->label, i,
                     n, got[i], want[i]);
    double e = rel_err(got, want, n);
    if (!(e <= tol))
        fail_msg("%s [%s]: relative error %.3g, expected <= %.3g", what, c->label, e, tol);
}

/* Weight data of dtype, rows × cols, placed `offset` bytes into a malloc'd
 * block (returned in *block for freeing) so it can be misaligned. */
static const void *rnd_weight(be_dtype dtype, size_t count, size_t offset, void **block) {
    size_t esize = dtype == BE_F32 ? 4 : 2;
    unsigned char *mem = malloc(count * esize + offset + 1);
    assert_non_null(mem);
    unsigned char *p = mem + offset;
    for (size_t i = 0; i < count; i++) {
        if (dtype == BE_F32) {
            float f = rnd_float(-1, 1);
            memcpy(p + 4 * i, &f, 4);
        } else if (dtype == BE_F16) { /* |v| in [2^-6, 4): normal halves */
            uint16_t h = (uint16_t)((rnd() & 1) << 15 | (9 + rnd() % 8) << 10 | (rnd() & 0x3ff));
            memcpy(p + 2 * i, &h, 2);
        } else { /* bf16: the top half of a float in [-1, 1) */
            float f = rnd_float(-1, 1);
            uint32_t u;
            memcpy(&u, &f, 4);
            uint16_t h = (uint16_t)(u >> 16);
            memcpy(p + 2 * i, &h, 2);
        }
    }
    *block = mem;
    return p;
}

static const char *dtype_str(be_dtype d) {
    return d == BE_F32 ? "f32" : d == BE_F16 ? "f16" : "bf16";
}

/* ---------------------------------------------------------------------------
 * Conversions
 */

/* The value of a half, from its definition. */
static double half_value(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 0x1f, f = h & 0x3ff;
    double v = e == 0 ? ldexp(f, -24) : ldexp(1024 + f, e - 25);
    return s ? -v : v;
}

static void f16_exhaustive(void **state) {
    for (uint32_t h = 0; h < 65536; h++) {
        float got = lv_f16_to_f32((uint16_t)h);
        uint32_t bits;
        memcpy(&bits, &got, 4);
        int e = (h >> 10) & 0x1f, f = h & 0x3ff;
        if (e == 31 && f == 0) {
            if (!isinf(got) || (signbit(got) != 0) != (h >> 15 != 0))
                fail_msg("half %04x: %g", h, got);
        } else if (e == 31) { /* NaN: sign and payload kept, quiet bit set */
            uint32_t want = (h & 0x8000u) << 16 | 0x7fc00000u | (uint32_t)f << 13;
            if (bits != want) fail_msg("half NaN %04x: got %08x, want %08x", h, bits, want);
        } else if ((double)got != half_value((uint16_t)h) ||
                   (signbit(got) != 0) != (h >> 15 != 0)) {
            fail_msg("half %04x: got %.10g, want %.10g", h, got, half_value((uint16_t)h));
        }
    }
}

static void bf16_exhaustive(void **state) {
    for (uint32_t h = 0; h < 65536; h++) {
        float got = lv_bf16_to_f32((uint16_t)h);
        uint32_t bits;
        memcpy(&bits, &got, 4);
        if (bits != h << 16) fail_msg("bf16 %04x: got %08x", h, bits);
    }
    assert_true(lv_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(lv_bf16_to_f32(0xc000) == -2.0f);
}

/* The CPU kernels' bulk conversions (F16C and portable) agree bit for bit with
 * lv_f16_to_f32 / lv_bf16_to_f32 on every 16-bit pattern, at an odd address. */
static void kernel_convert_exhaustive(void **state) {
    unsigned char *raw = malloc(2 * 65536 + 1);
    float *got = malloc(65536 * sizeof *got);
    assert_non_null(raw);
    assert_non_null(got);
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t v = (uint16_t)h;
        memcpy(raw + 1 + 2 * h, &v, 2);
    }
    const cpu_kernels *ks[2] = {cpu_kernels_portable(), cpu_kernels_best()};
    for (int i = 0; i < 2; i++) {
        if (!ks[i]) continue;
        for (int d = BE_F16; d <= BE_BF16; d++) {
            ks[i]->convert(got, (be_dtype)d, raw + 1, 65536);
            for (uint32_t h = 0; h < 65536; h++) {
                float want = d == BE_F16 ? lv_f16_to_f32((uint16_t)h) : lv_bf16_to_f32((uint16_t)h);
                if (memcmp(&got[h], &want, 4) != 0)
                    fail_msg("%s convert %s %04x: got %g, want %g", ks[i]->isa,
                             dtype_str((be_dtype)d), h, got[h], want);
            }
        }
    }
    free(raw);
    free(got);
}

/* ---------------------------------------------------------------------------
 * Thread pool
 */

typedef struct {
    atomic_long sum;
    atomic_int calls;
    long n;
} pool_job;

static void pool_fn(void *arg, int ith, int nth) {
    pool_job *j = arg;
    long lo, hi, s = 0;
    tp_split(j->n, ith, nth, 4, &lo, &hi);
    for (long i = lo; i < hi; i++) s += i;
    atomic_fetch_add(&j->sum, s);
    atomic_fetch_add(&j->calls, 1);
}

static void threadpool_runs_every_share(void **state) {
    tp *pool = tp_new(3);
    assert_non_null(pool);
    assert_int_equal(tp_size(pool), 3);
    for (int rep = 0; rep < 2000; rep++) {
        pool_job j = {.n = rep % 50};
        atomic_init(&j.sum, 0);
        atomic_init(&j.calls, 0);
        int nth = 1 + rep % 4; /* 4 > pool size: clamped to 3 */
        tp_run(pool, pool_fn, &j, nth);
        assert_int_equal(atomic_load(&j.calls), nth < 3 ? nth : 3);
        assert_int_equal(atomic_load(&j.sum), j.n * (j.n - 1) / 2);
    }
    tp_free(pool);
    tp_free(NULL);
}

static void split_covers_range(void **state) {
    for (long n = 0; n < 40; n++)
        for (int nth = 1; nth < 6; nth++)
            for (long align = 1; align < 6; align++) {
                long next = 0;
                for (int ith = 0; ith < nth; ith++) {
                    long lo, hi;
                    tp_split(n, ith, nth, align, &lo, &hi);
                    assert_int_equal(lo, next);
                    assert_true(hi >= lo);
                    if (hi < n) assert_int_equal(hi % align, 0);
                    next = hi;
                }
                assert_int_equal(next, n);
            }
}

/* ---------------------------------------------------------------------------
 * Memory slots
 */

static void memory_slots(void **state) {
    float host[37], back[37];
    for (int i = 0; i < 37; i++) host[i] = rnd_float(-1, 1);
    for (int i = 0; i < g_n_cpu + 1; i++) {
        be *b = i < g_n_cpu ? &g_cpu[i].b : &g_ref;
        float *buf = b->ops->alloc(b, sizeof host);
        assert_non_null(buf);
        b->ops->upload(b, buf, host, sizeof host);
        b->ops->download(b, back, buf, sizeof host);
        assert_memory_equal(back, host, sizeof host);
        b->ops->release(b, buf);
        b->ops->release(b, NULL);
        void *empty = b->ops->alloc(b, 0);
        b->ops->release(b, empty);
    }
}

static void weight_init_checks(void **state) {
    uint16_t data[6] = {0};
    for (int i = 0; i < g_n_cpu + 1; i++) {
        be *b = i < g_n_cpu ? &g_cpu[i].b : &g_ref;
        be_weight w;
        lv_err err;
        assert_int_equal(b->ops->weight_init(b, &w, (be_dtype)99, 2, 3, data, NULL, &err),
                         LV_ERR_UNSUPPORTED);
        assert_int_equal(b->ops->weight_init(b, &w, BE_F16, 0, 3, data, NULL, &err), LV_ERR_ARG);
        assert_int_equal(b->ops->weight_init(b, &w, BE_F16, 2, 3, NULL, NULL, &err), LV_ERR_ARG);
        assert_int_equal(b->ops->weight_init(b, &w, BE_BF16, 2, 3, data, NULL, &err), LV_OK);
        assert_int_equal(w.rows, 2);
        assert_int_equal(w.cols, 3);
        b->ops->weight_free(b, &w);
        assert_null(w.data);
    }
}

static void vector_init_all_dtypes(void **state) {
    for (int d = BE_F32; d <= BE_BF16; d++) {
        for (int n = 1; n < 40; n += 13) {
            void *block;
            const void *host = rnd_weight((be_dtype)d, (size_t)n, 1, &block);
            float *want = g_ref.ops->vector_init(&g_ref, (be_dtype)d, n, host);
            for (int i = 0; i < g_n_cpu; i++) {
                be *b = &g_cpu[i].b;
                float *got = b->ops->vector_init(b, (be_dtype)d, n, host);
                assert_non_null(got);
                assert_memory_equal(got, want, (size_t)n * sizeof *got);
                b->ops->release(b, got);
            }
            g_ref.ops->release(&g_ref, want);
            free(block);
        }
    }
}

/* ---------------------------------------------------------------------------
 * matmul
 */

static void check_matmul(be_dtype dtype, int rows, int cols, int n, bool with_bias, size_t offset) {
    void *block;
    const void *host = rnd_weight(dtype, (size_t)rows * cols, offset, &block);
    float *x = rnd_floats((size_t)n * cols, -1, 1);
    float *bias = with_bias ? rnd_floats((size_t)rows, -1, 1) : NULL;
    float *want = poisoned((size_t)n * rows);
    be_weight wr;
    lv_err err;
    assert_int_equal(g_ref.ops->weight_init(&g_ref, &wr, dtype, rows, cols, host, NULL, &err),
                     LV_OK);
    g_ref.ops->matmul(&g_ref, want, x, &wr, bias, n);
    char what[96];
    snprintf(what, sizeof what, "matmul %s %dx%d n=%d%s offset %zu", dtype_str(dtype), rows, cols,
             n, with_bias ? " +bias" : "", offset);
    for (int i = 0; i < g_n_cpu; i++) {
        be *b = &g_cpu[i].b;
        be_weight w;
        assert_int_equal(b->ops->weight_init(b, &w, dtype, rows, cols, host, NULL, &err), LV_OK);
        float *got = poisoned((size_t)n * rows);
        b->ops->matmul(b, got, x, &w, bias, n);
        check_close(what, &g_cpu[i], got, want, (size_t)n * rows, TOL_SUM);
        b->ops->weight_free(b, &w);
        free(got);
    }
    g_ref.ops->weight_free(&g_ref, &wr);
    free(want);
    free(bias);
    free(x);
    free(block);
}

static void matmul_shapes(void **state) {
    /* rows, cols, n: tiles of 32 rows and 1024 columns, ragged in every direction. */
    static const int shapes[][3] = {
        {24, 40, 1},  {24, 40, 7},   {37, 53, 7},    {8, 8, 2},       {1, 1, 1},
        {33, 100, 1}, {70, 24, 9},   {64, 1030, 5},  {5, 2051, 3},    {300, 96, 13},
        {96, 300, 1}, {257, 517, 1}, {1000, 200, 1}, {130, 1100, 61}, {72, 1024, 45},
    };
    for (size_t s = 0; s < LV_ARRAY_LEN(shapes); s++)
        for (int d = BE_F32; d <= BE_BF16; d++)
            for (int off = 0; off < 2; off++)
                check_matmul((be_dtype)d, shapes[s][0], shapes[s][1], shapes[s][2], (s + off) % 2,
                             off ? (d == BE_F32 ? 2 : 1) : 0);
}

/* ---------------------------------------------------------------------------
 * Quantized weights: CPU against the reference, every format
 */

/* A random normal half of magnitude in [2^-9, 2^-4), either sign. */
static uint16_t rnd_scale_half(void) {
    return (uint16_t)((rnd() & 1) << 15 | (6 + rnd() % 5) << 10 | (rnd() & 0x3ff));
}

typedef struct {
    void *block, *sblock; /* malloc'd: codes, scales + biases */
    const void *data;
    be_quant q;
} qweight;

/* Random rows × cols weight of a quantized dtype, `offset` bytes into its
 * block (misaligned for offset 1). MLX: bits/group as given, F16 scales and
 * biases of either sign. ggml blocks: random code bytes, sane f16 scales. */
static void rnd_qweight(qweight *w, be_dtype dt, int rows, int cols, int bits, int group,
                        size_t offset) {
    memset(w, 0, sizeof *w);
    be_quant q = {.bits = bits, .group = group, .scale_dtype = BE_F16};
    size_t rb = be_row_bytes(dt, cols, &q), n = rb * rows;
    assert_true(rb > 0);
    unsigned char *mem = malloc(n + offset + 1), *p = mem + offset;
    assert_non_null(mem);
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)rnd();
    if (dt == BE_MLX) {
        size_t ng = (size_t)rows * (cols / group);
        unsigned char *sb = malloc(4 * ng + 1);
        assert_non_null(sb);
        for (size_t i = 0; i < 2 * ng; i++) {
            uint16_t h = rnd_scale_half();
            memcpy(sb + 1 + 2 * i, &h, 2); /* misaligned on purpose */
        }
        q.scales = sb + 1;
        q.biases = sb + 1 + 2 * ng;
        w->sblock = sb;
    } else {
        int bb = be_block_bytes(dt);
        for (size_t b = 0; b < n / bb; b++) {
            unsigned char *blk = p + b * bb;
            uint16_t h1 = rnd_scale_half(), h2 = rnd_scale_half();
            if (dt == BE_Q6_K) {
                memcpy(blk + 208, &h1, 2);
            } else {
                memcpy(blk, &h1, 2);
                if (dt == BE_Q4_1 || dt == BE_Q4_K || dt == BE_Q5_K) memcpy(blk + 2, &h2, 2);
            }
        }
    }
    w->block = mem;
    w->data = p;
    w->q = q;
}

static void free_qweight(qweight *w) {
    free(w->block);
    free(w->sblock);
}

static void check_qmatmul(be_dtype dt, int bits, int group, int rows, int cols, int n,
                          size_t offset) {
    qweight qw;
    rnd_qweight(&qw, dt, rows, cols, bits, group, offset);
    const be_quant *q = dt == BE_MLX ? &qw.q : NULL;
    float *x = rnd_floats((size_t)n * cols, -1, 1);
    float *bias = n % 2 ? rnd_floats((size_t)rows, -1, 1) : NULL;
    float *want = poisoned((size_t)n * rows);
    be_weight wr;
    lv_err err;
    if (g_ref.ops->weight_init(&g_ref, &wr, dt, rows, cols, qw.data, q, &err))
        fail_msg("%s", err.msg);
    g_ref.ops->matmul(&g_ref, want, x, &wr, bias, n);
    char what[96];
    snprintf(what, sizeof what, "matmul %s bits %d group %d %dx%d n=%d offset %zu",
             be_dtype_name(dt), bits, group, rows, cols, n, offset);
    for (int i = 0; i < g_n_cpu; i++) {
        be *b = &g_cpu[i].b;
        be_weight w;
        assert_int_equal(b->ops->weight_init(b, &w, dt, rows, cols, qw.data, q, &err), LV_OK);
        float *got = poisoned((size_t)n * rows);
        b->ops->matmul(b, got, x, &w, bias, n);
        check_close(what, &g_cpu[i], got, want, (size_t)n * rows, TOL_SUM);
        b->ops->weight_free(b, &w);
        free(got);
    }
    /* Each setup's dequant kernel is bit-identical to the definition. */
    float *row_want = malloc((size_t)cols * sizeof(float)), *row_got = poisoned((size_t)cols);
    for (int i = 0; i < g_n_cpu; i++)
        for (int r = 0; r < rows; r += 7) {
            be_dequant_row(&wr, r, row_want);
            cpu_ctx_of(&g_cpu[i].b)->k->dequant(&wr, r, 0, cols, row_got);
            if (memcmp(row_got, row_want, (size_t)cols * sizeof(float)) != 0)
                fail_msg("%s [%s]: dequant of row %d differs from be_dequant_row", what,
                         g_cpu[i].label, r);
        }
    free(row_want);
    free(row_got);
    /* embed_rows dequantises exactly as the reference does. */
    int32_t ids[3] = {0, rows - 1, rows / 2};
    float *e_want = poisoned((size_t)3 * cols), *e_got = poisoned((size_t)3 * cols);
    g_ref.ops->embed_rows(&g_ref, e_want, &wr, ids, 3);
    be *b = &g_cpu[1].b;
    be_weight w;
    assert_int_equal(b->ops->weight_init(b, &w, dt, rows, cols, qw.data, q, &err), LV_OK);
    b->ops->embed_rows(b, e_got, &w, ids, 3);
    assert_memory_equal(e_got, e_want, (size_t)3 * cols * sizeof *e_got);
    b->ops->weight_free(b, &w);
    free(e_want);
    free(e_got);
    g_ref.ops->weight_free(&g_ref, &wr);
    free(want);
    free(bias);
    free(x);
    free_qweight(&qw);
}

static void matmul_quantized(void **state) {
    static const int ns[] = {1, 3, 17};
    static const be_dtype blocks[] = {BE_Q8_0, BE_Q4_0, BE_Q4_1, BE_Q4_K, BE_Q5_K, BE_Q6_K};
    for (size_t d = 0; d < LV_ARRAY_LEN(blocks); d++) {
        int step = be_block_elems(blocks[d]);
        const int cols[] = {step, 2 * step, 1280, 4096};
        for (size_t c = 0; c < LV_ARRAY_LEN(cols); c++)
            for (size_t k = 0; k < LV_ARRAY_LEN(ns); k++)
                check_qmatmul(blocks[d], 0, 0, c == 3 ? 40 : 37, cols[c], ns[k], (c + k) % 2);
    }
    static const int bits[] = {2, 3, 4, 5, 6, 8}, groups[] = {32, 64, 128};
    for (size_t bi = 0; bi < LV_ARRAY_LEN(bits); bi++)
        for (size_t g = 0; g < LV_ARRAY_LEN(groups); g++)
            for (size_t k = 0; k < LV_ARRAY_LEN(ns); k++) {
                int cols = (int)((bi + g + k) % 3 == 0 ? 4096 : groups[g] * (1 + (bi + k) % 5));
                check_qmatmul(BE_MLX, bits[bi], groups[g], 35, cols, ns[k], (bi + k) % 2);
            }
}

/* The descriptor checks shared by every backend. */
static void quant_weight_checks(void **state) {
    unsigned char data[1024] = {0};
    uint16_t sc[64] = {0};
    be_quant q = {.bits = 4, .group = 32, .scale_dtype = BE_F16, .scales = sc, .biases = sc};
    for (int i = 0; i < g_n_cpu + 1; i++) {
        be *b = i < g_n_cpu ? &g_cpu[i].b : &g_ref;
        be_weight w;
        lv_err err;
        assert_int_equal(b->ops->weight_init(b, &w, BE_MLX, 2, 64, data, &q, &err), LV_OK);
        assert_int_equal(w.row_bytes, 32);
        b->ops->weight_free(b, &w);
        assert_int_equal(b->ops->weight_init(b, &w, BE_MLX, 2, 64, data, NULL, &err), LV_ERR_ARG);
        assert_int_equal(b->ops->weight_init(b, &w, BE_MLX, 2, 48, data, &q, &err), LV_ERR_ARG);
        be_quant bad = q;
        bad.bits = 7;
        assert_int_equal(b->ops->weight_init(b, &w, BE_MLX, 2, 64, data, &bad, &err),
                         LV_ERR_UNSUPPORTED);
        bad = q;
        bad.group = 16;
        assert_int_equal(b->ops->weight_init(b, &w, BE_MLX, 2, 64, data, &bad, &err),
                         LV_ERR_UNSUPPORTED);
        assert_int_equal(b->ops->weight_init(b, &w, BE_Q4_K, 2, 128, data, NULL, &err), LV_ERR_ARG);
        assert_int_equal(b->ops->weight_init(b, &w, BE_Q4_0, 2, 64, data, NULL, &err), LV_OK);
        assert_int_equal(w.row_bytes, 36);
        b->ops->weight_free(b, &w);
        assert_null(b->ops->vector_init(b, BE_Q8_0, 32, data));
    }
}

/* Many threads on a matrix with fewer row tiles than threads (token split). */
static void matmul_token_split(void **state) {
    check_matmul(BE_F16, 20, 72, 41, true, 0);
    check_matmul(BE_F32, 3, 17, 30, false, 0);
}

/* ---------------------------------------------------------------------------
 * Batch invariance: a token's outputs are the same bits whatever the batch
 */

/* For n = 1..20, row i of matmul(x[0..n)) equals matmul(x[i]) alone, bit
 * for bit, for one weight (plain: host in dtype; quantized: qw), on the CPU
 * backend with the given kernels and 1 and 2 threads (alone on 1 thread is
 * the reference for all). The continuous-batching scheduler relies on it:
 * a request gives the same answer alone or among others. */
enum { BI_N = 20 };

static void check_batch_invariant(const cpu_kernels *k, be_dtype dt, const void *data,
                                  const be_quant *q, int rows, int cols, const char *name,
                                  float *alone_out) {
    enum { N = BI_N };
    be bs[2];
    be_weight ws[2];
    lv_err err;
    for (int t = 0; t < 2; t++) {
        open_backend(&bs[t], &be_cpu_ops, t + 1);
        cpu_ctx_of(&bs[t])->k = k;
        if (bs[t].ops->weight_init(&bs[t], &ws[t], dt, rows, cols, data, q, &err))
            fail_msg("%s: %s", name, err.msg);
    }
    float *x = rnd_floats((size_t)N * cols, -1, 1);
    float *bias = rnd_floats((size_t)rows, -1, 1);
    float *alone = poisoned((size_t)N * rows), *got = poisoned((size_t)N * rows);
    for (int bi = 0; bi < 2; bi++) {
        const float *bb = bi ? bias : NULL;
        for (int i = 0; i < N; i++)
            bs[0].ops->matmul(&bs[0], alone + (size_t)i * rows, x + (size_t)i * cols, &ws[0], bb,
                              1);
        for (int t = 0; t < 2; t++)
            for (int n = 1; n <= N; n++) {
                bs[t].ops->matmul(&bs[t], got, x, &ws[t], bb, n);
                for (int i = 0; i < n; i++)
                    if (memcmp(got + (size_t)i * rows, alone + (size_t)i * rows,
                               (size_t)rows * sizeof *got) != 0)
                        fail_msg("%s %dx%d%s [%s, %d thread%s]: row %d of a batch of %d differs "
                                 "from the row alone",
                                 name, rows, cols, bi ? " +bias" : "", k->isa, t + 1, t ? "s" : "",
                                 i, n);
            }
    }
    for (int t = 0; t < 2; t++) {
        bs[t].ops->weight_free(&bs[t], &ws[t]);
        bs[t].ops->deinit(&bs[t]);
    }
    if (alone_out) memcpy(alone_out, alone, (size_t)N * rows * sizeof *alone);
    free(x);
    free(bias);
    free(alone);
    free(got);
}

/* check_batch_invariant with every table this CPU has; the AVX-512 table's
 * outputs must also be the AVX2 table's, bit for bit (the same chains, two
 * to a register). */
static void check_batch_invariant_all(be_dtype dt, const void *data, const be_quant *q, int rows,
                                      int cols, const char *name) {
    const cpu_kernels *ks[3] = {cpu_kernels_best(), cpu_kernels_avx2(), cpu_kernels_portable()};
    size_t count = (size_t)BI_N * rows;
    float *out[2] = {poisoned(count), poisoned(count)};
    uint64_t rng = g_rng;
    for (int ki = 0; ki < 3; ki++) {
        if (!ks[ki] || (ki == 1 && ks[1] == ks[0])) continue;
        g_rng = rng; /* the same x and bias for every table */
        check_batch_invariant(ks[ki], dt, data, q, rows, cols, name, ki < 2 ? out[ki] : NULL);
        if (ki == 1 && memcmp(out[0], out[1], count * sizeof *out[0]) != 0)
            fail_msg("%s %dx%d: the %s and %s tables give different bits", name, rows, cols,
                     ks[0]->isa, ks[1]->isa);
    }
    free(out[0]);
    free(out[1]);
}

static void matmul_batch_invariant(void **state) {
    /* Plain: rows not a multiple of the 32-row tile nor of 8, cols with a
     * tail of 4 in the second 1024-column slice, or below one vector. */
    static const int plain[][2] = {{37, 1100}, {45, 5}, {9, 2051}};
    for (int d = BE_F32; d <= BE_BF16; d++)
        for (size_t s = 0; s < LV_ARRAY_LEN(plain); s++) {
            void *block;
            size_t count = (size_t)plain[s][0] * plain[s][1];
            const void *host = rnd_weight((be_dtype)d, count, s % 2, &block);
            check_batch_invariant_all((be_dtype)d, host, NULL, plain[s][0], plain[s][1],
                                      dtype_str((be_dtype)d));
            free(block);
        }
    /* Quantized: more than one slice, the second one partial. */
    static const be_dtype blocks[] = {BE_Q8_0, BE_Q4_0, BE_Q4_1, BE_Q4_K, BE_Q5_K, BE_Q6_K};
    for (size_t d = 0; d < LV_ARRAY_LEN(blocks); d++) {
        int step = be_block_elems(blocks[d]);
        int cols = 1024 + step;
        qweight qw;
        rnd_qweight(&qw, blocks[d], 37, cols, 0, 0, d % 2);
        check_batch_invariant_all(blocks[d], qw.data, NULL, 37, cols, be_dtype_name(blocks[d]));
        free_qweight(&qw);
    }
    static const int mlx[][2] = {{2, 64},  {3, 32}, {4, 32},  {4, 64},
                                 {4, 128}, {5, 64}, {6, 128}, {8, 64}};
    for (size_t m = 0; m < LV_ARRAY_LEN(mlx); m++) {
        int cols = 1024 + mlx[m][1];
        qweight qw;
        rnd_qweight(&qw, BE_MLX, 29, cols, mlx[m][0], mlx[m][1], m % 2);
        check_batch_invariant_all(BE_MLX, qw.data, &qw.q, 29, cols, "mlx");
        free_qweight(&qw);
    }
}

/* The packed-panel GEMM (dot_panel) at prefill sizes: a batch of n tokens
 * gives each token the bits it gets alone, with 1 and 2 threads, on every
 * table; tiles of 64 rows, ragged (130 = 64 + 64 + 2), slices with a tail
 * (1100 = 1024 + 76), blocks of 6 tokens with a padded last one (n = 59)
 * or a last one through dot_rows (n = 61), a weight of each plain dtype
 * (f32 at an unaligned offset); the AVX-512 and AVX2 tables agree. */
static void matmul_panel_invariant(void **state) {
    (void)state;
    static const struct {
        be_dtype dt;
        int rows, cols;
        size_t offset;
    } cases[] = {{BE_F16, 130, 1100, 0}, {BE_BF16, 72, 2051, 0}, {BE_F32, 67, 1032, 1}};
    static const int ns[] = {59, 61};
    const cpu_kernels *ks[3] = {cpu_kernels_best(), cpu_kernels_avx2(), cpu_kernels_portable()};
    for (size_t c = 0; c < LV_ARRAY_LEN(cases); c++) {
        int rows = cases[c].rows, cols = cases[c].cols, nmax = 61;
        void *block;
        const void *host = rnd_weight(cases[c].dt, (size_t)rows * cols, cases[c].offset, &block);
        float *x = rnd_floats((size_t)nmax * cols, -1, 1), *bias = rnd_floats((size_t)rows, -1, 1);
        float *alone = poisoned((size_t)nmax * rows), *got = poisoned((size_t)nmax * rows);
        float *first = poisoned((size_t)nmax * rows);
        for (int ki = 0; ki < 3; ki++) {
            if (!ks[ki] || (ki == 1 && ks[1] == ks[0])) continue;
            for (int t = 1; t <= 2; t++) {
                be b;
                be_weight w;
                lv_err err;
                open_backend(&b, &be_cpu_ops, t);
                cpu_ctx_of(&b)->k = ks[ki];
                assert_int_equal(
                    b.ops->weight_init(&b, &w, cases[c].dt, rows, cols, host, NULL, &err), LV_OK);
                for (int i = 0; i < nmax; i++)
                    b.ops->matmul(&b, alone + (size_t)i * rows, x + (size_t)i * cols, &w, bias, 1);
                for (size_t k = 0; k < LV_ARRAY_LEN(ns); k++) {
                    b.ops->matmul(&b, got, x, &w, bias, ns[k]);
                    for (int i = 0; i < ns[k]; i++)
                        if (memcmp(got + (size_t)i * rows, alone + (size_t)i * rows,
                                   (size_t)rows * sizeof *got) != 0)
                            fail_msg("%s %dx%d [%s, %d threads]: row %d of a batch of %d differs "
                                     "from the row alone",
                                     dtype_str(cases[c].dt), rows, cols, ks[ki]->isa, t, i, ns[k]);
                }
                if (ki == 0 && t == 1) memcpy(first, alone, (size_t)nmax * rows * sizeof *alone);
                if (ki == 1 && memcmp(first, alone, (size_t)nmax * rows * sizeof *alone) != 0)
                    fail_msg("%s %dx%d: the %s and %s tables give different bits",
                             dtype_str(cases[c].dt), rows, cols, ks[0]->isa, ks[1]->isa);
                b.ops->weight_free(&b, &w);
                b.ops->deinit(&b);
            }
        }
        free(first);
        free(got);
        free(alone);
        free(bias);
        free(x);
        free(block);
    }
}

/* LLAVA_CPU_ISA picks a lesser kernel set; one the CPU lacks is a clear
 * error, and the backend is left closed. */
static void cpu_isa_env(void **state) {
    (void)state;
    be b;
    lv_err err;
    setenv("LLAVA_CPU_ISA", "portable", 1);
    open_backend(&b, &be_cpu_ops, 2);
    assert_string_equal(cpu_ctx_of(&b)->k->isa, "portable");
    b.ops->deinit(&b);
    if (cpu_kernels_avx2()) {
        setenv("LLAVA_CPU_ISA", "avx2", 1);
        open_backend(&b, &be_cpu_ops, 1);
        assert_ptr_equal(cpu_ctx_of(&b)->k, cpu_kernels_avx2());
        b.ops->deinit(&b);
    }
    setenv("LLAVA_CPU_ISA", "sse9", 1);
    b.ops = &be_cpu_ops;
    assert_int_equal(b.ops->init(&b, 2, &err), LV_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "LLAVA_CPU_ISA=sse9"));
    unsetenv("LLAVA_CPU_ISA");
}

/* ---------------------------------------------------------------------------
 * Norms
 */

static void check_norm(bool layer, int n, int dim, float shift, bool in_place) {
    float *x = rnd_floats((size_t)n * dim, -2, 2);
    for (size_t i = 0; i < (size_t)n * dim; i++) x[i] += shift;
    float *g = rnd_floats((size_t)dim, 0.5f, 1.5f), *beta = rnd_floats((size_t)dim, -1, 1);
    float eps = 1e-5f;
    float *want = poisoned((size_t)n * dim);
    if (layer)
        g_ref.ops->layernorm(&g_ref, want, x, g, beta, n, dim, eps);
    else
        g_ref.ops->rmsnorm(&g_ref, want, x, g, n, dim, eps);
    char what[96];
    snprintf(what, sizeof what, "%s n=%d dim=%d shift %g%s", layer ? "layernorm" : "rmsnorm", n,
             dim, shift, in_place ? " in place" : "");
    for (int i = 0; i < g_n_cpu; i++) {
        be *b = &g_cpu[i].b;
        float *got = in_place ? dup_floats(x, (size_t)n * dim) : poisoned((size_t)n * dim);
        const float *src = in_place ? got : x;
        if (layer)
            b->ops->layernorm(b, got, src, g, beta, n, dim, eps);
        else
            b->ops->rmsnorm(b, got, src, g, n, dim, eps);
        check_close(what, &g_cpu[i], got, want, (size_t)n * dim, TOL_SUM);
        free(got);
    }
    free(want);
    free(beta);
    free(g);
    free(x);
}

static void norms(void **state) {
    static const int shapes[][2] = {{1, 24}, {7, 4096}, {3, 1001}, {9, 7}, {40, 1024}, {50, 1001}};
    for (size_t s = 0; s < LV_ARRAY_LEN(shapes); s++)
        for (int in_place = 0; in_place < 2; in_place++) {
            check_norm(false, shapes[s][0], shapes[s][1], 0, in_place);
            check_norm(true, shapes[s][0], shapes[s][1], 0, in_place);
            check_norm(true, shapes[s][0], shapes[s][1], 30, in_place); /* large mean */
        }
}

/* ---------------------------------------------------------------------------
 * RoPE
 */

static void check_rope(int n, int n_heads, int head_dim, float theta, int max_pos) {
    size_t len = (size_t)n * n_heads * head_dim;
    float *x = rnd_floats(len, -2, 2);
    int *pos = malloc((size_t)n * sizeof *pos);
    assert_non_null(pos);
    for (int t = 0; t < n; t++) pos[t] = (int)(rnd() % (uint64_t)(max_pos + 1));
    float *want = dup_floats(x, len);
    g_ref.ops->rope(&g_ref, want, n, n_heads, head_dim, pos, theta);
    char what[96];
    snprintf(what, sizeof what, "rope n=%d heads=%d head_dim=%d theta %g pos<=%d", n, n_heads,
             head_dim, theta, max_pos);
    for (int i = 0; i < g_n_cpu; i++) {
        be *b = &g_cpu[i].b;
        float *got = dup_floats(x, len);
        b->ops->rope(b, got, n, n_heads, head_dim, pos, theta);
        check_close(what, &g_cpu[i], got, want, len, TOL_ELEM);
        free(got);
    }
    free(want);
    free(pos);
    free(x);
}

static void rope(void **state) {
    check_rope(1, 4, 24, 1e6f, 10);
    check_rope(7, 3, 128, 1e6f, 40000);
    check_rope(5, 2, 64, 10000.0f, 32767);
    check_rope(300, 2, 160, 1e6f, 4096); /* head_dim/2 = 80 > one cos/sin chunk */
    check_rope(2, 1, 2, 1e6f, 5);
}

/* Positions 0 and 1 by hand: position 0 is the identity, and at position 1
 * frequency 0 rotates by exactly 1 radian. */
static void rope_known_values(void **state) {
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float y[8];
    int pos[2] = {0, 1};
    for (int i = 0; i < g_n_cpu + 1; i++) {
        be *b = i < g_n_cpu ? &g_cpu[i].b : &g_ref;
        memcpy(y, x, sizeof x);
        b->ops->rope(b, y, 2, 1, 4, pos, 10000.0f);
        assert_memory_equal(y, x, 4 * sizeof *y);
        assert_float_equal(y[4], 5 * cosf(1) - 7 * sinf(1), 1e-6);
        assert_float_equal(y[6], 7 * cosf(1) + 5 * sinf(1), 1e-6);
    }
}

/* ---------------------------------------------------------------------------
 * Attention
 *
 * Tolerance: the reference computes in double from the same inputs (f16
 * keys and values are exact in both), so the CPU's error is float32
 * rounding alone: scores are 8 fma chains of head_dim/8 terms (≤ 16 here)
 * plus 3 adds, exp is within about 2 ulp, and each output is a sequential
 * fma sum over up to 600 keys of values ≤ 2 weighted by p/l ≤ 1. Random
 * rounding errors (u = 6e-8) grow as √n: √600 · u ≈ 1.5e-6 at worst for a
 * single output, about 5e-7 in the relative L2 norm over all outputs,
 * below TOL_SUM (1e-6). The CPU tables must also agree with one another
 * bit for bit (attention.h defines their arithmetic once).
 */

/* Keys and values of dtype (F32 or F16) from floats; the caller frees. */
static void *kv_of(const float *x, size_t n, be_dtype dt) {
    if (dt == BE_F32) return dup_floats(x, n);
    uint16_t *h = malloc((n ? n : 1) * sizeof *h);
    assert_non_null(h);
    for (size_t i = 0; i < n; i++) h[i] = lv_f32_to_f16(x[i]);
    return h;
}

/* The kernel tables this machine runs, best first (avx512, avx2, portable);
 * only the portable one for a setup that runs it (its fmaf is a libm call). */
static int kernel_tables_for(const cpu_setup *c, const cpu_kernels *ks[3]) {
    ks[0] = cpu_kernels_portable();
    if (c && cpu_ctx_of((be *)&c->b)->k == ks[0]) return 1;
    int n = 0;
    if (cpu_kernels_avx512()) ks[n++] = cpu_kernels_avx512();
    if (cpu_kernels_avx2()) ks[n++] = cpu_kernels_avx2();
    ks[n++] = cpu_kernels_portable();
    return n;
}

static void check_attention_dt(int n_q, int q_pos0, int n_kv, int n_heads, int n_kv_heads,
                               int head_dim, bool causal, bool in_place, be_dtype dt) {
    size_t q_len = (size_t)n_q * n_heads * head_dim, kv_len = (size_t)n_kv * n_kv_heads * head_dim;
    float *q = rnd_floats(q_len, -1.5f, 1.5f);
    float *kf = rnd_floats(kv_len, -1.5f, 1.5f), *vf = rnd_floats(kv_len, -2, 2);
    void *k = kv_of(kf, kv_len, dt), *v = kv_of(vf, kv_len, dt);
    float *want = poisoned(q_len), *first = NULL;
    g_ref.ops->attention(&g_ref, want, q, k, v, dt, n_q, q_pos0, n_kv, n_heads, n_kv_heads,
                         head_dim, causal);
    char what[160];
    snprintf(what, sizeof what, "attention %s n_q=%d pos0=%d n_kv=%d heads=%d/%d hd=%d%s%s",
             dtype_str(dt), n_q, q_pos0, n_kv, n_heads, n_kv_heads, head_dim,
             causal ? " causal" : "", in_place ? " out=q" : "");
    for (int i = 0; i < g_n_cpu; i++) {
        be *b = &g_cpu[i].b;
        const cpu_kernels *keep = cpu_ctx_of(b)->k, *ks[3];
        int n_k = kernel_tables_for(&g_cpu[i], ks);
        for (int t = 0; t < n_k; t++) {
            cpu_ctx_of(b)->k = ks[t];
            float *got = in_place ? dup_floats(q, q_len) : poisoned(q_len);
            b->ops->attention(b, got, in_place ? got : q, k, v, dt, n_q, q_pos0, n_kv, n_heads,
                              n_kv_heads, head_dim, causal);
            check_close(what, &g_cpu[i], got, want, q_len, TOL_SUM);
            if (!first)
                first = got;
            else {
                if (memcmp(got, first, q_len * sizeof *got) != 0)
                    fail_msg("%s [%s, %s table]: not the bits of the first run [%s]", what,
                             g_cpu[i].label, ks[t]->isa, g_cpu[0].label);
                free(got);
            }
        }
        cpu_ctx_of(b)->k = keep;
    }
    free(first);
    free(want);
    free(v);
    free(k);
    free(vf);
    free(kf);
    free(q);
}

static void check_attention(int n_q, int q_pos0, int n_kv, int n_heads, int n_kv_heads,
                            int head_dim, bool causal, bool in_place) {
    check_attention_dt(n_q, q_pos0, n_kv, n_heads, n_kv_heads, head_dim, causal, in_place, BE_F32);
    check_attention_dt(n_q, q_pos0, n_kv, n_heads, n_kv_heads, head_dim, causal, in_place, BE_F16);
}

static void attention(void **state) {
    check_attention(1, 9, 10, 4, 2, 24, true, false);    /* decode, GQA */
    check_attention(7, 0, 7, 6, 2, 24, true, false);     /* prefill */
    check_attention(7, 5, 12, 4, 4, 64, true, false);    /* chunked prefill after 5 cached */
    check_attention(9, 0, 9, 3, 3, 64, false, false);    /* CLIP: bidirectional */
    check_attention(3, 600, 603, 2, 1, 24, true, false); /* keys span 10 blocks */
    check_attention(1, 40, 41, 32, 8, 128, true, false); /* Mistral's head layout */
    check_attention(577, 0, 577, 2, 2, 64, false, false);
    check_attention(7, 0, 7, 6, 3, 24, true, true);
    check_attention(1, 0, 1, 2, 1, 8, true, true);
    check_attention(5, 60, 200, 8, 2, 20, true, false); /* hd tail of 4 */
    check_attention(13, 0, 13, 3, 1, 40, true, true);   /* GQA 3 */
    check_attention(2, 0, 130, 5, 5, 24, false, false); /* keys: 64 + 64 + 2 */
    check_attention(1, 129, 130, 1, 1, 128, true, false);
    check_attention(37, 100, 137, 8, 2, 128, true, false); /* GQA 4: 148 rows, 5 tasks */
    check_attention(70, 0, 70, 4, 1, 64, true, false);     /* GQA 4, blocks cut a query */
    check_attention(33, 0, 33, 2, 2, 72, false, true);     /* hd 64 + 8 */
}

/* A query row's output is the same bits however the queries are cut into
 * calls (decode one at a time, prefill chunks of any size, all at once), on
 * every thread count and kernel table: causal text over a cache of n_kv,
 * and bidirectional (CLIP) rows computed in any subset. */
static void check_invariant(int n_kv, int n_heads, int n_kv_heads, int hd, bool causal,
                            be_dtype dt) {
    size_t row = (size_t)n_heads * hd, kv_len = (size_t)n_kv * n_kv_heads * hd;
    float *q = rnd_floats((size_t)n_kv * row, -3, 3);
    float *kf = rnd_floats(kv_len, -3, 3), *vf = rnd_floats(kv_len, -2, 2);
    void *k = kv_of(kf, kv_len, dt), *v = kv_of(vf, kv_len, dt);
    float *whole = poisoned((size_t)n_kv * row), *part = poisoned((size_t)n_kv * row);
    const int chunks[] = {1, 3, 7, 64, 100};
    for (int i = 0; i < g_n_cpu; i++) {
        be *b = &g_cpu[i].b;
        const cpu_kernels *keep = cpu_ctx_of(b)->k, *ks[3];
        int n_k = kernel_tables_for(&g_cpu[i], ks);
        for (int t = 0; t < n_k; t++) {
            cpu_ctx_of(b)->k = ks[t];
            b->ops->attention(b, whole, q, k, v, dt, n_kv, 0, n_kv, n_heads, n_kv_heads, hd,
                              causal);
            for (size_t c = 0; c < LV_ARRAY_LEN(chunks); c++) {
                for (int p0 = 0; p0 < n_kv; p0 += chunks[c]) {
                    int n = n_kv - p0 < chunks[c] ? n_kv - p0 : chunks[c];
                    /* causal: the cache holds the positions so far, as in generation */
                    b->ops->attention(b, part + p0 * row, q + p0 * row, k, v, dt, n, p0,
                                      causal ? p0 + n : n_kv, n_heads, n_kv_heads, hd, causal);
                }
                for (int p = 0; p < n_kv; p++)
                    if (memcmp(part + p * row, whole + p * row, row * sizeof *part) != 0)
                        fail_msg("attention %s heads=%d/%d hd=%d%s [%s, %s table]: query %d "
                                 "in chunks of %d differs from the whole call",
                                 dtype_str(dt), n_heads, n_kv_heads, hd, causal ? " causal" : "",
                                 g_cpu[i].label, ks[t]->isa, p, chunks[c]);
            }
        }
        cpu_ctx_of(b)->k = keep;
    }
    free(part);
    free(whole);
    free(v);
    free(k);
    free(vf);
    free(kf);
    free(q);
}

static void attention_batch_invariant(void **state) {
    check_invariant(150, 8, 2, 128, true, BE_F16); /* GQA 4, Mistral's head_dim */
    check_invariant(150, 8, 2, 128, true, BE_F32);
    check_invariant(131, 3, 3, 64, true, BE_F16);  /* no GQA */
    check_invariant(131, 2, 2, 64, false, BE_F32); /* CLIP */
    check_invariant(70, 4, 1, 20, true, BE_F16);   /* hd tail */
}

/* store_as: F32 copies; F16 is lv_f32_to_f16 after saturating at ±65504,
 * the same bits on the reference and on every table (subnormals, ties,
 * overflow, NaN, unaligned tails included). */
static void store_as_f16(void **state) {
    enum { N = 1000 };
    float *x = rnd_floats(N, -4, 4);
    const float special[] = {
        65504.0f, 65519.0f, 65520.0f, -70000.0f, 1e30f,         -INFINITY,      INFINITY, NAN,
        5.96e-8f, 2.98e-8f, -1e-7f,   6.1e-5f,   1.0009765625f, 1.00048828125f, 0.0f,     -0.0f};
    for (size_t i = 0; i < LV_ARRAY_LEN(special); i++) x[i * 37 % N] = special[i];
    for (int i = 0; i < 64; i++) x[900 + i] = rnd_float(-1, 1) * ldexpf(1, -(int)(rnd() % 30));
    uint16_t want[N], got[N + 1];
    g_ref.ops->store_as(&g_ref, want, BE_F16, x, N);
    for (size_t i = 0; i < LV_ARRAY_LEN(special); i++) {
        float f = lv_f16_to_f32(want[i * 37 % N]);
        if (isnan(special[i]))
            assert_true(isnan(f));
        else
            assert_true(isfinite(f) && fabsf(f) <= 65504.0f);
    }
    const cpu_kernels *ks[3];
    int n_k = kernel_tables_for(NULL, ks);
    be *b = &g_cpu[0].b;
    const cpu_kernels *keep = cpu_ctx_of(b)->k;
    for (int t = 0; t < n_k; t++) {
        cpu_ctx_of(b)->k = ks[t];
        for (int n = N - 7; n <= N; n += 7) {
            memset(got, 0xAB, sizeof got);
            b->ops->store_as(b, got + 1, BE_F16, x, (size_t)n); /* unaligned */
            if (memcmp(got + 1, want, (size_t)n * 2) != 0 || (n < N && got[n + 1] != 0xABAB))
                fail_msg("store_as f16 [%s table, n=%d]: not the reference's bits", ks[t]->isa, n);
        }
    }
    cpu_ctx_of(b)->k = keep;
    float back[N];
    b->ops->store_as(b, back, BE_F32, x, N);
    assert_memory_equal(back, x, sizeof back);
    free(x);
}

/* ---------------------------------------------------------------------------
 * Elementwise and gather
 */

typedef enum { EW_SILU_MUL, EW_GELU, EW_QUICK_GELU, EW_GELU_TANH, EW_ADD } ew_op;

static void run_ew(be *b, ew_op op, float *y, const float *x, size_t n) {
    switch (op) {
        case EW_SILU_MUL:
            b->ops->silu_mul(b, y, x, n);
            break;
        case EW_GELU:
            b->ops->gelu(b, y, n);
            break;
        case EW_QUICK_GELU:
            b->ops->quick_gelu(b, y, n);
            break;
        case EW_GELU_TANH:
            b->ops->gelu_tanh(b, y, n);
            break;
        case EW_ADD:
            b->ops->add(b, y, x, n);
            break;
    }
}

/* One elementwise op on n values of y drawn from [lo, hi) (x from [-3, 3)). */
static void check_ew(ew_op op, size_t n, float lo, float hi) {
    static const char *names[] = {"silu_mul", "gelu", "quick_gelu", "gelu_tanh", "add"};
    float *y = rnd_floats(n, lo, hi), *x = rnd_floats(n, -3, 3);
    float *want = dup_floats(y, n);
    run_ew(&g_ref, op, want, x, n);
    char what[80];
    snprintf(what, sizeof what, "%s n=%zu on [%g, %g)", names[op], n, lo, hi);
    for (int i = 0; i < g_n_cpu; i++) {
        float *got = dup_floats(y, n);
        run_ew(&g_cpu[i].b, op, got, x, n);
        if (op == EW_GELU_TANH) {
            /* float32 as torch computes it: 1 + tanh(·) cancels for x << 0, so
             * the error is absolute, a few float32 ulps of 0.5·|x| */
            for (size_t k = 0; k < n; k++)
                if (!(fabsf(got[k] - want[k]) <= 3e-7f * (1 + fabsf(y[k]))))
                    fail_msg("%s [%s]: element %zu (x = %g): %.9g, reference %.9g", what,
                             g_cpu[i].label, k, y[k], got[k], want[k]);
        } else {
            check_close(what, &g_cpu[i], got, want, n, TOL_ELEM);
        }
        free(got);
    }
    free(want);
    free(x);
    free(y);
}

static void elementwise(void **state) {
    static const size_t sizes[] = {1, 7, 1001, 100003};
    for (int op = EW_SILU_MUL; op <= EW_ADD; op++)
        for (size_t s = 0; s < LV_ARRAY_LEN(sizes); s++) check_ew((ew_op)op, sizes[s], -8, 8);
    /* Large negative x only, where gelu is tiny: 0.5·x·(1 + erf(x/√2))
     * cancels there in float32 (relative error ~1e-2 at x = -5), so the
     * norm is no longer hidden behind the large positive values. The
     * reference's double erf stays exact enough down to about x = -7. */
    check_ew(EW_GELU, 1001, -7, -2);
    check_ew(EW_GELU, 100003, -7, -3);
    check_ew(EW_SILU_MUL, 1001, -7, -2);
    check_ew(EW_QUICK_GELU, 1001, -7, -2);
    check_ew(EW_GELU_TANH, 1001, -7, -2);
}

/* The tables' quick_gelu (kernels.h: one arithmetic) give the same bits as
 * cpu_quick_gelu1, on odd lengths (vector tails), far into both tails of
 * the sigmoid (the clamp of its exp), and on ±0, ±inf and NaN. */
static void quick_gelu_tables(void **state) {
    (void)state;
    enum { N = 4099 };
    float *x = rnd_floats(N, -120, 120);
    static const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-30f, -51.5f, 51.5f};
    memcpy(x, special, sizeof special);
    const cpu_kernels *ks[] = {cpu_kernels_portable(), cpu_kernels_avx2(), cpu_kernels_avx512()};
    for (size_t k = 0; k < LV_ARRAY_LEN(ks); k++) {
        if (!ks[k] || !ks[k]->quick_gelu) continue;
        for (size_t n = N - 3; n <= N; n++) {
            float *got = dup_floats(x, n);
            ks[k]->quick_gelu(got, n);
            for (size_t i = 0; i < n; i++) {
                float want = cpu_quick_gelu1(x[i]);
                if (memcmp(&got[i], &want, 4) != 0 && !(isnan(got[i]) && isnan(want)))
                    fail_msg("quick_gelu [%s] of %g: %a, cpu_quick_gelu1 %a", ks[k]->isa, x[i],
                             got[i], want);
            }
            free(got);
        }
    }
    free(x);
}

/* The same for gelu_tanh (kernels.h) against cpu_gelu_tanh1, and
 * cpu_gelu_tanh1 against the formula in double within 2e-6 relative (plus
 * a floor near zero). */
static void gelu_tanh_tables(void **state) {
    (void)state;
    enum { N = 4099 };
    float *x = rnd_floats(N, -60, 60);
    static const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-30f, -9.5f, 9.5f};
    memcpy(x, special, sizeof special);
    for (size_t i = sizeof special / sizeof special[0]; i < N; i += 2) x[i] /= 10; /* near 0 */
    for (size_t i = 0; i < N; i++) {
        if (!isfinite(x[i])) continue;
        double z = x[i], s = sqrt(2 / M_PI);
        double want = 0.5 * z * (1 + tanh(s * (z + 0.044715 * z * z * z)));
        double got = cpu_gelu_tanh1(x[i]);
        /* u in float32: its rounding, times z; below 1e-9 torch's own float32
         * formula (1 + tanh(u) with tanh(u) = -1) is no better */
        if (fabs(got - want) > 2e-6 * fabs(want) + 1e-9)
            fail_msg("cpu_gelu_tanh1(%g) = %.9g, formula %.9g", x[i], got, want);
    }
    const cpu_kernels *ks[] = {cpu_kernels_portable(), cpu_kernels_avx2(), cpu_kernels_avx512()};
    for (size_t k = 0; k < LV_ARRAY_LEN(ks); k++) {
        if (!ks[k] || !ks[k]->gelu_tanh) continue;
        for (size_t n = N - 3; n <= N; n++) {
            float *got = dup_floats(x, n);
            ks[k]->gelu_tanh(got, n);
            for (size_t i = 0; i < n; i++) {
                float want = cpu_gelu_tanh1(x[i]);
                if (memcmp(&got[i], &want, 4) != 0 && !(isnan(got[i]) && isnan(want)))
                    fail_msg("gelu_tanh [%s] of %g: %a, cpu_gelu_tanh1 %a", ks[k]->isa, x[i],
                             got[i], want);
            }
            free(got);
        }
    }
    free(x);
}

/* Activations at points where the answer is known. */
static void activation_values(void **state) {
    for (int i = 0; i < g_n_cpu + 1; i++) {
        be *b = i < g_n_cpu ? &g_cpu[i].b : &g_ref;
        float v[3] = {0, 1, -1};
        b->ops->gelu(b, v, 3);
        assert_float_equal(v[0], 0, 0);
        assert_float_equal(v[1], 0.8413447460685429f, 1e-7);
        assert_float_equal(v[2], -0.15865525393145707f, 1e-7);
        float g[2] = {2, -30}, u[2] = {3, 1};
        b->ops->silu_mul(b, g, u, 2);
        assert_float_equal(g[0], 2 / (1 + exp(-2.0)) * 3, 1e-6);
        assert_float_equal(g[1], -30 / (1 + exp(30.0)), 1e-15);
        float q[1] = {1};
        b->ops->quick_gelu(b, q, 1);
        assert_float_equal(q[0], 1 / (1 + exp(-1.702)), 1e-7);
        /* gelu_tanh against its formula in double, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) */
        float t[7] = {0, 1, -1, 0.5f, -2.75f, 3.5f, 10};
        float t0[7];
        memcpy(t0, t, sizeof t);
        b->ops->gelu_tanh(b, t, 7);
        for (int k = 0; k < 7; k++) {
            double z = t0[k], s = sqrt(2 / M_PI);
            double want = 0.5 * z * (1 + tanh(s * (z + 0.044715 * z * z * z)));
            assert_float_equal(t[k], want, 1e-6 * (fabs(want) > 1 ? fabs(want) : 1));
        }
        assert_float_equal(t[1], 0.8411919906082768, 1e-7); /* torch: gelu(1, approximate="tanh") */
    }
}

static void check_embed_rows(be_dtype dtype, int vocab, int cols, int n, size_t offset) {
    void *block;
    const void *host = rnd_weight(dtype, (size_t)vocab * cols, offset, &block);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    assert_non_null(ids);
    for (int t = 0; t < n; t++) ids[t] = t < 2 ? t * (vocab - 1) : (int32_t)(rnd() % vocab);
    be_weight wr;
    lv_err err;
    assert_int_equal(g_ref.ops->weight_init(&g_ref, &wr, dtype, vocab, cols, host, NULL, &err),
                     LV_OK);
    float *want = poisoned((size_t)n * cols);
    g_ref.ops->embed_rows(&g_ref, want, &wr, ids, n);
    for (int i = 0; i < g_n_cpu; i++) {
        be *b = &g_cpu[i].b;
        be_weight w;
        assert_int_equal(b->ops->weight_init(b, &w, dtype, vocab, cols, host, NULL, &err), LV_OK);
        float *got = poisoned((size_t)n * cols);
        b->ops->embed_rows(b, got, &w, ids, n);
        check_close("embed_rows", &g_cpu[i], got, want, (size_t)n * cols, 0);
        assert_memory_equal(got, want, (size_t)n * cols * sizeof *got);
        b->ops->weight_free(b, &w);
        free(got);
    }
    g_ref.ops->weight_free(&g_ref, &wr);
    free(want);
    free(ids);
    free(block);
}

static void embed_rows(void **state) {
    for (int d = BE_F32; d <= BE_BF16; d++)
        for (size_t off = 0; off < 2; off++) {
            check_embed_rows((be_dtype)d, 50, 37, 9, off);
            check_embed_rows((be_dtype)d, 300, 130, 400, off); /* threaded */
        }
}

/* ---------------------------------------------------------------------------
 * Several caller threads on one CPU backend
 */

typedef struct {
    be *b;
    const be_weight *w;
    const float *x, *want;
    int n, rows;
    float *y;
    int n_bad;
} caller;

static void *caller_main(void *arg) {
    caller *c = arg;
    for (int rep = 0; rep < 50; rep++) {
        c->b->ops->matmul(c->b, c->y, c->x, c->w, NULL, c->n);
        if (rel_err(c->y, c->want, (size_t)c->n * c->rows) > TOL_SUM) c->n_bad++;
    }
    return NULL;
}

static void concurrent_callers(void **state) {
    be *b = &g_cpu[1].b; /* 3 threads, best kernels */
    enum { ROWS = 96, COLS = 200 };
    void *block;
    const void *host = rnd_weight(BE_F16, (size_t)ROWS * COLS, 1, &block);
    be_weight w, wr;
    lv_err err;
    assert_int_equal(b->ops->weight_init(b, &w, BE_F16, ROWS, COLS, host, NULL, &err), LV_OK);
    assert_int_equal(g_ref.ops->weight_init(&g_ref, &wr, BE_F16, ROWS, COLS, host, NULL, &err),
                     LV_OK);
    caller c[3];
    const int ns[3] = {1, 5, 40}; /* GEMV, one-thread GEMM, threaded GEMM */
    for (int i = 0; i < 3; i++) {
        c[i] = (caller){.b = b, .w = &w, .n = ns[i], .rows = ROWS};
        c[i].x = rnd_floats((size_t)ns[i] * COLS, -1, 1);
        float *want = poisoned((size_t)ns[i] * ROWS);
        g_ref.ops->matmul(&g_ref, want, c[i].x, &wr, NULL, ns[i]);
        c[i].want = want;
        c[i].y = poisoned((size_t)ns[i] * ROWS);
    }
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&th[i], NULL, caller_main, &c[i]), 0);
    for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(c[i].n_bad, 0);
        free((void *)c[i].x);
        free((void *)c[i].want);
        free(c[i].y);
    }
    b->ops->weight_free(b, &w);
    g_ref.ops->weight_free(&g_ref, &wr);
    free(block);
}

static void find_backends(void **state) {
    assert_ptr_equal(be_find("cpu"), &be_cpu_ops);
    assert_ptr_equal(be_find("ref"), &be_ref_ops);
    assert_null(be_find("cuda-nope"));
    assert_null(be_find(NULL));
}

/* "name[:N]": the index goes to *device; only cuda takes one other than 0,
 * and a malformed index makes the whole name unknown. */
static void find_device_indices(void **state) {
    int device = -1;
    assert_ptr_equal(be_find_device("cpu", &device), &be_cpu_ops);
    assert_int_equal(device, 0);
    assert_ptr_equal(be_find_device("cpu:0", &device), &be_cpu_ops);
    assert_int_equal(device, 0);
    assert_ptr_equal(be_find_device("ref", NULL), &be_ref_ops);
    assert_null(be_find_device("cpu:1", &device));
    assert_null(be_find_device("ref:2", &device));
    static const char *const malformed[] = {"cuda:",   "cuda:x", "cuda:-1", "cuda:1x", "cuda:256",
                                            "cuda: 1", ":1",     "cpu:",    "tpu"};
    for (size_t i = 0; i < LV_ARRAY_LEN(malformed); i++)
        if (be_find_device(malformed[i], &device)) fail_msg("\"%s\" was found", malformed[i]);
#ifdef LLAVA_HAVE_CUDA
    assert_ptr_equal(be_find_device("cuda:1", &device), &be_cuda_ops);
    assert_int_equal(device, 1);
    assert_ptr_equal(be_find_device("cuda", &device), &be_cuda_ops);
    assert_int_equal(device, 0);
    assert_non_null(strstr(be_names(), "cuda"));
#else
    assert_null(be_find_device("cuda", &device));
    assert_null(be_find_device("cuda:1", &device));
    assert_non_null(strstr(be_names(), "no CUDA"));
#endif
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(find_backends),
        cmocka_unit_test(find_device_indices),
        cmocka_unit_test(f16_exhaustive),
        cmocka_unit_test(bf16_exhaustive),
        cmocka_unit_test(kernel_convert_exhaustive),
        cmocka_unit_test(threadpool_runs_every_share),
        cmocka_unit_test(split_covers_range),
        cmocka_unit_test(memory_slots),
        cmocka_unit_test(weight_init_checks),
        cmocka_unit_test(vector_init_all_dtypes),
        cmocka_unit_test(matmul_shapes),
        cmocka_unit_test(matmul_token_split),
        cmocka_unit_test(quant_weight_checks),
        cmocka_unit_test(matmul_quantized),
        cmocka_unit_test(norms),
        cmocka_unit_test(rope),
        cmocka_unit_test(rope_known_values),
        cmocka_unit_test(attention),
        cmocka_unit_test(attention_batch_invariant),
        cmocka_unit_test(store_as_f16),
        cmocka_unit_test(elementwise),
        cmocka_unit_test(activation_values),
        cmocka_unit_test(quick_gelu_tables),
        cmocka_unit_test(gelu_tanh_tables),
        cmocka_unit_test(embed_rows),
        cmocka_unit_test(concurrent_callers),
        /* last: it draws much random data, which would shift every later test's */
        cmocka_unit_test(matmul_batch_invariant),
        cmocka_unit_test(matmul_panel_invariant),
        cmocka_unit_test(cpu_isa_env),
    };
    return cmocka_run_group_tests_name("backend", tests, setup, teardown);
}
