/*
 * qdot_neon.c - the integer kernels of qdot.h for ARM64: sdot (the dotprod
 * extension, ARMv8.2-A and later: Neoverse, Apple M, Cortex-A55/A76 on) or,
 * on cores without it (Cortex-A53/A72), vmull_s8 and pairwise adds. The
 * kernel bodies are qdot_neon_impl.h, compiled once per variant;
 * qk_kernels_neon() picks by the kernel's HWCAP_ASIMDDP. Both give the
 * reference's bits (qdot_portable.c): exact integer lane sums, then the
 * same float operations per lane in the same order (tests/test_qdot.c,
 * under qemu-aarch64 -cpu max for sdot and -cpu cortex-a53 without).
 */
#include "backend/cpu/qdot.h"

#if defined(__aarch64__) && defined(__GNUC__)
#include <arm_neon.h>
#include "base/half.h"

#include <asm/hwcap.h>
#include <math.h>
#include <string.h>
#include <sys/auxv.h>

/* Quantizes one activation row (qdot.h): per 32-value block d = amax/127,
 * id = 1/d, codes rint(x·id) clamped to ±127 (vrndnq: to nearest, ties to
 * even, as rintf in the default mode), stored 4 to a lane per step. amax
 * uses vmaxnm, which like fmaxf ignores a NaN. */
static void quantize_neon(const qk_weight *w, const float *x, uint8_t *xq) {
    const size_t xgb = qk_xgroup_bytes(w);
    for (int g = 0; g < w->n_groups; g++) {
        uint8_t *codes = xq + (size_t)g * xgb;
        qk_xside *side = (qk_xside *)(void *)(codes + w->group);
        for (int l = 0; l < QK_LANES; l++) {
            if (qk_xlane_pad(w, codes, side, g, l)) continue;
            int c0 = g * w->group + l * w->lane;
            const float *blk = x + c0 / QK_BLOCK * QK_BLOCK;
            float32x4_t m = vdupq_n_f32(0.0f);
            for (int j = 0; j < QK_BLOCK; j += 4) m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(blk + j)));
            float amax = vmaxnmvq_f32(m);
            float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            const float32x4_t vid = vdupq_n_f32(id), lo = vdupq_n_f32(-127.0f),
                              hi = vdupq_n_f32(127.0f);
            int32x4_t s = vdupq_n_s32(0);
            for (int j = 0; j < w->lane; j += 8) { /* 8 values: steps j/4 and j/4 + 1 */
                int32x4_t q[2];
                for (int h = 0; h < 2; h++) {
                    float32x4_t v = vrndnq_f32(vmulq_f32(vld1q_f32(x + c0 + j + 4 * h), vid));
                    q[h] = vcvtq_s32_f32(vminq_f32(vmaxq_f32(v, lo), hi));
                    s = vaddq_s32(s, q[h]);
                }
                int8x8_t b = vmovn_s16(vcombine_s16(vmovn_s32(q[0]), vmovn_s32(q[1])));
                uint32x2_t b2 = vreinterpret_u32_s8(b);
                vst1_lane_u32((uint32_t *)(void *)(codes + 64 * (j / 4) + 4 * l), b2, 0);
                vst1_lane_u32((uint32_t *)(void *)(codes + 64 * (j / 4 + 1) + 4 * l), b2, 1);
            }
            int32_t S = vaddvq_s32(s);
            qk_xside_set(w, side, l, d, S);
        }
    }
}

/* 16 bytes as floats, zero- or sign-extended; 4 registers of 4 lanes. */
static inline __attribute__((always_inline)) void u8x16_f32(uint8x16_t b, float32x4_t f[4]) {
    uint16x8_t lo = vmovl_u8(vget_low_u8(b)), hi = vmovl_high_u8(b);
    f[0] = vcvtq_f32_u32(vmovl_u16(vget_low_u16(lo)));
    f[1] = vcvtq_f32_u32(vmovl_high_u16(lo));
    f[2] = vcvtq_f32_u32(vmovl_u16(vget_low_u16(hi)));
    f[3] = vcvtq_f32_u32(vmovl_high_u16(hi));
}

static inline __attribute__((always_inline)) void s8x16_f32(int8x16_t b, float32x4_t f[4]) {
    int16x8_t lo = vmovl_s8(vget_low_s8(b)), hi = vmovl_high_s8(b);
    f[0] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo)));
    f[1] = vcvtq_f32_s32(vmovl_high_s16(lo));
    f[2] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi)));
    f[3] = vcvtq_f32_s32(vmovl_high_s16(hi));
}

static inline float f16_at(const uint8_t *p) {
    return lv_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
}

/* The lane scales ws and mins wm (lanes 4q..4q+3 in [q]) of one group from
 * its side bytes: qk_lane_scales' values (the same conversions and
 * products), for the kernels of both variants. */
static inline __attribute__((always_inline)) void lane_scales(qk_format F, const qk_weight *w,
                                                              const uint8_t *side,
                                                              float32x4_t ws[4],
                                                              float32x4_t wm[4]) {
    for (int q = 0; q < 4; q++) wm[q] = vdupq_n_f32(0.0f);
    switch (F) {
        case QK_Q4_0:
        case QK_Q8_0:
            for (int h = 0; h < 2; h++) {
                float16x8_t d = vreinterpretq_f16_u8(vld1q_u8(side + 16 * h));
                ws[2 * h] = vcvt_f32_f16(vget_low_f16(d));
                ws[2 * h + 1] = vcvt_high_f32_f16(d);
            }
            return;
        case QK_Q4_K: { /* lanes 0..7 take d[0], dmin[0]; 8..15 d[1], dmin[1] */
            float32x4_t sc[4], m[4];
            u8x16_f32(vld1q_u8(side + 8), sc);
            u8x16_f32(vld1q_u8(side + 24), m);
            for (int q = 0; q < 4; q++) {
                float32x4_t d = vdupq_n_f32(f16_at(side + 2 * (q / 2)));
                float32x4_t dmin = vdupq_n_f32(f16_at(side + 4 + 2 * (q / 2)));
                ws[q] = vmulq_f32(d, sc[q]);
                wm[q] = vnegq_f32(vmulq_f32(dmin, m[q]));
            }
            return;
        }
        case QK_Q6_K: {
            float32x4_t sc[4];
            s8x16_f32(vld1q_s8((const int8_t *)side), sc);
            float32x4_t d = vdupq_n_f32(f16_at(side + 16));
            for (int q = 0; q < 4; q++) ws[q] = vmulq_f32(d, sc[q]);
            return;
        }
        default: { /* MLX: n = 512 / mlx_group scales, then n biases; lane l takes l·32 / group */
            int n = w->group / w->mlx_group;
            const float *s = (const float *)(const void *)side, *b = s + n;
            for (int q = 0; q < 4; q++) {
                if (n == 16) {
                    ws[q] = vld1q_f32(s + 4 * q);
                    wm[q] = vld1q_f32(b + 4 * q);
                } else if (n == 8) { /* lanes 4q..4q+3: entries 2q, 2q, 2q+1, 2q+1 */
                    float32x2_t s2 = vld1_f32(s + 2 * q), b2 = vld1_f32(b + 2 * q);
                    ws[q] = vcombine_f32(vdup_lane_f32(s2, 0), vdup_lane_f32(s2, 1));
                    wm[q] = vcombine_f32(vdup_lane_f32(b2, 0), vdup_lane_f32(b2, 1));
                } else { /* n == 4: entry q */
                    ws[q] = vld1q_dup_f32(s + q);
                    wm[q] = vld1q_dup_f32(b + q);
                }
            }
            return;
        }
    }
}

/* GCC compiles sdot inside functions that target it; clang's arm_neon.h
 * (14) declares it only when the whole build does (-march=...+dotprod). */
#if !defined(__clang__) || defined(__ARM_FEATURE_DOTPROD)
#define HAVE_SDOT 1
#define QN(name)  name##_dotprod
#ifdef __clang__
#define QN_TARGET
#else /* the architecture level arm_neon.h compiles its sdot intrinsics for */
#define QN_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))
#endif
#define QN_INL     QN_TARGET static inline __attribute__((always_inline))
#define QN_DOTPROD 1
#include "backend/cpu/qdot_neon_impl.h"
#undef QN
#undef QN_TARGET
#undef QN_INL
#undef QN_DOTPROD
#endif

#define QN(name) name##_mull
#define QN_TARGET
#define QN_INL     static inline __attribute__((always_inline))
#define QN_DOTPROD 0
#include "backend/cpu/qdot_neon_impl.h"
#undef QN
#undef QN_TARGET
#undef QN_INL
#undef QN_DOTPROD

/* y[i] = bias + qk_sum16(acc[i]): the halving tree with vector adds
 * (lanes l + l+8, then + l+4, then + l+2, then the last two). */
static void finish_neon(float *y, const float (*acc)[QK_LANES], const float *bias, int n) {
    for (int i = 0; i < n; i++) {
        const float *a = acc[i];
        float32x4_t lo = vaddq_f32(vld1q_f32(a), vld1q_f32(a + 8));
        float32x4_t hi = vaddq_f32(vld1q_f32(a + 4), vld1q_f32(a + 12));
        float32x4_t h4 = vaddq_f32(lo, hi);
        float32x2_t h2 = vadd_f32(vget_low_f32(h4), vget_high_f32(h4));
        y[i] = (bias ? bias[i] : 0.0f) + (vget_lane_f32(h2, 0) + vget_lane_f32(h2, 1));
    }
}

static const qk_kernels NEON_MULL = {
    .isa = "neon",
    .quantize = quantize_neon,
    .unpack = unpack_mull,
    .dot_block = dot_block_mull,
    .dot_rows = dot_rows_mull,
    .finish = finish_neon,
};

#ifdef HAVE_SDOT
static const qk_kernels NEON_DOTPROD = {
    .isa = "neon-dotprod",
    .quantize = quantize_neon,
    .unpack = unpack_dotprod,
    .dot_block = dot_block_dotprod,
    .dot_rows = dot_rows_dotprod,
    .finish = finish_neon,
};
#endif

const qk_kernels *qk_kernels_neon(void) {
#ifdef HAVE_SDOT
    if (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) return &NEON_DOTPROD;
#endif
    return &NEON_MULL;
}

#else

const qk_kernels *qk_kernels_neon(void) {
    return NULL;
}

#endif
