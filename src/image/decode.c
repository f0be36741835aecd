/*
 * decode.c - img_decode: sniff the format from the bytes, run its reader,
 * apply the EXIF/XMP orientation, and enforce the limits.
 *
 * Format detection is by content only, as PIL.Image.open does (each
 * plugin's _accept): JPEG "\xFF\xD8\xFF", PNG "\x89PNG\r\n\x1a\n", GIF
 * "GIF87a"/"GIF89a", BMP "BM", WebP "RIFF....WEBP" followed by a "VP8 ",
 * "VP8L" or "VP8X" chunk. Formats we recognise but do not decode (TIFF,
 * HEIC, AVIF, SVG, ...) are refused by name.
 *
 * Orientation follows PIL.ImageOps.exif_transpose (Pillow 11/12,
 * src/PIL/ImageOps.py and Image.getexif in src/PIL/Image.py): the
 * Orientation tag of the EXIF blob the plugin stored in info["exif"]; when
 * the EXIF has no Orientation tag, the first `tiff:Orientation="N"` or
 * `tiff:Orientation>N` in the XMP packet. Values 2..8 transpose; anything
 * else leaves the image as it is.
 */
#include "image/decode.h"
#include "image/decode_internal.h"

#include "base/file.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void img_rgb_free(img_rgb *im) {
    if (!im) return;
    free(im->rgb);
    im->rgb = NULL;
    im->w = im->h = 0;
}

void img_limits_default(img_limits *lim) {
    lim->max_encoded_bytes = IMG_DEFAULT_MAX_ENCODED_BYTES;
    lim->max_pixels = IMG_DEFAULT_MAX_PIXELS;
}

/* ------------------------------------------------------------------------ */
/* Helpers for the readers                                                   */
/* ------------------------------------------------------------------------ */

lv_status dec_check_size(dec_ctx *c, uint64_t w, uint64_t h) {
    if (w == 0 || h == 0)
        return lv_fail(c->err, LV_ERR_FORMAT, "%s image has zero size (%llux%llu)", c->info->format,
                       (unsigned long long)w, (unsigned long long)h);
    /* w and h are at most 2^32 each, so the product cannot overflow 64 bits. */
    uint64_t max = c->lim->max_pixels;
    if (w * h > max || w > 0x7fffffff || h > 0x7fffffff || w * h > SIZE_MAX / 4) {
        if (max % 1000000 == 0)
            return lv_fail(
                c->err, LV_ERR_TOO_LARGE, "image is %llux%llu pixels; the limit is %llu megapixels",
                (unsigned long long)w, (unsigned long long)h, (unsigned long long)(max / 1000000));
        return lv_fail(c->err, LV_ERR_TOO_LARGE,
                       "image is %llux%llu pixels; the limit is %llu pixels", (unsigned long long)w,
                       (unsigned long long)h, (unsigned long long)max);
    }
    return LV_OK;
}

lv_status dec_alloc_rgb(dec_ctx *c, int w, int h) {
    size_t n = (size_t)w * (size_t)h * 3;
    c->out->rgb = malloc(n);
    if (!c->out->rgb)
        return lv_fail(c->err, LV_ERR_NOMEM, "out of memory for a %dx%d image (%zu bytes)", w, h,
                       n);
    c->out->w = w;
    c->out->h = h;
    return LV_OK;
}

void dec_set_mode(dec_ctx *c, const char *mode) {
    snprintf(c->info->mode, sizeof c->info->mode, "%s", mode);
}

/* ------------------------------------------------------------------------ */
/* Format detection                                                          */
/* ------------------------------------------------------------------------ */

typedef lv_status (*dec_fn)(dec_ctx *c);

static bool has_prefix(const uint8_t *d, size_t n, const char *magic, size_t m) {
    return n >= m && memcmp(d, magic, m) == 0;
}

/* The readers, by the magic Pillow's plugins accept. */
static dec_fn sniff_supported(const uint8_t *d, size_t n, const char **format) {
    if (has_prefix(d, n, "\xFF\xD8\xFF", 3)) {
        *format = "JPEG";
        return dec_jpeg;
    }
    if (has_prefix(d, n, "\x89PNG\r\n\x1A\n", 8)) {
        *format = "PNG";
        return dec_png;
    }
    if (has_prefix(d, n, "GIF87a", 6) || has_prefix(d, n, "GIF89a", 6)) {
        *format = "GIF";
        return dec_gif;
    }
    if (has_prefix(d, n, "BM", 2)) {
        *format = "BMP";
        return dec_bmp;
    }
    if (n >= 16 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0 &&
        (memcmp(d + 12, "VP8 ", 4) == 0 || memcmp(d + 12, "VP8L", 4) == 0 ||
         memcmp(d + 12, "VP8X", 4) == 0)) {
        *format = "WEBP";
        return dec_webp;
    }
    return NULL;
}

/* ISO base media (HEIF/AVIF/...): the major brand at 8, compatible brands
 * after the minor version, all inside the leading ftyp box. */
static const char *sniff_isobmff(const uint8_t *d, size_t n) {
    if (n < 12 || memcmp(d + 4, "ftyp", 4) != 0) return NULL;
    size_t box = ((size_t)d[0] << 24) | ((size_t)d[1] << 16) | ((size_t)d[2] << 8) | d[3];
    if (box > n) box = n;
    bool avif = false, heic = false;
    for (size_t off = 8; off + 4 <= box; off += 4) {
        if (off == 12) continue; /* minor version, not a brand */
        const uint8_t *b = d + off;
        if (!memcmp(b, "avif", 4) || !memcmp(b, "avis", 4)) avif = true;
        if (!memcmp(b, "heic", 4) || !memcmp(b, "heix", 4) || !memcmp(b, "hevc", 4) ||
            !memcmp(b, "hevx", 4) || !memcmp(b, "heim", 4) || !memcmp(b, "heis", 4) ||
            !memcmp(b, "mif1", 4) || !memcmp(b, "msf1", 4))
            heic = true;
    }
    if (avif) return "AVIF";
    if (heic) return "HEIC";
    if (!memcmp(d + 8, "jxl ", 4)) return "JPEG XL";
    if (!memcmp(d + 8, "crx ", 4)) return "Canon CR3";
    return "ISO media (MP4/QuickTime)";
}

static bool find_text(const uint8_t *d, size_t n, const char *s) {
    size_t m = strlen(s);
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(d + i, s, m) == 0) return true;
    return false;
}

/* Names of formats we recognise but do not decode; NULL when unknown. */
static const char *sniff_unsupported(const uint8_t *d, size_t n) {
    static const struct {
        const char *magic;
        size_t len;
        const char *name;
    } tab[] = {
        {"II*\0", 4, "TIFF"},
        {"MM\0*", 4, "TIFF"},
        {"II+\0", 4, "BigTIFF"},
        {"MM\0+", 4, "BigTIFF"},
        {"\0\0\0\x0CjP  \r\n\x87\n", 12, "JPEG 2000"},
        {"\xFF\x4F\xFF\x51", 4, "JPEG 2000"},
        {"\0\0\0\x0CJXL \r\n\x87\n", 12, "JPEG XL"},
        {"\xFF\x0A", 2, "JPEG XL"},
        {"\x8AMNG\r\n\x1A\n", 8, "MNG"},
        {"\x8BJNG\r\n\x1A\n", 8, "JNG"},
        {"%PDF-", 5, "PDF"},
        {"8BPS", 4, "PSD"},
        {"qoif", 4, "QOI"},
        {"DDS ", 4, "DDS"},
        {"\x76\x2F\x31\x01", 4, "OpenEXR"},
        {"#?RADIANCE", 10, "Radiance HDR"},
        {"#?RGBE", 6, "Radiance HDR"},
        {"\0\0\1\0", 4, "ICO"},
        {"\0\0\2\0", 4, "CUR"},
        {"icns", 4, "ICNS"},
        {"FORM", 4, "IFF/ILBM"},
    };
    for (size_t i = 0; i < LV_ARRAY_LEN(tab); i++)
        if (has_prefix(d, n, tab[i].magic, tab[i].len)) return tab[i].name;
    const char *iso = sniff_isobmff(d, n);
    if (iso) return iso;
    if (has_prefix(d, n, "RIFF", 4) && !(n >= 12 && !memcmp(d + 8, "WEBP", 4)))
        return "RIFF (AVI/WAV)";
    if (n >= 3 && d[0] == 'P' && d[1] >= '1' && d[1] <= '7' &&
        (d[2] == ' ' || d[2] == '\n' || d[2] == '\r' || d[2] == '\t'))
        return "PNM";
    /* Text formats: skip a UTF-8 BOM and leading white space. */
    size_t i = has_prefix(d, n, "\xEF\xBB\xBF", 3) ? 3 : 0;
    while (i < n && (d[i] == ' ' || d[i] == '\t' || d[i] == '\r' || d[i] == '\n')) i++;
    size_t head = n - i < 4096 ? n - i : 4096;
    if (has_prefix(d + i, n - i, "<svg", 4) ||
        (has_prefix(d + i, n - i, "<?xml", 5) && find_text(d + i, head, "<svg")))
        return "SVG";
    if (has_prefix(d + i, n - i, "<!DOCTYPE html", 14) || has_prefix(d + i, n - i, "<html", 5) ||
        has_prefix(d + i, n - i, "<!doctype html", 14))
        return "HTML";
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* img_decode                                                                */
/* ------------------------------------------------------------------------ */

lv_status img_decode(const uint8_t *data, size_t len, const img_limits *lim, img_rgb *out,
                     img_decode_info *info, lv_err *err) {
    assert(out);
    img_limits def;
    img_decode_info scratch;
    if (!lim) {
        img_limits_default(&def);
        lim = &def;
    }
    if (!info) info = &scratch;
    memset(info, 0, sizeof *info);
    info->format = "";
    info->orientation = 1;
    out->w = out->h = 0;
    out->rgb = NULL;

    if (len == 0 || !data) return lv_fail(err, LV_ERR_FORMAT, "image data is empty (0 bytes)");
    if (len > lim->max_encoded_bytes)
        return lv_fail(err, LV_ERR_TOO_LARGE, "image data is %zu bytes; the limit is %zu bytes",
                       len, lim->max_encoded_bytes);

    const char *format = NULL;
    dec_fn reader = sniff_supported(data, len, &format);
    if (!reader) {
        const char *name = sniff_unsupported(data, len);
        if (name)
            return lv_fail(err, LV_ERR_UNSUPPORTED,
                           "%s images are not supported (supported: JPEG, PNG, WebP, GIF, BMP)",
                           name);
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "unrecognised image format (first bytes %02x %02x %02x %02x); supported: "
                       "JPEG, PNG, WebP, GIF, BMP",
                       data[0], len > 1 ? data[1] : 0, len > 2 ? data[2] : 0,
                       len > 3 ? data[3] : 0);
    }
    info->format = format;

    dec_ctx c = {.data = data, .len = len, .lim = lim, .err = err, .out = out, .info = info};
    lv_status st = reader(&c);
    if (st != LV_OK) goto fail;

    /* exif_transpose: EXIF Orientation, else XMP when EXIF has no such tag. */
    int o = c.exif ? exif_orientation(c.exif, c.exif_len) : -1;
    if (o < 0 && c.xmp) o = xmp_orientation(c.xmp, c.xmp_len);
    if (o >= 2 && o <= 8) {
        st = orient_apply(out, o, err);
        if (st != LV_OK) goto fail;
        info->orientation = o;
    }
    free(c.exif_buf);
    free(c.xmp_buf);
    return LV_OK;

fail:
    free(c.exif_buf);
    free(c.xmp_buf);
    img_rgb_free(out);
    return st;
}

lv_status img_decode_file(const char *path, const img_limits *lim, img_rgb *out,
                          img_decode_info *info, lv_err *err) {
    img_limits def;
    if (!lim) {
        img_limits_default(&def);
        lim = &def;
    }
    out->w = out->h = 0;
    out->rgb = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return lv_fail(err, LV_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return lv_fail(err, LV_ERR_IO, "%s: not a regular file", path);
    if ((uint64_t)sb.st_size > lim->max_encoded_bytes)
        return lv_fail(err, LV_ERR_TOO_LARGE,
                       "%s: image file is %llu bytes; the limit is %zu bytes", path,
                       (unsigned long long)sb.st_size, lim->max_encoded_bytes);
    char *buf = NULL;
    size_t n = 0;
    lv_status st = lv_read_file(path, lim->max_encoded_bytes, &buf, &n, err);
    if (st != LV_OK) {
        /* the file grew past the limit between stat and read */
        if (st == LV_ERR_FORMAT) st = LV_ERR_ARG;
        return st;
    }
    st = img_decode((const uint8_t *)buf, n, lim, out, info, err);
    free(buf);
    if (st != LV_OK) lv_err_prefix(err, "%s", path);
    return st;
}
