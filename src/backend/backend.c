/*
 * backend.c - what every backend shares: finding a backend by name and the
 * exact half / bfloat16 -> float32 conversions (the reference for the
 * vectorised conversions inside the backends).
 */
#include "backend/backend.h"

#include <string.h>

static const struct be_ops *const BACKENDS[] = {&be_cpu_ops, &be_ref_ops};

const struct be_ops *be_find(const char *name) {
    for (size_t i = 0; i < LV_ARRAY_LEN(BACKENDS); i++)
        if (name && strcmp(BACKENDS[i]->name, name) == 0) return BACKENDS[i];
    return NULL;
}

static float bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/*
 * IEEE binary16: 1 sign, 5 exponent (bias 15), 10 fraction bits. Every half
 * is exactly representable in float32, so this is a re-encoding:
 *   exponent 0, fraction 0   -> signed zero
 *   exponent 0, fraction f   -> subnormal f * 2^-24, normalised for float32
 *   exponent 31, fraction 0  -> signed infinity
 *   exponent 31, fraction f  -> NaN with the payload moved up and the quiet bit
 *                               set (what x86 F16C vcvtph2ps and ARM fcvt give)
 */
float be_f16_to_f32(uint16_t h) {
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

/* bfloat16 is the top half of a float32. */
float be_bf16_to_f32(uint16_t h) {
    return bits_to_f32((uint32_t)h << 16);
}
