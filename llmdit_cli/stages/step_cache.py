"""A first-block step cache, written as diffusers model hooks (`StepCacheConfig`, the hooks, and
`step_cache_applied(blocks, config, io)`).

Neighbouring denoising steps change the transformer's hidden states little, most of all in the
middle of a schedule. Per forward pass the first block runs, and its residual (output - input) is
compared with the one of the last pass that ran every block:

    change = mean |r0 - r0_kept| / mean |r0_kept|

Below `threshold` the other blocks return their input and the last adds the residual they made on
that kept pass (its output - the first block's output), moved along its change since the kept pass
before (`EXTRAPOLATION` of the way a straight line would go); at or above it every block runs and
both residuals are kept. On the demo (30 steps, 64 px, 8 held-out images) the extrapolation took
the worst image from 29.1 to 35.5 dB PSNR at the same passes reused (56%), and let threshold 0.12
reuse 67% at 36.9 dB (docs/speed.md). The loop names its passes (`StepCache.pass_named`: the conditional batch, the
negative one, the SLG pass), and each has its own kept residuals; a pass whose batch changes
shape (CFG truncated) starts afresh.

diffusers' `apply_first_block_cache` cannot run on these models: Z-Image's blocks take `x`, not
`hidden_states`, and Qwen-Image's return `(text, image)`. A family says how its blocks carry the
image stream (`BlockIO`). Hooks registered after the SLG ones wrap them, so a skipped block still
counts in the residual the last block keeps.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from diffusers.hooks import HookRegistry, ModelHook

HOOK_NAME = "llmdit_step_cache"
EPS = 1e-12
# How far a reusing pass moves the kept residual along its last change (1: the straight line).
# Damped, as the change slows over a flow-matching schedule; 0.5-0.7 measured best on the demo.
EXTRAPOLATION = 0.7


@dataclass(frozen=True)
class StepCacheConfig:
    threshold: float = 0.12

    @classmethod
    def from_settings(cls, optimization) -> StepCacheConfig | None:
        """From the `optimization` section; None when the cache is off."""
        if optimization.step_cache == "none":
            return None
        return cls(threshold=optimization.step_cache_threshold)


@dataclass(frozen=True)
class BlockIO:
    """How a family's transformer blocks carry the image stream: `hidden(args, kwargs)` reads it
    from a block's inputs, `output_hidden(out)` from its output, and `skipped(args, kwargs, h)` is
    what a block that does not run returns, with `h` as its image stream."""

    hidden: Callable[[tuple, dict], Any]
    output_hidden: Callable[[Any], Any]
    skipped: Callable[[tuple, dict, Any], Any]


@dataclass
class _PassState:
    first_residual: Any = None  # the first block's residual on the last pass that ran every block
    first_output: Any = None
    rest_residual: Any = None  # what the other blocks added on that pass
    reuse: bool = False
    earlier_rest: Any = None  # the rest residual of the full pass before that one
    since: int = 0  # passes since the last full one
    gap: int = 1  # passes between the last two full ones


@dataclass
class StepCache:
    """The state of the hooks on one model's blocks while a loop runs; `reused`/`computed` count
    passes."""

    config: StepCacheConfig
    io: BlockIO
    current: str = "main"
    states: dict[tuple, _PassState] = field(default_factory=dict)
    reused: int = 0
    computed: int = 0
    state: _PassState | None = None  # the running pass's

    @contextmanager
    def pass_named(self, name: str):
        """Run the passes inside under `name`: its kept residuals are its own."""
        before, self.current = self.current, name
        try:
            yield
        finally:
            self.current = before

    def after_first_block(self, hidden_in, hidden_out) -> None:
        """Decide, from the first block's residual, whether this pass reuses the kept residual."""
        key = (self.current, tuple(hidden_in.shape))
        state = self.states.setdefault(key, _PassState())
        residual = hidden_out - hidden_in
        kept = state.first_residual
        state.reuse = kept is not None and state.rest_residual is not None and self._close(residual, kept)
        state.since += 1
        if state.reuse:
            self.reused += 1
        else:
            self.computed += 1
            if state.rest_residual is not None:
                state.earlier_rest, state.gap = state.rest_residual, state.since
            state.since = 0
            state.first_residual, state.first_output, state.rest_residual = residual, hidden_out, None
        self.state = state

    def _close(self, residual, kept) -> bool:
        change = (residual - kept).abs().mean() / (kept.abs().mean() + EPS)
        return float(change) < self.config.threshold


class FirstBlockHook(ModelHook):
    def __init__(self, cache: StepCache):
        super().__init__()
        self.cache = cache

    def new_forward(self, module, *args, **kwargs):
        out = self.fn_ref.original_forward(*args, **kwargs)
        io = self.cache.io
        self.cache.after_first_block(io.hidden(args, kwargs), io.output_hidden(out))
        return out


class LaterBlockHook(ModelHook):
    """Skips the block on a reusing pass; the last block adds the kept residual there, and keeps
    the new one on a pass that runs every block."""

    def __init__(self, cache: StepCache, last: bool):
        super().__init__()
        self.cache, self.last = cache, last

    def new_forward(self, module, *args, **kwargs):
        cache, io = self.cache, self.cache.io
        state = cache.state
        if state.reuse:
            hidden = io.hidden(args, kwargs)
            return io.skipped(args, kwargs, hidden + _extrapolated(state) if self.last else hidden)
        out = self.fn_ref.original_forward(*args, **kwargs)
        if self.last:
            state.rest_residual = io.output_hidden(out) - state.first_output
        return out


def _extrapolated(state: _PassState):
    """The kept rest residual, moved along its change between the last two full passes."""
    rest, earlier = state.rest_residual, state.earlier_rest
    if earlier is None or earlier.shape != rest.shape:
        return rest
    return rest + (rest - earlier) * (EXTRAPOLATION * state.since / state.gap)


@contextmanager
def step_cache_applied(blocks, config: StepCacheConfig | None, io: BlockIO):
    """The cache's hooks on `blocks` (at least two) while the context runs; yields the
    `StepCache`, or None when `config` is None (off). The hooks come off however it ends."""
    if config is None or len(blocks) < 2:
        yield None
        return
    cache = StepCache(config, io)
    hooked = list(blocks)
    _register(hooked[0], FirstBlockHook(cache))
    for i, block in enumerate(hooked[1:], start=1):
        _register(block, LaterBlockHook(cache, last=i == len(hooked) - 1))
    try:
        yield cache
    finally:
        for block in hooked:
            registry = getattr(block, "_diffusers_hook", None)
            if registry is not None and registry.get_hook(HOOK_NAME) is not None:
                registry.remove_hook(HOOK_NAME, recurse=False)


def _register(block, hook: ModelHook) -> None:
    HookRegistry.check_if_exists_or_initialize(block).register_hook(hook, HOOK_NAME)


def named_pass(cache: StepCache | None, name: str):
    """`cache.pass_named(name)`, or nothing when there is no cache."""
    return cache.pass_named(name) if cache is not None else nullcontext()
