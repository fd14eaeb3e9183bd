"""The storage actor: the one owner of a database file's connection.

Every key-value call is a message to it. The runtime hands it up to
``max_batch`` queued messages at once, and it handles them in two steps:

1. reads, from committed state. A point read (``get``) touches one key and
   costs a few microseconds when cached, far less than a hop to a worker
   thread, so it is answered inline on the event loop (with a checkpoint
   every :data:`INLINE_READS_PER_CHECKPOINT` of them, so a full batch does
   not hold the loop either). Every other read (``count``, ``get_many``, a
   page of ``scan``/``keys``) costs more as the data grows: it runs in
   bounded steps (see :data:`ReadSteps`), run on the database's worker
   thread a few milliseconds' worth per job (see :data:`JOB_SECONDS`), so
   the event loop keeps running (and the GIL is free) between two jobs.
   The memory backend never blocks and has no worker: its steps run
   inline with a checkpoint between two of them;
2. writes, all of them in one transaction run on the database's worker
   thread (a commit with ``synchronous=FULL`` waits for the disk and must
   not stall the event loop; see ``_worker``). With durability ``normal``
   a small commit does not wait for the disk and runs inline (see
   :data:`INLINE_COMMIT_WRITES`). Each writer is answered only
   after the commit. If it fails, every writer of the batch gets
   :class:`StorageWriteFailed` (:class:`StorageFull` when the file reached
   its size limit or the disk is full), the backend rolled back and no
   cached state (the version counter) changed.

Answering the reads of a batch before its writes is linearizable: the
messages of one batch were all in flight at the same time, and a caller of
``ask`` has one message in flight at most. Every write acknowledged before
a read was sent is committed, so reads see their own writes. The actor
takes no write while a read is between two steps (nor any message: it
handles one batch at a time), so a bulk read sees one snapshot, and the
connection is used by one thread at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import trio

from .._core._actor import Actor, Delivery
from .._core._metrics import NO_METRICS, Metrics
from ._errors import StorageError, StorageFull, StorageWriteFailed
from ._ops import (
    Backend,
    Backup,
    BulkRead,
    Count,
    Delete,
    DeleteMany,
    Get,
    GetMany,
    Purge,
    Put,
    PutMany,
    ReadSteps,
    Rewrite,
    Scan,
)
from ._worker import Worker

__all__ = ["INLINE_READS_PER_CHECKPOINT", "StorageActor"]

_WRITES = (Put, PutMany, Delete, DeleteMany, Purge, Rewrite)
_BULK_READS = (GetMany, Scan, Count)
_SINGLE_KEY_WRITES = frozenset((Put, Delete))

INLINE_READS_PER_CHECKPOINT = 64
"""Point reads answered inline between two checkpoints (a few ms on cold encrypted pages)."""


INLINE_COMMIT_WRITES = 64
"""The most single-key writes a commit may hold to run on the event loop.

With durability ``normal`` a commit writes the ``-wal`` without an fsync:
tens of microseconds per write, less than the hop to the worker thread and
back (about 80 us measured). Such a commit of up to this many ``set`` or
``delete`` runs inline; larger ones, ``full`` durability and checkpoints
(which fsync) stay on the worker.
"""

JOB_SECONDS = 0.02
"""How long one job on the worker thread runs steps of a bulk read before it hands back.

Each hop to the worker and back costs two thread wake-ups (tens of
microseconds, far more on a loaded machine), and a step takes about a
millisecond, so a job runs steps for this long: a page of a scan (4096
rows at most) is one job. The event loop is not held meanwhile: SQLite runs
without the GIL and Python hands the GIL over every 5 ms. The actor takes
no other message until the read ends anyway; this only bounds how long a
cancelled read runs on.
"""

COMMIT_BYTES = 8 << 20
"""The most bytes of keys and values one transaction of a batch holds (about).

A batch holds every write queued (up to ``max_batch``), committed together
to pay one fsync; past this many bytes it is cut into several
transactions, each answered after its own commit, so a batch of large
values does not make one huge transaction (and ``-wal``).
"""


def _size(op: object) -> int:
    """About how many bytes ``op`` adds to a transaction."""
    if isinstance(op, Put):
        return len(op.key) + len(op.value)
    if isinstance(op, PutMany):
        return sum(len(key) + len(value) for key, value in op.items)
    if isinstance(op, Rewrite):
        return sum(len(key) + len(value) for key, _version, value in op.items)
    return 64


def _step(steps: ReadSteps) -> tuple[bool, object]:
    """Run one step of a bulk read: ``(True, answer)`` after the last one."""
    try:
        next(steps)
    except StopIteration as done:
        return True, done.value
    return False, None


def _steps(steps: ReadSteps) -> tuple[bool, object]:
    """Run steps of a bulk read for about :data:`JOB_SECONDS`; as :func:`_step` answers."""
    until = time.perf_counter() + JOB_SECONDS
    while True:
        done, answer = _step(steps)
        if done or time.perf_counter() >= until:
            return done, answer


class StorageActor(Actor):
    """Owns one :class:`Backend`; see the module docstring for the rules."""

    max_batch = 1024  # the default mailbox: everything queued, cut by COMMIT_BYTES

    def __init__(
        self,
        namespace: str,
        open_backend: Callable[[], Backend],
        clock: Callable[[], float],
        *,
        blocking: bool,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self.namespace = namespace
        self._metrics = metrics
        self._open_backend = open_backend
        self._clock = clock
        # File backends block on the disk when they commit: run writes in a
        # worker thread. The memory backend never blocks.
        self._blocking = blocking
        self._backend: Backend | None = None
        self._worker: Worker | None = None

    async def on_start(self) -> None:
        if self._backend is not None:
            return  # a restart after a crash: the open database is still good
        if not self._blocking:
            self._backend = self._open_backend()
            return
        worker = Worker(f"fame-storage-{self.namespace}")
        worker.start()
        try:
            self._backend = await worker.run(self._open_backend)
        except BaseException:
            worker.stop()
            raise
        self._worker = worker

    async def on_stop(self) -> None:
        backend, self._backend = self._backend, None
        worker, self._worker = self._worker, None
        try:
            if backend is not None:
                if worker is not None:
                    await worker.run(backend.close)
                else:
                    backend.close()
        finally:
            if worker is not None:
                worker.stop()

    async def handle_batch(self, deliveries: list[Delivery]) -> None:
        backend = self._backend
        if backend is None:  # pragma: no cover - on_start always opens it
            raise StorageError(f"storage actor of {self.namespace!r} has no open database")
        if len(deliveries) == 1 and type(deliveries[0].message) is Get:
            # The common case of a lone point read, without the sorting below.
            delivery = deliveries[0]
            if delivery.wants_reply:
                try:
                    delivery.reply(backend.get(delivery.message, self._clock()))
                except StorageError as exc:
                    delivery.fail(exc)
            return
        writes: list[Delivery] = []
        now = self._clock()
        inline = 0
        for delivery in deliveries:
            message = delivery.message
            if isinstance(message, _WRITES):
                writes.append(delivery)
                continue
            if isinstance(message, Get):
                inline += 1
                if inline % INLINE_READS_PER_CHECKPOINT == 0:
                    await trio.lowlevel.checkpoint()
            if not delivery.wants_reply:
                continue  # a tell, or the caller gave up: nothing to read for
            try:
                if isinstance(message, Get):
                    delivery.reply(backend.get(message, now))
                elif isinstance(message, Backup):
                    delivery.reply(await self._backup(backend, message))
                elif isinstance(message, _BULK_READS):
                    delivery.reply(await self._read_in_steps(backend, message, now, delivery))
                else:
                    raise StorageError(f"not a storage operation: {message!r}")
            except StorageError as exc:
                delivery.fail(exc)
        start, size = 0, 0
        for n, delivery in enumerate(writes):
            size += _size(delivery.message)
            if size > COMMIT_BYTES and n > start:
                await self._commit(backend, writes[start:n])
                start, size = n, _size(delivery.message)
        if start < len(writes):
            await self._commit(backend, writes[start:])

    @staticmethod
    def _inline(backend: Backend, ops: list[object]) -> bool:
        """Whether this commit may run on the event loop (see :data:`INLINE_COMMIT_WRITES`)."""
        if getattr(backend, "commit_waits_for_disk", True) or len(ops) > INLINE_COMMIT_WRITES:
            return False
        return all(type(op) in _SINGLE_KEY_WRITES for op in ops)

    async def _backup(self, backend: Backend, op: Backup) -> object:
        """Copy the file whole, in one job on the worker thread.

        One job, not steps: SQLite's online backup restarts when another
        connection writes the source between two steps, and this actor's
        writes would wait between them anyway. The copy runs at disk speed
        (tens of MB/s at least, see ``docs/storage.md``), so a namespace's
        other requests wait for that long; other namespaces do not wait.
        """
        copy = getattr(backend, "backup", None)
        if copy is None or self._worker is None:
            raise StorageError(f"namespace {self.namespace!r} keeps no file to back up")
        return await self._worker.run(copy, Path(op.directory))

    async def _read_in_steps(
        self, backend: Backend, op: BulkRead, now: float, delivery: Delivery
    ) -> object:
        """Run a bulk read step by step, never more than one step at a time on the loop."""
        steps = backend.read_steps(op, now)
        worker = self._worker
        try:
            while True:
                if worker is not None:
                    done, answer = await worker.run(_steps, steps)
                    if done:
                        return answer
                    # The hop let the loop run; a step cannot be abandoned
                    # half-way, but between two steps the actor may be cancelled.
                    await trio.lowlevel.checkpoint_if_cancelled()
                else:
                    done, answer = _step(steps)
                    if done:
                        return answer
                    await trio.lowlevel.checkpoint()
                if not delivery.wants_reply:
                    return None  # the caller gave up: the answer would be dropped anyway
        finally:
            # No step runs now (a worker job always runs to its end), so
            # closing the generator on this thread cannot race the worker.
            steps.close()

    async def _commit(self, backend: Backend, writes: list[Delivery]) -> None:
        ops = [delivery.message for delivery in writes]
        now = self._clock()
        metrics = self._metrics
        started = time.perf_counter() if metrics.enabled else 0.0
        try:
            worker = self._worker
            if worker is None:
                results = backend.write(ops, now)
            elif self._inline(backend, ops):
                try:
                    results = backend.write(ops, now, checkpoint=False)  # type: ignore[call-arg]
                except StorageFull:
                    # Rolled back: try again on the worker, after a checkpoint.
                    results = await worker.run(backend.write, ops, now)
                if backend.checkpoint_due():  # type: ignore[attr-defined]
                    await worker.run(backend.checkpoint)  # type: ignore[attr-defined]
            else:
                results = await worker.run(backend.write, ops, now)
        except Exception as exc:
            if metrics.enabled:
                metrics.commit(self.namespace, len(ops), time.perf_counter() - started, False)
            detail = f"{type(exc).__name__}: {exc}"
            for delivery in writes:
                # One error object per caller: each raise gets its own traceback.
                error: StorageWriteFailed
                if isinstance(exc, StorageFull):
                    error = StorageFull(exc.namespace, exc.path, exc.writes, exc.limit)
                else:
                    error = StorageWriteFailed(
                        f"commit to namespace {self.namespace!r} failed; none of the {len(ops)}"
                        f" writes in the transaction took effect: {detail}"
                    )
                error.__cause__ = exc
                delivery.fail(error)
            return
        if metrics.enabled:
            metrics.commit(self.namespace, len(ops), time.perf_counter() - started, True)
        for delivery, result in zip(writes, results, strict=True):
            if isinstance(result, StorageError):
                delivery.fail(result)
            else:
                delivery.reply(result)
