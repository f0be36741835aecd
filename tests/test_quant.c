/*
 * test_quant.c - the quantized weight formats: what each layout means
 * (backend/quant.c), MLX's affine quantizer (quant/mlx_affine.c) and
 * loading quantized checkpoints (model/weights.c).
 *
 * - Dequantisation of hand-built blocks of every ggml type and of MLX rows
 *   against values computed here from the spec's tables (formats.md §3.5,
 *   §5), including the 6-bit scale packing of Q4_K/Q5_K and Q6_K's layout.
 * - MLX bit packing for every bit width: element order LSB-first, the
 *   quantizer's packing against a bit-by-bit packer, round trips.
 * - The quantizer's edge cases: negative scales, constant and all-zero
 *   groups, half-to-even rounding, the error bound per group.
 * (The config.json quantization block is tested in test_hf_config.c.)
 * - Checkpoints built here in a temp dir, in every layout mlx-vlm has written
 *   for llava (all quantized, vision/projector float, per-module overrides,
 *   BF16 scales, OHWI conv): logits equal those of the same model stored as
 *   F32 with the dequantised values; broken layouts give clear errors.
 * - ggml block tensors in an in-memory st_set (what the GGUF loader makes)
 *   load as their block types, borrowed, with the same logits as F32.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "backend/quant.h"
#include "base/half.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/llava.h"
#include "model/llava_impl.h" /* white-box: the dtypes the loader chose */
#include "quant/mlx_affine.h"
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------
 * Helpers: random numbers; half / bfloat16 rounding (base/half.h)
 */

static uint64_t g_rng = 0x2545f4914f6cdd1du;

static uint64_t rnd(void) { /* splitmix64 */
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static float rnd_float(float lo, float hi) {
    return lo + (hi - lo) * (float)((rnd() >> 40) * (1.0 / 16777216.0));
}

static void f16_rounding(void **state) {
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00) continue; /* inf / NaN */
        assert_int_equal(lv_f32_to_f16(lv_f16_to_f32((uint16_t)h)), h);
    }
    assert_int_equal(lv_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00); /* tie to even: down */
    assert_int_equal(lv_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02); /* tie to even: up */
    assert_int_equal(lv_f32_to_f16(1e-7f), 2);                   /* subnormal: 1e-7 / 2^-24 */
    assert_int_equal(lv_f32_to_bf16(1.0f + 1.0f / 256), 0x3f80); /* tie to even */
}

/* ---------------------------------------------------------------------------
 * ggml blocks, hand-built from the spec's tables
 */

static be_weight one_row(be_dtype dt, int cols, const void *data) {
    be_weight w;
    lv_err err;
    if (be_weight_describe(&w, dt, 1, cols, data, NULL, &err)) fail_msg("%s", err.msg);
    return w;
}

static void expect_row(const be_weight *w, const double *want, int n, const char *what) {
    float got[256];
    be_dequant_row(w, 0, got);
    for (int i = 0; i < n; i++)
        if (fabs(got[i] - want[i]) > 1e-6 * fabs(want[i]) + 1e-9)
            fail_msg("%s: element %d = %.9g, want %.9g", what, i, got[i], want[i]);
}

static void put16(unsigned char *p, uint16_t v) {
    memcpy(p, &v, 2);
}

static void dequant_q8_0_q4_0_q4_1(void **state) {
    unsigned char b[34];
    double want[32];
    put16(b, 0x3800); /* d = 0.5 */
    for (int j = 0; j < 32; j++) {
        b[2 + j] = (unsigned char)(int8_t)(j * 8 - 128);
        want[j] = (j * 8 - 128) * 0.5;
    }
    be_weight w = one_row(BE_Q8_0, 32, b);
    expect_row(&w, want, 32, "Q8_0");

    put16(b, 0xb400); /* d = -0.25 */
    for (int j = 0; j < 16; j++) {
        b[2 + j] = (unsigned char)(j | (15 - j) << 4); /* low: element j, high: element j+16 */
        want[j] = (j - 8) * -0.25;
        want[j + 16] = (15 - j - 8) * -0.25;
    }
    w = one_row(BE_Q4_0, 32, b);
    expect_row(&w, want, 32, "Q4_0");

    put16(b, 0x3800);     /* d = 0.5 */
    put16(b + 2, 0xbc00); /* m = -1 */
    for (int j = 0; j < 16; j++) {
        b[4 + j] = (unsigned char)((j * 3 % 16) | (j * 5 % 16) << 4);
        want[j] = (j * 3 % 16) * 0.5 - 1;
        want[j + 16] = (j * 5 % 16) * 0.5 - 1;
    }
    w = one_row(BE_Q4_1, 32, b);
    expect_row(&w, want, 32, "Q4_1");
}

/* Packs eight 6-bit scales and mins as formats.md §5.4's byte view says. */
static void pack_k4_scales(const int sc[8], const int m[8], unsigned char S[12]) {
    for (int k = 0; k < 4; k++) {
        S[k] = (unsigned char)((sc[k] & 63) | ((sc[k + 4] >> 4) & 3) << 6);
        S[k + 4] = (unsigned char)((m[k] & 63) | ((m[k + 4] >> 4) & 3) << 6);
        S[k + 8] = (unsigned char)((sc[k + 4] & 15) | (m[k + 4] & 15) << 4);
    }
}

static void dequant_q4_k_q5_k(void **state) {
    static const int sc[8] = {1, 2, 3, 63, 17, 33, 49, 62}, mn[8] = {0, 1, 5, 62, 20, 40, 60, 3};
    unsigned char b[176];
    double want[256];
    for (int five = 0; five < 2; five++) {
        memset(b, 0, sizeof b);
        put16(b, 0x3400);     /* d = 0.25 */
        put16(b + 2, 0x3800); /* dmin = 0.5 */
        pack_k4_scales(sc, mn, b + 4);
        unsigned char *qh = b + 16, *qs = five ? b + 48 : b + 16;
        for (int e = 0; e < 256; e++) {
            int q = five ? e * 11 % 32 : e * 7 % 16;
            int c = e / 64, l = e % 32, hi = (e % 64) >= 32;
            qs[32 * c + l] |= (unsigned char)((q & 15) << (hi ? 4 : 0));
            if (five && q >= 16) qh[l] |= (unsigned char)(1 << (2 * c + hi));
            int s = e / 32;
            want[e] = 0.25 * sc[s] * q - 0.5 * mn[s];
        }
        be_weight w = one_row(five ? BE_Q5_K : BE_Q4_K, 256, b);
        expect_row(&w, want, 256, five ? "Q5_K" : "Q4_K");
    }
}

static void dequant_q6_k(void **state) {
    unsigned char b[210] = {0};
    double want[256];
    int8_t *scales = (int8_t *)(b + 192);
    for (int i = 0; i < 16; i++) scales[i] = (int8_t)(i * 7 - 50);
    put16(b + 208, 0x3000); /* d = 0.125, stored last */
    for (int e = 0; e < 256; e++) {
        int q = e * 13 % 64; /* stored code 0..63, value q - 32 */
        int n = e / 128, r = e % 128, k = r / 32, l = r % 32;
        int ql_at = 64 * n + l + (k & 1) * 32;
        b[ql_at] |= (unsigned char)((q & 15) << (k >= 2 ? 4 : 0));
        b[128 + 32 * n + l] |= (unsigned char)((q >> 4) << (2 * k));
        want[e] = 0.125 * scales[e / 16] * (q - 32);
    }
    be_weight w = one_row(BE_Q6_K, 256, b);
    expect_row(&w, want, 256, "Q6_K");
}

/* Two blocks in a row, misaligned: the second block is found at its offset. */
static void dequant_spans(void **state) {
    unsigned char mem[1 + 2 * 18];
    unsigned char *b = mem + 1;
    for (int k = 0; k < 2; k++) {
        put16(b + 18 * k, k ? 0x4000 : 0x3c00); /* d = 1, then 2 */
        for (int j = 0; j < 16; j++) b[18 * k + 2 + j] = (unsigned char)(j | j << 4);
    }
    be_weight w = one_row(BE_Q4_0, 64, b);
    float span[32];
    be_dequant_span(&w, 0, 32, 32, span);
    for (int j = 0; j < 16; j++) {
        assert_float_equal(span[j], (j - 8) * 2.0, 0);
        assert_float_equal(span[j + 16], (j - 8) * 2.0, 0);
    }
    assert_int_equal(be_span_align(&w), 32);
    assert_int_equal(be_row_bytes(BE_Q6_K, 512, NULL), 420);
    assert_int_equal(be_row_bytes(BE_Q6_K, 500, NULL), 0);
    assert_string_equal(be_dtype_name(BE_Q5_K), "Q5_K");
}

/* ---------------------------------------------------------------------------
 * MLX affine: bit packing
 */

/* The spec's definition: element j at bits [j·b, (j+1)·b), bit 0 = LSB of byte 0. */
static void pack_bits(const uint32_t *codes, int n, int bits, uint32_t *words) {
    memset(words, 0, (size_t)n * bits / 32 * 4);
    unsigned char *bytes = (unsigned char *)words; /* little-endian host */
    for (int j = 0; j < n; j++)
        for (int k = 0; k < bits; k++)
            if (codes[j] >> k & 1) {
                size_t bit = (size_t)j * bits + k;
                bytes[bit / 8] |= (unsigned char)(1u << (bit % 8));
            }
}

static void mlx_packing_every_bits(void **state) {
    static const int bits_list[] = {2, 3, 4, 5, 6, 8};
    enum { N = 256 };
    for (size_t bi = 0; bi < LV_ARRAY_LEN(bits_list); bi++) {
        int bits = bits_list[bi], n_bins = (1 << bits) - 1;
        uint32_t codes[N], words[N * 8 / 32];
        for (int j = 0; j < N; j++) codes[j] = (uint32_t)(rnd() % (uint64_t)(n_bins + 1));
        pack_bits(codes, N, bits, words);
        for (int j = 0; j < N; j++) assert_int_equal(mlx_affine_code(words, bits, j), codes[j]);
        if (bits == 4) /* word k holds elements 8k..8k+7, element 8k+i in bits 4i..4i+3 */
            for (int i = 0; i < 8; i++) assert_int_equal(words[1] >> (4 * i) & 15, codes[8 + i]);
        if (bits == 8)
            for (int i = 0; i < 4; i++) assert_int_equal(words[0] >> (8 * i) & 255, codes[i]);
        if (bits == 3) /* element 2 = (byte0 >> 6) | (byte1 & 1) << 2 (formats.md §3.5) */
            assert_int_equal(((words[0] & 0xff) >> 6) | ((words[0] >> 8) & 1) << 2, codes[2]);

        /* The quantizer packs the same way: values that are exactly s·q + β. */
        int group = 32;
        float w[N], scales[N / 32], biases[N / 32], back[N];
        for (int g = 0; g < N / group; g++) {
            codes[g * group] = 0; /* both extremes present, so s and β come out exact */
            codes[g * group + 1] = (uint32_t)n_bins;
            for (int i = 0; i < group; i++) w[g * group + i] = -1.0f + (float)codes[g * group + i];
        }
        uint32_t packed[N * 8 / 32];
        lv_err err;
        assert_int_equal(mlx_affine_quantize(w, 1, N, bits, group, packed, scales, biases, &err),
                         LV_OK);
        /* |min| < |max| here: the scale is negative and the max is code 0. */
        for (int j = 0; j < N; j++) {
            uint32_t want = (uint32_t)n_bins - codes[j];
            if (mlx_affine_code(packed, bits, j) != want)
                fail_msg("bits %d element %d: code %u, want %u", bits, j,
                         mlx_affine_code(packed, bits, j), want);
        }
        mlx_affine_dequantize_row(packed, scales, biases, N, bits, group, back);
        for (int j = 0; j < N; j++) assert_float_equal(back[j], w[j], 1e-5);
    }
}

/* ---------------------------------------------------------------------------
 * MLX affine: the quantizer's edge cases and error bound
 */

static void quantize_group(const float *w, int bits, float *scale, float *bias, uint32_t *codes) {
    uint32_t packed[32];
    lv_err err;
    assert_int_equal(mlx_affine_quantize(w, 1, 32, bits, 32, packed, scale, bias, &err), LV_OK);
    for (int j = 0; j < 32; j++) codes[j] = mlx_affine_code(packed, bits, j);
}

static void mlx_quantize_edge_cases(void **state) {
    float w[32], s, b, back[32];
    uint32_t codes[32];
    uint32_t packed[8];

    /* Larger magnitude on the positive side: negative scale, max is code 0. */
    for (int j = 0; j < 32; j++) w[j] = -1.0f + 4.0f * j / 31;
    quantize_group(w, 4, &s, &b, codes);
    assert_true(s < 0);
    assert_float_equal(b, 3.0f, 0);
    assert_int_equal(codes[31], 0);
    /* Larger magnitude on the negative side: positive scale, min is code 0. */
    for (int j = 0; j < 32; j++) w[j] = 1.0f - 4.0f * j / 31;
    quantize_group(w, 4, &s, &b, codes);
    assert_true(s > 0);
    assert_float_equal(b, -3.0f, 0);
    assert_int_equal(codes[31], 0);
    /* Zero is exactly representable (q = -q0). */
    w[5] = 0.0f;
    quantize_group(w, 4, &s, &b, codes);
    assert_float_equal(s * (float)codes[5] + b, 0.0f, 1e-6);

    /* A constant group: every code 0, the value is exactly the bias. */
    for (int j = 0; j < 32; j++) w[j] = 0.7f;
    quantize_group(w, 4, &s, &b, codes);
    assert_float_equal(b, 0.7f, 0);
    for (int j = 0; j < 32; j++) assert_int_equal(codes[j], 0);
    lv_err err;
    assert_int_equal(mlx_affine_quantize(w, 1, 32, 4, 32, packed, &s, &b, &err), LV_OK);
    mlx_affine_dequantize_row(packed, &s, &b, 32, 4, 32, back);
    for (int j = 0; j < 32; j++) assert_float_equal(back[j], 0.7f, 0);

    /* All zeros: scale ±1e-7, bias 0, codes 0, dequantised exactly 0. */
    memset(w, 0, sizeof w);
    quantize_group(w, 8, &s, &b, codes);
    assert_float_equal(fabsf(s), 1e-7f, 0);
    assert_float_equal(b, 0.0f, 0);
    for (int j = 0; j < 32; j++) assert_int_equal(codes[j], 0);

    /* Round half to even: bits 2 over {3, 0, 0.5, 1.5, ...}: scale -1, bias 3;
     * (0.5 - 3) / -1 = 2.5 -> 2 and (1.5 - 3) / -1 = 1.5 -> 2. */
    for (int j = 0; j < 32; j++)
        w[j] = j % 4 == 0 ? 3.0f : j % 4 == 1 ? 0.0f : j % 4 == 2 ? 0.5f : 1.5f;
    quantize_group(w, 2, &s, &b, codes);
    assert_float_equal(s, -1.0f, 0);
    assert_float_equal(b, 3.0f, 0);
    assert_int_equal(codes[0], 0);
    assert_int_equal(codes[1], 3);
    assert_int_equal(codes[2], 2);
    assert_int_equal(codes[3], 2);

    /* Bad arguments. */
    assert_int_equal(mlx_affine_quantize(w, 1, 32, 7, 32, packed, &s, &b, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "bits 7"));
    assert_int_equal(mlx_affine_quantize(w, 1, 32, 4, 16, packed, &s, &b, &err), LV_ERR_ARG);
    assert_int_equal(mlx_affine_quantize(w, 1, 48, 4, 32, packed, &s, &b, &err), LV_ERR_ARG);
}

/* Per group: |w - dequant| <= |scale|/2 with the float32 scale, and within
 * that plus the error the F16 cast of scale and bias adds. One exception the
 * edge anchoring causes (scale = edge / rint(edge / scale0) may shrink the
 * scale): the far extreme may need code n + 1 and is clamped to n, so values
 * beyond code n + 1/2 are within |scale| (the bound MLX's own
 * test_quantize_dequantize asserts for all values). */
static void mlx_error_bound(void **state) {
    static const int bits_list[] = {2, 3, 4, 5, 6, 8}, groups[] = {32, 64, 128};
    enum { ROWS = 6, COLS = 384 };
    float *w = malloc(sizeof(float) * ROWS * COLS), back[COLS];
    uint32_t *packed = malloc(sizeof(uint32_t) * ROWS * COLS);
    float sc[ROWS * COLS / 32], bi[ROWS * COLS / 32], sc16[ROWS * COLS / 32],
        bi16[ROWS * COLS / 32];
    assert_non_null(w);
    assert_non_null(packed);
    int n_clamped = 0;
    for (size_t bx = 0; bx < LV_ARRAY_LEN(bits_list); bx++)
        for (size_t gx = 0; gx < LV_ARRAY_LEN(groups); gx++) {
            int bits = bits_list[bx], group = groups[gx], ng = COLS / group;
            for (int i = 0; i < ROWS * COLS; i++) /* rows of different ranges and offsets */
                w[i] = rnd_float(-1, 1) * (float)(1 + i / COLS) + (float)((i / COLS) % 3 - 1);
            lv_err err;
            assert_int_equal(mlx_affine_quantize(w, ROWS, COLS, bits, group, packed, sc, bi, &err),
                             LV_OK);
            for (int i = 0; i < ROWS * ng; i++) {
                sc16[i] = lv_f16_to_f32(lv_f32_to_f16(sc[i]));
                bi16[i] = lv_f16_to_f32(lv_f32_to_f16(bi[i]));
            }
            int n_bins = (1 << bits) - 1;
            for (int r = 0; r < ROWS; r++) {
                const uint32_t *pr = packed + (size_t)r * COLS * bits / 32;
                for (int pass = 0; pass < 2; pass++) {
                    const float *s = (pass ? sc16 : sc) + r * ng, *b = (pass ? bi16 : bi) + r * ng;
                    mlx_affine_dequantize_row(pr, s, b, COLS, bits, group, back);
                    for (int j = 0; j < COLS; j++) {
                        int g = j / group;
                        double t = ((double)w[r * COLS + j] - bi[r * ng + g]) / sc[r * ng + g];
                        double bound =
                            fabs(sc[r * ng + g]) * (t > n_bins + 0.5 ? 1 : 0.5) * (1 + 1e-5) + 1e-7;
                        if (t > n_bins + 0.5) n_clamped++;
                        if (pass)
                            bound += fabs(sc16[r * ng + g] - sc[r * ng + g]) * n_bins +
                                     fabs(bi16[r * ng + g] - bi[r * ng + g]);
                        double e = fabs((double)back[j] - w[r * COLS + j]);
                        if (e > bound)
                            fail_msg("bits %d group %d row %d col %d (%s scales): error %g > %g",
                                     bits, group, r, j, pass ? "f16" : "f32", e, bound);
                    }
                }
            }
        }
    printf("    %d values beyond code n + 1/2 (clamped), of %d\n", n_clamped,
           (int)(LV_ARRAY_LEN(bits_list) * LV_ARRAY_LEN(groups)) * ROWS * COLS * 2);
    free(w);
    free(packed);
}

/* be_dequant_row on a BE_MLX weight (F16/BF16/F32 side data, unaligned
 * bytes) equals mlx_affine_dequantize_row on the same values. */
static void mlx_backend_row_matches(void **state) {
    enum { ROWS = 3, COLS = 192 };
    static const int bits_list[] = {2, 3, 4, 5, 6, 8};
    float w[ROWS * COLS], sc[ROWS * COLS / 32], bi[ROWS * COLS / 32], want[COLS], got[COLS];
    uint32_t packed[ROWS * COLS / 4];
    for (size_t bx = 0; bx < LV_ARRAY_LEN(bits_list); bx++)
        for (int sd = 0; sd < 3; sd++) {
            int bits = bits_list[bx], group = 64, ng = COLS / group;
            for (int i = 0; i < ROWS * COLS; i++) w[i] = rnd_float(-2, 1);
            lv_err err;
            assert_int_equal(mlx_affine_quantize(w, ROWS, COLS, bits, group, packed, sc, bi, &err),
                             LV_OK);
            be_dtype sdt = sd == 0 ? BE_F32 : sd == 1 ? BE_F16 : BE_BF16;
            unsigned char side[1 + 2 * 4 * ROWS * COLS / 32], codes[1 + sizeof packed];
            size_t es = sdt == BE_F32 ? 4 : 2, n = (size_t)ROWS * ng;
            for (size_t i = 0; i < n; i++) {
                float v[2] = {sc[i], bi[i]};
                for (int k = 0; k < 2; k++) {
                    uint16_t h = sdt == BE_F16 ? lv_f32_to_f16(v[k]) : lv_f32_to_bf16(v[k]);
                    if (sdt == BE_F32)
                        memcpy(side + 1 + (k * n + i) * es, &v[k], 4);
                    else
                        memcpy(side + 1 + (k * n + i) * es, &h, 2);
                    float r = sdt == BE_F32   ? v[k]
                              : sdt == BE_F16 ? lv_f16_to_f32(h)
                                              : lv_bf16_to_f32(h);
                    (k ? bi : sc)[i] = r; /* what the checkpoint holds */
                }
            }
            memcpy(codes + 1, packed, sizeof packed);
            be_quant q = {bits, group, sdt, side + 1, side + 1 + n * es};
            be_weight bw;
            assert_int_equal(be_weight_describe(&bw, BE_MLX, ROWS, COLS, codes + 1, &q, &err),
                             LV_OK);
            for (int r = 0; r < ROWS; r++) {
                mlx_affine_dequantize_row(packed + (size_t)r * COLS * bits / 32, sc + r * ng,
                                          bi + r * ng, COLS, bits, group, want);
                be_dequant_row(&bw, r, got);
                assert_memory_equal(got, want, sizeof got);
            }
        }
}

/* ---------------------------------------------------------------------------
 * MLX checkpoints built at test time
 *
 * A tiny llava-1.5 (text dim 64, vision dim 64, so every matrix can be
 * grouped by 32 or 64) with random weights. For each layout two directories
 * are written: the MLX checkpoint, and a reference where every matrix holds
 * the dequantised values of the MLX one (scales and biases after their cast)
 * as F32. Both are run on the CPU backend, an image and a prompt, and their
 * logits must agree within 1e-4.
 */

enum { TD = 64, THID = 128, VOCAB = 512, TLAYERS = 2, VD = 64, VHID = 128, VLAYERS = 3 };
enum { PATCH = 14, IMG = 56, NPOS = 17 };

typedef struct {
    char name[160];
    const char *dtype;
    int nd;
    int64_t shape[4];
    unsigned char *data;
    size_t n;
} tensor;

typedef struct {
    tensor t[256];
    int n;
} tset;

static void tset_free(tset *s) {
    for (int i = 0; i < s->n; i++) free(s->t[i].data);
    s->n = 0;
}

static void add_raw(tset *s, const char *name, const char *dtype, int nd, const int64_t *shape,
                    const void *data, size_t n) {
    assert_true(s->n < (int)LV_ARRAY_LEN(s->t));
    tensor *t = &s->t[s->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dtype;
    t->nd = nd;
    memcpy(t->shape, shape, sizeof(int64_t) * nd);
    t->data = malloc(n ? n : 1);
    assert_non_null(t->data);
    memcpy(t->data, data, n);
    t->n = n;
}

static void add_f32(tset *s, const char *name, int nd, const int64_t *shape, const float *v) {
    size_t n = 1;
    for (int i = 0; i < nd; i++) n *= (size_t)shape[i];
    add_raw(s, name, "F32", nd, shape, v, n * 4);
}

static void drop(tset *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->t[i].name, name) == 0) {
            free(s->t[i].data);
            s->t[i] = s->t[--s->n];
            return;
        }
    fail_msg("no tensor %s to drop", name);
}

static tensor *get(tset *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->t[i].name, name) == 0) return &s->t[i];
    fail_msg("no tensor %s", name);
    return NULL;
}

static void write_safetensors(const char *dir, const tset *s) {
    json_t *hdr = json_object();
    json_object_set_new(hdr, "__metadata__", json_pack("{s:s}", "format", "mlx"));
    size_t off = 0;
    for (int i = 0; i < s->n; i++) {
        json_t *shape = json_array();
        for (int d = 0; d < s->t[i].nd; d++)
            json_array_append_new(shape, json_integer(s->t[i].shape[d]));
        json_object_set_new(hdr, s->t[i].name,
                            json_pack("{s:s, s:o, s:[I, I]}", "dtype", s->t[i].dtype, "shape",
                                      shape, "data_offsets", (json_int_t)off,
                                      (json_int_t)(off + s->t[i].n)));
        off += s->t[i].n;
    }
    char *h = json_dumps(hdr, JSON_COMPACT);
    size_t hn = strlen(h), padded = (hn + 7) / 8 * 8;
    char path[2048];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t hl = padded;
    fwrite(&hl, 8, 1, f);
    fwrite(h, 1, hn, f);
    for (size_t i = hn; i < padded; i++) fputc(' ', f);
    for (int i = 0; i < s->n; i++) fwrite(s->t[i].data, 1, s->t[i].n, f);
    fclose(f);
    free(h);
    json_decref(hdr);
}

/* What a layout quantizes, and how. */
typedef struct {
    const char *label;
    int bits, group;
    const char *scale_dtype; /* "F16" | "BF16" */
    bool vision;             /* vision linears, projector, position_embedding quantized */
    bool ohwi;               /* patch conv stored OHWI */
    bool mode;               /* current mlx-vlm: "mode" + duplicate quantization_config */
    bool overrides;          /* per-module overrides (one spelled without language_model.) */
} layout;

#define OVR_DOWN "language_model.model.layers.0.mlp.down_proj"
#define OVR_Q    "language_model.model.layers.1.self_attn.q_proj"

static void module_params(const layout *L, const char *module, int *bits, int *group) {
    *bits = L->bits;
    *group = L->group;
    if (L->overrides && strcmp(module, OVR_DOWN) == 0) *bits = 8, *group = 32;
    if (L->overrides && strcmp(module, OVR_Q) == 0) *bits = 2, *group = 32;
}

static float *rnd_matrix(size_t n, float amp) {
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) v[i] = rnd_float(-amp, amp);
    return v;
}

/* module.weight (rows, cols): quantized into q (U32 + scales + biases), its
 * dequantised values into ref as F32; or float in both. */
static void add_matrix(tset *q, tset *ref, const layout *L, const char *module, int rows, int cols,
                       bool quantize, float amp) {
    char name[200];
    snprintf(name, sizeof name, "%s.weight", module);
    float *w = rnd_matrix((size_t)rows * cols, amp);
    int64_t shape[2] = {rows, cols};
    if (!quantize) {
        add_f32(q, name, 2, shape, w);
        add_f32(ref, name, 2, shape, w);
        free(w);
        return;
    }
    int bits, group;
    module_params(L, module, &bits, &group);
    size_t words = (size_t)rows * cols * bits / 32, ng = (size_t)rows * (cols / group);
    uint32_t *packed = malloc(words * 4);
    float *sc = malloc(ng * 4), *bi = malloc(ng * 4), *deq = malloc((size_t)rows * cols * 4);
    uint16_t *sc16 = malloc(ng * 2), *bi16 = malloc(ng * 2);
    lv_err err;
    assert_int_equal(mlx_affine_quantize(w, rows, cols, bits, group, packed, sc, bi, &err), LV_OK);
    bool bf = strcmp(L->scale_dtype, "BF16") == 0;
    for (size_t i = 0; i < ng; i++) {
        sc16[i] = bf ? lv_f32_to_bf16(sc[i]) : lv_f32_to_f16(sc[i]);
        bi16[i] = bf ? lv_f32_to_bf16(bi[i]) : lv_f32_to_f16(bi[i]);
        sc[i] = bf ? lv_bf16_to_f32(sc16[i]) : lv_f16_to_f32(sc16[i]);
        bi[i] = bf ? lv_bf16_to_f32(bi16[i]) : lv_f16_to_f32(bi16[i]);
    }
    for (int r = 0; r < rows; r++)
        mlx_affine_dequantize_row(packed + (size_t)r * cols * bits / 32,
                                  sc + (size_t)r * (cols / group), bi + (size_t)r * (cols / group),
                                  cols, bits, group, deq + (size_t)r * cols);
    int64_t ws[2] = {rows, cols * bits / 32}, ss[2] = {rows, cols / group};
    add_raw(q, name, "U32", 2, ws, packed, words * 4);
    snprintf(name, sizeof name, "%s.scales", module);
    add_raw(q, name, L->scale_dtype, 2, ss, sc16, ng * 2);
    snprintf(name, sizeof name, "%s.biases", module);
    add_raw(q, name, L->scale_dtype, 2, ss, bi16, ng * 2);
    snprintf(name, sizeof name, "%s.weight", module);
    add_f32(ref, name, 2, shape, deq);
    free(w);
    free(packed);
    free(sc);
    free(bi);
    free(deq);
    free(sc16);
    free(bi16);
}

static void add_vector(tset *q, tset *ref, const char *name, int n, float center, float amp) {
    float *v = rnd_matrix((size_t)n, amp);
    for (int i = 0; i < n; i++) v[i] += center;
    int64_t shape[1] = {n};
    add_f32(q, name, 1, shape, v);
    add_f32(ref, name, 1, shape, v);
    free(v);
}

/* The whole tiny model in layout L into q (MLX) and ref (F32). */
static void build_model(const layout *L, tset *q, tset *ref) {
    char m[200];
    g_rng = 0x1234567u; /* the same random weights for every layout */
    /* Language model: always quantized (embed_tokens is a QuantizedEmbedding). */
    add_matrix(q, ref, L, "language_model.model.embed_tokens", VOCAB, TD, true, 1.0f);
    add_matrix(q, ref, L, "language_model.lm_head", VOCAB, TD, true, 0.3f);
    add_vector(q, ref, "language_model.model.norm.weight", TD, 1, 0.1f);
    static const char *const attn[] = {"q_proj", "k_proj", "v_proj", "o_proj"};
    for (int l = 0; l < TLAYERS; l++) {
        for (int k = 0; k < 4; k++) {
            snprintf(m, sizeof m, "language_model.model.layers.%d.self_attn.%s", l, attn[k]);
            add_matrix(q, ref, L, m, TD, TD, true, 0.25f);
        }
        snprintf(m, sizeof m, "language_model.model.layers.%d.mlp.gate_proj", l);
        add_matrix(q, ref, L, m, THID, TD, true, 0.25f);
        snprintf(m, sizeof m, "language_model.model.layers.%d.mlp.up_proj", l);
        add_matrix(q, ref, L, m, THID, TD, true, 0.25f);
        snprintf(m, sizeof m, "language_model.model.layers.%d.mlp.down_proj", l);
        add_matrix(q, ref, L, m, TD, THID, true, 0.2f);
        snprintf(m, sizeof m, "language_model.model.layers.%d.input_layernorm.weight", l);
        add_vector(q, ref, m, TD, 1, 0.1f);
        snprintf(m, sizeof m, "language_model.model.layers.%d.post_attention_layernorm.weight", l);
        add_vector(q, ref, m, TD, 1, 0.1f);
    }
    /* Projector. */
    add_matrix(q, ref, L, "multi_modal_projector.linear_1", TD, VD, L->vision, 0.2f);
    add_vector(q, ref, "multi_modal_projector.linear_1.bias", TD, 0, 0.1f);
    add_matrix(q, ref, L, "multi_modal_projector.linear_2", TD, TD, L->vision, 0.2f);
    add_vector(q, ref, "multi_modal_projector.linear_2.bias", TD, 0, 0.1f);
    /* Vision tower. */
#define VTP "vision_tower.vision_model."
    add_vector(q, ref, VTP "embeddings.class_embedding", VD, 0, 0.5f);
    add_matrix(q, ref, L, VTP "embeddings.position_embedding", NPOS, VD, L->vision, 0.5f);
    float *conv = rnd_matrix((size_t)VD * 3 * PATCH * PATCH, 0.05f); /* OIHW */
    int64_t oihw[4] = {VD, 3, PATCH, PATCH}, ohwi[4] = {VD, PATCH, PATCH, 3};
    add_f32(ref, VTP "embeddings.patch_embedding.weight", 4, oihw, conv);
    if (L->ohwi) {
        float *t = malloc(sizeof(float) * VD * 3 * PATCH * PATCH);
        for (int o = 0; o < VD; o++)
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < PATCH; y++)
                    for (int x = 0; x < PATCH; x++)
                        t[((o * PATCH + y) * PATCH + x) * 3 + c] =
                            conv[((o * 3 + c) * PATCH + y) * PATCH + x];
        add_f32(q, VTP "embeddings.patch_embedding.weight", 4, ohwi, t);
        free(t);
    } else {
        add_f32(q, VTP "embeddings.patch_embedding.weight", 4, oihw, conv);
    }
    free(conv);
    add_vector(q, ref, VTP "pre_layrnorm.weight", VD, 1, 0.1f);
    add_vector(q, ref, VTP "pre_layrnorm.bias", VD, 0, 0.1f);
    static const char *const vattn[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
    for (int l = 0; l < VLAYERS; l++) {
        for (int k = 0; k < 4; k++) {
            snprintf(m, sizeof m, VTP "encoder.layers.%d.self_attn.%s", l, vattn[k]);
            add_matrix(q, ref, L, m, VD, VD, L->vision, 0.25f);
            snprintf(m, sizeof m, VTP "encoder.layers.%d.self_attn.%s.bias", l, vattn[k]);
            add_vector(q, ref, m, VD, 0, 0.1f);
        }
        snprintf(m, sizeof m, VTP "encoder.layers.%d.mlp.fc1", l);
        add_matrix(q, ref, L, m, VHID, VD, L->vision, 0.25f);
        snprintf(m, sizeof m, VTP "encoder.layers.%d.mlp.fc1.bias", l);
        add_vector(q, ref, m, VHID, 0, 0.1f);
        snprintf(m, sizeof m, VTP "encoder.layers.%d.mlp.fc2", l);
        add_matrix(q, ref, L, m, VD, VHID, L->vision, 0.2f);
        snprintf(m, sizeof m, VTP "encoder.layers.%d.mlp.fc2.bias", l);
        add_vector(q, ref, m, VD, 0, 0.1f);
        const char *ln[4] = {"layer_norm1.weight", "layer_norm1.bias", "layer_norm2.weight",
                             "layer_norm2.bias"};
        for (int k = 0; k < 4; k++) {
            snprintf(m, sizeof m, VTP "encoder.layers.%d.%s", l, ln[k]);
            add_vector(q, ref, m, VD, k % 2 ? 0 : 1, 0.1f);
        }
    }
#undef VTP
}

/* config.json of the tiny model (from llava-1.5-tiny's, vision widened to 64),
 * with the layout's quantization block; quant_extra replaces it when set. */
static void write_config(const char *dir, const layout *L, bool quantized,
                         const char *quant_override_json) {
    char path[2048];
    snprintf(path, sizeof path, "%s/forward/llava-1.5-tiny/config.json", tu_env("LLAVA_TEST_DATA"));
    json_t *cfg = json_load_file(path, 0, NULL);
    assert_non_null(cfg);
    json_t *vc = json_object_get(cfg, "vision_config");
    json_object_set_new(vc, "hidden_size", json_integer(VD));
    json_object_set_new(vc, "intermediate_size", json_integer(VHID));
    json_object_set_new(vc, "num_attention_heads", json_integer(4));
    if (quantized) {
        json_t *qb;
        if (quant_override_json) {
            qb = json_loads(quant_override_json, 0, NULL);
            assert_non_null(qb);
        } else {
            qb = json_pack("{s:i, s:i}", "group_size", L->group, "bits", L->bits);
            if (L->mode) json_object_set_new(qb, "mode", json_string("affine"));
            if (L->overrides) {
                json_object_set_new(qb, OVR_DOWN,
                                    json_pack("{s:i, s:i}", "group_size", 32, "bits", 8));
                /* spelled without the language_model. prefix (formats.md §3.2) */
                json_object_set_new(qb, "model.layers.1.self_attn.q_proj",
                                    json_pack("{s:i, s:i}", "group_size", 32, "bits", 2));
            }
        }
        if (L->mode && !quant_override_json) json_object_set(cfg, "quantization_config", qb);
        json_object_set_new(cfg, "quantization", qb);
    }
    char *text = json_dumps(cfg, JSON_INDENT(2));
    tu_write_file(dir, "config.json", text, strlen(text));
    free(text);
    json_decref(cfg);
}

static void copy_aux(const char *dir) {
    char cmd[4096];
    const char *src = tu_env("LLAVA_TEST_DATA");
    snprintf(cmd, sizeof cmd,
             "cd '%s/forward/llava-1.5-tiny' && cp tokenizer.json tokenizer_config.json "
             "special_tokens_map.json preprocessor_config.json generation_config.json "
             "chat_template.json processor_config.json '%s/'",
             src, dir);
    assert_int_equal(system(cmd), 0);
}

static const char *make_dir(const char *tag, const layout *L, const tset *s, bool quantized,
                            const char *quant_json) {
    static char dirs[2][1024];
    static int k;
    char *d = dirs[k ^= 1];
    snprintf(d, sizeof dirs[0], "%s", tu_tmpdir(tag));
    copy_aux(d);
    write_config(d, L, quantized, quant_json);
    write_safetensors(d, s);
    return d;
}

enum { N_IDS = 22, IMAGE_ID = 500 };

/* Logits of an image + prompt prefill and one decode step (2 × VOCAB). */
static void run_model(const char *dir, const char *backend, const layout *L, float *logits) {
    llava *m;
    lv_err err = {{0}};
    if (llava_open(dir, &m, &err)) fail_msg("%s: %s", dir, err.msg);
    llava_set_exact(m, true); /* equal to the float model: the float path */
    if (llava_load(m, backend, 2, &err)) fail_msg("%s: %s", dir, err.msg);
    if (L) { /* the layout's matrices really are quantized (and the others not) */
        assert_int_equal(m->text_w.embed.dtype, BE_MLX);
        assert_int_equal(m->text_w.layers[0].w_down.dtype, BE_MLX);
        assert_int_equal(m->text_w.layers[0].w_down.q.bits, L->overrides ? 8 : L->bits);
        assert_int_equal(m->text_w.layers[1].wq.q.bits, L->overrides ? 2 : L->bits);
        assert_int_equal(m->text_w.layers[1].wk.q.group, L->group);
        assert_int_equal(m->vision_w.layers[0].fc1.dtype, L->vision ? BE_MLX : BE_F32);
        assert_int_equal(m->proj_w.w1.dtype, L->vision ? BE_MLX : BE_F32);
        assert_int_equal(m->text_w.lm_head.q.scale_dtype,
                         strcmp(L->scale_dtype, "BF16") == 0 ? BE_BF16 : BE_F16);
    } else {
        assert_int_equal(m->text_w.embed.dtype, BE_F32);
    }
    img_tensor px = {.n_tiles = 1, .tile_h = IMG, .tile_w = IMG, .image_h = IMG, .image_w = IMG};
    px.data = malloc(sizeof(float) * 3 * IMG * IMG);
    g_rng = 99;
    for (int i = 0; i < 3 * IMG * IMG; i++) px.data[i] = rnd_float(-1.5f, 1.5f);
    llava_image im;
    if (llava_encode_image(m, &px, false, &im, &err)) fail_msg("%s", err.msg);
    assert_int_equal(im.n_tokens, 16);
    int32_t ids[N_IDS] = {1, 17, 33};
    for (int i = 3; i < 19; i++) ids[i] = IMAGE_ID;
    ids[19] = 71, ids[20] = 5, ids[21] = 300;
    llava_features *f;
    llava_encoder *e;
    llava_seq *s;
    llava_batch *bt;
    if (llava_features_new(m, im.n_tokens, &f, &err) ||
        llava_encoder_new(m, &px, f, 0, false, &e, &err) || llava_encoder_run(e, 0, &err) ||
        llava_seq_new(m, 64, &s, &err) || llava_batch_new(m, LLAVA_BATCH, 1, &bt, &err))
        fail_msg("%s", err.msg);
    while (!llava_encoder_done(e))
        if (llava_encoder_run(e, 0, &err)) fail_msg("%s", err.msg);
    int32_t next = 42;
    llava_input in = {.seq = s, .ids = ids, .n = N_IDS, .features = f};
    llava_input dec = {.seq = s, .ids = &next, .n = 1};
    if (llava_forward(m, bt, &in, 1, logits, &err) ||
        llava_forward(m, bt, &dec, 1, logits + VOCAB, &err))
        fail_msg("%s", err.msg);
    llava_batch_free(bt);
    llava_seq_free(s);
    llava_encoder_free(e);
    llava_features_free(f);
    llava_image_free(&im);
    free(px.data);
    llava_free(m);
}

static const layout LAYOUTS[] = {
    /* mlx-vlm 2024: nn.quantize without a predicate, everything quantized. */
    {"legacy-all-quantized", 4, 64, "F16", true, false, false, false},
    /* current mlx-vlm: vision tower and projector float, OHWI conv, mode. */
    {"current-text-only", 4, 32, "F16", false, true, true, false},
    /* mixed precision: per-module overrides. */
    {"per-module-override", 4, 64, "F16", true, false, true, true},
    /* converted with --dtype bfloat16. */
    {"bf16-scales", 8, 64, "BF16", false, true, true, false},
    {"3bit-bf16", 3, 32, "BF16", true, true, false, false},
};

static void mlx_checkpoints_match_dequantised(void **state) {
    float *got = malloc(sizeof(float) * 2 * VOCAB), *want = malloc(sizeof(float) * 2 * VOCAB);
    for (size_t i = 0; i < LV_ARRAY_LEN(LAYOUTS); i++) {
        const layout *L = &LAYOUTS[i];
        tset *q = calloc(1, sizeof *q), *ref = calloc(1, sizeof *ref);
        build_model(L, q, ref);
        const char *qdir = make_dir("quant-mlx", L, q, true, NULL);
        run_model(qdir, "cpu", L, got);
        if (i == 0) { /* the scalar reference on the quantized checkpoint agrees too */
            run_model(qdir, "ref", L, want);
            double d = 0;
            for (int k = 0; k < 2 * VOCAB; k++)
                if (fabs((double)got[k] - want[k]) > d) d = fabs((double)got[k] - want[k]);
            printf("    %-22s cpu vs ref backend: max |logit diff| %.2e\n", L->label, d);
            assert_true(d <= 1e-4);
        }
        run_model(make_dir("quant-ref", L, ref, false, NULL), "cpu", NULL, want);
        double worst = 0, mag = 0;
        for (int k = 0; k < 2 * VOCAB; k++) {
            double d = fabs((double)got[k] - want[k]);
            if (d > worst || isnan(d)) worst = d;
            if (fabs(want[k]) > mag) mag = fabs(want[k]);
        }
        printf("    %-22s max |logit diff| %.2e (logits up to %.2f)\n", L->label, worst, mag);
        if (!(worst <= 1e-4)) fail_msg("%s: logits differ by %g", L->label, worst);
        tset_free(q);
        tset_free(ref);
        free(q);
        free(ref);
    }
    free(got);
    free(want);
}

/* A checkpoint that cannot load: the status and a phrase of the message. */
static void expect_load_error(const char *dir, lv_status want, const char *needle) {
    llava *m;
    lv_err err = {{0}};
    if (llava_open(dir, &m, &err)) {
        assert_int_equal(llava_open(dir, &m, &err), want);
    } else {
        lv_status st = llava_load(m, "cpu", 1, &err);
        llava_free(m);
        if (st != want) fail_msg("%s: status %d (%s), want %d", dir, st, err.msg, want);
    }
    if (!strstr(err.msg, needle)) fail_msg("message \"%s\" lacks \"%s\"", err.msg, needle);
}

static void bad_mlx_checkpoints(void **state) {
    const layout *L = &LAYOUTS[1];
    const char *q0 = "language_model.model.layers.0.self_attn.q_proj";
    char name[200];
    for (int c = 0; c < 7; c++) {
        tset *q = calloc(1, sizeof *q), *ref = calloc(1, sizeof *ref);
        build_model(L, q, ref);
        const char *quant_json = NULL, *needle = NULL;
        lv_status want = LV_ERR_FORMAT;
        if (c == 0) { /* missing biases */
            snprintf(name, sizeof name, "%s.biases", q0);
            drop(q, name);
            needle = "q_proj.biases";
        } else if (c == 1) { /* wrong scales shape */
            snprintf(name, sizeof name, "%s.scales", q0);
            tensor *t = get(q, name);
            t->shape[0] = TD / 2, t->shape[1] = 2 * TD / 32; /* same bytes, wrong shape */
            needle = "q_proj.scales";
        } else if (c == 2) { /* config says 8 bits, tensors are 4-bit */
            quant_json = "{\"group_size\": 32, \"bits\": 8, \"mode\": \"affine\"}";
            needle = "bits 8";
        } else if (c == 3) { /* U32 without scales */
            snprintf(name, sizeof name, "%s.scales", q0);
            drop(q, name);
            snprintf(name, sizeof name, "%s.biases", q0);
            drop(q, name);
            needle = "no 'language_model.model.layers.0.self_attn.q_proj.scales'";
        } else if (c == 4) { /* another MLX mode */
            quant_json = "{\"group_size\": 32, \"bits\": 4, \"mode\": \"mxfp4\"}";
            want = LV_ERR_UNSUPPORTED;
            needle = "mxfp4";
        } else if (c == 6) { /* no quantization block: bits/group from the shapes (4, 32) */
            quant_json = "none";
        } else { /* biases of another dtype than the scales */
            snprintf(name, sizeof name, "%s.biases", q0);
            get(q, name)->dtype = "I16";
            needle = "differs from its scales";
        }
        const char *dir = make_dir("quant-bad", L, q,
                                   quant_json == NULL || strcmp(quant_json, "none"), quant_json);
        if (c == 6) { /* loads, and the shapes gave 4 bits, group 32 */
            llava *m;
            lv_err err = {{0}};
            if (llava_open(dir, &m, &err) || llava_load(m, "ref", 1, &err)) fail_msg("%s", err.msg);
            assert_int_equal(m->text_w.layers[0].wq.q.bits, 4);
            assert_int_equal(m->text_w.layers[0].wq.q.group, 32);
            llava_free(m);
        } else {
            expect_load_error(dir, want, needle);
        }
        tset_free(q);
        tset_free(ref);
        free(q);
        free(ref);
    }
}

/* ---------------------------------------------------------------------------
 * ggml block tensors (an st_set as the GGUF loader builds it)
 *
 * A one-layer language model of width 256 whose matrices are held in every
 * block type, next to the same model with the dequantised values as F32: the
 * loader borrows the block bytes in place, and the logits agree.
 */

enum { GD = 256, GHID = 512, GVOCAB = 64 };

typedef struct {
    const char *name;
    lv_dtype dtype;
    be_dtype be;
    int rows, cols;
} gmat;

static const gmat GMATS[] = {
    {"language_model.model.embed_tokens.weight", LV_DTYPE_Q8_0, BE_Q8_0, GVOCAB, GD},
    {"language_model.lm_head.weight", LV_DTYPE_Q6_K, BE_Q6_K, GVOCAB, GD},
    {"language_model.model.layers.0.self_attn.q_proj.weight", LV_DTYPE_Q4_K, BE_Q4_K, GD, GD},
    {"language_model.model.layers.0.self_attn.k_proj.weight", LV_DTYPE_Q5_K, BE_Q5_K, GD, GD},
    {"language_model.model.layers.0.self_attn.v_proj.weight", LV_DTYPE_Q4_0, BE_Q4_0, GD, GD},
    {"language_model.model.layers.0.self_attn.o_proj.weight", LV_DTYPE_Q4_1, BE_Q4_1, GD, GD},
    {"language_model.model.layers.0.mlp.gate_proj.weight", LV_DTYPE_Q4_K, BE_Q4_K, GHID, GD},
    {"language_model.model.layers.0.mlp.up_proj.weight", LV_DTYPE_Q8_0, BE_Q8_0, GHID, GD},
    {"language_model.model.layers.0.mlp.down_proj.weight", LV_DTYPE_Q6_K, BE_Q6_K, GD, GHID},
};

/* Random blocks with f16 scales of magnitude 2^-9..2^-5 (K types: d and dmin). */
static unsigned char *rnd_blocks(be_dtype dt, int rows, int cols, size_t *n) {
    *n = be_row_bytes(dt, cols, NULL) * rows;
    unsigned char *p = malloc(*n);
    assert_non_null(p);
    for (size_t i = 0; i < *n; i++) p[i] = (unsigned char)rnd();
    int bb = be_block_bytes(dt);
    for (size_t b = 0; b < *n / bb; b++) {
        uint16_t h1 = (uint16_t)((rnd() & 1) << 15 | (6 + rnd() % 4) << 10 | (rnd() & 0x3ff));
        uint16_t h2 = (uint16_t)((6 + rnd() % 4) << 10 | (rnd() & 0x3ff));
        if (dt == BE_Q6_K) {
            put16(p + b * bb + 208, h1);
        } else {
            put16(p + b * bb, h1);
            if (dt == BE_Q4_1 || dt == BE_Q4_K || dt == BE_Q5_K) put16(p + b * bb + 2, h2);
        }
    }
    return p;
}

static void add_norms(st_set *s, float *ones, lv_err *err) {
    int64_t shape[1] = {GD};
    const char *names[3] = {"language_model.model.norm.weight",
                            "language_model.model.layers.0.input_layernorm.weight",
                            "language_model.model.layers.0.post_attention_layernorm.weight"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(st_set_add(s, names[i], "mem", LV_DTYPE_F32, 1, shape, ones, NULL, err),
                         LV_OK);
}

static void llm_logits(const st_set *s, const lv_model_config *cfg, bool blocks, float *logits) {
    be b = {.ops = &be_cpu_ops, .exact = true}; /* the float path: equal to the F32 model */
    lv_err err;
    assert_int_equal(b.ops->init(&b, 2, &err), LV_OK);
    llm_weights w;
    if (llm_weights_load(&b, s, cfg, NULL, &w, &err)) fail_msg("%s", err.msg);
    if (blocks) /* each matrix in its block type, borrowed in place */
        for (size_t i = 0; i < LV_ARRAY_LEN(GMATS); i++) {
            const be_weight *bw = i == 0   ? &w.embed
                                  : i == 1 ? &w.lm_head
                                  : i == 2 ? &w.layers[0].wq
                                  : i == 3 ? &w.layers[0].wk
                                  : i == 4 ? &w.layers[0].wv
                                  : i == 5 ? &w.layers[0].wo
                                  : i == 6 ? &w.layers[0].w_gate
                                  : i == 7 ? &w.layers[0].w_up
                                           : &w.layers[0].w_down;
            assert_int_equal(bw->dtype, GMATS[i].be);
            assert_ptr_equal(bw->data, st_find(s, GMATS[i].name)->data);
        }
    llm m;
    llm_seq q;
    llm_batch bt;
    assert_int_equal(llm_init(&m, &b, &cfg->text, &w, &err), LV_OK);
    assert_int_equal(llm_seq_init(&m, 16, &q, &err), LV_OK);
    assert_int_equal(llm_batch_init(&m, 8, 1, &bt, &err), LV_OK);
    int32_t ids[5] = {1, 7, 33, 60, 2};
    llm_seq *seqs[] = {&q};
    int five = 5, one = 1;
    llm_batch_embed(&m, &bt, 0, ids, 5);
    if (llm_forward(&m, &bt, seqs, &five, 1, logits, &err)) fail_msg("%s", err.msg);
    llm_batch_embed(&m, &bt, 0, ids + 2, 1);
    if (llm_forward(&m, &bt, seqs, &one, 1, logits + GVOCAB, &err)) fail_msg("%s", err.msg);
    llm_batch_deinit(&bt);
    llm_seq_deinit(&q);
    llm_weights_free(&b, &w);
    b.ops->deinit(&b);
}

static void ggml_block_tensors_load(void **state) {
    static const char cfg_json[] =
        "{\"model_type\": \"llava\", \"text_config\": {\"model_type\": \"llama\", "
        "\"hidden_size\": 256, \"intermediate_size\": 512, \"num_hidden_layers\": 1, "
        "\"num_attention_heads\": 4, \"num_key_value_heads\": 4, \"vocab_size\": 64}, "
        "\"image_token_index\": 63}";
    lv_model_config *cfg = malloc(sizeof *cfg);
    lv_err err;
    assert_int_equal(hf_config_parse(cfg_json, strlen(cfg_json), "config.json", cfg, &err), LV_OK);
    st_set *blk, *f32;
    assert_int_equal(st_set_new(&blk, &err), LV_OK);
    assert_int_equal(st_set_new(&f32, &err), LV_OK);
    float *ones = malloc(GD * sizeof *ones);
    for (int i = 0; i < GD; i++) ones[i] = 1.0f + 0.01f * (float)(i % 7);
    add_norms(blk, ones, &err);
    add_norms(f32, ones, &err);
    g_rng = 4242;
    for (size_t i = 0; i < LV_ARRAY_LEN(GMATS); i++) {
        const gmat *g = &GMATS[i];
        size_t n;
        unsigned char *data = rnd_blocks(g->be, g->rows, g->cols, &n);
        int64_t shape[2] = {g->rows, g->cols};
        assert_int_equal(st_set_add(blk, g->name, "mem.gguf", g->dtype, 2, shape, data, data, &err),
                         LV_OK);
        be_weight d;
        assert_int_equal(be_weight_describe(&d, g->be, g->rows, g->cols, data, NULL, &err), LV_OK);
        float *deq = malloc(sizeof(float) * g->rows * g->cols);
        for (int r = 0; r < g->rows; r++) be_dequant_row(&d, r, deq + (size_t)r * g->cols);
        assert_int_equal(st_set_add(f32, g->name, "mem", LV_DTYPE_F32, 2, shape, deq, deq, &err),
                         LV_OK);
    }
    float got[2 * GVOCAB], want[2 * GVOCAB];
    llm_logits(blk, cfg, true, got);
    llm_logits(f32, cfg, false, want);
    double worst = 0, mag = 0;
    for (int k = 0; k < 2 * GVOCAB; k++) {
        if (fabs(got[k] - want[k]) > worst || isnan(got[k])) worst = fabs(got[k] - want[k]);
        if (fabs(want[k]) > mag) mag = fabs(want[k]);
    }
    printf("    ggml blocks vs dequantised F32: max |logit diff| %.2e (logits up to %.2f)\n", worst,
           mag);
    /* The fused n = 1 kernels sum in another order than dequantise + dot. */
    assert_true(worst <= 1e-4 * (mag > 1 ? mag : 1));

    /* A block tensor of the wrong shape, and a 1-D block vector, are refused. */
    st_set *bad;
    assert_int_equal(st_set_new(&bad, &err), LV_OK);
    add_norms(bad, ones, &err);
    for (size_t i = 0; i < LV_ARRAY_LEN(GMATS); i++) {
        const st_tensor *t = st_find(blk, GMATS[i].name);
        int64_t shape[2] = {t->shape[0], t->shape[1]};
        if (i == 3) shape[0] /= 2, shape[1] *= 2; /* same bytes, transposed-looking */
        assert_int_equal(
            st_set_add(bad, GMATS[i].name, "bad.gguf", t->dtype, 2, shape, t->data, NULL, &err),
            LV_OK);
    }
    be b = {.ops = &be_ref_ops};
    assert_int_equal(b.ops->init(&b, 1, &err), LV_OK);
    llm_weights w;
    assert_int_equal(llm_weights_load(&b, bad, cfg, NULL, &w, &err), LV_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "k_proj"));
    assert_non_null(strstr(err.msg, "expected shape [256, 256]"));
    st_close(bad);
    assert_int_equal(st_set_new(&bad, &err), LV_OK);
    int64_t vshape[1] = {GD};
    unsigned char vec[GD / 32 * 34] = {0};
    assert_int_equal(st_set_add(bad, "language_model.model.norm.weight", "bad.gguf", LV_DTYPE_Q8_0,
                                1, vshape, vec, NULL, &err),
                     LV_OK);
    for (size_t i = 0; i < 2; i++) {
        const st_tensor *t = st_find(blk, GMATS[i].name);
        assert_int_equal(
            st_set_add(bad, GMATS[i].name, "bad.gguf", t->dtype, 2, t->shape, t->data, NULL, &err),
            LV_OK);
    }
    assert_int_equal(llm_weights_load(&b, bad, cfg, NULL, &w, &err), LV_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "norm.weight"));
    st_close(bad);
    b.ops->deinit(&b);
    st_close(blk);
    st_close(f32);
    free(ones);
    free(cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(f16_rounding),
        cmocka_unit_test(dequant_q8_0_q4_0_q4_1),
        cmocka_unit_test(dequant_q4_k_q5_k),
        cmocka_unit_test(dequant_q6_k),
        cmocka_unit_test(dequant_spans),
        cmocka_unit_test(mlx_packing_every_bits),
        cmocka_unit_test(mlx_quantize_edge_cases),
        cmocka_unit_test(mlx_error_bound),
        cmocka_unit_test(mlx_backend_row_matches),
        cmocka_unit_test(mlx_checkpoints_match_dequantised),
        cmocka_unit_test(bad_mlx_checkpoints),
        cmocka_unit_test(ggml_block_tensors_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
