"""Flow-matching schedules the families share: a fresh scheduler per image, and the resolution-
dependent shift (`mu`) the stock pipelines compute from the scheduler's config."""

from __future__ import annotations


def fresh_scheduler(base, shift: float | None = None):
    """A new scheduler like `base` (no state carried between images), with `shift` if given."""
    overrides = {} if shift is None else {"shift": float(shift)}
    return type(base).from_config(base.config, **overrides)


def dynamic_mu(scheduler, image_seq_len: int) -> float:
    """The shift for `image_seq_len` image tokens, interpolated in the scheduler config's range (the
    stock pipelines' `calculate_shift`)."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    cfg = scheduler.config
    return calculate_shift(
        image_seq_len,
        cfg.get("base_image_seq_len", 256),
        cfg.get("max_image_seq_len", 4096),
        cfg.get("base_shift", 0.5),
        cfg.get("max_shift", 1.15),
    )
