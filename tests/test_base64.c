/* test_base64.c - strict base64: RFC 4648 vectors, round trips, line breaks,
 * every kind of malformed text, and the size cap enforced before allocating. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/base64.h"

#include <stdlib.h>
#include <string.h>

static void decode_ok(const char *in, const char *want) {
    uint8_t *out;
    size_t len;
    lv_err err = {""};
    lv_status st = lv_base64_decode(in, strlen(in), 1000, &out, &len, &err);
    if (st != LV_OK) fail_msg("'%s': %s", in, err.msg);
    assert_non_null(out);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(out, want, len);
    free(out);
}

static void decode_bad(const char *in, const char *msg_part) {
    uint8_t *out = (uint8_t *)"x";
    size_t len = 99;
    lv_err err = {""};
    assert_int_equal(lv_base64_decode(in, strlen(in), 1000, &out, &len, &err), LV_ERR_FORMAT);
    assert_null(out);
    assert_int_equal(len, 0);
    if (!strstr(err.msg, msg_part))
        fail_msg("'%s': message '%s' lacks '%s'", in, err.msg, msg_part);
}

static void rfc4648_vectors(void **state) {
    static const char *v[][2] = {{"", ""},
                                 {"Zg==", "f"},
                                 {"Zm8=", "fo"},
                                 {"Zm9v", "foo"},
                                 {"Zm9vYg==", "foob"},
                                 {"Zm9vYmE=", "fooba"},
                                 {"Zm9vYmFy", "foobar"}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        decode_ok(v[i][0], v[i][1]);
        char *enc;
        assert_int_equal(lv_base64_encode((const uint8_t *)v[i][1], strlen(v[i][1]), &enc, NULL),
                         LV_OK);
        assert_string_equal(enc, v[i][0]);
        free(enc);
    }
}

static void round_trip_all_lengths(void **state) {
    uint8_t data[300];
    srand(7);
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)rand();
    for (size_t n = 0; n <= sizeof data; n++) {
        char *enc;
        assert_int_equal(lv_base64_encode(data, n, &enc, NULL), LV_OK);
        size_t dl;
        assert_int_equal(lv_base64_decoded_len(enc, strlen(enc), &dl, NULL), LV_OK);
        assert_int_equal(dl, n);
        uint8_t *out;
        size_t len;
        assert_int_equal(lv_base64_decode(enc, strlen(enc), n, &out, &len, NULL), LV_OK);
        assert_int_equal(len, n);
        assert_memory_equal(out, data, n);
        free(out);
        free(enc);
    }
}

static void line_breaks_tolerated(void **state) {
    decode_ok("Zm9v\nYmFy", "foobar");
    decode_ok("Zm9v\r\nYmFy\r\n", "foobar");
    decode_ok("\nZm\n9vYg\n=\n=\n", "foob");
    decode_ok("\n\r\n", "");
}

static void bad_characters(void **state) {
    decode_bad("Zm9v YmFy", "invalid character"); /* spaces are not line breaks */
    decode_bad("Zm9v\tYmFy", "invalid byte 0x09 at offset 4");
    decode_bad("Zm9-", "invalid character '-' at offset 3"); /* URL-safe alphabet */
    decode_bad("Zm9_", "invalid character '_'");
    decode_bad("Zm9v\x80YmF", "invalid byte 0x80");
    decode_bad("Zm9v.mFy", "offset 4");
}

static void bad_padding(void **state) {
    decode_bad("Zg=", "truncated");
    decode_bad("Zg", "truncated");       /* padding required */
    decode_bad("Zm9vYmF", "truncated");  /* cut-off data */
    decode_bad("Z===", "misplaced '='"); /* '=' in position 1 */
    decode_bad("=Zg=", "misplaced '='");
    decode_bad("Zg==Zg==", "data after '='");
    decode_bad("Zg=a", "data after '='");
    decode_bad("Zh==", "non-zero bits"); /* canonical form is Zg== */
    decode_bad("Zm9=", "non-zero bits");
    decode_bad("Zm9vYmFy====", "misplaced '='");
}

static void size_cap_before_allocating(void **state) {
    uint8_t *out = (uint8_t *)"x";
    size_t len;
    lv_err err;
    assert_int_equal(lv_base64_decode("Zm9vYmFy", 8, 5, &out, &len, &err), LV_ERR_TOO_LARGE);
    assert_null(out);
    assert_string_equal(err.msg, "base64 data decodes to 6 bytes, over the limit of 5");
    assert_int_equal(lv_base64_decode("Zm9vYmFy", 8, 6, &out, &len, &err), LV_OK);
    assert_int_equal(len, 6);
    free(out);
    /* Validation comes first: malformed text is FORMAT even when over the cap. */
    assert_int_equal(lv_base64_decode("Zm9vYmF", 7, 1, &out, &len, &err), LV_ERR_FORMAT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rfc4648_vectors),       cmocka_unit_test(round_trip_all_lengths),
        cmocka_unit_test(line_breaks_tolerated), cmocka_unit_test(bad_characters),
        cmocka_unit_test(bad_padding),           cmocka_unit_test(size_cap_before_allocating),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
