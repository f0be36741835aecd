/* model_dir.c - see model_dir.h. */
#include "model_dir.h"

#include "base/file.h"
#include "io/gguf_model.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mdir_close(lv_model_dir *md) {
    free(md->dir);
    free(md->tokenizer_path);
    free(md->gguf_text);
    free(md->gguf_mmproj);
    hf_tokcfg_deinit(&md->tokenizer_config);
    st_close(md->weights);
    memset(md, 0, sizeof *md);
}

/* A directory without config.json holding *.gguf files: the text model (the
 * one whose name does not start with "mmproj") and the mmproj. false if it
 * is not such a directory; a directory with a wrong count of either is an
 * error. */
static lv_status find_gguf_pair(const char *dir, char *text, char *mm, size_t cap, bool *is_pair,
                                lv_err *err) {
    *is_pair = false;
    char p[4096];
    lv_status st = lv_path_join(p, sizeof p, dir, "config.json", err);
    if (st || lv_is_file(p)) return st;
    DIR *d = opendir(dir);
    if (!d) return LV_OK;
    int n_text = 0, n_mm = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 6 || strcmp(e->d_name + n - 5, ".gguf") != 0) continue;
        bool is_mm = strncmp(e->d_name, "mmproj", 6) == 0;
        if ((st = lv_path_join(p, sizeof p, dir, e->d_name, err))) break;
        if (!lv_is_file(p)) continue;
        snprintf(is_mm ? mm : text, cap, "%s", p);
        *(is_mm ? &n_mm : &n_text) += 1;
    }
    closedir(d);
    if (st || (n_text == 0 && n_mm == 0)) return st;
    if (n_text != 1 || n_mm != 1)
        return lv_fail(err, LV_ERR_ARG,
                       "%s: a GGUF model directory needs one text model .gguf and one mmproj*.gguf "
                       "(found %d and %d); name them with --model and --mmproj",
                       dir, n_text, n_mm);
    *is_pair = true;
    return LV_OK;
}

lv_status mdir_open_gguf(const char *text_path, const char *mmproj_path, unsigned flags,
                         lv_model_dir *md, lv_err *err) {
    memset(md, 0, sizeof *md);
    gguf *text = NULL, *mm = NULL;
    lv_status st;
    if (!(md->dir = strdup(text_path)) || !(md->gguf_text = strdup(text_path)) ||
        !(md->gguf_mmproj = strdup(mmproj_path))) {
        st = lv_fail(err, LV_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((st = gguf_open(text_path, &text, err)) || (st = gguf_open(mmproj_path, &mm, err)) ||
        (st = gguf_model_config(text, mm, &md->config, &md->preproc, &md->tokenizer_config,
                                &md->generation_config, err)))
        goto fail;
    md->has_preproc = md->has_tokenizer_config = md->has_generation_config = true;
    gguf_close(text);
    gguf_close(mm);
    text = mm = NULL;
    if ((flags & MDIR_WEIGHTS) && (st = mdir_open_weights(md, &md->weights, err))) goto fail;
    return LV_OK;
fail:
    gguf_close(text);
    gguf_close(mm);
    mdir_close(md);
    return st;
}

lv_status mdir_open_weights(const lv_model_dir *md, st_set **out, lv_err *err) {
    if (md->gguf_text) return gguf_model_weights(md->gguf_text, md->gguf_mmproj, out, err);
    return st_open(md->dir, out, err);
}

lv_status mdir_open(const char *path, unsigned flags, lv_model_dir *md, lv_err *err) {
    memset(md, 0, sizeof *md);
    char p[4096];
    lv_status st;
    size_t pl = strlen(path);
    if (lv_is_file(path) && pl > 5 && strcmp(path + pl - 5, ".gguf") == 0)
        return lv_fail(err, LV_ERR_ARG,
                       "%s: a GGUF text model needs its mmproj file (--mmproj FILE), or a "
                       "directory holding both",
                       path);
    if (!lv_is_dir(path)) return lv_fail(err, LV_ERR_IO, "%s: not a model directory", path);
    {
        char text[4096], mm[4096];
        bool pair;
        if ((st = find_gguf_pair(path, text, mm, sizeof text, &pair, err))) return st;
        if (pair) return mdir_open_gguf(text, mm, flags, md, err);
    }
    if (!(md->dir = strdup(path))) return lv_fail(err, LV_ERR_NOMEM, "%s: out of memory", path);

    /* config.json decides the rest (e.g. which image processor defaults apply). */
    if ((st = lv_path_join(p, sizeof p, path, "config.json", err))) goto fail;
    if (!lv_is_file(p)) {
        st = lv_fail(err, LV_ERR_IO,
                     "%s: missing config.json (not a Hugging Face model directory?)", p);
        goto fail;
    }
    if ((st = hf_config_load(p, &md->config, err))) goto fail;

    lv_imgproc_kind kind = hf_is_idefics3(&md->config) ? LV_IMGPROC_IDEFICS3
                           : strcmp(md->config.model_type, "llava_next") == 0
                               ? LV_IMGPROC_LLAVA_NEXT
                               : LV_IMGPROC_CLIP;
    hf_preproc_defaults(kind, &md->preproc);
    if ((st = lv_path_join(p, sizeof p, path, "preprocessor_config.json", err))) goto fail;
    if (lv_is_file(p) && !(flags & MDIR_NO_PREPROC)) {
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
