"""The deterministic synthetic dataset the demo model learns: one shape (circle, square or
triangle) in one colour on a background of another, captioned "a {colour} {shape} on a {colour}
background". Some combinations are held out of training to measure generalisation.

    python -m llmdit_cli.train.shapes OUT_FOLDER [--size 32] [--per-combo 24]
"""

from __future__ import annotations

import json
import random
from pathlib import Path

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 40),
    "white": (250, 250, 250),
    "black": (10, 10, 10),
}
SHAPES = ("circle", "square", "triangle")


def caption(shape: str, colour: str, background: str) -> str:
    return f"a {colour} {shape} on a {background} background"


def combos() -> list[tuple[str, str, str]]:
    return [(s, c, b) for s in SHAPES for c in COLOURS for b in COLOURS if c != b]


def held_out() -> set[tuple[str, str, str]]:
    """Every fifth combination, so each shape, colour and background still appears in training."""
    return {c for i, c in enumerate(combos()) if i % 5 == 2}


def draw(shape: str, colour: str, background: str, size: int, rng: random.Random):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), COLOURS[background])
    d = ImageDraw.Draw(img)
    # Near the centre at about the same size: the caption decides the picture, up to a little jitter,
    # so a model of a few MB can learn sharp shapes in minutes on a CPU.
    extent = rng.uniform(0.55, 0.65) * size
    cx = size / 2 + rng.uniform(-0.05, 0.05) * size
    cy = size / 2 + rng.uniform(-0.05, 0.05) * size
    box = (cx - extent / 2, cy - extent / 2, cx + extent / 2, cy + extent / 2)
    fill = COLOURS[colour]
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    else:
        d.polygon([(cx, box[1]), (box[2], box[3]), (box[0], box[3])], fill=fill)
    return img


def write_dataset(folder: str | Path, size: int = 32, per_combo: int = 24, seed: int = 0) -> Path:
    """Write the training split (held-out combinations left out) with a metadata.jsonl."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    skip = held_out()
    for shape, colour, background in combos():
        if (shape, colour, background) in skip:
            continue
        for k in range(per_combo):
            name = f"images/{shape}_{colour}_{background}_{k:03d}.png"
            draw(shape, colour, background, size, rng).save(folder / name)
            rows.append({"file_name": name, "text": caption(shape, colour, background)})
    tmp = folder / "metadata.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.rename(folder / "metadata.jsonl")
    return folder


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write the synthetic shapes dataset.")
    parser.add_argument("out")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--per-combo", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    print(write_dataset(a.out, a.size, a.per_combo, a.seed))
