"""Prompt adherence of a model trained on the synthetic shapes: generate held-out prompts with
several seeds and read back background colour, shape colour and shape kind from the pixels."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from llmdit_cli.train.shapes import COLOURS, SHAPES, caption, combos, held_out

# Fill ratio of the shape inside its bounding box: square ~1, circle ~pi/4, triangle ~1/2.
SQUARE_MIN, CIRCLE_MIN = 0.88, 0.64


def classify(img) -> tuple[str, str | None, str | None]:
    """(background colour, shape colour, shape kind) read from an image."""
    import numpy as np

    names = list(COLOURS)
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    palette = np.array([COLOURS[n] for n in names], dtype=np.float32)
    labels = ((arr[:, :, None, :] - palette) ** 2).sum(-1).argmin(-1)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    bg = Counter(border.tolist()).most_common(1)[0][0]
    inside = labels[labels != bg]
    if inside.size < 4:
        return names[bg], None, None
    colour = Counter(inside.tolist()).most_common(1)[0][0]
    mask = labels == colour
    rows, cols = np.where(mask.sum(1) >= 1)[0], np.where(mask.sum(0) >= 1)[0]
    fill = mask.sum() / ((rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1))
    kind = "square" if fill >= SQUARE_MIN else "circle" if fill >= CIRCLE_MIN else "triangle"
    return names[bg], names[colour], kind


@dataclass
class Scores:
    n: int
    background: float
    colour: float
    shape: float

    def line(self) -> str:
        return (f"{self.n} images: background colour {self.background:.0%}, shape colour {self.colour:.0%}, "
                f"shape kind {self.shape:.0%}")


def score(results: list[tuple[tuple[str, str, str], tuple]]) -> Scores:
    n = len(results)
    bg = sum(want[2] == got[0] for want, got in results) / n
    col = sum(want[1] == got[1] for want, got in results) / n
    kind = sum(want[0] == got[2] for want, got in results) / n
    return Scores(n, bg, col, kind)


def evaluate(model: str, seeds: list[int], steps: int = 4, size: int = 32, split: str = "held-out",
             on_image=None) -> Scores:
    """Generate each combination of `split` ('held-out' or 'train') once per seed and score it."""
    from llmdit_cli import workflows as wf
    from llmdit_cli.cli.output import Output
    from llmdit_cli.config import resolve
    from llmdit_cli.stages.vae import decode_latents

    wanted = sorted(held_out()) if split == "held-out" else [c for c in combos() if c not in held_out()]
    r = resolve(flags={"model": model, "width": size, "height": size, "steps": steps, "guidance_scale": 0.0})
    handle = wf.open_model(r)
    wf.fill_family_defaults(r, handle)
    prompts = [caption(*c) for c in wanted]
    e = wf.encode(handle, prompts, "", r, with_negative=False)
    jobs = wf.plan_jobs(e, seeds, r, handle, "txt2img")
    latents = wf.run_jobs(handle, e, jobs, r, Output(quiet=True))
    results = []
    for job, lat in zip(jobs, latents):
        img = decode_latents(handle.pipeline("vae"), lat)[0]
        got = classify(img)
        results.append((wanted[job.prompt_index], got))
        if on_image:
            on_image(job, img, got)
    return score(results)


__all__ = ["SHAPES", "classify", "evaluate", "score"]
