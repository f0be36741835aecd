/*
 * tool_args.h - the command line of every tool (llava-cli, -eval, -server,
 * -quantize, -bench), parsed one way.
 *
 * A tool lists its options in a table, each with where its value goes and
 * what it must be; tool_parse runs getopt_long over them (so --opt=value,
 * unambiguous abbreviations and the short letters behave as in any GNU
 * tool), adds -h/--help and --version (tool_version.h), and answers every mistake with one sentence
 * on stderr that starts with the tool's name: llava-cli: --threads wants an integer in [0, 4096],
 * got 'x' llava-cli: --top-p wants a number in [1e-09, 1], got '2' llava-quantize: --shard-gb wants
 * a positive number, got '0' llava-cli: unknown or incomplete option '--bogus' llava-cli:
 * unexpected argument 'extra' The tool then exits with its usage status, 2.
 */
#ifndef LV_TOOL_ARGS_H
#define LV_TOOL_ARGS_H

#include <stdbool.h>
#include <stdio.h>

/* Who is parsing. */
typedef struct {
    const char *name;       /* "llava-cli": the start of every message */
    void (*usage)(FILE *f); /* the help text */
    bool hint;              /* after an unknown option or an extra argument: say
                               "(see --help)" instead of printing the help text */
} tool_info;

typedef enum { TK_FLAG, TK_STR, TK_INT, TK_LONG, TK_NUM, TK_POS, TK_FN } tool_kind;

/* One option: its names, and where its value goes. Written with the
 * TOOL_* builders below, which check the destination's type. */
typedef struct {
    const char *name; /* the long name, without "--" */
    char letter;      /* the short name (-m), or 0 */
    tool_kind kind;
    union {
        bool *flag;       /* TK_FLAG: set to true */
        const char **str; /* TK_STR: the value, borrowed from argv */
        int *i;           /* TK_INT: an integer in [lo, hi] */
        long *l;          /* TK_LONG: an integer in [lo, hi] */
        double *num;      /* TK_NUM: a number in [lo, hi]; TK_POS: any number > 0 */
        void *ctx;        /* TK_FN: fn's context */
    } to;
    double lo, hi;
    bool (*fn)(void *ctx, const char *value); /* TK_FN: the tool's own rule; false after
                                                 printing why */
} tool_opt;

#define TOOL_FLAG(name_, letter_, p)                                                               \
    { .name = name_, .letter = letter_, .kind = TK_FLAG, .to.flag = p }
#define TOOL_STR(name_, letter_, p)                                                                \
    { .name = name_, .letter = letter_, .kind = TK_STR, .to.str = p }
#define TOOL_INT(name_, letter_, p, lo_, hi_)                                                      \
    { .name = name_, .letter = letter_, .kind = TK_INT, .to.i = p, .lo = lo_, .hi = hi_ }
#define TOOL_LONG(name_, letter_, p, lo_, hi_)                                                     \
    { .name = name_, .letter = letter_, .kind = TK_LONG, .to.l = p, .lo = lo_, .hi = hi_ }
#define TOOL_NUM(name_, letter_, p, lo_, hi_)                                                      \
    { .name = name_, .letter = letter_, .kind = TK_NUM, .to.num = p, .lo = lo_, .hi = hi_ }
#define TOOL_POS(name_, letter_, p)                                                                \
    { .name = name_, .letter = letter_, .kind = TK_POS, .to.num = p }
#define TOOL_FN(name_, letter_, fn_, ctx_)                                                         \
    { .name = name_, .letter = letter_, .kind = TK_FN, .to.ctx = ctx_, .fn = fn_ }

enum { TOOL_RUN = 0, TOOL_HELP = 1, TOOL_USAGE = 2 };

/* Parses argv[1..] against opts[n]: TOOL_RUN when every option was applied
 * and nothing else is left; TOOL_HELP after printing the help text (-h,
 * --help) or the version line (--version) to stdout: the tool exits 0;
 * TOOL_USAGE after printing what was wrong (and, for
 * an unknown option, the help text to stderr unless t->hint). Options
 * before the mistake are applied. Uses getopt_long's globals. */
int tool_parse(const tool_info *t, const tool_opt *opts, size_t n, int argc, char **argv);

/* The number parsers behind the table, for a tool's own rules: each takes
 * the whole of s or prints "<prog>: --<opt> wants ..., got 's'" and returns
 * false. tool_seed: a decimal integer in [0, max]. */
bool tool_int(const char *prog, const char *opt, const char *s, long lo, long hi, long *out);
bool tool_number(const char *prog, const char *opt, const char *s, double lo, double hi,
                 double *out);
bool tool_seed(const char *prog, const char *opt, const char *s, unsigned long long max,
               unsigned long long *out);

/* --log-level name (NULL: $LOG_LEVEL, else info) through lv_log_configure;
 * false after "<prog>: unknown log level 'x' (DEBUG, INFO, WARN or ERROR)". */
bool tool_log_level(const char *prog, const char *name);

/* --device NAME (cpu, ref, cuda, cuda:N): true when this build has that
 * backend. Otherwise false after llava_load's own words, so that a tool
 * fails before it reads a model:
 *   "<prog>: unknown backend "tpu" (cpu, ref (this build has no CUDA: ...))". */
bool tool_device(const char *prog, const char *name);

/* The help lines of --tensor-parallel and --tp-whole-tower, in the 22-column
 * layout of llava-cli's and llava-eval's usage (llava_set_tensor_parallel). */
#define TOOL_HELP_TENSOR_PARALLEL                                                                  \
    "  --tensor-parallel N   split the model over N devices of --device (cuda:D: D..D+N-1;\n"      \
    "                        tensor parallelism over NCCL; default: one device)\n"                 \
    "  --tp-whole-tower      with --tensor-parallel: the vision tower whole on every\n"            \
    "                        device instead of split like the text model\n"

#endif
