/*
 * mlx_affine.h - MLX's affine group quantization of one matrix
 * (shared/spec/formats.md §3.5-3.7; ml-explore/mlx mlx/backend/cpu/quantized.cpp).
 *
 * A (rows, cols) matrix is cut into groups of `group` consecutive values of a
 * row. Each group stores a scale s and a bias β (float; F16/BF16/F32 on disk)
 * and each value an unsigned code q in [0, 2^bits - 1]:
 *
 *     w[r][j] = s[r][j / group] · q[r][j] + β[r][j / group]
 *
 * The codes of a row form one little-endian bit stream, LSB first: element j
 * occupies bits [j·bits, (j+1)·bits), bit 0 being the lowest bit of the row's
 * first byte (for bits 4: word k holds elements 8k..8k+7, element 8k+i in
 * bits 4i..4i+3). A row is cols·bits/32 uint32 words.
 *
 * The quantizer (the current MLX one, §3.7), per group in float32, n = 2^bits-1:
 *     scale = max((max - min) / n, 1e-7)
 *     edge  = the extreme of larger magnitude (min if |min| > |max|, else max,
 *             and then scale = -scale: scales may be negative)
 *     q0    = rint(edge / scale)            (round half to even)
 *     if q0 != 0: scale = edge / q0, bias = edge; else bias = 0
 *     q     = clamp(rint((w - bias) / scale), 0, n)
 * so the larger extreme is exact and zero is representable.
 */
#ifndef LV_QUANT_MLX_AFFINE_H
#define LV_QUANT_MLX_AFFINE_H

#include "base/common.h"

#include <stdbool.h>
#include <stdint.h>

/* True for the bit widths and group sizes MLX's affine mode supports. */
bool mlx_affine_bits_ok(int bits);   /* 2, 3, 4, 5, 6, 8 */
bool mlx_affine_group_ok(int group); /* 32, 64, 128 */

/* Quantizes a (rows, cols) float32 matrix with MLX's affine algorithm (formats.md §3.7, the
 * current one: edge = larger-magnitude extreme, negative scales, rint half-to-even, eps 1e-7).
 * packed: rows x (cols*bits/32) uint32 words (LSB-first stream per row); scales, biases:
 * rows x (cols/group) as float32 (the caller casts to F16/BF16; the values are computed in
 * float32 exactly as MLX does before its final cast, so the cast gives what MLX stores).
 * The codes are computed with the unrounded float32 scale and bias, as MLX does.
 * LV_ERR_ARG for bits not in {2,3,4,5,6,8}, group not in {32,64,128}, cols % group != 0. */
lv_status mlx_affine_quantize(const float *w, int rows, int cols, int bits, int group,
                              uint32_t *packed, float *scales, float *biases, lv_err *err);

/* One row back to float32: out[j] = scales_row[j/group] * q_j + biases_row[j/group].
 * packed_row: cols*bits/32 words (the caller has validated bits, group and cols). */
void mlx_affine_dequantize_row(const uint32_t *packed_row, const float *scales_row,
                               const float *biases_row, int cols, int bits, int group, float *out);

/* Code j of a packed row (LSB-first stream of `bits`-bit codes). */
static inline uint32_t mlx_affine_code(const uint32_t *packed_row, int bits, int j) {
    uint32_t pos = (uint32_t)j * (uint32_t)bits, word = pos >> 5, shift = pos & 31;
    uint64_t two = packed_row[word];
    if (shift + (uint32_t)bits > 32) two |= (uint64_t)packed_row[word + 1] << 32;
    return (uint32_t)(two >> shift) & ((1u << bits) - 1);
}

#endif
