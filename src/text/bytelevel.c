/*
 * bytelevel.c - the byte-level (GPT-2) pre-tokenizer pieces, as Hugging
 * Face tokenizers runs them for GPT-2, SmolLM2 and SmolVLM:
 *
 *   Digits     huggingface/tokenizers tokenizers/src/pre_tokenizers/digits.rs:
 *              splits on char::is_numeric (general categories Nd, Nl, No),
 *              each such character isolated (individual_digits) or each run
 *              of them (SplitDelimiterBehavior::Isolated either way);
 *   ByteLevel  huggingface/tokenizers tokenizers/src/pre_tokenizers/byte_level.rs:
 *              on every split that is not already an added token
 *              (PreTokenizedString::split only visits splits without tokens),
 *              prepend " " when add_prefix_space and the split does not start
 *              with " "; then split it with the GPT-2 regex (Isolated), then
 *              replace every byte by its bytes_char() character. So with
 *              add_prefix_space each piece between added tokens, and each
 *              piece a Digits step before it produced, gets its own space.
 *
 * The regex is matched by hand (bl_regex_next), following Oniguruma's
 * leftmost-first alternation with greedy quantifiers. \s is White_Space
 * (uni_is_space), \p{L} and \p{N} come from unicode_tables.c. Matching is
 * case-sensitive, so "'S" is not a contraction.
 */
#include "text/tokenizer_internal.h"
#include "text/unicode_tables.h"

#include <string.h>

/* ===== bytes_to_unicode ===== */

uint32_t bl_byte_to_cp(uint8_t b) {
    if (b <= 0x20) return 0x100 + b;             /* 33 control bytes and space: U+0100.. */
    if (b >= 0x7F && b <= 0xA0) return b + 0xA2; /* next 34: U+0121..U+0142 */
    if (b == 0xAD) return 0x143;                 /* soft hyphen, the last one */
    return b;                                    /* printable: itself */
}

int bl_cp_to_byte(uint32_t cp) {
    if (cp < 0x100) return (cp > 0x20 && cp < 0x7F) || (cp >= 0xA1 && cp != 0xAD) ? (int)cp : -1;
    if (cp <= 0x120) return (int)(cp - 0x100);
    if (cp <= 0x142) return (int)(cp - 0xA2);
    return cp == 0x143 ? 0xAD : -1;
}

lv_status bl_map(lv_buf *dst, const char *s, size_t n) {
    uint8_t chunk[512];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = bl_byte_to_cp((uint8_t)s[i]);
        if (cp < 0x80) {
            chunk[k++] = (uint8_t)cp;
        } else { /* all below U+0800: two bytes */
            chunk[k++] = (uint8_t)(0xC0 | cp >> 6);
            chunk[k++] = (uint8_t)(0x80 | (cp & 0x3F));
        }
        if (k + 2 > sizeof chunk) {
            if (lv_buf_append(dst, (const char *)chunk, k) != LV_OK) return LV_ERR_NOMEM;
            k = 0;
        }
    }
    return lv_buf_append(dst, (const char *)chunk, k);
}

/* ===== Character classes ===== */

enum { CL_SPACE, CL_LETTER, CL_NUMBER, CL_OTHER };

static int char_class(const uint8_t *s, size_t i, size_t *len) {
    uint8_t c = s[i];
    if (c < 0x80) {
        *len = 1;
        if (c == ' ' || (c >= 0x09 && c <= 0x0D)) return CL_SPACE;
        if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return CL_LETTER;
        if (c >= '0' && c <= '9') return CL_NUMBER;
        return CL_OTHER;
    }
    *len = utf8_len(c);
    uint32_t cp = utf8_decode(s + i, *len);
    if (uni_is_space(cp)) return CL_SPACE;
    if (uni_is_letter(cp)) return CL_LETTER;
    if (uni_is_number(cp)) return CL_NUMBER;
    return CL_OTHER;
}

/* End of the run of class cl characters starting at i. */
static size_t run_end(const uint8_t *s, size_t n, size_t i, int cl) {
    while (i < n) {
        size_t len;
        if (char_class(s, i, &len) != cl) break;
        i += len;
    }
    return i;
}

/* ===== The GPT-2 regex ===== */

size_t bl_regex_next(const uint8_t *s, size_t n, size_t i) {
    /* 's|'t|'re|'ve|'m|'ll|'d */
    if (s[i] == '\'' && i + 1 < n) {
        uint8_t a = s[i + 1];
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if (i + 2 < n) {
            uint8_t b = s[i + 2];
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
                return i + 3;
        }
    }
    /*  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+ : the optional space is tried
     * first; without it, a space cannot start any of the three. */
    size_t len;
    size_t j = s[i] == ' ' && i + 1 < n ? i + 1 : i;
    int cl = char_class(s, j, &len);
    if (cl != CL_SPACE) return run_end(s, n, j + len, cl);
    if (j != i) cl = char_class(s, i, &len); /* " " then a space: s[i] itself is a space */
    /* \s+(?!\S): the whitespace run, less its last character when something
     * other than whitespace follows (backtracking one character leaves a
     * space after the match); a run of one character then fails, and \s+
     * takes it. */
    size_t last = i, e = i;
    while (e < n) {
        size_t l;
        if (char_class(s, e, &l) != CL_SPACE) break;
        last = e;
        e += l;
    }
    if (e == n || last == i) return e;
    return last;
}

/* ===== Digits ===== */

size_t bl_digits_next(const uint8_t *s, size_t n, size_t i, bool individual) {
    size_t len;
    bool num = char_class(s, i, &len) == CL_NUMBER;
    if (num && individual) return i + len;
    size_t e = i + len;
    while (e < n) {
        size_t l;
        if ((char_class(s, e, &l) == CL_NUMBER) != num) break;
        e += l;
    }
    return e;
}

/* ===== Lossy UTF-8 ===== */

size_t utf8_bad_len(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed second byte (as utf8_check) */
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c == 0xE0)
        need = 2, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEF)
        need = 2, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c == 0xF0)
        need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3)
        need = 3;
    else if (c == 0xF4)
        need = 3, hi = 0x8F;
    else
        return 1; /* cannot start a character */
    size_t k = 1;
    while (k <= need && k < n && s[k] >= (k == 1 ? lo : 0x80) && s[k] <= (k == 1 ? hi : 0xBF)) k++;
    return k;
}
