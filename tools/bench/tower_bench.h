/*
 * tower_bench.h - `llava-bench tower`: the CLIP vision tower (model/clip.h)
 * on one tile, with random weights of the shape LLaVA uses (ViT-L/14 at
 * 336 px: 24 layers, 1024 wide, MLP 4096, 577 positions), timed as a whole
 * and op by op, for the vision-tower figure of issue 13.
 */
#ifndef LV_BENCH_TOWER_BENCH_H
#define LV_BENCH_TOWER_BENCH_H

/* argv from "tower" on (argv[0] is "tower"); prints the figures; 0 on
 * success (or --help), 1 on failure, 2 on bad usage. */
int tower_bench_main(int argc, char **argv);

#endif
