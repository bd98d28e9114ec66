"""The one TOML + pydantic base under the config file, training recipes and sweep recipes:
strict models (an unknown key is an error), reading TOML, pydantic errors as one line naming the
file and the key, and a small TOML writer for resolved recipes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from llmdit_cli.errors import ConfigError


class StrictModel(BaseModel):
    """A TOML table: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def load_toml(path: Path, what: str = "config file") -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8: a binary file (an image given by mistake)
        raise ConfigError(f"{path}: cannot read as UTF-8 TOML ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def validation_error(exc: ValidationError, where: str, prefix: str = "") -> ConfigError:
    """A pydantic error as one line: the file (or table), the dotted key and what is wrong."""
    err = exc.errors()[0]
    key = prefix + ".".join(str(x) for x in err["loc"])
    if err["type"] == "extra_forbidden":
        return ConfigError(f"{where}: unknown key '{key}'")
    if not key:  # a rule across keys: its message names them
        return ConfigError(f"{where}: {str(err['msg']).removeprefix('Value error, ')}")
    value = err.get("input")
    shown = f" ({value!r})" if isinstance(value, (str, int, float, bool)) else ""
    return ConfigError(f"{where}: bad value for '{key}'{shown}: {err['msg']}")


def validated(model: type[BaseModel], doc: dict[str, Any], where: str):
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise validation_error(exc, where) from None


def dump_toml(doc: dict[str, Any]) -> str:
    """A small TOML writer for plain types (tables two deep, lists, scalars)."""
    lines: list[str] = []
    tables = []
    for key, value in doc.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        subs = {k: v for k, v in table.items() if isinstance(v, dict)}
        lines.append(f"\n[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
        for sub, values in subs.items():
            lines.append(f"\n[{name}.{sub}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")
