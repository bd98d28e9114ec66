"""Sweep runs as comparable entries: every finished image with its axis values, prompt and seed.

The implicit axes `prompt`, `seed` (and `run`, when several run folders are compared) sit beside
the recipe's own axes, so a grid can put any of them on its rows or columns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmdit_cli.errors import InputError, UsageError


@dataclass
class Entry:
    run: str
    image: Path
    axes: dict[str, Any]  # recipe axes plus prompt, seed and run
    settings: dict[str, Any]
    cell: str


@dataclass
class RunInfo:
    folder: Path
    name: str
    created: str
    cells: int
    done: int
    axes: list[str]


def is_run(folder: Path) -> bool:
    return (folder / "run.json").is_file()


def find_runs(root: Path, depth: int = 3) -> list[Path]:
    """Run folders at or under `root` (a few levels deep)."""
    if is_run(root):
        return [root]
    found: list[Path] = []
    if depth and root.is_dir():
        for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            found += find_runs(child, depth - 1)
    return found


def describe(folder: Path) -> RunInfo:
    info = _info(folder)
    ids = _cell_ids(folder)
    total = -1 if ids is None else len(ids)
    done = len(entries(folder, warn=lambda message: None, current=ids))
    return RunInfo(
        folder, info.get("name", folder.name), info.get("created", "?"), total, done, list(info.get("axes", []))
    )


def _info(folder: Path) -> dict:
    try:
        info = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        raise InputError(f"{folder}: not a sweep run (no readable run.json)") from None
    if not isinstance(info, dict):
        raise InputError(f"{folder}: not a sweep run (run.json is not an object)")
    return info


def entries(folder: Path, warn, current: set[str] | None = None) -> list[Entry]:
    """The finished images of a run folder that its recipe (as last run) still holds, in cell order."""
    from llmdit_cli.sweep.run import read_manifests

    if not is_run(folder):
        raise InputError(f"{folder}: not a sweep run folder (no run.json; `llmdit compare --list DIR` finds runs)")
    _info(folder)
    current = current if current is not None else _cell_ids(folder)
    out = []
    for record in sorted(read_manifests(folder, warn).values(), key=lambda r: r.get("index", 0)):
        if current is not None and record["cell"] not in current:
            continue  # left by another recipe before a `sweep --force`
        axes = {**(record.get("axes") or {}), "prompt": record.get("prompt", ""), "seed": record.get("seed")}
        out.append(Entry(folder.name, folder / record["image"], axes, record.get("settings") or {}, record["cell"]))
    return out


def _cell_ids(folder: Path) -> set[str] | None:
    from llmdit_cli.errors import LlmditError
    from llmdit_cli.sweep import recipe as recipes

    try:
        return {c.id for c in recipes.cells(recipes.load(str(folder / "recipe.toml")))}
    except LlmditError:
        return None  # an unreadable recipe copy: show every finished image


def load(folders: list[Path], warn) -> list[Entry]:
    """Entries of one or several runs; with several, `run` (the folder's name) is an axis too."""
    every: list[Entry] = []
    names: list[str] = []
    for folder in folders:
        part = entries(folder, warn)
        label = _unique(folder.resolve().name, names)
        names.append(label)
        for e in part:
            e.run = label
            if len(folders) > 1:
                e.axes["run"] = label
        every += part
    if not every:
        raise InputError(f"{', '.join(map(str, folders))}: no finished images yet (run `llmdit sweep` first)")
    return every


def _unique(name: str, taken: list[str]) -> str:
    label, n = name, 2
    while label in taken:
        label, n = f"{name}-{n}", n + 1
    return label


def varied(items: list[Entry]) -> dict[str, list]:
    """Each axis that takes more than one value, with its values in first-seen order."""
    values: dict[str, list] = {}
    for e in items:
        for key, value in e.axes.items():
            seen = values.setdefault(key, [])
            if value not in seen:
                seen.append(value)
    return {k: v for k, v in values.items() if len(v) > 1}


def parse_where(items: list[str], axes: dict[str, list]) -> dict[str, Any]:
    """`KEY=VALUE` filters; the value is matched against the axis values (as JSON when it parses)."""
    where = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise UsageError(f"--where {item}: expected KEY=VALUE")
        if key not in axes:
            raise UsageError(
                f"--where {item}: '{key}' is not an axis the runs vary (they vary: {', '.join(axes) or 'nothing'})"
            )
        where[key] = match_value(text, axes[key], f"--where {item}")
    return where


def match_value(text: str, values: list, where: str) -> Any:
    for v in values:
        if text == str(v) or text == json.dumps(v):
            return v
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    for v in values:
        if parsed == v:
            return v
    raise UsageError(f"{where}: no such value (the runs have {', '.join(json.dumps(v) for v in values)})")


def matching(items: list[Entry], where: dict[str, Any]) -> list[Entry]:
    return [e for e in items if all(e.axes.get(k) == v for k, v in where.items())]
