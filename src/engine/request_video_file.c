/*
 * request_video_file.c - a video file's frames for SmolVLM2, through FFmpeg's
 * libavformat (demux), libavcodec (decode) and libswscale (to RGB24).
 *
 * What transformers does with a file (huggingface/transformers
 * src/transformers/video_utils.py read_video_pyav / read_video_decord, and
 * models/smolvlm/video_processing_smolvlm.py sample_frames; spec smolvlm.md
 * §10): metadata total_num_frames = the stream's frame count, fps = its
 * average rate, duration = total / fps; the indices of sample_frames
 * (video_sample_indices); the frames at those indices, in decode order;
 * timestamps index / fps. Here the frame count is the container's when it
 * has one, else the number of video packets (a first demux pass without
 * decoding); frames are decoded in order and those at the indices kept. A
 * stream that yields fewer frames than it announced keeps what it has.
 * Colour conversion is swscale's (bicubic, accurate rounding, full chroma),
 * not necessarily bit-identical to PyAV's or decord's.
 *
 * Untrusted input: the bytes are capped by the caller (the server's media
 * policy, llava-cli's VIDEO_MAX_FILE_BYTES); the frame size, the duration
 * and the frames decoded have limits (video_limits) checked before work is
 * spent on them; every FFmpeg error is a clear LV_ERR_FORMAT and everything
 * allocated is released on every path.
 */
#include "engine/request_video.h"

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

void video_limits_default(video_limits *lim) {
    lim->max_side = 8192;
    lim->max_pixels = IMG_DEFAULT_MAX_PIXELS;
    lim->max_duration_s = 4 * 3600;
    lim->max_total_frames = 200000;
}

/* The bytes as an AVIOContext (read + seek over memory). */
typedef struct {
    const uint8_t *p;
    size_t len, pos;
} membuf;

static int mem_read(void *opaque, uint8_t *buf, int n) {
    membuf *m = opaque;
    size_t left = m->len - m->pos;
    if (left == 0) return AVERROR_EOF;
    size_t k = (size_t)n < left ? (size_t)n : left;
    memcpy(buf, m->p + m->pos, k);
    m->pos += k;
    return (int)k;
}

static int64_t mem_seek(void *opaque, int64_t off, int whence) {
    membuf *m = opaque;
    whence &= ~AVSEEK_FORCE;
    if (whence == AVSEEK_SIZE) return (int64_t)m->len;
    int64_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? (int64_t)m->pos : (int64_t)m->len;
    if (whence != SEEK_SET && whence != SEEK_CUR && whence != SEEK_END) return -1;
    int64_t to = base + off;
    if (to < 0 || to > (int64_t)m->len) return -1;
    m->pos = (size_t)to;
    return to;
}

typedef struct {
    membuf mem;
    AVIOContext *io;
    AVFormatContext *fmt;
    int stream;
} demux;

static void demux_close(demux *d) {
    if (d->fmt) avformat_close_input(&d->fmt);
    if (d->io) {
        av_freep(&d->io->buffer);
        avio_context_free(&d->io);
    }
}

static lv_status av_fail(lv_err *err, int code, const char *what) {
    char msg[AV_ERROR_MAX_STRING_SIZE] = {0};
    av_strerror(code, msg, sizeof msg);
    return lv_fail(err, LV_ERR_FORMAT, "video: %s: %s", what, msg);
}

static lv_status demux_open(const uint8_t *bytes, size_t len, demux *d, lv_err *err) {
    memset(d, 0, sizeof *d);
    d->mem = (membuf){bytes, len, 0};
    d->stream = -1;
    uint8_t *buf = av_malloc(1 << 16);
    if (!buf || !(d->io = avio_alloc_context(buf, 1 << 16, 0, &d->mem, mem_read, NULL, mem_seek))) {
        av_free(buf);
        return lv_fail(err, LV_ERR_NOMEM, "video: out of memory");
    }
    if (!(d->fmt = avformat_alloc_context())) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    d->fmt->pb = d->io;
    d->fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
    int rc = avformat_open_input(&d->fmt, NULL, NULL, NULL);
    if (rc < 0) {
        d->fmt = NULL; /* freed by avformat_open_input */
        return av_fail(err, rc, "not a video file this build can read");
    }
    if ((rc = avformat_find_stream_info(d->fmt, NULL)) < 0)
        return av_fail(err, rc, "cannot read the stream information");
    rc = av_find_best_stream(d->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
    if (rc < 0) return lv_fail(err, LV_ERR_FORMAT, "video: the file has no video stream");
    d->stream = rc;
    return LV_OK;
}

/* Video packets of the stream (a demux pass, no decoding). */
static lv_status count_packets(const uint8_t *bytes, size_t len, int64_t cap, int64_t *n,
                               lv_err *err) {
    demux d;
    lv_status st = demux_open(bytes, len, &d, err);
    AVPacket *pkt = st ? NULL : av_packet_alloc();
    if (!st && !pkt) st = lv_fail(err, LV_ERR_NOMEM, "out of memory");
    *n = 0;
    while (!st && av_read_frame(d.fmt, pkt) >= 0) {
        if (pkt->stream_index == d.stream && ++*n > cap)
            st = lv_fail(err, LV_ERR_TOO_LARGE, "video: more than %lld frames", (long long)cap);
        av_packet_unref(pkt);
    }
    av_packet_free(&pkt);
    demux_close(&d);
    return st;
}

lv_status video_decode_sampled(const uint8_t *bytes, size_t len, double target_fps, int max_frames,
                               const video_limits *lim_in, img_rgb *frames, int *n_frames,
                               request_video *v, lv_err *err) {
    video_limits lim;
    if (lim_in)
        lim = *lim_in;
    else
        video_limits_default(&lim);
    *n_frames = 0;
    memset(v, 0, sizeof *v);
    if (!bytes || len == 0) return lv_fail(err, LV_ERR_FORMAT, "video: empty file");
    if (max_frames < 1) return lv_fail(err, LV_ERR_ARG, "video: max_frames %d", max_frames);
    demux d;
    AVCodecContext *dec = NULL;
    AVPacket *pkt = NULL;
    AVFrame *fr = NULL;
    struct SwsContext *sws = NULL;
    int64_t *idx = NULL;
    lv_status st = demux_open(bytes, len, &d, err);
    if (st) goto done;
    AVStream *s = d.fmt->streams[d.stream];
    const AVCodecParameters *par = s->codecpar;
    if (par->width < 1 || par->height < 1 || par->width > lim.max_side ||
        par->height > lim.max_side ||
        (uint64_t)par->width * (uint64_t)par->height > (uint64_t)lim.max_pixels) {
        st = lv_fail(err, par->width < 1 || par->height < 1 ? LV_ERR_FORMAT : LV_ERR_TOO_LARGE,
                     "video: %dx%d frames (at most %d a side, %llu pixels)", par->width,
                     par->height, lim.max_side, (unsigned long long)lim.max_pixels);
        goto done;
    }
    AVRational r = s->avg_frame_rate.num > 0 && s->avg_frame_rate.den > 0 ? s->avg_frame_rate
                                                                          : s->r_frame_rate;
    double fps = r.num > 0 && r.den > 0 ? av_q2d(r) : 0;
    if (!(fps > 0) || !isfinite(fps) || fps > 1000) {
        st = lv_fail(err, LV_ERR_FORMAT, "video: no usable frame rate (%d/%d)", r.num, r.den);
        goto done;
    }
    int64_t total = s->nb_frames;
    if (total <= 0 && (st = count_packets(bytes, len, lim.max_total_frames, &total, err)))
        goto done;
    if (total < 1) {
        st = lv_fail(err, LV_ERR_FORMAT, "video: no frames");
        goto done;
    }
    double duration = (double)total / fps;
    if (total > lim.max_total_frames || duration > lim.max_duration_s) {
        st = lv_fail(
            err, LV_ERR_TOO_LARGE, "video: %lld frames, %.0f s (at most %lld frames and %.0f s)",
            (long long)total, duration, (long long)lim.max_total_frames, lim.max_duration_s);
        goto done;
    }
    if (!(idx = malloc((size_t)max_frames * sizeof *idx))) {
        st = lv_fail(err, LV_ERR_NOMEM, "out of memory");
        goto done;
    }
    int n_idx = video_sample_indices(total, fps, duration, target_fps, max_frames, idx);

    const AVCodec *codec = avcodec_find_decoder(par->codec_id);
    if (!codec) {
        st = lv_fail(err, LV_ERR_UNSUPPORTED, "video: no decoder for codec \"%s\" in this build",
                     avcodec_get_name(par->codec_id));
        goto done;
    }
    int rc;
    if (!(dec = avcodec_alloc_context3(codec)) || !(pkt = av_packet_alloc()) ||
        !(fr = av_frame_alloc())) {
        st = lv_fail(err, LV_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((rc = avcodec_parameters_to_context(dec, par)) < 0 ||
        (rc = avcodec_open2(dec, codec, NULL)) < 0) {
        st = av_fail(err, rc, "cannot open the decoder");
        goto done;
    }
    if (!(v->timestamps = malloc((size_t)n_idx * sizeof *v->timestamps))) {
        st = lv_fail(err, LV_ERR_NOMEM, "out of memory");
        goto done;
    }
    int64_t decoded = 0;
    int want = 0; /* next entry of idx */
    bool eof = false;
    while (!st && want < n_idx && decoded < total) {
        if (!eof) {
            rc = av_read_frame(d.fmt, pkt);
            if (rc < 0) {
                eof = true;
                rc = avcodec_send_packet(dec, NULL); /* flush */
            } else if (pkt->stream_index != d.stream) {
                av_packet_unref(pkt);
                continue;
            } else {
                rc = avcodec_send_packet(dec, pkt);
                av_packet_unref(pkt);
            }
            if (rc < 0 && rc != AVERROR(EAGAIN) && rc != AVERROR_EOF) {
                st = av_fail(err, rc, "corrupt video data");
                break;
            }
        }
        for (;;) {
            rc = avcodec_receive_frame(dec, fr);
            if (rc == AVERROR(EAGAIN)) break;
            if (rc == AVERROR_EOF) {
                eof = true;
                break;
            }
            if (rc < 0) {
                st = av_fail(err, rc, "corrupt video data");
                break;
            }
            int64_t i = decoded++;
            if (want < n_idx && i == idx[want]) {
                if (fr->width != par->width || fr->height != par->height) {
                    st = lv_fail(err, LV_ERR_UNSUPPORTED,
                                 "video: the frame size changes mid-stream (%dx%d, then %dx%d)",
                                 par->width, par->height, fr->width, fr->height);
                    av_frame_unref(fr);
                    break;
                }
                sws = sws_getCachedContext(
                    sws, fr->width, fr->height, fr->format, fr->width, fr->height, AV_PIX_FMT_RGB24,
                    SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, NULL, NULL, NULL);
                img_rgb *o = &frames[want];
                o->w = fr->width;
                o->h = fr->height;
                if (!sws || !(o->rgb = malloc((size_t)o->w * (size_t)o->h * 3))) {
                    st = lv_fail(err, sws ? LV_ERR_NOMEM : LV_ERR_UNSUPPORTED,
                                 "video: cannot convert %s frames to RGB",
                                 av_get_pix_fmt_name(fr->format) ? av_get_pix_fmt_name(fr->format)
                                                                 : "?");
                    av_frame_unref(fr);
                    break;
                }
                uint8_t *dst[4] = {o->rgb, NULL, NULL, NULL};
                int stride[4] = {o->w * 3, 0, 0, 0};
                sws_scale(sws, (const uint8_t *const *)fr->data, fr->linesize, 0, fr->height, dst,
                          stride);
                v->timestamps[want] = (double)i / fps;
                want++;
                *n_frames = want;
            }
            av_frame_unref(fr);
            if (want == n_idx) break;
        }
        if (eof && (rc == AVERROR_EOF || rc == AVERROR(EAGAIN))) break; /* drained */
    }
    if (!st && *n_frames == 0) st = lv_fail(err, LV_ERR_FORMAT, "video: no frame could be decoded");
    if (!st) {
        v->n_frames = *n_frames;
        v->duration_s = (int)duration;
    }
done:
    if (st) {
        for (int i = 0; i < *n_frames; i++) img_rgb_free(&frames[i]);
        *n_frames = 0;
        request_video_free(v);
    }
    sws_freeContext(sws);
    av_frame_free(&fr);
    av_packet_free(&pkt);
    avcodec_free_context(&dec);
    free(idx);
    demux_close(&d);
    return st;
}

lv_status request_video_from_bytes(const llava *m, const uint8_t *bytes, size_t len,
                                   img_tensor *frames, int *n_frames, int *n_tokens,
                                   request_video *v, lv_err *err) {
    *n_frames = 0;
    memset(v, 0, sizeof *v);
    int max_frames = 0;
    double fps = 0;
    if (!request_video_supported(m, &max_frames, &fps, NULL))
        return lv_fail(err, LV_ERR_UNSUPPORTED, "%s", request_video_refusal(m));
    img_rgb *rgb = calloc((size_t)max_frames, sizeof *rgb);
    if (!rgb) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    int n = 0;
    lv_status st = video_decode_sampled(bytes, len, fps, max_frames, NULL, rgb, &n, v, err);
    for (int i = 0; !st && i < n; i++) {
        int t = 0;
        st = request_video_frame(m, &rgb[i], &frames[i], &t, err);
        if (st) break;
        *n_frames = i + 1;
        if (n_tokens) *n_tokens += t;
    }
    for (int i = 0; i < n; i++) img_rgb_free(&rgb[i]);
    free(rgb);
    if (st) {
        for (int i = 0; i < *n_frames; i++) img_tensor_free(&frames[i]);
        *n_frames = 0;
        request_video_free(v);
    }
    return st;
}
