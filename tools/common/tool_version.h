/*
 * tool_version.h - what every tool's --version prints:
 *   llava-cli 0.17.0 (git 48d2ba2, x86-64 AVX2/VNNI, CUDA off)
 * the version (src/base/version.h, the one place it is written), the
 * commit the build came from (CMake passes LLAVA_GIT_HASH; "unknown"
 * outside a git checkout), the CPU kernels this machine runs (the float set
 * the CPU backend picks, and /VNNI or /DOTPROD when its integer kernels
 * have those dot products) and whether the build has the CUDA backend.
 */
#ifndef LV_TOOL_VERSION_H
#define LV_TOOL_VERSION_H

#include <stdio.h>

/* Writes the line above for tool `name` to f. */
void tool_print_version(FILE *f, const char *name);

#endif
