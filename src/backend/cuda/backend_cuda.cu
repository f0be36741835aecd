/*
 * backend_cuda.cu - the CUDA backend's op table, lifecycle and memory.
 *
 * Buffers are cudaMalloc'd device memory; every op, upload and copy is
 * queued on the context's one stream, so ops run in call order without a
 * host synchronisation; download waits (cudaMemcpyAsync into the caller's
 * pageable host memory, then a stream synchronise). Upload copies through a
 * pinned staging buffer, so it has read the caller's bytes when it returns
 * as the contract asks, and small uploads (token ids, positions) cost no
 * synchronisation of the stream.
 *
 * Faults: an op cannot return an error, so the first CUDA failure is kept
 * in the context (cu_record) and every later op does nothing; the `status`
 * op reports it and the engine fails the requests of that step.
 */
#include "backend/cuda/cuda_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend/quant.h"
}

/* ---------------------------------------------------------------------------
 * Faults and scratch
 */

bool cu_record(cu_ctx *c, cudaError_t e, const char *what) {
    if (e == cudaSuccess) return c->fault == LV_OK;
    if (c->fault == LV_OK) {
        c->fault = e == cudaErrorMemoryAllocation ? LV_ERR_NOMEM : LV_ERR_DEVICE;
        snprintf(c->fault_msg, sizeof c->fault_msg, "cuda:%d: %s: %s", c->device, what,
                 cudaGetErrorString(e));
        fprintf(stderr, "llava: %s\n", c->fault_msg);
    }
    return false;
}

void *cu_scratch(cu_ctx *c, size_t bytes) {
    if (c->fault) return NULL;
    if (bytes <= c->scratch_bytes) return c->scratch;
    if (c->capturing) { /* cudaFree cannot run inside a capture: record_begin sized it */
        cu_record(c, cudaErrorNotPermitted, "scratch buffer too small inside a recorded step");
        return NULL;
    }
    /* the old buffer may still be read by queued work: cudaFree waits for it */
    if (c->scratch) cudaFree(c->scratch);
    c->scratch = NULL;
    c->scratch_bytes = 0;
    size_t want = bytes + bytes / 4;
    if (!cu_record(c, cudaMalloc(&c->scratch, want), "scratch")) return NULL;
    c->scratch_bytes = want;
    return c->scratch;
}

/* ---------------------------------------------------------------------------
 * Lifecycle
 */

#define STAGE_BYTES (4u << 20) /* the pinned upload staging buffer */

struct cu_host {
    void *stage;        /* pinned, STAGE_BYTES */
    cudaEvent_t staged; /* the last copy out of stage */
};

/* The host-side parts live beside the context (one allocation). */
struct cu_full {
    cu_ctx c;
    cu_host h;
};

static void cuda_deinit(be *b) {
    cu_full *f = (cu_full *)b->ctx;
    if (!f) return;
    cudaSetDevice(f->c.device);
    if (f->c.stream) cudaStreamSynchronize(f->c.stream);
    if (f->c.step) cudaGraphExecDestroy(f->c.step);
    if (f->c.scratch) cudaFree(f->c.scratch);
    if (f->h.stage) cudaFreeHost(f->h.stage);
    if (f->h.staged) cudaEventDestroy(f->h.staged);
    if (f->c.stream) cudaStreamDestroy(f->c.stream);
    free(f);
    b->ctx = NULL;
}

static lv_status cuda_init(be *b, int n_threads, lv_err *err) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0)
        return lv_fail(err, LV_ERR_DEVICE, "cuda: no CUDA device is usable (%s)",
                       e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    if (b->device < 0 || b->device >= count)
        return lv_fail(err, LV_ERR_ARG, "cuda:%d: this machine has %d CUDA device%s (0..%d)",
                       b->device, count, count == 1 ? "" : "s", count - 1);
    cu_full *f = (cu_full *)calloc(1, sizeof *f);
    if (!f) return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    b->ctx = f;
    b->n_threads = 1;
    cu_ctx *c = &f->c;
    c->device = b->device;
    c->exact = b->exact;
    cudaDeviceProp prop;
    if ((e = cudaSetDevice(c->device)) != cudaSuccess ||
        (e = cudaGetDeviceProperties(&prop, c->device)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaMallocHost(&f->h.stage, STAGE_BYTES)) != cudaSuccess ||
        (e = cudaEventCreateWithFlags(&f->h.staged, cudaEventDisableTiming)) != cudaSuccess) {
        lv_status st = lv_fail(err, LV_ERR_DEVICE, "cuda:%d: %s", b->device, cudaGetErrorString(e));
        cuda_deinit(b);
        return st;
    }
    if (prop.major < 8) {
        lv_status st = lv_fail(err, LV_ERR_UNSUPPORTED,
                               "cuda:%d: %s is compute capability %d.%d; this build needs 8.0 or "
                               "later (tensor-core mma.sync)",
                               b->device, prop.name, prop.major, prop.minor);
        cuda_deinit(b);
        return st;
    }
    c->n_sm = prop.multiProcessorCount;
    return LV_OK;
}

/* ---------------------------------------------------------------------------
 * Memory
 */

static void *cuda_alloc(be *b, size_t bytes) {
    cu_ctx *c = cu_of(b);
    void *p = NULL;
    cudaSetDevice(c->device);
    /* an allocation failure is the caller's to report (NULL), not a fault */
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}

static void cuda_release(be *b, void *p) {
    if (!p) return;
    cudaSetDevice(cu_of(b)->device);
    cudaFree(p); /* implicitly waits for the work that may use p */
}

static void cuda_upload(be *b, void *dst, const void *src, size_t bytes) {
    cu_full *f = (cu_full *)b->ctx;
    cu_ctx *c = &f->c;
    if (c->fault || !bytes) return;
    if (bytes > STAGE_BYTES) { /* large: straight from pageable memory (synchronous) */
        cu_record(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream), "upload");
        cu_record(c, cudaStreamSynchronize(c->stream), "upload");
        return;
    }
    /* small: through the pinned stage, once the previous copy out of it is done */
    cu_record(c, cudaEventSynchronize(f->h.staged), "upload");
    memcpy(f->h.stage, src, bytes);
    cu_record(c, cudaMemcpyAsync(dst, f->h.stage, bytes, cudaMemcpyHostToDevice, c->stream),
              "upload");
    cu_record(c, cudaEventRecord(f->h.staged, c->stream), "upload");
}

static void cuda_download(be *b, void *dst, const void *src, size_t bytes) {
    cu_ctx *c = cu_of(b);
    if (c->fault) {
        memset(dst, 0, bytes);
        return;
    }
    cu_record(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream), "download");
    cu_record(c, cudaStreamSynchronize(c->stream), "download");
    if (c->fault) memset(dst, 0, bytes);
}

static void cuda_copy(be *b, void *dst, const void *src, size_t bytes) {
    cu_ctx *c = cu_of(b);
    if (c->fault || !bytes) return;
    cu_record(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream), "copy");
}

static void cuda_synchronize(be *b) {
    cu_ctx *c = cu_of(b);
    cu_record(c, cudaStreamSynchronize(c->stream), "synchronize");
}

static float *cuda_vector_init(be *b, be_dtype dtype, int n, const void *host) {
    if (dtype != BE_F32 && dtype != BE_F16 && dtype != BE_BF16) return NULL;
    float *tmp = (float *)malloc((size_t)(n > 0 ? n : 1) * sizeof *tmp);
    if (!tmp) return NULL;
    for (int i = 0; i < n; i++) tmp[i] = be_plain_at(dtype, host, (size_t)i);
    float *d = (float *)cuda_alloc(b, (size_t)n * sizeof *d);
    if (d && cudaMemcpy(d, tmp, (size_t)n * sizeof *d, cudaMemcpyHostToDevice) != cudaSuccess) {
        cudaGetLastError();
        cudaFree(d);
        d = NULL;
    }
    free(tmp);
    return d;
}

/* ---------------------------------------------------------------------------
 * Recorded steps. A decode step is hundreds of small kernels; launched one by
 * one each costs the host several microseconds (about 10 on the GPU machine's
 * virtual machine), more than most of them run. Captured into a graph and
 * submitted at once they cost one launch. The step's graph differs from the
 * last one only in kernel arguments (positions, cache lengths, grid sizes),
 * so cudaGraphExecUpdate patches the executable graph in place; a step of
 * another shape (more sequences) instantiates a new one.
 */

#define RECORD_SCRATCH (64u << 20) /* what a recorded step's ops may ask of cu_scratch */

static void cuda_record_begin(be *b) {
    cu_ctx *c = cu_of(b);
    if (c->fault || !cu_scratch(c, RECORD_SCRATCH)) return;
    if (cu_record(c, cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal),
                  "record_begin"))
        c->capturing = true;
}

static void cuda_record_end(be *b) {
    cu_ctx *c = cu_of(b);
    if (!c->capturing) return;
    c->capturing = false;
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &graph);
    if (!cu_record(c, e, "record_end (a kernel of the step failed to queue)")) {
        if (graph) cudaGraphDestroy(graph);
        return;
    }
    if (c->step) {
        cudaGraphExecUpdateResultInfo info;
        if (cudaGraphExecUpdate(c->step, graph, &info) != cudaSuccess) {
            cudaGetLastError(); /* another shape of step: instantiate anew */
            cudaGraphExecDestroy(c->step);
            c->step = NULL;
        }
    }
    if (!c->step) e = cudaGraphInstantiate(&c->step, graph, 0);
    cudaGraphDestroy(graph);
    if (cu_record(c, e, "record_end: instantiate"))
        cu_record(c, cudaGraphLaunch(c->step, c->stream), "record_end: launch");
}

static bool cuda_memory_info(be *b, size_t *used, size_t *total) {
    size_t free_b = 0, total_b = 0;
    cudaSetDevice(cu_of(b)->device);
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    *used = total_b - free_b;
    *total = total_b;
    return true;
}

static lv_status cuda_status(be *b, lv_err *err) {
    cu_ctx *c = cu_of(b);
    if (c->fault == LV_OK) return LV_OK;
    return lv_fail(err, c->fault, "%s", c->fault_msg);
}

/* ---------------------------------------------------------------------------
 * Ops: each forwards to its file's launcher unless the context has failed.
 */

lv_status cu_weight_init(be *b, be_weight *w, be_dtype dtype, int rows, int cols, const void *host,
                         const be_quant *q, lv_err *err);
void cu_weight_free(be *b, be_weight *w);

#define LIVE(b) (cu_of(b)->fault == LV_OK)

static void cuda_matmul(be *b, float *y, const float *x, const be_weight *w, const float *bias,
                        int n) {
    if (LIVE(b)) cu_matmul(cu_of(b), y, x, (const cu_weight *)w->prep, bias, n);
}
static void cuda_rmsnorm(be *b, float *y, const float *x, const float *g, int n, int dim,
                         float eps) {
    if (LIVE(b)) cu_rmsnorm(cu_of(b), y, x, g, n, dim, eps);
}
static void cuda_add_rmsnorm(be *b, float *x, const float *delta, float *y, const float *g, int n,
                             int dim, float eps) {
    if (LIVE(b)) cu_add_rmsnorm(cu_of(b), x, delta, y, g, n, dim, eps);
}
static void cuda_layernorm(be *b, float *y, const float *x, const float *g, const float *beta,
                           int n, int dim, float eps) {
    if (LIVE(b)) cu_layernorm(cu_of(b), y, x, g, beta, n, dim, eps);
}
static void cuda_rope(be *b, float *x, int n, int n_heads, int head_dim, const int *pos,
                      float theta) {
    if (LIVE(b)) cu_rope(cu_of(b), x, n, n_heads, head_dim, pos, theta);
}
static void cuda_attention(be *b, float *out, const float *q, const void *k, const void *v,
                           be_dtype kv_dtype, int n_q, int q_pos0, int n_kv, int n_heads,
                           int n_kv_heads, int head_dim, bool causal) {
    if (LIVE(b))
        cu_attention(cu_of(b), out, q, k, v, kv_dtype, n_q, q_pos0, n_kv, n_heads, n_kv_heads,
                     head_dim, causal);
}
static void cuda_store_as(be *b, void *dst, be_dtype dtype, const float *src, size_t n) {
    if (LIVE(b)) cu_store_as(cu_of(b), dst, dtype, src, n);
}
static void cuda_silu_mul(be *b, float *gate, const float *up, size_t n) {
    if (LIVE(b)) cu_silu_mul(cu_of(b), gate, up, n);
}
static void cuda_gelu(be *b, float *x, size_t n) {
    if (LIVE(b)) cu_gelu(cu_of(b), x, n);
}
static void cuda_quick_gelu(be *b, float *x, size_t n) {
    if (LIVE(b)) cu_quick_gelu(cu_of(b), x, n);
}
static void cuda_gelu_tanh(be *b, float *x, size_t n) {
    if (LIVE(b)) cu_gelu_tanh(cu_of(b), x, n);
}
static void cuda_add(be *b, float *y, const float *x, size_t n) {
    if (LIVE(b)) cu_add(cu_of(b), y, x, n);
}
static void cuda_embed_rows(be *b, float *out, const be_weight *table, const int32_t *ids, int n) {
    if (LIVE(b)) cu_embed_rows(cu_of(b), out, (const cu_weight *)table->prep, ids, n);
}

static struct be_ops make_ops(void) {
    struct be_ops o;
    memset(&o, 0, sizeof o);
    o.name = "cuda";
    o.init = cuda_init;
    o.deinit = cuda_deinit;
    o.alloc = cuda_alloc;
    o.release = cuda_release;
    o.upload = cuda_upload;
    o.download = cuda_download;
    o.copy = cuda_copy;
    o.synchronize = cuda_synchronize;
    o.weight_init = cu_weight_init;
    o.weight_free = cu_weight_free;
    o.vector_init = cuda_vector_init;
    o.matmul = cuda_matmul;
    o.rmsnorm = cuda_rmsnorm;
    o.layernorm = cuda_layernorm;
    o.rope = cuda_rope;
    o.attention = cuda_attention;
    o.store_as = cuda_store_as;
    o.silu_mul = cuda_silu_mul;
    o.gelu = cuda_gelu;
    o.quick_gelu = cuda_quick_gelu;
    o.gelu_tanh = cuda_gelu_tanh;
    o.add = cuda_add;
    o.embed_rows = cuda_embed_rows;
    o.add_rmsnorm = cuda_add_rmsnorm;
    o.record_begin = cuda_record_begin;
    o.record_end = cuda_record_end;
    o.memory_info = cuda_memory_info;
    o.status = cuda_status;
    return o;
}

extern "C" const struct be_ops be_cuda_ops = make_ops();
