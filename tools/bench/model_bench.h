/*
 * model_bench.h - `llava-bench model`: a whole model's speed, the figures
 * of issue 13's table for llava alone (decode tg N, prefill of a P-token
 * prompt, and for an image: vision ms per tile, prefill, time to first
 * token, decode after it). tools/bench/vs_llamacpp.py runs it beside
 * llama.cpp on the same GGUF files.
 */
#ifndef LV_BENCH_MODEL_BENCH_H
#define LV_BENCH_MODEL_BENCH_H

/* argv from "model" on (argv[0] is "model"); prints the figures; 0 on
 * success (or --help), 1 on failure, 2 on bad usage. */
int model_bench_main(int argc, char **argv);

#endif
