"""How well `llmdit rewrite --model demo` (no `--template`: the demo's own, `demo-caption`; the
demo folder's own rewriter, `rewriter/`) turns terse requests into demo captions ("a <colour>
<shape> on a <colour> background"), greedy decoding (temperature 0). Three sets:

- 200 fresh requests from the training grammar (`llmdit_cli/train/rewriter.py`);
- `UNSEEN`: 15 requests in 5 phrasings the grammar never uses, three each. Target (issue 27):
  >= 14 of 15 right;
- `UNSEEN_MORE`: 15 more phrasings, one request each.

Every unseen phrasing uses a word the grammar never does (`HELD_OUT_WORDS`). Requests that name
a background use the shape/colour/background combinations held out of the demo's images
(`train.shapes.held_out`); the rewriter itself trains on every combination, so these sets measure
phrasings, not combinations. Printed: the share that is a well-formed caption and the share that
is exactly the caption asked for, with the misses.

    OMP_NUM_THREADS=1 python benchmarks/eval_rewriter.py [--model demo]
"""

from __future__ import annotations

import argparse
import os
import random
import re

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Phrasings the grammar never uses, and whether they name the background.
UNSEEN = [
    ("{c} {s} against {b}", True),
    ("just a {c} {s}", False),
    ("{b} backdrop, {c} {s}", True),
    ("{s} coloured {c}, {b} behind it", True),
    ("{c} {s} on a {b} field", True),
]
UNSEEN_MORE = [
    ("{c} {s} sitting on {b}", True),
    ("upon {b}, {c} {s}", True),
    ("{c} {s} atop {b}", True),
    ("{b} canvas with a {c} {s}", True),
    ("{s} painted {c} on {b}", True),
    ("only a {c} {s}", False),
    ("{c} {s} on a {b} wall", True),
    ("{b} sheet, {s} in {c}", True),
    ("depict a {c} {s}", False),
    ("{c} {s} amid {b}", True),
    ("{s} in {c} on {b} ground", True),
    ("a {c} {s} on a {b} surface", True),
    ("{b} backing and a {c} {s}", True),
    ("{s} in a {c} shade on {b}", True),
    ("just the {s}, {c}", False),
]


def unseen_requests(forms: list[tuple[str, bool]], per_form: int) -> list[tuple[str, str]]:
    """(request, caption), `per_form` of each phrasing. With a background: the held-out
    combinations in turn. Without: their shapes and colours, on the background the template
    gives (black; white behind a black shape)."""
    from llmdit_cli.train.rewriter import default_background
    from llmdit_cli.train.shapes import caption, held_out

    combos = sorted(held_out())
    out = []
    for k, (form, named) in enumerate(forms):
        for j in range(per_form):
            shape, colour, background = combos[(per_form * k + j) * 7 % len(combos)]
            if not named:
                background = default_background(colour)
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
    from llmdit_cli.train.rewriter import examples
    from llmdit_cli.train.shapes import COLOURS, SHAPES

    form = re.compile(rf"a ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)}) on a ({'|'.join(COLOURS)}) background")
    r = resolve_defaults({"model": args.model, "cache": False})
    engine = Engine()
    sets = {
        "fresh grammar requests": examples(200, random.Random(1)),
        "UNSEEN phrasings (5 x 3)": unseen_requests(UNSEEN, 3),
        "UNSEEN_MORE phrasings (15 x 1)": unseen_requests(UNSEEN_MORE, 1),
    }
    for name, requests in sets.items():
        well_formed, right, misses = score(engine, r, requests, form)
        n = len(requests)
        print(f"{name}: {n} requests; well-formed {well_formed}/{n}; exactly right {right}/{n} ({right / n:.1%})")
        for terse, got, want in misses[:6]:
            print(f"  {terse!r} -> {got!r}   (expected {want!r})")


if __name__ == "__main__":
    main()
