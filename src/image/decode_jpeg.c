/*
 * decode_jpeg.c - JPEG (and MPO) through libjpeg-turbo, as Pillow reads it.
 *
 * FORMAT. A JPEG is a chain of markers, FF xx, most followed by a big-endian
 * u16 length that counts itself:
 *
 *     FF D8            SOI
 *     FF E0..EF len    APPn: APP1 "Exif\0\0" + TIFF (EXIF), APP1
 *                      "http://ns.adobe.com/xap/1.0/\0" + XMP, APP2 "MPF\0" +
 *                      TIFF (multi-picture index), APP14 "Adobe" (transform:
 *                      0 = RGB/CMYK, 1 = YCbCr, 2 = YCCK)
 *     FF DB len        DQT, FF C4 len DHT, FF DD len DRI, FF FE len COM
 *     FF C0..CF len    SOFn (not C4/C8/CC): u8 precision, u16 height, u16 width,
 *                      u8 components, 3 bytes per component
 *     FF DA len        SOS, then entropy-coded data up to the next marker
 *     FF D9            EOI
 *
 * PILLOW (src/PIL/JpegImagePlugin.py, src/libImaging/JpegDecode.c):
 *   - _open walks the markers up to SOS exactly as jpeg_walk() below does
 *     (junk bytes skipped, FF FF fill, unknown markers FF 01..BF refused),
 *     keeping the first APP1 Exif segment (later ones are appended without
 *     their "Exif\0\0"), the last APP1 XMP packet, and the SOF's precision
 *     (anything but 8 bits is refused) and component count:
 *     1 -> mode "L", 3 -> "RGB", 4 -> "CMYK", others refused.
 *   - the decoder leaves jpeg_color_space to libjpeg (JFIF/Adobe markers
 *     decide YCbCr, RGB, CMYK or YCCK) and asks for JCS_GRAYSCALE, JCS_RGB or
 *     JCS_CMYK; dct_method and do_fancy_upsampling keep libjpeg's defaults
 *     (JDCT_ISLOW, TRUE) since draft() is never called. Warnings are ignored.
 *   - four-component data is always unpacked as "CMYK;I" (Adobe's inverted
 *     polarity, "assume adobe conventions"), then convert("RGB") is cmyk2rgb
 *     (see convert.c). YCCK is converted to CMYK by libjpeg first.
 *   - the data is fed through a suspending source: running out of data
 *     before the last scanline is "image file is truncated"; running out
 *     only in jpeg_finish_decompress (a missing EOI after complete data) is
 *     not an error, but a libjpeg error there (a bad marker after the last
 *     scan) is. Here a memory source inserts a fake EOI at the end and
 *     records that it did, and the same rules are applied to that record.
 *   - jpeg_factory reopens a file as MPO (frame 0 = the same JPEG) when the
 *     MPF index says NumberOfImages (B001) > 1 and no APP1 carries an Ultra
 *     HDR ' hdrgm:Version="' attribute; only info->format differs.
 */
#include "image/decode_internal.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

/* ------------------------------------------------------------------------ */
/* Pillow's marker walk (JpegImageFile._open)                                */
/* ------------------------------------------------------------------------ */

typedef struct {
    int bits, layers;       /* from the last SOF */
    uint32_t width, height; /* from the last SOF */
    bool have_sof;
    const uint8_t *exif; /* first APP1 Exif segment (with "Exif\0\0"), or exif_buf */
    size_t exif_len;     /* bytes */
    uint8_t *exif_buf;   /* owned: the segments joined, when there are several */
    const uint8_t *xmp;  /* last APP1 XMP packet (after the namespace NUL) */
    size_t xmp_len;
    const uint8_t *mpf; /* last APP2 "MPF\0" payload (TIFF) */
    size_t mpf_len;
    bool hdrgm; /* an APP1 mentions ' hdrgm:Version="' (Ultra HDR) */
} jpeg_meta;

static bool has_text(const uint8_t *d, size_t n, const char *s) {
    size_t m = strlen(s);
    for (size_t i = 0; i + m <= n; i++)
        if (d[i] == (uint8_t)s[0] && memcmp(d + i, s, m) == 0) return true;
    return false;
}

static lv_status jpeg_segment(dec_ctx *c, jpeg_meta *m, int marker, const uint8_t *s, size_t n) {
    if ((marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC) ||
        marker == 0xDE) { /* SOF */
        if (n < 6) return lv_fail(c->err, LV_ERR_FORMAT, "corrupt JPEG: SOF segment too short");
        m->bits = s[0];
        m->height = (uint32_t)s[1] << 8 | s[2];
        m->width = (uint32_t)s[3] << 8 | s[4];
        m->layers = s[5];
        m->have_sof = true;
        if (m->bits != 8)
            return lv_fail(c->err, LV_ERR_UNSUPPORTED,
                           "%d-bit JPEG images are not supported (Pillow reads 8-bit only)",
                           m->bits);
        if (m->layers != 1 && m->layers != 3 && m->layers != 4)
            return lv_fail(c->err, LV_ERR_UNSUPPORTED,
                           "JPEG images with %d components are not supported", m->layers);
    } else if (marker == 0xDB) { /* DQT: Pillow parses the tables and refuses short ones */
        while (n > 0) {
            size_t qt = 1 + (s[0] >> 4 == 0 ? 1 : 2) * 64;
            if (n < qt)
                return lv_fail(c->err, LV_ERR_FORMAT, "corrupt JPEG: bad quantization table");
            s += qt;
            n -= qt;
        }
    } else if (marker == 0xE1) {
        if (n >= 6 && memcmp(s, "Exif\0\0", 6) == 0) {
            if (!m->exif) {
                m->exif = s;
                m->exif_len = n;
            } else { /* info["exif"] += s[6:] */
                uint8_t *b = realloc(m->exif_buf, m->exif_len + n - 6);
                if (!b) return lv_fail(c->err, LV_ERR_NOMEM, "out of memory for JPEG EXIF data");
                if (!m->exif_buf) memcpy(b, m->exif, m->exif_len);
                memcpy(b + m->exif_len, s + 6, n - 6);
                m->exif_buf = b;
                m->exif = b;
                m->exif_len += n - 6;
            }
        } else if (n >= 29 && memcmp(s, "http://ns.adobe.com/xap/1.0/\0", 29) == 0) {
            m->xmp = s + 29;
            m->xmp_len = n - 29;
        }
        if (has_text(s, n, " hdrgm:Version=\"")) m->hdrgm = true;
    } else if (marker == 0xE2 && n >= 4 && memcmp(s, "MPF\0", 4) == 0) {
        m->mpf = s + 4;
        m->mpf_len = n - 4;
    }
    return LV_OK;
}

static lv_status jpeg_walk(dec_ctx *c, jpeg_meta *m) {
    const uint8_t *d = c->data;
    size_t n = c->len, p = 3;
    int cur = 0xFF; /* the byte in hand ("s" in Pillow), -1 at end of data */
    for (;;) {
        if (cur < 0) return lv_fail(c->err, LV_ERR_FORMAT, "truncated JPEG (no image data)");
        if (cur != 0xFF) { /* skip non-FF junk */
            cur = p < n ? d[p++] : -1;
            continue;
        }
        if (p >= n) return lv_fail(c->err, LV_ERR_FORMAT, "truncated JPEG (no image data)");
        int marker = d[p++];
        if (marker == 0xFF) { /* fill byte: the new byte in hand is FF */
            cur = 0xFF;
            continue;
        }
        if (marker == 0x00) { /* escaped FF outside a scan */
            cur = p < n ? d[p++] : -1;
            continue;
        }
        if (marker < 0xC0)
            return lv_fail(c->err, LV_ERR_FORMAT, "corrupt JPEG: no marker found (FF %02X)",
                           marker);
        bool has_segment = !(marker == 0xC8 || (marker >= 0xD0 && marker <= 0xD9) ||
                             (marker >= 0xF0 && marker <= 0xFD));
        if (has_segment) {
            if (p + 2 > n) return lv_fail(c->err, LV_ERR_FORMAT, "truncated JPEG header");
            long len = ((long)d[p] << 8 | d[p + 1]) - 2;
            p += 2;
            if (len < 0) len = 0; /* Pillow's _safe_read of a negative size reads nothing */
            if ((size_t)len > n - p)
                return lv_fail(c->err, LV_ERR_FORMAT, "truncated JPEG header (segment %02X)",
                               marker);
            lv_status st = jpeg_segment(c, m, marker, d + p, (size_t)len);
            if (st != LV_OK) return st;
            p += (size_t)len;
            if (marker == 0xDA) break; /* SOS */
        }
        cur = p < n ? d[p++] : -1;
    }
    if (!m->have_sof)
        return lv_fail(c->err, LV_ERR_FORMAT, "corrupt JPEG: no SOF marker before the scan");
    return LV_OK;
}

/* ------------------------------------------------------------------------ */
/* libjpeg glue: errors longjmp back, warnings are silent, memory source     */
/* ------------------------------------------------------------------------ */

#define JPEG_MAX_SCANS 1000 /* progressive "scan bombs"; real files have ~10 */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

typedef struct {
    struct jpeg_source_mgr pub;
    bool hit_eof; /* the data ran out and a fake EOI was supplied */
} jpeg_src;

static void on_error(j_common_ptr cinfo) {
    jpeg_err *e = (jpeg_err *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->msg);
    longjmp(e->jb, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    (void)cinfo;
    (void)level; /* Pillow suppresses warnings and traces; so do we */
}

static void on_progress(j_common_ptr cinfo) {
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number > JPEG_MAX_SCANS) {
        jpeg_err *e = (jpeg_err *)cinfo->err;
        snprintf(e->msg, sizeof e->msg, "more than %d scans", JPEG_MAX_SCANS);
        longjmp(e->jb, 1);
    }
}

static void src_init(j_decompress_ptr cinfo) {
    (void)cinfo;
}

static boolean src_fill(j_decompress_ptr cinfo) {
    static const JOCTET eoi[2] = {0xFF, JPEG_EOI};
    jpeg_src *s = (jpeg_src *)cinfo->src;
    s->hit_eof = true;
    s->pub.next_input_byte = eoi;
    s->pub.bytes_in_buffer = 2;
    return TRUE;
}

static void src_skip(j_decompress_ptr cinfo, long n) {
    jpeg_src *s = (jpeg_src *)cinfo->src;
    if (n <= 0) return;
    while ((size_t)n > s->pub.bytes_in_buffer) {
        n -= (long)s->pub.bytes_in_buffer;
        src_fill(cinfo);
    }
    s->pub.next_input_byte += n;
    s->pub.bytes_in_buffer -= (size_t)n;
}

static void src_term(j_decompress_ptr cinfo) {
    (void)cinfo;
}

/* Everything the decode touches after setjmp lives here, so nothing needs
 * to be volatile. */
typedef struct {
    struct jpeg_decompress_struct cinfo;
    jpeg_err err;
    jpeg_src src;
    struct jpeg_progress_mgr progress;
    uint8_t *tmp; /* raw rows for L and CMYK output */
    bool created;
} jpeg_job;

enum { JPEG_BATCH = 16 }; /* scanlines per jpeg_read_scanlines call */

/* The decode proper; a libjpeg error longjmps out of it to jpeg_run. */
static lv_status jpeg_work(dec_ctx *c, jpeg_job *j, const jpeg_meta *m) {
    struct jpeg_decompress_struct *ci = &j->cinfo;
    jpeg_create_decompress(ci);
    j->created = true;
    j->src.pub.init_source = src_init;
    j->src.pub.fill_input_buffer = src_fill;
    j->src.pub.skip_input_data = src_skip;
    j->src.pub.resync_to_restart = jpeg_resync_to_restart;
    j->src.pub.term_source = src_term;
    j->src.pub.next_input_byte = c->data;
    j->src.pub.bytes_in_buffer = c->len;
    ci->src = &j->src.pub;
    j->progress.progress_monitor = on_progress;
    ci->progress = &j->progress;

    jpeg_read_header(ci, TRUE);
    lv_status st = dec_check_size(c, ci->image_width, ci->image_height);
    if (st != LV_OK) return st;
    if (ci->num_components != m->layers)
        return lv_fail(c->err, LV_ERR_FORMAT, "corrupt JPEG: %d components, SOF says %d",
                       ci->num_components, m->layers);
    int ncomp = ci->num_components;
    ci->out_color_space = ncomp == 1 ? JCS_GRAYSCALE : ncomp == 3 ? JCS_RGB : JCS_CMYK;
    ci->dct_method = JDCT_ISLOW;
    ci->do_fancy_upsampling = TRUE;
    jpeg_start_decompress(ci);
    if (j->src.hit_eof) /* a multi-scan image ran out of data while buffering */
        return lv_fail(c->err, LV_ERR_FORMAT, "truncated JPEG (data ends inside a scan)");
    int w = (int)ci->output_width, h = (int)ci->output_height;
    st = dec_alloc_rgb(c, w, h);
    if (st != LV_OK) return st;
    size_t stride = (size_t)w * 3;
    if (ncomp != 3) {
        j->tmp = malloc((size_t)w * (size_t)ncomp * JPEG_BATCH);
        if (!j->tmp) return lv_fail(c->err, LV_ERR_NOMEM, "out of memory for JPEG rows");
    }
    JSAMPROW rows[JPEG_BATCH];
    while (ci->output_scanline < ci->output_height) {
        int y0 = (int)ci->output_scanline, want = h - y0 < JPEG_BATCH ? h - y0 : JPEG_BATCH;
        for (int i = 0; i < want; i++)
            rows[i] = ncomp == 3 ? c->out->rgb + (size_t)(y0 + i) * stride
                                 : j->tmp + (size_t)i * w * ncomp;
        int got = (int)jpeg_read_scanlines(ci, rows, (JDIMENSION)want);
        if (j->src.hit_eof)
            return lv_fail(c->err, LV_ERR_FORMAT, "truncated JPEG (data ends at row %d of %d)", y0,
                           h);
        for (int i = 0; i < got && ncomp != 3; i++) {
            uint8_t *dst = c->out->rgb + (size_t)(y0 + i) * stride;
            if (ncomp == 1)
                cvt_l(dst, rows[i], w);
            else
                cvt_cmyk_inv(dst, rows[i], w);
        }
    }
    /* Pillow then runs jpeg_finish_decompress: markers after the last scan
     * must parse (an error there fails), but running out of data there (a
     * missing EOI) is fine, so hit_eof no longer matters. */
    jpeg_finish_decompress(ci);
    return LV_OK;
}

static lv_status jpeg_run(dec_ctx *c, jpeg_job *j, const jpeg_meta *m) {
    j->cinfo.err = jpeg_std_error(&j->err.pub);
    j->err.pub.error_exit = on_error;
    j->err.pub.emit_message = on_message;
    if (setjmp(j->err.jb)) {
        if (j->src.hit_eof)
            return lv_fail(c->err, LV_ERR_FORMAT, "truncated JPEG (%s)", j->err.msg);
        return lv_fail(c->err, LV_ERR_FORMAT, "corrupt JPEG: %s", j->err.msg);
    }
    return jpeg_work(c, j, m);
}

lv_status dec_jpeg(dec_ctx *c) {
    jpeg_meta m = {0};
    lv_status st = jpeg_walk(c, &m);
    c->exif_buf = m.exif_buf; /* decode.c frees it, on every path */
    if (st != LV_OK) return st;
    dec_set_mode(c, m.layers == 1 ? "L" : m.layers == 3 ? "RGB" : "CMYK");
    c->info->width = (int)m.width;
    c->info->height = (int)m.height;
    uint64_t n_images = 0;
    if (m.mpf && !m.hdrgm && tiff_find_uint(m.mpf, m.mpf_len, 0xB001, &n_images) && n_images > 1)
        c->info->format = "MPO";
    st = dec_check_size(c, m.width, m.height);
    if (st != LV_OK) return st;

    jpeg_job *j = calloc(1, sizeof *j);
    if (!j) return lv_fail(c->err, LV_ERR_NOMEM, "out of memory for the JPEG decoder");
    st = jpeg_run(c, j, &m);
    if (j->created) jpeg_destroy_decompress(&j->cinfo);
    free(j->tmp);
    free(j);
    if (st != LV_OK) return st;
    c->exif = m.exif;
    c->exif_len = m.exif_len;
    c->xmp = m.xmp;
    c->xmp_len = m.xmp_len;
    return LV_OK;
}
