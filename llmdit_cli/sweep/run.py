"""Running a sweep: one engine for the process, each model loaded once, shared encodings reused,
every finished cell recorded in a manifest so that a rerun (after Ctrl-C, a kill, a preempted
node) does only what is left.

A run folder holds `recipe.toml` (the recipe as run), `run.json` (its fingerprint), `images/` and
one manifest per shard (`manifest.jsonl`, or `manifest.K-of-N.jsonl`). A cell's image is written
to a temporary file and renamed into place, then its manifest line is appended: a kill at any
moment leaves every image whole and at most redoes the cell that was running.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llmdit_cli import __version__
from llmdit_cli.errors import LlmditError, UsageError
from llmdit_cli.sweep.claims import alive
from llmdit_cli.sweep.recipe import Cell, Recipe

IMAGES = "images"


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @property
    def manifest(self) -> str:
        return "manifest.jsonl" if self.count == 1 else f"manifest.{self.index}-of-{self.count}.jsonl"

    def takes(self, cell: Cell) -> bool:
        return cell.index % self.count == self.index


def parse_shard(text: str, where: str = "--shard") -> Shard:
    """`K/N` with 0 <= K < N."""
    k, sep, n = text.partition("/")
    try:
        shard = Shard(int(k), int(n))
    except ValueError:
        raise UsageError(f"{where} {text}: expected K/N, e.g. 0/4 (shard K of N, K from 0)") from None
    if not sep or shard.count < 1 or not 0 <= shard.index < shard.count:
        raise UsageError(f"{where} {text}: K must be in 0..N-1 (K/N, e.g. 0/4)")
    return shard


def shard_from_env(env: dict[str, str]) -> tuple[Shard, str | None]:
    """The shard a scheduler gives this process: torchrun / accelerate (RANK, WORLD_SIZE; each rank
    on its own device, LOCAL_RANK), a SLURM array (SLURM_ARRAY_TASK_ID / _COUNT) and the tasks of
    one `srun -n N` (SLURM_PROCID / SLURM_NTASKS). Returns the shard and the device a distributed
    launch assigns (None: leave the device setting alone). Claims keep overlapping shards from
    doing a cell twice (`claims.py`)."""
    if "WORLD_SIZE" in env and "RANK" in env:
        shard = parse_shard(f"{env['RANK']}/{env['WORLD_SIZE']}", "RANK/WORLD_SIZE")
        return shard, f"cuda:{env.get('LOCAL_RANK', '0')}"
    shard = Shard()
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        shard = _slurm_shard(env)
    return _split_by_task(shard, env), None


def _split_by_task(shard: Shard, env: dict[str, str]) -> Shard:
    """`srun -n N` starts N tasks (SLURM_PROCID of SLURM_STEP_NUM_TASKS) that would each take the
    whole shard: task P takes part P of it. Only inside a job step (SLURM_STEP_ID set by srun): a
    batch script's own shell is one process whatever `--ntasks` says."""
    if "SLURM_STEP_ID" not in env and "SLURM_STEPID" not in env:
        return shard
    names = ("SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS", "SLURM_PROCID")
    try:
        tasks, task = (int(env.get(n, d)) for n, d in zip(names, ("1", "0")))
    except ValueError:
        raise UsageError(f"{' / '.join(names)}: not integers ({', '.join(env.get(n, '-') for n in names)})") from None
    if tasks <= 1 or not 0 <= task < tasks:
        return shard
    return Shard(shard.index * tasks + task, shard.count * tasks)


def _slurm_shard(env: dict[str, str]) -> Shard:
    """Array task ids MIN, MIN+STEP, ... (`--array=0-15` or `--array=0-30:2`) -> shard (ID-MIN)/STEP."""
    names = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP")
    try:
        task, count, first, step = (int(env.get(n, d)) for n, d in zip(names, ("", "", "0", "1")))
    except ValueError:
        raise UsageError(f"{', '.join(names)}: not integers ({', '.join(env.get(n, '-') for n in names)})") from None
    k, rest = divmod(task - first, max(step, 1))
    if rest or not 0 <= k < count:
        raise UsageError(
            f"SLURM array task {task} is not one of {count} evenly spaced tasks from {first} (step "
            f"{step}); use --array=0-{count - 1} or pass --shard K/N"
        )
    return Shard(k, count)


# -- the run folder --------------------------------------------------------------------------------


def check_folder(folder: Path, recipe: Recipe, force: bool) -> bool:
    """Whether `folder` already holds this recipe's run; refuse another recipe's run (unless
    `force`) and a folder that is no run at all."""
    info_path = folder / "run.json"
    if info_path.is_file():
        try:
            stored = json.loads(info_path.read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            stored = None
        if stored == recipe.fingerprint():
            return True
        if not force:
            raise UsageError(
                f"{folder}: holds a run of another recipe (or a changed one); choose another "
                f"--output or pass --force to run this recipe there"
            )
        return False
    if folder.is_file() or (folder.exists() and any(folder.iterdir())):
        raise UsageError(f"{folder}: exists and is not a sweep run folder; choose another --output")
    return False


def create_folder(folder: Path, recipe: Recipe) -> None:
    """The run folder with the recipe as run and its fingerprint (`run.json`)."""
    from llmdit_cli.artifacts import write_bytes_atomic

    (folder / IMAGES).mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(str(folder / "recipe.toml"), recipe.to_toml().encode())
    info = {
        "name": recipe.name,
        "fingerprint": recipe.fingerprint(),
        "recipe": recipe.source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "axes": recipe.axes(),
        "llmdit_version": __version__,
    }
    write_bytes_atomic(str(folder / "run.json"), (json.dumps(info, indent=2) + "\n").encode())


def read_manifests(folder: Path, warn) -> dict[str, dict]:
    """Every finished cell of every shard: cell id -> its record. A line that is not a whole record
    is skipped with a warning (its cell is redone); a record whose image is gone does not count."""
    done: dict[str, dict] = {}
    for path in sorted(folder.glob("manifest*.jsonl")):
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                cell, status, image = record["cell"], record["status"], record.get("image")
            except (ValueError, KeyError, TypeError):
                warn(f"{path} line {n}: not a manifest record; its cell is redone")
                continue
            if status == "done" and isinstance(image, str) and (folder / image).is_file():
                done[cell] = record
    return done


def append_record(path: Path, record: dict) -> None:
    """One line, written with one `write` on an O_APPEND descriptor: whole or (after a kill) cut
    short, never interleaved with another process's line."""
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def end_with_newline(path: Path) -> None:
    """A line cut short by a kill must not swallow the next record."""
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            last = fh.read(1)
        if last != b"\n":
            append_raw(path, b"\n")


def append_raw(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def writer_tag() -> str:
    """This process, in the names of the temporary files it writes: host and pid."""
    import socket

    return f"{socket.gethostname().replace('.', '_')}-{os.getpid()}"


def remove_stale_temps(folder: Path) -> None:
    """Temporary images left by killed sweep processes of this host (a process still running, here
    or on another node sharing the folder, keeps its own)."""
    host = writer_tag().rsplit("-", 1)[0]
    for tmp in (folder / IMAGES).glob(".*.tmp"):
        parts = tmp.name[1:].removesuffix(".tmp").rsplit(".", 2)
        owner = parts[1].rsplit("-", 1) if len(parts) == 3 else []
        if len(owner) == 2 and owner[0] == host and owner[1].isdigit() and not alive(int(owner[1])):
            tmp.unlink(missing_ok=True)


# -- running cells ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    left_out: int = 0
    elsewhere: int = 0  # claimed by another process still running them
    seconds: list[float] = field(default_factory=list)


class QuietReporter:
    """The engine's reporter inside the sweep's own progress bar: hints once each, no nested bars."""

    def __init__(self, out):
        self.out, self.seen = out, set()

    def hint(self, message: str) -> None:
        if message not in self.seen:
            self.seen.add(message)
            self.out.hint(message)

    def log(self, message: str) -> None:
        self.out.log(message)

    def status(self, message: str):
        return nullcontext()

    @contextmanager
    def progress(self, description: str, total: int):
        yield lambda done, total_, info="": None


def shard_for(text: str | None, env: dict[str, str]) -> tuple[Shard, str | None]:
    """The shard (`--shard K/N`, else the scheduler's) and the device a distributed launch gives
    this process, when it has a GPU (None: leave the device setting alone)."""
    part, device = (parse_shard(text), None) if text else shard_from_env(env)
    return part, device if device and _cuda() else None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class Selection:
    """This process's cells of a recipe (its shard, up to a limit) and which are done already."""

    cells: list[Cell]
    done: dict[str, dict]
    folder: Path
    ours: bool  # the folder was made by this recipe (else it is made when the sweep starts)

    @property
    def todo(self) -> list[Cell]:
        return [c for c in self.cells if c.id not in self.done]


def select(recipe: Recipe, part: Shard, limit: int | None, force: bool, warn) -> Selection:
    """The shard's cells and the finished ones from the run folder's manifests (nothing written)."""
    from llmdit_cli.sweep.recipe import cells

    folder = Path(recipe.output)
    ours = check_folder(folder, recipe, force)
    done = read_manifests(folder, warn) if folder.is_dir() else {}
    return Selection([c for c in cells(recipe) if part.takes(c)][:limit], done, folder, ours)


def execute(engine, recipe: Recipe, sel: Selection, part: Shard, device: str | None, report, on_start, on_done):
    """Run the selection's cells not done yet: leave out those beyond their model (one warning
    each), plan and check every cell before the folder or a weight, then make them.
    `on_start(n)` is told how many will run, `on_done(cell, record)` each one's manifest record."""
    todo = sel.todo
    skipped = len(sel.cells) - len(todo)
    if not todo:
        return Outcome(skipped=skipped)
    kept = fits_model(todo, engine, recipe, device, report.hint)
    planned = plan(engine, recipe, kept, device, report)
    if not sel.ours:
        create_folder(sel.folder, recipe)
    remove_stale_temps(sel.folder)
    on_start(len(planned))
    result = run_cells(engine, planned, sel.folder, part, report, on_done)
    result.skipped, result.left_out = skipped, len(todo) - len(kept)
    return result


def cell_plan(cell: Cell, recipe: Recipe, device: str | None):
    from llmdit_cli.config import resolve_defaults

    keyed = {}
    for key, value in cell.settings.items():
        table = "grid" if key in recipe.grid else "zip" if key in recipe.zip else "base"
        keyed[key] = (value, f"{recipe.source} [{table}]")
    if device and "optimization.device" not in cell.settings:
        keyed["optimization.device"] = (device, "distributed launch (LOCAL_RANK)")
    return resolve_defaults(keyed=keyed)


def fits_model(cells: list[Cell], engine, recipe: Recipe, device: str | None, warn) -> list[Cell]:
    """Leave out cells whose values go beyond their model (`workflows.beyond_limits`: a hidden layer
    deeper than its text encoder, SLG blocks it lacks, ...), with one warning per setting naming
    the values."""
    from llmdit_cli.workflows import beyond_limits

    kept, dropped = [], {}
    limits: dict[str, Any] = {}
    for cell in cells:
        r = cell_plan(cell, recipe, device)
        if cell.model not in limits:
            limits[cell.model] = engine.model(r)[0].limits()
        beyond = beyond_limits(r.settings, limits[cell.model])
        for b in beyond[:1]:
            dropped.setdefault((b.key, cell.model), set()).add(b.value)
        if not beyond:
            kept.append(cell)
    for (key, model), values in dropped.items():
        warn(f"{key} {', '.join(map(str, sorted(values)))}: beyond model {model}; those cells are left out")
    return kept


def plan(engine, recipe: Recipe, todo: list[Cell], device: str | None, report) -> list[tuple[Cell, Any]]:
    """Each cell's request, filled (family defaults, size) and checked before any weights load: a
    bad value stops the sweep here, named with the recipe table it came from."""
    from llmdit_cli.engine import GenerateRequest

    planned = []
    for cell in todo:
        req = GenerateRequest(cell_plan(cell, recipe, device), seeds=[cell.seed])
        planned.append((cell, engine.prepare(_size(req, engine, recipe), report)))
    # Grouped by model (reference, LoRA stack, placement), so each loads once and is let go after.
    order = {key: n for n, key in enumerate(dict.fromkeys(str(engine.key_for(req.settings)) for _, req in planned))}
    return sorted(planned, key=lambda p: (order[str(engine.key_for(p[1].settings))], p[0].index))


def run_cells(engine, planned: list[tuple[Cell, Any]], folder: Path, shard: Shard, report, on_done) -> Outcome:
    """Make every cell's image (encodings shared between cells; cells that differ only in prompt
    and seed `generation.batch_size` to a forward); record each in the shard's manifest; a
    failing cell (or batch) is recorded as failed and the sweep goes on. Each cell is claimed
    first (`claims.py`): one another process holds is left to it, and looked at again at the end
    in case that process died."""
    from llmdit_cli.sweep.claims import Claims

    ctx = _Run(engine, folder, shard, report, on_done, folder / shard.manifest)
    end_with_newline(ctx.manifest)
    with Claims(folder) as claims:
        ctx.claims = claims
        elsewhere = ctx.run_all(planned)
        if elsewhere:
            ctx.run_all(elsewhere, last=True)
    return ctx.outcome


@dataclass
class _Run:
    """One process's pass over its planned cells."""

    engine: Any
    folder: Path
    shard: Shard
    report: Any
    on_done: Any
    manifest: Path
    claims: Any = None
    outcome: Outcome = field(default_factory=Outcome)
    encodings: dict = field(default_factory=dict)
    tag: str = field(default_factory=lambda: writer_tag())
    previous: Any = None

    def run_all(self, planned: list[tuple[Cell, Any]], last: bool = False) -> list[tuple[Cell, Any]]:
        """Make the cells this process can claim; returns those another process holds."""
        elsewhere = []
        for group in cell_batches(planned):
            mine, theirs = self.claim(group)
            elsewhere += theirs
            if not mine:
                continue
            key = self.engine.key_for(mine[0][1].settings)
            if self.previous is not None and key != self.previous:
                self.engine.release(self.previous)  # cells are grouped by model: the last one is done with
                self.encodings.clear()
            self.previous = key
            _run_group(self, mine)
        if last:
            for cell, _ in elsewhere:
                self.outcome.elsewhere += 1
                self.on_done(cell, {"status": "elsewhere"})
        return elsewhere

    def claim(self, group: list[tuple[Cell, Any]]) -> tuple[list, list]:
        mine, theirs, done = [], [], None
        for cell, req in group:
            how = self.claims.take(cell.id)
            if how == "over":  # its owner is gone, maybe after recording it
                done = read_manifests(self.folder, lambda m: None) if done is None else done
                if cell.id in done:
                    self.claims.done(cell.id)
                    self.outcome.skipped += 1
                    continue
            (mine if how else theirs).append((cell, req))
        return mine, theirs


def cell_batches(planned: list[tuple[Cell, Any]]) -> list[list[tuple[Cell, Any]]]:
    """The planned cells in runs of up to `generation.batch_size` that may share a forward
    (`engine.batch_key`), in the order of their first cell; models stay grouped."""
    from llmdit_cli.engine.engine import batch_key

    open_: dict[str, list] = {}
    groups: list[list] = []
    for cell, req in planned:
        key = batch_key(req)
        group = open_.get(key)
        if group is None or len(group) >= req.settings.generation.batch_size:
            group = open_[key] = []
            groups.append(group)
        group.append((cell, req))
    return groups


def _run_group(run: _Run, group: list[tuple[Cell, Any]]) -> None:
    from llmdit_cli.artifacts import write_bytes_atomic
    from llmdit_cli.pngmeta import png_bytes

    start = time.perf_counter()
    records = [_record(cell, run.shard) for cell, _ in group]
    try:
        for cell, req in group:
            req.embeds = _encoding(run.engine, req, cell.prompt, run.encodings, run.report)
        made = run.engine.generate_many([req for _, req in group], run.report)
        seconds = round((time.perf_counter() - start) / len(group), 4)
        for (cell, _), record, (generated,) in zip(group, records, made):
            image = f"{IMAGES}/{cell.image_name()}"
            write_bytes_atomic(str(run.folder / image), png_bytes(generated.image, generated.settings), run.tag)
            record.update(status="done", image=image, settings=generated.settings, seconds=seconds)
            append_record(run.manifest, record)
            run.claims.done(cell.id)
            run.outcome.done += 1
            run.outcome.seconds.append(seconds)
            run.on_done(cell, record)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a cell that fails (out of memory, ...) is recorded; the sweep goes on
        message = exc.render() if isinstance(exc, LlmditError) else f"{type(exc).__name__}: {exc}"
        seconds = round((time.perf_counter() - start) / len(group), 4)
        for (cell, _), record in zip(group, records):
            if "status" in record:
                continue  # written before the failure
            record.update(status="failed", error=message.splitlines()[0] if message else type(exc).__name__)
            record.update(seconds=seconds)
            append_record(run.manifest, record)
            run.claims.give_back(cell.id)  # a rerun (or another process) tries it again
            run.outcome.failed += 1
            run.report.hint(f"cell {cell.index} failed: {record['error']}")
            run.on_done(cell, record)


def _record(cell: Cell, shard: Shard) -> dict[str, Any]:
    return {
        "cell": cell.id,
        "index": cell.index,
        "axes": cell.axes,
        "prompt": cell.prompt,
        "seed": cell.seed,
        "shard": f"{shard.index}/{shard.count}",
    }


def _encoding(engine, req, prompt: str, encodings: dict, report):
    """The cell's embeddings, encoded once per prompt and encoder settings."""
    from llmdit_cli.engine import EncodeRequest

    r = req.settings
    with_negative = engine.model(r)[0].code.wants_negative(r.generation)
    key = _encoding_key(r, prompt, with_negative)
    if key not in encodings:
        encodings[key] = engine.encode(EncodeRequest(r, [prompt], with_negative=with_negative), report)
    return encodings[key]


def _size(req, engine, recipe: Recipe):
    """The request with width and height as `size_factor` x the family's default, where the
    recipe leaves them open."""
    if recipe.size_factor is None:
        return req
    handle, _ = engine.model(req.settings)
    step = handle.limits().size_multiple
    sides = {side: handle.defaults().get(side) for side in ("width", "height")}
    sized = {side: max(step, round(base * recipe.size_factor / step) * step) for side, base in sides.items() if base}
    source = f"{recipe.source} size_factor {recipe.size_factor:g} x model family {handle.variant}"
    return replace(req, settings=req.settings.with_defaults(sized, source))


def _encoding_key(r, prompt: str, with_negative: bool) -> tuple:
    from llmdit_cli.engine import Engine

    s = r.settings
    return (
        Engine.key_for(r),
        json.dumps(s.encoder.model_dump(), sort_keys=True),
        json.dumps(s.vl.model_dump(), sort_keys=True),  # vision conditioning changes the embeddings too
        s.generation.negative_prompt,
        with_negative,
        prompt,
    )
