/*
 * kernels_avx512.c - the CPU backend's AVX-512F kernel table (kernels.h
 * `cpu_kernels`): the GEMM micro-kernel and the paired-token decode batch
 * here, the quantized dots in dequant_avx512.c, and the entries it shares
 * with the AVX2 table (AVX2_SHARED, avx2.h).
 *
 * Each kernel keeps the AVX2 kernels' 8-lane FMA chains, two to a ZMM
 * register (two rows, or two tokens, side by side), and ends each half
 * with cpu_hsum8 and the same scalar tail, so it does the same arithmetic
 * in half the instructions: a request's answer is the same bits on an AVX2
 * and an AVX-512 machine (tests/test_backend.c compares the two tables).
 */
#include "backend/cpu/kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include "backend/cpu/avx512.h"

/* The decode batch with AVX-512F (cpu_kernels `dot_pairs`): the same 8-lane
 * FMA chains, two tokens' to a ZMM register. x comes packed (kernels.h): for
 * each 8 columns, token 2p's 8 floats then token 2p+1's, so one load gives
 * a pair; a weight row's 8 values are converted once into both halves.
 * Every lane is an independent FMA rounding as the 8-lane one does, so
 * each (token, row) pair gets cpu_dot_rows_avx2's exact arithmetic (the same
 * chain from zero, hsum, then the scalar tail) at half the instructions.
 * P pairs × R rows accumulators (R = cpu_pair_rows): up to 2 × 8, 4 × 6
 * or 8 × 3, at most 24 of the 32 ZMM registers. */
#define INL512 AVX512 static inline __attribute__((always_inline))

/* Elements i..i+7 of row w as floats, in both halves. */
INL512 __m512 load8_both(be_dtype DT, const void *w, size_t i) {
    const unsigned char *p = w;
    if (DT == BE_F32)
        return _mm512_castpd_ps(
            _mm512_broadcast_f64x4(_mm256_loadu_pd((const double *)(p + 4 * i))));
    __m256i h = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(p + 2 * i)));
    if (DT == BE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Elements i..i+7 of f32 rows w0 (lanes 0-7) and w1 (lanes 8-15). */
INL512 __m512 load8_pair(const float *w0, const float *w1, int i) {
    __m256d lo = _mm256_loadu_pd((const double *)(w0 + i));
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(lo),
                                               _mm256_loadu_pd((const double *)(w1 + i)), 1));
}

/* x[0..8) in both halves. */
INL512 __m512 bcast8(const float *x) {
    return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd((const double *)x)));
}

/* dot_block with AVX-512F: 6 tokens × 4 rows in 12 ZMM accumulators, rows
 * two to a register (lanes 0-7 row 2p's chain, 8-15 row 2p+1's) against
 * each token's 8 floats in both halves: dot_block_avx2's chains, hsums and
 * tails exactly, at half the FMAs. */
AVX512 static void dot_block_avx512(float acc[][MM_BLOCK_ROWS], const float *const x[],
                                    const float *const w[], int n) {
    __m512 a[6][2];
    for (int t = 0; t < 6; t++) a[t][0] = a[t][1] = _mm512_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m512 v0 = load8_pair(w[0], w[1], i), v1 = load8_pair(w[2], w[3], i);
        for (int t = 0; t < 6; t++) {
            __m512 u = bcast8(x[t] + i);
            __asm__("" : "+v"(u)); /* one load of x, not one per FMA */
            a[t][0] = _mm512_fmadd_ps(u, v0, a[t][0]);
            a[t][1] = _mm512_fmadd_ps(u, v1, a[t][1]);
        }
    }
    for (int t = 0; t < 6; t++)
        for (int p = 0; p < 2; p++) {
            __m256 half[2] = {
                _mm512_castps512_ps256(a[t][p]),
                _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a[t][p]), 1))};
            for (int h = 0; h < 2; h++) {
                int r = 2 * p + h;
                float s = cpu_hsum8(half[h]);
                for (int k = i; k < n; k++) s += x[t][k] * w[r][k];
                acc[t][r] += s;
            }
        }
}

/* cpu_hsum8 of the 8-lane chain of every row in a[0..4) (row 2p in lanes
 * 0-7 of a[p], row 2p+1 in lanes 8-15), four rows' chains at a time: the
 * same additions in the same association (lanes j + j+4, then the pairs
 * (0,2) and (1,3), then the last two), done side by side with shuffles. */
INL512 __m512 panel_hsum4(__m512 a0, __m512 a1) {
    /* quarter k: row k's l[j] + l[j+4], j = 0..3 (row order 0, 1 of a0, 0, 1 of a1) */
    return _mm512_add_ps(_mm512_shuffle_f32x4(a0, a1, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(a0, a1, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* The 16 sums of two tokens' 8 rows each: lanes 0-7 token t's rows 0-7,
 * lanes 8-15 token t+1's (at and at1: their a[t][0..4)). */
INL512 __m512 panel_hsum(const __m512 *at, const __m512 *at1) {
    __m512 g[2];
    for (int u = 0; u < 2; u++) {
        const __m512 *a = u ? at1 : at;
        __m512 c0 = panel_hsum4(a[0], a[1]), c1 = panel_hsum4(a[2], a[3]);
        /* quarter k: row k's s[0] + s[2], s[1] + s[3], then row k+4's */
        g[u] = _mm512_add_ps(_mm512_shuffle_ps(c0, c1, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(c0, c1, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    /* quarter k: token t's row k, row k+4, token t+1's row k, row k+4 */
    __m512 h = _mm512_add_ps(_mm512_shuffle_ps(g[0], g[1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_ps(g[0], g[1], _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(order, h);
}

/* dot_panel with AVX-512F: 6 tokens × 8 rows in 24 ZMM accumulators, a[t][p]
 * holding row 2p's chain in lanes 0-7 and row 2p+1's in lanes 8-15 against
 * token t's 8 floats in both halves. The panel gives both rows' chunk in
 * one aligned load (converted once, when packed), so a step is 4 panel
 * loads and 6 broadcast loads for 24 FMAs: the two FMA pipes, not the
 * loads, set the pace. Each half then ends as dot_rows_avx2's chain does
 * (cpu_hsum8, then the scalar tail), so every output has its bits. */
AVX512 static void dot_panel_avx512(float *y, size_t ldy, const float *const x[], const float *wp,
                                    int n) {
    _Static_assert(MM_BLOCK_TOKENS == 6 && MM_PANEL_ROWS == 8, "dot_panel_avx512 is 6x8");
    __m512 a[6][4];
    for (int t = 0; t < 6; t++)
        for (int p = 0; p < 4; p++) a[t][p] = _mm512_setzero_ps();
    const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3], *x4 = x[4], *x5 = x[5];
    const float *p = wp;
    int i = 0;
#define P_FMA(T, XT)                                                                               \
    {                                                                                              \
        __m512 u = bcast8(XT + i);                                                                 \
        __asm__("" : "+v"(u)); /* one load of x, not one per FMA */                                \
        a[T][0] = _mm512_fmadd_ps(u, v0, a[T][0]);                                                 \
        a[T][1] = _mm512_fmadd_ps(u, v1, a[T][1]);                                                 \
        a[T][2] = _mm512_fmadd_ps(u, v2, a[T][2]);                                                 \
        a[T][3] = _mm512_fmadd_ps(u, v3, a[T][3]);                                                 \
    }
    for (; i + 8 <= n; i += 8, p += 64) {
        __m512 v0 = _mm512_load_ps(p), v1 = _mm512_load_ps(p + 16);
        __m512 v2 = _mm512_load_ps(p + 32), v3 = _mm512_load_ps(p + 48);
        P_FMA(0, x0) P_FMA(1, x1) P_FMA(2, x2) P_FMA(3, x3) P_FMA(4, x4) P_FMA(5, x5)
    }
#undef P_FMA
    if (i == n) { /* no tail: the 48 horizontal sums side by side (panel_hsum) */
        for (int t = 0; t < 6; t += 2) {
            __m512 s = _mm512_add_ps(_mm512_setzero_ps(), panel_hsum(a[t], a[t + 1]));
            float *y0 = y + t * ldy, *y1 = y0 + ldy;
            _mm256_storeu_ps(y0, _mm256_add_ps(_mm256_loadu_ps(y0), _mm512_castps512_ps256(s)));
            _mm256_storeu_ps(
                y1,
                _mm256_add_ps(_mm256_loadu_ps(y1),
                              _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1))));
        }
        return;
    }
    for (int t = 0; t < 6; t++)
        for (int q = 0; q < 4; q++) {
            __m256 half[2] = {
                _mm512_castps512_ps256(a[t][q]),
                _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a[t][q]), 1))};
            for (int h = 0; h < 2; h++) {
                float s = cpu_hsum8(half[h]);
                for (int k = i; k < n; k++) s += x[t][k] * p[16 * q + 8 * h + (k - i)];
                y[t * ldy + 2 * q + h] += 0.0f + s;
            }
        }
}

INL512 void dot_pairs_z(int P, int R, be_dtype DT, float acc[][MM_PAIR_ROWS], int nt,
                        const float *xp, const void *const w[], const void *const pf[], int n) {
    __m512 a[MM_PAIR_TOKENS / 2][MM_PAIR_ROWS];
    for (int p = 0; p < P; p++)
        for (int r = 0; r < R; r++) a[p][r] = _mm512_setzero_ps();
    const size_t es = DT == BE_F32 ? 4 : 2;
    int i = 0;
#define Z_STEP(I)                                                                                  \
    {                                                                                              \
        __m512 v[MM_PAIR_ROWS];                                                                    \
        for (int r = 0; r < R; r++) v[r] = load8_both(DT, w[r], (size_t)(I));                      \
        const float *xx = xp + (size_t)(I)*2 * P;                                                  \
        for (int p = 0; p < P; p++) {                                                              \
            __m512 u = _mm512_loadu_ps(xx + 16 * p);                                               \
            for (int r = 0; r < R; r++) a[p][r] = _mm512_fmadd_ps(u, v[r], a[p][r]);               \
        }                                                                                          \
    }
    if (pf)
        for (; i + 32 <= n; i += 32) {
            cpu_prefetch_step(pf, R, i, es);
            for (int q = 0; q < 32; q += 8) Z_STEP(i + q)
        }
    for (; i + 8 <= n; i += 8) Z_STEP(i)
#undef Z_STEP
    float tail[MM_PAIR_ROWS][8];
    for (int r = 0; r < R && i < n; r++)
        cpu_convert_portable(tail[r], DT, (const unsigned char *)w[r] + (size_t)i * es,
                             (size_t)(n - i));
    const float *xt = xp + (size_t)i * 2 * P; /* the tail's chunk */
    for (int p = 0; p < P; p++)
        for (int r = 0; r < R; r++) {
            __m256 half[2] = {
                _mm512_castps512_ps256(a[p][r]),
                _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a[p][r]), 1))};
            for (int h = 0; h < 2 && 2 * p + h < nt; h++) {
                float s = cpu_hsum8(half[h]);
                for (int k = i; k < n; k++) s += xt[16 * p + 8 * h + (k - i)] * tail[r][k - i];
                acc[2 * p + h][r] += s;
            }
        }
}

#define Z_CASE(P, R, DT)                                                                           \
    case P:                                                                                        \
        dot_pairs_z(P, R, DT, acc, nt, xp, w, pf, n);                                              \
        break;
#define SHAPES_Z(DT)                                                                               \
    Z_CASE(1, 8, DT)                                                                               \
    Z_CASE(2, 8, DT)                                                                               \
    Z_CASE(3, 6, DT)                                                                               \
    Z_CASE(4, 6, DT) Z_CASE(5, 3, DT) Z_CASE(6, 3, DT) Z_CASE(7, 3, DT) Z_CASE(8, 3, DT)

AVX512 static void dot_pairs_avx512(float acc[][MM_PAIR_ROWS], int nt, const float *xp,
                                    be_dtype dtype, const void *const w[], const void *const pf[],
                                    int n) {
    switch (dtype) {
        case BE_F16:
            switch ((nt + 1) / 2) { SHAPES_Z(BE_F16) }
            break;
        case BE_BF16:
            switch ((nt + 1) / 2) { SHAPES_Z(BE_BF16) }
            break;
        default:
            switch ((nt + 1) / 2) { SHAPES_Z(BE_F32) }
            break;
    }
}
#undef SHAPES_Z
#undef Z_CASE
#undef INL512

/* For CPUs with AVX-512F: the GEMM micro-kernel, the paired-token decode
 * batch (which takes every plain batch dot_tokens would) and the quantized
 * dots with two rows to a register. */
static const cpu_kernels AVX512_KERNELS = {
    AVX2_SHARED,
    .isa = "avx512",
    .dot_block = dot_block_avx512,
    .dot_panel = dot_panel_avx512,
    .dot_rows_q = cpu_dot_rows_q_avx512,
    .dot_pairs = dot_pairs_avx512,
    .dot_tokens_q = cpu_dot_tokens_q_avx512,
    .dec_qtokens = 12,
    .dec_qtokens4 = 8,
};

const cpu_kernels *cpu_kernels_avx512(void) {
    if (!cpu_kernels_avx2()) return NULL; /* it is built on the AVX2 kernels */
    return __builtin_cpu_supports("avx512f") ? &AVX512_KERNELS : NULL;
}

#else

const cpu_kernels *cpu_kernels_avx512(void) {
    return NULL;
}

#endif
