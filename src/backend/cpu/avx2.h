/*
 * avx2.h - what the AVX2 kernel files (kernels_avx2.c, dequant_avx2.c)
 * share, and the AVX-512 files take from them: the target attribute, the
 * one horizontal sum of an 8-lane accumulator, the prefetch step, and the
 * AVX2 kernels named outside their own file.
 *
 * Every matmul path ends an output's 8-lane FMA chain with cpu_hsum8, in
 * this order: that one order is part of why a row's result is the same
 * whatever n is (matmul.c), and the AVX-512 kernels end each half of a
 * register with it too, so they give the AVX2 bits.
 * Include only inside `#if defined(__x86_64__) && defined(__GNUC__)`.
 */
#ifndef LV_BACKEND_CPU_AVX2_H
#define LV_BACKEND_CPU_AVX2_H

#include "backend/cpu/kernels.h"

#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))

/* (lo + hi halves), then pairs, then the last two: a fixed order. */
AVX2 static inline float cpu_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The kernels read 32 elements of each of their rows per step; with pf they
 * prefetch the same elements of the rows they read next (1 cache line, 2
 * for f32). */
static inline __attribute__((always_inline)) void cpu_prefetch_step(const void *const pf[], int nr,
                                                                    int i, size_t es) {
    for (int r = 0; r < nr; r++) {
        const char *p = (const char *)pf[r] + (size_t)i * es;
        _mm_prefetch(p, _MM_HINT_T0);
        if (es == 4) _mm_prefetch(p + 64, _MM_HINT_T0);
    }
}

/* kernels_avx2.c: the float kernels both x86 tables use. */
float cpu_dot_avx2(const float *a, const float *b, int n);
void cpu_convert_avx2(float *dst, be_dtype dtype, const void *src, size_t n);
void cpu_dot_rows_avx2(float acc[], const float *x, be_dtype dtype, const void *const w[],
                       const void *const pf[], int n);
void cpu_madd_block_avx2(float *const o[], const float *const p[], const float *v, size_t ldv,
                         int n_keys, int n);
void cpu_quick_gelu_avx2(float *x, size_t n);
void cpu_gelu_tanh_avx2(float *x, size_t n);

/* dequant_avx2.c: the quantized kernels of the AVX2 table (dequant is
 * also the AVX-512 table's). */
void cpu_dequant_avx2(const be_weight *w, int row, int c0, int n, float *out);
void cpu_dot_rows_q_avx2(float acc[], const float *x, const be_weight *w, const int rows[], int c0,
                         int n);
void cpu_dot_tokens_q_avx2(float acc[][MM_DEC_ROWS], int nt, int nr, const float *x, size_t ldx,
                           const be_weight *w, const int rows[], int c0, int n);

/* The entries the AVX-512 table takes from the AVX2 table as they are (it
 * has no AVX-512 version of these kernels). Both tables list them through
 * this one macro, so the two cannot drift apart. */
#define AVX2_SHARED                                                                                \
    .dot = cpu_dot_avx2, .convert = cpu_convert_avx2, .dot_rows = cpu_dot_rows_avx2,               \
    .madd_block = cpu_madd_block_avx2, .dequant = cpu_dequant_avx2,                                \
    .quick_gelu = cpu_quick_gelu_avx2, .gelu_tanh = cpu_gelu_tanh_avx2

#endif
