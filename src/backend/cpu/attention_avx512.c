/*
 * attention_avx512.c - the attention kernels with AVX-512F (attention.h
 * defines what they compute; the portable and AVX2 tables' bits exactly).
 *
 * scores: 8 rows × 4 keys (4 × 8 for the last rows, and for decode's 4
 * heads) in 16 ZMM accumulators, each holding two 8-lane chains (keys 2p
 * and 2p+1 of one row, side by side; a key pair widened from f16 in one
 * conversion for all the rows); the 32 chains are then summed in
 * cpu_hsum8's order by three shuffle-and-add steps over the 16 registers.
 * Both kernels prefetch the keys or values 16 rows ahead: a kv head's rows
 * are short runs at a stride (256 bytes every 2 KiB at 7B in f16), which
 * the hardware prefetchers follow poorly. exp_sum: 16 keys a
 * register, its two halves added in turn to one 8-lane sum (the 8-lane chains' order). pv: 4 rows ×
 * 64 columns, each value row loaded (and widened) once for the 4 rows.
 */
#include "backend/cpu/attention.h"
#include "backend/cpu/kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include "base/half.h"

#include <immintrin.h>
#include <string.h>

#define AVX512 __attribute__((target("avx2,fma,f16c,avx512f")))
#define INLINE static inline __attribute__((always_inline))

void attn_store_f16_avx2(uint16_t *dst, const float *src, size_t n); /* attention_avx2.c */

/* Columns [c, c+8) of rows k0 (lanes 0-7) and k1 (lanes 8-15), as floats. */
AVX512 INLINE __m512 load_pair(be_dtype dt, const char *k0, const char *k1, int c) {
    if (dt == BE_F16) {
        __m128i a = _mm_loadu_si128((const __m128i *)((const uint16_t *)k0 + c));
        __m128i b = _mm_loadu_si128((const __m128i *)((const uint16_t *)k1 + c));
        return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1));
    }
    __m256d a = _mm256_loadu_pd((const double *)((const float *)k0 + c));
    __m256d b = _mm256_loadu_pd((const double *)((const float *)k1 + c));
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(a), b, 1));
}

/* The same for the last n < 8 columns, zero-padded. */
AVX512 INLINE __m512 load_pair_tail(be_dtype dt, const char *k0, const char *k1, int c, int n) {
    float t[16] = {0};
    for (int i = 0; i < n; i++) {
        t[i] = dt == BE_F16 ? lv_f16_to_f32(((const uint16_t *)k0)[c + i])
                            : ((const float *)k0)[c + i];
        t[8 + i] = dt == BE_F16 ? lv_f16_to_f32(((const uint16_t *)k1)[c + i])
                                : ((const float *)k1)[c + i];
    }
    return _mm512_loadu_ps(t);
}

/* out[2a + h] = the cpu_hsum8-ordered sum of half h of a[a], a < 16. */
AVX512 INLINE void sum8x32(const __m512 a[16], float out[32]) {
    __m512 t[8], u[4], w[2];
    for (int p = 0; p < 8; p++) /* 128-bit lane k: pair 4p + k, t_l = a_l + a_{l+4} */
        t[p] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], 0x88),
                             _mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], 0xDD));
    for (int p = 0; p < 4; p++) /* lane k: pairs 8p + k, 8p + 4 + k: u_l = t_l + t_{l+2} */
        u[p] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * p], t[2 * p + 1], 0x44),
                             _mm512_shuffle_ps(t[2 * p], t[2 * p + 1], 0xEE));
    for (int p = 0; p < 2; p++) /* element 4k + e: pair 16p + 4e + k: u_0 + u_1 */
        w[p] = _mm512_add_ps(_mm512_shuffle_ps(u[2 * p], u[2 * p + 1], 0x88),
                             _mm512_shuffle_ps(u[2 * p], u[2 * p + 1], 0xDD));
    __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    for (int p = 0; p < 2; p++) _mm512_storeu_ps(out + 16 * p, _mm512_permutexvar_ps(idx, w[p]));
}

/* One tile of TR rows × TK keys (TR·TK = 32): a[(TK/2)·r + p] holds row r's
 * chains for keys 2p (lanes 0-7) and 2p+1, so out[TK·r + key] is its sum. */
AVX512 INLINE void score_tile(int TR, int TK, float out[32], const float *const qr[],
                              const char *const kr[], be_dtype dt, int hd) {
    enum { NP_MAX = 4 };
    int np = TK / 2, hd8 = hd / 8 * 8;
    __m512 a[16];
    for (int i = 0; i < 16; i++) a[i] = _mm512_setzero_ps();
    for (int c = 0; c < hd8; c += 8) {
        __m512 kv[NP_MAX];
        for (int p = 0; p < np; p++) kv[p] = load_pair(dt, kr[2 * p], kr[2 * p + 1], c);
        for (int r = 0; r < TR; r++) {
            __m512 x = _mm512_castpd_ps(
                _mm512_broadcast_f64x4(_mm256_loadu_pd((const double *)(qr[r] + c))));
            for (int p = 0; p < np; p++) a[np * r + p] = _mm512_fmadd_ps(x, kv[p], a[np * r + p]);
        }
    }
    if (hd8 < hd) {
        __m512 kv[NP_MAX];
        for (int p = 0; p < np; p++)
            kv[p] = load_pair_tail(dt, kr[2 * p], kr[2 * p + 1], hd8, hd - hd8);
        for (int r = 0; r < TR; r++) {
            const char *qc = (const char *)qr[r];
            __m512 x = load_pair_tail(BE_F32, qc, qc, hd8, hd - hd8);
            for (int p = 0; p < np; p++) a[np * r + p] = _mm512_fmadd_ps(x, kv[p], a[np * r + p]);
        }
    }
    sum8x32(a, out);
}

/* Tiles of 8 rows × 4 keys while 8 rows remain (half the key loads per
 * FMA), else 4 rows × 8 keys (decode: the 4 heads of a GQA group). Ragged
 * edges repeat the last row or key; only real pairs are stored. */
AVX512 static void scores_avx512(float *s, size_t lds, const float *const q[], int nr,
                                 const void *k, be_dtype dt, size_t ldk, int nk, int hd) {
    size_t es = dt == BE_F16 ? 2 : 4;
    for (int r0 = 0; r0 < nr;) {
        int tr = nr - r0 >= 8 ? 8 : 4, tk = 32 / tr;
        const float *qr[8];
        for (int r = 0; r < tr; r++) qr[r] = q[r0 + r < nr ? r0 + r : nr - 1];
        for (int j0 = 0; j0 < nk; j0 += tk) {
            const char *kr[8];
            for (int u = 0; u < tk; u++)
                kr[u] = (const char *)k + (size_t)(j0 + u < nk ? j0 + u : nk - 1) * ldk * es;
            /* the rows two tiles on (this block's, then the next block's), once:
             * the later row tiles find them in the cache */
            for (int u = 0; r0 == 0 && u < tk; u++)
                for (size_t at = 0; at < (size_t)hd * es; at += 64)
                    _mm_prefetch((const char *)k + ((size_t)j0 + 2 * tk + u) * ldk * es + at,
                                 _MM_HINT_T0);
            float out[32];
            if (tr == 8)
                score_tile(8, 4, out, qr, kr, dt, hd);
            else
                score_tile(4, 8, out, qr, kr, dt, hd);
            int vr = nr - r0 < tr ? nr - r0 : tr, vk = nk - j0 < tk ? nk - j0 : tk;
            for (int r = 0; r < vr; r++)
                memcpy(s + (size_t)(r0 + r) * lds + j0, out + tk * r, (size_t)vk * sizeof *out);
        }
        r0 += tr;
    }
}

/* attn_exp on 16 lanes: the same operations in the same order. */
AVX512 INLINE __m512 exp16(__m512 x) {
    __m512 n =
        _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(ATTN_LOG2E), _mm512_set1_ps(ATTN_ROUND)),
                      _mm512_set1_ps(ATTN_ROUND));
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-ATTN_LN2_HI), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(-ATTN_LN2_LO), r);
    __m512 p = _mm512_set1_ps(ATTN_EXP_C(7));
    for (int i = 6; i >= 0; i--) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(ATTN_EXP_C(i)));
    __m512i e =
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    __m512 y = _mm512_mul_ps(p, _mm512_castsi512_ps(e));
    __mmask16 ok = _mm512_cmp_ps_mask(x, _mm512_set1_ps(ATTN_EXP_MIN), _CMP_NLT_UQ);
    return _mm512_maskz_mov_ps(ok, y);
}

AVX512 static float exp_sum_avx512(float *p, int n, float scale, float *m) {
    __m512 vs = _mm512_set1_ps(scale), vm = _mm512_set1_ps(*m);
    for (int j = 0; j < n; j += 16) {
        __mmask16 k = n - j >= 16 ? 0xFFFF : (__mmask16)((1u << (n - j)) - 1);
        __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, p + j), vs);
        _mm512_mask_storeu_ps(p + j, k, x);
        vm = _mm512_mask_max_ps(vm, k, vm, x);
    }
    float mx = _mm512_reduce_max_ps(vm);
    __m512 vmx = _mm512_set1_ps(mx);
    __m256 acc = _mm256_setzero_ps();
    for (int j = 0; j < n; j += 16) {
        __mmask16 k = n - j >= 16 ? 0xFFFF : (__mmask16)((1u << (n - j)) - 1);
        __m512 e =
            _mm512_maskz_mov_ps(k, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, p + j), vmx)));
        _mm512_mask_storeu_ps(p + j, k, e);
        /* keys j..j+7 then j+8..j+15: each 8-lane chain in key order */
        acc = _mm256_add_ps(acc, _mm512_castps512_ps256(e));
        acc = _mm256_add_ps(acc, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1)));
    }
    *m = mx;
    float a[8];
    _mm256_storeu_ps(a, acc);
    return attn_sum8(a);
}

/* 16 columns [d, d+16) of a value row, as floats. */
AVX512 INLINE __m512 load16(be_dtype dt, const char *row, int d) {
    if (dt == BE_F16)
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)row + d)));
    return _mm512_loadu_ps((const float *)row + d);
}

/* TR rows × NV·16 columns from d of o += P·V over nk keys. */
AVX512 INLINE void pv_tile(int TR, int NV, float *const o[], const float *const p[], const char *v,
                           be_dtype dt, size_t ldv_bytes, int nk, int d, bool pf) {
    __m512 a[4][4];
    int es = dt == BE_F16 ? 2 : 4;
    for (int r = 0; r < TR; r++)
        for (int i = 0; i < NV; i++) a[r][i] = _mm512_loadu_ps(o[r] + d + 16 * i);
    for (int j = 0; j < nk; j++) {
        const char *vj = v + (size_t)j * ldv_bytes;
        for (int at = 0; pf && at < NV * 16 * es; at += 64) /* these columns 16 keys on */
            _mm_prefetch(vj + 16 * ldv_bytes + (size_t)d * es + at, _MM_HINT_T0);
        __m512 vv[4];
        for (int i = 0; i < NV; i++) vv[i] = load16(dt, vj, d + 16 * i);
        for (int r = 0; r < TR; r++) {
            __m512 b = _mm512_set1_ps(p[r][j]);
            for (int i = 0; i < NV; i++) a[r][i] = _mm512_fmadd_ps(b, vv[i], a[r][i]);
        }
    }
    for (int r = 0; r < TR; r++)
        for (int i = 0; i < NV; i++) _mm512_storeu_ps(o[r] + d + 16 * i, a[r][i]);
}

#define PV_ROWS(NV)                                                                                \
    switch (tr) {                                                                                  \
        case 4:                                                                                    \
            pv_tile(4, NV, o + r0, p + r0, v, dt, ldb, nk, d, r0 == 0);                            \
            break;                                                                                 \
        case 3:                                                                                    \
            pv_tile(3, NV, o + r0, p + r0, v, dt, ldb, nk, d, r0 == 0);                            \
            break;                                                                                 \
        case 2:                                                                                    \
            pv_tile(2, NV, o + r0, p + r0, v, dt, ldb, nk, d, r0 == 0);                            \
            break;                                                                                 \
        default:                                                                                   \
            pv_tile(1, NV, o + r0, p + r0, v, dt, ldb, nk, d, r0 == 0);                            \
            break;                                                                                 \
    }

AVX512 static void pv_avx512(float *const o[], const float *const p[], int nr, const void *v,
                             be_dtype dt, size_t ldv, int nk, int hd) {
    size_t es = dt == BE_F16 ? 2 : 4, ldb = ldv * es;
    int hd16 = hd / 16 * 16;
    for (int r0 = 0; r0 < nr; r0 += 4) {
        int tr = nr - r0 < 4 ? nr - r0 : 4, d = 0;
        for (; d + 64 <= hd16; d += 64) PV_ROWS(4)
        for (; d < hd16; d += 16) PV_ROWS(1)
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

const attn_kernels *attn_kernels_avx512(void) {
    static const attn_kernels t = {.isa = "avx512",
                                   .scores = scores_avx512,
                                   .exp_sum = exp_sum_avx512,
                                   .pv = pv_avx512,
                                   .store_f16 = attn_store_f16_avx2};
    return cpu_kernels_avx512() ? &t : NULL; /* the same CPU check */
}

#else
const attn_kernels *attn_kernels_avx512(void) {
    return NULL;
}
#endif
