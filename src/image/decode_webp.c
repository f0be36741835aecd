/*
 * decode_webp.c - WebP through libwebp (+ libwebpdemux), as Pillow reads it.
 *
 * FORMAT. A RIFF container: "RIFF", u32 size (little endian), "WEBP", then
 * chunks of fourcc, u32 size, data (padded to even):
 *
 *     "VP8 "  a lossy frame (simple file)
 *     "VP8L"  a lossless frame (simple file; may carry alpha)
 *     "VP8X"  extended file: flags (ICC, alpha, EXIF, XMP, animation) and
 *             the canvas size (u24 width-1, u24 height-1); then "ICCP",
 *             "ANIM" + "ANMF" frames (each with an offset inside the canvas),
 *             or "ALPH" + "VP8 " / "VP8L"; "EXIF" and "XMP " chunks.
 *
 * PILLOW (src/PIL/WebPImagePlugin.py, src/_webp.c): every file goes through
 * WebPAnimDecoderNew(data, NULL), i.e. MODE_RGBA output, no threads,
 * libwebp's default (fancy) upsampling; mode is "RGBA" when
 * WebPGetFeatures says has_alpha, else "RGB" (raw mode "RGBX"). Frame 0 of
 * an animation is drawn on a canvas that starts transparent black, with no
 * blending, so pixels outside the first frame's rectangle are black; alpha
 * is then dropped. info["exif"] / info["xmp"] are the first "EXIF" / "XMP "
 * chunks (WebPDemuxGetChunk(..., 1)).
 *
 * Here the demuxer validates the container exactly as the animation decoder
 * does (anything it refuses, truncation included, fails). Animations are
 * decoded with WebPAnimDecoder itself. A still image is the same single
 * frame decoded onto a zero canvas that it covers entirely, so it is
 * decoded with WebPDecode straight into the RGB output (MODE_RGB gives the
 * same R, G, B as MODE_RGBA), which saves two canvas-sized buffers.
 */
#include "image/decode_internal.h"

#include <stdlib.h>
#include <string.h>

#include <webp/decode.h>
#include <webp/demux.h>

static void webp_chunk(WebPDemuxer *dmx, const char *fourcc, const uint8_t **p, size_t *n) {
    WebPChunkIterator it;
    if (WebPDemuxGetChunk(dmx, fourcc, 1, &it)) {
        *p = it.chunk.bytes;
        *n = it.chunk.size;
        WebPDemuxReleaseChunkIterator(&it);
    }
}

static lv_status webp_still(dec_ctx *c, int w, int h) {
    WebPDecoderConfig cfg;
    if (!WebPInitDecoderConfig(&cfg))
        return lv_fail(c->err, LV_ERR_FORMAT, "WebP decoder version mismatch");
    cfg.output.colorspace = MODE_RGB;
    cfg.output.is_external_memory = 1;
    cfg.output.u.RGBA.rgba = c->out->rgb;
    cfg.output.u.RGBA.stride = w * 3;
    cfg.output.u.RGBA.size = (size_t)w * h * 3;
    VP8StatusCode r = WebPDecode(c->data, c->len, &cfg);
    WebPFreeDecBuffer(&cfg.output);
    if (r == VP8_STATUS_OK) return LV_OK;
    if (r == VP8_STATUS_NOT_ENOUGH_DATA)
        return lv_fail(c->err, LV_ERR_FORMAT, "truncated WebP (not enough data)");
    if (r == VP8_STATUS_OUT_OF_MEMORY)
        return lv_fail(c->err, LV_ERR_NOMEM, "out of memory decoding WebP");
    return lv_fail(c->err, LV_ERR_FORMAT, "corrupt WebP (libwebp status %d)", (int)r);
}

static lv_status webp_anim(dec_ctx *c, int w, int h) {
    WebPData wd = {c->data, c->len};
    WebPAnimDecoder *dec = WebPAnimDecoderNew(&wd, NULL); /* as Pillow: RGBA, no threads */
    if (!dec) return lv_fail(c->err, LV_ERR_FORMAT, "corrupt WebP animation");
    uint8_t *canvas = NULL;
    int ts = 0;
    lv_status st = LV_OK;
    if (!WebPAnimDecoderGetNext(dec, &canvas, &ts))
        st = lv_fail(c->err, LV_ERR_FORMAT, "corrupt WebP animation (first frame)");
    else
        for (int y = 0; y < h; y++)
            cvt_rgba(c->out->rgb + (size_t)y * w * 3, canvas + (size_t)y * w * 4, w);
    WebPAnimDecoderDelete(dec);
    return st;
}

lv_status dec_webp(dec_ctx *c) {
    /* The header alone gives the (canvas) size: refuse a bomb before the
     * demuxer or decoder allocates anything. */
    WebPBitstreamFeatures f;
    bool have_features = WebPGetFeatures(c->data, c->len, &f) == VP8_STATUS_OK;
    if (have_features) {
        lv_status st = dec_check_size(c, (uint64_t)f.width, (uint64_t)f.height);
        if (st != LV_OK) return st;
    }
    WebPData wd = {c->data, c->len};
    WebPDemuxer *dmx = WebPDemux(&wd);
    if (!dmx) return lv_fail(c->err, LV_ERR_FORMAT, "corrupt or truncated WebP");
    uint32_t w = WebPDemuxGetI(dmx, WEBP_FF_CANVAS_WIDTH);
    uint32_t h = WebPDemuxGetI(dmx, WEBP_FF_CANVAS_HEIGHT);
    uint32_t flags = WebPDemuxGetI(dmx, WEBP_FF_FORMAT_FLAGS);
    dec_set_mode(c, !have_features || f.has_alpha ? "RGBA" : "RGB");
    c->info->width = (int)w;
    c->info->height = (int)h;
    webp_chunk(dmx, "EXIF", &c->exif, &c->exif_len);
    webp_chunk(dmx, "XMP ", &c->xmp, &c->xmp_len);
    WebPDemuxDelete(dmx); /* the chunk pointers point into c->data */

    lv_status st = dec_check_size(c, w, h);
    if (st != LV_OK) return st;
    st = dec_alloc_rgb(c, (int)w, (int)h);
    if (st != LV_OK) return st;
    if (flags & ANIMATION_FLAG) return webp_anim(c, (int)w, (int)h);
    return webp_still(c, (int)w, (int)h);
}
