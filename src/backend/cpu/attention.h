/*
 * attention.h - the attention kernels of the CPU backend: one table per
 * instruction set (attention_portable.c, attention_avx2.c,
 * attention_avx512.c), driven by attention.c.
 *
 * The arithmetic is defined once, here, and every table does exactly it,
 * so all of them give the same bits (tests/test_backend.c compares them
 * with memcmp) and a query row's result never depends on how the rows,
 * keys or threads are cut into tiles:
 *
 *   score  s = scale · dot8(q, k), where dot8 runs 8 lane chains
 *          a_l = fma(q[d], k[d], a_l) over d ≡ l (mod 8), ascending from
 *          +0 (a ragged end padded with zeros), then sums them as cpu_hsum8
 *          does: t_l = a_l + a_{l+4}, u_l = t_l + t_{l+2}, u_0 + u_1;
 *   p      = attn_exp(s − m), the polynomial below (about 1 ulp);
 *   sum    of a key block's p: the same 8 chains (plain adds over keys
 *          j ≡ l mod 8, ascending) and the same three-step sum;
 *   P·V    o[d] = fma(p_j, v_j[d], o[d]) over the keys j in order.
 *
 * Keys and values may be f32 or f16 (widened exactly, F16C or
 * lv_f16_to_f32), read in place from the cache: nothing is staged.
 */
#ifndef LV_BACKEND_CPU_ATTENTION_H
#define LV_BACKEND_CPU_ATTENTION_H

#include "backend/backend.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *isa; /* the cpu_kernels table it goes with: "avx512", "avx2", "portable" */
    /* s[r·lds + j] = dot8(q[r], key j) for r < nr, j < nk; key j is the hd
     * elements of dtype (F32 or F16) at k + j·ldk elements (unscaled). */
    void (*scores)(float *s, size_t lds, const float *const q[], int nr, const void *k, be_dtype dt,
                   size_t ldk, int nk, int hd);
    /* p[j] = attn_exp(p[j]·scale − m) for j < n, in place, where m = max(*m,
     * max_j p[j]·scale) is stored back; returns the block sum (see above).
     * n >= 1. */
    float (*exp_sum)(float *p, int n, float scale, float *m);
    /* o[r][d] = fma(p[r][j], v_j[d], o[r][d]) for j < nk in order, r < nr,
     * d < hd; value j is at v + j·ldv elements of dtype (F32 or F16). */
    void (*pv)(float *const o[], const float *const p[], int nr, const void *v, be_dtype dt,
               size_t ldv, int nk, int hd);
    /* dst[i] = src[i] as f16, nearest even, saturated at ±65504 (NaN stays NaN). */
    void (*store_f16)(uint16_t *dst, const float *src, size_t n);
} attn_kernels;

const attn_kernels *attn_kernels_portable(void); /* never NULL */
const attn_kernels *attn_kernels_avx2(void);     /* NULL without AVX2+FMA+F16C */
const attn_kernels *attn_kernels_avx512(void);   /* NULL without those and AVX-512F */
const attn_kernels *attn_kernels_neon(void);     /* NULL off aarch64 (attention_neon.c) */

/* The definition of p = exp(x) the vector kernels reproduce lane for lane:
 * n = round(x·log2 e), r = x − n·ln2 (two fmas, Cody-Waite), e^r by its
 * degree-7 Taylor polynomial (Horner, fmas; |r| <= 0.35 leaves a remainder
 * below 5e-9), times 2^n built in the exponent bits. Inputs below -87 give
 * 0 (the softmax only takes x <= 0, so nothing overflows). */
#define ATTN_EXP_MIN  -87.0f
#define ATTN_LOG2E    1.44269504088896341f
#define ATTN_LN2_HI   0.693145751953125f /* ln 2 in 16 bits: n·LN2_HI is exact */
#define ATTN_LN2_LO   1.42860682030941723e-6f
#define ATTN_ROUND    12582912.0f /* 1.5·2^23: adding it rounds to an integer */
#define ATTN_EXP_C(i) (attn_exp_coef[i])
static const float attn_exp_coef[8] = {1.0f,      1.0f,       0.5f,       1.0f / 6,
                                       1.0f / 24, 1.0f / 120, 1.0f / 720, 1.0f / 5040};

static inline float attn_exp(float x) {
    if (x < ATTN_EXP_MIN) return 0.0f;
    float n = fmaf(x, ATTN_LOG2E, ATTN_ROUND) - ATTN_ROUND;
    float r = fmaf(n, -ATTN_LN2_HI, x);
    r = fmaf(n, -ATTN_LN2_LO, r);
    float p = ATTN_EXP_C(7);
    for (int i = 6; i >= 0; i--) p = fmaf(p, r, ATTN_EXP_C(i));
    union {
        uint32_t u;
        float f;
    } two = {.u = (uint32_t)((int32_t)n + 127) << 23};
    return p * two.f;
}

/* cpu_hsum8's order over 8 lane values. */
static inline float attn_sum8(const float a[8]) {
    float t[4], u[2];
    for (int l = 0; l < 4; l++) t[l] = a[l] + a[l + 4];
    for (int l = 0; l < 2; l++) u[l] = t[l] + t[l + 2];
    return u[0] + u[1];
}

#endif
