/* fuzz_gguf.c - libFuzzer target: any bytes as a .gguf file must open or
 * fail cleanly through the public reader (gguf_open_mem over the input;
 * gguf_open maps files the same way), and everything a valid file exposes
 * (typed lookups, array elements, the vocabulary) must be readable. */
#include "io/gguf.h"
#include "text/tokenizer_gguf.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* an exact-size copy, so a read past the end is caught by ASan */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    gguf *g = NULL;
    if (gguf_open_mem(copy, size, "fuzz.gguf", &g, NULL) == LV_OK) {
        for (size_t i = 0; i < gguf_kv_count(g); i++) {
            const gguf_kv *kv = gguf_kv_at(g, i);
            int64_t v;
            double d;
            const char *s;
            size_t n;
            (void)gguf_get_int(g, kv->key, &v, NULL, NULL);
            (void)gguf_get_float(g, kv->key, &d, NULL, NULL);
            (void)gguf_get_str(g, kv->key, &s, &n, NULL, NULL);
            for (uint64_t j = 0; kv->type == GGUF_ARRAY && j < kv->n && j < 64; j++) {
                if (kv->arr_type == GGUF_STRING)
                    (void)gguf_arr_str(kv, j, &n);
                else if (gguf_arr_is_int(kv))
                    (void)gguf_arr_int(kv, j);
                else if (gguf_arr_is_float(kv))
                    (void)gguf_arr_float(kv, j);
            }
        }
        for (size_t i = 0; i < gguf_tensor_count(g); i++) {
            const gguf_tensor *t = gguf_tensor_at(g, i);
            volatile uint8_t sink = 0;
            if (t->nbytes) sink ^= ((const uint8_t *)t->data)[t->nbytes - 1];
            (void)sink;
            (void)gguf_find_tensor(g, t->name);
        }
        tok *t = NULL;
        if (tok_load_gguf(g, &t, NULL) == LV_OK) tok_free(t);
        gguf_close(g);
    }
    free(copy);
    return 0;
}
