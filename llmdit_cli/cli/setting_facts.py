"""Generated from config.py by scripts/gen_setting_facts.py; do not edit. Per flag name: the
setting's built-in default and its choices, for `--help` texts (`options.setting_option`)."""

FACTS = {
    "attention_backend": {
        "choices": ["auto", "native", "sdpa", "flash", "flash_3", "sage", "xformers"],
        "default": "auto",
    },
    "cache": {"default": True},
    "caption_fill": {
        "choices": [
            "content_only",
            "pad_end_zero",
            "pad_end_mean",
            "pad_start_zero",
            "pad_middle_zero",
            "filler_repeat",
        ],
        "default": "pad_end_zero",
    },
    "cfg_normalization": {"default": 0.0},
    "cfg_truncation": {"default": 1.0},
    "compile": {"default": False},
    "cpu_offload": {"choices": ["none", "model", "sequential"], "default": "none"},
    "device": {"default": "auto"},
    "dtype": {"choices": ["auto", "float32", "bfloat16", "float16"], "default": "auto"},
    "dype": {"default": False},
    "dype_exponent": {"default": 2.0},
    "dype_method": {"choices": ["yarn", "ntk", "vision_yarn"]},
    "dype_scale": {"default": 2.0},
    "dype_start_sigma": {"default": 1.0},
    "enable_thinking": {"default": True},
    "layered_caption_language": {"choices": ["en", "zh"], "default": "en"},
    "layered_edit_model": {"default": "Qwen/Qwen-Image-Edit-2509"},
    "layered_model": {"default": "Qwen/Qwen-Image-Layered"},
    "layered_negative_prompt": {"default": " "},
    "layered_resolution": {"choices": [640, 1024]},
    "long_prompt_mode": {
        "choices": ["error", "truncate", "interpolate", "pool", "attention_pool"],
        "default": "truncate",
    },
    "max_length": {"default": 512},
    "quantize": {"choices": ["none", "8bit", "4bit"], "default": "none"},
    "slg": {"default": False},
    "strength": {"default": 0.6},
    "vae_tiling": {"default": False},
    "vl_alpha": {"default": 0.3},
    "vl_blend_mode": {
        "choices": ["linear", "style_only", "graduated", "attention_weighted", "adain"],
        "default": "linear",
    },
    "vl_hidden_layer": {"default": -2},
    "vl_tokens": {"choices": ["all", "image", "text"], "default": "all"},
}
