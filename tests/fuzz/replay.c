/* replay.c - runs a libFuzzer target's stored inputs without libFuzzer, so
 * the ordinary build (gcc, and ASan + UBSan in `make test`'s second pass)
 * checks that no seed and no past crash input crashes again.
 *
 * Linked with one tests/fuzz/fuzz_<name>.c into build/bin/fuzz_replay_<name>
 * (tests/CMakeLists.txt), which ctest runs as fuzz_replay_<name>:
 *
 *   fuzz_replay_<name> -r REGRESSIONS_DIR CORPUS_DIR...
 *
 * Every CORPUS_DIR (the seeds) must exist and hold at least one input;
 * REGRESSIONS_DIR (tests/fuzz/regressions/<name>/, inputs that once crashed
 * the target) must exist and may hold only its README. Inputs are the
 * regular files directly in each folder, in name order, except README* and
 * dot files. Each input runs in a child process on an exact-size copy (so
 * ASan sees a read past the end), as libFuzzer would call the target; the
 * child exits normally so LeakSanitizer checks it. A child that dies on a
 * signal, exits non-zero (a sanitizer report) or runs past TIMEOUT_S fails
 * the input, named in the message; every input is run either way.
 *
 * Exit status: 0 all passed; 1 an input failed; 2 a folder is missing or
 * empty, or the command line is wrong. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define TIMEOUT_S 60 /* per input; libFuzzer's -timeout is 10 s, sanitizers are slower */

static const char *prog = "fuzz_replay";

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The input file names of dir, sorted (caller frees each and the array);
 * -1 with a message when dir cannot be read. */
static int list_inputs(const char *dir, char ***out) {
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "%s: cannot open %s: %s\n", prog, dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !strncmp(e->d_name, "README", 6)) continue;
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **grown = realloc(names, (size_t)cap * sizeof *names);
            if (!grown) abort();
            names = grown;
        }
        if (!(names[n++] = strdup(e->d_name))) abort();
    }
    closedir(d);
    if (n) qsort(names, (size_t)n, sizeof *names, by_name);
    *out = names;
    return n;
}

/* The whole file at path in an exact-size buffer (1 byte for an empty file,
 * so data is never NULL); NULL with a message on failure. */
static uint8_t *read_input(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: cannot read %s: %s\n", prog, path, strerror(errno));
        return NULL;
    }
    struct stat st;
    uint8_t *data = NULL;
    if (fstat(fileno(f), &st) == 0 && (data = malloc(st.st_size ? (size_t)st.st_size : 1)) &&
        fread(data, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        fprintf(stderr, "%s: short read on %s\n", prog, path);
        free(data);
        data = NULL;
    }
    fclose(f);
    *size = data ? (size_t)st.st_size : 0;
    return data;
}

/* Runs the target on one input in a child process. Returns 0 when the child
 * returned normally, else 1 after saying what happened to which file. */
static int replay_one(const char *path) {
    size_t size;
    uint8_t *data = read_input(path, &size);
    if (!data) return 1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "%s: fork: %s\n", prog, strerror(errno));
        free(data);
        return 1;
    }
    if (pid == 0) {
        alarm(TIMEOUT_S);
        (void)LLVMFuzzerTestOneInput(data, size);
        free(data);
        exit(0); /* not _exit: LeakSanitizer runs at exit */
    }
    free(data);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            fprintf(stderr, "%s: waitpid: %s\n", prog, strerror(errno));
            return 1;
        }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
        fprintf(stderr, "%s: FAILED %s: still running after %d s\n", prog, path, TIMEOUT_S);
    else if (WIFSIGNALED(status))
        fprintf(stderr, "%s: FAILED %s: killed by signal %d (%s)\n", prog, path, WTERMSIG(status),
                strsignal(WTERMSIG(status)));
    else
        fprintf(stderr, "%s: FAILED %s: exited with status %d (a sanitizer report above?)\n", prog,
                path, WEXITSTATUS(status));
    return 1;
}

/* Replays every input of dir; adds to *n_inputs and *n_failed. Returns -1
 * when dir is missing, or is empty and may not be. */
static int replay_dir(const char *dir, int may_be_empty, int *n_inputs, int *n_failed) {
    char **names;
    int n = list_inputs(dir, &names);
    if (n < 0) return -1;
    if (n == 0 && !may_be_empty)
        fprintf(stderr, "%s: %s holds no inputs: a corpus folder must not be empty\n", prog, dir);
    printf("%s: %s: %d input%s\n", prog, dir, n, n == 1 ? "" : "s");
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        *n_failed += replay_one(path);
        free(names[i]);
    }
    free(names);
    *n_inputs += n;
    return n == 0 && !may_be_empty ? -1 : 0;
}

int main(int argc, char **argv) {
    const char *slash = strrchr(argv[0], '/');
    prog = slash ? slash + 1 : argv[0];
    const char *regressions = NULL;
    int first = 1;
    if (argc > 2 && !strcmp(argv[1], "-r")) {
        regressions = argv[2];
        first = 3;
    }
    if (first >= argc) {
        fprintf(stderr, "usage: %s [-r REGRESSIONS_DIR] CORPUS_DIR...\n", prog);
        return 2;
    }
    int n_inputs = 0, n_failed = 0, bad_dir = 0;
    if (regressions && replay_dir(regressions, 1, &n_inputs, &n_failed) < 0) bad_dir = 1;
    for (int i = first; i < argc; i++)
        if (replay_dir(argv[i], 0, &n_inputs, &n_failed) < 0) bad_dir = 1;
    printf("%s: %d input%s replayed, %d failed\n", prog, n_inputs, n_inputs == 1 ? "" : "s",
           n_failed);
    if (bad_dir) {
        fprintf(stderr, "%s: FAILED: a folder is missing or holds no inputs (above)\n", prog);
        return 2;
    }
    return n_failed ? 1 : 0;
}
