/*
 * structured.h - a grammar over a model's tokens: what each token adds to
 * the generated text, as the byte tries constrained decoding walks
 * (engine/grammar.h). gen_state (engine/generate.h) masks the logits with
 * them when a request carries a grammar (response_format json_object /
 * json_schema, a `grammar` field).
 *
 * A token's bytes are those the streaming detokenizer gives for it after
 * another token (text/tokenizer.h): "▁Hello" is " Hello"; a <0xNN> byte
 * token is that one byte (a character may span several: the grammar's
 * classes take a code point split across tokens); special tokens add
 * nothing and are never allowed by a grammar (EOS is the caller's: allowed
 * once the grammar is complete). The first generated token is different:
 * the decoder's Strip removes the text's leading space, so a second trie
 * holds the tokens as they read at the start.
 */
#ifndef LV_ENGINE_STRUCTURED_H
#define LV_ENGINE_STRUCTURED_H

#include "base/common.h"
#include "engine/grammar.h"
#include "text/tokenizer.h"

#include <stdbool.h>

typedef struct structured_vocab structured_vocab;

/* The two tries of t's vocabulary. LV_ERR_NOMEM, or the tokenizer's error. */
lv_status structured_vocab_new(const tok *t, structured_vocab **out, lv_err *err);
void structured_vocab_free(structured_vocab *v); /* NULL: no-op */

/* The trie of the tokens as they read first (at_start) or after another. */
const grammar_vocab *structured_vocab_at(const structured_vocab *v, bool at_start);

#endif
