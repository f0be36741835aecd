/*
 * presets.c - the preset config texts (sources: presets.h). The JSON is kept
 * verbatim as a string so the written model's config.json is exactly what
 * the published checkpoint holds (keys equal to class defaults omitted).
 */
#include "presets.h"

#include <string.h>

static const char M7_CONFIG[] =
    "{\"architectures\": [\"LlavaNextForConditionalGeneration\"], \"ignore_index\": -100, "
    "\"image_grid_pinpoints\": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]], "
    "\"image_token_index\": 32000, \"model_type\": \"llava_next\", \"projector_hidden_act\": "
    "\"gelu\", \"text_config\": {\"_name_or_path\": \"mistralai/Mistral-7B-Instruct-v0.2\", "
    "\"architectures\": [\"MistralForCausalLM\"], \"intermediate_size\": 14336, "
    "\"max_position_embeddings\": 32768, \"model_type\": \"mistral\", \"num_key_value_heads\": 8, "
    "\"rms_norm_eps\": 1e-05, \"rope_theta\": 1000000.0, \"sliding_window\": null, "
    "\"torch_dtype\": \"bfloat16\", \"vocab_size\": 32064}, \"torch_dtype\": \"float16\", "
    "\"transformers_version\": \"4.39.0.dev0\", \"use_image_newline_parameter\": true, "
    "\"vision_config\": {\"hidden_size\": 1024, \"image_size\": 336, \"intermediate_size\": 4096, "
    "\"model_type\": \"clip_vision_model\", \"num_attention_heads\": 16, \"num_hidden_layers\": "
    "24, \"patch_size\": 14, \"projection_dim\": 768, \"vocab_size\": 32000}, "
    "\"vision_feature_layer\": -2, \"vision_feature_select_strategy\": \"default\", "
    "\"vocab_size\": 32064}";
static const char M7_PREPROC[] =
    "{\"aspect_ratio_setting\": \"anyres\", \"crop_size\": {\"height\": 336, \"width\": 336}, "
    "\"do_center_crop\": true, \"do_convert_rgb\": true, \"do_normalize\": true, \"do_pad\": true, "
    "\"do_rescale\": true, \"do_resize\": true, \"image_grid_pinpoints\": [[336, 672], [672, 336], "
    "[672, 672], [1008, 336], [336, 1008]], \"image_mean\": [0.48145466, 0.4578275, 0.40821073], "
    "\"image_processor_type\": \"LlavaNextImageProcessor\", \"image_std\": [0.26862954, "
    "0.26130258, 0.27577711], \"processor_class\": \"LlavaNextProcessor\", \"resample\": 3, "
    "\"rescale_factor\": 0.00392156862745098, \"size\": {\"shortest_edge\": 336}}";
static const char L15_CONFIG[] =
    "{\"architectures\": [\"LlavaForConditionalGeneration\"], \"ignore_index\": -100, "
    "\"image_token_index\": 32000, \"model_type\": \"llava\", \"pad_token_id\": 32001, "
    "\"projector_hidden_act\": \"gelu\", \"text_config\": {\"_name_or_path\": "
    "\"lmsys/vicuna-7b-v1.5\", \"architectures\": [\"LlamaForCausalLM\"], "
    "\"max_position_embeddings\": 4096, \"model_type\": \"llama\", \"rms_norm_eps\": 1e-05, "
    "\"torch_dtype\": \"float16\", \"vocab_size\": 32064}, \"tie_word_embeddings\": false, "
    "\"torch_dtype\": \"float16\", \"transformers_version\": \"4.36.0.dev0\", \"vision_config\": "
    "{\"hidden_size\": 1024, \"image_size\": 336, \"intermediate_size\": 4096, \"model_type\": "
    "\"clip_vision_model\", \"num_attention_heads\": 16, \"num_hidden_layers\": 24, "
    "\"patch_size\": 14, \"projection_dim\": 768, \"vocab_size\": 32000}, "
    "\"vision_feature_layer\": -2, \"vision_feature_select_strategy\": \"default\", "
    "\"vocab_size\": 32064}";
static const char L15_PREPROC[] =
    "{\"crop_size\": {\"height\": 336, \"width\": 336}, \"do_center_crop\": true, "
    "\"do_convert_rgb\": true, \"do_normalize\": true, \"do_rescale\": true, \"do_resize\": true, "
    "\"image_mean\": [0.48145466, 0.4578275, 0.40821073], \"image_processor_type\": "
    "\"CLIPImageProcessor\", \"image_std\": [0.26862954, 0.26130258, 0.27577711], "
    "\"processor_class\": \"LlavaProcessor\", \"resample\": 3, \"rescale_factor\": "
    "0.00392156862745098, \"size\": {\"shortest_edge\": 336}}";
static const char V13_CONFIG[] =
    "{\"architectures\": [\"LlavaNextForConditionalGeneration\"], \"ignore_index\": -100, "
    "\"image_grid_pinpoints\": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]], "
    "\"image_token_index\": 32000, \"model_type\": \"llava_next\", \"pad_token_id\": 32001, "
    "\"projector_hidden_act\": \"gelu\", \"text_config\": {\"_name_or_path\": "
    "\"lmsys/vicuna-13b-v1.5\", \"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 5120, "
    "\"intermediate_size\": 13824, \"max_position_embeddings\": 4096, \"model_type\": \"llama\", "
    "\"num_attention_heads\": 40, \"num_hidden_layers\": 40, \"num_key_value_heads\": 40, "
    "\"pad_token_id\": 0, \"rms_norm_eps\": 1e-05, \"torch_dtype\": \"float16\", \"vocab_size\": "
    "32064}, \"tie_word_embeddings\": false, \"torch_dtype\": \"float16\", "
    "\"transformers_version\": \"4.39.0.dev0\", \"use_image_newline_parameter\": true, "
    "\"vision_config\": {\"hidden_size\": 1024, \"image_size\": 336, \"intermediate_size\": 4096, "
    "\"model_type\": \"clip_vision_model\", \"num_attention_heads\": 16, \"num_hidden_layers\": "
    "24, \"patch_size\": 14, \"projection_dim\": 768, \"vocab_size\": 32000}, "
    "\"vision_feature_layer\": -2, \"vision_feature_select_strategy\": \"default\", "
    "\"vocab_size\": 32064}";
static const char V13_PREPROC[] =
    "{\"aspect_ratio_setting\": \"anyres\", \"crop_size\": {\"height\": 336, \"width\": 336}, "
    "\"do_center_crop\": true, \"do_convert_rgb\": true, \"do_normalize\": true, \"do_pad\": true, "
    "\"do_rescale\": true, \"do_resize\": true, \"image_grid_pinpoints\": [[336, 672], [672, 336], "
    "[672, 672], [1008, 336], [336, 1008]], \"image_mean\": [0.48145466, 0.4578275, 0.40821073], "
    "\"image_processor_type\": \"LlavaNextImageProcessor\", \"image_std\": [0.26862954, "
    "0.26130258, 0.27577711], \"processor_class\": \"LlavaNextProcessor\", \"resample\": 3, "
    "\"rescale_factor\": 0.00392156862745098, \"size\": {\"shortest_edge\": 336}}";
/* llava-v1.6-34b: the llava_next top level of V13 with Nous-Hermes-2-Yi-34B's
 * Llama text model (sources: presets.h). */
static const char Y34_CONFIG[] =
    "{\"architectures\": [\"LlavaNextForConditionalGeneration\"], \"ignore_index\": -100, "
    "\"image_grid_pinpoints\": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]], "
    "\"image_token_index\": 64000, \"model_type\": \"llava_next\", \"pad_token_id\": 64001, "
    "\"projector_hidden_act\": \"gelu\", \"text_config\": {\"_name_or_path\": "
    "\"NousResearch/Nous-Hermes-2-Yi-34B\", \"architectures\": [\"LlamaForCausalLM\"], "
    "\"eos_token_id\": 7, \"hidden_size\": 7168, \"intermediate_size\": 20480, "
    "\"max_position_embeddings\": 4096, \"model_type\": \"llama\", \"num_attention_heads\": 56, "
    "\"num_hidden_layers\": 60, \"num_key_value_heads\": 8, \"pad_token_id\": 0, "
    "\"rms_norm_eps\": 1e-05, \"rope_theta\": 5000000.0, \"torch_dtype\": \"bfloat16\", "
    "\"vocab_size\": 64064}, \"tie_word_embeddings\": false, \"torch_dtype\": \"float16\", "
    "\"transformers_version\": \"4.39.0.dev0\", \"use_image_newline_parameter\": true, "
    "\"vision_config\": {\"hidden_size\": 1024, \"image_size\": 336, \"intermediate_size\": 4096, "
    "\"model_type\": \"clip_vision_model\", \"num_attention_heads\": 16, \"num_hidden_layers\": "
    "24, \"patch_size\": 14, \"projection_dim\": 768, \"vocab_size\": 32000}, "
    "\"vision_feature_layer\": -2, \"vision_feature_select_strategy\": \"default\", "
    "\"vocab_size\": 64064}";

static const char TINY_CONFIG[] =
    "{\"architectures\": [\"LlavaNextForConditionalGeneration\"], \"ignore_index\": -100, "
    "\"image_grid_pinpoints\": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]], "
    "\"image_token_index\": 32000, \"model_type\": \"llava_next\", \"projector_hidden_act\": "
    "\"gelu\", \"text_config\": {\"architectures\": [\"MistralForCausalLM\"], "
    "\"hidden_size\": 256, \"intermediate_size\": 512, \"max_position_embeddings\": 4096, "
    "\"model_type\": \"mistral\", \"num_attention_heads\": 4, \"num_hidden_layers\": 8, "
    "\"num_key_value_heads\": 2, \"rms_norm_eps\": 1e-05, \"rope_theta\": 1000000.0, "
    "\"sliding_window\": null, \"vocab_size\": 32064}, \"torch_dtype\": \"float16\", "
    "\"use_image_newline_parameter\": true, \"vision_config\": {\"hidden_size\": 64, "
    "\"image_size\": 336, \"intermediate_size\": 128, \"model_type\": \"clip_vision_model\", "
    "\"num_attention_heads\": 4, \"num_hidden_layers\": 2, \"patch_size\": 14, "
    "\"projection_dim\": 64}, \"vision_feature_layer\": -2, "
    "\"vision_feature_select_strategy\": \"default\", \"vocab_size\": 32064}";

/* llava-hf/llava-v1.6-mistral-7b-hf chat_template.json (sources: presets.h). */
static const char M7_TEMPLATE[] =
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ '<<SYS>>\\n' + "
    "message['content'][0]['text'] + '\\n<</SYS>>\\n\\n' }}{% elif message['role'] == 'user' "
    "%}{{ '[INST] ' }}{# Render all images first #}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}{# Render all text "
    "next #}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ "
    "content['text'] }}{% endfor %}{{' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' "
    "+ message['content'][0]['text'] + '</s> '}}{% else %}{{ raise_exception('Only user and "
    "assistant roles are supported!') }}{% endif %}{% endfor %}";

/* llava-hf/llava-1.5-7b-hf chat_template.json (sources: presets.h). */
static const char L15_TEMPLATE[] =
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ "
    "message['role'].upper() + ': '}}{% endif %}{# Render all images first #}{% for content in "
    "message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor "
    "%}{# Render all text next #}{% if message['role'] != 'assistant' %}{% for content in "
    "message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% "
    "endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', "
    "'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif "
    "%}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}";

/* ---- SmolVLM (sources: presets.h) ---- */

static const char SMOL_SV1_256[] =
    "{\"architectures\": [\"Idefics3ForConditionalGeneration\"], \"image_token_id\": "
    "49190, \"model_type\": \"idefics3\", \"scale_factor\": 4, \"text_config\": "
    "{\"_name_or_path\": \"HuggingFaceTB/SmolLM2-135M-Instruct\", \"architectures\": "
    "[\"VLlama3ForCausalLM\"], \"bos_token_id\": 1, \"eos_token_id\": 2, \"head_dim\": "
    "64, \"hidden_size\": 576, \"intermediate_size\": 1536, \"max_position_embeddings\": "
    "8192, \"model_type\": \"llama\", \"num_attention_heads\": 9, \"num_hidden_layers\": "
    "30, \"num_key_value_heads\": 3, \"pad_token_id\": 2, \"rms_norm_eps\": "
    "1e-05, \"rope_theta\": 100000, \"tie_word_embeddings\": false, \"torch_dtype\": "
    "\"bfloat16\", \"use_cache\": true, \"vocab_size\": 49280}, \"tie_word_embeddings\": "
    "false, \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.46.0\", "
    "\"use_cache\": true, \"vision_config\": {\"hidden_size\": 768, \"image_size\": "
    "512, \"intermediate_size\": 3072, \"model_type\": \"idefics3_vision\", "
    "\"num_attention_heads\": 12, \"num_hidden_layers\": 12, \"patch_size\": "
    "16}, \"vocab_size\": 49280}";
static const char SMOL_SV1_500[] =
    "{\"architectures\": [\"Idefics3ForConditionalGeneration\"], \"image_token_id\": "
    "49190, \"model_type\": \"idefics3\", \"scale_factor\": 4, \"text_config\": "
    "{\"_name_or_path\": \"HuggingFaceTB/SmolLM2-360M-Instruct\", \"architectures\": "
    "[\"VLlama3ForCausalLM\"], \"bos_token_id\": 1, \"eos_token_id\": 2, \"head_dim\": "
    "64, \"hidden_size\": 960, \"intermediate_size\": 2560, \"max_position_embeddings\": "
    "8192, \"model_type\": \"llama\", \"num_attention_heads\": 15, \"num_hidden_layers\": "
    "32, \"num_key_value_heads\": 5, \"pad_token_id\": 2, \"rms_norm_eps\": "
    "1e-05, \"rope_theta\": 100000, \"tie_word_embeddings\": false, \"torch_dtype\": "
    "\"bfloat16\", \"use_cache\": true, \"vocab_size\": 49280}, \"tie_word_embeddings\": "
    "false, \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.46.0\", "
    "\"use_cache\": true, \"vision_config\": {\"hidden_size\": 768, \"image_size\": "
    "512, \"intermediate_size\": 3072, \"model_type\": \"idefics3_vision\", "
    "\"num_attention_heads\": 12, \"num_hidden_layers\": 12, \"patch_size\": "
    "16}, \"vocab_size\": 49280}";
static const char SMOL_SV1_2B[] =
    "{\"architectures\": [\"Idefics3ForConditionalGeneration\"], \"image_token_id\": "
    "49153, \"model_type\": \"idefics3\", \"scale_factor\": 3, \"text_config\": "
    "{\"_name_or_path\": \"HuggingFaceTB/SmolLM2-1.7B-Instruct\", \"architectures\": "
    "[\"VLlama3ForCausalLM\"], \"bos_token_id\": 1, \"eos_token_id\": 2, \"head_dim\": "
    "64, \"hidden_size\": 2048, \"intermediate_size\": 8192, \"max_position_embeddings\": "
    "16384, \"model_type\": \"llama\", \"num_attention_heads\": 32, \"num_hidden_layers\": "
    "24, \"num_key_value_heads\": 32, \"pad_token_id\": 2, \"rms_norm_eps\": "
    "1e-05, \"rope_theta\": 273768.0, \"tie_word_embeddings\": false, \"torch_dtype\": "
    "\"bfloat16\", \"use_cache\": true, \"vocab_size\": 49155}, \"tie_word_embeddings\": "
    "false, \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.46.0\", "
    "\"use_cache\": true, \"vision_config\": {\"hidden_size\": 1152, \"image_size\": "
    "384, \"intermediate_size\": 4304, \"max_image_size\": {\"longest_edge\": "
    "384}, \"model_type\": \"idefics3_vision\", \"num_attention_heads\": 16, "
    "\"num_hidden_layers\": 27, \"patch_size\": 14, \"size\": {\"longest_edge\": "
    "1920}}, \"vocab_size\": 49155}";
static const char SMOL_SV2_256[] =
    "{\"architectures\": [\"SmolVLMForConditionalGeneration\"], \"image_token_id\": "
    "49190, \"model_type\": \"smolvlm\", \"scale_factor\": 4, \"text_config\": "
    "{\"_name_or_path\": \"HuggingFaceTB/SmolLM2-135M-Instruct\", \"architectures\": "
    "[\"VLlama3ForCausalLM\"], \"bos_token_id\": 1, \"eos_token_id\": 2, \"head_dim\": "
    "64, \"hidden_size\": 576, \"intermediate_size\": 1536, \"max_position_embeddings\": "
    "8192, \"model_type\": \"llama\", \"num_attention_heads\": 9, \"num_hidden_layers\": "
    "30, \"num_key_value_heads\": 3, \"pad_token_id\": 2, \"rms_norm_eps\": "
    "1e-05, \"rope_theta\": 100000, \"tie_word_embeddings\": false, \"torch_dtype\": "
    "\"bfloat16\", \"use_cache\": true, \"vocab_size\": 49280}, \"tie_word_embeddings\": "
    "false, \"torch_dtype\": \"float32\", \"transformers_version\": \"4.50.0.dev0\", "
    "\"use_cache\": true, \"vision_config\": {\"hidden_size\": 768, \"image_size\": "
    "512, \"intermediate_size\": 3072, \"model_type\": \"smolvlm_vision\", \"num_attention_hea"
    "ds\": 12, \"num_hidden_layers\": 12, \"patch_size\": 16}, \"vocab_size\": "
    "49280}";
static const char SMOL_SV2_500[] =
    "{\"architectures\": [\"SmolVLMForConditionalGeneration\"], \"image_token_id\": "
    "49190, \"model_type\": \"smolvlm\", \"scale_factor\": 4, \"text_config\": "
    "{\"_name_or_path\": \"HuggingFaceTB/SmolLM2-360M-Instruct\", \"architectures\": "
    "[\"VLlama3ForCausalLM\"], \"bos_token_id\": 1, \"eos_token_id\": 2, \"head_dim\": "
    "64, \"hidden_size\": 960, \"intermediate_size\": 2560, \"max_position_embeddings\": "
    "8192, \"model_type\": \"llama\", \"num_attention_heads\": 15, \"num_hidden_layers\": "
    "32, \"num_key_value_heads\": 5, \"pad_token_id\": 2, \"rms_norm_eps\": "
    "1e-05, \"rope_theta\": 100000, \"tie_word_embeddings\": false, \"torch_dtype\": "
    "\"bfloat16\", \"use_cache\": true, \"vocab_size\": 49280}, \"tie_word_embeddings\": "
    "false, \"torch_dtype\": \"float32\", \"transformers_version\": \"4.50.0.dev0\", "
    "\"use_cache\": true, \"vision_config\": {\"hidden_size\": 768, \"image_size\": "
    "512, \"model_type\": \"smolvlm_vision\", \"num_attention_heads\": 12, \"patch_size\": "
    "16}, \"vocab_size\": 49280}";
static const char SMOL_SV2_2B[] =
    "{\"architectures\": [\"SmolVLMForConditionalGeneration\"], \"image_token_id\": "
    "49190, \"model_type\": \"smolvlm\", \"scale_factor\": 3, \"text_config\": "
    "{\"_name_or_path\": \"HuggingFaceTB/SmolLM2-1.7B-Instruct\", \"architectures\": "
    "[\"VLlama3ForCausalLM\"], \"bos_token_id\": 1, \"eos_token_id\": 2, \"head_dim\": "
    "64, \"hidden_size\": 2048, \"intermediate_size\": 8192, \"max_position_embeddings\": "
    "16384, \"model_type\": \"llama\", \"num_hidden_layers\": 24, \"num_key_value_heads\": "
    "32, \"pad_token_id\": 2, \"rms_norm_eps\": 1e-05, \"rope_theta\": 273768.0, "
    "\"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", \"use_cache\": "
    "true, \"vocab_size\": 49280}, \"tie_word_embeddings\": false, \"torch_dtype\": "
    "\"float32\", \"transformers_version\": \"4.50.0.dev0\", \"use_cache\": "
    "true, \"vision_config\": {\"image_size\": 384, \"intermediate_size\": 4304, "
    "\"model_type\": \"smolvlm_vision\", \"num_hidden_layers\": 27, \"patch_size\": "
    "14}, \"vocab_size\": 49280}";
static const char SMOL_TINY[] =
    "{\"architectures\": [\"SmolVLMForConditionalGeneration\"], \"image_token_id\": "
    "49190, \"model_type\": \"smolvlm\", \"scale_factor\": 2, \"text_config\": "
    "{\"architectures\": [\"VLlama3ForCausalLM\"], \"bos_token_id\": 1, \"eos_token_id\": "
    "2, \"head_dim\": 64, \"hidden_size\": 256, \"intermediate_size\": 512, "
    "\"max_position_embeddings\": 8192, \"model_type\": \"llama\", \"num_attention_heads\": "
    "4, \"num_hidden_layers\": 2, \"num_key_value_heads\": 2, \"pad_token_id\": "
    "2, \"rms_norm_eps\": 1e-05, \"rope_theta\": 100000, \"tie_word_embeddings\": "
    "false, \"vocab_size\": 49280}, \"tie_word_embeddings\": false, \"torch_dtype\": "
    "\"float32\", \"transformers_version\": \"4.50.0.dev0\", \"use_cache\": "
    "true, \"vision_config\": {\"hidden_size\": 64, \"image_size\": 64, \"intermediate_size\":"
    " 128, \"layer_norm_eps\": 1e-06, \"model_type\": \"smolvlm_vision\", \"num_attention_head"
    "s\": 4, \"num_hidden_layers\": 2, \"patch_size\": 16}, \"vocab_size\": "
    "49280}";
static const char SMOL_PRE_V1[] =
    "{\"do_convert_rgb\": true, \"do_image_splitting\": true, \"do_normalize\": "
    "true, \"do_pad\": true, \"do_rescale\": true, \"do_resize\": true, \"image_mean\": "
    "[0.5, 0.5, 0.5], \"image_processor_type\": \"Idefics3ImageProcessor\", "
    "\"image_std\": [0.5, 0.5, 0.5], \"max_image_size\": {\"longest_edge\": "
    "512}, \"processor_class\": \"Idefics3Processor\", \"resample\": 1, \"rescale_factor\": "
    "0.00392156862745098, \"size\": {\"longest_edge\": 2048}}";
static const char SMOL_PRE_V1_2B[] =
    "{\"do_convert_rgb\": true, \"do_image_splitting\": true, \"do_normalize\": "
    "true, \"do_pad\": true, \"do_rescale\": true, \"do_resize\": true, \"image_mean\": "
    "[0.5, 0.5, 0.5], \"image_processor_type\": \"Idefics3ImageProcessor\", "
    "\"image_std\": [0.5, 0.5, 0.5], \"max_image_size\": {\"longest_edge\": "
    "384}, \"processor_class\": \"Idefics3Processor\", \"resample\": 1, \"rescale_factor\": "
    "0.00392156862745098, \"size\": {\"longest_edge\": 1536}}";
static const char SMOL_PRE_V2[] =
    "{\"do_convert_rgb\": true, \"do_image_splitting\": true, \"do_normalize\": "
    "true, \"do_pad\": true, \"do_rescale\": true, \"do_resize\": true, \"image_mean\": "
    "[0.5, 0.5, 0.5], \"image_processor_type\": \"SmolVLMImageProcessor\", \"image_std\": "
    "[0.5, 0.5, 0.5], \"max_image_size\": {\"longest_edge\": 512}, \"processor_class\": "
    "\"SmolVLMProcessor\", \"resample\": 1, \"rescale_factor\": 0.00392156862745098, "
    "\"size\": {\"longest_edge\": 2048}, \"video_sampling\": {\"fps\": 1, \"max_frames\": "
    "64, \"video_size\": {\"longest_edge\": 512}}}";
static const char SMOL_PRE_V2_2B[] =
    "{\"do_convert_rgb\": true, \"do_image_splitting\": true, \"do_normalize\": "
    "true, \"do_pad\": true, \"do_rescale\": true, \"do_resize\": true, \"image_mean\": "
    "[0.5, 0.5, 0.5], \"image_processor_type\": \"SmolVLMImageProcessor\", \"image_std\": "
    "[0.5, 0.5, 0.5], \"max_image_size\": {\"longest_edge\": 384}, \"processor_class\": "
    "\"SmolVLMProcessor\", \"resample\": 1, \"rescale_factor\": 0.00392156862745098, "
    "\"size\": {\"longest_edge\": 1536}, \"video_sampling\": {\"fps\": 1, \"max_frames\": "
    "64, \"video_size\": {\"longest_edge\": 384}}}";
static const char SMOL_PRE_TINY[] =
    "{\"do_convert_rgb\": true, \"do_image_splitting\": true, \"do_normalize\": "
    "true, \"do_pad\": true, \"do_rescale\": true, \"do_resize\": true, \"image_mean\": "
    "[0.5, 0.5, 0.5], \"image_processor_type\": \"SmolVLMImageProcessor\", \"image_std\": "
    "[0.5, 0.5, 0.5], \"max_image_size\": {\"longest_edge\": 64}, \"processor_class\": "
    "\"SmolVLMProcessor\", \"resample\": 1, \"rescale_factor\": 0.00392156862745098, "
    "\"size\": {\"longest_edge\": 256}, \"video_sampling\": {\"fps\": 1, \"max_frames\": "
    "64, \"video_size\": {\"longest_edge\": 64}}}";
static const char SMOL_PROC_64[] = "{\"image_seq_len\": 64}";
static const char SMOL_PROC_81[] = "{\"image_seq_len\": 81}";
static const char SMOL_PROC_TINY[] = "{\"image_seq_len\": 4}";
static const char SMOL_GEN[] =
    "{\"_from_model_config\": true, \"bos_token_id\": 0, \"eos_token_id\": 49279, "
    "\"pad_token_id\": 2, \"transformers_version\": \"4.50.0.dev0\"}";
static const char SMOL_GEN_2B[] =
    "{\"_from_model_config\": true, \"bos_token_id\": 0, \"eos_token_id\": 49154, "
    "\"pad_token_id\": 2, \"transformers_version\": \"4.50.0.dev0\"}";

/* The chat template of every SmolVLM / SmolVLM2 Instruct checkpoint
 * (chat_template.json; shared/spec/smolvlm.md §4.1), the Jinja text byte for
 * byte: the "\n" after <end_of_utterance> is a real newline of the template. */
static const char SMOL_TEMPLATE[] =
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if "
    "message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line "
    "in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}{% elif line['type'] "
    "== 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if "
    "add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";

/* tokenizer_config.json of the random SmolVLM models (special tokens of
 * spec §1.2; add_bos_token false is GPT2TokenizerFast's default written out,
 * since the engine's default for a file without the key is LlamaTokenizer's). */
static const char SMOL_TOKCFG[] =
    "{\"add_bos_token\": false, \"add_eos_token\": false, \"add_prefix_space\": false, "
    "\"bos_token\": \"<|im_start|>\", \"clean_up_tokenization_spaces\": false, "
    "\"eos_token\": \"<end_of_utterance>\", \"model_max_length\": 8192, \"pad_token\": "
    "\"<|im_end|>\", \"tokenizer_class\": \"GPT2Tokenizer\", \"unk_token\": "
    "\"<|endoftext|>\", \"vocab_size\": 49152}";

static const qs_preset PRESETS[] = {
    {"llava-v1.6-mistral-7b", M7_CONFIG, M7_PREPROC, M7_TEMPLATE, NULL, NULL, NULL, 0},
    {"llava-1.5-7b", L15_CONFIG, L15_PREPROC, L15_TEMPLATE, NULL, NULL, NULL, 0},
    {"llava-v1.6-vicuna-13b", V13_CONFIG, V13_PREPROC, NULL, NULL, NULL, NULL, 0},
    {"llava-v1.6-34b", Y34_CONFIG, V13_PREPROC, NULL, NULL, NULL, NULL, 0},
    {"tiny-llava-next", TINY_CONFIG, M7_PREPROC, M7_TEMPLATE, NULL, NULL, NULL, 0},
    {"smolvlm-256m", SMOL_SV1_256, SMOL_PRE_V1, SMOL_TEMPLATE, SMOL_PROC_64, SMOL_GEN, SMOL_TOKCFG,
     128},
    {"smolvlm-500m", SMOL_SV1_500, SMOL_PRE_V1, SMOL_TEMPLATE, SMOL_PROC_64, SMOL_GEN, SMOL_TOKCFG,
     128},
    {"smolvlm-2.2b", SMOL_SV1_2B, SMOL_PRE_V1_2B, SMOL_TEMPLATE, SMOL_PROC_81, SMOL_GEN_2B,
     SMOL_TOKCFG, 3},
    {"smolvlm2-256m", SMOL_SV2_256, SMOL_PRE_V2, SMOL_TEMPLATE, SMOL_PROC_64, SMOL_GEN, SMOL_TOKCFG,
     128},
    {"smolvlm2-500m", SMOL_SV2_500, SMOL_PRE_V2, SMOL_TEMPLATE, SMOL_PROC_64, SMOL_GEN, SMOL_TOKCFG,
     128},
    {"smolvlm2-2.2b", SMOL_SV2_2B, SMOL_PRE_V2_2B, SMOL_TEMPLATE, SMOL_PROC_81, SMOL_GEN,
     SMOL_TOKCFG, 128},
    {"tiny-smolvlm", SMOL_TINY, SMOL_PRE_TINY, SMOL_TEMPLATE, SMOL_PROC_TINY, SMOL_GEN, SMOL_TOKCFG,
     128},
};

const qs_preset *qs_preset_find(const char *name) {
    for (size_t i = 0; i < (sizeof(PRESETS) / sizeof(PRESETS[0])); i++)
        if (strcmp(PRESETS[i].name, name) == 0) return &PRESETS[i];
    return NULL;
}

size_t qs_preset_count(void) {
    return (sizeof(PRESETS) / sizeof(PRESETS[0]));
}

const qs_preset *qs_preset_at(size_t i) {
    return i < (sizeof(PRESETS) / sizeof(PRESETS[0])) ? &PRESETS[i] : NULL;
}
