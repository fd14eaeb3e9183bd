"""The ``memory`` profile: the same records, versions and TTLs, kept in a dict.

It follows the file backends rule for rule (the hypothesis state machine
runs the same operations against all three), so code tested against it
behaves the same on disk. Data lives as long as the provider that holds it.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from ._dedupe import DedupeLimits
from ._errors import StorageError
from ._ops import (
    READ_CHUNK,
    BulkRead,
    Count,
    Get,
    GetMany,
    ReadSteps,
    Row,
    Scan,
    WriteOp,
    apply_writes,
    scan_page,
)

__all__ = ["MemoryBackend"]

_Entry = tuple[bytes, int, float | None]


class MemoryBackend:
    """A namespace in memory. See :class:`fame._storage._ops.Backend`."""

    def __init__(
        self,
        namespace: str,
        dedupe: DedupeLimits = DedupeLimits(),  # noqa: B008 - frozen, so sharing it is safe
    ) -> None:
        self.namespace = namespace
        self.dedupe = dedupe
        # Recorded request ids, oldest first (``at`` comes from the clock, so
        # insertion order is time order unless the clock goes back).
        self._requests: dict[str, tuple[float, bytes]] = {}
        self._request_undo: list[tuple[str, tuple[float, bytes] | None]] | None = None
        self._entries: dict[str, _Entry] = {}
        self._sorted: list[str] = []  # keys in order, for scans
        self._seq = 0
        self._undo: list[tuple[str, _Entry | None]] | None = None

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None or (entry[2] is not None and entry[2] <= now):
            return None
        return entry

    def get(self, op: Get, now: float) -> Row | None:
        entry = self._live(op.key, now)
        return None if entry is None else (entry[0], entry[1])

    def read_steps(self, op: BulkRead, now: float) -> ReadSteps:
        # The actor runs these steps inline, with a checkpoint between two of
        # them, and writes nothing until the last: the dict and the sorted
        # key list do not change under a read, so indexes stay valid.
        if isinstance(op, GetMany):
            found: dict[str, Row] = {}
            for start in range(0, len(op.keys), READ_CHUNK):
                if start:
                    yield
                for key in op.keys[start : start + READ_CHUNK]:
                    entry = self._live(key, now)
                    if entry is not None:
                        found[key] = (entry[0], entry[1])
            return found
        if isinstance(op, Scan):
            rows = yield from self._scan(op, now)
            if op.values and op.decode is not None:
                return scan_page(rows, op.decode)  # type: ignore[arg-type]
            return rows
        if isinstance(op, Count):
            keys = self._sorted
            total = 0
            for start in range(0, len(keys), READ_CHUNK):
                if start:
                    yield
                for key in keys[start : start + READ_CHUNK]:
                    total += self._live(key, now) is not None
            return total
        raise StorageError(f"not a read operation: {op!r}")

    def _scan(self, op: Scan, now: float) -> ReadSteps:
        """Rows in key order; each step looks at :data:`READ_CHUNK` keys at most."""
        keys = self._sorted
        if op.after is not None and op.after >= op.prefix:
            index = bisect.bisect_right(keys, op.after)
        else:
            index = bisect.bisect_left(keys, op.prefix)
        rows: list[tuple[object, ...]] = []
        first = True
        while index < len(keys) and len(rows) < op.limit:
            if not first:
                yield
            first = False
            for key in keys[index : index + READ_CHUNK]:
                if len(rows) >= op.limit or not key.startswith(op.prefix):
                    return rows
                if op.upto is not None and key > op.upto:
                    return rows
                entry = self._live(key, now)
                if entry is not None:
                    rows.append((key, entry[0], entry[1]) if op.values else (key,))
            index += READ_CHUNK
        return rows

    def write(self, ops: Sequence[WriteOp], now: float) -> list[object]:
        undo: list[tuple[str, _Entry | None]] = []
        request_undo: list[tuple[str, tuple[float, bytes] | None]] = []
        self._undo, self._request_undo = undo, request_undo
        try:
            results, seq = apply_writes(self, self.namespace, ops, self._seq, now, self.dedupe)
        except BaseException:
            self._undo = self._request_undo = None
            for key, previous in reversed(undo):
                self._set_entry(key, previous)
            # Restored records go back to the end: order only guides pruning.
            for request_id, record in reversed(request_undo):
                self._set_request(request_id, record)
            raise
        finally:
            self._undo = self._request_undo = None
        self._seq = seq
        return results

    def _set_request(self, request_id: str, record: tuple[float, bytes] | None) -> None:
        if self._request_undo is not None:
            self._request_undo.append((request_id, self._requests.get(request_id)))
        self._requests.pop(request_id, None)
        if record is not None:
            self._requests[request_id] = record

    def _set_entry(self, key: str, entry: _Entry | None) -> None:
        if self._undo is not None:
            self._undo.append((key, self._entries.get(key)))
        exists = key in self._entries
        if entry is None:
            if exists:
                del self._entries[key]
                del self._sorted[bisect.bisect_left(self._sorted, key)]
        else:
            self._entries[key] = entry
            if not exists:
                bisect.insort(self._sorted, key)

    # Transaction protocol, used by apply_writes inside write().

    def live_version(self, key: str, now: float) -> int:
        entry = self._live(key, now)
        return 0 if entry is None else entry[1]

    def put(self, key: str, value: bytes, version: int, expires_at: float | None) -> None:
        self._set_entry(key, (value, version, expires_at))

    def put_many(self, rows: Sequence[tuple[str, bytes, int, float | None]]) -> None:
        for key, value, version, expires_at in rows:
            self._set_entry(key, (value, version, expires_at))

    def remove(self, key: str) -> None:
        self._set_entry(key, None)

    def replace(self, key: str, value: bytes, version: int) -> None:
        self._set_entry(key, (value, version, self._entries[key][2]))

    def purge(self, now: float, limit: int) -> int:
        expired = [k for k, e in self._entries.items() if e[2] is not None and e[2] <= now]
        for key in expired[:limit]:
            self._set_entry(key, None)
        return min(len(expired), limit)

    def find_requests(self, request_ids: Sequence[str]) -> dict[str, tuple[float, bytes]]:
        requests = self._requests
        return {rid: requests[rid] for rid in request_ids if rid in requests}

    def record_requests(self, records: Sequence[tuple[str, float, bytes]], replaced: int) -> None:
        for request_id, at, answer in records:
            self._set_request(request_id, (at, answer))

    def prune_requests(self, expired_at: float, keep: int, limit: int) -> int:
        doomed: list[str] = []
        over = len(self._requests) - keep
        for request_id, (at, _answer) in self._requests.items():
            if len(doomed) >= limit or (at > expired_at and len(doomed) >= over):
                break
            doomed.append(request_id)
        for request_id in doomed:
            self._set_request(request_id, None)
        return len(doomed)

    def close(self) -> None:
        """Nothing to release; the data stays with the provider until it closes."""
