/* test_generate_batch.c - llm_forward_batch (model/llm.h), the forward the
 * scheduler runs over several sequences at once, against llm_forward run on
 * each sequence alone: on the bundled demo model and on the llava-next-tiny
 * fixture (tests/data/forward), sequences of different lengths, batches of
 * changing membership and a prefill chunk beside decode rows give the same
 * logits (max abs diff tiny) and the same greedy ids; a row's logits are
 * bit-identical whether it runs alone or beside others; bad batches fail
 * with clear errors and change nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "model/llava.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS    4  /* sequences */
#define CTX   96 /* positions each */
#define STEPS 12
#define TOL   1e-4f

static llava *load(const char *rel) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", tu_env("LLAVA_TEST_DATA"), rel);
    llava *m;
    lv_err err;
    if (llava_open(dir, &m, &err) || llava_load(m, "cpu", 2, &err))
        fail_msg("%s: %s", dir, err.msg);
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

/* Prefills n pseudo-random ids (seeded) into s; the greedy next id. */
static int32_t prefill(const llm *t, llm_seq *s, int n, uint32_t seed, float *logits) {
    int32_t ids[64];
    for (int i = 0; i < n; i++) ids[i] = (int32_t)(lcg(&seed) % (uint32_t)t->vocab_size);
    llm_embed(t, s, ids, n);
    lv_err err;
    if (llm_forward(t, s, n, logits, false, &err)) fail_msg("%s", err.msg);
    return argmax(logits, t->vocab_size);
}

static void check_model(const char *rel) {
    llava *m = load(rel);
    const llm *t = &m->text;
    int V = t->vocab_size;
    lv_err err;
    llm_seq a[NS], b[NS];
    int lens[NS] = {7, 12, 3, 20};
    int32_t next_a[NS], next_b[NS];
    float *la = malloc((size_t)V * sizeof *la), *lb = malloc((size_t)NS * 4 * V * sizeof *lb);
    assert_non_null(la);
    assert_non_null(lb);
    for (int i = 0; i < NS; i++) {
        assert_int_equal(llm_seq_init(t, CTX, 32, &a[i], &err), LV_OK);
        assert_int_equal(llm_seq_init(t, CTX, 32, &b[i], &err), LV_OK);
        next_a[i] = prefill(t, &a[i], lens[i], 17u + i, la);
        next_b[i] = prefill(t, &b[i], lens[i], 17u + i, la);
        assert_int_equal(next_a[i], next_b[i]);
        if (i % 2) llm_seq_drop_scratch(&b[i]); /* batch-only sequences need no scratch */
    }
    llm_batch bt;
    assert_int_equal(llm_batch_init(t, NS + 3, NS, &bt, &err), LV_OK);
    float max_diff = 0;
    for (int step = 0; step < STEPS; step++) {
        llm_seq *seqs[NS];
        int n_tok[NS], k = 0, r = 0;
        int32_t ids[NS + 3];
        int members[NS];
        for (int i = 0; i < NS; i++) {
            if (step % 3 != 0 && (i + step) % 2 == 0 && i != 1) continue; /* changing members */
            /* at step 4 sequence 0 brings a chunk of 3 tokens: its greedy id, then two more */
            int n = step == 4 && i == 0 ? 3 : 1;
            for (int q = 0; q < n; q++) ids[r + q] = (next_b[i] + q * 7) % V;
            members[k] = i;
            seqs[k] = &b[i];
            n_tok[k++] = n;
            r += n;
        }
        assert_int_equal(llm_forward_batch(t, &bt, seqs, n_tok, k, ids, lb, &err), LV_OK);
        for (int q = 0, row = 0; q < k; row += n_tok[q], q++) {
            int i = members[q];
            llm_embed(t, &a[i], ids + row, n_tok[q]);
            assert_int_equal(llm_forward(t, &a[i], n_tok[q], la, false, &err), LV_OK);
            assert_int_equal(a[i].pos, b[i].pos);
            for (int v = 0; v < V; v++) {
                float d = fabsf(la[v] - lb[(size_t)q * V + v]);
                if (d > max_diff) max_diff = d;
            }
            next_a[i] = argmax(la, V);
            next_b[i] = argmax(lb + (size_t)q * V, V);
            assert_int_equal(next_a[i], next_b[i]);
        }
    }
    print_message("%s: max |batched - alone| logit difference %g\n", rel, max_diff);
    assert_true(max_diff < TOL);

    /* bit-identical: sequence 0's step alone (n = 1) and beside three others */
    llm_seq c0, c1;
    assert_int_equal(llm_seq_init(t, CTX, 32, &c0, &err), LV_OK);
    assert_int_equal(llm_seq_init(t, CTX, 32, &c1, &err), LV_OK);
    prefill(t, &c0, 9, 99u, la);
    prefill(t, &c1, 9, 99u, la);
    int32_t id = 5 % V;
    llm_seq *one[] = {&c0};
    int ones[NS] = {1, 1, 1, 1};
    assert_int_equal(llm_forward_batch(t, &bt, one, ones, 1, &id, la, &err), LV_OK);
    llm_seq *many[] = {&b[2], &c1, &b[3]};
    int32_t three[] = {next_b[2], id, next_b[3]};
    assert_int_equal(llm_forward_batch(t, &bt, many, ones, 3, three, lb, &err), LV_OK);
    assert_memory_equal(la, lb + V, (size_t)V * sizeof *la);

    /* input rows given as embeddings (image features in a prefill chunk) */
    {
        float row[4096];
        assert_true(t->dim <= 4096);
        for (int d = 0; d < t->dim; d++) row[d] = 0.01f * (float)((d * 37) % 23 - 11);
        int32_t chunk[5] = {3 % V, 9 % V, 4 % V, 4 % V, 1 % V};
        int n5[] = {5, 1};
        llm_seq *two[] = {&c0, &b[2]};
        llm_batch_embed(t, &bt, 0, chunk, 5);
        llm_batch_embed(t, &bt, 5, &next_b[2], 1);
        m->backend.ops->upload(&m->backend, llm_batch_input(&bt) + 2 * t->dim, row,
                               (size_t)t->dim * sizeof *row);
        assert_int_equal(llm_forward_batch_rows(t, &bt, two, n5, 2, lb, &err), LV_OK);
        llm_embed(t, &c1, chunk, 5);
        m->backend.ops->upload(&m->backend, llm_seq_input(&c1) + 2 * t->dim, row,
                               (size_t)t->dim * sizeof *row);
        assert_int_equal(llm_forward(t, &c1, 5, la, false, &err), LV_OK);
        float d = 0;
        for (int v = 0; v < V; v++) d = fmaxf(d, fabsf(la[v] - lb[v]));
        assert_true(d < TOL);
        assert_int_equal(argmax(la, V), argmax(lb, V));
    }

    /* bad batches: nothing changes */
    int pos0 = b[0].pos;
    llm_seq *dup[] = {&b[0], &b[0]};
    int many_ones[NS + 1] = {1, 1, 1, 1, 1};
    assert_int_equal(llm_forward_batch(t, &bt, dup, many_ones, NS + 1, three, lb, &err),
                     LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "sequences"));
    assert_int_equal(llm_forward_batch(t, &bt, dup, ones, 2, three, lb, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "same"));
    int zero[] = {0};
    assert_int_equal(llm_forward_batch(t, &bt, dup, zero, 1, three, lb, &err), LV_ERR_ARG);
    int lots[] = {bt.max_rows + 1};
    assert_int_equal(llm_forward_batch(t, &bt, dup, lots, 1, three, lb, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "rows"));
    int32_t bad = V;
    assert_int_equal(llm_forward_batch(t, &bt, dup, ones, 1, &bad, lb, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "vocabulary"));
    assert_int_equal(llm_forward_batch(t, &bt, dup, ones, 0, three, lb, &err), LV_ERR_ARG);
    assert_int_equal(b[0].pos, pos0);
    b[1].pos = b[1].ctx; /* full */
    assert_int_equal(llm_forward_batch(t, &bt, &dup[0], ones, 1, three, lb, &err), LV_OK);
    llm_seq *full[] = {&b[1]};
    assert_int_equal(llm_forward_batch(t, &bt, full, ones, 1, three, lb, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "context"));
    /* a sequence without scratch takes no llm_forward */
    assert_int_equal(llm_forward(t, &b[1], 1, la, false, &err), LV_ERR_ARG);
    assert_int_equal(llm_kv_bytes_per_pos(t), 2 * (size_t)t->n_layers * t->kv_dim * 4);

    llm_batch_deinit(&bt);
    llm_batch_deinit(&bt); /* zeroed: no-op */
    llm_seq_deinit(&c0);
    llm_seq_deinit(&c1);
    for (int i = 0; i < NS; i++) {
        llm_seq_deinit(&a[i]);
        llm_seq_deinit(&b[i]);
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

static void test_batch_init(void **state) {
    (void)state;
    llava *m = load("../../models/demo");
    llm_batch bt;
    lv_err err;
    assert_int_equal(llm_batch_init(&m->text, 0, 1, &bt, &err), LV_ERR_ARG);
    assert_int_equal(llm_batch_init(&m->text, 4, 5, &bt, &err), LV_ERR_ARG);
    assert_int_equal(llm_batch_init(&m->text, 4, 0, &bt, &err), LV_ERR_ARG);
    assert_int_equal(llm_batch_init(&m->text, 1, 1, &bt, &err), LV_OK);
    assert_int_equal(bt.max_rows, 1); /* exactly what was asked: no padding row */
    llm_batch_deinit(&bt);
    llava_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demo),
        cmocka_unit_test(test_fixture),
        cmocka_unit_test(test_batch_init),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
