/*
 * anyres.h - LLaVA-NeXT "anyres" geometry: which grid an image gets, how it
 * is resized and padded into it, and how many <image> tokens it becomes.
 *
 * Pure integer/double arithmetic, no pixels: the preprocessor (preprocess.c)
 * and the model's feature packing (unpad + image_newline) both use it, so the
 * two can never disagree. Everything follows transformers'
 * image_processing_utils.py (select_best_resolution, get_patch_output_size),
 * LlavaNextImageProcessorPil (_get_padding_size) and processing_llava_next.py
 * (_get_number_of_features, _get_unpadded_features); see anyres.c.
 */
#ifndef LV_IMAGE_ANYRES_H
#define LV_IMAGE_ANYRES_H

#include "image/image.h"

/*
 * select_best_resolution: the pinpoint ((height, width) pairs, scanned in
 * order) that keeps the most of an h x w image's pixels after an
 * aspect-preserving fit, ties going to the least wasted area, then to the
 * earlier entry. Writes it to *best_h, *best_w and returns its index; returns
 * -1 (and writes nothing) if n_pinpoints < 1 or h, w < 1.
 */
int img_select_best_resolution(int h, int w, const int (*pinpoints)[2], int n_pinpoints,
                               int *best_h, int *best_w);

/*
 * get_patch_output_size: the size (*new_h, *new_w) of an h x w image resized
 * to fit target_h x target_w with its aspect ratio kept (the fitted side
 * exact, the other one rounded up, both within the target).
 */
void img_patch_output_size(int h, int w, int target_h, int target_w, int *new_h, int *new_w);

/*
 * Padding of a new_h x new_w image centred on target_h x target_w: the odd
 * pixel goes to the bottom / right (_get_padding_size).
 */
void img_center_pad(int new_h, int new_w, int target_h, int target_w, int *top, int *bottom,
                    int *left, int *right);

/*
 * Checks that p is usable by img_preprocess and the functions below:
 * positive crop and patch sizes, a resize size, pinpoints for anyres (1 to
 * IMG_MAX_PINPOINTS, positive, multiples of the tile side crop_height);
 * for IMG_PROC_IDEFICS3 img_idefics3_check's fields instead of crop/size.
 * Errors: LV_ERR_ARG naming the bad field.
 */
lv_status img_proc_params_check(const img_proc_params *p, lv_err *err);

/*
 * The anyres grid of an h x w image, in tiles: best pinpoint / tile side
 * (crop_height). p must pass img_proc_params_check and be
 * IMG_PROC_LLAVA_NEXT; h, w >= 1.
 */
void img_anyres_grid(int h, int w, const img_proc_params *p, int *grid_h, int *grid_w);

/*
 * The unpad rule on the feature grid (modeling_llava_next.unpad_image and
 * the processor's _get_unpadded_features): of a cur_h x cur_w feature map
 * covering a padded h x w image, the rows x cols that remain once the
 * padding is cut symmetrically. Uses int(round(x, 7)) for the content size,
 * as transformers does.
 */
void img_anyres_unpad(int h, int w, int cur_h, int cur_w, int *rows, int *cols);

/*
 * How many <image> tokens the processor inserts for an h x w image (after
 * any img_options resize: pass img_tensor's image_h, image_w), with
 * vision_feature_select_strategy "default" (the CLS feature dropped):
 *   IMG_PROC_LLAVA_NEXT: rows * cols + rows + (tile / patch)^2
 *                        (unpadded grid, one newline per row, base image);
 *   CLIP / LLAVA_PAD:    (crop_h / patch) * (crop_w / patch).
 * Returns -1 if h or w < 1 or p fails img_proc_params_check, and for
 * IMG_PROC_IDEFICS3, whose count needs processor_config.json's
 * image_seq_len (img_idefics3_num_image_tokens, idefics3.h).
 */
int img_num_image_tokens(int h, int w, const img_proc_params *p);

#endif
