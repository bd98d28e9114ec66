"""Rebuild the shipped `demo` model: the tiny Z-Image pipeline of DESIGN.md §4 with seeded random
weights. (The training issue replaces these weights with a model trained by `llmdit train`.)

    python scripts/build_demo.py [--out llmdit_cli/assets/demo] [--seed 0]
"""

import argparse
import shutil
from pathlib import Path

from llmdit_cli.tiny import build_pipeline, save_pipeline

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "llmdit_cli" / "assets" / "demo"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    save_pipeline(build_pipeline(seed=args.seed), args.out)
    print(args.out)
