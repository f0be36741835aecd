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
 *
 * The same decoders also serve the n == 1 matmul (cpu_kernels `dot_rows_q`):
 * each block function hands its vectors, in increasing column order, to a
 * sink that either stores them (dequant) or adds x·v into one 8-lane FMA
 * accumulator (dot). The dot thus sees exactly the floats the dequantiser
 * stores, in the order the GEMM's dot_block reads them from its panel, so
 * the n == 1 sums are bit-identical to the GEMM's without the panel. The
 * decode batch's `dot_tokens_q` uses the same sink with several tokens:
 * each decoded vector is FMA'd into one accumulator per token.
 */
#include "backend/cpu/kernels.h"
#include "backend/quant.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include "backend/cpu/avx512.h"

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

/* Where a block function's vectors go: stored at y (nt == 0), or for the
 * dot of nt tokens acc[t] = fma(x + t·ldx, v, acc[t]). Every function is
 * inlined and nt is a constant at each call, so the dequantiser and the dot get their own
 * branch-free copies. */
#define INL AVX2 static inline __attribute__((always_inline))

INL void emit(int j, __m256 v, int nt, size_t ldx, float *y, const float *x, __m256 *acc) {
    if (nt == 0) _mm256_storeu_ps(y + j, v);
    for (int t = 0; t < nt; t++) /* token t's x at x + t·ldx */
        acc[t] = _mm256_fmadd_ps(_mm256_loadu_ps(x + t * ldx + j), v, acc[t]);
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

/* One MLX group of row `codes` from column g0: v = s·q + b. */
INL void mlx_group(const unsigned char *codes, int bits, int group, int g0, float s_, float b_,
                   int nt, size_t ldx, float *y, const float *x, __m256 *acc) {
    __m256 s = _mm256_set1_ps(s_), b = _mm256_set1_ps(b_);
    if (bits == 4) /* constant bits: the common widths inline to a few instructions */
        for (int i = 0; i < group; i += 8)
            emit(i,
                 _mm256_add_ps(_mm256_mul_ps(s, _mm256_cvtepi32_ps(mlx_codes8(codes, 4, g0 + i))),
                               b),
                 nt, ldx, y, x, acc);
    else if (bits == 8)
        for (int i = 0; i < group; i += 8)
            emit(i,
                 _mm256_add_ps(_mm256_mul_ps(s, _mm256_cvtepi32_ps(mlx_codes8(codes, 8, g0 + i))),
                               b),
                 nt, ldx, y, x, acc);
    else
        for (int i = 0; i < group; i += 8)
            emit(i,
                 _mm256_add_ps(
                     _mm256_mul_ps(s, _mm256_cvtepi32_ps(mlx_codes8(codes, bits, g0 + i))), b),
                 nt, ldx, y, x, acc);
}

/* Group gi's scale and bias. */
INL void mlx_side(const be_quant *q, size_t gi, float *s, float *b) {
    *s = side_at(q->scale_dtype, q->scales, gi);
    *b = side_at(q->scale_dtype, q->biases, gi);
}

INL void q8_0_block(const unsigned char *b, int nt, size_t ldx, float *y, const float *x,
                    __m256 *acc) {
    __m256 d = _mm256_set1_ps(f16_at(b));
    for (int j = 0; j < 32; j += 8)
        emit(j, _mm256_mul_ps(_mm256_cvtepi32_ps(i8x8(b + 2 + j)), d), nt, ldx, y, x, acc);
}

/* Q4_0 / Q4_1: low nibbles are elements 0..15, high nibbles 16..31. */
INL void q4_01_block(const unsigned char *b, bool has_min, int nt, size_t ldx, float *y,
                     const float *x, __m256 *acc) {
    __m256 d = _mm256_set1_ps(f16_at(b));
    __m256 m = _mm256_set1_ps(has_min ? f16_at(b + 2) : 0.0f);
    const unsigned char *qs = b + (has_min ? 4 : 2);
    const __m256i nib = _mm256_set1_epi32(0xF), eight = _mm256_set1_epi32(8);
    for (int half = 0; half < 2; half++) /* low nibbles, then high: column order */
        for (int j = 0; j < 16; j += 8) {
            __m256i v = u8x8(qs + j);
            __m256i q = half ? _mm256_srli_epi32(v, 4) : _mm256_and_si256(v, nib);
            __m256 out;
            if (has_min)
                out = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(q), d), m);
            else
                out = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, eight)), d);
            emit(16 * half + j, out, nt, ldx, y, x, acc);
        }
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

/* Q4_K and Q5_K: v = (d·sc)·q − dmin·m per sub-block of 32. */
INL void qk_45_block(const unsigned char *b, bool five, int nt, size_t ldx, float *y,
                     const float *x, __m256 *acc) {
    float d = f16_at(b), dmin = f16_at(b + 2);
    const unsigned char *S = b + 4, *qh = b + 16, *qs = five ? b + 48 : b + 16;
    const __m256i nib = _mm256_set1_epi32(0xF), one = _mm256_set1_epi32(1);
    for (int s = 0; s < 8; s++) { /* sub-block s: columns 32s.., nibble s % 2 of qs[32(s/2)..] */
        int c = s / 2, hi = s % 2, sc, m;
        scale_min_k4(s, S, &sc, &m);
        __m256 ds = _mm256_set1_ps(d * (float)sc), dm = _mm256_set1_ps(dmin * (float)m);
        for (int l = 0; l < 32; l += 8) {
            __m256i v = u8x8(qs + 32 * c + l);
            __m256i q = hi ? _mm256_srli_epi32(v, 4) : _mm256_and_si256(v, nib);
            if (five)
                q = _mm256_or_si256(
                    q, _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u8x8(qh + l), s), one),
                                         4));
            emit(32 * s + l, _mm256_sub_ps(_mm256_mul_ps(ds, _mm256_cvtepi32_ps(q)), dm), nt, ldx,
                 y, x, acc);
        }
    }
}

/* Q6_K: v = (d·scale)·(q − 32); layout in quant.c. */
INL void q6_k_block(const unsigned char *b, int nt, size_t ldx, float *y, const float *x,
                    __m256 *acc) {
    const unsigned char *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = f16_at(b + 208);
    const __m256i nib = _mm256_set1_epi32(0xF), three = _mm256_set1_epi32(3),
                  off = _mm256_set1_epi32(32);
    for (int n = 0; n < 2; n++) {
        /* quarter k of this half: columns 32k.., low (k even) or high nibbles of ql[32(k%2)..],
         * bits 2k..2k+1 of qh */
        for (int k = 0; k < 4; k++)
            for (int l = 0; l < 32; l += 8) {
                __m256i a = u8x8(ql + 32 * (k % 2) + l), h = u8x8(qh + l);
                __m256i lo = k < 2 ? _mm256_and_si256(a, nib) : _mm256_srli_epi32(a, 4);
                __m256i q = _mm256_or_si256(
                    lo, _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 2 * k), three), 4));
                __m256 ds = _mm256_set1_ps(d * (float)sc[l / 16 + 2 * k]);
                emit(128 * n + 32 * k + l,
                     _mm256_mul_ps(ds, _mm256_cvtepi32_ps(_mm256_sub_epi32(q, off))), nt, ldx, y, x,
                     acc);
            }
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

/* Block blk (of `per` values, at b) of a ggml row: dequantised to y, or dotted with x. */
INL void ggml_block(be_dtype dt, const unsigned char *b, int nt, size_t ldx, float *y,
                    const float *x, __m256 *acc) {
    switch (dt) {
        case BE_Q8_0:
            q8_0_block(b, nt, ldx, y, x, acc);
            break;
        case BE_Q4_0:
            q4_01_block(b, false, nt, ldx, y, x, acc);
            break;
        case BE_Q4_1:
            q4_01_block(b, true, nt, ldx, y, x, acc);
            break;
        case BE_Q4_K:
            qk_45_block(b, false, nt, ldx, y, x, acc);
            break;
        case BE_Q5_K:
            qk_45_block(b, true, nt, ldx, y, x, acc);
            break;
        case BE_Q6_K:
            q6_k_block(b, nt, ldx, y, x, acc);
            break;
        default:
            break;
    }
}

static const unsigned char *qrow(const be_weight *w, int row) {
    return (const unsigned char *)w->data + (size_t)row * w->row_bytes;
}

static bool ggml_fast(be_dtype dt) {
    return dt == BE_Q8_0 || dt == BE_Q4_0 || dt == BE_Q4_1 || dt == BE_Q4_K || dt == BE_Q5_K ||
           dt == BE_Q6_K;
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

AVX2 void cpu_dequant_avx2(const be_weight *w, int row, int c0, int n, float *out) {
    const unsigned char *r = qrow(w, row);
    if (w->dtype == BE_MLX) {
        const be_quant *q = &w->q;
        size_t n_groups = (size_t)w->cols / q->group;
        for (int g0 = c0; g0 < c0 + n; g0 += q->group) {
            float s, b;
            mlx_side(q, (size_t)row * n_groups + (size_t)(g0 / q->group), &s, &b);
            mlx_group(r, q->bits, q->group, g0, s, b, 0, 0, out + (g0 - c0), NULL, NULL);
        }
        return;
    }
    if (!ggml_fast(w->dtype)) { /* plain types: not what this kernel is for */
        be_dequant_span(w, row, c0, n, out);
        return;
    }
    int per = be_block_elems(w->dtype), bb = be_block_bytes(w->dtype);
#define SPAN(DT)                                                                                   \
    for (int i = 0; i < n; i += per)                                                               \
        ggml_block(DT, r + (size_t)((c0 + i) / per) * bb, 0, 0, out + i, NULL, NULL);
    GGML_DISPATCH(w->dtype, SPAN)
#undef SPAN
}

/* The n == 1 matmul's slice for MM_GEMV_ROWS rows: acc[r] += Σ x[i]·v[r][i]
 * over columns [c0, c0+n), v the dequantised values; per row one 8-lane FMA
 * accumulator from zero, then its horizontal sum (as dot_block_avx2: n is a
 * multiple of 32, so there is no scalar tail). Rows are interleaved block by
 * block so that the rows' FMA chains overlap. */
AVX2 void cpu_dot_rows_q_avx2(float acc[], const float *x, const be_weight *w, const int rows[],
                              int c0, int n) {
    __m256 a[MM_GEMV_ROWS];
    const unsigned char *r[MM_GEMV_ROWS];
    for (int k = 0; k < MM_GEMV_ROWS; k++) {
        a[k] = _mm256_setzero_ps();
        r[k] = qrow(w, rows[k]);
    }
    if (w->dtype == BE_MLX) {
        const be_quant *q = &w->q;
        size_t n_groups = (size_t)w->cols / q->group;
        for (int g0 = c0; g0 < c0 + n; g0 += q->group)
            for (int k = 0; k < MM_GEMV_ROWS; k++) {
                float s, b;
                mlx_side(q, (size_t)rows[k] * n_groups + (size_t)(g0 / q->group), &s, &b);
                mlx_group(r[k], q->bits, q->group, g0, s, b, 1, 0, NULL, x + (g0 - c0), &a[k]);
            }
    } else {
        int per = be_block_elems(w->dtype), bb = be_block_bytes(w->dtype);
#define ROWS(DT)                                                                                   \
    for (int i = 0; i < n; i += per)                                                               \
        for (int k = 0; k < MM_GEMV_ROWS; k++)                                                     \
            ggml_block(DT, r[k] + (size_t)((c0 + i) / per) * bb, 1, 0, NULL, x + i, &a[k]);
        GGML_DISPATCH(w->dtype, ROWS)
#undef ROWS
    }
    for (int k = 0; k < MM_GEMV_ROWS; k++) acc[k] += cpu_hsum8(a[k]);
}

/* The decode batch's quantized kernel (cpu_kernels `dot_tokens_q`):
 * acc[t][k] += Σ x[t·ldx + i]·v[k][i] for NT tokens and R rows, v[k] the
 * values of row rows[k] over columns [c0, c0+n). Each block is decoded
 * once, in registers, and FMA'd into NT accumulators (one per token and
 * row, from zero, in column order, then the same horizontal sum): the
 * arithmetic dot_rows_q gives each token alone. Rows are interleaved block
 * by block as in dot_rows_q, so that NT·R chains overlap. NT and R are
 * constants per copy (the switch below). */
INL void dot_tokens_q_t(int NT, int R, float acc[][MM_DEC_ROWS], const float *x, size_t ldx,
                        const be_weight *w, const int rows[], int c0, int n) {
    __m256 a[MM_DEC_ROWS][MM_DEC_QMAX];
    const unsigned char *r[MM_DEC_ROWS];
    for (int k = 0; k < R; k++) {
        r[k] = qrow(w, rows[k]);
        for (int t = 0; t < NT; t++) a[k][t] = _mm256_setzero_ps();
    }
    if (w->dtype == BE_MLX) {
        const be_quant *q = &w->q;
        size_t n_groups = (size_t)w->cols / q->group;
        for (int g0 = c0; g0 < c0 + n; g0 += q->group)
            for (int k = 0; k < R; k++) {
                float s, b;
                mlx_side(q, (size_t)rows[k] * n_groups + (size_t)(g0 / q->group), &s, &b);
                mlx_group(r[k], q->bits, q->group, g0, s, b, NT, ldx, NULL, x + (g0 - c0), a[k]);
            }
    } else {
        int per = be_block_elems(w->dtype), bb = be_block_bytes(w->dtype);
#define SPAN(DT)                                                                                   \
    for (int i = 0; i < n; i += per)                                                               \
        for (int k = 0; k < R; k++)                                                                \
            ggml_block(DT, r[k] + (size_t)((c0 + i) / per) * bb, NT, ldx, NULL, x + i, a[k]);
        GGML_DISPATCH(w->dtype, SPAN)
#undef SPAN
    }
    for (int k = 0; k < R; k++)
        for (int t = 0; t < NT; t++) acc[t][k] += cpu_hsum8(a[k][t]);
}

/* Shapes: nr = 4 rows for nt <= 2, 2 rows for nt <= 4 (8 FMA chains). */
AVX2 void cpu_dot_tokens_q_avx2(float acc[][MM_DEC_ROWS], int nt, int nr, const float *x,
                                size_t ldx, const be_weight *w, const int rows[], int c0, int n) {
    switch (nt * 8 + nr) {
#define Q_CASE(T, R)                                                                               \
    case (T)*8 + (R):                                                                              \
        dot_tokens_q_t(T, R, acc, x, ldx, w, rows, c0, n);                                         \
        break;
        Q_CASE(1, 4)
        Q_CASE(2, 4)
        Q_CASE(3, 2)
        Q_CASE(4, 2)
#undef Q_CASE
        default:
            break;
    }
}

/* ---------------------------------------------------------------------------
 * AVX-512F: two rows at once
 *
 * The dot kernels again (cpu_kernels `dot_rows_q`, `dot_tokens_q` of the
 * AVX-512 table), decoding rows A and B together: lanes 0-7 hold row A's 8
 * values, lanes 8-15 row B's, each computed with the operations of the
 * 8-lane decoders above in the same order (exact widenings and
 * conversions, one multiply, then one add or subtract), then FMA'd against
 * the token's 8 floats in both halves. Every lane is thus its row's 8-lane
 * chain, and each half's horizontal sum is the AVX2 kernel's: the same
 * bits, in half the instructions.
 */
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
 * (NT = 1: dot_rows_q's), rows interleaved pair by pair. */
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
