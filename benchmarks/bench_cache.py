"""Embedding-cache benchmarks, as ratios measured in one run (never as test assertions).

1. Whole process: `llmdit encode` and `llmdit generate` on the demo with the prompt cached (hit)
   against an empty cache (miss), interleaved A B A B, medians. Target: hit <= 0.5x miss.
2. In-process encode step of a fresh engine (what a command does: open the model, encode), hit
   against miss. Target: hit <= 0.1x miss.

    OMP_NUM_THREADS=1 python benchmarks/bench_cache.py [--repeats 5]
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

PROMPT = "a red circle on a blue background"
LLMDIT = [sys.executable, "-m", "llmdit_cli"]


def run(args: list[str], cache: Path, cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [*LLMDIT, *args, "--cache-dir", str(cache), "-q"],
        cwd=cwd,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def whole_process(work: Path, repeats: int, args: list[str]) -> dict:
    warm = work / "warm-cache"
    run(args, warm, work)  # fills it
    hit, miss = [], []
    for i in range(repeats):
        hit.append(run(args, warm, work))
        cold = work / f"cold-{i}"
        miss.append(run(args, cold, work))
        shutil.rmtree(cold)
    h, m = statistics.median(hit), statistics.median(miss)
    return {"hit_s": h, "miss_s": m, "ratio": h / m}


def in_process(work: Path, repeats: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from llmdit_cli.config import resolve_defaults
    from llmdit_cli.engine import EncodeRequest, Engine

    def encode(cache: Path) -> float:
        r = resolve_defaults({"model": "demo", "cache_dir": str(cache)})
        start = time.perf_counter()
        Engine().encode(EncodeRequest(r, [PROMPT]))
        return time.perf_counter() - start

    warm = work / "warm-in-process"
    encode(warm)
    hit, miss = [], []
    for i in range(repeats):
        hit.append(encode(warm))
        cold = work / f"cold-in-process-{i}"
        miss.append(encode(cold))
        shutil.rmtree(cold)
    h, m = statistics.median(hit), statistics.median(miss)
    return {"hit_s": h, "miss_s": m, "ratio": h / m}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    try:
        for name, argv in (
            ("encode", ["encode", PROMPT, "--model", "demo", "-o", "e.embeds.safetensors"]),
            ("generate", ["generate", PROMPT, "--model", "demo", "--seed", "1", "-o", "g.png"]),
        ):
            w = whole_process(work, args.repeats, argv)
            print(
                f"whole-process {name}: hit {w['hit_s']:.2f} s, miss {w['miss_s']:.2f} s: {w['ratio']:.2f}x (target <= 0.5x)"
            )
        p = in_process(work, args.repeats)
        print(
            f"in-process encode step: hit {p['hit_s'] * 1000:.1f} ms, miss {p['miss_s'] * 1000:.1f} ms: "
            f"{p['ratio']:.3f}x (target <= 0.1x)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
