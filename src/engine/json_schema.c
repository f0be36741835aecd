/*
 * json_schema.c - a JSON Schema → grammar text (json_schema.h).
 *
 * One walk over the schema, top down, turns each schema into an expression:
 * a fixed rule for a plain type (string, number, ...), a literal for a
 * const, or a rule of its own for objects, arrays, enums, anyOf and type
 * lists. Each entry of $defs / definitions gets its rule name before any
 * schema is compiled, so a $ref is just that name and references may
 * recurse. Two checks then run on the schema, not on the text: no reference
 * reaches itself before any JSON text is produced (left recursion), and
 * every definition can produce a finite instance (a fixpoint: a definition
 * can end once one of its alternatives needs only definitions that can).
 *
 * Objects with optional properties. Members must come in declared order,
 * each optional one present or not, with a comma between those present.
 * With properties p0..pn-1 and the first required one at r:
 *     tail-i ::= (ws "," ws kv-i)? tail-(i+1)      (no ? when pi is required)
 *     object ::= "{" ws (kv-0 tail-1 | kv-1 tail-2 | ... | kv-r tail-(r+1)) ws "}"
 * (the first member present is one of p0..pr; when none is required the
 * group is optional). Each property appears at most twice: linear size.
 *
 * Whitespace: ws never meets another ws, so the grammar stays unambiguous
 * around tokens.
 */
#include "engine/json_schema.h"
#include "io/json_type.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the fixed rules ----------------------------------------------------------------------
 * Written out only when used (with what they use). Their names carry no
 * "-<number>" ending, which every generated name has, so they never clash. */

enum {
    B_WS,
    B_STRING,
    B_CHAR,
    B_INTEGER,
    B_NUMBER,
    B_BOOLEAN,
    B_NULL,
    B_VALUE,
    B_OBJECT,
    B_MEMBER,
    B_ARRAY,
    B_DATE,
    B_TIME,
    B_DATE_TIME,
    B_UUID,
    B_EMAIL,
    B_IPV4,
    B_OCTET,
    B_COUNT
};

#define BIT(b) (1u << (b))

static const struct {
    const char *name;
    const char *body;
    unsigned uses; /* BIT()s of the fixed rules the body names */
} fixed[B_COUNT] = {
    [B_WS] = {"ws", "\" \"?", 0},
    [B_STRING] = {"string", "\"\\\"\" char* \"\\\"\"", BIT(B_CHAR)},
    /* any code point but " \ and controls, or an escape */
    [B_CHAR] = {"char", "[^\"\\\\\\x00-\\x1f] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4})",
                0},
    [B_INTEGER] = {"integer", "\"-\"? (\"0\" | [1-9] [0-9]{0,18})", 0},
    /* at most 19 integer digits and a 2-digit exponent: below 1e119, a finite
     * double in every client (1e334 would be JSON.parse's Infinity) */
    [B_NUMBER] = {"number", "integer (\".\" [0-9]{1,16})? ([eE] [+\\-]? [0-9]{1,2})?",
                  BIT(B_INTEGER)},
    [B_BOOLEAN] = {"boolean", "\"true\" | \"false\"", 0},
    [B_NULL] = {"null", "\"null\"", 0},
    [B_VALUE] = {"value", "object | array | string | number | boolean | null",
                 BIT(B_OBJECT) | BIT(B_ARRAY) | BIT(B_STRING) | BIT(B_NUMBER) | BIT(B_BOOLEAN) |
                     BIT(B_NULL)},
    [B_OBJECT] = {"object", "\"{\" ws (member (ws \",\" ws member)* ws)? \"}\"",
                  BIT(B_WS) | BIT(B_MEMBER)},
    [B_MEMBER] = {"member", "string ws \":\" ws value", BIT(B_STRING) | BIT(B_WS) | BIT(B_VALUE)},
    [B_ARRAY] = {"array", "\"[\" ws (value (ws \",\" ws value)* ws)? \"]\"",
                 BIT(B_WS) | BIT(B_VALUE)},
    /* formats: regular approximations, see json_schema.h */
    [B_DATE] =
        {"date",
         "[0-9]{4} \"-\" (\"0\" [1-9] | \"1\" [0-2]) \"-\" (\"0\" [1-9] | [12] [0-9] | \"3\" "
         "[01])",
         0},
    [B_TIME] = {"time",
                "([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9] \":\" ([0-5] [0-9] | \"60\") (\".\" "
                "[0-9]{1,9})? ([Zz] | [+\\-] ([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9])",
                0},
    [B_DATE_TIME] = {"date-time", "date [Tt] time", BIT(B_DATE) | BIT(B_TIME)},
    [B_UUID] = {"uuid",
                "[0-9a-fA-F]{8} \"-\" [0-9a-fA-F]{4} \"-\" [0-9a-fA-F]{4} \"-\" [0-9a-fA-F]{4} "
                "\"-\" [0-9a-fA-F]{12}",
                0},
    [B_EMAIL] = {"email",
                 "[a-zA-Z0-9._%+\\-]{1,64} \"@\" [a-zA-Z0-9\\-]{1,63} (\".\" "
                 "[a-zA-Z0-9\\-]{1,63}){1,8}",
                 0},
    [B_IPV4] = {"ipv4", "octet \".\" octet \".\" octet \".\" octet", BIT(B_OCTET)},
    [B_OCTET] = {"octet",
                 "\"25\" [0-5] | \"2\" [0-4] [0-9] | \"1\" [0-9] [0-9] | [1-9] [0-9] | [0-9]", 0},
};

static const struct {
    const char *name;
    int rule;
} formats[] = {{"date", B_DATE}, {"time", B_TIME},   {"date-time", B_DATE_TIME},
               {"uuid", B_UUID}, {"email", B_EMAIL}, {"ipv4", B_IPV4}};

/* ---- keywords -----------------------------------------------------------------------------
 * Every keyword a schema may carry, and what it belongs to. Anything else is
 * refused: a constraint that is not enforced must not pass unnoticed. */

enum { K_ANY, K_OBJECT, K_ARRAY, K_STRING, K_NOTE, K_TOP };

static const struct {
    const char *name;
    int group;
} keywords[] = {
    {"type", K_ANY},         {"enum", K_ANY},
    {"const", K_ANY},        {"anyOf", K_ANY},
    {"$ref", K_ANY},         {"properties", K_OBJECT},
    {"required", K_OBJECT},  {"additionalProperties", K_OBJECT},
    {"items", K_ARRAY},      {"minItems", K_ARRAY},
    {"maxItems", K_ARRAY},   {"minLength", K_STRING},
    {"maxLength", K_STRING}, {"format", K_STRING},
    {"description", K_NOTE}, {"title", K_NOTE},
    {"$comment", K_NOTE},    {"examples", K_NOTE},
    {"default", K_NOTE},     {"$schema", K_NOTE},
    {"$id", K_NOTE},         {"$defs", K_TOP},
    {"definitions", K_TOP},
};

/* JSON types, in the order of their names below */
enum { T_STRING, T_NUMBER, T_INTEGER, T_BOOLEAN, T_NULL, T_OBJECT, T_ARRAY, T_COUNT };
static const char *const type_names[T_COUNT] = {"string", "number", "integer", "boolean",
                                                "null",   "object", "array"};
/* the keyword group that belongs to each type (K_ANY: none) */
static const int type_group[T_COUNT] = {K_STRING, K_ANY, K_ANY, K_ANY, K_ANY, K_OBJECT, K_ARRAY};

static int keyword_group(const char *key) {
    for (size_t i = 0; i < LV_ARRAY_LEN(keywords); i++)
        if (!strcmp(key, keywords[i].name)) return keywords[i].group;
    return -1;
}

/* ---- the compiler's state ----------------------------------------------------------------- */

#define NO_RULE ((size_t)-1)

typedef struct {
    char *name;  /* [a-z0-9-]+ */
    lv_buf body; /* its alternatives */
} rule;

typedef struct {
    const char *key; /* its name under $defs or definitions (borrowed from the schema) */
    bool legacy;     /* under "definitions" */
    json_t *schema;  /* borrowed */
    size_t rule;     /* its rule */
    bool finite;     /* can produce a finite instance (the fixpoint) */
    int mark;        /* left-recursion walk: 0 not seen, 1 on the path, 2 done */
} def;

typedef struct {
    rule *rules; /* rules[0] is root */
    size_t n_rules, cap_rules;
    def *defs;
    size_t n_defs;
    unsigned used;      /* BIT()s of the fixed rules named so far */
    unsigned serial;    /* the "-<number>" of the next generated name */
    const char *prefix; /* put before every generated name, root's too ("" by default) */
    bool nomem;         /* an append failed: the text is incomplete */
    char path[512];     /* where the walk is: "schema.properties.age" */
    size_t path_len;
    lv_err *err;
} gen;

/* Appends to b; a failure is remembered in g->nomem and reported at the end. */
static void put(gen *g, lv_buf *b, const char *s) {
    if (!g->nomem && lv_buf_puts(b, s)) g->nomem = true;
}

/* For short pieces only: a rule name, a number (at most 127 bytes). */
static void putf(gen *g, lv_buf *b, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void putf(gen *g, lv_buf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    put(g, b, tmp);
}

static void put_buf(gen *g, lv_buf *b, const lv_buf *src) {
    if (src->data) put(g, b, src->data);
}

/* Names a fixed rule, marking it used. */
static void put_fixed(gen *g, lv_buf *b, int which) {
    g->used |= BIT(which);
    put(g, b, fixed[which].name);
}

/* A grammar literal of n bytes of UTF-8 text: "..." with " \ and controls escaped. */
static void put_literal(gen *g, lv_buf *b, const char *s, size_t n) {
    put(g, b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char one[2] = {(char)c, 0};
        if (c == '"')
            put(g, b, "\\\"");
        else if (c == '\\')
            put(g, b, "\\\\");
        else if (c == '\n')
            put(g, b, "\\n");
        else if (c == '\t')
            put(g, b, "\\t");
        else if (c == '\r')
            put(g, b, "\\r");
        else if (c < 0x20 || c == 0x7f)
            putf(g, b, "\\x%02x", c);
        else
            put(g, b, one);
    }
    put(g, b, "\"");
}

/* The postfix for lo..hi repetitions (hi < 0: no upper bound); "" for exactly one. */
static void put_repeat(gen *g, lv_buf *b, long lo, long hi) {
    if (hi < 0) {
        if (lo == 0)
            put(g, b, "*");
        else if (lo == 1)
            put(g, b, "+");
        else
            putf(g, b, "{%ld,}", lo);
    } else if (lo == hi) {
        if (lo != 1) putf(g, b, "{%ld}", lo);
    } else if (lo == 0 && hi == 1) {
        put(g, b, "?");
    } else {
        putf(g, b, "{%ld,%ld}", lo, hi);
    }
}

/* ---- paths and messages ------------------------------------------------------------------- */

/* Appends a piece to the path; returns the length to give back to path_pop. */
static size_t path_push(gen *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static size_t path_push(gen *g, const char *fmt, ...) {
    size_t saved = g->path_len, room = sizeof g->path - saved;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(g->path + saved, room, fmt, ap);
    va_end(ap);
    g->path_len = n < 0 ? saved : (size_t)n >= room ? sizeof g->path - 1 : saved + (size_t)n;
    return saved;
}

static void path_pop(gen *g, size_t saved) {
    g->path_len = saved;
    g->path[saved] = '\0';
}

/* LV_ERR_ARG with "<path>: <message>" (a long path keeps its end). */
static lv_status fail(gen *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static lv_status fail(gen *g, const char *fmt, ...) {
    char msg[LV_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *p = g->path, *dots = "";
    if (g->path_len > 100) p = g->path + g->path_len - 100, dots = "...";
    return lv_fail(g->err, LV_ERR_ARG, "%s%s: %s", dots, p, msg);
}

/* ---- rules -------------------------------------------------------------------------------- */

/* A new rule named after hint: its letters and digits, lowercased, '-' for
 * the rest, then "-<serial>" (unique: the serial is). */
static lv_status new_rule(gen *g, const char *hint, size_t *idx) {
    if (g->n_rules >= JSON_SCHEMA_MAX_RULES + 1)
        return fail(g, "the grammar needs more than %d rules", JSON_SCHEMA_MAX_RULES);
    if (g->n_rules == g->cap_rules) {
        size_t cap = g->cap_rules ? g->cap_rules * 2 : 32;
        rule *r = realloc(g->rules, cap * sizeof *r);
        if (!r) return lv_fail(g->err, LV_ERR_NOMEM, "out of memory");
        g->rules = r;
        g->cap_rules = cap;
    }
    char name[80];
    size_t n = (size_t)snprintf(name, 32, "%s", g->prefix ? g->prefix : "");
    size_t start = n;
    if (n > 31) n = start = 31;
    for (const char *s = hint; *s && n < start + 24; s++) {
        char c = *s;
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (ok)
            name[n++] = c;
        else if (n > start && name[n - 1] != '-')
            name[n++] = '-';
    }
    while (n > start && name[n - 1] == '-') n--;
    if (n == start) name[n++] = 'x';
    snprintf(name + n, sizeof name - n, "-%u", ++g->serial);
    rule *r = &g->rules[g->n_rules];
    *r = (rule){.name = strdup(name)};
    if (!r->name) return lv_fail(g->err, LV_ERR_NOMEM, "out of memory");
    *idx = g->n_rules++;
    return LV_OK;
}

/* The rule a compound schema writes its body into: *into when the caller
 * reserved one (root, a definition), else a new one. Names it in out. */
static lv_status take_rule(gen *g, const char *hint, size_t *into, lv_buf *out, size_t *idx) {
    if (*into != NO_RULE) {
        *idx = *into;
        *into = NO_RULE;
    } else {
        lv_status st = new_rule(g, hint, idx);
        if (st) return st;
    }
    put(g, out, g->rules[*idx].name);
    return LV_OK;
}

/* Gives body to rule idx (the rule owns it from now on). */
static void set_body(gen *g, size_t idx, lv_buf *body) {
    lv_buf_free(&g->rules[idx].body);
    g->rules[idx].body = *body;
    *body = (lv_buf){0};
}

/* ---- definitions and references ----------------------------------------------------------- */

/* The definition a "$ref" string names, or NULL. Only "#/$defs/NAME" and
 * "#/definitions/NAME"; NAME with JSON Pointer's ~0 (~) and ~1 (/). */
static def *find_def(gen *g, const char *ref, bool *local) {
    bool legacy;
    const char *name;
    if (!strncmp(ref, "#/$defs/", 8))
        legacy = false, name = ref + 8;
    else if (!strncmp(ref, "#/definitions/", 14))
        legacy = true, name = ref + 14;
    else
        return *local = false, NULL;
    *local = !strchr(name, '/');
    if (!*local) return NULL;
    for (size_t i = 0; i < g->n_defs; i++) {
        def *d = &g->defs[i];
        if (d->legacy != legacy) continue;
        const char *a = d->key, *b = name; /* compare key with the unescaped name */
        while (*a && *b) {
            char c = *b++;
            if (c == '~' && (*b == '0' || *b == '1')) c = *b++ == '0' ? '~' : '/';
            if (c != *a) break;
            a++;
        }
        if (!*a && !*b) return d;
    }
    return NULL;
}

static lv_status gen_ref(gen *g, const json_t *v, lv_buf *out) {
    const char *ref = json_string_value(v);
    char buf[64];
    if (!ref)
        return fail(g, "\"$ref\" must be a string, got %s", json_describe(v, buf, sizeof buf));
    bool local;
    def *d = find_def(g, ref, &local);
    if (!local)
        return fail(g,
                    "\"$ref\" \"%.60s\" is not supported: only \"#/$defs/NAME\" and "
                    "\"#/definitions/NAME\"",
                    ref);
    if (!d) return fail(g, "\"$ref\" \"%.60s\" is not defined", ref);
    put(g, out, g->rules[d->rule].name);
    return LV_OK;
}

/* ---- types -------------------------------------------------------------------------------- */

/* The types s allows, in its order, into types[*n]: its "type" (a name or a
 * list), or when absent the one type whose keywords it uses; *n = 0: any
 * value. Checks that every type keyword present belongs to a type allowed. */
static lv_status schema_types(gen *g, const json_t *s, int types[T_COUNT], size_t *n) {
    const json_t *t = json_object_get(s, "type");
    char buf[64];
    *n = 0;
    if (t) {
        size_t count = json_is_array(t) ? json_array_size(t) : 1;
        if (json_is_array(t) && !count) return fail(g, "\"type\" must not be an empty list");
        for (size_t i = 0; i < count; i++) {
            const json_t *v = json_is_array(t) ? json_array_get(t, i) : t;
            const char *name = json_string_value(v);
            int k = 0;
            while (name && k < T_COUNT && strcmp(name, type_names[k])) k++;
            if (!name || k == T_COUNT)
                return fail(g, "\"type\": %s is not a JSON Schema type",
                            json_describe(v, buf, sizeof buf));
            bool dup = false;
            for (size_t j = 0; j < *n; j++) dup |= types[j] == k;
            if (!dup) types[(*n)++] = k;
        }
    }
    /* the keyword groups in use, and whether each belongs to an allowed type */
    const char *key;
    json_t *v;
    int inferred = -1;
    json_object_foreach((json_t *)s, key, v) {
        int group = keyword_group(key);
        if (group != K_OBJECT && group != K_ARRAY && group != K_STRING) continue;
        int owner = group == K_OBJECT ? T_OBJECT : group == K_ARRAY ? T_ARRAY : T_STRING;
        if (!t) {
            if (inferred >= 0 && inferred != owner)
                return fail(g,
                            "\"%s\" (of type \"%s\") beside keywords of type \"%s\" needs a "
                            "\"type\"",
                            key, type_names[owner], type_names[inferred]);
            inferred = owner;
            continue;
        }
        bool allowed = false;
        for (size_t j = 0; j < *n; j++) allowed |= type_group[types[j]] == group;
        if (!allowed)
            return fail(g, "\"%s\" applies to type \"%s\", which \"type\" does not allow", key,
                        type_names[owner]);
    }
    if (!t && inferred >= 0) types[(*n)++] = inferred;
    return LV_OK;
}

/* An integer keyword in [0, JSON_SCHEMA_MAX_REPEAT], or dflt when absent. */
static lv_status count_keyword(gen *g, const json_t *s, const char *key, long dflt, long *out) {
    const json_t *v = json_object_get(s, key);
    int64_t n;
    char buf[64];
    *out = dflt;
    if (!v) return LV_OK;
    if (!json_as_int64(v, &n) || n < 0 || n > JSON_SCHEMA_MAX_REPEAT)
        return fail(g, "\"%s\": expected an integer in [0, %d], got %s", key,
                    JSON_SCHEMA_MAX_REPEAT, json_describe(v, buf, sizeof buf));
    *out = (long)n;
    return LV_OK;
}

/* The minX/maxX pair of keywords; hi = -1 when max is absent. */
static lv_status bounds(gen *g, const json_t *s, const char *min_key, const char *max_key, long *lo,
                        long *hi) {
    lv_status st = count_keyword(g, s, min_key, 0, lo);
    if (!st) st = count_keyword(g, s, max_key, -1, hi);
    if (st) return st;
    if (*hi >= 0 && *lo > *hi)
        return fail(g, "\"%s\" %ld is greater than \"%s\" %ld", min_key, *lo, max_key, *hi);
    return LV_OK;
}

/* ---- values: enum, const ------------------------------------------------------------------ */

/* Whether value v is an instance of type k. */
static bool value_is(const json_t *v, int k) {
    int64_t n;
    switch (k) {
        case T_STRING:
            return json_is_string(v);
        case T_NUMBER:
            return json_is_number(v);
        case T_INTEGER:
            return json_as_int64(v, &n);
        case T_BOOLEAN:
            return json_is_boolean(v);
        case T_NULL:
            return json_is_null(v);
        default:
            return false;
    }
}

/* The compact JSON text of a scalar, as a literal. A real is written in the
 * fewest digits that read back as the same double. */
static void put_value(gen *g, lv_buf *b, const json_t *v) {
    char text[64];
    if (json_is_string(v)) {
        char *s = json_dumps_whole(v, JSON_ENCODE_ANY | JSON_COMPACT);
        if (!s) {
            g->nomem = true;
            return;
        }
        put_literal(g, b, s, strlen(s));
        free(s);
        return;
    }
    if (json_is_integer(v)) {
        snprintf(text, sizeof text, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        for (int digits = 15; digits <= 17; digits++) {
            snprintf(text, sizeof text, "%.*g", digits, d);
            if (strtod(text, NULL) == d) break;
        }
    } else {
        snprintf(text, sizeof text, "%s",
                 json_is_true(v)    ? "true"
                 : json_is_false(v) ? "false"
                                    : "null");
    }
    put_literal(g, b, text, strlen(text));
}

/* enum (a list) or const (one value): each value as its literal. */
static lv_status gen_enum(gen *g, const json_t *s, const int *types, size_t n_types,
                          const char *hint, size_t *into, lv_buf *out) {
    const json_t *e = json_object_get(s, "enum"), *c = json_object_get(s, "const");
    const char *key = e ? "enum" : "const";
    char buf[64];
    if (e && c) return fail(g, "\"enum\" together with \"const\" is not supported");
    if (e && (!json_is_array(e) || !json_array_size(e)))
        return fail(g, "\"enum\" must be a non-empty list, got %s",
                    json_describe(e, buf, sizeof buf));
    size_t n = e ? json_array_size(e) : 1;
    for (size_t i = 0; i < n; i++) {
        const json_t *v = e ? json_array_get(e, i) : c;
        if (json_is_object(v) || json_is_array(v))
            return fail(g,
                        "\"%s\": value %zu is %s: only strings, numbers, booleans and null "
                        "are supported",
                        key, i, json_type_name(v));
        bool fits = !n_types;
        for (size_t j = 0; j < n_types; j++) fits |= value_is(v, types[j]);
        if (!fits)
            return fail(g, "\"%s\": value %s is not of the schema's \"type\"", key,
                        json_describe(v, buf, sizeof buf));
    }
    if (n == 1) {
        put_value(g, out, e ? json_array_get(e, 0) : c);
        return LV_OK;
    }
    size_t idx;
    lv_status st = take_rule(g, hint, into, out, &idx);
    if (st) return st;
    lv_buf body = {0};
    for (size_t i = 0; i < n; i++) {
        if (i) put(g, &body, " | ");
        put_value(g, &body, json_array_get(e, i));
    }
    set_body(g, idx, &body);
    return LV_OK;
}

/* ---- strings, arrays, objects ------------------------------------------------------------- */

static lv_status gen_schema(gen *g, json_t *s, const char *hint, int depth, size_t *into,
                            lv_buf *out);

static lv_status gen_string(gen *g, const json_t *s, lv_buf *out) {
    const json_t *f = json_object_get(s, "format");
    long lo, hi;
    lv_status st = bounds(g, s, "minLength", "maxLength", &lo, &hi);
    if (st) return st;
    if (f) {
        const char *name = json_string_value(f);
        char buf[64];
        if (json_object_get(s, "minLength") || json_object_get(s, "maxLength"))
            return fail(g, "\"%s\" together with \"format\" is not supported",
                        json_object_get(s, "minLength") ? "minLength" : "maxLength");
        for (size_t i = 0; name && i < LV_ARRAY_LEN(formats); i++) {
            if (strcmp(name, formats[i].name)) continue;
            put(g, out, "\"\\\"\" ");
            put_fixed(g, out, formats[i].rule);
            put(g, out, " \"\\\"\"");
            return LV_OK;
        }
        return fail(g,
                    "\"format\" %s is not supported (supported: date, time, date-time, uuid, "
                    "email, ipv4)",
                    json_describe(f, buf, sizeof buf));
    }
    if (lo == 0 && hi < 0) {
        put_fixed(g, out, B_STRING);
    } else if (hi == 0) {
        put(g, out, "\"\\\"\\\"\"");
    } else {
        put(g, out, "\"\\\"\" ");
        put_fixed(g, out, B_CHAR);
        put_repeat(g, out, lo, hi);
        put(g, out, " \"\\\"\"");
    }
    return LV_OK;
}

/* "[" ws (item (ws "," ws item){lo-1,hi-1} ws)? "]", the group optional when lo is 0. */
static lv_status gen_array(gen *g, json_t *s, const char *hint, int depth, size_t *into,
                           lv_buf *out) {
    json_t *items = json_object_get(s, "items");
    long lo, hi;
    lv_status st = bounds(g, s, "minItems", "maxItems", &lo, &hi);
    if (st) return st;
    lv_buf item = {0}, body = {0};
    if (!items) {
        put_fixed(g, &item, B_VALUE);
    } else if (!json_is_object(items)) {
        char buf[64];
        st = fail(g, "\"items\" must be a schema object, got %s (tuples are not supported)",
                  json_describe(items, buf, sizeof buf));
    } else {
        char item_hint[64];
        snprintf(item_hint, sizeof item_hint, "%.40s-item", hint);
        size_t saved = path_push(g, ".items");
        size_t none = NO_RULE;
        st = gen_schema(g, items, item_hint, depth + 1, &none, &item);
        path_pop(g, saved);
    }
    size_t idx;
    if (!st) st = take_rule(g, hint, into, out, &idx);
    if (!st) {
        put(g, &body, "\"[\" ");
        put_fixed(g, &body, B_WS);
        if (hi != 0) {
            put(g, &body, lo ? " " : " (");
            put_buf(g, &body, &item);
            if (hi != 1) {
                put(g, &body, " (");
                put_fixed(g, &body, B_WS);
                put(g, &body, " \",\" ");
                put_fixed(g, &body, B_WS);
                put(g, &body, " ");
                put_buf(g, &body, &item);
                put(g, &body, ")");
                put_repeat(g, &body, lo ? lo - 1 : 0, hi < 0 ? -1 : hi - 1);
            }
            put(g, &body, " ");
            put_fixed(g, &body, B_WS);
            put(g, &body, lo ? "" : ")?");
        }
        put(g, &body, " \"]\"");
        set_body(g, idx, &body);
    }
    lv_buf_free(&item);
    return st;
}

/* kv-i: "\"name\"" ws ":" ws value */
static void put_member(gen *g, lv_buf *b, const char *name, const lv_buf *value) {
    json_t *k = json_string(name);
    char *s = k ? json_dumps_whole(k, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    json_decref(k);
    if (!s) {
        g->nomem = true;
        return;
    }
    put_literal(g, b, s, strlen(s));
    free(s);
    put(g, b, " ");
    put_fixed(g, b, B_WS);
    put(g, b, " \":\" ");
    put_fixed(g, b, B_WS);
    put(g, b, " ");
    put_buf(g, b, value);
}

/* 'ws "," ws ' */
static void put_comma(gen *g, lv_buf *b) {
    put_fixed(g, b, B_WS);
    put(g, b, " \",\" ");
    put_fixed(g, b, B_WS);
    put(g, b, " ");
}

/* The object's body after "{" ws, for members (names[i], vals[i], req[i]):
 * see the file comment. */
static lv_status put_members(gen *g, const char *hint, size_t n, const char **names,
                             const lv_buf *vals, const bool *req, lv_buf *body) {
    size_t r = 0;
    while (r < n && !req[r]) r++;
    bool all = true;
    for (size_t i = 0; i < n; i++) all &= req[i];
    if (all) { /* kv-0 ws "," ws kv-1 ... ws */
        for (size_t i = 0; i < n; i++) {
            if (i) {
                put(g, body, " ");
                put_comma(g, body);
            }
            put_member(g, body, names[i], &vals[i]);
        }
        put(g, body, " ");
        put_fixed(g, body, B_WS);
        return LV_OK;
    }
    /* tail-1 .. tail-(n-1), each naming the next */
    size_t *tail = calloc(n + 1, sizeof *tail);
    if (!tail) return lv_fail(g->err, LV_ERR_NOMEM, "out of memory");
    char tail_hint[64];
    snprintf(tail_hint, sizeof tail_hint, "%.30s-tail", hint);
    lv_status st = LV_OK;
    for (size_t i = 1; i < n && !st; i++) st = new_rule(g, tail_hint, &tail[i]);
    for (size_t i = 1; i < n && !st; i++) {
        lv_buf t = {0};
        put(g, &t, req[i] ? "" : "(");
        put_comma(g, &t);
        put_member(g, &t, names[i], &vals[i]);
        put(g, &t, req[i] ? "" : ")?");
        if (i + 1 < n) putf(g, &t, " %s", g->rules[tail[i + 1]].name);
        set_body(g, tail[i], &t);
    }
    if (!st) {
        put(g, body, "(");
        for (size_t k = 0; k <= r && k < n; k++) {
            if (k) put(g, body, " | ");
            put_member(g, body, names[k], &vals[k]);
            if (k + 1 < n) putf(g, body, " %s", g->rules[tail[k + 1]].name);
        }
        put(g, body, " ");
        put_fixed(g, body, B_WS);
        put(g, body, r < n ? ")" : ")?");
    }
    free(tail);
    return st;
}

static lv_status gen_object(gen *g, json_t *s, const char *hint, int depth, size_t *into,
                            lv_buf *out) {
    json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
    json_t *extra = json_object_get(s, "additionalProperties");
    char buf[64];
    if (extra && !json_is_false(extra))
        return fail(g, "\"additionalProperties\" other than false is not supported");
    if (props && !json_is_object(props))
        return fail(g, "\"properties\" must be an object, got %s",
                    json_describe(props, buf, sizeof buf));
    if (req && !json_is_array(req))
        return fail(g, "\"required\" must be a list, got %s", json_describe(req, buf, sizeof buf));
    for (size_t i = 0; req && i < json_array_size(req); i++) {
        const char *name = json_string_value(json_array_get(req, i));
        if (!name)
            return fail(g, "\"required\": entry %zu is %s, not a string", i,
                        json_type_name(json_array_get(req, i)));
        if (!props || !json_object_get(props, name))
            return fail(g, "\"required\" names \"%.60s\", which \"properties\" does not define",
                        name);
    }
    if (!props && !extra) { /* any object */
        put_fixed(g, out, B_OBJECT);
        return LV_OK;
    }
    size_t n = props ? json_object_size(props) : 0;
    const char **names = calloc(n + 1, sizeof *names);
    lv_buf *vals = calloc(n + 1, sizeof *vals);
    bool *required = calloc(n + 1, sizeof *required);
    lv_status st = LV_OK;
    if (!names || !vals || !required) st = lv_fail(g->err, LV_ERR_NOMEM, "out of memory");
    size_t i = 0;
    const char *key;
    json_t *v;
    if (!st && props) {
        json_object_foreach(props, key, v) {
            names[i] = key;
            for (size_t j = 0; req && j < json_array_size(req); j++)
                required[i] |= !strcmp(key, json_string_value(json_array_get(req, j)));
            size_t saved = path_push(g, ".properties.%s", key), none = NO_RULE;
            st = gen_schema(g, v, key, depth + 1, &none, &vals[i]);
            path_pop(g, saved);
            i++;
            if (st) break;
        }
    }
    size_t idx;
    if (!st) st = take_rule(g, hint, into, out, &idx);
    if (!st) {
        lv_buf body = {0};
        put(g, &body, "\"{\" ");
        put_fixed(g, &body, B_WS);
        if (n) {
            put(g, &body, " ");
            st = put_members(g, g->rules[idx].name, n, names, vals, required, &body);
        }
        put(g, &body, " \"}\"");
        set_body(g, idx, &body);
    }
    for (size_t j = 0; j < n && vals; j++) lv_buf_free(&vals[j]);
    free(names);
    free(vals);
    free(required);
    return st;
}

/* ---- one schema --------------------------------------------------------------------------- */

/* Each keyword must be known; $defs / definitions only at the top; $ref and
 * anyOf stand alone (with annotations). */
static lv_status check_keywords(gen *g, const json_t *s, int depth) {
    const char *key, *alone = json_object_get(s, "$ref")    ? "$ref"
                              : json_object_get(s, "anyOf") ? "anyOf"
                                                            : NULL;
    json_t *v;
    json_object_foreach((json_t *)s, key, v) {
        int group = keyword_group(key);
        if (group < 0) return fail(g, "\"%.60s\" is not supported", key);
        if (group == K_TOP && depth)
            return fail(g, "\"%s\" is supported at the top level only", key);
        if (alone && group != K_NOTE && group != K_TOP && strcmp(key, alone))
            return fail(g, "\"%s\" together with \"%s\" is not supported", alone, key);
    }
    return LV_OK;
}

static lv_status gen_any_of(gen *g, const json_t *list, const char *hint, int depth, size_t *into,
                            lv_buf *out) {
    char buf[64];
    if (!json_is_array(list) || !json_array_size(list))
        return fail(g, "\"anyOf\" must be a non-empty list, got %s",
                    json_describe(list, buf, sizeof buf));
    size_t n = json_array_size(list), idx;
    lv_buf body = {0};
    lv_status st = LV_OK;
    for (size_t i = 0; i < n && !st; i++) {
        size_t saved = path_push(g, ".anyOf[%zu]", i), none = NO_RULE;
        if (i) put(g, &body, " | ");
        st = gen_schema(g, json_array_get(list, i), hint, depth + 1, &none, &body);
        path_pop(g, saved);
    }
    if (!st) st = take_rule(g, hint, into, out, &idx);
    if (!st) set_body(g, idx, &body);
    lv_buf_free(&body);
    return st;
}

/* One plain type, or an object / array of this schema. */
static lv_status gen_type(gen *g, json_t *s, int type, const char *hint, int depth, size_t *into,
                          lv_buf *out) {
    switch (type) {
        case T_STRING:
            return gen_string(g, s, out);
        case T_NUMBER:
            put_fixed(g, out, B_NUMBER);
            return LV_OK;
        case T_INTEGER:
            put_fixed(g, out, B_INTEGER);
            return LV_OK;
        case T_BOOLEAN:
            put_fixed(g, out, B_BOOLEAN);
            return LV_OK;
        case T_NULL:
            put_fixed(g, out, B_NULL);
            return LV_OK;
        case T_OBJECT:
            return gen_object(g, s, hint, depth, into, out);
        default:
            return gen_array(g, s, hint, depth, into, out);
    }
}

/* Appends to out the expression of schema s (a rule name, a literal or a
 * short sequence). A compound schema writes a rule: into *into when that is
 * a reserved rule (then set to NO_RULE), else a new one named after hint. */
static lv_status gen_schema(gen *g, json_t *s, const char *hint, int depth, size_t *into,
                            lv_buf *out) {
    char buf[64];
    if (depth > JSON_SCHEMA_MAX_DEPTH)
        return fail(g, "nested deeper than %d schemas", JSON_SCHEMA_MAX_DEPTH);
    if (!json_is_object(s))
        return fail(g, "expected a schema object, got %s", json_describe(s, buf, sizeof buf));
    lv_status st = check_keywords(g, s, depth);
    if (st) return st;
    json_t *v;
    if ((v = json_object_get(s, "$ref"))) return gen_ref(g, v, out);
    if ((v = json_object_get(s, "anyOf"))) return gen_any_of(g, v, hint, depth, into, out);
    int types[T_COUNT];
    size_t n;
    if ((st = schema_types(g, s, types, &n))) return st;
    if (json_object_get(s, "enum") || json_object_get(s, "const")) {
        const char *key;
        json_object_foreach(s, key, v) {
            int group = keyword_group(key);
            if (group == K_OBJECT || group == K_ARRAY || group == K_STRING)
                return fail(g, "\"%s\" together with \"%s\" is not supported", key,
                            json_object_get(s, "enum") ? "enum" : "const");
        }
        return gen_enum(g, s, types, n, hint, into, out);
    }
    if (n == 0) {
        put_fixed(g, out, B_VALUE);
        return LV_OK;
    }
    if (n == 1) return gen_type(g, s, types[0], hint, depth, into, out);
    size_t idx;
    lv_buf body = {0};
    for (size_t i = 0; i < n && !st; i++) {
        size_t none = NO_RULE;
        if (i) put(g, &body, " | ");
        st = gen_type(g, s, types[i], hint, depth, &none, &body);
    }
    if (!st) st = take_rule(g, hint, into, out, &idx);
    if (!st) set_body(g, idx, &body);
    lv_buf_free(&body);
    return st;
}

/* ---- checks on the definitions ------------------------------------------------------------
 * Both run after compiling, on schemas that compiled, so they only look. */

/* Whether s can produce a finite instance, given what is known of the
 * definitions so far (d->finite). */
static bool can_end(gen *g, const json_t *s) {
    const json_t *v;
    bool local;
    if ((v = json_object_get(s, "$ref"))) {
        def *d = find_def(g, json_string_value(v), &local);
        return d && d->finite;
    }
    if ((v = json_object_get(s, "anyOf"))) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (can_end(g, json_array_get(v, i))) return true;
        return false;
    }
    if (json_object_get(s, "enum") || json_object_get(s, "const")) return true;
    int types[T_COUNT];
    size_t n;
    if (schema_types(g, s, types, &n) || !n) return true;
    for (size_t i = 0; i < n; i++) {
        if (types[i] == T_ARRAY) {
            const json_t *items = json_object_get(s, "items");
            const json_t *min = json_object_get(s, "minItems");
            int64_t lo = 0;
            if (min) json_as_int64(min, &lo);
            if (!items || !lo || can_end(g, items)) return true;
        } else if (types[i] == T_OBJECT) {
            const json_t *props = json_object_get(s, "properties"), *req;
            req = json_object_get(s, "required");
            bool ok = true;
            for (size_t j = 0; props && req && j < json_array_size(req); j++)
                ok &= can_end(g, json_object_get(props, json_string_value(json_array_get(req, j))));
            if (ok) return true;
        } else {
            return true;
        }
    }
    return false;
}

static void def_path(gen *g, const def *d) {
    path_pop(g, 0);
    path_push(g, "schema.%s.%s", d->legacy ? "definitions" : "$defs", d->key);
}

static lv_status left_walk(gen *g, size_t i);

/* Follows the references s makes before any JSON text: $ref, and the
 * branches of anyOf. Reaching a definition on the current path is left
 * recursion. */
static lv_status left_refs(gen *g, const json_t *s, size_t from) {
    const json_t *v;
    bool local;
    if ((v = json_object_get(s, "$ref"))) {
        def *d = find_def(g, json_string_value(v), &local);
        if (!d || d->mark == 2) return LV_OK;
        if (d->mark == 1) {
            def_path(g, &g->defs[from]);
            return fail(g, "refers to \"%.60s\" again before any JSON text (left recursion)",
                        d->key);
        }
        return left_walk(g, (size_t)(d - g->defs));
    }
    if ((v = json_object_get(s, "anyOf"))) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            lv_status st = left_refs(g, json_array_get(v, i), from);
            if (st) return st;
        }
    }
    return LV_OK;
}

static lv_status left_walk(gen *g, size_t i) {
    g->defs[i].mark = 1;
    lv_status st = left_refs(g, g->defs[i].schema, i);
    g->defs[i].mark = 2;
    return st;
}

static lv_status check_defs(gen *g) {
    for (size_t i = 0; i < g->n_defs; i++) {
        lv_status st = g->defs[i].mark ? LV_OK : left_walk(g, i);
        if (st) return st;
    }
    for (bool changed = true; changed;) {
        changed = false;
        for (size_t i = 0; i < g->n_defs; i++)
            if (!g->defs[i].finite && can_end(g, g->defs[i].schema))
                g->defs[i].finite = changed = true;
    }
    for (size_t i = 0; i < g->n_defs; i++) {
        if (g->defs[i].finite) continue;
        def_path(g, &g->defs[i]);
        return fail(g, "every way through \"%.60s\" refers to itself again, so it can never end",
                    g->defs[i].key);
    }
    return LV_OK;
}

/* ---- the whole grammar -------------------------------------------------------------------- */

/* Gives each entry of root's $defs and definitions its rule. */
static lv_status collect_defs(gen *g, json_t *root) {
    static const char *const where[2] = {"$defs", "definitions"};
    size_t n = 0;
    for (int k = 0; k < 2; k++) {
        json_t *o = json_object_get(root, where[k]);
        char buf[64];
        if (o && !json_is_object(o))
            return fail(g, "\"%s\" must be an object, got %s", where[k],
                        json_describe(o, buf, sizeof buf));
        n += json_object_size(o);
    }
    if (n > JSON_SCHEMA_MAX_RULES)
        return fail(g, "%zu definitions: the grammar needs more than %d rules", n,
                    JSON_SCHEMA_MAX_RULES);
    if (n && !(g->defs = calloc(n, sizeof *g->defs)))
        return lv_fail(g->err, LV_ERR_NOMEM, "out of memory");
    for (int k = 0; k < 2; k++) {
        const char *key;
        json_t *v;
        json_t *o = json_object_get(root, where[k]);
        json_object_foreach(o, key, v) {
            def *d = &g->defs[g->n_defs];
            *d = (def){.key = key, .legacy = k == 1, .schema = v};
            lv_status st = new_rule(g, key, &d->rule);
            if (st) return st;
            g->n_defs++;
        }
    }
    return LV_OK;
}

static lv_status compile(gen *g, json_t *root) {
    path_push(g, "schema");
    lv_status st = new_rule(g, "root", &(size_t){0});
    if (st) return st;
    free(g->rules[0].name);
    char name[48];
    snprintf(name, sizeof name, "%.31sroot", g->prefix ? g->prefix : "");
    if (!(g->rules[0].name = strdup(name))) return lv_fail(g->err, LV_ERR_NOMEM, "out of memory");
    if (json_is_object(root) && (st = collect_defs(g, root))) return st;
    lv_buf expr = {0};
    size_t into = 0;
    st = gen_schema(g, root, "root", 0, &into, &expr);
    if (!st && into == 0) set_body(g, 0, &expr);
    lv_buf_free(&expr);
    for (size_t i = 0; i < g->n_defs && !st; i++) {
        def_path(g, &g->defs[i]);
        into = g->defs[i].rule;
        st = gen_schema(g, g->defs[i].schema, g->defs[i].key, 1, &into, &expr);
        if (!st && into != NO_RULE) set_body(g, into, &expr);
        lv_buf_free(&expr);
    }
    if (!st) st = check_defs(g);
    return st;
}

/* The fixed rules in used (and those they use), one a line. */
static void write_fixed(gen *g, lv_buf *out) {
    for (unsigned before = 0; before != g->used;) {
        before = g->used;
        for (int b = 0; b < B_COUNT; b++)
            if (g->used & BIT(b)) g->used |= fixed[b].uses;
    }
    for (int b = 0; b < B_COUNT; b++)
        if (g->used & BIT(b)) {
            putf(g, out, "%s ::= ", fixed[b].name);
            put(g, out, fixed[b].body);
            put(g, out, "\n");
        }
}

/* The generated rules, one a line. */
static void write_rules(gen *g, lv_buf *out) {
    for (size_t i = 0; i < g->n_rules; i++) {
        putf(g, out, "%s ::= ", g->rules[i].name);
        put_buf(g, out, &g->rules[i].body);
        put(g, out, "\n");
    }
}

/* The rules, then the fixed rules they use (and those use), one a line. */
static void write_grammar(gen *g, lv_buf *out) {
    put(g, out, "# JSON Schema -> grammar (engine/json_schema.c)\n");
    write_rules(g, out);
    write_fixed(g, out);
}

static void gen_free(gen *g) {
    for (size_t i = 0; i < g->n_rules; i++) {
        free(g->rules[i].name);
        lv_buf_free(&g->rules[i].body);
    }
    free(g->rules);
    free(g->defs);
}

/* Appends text to out, or leaves out as it was. */
static lv_status finish(gen *g, lv_status st, lv_buf *text, lv_buf *out) {
    if (!st && (g->nomem || !text->data)) /* no text: an append that failed unseen */
        st = lv_fail(g->err, LV_ERR_NOMEM, "out of memory");
    if (!st && text->data && lv_buf_append(out, text->data, text->len))
        st = lv_fail(g->err, LV_ERR_NOMEM, "out of memory");
    lv_buf_free(text);
    gen_free(g);
    return st;
}

/* Parses schema_json and compiles it into g's rules. */
static lv_status compile_text(gen *g, const char *schema_json, size_t len, lv_err *err) {
    if (len > JSON_SCHEMA_MAX_BYTES)
        return lv_fail(err, LV_ERR_ARG, "schema: %zu bytes is over the limit of %u (1 MiB)", len,
                       JSON_SCHEMA_MAX_BYTES);
    json_error_t jerr;
    json_t *root =
        json_loadb_whole(schema_json, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!root && json_load_nomem(&jerr))
        return lv_fail(err, LV_ERR_NOMEM, "schema: out of memory reading it");
    if (!root)
        return lv_fail(err, LV_ERR_ARG, "schema: not valid JSON: %s (line %d, column %d)",
                       jerr.text, jerr.line, jerr.column);
    lv_status st = compile(g, root);
    json_decref(root);
    return st;
}

static bool prefix_ok(const char *p) {
    size_t n = strlen(p);
    if (!n || n > 31) return false;
    for (; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-'))
            return false;
    return true;
}

lv_status json_schema_to_rules(const char *schema_json, size_t len, const char *prefix,
                               lv_buf *out_rules, unsigned *fixed_used, lv_err *err) {
    if (!prefix_ok(prefix))
        return lv_fail(err, LV_ERR_ARG, "rule prefix '%.40s': expected 1 to 31 of [A-Za-z0-9_-]",
                       prefix);
    gen g = {.err = err, .prefix = prefix};
    lv_buf text = {0};
    lv_status st = compile_text(&g, schema_json, len, err);
    if (!st) {
        write_rules(&g, &text);
        *fixed_used |= g.used;
    }
    return finish(&g, st, &text, out_rules);
}

lv_status json_schema_fixed_rules(unsigned fixed_used, lv_buf *out, lv_err *err) {
    gen g = {.err = err, .used = fixed_used & (BIT(B_COUNT) - 1)};
    lv_buf text = {0};
    write_fixed(&g, &text);
    return finish(&g, LV_OK, &text, out);
}

lv_status json_schema_to_grammar(const char *schema_json, size_t len, lv_buf *out_grammar,
                                 lv_err *err) {
    gen g = {.err = err};
    lv_buf text = {0};
    lv_status st = compile_text(&g, schema_json, len, err);
    if (!st) write_grammar(&g, &text);
    return finish(&g, st, &text, out_grammar);
}

lv_status json_object_grammar(lv_buf *out, lv_err *err) {
    gen g = {.err = err};
    lv_buf text = {0};
    lv_status st = new_rule(&g, "root", &(size_t){0});
    if (!st) {
        put(&g, &g.rules[0].body, "object");
        free(g.rules[0].name);
        if (!(g.rules[0].name = strdup("root"))) g.nomem = true;
        g.used |= BIT(B_OBJECT);
        write_grammar(&g, &text);
    }
    return finish(&g, st, &text, out);
}
