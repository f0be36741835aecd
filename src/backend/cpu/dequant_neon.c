/*
 * dequant_neon.c - the NEON table's quantized kernels (kernels.h
 * `cpu_kernels`): `dequant`, a span of a quantized weight row to float32,
 * and the dots that decode in registers (dot_rows_q, dot_tokens_q).
 *
 * The NEON spelling of dequant_avx2.c, structure for structure: each
 * format's meaning is be_dequant_span's (backend/quant.c), computed as the
 * same float32 arithmetic in the same order (one multiply, then one add or
 * subtract, no FMA), so the output is bit-identical to it. Codes are
 * widened 8 at a time (vmovl) and converted to float; scales are the exact
 * scalar conversions quant.c uses. Each block function hands its 8-value
 * vectors, in column order, to a sink that stores them (dequant) or FMAs
 * them into one 8-lane accumulator per token (the dots): the dots thus see
 * the floats the GEMM panel holds, in the order dot_block reads them.
 */
#include "backend/cpu/kernels.h"
#include "backend/quant.h"

#if defined(__aarch64__) && defined(__GNUC__)
#include "backend/cpu/neon.h"
#include "base/half.h"

#define INL NEON_INL

static inline float f16_at(const unsigned char *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return lv_f16_to_f32(h);
}

static inline const unsigned char *qrow(const be_weight *w, int row) {
    return (const unsigned char *)w->data + (size_t)row * w->row_bytes;
}

/* Stored at y + j (nt == 0), or acc[t] = fma(x + t·ldx + j, v, acc[t]). */
INL void emit(int j, f32x8 v, int nt, size_t ldx, float *y, const float *x, f32x8 *acc) {
    if (nt == 0) f8_store(y + j, v);
    for (int t = 0; t < nt; t++) acc[t] = f8_fma(acc[t], f8_load(x + t * ldx + j), v);
}

/* MLX codes j..j+7 of a row (j a multiple of 8): exactly `bits` bytes of
 * the LSB-first stream, starting on a byte. */
INL f32x8 mlx_codes8(const unsigned char *row, int bits, int j) {
    const unsigned char *p = row + (size_t)j * bits / 8;
    if (bits == 8) return f8_from_u8(vld1_u8(p));
    if (bits == 4) { /* byte k: code 2k in its low nibble, 2k+1 in its high */
        uint32_t word;
        memcpy(&word, p, 4);
        uint8x8_t b = vcreate_u8(word);
        return f8_from_u8(vzip1_u8(vand_u8(b, vdup_n_u8(0xF)), vshr_n_u8(b, 4)));
    }
    uint64_t win = 0; /* 2, 3, 5, 6 bits: at most 48 bits, read exactly (LE) */
    for (int k = bits - 1; k >= 0; k--) win = win << 8 | p[k];
    uint32_t mask = (1u << bits) - 1, c[8];
    for (int k = 0; k < 8; k++) c[k] = (uint32_t)(win >> k * bits) & mask;
    return (f32x8){vcvtq_f32_u32(vld1q_u32(c)), vcvtq_f32_u32(vld1q_u32(c + 4))};
}

/* One MLX group of row `codes` from column g0: v = s·q + b. */
INL void mlx_group(const unsigned char *codes, int bits, int group, int g0, float s_, float b_,
                   int nt, size_t ldx, float *y, const float *x, f32x8 *acc) {
    f32x8 s = f8_dup(s_), b = f8_dup(b_);
    if (bits == 4) /* constant bits: the common widths inline */
        for (int i = 0; i < group; i += 8)
            emit(i, f8_add(f8_mul(s, mlx_codes8(codes, 4, g0 + i)), b), nt, ldx, y, x, acc);
    else if (bits == 8)
        for (int i = 0; i < group; i += 8)
            emit(i, f8_add(f8_mul(s, mlx_codes8(codes, 8, g0 + i)), b), nt, ldx, y, x, acc);
    else
        for (int i = 0; i < group; i += 8)
            emit(i, f8_add(f8_mul(s, mlx_codes8(codes, bits, g0 + i)), b), nt, ldx, y, x, acc);
}

/* Group gi's scale and bias, converted as quant.c does. */
INL void mlx_side(const be_quant *q, size_t gi, float *s, float *b) {
    *s = be_plain_at(q->scale_dtype, q->scales, gi);
    *b = be_plain_at(q->scale_dtype, q->biases, gi);
}

INL void q8_0_block(const unsigned char *b, int nt, size_t ldx, float *y, const float *x,
                    f32x8 *acc) {
    f32x8 d = f8_dup(f16_at(b));
    for (int j = 0; j < 32; j += 8)
        emit(j, f8_mul(f8_from_s8(vld1_s8((const int8_t *)(b + 2 + j))), d), nt, ldx, y, x, acc);
}

/* Q4_0 / Q4_1: low nibbles are elements 0..15, high nibbles 16..31. */
INL void q4_01_block(const unsigned char *b, bool has_min, int nt, size_t ldx, float *y,
                     const float *x, f32x8 *acc) {
    f32x8 d = f8_dup(f16_at(b)), m = f8_dup(has_min ? f16_at(b + 2) : 0.0f);
    const unsigned char *qs = b + (has_min ? 4 : 2);
    for (int half = 0; half < 2; half++)
        for (int j = 0; j < 16; j += 8) {
            uint8x8_t v = vld1_u8(qs + j);
            uint8x8_t q = half ? vshr_n_u8(v, 4) : vand_u8(v, vdup_n_u8(0xF));
            f32x8 out;
            if (has_min)
                out = f8_add(f8_mul(f8_from_u8(q), d), m);
            else
                out = f8_mul(f8_from_s8(vsub_s8(vreinterpret_s8_u8(q), vdup_n_s8(8))), d);
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
                     const float *x, f32x8 *acc) {
    float d = f16_at(b), dmin = f16_at(b + 2);
    const unsigned char *S = b + 4, *qh = b + 16, *qs = five ? b + 48 : b + 16;
    for (int s = 0; s < 8; s++) { /* sub-block s: columns 32s.., nibble s % 2 of qs[32(s/2)..] */
        int c = s / 2, hi = s % 2, sc, m;
        scale_min_k4(s, S, &sc, &m);
        f32x8 ds = f8_dup(d * (float)sc), dm = f8_dup(dmin * (float)m);
        for (int l = 0; l < 32; l += 8) {
            uint8x8_t v = vld1_u8(qs + 32 * c + l);
            uint8x8_t q = hi ? vshr_n_u8(v, 4) : vand_u8(v, vdup_n_u8(0xF));
            if (five) { /* bit s of qh[l] is the fifth bit */
                uint8x8_t h = vshl_u8(vld1_u8(qh + l), vdup_n_s8((int8_t)-s));
                q = vorr_u8(q, vshl_n_u8(vand_u8(h, vdup_n_u8(1)), 4));
            }
            emit(32 * s + l, f8_sub(f8_mul(ds, f8_from_u8(q)), dm), nt, ldx, y, x, acc);
        }
    }
}

/* Q6_K: v = (d·scale)·(q − 32); layout in quant.c. */
INL void q6_k_block(const unsigned char *b, int nt, size_t ldx, float *y, const float *x,
                    f32x8 *acc) {
    const unsigned char *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = f16_at(b + 208);
    for (int n = 0; n < 2; n++) {
        /* quarter k of this half: columns 32k.., low (k < 2) or high nibbles of ql[32(k%2)..],
         * bits 2k..2k+1 of qh */
        for (int k = 0; k < 4; k++)
            for (int l = 0; l < 32; l += 8) {
                uint8x8_t a = vld1_u8(ql + 32 * (k % 2) + l), h = vld1_u8(qh + l);
                uint8x8_t lo = k < 2 ? vand_u8(a, vdup_n_u8(0xF)) : vshr_n_u8(a, 4);
                uint8x8_t hb = vand_u8(vshl_u8(h, vdup_n_s8((int8_t)(-2 * k))), vdup_n_u8(3));
                uint8x8_t q = vorr_u8(lo, vshl_n_u8(hb, 4));
                f32x8 ds = f8_dup(d * (float)sc[l / 16 + 2 * k]);
                f32x8 qf = f8_from_s8(vsub_s8(vreinterpret_s8_u8(q), vdup_n_s8(32)));
                emit(128 * n + 32 * k + l, f8_mul(ds, qf), nt, ldx, y, x, acc);
            }
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

INL void ggml_block(be_dtype dt, const unsigned char *b, int nt, size_t ldx, float *y,
                    const float *x, f32x8 *acc) {
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

/* Runs BODY(DT) with the ggml block type as a constant. */
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

void cpu_dequant_neon(const be_weight *w, int row, int c0, int n, float *out) {
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

/* NT tokens × R rows of columns [c0, c0+n): each block decoded once, in
 * registers, and FMA'd into one accumulator per (token, row) from zero, in
 * column order, then neon_hsum8 (n is a multiple of 32: no tail). Rows are
 * interleaved block by block so that the NT·R chains overlap. NT == 1, R ==
 * MM_GEMV_ROWS is dot_rows_q. */
INL void dot_q_t(int NT, int R, float acc[][MM_DEC_ROWS], float *acc1, const float *x, size_t ldx,
                 const be_weight *w, const int rows[], int c0, int n) {
    f32x8 a[MM_GEMV_ROWS][MM_DEC_QMAX];
    const unsigned char *r[MM_GEMV_ROWS];
    for (int k = 0; k < R; k++) {
        r[k] = qrow(w, rows[k]);
        for (int t = 0; t < NT; t++) a[k][t] = f8_zero();
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
        for (int t = 0; t < NT; t++) {
            float s = neon_hsum8(a[k][t]);
            if (acc1)
                acc1[k] += s;
            else
                acc[t][k] += s;
        }
}

void cpu_dot_rows_q_neon(float acc[], const float *x, const be_weight *w, const int rows[], int c0,
                         int n) {
    dot_q_t(1, MM_GEMV_ROWS, NULL, acc, x, 0, w, rows, c0, n);
}

/* Shapes: nr = 4 rows for nt <= 2, 2 rows for nt <= 4 (dec_qtokens4 and
 * dec_qtokens in kernels_neon.c). */
void cpu_dot_tokens_q_neon(float acc[][MM_DEC_ROWS], int nt, int nr, const float *x, size_t ldx,
                           const be_weight *w, const int rows[], int c0, int n) {
    switch (nt * 8 + nr) {
#define Q_CASE(T, R)                                                                               \
    case (T)*8 + (R):                                                                              \
        dot_q_t(T, R, acc, NULL, x, ldx, w, rows, c0, n);                                          \
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
