/*
 * test_qdot.c - the integer path of the CPU backend (backend/cpu/qdot.h):
 * quantized weights × int8-quantized activations.
 *
 * - Repacking moves codes and scales without changing a value: every value
 *   of the packed weight equals be_dequant_row's, for every format, odd
 *   row counts and columns that end a group early.
 * - Every kernel set this machine runs gives the reference kernels' bits
 *   (qdot_portable.c): the quantized activations byte for byte, the lane
 *   sums of dot_block and dot_rows for every token and row count.
 * - The backend's matmul on such a weight: each token's outputs are the same
 *   bits alone or in a batch of any size, on 1 or 3 threads, and equal the
 *   reference's; the error against the exact float path stays within the
 *   bound that int8 rounding allows (see error_bound).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "backend/backend.h"
#include "backend/cpu/cpu.h"
#include "backend/cpu/qdot.h"
#include "backend/quant.h"
#include "base/half.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t g_rng = 88172645463325252ull;

static uint32_t rnd32(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 11);
}

static float rndf(float lo, float hi) {
    return lo + (hi - lo) * (float)(rnd32() & 0xFFFFFF) / (float)0x1000000;
}

static void put_f16(uint8_t *p, float v) {
    uint16_t h = lv_f32_to_f16(v);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

/* One format under test. */
typedef struct {
    be_dtype dtype;
    int bits, group; /* MLX */
    be_dtype scale_dtype;
} fmt_case;

static const fmt_case CASES[] = {
    {BE_Q4_0, 0, 0, 0},       {BE_Q8_0, 0, 0, 0},      {BE_Q4_K, 0, 0, 0},
    {BE_Q6_K, 0, 0, 0},       {BE_MLX, 4, 32, BE_F16}, {BE_MLX, 4, 64, BE_BF16},
    {BE_MLX, 4, 128, BE_F32}, {BE_MLX, 8, 64, BE_F16}, {BE_MLX, 8, 32, BE_BF16},
};

/* A random weight of the case's layout: its bytes (and MLX side arrays). */
typedef struct {
    be_weight w;
    uint8_t *data;
    void *scales, *biases;
} rnd_weight;

static void scale_at(be_dtype dt, void *base, size_t i, float v) {
    if (dt == BE_F32)
        memcpy((float *)base + i, &v, 4);
    else if (dt == BE_F16)
        put_f16((uint8_t *)base + 2 * i, v);
    else {
        uint32_t u;
        memcpy(&u, &v, 4);
        uint16_t b = (uint16_t)(u >> 16);
        memcpy((uint8_t *)base + 2 * i, &b, 2);
    }
}

/* Set: code bytes from {0x00, 0xFF, 0x7F, 0x80} (the largest codes and q: the
 * integer sums that could overflow int16 steps, or saturate vpmaddubsw). */
static bool g_extreme;

static void make_weight(const fmt_case *c, int rows, int cols, rnd_weight *out) {
    memset(out, 0, sizeof *out);
    be_quant q = {.bits = c->bits, .group = c->group, .scale_dtype = c->scale_dtype};
    size_t rb = be_row_bytes(c->dtype, cols, &q);
    assert_true(rb > 0);
    size_t n = rb * (size_t)rows;
    out->data = malloc(n + 1);
    uint8_t *d = out->data + 1; /* unaligned, as mmapped tensors are */
    static const uint8_t ext[4] = {0x00, 0xFF, 0x7F, 0x80};
    for (size_t i = 0; i < n; i++) d[i] = g_extreme ? ext[rnd32() & 3] : (uint8_t)rnd32();
    int bb = be_block_bytes(c->dtype);
    if (c->dtype != BE_MLX) {
        for (size_t b = 0; b < n / (size_t)bb; b++) { /* sane scales: no inf, NaN */
            uint8_t *blk = d + b * (size_t)bb;
            if (c->dtype == BE_Q6_K) {
                put_f16(blk + 208, rndf(0.0005f, 0.01f));
            } else {
                put_f16(blk, rndf(-0.05f, 0.05f));
                if (c->dtype == BE_Q4_K) put_f16(blk + 2, rndf(0.0f, 0.02f));
            }
        }

    } else {
        size_t ng = (size_t)rows * (size_t)(cols / c->group);
        size_t es = c->scale_dtype == BE_F32 ? 4 : 2;
        out->scales = malloc(ng * es);
        out->biases = malloc(ng * es);
        for (size_t i = 0; i < ng; i++) {
            scale_at(c->scale_dtype, out->scales, i, rndf(-0.02f, 0.02f));
            scale_at(c->scale_dtype, out->biases, i, rndf(-0.1f, 0.1f));
        }
        q.scales = out->scales;
        q.biases = out->biases;
    }
    lv_err err;
    assert_int_equal(
        be_weight_describe(&out->w, c->dtype, rows, cols, d, c->dtype == BE_MLX ? &q : NULL, &err),
        LV_OK);
}

static void free_weight(rnd_weight *r) {
    free(r->data);
    free(r->scales);
    free(r->biases);
}

static const char *case_name(const fmt_case *c, char *buf, size_t n) {
    if (c->dtype == BE_MLX)
        snprintf(buf, n, "MLX%d/g%d/%s", c->bits, c->group, be_dtype_name(c->scale_dtype));
    else
        snprintf(buf, n, "%s", be_dtype_name(c->dtype));
    return buf;
}

static int col_step(const fmt_case *c) {
    return c->dtype == BE_MLX ? c->group : be_block_elems(c->dtype);
}

/* Columns to try: one block, a group that ends early, several groups + a partial one. */
static void cols_for(const fmt_case *c, int out[3]) {
    int s = col_step(c);
    out[0] = s;
    out[1] = s * (s >= 256 ? 3 : 5);
    out[2] = s >= 256 ? 256 * 9 : (1536 + s) / s * s;
}

static void pack_keeps_values(void **state) {
    for (size_t ci = 0; ci < LV_ARRAY_LEN(CASES); ci++) {
        int colsv[3];
        cols_for(&CASES[ci], colsv);
        for (int k = 0; k < 3; k++) {
            rnd_weight rw;
            int rows = 5 + 2 * k, cols = colsv[k];
            make_weight(&CASES[ci], rows, cols, &rw);
            qk_weight pk;
            lv_err err;
            assert_int_equal(qk_pack_alloc(&pk, &rw.w, &err), LV_OK);
            qk_pack_rows(&pk, &rw.w, 0, rows);
            float *row = malloc(sizeof(float) * (size_t)cols);
            for (int r = 0; r < rows; r++) {
                be_dequant_row(&rw.w, r, row);
                for (int c = 0; c < cols; c++) {
                    float v = qk_value(&pk, r, c);
                    if (memcmp(&v, &row[c], 4) != 0) {
                        char nm[64];
                        fail_msg("%s %dx%d: value (%d, %d) packed %.9g, dequantized %.9g",
                                 case_name(&CASES[ci], nm, sizeof nm), rows, cols, r, c, v, row[c]);
                    }
                }
            }
            free(row);
            qk_free(&pk);
            free_weight(&rw);
        }
    }
    lv_err err;
    qk_weight pk;
    rnd_weight rw;
    fmt_case q41 = {BE_Q4_1, 0, 0, 0};
    make_weight(&q41, 2, 64, &rw);
    assert_int_equal(qk_pack_alloc(&pk, &rw.w, &err), LV_ERR_UNSUPPORTED);
    free_weight(&rw);
}

/* Activation rows that exercise the quantizer: random, zeros, one spike,
 * tiny values, halves that round to even. */
static void fill_x(float *x, int n, int cols) {
    for (int t = 0; t < n; t++) {
        float *r = x + (size_t)t * cols;
        for (int c = 0; c < cols; c++) r[c] = rndf(-2.0f, 2.0f);
        switch (t % 5) {
            case 1:
                memset(r, 0, sizeof(float) * (size_t)cols);
                break;
            case 2:
                r[cols / 3] = 300.0f;
                break;
            case 3:
                for (int c = 0; c < cols; c++) r[c] *= 1e-30f;
                break;
            case 4:
                for (int c = 0; c < cols && c < 32; c++) r[c] = (float)(c - 16) * 0.5f;
                r[0] = 127.0f; /* d = 1: codes are the values, x.5 ties round to even */
                break;
            default:
                break;
        }
        if (t % 6 == 5) /* every code ±127 */
            for (int c = 0; c < cols; c++) r[c] = rnd32() & 1 ? 1.0f : -1.0f;
    }
}

static const qk_kernels *tables(int i) {
    const qk_kernels *all[] = {qk_kernels_portable(), qk_kernels_avx2(), qk_kernels_avx512(),
                               qk_kernels_avx2_novnni(), qk_kernels_neon()};
    return i < 5 ? all[i] : NULL;
}

static void kernels_match_reference(void **state) {
    const qk_kernels *ref = qk_kernels_portable();
    for (size_t ci = 0; ci < LV_ARRAY_LEN(CASES); ci++) {
        int colsv[3];
        cols_for(&CASES[ci], colsv);
        for (int k = 0; k < 4; k++) { /* k = 3: extreme codes */
            int rows = 11, cols = colsv[k % 3], n = 6;
            g_extreme = k == 3;
            rnd_weight rw;
            make_weight(&CASES[ci], rows, cols, &rw);
            g_extreme = false;
            qk_weight pk;
            lv_err err;
            assert_int_equal(qk_pack_alloc(&pk, &rw.w, &err), LV_OK);
            qk_pack_rows(&pk, &rw.w, 0, rows);
            float *x = malloc(sizeof(float) * (size_t)n * cols);
            fill_x(x, n, cols);
            size_t xrb = qk_xrow_bytes(&pk);
            uint8_t *xq_ref = aligned_alloc(64, (size_t)n * xrb);
            uint8_t *xq = aligned_alloc(64, (size_t)n * xrb);
            for (int t = 0; t < n; t++) ref->quantize(&pk, x + (size_t)t * cols, xq_ref + t * xrb);
            char nm[64];
            case_name(&CASES[ci], nm, sizeof nm);
            uint8_t *unpacked[QK_MAX_R + 1];
            for (int r = 0; r <= QK_MAX_R; r++)
                unpacked[r] = aligned_alloc(64, (size_t)pk.n_groups * pk.group);
            for (int ti = 1; ti < 5; ti++) {
                const qk_kernels *kt = tables(ti);
                if (!kt) continue;
                memset(xq, 0xA5, (size_t)n * xrb);
                for (int t = 0; t < n; t++) kt->quantize(&pk, x + (size_t)t * cols, xq + t * xrb);
                if (memcmp(xq, xq_ref, (size_t)n * xrb) != 0)
                    fail_msg("%s %s cols %d: quantized activations differ from the reference", nm,
                             kt->isa, cols);
                const uint8_t *xs[QK_MAX_T];
                for (int nt = 1; nt <= QK_MAX_T; nt++)
                    for (int nr = 1; nr <= QK_MAX_R; nr++) {
                        int rws[QK_MAX_R];
                        for (int r = 0; r < nr; r++) rws[r] = (r * 3 + nt) % rows;
                        for (int t = 0; t < nt; t++) xs[t] = xq_ref + (size_t)((t + nr) % n) * xrb;
                        float a[QK_MAX_T][QK_MAX_R][QK_LANES], b[QK_MAX_T][QK_MAX_R][QK_LANES];
                        for (int i = 0; i < QK_MAX_T * QK_MAX_R * QK_LANES; i++)
                            (&a[0][0][0])[i] = (&b[0][0][0])[i] = rndf(-1, 1);
                        int g0 = pk.n_groups > 1 ? 1 : 0; /* a slice, continuing sums */
                        const uint8_t *codes[QK_MAX_R];
                        for (int r = 0; r < nr; r++) {
                            ref->unpack(&pk, rws[r], g0, pk.n_groups, unpacked[r]);
                            if (!kt->unpack) { /* its dot_block reads the packed codes */
                                codes[r] = unpacked[r];
                                continue;
                            }
                            kt->unpack(&pk, rws[r], g0, pk.n_groups, unpacked[QK_MAX_R]);
                            if (memcmp(unpacked[r], unpacked[QK_MAX_R],
                                       (size_t)(pk.n_groups - g0) * pk.group))
                                fail_msg("%s %s cols %d: unpack differs (row %d)", nm, kt->isa,
                                         cols, rws[r]);
                            codes[r] = unpacked[r];
                        }
                        ref->dot_block(a, nt, nr, xs, &pk, rws, codes, g0, pk.n_groups);
                        kt->dot_block(b, nt, nr, xs, &pk, rws, codes, g0, pk.n_groups);
                        for (int t = 0; t < nt; t++)
                            for (int r = 0; r < nr; r++)
                                if (memcmp(a[t][r], b[t][r], sizeof a[t][r]))
                                    fail_msg("%s %s cols %d: dot_block (%d tokens, %d rows) "
                                             "differs at [%d][%d]",
                                             nm, kt->isa, cols, nt, nr, t, r);
                    }
                for (int nr = 1; nr <= QK_GEMV_R; nr++) {
                    int rws[QK_GEMV_R], pf[QK_GEMV_R];
                    for (int r = 0; r < nr; r++) {
                        rws[r] = (r * 5 + 1) % rows;
                        pf[r] = (r + 2) % rows;
                    }
                    float a[QK_GEMV_R][QK_LANES], b[QK_GEMV_R][QK_LANES];
                    ref->dot_rows(a, nr, xq_ref + (size_t)(nr % n) * xrb, &pk, rws, NULL);
                    kt->dot_rows(b, nr, xq_ref + (size_t)(nr % n) * xrb, &pk, rws,
                                 nr % 2 ? pf : NULL);
                    for (int r = 0; r < nr; r++)
                        if (memcmp(a[r], b[r], sizeof a[r]))
                            fail_msg("%s %s cols %d: dot_rows (%d rows) differs at row %d", nm,
                                     kt->isa, cols, nr, r);
                }
            }
            for (int r = 0; r <= QK_MAX_R; r++) free(unpacked[r]);
            free(xq);
            free(xq_ref);
            free(x);
            qk_free(&pk);
            free_weight(&rw);
        }
    }
}

/* The exact path's error bound for one output: each activation x_i becomes
 * q_i·d with |x_i − q_i·d| ≤ d/2 (round to nearest; d = amax/127 of its
 * 32-block, so |x·id| ≤ 127 and no clamping loses more), hence
 * |Σ w_i x_i − Σ w_i q_i d| ≤ Σ_blocks d_b/2 · Σ_{i∈b} |w_i|. The float
 * arithmetic of both paths adds a few ulps of Σ |w_i x_i|: 1e-5 of it
 * covers 4096-long sums of float32 roundings with room. */
static double error_bound(const float *w, const float *x, int cols) {
    double b = 0, mag = 0;
    for (int c0 = 0; c0 < cols; c0 += 32) {
        float amax = 0;
        double wsum = 0;
        for (int i = c0; i < c0 + 32; i++) {
            amax = fmaxf(amax, fabsf(x[i]));
            wsum += fabs(w[i]);
            mag += fabs((double)w[i] * x[i]);
        }
        b += (double)(amax / 127.0f) / 2 * wsum;
    }
    return 1.0001 * b + 1e-5 * mag + 1e-30;
}

static void matmul_batch_invariant_and_bounded(void **state) {
    static const int ns[] = {1, 2, 5, 17};
    for (int setup = 0; setup < 6; setup++) { /* best, portable, AVX2 kernels; 1 and 3 threads */
        be b = {.ops = &be_cpu_ops};
        be ex = {.ops = &be_cpu_ops, .exact = true};
        lv_err err;
        int threads = setup % 2 ? 3 : 1;
        assert_int_equal(b.ops->init(&b, threads, &err), LV_OK);
        assert_int_equal(ex.ops->init(&ex, threads, &err), LV_OK);
        if (setup >= 4 && !qk_kernels_avx2()) {
            b.ops->deinit(&b);
            ex.ops->deinit(&ex);
            continue;
        }
        if (setup >= 2) cpu_ctx_of(&b)->qk = setup >= 4 ? qk_kernels_avx2() : qk_kernels_portable();
        for (size_t ci = 0; ci < LV_ARRAY_LEN(CASES); ci++) {
            char nm[64];
            case_name(&CASES[ci], nm, sizeof nm);
            int colsv[3];
            cols_for(&CASES[ci], colsv);
            /* and SmolVLM's 576 (2 lanes after a whole group: a tail, qk_prep),
             * 3 lanes after 3 groups (5 rows a tail row, 37 rows), and after 7
             * (Q8_0: a 32-row tile too large to copy padded, so gemm_tail) */
            for (int ck = 0; ck < 4; ck++) {
                if (ck && col_step(&CASES[ci]) != 32) continue;
                int rows = 37, nmax = 17;
                int cols = ck == 0 ? colsv[2] : ck == 1 ? 576 : ck == 2 ? 1632 : 3680;
                rnd_weight rw;
                make_weight(&CASES[ci], rows, cols, &rw);
                be_weight w, we;
                assert_int_equal(b.ops->weight_init(&b, &w, rw.w.dtype, rows, cols, rw.w.data,
                                                    rw.w.dtype == BE_MLX ? &rw.w.q : NULL, &err),
                                 LV_OK);
                assert_non_null(w.prep);
                assert_int_equal(ex.ops->weight_init(&ex, &we, rw.w.dtype, rows, cols, rw.w.data,
                                                     rw.w.dtype == BE_MLX ? &rw.w.q : NULL, &err),
                                 LV_OK);
                assert_null(we.prep);
                float *x = malloc(sizeof(float) * (size_t)nmax * cols);
                fill_x(x, nmax, cols);
                float *bias = malloc(sizeof(float) * rows);
                for (int r = 0; r < rows; r++) bias[r] = rndf(-1, 1);
                float *alone = malloc(sizeof(float) * (size_t)nmax * rows);
                float *y = malloc(sizeof(float) * (size_t)nmax * rows);
                float *yx = malloc(sizeof(float) * (size_t)nmax * rows);
                for (int t = 0; t < nmax; t++)
                    b.ops->matmul(&b, alone + (size_t)t * rows, x + (size_t)t * cols, &w, bias, 1);
                /* the reference: portable kernels on the weight packed whole
                 * (the backend's may have its last lanes in a tail: qdot.h) */
                const qk_kernels *ref = qk_kernels_portable();
                qk_weight whole;
                assert_int_equal(qk_pack_alloc(&whole, &rw.w, &err), LV_OK);
                qk_pack_rows(&whole, &rw.w, 0, rows);
                const qk_weight *pk = &whole;
                uint8_t *xq = aligned_alloc(64, qk_xrow_bytes(pk));
                for (int t = 0; t < nmax; t++) {
                    ref->quantize(pk, x + (size_t)t * cols, xq);
                    for (int r = 0; r < rows; r++) {
                        float acc[QK_GEMV_R][QK_LANES];
                        int one[1] = {r};
                        ref->dot_rows(acc, 1, xq, pk, one, NULL);
                        float want = bias[r] + qk_sum16(acc[0]);
                        if (memcmp(&want, &alone[(size_t)t * rows + r], 4))
                            fail_msg("%s: token %d row %d: %.9g, the reference %.9g", nm, t, r,
                                     alone[(size_t)t * rows + r], want);
                    }
                }
                free(xq);
                qk_free(&whole);
                /* matmul_multi: the same bits as its matmuls (here one weight twice) */
                b.ops->matmul_multi(&b, (float *const[]){y, y + rows}, x,
                                    (const be_weight *const[]){&w, &w},
                                    (const float *const[]){bias, NULL}, 2, 1);
                b.ops->matmul(&b, yx, x, &w, NULL, 1);
                if (memcmp(y, alone, sizeof(float) * rows) ||
                    memcmp(y + rows, yx, sizeof(float) * rows))
                    fail_msg("%s cols %d: matmul_multi differs from matmul", nm, cols);
                for (size_t k = 0; k < LV_ARRAY_LEN(ns); k++) {
                    int n = ns[k];
                    b.ops->matmul(&b, y, x, &w, bias, n);
                    if (memcmp(y, alone, sizeof(float) * (size_t)n * rows))
                        fail_msg("%s cols %d [%d threads, %s]: a batch of %d differs from its "
                                 "tokens alone",
                                 nm, cols, threads, cpu_ctx_of(&b)->qk->isa, n);
                }
                ex.ops->matmul(&ex, yx, x, &we, bias, nmax);
                float *wrow = malloc(sizeof(float) * (size_t)cols);
                double worst = 0;
                for (int r = 0; r < rows; r++) {
                    be_dequant_row(&rw.w, r, wrow);
                    for (int t = 0; t < nmax; t++) {
                        double d = fabs((double)y[(size_t)t * rows + r] - yx[(size_t)t * rows + r]);
                        double bound = error_bound(wrow, x + (size_t)t * cols, cols);
                        if (!(d <= bound))
                            fail_msg("%s: token %d row %d: |fast - exact| = %.3g > bound %.3g", nm,
                                     t, r, d, bound);
                        if (d / bound > worst) worst = d / bound;
                    }
                }
                if (setup == 0)
                    printf("    %-16s cols %4d worst error / bound %.3f\n", nm, cols, worst);
                free(wrow);
                free(x);
                free(bias);
                free(alone);
                free(y);
                free(yx);
                b.ops->weight_free(&b, &w);
                ex.ops->weight_free(&ex, &we);
                free_weight(&rw);
            }
        }
        b.ops->deinit(&b);
        ex.ops->deinit(&ex);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pack_keeps_values),
        cmocka_unit_test(kernels_match_reference),
        cmocka_unit_test(matmul_batch_invariant_and_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
