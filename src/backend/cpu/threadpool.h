/*
 * threadpool.h - persistent worker threads with a barrier-style dispatch.
 *
 * tp_run(pool, fn, arg, nth) runs fn(arg, ith, nth) for ith = 0..nth-1, one
 * call per thread (the caller is thread 0), and returns when all have
 * finished. Workers are created once by tp_new and wait between jobs, first
 * spinning briefly (a decode step dispatches a few hundred small ops, and
 * waking a sleeping thread costs more than the op) and then sleeping on a
 * condition variable, so an idle engine uses no CPU. Jobs from different
 * caller threads are serialised by a mutex (single-threaded ones too, since
 * the caller always runs share 0 and share ith may own per-thread state), so
 * one pool, and one CPU backend, may serve several threads.
 */
#ifndef LV_CPU_THREADPOOL_H
#define LV_CPU_THREADPOOL_H

typedef struct tp tp;

/* The work of one thread: its share of a job, found from (ith, nth). */
typedef void (*tp_fn)(void *arg, int ith, int nth);

/* A pool of n_threads threads in all (the caller counts as one, so n_threads
 * - 1 workers start). NULL on failure (threads or memory). */
tp *tp_new(int n_threads);

/* Stops and joins the workers. NULL is a no-op. */
void tp_free(tp *pool);

/* Threads in the pool, the caller included. */
int tp_size(const tp *pool);

/* Runs fn on min(nth, tp_size) threads and waits for all of them; nth <= 1
 * runs fn(arg, 0, 1) on the calling thread without waking anyone. Not
 * reentrant: fn must not call tp_run on the same pool. */
void tp_run(tp *pool, tp_fn fn, void *arg, int nth);

/* [*lo, *hi): thread ith's share of n items split into nth near-equal runs,
 * each run a multiple of `align` items except the last. */
void tp_split(long n, int ith, int nth, long align, long *lo, long *hi);

#endif
