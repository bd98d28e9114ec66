"""Training data: captioned images from an imagefolder (`metadata.jsonl`), a JSON / JSONL / CSV
file, or a `datasets` dataset; aspect-ratio buckets; and a cache of stage files.

Captions are encoded once by the encode stage and images once by the VAE, stored as
`*.embeds.safetensors` / `*.latents.safetensors` under the cache folder and named by a hash of
everything that shapes them (model identity, formatted text, layer, size ...), so a changed model
or setting misses the cache instead of reusing stale files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmdit_cli.errors import InputError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


@dataclass
class Item:
    """One training example before caching."""

    source: str  # where it came from, for messages
    caption: str
    path: Path | None = None
    image: Any = None  # a PIL image when the dataset holds images, not paths

    def load_image(self):
        from PIL import Image, UnidentifiedImageError

        if self.image is not None:
            return self.image.convert("RGB")
        try:
            with Image.open(self.path) as img:
                return img.convert("RGB")
        except (UnidentifiedImageError, OSError):
            raise InputError(f"{self.source}: {self.path} is not an image") from None

    def content_hash(self) -> str:
        if self.path is not None:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        buf = io.BytesIO()
        self.image.save(buf, format="PNG")
        return hashlib.sha256(buf.getvalue()).hexdigest()


def load_items(path: str, image_column: str = "file_name", caption_column: str = "text") -> list[Item]:
    if not path:
        raise InputError("no dataset: set [data] path in the recipe or pass --dataset")
    if path.startswith("hf:"):
        return _from_datasets(path[3:], image_column, caption_column)
    p = Path(path)
    if p.is_dir():
        return _from_table(_metadata_file(p, "captions"), image_column, caption_column)
    if p.is_file():
        return _from_table(p, image_column, caption_column)
    raise InputError(f"{path}: no such dataset folder or file")


def load_prompts(path: str, caption_column: str = "text") -> list[str]:
    """The distinct prompts of a prompts-only dataset (distillation needs no images): a `.txt`
    file, one prompt per line, or a table / folder / `datasets` dataset with a caption column,
    whose images, if any, are not read."""
    if not path:
        raise InputError("no prompts: set [data] path in the recipe or pass --dataset")
    p = Path(path)
    if p.is_dir():
        p = _metadata_file(p, "prompts")
    if path.startswith("hf:"):
        ds = _dataset(path[3:])
        if caption_column not in ds.column_names:
            raise InputError(f"{path}: no column '{caption_column}' (columns: {', '.join(ds.column_names)})")
        prompts = [str(t) for t in ds[caption_column]]
    elif p.is_file() and p.suffix.lower() == ".txt":
        prompts = [line.strip() for line in _text(p).splitlines() if line.strip()]
    elif p.is_file():
        prompts = [_prompt(row, f"{p}:{n}", caption_column) for n, row in enumerate(_rows(p), start=1)]
    else:
        raise InputError(f"{path}: no such prompts file or folder")
    if not prompts:
        raise InputError(f"{path}: holds no prompts")
    return list(dict.fromkeys(prompts))


def _metadata_file(folder: Path, holding: str) -> Path:
    for name in ("metadata.jsonl", "metadata.json", "metadata.csv"):
        if (folder / name).is_file():
            return folder / name
    raise InputError(f"{folder}: no metadata.jsonl (or .json / .csv) with {holding} in this folder")


def _prompt(row, where: str, caption_column: str) -> str:
    if isinstance(row, str):  # a JSON list of prompts
        return row
    if not isinstance(row, dict) or row.get(caption_column) is None:
        raise InputError(f"{where}: no '{caption_column}' column")
    return str(row[caption_column])


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None


def _rows(table: Path) -> list[dict]:
    text = _text(table)
    suffix = table.suffix.lower()
    try:
        if suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        if suffix == ".json":
            rows = json.loads(text)
            if isinstance(rows, dict):
                rows = rows.get("data", [])
            if not isinstance(rows, list):
                raise InputError(f"{table}: not a list of rows (or an object with a 'data' list)")
            return rows
        if suffix == ".csv":
            return list(csv.DictReader(io.StringIO(text)))
    except json.JSONDecodeError as exc:
        raise InputError(f"{table}: not valid JSON (line {exc.lineno})") from None
    hint = "; a .txt of prompts is data for --objective distill" if suffix == ".txt" else ""
    raise InputError(f"{table}: unknown metadata format (use .jsonl, .json or .csv{hint})")


def _from_table(table: Path, image_column: str, caption_column: str) -> list[Item]:
    items = []
    for n, row in enumerate(_rows(table), start=1):
        where = f"{table}:{n}"
        if not isinstance(row, dict) or image_column not in row:
            raise InputError(f"{where}: no '{image_column}' column")
        caption = row.get(caption_column)
        if caption is None:
            raise InputError(f"{where}: caption missing (no '{caption_column}' column)")
        image = table.parent / str(row[image_column])
        if not image.is_file():
            raise InputError(f"{where}: image {image} not found")
        items.append(Item(where, str(caption), path=image))
    if not items:
        raise InputError(f"{table}: holds no examples")
    return items


def _from_datasets(name: str, image_column: str, caption_column: str) -> list[Item]:
    ds = _dataset(name)
    image_column = image_column if image_column in ds.column_names else "image"
    for col in (image_column, caption_column):
        if col not in ds.column_names:
            raise InputError(f"hf:{name}: no column '{col}' (columns: {', '.join(ds.column_names)})")
    return [Item(f"hf:{name}[{i}]", str(row[caption_column]), image=row[image_column]) for i, row in enumerate(ds)]


def _dataset(name: str):
    try:
        import datasets
    except ImportError:
        raise InputError(f"hf:{name}: the `datasets` package is not installed (pip install datasets)") from None
    ds = datasets.load_from_disk(name) if Path(name).is_dir() else datasets.load_dataset(name, split="train")
    if hasattr(ds, "keys") and "train" in ds:
        ds = ds["train"]
    return ds


def bucket_sizes(resolution: int, multiple: int = 16, max_ratio: float = 2.0) -> list[tuple[int, int]]:
    """(width, height) pairs of about resolution**2 pixels, sides multiples of `multiple`."""
    area = resolution * resolution
    sizes = set()
    side = multiple
    while side <= resolution * max_ratio:
        other = max(multiple, round(area / side / multiple) * multiple)
        if 1 / max_ratio <= side / other <= max_ratio:
            sizes.add((side, other))
        side += multiple
    return sorted(sizes)


def pick_bucket(width: int, height: int, resolution: int, buckets: bool, multiple: int = 16) -> tuple[int, int]:
    if not buckets:
        side = max(multiple, resolution // multiple * multiple)
        return side, side
    ratio = width / height
    return min(bucket_sizes(resolution, multiple), key=lambda s: abs(s[0] / s[1] - ratio))


def fit_image(img, size: tuple[int, int]):
    """Resize to cover `size`, then centre-crop to it."""
    from PIL import Image

    w, h = size
    scale = max(w / img.width, h / img.height)
    resized = img.resize(
        (max(w, round(img.width * scale)), max(h, round(img.height * scale))), Image.Resampling.LANCZOS
    )
    left, top = (resized.width - w) // 2, (resized.height - h) // 2
    return resized.crop((left, top, left + w, top + h))


def to_tensor(img):
    import numpy as np
    import torch

    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)
    return arr.permute(2, 0, 1)


def cache_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]
