"""The storage actor of a ``postgres`` namespace: point reads leave the event loop.

The built-in actor answers a ``get`` inline on the event loop, which costs
microseconds on a local file. On PostgreSQL every read is a round trip to
the server, so this actor sends the batch's point reads to its worker
thread, all of them in one statement, and hands the rest of the batch to
:class:`StorageActor` unchanged. The reads are still answered before the
batch's writes, from committed state, so the ordering argument of
``_storage_actor`` holds as it is.
"""

from __future__ import annotations

from .._core._actor import Delivery
from ._errors import StorageError
from ._ops import Get
from ._postgres_backend import PostgresBackend
from ._storage_actor import StorageActor

__all__ = ["PostgresStorageActor"]


class PostgresStorageActor(StorageActor):
    """A :class:`StorageActor` whose point reads run on its worker thread, together."""

    async def handle_batch(self, deliveries: list[Delivery]) -> None:
        gets = [d for d in deliveries if type(d.message) is Get and d.wants_reply]
        if gets:
            await self._get_all(gets)
        rest = [d for d in deliveries if type(d.message) is not Get]
        if rest:
            await super().handle_batch(rest)

    async def _get_all(self, gets: list[Delivery]) -> None:
        backend, worker = self._backend, self._worker
        if not isinstance(backend, PostgresBackend) or worker is None:  # pragma: no cover
            raise StorageError(f"storage actor of {self.namespace!r} has no open database")
        keys = [d.message.key for d in gets]
        try:
            rows = await worker.run(backend.get_rows, keys, self._clock())
        except StorageError as exc:
            for delivery in gets:
                error = StorageError(str(exc))  # one object per caller: its own traceback
                error.__cause__ = exc
                delivery.fail(error)
            return
        for delivery, key in zip(gets, keys, strict=True):
            row = rows[key]
            if isinstance(row, StorageError):
                delivery.fail(row)
            else:
                delivery.reply(row)
