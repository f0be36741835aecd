/*
 * backend.c - what every backend shares: finding a backend by name. (The
 * half / bfloat16 conversions live in base/half.c.)
 */
#include "backend/backend.h"

#include <string.h>

static const struct be_ops *const BACKENDS[] = {&be_cpu_ops, &be_ref_ops};

const struct be_ops *be_find(const char *name) {
    for (size_t i = 0; i < LV_ARRAY_LEN(BACKENDS); i++)
        if (name && strcmp(BACKENDS[i]->name, name) == 0) return BACKENDS[i];
    return NULL;
}
