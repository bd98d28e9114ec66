"""How well `llmdit rewrite --model demo` (no `--template`: the demo's own, `demo-caption`) turns
held-out terse requests into demo captions ("a <colour> <shape> on a <colour> background").

Two sets, both on the shape/colour/background combinations held out of training, greedy decoding
(temperature 0):

- every phrasing of the training data (`llmdit_cli/train/rewriter.py`), on held-out combinations;
- 15 requests in phrasings training never used (`UNSEEN`), the background named before or after
  the shape or not at all (then black). Target (issue 27): >= 14 of 15 right.

Printed: the share that is a well-formed caption and the share that is exactly the caption asked for.

    OMP_NUM_THREADS=1 python benchmarks/eval_rewriter.py [--model demo]
"""

from __future__ import annotations

import argparse
import os
import random
import re

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Phrasings `train/rewriter.py` never trains on, and whether they name the background.
UNSEEN = [
    ("{c} {s} against {b}", True),
    ("just a {c} {s}", False),
    ("{b} backdrop, {c} {s}", True),
    ("{s} coloured {c}, {b} behind it", True),
    ("{c} {s} on a {b} field", True),
]


def unseen_requests() -> list[tuple[str, str]]:
    """(request, caption): each unseen phrasing three times. With a background: held-out
    combinations. Without: none is held out (no held-out combination has the black background
    `demo-caption` gives a request that names none), so three colours and shapes on black."""
    from llmdit_cli.train.shapes import SHAPES, caption, held_out

    combos = sorted(held_out())
    out = []
    for k, (form, named) in enumerate(UNSEEN):
        if named:
            picks = [combos[(3 * k + j) % len(combos)] for j in range(3)]
        else:
            picks = [(SHAPES[j], colour, "black") for j, colour in enumerate(["green", "white", "red"])]
        for shape, colour, background in picks:
            out.append((form.format(s=shape, c=colour, b=background), caption(shape, colour, background)))
    return out


def score(engine, r, requests: list[tuple[str, str]], form) -> tuple[int, int, list]:
    from llmdit_cli.engine import RewriteRequest
    from llmdit_cli.rewriting import Sampling

    sampling = Sampling(temperature=0, max_new_tokens=24, seed=0)
    outputs = engine.rewrite(RewriteRequest(r, [t for t, _ in requests], None, sampling))
    misses = [(t, o, want) for o, (t, want) in zip(outputs, requests) if o != want]
    return sum(bool(form.fullmatch(o)) for o in outputs), len(requests) - len(misses), misses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from llmdit_cli.config import resolve_defaults
    from llmdit_cli.engine import Engine
    from llmdit_cli.train.rewriter import RewriterSettings, pairs
    from llmdit_cli.train.shapes import COLOURS, SHAPES

    form = re.compile(rf"a ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)}) on a ({'|'.join(COLOURS)}) background")
    r = resolve_defaults({"model": args.model, "cache": False})
    engine = Engine()
    sets = {
        "trained phrasings, held-out combinations": pairs(RewriterSettings(), held_out=True, rng=random.Random(1)),
        "unseen phrasings, held-out combinations": unseen_requests(),
    }
    for name, requests in sets.items():
        well_formed, right, misses = score(engine, r, requests, form)
        n = len(requests)
        print(f"{name}: {n} requests; well-formed {well_formed}/{n}; exactly right {right}/{n} ({right / n:.1%})")
        for terse, got, want in misses[:6]:
            print(f"  {terse!r} -> {got!r}   (expected {want!r})")


if __name__ == "__main__":
    main()
