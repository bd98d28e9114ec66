"""Rebuild the shipped `demo` model.

    python scripts/build_demo.py train   # llmdit train recipes/demo-shapes.toml, then copy its model
    python scripts/build_demo.py random  # the untrained tiny pipeline (DESIGN.md §4), seeded weights
    python scripts/build_demo.py ship --run RUN   # copy an already trained RUN/model

`train` runs the demo recipe (about 20 minutes on 2 CPU cores) in runs/demo-shapes and copies the
resulting diffusers folder to llmdit_cli/assets/demo, storing weights as bfloat16 to halve the size.
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "llmdit_cli" / "assets" / "demo"
RECIPE = ROOT / "recipes" / "demo-shapes.toml"


def ship(model: Path, target: Path = DEMO, seeds: int = 4) -> dict:
    """Copy a trained folder to the package, weights in bfloat16 (same scores, half the bytes), and
    record its held-out scores in llmdit-demo.json."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    from llmdit_cli.families import mark_variant
    from llmdit_cli.families.zimage import VARIANTS
    from llmdit_cli.train.evaluate import evaluate

    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model, tmp)
    for f in tmp.rglob("*.safetensors"):
        tensors = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in load_file(f).items()}
        save_file(tensors, f, metadata={"format": "pt"})
    mark_variant(tmp, "demo")
    steps = VARIANTS["demo"]["steps"]
    s = evaluate(str(tmp), list(range(seeds)), steps=steps)
    info = {
        "trained_by": "llmdit train recipes/demo-shapes.toml",
        "held_out_scores": s.__dict__,
        "eval": f"python benchmarks/eval_demo.py --seeds {seeds} --steps {steps}",
    }
    (tmp / "llmdit-demo.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("how", choices=["train", "random", "ship"])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "demo-shapes")
    a = parser.parse_args()
    if a.how == "random":
        from llmdit_cli.families import mark_variant
        from llmdit_cli.tiny import build_pipeline, save_pipeline

        shutil.rmtree(DEMO, ignore_errors=True)
        save_pipeline(build_pipeline(seed=0), DEMO)
        mark_variant(DEMO, "demo")
    else:
        if a.how == "train":
            subprocess.run(
                [sys.executable, "-m", "llmdit_cli", "train", str(RECIPE), "--output", str(a.run)], check=True, cwd=ROOT
            )
        print(ship(a.run / "model"))
    print(DEMO)


if __name__ == "__main__":
    main()
