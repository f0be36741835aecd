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
#include <stdint.h>

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

/*
 * ggml block types (GGUF tensors; shared/spec/formats.md §4.3, §5): a row
 * is a run of blocks of `elems` values stored in `bytes`. They are never
 * spelled in a safetensors header (dtype_from_name does not know them);
 * the GGUF loader puts tensors of these types into an st_set.
 * X-macro: enum name, name, ggml type id, elements per block, bytes per block.
 */
#define LV_DTYPE_BLOCK_MAP(X)                                                                      \
    X(LV_DTYPE_Q4_0, "Q4_0", 2, 32, 18)                                                            \
    X(LV_DTYPE_Q4_1, "Q4_1", 3, 32, 20)                                                            \
    X(LV_DTYPE_Q8_0, "Q8_0", 8, 32, 34)                                                            \
    X(LV_DTYPE_Q4_K, "Q4_K", 12, 256, 144)                                                         \
    X(LV_DTYPE_Q5_K, "Q5_K", 13, 256, 176)                                                         \
    X(LV_DTYPE_Q6_K, "Q6_K", 14, 256, 210)

typedef enum {
#define LV_DTYPE_ENUM(name, str, size) name,
    LV_DTYPE_MAP(LV_DTYPE_ENUM)
#undef LV_DTYPE_ENUM
#define LV_DTYPE_BLOCK_ENUM(name, str, ggml, elems, bytes) name,
        LV_DTYPE_BLOCK_MAP(LV_DTYPE_BLOCK_ENUM)
#undef LV_DTYPE_BLOCK_ENUM
} lv_dtype;

/* Number of safetensors dtypes (the enum values 0 .. LV_DTYPE_COUNT-1);
 * the block types follow, up to LV_DTYPE_ALL_COUNT-1. */
#define LV_DTYPE_ONE(name, str, size) +1
enum { LV_DTYPE_COUNT = 0 LV_DTYPE_MAP(LV_DTYPE_ONE) };
#undef LV_DTYPE_ONE
#define LV_DTYPE_BLOCK_ONE(name, str, ggml, elems, bytes) +1
enum { LV_DTYPE_ALL_COUNT = LV_DTYPE_COUNT LV_DTYPE_BLOCK_MAP(LV_DTYPE_BLOCK_ONE) };
#undef LV_DTYPE_BLOCK_ONE

/* Block types: true, with elements and bytes per block (a plain type is a
 * block of 1 element of dtype_size bytes: false is returned and both set so). */
bool dtype_block(lv_dtype dt, int *elems, int *bytes);

/* The ggml type id of a block type (2 for Q4_0); -1 for others. */
int dtype_ggml_id(lv_dtype dt);

/* Bytes of a row of n elements (n a multiple of the block size); 0 if not. */
size_t dtype_row_bytes(lv_dtype dt, int64_t n);

/* The safetensors header string of dt ("F16"), or a block type's name ("Q4_K");
 * "?" for a value outside the enum. */
const char *dtype_name(lv_dtype dt);

/* Parses a safetensors dtype string (exact, case-sensitive, as the format
 * requires). Returns false, leaving *out untouched, for an unknown string. */
bool dtype_from_name(const char *name, lv_dtype *out);

/* Bytes per element; 0 for a block type or a value outside the enum. */
size_t dtype_size(lv_dtype dt);

#endif
