"""One model worker thread fed by a bounded queue; jobs report back to the event loop.

The model runs one job at a time on a dedicated thread (the engine is not re-entrant and
two CPU-bound jobs would only slow each other down). Request handlers submit jobs; a full
queue is refused at once (HTTP 429). A job is cancelled by its handler when the client
goes away: the worker checks between prefill chunks and between generated pieces.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .errors import APIError, busy, to_api_error

log = logging.getLogger("longreach.serve")


class Cancelled(Exception):
    """The job's client went away, or the server is stopping."""


@dataclass(slots=True)
class Event:
    kind: str  # start | progress | piece | result | error
    data: Any = None


class Channel:
    """Events from the worker thread to one request handler on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._events: asyncio.Queue[Event] = asyncio.Queue()

    def put(self, kind: str, data: Any = None) -> None:
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, Event(kind, data))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    async def get(self, timeout: float) -> Event | None:
        """The next event, or None after `timeout` seconds without one."""
        try:
            return await asyncio.wait_for(self._events.get(), timeout)
        except TimeoutError:
            return None


class Job:
    """A unit of model work: `fn(job)` runs on the worker thread; its return value is the result."""

    def __init__(self, name: str, fn: Callable[[Job], Any], channel: Channel):
        self.name, self.fn, self.channel = name, fn, channel
        self._cancelled = threading.Event()
        self.done = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()

    def check(self) -> None:
        """Raise Cancelled if the job was cancelled."""
        if self._cancelled.is_set():
            raise Cancelled(self.name)

    def progress(self, done: int, total: int) -> None:
        """Prefill progress callback: reports and stops the prefill of a cancelled job."""
        self.check()
        self.channel.put("progress", (done, total))

    def emit(self, kind: str, data: Any = None) -> None:
        self.channel.put(kind, data)


@dataclass(slots=True)
class WorkerStats:
    """Work done since start (read by /health; tests use it to prove a context was not recomputed)."""

    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    rejected_busy: int = 0
    prefilled_tokens: int = 0    # tokens that went through the model as prompt
    cached_tokens: int = 0       # prompt tokens reused from stored contexts
    generated_tokens: int = 0
    contexts_added: int = 0


class ModelWorker:
    """The single thread that runs model jobs, behind a queue of at most `queue_size` waiting jobs."""

    def __init__(self, queue_size: int):
        self.queue_size = queue_size
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._loop, name="longreach-model", daemon=True)
        self._lock = threading.Lock()
        self._stats = WorkerStats()
        self._stopping = False
        self.current: Job | None = None

    def start(self) -> None:
        self._thread.start()

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self._stats, name, getattr(self._stats, name) + delta)

    def stats(self) -> dict:
        with self._lock:
            return asdict(self._stats)

    def submit(self, job: Job) -> None:
        """Queue a job, or raise APIError 429 when the queue is full (503 when stopping)."""
        if self._stopping:
            raise APIError(503, "the server is shutting down", "shutting_down")
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.count(rejected_busy=1)
            raise busy(self.queue_size) from None

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self.current = job
            try:
                self._run(job)
            finally:
                self.current = None
                job.done.set()

    def _run(self, job: Job) -> None:
        try:
            job.check()
            job.emit("start")
            result = job.fn(job)
        except (Cancelled, InterruptedError):
            self.count(cancelled=1)
            job.emit("error", APIError(499, "the request was cancelled", "cancelled"))
        except Exception as exc:  # noqa: BLE001 - every failure is reported to its client, never fatal
            error = to_api_error(exc)
            if error.status >= 500:
                log.exception("job %s failed", job.name)
            self.count(failed=1)
            job.emit("error", error)
        else:
            self.count(completed=1)
            job.emit("result", result)

    def stop(self, grace_seconds: float) -> None:
        """Refuse new jobs, cancel waiting ones, give the running one `grace_seconds`, then cancel it."""
        self._stopping = True
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.cancel()
                job.emit("error", APIError(503, "the server is shutting down", "shutting_down"))
        current = self.current
        if current is not None and not current.done.wait(grace_seconds):
            current.cancel()
        self._queue.put(None)
        self._thread.join(timeout=max(grace_seconds, 1.0) + 30)
