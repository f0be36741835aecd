/* fuzz_sse.c - libFuzzer target: the SSE writer on arbitrary generated
 * text. Any bytes (a token cut inside a UTF-8 character, control
 * characters, quotes, NULs) become one "data: {json}\n\n" event whose JSON
 * parses, with no raw newline inside (it would end the event), and whose
 * delta content is the text itself when the bytes are valid UTF-8 without
 * NUL (each bad byte is U+FFFD otherwise). The same holds for a stream's
 * error event with the bytes as its message. */
#include "server/oai.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* Valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF), no NUL. */
static bool plain_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t k = c < 0x80             ? 1
                   : (c & 0xE0) == 0xC0 ? 2
                   : (c & 0xF0) == 0xE0 ? 3
                   : (c & 0xF8) == 0xF0 ? 4
                                        : 0;
        if (!c || !k || i + k > n) return false;
        uint32_t cp = k == 1 ? c : c & (0x7F >> k);
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += k;
    }
    return true;
}

/* The JSON of one SSE event, checked for its framing; NULL aborts. */
static json_t *event_json(char *ev) {
    if (!ev || strncmp(ev, "data: ", 6)) abort();
    size_t n = strlen(ev);
    if (n < 8 || strcmp(ev + n - 2, "\n\n") || memchr(ev, '\n', n - 2) || memchr(ev, '\r', n))
        abort();
    json_t *o = json_loadb(ev + 6, n - 8, 0, NULL);
    if (!o) abort();
    free(ev);
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    oai_meta m = {.id = "chatcmpl-fuzz", .created = 1, .model = "fuzz", .include_usage = true};
    json_t *o = event_json(oai_chat_chunk_delta(&m, 0, (const char *)data, size, NULL, 0));
    const char *content = json_string_value(json_object_get(
        json_object_get(json_array_get(json_object_get(o, "choices"), 0), "delta"), "content"));
    if (!content) abort();
    if (plain_utf8(data, size) && (strlen(content) != size || memcmp(content, data, size))) abort();
    json_decref(o);

    oai_error e;
    oai_fail(&e, LV_ERR_ARG, 0, NULL, NULL, "%.*s", (int)(size < 400 ? size : 400),
             (const char *)data);
    json_decref(event_json(oai_sse_error(&e)));
    return 0;
}
