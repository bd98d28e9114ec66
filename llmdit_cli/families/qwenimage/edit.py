"""The code of the Qwen-Image-Edit-Plus family (`families/qwenimage/`): diffusers'
QwenImageEditPlusPipeline (Qwen-Image-Edit-2509 / -2511) run as it is on one RGB image."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llmdit_cli.families.qwenimage.common import check_loadable, limits, step_callback, transformer_class

__all__ = ["EditParams", "check_loadable", "edit", "limits", "pipeline_class", "transformer_class"]


def pipeline_class():
    from diffusers import QwenImageEditPlusPipeline

    return QwenImageEditPlusPipeline


@dataclass
class EditParams:
    instruction: str
    negative_prompt: str
    true_cfg_scale: float
    steps: int


def edit(pipe, rgb, p: EditParams, generator, on_step: Callable[[int], None] | None = None):
    """`rgb` (PIL RGB) edited by the instruction, rendered at its own size (Edit-Plus renders near
    1024² unless told the size)."""

    out = pipe(
        image=[rgb],
        prompt=p.instruction,
        negative_prompt=p.negative_prompt,
        true_cfg_scale=p.true_cfg_scale,
        num_inference_steps=p.steps,
        width=rgb.width,
        height=rgb.height,
        generator=generator,
        callback_on_step_end=step_callback(p.steps, on_step),
    )
    return out.images[0]
