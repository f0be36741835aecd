/*
 * idefics3.h - the SmolVLM / SmolVLM2 (Idefics3) image processor: geometry,
 * frame counts and the pixels, equal to transformers' PIL-backend
 * Idefics3ImageProcessor / SmolVLMImageProcessor (LANCZOS).
 *
 * For an h x w RGB image, with L = longest_edge and T = max_image_size:
 *   1. resize (LANCZOS) so the longest edge is exactly L, the other side
 *      int(L / aspect) rounded up to even (also when upscaling);
 *   2. resize both edges up to multiples of T (aspect not kept);
 *   3. if that image is larger than T: rows x cols T x T tiles, row-major,
 *      then the GLOBAL image (the step-2 image resized to T x T) last;
 *      otherwise the one T x T image, rows = cols = 0.
 *   do_image_splitting false (or img_options.base_only): after step 1,
 *   straight to T x T, rows = cols = 0.
 * Then rescale + normalise (img_norm_table), channels first. idefics3.c
 * cites the sources; ../shared/spec/smolvlm.md §3 has the worked examples.
 */
#ifndef LV_IMAGE_IDEFICS3_H
#define LV_IMAGE_IDEFICS3_H

#include "image/image.h"

/* transformers' MAX_IMAGE_SIZE: step 1 never makes a side longer (4K). */
#define IMG_IDEFICS3_MAX_SIDE 4096

/* The class defaults (SmolVLMImageProcessorPil: size {longest_edge: 4 * 364},
 * max_image_size {longest_edge: 364}, LANCZOS, mean = std = 0.5, rescale
 * 1/255, splitting on) with the given L and T (e.g. 2048 / 512 for
 * SmolVLM-256M), patch_size patch. kind IMG_PROC_IDEFICS3. */
void img_proc_params_idefics3_default(img_proc_params *p, int longest_edge, int max_image_size,
                                      int patch_size);

/* The IDEFICS3 part of img_proc_params_check: L, T, patch size, resample
 * (1 LANCZOS or 3 bicubic). Errors: LV_ERR_ARG / LV_ERR_UNSUPPORTED naming
 * the field. */
lv_status img_idefics3_check(const img_proc_params *p, lv_err *err);

/* Step 1 (get_resize_output_image_size): the size an h x w image is resized
 * to (do_resize); h, w >= 1, L >= 1. */
void img_idefics3_resize_size(int h, int w, int longest_edge, int *h1, int *w1);

/* Step 2 (resize_for_vision_encoder): both sides up to multiples of T. */
void img_idefics3_encoder_size(int h1, int w1, int tile, int *h2, int *w2);

/*
 * The frames an h x w image becomes (rows * cols + 1, or 1) and its rows,
 * cols, without touching pixels; base_only as img_options.base_only. Returns
 * -1 if h or w < 1 or p fails img_proc_params_check (or is not IDEFICS3).
 */
int img_idefics3_grid(int h, int w, const img_proc_params *p, bool base_only, int *rows, int *cols);

/* How many <image> ids the processor inserts for an h x w image:
 * frames * image_seq_len (processor_config.json's image_seq_len, 64 or 81).
 * -1 as img_idefics3_grid, or if image_seq_len < 1. */
int img_idefics3_num_image_tokens(int h, int w, const img_proc_params *p, bool base_only,
                                  int image_seq_len);

/*
 * The processor itself (img_preprocess calls it for IMG_PROC_IDEFICS3): im
 * into *out (n_tiles frames of T x T, grid_h/w = rows/cols; image_h/w are
 * im's). tab is img_norm_table(p). Errors: LV_ERR_ARG, LV_ERR_TOO_LARGE (an
 * intermediate over IMG_DEFAULT_MAX_PIXELS, only with do_resize false),
 * LV_ERR_NOMEM. On failure out holds nothing.
 */
lv_status img_idefics3_preprocess(const img_rgb *im, const img_proc_params *p,
                                  const float tab[3][256], bool base_only, img_tensor *out,
                                  lv_err *err);

#endif
