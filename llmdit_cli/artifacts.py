"""Stage files: prompt embeddings and latents as safetensors with a versioned llmdit header.

Layout (see DESIGN.md §2): embeddings are ragged, one key per item (`prompt_embeds.0`,
`negative_prompt_embeds.0`, ...); latents are one `latents` tensor `[B, C, h, w]`; layered latents
(Qwen-Image-Layered, `decompose --save-latents`) one `latents` tensor `[1, C, layers + 1, h, w]`
whose frame 0 is the model's composite. The header is
safetensors metadata (str -> str): `llmdit.schema`, `llmdit.kind`, model identity and
`llmdit.params` (JSON). Reading a header needs no torch; tensors are loaded on demand.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmdit_cli.errors import InputError, UsageError, WriteError

SCHEMA = 1
KINDS = ("embeds", "latents", "layered-latents")
STDIO = "-"
_HEADER_LIMIT = 100 * 1024 * 1024
_UMASK_LOCK = threading.Lock()


@dataclass
class StageFile:
    """A stage file's header and raw bytes; tensors load lazily with `tensors()`."""

    source: str
    kind: str
    schema: int
    meta: dict[str, str]
    params: dict[str, Any]
    shapes: dict[str, list[int]]
    dtypes: dict[str, str]
    data: bytes = field(repr=False, default=b"")

    def tensors(self) -> dict:
        from safetensors import SafetensorError
        from safetensors.torch import load

        try:
            return load(self.data)
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise InputError(f"{self.source}: cannot read its tensors ({str(exc).splitlines()[0]})") from None

    def meta_int(self, key: str) -> int | None:
        value = self.meta.get(f"llmdit.{key}")
        if value in (None, ""):
            return None
        try:
            return int(value)
        except ValueError:
            raise InputError(f"{self.source}: header llmdit.{key} is {value!r}, not a whole number") from None


def read_bytes(path: str, what: str) -> tuple[bytes, str]:
    """The bytes of `path` ('-' is stdin) and a name for messages."""
    if path == STDIO:
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError(f"{what} is '-' but stdin is a terminal: pipe a file in")
        data = sys.stdin.buffer.read()
        if not data:
            raise InputError(f"stdin is empty: expected {what}")
        return data, "stdin"
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file")
    if p.is_dir():
        raise InputError(f"{path}: is a folder, expected a file")
    try:
        return p.read_bytes(), path
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def parse_header(data: bytes, name: str) -> dict[str, Any]:
    """The safetensors JSON header of `data`, or an InputError naming `name`."""
    if len(data) < 8:
        raise InputError(f"{name}: not a llmdit stage file (too short to be safetensors)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > _HEADER_LIMIT or 8 + size > len(data):
        raise InputError(f"{name}: not a llmdit stage file (not a safetensors file)")
    try:
        header = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise InputError(f"{name}: not a llmdit stage file (not a safetensors file)") from None
    if not isinstance(header, dict):
        raise InputError(f"{name}: not a llmdit stage file (not a safetensors file)")
    return header


# safetensors dtype names and their sizes in bytes
DTYPE_SIZES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
_EMBED_KEY = re.compile(r"^(negative_)?prompt_embeds\.(0|[1-9][0-9]*)$")


def parse_stage(data: bytes, name: str, expect: str | None = None) -> StageFile:
    """A stage file's header, every part of it checked: a corrupt file is an InputError that says
    what is wrong, never a KeyError or a library error later."""
    header = parse_header(data, name)
    meta = _metadata(header.pop("__metadata__", None) or {}, name)
    kind = meta.get("llmdit.kind")
    if kind not in KINDS:
        raise InputError(f"{name}: a safetensors file, but not a llmdit stage file (no llmdit.kind header)")
    try:
        schema = int(meta.get("llmdit.schema", ""))
    except ValueError:
        raise InputError(f"{name}: bad llmdit.schema header {meta.get('llmdit.schema')!r}") from None
    if schema > SCHEMA:
        raise InputError(
            f"{name}: stage file schema {schema} is newer than this llmdit reads ({SCHEMA}); upgrade llmdit"
        )
    if schema < 1:
        raise InputError(f"{name}: bad llmdit.schema header {schema} (expected 1 to {SCHEMA})")
    if expect and kind != expect:
        hint = {
            "latents": "give it to `llmdit decode` or `img2img --from-latents`",
            "embeds": "give it to `llmdit generate --from-embeds`",
            "layered-latents": "give it to `llmdit decode`",
        }[kind]
        raise InputError(f"{name}: holds {kind}, but {expect} are expected here ({hint})")
    try:
        params = json.loads(meta.get("llmdit.params", "{}"))
    except (json.JSONDecodeError, RecursionError):
        raise InputError(f"{name}: llmdit.params header is not valid JSON") from None
    if not isinstance(params, dict):
        raise InputError(f"{name}: llmdit.params header is JSON {type(params).__name__}, not an object")
    shapes, dtypes = _tensor_table(header, len(data) - 8 - struct.unpack("<Q", data[:8])[0], name)
    _check_tensor_names(kind, shapes, name)
    _check_params(kind, shapes, params, name)
    stage = StageFile(
        source=name, kind=kind, schema=schema, meta=meta, params=params, shapes=shapes, dtypes=dtypes, data=data
    )
    for key in ("hidden_size", "hidden_layer", "height", "width", "count", "channels", "layers"):
        stage.meta_int(key)  # a header number that is not one fails here, naming the field
    frames = shapes["latents"][2] if kind == "layered-latents" else None
    if frames is not None and stage.meta_int("layers") not in (None, frames - 1):
        raise InputError(
            f"{name}: header llmdit.layers is {stage.meta_int('layers')}, but the latents hold {frames - 1}"
        )
    return stage


def _check_params(kind: str, shapes: dict[str, list[int]], params: dict, name: str) -> None:
    """The settings record must describe the tensors: one prompt per embedding, one record per image."""

    def check_list(key: str, n: int | tuple, item_type: type, what: str) -> None:
        value, sizes = params.get(key), n if isinstance(n, tuple) else (n,)
        if value is not None and (
            not isinstance(value, list) or len(value) not in sizes or not all(isinstance(x, item_type) for x in value)
        ):
            raise InputError(
                f"{name}: llmdit.params {key} should be a list of {' or '.join(map(str, sizes))} "
                f"{what}, got {value!r:.80}"
            )

    if kind == "latents":
        check_list("images", shapes["latents"][0], dict, "settings records")
        return
    if kind == "layered-latents":
        if not isinstance(params.get("settings", {}), dict) or not isinstance(params.get("source", {}), dict):
            raise InputError(f"{name}: llmdit.params settings and source should be JSON objects")
        return
    n = sum(1 for k in shapes if k.startswith("prompt_embeds."))
    n_neg = len(shapes) - n
    if n == 0:
        raise InputError(f"{name}: the embeds file holds no prompt embeddings")
    if n_neg not in (0, n):
        raise InputError(f"{name}: {n} prompt embeddings but {n_neg} negative ones (expected 0 or {n})")
    if sorted(shapes) != sorted(embeds_key(i, neg) for i in range(n) for neg in ((False, True) if n_neg else (False,))):
        raise InputError(f"{name}: embeddings are not numbered 0 to {n - 1}")
    check_list("prompts", n, str, "prompts")
    check_list("negative_prompts", (n_neg, n), str, "negative prompts")  # recorded even when not encoded


def embeds_key(i: int, negative: bool = False) -> str:
    return f"{'negative_' if negative else ''}prompt_embeds.{i}"


def _metadata(meta: Any, name: str) -> dict[str, str]:
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise InputError(f"{name}: its safetensors __metadata__ is not a table of strings")
    return meta


def _tensor_table(header: dict, body: int, name: str) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Shapes and dtypes of every tensor entry, each entry checked against the file's size."""
    shapes, dtypes, spans = {}, {}, []
    for key, entry in header.items():
        where = f"{name}: tensor {key!r}"
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise InputError(f"{where}: entry needs dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
            raise InputError(f"{where}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
            raise InputError(f"{where}: shape {shape!r} is not a list of sizes")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_count(n) for n in offsets)
            or not offsets[0] <= offsets[1] <= body
        ):
            raise InputError(f"{where}: data_offsets {offsets!r} lie outside the file ({body} data bytes)")
        if offsets[1] - offsets[0] != DTYPE_SIZES[dtype] * math.prod(shape):
            raise InputError(f"{where}: {offsets[1] - offsets[0]} bytes do not hold a {dtype} tensor of shape {shape}")
        shapes[key], dtypes[key] = shape, dtype
        spans.append(tuple(offsets))
    spans.sort()
    if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
        raise InputError(f"{name}: tensors overlap in the file (not a valid safetensors file)")
    return shapes, dtypes


def _is_count(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def _check_tensor_names(kind: str, shapes: dict[str, list[int]], name: str) -> None:
    if kind in ("latents", "layered-latents"):
        extra = sorted(set(shapes) - {"latents"})
        if "latents" not in shapes or extra:
            raise InputError(f"{name}: a latents file holds one tensor named 'latents' (found {sorted(shapes)})")
        shape = shapes["latents"]
        if kind == "latents" and len(shape) != 4:
            raise InputError(f"{name}: latents have shape {shape}, expected [batch, channels, h, w]")
        if kind == "layered-latents" and (len(shape) != 5 or shape[0] != 1 or shape[2] < 2):
            raise InputError(f"{name}: layered latents have shape {shape}, expected [1, channels, layers + 1, h, w]")
        return
    for key, shape in shapes.items():
        if not _EMBED_KEY.match(key):
            raise InputError(
                f"{name}: tensor {key!r} is not an embedding (prompt_embeds.N or negative_prompt_embeds.N)"
            )
        if len(shape) != 2:
            raise InputError(f"{name}: embedding {key!r} has shape {shape}, expected [tokens, hidden]")
    hidden = {shape[1] for shape in shapes.values()}
    if len(hidden) > 1:
        raise InputError(f"{name}: embeddings of different hidden sizes {sorted(hidden)} in one file")


def read_stage(path: str, expect: str | None = None) -> StageFile:
    """Read and validate a stage file ('-' for stdin). `expect` is 'embeds' or 'latents'."""
    what = {"embeds": "an embeds file", "latents": "a latents file", "layered-latents": "a layered latents file"}.get(
        expect or "", "a stage file"
    )
    data, name = read_bytes(path, what)
    return parse_stage(data, name, expect)


def stage_metadata(kind: str, identity: dict[str, Any], params: dict[str, Any]) -> dict[str, str]:
    meta = {"llmdit.schema": str(SCHEMA), "llmdit.kind": kind}
    meta.update({f"llmdit.{k}": "" if v is None else str(v) for k, v in identity.items()})
    meta["llmdit.params"] = json.dumps(params, sort_keys=True)
    return meta


def check_binary_target(path: str) -> None:
    """Before any work is done: refuse to write binary data to a terminal, and a file `path` that
    cannot be written (`check_writable`)."""
    if path == STDIO:
        if sys.stdout.isatty():
            raise UsageError("refusing to write binary data to a terminal: redirect stdout or give -o FILE")
        return
    check_writable(path)


_writable_folders: set[str] = set()  # folders a file was made in by `check_writable` (this process)


def check_writable(path: str) -> None:
    """That a file can be written at `path`, checked before the work that makes it: not a folder,
    device or pipe (a write replaces the file at the path), under a folder (or one that can be
    made) where this process can make files, as tried by making and removing one."""
    target = Path(path)
    try:  # (a folder this process may not search fails the stat calls themselves)
        _check_replaceable(target, path)
        folder = target.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        is_folder = folder.is_dir()
    except OSError as exc:
        raise InputError(f"{path}: cannot write there ({exc.strerror or exc})") from None
    if not is_folder:
        raise InputError(f"{path}: cannot write there ({folder} is a file, not a folder)")
    if str(folder) in _writable_folders:
        return
    try:
        fd, probe = tempfile.mkstemp(prefix=".llmdit-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{path}: cannot write in {folder} ({exc.strerror or exc})") from None
    _writable_folders.add(str(folder))


def _check_replaceable(target: Path, path: str) -> None:
    if target.is_dir():
        raise InputError(f"{path}: is a folder; cannot write a file there")
    if target.exists() and not target.is_file():
        raise InputError(f"{path}: not a regular file (a device, pipe or socket); give a file's name, or - for stdout")


def write_bytes_atomic(path: str, data: bytes, tag: str = "") -> None:
    """Write `data` to `path` (or stdout for '-') so that no half-written file is ever seen. The
    temporary file is `.NAME.[TAG.]RANDOM.tmp` beside it (`tag` lets a caller find its own)."""
    if path == STDIO:
        check_binary_target(path)
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    _check_replaceable(target, path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name}.{tag + '.' if tag else ''}", suffix=".tmp", dir=target.parent
        )
    except OSError as exc:
        raise WriteError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        # mkstemp makes the file private (0600); a written file gets what `cp` would give it
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except OSError as exc:  # a full disk, a folder that went read-only
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BackgroundWriter:
    """Runs writes on one thread while the caller goes on (the next image denoises while the last
    is PNG-encoded and written): in the order given, at most `depth` waiting (`put` waits for a
    place, so memory stays bounded). The first failure is raised to the caller at its next `put`
    or when the block ends, and nothing queued after it runs; each write is atomic, so nothing is
    left half-written."""

    def __init__(self, depth: int = 2):
        import queue

        self._tasks: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="llmdit-writer", daemon=True)
        self._thread.start()

    def put(self, task) -> None:
        self._raise()
        self._tasks.put(task)

    def _run(self) -> None:
        while (task := self._tasks.get()) is not None:
            if self._error is None:
                try:
                    task()
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Wait for the queued writes; raise the first failure."""
        self._tasks.put(None)
        self._thread.join()
        self._raise()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.close()
            return
        # The caller failed (or was interrupted): the images already made are still written whole.
        self._tasks.put(None)
        self._thread.join()


def _umask() -> int:
    """The process umask: read from /proc on Linux; elsewhere reading it means setting it (set
    straight back, under a lock, since the umask is process-wide)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def give_usual_modes(folder: str | Path) -> None:
    """Files in `folder` get 0666 minus the umask. Libraries that write atomically (safetensors
    0.8's save_file, so Accelerate checkpoints and diffusers' save_pretrained) leave them 0600."""
    mode = 0o666 & ~_umask()
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(mode)


_ST_DTYPES = {
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "float64": "F64",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}


def stage_bytes(kind: str, tensors: dict, identity: dict[str, Any], params: dict[str, Any]) -> bytes:
    """A stage file as safetensors bytes, the same bytes for the same content: the header's keys
    sorted and tensors in name order (the safetensors library orders its metadata by a per-process
    hash, so two runs would differ)."""
    import torch

    header: dict[str, Any] = {"__metadata__": dict(sorted(stage_metadata(kind, identity, params).items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {
            "dtype": _ST_DTYPES[str(t.dtype).replace("torch.", "")],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the format aligns the data to 8 bytes
    return len(head).to_bytes(8, "little") + head + b"".join(blobs)


def write_stage(path: str, kind: str, tensors: dict, identity: dict[str, Any], params: dict[str, Any]) -> None:
    write_bytes_atomic(path, stage_bytes(kind, tensors, identity, params))


def write_embeds_file(
    path: str, positive: list, negative: list, identity: dict[str, Any], hidden_layer: int, params: dict[str, Any]
) -> None:
    """The one writer of embeds files (`encode`, the training cache, the server's encode reply):
    one tensor per prompt, and a header with the text encoder's identity and what the reader checks
    (hidden size, count)."""
    write_bytes_atomic(path, embeds_file_bytes(positive, negative, identity, hidden_layer, params))


def embeds_file_bytes(
    positive: list, negative: list, identity: dict[str, Any], hidden_layer: int, params: dict[str, Any]
) -> bytes:
    header = {
        **identity,
        "hidden_size": int(positive[0].shape[-1]),
        "hidden_layer": hidden_layer,
        "dtype": str(positive[0].dtype).replace("torch.", ""),
        "count": len(positive),
    }
    return stage_bytes("embeds", embeds_tensors(positive, negative), header, params)


def write_latents_file(
    path: str, latents, identity: dict[str, Any], height: int, width: int, params: dict[str, Any]
) -> None:
    """The one writer of latents files (`generate --save-latents`, the training cache): finished
    latents `[B, C, h, w]` (sigma 0) and the image size they decode to."""
    header = {
        **identity,
        "height": height,
        "width": width,
        "sigma": 0,
        "channels": int(latents.shape[1]),
        "count": int(latents.shape[0]),
    }
    write_stage(path, "latents", {"latents": latents}, header, params)


def write_layered_latents_file(
    path: str, latents, identity: dict[str, Any], height: int, width: int, params: dict[str, Any]
) -> None:
    """The writer of layered latents (`decompose --save-latents`): finished latents
    `[1, C, layers + 1, h, w]`, the layer count and the size the layers decode to; `params` hold
    the layer folder's settings and source record, so `llmdit decode` writes the same folder."""
    header = {
        **identity,
        "layers": int(latents.shape[2]) - 1,
        "height": height,
        "width": width,
        "channels": int(latents.shape[1]),
    }
    write_stage(path, "layered-latents", {"latents": latents}, header, params)


def embeds_tensors(positive: list, negative: list) -> dict:
    out = {embeds_key(i): t for i, t in enumerate(positive)}
    out.update({embeds_key(i, negative=True): t for i, t in enumerate(negative)})
    return out


def split_embeds(tensors: dict) -> tuple[list, list]:
    def items(prefix: str) -> list:
        keys = sorted((k for k in tensors if k.startswith(prefix + ".")), key=lambda k: int(k.rsplit(".", 1)[1]))
        return [tensors[k] for k in keys]

    return items("prompt_embeds"), items("negative_prompt_embeds")
