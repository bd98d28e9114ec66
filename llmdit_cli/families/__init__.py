"""Model families: which pipeline a model folder holds, its defaults, and the code that runs it.

Each family is a package here (`zimage/`, `qwenimage/`) that registers its `Family` records when
imported (`register`); everything model-specific (config keys, classes, stage functions, limits)
stays inside its package. Generic code reaches a family only through this registry and the
contracts in `protocol.py` (`Limits`, the runner protocols), never by importing the package (an
import-linter contract checks it).

A folder picks its family by the `_class_name` of its `model_index.json` and its variant (a set of
defaults) by, in order: the folder's own `_llmdit_variant` key in `model_index.json`, the exact Hub
id, the family's base variant. A family does one `task` (text-to-image, layer decomposition, layer
editing): a folder given to a command of another task is refused in one line that names the
command for it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmdit_cli.errors import ModelError, UsageError, setting
from llmdit_cli.families.protocol import Limits, LoraKeys, Runner


@dataclass(frozen=True)
class Family:
    """A model family: the pipelines it serves, its variants' defaults, and its code.

    `variants` map a variant name to its defaults by setting field name (`width`, `slg_layers`,
    ...): values the settings leave unset (None) take them. `runner` names the module with the
    family's code (`protocol.Runner` and its task's protocol), imported only when a model runs.
    `task` names the work it does (`text-to-image`: encode, generate, img2img, decode, rewrite,
    train; `layer decomposition`; `layer editing`) and `command` the command that runs it.
    `features` are what a text-to-image family offers beyond generating (`FEATURES`); its runner
    then has the functions of the feature's protocol (`protocol.FEATURE_PROTOCOLS`)."""

    name: str
    pipelines: tuple[str, ...]
    variants: dict[str, dict[str, Any]]
    base_variant: str
    runner: str
    hub_variants: dict[str, str] = field(default_factory=dict)
    task: str = "text-to-image"
    command: str = "generate"
    features: frozenset[str] = frozenset()
    lora_keys: str | None = None  # the module that reads and writes its LoRA files (`protocol.LoraKeys`)

    def defaults(self, variant: str) -> dict[str, Any]:
        return self.variants[variant]

    def code(self) -> Runner:
        return importlib.import_module(self.runner)  # type: ignore[return-value]

    def lora_code(self) -> LoraKeys:
        """Its LoRA file reader and writer (the family's key names, alpha rules, fused layers)."""
        check_feature(self, "lora", "lora.loras", self.name)
        return importlib.import_module(self.lora_keys)  # type: ignore[return-value]


# What a text-to-image family may offer beyond generating, with how messages name each; generic
# code refuses a setting whose feature the model's family lacks (`check_feature`).
FEATURES = {
    "img2img": "img2img",
    "slg": "skip-layer guidance",
    "dype": "DyPE",
    "vision": "vision conditioning",
    "rewrite": "prompt rewriting or chat",
    "train": "training",
    "lora": "LoRAs",
    "control": "ControlNets",
    "inpaint": "inpainting (img2img with a mask)",
    "step_cache": "a step cache",
}

REGISTRY: list[Family] = []
# A Hub id no family knows is taken as this family's until its folder says otherwise.
DEFAULT_FAMILY = "z-image"


def register(family: Family) -> Family:
    REGISTRY.append(family)
    return family


def for_pipeline(class_name: str, ref: str) -> Family:
    for family in REGISTRY:
        if class_name in family.pipelines:
            return family
    known = ", ".join(p for f in REGISTRY for p in f.pipelines)
    raise ModelError(
        f"{setting('model')} {ref}: a {class_name or 'unnamed'} pipeline, which llmdit does not run (it runs {known})"
    )


def check_task(family: Family, task: str, ref: str, key: str = "model") -> None:
    """Refuse a model whose family does not do `task`, naming the command that runs it."""
    if task != family.task:
        raise ModelError(
            f"{setting(key)} {ref}: a {family.name} model ({', '.join(family.pipelines)}), not one for "
            f"{task}; `llmdit {family.command}` runs it"
        )


def check_feature(family: Family, feature: str, key: str, ref: str) -> None:
    """Refuse setting `key` when the family of model `ref` lacks `feature` (`FEATURES`)."""
    if feature not in family.features:
        raise UsageError(f"{setting(key)}: {family.name} models ({ref}) do not take {FEATURES[feature]}")


def identify(folder: Path, ref: str) -> tuple[Family, str]:
    """The family and variant of a diffusers folder (its model_index.json)."""
    from llmdit_cli.models.refs import read_json

    index = read_json(folder / "model_index.json", ref, "model_index.json")
    family = for_pipeline(str(index.get("_class_name", "")), ref)
    variant = index.get("_llmdit_variant") or family.hub_variants.get(ref) or family.base_variant
    if variant not in family.variants:
        raise ModelError(
            f"{setting('model')} {ref}: unknown {family.name} variant {variant!r} in model_index.json "
            f"(known: {', '.join(family.variants)})"
        )
    return family, variant


def mark_variant(folder: Path, variant: str) -> None:
    """Record in a folder's model_index.json which variant's defaults it takes (diffusers ignores
    keys that start with `_`)."""
    import json

    path = folder / "model_index.json"
    index = json.loads(path.read_text())
    index["_llmdit_variant"] = variant
    path.write_text(json.dumps(index, indent=2) + "\n")


def identify_ref(ref: str) -> tuple[Family, str]:
    """Family and variant for a reference, without downloading: a local folder (or `demo`) is read;
    a Hub id is looked up in the families' known repos, and is otherwise taken as the first
    default family's base variant (loading a model reads its folder: `identify`)."""
    from llmdit_cli.models.refs import is_local, resolve_folder

    for family in REGISTRY:
        if ref in family.hub_variants:
            return family, family.hub_variants[ref]
    if is_local(ref):
        return identify(resolve_folder(ref)[0], ref)
    default = by_name(DEFAULT_FAMILY)
    return default, default.base_variant


def by_name(name: str) -> Family:
    return next(f for f in REGISTRY if f.name == name)


from llmdit_cli.families import qwenimage, zimage  # noqa: E402 - registers the families

__all__ = [
    "Family",
    "Limits",
    "Runner",
    "REGISTRY",
    "FEATURES",
    "by_name",
    "check_feature",
    "check_task",
    "for_pipeline",
    "identify",
    "identify_ref",
    "mark_variant",
    "qwenimage",
    "register",
    "zimage",
]
