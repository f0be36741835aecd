/*
 * sysmem.h - what the operating system says about memory: this process's
 * resident set, the memory it may use (the cgroup's limit, else what is
 * available), handing freed heap back, and byte sizes as people write them.
 *
 * Linux: /proc/self/statm, /sys/fs/cgroup (v2 memory.max, v1
 * memory.limit_in_bytes), /proc/meminfo MemAvailable; glibc's malloc_trim
 * and mallopt. Elsewhere the readers answer -1 (unknown) and the allocator
 * calls do nothing.
 */
#ifndef LV_BASE_SYSMEM_H
#define LV_BASE_SYSMEM_H

#include "base/common.h"

#include <stdint.h>

/* This process's resident memory in bytes; -1 when unknown. */
int64_t lv_rss_bytes(void);

/* The cgroup's memory limit in bytes; -1 when there is none ("max") or it
 * cannot be read. */
int64_t lv_cgroup_limit_bytes(void);

/* MemAvailable of /proc/meminfo in bytes; -1 when unknown. */
int64_t lv_mem_available_bytes(void);

/* Large blocks straight from mmap (returned to the system when freed, not
 * kept in a heap that only grows), a few arenas, trimming at 16 MiB: so
 * that freed KV caches and image tensors leave the resident set. Called
 * once, early, by long-running programs (llava-server). */
void lv_allocator_tune(void);

/* Hands the heap's free pages back to the system (malloc_trim). */
void lv_allocator_trim(void);

/* "1073741824", "512M", "512MiB", "1.5G", "2GB", "64k" (binary units: K, M,
 * G, T = 1024^n, an optional "B" or "iB", any case) into *out. LV_ERR_ARG
 * with a message naming the text when it is not a size. */
lv_status lv_parse_bytes(const char *text, int64_t *out, lv_err *err);

#endif
