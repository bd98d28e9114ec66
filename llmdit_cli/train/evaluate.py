"""Prompt adherence of a model trained on the synthetic shapes: generate held-out prompts with
several seeds and read back background colour, shape colour and shape kind from the pixels."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from llmdit_cli.train.shapes import COLOURS, SHAPES, caption, combos, held_out


def classify(img) -> tuple[str, str | None, str | None]:
    """(background colour, shape colour, shape kind) read from an image.

    The background is the commonest palette colour on the border, the shape colour the commonest
    other one in the middle; each pixel then goes to whichever of the two it is nearer, and the
    shape's mask inside its bounding box (rows and columns with at least two shape pixels, so stray
    pixels do not stretch it) is named after the ideal circle, square or triangle it overlaps best
    (intersection over union).
    """
    import numpy as np

    names = list(COLOURS)
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    palette = np.array([COLOURS[n] for n in names], dtype=np.float32)
    labels = ((arr[:, :, None, :] - palette) ** 2).sum(-1).argmin(-1)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    bg = Counter(border.tolist()).most_common(1)[0][0]
    h, w = labels.shape
    middle = labels[h // 4 : h - h // 4, w // 4 : w - w // 4]
    inside = middle[middle != bg]
    if inside.size < 4:
        return names[bg], None, None
    colour = Counter(inside.tolist()).most_common(1)[0][0]
    to_bg = ((arr - palette[bg]) ** 2).sum(-1)
    to_shape = ((arr - palette[colour]) ** 2).sum(-1)
    mask = to_shape < to_bg
    rows, cols = np.where(mask.sum(1) >= 2)[0], np.where(mask.sum(0) >= 2)[0]
    if rows.size == 0 or cols.size == 0:
        return names[bg], names[colour], None
    box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    ious = {kind: (box & t).sum() / max((box | t).sum(), 1) for kind, t in templates(*box.shape).items()}
    return names[bg], names[colour], max(ious, key=ious.get)


def dominant(img, colour: str, share: float = 0.8) -> bool:
    """One shape, not a tiling: the largest 4-connected blob of the pixels nearest `colour` holds at
    least `share` of them (benchmarks/eval_dype.py)."""
    import numpy as np
    from scipy import ndimage

    names = list(COLOURS)
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    palette = np.array([COLOURS[n] for n in names], dtype=np.float32)
    mask = ((arr[:, :, None, :] - palette) ** 2).sum(-1).argmin(-1) == names.index(colour)
    if not mask.any():
        return False
    blobs, _ = ndimage.label(mask)
    return bool(np.bincount(blobs.ravel())[1:].max() >= share * mask.sum())


def templates(h: int, w: int) -> dict:
    """Ideal circle, square and triangle (apex up) filling an h x w box, as boolean masks."""
    import numpy as np

    y, x = np.mgrid[0:h, 0:w]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    circle = ((y - cy) / (h / 2)) ** 2 + ((x - cx) / (w / 2)) ** 2 <= 1
    half_width = (y + 0.5) / h * (w / 2)  # grows linearly from the apex to the base
    triangle = np.abs(x - cx) <= half_width
    return {"circle": circle, "square": np.ones((h, w), dtype=bool), "triangle": triangle}


@dataclass
class Scores:
    n: int
    background: float
    colour: float
    shape: float

    def line(self) -> str:
        return (
            f"{self.n} images: background colour {self.background:.0%}, shape colour {self.colour:.0%}, "
            f"shape kind {self.shape:.0%}"
        )


def score(results: list[tuple[tuple[str, str, str], tuple]]) -> Scores:
    n = len(results)
    bg = sum(want[2] == got[0] for want, got in results) / n
    col = sum(want[1] == got[1] for want, got in results) / n
    kind = sum(want[0] == got[2] for want, got in results) / n
    return Scores(n, bg, col, kind)


def evaluate(
    model: str, seeds: list[int], steps: int = 4, size: int = 32, split: str = "held-out", on_image=None
) -> Scores:
    """Generate each combination of `split` ('held-out' or 'train') once per seed and score it."""
    from llmdit_cli.config import resolve
    from llmdit_cli.engine import Engine, GenerateRequest

    wanted = sorted(held_out()) if split == "held-out" else [c for c in combos() if c not in held_out()]
    r = resolve(flags={"model": model, "width": size, "height": size, "steps": steps, "guidance_scale": 0.0})
    prompts = [caption(*c) for c in wanted]
    made = Engine().generate(GenerateRequest(r, seeds=list(seeds), prompts=prompts))
    results = []
    for i, g in enumerate(made):
        got = classify(g.image)
        results.append((wanted[i // len(seeds)], got))
        if on_image:
            on_image(i, g.image, got)
    return score(results)


__all__ = ["SHAPES", "classify", "dominant", "evaluate", "score"]
