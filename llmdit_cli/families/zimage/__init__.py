"""The Z-Image family: Tongyi-MAI/Z-Image-Turbo, other Z-Image folders, and the shipped demo.

The package holds everything Z-Image-specific: this module (the family record and its variants'
defaults, imported to register), and its code, imported only when a model runs: `runner.py` (the
diffusers classes, `limits`, the stage functions), `encode.py` (the Qwen3 prompt encoder),
`denoise.py` (the flow-matching loop with CFG/SLG), `rope.py` (DyPE in its RoPE) and `vae.py` (the
Flux-style VAE normalisation).
"""

from __future__ import annotations

from typing import Any

from llmdit_cli.families import FEATURES, Family, register

# One source of truth for the family's defaults. `shift: None` keeps the model's own scheduler
# config. `slg_scale` applies once SLG is switched on (--slg); the SLG values are the ones that
# worked on Z-Image in the project this toolkit grew out of.
_SLG = dict(slg_scale=2.5, slg_layers=[7, 8, 9, 10, 11, 12], slg_start=0.05, slg_stop=0.5)
# Vision conditioning needs the Qwen3-VL whose language model matches the text encoder (Qwen3-4B:
# Qwen3-VL-4B, hidden size 2560); the demo's is the tiny random one shipped beside it.
_VL = dict(vl_model="Qwen/Qwen3-VL-4B-Instruct")
# ZImagePipeline's encoding: the second-to-last hidden state; no negative prompt unless given.
_STOCK = dict(hidden_layer=-2, negative_prompt="", rewriter_template="general-enhancer")
VARIANTS: dict[str, dict[str, Any]] = {
    "z-image-turbo": dict(
        width=1024,
        height=1024,
        steps=8,
        guidance_scale=0.0,
        shift=3.0,
        **_SLG,
        dype_base_resolution=1024,
        dype_method="vision_yarn",
        **_VL,
        **_STOCK,
    ),
    "z-image": dict(
        width=1024,
        height=1024,
        steps=8,
        guidance_scale=0.0,
        shift=None,
        **_SLG,
        dype_base_resolution=1024,
        dype_method="vision_yarn",
        **_VL,
        **_STOCK,
    ),
    # The trained demo (recipes/demo-shapes.toml) makes 32x32 images; 2 steps score best on it, so
    # its SLG window starts at the first step. It has 4 blocks.
    "demo": dict(
        width=32,
        height=32,
        steps=2,
        guidance_scale=0.0,
        shift=3.0,
        slg_scale=2.5,
        slg_layers=[1, 2],
        slg_start=0.0,
        slg_stop=0.5,
        dype_base_resolution=32,
        # Measured (benchmarks/eval_dype.py): at 2x its base only yarn stops the tiling on the demo,
        # whose 8-token base side leaves every frequency below ~1.3 turns (docs/dype.md).
        dype_method="yarn",
        vl_model="demo",
        **{**_STOCK, "rewriter_template": "demo-caption"},  # the demo's LM was trained on it
    ),
}

FAMILY = register(
    Family(
        name="z-image",
        pipelines=("ZImagePipeline", "ZImageImg2ImgPipeline"),
        variants=VARIANTS,
        base_variant="z-image",
        runner="llmdit_cli.families.zimage.runner",
        hub_variants={"Tongyi-MAI/Z-Image-Turbo": "z-image-turbo", "Tongyi-MAI/Z-Image": "z-image"},
        features=frozenset(FEATURES),
        lora_keys="llmdit_cli.families.zimage.lora",
    )
)
