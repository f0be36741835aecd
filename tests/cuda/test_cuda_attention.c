/*
 * test_cuda_attention.c - the CUDA backend's attention (backend/cuda/attention.cu)
 * against the scalar reference, and its batch invariance.
 *
 * Every check draws fresh random queries, keys and values (never zeros),
 * poisons the output with NaN first so an element left unwritten fails, and
 * runs the CUDA op on device buffers. Shapes: head_dim 16, 64 and 128 (and a
 * few odd ones: 8, 24, 72, 256), n_q 1, 7 and 300, n_kv up to 1100 (many
 * 64-key segments, so both the split (decode) and the sequential (prefill)
 * paths run), causal and not, GQA 4:1 and 1:1, f16 and f32 caches, and out
 * == q.
 *
 * Every test runs in both of the backend's modes, each with its own context:
 *   exact  be.exact: float32 on CUDA cores for every head_dim; the largest
 *          |got − want| at most 2e-3 of the largest |want| (the kernels
 *          keep q in float32 and land far below it);
 *   fast   tensor cores at head_dim 64 and 128 (q, k, v and p rounded to
 *          f16), the CUDA cores elsewhere; at most 1e-2 of the largest |want|.
 *
 * attention_batch_invariant: a causal prefill of 300 rows at q_pos0 = 700
 * over n_kv = 1000, then a few of those rows alone (n_q = 1, the cache cut
 * at their own position, as a decode step sees it) and in chunks of 5: the
 * bits must match. Likewise bidirectional rows (CLIP) in a whole call of
 * 577 and in a chunk of 7. The shapes are picked so that some whole calls
 * take the kernels' sequential path and the small ones their split path
 * (attention.cu), whose bits must agree, in both modes.
 *
 * Without a CUDA device (the backend's init fails) every test is skipped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "backend/backend.h"
#include "base/half.h"
#include "testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The two contexts every test runs in: be.exact picks the kernels. */
typedef struct {
    const char *name;
    bool exact;
    double tol; /* max |got − want| as a fraction of max |want| */
} mode;

static const mode g_modes[2] = {
    {"exact", true, 2e-3}, /* float32 on CUDA cores */
    {"fast", false, 1e-2}, /* tensor cores at head_dim 64 and 128: f16 q, k, v and p */
};

static be g_ref, g_cuda[2];
static bool g_have_cuda;
static be *g_dev;          /* the context of the running test */
static const mode *g_mode; /* ... and its mode */

static int setup(void **state) {
    (void)state;
    lv_err err;
    g_ref.ops = &be_ref_ops;
    if (g_ref.ops->init(&g_ref, 1, &err) != LV_OK) return -1;
    const struct be_ops *ops = be_find("cuda");
    if (!ops) return 0; /* a build without CUDA: skip */
    for (int m = 0; m < 2; m++) {
        g_cuda[m].ops = ops;
        g_cuda[m].exact = g_modes[m].exact;
        g_cuda[m].device = 0;
        if (ops->init(&g_cuda[m], 0, &err) != LV_OK) {
            fprintf(stderr, "cuda backend unavailable (%s): skipping\n", err.msg);
            if (m) ops->deinit(&g_cuda[0]);
            return 0;
        }
    }
    g_have_cuda = true;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    if (g_have_cuda)
        for (int m = 0; m < 2; m++) g_cuda[m].ops->deinit(&g_cuda[m]);
    g_ref.ops->deinit(&g_ref);
    return 0;
}

/* Every test takes its mode as cmocka's initial state (cmocka_unit_test_prestate). */
static void use_mode(void **state) {
    if (!g_have_cuda) skip();
    g_mode = (const mode *)*state;
    g_dev = &g_cuda[g_mode - g_modes];
}

/* ---------------------------------------------------------------------------
 * Random data, device buffers
 */

static uint64_t g_rng = 0x9e3779b97f4a7c15u;

static uint64_t rnd(void) {
    return tu_splitmix64(&g_rng);
}

/* Uniform in [lo, hi), never exactly 0. */
static float rnd_float(float lo, float hi) {
    for (;;) {
        float f = lo + (hi - lo) * (float)((rnd() >> 40) * (1.0 / 16777216.0));
        if (f != 0.0f) return f;
    }
}

static float *rnd_floats(size_t n, float lo, float hi) {
    float *v = malloc((n ? n : 1) * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) v[i] = rnd_float(lo, hi);
    return v;
}

/* A quiet NaN no op computes: any element still holding it was never written. */
static const uint32_t POISON = 0x7fc0dead;

static float *poisoned(size_t n) {
    float *v = malloc((n ? n : 1) * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) memcpy(&v[i], &POISON, 4);
    return v;
}

static size_t dtype_size(be_dtype dt) {
    return dt == BE_F16 ? 2 : 4;
}

/* Keys and values as a cache of dtype holds them (F32 or F16); the caller frees. */
static void *kv_of(const float *x, size_t n, be_dtype dt) {
    if (dt == BE_F32) {
        float *d = malloc((n ? n : 1) * sizeof *d);
        assert_non_null(d);
        memcpy(d, x, n * sizeof *d);
        return d;
    }
    uint16_t *h = malloc((n ? n : 1) * sizeof *h);
    assert_non_null(h);
    for (size_t i = 0; i < n; i++) h[i] = lv_f32_to_f16(x[i]);
    return h;
}

static void *to_device(const void *host, size_t bytes) {
    void *d = g_dev->ops->alloc(g_dev, bytes ? bytes : 1);
    assert_non_null(d);
    g_dev->ops->upload(g_dev, d, host, bytes);
    return d;
}

static void assert_healthy(const char *what) {
    if (!g_dev->ops->status) return;
    lv_err err;
    if (g_dev->ops->status(g_dev, &err) != LV_OK) fail_msg("%s: device fault: %s", what, err.msg);
}

/* One CUDA attention call on host data: out (n_q rows) from q, over device
 * copies of k and v (already there: dk, dv). In place: the output is written
 * over a device copy of q. */
static void cuda_attention(float *out, const float *q, const void *dk, const void *dv, be_dtype dt,
                           int n_q, int q_pos0, int n_kv, int n_heads, int n_kv_heads, int hd,
                           bool causal, bool in_place) {
    size_t q_bytes = (size_t)n_q * n_heads * hd * sizeof(float);
    float *dq = to_device(q, q_bytes), *dout = dq;
    if (!in_place) {
        float *poison = poisoned((size_t)n_q * n_heads * hd);
        dout = to_device(poison, q_bytes);
        free(poison);
    }
    g_dev->ops->attention(g_dev, dout, dq, dk, dv, dt, n_q, q_pos0, n_kv, n_heads, n_kv_heads, hd,
                          causal);
    g_dev->ops->download(g_dev, out, dout, q_bytes);
    assert_healthy("attention");
    if (dout != dq) g_dev->ops->release(g_dev, dout);
    g_dev->ops->release(g_dev, dq);
}

/* ---------------------------------------------------------------------------
 * Against the reference
 */

static void check_attention(int n_q, int q_pos0, int n_kv, int n_heads, int n_kv_heads, int hd,
                            bool causal, bool in_place, be_dtype dt) {
    size_t q_len = (size_t)n_q * n_heads * hd, kv_len = (size_t)n_kv * n_kv_heads * hd;
    float *q = rnd_floats(q_len, -1.5f, 1.5f);
    float *kf = rnd_floats(kv_len, -1.5f, 1.5f), *vf = rnd_floats(kv_len, -2, 2);
    void *k = kv_of(kf, kv_len, dt), *v = kv_of(vf, kv_len, dt);
    float *want = poisoned(q_len), *got = poisoned(q_len);
    g_ref.ops->attention(&g_ref, want, q, k, v, dt, n_q, q_pos0, n_kv, n_heads, n_kv_heads, hd,
                         causal);
    void *dk = to_device(k, kv_len * dtype_size(dt)), *dv = to_device(v, kv_len * dtype_size(dt));
    cuda_attention(got, q, dk, dv, dt, n_q, q_pos0, n_kv, n_heads, n_kv_heads, hd, causal,
                   in_place);

    char what[160];
    snprintf(what, sizeof what, "attention (%s) %s n_q=%d pos0=%d n_kv=%d heads=%d/%d hd=%d%s%s",
             g_mode->name, dt == BE_F16 ? "f16" : "f32", n_q, q_pos0, n_kv, n_heads, n_kv_heads, hd,
             causal ? " causal" : "", in_place ? " out=q" : "");
    double max_want = 0, max_err = 0;
    size_t worst = 0;
    for (size_t i = 0; i < q_len; i++) {
        if (!isfinite(got[i]))
            fail_msg("%s: element %zu of %zu is %g (not written?), want %g", what, i, q_len, got[i],
                     want[i]);
        double e = fabs((double)got[i] - want[i]);
        if (fabs(want[i]) > max_want) max_want = fabs(want[i]);
        if (e > max_err) {
            max_err = e;
            worst = i;
        }
    }
    if (!(max_err <= g_mode->tol * max_want))
        fail_msg("%s: |got - want| = %.3g at element %zu (got %g, want %g), expected <= %.3g", what,
                 max_err, worst, got[worst], want[worst], g_mode->tol * max_want);

    g_dev->ops->release(g_dev, dv);
    g_dev->ops->release(g_dev, dk);
    free(got);
    free(want);
    free(v);
    free(k);
    free(vf);
    free(kf);
    free(q);
}

static void attention_shapes(void **state) {
    use_mode(state);
    const int hds[] = {16, 64, 128};
    const int n_qs[] = {1, 7, 300};
    for (size_t a = 0; a < sizeof hds / sizeof *hds; a++) {
        for (size_t b = 0; b < sizeof n_qs / sizeof *n_qs; b++) {
            int hd = hds[a], n_q = n_qs[b];
            for (int gqa = 0; gqa < 2; gqa++) {
                int n_heads = 4, n_kv_heads = gqa ? 1 : 4;
                for (int d = 0; d < 2; d++) {
                    be_dtype dt = d ? BE_F16 : BE_F32;
                    bool in_place = (a + b + gqa + d) % 2 == 0;
                    /* causal: a cache of up to 1100 positions ending at the last query */
                    int n_kv = n_q == 7 ? 537 : 1100;
                    check_attention(n_q, n_kv - n_q, n_kv, n_heads, n_kv_heads, hd, true, in_place,
                                    dt);
                    /* bidirectional: CLIP's 577, a long one, a short one */
                    int n_kv_nc = n_q == 300 ? 577 : n_q == 7 ? 1100 : 130;
                    check_attention(n_q, 0, n_kv_nc, n_heads, n_kv_heads, hd, false, !in_place, dt);
                }
            }
        }
    }
}

/* Odd corners: the smallest and largest head_dim, dims that are not a power
 * of two, a single key, segment edges (64, 65 keys), GQA 3 and 8. */
static void attention_corners(void **state) {
    use_mode(state);
    for (int d = 0; d < 2; d++) {
        be_dtype dt = d ? BE_F16 : BE_F32;
        check_attention(1, 0, 1, 2, 1, 8, true, true, dt);
        check_attention(3, 62, 65, 2, 2, 8, true, false, dt);
        check_attention(64, 0, 64, 3, 1, 24, true, false, dt);
        check_attention(5, 60, 200, 8, 2, 72, true, true, dt);
        check_attention(33, 0, 33, 2, 2, 72, false, true, dt);
        check_attention(5, 120, 125, 4, 2, 256, true, false, dt);
        check_attention(1, 700, 701, 4, 1, 256, true, false, dt);
        check_attention(9, 0, 129, 2, 2, 256, false, false, dt);
        check_attention(1, 40, 41, 32, 8, 128, true, false, dt); /* Mistral's head layout */
        check_attention(2, 300, 302, 24, 3, 40, true, true, dt); /* GQA 8 */
        check_attention(17, 3, 20, 6, 2, 16, true, false, dt);   /* GQA 3 */
    }
    /* Enough tiles (per kv head, 16 rows at head_dim 128, 32 at 64) that every
     * block walks its segments itself rather than splitting them: prefill and
     * CLIP at full size. */
    check_attention(300, 800, 1100, 32, 8, 128, true, false, BE_F16);
    check_attention(577, 0, 577, 16, 16, 64, false, true, BE_F32);
}

/* ---------------------------------------------------------------------------
 * Batch invariance
 */

static void check_invariant_causal(int n_heads, int n_kv_heads, int hd, be_dtype dt) {
    const int n_q = 300, pos0 = 700, n_kv = 1000;
    size_t row = (size_t)n_heads * hd, kv_len = (size_t)n_kv * n_kv_heads * hd;
    float *q = rnd_floats((size_t)n_q * row, -3, 3);
    float *kf = rnd_floats(kv_len, -3, 3), *vf = rnd_floats(kv_len, -2, 2);
    void *k = kv_of(kf, kv_len, dt), *v = kv_of(vf, kv_len, dt);
    void *dk = to_device(k, kv_len * dtype_size(dt)), *dv = to_device(v, kv_len * dtype_size(dt));
    float *whole = poisoned((size_t)n_q * row), *part = poisoned(5 * row);
    cuda_attention(whole, q, dk, dv, dt, n_q, pos0, n_kv, n_heads, n_kv_heads, hd, true, false);

    const int rows[] = {0, 1, 63, 64, 150, 295};
    for (size_t t = 0; t < sizeof rows / sizeof *rows; t++) {
        int i = rows[t];
        /* alone, as a decode step: the cache ends at the row's own position */
        cuda_attention(part, q + i * row, dk, dv, dt, 1, pos0 + i, pos0 + i + 1, n_heads,
                       n_kv_heads, hd, true, false);
        if (memcmp(part, whole + i * row, row * sizeof *part) != 0)
            fail_msg("attention (%s) %s heads=%d/%d hd=%d: row %d alone differs from the prefill",
                     g_mode->name, dt == BE_F16 ? "f16" : "f32", n_heads, n_kv_heads, hd, i);
        /* in a chunk of 5 (in place, for good measure) */
        cuda_attention(part, q + i * row, dk, dv, dt, 5, pos0 + i, pos0 + i + 5, n_heads,
                       n_kv_heads, hd, true, true);
        if (memcmp(part, whole + i * row, 5 * row * sizeof *part) != 0)
            fail_msg("attention (%s) %s heads=%d/%d hd=%d: rows %d..%d in a chunk of 5 differ "
                     "from the prefill",
                     g_mode->name, dt == BE_F16 ? "f16" : "f32", n_heads, n_kv_heads, hd, i, i + 4);
    }
    g_dev->ops->release(g_dev, dv);
    g_dev->ops->release(g_dev, dk);
    free(part);
    free(whole);
    free(v);
    free(k);
    free(vf);
    free(kf);
    free(q);
}

/* CLIP: a tile of rows computed alone gives the bits of the whole call. */
static void check_invariant_bidirectional(int n_heads, int hd, be_dtype dt) {
    const int n = 577;
    size_t row = (size_t)n_heads * hd, len = (size_t)n * row;
    float *q = rnd_floats(len, -3, 3);
    float *kf = rnd_floats(len, -3, 3), *vf = rnd_floats(len, -2, 2);
    void *k = kv_of(kf, len, dt), *v = kv_of(vf, len, dt);
    void *dk = to_device(k, len * dtype_size(dt)), *dv = to_device(v, len * dtype_size(dt));
    float *whole = poisoned(len), *part = poisoned(7 * row);
    cuda_attention(whole, q, dk, dv, dt, n, 0, n, n_heads, n_heads, hd, false, false);
    const int starts[] = {0, 290, 570};
    for (size_t t = 0; t < sizeof starts / sizeof *starts; t++) {
        int i = starts[t];
        cuda_attention(part, q + i * row, dk, dv, dt, 7, 0, n, n_heads, n_heads, hd, false, false);
        if (memcmp(part, whole + i * row, 7 * row * sizeof *part) != 0)
            fail_msg("attention (%s) %s heads=%d hd=%d: rows %d..%d alone differ from the whole "
                     "call",
                     g_mode->name, dt == BE_F16 ? "f16" : "f32", n_heads, hd, i, i + 6);
    }
    g_dev->ops->release(g_dev, dv);
    g_dev->ops->release(g_dev, dk);
    free(part);
    free(whole);
    free(v);
    free(k);
    free(vf);
    free(kf);
    free(q);
}

static void attention_batch_invariant(void **state) {
    use_mode(state);
    /* On a GPU of about 132 multiprocessors (H100, H200) the prefill of the
     * 32/8-head cases and the whole CLIP calls have enough blocks to run
     * their segments in sequence, in both modes; the single rows and chunks
     * split them over blocks and merge them in a second kernel: the two
     * paths must agree. The others split both ways. In fast mode head_dim
     * 64 and 128 take the tensor cores, 16 the CUDA cores. */
    check_invariant_causal(32, 8, 128, BE_F16); /* Mistral */
    check_invariant_causal(32, 8, 128, BE_F32);
    check_invariant_causal(32, 8, 64, BE_F16);
    check_invariant_causal(32, 32, 16, BE_F16);
    check_invariant_causal(8, 2, 128, BE_F16);
    check_invariant_causal(16, 4, 64, BE_F32);
    check_invariant_bidirectional(16, 64, BE_F32); /* CLIP ViT-L/14-336: in sequence vs split */
    check_invariant_bidirectional(16, 128, BE_F16);
    check_invariant_bidirectional(4, 128, BE_F16);
}

/* cmocka_unit_test_prestate with the mode in the test's name. */
#define TEST_IN_MODE(f, m)                                                                         \
    { #f " (" #m ")", f, NULL, NULL, (void *)&g_modes[MODE_##m] }
enum { MODE_exact = 0, MODE_fast = 1 };

int main(void) {
    const struct CMUnitTest tests[] = {
        TEST_IN_MODE(attention_shapes, exact),
        TEST_IN_MODE(attention_corners, exact),
        TEST_IN_MODE(attention_batch_invariant, exact),
        TEST_IN_MODE(attention_shapes, fast),
        TEST_IN_MODE(attention_corners, fast),
        TEST_IN_MODE(attention_batch_invariant, fast),
    };
    return cmocka_run_group_tests_name("cuda_attention", tests, setup, teardown);
}
