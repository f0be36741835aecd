/*
 * cpu.c - the CPU backend's op table, lifecycle and memory.
 *
 * Buffers are 64-byte aligned host memory. Weights are used in place, in
 * their stored dtype (f32, f16, bf16 or a quantized layout of backend/quant.h),
 * from the caller's bytes (typically
 * an mmapped safetensors file): weight_init only records the pointer, so the
 * caller keeps the bytes alive until weight_free. Conversion to float32
 * happens inside the kernels (kernels_*.c, dequant_*.c), with F16C where
 * the CPU has it.
 */
#include "backend/cpu/cpu.h"
#include "backend/quant.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------
 * Lifecycle
 */

static void cpu_deinit(be *b) {
    cpu_ctx *c = b->ctx;
    if (!c) return;
    tp_free(c->pool);
    if (c->scratch)
        for (int i = 0; i < b->n_threads; i++) free(c->scratch[i]);
    free(c->scratch);
    if (c->qscratch)
        for (int i = 0; i < b->n_threads; i++) free(c->qscratch[i]);
    free(c->qscratch);
    free(c->qx);
    free(c);
    b->ctx = NULL;
}

/* Tables are tried best first (each getter is NULL off its architecture). */
const cpu_kernels *cpu_kernels_best(void) {
    const cpu_kernels *k = cpu_kernels_avx512();
    if (!k) k = cpu_kernels_avx2();
    if (!k) k = cpu_kernels_neon();
    return k ? k : cpu_kernels_portable();
}

/* The table LLAVA_CPU_ISA names, if this CPU runs it; else NULL. */
static const cpu_kernels *kernels_named(const char *isa) {
    if (strcmp(isa, "portable") == 0) return cpu_kernels_portable();
    if (strcmp(isa, "avx2") == 0) return cpu_kernels_avx2();
    if (strcmp(isa, "avx512") == 0) return cpu_kernels_avx512();
    if (strcmp(isa, "neon") == 0) return cpu_kernels_neon();
    return NULL;
}

static lv_status cpu_init(be *b, int n_threads, lv_err *err) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    cpu_ctx *c = calloc(1, sizeof *c);
    b->ctx = c;
    b->n_threads = n_threads;
    if (!c) goto nomem;
    c->k = cpu_kernels_best();
    const char *isa = getenv("LLAVA_CPU_ISA"); /* a lesser table, for comparisons */
    if (isa && *isa) {
        const cpu_kernels *want = kernels_named(isa);
        if (!want) {
            lv_status st = lv_fail(err, LV_ERR_UNSUPPORTED,
                                   "LLAVA_CPU_ISA=%s: not a kernel set this CPU runs (its best "
                                   "is %s; avx2 needs AVX2+FMA+F16C; portable always runs)",
                                   isa, c->k->isa);
            cpu_deinit(b);
            return st;
        }
        c->k = want;
    }
    c->qk = qk_kernels_for(c->k->isa);
    c->scratch = calloc((size_t)n_threads, sizeof *c->scratch);
    if (!c->scratch) goto nomem;
    c->qscratch = calloc((size_t)n_threads, sizeof *c->qscratch);
    if (!c->qscratch) goto nomem;
    for (int i = 0; i < n_threads; i++) {
        c->scratch[i] = aligned_alloc(64, CPU_SCRATCH_FLOATS * sizeof(float));
        c->qscratch[i] = aligned_alloc(64, CPU_QSCRATCH_BYTES);
        if (!c->scratch[i] || !c->qscratch[i]) goto nomem;
    }
    c->pool = tp_new(n_threads);
    if (!c->pool) {
        cpu_deinit(b);
        return lv_fail(err, LV_ERR_NOMEM, "cpu backend: cannot start %d threads", n_threads);
    }
    return LV_OK;
nomem:
    cpu_deinit(b);
    return lv_fail(err, LV_ERR_NOMEM, "cpu backend: out of memory (%d threads)", n_threads);
}

int cpu_threads_for(be *b, size_t work, size_t min_per_thread) {
    size_t n = min_per_thread ? work / min_per_thread : work;
    if (n < 1) n = 1;
    return n < (size_t)b->n_threads ? (int)n : b->n_threads;
}

/* ---------------------------------------------------------------------------
 * Memory
 */

static void *cpu_alloc(be *b, size_t bytes) {
    size_t rounded = (bytes + 63) / 64 * 64; /* aligned_alloc wants a multiple */
    return aligned_alloc(64, rounded ? rounded : 64);
}

static void cpu_release(be *b, void *p) {
    free(p);
}

static void cpu_copy(be *b, void *dst, const void *src, size_t bytes) {
    memcpy(dst, src, bytes);
}

static void cpu_synchronize(be *b) { /* every op has finished when it returns */
    (void)b;
}

typedef struct {
    qk_prep *out;
    const be_weight *w;
} pack_job;

static void pack_task(void *arg, int ith, int nth) {
    const pack_job *j = arg;
    long lo, hi;
    tp_split(j->w->rows, ith, nth, 1, &lo, &hi);
    qk_prep_rows(j->out, j->w, (int)lo, (int)hi);
}

/* Quantized weights the integer path takes are repacked into its lanes
 * (qdot.h) unless the backend is exact; everything else is used in place. */
static lv_status cpu_weight_init(be *b, be_weight *w, be_dtype dtype, int rows, int cols,
                                 const void *host, const be_quant *q, lv_err *err) {
    lv_status st = be_weight_describe(w, dtype, rows, cols, host, q, err);
    if (st) {
        lv_err_prefix(err, "cpu backend");
        return st;
    }
    if (b->exact || qk_format_for(dtype, &w->q) == QK_NONE) return LV_OK;
    qk_prep *pk = calloc(1, sizeof *pk);
    if (!pk) return lv_fail(err, LV_ERR_NOMEM, "cpu backend: out of memory");
    if ((st = qk_prep_alloc(pk, w, err))) {
        free(pk);
        lv_err_prefix(err, "cpu backend");
        return st;
    }
#ifdef MADV_POPULATE_READ
    /* The source is usually a file mapping: its page tables in one call,
     * not a fault per 4 KiB page (harmless elsewhere; may fail on old kernels). */
    long page = sysconf(_SC_PAGESIZE);
    if (page > 0) {
        uintptr_t a = (uintptr_t)w->data & ~((uintptr_t)page - 1);
        uintptr_t e = (uintptr_t)w->data + (size_t)rows * w->row_bytes;
        (void)madvise((void *)a, e - a, MADV_POPULATE_READ);
    }
#endif
    pack_job j = {.out = pk, .w = w};
    tp_run(cpu_ctx_of(b)->pool, pack_task, &j, cpu_threads_for(b, (size_t)rows, 64));
    w->prep = pk;
    return LV_OK;
}

static void cpu_weight_free(be *b, be_weight *w) {
    if (w->prep) {
        qk_prep_free(w->prep);
        free(w->prep);
    }
    free(w->owned);
    *w = (be_weight){0};
}

static float *cpu_vector_init(be *b, be_dtype dtype, int n, const void *host) {
    if (n < 0 || (dtype != BE_F32 && dtype != BE_F16 && dtype != BE_BF16)) return NULL;
    float *v = cpu_alloc(b, (size_t)n * sizeof *v);
    if (v) cpu_ctx_of(b)->k->convert(v, dtype, host, (size_t)n);
    return v;
}

const struct be_ops be_cpu_ops = {
    .name = "cpu",
    .init = cpu_init,
    .deinit = cpu_deinit,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .synchronize = cpu_synchronize,
    .weight_init = cpu_weight_init,
    .weight_free = cpu_weight_free,
    .vector_init = cpu_vector_init,
    .matmul = cpu_matmul,
    .matmul_multi = cpu_matmul_multi,
    .rmsnorm = cpu_rmsnorm,
    .layernorm = cpu_layernorm,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .store_as = cpu_store_as,
    .silu_mul = cpu_silu_mul,
    .gelu = cpu_gelu,
    .quick_gelu = cpu_quick_gelu,
    .gelu_tanh = cpu_gelu_tanh,
    .add = cpu_add,
    .embed_rows = cpu_embed_rows,
};
