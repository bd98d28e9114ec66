"""Train the demo's rewriter: a small chat model of its own that turns terse requests into demo
captions, written to the demo folder's `rewriter/`.

The demo's text encoder conditions the images and is too small to also follow new phrasings, so
`llmdit rewrite --model demo` uses a model folder's `rewriter/` when it has one. This trains one
from scratch on the grammar of `llmdit_cli/train/rewriter.py` ("red circle", "on blue: a
square in green", with made-up words between), formatted with the `demo-caption` rewriter
template and answered by the demo's caption ("a red circle on a black background"). The
settings are in recipes/demo-rewriter.toml; `benchmarks/eval_rewriter.py` scores phrasings the
grammar never uses.

    python scripts/train_demo_rewriter.py [--recipe recipes/demo-rewriter.toml] [--out FOLDER]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "demo-rewriter.toml"))
    parser.add_argument(
        "--out", default=None, help="Model folder to write into (default: the shipped demo; another gets a copy of it)."
    )
    parser.add_argument("--steps", type=int, default=None, help="Override the recipe's steps (quick checks).")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1, as the shipped one).")
    args = parser.parse_args()

    import torch

    from llmdit_cli.models import DEMO_PATH
    from llmdit_cli.rewriting import Sampling, clean, generate_local
    from llmdit_cli.train.rewriter import examples, load_settings, prompt_text, train

    torch.set_num_threads(args.threads)
    cfg = load_settings(args.recipe)
    if args.steps:
        cfg = cfg.model_copy(update={"steps": args.steps})
    out = Path(args.out) if args.out else DEMO_PATH
    if out.resolve() != DEMO_PATH.resolve() and not out.exists():
        shutil.copytree(DEMO_PATH, out, ignore=shutil.ignore_patterns("rewriter"))
    start = time.perf_counter()
    lm, tokenizer = train(DEMO_PATH, cfg, log=lambda line: print(line, flush=True))
    print(f"trained in {time.perf_counter() - start:.0f} s")
    fresh = examples(100, random.Random(cfg.seed + 1))
    sampling = Sampling(temperature=0, max_new_tokens=24)
    right = sum(clean(generate_local(lm, tokenizer, prompt_text(t), sampling, "cpu")) == c for t, c in fresh)
    print(f"fresh grammar requests, exact captions: {right}/{len(fresh)}")
    save(lm, tokenizer, out / "rewriter")
    print(f"wrote {out / 'rewriter'}")


def save(lm, tokenizer, folder: Path) -> None:
    """The rewriter in bfloat16 with its tokenizer, written beside and then moved into place."""
    import torch

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    lm.to(torch.bfloat16).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    # Qwen2Tokenizer rebuilds its own normaliser on load; the generic class reads tokenizer.json
    # as written (with the space after each newline).
    config_file = tmp / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_file.write_text(json.dumps(config, indent=2) + "\n")
    for f in tmp.iterdir():
        f.chmod(0o644)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


if __name__ == "__main__":
    main()
