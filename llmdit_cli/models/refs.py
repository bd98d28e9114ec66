"""Model references: a Hub id, a local diffusers folder, or `demo`; what identifies a component."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from llmdit_cli.errors import ModelError, setting

DEMO = "demo"
DEMO_PATH = Path(__file__).resolve().parent.parent / "assets" / "demo"
MODEL = setting("model")


def resolve_folder(ref: str) -> tuple[Path, str | None]:
    """The local diffusers folder for `ref`, and the Hub revision it came from (if any)."""
    if ref == DEMO:
        return DEMO_PATH, None
    path = Path(ref).expanduser()
    if is_local(ref):
        if path.is_file():
            raise ModelError(
                f"{MODEL} {ref}: a file, not a model folder (a single-file transformer goes in "
                f"{setting('optimization.transformer_file')}, with a folder or Hub id as {MODEL})"
            )
        if not path.is_dir():
            raise ModelError(f"{MODEL} {ref}: no such folder")
        if (path / "model" / "model_index.json").is_file():  # a `llmdit train --method full` run folder
            path = path / "model"
        if not (path / "model_index.json").is_file():
            raise ModelError(f"{MODEL} {ref}: not a diffusers folder (no model_index.json)")
        return path, None
    if "/" not in ref:  # a Hub id is ORG/NAME: this is a typo, not a download to suggest
        raise ModelError(f"{MODEL} {ref}: not a folder, `demo` or a Hub id (ORG/NAME){_did_you_mean(ref)}")
    return _hub_snapshot(ref)


def _did_you_mean(ref: str) -> str:
    import difflib

    from llmdit_cli.families import REGISTRY

    known = [DEMO, *(repo for family in REGISTRY for repo in family.hub_variants)]
    if ref in known:  # right, only not downloaded
        return ""
    close = difflib.get_close_matches(ref, known, n=1, cutoff=0.5)
    return f"; did you mean {close[0]}?" if close else ""


def on_this_machine(ref: str) -> bool:
    """Whether `ref` opens without a download: `demo`, a folder, or a Hub id in the local cache."""
    if is_local(ref):
        return True
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(ref, allow_patterns=["model_index.json"], local_files_only=True)
    except Exception:  # not cached (or no such repo): either way, not here
        return False
    return True


def is_local(ref: str) -> bool:
    """Whether `ref` names a folder rather than a Hub repo."""
    return ref == DEMO or Path(ref).expanduser().exists() or ref.startswith((".", "/", "~")) or ref.count("/") > 1


def _hub_snapshot(repo_id: str) -> tuple[Path, str | None]:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.jinja", "*.txt", "*.safetensors", "tokenizer/*"]
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
            raise ModelError(
                f"{MODEL} {repo_id}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                f"run `hf download {repo_id}` on a connected machine or pass a local folder{_did_you_mean(repo_id)}"
            ) from None
        try:
            folder = Path(snapshot_download(repo_id, allow_patterns=patterns))
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "no answer"
            raise ModelError(
                f"{MODEL} {repo_id}: not cached and cannot be downloaded ({reason}); "
                f"run `hf download {repo_id}` on a connected machine, or pass a local folder or `demo`"
            ) from None
    if not (folder / "model_index.json").is_file():
        raise ModelError(f"{MODEL} {repo_id}: the Hub repo is not a diffusers pipeline (no model_index.json)")
    return folder, folder.name


def read_json(path: Path, ref: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{MODEL} {ref}: cannot read {what} ({exc})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{MODEL} {ref}: {what} is not a JSON object")
    return data


def config_hash(folder: Path, component: str) -> str:
    cfg = folder / component / "config.json"
    data = cfg.read_bytes() if cfg.is_file() else b""
    return hashlib.sha256(data).hexdigest()[:16]


def weights_fingerprint(folder: Path, component: str, span: int = 1 << 20) -> str:
    """A cheap fingerprint of a component's weights: hash of the first MiB of its first weights file."""
    files = sorted((folder / component).glob("*.safetensors"))
    if not files:
        return ""
    with files[0].open("rb") as fh:
        return hashlib.sha256(fh.read(span)).hexdigest()[:16]


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
