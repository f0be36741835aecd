/*
 * grammar.h - constrained decoding: a grammar over bytes, a matcher that
 * follows generated text through it, and the token masks it induces over a
 * tokenizer's vocabulary (OpenAI response_format json_object / json_schema,
 * a request's `grammar`).
 *
 * SYNTAX (GBNF-like; the JSON-Schema compiler emits exactly this)
 *
 *   grammar     ::= rule+
 *   rule        ::= name "::=" alternatives
 *   alternatives::= sequence ( "|" sequence )*
 *   sequence    ::= element*                  (may be empty: matches the empty string)
 *   element     ::= atom postfix?
 *   atom        ::= "literal" | [class] | [^class] | . | name | "(" alternatives ")"
 *   postfix     ::= "*" | "+" | "?" | "{" m "}" | "{" m ",}" | "{" m "," n "}"
 *
 *   - Names are [A-Za-z0-9_-]+. The start rule is `root`. Rules may be used
 *     before they are defined; each is defined once.
 *   - A rule ends where the next `name ::=` begins (or the text ends), so
 *     alternatives may continue over several lines. Spaces, tabs, newlines
 *     and `#` comments (to the end of the line) may stand between any two
 *     tokens; nothing else is a separator.
 *   - "literal" matches its BYTES in order. Raw bytes (UTF-8 text included)
 *     stand for themselves except `"`, `\` and newline. Escapes: \n \t \r \\
 *     \" ; \xHH is the one byte HH (so "\xC3\xA9" is é); \uHHHH is the UTF-8
 *     encoding of that code point (exactly 4 hex digits; surrogates
 *     refused). "" is allowed and matches the empty string.
 *   - [class] matches ONE Unicode code point, encoded as valid UTF-8 (1 to 4
 *     bytes; overlong forms and surrogates never match), that is one of the
 *     listed characters or inside one of the ranges a-z; [^class] matches one
 *     code point that is in none of them. Inside a class: raw UTF-8
 *     characters, and the escapes \n \t \r \\ \" \] \[ \- \^ \xHH (code point
 *     U+00HH here) \uHHHH. A `-` first or last is literal. [] and [^] are
 *     errors; `.` matches any one code point.
 *   - x* (zero or more), x+ (one or more), x? (zero or one), x{m} (exactly
 *     m), x{m,} (m or more), x{m,n} (m to n); m <= n <= GRAMMAR_MAX_REPEAT.
 *     Postfixes do not stack: write (x*)? rather than x*?.
 *
 * Example (any JSON object with whitespace kept short):
 *   root   ::= object
 *   object ::= "{" ws ( member ( "," ws member )* )? "}" ws
 *   member ::= string ws ":" ws value
 *   ...
 *   ws     ::= [ \t\n]{0,20}
 *
 * grammar_compile refuses, with LV_ERR_ARG and a message giving the line and
 * column or naming the rule: syntax errors, bad escapes, empty classes,
 * undefined rules, a missing `root`, a rule defined twice, nesting deeper
 * than GRAMMAR_MAX_NESTING, more than GRAMMAR_MAX_RULES rules (groups and
 * repetitions count as rules) or GRAMMAR_MAX_ELEMENTS elements, rules that
 * can never end (every alternative needs the rule again: "rule 'x' can never
 * end"), and left recursion (a rule that can reach itself before consuming
 * input, including a * or + over something that can match empty).
 *
 * MATCHING
 *
 * A matcher holds a set of pushdown stacks (each: positions in rule bodies,
 * innermost last), advanced one byte at a time; a class in the middle of a
 * multi-byte code point keeps the bytes seen so far in its stack, so a token
 * may end inside a character and the next token finish it. Text is accepted
 * while at least one stack survives. The number of stacks (ambiguity) is
 * capped at GRAMMAR_MAX_STACKS, each stack's depth at GRAMMAR_MAX_DEPTH, and
 * the work of one byte's step; going over makes that input rejected and
 * leaves a sticky error (grammar_matcher_error) saying which limit.
 *
 * TOKEN MASKS
 *
 * A grammar_vocab is a byte trie of a vocabulary, built once per tokenizer
 * and shared read-only by any number of matchers and threads. The mask of a
 * state is the set of tokens whose whole byte string the state accepts; it
 * is found by walking the trie depth-first with a copy of the state,
 * pruning a subtree at the first byte rejected. Tokens with no bytes
 * (special tokens) are never in a mask: the caller decides about EOS with
 * grammar_matcher_is_complete. Each matcher keeps the masks of its last
 * GRAMMAR_MASK_CACHE states (least recently used out), so a state seen again
 * (every character inside a JSON string) costs a hash lookup.
 *
 * A grammar is immutable after compiling and may be shared between threads;
 * a matcher belongs to one thread at a time.
 */
#ifndef LV_ENGINE_GRAMMAR_H
#define LV_ENGINE_GRAMMAR_H

#include "base/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GRAMMAR_MAX_TEXT     (4u << 20) /* bytes of grammar text */
#define GRAMMAR_MAX_RULES    16384      /* rules, groups and repetitions included */
#define GRAMMAR_MAX_ELEMENTS (1 << 20)  /* bytes of literals, classes and rule uses, expanded */
#define GRAMMAR_MAX_NESTING  64         /* parentheses inside one another */
#define GRAMMAR_MAX_REPEAT   1000       /* n of x{m,n}, m of x{m} and x{m,} */
#define GRAMMAR_MAX_STACKS   512        /* parse stacks alive at once (ambiguity) */
#define GRAMMAR_MAX_DEPTH    4096       /* rule positions in one stack (nesting of the text) */
#define GRAMMAR_MASK_CACHE   16         /* masks a matcher remembers */

typedef struct grammar grammar;
typedef struct grammar_matcher grammar_matcher;
typedef struct grammar_vocab grammar_vocab;

/* Parses and checks len bytes of grammar text (see SYNTAX above). On
 * success *out is a grammar the caller frees with grammar_free. Errors:
 * LV_ERR_ARG ("line 3, column 14: ..." or "rule 'x' ..."), LV_ERR_NOMEM. */
lv_status grammar_compile(const char *text, size_t len, grammar **out, lv_err *err);
void grammar_free(grammar *g); /* NULL is a no-op */

/* A matcher at the start of g (nothing accepted yet). g must outlive it.
 * LV_ERR_TOO_LARGE if root alone is too ambiguous (GRAMMAR_MAX_STACKS). */
lv_status grammar_matcher_new(const grammar *g, grammar_matcher **out, lv_err *err);
/* A copy of m's state (not its mask cache), independent from then on. */
lv_status grammar_matcher_clone(const grammar_matcher *m, grammar_matcher **out, lv_err *err);
void grammar_matcher_free(grammar_matcher *m); /* NULL is a no-op */

/* Advances m over n bytes. True: all accepted. False: some byte was
 * rejected (or a limit was hit: see grammar_matcher_error) and m is
 * unchanged. n == 0 is accepted. */
bool grammar_matcher_accept_bytes(grammar_matcher *m, const char *bytes, size_t n);
/* root has been matched completely: the text so far is a sentence of the
 * grammar (EOS may be allowed). */
bool grammar_matcher_is_complete(const grammar_matcher *m);
/* Some more input can be accepted (false: only EOS can follow, or, if not
 * complete either, the matcher is dead, which accept never leads to). */
bool grammar_matcher_can_continue(const grammar_matcher *m);
/* LV_OK, or the first limit a step went over (LV_ERR_TOO_LARGE, naming it)
 * or LV_ERR_NOMEM; sticky for the matcher's life. */
lv_status grammar_matcher_error(const grammar_matcher *m, lv_err *err);

/* A trie of n_vocab tokens: token_bytes[i] holds token_len[i] bytes (the
 * decoded text of token i, e.g. " Hello" for "▁Hello", one byte for
 * <0x0A>); length 0 marks a token the grammar never allows. Copies the
 * bytes; the caller frees the result with grammar_vocab_free. */
lv_status grammar_vocab_new(const char *const *token_bytes, const size_t *token_len, int n_vocab,
                            grammar_vocab **out, lv_err *err);
void grammar_vocab_free(grammar_vocab *v); /* NULL is a no-op */
int grammar_vocab_size(const grammar_vocab *v);

/* Fills allowed_bits ((n_vocab + 31) / 32 words; bit t % 32 of word t / 32)
 * with the tokens whose bytes m can accept from its current state. Errors:
 * LV_ERR_NOMEM, or LV_ERR_TOO_LARGE when a limit was hit (then the sticky
 * grammar_matcher_error too); the bits are then not to be used. */
lv_status grammar_matcher_mask(grammar_matcher *m, const grammar_vocab *v, uint32_t *allowed_bits,
                               lv_err *err);
/* Accepts token id's bytes; false (m unchanged) if they are rejected, the
 * id is out of range or the token has no bytes. */
bool grammar_matcher_accept_token(grammar_matcher *m, const grammar_vocab *v, int32_t id);

/* Masks computed by walking the trie and masks answered from the cache,
 * since m was made (for tests and benchmarks). */
void grammar_matcher_mask_stats(const grammar_matcher *m, uint64_t *computed, uint64_t *cached);

#endif
