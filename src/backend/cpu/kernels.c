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

/* Converts w in chunks to a stack buffer, keeping one set of lanes across
 * chunks so the sum order does not depend on the chunk size. */
static float dot_w_portable(const float *x, be_dtype dtype, const void *w, int n) {
    enum { CHUNK = 256 };
    float buf[CHUNK], l[LANES] = {0}, tail = 0;
    size_t esize = dtype == BE_F32 ? 4 : 2;
    for (int c = 0; c < n; c += CHUNK) {
        int m = n - c < CHUNK ? n - c : CHUNK, i = 0;
        convert_portable(buf, dtype, (const unsigned char *)w + (size_t)c * esize, (size_t)m);
        for (; i + LANES <= m; i += LANES)
            for (int j = 0; j < LANES; j++) l[j] += x[c + i + j] * buf[i + j];
        for (; i < m; i++) tail += x[c + i] * buf[i];
    }
    return sum_lanes(l) + tail;
}

static void dot_block_portable(float acc[][MM_BLOCK_ROWS], const float *const x[],
                               const float *const w[], int n) {
    for (int t = 0; t < MM_BLOCK_TOKENS; t++)
        for (int r = 0; r < MM_BLOCK_ROWS; r++) acc[t][r] += dot_portable(x[t], w[r], n);
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
    .dot_w = dot_w_portable,
    .convert = convert_portable,
    .dot_block = dot_block_portable,
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
#include <cpuid.h>
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
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
    float s = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

AVX2 static float dot_w_avx2(const float *x, be_dtype dtype, const void *w, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load8(dtype, w, (size_t)i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), load8(dtype, w, (size_t)i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), load8(dtype, w, (size_t)i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), load8(dtype, w, (size_t)i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load8(dtype, w, (size_t)i), s0);
    float s = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    if (i < n) {
        float tail[8];
        convert_portable(tail, dtype,
                         (const unsigned char *)w + (size_t)i * (dtype == BE_F32 ? 4 : 2),
                         (size_t)(n - i));
        for (int j = 0; i + j < n; j++) s += x[i + j] * tail[j];
    }
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

/* 6 tokens × 2 rows: 12 accumulators in registers; each step loads 2 w and
 * 6 x vectors for 12 FMAs, enough independent FMAs to cover their latency. */
_Static_assert(MM_BLOCK_TOKENS == 6 && MM_BLOCK_ROWS == 2, "dot_block_avx2 is written for 6x2");

AVX2 static void dot_block_avx2(float acc[][MM_BLOCK_ROWS], const float *const x[],
                                const float *const w[], int n) {
    __m256 a[6][2];
    for (int t = 0; t < 6; t++) a[t][0] = a[t][1] = _mm256_setzero_ps();
    const float *w0 = w[0], *w1 = w[1];
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
    for (int t = 0; t < 6; t++)
        for (int r = 0; r < 2; r++) {
            float s = hsum(a[t][r]);
            for (int k = i; k < n; k++) s += x[t][k] * w[r][k];
            acc[t][r] += s;
        }
}

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

static const cpu_kernels AVX2_KERNELS = {
    .isa = "avx2",
    .dot = dot_avx2,
    .dot_w = dot_w_avx2,
    .convert = convert_avx2,
    .dot_block = dot_block_avx2,
    .madd_block = madd_block_avx2,
    .dequant = cpu_dequant_avx2,
    .gemv_q = cpu_gemv_q_avx2,
};

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

#else

const cpu_kernels *cpu_kernels_avx2(void) {
    return NULL;
}

#endif
