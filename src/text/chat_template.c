/*
 * chat_template.c - the chat templates of the supported checkpoints, in C:
 * llava-v1.6-mistral's and SmolVLM's (render_smolvlm below).
 *
 * Behaviour of llava-hf/llava-v1.6-mistral-7b-hf's template, per message:
 *   system:    "<<SYS>>\n" + first text part + "\n<</SYS>>\n\n"
 *   user:      "[INST] " + "<image>\n" for each image part (all images first,
 *              whatever their position among the parts) + every text part
 *              concatenated with no separator + " [/INST]"
 *   assistant: " " + first text part + "</s> "
 * No <s>: the tokenizer adds BOS. No generation suffix: the answer starts
 * right after " [/INST]". Source: ../shared/spec/llava-next.md §7.
 */
#include "chat_template.h"

#include <stdbool.h>

static const chat_part *first_text(const chat_message *m) {
    for (size_t i = 0; i < m->n_parts; i++)
        if (m->parts[i].type == CHAT_PART_TEXT) return &m->parts[i];
    return NULL;
}

static size_t count_images(const chat_message *m) {
    size_t n = 0;
    for (size_t i = 0; i < m->n_parts; i++) n += m->parts[i].type == CHAT_PART_IMAGE;
    return n;
}

static lv_status render_mistral(const chat_message *msgs, size_t n_msgs, lv_buf *out,
                                size_t *n_images, lv_err *err) {
    static const char *role_names[] = {"system", "user", "assistant"};
    lv_status st = LV_OK;
    for (size_t i = 0; i < n_msgs && st == LV_OK; i++) {
        const chat_message *m = &msgs[i];
        const chat_part *text = first_text(m);
        for (size_t k = 0; k < m->n_parts; k++)
            if (m->parts[k].type == CHAT_PART_VIDEO)
                return lv_fail(err, LV_ERR_UNSUPPORTED,
                               "message %zu: this model's chat template has no place for a video "
                               "(only SmolVLM2 takes video)",
                               i);
        if (m->role != CHAT_USER && count_images(m))
            return lv_fail(err, LV_ERR_ARG, "message %zu: a %s message cannot hold images", i,
                           role_names[m->role]);
        switch (m->role) {
            case CHAT_SYSTEM:
            case CHAT_ASSISTANT:
                if (!text)
                    return lv_fail(err, LV_ERR_ARG, "message %zu: a %s message needs text", i,
                                   role_names[m->role]);
                if (m->role == CHAT_SYSTEM) {
                    st = lv_buf_puts(out, "<<SYS>>\n");
                    if (!st) st = lv_buf_append(out, text->text, text->len);
                    if (!st) st = lv_buf_puts(out, "\n<</SYS>>\n\n");
                } else {
                    st = lv_buf_puts(out, " ");
                    if (!st) st = lv_buf_append(out, text->text, text->len);
                    if (!st) st = lv_buf_puts(out, "</s> ");
                }
                break;
            case CHAT_USER:
                st = lv_buf_puts(out, "[INST] ");
                for (size_t k = 0; k < m->n_parts && !st; k++) {
                    if (m->parts[k].type != CHAT_PART_IMAGE) continue;
                    st = lv_buf_puts(out, "<image>\n");
                    (*n_images)++;
                }
                for (size_t k = 0; k < m->n_parts && !st; k++)
                    if (m->parts[k].type == CHAT_PART_TEXT)
                        st = lv_buf_append(out, m->parts[k].text, m->parts[k].len);
                if (!st) st = lv_buf_puts(out, " [/INST]");
                break;
            default:
                return lv_fail(err, LV_ERR_ARG, "message %zu: unknown role %d", i, (int)m->role);
        }
    }
    if (st) return lv_fail(err, st, "out of memory while rendering the prompt");
    return LV_OK;
}

/*
 * HuggingFaceTB/SmolVLM-*-Instruct and SmolVLM2-* chat_template.json (the
 * same text for all; spec smolvlm.md §4.1): "<|im_start|>", then per
 * message the role capitalised ("User", "Assistant", "System") + ":" when
 * the message's first part is an image, else ": ", every part in content
 * order with no separator (text verbatim, an image as "<image>"), then
 * "<end_of_utterance>\n"; the generation prompt "Assistant:" last. Images
 * are allowed in any role, as the template does not look at the role.
 * A video part renders "<video>" (DEFAULT_CHAT_TEMPLATE of
 * processing_smolvlm.py, which apply_chat_template uses for videos; the
 * hub's chat_template.json is the same text without that branch); only an
 * image first drops the space after the role, a video first keeps it.
 */
static lv_status render_smolvlm(const chat_message *msgs, size_t n_msgs, lv_buf *out,
                                size_t *n_images, lv_err *err) {
    static const char *roles[] = {"System", "User", "Assistant"};
    lv_status st = lv_buf_puts(out, "<|im_start|>");
    for (size_t i = 0; i < n_msgs && !st; i++) {
        const chat_message *m = &msgs[i];
        if ((unsigned)m->role > CHAT_ASSISTANT)
            return lv_fail(err, LV_ERR_ARG, "message %zu: unknown role %d", i, (int)m->role);
        bool image_first = m->n_parts > 0 && m->parts[0].type == CHAT_PART_IMAGE;
        st = lv_buf_puts(out, roles[m->role]);
        if (!st) st = lv_buf_puts(out, image_first ? ":" : ": ");
        for (size_t k = 0; k < m->n_parts && !st; k++) {
            if (m->parts[k].type == CHAT_PART_IMAGE) {
                st = lv_buf_puts(out, "<image>");
                (*n_images)++;
            } else if (m->parts[k].type == CHAT_PART_VIDEO) {
                /* processing_smolvlm.py DEFAULT_CHAT_TEMPLATE: "{{ '<video>' }}" */
                st = lv_buf_puts(out, "<video>");
            } else {
                st = lv_buf_append(out, m->parts[k].text, m->parts[k].len);
            }
        }
        if (!st) st = lv_buf_puts(out, "<end_of_utterance>\n");
    }
    if (!st) st = lv_buf_puts(out, "Assistant:");
    if (st) return lv_fail(err, st, "out of memory while rendering the prompt");
    return LV_OK;
}

lv_status chat_render(chat_template_kind kind, const chat_message *msgs, size_t n_msgs, lv_buf *out,
                      size_t *n_images, lv_err *err) {
    *n_images = 0;
    if (n_msgs == 0) return lv_fail(err, LV_ERR_ARG, "the conversation has no messages");
    switch (kind) {
        case CHAT_TEMPLATE_LLAVA_MISTRAL:
            return render_mistral(msgs, n_msgs, out, n_images, err);
        case CHAT_TEMPLATE_SMOLVLM:
            return render_smolvlm(msgs, n_msgs, out, n_images, err);
    }
    return lv_fail(err, LV_ERR_UNSUPPORTED, "unknown chat template %d", (int)kind);
}
