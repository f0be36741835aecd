/*
 * elementwise.cu - the CUDA backend's small ops: RMSNorm, LayerNorm, RoPE,
 * store_as, silu_mul, GELU, quick_gelu, add. Each follows backend/ref.c's
 * formula in float32 (RoPE's cos and sin of the float32 angle in double,
 * as the reference does), one thread per value or one block per row; a
 * row's reduction has a fixed order, so a row's result never depends on
 * the other rows of the call.
 */
#include "backend/cuda/cuda_internal.h"

#define ROW_THREADS 256

/* Sum over a block of ROW_THREADS in a fixed order (every thread gets it). */
static __device__ float block_sum(float v, float *shared) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads(); /* shared may still be read from a previous call */
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    float s = 0.f;
    for (int i = 0; i < ROW_THREADS / 32; i++) s += shared[i];
    return s;
}

static __global__ void rmsnorm_rows(float *y, const float *x, const float *g, int dim, float eps) {
    __shared__ float sh[ROW_THREADS / 32];
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *yr = y + (size_t)blockIdx.x * dim;
    float ss = 0.f;
    for (int i = threadIdx.x; i < dim; i += ROW_THREADS) ss = fmaf(xr[i], xr[i], ss);
    ss = block_sum(ss, sh);
    float inv = (float)(1.0 / sqrt((double)ss / dim + eps));
    for (int i = threadIdx.x; i < dim; i += ROW_THREADS) yr[i] = xr[i] * inv * g[i];
}

void cu_rmsnorm(cu_ctx *c, float *y, const float *x, const float *g, int n, int dim, float eps) {
    if (n <= 0) return;
    rmsnorm_rows<<<n, ROW_THREADS, 0, c->stream>>>(y, x, g, dim, eps);
    cu_check(c, "rmsnorm");
}

/* x += delta, then rmsnorm_rows' arithmetic on the new x (the same bits as
 * add_k then rmsnorm_rows). delta is read before the barrier, so y may equal it. */
static __global__ void add_rmsnorm_rows(float *x, const float *delta, float *y, const float *g,
                                        int dim, float eps) {
    __shared__ float sh[ROW_THREADS / 32];
    float *xr = x + (size_t)blockIdx.x * dim;
    const float *dr = delta + (size_t)blockIdx.x * dim;
    float *yr = y + (size_t)blockIdx.x * dim;
    float ss = 0.f;
    for (int i = threadIdx.x; i < dim; i += ROW_THREADS) {
        float v = xr[i] + dr[i];
        xr[i] = v;
        ss = fmaf(v, v, ss);
    }
    ss = block_sum(ss, sh); /* its barriers also order every read of delta before y */
    float inv = (float)(1.0 / sqrt((double)ss / dim + eps));
    for (int i = threadIdx.x; i < dim; i += ROW_THREADS) yr[i] = xr[i] * inv * g[i];
}

void cu_add_rmsnorm(cu_ctx *c, float *x, const float *delta, float *y, const float *g, int n,
                    int dim, float eps) {
    if (n <= 0) return;
    add_rmsnorm_rows<<<n, ROW_THREADS, 0, c->stream>>>(x, delta, y, g, dim, eps);
    cu_check(c, "add_rmsnorm");
}

static __global__ void layernorm_rows(float *y, const float *x, const float *g, const float *beta,
                                      int dim, float eps) {
    __shared__ float sh[ROW_THREADS / 32];
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *yr = y + (size_t)blockIdx.x * dim;
    float s = 0.f;
    for (int i = threadIdx.x; i < dim; i += ROW_THREADS) s += xr[i];
    float mean = block_sum(s, sh) / dim;
    float v = 0.f;
    for (int i = threadIdx.x; i < dim; i += ROW_THREADS) {
        float d = xr[i] - mean;
        v = fmaf(d, d, v);
    }
    float var = block_sum(v, sh) / dim;
    float inv = (float)(1.0 / sqrt((double)var + eps));
    for (int i = threadIdx.x; i < dim; i += ROW_THREADS)
        yr[i] = (xr[i] - mean) * inv * g[i] + beta[i];
}

void cu_layernorm(cu_ctx *c, float *y, const float *x, const float *g, const float *beta, int n,
                  int dim, float eps) {
    if (n <= 0) return;
    layernorm_rows<<<n, ROW_THREADS, 0, c->stream>>>(y, x, g, beta, dim, eps);
    cu_check(c, "layernorm");
}

/* One thread per (row, head, j < half): the pair (j, j + half). */
static __global__ void rope_pairs(float *x, int n, int n_heads, int head_dim, const int *pos,
                                  float theta) {
    int half = head_dim / 2;
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    size_t total = (size_t)n * n_heads * half;
    if (i >= total) return;
    int j = (int)(i % half);
    size_t rh = i / half; /* row * n_heads + head */
    int row = (int)(rh / n_heads);
    float expo = (float)(2 * j) / (float)head_dim;
    float inv_freq = 1.0f / (float)pow((double)theta, (double)expo);
    float angle = (float)pos[row] * inv_freq;
    float cs = (float)cos((double)angle), sn = (float)sin((double)angle);
    float *v = x + rh * head_dim;
    float a = v[j], b = v[j + half];
    v[j] = a * cs - b * sn;
    v[j + half] = b * cs + a * sn;
}

void cu_rope(cu_ctx *c, float *x, int n, int n_heads, int head_dim, const int *pos, float theta) {
    size_t total = (size_t)n * n_heads * (head_dim / 2);
    if (!total) return;
    rope_pairs<<<(unsigned)((total + 255) / 256), 256, 0, c->stream>>>(x, n, n_heads, head_dim, pos,
                                                                       theta);
    cu_check(c, "rope");
}

static __global__ void to_half_sat(__half *dst, const float *src, size_t n) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    float f = src[i];
    f = f > 65504.0f ? 65504.0f : f < -65504.0f ? -65504.0f : f; /* NaN stays NaN */
    dst[i] = __float2half_rn(f);
}

void cu_store_as(cu_ctx *c, void *dst, be_dtype dtype, const float *src, size_t n) {
    if (!n) return;
    if (dtype == BE_F32) {
        cu_record(c,
                  cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, c->stream),
                  "store_as");
        return;
    }
    to_half_sat<<<(unsigned)((n + 255) / 256), 256, 0, c->stream>>>((__half *)dst, src, n);
    cu_check(c, "store_as");
}

#define ELEMENTWISE(name, body)                                                                    \
    static __global__ void name##_k(float *x, const float *o, size_t n) {                          \
        size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;                                  \
        if (i >= n) return;                                                                        \
        float z = x[i];                                                                            \
        (void)o;                                                                                   \
        body;                                                                                      \
    }

ELEMENTWISE(silu_mul, x[i] = z / (1.0f + expf(-z)) * o[i])
ELEMENTWISE(gelu, x[i] = 0.5f * z * erfcf(-z * 0.70710678118654752f))
ELEMENTWISE(quick_gelu, x[i] = z / (1.0f + expf(-1.702f * z)))
ELEMENTWISE(gelu_tanh,
            x[i] = 0.5f * z * (1.0f + tanhf(0.7978845608028654f * (z + 0.044715f * (z * z * z)))))
ELEMENTWISE(add, x[i] = z + o[i])

static void launch(cu_ctx *c, void (*k)(float *, const float *, size_t), float *x, const float *o,
                   size_t n, const char *what) {
    if (!n) return;
    k<<<(unsigned)((n + 255) / 256), 256, 0, c->stream>>>(x, o, n);
    cu_check(c, what);
}

void cu_silu_mul(cu_ctx *c, float *gate, const float *up, size_t n) {
    launch(c, silu_mul_k, gate, up, n, "silu_mul");
}
void cu_gelu(cu_ctx *c, float *x, size_t n) {
    launch(c, gelu_k, x, NULL, n, "gelu");
}
void cu_quick_gelu(cu_ctx *c, float *x, size_t n) {
    launch(c, quick_gelu_k, x, NULL, n, "quick_gelu");
}
void cu_gelu_tanh(cu_ctx *c, float *x, size_t n) {
    launch(c, gelu_tanh_k, x, NULL, n, "gelu_tanh");
}
void cu_add(cu_ctx *c, float *y, const float *x, size_t n) {
    launch(c, add_k, y, x, n, "add");
}
