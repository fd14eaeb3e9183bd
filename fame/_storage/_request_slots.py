"""Where each recorded request id is in a file's log of requests, kept in memory.

The file backends keep deduplication records (see ``_dedupe``) as a log:
``fame_requests`` rows numbered ``n`` in the order recorded, with no index
on the id, so that recording one costs about one page of the commit (rows
are appended to one b-tree) whatever the ids look like. This map answers
"which ``n`` holds id X" instead of an index. It is built from the table
when the file opens and changed with every transaction, and a transaction
that fails is undone here too.

Ids are mapped by their ``hash()``: str hashes are keyed per process
(SipHash, unless PYTHONHASHSEED fixes the key), so a peer cannot choose ids
that clash on purpose. A clash is still handled: the map points to one
``n`` per hash, the owner's, and the lookup checks the id stored in that
row; an id whose hash is held by another id's record is kept in a second
map by the id itself. About 90 bytes of memory per record
(``FAME_STORAGE_DEDUPE_ENTRIES`` records at most per namespace, plus a
backlog a lowered limit leaves).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["RequestSlots"]


def slot_hash(request_id: str) -> int:
    """The map's key for ``request_id`` (a module function so a test can force clashes)."""
    return hash(request_id)


class RequestSlots:
    """``request id -> n`` for one file's ``fame_requests``, with an undo log."""

    def __init__(self) -> None:
        # slot_hash(id) -> n of the slot owner's record; and id -> n for the
        # ids whose slot another id holds. (One key type, so _set serves both.)
        self._slots: dict[int | str, int] = {}
        self._clashes: dict[int | str, int] = {}
        self._next = 1  # the n of the next record: past every row there is or was
        self.count = 0  # rows in the table
        # One transaction's changes: (clash?, key, value before), and what it claimed.
        self._undo: list[tuple[bool, int | str, int | None]] | None = None
        self._claimed: set[int] = set()
        self._before = (self._next, self.count)

    @classmethod
    def read(cls, rows: Iterable[tuple[object, object]]) -> RequestSlots:
        """The map of a table's ``(n, id)`` rows, oldest first."""
        slots = cls()
        owners: dict[int, str] = {}
        for n, request_id in rows:
            slots.count += 1
            if not isinstance(n, int):  # pragma: no cover - SQLite keeps n an integer
                continue
            slots._next = max(slots._next, n + 1)
            if not isinstance(request_id, str):
                continue  # a damaged row: never found, pruned in its turn
            key = slot_hash(request_id)
            if owners.setdefault(key, request_id) == request_id:
                slots._slots[key] = n
            else:
                slots._clashes[request_id] = n
        return slots

    def candidates(self, request_id: str) -> list[int]:
        """The rows that may hold ``request_id``'s record: check the id stored there."""
        ns = (self._clashes.get(request_id), self.slot_of(request_id))
        return [n for n in ns if n is not None]

    def slot_of(self, request_id: str) -> int | None:
        """The row the slot of ``request_id``'s hash points to (its owner's), if any."""
        return self._slots.get(slot_hash(request_id))

    def add(self, request_id: str, taken: bool) -> int:
        """Place a new record of ``request_id``; return its ``n``.

        ``taken``: the slot holds another id's record (the caller read that
        row to find out). A slot claimed earlier in the same transaction is
        taken too: a transaction records distinct ids.
        """
        n = self._next
        self._next += 1
        self.count += 1
        key = slot_hash(request_id)
        if taken or key in self._claimed:
            self._set(True, request_id, n)
        else:
            self._claimed.add(key)
            self._set(False, key, n)
        return n

    def forget(self, n: int, request_id: object) -> None:
        """The row ``n`` (of ``request_id``) was deleted."""
        self.count -= 1
        if not isinstance(request_id, str):
            return
        if self._clashes.get(request_id) == n:
            self._set(True, request_id, None)
        elif self.slot_of(request_id) == n:
            self._set(False, slot_hash(request_id), None)

    # One transaction: begin, then commit or roll back.

    def begin(self) -> None:
        self._undo = []
        self._claimed = set()
        self._before = (self._next, self.count)

    def commit(self) -> None:
        self._undo = None

    def roll_back(self) -> None:
        """Undo every change since :meth:`begin`."""
        undo, self._undo = self._undo or [], None
        for clash, key, previous in reversed(undo):
            self._set(clash, key, previous)
        self._next, self.count = self._before

    def _set(self, clash: bool, key: int | str, n: int | None) -> None:
        mapping = self._clashes if clash else self._slots
        if self._undo is not None:
            self._undo.append((clash, key, mapping.get(key)))
        if n is None:
            mapping.pop(key, None)
        else:
            mapping[key] = n
