/*
 * decode_gif.c - the first frame of a GIF, composed as Pillow composes it;
 * giflib decodes the LZW data.
 *
 * FORMAT (little endian):
 *
 *     "GIF87a" | "GIF89a"
 *     screen    u16 width, u16 height, u8 flags (bit 7: global palette,
 *               bits 0-2: palette has 2^(n+1) entries), u8 background, u8 aspect
 *     [global palette: 3 * 2^(n+1) bytes RGB]
 *     blocks:   '!' label sub-blocks...   extension; label 0xF9 is the graphic
 *                                         control: u8 flags (bit 0: transparent),
 *                                         u16 delay, u8 transparent index
 *               ',' image                 u16 left, top, width, height, u8 flags
 *                                         (bit 7 local palette, bit 6 interlaced,
 *                                         bits 0-2 its size), [local palette],
 *                                         u8 LZW minimum code size, sub-blocks
 *               ';'                       trailer
 *     sub-blocks: u8 n, n bytes, ... , 0
 *
 * PILLOW (src/PIL/GifImagePlugin.py _open/_seek/load_prepare, GifDecode.c),
 * frame 0 with the default LoadingStrategy.RGB_AFTER_FIRST:
 *   - the image size is the logical screen, grown to cover the first frame
 *     if that frame extends past it;
 *   - blocks before the first image descriptor are walked as gif_walk()
 *     does: bytes that start no block are skipped; a graphic control block
 *     with the transparent bit sets the transparency index (a later one
 *     without the bit does not clear it);
 *   - the palette is the frame's local palette if it has one, else the
 *     global one; a palette that is exactly the identity gray ramp
 *     (entry i == (i, i, i)) is dropped ("_is_palette_needed"). With a
 *     palette the mode is "P", without one "L";
 *   - the canvas starts filled with the transparency index when there is
 *     one, else with 0 (not the background colour), and the frame's pixels
 *     are written at (left, top), transparent ones included;
 *   - convert("RGB"): "P" looks every index up in the palette (2^(n+1)
 *     entries; indices past it are black), so the transparent colour shows
 *     as the palette's colour at that index; "L" makes gray = index;
 *   - decoding stops at the frame's last pixel; a sub-block is only used
 *     when it is complete, so data cut before the last pixel fails.
 *     giflib is given the stream up to the frame's last complete sub-block
 *     plus a block terminator, which gives the same outcome.
 */
#include "image/decode_internal.h"

#include <stdlib.h>
#include <string.h>

#include <gif_lib.h>

typedef struct {
    uint32_t sw, sh;   /* logical screen */
    bool global;       /* has a global palette */
    size_t global_off; /* its position */
    int global_n;      /* entries */
    size_t desc;       /* position of the image descriptor (after ',') */
    uint32_t x0, y0, fw, fh;
    bool local; /* the frame has a local palette */
    size_t local_off;
    int local_n;
    int transparency; /* -1: none */
    size_t data_end;  /* end of the frame's LZW sub-blocks (complete ones only) */
    bool data_whole;  /* the sub-blocks end with their terminator */
} gif_walk_t;

static uint32_t le16(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

/* Skips sub-blocks from *p up to and including the terminator; false if the
 * data ends first (*p is then the end of the last complete sub-block). */
static bool skip_subblocks(const uint8_t *d, size_t n, size_t *p) {
    while (*p < n) {
        size_t len = d[*p];
        if (len == 0) {
            (*p)++;
            return true;
        }
        if (len + 1 > n - *p) return false;
        *p += len + 1;
    }
    return false;
}

static lv_status gif_walk(dec_ctx *c, gif_walk_t *g) {
    const uint8_t *d = c->data;
    size_t n = c->len;
    if (n < 13) return lv_fail(c->err, LV_ERR_FORMAT, "truncated GIF (header)");
    g->sw = le16(d + 6);
    g->sh = le16(d + 8);
    g->transparency = -1;
    size_t p = 13;
    if (d[10] & 0x80) {
        g->global = true;
        g->global_off = p;
        g->global_n = 1 << ((d[10] & 7) + 1);
        p += 3 * (size_t)g->global_n;
    }
    for (;;) {
        if (p >= n || d[p] == ';')
            return lv_fail(c->err, LV_ERR_FORMAT, "GIF has no image (%s)",
                           p >= n ? "data ends before one" : "trailer reached");
        uint8_t b = d[p++];
        if (b == '!') {
            if (p >= n) return lv_fail(c->err, LV_ERR_FORMAT, "truncated GIF (extension)");
            uint8_t label = d[p++];
            if (label == 0xF9 && p < n && d[p] != 0) { /* graphic control, first sub-block */
                size_t len = d[p];
                if (len < 3 || p + 1 + len > n || ((d[p + 1] & 1) && len < 4))
                    return lv_fail(c->err, LV_ERR_FORMAT, "corrupt GIF graphic control block");
                if (d[p + 1] & 1) g->transparency = d[p + 4];
            }
            if (!skip_subblocks(d, n, &p)) p = n; /* Pillow reads to the end */
        } else if (b == ',') {
            if (n - p < 10)
                return lv_fail(c->err, LV_ERR_FORMAT, "truncated GIF (image descriptor)");
            g->desc = p;
            g->x0 = le16(d + p);
            g->y0 = le16(d + p + 2);
            g->fw = le16(d + p + 4);
            g->fh = le16(d + p + 6);
            uint8_t flags = d[p + 8];
            p += 9;
            if (flags & 0x80) {
                g->local = true;
                g->local_off = p;
                g->local_n = 1 << ((flags & 7) + 1);
                p += 3 * (size_t)g->local_n;
            }
            if (p >= n) return lv_fail(c->err, LV_ERR_FORMAT, "truncated GIF (image data)");
            p++; /* LZW minimum code size */
            g->data_whole = skip_subblocks(d, n, &p);
            g->data_end = p; /* past the terminator, or the last complete sub-block */
            return LV_OK;
        }
        /* any other byte starts no block: Pillow skips it */
    }
}

/* _is_palette_needed: false for the identity gray ramp. */
static bool palette_needed(const uint8_t *p, int n) {
    for (int i = 0; i < n; i++)
        if (p[3 * i] != i || p[3 * i + 1] != i || p[3 * i + 2] != i) return true;
    return false;
}

/* giflib reads through this: the file up to g->data_end, then a block
 * terminator in case the data ended inside the frame's sub-blocks. */
typedef struct {
    const uint8_t *d;
    size_t end, pos;
    bool terminated; /* the synthetic terminator has been served */
} gif_stream;

static int gif_read(GifFileType *gif, GifByteType *out, int want) {
    gif_stream *s = gif->UserData;
    int got = 0;
    while (got < want) {
        if (s->pos < s->end) {
            size_t k = s->end - s->pos;
            if (k > (size_t)(want - got)) k = (size_t)(want - got);
            memcpy(out + got, s->d + s->pos, k);
            s->pos += k;
            got += (int)k;
        } else if (!s->terminated) {
            s->terminated = true;
            out[got++] = 0;
        } else {
            break;
        }
    }
    return got;
}

static lv_status gif_lzw(dec_ctx *c, const gif_walk_t *g, uint8_t *canvas, uint32_t cw) {
    const uint8_t *d = c->data;
    gif_stream s = {.d = d, .end = g->data_end, .pos = 0, .terminated = g->data_whole};
    int err = 0;
    GifFileType *gif = DGifOpen(&s, gif_read, &err);
    if (!gif) return lv_fail(c->err, LV_ERR_FORMAT, "corrupt GIF: %s", GifErrorString(err));
    lv_status st = LV_OK;
    s.pos = g->desc; /* straight to the first image descriptor, as found by gif_walk */
    if (DGifGetImageDesc(gif) == GIF_ERROR) {
        st = lv_fail(c->err, LV_ERR_FORMAT, "corrupt GIF: %s", GifErrorString(gif->Error));
        goto done;
    }
    static const int start[4] = {0, 4, 2, 1}, step[4] = {8, 8, 4, 2};
    int passes = gif->Image.Interlace ? 4 : 1;
    for (int pass = 0; pass < passes; pass++) {
        int y0 = gif->Image.Interlace ? start[pass] : 0, dy = gif->Image.Interlace ? step[pass] : 1;
        for (uint32_t y = (uint32_t)y0; y < g->fh; y += (uint32_t)dy) {
            uint8_t *row = canvas + (size_t)(g->y0 + y) * cw + g->x0;
            if (DGifGetLine(gif, row, (int)g->fw) == GIF_ERROR) {
                st = lv_fail(c->err, LV_ERR_FORMAT, "%s GIF: %s (row %u of %u)",
                             s.pos >= s.end ? "truncated" : "corrupt", GifErrorString(gif->Error),
                             y, g->fh);
                goto done;
            }
        }
    }
done:
    DGifCloseFile(gif, &err);
    return st;
}

lv_status dec_gif(dec_ctx *c) {
    gif_walk_t g = {0};
    lv_status st = gif_walk(c, &g);
    if (st != LV_OK) return st;
    uint64_t w = g.sw > g.x0 + g.fw ? g.sw : g.x0 + g.fw;
    uint64_t h = g.sh > g.y0 + g.fh ? g.sh : g.y0 + g.fh;
    const uint8_t *d = c->data;
    /* the frame's palette: local, else global; the gray ramp means none */
    uint8_t pal[768] = {0};
    bool have_pal = false;
    const uint8_t *src = g.local ? d + g.local_off : g.global ? d + g.global_off : NULL;
    int npal = g.local ? g.local_n : g.global_n;
    if (src && src + 3 * (size_t)npal <= d + c->len && palette_needed(src, npal)) {
        memcpy(pal, src, 3 * (size_t)npal);
        have_pal = true;
    }
    dec_set_mode(c, have_pal ? "P" : "L");
    c->info->width = (int)w;
    c->info->height = (int)h;
    st = dec_check_size(c, w, h);
    if (st != LV_OK) return st;
    if (g.fw == 0 || g.fh == 0)
        return lv_fail(c->err, LV_ERR_FORMAT, "corrupt GIF: first frame is %ux%u", g.fw, g.fh);

    uint8_t *canvas = malloc((size_t)w * h);
    if (!canvas)
        return lv_fail(c->err, LV_ERR_NOMEM, "out of memory for a %llux%llu GIF",
                       (unsigned long long)w, (unsigned long long)h);
    memset(canvas, g.transparency >= 0 ? g.transparency : 0, (size_t)w * h);
    st = gif_lzw(c, &g, canvas, (uint32_t)w);
    if (st == LV_OK) st = dec_alloc_rgb(c, (int)w, (int)h);
    for (uint64_t y = 0; st == LV_OK && y < h; y++) {
        uint8_t *dst = c->out->rgb + y * w * 3;
        if (have_pal)
            cvt_palette(dst, canvas + y * w, (int)w, pal);
        else
            cvt_l(dst, canvas + y * w, (int)w);
    }
    free(canvas);
    return st;
}
