"""The messages a storage actor handles, and the write rules every backend shares.

Values travel as already-encoded bytes: the typed facade encodes and
validates in the caller's task, so the actor only moves bytes and versions.

Versions come from one counter per database file, bumped for every key
written. A key's version is the counter value of its last write, so a
version is never reused, not even after a delete: an ``if_version`` check
cannot be fooled by a key that was deleted and created again.

Reads come in two kinds. A point read (:class:`Get`) is bounded: it touches
one key. A bulk read (:class:`GetMany`, :class:`Scan`, :class:`Count`)
costs more as the data grows, so a backend answers it as
:data:`ReadSteps`, a generator of bounded steps, which the storage actor
runs off the event loop (see ``_storage_actor``).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Protocol

import attrs

from ._errors import KeyMissing, StorageError, VersionConflict

__all__ = [
    "READ_CHUNK",
    "Backend",
    "BulkRead",
    "Count",
    "Delete",
    "DeleteMany",
    "Get",
    "GetMany",
    "Purge",
    "Put",
    "PutMany",
    "ReadOp",
    "ReadSteps",
    "Row",
    "Scan",
    "Transaction",
    "WriteOp",
    "apply_writes",
]

Row = tuple[bytes, int]
"""A live record: encoded value and version."""


@attrs.frozen
class Get:
    key: str


@attrs.frozen
class GetMany:
    keys: tuple[str, ...]


@attrs.frozen
class Scan:
    """Up to ``limit`` live rows with keys starting with ``prefix``, after ``after``."""

    prefix: str
    after: str | None
    limit: int
    values: bool


@attrs.frozen
class Count:
    pass


@attrs.frozen
class Put:
    """Write one key. ``if_version``: 0 means "must not exist"; ``must_exist`` is ``update``."""

    key: str
    value: bytes
    expires_at: float | None = None
    if_version: int | None = None
    must_exist: bool = False


@attrs.frozen
class PutMany:
    items: tuple[tuple[str, bytes], ...]
    expires_at: float | None = None


@attrs.frozen
class Delete:
    key: str


@attrs.frozen
class DeleteMany:
    keys: tuple[str, ...]


@attrs.frozen
class Purge:
    """Remove up to ``limit`` expired rows."""

    limit: int = 10_000


BulkRead = GetMany | Scan | Count
ReadOp = Get | BulkRead
WriteOp = Put | PutMany | Delete | DeleteMany | Purge

READ_CHUNK = 500
"""Keys or rows one step of a bulk read handles, at most (see :data:`ReadSteps`)."""

ReadSteps = Generator[None, None, object]
"""A bulk read cut into bounded steps; its answer is the generator's return value.

Each ``next()`` does the Python work of at most :data:`READ_CHUNK` keys or
rows (one SQL statement that SQLite runs in C, without the GIL, may cover
more). Nothing is done before the first ``next()``. The storage actor runs
the steps one after another, each as its own job on the worker thread (or
inline with a checkpoint between steps for the memory backend), and lets no
write in before the last one: the answer is one consistent snapshot.
"""


class Transaction(Protocol):
    """What :func:`apply_writes` needs from a backend inside one transaction."""

    def live_version(self, key: str, now: float) -> int:
        """The version of ``key`` if it exists and has not expired, else 0."""
        ...

    def put(self, key: str, value: bytes, version: int, expires_at: float | None) -> None: ...

    def remove(self, key: str) -> None: ...

    def purge(self, now: float, limit: int) -> int: ...


class Backend(Protocol):
    """One open database, used by its storage actor only, from one thread at a time."""

    namespace: str

    def get(self, op: Get, now: float) -> Row | None:
        """Answer a point read against committed state; cheap enough for the event loop."""
        ...

    def read_steps(self, op: BulkRead, now: float) -> ReadSteps:
        """Answer a bulk read against committed state, in bounded steps."""
        ...

    def write(self, ops: Sequence[WriteOp], now: float) -> list[object]:
        """Apply ``ops`` in one transaction and commit.

        Returns one result per op: its value, or the :class:`StorageError`
        that op alone failed with (it changed nothing). If the commit fails
        the backend rolls back, restores its cached state and raises.
        """
        ...

    def close(self) -> None: ...


def apply_writes(
    txn: Transaction, namespace: str, ops: Sequence[WriteOp], seq: int, now: float
) -> tuple[list[object], int]:
    """Run ``ops`` in order inside ``txn``; return per-op results and the new counter.

    An op whose precondition fails (``update`` of a missing key, a stale
    ``if_version``) gets its error as its result and writes nothing; the
    others in the same transaction are unaffected.
    """
    results: list[object] = []
    for op in ops:
        if isinstance(op, Put):
            if op.if_version is not None or op.must_exist:
                current = txn.live_version(op.key, now)
                if op.must_exist and current == 0:
                    results.append(KeyMissing(namespace, op.key))
                    continue
                if op.if_version is not None and current != op.if_version:
                    results.append(VersionConflict(namespace, op.key, op.if_version, current))
                    continue
            seq += 1
            txn.put(op.key, op.value, seq, op.expires_at)
            results.append(seq)
        elif isinstance(op, PutMany):
            versions = []
            for key, value in op.items:
                seq += 1
                txn.put(key, value, seq, op.expires_at)
                versions.append(seq)
            results.append(versions)
        elif isinstance(op, Delete):
            existed = txn.live_version(op.key, now) != 0
            txn.remove(op.key)
            results.append(existed)
        elif isinstance(op, DeleteMany):
            removed = 0
            for key in op.keys:
                removed += txn.live_version(key, now) != 0
                txn.remove(key)
            results.append(removed)
        elif isinstance(op, Purge):
            results.append(txn.purge(now, op.limit))
        else:  # pragma: no cover - the actor routes only write ops here
            results.append(StorageError(f"not a write operation: {op!r}"))
    return results, seq


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``.

    ``None`` means there is none (the prefix is empty or all U+10FFFF).
    Surrogates are skipped because they cannot be stored as UTF-8.
    """
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if 0xD800 <= code <= 0xDFFF:
            code = 0xE000
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None
