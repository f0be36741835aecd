/*
 * exif.c - the EXIF (and XMP) Orientation as Pillow's Image.getexif()
 * reports it to ImageOps.exif_transpose.
 *
 * FORMAT. An EXIF blob is a little TIFF file, optionally preceded by
 * "Exif\0\0" (JPEG APP1 keeps it, PNG eXIf and WebP EXIF usually do not;
 * Pillow's Exif.load strips every leading copy):
 *
 *     offset 0  byte order  "II" little endian, "MM" big endian
 *            2  magic       42 (Pillow accepts "II*\0", "MM\0*", "MM*\0", "II\0*")
 *            4  u32         offset of IFD0
 *     IFD:      u16 count, then count 12-byte entries, then u32 next IFD
 *     entry:    u16 tag, u16 type, u32 count, 4 bytes: the value when
 *               count * size(type) <= 4, else a u32 offset to it
 *
 * Orientation is tag 0x0112 in IFD0. How Pillow reads it
 * (TiffImagePlugin.ImageFileDirectory_v2.load and _setitem):
 *   - entries are read until the data ends; a cut entry, or one whose
 *     out-of-line data lies past the end (ImageFile._safe_read raises
 *     OSError, which load() catches), ends the IFD but keeps the tags read
 *     before it; a later duplicate replaces an earlier one;
 *   - entries of an unknown type or with count 0 are skipped (as if absent);
 *   - Orientation is declared with one value, so only the first of several is kept;
 *   - BYTE/UNDEFINED load as bytes and ASCII as str: present, but never equal to
 *     2..8, so nothing is transposed; SHORT, LONG, the signed ints, LONG8, IFD,
 *     FLOAT, DOUBLE and RATIONAL compare by numeric value (6, 6.0 and 12/2 all
 *     rotate; n/0 is NaN).
 * Where Pillow raises instead (a header that is not TIFF, BigTIFF), the
 * blob is treated as having no Orientation.
 *
 * XMP (Image.getexif, only when the EXIF has no Orientation tag): the first
 * match of the regex  tiff:Orientation(="|>)([0-9])  in the packet.
 */
#include "image/decode_internal.h"

#include <string.h>

typedef struct {
    const uint8_t *d; /* TIFF data (after any "Exif\0\0") */
    size_t n;         /* bytes */
    bool le;          /* little endian */
} tiff;

static uint32_t rd16(const tiff *t, const uint8_t *p) {
    return t->le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 : (uint32_t)p[0] << 8 | p[1];
}

static uint32_t rd32(const tiff *t, const uint8_t *p) {
    return t->le
               ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
               : (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t rd64(const tiff *t, const uint8_t *p) {
    uint64_t a = rd32(t, p), b = rd32(t, p + 4);
    return t->le ? a | b << 32 : a << 32 | b;
}

/* Bytes per value of a TIFF type Pillow can load; 0 for unknown types. */
static int type_size(uint32_t type) {
    switch (type) {
        case 1:
        case 2:
        case 6:
        case 7:
            return 1; /* BYTE ASCII SBYTE UNDEFINED */
        case 3:
        case 8:
            return 2; /* SHORT SSHORT */
        case 4:
        case 9:
        case 11:
        case 13:
            return 4; /* LONG SLONG FLOAT IFD */
        case 5:
        case 10:
        case 12:
        case 16:
            return 8; /* RATIONAL SRATIONAL DOUBLE LONG8 */
        default:
            return 0;
    }
}

static bool tiff_open(const uint8_t *blob, size_t len, tiff *t, uint32_t *ifd0) {
    while (len >= 6 && memcmp(blob, "Exif\0\0", 6) == 0) blob += 6, len -= 6;
    if (len < 8) return false;
    if (memcmp(blob, "II*\0", 4) && memcmp(blob, "MM\0*", 4) && memcmp(blob, "MM*\0", 4) &&
        memcmp(blob, "II\0*", 4))
        return false; /* not TIFF, or BigTIFF: Pillow raises */
    t->d = blob;
    t->n = len;
    t->le = blob[0] == 'I';
    *ifd0 = rd32(t, blob + 4);
    return true;
}

/* Finds the last usable IFD0 entry for tag; *type and *val (its first value's
 * bytes, at least 8 available) describe it. */
static bool ifd0_find(const tiff *t, uint32_t ifd, uint16_t tag, uint32_t *type,
                      const uint8_t **val) {
    if ((uint64_t)ifd + 2 > t->n) return false;
    uint32_t count = rd16(t, t->d + ifd);
    bool found = false;
    for (uint32_t i = 0; i < count; i++) {
        uint64_t e = (uint64_t)ifd + 2 + (uint64_t)i * 12;
        if (e + 12 > t->n) break; /* cut entry: keep what was read */
        const uint8_t *p = t->d + e;
        uint32_t ty = rd16(t, p + 2);
        uint64_t size = (uint64_t)rd32(t, p + 4) * (uint64_t)type_size(ty);
        if (size == 0) continue; /* unknown type or no values: skipped */
        const uint8_t *v = p + 8;
        if (size > 4) { /* every entry's data is read, whatever its tag */
            uint32_t off = rd32(t, p + 8);
            if ((uint64_t)off + size > t->n) break; /* _safe_read raises: the IFD ends here */
            v = t->d + off;
        }
        if (rd16(t, p) != tag) continue;
        *type = ty;
        *val = v;
        found = true;
    }
    return found;
}

int exif_orientation(const uint8_t *blob, size_t len) {
    tiff t;
    uint32_t ifd = 0, type = 0;
    const uint8_t *v = NULL;
    if (!tiff_open(blob, len, &t, &ifd)) return -1;
    if (!ifd0_find(&t, ifd, 0x0112, &type, &v)) return -1;
    double x; /* the value as Python would compare it to the ints 2..8 */
    switch (type) {
        case 3:
            x = rd16(&t, v);
            break;
        case 8:
            x = (int16_t)rd16(&t, v);
            break;
        case 4:
        case 13:
            x = rd32(&t, v);
            break;
        case 9:
            x = (int32_t)rd32(&t, v);
            break;
        case 6:
            x = (int8_t)v[0];
            break;
        case 16:
            x = (double)rd64(&t, v);
            break;
        case 11: {
            uint32_t bits = rd32(&t, v);
            float f;
            memcpy(&f, &bits, sizeof f);
            x = f;
            break;
        }
        case 12: {
            uint64_t bits = rd64(&t, v);
            memcpy(&x, &bits, sizeof x);
            break;
        }
        case 5:
        case 10: {
            int64_t num = type == 5 ? (int64_t)rd32(&t, v) : (int64_t)(int32_t)rd32(&t, v);
            int64_t den = type == 5 ? (int64_t)rd32(&t, v + 4) : (int64_t)(int32_t)rd32(&t, v + 4);
            if (den == 0 || num % den != 0) return 0;
            x = (double)(num / den);
            break;
        }
        default:
            return 0; /* bytes or str: present, never equal to an int */
    }
    for (int o = 1; o <= 8; o++)
        if (x == (double)o) return o;
    return 0;
}

bool tiff_find_uint(const uint8_t *blob, size_t len, uint16_t tag, uint64_t *value) {
    tiff t;
    uint32_t ifd = 0, type = 0;
    const uint8_t *v = NULL;
    if (!tiff_open(blob, len, &t, &ifd) || !ifd0_find(&t, ifd, tag, &type, &v)) return false;
    switch (type) {
        case 3:
            *value = rd16(&t, v);
            return true;
        case 4:
        case 13:
            *value = rd32(&t, v);
            return true;
        case 16:
            *value = rd64(&t, v);
            return true;
        default:
            return false;
    }
}

int xmp_orientation(const uint8_t *xmp, size_t len) {
    static const char key[] = "tiff:Orientation";
    const size_t k = sizeof key - 1;
    for (size_t i = 0; i + k < len; i++) {
        if (xmp[i] != 't' || memcmp(xmp + i, key, k) != 0) continue;
        size_t j = i + k;
        if (j + 2 < len && xmp[j] == '=' && xmp[j + 1] == '"')
            j += 2;
        else if (j + 1 < len && xmp[j] == '>')
            j += 1;
        else
            continue;
        if (xmp[j] >= '0' && xmp[j] <= '9') {
            int o = xmp[j] - '0';
            return o >= 1 && o <= 8 ? o : 0;
        }
    }
    return -1;
}
