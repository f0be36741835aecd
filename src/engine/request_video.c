/*
 * request_video.c - see request_video.h.
 *
 * Facts read from huggingface/transformers (nothing copied):
 *   src/transformers/models/smolvlm/processing_smolvlm.py
 *     DEFAULT_CHAT_TEMPLATE: "... {% elif line['type'] == 'video' %}{{ '<video>' }}
 *       {% endif %} ..." - a video item is the text "<video>"; the role's
 *       ":" vs ": " only looks for 'image' as the first item, so a message
 *       starting with a video gets "User: ".
 *     expand_text_with_video_tokens / process_video: for each "<video>"
 *       (replace(..., 1), in order): fps None -> "Defaulting to `fps=24`";
 *       timestamps = [(int(s // 60), int(s % 60)) for s in metadata.timestamps]
 *       (frames_indices / fps); duration = int(metadata.duration) if known
 *       else int(metadata.timestamps[-1]); str(timedelta(seconds=duration));
 *       DEFAULT_VIDEO_INTRO.format(frame_count=num2words(num_frames), ...)
 *       with num_frames = pixel_values.shape[1] (the batch's padded count:
 *       one video here), then per timestamp
 *       FRAME_TIMESTAMP_MESSAGE.format(f"{mm:02d}:{ss:02d}") +
 *       _prompt_single_image, then DEFAULT_MEDIA_OUTTRO.
 *   src/transformers/models/smolvlm/video_processing_smolvlm.py
 *     DEFAULT_VIDEO_INTRO = "You are provided the following series of
 *       {frame_count} frames from a {video_duration} [H:MM:SS] video.\n"
 *     DEFAULT_MEDIA_OUTTRO = "\n\n"; FRAME_TIMESTAMP_MESSAGE =
 *       "\nFrame from {timestamp}:"
 *     get_resize_output_image_size: the image processor's step-1 rule
 *       (longest edge L, the other int(L / aspect), +1 if odd);
 *     resize: F.resize to that, then to max_image_size x max_image_size
 *       ("videos are always processed without image splitting"); LANCZOS
 *       is replaced by BICUBIC (torchvision, antialias=True).
 *     sample_frames: estimated = int(round(fps * duration)); desired =
 *       max(1, min(estimated, num_frames)); start 0, end total - 1; if
 *       duration - 2 * skip_secs > num_frames * fps (skip_secs 1):
 *       start = int(skip_secs * video_fps), end = int(total - skip_secs *
 *       video_fps); start = max(0, start); end = min(end, total - 1); if
 *       start >= end: 0, total - 1; unique(linspace(start, end, desired,
 *       dtype=int)).
 *     __init__: "size" given with "video_sampling" replaces video_size; the
 *       released configs have both, so L here is size.longest_edge when the
 *       file gives one (the image processor's L), as transformers does.
 *   numpy linspace: step = (stop - start) / (num - 1); y = i * step + start;
 *   the last is stop exactly; dtype=int truncates.
 */
#include "engine/request_video.h"

#include "engine/request.h"
#include "image/decode.h"
#include "image/preprocess.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void request_video_free(request_video *v) {
    if (!v) return;
    free(v->timestamps);
    memset(v, 0, sizeof *v);
}

bool request_video_supported(const llava *m, int *max_frames, double *fps, int *longest_edge) {
    const lv_preproc_config *pp = llava_preproc_config(m);
    if (strcmp(llava_config(m)->model_type, "smolvlm") != 0 || !pp->has_video) return false;
    if (max_frames) *max_frames = pp->video_max_frames;
    if (fps) *fps = pp->video_fps;
    /* transformers: "size" given with "video_sampling" replaces video_size */
    if (longest_edge) *longest_edge = pp->video_longest_edge; /* size wins (hf_config) */
    return true;
}

const char *request_video_refusal(const llava *m) {
    if (request_video_supported(m, NULL, NULL, NULL)) return NULL;
    return "this model does not take video: only SmolVLM2 models (model_type \"smolvlm\" with "
           "video_sampling in preprocessor_config.json) do";
}

/* ---- num2words ------------------------------------------------------------------ */

static const char *const ONES[] = {"zero",    "one",     "two",       "three",    "four",
                                   "five",    "six",     "seven",     "eight",    "nine",
                                   "ten",     "eleven",  "twelve",    "thirteen", "fourteen",
                                   "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"};
static const char *const TENS[] = {"",      "",      "twenty",  "thirty", "forty",
                                   "fifty", "sixty", "seventy", "eighty", "ninety"};

/* 1..999 in num2words' English: "one hundred and five", "forty-two". */
static void below_1000(int n, lv_buf *b) {
    if (n >= 100) {
        lv_buf_puts(b, ONES[n / 100]);
        lv_buf_puts(b, " hundred");
        n %= 100;
        if (n) lv_buf_puts(b, " and ");
    }
    if (n >= 20) {
        lv_buf_puts(b, TENS[n / 10]);
        if (n % 10) {
            lv_buf_puts(b, "-");
            lv_buf_puts(b, ONES[n % 10]);
        }
    } else if (n > 0) {
        lv_buf_puts(b, ONES[n]);
    }
}

int video_num2words(int n, char *buf, size_t cap) {
    if (n < 0 || n > 999999 || !buf || cap == 0) return -1;
    lv_buf b = {0};
    if (n == 0) {
        lv_buf_puts(&b, "zero");
    } else {
        if (n >= 1000) {
            below_1000(n / 1000, &b);
            lv_buf_puts(&b, " thousand");
            if (n % 1000) lv_buf_puts(&b, n % 1000 < 100 ? " and " : ", ");
        }
        if (n % 1000) below_1000(n % 1000, &b);
    }
    int len = b.data && b.len < cap ? (int)b.len : -1;
    if (len >= 0) memcpy(buf, b.data, b.len + 1);
    lv_buf_free(&b);
    return len;
}

/* ---- frame selection ------------------------------------------------------------ */

int video_linspace_unique(int64_t start, int64_t end, int num, int64_t *idx) {
    if (num < 1 || end < start) return 0;
    double step = num > 1 ? (double)(end - start) / (double)(num - 1) : 0;
    int n = 0;
    for (int i = 0; i < num; i++) {
        double y = i == num - 1 && num > 1 ? (double)end : (double)i * step + (double)start;
        int64_t v = (int64_t)y;
        if (n == 0 || v != idx[n - 1]) idx[n++] = v; /* non-decreasing: unique = dedupe */
    }
    return n;
}

int video_sample_indices(int64_t total, double video_fps, double duration, double target_fps,
                         int max_frames, int64_t *idx) {
    if (total < 1 || !(video_fps > 0) || max_frames < 1) return -1;
    double est = nearbyint(target_fps * duration); /* Python round: half to even */
    int desired = est < 1 ? 1 : est > max_frames ? max_frames : (int)est;
    int64_t start = 0, end = total - 1;
    const double skip = 1;
    if (duration - 2 * skip > max_frames * target_fps) {
        start = (int64_t)(skip * video_fps);
        end = (int64_t)((double)total - skip * video_fps);
    }
    if (start < 0) start = 0;
    if (end > total - 1) end = total - 1;
    if (start >= end) start = 0, end = total - 1;
    return video_linspace_unique(start, end, desired, idx);
}

lv_status video_from_frame_list(int n, double fps, int max_frames, int64_t *keep, int *n_keep,
                                request_video *v, lv_err *err) {
    memset(v, 0, sizeof *v);
    *n_keep = 0;
    if (n < 1) return lv_fail(err, LV_ERR_ARG, "a video needs at least one frame");
    if (n > VIDEO_MAX_INPUT_FRAMES)
        return lv_fail(err, LV_ERR_ARG, "a video of %d frames: at most %d frames are accepted", n,
                       VIDEO_MAX_INPUT_FRAMES);
    if (!(fps > 0)) fps = VIDEO_DEFAULT_FPS;
    if (!isfinite(fps) || fps > 1000)
        return lv_fail(err, LV_ERR_ARG, "video fps %g must be in (0, 1000]", fps);
    int k = n <= max_frames ? n : max_frames;
    if (n <= max_frames)
        for (int i = 0; i < n; i++) keep[i] = i;
    else
        k = video_linspace_unique(0, n - 1, max_frames, keep);
    if (!(v->timestamps = malloc((size_t)k * sizeof *v->timestamps)))
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    for (int i = 0; i < k; i++) v->timestamps[i] = (double)keep[i] / fps;
    v->n_frames = k;
    v->duration_s = (int)v->timestamps[k - 1];
    *n_keep = k;
    return LV_OK;
}

/* ---- prompt --------------------------------------------------------------------- */

lv_status video_prompt_text(const request_video *v, int image_seq_len, lv_buf *out, lv_err *err) {
    char words[128], line[256];
    if (v->n_frames < 1 || video_num2words(v->n_frames, words, sizeof words) < 0)
        return lv_fail(err, LV_ERR_ARG, "a video of %d frames", v->n_frames);
    int d = v->duration_s < 0 ? 0 : v->duration_s;
    /* str(timedelta(seconds=d)): "H:MM:SS", with "N day(s), " first from a day on */
    char days[32] = "";
    if (d >= 86400) snprintf(days, sizeof days, "%d day%s, ", d / 86400, d / 86400 == 1 ? "" : "s");
    snprintf(line, sizeof line,
             "You are provided the following series of %s frames from a %s%d:%02d:%02d [H:MM:SS] "
             "video.\n",
             words, days, d / 3600 % 24, d / 60 % 60, d % 60);
    lv_status st = lv_buf_puts(out, line);
    for (int i = 0; i < v->n_frames && !st; i++) {
        double t = v->timestamps[i];
        snprintf(line, sizeof line, "\nFrame from %02d:%02d:", (int)floor(t / 60),
                 (int)fmod(t, 60));
        st = lv_buf_puts(out, line);
        if (st) break;
        if (image_seq_len <= 0) {
            st = lv_buf_puts(out, "<image>");
            continue;
        }
        st = lv_buf_puts(out, "<fake_token_around_image><global-img>");
        for (int k = 0; k < image_seq_len && !st; k++) st = lv_buf_puts(out, "<image>");
        if (!st) st = lv_buf_puts(out, "<fake_token_around_image>");
    }
    if (!st) st = lv_buf_puts(out, "\n\n");
    return st ? lv_fail(err, LV_ERR_NOMEM, "out of memory building the video prompt") : LV_OK;
}

lv_status request_expand_videos(lv_buf *text, const request_video *videos, int n_videos,
                                lv_err *err) {
    static const char TAG[] = "<video>";
    const size_t tl = sizeof TAG - 1;
    int found = 0;
    for (const char *p = text->data; p && (p = strstr(p, TAG)); p += tl) found++;
    if (found != n_videos)
        return lv_fail(err, LV_ERR_ARG, "the prompt has %d \"<video>\" but %d video%s given", found,
                       n_videos, n_videos == 1 ? " was" : "s were");
    if (n_videos == 0) return LV_OK;
    lv_buf out = {0};
    lv_status st = LV_OK;
    const char *p = text->data;
    for (int k = 0; k < n_videos && !st; k++) {
        const char *q = strstr(p, TAG);
        st = lv_buf_append(&out, p, (size_t)(q - p));
        if (!st) st = video_prompt_text(&videos[k], 0, &out, err);
        p = q + tl;
    }
    if (!st) st = lv_buf_puts(&out, p);
    if (st) {
        lv_buf_free(&out);
        return st == LV_ERR_NOMEM ? lv_fail(err, st, "out of memory building the video prompt")
                                  : st;
    }
    lv_buf_free(text);
    *text = out;
    return LV_OK;
}

/* ---- pixels --------------------------------------------------------------------- */

lv_status request_video_frame(const llava *m, const img_rgb *rgb, img_tensor *out, int *n_tokens,
                              lv_err *err) {
    memset(out, 0, sizeof *out);
    int L = 0;
    if (!request_video_supported(m, NULL, NULL, &L))
        return lv_fail(err, LV_ERR_UNSUPPORTED, "%s", request_video_refusal(m));
    img_proc_params p = *llava_image_params(m);
    p.longest_edge = L;
    p.do_image_splitting = false; /* every frame is one T x T frame */
    p.resample = 3;               /* torchvision BICUBIC's closest: Pillow bicubic */
    img_options opt = {0};
    lv_status st = img_preprocess(rgb, &p, &opt, out, err);
    if (st) return st;
    *n_tokens = llava_tensor_token_count(m, out);
    if (*n_tokens < 1) {
        img_tensor_free(out);
        return lv_fail(err, LV_ERR_ARG, "a %dx%d frame gives no image tokens", rgb->w, rgb->h);
    }
    return LV_OK;
}

lv_status request_video_frame_from_bytes(const llava *m, const uint8_t *bytes, size_t len,
                                         img_tensor *out, int *n_tokens, lv_err *err) {
    memset(out, 0, sizeof *out);
    img_limits lim;
    img_limits_default(&lim);
    img_rgb rgb = {0};
    lv_status st = img_decode(bytes, len, &lim, &rgb, NULL, err);
    if (!st) st = request_video_frame(m, &rgb, out, n_tokens, err);
    img_rgb_free(&rgb);
    return st;
}

lv_status request_video_prompt_ids(const llava *m, const char *prompt, const request_video *v,
                                   const img_tensor *frames, int32_t **ids, size_t *n_ids,
                                   lv_err *err) {
    *ids = NULL;
    *n_ids = 0;
    const char *why = request_video_refusal(m);
    if (why) return lv_fail(err, LV_ERR_UNSUPPORTED, "%s", why);
    chat_part parts[2] = {{CHAT_PART_VIDEO, NULL, 0}, {CHAT_PART_TEXT, prompt, strlen(prompt)}};
    chat_message msg = {CHAT_USER, parts, 2};
    lv_buf text = {0};
    size_t n_img = 0;
    lv_status st = chat_render(llava_chat_template(m), &msg, 1, &text, &n_img, err);
    if (!st) st = request_expand_videos(&text, v, 1, err);
    if (!st)
        st = request_prompt_ids(m, text.data ? text.data : "", true, frames, v->n_frames, ids,
                                n_ids, err);
    lv_buf_free(&text);
    return st;
}
