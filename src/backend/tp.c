/*
 * tp.c - tensor parallelism as a backend (tp.h): buffers as handles over
 * per-rank storage, weights cut per rank, each op issued to every rank with
 * its offsets and counts translated to the rank's shard, and the sums of
 * BE_SPLIT_IN matmuls through the communicator.
 *
 * A buffer handle is ((slot + 1) << HANDLE_SHIFT) + offset: the model adds
 * offsets to it and passes it back, never reading through it. A layout
 * error (a model asking for what the split cannot give, e.g. a norm over a
 * sharded row) is a bug: it is recorded as the backend's status (ops cannot
 * return errors) and the op is skipped.
 */
#include "backend/tp.h"

#include "backend/quant.h"
#include "base/log.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HANDLE_SHIFT 36 /* 64 GiB a buffer at most; 2047 buffers at most */
#define MAX_BUFS     2047

enum { L_UNSET = 0, L_REPL, L_SHARD };

typedef struct {
    bool used;
    size_t bytes;  /* as allocated (the whole, unsplit size) */
    int layout;    /* L_*: what the last write made it */
    size_t row;    /* L_SHARD: the bytes of one whole row (each rank holds row / n of it) */
    size_t cap;    /* bytes of storage each rank holds (0: none yet) */
    bool borrowed; /* storage made by a rank's vector_init: released with release too */
    void *p[TP_MAX_RANKS];
} tbuf;

typedef struct {
    be_split split;
    be_weight w[TP_MAX_RANKS];
    void *hold[TP_MAX_RANKS][3]; /* host copies a rank's weight borrows (codes, scales, biases) */
} tweight;

typedef struct {
    int n;
    be ranks[TP_MAX_RANKS];
    tp_comm *comm;
    tbuf *bufs;
    int n_bufs;
    char *tmp; /* download's gather scratch */
    size_t tmp_cap;
    lv_status st; /* the first layout error */
    lv_err err;
} tpc;

static tpc *C(be *b) {
    return b->ctx;
}

/* Every rank's table is the same (tp_setup's rank_ops). */
static const struct be_ops *ops_of(const tpc *c) {
    return c->ranks[0].ops;
}

static void bug(tpc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bug(tpc *c, const char *fmt, ...) {
    if (c->st) return;
    va_list ap;
    va_start(ap, fmt);
    char msg[sizeof c->err.msg];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->st = lv_fail(&c->err, LV_ERR_DEVICE, "tensor parallel: %s", msg);
    LV_ERROR("%s", c->err.msg);
}

/* ---- buffers --------------------------------------------------------------------------- */

static tbuf *find(tpc *c, const void *p, size_t *off) {
    uintptr_t u = (uintptr_t)p;
    size_t slot = (size_t)(u >> HANDLE_SHIFT);
    *off = (size_t)(u & (((uintptr_t)1 << HANDLE_SHIFT) - 1));
    if (slot < 1 || slot > (size_t)c->n_bufs || !c->bufs[slot - 1].used) {
        bug(c, "%p is not a buffer of this backend", p);
        return NULL;
    }
    tbuf *t = &c->bufs[slot - 1];
    if (*off > t->bytes) {
        bug(c, "offset %zu past a buffer of %zu bytes", *off, t->bytes);
        return NULL;
    }
    return t;
}

/* Rank r's address of byte off of t (a sharded buffer: off must start a row). */
static void *at(tpc *c, tbuf *t, size_t off, int r) {
    if (t->layout == L_SHARD) {
        if (off % t->row) {
            bug(c, "offset %zu inside a sharded row of %zu bytes", off, t->row);
            return NULL;
        }
        return (char *)t->p[r] + off / t->row * (t->row / c->n);
    }
    return (char *)t->p[r] + off;
}

static void free_storage(tpc *c, tbuf *t) {
    for (int r = 0; r < c->n; r++) {
        be *rb = &c->ranks[r];
        rb->ops->release(rb, t->p[r]);
        t->p[r] = NULL;
    }
    t->cap = 0;
}

/* Before a write of layout (row: L_SHARD's whole row bytes, of elements of es
 * bytes): storage for it on every rank. A layout change keeps the storage
 * when it is large enough (the buffer's old contents are dead by then: a
 * model reuses scratch whole). */
static bool prepare(tpc *c, tbuf *t, int layout, size_t row, size_t es) {
    if (c->st) return false;
    if (layout == L_SHARD && (row == 0 || row % es || row / es % (size_t)c->n)) {
        bug(c, "a row of %zu bytes does not split %d ways", row, c->n);
        return false;
    }
    size_t need = layout == L_SHARD ? (t->bytes + row - 1) / row * (row / c->n) : t->bytes;
    if (t->cap < need) { /* only a split buffer (alloc_split) written whole */
        LV_DEBUG("tensor parallel: a buffer of %zu bytes grows from %zu to %zu a rank", t->bytes,
                 t->cap, need);
        if (t->borrowed) {
            bug(c, "a parameter vector written as a sharded buffer");
            return false;
        }
        free_storage(c, t);
        for (int r = 0; r < c->n; r++) {
            be *rb = &c->ranks[r];
            if (!(t->p[r] = rb->ops->alloc(rb, need ? need : 1))) {
                free_storage(c, t);
                c->st = lv_fail(&c->err, LV_ERR_NOMEM,
                                "tensor parallel: out of memory for %zu bytes on rank %d", need, r);
                return false;
            }
        }
        t->cap = need;
    }
    t->layout = layout;
    t->row = layout == L_SHARD ? row : 0;
    return true;
}

/* A buffer being read must have been written. */
static tbuf *readable(tpc *c, const void *p, size_t *off) {
    tbuf *t = find(c, p, off);
    if (t && t->layout == L_UNSET) {
        bug(c, "a buffer read before it was written");
        return NULL;
    }
    return t;
}

/* A handle with storage on every rank: bytes each (any layout fits), or for
 * rows of row bytes split n ways (row > 0: the buffer starts sharded).
 * Storage is made here, never at a write: a write may be inside a recorded
 * step (a CUDA graph's capture), where a device allocation is not allowed. */
/* A free slot for a buffer of bytes, marked used, with no storage yet; its
 * handle in *h. NULL when there is no room. */
static tbuf *new_slot(tpc *c, size_t bytes, void **h) {
    if (bytes >= (size_t)1 << HANDLE_SHIFT) return NULL;
    int slot = 0;
    while (slot < c->n_bufs && c->bufs[slot].used) slot++;
    if (slot == c->n_bufs) {
        if (c->n_bufs == MAX_BUFS) return NULL;
        int cap = c->n_bufs ? c->n_bufs * 2 : 64;
        if (cap > MAX_BUFS) cap = MAX_BUFS;
        tbuf *nb = realloc(c->bufs, (size_t)cap * sizeof *nb);
        if (!nb) return NULL;
        memset(nb + c->n_bufs, 0, (size_t)(cap - c->n_bufs) * sizeof *nb);
        c->bufs = nb;
        c->n_bufs = cap;
    }
    tbuf *t = &c->bufs[slot];
    *t = (tbuf){.used = true, .bytes = bytes};
    *h = (void *)((uintptr_t)(slot + 1) << HANDLE_SHIFT);
    return t;
}

static void *tp_alloc_rows(be *b, size_t bytes, size_t row) {
    tpc *c = C(b);
    void *h;
    tbuf *t = new_slot(c, bytes, &h);
    if (!t) return NULL;
    size_t need = bytes;
    if (row) {
        if (row % (size_t)c->n) {
            *t = (tbuf){0};
            return NULL;
        }
        need = (bytes + row - 1) / row * (row / c->n);
        t->layout = L_SHARD;
        t->row = row;
    }
    for (int r = 0; r < c->n; r++) {
        be *rb = &c->ranks[r];
        if (!(t->p[r] = rb->ops->alloc(rb, need ? need : 1))) {
            free_storage(c, t);
            *t = (tbuf){0};
            return NULL;
        }
    }
    t->cap = need;
    return h;
}

static void *tp_alloc(be *b, size_t bytes) {
    return tp_alloc_rows(b, bytes, 0);
}

static void *tp_alloc_split(be *b, size_t bytes, size_t row_bytes) {
    return tp_alloc_rows(b, bytes, row_bytes);
}

static void tp_release(be *b, void *p) {
    if (!p) return;
    tpc *c = C(b);
    size_t off;
    tbuf *t = find(c, p, &off);
    if (!t) return;
    free_storage(c, t);
    *t = (tbuf){0};
}

static void tp_upload(be *b, void *dst, const void *src, size_t bytes) {
    tpc *c = C(b);
    size_t off;
    tbuf *t = find(c, dst, &off);
    if (!t || !prepare(c, t, L_REPL, 0, 4)) return;
    for (int r = 0; r < c->n; r++) {
        be *rb = &c->ranks[r];
        rb->ops->upload(rb, at(c, t, off, r), src, bytes);
    }
}

static void tp_download(be *b, void *dst, const void *src, size_t bytes) {
    tpc *c = C(b);
    size_t off;
    tbuf *t = readable(c, src, &off);
    if (!t) return;
    if (t->layout == L_REPL) {
        be *rb = &c->ranks[0];
        rb->ops->download(rb, dst, at(c, t, off, 0), bytes);
        return;
    }
    /* sharded: each rank's slice of every row, gathered into whole rows */
    size_t rows = bytes / t->row, part = t->row / c->n;
    if (bytes % t->row) {
        bug(c, "a download of %zu bytes is not whole rows of %zu", bytes, t->row);
        return;
    }
    if (c->tmp_cap < rows * part) {
        char *nt = realloc(c->tmp, rows * part);
        if (!nt) {
            c->st = lv_fail(&c->err, LV_ERR_NOMEM, "tensor parallel: out of memory");
            return;
        }
        c->tmp = nt;
        c->tmp_cap = rows * part;
    }
    for (int r = 0; r < c->n; r++) {
        be *rb = &c->ranks[r];
        rb->ops->download(rb, c->tmp, at(c, t, off, r), rows * part);
        for (size_t i = 0; i < rows; i++)
            memcpy((char *)dst + i * t->row + (size_t)r * part, c->tmp + i * part, part);
    }
}

static void tp_copy(be *b, void *dst, const void *src, size_t bytes) {
    tpc *c = C(b);
    size_t so, doff;
    tbuf *s = readable(c, src, &so), *d = find(c, dst, &doff);
    if (!s || !d) return;
    int layout = s->layout;
    size_t row = s->row;
    if (d != s && !prepare(c, d, layout, row, 1)) return; /* its rows were checked at their write */
    size_t n = bytes;
    if (layout == L_SHARD) {
        if (bytes % row) {
            bug(c, "a copy of %zu bytes is not whole rows of %zu", bytes, row);
            return;
        }
        n = bytes / row * (row / c->n);
    }
    for (int r = 0; r < c->n; r++) {
        be *rb = &c->ranks[r];
        rb->ops->copy(rb, at(c, d, doff, r), at(c, s, so, r), n);
    }
}

static void tp_synchronize(be *b) {
    tpc *c = C(b);
    for (int r = 0; r < c->n; r++) c->ranks[r].ops->synchronize(&c->ranks[r]);
}

static float *tp_vector_init(be *b, be_dtype dtype, int n, const void *host) {
    tpc *c = C(b);
    void *h;
    tbuf *t = new_slot(c, (size_t)n * sizeof(float), &h);
    if (!t) return NULL;
    for (int r = 0; r < c->n; r++) {
        be *rb = &c->ranks[r];
        if (!(t->p[r] = rb->ops->vector_init(rb, dtype, n, host))) {
            free_storage(c, t);
            *t = (tbuf){0};
            return NULL;
        }
    }
    t->layout = L_REPL;
    t->cap = t->bytes;
    t->borrowed = true;
    return h;
}

/* ---- weights ----------------------------------------------------------------------------- */

static size_t scale_bytes(be_dtype dt) {
    return dt == BE_F32 ? 4 : 2;
}

/* Rows [r0, r0 + n) of each row's columns [c0, c0 + cl) of (rows x cols) bytes rb a row,
 * into a new buffer (rows x part bytes). NULL when out of memory. */
static void *gather_cols(const void *src, int rows, size_t rb, size_t off, size_t part) {
    char *d = malloc((size_t)rows * part);
    if (d)
        for (int i = 0; i < rows; i++)
            memcpy(d + (size_t)i * part, (const char *)src + (size_t)i * rb + off, part);
    return d;
}

static void tweight_free(tpc *c, tweight *tw) {
    for (int r = 0; r < c->n; r++) {
        be *rb = &c->ranks[r];
        if (tw->w[r].rows) rb->ops->weight_free(rb, &tw->w[r]);
        for (int k = 0; k < 3; k++) free(tw->hold[r][k]);
    }
    free(tw);
}

static lv_status tp_weight_init_split(be *b, be_weight *w, be_dtype dtype, int rows, int cols,
                                      const void *host, const be_quant *q, be_split split,
                                      lv_err *err) {
    tpc *c = C(b);
    int n = c->n;
    size_t rb = be_row_bytes(dtype, cols, q);
    if (!rb)
        return lv_fail(err, LV_ERR_ARG, "a %s weight of %d columns is not whole blocks",
                       be_dtype_name(dtype), cols);
    if (split == BE_SPLIT_OUT && rows % n)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "tensor parallel %d: a weight of %d rows (output features) does not split "
                       "%d ways",
                       n, rows, n);
    size_t prb = split == BE_SPLIT_IN && cols % n == 0 ? be_row_bytes(dtype, cols / n, q) : 0;
    if (split == BE_SPLIT_IN && (!prb || prb * (size_t)n != rb))
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "tensor parallel %d: a %s weight of %d columns (input features) does not "
                       "split %d ways into whole blocks",
                       n, be_dtype_name(dtype), cols, n);
    tweight *tw = calloc(1, sizeof *tw);
    if (!tw) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    tw->split = split;
    int groups = dtype == BE_MLX ? cols / q->group : 0;
    size_t gb = dtype == BE_MLX ? scale_bytes(q->scale_dtype) : 0;
    for (int r = 0; r < n; r++) {
        be *rk = &c->ranks[r];
        int rr = rows, cc = cols;
        const void *data = host;
        be_quant qr = q ? *q : (be_quant){0};
        if (split == BE_SPLIT_OUT) {
            rr = rows / n;
            data = (const char *)host + (size_t)r * rr * rb;
            if (dtype == BE_MLX) {
                size_t skip = (size_t)r * rr * groups * gb;
                qr.scales = (const char *)q->scales + skip;
                qr.biases = (const char *)q->biases + skip;
            }
        } else if (split == BE_SPLIT_IN) {
            cc = cols / n;
            void *codes = gather_cols(host, rows, rb, (size_t)r * prb, prb);
            tw->hold[r][0] = codes;
            data = codes;
            if (dtype == BE_MLX) {
                size_t gpart = (size_t)(groups / n) * gb, grow = (size_t)groups * gb;
                tw->hold[r][1] = gather_cols(q->scales, rows, grow, (size_t)r * gpart, gpart);
                tw->hold[r][2] = gather_cols(q->biases, rows, grow, (size_t)r * gpart, gpart);
                qr.scales = tw->hold[r][1];
                qr.biases = tw->hold[r][2];
            }
            if (!codes || (dtype == BE_MLX && (!tw->hold[r][1] || !tw->hold[r][2]))) {
                tweight_free(c, tw);
                return lv_fail(err, LV_ERR_NOMEM, "out of memory");
            }
        }
        lv_status st = rk->ops->weight_init(rk, &tw->w[r], dtype, rr, cc, data,
                                            dtype == BE_MLX ? &qr : NULL, err);
        if (st) {
            tw->w[r].rows = 0;
            tweight_free(c, tw);
            lv_err_prefix(err, "tensor parallel rank %d", r);
            return st;
        }
        /* a host copy the rank's weight does not point at (it made its own) goes now */
        for (int k = 0; k < 3; k++) {
            const void *h = tw->hold[r][k];
            if (h && h != tw->w[r].data && h != tw->w[r].q.scales && h != tw->w[r].q.biases) {
                free(tw->hold[r][k]);
                tw->hold[r][k] = NULL;
            }
        }
    }
    *w = (be_weight){.dtype = dtype,
                     .rows = rows,
                     .cols = cols,
                     .row_bytes = rb,
                     .q = q ? *q : (be_quant){0},
                     .data = host,
                     .prep = tw};
    return LV_OK;
}

static lv_status tp_weight_init(be *b, be_weight *w, be_dtype dtype, int rows, int cols,
                                const void *host, const be_quant *q, lv_err *err) {
    return tp_weight_init_split(b, w, dtype, rows, cols, host, q, BE_SPLIT_NONE, err);
}

static void tp_weight_free(be *b, be_weight *w) {
    if (w->prep) tweight_free(C(b), w->prep);
    free(w->owned);
    memset(w, 0, sizeof *w);
}

/* ---- ops --------------------------------------------------------------------------------- */

/* The rank's address of a read-only operand (NULL stays NULL). */
static const void *in(tpc *c, const void *p, int r) {
    if (!p) return NULL;
    size_t off;
    tbuf *t = readable(c, p, &off);
    return t ? at(c, t, off, r) : NULL;
}

static void one_matmul(tpc *c, float *y, const float *x, const be_weight *w, const float *bias,
                       int n) {
    const tweight *tw = w->prep;
    size_t xo, yo, bo = 0;
    tbuf *tx = readable(c, x, &xo), *ty = find(c, y, &yo), *tb = NULL;
    if (!tx || !ty || (bias && !(tb = readable(c, bias, &bo)))) return;
    bool x_shard = tx->layout == L_SHARD;
    if (tw->split == BE_SPLIT_IN ? !x_shard || tx->row != (size_t)w->cols * sizeof(float)
                                 : x_shard) {
        bug(c, "a matmul (%d x %d, split %d) over a %s input", w->rows, w->cols, (int)tw->split,
            x_shard ? "sharded" : "replicated");
        return;
    }
    if (!prepare(c, ty, tw->split == BE_SPLIT_OUT ? L_SHARD : L_REPL,
                 (size_t)w->rows * sizeof(float), sizeof(float)))
        return;
    float *ys[TP_MAX_RANKS];
    for (int r = 0; r < c->n; r++) {
        be *rb = &c->ranks[r];
        const float *br = NULL;
        if (tb && tw->split != BE_SPLIT_IN)
            br = (const float *)at(c, tb, bo, r) +
                 (tw->split == BE_SPLIT_OUT ? (size_t)r * (w->rows / c->n) : 0);
        if (tb && tw->split == BE_SPLIT_IN && r == 0) br = at(c, tb, bo, 0); /* added once */
        ys[r] = at(c, ty, yo, r);
        rb->ops->matmul(rb, ys[r], at(c, tx, xo, r), &tw->w[r], br, n);
    }
    if (tw->split == BE_SPLIT_IN && c->n > 1)
        c->comm->allreduce_sum(c->comm, ys, (size_t)n * w->rows);
}

static void tp_matmul(be *b, float *y, const float *x, const be_weight *w, const float *bias,
                      int n) {
    one_matmul(C(b), y, x, w, bias, n);
}

/* Weights of one split (OUT or NONE) over a replicated x go to each rank's
 * matmul_multi; anything else matmul by matmul. */
static void tp_matmul_multi(be *b, float *const y[], const float *x, const be_weight *const w[],
                            const float *const bias[], int count, int n) {
    tpc *c = C(b);
    const struct be_ops *ro = ops_of(c);
    bool same = ro->matmul_multi && count <= 4;
    for (int i = 0; i < count && same; i++) {
        const tweight *tw = w[i]->prep;
        same = tw->split == ((const tweight *)w[0]->prep)->split && tw->split != BE_SPLIT_IN;
    }
    if (!same) {
        for (int i = 0; i < count; i++) one_matmul(c, y[i], x, w[i], bias[i], n);
        return;
    }
    size_t xo;
    tbuf *tx = readable(c, x, &xo);
    if (!tx) return;
    if (tx->layout == L_SHARD) {
        bug(c, "a matmul over a sharded input");
        return;
    }
    tbuf *ty[4], *tb[4];
    size_t yo[4], bo[4];
    bool out = ((const tweight *)w[0]->prep)->split == BE_SPLIT_OUT;
    for (int i = 0; i < count; i++) {
        tb[i] = NULL;
        if (!(ty[i] = find(c, y[i], &yo[i])) ||
            (bias[i] && !(tb[i] = readable(c, bias[i], &bo[i]))))
            return;
        if (!prepare(c, ty[i], out ? L_SHARD : L_REPL, (size_t)w[i]->rows * sizeof(float),
                     sizeof(float)))
            return;
    }
    for (int r = 0; r < c->n; r++) {
        be *rb = &c->ranks[r];
        float *yr[4];
        const be_weight *wr[4];
        const float *br[4];
        for (int i = 0; i < count; i++) {
            const tweight *tw = w[i]->prep;
            yr[i] = at(c, ty[i], yo[i], r);
            wr[i] = &tw->w[r];
            br[i] = tb[i] ? (const float *)at(c, tb[i], bo[i], r) +
                                (out ? (size_t)r * (w[i]->rows / c->n) : 0)
                          : NULL;
        }
        rb->ops->matmul_multi(rb, yr, at(c, tx, xo, r), wr, br, count, n);
    }
}

/* A replicated operand (norms, residuals). */
static bool repl(tpc *c, tbuf *t, const char *what) {
    if (t && t->layout != L_REPL) {
        bug(c, "%s over a sharded buffer", what);
        return false;
    }
    return t != NULL;
}

static void tp_rmsnorm(be *b, float *y, const float *x, const float *g, int n, int dim, float eps) {
    tpc *c = C(b);
    size_t xo, yo, go;
    tbuf *tx = readable(c, x, &xo), *tg = readable(c, g, &go), *ty = find(c, y, &yo);
    if (!repl(c, tx, "rmsnorm") || !tg || !ty || !prepare(c, ty, L_REPL, 0, 4)) return;
    for (int r = 0; r < c->n; r++) {
        be *rb = &c->ranks[r];
        rb->ops->rmsnorm(rb, at(c, ty, yo, r), at(c, tx, xo, r), at(c, tg, go, r), n, dim, eps);
    }
}

static void tp_layernorm(be *b, float *y, const float *x, const float *g, const float *beta, int n,
                         int dim, float eps) {
    tpc *c = C(b);
    size_t xo, yo;
    tbuf *tx = readable(c, x, &xo), *ty = find(c, y, &yo);
    if (!repl(c, tx, "layernorm") || !ty || !prepare(c, ty, L_REPL, 0, 4)) return;
    for (int r = 0; r < c->n; r++) {
        be *rb = &c->ranks[r];
        rb->ops->layernorm(rb, at(c, ty, yo, r), at(c, tx, xo, r), in(c, g, r), in(c, beta, r), n,
                           dim, eps);
    }
}

/* The heads a rank holds: all of a replicated buffer's, 1/n of a sharded one's. */
static int heads(tpc *c, const tbuf *t, int h) {
    return t->layout == L_SHARD ? h / c->n : h;
}

static void tp_rope(be *b, float *x, int n, int n_heads, int head_dim, const int *pos,
                    float theta) {
    tpc *c = C(b);
    size_t xo;
    tbuf *tx = readable(c, x, &xo);
    if (!tx) return;
    if (tx->layout == L_SHARD && (n_heads % c->n || tx->row != (size_t)n_heads * head_dim * 4)) {
        bug(c, "RoPE over %d heads does not split %d ways", n_heads, c->n);
        return;
    }
    for (int r = 0; r < c->n; r++) {
        be *rb = &c->ranks[r];
        rb->ops->rope(rb, at(c, tx, xo, r), n, heads(c, tx, n_heads), head_dim, in(c, pos, r),
                      theta);
    }
}

static void tp_attention(be *b, float *out, const float *q, const void *k, const void *v,
                         be_dtype kv_dtype, int n_q, int q_pos0, int n_kv, int n_heads,
                         int n_kv_heads, int head_dim, bool causal) {
    tpc *c = C(b);
    size_t qo, ko, vo, oo;
    tbuf *tq = readable(c, q, &qo), *tk = readable(c, k, &ko), *tv = readable(c, v, &vo),
         *to = find(c, out, &oo);
    if (!tq || !tk || !tv || !to) return;
    bool shard = tq->layout == L_SHARD;
    if ((tk->layout == L_SHARD) != shard || (tv->layout == L_SHARD) != shard ||
        (shard && (n_heads % c->n || n_kv_heads % c->n))) {
        bug(c, "attention of %d heads (%d key/value heads) does not split %d ways", n_heads,
            n_kv_heads, c->n);
        return;
    }
    if (!prepare(c, to, shard ? L_SHARD : L_REPL, (size_t)n_heads * head_dim * sizeof(float),
                 sizeof(float)))
        return;
    int hq = shard ? n_heads / c->n : n_heads, hk = shard ? n_kv_heads / c->n : n_kv_heads;
    for (int r = 0; r < c->n; r++) {
        be *rb = &c->ranks[r];
        rb->ops->attention(rb, at(c, to, oo, r), at(c, tq, qo, r), at(c, tk, ko, r),
                           at(c, tv, vo, r), kv_dtype, n_q, q_pos0, n_kv, hq, hk, head_dim, causal);
    }
}

static void tp_store_as(be *b, void *dst, be_dtype dtype, const float *src, size_t n) {
    tpc *c = C(b);
    size_t so, doff;
    tbuf *ts = readable(c, src, &so), *td = find(c, dst, &doff);
    if (!ts || !td) return;
    size_t es = dtype == BE_F16 ? 2 : 4;
    bool shard = ts->layout == L_SHARD;
    if (!prepare(c, td, ts->layout, shard ? ts->row / 4 * es : 0, es)) return;
    for (int r = 0; r < c->n; r++) {
        be *rb = &c->ranks[r];
        rb->ops->store_as(rb, at(c, td, doff, r), dtype, at(c, ts, so, r), shard ? n / c->n : n);
    }
}

/* n elements of a buffer: n / ranks of a sharded one. */
static size_t count(tpc *c, const tbuf *t, size_t n) {
    return t->layout == L_SHARD ? n / c->n : n;
}

/* An elementwise op in place on x, on each rank's part. */
static void unary(tpc *c, void (*fn)(be *, float *, size_t), float *x, size_t n) {
    size_t xo;
    tbuf *tx = readable(c, x, &xo);
    if (!tx) return;
    for (int r = 0; r < c->n; r++) fn(&c->ranks[r], at(c, tx, xo, r), count(c, tx, n));
}

/* An elementwise op of y and x into y, on each rank's part; both laid out alike. */
static void binary(tpc *c, void (*fn)(be *, float *, const float *, size_t), const char *what,
                   float *y, const float *x, size_t n) {
    size_t yo, xo;
    tbuf *ty = readable(c, y, &yo), *tx = readable(c, x, &xo);
    if (!ty || !tx) return;
    if (ty->layout != tx->layout) {
        bug(c, "%s over a sharded and a replicated buffer", what);
        return;
    }
    for (int r = 0; r < c->n; r++)
        fn(&c->ranks[r], at(c, ty, yo, r), at(c, tx, xo, r), count(c, ty, n));
}

static void tp_silu_mul(be *b, float *gate, const float *up, size_t n) {
    binary(C(b), ops_of(C(b))->silu_mul, "silu_mul", gate, up, n);
}

static void tp_add(be *b, float *y, const float *x, size_t n) {
    binary(C(b), ops_of(C(b))->add, "add", y, x, n);
}

static void tp_gelu(be *b, float *x, size_t n) {
    unary(C(b), ops_of(C(b))->gelu, x, n);
}

static void tp_quick_gelu(be *b, float *x, size_t n) {
    unary(C(b), ops_of(C(b))->quick_gelu, x, n);
}

static void tp_gelu_tanh(be *b, float *x, size_t n) {
    unary(C(b), ops_of(C(b))->gelu_tanh, x, n);
}

static void tp_add_rmsnorm(be *b, float *x, const float *delta, float *y, const float *g, int n,
                           int dim, float eps) {
    tpc *c = C(b);
    size_t xo, dlo, yo, go;
    tbuf *tx = readable(c, x, &xo), *td = readable(c, delta, &dlo), *ty = find(c, y, &yo),
         *tg = readable(c, g, &go);
    if (!repl(c, tx, "add_rmsnorm") || !repl(c, td, "add_rmsnorm") || !ty || !tg ||
        !prepare(c, ty, L_REPL, 0, 4))
        return;
    for (int r = 0; r < c->n; r++) {
        be *rb = &c->ranks[r];
        float *xr = at(c, tx, xo, r), *yr = at(c, ty, yo, r);
        const float *dr = at(c, td, dlo, r), *gr = at(c, tg, go, r);
        if (rb->ops->add_rmsnorm) {
            rb->ops->add_rmsnorm(rb, xr, dr, yr, gr, n, dim, eps);
        } else {
            rb->ops->add(rb, xr, dr, (size_t)n * dim);
            rb->ops->rmsnorm(rb, yr, xr, gr, n, dim, eps);
        }
    }
}

static void tp_embed_rows(be *b, float *out, const be_weight *table, const int32_t *ids, int n) {
    tpc *c = C(b);
    const tweight *tw = table->prep;
    size_t oo;
    tbuf *to = find(c, out, &oo);
    if (!to) return;
    if (tw->split != BE_SPLIT_NONE) {
        bug(c, "embed_rows over a split table");
        return;
    }
    if (!prepare(c, to, L_REPL, 0, 4)) return;
    for (int r = 0; r < c->n; r++) {
        be *rb = &c->ranks[r];
        rb->ops->embed_rows(rb, at(c, to, oo, r), &tw->w[r], in(c, ids, r), n);
    }
}

static void tp_record_begin(be *b) {
    tpc *c = C(b);
    for (int r = 0; r < c->n; r++) c->ranks[r].ops->record_begin(&c->ranks[r]);
}

static void tp_record_end(be *b) {
    tpc *c = C(b);
    for (int r = 0; r < c->n; r++) c->ranks[r].ops->record_end(&c->ranks[r]);
}

static bool tp_memory_info(be *b, size_t *used, size_t *total) {
    tpc *c = C(b);
    *used = *total = 0;
    for (int r = 0; r < c->n; r++) {
        be *rb = &c->ranks[r];
        size_t u, t;
        if (!rb->ops->memory_info || !rb->ops->memory_info(rb, &u, &t)) return false;
        *used += u;
        *total += t;
    }
    return true;
}

static lv_status tp_status(be *b, lv_err *err) {
    tpc *c = C(b);
    if (c->st) {
        if (err) *err = c->err;
        return c->st;
    }
    for (int r = 0; r < c->n; r++) {
        be *rb = &c->ranks[r];
        lv_status st = rb->ops->status ? rb->ops->status(rb, err) : LV_OK;
        if (st) return st;
    }
    return LV_OK;
}

static lv_status tp_init(be *b, int n_threads, lv_err *err) {
    (void)n_threads;
    return b->ctx ? LV_OK : lv_fail(err, LV_ERR_ARG, "the tp backend is made by tp_setup");
}

static void tp_deinit(be *b) {
    tpc *c = C(b);
    if (!c) return;
    for (int i = 0; i < c->n_bufs; i++)
        if (c->bufs[i].used) free_storage(c, &c->bufs[i]);
    free(c->bufs);
    free(c->tmp);
    if (c->comm) c->comm->free(c->comm);
    for (int r = 0; r < c->n; r++)
        if (c->ranks[r].ops) c->ranks[r].ops->deinit(&c->ranks[r]);
    free(c);
    b->ctx = NULL;
}

#define TP_OPS_COMMON                                                                              \
    .name = "tp", .init = tp_init, .deinit = tp_deinit, .alloc = tp_alloc, .release = tp_release,  \
    .alloc_split = tp_alloc_split, .upload = tp_upload, .download = tp_download, .copy = tp_copy,  \
    .synchronize = tp_synchronize, .weight_init = tp_weight_init, .weight_free = tp_weight_free,   \
    .weight_init_split = tp_weight_init_split, .vector_init = tp_vector_init, .matmul = tp_matmul, \
    .matmul_multi = tp_matmul_multi, .rmsnorm = tp_rmsnorm, .layernorm = tp_layernorm,             \
    .rope = tp_rope, .attention = tp_attention, .store_as = tp_store_as, .silu_mul = tp_silu_mul,  \
    .gelu = tp_gelu, .quick_gelu = tp_quick_gelu, .gelu_tanh = tp_gelu_tanh, .add = tp_add,        \
    .embed_rows = tp_embed_rows, .add_rmsnorm = tp_add_rmsnorm, .memory_info = tp_memory_info,     \
    .status = tp_status

/* Two tables: record_begin/end only where the ranks record (a model asks
 * whether the table has them). */
static const struct be_ops tp_ops = {TP_OPS_COMMON};
static const struct be_ops tp_ops_recording = {TP_OPS_COMMON, .record_begin = tp_record_begin,
                                               .record_end = tp_record_end};

int tp_ranks(const be *b) {
    return b->ops == &tp_ops || b->ops == &tp_ops_recording ? ((const tpc *)b->ctx)->n : 0;
}

/* ---- the host communicator --------------------------------------------------------------- */

static void host_allreduce(tp_comm *cm, float *const buf[], size_t n) {
    int ranks = (int)(intptr_t)cm->ctx;
    for (size_t i = 0; i < n; i++) {
        float s = buf[0][i];
        for (int r = 1; r < ranks; r++) s += buf[r][i];
        for (int r = 0; r < ranks; r++) buf[r][i] = s;
    }
}

static void host_free(tp_comm *cm) {
    free(cm);
}

lv_status tp_host_comm_new(int n_ranks, tp_comm **out, lv_err *err) {
    tp_comm *cm = calloc(1, sizeof *cm);
    if (!cm) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    *cm = (tp_comm){
        .allreduce_sum = host_allreduce, .free = host_free, .ctx = (void *)(intptr_t)n_ranks};
    *out = cm;
    return LV_OK;
}

static lv_status host_factory(be *const ranks[], int n_ranks, tp_comm **out, lv_err *err) {
    (void)ranks;
    return tp_host_comm_new(n_ranks, out, err);
}

/* ---- the staged communicator: through host memory ---------------------------------------- */

typedef struct {
    int n;
    be *ranks[TP_MAX_RANKS];
    float *host; /* n_ranks x cap floats */
    size_t cap;
} staged;

static void staged_allreduce(tp_comm *cm, float *const buf[], size_t n) {
    staged *sg = cm->ctx;
    if (sg->cap < n) {
        float *h = realloc(sg->host, (size_t)sg->n * n * sizeof *h);
        if (!h) {
            LV_ERROR("tensor parallel: out of memory for a staged all-reduce");
            return;
        }
        sg->host = h;
        sg->cap = n;
    }
    for (int r = 0; r < sg->n; r++)
        sg->ranks[r]->ops->download(sg->ranks[r], sg->host + (size_t)r * n, buf[r],
                                    n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        float sum = sg->host[i];
        for (int r = 1; r < sg->n; r++) sum += sg->host[(size_t)r * n + i];
        sg->host[i] = sum;
    }
    for (int r = 0; r < sg->n; r++)
        sg->ranks[r]->ops->upload(sg->ranks[r], buf[r], sg->host, n * sizeof(float));
}

static void staged_free(tp_comm *cm) {
    staged *sg = cm->ctx;
    free(sg->host);
    free(sg);
    free(cm);
}

static lv_status staged_factory(be *const ranks[], int n_ranks, tp_comm **out, lv_err *err) {
    staged *sg = calloc(1, sizeof *sg);
    tp_comm *cm = calloc(1, sizeof *cm);
    if (!sg || !cm) {
        free(sg);
        free(cm);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    }
    sg->n = n_ranks;
    memcpy(sg->ranks, ranks, (size_t)n_ranks * sizeof *ranks);
    *cm = (tp_comm){.allreduce_sum = staged_allreduce, .free = staged_free, .ctx = sg};
    *out = cm;
    return LV_OK;
}

lv_status tp_setup(be *b, const struct be_ops *rank_ops, int n_ranks, int first_device,
                   int n_threads, tp_comm_factory comm_new, lv_err *err) {
    if (n_ranks < 1 || n_ranks > TP_MAX_RANKS)
        return lv_fail(err, LV_ERR_ARG, "tensor parallel: %d ranks (1..%d)", n_ranks, TP_MAX_RANKS);
    if (!rank_ops->attention || !rank_ops->store_as)
        return lv_fail(err, LV_ERR_UNSUPPORTED, "tensor parallel: the %s backend lacks an op",
                       rank_ops->name);
    tpc *c = calloc(1, sizeof *c);
    if (!c) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    c->n = n_ranks;
    bool host = strcmp(rank_ops->name, "cuda") != 0;
    /* Test hook: every rank on first_device, summed through host memory, so
     * one GPU runs the code of several (tests/test_tp.c on cuda). */
    const char *one = getenv("LLAVA_TP_ONE_DEVICE");
    bool one_device = one && *one && strcmp(one, "0") != 0;
    if (one_device) comm_new = staged_factory;
    int per = n_threads > 0 ? n_threads : 0;
    if (host && per > 0) per = per / n_ranks > 0 ? per / n_ranks : 1;
    be *rp[TP_MAX_RANKS];
    lv_status st = LV_OK;
    for (int r = 0; r < n_ranks && !st; r++) {
        c->ranks[r] =
            (be){.ops = rank_ops, .exact = b->exact, .device = first_device + (one_device ? 0 : r)};
        rp[r] = &c->ranks[r];
        if ((st = rank_ops->init(&c->ranks[r], per, err))) {
            c->ranks[r].ops = NULL;
            lv_err_prefix(err, "tensor parallel rank %d (%s:%d)", r, rank_ops->name,
                          first_device + r);
        }
    }
    if (!st) st = (comm_new ? comm_new : host_factory)(rp, n_ranks, &c->comm, err);
    if (st) {
        be tmp = {.ctx = c};
        tp_deinit(&tmp);
        return st;
    }
    /* One rank records as it would alone. Several: each rank's graph would
     * hold its part of the collectives; not run yet where the devices were
     * (docs/TENSOR_PARALLEL.md), so their steps are issued op by op. */
    b->ops = rank_ops->record_begin && n_ranks == 1 ? &tp_ops_recording : &tp_ops;
    b->ctx = c;
    b->n_threads = c->ranks[0].n_threads;
    return LV_OK;
}
