"""A layer folder: the RGBA layers `decompose` writes, their stack, the edits made to them, and what
is built from them.

    layers/
      layers.json        the record: size, stack order, hidden layers, settings, source, edits
      layer_00.png ...   RGBA, all one size; the default stack is layer_00 at the bottom
      layer_02.v1.png    the version of layer_02 that an edit replaced (.v2 the next one ...)
      composite.png      the visible layers alpha-composited bottom to top

Every file is written atomically (a temporary file renamed into place) and a new folder appears
whole. A command that changes a folder checks its arguments first, then holds the folder's lock
(`.llmdit-layers.lock`) from re-reading the record to its last write.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from llmdit_cli import pngwrite
from llmdit_cli.artifacts import _umask, check_writable, write_bytes_atomic
from llmdit_cli.errors import InputError, UsageError, WriteError

LAYERS_JSON = "layers.json"
COMPOSITE = "composite.png"
LOCK_FILE = ".llmdit-layers.lock"
KIND = "llmdit-layers"
FORMAT = 1
EXPORTS = ("ora", "tiff")


def layer_file(i: int) -> str:
    return f"layer_{i:02d}.png"


def version_file(i: int, version: int) -> str:
    return f"layer_{i:02d}.v{version}.png"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plain_png_bytes(image) -> bytes:
    """The image as PNG without settings: on every core where `pngwrite` takes it (layers are
    RGBA), else through PIL."""
    if pngwrite.encodable(image):
        return pngwrite.encode_png(image)
    buf = BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def composite(layers: list, order: list[int], hidden: list[int] = ()) -> Any:
    """The layers in `order` (bottom first), hidden ones left out, alpha-composited over a
    transparent canvas (PIL's `alpha_composite`, the Porter-Duff "over")."""
    from PIL import Image

    canvas = Image.new("RGBA", layers[0].size, (0, 0, 0, 0))
    for i in order:
        if i not in hidden:
            canvas = Image.alpha_composite(canvas, layers[i])
    return canvas


def new_record(count: int, size: tuple[int, int], settings: dict, source: dict, version: str) -> dict:
    """The layers.json of a fresh decomposition."""
    return {
        "kind": KIND,
        "format": FORMAT,
        "llmdit_version": version,
        "size": list(size),
        "order": list(range(count)),
        "hidden": [],
        "layers": [{"file": layer_file(i), "versions": []} for i in range(count)],
        "composite": COMPOSITE,
        "source": source,
        "settings": settings,
        "edits": [],
    }


@dataclass
class Stack:
    """A layer folder's record (layers.json) and its layer files."""

    folder: Path
    record: dict

    @property
    def count(self) -> int:
        return len(self.record["layers"])

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.record["size"])

    @property
    def order(self) -> list[int]:
        return self.record["order"]

    @property
    def hidden(self) -> list[int]:
        return self.record["hidden"]

    def path(self, i: int) -> Path:
        return self.folder / self.record["layers"][i]["file"]

    def check_index(self, i: int, flag: str) -> None:
        if not 0 <= i < self.count:
            raise UsageError(f"{flag} {i}: {self.folder} has layers 0 to {self.count - 1}")

    def image(self, i: int):
        """Layer `i` as RGBA, checked to be an image of the stack's size."""
        from PIL import Image, UnidentifiedImageError

        path = self.path(i)
        try:
            with Image.open(path) as im:
                im.load()
                image = im.convert("RGBA")
        except FileNotFoundError:
            raise InputError(f"{path}: missing (layers.json lists it)") from None
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable image ({str(exc).splitlines()[0]})") from None
        if image.size != self.size:
            w, h = self.size
            raise InputError(f"{path}: {image.width}x{image.height}, but the stack is {w}x{h} (layers.json)")
        return image

    def images(self) -> list:
        return [self.image(i) for i in range(self.count)]

    def next_version(self, i: int) -> int:
        """The first version number free both in the record and on disk."""
        taken = set(self.record["layers"][i]["versions"])
        v = 1
        while version_file(i, v) in taken or (self.folder / version_file(i, v)).exists():
            v += 1
        return v

    def save_record(self) -> None:
        write_bytes_atomic(str(self.folder / LAYERS_JSON), record_bytes(self.record))

    def write_composite(self, images: list | None = None) -> Path:
        images = images or self.images()
        path = self.folder / self.record.get("composite", COMPOSITE)
        write_bytes_atomic(str(path), plain_png_bytes(composite(images, self.order, self.hidden)))
        return path


def record_bytes(record: dict) -> bytes:
    return (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode()


def read_stack(folder: str) -> Stack:
    """The layer folder at `folder`, its record checked in full (a bad one is one InputError that
    names the file and what is wrong)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise InputError(f"{folder}: {'not a folder' if root.exists() else 'no such folder'}")
    path = root / LAYERS_JSON
    if not path.is_file():
        raise InputError(f"{folder}: no {LAYERS_JSON}, so not a layer folder from `llmdit decompose`")
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    _check_record(record, path)
    return Stack(root, record)


def _check_record(record: Any, path: Path) -> None:
    def bad(what: str) -> InputError:
        return InputError(f"{path}: {what}")

    if not isinstance(record, dict) or record.get("kind") != KIND:
        raise bad(f'not a layer record (no "kind": "{KIND}")')
    if not isinstance(record.get("format"), int) or record["format"] > FORMAT:
        raise bad(f"format {record.get('format')!r}: this llmdit reads format {FORMAT}; upgrade llmdit")
    layers = record.get("layers")
    if not isinstance(layers, list) or not layers:
        raise bad('"layers" should be a non-empty list')
    for i, entry in enumerate(layers):
        if not isinstance(entry, dict) or not _is_name(entry.get("file")):
            raise bad(f'layers[{i}] should have a "file" name inside the folder')
        if not isinstance(entry.get("versions", []), list) or not all(_is_name(v) for v in entry.get("versions", [])):
            raise bad(f"layers[{i}].versions should be a list of file names inside the folder")
        entry.setdefault("versions", [])
    size = record.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(n, int) and n > 0 for n in size)):
        raise bad('"size" should be [width, height]')
    order, hidden, n = record.get("order"), record.get("hidden", []), len(layers)
    if not isinstance(order, list) or not all(_is_index(i) for i in order) or sorted(order) != list(range(n)):
        raise bad(f'"order" should list each layer 0 to {n - 1} once')
    if not isinstance(hidden, list) or not all(_is_index(i) and i < n for i in hidden):
        raise bad(f'"hidden" should list layer numbers 0 to {n - 1}')
    if not isinstance(record.get("edits", []), list):
        raise bad('"edits" should be a list')
    record.setdefault("hidden", [])
    record.setdefault("edits", [])
    if not _is_name(record.get("composite", COMPOSITE)):
        raise bad('"composite" should be a file name inside the folder')


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_name(value: Any) -> bool:
    """A plain file name: no folder part, so a record cannot point outside its folder."""
    return isinstance(value, str) and bool(value) and Path(value).name == value and value not in (".", "..")


def parse_order(text: str, count: int) -> list[int]:
    """`2,0,1` -> [2, 0, 1]: every layer once, bottom first."""
    try:
        order = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise UsageError(f"--order {text}: expected layer numbers like 2,0,1 (bottom first)") from None
    if sorted(order) != list(range(count)):
        raise UsageError(f"--order {text}: give each layer 0 to {count - 1} exactly once (bottom first)")
    return order


def check_target_folder(folder: str) -> Path:
    """Where a new layer folder may go: a path that does not exist yet, or an empty folder."""
    path = Path(folder).expanduser().resolve()
    if path == Path.cwd().resolve() or path.parent == path:
        raise UsageError(f"-o {folder}: give a new folder for the layers, not the current one")
    if path.exists() and not path.is_dir():
        raise UsageError(f"-o {folder}: is a file; give a folder for the layers")
    if path.is_dir() and (path / LAYERS_JSON).exists():
        raise UsageError(f"-o {folder}: already holds layers ({LAYERS_JSON}); choose another folder or remove it")
    if path.is_dir() and any(path.iterdir()):
        raise UsageError(f"-o {folder}: not empty; give a new or empty folder for the layers")
    check_writable(str(path / LAYERS_JSON))  # before the work, not after it
    return path


def write_new_folder(folder: str, layers: list, record: dict) -> Path:
    """The layer files, their composite and layers.json, written to a temporary folder beside
    `folder` and renamed into place: the folder appears whole or not at all."""
    target = check_target_folder(folder)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise WriteError(f"{folder}: cannot write ({exc.strerror or exc})") from None
    try:
        for i, image in enumerate(layers):
            write_bytes_atomic(str(tmp / layer_file(i)), plain_png_bytes(image))
        stack = Stack(tmp, record)
        stack.write_composite(layers)
        stack.save_record()
        os.chmod(tmp, 0o777 & ~_umask())
        if target.is_dir():
            target.rmdir()  # empty (checked): the rename needs the name free on every system
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


@contextmanager
def locked(folder: Path):
    """Hold the folder's edit lock; another holder makes this a one-line error at once."""
    import fcntl

    try:
        handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 - held for the whole block
    except OSError as exc:
        raise InputError(f"{folder}: cannot write its lock file {LOCK_FILE} ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"{folder}: another llmdit is changing these layers (it holds {LOCK_FILE}); "
                f"try again when it has finished"
            ) from None
        yield
    finally:
        handle.close()


def replace_layer(stack: Stack, i: int, image, edit: dict) -> str:
    """Write `image` as layer `i`, keeping the file it replaces as the next version
    (`layer_02.v1.png`), and record `edit`. Returns the kept version's file name."""
    name = version_file(i, stack.next_version(i))
    current = stack.path(i)
    kept = stack.folder / name
    try:
        os.link(current, kept)  # the old bytes stay reachable under the version name
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network and FAT file systems)
        shutil.copy2(current, kept)
    entry, edits = stack.record["layers"][i], stack.record["edits"]
    replaced = False
    try:
        write_bytes_atomic(str(current), plain_png_bytes(image))
        replaced = True
        entry["versions"].append(name)
        edits.append({**edit, "layer": i, "kept": name})
        stack.save_record()
    except BaseException:
        # Back to the state before: the old layer in place, no version file, the record unchanged.
        if replaced:
            os.replace(kept, current)
            if entry["versions"][-1:] == [name]:
                entry["versions"].pop()
                edits.pop()
        else:
            kept.unlink(missing_ok=True)
        raise
    return name


def restack(stack: Stack, order: list[int] | None, hide=(), show=(), hidden: list[int] | None = None) -> bool:
    """Change the stack: a new `order`, layers to `hide` or `show`, or the whole `hidden` list.
    Saves the record when anything changed; the caller rebuilds the composite."""
    if order is None and not hide and not show and hidden is None:
        return False
    rec = stack.record
    if order is not None:
        rec["order"] = list(order)
    base = set(rec["hidden"]) if hidden is None else set(hidden)
    rec["hidden"] = sorted((base | set(hide)) - set(show))
    stack.save_record()
    return True


def with_alpha_of(edited, rgba):
    """An edited RGB put back as the layer: the layer's size (the stack's; the edit pipeline renders
    on its own grid) and its alpha, untouched."""
    from PIL import Image

    if edited.size != rgba.size:
        edited = edited.resize(rgba.size, Image.Resampling.LANCZOS)
    result = edited.convert("RGB")
    result.putalpha(rgba.getchannel("A"))
    return result


def revert_layer(stack: Stack, i: int, version: int) -> str:
    """Layer `i` back to its version `version` (`layer_0i.vK.png`); the version it replaces is kept
    as the next one, so a revert can itself be undone. Returns the kept file's name."""
    name = version_file(i, version)
    if name not in stack.record["layers"][i]["versions"]:
        kept = stack.record["layers"][i]["versions"]
        raise UsageError(f"layer {i} has no version {version} (it has {', '.join(kept) or 'none'})")
    from PIL import Image

    with Image.open(stack.folder / name) as im:
        image = im.convert("RGBA")
    return replace_layer(stack, i, image, {"revert_to": name})


# -- exports -------------------------------------------------------------------------------------


def export_ora(stack: Stack, images: list, path: str) -> None:
    """OpenRaster (GIMP, Krita, MyPaint): a zip of the layer PNGs with `mimetype` first and
    uncompressed, `stack.xml` (topmost layer first, hidden ones marked), the merged image and a
    thumbnail."""
    import zipfile
    from xml.sax.saxutils import quoteattr

    w, h = stack.size
    merged = composite(images, stack.order, stack.hidden)
    entries = [
        f'    <layer name={quoteattr(f"layer {i}")} src="data/{layer_file(i)}" x="0" y="0" opacity="1.0" '
        f'visibility="{"hidden" if i in stack.hidden else "visible"}" composite-op="svg:src-over"/>'
        for i in reversed(stack.order)
    ]
    xml = (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        f'<image version="0.0.3" w="{w}" h="{h}">\n  <stack>\n' + "\n".join(entries) + "\n  </stack>\n</image>\n"
    )
    thumb = merged.copy()
    thumb.thumbnail((256, 256))
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "image/openraster", compress_type=zipfile.ZIP_STORED)
        z.writestr("stack.xml", xml, compress_type=zipfile.ZIP_DEFLATED)
        for i, image in enumerate(images):
            z.writestr(f"data/{layer_file(i)}", plain_png_bytes(image), compress_type=zipfile.ZIP_STORED)
        z.writestr("mergedimage.png", plain_png_bytes(merged), compress_type=zipfile.ZIP_STORED)
        z.writestr("Thumbnails/thumbnail.png", plain_png_bytes(thumb), compress_type=zipfile.ZIP_STORED)
    write_bytes_atomic(path, buf.getvalue())


def export_tiff(stack: Stack, images: list, path: str) -> None:
    """A multi-page RGBA TIFF: one page per visible layer, bottom first (GIMP opens the pages as
    layers)."""
    pages = [images[i] for i in stack.order if i not in stack.hidden]
    if not pages:
        raise UsageError("--export tiff: every layer is hidden; show one with --show N")
    buf = BytesIO()
    pages[0].save(buf, format="TIFF", save_all=True, append_images=pages[1:], compression="tiff_deflate")
    write_bytes_atomic(path, buf.getvalue())


def export(stack: Stack, images: list, kind: str, path: str) -> None:
    {"ora": export_ora, "tiff": export_tiff}[kind](stack, images, path)
