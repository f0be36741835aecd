/* test_generate_batch.c - llava_forward (model/llava.h), the one forward
 * every request goes through, over several sequences at once against the
 * same sequences run alone (a batch of one): on the bundled demo model and
 * on the llava-next-tiny fixture (tests/data/forward), sequences of
 * different lengths, batches of changing membership, a prefill chunk beside
 * decode rows and feature rows in place of image ids give bit-identical
 * logits and the same greedy ids; bad batches fail with clear errors and
 * change nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "engine/request.h"
#include "model/llava.h"
#include "model/llava_impl.h" /* white-box: feature rows written directly */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS    4  /* sequences */
#define CTX   96 /* positions each */
#define STEPS 12

static int g_tp; /* > 0: load through tensor parallelism over this many CPU ranks */

static llava *load(const char *rel) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", tu_env("LLAVA_TEST_DATA"), rel);
    llava *m;
    lv_err err;
    if (llava_open(dir, &m, &err)) fail_msg("%s: %s", dir, err.msg);
    llava_set_tensor_parallel(m, g_tp, false);
    if (llava_load(m, "cpu", 2, &err)) fail_msg("%s: %s", dir, err.msg);
    return m;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static uint32_t lcg(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

/* One sequence alone: a forward of n ids in a batch of one. */
static void alone(llava *m, llava_batch *bt, llava_seq *s, const int32_t *ids, int n,
                  float *logits) {
    lv_err err;
    llava_input in = {.seq = s, .ids = ids, .n = n};
    if (llava_forward(m, bt, &in, 1, logits, &err)) fail_msg("%s", err.msg);
}

/* Prefills n pseudo-random ids (seeded) into s; the greedy next id. */
static int32_t prefill(llava *m, llava_batch *bt, llava_seq *s, int n, uint32_t seed,
                       float *logits) {
    int32_t ids[64];
    int V = llava_vocab_size(m);
    for (int i = 0; i < n; i++) ids[i] = (int32_t)(lcg(&seed) % (uint32_t)V);
    alone(m, bt, s, ids, n, logits);
    return argmax(logits, V);
}

static void check_model(const char *rel) {
    llava *m = load(rel);
    int V = llava_vocab_size(m), dim = llava_text_dim(m);
    lv_err err;
    llava_seq *a[NS], *b[NS];
    llava_batch *one, *bt;
    int lens[NS] = {7, 12, 3, 20};
    int32_t next_a[NS], next_b[NS];
    float *la = malloc((size_t)V * sizeof *la), *lb = malloc((size_t)NS * 4 * V * sizeof *lb);
    assert_non_null(la);
    assert_non_null(lb);
    assert_int_equal(llava_batch_new(m, 32, 1, &one, &err), LV_OK);
    assert_int_equal(llava_batch_new(m, NS + 3, NS, &bt, &err), LV_OK);
    for (int i = 0; i < NS; i++) {
        assert_int_equal(llava_seq_new(m, CTX, &a[i], &err), LV_OK);
        assert_int_equal(llava_seq_new(m, CTX, &b[i], &err), LV_OK);
        next_a[i] = prefill(m, one, a[i], lens[i], 17u + i, la);
        next_b[i] = prefill(m, one, b[i], lens[i], 17u + i, la);
        assert_int_equal(next_a[i], next_b[i]);
    }
    for (int step = 0; step < STEPS; step++) {
        llava_input in[NS];
        int32_t ids[NS][3];
        int members[NS], k = 0;
        for (int i = 0; i < NS; i++) {
            if (step % 3 != 0 && (i + step) % 2 == 0 && i != 1) continue; /* changing members */
            /* at step 4 sequence 0 brings a chunk of 3 tokens: its greedy id, then two more */
            int n = step == 4 && i == 0 ? 3 : 1;
            for (int q = 0; q < n; q++) ids[i][q] = (next_b[i] + q * 7) % V;
            members[k] = i;
            in[k++] = (llava_input){.seq = b[i], .ids = ids[i], .n = n};
        }
        assert_int_equal(llava_forward(m, bt, in, k, lb, &err), LV_OK);
        for (int q = 0; q < k; q++) {
            int i = members[q];
            alone(m, one, a[i], ids[i], in[q].n, la);
            assert_int_equal(llava_seq_pos(a[i]), llava_seq_pos(b[i]));
            /* batch invariance: the same bits alone and beside others */
            assert_memory_equal(la, lb + (size_t)q * V, (size_t)V * sizeof *la);
            next_a[i] = argmax(la, V);
            next_b[i] = argmax(lb + (size_t)q * V, V);
        }
    }

    /* feature rows in place of image ids, in a prefill chunk beside a decode row */
    {
        llava_features *f;
        assert_int_equal(llava_features_new(m, 3, &f, &err), LV_OK);
        assert_int_equal(llava_features_rows(f), 3);
        float *rows = malloc((size_t)3 * dim * sizeof *rows), *back = malloc((size_t)dim * 4);
        for (int d = 0; d < 3 * dim; d++) rows[d] = 0.01f * (float)((d * 37) % 23 - 11);
        m->backend.ops->upload(&m->backend, f->rows, rows, (size_t)3 * dim * sizeof *rows);
        llava_features_read(f, 1, 1, back);
        assert_memory_equal(back, rows + dim, (size_t)dim * sizeof *rows);
        int img = llava_image_token_id(m);
        int32_t chunk[5] = {3 % V, img, img, 4 % V, 1 % V};
        assert_int_equal(llava_count_image_ids(m, chunk, 5), 2);
        llava_seq *c0, *c1;
        assert_int_equal(llava_seq_new(m, CTX, &c0, &err), LV_OK);
        assert_int_equal(llava_seq_new(m, CTX, &c1, &err), LV_OK);
        llava_input two[] = {{.seq = c0, .ids = chunk, .n = 5, .features = f, .feature_row = 1},
                             {.seq = b[2], .ids = &next_b[2], .n = 1}};
        assert_int_equal(llava_forward(m, bt, two, 2, lb, &err), LV_OK);
        llava_input solo = {.seq = c1, .ids = chunk, .n = 5, .features = f, .feature_row = 1};
        assert_int_equal(llava_forward(m, one, &solo, 1, la, &err), LV_OK);
        assert_memory_equal(la, lb, (size_t)V * sizeof *la);
        /* image ids beyond the features: refused, nothing changes */
        int pos = llava_seq_pos(c1);
        solo.feature_row = 2;
        assert_int_equal(llava_forward(m, one, &solo, 1, la, &err), LV_ERR_ARG);
        assert_non_null(strstr(err.msg, "features"));
        assert_int_equal(llava_seq_pos(c1), pos);
        llava_seq_free(c0);
        llava_seq_free(c1);
        llava_features_free(f);
        free(rows);
        free(back);
    }

    /* bad batches: nothing changes */
    int pos0 = llava_seq_pos(b[0]);
    int32_t three[] = {1, 2, 3};
    llava_input dup[NS + 1];
    for (int i = 0; i < NS + 1; i++) dup[i] = (llava_input){.seq = b[0], .ids = three, .n = 1};
    assert_int_equal(llava_forward(m, bt, dup, NS + 1, lb, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "sequences"));
    assert_int_equal(llava_forward(m, bt, dup, 2, lb, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "same"));
    dup[0].n = 0;
    assert_int_equal(llava_forward(m, bt, dup, 1, lb, &err), LV_ERR_ARG);
    int32_t *lots = calloc(NS + 4, sizeof *lots);
    dup[0] = (llava_input){.seq = b[0], .ids = lots, .n = NS + 4};
    assert_int_equal(llava_forward(m, bt, dup, 1, lb, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "rows"));
    int32_t bad = V + 1;
    dup[0] = (llava_input){.seq = b[0], .ids = &bad, .n = 1};
    assert_int_equal(llava_forward(m, bt, dup, 1, lb, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "vocabulary"));
    assert_int_equal(llava_forward(m, bt, dup, 0, lb, &err), LV_ERR_ARG);
    assert_int_equal(llava_seq_pos(b[0]), pos0);
    llava_seq *tiny;
    assert_int_equal(llava_seq_new(m, 2, &tiny, &err), LV_OK);
    dup[0] = (llava_input){.seq = tiny, .ids = three, .n = 2};
    assert_int_equal(llava_forward(m, bt, dup, 1, lb, &err), LV_OK); /* full now */
    dup[0].n = 1;
    assert_int_equal(llava_forward(m, bt, dup, 1, lb, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "context"));
    assert_int_equal(llava_seq_new(m, llava_max_ctx(m) + 1, &tiny, &err), LV_ERR_ARG);
    llava_seq_free(dup[0].seq);
    free(lots);

    llava_batch_free(one);
    llava_batch_free(bt);
    llava_batch_free(NULL); /* no-op */
    for (int i = 0; i < NS; i++) {
        llava_seq_free(a[i]);
        llava_seq_free(b[i]);
    }
    free(la);
    free(lb);
    llava_free(m);
}

static void test_demo(void **state) {
    (void)state;
    check_model("../../models/demo");
}

static void test_fixture(void **state) {
    (void)state;
    check_model("forward/llava-next-tiny");
}

/* Batch invariance holds through tensor parallelism (backend/tp.h): over two
 * CPU ranks, heads and FFN columns split, the same bits alone or batched. */
static void test_demo_tp2(void **state) {
    (void)state;
    g_tp = 2;
    check_model("../../models/demo");
    g_tp = 0;
}

static void test_fixture_tp2(void **state) {
    (void)state;
    g_tp = 2;
    check_model("forward/llava-next-tiny");
    g_tp = 0;
}

/* An image encoded a few rows at a time (the scheduler's pieces) gives the
 * bits of one pass, tile after tile, stage after stage. */
static void check_encoder_pieces(const char *rel) {
    llava *m = load(rel);
    char path[1024];
    snprintf(path, sizeof path, "%s/forward/images/d_200x200.png", tu_env("LLAVA_TEST_DATA"));
    img_tensor px;
    int n_tok;
    lv_err err;
    if (request_load_image(m, path, &px, &n_tok, NULL, NULL, &err)) fail_msg("%s", err.msg);
    llava_image whole;
    assert_int_equal(llava_encode_image(m, &px, false, &whole, &err), LV_OK);
    assert_int_equal(whole.n_tokens, n_tok);
    llava_features *f;
    llava_encoder *e;
    assert_int_equal(llava_features_new(m, n_tok + 5, &f, &err), LV_OK);
    assert_int_equal(llava_encoder_new(m, &px, f, 6, false, &e, &err), LV_ERR_ARG); /* no room */
    assert_int_equal(llava_encoder_new(m, &px, f, 5, false, &e, &err), LV_OK);
    int pieces = 0, kinds = 0;
    while (!llava_encoder_done(e)) {
        int kind, left = llava_encoder_next(e, &kind);
        assert_true(left > 0 && kind >= 0 && kind < LLAVA_ENCODER_KINDS);
        kinds |= 1 << kind;
        assert_int_equal(llava_encoder_run(e, 7, &err), LV_OK);
        pieces++;
    }
    assert_int_equal(llava_encoder_next(e, NULL), 0);
    assert_int_equal(kinds, (1 << LLAVA_ENCODER_KINDS) - 1);
    assert_int_equal(llava_encoder_tiles(e), px.n_tiles);
    assert_true(pieces > px.n_tiles * 4);
    float *rows = malloc((size_t)n_tok * llava_text_dim(m) * sizeof *rows);
    llava_features_read(f, 5, n_tok, rows);
    assert_memory_equal(rows, whole.rows, (size_t)n_tok * llava_text_dim(m) * sizeof *rows);
    free(rows);
    llava_encoder_free(e);
    llava_features_free(f);
    llava_image_free(&whole);
    img_tensor_free(&px);
    llava_free(m);
}

static void test_encoder_pieces(void **state) {
    (void)state;
    check_encoder_pieces("../../models/demo");
    check_encoder_pieces("forward/llava-next-tiny");
    check_encoder_pieces("forward/llava-1.5-tiny");
}

static void test_batch_init(void **state) {
    (void)state;
    llava *m = load("../../models/demo");
    llava_batch *bt;
    lv_err err;
    assert_int_equal(llava_batch_new(m, 0, 1, &bt, &err), LV_ERR_ARG);
    assert_int_equal(llava_batch_new(m, 4, 5, &bt, &err), LV_ERR_ARG);
    assert_int_equal(llava_batch_new(m, 4, 0, &bt, &err), LV_ERR_ARG);
    assert_int_equal(llava_batch_new(m, 1, 1, &bt, &err), LV_OK);
    assert_int_equal(bt->bt.max_rows, 1); /* exactly what was asked: no padding row */
    llava_batch_free(bt);
    assert_int_equal(llava_kv_bytes_per_pos(m), llm_kv_bytes_per_pos(&m->text));
    llava_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demo),       cmocka_unit_test(test_fixture),
        cmocka_unit_test(test_demo_tp2),   cmocka_unit_test(test_fixture_tp2),
        cmocka_unit_test(test_batch_init), cmocka_unit_test(test_encoder_pieces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
