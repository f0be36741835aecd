/* file.c - see file.h. */
#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * The live mappings of lv_map_file, in a fixed table: lv_map_release_pages
 * tells a file mapping (safe to drop: re-read on touch) from heap memory
 * (which MADV_DONTNEED would zero), and the SIGBUS handler of
 * lv_map_guard_install names the file a faulting address belongs to. A
 * signal handler can take no lock and must not read an array that realloc
 * may move, hence a static table whose entries are published by an atomic
 * store of their start address (0: free slot). One entry per mapped file;
 * a mapping beyond the table is still made, only unnamed on SIGBUS and
 * never released early.
 */
#define MAP_SLOTS 256
#define MAP_PATH  512

static struct {
    _Atomic uintptr_t p; /* start of the mapping; 0 when the slot is free */
    size_t n;            /* bytes */
    char path[MAP_PATH]; /* as given to lv_map_file (truncated to fit) */
} slots[MAP_SLOTS];
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER; /* writers only */

static void registry_add(const uint8_t *p, size_t n, const char *path) {
    pthread_mutex_lock(&slots_lock);
    for (size_t i = 0; i < MAP_SLOTS; i++)
        if (atomic_load(&slots[i].p) == 0) {
            slots[i].n = n;
            snprintf(slots[i].path, sizeof slots[i].path, "%s", path);
            atomic_store(&slots[i].p, (uintptr_t)p); /* published: n and path are set */
            break;
        }
    pthread_mutex_unlock(&slots_lock);
}

static void registry_remove(const uint8_t *p) {
    pthread_mutex_lock(&slots_lock);
    for (size_t i = 0; i < MAP_SLOTS; i++)
        if (atomic_load(&slots[i].p) == (uintptr_t)p) {
            atomic_store(&slots[i].p, 0);
            break;
        }
    pthread_mutex_unlock(&slots_lock);
}

void lv_map_release_pages(const void *p, size_t n) {
    long page = sysconf(_SC_PAGESIZE);
    if (!p || n == 0 || page <= 0) return;
    uintptr_t a = (uintptr_t)p, e = a + n;
    pthread_mutex_lock(&slots_lock); /* the mapping stays while its pages are dropped */
    bool inside = false;
    for (size_t i = 0; i < MAP_SLOTS && !inside; i++) {
        uintptr_t s = atomic_load(&slots[i].p);
        inside = s && a >= s && e <= s + slots[i].n;
    }
    if (inside) {
        uintptr_t a0 = (a + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
        uintptr_t e0 = e & ~((uintptr_t)page - 1);
        if (e0 > a0) (void)madvise((void *)a0, e0 - a0, MADV_DONTNEED);
    }
    pthread_mutex_unlock(&slots_lock);
}

/* ---- SIGBUS on a model mapping ------------------------------------------
 *
 * A file truncated (or rewritten shorter) in place while mapped turns every
 * later read of a page past its new end into SIGBUS. Without a handler that
 * is an unexplained "Bus error" core dump in the middle of a request. The
 * handler below names the file and exits with LV_EXIT_MODEL_CHANGED; only
 * write(2), strlen-free copies and _exit are used (async-signal-safe). A
 * fault anywhere else is handed to the handler that was there before (the
 * default: a core dump; under ASan: its report), by restoring it and
 * returning, so the faulting instruction runs again under it. */

static struct sigaction guard_prev;
static char guard_prog[64];

static size_t cat(char *out, size_t at, size_t cap, const char *s) {
    while (*s && at + 1 < cap) out[at++] = *s++;
    return at;
}

static void on_sigbus(int sig, siginfo_t *si, void *uctx) {
    (void)uctx;
    uintptr_t a = (uintptr_t)si->si_addr;
    for (size_t i = 0; i < MAP_SLOTS; i++) {
        uintptr_t s = atomic_load(&slots[i].p);
        if (!s || a < s || a >= s + slots[i].n) continue;
        char msg[MAP_PATH + 256];
        size_t k = cat(msg, 0, sizeof msg, guard_prog);
        k = cat(msg, k, sizeof msg, ": fatal: the model file ");
        k = cat(msg, k, sizeof msg, slots[i].path);
        k = cat(msg, k, sizeof msg,
                " was truncated or changed on disk while in use (reading its mapping raised "
                "SIGBUS); replace model files by renaming a new file over the old name, never by "
                "rewriting them in place; restart the process\n");
        (void)!write(STDERR_FILENO, msg, k);
        _exit(LV_EXIT_MODEL_CHANGED);
    }
    sigaction(sig, &guard_prev, NULL);
}

void lv_map_guard_install(const char *prog) {
    snprintf(guard_prog, sizeof guard_prog, "%s", prog);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &guard_prev);
}

lv_status lv_map_file(const char *path, lv_map *map, lv_err *err) {
    map->data = NULL;
    map->size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lv_fail(err, LV_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return lv_fail(err, LV_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return lv_fail(err, LV_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return lv_fail(err, LV_ERR_IO, "%s: cannot map: %s", path, strerror(e));
        }
        map->data = p;
        map->size = (size_t)st.st_size;
        registry_add(map->data, map->size, path);
    }
    close(fd); /* the mapping keeps the file alive */
    return LV_OK;
}

void lv_unmap(lv_map *map) {
    if (map->data) {
        registry_remove(map->data);
        munmap((void *)map->data, map->size);
    }
    map->data = NULL;
    map->size = 0;
}

lv_status lv_read_file(const char *path, size_t max_bytes, char **out, size_t *len, lv_err *err) {
    *out = NULL;
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return lv_fail(err, LV_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    lv_status st = LV_OK;
    char *buf = NULL;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = lv_fail(err, LV_ERR_IO, "%s: not a regular file", path);
        goto done;
    }
    if ((uint64_t)sb.st_size > max_bytes) {
        st = lv_fail(err, LV_ERR_FORMAT, "%s: file is %lld bytes; the limit for this file is %zu",
                     path, (long long)sb.st_size, max_bytes);
        goto done;
    }
    size_t n = (size_t)sb.st_size;
    buf = malloc(n + 1);
    if (!buf) {
        st = lv_fail(err, LV_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, n + 1);
        goto done;
    }
    if (n && fread(buf, 1, n, f) != n) {
        st = lv_fail(err, LV_ERR_IO, "%s: short read", path);
        free(buf);
        buf = NULL;
        goto done;
    }
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
done:
    fclose(f);
    return st;
}

lv_status lv_path_join(char *out, size_t cap, const char *dir, const char *name, lv_err *err) {
    size_t dl = strlen(dir);
    int n = (dl && dir[dl - 1] == '/') ? snprintf(out, cap, "%s%s", dir, name)
                                       : snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap)
        return lv_fail(err, LV_ERR_ARG, "path too long: %s/%s", dir, name);
    return LV_OK;
}

bool lv_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

bool lv_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}
