"""What `--attention-backend auto` finds on this machine: each backend's probe, eager and compiled.

    python benchmarks/attention_probe.py [--device cuda] [--dtype bfloat16]

For every backend llmdit names, one row: the install/device check, then the probe that `auto` and
a named backend run before use (`llmdit_cli.models.optimise._probe_problem`: a padded batch at head
size 128, compared with float32 SDPA), eagerly and under torch.compile, with the seconds each took.
PyTorch's own `native` and `sdpa` are probed under compile here too, although llmdit skips that
(they are what torch.compile is built around): on a GPU this row shows that the compiled probe runs.
Last, the backend `auto` picks with and without `--compile`. Issue 27 item 7 is checked on a GPU by
this table: a row that says `ok` must also run `llmdit generate --attention-backend NAME` (see
gpu_check.py), and one that fails must be refused by it in one line.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    import torch

    from llmdit_cli.errors import render
    from llmdit_cli.models import optimise

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = parser.parse_args()
    print(f"torch {torch.__version__} on {args.device} ({args.dtype})")
    print("| backend | installed here | probe | probe under torch.compile |")
    print("| --- | --- | --- | --- |")
    for name in optimise.ATTENTION_BACKENDS:
        print(probe_row(name, args.device, args.dtype))
    dtype = getattr(torch, args.dtype)
    for compile in (False, True):
        chosen, passed_over = optimise.auto_attention_backend(args.device, dtype, compile)
        why = "; ".join(f"{n}: {render(p)}" for n, p in passed_over.items())
        print(f"auto{' with --compile' if compile else ''}: {chosen or 'sdpa (the default)'} ({why})")


if __name__ == "__main__":
    main()
