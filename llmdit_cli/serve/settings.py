"""A request's `llmdit` object -> resolved settings, and setting keys -> the request's field names.

A request names a setting as the CLI's flag without its dashes (`slg_scale` or `slg-scale` for
`--slg-scale`, `lora` for `--lora`); the server's own settings (its model, devices, dtype, the
config file) are the base and a request cannot change them. Library messages name settings by key
(`errors.setting`); `field_name` turns a key into the request field a client must fix.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmdit_cli.errors import LlmditError, marked_keys, render

# Sections a request may set, per endpoint.
ENCODE_SECTIONS = ("encoder",)
GENERATE_SECTIONS = ("encoder", "generation", "scheduler", "lora", "slg", "dype", "vl", "control")
# Settings of other sections an images request may give: the step cache changes the pixels.
GENERATE_EXTRA = ("optimization.step_cache", "optimization.step_cache_threshold")
# Which model loads is the server's choice (`catalog.SERVER_ONLY`), and how many images share a
# forward (`--max-batch`).
NOT_SETTABLE = (
    "vl.model",
    "vl.device",
    "layered.model",
    "layered.edit_model",
    "control.model",
    "generation.batch_size",
)
# Settings that name an image: a request sends it (a data URL or `upload:NAME`), never a path.
IMAGE_FIELDS = ("vl_image", "control_image", "mask")
# Settings a request may also give as text, converted by `converted`: one LoRA name, SLG layers as "7,8".
LOOSE_FIELDS = ("loras", "slg_layers")
ENCODE_EXTRA = ("generation.negative_prompt",)
SIZE_KEYS = ("generation.width", "generation.height")
# Request names of the settings, where they differ from the setting's flag name: the server's own
# choice (`lora`, as a client writes one LoRA, and as the command line spells `--lora`).
PUBLIC_NAMES = {"loras": "lora"}
MAX_LORA_SCALE = 4.0


class ApiError(Exception):
    """A request the server refuses: HTTP `status`, a message, the request field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


@dataclass
class ServerSettings:
    """What the server was started with: its settings flags (model, devices, ...) and limits."""

    flags: dict[str, Any]
    config: str | None = None
    profile: str | None = None
    lora_dir: Path | None = None
    # Setting field -> the name requests use, where it differs (`PUBLIC_NAMES`).
    public: dict[str, str] = field(default_factory=lambda: dict(PUBLIC_NAMES))
    # The server's own settings, resolved once: editing the config file while serving changes
    # nothing (it would silently load a second copy of the model).
    resolved: Any = field(default=None, repr=False)
    uploads: Path | None = None  # where images clients send are kept (`uploads.py`)
    max_image_bytes: int = 16 << 20

    def base(self):
        """The server's settings (config file, profile, environment, its flags), resolved once."""
        if self.resolved is None:
            from llmdit_cli.config import resolve

            try:
                self.resolved = resolve(self.config, self.profile, self.flags)
            except LlmditError as exc:
                raise ApiError(500, str(exc), kind="server_error") from None
        return self.resolved

    def public_name(self, field_name: str) -> str:
        return self.public.get(field_name, field_name)

    def field_name(self, key: str) -> str:
        """The request field of a setting key (`generation.width` -> `size`)."""
        from llmdit_cli.config import KEY_FLAG

        if key in SIZE_KEYS:
            return f"size ({key.split('.')[1]})"
        if key == "model":
            return "model"
        return "llmdit." + self.public_name(KEY_FLAG.get(key, key))

    def message(self, exc: Exception) -> tuple[str, str | None]:
        """An llmdit error's message with settings named as request fields, and the first one."""
        raw = self.without_paths(str(exc.args[0]) if exc.args else "")
        keys = marked_keys(raw)
        param = self.field_name(keys[0]).split(" ")[0] if keys else None
        return render(raw, self.field_name), param

    def without_paths(self, text: str) -> str:
        """`text` with the server's LoRA folder left out of the paths it names: a client names a
        LoRA by its name in that folder and never learns where the folder is."""
        import os

        if self.lora_dir is None:
            return text
        for folder in {str(self.lora_dir.resolve()), str(self.lora_dir)}:
            text = text.replace(folder.rstrip(os.sep) + os.sep, "")
        return text

    def resolve(self, llmdit: dict[str, Any], sections: tuple[str, ...], extra: tuple[str, ...] = ()):
        """The server's settings (`base`) with the request's `llmdit` settings on top (checked)."""
        from llmdit_cli.config import FLAG_KEY

        flags: dict[str, Any] = {}
        by_public = {self.public_name(f): f for f in FLAG_KEY}
        for name, value in llmdit.items():
            wanted = name.replace("-", "_")
            field_ = by_public.get(wanted, wanted if wanted in FLAG_KEY else None)
            key = FLAG_KEY.get(field_ or "")
            if key is None or key in NOT_SETTABLE or not (key.split(".")[0] in sections or key in extra):
                raise ApiError(400, f"unknown or not settable here: llmdit.{name}", f"llmdit.{name}")
            if isinstance(value, bool) and not _is_bool_setting(key):
                raise ApiError(400, f"llmdit.{name}: {value} is not a value for this setting", f"llmdit.{name}")
            problem = None if field_ in LOOSE_FIELDS and isinstance(value, str) else _type_problem(key, value)
            if problem:
                raise ApiError(400, f"llmdit.{name}: {json.dumps(value)[:80]}: {problem}", f"llmdit.{name}")
            flags[field_] = self.converted(field_, value, f"llmdit.{name}")
        try:
            return self.base().with_flags(flags)
        except LlmditError as exc:
            message, param = self.message(exc)
            raise ApiError(400, message, param) from None

    def check_template(self, r) -> None:
        """The request's template (`llmdit.template`) exists here: a bad name is a 400 before the
        request waits its turn, not a failed job after."""
        from llmdit_cli.prompt_templates import find

        if r.encoder.template:
            try:
                find(r.encoder.template, r.templates.dir)
            except LlmditError as exc:
                raise ApiError(400, *self.message(exc)) from None

    def converted(self, field_: str, value: Any, where: str) -> Any:
        """A request's value as the setting takes it: LoRA names as files in --lora-dir, SLG
        layers from text, a vision image as the kept upload's path."""
        from llmdit_cli.config import parse_layers

        if field_ == "loras":
            return self.lora_specs(value)
        if field_ == "slg_layers" and isinstance(value, str):
            try:
                return parse_layers(value)
            except LlmditError as exc:
                raise ApiError(400, *self.message(exc)) from None
        if field_ in IMAGE_FIELDS and value is not None:
            from llmdit_cli.serve.uploads import image_setting

            return image_setting(value, self.uploads, where, self.max_image_bytes)
        return value

    def lora_specs(self, value: Any) -> list[str]:
        """`name[:scale]` entries as paths in the server's --lora-dir (never outside it)."""
        from llmdit_cli.models.lora_stack import parse_lora_spec

        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise ApiError(400, "llmdit.lora: a list of 'NAME[:SCALE]' strings", "llmdit.lora")
        if items and self.lora_dir is None:
            raise ApiError(400, "llmdit.lora: this server allows no LoRAs (start it with --lora-dir)", "llmdit.lora")
        specs = []
        for item in items:
            name, scale = parse_lora_spec(item)
            if not (math.isfinite(scale) and abs(scale) <= MAX_LORA_SCALE):
                raise ApiError(400, f"llmdit.lora: scale {scale} of {name!r} is not in [-4, 4]", "llmdit.lora")
            try:
                path = (self.lora_dir / name).resolve()
                found = self.lora_dir.resolve() in path.parents and path.is_file()
            except (OSError, ValueError):
                found = False
            if not found:
                raise ApiError(400, f"llmdit.lora: no LoRA {name!r} in the server's LoRA folder", "llmdit.lora")
            # Rounded: near-equal scales share one loaded model (each LoRA set is a model).
            specs.append(f"{path}:{round(scale, 2)}")
        return specs

    def client_record(self, record: dict[str, Any]) -> dict[str, Any]:
        """An image's settings as the client sees them: its LoRAs named as requests name them
        (inside --lora-dir, with their scale), never by the server's own paths; a LoRA from the
        server's own settings, outside --lora-dir, by its file name."""
        from llmdit_cli.models.lora_stack import parse_lora_spec
        from llmdit_cli.serve.uploads import client_name

        if (record.get("vl") or {}).get("image"):
            record = {**record, "vl": {**record["vl"], "image": client_name(record["vl"]["image"], self.uploads)}}
        for name in ("control_image", "mask"):
            if record.get(name):
                record = {**record, name: client_name(record[name], self.uploads)}
        if not record.get("loras"):
            return record
        root = self.lora_dir.resolve() if self.lora_dir is not None else None
        names = []
        for spec in record["loras"]:
            path, scale = parse_lora_spec(spec)
            where = Path(path).resolve()
            name = where.relative_to(root).as_posix() if root and root in where.parents else where.name
            names.append(f"{name}:{scale:g}")
        return {**record, "loras": names}


def _type_problem(key: str, value: Any) -> str | None:
    """What is wrong with the type of a request's `value` for setting `key` (JSON has types: "8"
    is not a number of steps, nor 1 a switch), or None."""
    from pydantic import ValidationError

    try:
        _adapter(key).validate_python(value, strict=True)
    except ValidationError as exc:
        return exc.errors()[0]["msg"].lower()
    return None


@functools.cache
def _adapter(key: str):
    """The validator of setting `key`'s type (built once: a request may name many settings)."""
    from pydantic import TypeAdapter

    from llmdit_cli.config import SECTIONS

    section, _, name = key.partition(".")
    return TypeAdapter(SECTIONS[section].model_fields[name].annotation)


def _is_bool_setting(key: str) -> bool:
    from llmdit_cli.config import SECTIONS

    section, _, name = key.partition(".")
    return "bool" in str(SECTIONS[section].model_fields[name].annotation)


def parse_image_size(size: str | None) -> tuple[int, int] | None:
    """'WxH' -> (width, height), 'auto' -> None (the model's default); the engine checks the
    multiple the model needs and names `size`."""
    import re

    if size is None or size.strip() == "auto":
        return None
    m = re.fullmatch(r"\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*", size)
    if not m:
        raise ApiError(400, f"size {size!r}: expected WIDTHxHEIGHT (e.g. 1024x1024) or auto", "size")
    return int(m.group(1)), int(m.group(2))
