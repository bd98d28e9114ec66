"""Pictures of a comparison: labelled grids, reference pairs, difference images, and the metrics
(PSNR, SSIM from scikit-image) of each image against its reference."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from llmdit_cli.compare.runs import Entry

DIFF_MODES = ("absolute", "highlight", "heatmap")
PAD = 4
BACKGROUND = (255, 255, 255)
MISSING = (200, 200, 200)


def label(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class Grid:
    """Tiles keyed by (row position, column position) in `rows` / `cols`, the values shown as labels
    (`None` when that side has no axis). Positions, not values, so list values (`slg.layers`) work."""

    rows: list
    cols: list
    tiles: dict[tuple[int, int], Any]  # (i, j) -> PIL image
    row_axis: str | None
    col_axis: str | None
    title: str = ""
    notes: dict[tuple[int, int], str] = field(default_factory=dict)  # (i, j) -> text under the tile
    sources: dict[tuple[int, int], Entry] = field(default_factory=dict)  # (i, j) -> the image's entry


def load_image(entry: Entry):
    from PIL import Image

    with Image.open(entry.image) as img:
        return img.convert("RGB")


def render(grid: Grid):
    """The grid as one PIL image: column labels on top, row labels at the left, notes under tiles."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    sizes = [t.size for t in grid.tiles.values()] or [(64, 64)]
    tw, th = max(w for w, _ in sizes), max(h for _, h in sizes)
    line = 12
    row_names = [axis_label(grid.row_axis, r) for r in grid.rows]
    col_names = [axis_label(grid.col_axis, c) for c in grid.cols]
    left = max([_text_width(font, t) for t in row_names] + [0]) + (2 * PAD if any(row_names) else 0)
    top = (line + PAD if any(col_names) else 0) + (line + PAD if grid.title else 0)
    note_h = line + 2 if grid.notes else 0
    col_w = max([tw] + [_text_width(font, t) for t in [*col_names, *grid.notes.values()]])
    width = max(left + len(grid.cols) * (col_w + PAD) + PAD, _text_width(font, grid.title) + 2 * PAD)
    height = top + len(grid.rows) * (th + note_h + PAD) + PAD
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if grid.title:
        draw.text((PAD, PAD), grid.title, fill=(0, 0, 0), font=font)
    for j, name in enumerate(col_names):
        draw.text((left + PAD + j * (col_w + PAD), top - line - PAD // 2), name, fill=(0, 0, 0), font=font)
    for i in range(len(grid.rows)):
        y = top + PAD + i * (th + note_h + PAD)
        draw.text((PAD, y + th // 2 - line // 2), row_names[i], fill=(0, 0, 0), font=font)
        for j in range(len(grid.cols)):
            x = left + PAD + j * (col_w + PAD)
            tile = grid.tiles.get((i, j))
            if tile is None:
                draw.rectangle([x, y, x + tw - 1, y + th - 1], fill=MISSING)
                draw.text((x + 2, y + 2), "missing", fill=(90, 90, 90), font=font)
            else:
                canvas.paste(tile, (x, y))
            note = grid.notes.get((i, j))
            if note:
                draw.text((x, y + th + 1), note, fill=(40, 40, 40), font=font)
    return canvas


def axis_label(axis: str | None, value: Any) -> str:
    """How a row or column is labelled: `axis=value`, or the value alone (side by side)."""
    if axis is None:
        return "" if value is None else str(value)
    return f"{axis}={label(value)}"


def _text_width(font, text: str) -> int:
    if not text:
        return 0
    box = font.getbbox(text)
    return int(box[2] - box[0])


def difference(a, b, mode: str):
    """A picture of how `b` differs from `a` (None when their sizes differ): `absolute` |a - b| scaled to full range,
    `highlight` b greyed with changed pixels in red, `heatmap` the mean change per pixel from dark
    blue (none) through yellow to red (most)."""
    import numpy as np
    from PIL import Image

    x, y = (np.asarray(img, dtype=np.float32) for img in (a, b))
    if x.shape != y.shape:
        return None  # different sizes: nothing to subtract
    delta = np.abs(x - y)
    if mode == "absolute":
        scale = 255.0 / max(float(delta.max()), 1.0)
        return Image.fromarray(np.clip(np.rint(delta * scale), 0, 255).astype(np.uint8))
    magnitude = delta.mean(axis=2)
    if mode == "highlight":
        grey = y.mean(axis=2, keepdims=True).repeat(3, axis=2) * 0.5 + 64
        changed = magnitude > 8.0
        grey[changed] = (255, 0, 0)
        return Image.fromarray(grey.astype(np.uint8))
    t = magnitude / max(float(magnitude.max()), 1.0)
    stops = np.array([[0, 0, 96], [0, 160, 255], [255, 230, 0], [220, 0, 0]], dtype=np.float32)
    pos = t * (len(stops) - 1)
    lo = np.clip(pos.astype(int), 0, len(stops) - 2)
    frac = (pos - lo)[..., None]
    return Image.fromarray((stops[lo] * (1 - frac) + stops[lo + 1] * frac).astype(np.uint8))


def metrics(reference, image) -> dict[str, float]:
    """PSNR (dB; inf when equal) and SSIM (on RGB, scikit-image's defaults) of `image` against
    `reference`."""
    import numpy as np
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = np.asarray(reference), np.asarray(image)
    if a.shape != b.shape:
        return {"psnr": float("nan"), "ssim": float("nan")}
    if np.array_equal(a, b):
        return {"psnr": float("inf"), "ssim": 1.0}
    side = min(a.shape[0], a.shape[1])
    window = min(7, side if side % 2 else side - 1)
    return {
        "psnr": float(peak_signal_noise_ratio(a, b, data_range=255)),
        "ssim": float(structural_similarity(a, b, channel_axis=2, data_range=255, win_size=window)),
    }


def note(m: dict[str, float]) -> str:
    if m["psnr"] != m["psnr"]:  # NaN: the sizes differ
        return "size differs"
    psnr = "inf" if m["psnr"] == float("inf") else f"{m['psnr']:.1f}"
    return f"PSNR {psnr} SSIM {m['ssim']:.3f}"
