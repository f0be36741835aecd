/*
 * grammar.c - grammar text → rules, the pushdown matcher over bytes, and
 * token masks over a vocabulary trie (grammar.h says what each does).
 *
 * Compiled form. Every rule is a list of alternatives; every alternative a
 * run of elements in one flat array, closed by an END element. An element is
 * one 32-bit word: its kind in the top two bits (END, BYTE, CLASS, RULE) and
 * its argument below (the byte, the class index, the rule index). Literals
 * become one BYTE element a byte; groups and repetitions become rules of
 * their own while parsing ("synthetic" rules, remembered with the user rule
 * they were written in, so messages name that one):
 *   x?      S ::= x | ε
 *   x*      S ::= x S | ε
 *   x+      x S, with S = x*
 *   x{m,n}  x … x (m times) O(n-m), with O(k) ::= x O(k-1) | ε, O(1) ::= x | ε
 * Element 0 is RULE root and element 1 END: the bottom of every stack.
 *
 * Matching. A stack is the positions (element indices) of the rules being
 * matched, innermost last; its top is always a BYTE or CLASS element (a
 * RULE on top is replaced at once by each of its alternatives: one stack
 * each, and END pops to the caller). A rule used last in an alternative
 * does not keep its return position (it would only be popped): this tail
 * call keeps x* and recursion at the end of a rule from growing the stack.
 * A CLASS in the middle of a multi-byte code point keeps the bytes so far
 * in the stack's `partial` word. A state is a set of distinct stacks; the
 * empty stack means root has been matched. Left recursion is refused at
 * compile time, so expanding a stack always ends.
 */
#include "engine/grammar.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- compiled grammar -------------------------------------------------- */

enum { EL_END = 0, EL_BYTE = 1, EL_CLASS = 2, EL_RULE = 3 };
#define EL(kind, arg) (((uint32_t)(kind) << 30) | (uint32_t)(arg))
#define EL_KIND(e)    ((e) >> 30)
#define EL_ARG(e)     ((e)&0x3fffffffu)

#define CP_MAX      0x10ffffu
#define MAX_STEPS   100000 /* rule expansions for one byte over all stacks */
#define MAX_TOK_LEN 4096   /* bytes of one vocabulary token */

typedef struct {
    uint32_t lo, hi; /* code points, inclusive */
} cp_range;

typedef struct {
    uint32_t first, n; /* its ranges: sorted, disjoint, not adjacent */
    bool negated;
    uint32_t ascii[4]; /* membership of code points 0..127, negation applied */
} gclass;

struct grammar {
    uint32_t *el;        /* (n_el) elements; see the top of this file */
    uint32_t *alt_start; /* (n_alts) element index where each alternative starts */
    uint32_t *rule_alt;  /* (n_rules + 1) rule r's alternatives: rule_alt[r] .. rule_alt[r+1] */
    gclass *classes;
    cp_range *ranges;
    size_t n_el;
    int n_alts, n_rules, n_classes, n_ranges;
};

/* ---- code points and classes -------------------------------------------- */

static bool class_has(const grammar *g, const gclass *c, uint32_t cp) {
    if (cp < 128) return (c->ascii[cp >> 5] >> (cp & 31)) & 1;
    const cp_range *r = g->ranges + c->first;
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (r[mid].hi < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    bool in = lo < c->n && r[lo].lo <= cp;
    return in != c->negated;
}

/* Whether some code point in [lo, hi] is in the class. */
static bool class_meets(const grammar *g, const gclass *c, uint32_t lo, uint32_t hi) {
    const cp_range *r = g->ranges + c->first;
    for (uint32_t i = 0; i < c->n; i++) {
        if (r[i].hi < lo) continue;
        if (r[i].lo > hi) break;
        if (!c->negated) return true;
        if (r[i].lo <= lo && r[i].hi >= hi) return false; /* all of it excluded */
        return true; /* ranges are not adjacent: a gap lies inside [lo, hi] */
    }
    return c->negated;
}

/* partial: 0, or len << 29 | need << 27 | the bits so far (len 2..4 bytes,
 * need 1..3 of them still to come). */
#define PART(len, need, acc) (((uint32_t)(len) << 29) | ((uint32_t)(need) << 27) | (acc))
#define PART_LEN(p)          ((p) >> 29)
#define PART_NEED(p)         (((p) >> 27) & 3u)
#define PART_ACC(p)          ((p)&0x7ffffffu)

/* One byte into a class: -1 rejected, 0 a whole code point in the class
 * (done), 1 a valid prefix of one that may still be in it (*partial). Only
 * valid UTF-8 gets through: no overlong forms, surrogates or > U+10FFFF. */
static int class_step(const grammar *g, const gclass *c, uint32_t partial, uint8_t b,
                      uint32_t *out_partial) {
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    uint32_t len, need, acc;
    if (!partial) {
        if (b < 0x80) return class_has(g, c, b) ? 0 : -1;
        if ((b & 0xe0) == 0xc0)
            len = 2, acc = b & 0x1f;
        else if ((b & 0xf0) == 0xe0)
            len = 3, acc = b & 0x0f;
        else if ((b & 0xf8) == 0xf0)
            len = 4, acc = b & 0x07;
        else
            return -1;
        need = len - 1;
    } else {
        if ((b & 0xc0) != 0x80) return -1;
        len = PART_LEN(partial);
        need = PART_NEED(partial) - 1;
        acc = (PART_ACC(partial) << 6) | (b & 0x3f);
    }
    uint32_t lo = acc << (6 * need), hi = lo | ((1u << (6 * need)) - 1);
    if (lo < min_cp[len]) lo = min_cp[len];
    if (hi > CP_MAX) hi = CP_MAX;
    if (lo <= 0xdfff && hi >= 0xd800) { /* surrogates: only ED's [D000, DFFF] half-overlaps */
        if (lo >= 0xd800 && hi <= 0xdfff) return -1;
        if (hi <= 0xdfff)
            hi = 0xd7ff;
        else if (lo >= 0xd800)
            lo = 0xe000;
    }
    if (lo > hi || !class_meets(g, c, lo, hi)) return -1;
    if (need == 0) return 0;
    *out_partial = PART(len, need, acc);
    return 1;
}

/* ---- parser ------------------------------------------------------------- */

enum { RK_USER, RK_GROUP, RK_REPEAT };

typedef struct {
    uint32_t *el;
    int n, cap;
} bseq;

typedef struct {
    char *name;   /* user rules; NULL for groups and repetitions */
    int origin;   /* the user rule it was written in (itself for a user rule) */
    int kind;     /* RK_* */
    bool defined; /* user rules: seen on the left of ::= */
    size_t at;    /* byte offset where defined, or first used while not yet defined */
    bseq *alts;
    int n_alts, cap_alts;
} brule;

typedef struct {
    const char *s;
    size_t len, pos;
    int line;
    size_t line_start;
    brule *rules;
    int n_rules, cap_rules;
    gclass *classes;
    int n_classes, cap_classes;
    cp_range *ranges;
    int n_ranges, cap_ranges;
    size_t n_el; /* elements so far (the cap counts all) */
    int origin;  /* user rule being parsed */
    lv_err *err;
    lv_status st; /* first failure; LV_OK while parsing goes on */
} parser;

static lv_status perr(parser *p, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Line and column (1-based; columns count bytes) of byte offset at. */
static void line_col(const parser *p, size_t at, int *line, int *col) {
    size_t ls = 0;
    *line = 1;
    for (size_t i = 0; i < at && i < p->len; i++)
        if (p->s[i] == '\n') ++*line, ls = i + 1;
    *col = (int)(at - ls + 1);
}

/* A failure at byte `at`, reported as "grammar line L, column C: ...". */
static lv_status perr(parser *p, size_t at, const char *fmt, ...) {
    if (p->st != LV_OK) return p->st;
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line, col;
    line_col(p, at, &line, &col);
    p->st = lv_fail(p->err, LV_ERR_ARG, "grammar line %d, column %d: %s", line, col, msg);
    return p->st;
}

static lv_status nomem(parser *p) {
    if (p->st == LV_OK) p->st = lv_fail(p->err, LV_ERR_NOMEM, "out of memory compiling a grammar");
    return p->st;
}

static bool grow(void **a, int *cap, int need, size_t size) {
    if (need <= *cap) return true;
    int nc = *cap ? *cap * 2 : 8;
    while (nc < need) nc *= 2;
    void *na = realloc(*a, (size_t)nc * size);
    if (!na) return false;
    *a = na;
    *cap = nc;
    return true;
}

static lv_status seq_push(parser *p, bseq *q, uint32_t e) {
    if (p->n_el >= GRAMMAR_MAX_ELEMENTS)
        return perr(p, p->pos,
                    "more than %d elements (literal bytes, classes and rule uses, "
                    "repetitions expanded)",
                    GRAMMAR_MAX_ELEMENTS);
    if (!grow((void **)&q->el, &q->cap, q->n + 1, sizeof *q->el)) return nomem(p);
    q->el[q->n++] = e;
    p->n_el++;
    return LV_OK;
}

static int new_rule(parser *p, char *name, int kind) {
    if (p->n_rules >= GRAMMAR_MAX_RULES) {
        free(name);
        perr(p, p->pos, "more than %d rules (groups and repetitions count as rules)",
             GRAMMAR_MAX_RULES);
        return -1;
    }
    if (!grow((void **)&p->rules, &p->cap_rules, p->n_rules + 1, sizeof *p->rules)) {
        free(name);
        nomem(p);
        return -1;
    }
    int r = p->n_rules++;
    p->rules[r] = (brule){.name = name, .origin = kind == RK_USER ? r : p->origin, .kind = kind};
    return r;
}

/* A new empty alternative of rule r; its index, or -1. */
static int new_alt(parser *p, int r) {
    brule *b = &p->rules[r];
    if (!grow((void **)&b->alts, &b->cap_alts, b->n_alts + 1, sizeof *b->alts)) {
        nomem(p);
        return -1;
    }
    b->alts[b->n_alts] = (bseq){0};
    return b->n_alts++;
}

static bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

static void skip_space(parser *p) {
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
            p->pos++;
        else if (c == '#')
            while (p->pos < p->len && p->s[p->pos] != '\n') p->pos++;
        else
            break;
    }
}

static size_t name_len(const parser *p, size_t at) {
    size_t n = 0;
    while (at + n < p->len && is_name_char(p->s[at + n])) n++;
    return n;
}

/* Whether `name ::=` starts at the current position. */
static bool at_rule_start(parser *p) {
    size_t save = p->pos, n = name_len(p, p->pos);
    if (n == 0) return false;
    p->pos += n;
    skip_space(p);
    bool yes = p->len - p->pos >= 3 && memcmp(p->s + p->pos, "::=", 3) == 0;
    p->pos = save;
    return yes;
}

/* The user rule named s[at, at+n), created (undefined) on first mention. */
static int rule_by_name(parser *p, size_t at, size_t n) {
    for (int r = 0; r < p->n_rules; r++) {
        const char *name = p->rules[r].name;
        if (name && strlen(name) == n && memcmp(name, p->s + at, n) == 0) return r;
    }
    char *name = malloc(n + 1);
    if (!name) {
        nomem(p);
        return -1;
    }
    memcpy(name, p->s + at, n);
    name[n] = '\0';
    return new_rule(p, name, RK_USER);
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* n hex digits at the current position → *v; advances past them. */
static lv_status read_hex(parser *p, size_t at, int n, uint32_t *v) {
    *v = 0;
    for (int i = 0; i < n; i++) {
        int h = p->pos < p->len ? hex_value(p->s[p->pos]) : -1;
        if (h < 0) return perr(p, at, "bad escape: \\%c needs %d hex digits", p->s[at + 1], n);
        *v = *v << 4 | (uint32_t)h;
        p->pos++;
    }
    return LV_OK;
}

/* Decodes one valid UTF-8 character at the current position. */
static lv_status read_utf8(parser *p, uint32_t *cp) {
    size_t at = p->pos;
    uint8_t b = (uint8_t)p->s[p->pos++];
    if (b < 0x80) {
        *cp = b;
        return LV_OK;
    }
    uint32_t part = 0;
    int st = -1;
    /* a class of everything: class_step then checks UTF-8 validity alone */
    static const cp_range all = {0, CP_MAX};
    grammar any = {.ranges = (cp_range *)&all};
    gclass c = {.first = 0, .n = 1};
    for (;;) {
        st = class_step(&any, &c, part, b, &part);
        if (st != 1) break;
        if (p->pos >= p->len) break;
        b = (uint8_t)p->s[p->pos++];
    }
    if (st != 0) return perr(p, at, "invalid UTF-8 in a character class");
    /* the code point: decode the bytes again */
    size_t n = p->pos - at;
    const uint8_t *s = (const uint8_t *)p->s + at;
    uint32_t v = s[0] & (n == 2 ? 0x1f : n == 3 ? 0x0f : 0x07);
    for (size_t i = 1; i < n; i++) v = v << 6 | (s[i] & 0x3f);
    *cp = v;
    return LV_OK;
}

static int utf8_encode(uint32_t cp, uint8_t out[4]) {
    if (cp < 0x80) return out[0] = (uint8_t)cp, 1;
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xc0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xe0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (uint8_t)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (uint8_t)(0xf0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (uint8_t)(0x80 | (cp & 0x3f));
    return 4;
}

/* "literal" → one BYTE element a byte, appended to q. */
static lv_status parse_literal(parser *p, bseq *q) {
    size_t open = p->pos++;
    for (;;) {
        if (p->pos >= p->len) return perr(p, open, "unterminated literal");
        size_t at = p->pos;
        char c = p->s[p->pos++];
        if (c == '"') return LV_OK;
        if (c == '\n') return perr(p, at, "newline inside a literal (write \\n)");
        if (c != '\\') {
            if (seq_push(p, q, EL(EL_BYTE, (uint8_t)c))) return p->st;
            continue;
        }
        char e = p->pos < p->len ? p->s[p->pos++] : '\0';
        uint32_t v;
        uint8_t buf[4];
        int n = 1;
        switch (e) {
            case 'n':
                buf[0] = '\n';
                break;
            case 't':
                buf[0] = '\t';
                break;
            case 'r':
                buf[0] = '\r';
                break;
            case '\\':
                buf[0] = '\\';
                break;
            case '"':
                buf[0] = '"';
                break;
            case 'x':
                if (read_hex(p, at, 2, &v)) return p->st;
                buf[0] = (uint8_t)v;
                break;
            case 'u':
                if (read_hex(p, at, 4, &v)) return p->st;
                if (v >= 0xd800 && v <= 0xdfff)
                    return perr(p, at, "bad escape: \\u%04X is a surrogate, not a character", v);
                n = utf8_encode(v, buf);
                break;
            default:
                return perr(p, at,
                            "bad escape \\%c in a literal (known: \\n \\t \\r \\\\ \\\" "
                            "\\xHH \\uHHHH)",
                            e ? e : ' ');
        }
        for (int i = 0; i < n; i++)
            if (seq_push(p, q, EL(EL_BYTE, buf[i]))) return p->st;
    }
}

/* One character of a class (raw UTF-8 or an escape) → *cp. */
static lv_status class_char(parser *p, size_t open, uint32_t *cp) {
    if (p->pos >= p->len) return perr(p, open, "unterminated character class");
    size_t at = p->pos;
    char c = p->s[p->pos];
    if (c == '\n') return perr(p, at, "newline inside a character class (write \\n)");
    if (c != '\\') return read_utf8(p, cp);
    p->pos++;
    char e = p->pos < p->len ? p->s[p->pos++] : '\0';
    switch (e) {
        case 'n':
            *cp = '\n';
            return LV_OK;
        case 't':
            *cp = '\t';
            return LV_OK;
        case 'r':
            *cp = '\r';
            return LV_OK;
        case '\\':
        case '"':
        case ']':
        case '[':
        case '-':
        case '^':
            *cp = (uint8_t)e;
            return LV_OK;
        case 'x':
            return read_hex(p, at, 2, cp);
        case 'u':
            return read_hex(p, at, 4, cp);
        default:
            return perr(p, at,
                        "bad escape \\%c in a character class (known: \\n \\t \\r \\\\ "
                        "\\\" \\] \\[ \\- \\^ \\xHH \\uHHHH)",
                        e ? e : ' ');
    }
}

static int cmp_range(const void *a, const void *b) {
    const cp_range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Sorts and merges the class's ranges [first, n_ranges) and fills its ASCII bitmap. */
static lv_status finish_class(parser *p, size_t open, bool negated, uint32_t first) {
    cp_range *r = p->ranges + first;
    uint32_t n = (uint32_t)p->n_ranges - first, k = 0;
    qsort(r, n, sizeof *r, cmp_range);
    for (uint32_t i = 0; i < n; i++) {
        if (k > 0 && r[i].lo <= r[k - 1].hi + 1) {
            if (r[i].hi > r[k - 1].hi) r[k - 1].hi = r[i].hi;
        } else
            r[k++] = r[i];
    }
    p->n_ranges = (int)(first + k);
    /* [^...] covering every code point but the surrogates matches nothing */
    bool all = false;
    for (uint32_t i = 0; i < k && !all; i++) all = r[i].lo == 0 && r[i].hi >= 0xd7ff;
    if (all) {
        bool top = false;
        for (uint32_t i = 0; i < k; i++) top |= r[i].lo <= 0xe000 && r[i].hi == CP_MAX;
        if (negated && top) return perr(p, open, "character class matches nothing");
    }
    if (!grow((void **)&p->classes, &p->cap_classes, p->n_classes + 1, sizeof *p->classes))
        return nomem(p);
    gclass *c = &p->classes[p->n_classes++];
    *c = (gclass){.first = first, .n = k, .negated = negated};
    for (uint32_t cp = 0; cp < 128; cp++) {
        bool in = false;
        for (uint32_t i = 0; i < k; i++) in |= r[i].lo <= cp && cp <= r[i].hi;
        if (in != negated) c->ascii[cp >> 5] |= 1u << (cp & 31);
    }
    return LV_OK;
}

static lv_status add_range(parser *p, uint32_t lo, uint32_t hi) {
    if (!grow((void **)&p->ranges, &p->cap_ranges, p->n_ranges + 1, sizeof *p->ranges))
        return nomem(p);
    p->ranges[p->n_ranges++] = (cp_range){lo, hi};
    return LV_OK;
}

/* [class] or [^class] → one CLASS element. */
static lv_status parse_class(parser *p, bseq *q) {
    size_t open = p->pos++;
    bool negated = p->pos < p->len && p->s[p->pos] == '^';
    if (negated) p->pos++;
    uint32_t first = (uint32_t)p->n_ranges;
    for (;;) {
        if (p->pos >= p->len) return perr(p, open, "unterminated character class");
        if (p->s[p->pos] == ']') break;
        size_t at = p->pos;
        uint32_t lo, hi;
        if (class_char(p, open, &lo)) return p->st;
        hi = lo;
        if (p->len - p->pos >= 2 && p->s[p->pos] == '-' && p->s[p->pos + 1] != ']') {
            p->pos++;
            if (class_char(p, open, &hi)) return p->st;
            if (hi < lo) return perr(p, at, "range U+%04X-U+%04X is backwards", lo, hi);
        }
        if (add_range(p, lo, hi)) return p->st;
    }
    p->pos++;
    if ((uint32_t)p->n_ranges == first) return perr(p, open, "empty character class");
    if (finish_class(p, open, negated, first)) return p->st;
    return seq_push(p, q, EL(EL_CLASS, p->n_classes - 1));
}

/* `.`: any one code point. */
static lv_status any_class(parser *p, bseq *q) {
    uint32_t first = (uint32_t)p->n_ranges;
    if (add_range(p, 0, CP_MAX) || finish_class(p, p->pos, false, first)) return p->st;
    p->pos++;
    return seq_push(p, q, EL(EL_CLASS, p->n_classes - 1));
}

static lv_status parse_alternatives(parser *p, int r, int depth);

/* One atom (literal, class, `.`, name, group) → elements appended to q. */
static lv_status parse_atom(parser *p, bseq *q, int depth) {
    if (p->pos >= p->len) return perr(p, p->pos, "expected an element, found the end");
    char c = p->s[p->pos];
    if (c == '"') return parse_literal(p, q);
    if (c == '[') return parse_class(p, q);
    if (c == '.') return any_class(p, q);
    if (c == '(') {
        size_t open = p->pos++;
        if (depth + 1 > GRAMMAR_MAX_NESTING)
            return perr(p, open, "groups nested more than %d deep", GRAMMAR_MAX_NESTING);
        int g = new_rule(p, NULL, RK_GROUP);
        if (g < 0 || parse_alternatives(p, g, depth + 1)) return p->st;
        skip_space(p);
        if (p->pos >= p->len || p->s[p->pos] != ')') return perr(p, open, "'(' is never closed");
        p->pos++;
        return seq_push(p, q, EL(EL_RULE, g));
    }
    size_t n = name_len(p, p->pos);
    if (n == 0) return perr(p, p->pos, "unexpected '%c': expected an element", c);
    int r = rule_by_name(p, p->pos, n);
    if (r < 0) return p->st;
    if (!p->rules[r].defined && p->rules[r].at == 0) p->rules[r].at = p->pos; /* first use */
    p->pos += n;
    return seq_push(p, q, EL(EL_RULE, r));
}

static lv_status read_count(parser *p, uint32_t *v) {
    size_t at = p->pos;
    uint64_t x = 0;
    while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') {
        x = x * 10 + (uint64_t)(p->s[p->pos++] - '0');
        if (x > GRAMMAR_MAX_REPEAT)
            return perr(p, at, "repetition count over the limit %d", GRAMMAR_MAX_REPEAT);
    }
    if (p->pos == at) return perr(p, at, "expected a number in {m,n}");
    *v = (uint32_t)x;
    return LV_OK;
}

/* A rule for x* (star) or x? (opt), or O(k) of x{m,n}: S ::= x [S'] | ε. */
static int repeat_rule(parser *p, uint32_t x, int self_tail, int tail) {
    int s = new_rule(p, NULL, RK_REPEAT);
    if (s < 0) return -1;
    int a = new_alt(p, s);
    if (a < 0 || seq_push(p, &p->rules[s].alts[a], x)) return -1;
    int next = self_tail ? s : tail;
    if (next >= 0 && seq_push(p, &p->rules[s].alts[a], EL(EL_RULE, next))) return -1;
    if (new_alt(p, s) < 0) return -1;
    return s;
}

/* Applies a postfix (if any) to the atom in `atom`, appending the result to q. */
static lv_status parse_postfix(parser *p, bseq *q, bseq *atom) {
    char c = p->pos < p->len ? p->s[p->pos] : '\0';
    uint32_t m = 0, n = 0;
    bool bounded = true;
    if (c == '*')
        m = 0, bounded = false;
    else if (c == '+')
        m = 1, bounded = false;
    else if (c == '?')
        m = 0, n = 1;
    else if (c == '{') {
        size_t open = p->pos++;
        skip_space(p);
        if (read_count(p, &m)) return p->st;
        skip_space(p);
        n = m;
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            skip_space(p);
            if (p->pos < p->len && p->s[p->pos] == '}')
                bounded = false;
            else if (read_count(p, &n))
                return p->st;
            skip_space(p);
        }
        if (p->pos >= p->len || p->s[p->pos] != '}') return perr(p, open, "'{' is never closed");
        if (bounded && n < m) return perr(p, open, "repetition {%u,%u}: max below min", m, n);
    } else {
        for (int i = 0; i < atom->n; i++)
            if (seq_push(p, q, atom->el[i])) return p->st;
        return LV_OK;
    }
    p->pos++;
    if (atom->n == 0) return LV_OK; /* "" repeated is still "" */
    uint32_t x = atom->el[0];
    if (atom->n > 1) { /* a multi-byte literal: a rule of its own */
        int g = new_rule(p, NULL, RK_GROUP);
        int a = g < 0 ? -1 : new_alt(p, g);
        if (a < 0) return p->st;
        for (int i = 0; i < atom->n; i++)
            if (seq_push(p, &p->rules[g].alts[a], atom->el[i])) return p->st;
        x = EL(EL_RULE, g);
    }
    for (uint32_t i = 0; i < m; i++)
        if (seq_push(p, q, x)) return p->st;
    int tail = -1;
    if (!bounded)
        tail = repeat_rule(p, x, 1, -1);
    else
        for (uint32_t k = 0; k < n - m; k++) tail = repeat_rule(p, x, 0, tail);
    if (p->st) return p->st;
    return tail >= 0 ? seq_push(p, q, EL(EL_RULE, tail)) : LV_OK;
}

/* Elements until `|`, `)`, the next `name ::=` or the end → alternative a of r. */
static lv_status parse_sequence(parser *p, int r, int a, int depth) {
    bseq atom = {0};
    for (;;) {
        skip_space(p);
        if (p->pos >= p->len) break;
        char c = p->s[p->pos];
        if (c == '|' || c == ')') break;
        if (is_name_char(c) && at_rule_start(p)) break;
        atom.n = 0;
        if (parse_atom(p, &atom, depth)) break;
        p->n_el -= (size_t)atom.n; /* counted again where they land */
        if (parse_postfix(p, &p->rules[r].alts[a], &atom)) break;
    }
    free(atom.el);
    return p->st;
}

static lv_status parse_alternatives(parser *p, int r, int depth) {
    for (;;) {
        int a = new_alt(p, r);
        if (a < 0 || parse_sequence(p, r, a, depth)) return p->st;
        skip_space(p);
        if (p->pos >= p->len || p->s[p->pos] != '|') return LV_OK;
        p->pos++;
    }
}

static lv_status parse_rules(parser *p) {
    for (;;) {
        skip_space(p);
        if (p->pos >= p->len) return LV_OK;
        size_t at = p->pos, n = name_len(p, at);
        if (n == 0) return perr(p, at, "expected a rule name");
        p->pos += n;
        skip_space(p);
        if (p->len - p->pos < 3 || memcmp(p->s + p->pos, "::=", 3) != 0)
            return perr(p, p->pos, "expected '::=' after the rule name '%.*s'", (int)n, p->s + at);
        p->pos += 3;
        int r = rule_by_name(p, at, n);
        if (r < 0) return p->st;
        brule *b = &p->rules[r];
        if (b->defined) {
            int line, col;
            line_col(p, b->at, &line, &col);
            return perr(p, at, "rule '%s' is defined twice (first at line %d, column %d)", b->name,
                        line, col);
        }
        b->defined = true;
        b->at = at;
        p->origin = r;
        if (parse_alternatives(p, r, 0)) return p->st;
    }
}

/* ---- checks ------------------------------------------------------------- */

static const char *origin_name(const parser *p, int r) {
    return p->rules[p->rules[r].origin].name;
}

/* Fixpoint: rules that can match some finite text (prod) and the empty text (nullable). */
static void solve(const parser *p, bool *ok, bool nullable) {
    for (bool changed = true; changed;) {
        changed = false;
        for (int r = 0; r < p->n_rules; r++) {
            if (ok[r]) continue;
            const brule *b = &p->rules[r];
            for (int a = 0; a < b->n_alts && !ok[r]; a++) {
                bool all = true;
                for (int i = 0; i < b->alts[a].n && all; i++) {
                    uint32_t e = b->alts[a].el[i];
                    all = EL_KIND(e) == EL_RULE ? ok[EL_ARG(e)] : !nullable;
                }
                if (all) ok[r] = changed = true;
            }
        }
    }
}

/* Left recursion: a cycle in "r can start with s without consuming input". */
static lv_status check_left_recursion(parser *p, const bool *nullable) {
    int n = p->n_rules;
    uint8_t *color = calloc((size_t)n, 1); /* 0 new, 1 on the path, 2 done */
    int *stack = malloc((size_t)n * sizeof *stack), *next = calloc((size_t)n, sizeof *next);
    if (!color || !stack || !next) {
        free(color), free(stack), free(next);
        return nomem(p);
    }
    /* next[r]: the (alt, element) cursor of r's edges, as alt << 16 | element */
    for (int root = 0; root < n && p->st == LV_OK; root++) {
        if (color[root]) continue;
        int sp = 0;
        stack[sp++] = root;
        color[root] = 1;
        while (sp > 0 && p->st == LV_OK) {
            int r = stack[sp - 1];
            const brule *b = &p->rules[r];
            int a = next[r] >> 16, i = next[r] & 0xffff, s = -1;
            while (a < b->n_alts && s < 0) {
                const bseq *q = &b->alts[a];
                if (i < q->n && EL_KIND(q->el[i]) == EL_RULE) {
                    s = (int)EL_ARG(q->el[i]);
                    if (nullable[s])
                        i++; /* the next element starts r too */
                    else
                        a++, i = 0;
                } else
                    a++, i = 0;
            }
            next[r] = a << 16 | i;
            if (s < 0) {
                color[r] = 2;
                sp--;
            } else if (color[s] == 1) {
                const brule *rs = &p->rules[s];
                if (rs->kind == RK_REPEAT)
                    lv_fail(p->err, LV_ERR_ARG,
                            "rule '%s': a repetition (* + {m,}) over something that can match "
                            "empty input",
                            origin_name(p, s));
                else
                    lv_fail(p->err, LV_ERR_ARG,
                            "rule '%s' is left-recursive: it can reach itself before consuming "
                            "input",
                            origin_name(p, s));
                p->st = LV_ERR_ARG;
            } else if (color[s] == 0) {
                color[s] = 1;
                stack[sp++] = s;
            }
        }
    }
    free(color), free(stack), free(next);
    return p->st;
}

static lv_status check(parser *p) {
    for (int r = 0; r < p->n_rules; r++) {
        brule *b = &p->rules[r];
        if (b->kind == RK_USER && !b->defined)
            return perr(p, b->at, "rule '%s' is used but never defined", b->name);
    }
    int root = -1;
    for (int r = 0; r < p->n_rules; r++)
        if (p->rules[r].name && strcmp(p->rules[r].name, "root") == 0) root = r;
    if (root < 0)
        return p->st = lv_fail(p->err, LV_ERR_ARG, "grammar has no rule 'root' (the start rule)");
    bool *prod = calloc((size_t)p->n_rules, sizeof *prod);
    bool *nullable = calloc((size_t)p->n_rules, sizeof *nullable);
    if (!prod || !nullable) {
        free(prod), free(nullable);
        return nomem(p);
    }
    solve(p, prod, false);
    solve(p, nullable, true);
    int bad = -1;
    for (int r = 0; r < p->n_rules && bad < 0; r++)
        if (!prod[r] && p->rules[r].kind == RK_USER) bad = r;
    for (int r = 0; r < p->n_rules && bad < 0; r++)
        if (!prod[r]) bad = r;
    if (bad >= 0)
        p->st =
            lv_fail(p->err, LV_ERR_ARG, "rule '%s' can never end: every alternative needs it again",
                    origin_name(p, bad));
    else
        check_left_recursion(p, nullable);
    free(prod), free(nullable);
    /* root becomes rule 0's target through element 0: remember it in origin */
    p->origin = root;
    return p->st;
}

/* ---- compile ------------------------------------------------------------ */

static lv_status flatten(parser *p, grammar *g) {
    size_t n_el = 2;
    int n_alts = 0;
    for (int r = 0; r < p->n_rules; r++) {
        n_alts += p->rules[r].n_alts;
        for (int a = 0; a < p->rules[r].n_alts; a++) n_el += (size_t)p->rules[r].alts[a].n + 1;
    }
    g->el = malloc(n_el * sizeof *g->el);
    g->alt_start = malloc((size_t)n_alts * sizeof *g->alt_start);
    g->rule_alt = malloc((size_t)(p->n_rules + 1) * sizeof *g->rule_alt);
    if (!g->el || !g->alt_start || !g->rule_alt) return nomem(p);
    g->el[0] = EL(EL_RULE, p->origin);
    g->el[1] = EL(EL_END, 0);
    size_t k = 2;
    int na = 0;
    for (int r = 0; r < p->n_rules; r++) {
        g->rule_alt[r] = (uint32_t)na;
        for (int a = 0; a < p->rules[r].n_alts; a++) {
            const bseq *q = &p->rules[r].alts[a];
            g->alt_start[na++] = (uint32_t)k;
            if (q->n) memcpy(g->el + k, q->el, (size_t)q->n * sizeof *q->el);
            k += (size_t)q->n;
            g->el[k++] = EL(EL_END, 0);
        }
    }
    g->rule_alt[p->n_rules] = (uint32_t)na;
    g->n_el = n_el;
    g->n_alts = n_alts;
    g->n_rules = p->n_rules;
    g->classes = p->classes, g->n_classes = p->n_classes;
    g->ranges = p->ranges, g->n_ranges = p->n_ranges;
    p->classes = NULL, p->ranges = NULL;
    return LV_OK;
}

lv_status grammar_compile(const char *text, size_t len, grammar **out, lv_err *err) {
    *out = NULL;
    if (len > GRAMMAR_MAX_TEXT)
        return lv_fail(err, LV_ERR_ARG, "grammar of %zu bytes: at most %u", len, GRAMMAR_MAX_TEXT);
    parser p = {.s = text, .len = len, .err = err};
    grammar *g = calloc(1, sizeof *g);
    if (!g) return lv_fail(err, LV_ERR_NOMEM, "out of memory compiling a grammar");
    if (parse_rules(&p) == LV_OK && check(&p) == LV_OK) flatten(&p, g);
    for (int r = 0; r < p.n_rules; r++) {
        for (int a = 0; a < p.rules[r].n_alts; a++) free(p.rules[r].alts[a].el);
        free(p.rules[r].alts);
        free(p.rules[r].name);
    }
    free(p.rules);
    free(p.classes);
    free(p.ranges);
    if (p.st != LV_OK) {
        grammar_free(g);
        return p.st;
    }
    *out = g;
    return LV_OK;
}

void grammar_free(grammar *g) {
    if (!g) return;
    free(g->el);
    free(g->alt_start);
    free(g->rule_alt);
    free(g->classes);
    free(g->ranges);
    free(g);
}

/* ---- states: sets of stacks --------------------------------------------- */

/* A state's stacks, packed: for each, [depth, partial, positions...]. */
typedef struct {
    uint32_t *w;
    size_t nw, cap_w;
    uint32_t *off;  /* (n) where each stack starts in w */
    uint32_t *hash; /* (n) its hash, for finding duplicates */
    int n, cap;
} gstate;

enum { FAIL_NONE, FAIL_STACKS, FAIL_DEPTH, FAIL_STEPS, FAIL_NOMEM };

/* What one step needs besides its states: room to branch stacks in. */
typedef struct {
    const grammar *g;
    uint32_t *scratch; /* frame arrays of the expansions under way, one after another */
    size_t cap_scratch;
    int steps; /* rule expansions in this step */
    int fail;  /* FAIL_*: the step went over a limit */
} gctx;

static void state_free(gstate *s) {
    free(s->w);
    free(s->off);
    free(s->hash);
    memset(s, 0, sizeof *s);
}

static uint32_t stack_hash(const uint32_t *f, uint32_t n, uint32_t partial) {
    uint32_t h = 2166136261u ^ partial;
    h = (h ^ n) * 16777619u;
    for (uint32_t i = 0; i < n; i++) h = (h ^ f[i]) * 16777619u;
    return h ^ (h >> 15);
}

/* Adds the stack f[0..n) (+ partial) to s unless it is there already. */
static void emit(gctx *c, gstate *s, const uint32_t *f, uint32_t n, uint32_t partial) {
    uint32_t h = stack_hash(f, n, partial);
    for (int i = 0; i < s->n; i++) {
        const uint32_t *o = s->w + s->off[i];
        if (s->hash[i] == h && o[0] == n && o[1] == partial &&
            (n == 0 || memcmp(o + 2, f, n * sizeof *f) == 0))
            return;
    }
    if (s->n >= GRAMMAR_MAX_STACKS) {
        c->fail = FAIL_STACKS;
        return;
    }
    if (s->n == s->cap) {
        int nc = s->cap ? s->cap * 2 : 8;
        uint32_t *off = realloc(s->off, (size_t)nc * sizeof *off);
        if (off) s->off = off;
        uint32_t *hash = realloc(s->hash, (size_t)nc * sizeof *hash);
        if (hash) s->hash = hash;
        if (!off || !hash) {
            c->fail = FAIL_NOMEM;
            return;
        }
        s->cap = nc;
    }
    if (s->nw + n + 2 > s->cap_w) {
        size_t nc = s->cap_w ? s->cap_w * 2 : 64;
        while (nc < s->nw + n + 2) nc *= 2;
        uint32_t *w = realloc(s->w, nc * sizeof *w);
        if (!w) {
            c->fail = FAIL_NOMEM;
            return;
        }
        s->w = w;
        s->cap_w = nc;
    }
    s->off[s->n] = (uint32_t)s->nw;
    s->hash[s->n++] = h;
    s->w[s->nw++] = n;
    s->w[s->nw++] = partial;
    if (n) memcpy(s->w + s->nw, f, n * sizeof *f);
    s->nw += n;
}

static bool scratch_room(gctx *c, size_t need) {
    if (need <= c->cap_scratch) return true;
    size_t nc = c->cap_scratch ? c->cap_scratch * 2 : 256;
    while (nc < need) nc *= 2;
    uint32_t *a = realloc(c->scratch, nc * sizeof *a);
    if (!a) {
        c->fail = FAIL_NOMEM;
        return false;
    }
    c->scratch = a;
    c->cap_scratch = nc;
    return true;
}

/* The stack scratch[base .. base+n) with its top at any element → the stacks
 * whose tops are BYTE or CLASS (or the empty stack), added to out. RULE tops
 * branch into their alternatives, END tops pop. scratch must have room for
 * base + n + 1. */
static void expand(gctx *c, gstate *out, size_t base, uint32_t n) {
    const grammar *g = c->g;
    for (;;) {
        if (c->fail) return;
        if (n == 0) {
            emit(c, out, NULL, 0, 0);
            return;
        }
        uint32_t *f = c->scratch + base, top = f[n - 1], e = g->el[top];
        if (EL_KIND(e) == EL_END) {
            n--;
            continue;
        }
        if (EL_KIND(e) != EL_RULE) {
            emit(c, out, f, n, 0);
            return;
        }
        if (++c->steps > MAX_STEPS) {
            c->fail = FAIL_STEPS;
            return;
        }
        if (EL_KIND(g->el[top + 1]) == EL_END)
            n--; /* tail call: nothing to return to */
        else
            f[n - 1] = top + 1;
        if (n + 1 > GRAMMAR_MAX_DEPTH) {
            c->fail = FAIL_DEPTH;
            return;
        }
        uint32_t r = EL_ARG(e), a0 = g->rule_alt[r], a1 = g->rule_alt[r + 1];
        for (uint32_t a = a0; a + 1 < a1; a++) { /* all but the last on a copy */
            size_t nb = base + n + 1;
            if (!scratch_room(c, nb + n + 2)) return;
            f = c->scratch + base;
            memcpy(c->scratch + nb, f, n * sizeof *f);
            c->scratch[nb + n] = g->alt_start[a];
            expand(c, out, nb, n + 1);
            if (c->fail) return;
        }
        if (!scratch_room(c, base + n + 2)) return;
        c->scratch[base + n] = g->alt_start[a1 - 1];
        n++;
    }
}

/* out = the stacks of in after byte b (none: b is rejected). */
static void advance(gctx *c, const gstate *in, gstate *out, uint8_t b) {
    const grammar *g = c->g;
    out->n = 0;
    out->nw = 0;
    c->steps = 0;
    for (int i = 0; i < in->n && !c->fail; i++) {
        const uint32_t *s = in->w + in->off[i];
        uint32_t n = s[0], partial = s[1];
        const uint32_t *f = s + 2;
        if (n == 0) continue; /* root matched: nothing more */
        uint32_t e = g->el[f[n - 1]];
        if (EL_KIND(e) == EL_BYTE) {
            if (EL_ARG(e) != b) continue;
        } else { /* EL_CLASS */
            uint32_t np = 0;
            int r = class_step(g, &g->classes[EL_ARG(e)], partial, b, &np);
            if (r < 0) continue;
            if (r == 1) {
                emit(c, out, f, n, np);
                continue;
            }
        }
        if (!scratch_room(c, n + 2)) return;
        memcpy(c->scratch, f, n * sizeof *f);
        c->scratch[n - 1]++;
        expand(c, out, 0, n);
    }
}

static lv_status state_copy(gstate *dst, const gstate *src) {
    gstate t = {0};
    t.cap_w = src->nw ? src->nw : 1;
    t.cap = src->n ? src->n : 1;
    t.w = malloc(t.cap_w * sizeof *t.w);
    t.off = malloc((size_t)t.cap * sizeof *t.off);
    t.hash = malloc((size_t)t.cap * sizeof *t.hash);
    if (!t.w || !t.off || !t.hash) {
        state_free(&t);
        return LV_ERR_NOMEM;
    }
    if (src->nw) memcpy(t.w, src->w, src->nw * sizeof *t.w);
    if (src->n) {
        memcpy(t.off, src->off, (size_t)src->n * sizeof *t.off);
        memcpy(t.hash, src->hash, (size_t)src->n * sizeof *t.hash);
    }
    t.nw = src->nw;
    t.n = src->n;
    state_free(dst);
    *dst = t;
    return LV_OK;
}

/* ---- matcher ------------------------------------------------------------ */

typedef struct {
    const grammar_vocab *v;
    uint64_t hash;
    uint32_t *key; /* the state, canonical (stacks sorted) */
    size_t n_key;
    uint32_t *bits;
    uint64_t used; /* tick of the last use; 0 = empty slot */
} mask_entry;

struct grammar_matcher {
    const grammar *g;
    gstate cur;    /* the state after everything accepted */
    gstate tmp[2]; /* steps of accept_bytes */
    gstate *walk;  /* (n_walk) the trie walk's state at each depth */
    int n_walk;
    gctx c;
    lv_status fail_st; /* sticky: the first limit hit */
    lv_err fail;
    mask_entry cache[GRAMMAR_MASK_CACHE];
    uint64_t tick, n_computed, n_cached;
    uint32_t *canon; /* the canonical key being looked up */
    size_t cap_canon;
    int *order;
    int cap_order;
};

/* Turns a step's failure into the sticky error (the first one stays). */
static void note_fail(grammar_matcher *m) {
    int f = m->c.fail;
    m->c.fail = FAIL_NONE;
    if (f == FAIL_NONE || m->fail_st != LV_OK) return;
    if (f == FAIL_NOMEM)
        m->fail_st = lv_fail(&m->fail, LV_ERR_NOMEM, "out of memory matching a grammar");
    else if (f == FAIL_STACKS)
        m->fail_st =
            lv_fail(&m->fail, LV_ERR_TOO_LARGE,
                    "grammar too ambiguous: more than %d parse stacks at once", GRAMMAR_MAX_STACKS);
    else if (f == FAIL_DEPTH)
        m->fail_st = lv_fail(&m->fail, LV_ERR_TOO_LARGE,
                             "text nested too deeply for the grammar: more than %d rule "
                             "positions in one stack",
                             GRAMMAR_MAX_DEPTH);
    else
        m->fail_st =
            lv_fail(&m->fail, LV_ERR_TOO_LARGE,
                    "grammar too ambiguous: more than %d rule expansions for one byte", MAX_STEPS);
}

lv_status grammar_matcher_new(const grammar *g, grammar_matcher **out, lv_err *err) {
    *out = NULL;
    grammar_matcher *m = calloc(1, sizeof *m);
    if (!m) return lv_fail(err, LV_ERR_NOMEM, "out of memory for a grammar matcher");
    m->g = g;
    m->c.g = g;
    if (scratch_room(&m->c, 16)) {
        m->c.scratch[0] = 0; /* element 0: RULE root */
        expand(&m->c, &m->cur, 0, 1);
    }
    note_fail(m);
    if (m->fail_st != LV_OK) {
        lv_status st = lv_fail(err, m->fail_st, "%s", m->fail.msg);
        grammar_matcher_free(m);
        return st;
    }
    *out = m;
    return LV_OK;
}

lv_status grammar_matcher_clone(const grammar_matcher *m, grammar_matcher **out, lv_err *err) {
    *out = NULL;
    grammar_matcher *k = calloc(1, sizeof *k);
    if (!k || state_copy(&k->cur, &m->cur) != LV_OK) {
        free(k);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory for a grammar matcher");
    }
    k->g = m->g;
    k->c.g = m->g;
    k->fail_st = m->fail_st;
    k->fail = m->fail;
    *out = k;
    return LV_OK;
}

void grammar_matcher_free(grammar_matcher *m) {
    if (!m) return;
    state_free(&m->cur);
    state_free(&m->tmp[0]);
    state_free(&m->tmp[1]);
    for (int i = 0; i < m->n_walk; i++) state_free(&m->walk[i]);
    free(m->walk);
    for (int i = 0; i < GRAMMAR_MASK_CACHE; i++) {
        free(m->cache[i].key);
        free(m->cache[i].bits);
    }
    free(m->canon);
    free(m->order);
    free(m->c.scratch);
    free(m);
}

bool grammar_matcher_accept_bytes(grammar_matcher *m, const char *bytes, size_t n) {
    const gstate *src = &m->cur;
    for (size_t i = 0; i < n; i++) {
        gstate *dst = &m->tmp[i & 1];
        advance(&m->c, src, dst, (uint8_t)bytes[i]);
        if (m->c.fail) {
            note_fail(m);
            return false;
        }
        if (dst->n == 0) return false;
        src = dst;
    }
    if (n > 0) { /* the last step's state becomes current */
        gstate t = m->cur;
        m->cur = *src;
        m->tmp[(n - 1) & 1] = t;
    }
    return true;
}

bool grammar_matcher_is_complete(const grammar_matcher *m) {
    for (int i = 0; i < m->cur.n; i++)
        if (m->cur.w[m->cur.off[i]] == 0) return true;
    return false;
}

bool grammar_matcher_can_continue(const grammar_matcher *m) {
    for (int i = 0; i < m->cur.n; i++)
        if (m->cur.w[m->cur.off[i]] != 0) return true;
    return false;
}

lv_status grammar_matcher_error(const grammar_matcher *m, lv_err *err) {
    if (m->fail_st == LV_OK) return LV_OK;
    return lv_fail(err, m->fail_st, "%s", m->fail.msg);
}

/* ---- vocabulary trie ----------------------------------------------------- */

/* Nodes in depth-first order: a node's subtree is [node, end). Node 0 is the
 * root (no bytes); tokens ending at a node are ids[tok_first ..+ n_tok]. */
typedef struct {
    uint32_t end;
    uint32_t tok_first;
    uint32_t n_tok;
    uint16_t depth;
    uint8_t byte;
} trie_node;

struct grammar_vocab {
    int n_vocab;
    char *bytes;     /* every token's bytes, one after another */
    size_t *tok_off; /* (n_vocab + 1) token i is bytes[tok_off[i] .. tok_off[i+1]) */
    int32_t *ids;    /* tokens with bytes, sorted by them */
    trie_node *nodes;
    uint32_t n_nodes;
    int max_depth;
};

typedef struct {
    const uint8_t *p;
    size_t len;
    int32_t id;
} tok_ref;

static int cmp_tok(const void *a, const void *b) {
    const tok_ref *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->p, y->p, n);
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Builds the trie from the tokens sorted by bytes: each token adds the
 * nodes below its common prefix with the one before, in depth-first order. */
static lv_status build_trie(grammar_vocab *v, tok_ref *t, int n, lv_err *err) {
    size_t total = 1;
    for (int i = 0; i < n; i++) total += t[i].len;
    v->nodes = malloc(total * sizeof *v->nodes);
    uint32_t *path = malloc((size_t)(v->max_depth + 1) * sizeof *path);
    if (!v->nodes || !path) {
        free(path);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory for the vocabulary trie");
    }
    v->nodes[0] = (trie_node){0};
    path[0] = 0;
    uint32_t nn = 1;
    size_t depth = 0; /* of the path's last node */
    for (int i = 0; i < n; i++) {
        size_t common = 0;
        if (i > 0) {
            size_t m = t[i - 1].len < t[i].len ? t[i - 1].len : t[i].len;
            while (common < m && t[i - 1].p[common] == t[i].p[common]) common++;
        }
        for (; depth > common; depth--) v->nodes[path[depth]].end = nn; /* subtrees closed */
        for (size_t d = common; d < t[i].len; d++) {
            v->nodes[nn] = (trie_node){.depth = (uint16_t)(d + 1), .byte = t[i].p[d]};
            path[++depth] = nn++;
        }
        trie_node *at = &v->nodes[path[t[i].len]];
        if (at->n_tok == 0) at->tok_first = (uint32_t)i;
        at->n_tok++;
        v->ids[i] = t[i].id;
    }
    for (; depth > 0; depth--) v->nodes[path[depth]].end = nn;
    v->nodes[0].end = nn;
    v->n_nodes = nn;
    free(path);
    return LV_OK;
}

lv_status grammar_vocab_new(const char *const *token_bytes, const size_t *token_len, int n_vocab,
                            grammar_vocab **out, lv_err *err) {
    *out = NULL;
    if (n_vocab < 0) return lv_fail(err, LV_ERR_ARG, "vocabulary of %d tokens", n_vocab);
    size_t total = 0;
    int n_real = 0, max_len = 0;
    for (int i = 0; i < n_vocab; i++) {
        if (token_len[i] > MAX_TOK_LEN)
            return lv_fail(err, LV_ERR_ARG, "token %d has %zu bytes: at most %d", i, token_len[i],
                           MAX_TOK_LEN);
        total += token_len[i];
        if (token_len[i]) n_real++;
        if ((int)token_len[i] > max_len) max_len = (int)token_len[i];
    }
    grammar_vocab *v = calloc(1, sizeof *v);
    tok_ref *t = malloc(((size_t)n_real + 1) * sizeof *t);
    if (v) {
        v->bytes = malloc(total + 1);
        v->tok_off = malloc(((size_t)n_vocab + 1) * sizeof *v->tok_off);
        v->ids = malloc(((size_t)n_real + 1) * sizeof *v->ids);
    }
    if (!v || !t || !v->bytes || !v->tok_off || !v->ids) {
        free(t);
        grammar_vocab_free(v);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory for a vocabulary of %d tokens", n_vocab);
    }
    v->n_vocab = n_vocab;
    v->max_depth = max_len;
    size_t off = 0;
    int k = 0;
    for (int i = 0; i < n_vocab; i++) {
        v->tok_off[i] = off;
        if (token_len[i]) memcpy(v->bytes + off, token_bytes[i], token_len[i]);
        if (token_len[i])
            t[k++] = (tok_ref){(const uint8_t *)v->bytes + off, token_len[i], (int32_t)i};
        off += token_len[i];
    }
    v->tok_off[n_vocab] = off;
    qsort(t, (size_t)k, sizeof *t, cmp_tok);
    lv_status st = build_trie(v, t, k, err);
    free(t);
    if (st != LV_OK) {
        grammar_vocab_free(v);
        return st;
    }
    *out = v;
    return LV_OK;
}

void grammar_vocab_free(grammar_vocab *v) {
    if (!v) return;
    free(v->bytes);
    free(v->tok_off);
    free(v->ids);
    free(v->nodes);
    free(v);
}

int grammar_vocab_size(const grammar_vocab *v) {
    return v->n_vocab;
}

bool grammar_matcher_accept_token(grammar_matcher *m, const grammar_vocab *v, int32_t id) {
    if (id < 0 || id >= v->n_vocab) return false;
    size_t a = v->tok_off[id], b = v->tok_off[id + 1];
    if (a == b) return false;
    return grammar_matcher_accept_bytes(m, v->bytes + a, b - a);
}

/* ---- masks -------------------------------------------------------------- */

static int cmp_stacks(const uint32_t *a, const uint32_t *b) {
    uint32_t na = a[0] + 2, nb = b[0] + 2;
    for (uint32_t i = 0; i < na && i < nb; i++)
        if (a[i] != b[i]) return a[i] < b[i] ? -1 : 1;
    return na < nb ? -1 : na > nb;
}

/* m->canon = the current state with its stacks in sorted order, so that the
 * same set reached two ways is the same key. Returns its hash. */
static uint64_t canonical_key(grammar_matcher *m, size_t *n_key) {
    const gstate *s = &m->cur;
    if (s->n > m->cap_order) {
        int *o = realloc(m->order, (size_t)s->n * sizeof *o);
        if (!o) return (m->c.fail = FAIL_NOMEM), 0;
        m->order = o;
        m->cap_order = s->n;
    }
    if (s->nw > m->cap_canon) {
        uint32_t *k = realloc(m->canon, s->nw * sizeof *k);
        if (!k) return (m->c.fail = FAIL_NOMEM), 0;
        m->canon = k;
        m->cap_canon = s->nw;
    }
    for (int i = 0; i < s->n; i++) { /* insertion sort: states hold few stacks */
        int j = i;
        while (j > 0 && cmp_stacks(s->w + s->off[m->order[j - 1]], s->w + s->off[i]) > 0) {
            m->order[j] = m->order[j - 1];
            j--;
        }
        m->order[j] = i;
    }
    uint64_t h = 0xcbf29ce484222325ull;
    size_t k = 0;
    for (int i = 0; i < s->n; i++) {
        const uint32_t *st = s->w + s->off[m->order[i]];
        for (uint32_t j = 0; j < st[0] + 2; j++) {
            m->canon[k++] = st[j];
            h = (h ^ st[j]) * 0x100000001b3ull;
        }
    }
    *n_key = k;
    return h;
}

/* Walks the trie from the current state: a token's bit is set when every
 * byte down to its node was accepted; a rejected byte skips its subtree. */
static lv_status walk_trie(grammar_matcher *m, const grammar_vocab *v, uint32_t *bits) {
    if (m->n_walk < v->max_depth + 1) {
        gstate *w = realloc(m->walk, (size_t)(v->max_depth + 1) * sizeof *w);
        if (!w) return LV_ERR_NOMEM;
        memset(w + m->n_walk, 0, (size_t)(v->max_depth + 1 - m->n_walk) * sizeof *w);
        m->walk = w;
        m->n_walk = v->max_depth + 1;
    }
    memset(bits, 0, (size_t)(v->n_vocab + 31) / 32 * sizeof *bits);
    for (uint32_t i = 1; i < v->n_nodes;) {
        const trie_node *nd = &v->nodes[i];
        const gstate *src = nd->depth == 1 ? &m->cur : &m->walk[nd->depth - 1];
        gstate *dst = &m->walk[nd->depth];
        advance(&m->c, src, dst, nd->byte);
        if (m->c.fail || dst->n == 0) {
            if (m->c.fail) note_fail(m);
            i = nd->end;
            continue;
        }
        for (uint32_t t = 0; t < nd->n_tok; t++) {
            int32_t id = v->ids[nd->tok_first + t];
            bits[id >> 5] |= 1u << (id & 31);
        }
        i++;
    }
    return m->fail_st;
}

lv_status grammar_matcher_mask(grammar_matcher *m, const grammar_vocab *v, uint32_t *allowed_bits,
                               lv_err *err) {
    size_t words = (size_t)(v->n_vocab + 31) / 32, n_key = 0;
    uint64_t h = canonical_key(m, &n_key);
    note_fail(m);
    if (m->fail_st != LV_OK) return grammar_matcher_error(m, err);
    m->tick++;
    mask_entry *slot = &m->cache[0];
    for (int i = 0; i < GRAMMAR_MASK_CACHE; i++) {
        mask_entry *e = &m->cache[i];
        if (e->used && e->v == v && e->hash == h && e->n_key == n_key &&
            memcmp(e->key, m->canon, n_key * sizeof *e->key) == 0) {
            e->used = m->tick;
            memcpy(allowed_bits, e->bits, words * sizeof *allowed_bits);
            m->n_cached++;
            return LV_OK;
        }
        if (e->used < slot->used) slot = e; /* least recently used, or empty */
    }
    lv_status st = walk_trie(m, v, allowed_bits);
    if (st != LV_OK) return grammar_matcher_error(m, err);
    m->n_computed++;
    /* remember it; a failed allocation only costs the cache entry */
    uint32_t *key = realloc(slot->key, (n_key ? n_key : 1) * sizeof *key);
    if (key) slot->key = key;
    uint32_t *bits = slot->v == v && slot->bits ? slot->bits : NULL;
    if (!bits) {
        free(slot->bits);
        slot->bits = bits = malloc(words * sizeof *bits);
    }
    if (!key || !bits) {
        slot->used = 0;
        return LV_OK;
    }
    memcpy(slot->key, m->canon, n_key * sizeof *key);
    memcpy(bits, allowed_bits, words * sizeof *bits);
    slot->v = v;
    slot->hash = h;
    slot->n_key = n_key;
    slot->used = m->tick;
    return LV_OK;
}

void grammar_matcher_mask_stats(const grammar_matcher *m, uint64_t *computed, uint64_t *cached) {
    *computed = m->n_computed;
    *cached = m->n_cached;
}
