"""What `--attention-backend auto` finds on this machine: each backend's probe, eager and compiled.

    python benchmarks/attention_probe.py [--device cuda] [--dtype bfloat16]

For every backend llmdit names, one row: the install/device check, then the probe that `auto` and
a named backend run before use (`llmdit_cli.models.optimise._probe_problem`: a padded batch at head
size 128, compared with float32 SDPA), eagerly and under torch.compile, with the seconds each took.
PyTorch's own `native` and `sdpa` are probed under compile here too, although llmdit skips that
(they are what torch.compile is built around): on a GPU this row shows that the compiled probe runs.
Then the backend `auto` picks with and without `--compile`. Issue 27 item 7 is checked on a GPU by
this table: a row that says `ok` must also run `llmdit generate --attention-backend NAME` (see
gpu_check.py), and one that fails must be refused by it in one line. Last (`--cli`), the command
itself on the demo model, in this process: `auto` (what it logs), each optional backend whose
probes passed, and the first that failed, alone and with `--compile` (exit status and the
attention line or the last line it printed).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time


def probe_row(name: str, device: str, dtype: str) -> str:
    from llmdit_cli.models import optimise

    static = optimise.attention_backend_problem(name, device)
    if static:
        return f"| {name} | {static} | - | - |"
    cells = []
    for compile in (False, True):
        start = time.perf_counter()
        problem = optimise._probe_problem(name, device, dtype, compile)
        cells.append(f"{problem or 'ok'} ({time.perf_counter() - start:.1f} s)")
    return f"| {name} | installed | {cells[0]} | {cells[1]} |"


def cli_row(argv: list[str], device: str) -> str:
    """`llmdit generate` on the demo with ARGV, in-process: exit status, seconds, last stderr line."""
    from llmdit_cli.cli.app import app

    err = io.StringIO()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        full = ["generate", "a red circle", "--model", "demo", "--device", device, "-o", f"{tmp}/a.png", *argv]
        code = 0
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                app(args=full, standalone_mode=False)
        except SystemExit as exc:
            code = exc.code or 0
        except Exception as exc:  # noqa: BLE001 - an escaped exception is the finding
            code, err = "exception", io.StringIO(f"{type(exc).__name__}: {exc}")
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    said = next((ln for ln in lines if ln.startswith("attention:")), lines[-1] if lines else "(nothing on stderr)")
    return f"| {' '.join(argv)} | {code} | {time.perf_counter() - start:.1f} s | {said[:300]} |"


def main() -> None:
    import torch

    from llmdit_cli.errors import render
    from llmdit_cli.models import optimise

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--cli", action="store_true", help="also run `llmdit generate` on the demo model")
    args = parser.parse_args()
    print(f"torch {torch.__version__} on {args.device} ({args.dtype})")
    print("| backend | installed here | probe | probe under torch.compile |")
    print("| --- | --- | --- | --- |")
    failed = []
    for name in optimise.ATTENTION_BACKENDS:
        row = probe_row(name, args.device, args.dtype)
        print(row, flush=True)
        if row.count("ok (") < 2:  # refused eagerly, under compile, or both
            failed.append(name)
    dtype = getattr(torch, args.dtype)
    for compile in (False, True):
        chosen, passed_over = optimise.auto_attention_backend(args.device, dtype, compile)
        why = "; ".join(f"{n}: {render(p)}" for n, p in passed_over.items())
        print(f"auto{' with --compile' if compile else ''}: {chosen or 'sdpa (the default)'} ({why})")
    if args.cli:
        os.environ["COLUMNS"] = "400"  # llmdit's log lines unwrapped (Rich wraps at 80 off a terminal)
        print("\n| llmdit generate --model demo ... | exit | took | attention line or last line |")
        print("| --- | --- | --- | --- |")
        # auto; each optional backend that passed its probes (it must run); one that failed (it
        # must be refused before loading), alone and with --compile.
        passed = [n for n in optimise.ATTENTION_BACKENDS if n not in failed and n not in ("native", "sdpa")]
        runs = [["auto"], *([n] for n in passed), *([n] for n in failed[:1]), *([n, "--compile"] for n in failed[:1])]
        for argv in runs:
            print(cli_row(["--attention-backend", *argv], args.device), flush=True)


if __name__ == "__main__":
    main()
