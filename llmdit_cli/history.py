"""The studio's history: every image, rewrite, decompose and edit a server makes, in SQLite under
its data folder, with the files beside the database.

    DATA_DIR/history.sqlite3     entries and their files (WAL; a versioned schema, `MIGRATIONS`)
    DATA_DIR/files/ID-N.png      an entry's files (PNGs carry their settings, as the CLI writes them)
    DATA_DIR/stacks/ID/          a decompose entry's layer folder (`layerstack.py`, as the CLI's)
    DATA_DIR/uploads/SHA256.EXT  images clients sent (vision images, decompose sources), by content

An entry survives a kill at any moment, and never half: its row is committed as `writing` with
the writer's process id, its files (or its layer folder) are written atomically, then the row
turns `done` in one more commit. Only `done` entries are listed. Opening the store removes what a
killed writer left (a `writing` row whose process is gone, with its files and folder) and files
and folders no row names (a delete that stopped between its commit and removing them). Several processes may share
one data folder: SQLite's locking orders their writes, and recovery never touches an entry whose
writer is alive.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmdit_cli.errors import InputError, UsageError

DB_NAME = "history.sqlite3"
TASKS = ("generate", "img2img", "rewrite", "decompose", "edit")
# Schema versions, in order: MIGRATIONS[i] takes a database from version i to i + 1
# (`PRAGMA user_version`). Never edit a released step: add one.
MIGRATIONS = (
    """
    CREATE TABLE entries (
        id TEXT PRIMARY KEY,
        created REAL NOT NULL,
        task TEXT NOT NULL,
        model TEXT NOT NULL,
        family TEXT NOT NULL,
        prompt TEXT NOT NULL DEFAULT '',
        seed INTEGER,
        settings TEXT NOT NULL,
        result TEXT,
        parent TEXT REFERENCES entries (id) ON DELETE SET NULL,
        state TEXT NOT NULL CHECK (state IN ('writing', 'done')),
        writer INTEGER
    );
    CREATE INDEX entries_newest ON entries (created DESC, id DESC);
    CREATE TABLE files (
        entry TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL DEFAULT 'image',
        PRIMARY KEY (entry, name)
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def default_data_dir() -> Path:
    """`LLMDIT_DATA_DIR`, else the user data folder ($XDG_DATA_HOME/llmdit, ~/.local/share/llmdit)."""
    if os.environ.get("LLMDIT_DATA_DIR"):
        return Path(os.environ["LLMDIT_DATA_DIR"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "llmdit"


@dataclass
class Entry:
    """One recorded piece of work: its settings record (as a client sees it), the text it made (a
    rewrite), its parent (the img2img input or the edited stack) and its files, by name."""

    id: str
    created: float
    task: str
    model: str
    family: str
    prompt: str
    seed: int | None
    settings: dict[str, Any]
    result: str | None = None
    parent: str | None = None
    files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": self.created,
            "task": self.task,
            "model": self.model,
            "family": self.family,
            "prompt": self.prompt,
            "seed": self.seed,
            "settings": self.settings,
            "result": self.result,
            "parent": self.parent,
            "files": list(self.files),
        }


def new_id(now: float) -> str:
    """Sortable by time (milliseconds, hex), unique by 32 random bits."""
    return f"{int(now * 1000):012x}{secrets.token_hex(4)}"


def is_id(text: str) -> bool:
    return len(text) == 20 and all(c in "0123456789abcdef" for c in text)


def _older_than(db, cursor: str) -> tuple[str, list]:
    """The SQL condition (and its values) for entries listed after `cursor`, an entry's id."""
    row = db.execute("SELECT created FROM entries WHERE id=?", (cursor,)).fetchone()
    if row is not None:
        return "(created, id) < (?, ?)", [row[0], cursor]
    if not is_id(cursor):
        return "0", []
    # Deleted since the page was read: its id still tells its time, to the millisecond.
    ms = int(cursor[:12], 16)
    return "(created < ? OR (created < ? AND id < ?))", [ms / 1000, (ms + 1) / 1000, cursor]


class History:
    """The history of one data folder. Each thread keeps one connection (threads and processes
    share the folder safely); a call made while its thread's connection is busy opens its own."""

    def __init__(self, root: str | Path):
        self._local = threading.local()
        self.root = Path(root).expanduser()
        self.files = self.root / "files"
        self.stacks = self.root / "stacks"
        self.uploads = self.root / "uploads"
        try:
            for folder in (self.root, self.files, self.stacks, self.uploads):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"data folder {self.root}: cannot be created ({exc.strerror})") from None
        self.path = self.root / DB_NAME
        with self._connect() as db:
            migrate(db, self.path)
        self.recover()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # Kept open: closing the last connection to a WAL database checkpoints it, which cost a
        # served image more than its own insert.
        local = self._local
        if getattr(local, "busy", False):
            with closing(self._open()) as db:
                yield db
            return
        if getattr(local, "db", None) is None:
            local.db = self._open()
        local.busy = True
        try:
            yield local.db
        finally:
            local.busy = False

    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise UsageError(f"{self.path}: cannot open the history database ({exc})") from None
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- writing -----------------------------------------------------------------------------------

    def add(
        self,
        task: str,
        model: str,
        family: str,
        settings: dict[str, Any],
        files: list[bytes] = (),
        *,
        prompt: str = "",
        seed: int | None = None,
        result: str | None = None,
        parent: str | None = None,
        suffix: str = ".png",
    ) -> Entry:
        """Record one piece of work with its files (bytes, written as `ID-N.png`); returns the entry
        once it is committed whole."""
        entry = self.new_entry(task, model, family, settings, len(files), prompt, seed, result, parent, suffix)
        return self.add_many([(entry, list(files))])[0]

    def add_many(self, items: list[tuple[Entry, list[bytes]]]) -> list[Entry]:
        """Record several entries (`new_entry`) with their files as `add` records one, in one
        transaction to begin and one to end (a served batch's images: 2 commits, not 2 each)."""
        with self.recording_many([entry for entry, _ in items]):
            for entry, files in items:
                for name, data in zip(entry.files, files):
                    write_synced(self.files / name, data)
        return [entry for entry, _ in items]

    @staticmethod
    def new_entry(
        task: str,
        model: str,
        family: str,
        settings: dict[str, Any],
        n_files: int = 0,
        prompt: str = "",
        seed: int | None = None,
        result: str | None = None,
        parent: str | None = None,
        suffix: str = ".png",
    ) -> Entry:
        """An entry not yet recorded: its id, and the names of its `n_files` files."""
        now = time.time()
        entry = Entry(new_id(now), now, task, model, family, prompt, seed, settings, result, parent)
        entry.files = [f"{entry.id}-{i}{suffix}" for i in range(n_files)]
        return entry

    @contextmanager
    def recording(self, *args: Any, **fields: Any) -> Iterator[Entry]:
        """An entry (`new_entry`'s arguments), committed as `writing` on entry to the block (its id
        names its files and its layer folder, `stack_dir`), `done` when the block ends; removed
        with what it wrote when the block fails. The block may change `entry.settings` and
        `entry.result`."""
        with self.recording_many([self.new_entry(*args, **fields)]) as (entry,):
            yield entry

    @contextmanager
    def recording_many(self, entries: list[Entry]) -> Iterator[list[Entry]]:
        """`recording` for several entries at once, each transaction holding them all."""
        with self._transaction() as db:
            for entry in entries:
                if (
                    entry.parent is not None
                    and not db.execute("SELECT 1 FROM entries WHERE id=?", (entry.parent,)).fetchone()
                ):
                    entry.parent = None  # deleted meanwhile: the entry stands alone
                row = (entry.id, entry.created, entry.task, entry.model, entry.family, entry.prompt, entry.seed)
                row += (json.dumps(entry.settings), entry.result, entry.parent)
                db.execute("INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,'writing',?)", (*row, os.getpid()))
                db.executemany("INSERT INTO files (entry, name) VALUES (?,?)", [(entry.id, n) for n in entry.files])
        try:
            yield entries
        except BaseException:
            for entry in entries:
                self._forget(entry.id, entry.files)
            raise
        with self._transaction() as db:
            db.executemany(
                "UPDATE entries SET state='done', writer=NULL, settings=?, result=? WHERE id=?",
                [(json.dumps(e.settings), e.result, e.id) for e in entries],
            )

    def stack_dir(self, entry_id: str) -> Path:
        """Where the layer folder of a decompose entry lies."""
        return self.stacks / entry_id

    def delete(self, entry_id: str) -> bool:
        """Remove an entry and its files; False when there is no such entry."""
        with self._transaction() as db:
            names = [r["name"] for r in db.execute("SELECT name FROM files WHERE entry=?", (entry_id,))]
            gone = db.execute("DELETE FROM entries WHERE id=? AND state='done'", (entry_id,)).rowcount
        if gone:
            self._remove_files(entry_id, names)
        return bool(gone)

    def _forget(self, entry_id: str, names: list[str]) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM entries WHERE id=?", (entry_id,))
        self._remove_files(entry_id, names)

    def _remove_files(self, entry_id: str, names: list[str]) -> None:
        import shutil

        for name in names:
            (self.files / name).unlink(missing_ok=True)
        shutil.rmtree(self.stack_dir(entry_id), ignore_errors=True)

    def recover(self) -> int:
        """Remove what killed writers left: their `writing` rows with their files, and files no
        row names. Returns how many things it removed."""
        with self._connect() as db:
            stale = [
                r["id"]
                for r in db.execute("SELECT id, writer FROM entries WHERE state='writing'")
                if not process_alive(r["writer"])
            ]
        removed = 0
        for entry_id in stale:
            with self._connect() as db:
                names = [r["name"] for r in db.execute("SELECT name FROM files WHERE entry=?", (entry_id,))]
            self._forget(entry_id, names)
            removed += 1
        with self._connect() as db:
            known = {r["name"] for r in db.execute("SELECT name FROM files")}
        for path in self.files.iterdir():
            if path.name not in known and not _being_written(path):
                path.unlink(missing_ok=True)
                removed += 1
        for path in self.uploads.glob(".*.tmp"):
            if not _being_written(path):
                path.unlink(missing_ok=True)
        return removed + self._recover_stacks()

    def _recover_stacks(self) -> int:
        """Layer folders (and their temporary folders, `.ID.RANDOM.tmp`) of no entry, or of one
        whose writer is gone."""
        import shutil

        with self._connect() as db:
            keep = {
                r["id"]
                for r in db.execute("SELECT id, state, writer FROM entries")
                if r["state"] == "done" or process_alive(r["writer"])
            }
        removed = 0
        for path in self.stacks.iterdir():
            owner = path.name.lstrip(".").split(".")[0]
            if owner not in keep:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        return removed

    # -- reading -----------------------------------------------------------------------------------

    def get(self, entry_id: str) -> Entry | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM entries WHERE id=? AND state='done'", (entry_id,)).fetchone()
            return self._entry(db, row) if row else None

    def list(
        self,
        limit: int = 50,
        before: str | None = None,
        task: str | None = None,
        model: str | None = None,
        q: str | None = None,
    ) -> list[Entry]:
        """Newest first; `before` is the id of the last entry of the previous page (a cursor)."""
        where, args = ["state='done'"], []
        if before is not None:
            with self._connect() as db:
                clause, values = _older_than(db, before)
            where.append(clause)
            args += values
        if task:
            where.append("task=?")
            args.append(task)
        if model:
            where.append("model=?")
            args.append(model)
        if q:
            where.append("(prompt LIKE ? ESCAPE '\\' OR result LIKE ? ESCAPE '\\')")
            pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            args += [pattern, pattern]
        sql = f"SELECT * FROM entries WHERE {' AND '.join(where)} ORDER BY created DESC, id DESC LIMIT ?"
        with self._connect() as db:
            return [self._entry(db, row) for row in db.execute(sql, (*args, limit))]

    def file_path(self, name: str) -> Path | None:
        """The file `name` of a finished entry (None for anything else: no path is taken from a client)."""
        with self._connect() as db:
            row = db.execute(
                "SELECT 1 FROM files JOIN entries ON entries.id = files.entry WHERE name=? AND state='done'", (name,)
            ).fetchone()
        path = self.files / name
        return path if row and path.is_file() else None

    def integrity(self) -> str:
        with self._connect() as db:
            return db.execute("PRAGMA integrity_check").fetchone()[0]

    @staticmethod
    def _entry(db: sqlite3.Connection, row: sqlite3.Row) -> Entry:
        names = [r["name"] for r in db.execute("SELECT name FROM files WHERE entry=? ORDER BY name", (row["id"],))]
        return Entry(
            row["id"],
            row["created"],
            row["task"],
            row["model"],
            row["family"],
            row["prompt"],
            row["seed"],
            json.loads(row["settings"]),
            row["result"],
            row["parent"],
            sorted(names, key=_file_index),
        )


def migrate(db: sqlite3.Connection, where: Path) -> None:
    """Bring the database to `SCHEMA_VERSION`, one step per transaction."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise InputError(
            f"{where}: history schema version {version} is newer than this llmdit knows ({SCHEMA_VERSION}); upgrade llmdit"
        )
    for step in range(version, SCHEMA_VERSION):
        db.execute("BEGIN IMMEDIATE")
        try:
            # another process may have migrated meanwhile: read the version again under the lock
            if db.execute("PRAGMA user_version").fetchone()[0] == step:
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={step + 1}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def write_synced(path: Path, data: bytes) -> None:
    """`data` at `path`, whole or not at all, and on disk before this returns."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _being_written(path: Path) -> bool:
    """A temporary file (`.NAME.PID.RANDOM.tmp`) whose writer is alive."""
    parts = path.name.split(".")
    if not (path.name.startswith(".") and path.name.endswith(".tmp") and len(parts) >= 4):
        return False
    return parts[-3].isdigit() and process_alive(int(parts[-3]))


def _file_index(name: str) -> int:
    stem = name.rsplit(".", 1)[0]
    tail = stem.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0
