/*
 * grammar_bench.h - `llava-bench grammar`: what constrained decoding adds to
 * each decode step (issue 16: at most 5% of the step on the 7B-shaped
 * model): a generation under a JSON Schema simulated on a real tokenizer,
 * each step's mask, logits masking and token accept timed as gen_state
 * does them (engine/generate.c).
 */
#ifndef LV_BENCH_GRAMMAR_BENCH_H
#define LV_BENCH_GRAMMAR_BENCH_H

/* argv from "grammar" on (argv[0] is "grammar"); prints the figures; 0 on
 * success (or --help), 1 on failure, 2 on bad usage. */
int grammar_bench_main(int argc, char **argv);

#endif
