"""A thread of its own for each database connection.

``trio.to_thread.run_sync`` is general (a thread pool, a capacity limiter,
contextvars, cancellation support) and costs a few tens of microseconds
more per hop than handing a job to a thread that already waits for it. A
storage actor hops once per batch of writes; with one sequential writer
that is once per write, where the hop is as costly as the commit itself.
So each open database gets one worker thread for its writes and for the
steps of its bulk reads. Point reads run inline on the event loop, but
never while a job runs: the storage actor awaits each job before it does
anything else, so the connection is used from one thread at a time.

The wait for a job cannot be cancelled (like ``to_thread.run_sync`` by
default): a transaction that started runs to its end and its result is
delivered, so a cancelled caller never leaves a commit half-reported.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

__all__ = ["Worker"]

T = TypeVar("T")

_Job = tuple[Callable[[], Any], trio.lowlevel.Task]


class Worker:
    """One daemon thread running jobs in order; start and use it from Trio."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
        self._thread.start()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the worker thread and return (or raise) its outcome."""
        if self._thread is None:
            raise RuntimeError(f"worker {self._name} is not running")
        task = trio.lowlevel.current_task()
        self._jobs.put((lambda: fn(*args), task))
        result: T = await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        return result

    def stop(self) -> None:
        """Let the thread finish once the jobs already queued are done."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None

    def _serve(self) -> None:
        token = self._token
        assert token is not None
        while (job := self._jobs.get()) is not None:
            fn, task = job
            result = outcome.capture(fn)
            try:
                token.run_sync_soon(trio.lowlevel.reschedule, task, result)
            except trio.RunFinishedError:  # pragma: no cover - the run is gone
                return
