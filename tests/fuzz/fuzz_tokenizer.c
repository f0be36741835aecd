/* fuzz_tokenizer.c - libFuzzer target: any bytes given as a tokenizer.json
 * must load or fail cleanly, and whatever loads must encode and decode. */
#include "text/tokenizer.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tok *t = NULL;
    if (tok_load_mem((const char *)data, size, &t, NULL) != LV_OK) return 0;
    static const char text[] = "<s>Hello  world\n\xC3\xA9 \xF0\x9F\x98\x80</s>";
    int32_t *ids;
    size_t n;
    if (tok_encode(t, text, sizeof text - 1, true, &ids, &n, NULL) == LV_OK) {
        char *out;
        if (tok_decode(t, ids, n, false, &out, NULL, NULL) == LV_OK) free(out);
        free(ids);
    }
    tok_free(t);
    return 0;
}
