/*
 * avx512.h - what the AVX-512 kernel files (kernels_avx512.c,
 * dequant_avx512.c) share: the target attribute and the quantized dots the
 * AVX-512 table names. They build on avx2.h (its hsum, prefetch step and
 * the AVX2 kernels the table reuses): every AVX-512 kernel runs the AVX2
 * kernels' 8-lane FMA chains, two to a ZMM register.
 * Include only inside `#if defined(__x86_64__) && defined(__GNUC__)`.
 */
#ifndef LV_BACKEND_CPU_AVX512_H
#define LV_BACKEND_CPU_AVX512_H

#include "backend/cpu/avx2.h"

#define AVX512 __attribute__((target("avx2,fma,f16c,avx512f")))

/* dequant_avx512.c: dot_rows_q and dot_tokens_q with rows decoded two at a
 * time (the AVX2 kernels' bits). */
void cpu_dot_rows_q_avx512(float acc[], const float *x, const be_weight *w, const int rows[],
                           int c0, int n);
void cpu_dot_tokens_q_avx512(float acc[][MM_DEC_ROWS], int nt, int nr, const float *x, size_t ldx,
                             const be_weight *w, const int rows[], int c0, int n);

#endif
