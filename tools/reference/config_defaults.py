#!/usr/bin/env python3
"""Dumps what transformers resolves for the configs our loader must read, so
tests/test_hf_config.c can check our defaults against the real classes.

Run on the GPU machine: python3 tools/reference/config_defaults.py OUT.json
Writes, for each case, the resolved text/vision/top-level values.
"""
import json, sys
import transformers
from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaNextConfig,
                          MistralConfig)

# config.json of llava-hf/llava-v1.6-mistral-7b-hf as published (keys the
# converter omitted stay omitted).
LLAVA_NEXT_MISTRAL = {
    "architectures": ["LlavaNextForConditionalGeneration"],
    "ignore_index": -100,
    "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
    "image_token_index": 32000,
    "model_type": "llava_next",
    "projector_hidden_act": "gelu",
    "text_config": {
        "_name_or_path": "mistralai/Mistral-7B-Instruct-v0.2",
        "architectures": ["MistralForCausalLM"],
        "intermediate_size": 14336,
        "max_position_embeddings": 32768,
        "model_type": "mistral",
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "torch_dtype": "bfloat16",
        "vocab_size": 32064,
    },
    "torch_dtype": "float16",
    "transformers_version": "4.39.0.dev0",
    "use_image_newline_parameter": True,
    "vision_config": {
        "hidden_size": 1024,
        "image_size": 336,
        "intermediate_size": 4096,
        "model_type": "clip_vision_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 24,
        "patch_size": 14,
        "projection_dim": 768,
        "vocab_size": 32000,
    },
    "vision_feature_layer": -2,
    "vision_feature_select_strategy": "default",
    "vocab_size": 32064,
}

KEYS_TEXT = ["model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
             "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act",
             "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_parameters",
             "rope_scaling", "sliding_window", "tie_word_embeddings", "attention_bias", "mlp_bias",
             "bos_token_id", "eos_token_id", "pad_token_id"]
KEYS_VISION = ["model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
               "num_attention_heads", "image_size", "patch_size", "num_channels",
               "projection_dim", "layer_norm_eps", "hidden_act"]
KEYS_TOP = ["model_type", "image_token_index", "image_token_id", "projector_hidden_act",
            "multimodal_projector_bias", "vision_feature_layer", "vision_feature_select_strategy",
            "image_grid_pinpoints", "use_image_newline_parameter", "image_seq_length",
            "tie_word_embeddings", "pad_token_id"]

def pick(cfg, keys):
    out = {}
    for k in keys:
        if hasattr(cfg, k):
            v = getattr(cfg, k)
            try:
                json.dumps(v)
            except TypeError:
                v = repr(v)
            out[k] = v
    return out

def dump(cfg):
    d = pick(cfg, KEYS_TOP)
    if hasattr(cfg, "text_config"):
        d["text_config"] = pick(cfg.text_config, KEYS_TEXT)
        d["vision_config"] = pick(cfg.vision_config, KEYS_VISION)
    return d

out = {"transformers_version": transformers.__version__, "cases": {}}
out["cases"]["MistralConfig()"] = pick(MistralConfig(), KEYS_TEXT)
out["cases"]["LlamaConfig()"] = pick(LlamaConfig(), KEYS_TEXT)
out["cases"]["CLIPVisionConfig()"] = pick(CLIPVisionConfig(), KEYS_VISION)
out["cases"]["LlavaNextConfig()"] = dump(LlavaNextConfig())
out["cases"]["LlavaConfig()"] = dump(LlavaConfig())
out["cases"]["llava-v1.6-mistral-7b-hf"] = dump(LlavaNextConfig(**json.loads(json.dumps(LLAVA_NEXT_MISTRAL))))
out["cases"]["llava_next text_config={}"] = dump(LlavaNextConfig(text_config={}, vision_config={}))

try:
    from transformers import LlavaNextImageProcessorPil as P
except Exception:
    from transformers import LlavaNextImageProcessor as P
try:
    p = P()
    out["cases"]["image_processor"] = {"class": type(p).__name__,
                                       **{k: (v if isinstance(v, (int, float, str, list, dict, bool, type(None))) else repr(v))
                                          for k, v in p.to_dict().items()}}
except Exception as e:
    out["cases"]["image_processor"] = {"error": repr(e)}

json.dump(out, open(sys.argv[1], "w"), indent=1, default=repr)
print(json.dumps(out["cases"]["llava-v1.6-mistral-7b-hf"], indent=None)[:1500])
