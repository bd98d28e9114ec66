"""DyPE in Z-Image's RoPE: the embedder that stands in for the transformer's `rope_embedder`
while DyPE is on (the method itself: `guidance/dype.py`), and longer stock tables for grids beyond
the trained positions."""

from __future__ import annotations

from contextlib import contextmanager

from diffusers.hooks import HookRegistry, ModelHook

from llmdit_cli.guidance.dype import DyPEConfig, axis_scales, kappa, scaled_frequencies

HOOK_NAME = "llmdit_dype"


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
