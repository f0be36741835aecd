/*
 * hf_config.h - the Hugging Face JSON files of a model directory, resolved
 * into plain structs: config.json (model shape), preprocessor_config.json
 * (image processor), tokenizer_config.json (+ chat_template.json) and
 * generation_config.json.
 *
 * A checkpoint's config.json lists only what differs from the transformers
 * class defaults (llava-hf/llava-v1.6-mistral-7b-hf has no hidden_size,
 * num_hidden_layers or hidden_act in its text_config). Every key a file
 * omits therefore takes the default of the class transformers would
 * instantiate for it; each default below cites the class and file it was read
 * from (transformers src/transformers/models/...). What the structs hold is
 * the resolved value: callers never see "absent".
 *
 * Strings that can be long (token strings, chat templates) are heap-allocated
 * and released by the matching _deinit; everything else is inline, so a
 * config struct can be copied by value.
 */
#ifndef LV_HF_CONFIG_H
#define LV_HF_CONFIG_H

#include "base/common.h"

#include <stdbool.h>

#define HF_NAME_LEN           48  /* model_type, hidden_act, torch_dtype, ... */
#define HF_MAX_PINPOINTS      128 /* image_grid_pinpoints entries */
#define HF_MAX_FEATURE_LAYERS 8   /* vision_feature_layer list entries */
#define HF_MAX_EOS            8   /* eos_token_id list entries */

/* ---- config.json -------------------------------------------------------- */

/* The language model (text_config): MistralConfig or LlamaConfig. */
typedef struct {
    char model_type[HF_NAME_LEN]; /* "mistral" | "llama" */
    int vocab_size;               /* rows of embed_tokens and lm_head */
    int dim;                      /* hidden_size */
    int hidden_dim;               /* intermediate_size (MLP) */
    int n_layers;                 /* num_hidden_layers */
    int n_heads;                  /* num_attention_heads (query heads) */
    int n_kv_heads;               /* num_key_value_heads; divides n_heads */
    int head_dim;                 /* head_dim, else dim / n_heads */
    int max_pos;                  /* max_position_embeddings */
    double rms_eps;               /* rms_norm_eps */
    double rope_theta;            /* RoPE base (rope_theta or rope_parameters.rope_theta) */
    int sliding_window;           /* attention window in tokens; 0 = none (full causal) */
    char hidden_act[HF_NAME_LEN]; /* MLP activation, "silu" */
    bool tie_word_embeddings;     /* lm_head shares embed_tokens */
    bool attention_bias;          /* q/k/v/o have biases (Llama only; Mistral never) */
    bool mlp_bias;                /* gate/up/down have biases (Llama only) */
    int bos_id;                   /* -1 = none */
    int pad_id;                   /* -1 = none */
    int n_eos;                    /* entries of eos_ids (0 = none) */
    int eos_ids[HF_MAX_EOS];
} lv_text_config;

/* The vision tower (vision_config): CLIPVisionConfig, or the SigLIP tower of
 * Idefics3 / SmolVLM (Idefics3VisionConfig, SmolVLMVisionConfig). */
typedef struct {
    char model_type[HF_NAME_LEN]; /* "clip_vision_model" | "idefics3_vision" | "smolvlm_vision" */
    int dim;                      /* hidden_size */
    int hidden_dim;               /* intermediate_size */
    int n_layers;                 /* num_hidden_layers */
    int n_heads;                  /* num_attention_heads; divides dim */
    int head_dim;                 /* dim / n_heads */
    int image_size;               /* input side in pixels (square) */
    int patch_size;               /* conv stride and kernel; divides image_size (CLIP; SigLIP's
                                     "valid" conv leaves the remainder unread: 384 / 14) */
    int n_channels;               /* num_channels, 3 */
    int projection_dim;           /* unused by LLaVA (no visual projection) */
    double ln_eps;                /* layer_norm_eps */
    char hidden_act[HF_NAME_LEN]; /* MLP activation, "quick_gelu" */
} lv_vision_config;

/* The "quantization" (or "quantization_config") block of an MLX checkpoint
 * (shared/spec/formats.md §3.2): the global group size and bits, and
 * per-module overrides keyed by module path. Whether a module is quantized
 * is decided by the checkpoint (a "<path>.scales" tensor), not by this block.
 * Defaults when the block omits a key: MLX affine's (group 64, bits 4). */
#define HF_MAX_QUANT_OVERRIDES 512
#define HF_QUANT_PATH_LEN      80

typedef struct {
    char path[HF_QUANT_PATH_LEN]; /* module path as written
                                     ("language_model.model.layers.0.mlp.down_proj") */
    bool quantized;               /* false when the entry is `false` (module left float) */
    int16_t bits, group_size;     /* resolved: the entry's values, else the global ones */
} lv_quant_override;

typedef struct {
    bool present;           /* config.json has the block */
    char mode[HF_NAME_LEN]; /* "affine" (default); others are refused by the loader */
    int bits;               /* 2, 3, 4, 5, 6 or 8 (affine); default 4 */
    int group_size;         /* 32, 64 or 128 (affine); default 64 */
    int n_overrides;
    lv_quant_override overrides[HF_MAX_QUANT_OVERRIDES];
} lv_quant_config;

/* The override for module path, also matched with the "language_model."
 * prefix removed from path (formats.md §3.2); NULL if none. */
const lv_quant_override *hf_quant_override(const lv_quant_config *q, const char *path);

typedef struct {
    char model_type[HF_NAME_LEN]; /* "llava_next" | "llava" | "idefics3" | "smolvlm" */
    lv_text_config text;
    lv_vision_config vision;
    int image_token_id;                        /* image_token_index (4.x) or image_token_id (5.x) */
    int pad_token_id;                          /* top-level pad_token_id; -1 = none */
    char projector_hidden_act[HF_NAME_LEN];    /* "gelu" = exact erf GELU */
    bool projector_bias;                       /* multimodal_projector_bias */
    int n_feature_layers;                      /* 1 unless vision_feature_layer is a list */
    int feature_layers[HF_MAX_FEATURE_LAYERS]; /* indices into CLIP hidden_states, may be < 0 */
    char feature_select_strategy[HF_NAME_LEN]; /* "default" (drop CLS) | "full" */
    int n_pinpoints;                           /* 0 for llava (no anyres) */
    int pinpoints[HF_MAX_PINPOINTS][2];        /* image_grid_pinpoints, each (height, width) */
    bool use_image_newline; /* use_image_newline_parameter (llava_next: image_newline exists) */
    int image_seq_length;   /* image_seq_length, tokens per base image (576); Idefics3 /
                               SmolVLM: tokens per frame, (image_size/patch)² / scale² */
    int scale_factor;       /* Idefics3 / SmolVLM pixel shuffle factor (2 by default); 0 else */
    char torch_dtype[HF_NAME_LEN]; /* "float16", ... ("dtype" in 5.x); "" if absent */
    lv_quant_config quant;         /* MLX "quantization" block; .present false if none */
} lv_model_config;

/* Whether cfg is an Idefics3-family model (model_type "idefics3": SmolVLM v1;
 * "smolvlm": SmolVLM2): SigLIP tower, pixel-shuffle connector, Llama text. */
bool hf_is_idefics3(const lv_model_config *cfg);

/* Parses config.json text (len bytes; need not be NUL-terminated). name is
 * used in messages (the path). Fills every field, applying the transformers
 * class defaults to what the file omits, and validates the result (positive
 * dims, heads dividing dims, ...). Errors: LV_ERR_FORMAT (invalid JSON, a
 * wrong type or value, naming the key), LV_ERR_UNSUPPORTED (a model_type,
 * rope scaling or other feature the engine lacks, naming it). */
lv_status hf_config_parse(const char *json, size_t len, const char *name, lv_model_config *cfg,
                          lv_err *err);
/* Reads path and parses it as above (LV_ERR_IO if it cannot be read). */
lv_status hf_config_load(const char *path, lv_model_config *cfg, lv_err *err);

/* ---- preprocessor_config.json ------------------------------------------ */

/* The image processor class, which decides the defaults. The Fast (torchvision)
 * and Pil variants share their class's defaults. */
typedef enum {
    LV_IMGPROC_LLAVA_NEXT, /* LlavaNextImageProcessor: anyres, do_pad */
    LV_IMGPROC_CLIP,       /* CLIPImageProcessor (llava-1.5 checkpoints) */
    LV_IMGPROC_LLAVA,      /* LlavaImageProcessor (newer llava-1.5 uploads) */
    LV_IMGPROC_IDEFICS3,   /* Idefics3ImageProcessor / SmolVLMImageProcessor (SmolVLM,
                              SmolVLM2): longest edge, T x T tiles + global image */
} lv_imgproc_kind;

typedef struct {
    char image_processor_type[HF_NAME_LEN]; /* as written; "" if absent */
    lv_imgproc_kind kind;
    bool do_resize, do_center_crop, do_rescale, do_normalize, do_convert_rgb, do_pad;
    int shortest_edge;           /* size {"shortest_edge": n}; 0 if size gives height/width */
    int size_height, size_width; /* size {"height", "width"}; 0 if size gives shortest_edge */
    int crop_height, crop_width; /* crop_size */
    int resample;                /* PIL filter id: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic */
    double rescale_factor;       /* 1/255 */
    double image_mean[3], image_std[3];     /* per RGB channel */
    int n_pinpoints;                        /* 0 for CLIP/Llava processors */
    int pinpoints[HF_MAX_PINPOINTS][2];     /* (height, width) */
    char aspect_ratio_setting[HF_NAME_LEN]; /* "anyres" or ""; informational */
    /* LV_IMGPROC_IDEFICS3 only (0 / false for the other kinds): */
    int longest_edge;        /* size {"longest_edge": n}: resize target L */
    int max_image_size;      /* max_image_size {"longest_edge": n}: tile side T */
    bool do_image_splitting; /* tiles + global image; false: one T x T frame */
    /* SmolVLM2's "video_sampling" {"fps", "max_frames", "video_size": {"longest_edge"}}
     * (SmolVLMVideoProcessor); has_video false when the file has none. */
    bool has_video;
    double video_fps;       /* frames sampled per second of a video file (1) */
    int video_max_frames;   /* at most this many frames a video (64) */
    int video_longest_edge; /* the frames' first resize: video_size.longest_edge, or
                               size.longest_edge when the file gives size (transformers'
                               SmolVLMVideoProcessor puts size in place of video_size) */
} lv_preproc_config;

/* Fills pp with the defaults of the processor class kind (what transformers
 * uses for keys a file omits). Cannot fail. */
void hf_preproc_defaults(lv_imgproc_kind kind, lv_preproc_config *pp);

/* Parses preprocessor_config.json. The class is taken from
 * "image_processor_type" (or the older "feature_extractor_type"); a file
 * naming neither uses default_kind. Unknown class: LV_ERR_UNSUPPORTED. */
lv_status hf_preproc_parse(const char *json, size_t len, const char *name,
                           lv_imgproc_kind default_kind, lv_preproc_config *pp, lv_err *err);
lv_status hf_preproc_load(const char *path, lv_imgproc_kind default_kind, lv_preproc_config *pp,
                          lv_err *err);

/* ---- tokenizer_config.json + chat_template.json ------------------------ */

typedef struct {
    bool has_add_bos_token; /* the file sets add_bos_token */
    bool add_bos_token;     /* its value; LlamaTokenizer's default (true) when absent */
    bool has_add_eos_token;
    bool add_eos_token; /* LlamaTokenizer's default (false) when absent */
    char *bos_token;    /* token strings (a string or {"content": ...}); NULL if absent/null */
    char *eos_token;
    char *unk_token;
    char *pad_token;
    char *chat_template;           /* tokenizer_config.json's template (the "default" one of a named
                                      list); NULL if none */
    char *processor_chat_template; /* chat_template.json's "chat_template" or chat_template.jinja
                                      (what the multimodal processor applies); NULL if none */
    bool has_legacy;
    bool legacy; /* SentencePiece legacy mode flag (LlamaTokenizer default: true) */
    bool has_model_max_length;
    int64_t model_max_length;          /* clamped to INT64_MAX (files write 1e30 for "no limit") */
    char tokenizer_class[HF_NAME_LEN]; /* "LlamaTokenizer", ...; "" if absent */
    bool has_clean_up_tokenization_spaces;
    bool clean_up_tokenization_spaces;
    bool has_spaces_between_special_tokens;
    bool spaces_between_special_tokens;
} lv_tokenizer_config;

/* Zeroes tc and sets the LlamaTokenizer defaults (add_bos_token, legacy
 * true; model_max_length INT64_MAX), as for a file that sets nothing. */
void hf_tokcfg_defaults(lv_tokenizer_config *tc);

/* Parses tokenizer_config.json into tc (defaults first, hf_tokcfg_defaults). On success the caller
 * releases tc with hf_tokcfg_deinit; on failure nothing is held. */
lv_status hf_tokcfg_parse(const char *json, size_t len, const char *name, lv_tokenizer_config *tc,
                          lv_err *err);
lv_status hf_tokcfg_load(const char *path, lv_tokenizer_config *tc, lv_err *err);

/* Sets tc->processor_chat_template from a chat_template.json file
 * ({"chat_template": "..."}) or, for a path ending in ".jinja", from the raw
 * file text. Replaces any earlier value. */
lv_status hf_chat_template_load(const char *path, lv_tokenizer_config *tc, lv_err *err);

/* Frees the strings of tc and zeroes it. A zeroed struct is a no-op. */
void hf_tokcfg_deinit(lv_tokenizer_config *tc);

/* ---- generation_config.json -------------------------------------------- */

/* Values default to transformers GenerationConfig's; has_* says the file set
 * them (a null value counts as absent). */
typedef struct {
    bool has_bos_token_id;
    int bos_token_id; /* -1 if absent */
    bool has_eos_token_id;
    int n_eos; /* an int or a list in the file */
    int eos_token_ids[HF_MAX_EOS];
    bool has_pad_token_id;
    int pad_token_id; /* -1 if absent */
    bool has_do_sample;
    bool do_sample; /* false */
    bool has_temperature;
    double temperature; /* 1.0 */
    bool has_top_k;
    int top_k; /* 50 */
    bool has_top_p;
    double top_p; /* 1.0 */
    bool has_max_new_tokens;
    int max_new_tokens; /* 0 if absent (no default in GenerationConfig) */
    bool has_max_length;
    int max_length; /* 20 */
    bool has_repetition_penalty;
    double repetition_penalty; /* 1.0 */
} lv_generation_config;

/* Zeroes gc and sets the GenerationConfig defaults. */
void hf_gencfg_defaults(lv_generation_config *gc);

/* Parses generation_config.json (defaults first). */
lv_status hf_gencfg_parse(const char *json, size_t len, const char *name, lv_generation_config *gc,
                          lv_err *err);
lv_status hf_gencfg_load(const char *path, lv_generation_config *gc, lv_err *err);

#endif
