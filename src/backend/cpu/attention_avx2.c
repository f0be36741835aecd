/*
 * attention_avx2.c - the attention kernels with AVX2+FMA+F16C (attention.h
 * defines what they compute; the portable table's bits exactly).
 *
 * scores: 4 rows × 2 keys in 8 YMM accumulators, one 8-lane chain each
 * (the 8 columns of one (row, key) pair), keys widened from f16 once for
 * the 4 rows; the 8 chains are then summed together, in cpu_hsum8's
 * order for each, by three shuffle-and-add steps. pv: 4 rows × 16 columns,
 * each value row loaded (and widened) once for the 4 rows.
 */
#include "backend/cpu/attention.h"
#include "backend/cpu/kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include "base/half.h"

#include <immintrin.h>
#include <string.h>

#define AVX2   __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))

/* 8 elements of a row of dtype at column c, as floats. */
AVX2 INLINE __m256 load8(be_dtype dt, const void *row, int c) {
    if (dt == BE_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)row + c / 8));
    return _mm256_loadu_ps((const float *)row + c);
}

/* The same for the last hd % 8 columns, zero-padded. */
AVX2 INLINE __m256 load_tail(be_dtype dt, const void *row, int c, int n) {
    float t[8] = {0};
    for (int i = 0; i < n; i++)
        t[i] = dt == BE_F16 ? lv_f16_to_f32(((const uint16_t *)row)[c + i])
                            : ((const float *)row)[c + i];
    return _mm256_loadu_ps(t);
}

/* out[a] = the cpu_hsum8-ordered sum of a[a]'s lanes, a < 8. */
AVX2 INLINE void sum8x8(const __m256 a[8], float out[8]) {
    __m256 t[4], u[2];
    for (int p = 0; p < 4; p++)
        t[p] = _mm256_add_ps(_mm256_permute2f128_ps(a[2 * p], a[2 * p + 1], 0x20),
                             _mm256_permute2f128_ps(a[2 * p], a[2 * p + 1], 0x31));
    for (int p = 0; p < 2; p++)
        u[p] = _mm256_add_ps(_mm256_shuffle_ps(t[2 * p], t[2 * p + 1], 0x44),
                             _mm256_shuffle_ps(t[2 * p], t[2 * p + 1], 0xEE));
    __m256 w =
        _mm256_add_ps(_mm256_shuffle_ps(u[0], u[1], 0x88), _mm256_shuffle_ps(u[0], u[1], 0xDD));
    /* lane 4k + e holds a[2e + k] */
    _mm256_storeu_ps(out, _mm256_permutevar8x32_ps(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

AVX2 static void scores_avx2(float *s, size_t lds, const float *const q[], int nr, const void *k,
                             be_dtype dt, size_t ldk, int nk, int hd) {
    size_t es = dt == BE_F16 ? 2 : 4;
    int hd8 = hd / 8 * 8;
    for (int r0 = 0; r0 < nr; r0 += 4) {
        const float *qr[4];
        for (int r = 0; r < 4; r++) qr[r] = q[r0 + r < nr ? r0 + r : nr - 1];
        for (int j0 = 0; j0 < nk; j0 += 2) {
            const char *kr[2];
            for (int u = 0; u < 2; u++)
                kr[u] = (const char *)k + (size_t)(j0 + u < nk ? j0 + u : nk - 1) * ldk * es;
            for (int u = 0; r0 == 0 && u < 2; u++) /* 16 keys on (see attention_avx512.c) */
                for (size_t at = 0; at < (size_t)hd * es; at += 64)
                    _mm_prefetch(kr[u] + 16 * ldk * es + at, _MM_HINT_T0);
            __m256 a[8];
            for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_ps();
            for (int c = 0; c < hd8; c += 8) {
                __m256 k0 = load8(dt, kr[0], c), k1 = load8(dt, kr[1], c);
                for (int r = 0; r < 4; r++) {
                    __m256 x = _mm256_loadu_ps(qr[r] + c);
                    a[2 * r] = _mm256_fmadd_ps(x, k0, a[2 * r]);
                    a[2 * r + 1] = _mm256_fmadd_ps(x, k1, a[2 * r + 1]);
                }
            }
            if (hd8 < hd) {
                __m256 k0 = load_tail(dt, kr[0], hd8, hd - hd8);
                __m256 k1 = load_tail(dt, kr[1], hd8, hd - hd8);
                for (int r = 0; r < 4; r++) {
                    __m256 x = load_tail(BE_F32, qr[r], hd8, hd - hd8);
                    a[2 * r] = _mm256_fmadd_ps(x, k0, a[2 * r]);
                    a[2 * r + 1] = _mm256_fmadd_ps(x, k1, a[2 * r + 1]);
                }
            }
            float out[8];
            sum8x8(a, out);
            for (int r = 0; r < 4 && r0 + r < nr; r++)
                for (int u = 0; u < 2 && j0 + u < nk; u++)
                    s[(size_t)(r0 + r) * lds + j0 + u] = out[2 * r + u];
        }
    }
}

/* attn_exp on 8 lanes: the same operations in the same order. */
AVX2 INLINE __m256 exp8(__m256 x) {
    __m256 n =
        _mm256_sub_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(ATTN_LOG2E), _mm256_set1_ps(ATTN_ROUND)),
                      _mm256_set1_ps(ATTN_ROUND));
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-ATTN_LN2_HI), x);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(-ATTN_LN2_LO), r);
    __m256 p = _mm256_set1_ps(ATTN_EXP_C(7));
    for (int i = 6; i >= 0; i--) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(ATTN_EXP_C(i)));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    __m256 under = _mm256_cmp_ps(x, _mm256_set1_ps(ATTN_EXP_MIN), _CMP_LT_OQ);
    return _mm256_andnot_ps(under, y);
}

AVX2 static float exp_sum_avx2(float *p, int n, float scale, float *m) {
    __m256 vs = _mm256_set1_ps(scale), vm = _mm256_set1_ps(*m);
    int n8 = n / 8 * 8;
    float tail[8];
    for (int j = 0; j < n8; j += 8) {
        __m256 x = _mm256_mul_ps(_mm256_loadu_ps(p + j), vs);
        _mm256_storeu_ps(p + j, x);
        vm = _mm256_max_ps(vm, x);
    }
    if (n8 < n) { /* padded with -inf: no max, and exp gives 0 */
        for (int i = 0; i < 8; i++) tail[i] = n8 + i < n ? p[n8 + i] * scale : -INFINITY;
        vm = _mm256_max_ps(vm, _mm256_loadu_ps(tail));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vm), _mm256_extractf128_ps(vm, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float mx = _mm_cvtss_f32(m4);
    __m256 vmx = _mm256_set1_ps(mx), acc = _mm256_setzero_ps();
    for (int j = 0; j < n8; j += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p + j), vmx));
        _mm256_storeu_ps(p + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    if (n8 < n) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(tail), vmx));
        acc = _mm256_add_ps(acc, e);
        _mm256_storeu_ps(tail, e);
        memcpy(p + n8, tail, (size_t)(n - n8) * sizeof *p);
    }
    *m = mx;
    float a[8];
    _mm256_storeu_ps(a, acc);
    return attn_sum8(a);
}

/* TR rows × 16 columns [d, d+16) of o += P·V over nk keys. */
AVX2 INLINE void pv_tile(int TR, float *const o[], const float *const p[], const char *v,
                         be_dtype dt, size_t ldv_bytes, int nk, int d, bool pf) {
    __m256 a[4][2];
    for (int r = 0; r < TR; r++)
        for (int i = 0; i < 2; i++) a[r][i] = _mm256_loadu_ps(o[r] + d + 8 * i);
    for (int j = 0; j < nk; j++) {
        const char *vj = v + (size_t)j * ldv_bytes;
        if (pf) _mm_prefetch(vj + 16 * ldv_bytes + (size_t)d * (dt == BE_F16 ? 2 : 4), _MM_HINT_T0);
        __m256 v0 = load8(dt, vj, d), v1 = load8(dt, vj, d + 8);
        for (int r = 0; r < TR; r++) {
            __m256 b = _mm256_broadcast_ss(p[r] + j);
            a[r][0] = _mm256_fmadd_ps(b, v0, a[r][0]);
            a[r][1] = _mm256_fmadd_ps(b, v1, a[r][1]);
        }
    }
    for (int r = 0; r < TR; r++)
        for (int i = 0; i < 2; i++) _mm256_storeu_ps(o[r] + d + 8 * i, a[r][i]);
}

AVX2 static void pv_avx2(float *const o[], const float *const p[], int nr, const void *v,
                         be_dtype dt, size_t ldv, int nk, int hd) {
    size_t es = dt == BE_F16 ? 2 : 4, ldb = ldv * es;
    int hd16 = hd / 16 * 16;
    for (int r0 = 0; r0 < nr; r0 += 4) {
        int tr = nr - r0 < 4 ? nr - r0 : 4;
        for (int d = 0; d < hd16; d += 16) switch (tr) {
                case 4:
                    pv_tile(4, o + r0, p + r0, v, dt, ldb, nk, d, r0 == 0);
                    break;
                case 3:
                    pv_tile(3, o + r0, p + r0, v, dt, ldb, nk, d, r0 == 0);
                    break;
                case 2:
                    pv_tile(2, o + r0, p + r0, v, dt, ldb, nk, d, r0 == 0);
                    break;
                default:
                    pv_tile(1, o + r0, p + r0, v, dt, ldb, nk, d, r0 == 0);
                    break;
            }
    }
    for (int r = 0; r < nr; r++) /* the last hd % 16 columns: the same chain per element */
        for (int d = hd16; d < hd; d++) {
            float acc = o[r][d];
            for (int j = 0; j < nk; j++) {
                size_t at = (size_t)j * ldv + d;
                float x = dt == BE_F16 ? lv_f16_to_f32(((const uint16_t *)v)[at])
                                       : ((const float *)v)[at];
                acc = fmaf(p[r][j], x, acc);
            }
            o[r][d] = acc;
        }
}

AVX2 void attn_store_f16_avx2(uint16_t *dst, const float *src, size_t n) {
    __m256 hi = _mm256_set1_ps(65504.0f), lo = _mm256_set1_ps(-65504.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        /* min/max return their second operand when one is NaN: NaN stays NaN */
        __m256 x = _mm256_max_ps(lo, _mm256_min_ps(hi, _mm256_loadu_ps(src + i)));
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < n; i++) {
        float f = src[i];
        if (f > 65504.0f) f = 65504.0f;
        if (f < -65504.0f) f = -65504.0f;
        dst[i] = lv_f32_to_f16(f);
    }
}

const attn_kernels *attn_kernels_avx2(void) {
    static const attn_kernels t = {.isa = "avx2",
                                   .scores = scores_avx2,
                                   .exp_sum = exp_sum_avx2,
                                   .pv = pv_avx2,
                                   .store_f16 = attn_store_f16_avx2};
    return cpu_kernels_avx2() ? &t : NULL; /* the same CPU check */
}

#else
const attn_kernels *attn_kernels_avx2(void) {
    return NULL;
}
#endif
