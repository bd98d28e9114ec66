from __future__ import annotations

from typing import Annotated

import typer

from llmdit_cli.cli.common import settings
from llmdit_cli.cli.errors import handle_errors
from llmdit_cli.cli.options import (
    ConfigOpt,
    ProfileOpt,
)
from llmdit_cli.cli.output import Output

FileArg = Annotated[
    str,
    typer.Argument(
        help="An embeds or latents file, a PNG made by llmdit, or a layer folder ('-' for stdin).",
        show_default=False,
    ),
]


@handle_errors
def inspect(
    file: FileArg,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
):
    """Show a stage file's header, a PNG's settings, or a layer folder's record.

    The header of an embeds / latents file, the settings stored in a PNG made by llmdit, or the
    record (layers.json) of a layer folder from `llmdit decompose`.

    Reads headers only: no model, no torch.
    """
    import json
    from pathlib import Path

    from llmdit_cli.layerstack import read_stack

    out = Output()
    settings(config, profile)  # a bad config or profile is reported here as everywhere
    if file != "-" and Path(file).is_dir():
        info = read_stack(file).record
    else:
        info = _file_info(file)
    if json_out:
        out.data(json.dumps(info, indent=2, sort_keys=True))
        return
    for line in _lines(info):
        out.data(line)


def _file_info(file: str) -> dict:
    from llmdit_cli.artifacts import parse_stage, read_bytes
    from llmdit_cli.pngmeta import settings_of

    data, name = read_bytes(file, "a stage file or PNG")
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        info = {"kind": "png", "settings": settings_of(data, name)}
    else:
        stage = parse_stage(data, name)
        info = {
            "kind": stage.kind,
            "schema": stage.schema,
            "header": {
                k.removeprefix("llmdit."): v
                for k, v in stage.meta.items()
                if k.startswith("llmdit.") and k not in ("llmdit.params", "llmdit.kind", "llmdit.schema")
            },
            "tensors": {k: {"shape": stage.shapes[k], "dtype": stage.dtypes[k]} for k in sorted(stage.shapes)},
            "params": stage.params,
        }
    return info


def _lines(info: dict, indent: str = "") -> list[str]:
    """YAML-like: nested tables indented, a list of tables as `- ` items, values as
    `plain_value` spells them."""
    lines = []
    for key, value in info.items():
        if isinstance(value, dict) and value:
            lines.append(f"{indent}{key}:")
            lines.extend(_lines(value, indent + "  "))
        elif isinstance(value, list) and any(isinstance(v, dict) and v for v in value):
            lines.append(f"{indent}{key}:")
            for item in value:
                nested = _lines(item, indent + "    ") if isinstance(item, dict) else [indent + "    " + _value(item)]
                lines.append(f"{indent}  - {nested[0].lstrip()}")
                lines.extend(nested[1:])
        else:
            lines.append(f"{indent}{key}: {_value(value)}")
    return lines


def _value(value) -> str:
    from llmdit_cli.cli.output import plain_value

    return plain_value(value)
