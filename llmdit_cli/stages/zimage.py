"""The code of the Z-Image family (`families/zimage.py` names this module as its runner): the
diffusers classes it loads and the stage functions the engine calls."""

from __future__ import annotations

from llmdit_cli.stages.denoise import DenoiseParams, img2img, transformer_device, txt2img
from llmdit_cli.stages.encode import encode_texts
from llmdit_cli.stages.vae import decode_latents, encode_image, normalise

__all__ = [
    "DenoiseParams",
    "decode_latents",
    "encode_image",
    "encode_texts",
    "img2img",
    "normalise",
    "pipeline_class",
    "transformer_class",
    "transformer_device",
    "txt2img",
]


def pipeline_class():
    from diffusers import ZImagePipeline

    return ZImagePipeline


def transformer_class():
    from diffusers import ZImageTransformer2DModel

    return ZImageTransformer2DModel
