/*
 * qdot_avx2.c - the integer kernels of qdot.h for AVX2+FMA+F16C CPUs, with
 * AVX-VNNI's vpdpbusd (VEX, on YMM) where the CPU has it and vpmaddubsw
 * where it does not. Same bits as the reference (qdot_portable.c): the
 * integer lane sums are exact either way, and the float fold is the
 * reference's operations in its order per lane.
 *
 * The 16 lanes of a group are two YMM halves: half h holds lanes 8h..8h+7,
 * the bytes [32h, 32h + 32) of each 64-byte step. The kernels run one half
 * at a time, so a (token, row) pair needs one integer accumulator.
 *
 * The integer lane sums, per 32 bytes of codes c (u8) × activations x (s8):
 * - AVX-VNNI: vpdpbusd adds the four products of each int32 lane, exactly
 *   (not the saturating vpdpbusds).
 * - vpmaddubsw adds products in pairs into int16 and saturates, so:
 *   the 4-bit formats (c ≤ 15, |x| ≤ 127) add a pair into at most 3810,
 *   and an int16 lane over the 8 steps of a group (16 products) into at
 *   most 30480, so their int16 sums stay exact for a whole group and
 *   vpmaddwd with ones widens them once at the end;
 *   Q6_K (c ≤ 63) widens the pairs of two steps (≤ 2·16002) at a time;
 *   the 8-bit formats (c up to 255: 2·255·127 would saturate) multiply
 *   q = c − 128 instead, as |q| (u8, ≤ 128) times x with q's sign
 *   (vpsignb), 2·128·127 = 32512 per pair, widened each step. For Q8_0,
 *   c = q + 128, so Σ q·x is the reference's Σ c·x − corr (corr = 128·S)
 *   and the corr subtraction is skipped; for MLX8 the kernels add 128·S
 *   back, S = Σ x over the lane counted from the activation codes.
 *
 * Tables: "avx2-vnni" (qk_kernels_avx2 where the CPU has AVX-VNNI) and
 * "avx2" (vpmaddubsw: qk_kernels_avx2 elsewhere, and qk_kernels_avx2_novnni
 * on any AVX2 CPU, for the tests). The kernel loops (gemv and block) exist
 * twice: a function that uses vpdpbusd needs the "avxvnni" target, and the
 * maddubs variant must not have it (CPUs without AVX-VNNI). This file
 * includes itself once per variant for them (QK_AVX2_PASS).
 */
#include "backend/cpu/qdot.h"

#if defined(__x86_64__) && defined(__GNUC__)
#ifndef QK_AVX2_PASS

#include <cpuid.h>
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#define QA   __attribute__((target("avx2,fma,f16c")))
#define QV   __attribute__((target("avx2,fma,f16c,avxvnni")))
#define QINL QA static inline __attribute__((always_inline))

static inline bool four_bit(qk_format F) {
    return F == QK_Q4_0 || F == QK_Q4_K || F == QK_MLX4;
}

/* The u8 codes of code vector p, half h, of a group's codes g: c[0] and
 * c[1] those of steps 2p and 2p + 1 (4-bit formats), c[0] that of step p
 * (8-bit). */
QINL void vec_codes(qk_format F, const uint8_t *g, int p, int h, __m256i c[2]) {
    __m256i v = _mm256_loadu_si256((const __m256i *)(g + 64 * p + 32 * h));
    if (qk_fmt_eight_bit(F)) {
        c[0] = v;
        return;
    }
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    c[0] = _mm256_and_si256(v, m4);
    c[1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    if (F == QK_Q6_K) { /* bits 4..5 of step k: bits 2k..2k+1 of the last vector */
        const __m256i m = _mm256_set1_epi8(0x30);
        __m256i hb = _mm256_loadu_si256((const __m256i *)(g + 128 + 32 * h));
        __m256i h0 = p == 0 ? _mm256_slli_epi16(hb, 4) : hb;                       /* step 0 or 2 */
        __m256i h1 = p == 0 ? _mm256_slli_epi16(hb, 2) : _mm256_srli_epi16(hb, 2); /* 1 or 3 */
        c[0] = _mm256_or_si256(c[0], _mm256_and_si256(h0, m));
        c[1] = _mm256_or_si256(c[1], _mm256_and_si256(h1, m));
    }
}

/* ws (and wm for the affine formats) of half h of a group from its side
 * bytes; n: MLX scales per group (group / mlx_group). */
QINL void lane_scales(qk_format F, int n, const uint8_t *side, int h, __m256 *ws, __m256 *wm) {
    switch (F) {
        case QK_Q4_0:
        case QK_Q8_0:
            *ws = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(side + 16 * h)));
            return;
        case QK_Q4_K: { /* half h is super-block h: d[h], dmin[h] */
            __m128 dd = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)side)); /* d0 d1 m0 m1 */
            __m256 d = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(dd), _mm256_set1_epi32(h));
            __m256 dmin =
                _mm256_permutevar8x32_ps(_mm256_castps128_ps256(dd), _mm256_set1_epi32(h + 2));
            __m256 sc = _mm256_cvtepi32_ps(
                _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(side + 8 + 8 * h))));
            __m256 m = _mm256_cvtepi32_ps(
                _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(side + 24 + 8 * h))));
            *ws = _mm256_mul_ps(d, sc);
            *wm = _mm256_xor_ps(_mm256_mul_ps(dmin, m), _mm256_set1_ps(-0.0f)); /* −(dmin·m) */
            return;
        }
        case QK_Q6_K: {
            __m256 sc = _mm256_cvtepi32_ps(
                _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(side + 8 * h))));
            __m128 d = _mm_cvtph_ps(_mm_cvtsi32_si128(side[16] | side[17] << 8));
            *ws = _mm256_mul_ps(_mm256_broadcastss_ps(d), sc);
            return;
        }
        default: { /* MLX: n = 512 / group scales s[n] then biases β[n]; lane l takes l·n/16 */
            const float *s = (const float *)(const void *)side;
            if (n == 16) {
                *ws = _mm256_loadu_ps(s + 8 * h);
                *wm = _mm256_loadu_ps(s + 16 + 8 * h);
            } else if (n == 8) {
                __m256i idx = _mm256_add_epi32(_mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3),
                                               _mm256_set1_epi32(4 * h));
                *ws = _mm256_permutevar8x32_ps(_mm256_loadu_ps(s), idx);
                *wm = _mm256_permutevar8x32_ps(_mm256_loadu_ps(s + 8), idx);
            } else { /* n == 4 (MLX groups are 32, 64 or 128 values) */
                __m256i idx = _mm256_add_epi32(_mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1),
                                               _mm256_set1_epi32(2 * h));
                *ws = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(s)), idx);
                *wm = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(s + 4)), idx);
            }
            return;
        }
    }
}

/* acc = the reference's fold of half h of one group's integer lane sums ia
 * (the offset formats' corr already subtracted): dx, xsv the x side's dx
 * and (affine) xs of half h. */
QINL __m256 fold(qk_format F, __m256 acc, __m256i ia, __m256 ws, __m256 wm, __m256 dx, __m256 xsv) {
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia), _mm256_mul_ps(ws, dx), acc);
    if (qk_fmt_affine(F)) acc = _mm256_fmadd_ps(wm, xsv, acc);
    return acc;
}

/* 128·S per lane of half h of a group's activation codes xc (MLX8, maddubs
 * variant): the int16 pair sums of x stay ≤ 2·127 per step. */
QINL __m256i x_sums128(const uint8_t *xc, int steps, int h) {
    const __m256i one = _mm256_set1_epi8(1);
    __m256i s = _mm256_setzero_si256();
    for (int k = 0; k < steps; k++)
        s = _mm256_add_epi16(
            s,
            _mm256_maddubs_epi16(one, _mm256_loadu_si256((const __m256i *)(xc + 64 * k + 32 * h))));
    return _mm256_madd_epi16(s, _mm256_set1_epi16(128));
}

/* Quantizes one activation row (qdot.h): per 32-value block d = amax/127,
 * codes rint(x/d) clamped to ±127; stored in the lane layout with the x side. */
QA static void quantize_avx2(const qk_weight *w, const float *x, uint8_t *xq) {
    const size_t xgb = qk_xgroup_bytes(w);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    /* packs leave steps 0 2 4 6 in the low 128 bits, 1 3 5 7 in the high */
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int g = 0; g < w->n_groups; g++) {
        uint8_t *codes = xq + (size_t)g * xgb;
        qk_xside *side = (qk_xside *)(void *)(codes + w->group);
        for (int l = 0; l < QK_LANES; l++) {
            if (qk_xlane_pad(w, codes, side, g, l)) continue;
            int c0 = g * w->group + l * w->lane;
            const float *blk = x + c0 / QK_BLOCK * QK_BLOCK;
            __m256 m = _mm256_setzero_ps();
            for (int j = 0; j < QK_BLOCK; j += 8)
                m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(blk + j), absmask));
            __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            float amax = _mm_cvtss_f32(m4);
            float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            const __m256 vid = _mm256_set1_ps(id);
            __m256i q[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                            _mm256_setzero_si256()};
            for (int i = 0; i < w->lane / 8; i++) {
                __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + c0 + 8 * i), vid);
                v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-127.0f)),
                                  _mm256_set1_ps(127.0f));
                q[i] = _mm256_cvtps_epi32(v);
            }
            __m256i s =
                _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
            int32_t S = _mm_cvtsi128_si32(s4);
            __m256i p =
                _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            p = _mm256_permutevar8x32_epi32(p, order);
            uint32_t st[8];
            _mm256_storeu_si256((__m256i *)st, p);
            for (int k = 0; k < w->lane / 4; k++) memcpy(codes + 64 * k + 4 * l, &st[k], 4);
            qk_xside_set(w, side, l, d, S);
        }
    }
}

#define FORMATS(X) X(QK_Q4_0) X(QK_Q8_0) X(QK_Q4_K) X(QK_Q6_K) X(QK_MLX4) X(QK_MLX8)

/* The kernel loops, once with vpmaddubsw and once with vpdpbusd. */
#define QK_AVX2_PASS
#define VNNI   0
#define QT     QA
#define KN(nm) nm##_mad
#include "qdot_avx2.c" /* this file, again */
#undef VNNI
#undef QT
#undef KN
#define VNNI   1
#define QT     QV
#define KN(nm) nm##_vnni
#include "qdot_avx2.c" /* this file, again */
#undef VNNI
#undef QT
#undef KN

static const qk_kernels AVX2 = {
    .isa = "avx2",
    .quantize = quantize_avx2,
    .dot_block = dot_block_mad,
    .dot_rows = dot_rows_mad,
};

static const qk_kernels AVX2_VNNI = {
    .isa = "avx2-vnni", /* the name tells the tests' messages which of the two ran */
    .quantize = quantize_avx2,
    .dot_block = dot_block_vnni,
    .dot_rows = dot_rows_vnni,
};

/* F16C: CPUID leaf 1, ECX bit 29; AVX-VNNI: leaf 7 subleaf 1, EAX bit 4
 * (clang's __builtin_cpu_supports knows neither; the AVX2 check covers OS
 * support for YMM state). */
static bool cpu_bit(unsigned leaf, unsigned sub, int reg, int bit) {
    unsigned r[4];
    if (!__get_cpuid_count(leaf, sub, &r[0], &r[1], &r[2], &r[3])) return false;
    return r[reg] >> bit & 1;
}

const qk_kernels *qk_kernels_avx2_novnni(void) {
    __builtin_cpu_init();
    bool ok =
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_bit(1, 0, 2, 29);
    return ok ? &AVX2 : NULL;
}

const qk_kernels *qk_kernels_avx2(void) {
    const qk_kernels *k = qk_kernels_avx2_novnni();
    return k && cpu_bit(7, 1, 0, 4) ? &AVX2_VNNI : k;
}

#else /* QK_AVX2_PASS: the loops of one variant (VNNI, QT, KN) */

/* Where the integer lane sums of half h of a group against activation codes
 * xc (x side xs) start: −corr for the offset formats (except Q8_0 in the
 * maddubs variant, whose sums Σ q·x already are Σ c·x − corr), 128·S for
 * MLX8 in the maddubs variant (whose sums are Σ (c − 128)·x), else 0. */
QT static inline __attribute__((always_inline)) __m256i
KN(sums_init)(qk_format F, const uint8_t *xc, const qk_xside *xs, int h) {
    if (!qk_fmt_affine(F) && (VNNI || F != QK_Q8_0))
        return _mm256_sub_epi32(_mm256_setzero_si256(),
                                _mm256_loadu_si256((const __m256i *)(xs->corr + 8 * h)));
    if (!VNNI && F == QK_MLX8) return x_sums128(xc, 8, h);
    return _mm256_setzero_si256();
}

/* ia[t][r] = init[t] + the integer lane sums of half h of one group for TT tokens
 * (activation codes xc[t]) × RR rows (codes cg[r]), one code vector at a
 * time (two steps of the 4-bit formats, one of the 8-bit). */
QT static inline __attribute__((always_inline)) void
KN(lane_sums)(qk_format F, int TT, int RR, __m256i ia[][8], const __m256i init[],
              const uint8_t *const cg[], const uint8_t *const xc[], int steps, int h) {
    const int spv = qk_fmt_eight_bit(F) ? 1 : 2, nvec = steps / spv;
#if !VNNI
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i a16[4][8];
#endif
    for (int t = 0; t < TT; t++)
        for (int r = 0; r < RR; r++) {
            ia[t][r] = init[t];
#if !VNNI
            a16[t][r] = _mm256_setzero_si256();
#endif
        }
#pragma GCC unroll 8
    for (int p = 0; p < nvec; p++) {
#pragma GCC unroll 8
        for (int r = 0; r < RR; r++) {
            __m256i c[2], ca = _mm256_setzero_si256();
            vec_codes(F, cg[r], p, h, c);
#if !VNNI
            if (qk_fmt_eight_bit(F)) {
                c[0] = _mm256_xor_si256(c[0], _mm256_set1_epi8((char)0x80)); /* q = c − 128 */
                ca = _mm256_abs_epi8(c[0]);
            }
#endif
            (void)ca;
#pragma GCC unroll 4
            for (int t = 0; t < TT; t++) {
                const uint8_t *xp = xc[t] + 64 * spv * p + 32 * h;
                __m256i x0 = _mm256_loadu_si256((const __m256i *)xp);
#if VNNI
                ia[t][r] = _mm256_dpbusd_avx_epi32(ia[t][r], c[0], x0);
                if (spv == 2)
                    ia[t][r] = _mm256_dpbusd_avx_epi32(
                        ia[t][r], c[1], _mm256_loadu_si256((const __m256i *)(xp + 64)));
#else
                if (qk_fmt_eight_bit(F)) {
                    __m256i s = _mm256_maddubs_epi16(ca, _mm256_sign_epi8(x0, c[0]));
                    ia[t][r] = _mm256_add_epi32(ia[t][r], _mm256_madd_epi16(s, ones));
                    continue;
                }
                __m256i s = _mm256_add_epi16(
                    _mm256_maddubs_epi16(c[0], x0),
                    _mm256_maddubs_epi16(c[1], _mm256_loadu_si256((const __m256i *)(xp + 64))));
                if (four_bit(F))
                    a16[t][r] = _mm256_add_epi16(a16[t][r], s);
                else /* Q6_K: two steps' pairs ≤ 2·16002 */
                    ia[t][r] = _mm256_add_epi32(ia[t][r], _mm256_madd_epi16(s, ones));
#endif
            }
        }
    }
#if !VNNI
    if (four_bit(F))
        for (int t = 0; t < TT; t++)
            for (int r = 0; r < RR; r++)
                ia[t][r] = _mm256_add_epi32(ia[t][r], _mm256_madd_epi16(a16[t][r], ones));
#endif
}

/* One token × QK_GEMV_R rows (repeated to fill), every group. */
QT static inline __attribute__((always_inline)) void
KN(gemv_fmt)(qk_format F, float acc[][QK_LANES], int nr, const uint8_t *xq, const qk_weight *w,
             const int rows_in[], const int *pf) {
    enum { R = QK_GEMV_R };
    const int steps = F == QK_Q6_K ? 4 : 8; /* lane / 4 */
    const size_t xgb = qk_xgroup_bytes(w);
    const int nmlx = w->mlx_group ? w->group / w->mlx_group : 0;
    const uint8_t *row[R];
    for (int r = 0; r < R; r++) {
        row[r] = w->data + (size_t)rows_in[r < nr ? r : nr - 1] * w->row_bytes;
    }
    __m256 facc[R][2];
    for (int r = 0; r < R; r++) facc[r][0] = facc[r][1] = _mm256_setzero_ps();
    for (int g = 0; g < w->n_groups; g++) {
        const uint8_t *xc = xq + (size_t)g * xgb;
        const qk_xside *xs = (const qk_xside *)(const void *)(xc + w->group);
        size_t go = (size_t)g * w->group_bytes;
        if (pf)
            for (int r = 0; r < nr; r++) qk_prefetch_group(w, pf[r], g);
        const uint8_t *cg[R];
        for (int r = 0; r < R; r++) cg[r] = row[r] + go;
        for (int h = 0; h < 2; h++) {
            __m256i ia[1][8], init = KN(sums_init)(F, xc, xs, h);
            KN(lane_sums)(F, 1, R, ia, &init, cg, &xc, steps, h);
            __m256 dx = _mm256_loadu_ps(xs->dx + 8 * h), xsv = _mm256_loadu_ps(xs->xs + 8 * h);
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                __m256 ws, wm = _mm256_setzero_ps();
                lane_scales(F, nmlx, cg[r] + w->code_bytes, h, &ws, &wm);
                facc[r][h] = fold(F, facc[r][h], ia[0][r], ws, wm, dx, xsv);
            }
        }
    }
    for (int r = 0; r < nr; r++) {
        _mm256_storeu_ps(acc[r], facc[r][0]);
        _mm256_storeu_ps(acc[r] + 8, facc[r][1]);
    }
}

/* QK_MAX_T tokens × QK_MAX_R rows (tokens repeated to fill), groups [g0, g1):
 * per half, two passes of 4 tokens × 2 rows. */
QT static inline __attribute__((always_inline)) void
KN(block_fmt)(qk_format F, float acc[][QK_MAX_R][QK_LANES], int nt, int nr,
              const uint8_t *const xq[], const qk_weight *w, const int rows_in[], int g0, int g1) {
    /* reads the packed codes itself: the table has no unpack (its maddubs
     * decodes a packed vector as cheaply as a load) */
    enum { T = QK_MAX_T, R = QK_MAX_R, RR = 2 };
    const int steps = F == QK_Q6_K ? 4 : 8; /* lane / 4 */
    const size_t xgb = qk_xgroup_bytes(w);
    const int nmlx = w->mlx_group ? w->group / w->mlx_group : 0;
    const uint8_t *row[R], *xt[T];
    for (int r = 0; r < R; r++)
        row[r] = w->data + (size_t)rows_in[r < nr ? r : nr - 1] * w->row_bytes;
    for (int t = 0; t < T; t++) xt[t] = xq[t < nt ? t : nt - 1];
    for (int g = g0; g < g1; g++) {
        size_t go = (size_t)g * w->group_bytes, xo = (size_t)g * xgb;
        const uint8_t *xc[T];
        for (int t = 0; t < T; t++) xc[t] = xt[t] + xo;
        for (int h = 0; h < 2; h++) {
            __m256i init[T];
            for (int t = 0; t < T; t++)
                init[t] =
                    KN(sums_init)(F, xc[t], (const qk_xside *)(const void *)(xc[t] + w->group), h);
            for (int r0 = 0; r0 < nr; r0 += RR) {
                const uint8_t *cg[RR];
                __m256 ws[RR], wm[RR];
                for (int r = 0; r < RR; r++) {
                    cg[r] = row[r0 + r] + go;
                    wm[r] = _mm256_setzero_ps();
                    lane_scales(F, nmlx, cg[r] + w->code_bytes, h, &ws[r], &wm[r]);
                }
                __m256i ia[T][8];
                KN(lane_sums)(F, T, RR, ia, init, cg, xc, steps, h);
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) {
                    if (t >= nt) break;
                    const qk_xside *xs = (const qk_xside *)(const void *)(xc[t] + w->group);
                    __m256 dx = _mm256_loadu_ps(xs->dx + 8 * h),
                           xsv = _mm256_loadu_ps(xs->xs + 8 * h);
#pragma GCC unroll 2
                    for (int r = 0; r < RR; r++) {
                        if (r0 + r >= nr) break;
                        float *a = acc[t][r0 + r] + 8 * h;
                        _mm256_storeu_ps(
                            a, fold(F, _mm256_loadu_ps(a), ia[t][r], ws[r], wm[r], dx, xsv));
                    }
                }
            }
        }
    }
}

QT static void KN(dot_rows)(float acc[][QK_LANES], int nr, const uint8_t *xq, const qk_weight *w,
                            const int rows[], const int *pf) {
    switch (w->fmt) {
#define CASE(F)                                                                                    \
    case F:                                                                                        \
        KN(gemv_fmt)(F, acc, nr, xq, w, rows, pf);                                                 \
        return;
        FORMATS(CASE)
#undef CASE
        default:
            return;
    }
}

QT static void KN(dot_block)(float acc[][QK_MAX_R][QK_LANES], int nt, int nr,
                             const uint8_t *const xq[], const qk_weight *w, const int rows[],
                             const uint8_t *const codes[], int g0, int g1) {
    (void)codes;
    switch (w->fmt) {
#define CASE(F)                                                                                    \
    case F:                                                                                        \
        KN(block_fmt)(F, acc, nt, nr, xq, w, rows, g0, g1);                                        \
        return;
        FORMATS(CASE)
#undef CASE
        default:
            return;
    }
}

#endif /* QK_AVX2_PASS */
#else

const qk_kernels *qk_kernels_avx2(void) {
    return NULL;
}
const qk_kernels *qk_kernels_avx2_novnni(void) {
    return NULL;
}

#endif
