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

static const qs_preset PRESETS[] = {
    {"llava-v1.6-mistral-7b", M7_CONFIG, M7_PREPROC, M7_TEMPLATE},
    {"llava-1.5-7b", L15_CONFIG, L15_PREPROC, L15_TEMPLATE},
    {"llava-v1.6-vicuna-13b", V13_CONFIG, V13_PREPROC, NULL},
    {"tiny-llava-next", TINY_CONFIG, M7_PREPROC, M7_TEMPLATE},
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
