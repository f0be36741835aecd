/*
 * qdot_neon_impl.h - the body of the NEON integer kernels (qdot_neon.c),
 * included twice: with QN_DOTPROD 1 (sdot, functions compiled for
 * armv8.2-a+dotprod) and 0 (vmull + pairwise adds, any ARMv8-A). QN(name)
 * gives each copy its own names and QN_TARGET its target attribute; every
 * function of a copy has the same target, so they inline into each other.
 *
 * Lane sums. A 64-byte step of a group is 4 registers of 16 bytes, each 4
 * lanes of 4 bytes: sdot (vdotq_s32) sums exactly one lane's 4 products
 * into one int32 lane, and vmull_s8 + vpaddlq_s16 + vpaddq_s32 give the same
 * sums without it. Both multiply signed bytes: the 4- and 6-bit codes (0..63)
 * are already non-negative int8, the 8-bit ones (0..255) are taken as
 * c − 128. For Q8_0 (offset 128) that makes the lane sum Σ (c − 128)·q,
 * which is the reference's Σ c·q − corr exactly; for MLX8 (no offset) the
 * 128·Σ q it lacks is added back from a dot with ones. The integers are thus
 * the reference's, and the float fold is its operations in its order.
 */

QN_INL int32x4_t QN(dot16)(int32x4_t acc, int8x16_t c, int8x16_t x) {
#if QN_DOTPROD
    return vdotq_s32(acc, c, x);
#else
    int32x4_t lo = vpaddlq_s16(vmull_s8(vget_low_s8(c), vget_low_s8(x)));
    int32x4_t hi = vpaddlq_s16(vmull_high_s8(c, x));
    return vaddq_s32(acc, vpaddq_s32(lo, hi));
#endif
}

/* Quarter q (lanes 4q..4q+3: 16 bytes) of step k of a packed group's
 * codes: raw (unpack) or as the signed bytes the dots multiply (8-bit codes
 * − 128). */
QN_INL uint8x16_t QN(code_q)(qk_format F, const uint8_t *codes, int k, int q, bool as_signed) {
    if (qk_fmt_eight_bit(F)) {
        uint8x16_t c = vld1q_u8(codes + 64 * k + 16 * q);
        return as_signed ? veorq_u8(c, vdupq_n_u8(0x80)) : c;
    }
    uint8x16_t v = vld1q_u8(codes + 64 * (k / 2) + 16 * q);
    uint8x16_t c = k & 1 ? vshrq_n_u8(v, 4) : vandq_u8(v, vdupq_n_u8(0x0F));
    if (F == QK_Q6_K) {
        uint8x16_t h = vld1q_u8(codes + 128 + 16 * q);
        h = vandq_u8(vshlq_u8(h, vdupq_n_s8((int8_t)(-2 * k))), vdupq_n_u8(3));
        c = vorrq_u8(c, vshlq_n_u8(h, 4));
    }
    return c;
}

/* Quarter q of step k of a quantized activation group's codes. */
QN_INL int8x16_t QN(x_q)(const uint8_t *xc, int k, int q) {
    return vld1q_s8((const int8_t *)xc + 64 * k + 16 * q);
}

/* MLX8: the lanes' Σ q of a token's codes over a group, quarter by quarter. */
QN_INL void QN(x_sums)(qk_format F, const uint8_t *xc, int steps, int32x4_t sx[4]) {
    for (int q = 0; q < 4; q++) {
        sx[q] = vdupq_n_s32(0);
        if (F == QK_MLX8)
            for (int k = 0; k < steps; k++)
                sx[q] = QN(dot16)(sx[q], vdupq_n_s8(1), QN(x_q)(xc, k, q));
    }
}

/* Quarter q of the reference's fold of one group into a: integer lane
 * sums i, lane scales ws and mins wm (lane_scales), sx the lanes' Σ q
 * (MLX8 only). */
QN_INL float32x4_t QN(fold4)(qk_format F, float32x4_t a, int32x4_t i, int32x4_t sx, float32x4_t ws,
                             float32x4_t wm, const qk_xside *xs, int q) {
    if (F == QK_Q4_0 || F == QK_Q6_K) i = vsubq_s32(i, vld1q_s32(xs->corr + 4 * q));
    if (F == QK_MLX8) i = vaddq_s32(i, vshlq_n_s32(sx, 7));
    a = vfmaq_f32(a, vcvtq_f32_s32(i), vmulq_f32(ws, vld1q_f32(xs->dx + 4 * q)));
    if (qk_fmt_affine(F)) a = vfmaq_f32(a, wm, vld1q_f32(xs->xs + 4 * q));
    return a;
}

/* One token × nr rows, every group, from zero (qdot.h `dot_rows`): per
 * row and quarter one chain of dots over the group's steps (x from L1). */
QN_INL void QN(gemv_fmt)(qk_format F, float acc[][QK_LANES], int nr, const uint8_t *xq,
                         const qk_weight *w, const int rows[], const int *pf) {
    const int steps = w->lane / 4;
    const size_t xgb = qk_xgroup_bytes(w);
    for (int r = 0; r < nr; r++) memset(acc[r], 0, sizeof acc[r]);
    for (int g = 0; g < w->n_groups; g++) {
        const uint8_t *xc = xq + (size_t)g * xgb;
        const qk_xside *xs = (const qk_xside *)(const void *)(xc + w->group);
        size_t go = (size_t)g * w->group_bytes;
        if (pf)
            for (int r = 0; r < nr; r++) qk_prefetch_group(w, pf[r], g);
        int32x4_t sx[4];
        QN(x_sums)(F, xc, steps, sx);
        for (int r = 0; r < nr; r++) {
            const uint8_t *codes = w->data + (size_t)rows[r] * w->row_bytes + go;
            float32x4_t ws[4], wm[4];
            lane_scales(F, w, codes + w->code_bytes, ws, wm);
            for (int q = 0; q < 4; q++) {
                int32x4_t ia = vdupq_n_s32(0);
                for (int k = 0; k < steps; k++)
                    ia = QN(dot16)(ia, vreinterpretq_s8_u8(QN(code_q)(F, codes, k, q, true)),
                                   QN(x_q)(xc, k, q));
                float32x4_t a = vld1q_f32(acc[r] + 4 * q);
                vst1q_f32(acc[r] + 4 * q, QN(fold4)(F, a, ia, sx[q], ws[q], wm[q], xs, q));
            }
        }
    }
}

/* QK_MAX_T tokens × QK_MAX_R rows (the last repeated to fill nt × nr) over
 * groups [g0, g1), codes unpacked (one byte each, raw), continuing acc
 * (qdot.h `dot_block`): per quarter, 16 int32 accumulators in registers,
 * each step 4 code and 4 x loads for 16 dots. */
QN_INL void QN(block_fmt)(qk_format F, float acc[][QK_MAX_R][QK_LANES], int nt, int nr,
                          const uint8_t *const xq[], const qk_weight *w, const int rows[],
                          const uint8_t *const codes[], int g0, int g1) {
    enum { T = QK_MAX_T, R = QK_MAX_R };
    const int steps = w->lane / 4;
    const size_t xgb = qk_xgroup_bytes(w);
    const bool eight = qk_fmt_eight_bit(F);
    for (int g = g0; g < g1; g++) {
        const uint8_t *xc[T], *cr[R];
        const qk_xside *xs[T];
        float32x4_t ws[R][4], wm[R][4];
        int32x4_t sx[T][4];
        for (int t = 0; t < T; t++) {
            xc[t] = xq[t < nt ? t : nt - 1] + (size_t)g * xgb;
            xs[t] = (const qk_xside *)(const void *)(xc[t] + w->group);
            QN(x_sums)(F, xc[t], steps, sx[t]);
        }
        for (int r = 0; r < R; r++) {
            int rr = r < nr ? r : nr - 1;
            cr[r] = codes[rr] + (size_t)(g - g0) * w->group;
            lane_scales(F, w,
                        w->data + (size_t)rows[rr] * w->row_bytes + (size_t)g * w->group_bytes +
                            w->code_bytes,
                        ws[r], wm[r]);
        }
        for (int q = 0; q < 4; q++) {
            int32x4_t ia[T][R];
            for (int t = 0; t < T; t++)
                for (int r = 0; r < R; r++) ia[t][r] = vdupq_n_s32(0);
            for (int k = 0; k < steps; k++) {
                int8x16_t c[R];
                for (int r = 0; r < R; r++) {
                    uint8x16_t v = vld1q_u8(cr[r] + 64 * k + 16 * q);
                    c[r] = vreinterpretq_s8_u8(eight ? veorq_u8(v, vdupq_n_u8(0x80)) : v);
                }
                for (int t = 0; t < T; t++) {
                    int8x16_t x = QN(x_q)(xc[t], k, q);
                    for (int r = 0; r < R; r++) ia[t][r] = QN(dot16)(ia[t][r], c[r], x);
                }
            }
            for (int t = 0; t < nt; t++)
                for (int r = 0; r < nr; r++) {
                    float32x4_t a = vld1q_f32(acc[t][r] + 4 * q);
                    a = QN(fold4)(F, a, ia[t][r], sx[t][q], ws[r][q], wm[r][q], xs[t], q);
                    vst1q_f32(acc[t][r] + 4 * q, a);
                }
        }
    }
}

QN_INL void QN(unpack_fmt)(qk_format F, const qk_weight *w, int r, int g0, int g1, uint8_t *dst) {
    const int steps = w->lane / 4;
    const uint8_t *src = w->data + (size_t)r * w->row_bytes + (size_t)g0 * w->group_bytes;
    for (int g = g0; g < g1; g++, src += w->group_bytes)
        for (int k = 0; k < steps; k++, dst += 64)
            for (int q = 0; q < 4; q++) vst1q_u8(dst + 16 * q, QN(code_q)(F, src, k, q, false));
}

#define QN_FORMATS(X) X(QK_Q4_0) X(QK_Q8_0) X(QK_Q4_K) X(QK_Q6_K) X(QK_MLX4) X(QK_MLX8)

QN_TARGET static void QN(dot_rows)(float acc[][QK_LANES], int nr, const uint8_t *xq,
                                   const qk_weight *w, const int rows[], const int *pf) {
    switch (w->fmt) {
#define CASE(F)                                                                                    \
    case F:                                                                                        \
        QN(gemv_fmt)(F, acc, nr, xq, w, rows, pf);                                                 \
        return;
        QN_FORMATS(CASE)
#undef CASE
        default:
            return;
    }
}

QN_TARGET static void QN(dot_block)(float acc[][QK_MAX_R][QK_LANES], int nt, int nr,
                                    const uint8_t *const xq[], const qk_weight *w, const int rows[],
                                    const uint8_t *const codes[], int g0, int g1) {
    switch (w->fmt) {
#define CASE(F)                                                                                    \
    case F:                                                                                        \
        QN(block_fmt)(F, acc, nt, nr, xq, w, rows, codes, g0, g1);                                 \
        return;
        QN_FORMATS(CASE)
#undef CASE
        default:
            return;
    }
}

QN_TARGET static void QN(unpack)(const qk_weight *w, int r, int g0, int g1, uint8_t *dst) {
    switch (w->fmt) {
#define CASE(F)                                                                                    \
    case F:                                                                                        \
        QN(unpack_fmt)(F, w, r, g0, g1, dst);                                                      \
        return;
        QN_FORMATS(CASE)
#undef CASE
        default:
            return;
    }
}

#undef QN_FORMATS
