"""Flow-matching denoising for Z-Image, step for step the arithmetic of the stock pipelines.

Per step, with `t` the scheduler timestep and `s` the guidance scale:

    v_pos = DiT(x, (1000 - t) / 1000, cond)
    v     = v_pos + s * (v_pos - v_neg)      if CFG is on (s > 0 and progress <= cfg_truncation)
    v     = v * min(1, c * |v_pos| / |v|)     if cfg_normalization c > 0
    x     = euler_step(-v, t, x)

The DiT output is negated because Z-Image predicts `x0 - noise` while the scheduler steps along
`noise - x0`. Written out here (not a call to the pipeline) so guidance hooks can join the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from llmdit_cli.errors import UsageError


@dataclass
class DenoiseParams:
    steps: int
    guidance_scale: float = 0.0
    cfg_normalization: float = 0.0
    cfg_truncation: float = 1.0
    shift: float | None = None


def make_scheduler(base_scheduler, shift: float | None):
    """A fresh scheduler (no state carried between images), with `shift` if given."""
    overrides = {} if shift is None else {"shift": float(shift)}
    return type(base_scheduler).from_config(base_scheduler.config, **overrides)


def set_timesteps(scheduler, steps: int, image_seq_len: int, device):
    from diffusers.pipelines.z_image.pipeline_z_image import calculate_shift
    import torch

    cfg = scheduler.config
    mu = calculate_shift(image_seq_len, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                         cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))
    sigmas = torch.linspace(1.0, 1 / steps, steps).tolist()
    scheduler.set_timesteps(sigmas=sigmas, device=device, mu=mu)
    return scheduler.timesteps


def transformer_device(pipe):
    """Where the transformer runs: its own device, or the offload target when hooks move it."""
    if getattr(pipe.transformer, "_hf_hook", None) is not None:
        return pipe._execution_device
    return pipe.transformer.device


def latent_shape(transformer, vae_scale_factor: int, height: int, width: int, batch: int = 1):
    h = 2 * (int(height) // (vae_scale_factor * 2))
    w = 2 * (int(width) // (vae_scale_factor * 2))
    return (batch, transformer.config.in_channels, h, w)


def guided_velocity(transformer, latents, timestep, cond: list, uncond: list, scale: float,
                    normalization: float):
    """The DiT prediction for the batch, with CFG applied when `scale > 0`."""
    import torch

    n = latents.shape[0]
    x = latents.to(transformer.dtype)
    if scale > 0:
        x, embeds, tt = x.repeat(2, 1, 1, 1), cond + uncond, timestep.repeat(2)
    else:
        embeds, tt = cond, timestep
    out = transformer(list(x.unsqueeze(2).unbind(dim=0)), tt, embeds, return_dict=False)[0]
    if scale <= 0:
        return torch.stack([o.float() for o in out], dim=0)
    preds = []
    for pos, neg in zip(out[:n], out[n:]):
        pos, neg = pos.float(), neg.float()
        pred = pos + scale * (pos - neg)
        if normalization and normalization > 0:
            pos_norm, new_norm = torch.linalg.vector_norm(pos), torch.linalg.vector_norm(pred)
            limit = pos_norm * float(normalization)
            if new_norm > limit:
                pred = pred * (limit / new_norm)
        preds.append(pred)
    return torch.stack(preds, dim=0)


def run_loop(transformer, scheduler, timesteps, latents, cond: list, uncond: list, p: DenoiseParams,
             on_step: Callable[[int, int], None] | None = None):
    import torch

    use_cfg = p.guidance_scale > 0
    if use_cfg and len(uncond) != len(cond):
        raise UsageError("--guidance-scale > 0 needs negative embeddings for every prompt")
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            timestep = (1000 - t.expand(latents.shape[0])) / 1000
            scale = p.guidance_scale
            if use_cfg and p.cfg_truncation is not None and float(p.cfg_truncation) <= 1:
                if float((1000 - t.float()) / 1000) > p.cfg_truncation:
                    scale = 0.0
            v = guided_velocity(transformer, latents, timestep, cond, uncond if scale > 0 else [], scale,
                                p.cfg_normalization)
            latents = scheduler.step(-v.squeeze(2).to(torch.float32), t, latents, return_dict=False)[0]
            if on_step:
                on_step(i + 1, len(timesteps))
    return latents


def txt2img(pipe, cond: list, uncond: list, p: DenoiseParams, height: int, width: int, generator,
            on_step=None):
    """Denoise from seeded noise; returns finished latents `[B, 16, h, w]` (float32)."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    device = transformer_device(pipe)
    shape = latent_shape(pipe.transformer, pipe.vae_scale_factor, height, width, len(cond))
    latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
    scheduler = make_scheduler(pipe.scheduler, p.shift)
    timesteps = set_timesteps(scheduler, p.steps, (shape[2] // 2) * (shape[3] // 2), device)
    scheduler.set_begin_index(0)
    return run_loop(pipe.transformer, scheduler, timesteps, latents, cond, uncond, p, on_step)


def img2img(pipe, cond: list, uncond: list, p: DenoiseParams, image_latents, strength: float,
            generator, on_step=None):
    """Noise `image_latents` to the level `strength` and denoise from there, as ZImageImg2ImgPipeline."""
    from diffusers.utils.torch_utils import randn_tensor

    if not 0.0 <= strength <= 1.0:
        raise UsageError(f"--strength {strength}: must be in [0, 1]")
    device = transformer_device(pipe)
    shape = tuple(image_latents.shape)
    scheduler = make_scheduler(pipe.scheduler, p.shift)
    timesteps = set_timesteps(scheduler, p.steps, (shape[2] // 2) * (shape[3] // 2), device)
    init = min(p.steps * strength, p.steps)
    start = int(max(p.steps - init, 0))
    timesteps = timesteps[start * scheduler.order:]
    scheduler.set_begin_index(start * scheduler.order)
    if len(timesteps) < 1:
        raise UsageError(f"--strength {strength} with --steps {p.steps} leaves no denoising step; raise either")
    noise = randn_tensor(shape, generator=generator, device=device, dtype=cond[0].dtype)
    latents = scheduler.scale_noise(image_latents.to(device), timesteps[:1].repeat(shape[0]), noise)
    return run_loop(pipe.transformer, scheduler, timesteps, latents, cond, uncond, p, on_step)
