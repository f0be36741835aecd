/* file.c - see file.h. */
#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The live mappings of lv_map_file, so that lv_map_release_pages can tell a
 * file mapping (safe to drop: re-read on touch) from heap memory (which
 * MADV_DONTNEED would zero). Few entries: one per mapped file. */
static struct {
    pthread_mutex_t lock;
    struct {
        const uint8_t *p;
        size_t n;
    } * at;
    size_t len, cap;
} maps = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void registry_add(const uint8_t *p, size_t n) {
    pthread_mutex_lock(&maps.lock);
    if (maps.len == maps.cap) {
        size_t cap = maps.cap ? 2 * maps.cap : 16;
        void *at = realloc(maps.at, cap * sizeof *maps.at);
        if (!at) { /* unregistered: its pages are simply never released early */
            pthread_mutex_unlock(&maps.lock);
            return;
        }
        maps.at = at;
        maps.cap = cap;
    }
    maps.at[maps.len].p = p;
    maps.at[maps.len].n = n;
    maps.len++;
    pthread_mutex_unlock(&maps.lock);
}

static void registry_remove(const uint8_t *p) {
    pthread_mutex_lock(&maps.lock);
    for (size_t i = 0; i < maps.len; i++)
        if (maps.at[i].p == p) {
            maps.at[i] = maps.at[--maps.len];
            break;
        }
    if (maps.len == 0) {
        free(maps.at);
        maps.at = NULL;
        maps.cap = 0;
    }
    pthread_mutex_unlock(&maps.lock);
}

void lv_map_release_pages(const void *p, size_t n) {
    long page = sysconf(_SC_PAGESIZE);
    if (!p || n == 0 || page <= 0) return;
    uintptr_t a = (uintptr_t)p, e = a + n;
    pthread_mutex_lock(&maps.lock);
    bool inside = false;
    for (size_t i = 0; i < maps.len && !inside; i++)
        inside = a >= (uintptr_t)maps.at[i].p && e <= (uintptr_t)maps.at[i].p + maps.at[i].n;
    if (inside) {
        uintptr_t a0 = (a + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
        uintptr_t e0 = e & ~((uintptr_t)page - 1);
        if (e0 > a0) (void)madvise((void *)a0, e0 - a0, MADV_DONTNEED);
    }
    pthread_mutex_unlock(&maps.lock);
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
        registry_add(map->data, map->size);
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
