/* fuzz_grammar.c - libFuzzer target: any bytes given as grammar text must
 * compile or fail cleanly; whatever compiles must match text and give masks
 * over a small vocabulary without crashing. */
#include "engine/grammar.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    grammar *g = NULL;
    if (grammar_compile((const char *)data, size, &g, NULL) != LV_OK) return 0;
    static const char *const pieces[] = {"{",        "}",    "\"",       "a",    " ", "1",
                                         "\xc3\xa9", "\xe4", "\xb8\xad", "true", "[", "]",
                                         ":",        ",",    "\\",       "\xff", ""};
    size_t lens[sizeof pieces / sizeof *pieces];
    for (size_t i = 0; i < sizeof pieces / sizeof *pieces; i++) {
        lens[i] = 0;
        while (pieces[i][lens[i]]) lens[i]++;
    }
    grammar_vocab *v = NULL;
    grammar_matcher *m = NULL;
    int n = (int)(sizeof pieces / sizeof *pieces);
    if (grammar_vocab_new(pieces, lens, n, &v, NULL) == LV_OK &&
        grammar_matcher_new(g, &m, NULL) == LV_OK) {
        uint32_t bits[1];
        /* greedily take the first allowed token, a few steps */
        for (int step = 0; step < 16; step++) {
            if (grammar_matcher_mask(m, v, bits, NULL) != LV_OK) break;
            int t = 0;
            while (t < n && !((bits[0] >> t) & 1)) t++;
            if (t == n || !grammar_matcher_accept_token(m, v, t)) break;
        }
        grammar_matcher_is_complete(m);
        grammar_matcher_can_continue(m);
    }
    grammar_matcher_free(m);
    grammar_vocab_free(v);
    grammar_free(g);
    return 0;
}
