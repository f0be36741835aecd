/*
 * tp.h - tensor parallelism as a backend: N ranks of one backend kind (one
 * device each, "cuda:0" .. "cuda:N-1"), every layer's work split across
 * them, behind the same op table (backend.h), so the models, the scheduler
 * and the server above it do not change.
 *
 * The split (Megatron-style, as vLLM shards a Llama):
 *   - q, k, v, gate, up (and a tower's fc1) are split by output features
 *     (BE_SPLIT_OUT): each rank holds n_heads/N query heads, n_kv_heads/N
 *     key/value heads, hidden/N FFN columns; their outputs stay sharded;
 *   - o and down (and fc2) are split by input features (BE_SPLIT_IN): each
 *     rank multiplies its shard, and one all-reduce (a sum, through the
 *     communicator) per attention block and per MLP block makes the result
 *     whole on every rank;
 *   - lm_head is split by vocabulary (BE_SPLIT_OUT): the logits stay sharded
 *     and are gathered where they are read (download);
 *   - everything else (norms, embeddings, the projector, a tower given
 *     BE_SPLIT_NONE) is replicated: every rank holds it and computes it.
 * RoPE, attention, the KV caches and the elementwise ops run on each rank's
 * shard. Weights are cut from the host bytes (the mmapped file) and handed
 * to each rank's weight_init: a weight is never whole on one device.
 *
 * Buffers. alloc returns a handle that is an address (the model adds
 * offsets to it, never dereferences it); each rank holds its own storage,
 * allocated at the first write and sized by what was written. A buffer is
 * replicated (every rank holds all of it) or sharded (rows of a global
 * width, each rank holding its 1/N of every row), as the op that last wrote
 * it made it; an op reading it translates offsets and counts to the rank's
 * shard. download gathers a sharded buffer's rows from the ranks.
 *
 * Ordering: each op is issued to every rank in turn, from the caller's
 * thread (CUDA ranks queue it on their own streams, so the devices run
 * together); the communicator's collectives are queued the same way.
 *
 * Numerics: with N = 1 every op is the rank's own, bit for bit. With N > 1
 * the sums of o, down and fc2 are taken in another order (partial sums
 * added), so logits differ from one device's by rounding; a request's output
 * is still the same alone or in any batch (batch invariance holds per N).
 */
#ifndef LV_BACKEND_TP_H
#define LV_BACKEND_TP_H

#include "backend/backend.h"

#define TP_MAX_RANKS 8

/* The collectives the ranks need, over their backend's buffers. Each is
 * queued after the ops issued so far on every rank and before later ones. */
typedef struct tp_comm tp_comm;
struct tp_comm {
    /* buf[r] (n floats on rank r) = the sum over ranks of buf[r], on every rank. */
    void (*allreduce_sum)(tp_comm *c, float *const buf[], size_t n);
    void (*free)(tp_comm *c);
    void *ctx;
};

/* The host communicator, for ranks whose buffers are host memory (cpu, ref):
 * sums in rank order. For tests and for the CPU path of the same code. */
lv_status tp_host_comm_new(int n_ranks, tp_comm **out, lv_err *err);

/* A communicator for the ranks (n_ranks backends already initialised, rank r
 * on device r of its kind): tp_host_comm for cpu and ref, NCCL for cuda. */
typedef lv_status (*tp_comm_factory)(be *const ranks[], int n_ranks, tp_comm **out, lv_err *err);

#ifdef LLAVA_HAVE_CUDA
/* NCCL over CUDA ranks, one communicator a device, in one process
 * (backend/cuda/nccl.cu): ncclAllReduce on each rank's stream. */
lv_status tp_nccl_comm_new(be *const ranks[], int n_ranks, tp_comm **out, lv_err *err);
#endif

/* Test hook: LLAVA_TP_ONE_DEVICE=1 puts every rank on the first device and
 * sums through host memory (downloads, then uploads): one GPU runs the code
 * of several ranks, their kernels on shards included, slowly. */

/* Makes b the tensor-parallel backend over n_ranks (1..TP_MAX_RANKS)
 * backends of rank_ops, rank r on device first_device + r, with b->exact,
 * each with n_threads (<= 0: all cores, shared out over CPU ranks). The
 * communicator comes from comm_new (NULL: the host one). On failure b is
 * untouched and everything made is freed. b->ops->deinit frees it all. */
lv_status tp_setup(be *b, const struct be_ops *rank_ops, int n_ranks, int first_device,
                   int n_threads, tp_comm_factory comm_new, lv_err *err);

/* The number of ranks of a backend made by tp_setup, else 0. */
int tp_ranks(const be *b);

#endif
