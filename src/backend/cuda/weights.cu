/*
 * weights.cu - weight_init / weight_free of the CUDA backend: every be_dtype
 * into one of the device layouts of cuda_weights.cuh, uploaded once at load
 * and never again.
 *
 *   F16, BF16              as they are (CW_F16, CW_BF16)
 *   Q4_0, Q4_1, Q4_K, MLX4 CW_Q4: the codes as they are, s and m per 32
 *   Q8_0, Q6_K, MLX8       CW_Q8: codes made unsigned, s and m per 16
 *   F32, Q5_K, MLX 2/3/5/6 CW_F16 (values rounded to half, saturating)
 * In exact mode (be.exact) every weight is CW_F32, its values exactly as
 * be_dequant_row (backend/quant.c) defines them.
 *
 * s and m are half. They are exact for Q4_0 (d, −8d), Q4_1 (d, m), Q8_0
 * (d, −128d) and MLX with f16 scales; for Q4_K (d·sc, −dmin·m), Q6_K (d·sc)
 * and MLX with bf16/f32 scales they are rounded to half once, the same size
 * of error as the half rounding of every weight value on the tensor cores
 * (tests/cuda/test_cuda_ops.c bounds both against the exact path).
 */
#include "backend/cuda/cuda_weights.cuh"

#include <math.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend/quant.h"
#include "base/half.h"
}

static inline uint16_t half_bits_sat(float f) {
    if (f > 65504.0f) f = 65504.0f;
    if (f < -65504.0f) f = -65504.0f;
    return lv_f32_to_f16(f); /* NaN stays NaN */
}

/* The host image of a weight in its device layout. */
typedef struct {
    cu_weight cw;
    unsigned char *data; /* rows_pad × row bytes */
    uint16_t *sm;        /* (s, m) half bits, rows_pad × groups × 2 */
    size_t data_bytes, sm_bytes;
} host_image;

static cw_kind kind_for(be_dtype dt, const be_quant *q, bool exact) {
    if (exact) return CW_F32;
    switch (dt) {
        case BE_F16:
            return CW_F16;
        case BE_BF16:
            return CW_BF16;
        case BE_Q4_0:
        case BE_Q4_1:
        case BE_Q4_K:
            return CW_Q4;
        case BE_Q8_0:
        case BE_Q6_K:
            return CW_Q8;
        case BE_MLX:
            return q->bits == 4 ? CW_Q4 : q->bits == 8 ? CW_Q8 : CW_F16;
        default:
            return CW_F16;
    }
}

static size_t elem_bytes(cw_kind k) {
    return k == CW_F32 ? 4 : 2;
}

/* Row r of a plain layout from be_dequant_row. */
static void fill_plain_row(host_image *im, const be_weight *w, int r, float *tmp) {
    be_dequant_row(w, r, tmp);
    if (im->cw.kind == CW_F32) {
        memcpy(im->data + (size_t)r * im->cw.ld * 4, tmp, (size_t)w->cols * 4);
        return;
    }
    uint16_t *o = (uint16_t *)(im->data + (size_t)r * im->cw.ld * 2);
    if (im->cw.kind == CW_BF16) /* only a BF16 source: exact */
        for (int i = 0; i < w->cols; i++) o[i] = lv_f32_to_bf16(tmp[i]);
    else
        for (int i = 0; i < w->cols; i++) o[i] = half_bits_sat(tmp[i]);
}

static inline void put_sm(uint16_t *sm, float s, float m) {
    sm[0] = half_bits_sat(s);
    sm[1] = half_bits_sat(m);
}

/* Row r's (s, m) of an MLX weight, one pair per `group` values of the device
 * layout (a divisor of the MLX group: its pair repeated). */
static void put_mlx_groups(uint16_t *sm, const be_weight *w, int r, int group) {
    int G = w->q.group;
    size_t ng = (size_t)w->cols / G;
    for (int g = 0; g < w->cols / group; g++) {
        size_t gi = (size_t)r * ng + (size_t)(g * group / G);
        put_sm(sm + 2 * g, be_plain_at(w->q.scale_dtype, w->q.scales, gi),
               be_plain_at(w->q.scale_dtype, w->q.biases, gi));
    }
}

/* Row r of CW_Q4: codes (cols/2 bytes) and (s, m) per 32. */
static void fill_q4_row(host_image *im, const be_weight *w, int r) {
    const unsigned char *src = (const unsigned char *)w->data + (size_t)r * w->row_bytes;
    unsigned char *codes = im->data + (size_t)r * (im->cw.ld / 2);
    uint16_t *sm = im->sm + (size_t)r * (im->cw.ld / CU_Q4_GROUP) * 2;
    int nb = w->cols / 32;
    switch (w->dtype) {
        case BE_Q4_0:
        case BE_Q4_1:
            for (int b = 0; b < nb; b++) {
                const unsigned char *blk = src + (size_t)b * (w->dtype == BE_Q4_0 ? 18 : 20);
                float d = be_plain_at(BE_F16, blk, 0);
                const unsigned char *qs = blk + (w->dtype == BE_Q4_0 ? 2 : 4);
                /* block element j is qs[j] low (j < 16) or qs[j-16] high */
                for (int i = 0; i < 16; i++) {
                    int lo = 2 * i, hi = 2 * i + 1;
                    int ql = lo < 16 ? qs[lo] & 15 : qs[lo - 16] >> 4;
                    int qh = hi < 16 ? qs[hi] & 15 : qs[hi - 16] >> 4;
                    codes[16 * b + i] = (unsigned char)(ql | qh << 4);
                }
                if (w->dtype == BE_Q4_0)
                    put_sm(sm + 2 * b, d, -8.0f * d);
                else
                    put_sm(sm + 2 * b, d, be_plain_at(BE_F16, blk + 2, 0));
            }
            return;
        case BE_Q4_K:
            for (int sb = 0; sb < w->cols / 256; sb++) {
                const unsigned char *blk = src + (size_t)sb * 144;
                float d = be_plain_at(BE_F16, blk, 0), dmin = be_plain_at(BE_F16, blk + 2, 0);
                const unsigned char *S = blk + 4, *qs = blk + 16;
                for (int s = 0; s < 8; s++) {
                    int sc, mn;
                    be_k4_scale_min(s, S, &sc, &mn);
                    /* sub-block s: nibble (s & 1) of qs[32(s/2) + l] */
                    const unsigned char *q = qs + 32 * (s / 2);
                    unsigned char *o = codes + 128 * sb + 16 * s;
                    for (int i = 0; i < 16; i++) {
                        int a = (s & 1) ? q[2 * i] >> 4 : q[2 * i] & 15;
                        int c = (s & 1) ? q[2 * i + 1] >> 4 : q[2 * i + 1] & 15;
                        o[i] = (unsigned char)(a | c << 4);
                    }
                    put_sm(sm + 2 * (8 * sb + s), d * (float)sc, -(dmin * (float)mn));
                }
            }
            return;
        default: { /* BE_MLX, 4 bits: the codes are already in our order */
            memcpy(codes, src, (size_t)w->cols / 2);
            put_mlx_groups(sm, w, r, CU_Q4_GROUP);
        }
    }
}

/* Row r of CW_Q8: codes (cols bytes) and (s, m) per 16. */
static void fill_q8_row(host_image *im, const be_weight *w, int r) {
    const unsigned char *src = (const unsigned char *)w->data + (size_t)r * w->row_bytes;
    unsigned char *codes = im->data + (size_t)r * im->cw.ld;
    uint16_t *sm = im->sm + (size_t)r * (im->cw.ld / CU_Q8_GROUP) * 2;
    switch (w->dtype) {
        case BE_Q8_0:
            for (int b = 0; b < w->cols / 32; b++) {
                const unsigned char *blk = src + (size_t)b * 34;
                float d = be_plain_at(BE_F16, blk, 0);
                for (int j = 0; j < 32; j++) codes[32 * b + j] = (unsigned char)(blk[2 + j] ^ 0x80);
                put_sm(sm + 4 * b, d, -128.0f * d);
                put_sm(sm + 4 * b + 2, d, -128.0f * d);
            }
            return;
        case BE_Q6_K:
            for (int sb = 0; sb < w->cols / 256; sb++) {
                const unsigned char *ql = src + (size_t)sb * 210, *qh = ql + 128;
                const signed char *sc = (const signed char *)(ql + 192);
                float d = be_plain_at(BE_F16, ql + 208, 0);
                unsigned char *o = codes + 256 * sb;
                for (int n = 0; n < 2; n++) {
                    for (int l = 0; l < 32; l++) {
                        o[l] = (unsigned char)((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4);
                        o[l + 32] = (unsigned char)((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4);
                        o[l + 64] = (unsigned char)((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4);
                        o[l + 96] = (unsigned char)((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4);
                    }
                    /* value 128n + 16j uses scale sc[8n + j] (j = 0..7) */
                    for (int j = 0; j < 8; j++) {
                        float s = d * (float)sc[8 * n + j];
                        uint16_t *p = sm + 2 * (16 * sb + 8 * n + j);
                        p[0] = half_bits_sat(s);
                        /* m = −32·s with s as stored, so s·q + m = s·(q − 32) exactly */
                        p[1] = half_bits_sat(-32.0f * lv_f16_to_f32(p[0]));
                    }
                    o += 128;
                    ql += 64;
                    qh += 32;
                }
            }
            return;
        default: { /* BE_MLX, 8 bits */
            memcpy(codes, src, (size_t)w->cols);
            put_mlx_groups(sm, w, r, CU_Q8_GROUP);
        }
    }
}

static lv_status build_image(host_image *im, const be_weight *w, bool exact, lv_err *err) {
    memset(im, 0, sizeof *im);
    cu_weight *cw = &im->cw;
    cw->kind = kind_for(w->dtype, &w->q, exact);
    cw->rows = w->rows;
    cw->cols = w->cols;
    cw->ld = cu_round_up(w->cols, CU_KPAD);
    cw->rows_pad = cu_round_up(w->rows, CU_RPAD);
    size_t rows = (size_t)cw->rows_pad;
    switch (cw->kind) {
        case CW_Q4:
            im->data_bytes = rows * (cw->ld / 2);
            im->sm_bytes = rows * (cw->ld / CU_Q4_GROUP) * 4;
            break;
        case CW_Q8:
            im->data_bytes = rows * cw->ld;
            im->sm_bytes = rows * (cw->ld / CU_Q8_GROUP) * 4;
            break;
        default:
            im->data_bytes = rows * cw->ld * elem_bytes(cw->kind);
    }
    im->data = (unsigned char *)calloc(1, im->data_bytes);
    im->sm = im->sm_bytes ? (uint16_t *)calloc(1, im->sm_bytes) : NULL;
    float *tmp = (float *)malloc((size_t)w->cols * sizeof *tmp);
    if (!im->data || (im->sm_bytes && !im->sm) || !tmp) {
        free(im->data);
        free(im->sm);
        free(tmp);
        return lv_fail(err, LV_ERR_NOMEM, "out of host memory preparing a %d x %d weight", w->rows,
                       w->cols);
    }
    for (int r = 0; r < w->rows; r++) {
        if (cw->kind == CW_Q4)
            fill_q4_row(im, w, r);
        else if (cw->kind == CW_Q8)
            fill_q8_row(im, w, r);
        else
            fill_plain_row(im, w, r, tmp);
    }
    free(tmp);
    return LV_OK;
}

lv_status cu_weight_init(be *b, be_weight *w, be_dtype dtype, int rows, int cols, const void *host,
                         const be_quant *q, lv_err *err) {
    lv_status st = be_weight_describe(w, dtype, rows, cols, host, q, err);
    if (st) return st;
    cu_ctx *c = cu_of(b);
    host_image im;
    if ((st = build_image(&im, w, c->exact, err))) return st;
    cu_weight *cw = (cu_weight *)calloc(1, sizeof *cw);
    if (!cw) {
        free(im.data);
        free(im.sm);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    }
    *cw = im.cw;
    cw->bytes = im.data_bytes + im.sm_bytes;
    cudaSetDevice(c->device);
    void *dev = NULL;
    cudaError_t e = cudaMalloc(&dev, cw->bytes);
    if (e == cudaSuccess) e = cudaMemcpy(dev, im.data, im.data_bytes, cudaMemcpyHostToDevice);
    if (e == cudaSuccess && im.sm_bytes)
        e = cudaMemcpy((char *)dev + im.data_bytes, im.sm, im.sm_bytes, cudaMemcpyHostToDevice);
    free(im.data);
    free(im.sm);
    if (e != cudaSuccess) {
        cudaGetLastError();
        if (dev) cudaFree(dev);
        double mb = cw->bytes / 1e6;
        free(cw);
        return lv_fail(err, e == cudaErrorMemoryAllocation ? LV_ERR_NOMEM : LV_ERR_DEVICE,
                       "cuda:%d: a %d x %d weight (%.1f MB on the device): %s", c->device, rows,
                       cols, mb, cudaGetErrorString(e));
    }
    cw->data = dev;
    cw->sm = im.sm_bytes ? (__half2 *)((char *)dev + im.data_bytes) : NULL;
    w->prep = cw;
    return LV_OK;
}

void cu_weight_free(be *b, be_weight *w) {
    cu_weight *cw = (cu_weight *)w->prep;
    if (cw) {
        cudaSetDevice(cu_of(b)->device);
        cudaFree(cw->data);
        free(cw);
    }
    free(w->owned);
    memset(w, 0, sizeof *w);
}
