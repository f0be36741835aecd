/* test_structured.c - constrained decoding end to end on the demo model
 * (models/demo): a JSON Schema compiled to a grammar (engine/json_schema.h,
 * engine/grammar.h), the model's tokens as grammar tries
 * (engine/structured.h), and gen_state masking the logits through the
 * scheduler. 20 schemas (nested objects, optional members, arrays with
 * bounds, enums, const, anyOf, nullable types, $ref to $defs) times 10
 * seeds at temperature 1: every output ends by itself ("stop"), parses as
 * JSON and is valid against its schema by the validator below, written
 * apart from the compiler (types, required, additionalProperties false,
 * enum, const, items with min/max, string lengths, anyOf, $ref). Under ASan
 * one seed a schema. Also the tries: a token reads with its leading space
 * after another token and without it first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/log.h"
#include "engine/grammar.h"
#include "engine/json_schema.h"
#include "engine/structured.h"
#include "sched_harness.h"
#include "server_harness.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SEEDS (SANITIZED ? 1 : 10)

static llava *g_m;
static structured_vocab *g_v;

static int setup(void **state) {
    (void)state;
    lv_err err;
    if (sh_setup_demo(&g_m, NULL, NULL, NULL, 0)) return -1;
    if (structured_vocab_new(llava_tokenizer(g_m), &g_v, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    structured_vocab_free(g_v);
    llava_free(g_m);
    return 0;
}

/* ---- an independent validator ---------------------------------------------------------------- */

static size_t utf8_len(const char *s) {
    size_t n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static bool is_type(const json_t *v, const char *t) {
    if (!strcmp(t, "object")) return json_is_object(v);
    if (!strcmp(t, "array")) return json_is_array(v);
    if (!strcmp(t, "string")) return json_is_string(v);
    if (!strcmp(t, "integer")) return json_is_integer(v);
    if (!strcmp(t, "number")) return json_is_number(v);
    if (!strcmp(t, "boolean")) return json_is_boolean(v);
    if (!strcmp(t, "null")) return json_is_null(v);
    return false;
}

static bool valid(const json_t *v, const json_t *s, const json_t *root) {
    const json_t *x;
    if ((x = json_object_get(s, "$ref"))) {
        const char *ref = json_string_value(x);
        assert_non_null(ref);
        assert_int_equal(strncmp(ref, "#/$defs/", 8), 0);
        return valid(v, json_object_get(json_object_get(root, "$defs"), ref + 8), root);
    }
    if ((x = json_object_get(s, "anyOf"))) {
        size_t i;
        const json_t *alt;
        json_array_foreach(x, i, alt) if (valid(v, alt, root)) return true;
        return false;
    }
    if ((x = json_object_get(s, "const")) && !json_equal(v, x)) return false;
    if ((x = json_object_get(s, "enum"))) {
        bool found = false;
        size_t i;
        const json_t *e;
        json_array_foreach(x, i, e) found |= json_equal(v, e);
        if (!found) return false;
    }
    if ((x = json_object_get(s, "type"))) {
        bool ok = false;
        if (json_is_string(x)) ok = is_type(v, json_string_value(x));
        size_t i;
        const json_t *t;
        json_array_foreach(x, i, t) ok |= is_type(v, json_string_value(t));
        if (!ok) return false;
    }
    if (json_is_string(v)) {
        size_t n = utf8_len(json_string_value(v));
        if ((x = json_object_get(s, "maxLength")) && n > (size_t)json_integer_value(x))
            return false;
        if ((x = json_object_get(s, "minLength")) && n < (size_t)json_integer_value(x))
            return false;
    }
    if (json_is_array(v)) {
        size_t n = json_array_size(v), i;
        if ((x = json_object_get(s, "maxItems")) && n > (size_t)json_integer_value(x)) return false;
        if ((x = json_object_get(s, "minItems")) && n < (size_t)json_integer_value(x)) return false;
        const json_t *items = json_object_get(s, "items"), *e;
        if (items) json_array_foreach(v, i, e) if (!valid(e, items, root)) return false;
    }
    if (json_is_object(v) && (x = json_object_get(s, "properties"))) {
        const char *k;
        const json_t *e;
        json_object_foreach((json_t *)v, k, e) {
            const json_t *ps = json_object_get(x, k);
            if (!ps || !valid(e, ps, root)) return false; /* additionalProperties false */
        }
        size_t i;
        const json_t *req;
        json_array_foreach(json_object_get(s, "required"), i,
                           req) if (!json_object_get(v, json_string_value(req))) return false;
    }
    return true;
}

/* ---- schemas (' for ") -------------------------------------------------------------------------
 */

static const char *const schemas[] = {
    "{'type':'object','properties':{'shape':{'enum':['circle','square','cross']}},"
    "'required':['shape'],'additionalProperties':false}",
    "{'type':'object','properties':{'count':{'type':'integer'},'ok':{'type':'boolean'}},"
    "'required':['count','ok'],'additionalProperties':false}",
    "{'type':'object','properties':{'name':{'type':'string','maxLength':6},"
    "'age':{'type':'integer'}},'required':['name'],'additionalProperties':false}",
    "{'type':'object','properties':{'a':{'type':'null'},'b':{'type':['integer','null']},"
    "'c':{'const':'fixed'}},'required':['a','b','c'],'additionalProperties':false}",
    "{'type':'array','items':{'type':'integer'},'minItems':1,'maxItems':3}",
    "{'type':'array','items':{'enum':['red','green','blue']},'maxItems':4}",
    "{'type':'object','properties':{'pos':{'type':'object','properties':{'x':{'type':'integer'},"
    "'y':{'type':'integer'}},'required':['x','y'],'additionalProperties':false}},"
    "'required':['pos'],'additionalProperties':false}",
    "{'type':'object','properties':{'tags':{'type':'array','items':{'type':'string',"
    "'maxLength':5},'maxItems':2}},'required':['tags'],'additionalProperties':false}",
    "{'anyOf':[{'type':'integer'},{'type':'object','properties':{'n':{'type':'boolean'}},"
    "'required':['n'],'additionalProperties':false}]}",
    "{'enum':['yes','no',1,null,true]}",
    "{'$ref':'#/$defs/p','$defs':{'p':{'type':'object','properties':{'x':{'type':'integer'}},"
    "'required':['x'],'additionalProperties':false}}}",
    "{'type':'object','properties':{'first':{'$ref':'#/$defs/c'},'second':{'$ref':'#/$defs/c'}},"
    "'required':['first','second'],'additionalProperties':false,"
    "'$defs':{'c':{'enum':['r','g','b']}}}",
    "{'type':'object','properties':{'z':{'type':'integer'},'a':{'type':'boolean'},"
    "'m':{'type':'null'}},'additionalProperties':false}",
    "{'type':'object','properties':{'items':{'type':'array','items':{'type':'object',"
    "'properties':{'id':{'type':'integer'},'on':{'type':'boolean'}},'required':['id','on'],"
    "'additionalProperties':false},'maxItems':2}},'required':['items'],"
    "'additionalProperties':false}",
    "{'type':'object','properties':{'v':{'anyOf':[{'type':'string','maxLength':3},"
    "{'type':'null'}]}},'required':['v'],'additionalProperties':false}",
    "{'type':'number'}",
    "{'type':'boolean'}",
    "{'type':'string','minLength':2,'maxLength':4}",
    "{'type':'object','properties':{'node':{'$ref':'#/$defs/n1'}},'required':['node'],"
    "'additionalProperties':false,'$defs':{'n1':{'type':'object','properties':{'v':{'type':"
    "'integer'},'kid':{'anyOf':[{'$ref':'#/$defs/n2'},{'type':'null'}]}},'required':['v','kid'],"
    "'additionalProperties':false},'n2':{'type':'object','properties':{'v':{'type':'integer'}},"
    "'required':['v'],'additionalProperties':false}}}",
    "{'type':'object','properties':{'grid':{'type':'array','items':{'type':'array','items':"
    "{'type':'integer'},'maxItems':2},'maxItems':2},'label':{'type':['string','null'],"
    "'maxLength':4}},'required':['grid','label'],'additionalProperties':false}",
};

static char *q(const char *s) {
    char *t = strdup(s);
    assert_non_null(t);
    for (char *p = t; *p; p++)
        if (*p == '\'') *p = '"';
    return t;
}

/* 20 schemas x SEEDS seeds, four at a time through the scheduler. */
static void test_outputs_follow_their_schemas(void **state) {
    (void)state;
    enum { N_SCHEMAS = sizeof schemas / sizeof schemas[0] };
    assert_true(N_SCHEMAS >= 20);
    sched *w;
    lv_err err;
    sched_config cfg = {.queue_size = 256, .parallel = 4};
    if (sched_new(g_m, &cfg, &w, &err) || sched_start(w, &err)) fail_msg("%s", err.msg);
    grammar *gr[N_SCHEMAS];
    json_t *sj[N_SCHEMAS];
    sched_job *jobs[N_SCHEMAS * SEEDS];
    for (int i = 0; i < N_SCHEMAS; i++) {
        char *schema = q(schemas[i]);
        lv_buf text = {0};
        if (json_schema_to_grammar(schema, strlen(schema), &text, &err) ||
            grammar_compile(text.data, text.len, &gr[i], &err))
            fail_msg("schema %d: %s", i, err.msg);
        sj[i] = json_loads(schema, 0, NULL);
        assert_non_null(sj[i]);
        lv_buf_free(&text);
        free(schema);
        for (int k = 0; k < SEEDS; k++) {
            sched_job *j = jobs[i * SEEDS + k] =
                sh_job(g_m, "[INST] Describe the picture as JSON. [/INST]", NULL, 0, 160);
            j->params.sampling.temperature = 1.0f;
            j->params.sampling.seed = 1000 + (uint64_t)k;
            j->params.grammar = gr[i];
            j->params.vocab = g_v;
            if (sched_submit(w, j, &err)) fail_msg("%s", err.msg);
        }
    }
    int ok = 0;
    for (int n = 0; n < N_SCHEMAS * SEEDS; n++) {
        sched_job *j = jobs[n];
        sched_job_wait(j);
        if (j->st) fail_msg("schema %d: %s", n / SEEDS, j->err.msg);
        const char *text = j->result.text;
        if (strcmp(j->result.finish_reason, "stop"))
            fail_msg("schema %d seed %d: did not end (%s): %s", n / SEEDS, n % SEEDS,
                     j->result.finish_reason, text);
        json_error_t je;
        json_t *v = json_loads(text, JSON_DECODE_ANY, &je);
        if (!v) fail_msg("schema %d: not JSON (%s): %s", n / SEEDS, je.text, text);
        if (!valid(v, sj[n / SEEDS], sj[n / SEEDS]))
            fail_msg("schema %d: not valid against %s: %s", n / SEEDS, schemas[n / SEEDS], text);
        if (n % SEEDS == 0) print_message("schema %2d: %s\n", n / SEEDS, text);
        json_decref(v);
        ok++;
        sched_job_release(j);
    }
    print_message("%d outputs over %d schemas, every one valid\n", ok, N_SCHEMAS);
    sched_free(w);
    for (int i = 0; i < N_SCHEMAS; i++) grammar_free(gr[i]), json_decref(sj[i]);
}

/* A grammar that only allows " Hello"-like text: the first token reads
 * without its leading space, later ones with it. */
static void test_tries_first_and_after(void **state) {
    (void)state;
    const tok *t = llava_tokenizer(g_m);
    int n = tok_vocab_size(t);
    assert_int_equal(grammar_vocab_size(structured_vocab_at(g_v, true)), n);
    assert_int_equal(grammar_vocab_size(structured_vocab_at(g_v, false)), n);
    /* "yes" then " no": a grammar of exactly that text */
    grammar *g;
    lv_err err;
    const char *text = "root ::= \"yes no\"";
    if (grammar_compile(text, strlen(text), &g, &err)) fail_msg("%s", err.msg);
    grammar_matcher *m;
    assert_int_equal(grammar_matcher_new(g, &m, &err), LV_OK);
    uint32_t *bits = calloc(((size_t)n + 31) / 32, sizeof *bits);
    assert_non_null(bits);
    assert_int_equal(grammar_matcher_mask(m, structured_vocab_at(g_v, true), bits, &err), LV_OK);
    int allowed = 0;
    for (int i = 0; i < n; i++) allowed += (bits[i >> 5] >> (i & 31)) & 1;
    assert_true(allowed > 0); /* "y", "ye", "yes", "▁y" stripped to "y", ... */
    free(bits);
    grammar_matcher_free(m);
    grammar_free(g);
}

/* Logprobs under a grammar: only possible tokens are alternatives, every
 * logprob finite, and the text is the grammar's. */
static void test_logprobs_under_grammar(void **state) {
    (void)state;
    grammar *g;
    lv_err err;
    const char *text = "root ::= \"yes\" | \"no\"";
    if (grammar_compile(text, strlen(text), &g, &err)) fail_msg("%s", err.msg);
    sched *w;
    sched_config cfg = {.queue_size = 4, .parallel = 1};
    if (sched_new(g_m, &cfg, &w, &err) || sched_start(w, &err)) fail_msg("%s", err.msg);
    sched_job *j = sh_job(g_m, "[INST] Is it red? [/INST]", NULL, 0, 16);
    j->params.sampling.n_top_logprobs = 20;
    j->params.grammar = g;
    j->params.vocab = g_v;
    sh_run(w, j);
    assert_true(!strcmp(j->result.text, "yes") || !strcmp(j->result.text, "no"));
    assert_string_equal(j->result.finish_reason, "stop");
    for (int i = 0; i < j->n_tokens; i++) {
        const sample_result *r = &j->tokens[i];
        assert_true(isfinite(r->logprob));
        assert_true(r->n_top >= 1 && r->n_top <= 20);
        for (int k = 0; k < r->n_top; k++) assert_true(isfinite(r->top[k].logprob));
    }
    sched_free(w);
    sched_job_release(j);
    grammar_free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tries_first_and_after),
        cmocka_unit_test(test_logprobs_under_grammar),
        cmocka_unit_test(test_outputs_follow_their_schemas),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
