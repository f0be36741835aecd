/*
 * request.h - what one request needs before generation: image files made
 * into the model's input tensors, and the prompt made into ids.
 *
 * The steps are the Hugging Face processor's: each image decoded and
 * preprocessed as the checkpoint's image processor does; the user text
 * rendered through the chat template as one user turn holding one <image>
 * per image (images first), tokenized, and each <image> id repeated as many
 * times as its image has feature rows. gen_run (generate.h) takes it from
 * there. llava-cli and llava-eval both go through here, so a question asked
 * through either gives the same ids and therefore the same answer.
 *
 * Usage:
 *     img_tensor px; int n_tok;
 *     request_load_image(m, "cat.jpg", &px, &n_tok, NULL, NULL, &err);
 *     int32_t *ids; size_t n_ids;
 *     request_prompt_ids(m, "What is this?", false, &n_tok, 1, &ids, &n_ids, &err);
 *     gen_run(m, ids, (int)n_ids, &px, 1, &params, NULL, &result, &err);
 *     free(ids); img_tensor_free(&px);
 */
#ifndef LV_ENGINE_REQUEST_H
#define LV_ENGINE_REQUEST_H

#include "base/common.h"
#include "image/image.h"
#include "model/llava.h"

#include <stdbool.h>

/*
 * Decodes the image file at path (default limits) and preprocesses it with
 * m's image parameters into *out; *n_tokens receives its feature count (the
 * number of <image> ids it stands for). decode_ms / preprocess_ms (may be
 * NULL) receive the wall time of each step. Needs no weights. Errors as
 * img_decode_file / img_preprocess, the message always naming the file. On
 * success the caller frees *out with img_tensor_free; on failure nothing is
 * held.
 */
lv_status request_load_image(const llava *m, const char *path, img_tensor *out, int *n_tokens,
                             double *decode_ms, double *preprocess_ms, lv_err *err);

/*
 * The prompt ids of one request: prompt (UTF-8) rendered as one user turn
 * of the chat template with n_images images (raw: tokenized as given), BOS
 * added as the tokenizer says, then the k-th <image> id expanded to
 * n_tokens[k] copies. With n_images 0 nothing is expanded (an <image> in
 * the text stays one ordinary id). Errors: LV_ERR_ARG (invalid UTF-8; the
 * number of <image> ids differs from n_images: the message gives both),
 * LV_ERR_NOMEM. On success *ids is a heap array the caller frees (free());
 * on failure it is NULL.
 */
lv_status request_prompt_ids(const llava *m, const char *prompt, bool raw, const int *n_tokens,
                             int n_images, int32_t **ids, size_t *n_ids, lv_err *err);

#endif
