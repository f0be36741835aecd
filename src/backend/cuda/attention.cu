/*
 * attention.cu - softmax(q·kᵀ/√head_dim [+ causal mask])·v over a sequence's
 * f16 or f32 KV cache, batch invariant bit for bit, in two arithmetics:
 *   CUDA cores    float32 throughout (f16 caches widened exactly): exact mode
 *                 (be.exact, the model tests against transformers), and
 *                 every head_dim but 64 and 128;
 *   tensor cores  fast mode at head_dim 64 and 128: q rounded to f16, K and
 *                 V read as f16 (an f32 cache, as CLIP gives, is first
 *                 rounded to a scratch copy, saturating at ±65504), scores
 *                 and P·V as mma.sync.m16n8k16 f16 × f16 -> f32, softmax
 *                 statistics in f32, P rounded to f16 for the P·V mma.
 * Which one runs depends only on (exact, head_dim), never on n_q, so a row
 * meets the same arithmetic in every call.
 *
 * Rows. A row is one (query i, head h). The rows that read kv head g are
 * numbered query-major, r = i·group + (h − g·group), and cut into tiles of
 * consecutive rows: a decode step's tile holds the GQA group of one query
 * (the 4 heads of Mistral that read one kv head), so each key and value is
 * read once for all of them; a prefill tile holds a few queries' groups (or,
 * without GQA, a few queries of one head: CLIP). Tensor cores: a warp owns
 * 16 rows (one mma tile, padded with zero rows), a block 4 warps.
 *
 * Segments. A row's keys are cut at fixed absolute positions into segments
 * of SEG = 64 keys: [0, 64), [64, 128), ... A block stages one segment's
 * keys and values in shared memory and computes, for each row of its tile
 * that sees any of them, the segment's partial softmax:
 *   m = max of the visible scores, p_j = exp(s_j − m), l = Σ p_j,
 *   o[d] = Σ p_j·v_j[d] (visible keys only).
 * Segments are then merged in increasing order, starting from segment 0
 * (which every row sees): M' = max(M, m), a = exp(M − M'), b = exp(m − M'),
 * L = L·a + l·b, O = O·a + o·b; the output is O / L.
 *
 * Two paths share that arithmetic, in each of the two arithmetics:
 *   sequential  one block per tile walks its segments in order and merges
 *               in registers (prefill, CLIP: there are many tiles);
 *   split       one block per (tile, segment) writes its partial to a
 *               scratch buffer, and a merge kernel merges each row's
 *               partials in order (decode: few tiles, many segments, so
 *               the work spreads over the whole GPU, flash-decoding).
 * The choice depends on n_q (how many blocks the sequential grid has) and
 * changes no bit, as follows.
 *
 * Batch invariance, CUDA cores. Every number a row produces is defined per
 * row, with an order fixed by absolute key and dimension positions, never
 * by the tile, the block or the path:
 *   score s_j   one fma chain over d = 0, 1, ..., head_dim−1, then ·scale;
 *   m           a max (exact in any order);
 *   l           slots j and j+32 of the segment added, then a fixed
 *               butterfly over the 32 lanes (every lane gets the same bits);
 *   o[d]        one fma chain over the segment's visible keys in order;
 *   merge       merge_factors / merge_value below, segment 0 first.
 * Masked keys are skipped, not multiplied by zero.
 *
 * Batch invariance, tensor cores. The same scheme, with the per-segment
 * work in __device__ functions both kernels call (fa_softmax, fa_pv), the
 * merge in fa_merge_factors / fa_merge_value, both merges starting from
 * (M, L, O) = (-inf, 0, 0) and taking segment 0 first:
 *   score       per 8-key tile one f32 accumulator from 0, the mma of each
 *               16-dim step in increasing order; an mma output depends only
 *               on its own q row and key, so the other rows of the tile
 *               (other queries, other heads, zero padding) change nothing;
 *               then s = S·(log2(e)/√head_dim): the softmax is in base 2;
 *   m           the max of the row's visible s; masked keys get s = -inf
 *               and p = 0 exactly, so the row's max, l and P are the same
 *               whether a masked key is a real cached key (prefill) or a
 *               zero-filled slot past n_kv (decode);
 *   l           each lane adds its 16 values of the row in a fixed order,
 *               then lanes t^1 and t^2 (every lane of the row gets the same
 *               bits, whether the row sits at slot g or g + 8 of the tile);
 *   o[d]        per 8-dim tile one accumulator from 0, the mma of the
 *               segment's 64 keys in increasing 16-key steps (the f16 P of
 *               masked keys is 0);
 *   merge       sequential: in registers after each segment; split: the
 *               partials (m, l, o) stored as f32 (exactly) and merged by
 *               fa_merge_kernel with the same functions in the same order.
 * 2^x is the hardware's ex2.approx, the same instruction in every kernel.
 *
 * In both arithmetics, which keys a row sees depends only on its own
 * position (causal) or on n_kv (non-causal, where every row of a sequence
 * has the same n_kv), a segment a row does not reach is never merged, and
 * every float operation outside the mma is an explicit round-to-nearest
 * intrinsic (__fmaf_rn, __fmul_rn, ...), which the compiler may not
 * contract or reorder, so the same formula compiled into different kernels
 * gives the same bits. Hence a row gives the same output decoded alone
 * (split), in a prefill chunk of any size (sequential or split) and
 * whatever other rows share its tile.
 *
 * In place (out == q): each q row is read by the blocks of its own tile
 * only (tensor cores: by its own warp, into registers, at the start); the
 * sequential path writes a tile's output rows after its q rows were read,
 * and the split path writes output only in the merge kernel, which runs
 * after every segment block.
 *
 * Pointers: q, out, k and v must be 16-byte aligned (device allocations
 * are; head_dim % 8 == 0 keeps every row aligned).
 */
#include "backend/cuda/cuda_internal.h"

#include <math.h>
#include <stdint.h>

enum {
    SEG = 64,          /* keys per segment: the unit of batch invariance */
    THREADS = 128,     /* per block of the segment kernel */
    TILE_FLOATS = 2048 /* TILE_ROWS · HD_MAX: rows per tile shrink as head_dim grows */
};

/* Shared memory strides in floats: + 4 keeps the float4 reads of 8
 * different rows in 8 different bank groups ((hd + 4)/4 is odd). */
static inline __host__ __device__ int padded(int hd) {
    return hd + 4;
}

/* ---- the arithmetic every path shares ----------------------------------- */

/* exp(x) for x <= 0, as exp2 of x·log2(e): one rounding plus ex2's. */
static __device__ __forceinline__ float softmax_exp(float x) {
    return exp2f(__fmul_rn(x, 1.4426950408889634f));
}

/* Merging a segment of max m into a running max M: the new max and the two
 * rescale factors, for the running state (a) and the segment (b). */
static __device__ __forceinline__ void merge_factors(float M, float m, float *M_new, float *a,
                                                     float *b) {
    float mx = fmaxf(M, m);
    *M_new = mx;
    *a = softmax_exp(__fsub_rn(M, mx));
    *b = softmax_exp(__fsub_rn(m, mx));
}

/* running·a + segment·b, for L and for every O[d]. */
static __device__ __forceinline__ float merge_value(float running, float a, float seg, float b) {
    return __fadd_rn(__fmul_rn(running, a), __fmul_rn(seg, b));
}

/* Keys row r of a tile sees: all n_kv, or up to its own position when causal. */
static __device__ __forceinline__ int keys_seen(int row, int group, int q_pos0, int n_kv,
                                                bool causal) {
    if (!causal) return n_kv;
    int seen = q_pos0 + row / group + 1;
    return seen < n_kv ? seen : n_kv;
}

/* 8 consecutive cache elements widened to float32 (exact for f16). */
static __device__ __forceinline__ void load8(const float *src, float4 *lo, float4 *hi) {
    *lo = __ldg((const float4 *)src);
    *hi = __ldg((const float4 *)src + 1);
}
static __device__ __forceinline__ void load8(const __half *src, float4 *lo, float4 *hi) {
    uint4 raw = __ldg((const uint4 *)src);
    float2 a = __half22float2(*(const __half2 *)&raw.x);
    float2 b = __half22float2(*(const __half2 *)&raw.y);
    float2 c = __half22float2(*(const __half2 *)&raw.z);
    float2 d = __half22float2(*(const __half2 *)&raw.w);
    *lo = make_float4(a.x, a.y, b.x, b.y);
    *hi = make_float4(c.x, c.y, d.x, d.y);
}

/* ---- the segment kernel ------------------------------------------------- */

typedef struct {
    float *out;
    const float *q;
    const void *k, *v;
    int n_q, q_pos0, n_kv, n_heads, n_kv_heads, head_dim, group;
    bool causal;
    float scale;
    int rows_per_head; /* n_q · group: the rows that read one kv head */
    int n_tiles;       /* per kv head */
    int n_seg;         /* segments of the longest row: ceil(n_kv / SEG) */
    /* split path: partials of row (g, r), segment s at index (g·rows_per_head + r)·n_seg + s */
    float2 *part_ml; /* (m, l) */
    float *part_o;   /* o[head_dim] */
} attn_args;

/* The q (or out) row of tile row r of kv head g. */
static __device__ __forceinline__ size_t q_row_offset(const attn_args &p, int g, int r) {
    int i = r / p.group, h = g * p.group + r % p.group;
    return ((size_t)i * p.n_heads + h) * p.head_dim;
}

/*
 * One tile of rows (blockIdx.x, from the last, the longest causal rows
 * first) of kv head blockIdx.z. SPLIT: one segment, blockIdx.y, whose
 * partials go to scratch. Otherwise all the tile's segments in order, merged
 * here, and the output written.
 *
 * Shared memory (floats): Q (ROWS × padded), K (SEG × padded),
 * V (SEG × hd), S/P (ROWS × SEG).
 */
template <int ROWS, typename KV, bool SPLIT>
__global__ void __launch_bounds__(THREADS) attn_segment_kernel(const attn_args p) {
    constexpr int SCORE_SLOTS = ROWS * SEG / THREADS;   /* (row, key) dots per thread */
    constexpr int PV_SLOTS = TILE_FLOATS / 4 / THREADS; /* float4 outputs per thread */
    static_assert(SEG == 64 && THREADS == 128, "the lane mappings below assume these");

    extern __shared__ float4 smem4[];
    float *smem = (float *)smem4;
    const int hd = p.head_dim, hd4 = hd / 4, stride = padded(hd);
    float *Qs = smem;
    float *Ks = Qs + ROWS * stride;
    float *Vs = Ks + SEG * stride;
    float *Ps = Vs + SEG * hd;
    __shared__ int row_seen[ROWS];
    __shared__ float row_M[ROWS], row_L[ROWS], row_a[ROWS], row_b[ROWS];

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int tile = p.n_tiles - 1 - blockIdx.x, g = blockIdx.z;
    const int r0 = tile * ROWS;
    const int n_rows = min(ROWS, p.rows_per_head - r0);
    /* rows are query-major, so the last row sees the most keys */
    const int tile_keys = keys_seen(r0 + n_rows - 1, p.group, p.q_pos0, p.n_kv, p.causal);
    const int seg_first = SPLIT ? blockIdx.y : 0;
    const int seg_end = SPLIT ? blockIdx.y + 1 : (tile_keys + SEG - 1) / SEG;
    if (seg_first * SEG >= tile_keys) return; /* split: no row of the tile reaches it */

    for (int r = tid; r < n_rows; r += THREADS)
        row_seen[r] = keys_seen(r0 + r, p.group, p.q_pos0, p.n_kv, p.causal);
    for (int e = tid; e < n_rows * hd4; e += THREADS) {
        int r = e / hd4, c = e % hd4;
        const float4 *src = (const float4 *)(p.q + q_row_offset(p, g, r0 + r)) + c;
        *(float4 *)(Qs + r * stride + 4 * c) = *src;
    }

    /* Each thread's share of the P·V outputs: float4 column c of row r. */
    int pv_row[PV_SLOTS], pv_col[PV_SLOTS];
    float4 O[PV_SLOTS];
#pragma unroll
    for (int k = 0; k < PV_SLOTS; k++) {
        int e = tid + k * THREADS;
        pv_row[k] = e / hd4 < n_rows ? e / hd4 : -1;
        pv_col[k] = e % hd4;
        O[k] = make_float4(0.f, 0.f, 0.f, 0.f);
    }

    const size_t kv_dim = (size_t)p.n_kv_heads * hd;
    const KV *kg = (const KV *)p.k + (size_t)g * hd;
    const KV *vg = (const KV *)p.v + (size_t)g * hd;
    const int hd8 = hd / 8;

    for (int s = seg_first; s < seg_end; s++) {
        const int key0 = s * SEG, n_keys = min(SEG, tile_keys - key0);
        __syncthreads(); /* the previous segment's K, V, P are no longer read */
        for (int e = tid; e < SEG * hd8; e += THREADS) {
            int j = e / hd8, c = e % hd8;
            float4 klo = make_float4(0.f, 0.f, 0.f, 0.f), khi = klo, vlo = klo, vhi = klo;
            if (j < n_keys) {
                size_t at = (size_t)(key0 + j) * kv_dim + 8 * c;
                load8(kg + at, &klo, &khi);
                load8(vg + at, &vlo, &vhi);
            }
            *(float4 *)(Ks + j * stride + 8 * c) = klo;
            *(float4 *)(Ks + j * stride + 8 * c + 4) = khi;
            *(float4 *)(Vs + j * hd + 8 * c) = vlo;
            *(float4 *)(Vs + j * hd + 8 * c + 4) = vhi;
        }
        __syncthreads();

        /* Scores: thread owns key j and rows warp/2 + 2k (uniform per warp). */
        {
            const int j = tid % SEG, rbase = tid / SEG;
            float dot[SCORE_SLOTS];
#pragma unroll
            for (int k = 0; k < SCORE_SLOTS; k++) dot[k] = 0.f;
            const float *krow = Ks + j * stride;
            for (int c = 0; c < hd4; c++) {
                float4 kv = *(const float4 *)(krow + 4 * c);
#pragma unroll
                for (int k = 0; k < SCORE_SLOTS; k++) {
                    int r = rbase + 2 * k;
                    if (r < n_rows) {
                        float4 qv = *(const float4 *)(Qs + r * stride + 4 * c);
                        dot[k] = __fmaf_rn(qv.x, kv.x, dot[k]);
                        dot[k] = __fmaf_rn(qv.y, kv.y, dot[k]);
                        dot[k] = __fmaf_rn(qv.z, kv.z, dot[k]);
                        dot[k] = __fmaf_rn(qv.w, kv.w, dot[k]);
                    }
                }
            }
#pragma unroll
            for (int k = 0; k < SCORE_SLOTS; k++) {
                int r = rbase + 2 * k;
                if (r < n_rows) Ps[r * SEG + j] = __fmul_rn(dot[k], p.scale);
            }
        }
        __syncthreads();

        /* Softmax of the segment: one warp per row; lane holds keys lane and lane + 32. */
        for (int r = warp; r < n_rows; r += THREADS / 32) {
            int visible = row_seen[r] - key0; /* keys of this segment the row sees */
            if (visible <= 0) continue;       /* uniform per warp */
            bool see0 = lane < visible, see1 = lane + 32 < visible;
            float s0 = see0 ? Ps[r * SEG + lane] : -INFINITY;
            float s1 = see1 ? Ps[r * SEG + lane + 32] : -INFINITY;
            float m = fmaxf(s0, s1);
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
            float p0 = see0 ? softmax_exp(__fsub_rn(s0, m)) : 0.f;
            float p1 = see1 ? softmax_exp(__fsub_rn(s1, m)) : 0.f;
            Ps[r * SEG + lane] = p0;
            Ps[r * SEG + lane + 32] = p1;
            float l = __fadd_rn(p0, p1);
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) l = __fadd_rn(l, __shfl_xor_sync(0xffffffffu, l, o));
            if (lane == 0) {
                if (SPLIT) {
                    p.part_ml[((size_t)g * p.rows_per_head + r0 + r) * p.n_seg + s] =
                        make_float2(m, l);
                } else if (s == 0) {
                    row_M[r] = m;
                    row_L[r] = l;
                } else {
                    float M, a, b;
                    merge_factors(row_M[r], m, &M, &a, &b);
                    row_M[r] = M;
                    row_L[r] = merge_value(row_L[r], a, l, b);
                    row_a[r] = a;
                    row_b[r] = b;
                }
            }
        }
        __syncthreads();

        /* P·V: each output one fma chain over the row's visible keys, in order. */
        {
            int visible[PV_SLOTS], most = 0;
            float4 acc[PV_SLOTS];
#pragma unroll
            for (int k = 0; k < PV_SLOTS; k++) {
                visible[k] = pv_row[k] >= 0 ? min(SEG, row_seen[pv_row[k]] - key0) : 0;
                most = max(most, visible[k]);
                acc[k] = make_float4(0.f, 0.f, 0.f, 0.f);
            }
            for (int j = 0; j < most; j++) {
#pragma unroll
                for (int k = 0; k < PV_SLOTS; k++) {
                    if (j < visible[k]) {
                        float pj = Ps[pv_row[k] * SEG + j];
                        float4 vv = *(const float4 *)(Vs + j * hd + 4 * pv_col[k]);
                        acc[k].x = __fmaf_rn(pj, vv.x, acc[k].x);
                        acc[k].y = __fmaf_rn(pj, vv.y, acc[k].y);
                        acc[k].z = __fmaf_rn(pj, vv.z, acc[k].z);
                        acc[k].w = __fmaf_rn(pj, vv.w, acc[k].w);
                    }
                }
            }
#pragma unroll
            for (int k = 0; k < PV_SLOTS; k++) {
                if (visible[k] <= 0) continue; /* no row here, or the row ended before s */
                int r = pv_row[k];
                if (SPLIT) {
                    size_t at = ((size_t)g * p.rows_per_head + r0 + r) * p.n_seg + s;
                    *(float4 *)(p.part_o + at * hd + 4 * pv_col[k]) = acc[k];
                } else if (s == 0) {
                    O[k] = acc[k];
                } else {
                    float a = row_a[r], b = row_b[r];
                    O[k].x = merge_value(O[k].x, a, acc[k].x, b);
                    O[k].y = merge_value(O[k].y, a, acc[k].y, b);
                    O[k].z = merge_value(O[k].z, a, acc[k].z, b);
                    O[k].w = merge_value(O[k].w, a, acc[k].w, b);
                }
            }
        }
    }

    /* Sequential: O / L (row_L was last written before the final P·V's barrier). */
#pragma unroll
    for (int k = 0; k < PV_SLOTS; k++) {
        int r = pv_row[k];
        if (SPLIT || r < 0) continue;
        float L = row_L[r];
        float4 o = make_float4(__fdiv_rn(O[k].x, L), __fdiv_rn(O[k].y, L), __fdiv_rn(O[k].z, L),
                               __fdiv_rn(O[k].w, L));
        *((float4 *)(p.out + q_row_offset(p, g, r0 + r)) + pv_col[k]) = o;
    }
}

/* ---- the split path's merge --------------------------------------------- */

/* One warp per row (g, r): its partials in segment order, then O / L. */
__global__ void __launch_bounds__(128) attn_merge_kernel(const attn_args p) {
    const int warps = blockDim.x / 32;
    const int row = blockIdx.x * warps + threadIdx.x / 32, lane = threadIdx.x & 31;
    if (row >= p.n_kv_heads * p.rows_per_head) return;
    const int g = row / p.rows_per_head, r = row % p.rows_per_head;
    const int hd = p.head_dim, hd4 = hd / 4;
    const int n_seg_row = (keys_seen(r, p.group, p.q_pos0, p.n_kv, p.causal) + SEG - 1) / SEG;
    const float2 *ml = p.part_ml + (size_t)row * p.n_seg;
    const float *po = p.part_o + (size_t)row * p.n_seg * hd;
    float *out = p.out + q_row_offset(p, g, r);

    for (int c = lane; c < hd4; c += 32) { /* hd4 <= 64: at most two passes */
        float M = ml[0].x, L = ml[0].y;
        float4 O = *((const float4 *)po + c);
        /* unrolled so that the loads of several segments are in flight at once */
#pragma unroll 8
        for (int s = 1; s < n_seg_row; s++) {
            float a, b, m = ml[s].x;
            merge_factors(M, m, &M, &a, &b);
            L = merge_value(L, a, ml[s].y, b);
            float4 o = *((const float4 *)(po + (size_t)s * hd) + c);
            O.x = merge_value(O.x, a, o.x, b);
            O.y = merge_value(O.y, a, o.y, b);
            O.z = merge_value(O.z, a, o.z, b);
            O.w = merge_value(O.w, a, o.w, b);
        }
        *((float4 *)out + c) =
            make_float4(__fdiv_rn(O.x, L), __fdiv_rn(O.y, L), __fdiv_rn(O.z, L), __fdiv_rn(O.w, L));
    }
}

/* ---- the tensor-core path (fast mode, head_dim 64 and 128) -------------- */

enum {
    FA_WARPS = 4, /* per block; each warp owns one 16-row mma tile */
    FA_THREADS = 32 * FA_WARPS,
    FA_BLOCK_ROWS = 16 * FA_WARPS
};

/* 2^x (x <= 0 or -inf, which gives +0): the hardware's approximation, the
 * same instruction wherever it is compiled. */
static __device__ __forceinline__ float fa_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* Merging a segment (max m, base-2 scores) into a running state of max M:
 * the new max and the rescale factors of the state (a) and the segment (b).
 * The state starts at M = -inf, L = 0, O = 0, so merging segment 0 gives
 * a = 0, b = 1 and copies it; every path starts that way. */
static __device__ __forceinline__ void fa_merge_factors(float M, float m, float *M_new, float *a,
                                                        float *b) {
    float mx = fmaxf(M, m);
    *M_new = mx;
    *a = fa_exp2(__fsub_rn(M, mx));
    *b = fa_exp2(__fsub_rn(m, mx));
}

/* running·a + segment·b, for L and every O[d]: an explicit fma and multiply,
 * which no compiler contracts differently in different kernels. */
static __device__ __forceinline__ float fa_merge_value(float running, float a, float seg, float b) {
    return __fmaf_rn(running, a, __fmul_rn(seg, b));
}

/* Two floats as an mma half pair, rounded to nearest and saturated at ±65504. */
static __device__ __forceinline__ uint32_t fa_pack(float lo, float hi) {
    lo = fminf(fmaxf(lo, -65504.0f), 65504.0f);
    hi = fminf(fmaxf(hi, -65504.0f), 65504.0f);
    __half2 v = __floats2half2_rn(lo, hi);
    return *(uint32_t *)&v;
}

static __device__ __forceinline__ void fa_mma(float c[4], const uint32_t a[4], uint32_t b0,
                                              uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Four 8x8 half matrices from shared memory; lane L gives the address of row
 * L % 8 of matrix L / 8 and receives row L / 4, columns 2(L % 4), +1 of each
 * (.trans: column L / 4, rows 2(L % 4), +1), the mma fragment layout. */
static __device__ __forceinline__ void fa_ldsm4(uint32_t r[4], const __half *p) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
static __device__ __forceinline__ void fa_ldsm4_trans(uint32_t r[4], const __half *p) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

/* 16 bytes global -> shared, asynchronously; src_bytes 0 fills zeros. */
static __device__ __forceinline__ void fa_cp16(void *dst, const void *src, int src_bytes) {
    uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src),
                 "r"(src_bytes)
                 : "memory");
}
static __device__ __forceinline__ void fa_cp_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N> static __device__ __forceinline__ void fa_cp_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

typedef struct {
    float *out;
    const float *q;
    const __half *k, *v; /* f16: the cache itself, or an f32 cache converted (fa_to_half) */
    int n_q, q_pos0, n_kv, n_heads, n_kv_heads, group;
    bool causal;
    float scale_log2;  /* log2(e) / sqrt(head_dim): scores are kept in base 2 */
    int rows_per_head; /* n_q · group */
    int n_blocks;      /* blocks of FA_BLOCK_ROWS rows per kv head */
    int n_seg;         /* ceil(n_kv / SEG) */
    /* split path: row (g, r), segment s at (g·rows_per_head + r)·n_seg + s */
    float2 *part_ml; /* (m, l) */
    float *part_o;   /* o[head_dim] */
} fa_args;

/* Halves per staged key or value row: + 8 puts the 8 rows an ldmatrix reads
 * in 8 different 16-byte bank groups. */
template <int HD> struct fa_dims {
    static constexpr int STRIDE = HD + 8;
    static constexpr int TILE = SEG * STRIDE; /* halves of one staged K or V segment */
};

/* Queue the copies of segment s's keys and values (kv head g) into Ks, Vs;
 * keys at or past n_kv become zeros (finite, and masked for every row). */
template <int HD>
static __device__ __forceinline__ void fa_stage(const fa_args &p, int g, int s, __half *Ks,
                                                __half *Vs) {
    constexpr int CH = HD / 8, STRIDE = fa_dims<HD>::STRIDE; /* 16-byte chunks per row */
    static_assert(SEG * CH % FA_THREADS == 0, "every thread copies the same number of chunks");
#pragma unroll 4
    for (int i = 0; i < SEG * CH / FA_THREADS; i++) {
        int e = threadIdx.x + i * FA_THREADS;
        int j = e / CH, c = e % CH, key = s * SEG + j;
        bool in = key < p.n_kv;
        size_t at = in ? ((size_t)key * p.n_kv_heads + g) * HD + 8 * c : 0;
        fa_cp16(Ks + j * STRIDE + 8 * c, p.k + at, in ? 16 : 0);
        fa_cp16(Vs + j * STRIDE + 8 * c, p.v + at, in ? 16 : 0);
    }
}

/*
 * The per-segment arithmetic every fast path shares, for one warp's 16 rows
 * against one staged segment. Lane (g = lane / 4, t = lane % 4) holds rows g
 * and g + 8 (slot h = 0, 1) as the mma's C layout does. vis[h]: keys of the
 * segment row slot h sees (<= 0: none, >= SEG: all).
 *
 * Scores: S = Q·Kᵀ, per 8-key tile one accumulator from 0 taking the mma of
 * each 16-dim step in increasing order; then s = S·scale_log2, -inf where
 * masked. m = max of the row's visible s (any order is exact), p = 2^(s − m)
 * for visible keys and exactly 0 for masked ones, l = Σ p in a fixed order
 * (per lane: tiles 0..7, two columns each; then lanes t^1, t^2), identical
 * in the four lanes of a row and for slot 0 or 1. P is rounded to f16 and
 * returned as the A fragments of the P·V mma (keys 16kk..16kk+15).
 */
template <int HD>
static __device__ __forceinline__ void
fa_softmax(const uint32_t (&qa)[HD / 16][4], const __half *Ks, int lane, const int vis[2],
           float scale_log2, float m[2], float l[2], uint32_t pa[4][4]) {
    constexpr int STRIDE = fa_dims<HD>::STRIDE;
    float S[8][4];
#pragma unroll
    for (int j = 0; j < 8; j++) {
        S[j][0] = S[j][1] = S[j][2] = S[j][3] = 0.f;
        /* matrices: keys 8j..8j+7 by dims 32kp + 0, 8, 16, 24: the B of steps 2kp, 2kp + 1 */
        const __half *kr = Ks + (8 * j + (lane & 7)) * STRIDE + 8 * (lane >> 3);
#pragma unroll
        for (int kp = 0; kp < HD / 32; kp++) {
            uint32_t b[4];
            fa_ldsm4(b, kr + 32 * kp);
            fa_mma(S[j], qa[2 * kp], b[0], b[1]);
            fa_mma(S[j], qa[2 * kp + 1], b[2], b[3]);
        }
    }
    const int t = lane & 3;
    m[0] = m[1] = -INFINITY;
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            bool see = 8 * j + 2 * t + (e & 1) < vis[e >> 1];
            S[j][e] = see ? __fmul_rn(S[j][e], scale_log2) : -INFINITY;
            m[e >> 1] = fmaxf(m[e >> 1], S[j][e]);
        }
#pragma unroll
    for (int h = 0; h < 2; h++) {
        m[h] = fmaxf(m[h], __shfl_xor_sync(0xffffffffu, m[h], 1));
        m[h] = fmaxf(m[h], __shfl_xor_sync(0xffffffffu, m[h], 2));
        l[h] = 0.f;
    }
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            bool see = 8 * j + 2 * t + (e & 1) < vis[e >> 1];
            float pj = see ? fa_exp2(__fsub_rn(S[j][e], m[e >> 1])) : 0.f;
            S[j][e] = pj;
            l[e >> 1] = __fadd_rn(l[e >> 1], pj);
        }
#pragma unroll
    for (int h = 0; h < 2; h++) {
        l[h] = __fadd_rn(l[h], __shfl_xor_sync(0xffffffffu, l[h], 1));
        l[h] = __fadd_rn(l[h], __shfl_xor_sync(0xffffffffu, l[h], 2));
    }
    /* The C fragments of key tiles 2kk and 2kk + 1 are the A fragment of step kk. */
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        __half2 v0 = __floats2half2_rn(S[2 * kk][0], S[2 * kk][1]);
        __half2 v1 = __floats2half2_rn(S[2 * kk][2], S[2 * kk][3]);
        __half2 v2 = __floats2half2_rn(S[2 * kk + 1][0], S[2 * kk + 1][1]);
        __half2 v3 = __floats2half2_rn(S[2 * kk + 1][2], S[2 * kk + 1][3]);
        pa[kk][0] = *(uint32_t *)&v0;
        pa[kk][1] = *(uint32_t *)&v1;
        pa[kk][2] = *(uint32_t *)&v2;
        pa[kk][3] = *(uint32_t *)&v3;
    }
}

/* o = P·V for dims 16np..16np+15 (two 8-dim tiles): each accumulator from 0,
 * the mma of the segment's keys in increasing 16-key steps. */
template <int HD>
static __device__ __forceinline__ void fa_pv(const uint32_t pa[4][4], const __half *Vs, int lane,
                                             int np, float o[2][4]) {
    constexpr int STRIDE = fa_dims<HD>::STRIDE;
#pragma unroll
    for (int n = 0; n < 2; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    /* matrices: keys +0..7, +8..15 by dims 16np + 0, then the same by 16np + 8 */
    const __half *vr = Vs + (lane & 15) * STRIDE + 16 * np + 8 * (lane >> 4);
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        uint32_t b[4];
        fa_ldsm4_trans(b, vr + 16 * kk * STRIDE);
        fa_mma(o[0], pa[kk], b[0], b[1]);
        fa_mma(o[1], pa[kk], b[2], b[3]);
    }
}

/* The q (or out) row of row r of kv head g. */
static __device__ __forceinline__ size_t fa_row_offset(const fa_args &p, int hd, int g, int r) {
    int i = r / p.group, h = g * p.group + r % p.group;
    return ((size_t)i * p.n_heads + h) * hd;
}

/*
 * FA_BLOCK_ROWS rows (block blockIdx.x, from the last: the longest causal
 * rows first) of kv head blockIdx.z; warp w owns rows 16w..16w+15 of them.
 * SPLIT: segment blockIdx.y only, its partials to scratch. Otherwise every
 * segment the block's rows see, in order, staged double-buffered with
 * cp.async while the previous one is computed, merged in registers, and the
 * output written.
 */
template <int HD, bool SPLIT>
__global__ void __launch_bounds__(FA_THREADS) fa_kernel(const fa_args p) {
    constexpr int TILE = fa_dims<HD>::TILE;
    extern __shared__ uint4 fa_smem[];
    __half *stage_base = (__half *)fa_smem; /* [stage][K, V][TILE] */

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, t = lane & 3;
    const int blk = p.n_blocks - 1 - blockIdx.x, g = blockIdx.z;
    const int b_r0 = blk * FA_BLOCK_ROWS;
    const int b_rows = min(FA_BLOCK_ROWS, p.rows_per_head - b_r0);
    /* rows are query-major, so a range's last row sees the most keys */
    const int block_keys = keys_seen(b_r0 + b_rows - 1, p.group, p.q_pos0, p.n_kv, p.causal);
    const int seg_first = SPLIT ? blockIdx.y : 0;
    const int seg_end = SPLIT ? blockIdx.y + 1 : (block_keys + SEG - 1) / SEG;
    if (seg_first * SEG >= block_keys) return; /* split: no row of the block reaches it */

    const int w_r0 = b_r0 + 16 * warp;
    const int w_rows = min(16, p.rows_per_head - w_r0); /* <= 0: an idle warp */
    const int warp_keys =
        w_rows > 0 ? keys_seen(w_r0 + w_rows - 1, p.group, p.q_pos0, p.n_kv, p.causal) : 0;

    /* This lane's rows (slots g, g + 8 of the warp's tile), and their q as A fragments. */
    int row[2], seen[2];
    bool live[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        row[h] = w_r0 + (lane >> 2) + 8 * h;
        live[h] = w_rows > 0 && row[h] < p.rows_per_head;
        seen[h] = live[h] ? keys_seen(row[h], p.group, p.q_pos0, p.n_kv, p.causal) : 0;
    }
    uint32_t qa[HD / 16][4];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const float *qr = live[h] ? p.q + fa_row_offset(p, HD, g, row[h]) + 2 * t : nullptr;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {
            float2 lo = qr ? *(const float2 *)(qr + 16 * kk) : make_float2(0.f, 0.f);
            float2 hi = qr ? *(const float2 *)(qr + 16 * kk + 8) : make_float2(0.f, 0.f);
            qa[kk][h] = fa_pack(lo.x, lo.y);
            qa[kk][2 + h] = fa_pack(hi.x, hi.y);
        }
    }

    float O[HD / 8][4], M[2] = {-INFINITY, -INFINITY}, L[2] = {0.f, 0.f};
#pragma unroll
    for (int n = 0; n < HD / 8; n++) O[n][0] = O[n][1] = O[n][2] = O[n][3] = 0.f;

    fa_stage<HD>(p, g, seg_first, stage_base, stage_base + TILE);
    fa_cp_commit();
    for (int s = seg_first; s < seg_end; s++) {
        const __half *Ks = stage_base + ((s - seg_first) & 1) * 2 * TILE, *Vs = Ks + TILE;
        if (SPLIT) {
            fa_cp_wait<0>();
        } else {
            /* the other buffer was last read before the previous iteration's barrier */
            if (s + 1 < seg_end) {
                __half *nk = stage_base + ((s + 1 - seg_first) & 1) * 2 * TILE;
                fa_stage<HD>(p, g, s + 1, nk, nk + TILE);
            }
            fa_cp_commit(); /* possibly empty: wait<1> then always means segment s */
            fa_cp_wait<1>();
        }
        __syncthreads();

        const int key0 = s * SEG;
        if (warp_keys > key0) { /* uniform per warp */
            int vis[2] = {seen[0] - key0, seen[1] - key0};
            float m[2], l[2];
            uint32_t pa[4][4];
            fa_softmax<HD>(qa, Ks, lane, vis, p.scale_log2, m, l, pa);
            if (SPLIT) {
#pragma unroll
                for (int h = 0; h < 2; h++)
                    if (vis[h] > 0 && t == 0)
                        p.part_ml[((size_t)g * p.rows_per_head + row[h]) * p.n_seg + s] =
                            make_float2(m[h], l[h]);
#pragma unroll
                for (int np = 0; np < HD / 16; np++) {
                    float o[2][4];
                    fa_pv<HD>(pa, Vs, lane, np, o);
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        if (vis[h] <= 0) continue;
                        size_t at = ((size_t)g * p.rows_per_head + row[h]) * p.n_seg + s;
                        float *po = p.part_o + at * HD + 16 * np + 2 * t;
                        *(float2 *)po = make_float2(o[0][2 * h], o[0][2 * h + 1]);
                        *(float2 *)(po + 8) = make_float2(o[1][2 * h], o[1][2 * h + 1]);
                    }
                }
            } else {
                float a[2], b[2];
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    a[h] = b[h] = 0.f;
                    if (vis[h] > 0) { /* a row merges only the segments it sees */
                        fa_merge_factors(M[h], m[h], &M[h], &a[h], &b[h]);
                        L[h] = fa_merge_value(L[h], a[h], l[h], b[h]);
                    }
                }
#pragma unroll
                for (int np = 0; np < HD / 16; np++) {
                    float o[2][4];
                    fa_pv<HD>(pa, Vs, lane, np, o);
#pragma unroll
                    for (int n = 0; n < 2; n++)
#pragma unroll
                        for (int e = 0; e < 4; e++)
                            if (vis[e >> 1] > 0)
                                O[2 * np + n][e] =
                                    fa_merge_value(O[2 * np + n][e], a[e >> 1], o[n][e], b[e >> 1]);
                }
            }
        }
        if (!SPLIT) __syncthreads(); /* this buffer is refilled two segments on */
    }

#pragma unroll
    for (int h = 0; h < 2; h++) {
        if (SPLIT || !live[h]) continue; /* split: the merge kernel writes out */
        float *orow = p.out + fa_row_offset(p, HD, g, row[h]) + 2 * t;
#pragma unroll
        for (int n = 0; n < HD / 8; n++)
            *(float2 *)(orow + 8 * n) =
                make_float2(__fdiv_rn(O[n][2 * h], L[h]), __fdiv_rn(O[n][2 * h + 1], L[h]));
    }
}

/* The split path's merge: one warp per row (g, r), its partials in segment
 * order from the state (-inf, 0, 0), with the sequential kernel's functions. */
template <int HD> __global__ void __launch_bounds__(128) fa_merge_kernel(const fa_args p) {
    constexpr int PER = HD / 32; /* consecutive dims per lane */
    const int row = blockIdx.x * 4 + threadIdx.x / 32, lane = threadIdx.x & 31;
    if (row >= p.n_kv_heads * p.rows_per_head) return;
    const int g = row / p.rows_per_head, r = row % p.rows_per_head;
    const int n_seg_row = (keys_seen(r, p.group, p.q_pos0, p.n_kv, p.causal) + SEG - 1) / SEG;
    const float2 *ml = p.part_ml + (size_t)row * p.n_seg;
    const float *po = p.part_o + (size_t)row * p.n_seg * HD + PER * lane;
    /* unrolled (below) so that the loads of several segments are in flight at once */
    float M = -INFINITY, L = 0.f, O[PER];
#pragma unroll
    for (int i = 0; i < PER; i++) O[i] = 0.f;
#pragma unroll 8
    for (int s = 0; s < n_seg_row; s++) {
        float2 seg = ml[s];
        float o[PER];
#pragma unroll
        for (int i = 0; i < PER; i += 2) {
            float2 v = *(const float2 *)(po + (size_t)s * HD + i);
            o[i] = v.x, o[i + 1] = v.y;
        }
        float a, b;
        fa_merge_factors(M, seg.x, &M, &a, &b);
        L = fa_merge_value(L, a, seg.y, b);
#pragma unroll
        for (int i = 0; i < PER; i++) O[i] = fa_merge_value(O[i], a, o[i], b);
    }
    float *out = p.out + fa_row_offset(p, HD, g, r) + PER * lane;
#pragma unroll
    for (int i = 0; i < PER; i++) out[i] = __fdiv_rn(O[i], L);
}

/* An f32 cache (CLIP's K and V: blockIdx.y picks which) as halves, rounded
 * and saturated as q is, so that both kernels only ever stage halves. */
__global__ void fa_to_half(uint2 *k_dst, uint2 *v_dst, const float4 *k, const float4 *v,
                           size_t n4) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n4) return;
    float4 f = blockIdx.y ? v[i] : k[i];
    (blockIdx.y ? v_dst : k_dst)[i] = make_uint2(fa_pack(f.x, f.y), fa_pack(f.z, f.w));
}

static size_t fa_round(size_t bytes) {
    return (bytes + 255) & ~(size_t)255;
}

template <int HD>
static void fa_launch(cu_ctx *c, fa_args *p, const void *k, const void *v, be_dtype kv_dtype) {
    p->n_blocks = (p->rows_per_head + FA_BLOCK_ROWS - 1) / FA_BLOCK_ROWS;
    /* Split when the sequential grid could not fill the GPU (decode, short
     * chunks): which one runs never changes a bit, only the time. */
    size_t n_part = (size_t)p->n_kv_heads * p->rows_per_head * p->n_seg;
    size_t o_bytes = fa_round(n_part * HD * sizeof(float)), ml_bytes = fa_round(n_part * 8);
    bool split = p->n_seg > 1 && (long)p->n_blocks * p->n_kv_heads < c->n_sm &&
                 o_bytes + ml_bytes <= ((size_t)256 << 20);
    size_t kv_n = (size_t)p->n_kv * p->n_kv_heads * HD;
    size_t half_bytes = kv_dtype == BE_F32 ? fa_round(kv_n * sizeof(__half)) : 0;
    size_t part_bytes = split ? o_bytes + ml_bytes : 0;
    char *scratch = NULL;
    if (part_bytes + 2 * half_bytes > 0) {
        scratch = (char *)cu_scratch(c, part_bytes + 2 * half_bytes);
        if (!scratch) return; /* recorded by cu_scratch */
    }
    if (split) {
        p->part_o = (float *)scratch;
        p->part_ml = (float2 *)(scratch + o_bytes);
    }
    if (kv_dtype == BE_F32) {
        __half *kh = (__half *)(scratch + part_bytes),
               *vh = (__half *)(scratch + part_bytes + half_bytes);
        size_t n4 = kv_n / 4;
        dim3 grid((unsigned)((n4 + 255) / 256), 2);
        fa_to_half<<<grid, 256, 0, c->stream>>>((uint2 *)kh, (uint2 *)vh, (const float4 *)k,
                                                (const float4 *)v, n4);
        if (!cu_check(c, "attention: f16 copy of K/V")) return;
        p->k = kh;
        p->v = vh;
    } else {
        p->k = (const __half *)k;
        p->v = (const __half *)v;
    }

    void (*kernel)(fa_args) = split ? fa_kernel<HD, true> : fa_kernel<HD, false>;
    size_t smem = (split ? 1 : 2) * 2 * (size_t)fa_dims<HD>::TILE * sizeof(__half);
    if (smem > 48 * 1024 &&
        !cu_record(
            c, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
            "attention: shared memory"))
        return;
    dim3 grid(p->n_blocks, split ? p->n_seg : 1, p->n_kv_heads);
    kernel<<<grid, FA_THREADS, smem, c->stream>>>(*p);
    if (!cu_check(c, "attention (tensor cores)") || !split) return;

    int rows = p->n_kv_heads * p->rows_per_head;
    fa_merge_kernel<HD><<<(rows + 3) / 4, 128, 0, c->stream>>>(*p);
    cu_check(c, "attention merge (tensor cores)");
}

/* ---- launch ------------------------------------------------------------- */

template <int ROWS, typename KV> static void launch_segments(cu_ctx *c, attn_args *p) {
    int hd = p->head_dim, stride = padded(hd);
    size_t smem = (size_t)(ROWS * stride + SEG * stride + SEG * hd + ROWS * SEG) * sizeof(float);
    p->n_tiles = (p->rows_per_head + ROWS - 1) / ROWS;

    /* Few tiles (decode): one block per segment as well, if the partials fit. */
    size_t n_part = (size_t)p->n_kv_heads * p->rows_per_head * p->n_seg;
    bool split = p->n_seg > 1 && (long)p->n_tiles * p->n_kv_heads < 2L * c->n_sm &&
                 n_part * (hd + 2) * sizeof(float) <= ((size_t)256 << 20);
    if (split) {
        char *scratch = (char *)cu_scratch(c, n_part * (sizeof(float2) + hd * sizeof(float)));
        if (!scratch) return; /* recorded by cu_scratch */
        p->part_ml = (float2 *)scratch;
        p->part_o = (float *)(scratch + n_part * sizeof(float2));
    }

    void (*kernel)(attn_args) =
        split ? attn_segment_kernel<ROWS, KV, true> : attn_segment_kernel<ROWS, KV, false>;
    if (smem > 48 * 1024 &&
        !cu_record(
            c, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
            "attention: shared memory"))
        return;
    dim3 grid(p->n_tiles, split ? p->n_seg : 1, p->n_kv_heads);
    kernel<<<grid, THREADS, smem, c->stream>>>(*p);
    if (!cu_check(c, "attention segments") || !split) return;

    int rows = p->n_kv_heads * p->rows_per_head;
    attn_merge_kernel<<<(rows + 3) / 4, 128, 0, c->stream>>>(*p);
    cu_check(c, "attention merge");
}

template <typename KV> static void launch_for_dtype(cu_ctx *c, attn_args *p) {
    /* TILE_ROWS · head_dim <= TILE_FLOATS: the per-thread slot counts are fixed */
    if (p->head_dim <= 64)
        launch_segments<TILE_FLOATS / 64, KV>(c, p);
    else if (p->head_dim <= 128)
        launch_segments<TILE_FLOATS / 128, KV>(c, p);
    else
        launch_segments<TILE_FLOATS / 256, KV>(c, p);
}

void cu_attention(cu_ctx *c, float *out, const float *q, const void *k, const void *v,
                  be_dtype kv_dtype, int n_q, int q_pos0, int n_kv, int n_heads, int n_kv_heads,
                  int head_dim, bool causal) {
    if (c->fault != LV_OK) return;
    if (n_q <= 0 || n_kv <= 0) return;
    if (head_dim < 8 || head_dim > 256 || head_dim % 8 != 0 || n_kv_heads <= 0 ||
        n_heads % n_kv_heads != 0 || q_pos0 < 0 || (kv_dtype != BE_F16 && kv_dtype != BE_F32)) {
        cu_record(c, cudaErrorInvalidValue, "attention: unsupported shape or dtype");
        return;
    }
    attn_args p = {};
    p.out = out;
    p.q = q;
    p.k = k;
    p.v = v;
    p.n_q = n_q;
    p.q_pos0 = q_pos0;
    p.n_kv = n_kv;
    p.n_heads = n_heads;
    p.n_kv_heads = n_kv_heads;
    p.head_dim = head_dim;
    p.group = n_heads / n_kv_heads;
    p.causal = causal;
    p.scale = (float)(1.0 / sqrt((double)head_dim));
    p.rows_per_head = n_q * p.group;
    p.n_seg = (n_kv + SEG - 1) / SEG;
    if (!c->exact && (head_dim == 64 || head_dim == 128)) {
        fa_args f = {};
        f.out = out;
        f.q = q;
        f.n_q = n_q;
        f.q_pos0 = q_pos0;
        f.n_kv = n_kv;
        f.n_heads = n_heads;
        f.n_kv_heads = n_kv_heads;
        f.group = p.group;
        f.causal = causal;
        f.scale_log2 = (float)(1.4426950408889634 / sqrt((double)head_dim));
        f.rows_per_head = p.rows_per_head;
        f.n_seg = p.n_seg;
        if (head_dim == 64)
            fa_launch<64>(c, &f, k, v, kv_dtype);
        else
            fa_launch<128>(c, &f, k, v, kv_dtype);
        return;
    }
    if (kv_dtype == BE_F16)
        launch_for_dtype<__half>(c, &p);
    else
        launch_for_dtype<float>(c, &p);
}
