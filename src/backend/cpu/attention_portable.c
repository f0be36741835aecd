/*
 * attention_portable.c - the attention kernels in plain C (attention.h):
 * the arithmetic the vector tables reproduce, written out one lane at a
 * time, for CPUs without AVX2 and as the tests' yardstick of bits.
 */
#include "backend/cpu/attention.h"
#include "base/half.h"

static inline float elem(be_dtype dt, const void *base, size_t i) {
    return dt == BE_F16 ? lv_f16_to_f32(((const uint16_t *)base)[i]) : ((const float *)base)[i];
}

static void scores_portable(float *s, size_t lds, const float *const q[], int nr, const void *k,
                            be_dtype dt, size_t ldk, int nk, int hd) {
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < nk; j++) {
            float a[8] = {0};
            for (int d = 0; d < hd; d++)
                a[d % 8] = fmaf(q[r][d], elem(dt, k, (size_t)j * ldk + d), a[d % 8]);
            s[(size_t)r * lds + j] = attn_sum8(a);
        }
}

static float exp_sum_portable(float *p, int n, float scale, float *m) {
    float mx = *m;
    for (int j = 0; j < n; j++) {
        p[j] *= scale;
        if (p[j] > mx) mx = p[j];
    }
    float a[8] = {0};
    for (int j = 0; j < n; j++) {
        p[j] = attn_exp(p[j] - mx);
        a[j % 8] += p[j];
    }
    *m = mx;
    return attn_sum8(a);
}

static void pv_portable(float *const o[], const float *const p[], int nr, const void *v,
                        be_dtype dt, size_t ldv, int nk, int hd) {
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < nk; j++)
            for (int d = 0; d < hd; d++)
                o[r][d] = fmaf(p[r][j], elem(dt, v, (size_t)j * ldv + d), o[r][d]);
}

static void store_f16_portable(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float f = src[i];
        if (f > 65504.0f) f = 65504.0f; /* NaN compares false and stays NaN */
        if (f < -65504.0f) f = -65504.0f;
        dst[i] = lv_f32_to_f16(f);
    }
}

const attn_kernels *attn_kernels_portable(void) {
    static const attn_kernels t = {.isa = "portable",
                                   .scores = scores_portable,
                                   .exp_sum = exp_sum_portable,
                                   .pv = pv_portable,
                                   .store_f16 = store_f16_portable};
    return &t;
}
