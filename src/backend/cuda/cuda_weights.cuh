/*
 * cuda_weights.cuh - how a weight sits on the device (cu_weight, made by
 * weights.cu), and the one definition of an element's value in each layout.
 *
 * Every layout is row-major with the row stride padded to a multiple of 128
 * values (CU_KPAD) and the rows to a multiple of 16 (CU_RPAD), the padding
 * zero, so the matmul's tiles never test bounds on the weight side:
 *   CW_F32, CW_F16, CW_BF16  plain values, ld = padded cols.
 *   CW_Q4   codes q in 0..15, two a byte (element 2i in the low nibble of
 *           byte i, as MLX stores them), ld/2 bytes a row; one (s, m) half2
 *           per 32 values: w = s·q + m.
 *   CW_Q8   codes q in 0..255, one a byte; one (s, m) half2 per 16 values.
 * On the tensor-core path s·q + m is one half fma (matmul.cu dequant2):
 * the only rounding of a weight value there. cu_weight_value (embed_rows)
 * computes it in float32, unrounded.
 */
#ifndef LV_CUDA_WEIGHTS_CUH
#define LV_CUDA_WEIGHTS_CUH

#include "backend/cuda/cuda_internal.h"

#include <cuda_bf16.h>

#define CU_KPAD 128
#define CU_RPAD 16

static inline int cu_round_up(int v, int to) {
    return (v + to - 1) / to * to;
}

/* Values per (s, m) group of a quantized kind. */
#define CU_Q4_GROUP 32
#define CU_Q8_GROUP 16

static __device__ __forceinline__ float cu_weight_value(const cu_weight &w, int row, int k) {
    size_t i = (size_t)row * w.ld + k;
    switch (w.kind) {
        case CW_F32:
            return ((const float *)w.data)[i];
        case CW_F16:
            return __half2float(((const __half *)w.data)[i]);
        case CW_BF16:
            return __bfloat162float(((const __nv_bfloat16 *)w.data)[i]);
        case CW_Q4: {
            unsigned char b = ((const unsigned char *)w.data)[i / 2];
            int q = (k & 1) ? b >> 4 : b & 15;
            float2 sm = __half22float2(w.sm[i / CU_Q4_GROUP]);
            return fmaf(sm.x, (float)q, sm.y);
        }
        default: { /* CW_Q8 */
            int q = ((const unsigned char *)w.data)[i];
            float2 sm = __half22float2(w.sm[i / CU_Q8_GROUP]);
            return fmaf(sm.x, (float)q, sm.y);
        }
    }
}

#endif
