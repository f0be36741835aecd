/*
 * fuzz_image_decode.c - libFuzzer target for img_decode (every format).
 *
 * Small limits keep each run fast and make the size checks themselves part
 * of what is fuzzed: anything past 4 MB or 1 megapixel must be refused
 * from the header. A successful decode must return a consistent image;
 * ASan/UBSan (and LeakSanitizer) report the rest. `make fuzz` runs it.
 */
#include "image/decode.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    img_limits lim = {.max_encoded_bytes = 4u << 20, .max_pixels = 1000000};
    img_rgb im = {0};
    img_decode_info info;
    lv_err err;
    if (img_decode(data, size, &lim, &im, &info, &err) == LV_OK) {
        if (!im.rgb || im.w <= 0 || im.h <= 0 || (uint64_t)im.w * (uint64_t)im.h > lim.max_pixels)
            abort();
        /* touch the first and last byte so ASan checks the whole allocation */
        volatile uint8_t sink = im.rgb[0] ^ im.rgb[(size_t)im.w * im.h * 3 - 1];
        (void)sink;
    } else if (im.rgb || !err.msg[0]) {
        abort(); /* failures must leave out zeroed and say why */
    }
    img_rgb_free(&im);
    return 0;
}
