"""Images a request sends: as a data URL in JSON or a multipart upload, never as a path on the
server. Each is bounded by `--max-image-bytes` (413), must open as an image (400 naming the field),
and is kept in the data folder's `uploads/` by its SHA-256, so a vision image's digest in an
image's settings is the digest of what the client sent. A request may name an image the server
already holds as `upload:SHA256.EXT` (what a history entry's settings show), and nothing else."""

from __future__ import annotations

import base64
import binascii
import io
import re
from pathlib import Path

from llmdit_cli.serve.settings import ApiError

UPLOAD_PREFIX = "upload:"
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tiff"}
_DATA_URL = re.compile(r"data:(image/[\w.+-]+)?(;[\w=.-]+)*;base64,(.*)", re.S)
_UPLOAD_NAME = re.compile(r"[0-9a-f]{64}\.[a-z]{3,4}")


def data_url_bytes(text: str, field: str, limit: int) -> bytes:
    """The bytes of a base64 data URL, within `limit`."""
    m = _DATA_URL.fullmatch(text.strip())
    if not m:
        raise ApiError(400, f"{field}: expected an image as a data URL (data:image/png;base64,...)", field)
    payload = m.group(3)
    if len(payload) * 3 // 4 > limit + 3:
        raise ApiError(413, f"{field}: the image is over the limit of {limit} bytes (--max-image-bytes)", field)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{field}: the data URL is not valid base64", field) from None


# A few bytes of PNG can hold a huge flat image: decoded, 12000x12000 would take ~430 MB.
MAX_UPLOAD_PIXELS = 8192 * 8192


def open_image(data: bytes, field: str, limit: int):
    """(PIL image, file suffix) of uploaded bytes, or a 413 / 400 naming `field`."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > limit:
        raise ApiError(413, f"{field}: the image is over the limit of {limit} bytes (--max-image-bytes)", field)
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only: the size is known before decoding
        if img.width * img.height > MAX_UPLOAD_PIXELS:
            raise ApiError(
                413,
                f"{field}: {img.width}x{img.height} pixels, over the {MAX_UPLOAD_PIXELS:,} an upload may have",
                field,
            )
        img.load()
    except Image.DecompressionBombError:  # PIL's own guard, far above ours: the size is not known
        raise ApiError(413, f"{field}: over the {MAX_UPLOAD_PIXELS:,} pixels an upload may have", field) from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ApiError(400, f"{field}: not an image ({type(exc).__name__})", field) from None
    suffix = FORMATS.get(img.format or "")
    if suffix is None:
        raise ApiError(400, f"{field}: {img.format} images are not taken; send PNG, JPEG or WebP", field)
    return img, suffix


def keep(uploads: Path, data: bytes, field: str, limit: int) -> Path:
    """Check uploaded image bytes and keep them by content; returns where they lie."""
    from llmdit_cli.history import write_synced

    _, suffix = open_image(data, field, limit)
    import hashlib

    path = uploads / f"{hashlib.sha256(data).hexdigest()}{suffix}"
    if not path.is_file():
        write_synced(path, data)
    return path


def image_setting(value: object, uploads: Path | None, field: str, limit: int) -> str:
    """A request's image setting (a data URL, or `upload:NAME` of an image the server holds) as
    the path of the kept file."""
    if uploads is None:
        raise ApiError(400, f"{field}: this server takes no images", field)
    if not isinstance(value, str):
        raise ApiError(400, f"{field}: an image as a data URL", field)
    if value.startswith(UPLOAD_PREFIX):
        name = value[len(UPLOAD_PREFIX) :]
        path = uploads / name
        if not _UPLOAD_NAME.fullmatch(name) or not path.is_file():
            raise ApiError(400, f"{field}: no upload {name!r} on this server; send the image as a data URL", field)
        return str(path)
    return str(keep(uploads, data_url_bytes(value, field, limit), field, limit))


def upload_path(name: str, uploads: Path) -> Path | None:
    """The kept upload that `upload:NAME` names, or None."""
    if not name.startswith(UPLOAD_PREFIX):
        return None
    path = uploads / name[len(UPLOAD_PREFIX) :]
    return path if _UPLOAD_NAME.fullmatch(path.name) and path.is_file() else None


def client_name(path: str, uploads: Path | None) -> str:
    """How a client names a kept upload (`upload:NAME`); other paths by their file name only."""
    p = Path(path)
    if uploads is not None and p.parent.resolve() == uploads.resolve():
        return UPLOAD_PREFIX + p.name
    return p.name
