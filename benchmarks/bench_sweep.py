"""Sweep benchmarks, as ratios measured in one run (never as test assertions).

1. A 20-cell sweep on the demo against 20 separate `llmdit generate` processes making the same
   images: whole wall time, interleaved A B A B, medians. Target: the sweep >= 5x faster.
2. The sweep's own per-image path (plan, shared encodings, PNG written atomically, manifest line)
   against the engine called in a loop in-process on the same cells (request, generate, PNG
   written), both with the model already loaded, interleaved. Target: <= 1.05x. Also against a
   loop that shares encodings as the sweep does, which leaves only the sweep's bookkeeping.
3. Resume: rerunning a finished 200-cell sweep (nothing to do), against process start-up
   (`llmdit --version`). Target: under 2 s more than start-up.

    OMP_NUM_THREADS=1 python benchmarks/bench_sweep.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = ["a red circle on a blue background", "a green square on a yellow background"]
RECIPE_20 = """
model = "demo"
prompts = {prompts}
seeds = [1, 2, 3, 4, 5]
[base]
generation.width = 32
generation.height = 32
[grid]
generation.steps = [1, 2]
"""
RECIPE_200 = """
model = "demo"
prompts = {prompts}
seeds = {seeds}
[base]
generation.width = 32
generation.height = 32
generation.steps = 1
"""
LLMDIT = [sys.executable, "-m", "llmdit_cli"]


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def separate_processes(cwd: Path, out: Path) -> float:
    start = time.perf_counter()
    for prompt in PROMPTS:
        for steps in (1, 2):
            for seed in range(1, 6):
                subprocess.run(
                    [
                        *LLMDIT,
                        "generate",
                        prompt,
                        "--model",
                        "demo",
                        "-W",
                        "32",
                        "-H",
                        "32",
                        "--steps",
                        str(steps),
                        "--seed",
                        str(seed),
                        "-q",
                        "-o",
                        str(out / f"{prompt[:5]}{steps}{seed}.png"),
                    ],
                    cwd=cwd,
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
    return time.perf_counter() - start


def whole_process(work: Path, repeats: int) -> dict:
    recipe = work / "twenty.toml"
    recipe.write_text(RECIPE_20.format(prompts=PROMPTS))
    sweep, separate = [], []
    for i in range(repeats):
        sweep.append(timed([*LLMDIT, "sweep", str(recipe), "-q", "-o", str(work / f"run{i}")], work))
        out = work / f"separate{i}"
        out.mkdir()
        separate.append(separate_processes(work, out))
        print(f"  repeat {i}: sweep {sweep[-1]:.1f} s, 20 processes {separate[-1]:.1f} s", flush=True)
    s, p = statistics.median(sweep), statistics.median(separate)
    return {"sweep_s": s, "separate_s": p, "speed_up": p / s}


def per_image(work: Path, repeats: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from llmdit_cli.artifacts import write_bytes_atomic
    from llmdit_cli.cli.output import Output
    from llmdit_cli.engine import EncodeRequest, Engine, GenerateRequest
    from llmdit_cli.pngmeta import png_bytes
    from llmdit_cli.sweep import recipe as recipes
    from llmdit_cli.sweep import run

    path = work / "per-image.toml"
    path.write_text(RECIPE_20.format(prompts=PROMPTS))
    r = recipes.load(str(path))
    cells = recipes.cells(r)
    engine = Engine()
    report = run.QuietReporter(Output(quiet=True))

    def sweep_path(folder: Path) -> float:
        run.create_folder(folder, r)
        start = time.perf_counter()
        planned = run.plan(engine, r, cells, None, report)
        run.run_cells(engine, planned, folder, run.Shard(), report, lambda c, rec: None)
        return (time.perf_counter() - start) / len(cells)

    def engine_loop(folder: Path, share_encodings: bool = False) -> float:
        folder.mkdir(parents=True)
        start = time.perf_counter()
        encoded: dict[str, object] = {}
        for cell in cells:
            req = GenerateRequest(run.cell_plan(cell, r, None), seeds=[cell.seed], prompts=[cell.prompt])
            if share_encodings:
                if cell.prompt not in encoded:
                    encoded[cell.prompt] = engine.encode(
                        EncodeRequest(req.settings, [cell.prompt], with_negative=False)
                    )
                req.embeds = encoded[cell.prompt]
            g = engine.generate(req)[0]
            write_bytes_atomic(str(folder / cell.image_name()), png_bytes(g.image, g.settings))
        return (time.perf_counter() - start) / len(cells)

    engine_loop(work / "warm")  # the model loads once, outside the timings
    a, b, c = [], [], []
    for i in range(repeats):
        a.append(sweep_path(work / f"sweep-path{i}"))
        b.append(engine_loop(work / f"engine-loop{i}"))
        c.append(engine_loop(work / f"engine-shared{i}", share_encodings=True))
        print(
            f"  repeat {i}: sweep {a[-1] * 1000:.1f} ms/image, engine loop {b[-1] * 1000:.1f}, "
            f"with encodings shared {c[-1] * 1000:.1f}",
            flush=True,
        )
    s, e, sh = statistics.median(a), statistics.median(b), statistics.median(c)
    return {"sweep_ms": s * 1000, "engine_ms": e * 1000, "shared_ms": sh * 1000, "ratio": s / e, "ratio_shared": s / sh}


def resume(work: Path, repeats: int) -> dict:
    recipe = work / "two-hundred.toml"
    recipe.write_text(RECIPE_200.format(prompts=PROMPTS, seeds=list(range(100))))
    folder = work / "run200"
    timed([*LLMDIT, "sweep", str(recipe), "-q", "-o", str(folder)], work)  # make it finished
    rerun, start = [], []
    for _ in range(repeats):
        rerun.append(timed([*LLMDIT, "sweep", str(recipe), "-q", "-o", str(folder)], work))
        start.append(timed([*LLMDIT, "--version"], work))
    r, s = statistics.median(rerun), statistics.median(start)
    return {"rerun_s": r, "start_s": s, "above_start_s": r - s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        print("1. 20-cell sweep vs 20 `llmdit generate` processes (whole wall time)")
        w = whole_process(work, args.repeats)
        print(
            f"   sweep {w['sweep_s']:.1f} s, separate {w['separate_s']:.1f} s: {w['speed_up']:.1f}x faster (target >= 5x)"
        )
        print("2. sweep per-image path vs the engine in a loop (model loaded)")
        p = per_image(work, max(args.repeats, 5))
        print(
            f"   sweep {p['sweep_ms']:.1f} ms/image, engine {p['engine_ms']:.1f} ms/image: {p['ratio']:.3f}x (target <= 1.05x)"
        )
        print("3. rerun of a finished 200-cell sweep vs process start-up")
        r = resume(work, max(args.repeats, 5))
        print(
            f"   rerun {r['rerun_s']:.2f} s, start-up {r['start_s']:.2f} s: {r['above_start_s']:.2f} s above start-up (target < 2 s)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
