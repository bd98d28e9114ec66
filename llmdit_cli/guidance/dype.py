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
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

from diffusers.hooks import HookRegistry, ModelHook

from llmdit_cli.errors import UsageError, setting

HOOK_NAME = "llmdit_dype"
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


class _State:
    sigma: float = 1.0
    grid: tuple[int, int] = (0, 0)


class DyPERope:
    """Stands in for the transformer's `rope_embedder`; returns the same complex64 `[N, sum(dims)]`."""

    def __init__(self, stock, config: DyPEConfig, state: _State):
        self.stock, self.config, self.state = stock, config, state

    def __getattr__(self, name):  # theta, axes_dims, axes_lens, freqs_cis ... of the stock embedder
        return getattr(self.stock, name)

    def effective_scales(self) -> tuple[float, float]:
        """Per spatial axis: s_t = s ** min(kappa, 1) (ntk, yarn), or the full s (vision_yarn,
        whose time dependence is in its bands)."""
        full = axis_scales(self.config, self.state.grid)
        if self.config.method == "vision_yarn":
            return full
        k = min(kappa(self.config, self.state.sigma), 1.0)
        return tuple(s**k for s in full)

    def __call__(self, ids):
        import torch

        scales = self.effective_scales()
        k = kappa(self.config, self.state.sigma)
        if all(s <= 1.0 for s in scales):
            return self.stock(ids)
        stock = self.stock(ids)  # also fills/extends the stock tables
        d0 = self.stock.axes_dims[0] // 2
        parts, offset = [stock[:, :d0]], d0
        for axis, s in zip((1, 2), scales):
            half = self.stock.axes_dims[axis] // 2
            if s <= 1.0:
                parts.append(stock[:, offset : offset + half])
            else:
                freqs, magnitude = scaled_frequencies(
                    self.config.method, self.stock.axes_dims[axis], self.stock.theta, self.config.base_tokens, s, k
                )
                angles = torch.outer(ids[:, axis].to(torch.float64).cpu(), freqs).float()
                rot = torch.polar(torch.full_like(angles, magnitude), angles).to(stock.dtype)
                parts.append(rot.to(stock.device))
            offset += half
        return torch.cat(parts, dim=-1)


class DyPEHook(ModelHook):
    """Swaps in the DyPE embedder and, before each forward, records sigma and the token grid."""

    def __init__(self, config: DyPEConfig):
        super().__init__()
        self.config, self.state = config, _State()
        self.stock = None

    def initialize_hook(self, module):
        self.stock = module.rope_embedder
        module.rope_embedder = DyPERope(self.stock, self.config, self.state)
        return module

    def deinitalize_hook(self, module):  # (sic) the name diffusers calls
        module.rope_embedder = self.stock
        return module

    def pre_forward(self, module, *args, **kwargs):
        x = args[0] if args else kwargs["x"]
        t = args[1] if len(args) > 1 else kwargs["t"]
        # The pipeline passes t = 1 - sigma.
        self.state.sigma = 1.0 - float(t.flatten()[0])
        patch = module.config.all_patch_size[0]
        self.state.grid = (x[0].shape[-2] // patch, x[0].shape[-1] // patch)
        return args, kwargs


def apply_dype(transformer, config: DyPEConfig) -> DyPEHook:
    check_dype(config)
    hook = DyPEHook(config)
    HookRegistry.check_if_exists_or_initialize(transformer).register_hook(hook, HOOK_NAME)
    return hook


def remove_dype(transformer) -> None:
    registry = getattr(transformer, "_diffusers_hook", None)
    if registry is not None and registry.get_hook(HOOK_NAME) is not None:
        registry.remove_hook(HOOK_NAME, recurse=False)


@contextmanager
def dype_applied(transformer, config: DyPEConfig | None):
    if config is None:
        yield None
        return
    hook = apply_dype(transformer, config)
    try:
        yield hook
    finally:
        remove_dype(transformer)


@contextmanager
def positions_for(transformer, grid: tuple[int, int]):
    """Longer stock RoPE tables while a grid needs positions beyond `axes_lens` (plain extrapolation).

    The tables are the stock formula evaluated further; positions inside the trained range get the
    same values, so sizes the model supports are unchanged.
    """
    rope = transformer.rope_embedder
    lens = list(rope.axes_lens)
    wanted = [lens[0], max(lens[1], grid[0]), max(lens[2], grid[1])]
    if wanted == lens:
        yield False
        return
    rope.axes_lens, rope.freqs_cis = wanted, None
    try:
        yield True
    finally:
        rope.axes_lens, rope.freqs_cis = lens, None
