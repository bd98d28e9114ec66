"""The Qwen-Image families: Qwen-Image (`generate`, text-to-image), Qwen-Image-Layered
(`decompose`) and Qwen-Image-Edit-Plus (`edit-layer`), each with a Qwen2.5-VL text encoder.

Their code (`runner`): `t2i.py` (the arithmetic of diffusers' `QwenImagePipeline` as stage
functions, with true CFG as a guider), `layered.py` and `edit.py` (diffusers' own pipelines run as
they are), and what they share in `common.py`. The defaults are the model cards' (QwenLM/Qwen-Image,
QwenLM/Qwen-Image-Layered): true CFG 4.0 with the negative prompt " " for all; 50 steps at
1328x1328 for Qwen-Image; 50 steps, 640 px (the recommended bucket) and CFG normalisation for
Layered; 40 steps for Edit-2509/2511. `cpu_offload` applies to the layer models on CUDA only,
where the settings leave it at its default (`workflows.fill_layer_defaults`): the bf16
transformer alone is ~41 GB. Qwen-Image offers one of the text-to-image features beyond
generating, the step cache (no img2img, SLG, DyPE, vision conditioning, rewriting, training or
LoRAs yet).
"""

from __future__ import annotations

from typing import Any

from llmdit_cli.families import Family, register

QWEN_IMAGE_HUB = "Qwen/Qwen-Image"
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

# Text-to-image (`generate`): the model card's 50 steps, true CFG 4.0 with the negative prompt " "
# and its 1:1 size 1328x1328; the pipeline encodes with the last hidden state of Qwen2.5-VL and
# this system prompt in its template (which `ChatFormat` then equals).
SYSTEM_PROMPT = (
    "Describe the image by detailing the color, shape, size, texture, quantity, text, spatial relationships of "
    "the objects and background:"
)
_T2I = dict(
    width=1328,
    height=1328,
    steps=50,
    guidance_scale=4.0,
    negative_prompt=" ",
    hidden_layer=-1,
    system_prompt=SYSTEM_PROMPT,
)
T2I_VARIANTS: dict[str, dict[str, Any]] = {"qwen-image": dict(_T2I), "qwen-image-2512": dict(_T2I)}

TEXT_TO_IMAGE = register(
    Family(
        name="qwen-image",
        pipelines=("QwenImagePipeline",),
        variants=T2I_VARIANTS,
        base_variant="qwen-image",
        runner="llmdit_cli.families.qwenimage.t2i",
        hub_variants={QWEN_IMAGE_HUB: "qwen-image", "Qwen/Qwen-Image-2512": "qwen-image-2512"},
        features=frozenset({"step_cache"}),
    )
)
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
