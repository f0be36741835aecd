/*
 * decode_internal.h - what the per-format readers (decode_<fmt>.c) share
 * with decode.c: the decode context, the size checks every reader makes
 * before it allocates, Pillow's mode-to-RGB converters (convert.c), the
 * EXIF/XMP orientation readers (exif.c) and the transposition (orient.c).
 *
 * A reader's contract: given c->data/c->len (whole file, magic already
 * checked), fill c->info->mode/width/height, call dec_check_size() with the
 * header's size BEFORE allocating anything proportional to it, allocate the
 * output with dec_alloc_rgb(), write RGB rows into it, and point c->exif /
 * c->xmp at the metadata Pillow would read for exif_transpose (or leave
 * them NULL). On failure it returns a status with c->err filled and frees
 * what it allocated except c->out (decode.c frees that).
 */
#ifndef LV_IMAGE_DECODE_INTERNAL_H
#define LV_IMAGE_DECODE_INTERNAL_H

#include "image/decode.h"

#include <stdbool.h>

typedef struct {
    const uint8_t *data;   /* the whole encoded file (borrowed) */
    size_t len;            /* bytes */
    const img_limits *lim; /* never NULL here */
    lv_err *err;           /* may be NULL */
    img_rgb *out;          /* pixels as stored (before orientation) */
    img_decode_info *info; /* never NULL here */
    const uint8_t *exif;   /* TIFF blob for getexif(), may start "Exif\0\0"; NULL if none */
    size_t exif_len;       /* bytes */
    const uint8_t *xmp;    /* XMP packet searched for tiff:Orientation; NULL if none */
    size_t xmp_len;        /* bytes */
    uint8_t *exif_buf;     /* owned backing store for exif when it had to be assembled */
    uint8_t *xmp_buf;      /* owned backing store for xmp when it had to be inflated */
} dec_ctx;

/* ---- decode.c: checks and allocation shared by the readers ---- */

/* Refuses a w x h image: zero size (LV_ERR_FORMAT) or more than
 * lim->max_pixels (LV_ERR_ARG, "image is WxH pixels; the limit is N megapixels"). */
lv_status dec_check_size(dec_ctx *c, uint64_t w, uint64_t h);
/* Allocates c->out as w x h RGB (sizes already checked). LV_ERR_NOMEM on failure. */
lv_status dec_alloc_rgb(dec_ctx *c, int w, int h);
/* Copies a Pillow mode name into c->info->mode. */
void dec_set_mode(dec_ctx *c, const char *mode);

/* ---- the readers: decode_<fmt>.c ---- */
lv_status dec_jpeg(dec_ctx *c);
lv_status dec_png(dec_ctx *c);
lv_status dec_webp(dec_ctx *c);
lv_status dec_gif(dec_ctx *c);
lv_status dec_bmp(dec_ctx *c);

/* ---- convert.c: one row of n pixels in a Pillow raw layout -> RGB ----
 * Each is Pillow's unpacker for the raw mode followed by its Convert.c
 * converter to "RGB", fused; the comment on each names both. */
void cvt_l(uint8_t *rgb, const uint8_t *in, int n);        /* L: gray replicated */
void cvt_la(uint8_t *rgb, const uint8_t *in, int n);       /* LA: alpha dropped */
void cvt_rgba(uint8_t *rgb, const uint8_t *in, int n);     /* RGBA/RGBX: alpha dropped */
void cvt_bit1(uint8_t *rgb, const uint8_t *in, int n);     /* "1", MSB first: 0 / 255 */
void cvt_i16be(uint8_t *rgb, const uint8_t *in, int n);    /* I;16B: clipped to 255 */
void cvt_rgb16be(uint8_t *rgb, const uint8_t *in, int n);  /* RGB;16B: high bytes */
void cvt_rgba16be(uint8_t *rgb, const uint8_t *in, int n); /* RGBA;16B: high bytes */
void cvt_la16be(uint8_t *rgb, const uint8_t *in, int n);   /* LA;16B: high bytes */
void cvt_cmyk_inv(uint8_t *rgb, const uint8_t *in, int n); /* CMYK;I (Adobe) -> cmyk2rgb */
void cvt_bgr15(uint8_t *rgb, const uint8_t *in, int n);    /* BGR;15 (little endian) */
void cvt_bgr16(uint8_t *rgb, const uint8_t *in, int n);    /* BGR;16 (little endian) */
/* Picks bytes r, g, b out of pixels of `step` bytes (BGR, BGRX, XBGR, ...). */
void cvt_bytes(uint8_t *rgb, const uint8_t *in, int n, int step, int r, int g, int b);
/* Unpacks n indices of `bits` (1, 2, 4 or 8) bits each, MSB first (P;1, P;2, P;4, P). */
void cvt_unpack(uint8_t *idx, const uint8_t *in, int n, int bits);
/* Palette lookup: pal holds 256 RGB entries (entries past the file's palette are
 * black, as in Pillow's calloc'ed ImagingPalette). */
void cvt_palette(uint8_t *rgb, const uint8_t *idx, int n, const uint8_t pal[768]);

/* ---- exif.c: the orientation Pillow's Image.getexif() reports ----
 * Both return -1 when there is no Orientation, 1..8 for that integer
 * value, and 0 for a present value that is not an integer 1..8 (which
 * exif_transpose leaves alone). */
int exif_orientation(const uint8_t *blob, size_t len);
int xmp_orientation(const uint8_t *xmp, size_t len);
/* Looks up an integer tag of IFD0 of a TIFF blob (used for the MPF index).
 * Returns true and *value when found with an integer type. */
bool tiff_find_uint(const uint8_t *blob, size_t len, uint16_t tag, uint64_t *value);

/* ---- orient.c: PIL.ImageOps.exif_transpose on the RGB pixels ---- */
/* Applies orientation 2..8 (others: no-op). Side effect: may replace im->rgb. */
lv_status orient_apply(img_rgb *im, int orientation, lv_err *err);

#endif
