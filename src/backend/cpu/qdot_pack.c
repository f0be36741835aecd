/*
 * qdot_pack.c - repacks a quantized weight into the lane layout of qdot.h,
 * once at load, and reads it back (qk_value, qk_lane_scales: the reference
 * kernels and the tests).
 *
 * The codes and scales are moved, never re-quantized: every value of the
 * packed weight is the value be_dequant_row gives (tests/test_qdot.c).
 */
#include "backend/cpu/qdot.h"
#include "backend/quant.h"
#include "base/half.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

qk_format qk_format_for(be_dtype dtype, const be_quant *q) {
    switch (dtype) {
        case BE_Q4_0:
            return QK_Q4_0;
        case BE_Q8_0:
            return QK_Q8_0;
        case BE_Q4_K:
            return QK_Q4_K;
        case BE_Q6_K:
            return QK_Q6_K;
        case BE_MLX:
            return !q ? QK_NONE : q->bits == 4 ? QK_MLX4 : q->bits == 8 ? QK_MLX8 : QK_NONE;
        default:
            return QK_NONE;
    }
}

static uint16_t u16_at(const uint8_t *p) {
    return (uint16_t)(p[0] | p[1] << 8);
}

/* The layout sizes of fmt for a weight of cols columns (qdot.h). */
static void describe(qk_weight *w, qk_format fmt, int rows, int cols, int mlx_group) {
    *w = (qk_weight){.fmt = fmt, .rows = rows, .cols = cols, .mlx_group = mlx_group};
    w->lane = fmt == QK_Q6_K ? 16 : 32;
    w->group = QK_LANES * w->lane;
    w->n_groups = (cols + w->group - 1) / w->group;
    w->code_bytes = fmt == QK_Q6_K ? 192 : qk_fmt_eight_bit(fmt) ? w->group : w->group / 2;
    switch (fmt) {
        case QK_Q4_0:
        case QK_Q8_0:
            w->side_bytes = 2 * QK_LANES;
            break;
        case QK_Q4_K:
            w->side_bytes = 8 + 2 * QK_LANES;
            break;
        case QK_Q6_K:
            w->side_bytes = QK_LANES + 2;
            break;
        default:
            w->side_bytes = 2 * 4 * (w->group / mlx_group);
            break;
    }
    w->offset = fmt == QK_Q4_0 ? 8 : fmt == QK_Q8_0 ? 128 : fmt == QK_Q6_K ? 32 : 0;
    w->affine = qk_fmt_affine(fmt);
    w->group_bytes = (size_t)w->code_bytes + (size_t)w->side_bytes;
    w->row_bytes = (size_t)w->n_groups * w->group_bytes;
}

/* The codes (unsigned, offset included) of the `lane` values starting at
 * column c0 of row r of the original weight; c0 < cols, whole lanes. */
static void lane_codes(const be_weight *src, const qk_weight *w, int r, int c0, uint8_t *code) {
    const uint8_t *row = (const uint8_t *)src->data + (size_t)r * src->row_bytes;
    switch (w->fmt) {
        case QK_Q4_0: {
            const uint8_t *qs = row + (size_t)(c0 / 32) * 18 + 2;
            for (int j = 0; j < 16; j++) {
                code[j] = qs[j] & 0xF;
                code[j + 16] = qs[j] >> 4;
            }
            return;
        }
        case QK_Q8_0: {
            const uint8_t *qs = row + (size_t)(c0 / 32) * 34 + 2;
            for (int j = 0; j < 32; j++) code[j] = (uint8_t)(qs[j] ^ 0x80); /* q + 128 */
            return;
        }
        case QK_Q4_K: {
            const uint8_t *b = row + (size_t)(c0 / 256) * 144;
            int s = (c0 % 256) / 32;
            const uint8_t *qs = b + 16 + 32 * (s / 2);
            for (int j = 0; j < 32; j++) code[j] = s % 2 ? qs[j] >> 4 : qs[j] & 0xF;
            return;
        }
        case QK_Q6_K: {
            const uint8_t *b = row + (size_t)(c0 / 256) * 210;
            int v = c0 % 256, n = v / 128, k = (v % 128) / 32, l0 = v % 32;
            const uint8_t *ql = b + 64 * n + 32 * (k & 1), *qh = b + 128 + 32 * n;
            for (int j = 0; j < 16; j++) {
                int l = l0 + j;
                int lo = k < 2 ? ql[l] & 0xF : ql[l] >> 4;
                code[j] = (uint8_t)(lo | ((qh[l] >> (2 * k)) & 3) << 4);
            }
            return;
        }
        case QK_MLX4:
            for (int j = 0; j < 32; j += 2) {
                uint8_t b = row[(c0 + j) / 2];
                code[j] = b & 0xF;
                code[j + 1] = b >> 4;
            }
            return;
        case QK_MLX8:
            memcpy(code, row + c0, 32);
            return;
        default:
            return;
    }
}

/* The side bytes of group g of row r (qdot.h), from the original weight. */
static void group_side(const be_weight *src, const qk_weight *w, int r, int g, uint8_t *side) {
    const uint8_t *row = (const uint8_t *)src->data + (size_t)r * src->row_bytes;
    memset(side, 0, (size_t)w->side_bytes);
    int c_group = g * w->group;
    switch (w->fmt) {
        case QK_Q4_0:
        case QK_Q8_0: {
            int bb = w->fmt == QK_Q4_0 ? 18 : 34;
            for (int l = 0; l < QK_LANES && c_group + 32 * l < w->cols; l++)
                memcpy(side + 2 * l, row + (size_t)(c_group / 32 + l) * bb, 2);
            return;
        }
        case QK_Q4_K:
            for (int h = 0; h < 2 && c_group + 256 * h < w->cols; h++) {
                const uint8_t *b = row + (size_t)(c_group / 256 + h) * 144;
                memcpy(side + 2 * h, b, 2);         /* d */
                memcpy(side + 4 + 2 * h, b + 2, 2); /* dmin */
                for (int s = 0; s < 8; s++) {
                    int sc, m;
                    be_k4_scale_min(s, b + 4, &sc, &m);
                    side[8 + 8 * h + s] = (uint8_t)sc;
                    side[8 + 16 + 8 * h + s] = (uint8_t)m;
                }
            }
            return;
        case QK_Q6_K: {
            const uint8_t *b = row + (size_t)(c_group / 256) * 210;
            memcpy(side, b + 192, 16);     /* int8 scales, one per 16 values = per lane */
            memcpy(side + 16, b + 208, 2); /* d */
            return;
        }
        default: { /* MLX: float s[n], β[n] */
            int n = w->group / w->mlx_group;
            size_t per_row = (size_t)w->cols / w->mlx_group;
            float *s = (float *)(void *)side, *bt = s + n;
            for (int i = 0; i < n && c_group + i * w->mlx_group < w->cols; i++) {
                size_t gi = (size_t)r * per_row + (size_t)(c_group / w->mlx_group + i);
                float sv = be_plain_at(src->q.scale_dtype, src->q.scales, gi);
                float bv = be_plain_at(src->q.scale_dtype, src->q.biases, gi);
                memcpy(s + i, &sv, 4);
                memcpy(bt + i, &bv, 4);
            }
            return;
        }
    }
}

/* Lane codes c (lane values) to their steps at `at` (a group's codes + 4·lane). */
static void put_lane(const qk_weight *w, uint8_t *at, const uint8_t *c, bool eight, bool six) {
    if (eight) {
        for (int k = 0; k < 8; k++) memcpy(at + 64 * k, c + 4 * k, 4);
        return;
    }
    for (int p = 0; p < w->lane / 8; p++)
        for (int e = 0; e < 4; e++)
            at[64 * p + e] = (uint8_t)((c[8 * p + e] & 0xF) | (c[8 * p + 4 + e] & 0xF) << 4);
    if (six)
        for (int e = 0; e < 4; e++)
            at[128 + e] = (uint8_t)((c[e] >> 4) | (c[4 + e] >> 4) << 2 | (c[8 + e] >> 4) << 4 |
                                    (c[12 + e] >> 4) << 6);
}

/* Row r of src into its packed row: lane by lane, each lane's codes moved
 * four at a time to their steps (no per-value branches: a 7B model is 4·10⁹
 * values, repacked at every load). */
static void pack_row(const be_weight *src, const qk_weight *w, int r) {
    uint8_t *dst = w->data + (size_t)r * w->row_bytes;
    if (w->cols % w->group) /* padded lanes: zero codes (the rest is all written) */
        memset(dst + (size_t)(w->n_groups - 1) * w->group_bytes, 0, w->group_bytes);
    bool eight = qk_fmt_eight_bit(w->fmt), six = w->fmt == QK_Q6_K;
    for (int g = 0; g < w->n_groups; g++) {
        uint8_t *codes = dst + (size_t)g * w->group_bytes;
        for (int l = 0; l < QK_LANES; l++) {
            int c0 = g * w->group + l * w->lane;
            if (c0 >= w->cols) break;
            uint8_t c[32];
            lane_codes(src, w, r, c0, c);
            put_lane(w, codes + 4 * l, c, eight, six);
        }
        group_side(src, w, r, g, codes + w->code_bytes);
    }
}

/* Tail row v of p (qk_prep in qdot.h): lane j holds lane j % T of the
 * ragged last group of row vP + j / T, its scale 1; the real scales go to
 * tail_ws. Q4_0 / Q8_0 only. */
static void pack_tail_row(const be_weight *src, qk_prep *p, int v) {
    const qk_weight *w = &p->tail;
    int T = p->tail_lanes, P = p->tail_per, bb = w->fmt == QK_Q4_0 ? 18 : 34;
    int c_tail = p->main.n_groups * p->main.group;
    uint8_t *codes = w->data + (size_t)v * w->row_bytes;
    memset(codes, 0, w->row_bytes);
    for (int j = 0; j < P * T; j++) {
        int r = v * P + j / T, l = j % T;
        if (r >= src->rows) break;
        int c0 = c_tail + 32 * l;
        uint8_t c[32];
        lane_codes(src, w, r, c0, c);
        put_lane(w, codes + 4 * j, c, qk_fmt_eight_bit(w->fmt), false);
        const uint8_t *blk = (const uint8_t *)src->data + (size_t)r * src->row_bytes +
                             (size_t)(c0 / 32) * (size_t)bb;
        p->tail_ws[(size_t)v * QK_LANES + j] = lv_f16_to_f32(u16_at(blk));
        uint16_t one = 0x3C00; /* f16 1.0 */
        memcpy(codes + w->code_bytes + 2 * j, &one, 2);
    }
}

lv_status qk_prep_alloc(qk_prep *out, const be_weight *w, lv_err *err) {
    *out = (qk_prep){0};
    lv_status st = qk_pack_alloc(&out->main, w, err);
    if (st) return st;
    qk_weight *m = &out->main;
    describe(&out->full, m->fmt, w->rows, w->cols, m->mlx_group);
    int G = w->cols / m->group, T = (w->cols - G * m->group) / 32;
    if ((m->fmt != QK_Q4_0 && m->fmt != QK_Q8_0) || G < 1 || T < 1 || w->cols % 32) return LV_OK;
    /* split: main keeps the G whole groups, tail the T lanes of each row */
    qk_free(m);
    int P = QK_LANES / T, vrows = (w->rows + P - 1) / P;
    be_weight mw = *w, tw = *w;
    mw.cols = G * 512;
    tw.rows = vrows;
    tw.cols = P * T * 32;
    if ((st = qk_pack_alloc(&out->main, &mw, err))) return st;
    out->tail_lanes = T;
    out->tail_per = P;
    out->tail_ws = calloc((size_t)vrows * QK_LANES, sizeof(float));
    if (!out->tail_ws || (st = qk_pack_alloc(&out->tail, &tw, err))) {
        qk_prep_free(out);
        return st ? st : lv_fail(err, LV_ERR_NOMEM, "out of memory repacking a weight");
    }
    return LV_OK;
}

void qk_prep_rows(qk_prep *out, const be_weight *w, int r0, int r1) {
    qk_pack_rows(&out->main, w, r0, r1);
    if (!out->tail.data) return;
    int P = out->tail_per;
    for (int v = (r0 + P - 1) / P; v * P < r1; v++) pack_tail_row(w, out, v);
}

void qk_prep_free(qk_prep *p) {
    if (p->main.data) qk_free(&p->main);
    if (p->tail.data) qk_free(&p->tail);
    free(p->tail_ws);
    *p = (qk_prep){0};
}

/* Large weights get their own mapping, 2 MiB aligned and marked for huge
 * pages: a 7B model is 4 GiB streamed once per token, which 4 KiB pages
 * would make a million page faults at load and a TLB miss every 4 KiB at
 * decode. Small ones come from malloc. */
static uint8_t *alloc_weight(qk_weight *w, size_t bytes) {
    enum { HUGE = 2u << 20 };
    w->map = NULL;
    if (bytes < HUGE) return aligned_alloc(64, (bytes + 63) / 64 * 64);
    size_t n = (bytes + HUGE - 1) / HUGE * HUGE + HUGE;
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    uintptr_t a = ((uintptr_t)p + HUGE - 1) & ~(uintptr_t)(HUGE - 1);
#ifdef MADV_HUGEPAGE
    (void)madvise((void *)a, n - (a - (uintptr_t)p), MADV_HUGEPAGE);
#endif
    w->map = p;
    w->map_bytes = n;
    return (uint8_t *)a;
}

lv_status qk_pack_alloc(qk_weight *out, const be_weight *w, lv_err *err) {
    qk_format fmt = qk_format_for(w->dtype, &w->q);
    if (fmt == QK_NONE)
        return lv_fail(err, LV_ERR_UNSUPPORTED, "no integer path for %s weights",
                       be_dtype_name(w->dtype));
    describe(out, fmt, w->rows, w->cols, w->dtype == BE_MLX ? w->q.group : 0);
    size_t bytes = (size_t)w->rows * out->row_bytes;
    out->data = alloc_weight(out, bytes);
    if (!out->data)
        return lv_fail(err, LV_ERR_NOMEM, "out of memory repacking a %d x %d %s weight", w->rows,
                       w->cols, be_dtype_name(w->dtype));
    return LV_OK;
}

void qk_pack_rows(qk_weight *out, const be_weight *w, int r0, int r1) {
    for (int r = r0; r < r1; r++) pack_row(w, out, r);
}

void qk_free(qk_weight *w) {
    if (w->map)
        munmap(w->map, w->map_bytes);
    else
        free(w->data);
    *w = (qk_weight){0};
}

void qk_lane_scales(const qk_weight *w, int r, int g, float ws[QK_LANES], float wm[QK_LANES]) {
    const uint8_t *side =
        w->data + (size_t)r * w->row_bytes + (size_t)g * w->group_bytes + (size_t)w->code_bytes;
    for (int l = 0; l < QK_LANES; l++) {
        switch (w->fmt) {
            case QK_Q4_0:
            case QK_Q8_0:
                ws[l] = lv_f16_to_f32(u16_at(side + 2 * l));
                wm[l] = 0.0f;
                break;
            case QK_Q4_K: {
                float d = lv_f16_to_f32(u16_at(side + 2 * (l / 8)));
                float dmin = lv_f16_to_f32(u16_at(side + 4 + 2 * (l / 8)));
                ws[l] = d * (float)side[8 + l];
                wm[l] = -(dmin * (float)side[24 + l]);
                break;
            }
            case QK_Q6_K:
                ws[l] = lv_f16_to_f32(u16_at(side + 16)) * (float)(int8_t)side[l];
                wm[l] = 0.0f;
                break;
            default: {
                int n = w->group / w->mlx_group, i = l * 32 / w->mlx_group;
                memcpy(&ws[l], side + 4 * i, 4);
                memcpy(&wm[l], side + 4 * (n + i), 4);
                break;
            }
        }
    }
}

float qk_value(const qk_weight *w, int row, int col) {
    int g = col / w->group, l = (col % w->group) / w->lane, j = col % w->lane;
    int k = j / 4, e = j % 4;
    const uint8_t *codes = w->data + (size_t)row * w->row_bytes + (size_t)g * w->group_bytes;
    int code;
    if (qk_fmt_eight_bit(w->fmt)) {
        code = codes[k * 64 + l * 4 + e];
    } else {
        code = (codes[(k / 2) * 64 + l * 4 + e] >> (4 * (k & 1))) & 0xF;
        if (w->fmt == QK_Q6_K) code |= ((codes[128 + l * 4 + e] >> (2 * k)) & 3) << 4;
    }
    float ws[QK_LANES], wm[QK_LANES];
    qk_lane_scales(w, row, g, ws, wm);
    if (w->affine) return ws[l] * (float)code + wm[l];
    return (float)(code - w->offset) * ws[l];
}
