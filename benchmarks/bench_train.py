"""Training benchmarks, as ratios measured in one run.

1. Steps/s of `llmdit train` (its loop: Accelerate, cached stage files, bucketed batches) against a
   plain PyTorch loop with the same objective on the same tiny model, data and batch.
2. Peak memory of a training process with and without gradient checkpointing (on CPU the peak
   resident set size of a fresh process; on CUDA the peak allocated memory).

    OMP_NUM_THREADS=1 python benchmarks/bench_train.py [--steps 40] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_data(folder: Path) -> Path:
    from llmdit_cli.train.shapes import write_dataset

    return write_dataset(folder, size=32, per_combo=2)


def llmdit_rate(data: Path, out: Path, steps: int, batch: int, ckpt: bool = False) -> float:
    from llmdit_cli.train.loop import Run, train
    from llmdit_cli.train.recipe import load_recipe

    r = load_recipe(
        None,
        {
            "model": "demo",
            "method": "full",
            "data.path": str(data),
            "data.resolution": 32,
            "train.batch_size": batch,
            "train.max_steps": steps,
            "output.dir": str(out),
            "output.checkpoint_every": 10**9,
            "train.gradient_checkpointing": ckpt,
        },
    )
    marks = {}

    from contextlib import contextmanager

    @contextmanager
    def progress(description, total):
        def update(step, loss=None, lr=None):
            marks.setdefault("first", (step, time.perf_counter()))
            marks["last"] = (step, time.perf_counter())

        yield update

    train(Run(r, out, lambda m: None, progress))
    (s0, t0), (s1, t1) = marks["first"], marks["last"]
    return (s1 - s0) / (t1 - t0)


def plain_rate(data: Path, steps: int, batch: int) -> float:
    """The same objective in a bare loop: fixed tensors in memory, AdamW, no framework."""
    import torch
    from diffusers import ZImageTransformer2DModel

    from llmdit_cli.models import DEMO_PATH
    from llmdit_cli.train.cache import load_embeds, load_latents

    cache = data / ".llmdit-cache"
    lat = [load_latents(p) for p in sorted((cache / "latents").glob("*"))][:batch]
    emb = [load_embeds(p) for p in sorted((cache / "embeds").glob("*"))]
    x0 = torch.stack(lat)
    embeds = [emb[i % len(emb)] for i in range(len(lat))]
    model = ZImageTransformer2DModel.from_pretrained(DEMO_PATH / "transformer").train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    t0 = None
    for step in range(steps):
        if step == 1:
            t0 = time.perf_counter()
        s = torch.rand(len(lat), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        xt = (1 - s.view(-1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1) * noise
        out = model(list(xt.unsqueeze(2).unbind(0)), 1 - s, embeds, return_dict=False)[0]
        loss = ((torch.stack(out).squeeze(2) - (x0 - noise)) ** 2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    return (steps - 1) / (time.perf_counter() - t0)


def peak_memory(data: Path, steps: int, batch: int, ckpt: bool) -> float:
    """MiB: peak RSS of a fresh process that trains (CPU), or peak CUDA allocation."""
    code = (
        f"import sys, json, resource, tempfile, torch; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from bench_train import llmdit_rate\n"
        f"llmdit_rate(__import__('pathlib').Path({str(data)!r}), __import__('pathlib').Path(tempfile.mkdtemp()), "
        f"{steps}, {batch}, {ckpt})\n"
        "peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else "
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print(json.dumps(peak))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    a = parser.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp) / "data")
        ours = llmdit_rate(data, Path(tmp) / "run", a.steps, a.batch)
        plain = plain_rate(data, a.steps, a.batch)
        mem_plain = peak_memory(data, 5, a.batch * 4, False)
        mem_ckpt = peak_memory(data, 5, a.batch * 4, True)
    print("| measurement | llmdit | baseline | ratio |")
    print("| --- | --- | --- | --- |")
    print(
        f"| training steps/s, batch {a.batch} (llmdit train / plain PyTorch loop) | {ours:.2f} | {plain:.2f} | "
        f"{ours / plain:.2f} |"
    )
    print(
        f"| peak memory MiB, batch {a.batch * 4} (gradient checkpointing / none) | {mem_ckpt:.0f} | {mem_plain:.0f} | "
        f"{mem_ckpt / mem_plain:.2f} |"
    )


if __name__ == "__main__":
    main()
