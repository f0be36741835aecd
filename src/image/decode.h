/*
 * decode.h - encoded image bytes -> the 8-bit RGB image the reference sees.
 *
 * The reference is transformers' image_utils.load_image followed by the
 * processor's convert_to_rgb, i.e. with Pillow:
 *
 *     im = PIL.Image.open(f)                 # format sniffed from the bytes
 *     im = PIL.ImageOps.exif_transpose(im)   # EXIF (or XMP) Orientation 2..8
 *     im = im.convert("RGB")                 # alpha dropped, no compositing
 *
 * img_decode reproduces those three steps byte for byte for JPEG (MPO),
 * PNG, WebP, GIF (first frame) and BMP: the same library settings where a
 * library decodes (libjpeg-turbo ISLOW + fancy upsampling, libwebp's
 * defaults), the same mode Pillow opens each file in (decode_info.mode),
 * and Pillow's own conversion formulas from that mode to RGB
 * (libImaging/Convert.c, Unpack.c). The format files say which Pillow
 * source each rule comes from.
 *
 * Untrusted input: sizes are checked against img_limits before any pixel
 * buffer is allocated, library errors never abort or print, and every
 * failure is a status plus a message.
 *
 * Usage:
 *
 *     img_limits lim;
 *     img_limits_default(&lim);
 *     img_rgb im = {0};
 *     img_decode_info info;
 *     lv_err err;
 *     if (img_decode(bytes, n, &lim, &im, &info, &err) != LV_OK) { ... err.msg ... }
 *     ... im.w, im.h, im.rgb ...
 *     img_rgb_free(&im);
 */
#ifndef LV_IMAGE_DECODE_H
#define LV_IMAGE_DECODE_H

#include "image/image.h"

/* What the decoder found, in Pillow's words. */
typedef struct {
    const char *format; /* Pillow's format name: "JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP"
                           (static string) */
    char mode[8];       /* the mode Pillow opens the file in: "1", "L", "P", "LA", "RGB",
                           "RGBA", "CMYK", "I;16" */
    int width, height;  /* stored size, before the orientation is applied */
    int orientation;    /* the EXIF/XMP orientation applied, 2..8; 1 when none was */
} img_decode_info;

/* Fills lim with IMG_DEFAULT_MAX_ENCODED_BYTES and IMG_DEFAULT_MAX_PIXELS. */
void img_limits_default(img_limits *lim);

/*
 * Decodes len bytes of an encoded image into out (w, h after orientation;
 * out->rgb is heap memory the caller frees with img_rgb_free). lim may be
 * NULL for the defaults; info and err may be NULL.
 *
 * Failures (out is left zeroed):
 *   LV_ERR_ARG          len > lim->max_encoded_bytes, or w*h > lim->max_pixels
 *                       (refused from the header, before the pixels are allocated)
 *   LV_ERR_UNSUPPORTED  a format that is not decoded here ("HEIC images are not
 *                       supported"), an unrecognisable one, or a variant of a
 *                       supported format Pillow cannot open either (12-bit JPEG,
 *                       BMP bitfield layouts Pillow rejects, ...)
 *   LV_ERR_FORMAT       empty, truncated or corrupt data, zero width or height
 *   LV_ERR_NOMEM        allocation failure
 */
lv_status img_decode(const uint8_t *data, size_t len, const img_limits *lim, img_rgb *out,
                     img_decode_info *info, lv_err *err);

/* img_decode of a file's contents. The file is refused (LV_ERR_ARG) before
 * it is read if it is larger than lim->max_encoded_bytes; LV_ERR_IO when it
 * cannot be read. Messages start with the path. */
lv_status img_decode_file(const char *path, const img_limits *lim, img_rgb *out,
                          img_decode_info *info, lv_err *err);

#endif
