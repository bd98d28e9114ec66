from __future__ import annotations

from typing import Annotated, Optional

import typer

from llmdit_cli.cli.errors import handle_errors
from llmdit_cli.cli.output import Output

history_app = typer.Typer(
    help="What `llmdit serve` made: list, show and export the studio's history (its SQLite database).",
    no_args_is_help=True,
)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (one object per line for list).")]
DataDirOpt = Annotated[
    Optional[str],
    typer.Option(
        "--data-dir",
        help="The server's data folder (default: ~/.local/share/llmdit; env LLMDIT_DATA_DIR).",
        show_default=False,
    ),
]
IdArg = Annotated[str, typer.Argument(help="A history entry's id (`llmdit history list`).", show_default=False)]


def _history(data_dir: str | None):
    """The history of the data folder; one that holds none yet is an error, not a new database."""
    from pathlib import Path

    from llmdit_cli.errors import UsageError
    from llmdit_cli.history import DB_NAME, History, default_data_dir

    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    if not (root / DB_NAME).is_file():
        raise UsageError(f"{root}: no history here (a folder `llmdit serve --data-dir` has used)")
    return History(root)


def _entry(history, entry_id: str):
    from llmdit_cli.errors import InputError
    from llmdit_cli.history import is_id

    entry = history.get(entry_id) if is_id(entry_id) else None
    if entry is None:
        raise InputError(f"{entry_id}: no such history entry in {history.root}")
    return entry


@history_app.command("list")
@handle_errors
def list_(
    data_dir: DataDirOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Most entries to list, newest first.")] = 20,
    before: Annotated[Optional[str], typer.Option("--before", help="Entries older than this id.")] = None,
    task: Annotated[
        Optional[str], typer.Option("--task", help="Only this task: generate, img2img, rewrite, decompose or edit.")
    ] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Only entries made by this model.")] = None,
    query: Annotated[
        Optional[str], typer.Option("--query", "-q", help="Only prompts (or rewrites) holding this.")
    ] = None,
    json_out: JsonFlag = False,
):
    """List history entries, newest first: id, time, task, model, seed, prompt.

    Example: llmdit history list --task generate -n 5
    """
    import json
    import time

    from llmdit_cli.errors import UsageError
    from llmdit_cli.history import TASKS

    if limit < 1:
        raise UsageError(f"--limit {limit}: must be at least 1")
    if task is not None and task not in TASKS:
        raise UsageError(f"--task {task}: expected one of {', '.join(TASKS)}")
    out = Output()
    for e in _history(data_dir).list(limit, before, task, model, query):
        if json_out:
            out.data(json.dumps(e.as_dict(), sort_keys=True))
        else:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.created))
            seed = "" if e.seed is None else str(e.seed)
            out.data(f"{e.id}  {when}  {e.task:<9} {e.model}  {seed:>10}  {e.prompt[:60]}")


@history_app.command("show")
@handle_errors
def show(entry_id: IdArg, data_dir: DataDirOpt = None, json_out: JsonFlag = False):
    """Show one entry: its prompt, settings, parent and files.

    Example: llmdit history show 01a23d18879b90643bc4
    """
    import json

    history = _history(data_dir)
    e = _entry(history, entry_id)
    record = e.as_dict()
    record["paths"] = [str(history.files / name) for name in e.files]
    out = Output()
    if json_out:
        out.data(json.dumps(record, sort_keys=True))
        return
    for key in ("id", "task", "model", "family", "seed", "parent", "prompt", "result"):
        if record[key] is not None:
            out.data(f"{key}: {record[key]}")
    for path in record["paths"]:
        out.data(f"file: {path}")
    out.data("settings: " + json.dumps(e.settings, indent=2, sort_keys=True))


@history_app.command("export")
@handle_errors
def export(
    entry_ids: Annotated[
        Optional[list[str]], typer.Argument(help="Entries to export (default: all).", show_default=False)
    ] = None,
    output: Annotated[
        str, typer.Option("--output", "-o", help="Folder to write into (made if missing).", show_default=False)
    ] = ".",
    data_dir: DataDirOpt = None,
):
    """Copy history entries into a folder: images as PNGs with their settings, rewrites as JSON.

    Each PNG is the file the server made, its settings inside as `llmdit generate` writes them
    (`llmdit inspect`, `generate --from-png`); an entry without files is written as ID.json.

    Example: llmdit history export -o exported/
    """
    import json
    import shutil
    from pathlib import Path

    from llmdit_cli.artifacts import write_bytes_atomic

    history = _history(data_dir)
    entries = [_entry(history, i) for i in entry_ids] if entry_ids else _all(history)
    target = Path(output)
    target.mkdir(parents=True, exist_ok=True)
    out = Output()
    for e in entries:
        for name in e.files:
            shutil.copyfile(history.files / name, target / name)
            out.data(str(target / name))
        if not e.files:
            path = target / f"{e.id}.json"
            write_bytes_atomic(str(path), (json.dumps(e.as_dict(), indent=2, sort_keys=True) + "\n").encode())
            out.data(str(path))


def _all(history) -> list:
    entries, before = [], None
    while page := history.list(500, before):
        entries += page
        before = page[-1].id
    return entries
