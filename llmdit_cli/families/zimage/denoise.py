"""Flow-matching denoising for Z-Image, step for step the arithmetic of the stock pipelines.

Per step, with `t` the scheduler timestep:

    v_pos = DiT(x, (1000 - t) / 1000, cond)   (with v_neg / v_skip when a guider needs them)
    v     = the guiders' combination           (guidance/guiders.py: CFG, SLG, CFG normalisation)
    x     = euler_step(-v, t, x)

The DiT output is negated because Z-Image predicts `x0 - noise` while the scheduler steps along
`noise - x0`. Written out here (not a call to the pipeline) so guiders and hooks join the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmdit_cli.guidance.guiders import (
    SKIP,
    UNCOND,
    CFGNormalization,
    ClassifierFreeGuidance,
    Guider,
    Predictions,
    SkipLayerGuidance,
    Step,
    combine,
    needed,
    pass_context,
)
from llmdit_cli.stages import run_device
from llmdit_cli.stages.schedule import dynamic_mu, fresh_scheduler

if TYPE_CHECKING:
    from llmdit_cli.families.zimage.control import Control
    from llmdit_cli.guidance.dype import DyPEConfig
    from llmdit_cli.guidance.slg import SLGConfig
    from llmdit_cli.stages.step_cache import StepCacheConfig


@dataclass
class DenoiseParams:
    steps: int
    guidance_scale: float = 0.0
    cfg_normalization: float = 0.0
    cfg_truncation: float = 1.0
    shift: float | None = None
    slg: SLGConfig | None = None
    dype: DyPEConfig | None = None
    control: Control | None = None  # a ControlNet steering every pass (control.py)
    step_cache: StepCacheConfig | None = None  # None: every block runs at every step

    def guiders(self) -> list[Guider]:
        """Z-Image's guidance, in the order it combines: CFG, SLG, then CFG normalisation."""
        out: list[Guider] = [ClassifierFreeGuidance(self.guidance_scale, self.cfg_truncation)]
        if self.slg is not None and self.slg.enabled:
            out.append(SkipLayerGuidance(self.slg))
        out.append(CFGNormalization(self.cfg_normalization))
        return out


def block_io():
    """Z-Image's main blocks take the unified stream as their first argument `x` and return it."""
    from llmdit_cli.stages.step_cache import BlockIO  # with diffusers' hooks: only when a run starts

    return BlockIO(
        hidden=lambda args, kwargs: args[0] if args else kwargs["x"],
        output_hidden=lambda out: out,
        skipped=lambda args, kwargs, hidden: hidden,
    )


def set_timesteps(scheduler, steps: int, image_seq_len: int, device):
    import torch

    sigmas = torch.linspace(1.0, 1 / steps, steps).tolist()
    scheduler.set_timesteps(sigmas=sigmas, device=device, mu=dynamic_mu(scheduler, image_seq_len))
    return scheduler.timesteps


def transformer_device(pipe):
    """Where the transformer runs: its own device, or the offload target when hooks move it."""
    return run_device(pipe, pipe.transformer)


def latent_shape(transformer, vae_scale_factor: int, height: int, width: int, batch: int = 1):
    h = 2 * (int(height) // (vae_scale_factor * 2))
    w = 2 * (int(width) // (vae_scale_factor * 2))
    return (batch, transformer.config.in_channels, h, w)


def _forward(transformer, x, timestep, embeds: list, control: Control | None = None) -> list:
    x_list = list(x.unsqueeze(2).unbind(dim=0))
    if control is None:
        return transformer(x_list, timestep, embeds, return_dict=False)[0]
    samples = control.block_samples(x_list, timestep, embeds)
    return transformer(x_list, timestep, embeds, controlnet_block_samples=samples, return_dict=False)[0]


def guided_velocity(
    transformer,
    latents,
    timestep,
    cond: list,
    uncond: list,
    guiders: list[Guider],
    step: Step,
    control=None,
    cache=None,
):
    """The DiT prediction for the batch, combined by the guiders: the passes they need at this
    step run once (the unconditional one batched with the conditional one). `cache` is the
    loop's step cache (`stages.step_cache`), told which pass runs."""
    import torch

    from llmdit_cli.stages.step_cache import named_pass

    n = latents.shape[0]
    x = latents.to(transformer.dtype)
    need = needed(guiders, step)
    with_uncond = UNCOND in need and len(uncond) == n
    with named_pass(cache, "main"):
        if with_uncond:
            out = _forward(transformer, x.repeat(2, 1, 1, 1), timestep.repeat(2), cond + uncond, control)
        else:
            out = _forward(transformer, x, timestep, cond, control)
    skipped = None
    if SKIP in need:
        with pass_context(guiders, SKIP, step), named_pass(cache, SKIP):
            skipped = _forward(transformer, x, timestep, cond, control)
    preds = []
    for i in range(n):
        p = Predictions(
            out[i].float(),
            out[n + i].float() if with_uncond else None,
            skipped[i].float() if skipped is not None else None,
        )
        preds.append(combine(guiders, p, step))
    return torch.stack(preds, dim=0)


def run_loop(
    transformer,
    scheduler,
    timesteps,
    latents,
    cond: list,
    uncond: list,
    p: DenoiseParams,
    on_step: Callable[[int, int], None] | None = None,
    first_step: int = 0,
    after_step: Callable[[int, object], object] | None = None,
    record: Callable[[object, object, object], None] | None = None,
):
    """Denoise over `timesteps`; `first_step` is where they start in the full `p.steps` schedule
    (img2img), so guidance windows keep their place in the schedule. `after_step(i, latents)`
    may change the latents after each step (inpainting keeps the input outside its mask);
    `record(latents, timestep, v)` sees each step's state, DiT timestep and guided prediction."""
    import torch

    from llmdit_cli.families.zimage.rope import dype_applied, positions_for
    from llmdit_cli.stages.step_cache import step_cache_applied

    guiders = p.guiders()
    patch = transformer.config.all_patch_size[0]
    grid = (latents.shape[-2] // patch, latents.shape[-1] // patch)
    # Hooks come off in reverse order however the loop ends (error, Ctrl-C), so the next run is clean.
    with torch.no_grad(), ExitStack() as hooks:
        hooks.enter_context(positions_for(transformer, grid))
        hooks.enter_context(dype_applied(transformer, p.dype))
        for g in guiders:
            hooks.enter_context(g.attach(transformer.layers))
        # After the guiders' hooks, so the cache's wrap theirs (a block SLG skips still counts).
        cache = hooks.enter_context(step_cache_applied(transformer.layers, p.step_cache, block_io()))
        for i, t in enumerate(timesteps):
            timestep = (1000 - t.expand(latents.shape[0])) / 1000
            step = Step(first_step + i, p.steps, float((1000 - t.float()) / 1000))
            v = guided_velocity(transformer, latents, timestep, cond, uncond, guiders, step, p.control, cache)
            if record is not None:
                record(latents, timestep, v.squeeze(2))
            latents = scheduler.step(-v.squeeze(2).to(torch.float32), t, latents, return_dict=False)[0]
            if after_step is not None:
                latents = after_step(i, latents)
            if on_step:
                on_step(i + 1, len(timesteps))
    return latents


def txt2img(
    pipe, cond: list, uncond: list, p: DenoiseParams, height: int, width: int, generator, on_step=None, record=None
):
    """Denoise from seeded noise; returns finished latents `[B, 16, h, w]` (float32). `record`: as
    for `run_loop`."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    device = transformer_device(pipe)
    shape = latent_shape(pipe.transformer, pipe.vae_scale_factor, height, width, len(cond))
    latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
    scheduler = fresh_scheduler(pipe.scheduler, p.shift)
    timesteps = set_timesteps(scheduler, p.steps, (shape[2] // 2) * (shape[3] // 2), device)
    scheduler.set_begin_index(0)
    return run_loop(pipe.transformer, scheduler, timesteps, latents, cond, uncond, p, on_step, record=record)


def trajectory(pipe, cond: list, uncond: list, p: DenoiseParams, height: int, width: int, generator):
    """The sampling trajectory of `txt2img` (guidance distillation learns on it): per step, the
    states `[B, C, h, w]`, the DiT timesteps `[B]` and the guided predictions `[B, C, h, w]`,
    each stacked over the steps (dim 1 / 1 / 1)."""
    import torch

    seen: list[tuple] = []
    txt2img(pipe, cond, uncond, p, height, width, generator, record=lambda x, t, v: seen.append((x, t, v)))
    states, timesteps, targets = zip(*seen)
    return (
        torch.stack([s.float().cpu() for s in states], dim=1),
        torch.stack([t.float().cpu() for t in timesteps], dim=1),
        torch.stack([v.float().cpu() for v in targets], dim=1),
    )


def img2img(
    pipe, cond: list, uncond: list, p: DenoiseParams, image_latents, strength: float, generator, on_step=None, mask=None
):
    """Noise `image_latents` to the level `strength` and denoise from there, as ZImageImg2ImgPipeline;
    with `mask` (`[1, 1, h, w]`, 1 = repaint) keep the input outside it, as ZImageInpaintPipeline."""
    from diffusers.utils.torch_utils import randn_tensor

    device = transformer_device(pipe)
    shape = tuple(image_latents.shape)
    scheduler = fresh_scheduler(pipe.scheduler, p.shift)
    timesteps = set_timesteps(scheduler, p.steps, (shape[2] // 2) * (shape[3] // 2), device)
    init = min(p.steps * strength, p.steps)
    start = int(max(p.steps - init, 0))
    timesteps = timesteps[start * scheduler.order :]
    scheduler.set_begin_index(start * scheduler.order)
    if len(timesteps) < 1:
        # Nothing to denoise (strength 0, or too low for the steps): the input comes back as it is,
        # through the VAE. (The stock pipeline refuses; the help promises "0 keeps the input".)
        if on_step:
            on_step(0, 0)
        return image_latents.to(device)
    noise = randn_tensor(shape, generator=generator, device=device, dtype=cond[0].dtype)
    image_latents = image_latents.to(device)
    latents = scheduler.scale_noise(image_latents, timesteps[:1].repeat(shape[0]), noise)
    blend = (
        None
        if mask is None
        else _keep_outside(scheduler, timesteps, image_latents, noise, mask.to(device, cond[0].dtype))
    )
    return run_loop(pipe.transformer, scheduler, timesteps, latents, cond, uncond, p, on_step, start, blend)


def _keep_outside(scheduler, timesteps, image_latents, noise, mask):
    """After step i: outside the mask (0), the input's latents noised to the next step's level
    (clean after the last); inside (1), what the step made. ZImageInpaintPipeline's blend."""
    import torch

    def blend(i: int, latents):
        proper = image_latents
        if i < len(timesteps) - 1:
            proper = scheduler.scale_noise(image_latents, torch.tensor([timesteps[i + 1]]), noise)
        return (1 - mask) * proper + mask * latents

    return blend
