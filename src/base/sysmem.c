/*
 * sysmem.c - process and system memory figures, the allocator's knobs, byte
 * sizes (sysmem.h).
 */
#include "base/sysmem.h"

#include <ctype.h>
#include <stdbool.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#ifdef __GLIBC__
#include <malloc.h>
#endif

int64_t lv_rss_bytes(void) {
    long total = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    int n = fscanf(f, "%ld %ld", &total, &resident);
    fclose(f);
    return n == 2 ? (int64_t)resident * sysconf(_SC_PAGESIZE) : -1;
}

/* The first number in the file at path; -1 when absent or not a number ("max"). */
static int64_t read_number(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[64] = {0};
    bool ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    if (!ok || !isdigit((unsigned char)line[0])) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(line, &end, 10);
    return errno ? -1 : (int64_t)v;
}

int64_t lv_cgroup_limit_bytes(void) {
    int64_t v = read_number("/sys/fs/cgroup/memory.max");                      /* v2 */
    if (v < 0) v = read_number("/sys/fs/cgroup/memory/memory.limit_in_bytes"); /* v1 */
    /* v1 says "no limit" with a huge number (PAGE_COUNTER_MAX pages) */
    return v > 0 && v < ((int64_t)1 << 60) ? v : -1;
}

int64_t lv_mem_available_bytes(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[128];
    int64_t kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "MemAvailable:", 13)) {
            kb = strtoll(line + 13, NULL, 10);
            break;
        }
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

void lv_allocator_tune(void) {
#ifdef __GLIBC__
    mallopt(M_MMAP_THRESHOLD, 1024 * 1024); /* fixed: glibc's sliding threshold otherwise grows */
    mallopt(M_TRIM_THRESHOLD, 1 << 20);
    mallopt(M_ARENA_MAX, 2);
#endif
}

void lv_allocator_trim(void) {
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

lv_status lv_parse_bytes(const char *text, int64_t *out, lv_err *err) {
    const char *p = text ? text : "";
    char *end;
    errno = 0;
    double v = strtod(p, &end);
    if (end == p || errno || !isfinite(v) || v < 0 || isspace((unsigned char)*p))
        return lv_fail(err, LV_ERR_ARG, "'%.40s' is not a size (say 1073741824, 512M or 2G)", p);
    double unit = 1;
    const char *u = end;
    switch (toupper((unsigned char)*u)) {
        case 'K':
            unit = 1024.0;
            u++;
            break;
        case 'M':
            unit = 1024.0 * 1024;
            u++;
            break;
        case 'G':
            unit = 1024.0 * 1024 * 1024;
            u++;
            break;
        case 'T':
            unit = 1024.0 * 1024 * 1024 * 1024;
            u++;
            break;
        default:
            break;
    }
    if (unit > 1 && (*u == 'i' || *u == 'I')) u++;
    if (*u == 'b' || *u == 'B') u++;
    double bytes = v * unit;
    if (*u || bytes >= 9.0e18)
        return lv_fail(err, LV_ERR_ARG, "'%.40s' is not a size (say 1073741824, 512M or 2G)", p);
    *out = (int64_t)bytes;
    return LV_OK;
}
