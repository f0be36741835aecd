/* hf_files.c - see hf_files.h. */
#include "hf_files.h"

#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The small files io/model_dir.c reads, when present. */
static const char *const META_FILES[] = {"config.json",
                                         "generation_config.json",
                                         "preprocessor_config.json",
                                         "processor_config.json",
                                         "tokenizer.json",
                                         "tokenizer_config.json",
                                         "special_tokens_map.json",
                                         "added_tokens.json",
                                         "chat_template.json",
                                         "chat_template.jinja",
                                         "model.safetensors.index.json"};

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcasecmp(s + n - k, suffix) == 0;
}

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* A case-insensitive strstr. */
static const char *find_ci(const char *s, const char *needle) {
    size_t k = strlen(needle);
    for (; *s; s++)
        if (strncasecmp(s, needle, k) == 0) return s;
    return NULL;
}

static bool is_mmproj(const char *path) {
    return find_ci(base_name(path), "mmproj") != NULL;
}

/* "model-00001-of-00003.gguf": one part of a split GGUF. */
static bool is_split(const char *path) {
    const char *of = find_ci(base_name(path), "-of-");
    return of && of > base_name(path) && isdigit((unsigned char)of[-1]) &&
           isdigit((unsigned char)of[4]);
}

/* The tag as a word of the file name: after a separator (or at the start)
 * and before one, so "Q4_K" does not match "Q4_K_M" and "Q8_0" not "Q8_0_L". */
static bool has_tag(const char *path, const char *tag) {
    const char *name = base_name(path), *s = name;
    size_t k = strlen(tag);
    while ((s = find_ci(s, tag))) {
        char before = s == name ? '-' : s[-1], after = s[k];
        if (strchr("-._", before) && (after == '.' || after == '-')) return true;
        s++;
    }
    return false;
}

void hf_pick_gguf(const char *const *files, size_t n, const char *quant, int *text, int *mmproj) {
    *text = *mmproj = -1;
    bool tagged = quant && *quant;
    for (size_t i = 0; i < n; i++) {
        if (!ends_with(files[i], ".gguf") || is_split(files[i])) continue;
        if (is_mmproj(files[i])) {
            if (*mmproj < 0 || (!has_tag(files[*mmproj], "f16") && has_tag(files[i], "f16")))
                *mmproj = (int)i;
        } else if (tagged) {
            if (*text < 0 && has_tag(files[i], quant)) *text = (int)i;
        } else if (*text < 0 || (!has_tag(files[*text], "Q4_K_M") && has_tag(files[i], "Q4_K_M"))) {
            *text = (int)i;
        }
    }
}

void hf_selection_free(hf_selection *sel) {
    for (size_t i = 0; i < sel->n; i++) free(sel->names[i]);
    free(sel->names);
    memset(sel, 0, sizeof *sel);
    sel->gguf_text = sel->gguf_mmproj = -1;
}

static lv_status add(hf_selection *sel, const char *name, lv_err *err) {
    for (size_t i = 0; i < sel->n; i++)
        if (strcmp(sel->names[i], name) == 0) return LV_OK;
    if (sel->n == sel->cap) {
        size_t cap = sel->cap ? 2 * sel->cap : 16;
        char **p = realloc(sel->names, cap * sizeof *p);
        if (!p) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
        sel->names = p;
        sel->cap = cap;
    }
    if (!(sel->names[sel->n] = strdup(name))) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    sel->n++;
    return LV_OK;
}

/* The text GGUFs' names, for the message when a tag matches none. */
static void list_text_ggufs(const char *const *files, size_t n, char *out, size_t cap) {
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && len + 1 < cap; i++) {
        if (!ends_with(files[i], ".gguf") || is_mmproj(files[i])) continue;
        int w = snprintf(out + len, cap - len, "%s%s", len ? ", " : "", files[i]);
        if (w < 0) break;
        len += (size_t)w;
    }
}

static lv_status select_gguf(const char *const *files, size_t n, const char *quant,
                             hf_selection *sel, lv_err *err) {
    int text, mm;
    hf_pick_gguf(files, n, quant, &text, &mm);
    if (text < 0) {
        char have[160];
        list_text_ggufs(files, n, have, sizeof have);
        if (quant && *quant)
            return lv_fail(err, LV_ERR_ARG, "no GGUF file for the tag '%s'; the repo has: %s",
                           quant, have[0] ? have : "no text model GGUF");
        return lv_fail(err, LV_ERR_ARG,
                       "the repo has no text model GGUF (only split or mmproj files)");
    }
    if (mm < 0)
        return lv_fail(err, LV_ERR_ARG,
                       "the repo has no mmproj*.gguf next to %s: a vision model needs its "
                       "projector",
                       files[text]);
    lv_status st;
    if ((st = add(sel, files[text], err)) || (st = add(sel, files[mm], err))) return st;
    sel->gguf_text = 0;
    sel->gguf_mmproj = 1;
    return LV_OK;
}

lv_status hf_select_files(const char *const *files, size_t n, const char *quant, hf_selection *sel,
                          lv_err *err) {
    memset(sel, 0, sizeof *sel);
    sel->gguf_text = sel->gguf_mmproj = -1;
    bool has_st = false, has_gguf = false, has_config = false;
    for (size_t i = 0; i < n; i++) {
        bool top = !strchr(files[i], '/');
        has_st |= top && ends_with(files[i], ".safetensors");
        has_gguf |= ends_with(files[i], ".gguf");
        has_config |= strcmp(files[i], "config.json") == 0;
    }
    lv_status st;
    if ((quant && *quant) || (!has_st && has_gguf)) {
        if ((st = select_gguf(files, n, quant, sel, err))) hf_selection_free(sel);
        return st;
    }
    if (!has_st)
        return lv_fail(err, LV_ERR_ARG,
                       "the repo has no model weights this engine reads (*.safetensors or "
                       "*.gguf)");
    if (!has_config)
        return lv_fail(err, LV_ERR_ARG,
                       "the repo has safetensors weights but no config.json at its top level");
    for (size_t i = 0; i < n; i++) {
        bool want = false;
        for (size_t k = 0; k < LV_ARRAY_LEN(META_FILES) && !want; k++)
            want = strcmp(files[i], META_FILES[k]) == 0;
        if (strcmp(files[i], "model.safetensors.index.json") == 0) sel->has_index = true;
        if (want && (st = add(sel, files[i], err))) goto fail;
    }
    if (!sel->has_index) /* no index: the weights are every top-level safetensors file */
        for (size_t i = 0; i < n; i++)
            if (!strchr(files[i], '/') && ends_with(files[i], ".safetensors") &&
                (st = add(sel, files[i], err)))
                goto fail;
    return LV_OK;
fail:
    hf_selection_free(sel);
    return st;
}

lv_status hf_select_shards(hf_selection *sel, const char *index_path, const char *const *files,
                           size_t n, lv_err *err) {
    json_error_t je;
    json_t *root = json_load_file(index_path, 0, &je);
    json_t *map = root ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(map)) {
        json_decref(root);
        return lv_fail(err, LV_ERR_FORMAT, "model.safetensors.index.json: %s",
                       root ? "no \"weight_map\" object" : je.text);
    }
    lv_status st = LV_OK;
    const char *key;
    json_t *v;
    json_object_foreach(map, key, v) {
        const char *shard = json_string_value(v);
        bool found = false;
        for (size_t i = 0; shard && i < n && !found; i++) found = strcmp(files[i], shard) == 0;
        if (!found) {
            st = lv_fail(err, LV_ERR_ARG,
                         "model.safetensors.index.json puts '%s' in '%s', which the repo does not "
                         "have",
                         key, shard ? shard : "(not a string)");
            break;
        }
        if ((st = add(sel, shard, err))) break;
    }
    json_decref(root);
    return st;
}
