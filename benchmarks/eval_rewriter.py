"""How well `llmdit rewrite --model demo --template demo-caption` turns held-out terse requests
("triangle, yellow, on black") into demo captions: the share that is a well-formed caption
("a <colour> <shape> on a <colour> background") and the share that also keeps the colours and
the shape asked for. Greedy decoding (temperature 0). Target: >= 90% keep them.

    OMP_NUM_THREADS=1 python benchmarks/eval_rewriter.py [--model demo]
"""

from __future__ import annotations

import argparse
import os
import random
import re

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from llmdit_cli.config import resolve_defaults
    from llmdit_cli.engine import Engine, RewriteRequest
    from llmdit_cli.rewriting import Sampling
    from llmdit_cli.train.rewriter import RewriterSettings, pairs
    from llmdit_cli.train.shapes import COLOURS, SHAPES

    held = pairs(RewriterSettings(), held_out=True, rng=random.Random(1))
    form = re.compile(rf"a ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)}) on a ({'|'.join(COLOURS)}) background")
    r = resolve_defaults({"model": args.model, "cache": False})
    outputs = Engine().rewrite(
        RewriteRequest(r, [t for t, _ in held], "demo-caption", Sampling(temperature=0, max_new_tokens=24, seed=0))
    )
    well_formed = sum(bool(form.fullmatch(o)) for o in outputs)
    kept = sum(o == target for o, (_, target) in zip(outputs, held))
    for (terse, target), o in list(zip(held, outputs))[:5]:
        print(f"  {terse!r} -> {o!r}" + ("" if o == target else f"   (expected {target!r})"))
    print(
        f"held-out requests: {len(held)}; well-formed captions {well_formed / len(held):.1%}; "
        f"colours and shape kept {kept / len(held):.1%} (target >= 90%)"
    )


if __name__ == "__main__":
    main()
