"""Cell claims: any number of sweep processes on one run folder make each cell once.

Before a process makes a cell it creates `claims/CELL_ID` with `O_CREAT | O_EXCL` (atomic on a
local disk and on NFS v3+ and Lustre), holding its owner (host, pid) and the time. A claim stays
after its cell is done (the manifest says done; the claim says taken). Another process skips a
cell whose claim is live. A claim is stale when its owner is gone: on the same host, its pid no
longer runs; on another host, its file was not touched for `STALE_S` (owners touch their open
claims every `HEARTBEAT_S`). A stale claim is taken over by renaming it away (only one process
can) and claiming afresh; the cell is then redone only if no manifest records it done. A cell
that fails gives its claim back, so a rerun retries it; so does a process stopped by Ctrl-C or
SIGTERM for the cells it had not finished.

Shards (`--shard`, SLURM arrays, `srun -n`, torchrun) still split the cells for balance; the
claims are what keeps a resubmitted task, two shells or overlapping shards from doing a cell twice.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

CLAIMS = "claims"
HEARTBEAT_S = 30.0
STALE_S = 300.0


def _host() -> str:
    return socket.gethostname()


class Claims:
    """This process's claims in a run folder; `beat()` (a thread) keeps the open ones fresh."""

    def __init__(self, folder: Path):
        self.root = folder / CLAIMS
        self.root.mkdir(parents=True, exist_ok=True)
        self.open: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def path(self, cell_id: str) -> Path:
        return self.root / cell_id

    def take(self, cell_id: str) -> str | None:
        """Claim a cell: "new", or "over" when taken over from an owner that is gone (its cell may
        be done: check the manifests), or None when another live process holds it."""
        if self._create(cell_id):
            return "new"
        if not self.stale(cell_id):
            return None
        # Only one process can rename the stale claim away; the others see it gone and lose the
        # O_EXCL race that follows, or find the new claim live.
        away = self.root / f".{cell_id}.stale.{_host()}-{os.getpid()}"
        try:
            os.rename(self.path(cell_id), away)
        except FileNotFoundError:
            return "over" if self._create(cell_id) else None
        away.unlink(missing_ok=True)
        return "over" if self._create(cell_id) else None

    def _create(self, cell_id: str) -> bool:
        owner = {"host": _host(), "pid": os.getpid(), "time": time.time()}
        try:
            fd = os.open(self.path(cell_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        try:
            os.write(fd, json.dumps(owner).encode())
        finally:
            os.close(fd)
        with self._lock:
            self.open.add(cell_id)
        return True

    def stale(self, cell_id: str) -> bool:
        """Whether the claim's owner is gone (see the module's docstring); a claim that cannot
        be read (being written, or cut short by a kill) counts as stale only once it is old."""
        path = self.path(cell_id)
        try:
            owner = json.loads(path.read_text())
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return True
        except (OSError, ValueError):
            return _age(path) > STALE_S
        if owner.get("host") == _host() and isinstance(owner.get("pid"), int):
            if owner["pid"] == os.getpid():
                return cell_id not in self.open  # an earlier process that had this pid
            return not alive(owner["pid"])
        return age > STALE_S

    def done(self, cell_id: str) -> None:
        """The cell is recorded: its claim stays (taken) but needs no more heartbeats."""
        with self._lock:
            self.open.discard(cell_id)

    def give_back(self, cell_id: str) -> None:
        """Release a claim whose cell was not made (failed, or the process is stopping)."""
        with self._lock:
            self.open.discard(cell_id)
        self.path(cell_id).unlink(missing_ok=True)

    def give_back_open(self) -> None:
        with self._lock:
            left = list(self.open)
        for cell_id in left:
            self.give_back(cell_id)

    def __enter__(self) -> Claims:
        self._thread = threading.Thread(target=self._beat, name="llmdit-claims", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.give_back_open()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._lock:
                held = list(self.open)
            for cell_id in held:
                try:
                    os.utime(self.path(cell_id))
                except OSError:
                    pass


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
