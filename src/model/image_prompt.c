/*
 * image_prompt.c - what an image becomes in a prompt, and which chat
 * template a model speaks (model/llava.h: llava_image_prompt_ids,
 * llava_chat_template).
 *
 * LLaVA: the one <image> id of the rendered prompt becomes as many <image>
 * ids as the image has feature rows (LlavaNextProcessor).
 *
 * Idefics3 / SmolVLM (transformers models/idefics3/processing_idefics3.py,
 * models/smolvlm/processing_smolvlm.py get_image_prompt_string; spec
 * smolvlm.md §4.2): with F = <fake_token_around_image>, G = <global-img>,
 * I = <image> and N = image_seq_len rows per frame, an image split into R
 * rows and C columns of tiles is
 *     for r in 1..R: (for c in 1..C: F <row_r_col_c> I*N) "\n"
 *     "\n" F G I*N F
 * and an unsplit one (R = C = 0: one frame) is F G I*N F. The processor
 * puts that string in place of the "<image>" text and tokenizes the whole
 * prompt; the string begins and ends with the added token F, so tokenizing
 * it alone gives the same ids as inside the prompt (added tokens split the
 * text first), and the "\n" runs between become whatever the vocabulary
 * makes of them ("\n\n" may be one token). SmolVLM v1's 2.2B vocabulary has
 * no <global-img> / <row_r_col_c> tokens: they are ordinary text there and
 * tokenize to several ids, as they do in transformers.
 */
#include "base/buf.h"
#include "image/image.h"
#include "model/llava.h"
#include "model/llava_impl.h"

#include <stdio.h>
#include <stdlib.h>

chat_template_kind llava_chat_template(const llava *m) {
    return hf_is_idefics3(&m->md.config) ? CHAT_TEMPLATE_SMOLVLM : CHAT_TEMPLATE_LLAVA_MISTRAL;
}

static lv_status idefics3_string(const lv_model_config *cfg, int rows, int cols, lv_buf *s) {
    static const char F[] = "<fake_token_around_image>", G[] = "<global-img>", I[] = "<image>";
    lv_status st = LV_OK;
    char rc[40];
    for (int r = 1; r <= rows && !st; r++) {
        for (int c = 1; c <= cols && !st; c++) {
            snprintf(rc, sizeof rc, "<row_%d_col_%d>", r, c);
            st = lv_buf_puts(s, F);
            if (!st) st = lv_buf_puts(s, rc);
            for (int k = 0; k < cfg->image_seq_length && !st; k++) st = lv_buf_puts(s, I);
        }
        if (!st) st = lv_buf_puts(s, "\n");
    }
    if (!st && (rows > 0 || cols > 0)) st = lv_buf_puts(s, "\n");
    if (!st) st = lv_buf_puts(s, F);
    if (!st) st = lv_buf_puts(s, G);
    for (int k = 0; k < cfg->image_seq_length && !st; k++) st = lv_buf_puts(s, I);
    if (!st) st = lv_buf_puts(s, F);
    return st;
}

lv_status llava_image_prompt_ids(const llava *m, const img_tensor *px, int32_t **ids, int *n,
                                 lv_err *err) {
    *ids = NULL;
    *n = 0;
    int want = llava_tensor_token_count(m, px);
    if (want < 1)
        return lv_fail(err, LV_ERR_ARG, "a %dx%d image of %d tiles does not fit this model",
                       px->image_w, px->image_h, px->n_tiles);
    int32_t image_id = llava_image_token_id(m);
    if (!hf_is_idefics3(&m->md.config)) {
        int32_t *out = malloc((size_t)want * sizeof *out);
        if (!out) return lv_fail(err, LV_ERR_NOMEM, "out of memory expanding image tokens");
        for (int i = 0; i < want; i++) out[i] = image_id;
        *ids = out;
        *n = want;
        return LV_OK;
    }
    lv_buf s = {0};
    if (idefics3_string(&m->md.config, px->grid_h, px->grid_w, &s)) {
        lv_buf_free(&s);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory expanding image tokens");
    }
    size_t n_ids = 0;
    lv_status st = tok_encode(m->tok, s.data, s.len, false, ids, &n_ids, err);
    lv_buf_free(&s);
    if (st) return st;
    int got = 0;
    for (size_t i = 0; i < n_ids; i++) got += (*ids)[i] == image_id;
    if (got != want) {
        free(*ids);
        *ids = NULL;
        return lv_fail(err, LV_ERR_FORMAT,
                       "the tokenizer makes %d <image> ids (id %d) of an image that needs %d: "
                       "is \"<image>\" one of its added tokens?",
                       got, (int)image_id, want);
    }
    *n = (int)n_ids;
    return LV_OK;
}
