/*
 * matmul.cu - y (n, rows) = x (n, cols) · Wᵀ + bias on the device, for
 * every weight layout of cuda_weights.cuh.
 *
 * Tensor cores (mma.sync m16n8k16, half or bfloat16 inputs, float32
 * accumulators) for CW_F16, CW_BF16, CW_Q4 and CW_Q8: x is rounded to the
 * weight's 16-bit type (half saturates at ±65504), a quantized weight is
 * dequantized in registers (codes turned into halves by bit operations, no
 * conversion instructions, then s·q + m as one half fma) and never stored
 * wider. CW_F32 (exact mode) is float32 FMA, no tensor cores.
 *
 * Batch invariance. An output y[i][r] must not depend on n or on the other
 * rows of x, so every path computes it with the same arithmetic:
 *   the k range is cut into chunks of CU_KC values (by the weight's padded
 *   width only); in a chunk, one accumulator starts at 0 and takes the
 *   mma of each 16-value step in increasing k; the chunks' sums are added
 *   to 0 in increasing chunk order; then the bias.
 * Inside one mma the hardware's order is fixed and each output sees only
 * its own row and column. The decode kernel (n <= 32) spreads a row tile's
 * chunks over the warps of a block and adds them in chunk order at the end;
 * the prefill kernel keeps a running sum per warp, chunk by chunk. Both are
 * the same sums in the same order, so a token decoded alone, beside 15
 * others or inside a 2000-token prefill gets the same bits (tests/cuda/).
 *
 * Which value an mma slot holds. A warp's 32 lanes are 8 groups g of 4
 * lanes t. In each 128-value piece of k, lane t owns the 32 values
 * [32t, 32t + 32) of its rows g and g + 8 (one 16-byte load of Q4 codes,
 * two of Q8, four of half), and step s (0..7) of the piece gives the mma
 * its values 32t + 4s .. 32t + 4s + 3 in the slots (2t, 2t+1, 2t+8, 2t+9).
 * x is read the same way (token g, the same four k), so each k meets its
 * own x; which slot a k takes changes nothing but the order of the
 * hardware's sum, which is the same for every n.
 */
#include "backend/cuda/cuda_weights.cuh"

#include <cuda_bf16.h>
#include <stdint.h>

#define CU_KC        512 /* values of k per chunk: a multiple of CU_KPAD */
#define CU_DEC_WARPS 16  /* warps of a decode block at most (one per chunk, or fewer) */
#define CU_PF_MT     2   /* prefill warp tile: 16·MT rows */
#define CU_PF_NT     4   /* ... by 8·NT tokens */

/* ---------------------------------------------------------------------------
 * mma and conversions
 */

template <bool BF16>
static __device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4],
                                                const uint32_t b[2]) {
    if (BF16)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* Two floats as the 16-bit pair an mma register holds (half saturating). */
template <bool BF16> static __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
    if (BF16) {
        __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *(uint32_t *)&v;
    }
    lo = fminf(fmaxf(lo, -65504.0f), 65504.0f);
    hi = fminf(fmaxf(hi, -65504.0f), 65504.0f);
    __half2 v = __floats2half2_rn(lo, hi);
    return *(uint32_t *)&v;
}

/* ---------------------------------------------------------------------------
 * The weight side: one lane's raw bytes of a 128-value piece for rows g and
 * g + 8 of a row tile, and the A fragment of step s from them.
 */

template <int KIND> struct wraw;

template <> struct wraw<CW_F16> { uint4 r[2][4]; };
template <> struct wraw<CW_BF16> { uint4 r[2][4]; };
template <> struct wraw<CW_Q4> {
    uint4 r[2];
    __half2 sm[2]; /* (s, s) and (m, m) of rows g and g + 8 are made in frag_a */
};
template <> struct wraw<CW_Q8> {
    uint4 r[2][2];
    __half2 sm[2][2];
};

template <int KIND>
static __device__ __forceinline__ void load_w(const cu_weight &w, int row0, int kk, int t,
                                              wraw<KIND> &o) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
        size_t row = (size_t)row0 + (h ? 8 : 0);
        int k = kk + 32 * t;
        if (KIND == CW_F16 || KIND == CW_BF16) {
            const uint4 *p = (const uint4 *)((const uint16_t *)w.data + row * w.ld + k);
            auto &r = ((wraw<CW_F16> &)o).r[h];
#pragma unroll
            for (int i = 0; i < 4; i++) r[i] = __ldg(p + i);
        } else if (KIND == CW_Q4) {
            auto &q = (wraw<CW_Q4> &)o;
            q.r[h] = __ldg((const uint4 *)((const unsigned char *)w.data + (row * w.ld + k) / 2));
            q.sm[h] = w.sm[(row * w.ld + k) / CU_Q4_GROUP];
        } else {
            auto &q = (wraw<CW_Q8> &)o;
            const uint4 *p = (const uint4 *)((const unsigned char *)w.data + row * w.ld + k);
            q.r[h][0] = __ldg(p);
            q.r[h][1] = __ldg(p + 1);
            size_t gi = (row * w.ld + k) / CU_Q8_GROUP;
            q.sm[h][0] = w.sm[gi];
            q.sm[h][1] = w.sm[gi + 1];
        }
    }
}

static __device__ __forceinline__ uint32_t word_of(const uint4 &u, int i) {
    return i == 0 ? u.x : i == 1 ? u.y : i == 2 ? u.z : u.w;
}

/* Codes q0 (bits 0..) and q1 (bits 16..) of a word whose other bits are
 * 0x6400: the halves 1024 + q, exactly; minus 1024 gives q, exactly. Then
 * s·q + m in one half fma (one rounding, as the layout's comment says). */
static __device__ __forceinline__ uint32_t dequant2(uint32_t biased, __half2 sm) {
    const __half2 k1024 = __halves2half2(__ushort_as_half(0x6400), __ushort_as_half(0x6400));
    __half2 q = __hsub2(*(__half2 *)&biased, k1024);
    __half2 v = __hfma2(q, __half2half2(__low2half(sm)), __half2half2(__high2half(sm)));
    return *(uint32_t *)&v;
}

/* a[0..3] for step s (slots: a0 row g, a1 row g+8 at (2t, 2t+1); a2, a3 at (2t+8, 2t+9)). */
template <int KIND>
static __device__ __forceinline__ void frag_a(const wraw<KIND> &o, int s, uint32_t a[4]) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
        uint32_t lo, hi;
        if (KIND == CW_F16 || KIND == CW_BF16) {
            const uint4 &u = ((const wraw<CW_F16> &)o).r[h][s / 2];
            lo = (s & 1) ? u.z : u.x;
            hi = (s & 1) ? u.w : u.y;
        } else if (KIND == CW_Q4) {
            const auto &q = (const wraw<CW_Q4> &)o;
            uint32_t bits = word_of(q.r[h], s / 2) >> ((s & 1) * 16); /* codes 4s..4s+3 */
            /* nibbles n0 n1 n2 n3 -> (n0, n1) and (n2, n3) into the low bits of each half */
            uint32_t p01 = (bits & 0xFu) | (bits & 0xF0u) << 12;
            uint32_t p23 = (bits >> 8 & 0xFu) | (bits >> 12 & 0xFu) << 16;
            lo = dequant2(p01 | 0x64006400u, q.sm[h]);
            hi = dequant2(p23 | 0x64006400u, q.sm[h]);
        } else {
            const auto &q = (const wraw<CW_Q8> &)o;
            uint32_t bits = word_of(q.r[h][s / 4], s % 4); /* codes 4s..4s+3, a byte each */
            lo = dequant2(__byte_perm(bits, 0x64646464u, 0x4140), q.sm[h][s / 4]);
            hi = dequant2(__byte_perm(bits, 0x64646464u, 0x4342), q.sm[h][s / 4]);
        }
        a[h] = lo;     /* a0 / a1 */
        a[2 + h] = hi; /* a2 / a3 */
    }
}

/* ---------------------------------------------------------------------------
 * The x side. Decode reads float32 x and rounds in registers; prefill reads
 * a 16-bit copy made once per call (to_x16), zero past cols. Both round
 * each value the same way (pack2).
 */

/* b[0..1] for step s from float32 x: token row xr (NULL past n), values k..k+3. */
template <bool BF16>
static __device__ __forceinline__ void frag_b_f32(const float *xr, int k, int K, bool vec,
                                                  uint32_t b[2]) {
    float v[4] = {0.f, 0.f, 0.f, 0.f};
    if (xr) {
        if (vec && k + 3 < K) {
            float4 f = __ldg((const float4 *)(xr + k));
            v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
        } else {
#pragma unroll
            for (int i = 0; i < 4; i++)
                if (k + i < K) v[i] = xr[k + i];
        }
    }
    b[0] = pack2<BF16>(v[0], v[1]);
    b[1] = pack2<BF16>(v[2], v[3]);
}

template <bool BF16>
static __global__ void to_x16(uint32_t *xh, const float *x, int n, int K, int ld) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; /* pair index */
    size_t pairs = (size_t)n * ld / 2;
    if (i >= pairs) return;
    size_t row = i / (ld / 2);
    int k = (int)(i % (ld / 2)) * 2;
    const float *xr = x + row * K;
    float lo = k < K ? xr[k] : 0.f, hi = k + 1 < K ? xr[k + 1] : 0.f;
    xh[i] = pack2<BF16>(lo, hi);
}

/* ---------------------------------------------------------------------------
 * Decode: n <= 8·NT tokens (NT = 1, 2, 4). Block = one 16-row tile and up to CU_DEC_WARPS
 * warps that take its chunks in turn (as many warps as chunks when they fit,
 * so no warp waits on another's second chunk); each chunk's sums are parked
 * in shared memory and the block adds them in chunk order. A decode is a
 * stream of the weight: a warp issues the loads of DEC_DEPTH<KIND> pieces of
 * 128 values before it uses the first, so each SM keeps tens of KB in flight.
 */

template <int KIND> struct dec_depth { static constexpr int v = 4; /* Q4: 40 B a lane a piece */ };
template <> struct dec_depth<CW_Q8> { static constexpr int v = 2; /* 80 B */ };
template <> struct dec_depth<CW_F16> { static constexpr int v = 2; /* 128 B */ };
template <> struct dec_depth<CW_BF16> { static constexpr int v = 2; };

template <int KIND, int NT>
static __global__ void __launch_bounds__(CU_DEC_WARPS * 32)
    mm_decode(cu_weight w, const float *__restrict__ x, const float *__restrict__ bias,
              float *__restrict__ y, int n, int K, int n_chunks, bool vec) {
    constexpr bool BF16 = KIND == CW_BF16;
    constexpr int DEPTH = dec_depth<KIND>::v;
    extern __shared__ float part[]; /* [n_chunks][NT][32 lanes][4] */
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    int n_warps = blockDim.x >> 5;
    int row0 = blockIdx.x * 16;
    const float *xr[NT];
#pragma unroll
    for (int j = 0; j < NT; j++) xr[j] = 8 * j + g < n ? x + (size_t)(8 * j + g) * K : nullptr;

    for (int c = warp; c < n_chunks; c += n_warps) {
        float acc[NT][4];
#pragma unroll
        for (int j = 0; j < NT; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
        int k_end = min((c + 1) * CU_KC, w.ld);
        for (int kk0 = c * CU_KC; kk0 < k_end; kk0 += DEPTH * CU_KPAD) {
            wraw<KIND> raw[DEPTH];
#pragma unroll
            for (int p = 0; p < DEPTH; p++)
                if (kk0 + p * CU_KPAD < k_end)
                    load_w<KIND>(w, row0 + g, kk0 + p * CU_KPAD, t, raw[p]);
#pragma unroll
            for (int p = 0; p < DEPTH; p++) {
                int kk = kk0 + p * CU_KPAD;
                if (kk >= k_end) break;
#pragma unroll
                for (int s = 0; s < 8; s++) {
                    uint32_t a[4];
                    frag_a<KIND>(raw[p], s, a);
#pragma unroll
                    for (int j = 0; j < NT; j++) {
                        uint32_t b[2];
                        frag_b_f32<BF16>(xr[j], kk + 32 * t + 4 * s, K, vec, b);
                        mma16816<BF16>(acc[j], a, b);
                    }
                }
            }
        }
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                part[(((size_t)c * NT + j) * 32 + lane) * 4 + e] = acc[j][e];
    }
    __syncthreads();
    int rows = w.rows;
    for (int idx = threadIdx.x; idx < NT * 128; idx += blockDim.x) {
        float sum = 0.f;
        for (int c = 0; c < n_chunks; c++) sum += part[(size_t)c * NT * 128 + idx];
        int j = idx / 128, ln = (idx / 4) % 32, e = idx % 4;
        int row = row0 + (ln >> 2) + (e >= 2 ? 8 : 0);
        int tok = 8 * j + 2 * (ln & 3) + (e & 1);
        if (row < rows && tok < n) y[(size_t)tok * rows + row] = sum + (bias ? bias[row] : 0.f);
    }
}

/* ---------------------------------------------------------------------------
 * Prefill: any n. A warp owns 16·MT rows by 8·NT tokens and keeps a running
 * sum over the chunks; a block is 2 x 2 warps (32·MT rows by 16·NT tokens).
 */

template <int KIND>
static __global__ void __launch_bounds__(128)
    mm_prefill(cu_weight w, const uint32_t *__restrict__ xh, const float *__restrict__ bias,
               float *__restrict__ y, int n) {
    constexpr bool BF16 = KIND == CW_BF16;
    constexpr int MT = CU_PF_MT, NT = CU_PF_NT;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    int row0 = (blockIdx.x * 2 + (warp & 1)) * 16 * MT;
    int tok0 = (blockIdx.y * 2 + (warp >> 1)) * 8 * NT;
    if (row0 >= w.rows_pad || tok0 >= n) return;
    bool live[MT];
#pragma unroll
    for (int m = 0; m < MT; m++) live[m] = row0 + 16 * m < w.rows_pad;
    const uint32_t *xr[NT]; /* 16-bit pairs, ld/2 a row */
#pragma unroll
    for (int j = 0; j < NT; j++)
        xr[j] = tok0 + 8 * j + g < n ? xh + (size_t)(tok0 + 8 * j + g) * (w.ld / 2) : nullptr;

    float total[MT][NT][4];
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) total[m][j][e] = 0.f;

    for (int c0 = 0; c0 < w.ld; c0 += CU_KC) {
        float acc[MT][NT][4];
#pragma unroll
        for (int m = 0; m < MT; m++)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) acc[m][j][e] = 0.f;
        int k_end = min(c0 + CU_KC, w.ld);
        for (int kk = c0; kk < k_end; kk += CU_KPAD) {
            wraw<KIND> raw[MT];
#pragma unroll
            for (int m = 0; m < MT; m++)
                if (live[m]) load_w<KIND>(w, row0 + 16 * m + g, kk, t, raw[m]);
            uint4 xv[NT][4]; /* lane's 32 values of each token: 8 steps x 4 */
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int i = 0; i < 4; i++)
                    xv[j][i] = xr[j] ? __ldg((const uint4 *)(xr[j] + (kk + 32 * t) / 2) + i)
                                     : make_uint4(0, 0, 0, 0);
#pragma unroll
            for (int s = 0; s < 8; s++) {
                uint32_t a[MT][4];
#pragma unroll
                for (int m = 0; m < MT; m++) frag_a<KIND>(raw[m], s, a[m]);
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    const uint4 &u = xv[j][s / 2];
                    uint32_t b[2] = {(s & 1) ? u.z : u.x, (s & 1) ? u.w : u.y};
#pragma unroll
                    for (int m = 0; m < MT; m++)
                        if (live[m]) mma16816<BF16>(acc[m][j], a[m], b);
                }
            }
        }
#pragma unroll
        for (int m = 0; m < MT; m++)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) total[m][j][e] += acc[m][j][e];
    }
    int rows = w.rows;
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int row = row0 + 16 * m + g + (e >= 2 ? 8 : 0);
                int tok = tok0 + 8 * j + 2 * t + (e & 1);
                if (row < rows && tok < n)
                    y[(size_t)tok * rows + row] = total[m][j][e] + (bias ? bias[row] : 0.f);
            }
}

/* ---------------------------------------------------------------------------
 * Exact (CW_F32): a warp per (row, token); lanes take k = lane, lane + 32,
 * ... in order, then a fixed butterfly. The same for every n.
 */

static __global__ void mm_exact(const float *__restrict__ w, int ld, int rows,
                                const float *__restrict__ x, const float *__restrict__ bias,
                                float *__restrict__ y, int n, int K) {
    int lane = threadIdx.x & 31;
    size_t item = blockIdx.x * (size_t)(blockDim.x / 32) + (threadIdx.x >> 5);
    if (item >= (size_t)rows * n) return;
    int row = (int)(item % rows), tok = (int)(item / rows);
    const float *wr = w + (size_t)row * ld, *xr = x + (size_t)tok * K;
    float s = 0.f;
    for (int k = lane; k < K; k += 32) s = fmaf(wr[k], xr[k], s);
#pragma unroll
    for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) y[(size_t)tok * rows + row] = s + (bias ? bias[row] : 0.f);
}

/* ---------------------------------------------------------------------------
 * Launchers
 */

template <int KIND, int NT>
static void launch_decode(cu_ctx *c, dim3 grid, dim3 block, size_t smem, float *y, const float *x,
                          const cu_weight *w, const float *bias, int n, int n_chunks, bool vec) {
    if (smem > 48 * 1024 &&
        !cu_record(c,
                   cudaFuncSetAttribute(mm_decode<KIND, NT>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                   "matmul (decode): shared memory"))
        return;
    mm_decode<KIND, NT>
        <<<grid, block, smem, c->stream>>>(*w, x, bias, y, n, w->cols, n_chunks, vec);
}

template <int KIND>
static void launch_tc(cu_ctx *c, float *y, const float *x, const cu_weight *w, const float *bias,
                      int n) {
    int n_chunks = (w->ld + CU_KC - 1) / CU_KC;
    if (n <= 32) { /* decode and decode batches: the weight streamed once */
        bool vec = w->cols % 4 == 0 && ((uintptr_t)x & 15) == 0;
        int nt = n <= 8 ? 1 : n <= 16 ? 2 : 4;
        size_t smem = (size_t)n_chunks * nt * 128 * sizeof(float);
        /* one warp per chunk, or each warp the same number of chunks */
        int per = (n_chunks + CU_DEC_WARPS - 1) / CU_DEC_WARPS;
        dim3 grid(w->rows_pad / 16), block((n_chunks + per - 1) / per * 32);
        switch (nt) {
            case 1:
                launch_decode<KIND, 1>(c, grid, block, smem, y, x, w, bias, n, n_chunks, vec);
                break;
            case 2:
                launch_decode<KIND, 2>(c, grid, block, smem, y, x, w, bias, n, n_chunks, vec);
                break;
            default:
                launch_decode<KIND, 4>(c, grid, block, smem, y, x, w, bias, n, n_chunks, vec);
        }
        cu_check(c, "matmul (decode)");
        return;
    }
    uint32_t *xh = (uint32_t *)cu_scratch(c, (size_t)n * w->ld * 2);
    if (!xh) return;
    size_t pairs = (size_t)n * w->ld / 2;
    to_x16<KIND == CW_BF16>
        <<<(unsigned)((pairs + 255) / 256), 256, 0, c->stream>>>(xh, x, n, w->cols, w->ld);
    dim3 grid((w->rows_pad + 32 * CU_PF_MT - 1) / (32 * CU_PF_MT),
              (n + 16 * CU_PF_NT - 1) / (16 * CU_PF_NT));
    mm_prefill<KIND><<<grid, 128, 0, c->stream>>>(*w, xh, bias, y, n);
    cu_check(c, "matmul (prefill)");
}

void cu_matmul(cu_ctx *c, float *y, const float *x, const cu_weight *w, const float *bias, int n) {
    if (n <= 0) return;
    switch (w->kind) {
        case CW_F16:
            launch_tc<CW_F16>(c, y, x, w, bias, n);
            return;
        case CW_BF16:
            launch_tc<CW_BF16>(c, y, x, w, bias, n);
            return;
        case CW_Q4:
            launch_tc<CW_Q4>(c, y, x, w, bias, n);
            return;
        case CW_Q8:
            launch_tc<CW_Q8>(c, y, x, w, bias, n);
            return;
        default: {
            size_t items = (size_t)w->rows * n;
            mm_exact<<<(unsigned)((items + 7) / 8), 256, 0, c->stream>>>(
                (const float *)w->data, w->ld, w->rows, x, bias, y, n, w->cols);
            cu_check(c, "matmul (exact)");
        }
    }
}

/* ---------------------------------------------------------------------------
 * embed_rows: out[i] = row ids[i] of the table, each value as
 * cu_weight_value defines it. An id outside the table gives a zero row
 * (the model checks ids before; this only keeps a bad one in bounds).
 */

static __global__ void embed(float *out, cu_weight w, const int32_t *ids, int n) {
    int i = blockIdx.y;
    int id = ids[i];
    float *o = out + (size_t)i * w.cols;
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < w.cols; k += gridDim.x * blockDim.x)
        o[k] = id >= 0 && id < w.rows ? cu_weight_value(w, id, k) : 0.f;
}

void cu_embed_rows(cu_ctx *c, float *out, const cu_weight *w, const int32_t *ids, int n) {
    if (n <= 0) return;
    dim3 grid((w->cols + 255) / 256, n);
    embed<<<grid, 256, 0, c->stream>>>(out, *w, ids, n);
    cu_check(c, "embed_rows");
}
