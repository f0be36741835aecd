/* fuzz_tok_text.c - libFuzzer target: the tokenizer on arbitrary text and
 * arbitrary ids, with the demo model's tokenizer.json (the Mistral pipeline
 * with a small vocabulary) or, when bit 2 of the first byte is set, a small
 * byte-level one (SmolLM2's pipeline: Digits + ByteLevel, the 256 byte
 * characters, a few merges, added tokens). The first byte picks the mode:
 *   even: the rest is text: encode (with or without BOS/EOS, bit 1); valid
 *         UTF-8 must encode (invalid is a clear refusal), and its ids decode;
 *   odd:  the rest is little-endian int32 ids (taken modulo the vocabulary
 *         plus 8, so a few are out of range): tok_decode succeeds exactly
 *         when every id is in range, and the streaming decoder, fed the same
 *         ids one at a time, writes exactly what tok_decode returns (unless
 *         a run of <0xNN> byte tokens is longer than the stream holds back:
 *         the divergence text/tokenizer.h documents). */
#include "text/tokenizer.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef LLAVA_SOURCE_DIR
#error "LLAVA_SOURCE_DIR: the repository root, for models/demo/tokenizer.json"
#endif

static const tok *demo_tokenizer(void) {
    static tok *t;
    if (!t && tok_load(LLAVA_SOURCE_DIR "/models/demo/tokenizer.json", &t, NULL)) abort();
    return t;
}

/* The byte-level tokenizer: ids 0..2 special added tokens, 3 + b the
 * character GPT-2's bytes_to_unicode gives byte b, then a few merges, then
 * <image> (special) and "hi there" (not special). */
static const tok *bytelevel_tokenizer(void) {
    static tok *t;
    if (t) return t;
    static char json[16384];
    size_t n = 0;
#define PUT(...) (n += (size_t)snprintf(json + n, sizeof json - n, __VA_ARGS__))
    PUT("{\"added_tokens\":[");
    const char *added[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "hi there"};
    for (int i = 0; i < 5; i++)
        PUT("%s{\"id\":%d,\"content\":\"%s\",\"normalized\":false,\"special\":%s}", i ? "," : "",
            i < 3 ? i : 264 + i - 3, added[i], i < 4 ? "true" : "false");
    PUT("],\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\","
        "\"individual_digits\":true},{\"type\":\"ByteLevel\",\"add_prefix_space\":false}]},"
        "\"post_processor\":{\"type\":\"ByteLevel\"},\"decoder\":{\"type\":\"ByteLevel\"},"
        "\"model\":{\"type\":\"BPE\",\"vocab\":{\"<|endoftext|>\":0,\"<|im_start|>\":1,"
        "\"<|im_end|>\":2");
    for (int b = 0, next = 0x100; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        unsigned cp = printable ? (unsigned)b : (unsigned)next++;
        if (cp == '"' || cp == '\\')
            PUT(",\"\\%c\":%d", (char)cp, 3 + b);
        else if (cp < 0x80)
            PUT(",\"%c\":%d", (char)cp, 3 + b);
        else
            PUT(",\"%c%c\":%d", (char)(0xC0 | cp >> 6), (char)(0x80 | (cp & 0x3F)), 3 + b);
    }
    PUT(",\"he\":259,\"\xC4\xA0t\":260,\"\xC4\xA0the\":261,\"\xC4\x8A\xC4\x8A\":262,"
        "\"\xC3\x83\xC2\xA9\":263},\"merges\":[\"h e\",\"\xC4\xA0 t\",[\"\xC4\xA0t\",\"he\"],"
        "\"\xC4\x8A \xC4\x8A\",\"\xC3\x83 \xC2\xA9\"]}}");
#undef PUT
    if (n >= sizeof json || tok_load_mem(json, n, &t, NULL)) abort();
    return t;
}

static void fuzz_text(const tok *t, const char *text, size_t len, bool special) {
    int32_t *ids = NULL;
    size_t n = 0;
    lv_err err = {{0}};
    if (tok_encode(t, text, len, special, &ids, &n, &err)) {
        if (!err.msg[0]) abort();
        return;
    }
    char *out = NULL;
    if (tok_decode(t, ids, n, false, &out, NULL, &err)) abort(); /* its own ids always decode */
    free(out);
    free(ids);
}

/* The longest run of consecutive <0xNN> byte tokens in ids (special tokens
 * skipped in the decoding do not break a run: they are dropped before it). */
static size_t longest_byte_run(const tok *t, const int32_t *ids, size_t n, bool skip_special) {
    size_t run = 0, best = 0;
    for (size_t i = 0; i < n; i++) {
        if (skip_special && tok_is_special(t, ids[i])) continue;
        const char *p = tok_id_to_token(t, ids[i]);
        bool byte = p && strlen(p) == 6 && !strncmp(p, "<0x", 3) && p[5] == '>';
        run = byte ? run + 1 : 0;
        if (run > best) best = run;
    }
    return best;
}

static void fuzz_ids(const tok *t, const uint8_t *data, size_t size, bool skip_special) {
    size_t n = size / 4;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) return;
    int32_t vocab = tok_vocab_size(t);
    bool in_range = true;
    for (size_t i = 0; i < n; i++) {
        uint32_t v;
        memcpy(&v, data + 4 * i, 4);
        ids[i] = (int32_t)(v % (uint32_t)(vocab + 8));
        in_range &= ids[i] < vocab;
    }
    char *whole = NULL;
    size_t whole_len = 0;
    lv_status st = tok_decode(t, ids, n, skip_special, &whole, &whole_len, NULL);
    if ((st == LV_OK) != in_range) abort();
    if (st == LV_OK) {
        tok_stream s;
        tok_stream_init(&s, t, skip_special);
        char *streamed = malloc(n * 1024 + 1024), piece[1024];
        size_t at = 0;
        for (size_t i = 0; i < n; i++) {
            int k = tok_stream_push(&s, ids[i], piece, sizeof piece);
            if (k < 0) abort();
            memcpy(streamed + at, piece, (size_t)k);
            at += (size_t)k;
        }
        int k = tok_stream_flush(&s, piece, sizeof piece);
        if (k < 0) abort();
        memcpy(streamed + at, piece, (size_t)k);
        at += (size_t)k;
        bool held_whole = longest_byte_run(t, ids, n, skip_special) <= sizeof s.pending;
        if (held_whole && (at != whole_len || memcmp(streamed, whole, at))) abort();
        free(streamed);
        free(whole);
    }
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const tok *t = data[0] & 4 ? bytelevel_tokenizer() : demo_tokenizer();
    if (data[0] & 1)
        fuzz_ids(t, data + 1, size - 1, data[0] & 2);
    else
        fuzz_text(t, (const char *)data + 1, size - 1, data[0] & 2);
    return 0;
}
