"""The on-disk embedding cache: one embeds stage file (the format `encode` writes) per formatted
text, keyed by the text encoder's identity (config hash and weights fingerprint), the formatted
text, and the settings that change the embedding (hidden layer, token limit). A prompt whose
embeddings are all cached never loads the text encoder.

Entries are written atomically (temporary file, then rename), so processes sharing the cache
never see half an entry, and two writing the same entry leave one whole file.

`stats.json` beside the entries counts hits, misses and evictions (entries `prune` removed) since
the cache was made or cleared, updated under a file lock by every process that uses the cache: a
process writes its counts at most once a second, when it reads them, and when it ends.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUBDIR = "embeds"
STATS = "stats.json"
COUNTERS = ("hits", "misses", "evictions")
FLUSH_EVERY_S = 1.0
# Counts not yet written, by cache folder, and when each was last written (monotonic seconds).
_PENDING: dict[Path, dict[str, int]] = {}
_FLUSHED: dict[Path, float] = {}
_PENDING_LOCK = threading.Lock()


def _flush_all() -> None:
    for root in list(_PENDING):
        EmbedCache(root).flush()


atexit.register(_flush_all)


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
        try:
            if not path.is_file():
                self.count(misses=1)
                return None
            stage = read_stage(str(path), expect="embeds")
            tensor = split_embeds(stage.tensors())[0][0]
            count = int(stage.params.get("token_counts", [tensor.shape[0]])[0])
        except (InputError, OSError, ValueError, IndexError, TypeError):
            self.count(misses=1)
            return None  # a damaged or unreadable entry is a miss; it is written again if it can be
        self.count(hits=1)
        try:
            os.utime(path)  # recently used: `prune` keeps it
        except OSError:
            pass  # another user's entry, or pruned meanwhile: still a hit
        return tensor, count

    def put(self, key: str, tensor, count: int, identity: dict[str, Any], hidden_layer: int, text: str) -> bool:
        """Store an entry; False when the cache cannot be written (read-only, full, not a folder)."""
        from llmdit_cli.artifacts import write_embeds_file

        try:
            self._write(key, tensor, count, identity, hidden_layer, text, write_embeds_file)
        except OSError:
            return False
        return True

    def _write(self, key, tensor, count, identity, hidden_layer, text, write_embeds_file) -> None:
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

    def stats(self) -> list[tuple[Path, int, float]]:
        """(path, size, last use) of each entry still there (others may prune meanwhile)."""
        out = []
        for p in self.entries():
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            out.append((p, st.st_size, st.st_mtime))
        return out

    def size(self) -> int:
        return sum(size for _, size, _ in self.stats())

    def clear(self) -> int:
        removed = self._remove([p for p, _, _ in self.stats()])
        with _PENDING_LOCK:
            _PENDING.pop(self.root, None)
        (self.root / STATS).unlink(missing_ok=True)  # the counts start again with the cache
        return removed

    def prune(self, max_bytes: int) -> tuple[int, int]:
        """Remove the least recently used entries until the cache holds at most `max_bytes`."""
        files = sorted(self.stats(), key=lambda e: e[2])
        total = sum(size for _, size, _ in files)
        doomed = []
        for p, size, _ in files:
            if total <= max_bytes:
                break
            total -= size
            doomed.append(p)
        removed = self._remove(doomed)
        self.count(evictions=removed)
        return removed, total

    def counters(self) -> dict[str, Any]:
        """{hits, misses, evictions, since}: zeros (since None) before the first use; this
        process's counts not yet written included."""
        self.flush()
        try:
            data = json.loads((self.root / STATS).read_text())
        except (OSError, ValueError):
            data = {}
        out: dict[str, Any] = {k: int(data.get(k, 0)) if isinstance(data.get(k, 0), int) else 0 for k in COUNTERS}
        out["since"] = data.get("since")
        return out

    def count(self, **deltas: int) -> None:
        """Add to the counters. They gather in the process and are written at most once every
        `FLUSH_EVERY_S` (a server's lookups would otherwise each pay a locked file update), when
        read, and when the process ends."""
        if not any(deltas.values()):
            return
        with _PENDING_LOCK:
            pending = _PENDING.setdefault(self.root, dict.fromkeys(COUNTERS, 0))
            for k, v in deltas.items():
                pending[k] += v
            due = time.monotonic() - _FLUSHED.get(self.root, -FLUSH_EVERY_S) >= FLUSH_EVERY_S
        if due:
            self.flush()

    def flush(self) -> None:
        """Write this process's gathered counts, under a lock (processes share the cache); a cache
        that cannot be written keeps no counts, and that is all."""
        import fcntl

        with _PENDING_LOCK:
            deltas = _PENDING.pop(self.root, None)
            _FLUSHED[self.root] = time.monotonic()
        if not deltas or not any(deltas.values()):
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.root / ".stats.lock", "a") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                try:
                    data = json.loads((self.root / STATS).read_text())
                except (OSError, ValueError):
                    data = {}
                for k in COUNTERS:
                    data[k] = (data.get(k) if isinstance(data.get(k), int) else 0) + deltas.get(k, 0)
                data["since"] = data.get("since") or time.strftime("%Y-%m-%dT%H:%M:%S")
                tmp = self.root / f".{STATS}.{os.getpid()}.tmp"
                tmp.write_text(json.dumps(data))
                os.replace(tmp, self.root / STATS)
        except OSError:
            pass

    def _remove(self, paths: list[Path]) -> int:
        from llmdit_cli.errors import InputError

        try:
            for p in paths:
                p.unlink(missing_ok=True)
        except OSError as exc:
            raise InputError(f"{self.root}: cannot remove cache entries ({exc.strerror or exc})") from None
        return len(paths)


def parse_byte_size(text: str) -> int:
    """`500M`, `2G`, `10k`, `1048576` -> bytes (K, M, G, T are powers of 1024)."""
    import re

    from llmdit_cli.errors import UsageError

    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not m:
        raise UsageError(f"--max-size {text}: expected a size like 500M, 2G or 1048576")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2) or " "))
