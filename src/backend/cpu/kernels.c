/*
 * kernels.c - the CPU backend's vector kernels (cpu.h `cpu_kernels`), once in
 * portable C and once with AVX2+FMA+F16C intrinsics.
 *
 * The AVX2 functions carry __attribute__((target(...))) instead of needing
 * -mavx2 for the whole build, and cpu_kernels_avx2() hands them out only after
 * __builtin_cpu_supports confirms the running CPU (and OS) has the features.
 * Everything else in the backend is instruction-set agnostic and calls through
 * the table. All loads are unaligned loads: weights are mmapped tensors at
 * arbitrary offsets.
 *
 * On CPUs that also have AVX-512F, the table's GEMM micro-kernel
 * (dot_block) and decode-batch kernel (dot_pairs) keep the same 8-lane FMA
 * chains two to a ZMM register (two rows, or two tokens, side by side), so
 * they do the same arithmetic in half the instructions: a request's answer
 * is the same bits on an AVX2 and an AVX-512 machine.
 *
 * The portable kernels keep 8 independent partial sums ("lanes") so that the
 * compiler may vectorise them without reassociating float additions.
 */
#include "backend/cpu/cpu.h"
#include "backend/quant.h"

#include <string.h>

/* ---------------------------------------------------------------------------
 * Portable C
 */

enum { LANES = 8 };

static float sum_lanes(const float l[LANES]) {
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

static float dot_portable(const float *a, const float *b, int n) {
    float l[LANES] = {0};
    int i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) l[j] += a[i + j] * b[i + j];
    float s = sum_lanes(l);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static void convert_portable(float *dst, be_dtype dtype, const void *src, size_t n) {
    const unsigned char *p = src;
    if (dtype == BE_F32) {
        memcpy(dst, src, n * sizeof *dst);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = dtype == BE_F16 ? be_f16_to_f32(h) : be_bf16_to_f32(h);
    }
}

static void dot_block_portable(float acc[][MM_BLOCK_ROWS], const float *const x[],
                               const float *const w[], int n) {
    for (int t = 0; t < MM_BLOCK_TOKENS; t++)
        for (int r = 0; r < MM_BLOCK_ROWS; r++) acc[t][r] += dot_portable(x[t], w[r], n);
}

/* dot_portable for each row, w converted chunk by chunk into a stack buffer
 * (exact conversions; memcpy for F32, so w may be unaligned). The chunk is a
 * multiple of LANES, so the lanes, their sum and the tail see the same
 * products in the same order as dot_portable over a converted row. */
static void dot_rows_portable(float acc[], const float *x, be_dtype dtype, const void *const w[],
                              const void *const pf[], int n) {
    enum { CHUNK = 256 };
    _Static_assert(CHUNK % LANES == 0, "lanes must not straddle chunks");
    size_t esize = dtype == BE_F32 ? 4 : 2;
    float buf[CHUNK];
    for (int r = 0; r < MM_GEMV_ROWS; r++) {
        float l[LANES] = {0};
        int c = 0, m = 0;
        for (; c < n; c += CHUNK) {
            m = n - c < CHUNK ? n - c : CHUNK;
            convert_portable(buf, dtype, (const unsigned char *)w[r] + (size_t)c * esize,
                             (size_t)m);
            for (int i = 0; i + LANES <= m; i += LANES)
                for (int j = 0; j < LANES; j++) l[j] += x[c + i + j] * buf[i + j];
        }
        float s = sum_lanes(l);
        /* the tail: the last m % LANES elements, still in buf */
        for (int i = m - m % LANES; i < m; i++) s += x[c - CHUNK + i] * buf[i];
        acc[r] += s;
    }
}

static void madd_block_portable(float *const o[], const float *const p[], const float *v,
                                size_t ldv, int n_keys, int n) {
    for (int t = 0; t < MM_BLOCK_TOKENS; t++)
        for (int j = 0; j < n_keys; j++) {
            float pj = p[t][j];
            const float *vj = v + (size_t)j * ldv;
            for (int d = 0; d < n; d++) o[t][d] += pj * vj[d];
        }
}

static const cpu_kernels PORTABLE = {
    .isa = "portable",
    .dot = dot_portable,
    .convert = convert_portable,
    .dot_block = dot_block_portable,
    .dot_rows = dot_rows_portable,
    .madd_block = madd_block_portable,
    .dequant = be_dequant_span,
};

const cpu_kernels *cpu_kernels_portable(void) {
    return &PORTABLE;
}

/* ---------------------------------------------------------------------------
 * AVX2 + FMA + F16C (x86-64, GCC or clang)
 */

#if defined(__x86_64__) && defined(__GNUC__)
#include "backend/cpu/avx2.h"

#include <cpuid.h>

/* The kernels read 32 elements of each of their rows per step; with pf they
 * prefetch the same elements of the rows they read next (1 cache line, 2
 * for f32). */
static inline __attribute__((always_inline)) void prefetch_step(const void *const pf[], int nr,
                                                                int i, size_t es) {
    for (int r = 0; r < nr; r++) {
        const char *p = (const char *)pf[r] + (size_t)i * es;
        _mm_prefetch(p, _MM_HINT_T0);
        if (es == 4) _mm_prefetch(p + 64, _MM_HINT_T0);
    }
}

/* 8 weights of dtype starting at element i, as floats. */
AVX2 static inline __m256 load8(be_dtype dtype, const void *w, size_t i) {
    const unsigned char *p = w;
    if (dtype == BE_F32) return _mm256_loadu_ps((const float *)(p + 4 * i));
    __m128i h = _mm_loadu_si128((const __m128i *)(p + 2 * i));
    if (dtype == BE_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AVX2 static float dot_avx2(const float *a, const float *b, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = cpu_hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

AVX2 static void convert_avx2(float *dst, be_dtype dtype, const void *src, size_t n) {
    if (dtype == BE_F32) {
        memcpy(dst, src, n * sizeof *dst);
        return;
    }
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8(dtype, src, i));
    convert_portable(dst + i, dtype, (const unsigned char *)src + 2 * i, n - i);
}

/* 6 tokens × 4 rows, as two passes of 6 × 2: 12 accumulators in registers;
 * each step loads 2 w and 6 x vectors for 12 FMAs, enough independent FMAs
 * to cover their latency. */
_Static_assert(MM_BLOCK_TOKENS == 6 && MM_BLOCK_ROWS == 4, "dot_block_avx2 is written for 6x4");

AVX2 static inline __attribute__((always_inline)) void dot_block_6x2(float acc[][MM_BLOCK_ROWS],
                                                                     int r0, const float *const x[],
                                                                     const float *w0,
                                                                     const float *w1, int n) {
    __m256 a[6][2];
    for (int t = 0; t < 6; t++) a[t][0] = a[t][1] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v0 = _mm256_loadu_ps(w0 + i), v1 = _mm256_loadu_ps(w1 + i);
        for (int t = 0; t < 6; t++) { /* unrolled by the compiler */
            __m256 u = _mm256_loadu_ps(x[t] + i);
            __asm__("" : "+x"(u)); /* keep u in a register: one load, not one per FMA */
            a[t][0] = _mm256_fmadd_ps(u, v0, a[t][0]);
            a[t][1] = _mm256_fmadd_ps(u, v1, a[t][1]);
        }
    }
    const float *w[2] = {w0, w1};
    for (int t = 0; t < 6; t++)
        for (int r = 0; r < 2; r++) {
            float s = cpu_hsum8(a[t][r]);
            for (int k = i; k < n; k++) s += x[t][k] * w[r][k];
            acc[t][r0 + r] += s;
        }
}

AVX2 static void dot_block_avx2(float acc[][MM_BLOCK_ROWS], const float *const x[],
                                const float *const w[], int n) {
    dot_block_6x2(acc, 0, x, w[0], w[1], n);
    dot_block_6x2(acc, 2, x, w[2], w[3], n);
}

/* 1 token × 8 rows: one accumulator per row as in dot_block_avx2 (8
 * independent FMA chains), each step loading 1 x and 8 w vectors. Weights
 * are converted by load8, which is what convert_avx2 fills the GEMM panel
 * with; the tail goes through convert_portable, as the panel's does. With
 * pf, each cache line of the next rows is prefetched as the same line of
 * these rows is read: 8 short rows at once are 8 streams, which the
 * hardware prefetchers follow less well than one long one. */
_Static_assert(MM_GEMV_ROWS == 8, "dot_rows_avx2 is written for 8 rows");

AVX2 static void dot_rows_avx2(float acc[], const float *x, be_dtype dtype, const void *const w[],
                               const void *const pf[], int n) {
    __m256 a[8];
    for (int r = 0; r < 8; r++) a[r] = _mm256_setzero_ps();
    int i = 0;
#define ES(DT) ((DT) == BE_F32 ? 4 : 2)
#define DOT_ROWS_LOOP(DT)                                                                          \
    {                                                                                              \
        if (pf)                                                                                    \
            for (; i + 32 <= n; i += 32) {                                                         \
                prefetch_step(pf, 8, i, ES(DT));                                                   \
                for (int q = 0; q < 32; q += 8) {                                                  \
                    __m256 u = _mm256_loadu_ps(x + i + q);                                         \
                    for (int r = 0; r < 8; r++)                                                    \
                        a[r] = _mm256_fmadd_ps(u, load8(DT, w[r], (size_t)(i + q)), a[r]);         \
                }                                                                                  \
            }                                                                                      \
        for (; i + 8 <= n; i += 8) {                                                               \
            __m256 u = _mm256_loadu_ps(x + i);                                                     \
            for (int r = 0; r < 8; r++)                                                            \
                a[r] = _mm256_fmadd_ps(u, load8(DT, w[r], (size_t)i), a[r]);                       \
        }                                                                                          \
    }
    if (dtype == BE_F16) /* constant dtype: the conversion inlines to one instruction */
        DOT_ROWS_LOOP(BE_F16)
    else if (dtype == BE_BF16)
        DOT_ROWS_LOOP(BE_BF16)
    else
        DOT_ROWS_LOOP(BE_F32)
#undef DOT_ROWS_LOOP
#undef ES
    size_t esize = dtype == BE_F32 ? 4 : 2;
    for (int r = 0; r < 8; r++) {
        float s = cpu_hsum8(a[r]);
        if (i < n) {
            float tail[8];
            convert_portable(tail, dtype, (const unsigned char *)w[r] + (size_t)i * esize,
                             (size_t)(n - i));
            for (int k = i; k < n; k++) s += x[k] * tail[k - i];
        }
        acc[r] += s;
    }
}

/* T tokens × R rows (R = 2 or 4), weights converted by load8 as they are
 * read (once per T tokens, no panel): T·R accumulators, each step R w and
 * T x loads for T·R FMAs. Every (token, row) pair gets dot_rows_avx2's
 * arithmetic: one 8-lane FMA chain from zero, hsum, then the scalar tail
 * over convert_portable's floats. T, R and DT are constants at each call
 * (the dispatchers below), so the loops unroll and the conversion inlines. */
_Static_assert(MM_DEC_TOKENS == 8 && MM_DEC_ROWS == 4, "dot_tokens_t is written for 8x2 / 4x4");

#define INL AVX2 static inline __attribute__((always_inline))

INL void dot_tokens_t(int T, int R, be_dtype DT, float acc[][MM_DEC_ROWS], const float *const x[],
                      const void *const w[], const void *const pf[], int n) {
    __m256 a[MM_DEC_TOKENS][MM_DEC_ROWS];
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++) a[t][r] = _mm256_setzero_ps();
    const size_t es = DT == BE_F32 ? 4 : 2;
    int i = 0;
    if (pf)
        for (; i + 32 <= n; i += 32) {
            prefetch_step(pf, R, i, es);
            for (int q = 0; q < 32; q += 8) {
                __m256 v[MM_DEC_ROWS];
                for (int r = 0; r < R; r++) v[r] = load8(DT, w[r], (size_t)(i + q));
                for (int t = 0; t < T; t++) {
                    __m256 u = _mm256_loadu_ps(x[t] + i + q);
                    __asm__("" : "+x"(u)); /* one load of x, not one per FMA */
                    for (int r = 0; r < R; r++) a[t][r] = _mm256_fmadd_ps(u, v[r], a[t][r]);
                }
            }
        }
    for (; i + 8 <= n; i += 8) {
        __m256 v[MM_DEC_ROWS];
        for (int r = 0; r < R; r++) v[r] = load8(DT, w[r], (size_t)i);
        for (int t = 0; t < T; t++) {
            __m256 u = _mm256_loadu_ps(x[t] + i);
            __asm__("" : "+x"(u));
            for (int r = 0; r < R; r++) a[t][r] = _mm256_fmadd_ps(u, v[r], a[t][r]);
        }
    }
    float tail[MM_DEC_ROWS][8];
    for (int r = 0; r < R && i < n; r++)
        convert_portable(tail[r], DT, (const unsigned char *)w[r] + (size_t)i * es,
                         (size_t)(n - i));
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++) {
            float s = cpu_hsum8(a[t][r]);
            for (int k = i; k < n; k++) s += x[t][k] * tail[r][k - i];
            acc[t][r] += s;
        }
}

/* One case per (tokens, rows) shape a table offers; DT is constant. */
#define DT_CASE(T, R, DT)                                                                          \
    case (T)*8 + (R):                                                                              \
        dot_tokens_t(T, R, DT, acc, x, w, pf, n);                                                  \
        break;
#define SHAPES_AVX2(DT)                                                                            \
    DT_CASE(1, 2, DT)                                                                              \
    DT_CASE(2, 2, DT)                                                                              \
    DT_CASE(3, 2, DT)                                                                              \
    DT_CASE(4, 2, DT) DT_CASE(5, 2, DT) DT_CASE(6, 2, DT) DT_CASE(1, 4, DT) DT_CASE(2, 4, DT)
#define DISPATCH(SHAPES)                                                                           \
    switch (dtype) {                                                                               \
        case BE_F16:                                                                               \
            switch (nt * 8 + nr) { SHAPES(BE_F16) }                                                \
            break;                                                                                 \
        case BE_BF16:                                                                              \
            switch (nt * 8 + nr) { SHAPES(BE_BF16) }                                               \
            break;                                                                                 \
        default:                                                                                   \
            switch (nt * 8 + nr) { SHAPES(BE_F32) }                                                \
            break;                                                                                 \
    }

/* 16 YMM registers: up to 6 tokens × 2 rows or 2 × 4 (12 or 8
 * accumulators, plus the weights and one x). */
AVX2 static void dot_tokens_avx2(float acc[][MM_DEC_ROWS], int nt, int nr, const float *const x[],
                                 be_dtype dtype, const void *const w[], const void *const pf[],
                                 int n) {
    DISPATCH(SHAPES_AVX2)
}

/* The decode batch with AVX-512F (cpu_kernels `dot_pairs`): the same 8-lane
 * FMA chains, two tokens' to a ZMM register. x comes packed (cpu.h): for
 * each 8 columns, token 2p's 8 floats then token 2p+1's, so one load gives
 * a pair; a weight row's 8 values are converted once into both halves.
 * Every lane is an independent FMA rounding as the 8-lane one does, so
 * each (token, row) pair gets dot_rows_avx2's exact arithmetic (the same
 * chain from zero, hsum, then the scalar tail) at half the instructions.
 * P pairs × R rows accumulators: 8 × 2, 4 × 4 or 2 × 8 (16 of 32). */
#define AVX512 __attribute__((target("avx2,fma,f16c,avx512f")))
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
            prefetch_step(pf, R, i, es);
            for (int q = 0; q < 32; q += 8) Z_STEP(i + q)
        }
    for (; i + 8 <= n; i += 8) Z_STEP(i)
#undef Z_STEP
    float tail[MM_PAIR_ROWS][8];
    for (int r = 0; r < R && i < n; r++)
        convert_portable(tail[r], DT, (const unsigned char *)w[r] + (size_t)i * es,
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
#undef DISPATCH
#undef SHAPES_AVX2
#undef DT_CASE
#undef INL

/* P·V by broadcasts: for 16 columns of V at a time, 6 rows × 2 vectors of
 * accumulators stay in registers over all keys; each key loads 2 vectors of
 * V and broadcasts 6 probabilities for 12 FMAs. */
AVX2 static void madd_block_avx2(float *const o[], const float *const p[], const float *v,
                                 size_t ldv, int n_keys, int n) {
    int d = 0;
    for (; d + 16 <= n; d += 16) {
        __m256 a[6][2];
        for (int t = 0; t < 6; t++) {
            a[t][0] = _mm256_loadu_ps(o[t] + d);
            a[t][1] = _mm256_loadu_ps(o[t] + d + 8);
        }
        for (int j = 0; j < n_keys; j++) {
            const float *vj = v + (size_t)j * ldv + d;
            __m256 v0 = _mm256_loadu_ps(vj), v1 = _mm256_loadu_ps(vj + 8);
            for (int t = 0; t < 6; t++) {
                __m256 pt = _mm256_broadcast_ss(p[t] + j);
                a[t][0] = _mm256_fmadd_ps(pt, v0, a[t][0]);
                a[t][1] = _mm256_fmadd_ps(pt, v1, a[t][1]);
            }
        }
        for (int t = 0; t < 6; t++) {
            _mm256_storeu_ps(o[t] + d, a[t][0]);
            _mm256_storeu_ps(o[t] + d + 8, a[t][1]);
        }
    }
    for (; d + 8 <= n; d += 8) {
        __m256 a[6];
        for (int t = 0; t < 6; t++) a[t] = _mm256_loadu_ps(o[t] + d);
        for (int j = 0; j < n_keys; j++) {
            __m256 v0 = _mm256_loadu_ps(v + (size_t)j * ldv + d);
            for (int t = 0; t < 6; t++)
                a[t] = _mm256_fmadd_ps(_mm256_broadcast_ss(p[t] + j), v0, a[t]);
        }
        for (int t = 0; t < 6; t++) _mm256_storeu_ps(o[t] + d, a[t]);
    }
    for (; d < n; d++)
        for (int t = 0; t < 6; t++)
            for (int j = 0; j < n_keys; j++) o[t][d] += p[t][j] * v[(size_t)j * ldv + d];
}

/* The entries both x86 tables share: AVX-512 does not change these. */
#define AVX2_SHARED                                                                                \
    .dot = dot_avx2, .convert = convert_avx2, .dot_rows = dot_rows_avx2,                           \
    .madd_block = madd_block_avx2, .dequant = cpu_dequant_avx2

static const cpu_kernels AVX2_KERNELS = {
    AVX2_SHARED,
    .isa = "avx2",
    .dot_block = dot_block_avx2,
    .dot_rows_q = cpu_dot_rows_q_avx2,
    .dot_tokens = dot_tokens_avx2,
    .dec_tokens = 6,
    .dec_tokens4 = 2,
    .dot_tokens_q = cpu_dot_tokens_q_avx2,
    .dec_qtokens = 4,
    .dec_qtokens4 = 2,
};

/* For CPUs with AVX-512F: the GEMM micro-kernel, the paired-token decode
 * batch (which takes every plain batch dot_tokens would) and the quantized
 * dots with two rows to a register. */
static const cpu_kernels AVX512_KERNELS = {
    AVX2_SHARED,
    .isa = "avx512",
    .dot_block = dot_block_avx512,
    .dot_rows_q = cpu_dot_rows_q_avx512,
    .dot_pairs = dot_pairs_avx512,
    .dot_tokens_q = cpu_dot_tokens_q_avx512,
    .dec_qtokens = 12,
    .dec_qtokens4 = 8,
};
#undef AVX2_SHARED

/* F16C is CPUID leaf 1, ECX bit 29 (clang's __builtin_cpu_supports does not
 * know "f16c"; the AVX2 check below already covers OS support for YMM state). */
static bool cpu_has_f16c(void) {
    unsigned eax, ebx, ecx, edx;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx >> 29 & 1);
}

const cpu_kernels *cpu_kernels_avx2(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c())
        return &AVX2_KERNELS;
    return NULL;
}

const cpu_kernels *cpu_kernels_avx512(void) {
    if (!cpu_kernels_avx2()) return NULL; /* it is built on the AVX2 kernels */
    return __builtin_cpu_supports("avx512f") ? &AVX512_KERNELS : NULL;
}

#else

const cpu_kernels *cpu_kernels_avx2(void) {
    return NULL;
}

const cpu_kernels *cpu_kernels_avx512(void) {
    return NULL;
}

#endif
