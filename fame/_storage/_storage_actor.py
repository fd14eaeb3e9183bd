"""The storage actor: the one owner of a database file's connection.

Every key-value call is a message to it. The runtime hands it up to
``max_batch`` queued messages at once, and it handles them in two steps:

1. reads, answered at once on the event loop from committed state. A cached
   point read costs a few microseconds, far less than a hop to a worker
   thread, so reads stay inline (``bench/bench_storage.py`` measures
   both);
2. writes, all of them in one transaction run on the database's worker
   thread (a commit with ``synchronous=FULL`` waits for the disk and must
   not stall the event loop; see ``_worker``). Each writer is answered only
   after the commit. If it fails, every writer of the batch gets
   :class:`StorageWriteFailed` (:class:`StorageFull` when the file reached
   its size limit or the disk is full), the backend rolled back and no
   cached state (the version counter) changed.

Answering the reads of a batch before its writes is linearizable: the
messages of one batch were all in flight at the same time, and a caller of
``ask`` has one message in flight at most. Every write acknowledged before
a read was sent is committed, so reads see their own writes.
"""

from __future__ import annotations

from collections.abc import Callable

from .._core._actor import Actor, Delivery
from ._errors import StorageError, StorageFull, StorageWriteFailed
from ._ops import Backend, Delete, DeleteMany, Purge, Put, PutMany
from ._worker import Worker

__all__ = ["StorageActor"]

_WRITES = (Put, PutMany, Delete, DeleteMany, Purge)


class StorageActor(Actor):
    """Owns one :class:`Backend`; see the module docstring for the rules."""

    max_batch = 512

    def __init__(
        self,
        namespace: str,
        open_backend: Callable[[], Backend],
        clock: Callable[[], float],
        *,
        blocking: bool,
    ) -> None:
        self.namespace = namespace
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
        writes: list[Delivery] = []
        now = self._clock()
        for delivery in deliveries:
            if isinstance(delivery.message, _WRITES):
                writes.append(delivery)
            elif delivery.wants_reply:
                try:
                    delivery.reply(backend.read(delivery.message, now))
                except StorageError as exc:
                    delivery.fail(exc)
        if writes:
            await self._commit(backend, writes)

    async def _commit(self, backend: Backend, writes: list[Delivery]) -> None:
        ops = [delivery.message for delivery in writes]
        now = self._clock()
        try:
            if self._worker is not None:
                results = await self._worker.run(backend.write, ops, now)
            else:
                results = backend.write(ops, now)
        except Exception as exc:
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
        for delivery, result in zip(writes, results, strict=True):
            if isinstance(result, StorageError):
                delivery.fail(result)
            else:
                delivery.reply(result)
