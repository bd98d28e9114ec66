from __future__ import annotations

from typing import Annotated, Optional

import typer

from llmdit_cli.cli.errors import handle_errors
from llmdit_cli.cli.options import JsonOpt, QuietOpt
from llmdit_cli.cli.output import Output

G_LAYOUT = "Layout"
G_OUT = "Output"

RunsArg = Annotated[
    list[str], typer.Argument(help="Sweep run folders (with --list: folders to search for runs).", show_default=False)
]
ListOpt = Annotated[
    bool,
    typer.Option(
        "--list", help="List the runs under the folders: name, date, cells done of all, axes.", rich_help_panel=G_LAYOUT
    ),
]
ModeOpt = Annotated[
    str,
    typer.Option(
        "--mode",
        help="grid (rows x columns of images), side-by-side (each image beside its --reference) or diff (each image's difference from its --reference).",
        rich_help_panel=G_LAYOUT,
    ),
]
RowsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--rows",
        help="Axis on the rows (a recipe key, prompt, seed, or run). Default: the second axis the runs vary.",
        rich_help_panel=G_LAYOUT,
    ),
]
ColsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--cols", help="Axis on the columns. Default: the first axis the runs vary.", rich_help_panel=G_LAYOUT
    ),
]
WhereOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--where",
        help="KEY=VALUE: keep only images with this axis value; repeat. Axes neither shown nor fixed give one grid per value.",
        rich_help_panel=G_LAYOUT,
    ),
]
ReferenceOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--reference",
        help="KEY=VALUE: each image's reference is the image with these axis values and its own other values (PSNR/SSIM, side-by-side, diff); repeat.",
        rich_help_panel=G_LAYOUT,
    ),
]
DiffModeOpt = Annotated[
    str,
    typer.Option(
        "--diff-mode",
        help="absolute (|a-b|, stretched), highlight (changed pixels in red) or heatmap.",
        rich_help_panel=G_LAYOUT,
    ),
]
ScoreModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--score-model",
        help="SigLIP or CLIP model (Hub id or folder): score each image against its prompt (cosine similarity).",
        rich_help_panel=G_LAYOUT,
    ),
]
CompareOutputOpt = Annotated[
    Optional[str],
    typer.Option(
        "--output",
        "-o",
        help="PNG path ('-' for stdout; several grids need {index} or a folder). Default: compare.png (compare-{index}.png).",
        rich_help_panel=G_OUT,
    ),
]
HtmlOpt = Annotated[
    Optional[str],
    typer.Option(
        "--html",
        help="Also write a self-contained HTML report (grid, enlarge, slider, A/B toggle, diff overlay).",
        rich_help_panel=G_OUT,
    ),
]
MetricsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--metrics",
        help="Write metrics to PREFIX.csv and PREFIX.json. Default with --reference or --score-model: beside the output.",
        rich_help_panel=G_OUT,
    ),
]


@handle_errors
def compare(
    runs: RunsArg,
    list_runs: ListOpt = False,
    mode: ModeOpt = "grid",
    rows: RowsOpt = None,
    cols: ColsOpt = None,
    where: WhereOpt = None,
    reference: ReferenceOpt = None,
    diff_mode: DiffModeOpt = "absolute",
    score_model: ScoreModelOpt = None,
    output: CompareOutputOpt = None,
    html: HtmlOpt = None,
    metrics: MetricsOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
):
    """Compare sweep runs: labelled grids, differences, PSNR/SSIM and an HTML report.

    Images beside a reference, difference images, PSNR/SSIM against a reference, and a
    self-contained HTML report.

    Rows and columns are two axes the runs vary (recipe keys, prompt, seed, and run when several
    runs are given); other varied axes are fixed with --where or give one grid per value.

    Example: llmdit compare runs/dype --rows dype.method --cols dype.exponent --html report.html
    """
    from pathlib import Path

    from llmdit_cli.artifacts import check_binary_target
    from llmdit_cli.compare import build
    from llmdit_cli.compare import runs as runs_mod
    from llmdit_cli.errors import UsageError

    out = Output(quiet, json_out)
    folders = [Path(r) for r in runs]
    if list_runs:
        _list(out, folders)
        return
    if mode not in ("grid", "side-by-side", "diff"):
        raise UsageError(f"--mode {mode}: use grid, side-by-side or diff")
    if diff_mode not in ("absolute", "highlight", "heatmap"):
        raise UsageError(f"--diff-mode {diff_mode}: use absolute, highlight or heatmap")
    items = runs_mod.load(folders, out.hint)
    axes = runs_mod.varied(items)
    chosen = runs_mod.parse_where(where or [], axes)
    ref = build.parse_reference(reference or [], axes)
    if mode != "grid" and not ref:
        raise UsageError(f"--mode {mode} compares each image with its reference; pass --reference KEY=VALUE")
    lay = build.layout(items, rows, cols, chosen)
    scores = _scores(score_model, runs_mod.matching(items, chosen), out) if score_model else {}
    if mode == "side-by-side":
        grids = [build.side_by_side(items, chosen, ref)]
    else:
        grids = [build.grid_for(items, lay, g, chosen, mode, diff_mode, ref, scores) for g in lay.groups]
    paths = _paths(output, len(grids))
    for path in [*paths, *([html] if html else [])]:  # before any grid is written
        check_binary_target(path)
    _write_grids(out, grids, paths)
    table = build.metric_rows(runs_mod.matching(items, chosen), ref, scores) if (ref or scores) else []
    if table:
        _write_metrics(out, table, metrics or _beside(paths[0], html))
    if html:
        from llmdit_cli.artifacts import write_bytes_atomic
        from llmdit_cli.compare.report import page

        title = f"llmdit compare: {', '.join(f.name for f in folders)}"
        write_bytes_atomic(html, page(title, grids, table).encode())
        out.wrote(html, "report", prompt=None, seed=None, settings={"mode": mode, "runs": runs})


def _list(out, folders) -> None:
    import json

    from llmdit_cli.compare import runs as runs_mod
    from llmdit_cli.errors import InputError

    found = [run for f in folders for run in runs_mod.find_runs(f)]
    if not found:
        raise InputError(f"{', '.join(map(str, folders))}: no sweep runs found (a run folder holds run.json)")
    for folder in found:
        info = runs_mod.describe(folder)
        total = "?" if info.cells < 0 else str(info.cells)
        if out.json:
            out.data(
                json.dumps(
                    {
                        "folder": str(folder),
                        "name": info.name,
                        "created": info.created,
                        "cells": info.cells,
                        "done": info.done,
                        "axes": info.axes,
                    }
                )
            )
        else:
            out.data(
                f"{folder}  {info.name}  {info.created}  {info.done}/{total} done  axes: {', '.join(info.axes) or '-'}"
            )


def _paths(output: str | None, n: int) -> list[str]:
    from pathlib import Path

    from llmdit_cli.errors import UsageError

    if output is None:
        return ["compare.png"] if n == 1 else [f"compare-{i}.png" for i in range(n)]
    if output == "-":
        if n > 1:
            raise UsageError(
                f"-o -: {n} grids cannot go to stdout; fix the other axes with --where, or give a "
                f"pattern with {{index}} or a folder"
            )
        return ["-"]
    if output.endswith("/") or Path(output).is_dir():
        return [str(Path(output) / ("compare.png" if n == 1 else f"compare-{i}.png")) for i in range(n)]
    if "{" not in output:
        if n > 1:
            raise UsageError(f"-o {output}: {n} grids need a folder or a pattern with {{index}}")
        return [output]
    try:
        return [output.format(index=i) for i in range(n)]
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(f"-o {output}: bad pattern ({exc}); use {{index}}") from None


def _write_grids(out, grids, paths) -> None:
    import io

    from llmdit_cli.artifacts import write_bytes_atomic
    from llmdit_cli.compare.images import render

    out.stdout_is_binary = paths == ["-"]
    for grid, path in zip(grids, paths):
        buf = io.BytesIO()
        render(grid).save(buf, format="PNG")
        write_bytes_atomic(path, buf.getvalue())
        out.wrote(
            path,
            "grid",
            prompt=None,
            seed=None,
            settings={"title": grid.title, "rows": grid.row_axis, "cols": grid.col_axis},
        )


def _beside(path: str, html: str | None) -> str | None:
    from pathlib import Path

    base = path if path != "-" else html
    return None if base is None else str(Path(base).with_suffix("")) + ".metrics"


def _write_metrics(out, table, prefix) -> None:
    import csv
    import io
    import json

    from llmdit_cli.artifacts import write_bytes_atomic

    if prefix is None:
        out.hint("metrics not written: pass --metrics PREFIX (the grid went to stdout)")
        return
    keys = list(dict.fromkeys(k for row in table for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for row in table:
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})
    write_bytes_atomic(f"{prefix}.csv", buf.getvalue().encode())
    finite = [{k: _json_number(v) for k, v in row.items()} for row in table]
    write_bytes_atomic(f"{prefix}.json", (json.dumps(finite, indent=1, default=str, allow_nan=False) + "\n").encode())
    for suffix in ("csv", "json"):
        out.wrote(f"{prefix}.{suffix}", "metrics", prompt=None, seed=None, settings={"rows": len(table)})


def _json_number(v):
    """JSON has no infinity or NaN: PSNR of identical images is "inf", of different sizes null."""
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, float) and v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    return v


def _scores(model: str, items, out) -> dict[str, float]:
    from llmdit_cli.compare.score import prompt_scores

    with out.status(f"scoring {len(items)} image(s) with {model}"):
        return prompt_scores(model, items)
