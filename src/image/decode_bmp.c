/*
 * decode_bmp.c - Windows/OS2 bitmaps, a small parser that reads what
 * Pillow's BmpImagePlugin reads, the way it reads it.
 *
 * FORMAT (little endian):
 *
 *     file header   "BM", u32 file size, u32 reserved, u32 pixel data offset
 *     info header   u32 size, then
 *       size 12 (OS/2 1.x):      u16 width, u16 height, u16 planes, u16 bits
 *       size 40/52/56/64/108/124: i32 width, i32 height (negative: top-down),
 *                    u16 planes, u16 bits, u32 compression (0 RGB, 1 RLE8,
 *                    2 RLE4, 3 BITFIELDS), u32 image size, 2 x u32 pixels per
 *                    metre, u32 colours used, u32 important; from 52 on the
 *                    R, G, B masks at 40, from 56 on the alpha mask at 52
 *     [40-byte header + BITFIELDS: three u32 masks follow the header]
 *     palette       colours used (0: 2^bits) entries of B, G, R[, 0]
 *                   (4 bytes each; 3 for the 12-byte header)
 *     pixels        rows padded to 4 bytes, bottom row first unless top-down
 *
 * PILLOW (src/PIL/BmpImagePlugin.py; Unpack.c): the modes and raw layouts
 *   1/4/8 bits -> "P" with "P;1" / "P;4" / "P" (indices, MSB first), except a
 *     palette that is exactly black, white (2 colours) -> "1", or the gray
 *     ramp i -> (i, i, i) -> "L"; the raw layout then follows the mode, not
 *     the bit depth (the row stride still comes from the bit depth);
 *   16 -> "BGR;15" (5-5-5, v*255/31 truncated), 24 -> "BGR", 32 -> "BGRX"
 *     (the fourth byte ignored);
 *   BITFIELDS: only the masks in mask_table[] (565 and 555 at 16 bits, the
 *     listed byte orders at 24/32 bits); any other layout is refused;
 *   RLE8 / RLE4: BmpRleDecoder, reproduced by rle_decode(), including its
 *     quirks (a delta reads four bytes; RLE4 absolute runs read count/2
 *     bytes; word alignment uses the absolute file position); fewer pixels
 *     than width*height is an error ("not enough image data").
 *   A palette longer than 256 entries fails (putpalette). Then convert("RGB").
 */
#include "image/decode_internal.h"

#include <stdlib.h>
#include <string.h>

enum { BMP_RAW = 0, BMP_RLE8 = 1, BMP_RLE4 = 2, BMP_BITFIELDS = 3 };

/* How a raw row becomes RGB. */
typedef enum { RAW_BIT1, RAW_INDEX, RAW_GRAY, RAW_BGR15, RAW_BGR16, RAW_BYTES } raw_kind;

typedef struct {
    raw_kind kind;
    int bits;          /* bits per pixel of the raw layout (not of the file) */
    int step, r, g, b; /* RAW_BYTES: bytes per pixel and channel positions */
} raw_layout;

/* BITFIELDS masks Pillow accepts (BmpImagePlugin SUPPORTED / MASK_MODES). */
static const struct {
    int bits;
    uint32_t r, g, b, a;
    const char *rawmode;
    int rr, gg, bb; /* byte positions of R, G, B */
} mask_table[] = {
    {32, 0xFF0000, 0xFF00, 0xFF, 0x0, "BGRX", 2, 1, 0},
    {32, 0xFF000000, 0xFF0000, 0xFF00, 0x0, "XBGR", 3, 2, 1},
    {32, 0xFF000000, 0xFF00, 0xFF, 0x0, "BGXR", 3, 1, 0},
    {32, 0xFF000000, 0xFF0000, 0xFF00, 0xFF, "ABGR", 3, 2, 1},
    {32, 0xFF, 0xFF00, 0xFF0000, 0xFF000000, "RGBA", 0, 1, 2},
    {32, 0xFF0000, 0xFF00, 0xFF, 0xFF000000, "BGRA", 2, 1, 0},
    {32, 0xFF000000, 0xFF00, 0xFF, 0xFF0000, "BGAR", 3, 1, 0},
    {32, 0x0, 0x0, 0x0, 0x0, "BGRA", 2, 1, 0},
    {24, 0xFF0000, 0xFF00, 0xFF, 0, "BGR", 2, 1, 0},
    {16, 0xF800, 0x7E0, 0x1F, 0, "BGR;16", 0, 0, 0},
    {16, 0x7C00, 0x3E0, 0x1F, 0, "BGR;15", 0, 0, 0},
};

static uint32_t le16(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

typedef struct {
    uint32_t header_size;
    uint64_t width, height;
    bool top_down;
    uint32_t bits, compression;
    uint64_t colors;
    int padding; /* palette entry size */
    uint32_t masks[4];
    uint64_t offset;    /* pixel data */
    size_t palette_off; /* where the palette is read */
} bmp_header;

static lv_status bmp_header_read(dec_ctx *c, bmp_header *h) {
    const uint8_t *d = c->data;
    size_t n = c->len;
    if (n < 18) return lv_fail(c->err, LV_ERR_FORMAT, "truncated BMP (file header)");
    h->offset = le32(d + 10);
    h->header_size = le32(d + 14);
    if (h->header_size < 4 || h->header_size - 4 > n - 18)
        return h->header_size < 4 ? lv_fail(c->err, LV_ERR_UNSUPPORTED,
                                            "unsupported BMP header type (%u)", h->header_size)
                                  : lv_fail(c->err, LV_ERR_FORMAT, "truncated BMP (info header)");
    const uint8_t *hd = d + 18; /* header_data: the header after its size field */
    size_t hl = h->header_size - 4;
    size_t pos = 14 + (size_t)h->header_size;
    if (h->header_size == 12) {
        h->width = le16(hd);
        h->height = le16(hd + 2);
        h->bits = le16(hd + 6);
        h->compression = BMP_RAW;
        h->padding = 3;
    } else if (h->header_size == 40 || h->header_size == 52 || h->header_size == 56 ||
               h->header_size == 64 || h->header_size == 108 || h->header_size == 124) {
        h->top_down = hd[7] == 0xFF;
        h->width = le32(hd);
        h->height = h->top_down ? 0x100000000ull - le32(hd + 4) : le32(hd + 4);
        h->bits = le16(hd + 10);
        h->compression = le32(hd + 12);
        h->colors = le32(hd + 28);
        h->padding = 4;
        if (h->compression == BMP_BITFIELDS) {
            if (hl >= 48) {
                for (int i = 0; i < 3; i++) h->masks[i] = le32(hd + 36 + 4 * i);
                h->masks[3] = hl >= 52 ? le32(hd + 48) : 0;
            } else { /* 40-byte header: three masks after it */
                if (pos + 12 > n) return lv_fail(c->err, LV_ERR_FORMAT, "truncated BMP (masks)");
                for (int i = 0; i < 3; i++) h->masks[i] = le32(d + pos + 4 * i);
                pos += 12;
            }
        }
    } else {
        return lv_fail(c->err, LV_ERR_UNSUPPORTED, "unsupported BMP header type (%u)",
                       h->header_size);
    }
    if (h->colors == 0) h->colors = h->bits < 64 ? 1ull << h->bits : 0;
    if (h->offset == 14 + (uint64_t)h->header_size && h->bits <= 8) h->offset += 4 * h->colors;
    h->palette_off = pos;
    if (h->offset == 0) h->offset = pos; /* "offset or self.fp.tell()": after the palette */
    return LV_OK;
}

/* BmpRleDecoder.decode, byte for byte; idx receives width*height indices. */
static lv_status rle_decode(dec_ctx *c, const bmp_header *h, uint8_t *idx) {
    const uint8_t *d = c->data;
    size_t n = c->len, pos = (size_t)h->offset;
    size_t w = (size_t)h->width, dest = w * (size_t)h->height, len = 0, x = 0;
    bool rle4 = h->compression == BMP_RLE4;
#define PUT(v)                                                                                     \
    do {                                                                                           \
        if (len < dest) idx[len] = (uint8_t)(v);                                                   \
        len++;                                                                                     \
    } while (0)
    while (len < dest) {
        if (pos >= n || n - pos < 2) break;
        size_t num = d[pos];
        uint8_t byte = d[pos + 1];
        pos += 2;
        if (num) { /* encoded run, clipped to the row */
            if (x + num > w) num = x < w ? w - x : 0;
            for (size_t i = 0; i < num; i++)
                PUT(rle4 ? (i % 2 == 0 ? byte >> 4 : byte & 15) : byte);
            x += num;
        } else if (byte == 0) { /* end of line */
            while (len % w != 0) PUT(0);
            x = 0;
        } else if (byte == 1) { /* end of bitmap */
            break;
        } else if (byte == 2) { /* delta: Pillow reads 2 bytes, then uses the next 2 */
            if (pos >= n || n - pos < 2) break;
            pos += 2;
            if (pos >= n || n - pos < 2)
                return lv_fail(c->err, LV_ERR_FORMAT, "corrupt BMP: RLE delta cut short");
            size_t right = d[pos], up = d[pos + 1];
            pos += 2;
            size_t zeros = right + up * w;
            size_t fill = len < dest ? (zeros < dest - len ? zeros : dest - len) : 0;
            memset(idx + (len < dest ? len : dest), 0, fill);
            len += zeros;
            x = len % w;
        } else { /* absolute run of `byte` pixels */
            size_t want = rle4 ? byte / 2 : byte;
            size_t got = pos < n ? (n - pos < want ? n - pos : want) : 0;
            for (size_t i = 0; i < got; i++) {
                if (rle4) {
                    PUT(d[pos + i] >> 4);
                    PUT(d[pos + i] & 15);
                } else {
                    PUT(d[pos + i]);
                }
            }
            pos += got;
            if (got < want) break;
            x += byte;
            if (pos % 2 != 0) pos++; /* align to 16 bits (absolute file position) */
        }
    }
#undef PUT
    if (len < dest)
        return lv_fail(c->err, LV_ERR_FORMAT, "truncated BMP: RLE data gives %zu of %zu pixels",
                       len, dest);
    return LV_OK;
}

/* Row y of the image is file row (top_down ? y : height-1-y). */
static void bmp_rows(dec_ctx *c, const bmp_header *h, const raw_layout *l, const uint8_t *src,
                     size_t stride, const uint8_t *pal, uint8_t *idx) {
    int w = (int)h->width, ht = (int)h->height;
    for (int fy = 0; fy < ht; fy++) {
        const uint8_t *row = src + (size_t)fy * stride;
        int y = h->top_down ? fy : ht - 1 - fy;
        uint8_t *dst = c->out->rgb + (size_t)y * w * 3;
        switch (l->kind) {
            case RAW_BIT1:
                cvt_bit1(dst, row, w);
                break;
            case RAW_GRAY:
                cvt_l(dst, row, w);
                break;
            case RAW_BGR15:
                cvt_bgr15(dst, row, w);
                break;
            case RAW_BGR16:
                cvt_bgr16(dst, row, w);
                break;
            case RAW_BYTES:
                cvt_bytes(dst, row, w, l->step, l->r, l->g, l->b);
                break;
            case RAW_INDEX:
                cvt_unpack(idx, row, w, l->bits);
                cvt_palette(dst, idx, w, pal);
                break;
        }
    }
}

lv_status dec_bmp(dec_ctx *c) {
    bmp_header h = {0};
    lv_status st = bmp_header_read(c, &h);
    if (st != LV_OK) return st;
    c->info->width = (int)(h.width > 0x7fffffff ? 0x7fffffff : h.width);
    c->info->height = (int)(h.height > 0x7fffffff ? 0x7fffffff : h.height);

    /* Mode and raw layout from the bit depth (BIT2MODE), then compression. */
    const char *mode;
    raw_layout l = {0};
    switch (h.bits) {
        case 1:
        case 4:
        case 8:
            mode = "P", l.kind = RAW_INDEX, l.bits = (int)h.bits;
            break;
        case 16:
            mode = "RGB", l.kind = RAW_BGR15, l.bits = 16;
            break;
        case 24:
            mode = "RGB", l = (raw_layout){RAW_BYTES, 24, 3, 2, 1, 0};
            break;
        case 32:
            mode = "RGB", l = (raw_layout){RAW_BYTES, 32, 4, 2, 1, 0};
            break;
        default:
            return lv_fail(c->err, LV_ERR_UNSUPPORTED, "unsupported BMP pixel depth (%u)", h.bits);
    }
    bool rle = false;
    if (h.compression == BMP_BITFIELDS) {
        size_t i = 0;
        for (; i < LV_ARRAY_LEN(mask_table); i++) {
            if ((uint32_t)mask_table[i].bits != h.bits || mask_table[i].r != h.masks[0] ||
                mask_table[i].g != h.masks[1] || mask_table[i].b != h.masks[2])
                continue;
            if (h.bits == 32 && mask_table[i].a != h.masks[3]) continue;
            break;
        }
        if (i == LV_ARRAY_LEN(mask_table))
            return lv_fail(c->err, LV_ERR_UNSUPPORTED,
                           "unsupported BMP bitfields layout (%u bits, masks %08x %08x %08x %08x)",
                           h.bits, h.masks[0], h.masks[1], h.masks[2], h.masks[3]);
        const char *rm = mask_table[i].rawmode;
        if (h.bits == 16)
            l.kind = !strcmp(rm, "BGR;16") ? RAW_BGR16 : RAW_BGR15;
        else
            l.r = mask_table[i].rr, l.g = mask_table[i].gg, l.b = mask_table[i].bb;
        if (strchr(rm, 'A')) mode = "RGBA";
    } else if (h.compression == BMP_RLE8 || h.compression == BMP_RLE4) {
        rle = true;
    } else if (h.compression != BMP_RAW) {
        return lv_fail(c->err, LV_ERR_UNSUPPORTED, "unsupported BMP compression (%u)",
                       h.compression);
    }

    /* Palette: "1" or "L" when it is the black/white pair or the gray ramp. */
    uint8_t pal[768] = {0};
    if (!strcmp(mode, "P")) {
        if (h.colors == 0 || h.colors > 65536)
            return lv_fail(c->err, LV_ERR_UNSUPPORTED, "unsupported BMP palette size (%llu)",
                           (unsigned long long)h.colors);
        size_t want = (size_t)h.colors * (size_t)h.padding;
        size_t have = h.palette_off < c->len ? c->len - h.palette_off : 0;
        if (have > want) have = want;
        const uint8_t *p = c->data + h.palette_off;
        bool gray = true;
        for (uint64_t i = 0; i < h.colors && gray; i++) {
            uint8_t v = h.colors == 2 ? (i ? 255 : 0) : (uint8_t)i;
            size_t at = (size_t)i * (size_t)h.padding;
            gray = at + 3 <= have && p[at] == v && p[at + 1] == v && p[at + 2] == v;
        }
        if (gray) {
            mode = h.colors == 2 ? "1" : "L";
            l = (raw_layout){
                h.colors == 2 ? RAW_BIT1 : RAW_GRAY, h.colors == 2 ? 1 : 8, 0, 0, 0, 0};
        } else {
            size_t entries = have / (size_t)h.padding;
            if (entries > 256)
                return lv_fail(c->err, LV_ERR_UNSUPPORTED,
                               "unsupported BMP palette size (%zu entries)", entries);
            for (size_t i = 0; i < entries; i++) { /* BGR(X) -> RGB */
                pal[3 * i] = p[i * h.padding + 2];
                pal[3 * i + 1] = p[i * h.padding + 1];
                pal[3 * i + 2] = p[i * h.padding];
            }
        }
    }
    dec_set_mode(c, mode);
    st = dec_check_size(c, h.width, h.height);
    if (st != LV_OK) return st;
    if (rle && l.kind != RAW_INDEX && l.kind != RAW_GRAY)
        return lv_fail(c->err, LV_ERR_UNSUPPORTED, "unsupported BMP: RLE with mode %s", mode);

    size_t w = (size_t)h.width, ht = (size_t)h.height;
    uint8_t *idx = NULL, *row = NULL;
    if (rle) { /* indices for the whole image, then rows of them */
        idx = malloc(w * ht);
        row = malloc(w);
        if (!idx || !row) goto nomem;
        if ((st = rle_decode(c, &h, idx)) != LV_OK) goto done;
        if ((st = dec_alloc_rgb(c, (int)w, (int)ht)) != LV_OK) goto done;
        raw_layout l8 = l;
        l8.bits = 8; /* the RLE decoder hands over one byte per pixel */
        bmp_rows(c, &h, &l8, idx, w, pal, row);
        goto done;
    }
    uint64_t stride = ((h.width * h.bits + 31) >> 3) & ~(uint64_t)3;
    uint64_t row_bytes = (h.width * (uint64_t)l.bits + 7) / 8;
    if (stride < row_bytes) {
        st = lv_fail(c->err, LV_ERR_FORMAT, "corrupt BMP: rows of %llu bytes hold %llu",
                     (unsigned long long)stride, (unsigned long long)row_bytes);
        goto done;
    }
    if (h.offset > c->len || (ht - 1) * stride + row_bytes > c->len - h.offset) {
        st = lv_fail(c->err, LV_ERR_FORMAT, "truncated BMP: %llu bytes of pixels, %llu needed",
                     (unsigned long long)(h.offset > c->len ? 0 : c->len - h.offset),
                     (unsigned long long)((ht - 1) * stride + row_bytes));
        goto done;
    }
    if (!(row = malloc(w))) goto nomem;
    if ((st = dec_alloc_rgb(c, (int)w, (int)ht)) != LV_OK) goto done;
    bmp_rows(c, &h, &l, c->data + h.offset, (size_t)stride, pal, row);
    goto done;
nomem:
    st = lv_fail(c->err, LV_ERR_NOMEM, "out of memory for a %zux%zu BMP", w, ht);
done:
    free(idx);
    free(row);
    return st;
}
