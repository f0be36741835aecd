/*
 * tokenizer.h - the BPE tokenizers of Llama/Mistral (SentencePiece style)
 * and of GPT-2 / SmolLM2 / SmolVLM (byte-level), read from a Hugging Face
 * tokenizer.json, producing exactly the ids Hugging Face `tokenizers` does.
 *
 * Pipeline (as tokenizers/src/tokenizer/mod.rs runs it):
 *   1. added tokens (<s>, </s>, <image>, ...) are split out of the raw text
 *      first (leftmost-longest match; lstrip/rstrip/single_word honoured);
 *   2. every remaining piece is normalized on its own (Prepend "▁",
 *      Replace " " -> "▁"; or the Metaspace pre-tokenizer of newer files),
 *      or, in the byte-level family, pre-tokenized: Digits, then ByteLevel
 *      (the GPT-2 regex split, every byte as a printable character);
 *   3. BPE: characters (or <0xNN> byte tokens when a character is not in the
 *      vocabulary), then merges applied by rank;
 *   4. the post-processor adds BOS/EOS (TemplateProcessing), unless the
 *      tokenizer_config.json overrides it (tok_set_add_special).
 * Decoding runs the decoder chain (Replace "▁" -> " ", ByteFallback, Fuse,
 * Strip one leading space; or ByteLevel: characters back to bytes, read as
 * UTF-8 with U+FFFD for ill-formed bytes); tok_stream does the same
 * incrementally.
 *
 * A tok is immutable after loading: any number of threads may encode and
 * decode with it at once.
 */
#ifndef LV_TOKENIZER_H
#define LV_TOKENIZER_H

#include "base/common.h"

#include <stdbool.h>

typedef struct tok tok;

/* Loads a tokenizer.json from a file or from memory (len bytes, need not be
 * NUL-terminated). Unsupported model types, normalizers, pre-tokenizers or
 * decoders are refused with LV_ERR_UNSUPPORTED and a message naming them.
 * The caller frees the result with tok_free. */
lv_status tok_load(const char *path, tok **out, lv_err *err);
lv_status tok_load_mem(const char *json, size_t len, tok **out, lv_err *err);
void tok_free(tok *t); /* NULL is a no-op */

/* Overrides whether encode adds BOS / EOS (tokenizer_config.json's
 * add_bos_token / add_eos_token, as transformers applies them: the template
 * becomes [BOS] $A [EOS]). Without a call, the tokenizer.json
 * post-processor decides. BOS and EOS are tok_bos_id / tok_eos_id; a missing
 * one is not added. Call it before sharing t between threads. */
void tok_set_add_special(tok *t, bool add_bos, bool add_eos);

/* Encodes len bytes of UTF-8 text. add_special: apply the post-processor
 * (BOS/EOS). *ids is a heap array the caller frees (free()); *n_ids its
 * length. Invalid UTF-8 in text is an LV_ERR_ARG error. */
lv_status tok_encode(const tok *t, const char *text, size_t len, bool add_special, int32_t **ids,
                     size_t *n_ids, lv_err *err);

/* Decodes ids to UTF-8 exactly as tokenizers' Tokenizer.decode does.
 * skip_special drops added tokens marked special. *out is NUL-terminated,
 * heap-allocated, the caller frees it. Ids outside the vocabulary are an
 * LV_ERR_ARG error. */
lv_status tok_decode(const tok *t, const int32_t *ids, size_t n_ids, bool skip_special, char **out,
                     size_t *out_len, lv_err *err);

/* Model vocab + added tokens (max id + 1). */
int32_t tok_vocab_size(const tok *t);
/* BOS: the template's first special token before $A, else the token "<s>";
 * EOS: its first special token after $A, else "</s>". -1 if none. */
int32_t tok_bos_id(const tok *t);
int32_t tok_eos_id(const tok *t);
/* Id of a vocab or added token string; -1 if none. */
int32_t tok_token_to_id(const tok *t, const char *piece);
/* Raw piece ("▁Hello"), borrowed from t; NULL if the id is out of range. */
const char *tok_id_to_token(const tok *t, int32_t id);
/* True for an added token marked special. */
bool tok_is_special(const tok *t, int32_t id);
/* The raw bytes token id stands for in a byte-level vocabulary (GPT-2,
 * SmolLM2: each character of the token its byte, as the ByteLevel decoder
 * maps it), which may end inside a UTF-8 character; 0 bytes for a special
 * token. -1 when the vocabulary is not byte-level, id is unknown or the
 * bytes exceed cap. What constrained decoding matches grammars against. */
int tok_token_bytes(const tok *t, int32_t id, char *out, size_t cap);

/*
 * Streaming decoder: feed generated ids one at a time, get the UTF-8 text
 * each one completes. The concatenation of everything tok_stream_push and
 * tok_stream_flush return equals tok_decode of all ids. Bytes of an
 * incomplete UTF-8 sequence (a character spread over <0xNN> byte tokens) are
 * held back until the sequence completes, so a client never sees half a
 * character. A run of byte tokens is held whole until a non-byte token (or
 * flush) ends it, because decode turns a run that is not valid UTF-8 into
 * one U+FFFD per byte; a run already known to be invalid goes out as U+FFFD
 * at once. With the ByteLevel decoder (byte-level tokenizers) the bytes of
 * an incomplete character (at most 3) are held and ill-formed ones go out as
 * U+FFFD once known to be, exactly as tok_decode reads them.
 * One divergence (ByteFallback only): a valid run longer than `pending` has its
 * complete characters emitted early, so if it later turns invalid those
 * bytes are not replaced by U+FFFD as tok_decode would replace them.
 * No allocation: state lives in the struct (fields are private).
 */
typedef struct {
    const tok *t;
    bool skip_special;
    bool started;        /* text has begun: leading Strip over (no decoder: a token went out) */
    uint8_t pending[64]; /* held-back bytes of the current <0xNN> run */
    size_t n_pending;
    bool run_bad;        /* the current run is already invalid UTF-8: each byte is a U+FFFD */
    uint32_t n_stripped; /* leading Strip characters removed so far */
    uint32_t n_held;     /* trailing Strip characters held back (they may end the text) */
    uint32_t seen;       /* bit k: decoder step k has passed a token (Metaspace's "first") */
} tok_stream;

void tok_stream_init(tok_stream *s, const tok *t, bool skip_special);
/* Writes the text completed by id to out (cap bytes, NUL-terminated) and
 * returns its length, or -1 (stream unchanged) if out is too small or id is
 * out of range. With Llama/Mistral decoders (no trailing Strip) and tokens
 * under 64 bytes (Mistral's longest is 48), 256 bytes always suffice;
 * tokens over 512 bytes cannot be streamed. */
int tok_stream_push(tok_stream *s, int32_t id, char *out, size_t cap);
/* Emits whatever is still held back (invalid bytes become U+FFFD, as
 * tok_decode would) and resets the stream. Same return as push. */
int tok_stream_flush(tok_stream *s, char *out, size_t cap);

#endif
