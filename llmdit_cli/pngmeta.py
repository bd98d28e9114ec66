"""PNG files that carry their full settings: JSON in an `llmdit` text chunk, plus an A1111-style
`parameters` chunk that image viewers and galleries understand."""

from __future__ import annotations

import io
import json
from typing import Any

from llmdit_cli import pngwrite
from llmdit_cli.errors import InputError

CHUNK = "llmdit"


def a1111_parameters(s: dict[str, Any]) -> str:
    lines = [s.get("prompt", "")]
    if s.get("negative_prompt"):
        lines.append(f"Negative prompt: {s['negative_prompt']}")
    fields = [
        ("Steps", s.get("steps")),
        ("Sampler", "Euler (flow matching)"),
        ("CFG scale", s.get("guidance_scale")),
        ("Seed", s.get("seed")),
        ("Size", f"{s.get('width')}x{s.get('height')}"),
        ("Model", s.get("model")),
        ("Shift", s.get("shift")),
        ("Denoising strength", s.get("strength")),
        ("Lora", ", ".join(s.get("loras") or []) or None),
        ("Version", f"llmdit {s.get('llmdit_version')}"),
    ]
    lines.append(", ".join(f"{k}: {v}" for k, v in fields if v is not None))
    return "\n".join(lines)


def png_bytes(image, settings: dict[str, Any]) -> bytes:
    """The image as PNG with its settings in two text chunks (encoded on every core where the mode
    allows: `pngwrite`)."""
    texts = [(CHUNK, json.dumps(settings, sort_keys=True)), ("parameters", a1111_parameters(settings))]
    if pngwrite.encodable(image):
        return pngwrite.encode_png(image, texts)
    return pil_png_bytes(image, texts)


def pil_png_bytes(image, texts: list[tuple[str, str]]) -> bytes:
    """The image as PNG through PIL's encoder (any mode, its info chunks), with `texts`."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, text in texts:
        info.add_text(key, text)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def image_from_bytes(data: bytes, name: str):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError):
        raise InputError(f"{name}: not an image (cannot identify the image format)") from None
    try:
        img.load()
    except (OSError, ValueError) as exc:  # the header read, the pixels did not
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{name}: a truncated or corrupt {img.format} image ({why})") from None
    return img


def settings_of(data: bytes, name: str) -> dict[str, Any]:
    """The llmdit settings stored in a PNG, or an InputError."""
    img = image_from_bytes(data, name)
    raw = getattr(img, "text", {}).get(CHUNK)
    if raw is None:
        raise InputError(f"{name}: the image carries no llmdit settings (not made by llmdit)")
    try:
        settings = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        raise InputError(f"{name}: the llmdit settings in the image are not valid JSON") from None
    if not isinstance(settings, dict):
        raise InputError(
            f"{name}: the llmdit settings in the image are a JSON {type(settings).__name__}, not an object"
        )
    for key, types, what in _SHAPES:
        if (
            key in settings
            and settings[key] is not None
            and (not isinstance(settings[key], types) or isinstance(settings[key], bool) and bool not in types)
        ):
            raise InputError(f"{name}: stored setting {key!r} is {settings[key]!r}, not {what}")
    if isinstance(settings.get("loras"), list) and not all(isinstance(x, str) for x in settings["loras"]):
        raise InputError(f"{name}: stored setting 'loras' is {settings['loras']!r}, not a list of LoRA paths")
    return settings


# Stored settings whose type the readers rely on; the values themselves are checked like any
# other setting when they are used (naming the PNG as their source).
_SHAPES = [
    ("seed", (int,), "a whole number"),
    ("prompt", (str,), "text"),
    ("negative_prompt", (str,), "text"),
    ("model", (str,), "a model reference"),
    ("mode", (str,), "text"),
    ("encoder", (dict,), "a table"),
    ("loras", (list,), "a list of LoRA paths"),
]
