/* fuzz_oai_request.c - libFuzzer target: any bytes as an OpenAI request
 * body. The first byte picks the route (even: /v1/chat/completions, odd:
 * /v1/completions), the rest is the body. A body is accepted, and then
 * applies to generation parameters and frees cleanly, or refused with a
 * 4xx (or 503 for memory) naming why, as an error object that serialises;
 * never a crash, a leak or an accepted request without messages/prompt. */
#include "engine/generate.h"
#include "server/oai.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    oai_limits lim;
    oai_limits_default(&lim);
    oai_request r;
    oai_error e;
    memset(&e, 0, sizeof e);
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    bool chat = !(data[0] & 1);
    lv_status st = chat ? oai_parse_chat(body, len, &lim, &r, &e)
                        : oai_parse_completion(body, len, &lim, &r, &e);
    if (st == LV_OK) {
        gen_params p;
        memset(&p, 0, sizeof p);
        oai_request_apply(&r, &p);
        if (r.max_tokens < 0) abort();
        oai_request_free(&r);
        return 0;
    }
    if (!e.message[0] || e.status < 400 || (e.status >= 500 && e.status != 503)) abort();
    char *j = oai_error_json(&e);
    if (!j) abort();
    free(j);
    return 0;
}
