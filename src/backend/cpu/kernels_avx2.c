/*
 * kernels_avx2.c - the CPU backend's AVX2+FMA+F16C kernel table (kernels.h
 * `cpu_kernels`): the float kernels here, the quantized ones in
 * dequant_avx2.c.
 *
 * The functions carry the AVX2 target attribute (avx2.h) instead of needing
 * -mavx2 for the whole build, and cpu_kernels_avx2() hands the table out
 * only after __builtin_cpu_supports confirms the running CPU (and OS) has
 * the features. All loads are unaligned loads: weights are mmapped tensors
 * at arbitrary offsets.
 *
 * Every matmul kernel gives each (token, row) output the same arithmetic:
 * one 8-lane FMA chain from zero over the full 8-column blocks, cpu_hsum8,
 * then the scalar tail. The AVX-512 table (kernels_avx512.c) runs these
 * chains two to a register, and takes dot, convert, dot_rows and
 * madd_block from here (and dequant from dequant_avx2.c) as they are:
 * AVX2_SHARED in avx2.h.
 */
#include "backend/cpu/kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include "backend/cpu/avx2.h"

#include <cpuid.h>
#include <string.h>

/* 8 weights of dtype starting at element i, as floats. */
AVX2 static inline __m256 load8(be_dtype dtype, const void *w, size_t i) {
    const unsigned char *p = w;
    if (dtype == BE_F32) return _mm256_loadu_ps((const float *)(p + 4 * i));
    __m128i h = _mm_loadu_si128((const __m128i *)(p + 2 * i));
    if (dtype == BE_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AVX2 float cpu_dot_avx2(const float *a, const float *b, int n) {
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

AVX2 void cpu_convert_avx2(float *dst, be_dtype dtype, const void *src, size_t n) {
    if (dtype == BE_F32) {
        memcpy(dst, src, n * sizeof *dst);
        return;
    }
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8(dtype, src, i));
    cpu_convert_portable(dst + i, dtype, (const unsigned char *)src + 2 * i, n - i);
}

/* v·σ(-z) (kernels.h) on 8 floats: the portable steps lane by lane. */
AVX2 static inline __m256 sigmoid_gate8(__m256 v, __m256 z) {
    z = _mm256_min_ps(_mm256_max_ps(z, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(z, _mm256_set1_ps(1.44269504f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693145752f), z);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(-1.42860677e-6f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i bits =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 e = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_mul_ps(v, _mm256_div_ps(one, _mm256_add_ps(one, e)));
}

/* quick_gelu (kernels.h) on 8 floats: cpu_quick_gelu1's steps lane by lane. */
AVX2 static inline __m256 quick_gelu8(__m256 v) {
    /* -(1.702·v): the same rounding */
    return sigmoid_gate8(v, _mm256_mul_ps(_mm256_set1_ps(-1.702f), v));
}

/* gelu_tanh (kernels.h) on 8 floats: cpu_gelu_tanh1's steps lane by lane. */
AVX2 static inline __m256 gelu_tanh8(__m256 v) {
    __m256 t = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
    __m256 u = _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), t, v);
    return sigmoid_gate8(v, _mm256_mul_ps(_mm256_set1_ps(-1.59576912f), u));
}

AVX2 void cpu_gelu_tanh_avx2(float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, gelu_tanh8(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) x[i] = cpu_gelu_tanh1(x[i]);
}

AVX2 void cpu_quick_gelu_avx2(float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, quick_gelu8(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) x[i] = cpu_quick_gelu1(x[i]);
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

/* dot_panel (kernels.h) with AVX2: the 8 rows as 4 passes of 6 tokens × 2
 * rows (12 accumulators, as dot_block_avx2), the rows' chunks read from
 * the packed panel (aligned, contiguous) and the tokens' x from L1 on
 * every pass; each output ends with cpu_hsum8 and the scalar tail. */
AVX2 static void dot_panel_avx2(float *y, size_t ldy, const float *const x[], const float *wp,
                                int n) {
    for (int q = 0; q < 4; q++) {
        __m256 a[6][2];
        for (int t = 0; t < 6; t++) a[t][0] = a[t][1] = _mm256_setzero_ps();
        const float *p = wp + 16 * q;
        int i = 0;
        for (; i + 8 <= n; i += 8, p += 64) {
            __m256 v0 = _mm256_load_ps(p), v1 = _mm256_load_ps(p + 8);
            for (int t = 0; t < 6; t++) {
                __m256 u = _mm256_loadu_ps(x[t] + i);
                __asm__("" : "+x"(u)); /* one load of x, not one per FMA */
                a[t][0] = _mm256_fmadd_ps(u, v0, a[t][0]);
                a[t][1] = _mm256_fmadd_ps(u, v1, a[t][1]);
            }
        }
        for (int t = 0; t < 6; t++)
            for (int h = 0; h < 2; h++) {
                float s = cpu_hsum8(a[t][h]);
                for (int k = i; k < n; k++) s += x[t][k] * p[8 * h + (k - i)];
                y[t * ldy + 2 * q + h] += 0.0f + s;
            }
    }
}

/* 1 token × 8 rows: one accumulator per row as in dot_block_avx2 (8
 * independent FMA chains), each step loading 1 x and 8 w vectors. Weights
 * are converted by load8, which is what cpu_convert_avx2 fills the GEMM panel
 * with; the tail goes through cpu_convert_portable, as the panel's does. With
 * pf, each cache line of the next rows is prefetched as the same line of
 * these rows is read: 8 short rows at once are 8 streams, which the
 * hardware prefetchers follow less well than one long one. */
_Static_assert(MM_GEMV_ROWS == 8, "cpu_dot_rows_avx2 is written for 8 rows");

AVX2 void cpu_dot_rows_avx2(float acc[], const float *x, be_dtype dtype, const void *const w[],
                            const void *const pf[], int n) {
    __m256 a[8];
    for (int r = 0; r < 8; r++) a[r] = _mm256_setzero_ps();
    int i = 0;
#define ES(DT) ((DT) == BE_F32 ? 4 : 2)
#define DOT_ROWS_LOOP(DT)                                                                          \
    {                                                                                              \
        if (pf)                                                                                    \
            for (; i + 32 <= n; i += 32) {                                                         \
                cpu_prefetch_step(pf, 8, i, ES(DT));                                               \
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
            cpu_convert_portable(tail, dtype, (const unsigned char *)w[r] + (size_t)i * esize,
                                 (size_t)(n - i));
            for (int k = i; k < n; k++) s += x[k] * tail[k - i];
        }
        acc[r] += s;
    }
}

/* T tokens × R rows (R = 2 or 4), weights converted by load8 as they are
 * read (once per T tokens, no panel): T·R accumulators, each step R w and
 * T x loads for T·R FMAs. Every (token, row) pair gets cpu_dot_rows_avx2's
 * arithmetic: one 8-lane FMA chain from zero, hsum, then the scalar tail
 * over cpu_convert_portable's floats. T, R and DT are constants at each call
 * (the dispatchers below), so the loops unroll and the conversion inlines. */
_Static_assert(MM_DEC_TOKENS == 8 && MM_DEC_ROWS == 4, "dot_tokens_t holds up to 8x4");

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
            cpu_prefetch_step(pf, R, i, es);
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
        cpu_convert_portable(tail[r], DT, (const unsigned char *)w[r] + (size_t)i * es,
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
    DISPATCH(SHAPES_AVX2);
}

/* P·V by broadcasts: for 16 columns of V at a time, 6 rows × 2 vectors of
 * accumulators stay in registers over all keys; each key loads 2 vectors of
 * V and broadcasts 6 probabilities for 12 FMAs. */
AVX2 void cpu_madd_block_avx2(float *const o[], const float *const p[], const float *v, size_t ldv,
                              int n_keys, int n) {
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

static const cpu_kernels AVX2_KERNELS = {
    AVX2_SHARED,
    .isa = "avx2",
    .dot_block = dot_block_avx2,
    .dot_panel = dot_panel_avx2,
    .dot_rows_q = cpu_dot_rows_q_avx2,
    .dot_tokens = dot_tokens_avx2,
    .dec_tokens = 6,
    .dec_tokens4 = 2,
    .dot_tokens_q = cpu_dot_tokens_q_avx2,
    .dec_qtokens = 4,
    .dec_qtokens4 = 2,
};

/* F16C is CPUID leaf 1, ECX bit 29 (clang's __builtin_cpu_supports does not
 * know "f16c"; the AVX2 check below already covers OS support for YMM state). */
/* CPUID once: the table getters run per op (attention.c picks its table
 * from the backend's at every call), and under a hypervisor each CPUID is a
 * VM exit of microseconds: 8% of a SmolVLM-256M decode step before this. */
static bool cpu_has_f16c(void) {
    static _Atomic int known; /* 0: not asked yet, 1: no, 2: yes */
    int k = known;
    if (!k) {
        unsigned eax, ebx, ecx, edx;
        k = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx >> 29 & 1) ? 2 : 1;
        known = k;
    }
    return k == 2;
}

const cpu_kernels *cpu_kernels_avx2(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c())
        return &AVX2_KERNELS;
    return NULL;
}

#else

const cpu_kernels *cpu_kernels_avx2(void) {
    return NULL;
}

#endif
