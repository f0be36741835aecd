/*
 * qdot_portable.c - the reference integer kernels (plain C, any CPU): the
 * arithmetic of qdot.h written out one lane at a time. The vector kernels
 * (qdot_avx512.c, qdot_avx2.c, qdot_neon.c) must give these bits.
 */
#include "backend/cpu/qdot.h"

#include <math.h>
#include <string.h>

/* Code j (0..lane) of lane l in a group's codes. */
static int code_at(const qk_weight *w, const uint8_t *codes, int l, int j) {
    int k = j / 4, e = j % 4;
    if (qk_fmt_eight_bit(w->fmt)) return codes[k * 64 + l * 4 + e];
    int c = (codes[(k / 2) * 64 + l * 4 + e] >> (4 * (k & 1))) & 0xF;
    if (w->fmt == QK_Q6_K) c |= ((codes[128 + l * 4 + e] >> (2 * k)) & 3) << 4;
    return c;
}

/* The int8 code j of lane l in a group of a quantized activation row. */
static int xcode_at(const uint8_t *xcodes, int l, int j) {
    return (int8_t)xcodes[(j / 4) * 64 + l * 4 + j % 4];
}

static void quantize_ref(const qk_weight *w, const float *x, uint8_t *xq) {
    size_t xgb = qk_xgroup_bytes(w);
    for (int g = 0; g < w->n_groups; g++) {
        uint8_t *codes = xq + (size_t)g * xgb;
        qk_xside *side = (qk_xside *)(void *)(codes + w->group);
        for (int l = 0; l < QK_LANES; l++) {
            if (qk_xlane_pad(w, codes, side, g, l)) continue;
            int c0 = g * w->group + l * w->lane;
            const float *blk = x + c0 / QK_BLOCK * QK_BLOCK; /* cols are whole blocks */
            float amax = 0.0f;
            for (int j = 0; j < QK_BLOCK; j++) amax = fmaxf(amax, fabsf(blk[j]));
            float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            int32_t S = 0;
            for (int j = 0; j < w->lane; j++) {
                float v = rintf(x[c0 + j] * id);
                int q = v > 127.0f ? 127 : v < -127.0f ? -127 : (int)v;
                codes[(j / 4) * 64 + l * 4 + j % 4] = (uint8_t)(int8_t)q;
                S += q;
            }
            qk_xside_set(w, side, l, d, S);
        }
    }
}

/* acc[16] += group g of row r (its codes: codes, unpacked if unpacked)
 * against one quantized activation row. */
static void group_ref(float acc[QK_LANES], const qk_weight *w, int r, int g, const uint8_t *codes,
                      bool unpacked, const uint8_t *xq) {
    const uint8_t *xc = xq + (size_t)g * qk_xgroup_bytes(w);
    const qk_xside *side = (const qk_xside *)(const void *)(xc + w->group);
    float ws[QK_LANES], wm[QK_LANES];
    qk_lane_scales(w, r, g, ws, wm);
    for (int l = 0; l < QK_LANES; l++) {
        int32_t i = 0;
        for (int j = 0; j < w->lane; j++) {
            int c = unpacked ? codes[(j / 4) * 64 + l * 4 + j % 4] : code_at(w, codes, l, j);
            i += c * xcode_at(xc, l, j);
        }
        if (!w->affine) i -= side->corr[l];
        acc[l] = fmaf((float)i, ws[l] * side->dx[l], acc[l]);
        if (w->affine) acc[l] = fmaf(wm[l], side->xs[l], acc[l]);
    }
}

static const uint8_t *packed_group(const qk_weight *w, int r, int g) {
    return w->data + (size_t)r * w->row_bytes + (size_t)g * w->group_bytes;
}

static void unpack_ref(const qk_weight *w, int r, int g0, int g1, uint8_t *dst) {
    for (int g = g0; g < g1; g++, dst += w->group)
        for (int l = 0; l < QK_LANES; l++)
            for (int j = 0; j < w->lane; j++)
                dst[(j / 4) * 64 + l * 4 + j % 4] =
                    (uint8_t)code_at(w, packed_group(w, r, g), l, j);
}

static void dot_block_ref(float acc[][QK_MAX_R][QK_LANES], int nt, int nr,
                          const uint8_t *const xq[], const qk_weight *w, const int rows[],
                          const uint8_t *const codes[], int g0, int g1) {
    for (int t = 0; t < nt; t++)
        for (int r = 0; r < nr; r++)
            for (int g = g0; g < g1; g++)
                group_ref(acc[t][r], w, rows[r], g, codes[r] + (size_t)(g - g0) * w->group, true,
                          xq[t]);
}

static void dot_rows_ref(float acc[][QK_LANES], int nr, const uint8_t *xq, const qk_weight *w,
                         const int rows[], const int *pf) {
    (void)pf;
    for (int r = 0; r < nr; r++) {
        memset(acc[r], 0, sizeof acc[r]);
        for (int g = 0; g < w->n_groups; g++)
            group_ref(acc[r], w, rows[r], g, packed_group(w, rows[r], g), false, xq);
    }
}

static const qk_kernels PORTABLE = {
    .isa = "portable",
    .quantize = quantize_ref,
    .unpack = unpack_ref,
    .dot_block = dot_block_ref,
    .dot_rows = dot_rows_ref,
};

const qk_kernels *qk_kernels_portable(void) {
    return &PORTABLE;
}

const qk_kernels *qk_kernels_for(const char *isa) {
    const qk_kernels *k = NULL;
    if (strcmp(isa, "avx512") == 0) k = qk_kernels_avx512();
    if (!k && (strcmp(isa, "avx512") == 0 || strcmp(isa, "avx2") == 0)) k = qk_kernels_avx2();
    if (strcmp(isa, "neon") == 0) k = qk_kernels_neon();
    return k ? k : qk_kernels_portable();
}
