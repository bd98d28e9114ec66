"""Generated from the CLI's options by scripts/gen_setting_facts.py; do not edit. Per flag name:
the setting's help text and the help panel it is listed under (`PANELS`: the order `llmdit
generate --help` shows them, then the layer commands')."""

PANELS = [
    "Prompt formatting",
    "Output",
    "Generation",
    "Model",
    "Speed and memory",
    "Vision conditioning (Qwen3-VL)",
    "ControlNet and inpainting",
    "Skip-layer guidance",
    "DyPE (sizes beyond the training resolution)",
    "Remote encoder (an `llmdit serve`)",
    "Config",
    "Layers (decompose, edit-layer)",
]

HELP = {
    "assistant_content": {"help": "Text that opens the assistant turn.", "panel": "Prompt formatting"},
    "attention_backend": {
        "help": "auto, native (PyTorch math), sdpa (torch SDPA), flash, flash_3, "
        "sage, xformers (diffusers' attention dispatch). auto takes the "
        "first of flash_3, flash, sage, xformers that runs right here (each "
        "tried once on a small input, compiled with --compile; said once), "
        "else sdpa.",
        "panel": "Speed and memory",
    },
    "batch_size": {
        "help": "Images per transformer forward (default 1); the same pixels as one at a "
        "time. Faster where the GPU has room: activation memory grows N times (2N "
        "with CFG).",
        "panel": "Speed and memory",
    },
    "cache": {
        "help": "Reuse prompt embeddings from the on-disk cache and store new ones (default on; `llmdit cache info`).",
        "panel": "Prompt formatting",
    },
    "cache_dir": {
        "help": "Embedding cache folder (default: ~/.cache/llmdit; env LLMDIT_CACHE_DIR).",
        "panel": "Prompt formatting",
    },
    "caption_fill": {
        "help": "How --caption-length fills a shorter prompt: content_only, "
        "pad_end_zero, pad_end_mean, pad_start_zero, pad_middle_zero, pad_both "
        "or filler_repeat (default pad_end_zero).",
        "panel": "Prompt formatting",
    },
    "caption_length": {
        "help": "Bring every prompt embedding to exactly N tokens (see --caption-fill).",
        "panel": "Prompt formatting",
    },
    "cfg_normalization": {"help": "Clamp |guided| to this multiple of |conditional|; 0 = off.", "panel": "Generation"},
    "cfg_truncation": {
        "help": "Turn CFG off once progress (0..1) passes this value; 1 = never.",
        "panel": "Generation",
    },
    "compile": {
        "help": "torch.compile the transformer's repeated blocks (first image is slower).",
        "panel": "Speed and memory",
    },
    "control_image": {
        "help": "The control image (edges, depth, pose ...) for --controlnet; resized "
        "to the output size. Its SHA-256 is recorded and --from-png checks it.",
        "panel": "ControlNet and inpainting",
    },
    "control_model": {
        "help": "A Z-Image ControlNet: Hub id, folder, single .safetensors file, or "
        "'demo' (a tiny random one for the demo model). Steers by "
        "--control-image (docs/control.md).",
        "panel": "ControlNet and inpainting",
    },
    "control_scale": {
        "help": "How strongly the ControlNet steers, 0 to 4 (default 0.75).",
        "panel": "ControlNet and inpainting",
    },
    "cpu_offload": {
        "help": "none; model (each component moves to the GPU while it runs); sequential "
        "(layer by layer: least memory, slowest). Needs a CUDA GPU. Default: none "
        "(model for decompose and edit-layer on CUDA).",
        "panel": "Speed and memory",
    },
    "device": {"help": "auto, cpu, cuda, cuda:1, mps ...", "panel": "Model"},
    "dit_device": {"help": "Device for the transformer (default: --device).", "panel": "Model"},
    "dtype": {
        "help": "auto, float32, bfloat16 or float16; auto is bfloat16 on GPU, float32 on CPU (default auto).",
        "panel": "Model",
    },
    "dype": {
        "help": "Dynamic position extrapolation for sizes above the training resolution (docs/dype.md).",
        "panel": "DyPE (sizes beyond the training resolution)",
    },
    "dype_base_resolution": {
        "help": "Training resolution in pixels (model default: 1024 for Z-Image).",
        "panel": "DyPE (sizes beyond the training resolution)",
    },
    "dype_exponent": {
        "help": "lambda_t: how fast the extrapolation fades as sigma falls (default 2.0).",
        "panel": "DyPE (sizes beyond the training resolution)",
    },
    "dype_method": {
        "help": "yarn, ntk or vision_yarn: vision_yarn is isotropic (the DyPE paper's "
        "bands), yarn per axis. Default: the model family's (Z-Image vision_yarn; "
        "demo yarn, measured).",
        "panel": "DyPE (sizes beyond the training resolution)",
    },
    "dype_scale": {
        "help": "lambda_s: strength of the sigma modulation (default 2.0).",
        "panel": "DyPE (sizes beyond the training resolution)",
    },
    "dype_start_sigma": {
        "help": "Sigma below which the fading starts (default 1.0 = from the first step).",
        "panel": "DyPE (sizes beyond the training resolution)",
    },
    "enable_thinking": {
        "help": "Qwen3 thinking switch; --no-enable-thinking adds the empty think "
        "block. Default on (= stock diffusers).",
        "panel": "Prompt formatting",
    },
    "guidance_scale": {
        "help": "Guidance scale, as the model family runs it: Z-Image CFG (0 is off; "
        "Turbo default 0), Qwen-Image true CFG (1 or less is off; default 4).",
        "panel": "Generation",
    },
    "height": {"help": "Height in pixels, a multiple of 16 (model default).", "panel": "Generation"},
    "hidden_layer": {
        "help": "Text-encoder hidden state to use (default: the model family's, as its "
        "stock pipeline: -2 for Z-Image).",
        "panel": "Prompt formatting",
    },
    "layered_caption_language": {
        "help": "Language of the automatic caption: en (default) or zh.",
        "panel": "Layers (decompose, edit-layer)",
    },
    "layered_cfg_normalize": {
        "help": "Rescale the guided prediction to the norm of the conditional "
        "one (default on, as the model card runs).",
        "panel": "Layers (decompose, edit-layer)",
    },
    "layered_edit_model": {
        "help": "Hub id or local folder of a Qwen-Image-Edit-Plus model "
        "(Qwen/Qwen-Image-Edit-2509, default, or -2511).",
        "panel": "Layers (decompose, edit-layer)",
    },
    "layered_layers": {
        "help": "Number of layers, 2 to 10 (default 4), or auto: one per colour region of the image, 2 to 8.",
        "panel": "Layers (decompose, edit-layer)",
    },
    "layered_model": {
        "help": "Hub id or local folder of a Qwen-Image-Layered model. Default: Qwen/Qwen-Image-Layered.",
        "panel": "Layers (decompose, edit-layer)",
    },
    "layered_negative_prompt": {
        "help": "Negative prompt for true CFG (default ' ').",
        "panel": "Layers (decompose, edit-layer)",
    },
    "layered_resolution": {
        "help": "Working size bucket: 640 (recommended, default) or 1024 pixels a side, at the image's aspect ratio.",
        "panel": "Layers (decompose, edit-layer)",
    },
    "layered_steps": {
        "help": "Denoising steps (default: 50 decompose, 40 edit-layer).",
        "panel": "Layers (decompose, edit-layer)",
    },
    "layered_true_cfg_scale": {
        "help": "True classifier-free guidance scale (default 4.0); 1 or less runs without the negative prompt.",
        "panel": "Layers (decompose, edit-layer)",
    },
    "long_prompt_mode": {
        "help": "Prompts longer than the model takes (1504 tokens on Z-Image): "
        "error, truncate, interpolate, pool or attention_pool (default "
        "truncate, with a hint).",
        "panel": "Prompt formatting",
    },
    "loras": {
        "help": "LoRA file as PATH[:SCALE]; repeat for several. diffusers/PEFT and Kohya/ComfyUI key styles.",
        "panel": "Model",
    },
    "mask": {
        "help": "Inpaint: white repaints, black keeps the input. Resized to the image (nearest, "
        "a hint says so). With --controlnet the ControlNet repaints from noise "
        "(--strength is not used).",
        "panel": "ControlNet and inpainting",
    },
    "max_length": {
        "help": "Token limit of the formatted prompt, template included (default 512): the "
        "tokenizer cuts what is longer, with a hint (refused with "
        "--long-prompt-mode error). The transformer's own caption limit (1504 "
        "tokens on Z-Image) applies after it.",
        "panel": "Prompt formatting",
    },
    "model": {
        "help": "Hub id, local diffusers folder, or 'demo' (tiny offline model). Default: Tongyi-MAI/Z-Image-Turbo.",
        "panel": "Model",
    },
    "negative_prompt": {
        "help": "Negative prompt, used when guidance is on (default: the model family's; none for Z-Image).",
        "panel": "Prompt formatting",
    },
    "quantize": {
        "help": "Weights of the text encoder and transformer: 8bit or 4bit with bitsandbytes "
        "(CUDA GPU); fp8: float8 weights and matmuls in their blocks (GPU of compute "
        "capability 8.9+, or CPU). Default none.",
        "panel": "Speed and memory",
    },
    "shift": {"help": "Scheduler shift (model default: 3.0).", "panel": "Generation"},
    "slg": {
        "help": "Skip-layer guidance with the model family's settings (Z-Image: scale 2.5, layers "
        "7-12, 5%-50% of the steps).",
        "panel": "Skip-layer guidance",
    },
    "slg_layers": {
        "help": "Transformer blocks the skip pass leaves out, e.g. 7,8,9 or 7-12 (indices into transformer.layers).",
        "panel": "Skip-layer guidance",
    },
    "slg_scale": {
        "help": "SLG strength; 0 = off, > 0 turns SLG on. v += scale * (v_cond - v_skip).",
        "panel": "Skip-layer guidance",
    },
    "slg_start": {"help": "SLG runs from this fraction of the steps (0..1) ...", "panel": "Skip-layer guidance"},
    "slg_stop": {"help": "... until this fraction (exclusive).", "panel": "Skip-layer guidance"},
    "step_cache": {
        "help": "none or first-block. first-block: a step whose first block changes little "
        "reuses what the other blocks added last time (faster, a slightly "
        "different image). Default none.",
        "panel": "Speed and memory",
    },
    "step_cache_threshold": {
        "help": "With --step-cache: the first block's relative change under "
        "which a step reuses the cache (default 0.12); higher is faster "
        "and further from uncached.",
        "panel": "Speed and memory",
    },
    "steps": {"help": "Denoising steps (model default: 8 for Z-Image-Turbo).", "panel": "Generation"},
    "strength": {"help": "How much to change the input, 0..1 (default 0.6).", "panel": "Generation"},
    "system_prompt": {"help": "System turn put before the prompt.", "panel": "Prompt formatting"},
    "template": {
        "help": "Prompt template by name (`llmdit templates list`): its system prompt and "
        "think-block settings; the flags above override them.",
        "panel": "Prompt formatting",
    },
    "templates_dir": {
        "help": "A folder of your own templates (*.md); repeat. They override built-ins "
        "of the same name (env LLMDIT_TEMPLATES_DIR).",
        "panel": "Prompt formatting",
    },
    "text_encoder_device": {"help": "Device for the text encoder (default: --device).", "panel": "Model"},
    "thinking_content": {"help": "Text of a <think> block in the assistant turn.", "panel": "Prompt formatting"},
    "transformer_file": {
        "help": "Single-file transformer (.safetensors, or .gguf quantized) to use instead of the model folder's.",
        "panel": "Speed and memory",
    },
    "vae_device": {"help": "Device for the VAE (default: --device).", "panel": "Model"},
    "vae_tile_overlap": {
        "help": "With --vae-tiling: overlap of neighbouring tiles, a fraction 0..0.5 of a tile (default 0.25).",
        "panel": "Speed and memory",
    },
    "vae_tile_size": {
        "help": "With --vae-tiling: tile size in pixels (default: the VAE's own, at "
        "least 256; smaller saves memory and shows more seams).",
        "panel": "Speed and memory",
    },
    "vae_tiling": {
        "help": "Decode (and encode) in overlapping tiles: less memory for large images.",
        "panel": "Speed and memory",
    },
    "vl_alpha": {
        "help": "How much of the image goes in: 0 (none: the text-only embeddings) to 1. Default 0.3.",
        "panel": "Vision conditioning (Qwen3-VL)",
    },
    "vl_blend_mode": {
        "help": "linear, style_only (only the mean moves), graduated (later tokens more), attention_weighted, adain.",
        "panel": "Vision conditioning (Qwen3-VL)",
    },
    "vl_device": {
        "help": "Device for Qwen3-VL: cpu, cuda:1 ... (default: the text encoder's).",
        "panel": "Vision conditioning (Qwen3-VL)",
    },
    "vl_hidden_layer": {
        "help": "Which of Qwen3-VL's hidden states to take (default -2).",
        "panel": "Vision conditioning (Qwen3-VL)",
    },
    "vl_image": {
        "help": "Image whose Qwen3-VL hidden states are blended into the prompt embeddings.",
        "panel": "Vision conditioning (Qwen3-VL)",
    },
    "vl_model": {
        "help": "Qwen3-VL Hub id or folder ('demo': a tiny random one). Default: the model "
        "family's (Z-Image: Qwen/Qwen3-VL-4B-Instruct; demo: demo).",
        "panel": "Vision conditioning (Qwen3-VL)",
    },
    "vl_tokens": {
        "help": "Which positions of Qwen3-VL's sequence: all, image or text (text: the prompt's; default all).",
        "panel": "Vision conditioning (Qwen3-VL)",
    },
    "width": {"help": "Width in pixels, a multiple of 16 (model default).", "panel": "Generation"},
}
