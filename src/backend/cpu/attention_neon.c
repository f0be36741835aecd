/*
 * attention_neon.c - the attention kernels with NEON (attention.h defines
 * what they compute; the portable table's bits exactly), for aarch64.
 *
 * Each 8-lane chain of attention.h is a pair of 4-lane registers (f32x8,
 * neon.h) summed in cpu_hsum8's order; attn_exp runs lane by lane with the
 * same fmas; P·V keeps 4 columns per register, one fma chain per column.
 * Keys and values are read as bytes (any alignment) and f16 is widened by
 * the hardware conversion, exact like lv_f16_to_f32.
 */
#include "backend/cpu/attention.h"

#if defined(__aarch64__) && defined(__GNUC__)
#include "backend/cpu/neon.h"
#include "backend/quant.h"
#include "base/half.h"

/* 8 elements of a row of dtype at column c; the last n < 8 zero-padded. */
NEON_INL f32x8 row8(be_dtype dt, const void *row, int c) {
    return neon_load8(dt == BE_F16 ? BE_F16 : BE_F32, row, (size_t)c);
}

NEON_INL f32x8 row_tail(be_dtype dt, const void *row, int c, int n) {
    float t[8] = {0};
    for (int i = 0; i < n; i++)
        t[i] = dt == BE_F16 ? be_plain_at(BE_F16, row, (size_t)(c + i))
                            : be_plain_at(BE_F32, row, (size_t)(c + i));
    return f8_load(t);
}

static void scores_neon(float *s, size_t lds, const float *const q[], int nr, const void *k,
                        be_dtype dt, size_t ldk, int nk, int hd) {
    size_t es = dt == BE_F16 ? 2 : 4;
    int hd8 = hd / 8 * 8;
    for (int j = 0; j < nk; j++) {
        const unsigned char *kj = (const unsigned char *)k + (size_t)j * ldk * es;
        for (int r0 = 0; r0 < nr; r0 += 4) {
            int n = nr - r0 < 4 ? nr - r0 : 4;
            f32x8 a[4] = {f8_zero(), f8_zero(), f8_zero(), f8_zero()};
            int d = 0;
            for (; d < hd8; d += 8) {
                f32x8 kv = row8(dt, kj, d);
                for (int r = 0; r < n; r++) a[r] = f8_fma(a[r], f8_load(q[r0 + r] + d), kv);
            }
            if (d < hd) {
                f32x8 kv = row_tail(dt, kj, d, hd - d);
                for (int r = 0; r < n; r++)
                    a[r] = f8_fma(a[r], row_tail(BE_F32, q[r0 + r], d, hd - d), kv);
            }
            for (int r = 0; r < n; r++) s[(size_t)(r0 + r) * lds + j] = neon_hsum8(a[r]);
        }
    }
}

/* attn_exp on 4 lanes: the same fmas and constants (attention.h). */
NEON_INL float32x4_t exp4(float32x4_t x) {
    const float32x4_t round = vdupq_n_f32(ATTN_ROUND);
    float32x4_t n = vsubq_f32(vfmaq_f32(round, x, vdupq_n_f32(ATTN_LOG2E)), round);
    float32x4_t r = vfmaq_f32(x, n, vdupq_n_f32(-ATTN_LN2_HI));
    r = vfmaq_f32(r, n, vdupq_n_f32(-ATTN_LN2_LO));
    float32x4_t p = vdupq_n_f32(ATTN_EXP_C(7));
    for (int i = 6; i >= 0; i--) p = vfmaq_f32(vdupq_n_f32(ATTN_EXP_C(i)), p, r);
    int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    float32x4_t y = vmulq_f32(p, vreinterpretq_f32_s32(e));
    uint32x4_t low = vcltq_f32(x, vdupq_n_f32(ATTN_EXP_MIN));
    return vbslq_f32(low, vdupq_n_f32(0.0f), y);
}

/* The max in the reference's scalar order (a NaN never replaces it), then
 * the exps 8 at a time, summed in 8 chains over the keys (a ragged end
 * padded with zeros: adding +0 to a sum of non-negative p changes nothing). */
static float exp_sum_neon(float *p, int n, float scale, float *m) {
    float mx = *m;
    for (int j = 0; j < n; j++) {
        p[j] *= scale;
        if (p[j] > mx) mx = p[j];
    }
    const float32x4_t vm = vdupq_n_f32(mx);
    f32x8 a = f8_zero();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        f32x8 e = {exp4(vsubq_f32(vld1q_f32(p + j), vm)),
                   exp4(vsubq_f32(vld1q_f32(p + j + 4), vm))};
        f8_store(p + j, e);
        a = f8_add(a, e);
    }
    if (j < n) {
        float t[8] = {0};
        for (int i = 0; i < n - j; i++) t[i] = attn_exp(p[j + i] - mx);
        for (int i = 0; i < n - j; i++) p[j + i] = t[i];
        a = f8_add(a, f8_load(t));
    }
    *m = mx;
    return neon_hsum8(a);
}

/* 4 columns of value row j as floats. */
NEON_INL float32x4_t val4(be_dtype dt, const unsigned char *vj, int d) {
    if (dt == BE_F16) return vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(vj + 2 * (size_t)d)));
    return vreinterpretq_f32_u8(vld1q_u8(vj + 4 * (size_t)d));
}

static void pv_neon(float *const o[], const float *const p[], int nr, const void *v, be_dtype dt,
                    size_t ldv, int nk, int hd) {
    size_t es = dt == BE_F16 ? 2 : 4;
    for (int r = 0; r < nr; r++) {
        int d = 0;
        for (; d + 16 <= hd; d += 16) {
            float32x4_t a[4];
            for (int c = 0; c < 4; c++) a[c] = vld1q_f32(o[r] + d + 4 * c);
            for (int j = 0; j < nk; j++) {
                const unsigned char *vj = (const unsigned char *)v + (size_t)j * ldv * es;
                float32x4_t pj = vdupq_n_f32(p[r][j]);
                for (int c = 0; c < 4; c++) a[c] = vfmaq_f32(a[c], pj, val4(dt, vj, d + 4 * c));
            }
            for (int c = 0; c < 4; c++) vst1q_f32(o[r] + d + 4 * c, a[c]);
        }
        for (; d + 4 <= hd; d += 4) {
            float32x4_t a = vld1q_f32(o[r] + d);
            for (int j = 0; j < nk; j++)
                a = vfmaq_f32(a, vdupq_n_f32(p[r][j]),
                              val4(dt, (const unsigned char *)v + (size_t)j * ldv * es, d));
            vst1q_f32(o[r] + d, a);
        }
        for (; d < hd; d++)
            for (int j = 0; j < nk; j++)
                o[r][d] = fmaf(p[r][j], be_plain_at(dt, v, (size_t)j * ldv + d), o[r][d]);
    }
}

/* Clamped to ±65504 (vmin/vmax keep a NaN), then the hardware's f32 -> f16,
 * nearest even; a NaN, whose payload handling is the library's to define,
 * goes through lv_f32_to_f16. */
static void store_f16_neon(uint16_t *dst, const float *src, size_t n) {
    const float32x4_t hi = vdupq_n_f32(65504.0f), lo = vdupq_n_f32(-65504.0f);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t f = vld1q_f32(src + i);
        if (vminvq_u32(vceqq_f32(f, f)) == 0) break; /* a NaN: the scalar loop from here */
        float16x4_t h = vcvt_f16_f32(vmaxq_f32(vminq_f32(f, hi), lo));
        vst1_u16(dst + i, vreinterpret_u16_f16(h));
    }
    for (; i < n; i++) {
        float f = src[i];
        if (f > 65504.0f) f = 65504.0f;
        if (f < -65504.0f) f = -65504.0f;
        dst[i] = lv_f32_to_f16(f);
    }
}

const attn_kernels *attn_kernels_neon(void) {
    static const attn_kernels t = {.isa = "neon",
                                   .scores = scores_neon,
                                   .exp_sum = exp_sum_neon,
                                   .pv = pv_neon,
                                   .store_f16 = store_f16_neon};
    return &t;
}

#else

const attn_kernels *attn_kernels_neon(void) {
    return NULL;
}

#endif
