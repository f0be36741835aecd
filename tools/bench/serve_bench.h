/*
 * serve_bench.h - `llava-bench serve`: the continuous-batching scheduler
 * (engine/scheduler.h) driven in-process by N concurrent streams, against one stream
 * in the same run, for the throughput figure of issue 6 (8 streams should
 * give at least 3x the tokens/s of one).
 */
#ifndef LV_BENCH_SERVE_BENCH_H
#define LV_BENCH_SERVE_BENCH_H

/* argv from "serve" on (argv[0] is "serve"); prints the figures; 0 on success (or
 * --help), 1 on failure, 2 on bad usage. */
int serve_bench_main(int argc, char **argv);

#endif
