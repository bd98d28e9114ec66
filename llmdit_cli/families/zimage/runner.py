"""The code of the Z-Image family (its `runner`): the diffusers classes it loads, what its folders
can take (`limits`), and the stage functions the engine calls (`families.protocol.TextToImageRunner`)."""

from __future__ import annotations

from llmdit_cli.families.protocol import Limits
from llmdit_cli.families.zimage.control import (
    Control,
    check_controlnet,
    control_latents,
    latent_mask,
    load_controlnet,
)
from llmdit_cli.families.zimage.denoise import DenoiseParams, img2img, trajectory, transformer_device, txt2img
from llmdit_cli.families.zimage.encode import encode_texts
from llmdit_cli.families.zimage.vae import decode_latents, encode_image, normalise

__all__ = [
    "Control",
    "DenoiseParams",
    "check_controlnet",
    "check_loadable",
    "control_latents",
    "latent_mask",
    "load_controlnet",
    "decode_latents",
    "denoise_params",
    "encode_image",
    "encode_texts",
    "img2img",
    "limits",
    "normalise",
    "pipeline_class",
    "transformer_class",
    "trajectory",
    "transformer_device",
    "txt2img",
    "wants_negative",
]

# Captions are padded to a multiple of this and image positions follow them on the caption axis.
CAPTION_PAD = 32
# Z-Image's sides are multiples of 16 (its token grid); folders with a finer grid keep the rule.
SIZE_MULTIPLE = 16


def pipeline_class():
    from diffusers import ZImagePipeline

    return ZImagePipeline


def transformer_class():
    from diffusers import ZImageTransformer2DModel

    return ZImageTransformer2DModel


def check_loadable(folder, ref: str) -> None:
    """Every Z-Image folder diffusers reads loads here."""


def vae_scale_factor(vae_config: dict) -> int:
    return 2 ** (len(vae_config.get("block_out_channels", [0] * 4)) - 1)


def limits(handle) -> Limits:
    """Read from the folder's configs: the caption axis of the RoPE allows `axes_lens[0] - 32`
    caption tokens (1504 for Z-Image: captions are padded to a multiple of 32 and image positions
    start after them); the spatial axes cover `axes_lens[1:]` tokens."""
    t = handle.component_config("transformer")
    te = handle.component_config("text_encoder")
    patch = int((t.get("all_patch_size") or [2])[0])
    scale = vae_scale_factor(handle.component_config("vae"))
    lens = t.get("axes_lens") or [0, 0, 0]
    spatial = min(lens[1:] or [0])
    return Limits(
        caption_tokens=lens[0] - CAPTION_PAD if lens[0] else None,
        text_hidden_size=t.get("cap_feat_dim"),
        text_hidden_states=int(te.get("num_hidden_layers", 0)) + 1,
        channels=int(t.get("in_channels", 16)),
        patch_size=patch,
        vae_scale_factor=scale,
        trained_size=spatial * patch * scale or None,
        blocks=int(t.get("n_layers", 0)),
        size_multiple=max(SIZE_MULTIPLE, patch * scale),
    )


def denoise_params(settings, lim: Limits) -> DenoiseParams:
    """The denoise loop's parameters from typed settings (`config.Settings`), family defaults filled."""
    from llmdit_cli.guidance.dype import DyPEConfig
    from llmdit_cli.guidance.slg import SLGConfig
    from llmdit_cli.stages.step_cache import StepCacheConfig

    g = settings.generation
    return DenoiseParams(
        steps=g.steps,
        guidance_scale=g.guidance_scale,
        cfg_normalization=g.cfg_normalization,
        cfg_truncation=g.cfg_truncation,
        shift=settings.scheduler.shift,
        slg=SLGConfig.from_settings(settings.slg),
        dype=DyPEConfig.from_settings(settings.dype, lim),
        step_cache=StepCacheConfig.from_settings(settings.optimization),
    )


def wants_negative(generation) -> bool:
    """Whether the negative prompt's embeddings take part: CFG runs at a scale above 0."""
    return generation.guidance_scale > 0
