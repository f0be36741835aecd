/*
 * qdot_avx2.c - the integer kernels of qdot.h for AVX2 CPUs (vpmaddubsw, or
 * AVX-VNNI's vpdpbusd where present). Not written yet: NULL, and the
 * portable kernels run.
 */
#include "backend/cpu/qdot.h"

const qk_kernels *qk_kernels_avx2(void) {
    return NULL;
}
