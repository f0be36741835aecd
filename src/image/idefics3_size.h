/*
 * idefics3_size.h - the frame grid of the Idefics3 / SmolVLM image
 * processor: how many tiles (rows x cols) an image of a given size is split
 * into. Pure arithmetic, no pixels: the preprocessor and the model's token
 * count both use it, so the two cannot disagree.
 *
 * transformers models/idefics3/image_processing_idefics3.py (the slow
 * processor; SmolVLMImageProcessor is the same code): resize so the longest
 * edge is longest_edge (_resize_output_size_rescale_to_max_len, then
 * _resize_output_size_scale_below_upper_bound at 4096), then
 * resize_for_vision_encoder (both edges up to multiples of max_image_size),
 * then split_image (shared/spec/smolvlm.md §3.2-3.4).
 */
#ifndef LV_IMAGE_IDEFICS3_SIZE_H
#define LV_IMAGE_IDEFICS3_SIZE_H

#include <stdbool.h>

/* The sizes after step 1 (*h1, *w1: longest edge = longest_edge, the other
 * one rounded up to even) of an h x w image. h, w >= 1. */
void img_idefics3_resize_size(int h, int w, int longest_edge, int *h1, int *w1);

/* The sizes after step 2 (*h2, *w2: multiples of max_image_size) of the
 * step-1 size h1 x w1. */
void img_idefics3_encoder_size(int h1, int w1, int max_image_size, int *h2, int *w2);

/*
 * The tile grid of an h x w image: *rows x *cols tiles of max_image_size
 * (each frame then goes through the tower) plus one global image; rows =
 * cols = 0 when the image is not split (do_image_splitting false, or an
 * image no larger than one tile after the resizes): one frame. Frames =
 * rows·cols + 1 when split, else 1. h, w < 1 or sizes < 1 give 0 x 0.
 */
void img_idefics3_grid(int h, int w, int longest_edge, int max_image_size, bool do_image_splitting,
                       int *rows, int *cols);

#endif
