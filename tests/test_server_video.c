/* test_server_video.c - a video question (SmolVLM2, engine/request_video.h)
 * through llava-server and llava-cli on tests/data/smolvlm/smolvlm-tiny:
 *   - the same frames give the same prompt token count and the same greedy
 *     answer through both;
 *   - the server's 400s: images mixed with a video, two videos, a video
 *     file part, no frames, a bad fps, a frame that is not an image, a
 *     video in an assistant message, and a model without video
 *     (idefics3-tiny, SmolVLM v1);
 *   - llava-cli's refusals (--image with --video-frames: usage, exit 2; a
 *     model without video: exit 1). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "base/base64.h"
#include "base/file.h"
#include "server_harness.h"

#include <jansson.h>

static char g_smol[1024], g_idef[1024], g_tmp[1024];
static const char *const FRAMES[] = {"sample_01_320x240.png", "sample_05_360x120.png",
                                     "sample_09_256x256.png"};

/* {"type": "video_frames", "video_frames": {"frames": [the FRAMES], "fps": 1}} */
static json_t *video_part(void) {
    json_t *frames = json_array();
    for (size_t i = 0; i < 3; i++) {
        char *u = srv_png_data_uri(srv_demo_sample(FRAMES[i]));
        json_array_append_new(frames, json_pack("{s:s}", "url", u));
        free(u);
    }
    return json_pack("{s:s,s:{s:o,s:i}}", "type", "video_frames", "video_frames", "frames", frames,
                     "fps", 1);
}

static char *body_of(json_t *parts, const char *role) {
    json_t *o = json_pack("{s:i,s:f,s:[{s:s,s:o}]}", "max_tokens", 8, "temperature", 0.0,
                          "messages", "role", role ? role : "user", "content", parts);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

static srv start_server(const char *model, const char *tag) {
    char log[1200];
    snprintf(log, sizeof log, "%s/%s.log", g_tmp, tag);
    srv s;
    const char *argv[] = {"--model", model, "--port", "0", NULL};
    assert_true(srv_start(&s, log, argv, NULL));
    assert_true(srv_wait_healthy(&s, 60));
    return s;
}

static long post(const srv *s, const char *body, char **out) {
    return srv_http(s, "POST", "/v1/chat/completions", body, strlen(body), NULL, NULL, out);
}

static void expect_400(const srv *s, const char *body, const char *needle) {
    char *out = NULL;
    long st = post(s, body, &out);
    if (st != 400 || !out || !strstr(out, needle))
        fail_msg("expected a 400 naming \"%s\", got %ld: %s", needle, st, out ? out : "");
    free(out);
}

static void same_answer_cli_and_server(void **state) {
    (void)state;
    srv s = start_server(g_smol, "smol");
    json_t *parts = json_array();
    json_array_append_new(parts, video_part());
    json_array_append_new(parts, json_pack("{s:s,s:s}", "type", "text", "text", "What happens?"));
    char *body = body_of(parts, NULL);
    char *out = NULL;
    assert_int_equal(post(&s, body, &out), 200);
    json_t *got = json_loads(out, 0, NULL);
    assert_non_null(got);
    const char *text = json_string_value(json_object_get(
        json_object_get(json_array_get(json_object_get(got, "choices"), 0), "message"), "content"));
    long prompt_tokens =
        (long)json_integer_value(json_object_get(json_object_get(got, "usage"), "prompt_tokens"));
    assert_non_null(text);

    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "%s/llava-cli --model %s --video-frames %s,%s,%s --video-fps 1 --prompt "
             "'What happens?' --max-tokens 8 --temperature 0 --json 2>/dev/null",
             tu_env("LLAVA_BIN_DIR"), g_smol, srv_demo_sample(FRAMES[0]),
             srv_demo_sample(FRAMES[1]), srv_demo_sample(FRAMES[2]));
    char *cli = NULL;
    assert_int_equal(tu_run(cmd, &cli), 0);
    json_t *c = json_loads(cli, 0, NULL);
    assert_non_null(c);
    assert_string_equal(json_string_value(json_object_get(c, "text")), text);
    assert_int_equal((long)json_integer_value(json_object_get(c, "n_prompt_tokens")),
                     prompt_tokens);
    /* 3 frames of image_seq_len 4 */
    assert_int_equal(json_integer_value(json_object_get(c, "n_image_tokens")), 12);
    json_decref(c);
    free(cli);
    json_decref(got);
    free(out);
    free(body);

    /* the server's refusals */
    char *img = srv_png_data_uri(srv_demo_sample(FRAMES[0]));
    parts = json_array();
    json_array_append_new(parts,
                          json_pack("{s:s,s:{s:s}}", "type", "image_url", "image_url", "url", img));
    json_array_append_new(parts, video_part());
    body = body_of(parts, NULL);
    expect_400(&s, body, "cannot be mixed");
    free(body);
    parts = json_array();
    json_array_append_new(parts, video_part());
    json_array_append_new(parts,
                          json_pack("{s:s,s:{s:s}}", "type", "image_url", "image_url", "url", img));
    body = body_of(parts, NULL);
    expect_400(&s, body, "cannot be mixed");
    free(body);
    parts = json_array();
    json_array_append_new(parts, video_part());
    json_array_append_new(parts, video_part());
    body = body_of(parts, NULL);
    expect_400(&s, body, "one video per request");
    free(body);
    body = body_of(json_pack("[{s:s,s:{s:s}}]", "type", "video_url", "video_url", "url",
                             "data:video/mp4;base64,aGVsbG8gd29ybGQ="),
                   NULL);
    expect_400(&s, body, "invalid_video");
    free(body);
    body = body_of(json_pack("[{s:s,s:{s:s}}]", "type", "video_url", "video_url", "url",
                             "data:text/plain;base64,aGVsbG8="),
                   NULL);
    expect_400(&s, body, "expected video/* or image/*");
    free(body);
    body = body_of(json_pack("[{s:s,s:{s:[]}}]", "type", "video_frames", "video_frames", "frames"),
                   NULL);
    expect_400(&s, body, "frames");
    free(body);
    body = body_of(json_pack("[{s:s,s:{s:[s],s:i}}]", "type", "video_frames", "video_frames",
                             "frames", img, "fps", -2),
                   NULL);
    expect_400(&s, body, "fps");
    free(body);
    body = body_of(json_pack("[{s:s,s:{s:[s,s]}}]", "type", "video_frames", "video_frames",
                             "frames", img, "data:image/png;base64,iVBORw0KGgoAAAA"),
                   NULL);
    expect_400(&s, body, "video frame 1");
    free(body);
    parts = json_array();
    json_array_append_new(parts, video_part());
    body = body_of(parts, "assistant");
    expect_400(&s, body, "only supported in 'user' messages");
    free(body);
    /* still serving */
    parts = json_array();
    json_array_append_new(parts, json_pack("{s:s,s:s}", "type", "text", "text", "hi"));
    body = body_of(parts, NULL);
    assert_int_equal(post(&s, body, NULL), 200);
    free(body);
    free(img);
    assert_int_equal(srv_stop(&s), 0);
}

static void refused_without_video(void **state) {
    (void)state;
    srv s = start_server(g_idef, "idef");
    json_t *parts = json_array();
    json_array_append_new(parts, video_part());
    char *body = body_of(parts, NULL);
    expect_400(&s, body, "SmolVLM2");
    free(body);
    assert_int_equal(srv_stop(&s), 0);

    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "%s/llava-cli --model %s --video-frames %s --prompt x --max-tokens 1 2>&1",
             tu_env("LLAVA_BIN_DIR"), g_idef, srv_demo_sample(FRAMES[0]));
    char *out = NULL;
    assert_int_equal(tu_run(cmd, &out), 1);
    assert_non_null(strstr(out, "SmolVLM2"));
    free(out);
    snprintf(
        cmd, sizeof cmd, "%s/llava-cli --model %s --image %s --video-frames %s --prompt x 2>&1",
        tu_env("LLAVA_BIN_DIR"), g_smol, srv_demo_sample(FRAMES[0]), srv_demo_sample(FRAMES[1]));
    assert_int_equal(tu_run(cmd, &out), 2);
    assert_non_null(strstr(out, "cannot be mixed"));
    free(out);
}

int main(void) {
    snprintf(g_smol, sizeof g_smol, "%s/smolvlm/smolvlm-tiny", tu_env("LLAVA_TEST_DATA"));
    snprintf(g_idef, sizeof g_idef, "%s/smolvlm/idefics3-tiny", tu_env("LLAVA_TEST_DATA"));
    snprintf(g_tmp, sizeof g_tmp, "%s", tu_tmpdir("server_video"));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(same_answer_cli_and_server),
        cmocka_unit_test(refused_without_video),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
