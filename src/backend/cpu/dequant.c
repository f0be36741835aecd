/*
 * dequant.c - the CPU backend's vectorised dequantisers (cpu_kernels
 * `dequant`): a span of a quantized weight row to float32, with AVX2.
 *
 * Each format's meaning is defined once, by be_dequant_span
 * (backend/quant.c); these are faster spellings of the same float32
 * arithmetic in the same order (one multiply, then one add or subtract, no
 * FMA), so their output is bit-identical to it (tests/test_backend.c).
 * Codes are widened to 8 int32 lanes with the pmovzx/pmovsx family and
 * converted to float; block scales are exact f16 -> f32 conversions.
 */
#include "backend/cpu/cpu.h"
#include "backend/quant.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))

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

/* out[0..8) = s·q + b (MLX) for int32 codes q. */
AVX2 static inline void store_affine(float *out, __m256i q, __m256 s, __m256 b) {
    _mm256_storeu_ps(out, _mm256_add_ps(_mm256_mul_ps(s, _mm256_cvtepi32_ps(q)), b));
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

AVX2 static void mlx_span(const be_weight *w, int row, int c0, int n, float *out) {
    const be_quant *q = &w->q;
    const unsigned char *codes = (const unsigned char *)w->data + (size_t)row * w->row_bytes;
    size_t n_groups = (size_t)w->cols / q->group;
    for (int g0 = c0; g0 < c0 + n; g0 += q->group) {
        size_t gi = (size_t)row * n_groups + (size_t)(g0 / q->group);
        __m256 s = _mm256_set1_ps(side_at(q->scale_dtype, q->scales, gi));
        __m256 b = _mm256_set1_ps(side_at(q->scale_dtype, q->biases, gi));
        float *o = out + (g0 - c0);
        if (q->bits == 4) /* constant bits: the common widths inline to a few instructions */
            for (int i = 0; i < q->group; i += 8)
                store_affine(o + i, mlx_codes8(codes, 4, g0 + i), s, b);
        else if (q->bits == 8)
            for (int i = 0; i < q->group; i += 8)
                store_affine(o + i, mlx_codes8(codes, 8, g0 + i), s, b);
        else
            for (int i = 0; i < q->group; i += 8)
                store_affine(o + i, mlx_codes8(codes, q->bits, g0 + i), s, b);
    }
}

AVX2 static void q8_0_block(const unsigned char *b, float *y) {
    __m256 d = _mm256_set1_ps(f16_at(b));
    for (int j = 0; j < 32; j += 8)
        _mm256_storeu_ps(y + j, _mm256_mul_ps(_mm256_cvtepi32_ps(i8x8(b + 2 + j)), d));
}

/* Q4_0 / Q4_1: low nibbles are elements 0..15, high nibbles 16..31. */
AVX2 static void q4_01_block(const unsigned char *b, float *y, bool has_min) {
    __m256 d = _mm256_set1_ps(f16_at(b));
    __m256 m = _mm256_set1_ps(has_min ? f16_at(b + 2) : 0.0f);
    const unsigned char *qs = b + (has_min ? 4 : 2);
    const __m256i nib = _mm256_set1_epi32(0xF), eight = _mm256_set1_epi32(8);
    for (int j = 0; j < 16; j += 8) {
        __m256i v = u8x8(qs + j);
        __m256i lo = _mm256_and_si256(v, nib), hi = _mm256_srli_epi32(v, 4);
        if (has_min) {
            _mm256_storeu_ps(y + j, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(lo), d), m));
            _mm256_storeu_ps(y + j + 16,
                             _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(hi), d), m));
        } else {
            lo = _mm256_sub_epi32(lo, eight);
            hi = _mm256_sub_epi32(hi, eight);
            _mm256_storeu_ps(y + j, _mm256_mul_ps(_mm256_cvtepi32_ps(lo), d));
            _mm256_storeu_ps(y + j + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(hi), d));
        }
    }
}

/* Sub-block s's 6-bit scale and min (ggml get_scale_min_k4; see quant.c). */
static void scale_min_k4(int s, const unsigned char *S, int *sc, int *m) {
    if (s < 4) {
        *sc = S[s] & 63;
        *m = S[s + 4] & 63;
    } else {
        *sc = (S[s + 4] & 0xF) | ((S[s - 4] >> 6) << 4);
        *m = (S[s + 4] >> 4) | ((S[s] >> 6) << 4);
    }
}

/* Q4_K (qh NULL) and Q5_K: v = (d·sc)·q − dmin·m per sub-block of 32. */
AVX2 static void qk_45_block(const unsigned char *b, float *y, bool five) {
    float d = f16_at(b), dmin = f16_at(b + 2);
    const unsigned char *S = b + 4, *qh = b + 16, *qs = five ? b + 48 : b + 16;
    const __m256i nib = _mm256_set1_epi32(0xF), one = _mm256_set1_epi32(1);
    for (int c = 0; c < 4; c++) {
        int sc0, m0, sc1, m1;
        scale_min_k4(2 * c, S, &sc0, &m0);
        scale_min_k4(2 * c + 1, S, &sc1, &m1);
        __m256 d0 = _mm256_set1_ps(d * (float)sc0), dm0 = _mm256_set1_ps(dmin * (float)m0);
        __m256 d1 = _mm256_set1_ps(d * (float)sc1), dm1 = _mm256_set1_ps(dmin * (float)m1);
        for (int l = 0; l < 32; l += 8) {
            __m256i v = u8x8(qs + 32 * c + l);
            __m256i lo = _mm256_and_si256(v, nib), hi = _mm256_srli_epi32(v, 4);
            if (five) {
                __m256i h = u8x8(qh + l);
                lo = _mm256_or_si256(
                    lo, _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 2 * c), one), 4));
                hi = _mm256_or_si256(
                    hi,
                    _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 2 * c + 1), one), 4));
            }
            _mm256_storeu_ps(y + 64 * c + l,
                             _mm256_sub_ps(_mm256_mul_ps(d0, _mm256_cvtepi32_ps(lo)), dm0));
            _mm256_storeu_ps(y + 64 * c + 32 + l,
                             _mm256_sub_ps(_mm256_mul_ps(d1, _mm256_cvtepi32_ps(hi)), dm1));
        }
    }
}

/* Q6_K: v = (d·scale)·(q − 32); layout in quant.c. */
AVX2 static void q6_k_block(const unsigned char *b, float *y) {
    const unsigned char *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = f16_at(b + 208);
    const __m256i nib = _mm256_set1_epi32(0xF), three = _mm256_set1_epi32(3),
                  off = _mm256_set1_epi32(32);
    for (int n = 0; n < 2; n++) {
        for (int l = 0; l < 32; l += 8) {
            int is = l / 16;
            __m256i a = u8x8(ql + l), a2 = u8x8(ql + l + 32), h = u8x8(qh + l);
            __m256i q[4] = {
                _mm256_or_si256(_mm256_and_si256(a, nib),
                                _mm256_slli_epi32(_mm256_and_si256(h, three), 4)),
                _mm256_or_si256(
                    _mm256_and_si256(a2, nib),
                    _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 2), three), 4)),
                _mm256_or_si256(
                    _mm256_srli_epi32(a, 4),
                    _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 4), three), 4)),
                _mm256_or_si256(
                    _mm256_srli_epi32(a2, 4),
                    _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 6), three), 4)),
            };
            for (int k = 0; k < 4; k++) {
                __m256 ds = _mm256_set1_ps(d * (float)sc[is + 2 * k]);
                _mm256_storeu_ps(
                    y + l + 32 * k,
                    _mm256_mul_ps(ds, _mm256_cvtepi32_ps(_mm256_sub_epi32(q[k], off))));
            }
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

AVX2 void cpu_dequant_avx2(const be_weight *w, int row, int c0, int n, float *out) {
    if (w->dtype == BE_MLX) {
        mlx_span(w, row, c0, n, out);
        return;
    }
    int per = be_block_elems(w->dtype), bb = be_block_bytes(w->dtype);
    if (per <= 1) { /* plain types: not what this kernel is for */
        be_dequant_span(w, row, c0, n, out);
        return;
    }
    const unsigned char *r = (const unsigned char *)w->data + (size_t)row * w->row_bytes;
    for (int i = 0; i < n; i += per) {
        const unsigned char *blk = r + (size_t)((c0 + i) / per) * bb;
        switch (w->dtype) {
            case BE_Q8_0:
                q8_0_block(blk, out + i);
                break;
            case BE_Q4_0:
                q4_01_block(blk, out + i, false);
                break;
            case BE_Q4_1:
                q4_01_block(blk, out + i, true);
                break;
            case BE_Q4_K:
                qk_45_block(blk, out + i, false);
                break;
            case BE_Q5_K:
                qk_45_block(blk, out + i, true);
                break;
            case BE_Q6_K:
                q6_k_block(blk, out + i);
                break;
            default:
                be_dequant_span(w, row, c0 + i, per, out + i);
                break;
        }
    }
}

/* ---------------------------------------------------------------------------
 * Fused GEMV rows: Σ_j x_j·w_j straight from the codes, for n == 1.
 *
 * Per block (or group) the affine part is factored out, as MLX's and
 * llama.cpp's kernels do (formats.md §3.6): Σ x·(s·q + b) = s·Σ x·q + b·Σ x,
 * with Σ x per 32 values (xs) computed once per matmul call. The codes are
 * never written to memory; the float sums differ from the dequantise-then-dot
 * path only by rounding (tests/test_backend.c compares with the reference).
 */

AVX2 static inline __m256 cvt(__m256i v) {
    return _mm256_cvtepi32_ps(v);
}

AVX2 static inline __m256 xat(const float *x, int i) {
    return _mm256_loadu_ps(x + i);
}

AVX2 static float gemv_mlx(const float *x, const float *xs, const be_weight *w, int row) {
    const be_quant *q = &w->q;
    const unsigned char *codes = (const unsigned char *)w->data + (size_t)row * w->row_bytes;
    int n_groups = w->cols / q->group, per32 = q->group / 32;
    size_t g0 = (size_t)row * n_groups;
    __m256 acc = _mm256_setzero_ps();
    float bsum = 0.0f;
    for (int g = 0; g < n_groups; g++) {
        const float *xg = x + (size_t)g * q->group;
        int j0 = g * q->group;
        __m256 aq = _mm256_setzero_ps();
        if (q->bits == 4)
            for (int i = 0; i < q->group; i += 8)
                aq = _mm256_fmadd_ps(xat(xg, i), cvt(mlx_codes8(codes, 4, j0 + i)), aq);
        else if (q->bits == 8)
            for (int i = 0; i < q->group; i += 8)
                aq = _mm256_fmadd_ps(xat(xg, i), cvt(mlx_codes8(codes, 8, j0 + i)), aq);
        else
            for (int i = 0; i < q->group; i += 8)
                aq = _mm256_fmadd_ps(xat(xg, i), cvt(mlx_codes8(codes, q->bits, j0 + i)), aq);
        float sx = 0.0f;
        for (int k = 0; k < per32; k++) sx += xs[g * per32 + k];
        acc = _mm256_fmadd_ps(_mm256_set1_ps(side_at(q->scale_dtype, q->scales, g0 + g)), aq, acc);
        bsum += side_at(q->scale_dtype, q->biases, g0 + g) * sx;
    }
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h) + bsum;
}

AVX2 static float gemv_blocks(const float *x, const float *xs, const be_weight *w, int row) {
    const unsigned char *r = (const unsigned char *)w->data + (size_t)row * w->row_bytes;
    int per = be_block_elems(w->dtype), bb = be_block_bytes(w->dtype), nb = w->cols / per;
    const __m256i nib = _mm256_set1_epi32(0xF), eight = _mm256_set1_epi32(8),
                  one = _mm256_set1_epi32(1), three = _mm256_set1_epi32(3),
                  off32 = _mm256_set1_epi32(32);
    __m256 acc = _mm256_setzero_ps();
    float msum = 0.0f; /* the offset terms: Σ_blocks m·Σx */
    for (int blk = 0; blk < nb; blk++) {
        const unsigned char *b = r + (size_t)blk * bb;
        const float *xb = x + (size_t)blk * per;
        const float *xsb = xs + (size_t)blk * (per / 32);
        switch (w->dtype) {
            case BE_Q8_0: {
                __m256 aq = _mm256_mul_ps(xat(xb, 0), cvt(i8x8(b + 2)));
                for (int j = 8; j < 32; j += 8)
                    aq = _mm256_fmadd_ps(xat(xb, j), cvt(i8x8(b + 2 + j)), aq);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b)), aq, acc);
                break;
            }
            case BE_Q4_0:
            case BE_Q4_1: {
                bool q41 = w->dtype == BE_Q4_1;
                const unsigned char *qs = b + (q41 ? 4 : 2);
                __m256 aq = _mm256_setzero_ps();
                for (int j = 0; j < 16; j += 8) {
                    __m256i v = u8x8(qs + j);
                    __m256i lo = _mm256_and_si256(v, nib), hi = _mm256_srli_epi32(v, 4);
                    if (!q41) lo = _mm256_sub_epi32(lo, eight), hi = _mm256_sub_epi32(hi, eight);
                    aq = _mm256_fmadd_ps(xat(xb, j), cvt(lo), aq);
                    aq = _mm256_fmadd_ps(xat(xb, j + 16), cvt(hi), aq);
                }
                acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b)), aq, acc);
                if (q41) msum += f16_at(b + 2) * xsb[0];
                break;
            }
            case BE_Q4_K:
            case BE_Q5_K: {
                bool five = w->dtype == BE_Q5_K;
                float d = f16_at(b), dmin = f16_at(b + 2);
                const unsigned char *S = b + 4, *qh = b + 16, *qs = five ? b + 48 : b + 16;
                for (int c = 0; c < 4; c++) {
                    int sc0, m0, sc1, m1;
                    scale_min_k4(2 * c, S, &sc0, &m0);
                    scale_min_k4(2 * c + 1, S, &sc1, &m1);
                    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
                    for (int l = 0; l < 32; l += 8) {
                        __m256i v = u8x8(qs + 32 * c + l);
                        __m256i lo = _mm256_and_si256(v, nib), hi = _mm256_srli_epi32(v, 4);
                        if (five) {
                            __m256i h = u8x8(qh + l);
                            lo = _mm256_or_si256(
                                lo, _mm256_slli_epi32(
                                        _mm256_and_si256(_mm256_srli_epi32(h, 2 * c), one), 4));
                            hi = _mm256_or_si256(
                                hi, _mm256_slli_epi32(
                                        _mm256_and_si256(_mm256_srli_epi32(h, 2 * c + 1), one), 4));
                        }
                        a0 = _mm256_fmadd_ps(xat(xb, 64 * c + l), cvt(lo), a0);
                        a1 = _mm256_fmadd_ps(xat(xb, 64 * c + 32 + l), cvt(hi), a1);
                    }
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(d * (float)sc0), a0, acc);
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(d * (float)sc1), a1, acc);
                    msum += dmin * (float)m0 * xsb[2 * c] + dmin * (float)m1 * xsb[2 * c + 1];
                }
                break; /* msum is subtracted at the end: v = d·sc·q − dmin·m */
            }
            case BE_Q6_K: {
                const unsigned char *ql = b, *qh = b + 128;
                const int8_t *sc = (const int8_t *)(b + 192);
                float d = f16_at(b + 208);
                for (int n = 0; n < 2; n++) {
                    const float *xn = xb + 128 * n;
                    for (int l = 0; l < 32; l += 8) {
                        int is = l / 16;
                        __m256i a = u8x8(ql + 64 * n + l), a2 = u8x8(ql + 64 * n + l + 32),
                                h = u8x8(qh + 32 * n + l);
                        __m256i qv[4] = {
                            _mm256_or_si256(_mm256_and_si256(a, nib),
                                            _mm256_slli_epi32(_mm256_and_si256(h, three), 4)),
                            _mm256_or_si256(
                                _mm256_and_si256(a2, nib),
                                _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 2), three),
                                                  4)),
                            _mm256_or_si256(
                                _mm256_srli_epi32(a, 4),
                                _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 4), three),
                                                  4)),
                            _mm256_or_si256(
                                _mm256_srli_epi32(a2, 4),
                                _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 6), three),
                                                  4)),
                        };
                        for (int k = 0; k < 4; k++) {
                            __m256 p = _mm256_mul_ps(xat(xn, l + 32 * k),
                                                     cvt(_mm256_sub_epi32(qv[k], off32)));
                            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * (float)sc[8 * n + is + 2 * k]),
                                                  p, acc);
                        }
                    }
                }
                break;
            }
            default:
                break;
        }
    }
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float s = _mm_cvtss_f32(h);
    return w->dtype == BE_Q4_K || w->dtype == BE_Q5_K ? s - msum : s + msum;
}

AVX2 float cpu_gemv_q_avx2(const float *x, const float *xs, const be_weight *w, int row) {
    return w->dtype == BE_MLX ? gemv_mlx(x, xs, w, row) : gemv_blocks(x, xs, w, row);
}

#endif
