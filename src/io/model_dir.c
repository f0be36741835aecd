/* model_dir.c - see model_dir.h. */
#include "model_dir.h"

#include "base/file.h"

#include <stdlib.h>
#include <string.h>

void mdir_close(lv_model_dir *md) {
    free(md->dir);
    free(md->tokenizer_path);
    hf_tokcfg_deinit(&md->tokenizer_config);
    st_close(md->weights);
    memset(md, 0, sizeof *md);
}

lv_status mdir_open(const char *path, unsigned flags, lv_model_dir *md, lv_err *err) {
    memset(md, 0, sizeof *md);
    char p[4096];
    lv_status st;
    if (!lv_is_dir(path)) return lv_fail(err, LV_ERR_IO, "%s: not a model directory", path);
    if (!(md->dir = strdup(path))) return lv_fail(err, LV_ERR_NOMEM, "%s: out of memory", path);

    /* config.json decides the rest (e.g. which image processor defaults apply). */
    if ((st = lv_path_join(p, sizeof p, path, "config.json", err))) goto fail;
    if (!lv_is_file(p)) {
        st = lv_fail(err, LV_ERR_IO,
                     "%s: missing config.json (not a Hugging Face model directory?)", p);
        goto fail;
    }
    if ((st = hf_config_load(p, &md->config, err))) goto fail;

    lv_imgproc_kind kind =
        strcmp(md->config.model_type, "llava_next") == 0 ? LV_IMGPROC_LLAVA_NEXT : LV_IMGPROC_CLIP;
    hf_preproc_defaults(kind, &md->preproc);
    if ((st = lv_path_join(p, sizeof p, path, "preprocessor_config.json", err))) goto fail;
    if (lv_is_file(p)) {
        if ((st = hf_preproc_load(p, kind, &md->preproc, err))) goto fail;
        md->has_preproc = true;
    }

    hf_tokcfg_defaults(&md->tokenizer_config);
    if ((st = lv_path_join(p, sizeof p, path, "tokenizer_config.json", err))) goto fail;
    if (lv_is_file(p)) {
        if ((st = hf_tokcfg_load(p, &md->tokenizer_config, err))) goto fail;
        md->has_tokenizer_config = true;
    }
    /* The processor's template: chat_template.jinja (newer saves) wins over
     * chat_template.json. */
    static const char *const templates[] = {"chat_template.json", "chat_template.jinja"};
    for (size_t i = 0; i < LV_ARRAY_LEN(templates); i++) {
        if ((st = lv_path_join(p, sizeof p, path, templates[i], err))) goto fail;
        if (lv_is_file(p) && (st = hf_chat_template_load(p, &md->tokenizer_config, err))) goto fail;
    }

    if ((st = lv_path_join(p, sizeof p, path, "generation_config.json", err))) goto fail;
    if (lv_is_file(p)) {
        if ((st = hf_gencfg_load(p, &md->generation_config, err))) goto fail;
        md->has_generation_config = true;
    } else {
        hf_gencfg_defaults(&md->generation_config);
    }

    if ((st = lv_path_join(p, sizeof p, path, "tokenizer.json", err))) goto fail;
    if (lv_is_file(p)) {
        if (!(md->tokenizer_path = strdup(p))) {
            st = lv_fail(err, LV_ERR_NOMEM, "%s: out of memory", p);
            goto fail;
        }
    } else if (!(flags & MDIR_NO_TOKENIZER)) {
        st = lv_fail(err, LV_ERR_IO, "%s: missing tokenizer.json", p);
        goto fail;
    }

    if ((flags & MDIR_WEIGHTS) && (st = st_open(path, &md->weights, err))) goto fail;
    return LV_OK;
fail:
    mdir_close(md);
    return st;
}
