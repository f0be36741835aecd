/*
 * quant.h - what the quantized weight layouts mean (be_dtype BE_MLX and the
 * ggml blocks BE_Q8_0 ... BE_Q6_K), shared by every backend.
 *
 * be_dequant_row is the single definition of each format: the reference
 * backend's matmul and embed_rows call it element row by row, and the CPU
 * backend dequantises spans of rows into per-thread scratch with it before
 * its float32 kernels run. A faster kernel elsewhere must agree with it
 * (tests/test_quant.c, tests/test_backend.c).
 *
 * Sources: shared/spec/formats.md §3.5-3.7 (MLX affine), §5 (ggml blocks);
 * Q5_K as ggml/src/ggml-quants.c `dequantize_row_q5_K`.
 */
#ifndef LV_BACKEND_QUANT_H
#define LV_BACKEND_QUANT_H

#include "backend/backend.h"

#include <stdbool.h>
#include <stddef.h>

/* "F32", "F16", "BF16", "MLX", "Q8_0", ...; "?" outside the enum. */
const char *be_dtype_name(be_dtype dt);

/* True for BE_MLX and the ggml block types. */
bool be_dtype_quantized(be_dtype dt);

/* Element i of a plain (F32/F16/BF16) array, maybe unaligned, as float32 (exact). */
float be_plain_at(be_dtype dt, const void *base, size_t i);

/* Values per block of a ggml block type (32 or 256), with its bytes; 1 value
 * of 4 or 2 bytes for a plain type; 0 for BE_MLX (its group is per weight). */
int be_block_elems(be_dtype dt);
int be_block_bytes(be_dtype dt);

/* Bytes of one stored row of cols values (q->bits for BE_MLX; q may be NULL
 * otherwise); 0 when cols does not fit the format (not whole blocks). */
size_t be_row_bytes(be_dtype dt, int cols, const be_quant *q);

/* Checks a weight description and fills *w (data borrowed, owned NULL): the
 * common part of every backend's weight_init. LV_ERR_ARG for bad sizes or a
 * NULL pointer, LV_ERR_UNSUPPORTED for an unknown dtype or MLX bits/group. */
lv_status be_weight_describe(be_weight *w, be_dtype dtype, int rows, int cols, const void *host,
                             const be_quant *q, lv_err *err);

/* The 6-bit scale and min of sub-block s (0..7) of a Q4_K/Q5_K block from its
 * 12 packed scale bytes (ggml's get_scale_min_k4). Shared by every backend's
 * repacking of Q4_K. */
void be_k4_scale_min(int s, const unsigned char *scales, int *sc, int *m);

/* Row `row` of w as float32 into out (w->cols floats). Any dtype. */
void be_dequant_row(const be_weight *w, int row, float *out);

/* Values [c0, c0 + n) of row `row` into out (n floats). c0 and n must be
 * multiples of be_span_align(w) (n may also end the row). */
void be_dequant_span(const be_weight *w, int row, int c0, int n, float *out);

/* The granularity of be_dequant_span: the block or group size (1 for plain types). */
int be_span_align(const be_weight *w);

#endif
