"""Teach the shipped demo's text encoder to rewrite terse prompts into demo captions.

Generating with the demo conditions on hidden state -2: the token embeddings and the first of
its two layers. Those stay frozen, so every image the demo makes stays the same to the bit. What
trains is what conditioning never reads: the last layer, the final norm and a new, untied
language-model head. The data are synthetic pairs from recipes/demo-rewriter.toml: terse requests
("red circle", "triangle, yellow, on black", "a blue square please") formatted with the
`demo-caption` rewriter template, answered by the demo's caption ("a red circle on a black
background"). Combinations held out of the image data (`train.shapes.held_out`) are held out here
too; `benchmarks/eval_rewriter.py` scores them. The last layer and norm start from the folder's own
(the shipped demo was trained from its random ones; a rerun continues from the trained ones).

    python scripts/train_demo_rewriter.py [--recipe recipes/demo-rewriter.toml] [--out FOLDER]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "demo-rewriter.toml"))
    parser.add_argument(
        "--out", default=None, help="Model folder to write (default: the shipped demo; another is a copy of it)."
    )
    parser.add_argument("--steps", type=int, default=None, help="Override the recipe's steps (quick checks).")
    args = parser.parse_args()

    import torch

    from llmdit_cli.models import DEMO_PATH
    from llmdit_cli.rewriting import Sampling, clean, generate_local
    from llmdit_cli.train.rewriter import load_settings, pairs, prompt_text, train

    torch.set_num_threads(1)
    cfg = load_settings(args.recipe)
    if args.steps:
        cfg = cfg.model_copy(update={"steps": args.steps})
    out = Path(args.out) if args.out else DEMO_PATH
    if out.resolve() != DEMO_PATH.resolve() and not out.exists():
        import shutil

        shutil.copytree(DEMO_PATH, out)
    start = time.perf_counter()
    lm, tokenizer = train(DEMO_PATH, cfg, log=print)
    print(f"trained in {time.perf_counter() - start:.0f} s")
    held = pairs(cfg, held_out=True, rng=random.Random(cfg.seed + 1))
    right = sum(
        clean(generate_local(lm, tokenizer, prompt_text(t), Sampling(temperature=0, max_new_tokens=24), "cpu"))
        == target
        for t, target in held
    )
    print(f"held-out exact captions: {right}/{len(held)}")
    save(lm, out)
    print(f"wrote {out / 'text_encoder'}")


def save(lm, folder: Path) -> None:
    """The text encoder's weights in the shipped dtype (bfloat16); frozen tensors are copied from the
    file as they were, so they stay identical to the bit."""
    import json

    from safetensors.torch import load_file, save_file

    te = folder / "text_encoder"
    files = sorted(te.glob("*.safetensors"))
    old = {k: v for f in files for k, v in load_file(f).items()}
    dtype = next(iter(old.values())).dtype
    new = {k: v.detach().to(dtype).contiguous() for k, v in lm.state_dict().items()}
    for key, value in old.items():
        if key.startswith(("model.embed_tokens.", "model.layers.0.")):
            new[key] = value  # frozen: exactly the bytes shipped before
    for f in files:
        f.unlink()
    save_file(new, te / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((te / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (te / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (te / "model.safetensors").chmod(0o644)


if __name__ == "__main__":
    main()
