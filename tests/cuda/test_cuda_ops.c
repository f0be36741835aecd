/* test_cuda_ops.c - the CUDA backend's ops against the scalar reference
 * (backend/ref.c) on random inputs: matmul over every weight layout, in the
 * fast (tensor-core) and exact modes; batch invariance of matmul, bit for
 * bit; the small ops; embed_rows; device faults and bad input. Skips when
 * the machine has no CUDA device (ctest cuda_ops; make test-cuda). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "backend/backend.h"
#include "backend/quant.h"
#include "base/half.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static be g_fast, g_exact, g_ref;
static bool g_have;

static uint64_t g_rng = 0x243f6a8885a308d3u;
static uint64_t rnd(void) {
    return tu_splitmix64(&g_rng);
}
static float rnd_float(float lo, float hi) {
    return lo + (hi - lo) * (float)((rnd() >> 40) * (1.0 / 16777216.0));
}
static float *rnd_floats(size_t n, float lo, float hi) {
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) v[i] = rnd_float(lo, hi);
    return v;
}

static int setup(void **state) {
    lv_err err = {{0}};
    g_fast = (be){.ops = be_find("cuda")};
    g_exact = (be){.ops = be_find("cuda"), .exact = true};
    g_ref = (be){.ops = &be_ref_ops};
    if (!g_fast.ops) return 0;
    if (g_fast.ops->init(&g_fast, 0, &err) != LV_OK) {
        printf("    no CUDA device: %s\n", err.msg);
        return 0;
    }
    if (g_exact.ops->init(&g_exact, 0, &err) != LV_OK) fail_msg("%s", err.msg);
    g_ref.ops->init(&g_ref, 1, &err);
    g_have = true;
    return 0;
}

static int teardown(void **state) {
    if (!g_have) return 0;
    g_fast.ops->deinit(&g_fast);
    g_exact.ops->deinit(&g_exact);
    return 0;
}

#define NEED_DEVICE()                                                                              \
    do {                                                                                           \
        if (!g_have) skip();                                                                       \
    } while (0)

/* Device copies of host floats, and back. */
static float *up(be *b, const float *h, size_t n) {
    float *d = b->ops->alloc(b, n * sizeof *d);
    assert_non_null(d);
    b->ops->upload(b, d, h, n * sizeof *d);
    return d;
}
static float *down(be *b, const float *d, size_t n) {
    float *h = malloc(n * sizeof *h);
    assert_non_null(h);
    b->ops->download(b, h, d, n * sizeof *h);
    return h;
}
/* A device buffer of n floats, poisoned (NaN) so an unwritten output shows. */
static float *poisoned(be *b, size_t n) {
    float *h = malloc(n * sizeof *h);
    assert_non_null(h);
    uint32_t nan = 0x7fc0dead;
    for (size_t i = 0; i < n; i++) memcpy(&h[i], &nan, 4);
    float *d = up(b, h, n);
    free(h);
    return d;
}

static double rel_err(const float *got, const float *want, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        if (isnan(got[i])) return INFINITY;
        num += d * d;
        den += (double)want[i] * want[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static void check_status(be *b) {
    lv_err err = {{0}};
    if (b->ops->status(b, &err) != LV_OK) fail_msg("device fault: %s", err.msg);
}

/* ---- weights ---------------------------------------------------------------- */

/* A random normal half of magnitude in [2^-9, 2^-4), either sign. */
static uint16_t rnd_scale_half(void) {
    return (uint16_t)((rnd() & 1) << 15 | (6 + rnd() % 5) << 10 | (rnd() & 0x3ff));
}

typedef struct {
    be_dtype dt;
    int bits, group;
    be_dtype scale_dtype;
} wspec;

typedef struct {
    unsigned char *data, *scales; /* malloc'd */
    be_quant q;
} hweight;

/* Random host bytes of a rows × cols weight of spec s: plain values in
 * [-1, 1), random codes with sane scales for the quantized layouts. */
static void rnd_weight(hweight *w, const wspec *s, int rows, int cols) {
    memset(w, 0, sizeof *w);
    be_quant q = {.bits = s->bits, .group = s->group, .scale_dtype = s->scale_dtype};
    size_t rb = be_row_bytes(s->dt, cols, &q), n = rb * rows;
    assert_true(rb > 0);
    unsigned char *p = malloc(n);
    assert_non_null(p);
    if (s->dt == BE_F32 || s->dt == BE_F16 || s->dt == BE_BF16) {
        for (size_t i = 0; i < (size_t)rows * cols; i++) {
            float f = rnd_float(-1, 1);
            if (s->dt == BE_F32)
                memcpy(p + 4 * i, &f, 4);
            else {
                uint16_t h = s->dt == BE_F16 ? lv_f32_to_f16(f) : lv_f32_to_bf16(f);
                memcpy(p + 2 * i, &h, 2);
            }
        }
    } else {
        for (size_t i = 0; i < n; i++) p[i] = (unsigned char)rnd();
    }
    if (s->dt == BE_MLX) {
        size_t ng = (size_t)rows * (cols / s->group);
        size_t es = s->scale_dtype == BE_F32 ? 4 : 2;
        unsigned char *sb = malloc(2 * ng * es);
        assert_non_null(sb);
        for (size_t i = 0; i < 2 * ng; i++) {
            float f = lv_f16_to_f32(rnd_scale_half());
            if (es == 4)
                memcpy(sb + 4 * i, &f, 4);
            else {
                uint16_t h = s->scale_dtype == BE_F16 ? lv_f32_to_f16(f) : lv_f32_to_bf16(f);
                memcpy(sb + 2 * i, &h, 2);
            }
        }
        q.scales = sb;
        q.biases = sb + ng * es;
        w->scales = sb;
    } else if (be_dtype_quantized(s->dt)) {
        int bb = be_block_bytes(s->dt);
        for (size_t b = 0; b < n / bb; b++) {
            unsigned char *blk = p + b * bb;
            uint16_t h1 = rnd_scale_half(), h2 = rnd_scale_half();
            if (s->dt == BE_Q6_K) {
                memcpy(blk + 208, &h1, 2);
            } else {
                memcpy(blk, &h1, 2);
                if (s->dt == BE_Q4_1 || s->dt == BE_Q4_K || s->dt == BE_Q5_K)
                    memcpy(blk + 2, &h2, 2);
            }
        }
    }
    w->data = p;
    w->q = q;
}

static void free_hweight(hweight *w) {
    free(w->data);
    free(w->scales);
}

static const wspec SPECS[] = {
    {BE_F32, 0, 0, 0},       {BE_F16, 0, 0, 0},         {BE_BF16, 0, 0, 0},
    {BE_Q4_0, 0, 0, 0},      {BE_Q4_1, 0, 0, 0},        {BE_Q4_K, 0, 0, 0},
    {BE_Q5_K, 0, 0, 0},      {BE_Q8_0, 0, 0, 0},        {BE_Q6_K, 0, 0, 0},
    {BE_MLX, 4, 64, BE_F16}, {BE_MLX, 4, 128, BE_BF16}, {BE_MLX, 8, 32, BE_F16},
    {BE_MLX, 8, 64, BE_F32}, {BE_MLX, 3, 64, BE_F16},
};

static const char *spec_name(const wspec *s, char *buf, size_t len) {
    if (s->dt == BE_MLX)
        snprintf(buf, len, "MLX%d/g%d/%s", s->bits, s->group, be_dtype_name(s->scale_dtype));
    else
        snprintf(buf, len, "%s", be_dtype_name(s->dt));
    return buf;
}

/* y of the ref backend (double sums over the exact values). */
static float *ref_matmul(const hweight *hw, const wspec *s, int rows, int cols, const float *x,
                         const float *bias, int n) {
    be_weight w;
    lv_err err = {{0}};
    if (g_ref.ops->weight_init(&g_ref, &w, s->dt, rows, cols, hw->data,
                               s->dt == BE_MLX ? &hw->q : NULL, &err))
        fail_msg("%s", err.msg);
    float *y = malloc((size_t)n * rows * sizeof *y);
    assert_non_null(y);
    g_ref.ops->matmul(&g_ref, y, x, &w, bias, n);
    g_ref.ops->weight_free(&g_ref, &w);
    return y;
}

static float *dev_matmul(be *b, const be_weight *w, const float *x, const float *bias, int n) {
    int rows = w->rows, cols = w->cols;
    float *dx = up(b, x, (size_t)n * cols), *dy = poisoned(b, (size_t)n * rows);
    float *db = bias ? up(b, bias, rows) : NULL;
    b->ops->matmul(b, dy, dx, w, db, n);
    float *y = down(b, dy, (size_t)n * rows);
    check_status(b);
    b->ops->release(b, dx);
    b->ops->release(b, dy);
    b->ops->release(b, db);
    return y;
}

/* Fast and exact matmul against ref for one layout and shape, then the
 * fast path's batch invariance: rows computed alone, in fives and in the
 * whole batch are the same bits. */
static void check_layout(const wspec *s, int rows, int cols, int n) {
    char name[64];
    spec_name(s, name, sizeof name);
    hweight hw;
    rnd_weight(&hw, s, rows, cols);
    float *x = rnd_floats((size_t)n * cols, -2, 2), *bias = rnd_floats(rows, -1, 1);
    float *want = ref_matmul(&hw, s, rows, cols, x, bias, n);
    be *bs[2] = {&g_fast, &g_exact};
    double err[2];
    float *fast = NULL;
    for (int e = 0; e < 2; e++) {
        be_weight w;
        lv_err le = {{0}};
        if (bs[e]->ops->weight_init(bs[e], &w, s->dt, rows, cols, hw.data,
                                    s->dt == BE_MLX ? &hw.q : NULL, &le))
            fail_msg("%s: %s", name, le.msg);
        float *y = dev_matmul(bs[e], &w, x, bias, n);
        err[e] = rel_err(y, want, (size_t)n * rows);
        if (e == 0) {
            fast = y;
            /* invariance: alone, and in a batch of up to 5 starting anywhere */
            for (int i0 = 0; i0 < n; i0 += 7) {
                int m = i0 % 2 ? 1 : (n - i0 < 5 ? n - i0 : 5);
                float *part = dev_matmul(bs[e], &w, x + (size_t)i0 * cols, bias, m);
                if (memcmp(part, fast + (size_t)i0 * rows, (size_t)m * rows * 4) != 0)
                    fail_msg("%s %dx%d: rows %d..%d in a batch of %d differ from the batch of %d",
                             name, rows, cols, i0, i0 + m - 1, m, n);
                free(part);
            }
        } else {
            free(y);
        }
        bs[e]->ops->weight_free(bs[e], &w);
    }
    printf("    %-18s %5d x %-5d n=%-3d fast %.2e  exact %.2e\n", name, rows, cols, n, err[0],
           err[1]);
    /* fast: x and each weight value rounded to 16 bits (bf16: 8 bits of mantissa) */
    double tol = s->dt == BE_BF16 ? 8e-3 : 2e-3;
    if (!(err[0] <= tol)) fail_msg("%s: fast path error %.3e over %.0e", name, err[0], tol);
    if (!(err[1] <= 1e-5)) fail_msg("%s: exact path error %.3e over 1e-5", name, err[1]);
    free(fast);
    free(want);
    free(x);
    free(bias);
    free_hweight(&hw);
}

static void matmul_every_layout(void **state) {
    NEED_DEVICE();
    for (size_t i = 0; i < sizeof SPECS / sizeof SPECS[0]; i++) {
        const wspec *s = &SPECS[i];
        bool k_type = s->dt == BE_Q4_K || s->dt == BE_Q5_K || s->dt == BE_Q6_K;
        int cols = k_type ? 768 : s->dt == BE_MLX ? 640 : 160;
        check_layout(s, 40, cols, 1);
        check_layout(s, 33, cols, 13);
        check_layout(s, 70, cols, 40);
        check_layout(s, 24, k_type ? 1536 : 1152, 17);
    }
    /* plain weights of widths that are no multiple of 32 (CLIP's patch embedding: 588) */
    check_layout(&SPECS[1], 64, 588, 9);
    check_layout(&SPECS[1], 64, 588, 33);
    check_layout(&SPECS[0], 16, 50, 3);
}

/* A decode batch of n rows inside a long prefill: the same bits (chunks of
 * 512 values cross; 4096-wide rows as the 7B's). */
static void matmul_batch_invariant_wide(void **state) {
    NEED_DEVICE();
    const wspec *q40 = &SPECS[3];
    int rows = 96, cols = 4096, n = 300;
    hweight hw;
    rnd_weight(&hw, q40, rows, cols);
    be_weight w;
    lv_err err = {{0}};
    if (g_fast.ops->weight_init(&g_fast, &w, q40->dt, rows, cols, hw.data, NULL, &err))
        fail_msg("%s", err.msg);
    float *x = rnd_floats((size_t)n * cols, -3, 3);
    float *all = dev_matmul(&g_fast, &w, x, NULL, n);
    int sizes[] = {1, 2, 8, 9, 16, 17, 32, 33, 64};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        int m = sizes[i], at = (int)(rnd() % (uint64_t)(n - m));
        float *part = dev_matmul(&g_fast, &w, x + (size_t)at * cols, NULL, m);
        if (memcmp(part, all + (size_t)at * rows, (size_t)m * rows * 4) != 0)
            fail_msg("a batch of %d at row %d differs from the batch of %d", m, at, n);
        free(part);
    }
    g_fast.ops->weight_free(&g_fast, &w);
    free(all);
    free(x);
    free_hweight(&hw);
}

/* A recorded step (record_begin/end: a CUDA graph) gives the bits of the same
 * ops called one by one; a second recording with other shapes and pointers
 * (the graph updated in place, or made anew) too. */
static void recorded_equals_direct(void **state) {
    NEED_DEVICE();
    be *b = &g_fast;
    const struct be_ops *o = b->ops;
    const wspec *q40 = &SPECS[3];
    int rows = 256, cols = 1024;
    hweight hw;
    rnd_weight(&hw, q40, rows, cols);
    be_weight w;
    lv_err err = {{0}};
    if (o->weight_init(b, &w, q40->dt, rows, cols, hw.data, NULL, &err)) fail_msg("%s", err.msg);
    float *g = rnd_floats(rows, 0.5f, 1.5f), *dg = up(b, g, rows);
    for (int n = 1; n <= 3; n += 2) {
        float *x = rnd_floats((size_t)n * cols, -2, 2), *r = rnd_floats((size_t)n * rows, -1, 1);
        float *out[2], *res[2];
        for (int rec = 0; rec < 2; rec++) {
            float *dx = up(b, x, (size_t)n * cols), *dr = up(b, r, (size_t)n * rows);
            float *dy = poisoned(b, (size_t)n * rows), *dz = poisoned(b, (size_t)n * rows);
            if (rec) o->record_begin(b);
            o->matmul(b, dy, dx, &w, NULL, n);
            o->add_rmsnorm(b, dr, dy, dz, dg, n, rows, 1e-5f);
            o->silu_mul(b, dz, dy, (size_t)n * rows);
            o->matmul(b, dy, dx, &w, NULL, n); /* the same kernel again: a second node */
            if (rec) o->record_end(b);
            out[rec] = down(b, dz, (size_t)n * rows);
            res[rec] = down(b, dr, (size_t)n * rows);
            check_status(b);
            o->release(b, dx), o->release(b, dr), o->release(b, dy), o->release(b, dz);
        }
        assert_memory_equal(out[0], out[1], (size_t)n * rows * 4);
        assert_memory_equal(res[0], res[1], (size_t)n * rows * 4);
        free(out[0]), free(out[1]), free(res[0]), free(res[1]), free(x), free(r);
    }
    o->release(b, dg);
    o->weight_free(b, &w);
    free(g);
    free_hweight(&hw);
}

/* ---- the small ops ------------------------------------------------------------ */

static void check_close(const char *what, const float *got, const float *want, size_t n,
                        double tol) {
    double e = rel_err(got, want, n);
    if (!(e <= tol)) fail_msg("%s: relative error %.3e over %.0e", what, e, tol);
}

static void small_ops(void **state) {
    NEED_DEVICE();
    be *b = &g_fast;
    const struct be_ops *o = b->ops;
    int n = 37, dim = 4096 + 48;
    size_t nd = (size_t)n * dim;
    float *x = rnd_floats(nd, -3, 3), *g = rnd_floats(dim, 0.5f, 1.5f),
          *beta = rnd_floats(dim, -1, 1), *want = malloc(nd * 4);
    assert_non_null(want);
    float *dx = up(b, x, nd), *dg = up(b, g, dim), *dbeta = up(b, beta, dim), *dy = poisoned(b, nd);

    o->rmsnorm(b, dy, dx, dg, n, dim, 1e-5f);
    float *got = down(b, dy, nd);
    g_ref.ops->rmsnorm(&g_ref, want, x, g, n, dim, 1e-5f);
    check_close("rmsnorm", got, want, nd, 1e-6);
    free(got);

    o->layernorm(b, dy, dx, dg, dbeta, n, dim, 1e-5f);
    got = down(b, dy, nd);
    g_ref.ops->layernorm(&g_ref, want, x, g, beta, n, dim, 1e-5f);
    check_close("layernorm", got, want, nd, 1e-6);
    free(got);

    /* RoPE: 37 rows of 32 heads x 128 at positions up to 30000 */
    int heads = 32, hd = 128;
    size_t nr = (size_t)n * heads * hd;
    float *r = rnd_floats(nr, -2, 2), *dr = up(b, r, nr);
    int pos[37];
    for (int i = 0; i < n; i++) pos[i] = (int)(rnd() % 30000);
    int *dpos = o->alloc(b, sizeof pos);
    o->upload(b, dpos, pos, sizeof pos);
    o->rope(b, dr, n, heads, hd, dpos, 1e6f);
    got = down(b, dr, nr);
    g_ref.ops->rope(&g_ref, r, n, heads, hd, pos, 1e6f);
    check_close("rope", got, r, nr, 1e-6);
    free(got);

    /* store_as f16: the same bits as the reference (round to nearest even, saturate) */
    float *big = rnd_floats(nd, -1e5f, 1e5f);
    float *dbig = up(b, big, nd);
    uint16_t *dh = o->alloc(b, nd * 2), *hh = malloc(nd * 2), *wh = malloc(nd * 2);
    o->store_as(b, dh, BE_F16, dbig, nd);
    o->download(b, hh, dh, nd * 2);
    g_ref.ops->store_as(&g_ref, wh, BE_F16, big, nd);
    assert_memory_equal(hh, wh, nd * 2);

    float *u = rnd_floats(nd, -3, 3), *du = up(b, u, nd);

    /* add_rmsnorm: the bits of add then rmsnorm, y written over delta */
    {
        float *dx1 = up(b, x, nd), *dx2 = up(b, x, nd), *dd = up(b, u, nd);
        float *dy1 = poisoned(b, nd);
        o->add(b, dx1, du, nd);
        o->rmsnorm(b, dy1, dx1, dg, n, dim, 1e-5f);
        o->add_rmsnorm(b, dx2, dd, dd, dg, n, dim, 1e-5f);
        float *x1 = down(b, dx1, nd), *y1 = down(b, dy1, nd), *x2 = down(b, dx2, nd),
              *y2 = down(b, dd, nd);
        assert_memory_equal(x1, x2, nd * 4);
        assert_memory_equal(y1, y2, nd * 4);
        free(x1), free(y1), free(x2), free(y2);
        o->release(b, dx1), o->release(b, dx2), o->release(b, dd), o->release(b, dy1);
    }
    struct {
        const char *name;
        int which;
    } acts[] = {{"silu_mul", 0}, {"gelu", 1}, {"quick_gelu", 2}, {"add", 3}, {"gelu_tanh", 4}};
    for (int a = 0; a < 5; a++) {
        memcpy(want, x, nd * 4);
        o->upload(b, dy, x, nd * 4);
        switch (acts[a].which) {
            case 0:
                o->silu_mul(b, dy, du, nd);
                g_ref.ops->silu_mul(&g_ref, want, u, nd);
                break;
            case 1:
                o->gelu(b, dy, nd);
                g_ref.ops->gelu(&g_ref, want, nd);
                break;
            case 2:
                o->quick_gelu(b, dy, nd);
                g_ref.ops->quick_gelu(&g_ref, want, nd);
                break;
            case 4:
                o->gelu_tanh(b, dy, nd);
                g_ref.ops->gelu_tanh(&g_ref, want, nd);
                break;
            default:
                o->add(b, dy, du, nd);
                g_ref.ops->add(&g_ref, want, u, nd);
        }
        got = down(b, dy, nd);
        check_close(acts[a].name, got, want, nd, 1e-6);
        free(got);
    }
    check_status(b);
    void *bufs[] = {dx, dg, dbeta, dy, dr, dpos, dbig, dh, du};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) o->release(b, bufs[i]);
    free(x), free(g), free(beta), free(want), free(r), free(big), free(hh), free(wh), free(u);
}

/* embed_rows of every layout: exact where the layout holds the exact values
 * (plain, Q4_0, Q4_1, Q8_0, MLX with f16 scales), within half rounding of s and
 * m otherwise; exact mode always exact. */
static void embed_every_layout(void **state) {
    NEED_DEVICE();
    int rows = 50, n = 9;
    int32_t ids[9] = {0, 49, 7, 7, 13, 0, 31, 2, 48};
    for (size_t i = 0; i < sizeof SPECS / sizeof SPECS[0]; i++) {
        const wspec *s = &SPECS[i];
        int cols = (s->dt == BE_Q4_K || s->dt == BE_Q5_K || s->dt == BE_Q6_K) ? 512 : 256;
        hweight hw;
        rnd_weight(&hw, s, rows, cols);
        be_weight rw;
        lv_err err = {{0}};
        g_ref.ops->weight_init(&g_ref, &rw, s->dt, rows, cols, hw.data,
                               s->dt == BE_MLX ? &hw.q : NULL, &err);
        float *want = malloc((size_t)n * cols * 4);
        g_ref.ops->embed_rows(&g_ref, want, &rw, ids, n);
        for (int e = 0; e < 2; e++) {
            be *b = e ? &g_exact : &g_fast;
            be_weight w;
            if (b->ops->weight_init(b, &w, s->dt, rows, cols, hw.data,
                                    s->dt == BE_MLX ? &hw.q : NULL, &err))
                fail_msg("%s", err.msg);
            int32_t *dids = b->ops->alloc(b, sizeof ids);
            b->ops->upload(b, dids, ids, sizeof ids);
            float *dout = poisoned(b, (size_t)n * cols);
            b->ops->embed_rows(b, dout, &w, dids, n);
            float *got = down(b, dout, (size_t)n * cols);
            char name[64];
            spec_name(s, name, sizeof name);
            bool rounded =
                !e && (s->dt == BE_Q4_K || s->dt == BE_Q5_K || s->dt == BE_Q6_K ||
                       s->dt == BE_F32 || (s->dt == BE_MLX && s->bits != 4 && s->bits != 8) ||
                       (s->dt == BE_MLX && s->scale_dtype != BE_F16));
            if (rounded)
                check_close(name, got, want, (size_t)n * cols, 2e-3);
            else
                for (int j = 0; j < n * cols; j++) /* == : +0 and -0 are the same value */
                    if (!(got[j] == want[j]))
                        fail_msg("%s (%s): embed_rows value %d is %g, the reference %g", name,
                                 e ? "exact" : "fast", j, got[j], want[j]);
            free(got);
            b->ops->release(b, dout);
            b->ops->release(b, dids);
            b->ops->weight_free(b, &w);
        }
        g_ref.ops->weight_free(&g_ref, &rw);
        free(want);
        free_hweight(&hw);
    }
}

/* Bad input: an impossible device index and an allocation larger than the
 * device fail with clear errors; the context stays usable. */
static void bad_input(void **state) {
    NEED_DEVICE();
    be b = {.ops = g_fast.ops, .device = 99};
    lv_err err = {{0}};
    assert_int_equal(b.ops->init(&b, 0, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "cuda:99"));
    assert_null(g_fast.ops->alloc(&g_fast, (size_t)1 << 50));
    check_status(&g_fast);
    size_t used, total;
    assert_true(g_fast.ops->memory_info(&g_fast, &used, &total));
    assert_true(used > 0 && total >= used);
    printf("    device memory: %.1f of %.1f GiB in use\n", used / 1073741824.0,
           total / 1073741824.0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(matmul_every_layout),
        cmocka_unit_test(matmul_batch_invariant_wide),
        cmocka_unit_test(small_ops),
        cmocka_unit_test(embed_every_layout),
        cmocka_unit_test(recorded_equals_direct),
        cmocka_unit_test(bad_input),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
