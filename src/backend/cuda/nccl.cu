/*
 * nccl.cu - the communicator of tensor parallelism over CUDA ranks
 * (backend/tp.h: tp_nccl_comm_new): NCCL, one communicator a device, all in
 * this process (ncclCommInitAll), each all-reduce queued on every rank's own
 * stream in one NCCL group, so the devices reduce together while the caller's
 * thread goes on queueing.
 *
 * NCCL is opened at run time (dlopen "libnccl.so.2", or $LLAVA_NCCL): a CUDA
 * build runs on one GPU wherever NCCL is not installed, and only
 * --tensor-parallel asks for it, failing with where it looked. The types and
 * signatures come from nccl.h at build time (the CUDA toolkit's, or
 * NCCL_INCLUDE_DIR); a build without nccl.h says so instead.
 */
#include "cuda_internal.h"

extern "C" {
#include "backend/tp.h"
}

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LLAVA_NO_NCCL

lv_status tp_nccl_comm_new(be *const ranks[], int n_ranks, tp_comm **out, lv_err *err) {
    (void)ranks;
    (void)n_ranks;
    *out = NULL;
    return lv_fail(err, LV_ERR_UNSUPPORTED,
                   "tensor parallelism over CUDA needs NCCL, and this build found no nccl.h "
                   "(set NCCL_INCLUDE_DIR and rebuild)");
}

#else

#include <dlfcn.h>
#include <nccl.h>

namespace {

struct nccl_api {
    void *lib;
    decltype(&ncclCommInitAll) comm_init_all;
    decltype(&ncclCommDestroy) comm_destroy;
    decltype(&ncclAllReduce) all_reduce;
    decltype(&ncclGroupStart) group_start;
    decltype(&ncclGroupEnd) group_end;
    decltype(&ncclGetErrorString) error_string;
    decltype(&ncclGetVersion) get_version;
};

struct nccl_comm {
    nccl_api api;
    int n;
    ncclComm_t comms[TP_MAX_RANKS];
    be *ranks[TP_MAX_RANKS];
};

template <typename F> bool sym(void *lib, const char *name, F *out) {
    *out = reinterpret_cast<F>(dlsym(lib, name));
    return *out != nullptr;
}

lv_status open_nccl(nccl_api *a, lv_err *err) {
    memset(a, 0, sizeof *a);
    const char *env = getenv("LLAVA_NCCL");
    const char *names[] = {env && *env ? env : nullptr, "libnccl.so.2", "libnccl.so"};
    for (const char *name : names)
        if (name && (a->lib = dlopen(name, RTLD_NOW | RTLD_LOCAL))) break;
    if (!a->lib)
        return lv_fail(err, LV_ERR_UNSUPPORTED,
                       "tensor parallelism over CUDA needs NCCL: libnccl.so.2 was not found "
                       "(install NCCL, or set LLAVA_NCCL to its path or LD_LIBRARY_PATH to its "
                       "folder)");
    if (!sym(a->lib, "ncclCommInitAll", &a->comm_init_all) ||
        !sym(a->lib, "ncclCommDestroy", &a->comm_destroy) ||
        !sym(a->lib, "ncclAllReduce", &a->all_reduce) ||
        !sym(a->lib, "ncclGroupStart", &a->group_start) ||
        !sym(a->lib, "ncclGroupEnd", &a->group_end) ||
        !sym(a->lib, "ncclGetErrorString", &a->error_string) ||
        !sym(a->lib, "ncclGetVersion", &a->get_version)) {
        dlclose(a->lib);
        a->lib = nullptr;
        return lv_fail(err, LV_ERR_UNSUPPORTED, "the NCCL library found lacks a function (%s)",
                       dlerror());
    }
    return LV_OK;
}

/* A failed collective: the first rank's fault, as a failed launch would be. */
void fault(nccl_comm *nc, ncclResult_t r, const char *what) {
    cu_ctx *c = cu_of(nc->ranks[0]);
    if (c->fault == LV_OK) {
        c->fault = LV_ERR_DEVICE;
        snprintf(c->fault_msg, sizeof c->fault_msg, "NCCL %s: %s", what, nc->api.error_string(r));
        fprintf(stderr, "llava: %s\n", c->fault_msg);
    }
}

void allreduce_sum(tp_comm *cm, float *const buf[], size_t n) {
    nccl_comm *nc = static_cast<nccl_comm *>(cm->ctx);
    if (cu_of(nc->ranks[0])->fault) return;
    ncclResult_t r = nc->api.group_start();
    for (int k = 0; k < nc->n && r == ncclSuccess; k++)
        r = nc->api.all_reduce(buf[k], buf[k], n, ncclFloat, ncclSum, nc->comms[k],
                               cu_of(nc->ranks[k])->stream);
    ncclResult_t e = nc->api.group_end();
    if (r != ncclSuccess || e != ncclSuccess) fault(nc, r != ncclSuccess ? r : e, "all-reduce");
}

void comm_free(tp_comm *cm) {
    nccl_comm *nc = static_cast<nccl_comm *>(cm->ctx);
    for (int k = 0; k < nc->n; k++)
        if (nc->comms[k]) nc->api.comm_destroy(nc->comms[k]);
    /* the library stays open: NCCL keeps threads and state for the process */
    free(nc);
    free(cm);
}

} // namespace

lv_status tp_nccl_comm_new(be *const ranks[], int n_ranks, tp_comm **out, lv_err *err) {
    *out = nullptr;
    nccl_comm *nc = static_cast<nccl_comm *>(calloc(1, sizeof *nc));
    tp_comm *cm = static_cast<tp_comm *>(calloc(1, sizeof *cm));
    if (!nc || !cm) {
        free(nc);
        free(cm);
        return lv_fail(err, LV_ERR_NOMEM, "out of memory");
    }
    lv_status st = open_nccl(&nc->api, err);
    if (st) {
        free(nc);
        free(cm);
        return st;
    }
    int devs[TP_MAX_RANKS];
    nc->n = n_ranks;
    for (int k = 0; k < n_ranks; k++) {
        nc->ranks[k] = ranks[k];
        devs[k] = cu_of(ranks[k])->device;
    }
    ncclResult_t r = nc->api.comm_init_all(nc->comms, n_ranks, devs);
    if (r != ncclSuccess) {
        st = lv_fail(err, LV_ERR_DEVICE, "NCCL: cannot make communicators over %d device(s): %s",
                     n_ranks, nc->api.error_string(r));
        free(nc);
        free(cm);
        return st;
    }
    int version = 0;
    nc->api.get_version(&version);
    fprintf(stderr, "llava: tensor parallel over %d device(s) through NCCL %d.%d.%d\n", n_ranks,
            version / 10000, version / 100 % 100, version % 100);
    *cm = tp_comm{allreduce_sum, comm_free, nc};
    *out = cm;
    return LV_OK;
}

#endif
