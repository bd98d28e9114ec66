"""Does guidance distillation bring the student at guidance 0 closer to its teacher with CFG?

    OMP_NUM_THREADS=1 python benchmarks/eval_distill.py [--student PATH] [--seeds 0 1 2 3]

Distils the demo with `recipes/demo-distill.toml` (`llmdit train --objective distill`, teacher:
the demo itself with CFG at 4) from the shapes prompts of the training split, unless `--student`
names a distilled model folder or LoRA file, then makes every held-out shapes prompt (18, never seen in training) once per seed three ways, at
the demo's default steps:

- teacher: the demo with CFG at `--guidance`;
- undistilled: the demo at guidance 0 (one pass per step, as the student);
- student: the distilled model at guidance 0.

and prints the mean PSNR of the undistilled and the student images to the teacher's. The figure
is recorded in benchmarks/README.md ("Guidance distillation").
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def psnr(a, b) -> float:
    import numpy as np

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mse = float(((x - y) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def train_student(out: Path, overrides: list[str]) -> Path:
    """The recipe's student, trained by the CLI on the training split's prompts."""
    from llmdit_cli.train.shapes import caption, combos, held_out

    out.mkdir(parents=True, exist_ok=True)
    prompts = out / "prompts.txt"
    prompts.write_text("".join(caption(*c) + "\n" for c in combos() if c not in held_out()))
    run = out / "run"
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "demo-distill.toml"
    cmd = [sys.executable, "-m", "llmdit_cli", "train", str(recipe), "--dataset", str(prompts)]
    cmd += ["--cache-dir", str(out / "cache"), "-o", str(run), "--resume", "auto", *overrides]
    subprocess.run(cmd, check=True)
    lora = run / "pytorch_lora_weights.safetensors"
    return lora if lora.is_file() else run / "model"


def images(engine, flags: dict, seeds: list[int], split: str) -> list:
    from llmdit_cli.config import resolve_defaults
    from llmdit_cli.engine import GenerateRequest
    from llmdit_cli.train.shapes import caption, combos, held_out

    r = resolve_defaults({"model": "demo", **flags})  # flags may name another model
    wanted = sorted(held_out()) if split == "held-out" else [c for c in combos() if c not in held_out()]
    prompts = [caption(*c) for c in wanted]
    return [g.image for g in engine.generate(GenerateRequest(r, seeds=seeds, prompts=prompts))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--student", type=Path, help="a distilled LoRA file or model folder (default: train one)")
    p.add_argument("--guidance", type=float, default=4.0, help="the teacher's CFG scale (also when training)")
    p.add_argument("--train", default="", help='more `llmdit train` flags when training, e.g. "--max-steps 100"')
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--split", default="held-out", choices=["held-out", "train"], help="prompts to evaluate on")
    p.add_argument("--out", type=Path, default=Path("runs/eval-distill"))
    a = p.parse_args()
    student_path = a.student or train_student(
        a.out, ["--teacher-guidance-scale", str(a.guidance), *shlex.split(a.train)]
    )
    as_student = {"model": str(student_path)} if student_path.is_dir() else {"loras": [str(student_path)]}

    import statistics

    import torch

    from llmdit_cli.engine import Engine

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    engine = Engine()
    teacher = images(engine, {"guidance_scale": a.guidance}, a.seeds, a.split)
    plain = images(engine, {"guidance_scale": 0.0}, a.seeds, a.split)
    student = images(engine, {"guidance_scale": 0.0, **as_student}, a.seeds, a.split)
    before = statistics.mean(psnr(x, t) for x, t in zip(plain, teacher))
    after = statistics.mean(psnr(x, t) for x, t in zip(student, teacher))
    n = len(teacher)
    print("| images | teacher guidance | undistilled vs teacher | student vs teacher | gain |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {n} {a.split} | {a.guidance:g} | {before:.1f} dB | {after:.1f} dB | {after - before:+.1f} dB |")


if __name__ == "__main__":
    main()
