/*
 * tool_model.h - the --model argument of llava-cli and llava-server, opened
 * one way: a local path, or a Hugging Face repo id (ORG/NAME[:QUANT]) taken
 * from the local cache or, when it is not there, downloaded into it with a
 * progress bar on stderr (io/hf_download.h's hf_get_model). --offline (or
 * HF_HUB_OFFLINE=1) keeps downloads off: an uncached repo is then the
 * cache's "not found" error, as before downloads existed.
 */
#ifndef LV_TOOL_MODEL_H
#define LV_TOOL_MODEL_H

#include "base/common.h"
#include "model/llava.h"

#include <stdbool.h>

/* Opens model (with mmproj: the GGUF pair, both local paths) into *m.
 * *where (may be NULL): what was opened, the directory or GGUF text path
 * (heap, caller frees; NULL on failure). Errors as hf_get_model and
 * llava_open2. */
lv_status tool_open_model(const char *model, const char *mmproj, bool offline, llava **m,
                          char **where, lv_err *err);

#endif
