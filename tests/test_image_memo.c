/* test_image_memo.c - the server's memo of recently sent images' tensors
 * (server/image_memo.h): a hit is a copy equal to what was kept; other
 * bytes of the same length, or other options, miss; the least recently
 * used entry goes when the budget is passed; an image over the budget is
 * never kept; a zero budget keeps nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "server/image_memo.h"

#include <stdlib.h>
#include <string.h>

/* A made-up tensor of n_tiles 4x4 tiles whose floats start at base. */
static img_tensor tensor(int n_tiles, float base) {
    img_tensor t = {.n_tiles = n_tiles, .tile_h = 4, .tile_w = 4, .image_h = 8, .image_w = 8};
    size_t n = (size_t)n_tiles * 3 * 16;
    t.data = malloc(n * sizeof(float));
    assert_non_null(t.data);
    for (size_t i = 0; i < n; i++) t.data[i] = base + (float)i;
    return t;
}

static size_t tbytes(const img_tensor *t) {
    return (size_t)t->n_tiles * 3 * t->tile_h * t->tile_w * sizeof(float);
}

static void test_hit_miss_and_budget(void **state) {
    (void)state;
    const uint8_t a[] = "image-a-bytes", b[] = "image-b-bytes"; /* same length */
    img_options opt = {0}, low = {.base_only = true};
    img_tensor ta = tensor(8, 1.0f), tb = tensor(8, 100.0f), got;
    int n = 0;
    uint64_t key = 0;
    /* room for about two entries */
    image_memo *m = image_memo_new(2 * tbytes(&ta) + 600);
    assert_non_null(m);
    assert_false(image_memo_get(m, a, sizeof a, &opt, &got, &n, &key));
    image_memo_put(m, a, sizeof a, &opt, &ta, 17, 0xA);
    assert_true(image_memo_get(m, a, sizeof a, &opt, &got, &n, &key));
    assert_int_equal(n, 17);
    assert_int_equal(key, 0xA);
    assert_int_equal(got.n_tiles, 8);
    assert_int_equal(got.image_w, 8);
    assert_ptr_not_equal(got.data, ta.data); /* a copy */
    assert_memory_equal(got.data, ta.data, tbytes(&ta));
    img_tensor_free(&got);
    assert_false(image_memo_get(m, b, sizeof b, &opt, &got, &n, &key));     /* other bytes */
    assert_false(image_memo_get(m, a, sizeof a, &low, &got, &n, &key));     /* other options */
    assert_false(image_memo_get(m, a, sizeof a - 1, &opt, &got, &n, &key)); /* a prefix */
    image_memo_put(m, b, sizeof b, &opt, &tb, 18, 0xB);
    assert_int_equal(image_memo_count(m), 2);
    /* a is used, then a third entry evicts b, the least recently used */
    assert_true(image_memo_get(m, a, sizeof a, &opt, &got, &n, &key));
    img_tensor_free(&got);
    image_memo_put(m, a, sizeof a, &low, &tb, 5, 0xC);
    assert_int_equal(image_memo_count(m), 2);
    assert_false(image_memo_get(m, b, sizeof b, &opt, &got, &n, &key));
    assert_true(image_memo_get(m, a, sizeof a, &low, &got, &n, &key));
    assert_int_equal(n, 5);
    assert_int_equal(key, 0xC);
    assert_memory_equal(got.data, tb.data, tbytes(&tb));
    img_tensor_free(&got);
    assert_true(image_memo_bytes(m) <= 2 * tbytes(&ta) + 600);
    /* too large for the whole budget: not kept, nothing evicted */
    img_tensor big = tensor(64, 0.0f);
    image_memo_put(m, b, sizeof b, &opt, &big, 1, 0xD);
    assert_int_equal(image_memo_count(m), 2);
    image_memo_clear(m);
    assert_int_equal(image_memo_count(m), 0);
    assert_int_equal(image_memo_bytes(m), 0);
    image_memo_free(m);

    /* a zero budget keeps nothing; NULL is a no-op */
    m = image_memo_new(0);
    image_memo_put(m, a, sizeof a, &opt, &ta, 17, 0xA);
    assert_false(image_memo_get(m, a, sizeof a, &opt, &got, &n, &key));
    image_memo_free(m);
    assert_false(image_memo_get(NULL, a, sizeof a, &opt, &got, &n, &key));
    image_memo_free(NULL);
    img_tensor_free(&ta), img_tensor_free(&tb), img_tensor_free(&big);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_hit_miss_and_budget)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
