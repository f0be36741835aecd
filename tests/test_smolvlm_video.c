/* test_smolvlm_video.c - SmolVLM2's video input (engine/request_video.h).
 *
 * The expected strings are written from huggingface/transformers:
 *   src/transformers/models/smolvlm/video_processing_smolvlm.py
 *     DEFAULT_VIDEO_INTRO = "You are provided the following series of
 *       {frame_count} frames from a {video_duration} [H:MM:SS] video.\n"
 *     DEFAULT_MEDIA_OUTTRO = "\n\n"
 *     FRAME_TIMESTAMP_MESSAGE = "\nFrame from {timestamp}:"
 *     sample_frames (the rule checked in sample_indices below)
 *   src/transformers/models/smolvlm/processing_smolvlm.py
 *     _prompt_single_image: F + G + I * image_seq_len + F
 *     expand_text_with_video_tokens: fps None -> 24; timestamps
 *       f"{int(s // 60):02d}:{int(s % 60):02d}"; duration int(duration) or
 *       int(timestamps[-1]); str(timedelta(seconds=duration)); frame_count
 *       num2words(num_frames)
 *     DEFAULT_CHAT_TEMPLATE: a 'video' item renders "<video>"; ":" without a
 *       space only when the first item is an 'image'.
 * tests/data/smolvlm/smolvlm-tiny (image_seq_len 4, T 64) is SmolVLM2 with
 * video_sampling; idefics3-tiny (SmolVLM v1) takes no video. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/buf.h"
#include "engine/request.h"
#include "engine/request_video.h"
#include "image/decode.h"
#include "io/hf_config.h"
#include "model/llava.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char g_smol[1024], g_idef[1024], g_samples[1024];

#define F  "<fake_token_around_image>"
#define G  "<global-img>"
#define I4 "<image><image><image><image>"

static void num2words(void **state) {
    (void)state;
    static const struct {
        int n;
        const char *w;
    } cases[] = {{0, "zero"},           {1, "one"},           {3, "three"},
                 {8, "eight"},          {13, "thirteen"},     {20, "twenty"},
                 {21, "twenty-one"},    {40, "forty"},        {64, "sixty-four"},
                 {99, "ninety-nine"},   {100, "one hundred"}, {105, "one hundred and five"},
                 {1000, "one thousand"}};
    char buf[128];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        assert_int_equal(video_num2words(cases[i].n, buf, sizeof buf), (int)strlen(cases[i].w));
        assert_string_equal(buf, cases[i].w);
    }
    assert_int_equal(video_num2words(-1, buf, sizeof buf), -1);
    assert_int_equal(video_num2words(64, buf, 4), -1);
}

/* The video of n frames given as a list at fps (0: the default 24). */
static void frames_video(int n, double fps, int max_frames, request_video *v, int64_t *keep,
                         int *n_keep) {
    lv_err err = {{0}};
    assert_int_equal(video_from_frame_list(n, fps, max_frames, keep, n_keep, v, &err), LV_OK);
}

static char *text_of(const request_video *v, int seq) {
    lv_buf b = {0};
    lv_err err = {{0}};
    assert_int_equal(video_prompt_text(v, seq, &b, &err), LV_OK);
    return b.data;
}

static void prompt_strings(void **state) {
    (void)state;
    request_video v;
    int64_t keep[64];
    int nk;
    /* one frame, no fps: 24 assumed, t = 0, duration int(0) */
    frames_video(1, 0, 64, &v, keep, &nk);
    char *s = text_of(&v, 4);
    assert_string_equal(s, "You are provided the following series of one frames from a 0:00:00 "
                           "[H:MM:SS] video.\n"
                           "\nFrame from 00:00:" F G I4 F "\n\n");
    free(s);
    s = text_of(&v, 0);
    assert_string_equal(s, "You are provided the following series of one frames from a 0:00:00 "
                           "[H:MM:SS] video.\n\nFrame from 00:00:<image>\n\n");
    free(s);
    request_video_free(&v);

    /* three frames at 1 fps: 0, 1, 2 s; duration int(2) */
    frames_video(3, 1, 64, &v, keep, &nk);
    s = text_of(&v, 4);
    assert_string_equal(s, "You are provided the following series of three frames from a 0:00:02 "
                           "[H:MM:SS] video.\n"
                           "\nFrame from 00:00:" F G I4 F "\nFrame from 00:01:" F G I4 F
                           "\nFrame from 00:02:" F G I4 F "\n\n");
    free(s);
    request_video_free(&v);
}

/* N = 1, 3, 8, 64 frames at 1 fps, built frame by frame; more than 64. */
static void prompt_strings_n(void **state) {
    (void)state;
    static const int ns[] = {1, 3, 8, 64};
    static const char *words[] = {"one", "three", "eight", "sixty-four"};
    for (int c = 0; c < 4; c++) {
        int n = ns[c];
        request_video v;
        int64_t keep[64];
        int nk;
        frames_video(n, 1, 64, &v, keep, &nk);
        assert_int_equal(nk, n);
        char want[16384];
        int o = snprintf(want, sizeof want,
                         "You are provided the following series of %s frames from a 0:%02d:%02d "
                         "[H:MM:SS] video.\n",
                         words[c], (n - 1) / 60, (n - 1) % 60);
        for (int i = 0; i < n; i++)
            o += snprintf(want + o, sizeof want - (size_t)o, "\nFrame from %02d:%02d:" F G I4 F,
                          i / 60, i % 60);
        snprintf(want + o, sizeof want - (size_t)o, "\n\n");
        char *s = text_of(&v, 4);
        assert_string_equal(s, want);
        free(s);
        request_video_free(&v);
    }
    /* 8 frames at the default 24 fps: every stamp 00:00, duration 0:00:00 */
    request_video v;
    int64_t keep[64];
    int nk;
    frames_video(8, 0, 64, &v, keep, &nk);
    char *s = text_of(&v, 0);
    assert_non_null(strstr(s, "series of eight frames from a 0:00:00 [H:MM:SS] video.\n"));
    assert_null(strstr(s, "00:01"));
    free(s);
    request_video_free(&v);
    /* 2 minutes at 1 fps, 64 frames max: 121 frames thinned to 64 evenly */
    frames_video(121, 1, 64, &v, keep, &nk);
    assert_int_equal(nk, 64);
    assert_int_equal(keep[0], 0);
    assert_int_equal(keep[1], 1); /* int(120 / 63) */
    assert_int_equal(keep[2], 3); /* int(2 * 1.904...) */
    assert_int_equal(keep[63], 120);
    s = text_of(&v, 0);
    assert_non_null(strstr(s, "series of sixty-four frames from a 0:02:00 [H:MM:SS] video.\n"));
    assert_non_null(strstr(s, "\nFrame from 02:00:<image>\n\n"));
    free(s);
    request_video_free(&v);
    /* str(timedelta): hours past 9, and days */
    static const struct {
        int d;
        const char *s;
    } td[] = {{36000, "from a 10:00:00 [H:MM:SS]"},
              {86400, "from a 1 day, 0:00:00 [H:MM:SS]"},
              {2 * 86400 + 3661, "from a 2 days, 1:01:01 [H:MM:SS]"}};
    for (int i = 0; i < 3; i++) {
        double t = 0;
        request_video w = {1, &t, td[i].d};
        s = text_of(&w, 0);
        assert_non_null(strstr(s, td[i].s));
        free(s);
    }
    /* limits */
    lv_err err = {{0}};
    assert_int_equal(video_from_frame_list(0, 1, 64, keep, &nk, &v, &err), LV_ERR_ARG);
    assert_int_equal(video_from_frame_list(VIDEO_MAX_INPUT_FRAMES + 1, 1, 64, keep, &nk, &v, &err),
                     LV_ERR_ARG);
}

static void sample_indices(void **state) {
    (void)state;
    int64_t idx[64];
    /* 10 s at 30 fps: round(1 * 10) = 10 frames over 0..299, no skip */
    int n = video_sample_indices(300, 30, 10, 1, 64, idx);
    static const int64_t want10[] = {0, 33, 66, 99, 132, 166, 199, 232, 265, 299};
    assert_int_equal(n, 10);
    for (int i = 0; i < n; i++) assert_int_equal(idx[i], want10[i]);
    /* 100 s at 10 fps: 64 frames, 100 - 2 > 64 so skip a second each end:
     * linspace(10, 990, 64) */
    n = video_sample_indices(1000, 10, 100, 1, 64, idx);
    assert_int_equal(n, 64);
    assert_int_equal(idx[0], 10);
    assert_int_equal(idx[1], 25); /* 10 + 980 / 63 = 25.55 */
    assert_int_equal(idx[63], 990);
    /* 0.4 s: round(0.4) = 0 -> 1 frame, the first */
    n = video_sample_indices(12, 30, 0.4, 1, 64, idx);
    assert_int_equal(n, 1);
    assert_int_equal(idx[0], 0);
    /* 2.5 s: Python round(2.5) = 2 (half to even) */
    n = video_sample_indices(75, 30, 2.5, 1, 64, idx);
    assert_int_equal(n, 2);
    assert_int_equal(idx[1], 74);
    assert_int_equal(video_sample_indices(0, 30, 1, 1, 64, idx), -1);
    assert_int_equal(video_sample_indices(10, 0, 1, 1, 64, idx), -1);
}

static void template_video(void **state) {
    (void)state;
    chat_part parts[2] = {{CHAT_PART_VIDEO, NULL, 0}, {CHAT_PART_TEXT, "What happens?", 13}};
    chat_message msg = {CHAT_USER, parts, 2};
    lv_buf out = {0};
    size_t n_img = 9;
    lv_err err = {{0}};
    assert_int_equal(chat_render(CHAT_TEMPLATE_SMOLVLM, &msg, 1, &out, &n_img, &err), LV_OK);
    assert_string_equal(out.data,
                        "<|im_start|>User: <video>What happens?<end_of_utterance>\nAssistant:");
    assert_int_equal(n_img, 0);
    lv_buf_free(&out);
    chat_part p2[2] = {{CHAT_PART_TEXT, "Describe ", 9}, {CHAT_PART_VIDEO, NULL, 0}};
    msg.parts = p2;
    assert_int_equal(chat_render(CHAT_TEMPLATE_SMOLVLM, &msg, 1, &out, &n_img, &err), LV_OK);
    assert_string_equal(out.data,
                        "<|im_start|>User: Describe <video><end_of_utterance>\nAssistant:");
    lv_buf_free(&out);
    /* LLaVA's template has no video branch */
    msg.parts = parts;
    assert_int_equal(chat_render(CHAT_TEMPLATE_LLAVA_MISTRAL, &msg, 1, &out, &n_img, &err),
                     LV_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "video"));
    lv_buf_free(&out);

    /* "<video>" replaced in order; counts must match */
    lv_buf t = {0};
    lv_buf_puts(&t, "a<video>b");
    request_video v;
    int64_t keep[4];
    int nk;
    frames_video(2, 1, 64, &v, keep, &nk);
    assert_int_equal(request_expand_videos(&t, &v, 1, &err), LV_OK);
    assert_string_equal(t.data, "aYou are provided the following series of two frames from a "
                                "0:00:01 [H:MM:SS] video.\n\nFrame from 00:00:<image>\nFrame "
                                "from 00:01:<image>\n\nb");
    assert_int_equal(request_expand_videos(&t, &v, 1, &err), LV_ERR_ARG);
    assert_non_null(strstr(err.msg, "<video>"));
    lv_buf_free(&t);
    request_video_free(&v);
}

static img_rgb load_sample(const char *name) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", g_samples, name);
    img_rgb im = {0};
    lv_err err = {{0}};
    if (img_decode_file(path, NULL, &im, NULL, &err)) fail_msg("%s", err.msg);
    return im;
}

/* The ids of a video question equal the tokens of transformers' whole
 * string (template + expansion), tokenized at once. */
static void ids_match_full_string(void **state) {
    (void)state;
    llava *m;
    lv_err err = {{0}};
    if (llava_open(g_smol, &m, &err)) fail_msg("%s", err.msg);
    int max_frames = 0, L = 0;
    double fps = 0;
    assert_true(request_video_supported(m, &max_frames, &fps, &L));
    assert_int_equal(max_frames, 64);
    assert_true(fps == 1);
    assert_int_equal(L, 256);
    assert_null(request_video_refusal(m));
    static const char *names[] = {"sample_01_320x240.png", "sample_02_240x320.png",
                                  "sample_05_360x120.png"};
    static const int counts[] = {1, 3, 8, 64, 70};
    int64_t keep[64];
    img_tensor *frames = calloc(64, sizeof *frames);
    for (int c = 0; c < 5; c++) {
        request_video v;
        int nk;
        frames_video(counts[c], 0, max_frames, &v, keep, &nk);
        assert_int_equal(nk, counts[c] < 64 ? counts[c] : 64);
        for (int i = 0; i < nk; i++) {
            img_rgb im = load_sample(names[keep[i] % 3]);
            int n_tok = 0;
            assert_int_equal(request_video_frame(m, &im, &frames[i], &n_tok, &err), LV_OK);
            assert_int_equal(frames[i].n_tiles, 1);
            assert_int_equal(frames[i].tile_h, 64);
            assert_int_equal(frames[i].grid_h, 0);
            assert_int_equal(frames[i].grid_w, 0);
            assert_int_equal(n_tok, 4);
            img_rgb_free(&im);
        }
        int32_t *ids = NULL, *want = NULL;
        size_t n_ids = 0, n_want = 0;
        if (request_video_prompt_ids(m, "What happens?", &v, frames, &ids, &n_ids, &err))
            fail_msg("%s", err.msg);
        lv_buf full = {0};
        lv_buf_puts(&full, "<|im_start|>User: ");
        char *vt = text_of(&v, 4);
        lv_buf_puts(&full, vt);
        free(vt);
        lv_buf_puts(&full, "What happens?<end_of_utterance>\nAssistant:");
        assert_int_equal(
            tok_encode(llava_tokenizer(m), full.data, full.len, true, &want, &n_want, &err), LV_OK);
        assert_int_equal(n_ids, n_want);
        assert_memory_equal(ids, want, n_ids * sizeof *ids);
        int n_image = 0;
        for (size_t i = 0; i < n_ids; i++) n_image += ids[i] == llava_image_token_id(m);
        assert_int_equal(n_image, 4 * nk);
        free(ids);
        free(want);
        lv_buf_free(&full);
        for (int i = 0; i < nk; i++) img_tensor_free(&frames[i]);
        request_video_free(&v);
    }
    free(frames);
    llava_free(m);
}

/* SmolVLM v1 (idefics3) takes no video: a clear refusal everywhere. */
static void refusal(void **state) {
    (void)state;
    llava *m;
    lv_err err = {{0}};
    if (llava_open(g_idef, &m, &err)) fail_msg("%s", err.msg);
    assert_false(request_video_supported(m, NULL, NULL, NULL));
    assert_non_null(strstr(request_video_refusal(m), "SmolVLM2"));
    img_rgb im = load_sample("sample_04_96x96.png");
    img_tensor t;
    int n_tok;
    assert_int_equal(request_video_frame(m, &im, &t, &n_tok, &err), LV_ERR_UNSUPPORTED);
    request_video v;
    int64_t keep[1];
    int nk;
    frames_video(1, 1, 64, &v, keep, &nk);
    int32_t *ids = (int32_t *)&nk;
    size_t n_ids = 7;
    assert_int_equal(request_video_prompt_ids(m, "x", &v, &t, &ids, &n_ids, &err),
                     LV_ERR_UNSUPPORTED);
    assert_null(ids);
    assert_non_null(strstr(err.msg, "SmolVLM2"));
    request_video_free(&v);
    img_rgb_free(&im);
    llava_free(m);
}

/* preprocessor_config.json's video_sampling. */
static void parse_video_sampling(void **state) {
    (void)state;
    lv_preproc_config pp;
    lv_err err = {{0}};
    const char *a = "{\"image_processor_type\": \"SmolVLMImageProcessor\", \"size\": "
                    "{\"longest_edge\": 2048}, \"max_image_size\": {\"longest_edge\": 512}, "
                    "\"video_sampling\": {\"fps\": 1, \"max_frames\": 64, \"video_size\": "
                    "{\"longest_edge\": 512}}}";
    assert_int_equal(hf_preproc_parse(a, strlen(a), "p.json", LV_IMGPROC_IDEFICS3, &pp, &err),
                     LV_OK);
    assert_true(pp.has_video);
    assert_int_equal(pp.video_max_frames, 64);
    assert_true(pp.video_fps == 1);
    assert_int_equal(pp.video_longest_edge, 2048); /* size replaces video_size */
    const char *b = "{\"image_processor_type\": \"SmolVLMImageProcessor\", \"video_sampling\": "
                    "{\"fps\": 2, \"max_frames\": 8, \"video_size\": {\"longest_edge\": 384}}}";
    assert_int_equal(hf_preproc_parse(b, strlen(b), "p.json", LV_IMGPROC_IDEFICS3, &pp, &err),
                     LV_OK);
    assert_int_equal(pp.video_longest_edge, 384);
    assert_int_equal(pp.video_max_frames, 8);
    assert_true(pp.video_fps == 2);
    const char *c = "{\"image_processor_type\": \"SmolVLMImageProcessor\"}";
    assert_int_equal(hf_preproc_parse(c, strlen(c), "p.json", LV_IMGPROC_IDEFICS3, &pp, &err),
                     LV_OK);
    assert_false(pp.has_video);
    const char *bad[] = {
        "{\"image_processor_type\": \"SmolVLMImageProcessor\", \"video_sampling\": 3}",
        "{\"image_processor_type\": \"SmolVLMImageProcessor\", \"video_sampling\": "
        "{\"max_frames\": 0}}",
        "{\"image_processor_type\": \"SmolVLMImageProcessor\", \"video_sampling\": "
        "{\"fps\": -1}}",
    };
    for (size_t i = 0; i < 3; i++) {
        lv_status st =
            hf_preproc_parse(bad[i], strlen(bad[i]), "p.json", LV_IMGPROC_IDEFICS3, &pp, &err);
        assert_true(st != LV_OK);
        assert_non_null(strstr(err.msg, "video_sampling"));
    }
}

int main(void) {
    snprintf(g_smol, sizeof g_smol, "%s/smolvlm/smolvlm-tiny", tu_env("LLAVA_TEST_DATA"));
    snprintf(g_idef, sizeof g_idef, "%s/smolvlm/idefics3-tiny", tu_env("LLAVA_TEST_DATA"));
    snprintf(g_samples, sizeof g_samples, "%s/../models/demo/samples", tu_env("LLAVA_SRC_DIR"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_video_sampling),  cmocka_unit_test(num2words),
        cmocka_unit_test(prompt_strings),        cmocka_unit_test(prompt_strings_n),
        cmocka_unit_test(sample_indices),        cmocka_unit_test(template_video),
        cmocka_unit_test(ids_match_full_string), cmocka_unit_test(refusal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
