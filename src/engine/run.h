/*
 * run.h - one request start to finish on the caller's thread: images
 * encoded, prompt prefilled, tokens decoded until EOS, a stop string, the
 * token limit or the end of the context.
 *
 * gen_run is a scheduler of one (engine/scheduler.h) driven with
 * sched_step: llava-cli and llava-eval take the very path the server's
 * requests take, so the same request gives the same ids and logits
 * through either.
 */
#ifndef LV_ENGINE_RUN_H
#define LV_ENGINE_RUN_H

#include "base/common.h"
#include "engine/generate.h"
#include "image/image.h"
#include "model/llava.h"

/*
 * Runs one request on a loaded model: prompt ids (each <image> id already
 * expanded to its image's token count, as llava-cli and the HF processor
 * do), and the images' pixel tensors in prompt order (n_images may be 0:
 * then <image> ids stay ordinary tokens). prompt and images are borrowed
 * for the call. cb (may be NULL) is called as tokens and text come;
 * cb->cancelled is polled every step. Errors: LV_ERR_ARG (image tokens that
 * do not match the images, a prompt longer than the context, bad
 * parameters), LV_ERR_NOMEM, LV_ERR_CANCELLED (all per-request memory is
 * released). On failure *out is zeroed; on success release it with
 * gen_result_free.
 */
lv_status gen_run(llava *m, const int32_t *prompt, int n_prompt, const img_tensor *images,
                  int n_images, const gen_params *p, const gen_callbacks *cb, gen_result *out,
                  lv_err *err);

#endif
