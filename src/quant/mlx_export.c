/*
 * mlx_export.c - the MLX affine writer (see mlx_export.h for the layout).
 *
 * Three passes:
 *   1. plan: for each source tensor decide float / quantized / conv, its
 *      output entries (name, dtype, shape) and its shard. Shards are cut in
 *      source order, a module's weight+scales+biases always together;
 *      within a shard the entries are ordered as the reference writer does
 *      (descending element size, then name) so every tensor is naturally
 *      aligned in the file;
 *   2. write each shard: its header first (every offset follows from the
 *      shapes), then one source tensor at a time, read as float32,
 *      quantized by quant/mlx_affine (rows split across threads), cast and
 *      written at its offset; memory peaks at one float32 tensor
 *      (lm_head: 0.5 GB for 7B) plus its packed form;
 *   3. config.json, the index and the auxiliary files; rename the
 *      temporary directory to out_dir.
 */
#include "mlx_export.h"

#include "base/file.h"
#include "io/json_type.h"
#include "base/half.h"
#include "io/safetensors_write.h"
#include "quant/mlx_affine.h"
#include "quant/outdir.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_SHARD_BYTES (5ull * 1000 * 1000 * 1000)
#define AUX_MAX_BYTES       (64u * 1024u * 1024u)
#define MAX_THREADS         8

enum { K_FLOAT, K_QUANT, K_CONV };

typedef struct {
    size_t src;        /* source tensor index */
    int kind;          /* K_* */
    lv_dtype dt;       /* float dtype of the output (weight, or scales/biases) */
    int shard;         /* 0-based */
    int n_parts;       /* 1, or 3 for weight/scales/biases */
    char *names[3];    /* output names (heap) */
    size_t entry[3];   /* index of each part in its shard's entry list */
    stw_entry part[3]; /* dtype and shape of each part (name: names[k]) */
} plan_item;

typedef struct {
    plan_item *items;
    size_t n_items;
    int n_shards;
    stw_entry **entries; /* per shard, sorted */
    size_t *n_entries;   /* per shard */
    uint64_t total_bytes;
} plan;

/* ---- float casts ------------------------------------------------------- */

/* n float32 values into dst in dtype dt (F16, BF16 or F32), little-endian. */
static void cast_out(const float *src, size_t n, lv_dtype dt, void *dst) {
    if (dt == LV_DTYPE_F32) {
        memcpy(dst, src, n * 4);
        return;
    }
    uint16_t *o = dst;
    for (size_t i = 0; i < n; i++)
        o[i] = dt == LV_DTYPE_F16 ? lv_f32_to_f16(src[i]) : lv_f32_to_bf16(src[i]);
}

/* ---- plan -------------------------------------------------------------- */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Is this the weight of a module mlx-vlm quantizes (nn.Linear or
 * nn.Embedding) under the chosen layout? */
static bool quantizable(const qs_tensor *t, bool quantize_vision, bool smol) {
    static const char *const leaves[] = {".q_proj.weight",
                                         ".k_proj.weight",
                                         ".v_proj.weight",
                                         ".o_proj.weight",
                                         ".gate_proj.weight",
                                         ".up_proj.weight",
                                         ".down_proj.weight",
                                         ".embed_tokens.weight",
                                         ".lm_head.weight",
                                         ".out_proj.weight",
                                         ".fc1.weight",
                                         ".fc2.weight",
                                         ".position_embedding.weight",
                                         ".linear_1.weight",
                                         ".linear_2.weight",
                                         ".modality_projection.proj.weight"};
    if (t->n_dims != 2) return false;
    bool leaf = false;
    for (size_t i = 0; i < LV_ARRAY_LEN(leaves); i++) leaf = leaf || ends_with(t->name, leaves[i]);
    if (!leaf) return false;
    /* mlx-vlm quantizes SmolVLM's connector: base_quant_predicate skips only
     * vision_model / vision_tower / multi_modal_projector paths (spec smolvlm.md §12) */
    return quantize_vision || strncmp(t->name, "language_model.", 15) == 0 ||
           (smol && strncmp(t->name, "connector.", 10) == 0);
}

/* The name a tensor is written under: the canonical one, except for SmolVLM,
 * which mlx-vlm's idefics3 sanitize() names vision_model.*, connector.*,
 * language_model.{embed_tokens,layers,norm,lm_head}.* (Blaizzy/mlx-vlm
 * mlx_vlm/models/idefics3/idefics3.py; io/tensor_names.c maps them back). */
static char *out_name(const char *canon, bool smol) {
    static const struct {
        const char *from, *to;
    } rules[] = {{"vision_tower.vision_model.", "vision_model."},
                 {"language_model.model.", "language_model."}};
    for (size_t i = 0; smol && i < LV_ARRAY_LEN(rules); i++) {
        size_t n = strlen(rules[i].from);
        if (strncmp(canon, rules[i].from, n) != 0) continue;
        size_t m = strlen(rules[i].to), rest = strlen(canon + n);
        char *o = malloc(m + rest + 1);
        if (o) {
            memcpy(o, rules[i].to, m);
            memcpy(o + m, canon + n, rest + 1);
        }
        return o;
    }
    return strdup(canon);
}

static void plan_free(plan *p) {
    for (size_t i = 0; i < p->n_items; i++)
        for (int k = 0; k < 3; k++) free(p->items[i].names[k]);
    free(p->items);
    for (int s = 0; s < p->n_shards; s++) free(p->entries ? p->entries[s] : NULL);
    free(p->entries);
    free(p->n_entries);
    memset(p, 0, sizeof(*p));
}

/* One output entry while a shard's order is decided: which item and part
 * it belongs to travel with it through the sort. */
typedef struct {
    stw_entry e;
    size_t item;
    int part;
} slot;

/* The reference writer's order: descending element size, then name. */
static int slot_cmp(const void *a, const void *b) {
    const stw_entry *x = &((const slot *)a)->e, *y = &((const slot *)b)->e;
    size_t sx = dtype_size(x->dtype), sy = dtype_size(y->dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Fills p->entries[s] in file order and each item's entry[] indices. */
static lv_status order_shard(plan *p, int s, lv_err *err) {
    size_t n = 0;
    for (size_t i = 0; i < p->n_items; i++)
        if (p->items[i].shard == s) n += (size_t)p->items[i].n_parts;
    slot *sl = calloc(n ? n : 1, sizeof(*sl));
    p->entries[s] = calloc(n ? n : 1, sizeof(stw_entry));
    if (!sl || !p->entries[s]) {
        free(sl);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory planning the export");
    }
    size_t j = 0;
    for (size_t i = 0; i < p->n_items; i++)
        for (int k = 0; p->items[i].shard == s && k < p->items[i].n_parts; k++)
            sl[j++] = (slot){p->items[i].part[k], i, k};
    qsort(sl, n, sizeof(*sl), slot_cmp);
    for (j = 0; j < n; j++) {
        p->entries[s][j] = sl[j].e;
        p->items[sl[j].item].entry[sl[j].part] = j;
    }
    p->n_entries[s] = n;
    free(sl);
    return LV_OK;
}

static lv_status make_plan(const qsource *src, const mlx_export_opts *o, plan *p, lv_err *err) {
    memset(p, 0, sizeof(*p));
    size_t n = qsource_count(src);
    p->items = calloc(n ? n : 1, sizeof(plan_item));
    if (!p->items) return lv_fail(err, LV_ERR_NOMEM, "out of memory planning the export");
    p->n_items = n;
    uint64_t shard_max = o->shard_bytes ? o->shard_bytes : DEFAULT_SHARD_BYTES, in_shard = 0;
    bool smol = hf_is_idefics3(qsource_config(src));
    for (size_t i = 0; i < n; i++) {
        const qs_tensor *t = qsource_at(src, i);
        plan_item *it = &p->items[i];
        it->src = i;
        it->dt = t->dtype;
        if (it->dt != LV_DTYPE_F16 && it->dt != LV_DTYPE_BF16 && it->dt != LV_DTYPE_F32)
            it->dt = LV_DTYPE_F16;
        bool q = quantizable(t, o->quantize_vision, smol) && t->shape[1] % o->group == 0;
        it->kind = q                                                                  ? K_QUANT
                   : (t->n_dims == 4 && ends_with(t->name, "patch_embedding.weight")) ? K_CONV
                                                                                      : K_FLOAT;
        it->n_parts = q ? 3 : 1;
        it->names[0] = out_name(t->name, smol);
        if (!it->names[0]) goto nomem;
        stw_entry *e = it->part;
        e[0].dtype = it->dt;
        e[0].n_dims = t->n_dims;
        for (int d = 0; d < t->n_dims; d++) e[0].shape[d] = t->shape[d];
        if (it->kind == K_CONV) { /* OIHW -> OHWI */
            e[0].shape[1] = t->shape[2];
            e[0].shape[2] = t->shape[3];
            e[0].shape[3] = t->shape[1];
        }
        if (q) {
            size_t base = strlen(it->names[0]) - strlen(".weight");
            for (int k = 1; k < 3; k++) {
                it->names[k] = malloc(base + 8);
                if (!it->names[k]) goto nomem;
                memcpy(it->names[k], it->names[0], base);
                strcpy(it->names[k] + base, k == 1 ? ".scales" : ".biases");
                e[k].dtype = it->dt;
                e[k].n_dims = 2;
                e[k].shape[0] = t->shape[0];
                e[k].shape[1] = t->shape[1] / o->group;
            }
            e[0].dtype = LV_DTYPE_U32;
            e[0].shape[1] = t->shape[1] * o->bits / 32;
        }
        uint64_t bytes = 0;
        for (int k = 0; k < it->n_parts; k++) {
            e[k].name = it->names[k];
            bytes += stw_entry_bytes(&e[k]);
        }
        if (in_shard > 0 && in_shard + bytes > shard_max) {
            p->n_shards++;
            in_shard = 0;
        }
        it->shard = p->n_shards;
        in_shard += bytes;
        p->total_bytes += bytes;
    }
    p->n_shards++;
    p->entries = calloc((size_t)p->n_shards, sizeof(*p->entries));
    p->n_entries = calloc((size_t)p->n_shards, sizeof(*p->n_entries));
    if (!p->entries || !p->n_entries) goto nomem;
    for (int s = 0; s < p->n_shards; s++) {
        lv_status st = order_shard(p, s, err);
        if (st != LV_OK) {
            plan_free(p);
            return st;
        }
    }
    return LV_OK;
nomem:
    plan_free(p);
    return lv_fail(err, LV_ERR_NOMEM, "out of memory planning the export");
}

/* ---- quantization, rows split across threads --------------------------- */

typedef struct {
    const float *w;
    int rows, cols, bits, group;
    uint32_t *packed;
    float *scales, *biases;
    lv_status st;
    lv_err err;
} qjob;

static void *qjob_run(void *arg) {
    qjob *j = arg;
    j->st = mlx_affine_quantize(j->w, j->rows, j->cols, j->bits, j->group, j->packed, j->scales,
                                j->biases, &j->err);
    return NULL;
}

static lv_status quantize_par(const float *w, int rows, int cols, int bits, int group, int threads,
                              uint32_t *packed, float *scales, float *biases, lv_err *err) {
    qjob jobs[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    bool started[MAX_THREADS] = {false};
    int n = threads < rows ? threads : rows;
    size_t words = (size_t)cols * bits / 32, groups = (size_t)(cols / group);
    for (int k = 0; k < n; k++) {
        int r0 = (int)((int64_t)rows * k / n), r1 = (int)((int64_t)rows * (k + 1) / n);
        jobs[k] = (qjob){w + (size_t)r0 * cols,
                         r1 - r0,
                         cols,
                         bits,
                         group,
                         packed + (size_t)r0 * words,
                         scales + (size_t)r0 * groups,
                         biases + (size_t)r0 * groups,
                         LV_OK,
                         {{0}}};
        if (k > 0 && pthread_create(&tid[k], NULL, qjob_run, &jobs[k]) == 0) started[k] = true;
    }
    qjob_run(&jobs[0]);
    for (int k = 1; k < n; k++) {
        if (started[k])
            pthread_join(tid[k], NULL);
        else
            qjob_run(&jobs[k]); /* no thread: do it here */
    }
    for (int k = 0; k < n; k++)
        if (jobs[k].st != LV_OK) {
            if (err) *err = jobs[k].err;
            return jobs[k].st;
        }
    return LV_OK;
}

/* ---- files and directories --------------------------------------------- */

/* Writes len bytes to dir/name (via name.tmp + rename). */
static lv_status write_file(const char *dir, const char *name, const char *data, size_t len,
                            lv_err *err) {
    char path[4096], tmp[4200];
    lv_status st = lv_path_join(path, sizeof(path), dir, name, err);
    if (st != LV_OK) return st;
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return lv_fail(err, LV_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    int e = 0; /* the first failure's errno: what is reported (EFBIG, ENOSPC) */
    if (fwrite(data, 1, len, f) != len) e = errno;
    if (fclose(f) != 0 && !e) e = errno;
    if (!e && rename(tmp, path) != 0) e = errno;
    if (e) {
        remove(tmp);
        return lv_fail(err, LV_ERR_IO, "%s: write failed: %s", path, strerror(e));
    }
    return LV_OK;
}

static lv_status copy_file(const char *from, const char *dir, const char *name, lv_err *err) {
    char *data = NULL;
    size_t len = 0;
    lv_status st = lv_read_file(from, AUX_MAX_BYTES, &data, &len, err);
    if (st == LV_OK) st = write_file(dir, name, data, len, err);
    free(data);
    return st;
}

static lv_status write_json(const char *dir, const char *name, json_t *root, lv_err *err) {
    char *text = json_dumps_whole(root, JSON_INDENT(2));
    if (!text) return lv_fail(err, LV_ERR_NOMEM, "%s/%s: out of memory", dir, name);
    size_t len = strlen(text);
    lv_status st = write_file(dir, name, text, len, err);
    free(text);
    return st;
}

static void shard_name(char *out, size_t cap, int s, int n_shards) {
    if (n_shards == 1)
        snprintf(out, cap, "model.safetensors");
    else
        snprintf(out, cap, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
}

/* ---- the export -------------------------------------------------------- */

typedef struct {
    float *w;       /* source values */
    size_t w_cap;   /* floats */
    uint8_t *out;   /* converted weight */
    size_t out_cap; /* bytes */
    float *sc, *bi; /* scales, biases (float32) */
    size_t sc_cap, bi_cap;
    uint8_t *sc_out, *bi_out; /* the same, cast to the output dtype */
    size_t sco_cap, bio_cap;  /* bytes */
} buffers;

static lv_status grow(void **p, size_t *cap, size_t need, size_t elem, lv_err *err) {
    if (need <= *cap) return LV_OK;
    void *q = realloc(*p, need * elem);
    if (!q) return lv_fail(err, LV_ERR_NOMEM, "out of memory (%zu bytes)", need * elem);
    *p = q;
    *cap = need;
    return LV_OK;
}

/* Reads, converts and writes source item it into the open shard w. */
static lv_status export_item(const qsource *src, const plan_item *it, const mlx_export_opts *o,
                             int threads, buffers *b, stw *w, lv_err *err) {
    const qs_tensor *t = qsource_at(src, it->src);
    size_t n = (size_t)t->n_elems;
    lv_status st = grow((void **)&b->w, &b->w_cap, n ? n : 1, sizeof(float), err);
    if (st == LV_OK) st = grow((void **)&b->out, &b->out_cap, (n ? n : 1) * 4, 1, err);
    if (st != LV_OK) return st;
    if ((st = qsource_read(src, it->src, b->w, err)) != LV_OK) return st;
    if (it->kind == K_FLOAT) {
        cast_out(b->w, n, it->dt, b->out);
        return stw_write_tensor(w, it->entry[0], b->out, err);
    }
    if (it->kind == K_CONV) { /* [O, I, H, W] -> [O, H, W, I] */
        int64_t O = t->shape[0], I = t->shape[1], H = t->shape[2], W = t->shape[3];
        float *tr = (float *)b->out;
        for (int64_t a = 0; a < O; a++)
            for (int64_t c = 0; c < I; c++)
                for (int64_t h = 0; h < H; h++)
                    for (int64_t x = 0; x < W; x++)
                        tr[((a * H + h) * W + x) * I + c] = b->w[((a * I + c) * H + h) * W + x];
        memcpy(b->w, tr, n * sizeof(float));
        cast_out(b->w, n, it->dt, b->out);
        return stw_write_tensor(w, it->entry[0], b->out, err);
    }
    int rows = (int)t->shape[0], cols = (int)t->shape[1];
    size_t ng = (size_t)rows * (size_t)(cols / o->group);
    if ((st = grow((void **)&b->sc, &b->sc_cap, ng, sizeof(float), err)) != LV_OK ||
        (st = grow((void **)&b->bi, &b->bi_cap, ng, sizeof(float), err)) != LV_OK ||
        (st = grow((void **)&b->sc_out, &b->sco_cap, ng * 4, 1, err)) != LV_OK ||
        (st = grow((void **)&b->bi_out, &b->bio_cap, ng * 4, 1, err)) != LV_OK)
        return st;
    st = quantize_par(b->w, rows, cols, o->bits, o->group, threads, (uint32_t *)b->out, b->sc,
                      b->bi, err);
    if (st != LV_OK) {
        lv_err_prefix(err, "tensor '%s'", t->name);
        return st;
    }
    cast_out(b->sc, ng, it->dt, b->sc_out);
    cast_out(b->bi, ng, it->dt, b->bi_out);
    if ((st = stw_write_tensor(w, it->entry[0], b->out, err)) != LV_OK ||
        (st = stw_write_tensor(w, it->entry[1], b->sc_out, err)) != LV_OK)
        return st;
    return stw_write_tensor(w, it->entry[2], b->bi_out, err);
}

/* config.json with the quantization blocks added. */
static lv_status write_config(const qsource *src, const mlx_export_opts *o, const char *dir,
                              lv_err *err) {
    json_error_t je;
    const char *text = qsource_config_json(src);
    json_t *root = json_loadb_whole(text ? text : "", text ? strlen(text) : 0, 0, &je);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return lv_fail(err, LV_ERR_FORMAT, "config.json: not a JSON object (%s)", je.text);
    }
    lv_status st = LV_OK;
    json_t *q1 =
        json_pack("{s:i,s:i,s:s}", "group_size", o->group, "bits", o->bits, "mode", "affine");
    json_t *q2 = q1 ? json_deep_copy(q1) : NULL;
    if (!q1 || !q2 || json_object_set_new(root, "quantization", q1) != 0 ||
        json_object_set_new(root, "quantization_config", q2) != 0)
        st = lv_fail(err, LV_ERR_NOMEM, "config.json: out of memory");
    if (st == LV_OK) st = write_json(dir, "config.json", root, err);
    json_decref(root);
    return st;
}

static lv_status write_index(const plan *p, const char *dir, lv_err *err) {
    json_t *map = json_object();
    json_t *root = json_pack("{s:{s:I},s:o}", "metadata", "total_size", (json_int_t)p->total_bytes,
                             "weight_map", map);
    if (!root) return lv_fail(err, LV_ERR_NOMEM, "index: out of memory");
    lv_status st = LV_OK;
    for (size_t i = 0; i < p->n_items && st == LV_OK; i++) {
        const plan_item *it = &p->items[i];
        char file[64];
        shard_name(file, sizeof(file), it->shard, p->n_shards);
        for (int k = 0; k < it->n_parts; k++)
            if (json_object_set_new(map, it->names[k], json_string(file)) != 0)
                st = lv_fail(err, LV_ERR_NOMEM, "index: out of memory");
    }
    if (st == LV_OK) st = write_json(dir, "model.safetensors.index.json", root, err);
    json_decref(root);
    return st;
}

static lv_status write_aux(const qsource *src, const char *dir, lv_err *err) {
    static const char *const files[] = {
        "tokenizer.json",          "tokenizer_config.json",    "tokenizer.model",
        "special_tokens_map.json", "preprocessor_config.json", "processor_config.json",
        "generation_config.json",  "chat_template.json",       "chat_template.jinja"};
    const char *sdir = qsource_dir(src);
    lv_status st = LV_OK;
    if (sdir) {
        for (size_t i = 0; i < LV_ARRAY_LEN(files) && st == LV_OK; i++) {
            char from[4096];
            if ((st = lv_path_join(from, sizeof(from), sdir, files[i], err)) != LV_OK) break;
            if (lv_is_file(from)) st = copy_file(from, dir, files[i], err);
        }
        return st;
    }
    char *tok;
    size_t tok_len;
    if ((st = qsource_tokenizer_read(src, &tok, &tok_len, err)) != LV_OK) return st;
    if (tok) st = write_file(dir, "tokenizer.json", tok, tok_len, err);
    free(tok);
    if (st != LV_OK) return st;
    const char *pp = qsource_preproc_json(src);
    if (pp) st = write_file(dir, "preprocessor_config.json", pp, strlen(pp), err);
    /* a SmolVLM preset's other files, as its hub repository has them */
    const qs_preset *ps = qsource_preset(src);
    if (st != LV_OK || !ps || !ps->processor_json) return st;
    const char *names[3] = {"processor_config.json", "generation_config.json",
                            "tokenizer_config.json"};
    const char *texts[3] = {ps->processor_json, ps->generation_json, ps->tokenizer_config_json};
    for (int i = 0; i < 3 && st == LV_OK; i++)
        if (texts[i]) st = write_file(dir, names[i], texts[i], strlen(texts[i]), err);
    if (st == LV_OK && ps->chat_template) {
        json_t *ct = json_pack("{s:s}", "chat_template", ps->chat_template);
        st = ct ? write_json(dir, "chat_template.json", ct, err)
                : lv_fail(err, LV_ERR_NOMEM, "chat_template.json: out of memory");
        json_decref(ct);
    }
    return st;
}

static int online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

lv_status mlx_export(const qsource *src, const char *out_dir, const mlx_export_opts *opts,
                     qs_progress_fn progress, void *ud, lv_err *err) {
    mlx_export_opts o = *opts;
    if (!mlx_affine_bits_ok(o.bits))
        return lv_fail(err, LV_ERR_ARG, "bits %d: MLX affine supports 2, 3, 4, 5, 6, 8", o.bits);
    if (!mlx_affine_group_ok(o.group))
        return lv_fail(err, LV_ERR_ARG, "group size %d: MLX affine supports 32, 64, 128", o.group);
    int threads =
        o.threads > 0 ? (o.threads > MAX_THREADS ? MAX_THREADS : o.threads) : online_cpus();

    plan p;
    lv_status st = make_plan(src, &o, &p, err);
    if (st != LV_OK) return st;
    char tmp[OUTDIR_PATH_MAX];
    if ((st = outdir_begin(out_dir, o.overwrite, tmp, err)) != LV_OK) {
        plan_free(&p);
        return st;
    }
    buffers b = {0};
    stw *w = NULL;
    uint64_t done = 0;
    long n_done = 0;
    size_t next = 0;
    for (int s = 0; s < p.n_shards && st == LV_OK; s++) {
        char name[64], path[4300];
        shard_name(name, sizeof(name), s, p.n_shards);
        snprintf(path, sizeof(path), "%s/%s", tmp, name);
        if ((st = stw_begin(path, p.entries[s], p.n_entries[s], "mlx", &w, err)) != LV_OK) break;
        for (; next < p.n_items && p.items[next].shard == s; next++) {
            const plan_item *it = &p.items[next];
            if ((st = export_item(src, it, &o, threads, &b, w, err)) != LV_OK) break;
            for (int k = 0; k < it->n_parts; k++) done += stw_entry_bytes(&it->part[k]);
            if (o.fail_after > 0 && ++n_done >= o.fail_after) {
                st = lv_fail(err, LV_ERR_IO, "%s: simulated failure after %ld tensors", out_dir,
                             n_done);
                break;
            }
            if (o.cancel && *o.cancel) {
                st =
                    lv_fail(err, LV_ERR_CANCELLED, "%s: interrupted; nothing was written", out_dir);
                break;
            }
            if (progress) progress(ud, (size_t)done, (size_t)p.total_bytes, it->names[0]);
        }
        if (st != LV_OK) break;
        st = stw_finish(w, err);
        w = NULL;
    }
    stw_abort(w);
    if (st == LV_OK && p.n_shards > 1) st = write_index(&p, tmp, err);
    if (st == LV_OK) st = write_config(src, &o, tmp, err);
    if (st == LV_OK) st = write_aux(src, tmp, err);
    if (st == LV_OK) st = outdir_publish(tmp, out_dir, o.overwrite, err);
    if (st != LV_OK) outdir_abort(tmp);
    free(b.w);
    free(b.out);
    free(b.sc);
    free(b.bi);
    free(b.sc_out);
    free(b.bi_out);
    plan_free(&p);
    return st;
}
