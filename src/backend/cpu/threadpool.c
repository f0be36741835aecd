/*
 * threadpool.c - see threadpool.h.
 *
 * Protocol. The job (fn, arg, nth) is written by the dispatching thread,
 * which then bumps `generation` under `lock` and broadcasts `wake`. A worker
 * waits for the generation to move past the last one it ran: first spinning
 * on the atomic, then sleeping on `wake` (it re-checks the generation under
 * `lock` before sleeping, so a bump cannot be missed). It runs its share
 * (worker i is thread i + 1), then increments `n_done`. The dispatcher runs
 * share 0 itself and spins until n_done reaches the number of workers: every
 * worker checks in for every job, even one with fewer threads than the pool,
 * so the next job can never overtake a worker still reading this one.
 *
 * The seq_cst atomics on generation and n_done order the plain job fields:
 * written before the bump, read after a worker sees it.
 */
#include "backend/cpu/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

/* Spin iterations before a waiting thread sleeps (worker) or yields (caller). */
enum { SPIN_BEFORE_SLEEP = 1 << 14, SPIN_BEFORE_YIELD = 1 << 10 };

typedef struct {
    tp *pool;
    int ith; /* 1.. */
    pthread_t thread;
} worker;

struct tp {
    int n_threads; /* caller + workers */
    worker *workers;

    pthread_mutex_t dispatch; /* one job at a time */
    pthread_mutex_t lock;     /* guards sleeping on wake */
    pthread_cond_t wake;

    /* The current job. */
    tp_fn fn;
    void *arg;
    int nth;
    bool stop;

    atomic_uint generation; /* bumped once per job */
    atomic_int n_done;      /* workers finished with the current job */
};

static unsigned wait_for_job(tp *pool, unsigned seen) {
    for (int i = 0; i < SPIN_BEFORE_SLEEP; i++) {
        unsigned g = atomic_load(&pool->generation);
        if (g != seen) return g;
        cpu_relax();
    }
    pthread_mutex_lock(&pool->lock);
    unsigned g;
    while ((g = atomic_load(&pool->generation)) == seen)
        pthread_cond_wait(&pool->wake, &pool->lock);
    pthread_mutex_unlock(&pool->lock);
    return g;
}

static void *worker_main(void *p) {
    worker *w = p;
    tp *pool = w->pool;
    unsigned seen = 0;
    for (;;) {
        seen = wait_for_job(pool, seen);
        if (pool->stop) break;
        if (w->ith < pool->nth) pool->fn(pool->arg, w->ith, pool->nth);
        atomic_fetch_add(&pool->n_done, 1);
    }
    return NULL;
}

/* Publishes the job set in pool's fields and wakes the workers. */
static void publish(tp *pool) {
    atomic_store(&pool->n_done, 0);
    pthread_mutex_lock(&pool->lock);
    atomic_fetch_add(&pool->generation, 1);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
}

static void wait_for_workers(tp *pool) {
    int n_workers = pool->n_threads - 1;
    for (int i = 0; atomic_load(&pool->n_done) < n_workers; i++) {
        if (i < SPIN_BEFORE_YIELD)
            cpu_relax();
        else
            sched_yield();
    }
}

tp *tp_new(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    tp *pool = calloc(1, sizeof *pool);
    if (!pool) return NULL;
    pool->n_threads = 1; /* grows as workers start, so tp_free joins only those */
    atomic_init(&pool->generation, 0);
    atomic_init(&pool->n_done, 0);
    pthread_mutex_init(&pool->dispatch, NULL);
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pool->workers = calloc((size_t)n_threads, sizeof *pool->workers);
    if (!pool->workers) goto fail;
    for (int i = 1; i < n_threads; i++) {
        worker *w = &pool->workers[i - 1];
        w->pool = pool;
        w->ith = i;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) goto fail;
        pool->n_threads++;
    }
    return pool;
fail:
    tp_free(pool);
    return NULL;
}

void tp_free(tp *pool) {
    if (!pool) return;
    if (pool->n_threads > 1) {
        pthread_mutex_lock(&pool->dispatch);
        pool->stop = true;
        publish(pool);
        for (int i = 0; i < pool->n_threads - 1; i++) pthread_join(pool->workers[i].thread, NULL);
        pthread_mutex_unlock(&pool->dispatch);
    }
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->lock);
    pthread_mutex_destroy(&pool->dispatch);
    free(pool->workers);
    free(pool);
}

int tp_size(const tp *pool) {
    return pool->n_threads;
}

void tp_run(tp *pool, tp_fn fn, void *arg, int nth) {
    if (nth > pool->n_threads) nth = pool->n_threads;
    pthread_mutex_lock(&pool->dispatch); /* also for nth == 1: share 0's scratch is one */
    if (nth <= 1) {
        fn(arg, 0, 1);
        pthread_mutex_unlock(&pool->dispatch);
        return;
    }
    pool->fn = fn;
    pool->arg = arg;
    pool->nth = nth;
    publish(pool);
    fn(arg, 0, nth);
    wait_for_workers(pool);
    pthread_mutex_unlock(&pool->dispatch);
}

void tp_split(long n, int ith, int nth, long align, long *lo, long *hi) {
    if (align < 1) align = 1;
    long units = (n + align - 1) / align; /* runs are cut between units */
    long u0 = units * ith / nth, u1 = units * (ith + 1) / nth;
    *lo = u0 * align < n ? u0 * align : n;
    *hi = u1 * align < n ? u1 * align : n;
}
