"""Stage files: prompt embeddings and latents as safetensors with a versioned llmdit header.

Layout (see DESIGN.md §2): embeddings are ragged, one key per item (`prompt_embeds.0`,
`negative_prompt_embeds.0`, ...); latents are one `latents` tensor `[B, C, h, w]`. The header is
safetensors metadata (str -> str): `llmdit.schema`, `llmdit.kind`, model identity and
`llmdit.params` (JSON). Reading a header needs no torch; tensors are loaded on demand.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmdit_cli.errors import InputError, UsageError

SCHEMA = 1
KINDS = ("embeds", "latents")
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
        from safetensors.torch import load

        return load(self.data)

    def meta_int(self, key: str) -> int | None:
        value = self.meta.get(f"llmdit.{key}")
        return int(value) if value not in (None, "") else None


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
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{name}: not a llmdit stage file (not a safetensors file)") from None
    if not isinstance(header, dict):
        raise InputError(f"{name}: not a llmdit stage file (not a safetensors file)")
    return header


def parse_stage(data: bytes, name: str, expect: str | None = None) -> StageFile:
    header = parse_header(data, name)
    meta = header.pop("__metadata__", None) or {}
    kind = meta.get("llmdit.kind")
    if kind not in KINDS:
        raise InputError(f"{name}: a safetensors file, but not a llmdit stage file (no llmdit.kind header)")
    try:
        schema = int(meta.get("llmdit.schema", ""))
    except ValueError:
        raise InputError(f"{name}: bad llmdit.schema header {meta.get('llmdit.schema')!r}") from None
    if schema > SCHEMA:
        raise InputError(f"{name}: stage file schema {schema} is newer than this llmdit reads ({SCHEMA}); upgrade llmdit")
    if expect and kind != expect:
        hint = {"latents": "give it to `llmdit decode` or `img2img --from-latents`",
                "embeds": "give it to `llmdit generate --from-embeds`"}[kind]
        raise InputError(f"{name}: holds {kind}, but {expect} are expected here ({hint})")
    try:
        params = json.loads(meta.get("llmdit.params", "{}"))
    except json.JSONDecodeError:
        raise InputError(f"{name}: llmdit.params header is not valid JSON") from None
    return StageFile(
        source=name, kind=kind, schema=schema, meta=meta, params=params,
        shapes={k: v["shape"] for k, v in header.items()},
        dtypes={k: v["dtype"] for k, v in header.items()}, data=data,
    )


def read_stage(path: str, expect: str | None = None) -> StageFile:
    """Read and validate a stage file ('-' for stdin). `expect` is 'embeds' or 'latents'."""
    what = {"embeds": "an embeds file", "latents": "a latents file"}.get(expect or "", "a stage file")
    data, name = read_bytes(path, what)
    return parse_stage(data, name, expect)


def stage_metadata(kind: str, identity: dict[str, Any], params: dict[str, Any]) -> dict[str, str]:
    meta = {"llmdit.schema": str(SCHEMA), "llmdit.kind": kind}
    meta.update({f"llmdit.{k}": "" if v is None else str(v) for k, v in identity.items()})
    meta["llmdit.params"] = json.dumps(params, sort_keys=True)
    return meta


def check_binary_target(path: str) -> None:
    """Refuse to write binary data to a terminal before any work is done."""
    if path == STDIO and sys.stdout.isatty():
        raise UsageError("refusing to write binary data to a terminal: redirect stdout or give -o FILE")


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write `data` to `path` (or stdout for '-') so that no half-written file is ever seen."""
    if path == STDIO:
        check_binary_target(path)
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        # mkstemp makes the file private (0600); a written file gets what `cp` would give it
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask. Reading it means setting it, so it is set straight back, under a lock
    because the umask is process-wide and a server writes files from several threads."""
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


def write_stage(path: str, kind: str, tensors: dict, identity: dict[str, Any], params: dict[str, Any]) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    write_bytes_atomic(path, save(tensors, metadata=stage_metadata(kind, identity, params)))


def embeds_tensors(positive: list, negative: list) -> dict:
    out = {f"prompt_embeds.{i}": t for i, t in enumerate(positive)}
    out.update({f"negative_prompt_embeds.{i}": t for i, t in enumerate(negative)})
    return out


def split_embeds(tensors: dict) -> tuple[list, list]:
    def items(prefix: str) -> list:
        keys = sorted((k for k in tensors if k.startswith(prefix + ".")), key=lambda k: int(k.rsplit(".", 1)[1]))
        return [tensors[k] for k in keys]

    return items("prompt_embeds"), items("negative_prompt_embeds")
