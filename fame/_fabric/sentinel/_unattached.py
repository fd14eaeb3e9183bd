"""Who is connected but not attached yet, and whom to shed for a newcomer (sans-IO).

A connection the sentinel accepted costs a file descriptor, a task and
some buffers before its peer has proved anything. The
:class:`UnattachedLedger` keeps those connections apart from the attached
ones: at most ``limit`` of them, at most ``per_address`` from one remote
address, each for at most a deadline. A full ledger never turns a newcomer
away: it sheds the *oldest* connection of the newcomer's address (when that
address is at its cap) or of the address holding the most (when the whole
ledger is full). A legitimate peer attaches within milliseconds of
connecting, so a flood of peers that never attach (or send their upgrade
request a byte a minute) only ever evicts its own oldest members, and
cannot lock out a fresh peer, even from the same address.

Shedding costs the sentinel a whole websocket upgrade per newcomer. When
the ledger is full, a newcomer from an address that already holds its
fair share of it is refused right after accept instead
(:meth:`UnattachedLedger.refuses`), which costs almost nothing; an address
holding less than its share (a fresh peer among flooding ones) is still
let in and sheds a flooder. (An earlier rule refused only while the
ledger churned, its oldest under a second old; on a starved machine the
oldest aged past that and every flooder cost an upgrade again.)

Keys are whatever identifies a connection (the door uses its streams);
times are the caller's clock. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["UnattachedLedger"]

K = TypeVar("K", bound=Hashable)


class UnattachedLedger(Generic[K]):
    """The unattached connections, oldest first, with their address and when they came."""

    def __init__(self, limit: int, per_address: int) -> None:
        if limit < 1 or per_address < 1:
            raise ValueError("the unattached limits must be at least 1")
        self.limit = limit
        self.per_address = per_address
        self._since: dict[K, float] = {}  # insertion order is arrival order
        self._address: dict[K, str] = {}
        self._by_address: dict[str, dict[K, None]] = {}

    def __len__(self) -> int:
        return len(self._since)

    def __contains__(self, key: object) -> bool:
        return key in self._since

    def count(self, address: str) -> int:
        """Unattached connections from ``address`` now."""
        return len(self._by_address.get(address, ()))

    def refuses(self, address: str) -> bool:
        """Whether a newcomer from ``address`` is refused at once rather than shedding.

        Only while the ledger is full, and only for an address holding at
        least its fair share of it (the limit divided among the addresses
        present): a flood from many addresses then costs an accept per
        connection, not an upgrade. (A flood from one address never fills
        the ledger, its per-address cap does: it sheds its own oldest.)
        """
        if len(self._since) < self.limit:
            return False
        fair = max(1, self.limit // len(self._by_address))
        return self.count(address) >= fair

    def admit(self, key: K, address: str, now: float) -> list[K]:
        """Record a new connection ``key`` from ``address``; the ones to shed for it.

        The shed ones are already forgotten here; the caller closes them.
        """
        shed: list[K] = []
        if self.count(address) >= self.per_address:
            shed.append(next(iter(self._by_address[address])))
            self.forget(shed[-1])
        if len(self._since) >= self.limit:
            heaviest = max(self._by_address.values(), key=len)
            shed.append(next(iter(heaviest)))
            self.forget(shed[-1])
        self._since[key] = now
        self._address[key] = address
        self._by_address.setdefault(address, {})[key] = None
        return shed

    def forget(self, key: K) -> bool:
        """``key`` attached or closed: it no longer counts. False if it was not here."""
        if self._since.pop(key, None) is None:
            return False
        address = self._address.pop(key)
        mine = self._by_address[address]
        del mine[key]
        if not mine:
            del self._by_address[address]
        return True

    def oldest(self) -> K | None:
        """The connection waiting longest, or None."""
        return next(iter(self._since), None)

    def expired(self, before: float) -> list[K]:
        """Forget and return the connections that came before ``before`` (deadline passed)."""
        late: list[K] = []
        for key, since in self._since.items():
            if since >= before:
                break
            late.append(key)
        for key in late:
            self.forget(key)
        return late

    def next_expiry(self, deadline: float) -> float | None:
        """When the oldest connection's ``deadline`` (seconds) ends, or None if there is none."""
        oldest = self.oldest()
        return None if oldest is None else self._since[oldest] + deadline
