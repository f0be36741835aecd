/*
 * dtype.h - the element types a safetensors file can declare.
 *
 * The names are the dtype strings of the safetensors header ("F16", "BF16",
 * ...; huggingface/safetensors safetensors/src/tensor.rs `enum Dtype`), and
 * the sizes are `Dtype::size`. Newer safetensors versions add further FP8/FP4
 * variants; they are not used by any LLaVA checkpoint and are refused as
 * unknown dtypes (see shared/spec/formats.md §1.2).
 */
#ifndef LV_DTYPE_H
#define LV_DTYPE_H

#include <stdbool.h>
#include <stddef.h>

/* X-macro: enum name, header string, bytes per element. */
#define LV_DTYPE_MAP(X)                                                                            \
    X(LV_DTYPE_BOOL, "BOOL", 1)                                                                    \
    X(LV_DTYPE_U8, "U8", 1)                                                                        \
    X(LV_DTYPE_I8, "I8", 1)                                                                        \
    X(LV_DTYPE_F8_E5M2, "F8_E5M2", 1)                                                              \
    X(LV_DTYPE_F8_E4M3, "F8_E4M3", 1)                                                              \
    X(LV_DTYPE_I16, "I16", 2)                                                                      \
    X(LV_DTYPE_U16, "U16", 2)                                                                      \
    X(LV_DTYPE_F16, "F16", 2)                                                                      \
    X(LV_DTYPE_BF16, "BF16", 2)                                                                    \
    X(LV_DTYPE_I32, "I32", 4)                                                                      \
    X(LV_DTYPE_U32, "U32", 4)                                                                      \
    X(LV_DTYPE_F32, "F32", 4)                                                                      \
    X(LV_DTYPE_F64, "F64", 8)                                                                      \
    X(LV_DTYPE_I64, "I64", 8)                                                                      \
    X(LV_DTYPE_U64, "U64", 8)

typedef enum {
#define LV_DTYPE_ENUM(name, str, size) name,
    LV_DTYPE_MAP(LV_DTYPE_ENUM)
#undef LV_DTYPE_ENUM
} lv_dtype;

/* Number of dtypes (the enum values are 0 .. LV_DTYPE_COUNT-1). */
#define LV_DTYPE_ONE(name, str, size) +1
enum { LV_DTYPE_COUNT = 0 LV_DTYPE_MAP(LV_DTYPE_ONE) };
#undef LV_DTYPE_ONE

/* The safetensors header string of dt ("F16"); "?" for a value outside the enum. */
const char *dtype_name(lv_dtype dt);

/* Parses a safetensors dtype string (exact, case-sensitive, as the format
 * requires). Returns false, leaving *out untouched, for an unknown string. */
bool dtype_from_name(const char *name, lv_dtype *out);

/* Bytes per element; 0 for a value outside the enum. */
size_t dtype_size(lv_dtype dt);

#endif
