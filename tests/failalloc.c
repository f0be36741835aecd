/*
 * failalloc.c - libfailalloc.so, an allocator that fails on purpose, for
 * the out-of-memory tests (tests/test_server_oom.c). Built only for tests,
 * never under ASan (which owns malloc); loaded with LD_PRELOAD.
 *
 * It interposes malloc, calloc, realloc, posix_memalign, aligned_alloc and
 * memalign, forwarding to glibc's own entry points (__libc_malloc and
 * kin: no dlsym, which itself allocates). Nothing fails until the file
 * named by $LLAVA_FAILALLOC exists: the hook stats it every 4096 calls,
 * so a test lets the model load in peace, then creates the file to turn
 * failures on and removes it to turn them off. While on, each allocation
 * fails (returns NULL, errno ENOMEM) when a splitmix64 hash of
 * ($LLAVA_FAILALLOC_SEED, the call's number) falls below 1 in
 * $LLAVA_FAILALLOC_RATE (default 200): deterministic for a given order of
 * calls, spread over every path. realloc(p, 0) and free are never failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t align, size_t n);

static _Atomic uint64_t calls;  /* allocations seen */
static _Atomic int enabled;     /* the flag file existed at the last look */
static _Atomic uint64_t failed; /* allocations failed so far */

static uint64_t mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15u;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* getenv and stat allocate nothing, so they are safe inside malloc. */
static bool should_fail(void) {
    uint64_t k = atomic_fetch_add(&calls, 1);
    const char *flag = getenv("LLAVA_FAILALLOC");
    if (!flag) return false;
    if (k % 4096 == 0) {
        struct stat sb;
        atomic_store(&enabled, stat(flag, &sb) == 0);
    }
    if (!atomic_load(&enabled)) return false;
    const char *s = getenv("LLAVA_FAILALLOC_SEED"), *r = getenv("LLAVA_FAILALLOC_RATE");
    uint64_t seed = s ? strtoull(s, NULL, 10) : 1, rate = r ? strtoull(r, NULL, 10) : 200;
    if (rate == 0 || mix(seed ^ mix(k)) % rate != 0) return false;
    atomic_fetch_add(&failed, 1);
    errno = ENOMEM;
    return true;
}

void *malloc(size_t n) {
    return should_fail() ? NULL : __libc_malloc(n);
}

void *calloc(size_t n, size_t size) {
    return should_fail() ? NULL : __libc_calloc(n, size);
}

void *realloc(void *p, size_t n) {
    if (p && n == 0) return __libc_realloc(p, n); /* a free */
    return should_fail() ? NULL : __libc_realloc(p, n);
}

void *memalign(size_t align, size_t n) {
    return should_fail() ? NULL : __libc_memalign(align, n);
}

void *aligned_alloc(size_t align, size_t n) {
    return should_fail() ? NULL : __libc_memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n) {
    if (align < sizeof(void *) || (align & (align - 1)) != 0) return EINVAL;
    if (should_fail()) return ENOMEM;
    void *p = __libc_memalign(align, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
