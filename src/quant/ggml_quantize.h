/*
 * ggml_quantize.h - float32 rows to ggml's stored types, for writing GGUF
 * files llama.cpp loads (shared/spec/formats.md §5): F16, Q8_0, Q4_0 (the
 * reference quantizers of §5.7), Q4_K (llama.cpp's reference: per
 * 32-element sub-block a weighted least-squares scale/min search, then
 * 6-bit sub-scales under two f16 super-scales) and Q6_K (per 16-element
 * sub-block a signed scale chosen by a weighted search over nearby grids,
 * then int8 sub-scales under one f16 super-scale). And back, for tests.
 *
 * A row of n floats becomes n / block blocks (n must be a multiple of the
 * block: 1 for F16/F32, 32 for Q8_0/Q4_0, 256 for Q4_K).
 */
#ifndef LV_QUANT_GGML_QUANTIZE_H
#define LV_QUANT_GGML_QUANTIZE_H

#include "io/gguf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Quantizes n floats of x into out (ggml_row_size(type, n) bytes). type:
 * GGML_F32, GGML_F16, GGML_Q8_0, GGML_Q4_0, GGML_Q4_K, GGML_Q6_K. Returns false for
 * another type or an n that is not whole blocks (out untouched). */
bool ggml_quantize_row(uint32_t type, const float *x, int64_t n, void *out);

/* Bytes of a row of n elements of type; 0 if n is not whole blocks or the
 * type is unknown. */
size_t ggml_row_size(uint32_t type, int64_t n);

/* Decodes a row (the types above plus Q4_1) back to floats. */
bool ggml_dequantize_row(uint32_t type, const void *in, int64_t n, float *y);

#endif
