"""Cost of skip-layer guidance and DyPE against a plain run, as ratios measured in one run.

In-process on the shipped demo model (loaded once), denoising only (no encode or decode), medians:

- SLG over every step / plain: one extra transformer pass per step in the window, so about 2.
- SLG with Z-Image's window (5%-50% of the steps) / plain: about 1 + the share of steps in it.
- CFG + SLG over every step / CFG: the CFG pass is batched (2 items), the skip pass adds 1 item.
- DyPE at 2x the base resolution / plain at the same size: the RoPE is recomputed per step.

    OMP_NUM_THREADS=1 python benchmarks/bench_guidance.py [--repeats 9] [--steps 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPT = "a red circle on a blue background"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="pixels; the demo's base resolution is 32")
    args = parser.parse_args()

    import torch

    from llmdit_cli.config import resolve
    from llmdit_cli.engine import EncodeRequest, Engine
    from llmdit_cli.families.zimage.denoise import DenoiseParams, txt2img
    from llmdit_cli.guidance.dype import DyPEConfig
    from llmdit_cli.guidance.slg import SLGConfig

    torch.set_num_threads(1)
    r = resolve(flags={"model": "demo"})
    engine = Engine()
    e = engine.encode(EncodeRequest(r, [PROMPT]))
    handle, _ = engine.model(r)
    pipe = handle.pipeline("transformer", "vae")  # the stage functions are what is timed here
    n = args.steps
    all_steps = SLGConfig(scale=2.5, layers=[1, 2], start=0.0, stop=1.0)
    z_window = SLGConfig(scale=2.5, layers=[1, 2], start=0.05, stop=0.5)
    base_tokens = 32 // handle.limits().token_pixels
    cases = {
        "plain": DenoiseParams(steps=n),
        "slg_all": DenoiseParams(steps=n, slg=all_steps),
        "slg_window": DenoiseParams(steps=n, slg=z_window),
        "cfg": DenoiseParams(steps=n, guidance_scale=3.0),
        "cfg_slg_all": DenoiseParams(steps=n, guidance_scale=3.0, slg=all_steps),
        "dype": DenoiseParams(steps=n, dype=DyPEConfig(base_tokens=base_tokens)),
    }

    def once(p):
        gen = torch.Generator().manual_seed(0)
        t = time.perf_counter()
        txt2img(pipe, e.cond, e.uncond if p.guidance_scale > 0 else [], p, args.size, args.size, gen)
        return time.perf_counter() - t

    times = {k: [] for k in cases}
    for p in cases.values():
        once(p)  # warm-up
    for _ in range(args.repeats):  # interleaved, so drift hits every case alike
        for k, p in cases.items():
            times[k].append(once(p))
    med = {k: statistics.median(v) for k, v in times.items()}
    in_window = sum(z_window.active_at(i, n) for i in range(n))
    rows = [
        ("SLG, every step / plain", "slg_all", "plain"),
        (f"SLG, window 5%-50% ({in_window} of {n} steps) / plain", "slg_window", "plain"),
        ("CFG + SLG, every step / CFG", "cfg_slg_all", "cfg"),
        (f"DyPE at {args.size}px (2x base) / plain at {args.size}px", "dype", "plain"),
    ]
    print(f"demo model, {args.size}x{args.size}, {n} steps, median of {args.repeats}, one thread")
    print("| measurement | with (s) | without (s) | ratio |\n| --- | --- | --- | --- |")
    for label, a, b in rows:
        print(f"| {label} | {med[a]:.4f} | {med[b]:.4f} | {med[a] / med[b]:.2f} |")


if __name__ == "__main__":
    main()
