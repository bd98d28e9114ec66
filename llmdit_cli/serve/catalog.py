"""`GET /v1/llmdit/settings`: every setting a request may give, described for clients and for the
studio page, which builds its form from it.

A setting is described as `{key, name, section, panel, type, default, model_default, choices,
min, max, help}`: `key` is the config key (`slg.layers`), `name` the field of a request's
`llmdit` object (`slg_layers`), `default` the built-in value and `model_default` what the
served model uses when the request leaves it out (its family's default, the server's config).
Help texts and panels are the CLI's (`setting_help.py`), so the page reads like `--help`.
"""

from __future__ import annotations

import typing
from typing import Any

from llmdit_cli.serve.settings import PUBLIC_NAMES, ServerSettings

SECTIONS = ("encoder", "vl", "generation", "control", "scheduler", "lora", "slg", "dype", "layered")
# Which model or component to load is the server's choice, never a request's (a Hub id would
# download; a folder would be a path on the server).
SERVER_ONLY = (
    "vl.model",
    "vl.device",
    "layered.model",
    "layered.edit_model",
    "control.model",
    "generation.batch_size",  # the server's --max-batch
)
# The page's own request fields that are not settings (the seed, given per request)
SEED = {
    "key": "seed",
    "name": "seed",
    "section": "generation",
    "panel": "Generation",
    "type": "integer",
    "default": None,
    "model_default": None,
    "choices": None,
    "min": 0,
    "max": 2**63 - 1,
    "help": "Seed. Default: a random seed (recorded with the image).",
}


def request_keys() -> list[str]:
    """Every setting key a request may give (in the sections' field order)."""
    from llmdit_cli.config import SECTIONS as CONFIG_SECTIONS
    from llmdit_cli.serve.settings import GENERATE_EXTRA

    keys = [f"{s}.{f}" for s in SECTIONS for f in CONFIG_SECTIONS[s].model_fields] + list(GENERATE_EXTRA)
    return [k for k in keys if k not in SERVER_ONLY]


def describe_settings(settings: ServerSettings, model_defaults: dict[str, Any]) -> list[dict[str, Any]]:
    """Each request-time setting, grouped by help panel in the CLI's order, the seed first in its panel."""
    from llmdit_cli.setting_help import PANELS

    described = [describe(key, settings, model_defaults) for key in request_keys()]
    described.append(SEED)
    order = {panel: i for i, panel in enumerate(PANELS)}
    # sorted() is stable: within a panel, settings keep the config's field order
    return sorted(described, key=lambda d: order.get(d["panel"], len(order)))


def describe(key: str, settings: ServerSettings, model_defaults: dict[str, Any]) -> dict[str, Any]:
    from llmdit_cli.config import KEY_FLAG
    from llmdit_cli.config import SECTIONS as CONFIG_SECTIONS
    from llmdit_cli.setting_help import HELP

    section, _, field_ = key.partition(".")
    info = CONFIG_SECTIONS[section].model_fields[field_]
    flag = KEY_FLAG[key]
    facts = HELP.get(flag, {})
    low, high = bounds(info)
    default = info.default if not callable(info.default) else None
    return {
        "key": key,
        "name": settings.public_name(flag),
        "section": section,
        "panel": facts.get("panel", section),
        "type": type_name(info.annotation),
        "default": default,
        "model_default": model_defaults.get(key, default),
        "choices": choices(info.annotation),
        "min": low,
        "max": high,
        "help": facts.get("help", ""),
    }


def type_name(annotation: Any) -> str:
    """JSON-ish type of a settings field: boolean, integer, number, string, or list[...]."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is list:
        return f"list[{type_name(args[0])}]"
    if origin is typing.Literal:
        return type_name(type(args[0]))
    if args and origin is not None:  # Optional[X] / X | None
        return type_name(args[0])
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(annotation, "string")


def choices(annotation: Any) -> list[Any] | None:
    """A `Literal` field's values; a bounded whole number that may also be a word (`layered.layers`:
    2 to 10 or auto) lists the word, then every number."""
    for a in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(a) is typing.Literal:
            words = list(typing.get_args(a))
            low, high = _bounds_of(_metadata(annotation))
            return words + list(range(int(low), int(high) + 1)) if a is not annotation and low and high else words
    return None


def _metadata(annotation: Any) -> list:
    """The constraints of an `Annotated` member of a union (`Annotated[int, Field(ge=2)] | ...`)."""
    found = [m for a in typing.get_args(annotation) for m in getattr(a, "__metadata__", ())]
    return [c for m in found for c in (getattr(m, "metadata", None) or [m])]  # a FieldInfo holds its own


def bounds(info) -> tuple[float | None, float | None]:
    """The field's lower and upper bound (pydantic's ge/gt, le/lt constraints)."""
    return _bounds_of([*info.metadata, *_metadata(info.annotation)])


def _bounds_of(metadata: list) -> tuple[float | None, float | None]:
    found = {
        name: getattr(m, name)
        for m in metadata
        for name in ("ge", "gt", "le", "lt")
        if getattr(m, name, None) is not None
    }
    low = found.get("ge", found.get("gt"))
    high = found.get("le", found.get("lt"))
    return low, high


def served_defaults(settings: ServerSettings, handle) -> dict[str, Any]:
    """By key: what the served model uses for each setting a request leaves out (the server's
    settings, then its family's defaults; the layer settings from the layered model's family)."""
    from llmdit_cli.config import FLAG_KEY
    from llmdit_cli.families import identify_ref
    from llmdit_cli.workflows import fill_family_defaults

    base = settings.base()
    r = fill_family_defaults(base, handle.defaults(), handle.variant)
    out = {key: value for key, value in r.values.items()}
    try:
        family, variant = identify_ref(base.layered.model)
        layered = family.defaults(variant)
    except Exception:  # noqa: BLE001 - a layered model that cannot be identified: no family defaults shown
        layered = {}
    for flag, value in layered.items():
        key = FLAG_KEY.get(flag, "")
        if key.startswith("layered.") and out.get(key) is None:
            out[key] = value
    return out


def request_of(record: dict[str, Any]) -> dict[str, Any]:
    """The `llmdit` settings (and seed) that make an image again, from its settings record: what
    the page's "reuse" fills its form with."""
    from llmdit_cli.config import KEY_FLAG

    out: dict[str, Any] = {}
    for key in request_keys():
        section, _, field_ = key.partition(".")
        if section == "encoder":
            value = (record.get("encoder") or {}).get(field_)
        elif section == "vl":
            value = (record.get("vl") or {}).get(field_)
        elif section == "layered":
            continue
        else:
            value = record.get(KEY_FLAG[key])
        if value is not None and value != []:
            out[PUBLIC_NAMES.get(KEY_FLAG[key], KEY_FLAG[key])] = value
    if isinstance(record.get("seed"), int):
        out["seed"] = record["seed"]
    return out
