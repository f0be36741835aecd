/*
 * request.h - what one request needs before generation: images (files, or
 * the bytes a server fetched) made into the model's input tensors, and the
 * prompt made into ids.
 *
 * The steps are the Hugging Face processor's: each image decoded and
 * preprocessed as the checkpoint's image processor does; the user text
 * rendered through the chat template as one user turn holding one <image>
 * per image (images first), tokenized, and each <image> id repeated as many
 * times as its image has feature rows. gen_run (generate.h) takes it from
 * there. llava-cli and llava-eval both go through here, so a question asked
 * through either gives the same ids and therefore the same answer; the
 * server's images come through the same request_image_from_bytes.
 *
 * Usage:
 *     img_tensor px; int n_tok;
 *     request_load_image(m, "cat.jpg", &px, &n_tok, NULL, NULL, &err);
 *     int32_t *ids; size_t n_ids;
 *     request_prompt_ids(m, "What is this?", false, &px, 1, &ids, &n_ids, &err);
 *     gen_run(m, ids, (int)n_ids, &px, 1, &params, NULL, &result, &err);
 *     free(ids); img_tensor_free(&px);
 */
#ifndef LV_ENGINE_REQUEST_H
#define LV_ENGINE_REQUEST_H

#include "base/common.h"
#include "image/image.h"
#include "model/llava.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Decodes len bytes of an encoded image (default img_limits:
 * IMG_DEFAULT_MAX_ENCODED_BYTES, IMG_DEFAULT_MAX_PIXELS) and preprocesses
 * it with m's image parameters and opt (NULL = the reference;
 * opt->base_only = the detail "low" view) into *out. *n_tokens receives
 * the number of <image> ids it stands for: as the loaded model will encode
 * it (llava_tensor_token_count), or before llava_load the processor's
 * count for the full view (llava_image_token_count), so the base-only view
 * needs the model loaded. decode_ms / preprocess_ms (may be NULL) receive
 * the wall time of each step. Errors as img_decode / img_preprocess;
 * LV_ERR_ARG for an image that gives no image tokens ("WxH gives no image
 * tokens") or a base-only view of a model not loaded. On success the
 * caller frees *out with img_tensor_free; on failure nothing is held. The
 * server (image_url bytes) and request_load_image (files) both come
 * through here.
 */
lv_status request_image_from_bytes(const llava *m, const uint8_t *bytes, size_t len,
                                   const img_options *opt, img_tensor *out, int *n_tokens,
                                   double *decode_ms, double *preprocess_ms, lv_err *err);

/*
 * request_image_from_bytes of the file at path, with no options. A file
 * over IMG_DEFAULT_MAX_ENCODED_BYTES is refused before it is read
 * (LV_ERR_TOO_LARGE); LV_ERR_IO when it cannot be read. decode_ms includes
 * reading the file. The message always names the file.
 */
lv_status request_load_image(const llava *m, const char *path, img_tensor *out, int *n_tokens,
                             double *decode_ms, double *preprocess_ms, lv_err *err);

/*
 * The prompt ids of one request: prompt (UTF-8) rendered as one user turn
 * of the model's chat template (llava_chat_template) with n_images images
 * (raw: tokenized as given), BOS added as the tokenizer says, then the k-th
 * <image> id replaced by what images[k] stands for (llava_image_prompt_ids:
 * for LLaVA, one <image> id per feature row; for SmolVLM, its tile markers
 * and image ids). With n_images 0 nothing is expanded (an <image> in the
 * text stays one ordinary id). Errors: LV_ERR_ARG (invalid UTF-8; the
 * number of <image> ids differs from n_images: the message gives both; an
 * image that does not fit the model), LV_ERR_NOMEM. On success *ids is a
 * heap array the caller frees (free()); on failure it is NULL.
 */
lv_status request_prompt_ids(const llava *m, const char *prompt, bool raw, const img_tensor *images,
                             int n_images, int32_t **ids, size_t *n_ids, lv_err *err);

#endif
