"""The Qwen-Image families: Qwen-Image-Layered (`decompose`) and Qwen-Image-Edit-Plus (`edit-layer`).

Both run diffusers' own pipelines (`QwenImageLayeredPipeline`, `QwenImageEditPlusPipeline`) with
a Qwen2.5-VL text encoder; their code (`runner`) is `layered.py` and `edit.py` beside this
module, with what they share in `common.py`. The defaults are the model cards' (QwenLM/Qwen-Image-Layered and
QwenLM/Qwen-Image READMEs): true CFG 4.0 with the negative prompt " ", 50 steps, 640 px (the
recommended bucket) and CFG normalisation for Layered, 40 steps for Edit-2509/2511. `cpu_offload`
applies on CUDA only, where the settings leave it at its default (`workflows.fill_layer_defaults`):
the bf16 transformer alone is ~41 GB.
"""

from __future__ import annotations

from typing import Any

from llmdit_cli.families import Family, register

LAYERED_HUB = "Qwen/Qwen-Image-Layered"
EDIT_HUB = "Qwen/Qwen-Image-Edit-2509"

LAYERED_VARIANTS: dict[str, dict[str, Any]] = {
    "layered": dict(
        layered_steps=50,
        layered_true_cfg_scale=4.0,
        layered_cfg_normalize=True,
        layered_layers=4,
        layered_resolution=640,
        cpu_offload="model",
    ),
}
_EDIT = dict(layered_steps=40, layered_true_cfg_scale=4.0, cpu_offload="model")
EDIT_VARIANTS: dict[str, dict[str, Any]] = {"edit-2509": dict(_EDIT), "edit-2511": dict(_EDIT)}

LAYERED = register(
    Family(
        name="qwen-image-layered",
        pipelines=("QwenImageLayeredPipeline",),
        variants=LAYERED_VARIANTS,
        base_variant="layered",
        runner="llmdit_cli.families.qwenimage.layered",
        hub_variants={LAYERED_HUB: "layered"},
        task="layer decomposition",
        command="decompose",
    )
)
EDIT = register(
    Family(
        name="qwen-image-edit",
        pipelines=("QwenImageEditPlusPipeline",),
        variants=EDIT_VARIANTS,
        base_variant="edit-2509",
        runner="llmdit_cli.families.qwenimage.edit",
        hub_variants={EDIT_HUB: "edit-2509", "Qwen/Qwen-Image-Edit-2511": "edit-2511"},
        task="layer editing",
        command="edit-layer",
    )
)
