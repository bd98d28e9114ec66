"""The server's work queue: one worker thread runs the model work in arrival order.

The engine's model is shared, and a model runs one request at a time anyway (its lock), so one
worker keeps the order fair and the waiting line visible: at most `max_queue` jobs wait; one more is
refused (the server answers 503). A job whose client went away is cancelled: skipped if it has not
started, stopped at its next step if it has (the engine's hooks come off however a run ends).

Dynamic batching: work that says it may share a run (`BatchableWork`: a `batch_key`) starts with
the waiting jobs of the same key, up to `max_batch` jobs, in one call of `run_together`. A lone
job starts at once, as it would without batching. Only right after a batch of k jobs does the next
one wait for company, up to `LINGER_S`, until k - 1 mates are there: clients served together
send their next requests together, and without the wait the first of them would run alone.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


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


class GroupReport(JobReport):
    """The engine's reporter for jobs run together: progress goes to every job, and the run stops
    only when every job is cancelled (a cancelled job's images are dropped afterwards)."""

    def __init__(self, jobs: list[Job], log: Callable[[str], None]):
        super().__init__(jobs[0], log)
        self.jobs = jobs

    def status(self, message: str):
        self._check_all()
        for job in self.jobs:
            job.progress.update(stage=message)
        return nullcontext()

    @contextmanager
    def progress(self, description: str, total: int):
        self._check_all()
        for job in self.jobs:
            job.progress.update(stage=description, done=0, total=total)

        def advance(done: int, total_: int, info: str = "") -> None:
            for job in self.jobs:
                job.progress.update(done=done, total=total_)
            self._check_all()

        yield advance

    def _check_all(self) -> None:
        if all(job.cancelled.is_set() for job in self.jobs):
            raise Cancelled(self.jobs[0].label)


@runtime_checkable
class BatchableWork(Protocol):
    """Work that may share its run: jobs whose work has the same `batch_key` (None: never) run
    as one `run_together(jobs)`, which gives one ("result", value) or ("exception", error) per job."""

    batch_key: str | None

    def __call__(self, job: Job) -> Any: ...
    def run_together(self, jobs: list[Job]) -> list[tuple[str, Any]]: ...


class WorkQueue:
    KEEP_FINISHED = 64  # finished jobs whose state a client may still ask for (GET /v1/llmdit/jobs/ID)
    LINGER_S = 0.02  # after a batch of k: how long the next job waits for k - 1 mates at most

    def __init__(self, max_queue: int, log: Callable[[str], None] = lambda m: None, max_batch: int = 1):
        self.max_queue, self.max_batch = max_queue, max(1, max_batch)
        self._jobs: deque[Job | None] = deque()
        self._ready = threading.Condition()
        self._known: dict[str, Job] = {}  # by id, oldest first
        self._waiting = 0
        self._running: Job | None = None
        self._last_group = 1
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
        self._put(job)
        return job

    def _put(self, job: Job | None) -> None:
        with self._ready:
            self._jobs.append(job)
            self._ready.notify()

    def _next(self) -> Job | None:
        with self._ready:
            while not self._jobs:
                self._ready.wait()
            return self._jobs.popleft()

    def _company(self, first: Job) -> list[Job]:
        """Waiting jobs that may run with `first` (same batch key), taken out of the line; after a
        batch, up to `LINGER_S` for as many as ran in it."""
        key = getattr(first.work, "batch_key", None) if isinstance(first.work, BatchableWork) else None
        if key is None or self.max_batch < 2:
            return []
        want = min(self._last_group, self.max_batch) - 1
        deadline = time.monotonic() + self.LINGER_S
        with self._ready:
            while len(self._mates(key)) < want and (left := deadline - time.monotonic()) > 0:
                self._ready.wait(left)
            with self._lock:
                mates = self._mates(key)[: self.max_batch - 1]
                for j in mates:
                    self._jobs.remove(j)
        return mates

    def _mates(self, key: str) -> list[Job]:
        return [j for j in self._jobs if j is not None and not j.started and getattr(j.work, "batch_key", None) == key]

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
        self._put(None)

    def _start(self, job: Job) -> bool:
        """Mark a job taken from the line as running; False when it was cancelled while it waited."""
        with self._lock:
            skip = job.started  # cancelled while it waited: its place is already given back
            job.started = True
            if not skip:
                self._waiting -= 1
        if skip or not job.future.set_running_or_notify_cancel():
            job.state = "cancelled"
            self._log(f"{job.label}: cancelled before it started")
            return False
        job.state = "running"
        return True

    def _run(self) -> None:
        while (first := self._next()) is not None:
            group = [j for j in [first, *self._company(first)] if self._start(j)]
            self._last_group = max(1, len(group))
            if not group:
                continue
            self._running = group[0]
            start = time.perf_counter()
            try:
                outcomes = self._outcomes(group)
            finally:
                self._running = None
                self.served += len(group)
            seconds = time.perf_counter() - start
            together = f" (in a batch of {len(group)})" if len(group) > 1 else ""
            for job, outcome in zip(group, outcomes):
                self._finish(job, outcome)
                self._log(f"{job.label}: {job.state} in {seconds:.2f} s{together}")

    @staticmethod
    def _outcomes(group: list[Job]) -> list[tuple[str, Any]]:
        try:
            if len(group) > 1:
                return group[0].work.run_together(group)
            return [("result", group[0].work(group[0]))]
        except BaseException as exc:  # noqa: BLE001 - the requests get it; the worker goes on
            return [("exception", exc)] * len(group)

    @staticmethod
    def _finish(job: Job, outcome: tuple[str, Any]) -> None:
        state = "cancelled" if job.cancelled.is_set() else "done" if outcome[0] == "result" else "failed"
        job.state = state
        with contextlib.suppress(InvalidStateError):
            if outcome[0] == "result":
                job.future.set_result(outcome[1])
            else:
                job.future.set_exception(outcome[1])
