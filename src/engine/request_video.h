/*
 * request_video.h - SmolVLM2's video input: what a video becomes in the
 * prompt, which frames are kept, and each frame's pixels.
 *
 * Read from huggingface/transformers (cited lines are quoted in
 * request_video.c): src/transformers/models/smolvlm/processing_smolvlm.py
 * (DEFAULT_CHAT_TEMPLATE's video branch, process_video /
 * expand_text_with_video_tokens), .../video_processing_smolvlm.py
 * (DEFAULT_VIDEO_INTRO, FRAME_TIMESTAMP_MESSAGE, DEFAULT_MEDIA_OUTTRO,
 * get_resize_output_image_size, resize, sample_frames); spec smolvlm.md §10.
 *
 * A video is a list of frames (images) with a time for each. In the chat
 * template it is the text "<video>"; request_expand_videos replaces the
 * k-th "<video>" by
 *     "You are provided the following series of {num2words(N)} frames from a
 *      {H:MM:SS} [H:MM:SS] video.\n"
 *     then per frame "\nFrame from {mm:02d}:{ss:02d}:" + "<image>"
 *     then "\n\n"
 * and each "<image>" there then takes one frame through request_prompt_ids,
 * whose expansion of an unsplit frame (grid 0 x 0) is exactly transformers'
 * _prompt_single_image: F G I*image_seq_len F. The ids are the same as
 * tokenizing transformers' whole string, because "<image>" and F are added
 * tokens that split the text the same way.
 *
 * Pixels: transformers' SmolVLMVideoProcessor resizes with torchvision
 * (LANCZOS replaced by BICUBIC, antialias) to the longest edge L (even
 * rounding, as the image processor's step 1) and then to T x T. torchvision
 * is not reproduced: the frames go through the engine's Pillow-exact
 * bicubic (resample 3), the closest filter, so frame pixels differ from
 * transformers by small amounts (the sizes and the prompt are exact).
 */
#ifndef LV_ENGINE_REQUEST_VIDEO_H
#define LV_ENGINE_REQUEST_VIDEO_H

#include "base/buf.h"
#include "image/image.h"
#include "model/llava.h"

/* The fps transformers assumes for frames given without one
 * (processing_smolvlm.py: "Defaulting to `fps=24`"). */
#define VIDEO_DEFAULT_FPS 24.0

/* Frames given as a list: at most this many before sampling (each decoded). */
#define VIDEO_MAX_INPUT_FRAMES 1024

/* One video of a request: n_frames frames (already sampled) at the given
 * times in seconds, and the duration written in the prompt (whole
 * seconds). */
typedef struct {
    int n_frames;
    double *timestamps; /* (n_frames) seconds; owned */
    int duration_s;     /* int(duration) */
} request_video;

void request_video_free(request_video *v);

/* The model's video settings (preprocessor_config.json video_sampling):
 * true only for SmolVLM2 (model_type "smolvlm" with video_sampling).
 * longest_edge: the frames' first resize, size.longest_edge when the file
 * has it (SmolVLMVideoProcessor.__init__ replaces video_size by size when
 * both are given), else video_sampling.video_size. */
bool request_video_supported(const llava *m, int *max_frames, double *fps, int *longest_edge);

/* Why m takes no video, for messages ("... is not a SmolVLM2 model ..."),
 * or NULL when it does. */
const char *request_video_refusal(const llava *m);

/* num2words(n) in English ("one", "twenty-one", "sixty-four"); n in
 * 0..999999. Returns the length, or -1 (n out of range or cap too small). */
int video_num2words(int n, char *buf, size_t cap);

/* numpy.unique(numpy.linspace(start, end, num, dtype=int)) into idx (num
 * entries of room); returns how many. num >= 1, start <= end. */
int video_linspace_unique(int64_t start, int64_t end, int num, int64_t *idx);

/*
 * SmolVLMVideoProcessor.sample_frames (spec §10) for a file: total frames
 * at video_fps, duration seconds; target fps and max_frames from the
 * model. idx needs max_frames entries; returns the count (>= 1), or -1 if
 * total < 1 or video_fps <= 0.
 */
int video_sample_indices(int64_t total, double video_fps, double duration, double target_fps,
                         int max_frames, int64_t *idx);

/*
 * A video given as n frames (a list of images) at fps (<= 0: 24, as
 * transformers). More than max_frames are thinned to max_frames evenly
 * (video_linspace_unique over 0..n-1; transformers passes such lists
 * through unsampled). keep receives the kept frame numbers (max_frames
 * room), v the timestamps (index / fps) and the duration
 * int(last timestamp), transformers' value when no duration is known.
 */
lv_status video_from_frame_list(int n, double fps, int max_frames, int64_t *keep, int *n_keep,
                                request_video *v, lv_err *err);

/*
 * The text that stands for v: with image_seq_len 0 one "<image>" per frame
 * (what request_expand_videos inserts), else transformers' full string with
 * F G I*image_seq_len F per frame. Appends to out.
 */
lv_status video_prompt_text(const request_video *v, int image_seq_len, lv_buf *out, lv_err *err);

/*
 * Replaces the k-th "<video>" of the rendered text by video_prompt_text of
 * videos[k] (image_seq_len 0). The counts must match (LV_ERR_ARG naming
 * both). text is rewritten in place.
 */
lv_status request_expand_videos(lv_buf *text, const request_video *videos, int n_videos,
                                lv_err *err);

/*
 * One frame: decoded RGB into the model's T x T frame (longest edge L with
 * the even rounding, then T x T, Pillow bicubic; L as
 * request_video_supported gives it: size.longest_edge, which transformers
 * puts in place of video_sampling.video_size, else video_size),
 * grid 0 x 0. *n_tokens receives its <image> count. Errors as
 * img_preprocess; LV_ERR_UNSUPPORTED for a model without video.
 */
lv_status request_video_frame(const llava *m, const img_rgb *rgb, img_tensor *out, int *n_tokens,
                              lv_err *err);

/* request_video_frame of an encoded image (img_decode's default limits). */
lv_status request_video_frame_from_bytes(const llava *m, const uint8_t *bytes, size_t len,
                                         img_tensor *out, int *n_tokens, lv_err *err);

/*
 * The prompt ids of one user turn holding a video then prompt (the
 * template's video branch), the video's text expanded and each frame's
 * ids in place (request_prompt_ids with frames as its images).
 */
lv_status request_video_prompt_ids(const llava *m, const char *prompt, const request_video *v,
                                   const img_tensor *frames, int32_t **ids, size_t *n_ids,
                                   lv_err *err);

/* ---- video files (request_video_file.c: FFmpeg's libavformat, libavcodec,
 * libswscale) ---------------------------------------------------------- */

/* The most bytes of a video file llava-cli reads (the server's media
 * policy caps what it fetches). */
#define VIDEO_MAX_FILE_BYTES (200u * 1000u * 1000u)

/* Limits on an untrusted video. */
typedef struct {
    int max_side;             /* frame width and height (8192) */
    uint64_t max_pixels;      /* width x height (IMG_DEFAULT_MAX_PIXELS) */
    double max_duration_s;    /* total frames / fps (4 hours) */
    int64_t max_total_frames; /* frames in the stream, and so decoded at most (200000) */
} video_limits;

void video_limits_default(video_limits *lim);

/*
 * Demuxes and decodes a video file of len bytes (any container and codec
 * this FFmpeg reads) and keeps the frames video_sample_indices picks (at
 * target_fps, at most max_frames: the model's video_sampling): frames
 * (max_frames room) receive *n_frames RGB images, v their timestamps
 * (index / the stream's average fps) and the duration int(total / fps).
 * lim NULL: video_limits_default. Errors: LV_ERR_FORMAT (not a video, no
 * video stream, corrupt or truncated data that gives no frame: the message
 * says which), LV_ERR_TOO_LARGE (a limit), LV_ERR_UNSUPPORTED (a codec this
 * build cannot decode), LV_ERR_NOMEM. On failure nothing is held; on
 * success the caller frees the frames (img_rgb_free) and v.
 */
lv_status video_decode_sampled(const uint8_t *bytes, size_t len, double target_fps, int max_frames,
                               const video_limits *lim, img_rgb *frames, int *n_frames,
                               request_video *v, lv_err *err);

/*
 * The model's video from a file's bytes: video_decode_sampled with m's
 * video_sampling, each kept frame made into the model's T x T frame
 * (request_video_frame) in frames (room for m's max_frames), its <image>
 * count added to *n_tokens (may be NULL). LV_ERR_UNSUPPORTED for a model
 * without video. On failure nothing is held.
 */
lv_status request_video_from_bytes(const llava *m, const uint8_t *bytes, size_t len,
                                   img_tensor *frames, int *n_frames, int *n_tokens,
                                   request_video *v, lv_err *err);

#endif
