/* tool_version.c - see tool_version.h. */
#include "common/tool_version.h"

#include "backend/cpu/kernels.h"
#include "backend/cpu/qdot.h"
#include "base/version.h"

#include <ctype.h>
#include <string.h>

#ifndef LLAVA_GIT_HASH
#define LLAVA_GIT_HASH "unknown" /* built without CMake's definition */
#endif

#if defined(__x86_64__)
#define ARCH "x86-64"
#elif defined(__aarch64__)
#define ARCH "arm64"
#else
#define ARCH "portable"
#endif

#ifdef LLAVA_HAVE_CUDA
#define CUDA_STATE "CUDA on"
#else
#define CUDA_STATE "CUDA off"
#endif

/* "AVX2/VNNI": the float kernels' set in capitals, and the dot product the
 * integer kernels use beside it (AVX-512's integer kernels need VNNI). */
static void kernels_name(char *out, size_t cap) {
    const char *isa = cpu_kernels_best()->isa, *qk = qk_kernels_for(isa)->isa;
    size_t n = 0;
    for (; isa[n] && n + 1 < cap; n++) out[n] = (char)toupper((unsigned char)isa[n]);
    out[n] = '\0';
    const char *extra = strstr(qk, "vnni") || !strcmp(qk, "avx512") ? "/VNNI"
                        : strstr(qk, "dotprod")                     ? "/DOTPROD"
                                                                    : "";
    if (n + strlen(extra) < cap) strcpy(out + n, extra);
}

void tool_print_version(FILE *f, const char *name) {
    char isa[32];
    kernels_name(isa, sizeof isa);
    fprintf(f, "%s %s (git %s, %s %s, %s)\n", name, LLAVA_VERSION, LLAVA_GIT_HASH, ARCH, isa,
            CUDA_STATE);
}
