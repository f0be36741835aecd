/*
 * ggml_quantize.c - see ggml_quantize.h. Block layouts: formats.md §5.1-§5.5
 * (ggml-common.h block_q4_0 / block_q8_0 / block_q4_K / block_q6_K);
 * quantizers: quantize_row_q4_0_ref, quantize_row_q8_0_ref,
 * quantize_row_q4_K_ref with make_qkx2_quants (ggml-quants.c), re-derived
 * from their description; Q6_K our own weighted scale search (q6_k_block).
 * Every f16 field is stored little-endian; rounding to an integer level is
 * round-half-to-even (ggml's nearest_int) except Q8_0's roundf.
 */
#include "ggml_quantize.h"

#include "base/half.h"

#include <math.h>
#include <string.h>

#define QK   32  /* Q4_0 / Q8_0 block */
#define QK_K 256 /* K-quant super-block */

/* ---- f16 ------------------------------------------------------------------- */

static void put_f16(uint8_t *p, float f) {
    uint16_t h = lv_f32_to_f16(f);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

static float get_f16(const uint8_t *p) {
    return lv_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
}

static int nearest_int(float f) {
    return (int)lrintf(f); /* default rounding: to nearest, ties to even */
}

/* ---- Q8_0 / Q4_0 ------------------------------------------------------------ */

/* 34 bytes: d (f16), 32 int8 codes; d = amax / 127, q = round(x / d). */
static void q8_0_block(const float *x, uint8_t *b) {
    float amax = 0;
    for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
    put_f16(b, d);
    for (int j = 0; j < QK; j++) b[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
}

/* 18 bytes: d (f16) = signed max-magnitude / -8; element j in the low nibble
 * of byte j, element j + 16 in its high nibble; q = min(15, trunc(x/d + 8.5)). */
static void q4_0_block(const float *x, uint8_t *b) {
    float amax = 0, max = 0;
    for (int j = 0; j < QK; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    float d = max / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
    put_f16(b, d);
    for (int j = 0; j < QK / 2; j++) {
        int lo = (int)(x[j] * id + 8.5f), hi = (int)(x[j + QK / 2] * id + 8.5f);
        lo = lo > 15 ? 15 : lo;
        hi = hi > 15 ? 15 : hi;
        b[2 + j] = (uint8_t)(lo | hi << 4);
    }
}

/* ---- Q4_K ------------------------------------------------------------------- */

/* Best (scale, min) for n values into levels 0..nmax, minimising the
 * weighted squared error: start from the min/max grid, then try nstep + 1
 * rescaled grids and solve the 2x2 least squares for each level set.
 * Returns the scale; *neg_min = -min (>= 0, as the format stores it). */
static float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L,
                           float *neg_min, uint8_t *aux, float rmin, float rdelta, int nstep) {
    float min = x[0], max = x[0], sum_w = w[0], sum_x = w[0] * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *neg_min = -min;
        return 0.0f;
    }
    float iscale = (float)nmax / (max - min), scale = 1.0f / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        float diff = scale * L[i] + min - x[i];
        best += w[i] * diff * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * (x[i] - min));
            l = l < 0 ? 0 : l > nmax ? nmax : l;
            aux[i] = (uint8_t)l;
            sum_l += w[i] * (float)l;
            sum_l2 += w[i] * (float)l * (float)l;
            sum_xl += w[i] * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D <= 0) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float diff = this_scale * aux[i] + this_min - x[i];
            err += w[i] * diff * diff;
        }
        if (err < best) {
            memcpy(L, aux, (size_t)n);
            best = err;
            scale = this_scale;
            min = this_min;
        }
    }
    *neg_min = -min;
    return scale;
}

/* Sub-block j's 6-bit scale and min from the 12 packed bytes (get_scale_min_k4). */
static void scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* 144 bytes: d, dmin (f16), scales[12], qs[128] (§5.4). */
static void q4_k_block(const float *x, uint8_t *b) {
    uint8_t L[QK_K], aux[32];
    float w[32], mins[8], scales[8], max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        const float *xs = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += xs[l] * xs[l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) w[l] = av_x + fabsf(xs[l]);
        scales[j] = fit_scale_min(32, 15, xs, w, L + 32 * j, &mins[j], aux, -1.0f, 0.1f, 20);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    uint8_t *sc = b + 4, *qs = b + 16;
    memset(sc, 0, 12);
    for (int j = 0; j < 8; j++) {
        int ls = nearest_int(inv_scale * scales[j]), lm = nearest_int(inv_min * mins[j]);
        ls = ls > 63 ? 63 : ls;
        lm = lm > 63 ? 63 : lm;
        if (j < 4) {
            sc[j] = (uint8_t)ls;
            sc[j + 4] = (uint8_t)lm;
        } else {
            sc[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            sc[j - 4] |= (uint8_t)((ls >> 4) << 6);
            sc[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    put_f16(b, max_scale / 63.0f);
    put_f16(b + 2, max_min / 63.0f);
    float d_all = get_f16(b), dmin_all = get_f16(b + 2);
    /* re-quantize against the scales as they will be decoded */
    for (int j = 0; j < 8; j++) {
        uint8_t s, m;
        scale_min_k4(j, sc, &s, &m);
        float d = d_all * s;
        if (d == 0) continue;
        float dm = dmin_all * m;
        for (int i = 0; i < 32; i++) {
            int l = nearest_int((x[32 * j + i] + dm) / d);
            L[32 * j + i] = (uint8_t)(l < 0 ? 0 : l > 15 ? 15 : l);
        }
    }
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            qs[32 * c + l] = (uint8_t)(L[64 * c + l] | L[64 * c + 32 + l] << 4);
}

/* ---- Q6_K ------------------------------------------------------------------- */

/* The signed scale of 16 values on the codes -32..31 (value = scale * code):
 * the largest magnitude mapped near code -32 (the wider side), trying 19
 * nearby grids and keeping the one whose least-squares scale gives the
 * smallest error weighted by x^2 (large weights matter most to a matmul). */
static float q6_sub_scale(const float *x) {
    float amax = 0, mx = 0;
    for (int i = 0; i < 16; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            mx = x[i];
        }
    if (amax < 1e-30f) return 0.0f;
    float best_scale = mx / -32.0f, best_err = INFINITY;
    for (int k = -9; k <= 9; k++) {
        float iscale = -(32.0f + 0.1f * (float)k) / mx, sum_xl = 0, sum_ll = 0;
        int L[16];
        for (int i = 0; i < 16; i++) {
            int l = nearest_int(iscale * x[i]);
            L[i] = l < -32 ? -32 : l > 31 ? 31 : l;
            float w = x[i] * x[i];
            sum_xl += w * x[i] * (float)L[i];
            sum_ll += w * (float)L[i] * (float)L[i];
        }
        if (sum_ll <= 0) continue;
        float scale = sum_xl / sum_ll, err = 0;
        for (int i = 0; i < 16; i++) {
            float diff = x[i] - scale * (float)L[i];
            err += x[i] * x[i] * diff * diff;
        }
        if (err < best_err) {
            best_err = err;
            best_scale = scale;
        }
    }
    return best_scale;
}

/* 210 bytes: ql[128], qh[64], int8 scales[16], d (f16) last (§5.5). Element
 * e (n = e/128, r = e%128, k = r/32, l = r%32) has code q = L + 32: its low
 * nibble in ql[64n + 32(k&1) + l] (high nibble when k >= 2), its top two
 * bits at 2k in qh[32n + l]. */
static void q6_k_block(const float *x, uint8_t *b) {
    float scales[16], amax = 0, mx = 0;
    for (int j = 0; j < 16; j++) {
        scales[j] = q6_sub_scale(x + 16 * j);
        if (fabsf(scales[j]) > amax) {
            amax = fabsf(scales[j]);
            mx = scales[j];
        }
    }
    uint8_t *ql = b, *qh = b + 128;
    int8_t *sc = (int8_t *)(b + 192);
    memset(b, 0, 210);
    if (amax == 0) return; /* d = 0: every value decodes to 0 */
    float iscale = -128.0f / mx;
    for (int j = 0; j < 16; j++) {
        int l = nearest_int(iscale * scales[j]);
        sc[j] = (int8_t)(l < -128 ? -128 : l > 127 ? 127 : l);
    }
    put_f16(b + 208, 1.0f / iscale);
    float d = get_f16(b + 208);
    for (int e = 0; e < QK_K; e++) {
        /* re-quantize against the scale as it will be decoded */
        float dd = d * (float)sc[e / 16];
        int l = dd != 0 ? nearest_int(x[e] / dd) : 0;
        int q = (l < -32 ? -32 : l > 31 ? 31 : l) + 32;
        int n = e / 128, r = e % 128, k = r / 32, i = r % 32;
        ql[64 * n + 32 * (k & 1) + i] |= (uint8_t)((q & 0xF) << (4 * (k >> 1)));
        qh[32 * n + i] |= (uint8_t)((q >> 4) << (2 * k));
    }
}

/* ---- rows --------------------------------------------------------------------- */

size_t ggml_row_size(uint32_t type, int64_t n) {
    int be, bb;
    if (n < 0 || !ggml_type_block(type, &be, &bb) || n % be) return 0;
    return (size_t)(n / be) * (size_t)bb;
}

bool ggml_quantize_row(uint32_t type, const float *x, int64_t n, void *out) {
    uint8_t *o = out;
    switch (type) {
        case GGML_F32:
            memcpy(out, x, (size_t)n * 4);
            return true;
        case GGML_F16:
            for (int64_t i = 0; i < n; i++) put_f16(o + 2 * i, x[i]);
            return true;
        case GGML_Q8_0:
            if (n % QK) return false;
            for (int64_t b = 0; b < n / QK; b++) q8_0_block(x + b * QK, o + b * 34);
            return true;
        case GGML_Q4_0:
            if (n % QK) return false;
            for (int64_t b = 0; b < n / QK; b++) q4_0_block(x + b * QK, o + b * 18);
            return true;
        case GGML_Q4_K:
            if (n % QK_K) return false;
            for (int64_t b = 0; b < n / QK_K; b++) q4_k_block(x + b * QK_K, o + b * 144);
            return true;
        case GGML_Q6_K:
            if (n % QK_K) return false;
            for (int64_t b = 0; b < n / QK_K; b++) q6_k_block(x + b * QK_K, o + b * 210);
            return true;
        default:
            return false;
    }
}

bool ggml_dequantize_row(uint32_t type, const void *in, int64_t n, float *y) {
    const uint8_t *p = in;
    switch (type) {
        case GGML_F32:
            memcpy(y, in, (size_t)n * 4);
            return true;
        case GGML_F16:
            for (int64_t i = 0; i < n; i++) y[i] = get_f16(p + 2 * i);
            return true;
        case GGML_Q8_0:
            if (n % QK) return false;
            for (int64_t b = 0; b < n / QK; b++, p += 34) {
                float d = get_f16(p);
                for (int j = 0; j < QK; j++) y[b * QK + j] = (float)(int8_t)p[2 + j] * d;
            }
            return true;
        case GGML_Q4_0:
        case GGML_Q4_1: {
            if (n % QK) return false;
            int bs = type == GGML_Q4_0 ? 18 : 20, qo = type == GGML_Q4_0 ? 2 : 4;
            for (int64_t b = 0; b < n / QK; b++, p += bs) {
                float d = get_f16(p), m = type == GGML_Q4_1 ? get_f16(p + 2) : 0;
                for (int j = 0; j < QK / 2; j++) {
                    int lo = p[qo + j] & 0xF, hi = p[qo + j] >> 4;
                    if (type == GGML_Q4_0) lo -= 8, hi -= 8;
                    y[b * QK + j] = (float)lo * d + m;
                    y[b * QK + j + QK / 2] = (float)hi * d + m;
                }
            }
            return true;
        }
        case GGML_Q4_K:
            if (n % QK_K) return false;
            for (int64_t b = 0; b < n / QK_K; b++, p += 144) {
                float d = get_f16(p), dmin = get_f16(p + 2);
                for (int j = 0; j < 8; j++) {
                    uint8_t s, m;
                    scale_min_k4(j, p + 4, &s, &m);
                    const uint8_t *q = p + 16 + 32 * (j / 2);
                    for (int l = 0; l < 32; l++) {
                        int v = j % 2 ? q[l] >> 4 : q[l] & 0xF;
                        y[b * QK_K + 32 * j + l] = d * s * (float)v - dmin * m;
                    }
                }
            }
            return true;
        case GGML_Q6_K:
            if (n % QK_K) return false;
            for (int64_t b = 0; b < n / QK_K; b++, p += 210) {
                float d = get_f16(p + 208);
                for (int e = 0; e < QK_K; e++) {
                    int nn = e / 128, r = e % 128, k = r / 32, i = r % 32;
                    int lo = (p[64 * nn + 32 * (k & 1) + i] >> (4 * (k >> 1))) & 0xF;
                    int hi = (p[128 + 32 * nn + i] >> (2 * k)) & 3;
                    y[b * QK_K + e] =
                        d * (float)(int8_t)p[192 + e / 16] * (float)((lo | hi << 4) - 32);
                }
            }
            return true;
        default:
            return false;
    }
}
