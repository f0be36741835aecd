/*
 * kernels_portable.c - the CPU backend's portable kernel table (kernels.h
 * `cpu_kernels`): plain C, for any CPU, and the fallback where no vector
 * table runs.
 *
 * The kernels keep 8 independent partial sums ("lanes") so that the
 * compiler may vectorise them without reassociating float additions. The
 * table has two of the optional kernels, dot_panel and quick_gelu (the
 * reference arithmetic another table's must match: kernels.h), and none
 * of the decode ones (dot_rows_q, dot_tokens, dot_pairs, dot_tokens_q):
 * matmul takes its GEMM path for every n > 1, and quantized rows are
 * decoded by `dequant`, be_dequant_span itself.
 */
#include "backend/cpu/kernels.h"
#include "backend/quant.h"
#include "base/half.h"

#include <math.h>
#include <string.h>

enum { LANES = 8 };

static float sum_lanes(const float l[LANES]) {
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

static float dot_portable(const float *a, const float *b, int n) {
    float l[LANES] = {0};
    int i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) l[j] += a[i + j] * b[i + j];
    float s = sum_lanes(l);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

void cpu_convert_portable(float *dst, be_dtype dtype, const void *src, size_t n) {
    const unsigned char *p = src;
    if (dtype == BE_F32) {
        memcpy(dst, src, n * sizeof *dst);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = dtype == BE_F16 ? lv_f16_to_f32(h) : lv_bf16_to_f32(h);
    }
}

static void dot_block_portable(float acc[][MM_BLOCK_ROWS], const float *const x[],
                               const float *const w[], int n) {
    for (int t = 0; t < MM_BLOCK_TOKENS; t++)
        for (int r = 0; r < MM_BLOCK_ROWS; r++) acc[t][r] += dot_portable(x[t], w[r], n);
}

/* dot_portable's arithmetic for each (token, row) pair, the row read from
 * the packed panel (kernels.h): lane j of chunk c is column 8c + j. */
static void dot_panel_portable(float *y, size_t ldy, const float *const x[], const float *wp,
                               int n) {
    _Static_assert(LANES == 8, "a panel chunk is one step of the lanes");
    for (int t = 0; t < MM_BLOCK_TOKENS; t++)
        for (int r = 0; r < MM_PANEL_ROWS; r++) {
            const float *w = wp + 16 * (r / 2) + 8 * (r % 2);
            float l[LANES] = {0};
            int i = 0;
            for (; i + LANES <= n; i += LANES, w += 64)
                for (int j = 0; j < LANES; j++) l[j] += x[t][i + j] * w[j];
            float s = sum_lanes(l);
            for (; i < n; i++) s += x[t][i] * w[i % LANES];
            y[t * ldy + r] += 0.0f + s;
        }
}

/* dot_portable for each row, w converted chunk by chunk into a stack buffer
 * (exact conversions; memcpy for F32, so w may be unaligned). The chunk is a
 * multiple of LANES, so the lanes, their sum and the tail see the same
 * products in the same order as dot_portable over a converted row. */
static void dot_rows_portable(float acc[], const float *x, be_dtype dtype, const void *const w[],
                              const void *const pf[], int n) {
    enum { CHUNK = 256 };
    _Static_assert(CHUNK % LANES == 0, "lanes must not straddle chunks");
    size_t esize = dtype == BE_F32 ? 4 : 2;
    float buf[CHUNK];
    for (int r = 0; r < MM_GEMV_ROWS; r++) {
        float l[LANES] = {0};
        int c = 0, m = 0;
        for (; c < n; c += CHUNK) {
            m = n - c < CHUNK ? n - c : CHUNK;
            cpu_convert_portable(buf, dtype, (const unsigned char *)w[r] + (size_t)c * esize,
                                 (size_t)m);
            for (int i = 0; i + LANES <= m; i += LANES)
                for (int j = 0; j < LANES; j++) l[j] += x[c + i + j] * buf[i + j];
        }
        float s = sum_lanes(l);
        /* the tail: the last m % LANES elements, still in buf */
        for (int i = m - m % LANES; i < m; i++) s += x[c - CHUNK + i] * buf[i];
        acc[r] += s;
    }
}

static void madd_block_portable(float *const o[], const float *const p[], const float *v,
                                size_t ldv, int n_keys, int n) {
    for (int t = 0; t < MM_BLOCK_TOKENS; t++)
        for (int j = 0; j < n_keys; j++) {
            float pj = p[t][j];
            const float *vj = v + (size_t)j * ldv;
            for (int d = 0; d < n; d++) o[t][d] += pj * vj[d];
        }
}

/* The quick_gelu arithmetic of kernels.h, one element; the vector tables
 * run the same steps lane by lane. */
static float sigmoid_gate1(float v, float z) {
    z = fminf(fmaxf(z, -87.0f), 88.0f); /* a NaN becomes -87, as with maxps */
    float n = rintf(z * 1.44269504f);
    float r = fmaf(n, -0.693145752f, z);
    r = fmaf(n, -1.42860677e-6f, r);
    static const float c[] = {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};
    float p = 1.0f / 5040;
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) p = fmaf(p, r, c[i]);
    uint32_t bits = (uint32_t)((int)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return v * (1.0f / (1.0f + p * scale));
}

float cpu_quick_gelu1(float v) {
    return sigmoid_gate1(v, -(1.702f * v));
}

float cpu_gelu_tanh1(float v) {
    float t = v * v;
    t = t * v;
    float u = fmaf(0.044715f, t, v);
    return sigmoid_gate1(v, -(1.59576912f * u));
}

static void quick_gelu_portable(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = cpu_quick_gelu1(x[i]);
}

static void gelu_tanh_portable(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = cpu_gelu_tanh1(x[i]);
}

static const cpu_kernels PORTABLE = {
    .isa = "portable",
    .dot = dot_portable,
    .convert = cpu_convert_portable,
    .dot_block = dot_block_portable,
    .dot_panel = dot_panel_portable,
    .dot_rows = dot_rows_portable,
    .madd_block = madd_block_portable,
    .quick_gelu = quick_gelu_portable,
    .gelu_tanh = gelu_tanh_portable,
    .dequant = be_dequant_span,
};

const cpu_kernels *cpu_kernels_portable(void) {
    return &PORTABLE;
}
