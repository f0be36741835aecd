/*
 * outdir.c - temporary output directory + rename (see outdir.h).
 */
#include "outdir.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void rm_tree(const char *path) {
    struct stat sb;
    if (lstat(path, &sb) != 0) return;
    if (!S_ISDIR(sb.st_mode)) {
        unlink(path);
        return;
    }
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
            size_t len = strlen(path) + strlen(de->d_name) + 2;
            char *child = malloc(len);
            if (!child) continue;
            snprintf(child, len, "%s/%s", path, de->d_name);
            rm_tree(child);
            free(child);
        }
        closedir(d);
    }
    rmdir(path);
}

void outdir_abort(const char *tmp) {
    if (tmp && tmp[0]) rm_tree(tmp);
}

lv_status outdir_begin(const char *out_dir, bool overwrite, char *tmp, lv_err *err) {
    struct stat sb;
    tmp[0] = '\0';
    if (!overwrite && lstat(out_dir, &sb) == 0)
        return lv_fail(err, LV_ERR_ARG, "%s already exists (not overwritten)", out_dir);
    size_t n = strlen(out_dir);
    while (n > 1 && out_dir[n - 1] == '/') n--;
    if (n == 0 || n + 12 >= OUTDIR_PATH_MAX)
        return lv_fail(err, LV_ERR_ARG, "output directory '%s': empty or too long", out_dir);
    snprintf(tmp, OUTDIR_PATH_MAX, "%.*s.tmp-XXXXXX", (int)n, out_dir);
    if (!mkdtemp(tmp)) {
        lv_status st = lv_fail(err, LV_ERR_IO, "%s: cannot create a temporary directory: %s", tmp,
                               strerror(errno));
        tmp[0] = '\0';
        return st;
    }
    chmod(tmp, 0755); /* mkdtemp's 0700 is for while it is being written */
    return LV_OK;
}

lv_status outdir_publish(const char *tmp, const char *out_dir, bool overwrite, lv_err *err) {
    struct stat sb;
    char old[OUTDIR_PATH_MAX + 16] = "";
    if (lstat(out_dir, &sb) == 0) {
        if (!overwrite)
            return lv_fail(err, LV_ERR_ARG, "%s already exists (not overwritten)", out_dir);
        snprintf(old, sizeof(old), "%s.old-XXXXXX", out_dir);
        if (!mkdtemp(old) || rmdir(old) != 0 || rename(out_dir, old) != 0)
            return lv_fail(err, LV_ERR_IO, "%s: cannot move the old one aside: %s", out_dir,
                           strerror(errno));
    }
    if (rename(tmp, out_dir) != 0) {
        lv_status st = lv_fail(err, LV_ERR_IO, "%s: cannot rename %s to it: %s", out_dir, tmp,
                               strerror(errno));
        if (old[0]) rename(old, out_dir);
        return st;
    }
    if (old[0]) rm_tree(old);
    return LV_OK;
}
