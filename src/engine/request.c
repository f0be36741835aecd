/* request.c - see request.h. */
#include "engine/request.h"

#include "base/buf.h"
#include "base/clock.h"
#include "base/file.h"
#include "image/decode.h"
#include "image/preprocess.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

#include <stdlib.h>
#include <string.h>

lv_status request_image_from_bytes(const llava *m, const uint8_t *bytes, size_t len,
                                   const img_options *opt, img_tensor *out, int *n_tokens,
                                   double *decode_ms, double *preprocess_ms, lv_err *err) {
    *out = (img_tensor){0};
    if (decode_ms) *decode_ms = 0;
    if (preprocess_ms) *preprocess_ms = 0;
    img_limits lim;
    img_limits_default(&lim);
    img_rgb rgb = {0};
    double t0 = lv_now_ms();
    lv_status st = img_decode(bytes, len, &lim, &rgb, NULL, err);
    double t1 = lv_now_ms();
    if (!st) st = img_preprocess(&rgb, llava_image_params(m), opt, out, err);
    if (decode_ms) *decode_ms = t1 - t0;
    if (preprocess_ms) *preprocess_ms = lv_now_ms() - t1;
    img_rgb_free(&rgb);
    if (st) return st;
    *n_tokens = llava_tensor_token_count(m, out); /* the base-only view too */
    if (*n_tokens < 1) {
        st = lv_fail(err, LV_ERR_ARG, "%dx%d gives no image tokens", out->image_w, out->image_h);
        img_tensor_free(out);
    }
    return st;
}

lv_status request_load_image(const llava *m, const char *path, img_tensor *out, int *n_tokens,
                             double *decode_ms, double *preprocess_ms, lv_err *err) {
    char *bytes = NULL;
    size_t len = 0;
    double dec = 0, pre = 0, t0 = lv_now_ms();
    *out = (img_tensor){0};
    lv_status st = lv_read_file(path, IMG_DEFAULT_MAX_ENCODED_BYTES, &bytes, &len, err);
    if (st == LV_ERR_FORMAT) st = LV_ERR_TOO_LARGE; /* its one format error: over the cap */
    double read_ms = lv_now_ms() - t0;
    if (!st)
        st = request_image_from_bytes(m, (const uint8_t *)bytes, len, NULL, out, n_tokens, &dec,
                                      &pre, err);
    free(bytes);
    if (decode_ms) *decode_ms = read_ms + dec; /* reading the file is part of decoding it */
    if (preprocess_ms) *preprocess_ms = pre;
    if (st && err && !strstr(err->msg, path)) lv_err_prefix(err, "%s", path);
    return st;
}

/* The text to tokenize: prompt as given (raw) or rendered as one user turn
 * of the chat template, holding one <image> per image before the text. */
static lv_status render(const llava *m, const char *prompt, bool raw, int n_images, lv_buf *text,
                        lv_err *err) {
    if (raw) return lv_buf_puts(text, prompt) ? lv_fail(err, LV_ERR_NOMEM, "out of memory") : LV_OK;
    chat_part *parts = malloc(((size_t)n_images + 1) * sizeof *parts);
    if (!parts) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n_images; i++) parts[i] = (chat_part){CHAT_PART_IMAGE, NULL, 0};
    parts[n_images] = (chat_part){CHAT_PART_TEXT, prompt, strlen(prompt)};
    chat_message msg = {CHAT_USER, parts, (size_t)n_images + 1};
    size_t n_placeholders;
    lv_status st = chat_render(llava_chat_template(m), &msg, 1, text, &n_placeholders, err);
    free(parts);
    return st;
}

/* Replaces the k-th image id in ids with the ids images[k] stands for
 * (llava_image_prompt_ids: LLaVA repeats the image id once per feature row,
 * SmolVLM adds its tile markers), as the Hugging Face processor does. The
 * number of image ids must equal the number of images. *ids is reallocated. */
static lv_status expand_images(const llava *m, int32_t **ids, size_t *n_ids,
                               const img_tensor *images, int n_images, lv_err *err) {
    int32_t image_id = llava_image_token_id(m);
    size_t found = 0;
    for (size_t i = 0; i < *n_ids; i++) found += (*ids)[i] == image_id;
    if (found != (size_t)n_images)
        return lv_fail(err, LV_ERR_ARG, "the prompt has %zu <image> token%s but %d image%s given",
                       found, found == 1 ? "" : "s", n_images, n_images == 1 ? " was" : "s were");
    int32_t **runs = calloc((size_t)n_images, sizeof *runs);
    int *lens = calloc((size_t)n_images, sizeof *lens);
    lv_status st = runs && lens ? LV_OK : lv_fail(err, LV_ERR_NOMEM, "out of memory");
    size_t total = *n_ids - found;
    for (int k = 0; k < n_images && !st; k++) {
        st = llava_image_prompt_ids(m, &images[k], &runs[k], &lens[k], err);
        if (st) lv_err_prefix(err, "image %d: ", k);
        total += st ? 0 : (size_t)lens[k];
    }
    int32_t *out = st ? NULL : malloc((total > 0 ? total : 1) * sizeof *out);
    if (!st && !out) st = lv_fail(err, LV_ERR_NOMEM, "out of memory expanding image tokens");
    if (!st) {
        size_t o = 0;
        int k = 0;
        for (size_t i = 0; i < *n_ids; i++) {
            if ((*ids)[i] != image_id) {
                out[o++] = (*ids)[i];
                continue;
            }
            memcpy(out + o, runs[k], (size_t)lens[k] * sizeof *out);
            o += (size_t)lens[k++];
        }
        free(*ids);
        *ids = out;
        *n_ids = o;
    }
    for (int k = 0; runs && k < n_images; k++) free(runs[k]);
    free(runs);
    free(lens);
    return st;
}

lv_status request_prompt_ids(const llava *m, const char *prompt, bool raw, const img_tensor *images,
                             int n_images, int32_t **ids, size_t *n_ids, lv_err *err) {
    lv_buf text = {0};
    *ids = NULL;
    *n_ids = 0;
    lv_status st = render(m, prompt, raw, n_images, &text, err);
    if (!st) st = tok_encode(llava_tokenizer(m), text.data, text.len, true, ids, n_ids, err);
    if (!st && n_images > 0) st = expand_images(m, ids, n_ids, images, n_images, err);
    lv_buf_free(&text);
    if (st) {
        free(*ids);
        *ids = NULL;
        *n_ids = 0;
    }
    return st;
}
