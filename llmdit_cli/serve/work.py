"""The server's work queue: one worker thread runs the model work in arrival order.

The engine's model is shared, and a model runs one request at a time anyway (its lock), so one
worker keeps the order fair and the waiting line visible: at most `max_queue` jobs wait; one more is
refused (the server answers 503). A job whose client went away is cancelled: skipped if it has not
started, stopped at its next step if it has (the engine's hooks come off however a run ends).
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    pass


class Cancelled(Exception):
    """The client went away; the job stopped."""


@dataclass
class Job:
    label: str
    work: Callable[[Job], Any]
    task: str = "work"
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    future: Future = field(default_factory=Future)
    cancelled: threading.Event = field(default_factory=threading.Event)
    progress: dict[str, Any] = field(default_factory=dict)
    state: str = "queued"  # queued, running, done, failed, cancelled
    created: float = field(default_factory=time.time)

    started: bool = False
    on_cancel: Callable[[], None] | None = field(default=None, repr=False)

    def cancel(self) -> None:
        if not self.cancelled.is_set():
            self.cancelled.set()
            if self.on_cancel:
                self.on_cancel()

    def check(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled(self.label)


class JobReport:
    """The engine's reporter for one job: progress into `job.progress` (the status endpoint shows
    it), and a cancelled job stops at its next step."""

    def __init__(self, job: Job, log: Callable[[str], None]):
        self.job, self._log = job, log

    def hint(self, message: str) -> None:
        self._log(f"hint: {message}")

    def log(self, message: str) -> None:
        self._log(message)

    def status(self, message: str):
        self.job.check()
        self.job.progress.update(stage=message)
        return nullcontext()

    @contextmanager
    def progress(self, description: str, total: int):
        self.job.check()
        self.job.progress.update(stage=description, done=0, total=total)

        def advance(done: int, total_: int, info: str = "") -> None:
            self.job.progress.update(done=done, total=total_)
            self.job.check()

        yield advance


class WorkQueue:
    KEEP_FINISHED = 64  # finished jobs whose state a client may still ask for (GET /v1/llmdit/jobs/ID)

    def __init__(self, max_queue: int, log: Callable[[str], None] = lambda m: None):
        self.max_queue = max_queue
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._known: dict[str, Job] = {}  # by id, oldest first
        self._waiting = 0
        self._running: Job | None = None
        self._lock = threading.Lock()
        self._log = log
        self.served = 0
        self._thread = threading.Thread(target=self._run, name="llmdit-worker", daemon=True)
        self._thread.start()

    def submit(self, label: str, work: Callable[[Job], Any], task: str = "work") -> Job:
        with self._lock:
            if self._waiting >= self.max_queue:
                raise QueueFull(f"{self._waiting} requests are waiting (--max-queue {self.max_queue})")
            self._waiting += 1
            job = Job(label, work, task)
            self._known[job.id] = job
            self._forget_old()
        job.on_cancel = lambda: self._release(job)
        self._jobs.put(job)
        return job

    def job(self, job_id: str) -> Job | None:
        return self._known.get(job_id)

    def _forget_old(self) -> None:
        finished = [j for j in self._known.values() if j.state not in ("queued", "running")]
        for j in finished[: max(0, len(finished) - self.KEEP_FINISHED)]:
            del self._known[j.id]

    def _release(self, job: Job) -> None:
        """A waiting job whose client went away gives its place back at once."""
        with self._lock:
            if not job.started:
                job.started = True  # the worker skips it
                job.state = "cancelled"
                self._waiting -= 1

    def status(self) -> dict[str, Any]:
        running = self._running
        return {
            "waiting": self._waiting,
            "max_queue": self.max_queue,
            "running": {"label": running.label, **running.progress} if running else None,
            "served": self.served,
        }

    def close(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            with self._lock:
                skip = job.started  # cancelled while it waited: its place is already given back
                job.started = True
                if not skip:
                    self._waiting -= 1
            if skip or not job.future.set_running_or_notify_cancel():
                job.state = "cancelled"
                self._log(f"{job.label}: cancelled before it started")
                continue
            self._running = job
            job.state = "running"
            start = time.perf_counter()
            try:
                outcome: tuple[str, Any] = ("result", job.work(job))
            except BaseException as exc:  # noqa: BLE001 - the request gets it; the worker goes on
                outcome = ("exception", exc)
            finally:
                self._running = None
                self.served += 1
            state = "cancelled" if job.cancelled.is_set() else "done" if outcome[0] == "result" else "failed"
            job.state = state
            with contextlib.suppress(InvalidStateError):
                if outcome[0] == "result":
                    job.future.set_result(outcome[1])
                else:
                    job.future.set_exception(outcome[1])
            self._log(f"{job.label}: {state} in {time.perf_counter() - start:.2f} s")
