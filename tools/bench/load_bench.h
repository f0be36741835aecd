/*
 * load_bench.h - `llava-bench load`: N concurrent HTTP clients on loopback
 * against a running llava-server, a weighted mix of request kinds (plain and
 * streamed, with an image and text-only, n > 1, cancelled ones, bad ones sent
 * on purpose), every answer checked, and the server's resident set and open
 * descriptors sampled each second: the load and soak test of the
 * reliability issue.
 */
#ifndef LV_BENCH_LOAD_BENCH_H
#define LV_BENCH_LOAD_BENCH_H

/* argv from "load" on (argv[0] is "load"); prints the report; 0 when every
 * request was answered as expected (or --help), 1 when any failed or the
 * server could not be reached, 2 on bad usage. */
int load_bench_main(int argc, char **argv);

#endif
