/*
 * neon.h - what the NEON kernel files (kernels_neon.c, dequant_neon.c)
 * share: the 8-lane float vector they compute with, its one horizontal sum,
 * conversions, and the kernels named outside their own file.
 *
 * The kernels.h contract is written in 8-lane FMA accumulators (the AVX2
 * YMM register). NEON registers hold 4 floats, so an 8-lane accumulator is
 * a pair of them (f32x8: lanes 0-3, then 4-7), each lane still one fused
 * multiply-add chain, and neon_hsum8 adds the lanes in cpu_hsum8's order
 * (avx2.h): lane i + lane i+4, then those pairs, then the last two. Every
 * kernel thus gives the AVX2 table's bits (tests/test_kernels_neon.c checks
 * both tables against one scalar model of that arithmetic).
 *
 * vmulq/vaddq are plain vector operators in GCC's arm_neon.h, which the
 * compiler could contract into FMAs: the build's -ffp-contract=off keeps
 * them (and the scalar tails) unfused, as the contract wants.
 * Include only inside `#if defined(__aarch64__) && defined(__GNUC__)`.
 */
#ifndef LV_BACKEND_CPU_NEON_H
#define LV_BACKEND_CPU_NEON_H

#include "backend/cpu/kernels.h"

#include <arm_neon.h>
#include <string.h>

#define NEON_INL static inline __attribute__((always_inline))

typedef struct {
    float32x4_t lo, hi; /* lanes 0-3, 4-7 */
} f32x8;

NEON_INL f32x8 f8_zero(void) {
    return (f32x8){vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
}

NEON_INL f32x8 f8_dup(float v) {
    return (f32x8){vdupq_n_f32(v), vdupq_n_f32(v)};
}

NEON_INL f32x8 f8_load(const float *p) {
    return (f32x8){vld1q_f32(p), vld1q_f32(p + 4)};
}

NEON_INL void f8_store(float *p, f32x8 v) {
    vst1q_f32(p, v.lo);
    vst1q_f32(p + 4, v.hi);
}

/* acc + a·b, each lane rounded once (AVX2's _mm256_fmadd_ps(a, b, acc)). */
NEON_INL f32x8 f8_fma(f32x8 acc, f32x8 a, f32x8 b) {
    return (f32x8){vfmaq_f32(acc.lo, a.lo, b.lo), vfmaq_f32(acc.hi, a.hi, b.hi)};
}

NEON_INL f32x8 f8_add(f32x8 a, f32x8 b) {
    return (f32x8){vaddq_f32(a.lo, b.lo), vaddq_f32(a.hi, b.hi)};
}

NEON_INL f32x8 f8_sub(f32x8 a, f32x8 b) {
    return (f32x8){vsubq_f32(a.lo, b.lo), vsubq_f32(a.hi, b.hi)};
}

NEON_INL f32x8 f8_mul(f32x8 a, f32x8 b) {
    return (f32x8){vmulq_f32(a.lo, b.lo), vmulq_f32(a.hi, b.hi)};
}

/* ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)): cpu_hsum8's order. */
NEON_INL float neon_hsum8(f32x8 v) {
    float32x4_t s = vaddq_f32(v.lo, v.hi);
    float32x2_t t = vadd_f32(vget_low_f32(s), vget_high_f32(s));
    return vget_lane_f32(t, 0) + vget_lane_f32(t, 1);
}

/* 8 weights of dtype starting at element i, as floats: f16 by the hardware
 * conversion (exact; a NaN keeps its payload with the quiet bit set, as
 * lv_f16_to_f32), bf16 by a 16-bit shift. Weights may sit at any byte
 * address, so they are loaded as bytes (vld1q_u16 or vld1q_f32 on such a
 * pointer would be a misaligned access in C's terms, which UBSan reports). */
NEON_INL f32x8 neon_load8(be_dtype dtype, const void *w, size_t i) {
    const unsigned char *p = w;
    if (dtype == BE_F32)
        return (f32x8){vreinterpretq_f32_u8(vld1q_u8(p + 4 * i)),
                       vreinterpretq_f32_u8(vld1q_u8(p + 4 * i + 16))};
    uint16x8_t h = vreinterpretq_u16_u8(vld1q_u8(p + 2 * i));
    if (dtype == BE_F16) {
        float16x8_t f = vreinterpretq_f16_u16(h);
        return (f32x8){vcvt_f32_f16(vget_low_f16(f)), vcvt_high_f32_f16(f)};
    }
    return (f32x8){vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16)),
                   vreinterpretq_f32_u32(vshll_high_n_u16(h, 16))};
}

/* 8 bytes as floats, zero- or sign-extended. */
NEON_INL f32x8 f8_from_u8(uint8x8_t b) {
    uint16x8_t h = vmovl_u8(b);
    return (f32x8){vcvtq_f32_u32(vmovl_u16(vget_low_u16(h))), vcvtq_f32_u32(vmovl_high_u16(h))};
}

NEON_INL f32x8 f8_from_s8(int8x8_t b) {
    int16x8_t h = vmovl_s8(b);
    return (f32x8){vcvtq_f32_s32(vmovl_s16(vget_low_s16(h))), vcvtq_f32_s32(vmovl_high_s16(h))};
}

/* The kernels read 32 elements of each of their rows per step; with pf they
 * prefetch the same elements of the rows they read next (1 cache line, 2
 * for f32), as the AVX2 kernels do. */
NEON_INL void neon_prefetch_step(const void *const pf[], int nr, int i, size_t es) {
    for (int r = 0; r < nr; r++) {
        const char *p = (const char *)pf[r] + (size_t)i * es;
        __builtin_prefetch(p, 0, 3);
        if (es == 4) __builtin_prefetch(p + 64, 0, 3);
    }
}

/* dequant_neon.c: the quantized kernels of the NEON table. */
void cpu_dequant_neon(const be_weight *w, int row, int c0, int n, float *out);
void cpu_dot_rows_q_neon(float acc[], const float *x, const be_weight *w, const int rows[], int c0,
                         int n);
void cpu_dot_tokens_q_neon(float acc[][MM_DEC_ROWS], int nt, int nr, const float *x, size_t ldx,
                           const be_weight *w, const int rows[], int c0, int n);

#endif
