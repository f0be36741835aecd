/*
 * model_report.h - what a tool says on stderr while a model loads and once
 * it has (llava-cli, llava-server, llava-eval, llava-bench), so a 7B load
 * that takes half a minute never looks like a hang:
 *
 *   load: 2 files, 4.40 GiB mapped, 291 tensors
 *   load: 120/291 tensors, 1.71/4.40 GiB, 12.1 s        (each second; on a
 *                                                        terminal one line
 *                                                        redrawn in place)
 *   model: llava_next (mistral), 7.57B parameters (text 7.24B, vision 303M, projector 21M)
 *   weights: Q4_0 + Q6_K (gguf); vision F16
 *   context: 32768 tokens; an image takes 577 (base view) to 2928 tokens (672x672)
 *   memory: weights 4.40 GiB mapped, 3.93 GiB resident; KV cache 128 KiB a token,
 *           4.00 GiB for one sequence of 32768
 *   loaded in 30.4 s (291 tensors, 2 files)
 *
 * Lines go through the log (base/log.h) at INFO, so --log-level warn (or
 * LOG_LEVEL=warn) silences them; stdout is never written.
 */
#ifndef LV_TOOL_MODEL_REPORT_H
#define LV_TOOL_MODEL_REPORT_H

#include "model/llava.h"

#include <stdint.h>

/* Before llava_load: reports its progress on stderr (llava_set_progress). */
void tool_report_load(llava *m);

/* After llava_load: the summary above. kv_bytes: the KV cache the tool
 * holds at most (the server's parallel sequences), with kv_what saying
 * what that is ("4 sequences of 8192"); 0: one sequence of the whole
 * context. */
void tool_report_model(const llava *m, int64_t kv_bytes, const char *kv_what);

#endif
