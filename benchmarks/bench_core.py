"""Core benchmarks, reported as ratios measured in one run (never as test assertions).

1. `llmdit --help` wall time against `python -c pass` (interpreter start-up), and `llmdit --help` /
   every `llmdit CMD --help` against the same help of a minimal two-command Typer app (Typer's
   own import and rendering are the floor), interleaved A B A B, medians of at least 7.
2. `llmdit generate --model demo` against a plain script calling diffusers' ZImagePipeline on the
   same folder and settings: whole process, and in-process per image.

    OMP_NUM_THREADS=1 python benchmarks/bench_core.py [--repeats 5] [--help-only | --per-image-only]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPT = "a red circle on a blue background"
SETTINGS = dict(width=64, height=64, steps=4, seed=7)

PLAIN_SCRIPT = f"""
import torch
torch.set_num_threads(1)
from diffusers import ZImagePipeline
from llmdit_cli.models import DEMO_PATH
pipe = ZImagePipeline.from_pretrained(DEMO_PATH, local_files_only=True)
pipe.set_progress_bar_config(disable=True)
img = pipe({PROMPT!r}, height={SETTINGS["height"]}, width={SETTINGS["width"]},
           num_inference_steps={SETTINGS["steps"]}, guidance_scale=0.0,
           generator=torch.Generator().manual_seed({SETTINGS["seed"]})).images[0]
img.save("plain.png")
"""


# The floor for help times: Typer's own import and help rendering, in an app that does nothing.
MINIMAL_APP = """
import typer

app = typer.Typer()


@app.command()
def one(name: str = "x"):
    \"\"\"The first command.\"\"\"


@app.command()
def two(count: int = 1):
    \"\"\"The second command.\"\"\"


app()
"""
from llmdit_cli.cli.app import COMMANDS  # noqa: E402 - every command, as `llmdit --help` lists them


def interleaved(cmds: dict[str, list[str]], cwd: str, repeats: int) -> dict[str, float]:
    """Median wall time of each command, run in turns (A B A B ...) so drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(repeats):
        for name, cmd in cmds.items():
            t = time.perf_counter()
            subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def help_ratios(repeats: int) -> list[tuple[str, float, float]]:
    """`llmdit --help` and every `llmdit CMD --help` against the minimal app's help."""
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "minimal.py").write_text(MINIMAL_APP)
        cmds = {
            "floor": [py, "minimal.py", "--help"],
            "floor one": [py, "minimal.py", "one", "--help"],
            "llmdit": [py, "-m", "llmdit_cli", "--help"],
        }
        cmds.update({c: [py, "-m", "llmdit_cli", c, "--help"] for c in COMMANDS})
        med = interleaved(cmds, tmp, repeats)
    rows = [("`llmdit --help` / minimal Typer app `--help`", med["llmdit"], med["floor"])]
    rows += [(f"`llmdit {c} --help` / minimal Typer app `one --help`", med[c], med["floor one"]) for c in COMMANDS]
    return rows


def wall(cmd: list[str], cwd: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def in_process(repeats: int) -> tuple[float, float]:
    import torch
    from diffusers import ZImagePipeline

    from llmdit_cli.config import resolve
    from llmdit_cli.engine import Engine, GenerateRequest
    from llmdit_cli.models import DEMO_PATH

    torch.set_num_threads(1)
    pipe = ZImagePipeline.from_pretrained(DEMO_PATH, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    engine = Engine()

    def request():
        return GenerateRequest(
            resolve(flags={"model": "demo", "width": 64, "height": 64, "steps": 4}), seeds=[7], prompts=[PROMPT]
        )

    def stock_once():
        pipe(
            PROMPT,
            height=64,
            width=64,
            num_inference_steps=4,
            guidance_scale=0.0,
            generator=torch.Generator().manual_seed(7),
        ).images[0]

    def ours_once():
        engine.generate(request())

    # Interleaved A B A B after a warm-up of each, so drift (heat, other load) hits both alike.
    stock_once(), ours_once()
    times: dict = {stock_once: [], ours_once: []}
    for _ in range(repeats * 4):
        for fn in (stock_once, ours_once):
            t = time.perf_counter()
            fn()
            times[fn].append(time.perf_counter() - t)
    return statistics.median(times[stock_once]), statistics.median(times[ours_once])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--help-only", action="store_true", help="only the help-time ratios")
    parser.add_argument("--per-image-only", action="store_true", help="only the in-process per-image ratio")
    args = parser.parse_args()
    if args.help_only:
        print_rows(help_ratios(max(args.repeats, 7)))
        return
    if args.per_image_only:
        stock_img, ours_img = in_process(args.repeats)
        print_rows([("llmdit engine / `ZImagePipeline.__call__` (in-process, per image)", ours_img, stock_img)])
        return
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        base = wall([py, "-c", "pass"], tmp, args.repeats)
        helps = wall([py, "-m", "llmdit_cli", "--help"], tmp, args.repeats)
        gen_help = wall([py, "-m", "llmdit_cli", "generate", "--help"], tmp, args.repeats)
        Path(tmp, "plain.py").write_text(PLAIN_SCRIPT)
        plain = wall([py, "plain.py"], tmp, args.repeats)
        ours = wall(
            [
                py,
                "-m",
                "llmdit_cli",
                "generate",
                PROMPT,
                "--model",
                "demo",
                "-W",
                "64",
                "-H",
                "64",
                "--steps",
                "4",
                "--seed",
                "7",
                "-q",
                "-o",
                "ours.png",
            ],
            tmp,
            args.repeats,
        )
    stock_img, ours_img = in_process(args.repeats)
    rows = [
        ("`llmdit --help` / `python -c pass`", helps, base),
        ("`llmdit generate --help` / `python -c pass`", gen_help, base),
        ("`llmdit generate --model demo` / plain ZImagePipeline script (whole process)", ours, plain),
        ("llmdit stages / `ZImagePipeline.__call__` (in-process, per image)", ours_img, stock_img),
    ]
    print_rows(rows + help_ratios(max(args.repeats, 7)))


def print_rows(rows) -> None:
    print("| measurement | llmdit (s) | baseline (s) | ratio |")
    print("| --- | --- | --- | --- |")
    for name, a, b in rows:
        print(f"| {name} | {a:.3f} | {b:.3f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
