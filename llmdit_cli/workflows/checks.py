"""The checks of a request, once, before anything loads: the settings' own values, what the model's
family offers and what its configs allow (`beyond_limits`: requests refuse, sweeps leave cells out)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmdit_cli.config import Resolved
from llmdit_cli.errors import UsageError, setting
from llmdit_cli.families import check_feature
from llmdit_cli.models import ModelHandle


@dataclass(frozen=True)
class Beyond:
    """A setting the model cannot take: its key, the value shown, and why."""

    key: str
    value: Any
    why: str


def beyond_limits(s, lim, model: str = "the model") -> list[Beyond]:
    """The settings (`config.Settings`; values left unset are the family's, which fit) that go
    beyond what the model can take (`lim`: its `Limits`), read from its configs: nothing loads.
    Requests refuse the first (`check_limits`); sweeps leave such cells out. `model` names the
    model in the messages."""
    found = []
    n, e = lim.text_hidden_states, s.encoder
    if e.hidden_layer is not None and not -n <= e.hidden_layer < n:
        found.append(
            Beyond(
                "encoder.hidden_layer", e.hidden_layer, f"the text encoder has {n} hidden states (valid: {-n}..{n - 1})"
            )
        )
    slg_on = s.slg.enabled or (s.slg.scale or 0) > 0
    bad = [i for i in (s.slg.layers or []) if not 0 <= i < lim.blocks] if slg_on else []
    if bad:
        found.append(
            Beyond(
                "slg.layers",
                ",".join(map(str, bad)),
                f"the transformer has {lim.blocks} layers (indices 0-{lim.blocks - 1})",
            )
        )
    if e.caption_length and lim.caption_tokens and e.caption_length > lim.caption_tokens:
        found.append(
            Beyond(
                "encoder.caption_length",
                e.caption_length,
                f"{model} takes at most {lim.caption_tokens} caption tokens",
            )
        )
    return found


def check_limits(r: Resolved, handle: ModelHandle, sections: tuple[str, ...] | None = None) -> None:
    """Refuse the first setting beyond the model (`beyond_limits`; of `sections` only, when
    given), named as it was given."""
    for b in beyond_limits(r.settings, handle.limits(), f"{setting('model')} {handle.ref}"):
        if sections is None or b.key.split(".")[0] in sections:
            raise UsageError(f"{r.origin(b.key)} {b.value}: {b.why}")


def validate_encoding(r: Resolved, handle: ModelHandle) -> None:
    """What encoding needs checked, once per request and before the text encoder loads."""
    if r.vl.image:
        check_feature(handle.family, "vision", "vl.image", handle.ref)
    if r.vl.device:
        from llmdit_cli.models.placement import check_device

        check_device(r.vl.device, setting("vl.device"))
    check_limits(r, handle, ("encoder",))


def validate(r: Resolved, handle: ModelHandle, report=None) -> None:
    """Every check of a generation request, once, before anything loads (family defaults filled):
    the settings' own ranges, what the model's family offers and what its configs allow. The
    stages assume what passed here."""
    check_generation(r, handle.limits())
    _check_features(r, handle)
    validate_encoding(r, handle)
    check_limits(r, handle)
    check_guidance(r, handle, report)


def check_control(r: Resolved, handle: ModelHandle, mode: str, report=None) -> None:
    """ControlNet and mask settings, before anything loads: both halves of a ControlNet given,
    the images readable, the ControlNet fitting the transformer, the family offering each."""
    from llmdit_cli.vision import open_image

    c, g = r.control, r.generation
    if c.image and not c.model:
        raise UsageError(f"{setting('control.image')} needs {setting('control.model')} (the ControlNet it steers)")
    if g.mask and mode != "img2img":
        raise UsageError(f"{setting('generation.mask')} is for img2img: it marks what to repaint of the input image")
    if c.model:
        check_feature(handle.family, "control", "control.model", handle.ref)
        if r.optimization.step_cache != "none":
            # ControlNet samples join between blocks, where a reusing pass has no blocks running.
            raise UsageError(f"{setting('optimization.step_cache')} does not combine with {setting('control.model')}")
        open_image(c.image, setting("control.image"))
        handle.code.check_controlnet(c.model, handle.component_config("transformer"), handle.ref, inpaint=bool(g.mask))
    if g.mask:
        check_feature(handle.family, "inpaint", "generation.mask", handle.ref)
        mask = open_image(g.mask, setting("generation.mask"))
        if report is not None and mask.size != (g.width, g.height):
            report.hint(
                f"{setting('generation.mask')} is {mask.width}x{mask.height}, the image {g.width}x{g.height}: "
                f"the mask is resized to it (nearest)"
            )


def check_size(value: int, label: str, multiple: int) -> None:
    if value < multiple or value % multiple:
        raise UsageError(f"{label} {value}: must be a positive multiple of {multiple}")


def check_generation(r: Resolved, lim) -> None:
    """Values each setting must have (sides on the model's token grid, `lim`: its `Limits`); a
    message names the setting and, unless the caller gave it, where its value came from."""
    g = r.generation
    for side in ("width", "height"):
        check_size(getattr(g, side), label=r.origin(side), multiple=lim.size_multiple)


def check_guidance(r: Resolved, handle: ModelHandle, out=None) -> None:
    """Refuse SLG/DyPE settings this model cannot run (before it loads); hint at ones with no effect."""
    from llmdit_cli.guidance.dype import DyPEConfig, check_dype
    from llmdit_cli.guidance.slg import SLGConfig, check_slg

    lim = handle.limits()
    slg = SLGConfig.from_settings(r.slg)
    check_slg(slg)
    dype = DyPEConfig.from_settings(r.dype, lim)
    if dype is not None:
        check_dype(dype)
    if out is None:
        return
    g, d = r.generation, r.dype
    _hint_unused(r, out, "slg", "SLG", slg.enabled, _slg_switch(r))
    _hint_unused(r, out, "dype", "DyPE", dype is not None, setting("dype.enabled"))
    if slg.enabled and not any(slg.active_at(i, g.steps) for i in range(g.steps)):
        out.hint(
            f"SLG window {slg.start:g}-{slg.stop:g} holds none of the {g.steps} steps, so SLG does "
            f"nothing; widen {setting('slg.start')}/{setting('slg.stop')}"
        )
    if dype is not None and max(g.width, g.height) <= d.base_resolution:
        out.hint(
            f"{setting('dype.enabled')} changes nothing at {g.width}x{g.height}: it acts above the base "
            f"resolution {d.base_resolution} px ({setting('dype.base_resolution')})"
        )
    trained = lim.trained_size
    if not d.enabled and trained and max(g.width, g.height) > trained:
        out.hint(
            f"{g.width}x{g.height} is beyond the {trained} px the position embedding of {setting('model')} "
            f"{handle.ref} covers; positions are extrapolated (try {setting('dype.enabled')})"
        )


def _check_features(r: Resolved, handle: ModelHandle) -> None:
    """Refuse settings for what the model's family does not offer (`families.FEATURES`)."""
    s = r.settings
    slg_on = s.slg.enabled or (s.slg.scale or 0) > 0
    wanted = {
        "slg": (slg_on, "slg.enabled"),
        "dype": (s.dype.enabled, "dype.enabled"),
        "lora": (s.lora.loras, "lora.loras"),
        "step_cache": (s.optimization.step_cache != "none", "optimization.step_cache"),
    }
    for feature, (on, key) in wanted.items():
        if on:
            check_feature(handle.family, feature, key, handle.ref)


def _slg_switch(r: Resolved) -> str:
    """How SLG would be on, said for what was given: the switch, or its scale."""
    if r.slg.enabled:  # switched on, but the scale (given, or the family's) is 0
        return f"{setting('slg.scale')} > 0"
    if r.sources.get("slg.enabled", "default") != "default":
        return f"{setting('slg.enabled')}, which was switched off"
    return f"{setting('slg.enabled')} or {setting('slg.scale')} > 0"


def _hint_unused(r: Resolved, out, section: str, label: str, on: bool, switch: str) -> None:
    # A switch given as off is not a setting left unused: it did what it says.
    given = [k for k in r.given(section) if not (k == f"{section}.enabled" and r.values[k] is False)]
    if given and not on:
        out.hint(f"{', '.join(setting(k) for k in given)} given, but {label} is off; switch it on with {switch}")
