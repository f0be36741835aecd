/* test_chat_template.c - the llava-v1.6-mistral template, string for string
 * against ../shared/spec/llava-next.md §7.2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "text/chat_template.h"

#include <string.h>

#define TEXT(s)                                                                                    \
    { CHAT_PART_TEXT, (s), sizeof(s) - 1 }
#define IMAGE                                                                                      \
    { CHAT_PART_IMAGE, NULL, 0 }

static void expect(const chat_message *msgs, size_t n, const char *want, size_t want_images) {
    lv_buf out = {0};
    size_t n_images = 99;
    lv_err err = {{0}};
    assert_int_equal(chat_render(CHAT_TEMPLATE_LLAVA_MISTRAL, msgs, n, &out, &n_images, &err),
                     LV_OK);
    assert_string_equal(out.data, want);
    assert_int_equal(n_images, want_images);
    lv_buf_free(&out);
}

static void one_image_one_question(void **state) {
    chat_part parts[] = {IMAGE, TEXT("What is shown in this image?")};
    chat_message m[] = {{CHAT_USER, parts, 2}};
    expect(m, 1, "[INST] <image>\nWhat is shown in this image? [/INST]", 1);
}

static void text_only(void **state) {
    chat_part parts[] = {TEXT("Hello")};
    chat_message m[] = {{CHAT_USER, parts, 1}};
    expect(m, 1, "[INST] Hello [/INST]", 0);
}

static void images_come_first_in_content_order(void **state) {
    /* text, image, text, image -> both images first, then the texts joined */
    chat_part parts[] = {TEXT("Compare "), IMAGE, TEXT("these."), IMAGE};
    chat_message m[] = {{CHAT_USER, parts, 4}};
    expect(m, 1, "[INST] <image>\n<image>\nCompare these. [/INST]", 2);
}

static void multi_turn(void **state) {
    chat_part u1[] = {IMAGE, TEXT("What is shown in this image?")};
    chat_part a1[] = {TEXT("The image shows a cat.")};
    chat_part u2[] = {TEXT("And the colors?")};
    chat_part u3[] = {IMAGE, TEXT("And this one?")};
    chat_message m[] = {{CHAT_USER, u1, 2},
                        {CHAT_ASSISTANT, a1, 1},
                        {CHAT_USER, u2, 1},
                        {CHAT_ASSISTANT, a1, 1},
                        {CHAT_USER, u3, 2}};
    expect(m, 5,
           "[INST] <image>\nWhat is shown in this image? [/INST] The image shows a cat.</s> "
           "[INST] And the colors? [/INST] The image shows a cat.</s> "
           "[INST] <image>\nAnd this one? [/INST]",
           2);
}

static void system_message(void **state) {
    chat_part s[] = {TEXT("Answer briefly.")};
    chat_part u[] = {TEXT("Hi")};
    chat_message m[] = {{CHAT_SYSTEM, s, 1}, {CHAT_USER, u, 1}};
    expect(m, 2, "<<SYS>>\nAnswer briefly.\n<</SYS>>\n\n[INST] Hi [/INST]", 0);
}

static void assistant_uses_first_text_part(void **state) {
    chat_part u[] = {TEXT("Q")};
    chat_part a[] = {TEXT("first"), TEXT("second")};
    chat_message m[] = {{CHAT_USER, u, 1}, {CHAT_ASSISTANT, a, 2}};
    expect(m, 2, "[INST] Q [/INST] first</s> ", 0);
}

static void text_with_embedded_nul_and_utf8(void **state) {
    chat_part u[] = {{CHAT_PART_TEXT, "a\0b", 3}, TEXT(" 😀")};
    chat_message m[] = {{CHAT_USER, u, 2}};
    lv_buf out = {0};
    size_t n_images;
    assert_int_equal(chat_render(CHAT_TEMPLATE_LLAVA_MISTRAL, m, 1, &out, &n_images, NULL), LV_OK);
    assert_int_equal(out.len, strlen("[INST] ") + 3 + strlen(" 😀") + strlen(" [/INST]"));
    assert_memory_equal(out.data, "[INST] a\0b 😀 [/INST]", out.len);
    lv_buf_free(&out);
}

static void bad_conversations(void **state) {
    lv_buf out = {0};
    size_t n_images;
    lv_err err;
    assert_int_equal(chat_render(CHAT_TEMPLATE_LLAVA_MISTRAL, NULL, 0, &out, &n_images, &err),
                     LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "no messages"));

    chat_part img[] = {IMAGE};
    chat_message a[] = {{CHAT_ASSISTANT, img, 1}};
    assert_int_equal(chat_render(CHAT_TEMPLATE_LLAVA_MISTRAL, a, 1, &out, &n_images, &err),
                     LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "message 0"));

    chat_part u[] = {TEXT("Q")};
    chat_message s[] = {{CHAT_USER, u, 1}, {CHAT_SYSTEM, NULL, 0}};
    assert_int_equal(chat_render(CHAT_TEMPLATE_LLAVA_MISTRAL, s, 2, &out, &n_images, &err),
                     LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "message 1: a system message needs text"));
    lv_buf_free(&out);
}

/* ---- SmolVLM (spec smolvlm.md §4.1; the examples there, and
 * transformers' rendering of the hub template in tests/data/smolvlm) ---- */

static void expect_smol(const chat_message *msgs, size_t n, const char *want, size_t want_images) {
    lv_buf out = {0};
    size_t n_images = 99;
    lv_err err = {{0}};
    assert_int_equal(chat_render(CHAT_TEMPLATE_SMOLVLM, msgs, n, &out, &n_images, &err), LV_OK);
    assert_string_equal(out.data, want);
    assert_int_equal(n_images, want_images);
    lv_buf_free(&out);
}

static void smolvlm_image_first(void **state) {
    chat_part parts[] = {IMAGE, TEXT("Can you describe this image?")};
    chat_message m[] = {{CHAT_USER, parts, 2}};
    expect_smol(
        m, 1,
        "<|im_start|>User:<image>Can you describe this image?<end_of_utterance>\nAssistant:", 1);
}

static void smolvlm_text_first_images_in_place(void **state) {
    chat_part parts[] = {TEXT("What is in"), IMAGE, TEXT(" this image?")};
    chat_message m[] = {{CHAT_USER, parts, 3}};
    expect_smol(m, 1,
                "<|im_start|>User: What is in<image> this image?<end_of_utterance>\nAssistant:", 1);
}

static void smolvlm_multi_turn_and_system(void **state) {
    chat_part s0[] = {TEXT("Be brief.")};
    chat_part u1[] = {IMAGE, TEXT("What is in this picture?")};
    chat_part a1[] = {TEXT("A red circle on a green field.")};
    chat_part u2[] = {IMAGE, TEXT("And in this one?")};
    chat_message m[] = {
        {CHAT_SYSTEM, s0, 1}, {CHAT_USER, u1, 2}, {CHAT_ASSISTANT, a1, 1}, {CHAT_USER, u2, 2}};
    expect_smol(m, 4,
                "<|im_start|>System: Be brief.<end_of_utterance>\n"
                "User:<image>What is in this picture?<end_of_utterance>\n"
                "Assistant: A red circle on a green field.<end_of_utterance>\n"
                "User:<image>And in this one?<end_of_utterance>\nAssistant:",
                2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_image_one_question),
        cmocka_unit_test(text_only),
        cmocka_unit_test(images_come_first_in_content_order),
        cmocka_unit_test(multi_turn),
        cmocka_unit_test(system_message),
        cmocka_unit_test(assistant_uses_first_text_part),
        cmocka_unit_test(text_with_embedded_nul_and_utf8),
        cmocka_unit_test(bad_conversations),
        cmocka_unit_test(smolvlm_image_first),
        cmocka_unit_test(smolvlm_text_first_images_in_place),
        cmocka_unit_test(smolvlm_multi_turn_and_system),
    };
    return cmocka_run_group_tests_name("chat_template", tests, NULL, NULL);
}
