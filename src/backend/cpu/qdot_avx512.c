/*
 * qdot_avx512.c - the integer kernels of qdot.h with AVX-512 VNNI: one
 * vpdpbusd per step of a group accumulates 4 codes × 4 int8 activations into
 * each of the 16 lanes, so a group of 512 (or 256) values costs 8 (or 4)
 * vpdpbusd per (token, row) pair plus one float fold of its 16 lane sums.
 * The codes are unsigned (u8 operand), the activations signed (s8 operand).
 * The reference's bits (qdot_portable.c): the integer lane sums are exact,
 * and the fold is the same float operations in the same order per lane.
 */
#include "backend/cpu/qdot.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include "base/half.h"

#include <immintrin.h>
#include <string.h>

#define QA   __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define QINL QA static inline __attribute__((always_inline))

/* The codes of step k (0..lane/4) of a group, as 64 unsigned bytes. */
QINL __m512i step_codes(qk_format F, const uint8_t *codes, int k) {
    if (qk_fmt_eight_bit(F)) return _mm512_loadu_si512(codes + 64 * k);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512i v = _mm512_loadu_si512(codes + 64 * (k / 2));
    __m512i c = k & 1 ? _mm512_and_si512(_mm512_srli_epi16(v, 4), m4) : _mm512_and_si512(v, m4);
    if (F == QK_Q6_K) {
        __m512i h = _mm512_loadu_si512(codes + 128);
        h = _mm512_and_si512(_mm512_srli_epi16(h, 2 * k), _mm512_set1_epi8(3));
        c = _mm512_or_si512(c, _mm512_slli_epi16(h, 4));
    }
    return c;
}

/* ws (and wm for the affine formats) of one group from its side bytes. */
QINL void lane_scales(qk_format F, const qk_weight *w, const uint8_t *side, __m512 *ws,
                      __m512 *wm) {
    switch (F) {
        case QK_Q4_0:
        case QK_Q8_0:
            *ws = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)side));
            return;
        case QK_Q4_K: {
            const __m512i half = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
            __m128 dd = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)side)); /* d0 d1 m0 m1 */
            __m512 d = _mm512_permutexvar_ps(half, _mm512_castps128_ps512(dd));
            __m512 dmin = _mm512_permutexvar_ps(_mm512_add_epi32(half, _mm512_set1_epi32(2)),
                                                _mm512_castps128_ps512(dd));
            __m512 sc = _mm512_cvtepi32_ps(
                _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(side + 8))));
            __m512 m = _mm512_cvtepi32_ps(
                _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(side + 24))));
            *ws = _mm512_mul_ps(d, sc);
            *wm = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(_mm512_mul_ps(dmin, m)),
                                                       _mm512_set1_epi32((int)0x80000000)));
            return;
        }
        case QK_Q6_K: {
            __m512 sc =
                _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)side)));
            uint16_t h = (uint16_t)(side[16] | side[17] << 8);
            *ws = _mm512_mul_ps(_mm512_set1_ps(lv_f16_to_f32(h)), sc);
            return;
        }
        default: { /* MLX: n = 512 / group scales then biases, floats */
            int n = w->group / w->mlx_group;
            const float *s = (const float *)(const void *)side;
            if (n == 16) {
                *ws = _mm512_loadu_ps(s);
                *wm = _mm512_loadu_ps(s + 16);
                return;
            }
            __m512i idx = n == 8
                              ? _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)
                              : _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
            __m512 sv = n == 8 ? _mm512_castps256_ps512(_mm256_loadu_ps(s))
                               : _mm512_castps128_ps512(_mm_loadu_ps(s));
            __m512 bv = n == 8 ? _mm512_castps256_ps512(_mm256_loadu_ps(s + n))
                               : _mm512_castps128_ps512(_mm_loadu_ps(s + n));
            *ws = _mm512_permutexvar_ps(idx, sv);
            *wm = _mm512_permutexvar_ps(idx, bv);
            return;
        }
    }
}

/* acc = the reference's fold of one group's integer lane sums ia. */
QINL __m512 fold(qk_format F, __m512 acc, __m512i ia, __m512 ws, __m512 wm, const qk_xside *xs) {
    bool affine = qk_fmt_affine(F);
    if (!affine) ia = _mm512_sub_epi32(ia, _mm512_load_si512(xs->corr));
    __m512 s = _mm512_mul_ps(ws, _mm512_load_ps(xs->dx));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia), s, acc);
    if (affine) acc = _mm512_fmadd_ps(wm, _mm512_load_ps(xs->xs), acc);
    return acc;
}

/* One token × QK_GEMV_R rows (repeated to fill), every group. */
QINL void gemv_fmt(qk_format F, float acc[][QK_LANES], int nr, const uint8_t *xq,
                   const qk_weight *w, const int rows_in[], const int *pf) {
    enum { R = QK_GEMV_R };
    const int steps = w->lane / 4;
    const size_t xgb = qk_xgroup_bytes(w);
    const uint8_t *row[R];
    for (int r = 0; r < R; r++) {
        row[r] = w->data + (size_t)rows_in[r < nr ? r : nr - 1] * w->row_bytes;
    }
    __m512 facc[R];
    for (int r = 0; r < R; r++) facc[r] = _mm512_setzero_ps();
    for (int g = 0; g < w->n_groups; g++) {
        const uint8_t *xc = xq + (size_t)g * xgb;
        const qk_xside *xs = (const qk_xside *)(const void *)(xc + w->group);
        size_t go = (size_t)g * w->group_bytes;
        if (pf)
            for (int r = 0; r < nr; r++) qk_prefetch_group(w, pf[r], g);
        __m512i ia[R];
        for (int r = 0; r < R; r++) ia[r] = _mm512_setzero_si512();
        for (int k = 0; k < steps; k++) {
            __m512i x = _mm512_load_si512(xc + 64 * k);
#pragma GCC unroll 8
            for (int r = 0; r < R; r++)
                ia[r] = _mm512_dpbusd_epi32(ia[r], step_codes(F, row[r] + go, k), x);
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512 ws, wm = _mm512_setzero_ps();
            lane_scales(F, w, row[r] + go + w->code_bytes, &ws, &wm);
            facc[r] = fold(F, facc[r], ia[r], ws, wm, xs);
        }
    }
    for (int r = 0; r < nr; r++) _mm512_storeu_ps(acc[r], facc[r]);
}

/* QK_MAX_T tokens × QK_MAX_R rows (repeated to fill), groups [g0, g1),
 * the codes already unpacked (one byte each): per step, 4 code loads and
 * 16 vpdpbusd with the activations as memory operands; then the T × R
 * integer sums are folded into acc (in memory: 16 accumulators more would
 * not fit the registers). */
QINL void block_fmt(qk_format F, float acc[][QK_MAX_R][QK_LANES], int nt, int nr,
                    const uint8_t *const xq[], const qk_weight *w, const int rows_in[],
                    const uint8_t *const codes[], int g0, int g1) {
    enum { T = QK_MAX_T, R = QK_MAX_R };
    const int steps = F == QK_Q6_K ? 4 : 8, group = 64 * steps;
    const size_t xgb = (size_t)group + sizeof(qk_xside);
    const size_t gb = w->group_bytes;
    const uint8_t *cr[R], *side[R], *xt[T];
    for (int r = 0; r < R; r++) {
        int rr = r < nr ? r : nr - 1;
        cr[r] = codes[rr];
        side[r] = w->data + (size_t)rows_in[rr] * w->row_bytes + (size_t)g0 * gb + w->code_bytes;
    }
    for (int t = 0; t < T; t++) xt[t] = xq[t < nt ? t : nt - 1] + (size_t)g0 * xgb;
    for (int g = g0; g < g1; g++) {
        __m512i ia[T][R];
        for (int t = 0; t < T; t++)
            for (int r = 0; r < R; r++) ia[t][r] = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int k = 0; k < steps; k++) {
            __m512i c0 = _mm512_load_si512(cr[0] + 64 * k), c1 = _mm512_load_si512(cr[1] + 64 * k);
            __m512i c2 = _mm512_load_si512(cr[2] + 64 * k), c3 = _mm512_load_si512(cr[3] + 64 * k);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                __m512i x = _mm512_load_si512(xt[t] + 64 * k);
                ia[t][0] = _mm512_dpbusd_epi32(ia[t][0], c0, x);
                ia[t][1] = _mm512_dpbusd_epi32(ia[t][1], c1, x);
                ia[t][2] = _mm512_dpbusd_epi32(ia[t][2], c2, x);
                ia[t][3] = _mm512_dpbusd_epi32(ia[t][3], c3, x);
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            if (r >= nr) break;
            __m512 ws, wm = _mm512_setzero_ps();
            lane_scales(F, w, side[r], &ws, &wm);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                if (t >= nt) break;
                const qk_xside *xs = (const qk_xside *)(const void *)(xt[t] + group);
                __m512 a = _mm512_loadu_ps(acc[t][r]);
                _mm512_storeu_ps(acc[t][r], fold(F, a, ia[t][r], ws, wm, xs));
            }
        }
        for (int r = 0; r < R; r++) {
            cr[r] += group;
            side[r] += gb;
        }
        for (int t = 0; t < T; t++) xt[t] += xgb;
    }
}

/* Groups [g0, g1) of row r, unpacked to a byte per code (qdot.h `unpack`). */
QINL void unpack_fmt(qk_format F, const qk_weight *w, int r, int g0, int g1, uint8_t *dst) {
    const int steps = F == QK_Q6_K ? 4 : 8;
    const uint8_t *src = w->data + (size_t)r * w->row_bytes + (size_t)g0 * w->group_bytes;
    for (int g = g0; g < g1; g++, src += w->group_bytes)
#pragma GCC unroll 8
        for (int k = 0; k < steps; k++, dst += 64) _mm512_store_si512(dst, step_codes(F, src, k));
}

/* Quantizes one activation row (qdot.h): per 32-value block d = amax/127,
 * codes rint(x/d); stored in the lane layout with the x side. */
QA static void quantize_avx512(const qk_weight *w, const float *x, uint8_t *xq) {
    const size_t xgb = qk_xgroup_bytes(w);
    const __m512i absmask = _mm512_set1_epi32(0x7fffffff);
    for (int g = 0; g < w->n_groups; g++) {
        uint8_t *codes = xq + (size_t)g * xgb;
        qk_xside *side = (qk_xside *)(void *)(codes + w->group);
        for (int l = 0; l < QK_LANES; l++) {
            if (qk_xlane_pad(w, codes, side, g, l)) continue;
            int c0 = g * w->group + l * w->lane;
            const float *blk = x + c0 / QK_BLOCK * QK_BLOCK;
            __m512 a = _mm512_castsi512_ps(
                _mm512_and_si512(_mm512_castps_si512(_mm512_loadu_ps(blk)), absmask));
            __m512 b = _mm512_castsi512_ps(
                _mm512_and_si512(_mm512_castps_si512(_mm512_loadu_ps(blk + 16)), absmask));
            float amax = _mm512_reduce_max_ps(_mm512_max_ps(a, b));
            float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            __m512 vid = _mm512_set1_ps(id);
            const __m512 lim = _mm512_set1_ps(127.0f);
            int32_t S = 0;
            for (int j = 0; j < w->lane; j += 16) {
                __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + c0 + j), vid);
                v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-127.0f)), lim);
                __m512i q = _mm512_cvtps_epi32(v);
                S += _mm512_reduce_add_epi32(q);
                uint8_t tmp[16];
                _mm_storeu_si128((__m128i *)tmp, _mm512_cvtepi32_epi8(q));
                for (int k = 0; k < 4; k++)
                    memcpy(codes + 64 * ((j + 4 * k) / 4) + 4 * l, tmp + 4 * k, 4);
            }
            qk_xside_set(w, side, l, d, S);
        }
    }
}

#define FORMATS(X) X(QK_Q4_0) X(QK_Q8_0) X(QK_Q4_K) X(QK_Q6_K) X(QK_MLX4) X(QK_MLX8)

QA static void dot_rows_avx512(float acc[][QK_LANES], int nr, const uint8_t *xq, const qk_weight *w,
                               const int rows[], const int *pf) {
    switch (w->fmt) {
#define CASE(F)                                                                                    \
    case F:                                                                                        \
        gemv_fmt(F, acc, nr, xq, w, rows, pf);                                                     \
        return;
        FORMATS(CASE)
#undef CASE
        default:
            return;
    }
}

QA static void dot_block_avx512(float acc[][QK_MAX_R][QK_LANES], int nt, int nr,
                                const uint8_t *const xq[], const qk_weight *w, const int rows[],
                                const uint8_t *const codes[], int g0, int g1) {
    switch (w->fmt) {
#define CASE(F)                                                                                    \
    case F:                                                                                        \
        block_fmt(F, acc, nt, nr, xq, w, rows, codes, g0, g1);                                     \
        return;
        FORMATS(CASE)
#undef CASE
        default:
            return;
    }
}

QA static void unpack_avx512(const qk_weight *w, int r, int g0, int g1, uint8_t *dst) {
    switch (w->fmt) {
#define CASE(F)                                                                                    \
    case F:                                                                                        \
        unpack_fmt(F, w, r, g0, g1, dst);                                                          \
        return;
        FORMATS(CASE)
#undef CASE
        default:
            return;
    }
}

/* y[i] = bias + qk_sum16(acc[i]): the halving tree with vector adds. */
QA static void finish_avx512(float *y, const float (*acc)[QK_LANES], const float *bias, int n) {
    for (int i = 0; i < n; i++) {
        __m512 a = _mm512_loadu_ps(acc[i]);
        __m256 h8 = _mm256_add_ps(_mm512_castps512_ps256(a),
                                  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
        __m128 h4 = _mm_add_ps(_mm256_castps256_ps128(h8), _mm256_extractf128_ps(h8, 1));
        __m128 h2 = _mm_add_ps(h4, _mm_movehl_ps(h4, h4));
        __m128 h1 = _mm_add_ss(h2, _mm_shuffle_ps(h2, h2, 1));
        y[i] = (bias ? bias[i] : 0.0f) + _mm_cvtss_f32(h1);
    }
}

static const qk_kernels AVX512 = {
    .finish = finish_avx512,
    .unpack = unpack_avx512,
    .isa = "avx512",
    .quantize = quantize_avx512,
    .dot_block = dot_block_avx512,
    .dot_rows = dot_rows_avx512,
};

const qk_kernels *qk_kernels_avx512(void) {
    __builtin_cpu_init();
    bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
              __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    return ok ? &AVX512 : NULL;
}

#else

const qk_kernels *qk_kernels_avx512(void) {
    return NULL;
}

#endif
