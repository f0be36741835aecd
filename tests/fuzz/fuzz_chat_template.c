/* fuzz_chat_template.c - libFuzzer target: arbitrary conversations through
 * the chat template. The bytes are split at NUL into messages; a message's
 * first byte gives its role (low two bits: system, user, assistant, and 3
 * is a user turn again) and bits 2-4 the number of image parts (0-7) put
 * before its text, the rest is its text. Rendering succeeds with one
 * "<image>" per image part, or fails with a message, never crashes. */
#include "text/chat_template.h"

#include <stdlib.h>
#include <string.h>

enum { MAX_MSGS = 64, MAX_PARTS = 8 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    chat_message msgs[MAX_MSGS];
    chat_part parts[MAX_MSGS][MAX_PARTS];
    size_t n = 0, images = 0;
    const char *p = (const char *)data, *end = p + size;
    while (p < end && n < MAX_MSGS) {
        const char *stop = memchr(p, '\0', (size_t)(end - p));
        if (!stop) stop = end;
        uint8_t head = (uint8_t)*p;
        int n_img = (head >> 2) & 7, k = 0;
        for (; k < n_img; k++) parts[n][k] = (chat_part){.type = CHAT_PART_IMAGE};
        parts[n][k++] = (chat_part){
            .type = CHAT_PART_TEXT, .text = p + 1, .len = stop > p ? (size_t)(stop - p - 1) : 0};
        chat_role roles[4] = {CHAT_SYSTEM, CHAT_USER, CHAT_ASSISTANT, CHAT_USER};
        msgs[n] = (chat_message){.role = roles[head & 3], .parts = parts[n], .n_parts = (size_t)k};
        images += (size_t)n_img;
        n++;
        p = stop + 1;
    }
    lv_buf out = {0};
    size_t n_images = 0;
    lv_err err = {{0}};
    lv_status st = chat_render(CHAT_TEMPLATE_LLAVA_MISTRAL, msgs, n, &out, &n_images, &err);
    if (st == LV_OK && n_images != images) abort();
    if (st != LV_OK && !err.msg[0]) abort();
    lv_buf_free(&out);
    return 0;
}
