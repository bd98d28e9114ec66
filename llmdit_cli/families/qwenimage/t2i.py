"""The code of the Qwen-Image text-to-image family (Qwen/Qwen-Image, Qwen/Qwen-Image-2512): the
arithmetic of diffusers' `QwenImagePipeline`, step for step, as stage functions.

- Encoding: the formatted prompt (the family's default system prompt makes it the pipeline's
  template) through Qwen2.5-VL, the last hidden state (`hidden_layer` -1), masked to a ragged list,
  with the template's first 34 tokens (its system turn) dropped as the pipeline drops them, cut to
  `max_length` caption tokens (the pipeline's `max_sequence_length`, 512 by default). A ragged list
  is the pipeline's padded embeddings plus their mask, so embeds files carry the mask as it is.
- Denoising: packed 2x2 latent patches, flow matching with the scheduler's dynamic shift, and
  true CFG as a guider (`TrueCFG`): `neg + s * (pos - neg)`, rescaled per token to the norm of
  `pos`, with the negative prompt; one pass at `guidance_scale <= 1`.
- Latents in stage files: `[B, 16, h, w]`, the normalised latents the transformer works in
  (`(z - latents_mean) / latents_std`); decoding undoes that and runs the video VAE on one frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from llmdit_cli.families.protocol import Limits
from llmdit_cli.families.qwenimage import common
from llmdit_cli.families.qwenimage.common import check_loadable, transformer_class
from llmdit_cli.guidance.guiders import UNCOND, Guider, Predictions, Step, combine, needed
from llmdit_cli.stages.schedule import dynamic_mu, fresh_scheduler

__all__ = [
    "DenoiseParams",
    "Encoded",
    "TrueCFG",
    "check_loadable",
    "decode_latents",
    "denoise_params",
    "encode_texts",
    "limits",
    "pipeline_class",
    "transformer_class",
    "transformer_device",
    "txt2img",
    "wants_negative",
]

# The pipeline's `prompt_template_encode_start_idx`: the tokens of its template's system turn,
# dropped from the encoder's states whatever the prompt.
DROP = 34
# The pipeline refuses a `max_sequence_length` above this.
MAX_CAPTION = 1024


def pipeline_class():
    from diffusers import QwenImagePipeline

    return QwenImagePipeline


def limits(handle) -> Limits:
    return replace(common.limits(handle), caption_tokens=MAX_CAPTION)


@dataclass
class Encoded:
    embeds: list  # one [seq_i, hidden] tensor per text
    token_counts: list[int]


def encode_texts(tokenizer, text_encoder, texts: list[str], hidden_layer: int, max_length: int, device=None) -> Encoded:
    """Formatted texts -> caption embeddings, as `QwenImagePipeline.encode_prompt` makes them.

    The pipeline tokenizes up to 1024 + 34 tokens and cuts the states to `max_sequence_length`
    after dropping 34; tokenizing only what is kept gives the same states (causal attention)."""
    import torch

    inputs = tokenizer(
        list(texts), max_length=max_length + DROP, padding=True, truncation=True, return_tensors="pt"
    ).to(device or text_encoder.device)
    with torch.no_grad():
        out = text_encoder(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask, output_hidden_states=True)
    states, mask = out.hidden_states[hidden_layer], inputs.attention_mask.bool()
    embeds = [states[i][mask[i]][DROP:][:max_length] for i in range(len(texts))]
    return Encoded(embeds, [int(m.sum()) for m in mask])


@dataclass
class TrueCFG(Guider):
    """Qwen-Image's true CFG: `neg + scale * (pos - neg)`, rescaled per token to the norm of the
    conditional prediction; off at `scale <= 1` (the pipeline's `true_cfg_scale`). It makes the
    prediction afresh from both passes, in the pipeline's arithmetic, so it comes first in a list."""

    scale: float

    def needs(self, step: Step) -> frozenset[str]:
        return frozenset({UNCOND}) if self.scale > 1 else frozenset()

    def combine(self, pred, p: Predictions, step: Step):
        import torch

        if p.uncond is None:
            return pred
        mixed = p.uncond + self.scale * (p.cond - p.uncond)
        return mixed * (torch.norm(p.cond, dim=-1, keepdim=True) / torch.norm(mixed, dim=-1, keepdim=True))


@dataclass
class DenoiseParams:
    steps: int
    true_cfg_scale: float = 4.0
    shift: float | None = None
    step_cache: Any = None  # stages.step_cache.StepCacheConfig; None: every block runs

    def guiders(self) -> list[Guider]:
        return [TrueCFG(self.true_cfg_scale)]


def denoise_params(settings, lim: Limits) -> DenoiseParams:
    """`generation.guidance_scale` is the true CFG scale."""
    from llmdit_cli.stages.step_cache import StepCacheConfig

    g = settings.generation
    cache = StepCacheConfig.from_settings(settings.optimization)
    return DenoiseParams(
        steps=g.steps, true_cfg_scale=g.guidance_scale, shift=settings.scheduler.shift, step_cache=cache
    )


def wants_negative(generation) -> bool:
    """Whether the negative prompt's embeddings take part (true CFG runs above 1)."""
    return generation.guidance_scale > 1


def transformer_device(pipe):
    from llmdit_cli.stages import run_device

    return run_device(pipe, pipe.transformer)


def _padded(embeds: list):
    """The pipeline's form of a ragged list: `[B, max_seq, hidden]` and its mask (None when full)."""
    import torch

    longest = max(int(e.shape[0]) for e in embeds)
    stacked = torch.stack([torch.cat([e, e.new_zeros(longest - e.shape[0], e.shape[1])]) for e in embeds])
    mask = torch.stack([torch.arange(longest, device=e.device) < e.shape[0] for e in embeds]).long()
    return stacked, None if bool(mask.all()) else mask


def _forward(transformer, latents, timestep, embeds: list, img_shapes):
    states, mask = _padded(embeds)
    return transformer(
        hidden_states=latents,
        timestep=timestep / 1000,
        guidance=None,
        encoder_hidden_states_mask=mask,
        encoder_hidden_states=states,
        img_shapes=img_shapes,
        attention_kwargs={},
        return_dict=False,
    )[0]


def _block_io():
    """Qwen-Image's blocks take `hidden_states` (the image stream) and return (text, image)."""
    from llmdit_cli.stages.step_cache import BlockIO

    return BlockIO(
        hidden=lambda args, kwargs: kwargs["hidden_states"] if "hidden_states" in kwargs else args[0],
        output_hidden=lambda out: out[1],
        skipped=lambda args, kwargs, hidden: (
            kwargs["encoder_hidden_states"] if "encoder_hidden_states" in kwargs else args[1],
            hidden,
        ),
    )


def velocity(transformer, latents, timestep, cond: list, uncond: list, img_shapes, guiders, step: Step, cache=None):
    """The guided prediction: conditional and (when a guider needs it) negative pass, each on its
    own as the pipeline runs them, combined by the guiders. `cache`: the loop's step cache."""
    import torch

    from llmdit_cli.stages.step_cache import named_pass

    with named_pass(cache, "cond"):
        pos = _forward(transformer, latents, timestep, cond, img_shapes)
    neg = None
    if UNCOND in needed(guiders, step) and len(uncond) == len(cond):
        with named_pass(cache, UNCOND):
            neg = _forward(transformer, latents, timestep, uncond, img_shapes)
    preds = [combine(guiders, Predictions(pos[i], neg[i] if neg is not None else None), step) for i in range(len(cond))]
    return torch.stack(preds)


def _timesteps(scheduler, steps: int, image_seq_len: int, device):
    import numpy as np
    from diffusers.pipelines.qwenimage.pipeline_qwenimage import retrieve_timesteps

    sigmas = np.linspace(1.0, 1 / steps, steps)  # as the pipeline makes them (numpy, not torch)
    return retrieve_timesteps(scheduler, steps, device, sigmas=sigmas, mu=dynamic_mu(scheduler, image_seq_len))[0]


def txt2img(
    pipe,
    cond: list,
    uncond: list,
    p: DenoiseParams,
    height: int,
    width: int,
    generator,
    on_step: Callable | None = None,
):
    """Denoise from seeded noise; returns finished latents `[B, 16, h, w]` (normalised)."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    from llmdit_cli.stages.step_cache import step_cache_applied

    device, n = transformer_device(pipe), len(cond)
    h = 2 * (int(height) // (pipe.vae_scale_factor * 2))
    w = 2 * (int(width) // (pipe.vae_scale_factor * 2))
    channels = pipe.transformer.config.in_channels // 4
    noise = randn_tensor((n, 1, channels, h, w), generator=generator, device=device, dtype=cond[0].dtype)
    latents = pipe._pack_latents(noise, n, channels, h, w)
    img_shapes = [[(1, h // 2, w // 2)]] * n
    scheduler = fresh_scheduler(pipe.scheduler, p.shift)
    timesteps = _timesteps(scheduler, p.steps, latents.shape[1], device)
    scheduler.set_begin_index(0)
    guiders = p.guiders()
    blocks = pipe.transformer.transformer_blocks
    with torch.no_grad(), step_cache_applied(blocks, p.step_cache, _block_io()) as cache:
        for i, t in enumerate(timesteps):
            timestep = t.expand(n).to(latents.dtype)
            step = Step(i, p.steps, float((1000 - t.float()) / 1000))
            v = velocity(pipe.transformer, latents, timestep, cond, uncond, img_shapes, guiders, step, cache)
            latents = scheduler.step(v, t, latents, return_dict=False)[0]
            if on_step:
                on_step(i + 1, len(timesteps))
    return pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)[:, :, 0].float()


def decode_latents(pipe, latents) -> list:
    """Normalised latents `[B, 16, h, w]` -> PIL images, as the pipeline decodes."""
    import torch

    from llmdit_cli.stages import run_device
    from llmdit_cli.stages.pixels import decoded_to_pil

    vae = pipe.vae
    z = common.denormalise(vae, latents[:, :, None].to(run_device(pipe, vae), vae.dtype))
    with torch.no_grad():
        pixels = vae.decode(z, return_dict=False)[0][:, :, 0]
    return decoded_to_pil(pixels)
