"""Does DyPE stop tiling above the base size? The demo at 2x and 3x its base, per DyPE variant.

    OMP_NUM_THREADS=1 python benchmarks/eval_dype.py [--sizes 64 96] [--seeds 1 2] [--only NAME ...]

Each held-out shapes prompt (18) is generated once per seed. Three things are read from each image:

- one dominant shape: the largest connected blob of shape-coloured pixels holds at least 80% of
  them. A 2x2 tiling has four blobs, so it fails.
- background colour right, and shape colour right: the demo evaluator's reader
  (`train/evaluate.classify`).

Variants: no DyPE, then each method with its defaults and with other scales and exponents.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS: dict[str, dict] = {
    "no DyPE": {},
    "--dype (default)": {"dype": True},
    "vision_yarn": {"dype": True, "dype_method": "vision_yarn"},
    "vision_yarn exponent 0": {"dype": True, "dype_method": "vision_yarn", "dype_exponent": 0.0},
    "vision_yarn scale 1": {"dype": True, "dype_method": "vision_yarn", "dype_scale": 1.0},
    "yarn": {"dype": True, "dype_method": "yarn"},
    "yarn exponent 0": {"dype": True, "dype_method": "yarn", "dype_exponent": 0.0},
    "ntk": {"dype": True, "dype_method": "ntk"},
    "ntk exponent 0": {"dype": True, "dype_method": "ntk", "dype_exponent": 0.0},
}


def run(name: str, flags: dict, size: int, seeds: list[int], engine) -> dict:
    from llmdit_cli.config import resolve
    from llmdit_cli.engine import GenerateRequest
    from llmdit_cli.train.evaluate import classify, dominant
    from llmdit_cli.train.shapes import caption, held_out

    wanted = sorted(held_out())
    r = resolve(flags={"model": "demo", "width": size, "height": size, **flags})
    made = engine.generate(GenerateRequest(r, seeds=seeds, prompts=[caption(*c) for c in wanted]))
    one = bg = colour = 0
    for i, g in enumerate(made):
        shape, want_colour, want_bg = wanted[i // len(seeds)]
        got_bg, got_colour, _ = classify(g.image)
        one += dominant(g.image, want_colour)
        bg += got_bg == want_bg
        colour += got_colour == want_colour
    n = len(made)
    return {"variant": name, "size": size, "n": n, "one_shape": one, "background": bg, "colour": colour}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 96])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    a = p.parse_args()
    import torch

    from llmdit_cli.engine import Engine

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    engine = Engine()
    print("| size | variant | one dominant shape | background right | shape colour right |")
    print("| --- | --- | --- | --- | --- |")
    for size in a.sizes:
        for name, flags in VARIANTS.items():
            if a.only and name not in a.only:
                continue
            s = run(name, flags, size, a.seeds, engine)
            n = s["n"]
            print(
                f"| {size} | {name} | {s['one_shape']}/{n} ({s['one_shape'] / n:.0%}) | {s['background'] / n:.0%} "
                f"| {s['colour'] / n:.0%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
