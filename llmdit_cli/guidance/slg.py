"""Skip-layer guidance (SLG), written as a diffusers model hook; `guiders.SkipLayerGuidance` is the
guider that runs it in the denoise loop.

Inside the window `start <= step / steps < stop` one more forward pass runs on the conditional
batch with the transformer blocks in `layers` skipped (each returns its input unchanged), and

    v = v_pos + g * (v_pos - v_neg) + s * (v_pos - v_skip)

where `g` is the CFG scale (the CFG term is absent when CFG is off) and `s` the SLG scale. The
skip pass shows what the prediction looks like without those blocks' structure; pushing away from
it sharpens anatomy and layout. Outside the window, or with `s = 0`, nothing changes and no extra
pass runs.

diffusers' own `apply_layer_skip` cannot skip a whole Z-Image block (the block names its input
`x`, not `hidden_states`), so the hook here returns the block's first argument itself.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

from diffusers.hooks import HookRegistry, ModelHook

from llmdit_cli.errors import UsageError, setting

HOOK_NAME = "llmdit_skip_layer"


@dataclass
class SLGConfig:
    scale: float = 0.0
    layers: list[int] = field(default_factory=list)
    start: float = 0.0
    stop: float = 1.0

    @classmethod
    def from_settings(cls, slg) -> SLGConfig:
        """From the `slg` settings section (family defaults filled; a family without SLG leaves
        them unset, which is off)."""
        start, stop = slg.start if slg.start is not None else 0.0, slg.stop if slg.stop is not None else 1.0
        return cls(scale=slg.scale or 0.0, layers=list(slg.layers or []), start=start, stop=stop)

    @property
    def enabled(self) -> bool:
        return self.scale > 0 and bool(self.layers)

    def active_at(self, step: int, steps: int) -> bool:
        """Whether step `step` (0-based) of `steps` lies in the window."""
        return self.enabled and self.start <= step / steps < self.stop


def check_slg(config: SLGConfig) -> None:
    """Refuse settings that cannot run on any model, naming the flag (blocks the model lacks:
    `workflows.beyond_limits`)."""
    if config.scale < 0:
        raise UsageError(f"{setting('slg.scale')} {config.scale}: must be 0 (off) or positive")
    if not 0.0 <= config.start <= config.stop <= 1.0:
        raise UsageError(
            f"{setting('slg.start')} {config.start} / {setting('slg.stop')} {config.stop}: need 0 <= start <= stop <= 1"
        )
    if config.scale == 0:
        return  # off: the family's layer list need not fit this model
    if not config.layers:
        raise UsageError(f"{setting('slg.scale')} > 0 needs {setting('slg.layers')} (indices of transformer blocks)")


class _Switch:
    on = False


class SkipBlockHook(ModelHook):
    """Makes a transformer block return its input unchanged while the shared switch is on."""

    def __init__(self, switch: _Switch):
        super().__init__()
        self.switch = switch

    def new_forward(self, module, *args, **kwargs):
        if self.switch.on:
            return args[0] if args else kwargs["x"]
        return self.fn_ref.original_forward(*args, **kwargs)


class LayerSkipper:
    """Hooks on the chosen blocks; `skipping()` turns the skip on for one forward pass."""

    def __init__(self, blocks: list):
        self.blocks = blocks
        self.switch = _Switch()
        for block in blocks:
            HookRegistry.check_if_exists_or_initialize(block).register_hook(SkipBlockHook(self.switch), HOOK_NAME)

    @contextmanager
    def skipping(self):
        self.switch.on = True
        try:
            yield
        finally:
            self.switch.on = False

    def remove(self) -> None:
        for block in self.blocks:
            registry = getattr(block, "_diffusers_hook", None)
            if registry is not None and registry.get_hook(HOOK_NAME) is not None:
                registry.remove_hook(HOOK_NAME, recurse=False)
        self.blocks = []
