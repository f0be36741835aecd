/*
 * bandwidth.c - `llava-bench bandwidth` (bandwidth.h).
 *
 *   llava-bench bandwidth [--threads T] [--mb M] [--passes P]
 *                         [--isa auto|avx512|avx2|portable] [--json]
 *                         [--device cpu|ref|cuda[:N]]
 *
 * A buffer of M MiB (default 1024, far above any last-level cache) is
 * written once, then read P times (default 10) by T threads (default all
 * cores, the calling thread one of them), each thread its own contiguous
 * slice. A pass runs from the barrier that starts every thread to the one
 * the slowest reaches last, so
 * it is the time to stream the whole buffer through all cores at once,
 * which is what a decode step does with the weights. Reported: GB/s
 * (10^9 bytes / s) of the median pass, with the fastest and the slowest.
 *
 * The read loop is picked at run time, as the CPU backend picks its
 * kernels: 64-byte AVX-512 loads where the CPU has AVX-512F, 32-byte AVX2
 * loads where it has AVX2, else 8-byte loads. --isa, or else LLAVA_CPU_ISA
 * (avx2, portable), picks a lesser loop, to compare with the backend run
 * the same way. The loads feed four running XORs that are returned, so the
 * compiler cannot drop them; an XOR per 64 bytes costs nothing beside a
 * load from DRAM.
 *
 * --device other than cpu (the default) measures that backend's memory
 * through its own ops instead: two buffers of M MiB (alloc), filled once
 * (upload), then per pass COPIES copies between them (copy, alternating
 * direction) and a synchronize. A copy reads M MiB and writes M MiB, so a
 * pass moves 2 · M MiB · COPIES, read and written together, the figure a
 * GPU's peak bandwidth is quoted in. --threads and --isa are the CPU
 * loop's and are ignored there. (ref's copy is memcpy: a way to run this
 * path on any machine.)
 */
#include "bench/bandwidth.h"

#include "backend/backend.h"
#include "base/clock.h"
#include "base/common.h"
#include "common/tool_args.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define BW_X86 1
#endif

static volatile uint64_t bw_sink; /* where the loads' XOR ends up */

/* XOR of every 64-byte chunk of p[0 .. n) (n a multiple of 256, p 64-aligned). */
typedef uint64_t (*read_fn)(const unsigned char *p, size_t n);

static uint64_t read_portable(const unsigned char *p, size_t n) {
    const uint64_t *q = (const uint64_t *)p;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t i = 0; i < n / 8; i += 4) {
        a ^= q[i];
        b ^= q[i + 1];
        c ^= q[i + 2];
        d ^= q[i + 3];
    }
    return a ^ b ^ c ^ d;
}

#ifdef BW_X86
__attribute__((target("avx2"))) static uint64_t read_avx2(const unsigned char *p, size_t n) {
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    for (size_t i = 0; i < n; i += 128) {
        a = _mm256_xor_si256(a, _mm256_load_si256((const __m256i *)(p + i)));
        b = _mm256_xor_si256(b, _mm256_load_si256((const __m256i *)(p + i + 32)));
        c = _mm256_xor_si256(c, _mm256_load_si256((const __m256i *)(p + i + 64)));
        d = _mm256_xor_si256(d, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    __m256i x = _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(c, d));
    uint64_t out[4];
    _mm256_storeu_si256((__m256i *)out, x);
    return out[0] ^ out[1] ^ out[2] ^ out[3];
}

__attribute__((target("avx512f"))) static uint64_t read_avx512(const unsigned char *p, size_t n) {
    __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
    for (size_t i = 0; i < n; i += 256) {
        a = _mm512_xor_si512(a, _mm512_load_si512((const void *)(p + i)));
        b = _mm512_xor_si512(b, _mm512_load_si512((const void *)(p + i + 64)));
        c = _mm512_xor_si512(c, _mm512_load_si512((const void *)(p + i + 128)));
        d = _mm512_xor_si512(d, _mm512_load_si512((const void *)(p + i + 192)));
    }
    __m512i x = _mm512_xor_si512(_mm512_xor_si512(a, b), _mm512_xor_si512(c, d));
    uint64_t out[8];
    _mm512_storeu_si512((void *)out, x);
    return out[0] ^ out[1] ^ out[2] ^ out[3] ^ out[4] ^ out[5] ^ out[6] ^ out[7];
}
#endif

/* The loop named by isa ("auto": the best this CPU runs); NULL if it cannot run here. */
static read_fn pick_loop(const char *isa, const char **name) {
#ifdef BW_X86
    bool avx512 = __builtin_cpu_supports("avx512f"), avx2 = __builtin_cpu_supports("avx2");
#else
    bool avx512 = false, avx2 = false;
#endif
    bool any = strcmp(isa, "auto") == 0;
#ifdef BW_X86
    if ((any || strcmp(isa, "avx512") == 0) && avx512) return *name = "avx512", read_avx512;
    if ((any || strcmp(isa, "avx2") == 0) && avx2) return *name = "avx2", read_avx2;
#endif
    (void)avx512;
    (void)avx2;
    if (any || strcmp(isa, "portable") == 0) return *name = "portable", read_portable;
    return NULL;
}

typedef struct {
    pthread_barrier_t *start, *end;
    read_fn fn;
    const unsigned char *p;
    size_t n;
    int passes;
    uint64_t sink;
} worker;

static void *work(void *arg) {
    worker *w = arg;
    for (int k = 0; k < w->passes; k++) {
        pthread_barrier_wait(w->start);
        w->sink ^= w->fn(w->p, w->n);
        pthread_barrier_wait(w->end);
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void usage_text(FILE *f) {
    fprintf(f, "usage: llava-bench bandwidth [--threads T] [--mb M] [--passes P]\n"
               "                             [--isa auto|avx512|avx2|portable] [--json]\n"
               "                             [--device cpu|ref|cuda[:N]]   (default cpu: the\n"
               "                             CPU read loop; else the backend's copy)\n");
}

/* The median, fastest and slowest of n pass times (ms; sorted in place) as
 * GB/s of `bytes` a pass. */
static void pass_rates(double *ms, int n, double bytes, double *med, double *best, double *worst) {
    qsort(ms, (size_t)n, sizeof *ms, cmp_double);
    double mid = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
    *med = bytes / (mid / 1e3) / 1e9;
    *best = bytes / (ms[0] / 1e3) / 1e9;
    *worst = bytes / (ms[n - 1] / 1e3) / 1e9;
}

enum { COPIES = 10, FILL_CHUNK = 16 << 20 };

/* Fills a backend buffer of `bytes` from a small host pattern, so that
 * every page exists before it is timed. */
static bool fill_buffer(be *b, unsigned char *dst, size_t bytes) {
    size_t chunk = bytes < FILL_CHUNK ? bytes : FILL_CHUNK;
    unsigned char *host = malloc(chunk);
    if (!host) return false;
    for (size_t i = 0; i < chunk; i++) host[i] = (unsigned char)(i * 131u + 7u);
    for (size_t off = 0; off < bytes; off += chunk)
        b->ops->upload(b, dst + off, host, bytes - off < chunk ? bytes - off : chunk);
    free(host);
    return true;
}

/* Copy bandwidth of one backend device through its ops (--device). */
static int device_bandwidth(const char *name, int mb, int passes, bool json) {
    int index;
    const struct be_ops *ops = be_find_device(name, &index);
    be b = {.ops = ops, .device = index};
    lv_err err = {{0}};
    if (ops->init(&b, 0, &err)) {
        fprintf(stderr, "llava-bench bandwidth: %s\n", err.msg);
        return 1;
    }
    size_t bytes = (size_t)mb << 20;
    unsigned char *x = ops->alloc(&b, bytes), *y = ops->alloc(&b, bytes);
    double *ms = calloc((size_t)passes, sizeof *ms);
    int rc = 1;
    if (!x || !y || !ms || !fill_buffer(&b, x, bytes) || !fill_buffer(&b, y, bytes)) {
        fprintf(stderr, "llava-bench bandwidth: out of memory for 2 x %d MiB on %s\n", mb, name);
        goto done;
    }
    ops->copy(&b, y, x, bytes); /* warm-up: the first copy may set things up */
    ops->synchronize(&b);
    for (int k = 0; k < passes; k++) {
        double t0 = lv_now_ms();
        for (int i = 0; i < COPIES; i++) { /* alternating: each reads what the last wrote */
            if (i % 2)
                ops->copy(&b, x, y, bytes);
            else
                ops->copy(&b, y, x, bytes);
        }
        ops->synchronize(&b);
        ms[k] = lv_now_ms() - t0;
    }
    if (ops->status && ops->status(&b, &err)) {
        fprintf(stderr, "llava-bench bandwidth: %s: %s\n", name, err.msg);
        goto done;
    }
    double moved = 2.0 * (double)bytes * COPIES, gbs, best, worst; /* read + written */
    pass_rates(ms, passes, moved, &gbs, &best, &worst);
    if (json)
        printf("{\"device\":\"%s\",\"bytes\":%zu,\"passes\":%d,\"copies_per_pass\":%d,"
               "\"gb_s\":%.3f,\"gb_s_best\":%.3f,\"gb_s_worst\":%.3f}\n",
               name, bytes, passes, COPIES, gbs, best, worst);
    else
        printf("bandwidth: %s copy of %.0f MiB, %d copies a pass, %d passes: median %.2f GB/s "
               "read + written (fastest %.2f, slowest %.2f)\n",
               name, bytes / 1048576.0, COPIES, passes, gbs, best, worst);
    rc = 0;
done:
    free(ms);
    ops->release(&b, y);
    ops->release(&b, x);
    ops->deinit(&b);
    return rc;
}

int bandwidth_bench_main(int argc, char **argv) {
    int threads = 0, mb = 1024, passes = 10;
    const char *isa = NULL, *device = "cpu";
    bool json = false;
    const tool_opt opts[] = {
        TOOL_STR("device", 0, &device),     TOOL_INT("threads", 0, &threads, 0, 4096),
        TOOL_INT("mb", 0, &mb, 1, 1 << 20), TOOL_INT("passes", 0, &passes, 1, 100000),
        TOOL_STR("isa", 0, &isa),           TOOL_FLAG("json", 0, &json),
    };
    static const tool_info tool = {"llava-bench bandwidth", usage_text, false};
    int rc = tool_parse(&tool, opts, LV_ARRAY_LEN(opts), argc, argv);
    if (rc) return rc == TOOL_HELP ? 0 : 2;
    if (!tool_device("llava-bench bandwidth", device)) return 1;
    if (be_find(device) != &be_cpu_ops) return device_bandwidth(device, mb, passes, json);
    if (!isa) isa = getenv("LLAVA_CPU_ISA");
    if (!isa || !*isa) isa = "auto";
    if (strcmp(isa, "auto") && strcmp(isa, "avx512") && strcmp(isa, "avx2") &&
        strcmp(isa, "portable")) {
        fprintf(stderr,
                "llava-bench bandwidth: --isa wants auto, avx512, avx2 or portable, got "
                "'%s'\n",
                isa);
        return 2;
    }
    const char *loop_name = NULL;
    read_fn fn = pick_loop(isa, &loop_name);
    if (!fn) {
        fprintf(stderr, "llava-bench bandwidth: this CPU cannot run the %s loop\n", isa);
        return 1;
    }
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    /* each thread's slice a whole number of 256-byte steps */
    size_t bytes = (size_t)mb << 20, slice = bytes / (size_t)threads / 256 * 256;
    if (slice == 0) {
        fprintf(stderr, "llava-bench bandwidth: --mb %d is too small for %d threads\n", mb,
                threads);
        return 2;
    }
    bytes = slice * (size_t)threads;
    unsigned char *buf = aligned_alloc(64, bytes);
    worker *ws = calloc((size_t)threads, sizeof *ws);
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    double *ms = calloc((size_t)passes, sizeof *ms);
    pthread_barrier_t start, end;
    rc = 1;
    if (!buf || !ws || !tid || !ms) {
        fprintf(stderr, "llava-bench bandwidth: out of memory for %zu bytes\n", bytes);
        goto done;
    }
    for (size_t i = 0; i < bytes; i += 8) { /* every page resident, none zero-mapped */
        uint64_t v = i * 0x9E3779B97F4A7C15ull;
        memcpy(buf + i, &v, 8);
    }
    /* the main thread reads slice 0 itself: T threads on T cores, none waiting for a core */
    pthread_barrier_init(&start, NULL, (unsigned)threads);
    pthread_barrier_init(&end, NULL, (unsigned)threads);
    for (int t = 0; t < threads; t++)
        ws[t] = (worker){&start, &end, fn, buf + slice * (size_t)t, slice, passes, 0};
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&tid[t], NULL, work, &ws[t])) {
            fprintf(stderr, "llava-bench bandwidth: cannot start thread %d\n", t);
            exit(1); /* the threads already started would wait at the barrier forever */
        }
    }
    for (int k = 0; k < passes; k++) {
        pthread_barrier_wait(&start);
        double t0 = lv_now_ms();
        ws[0].sink ^= fn(ws[0].p, ws[0].n);
        pthread_barrier_wait(&end);
        ms[k] = lv_now_ms() - t0;
    }
    uint64_t sink = ws[0].sink;
    for (int t = 1; t < threads; t++) {
        pthread_join(tid[t], NULL);
        sink ^= ws[t].sink;
    }
    pthread_barrier_destroy(&start);
    pthread_barrier_destroy(&end);
    double gbs, best, worst;
    pass_rates(ms, passes, (double)bytes, &gbs, &best, &worst);
    bw_sink = sink; /* the loads' result is used: none of them can be dropped */
    if (json)
        printf("{\"threads\":%d,\"bytes\":%zu,\"passes\":%d,\"loop\":\"%s\",\"gb_s\":%.3f,"
               "\"gb_s_best\":%.3f,\"gb_s_worst\":%.3f}\n",
               threads, bytes, passes, loop_name, gbs, best, worst);
    else
        printf("bandwidth: read %.0f MiB with %d thread%s, %s loop, %d passes: median %.2f GB/s "
               "(fastest %.2f, slowest %.2f)\n",
               bytes / 1048576.0, threads, threads == 1 ? "" : "s", loop_name, passes, gbs, best,
               worst);
    rc = 0;
done:
    free(ms);
    free(tid);
    free(ws);
    free(buf);
    return rc;
}
