/*
 * version.h - the one version string every tool prints (--version) and
 * sends as its User-Agent, so that a bug report names the build exactly.
 */
#ifndef LV_VERSION_H
#define LV_VERSION_H

#define LLAVA_VERSION "0.17.0"

#endif
