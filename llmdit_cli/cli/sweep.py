from __future__ import annotations

from typing import Annotated, Optional

import typer

from llmdit_cli.cli.errors import handle_errors
from llmdit_cli.cli.options import JsonOpt, ModelOpt, QuietOpt
from llmdit_cli.cli.output import Output

G_SWEEP = "Sweep"

RecipesArg = Annotated[
    list[str],
    typer.Argument(help="Sweep recipe TOML files (see recipes/README.md), run one after another.", show_default=False),
]
QuickOpt = Annotated[
    bool,
    typer.Option(
        "--quick",
        help="Smoke run: the first prompt and seed, every axis, at most 2 steps (unless steps is an axis), "
        "into RUN-quick.",
        rich_help_panel=G_SWEEP,
    ),
]
SweepOutputOpt = Annotated[
    Optional[str],
    typer.Option(
        "--output", "-o", help="Run folder (default: the recipe's `output`, else runs/NAME).", rich_help_panel=G_SWEEP
    ),
]
ShardOpt = Annotated[
    Optional[str],
    typer.Option(
        "--shard",
        help="Run shard K of N (K/N, K from 0). Default: RANK/WORLD_SIZE under torchrun or accelerate, the SLURM array task and SLURM_PROCID under SLURM, else all cells.",
        rich_help_panel=G_SWEEP,
    ),
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="List the cells (index, id, done, todo or left-out, axis values) and run nothing; "
        "left-out: beyond the model, checked on its configs where they are on this machine.",
        rich_help_panel=G_SWEEP,
    ),
]
LimitOpt = Annotated[
    Optional[int],
    typer.Option("--limit", min=1, help="Run only the first N cells (of this shard).", rich_help_panel=G_SWEEP),
]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Use a run folder made by another (or a changed) recipe; finished cells that are still in the recipe are kept.",
        rich_help_panel=G_SWEEP,
    ),
]


@handle_errors
def sweep(
    recipes: RecipesArg,
    output: SweepOutputOpt = None,
    model: ModelOpt = None,
    shard: ShardOpt = None,
    dry_run: DryRunOpt = False,
    limit: LimitOpt = None,
    force: ForceOpt = False,
    quick: QuickOpt = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
):
    """Run every cell of a sweep recipe (settings x axes x prompts x seeds), resumably.

    Each model loads once and cells that share a prompt encoding encode it once. Every image is
    an ordinary llmdit PNG in RUN/images/, recorded in RUN/manifest.jsonl once it is in place;
    running the same command again does only the cells not finished yet. Any number of
    processes may run one recipe into one folder: each cell is claimed first and made once.
    --shard K/N (or a SLURM array, srun -n, torchrun, accelerate launch) splits the cells
    between them. Several recipes run one after another; --quick makes a smoke run of each.
    Exit code 1 when a cell failed (its error is in the manifest).

    Example: llmdit sweep recipes/dype.toml --model demo
    """
    from llmdit_cli.errors import UsageError
    from llmdit_cli.sweep import recipe as recipes_

    if output and len(recipes) > 1:
        raise UsageError("-o names one run folder; with several recipes each runs into its own")
    loaded = [recipes_.load(path, model=model, output=output) for path in recipes]  # all checked first
    if quick:
        loaded = [recipes_.quick(r, output) for r in loaded]
    from llmdit_cli.engine import Engine

    out = Output(quiet, json_out)
    engine = Engine()  # a model the recipes share loads once
    failed = False
    for r in loaded:
        failed |= _run_recipe(engine, r, out, shard, limit, force, dry_run)
    if failed:
        raise typer.Exit(1)


def _run_recipe(engine, r, out: Output, shard, limit, force: bool, dry_run: bool) -> bool:
    """One recipe's sweep; True when a cell failed."""
    import os
    from contextlib import ExitStack

    from llmdit_cli.sweep import run

    part, device = run.shard_for(shard, dict(os.environ))
    sel = run.select(r, part, limit, force, out.hint)
    if dry_run:
        out.log(f"sweep {r.name}: {len(sel.cells)} cell(s) -> {sel.folder}")
        _list(out, sel.cells, sel.done, _left_out(engine, r, sel.todo, device, out))
        return False
    with ExitStack() as stack:
        ticks = {"n": 0}

        def on_start(n: int) -> None:
            out.log(
                f"sweep {r.name}: {n} cell(s) to run, {len(sel.cells) - len(sel.todo)} already done -> {sel.folder}"
            )
            ticks["advance"], ticks["total"] = stack.enter_context(out.progress(f"sweep {r.name}", n)), n

        def on_done(cell, record) -> None:
            ticks["n"] += 1
            ticks["advance"](ticks["n"], ticks["total"], f"cell {cell.index} {record['status']}")
            if record["status"] == "done":
                path = str(sel.folder / record["image"])
                out.wrote(
                    path,
                    "image",
                    prompt=cell.prompt,
                    seed=cell.seed,
                    settings=record["settings"],
                    cell=cell.id,
                    axes=cell.axes,
                )

        outcome = run.execute(engine, r, sel, part, device, run.QuietReporter(out), on_start, on_done)
    _summary(out, r, sel.folder, outcome)
    return outcome.failed > 0


def _left_out(engine, r, todo: list, device, out: Output) -> set[str]:
    """The cells a run would leave out (values beyond the model), judged on the model's configs
    where they are on this machine: a dry run downloads nothing and needs no GPU, so a model it
    cannot open leaves its cells listed as todo, with a hint."""
    from llmdit_cli.errors import LlmditError
    from llmdit_cli.models.refs import on_this_machine
    from llmdit_cli.sweep import run

    here = {m for m in {c.model for c in todo} if on_this_machine(m)}
    for model in sorted({c.model for c in todo} - here):
        out.hint(f"model {model} is not on this machine: its cells beyond it are not told apart")
    try:
        checked = [c for c in todo if c.model in here]
        return {c.id for c in checked} - {c.id for c in run.fits_model(checked, engine, r, device, out.hint)}
    except LlmditError as exc:  # a device this machine lacks, a broken config: the run will say
        out.hint(f"cells beyond the model are not told apart here ({exc})")
        return set()


def _list(out, cells, done, left_out: set[str]) -> None:
    import json

    for c in cells:
        status = "done" if c.id in done else "left-out" if c.id in left_out else "todo"
        if out.json:
            out.data(
                json.dumps(
                    {
                        "index": c.index,
                        "cell": c.id,
                        "status": status,
                        "axes": c.axes,
                        "prompt": c.prompt,
                        "seed": c.seed,
                    },
                    sort_keys=True,
                    default=str,
                )
            )
        else:
            axes = " ".join(f"{k}={json.dumps(v)}" for k, v in c.axes.items())
            out.data(f"{c.index:5d} {c.id} {status:8s} seed={c.seed} {axes} prompt={json.dumps(c.prompt)}")


def _summary(out, r, folder, o) -> None:
    import statistics

    if out.quiet:
        return
    from rich.table import Table

    table = Table(title=f"sweep {r.name} -> {folder}", title_justify="left")
    for name in ("done", "already done", "failed", "left out", "by others", "s / image"):
        table.add_column(name, justify="right")
    per_image = f"{statistics.median(o.seconds):.2f}" if o.seconds else "-"
    table.add_row(str(o.done), str(o.skipped), str(o.failed), str(o.left_out), str(o.elsewhere), per_image)
    out.console.print(table)
