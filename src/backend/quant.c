/*
 * quant.c - the meaning of every weight layout, one dequantiser per format
 * (see quant.h; byte layouts in backend.h's be_dtype comments and below).
 *
 * All arithmetic is float32 in the order the format's reference code uses
 * (ggml-quants.c dequantize_row_*: d·sc first, then ·q, then − dmin·m; MLX:
 * s·q + β), so a value here is bit-identical to what the reference produces
 * on its float32 path. Every read is a byte read or a memcpy: mmapped
 * tensors and 18-byte blocks are not aligned.
 */
#include "backend/quant.h"

#include "base/half.h"

#include <string.h>

static const struct {
    const char *name;
    int elems, bytes; /* per block; MLX: 0, 0 (per weight) */
} FORMATS[BE_DTYPE_COUNT] = {
    [BE_F32] = {"F32", 1, 4},       [BE_F16] = {"F16", 1, 2},       [BE_BF16] = {"BF16", 1, 2},
    [BE_MLX] = {"MLX", 0, 0},       [BE_Q8_0] = {"Q8_0", 32, 34},   [BE_Q4_0] = {"Q4_0", 32, 18},
    [BE_Q4_1] = {"Q4_1", 32, 20},   [BE_Q4_K] = {"Q4_K", 256, 144}, [BE_Q5_K] = {"Q5_K", 256, 176},
    [BE_Q6_K] = {"Q6_K", 256, 210},
};

const char *be_dtype_name(be_dtype dt) {
    return (unsigned)dt < BE_DTYPE_COUNT ? FORMATS[dt].name : "?";
}

bool be_dtype_quantized(be_dtype dt) {
    return dt >= BE_MLX && dt < BE_DTYPE_COUNT;
}

int be_block_elems(be_dtype dt) {
    return (unsigned)dt < BE_DTYPE_COUNT ? FORMATS[dt].elems : 0;
}

int be_block_bytes(be_dtype dt) {
    return (unsigned)dt < BE_DTYPE_COUNT ? FORMATS[dt].bytes : 0;
}

static bool mlx_bits_ok(int bits) {
    return bits == 2 || bits == 3 || bits == 4 || bits == 5 || bits == 6 || bits == 8;
}

size_t be_row_bytes(be_dtype dt, int cols, const be_quant *q) {
    if (cols <= 0 || (unsigned)dt >= BE_DTYPE_COUNT) return 0;
    if (dt == BE_MLX) {
        if (!q || !mlx_bits_ok(q->bits) || q->group <= 0 || cols % q->group) return 0;
        if ((size_t)cols * q->bits % 32) return 0; /* rows are whole uint32 words */
        return (size_t)cols * q->bits / 8;
    }
    if (cols % FORMATS[dt].elems) return 0;
    return (size_t)(cols / FORMATS[dt].elems) * FORMATS[dt].bytes;
}

lv_status be_weight_describe(be_weight *w, be_dtype dtype, int rows, int cols, const void *host,
                             const be_quant *q, lv_err *err) {
    if ((unsigned)dtype >= BE_DTYPE_COUNT)
        return lv_fail(err, LV_ERR_UNSUPPORTED, "unknown weight dtype %d", (int)dtype);
    if (rows <= 0 || cols <= 0 || !host)
        return lv_fail(err, LV_ERR_ARG, "bad %s weight (%d x %d, data %p)", be_dtype_name(dtype),
                       rows, cols, host);
    be_quant side = {0};
    if (dtype == BE_MLX) {
        if (!q || !q->scales || !q->biases)
            return lv_fail(err, LV_ERR_ARG, "MLX weight (%d x %d) without scales and biases", rows,
                           cols);
        if (!mlx_bits_ok(q->bits) || (q->group != 32 && q->group != 64 && q->group != 128))
            return lv_fail(err, LV_ERR_UNSUPPORTED,
                           "MLX weight: bits %d / group size %d not supported (bits 2, 3, 4, 5, "
                           "6, 8; group 32, 64, 128)",
                           q->bits, q->group);
        if (q->scale_dtype != BE_F32 && q->scale_dtype != BE_F16 && q->scale_dtype != BE_BF16)
            return lv_fail(err, LV_ERR_UNSUPPORTED, "MLX weight: scales of dtype %s",
                           be_dtype_name(q->scale_dtype));
        side = *q;
    }
    size_t rb = be_row_bytes(dtype, cols, &side);
    if (!rb)
        return lv_fail(err, LV_ERR_ARG, "%s weight: %d columns are not whole blocks of %d",
                       be_dtype_name(dtype), cols,
                       dtype == BE_MLX ? side.group : be_block_elems(dtype));
    *w = (be_weight){.dtype = dtype,
                     .rows = rows,
                     .cols = cols,
                     .row_bytes = rb,
                     .q = side,
                     .data = host,
                     .owned = NULL};
    return LV_OK;
}

int be_span_align(const be_weight *w) {
    return w->dtype == BE_MLX ? w->q.group : be_block_elems(w->dtype);
}

/* ---------------------------------------------------------------------------
 * Scalar helpers
 */

static float f16_at(const unsigned char *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return lv_f16_to_f32(h);
}

float be_plain_at(be_dtype dt, const void *base, size_t i) {
    const unsigned char *p = base;
    if (dt == BE_F32) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return dt == BE_F16 ? lv_f16_to_f32(h) : lv_bf16_to_f32(h);
}

/* ---------------------------------------------------------------------------
 * MLX affine (formats.md §3.5-3.6): codes are a little-endian bit stream per
 * row, element j at bits [j·bits, (j+1)·bits); w = s[j/G]·q + β[j/G].
 */

static uint32_t mlx_code(const unsigned char *row, int bits, int j) {
    size_t pos = (size_t)j * bits, byte = pos >> 3, shift = pos & 7;
    uint32_t v = row[byte];
    if (shift + (size_t)bits > 8) v |= (uint32_t)row[byte + 1] << 8;
    return (v >> shift) & ((1u << bits) - 1);
}

static void dequant_mlx(const be_weight *w, int row, int c0, int n, float *out) {
    const be_quant *q = &w->q;
    const unsigned char *codes = (const unsigned char *)w->data + (size_t)row * w->row_bytes;
    size_t n_groups = (size_t)w->cols / q->group;
    const unsigned char *sc = q->scales, *bi = q->biases;
    for (int g0 = c0; g0 < c0 + n; g0 += q->group) {
        size_t gi = (size_t)row * n_groups + (size_t)(g0 / q->group);
        float s = be_plain_at(q->scale_dtype, sc, gi), b = be_plain_at(q->scale_dtype, bi, gi);
        float *o = out + (g0 - c0);
        if (q->bits == 4) {
            const unsigned char *p = codes + g0 / 2;
            for (int i = 0; i < q->group; i += 2) {
                o[i] = s * (float)(p[i / 2] & 0xF) + b;
                o[i + 1] = s * (float)(p[i / 2] >> 4) + b;
            }
        } else if (q->bits == 8) {
            for (int i = 0; i < q->group; i++) o[i] = s * (float)codes[g0 + i] + b;
        } else {
            for (int i = 0; i < q->group; i++)
                o[i] = s * (float)mlx_code(codes, q->bits, g0 + i) + b;
        }
    }
}

/* ---------------------------------------------------------------------------
 * ggml blocks (formats.md §5). One function per block: 32 or 256 values.
 */

/* Q8_0: f16 d | int8 q[32]. v = q·d */
static void block_q8_0(const unsigned char *b, float *y) {
    float d = f16_at(b);
    for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)b[2 + j] * d;
}

/* Q4_0: f16 d | qs[16], qs[j] = element j (low nibble), element j+16 (high). v = (q − 8)·d */
static void block_q4_0(const unsigned char *b, float *y) {
    float d = f16_at(b);
    const unsigned char *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((qs[j] & 0xF) - 8) * d;
        y[j + 16] = (float)((qs[j] >> 4) - 8) * d;
    }
}

/* Q4_1: f16 d | f16 m | qs[16] as Q4_0. v = q·d + m */
static void block_q4_1(const unsigned char *b, float *y) {
    float d = f16_at(b), m = f16_at(b + 2);
    const unsigned char *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(qs[j] & 0xF) * d + m;
        y[j + 16] = (float)(qs[j] >> 4) * d + m;
    }
}

/* The 6-bit scale and min of sub-block s (0..7) from the 12 packed bytes of a
 * Q4_K/Q5_K block (ggml get_scale_min_k4): s < 4 in the low 6 bits of S[s] and
 * S[s+4]; s >= 4 low 4 bits in S[s+4]'s nibbles, high 2 bits in the top bits
 * of S[s-4] (scale) and S[s] (min). */
void be_k4_scale_min(int s, const unsigned char *S, int *sc, int *m) {
    if (s < 4) {
        *sc = S[s] & 63;
        *m = S[s + 4] & 63;
    } else {
        *sc = (S[s + 4] & 0xF) | ((S[s - 4] >> 6) << 4);
        *m = (S[s + 4] >> 4) | ((S[s] >> 6) << 4);
    }
}

/* Q4_K: f16 d | f16 dmin | scales[12] | qs[128]. Bytes qs[32c..32c+31] hold
 * sub-block 2c in their low nibbles and 2c+1 in their high nibbles.
 * v = (d·sc)·q − dmin·m */
static void block_q4_k(const unsigned char *b, float *y) {
    float d = f16_at(b), dmin = f16_at(b + 2);
    const unsigned char *S = b + 4, *qs = b + 16;
    for (int c = 0; c < 4; c++) {
        int sc0, m0, sc1, m1;
        be_k4_scale_min(2 * c, S, &sc0, &m0);
        be_k4_scale_min(2 * c + 1, S, &sc1, &m1);
        float d0 = d * (float)sc0, dm0 = dmin * (float)m0;
        float d1 = d * (float)sc1, dm1 = dmin * (float)m1;
        for (int l = 0; l < 32; l++) {
            y[64 * c + l] = d0 * (float)(qs[32 * c + l] & 0xF) - dm0;
            y[64 * c + 32 + l] = d1 * (float)(qs[32 * c + l] >> 4) - dm1;
        }
    }
}

/* Q5_K: f16 d | f16 dmin | scales[12] | qh[32] | qs[128]. As Q4_K, plus the
 * fifth bit of element 64c + l in bit 2c of qh[l] and of 64c + 32 + l in bit
 * 2c + 1. v = (d·sc)·q − dmin·m, q in 0..31. */
static void block_q5_k(const unsigned char *b, float *y) {
    float d = f16_at(b), dmin = f16_at(b + 2);
    const unsigned char *S = b + 4, *qh = b + 16, *qs = b + 48;
    for (int c = 0; c < 4; c++) {
        int sc0, m0, sc1, m1;
        be_k4_scale_min(2 * c, S, &sc0, &m0);
        be_k4_scale_min(2 * c + 1, S, &sc1, &m1);
        float d0 = d * (float)sc0, dm0 = dmin * (float)m0;
        float d1 = d * (float)sc1, dm1 = dmin * (float)m1;
        for (int l = 0; l < 32; l++) {
            int lo = (qs[32 * c + l] & 0xF) | ((qh[l] >> (2 * c)) & 1) << 4;
            int hi = (qs[32 * c + l] >> 4) | ((qh[l] >> (2 * c + 1)) & 1) << 4;
            y[64 * c + l] = d0 * (float)lo - dm0;
            y[64 * c + 32 + l] = d1 * (float)hi - dm1;
        }
    }
}

/* Q6_K: ql[128] | qh[64] | int8 scales[16] | f16 d. Each half n (128 values)
 * uses ql[64n..], qh[32n..]; value 128n + 32k + l takes its low 4 bits from
 * ql[64n + l + 32(k&1)] (low nibble for k < 2, high for k >= 2), its high 2
 * bits from qh[32n + l] >> 2k, and scale scales[8n + 2k + l/16].
 * v = (d·scale)·(q − 32) */
static void block_q6_k(const unsigned char *b, float *y) {
    const unsigned char *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = f16_at(b + 208);
    for (int n = 0; n < 2; n++) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4) - 32;
            int q2 = ((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) - 32;
            int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
            int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
            y[l] = d * (float)sc[is] * (float)q1;
            y[l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

typedef void (*block_fn)(const unsigned char *b, float *y);

static const block_fn BLOCKS[BE_DTYPE_COUNT] = {
    [BE_Q8_0] = block_q8_0, [BE_Q4_0] = block_q4_0, [BE_Q4_1] = block_q4_1,
    [BE_Q4_K] = block_q4_k, [BE_Q5_K] = block_q5_k, [BE_Q6_K] = block_q6_k,
};

void be_dequant_span(const be_weight *w, int row, int c0, int n, float *out) {
    const unsigned char *r = (const unsigned char *)w->data + (size_t)row * w->row_bytes;
    switch (w->dtype) {
        case BE_F32:
        case BE_F16:
        case BE_BF16:
            for (int i = 0; i < n; i++) out[i] = be_plain_at(w->dtype, r, (size_t)(c0 + i));
            return;
        case BE_MLX:
            dequant_mlx(w, row, c0, n, out);
            return;
        default: {
            int per = FORMATS[w->dtype].elems, bb = FORMATS[w->dtype].bytes;
            for (int i = 0; i < n; i += per)
                BLOCKS[w->dtype](r + (size_t)((c0 + i) / per) * bb, out + i);
        }
    }
}

void be_dequant_row(const be_weight *w, int row, float *out) {
    be_dequant_span(w, row, 0, w->cols, out);
}
