"""Sweep recipes: a TOML file of settings, axes, prompts and seeds, validated before anything loads,
and the cells (one image each) it expands to.

Settings use the config file's keys and validation (`generation.steps`, `slg.scale`, `model`), so
every setting a command takes can be a base value or an axis. `[grid]` axes multiply; `[zip]`
axes vary together (equal lengths). Cells run in the order: grid x zip x prompts x seeds.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import Field

from llmdit_cli.config import DEFAULT_MODEL, check_key, check_value
from llmdit_cli.errors import ConfigError
from llmdit_cli.tomlfiles import StrictModel, dump_toml, load_toml, validated


class RecipeFile(StrictModel):
    """The recipe file's top level, before its setting tables are checked key by key."""

    name: str | None = None
    model: str = DEFAULT_MODEL
    prompts: list[str] = []
    prompts_file: str | None = None
    seeds: list[int] = [0]
    output: str | None = None
    # Width and height as this multiple of the model family's default size (unless set): one
    # recipe then means "2x the base size" on Z-Image-Turbo (2048 px) and on the demo (64 px).
    size_factor: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    base: dict[str, Any] = {}
    grid: dict[str, Any] = {}
    zip: dict[str, Any] = {}


@dataclass
class Recipe:
    name: str
    source: str  # the file it was read from, for messages
    prompts: list[str]
    seeds: list[int]
    output: str
    size_factor: float | None
    base: dict[str, Any]
    grid: dict[str, list]
    zip: dict[str, list]

    def axes(self) -> list[str]:
        return [*self.grid, *self.zip]

    def document(self) -> dict[str, Any]:
        """The recipe as a TOML document (prompts inline), which reads back to the same recipe."""
        doc: dict[str, Any] = {"name": self.name, "prompts": self.prompts, "seeds": self.seeds, "output": self.output}
        if self.size_factor is not None:
            doc["size_factor"] = self.size_factor
        for table in ("base", "grid", "zip"):
            values = getattr(self, table)
            if values:
                doc[table] = {f'"{k}"': v for k, v in values.items()}
        return doc

    def to_toml(self) -> str:
        return dump_toml(self.document())

    def fingerprint(self) -> str:
        """What must match to resume a run folder: everything but the name, the output folder and
        the settings that leave the pixels as they are (`SAME_PIXELS`)."""
        doc = {k: v for k, v in self.document().items() if k not in ("name", "output")}
        for table in ("base", "grid", "zip"):
            if table in doc:
                doc[table] = {k: v for k, v in doc[table].items() if k.strip('"') not in SAME_PIXELS}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


# Settings a cell's image does not depend on (a batch gives each image its own pixels, max diff
# <= 2): a rerun with another value resumes the same cells.
SAME_PIXELS = ("generation.batch_size",)


@dataclass
class Cell:
    """One image: the settings (base plus this cell's axis values), its prompt and seed."""

    index: int
    settings: dict[str, Any]
    axes: dict[str, Any]
    prompt: str
    seed: int
    size_factor: float | None

    @property
    def id(self) -> str:
        settings = {k: v for k, v in self.settings.items() if k not in SAME_PIXELS}
        data = {"settings": settings, "prompt": self.prompt, "seed": self.seed, "size_factor": self.size_factor}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]

    @property
    def model(self) -> str:
        return self.settings["model"]

    def image_name(self) -> str:
        return f"{self.index:05d}-{self.id}.png"


QUICK_STEPS = 2


def quick(recipe: Recipe, output: str | None = None) -> Recipe:
    """A smoke run of the recipe: its first prompt and first seed, every axis, and at most
    `QUICK_STEPS` steps (where steps are not an axis), into its own folder (`runs/NAME-quick`)."""
    base = dict(recipe.base)
    if "generation.steps" not in recipe.grid and "generation.steps" not in recipe.zip:
        base["generation.steps"] = min(base.get("generation.steps") or QUICK_STEPS, QUICK_STEPS)
    return replace(
        recipe,
        name=_quick_name(recipe.name),
        prompts=recipe.prompts[:1],
        seeds=recipe.seeds[:1],
        base=base,
        output=output or _quick_name(recipe.output.rstrip("/")),
    )


def _quick_name(name: str) -> str:
    """NAME-quick; a quick run's own saved recipe (`runs/NAME-quick/recipe.toml`) keeps its name."""
    return name if name.endswith("-quick") else f"{name}-quick"


def load(path: str, model: str | None = None, output: str | None = None) -> Recipe:
    """Read and check a recipe; `model` and `output` (command-line flags) override the file's."""
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"{path}: is a folder, not a recipe file")
    if not file.is_file():
        raise ConfigError(f"{path}: recipe not found")
    doc = load_toml(file, "recipe")
    raw = validated(RecipeFile, doc, str(path))
    base = {k: check_value(k, v, f"{path} [base]") for k, v in _flat(raw.base, f"{path} [base]").items()}
    base["model"] = model or base.get("model") or raw.model
    grid = _axes(raw.grid, f"{path} [grid]")
    zipped = _axes(raw.zip, f"{path} [zip]")
    _files_beside(file, base, grid, zipped)
    if model:
        grid.pop("model", None)
        zipped.pop("model", None)
    _check_axes(path, base, grid, zipped)
    prompts = list(raw.prompts) + _prompts_file(file, raw.prompts_file)
    if not prompts:
        raise ConfigError(f"{path}: no prompts (give prompts = [...] or prompts_file)")
    if not raw.seeds:
        raise ConfigError(f"{path}: seeds is empty")
    name = raw.name or file.name.removesuffix(".toml")
    return Recipe(
        name,
        str(path),
        prompts,
        list(raw.seeds),
        output or raw.output or f"runs/{name}",
        raw.size_factor,
        base,
        grid,
        zipped,
    )


# Settings that name a file: a relative path in a recipe is relative to the recipe's folder.
FILE_KEYS = ("vl.image", "control.image", "generation.mask")


def _files_beside(recipe: Path, base: dict, grid: dict, zipped: dict) -> None:
    def beside(value):
        # Absolute, so the copy of the recipe a run keeps (and `compare` reloads) means the same.
        return str((recipe.parent / Path(value).expanduser()).resolve()) if isinstance(value, str) else value

    for key in FILE_KEYS:
        if key in base:
            base[key] = beside(base[key])
        for axes in (grid, zipped):
            if key in axes:
                axes[key] = [beside(v) for v in axes[key]]


def _flat(table: dict[str, Any], where: str, prefix: str = "") -> dict[str, Any]:
    """Nested tables (`[base.generation]`) and dotted keys (`generation.width = 32`) as
    {'generation.width': 32}, every key a known setting."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        full = prefix + key
        if isinstance(value, dict):
            flat.update(_flat(value, where, full + "."))
        else:
            check_key(full, where)
            flat[full] = value
    return flat


def _axes(table: dict[str, Any], where: str) -> dict[str, list]:
    axes = {}
    for key, values in _flat(table, where).items():
        if not isinstance(values, list):
            raise ConfigError(f"{where}: axis '{key}' must be a list of values, not {values!r}")
        if not values:
            raise ConfigError(f"{where}: axis '{key}' is empty (an axis needs at least one value)")
        axes[key] = [check_value(key, v, f"{where} {key}") for v in values]
    return axes


def _check_axes(path: str, base: dict, grid: dict, zipped: dict) -> None:
    for key in grid.keys() & zipped.keys():
        raise ConfigError(f"{path}: '{key}' is an axis in both [grid] and [zip]")
    for key in (grid.keys() | zipped.keys()) & (base.keys() - {"model"}):
        raise ConfigError(f"{path}: '{key}' is set in [base] and varied as an axis; keep one")
    lengths = {k: len(v) for k, v in zipped.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise ConfigError(f"{path} [zip]: axes vary together and need equal lengths ({shown})")


def _prompts_file(recipe: Path, name: str | None) -> list[str]:
    if not name:
        return []
    path = Path(name) if Path(name).is_absolute() else recipe.parent / name
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{recipe}: prompts_file {path}: cannot read ({getattr(exc, 'strerror', None) or exc})"
        ) from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def cells(recipe: Recipe) -> list[Cell]:
    """Every cell, in order: grid (product, in the file's key order) x zip rows x prompts x seeds."""
    grid_rows = [dict(zip(recipe.grid, values)) for values in itertools.product(*recipe.grid.values())]
    n_zip = len(next(iter(recipe.zip.values()))) if recipe.zip else 1
    zip_rows = [{k: v[i] for k, v in recipe.zip.items()} for i in range(n_zip)]
    out: list[Cell] = []
    for g in grid_rows:
        for z in zip_rows:
            axes = {**g, **z}
            for prompt in recipe.prompts:
                for seed in recipe.seeds:
                    out.append(Cell(len(out), {**recipe.base, **axes}, axes, prompt, seed, recipe.size_factor))
    return out
