/* test_smolvlm_video_file.c - video files for SmolVLM2
 * (engine/request_video_file.c). The videos are made here with
 * libavcodec's MPEG-4 encoder in an AVI container: grey frames whose
 * luma encodes the frame number, so the decoded pixels say which frames were
 * kept. Checked: the sampling indices and timestamps of sample_frames'
 * rule through decoding (a short video; a long one that skips its first
 * and last second), the prompt (duration, frame count, stamps), the limits,
 * corrupt and truncated files, the refusal of a model without video, and
 * llava-cli --video. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/base64.h"
#include "base/buf.h"
#include "base/file.h"
#include "engine/request_video.h"
#include "model/llava.h"
#include "server_harness.h"
#include "testutil.h"

#include <jansson.h>
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char g_smol[1024], g_idef[1024], g_dir[1024];

/* n grey frames of w x h at fps, luma 16 + step * i, into path (AVI, MPEG-4). */
static void write_video(const char *path, int w, int h, int n, int fps, int step) {
    AVFormatContext *oc = NULL;
    assert_true(avformat_alloc_output_context2(&oc, NULL, "avi", path) >= 0);
    const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_MPEG4);
    assert_non_null(codec);
    AVStream *st = avformat_new_stream(oc, NULL);
    AVCodecContext *enc = avcodec_alloc_context3(codec);
    enc->width = w;
    enc->height = h;
    enc->time_base = (AVRational){1, fps};
    enc->framerate = (AVRational){fps, 1};
    enc->pix_fmt = AV_PIX_FMT_YUV420P;
    enc->gop_size = 12;
    enc->max_b_frames = 0;
    enc->flags |= AV_CODEC_FLAG_QSCALE;
    enc->global_quality = FF_QP2LAMBDA * 2;
    if (oc->oformat->flags & AVFMT_GLOBALHEADER) enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    assert_true(avcodec_open2(enc, codec, NULL) >= 0);
    assert_true(avcodec_parameters_from_context(st->codecpar, enc) >= 0);
    st->time_base = enc->time_base;
    assert_true(avio_open(&oc->pb, path, AVIO_FLAG_WRITE) >= 0);
    assert_true(avformat_write_header(oc, NULL) >= 0);
    AVFrame *fr = av_frame_alloc();
    AVPacket *pkt = av_packet_alloc();
    fr->format = enc->pix_fmt;
    fr->width = w;
    fr->height = h;
    assert_true(av_frame_get_buffer(fr, 0) >= 0);
    for (int i = 0; i <= n; i++) {
        if (i < n) {
            assert_true(av_frame_make_writable(fr) >= 0);
            for (int y = 0; y < h; y++) memset(fr->data[0] + y * fr->linesize[0], 16 + step * i, w);
            for (int y = 0; y < h / 2; y++) {
                memset(fr->data[1] + y * fr->linesize[1], 128, w / 2);
                memset(fr->data[2] + y * fr->linesize[2], 128, w / 2);
            }
            fr->pts = i;
        }
        assert_true(avcodec_send_frame(enc, i < n ? fr : NULL) >= 0);
        while (avcodec_receive_packet(enc, pkt) >= 0) {
            av_packet_rescale_ts(pkt, enc->time_base, st->time_base);
            pkt->stream_index = st->index;
            assert_true(av_interleaved_write_frame(oc, pkt) >= 0);
        }
    }
    assert_true(av_write_trailer(oc) >= 0);
    av_packet_free(&pkt);
    av_frame_free(&fr);
    avcodec_free_context(&enc);
    avio_closep(&oc->pb);
    avformat_free_context(oc);
}

static char *read_all(const char *path, size_t *len) {
    char *b;
    assert_int_equal(lv_read_file(path, 1u << 26, &b, len, NULL), LV_OK);
    return b;
}

static char g_short[1200], g_long[1200];

static int setup(void **state) {
    (void)state;
    snprintf(g_short, sizeof g_short, "%s/short.avi", g_dir);
    snprintf(g_long, sizeof g_long, "%s/long.avi", g_dir);
    write_video(g_short, 64, 48, 35, 10, 6); /* 3.5 s */
    write_video(g_long, 32, 32, 140, 2, 1);  /* 70 s */
    return 0;
}

/* The decoded frame's red mean, back to the frame number it was made from. */
static int frame_number(const img_rgb *im, int step) {
    long sum = 0;
    for (int i = 0; i < im->w * im->h; i++) sum += im->rgb[i * 3];
    double r = (double)sum / (im->w * im->h);
    return (int)((r * 219.0 / 255.0) / step + 0.5); /* limited-range luma */
}

static void short_video(void **state) {
    (void)state;
    size_t len;
    char *bytes = read_all(g_short, &len);
    img_rgb frames[64];
    int n = 0;
    request_video v;
    lv_err err = {{0}};
    /* 35 frames at 10 fps: 3.5 s; round(1 * 3.5) = 4 frames (half to even: 4);
     * linspace(0, 34, 4) = 0, 11.3, 22.7, 34 */
    if (video_decode_sampled((const uint8_t *)bytes, len, 1, 64, NULL, frames, &n, &v, &err))
        fail_msg("%s", err.msg);
    static const int want[] = {0, 11, 22, 34};
    assert_int_equal(n, 4);
    assert_int_equal(v.n_frames, 4);
    assert_int_equal(v.duration_s, 3);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(frames[i].w, 64);
        assert_int_equal(frames[i].h, 48);
        assert_int_equal(frame_number(&frames[i], 6), want[i]);
        assert_true(fabs(v.timestamps[i] - want[i] / 10.0) < 1e-9);
        img_rgb_free(&frames[i]);
    }
    lv_buf b = {0};
    assert_int_equal(video_prompt_text(&v, 0, &b, &err), LV_OK);
    assert_string_equal(b.data, "You are provided the following series of four frames from a "
                                "0:00:03 [H:MM:SS] video.\n\nFrame from 00:00:<image>\nFrame from "
                                "00:01:<image>\nFrame from 00:02:<image>\nFrame from "
                                "00:03:<image>\n\n");
    lv_buf_free(&b);
    request_video_free(&v);

    /* limits */
    video_limits lim;
    video_limits_default(&lim);
    lim.max_side = 32;
    assert_int_equal(
        video_decode_sampled((const uint8_t *)bytes, len, 1, 64, &lim, frames, &n, &v, &err),
        LV_ERR_TOO_LARGE);
    video_limits_default(&lim);
    lim.max_total_frames = 20;
    assert_int_equal(
        video_decode_sampled((const uint8_t *)bytes, len, 1, 64, &lim, frames, &n, &v, &err),
        LV_ERR_TOO_LARGE);
    assert_int_equal(n, 0);
    free(bytes);
}

static void long_video_skips_ends(void **state) {
    (void)state;
    size_t len;
    char *bytes = read_all(g_long, &len);
    img_rgb frames[64];
    int n = 0;
    request_video v;
    lv_err err = {{0}};
    /* 140 frames at 2 fps: 70 s; 70 - 2 > 64: start int(1 * 2) = 2, end
     * int(140 - 2) = 138; 64 frames of linspace(2, 138, 64) */
    if (video_decode_sampled((const uint8_t *)bytes, len, 1, 64, NULL, frames, &n, &v, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(n, 64);
    assert_int_equal(v.duration_s, 70);
    int64_t idx[64];
    assert_int_equal(video_linspace_unique(2, 138, 64, idx), 64);
    for (int i = 0; i < 64; i++) {
        assert_true(fabs(v.timestamps[i] - idx[i] / 2.0) < 1e-9);
        assert_int_equal(frame_number(&frames[i], 1) / 2, (int)idx[i] / 2); /* step 1: +-1 */
        img_rgb_free(&frames[i]);
    }
    assert_true(fabs(v.timestamps[0] - 1.0) < 1e-9);
    assert_true(fabs(v.timestamps[63] - 69.0) < 1e-9);
    request_video_free(&v);
    free(bytes);
}

static void corrupt_files(void **state) {
    (void)state;
    size_t len;
    char *bytes = read_all(g_short, &len);
    img_rgb frames[64];
    int n = 0;
    request_video v;
    lv_err err = {{0}};
    uint8_t junk[4096];
    uint64_t seed = 7;
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)tu_splitmix64(&seed);
    assert_int_equal(video_decode_sampled(junk, sizeof junk, 1, 64, NULL, frames, &n, &v, &err),
                     LV_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "video"));
    assert_int_equal(video_decode_sampled(NULL, 0, 1, 64, NULL, frames, &n, &v, &err),
                     LV_ERR_FORMAT);
    /* the header cut short */
    assert_int_equal(
        video_decode_sampled((const uint8_t *)bytes, 200, 1, 64, NULL, frames, &n, &v, &err),
        LV_ERR_FORMAT);
    /* cut anywhere, or the data garbled: a clear error or what decodes, never a crash */
    for (size_t cut = 300; cut < len; cut += len / 7) {
        lv_status st =
            video_decode_sampled((const uint8_t *)bytes, cut, 1, 64, NULL, frames, &n, &v, &err);
        assert_true(st == LV_OK || st == LV_ERR_FORMAT);
        if (st == LV_OK) {
            assert_true(n >= 1 && n <= 4);
            for (int i = 0; i < n; i++) img_rgb_free(&frames[i]);
            request_video_free(&v);
        }
    }
    for (size_t i = len / 3; i < len; i += 97) bytes[i] = (char)tu_splitmix64(&seed);
    lv_status st =
        video_decode_sampled((const uint8_t *)bytes, len, 1, 64, NULL, frames, &n, &v, &err);
    assert_true(st == LV_OK || st == LV_ERR_FORMAT);
    for (int i = 0; st == LV_OK && i < n; i++) img_rgb_free(&frames[i]);
    request_video_free(&v);
    free(bytes);
}

static void model_and_cli(void **state) {
    (void)state;
    size_t len;
    char *bytes = read_all(g_short, &len);
    llava *m;
    lv_err err = {{0}};
    if (llava_open(g_smol, &m, &err)) fail_msg("%s", err.msg);
    img_tensor frames[64];
    int n = 0, n_tok = 0;
    request_video v;
    if (request_video_from_bytes(m, (const uint8_t *)bytes, len, frames, &n, &n_tok, &v, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(n, 4);
    assert_int_equal(n_tok, 16);
    int32_t *ids;
    size_t n_ids;
    assert_int_equal(request_video_prompt_ids(m, "What happens?", &v, frames, &ids, &n_ids, &err),
                     LV_OK);
    int n_image = 0;
    for (size_t i = 0; i < n_ids; i++) n_image += ids[i] == llava_image_token_id(m);
    assert_int_equal(n_image, 16);
    free(ids);
    for (int i = 0; i < n; i++) img_tensor_free(&frames[i]);
    request_video_free(&v);
    llava_free(m);

    if (llava_open(g_idef, &m, &err)) fail_msg("%s", err.msg);
    assert_int_equal(
        request_video_from_bytes(m, (const uint8_t *)bytes, len, frames, &n, &n_tok, &v, &err),
        LV_ERR_UNSUPPORTED);
    llava_free(m);
    free(bytes);

    char cmd[4096], *out = NULL;
    snprintf(cmd, sizeof cmd,
             "%s/llava-cli --model %s --video %s --prompt 'What happens?' --max-tokens 4 "
             "--temperature 0 --json 2>/dev/null",
             tu_env("LLAVA_BIN_DIR"), g_smol, g_short);
    assert_int_equal(tu_run(cmd, &out), 0);
    assert_non_null(strstr(out, "\"n_image_tokens\":16"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s/llava-cli --model %s --video %s/missing.avi --prompt x 2>&1",
             tu_env("LLAVA_BIN_DIR"), g_smol, g_dir);
    assert_int_equal(tu_run(cmd, &out), 1);
    assert_non_null(strstr(out, "missing.avi"));
    free(out);
}

/* The server's video_url (a file:// path and a data: URI) gives llava-cli
 * --video's answer; a corrupt video is a 400. */
static void server_video_url(void **state) {
    (void)state;
    char log[1200];
    snprintf(log, sizeof log, "%s/server.log", g_dir);
    srv s;
    const char *argv[] = {"--model", g_smol, "--port", "0", "--allowed-local-media-path",
                          g_dir,     NULL};
    assert_true(srv_start(&s, log, argv, NULL));
    assert_true(srv_wait_healthy(&s, 60));
    char cmd[4096], *cli = NULL;
    snprintf(cmd, sizeof cmd,
             "%s/llava-cli --model %s --video %s --prompt 'What happens?' --max-tokens 6 "
             "--temperature 0 --json 2>/dev/null",
             tu_env("LLAVA_BIN_DIR"), g_smol, g_short);
    assert_int_equal(tu_run(cmd, &cli), 0);
    json_t *c = json_loads(cli, 0, NULL);
    assert_non_null(c);
    size_t len;
    char *bytes = read_all(g_short, &len), *b64;
    assert_int_equal(lv_base64_encode((const uint8_t *)bytes, len, &b64, NULL), LV_OK);
    char *data = malloc(strlen(b64) + 64), file[1300];
    sprintf(data, "data:video/x-msvideo;base64,%s", b64);
    snprintf(file, sizeof file, "file://%s", g_short);
    const char *urls[] = {file, data};
    for (int k = 0; k < 2; k++) {
        json_t *o = json_pack("{s:i,s:f,s:[{s:s,s:[{s:s,s:{s:s}},{s:s,s:s}]}]}", "max_tokens", 6,
                              "temperature", 0.0, "messages", "role", "user", "content", "type",
                              "video_url", "video_url", "url", urls[k], "type", "text", "text",
                              "What happens?");
        char *body = json_dumps(o, JSON_COMPACT), *out = NULL;
        json_decref(o);
        long code =
            srv_http(&s, "POST", "/v1/chat/completions", body, strlen(body), NULL, NULL, &out);
        if (code != 200) fail_msg("%s: %ld %s", k ? "data:" : "file://", code, out ? out : "");
        json_t *got = json_loads(out, 0, NULL);
        json_t *msg =
            json_object_get(json_array_get(json_object_get(got, "choices"), 0), "message");
        assert_string_equal(json_string_value(json_object_get(msg, "content")),
                            json_string_value(json_object_get(c, "text")));
        assert_int_equal(
            json_integer_value(json_object_get(json_object_get(got, "usage"), "prompt_tokens")),
            json_integer_value(json_object_get(c, "n_prompt_tokens")));
        json_decref(got);
        free(out);
        free(body);
    }
    /* corrupt: the AVI cut after its header */
    free(b64);
    assert_int_equal(lv_base64_encode((const uint8_t *)bytes, 200, &b64, NULL), LV_OK);
    sprintf(data, "data:video/x-msvideo;base64,%s", b64);
    json_t *o = json_pack("{s:[{s:s,s:[{s:s,s:{s:s}}]}]}", "messages", "role", "user", "content",
                          "type", "video_url", "video_url", "url", data);
    char *body = json_dumps(o, JSON_COMPACT), *out = NULL;
    json_decref(o);
    assert_int_equal(
        srv_http(&s, "POST", "/v1/chat/completions", body, strlen(body), NULL, NULL, &out), 400);
    assert_non_null(strstr(out, "invalid_video"));
    free(out);
    free(body);
    assert_int_equal(srv_stop(&s), 0);
    free(b64);
    free(data);
    free(bytes);
    json_decref(c);
    free(cli);
}

int main(void) {
    snprintf(g_smol, sizeof g_smol, "%s/smolvlm/smolvlm-tiny", tu_env("LLAVA_TEST_DATA"));
    snprintf(g_idef, sizeof g_idef, "%s/smolvlm/idefics3-tiny", tu_env("LLAVA_TEST_DATA"));
    snprintf(g_dir, sizeof g_dir, "%s", tu_tmpdir("smolvlm_video_file"));
    av_log_set_level(AV_LOG_QUIET);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(short_video),      cmocka_unit_test(long_video_skips_ends),
        cmocka_unit_test(corrupt_files),    cmocka_unit_test(model_and_cli),
        cmocka_unit_test(server_video_url),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
