/*
 * preprocess.h - an RGB image into the vision tower's input tensor, exactly
 * as the checkpoint's Hugging Face image processor (PIL backend) makes it.
 *
 *   IMG_PROC_LLAVA_NEXT  LlavaNextImageProcessor(Pil): anyres. Best pinpoint,
 *                        aspect-preserving bicubic resize, centred padding,
 *                        tiles row-major; the base image (the original
 *                        squashed to the tile size) first.
 *   IMG_PROC_CLIP        CLIPImageProcessor: shortest edge -> size, centre
 *                        crop (llava-hf/llava-1.5-*-hf).
 *   IMG_PROC_LLAVA_PAD   LlavaImageProcessor: with do_pad, pad to a square of
 *                        the mean colour first; then as CLIP.
 *   IMG_PROC_IDEFICS3    Idefics3 / SmolVLMImageProcessor: LANCZOS to the
 *                        longest edge, T x T tiles row-major, the global
 *                        image last (idefics3.h). max/min_size apply first
 *                        as for the others; padding_color has no effect (no
 *                        padding); base_only gives the single T x T frame.
 *
 * Every patch then goes through the processor's per-image steps: resize
 * (size), centre crop (crop_size), rescale (float32 of u8 * rescale_factor
 * in double) and normalise ((v - mean) / std in float32), channels first.
 * Bicubic is Pillow's (resample.h), bit for bit, so the result equals the
 * reference's pixel_values exactly. preprocess.c cites the sources.
 *
 * Usage:
 *     img_proc_params p;
 *     img_proc_params_llava_next_default(&p);     // or from preprocessor_config.json
 *     img_options opt = {0};                      // zero = exact reference
 *     img_tensor t;
 *     if (img_preprocess(&rgb, &p, &opt, &t, &err) != LV_OK) ... err.msg ...
 *     ... t.data is (t.n_tiles, 3, t.tile_h, t.tile_w) ...
 *     img_tensor_free(&t);
 */
#ifndef LV_IMAGE_PREPROCESS_H
#define LV_IMAGE_PREPROCESS_H

#include "image/image.h"

/*
 * Preprocesses im into *out (zeroed first; on success the caller frees it
 * with img_tensor_free; on failure nothing is held). opt may be NULL (= all
 * zero). out->image_h/w is the size the processor saw: im's, or the size
 * after opt's max/min_size resize; count tokens for that size
 * (img_num_image_tokens, anyres.h).
 * Errors: LV_ERR_ARG (empty image, parameters failing img_proc_params_check,
 * inconsistent options, a resize that would exceed IMG_RESAMPLE_MAX_SIDE or
 * 50 MP), LV_ERR_UNSUPPORTED (a resample filter other than bicubic, or
 * LANCZOS for IDEFICS3; anyres patches of different sizes), LV_ERR_TOO_LARGE,
 * LV_ERR_NOMEM.
 */
lv_status img_preprocess(const img_rgb *im, const img_proc_params *p, const img_options *opt,
                         img_tensor *out, lv_err *err);

/* llava-hf/llava-v1.6-mistral-7b-hf's preprocessor_config.json: anyres with
 * pinpoints (h, w) [336,672] [672,336] [672,672] [1008,336] [336,1008],
 * shortest_edge 336, crop 336x336, bicubic, rescale 1/255, OpenAI CLIP
 * mean/std, patch 14. */
void img_proc_params_llava_next_default(img_proc_params *p);

/* llava-hf/llava-1.5-7b-hf's CLIPImageProcessor: shortest_edge 336, crop
 * 336x336, otherwise as above without pinpoints. kind IMG_PROC_CLIP. */
void img_proc_params_clip_default(img_proc_params *p);

/*
 * The rescale+normalise of each 8-bit value, per channel:
 *   v = do_rescale ? (float)((double)u * rescale_factor) : (float)u;
 *   tab[c][u] = do_normalize ? (v - (float)mean[c]) / (float)std[c] : v;
 * each operation rounded to float32 as NumPy does (the build has
 * -ffp-contract=off: no FMA, and the division is not a reciprocal multiply).
 */
void img_norm_table(const img_proc_params *p, float tab[3][256]);

/*
 * The size (*nw, *nh) opt's max_size / min_size make of a w x h image
 * (unchanged when neither applies): with keep_aspect one uniform scale
 * (min_size lifts the shorter side, max_size then caps the longer one and
 * wins), rounded to nearest, at least 1; without it each side is clamped to
 * [min_size, max_size] on its own.
 */
void img_options_size(int w, int h, const img_options *opt, int *nw, int *nh);

#endif
