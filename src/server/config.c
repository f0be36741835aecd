/*
 * config.c - the seed's JSON configuration file (config.h).
 *
 * One table per object lists its keys with what each does here: a handler
 * that validates and applies it, or the reason it is accepted and not
 * needed. Unknown keys are warned about and skipped.
 */
#include "server/config.h"
#include "io/json_type.h"

#include "base/file.h"
#include "base/log.h"
#include "base/sysmem.h"
#include "model/llava.h"

#include <ctype.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONFIG_MAX_BYTES (1u << 20)

typedef struct {
    const char *where; /* file name, for messages */
    srv_config *c;
    lv_err *err;
} ctx;

typedef lv_status (*key_fn)(ctx *x, const char *key, json_t *v);

typedef struct {
    const char *name;
    key_fn apply;    /* NULL: accepted and not needed (why says so) */
    const char *why; /* the reason, logged; for apply keys, what it sets */
    json_type type;  /* the JSON type the value must have (JSON_NULL = any) */
} key_rule;

/* A miss from a json_type.h getter ("expected ..., got ..."), prefixed with
 * the file and the key; a bad value in this file is LV_ERR_ARG. */
static lv_status at(ctx *x, const char *key, lv_status st) {
    if (!st) return LV_OK;
    lv_err_prefix(x->err, "%s: %s", x->where, key);
    return st == LV_ERR_FORMAT ? LV_ERR_ARG : st;
}

static lv_status int_in(ctx *x, const char *key, json_t *v, long lo, long hi, int *out) {
    int64_t n;
    lv_status st = at(x, key, json_get_int(v, lo, hi, &n, x->err));
    if (!st) *out = (int)n;
    return st;
}

/* s must be one of the n words of ok, in any case; else "expected <expected>, got "s"". */
static lv_status one_of(ctx *x, const char *key, const char *s, const char *const *ok, size_t n,
                        const char *expected) {
    for (size_t i = 0; i < n; i++)
        if (!strcasecmp(s, ok[i])) return LV_OK;
    return lv_fail(x->err, LV_ERR_ARG, "%s: %s: expected %s, got \"%.40s\"", x->where, key,
                   expected, s);
}

/* Logs that key is accepted and not needed here, and why; counts it in n_notes. */
static void not_needed(ctx *x, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void not_needed(ctx *x, const char *key, const char *fmt, ...) {
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    LV_INFO("config %s: accepted, not needed: %s", key, why);
    x->c->n_notes++;
}

/* A non-empty string into *dst (replacing what was there). */
static lv_status set_str(ctx *x, const char *key, json_t *v, char **dst) {
    if (!json_string_length(v))
        return lv_fail(x->err, LV_ERR_ARG, "%s: %s: must not be empty", x->where, key);
    free(*dst);
    if (!(*dst = strdup(json_string_value(v))))
        return lv_fail(x->err, LV_ERR_NOMEM, "out of memory");
    return LV_OK;
}

/* ---- top-level keys ------------------------------------------------------------------------ */

static lv_status k_model_name(ctx *x, const char *key, json_t *v) {
    return set_str(x, key, v, &x->c->model_name);
}

static lv_status k_model_id(ctx *x, const char *key, json_t *v) {
    return set_str(x, key, v, &x->c->model_id);
}

/* "cuda" or "cuda:N" (N decimal digits; whether device N exists is the
 * backend's to say when the server loads). */
static bool is_cuda_name(const char *s) {
    if (strncasecmp(s, "cuda", 4)) return false;
    if (!s[4]) return true;
    size_t digits = strspn(s + 5, "0123456789");
    return s[4] == ':' && digits >= 1 && digits <= 3 && !s[5 + digits];
}

/* cpu and cuda[:N] name a backend of this engine and select it; the seed's
 * torch/MLX devices run on the cpu, except gpu and auto, which take CUDA
 * when this build has it. */
static lv_status k_device(ctx *x, const char *key, json_t *v) {
    static const char *const ok[] = {"cpu", "mps", "auto", "metal", "gpu"};
    const char *s = json_string_value(v), *pick = NULL;
    if (is_cuda_name(s)) {
        pick = s;
    } else {
        lv_status st = one_of(x, key, s, ok, LV_ARRAY_LEN(ok),
                              "one of cpu, cuda, cuda:N, mps, metal, gpu, auto");
        if (st) return st;
        if (!strcasecmp(s, "cpu"))
            pick = "cpu";
        else if ((!strcasecmp(s, "gpu") || !strcasecmp(s, "auto")) && llava_backend_known("cuda"))
            pick = "cuda";
    }
    if (!pick) {
        not_needed(x, key,
                   "device \"%s\": this build runs on its CPU backend for it (MPS/Metal were "
                   "torch/MLX devices%s)",
                   s, llava_backend_known("cuda") ? "" : "; this build has no CUDA");
        return LV_OK;
    }
    free(x->c->device);
    if (!(x->c->device = strdup(pick))) return lv_fail(x->err, LV_ERR_NOMEM, "out of memory");
    for (char *p = x->c->device; *p; p++) *p = (char)tolower((unsigned char)*p);
    LV_INFO("config %s: applied (the %s backend)", key, x->c->device);
    return LV_OK;
}

static lv_status k_quantization(ctx *x, const char *key, json_t *v) {
    static const char *const ok[] = {"int4",     "int8",    "4bit", "8bit", "q4",
                                     "q8",       "fp16",    "bf16", "fp32", "float16",
                                     "bfloat16", "float32", "none"};
    if (json_is_null(v)) return LV_OK;
    if (!json_is_string(v)) return at(x, key, json_expected(x->err, "a string or null", v));
    const char *s = json_string_value(v);
    lv_status st = one_of(x, key, s, ok, LV_ARRAY_LEN(ok), "int4, int8, fp16, bf16, fp32 or none");
    if (st) return st;
    not_needed(x, key,
               "\"%s\": the weights' own format decides (an MLX 4-bit checkpoint is read as "
               "4-bit; convert with llava-quantize)",
               s);
    return LV_OK;
}

static lv_status k_max_tokens(ctx *x, const char *key, json_t *v) {
    return int_in(x, key, v, 1, 1 << 20, &x->c->max_tokens);
}

/* ---- image_processing ---------------------------------------------------------------------- */

static lv_status k_max_size(ctx *x, const char *key, json_t *v) {
    return int_in(x, key, v, 1, 16384, &x->c->image.max_size);
}

static lv_status k_min_size(ctx *x, const char *key, json_t *v) {
    return int_in(x, key, v, 1, 16384, &x->c->image.min_size);
}

static lv_status k_aspect(ctx *x, const char *key, json_t *v) {
    (void)key;
    x->c->image.keep_aspect = json_is_true(v);
    return LV_OK;
}

static lv_status k_padding(ctx *x, const char *key, json_t *v) {
    bool ok = json_array_size(v) == 3;
    for (size_t i = 0; ok && i < 3; i++) {
        json_t *c = json_array_get(v, i);
        ok = json_is_integer(c) && json_integer_value(c) >= 0 && json_integer_value(c) <= 255;
        if (ok) x->c->image.padding_color[i] = (uint8_t)json_integer_value(c);
    }
    if (!ok)
        return lv_fail(x->err, LV_ERR_ARG,
                       "%s: %s: expected [r, g, b] with integers in [0, 255], got %s of %zu",
                       x->where, key, json_type_name(v), json_array_size(v));
    x->c->image.has_padding_color = true;
    return LV_OK;
}

static lv_status k_format(ctx *x, const char *key, json_t *v) {
    const char *s = json_string_value(v);
    if (strcasecmp(s, "RGB"))
        return lv_fail(x->err, LV_ERR_ARG, "%s: %s: only \"RGB\" is supported, got \"%.40s\"",
                       x->where, key, s);
    not_needed(x, key, "every image is converted to RGB as the reference processor does");
    return LV_OK;
}

static lv_status k_quality(ctx *x, const char *key, json_t *v) {
    int q;
    lv_status st = int_in(x, key, v, 1, 100, &q);
    if (st) return st;
    not_needed(x, key, "images are decoded directly, never re-encoded to JPEG");
    return LV_OK;
}

static lv_status k_prep_quality(ctx *x, const char *key, json_t *v) {
    static const char *const ok[] = {"high", "medium", "low"};
    lv_status st =
        one_of(x, key, json_string_value(v), ok, LV_ARRAY_LEN(ok), "high, medium or low");
    if (st) return st;
    not_needed(x, key,
               "resizing is always the reference's bicubic; per request, image_url.detail "
               "\"low\" gives the cheap base view");
    return LV_OK;
}

/* ---- the tables ---------------------------------------------------------------------------- */

static const key_rule image_keys[] = {
    {"max_size", k_max_size, "images larger than this are shrunk first", JSON_INTEGER},
    {"min_size", k_min_size, "images smaller than this are enlarged first", JSON_INTEGER},
    {"maintain_aspect_ratio", k_aspect, "the max/min_size resize keeps the aspect", JSON_TRUE},
    {"padding_color", k_padding, "anyres padding colour", JSON_ARRAY},
    {"format", k_format, NULL, JSON_STRING},
    {"quality", k_quality, NULL, JSON_INTEGER},
    {"preprocessing_quality", k_prep_quality, NULL, JSON_STRING},
};

/* enhanced_memory_management and mlx_config: onto the memory governor and the caches. */

static lv_status k_periodic_cleanup(ctx *x, const char *key, json_t *v) {
    (void)key;
    x->c->periodic_cleanup = json_is_true(v) ? 1 : 0;
    return LV_OK;
}

static lv_status k_cleanup_interval(ctx *x, const char *key, json_t *v) {
    double s = json_number_value(v);
    if (!(s > 0 && s <= 86400))
        return lv_fail(x->err, LV_ERR_ARG, "%s: %s: expected seconds in (0, 86400], got %g",
                       x->where, key, s);
    x->c->cleanup_interval_s = s;
    return LV_OK;
}

static lv_status k_pressure(ctx *x, const char *key, json_t *v) {
    (void)key;
    x->c->pressure_detection = json_is_true(v) ? 1 : 0;
    return LV_OK;
}

/* A size: an integer of MiB, or a string with its unit ("8GB", "512MiB"). */
static lv_status size_of(ctx *x, const char *key, json_t *v, int64_t *out) {
    if (json_is_string(v)) {
        lv_status st = lv_parse_bytes(json_string_value(v), out, x->err);
        if (st) lv_err_prefix(x->err, "%s: %s", x->where, key);
        return st;
    }
    int64_t mib;
    lv_status st = at(x, key, json_get_int(v, 0, (int64_t)1 << 30, &mib, x->err));
    if (!st) *out = mib << 20;
    return st;
}

static lv_status k_pool_size(ctx *x, const char *key, json_t *v) {
    if (json_is_null(v)) return LV_OK; /* the seed's "no pool": the default */
    return size_of(x, key, v, &x->c->prefix_cache_bytes);
}

static lv_status k_cache_size(ctx *x, const char *key, json_t *v) {
    return size_of(x, key, v, &x->c->image_cache_bytes);
}

static const key_rule memory_keys[] = {
    {"periodic_cleanup", k_periodic_cleanup,
     "freed memory is handed back to the system when idle and every cleanup_interval seconds",
     JSON_TRUE},
    {"cleanup_interval", k_cleanup_interval,
     "seconds between two hand-backs of freed memory while busy", JSON_REAL},
    {"adaptive_pressure_detection", k_pressure,
     "the memory governor samples the real use (resident set, GPU memory) beside its accounting",
     JSON_TRUE},
    {"mlx_memory_clearing", NULL, "there is no MLX/Metal cache in this engine", JSON_TRUE},
    {"model_reloading", NULL,
     "never needed here: requests share no model state, each sequence has its own KV", JSON_TRUE},
};

static const key_rule mlx_keys[] = {
    {"memory_pool_size", k_pool_size,
     "the prefix cache's budget: KV of earlier conversations kept (integer MiB or \"8GB\")",
     JSON_NULL},
    {"cache_size", k_cache_size,
     "the image cache's budget: feature rows of images seen (integer MiB or \"512MB\")", JSON_NULL},
    {"batch_size", NULL,
     "continuous batching decodes up to --parallel sequences together (default 4)", JSON_INTEGER},
};

static lv_status k_section(ctx *x, const char *key, json_t *v);

static const key_rule top_keys[] = {
    {"model_name", k_model_name, "the model name clients see", JSON_STRING},
    {"model_id", k_model_id, "the model (path or Hugging Face repo id)", JSON_STRING},
    {"device", k_device, NULL, JSON_STRING},
    {"quantization", k_quantization, NULL, JSON_NULL},
    {"max_tokens", k_max_tokens, "the default max_tokens", JSON_INTEGER},
    {"image_processing", k_section, NULL, JSON_OBJECT},
    {"enhanced_memory_management", k_section, NULL, JSON_OBJECT},
    {"mlx_config", k_section, NULL, JSON_OBJECT},
};

/* Applies the keys of object o under prefix ("" or "image_processing."). */
static lv_status walk(ctx *x, const char *prefix, json_t *o, const key_rule *rules, size_t n) {
    const char *name;
    json_t *v;
    json_object_foreach(o, name, v) {
        char key[160];
        snprintf(key, sizeof key, "%s%s", prefix, name);
        const key_rule *r = NULL;
        for (size_t i = 0; i < n && !r; i++)
            if (!strcmp(rules[i].name, name)) r = &rules[i];
        if (!r) {
            LV_WARN("config %s: unknown key, ignored (%s)", key, x->where);
            x->c->n_unknown++;
            continue;
        }
        lv_status st = at(x, key, json_check_type(v, r->type, x->err));
        if (st) return st;
        if (r->apply) {
            if ((st = r->apply(x, key, v))) return st;
            if (r->why) LV_INFO("config %s: applied (%s)", key, r->why);
        } else {
            not_needed(x, key, "%s", r->why);
        }
    }
    return LV_OK;
}

static lv_status k_section(ctx *x, const char *key, json_t *v) {
    char prefix[96];
    snprintf(prefix, sizeof prefix, "%s.", key);
    if (!strcmp(key, "image_processing")) {
        x->c->image.keep_aspect = true; /* the seed resized with PIL thumbnail: aspect kept */
        lv_status st = walk(x, prefix, v, image_keys, LV_ARRAY_LEN(image_keys));
        const img_options *o = &x->c->image;
        if (!st && o->min_size && o->max_size && o->min_size > o->max_size)
            st = lv_fail(x->err, LV_ERR_ARG,
                         "%s: image_processing: min_size %d is larger than max_size %d", x->where,
                         o->min_size, o->max_size);
        return st;
    }
    if (!strcmp(key, "enhanced_memory_management"))
        return walk(x, prefix, v, memory_keys, LV_ARRAY_LEN(memory_keys));
    return walk(x, prefix, v, mlx_keys, LV_ARRAY_LEN(mlx_keys));
}

lv_status srv_config_parse(const char *text, size_t len, const char *where, srv_config *out,
                           lv_err *err) {
    memset(out, 0, sizeof *out);
    out->periodic_cleanup = out->pressure_detection = -1;
    out->prefix_cache_bytes = out->image_cache_bytes = -1;
    json_error_t je;
    json_t *root = json_loadb_whole(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return lv_fail(err, LV_ERR_FORMAT, "%s: not valid JSON at line %d, column %d: %s", where,
                       je.line, je.column, je.text);
    lv_status st = LV_OK;
    if (!json_is_object(root))
        st = lv_fail(err, LV_ERR_FORMAT, "%s: expected a JSON object at the top, got %s", where,
                     json_type_name(root));
    ctx x = {where, out, err};
    if (!st) st = walk(&x, "", root, top_keys, LV_ARRAY_LEN(top_keys));
    json_decref(root);
    return st;
}

lv_status srv_config_load(const char *path, srv_config *out, lv_err *err) {
    memset(out, 0, sizeof *out);
    out->periodic_cleanup = out->pressure_detection = -1;
    out->prefix_cache_bytes = out->image_cache_bytes = -1;
    char *text = NULL;
    size_t len = 0;
    lv_status st = lv_read_file(path, CONFIG_MAX_BYTES, &text, &len, err);
    if (!st) st = srv_config_parse(text, len, path, out, err);
    free(text);
    return st;
}

void srv_config_free(srv_config *c) {
    if (!c) return;
    free(c->model_name);
    free(c->model_id);
    free(c->device);
    memset(c, 0, sizeof *c);
}
