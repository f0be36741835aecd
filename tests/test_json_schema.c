/* test_json_schema.c - JSON Schema → grammar text (engine/json_schema.h).
 *
 * The grammar engine that will read the text is not here yet, so each
 * grammar goes through the reference recogniser tools/reference/
 * grammar_check.py: --check proves it well formed (rules defined, no left
 * recursion, every rule can end), then instances the schema accepts must
 * match and ones it rejects must not. One python3 run per schema.
 *
 * Schemas and instances are written with ' for " (q() swaps them back), so
 * they stay readable; none needs a real apostrophe. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "engine/json_schema.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* s with every ' turned into " (heap; caller frees). */
static char *q(const char *s) {
    char *t = strdup(s);
    assert_non_null(t);
    for (char *p = t; *p; p++)
        if (*p == '\'') *p = '"';
    return t;
}

typedef struct {
    const char *name;
    const char *schema;
    const char *match[10];  /* instances that must match (NULL ends) */
    const char *reject[10]; /* instances that must not */
} schema_case;

/* Writes the grammar and the instances, runs the recogniser, and compares
 * its row of 1/0 with what each instance should give. */
static void check_grammar(const char *name, const char *grammar, const char *const *match,
                          const char *const *reject) {
    const char *dir = tu_tmpdir("json_schema");
    tu_write_file(dir, "grammar.txt", grammar, strlen(grammar));
    char lines[16384] = "", want[64] = "";
    size_t n = 0;
    for (int pass = 0; pass < 2; pass++) {
        const char *const *list = pass ? reject : match;
        for (size_t i = 0; list && list[i]; i++, n++) {
            char *inst = q(list[i]);
            assert_true(strlen(lines) + strlen(inst) + 2 < sizeof lines);
            strcat(lines, inst);
            strcat(lines, "\n");
            free(inst);
            want[n] = pass ? '0' : '1';
        }
    }
    tu_write_file(dir, "lines.txt", lines, strlen(lines));
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "python3 '%s/../tools/reference/grammar_check.py' --check '%s/grammar.txt' "
             "--lines '%s/lines.txt'",
             tu_env("LLAVA_SRC_DIR"), dir, dir);
    char *got;
    int rc = tu_run(cmd, &got);
    char *nl = strchr(got, '\n');
    if (nl) *nl = '\0';
    if (rc != 0 || strcmp(got, want)) {
        print_error("%s: recogniser exit %d, got \"%s\", want \"%s\"\ngrammar:\n%s\n", name, rc,
                    got, want, grammar);
        fail();
    }
    free(got);
}

static void check_case(const schema_case *c) {
    char *schema = q(c->schema);
    lv_buf g = {0};
    lv_err err = {{0}};
    lv_status st = json_schema_to_grammar(schema, strlen(schema), &g, &err);
    if (st) {
        print_error("%s: %s\n", c->name, err.msg);
        fail();
    }
    check_grammar(c->name, g.data, c->match, c->reject);
    lv_buf_free(&g);
    free(schema);
}

/* ---- schemas that compile: instances in, instances out -------------------------------------- */

static const schema_case cases[] = {
    {"person: required and optional mixed",
     "{'type':'object','properties':{'name':{'type':'string','maxLength':8},"
     "'age':{'type':'integer'},'email':{'type':'string','format':'email'},"
     "'nick':{'type':['string','null']}},'required':['name','age'],"
     "'additionalProperties':false}",
     {"{'name':'bob','age':3}", "{'name':'bob','age':-3,'nick':null}",
      "{ 'name' : 'al' , 'age' : 0 , 'email' : 'a.b@x.org' , 'nick' : 'x' }",
      "{'name':'','age':1,'email':'x+y@a-b.co.uk'}"},
     {"{'age':3}", "{'age':3,'name':'bob'}", "{'name':'bob','age':3,'extra':1}",
      "{'name':'bobbobbob','age':3}", "{'name':'bob','age':3.5}", "{'name':'bob','age':03}",
      "{'name':'bob','age':3,'email':'nope'}", "{'name':'bob','age':3,}"}},
    {"all required, nested",
     "{'type':'object','properties':{'id':{'type':'integer'},'pos':{'type':'object',"
     "'properties':{'x':{'type':'number'},'y':{'type':'number'}},'required':['x','y'],"
     "'additionalProperties':false}},'required':['id','pos'],'additionalProperties':false}",
     {"{'id':1,'pos':{'x':1.5,'y':-2e3}}", "{'id':1,'pos':{'x':0,'y':0.25E+2}}"},
     {"{'id':1}", "{'id':1,'pos':{'x':1}}", "{'id':1,'pos':{'y':1,'x':1}}",
      "{'pos':{'x':1,'y':1},'id':1}", "{'id':1,'pos':{'x':1.,'y':1}}"}},
    {"all optional, declared order",
     "{'type':'object','properties':{'z':{'type':'integer'},'a':{'type':'boolean'},"
     "'m':{'type':'null'}},'additionalProperties':false}",
     {"{}", "{ }", "{'z':1}", "{'a':true}", "{'m':null}", "{'z':1,'m':null}",
      "{'z':1,'a':false,'m':null}", "{'a':true,'m':null}"},
     {"{'a':true,'z':1}", "{'m':null,'z':1}", "{,'a':true}", "{'z':1,}", "{'z':1'a':true}"}},
    {"only the last property required",
     "{'type':'object','properties':{'a':{'type':'integer'},'b':{'type':'integer'},"
     "'c':{'type':'integer'}},'required':['c']}",
     {"{'c':1}", "{'a':1,'c':2}", "{'b':1,'c':2}", "{'a':1,'b':2,'c':3}"},
     {"{}", "{'a':1}", "{'a':1,'b':2}", "{'c':1,'a':2}"}},
    {"array of integers, 2 to 3 items",
     "{'type':'array','items':{'type':'integer'},'minItems':2,'maxItems':3}",
     {"[1,2]", "[1, 2, 3]", "[ 1 , 2 ]"},
     {"[]", "[1]", "[1,2,3,4]", "[1,,2]", "[1,2,]"}},
    {"array, at least one item",
     "{'type':'array','items':{'type':'string'},'minItems':1}",
     {"['a']", "['a','b','c','d','e']"},
     {"[]", "['a',1]"}},
    {"array, no items allowed", "{'type':'array','maxItems':0}", {"[]", "[ ]"}, {"[1]"}},
    {"array without items: any values",
     "{'type':'array'}",
     {"[]", "[1,'a',null,[true],{'k':[]}]"},
     {"[1 2]", "{}"}},
    {"enum of strings",
     "{'enum':['red','green','blue']}",
     {"'red'", "'blue'"},
     {"'Red'", "'yellow'", "red"}},
    {"enum of mixed scalars",
     "{'enum':['a',1,2.5,true,null,-7]}",
     {"'a'", "1", "2.5", "true", "null", "-7"},
     {"false", "1.0", "'1'", "2.50"}},
    {"const",
     "{'const':'fixed','description':'the only value'}",
     {"'fixed'"},
     {"'other'", "fixed"}},
    {"integer enum written as reals", "{'type':'integer','enum':[2.0,3]}", {"2", "3"}, {"2.0"}},
    {"anyOf",
     "{'anyOf':[{'type':'string','maxLength':2},{'type':'object','properties':"
     "{'n':{'type':'integer'}},'required':['n'],'additionalProperties':false}]}",
     {"'ab'", "{'n':5}"},
     {"'abc'", "{}", "5"}},
    {"type list with null",
     "{'type':['integer','boolean','null']}",
     {"1", "false", "null"},
     {"'1'", "1.5", "[]"}},
    {"$ref to $defs, the root a $ref",
     "{'$ref':'#/$defs/point','$defs':{'point':{'type':'object','properties':"
     "{'x':{'type':'integer'},'y':{'type':'integer'}},'required':['x','y'],"
     "'additionalProperties':false}}}",
     {"{'x':1,'y':2}"},
     {"{'x':1}", "{}"}},
    {"recursive tree (children may be empty)",
     "{'type':'object','properties':{'root':{'$ref':'#/$defs/node'}},'required':['root'],"
     "'$defs':{'node':{'type':'object','properties':{'value':{'type':'integer'},"
     "'children':{'type':'array','items':{'$ref':'#/$defs/node'}}},"
     "'required':['value','children'],'additionalProperties':false}}}",
     {"{'root':{'value':1,'children':[]}}",
      "{'root':{'value':1,'children':[{'value':2,'children':[{'value':3,'children':[]}]},"
      "{'value':4,'children':[]}]}}"},
     {"{'root':{'value':1}}", "{'root':{'value':1,'children':[{'value':2}]}}"}},
    {"linked list through anyOf and definitions",
     "{'$ref':'#/definitions/cell','definitions':{'cell':{'type':'object','properties':"
     "{'v':{'type':'string'},'next':{'anyOf':[{'$ref':'#/definitions/cell'},"
     "{'type':'null'}]}},'required':['v','next'],'additionalProperties':false}}}",
     {"{'v':'a','next':null}", "{'v':'a','next':{'v':'b','next':null}}"},
     {"{'v':'a'}", "{'v':'a','next':{'v':'b'}}"}},
    {"$ref to a $ref, names with odd characters",
     "{'type':'object','properties':{'p':{'$ref':'#/$defs/A~1b'}},'required':['p'],"
     "'$defs':{'A/b':{'$ref':'#/$defs/Str ing'},'Str ing':{'type':'string','minLength':1}}}",
     {"{'p':'x'}"},
     {"{'p':''}", "{'p':1}"}},
    {"string lengths, an escape counts once",
     "{'type':'string','minLength':2,'maxLength':3}",
     {"'ab'", "'abc'", "'a\\nb'", "'\\u00e9\\\\'", "'\xc3\xa9t\xc3\xa9'"},
     {"'a'", "'abcd'", "'a\\nbc'", "'\\x'", "'a\tb'"}},
    {"empty string only", "{'type':'string','maxLength':0}", {"''"}, {"'a'"}},
    {"any string: escapes and UTF-8",
     "{'type':'string'}",
     {"''", "'plain'", "'q\\'\\\\\\/\\b\\f\\n\\r\\t'", "'\\uD83D\\ude00 \xf0\x9f\x98\x80'"},
     {"'\\u12'", "'a\\qb'", "'unterminated", "'tab\there'"}},
    {"formats",
     "{'type':'object','properties':{'d':{'type':'string','format':'date'},"
     "'t':{'type':'string','format':'time'},'dt':{'type':'string','format':'date-time'},"
     "'u':{'type':'string','format':'uuid'},'ip':{'type':'string','format':'ipv4'}},"
     "'additionalProperties':false}",
     {"{'d':'2024-02-29'}", "{'t':'23:59:60Z'}", "{'t':'08:30:00.123+05:30'}",
      "{'dt':'2024-12-31T23:59:59.5Z'}", "{'u':'123e4567-e89b-12d3-a456-426614174000'}",
      "{'ip':'192.168.0.255'}"},
     {"{'d':'2024-13-01'}", "{'d':'2024-1-01'}", "{'t':'24:00:00Z'}", "{'t':'08:30:00'}",
      "{'dt':'2024-12-31 23:59:59Z'}", "{'u':'123e4567e89b12d3a456426614174000'}",
      "{'ip':'256.1.1.1'}", "{'ip':'1.2.3'}"}},
    {"numbers",
     "{'type':'number'}",
     {"0", "-0", "1.5", "-12.25e-3", "3E10", "12345678901"},
     {"01", "1.", ".5", "+1", "1e", "--1", "NaN"}},
    {"numbers stay finite doubles: the exponent has at most 2 digits",
     "{'type':'number'}",
     {"1234567890123456789.5e99", "-1e-99", "1E+09"},
     {"188408e334", "1e100", "1e-100"}},
    {"integer digits are bounded",
     "{'type':'integer'}",
     {"1234567890123456789", "-9"},
     {"12345678901234567890", "1.0"}},
    {"empty schema: any value",
     "{'title':'anything'}",
     {"1", "'s'", "null", "[1,{'a':[]}]", "{'k':{'l':true}}"},
     {"", "{'a'}", "[1,]"}},
    {"object without properties: any object",
     "{'type':'object'}",
     {"{}", "{'a':1,'b':[null]}"},
     {"[]", "{'a':}"}},
    {"no properties, additionalProperties false",
     "{'type':'object','additionalProperties':false}",
     {"{}", "{ }"},
     {"{'a':1}"}},
    {"whitespace: at most one space",
     "{'type':'object','properties':{'a':{'type':'integer'}},'required':['a']}",
     {"{ 'a' : 1 }", "{'a':1}"},
     {"{  'a':1}", "{\t'a':1}", "{'a':1}x"}},
    {"property names and values that need escaping",
     "{'type':'object','properties':{'we\\'ird':{'const':'tab\\there'},"
     "'caf\xc3\xa9':{'enum':['\xc3\xa9t\xc3\xa9']}},'required':['we\\'ird']}",
     {"{'we\\'ird':'tab\\there'}", "{'we\\'ird':'tab\\there','caf\xc3\xa9':'\xc3\xa9t\xc3\xa9'}"},
     {"{'weird':'tab\\there'}", "{'we\\'ird':'tab\there'}"}},
    {"keyword type inferred, nested arrays",
     "{'items':{'type':'array','items':{'type':'boolean'},'maxItems':2}}",
     {"[]", "[[],[true,false]]"},
     {"[[true,true,true]]", "[true]"}},
};

static void schemas_compile_and_match(void **state) {
    (void)state;
    assert_true(LV_ARRAY_LEN(cases) >= 20);
    for (size_t i = 0; i < LV_ARRAY_LEN(cases); i++) check_case(&cases[i]);
}

static void json_object_mode(void **state) {
    (void)state;
    lv_buf g = {0};
    lv_err err = {{0}};
    assert_int_equal(json_object_grammar(&g, &err), LV_OK);
    const char *match[] = {"{}", "{'a':1,'b':{'c':[1,2,{'d':null}]},'e':'x'}", "{ 'k' : true }",
                           NULL};
    const char *reject[] = {"[]", "'s'", "1", "null", "{'a'}", NULL};
    check_grammar("json_object", g.data, match, reject);
    lv_buf_free(&g);
}

/* The example of json_schema.h's reader: the exact text, so a change in the
 * shape of the grammar is seen here. */
static void grammar_shape(void **state) {
    (void)state;
    char *schema = q("{'type':'object','properties':{'a':{'type':'integer'},"
                     "'b':{'type':'boolean'},'c':{'type':'null'}},'required':['a','c']}");
    lv_buf g = {0};
    lv_err err = {{0}};
    assert_int_equal(json_schema_to_grammar(schema, strlen(schema), &g, &err), LV_OK);
    assert_string_equal(g.data, "# JSON Schema -> grammar (engine/json_schema.c)\n"
                                "root ::= \"{\" ws (\"\\\"a\\\"\" ws \":\" ws integer root-tail-2 "
                                "ws) \"}\"\n"
                                "root-tail-2 ::= (ws \",\" ws \"\\\"b\\\"\" ws \":\" ws boolean)? "
                                "root-tail-3\n"
                                "root-tail-3 ::= ws \",\" ws \"\\\"c\\\"\" ws \":\" ws null\n"
                                "ws ::= \" \"?\n"
                                "integer ::= \"-\"? (\"0\" | [1-9] [0-9]{0,18})\n"
                                "boolean ::= \"true\" | \"false\"\n"
                                "null ::= \"null\"\n");
    /* output is appended */
    assert_int_equal(json_schema_to_grammar("{}", 2, &g, &err), LV_OK);
    assert_non_null(strstr(g.data, "null ::= \"null\"\n# JSON Schema"));
    lv_buf_free(&g);
    free(schema);
}

/* ---- refusals ----------------------------------------------------------------------------- */

typedef struct {
    const char *schema;
    const char *msg; /* must appear in the message */
} refusal;

static const refusal refusals[] = {
    {"{'type':'object','properties':{'age':{'type':'integer','minimum':0}}}",
     "schema.properties.age: \"minimum\" is not supported"},
    {"{'type':'number','maximum':5}", "schema: \"maximum\" is not supported"},
    {"{'type':'number','exclusiveMinimum':5}", "schema: \"exclusiveMinimum\" is not supported"},
    {"{'type':'integer','multipleOf':2}", "schema: \"multipleOf\" is not supported"},
    {"{'type':'string','pattern':'^a+$'}", "schema: \"pattern\" is not supported"},
    {"{'oneOf':[{'type':'string'}]}", "schema: \"oneOf\" is not supported"},
    {"{'items':{'allOf':[{'type':'string'}]}}", "schema.items: \"allOf\" is not supported"},
    {"{'anyOf':[{'type':'string'},{'not':{'type':'null'}}]}",
     "schema.anyOf[1]: \"not\" is not supported"},
    {"{'if':{'type':'string'},'then':{'type':'string'}}", "\"if\" is not supported"},
    {"{'type':'object','patternProperties':{'^a':{}}}",
     "schema: \"patternProperties\" is not supported"},
    {"{'type':'object','properties':{'a':{}},'dependentRequired':{'a':['b']}}",
     "schema: \"dependentRequired\" is not supported"},
    {"{'type':'array','uniqueItems':true}", "schema: \"uniqueItems\" is not supported"},
    {"{'type':'array','prefixItems':[{}]}", "schema: \"prefixItems\" is not supported"},
    {"{'type':'object','properties':{'a':{'typo':1}}}",
     "schema.properties.a: \"typo\" is not supported"},
    {"{'type':'object','additionalProperties':true}",
     "schema: \"additionalProperties\" other than false is not supported"},
    {"{'type':'object','properties':{'m':{'type':'object','additionalProperties':"
     "{'type':'string'}}}}",
     "schema.properties.m: \"additionalProperties\" other than false"},
    {"{'type':'string','format':'hostname'}", "schema: \"format\" \"hostname\" is not supported"},
    {"{'type':'string','format':'date','maxLength':3}", "\"maxLength\" together with \"format\""},
    {"{'$ref':'http://example.com/s.json'}", "schema: \"$ref\" \"http://example.com/s.json\" is "
                                             "not supported"},
    {"{'$ref':'#'}", "\"$ref\" \"#\" is not supported"},
    {"{'type':'object','properties':{'a':{'$ref':'#/properties/b'}}}",
     "schema.properties.a: \"$ref\" \"#/properties/b\" is not supported"},
    {"{'$ref':'#/$defs/a/properties/b','$defs':{'a':{}}}", "is not supported"},
    {"{'type':'array','items':{'$ref':'#/$defs/nope'},'$defs':{'yes':{}}}",
     "schema.items: \"$ref\" \"#/$defs/nope\" is not defined"},
    {"{'$ref':'#/definitions/a','$defs':{'a':{}}}", "\"#/definitions/a\" is not defined"},
    {"{'$ref':'#/$defs/node','$defs':{'node':{'type':'object','properties':{'kid':"
     "{'$ref':'#/$defs/node'}},'required':['kid']}}}",
     "schema.$defs.node: every way through \"node\" refers to itself again, so it can never end"},
    {"{'$ref':'#/$defs/a','$defs':{'a':{'type':'array','items':{'$ref':'#/$defs/b'},"
     "'minItems':1},'b':{'anyOf':[{'$ref':'#/$defs/a'}]}}}",
     "can never end"},
    {"{'$ref':'#/$defs/a','$defs':{'a':{'anyOf':[{'$ref':'#/$defs/a'},{'type':'null'}]}}}",
     "schema.$defs.a: refers to \"a\" again before any JSON text (left recursion)"},
    {"{'$defs':{'a':{'$ref':'#/$defs/b'},'b':{'$ref':'#/$defs/a'}}}", "left recursion"},
    {"{'type':'object','properties':{'a':{'$defs':{}}}}",
     "schema.properties.a: \"$defs\" is supported at the top level only"},
    {"{'$ref':'#/$defs/a','type':'object','$defs':{'a':{}}}",
     "schema: \"$ref\" together with \"type\" is not supported"},
    {"{'anyOf':[{'type':'string'}],'type':'string'}", "\"anyOf\" together with \"type\""},
    {"{'anyOf':[]}", "schema: \"anyOf\" must be a non-empty list"},
    {"{'type':'strnig'}", "schema: \"type\": \"strnig\" is not a JSON Schema type"},
    {"{'type':[]}", "\"type\" must not be an empty list"},
    {"{'type':'object','properties':{'a':{}},'required':['b']}",
     "schema: \"required\" names \"b\", which \"properties\" does not define"},
    {"{'type':'string','minLength':5,'maxLength':2}",
     "schema: \"minLength\" 5 is greater than \"maxLength\" 2"},
    {"{'type':'array','maxItems':-1}", "\"maxItems\": expected an integer in [0, 65536], got -1"},
    {"{'type':'array','minItems':100000}", "\"minItems\": expected an integer in [0, 65536]"},
    {"{'enum':[{'a':1}]}", "schema: \"enum\": value 0 is an object"},
    {"{'enum':[]}", "\"enum\" must be a non-empty list"},
    {"{'type':'string','enum':['a',1]}", "schema: \"enum\": value 1 is not of the schema's"},
    {"{'const':'a','minLength':1}", "\"minLength\" together with \"const\""},
    {"{'type':'string','minItems':1}",
     "\"minItems\" applies to type \"array\", which \"type\" does not allow"},
    {"{'minLength':1,'minItems':1}",
     "(of type \"array\") beside keywords of type \"string\" needs a \"type\""},
    {"{'type':'array','items':[{'type':'string'}]}",
     "schema: \"items\" must be a schema object, got an array"},
    {"{'type':'object','properties':{'a':true}}",
     "schema.properties.a: expected a schema object, got true"},
    {"{'type':'object','properties':[]}", "\"properties\" must be an object"},
    {"[1]", "schema: expected a schema object, got an array"},
    {"{'type':", "schema: not valid JSON"},
    {"{'type':'string','type':'null'}", "schema: not valid JSON"},
};

static void check_refusal(const char *schema, size_t len, const char *msg) {
    lv_buf g = {0};
    lv_err err = {{0}};
    lv_status st = json_schema_to_grammar(schema, len, &g, &err);
    if (st != LV_ERR_ARG || !strstr(err.msg, msg)) {
        print_error("schema %.200s\n  status %s, message \"%s\"\n  want LV_ERR_ARG with \"%s\"\n",
                    schema, lv_status_str(st), err.msg, msg);
        fail();
    }
    assert_null(g.data); /* the output is untouched */
}

static void refusals_name_keyword_and_path(void **state) {
    (void)state;
    for (size_t i = 0; i < LV_ARRAY_LEN(refusals); i++) {
        char *s = q(refusals[i].schema);
        check_refusal(s, strlen(s), refusals[i].msg);
        free(s);
    }
}

static void limits(void **state) {
    (void)state;
    /* nesting: 70 levels of items */
    char deep[2048] = "";
    for (int i = 0; i < 70; i++) strcat(deep, "{\"items\":");
    strcat(deep, "{}");
    for (int i = 0; i < 70; i++) strcat(deep, "}");
    check_refusal(deep, strlen(deep), "nested deeper than 64 schemas");
    /* 64 levels are fine */
    deep[0] = '\0';
    for (int i = 0; i < 64; i++) strcat(deep, "{\"items\":");
    strcat(deep, "{}");
    for (int i = 0; i < 64; i++) strcat(deep, "}");
    lv_buf g = {0};
    lv_err err = {{0}};
    assert_int_equal(json_schema_to_grammar(deep, strlen(deep), &g, &err), LV_OK);
    lv_buf_free(&g);

    /* a 2 MiB schema: a long description */
    size_t big = 2u << 20;
    char *s = malloc(big + 64);
    assert_non_null(s);
    strcpy(s, "{\"description\":\"");
    memset(s + strlen(s), 'x', big);
    strcpy(s + 16 + big, "\"}");
    check_refusal(s, strlen(s), "is over the limit of 1048576 (1 MiB)");

    /* too many rules: 5000 properties, each an object of its own */
    size_t n = 0;
    n += (size_t)sprintf(s + n, "{\"type\":\"object\",\"properties\":{");
    for (int i = 0; i < 5000; i++)
        n += (size_t)sprintf(s + n, "%s\"p%d\":{\"type\":\"object\",\"properties\":{}}",
                             i ? "," : "", i);
    strcpy(s + n, "}}");
    check_refusal(s, strlen(s), "the grammar needs more than 4096 rules");
    free(s);
}

/* Two schemas in one grammar (tool calling): each one's rules prefixed, the
 * fixed rules written once; refs inside a schema keep to its own rules. */
static void prefixed_rules(void **state) {
    (void)state;
    char *a = q("{'type':'object','properties':{'n':{'type':'integer'},'tag':{'enum':['x','y']}},"
                "'required':['n']}");
    char *b =
        q("{'$defs':{'leaf':{'type':'object','properties':{'v':{'type':'string',"
          "'maxLength':3}},'required':['v']}},'type':'array','items':{'$ref':'#/$defs/leaf'}}");
    lv_buf g = {0}, rules = {0};
    lv_err err = {{0}};
    unsigned used = 0;
    assert_int_equal(lv_buf_puts(&g, "root ::= \"A\" f0-root | \"B\" f1-root\n"), LV_OK);
    assert_int_equal(json_schema_to_rules(a, strlen(a), "f0-", &rules, &used, &err), LV_OK);
    assert_int_equal(json_schema_to_rules(b, strlen(b), "f1-", &rules, &used, &err), LV_OK);
    assert_non_null(strstr(rules.data, "f0-root ::= "));
    assert_non_null(strstr(rules.data, "f1-root ::= "));
    for (const char *line = rules.data; line && *line; line = strchr(line, '\n'), line += !!line)
        if (*line) assert_true(!strncmp(line, "f0-", 3) || !strncmp(line, "f1-", 3));
    assert_int_equal(lv_buf_append(&g, rules.data, rules.len), LV_OK);
    assert_int_equal(json_schema_fixed_rules(used, &g, &err), LV_OK);
    static const char *const match[] = {"A{'n':1}", "A{'n':-2,'tag':'y'}", "B[]",
                                        "B[{'v':'abc'},{'v':''}]", NULL};
    static const char *const reject[] = {"A{'tag':'x'}", "B[{'v':'abcd'}]", "A[]", "B{'n':1}",
                                         NULL};
    check_grammar("prefixed rules", g.data, match, reject);
    /* a prefix outside [A-Za-z0-9_-]{1,31} */
    assert_int_equal(json_schema_to_rules(a, strlen(a), "f 0", &rules, &used, &err), LV_ERR_ARG);
    assert_int_equal(json_schema_to_rules(a, strlen(a), "", &rules, &used, &err), LV_ERR_ARG);
    free(a);
    free(b);
    lv_buf_free(&g);
    lv_buf_free(&rules);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(prefixed_rules),
        cmocka_unit_test(schemas_compile_and_match),
        cmocka_unit_test(json_object_mode),
        cmocka_unit_test(grammar_shape),
        cmocka_unit_test(refusals_name_keyword_and_path),
        cmocka_unit_test(limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
