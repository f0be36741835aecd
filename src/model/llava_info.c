/*
 * llava_info.c - what llava_load reports while it runs and what it leaves
 * to summarise (llava.h: llava_set_progress, llava_get_info).
 *
 * A 7B load maps two files in an instant and then spends seconds to tens
 * of seconds taking ~300 tensors onto the backend (page faults on the
 * mapping, quantized rows repacked), so the progress is counted a tensor
 * at a time through the part loaders' weights_progress hook. The same hook
 * counts each part's values and matrix types for the summary: what was
 * loaded, not what config.json says (only the tower layers the feature
 * layer needs are loaded).
 */
#include "backend/quant.h"
#include "base/clock.h"
#include "model/llava_impl.h"

#include <stdio.h>
#include <string.h>

void llava_set_progress(llava *m, llava_progress_fn fn, void *ud) {
    m->ls.fn = fn;
    m->ls.ud = ud;
}

static void report(llava *m) {
    llava_load_stats *ls = &m->ls;
    ls->p.seconds = (lv_now_ms() - ls->t0_ms) / 1e3;
    if (ls->fn) ls->fn(ls->ud, &ls->p);
}

void llava_load_begin(llava *m) {
    llava_progress_fn fn = m->ls.fn;
    void *ud = m->ls.ud;
    memset(&m->ls, 0, sizeof m->ls);
    m->ls.fn = fn;
    m->ls.ud = ud;
    m->ls.t0_ms = lv_now_ms();
}

void llava_load_mapped(llava *m, const st_set *st) {
    llava_load_progress *p = &m->ls.p;
    /* a GGUF pair is a set built over two mappings: its files are the pair */
    p->n_files = m->md.gguf_text ? 2 : (int)st_file_count(st);
    p->n_tensors = (int)st_count(st);
    for (size_t i = 0; i < st_count(st); i++) p->bytes_mapped += st_at(st, i)->nbytes;
    report(m);
}

void llava_load_part(llava *m, int part) {
    m->ls.part = part;
}

void llava_load_end(llava *m) {
    m->ls.p.done = true;
    report(m);
}

/* Adds params to the share of w's type among the part's matrices. */
static void count_type(llava_type_share *t, const be_weight *w, int64_t params) {
    int bits = w->dtype == BE_MLX ? w->q.bits : 0, group = w->dtype == BE_MLX ? w->q.group : 0;
    for (int i = 0; i < LLAVA_TYPES; i++) {
        if (!t[i].params) t[i] = (llava_type_share){(int)w->dtype, bits, group, 0};
        if (t[i].dtype == (int)w->dtype && t[i].bits == bits && t[i].group == group) {
            t[i].params += params;
            return;
        }
    }
}

static void on_tensor(void *ud, const be_weight *w, size_t bytes, int64_t params) {
    llava *m = ud;
    llava_load_stats *ls = &m->ls;
    ls->p.tensors_loaded++;
    ls->p.bytes_loaded += bytes;
    ls->params[ls->part] += params;
    if (w) count_type(ls->types[ls->part], w, params);
    report(m);
}

weights_progress llava_load_hook(llava *m) {
    return (weights_progress){on_tensor, m};
}

/* ---- the summary ------------------------------------------------------------------- */

static void type_name(char *out, size_t cap, const llava_type_share *t) {
    if (t->dtype == BE_MLX)
        snprintf(out, cap, "mlx-int%d g%d", t->bits, t->group);
    else
        snprintf(out, cap, "%s", be_dtype_name((be_dtype)t->dtype));
}

/* The part's types, largest share first, joined with " + ". */
static void types_text(char *out, size_t cap, const llava_type_share *types) {
    llava_type_share t[LLAVA_TYPES];
    memcpy(t, types, sizeof t);
    size_t n = 0;
    out[0] = '\0';
    for (;;) {
        int best = -1;
        for (int i = 0; i < LLAVA_TYPES; i++)
            if (t[i].params && (best < 0 || t[i].params > t[best].params)) best = i;
        if (best < 0) break;
        char name[32];
        type_name(name, sizeof name, &t[best]);
        int k = snprintf(out + n, cap - n, "%s%s", n ? " + " : "", name);
        if (k < 0 || (size_t)k >= cap - n) break;
        n += (size_t)k;
        t[best].params = 0;
    }
}

void llava_get_info(const llava *m, llava_info *out) {
    memset(out, 0, sizeof *out);
    const lv_model_config *c = &m->md.config;
    const llava_load_stats *ls = &m->ls;
    out->arch = c->model_type;
    out->text_arch = c->text.model_type;
    out->params_vision = ls->params[0];
    out->params_projector = ls->params[1];
    out->params_text = ls->params[2];
    char text[80];
    types_text(text, sizeof text, ls->types[2]);
    bool mlx = strstr(text, "mlx-") != NULL;
    snprintf(out->weights, sizeof out->weights, "%s%s", text,
             m->md.gguf_text ? " (gguf)"
             : mlx || !*text ? ""
                             : " (safetensors)");
    llava_type_share vision[LLAVA_TYPES];
    memcpy(vision, ls->types[0], sizeof vision);
    for (int i = 0; i < LLAVA_TYPES; i++) /* the projector's matrices join the tower's */
        if (ls->types[1][i].params) {
            be_weight w = {.dtype = (be_dtype)ls->types[1][i].dtype,
                           .q = {.bits = ls->types[1][i].bits, .group = ls->types[1][i].group}};
            count_type(vision, &w, ls->types[1][i].params);
        }
    types_text(out->vision_weights, sizeof out->vision_weights, vision);
    out->ctx = llava_max_ctx(m);
    out->kv_bytes_per_pos = llava_kv_bytes_per_pos(m);
    if (m->idefics3) {
        /* one frame at the fewest; the most: the largest grid a longest_edge
         * image splits into (ceil(L/T)² tiles + the global image: 17 frames
         * for the released sizes, L = 4·T) */
        const img_proc_params *ip = &m->image;
        int seq = c->image_seq_length, T = ip->max_image_size, L = ip->longest_edge;
        int side = T > 0 ? (L + T - 1) / T : 0;
        bool split = ip->do_image_splitting && side > 1;
        out->image_tokens_base = seq;
        out->image_tokens_max = split ? (side * side + 1) * seq : seq;
        out->max_h = out->max_w = split ? L : 0;
        out->load = ls->p;
        return;
    }
    /* the fewest rows: the base view alone; the most: anyres at each pinpoint */
    int size = c->vision.image_size;
    img_tensor base = {.n_tiles = 1, .image_h = size, .image_w = size};
    out->image_tokens_base =
        m->next ? llava_tensor_token_count(m, &base) : llava_image_token_count(m, size, size);
    out->image_tokens_max = out->image_tokens_base;
    for (int i = 0; m->next && i < m->image.n_pinpoints; i++) {
        int h = m->image.pinpoints[i][0], w = m->image.pinpoints[i][1];
        int n = llava_image_token_count(m, h, w);
        if (n > out->image_tokens_max) {
            out->image_tokens_max = n;
            out->max_h = h;
            out->max_w = w;
        }
    }
    out->load = ls->p;
}
