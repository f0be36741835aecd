/*
 * qdot.h - the integer path of the CPU backend: quantized weights times
 * int8-quantized activations with integer dot products.
 *
 * The float path (matmul.c) dequantizes a quantized weight to float32 and
 * multiplies with float FMAs, which makes INT4 decode and every prefill
 * compute-bound. This path instead quantizes each activation row to int8
 * (one scale per 32 values, as ggml's Q8_0) and reduces codes × int8 with
 * integer dot products (AVX-512 VNNI vpdpbusd, AVX2 vpmaddubsw, NEON sdot),
 * applying the float scales once per lane of 16 or 32 values. It is the
 * default for the weight formats below; exact mode (be.exact) keeps the
 * float path. Its error against the float path is bounded by
 * tests/test_qdot.c; its arithmetic is defined here, exactly, so that every
 * kernel set gives the same bits and a token's outputs never depend on the
 * batch it is in.
 *
 * Weights are repacked once at load (qdot_pack.c) into "lanes": a row is cut
 * into groups of QK_LANES lanes × `lane` consecutive values (lane = 32, or
 * 16 for Q6_K whose scales cover 16 values), the last group zero-padded.
 * Within a group, a "step" k holds values 4k..4k+3 of every lane, 4 bytes per
 * lane, lanes in order: a 64-byte vector whose 16 int32 lanes are the 16
 * lanes of the group, which is what vpdpbusd accumulates into. Lane l of
 * the integer accumulator thus sums exactly one lane's values, and the
 * scales are applied per lane once per group. Per group, in this order:
 *
 *   codes  4-bit formats (Q4_0, Q4_K, MLX4): lane/8 vectors of 64 bytes;
 *          vector p holds step 2p in its low nibbles and step 2p+1 in its
 *          high nibbles. 8-bit formats (Q8_0 as q + 128, MLX8): lane/4
 *          vectors, one per step. Q6_K: its low 4 bits as the 4-bit layout
 *          (2 vectors), then one vector whose byte b holds bits 4..5 of step
 *          k's byte b in bits 2k..2k+1.
 *   side   the scales: Q4_0, Q8_0: f16 d[16] (one per lane). Q4_K: f16 d[2],
 *          f16 dmin[2] (the two super-blocks of 8 lanes), u8 sc[16], u8 m[16].
 *          Q6_K: int8 sc[16], f16 d. MLX: float s[n], float β[n], n =
 *          16·32/group (one per MLX group; lanes share them).
 *
 * Each lane has a float scale ws and, for the affine formats, a float min
 * wm, such that its values are ws·(code − offset) + wm exactly as the
 * format defines them (backend/quant.c):
 *   Q4_0  ws = d, offset 8           Q8_0  ws = d, offset 128
 *   Q6_K  ws = d·sc, offset 32       Q4_K  ws = d·sc, wm = −(dmin·m)
 *   MLX   ws = s, wm = β
 * (d·sc and dmin·m are exact in float32: an 11-bit mantissa times ≤ 8 bits.)
 *
 * Activations: a token's row x is cut into blocks of 32 values; each block
 * gets d = amax/127 (float32 division), id = d ? 1/d : 0, and int8 codes
 * q = rint(x·id) (round half to even), stored in the weight's lane layout
 * (group by group, step-major). Per lane: dx = its block's d, and S = Σ q
 * over the lane; the x side of a group stores dx[16] and either corr[16] =
 * offset·S (int32, the offset formats) or xs[16] = dx·S (float32, affine).
 * Padding beyond the row has q = 0, d = 0.
 *
 * The arithmetic of one output y[t][r] (the reference, qdot_portable.c):
 *   acc[0..16) = +0
 *   for each group in order, for each lane l:
 *       i = Σ code·q over the lane (exact int32) − corr[l]    (offset formats)
 *       acc[l] = fma((float)i, ws[l]·dx[l], acc[l])           (ws·dx rounded once)
 *       acc[l] = fma(wm[l], xs[l], acc[l])                    (affine formats)
 *   y = (bias or 0) + qk_sum16(acc)
 * with qk_sum16 the halving tree below. Every kernel set reproduces it
 * bit for bit (|i| < 2^21, so (float)i is exact).
 */
#ifndef LV_CPU_QDOT_H
#define LV_CPU_QDOT_H

#include "backend/backend.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { QK_LANES = 16, QK_BLOCK = 32 };

typedef enum {
    QK_NONE = 0,
    QK_Q4_0,
    QK_Q8_0,
    QK_Q4_K,
    QK_Q6_K,
    QK_MLX4,
    QK_MLX8,
    QK_FORMAT_COUNT
} qk_format;

/* A weight in lanes: the CPU backend's prepared form (be_weight.prep). */
typedef struct {
    qk_format fmt;
    int rows, cols;
    int lane;           /* values per lane: 32, or 16 for Q6_K */
    int group;          /* values per group: QK_LANES · lane */
    int n_groups;       /* per row: ceil(cols / group) */
    int code_bytes;     /* per group */
    int side_bytes;     /* per group */
    int offset;         /* subtracted in integers: 8, 128, 32; 0 for the affine formats */
    bool affine;        /* lanes have a min wm (Q4_K, MLX) */
    int mlx_group;      /* MLX: values per scale (32, 64, 128) */
    size_t group_bytes; /* code_bytes + side_bytes */
    size_t row_bytes;   /* n_groups · group_bytes */
    uint8_t *data;      /* rows · row_bytes, 64-byte aligned (2 MiB for large weights) */
    void *map;          /* the anonymous mapping data lies in (qk_free), or NULL: malloc'd */
    size_t map_bytes;
} qk_weight;

/* The x side of one group of a quantized activation row. */
typedef struct {
    float dx[QK_LANES];
    union {
        int32_t corr[QK_LANES]; /* offset formats: offset · S */
        float xs[QK_LANES];     /* affine formats: dx · S */
    };
} qk_xside;

/* Bytes of one quantized activation row for w: per group the codes
 * (group bytes) then a qk_xside. */
static inline size_t qk_xgroup_bytes(const qk_weight *w) {
    return (size_t)w->group + sizeof(qk_xside);
}
static inline size_t qk_xrow_bytes(const qk_weight *w) {
    return (size_t)w->n_groups * qk_xgroup_bytes(w);
}

/* What a format's codes are: a byte each (Q8_0 as q + 128, MLX8), and
 * whether its lanes carry a min wm (the affine formats). */
static inline bool qk_fmt_eight_bit(qk_format F) {
    return F == QK_Q8_0 || F == QK_MLX8;
}
static inline bool qk_fmt_affine(qk_format F) {
    return F == QK_Q4_K || F == QK_MLX4 || F == QK_MLX8;
}

/* Asks for group g of row r of w ahead of its use (the GEMVs' prefetch). */
static inline void qk_prefetch_group(const qk_weight *w, int r, int g) {
    const uint8_t *p = w->data + (size_t)r * w->row_bytes + (size_t)g * w->group_bytes;
    for (size_t o = 0; o < w->group_bytes; o += 64) __builtin_prefetch(p + o, 0, 3);
}

/* The x side of lane l once its codes are stored: dx = d, and corr = offset·S
 * or xs = d·S (S: the lane's code sum). Every quantize kernel ends a lane so. */
static inline void qk_xside_set(const qk_weight *w, qk_xside *side, int l, float d, int32_t S) {
    side->dx[l] = d;
    if (w->affine)
        side->xs[l] = d * (float)S;
    else
        side->corr[l] = w->offset * S;
}

/* Lane l of group g past the row's end: zero codes, zero x side. True when
 * it was (the kernel then skips the lane). */
static inline bool qk_xlane_pad(const qk_weight *w, uint8_t *codes, qk_xside *side, int g, int l) {
    if (g * w->group + l * w->lane < w->cols) return false;
    for (int k = 0; k < w->lane / 4; k++) memset(codes + 64 * k + 4 * l, 0, 4);
    side->dx[l] = 0.0f;
    side->corr[l] = 0;
    return true;
}

/* The format the integer path takes for a weight of dtype (MLX: of q->bits),
 * or QK_NONE (it stays on the float path). */
qk_format qk_format_for(be_dtype dtype, const be_quant *q);

/* Repacking w (described, borrowed host data) into *out (qdot_pack.c):
 * qk_pack_alloc sizes and allocates it (LV_ERR_NOMEM; LV_ERR_UNSUPPORTED
 * when qk_format_for gives QK_NONE), then qk_pack_rows fills rows [r0, r1)
 * (threads may fill disjoint ranges at once). */
lv_status qk_pack_alloc(qk_weight *out, const be_weight *w, lv_err *err);
void qk_pack_rows(qk_weight *out, const be_weight *w, int r0, int r1);
void qk_free(qk_weight *w);

/*
 * The CPU backend's prepared weight (be_weight.prep): the lanes above, with
 * a row's ragged last group moved out when that saves memory traffic.
 *
 * A Q4_0 / Q8_0 weight whose cols is not a multiple of the group (512) pads
 * its last group to 16 lanes: at 576 columns (SmolVLM-256M) every row would
 * read and multiply 1024 values for 576. Such a weight is kept as `main`,
 * the first G = cols / 512 whole groups, and `tail`, the T = (cols − 512G)
 * / 32 last lanes of every row, P = 16 / T rows packed side by side into
 * one 16-lane row of tail (virtual row v, lane j: row vP + j / T, lane
 * j % T), with every lane scale set to 1 (the real ones in tail_ws). The
 * activations' tail is quantized as the same T blocks repeated P times
 * with every dx set to 1, so a tail lane's accumulator is (float) of its
 * exact integer sum i (corr included), and the caller folds it in as the
 * reference folds a last group: acc[l] = fma(i, ws·dx, acc[l]) with the
 * lane's own scales (ws from tail_ws; dx kept beside the quantized row,
 * repeated as the lanes are). The padding lanes the reference folds are
 * +0 · 0 and change nothing, so every output keeps the bits of the padded
 * layout.
 */
typedef struct {
    qk_weight main; /* every weight; without a tail, the whole of it */
    qk_weight tail; /* data NULL: no tail */
    qk_weight full; /* the whole weight's layout (no data): its activations' */
    int tail_lanes; /* T, lanes per row in tail */
    int tail_per;   /* P, rows per tail row */
    float *tail_ws; /* lane scales as the tail rows hold their lanes: 16 a tail row */
} qk_prep;

/* The prepared form of w (cpu backend): qk_prep_alloc sizes and allocates
 * it, qk_prep_rows fills rows [r0, r1) and the tail rows that start there
 * (threads may fill disjoint ranges at once), qk_prep_free frees it. */
lv_status qk_prep_alloc(qk_prep *out, const be_weight *w, lv_err *err);
void qk_prep_rows(qk_prep *out, const be_weight *w, int r0, int r1);
void qk_prep_free(qk_prep *p);

/* Value (row, col) of a packed weight as ws·(code − offset) + wm: equal to
 * be_dequant_row's value (tests). */
float qk_value(const qk_weight *w, int row, int col);

/* Lane scales of group g of row r: ws[16] and (affine) wm[16], as floats. */
void qk_lane_scales(const qk_weight *w, int r, int g, float ws[QK_LANES], float wm[QK_LANES]);

/* The halving tree: (a[l] + a[l+8]) for l < 8, then + the next half, ... */
static inline float qk_sum16(const float a[QK_LANES]) {
    float h8[8], h4[4], h2[2];
    for (int i = 0; i < 8; i++) h8[i] = a[i] + a[i + 8];
    for (int i = 0; i < 4; i++) h4[i] = h8[i] + h8[i + 4];
    for (int i = 0; i < 2; i++) h2[i] = h4[i] + h4[i + 2];
    return h2[0] + h2[1];
}

/* Kernels, one table per instruction set (qdot_portable.c is the reference). */
enum { QK_MAX_T = 4, QK_MAX_R = 4, QK_GEMV_R = 8 };
typedef struct {
    const char *isa;
    /* Quantizes one activation row of w->cols floats into xq (qk_xrow_bytes). */
    void (*quantize)(const qk_weight *w, const float *x, uint8_t *xq);
    /* The codes of groups [g0, g1) of row r as bytes, step by step (64 bytes
     * a step, lanes in order, 4 codes each: the layout vpdpbusd takes):
     * w->group bytes per group into dst. (optional: NULL means dot_block
     * reads the packed codes itself, and its codes[] are NULL.) */
    void (*unpack)(const qk_weight *w, int r, int g0, int g1, uint8_t *dst);
    /* acc[t][r][16] += the lane sums of groups [g0, g1) for nt <= QK_MAX_T tokens (xq[t]:
     * their quantized rows) × nr <= QK_MAX_R rows (rows[r]), whose codes come unpacked
     * in codes[r] (from group g0 on, as unpack writes them): the reference's per-lane
     * arithmetic, continued from acc. */
    void (*dot_block)(float acc[][QK_MAX_R][QK_LANES], int nt, int nr, const uint8_t *const xq[],
                      const qk_weight *w, const int rows[], const uint8_t *const codes[], int g0,
                      int g1);
    /* acc[r][16] = the lane sums of all groups for one token × nr <= QK_GEMV_R rows (from 0);
     * pf: the next rows to prefetch as it goes (NULL, or nr row indices). */
    void (*dot_rows)(float acc[][QK_LANES], int nr, const uint8_t *xq, const qk_weight *w,
                     const int rows[], const int *pf);
    /* y[i] = (bias ? bias[i] : 0) + qk_sum16(acc[i]) for n outputs: the last
     * step of every output. (optional: NULL means qk_sum16 in C.) */
    void (*finish)(float *y, const float (*acc)[QK_LANES], const float *bias, int n);
} qk_kernels;

const qk_kernels *qk_kernels_portable(void);    /* never NULL */
const qk_kernels *qk_kernels_avx512(void);      /* AVX-512F/BW/VL + VNNI, else NULL */
const qk_kernels *qk_kernels_avx2(void);        /* AVX2 (+ AVX-VNNI when present), else NULL */
const qk_kernels *qk_kernels_avx2_novnni(void); /* the same without AVX-VNNI (tests), else NULL */
const qk_kernels *qk_kernels_neon(void); /* any aarch64 CPU (sdot where present), else NULL */
/* The integer kernels that go with a float table's isa name ("avx512" ...). */
const qk_kernels *qk_kernels_for(const char *isa);

#endif
