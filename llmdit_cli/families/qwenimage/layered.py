"""The code of the Qwen-Image-Layered family (`families/qwenimage/`): diffusers'
QwenImageLayeredPipeline run as it is, plus what llmdit adds around it: the caption (when no
prompt is given), the finished latents for `--save-latents`, and their decoding (`llmdit decode`).

The pipeline makes `layers + 1` frames: frame 0 is its own composite of the input, frames 1..N are
the RGBA layers, bottom first. `decode_layers` is the pipeline's own decoding tail, so layers
decoded from saved latents are the pixels `decompose` writes directly (tested).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmdit_cli.families.qwenimage.common import (
    check_loadable,
    denormalise,
    limits,
    step_callback,
    transformer_class,
)

__all__ = [
    "LayeredParams",
    "auto_layers",
    "caption",
    "check_loadable",
    "decode_layers",
    "decompose",
    "limits",
    "output_size",
    "pipeline_class",
    "transformer_class",
]


def pipeline_class():
    from diffusers import QwenImageLayeredPipeline

    return QwenImageLayeredPipeline


@dataclass
class LayeredParams:
    prompt: str
    negative_prompt: str
    true_cfg_scale: float
    layers: int
    steps: int
    resolution: int
    cfg_normalize: bool


# `--layers auto`: the layer count an image gets (see `auto_layers`).
AUTO_MIN, AUTO_MAX = 2, 8
AUTO_SIDE = 128  # the image is looked at this small: regions, not texture
AUTO_COLOURS = 16  # palette size of the look
AUTO_SHARE = 0.03  # a colour is a region when it covers at least this share of the pixels


def auto_layers(image) -> int:
    """The layer count `--layers auto` picks for an image (RGBA): one layer per colour region that
    matters, the background included. The image is shrunk to 128 pixels a side, composited on
    white (a see-through part is a white region), and reduced to 16 colours (median cut); each
    colour covering at least 3% of the pixels counts as a region. The count is kept within 2 to
    8: fewer layers than regions merge some, and more than 8 are rarely what a user asks for (the
    model takes up to 10)."""
    from PIL import Image

    small = image.convert("RGBA")
    small.thumbnail((AUTO_SIDE, AUTO_SIDE))
    flat = Image.alpha_composite(Image.new("RGBA", small.size, (255, 255, 255, 255)), small).convert("RGB")
    counts = flat.quantize(AUTO_COLOURS, method=Image.Quantize.MEDIANCUT).getcolors(AUTO_COLOURS) or []
    regions = sum(1 for n, _ in counts if n >= AUTO_SHARE * small.width * small.height)
    return max(AUTO_MIN, min(AUTO_MAX, regions))


def output_size(pipe, image_size: tuple[int, int], resolution: int) -> tuple[int, int]:
    """(width, height) of the layers for an input of `image_size`: the pipeline's area bucket
    (resolution²) at the input's aspect ratio, on its packing grid."""
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_layered import calculate_dimensions

    width, height = calculate_dimensions(resolution * resolution, image_size[0] / image_size[1])
    grid = pipe.vae_scale_factor * 2
    return int(width // grid * grid), int(height // grid * grid)


def caption(pipe, image, resolution: int, english: bool, max_new_tokens: int = 512) -> str:
    """The pipeline's own caption of `image` (what `get_image_caption` does with an empty prompt:
    its captioning prompt, the image at the resolution's bucket, greedy, up to 512 tokens). Only
    the inputs Qwen2.5-VL's `generate` takes are passed: a processor may add token-type ids that
    `generate` refuses."""
    import torch
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_layered import calculate_dimensions

    from llmdit_cli.stages import run_device

    width, height = calculate_dimensions(resolution * resolution, image.size[0] / image.size[1])
    shown = pipe.image_processor.resize(image, height, width)
    text = pipe.image_caption_prompt_en if english else pipe.image_caption_prompt_cn
    inputs = pipe.vl_processor(text=text, images=shown, padding=True, return_tensors="pt")
    keep = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw")
    device = run_device(pipe, pipe.text_encoder)
    inputs = {k: v.to(device) for k, v in inputs.items() if k in keep}
    with torch.no_grad():
        ids = pipe.text_encoder.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    reply = ids[0, inputs["input_ids"].shape[1] :]
    return pipe.vl_processor.batch_decode([reply], skip_special_tokens=True)[0].strip()


def decompose(
    pipe, image, p: LayeredParams, generator, on_step: Callable[[int], None] | None = None, keep_latents=False
):
    """The RGBA layers (PIL, bottom first) of `image` (RGBA), and with `keep_latents` the finished
    latents `[1, C, layers + 1, h, w]` (normalised, frame 0 the pipeline's composite)."""
    kept: dict[str, Any] = {}
    out = pipe(
        image,
        prompt=p.prompt,
        negative_prompt=p.negative_prompt,
        true_cfg_scale=p.true_cfg_scale,
        layers=p.layers,
        num_inference_steps=p.steps,
        resolution=p.resolution,
        cfg_normalize=p.cfg_normalize,
        generator=generator,
        callback_on_step_end=step_callback(p.steps, on_step, kept if keep_latents else None),
    )
    latents = None
    if keep_latents:
        width, height = output_size(pipe, image.size, p.resolution)
        latents = pipe._unpack_latents(kept["latents"], height, width, p.layers, pipe.vae_scale_factor)
    return list(out.images[0]), latents


def decode_layers(pipe, latents) -> list:
    """RGBA layers (PIL, bottom first) of finished latents `[1, C, layers + 1, h, w]`: the
    pipeline's decoding (un-normalise, drop the composite frame, decode each frame)."""
    import torch

    from llmdit_cli.stages import run_device

    vae = pipe.vae
    latents = denormalise(vae, latents.to(run_device(pipe, vae), vae.dtype))
    _, c, _, h, w = latents.shape
    frames = latents[:, :, 1:].permute(0, 2, 1, 3, 4).reshape(-1, c, 1, h, w)
    with torch.no_grad():
        images = vae.decode(frames, return_dict=False)[0].squeeze(2)
    return list(pipe.image_processor.postprocess(images, output_type="pil"))
