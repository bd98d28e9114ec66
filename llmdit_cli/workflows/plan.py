"""The plan of a request: the model handle for it, what the model family fills in (its defaults,
its VL model, the layer models' offload on CUDA), and the chat formatting it asks for."""

from __future__ import annotations

from typing import Any

from llmdit_cli.config import Resolved
from llmdit_cli.models import ModelHandle, Placement
from llmdit_cli.prompts import ChatFormat


def open_model(r: Resolved) -> ModelHandle:
    """The model handle (nothing loaded yet) for resolved settings."""
    s = r.settings
    return ModelHandle(s.model, Placement(**s.optimization.placement()), list(s.lora.loras), key=r.model_setting)


def fill_family_defaults(r: Resolved, defaults: dict[str, Any], label: str) -> Resolved:
    """The plan with its unset settings taken from the model family's defaults (`families`),
    named `label`; with SLG off the family's SLG scale does not apply."""
    if "slg_scale" in defaults and not r["slg"]:
        r = r.with_defaults({"slg_scale": 0.0}, "default (SLG off; slg.enabled or slg.scale > 0 turns it on)")
    return r.with_defaults(defaults, f"model family {label}")


def layer_plan(r: Resolved, model_key: str) -> Resolved:
    """The plan of a layer task, run by the model that setting `model_key` names
    (`layered.model`, `layered.edit_model`). LoRAs and a single-file transformer from the config
    are Z-Image's, so they stay off."""
    r = r.with_model(model_key)
    r = r.with_value("loras", [], "default (the layer commands take no LoRA)")
    return r.with_value("transformer_file", None, "default (the layer commands take no single-file transformer)")


def chat_format(r: Resolved):
    """The chat formatting the settings ask for, and the template it came from (or None): a
    template fills the system prompt, thinking and assistant text left unset, and the thinking
    switch unless it was set."""
    from llmdit_cli.prompt_templates import find

    s = r.settings
    e = s.encoder
    if not e.template:
        return ChatFormat(e.system_prompt, e.thinking_content, e.enable_thinking, e.assistant_content), None
    t = find(e.template, s.templates.dir)
    thinking = e.enable_thinking if _chosen(r, "encoder.enable_thinking") else t.meta.enable_thinking
    return ChatFormat(
        e.system_prompt if _chosen(r, "encoder.system_prompt") else t.system,
        e.thinking_content if e.thinking_content is not None else t.meta.thinking_content,
        thinking,
        e.assistant_content if e.assistant_content is not None else t.meta.assistant_content,
    ), t


def _chosen(r: Resolved, key: str) -> bool:
    """Whether the caller chose `key` (a flag, config, environment, stored settings): a template
    fills what is left to the defaults or the model family (its system prompt, say)."""
    source = r.sources.get(key, "default")
    return source != "default" and not source.startswith("model family")


def fill_layer_defaults(r: Resolved, handle: ModelHandle) -> Resolved:
    """The family's defaults for what the settings leave unset, and model CPU offload on CUDA where
    `optimization.cpu_offload` is still at its built-in default (these models do not fit most
    GPUs whole)."""
    defaults = dict(handle.defaults())
    offload = defaults.pop("cpu_offload", None)
    r = fill_family_defaults(r, defaults, handle.variant)
    key = "optimization.cpu_offload"
    if offload and r.sources.get(key) == "default" and _uses_cuda(r):
        r = r.with_value(key, offload, f"model family {handle.variant} (on CUDA)")
        handle.placement.cpu_offload = offload
    return r


def _uses_cuda(r: Resolved) -> bool:
    return Placement(**r.optimization.placement()).base_device().startswith("cuda")
