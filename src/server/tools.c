/*
 * tools.c - OpenAI tool calling as text and grammar (tools.h): the tools
 * and tool_choice fields validated, the prompt texts of tools, calls and
 * results, the grammar of a constrained answer, and the calls read back out
 * of an answer.
 */
#include "server/tools.h"

#include "engine/json_schema.h"
#include "io/json_type.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BAD(e, param, code, ...) oai_fail(e, LV_ERR_ARG, 0, param, code, __VA_ARGS__)

static lv_status nomem(oai_error *e) {
    return oai_fail(e, LV_ERR_NOMEM, 0, NULL, NULL, "Out of memory.");
}

/* Keeps s (heap, taken) as a string of texts; returns its stable copy or NULL. */
static const char *keep(json_t *texts, char *s) {
    if (!s) return NULL;
    json_t *j = json_string(s);
    free(s);
    if (!j || json_array_append_new(texts, j)) return NULL;
    return json_string_value(j);
}

bool tools_active(const oai_request *r) {
    return r->n_tools > 0 && r->tool_mode != OAI_TOOLS_NONE;
}

/* ---- the request's fields ----------------------------------------------------------------- */

static bool name_ok(const char *s, size_t n) {
    if (n < 1 || n > TOOLS_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '-')) return false;
    return true;
}

/* tools[i] into r->tools[i]; its parameters compiled (rules prefixed "f<i>-") into rules. */
/* An optional member of tools[i].function: absent, or of the type (is_type). */
static lv_status optional_of(const json_t *v, bool is_type, size_t i, const char *member,
                             const char *want, oai_error *e) {
    if (!v || is_type) return LV_OK;
    char p[96];
    snprintf(p, sizeof p, "tools[%zu].function.%s", i, member);
    return BAD(e, p, "invalid_type", "Invalid type for '%s': expected %s, but got %s instead.", p,
               want, json_type_name(v));
}

static lv_status parse_tool(const json_t *t, size_t i, json_t *texts, oai_request *r, lv_buf *rules,
                            unsigned *fixed, oai_error *e) {
    char p[96];
    snprintf(p, sizeof p, "tools[%zu]", i);
    if (!json_is_object(t))
        return BAD(e, p, "invalid_type",
                   "Invalid type for '%s': expected an object, but got %s "
                   "instead.",
                   p, json_type_name(t));
    json_t *type = json_member(t, "type");
    if (!json_is_string(type) || strcmp(json_string_value(type), "function")) {
        snprintf(p, sizeof p, "tools[%zu].type", i);
        return BAD(e, p, "invalid_value", "Invalid value for '%s': expected 'function'.", p);
    }
    json_t *f = json_member(t, "function");
    snprintf(p, sizeof p, "tools[%zu].function", i);
    if (!json_is_object(f))
        return BAD(e, p, "missing_required_parameter", "Missing required parameter: '%s'.", p);
    json_t *name = json_member(f, "name"), *desc = json_member(f, "description"),
           *params = json_member(f, "parameters"), *strict = json_member(f, "strict");
    snprintf(p, sizeof p, "tools[%zu].function.name", i);
    if (!name)
        return BAD(e, p, "missing_required_parameter", "Missing required parameter: '%s'.", p);
    if (!json_is_string(name) || !name_ok(json_string_value(name), json_string_length(name)))
        return BAD(e, p, "invalid_value",
                   "Invalid '%s': a function name is 1 to 64 of a-z, A-Z, 0-9, underscores and "
                   "dashes.",
                   p);
    const char *fname = json_string_value(name);
    for (size_t k = 0; k < i; k++)
        if (!strcmp(r->tools[k].name, fname))
            return BAD(e, p, "invalid_value", "Invalid '%s': duplicate function name '%s'.", p,
                       fname);
    lv_status st;
    if ((st = optional_of(desc, json_is_string(desc), i, "description", "a string", e)) ||
        (st = optional_of(strict, json_is_boolean(strict), i, "strict", "a boolean", e)) ||
        (st = optional_of(params, json_is_object(params), i, "parameters", "an object", e)))
        return st;
    snprintf(p, sizeof p, "tools[%zu].function.parameters", i);
    /* No parameters: a function of no arguments, {}. */
    json_t *schema =
        params ? json_incref(params) : json_pack("{s:s, s:{}}", "type", "object", "properties");
    json_t *spec = json_pack("{s:O}", "name", name);
    if (desc) json_object_set(spec, "description", desc);
    json_object_set(spec, "parameters", schema);
    char *schema_text = json_dumps_whole(schema, JSON_COMPACT);
    char *spec_text = spec ? json_dumps_whole(spec, 0) : NULL;
    json_decref(schema);
    json_decref(spec);
    r->tools[i].name = fname;
    r->tools[i].spec = keep(texts, spec_text);
    if (!schema_text || !r->tools[i].spec) {
        free(schema_text);
        return nomem(e);
    }
    char prefix[16];
    snprintf(prefix, sizeof prefix, "f%zu-", i);
    lv_err err = {{0}};
    st = json_schema_to_rules(schema_text, strlen(schema_text), prefix, rules, fixed, &err);
    free(schema_text);
    if (st == LV_ERR_NOMEM) return nomem(e);
    if (st)
        return BAD(e, p, "invalid_function_parameters", "Invalid schema for function '%s': %s",
                   fname, err.msg);
    return LV_OK;
}

/* One call's alternative of the grammar: function i by name, then its arguments. */
static lv_status put_call(lv_buf *b, const oai_request *r, size_t i) {
    char head[160];
    snprintf(head, sizeof head, "\"{\\\"name\\\":\\\"%s\\\",\\\"arguments\\\":\" f%zu-root \"}\"",
             r->tools[i].name, i);
    return lv_buf_puts(b, head);
}

/* root: "[TOOL_CALLS] [" call ("," call)* "]" over the functions allowed. */
static lv_status make_grammar(oai_request *r, const lv_buf *rules, unsigned fixed, oai_error *e) {
    lv_buf b = {0};
    lv_err err = {{0}};
    lv_status st = lv_buf_puts(&b, "# tool calls (server/tools.c)\nroot ::= \"" TOOLS_CALL_TAG
                                   " [\" tool-call");
    if (!st && r->parallel_tool_calls) st = lv_buf_puts(&b, " (\",\" tool-call)*");
    if (!st) st = lv_buf_puts(&b, " \"]\"\ntool-call ::= ");
    for (size_t i = 0, first = 1; !st && i < r->n_tools; i++) {
        if (r->tool_mode == OAI_TOOLS_NAMED && (int)i != r->tool_named) continue;
        if (!first) st = lv_buf_puts(&b, " | ");
        if (!st) st = put_call(&b, r, i);
        first = 0;
    }
    if (!st) st = lv_buf_puts(&b, "\n");
    if (!st && rules->data) st = lv_buf_append(&b, rules->data, rules->len);
    if (!st) st = json_schema_fixed_rules(fixed, &b, &err);
    if (st) {
        lv_buf_free(&b);
        return nomem(e);
    }
    r->grammar_text = b.data;
    r->grammar_len = b.len;
    r->grammar_param = "tools";
    return LV_OK;
}

static lv_status parse_choice(const json_t *root, oai_request *r, oai_error *e) {
    json_t *tc = json_member(root, "tool_choice");
    r->tool_mode = r->n_tools ? OAI_TOOLS_AUTO : OAI_TOOLS_NONE;
    if (!tc) return LV_OK;
    const char *fname = NULL;
    if (json_is_string(tc)) {
        const char *s = json_string_value(tc);
        if (!strcmp(s, "none"))
            r->tool_mode = OAI_TOOLS_NONE;
        else if (!strcmp(s, "auto"))
            r->tool_mode = OAI_TOOLS_AUTO;
        else if (!strcmp(s, "required"))
            r->tool_mode = OAI_TOOLS_REQUIRED;
        else
            return BAD(e, "tool_choice", "invalid_value",
                       "Invalid value: '%.40s'. Supported values are: 'none', 'auto' and "
                       "'required'.",
                       s);
    } else if (json_is_object(tc)) {
        json_t *type = json_member(tc, "type"), *f = json_member(tc, "function");
        if (!json_is_string(type) || strcmp(json_string_value(type), "function"))
            return BAD(e, "tool_choice.type", "invalid_value",
                       "Invalid value for 'tool_choice.type': expected 'function'.");
        fname = json_string_value(json_member(f, "name"));
        if (!fname)
            return BAD(e, "tool_choice.function.name", "missing_required_parameter",
                       "Missing required parameter: 'tool_choice.function.name'.");
        r->tool_mode = OAI_TOOLS_NAMED;
    } else {
        return BAD(e, "tool_choice", "invalid_type",
                   "Invalid type for 'tool_choice': expected a string or an object, but got %s "
                   "instead.",
                   json_type_name(tc));
    }
    if (r->tool_mode != OAI_TOOLS_NONE && !r->n_tools)
        return BAD(e, "tool_choice", "invalid_value",
                   "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' "
                   "are specified.");
    if (fname) {
        r->tool_named = -1;
        for (size_t i = 0; i < r->n_tools; i++)
            if (!strcmp(r->tools[i].name, fname)) r->tool_named = (int)i;
        if (r->tool_named < 0)
            return BAD(e, "tool_choice", "invalid_value",
                       "Invalid value for 'tool_choice': no function named '%.64s' in 'tools'.",
                       fname);
    }
    return LV_OK;
}

lv_status tools_parse(const json_t *root, json_t *texts, oai_request *r, oai_error *e) {
    r->parallel_tool_calls = true;
    json_t *ptc = json_member(root, "parallel_tool_calls");
    if (ptc) {
        if (!json_is_boolean(ptc))
            return BAD(e, "parallel_tool_calls", "invalid_type",
                       "Invalid type for 'parallel_tool_calls': expected a boolean, but got %s "
                       "instead.",
                       json_type_name(ptc));
        r->parallel_tool_calls = json_is_true(ptc);
    }
    json_t *tools = json_member(root, "tools");
    if (tools && !json_is_array(tools))
        return BAD(e, "tools", "invalid_type",
                   "Invalid type for 'tools': expected an array, but got %s instead.",
                   json_type_name(tools));
    size_t n = tools ? json_array_size(tools) : 0;
    if (n > TOOLS_MAX)
        return BAD(e, "tools", "array_above_max_length",
                   "Invalid 'tools': array too long. Expected an array with maximum length %d, "
                   "but got an array with length %zu instead.",
                   TOOLS_MAX, n);
    if (n && !(r->tools = calloc(n, sizeof *r->tools))) return nomem(e);
    lv_buf rules = {0};
    unsigned fixed = 0;
    lv_status st = LV_OK;
    for (size_t i = 0; !st && i < n; i++) {
        st = parse_tool(json_array_get(tools, i), i, texts, r, &rules, &fixed, e);
        if (!st) r->n_tools = i + 1;
    }
    if (!st) st = parse_choice(root, r, e);
    if (!st && (r->tool_mode == OAI_TOOLS_REQUIRED || r->tool_mode == OAI_TOOLS_NAMED)) {
        if (r->grammar_text)
            st = BAD(e, "tool_choice", "invalid_value",
                     "'tool_choice' \"required\" or a function cannot be combined with '%s'.",
                     r->grammar_param);
        else
            st = make_grammar(r, &rules, fixed, e);
    }
    lv_buf_free(&rules);
    return st;
}

/* ---- prompt texts ------------------------------------------------------------------------- */

lv_status tools_render_prompt(const oai_request *r, lv_buf *out) {
    lv_status st = lv_buf_puts(out, "You can call these functions:\n");
    for (size_t i = 0; !st && i < r->n_tools; i++) {
        st = lv_buf_puts(out, r->tools[i].spec);
        if (!st) st = lv_buf_puts(out, "\n");
    }
    const char *how = r->parallel_tool_calls ? "a JSON list of calls" : "a JSON list of one call";
    char line[512];
    snprintf(line, sizeof line,
             "To call functions, answer with only " TOOLS_CALL_TAG " and %s: " TOOLS_CALL_TAG
             " [{\"name\": \"<function name>\", \"arguments\": "
             "{...}}]\n",
             how);
    if (!st) st = lv_buf_puts(out, line);
    if (r->tool_mode == OAI_TOOLS_REQUIRED)
        snprintf(line, sizeof line, "You must call a function now.\n\n");
    else if (r->tool_mode == OAI_TOOLS_NAMED)
        snprintf(line, sizeof line, "You must call the function %s now.\n\n",
                 r->tools[r->tool_named].name);
    else
        snprintf(line, sizeof line, "Otherwise answer the user normally.\n\n");
    if (!st) st = lv_buf_puts(out, line);
    return st;
}

static lv_status bad_call(oai_error *e, const char *param, size_t j, const char *what) {
    char p[128];
    snprintf(p, sizeof p, "%s[%zu]%s", param, j, what);
    return BAD(e, p, "invalid_value", "Invalid '%s': expected %s.", p,
               *what ? "a string"
                     : "an object {id, type: 'function', function: {name, "
                       "arguments}}");
}

lv_status tools_render_calls(const json_t *calls, const char *param, lv_buf *out, oai_error *e) {
    if (!json_is_array(calls) || !json_array_size(calls))
        return BAD(e, param, "invalid_value", "Invalid '%s': expected a non-empty array.", param);
    json_t *list = json_array();
    if (!list) return nomem(e);
    lv_status st = LV_OK;
    for (size_t j = 0; !st && j < json_array_size(calls); j++) {
        json_t *c = json_array_get(calls, j), *f = json_member(c, "function");
        json_t *type = json_member(c, "type");
        const char *name = json_string_value(json_member(f, "name"));
        json_t *args = json_member(f, "arguments");
        if (!json_is_object(c) || !json_is_object(f) ||
            (type && (!json_is_string(type) || strcmp(json_string_value(type), "function")))) {
            st = bad_call(e, param, j, "");
            break;
        }
        if (!name) st = bad_call(e, param, j, ".function.name");
        if (!st && args && !json_is_string(args)) st = bad_call(e, param, j, ".function.arguments");
        if (st) break;
        /* arguments is JSON text: shown as the JSON it holds (as a string if it is not JSON) */
        json_t *a = args ? json_loadb_whole(json_string_value(args), json_string_length(args),
                                            JSON_DECODE_ANY, NULL)
                         : json_object();
        if (!a) a = json_incref(args);
        if (json_array_append_new(list, json_pack("{s:s, s:o}", "name", name, "arguments", a)))
            st = nomem(e);
    }
    char *text = st ? NULL : json_dumps_whole(list, 0);
    json_decref(list);
    if (st) return st;
    if (!text || lv_buf_puts(out, TOOLS_CALL_TAG " ") || lv_buf_puts(out, text)) st = nomem(e);
    free(text);
    return st;
}

lv_status tools_render_result(const char *call_id, const char *content, size_t len, lv_buf *out) {
    json_t *o = json_pack("{s:s, s:s%}", "call_id", call_id, "content", content, len);
    char *text = o ? json_dumps_whole(o, 0) : NULL;
    json_decref(o);
    lv_status st = text ? LV_OK : LV_ERR_NOMEM;
    if (!st) st = lv_buf_puts(out, "[TOOL_RESULTS] ");
    if (!st) st = lv_buf_puts(out, text);
    if (!st) st = lv_buf_puts(out, " [/TOOL_RESULTS]");
    free(text);
    return st;
}

/* ---- answers ------------------------------------------------------------------------------ */

static size_t skip_space(const char *s, size_t len) {
    size_t i = 0;
    while (i < len && isspace((unsigned char)s[i])) i++;
    return i;
}

bool tools_may_be_call(const char *text, size_t len) {
    size_t i = skip_space(text, len), tag = strlen(TOOLS_CALL_TAG);
    size_t n = len - i < tag ? len - i : tag;
    return !memcmp(text + i, TOOLS_CALL_TAG, n);
}

void tools_free_calls(oai_tool_call *calls, int n) {
    for (int i = 0; calls && i < n; i++) {
        free(calls[i].name);
        free(calls[i].arguments);
    }
    free(calls);
}

bool tools_parse_output(const oai_request *r, const char *text, size_t len, oai_tool_call **calls,
                        int *n) {
    *calls = NULL;
    *n = 0;
    size_t i = skip_space(text, len), tag = strlen(TOOLS_CALL_TAG);
    if (!tools_active(r) || len - i < tag || memcmp(text + i, TOOLS_CALL_TAG, tag)) return false;
    json_t *list = json_loadb_whole(text + i + tag, len - i - tag, 0, NULL);
    size_t m = json_is_array(list) ? json_array_size(list) : 0;
    if (m > 1 && !r->parallel_tool_calls) m = 1;
    oai_tool_call *c = m ? calloc(m, sizeof *c) : NULL;
    bool ok = c != NULL;
    for (size_t k = 0; ok && k < m; k++) {
        json_t *o = json_array_get(list, k), *args = json_object_get(o, "arguments");
        const char *name = json_string_value(json_object_get(o, "name"));
        bool known = false;
        for (size_t t = 0; name && t < r->n_tools; t++)
            known |= !strcmp(name, r->tools[t].name) &&
                     (r->tool_mode != OAI_TOOLS_NAMED || (int)t == r->tool_named);
        ok = known && args;
        if (!ok) break;
        c[k].name = strdup(name);
        c[k].arguments = json_is_string(args) ? strdup(json_string_value(args))
                                              : json_dumps_whole(args, JSON_COMPACT);
        ok = c[k].name && c[k].arguments;
        oai_make_id(c[k].id, sizeof c[k].id, "call_");
        *n = (int)k + 1;
    }
    json_decref(list);
    if (!ok) {
        tools_free_calls(c, *n);
        *n = 0;
        return false;
    }
    *calls = c;
    *n = (int)m;
    return true;
}
