"""The on-disk embedding cache: one embeds stage file (the format `encode` writes) per formatted
text, keyed by the text encoder's identity (config hash and weights fingerprint), the formatted
text, and the settings that change the embedding (hidden layer, token limit). A prompt whose
embeddings are all cached never loads the text encoder.

Entries are written atomically (temporary file, then rename), so processes sharing the cache
never see half an entry, and two writing the same entry leave one whole file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUBDIR = "embeds"


def default_dir() -> Path:
    """The user cache dir: $XDG_CACHE_HOME/llmdit, else ~/.cache/llmdit."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmdit"


@dataclass(frozen=True)
class EmbedCache:
    root: Path

    @classmethod
    def at(cls, folder: str | None) -> EmbedCache:
        return cls(Path(folder).expanduser() if folder else default_dir())

    def key(self, identity: dict[str, Any], text: str, hidden_layer: int, max_length: int, variant: str = "") -> str:
        """`variant`: what else changes the numbers (the dtype and quantization it was made with)."""
        data = {
            "encoder": {k: identity.get(k) for k in ("text_encoder_config", "text_encoder_weights")},
            "text": text,
            "hidden_layer": hidden_layer,
            "max_length": max_length,
            "variant": variant,
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / SUBDIR / key[:2] / f"{key}.embeds.safetensors"

    def get(self, key: str):
        """(embedding `[seq, hidden]`, token count), or None on a miss or an unreadable entry."""
        from llmdit_cli.artifacts import read_stage, split_embeds
        from llmdit_cli.errors import InputError

        path = self.path(key)
        if not path.is_file():
            return None
        try:
            stage = read_stage(str(path), expect="embeds")
            tensor = split_embeds(stage.tensors())[0][0]
            count = int(stage.params.get("token_counts", [tensor.shape[0]])[0])
        except (InputError, OSError, ValueError, IndexError, TypeError):
            return None  # a damaged entry is a miss; it is written again
        os.utime(path)  # recently used: `prune` keeps it
        return tensor, count

    def put(self, key: str, tensor, count: int, identity: dict[str, Any], hidden_layer: int, text: str) -> None:
        from llmdit_cli.artifacts import write_embeds_file

        write_embeds_file(
            str(self.path(key)),
            [tensor],
            [],
            identity,
            hidden_layer,
            {"formatted": [text], "token_counts": [count], "cache_key": key},
        )

    def entries(self) -> list[Path]:
        return sorted((self.root / SUBDIR).glob("*/*.embeds.safetensors"))

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.entries())

    def clear(self) -> int:
        removed = 0
        for p in self.entries():
            p.unlink(missing_ok=True)
            removed += 1
        return removed

    def prune(self, max_bytes: int) -> tuple[int, int]:
        """Remove the least recently used entries until the cache holds at most `max_bytes`."""
        files = sorted(self.entries(), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        removed = 0
        for p in files:
            if total <= max_bytes:
                break
            total -= p.stat().st_size
            p.unlink(missing_ok=True)
            removed += 1
        return removed, total


def parse_size(text: str) -> int:
    """`500M`, `2G`, `10k`, `1048576` -> bytes (K, M, G, T are powers of 1024)."""
    import re

    from llmdit_cli.errors import UsageError

    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not m:
        raise UsageError(f"--max-size {text}: expected a size like 500M, 2G or 1048576")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2) or " "))
