/*
 * half.h - the one home of the 16-bit float conversions: IEEE binary16
 * ("f16", "half") and bfloat16 ("bf16") to and from float32.
 *
 * Widening is exact (every f16 and bf16 is a float32). Narrowing rounds to
 * nearest, ties to even, as numpy's and torch's casts and the F16C/ARM
 * instructions do; overflow gives infinity, NaN stays NaN (quiet, the top of
 * its payload kept), the sign always survives. Vectorised conversions inside
 * a backend are tested against these.
 */
#ifndef LV_BASE_HALF_H
#define LV_BASE_HALF_H

#include <stdint.h>

/* f16 / bf16 -> float32, exact (subnormals, inf, NaN). */
float lv_f16_to_f32(uint16_t h);
float lv_bf16_to_f32(uint16_t h);

/* float32 -> f16 / bf16, rounding to nearest even. */
uint16_t lv_f32_to_f16(float f);
uint16_t lv_f32_to_bf16(float f);

#endif
