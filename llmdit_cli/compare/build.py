"""From entries to comparisons: which axes go on rows and columns, which image is each image's
reference, and the grids (plain, side by side with the reference, or differences) to draw."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from llmdit_cli.compare import images
from llmdit_cli.compare.runs import Entry, match_value, matching, varied
from llmdit_cli.errors import UsageError


@dataclass
class Layout:
    rows: str | None
    cols: str | None
    groups: list[dict[str, Any]]  # fixed values of the other varied axes, one grid each


def layout(items: list[Entry], rows: str | None, cols: str | None, where: dict[str, Any]) -> Layout:
    """Rows and columns from two axes the runs vary (default: the first two not fixed by --where);
    one grid per combination of the other varied axes."""
    axes = {k: v for k, v in varied(items).items() if k not in where}
    for flag, axis in (("--rows", rows), ("--cols", cols)):
        if axis is not None and axis not in axes:
            fixed = " (fixed by --where)" if axis in where else ""
            raise UsageError(
                f"{flag} {axis}: not an axis the runs vary{fixed}; they vary: {', '.join(axes) or 'nothing'}"
            )
    if rows is not None and rows == cols:
        raise UsageError(f"--rows and --cols are both {rows}; choose two axes")
    free = [a for a in axes if a not in (rows, cols)]
    if cols is None and free:
        cols = free.pop(0)
    if rows is None and free:
        rows = free.pop(0)
    combos = [dict(zip(free, values)) for values in itertools.product(*(axes[a] for a in free))]
    groups = [c for c in combos if matching(items, {**where, **c})]
    return Layout(rows, cols, groups or [{}])


def parse_reference(items: list[str], axes: dict[str, list]) -> dict[str, Any]:
    ref = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise UsageError(f"--reference {item}: expected KEY=VALUE, e.g. dype.enabled=false")
        if key not in axes:
            raise UsageError(f"--reference {item}: '{key}' is not an axis the runs vary (they vary: {', '.join(axes)})")
        ref[key] = match_value(text, axes[key], f"--reference {item}")
    return ref


def reference_of(entry: Entry, items_by_axes: dict[str, Entry], ref: dict[str, Any]) -> Entry | None:
    if not ref:
        return None
    return items_by_axes.get(_key({**entry.axes, **ref}))


def index(items: list[Entry]) -> dict[str, Entry]:
    return {_key(e.axes): e for e in items}


def _key(axes: dict[str, Any]) -> str:
    return json.dumps(axes, sort_keys=True, default=str)


def grid_for(
    items: list[Entry],
    lay: Layout,
    group: dict[str, Any],
    where: dict[str, Any],
    mode: str,
    diff_mode: str,
    ref: dict[str, Any],
    scores: dict[str, float],
) -> images.Grid:
    """One grid: each tile an image (grid), its difference from its reference (diff); notes under
    tiles hold PSNR/SSIM against the reference and the prompt score when there are any."""
    chosen = matching(items, {**where, **group})
    by_axes = index(items)
    row_values = _values(chosen, lay.rows)
    col_values = _values(chosen, lay.cols)
    tiles, notes, sources = {}, {}, {}
    for e in chosen:
        at = (_position(row_values, e, lay.rows), _position(col_values, e, lay.cols))
        if at in tiles or at in notes:
            continue  # axes the grid does not show hold one value here, or --where fixed them
        reference = reference_of(e, by_axes, ref)
        image = images.load_image(e)
        text = []
        if reference is not None:
            ref_image = images.load_image(reference)
            text.append(images.note(images.metrics(ref_image, image)))
            if mode == "diff":
                image = images.difference(ref_image, image, diff_mode)
        elif mode == "diff":
            image, text = None, ["no reference"]  # the tile stays empty: nothing to subtract
        if score_key(e) in scores:
            text.append(f"score {scores[score_key(e)]:.3f}")
        if image is not None:
            tiles[at], sources[at] = image, e
        if text:
            notes[at] = " ".join(text)
    title = " ".join(f"{k}={images.label(v)}" for k, v in {**where, **group}.items())
    return images.Grid(row_values, col_values, tiles, lay.rows, lay.cols, title, notes, sources)


def _position(values: list, e: Entry, axis: str | None) -> int:
    return 0 if axis is None else values.index(e.axes.get(axis))


def score_key(e: Entry) -> str:
    """Scores are per image: a cell id is only unique within its run."""
    return f"{e.run}/{e.cell}"


def side_by_side(items: list[Entry], where: dict[str, Any], ref: dict[str, Any]) -> images.Grid:
    """Each image (one row each) beside its reference, with PSNR/SSIM."""
    by_axes, shown = index(items), [k for k in varied(items) if k not in where]
    rows, tiles, notes, sources = [], {}, {}, {}
    for e in matching(items, where):
        reference = reference_of(e, by_axes, ref)
        if reference is None or reference is e:
            continue
        i = len(rows)
        rows.append(
            " ".join(
                f"{k}={e.axes[k] if isinstance(e.axes[k], str) else json.dumps(e.axes[k])}"
                for k in shown
                if k in e.axes
            )
        )
        image, ref_image = images.load_image(e), images.load_image(reference)
        tiles[(i, 0)], tiles[(i, 1)] = ref_image, image
        notes[(i, 1)] = images.note(images.metrics(ref_image, image))
        sources[(i, 0)], sources[(i, 1)] = reference, e
    title = "reference: " + " ".join(f"{k}={images.label(v)}" for k, v in ref.items())
    return images.Grid(rows, ["reference", "image"], tiles, None, None, title, notes, sources)


def metric_rows(items: list[Entry], ref: dict[str, Any], scores: dict[str, float]) -> list[dict[str, Any]]:
    """One row per image that has a reference or a score: its run, cell, axes, metrics, score."""
    by_axes = index(items)
    out = []
    for e in items:
        reference = reference_of(e, by_axes, ref)
        if reference is None and score_key(e) not in scores:
            continue
        row: dict[str, Any] = {**e.axes, "run": e.run, "cell": e.cell, "image": str(e.image)}
        if reference is not None:
            row["reference"] = str(reference.image)
            row.update(images.metrics(images.load_image(reference), images.load_image(e)))
        if score_key(e) in scores:
            row["score"] = scores[score_key(e)]
        out.append(row)
    return out


def _values(items: list[Entry], axis: str | None) -> list:
    if axis is None:
        return [None]
    seen: list = []
    for e in items:
        if e.axes.get(axis) not in seen:
            seen.append(e.axes.get(axis))
    return seen
