/*
 * config.h - the seed's JSON configuration file (llava-server --config),
 * read as-is.
 *
 * The seed (an MLX/Flask server) documented this shape:
 *   {"model_name": "LLaVA-MLX", "model_id": "mlx-community/llava-v1.6-mistral-7b-4bit",
 *    "device": "mps", "quantization": "int4", "max_tokens": 150,
 *    "image_processing": {"max_size", "min_size", "format", "quality",
 *                         "preprocessing_quality", "maintain_aspect_ratio",
 *                         "padding_color": [r, g, b]},
 *    "enhanced_memory_management": {"periodic_cleanup", "cleanup_interval",
 *                         "adaptive_pressure_detection", "mlx_memory_clearing",
 *                         "model_reloading"},
 *    "mlx_config": {"memory_pool_size", "cache_size", "batch_size"}}
 * Every key either takes effect (model_name → the served name, model_id →
 * the model, max_tokens → the default max_tokens, device "cpu", "cuda" or
 * "cuda:N" → the backend, "gpu" / "auto" → cuda in a CUDA build,
 * image_processing's sizes, aspect flag and padding colour → img_options,
 * enhanced_memory_management's periodic_cleanup / cleanup_interval → the
 * scheduler's hand-back of freed heap, adaptive_pressure_detection → the
 * memory governor measuring the real use, mlx_config's memory_pool_size →
 * the prefix cache's budget and cache_size → the image cache's: sizes are
 * integer MiB or strings with a unit)
 * or is logged, once, as accepted and not needed, with the reason (device
 * "mps" / "metal", or "gpu" / "auto" without CUDA: this build runs them on
 * its CPU backend; model_reloading: requests never share model state here;
 * ...). A value of the wrong type or out of range is an error naming the
 * key ("image_processing.max_size: expected an integer in [1, 16384], got
 * \"big\""). Unknown keys are warnings, not errors: a newer seed file still
 * loads. Command-line flags override whatever the file sets.
 */
#ifndef LV_SERVER_CONFIG_H
#define LV_SERVER_CONFIG_H

#include "base/common.h"
#include "image/image.h"

#include <stdbool.h>

typedef struct {
    char *model_name;  /* "model_name" (heap), or NULL */
    char *model_id;    /* "model_id": a path or an HF repo id (heap), or NULL */
    char *device;      /* the backend "device" selects, lower case: "cpu", "cuda", "cuda:N"
                        * (heap); NULL: the default, cpu (absent, or a torch/MLX device) */
    int max_tokens;    /* "max_tokens" (>= 1), 0 if absent */
    img_options image; /* "image_processing" (all zero if absent) */
    /* enhanced_memory_management / mlx_config, onto the memory governor and
     * the caches; -1 (0 for the interval) when absent: */
    int periodic_cleanup;       /* periodic_cleanup: hand freed memory back (1) or never (0) */
    double cleanup_interval_s;  /* cleanup_interval: seconds between two hand-backs */
    int pressure_detection;     /* adaptive_pressure_detection: measure the real use (1) or
                                   only account (0) */
    int64_t prefix_cache_bytes; /* mlx_config.memory_pool_size: the prefix cache's budget */
    int64_t image_cache_bytes;  /* mlx_config.cache_size: the image cache's budget */
    int n_notes;                /* keys accepted and not needed (logged) */
    int n_unknown;              /* unknown keys (warned) */
} srv_config;

/*
 * Reads and validates the file at path into *out (zeroed first; free with
 * srv_config_free, also after a failure). Logs one line per key (INFO:
 * applied or accepted-and-not-needed; WARN: unknown). Errors: LV_ERR_IO
 * (cannot read), LV_ERR_FORMAT (not JSON, or not an object; line and
 * column given), LV_ERR_ARG (a bad value; the message names the key, what
 * was expected and what was found), LV_ERR_NOMEM.
 */
lv_status srv_config_load(const char *path, srv_config *out, lv_err *err);

/* The same from a JSON text of len bytes (tests); where names the source in messages. */
lv_status srv_config_parse(const char *text, size_t len, const char *where, srv_config *out,
                           lv_err *err);

void srv_config_free(srv_config *c); /* zeroed: no-op */

#endif
