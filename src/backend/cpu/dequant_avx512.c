/*
 * dequant_avx512.c - the AVX-512 table's quantized dot kernels (kernels.h
 * `cpu_kernels` `dot_rows_q`, `dot_tokens_q`): two rows decoded at once.
 *
 * Rows A and B are decoded together: lanes 0-7 hold row A's 8 values,
 * lanes 8-15 row B's, each computed with the operations of the 8-lane
 * decoders of dequant_avx2.c in the same order (exact widenings and
 * conversions, one multiply, then one add or subtract), then FMA'd against
 * the token's 8 floats in both halves. Every lane is thus its row's 8-lane
 * chain, and each half's horizontal sum is the AVX2 kernel's: the same
 * bits, in half the instructions. The table's `dequant` is the AVX2 one.
 */
#include "backend/cpu/kernels.h"
#include "backend/quant.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include "backend/cpu/avx512.h"
#include "backend/cpu/dequant_avx2.h"

#include <string.h>

#define INL2 AVX512 static inline __attribute__((always_inline))

/* a in lanes 0-7, b in lanes 8-15. */
INL2 __m512 both(float a, float b) {
    __m256d lo = _mm256_castps_pd(_mm256_set1_ps(a)), hi = _mm256_castps_pd(_mm256_set1_ps(b));
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(lo), hi, 1));
}

INL2 __m512i both_i(__m256i a, __m256i b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
}

/* 8 bytes at a, then 8 at b, zero- or sign-extended to 16 int32 lanes. */
INL2 __m128i bytes8x2(const unsigned char *a, const unsigned char *b) {
    return _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)a),
                              _mm_loadl_epi64((const __m128i *)b));
}

INL2 __m512i u8x8x2(const unsigned char *a, const unsigned char *b) {
    return _mm512_cvtepu8_epi32(bytes8x2(a, b));
}

INL2 __m512i i8x8x2(const unsigned char *a, const unsigned char *b) {
    return _mm512_cvtepi8_epi32(bytes8x2(a, b));
}

/* acc[t] = fma(x_t[j..j+8) in both halves, v, acc[t]) for nt tokens. */
INL2 void emit2(int j, __m512 v, int nt, size_t ldx, const float *x, __m512 *acc) {
    for (int t = 0; t < nt; t++) {
        const double *p = (const double *)(x + t * ldx + j);
        __m512 u = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd(p)));
        acc[t] = _mm512_fmadd_ps(u, v, acc[t]);
    }
}

/* mlx_codes8 of rows a and b. */
INL2 __m512i mlx_codes8x2(const unsigned char *a, const unsigned char *b, int bits, int j) {
    size_t off = (size_t)j * bits / 8;
    if (bits == 8) return u8x8x2(a + off, b + off);
    if (bits == 4) {
        uint32_t wa, wb;
        memcpy(&wa, a + off, 4);
        memcpy(&wb, b + off, 4);
        __m512i w = both_i(_mm256_set1_epi32((int)wa), _mm256_set1_epi32((int)wb));
        const __m512i sh =
            _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
        return _mm512_and_si512(_mm512_srlv_epi32(w, sh), _mm512_set1_epi32(0xF));
    }
    return both_i(mlx_codes8(a, bits, j), mlx_codes8(b, bits, j));
}

INL2 void q8_0_block2(const unsigned char *a, const unsigned char *b, int nt, size_t ldx,
                      const float *x, __m512 *acc) {
    __m512 d = both(f16_at(a), f16_at(b));
    for (int j = 0; j < 32; j += 8)
        emit2(j, _mm512_mul_ps(_mm512_cvtepi32_ps(i8x8x2(a + 2 + j, b + 2 + j)), d), nt, ldx, x,
              acc);
}

INL2 void q4_01_block2(const unsigned char *a, const unsigned char *b, bool has_min, int nt,
                       size_t ldx, const float *x, __m512 *acc) {
    __m512 d = both(f16_at(a), f16_at(b));
    __m512 m = has_min ? both(f16_at(a + 2), f16_at(b + 2)) : _mm512_setzero_ps();
    const unsigned char *qa = a + (has_min ? 4 : 2), *qb = b + (has_min ? 4 : 2);
    const __m512i nib = _mm512_set1_epi32(0xF), eight = _mm512_set1_epi32(8);
    for (int half = 0; half < 2; half++)
        for (int j = 0; j < 16; j += 8) {
            __m512i v = u8x8x2(qa + j, qb + j);
            __m512i q = half ? _mm512_srli_epi32(v, 4) : _mm512_and_si512(v, nib);
            __m512 out;
            if (has_min)
                out = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(q), d), m);
            else
                out = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q, eight)), d);
            emit2(16 * half + j, out, nt, ldx, x, acc);
        }
}

INL2 void qk_45_block2(const unsigned char *a, const unsigned char *b, bool five, int nt,
                       size_t ldx, const float *x, __m512 *acc) {
    float da = f16_at(a), dmina = f16_at(a + 2), db = f16_at(b), dminb = f16_at(b + 2);
    const unsigned char *qsa = five ? a + 48 : a + 16, *qsb = five ? b + 48 : b + 16;
    const __m512i nib = _mm512_set1_epi32(0xF), one = _mm512_set1_epi32(1);
    for (int s = 0; s < 8; s++) {
        int c = s / 2, hi = s % 2, sca, ma, scb, mb;
        scale_min_k4(s, a + 4, &sca, &ma);
        scale_min_k4(s, b + 4, &scb, &mb);
        __m512 ds = both(da * (float)sca, db * (float)scb);
        __m512 dm = both(dmina * (float)ma, dminb * (float)mb);
        for (int l = 0; l < 32; l += 8) {
            __m512i v = u8x8x2(qsa + 32 * c + l, qsb + 32 * c + l);
            __m512i q = hi ? _mm512_srli_epi32(v, 4) : _mm512_and_si512(v, nib);
            if (five)
                q = _mm512_or_si512(
                    q,
                    _mm512_slli_epi32(
                        _mm512_and_si512(_mm512_srli_epi32(u8x8x2(a + 16 + l, b + 16 + l), s), one),
                        4));
            emit2(32 * s + l, _mm512_sub_ps(_mm512_mul_ps(ds, _mm512_cvtepi32_ps(q)), dm), nt, ldx,
                  x, acc);
        }
    }
}

INL2 void q6_k_block2(const unsigned char *a, const unsigned char *b, int nt, size_t ldx,
                      const float *x, __m512 *acc) {
    const unsigned char *qla = a, *qha = a + 128, *qlb = b, *qhb = b + 128;
    const int8_t *sca = (const int8_t *)(a + 192), *scb = (const int8_t *)(b + 192);
    float da = f16_at(a + 208), db = f16_at(b + 208);
    const __m512i nib = _mm512_set1_epi32(0xF), three = _mm512_set1_epi32(3),
                  off = _mm512_set1_epi32(32);
    for (int n = 0; n < 2; n++) {
        for (int k = 0; k < 4; k++)
            for (int l = 0; l < 32; l += 8) {
                __m512i v = u8x8x2(qla + 32 * (k % 2) + l, qlb + 32 * (k % 2) + l);
                __m512i h = u8x8x2(qha + l, qhb + l);
                __m512i lo = k < 2 ? _mm512_and_si512(v, nib) : _mm512_srli_epi32(v, 4);
                __m512i q = _mm512_or_si512(
                    lo, _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(h, 2 * k), three), 4));
                __m512 ds = both(da * (float)sca[l / 16 + 2 * k], db * (float)scb[l / 16 + 2 * k]);
                emit2(128 * n + 32 * k + l,
                      _mm512_mul_ps(ds, _mm512_cvtepi32_ps(_mm512_sub_epi32(q, off))), nt, ldx, x,
                      acc);
            }
        qla += 64;
        qha += 32;
        sca += 8;
        qlb += 64;
        qhb += 32;
        scb += 8;
    }
}

INL2 void ggml_block2(be_dtype dt, const unsigned char *a, const unsigned char *b, int nt,
                      size_t ldx, const float *x, __m512 *acc) {
    switch (dt) {
        case BE_Q8_0:
            q8_0_block2(a, b, nt, ldx, x, acc);
            break;
        case BE_Q4_0:
            q4_01_block2(a, b, false, nt, ldx, x, acc);
            break;
        case BE_Q4_1:
            q4_01_block2(a, b, true, nt, ldx, x, acc);
            break;
        case BE_Q4_K:
            qk_45_block2(a, b, false, nt, ldx, x, acc);
            break;
        case BE_Q5_K:
            qk_45_block2(a, b, true, nt, ldx, x, acc);
            break;
        case BE_Q6_K:
            q6_k_block2(a, b, nt, ldx, x, acc);
            break;
        default:
            break;
    }
}

/* acc[t][k] += Σ x[t·ldx + i]·v[k][i] for NT tokens and P pairs of rows
 * (rows[2p], rows[2p+1]) over columns [c0, c0+n): dot_tokens_q_t's sums
 * (dequant_avx2.c; NT = 1: dot_rows_q's), rows interleaved pair by pair. */
INL2 void dot_pairs_q_t(int NT, int P, float *out, size_t ld, const float *x, size_t ldx,
                        const be_weight *w, const int rows[], int c0, int n) {
    __m512 a[MM_GEMV_ROWS / 2][MM_DEC_QMAX];
    const unsigned char *r[MM_GEMV_ROWS];
    for (int p = 0; p < P; p++) {
        r[2 * p] = qrow(w, rows[2 * p]);
        r[2 * p + 1] = qrow(w, rows[2 * p + 1]);
        for (int t = 0; t < NT; t++) a[p][t] = _mm512_setzero_ps();
    }
    if (w->dtype == BE_MLX) {
        /* column-major over the pairs: each x vector is broadcast once for all of them */
        const be_quant *q = &w->q;
        size_t n_groups = (size_t)w->cols / q->group;
        for (int g0 = c0; g0 < c0 + n; g0 += q->group) {
            __m512 sc[MM_GEMV_ROWS / 2], bi[MM_GEMV_ROWS / 2];
            for (int p = 0; p < P; p++) {
                float sa, ba, sb, bb;
                size_t gi = (size_t)(g0 / q->group);
                mlx_side(q, (size_t)rows[2 * p] * n_groups + gi, &sa, &ba);
                mlx_side(q, (size_t)rows[2 * p + 1] * n_groups + gi, &sb, &bb);
                sc[p] = both(sa, sb);
                bi[p] = both(ba, bb);
            }
#define MLX_COLS(BITS)                                                                             \
    for (int i = 0; i < q->group; i += 8) {                                                        \
        __m512 v[MM_GEMV_ROWS / 2];                                                                \
        for (int p = 0; p < P; p++)                                                                \
            v[p] = _mm512_add_ps(_mm512_mul_ps(sc[p], _mm512_cvtepi32_ps(mlx_codes8x2(             \
                                                          r[2 * p], r[2 * p + 1], BITS, g0 + i))), \
                                 bi[p]);                                                           \
        for (int t = 0; t < NT; t++) {                                                             \
            const double *xp = (const double *)(x + t * ldx + (g0 - c0) + i);                      \
            __m512 u = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd(xp)));              \
            for (int p = 0; p < P; p++) a[p][t] = _mm512_fmadd_ps(u, v[p], a[p][t]);               \
        }                                                                                          \
    }
            if (q->bits == 4)
                MLX_COLS(4)
            else if (q->bits == 8)
                MLX_COLS(8)
            else
                MLX_COLS(q->bits)
#undef MLX_COLS
        }
    } else {
        int per = be_block_elems(w->dtype), bb = be_block_bytes(w->dtype);
#define SPAN2(DT)                                                                                  \
    for (int i = 0; i < n; i += per) {                                                             \
        size_t off = (size_t)((c0 + i) / per) * bb;                                                \
        for (int p = 0; p < P; p++)                                                                \
            ggml_block2(DT, r[2 * p] + off, r[2 * p + 1] + off, NT, ldx, x + i, a[p]);             \
    }
        GGML_DISPATCH(w->dtype, SPAN2)
#undef SPAN2
    }
    for (int p = 0; p < P; p++)
        for (int t = 0; t < NT; t++) {
            __m256 lo = _mm512_castps512_ps256(a[p][t]);
            __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a[p][t]), 1));
            out[t * ld + 2 * p] += cpu_hsum8(lo);
            out[t * ld + 2 * p + 1] += cpu_hsum8(hi);
        }
}

/* dot_rows_q: MM_GEMV_ROWS rows as 4 pairs, one token. */
AVX512 void cpu_dot_rows_q_avx512(float acc[], const float *x, const be_weight *w, const int rows[],
                                  int c0, int n) {
    dot_pairs_q_t(1, MM_GEMV_ROWS / 2, acc, 0, x, 0, w, rows, c0, n);
}

/* dot_tokens_q: up to 8 tokens × 4 rows or 12 × 2 (at most 16 ZMM
 * accumulators), rows in pairs (measured: at 12 tokens the GEMM's panel
 * path is as fast, beyond faster). */
AVX512 void cpu_dot_tokens_q_avx512(float acc[][MM_DEC_ROWS], int nt, int nr, const float *x,
                                    size_t ldx, const be_weight *w, const int rows[], int c0,
                                    int n) {
    switch (nt * 8 + nr) {
#define Q_CASE(T, R)                                                                               \
    case (T)*8 + (R):                                                                              \
        dot_pairs_q_t(T, (R) / 2, &acc[0][0], MM_DEC_ROWS, x, ldx, w, rows, c0, n);                \
        break;
        Q_CASE(1, 4)
        Q_CASE(2, 4)
        Q_CASE(3, 4)
        Q_CASE(4, 4)
        Q_CASE(5, 4)
        Q_CASE(6, 4)
        Q_CASE(7, 4)
        Q_CASE(8, 4)
        Q_CASE(9, 2)
        Q_CASE(10, 2)
        Q_CASE(11, 2)
        Q_CASE(12, 2)
#undef Q_CASE
        default:
            break;
    }
}

#endif
