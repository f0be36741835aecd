/* fuzz_json_schema.c - libFuzzer target: any bytes given as a JSON Schema
 * must compile to grammar text or be refused with a message, never crash,
 * and a refusal must leave the output buffer untouched. */
#include "engine/json_schema.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lv_buf g = {0};
    lv_err err = {{0}};
    lv_status st = json_schema_to_grammar((const char *)data, size, &g, &err);
    if (st != LV_OK && (g.data || !err.msg[0])) abort();
    if (st == LV_OK && (!g.data || !g.len)) abort();
    lv_buf_free(&g);
    return 0;
}
