/* hf_cache.c - see hf_cache.h. */
#include "hf_cache.h"

#include "base/buf.h"
#include "base/file.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define HF_MAX_PART 96 /* huggingface_hub's limit on each of ORG and NAME */

static bool id_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

/* One of ORG or NAME: s[0..n). */
static bool id_part_ok(const char *s, size_t n) {
    if (n == 0 || n > HF_MAX_PART) return false;
    for (size_t i = 0; i < n; i++)
        if (!id_char(s[i])) return false;
    if (s[0] == '.' || s[0] == '-' || s[n - 1] == '.' || s[n - 1] == '-') return false;
    for (size_t i = 0; i + 1 < n; i++)
        if (s[i] == '.' && s[i + 1] == '.') return false;
    return true;
}

bool hf_is_repo_id(const char *id) {
    if (!id) return false;
    const char *slash = strchr(id, '/');
    if (!slash || strchr(slash + 1, '/')) return false;
    return id_part_ok(id, (size_t)(slash - id)) && id_part_ok(slash + 1, strlen(slash + 1));
}

/* A commit hash read from refs/main: hex (40 for git, 64 for sha256 repos);
 * accept any [0-9a-zA-Z] run so a future format still works, but never a
 * path separator or "..". */
static bool rev_ok(const char *s) {
    if (!*s || strlen(s) > 128) return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')))
            return false;
    return true;
}

static lv_status dup_realpath(const char *path, char **out, lv_err *err) {
    char *r = realpath(path, NULL);
    if (!r) {
        if (errno == ENOMEM) return lv_fail(err, LV_ERR_NOMEM, "%s: out of memory", path);
        return lv_fail(err, LV_ERR_IO, "%s: cannot resolve: %s", path, strerror(errno));
    }
    *out = r;
    return LV_OK;
}

int hf_cache_roots(char bufs[HF_MAX_ROOTS][PATH_MAX]) {
    int n = 0;
    const char *v;
    if ((v = getenv("HF_HUB_CACHE")) && *v) snprintf(bufs[n++], PATH_MAX, "%s", v);
    if ((v = getenv("HF_HOME")) && *v) snprintf(bufs[n++], PATH_MAX, "%s/hub", v);
    if ((v = getenv("XDG_CACHE_HOME")) && *v)
        snprintf(bufs[n++], PATH_MAX, "%s/huggingface/hub", v);
    if ((v = getenv("HOME")) && *v) snprintf(bufs[n++], PATH_MAX, "%s/.cache/huggingface/hub", v);
    return n;
}

typedef enum { FOUND, ABSENT, BROKEN } probe_result;

/* Looks for the snapshot in repo_dir (<cache>/models--ORG--NAME). FOUND sets
 * *out; BROKEN fills err; ABSENT means the folder is not there. */
static probe_result probe(const char *repo_dir, const char *ref, char **out, lv_err *err,
                          lv_status *st) {
    if (!lv_is_dir(repo_dir)) return ABSENT;
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/refs/main", repo_dir) >= (int)sizeof path) return ABSENT;
    char *rev = NULL;
    size_t rev_len = 0;
    if (lv_is_file(path)) {
        lv_err rerr;
        if (lv_read_file(path, 4096, &rev, &rev_len, &rerr) != LV_OK) {
            *st = lv_fail(err, LV_ERR_IO, "model '%s': %s", ref, rerr.msg);
            return BROKEN;
        }
        /* Strip surrounding whitespace (the file ends with no newline from
         * huggingface_hub, but hand-made caches often have one). */
        size_t b = 0, e = rev_len;
        while (b < e && strchr(" \t\r\n", rev[b])) b++;
        while (e > b && strchr(" \t\r\n", rev[e - 1])) e--;
        memmove(rev, rev + b, e - b);
        rev[e - b] = '\0';
        if (!rev_ok(rev)) {
            *st = lv_fail(err, LV_ERR_IO, "model '%s': %s does not hold a commit hash", ref, path);
            free(rev);
            return BROKEN;
        }
        int n = snprintf(path, sizeof path, "%s/snapshots/%s", repo_dir, rev);
        if (n < 0 || n >= (int)sizeof path || !lv_is_dir(path)) {
            *st = lv_fail(err, LV_ERR_IO,
                          "model '%s': refs/main names snapshot %s but %s/snapshots/%s does not "
                          "exist (incomplete download?)",
                          ref, rev, repo_dir, rev);
            free(rev);
            return BROKEN;
        }
        free(rev);
    } else {
        /* No refs/main (a snapshot_download(revision=hash), or a copied
         * cache): accept the snapshot only if there is exactly one. */
        char snaps[PATH_MAX], only[NAME_MAX + 1] = "";
        if (snprintf(snaps, sizeof snaps, "%s/snapshots", repo_dir) >= (int)sizeof snaps)
            return ABSENT;
        DIR *d = opendir(snaps);
        int count = 0;
        if (d) {
            struct dirent *de;
            while ((de = readdir(d))) {
                if (de->d_name[0] == '.') continue;
                char sub[PATH_MAX];
                if (snprintf(sub, sizeof sub, "%s/%s", snaps, de->d_name) >= (int)sizeof sub)
                    continue;
                if (!lv_is_dir(sub)) continue;
                count++;
                snprintf(only, sizeof only, "%s", de->d_name);
            }
            closedir(d);
        }
        if (count == 0) {
            *st = lv_fail(err, LV_ERR_IO, "model '%s': %s has no refs/main and no snapshot", ref,
                          repo_dir);
            return BROKEN;
        }
        if (count > 1) {
            *st = lv_fail(err, LV_ERR_IO,
                          "model '%s': %s has no refs/main and %d snapshots; cannot tell which "
                          "to use",
                          ref, repo_dir, count);
            return BROKEN;
        }
        if (snprintf(path, sizeof path, "%s/%s", snaps, only) >= (int)sizeof path) return ABSENT;
    }
    *st = dup_realpath(path, out, err);
    return *st == LV_OK ? FOUND : BROKEN;
}

lv_status hf_resolve_model(const char *ref, char **dir_out, lv_err *err) {
    *dir_out = NULL;
    if (!ref || !*ref) return lv_fail(err, LV_ERR_ARG, "model reference is empty");
    struct stat sb;
    if (stat(ref, &sb) == 0) return dup_realpath(ref, dir_out, err);
    if (!hf_is_repo_id(ref))
        return lv_fail(err, LV_ERR_ARG,
                       "model '%s' is not a local path and not a Hugging Face repo id (ORG/NAME)",
                       ref);

    const char *slash = strchr(ref, '/');
    char folder[2 * HF_MAX_PART + 16];
    snprintf(folder, sizeof folder, "models--%.*s--%s", (int)(slash - ref), ref, slash + 1);

    char roots[HF_MAX_ROOTS][PATH_MAX];
    int nroots = hf_cache_roots(roots);
    lv_buf looked = {0};
    lv_status st = LV_OK, broken_st = LV_OK;
    lv_err broken;
    for (int i = 0; i < nroots; i++) {
        char repo_dir[PATH_MAX];
        if (snprintf(repo_dir, sizeof repo_dir, "%s/%s", roots[i], folder) >= (int)sizeof repo_dir)
            continue;
        lv_err perr;
        lv_status pst = LV_OK;
        probe_result r = probe(repo_dir, ref, dir_out, &perr, &pst);
        if (r == FOUND) {
            lv_buf_free(&looked);
            return LV_OK;
        }
        if (r == BROKEN && broken_st == LV_OK) {
            broken_st = pst;
            broken = perr;
        }
        if ((looked.len && lv_buf_puts(&looked, ", ") != LV_OK) ||
            lv_buf_puts(&looked, repo_dir) != LV_OK) {
            lv_buf_free(&looked);
            return lv_fail(err, LV_ERR_NOMEM, "out of memory");
        }
    }
    if (broken_st != LV_OK) {
        st = broken_st;
        if (err) *err = broken;
    } else {
        st = lv_fail(err, LV_ERR_IO,
                     "model '%s' is not a local path and is not in the Hugging Face cache; "
                     "looked in: %s",
                     ref,
                     looked.len ? looked.data
                                : "(no cache: HF_HUB_CACHE, HF_HOME, "
                                  "XDG_CACHE_HOME and HOME are all unset)");
    }
    lv_buf_free(&looked);
    return st;
}
