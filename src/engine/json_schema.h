/*
 * json_schema.h - a JSON Schema compiled into grammar text, for decoding
 * that can only produce JSON the schema accepts (OpenAI's response_format
 * {"type": "json_schema"} and {"type": "json_object"}).
 *
 * The grammar text (what the grammar engine reads), one rule a line:
 *     name ::= alternative | alternative ...      names: [a-z0-9-]+, start: root
 *     elements of an alternative, separated by spaces:
 *       "literal"   UTF-8 text; escapes \n \t \r \\ \" \xHH
 *       [a-z_]      one code point in the set; [^"\\] one not in it
 *                   (ranges; escapes \\ \] \- \n \t \r \xHH)
 *       rule-name, ( alternatives ), each optionally followed by
 *       * + ? {m} {m,} {m,n}
 *     # starts a comment.
 * No rule is left recursive and every rule can end (tools/reference/
 * grammar_check.py --check proves both for a grammar; the tests run it).
 *
 * The JSON it describes is compact, with optional whitespace between tokens
 * (ws: at most one space, so a model can neither loop on it nor spend its
 * tokens there: compact JSON, as OpenAI writes it), and
 * object members in the schema's declared order.
 *
 * Supported: the subset OpenAI's structured outputs accept, and a little more.
 *   type               "object" "array" "string" "number" "integer" "boolean"
 *                      "null", or a list of them (["string", "null"])
 *   properties, required, additionalProperties: false (absent is read as
 *                      false: only the declared properties are produced).
 *                      Required ones always appear; optional ones may be
 *                      left out, in order (a grammar linear in their count).
 *                      An object with no "properties" is any JSON object.
 *   items, minItems, maxItems
 *   minLength, maxLength (code points, counting an escape as one)
 *   format             date, time, date-time, uuid, email, ipv4: regular
 *                      approximations (month 01-12 and day 01-31 in any
 *                      combination; time with seconds, an optional fraction
 *                      of up to 9 digits and a Z or +hh:mm offset as RFC
 *                      3339 requires; email is
 *                      [A-Za-z0-9._%+-]{1,64} "@" labels of [A-Za-z0-9-]
 *                      with a dot between, two to nine of them)
 *   enum, const        of strings, numbers, booleans and null, produced as
 *                      their compact JSON text (a number in its shortest
 *                      round-trip form: 1.5, 100)
 *   anyOf, $ref        "#/$defs/NAME" or "#/definitions/NAME" ($defs and
 *                      definitions at the top level only); references may
 *                      recurse, as long as each can end
 *   description, title, $comment, examples, default, $schema, $id: annotations
 *   A schema with none of type, enum, const, anyOf, $ref (and no keyword of one
 *   type) is any JSON value.
 * Numbers: at most 19 integer digits, 16 fraction digits, a 3-digit exponent.
 *
 * Refused with LV_ERR_ARG and a message naming the place and the keyword
 * (`schema.properties.age: "minimum" is not supported`): every other
 * keyword (oneOf, allOf, not, if/then/else, pattern, patternProperties,
 * minimum, maximum, multipleOf, uniqueItems, prefixItems, ...),
 * additionalProperties true or a schema, other formats, a $ref that is not
 * local or names nothing, references that recurse before any JSON text (left
 * recursion) or can never end, nesting deeper than JSON_SCHEMA_MAX_DEPTH, a
 * schema over JSON_SCHEMA_MAX_BYTES, and a grammar of more than
 * JSON_SCHEMA_MAX_RULES rules.
 */
#ifndef LV_JSON_SCHEMA_H
#define LV_JSON_SCHEMA_H

#include "base/buf.h"
#include "base/common.h"

#include <stddef.h>

#define JSON_SCHEMA_MAX_BYTES  (1u << 20) /* schema text */
#define JSON_SCHEMA_MAX_DEPTH  64         /* nested schemas (properties, items, anyOf) */
#define JSON_SCHEMA_MAX_RULES  4096       /* rules of one grammar, besides the fixed ones */
#define JSON_SCHEMA_MAX_REPEAT 65536      /* minItems, maxItems, minLength, maxLength */

/* Compiles the JSON Schema in schema_json (len bytes, UTF-8) and appends the
 * grammar text to *out_grammar. On failure *out_grammar is unchanged and err
 * says why: LV_ERR_ARG for a schema that is not JSON, is refused (see above)
 * or is over a limit; LV_ERR_NOMEM. */
lv_status json_schema_to_grammar(const char *schema_json, size_t len, lv_buf *out_grammar,
                                 lv_err *err);

/*
 * Several schemas in one grammar (tool calling: a function's parameters
 * each). json_schema_to_rules compiles one schema like json_schema_to_grammar
 * but appends only its generated rules, every name prefixed with prefix (1 to
 * 31 of [A-Za-z0-9_-]; its start rule is then `<prefix>root`), and ORs the
 * fixed rules it names (ws, string, integer, ...: the same text for every
 * schema) into *fixed_used. json_schema_fixed_rules then appends those fixed
 * rules once. The caller writes `root` and makes sure its own rule names
 * differ from the fixed ones and from its prefixes' (a fixed name never
 * contains a digit after '-', a prefixed one starts with the prefix).
 * Errors as json_schema_to_grammar's (LV_ERR_ARG for a bad prefix too).
 */
lv_status json_schema_to_rules(const char *schema_json, size_t len, const char *prefix,
                               lv_buf *out_rules, unsigned *fixed_used, lv_err *err);
lv_status json_schema_fixed_rules(unsigned fixed_used, lv_buf *out, lv_err *err);

/* Appends the grammar of any JSON object (response_format json_object) to
 * *out. LV_ERR_NOMEM only, with *out unchanged. */
lv_status json_object_grammar(lv_buf *out, lv_err *err);

#endif
