/*
 * chat_template.h - turns a conversation into the prompt text a checkpoint
 * was trained on.
 *
 * We do not run Jinja: each supported template is written out in C, from the
 * behaviour of the checkpoint's own template (../shared/spec/llava-next.md
 * §7). The output is text with one "<image>" placeholder per image, in the
 * order the images appear; the tokenizer turns each into the image token id
 * and the engine later expands it into that image's features.
 */
#ifndef LV_CHAT_TEMPLATE_H
#define LV_CHAT_TEMPLATE_H

#include "base/buf.h"
#include "base/common.h"

typedef enum { CHAT_SYSTEM, CHAT_USER, CHAT_ASSISTANT } chat_role;
/* CHAT_PART_VIDEO: SmolVLM2 only (its template's video branch renders
 * "<video>"; engine/request_video.h expands it); the LLaVA template refuses
 * it. */
typedef enum { CHAT_PART_TEXT, CHAT_PART_IMAGE, CHAT_PART_VIDEO } chat_part_type;

typedef struct {
    chat_part_type type;
    const char *text; /* CHAT_PART_TEXT: UTF-8, len bytes (borrowed); images: unused */
    size_t len;
} chat_part;

typedef struct {
    chat_role role;
    const chat_part *parts; /* borrowed; content in the order the client sent it */
    size_t n_parts;
} chat_message;

typedef enum {
    CHAT_TEMPLATE_LLAVA_MISTRAL, /* llava-hf/llava-v1.6-mistral-7b-hf: [INST] ... [/INST] */
    CHAT_TEMPLATE_SMOLVLM,       /* HuggingFaceTB/SmolVLM*: <|im_start|>User: ...<end_of_utterance>
                                    \nAssistant: (images in place, in content order) */
} chat_template_kind;

/*
 * Renders msgs with template kind, appending to out. *n_images receives the
 * number of "<image>" placeholders written; they are in the order the images
 * must be supplied (for the Mistral template: per user turn, every image of
 * the turn first, in content order). The result ends where the model's answer
 * begins (there is no separate generation prompt for this template).
 * Fails with LV_ERR_ARG (message names the message index) for an empty
 * conversation, a system or assistant message without text, or images in a
 * system or assistant message.
 */
lv_status chat_render(chat_template_kind kind, const chat_message *msgs, size_t n_msgs, lv_buf *out,
                      size_t *n_images, lv_err *err);

#endif
