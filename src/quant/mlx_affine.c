/*
 * mlx_affine.c - MLX affine quantization and dequantization of one matrix
 * (the algorithm and the bit layout are described in mlx_affine.h).
 *
 * Everything is float32 arithmetic in the order MLX's CPU kernel performs it
 * (mlx/backend/cpu/quantized.cpp `quantize`), so that the float32 scale and
 * bias handed back, once cast to the checkpoint's dtype by the caller, are the
 * values MLX itself would store. The build uses -ffp-contract=off, so no FMA
 * changes a rounding behind our back.
 */
#include "quant/mlx_affine.h"

#include <math.h>
#include <string.h>

#define MLX_AFFINE_EPS 1e-7f

bool mlx_affine_bits_ok(int bits) {
    return bits == 2 || bits == 3 || bits == 4 || bits == 5 || bits == 6 || bits == 8;
}

bool mlx_affine_group_ok(int group) {
    return group == 32 || group == 64 || group == 128;
}

/* Scale and bias of one group (formats.md §3.7 steps 1-4). */
static void group_params(const float *g, int group, float n_bins, float *scale_out,
                         float *bias_out) {
    float w_min = g[0], w_max = g[0];
    for (int i = 1; i < group; i++) {
        if (g[i] < w_min) w_min = g[i];
        if (g[i] > w_max) w_max = g[i];
    }
    float scale = (w_max - w_min) / n_bins;
    if (!(scale > MLX_AFFINE_EPS)) scale = MLX_AFFINE_EPS;
    bool min_edge = fabsf(w_min) > fabsf(w_max);
    if (!min_edge) scale = -scale;
    float edge = min_edge ? w_min : w_max;
    float q0 = rintf(edge / scale); /* the default rounding mode: half to even */
    float bias = 0.0f;
    if (q0 != 0.0f) {
        scale = edge / q0;
        bias = edge;
    }
    *scale_out = scale;
    *bias_out = bias;
}

lv_status mlx_affine_quantize(const float *w, int rows, int cols, int bits, int group,
                              uint32_t *packed, float *scales, float *biases, lv_err *err) {
    if (!mlx_affine_bits_ok(bits))
        return lv_fail(err, LV_ERR_ARG, "mlx affine: bits %d not one of 2, 3, 4, 5, 6, 8", bits);
    if (!mlx_affine_group_ok(group))
        return lv_fail(err, LV_ERR_ARG, "mlx affine: group size %d not one of 32, 64, 128", group);
    if (rows <= 0 || cols <= 0 || cols % group != 0)
        return lv_fail(err, LV_ERR_ARG,
                       "mlx affine: matrix (%d, %d): cols must be a positive multiple of the "
                       "group size %d",
                       rows, cols, group);
    float n_bins = (float)((1 << bits) - 1);
    size_t words = (size_t)cols * bits / 32, n_groups = (size_t)(cols / group);
    for (int r = 0; r < rows; r++) {
        const float *wr = w + (size_t)r * cols;
        uint32_t *pr = packed + (size_t)r * words;
        memset(pr, 0, words * sizeof *pr);
        for (size_t g = 0; g < n_groups; g++) {
            float scale, bias;
            group_params(wr + g * group, group, n_bins, &scale, &bias);
            scales[(size_t)r * n_groups + g] = scale;
            biases[(size_t)r * n_groups + g] = bias;
            for (int i = 0; i < group; i++) {
                size_t j = g * group + (size_t)i;
                float q = rintf((wr[j] - bias) / scale);
                if (!(q > 0.0f)) q = 0.0f; /* also maps a NaN weight to code 0 */
                if (q > n_bins) q = n_bins;
                uint32_t code = (uint32_t)q;
                size_t pos = j * (size_t)bits, word = pos >> 5, shift = pos & 31;
                pr[word] |= code << shift;
                if (shift + (size_t)bits > 32) pr[word + 1] |= code >> (32 - shift);
            }
        }
    }
    return LV_OK;
}

void mlx_affine_dequantize_row(const uint32_t *packed_row, const float *scales_row,
                               const float *biases_row, int cols, int bits, int group, float *out) {
    for (int j = 0; j < cols; j++) {
        float q = (float)mlx_affine_code(packed_row, bits, j);
        out[j] = scales_row[j / group] * q + biases_row[j / group];
    }
}
