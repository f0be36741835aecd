/* tool_args.c - see tool_args.h. */
#include "common/tool_args.h"

#include "backend/backend.h"
#include "base/log.h"
#include "common/tool_version.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

bool tool_int(const char *prog, const char *opt, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "%s: --%s wants an integer in [%ld, %ld], got '%s'\n", prog, opt, lo, hi,
                s);
        return false;
    }
    *out = v;
    return true;
}

/* All of s as a number. */
static bool whole_number(const char *s, double *v) {
    char *end;
    *v = strtod(s, &end);
    return *s && !*end;
}

bool tool_number(const char *prog, const char *opt, const char *s, double lo, double hi,
                 double *out) {
    double v;
    if (!whole_number(s, &v) || !(v >= lo && v <= hi)) {
        fprintf(stderr, "%s: --%s wants a number in [%g, %g], got '%s'\n", prog, opt, lo, hi, s);
        return false;
    }
    *out = v;
    return true;
}

static bool positive(const char *prog, const char *opt, const char *s, double *out) {
    double v;
    if (!whole_number(s, &v) || !(v > 0)) {
        fprintf(stderr, "%s: --%s wants a positive number, got '%s'\n", prog, opt, s);
        return false;
    }
    *out = v;
    return true;
}

bool tool_seed(const char *prog, const char *opt, const char *s, unsigned long long max,
               unsigned long long *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *s == '-' || *end || errno || v > max) {
        fprintf(stderr, "%s: --%s wants an integer in [0, %llu], got '%s'\n", prog, opt, max, s);
        return false;
    }
    *out = v;
    return true;
}

bool tool_log_level(const char *prog, const char *name) {
    const char *bad = lv_log_configure(name);
    if (bad)
        fprintf(stderr, "%s: unknown log level '%s' (DEBUG, INFO, WARN or ERROR)\n", prog, bad);
    return !bad;
}

bool tool_device(const char *prog, const char *name) {
    if (be_find_device(name, NULL)) return true;
    fprintf(stderr, "%s: unknown backend \"%s\" (%s)\n", prog, name ? name : "(null)", be_names());
    return false;
}

/* Applies value to option o; false after printing why not. */
static bool apply(const tool_info *t, const tool_opt *o, const char *value) {
    long v;
    switch (o->kind) {
        case TK_FLAG:
            *o->to.flag = true;
            return true;
        case TK_STR:
            *o->to.str = value;
            return true;
        case TK_INT:
            if (!tool_int(t->name, o->name, value, (long)o->lo, (long)o->hi, &v)) return false;
            *o->to.i = (int)v;
            return true;
        case TK_LONG:
            return tool_int(t->name, o->name, value, (long)o->lo, (long)o->hi, o->to.l);
        case TK_NUM:
            return tool_number(t->name, o->name, value, o->lo, o->hi, o->to.num);
        case TK_POS:
            return positive(t->name, o->name, value, o->to.num);
        case TK_FN:
            return o->fn(o->to.ctx, value);
    }
    return false;
}

int tool_parse(const tool_info *t, const tool_opt *opts, size_t n, int argc, char **argv) {
    /* getopt_long's tables: long option i returns 256 + i (--version 256 + n), a
     * letter itself. */
    struct option *lo = calloc(n + 3, sizeof *lo);
    char *letters = calloc(3 * n + 3, 1);
    if (!lo || !letters) {
        free(lo);
        free(letters);
        fprintf(stderr, "%s: out of memory\n", t->name);
        return TOOL_USAGE;
    }
    char *l = letters;
    for (size_t i = 0; i < n; i++) {
        bool arg = opts[i].kind != TK_FLAG;
        lo[i] = (struct option){opts[i].name, arg ? required_argument : no_argument, NULL,
                                256 + (int)i};
        if (opts[i].letter) {
            *l++ = opts[i].letter;
            if (arg) *l++ = ':';
        }
    }
    lo[n] = (struct option){"help", no_argument, NULL, 'h'};
    lo[n + 1] = (struct option){"version", no_argument, NULL, 256 + (int)n}; /* no letter */
    *l = 'h';
    opterr = 0;
    int c, rc = TOOL_RUN;
    while (rc == TOOL_RUN && (c = getopt_long(argc, argv, letters, lo, NULL)) != -1) {
        const tool_opt *o = c >= 256 && c < 256 + (int)n ? &opts[c - 256] : NULL;
        for (size_t i = 0; !o && c != 'h' && c != '?' && i < n; i++)
            if (opts[i].letter == c) o = &opts[i];
        if (o) {
            rc = apply(t, o, optarg) ? TOOL_RUN : TOOL_USAGE;
        } else if (c == 'h') {
            t->usage(stdout);
            rc = TOOL_HELP;
        } else if (c == 256 + (int)n) {
            tool_print_version(stdout, t->name);
            rc = TOOL_HELP;
        } else {
            fprintf(stderr, "%s: unknown or incomplete option '%s'%s\n", t->name, argv[optind - 1],
                    t->hint ? " (see --help)" : "");
            if (!t->hint) t->usage(stderr);
            rc = TOOL_USAGE;
        }
    }
    free(lo);
    free(letters);
    if (rc == TOOL_RUN && optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'%s\n", t->name, argv[optind],
                t->hint ? " (see --help)" : "");
        rc = TOOL_USAGE;
    }
    return rc;
}
