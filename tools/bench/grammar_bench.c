/*
 * grammar_bench.c - `llava-bench grammar` (grammar_bench.h).
 *
 *   llava-bench grammar (--tokenizer PATH | --model PATH [--mmproj F])
 *                       [--json-schema FILE --instance FILE] [--steps N]
 *                       [--vocab V] [--decode-ms X] [--json]
 *
 * Compiles the schema (default: the built-in one below, an object of six
 * properties: three strings of at most 32 characters, an integer, an enum
 * and an array of up to 5 such strings) and builds the tokenizer's grammar
 * tries (engine/structured.h: what the server and llava-cli build once per
 * model; its time is reported apart). Then it plays a generation: the
 * instance (default: the built-in one; with --json-schema, --instance is
 * required) is tokenized as the model would write it (no BOS), and each of
 * its tokens is one step; after the last, one more step in which only EOS
 * may follow. Walks repeat, each with a fresh matcher (a request of its
 * own, its mask cache empty), until N steps (default 1000) have run.
 *
 * Every step does what gen_state's mask_logits and gen_state_step do under
 * a grammar, and times it:
 *   mask    grammar_matcher_mask on the step's trie (the first token's
 *           reads as at the start of the text);
 *   logits  a float copy of the V logits (random) with -inf where the mask
 *           says no, EOS kept once the grammar is complete; V is the
 *           model's vocabulary (--model), else --vocab (default: the
 *           tokenizer's), e.g. 32064 for llava-v1.6-mistral's lm_head;
 *   accept  grammar_matcher_accept_token of the instance's token, which
 *           must be in the mask (else the instance does not fit the
 *           schema's grammar as tokenized: exit 1 naming the token).
 * Reported: per-step mean, median, p99 and max in µs, each part's mean,
 * masks walked over the trie and answered from the matcher's cache (the
 * hit rate), the mean of a walked one; with --decode-ms X (a decode step's
 * time, e.g. 1000 / the t/s of `llava-bench model --tg`), the mean step as
 * a percentage of X.
 */
#include "bench/grammar_bench.h"

#include "base/buf.h"
#include "base/clock.h"
#include "base/file.h"
#include "base/log.h"
#include "common/tool_args.h"
#include "engine/generate.h"
#include "engine/grammar.h"
#include "engine/json_schema.h"
#include "engine/structured.h"
#include "model/llava.h"
#include "text/tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STEPS  1000000
#define MAX_SCHEMA (1u << 20) /* --json-schema and --instance files, bytes */

/* Issue 16's realistic schema: strings with maxLength (a bounded repetition,
 * so every character position is a state of its own), an integer, an enum
 * and an array of strings. */
static const char DEFAULT_SCHEMA[] =
    "{\"type\": \"object\", \"properties\": {"
    "\"name\": {\"type\": \"string\", \"maxLength\": 32},"
    "\"city\": {\"type\": \"string\", \"maxLength\": 32},"
    "\"summary\": {\"type\": \"string\", \"maxLength\": 32},"
    "\"age\": {\"type\": \"integer\"},"
    "\"status\": {\"type\": \"string\", \"enum\": [\"active\", \"inactive\", \"pending\"]},"
    "\"tags\": {\"type\": \"array\", \"items\": {\"type\": \"string\", \"maxLength\": 32},"
    " \"maxItems\": 5}},"
    " \"required\": [\"name\", \"city\", \"summary\", \"age\", \"status\", \"tags\"],"
    " \"additionalProperties\": false}";

/* A valid instance, as a model would write it (one space after ':' and ','). */
static const char DEFAULT_INSTANCE[] =
    "{\"name\": \"Ada Lovelace\", \"city\": \"London\", \"summary\": \"Wrote the first "
    "computer program\", \"age\": 36, \"status\": \"active\", \"tags\": [\"mathematics\", "
    "\"poetry\", \"analytical engine\", \"notes\"]}";

static void usage_text(FILE *f) {
    fprintf(f, "usage: llava-bench grammar (--tokenizer PATH | --model PATH [--mmproj F])\n"
               "                           [--json-schema FILE --instance FILE] [--steps N]\n"
               "                           [--vocab V] [--decode-ms X] [--json]\n"
               "  --tokenizer PATH   a tokenizer.json (or --model: a model's, and its vocabulary)\n"
               "  --json-schema FILE the schema (default: a built-in object of 6 properties)\n"
               "  --instance FILE    a JSON text the schema accepts: the generation played\n"
               "  --steps N          decode steps to time (default 1000)\n"
               "  --vocab V          logits per step (default: the model's or tokenizer's)\n"
               "  --decode-ms X      a decode step's time: the overhead as a percentage of it\n");
}

/* What the walk measured: per step, its parts in ms. */
typedef struct {
    double *total, *mask, *logits, *accept;
    int n;
    uint64_t computed, cached; /* masks, summed over the walks' matchers */
    double computed_ms;        /* time of the steps whose mask was walked */
    int walks, walk_tokens;
} bench_figs;

typedef struct {
    const grammar *g;
    const structured_vocab *sv;
    const llava *m; /* NULL: EOS is eos_id */
    int32_t eos_id;
    int n_logits;
    const int32_t *ids; /* the instance's tokens */
    int n_ids;
    const tok *t;
} bench_in;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static bool is_eos(const bench_in *in, int32_t id) {
    return in->m ? gen_is_eos(in->m, id) : id == in->eos_id;
}

/* The steps of one generation of the instance (and its EOS step), until
 * f->n reaches n_steps. */
static lv_status walk(const bench_in *in, bench_figs *f, int n_steps, const float *logits,
                      float *masked, uint32_t *bits, lv_err *err) {
    grammar_matcher *gm = NULL;
    lv_status st = grammar_matcher_new(in->g, &gm, err);
    for (int i = 0; !st && i <= in->n_ids && f->n < n_steps; i++) {
        const grammar_vocab *v = structured_vocab_at(in->sv, i == 0);
        uint64_t before, after, cached;
        grammar_matcher_mask_stats(gm, &before, &cached);
        double t0 = lv_now_ms();
        if ((st = grammar_matcher_mask(gm, v, bits, err))) break;
        double t1 = lv_now_ms();
        bool complete = grammar_matcher_is_complete(gm), any = false;
        int nv = grammar_vocab_size(v);
        for (int k = 0; k < in->n_logits; k++) { /* as generate.c's mask_logits */
            bool ok = (k < nv && (bits[k >> 5] >> (k & 31)) & 1) || (complete && is_eos(in, k));
            masked[k] = ok ? logits[k] : -INFINITY;
            any |= ok;
        }
        double t2 = lv_now_ms();
        bool fits = i < in->n_ids ? (bits[in->ids[i] >> 5] >> (in->ids[i] & 31)) & 1 : complete;
        if (!any || !fits) {
            st = i < in->n_ids
                     ? lv_fail(err, LV_ERR_ARG,
                               "the instance's token %d (id %d, '%s') is not allowed by the "
                               "schema's grammar: the instance does not fit the schema",
                               i, in->ids[i], tok_id_to_token(in->t, in->ids[i]))
                     : lv_fail(err, LV_ERR_ARG,
                               "the instance ends before the schema's grammar is complete");
            break;
        }
        if (i < in->n_ids && !grammar_matcher_accept_token(gm, v, in->ids[i])) {
            st = lv_fail(err, LV_ERR_ARG, "token %d (id %d) was in the mask but not accepted", i,
                         in->ids[i]);
            break;
        }
        double t3 = lv_now_ms();
        grammar_matcher_mask_stats(gm, &after, &cached);
        f->mask[f->n] = t1 - t0;
        f->logits[f->n] = t2 - t1;
        f->accept[f->n] = t3 - t2;
        f->total[f->n] = t3 - t0;
        if (after > before) f->computed_ms += t1 - t0;
        f->n++;
    }
    if (!st) st = grammar_matcher_error(gm, err);
    uint64_t computed = 0, cached = 0;
    if (gm) grammar_matcher_mask_stats(gm, &computed, &cached);
    f->computed += computed;
    f->cached += cached;
    f->walks++;
    grammar_matcher_free(gm);
    return st;
}

/* Token id adds no text at the start of the output (the decoder strips a
 * lone "▁"): a model under a grammar never writes it, so a walk skips it. */
static bool reads_empty(const tok *t, int32_t id) {
    char *s = NULL;
    size_t len = 1;
    lv_err err;
    if (tok_decode(t, &id, 1, true, &s, &len, &err)) return false;
    free(s);
    return len == 0;
}

static double mean(const double *v, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += v[i];
    return n ? s / n : 0;
}

/* v sorted in place; the q-quantile (nearest rank). */
static double quantile(double *v, int n, double q) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    int k = (int)ceil(q * n) - 1;
    return v[k < 0 ? 0 : k >= n ? n - 1 : k];
}

typedef struct {
    const char *source; /* the tokenizer or model, as given */
    int n_vocab, n_logits, n_ids, steps;
    double vocab_ms, decode_ms;
} bench_info;

static void print_figs(const bench_info *o, bench_figs *f, bool json) {
    double m_total = mean(f->total, f->n), m_mask = mean(f->mask, f->n),
           m_logits = mean(f->logits, f->n), m_accept = mean(f->accept, f->n);
    double med = quantile(f->total, f->n, 0.5), p99 = quantile(f->total, f->n, 0.99),
           max = f->total[f->n - 1];
    uint64_t n_masks = f->computed + f->cached;
    double hit = n_masks ? 100.0 * (double)f->cached / (double)n_masks : 0,
           walked = f->computed ? f->computed_ms / (double)f->computed : 0,
           pct = o->decode_ms > 0 ? 100.0 * m_total / o->decode_ms : -1;
    if (json) {
        printf("{\"vocab\":%d,\"logits\":%d,\"instance_tokens\":%d,\"steps\":%d,\"walks\":%d,"
               "\"vocab_build_ms\":%.3f,\"step_us\":{\"mean\":%.3f,\"median\":%.3f,\"p99\":%.3f,"
               "\"max\":%.3f},\"mask_us\":%.3f,\"logits_us\":%.3f,\"accept_us\":%.3f,"
               "\"masks_walked\":%llu,\"masks_cached\":%llu,\"cache_hit_pct\":%.2f,"
               "\"walked_mask_us\":%.3f",
               o->n_vocab, o->n_logits, o->n_ids, f->n, f->walks, o->vocab_ms, m_total * 1e3,
               med * 1e3, p99 * 1e3, max * 1e3, m_mask * 1e3, m_logits * 1e3, m_accept * 1e3,
               (unsigned long long)f->computed, (unsigned long long)f->cached, hit, walked * 1e3);
        if (pct >= 0) printf(",\"decode_ms\":%.3f,\"overhead_pct\":%.3f", o->decode_ms, pct);
        printf("}\n");
        return;
    }
    printf("grammar: %s, vocabulary %d tokens, logits %d; tries built in %.1f ms\n", o->source,
           o->n_vocab, o->n_logits, o->vocab_ms);
    printf("  %d steps: %d walks of the instance (%d tokens + EOS)\n", f->n, f->walks, o->n_ids);
    printf("  per step  mean %.1f us  median %.1f us  p99 %.1f us  max %.1f us\n", m_total * 1e3,
           med * 1e3, p99 * 1e3, max * 1e3);
    printf("  parts     mask %.1f us  logits %.1f us  accept %.1f us (means)\n", m_mask * 1e3,
           m_logits * 1e3, m_accept * 1e3);
    printf("  masks     %llu walked (mean %.1f us), %llu cached: hit rate %.1f%%\n",
           (unsigned long long)f->computed, walked * 1e3, (unsigned long long)f->cached, hit);
    if (pct >= 0)
        printf("  overhead  %.3f ms of a %.1f ms decode step: %.2f%%\n", m_total, o->decode_ms,
               pct);
}

int grammar_bench_main(int argc, char **argv) {
    const char *tok_path = NULL, *model = NULL, *mmproj = NULL, *schema_path = NULL,
               *instance_path = NULL;
    int steps = 1000, n_logits = 0;
    double decode_ms = 0;
    bool json = false;
    const tool_opt opts[] = {
        TOOL_STR("tokenizer", 0, &tok_path),
        TOOL_STR("model", 'm', &model),
        TOOL_STR("mmproj", 0, &mmproj),
        TOOL_STR("json-schema", 0, &schema_path),
        TOOL_STR("instance", 0, &instance_path),
        TOOL_INT("steps", 0, &steps, 1, MAX_STEPS),
        TOOL_INT("vocab", 0, &n_logits, 1, 1 << 24),
        TOOL_POS("decode-ms", 0, &decode_ms),
        TOOL_FLAG("json", 0, &json),
    };
    static const tool_info tool = {"llava-bench grammar", usage_text, false};
    int rc = tool_parse(&tool, opts, LV_ARRAY_LEN(opts), argc, argv);
    if (rc) return rc == TOOL_HELP ? 0 : 2;
    const char *why = NULL;
    if (!tok_path == !model)
        why = "one of --tokenizer and --model is required";
    else if (mmproj && !model)
        why = "--mmproj goes with --model";
    else if (!schema_path != !instance_path)
        why = "--json-schema and --instance go together (the instance is the generation played)";
    else if (model && n_logits)
        why = "--vocab is for --tokenizer (a model's vocabulary is its own)";
    if (why) {
        fprintf(stderr, "llava-bench grammar: %s\n", why);
        usage_text(stderr);
        return 2;
    }
    lv_log_set_level(LV_LOG_WARN);

    lv_err err;
    llava *m = NULL;
    tok *own = NULL;
    grammar *g = NULL;
    structured_vocab *sv = NULL;
    char *schema = NULL, *instance = NULL;
    size_t schema_len = sizeof DEFAULT_SCHEMA - 1, instance_len = sizeof DEFAULT_INSTANCE - 1;
    lv_buf text = {0};
    int32_t *ids = NULL;
    size_t n_ids = 0;
    float *logits = NULL, *masked = NULL;
    uint32_t *bits = NULL;
    bench_figs f = {0};
    rc = 1;
    if (schema_path && (lv_read_file(schema_path, MAX_SCHEMA, &schema, &schema_len, &err) ||
                        lv_read_file(instance_path, MAX_SCHEMA, &instance, &instance_len, &err)))
        goto fail;
    if (json_schema_to_grammar(schema ? schema : DEFAULT_SCHEMA, schema_len, &text, &err) ||
        grammar_compile(text.data, text.len, &g, &err)) {
        lv_err_prefix(&err, "%s", schema_path ? schema_path : "the built-in schema");
        goto fail;
    }
    const tok *t;
    if (model) {
        if (llava_open2(model, mmproj, &m, &err)) goto fail;
        t = llava_tokenizer(m);
        n_logits = llava_vocab_size(m);
    } else {
        if (tok_load(tok_path, &own, &err)) goto fail;
        t = own;
        if (!n_logits) n_logits = tok_vocab_size(t);
    }
    if (n_logits < tok_vocab_size(t)) {
        lv_fail(&err, LV_ERR_ARG, "--vocab %d is below the tokenizer's %d tokens", n_logits,
                tok_vocab_size(t));
        goto fail;
    }
    double t0 = lv_now_ms();
    if (structured_vocab_new(t, &sv, &err)) goto fail;
    bench_info o = {.source = model ? model : tok_path,
                    .n_vocab = tok_vocab_size(t),
                    .n_logits = n_logits,
                    .steps = steps,
                    .vocab_ms = lv_now_ms() - t0,
                    .decode_ms = decode_ms};
    if (tok_encode(t, instance ? instance : DEFAULT_INSTANCE, instance_len, false, &ids, &n_ids,
                   &err))
        goto fail;
    while (n_ids > 0 && reads_empty(t, ids[0])) /* a lone "▁": nothing at the start */
        memmove(ids, ids + 1, --n_ids * sizeof *ids);
    if (!n_ids) {
        lv_fail(&err, LV_ERR_ARG, "the instance is empty");
        goto fail;
    }
    o.n_ids = (int)n_ids;
    logits = malloc((size_t)n_logits * sizeof *logits);
    masked = malloc((size_t)n_logits * sizeof *masked);
    bits = malloc(((size_t)n_logits + 31) / 32 * sizeof *bits);
    f.total = malloc((size_t)steps * sizeof *f.total);
    f.mask = malloc((size_t)steps * sizeof *f.mask);
    f.logits = malloc((size_t)steps * sizeof *f.logits);
    f.accept = malloc((size_t)steps * sizeof *f.accept);
    if (!logits || !masked || !bits || !f.total || !f.mask || !f.logits || !f.accept) {
        lv_fail(&err, LV_ERR_NOMEM, "out of memory");
        goto fail;
    }
    uint32_t seed = 12345;
    for (int i = 0; i < n_logits; i++) {
        seed = seed * 1664525u + 1013904223u;
        logits[i] = (float)(seed >> 8) / 16777216.0f * 20.0f - 10.0f;
    }
    bench_in in = {g, sv, m, tok_eos_id(t), n_logits, ids, (int)n_ids, t};
    while (f.n < steps)
        if (walk(&in, &f, steps, logits, masked, bits, &err)) goto fail;
    print_figs(&o, &f, json);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "llava-bench grammar: %s\n", err.msg);
done:
    free(f.total), free(f.mask), free(f.logits), free(f.accept);
    free(logits), free(masked), free(bits);
    free(ids);
    lv_buf_free(&text);
    free(schema), free(instance);
    structured_vocab_free(sv);
    grammar_free(g);
    tok_free(own);
    llava_free(m);
    return rc;
}
