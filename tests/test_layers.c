/* test_layers.c - the layers of docs/ARCHITECTURE.md, enforced on the
 * include graph: every `#include "dir/file.h"` in a .c or .h under src/ must
 * name a header of a layer its own directory may use (LAYERS below, the one
 * place the rules are written). System includes (<...>) are ignored; a quoted
 * include without a directory ("media.h") is a header of the includer's own
 * folder. The layer of a file is its first folder under src/ (src/backend/cpu/
 * is backend). tools/ and tests/ may include anything, so only src/ is read.
 *
 * The checker itself is tested on made-up (file, include) pairs first, so a
 * checker that allows everything cannot pass; the scan must find at least
 * MIN_SOURCES files, so a wrong path cannot pass either.
 *
 * Needs LLAVA_SRC_DIR (the src/ folder), which ctest sets. */
#define _XOPEN_SOURCE 700 /* nftw, realpath */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "testutil.h"

#include <ctype.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- the rules ----------------------------------------------------------
 *
 * What each layer may include. An entry is a layer (any header in that
 * folder) or one header ("model/llava.h": that header only, so the engine
 * and the server hold the model through its opaque handle and nothing else
 * of model/: not llava_impl.h, llm.h, clip.h ...).
 * Arrows point one way, server → engine → model → backend; image/, text/,
 * io/ and base/ are leaves; quant/ (the converters) is used only by tools
 * and tests, never by another layer of src/. */
typedef struct {
    const char *layer;
    const char *may_use[12]; /* layers or single headers; NULL-terminated */
} layer_rule;

static const layer_rule LAYERS[] = {
    {"base", {"base"}},
    {"io", {"base", "io"}},
    {"image", {"base", "image"}},
    {"text", {"base", "io", "text"}},
    {"backend", {"base", "backend"}},
    {"model", {"base", "io", "image", "text", "backend", "model"}},
    /* not backend, and of model/ the opaque handle only: the engine reaches the
     * model and the hardware through model/llava.h */
    {"engine", {"base", "io", "image", "text", "engine", "model/llava.h"}},
    {"server", {"base", "io", "image", "text", "engine", "server", "model/llava.h"}},
    {"quant", {"base", "io", "backend", "quant"}},
};
#define N_LAYERS    (sizeof LAYERS / sizeof *LAYERS)
#define MIN_SOURCES 50

static const layer_rule *find_layer(const char *name, size_t len) {
    for (size_t i = 0; i < N_LAYERS; i++)
        if (strlen(LAYERS[i].layer) == len && !memcmp(LAYERS[i].layer, name, len))
            return &LAYERS[i];
    return NULL;
}

/* "base, io, engine and model/llava.h" for a message. */
static void list_uses(const layer_rule *r, char *out, size_t cap) {
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; r->may_use[i]; i++) {
        const char *sep = i == 0 ? "" : r->may_use[i + 1] ? ", " : " and ";
        n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%s%s", sep, r->may_use[i]);
        if (n >= cap) return;
    }
}

/* Checks one include. file is relative to the repository root ("src/server/
 * worker.c", "tools/llava-cli.c"); inc is what the quotes hold. Returns true
 * when the rules allow it; otherwise false with the broken rule in why. */
static bool check_include(const char *file, const char *inc, char *why, size_t cap) {
    why[0] = '\0';
    if (!strncmp(file, "tools/", 6) || !strncmp(file, "tests/", 6)) return true;
    if (strncmp(file, "src/", 4) != 0) {
        snprintf(why, cap, "%s is not under src/, tools/ or tests/", file);
        return false;
    }
    const char *from = file + 4, *from_end = strchr(from, '/');
    if (!from_end) {
        snprintf(why, cap, "%s is in no layer's folder", file);
        return false;
    }
    const layer_rule *r = find_layer(from, (size_t)(from_end - from));
    if (!r) {
        snprintf(why, cap, "%.*s/ is not a layer in tests/test_layers.c's table",
                 (int)(from_end - from), from);
        return false;
    }
    /* the included header's layer: its first folder, or the includer's own */
    const char *slash = strchr(inc, '/');
    const char *to = slash ? inc : r->layer;
    size_t to_len = slash ? (size_t)(slash - inc) : strlen(r->layer);
    if (!find_layer(to, to_len)) {
        snprintf(why, cap, "%.*s/ is not a layer in tests/test_layers.c's table", (int)to_len, to);
        return false;
    }
    if (to_len == 5 && !memcmp(to, "quant", 5) && strcmp(r->layer, "quant") != 0) {
        snprintf(why, cap, "quant/ is used only by tools and tests, not by %s", r->layer);
        return false;
    }
    bool some_headers = false; /* the rule names single headers of that layer */
    for (int i = 0; r->may_use[i]; i++) {
        const char *u = r->may_use[i];
        if (!strchr(u, '/')) {
            if (strlen(u) == to_len && !memcmp(u, to, to_len)) return true;
        } else if (!strncmp(u, to, to_len) && u[to_len] == '/') {
            if (slash && !strcmp(u, inc)) return true;
            some_headers = true;
        }
    }
    if (some_headers) {
        char only[256];
        size_t n = 0;
        only[0] = '\0';
        for (int i = 0; r->may_use[i]; i++)
            if (!strncmp(r->may_use[i], to, to_len) && r->may_use[i][to_len] == '/')
                n += (size_t)snprintf(only + n, n < sizeof only ? sizeof only - n : 0, "%s%s",
                                      n ? ", " : "", r->may_use[i]);
        snprintf(why, cap, "%s may use %s only", r->layer, only);
    } else {
        char uses[256];
        list_uses(r, uses, sizeof uses);
        snprintf(why, cap, "%s must not use %.*s/ (%s may use %s)", r->layer, (int)to_len, to,
                 r->layer, uses);
    }
    return false;
}

/* ---- the checker on made-up pairs ------------------------------------- */

static void rules_name_known_layers(void **state) {
    for (size_t i = 0; i < N_LAYERS; i++) {
        bool self = false;
        for (int k = 0; LAYERS[i].may_use[k]; k++) {
            const char *u = LAYERS[i].may_use[k];
            size_t len = strchr(u, '/') ? (size_t)(strchr(u, '/') - u) : strlen(u);
            if (!find_layer(u, len)) fail_msg("%s may use %s: not a layer", LAYERS[i].layer, u);
            if (!strcmp(u, LAYERS[i].layer)) self = true;
        }
        if (!self) fail_msg("%s may not use its own headers", LAYERS[i].layer);
    }
}

static void checker_allows(void **state) {
    static const char *ok[][2] = {
        {"src/base/buf.c", "base/buf.h"},
        {"src/base/buf.c", "buf.h"}, /* same folder, no prefix */
        {"src/text/tokenizer_gguf.c", "io/gguf.h"},
        {"src/model/llm.c", "backend/backend.h"},
        {"src/backend/cpu/ops.c", "backend/cpu/cpu.h"},
        {"src/backend/cpu/ops.c", "cpu.h"},
        {"src/engine/generate.c", "model/llava.h"},
        {"src/server/worker.c", "model/llava.h"},
        {"src/server/http.c", "engine/request.h"},
        {"src/quant/qsource.c", "backend/backend.h"},
        {"src/quant/gguf_export.c", "quant/outdir.h"},
        {"tools/llava-quantize.c", "quant/gguf_export.h"},
        {"tools/llava-cli.c", "backend/cpu/cpu.h"},
        {"tests/test_quant.c", "quant/mlx_affine.h"},
    };
    char why[512];
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        if (!check_include(ok[i][0], ok[i][1], why, sizeof why))
            fail_msg("%s including %s was refused: %s", ok[i][0], ok[i][1], why);
}

static void checker_forbids(void **state) {
    /* file, include, the message the refusal must give */
    static const char *bad[][3] = {
        {"src/server/worker.c", "model/llm.h", "server may use model/llava.h only"},
        {"src/engine/generate.c", "backend/backend.h",
         "engine must not use backend/ (engine may use base, io, image, text, engine and "
         "model/llava.h)"},
        {"src/engine/scheduler.c", "model/llava_impl.h", "engine may use model/llava.h only"},
        {"src/server/jobs.c", "model/llava_impl.h", "server may use model/llava.h only"},
        {"src/model/weights.c", "quant/mlx_affine.h",
         "quant/ is used only by tools and tests, not by model"},
        {"src/server/http.c", "quant/outdir.h",
         "quant/ is used only by tools and tests, not by server"},
        {"src/base/log.c", "io/gguf.h", "base must not use io/"},
        {"src/image/decode.c", "text/tokenizer.h", "image must not use text/"},
        {"src/io/gguf.c", "model/llava.h", "io must not use model/"},
        {"src/backend/cpu/ops.c", "model/llm.h", "backend must not use model/"},
        {"src/model/llm.c", "engine/generate.h", "model must not use engine/"},
        {"src/quant/qsource.c", "model/weights.h", "quant must not use model/"},
        {"src/model/llm.c", "cuda/kernels.h", "cuda/ is not a layer"},
        {"src/model/llm.c", "../tools/x.h", "../ is not a layer"},
        {"src/plugins/x.c", "base/common.h", "plugins/ is not a layer"},
        {"src/main.c", "base/common.h", "src/main.c is in no layer's folder"},
        {"lib/x.c", "base/common.h", "not under src/"},
    };
    char why[512];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (check_include(bad[i][0], bad[i][1], why, sizeof why))
            fail_msg("%s including %s was allowed", bad[i][0], bad[i][1]);
        if (!strstr(why, bad[i][2]))
            fail_msg("%s including %s: message \"%s\", expected it to say \"%s\"", bad[i][0],
                     bad[i][1], why, bad[i][2]);
    }
}

/* ---- the source tree --------------------------------------------------- */

static struct {
    const char *root; /* $LLAVA_SRC_DIR */
    int files;        /* .c and .h files read */
    int includes;     /* quoted includes checked */
    int violations;   /* includes refused */
} scan;

/* The quoted name of an `#include "..."` line into name; false otherwise. */
static bool quoted_include(const char *line, char *name, size_t cap) {
    while (isspace((unsigned char)*line)) line++;
    if (*line++ != '#') return false;
    while (isspace((unsigned char)*line)) line++;
    if (strncmp(line, "include", 7) != 0) return false;
    line += 7;
    while (isspace((unsigned char)*line)) line++;
    if (*line++ != '"') return false;
    const char *end = strchr(line, '"');
    if (!end || (size_t)(end - line) >= cap) return false;
    memcpy(name, line, (size_t)(end - line));
    name[end - line] = '\0';
    return true;
}

/* Whether the header name sits in the folder of path. */
static bool beside(const char *path, const char *name) {
    char p[1024];
    const char *slash = strrchr(path, '/');
    snprintf(p, sizeof p, "%.*s/%s", (int)(slash - path), path, name);
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int visit(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    size_t len = strlen(path);
    if (type != FTW_F || len < 2 || path[len - 2] != '.' ||
        (path[len - 1] != 'c' && path[len - 1] != 'h'))
        return 0;
    char rel[1024]; /* "src/..." from the repository root */
    snprintf(rel, sizeof rel, "src%s", path + strlen(scan.root));
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("cannot read %s", path);
    scan.files++;
    char line[4096], inc[512], why[512];
    for (int lineno = 1; fgets(line, sizeof line, f); lineno++) {
        if (!quoted_include(line, inc, sizeof inc)) continue;
        scan.includes++;
        if (!strchr(inc, '/') && !beside(path, inc)) {
            print_error("%s:%d includes %s: no such header beside it (write the folder: "
                        "\"layer/%s\")\n",
                        rel, lineno, inc, inc);
            scan.violations++;
        } else if (!check_include(rel, inc, why, sizeof why)) {
            print_error("%s:%d includes %s: %s\n", rel, lineno, inc, why);
            scan.violations++;
        }
    }
    fclose(f);
    return 0;
}

static void source_tree(void **state) {
    const char *root = tu_env("LLAVA_SRC_DIR");
    char *real = realpath(root, NULL);
    if (!real) fail_msg("LLAVA_SRC_DIR=%s: no such folder", root);
    const char *base = strrchr(real, '/');
    if (!base || strcmp(base, "/src") != 0)
        fail_msg("LLAVA_SRC_DIR=%s: expected the src/ folder (tests/ and tools/ are not scanned)",
                 root);
    scan.root = real;
    if (nftw(real, visit, 16, FTW_PHYS) != 0) fail_msg("cannot walk %s", real);
    print_message("%d files, %d quoted includes, %d against the layers\n", scan.files,
                  scan.includes, scan.violations);
    if (scan.files < MIN_SOURCES)
        fail_msg("found %d .c/.h files under %s, expected at least %d: wrong folder?", scan.files,
                 real, MIN_SOURCES);
    free(real);
    if (scan.violations)
        fail_msg("%d includes break the layers (listed above; the table is LAYERS in "
                 "tests/test_layers.c)",
                 scan.violations);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rules_name_known_layers),
        cmocka_unit_test(checker_allows),
        cmocka_unit_test(checker_forbids),
        cmocka_unit_test(source_tree),
    };
    return cmocka_run_group_tests_name("layers", tests, NULL, NULL);
}
