/*
 * image.h - the types the image pipeline passes between its stages.
 *
 *   bytes ─► decode (decode.h) ─► EXIF orientation ─► RGB as PIL convert("RGB")
 *         ─► img_rgb ─► preprocess (preprocess.h: anyres / CLIP) ─► img_tensor
 *
 * image/ is a leaf: it depends on base/ only. Callers (engine, llava-cli)
 * translate a checkpoint's preprocessor_config.json (io/hf_config.h) into
 * img_proc_params.
 */
#ifndef LV_IMAGE_H
#define LV_IMAGE_H

#include "base/common.h"

#include <stdbool.h>

/* An 8-bit RGB image, what the reference processor sees after
 * load_image + convert_to_rgb. */
typedef struct {
    int w, h;     /* pixels */
    uint8_t *rgb; /* (h, w, 3) row-major, heap; free with img_rgb_free */
} img_rgb;

void img_rgb_free(img_rgb *im); /* frees im->rgb and zeroes im; a zeroed img_rgb is a no-op */

/* Limits on untrusted input, all checked before the work they guard. */
typedef struct {
    size_t max_encoded_bytes; /* refuse larger inputs (default 20 MB) */
    uint64_t max_pixels;      /* refuse larger w*h before allocating (default 50 MP) */
} img_limits;

#define IMG_DEFAULT_MAX_ENCODED_BYTES (20u * 1000u * 1000u)
#define IMG_DEFAULT_MAX_PIXELS        (50ull * 1000ull * 1000ull)

/* Which Hugging Face image processor to reproduce. */
typedef enum {
    IMG_PROC_LLAVA_NEXT, /* LlavaNextImageProcessor (PIL backend): anyres tiles + base */
    IMG_PROC_CLIP,       /* CLIPImageProcessor: shortest-edge resize + centre crop */
    IMG_PROC_LLAVA_PAD,  /* LlavaImageProcessor with do_pad: pad to square with the mean colour */
    IMG_PROC_IDEFICS3,   /* Idefics3ImageProcessor / SmolVLMImageProcessor (PIL backend):
                            longest edge L, T x T tiles + global image (idefics3.h) */
} img_proc_kind;

#define IMG_MAX_PINPOINTS 64

/* Preprocessing parameters: preprocessor_config.json's values. */
typedef struct {
    img_proc_kind kind;
    bool do_resize, do_center_crop, do_rescale, do_normalize, do_pad;
    int shortest_edge;           /* size {"shortest_edge"}; 0 if height/width are given */
    int size_height, size_width; /* size {"height","width"}; 0 if shortest_edge is given */
    int crop_height, crop_width; /* crop_size (also the tile size for anyres) */
    int resample;                /* PIL filter id: 3 (bicubic); 1 (LANCZOS) for IDEFICS3 too */
    double rescale_factor;       /* 1/255 */
    double mean[3], std[3];      /* per RGB channel */
    int n_pinpoints;
    int pinpoints[IMG_MAX_PINPOINTS][2]; /* (height, width) candidates for anyres */
    int patch_size;                      /* vision patch size (14), for token counts */
    /* IMG_PROC_IDEFICS3 only: */
    int longest_edge;        /* size {"longest_edge"}: L, 2048 or 1536 */
    int max_image_size;      /* max_image_size {"longest_edge"}: the tile side T, 512 or 384 */
    bool do_image_splitting; /* false: one T x T frame, rows = cols = 0 */
} img_proc_params;

/*
 * Optional adjustments a deployment may set (the seed config's
 * "image_processing" block). All zero/false = exact reference behaviour.
 */
typedef struct {
    int max_size;           /* >0: shrink so the longer side is at most this, first */
    int min_size;           /* >0: enlarge so the shorter side is at least this, first */
    bool keep_aspect;       /* with max/min_size: keep the aspect ratio (else squash) */
    bool has_padding_color; /* pad with padding_color instead of the reference's colour */
    uint8_t padding_color[3];
    bool base_only; /* anyres: the base view alone (one tile, grid 0x0), no grid tiles;
                       IDEFICS3: the single T x T frame (as do_image_splitting false):
                       OpenAI's image_url detail "low" */
} img_options;

/* The model's input for one image. */
typedef struct {
    int n_tiles;          /* patches: base first, then the grid row-major (anyres);
                             IDEFICS3: the grid row-major, then the global image */
    int tile_h, tile_w;   /* 336 x 336 (IDEFICS3: T x T) */
    float *data;          /* (n_tiles, 3, tile_h, tile_w) float32, heap; img_tensor_free */
    int image_h, image_w; /* the size of the RGB image the processor saw (image_sizes) */
    int grid_h, grid_w;   /* anyres grid in tiles (best pinpoint / tile size); 0 for CLIP;
                             IDEFICS3: rows, cols (0, 0 for a single frame) */
} img_tensor;

void img_tensor_free(img_tensor *t);

#endif
