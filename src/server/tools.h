/*
 * tools.h - OpenAI tool calling for a model with no tool syntax of its own
 * (private to server/: oai_request.c, jobs.c and stream.c use it).
 *
 * LLaVA-1.6-Mistral's template (text/chat_template.h) knows system, user and
 * assistant turns only, so tools travel as text, in the spelling of
 * Mistral's later instruct models ([TOOL_CALLS], [TOOL_RESULTS]), written
 * here as plain words (they are not special tokens of this vocabulary):
 *
 *   the tools   a text part put first in the LAST user turn (the one the
 *               answer follows; with tool results last, that turn):
 *                 You can call these functions:
 *                 {"name": "get_weather", "description": "...", "parameters": {...}}
 *                 To call functions, answer with only [TOOL_CALLS] and a JSON list of
 *                 calls: [TOOL_CALLS] [{"name": "<function name>", "arguments": {...}}]
 *                 Otherwise answer the user normally.
 *                 <blank line, then the user's text>
 *               Last, not first: the instruction sits next to the answer
 *               (a 7B model follows what is near), as Mistral's own
 *               template places [AVAILABLE_TOOLS]; the cost is that a
 *               cached prefix ends before the previous last user turn.
 *               "required" and a named function change the last sentence
 *               ("You must call ..."); "none" shows no tools at all (the
 *               answer must be plain text, so nothing invites a call).
 *   a call      an assistant message with tool_calls is the text
 *                 [TOOL_CALLS] [{"name": "f", "arguments": {"a": 1}}]
 *               (after its content and a space, if it has content).
 *   a result    consecutive tool messages become one user turn, a line each:
 *                 [TOOL_RESULTS] {"call_id": "call_1", "content": "22 C"} [/TOOL_RESULTS]
 *
 * Decoding: "required" or a named function constrain the whole answer by a
 * grammar (tools_grammar): "[TOOL_CALLS] [" call ("," call)* "]" where a
 * call is {"name": "<f>", "arguments": <f's parameters>} over every function
 * (or the named one; one call without parallel_tool_calls), each function's
 * parameter rules compiled by engine/json_schema.h with the prefix "f<i>-".
 * "auto" decodes freely; an answer that is "[TOOL_CALLS]" and a JSON list of
 * {name, arguments} with known names is a tool call, anything else content.
 */
#ifndef LV_SERVER_TOOLS_H
#define LV_SERVER_TOOLS_H

#include "base/buf.h"
#include "server/oai.h"

#include <jansson.h>

#define TOOLS_CALL_TAG "[TOOL_CALLS]"
#define TOOLS_MAX      128 /* functions per request */
#define TOOLS_NAME_MAX 64  /* bytes of a function name */

/*
 * Reads "tools", "tool_choice" and "parallel_tool_calls" of body root into
 * r (tools, n_tools, tool_mode, tool_named, parallel_tool_calls; for
 * "required" and a named function, grammar_text with grammar_param
 * "tools"). Texts it makes are kept in texts (a json array, released with
 * the request). A 400 names the field: "tools[1].function.name",
 * "tools[0].function.parameters" (with the schema's unsupported keyword),
 * "tool_choice" (unknown function, or no tools).
 */
lv_status tools_parse(const json_t *root, json_t *texts, oai_request *r, oai_error *e);

/* The text shown to the model before the last user turn (see above),
 * appended to out. */
lv_status tools_render_prompt(const oai_request *r, lv_buf *out);

/* An assistant message's tool_calls (param "messages[i].tool_calls")
 * rendered as "[TOOL_CALLS] [...]" into out. 400 for a malformed list. */
lv_status tools_render_calls(const json_t *calls, const char *param, lv_buf *out, oai_error *e);

/* A tool message's result line "[TOOL_RESULTS] {...} [/TOOL_RESULTS]"
 * appended to out (content: len bytes). */
lv_status tools_render_result(const char *call_id, const char *content, size_t len, lv_buf *out);

/*
 * The calls in an answer, when it is one: text (len bytes) starting,
 * after whitespace, with "[TOOL_CALLS]" and then a JSON list of {"name",
 * "arguments"} with names among r's tools. *calls (heap, *n >= 1; free with
 * tools_free_calls) then holds them, ids fresh ("call_" + 24 hex digits),
 * arguments as compact JSON text. Returns false (and *calls NULL) for
 * anything else: the answer is content. Without parallel_tool_calls only
 * the first call is kept.
 */
bool tools_parse_output(const oai_request *r, const char *text, size_t len, oai_tool_call **calls,
                        int *n);
void tools_free_calls(oai_tool_call *calls, int n);

/* Text (len bytes) could still become a tool call: after whitespace it is
 * a prefix of "[TOOL_CALLS]" or starts with it (a stream holds it back). */
bool tools_may_be_call(const char *text, size_t len);

/* The answer is read for tool calls (tools given and tool_choice not "none"). */
bool tools_active(const oai_request *r);

#endif
