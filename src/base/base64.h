/*
 * base64.h - standard base64 (RFC 4648 §4: A-Z a-z 0-9 + /, '=' padding),
 * strict, for data: URIs.
 *
 * Strict means: only the standard alphabet (no URL-safe '-' '_'), padding
 * required (the text is a whole number of 4-character groups), '=' only at
 * the end and at most two, and the unused bits of the last group zero. The
 * one tolerance is line breaks ('\r', '\n') anywhere, which MIME encoders and
 * `base64` (76-column lines) insert; they are skipped. Spaces, tabs and every
 * other byte are errors that name the offending offset.
 *
 * The decoded size is computed by a scan that validates everything, before
 * any allocation, so a caller can enforce a size cap before decoding.
 */
#ifndef LV_BASE64_H
#define LV_BASE64_H

#include "common.h"

/* Validates n bytes of base64 text and sets *out_len to the exact decoded
 * size. LV_ERR_FORMAT with the offset and reason on any violation (bad
 * character, bad or misplaced padding, truncated group, non-zero pad bits).
 * An empty text (or only line breaks) is valid and decodes to 0 bytes. */
lv_status lv_base64_decoded_len(const char *s, size_t n, size_t *out_len, lv_err *err);

/* Decodes s into a new heap buffer (caller frees *out; never NULL on success,
 * even for 0 bytes). Refuses with LV_ERR_ARG, before allocating, when the
 * decoded size exceeds max_bytes ("... decodes to N bytes, over the limit
 * of M"). Other failures as lv_base64_decoded_len, and LV_ERR_NOMEM. */
lv_status lv_base64_decode(const char *s, size_t n, size_t max_bytes, uint8_t **out,
                           size_t *out_len, lv_err *err);

/* Encodes n bytes into a new NUL-terminated heap string without line
 * breaks (caller frees). LV_ERR_NOMEM on allocation failure. */
lv_status lv_base64_encode(const uint8_t *data, size_t n, char **out, lv_err *err);

#endif
