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

A write op with a ``request_id`` is deduplicated (see ``_dedupe``): if the
namespace recorded that id within its window, the op is not applied and its
result is the recorded answer; else it is applied and its answer recorded
in the same transaction. Either way its result is its ``*Answer`` struct.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any, Protocol

import attrs

from .._core._errors import quoted
from ._dedupe import (
    PRUNE_STEP,
    Answer,
    DedupeLimits,
    DeleteAnswer,
    DeleteManyAnswer,
    PutAnswer,
    PutManyAnswer,
    decode_answer,
    encode_answer,
)
from ._errors import KeyMissing, StorageError, VersionConflict

__all__ = [
    "READ_CHUNK",
    "Backend",
    "Backup",
    "BulkRead",
    "Count",
    "DeduplicatedOp",
    "Delete",
    "DeleteMany",
    "Get",
    "GetMany",
    "Purge",
    "Put",
    "PutMany",
    "ReadOp",
    "ReadSteps",
    "Rewrite",
    "Row",
    "Scan",
    "ScanPage",
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
    """Up to ``limit`` live rows with keys starting with ``prefix``, after ``after``.

    ``upto``: no key greater than it (the store re-reads the rows a scan
    got before it met a damaged page, see ``KeyValueStore.scan``).

    ``decode`` (with ``values``): the answer is a :class:`ScanPage` whose
    values are decoded with it where the rows are read, on the database's
    worker thread, so the caller's event loop only hands them out (and no
    row tuple outlives its row, which spares the garbage collector a page
    of young objects). Without it the answer is the rows,
    ``(key, value, version)`` (``(key,)`` without ``values``).
    """

    prefix: str
    after: str | None
    limit: int
    values: bool
    upto: str | None = None
    decode: Callable[[bytes], Any] | None = attrs.field(default=None, eq=False)


class ScanPage:
    """The answer to a :class:`Scan` with ``decode``: keys in order and their values.

    The first ``decoded`` values are decoded; the rest (from the first that
    did not decode on) are the stored bytes, for the store to decode one by
    one so that the error names its key after the rows before it were
    delivered.
    """

    __slots__ = ("decoded", "keys", "values")

    def __init__(self, keys: list[str], values: list[Any], decoded: int) -> None:
        self.keys = keys
        self.values = values
        self.decoded = decoded

    def __len__(self) -> int:
        return len(self.keys)


def decode_into(decode: Callable[[bytes], Any], datas: Sequence[bytes], values: list[Any]) -> bool:
    """Append the decoded ``datas`` to ``values``; False if one failed (the ones
    before it are appended, it and the rest are not).

    Any exception counts as a failure: the store decodes that value again
    and raises what it raises there, in the caller's task.
    """
    try:
        values += [decode(data) for data in datas]
    except Exception:
        for data in datas:
            try:
                values.append(decode(data))
            except Exception:
                return False
    return True


def scan_page(rows: Sequence[tuple[Any, ...]], decode: Callable[[bytes], Any]) -> ScanPage:
    """The :class:`ScanPage` of ``(key, value, version)`` rows (for backends that hold rows)."""
    datas = [row[1] for row in rows]
    values: list[Any] = []
    decode_into(decode, datas, values)
    decoded = len(values)
    values += datas[decoded:]
    return ScanPage([row[0] for row in rows], values, decoded)


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
    request_id: str | None = None


@attrs.frozen
class PutMany:
    items: tuple[tuple[str, bytes], ...]
    expires_at: float | None = None
    request_id: str | None = None


@attrs.frozen
class Delete:
    key: str
    request_id: str | None = None


@attrs.frozen
class DeleteMany:
    keys: tuple[str, ...]
    request_id: str | None = None


@attrs.frozen
class Backup:
    """Copy the database file, as committed now, into ``directory`` (see ``_backup``).

    The copy is encrypted with the source file's own key (the one its backend
    holds), so it opens with the same master key.
    """

    directory: str


@attrs.frozen
class Purge:
    """Remove up to ``limit`` expired rows."""

    limit: int = 10_000


@attrs.frozen
class Rewrite:
    """Give records new values, each only if it still has the version given, keeping
    its expiry; the answer is how many were rewritten (``fame migrate``).

    ``items`` are ``(key, version read, new value)``; a record changed, deleted
    or expired since it was read is left as it is.
    """

    items: tuple[tuple[str, int, bytes], ...]


BulkRead = GetMany | Scan | Count
ReadOp = Get | BulkRead
WriteOp = Put | PutMany | Delete | DeleteMany | Purge | Rewrite

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

    def put_many(self, rows: Sequence[tuple[str, bytes, int, float | None]]) -> None:
        """:meth:`put` each ``(key, value, version, expires_at)``, in order."""
        ...

    def remove(self, key: str) -> None: ...

    def replace(self, key: str, value: bytes, version: int) -> None:
        """Give the live ``key`` a new value and version; its expiry stays."""
        ...

    def purge(self, now: float, limit: int) -> int: ...

    def find_requests(self, request_ids: Sequence[str]) -> dict[str, tuple[float, bytes]]:
        """The records among ``request_ids``: when each was made and its encoded
        answer, expired ones included."""
        ...

    def record_requests(self, records: Sequence[tuple[str, float, bytes]], replaced: int) -> None:
        """Add ``(request id, at, answer)`` records, distinct ids; ``replaced`` of
        them overwrite an expired record of the same id."""
        ...

    def prune_requests(self, expired_at: float, keep: int, limit: int) -> int:
        """Forget at most ``limit`` records: those made at or before ``expired_at``,
        then the oldest beyond the newest ``keep``; return how many were forgotten."""
        ...


DeduplicatedOp = Put | PutMany | Delete | DeleteMany

_ANSWERS: dict[type, type] = {
    Put: PutAnswer,
    PutMany: PutManyAnswer,
    Delete: DeleteAnswer,
    DeleteMany: DeleteManyAnswer,
}


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
    txn: Transaction,
    namespace: str,
    ops: Sequence[WriteOp],
    seq: int,
    now: float,
    limits: DedupeLimits = DedupeLimits(),  # noqa: B008 - frozen, so sharing it is safe
) -> tuple[list[object], int]:
    """Run ``ops`` in order inside ``txn``; return per-op results and the new counter.

    An op whose precondition fails (``update`` of a missing key, a stale
    ``if_version``) gets its error as its result and writes nothing; the
    others in the same transaction are unaffected. Such a failure records
    nothing either: a retry of it is judged afresh. An op with a request id
    recorded within ``limits.window`` is a replay (see the module docstring);
    a second op with the same id in ``ops`` replays the first. Transactions
    that record an answer (and purges) also forget old records, a bounded
    number of them (see :data:`PRUNE_STEP`).
    """
    results: list[object] = []
    since = now - limits.window
    request_ids = [
        rid
        for op in ops
        if not isinstance(op, Purge | Rewrite) and (rid := op.request_id) is not None
    ]
    # One lookup for the whole batch; ids recorded by this transaction are in ``pending``.
    known = txn.find_requests(request_ids) if request_ids else {}
    pending: dict[str, Answer] = {}
    records: list[tuple[str, float, bytes]] = []
    replaced = 0
    prune = False
    # Consecutive plain puts (no condition, no request id), written in one
    # call before any other op runs: one statement run many times costs less
    # than a call per put (64 writers' batch is all plain puts).
    plain: list[tuple[str, bytes, int, float | None]] = []
    for op in ops:
        if (
            type(op) is Put
            and op.request_id is None
            and op.if_version is None
            and not op.must_exist
        ):
            seq += 1
            plain.append((op.key, op.value, seq, op.expires_at))
            results.append(seq)
            continue
        if plain:
            txn.put_many(plain)
            plain = []
        if isinstance(op, Purge):
            results.append(txn.purge(now, op.limit))
            prune = True
            continue
        if isinstance(op, Rewrite):
            rewritten = 0
            for key, version, value in op.items:
                if txn.live_version(key, now) == version:
                    seq += 1
                    txn.replace(key, value, seq)
                    rewritten += 1
            results.append(rewritten)
            continue
        if not isinstance(op, DeduplicatedOp):  # pragma: no cover - the actor routes writes only
            results.append(StorageError(f"not a write operation: {op!r}"))
            continue
        request_id = op.request_id
        found = None
        if request_id is not None:
            if request_id in pending:
                results.append(_replay(namespace, op, request_id, pending[request_id]))
                continue
            found = known.get(request_id)
            if found is not None and found[0] > since:
                results.append(_replay(namespace, op, request_id, decode_answer(found[1])))
                continue
            # Not recorded, or longer ago than the window: apply (again).
        result, seq = _apply(txn, namespace, op, seq, now)
        if request_id is not None and not isinstance(result, StorageError):
            answer = pending[request_id] = _answer(op, result)
            records.append((request_id, now, encode_answer(answer)))
            replaced += found is not None
            result = answer
        results.append(result)
    if plain:
        txn.put_many(plain)
    if records:
        txn.record_requests(records, replaced)
    if records or prune:
        txn.prune_requests(since, limits.entries, PRUNE_STEP + len(records))
    return results, seq


def _apply(
    txn: Transaction, namespace: str, op: DeduplicatedOp, seq: int, now: float
) -> tuple[object, int]:
    """Apply one op; its result (or precondition error) and the new counter."""
    if isinstance(op, Put):
        if op.if_version is not None or op.must_exist:
            current = txn.live_version(op.key, now)
            if op.must_exist and current == 0:
                return KeyMissing(namespace, op.key), seq
            if op.if_version is not None and current != op.if_version:
                return VersionConflict(namespace, op.key, op.if_version, current), seq
        seq += 1
        txn.put(op.key, op.value, seq, op.expires_at)
        return seq, seq
    if isinstance(op, PutMany):
        versions = []
        for key, value in op.items:
            seq += 1
            txn.put(key, value, seq, op.expires_at)
            versions.append(seq)
        return versions, seq
    if isinstance(op, Delete):
        existed = txn.live_version(op.key, now) != 0
        txn.remove(op.key)
        return existed, seq
    removed = 0
    for key in op.keys:
        removed += txn.live_version(key, now) != 0
        txn.remove(key)
    return removed, seq


def _answer(op: DeduplicatedOp, result: object) -> Answer:
    """The answer to record for ``op``, which was applied with ``result``."""
    if isinstance(op, Put):
        assert isinstance(result, int)
        return PutAnswer(result, op.value)
    if isinstance(op, PutMany):
        assert isinstance(result, list)
        return PutManyAnswer(result)
    if isinstance(op, Delete):
        return DeleteAnswer(bool(result))
    assert isinstance(result, int)
    return DeleteManyAnswer(result)


def _replay(namespace: str, op: DeduplicatedOp, request_id: str, answer: Answer | None) -> object:
    """The recorded answer to ``op``'s request id, or the error the retry fails with.

    ``answer`` is ``None`` if the stored one did not decode.
    """
    if answer is None:
        return StorageError(
            f"the recorded answer to request id {quoted(request_id)} in namespace"
            f" {namespace!r} is damaged; the retry wrote nothing (a new request id"
            " makes a new write)"
        )
    if not isinstance(answer, _ANSWERS[type(op)]):
        return StorageError(
            f"request id {quoted(request_id)} in namespace {namespace!r} was first used"
            f" for another kind of write ({type(answer).__name__.removesuffix('Answer')},"
            f" not {type(op).__name__}); the retry wrote nothing"
        )
    return answer


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
