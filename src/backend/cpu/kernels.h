/*
 * kernels.h - the CPU backend's kernel table: what each vector kernel
 * computes, and the block shapes the kernels and matmul.c agree on.
 *
 * There is one table per instruction set, each in its own files:
 * kernels_portable.c (plain C, any CPU), kernels_avx2.c + dequant_avx2.c
 * (AVX2+FMA+F16C) and kernels_avx512.c + dequant_avx512.c (AVX-512F; it
 * reuses several AVX2 kernels as they are: AVX2_SHARED in avx2.h). The x86
 * files use target attributes, so the build needs no -march and the binary
 * runs on any x86-64; a getter returns NULL where the running CPU lacks its
 * set. On aarch64, kernels_neon.c + dequant_neon.c (NEON, in every ARMv8-A
 * CPU) give the AVX2 table's bits too; elsewhere their getter returns NULL.
 *
 * Every table gives each output the same arithmetic whatever path matmul
 * takes (see matmul.c); the AVX-512 table gives the AVX2 table's bits.
 */
#ifndef LV_CPU_KERNELS_H
#define LV_CPU_KERNELS_H

#include "backend/backend.h"

#include <stddef.h>

/* The matmul micro-kernel's block: tokens × weight rows; and the weight rows
 * the one-token kernel (dot_rows) reduces at once. */
enum { MM_BLOCK_TOKENS = 6, MM_BLOCK_ROWS = 4, MM_GEMV_ROWS = 8 };

/* The packed-panel micro-kernel (dot_panel): MM_BLOCK_TOKENS tokens ×
 * MM_PANEL_ROWS weight rows, the rows packed by cpu_pack_panel. */
enum { MM_PANEL_ROWS = 8 };

/* The decode-batch kernel (dot_tokens): at most MM_DEC_TOKENS tokens ×
 * MM_DEC_ROWS weight rows read in their stored dtype; matmul takes it for
 * 2 <= n <= MM_DEC_MAX tokens. */
enum { MM_DEC_TOKENS = 8, MM_DEC_ROWS = 4, MM_DEC_MAX = 16 };
/* The paired decode kernel (dot_pairs, AVX-512): up to MM_PAIR_TOKENS
 * tokens, two to a vector, × up to MM_PAIR_ROWS weight rows; when a table
 * has it, matmul takes it for 2 <= n <= MM_PAIR_TOKENS plain-weight tokens. */
enum { MM_PAIR_TOKENS = 16, MM_PAIR_ROWS = 8 };
/* The quantized decode kernel (dot_tokens_q) takes 2 <= n <= its table's
 * dec_qtokens <= MM_DEC_QMAX tokens (measured: beyond, its per-token cost
 * exceeds the GEMM's panel path). */
enum { MM_DEC_QMAX = 12 };

/* Vector kernels, one table per instruction set. Pointers may be unaligned. */
typedef struct {
    const char *isa; /* "avx512", "avx2", "neon" or "portable": LLAVA_CPU_ISA's name */
    /* Σ a[i]·b[i] over n floats. */
    float (*dot)(const float *a, const float *b, int n);
    /* dst[i] = float(src[i]) for n elements of dtype. */
    void (*convert)(float *dst, be_dtype dtype, const void *src, size_t n);
    /* acc[t][r] += Σ x[t][i]·w[r][i] for a block of MM_BLOCK_TOKENS tokens ×
     * MM_BLOCK_ROWS weight rows, n floats each (the matmul micro-kernel; rows
     * and tokens may repeat to fill a ragged edge). */
    void (*dot_block)(float acc[][MM_BLOCK_ROWS], const float *const x[], const float *const w[],
                      int n);
    /* y[t·ldy + r] += 0 + Σ x[t][i]·w_r[i] for MM_BLOCK_TOKENS tokens ×
     * MM_PANEL_ROWS weight rows w_r of n floats, packed at wp as
     * cpu_pack_panel lays them out (64-byte aligned): the GEMM micro-kernel
     * where the table has it. The sum s of each (t, r) pair gets exactly
     * dot_rows' arithmetic for that pair (on the x86 tables: one 8-lane FMA
     * chain from zero over the full 8-column chunks, lane l summing columns
     * 8c + l in order, cpu_hsum8, then s += x·w, a rounded product then a
     * rounded sum, for each tail column in order; the portable table: its
     * own lanes, sum_lanes and tail); then y += (0 + s), as the other paths
     * add a zeroed accumulator's s into y (so even a -0 gives their bits).
     * Tokens may repeat. (optional: NULL means dot_block on a row-major
     * panel.) */
    void (*dot_panel)(float *y, size_t ldy, const float *const x[], const float *wp, int n);
    /* acc[r] += Σ x[i]·w[r][i] for MM_GEMV_ROWS weight rows of n elements of
     * dtype (F32, F16 or BF16), read straight from the weight: the n == 1
     * matmul. Each acc[r] gets exactly the float arithmetic dot_block gives
     * one (token, row) pair over the same floats (same lanes, FMA order,
     * horizontal sum and scalar tail), so a token's outputs do not depend
     * on the batch it is in. Rows may repeat to fill a ragged edge. pf: NULL,
     * or the rows to be read next (the same n elements of dtype each), which
     * the kernel may prefetch as it goes (a hint: never dereferenced). */
    void (*dot_rows)(float acc[], const float *x, be_dtype dtype, const void *const w[],
                     const void *const pf[], int n);
    /* dot_rows for a quantized weight: acc[r] += Σ x[i]·v[i] over the values
     * v of columns [c0, c0+n) of row rows[r] (a span the dequantiser takes),
     * each v exactly as `dequant` gives it, with dot_rows' arithmetic; no
     * scratch. (optional: NULL means dequant into scratch, then dot_rows.) */
    void (*dot_rows_q)(float acc[], const float *x, const be_weight *w, const int rows[], int c0,
                       int n);
    /* acc[t][r] += Σ x[t][i]·w[r][i] for nt tokens × nr weight rows of n
     * elements of dtype (F32, F16 or BF16), read straight from the weight:
     * the decode batch (2 <= n <= MM_DEC_MAX). nr is 2 (nt in
     * 1..dec_tokens) or 4 (nt in 1..dec_tokens4). Each acc[t][r] gets
     * exactly dot_rows' arithmetic for that (token, row) pair; rows may
     * repeat. pf: NULL, or nr rows to prefetch (as in dot_rows). (optional:
     * NULL means the GEMM path.) */
    void (*dot_tokens)(float acc[][MM_DEC_ROWS], int nt, int nr, const float *const x[],
                       be_dtype dtype, const void *const w[], const void *const pf[], int n);
    int dec_tokens, dec_tokens4; /* the most tokens dot_tokens takes with 2 / 4 rows */
    /* dot_tokens with the tokens two to a vector: acc[t][r] += Σ x_t[i]·w[r][i]
     * for nt <= MM_PAIR_TOKENS tokens × cpu_pair_rows(nt) weight rows of n
     * elements of dtype, x packed as cpu_pack_pairs lays it out; each
     * output with dot_rows' arithmetic; rows may repeat. (optional: NULL
     * means dot_tokens.) */
    void (*dot_pairs)(float acc[][MM_PAIR_ROWS], int nt, const float *xp, be_dtype dtype,
                      const void *const w[], const void *const pf[], int n);
    /* dot_tokens for a quantized weight: acc[t][k] += Σ x[t·ldx + i]·v[k][i]
     * for nt tokens × nr rows (nt <= dec_qtokens; nr = 4 for nt <=
     * dec_qtokens4, else 2), v[k] the values of columns [c0, c0+n) of row rows[k] (a span the
     * dequantiser takes), each decoded once for all tokens, with
     * dot_rows_q's arithmetic per output; rows may repeat. (optional: NULL
     * means the GEMM path.) */
    void (*dot_tokens_q)(float acc[][MM_DEC_ROWS], int nt, int nr, const float *x, size_t ldx,
                         const be_weight *w, const int rows[], int c0, int n);
    int dec_qtokens, dec_qtokens4; /* the most tokens dot_tokens_q takes, with 2 / 4 rows */
    /* o[t][d] += Σ_j p[t][j]·v[j·ldv + d] for MM_BLOCK_TOKENS rows t, n_keys
     * keys j and d < n (attention's P·V for a block of query rows). */
    void (*madd_block)(float *const o[], const float *const p[], const float *v, size_t ldv,
                       int n_keys, int n);
    /* x[i] = x[i]·σ(1.702·x[i]) for n floats (CLIP's quick_gelu), every
     * table with exactly this float32 arithmetic (fma: one rounding), so
     * the tables agree bit for bit:
     *   z = -(1.702f·v), clamped to [-87, 88] (exp(z) stays a normal float;
     *       a NaN z becomes -87, as x86's maxps(z, -87) gives; v keeps the NaN)
     *   n = rint(z·log2e)   (z·1.44269504f rounded, then to nearest, ties even)
     *   r = fma(n, -0.693145752f, z); r = fma(n, -1.42860677e-6f, r)
     *   p = 1/5040; p = fma(p, r, c) for c = 1/720, 1/120, 1/24, 1/6, 1/2, 1, 1
     *   (the constants as float32: the degree-7 Taylor polynomial of e^r)
     *   e = p·2^n (exact: n added to the exponent);  x[i] = v·(1 / (1 + e))
     * Relative error about 1e-7 against the exact function. (optional: NULL
     * means the libm expf formula of ops.c, whose bits differ.) */
    void (*quick_gelu)(float *x, size_t n);
    /* x[i] = gelu_pytorch_tanh(x[i]) = 0.5·v·(1 + tanh(u)) = v·σ(2u),
     * u = √(2/π)·(v + 0.044715·v³) (SigLIP's activation), every table with
     * exactly this float32 arithmetic: t = (v·v)·v; u = fma(0.044715f, t, v);
     * z = -(1.59576912f·u) (2√(2/π)); then quick_gelu's steps from the clamp
     * on. Relative error about 1e-7 against the exact function (torch's own
     * vectorised CPU kernel differs from its scalar one by as much).
     * (optional: NULL means the libm tanhf formula of ops.c.) */
    void (*gelu_tanh)(float *x, size_t n);
    /* out[0..n) = values [c0, c0+n) of a quantized weight's row, as
     * be_dequant_span defines them (bit-identical; backend/quant.h). */
    void (*dequant)(const be_weight *w, int row, int c0, int n, float *out);
} cpu_kernels;

/* The weight rows dot_pairs reduces at once for nt tokens: ceil(nt/2) token
 * pairs × these rows is at most 24 ZMM accumulators. */
static inline int cpu_pair_rows(int nt) {
    return nt <= 4 ? 8 : nt <= 8 ? 6 : 3;
}

/* Packs columns [c0, c0+n) of nt tokens (token t at x + t·ldx) for
 * dot_pairs: for each 8 columns in order, pair p's 16 floats, token 2p's 8
 * then token 2p+1's (a copy of token 2p's when nt is odd); a last partial
 * chunk is zero-padded. xp holds ceil(n/8)·16·ceil(nt/2) floats (matmul.c). */
void cpu_pack_pairs(float *xp, const float *x, size_t ldx, int nt, int c0, int n);

/* Floats cpu_pack_panel writes for n columns of MM_PANEL_ROWS rows. */
static inline size_t cpu_panel_floats(int n) {
    return (size_t)(n + 7) / 8 * 8 * MM_PANEL_ROWS;
}

/* Packs columns [0, n) of MM_PANEL_ROWS weight rows (w[r]: n elements of
 * dtype F32, F16 or BF16, exactly converted to float; rows may repeat) for
 * dot_panel: for each chunk of 8 columns in order, 64 floats: for row pair
 * p = 0..3, row 2p's 8 values then row 2p+1's (so one 16-lane load holds
 * two rows' chunk). A last partial chunk is zero-padded. wp holds
 * cpu_panel_floats(n) floats; k converts (matmul.c). */
void cpu_pack_panel(const cpu_kernels *k, float *wp, be_dtype dtype, const void *const w[], int n);

/* The quick_gelu of kernels.h on one float (kernels_portable.c): the
 * vector tables' tails. */
float cpu_quick_gelu1(float v);
/* The gelu_tanh of kernels.h on one float (kernels_portable.c). */
float cpu_gelu_tanh1(float v);

/* The portable table's `convert` (kernels_portable.c); the vector kernels
 * convert their scalar tails with it too. */
void cpu_convert_portable(float *dst, be_dtype dtype, const void *src, size_t n);

/* The kernel tables, one per instruction set; each getter returns its own
 * table, or NULL when this CPU (or the compiler) cannot run it. */
const cpu_kernels *cpu_kernels_portable(void); /* never NULL */
const cpu_kernels *cpu_kernels_avx2(void);     /* needs AVX2+FMA+F16C */
const cpu_kernels *cpu_kernels_avx512(void);   /* needs AVX2+FMA+F16C and AVX-512F */
const cpu_kernels *cpu_kernels_neon(void);     /* any aarch64 CPU (kernels_neon.c) */
/* The best table this CPU runs (cpu.c): the one init picks. */
const cpu_kernels *cpu_kernels_best(void);

#endif
