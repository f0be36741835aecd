/*
 * dequant_avx2.h - the decoding steps the AVX2 quantized kernels
 * (dequant_avx2.c) are built from and the AVX-512 ones (dequant_avx512.c)
 * reuse: block scales, MLX codes and side data, Q4_K/Q5_K sub-block
 * scales, row addressing and the ggml type dispatch. Each is exact
 * (widenings, f16 -> f32), so both files decode the same values.
 * Include only inside `#if defined(__x86_64__) && defined(__GNUC__)`.
 */
#ifndef LV_BACKEND_CPU_DEQUANT_AVX2_H
#define LV_BACKEND_CPU_DEQUANT_AVX2_H

#include "backend/cpu/avx2.h"

#include <string.h>

AVX2 static inline float f16_at(const unsigned char *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* 8 bytes at p, zero- or sign-extended to int32 lanes. */
AVX2 static inline __m256i u8x8(const unsigned char *p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
}

AVX2 static inline __m256i i8x8(const unsigned char *p) {
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p));
}

/* A scale or bias of an MLX weight's side data. */
AVX2 static inline float side_at(be_dtype dt, const unsigned char *p, size_t i) {
    if (dt == BE_F32) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    if (dt == BE_F16) return _cvtsh_ss(h);
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* MLX codes j..j+7 of a row (j a multiple of 8) as int32 lanes. Eight codes
 * are exactly `bits` bytes of the LSB-first stream, starting on a byte. */
AVX2 static inline __m256i mlx_codes8(const unsigned char *row, int bits, int j) {
    const unsigned char *p = row + (size_t)j * bits / 8;
    if (bits == 8) return u8x8(p);
    if (bits == 4) { /* code k in bits 4k..4k+3 of the word */
        uint32_t word;
        memcpy(&word, p, 4);
        return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)word),
                                                  _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
                                _mm256_set1_epi32(0xF));
    }
    uint64_t win = 0; /* 2, 3, 5, 6 bits: at most 48 bits, read exactly (LE) */
    for (int k = bits - 1; k >= 0; k--) win = win << 8 | p[k];
    uint32_t mask = (1u << bits) - 1;
    return _mm256_setr_epi32((int)(win & mask), (int)(win >> bits & mask),
                             (int)(win >> 2 * bits & mask), (int)(win >> 3 * bits & mask),
                             (int)(win >> 4 * bits & mask), (int)(win >> 5 * bits & mask),
                             (int)(win >> 6 * bits & mask), (int)(win >> 7 * bits & mask));
}

/* Group gi's scale and bias. */
AVX2 static inline __attribute__((always_inline)) void mlx_side(const be_quant *q, size_t gi,
                                                                float *s, float *b) {
    *s = side_at(q->scale_dtype, q->scales, gi);
    *b = side_at(q->scale_dtype, q->biases, gi);
}

/* Sub-block s's 6-bit scale and min (ggml get_scale_min_k4; see quant.c). */
static inline void scale_min_k4(int s, const unsigned char *S, int *sc, int *m) {
    if (s < 4) {
        *sc = S[s] & 63;
        *m = S[s + 4] & 63;
    } else {
        *sc = (S[s + 4] & 0xF) | ((S[s - 4] >> 6) << 4);
        *m = (S[s + 4] >> 4) | ((S[s] >> 6) << 4);
    }
}

static inline const unsigned char *qrow(const be_weight *w, int row) {
    return (const unsigned char *)w->data + (size_t)row * w->row_bytes;
}

/* Runs BODY(DT) with DT the ggml block type dt as a constant, so that
 * ggml_block is specialised per type: one switch per call, not per block. */
#define GGML_DISPATCH(dt, BODY)                                                                    \
    switch (dt) {                                                                                  \
        case BE_Q8_0:                                                                              \
            BODY(BE_Q8_0) break;                                                                   \
        case BE_Q4_0:                                                                              \
            BODY(BE_Q4_0) break;                                                                   \
        case BE_Q4_1:                                                                              \
            BODY(BE_Q4_1) break;                                                                   \
        case BE_Q4_K:                                                                              \
            BODY(BE_Q4_K) break;                                                                   \
        case BE_Q5_K:                                                                              \
            BODY(BE_Q5_K) break;                                                                   \
        default:                                                                                   \
            BODY(BE_Q6_K) break;                                                                   \
    }

#endif
