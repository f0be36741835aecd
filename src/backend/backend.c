/*
 * backend.c - what every backend shares: finding a backend by name. (The
 * half / bfloat16 conversions live in base/half.c.)
 */
#include "backend/backend.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const struct be_ops *const BACKENDS[] = {
    &be_cpu_ops,
    &be_ref_ops,
#ifdef LLAVA_HAVE_CUDA
    &be_cuda_ops,
#endif
};

const struct be_ops *be_find_device(const char *name, int *device) {
    if (device) *device = 0;
    if (!name) return NULL;
    const char *colon = strchr(name, ':');
    size_t len = colon ? (size_t)(colon - name) : strlen(name);
    int index = 0;
    if (colon) {
        char *end;
        errno = 0;
        long v = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || *end || errno || v < 0 || v > 255) return NULL;
        index = (int)v;
    }
    for (size_t i = 0; i < LV_ARRAY_LEN(BACKENDS); i++)
        if (strlen(BACKENDS[i]->name) == len && strncmp(BACKENDS[i]->name, name, len) == 0) {
            if (colon && index != 0 && strcmp(BACKENDS[i]->name, "cuda") != 0) return NULL;
            if (device) *device = index;
            return BACKENDS[i];
        }
    return NULL;
}

const struct be_ops *be_find(const char *name) {
    return be_find_device(name, NULL);
}

const char *be_names(void) {
#ifdef LLAVA_HAVE_CUDA
    return "cpu, ref, cuda[:N]";
#else
    return "cpu, ref (this build has no CUDA: -DLLAVA_CUDA=ON)";
#endif
}
