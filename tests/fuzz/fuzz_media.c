/* fuzz_media.c - libFuzzer target: any bytes as an image_url's url under a
 * policy that reaches nothing outside the process: remote fetching off and
 * file:// allowed only below a directory that does not exist. data: URIs
 * (media types, base64 with its padding and whitespace rules, percent
 * escapes) and the scheme and path parsing are exercised; the result is
 * bytes within the cap, or a refusal with a message. */
#include "server/media.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *url = malloc(size + 1);
    if (!url) return 0;
    memcpy(url, data, size);
    url[size] = '\0'; /* media_fetch takes a C string: an inner NUL ends it */
    media_policy pol;
    media_policy_default(&pol);
    pol.allow_remote = false;
    pol.allowed_local_dir = "/nonexistent-llava-fuzz-dir";
    pol.max_bytes = 1u << 16;
    uint8_t *bytes = NULL;
    size_t len = 0;
    lv_err err = {{0}};
    lv_status st = media_fetch(url, &pol, &bytes, &len, &err);
    if (st == LV_OK) {
        if (!bytes || len > pol.max_bytes) abort();
        free(bytes);
    } else if (!err.msg[0] || bytes) {
        abort();
    }
    free(url);
    return 0;
}
