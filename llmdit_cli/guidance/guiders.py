"""Guidance methods as objects the denoise loop combines (the shape of `diffusers.guiders`).

Per step, each guider says which extra predictions it needs (`needs`: "uncond", the negative
prompt's; "skip", the conditional one with some blocks skipped); the loop runs those passes once,
and the guiders fold them into the prediction in their order (`combine`). A new method is one
class here (or in a family, for a model-specific one) and one line where the family builds its
guider list (its `DenoiseParams.guiders`: `families/zimage/denoise.py`, `families/qwenimage/t2i.py`);
the loop does not change.

Z-Image's list is `[ClassifierFreeGuidance, SkipLayerGuidance, CFGNormalization]`:

    v = v_pos + s * (v_pos - v_neg)           CFG, while s > 0 and progress <= truncation
    v = v + g * (v_pos - v_skip)              SLG, inside its window (guidance/slg.py)
    v = v * min(1, c * |v_pos| / |v|)         CFG normalisation, on the steps CFG ran
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

UNCOND, SKIP = "uncond", "skip"


@dataclass(frozen=True)
class Step:
    """Where the loop is: `index` of `steps` in the full schedule (img2img starts later), and
    `progress` = 1 - sigma (0 at pure noise)."""

    index: int
    steps: int
    progress: float


@dataclass
class Predictions:
    """One image's predictions at a step (float32); the extra ones are None when not run."""

    cond: Any
    uncond: Any = None
    skip: Any = None


class Guider:
    """A guidance method: no extra pass and no change, unless a subclass says otherwise."""

    def attach(self, blocks: list):
        """Hooks the method needs while the loop runs (removed however it ends)."""
        return nullcontext()

    def needs(self, step: Step) -> frozenset[str]:
        return frozenset()

    def extra_pass(self, name: str):
        """The context the loop runs pass `name` in, for the guider that asked for it."""
        return nullcontext()

    def combine(self, pred, p: Predictions, step: Step):
        return pred


@dataclass
class ClassifierFreeGuidance(Guider):
    """Z-Image's CFG: `pred + scale * (cond - uncond)`, off once progress passes `truncation`
    (ZImagePipeline's `cfg_truncation`; values above 1 never truncate)."""

    scale: float
    truncation: float = 1.0

    def active(self, step: Step) -> bool:
        return self.scale > 0 and not (self.truncation <= 1 and step.progress > self.truncation)

    def needs(self, step: Step) -> frozenset[str]:
        return frozenset({UNCOND}) if self.active(step) else frozenset()

    def combine(self, pred, p: Predictions, step: Step):
        if p.uncond is None:
            return pred
        return pred + self.scale * (p.cond - p.uncond)


@dataclass
class CFGNormalization(Guider):
    """Clamp the guided prediction's norm to `limit` times the conditional one's, on the steps
    the unconditional prediction ran (ZImagePipeline's `cfg_normalization`; 0 is off)."""

    limit: float

    def combine(self, pred, p: Predictions, step: Step):
        import torch

        if p.uncond is None or not self.limit or self.limit <= 0:
            return pred
        cap = torch.linalg.vector_norm(p.cond) * float(self.limit)
        norm = torch.linalg.vector_norm(pred)
        return pred * (cap / norm) if norm > cap else pred


class SkipLayerGuidance(Guider):
    """`pred + scale * (cond - skip)` inside the window of `config` (`slg.SLGConfig`), where the
    skip pass runs with the chosen blocks returning their input."""

    def __init__(self, config):
        self.config = config
        self.skipper = None

    @contextmanager
    def attach(self, blocks: list):
        from llmdit_cli.guidance.slg import LayerSkipper

        if not self.config.enabled:
            yield
            return
        self.skipper = LayerSkipper([blocks[i] for i in sorted(set(self.config.layers))])
        try:
            yield
        finally:
            self.skipper.remove()
            self.skipper = None

    def needs(self, step: Step) -> frozenset[str]:
        return frozenset({SKIP}) if self.config.active_at(step.index, step.steps) else frozenset()

    def extra_pass(self, name: str):
        return self.skipper.skipping() if name == SKIP and self.skipper is not None else nullcontext()

    def combine(self, pred, p: Predictions, step: Step):
        if p.skip is None:
            return pred
        return pred + self.config.scale * (p.cond - p.skip)


def needed(guiders: list[Guider], step: Step) -> frozenset[str]:
    return frozenset().union(*(g.needs(step) for g in guiders))


def pass_context(guiders: list[Guider], name: str, step: Step):
    """The context for extra pass `name`: that of the guider asking for it at this step."""
    for g in guiders:
        if name in g.needs(step):
            return g.extra_pass(name)
    return nullcontext()


def combine(guiders: list[Guider], p: Predictions, step: Step):
    """The guided prediction: the conditional one, folded through every guider in order."""
    pred = p.cond
    for g in guiders:
        pred = g.combine(pred, p, step)
    return pred
