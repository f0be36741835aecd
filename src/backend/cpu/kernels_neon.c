/*
 * kernels_neon.c - the CPU backend's ARM64 NEON kernel table (kernels.h
 * `cpu_kernels`): the float kernels here, the quantized ones in
 * dequant_neon.c.
 *
 * NEON (Advanced SIMD) is part of every ARMv8-A CPU, so this table needs no
 * runtime check: on aarch64 it is always the best one, and elsewhere the
 * getter returns NULL. Loads are unaligned loads (vld1q), which aarch64
 * allows on normal memory: weights are mmapped tensors at arbitrary offsets.
 *
 * Every kernel is a line-by-line spelling of its AVX2 twin (kernels_avx2.c)
 * with the 8-lane accumulator as two 4-lane registers (neon.h): one 8-lane
 * FMA chain per output over the full 8-column blocks, neon_hsum8, then the
 * scalar tail over cpu_convert_portable's floats. The outputs are the AVX2
 * table's bits: a matmul or attention product is the same on an ARM server
 * as on an x86 one (ops that call libm may still differ in a last bit
 * between C libraries). With 32 vector registers the blockings could be
 * larger than AVX2's 16 allow; they are kept the same (there is no ARM
 * machine here to time a change on).
 */
#include "backend/cpu/kernels.h"

#if defined(__aarch64__) && defined(__GNUC__)
#include "backend/cpu/neon.h"

#include <string.h>

/* Four 8-lane accumulators over blocks of 32, summed ((s0+s1)+(s2+s3)),
 * then hsum and the tail: cpu_dot_avx2's arithmetic. */
static float dot_neon(const float *a, const float *b, int n) {
    f32x8 s0 = f8_zero(), s1 = s0, s2 = s0, s3 = s0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = f8_fma(s0, f8_load(a + i), f8_load(b + i));
        s1 = f8_fma(s1, f8_load(a + i + 8), f8_load(b + i + 8));
        s2 = f8_fma(s2, f8_load(a + i + 16), f8_load(b + i + 16));
        s3 = f8_fma(s3, f8_load(a + i + 24), f8_load(b + i + 24));
    }
    for (; i + 8 <= n; i += 8) s0 = f8_fma(s0, f8_load(a + i), f8_load(b + i));
    float s = neon_hsum8(f8_add(f8_add(s0, s1), f8_add(s2, s3)));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static void convert_neon(float *dst, be_dtype dtype, const void *src, size_t n) {
    if (dtype == BE_F32) {
        memcpy(dst, src, n * sizeof *dst);
        return;
    }
    size_t i = 0;
    for (; i + 8 <= n; i += 8) f8_store(dst + i, neon_load8(dtype, src, i));
    cpu_convert_portable(dst + i, dtype, (const unsigned char *)src + 2 * i, n - i);
}

/* 6 tokens × 4 rows as two passes of 6 × 2: 24 accumulator registers plus
 * 4 of weights and 2 of x, within NEON's 32. */
_Static_assert(MM_BLOCK_TOKENS == 6 && MM_BLOCK_ROWS == 4, "dot_block_neon is written for 6x4");

NEON_INL void dot_block_6x2(float acc[][MM_BLOCK_ROWS], int r0, const float *const x[],
                            const float *w0, const float *w1, int n) {
    f32x8 a[6][2];
    for (int t = 0; t < 6; t++) a[t][0] = a[t][1] = f8_zero();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        f32x8 v0 = f8_load(w0 + i), v1 = f8_load(w1 + i);
        for (int t = 0; t < 6; t++) {
            f32x8 u = f8_load(x[t] + i);
            a[t][0] = f8_fma(a[t][0], u, v0);
            a[t][1] = f8_fma(a[t][1], u, v1);
        }
    }
    const float *w[2] = {w0, w1};
    for (int t = 0; t < 6; t++)
        for (int r = 0; r < 2; r++) {
            float s = neon_hsum8(a[t][r]);
            for (int k = i; k < n; k++) s += x[t][k] * w[r][k];
            acc[t][r0 + r] += s;
        }
}

static void dot_block_neon(float acc[][MM_BLOCK_ROWS], const float *const x[],
                           const float *const w[], int n) {
    dot_block_6x2(acc, 0, x, w[0], w[1], n);
    dot_block_6x2(acc, 2, x, w[2], w[3], n);
}

/* 1 token × 8 rows: 16 accumulator registers, weights converted by
 * neon_load8 (what convert_neon fills the GEMM panel with), the tail by
 * cpu_convert_portable (as the panel's). DT is a constant in each copy. */
_Static_assert(MM_GEMV_ROWS == 8, "dot_rows_neon is written for 8 rows");

NEON_INL void dot_rows_t(be_dtype DT, float acc[], const float *x, const void *const w[],
                         const void *const pf[], int n) {
    f32x8 a[8];
    for (int r = 0; r < 8; r++) a[r] = f8_zero();
    const size_t es = DT == BE_F32 ? 4 : 2;
    int i = 0;
    if (pf)
        for (; i + 32 <= n; i += 32) {
            neon_prefetch_step(pf, 8, i, es);
            for (int q = 0; q < 32; q += 8) {
                f32x8 u = f8_load(x + i + q);
                for (int r = 0; r < 8; r++)
                    a[r] = f8_fma(a[r], u, neon_load8(DT, w[r], (size_t)(i + q)));
            }
        }
    for (; i + 8 <= n; i += 8) {
        f32x8 u = f8_load(x + i);
        for (int r = 0; r < 8; r++) a[r] = f8_fma(a[r], u, neon_load8(DT, w[r], (size_t)i));
    }
    for (int r = 0; r < 8; r++) {
        float s = neon_hsum8(a[r]);
        if (i < n) {
            float tail[8];
            cpu_convert_portable(tail, DT, (const unsigned char *)w[r] + (size_t)i * es,
                                 (size_t)(n - i));
            for (int k = i; k < n; k++) s += x[k] * tail[k - i];
        }
        acc[r] += s;
    }
}

static void dot_rows_neon(float acc[], const float *x, be_dtype dtype, const void *const w[],
                          const void *const pf[], int n) {
    if (dtype == BE_F16)
        dot_rows_t(BE_F16, acc, x, w, pf, n);
    else if (dtype == BE_BF16)
        dot_rows_t(BE_BF16, acc, x, w, pf, n);
    else
        dot_rows_t(BE_F32, acc, x, w, pf, n);
}

/* T tokens × R rows (R = 2 or 4), weights converted as they are read: T·R
 * accumulators, each (token, row) pair with dot_rows_t's arithmetic. T, R
 * and DT are constants at each call (the dispatch below). */
_Static_assert(MM_DEC_TOKENS >= 6 && MM_DEC_ROWS == 4, "dot_tokens_t holds up to 6x2 and 2x4");

NEON_INL void dot_tokens_t(int T, int R, be_dtype DT, float acc[][MM_DEC_ROWS],
                           const float *const x[], const void *const w[], const void *const pf[],
                           int n) {
    f32x8 a[6][MM_DEC_ROWS];
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++) a[t][r] = f8_zero();
    const size_t es = DT == BE_F32 ? 4 : 2;
    int i = 0;
    if (pf)
        for (; i + 32 <= n; i += 32) {
            neon_prefetch_step(pf, R, i, es);
            for (int q = 0; q < 32; q += 8) {
                f32x8 v[MM_DEC_ROWS];
                for (int r = 0; r < R; r++) v[r] = neon_load8(DT, w[r], (size_t)(i + q));
                for (int t = 0; t < T; t++) {
                    f32x8 u = f8_load(x[t] + i + q);
                    for (int r = 0; r < R; r++) a[t][r] = f8_fma(a[t][r], u, v[r]);
                }
            }
        }
    for (; i + 8 <= n; i += 8) {
        f32x8 v[MM_DEC_ROWS];
        for (int r = 0; r < R; r++) v[r] = neon_load8(DT, w[r], (size_t)i);
        for (int t = 0; t < T; t++) {
            f32x8 u = f8_load(x[t] + i);
            for (int r = 0; r < R; r++) a[t][r] = f8_fma(a[t][r], u, v[r]);
        }
    }
    float tail[MM_DEC_ROWS][8];
    for (int r = 0; r < R && i < n; r++)
        cpu_convert_portable(tail[r], DT, (const unsigned char *)w[r] + (size_t)i * es,
                             (size_t)(n - i));
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++) {
            float s = neon_hsum8(a[t][r]);
            for (int k = i; k < n; k++) s += x[t][k] * tail[r][k - i];
            acc[t][r] += s;
        }
}

#define DT_CASE(T, R, DT)                                                                          \
    case (T)*8 + (R):                                                                              \
        dot_tokens_t(T, R, DT, acc, x, w, pf, n);                                                  \
        break;
#define SHAPES(DT)                                                                                 \
    DT_CASE(1, 2, DT)                                                                              \
    DT_CASE(2, 2, DT)                                                                              \
    DT_CASE(3, 2, DT)                                                                              \
    DT_CASE(4, 2, DT) DT_CASE(5, 2, DT) DT_CASE(6, 2, DT) DT_CASE(1, 4, DT) DT_CASE(2, 4, DT)

/* Up to 6 tokens × 2 rows or 2 × 4 (dec_tokens, dec_tokens4 below). */
static void dot_tokens_neon(float acc[][MM_DEC_ROWS], int nt, int nr, const float *const x[],
                            be_dtype dtype, const void *const w[], const void *const pf[], int n) {
    switch (dtype) {
        case BE_F16:
            switch (nt * 8 + nr) { SHAPES(BE_F16) }
            break;
        case BE_BF16:
            switch (nt * 8 + nr) { SHAPES(BE_BF16) }
            break;
        default:
            switch (nt * 8 + nr) { SHAPES(BE_F32) }
            break;
    }
}
#undef SHAPES
#undef DT_CASE

/* P·V by broadcasts, as cpu_madd_block_avx2: for 16 columns of V at a time
 * 6 rows × 4 registers of accumulators stay in registers over all keys;
 * then 8 columns; the last n % 8 columns in scalar code (unfused, as
 * AVX2's tail). */
static void madd_block_neon(float *const o[], const float *const p[], const float *v, size_t ldv,
                            int n_keys, int n) {
    int d = 0;
    for (; d + 16 <= n; d += 16) {
        f32x8 a[6][2];
        for (int t = 0; t < 6; t++) {
            a[t][0] = f8_load(o[t] + d);
            a[t][1] = f8_load(o[t] + d + 8);
        }
        for (int j = 0; j < n_keys; j++) {
            const float *vj = v + (size_t)j * ldv + d;
            f32x8 v0 = f8_load(vj), v1 = f8_load(vj + 8);
            for (int t = 0; t < 6; t++) {
                f32x8 pt = f8_dup(p[t][j]);
                a[t][0] = f8_fma(a[t][0], pt, v0);
                a[t][1] = f8_fma(a[t][1], pt, v1);
            }
        }
        for (int t = 0; t < 6; t++) {
            f8_store(o[t] + d, a[t][0]);
            f8_store(o[t] + d + 8, a[t][1]);
        }
    }
    for (; d + 8 <= n; d += 8) {
        f32x8 a[6];
        for (int t = 0; t < 6; t++) a[t] = f8_load(o[t] + d);
        for (int j = 0; j < n_keys; j++) {
            f32x8 v0 = f8_load(v + (size_t)j * ldv + d);
            for (int t = 0; t < 6; t++) a[t] = f8_fma(a[t], f8_dup(p[t][j]), v0);
        }
        for (int t = 0; t < 6; t++) f8_store(o[t] + d, a[t]);
    }
    for (; d < n; d++)
        for (int t = 0; t < 6; t++)
            for (int j = 0; j < n_keys; j++) o[t][d] += p[t][j] * v[(size_t)j * ldv + d];
}

/* quick_gelu (kernels.h) on 4 floats: cpu_quick_gelu1's steps lane by lane
 * (vmaxnm turns a NaN z into -87, as fmaxf does; v keeps the NaN). */
NEON_INL float32x4_t sigmoid_gate4(float32x4_t v, float32x4_t z) {
    z = vminnmq_f32(vmaxnmq_f32(z, vdupq_n_f32(-87.0f)), vdupq_n_f32(88.0f));
    float32x4_t n = vrndnq_f32(vmulq_f32(z, vdupq_n_f32(1.44269504f)));
    float32x4_t r = vfmaq_f32(z, n, vdupq_n_f32(-0.693145752f));
    r = vfmaq_f32(r, n, vdupq_n_f32(-1.42860677e-6f));
    static const float c[] = {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};
    float32x4_t p = vdupq_n_f32(1.0f / 5040);
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) p = vfmaq_f32(vdupq_n_f32(c[i]), p, r);
    int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    float32x4_t d = vaddq_f32(vdupq_n_f32(1.0f), vmulq_f32(p, vreinterpretq_f32_s32(e)));
    return vmulq_f32(v, vdivq_f32(vdupq_n_f32(1.0f), d));
}

NEON_INL float32x4_t quick_gelu4(float32x4_t v) {
    return sigmoid_gate4(v, vnegq_f32(vmulq_f32(vdupq_n_f32(1.702f), v)));
}

/* gelu_tanh (kernels.h) on 4 floats: cpu_gelu_tanh1's steps lane by lane. */
NEON_INL float32x4_t gelu_tanh4(float32x4_t v) {
    float32x4_t t = vmulq_f32(vmulq_f32(v, v), v);
    float32x4_t u = vfmaq_f32(v, vdupq_n_f32(0.044715f), t);
    return sigmoid_gate4(v, vnegq_f32(vmulq_f32(vdupq_n_f32(1.59576912f), u)));
}

static void gelu_tanh_neon(float *x, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(x + i, gelu_tanh4(vld1q_f32(x + i)));
    for (; i < n; i++) x[i] = cpu_gelu_tanh1(x[i]);
}

static void quick_gelu_neon(float *x, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(x + i, quick_gelu4(vld1q_f32(x + i)));
    for (; i < n; i++) x[i] = cpu_quick_gelu1(x[i]);
}

static const cpu_kernels NEON_KERNELS = {
    .isa = "neon",
    .dot = dot_neon,
    .convert = convert_neon,
    .dot_block = dot_block_neon,
    .dot_rows = dot_rows_neon,
    .dot_rows_q = cpu_dot_rows_q_neon,
    .dot_tokens = dot_tokens_neon,
    .dec_tokens = 6,
    .dec_tokens4 = 2,
    .dot_tokens_q = cpu_dot_tokens_q_neon,
    .dec_qtokens = 4,
    .dec_qtokens4 = 2,
    .madd_block = madd_block_neon,
    .quick_gelu = quick_gelu_neon,
    .gelu_tanh = gelu_tanh_neon,
    .dequant = cpu_dequant_neon,
};

const cpu_kernels *cpu_kernels_neon(void) {
    return &NEON_KERNELS;
}

#else

const cpu_kernels *cpu_kernels_neon(void) {
    return NULL;
}

#endif
