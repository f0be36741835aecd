/*
 * avx2.h - what the AVX2 kernel files share: the target attribute and the
 * one horizontal sum of an 8-lane accumulator.
 *
 * Every matmul path (dot_block, dot_rows, dot_tokens in kernels.c; the
 * quantized ones in dequant.c) ends an output's 8-lane FMA chain with
 * cpu_hsum8, in this order: that one order is part of why a row's result is
 * the same whatever n is (matmul.c), so it lives in one place.
 * Include only inside `#if defined(__x86_64__) && defined(__GNUC__)`.
 */
#ifndef LV_BACKEND_CPU_AVX2_H
#define LV_BACKEND_CPU_AVX2_H

#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))

/* (lo + hi halves), then pairs, then the last two: a fixed order. */
AVX2 static inline float cpu_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#endif
