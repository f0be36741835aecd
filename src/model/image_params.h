/*
 * image_params.h - from a checkpoint's configs to the image pipeline's
 * parameters.
 *
 * image/ is a leaf and knows nothing of config files; io/ reads them. The
 * model, which already reads both, joins them: preprocessor_config.json gives the processor and its
 * values, config.json the vision patch size (for token counts) and, when the
 * preprocessor config lists none, the anyres pinpoints.
 */
#ifndef LV_MODEL_IMAGE_PARAMS_H
#define LV_MODEL_IMAGE_PARAMS_H

#include "base/common.h"
#include "image/image.h"
#include "io/hf_config.h"

/* Fills p. LV_ERR_UNSUPPORTED for a resample filter other than bicubic
 * (or, for Idefics3/SmolVLM, LANCZOS) or a pinpoint list longer than
 * IMG_MAX_PINPOINTS; LV_ERR_FORMAT for sizes that make no sense (crop 0,
 * pinpoints not multiples of the crop size); Idefics3/SmolVLM parameters
 * are also put through img_proc_params_check (LV_ERR_ARG: out of range). */
lv_status model_image_params(const lv_model_config *mc, const lv_preproc_config *pp,
                             img_proc_params *p, lv_err *err);

#endif
