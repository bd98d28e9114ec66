"""Prompt adherence of a shapes model (the shipped `demo` by default).

    python benchmarks/eval_demo.py [MODEL] [--seeds 4] [--steps N] [--split held-out|train] [--save DIR]

Generates every held-out combination of the synthetic shapes once per seed and reads background
colour, shape colour and shape kind back from the pixels (llmdit_cli/train/evaluate.py).
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

if __name__ == "__main__":
    from llmdit_cli.families.zimage import VARIANTS as FAMILIES
    from llmdit_cli.train.evaluate import evaluate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="demo")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=FAMILIES["demo"]["steps"])
    parser.add_argument("--split", default="held-out", choices=["held-out", "train"])
    parser.add_argument("--save", type=Path, help="also write the images here")
    a = parser.parse_args()

    def save(index, img, got):
        if a.save:
            a.save.mkdir(parents=True, exist_ok=True)
            img.resize((128, 128), 0).save(a.save / f"{index:03d}_{'-'.join(map(str, got))}.png")

    print(evaluate(a.model, list(range(a.seeds)), a.steps, split=a.split, on_image=save).line())
