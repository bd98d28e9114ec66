"""Core benchmarks, reported as ratios measured in one run (never as test assertions).

1. `llmdit --help` wall time against `python -c pass` (interpreter start-up).
2. `llmdit generate --model demo` against a plain script calling diffusers' ZImagePipeline on the
   same folder and settings: whole process, and in-process per image.

    OMP_NUM_THREADS=1 python benchmarks/bench_core.py [--repeats 5]
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
img = pipe({PROMPT!r}, height={SETTINGS['height']}, width={SETTINGS['width']},
           num_inference_steps={SETTINGS['steps']}, guidance_scale=0.0,
           generator=torch.Generator().manual_seed({SETTINGS['seed']})).images[0]
img.save("plain.png")
"""


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
        return GenerateRequest(resolve(flags={"model": "demo", "width": 64, "height": 64, "steps": 4}), seeds=[7],
                               prompts=[PROMPT])

    def stock_once():
        pipe(PROMPT, height=64, width=64, num_inference_steps=4, guidance_scale=0.0,
             generator=torch.Generator().manual_seed(7)).images[0]

    def ours_once():
        engine.generate(request())

    def median(fn):
        fn()  # warm-up
        times = []
        for _ in range(repeats * 4):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    return median(stock_once), median(ours_once)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        base = wall([py, "-c", "pass"], tmp, args.repeats)
        helps = wall([py, "-m", "llmdit_cli", "--help"], tmp, args.repeats)
        gen_help = wall([py, "-m", "llmdit_cli", "generate", "--help"], tmp, args.repeats)
        Path(tmp, "plain.py").write_text(PLAIN_SCRIPT)
        plain = wall([py, "plain.py"], tmp, args.repeats)
        ours = wall([py, "-m", "llmdit_cli", "generate", PROMPT, "--model", "demo", "-W", "64", "-H", "64",
                     "--steps", "4", "--seed", "7", "-q", "-o", "ours.png"], tmp, args.repeats)
    stock_img, ours_img = in_process(args.repeats)
    rows = [
        ("`llmdit --help` / `python -c pass`", helps, base),
        ("`llmdit generate --help` / `python -c pass`", gen_help, base),
        ("`llmdit generate --model demo` / plain ZImagePipeline script (whole process)", ours, plain),
        ("llmdit stages / `ZImagePipeline.__call__` (in-process, per image)", ours_img, stock_img),
    ]
    print("| measurement | llmdit (s) | baseline (s) | ratio |")
    print("| --- | --- | --- | --- |")
    for name, a, b in rows:
        print(f"| {name} | {a:.3f} | {b:.3f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
