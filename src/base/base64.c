/* base64.c - see base64.h. */
#include "base64.h"

#include <stdlib.h>

static const char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* 0..63 for alphabet characters, -1 for anything else. */
static int sextet(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

static int is_break(unsigned char c) {
    return c == '\r' || c == '\n';
}

lv_status lv_base64_decoded_len(const char *s, size_t n, size_t *out_len, lv_err *err) {
    size_t chars = 0; /* significant characters seen (line breaks excluded) */
    size_t pad = 0;   /* '=' seen so far; once > 0 only '=' and breaks may follow */
    int last = 0;     /* sextet of the last data character */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_break(c)) continue;
        if (c == '=') {
            /* '=' may only fill positions 2 and 3 of the final group. */
            if (chars % 4 < 2)
                return lv_fail(err, LV_ERR_FORMAT, "base64: misplaced '=' padding at offset %zu",
                               i);
            pad++;
            chars++;
            continue;
        }
        int v = sextet(c);
        if (v < 0) {
            if (c >= 0x20 && c < 0x7f)
                return lv_fail(err, LV_ERR_FORMAT, "base64: invalid character '%c' at offset %zu",
                               c, i);
            return lv_fail(err, LV_ERR_FORMAT, "base64: invalid byte 0x%02x at offset %zu", c, i);
        }
        if (pad)
            return lv_fail(err, LV_ERR_FORMAT,
                           "base64: data after '=' padding at offset %zu (padding ends the text)",
                           i);
        last = v;
        chars++;
    }
    if (chars % 4 != 0)
        return lv_fail(err, LV_ERR_FORMAT,
                       "base64: truncated: %zu characters is not a multiple of 4 "
                       "(missing '=' padding or cut-off data)",
                       chars);
    if (pad == 1 && (last & 0x3))
        return lv_fail(err, LV_ERR_FORMAT, "base64: non-zero bits in the last group before '='");
    if (pad == 2 && (last & 0xf))
        return lv_fail(err, LV_ERR_FORMAT, "base64: non-zero bits in the last group before '=='");
    *out_len = chars / 4 * 3 - pad;
    return LV_OK;
}

lv_status lv_base64_decode(const char *s, size_t n, size_t max_bytes, uint8_t **out,
                           size_t *out_len, lv_err *err) {
    *out = NULL;
    *out_len = 0;
    size_t len;
    lv_status st = lv_base64_decoded_len(s, n, &len, err);
    if (st != LV_OK) return st;
    if (len > max_bytes)
        return lv_fail(err, LV_ERR_TOO_LARGE,
                       "base64 data decodes to %zu bytes, over the limit of %zu", len, max_bytes);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return lv_fail(err, LV_ERR_NOMEM, "base64: cannot allocate %zu bytes", len);
    /* Already validated: every significant character is a sextet or '='. */
    size_t o = 0;
    uint32_t acc = 0;
    int nacc = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_break(c) || c == '=') continue;
        acc = acc << 6 | (uint32_t)sextet(c);
        if (++nacc == 4) {
            buf[o++] = (uint8_t)(acc >> 16);
            buf[o++] = (uint8_t)(acc >> 8);
            buf[o++] = (uint8_t)acc;
            acc = 0;
            nacc = 0;
        }
    }
    if (nacc == 3) { /* one '=' */
        buf[o++] = (uint8_t)(acc >> 10);
        buf[o++] = (uint8_t)(acc >> 2);
    } else if (nacc == 2) { /* two '=' */
        buf[o++] = (uint8_t)(acc >> 4);
    }
    *out = buf;
    *out_len = o;
    return LV_OK;
}

lv_status lv_base64_encode(const uint8_t *data, size_t n, char **out, lv_err *err) {
    *out = NULL;
    if (n > (SIZE_MAX - 1) / 4 * 3 - 3)
        return lv_fail(err, LV_ERR_NOMEM, "base64: %zu bytes is too large to encode", n);
    size_t olen = (n + 2) / 3 * 4;
    char *buf = malloc(olen + 1);
    if (!buf) return lv_fail(err, LV_ERR_NOMEM, "base64: cannot allocate %zu bytes", olen + 1);
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        buf[o++] = ALPHABET[v >> 18 & 63];
        buf[o++] = ALPHABET[v >> 12 & 63];
        buf[o++] = ALPHABET[v >> 6 & 63];
        buf[o++] = ALPHABET[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)data[i] << 16;
        buf[o++] = ALPHABET[v >> 18 & 63];
        buf[o++] = ALPHABET[v >> 12 & 63];
        buf[o++] = '=';
        buf[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8;
        buf[o++] = ALPHABET[v >> 18 & 63];
        buf[o++] = ALPHABET[v >> 12 & 63];
        buf[o++] = ALPHABET[v >> 6 & 63];
        buf[o++] = '=';
    }
    buf[o] = '\0';
    *out = buf;
    return LV_OK;
}
