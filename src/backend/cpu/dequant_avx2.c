/*
 * dequant_avx2.c - the AVX2 table's quantized kernels (kernels.h
 * `cpu_kernels`): `dequant`, a span of a quantized weight row to float32
 * (the AVX-512 table's too), and the dots that decode in registers.
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

#if defined(__x86_64__) && defined(__GNUC__)
#include "backend/cpu/dequant_avx2.h"

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

static bool ggml_fast(be_dtype dt) {
    return dt == BE_Q8_0 || dt == BE_Q4_0 || dt == BE_Q4_1 || dt == BE_Q4_K || dt == BE_Q5_K ||
           dt == BE_Q6_K;
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

/* Shapes: nr = 4 rows for nt <= 2, 2 rows for nt <= 4 (at most 8 FMA chains). */
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

#endif
