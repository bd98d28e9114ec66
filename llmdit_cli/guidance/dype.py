"""DyPE: dynamic position extrapolation for Z-Image's 3-axis RoPE (arXiv 2510.20766).

Z-Image rotates query/key pairs by `exp(i * p * w_j)`, with `w_j = theta^(-2j/d)` per axis: the
caption axis (d0 dims), then height and width. Beyond the training resolution the spatial
positions `p` leave the range the model saw. DyPE rescales the spatial frequencies, and makes the
amount depend on the noise level: early (high sigma) the image's low frequencies form and need
the full extrapolation; late (low sigma) details form and are best served by the native RoPE.

With `s = max(1, L'/L)` per spatial axis (L' tokens asked for, L tokens at the base resolution),
the current sigma `sigma`, and the parameters (dype_scale, dype_exponent, start_sigma):

    tau   = clamp(sigma / start_sigma, 0, 1)
    kappa = dype_scale * tau ** dype_exponent
    s_t   = s ** min(kappa, 1)                      # 1 = native RoPE

    r_j   = L * w_j / (2 pi)                         # turns of frequency j over the base length
    ramp  = clamp(ln(r_j / alpha) / ln(beta / alpha), 0, 1),  alpha = 1, beta = 32

    ntk:          w'_j = (theta * s_t ** (d / (d - 2))) ** (-2j / d)
    yarn:         w'_j = (1 - ramp) * w_j / s_t + ramp * w_j,       magnitude 1 + 0.1 ln s_t
    vision_yarn:  s = max(s_h, s_w) on both axes (shapes are not stretched), the full s, and three
                  bands by turns r_j: w_j / s below 0.75^k..1.25^k turns, the NTK frequency up to
                  2^k..16^k, w_j above (k = kappa); magnitude 1 + 0.1 ln s / sqrt(s)

The caption axis is never changed. Where an axis needs no extrapolation (s_t = 1) the stock table
is used, so the output equals the stock embedder's exactly when DyPE is off, at the base
resolution, and for ntk and yarn once kappa has decayed to 0. vision_yarn keeps the frequencies
that turn less than once over the base side interpolated to the end (the paper's design: they
carry the layout); `--dype-scale 0` therefore leaves it on. The magnitude (YaRN's attention temperature) multiplies both query and
key, as in YaRN. docs/dype.md has the derivation and advice on the parameters.

This module holds the method (settings, checks, frequencies); the hook that puts it into Z-Image's
RoPE embedder is the family's (`families/zimage/rope.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmdit_cli.errors import UsageError, setting

METHODS = ("yarn", "ntk", "vision_yarn")
RAMP_ALPHA, RAMP_BETA = 1.0, 32.0
# vision_yarn's bands, in turns over the base length (the DyPE paper's values for its YaRN): below
# ~1 turn interpolated (w / s), up to 16 turns NTK, above that native; kappa raises each edge to
# its power, so late in sampling (kappa -> 0) the edges meet at 1 turn.
VISION_BANDS = ((1.25, 0.75), (16.0, 2.0))


@dataclass
class DyPEConfig:
    base_tokens: int  # tokens per side at the base resolution
    method: str = "vision_yarn"
    scale: float = 2.0  # dype_scale, lambda_s
    exponent: float = 2.0  # dype_exponent, lambda_t
    start_sigma: float = 1.0

    @classmethod
    def from_settings(cls, dype, limits) -> DyPEConfig | None:
        """From the `dype` settings section (family defaults filled) and the model's `Limits`;
        None when DyPE is off."""
        if not dype.enabled:
            return None
        return cls(
            base_tokens=dype.base_resolution // limits.token_pixels,
            method=dype.method or "vision_yarn",
            scale=dype.scale,
            exponent=dype.exponent,
            start_sigma=dype.start_sigma,
        )


def check_dype(config: DyPEConfig) -> None:
    if config.method not in METHODS:
        raise UsageError(f"{setting('dype.method')} {config.method}: use one of {', '.join(METHODS)}")
    if config.base_tokens < 1:
        raise UsageError(f"{setting('dype.base_resolution')}: must be at least one patch")
    if config.scale < 0 or config.exponent < 0:
        raise UsageError(f"{setting('dype.scale')} and {setting('dype.exponent')}: must be >= 0")
    if not 0.0 < config.start_sigma <= 1.0:
        raise UsageError(f"{setting('dype.start_sigma')} {config.start_sigma}: must be in (0, 1]")


def kappa(config: DyPEConfig, sigma: float) -> float:
    tau = min(max(sigma / config.start_sigma, 0.0), 1.0)
    return config.scale * tau**config.exponent


def axis_scales(config: DyPEConfig, grid: tuple[int, int]) -> tuple[float, float]:
    """The extrapolation factor s of the height and width axes for a token grid (h, w)."""
    s_h, s_w = (max(1.0, n / config.base_tokens) for n in grid)
    if config.method == "vision_yarn":
        s_h = s_w = max(s_h, s_w)
    return s_h, s_w


def band(turns, many: float, few: float):
    """1 for frequencies turning at least `many` times over the base length, 0 at `few` or fewer,
    linear in log-turns between (log-turns are linear in the frequency index)."""
    import torch

    if many <= few * (1 + 1e-9):
        return (turns > few).to(turns.dtype)
    return ((turns.log() - math.log(few)) / (math.log(many) - math.log(few))).clamp(0.0, 1.0) + torch.zeros_like(turns)


def scaled_frequencies(method: str, dim: int, theta: float, base_len: int, s: float, k: float = 1.0):
    """The frequencies w'_j (float64) and the magnitude for one axis at scale s > 1. For `ntk` and
    `yarn`, `s` is already the time-dependent s_t; for `vision_yarn` it is the full factor and
    `k` (kappa) moves the band edges."""
    import torch

    exponents = torch.arange(0, dim, 2, dtype=torch.float64) / dim
    base = 1.0 / theta**exponents
    ntk = 1.0 / (theta * s ** (dim / (dim - 2) if dim > 2 else 1.0)) ** exponents
    if method == "ntk":
        return ntk, 1.0
    turns = base_len * base / (2 * math.pi)
    if method == "vision_yarn":
        (b_many, b_few), (g_many, g_few) = ((x**k for x in pair) for pair in VISION_BANDS)
        freqs = (1 - band(turns, b_many, b_few)) * base / s + band(turns, b_many, b_few) * ntk
        keep = band(turns, g_many, g_few)
        return (1 - keep) * freqs + keep * base, 1.0 + 0.1 * math.log(s) / math.sqrt(s)
    ramp = ((turns / RAMP_ALPHA).log() / math.log(RAMP_BETA / RAMP_ALPHA)).clamp(0.0, 1.0)
    return (1.0 - ramp) * base / s + ramp * base, 1.0 + 0.1 * math.log(s)
