/*
 * bandwidth.h - `llava-bench bandwidth`: the machine's memory read
 * bandwidth with N threads, the roofline a decode step is held to (every
 * weight byte read once per token), for the decode bound of issue 13.
 */
#ifndef LV_BENCH_BANDWIDTH_H
#define LV_BENCH_BANDWIDTH_H

/* argv from "bandwidth" on (argv[0] is "bandwidth"); prints the figures; 0 on
 * success (or --help), 1 on failure, 2 on bad usage. */
int bandwidth_bench_main(int argc, char **argv);

#endif
