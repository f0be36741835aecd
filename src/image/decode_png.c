/*
 * decode_png.c - PNG through libpng, with Pillow's modes and metadata rules.
 *
 * FORMAT. "\x89PNG\r\n\x1a\n", then chunks: u32 length (big endian), 4-byte
 * type, data, u32 CRC-32 of type + data.
 *
 *     IHDR  u32 width, u32 height, u8 bit depth, u8 colour type (0 gray,
 *           2 RGB, 3 palette, 4 gray+alpha, 6 RGBA), u8 compression,
 *           u8 filter, u8 interlace (1 = Adam7)
 *     PLTE  RGB triples; tRNS transparency (ignored by convert("RGB"))
 *     IDAT  zlib stream of filtered rows, split over any number of chunks
 *     eXIf  a TIFF blob (EXIF); tEXt / zTXt / iTXt  key \0 [flags] value
 *     acTL / fcTL / fdAT  APNG animation (frame 0 is the IDAT image)
 *     IEND
 *
 * PILLOW (src/PIL/PngImagePlugin.py; Unpack.c; Convert.c):
 *   - modes, from _MODES[(bit depth, colour type)] and then to RGB:
 *       gray 1 -> "1" (0/255); gray 2, 4, 8 -> "L" (2-bit v*0x55, 4-bit v*0x11);
 *       gray 16 -> "I;16", converted by I16_RGB, which CLIPS values above 255
 *       to 255 (so most 16-bit gray images come out white);
 *       RGB 8/16 -> "RGB" (16-bit: the high byte, "RGB;16B");
 *       palette 1/2/4/8 -> "P": PLTE lookup, tRNS ignored, indices past the
 *       palette black; gray+alpha 8 -> "LA"; gray+alpha 16 -> "RGBA" via
 *       "LA;16B" (high bytes); RGBA 8/16 -> "RGBA". Alpha is dropped, never
 *       composited. No gamma, sBIT or ICC correction is applied.
 *   - chunks before the first IDAT must be whole, with a valid CRC and a
 *     \w\w\w\w name, or Image.open fails; IDAT CRCs and the zlib Adler-32
 *     are never checked, and the zlib window is always 32K; once every row
 *     is decoded, the rest of the stream is not looked at.
 *   - chunks after the image data are read by getexif() (it loads the
 *     image first): up to IEND, a header cut short, or, in an animation, the
 *     next fcTL. A chunk after the image whose data is cut short fails.
 *   - EXIF: info["exif"] is the last eXIf chunk or tEXt "exif" (raw bytes);
 *     only without it, a tEXt/zTXt/iTXt "Raw profile type exif" (ImageMagick:
 *     hex digits after the third line). XMP: a text chunk
 *     "XML:com.adobe.xmp". zTXt with a compression method other than 0
 *     fails; text is inflated to at most 1 MiB (Pillow's MAX_TEXT_CHUNK).
 *     Where Pillow's getexif would raise on odd metadata (a zTXt "exif", bad
 *     hex, text over 1 MiB), the metadata is ignored here instead.
 */
#include "image/decode_internal.h"

#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>
#include <zlib.h>

#define PNG_MAX_TEXT (1024 * 1024) /* Pillow's ImageFile.SAFEBLOCK */

/* ------------------------------------------------------------------------ */
/* Pillow's chunk walk: validity before IDAT, metadata anywhere              */
/* ------------------------------------------------------------------------ */

typedef struct {
    const uint8_t *exif; /* info["exif"] (NULL: absent; may be empty) */
    size_t exif_len;
    const uint8_t *raw; /* "Raw profile type exif" value (maybe zlib) */
    size_t raw_len;
    bool raw_z;         /* raw is zlib-compressed */
    const uint8_t *xmp; /* "XML:com.adobe.xmp" value (maybe zlib) */
    size_t xmp_len;
    bool xmp_z;
    size_t cut_idat;       /* position of an IDAT whose data runs past the end (0: none) */
    uint32_t cut_idat_len; /* ... and how many of its bytes exist */
} chunk_meta;

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static bool is_cid(const uint8_t *t) { /* re \w\w\w\w on bytes */
    for (int i = 0; i < 4; i++) {
        uint8_t ch = t[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_'))
            return false;
    }
    return true;
}

/* One text chunk: remembers the three keys exif_transpose can use.
 * Returns false for a zTXt Pillow refuses (compression method != 0). */
static bool meta_text(chunk_meta *m, const uint8_t *type, const uint8_t *s, size_t n) {
    const uint8_t *nul = memchr(s, 0, n);
    size_t klen = nul ? (size_t)(nul - s) : n;
    const uint8_t *v = nul ? nul + 1 : s + n;
    size_t vlen = nul ? n - klen - 1 : 0;
    bool z = false;
    if (!memcmp(type, "zTXt", 4)) {
        if (vlen > 0 && v[0] != 0) return false;
        if (vlen > 0) v++, vlen--;
        z = true;
    } else if (!memcmp(type, "iTXt", 4)) {
        if (!nul || vlen < 2) return true;
        int cf = v[0], cm = v[1];
        const uint8_t *r = v + 2, *end = v + vlen;
        const uint8_t *l = memchr(r, 0, (size_t)(end - r)); /* language */
        if (!l) return true;
        const uint8_t *t = memchr(l + 1, 0, (size_t)(end - l - 1)); /* translated key */
        if (!t) return true;
        if (cf && cm != 0) return true; /* ignored */
        v = t + 1;
        vlen = (size_t)(end - v);
        z = cf != 0;
    }
    if (klen == 0) return true;
    if (klen == 4 && !memcmp(s, "exif", 4)) {
        if (!memcmp(type, "tEXt", 4)) { /* tEXt "exif" keeps the raw bytes */
            m->exif = v;
            m->exif_len = vlen;
        }
    } else if (klen == 21 && !memcmp(s, "Raw profile type exif", 21)) {
        m->raw = v, m->raw_len = vlen, m->raw_z = z;
    } else if (klen == 17 && !memcmp(s, "XML:com.adobe.xmp", 17)) {
        m->xmp = v, m->xmp_len = vlen, m->xmp_z = z;
    }
    return true;
}

static lv_status meta_walk(dec_ctx *c, chunk_meta *m) {
    const uint8_t *d = c->data;
    size_t n = c->len, p = 8;
    bool image = false;    /* the first IDAT has been reached */
    bool animated = false; /* acTL seen: frames after the first end the walk */
    uint32_t actl_frames = 0;
    bool fctl_first = false; /* an fcTL before IDAT: IDAT is animation frame 0 */
    for (;;) {
        if (p + 8 > n) {
            if (!image) return lv_fail(c->err, LV_ERR_FORMAT, "truncated PNG (no image data)");
            break;
        }
        uint32_t len = be32(d + p);
        const uint8_t *type = d + p + 4, *s = d + p + 8;
        if (!is_cid(type)) {
            if (!image) return lv_fail(c->err, LV_ERR_FORMAT, "broken PNG file (bad chunk name)");
            break;
        }
        bool idat = !memcmp(type, "IDAT", 4) || !memcmp(type, "fdAT", 4);
        if (!image && idat) {
            image = true;
            animated = actl_frames > 0 && actl_frames + (fctl_first ? 0 : 1) > 1;
        }
        if (!memcmp(type, "IEND", 4)) break;
        if (image && animated && !memcmp(type, "fcTL", 4) && !idat) break;
        if (len > n - p - 8) { /* data cut short */
            if (idat) {        /* the pixel decoder decides, on the bytes there are */
                m->cut_idat = p;
                m->cut_idat_len = (uint32_t)(n - p - 8);
                break;
            }
            return lv_fail(c->err, LV_ERR_FORMAT, "truncated PNG (%.4s chunk)", (const char *)type);
        }
        if (!image) {
            if ((size_t)len + 12 > n - p)
                return lv_fail(c->err, LV_ERR_FORMAT, "truncated PNG (%.4s checksum)",
                               (const char *)type);
            uLong crc = crc32(crc32(0L, type, 4), s, len);
            if (crc != be32(s + len))
                return lv_fail(c->err, LV_ERR_FORMAT,
                               "broken PNG file (bad header checksum in %.4s)", (const char *)type);
            if (!memcmp(type, "acTL", 4) && len >= 8) {
                uint32_t f = be32(s);
                actl_frames = actl_frames || f == 0 || f > 0x80000000u ? 0 : f;
            }
            if (!memcmp(type, "fcTL", 4)) fctl_first = true;
        }
        if (!memcmp(type, "eXIf", 4)) {
            m->exif = s;
            m->exif_len = len;
        } else if (!memcmp(type, "tEXt", 4) || !memcmp(type, "zTXt", 4) ||
                   !memcmp(type, "iTXt", 4)) {
            if (!meta_text(m, type, s, len))
                return lv_fail(c->err, LV_ERR_FORMAT,
                               "corrupt PNG: unknown compression method in zTXt chunk");
        }
        p += 12 + (size_t)len;
        if (p > n) break;
    }
    return LV_OK;
}

/* Inflates at most PNG_MAX_TEXT bytes like Pillow's _safe_zlib_decompress;
 * corrupt or oversized input yields NULL (metadata ignored). */
static uint8_t *inflate_text(const uint8_t *src, size_t n, size_t *out_len) {
    uint8_t *buf = malloc(PNG_MAX_TEXT + 1);
    if (!buf) return NULL;
    z_stream z = {0};
    if (inflateInit(&z) != Z_OK) {
        free(buf);
        return NULL;
    }
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)(n > 0x7fffffff ? 0x7fffffff : n);
    z.next_out = buf;
    z.avail_out = PNG_MAX_TEXT + 1;
    int r = inflate(&z, Z_SYNC_FLUSH);
    size_t got = PNG_MAX_TEXT + 1 - z.avail_out;
    inflateEnd(&z);
    if ((r != Z_OK && r != Z_STREAM_END && r != Z_BUF_ERROR) || got > PNG_MAX_TEXT) {
        free(buf);
        return NULL;
    }
    *out_len = got;
    return buf;
}

static int hexval(uint8_t ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* bytes.fromhex("".join(text.split("\n")[3:])): white space between byte
 * pairs is skipped; anything else makes the profile unusable (NULL). */
static uint8_t *raw_profile_exif(const uint8_t *t, size_t n, size_t *out_len) {
    size_t i = 0;
    for (int lines = 0; lines < 3; lines++) {
        const uint8_t *nl = memchr(t + i, '\n', n - i);
        if (!nl) {
            i = n;
            break;
        }
        i = (size_t)(nl - t) + 1;
    }
    uint8_t *out = malloc((n - i) / 2 + 1);
    if (!out) return NULL;
    size_t k = 0;
    while (i < n) {
        uint8_t ch = t[i];
        if (ch == '\n' || ch == ' ' || ch == '\t' || ch == '\r' || ch == '\v' || ch == '\f') {
            i++;
            continue;
        }
        int hi = hexval(ch), lo = i + 1 < n ? hexval(t[i + 1]) : -1;
        if (hi < 0 || lo < 0) {
            free(out);
            return NULL;
        }
        out[k++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    *out_len = k;
    return out;
}

/* Points c->exif / c->xmp at what getexif() would parse. */
static lv_status meta_finish(dec_ctx *c, const chunk_meta *m) {
    if (m->exif) {
        c->exif = m->exif;
        c->exif_len = m->exif_len;
    } else if (m->raw) {
        size_t tl = m->raw_len;
        uint8_t *inflated = m->raw_z ? inflate_text(m->raw, m->raw_len, &tl) : NULL;
        const uint8_t *text = m->raw_z ? inflated : m->raw;
        if (text) {
            c->exif_buf = raw_profile_exif(text, tl, &c->exif_len);
            c->exif = c->exif_buf;
        }
        free(inflated);
    }
    if (m->xmp) {
        if (m->xmp_z) {
            c->xmp_buf = inflate_text(m->xmp, m->xmp_len, &c->xmp_len);
            c->xmp = c->xmp_buf;
        } else {
            c->xmp = m->xmp;
            c->xmp_len = m->xmp_len;
        }
    }
    return LV_OK;
}

/* ------------------------------------------------------------------------ */
/* libpng: pixels                                                            */
/* ------------------------------------------------------------------------ */

typedef struct {
    dec_ctx *c;
    png_structp png;
    png_infop info;
    size_t pos;      /* read position in c->data */
    bool eof;        /* libpng asked for bytes past the end */
    size_t cut_idat; /* chunk_meta.cut_idat / cut_idat_len: an IDAT length to patch */
    uint32_t cut_idat_len;
    char msg[160];      /* libpng's error message */
    bool rows_started;  /* png_read_update_info done: row counters are meaningful */
    bool complete;      /* every row has been decoded */
    bool interlaced;    /* Adam7 */
    png_uint_32 height; /* rows */
    uint8_t *raw;       /* one raw row, or the whole raw image when interlaced */
    png_bytep *rowp;    /* row pointers into raw (interlaced) */
    uint8_t *idx;       /* unpacked palette indices / low-depth gray, one row */
    int color, depth;   /* IHDR */
    uint8_t pal[768];   /* palette ("P") or gray ramp (low-depth "L") */
} pngdec;

static void on_png_error(png_structp png, png_const_charp msg) {
    pngdec *j = png_get_error_ptr(png);
    snprintf(j->msg, sizeof j->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg; /* Pillow has no warnings here; nothing is printed */
}

static void on_png_read(png_structp png, png_bytep out, size_t n) {
    pngdec *j = png_get_io_ptr(png);
    if (n > j->c->len - j->pos) {
        j->eof = true;
        png_error(png, "read past the end of the data");
    }
    memcpy(out, j->c->data + j->pos, n);
    /* An IDAT cut short is presented with the length that is there: Pillow
     * reads whatever the file holds, libpng wants exactly what it asks for. */
    size_t at = j->cut_idat;
    if (at && at < j->pos + n && at + 4 > j->pos) {
        uint8_t len[4] = {(uint8_t)(j->cut_idat_len >> 24), (uint8_t)(j->cut_idat_len >> 16),
                          (uint8_t)(j->cut_idat_len >> 8), (uint8_t)j->cut_idat_len};
        for (size_t i = 0; i < 4; i++)
            if (at + i >= j->pos && at + i < j->pos + n) out[at + i - j->pos] = len[i];
    }
    j->pos += n;
}

/* One raw row (as libpng gives it, no transforms) -> RGB. */
static void raw_row(pngdec *j, uint8_t *dst, const uint8_t *raw, int w) {
    switch (j->color) {
        case PNG_COLOR_TYPE_GRAY:
            if (j->depth == 1)
                cvt_bit1(dst, raw, w);
            else if (j->depth == 8)
                cvt_l(dst, raw, w);
            else if (j->depth == 16)
                cvt_i16be(dst, raw, w);
            else {
                cvt_unpack(j->idx, raw, w, j->depth);
                cvt_palette(dst, j->idx, w, j->pal);
            }
            break;
        case PNG_COLOR_TYPE_PALETTE:
            cvt_unpack(j->idx, raw, w, j->depth);
            cvt_palette(dst, j->idx, w, j->pal);
            break;
        case PNG_COLOR_TYPE_RGB:
            if (j->depth == 8)
                memcpy(dst, raw, (size_t)w * 3);
            else
                cvt_rgb16be(dst, raw, w);
            break;
        case PNG_COLOR_TYPE_GRAY_ALPHA:
            if (j->depth == 8)
                cvt_la(dst, raw, w);
            else
                cvt_la16be(dst, raw, w);
            break;
        default: /* RGBA */
            if (j->depth == 8)
                cvt_rgba(dst, raw, w);
            else
                cvt_rgba16be(dst, raw, w);
            break;
    }
}

static const char *mode_of(int color, int depth) {
    switch (color) {
        case PNG_COLOR_TYPE_GRAY:
            return depth == 1 ? "1" : depth == 16 ? "I;16" : "L";
        case PNG_COLOR_TYPE_RGB:
            return "RGB";
        case PNG_COLOR_TYPE_PALETTE:
            return "P";
        case PNG_COLOR_TYPE_GRAY_ALPHA:
            return depth == 16 ? "RGBA" : "LA";
        default:
            return "RGBA";
    }
}

/* The decode proper; libpng errors longjmp out of it to guarded_decode. */
static lv_status decode_rows(pngdec *j) {
    dec_ctx *c = j->c;
    png_structp png = j->png;
    png_infop info = j->info;
    png_set_read_fn(png, j, on_png_read);
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff);              /* our own limit applies */
    png_set_crc_action(png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE); /* meta_walk checked */
    png_set_benign_errors(png, 1);
    png_set_option(png, PNG_MAXIMUM_INFLATE_WINDOW, PNG_OPTION_ON);
    /* Ancillary chunks play no part in the pixels; meta_walk read the
     * metadata. Ignoring them also keeps libpng from inflating text. */
    static const png_byte skip[] = "bKGD\0cHRM\0eXIf\0gAMA\0hIST\0iCCP\0iTXt\0oFFs\0pCAL\0pHYs\0"
                                   "sBIT\0sCAL\0sPLT\0sRGB\0tEXt\0tIME\0tRNS\0zTXt";
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, skip, (int)(sizeof skip / 5));
    png_read_info(png, info);

    png_uint_32 w, h;
    int interlace;
    png_get_IHDR(png, info, &w, &h, &j->depth, &j->color, &interlace, NULL, NULL);
    dec_set_mode(c, mode_of(j->color, j->depth));
    c->info->width = (int)(w > 0x7fffffff ? 0x7fffffff : w);
    c->info->height = (int)(h > 0x7fffffff ? 0x7fffffff : h);
    lv_status st = dec_check_size(c, w, h);
    if (st != LV_OK) return st;
    if (j->color == PNG_COLOR_TYPE_PALETTE) {
        png_colorp pal = NULL;
        int n = 0;
        png_get_PLTE(png, info, &pal, &n);
        for (int i = 0; i < n && i < 256; i++) {
            j->pal[3 * i] = pal[i].red;
            j->pal[3 * i + 1] = pal[i].green;
            j->pal[3 * i + 2] = pal[i].blue;
        }
    } else if (j->color == PNG_COLOR_TYPE_GRAY && (j->depth == 2 || j->depth == 4)) {
        int scale = j->depth == 2 ? 0x55 : 0x11; /* Pillow's L;2 / L;4 unpackers */
        for (int i = 0; i < (1 << j->depth); i++) memset(j->pal + 3 * i, i * scale, 3);
    }
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    st = dec_alloc_rgb(c, (int)w, (int)h);
    if (st != LV_OK) return st;
    j->idx = malloc(w);
    if (!j->idx) return lv_fail(c->err, LV_ERR_NOMEM, "out of memory for PNG rows");
    size_t stride = (size_t)w * 3;
    j->interlaced = passes > 1;
    j->height = h;
    j->rows_started = true;

    if (passes == 1) { /* row by row, converting as we go */
        bool direct = j->color == PNG_COLOR_TYPE_RGB && j->depth == 8;
        if (!direct && !(j->raw = malloc(rowbytes)))
            return lv_fail(c->err, LV_ERR_NOMEM, "out of memory for PNG rows");
        for (png_uint_32 y = 0; y < h; y++) {
            uint8_t *dst = c->out->rgb + y * stride;
            png_read_row(png, direct ? dst : j->raw, NULL);
            if (!direct) raw_row(j, dst, j->raw, (int)w);
        }
        j->complete = true;
        return LV_OK;
    }
    /* Adam7: libpng fills whole raw rows pass by pass; convert at the end.
     * 8-bit RGB is decoded straight into the output. */
    bool direct = j->color == PNG_COLOR_TYPE_RGB && j->depth == 8;
    if (!direct && !(j->raw = malloc(rowbytes * h)))
        return lv_fail(c->err, LV_ERR_NOMEM, "out of memory for a %ux%u PNG", w, h);
    if (!(j->rowp = malloc(sizeof *j->rowp * h)))
        return lv_fail(c->err, LV_ERR_NOMEM, "out of memory for PNG rows");
    for (png_uint_32 y = 0; y < h; y++)
        j->rowp[y] = direct ? c->out->rgb + y * stride : j->raw + y * rowbytes;
    for (int pass = 0; pass < passes; pass++)
        for (png_uint_32 y = 0; y < h; y++) png_read_row(png, j->rowp[y], NULL);
    j->complete = true;
    return LV_OK;
}

/* Converts the whole raw image of an interlaced file. */
static void convert_all(pngdec *j) {
    img_rgb *o = j->c->out;
    if (!j->raw) return; /* decoded in place */
    for (int y = 0; y < o->h; y++) raw_row(j, o->rgb + (size_t)y * o->w * 3, j->rowp[y], o->w);
}

static lv_status guarded_decode(pngdec *j) {
    dec_ctx *c = j->c;
    if (setjmp(png_jmpbuf(j->png))) {
        /* Pillow stops reading once every row is decoded: an error in what
         * follows (a cut CRC or chunk after the image data) does not count.
         * libpng has written the last row when it moves past it (row number
         * == height, or pass 7 of Adam7) to finish the IDAT stream. */
        if (j->rows_started && (j->interlaced ? png_get_current_pass_number(j->png) >= 7
                                              : png_get_current_row_number(j->png) >= j->height)) {
            j->complete = true;
            img_rgb *o = c->out;
            if (!j->interlaced && j->raw) /* the last row is decoded but not yet converted */
                raw_row(j, o->rgb + (size_t)(o->h - 1) * o->w * 3, j->raw, o->w);
            return LV_OK;
        }
        if (j->eof) return lv_fail(c->err, LV_ERR_FORMAT, "truncated PNG (%s)", j->msg);
        return lv_fail(c->err, LV_ERR_FORMAT, "corrupt PNG: %s", j->msg);
    }
    return decode_rows(j);
}

lv_status dec_png(dec_ctx *c) {
    chunk_meta m = {0};
    lv_status st = meta_walk(c, &m);
    if (st != LV_OK) return st;

    pngdec *j = calloc(1, sizeof *j);
    if (!j) return lv_fail(c->err, LV_ERR_NOMEM, "out of memory for the PNG decoder");
    j->c = c;
    j->cut_idat = m.cut_idat;
    j->cut_idat_len = m.cut_idat_len;
    j->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, j, on_png_error, on_png_warning);
    if (j->png) j->info = png_create_info_struct(j->png);
    if (!j->png || !j->info) {
        st = lv_fail(c->err, LV_ERR_NOMEM, "out of memory for the PNG decoder");
    } else {
        st = guarded_decode(j);
        if (st == LV_OK && j->complete && j->rowp) convert_all(j);
    }
    png_destroy_read_struct(j->png ? &j->png : NULL, j->info ? &j->info : NULL, NULL);
    free(j->raw);
    free(j->rowp);
    free(j->idx);
    free(j);
    if (st != LV_OK) return st;
    return meta_finish(c, &m);
}
