/*
 * half.c - f16 / bf16 <-> float32 (half.h).
 *
 * IEEE binary16: 1 sign, 5 exponent (bias 15), 10 fraction bits; the
 * smallest normal is 2^-14, the subnormals are k * 2^-24 (k < 1024), the
 * largest finite value 65504. bfloat16 is the top half of a float32: same
 * exponent, 7 fraction bits.
 */
#include "base/half.h"

#include <string.h>

static float bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/*
 * Every half is a float32, so this is a re-encoding:
 *   exponent 0, fraction 0   -> signed zero
 *   exponent 0, fraction f   -> subnormal f * 2^-24, normalised for float32
 *   exponent 31, fraction 0  -> signed infinity
 *   exponent 31, fraction f  -> NaN with the payload moved up and the quiet bit
 *                               set (what x86 F16C vcvtph2ps and ARM fcvt give)
 */
float lv_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t frac = h & 0x3ff;
    if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | (frac ? 0x400000u | frac << 13 : 0));
    if (exp != 0) return bits_to_f32(sign | (exp + 127 - 15) << 23 | frac << 13);
    if (frac == 0) return bits_to_f32(sign);
    /* Subnormal: shift the leading 1 up to the implicit-bit position. */
    uint32_t e = 127 - 15 + 1;
    while (!(frac & 0x400)) {
        frac <<= 1;
        e--;
    }
    return bits_to_f32(sign | e << 23 | (frac & 0x3ff) << 13);
}

float lv_bf16_to_f32(uint16_t h) {
    return bits_to_f32((uint32_t)h << 16);
}

/*
 * By magnitude (float32 bits without the sign):
 *   NaN                    -> quiet NaN, the top 9 payload bits kept
 *   >= 65520 (0x477ff000)  -> infinity (65520 is the tie above 65504: to even)
 *   < 2^-14 (0x38800000)   -> subnormal k * 2^-24, k = m * 2^(e-126-23)
 *                             rounded; below 2^-25 that is zero
 *   else                   -> rebias the exponent (127 -> 15) and drop 13
 *                             fraction bits; a carry out of the fraction
 *                             steps the exponent, which is the right result
 */
uint16_t lv_f32_to_f16(float f) {
    uint32_t x = f32_to_bits(f);
    uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x1ff));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);
    if (ax < 0x38800000u) {
        if (ax < 0x33000000u) return (uint16_t)sign;
        uint32_t m = (ax & 0x7fffffu) | 0x800000u, shift = 126 - (ax >> 23);
        uint32_t k = m >> shift, rem = m & ((1u << shift) - 1), tie = 1u << (shift - 1);
        if (rem > tie || (rem == tie && (k & 1))) k++;
        return (uint16_t)(sign | k);
    }
    uint32_t r = ax - 0x38000000u;
    uint32_t h = r >> 13, rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

/* Keep the top 16 bits, rounding on the low 16 (ties to even); a NaN keeps
 * its top payload with the quiet bit set, so it cannot round to infinity. */
uint16_t lv_f32_to_bf16(float f) {
    uint32_t x = f32_to_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}
