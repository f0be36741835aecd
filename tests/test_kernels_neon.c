/*
 * test_kernels_neon.c - the vector kernel tables (NEON on ARM64, AVX2 and
 * AVX-512 on x86) against one scalar model of their arithmetic, bit for bit.
 *
 * The vector tables all compute each matmul output as kernels_avx2.c
 * describes: one 8-lane FMA chain from zero over the full 8-column blocks,
 * the horizontal sum ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)), then an
 * unfused scalar tail. The model below spells that out with fmaf, one lane
 * at a time (the build's -ffp-contract=off keeps its plain a·b + c
 * unfused). On x86 the AVX2/AVX-512 tables are checked against it natively;
 * on ARM64 (make test-arm64: cross-built, run under qemu-aarch64) the NEON
 * table is. Equal to the same model, the tables give each other's bits.
 *
 * Every kernel entry is checked with memcmp on random data: sizes from 1
 * to 1000 with every remainder mod 8 (tails), pointers one float (or one
 * byte, for weights) off alignment, prefetch on and off, every decode
 * shape the table declares, and for the quantized entries every ggml block
 * type and MLX bits/group/scale dtype against be_dequant_span
 * (backend/quant.c). The integer path's kernels are test_qdot's; here only
 * their `finish` against qk_sum16, and that LLAVA_CPU_ISA=neon picks both
 * NEON tables.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "backend/cpu/attention.h"
#include "backend/cpu/cpu.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/qdot.h"
#include "backend/quant.h"
#include "base/half.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1dull) >> 32);
}

static float rndf(void) { /* in [-1, 1), never exactly representable sums */
    return (float)((int32_t)rnd()) / 2147483648.0f;
}

static void fill(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = rndf();
}

static const int SIZES[] = {1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 40, 63, 257, 1000};
enum { N_SIZES = sizeof SIZES / sizeof SIZES[0], NMAX = 1000 };

/* The vector tables this machine runs (NULL entries skipped). */
static const cpu_kernels *table(int i) {
    switch (i) {
        case 0:
            return cpu_kernels_neon();
        case 1:
            return cpu_kernels_avx2();
        default:
            return cpu_kernels_avx512();
    }
}
enum { N_TABLES = 3 };

static void expect_bits(const char *isa, const char *what, int n, const float *got,
                        const float *want, size_t count) {
    for (size_t i = 0; i < count; i++)
        if (memcmp(&got[i], &want[i], sizeof got[i]) != 0)
            fail_msg("%s %s n=%d: element %zu is %.9g, the model gives %.9g", isa, what, n, i,
                     got[i], want[i]);
}

/* ---------------------------------------------------------------------------
 * The model
 */

static float hsum8(const float l[8]) {
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

/* One output: 8-lane FMA chain over the full blocks, hsum8, scalar tail. */
static float chain(const float *x, const float *w, int n) {
    float l[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) l[j] = fmaf(x[i + j], w[i + j], l[j]);
    float s = hsum8(l);
    for (; i < n; i++) s += x[i] * w[i];
    return s;
}

/* `dot`: four 8-lane chains over blocks of 32 (the rest of the full blocks
 * in the first), lane-wise (s0+s1)+(s2+s3), hsum8, tail. */
static float model_dot(const float *a, const float *b, int n) {
    float s[4][8] = {{0}};
    int i = 0;
    for (; i + 32 <= n; i += 32)
        for (int c = 0; c < 4; c++)
            for (int j = 0; j < 8; j++) s[c][j] = fmaf(a[i + 8 * c + j], b[i + 8 * c + j], s[c][j]);
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[0][j] = fmaf(a[i + j], b[i + j], s[0][j]);
    float l[8];
    for (int j = 0; j < 8; j++) l[j] = (s[0][j] + s[1][j]) + (s[2][j] + s[3][j]);
    float r = hsum8(l);
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

/* ---------------------------------------------------------------------------
 * Float kernels
 */

static void dot_and_convert(void **state) {
    float *a = malloc((NMAX + 1) * sizeof *a), *b = malloc((NMAX + 1) * sizeof *b);
    float *got = malloc(NMAX * sizeof *got), *want = malloc(NMAX * sizeof *want);
    unsigned char *raw = malloc(2 * NMAX + 1);
    int tested = 0;
    for (int ti = 0; ti < N_TABLES; ti++) {
        const cpu_kernels *k = table(ti);
        if (!k) continue;
        tested++;
        for (int si = 0; si < N_SIZES; si++) {
            int n = SIZES[si];
            fill(a, NMAX + 1);
            fill(b, NMAX + 1);
            float g = k->dot(a + 1, b, n), w = model_dot(a + 1, b, n); /* a unaligned */
            expect_bits(k->isa, "dot", n, &g, &w, 1);
            /* convert: random bit patterns (NaNs and subnormals included), odd address */
            for (int i = 0; i < 2 * n; i++) raw[1 + i] = (unsigned char)rnd();
            for (int d = BE_F16; d <= BE_BF16; d++) {
                k->convert(got, (be_dtype)d, raw + 1, (size_t)n);
                cpu_convert_portable(want, (be_dtype)d, raw + 1, (size_t)n);
                expect_bits(k->isa, d == BE_F16 ? "convert f16" : "convert bf16", n, got, want,
                            (size_t)n);
            }
        }
    }
    if (!tested) printf("(no vector table on this machine: nothing to check)\n");
    free(a);
    free(b);
    free(got);
    free(want);
    free(raw);
}

static void dot_block_6x4(void **state) {
    enum { T = MM_BLOCK_TOKENS, R = MM_BLOCK_ROWS };
    float *xs = malloc((size_t)T * (NMAX + 1) * sizeof *xs);
    float *ws = malloc((size_t)R * (NMAX + 1) * sizeof *ws);
    for (int ti = 0; ti < N_TABLES; ti++) {
        const cpu_kernels *k = table(ti);
        if (!k) continue;
        for (int si = 0; si < N_SIZES; si++) {
            int n = SIZES[si];
            const float *x[T], *w[R];
            fill(xs, (size_t)T * (NMAX + 1));
            fill(ws, (size_t)R * (NMAX + 1));
            for (int t = 0; t < T; t++) x[t] = xs + (size_t)t * (NMAX + 1) + (t & 1);
            for (int r = 0; r < R; r++) w[r] = ws + (size_t)r * (NMAX + 1) + (r & 1);
            w[3] = w[1]; /* rows may repeat */
            float got[T][R], want[T][R];
            for (int t = 0; t < T; t++)
                for (int r = 0; r < R; r++) got[t][r] = want[t][r] = rndf();
            k->dot_block(got, x, w, n);
            for (int t = 0; t < T; t++)
                for (int r = 0; r < R; r++) want[t][r] += chain(x[t], w[r], n);
            expect_bits(k->isa, "dot_block", n, &got[0][0], &want[0][0], T * R);
        }
    }
    free(xs);
    free(ws);
}

/* Weight rows of dtype dt (F32/F16/BF16), random finite values, one byte
 * off alignment; conv gets them as floats. */
static void rnd_rows(be_dtype dt, int rows, int n, unsigned char *mem, const void *w[],
                     float *conv) {
    size_t es = dt == BE_F32 ? 4 : 2;
    for (int r = 0; r < rows; r++) {
        unsigned char *p = mem + 1 + (size_t)r * NMAX * es;
        for (int i = 0; i < n; i++) {
            float v = rndf();
            uint16_t h = dt == BE_F16 ? lv_f32_to_f16(v) : (uint16_t)(rnd() & 0xbfff);
            if (dt == BE_F32)
                memcpy(p + 4 * i, &v, 4);
            else
                memcpy(p + 2 * i, &h, 2);
        }
        cpu_convert_portable(conv + (size_t)r * NMAX, dt, p, (size_t)n);
        w[r] = p;
    }
}

static void dot_rows_and_tokens(void **state) {
    enum { ROWS = MM_GEMV_ROWS };
    unsigned char *mem = malloc((size_t)ROWS * NMAX * 4 + 1);
    float *conv = malloc((size_t)ROWS * NMAX * sizeof *conv);
    float *xs = malloc((size_t)MM_DEC_TOKENS * (NMAX + 1) * sizeof *xs);
    for (int ti = 0; ti < N_TABLES; ti++) {
        const cpu_kernels *k = table(ti);
        if (!k) continue;
        for (int dt = BE_F32; dt <= BE_BF16; dt++)
            for (int si = 0; si < N_SIZES; si++) {
                int n = SIZES[si];
                const void *w[ROWS];
                rnd_rows((be_dtype)dt, ROWS, n, mem, w, conv);
                fill(xs, (size_t)MM_DEC_TOKENS * (NMAX + 1));
                const float *x[MM_DEC_TOKENS];
                for (int t = 0; t < MM_DEC_TOKENS; t++) x[t] = xs + (size_t)t * (NMAX + 1) + 1;
                for (int p = 0; p < 2; p++) { /* prefetch off, then on (the rows themselves) */
                    float got[ROWS], want[ROWS];
                    for (int r = 0; r < ROWS; r++) got[r] = want[r] = rndf();
                    k->dot_rows(got, x[0], (be_dtype)dt, w, p ? w : NULL, n);
                    for (int r = 0; r < ROWS; r++)
                        want[r] += chain(x[0], conv + (size_t)r * NMAX, n);
                    expect_bits(k->isa, "dot_rows", n, got, want, ROWS);
                }
                if (!k->dot_tokens) continue;
                for (int nr = 2; nr <= 4; nr += 2) {
                    int maxt = nr == 4 ? k->dec_tokens4 : k->dec_tokens;
                    for (int nt = 1; nt <= maxt; nt++) {
                        float got[MM_DEC_TOKENS][MM_DEC_ROWS], want[MM_DEC_TOKENS][MM_DEC_ROWS];
                        for (int t = 0; t < nt; t++)
                            for (int r = 0; r < nr; r++) got[t][r] = want[t][r] = rndf();
                        k->dot_tokens(got, nt, nr, x, (be_dtype)dt, w, nt & 1 ? w + 4 : NULL, n);
                        for (int t = 0; t < nt; t++)
                            for (int r = 0; r < nr; r++)
                                want[t][r] += chain(x[t], conv + (size_t)r * NMAX, n);
                        for (int t = 0; t < nt; t++)
                            expect_bits(k->isa, "dot_tokens", n, got[t], want[t], (size_t)nr);
                    }
                }
            }
    }
    free(mem);
    free(conv);
    free(xs);
}

/* madd_block: per output column d < n − n % 8 one FMA chain from o over
 * the keys; the last n % 8 columns unfused. */
static void madd_block(void **state) {
    enum { T = MM_BLOCK_TOKENS, KEYS = 13, LDV = 67 };
    float *v = malloc((size_t)KEYS * LDV * sizeof *v);
    float p[T][KEYS], got[T][64], want[T][64];
    for (int ti = 0; ti < N_TABLES; ti++) {
        const cpu_kernels *k = table(ti);
        if (!k) continue;
        static const int NS[] = {1, 7, 8, 9, 16, 24, 31, 40, 64};
        for (size_t ni = 0; ni < sizeof NS / sizeof NS[0]; ni++) {
            int n = NS[ni];
            fill(v, (size_t)KEYS * LDV);
            fill(&p[0][0], T * KEYS);
            fill(&got[0][0], T * 64);
            memcpy(want, got, sizeof got);
            float *o[T];
            const float *pp[T];
            for (int t = 0; t < T; t++) {
                o[t] = got[t];
                pp[t] = p[t];
            }
            k->madd_block(o, pp, v + 1, LDV, KEYS, n);
            for (int t = 0; t < T; t++)
                for (int d = 0; d < n; d++)
                    for (int j = 0; j < KEYS; j++) {
                        float vj = v[1 + (size_t)j * LDV + d];
                        want[t][d] = d < n - n % 8 ? fmaf(p[t][j], vj, want[t][d])
                                                   : want[t][d] + p[t][j] * vj;
                    }
            for (int t = 0; t < T; t++) expect_bits(k->isa, "madd_block", n, got[t], want[t], n);
        }
    }
    free(v);
}

/* quick_gelu (kernels.h): cpu_quick_gelu1 on every element, bit for bit:
 * random bit patterns (NaNs, infinities, subnormals) and values across the
 * clamp, with ragged lengths. */
static void quick_gelu(void **state) {
    enum { N = 4003 };
    float *x = malloc(N * sizeof *x), *want = malloc(N * sizeof *want);
    for (int ti = 0; ti < N_TABLES; ti++) {
        const cpu_kernels *k = table(ti);
        if (!k || !k->quick_gelu) continue;
        for (int i = 0; i < N; i++) {
            uint32_t u = rnd();
            if (i % 2)
                memcpy(&x[i], &u, 4);
            else
                x[i] = rndf() * (i % 4 ? 8.0f : 80.0f);
        }
        for (int i = 0; i < N; i++) want[i] = cpu_quick_gelu1(x[i]);
        k->quick_gelu(x + 1, N - 1); /* off alignment, a ragged end */
        k->quick_gelu(x, 1);
        for (int i = 0; i < N; i++)
            if (memcmp(&x[i], &want[i], 4) != 0 && !(isnan(x[i]) && isnan(want[i])))
                fail_msg("%s quick_gelu element %d: %a, cpu_quick_gelu1 gives %a", k->isa, i, x[i],
                         want[i]);
    }
    free(x);
    free(want);
}

/* ---------------------------------------------------------------------------
 * Quantized kernels
 */

/* A random normal half of magnitude in [2^-9, 2^-4), either sign. */
static uint16_t rnd_scale_half(void) {
    return (uint16_t)((rnd() & 1) << 15 | (6 + rnd() % 5) << 10 | (rnd() & 0x3ff));
}

typedef struct {
    unsigned char *mem, *side;
    be_weight w;
} qw;

/* rows × cols of dt (bits/group for MLX, F16 or BF16 side data), random
 * codes and sane scales, the codes one byte off alignment. */
static void rnd_qw(qw *o, be_dtype dt, int rows, int cols, int bits, int group, be_dtype sdt) {
    be_quant q = {.bits = bits, .group = group, .scale_dtype = sdt};
    size_t rb = be_row_bytes(dt, cols, &q), n = rb * rows;
    assert_true(rb > 0);
    o->mem = malloc(n + 9);
    unsigned char *p = o->mem + 1;
    for (size_t i = 0; i < n + 8; i++) p[i] = (unsigned char)rnd();
    o->side = NULL;
    if (dt == BE_MLX) {
        size_t ng = (size_t)rows * (cols / group);
        o->side = malloc(4 * ng);
        for (size_t i = 0; i < 2 * ng; i++) {
            uint16_t h = rnd_scale_half();
            if (sdt == BE_BF16) h = (uint16_t)(lv_f16_to_f32(h) != 0 ? rnd() & 0xbfff : 0);
            memcpy(o->side + 2 * i, &h, 2);
        }
        q.scales = o->side;
        q.biases = o->side + 2 * ng;
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
    lv_err err = {0};
    assert_int_equal(be_weight_describe(&o->w, dt, rows, cols, p, &q, &err), LV_OK);
}

typedef struct {
    be_dtype dt;
    int bits, group;
    be_dtype sdt;
} qcase;

static const qcase QCASES[] = {
    {BE_Q8_0, 0, 0, 0},       {BE_Q4_0, 0, 0, 0},       {BE_Q4_1, 0, 0, 0},
    {BE_Q4_K, 0, 0, 0},       {BE_Q5_K, 0, 0, 0},       {BE_Q6_K, 0, 0, 0},
    {BE_MLX, 4, 32, BE_F16},  {BE_MLX, 4, 64, BE_BF16}, {BE_MLX, 8, 128, BE_F16},
    {BE_MLX, 2, 64, BE_F16},  {BE_MLX, 3, 32, BE_F16},  {BE_MLX, 5, 64, BE_BF16},
    {BE_MLX, 6, 128, BE_F16},
};

static void quantized(void **state) {
    enum { ROWS = MM_GEMV_ROWS, COLS = 512 };
    float *vals = malloc((size_t)ROWS * COLS * sizeof *vals);
    float *got = malloc(COLS * sizeof *got);
    float *xs = malloc((size_t)MM_DEC_QMAX * (COLS + 1) * sizeof *xs);
    for (int ti = 0; ti < N_TABLES; ti++) {
        const cpu_kernels *k = table(ti);
        if (!k) continue;
        for (size_t ci = 0; ci < sizeof QCASES / sizeof QCASES[0]; ci++) {
            const qcase *c = &QCASES[ci];
            qw q;
            rnd_qw(&q, c->dt, ROWS, COLS, c->bits, c->group, c->sdt);
            const char *name = be_dtype_name(c->dt);
            for (int r = 0; r < ROWS; r++) be_dequant_row(&q.w, r, vals + (size_t)r * COLS);
            /* dequant: spans of the row, from c0 */
            int al = be_span_align(&q.w);
            for (int c0 = 0; c0 < COLS; c0 += 2 * al) {
                int n = COLS - c0 < 3 * al ? COLS - c0 : 3 * al;
                k->dequant(&q.w, 3, c0, n, got);
                expect_bits(k->isa, name, n, got, vals + 3 * COLS + c0, (size_t)n);
            }
            fill(xs, (size_t)MM_DEC_QMAX * (COLS + 1));
            int rows[ROWS] = {7, 0, 5, 5, 1, 2, 6, 3}; /* rows may repeat */
            int c0 = 256, n = 256;                     /* a span the dequantiser takes */
            if (k->dot_rows_q) {
                float a[ROWS], want[ROWS];
                for (int r = 0; r < ROWS; r++) a[r] = want[r] = rndf();
                k->dot_rows_q(a, xs + 1, &q.w, rows, c0, n);
                for (int r = 0; r < ROWS; r++)
                    want[r] += chain(xs + 1, vals + (size_t)rows[r] * COLS + c0, n);
                expect_bits(k->isa, "dot_rows_q", n, a, want, ROWS);
            }
            if (k->dot_tokens_q)
                for (int nt = 2; nt <= k->dec_qtokens; nt++) {
                    int nr = nt <= k->dec_qtokens4 ? 4 : 2;
                    size_t ldx = COLS + 1;
                    float a[MM_DEC_QMAX][MM_DEC_ROWS], want[MM_DEC_QMAX][MM_DEC_ROWS];
                    for (int t = 0; t < nt; t++)
                        for (int r = 0; r < nr; r++) a[t][r] = want[t][r] = rndf();
                    k->dot_tokens_q(a, nt, nr, xs + 1, ldx, &q.w, rows + 1, c0, n);
                    for (int t = 0; t < nt; t++)
                        for (int r = 0; r < nr; r++)
                            want[t][r] +=
                                chain(xs + 1 + t * ldx, vals + (size_t)rows[1 + r] * COLS + c0, n);
                    for (int t = 0; t < nt; t++)
                        expect_bits(k->isa, "dot_tokens_q", n, a[t], want[t], (size_t)nr);
                }
            free(q.mem);
            free(q.side);
        }
    }
    free(vals);
    free(got);
    free(xs);
}

/* The integer kernels' optional `finish` (qdot.h): bias + qk_sum16, bit
 * for bit, with and without a bias, and where the sum is -0 (0 + -0 = +0). */
static void qdot_finish(void **state) {
    const qk_kernels *ks[] = {qk_kernels_neon(), qk_kernels_avx512(), qk_kernels_avx2()};
    enum { N = 37 };
    float acc[N][QK_LANES], bias[N], got[N], want[N];
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
        const qk_kernels *k = ks[ki];
        if (!k || !k->finish) continue;
        for (int b = 0; b < 2; b++) {
            fill(&acc[0][0], N * QK_LANES);
            fill(bias, N);
            for (int l = 0; l < QK_LANES; l++) acc[0][l] = -0.0f;
            k->finish(got, (const float(*)[QK_LANES])acc, b ? bias : NULL, N);
            for (int i = 0; i < N; i++) want[i] = (b ? bias[i] : 0.0f) + qk_sum16(acc[i]);
            expect_bits(k->isa, "finish", N, got, want, N);
        }
    }
}

/* ---------------------------------------------------------------------------
 * Attention kernels (attention.h): every vector table against the portable
 * one, which writes the arithmetic out lane by lane.
 */

static const attn_kernels *attn_table(int i) {
    switch (i) {
        case 0:
            return attn_kernels_neon();
        case 1:
            return attn_kernels_avx2();
        default:
            return attn_kernels_avx512();
    }
}

static void attention_kernels(void **state) {
    enum { NR = 6, NK = 21, LD = 136 };
    const attn_kernels *ref = attn_kernels_portable();
    static const int HD[] = {1, 7, 8, 13, 24, 64, 80, 128};
    float *qs = malloc((size_t)NR * LD * sizeof *qs), *kv = malloc((size_t)NK * LD * 4 + 4);
    float *s1 = malloc((size_t)NR * NK * sizeof *s1), *s2 = malloc((size_t)NR * NK * sizeof *s2);
    float o1[NR][LD], o2[NR][LD], p[NR][NK];
    for (int ti = 0; ti < N_TABLES; ti++) {
        const attn_kernels *k = attn_table(ti);
        if (!k) continue;
        for (size_t hi = 0; hi < sizeof HD / sizeof HD[0]; hi++)
            for (int dt = BE_F32; dt <= BE_F16; dt++) {
                int hd = HD[hi], nr = 1 + (int)hi % NR, nk = 1 + (int)(hi * 5) % NK;
                size_t ld = (size_t)hd + 3; /* keys and values at odd strides */
                fill(qs, (size_t)NR * LD);
                const float *q[NR];
                for (int r = 0; r < NR; r++) q[r] = qs + (size_t)r * LD;
                /* the cache's element alignment, not more: f16 rows 2 bytes in */
                unsigned char *kb = (unsigned char *)kv + (dt == BE_F16 ? 2 : 0);
                for (size_t i = 0; i < (size_t)nk * ld; i++) {
                    float f = 4 * rndf();
                    if (dt == BE_F16) {
                        uint16_t h = lv_f32_to_f16(f);
                        memcpy(kb + 2 * i, &h, 2);
                    } else {
                        memcpy(kb + 4 * i, &f, 4);
                    }
                }
                ref->scores(s1, NK, q, nr, kb, (be_dtype)dt, ld, nk, hd);
                k->scores(s2, NK, q, nr, kb, (be_dtype)dt, ld, nk, hd);
                for (int r = 0; r < nr; r++)
                    expect_bits(k->isa, "attention scores", hd, s2 + r * NK, s1 + r * NK,
                                (size_t)nk);
                /* exp_sum over each score row, m from below and from above */
                for (int r = 0; r < nr; r++) {
                    float m1 = r & 1 ? 1e9f : -1e9f, m2 = m1;
                    memcpy(s2 + r * NK, s1 + r * NK, (size_t)nk * sizeof *s1);
                    float a = ref->exp_sum(s1 + r * NK, nk, 0.3f, &m1);
                    float b = k->exp_sum(s2 + r * NK, nk, 0.3f, &m2);
                    expect_bits(k->isa, "attention exp_sum", nk, &b, &a, 1);
                    expect_bits(k->isa, "attention exp_sum m", nk, &m2, &m1, 1);
                    expect_bits(k->isa, "attention exp_sum p", nk, s2 + r * NK, s1 + r * NK,
                                (size_t)nk);
                }
                fill(&p[0][0], NR * NK);
                fill(&o1[0][0], NR * LD);
                memcpy(o2, o1, sizeof o1);
                float *po1[NR], *po2[NR];
                const float *pp[NR];
                for (int r = 0; r < NR; r++) {
                    po1[r] = o1[r];
                    po2[r] = o2[r];
                    pp[r] = p[r];
                }
                ref->pv(po1, pp, nr, kb, (be_dtype)dt, ld, nk, hd);
                k->pv(po2, pp, nr, kb, (be_dtype)dt, ld, nk, hd);
                for (int r = 0; r < nr; r++)
                    expect_bits(k->isa, "attention pv", hd, o2[r], o1[r], (size_t)hd);
            }
        /* store_f16: random bit patterns (NaNs, infinities, subnormals), large
         * values (saturated), halves' ties */
        enum { NS = 4099 };
        float *src = malloc(NS * sizeof *src);
        uint16_t *h1 = malloc(NS * sizeof *h1), *h2 = malloc(NS * sizeof *h2);
        for (int i = 0; i < NS; i++) {
            uint32_t u = rnd();
            if (i % 3 == 0)
                memcpy(&src[i], &u, 4);
            else if (i % 3 == 1)
                src[i] = rndf() * 70000.0f;
            else
                src[i] = ldexpf((float)(int)(u % 4096) + 0.5f, -(int)(u >> 12) % 30);
        }
        for (int pass = 0; pass < 2; pass++) { /* then without NaNs: the vector path throughout */
            if (pass)
                for (int i = 0; i < NS; i++)
                    if (isnan(src[i])) src[i] = 1.0f;
            ref->store_f16(h1, src, NS);
            k->store_f16(h2, src, NS);
            for (int i = 0; i < NS; i++)
                if (h1[i] != h2[i])
                    fail_msg("%s attention store_f16 %a: %04x, the reference gives %04x", k->isa,
                             src[i], h2[i], h1[i]);
        }
        free(src);
        free(h1);
        free(h2);
    }
    free(qs);
    free(kv);
    free(s1);
    free(s2);
}

/* On ARM64 the NEON table is the best one and LLAVA_CPU_ISA's "neon", with
 * the NEON integer kernels; elsewhere "neon" is refused with a message. */
static void neon_is_best_on_arm64(void **state) {
    be b = {.ops = &be_cpu_ops};
    lv_err err;
    setenv("LLAVA_CPU_ISA", "neon", 1);
    lv_status st = b.ops->init(&b, 1, &err);
    unsetenv("LLAVA_CPU_ISA");
#if defined(__aarch64__)
    assert_non_null(cpu_kernels_neon());
    assert_ptr_equal(cpu_kernels_best(), cpu_kernels_neon());
    assert_string_equal(cpu_kernels_neon()->isa, "neon");
    assert_int_equal(st, LV_OK);
    assert_ptr_equal(cpu_ctx_of(&b)->k, cpu_kernels_neon());
    assert_ptr_equal(cpu_ctx_of(&b)->qk, qk_kernels_neon());
    b.ops->deinit(&b);
#else
    assert_null(cpu_kernels_neon());
    assert_null(qk_kernels_neon());
    assert_int_equal(st, LV_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "LLAVA_CPU_ISA=neon"));
#endif
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(neon_is_best_on_arm64),
        cmocka_unit_test(dot_and_convert),
        cmocka_unit_test(dot_block_6x4),
        cmocka_unit_test(dot_rows_and_tokens),
        cmocka_unit_test(madd_block),
        cmocka_unit_test(quick_gelu),
        cmocka_unit_test(quantized),
        cmocka_unit_test(qdot_finish),
        cmocka_unit_test(attention_kernels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
