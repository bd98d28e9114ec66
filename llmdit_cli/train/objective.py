"""Rectified-flow matching with the conventions of the stock Z-Image pipeline.

With clean latents x0, noise n and sigma s in (0, 1]:

    x_s    = (1 - s) * x0 + s * n
    t      = 1 - s                  # the pipeline passes (1000 - 1000*s) / 1000 to the DiT
    target = x0 - n                 # the pipeline steps with -DiT(...), i.e. along n - x0
    loss   = mean_b( w(s_b) * mean((DiT(x_s, t, c) - target)^2) )

Sigma sampling: `uniform` s = u; `logit_normal` s = sigmoid(N(m, sd)); `shifted` s = k*u / (1 + (k-1)*u)
with u ~ U(0, 1), which matches the inference schedule's static shift k. Optional weighting
`gaussian`: w(s) = exp(-(s - c)^2 / (2 w^2)), normalised to mean 1 over the batch.

Guidance distillation (train/distill.py) uses the same loss with the teacher's guided prediction
as the target, on states of the teacher's sampling trajectories.
"""

from __future__ import annotations


def sample_sigmas(n: int, mode: str, generator, shift: float = 3.0, mean: float = 0.0, std: float = 1.0):
    import torch

    if mode == "logit_normal":
        return torch.sigmoid(torch.randn(n, generator=generator) * std + mean).clamp(1e-4, 1.0)
    u = torch.rand(n, generator=generator).clamp(1e-4, 1.0)
    if mode == "shifted":
        return shift * u / (1 + (shift - 1) * u)
    return u


def loss_weights(sigmas, mode: str, center: float = 0.5, width: float = 0.3):
    import torch

    if mode == "gaussian":
        w = torch.exp(-((sigmas - center) ** 2) / (2 * width**2))
        return w / w.mean()
    return torch.ones_like(sigmas)


def flow_loss(transformer, x0, embeds: list, sigmas, noise, weights):
    """The weighted flow-matching loss for one batch of latents `x0` [B, C, h, w]."""
    s = sigmas.view(-1, 1, 1, 1).to(x0)
    x_t = (1 - s) * x0 + s * noise
    return prediction_loss(transformer, x_t, 1 - sigmas, embeds, x0 - noise, weights)


def prediction_loss(transformer, x, t, embeds: list, targets, weights):
    """The weighted mean squared error between the DiT's predictions for states `x` [B, C, h, w]
    at DiT timesteps `t` [B] and `targets` (flow matching: `x0 - noise`; distillation: the
    teacher's guided prediction)."""
    import torch

    dtype = next(transformer.parameters()).dtype
    out = transformer(list(x.to(dtype).unsqueeze(2).unbind(0)), t.to(x).to(dtype), embeds, return_dict=False)[0]
    pred = torch.stack([o.float() for o in out]).squeeze(2)
    per_sample = ((pred - targets) ** 2).mean(dim=(1, 2, 3))
    return (per_sample * weights.to(per_sample)).mean()
