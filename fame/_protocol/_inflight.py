"""Requests a sentinel forwarded and that are not answered yet, per link.

(It also tells which link serves a request: see :meth:`InflightRequests.link_of`.)

When a node's link drops, the requests the sentinel already forwarded to it
can never be answered. Without this table their callers would wait out
their deadlines (30 s by default); with it, the sentinel answers each of
them at once with a ``request_lost`` error that says the node went away
(the request may have run).

A request is keyed by the caller's ``(reply_to, corr)``. It is recorded
when a request (or a stream credit) goes to a link, and forgotten when a
final frame (reply, stream end, error) comes back from that link or when
the caller cancels. The table is bounded per link: past ``limit`` the
oldest entries are dropped, which only means those callers fall back to
their own deadlines. Pure data structure: no I/O, no clock.

Each entry also remembers the link the request came *from* (its caller's
link) and the address it was sent to. When a caller's link closes, its
streams still open at other links would otherwise stall their producers
until the idle timeout (a client killed while reading a stream sends no
``Cancel``); :meth:`InflightRequests.abandoned` hands them to the sentinel,
which cancels each at the link serving it.

A request forwarded for a principal is counted in :attr:`InflightRequests.usage`
(its requests, and its streams) for as long as it is in the table, so the
per-principal quotas (``fame._protocol._quotas``) see every way it leaves:
answered, cancelled, lost with either link, or dropped past ``limit``.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from ._quotas import PrincipalUsage

__all__ = ["InflightRequests"]

L = TypeVar("L")
Key = tuple[str, int]


class InflightRequests(Generic[L]):
    """Per link, the ``(reply_to, corr)`` of requests waiting for an answer from it."""

    def __init__(self, limit: int = 65_536, usage: PrincipalUsage | None = None) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.usage = usage if usage is not None else PrincipalUsage()
        # key -> (principal, stream, caller link): what it counts in usage and shares
        self._counted: dict[Key, tuple[str, bool, L | None]] = {}
        # per caller link: [requests, streams] counted, for the link's share of its quota
        self._caller_counts: dict[L, list[int]] = {}
        self._by_link: dict[L, dict[Key, str]] = {}  # per serving link: key -> address
        self._link_of: dict[Key, L] = {}
        # The caller's side: per caller link, its requests and where they went.
        self._by_caller: dict[L, dict[Key, str]] = {}
        self._caller_of: dict[Key, L] = {}

    def forwarded(
        self,
        link: L,
        reply_to: str,
        corr: int,
        *,
        caller: L | None = None,
        to: str = "",
        principal: str | None = None,
        stream: bool = False,
    ) -> None:
        """A request (or stream credit) from ``reply_to`` went to ``link``.

        ``caller`` is the link it came from (``None``: the sentinel's own
        node) and ``to`` the address it was sent to, for :meth:`abandoned`.
        A request of ``principal`` counts in :attr:`usage` (a stream too,
        if ``stream``) until it leaves the table.
        """
        waiting = self._by_link.setdefault(link, {})
        key = (reply_to, corr)
        if principal is not None and key not in self._counted:
            self._counted[key] = (principal, stream, caller)
            self.usage.count(principal, stream=stream)
            if caller is not None:
                counts = self._caller_counts.setdefault(caller, [0, 0])
                counts[0] += 1
                counts[1] += stream
        waiting[key] = to
        self._link_of[key] = link
        if caller is not None:
            self._by_caller.setdefault(caller, {})[key] = to
            self._caller_of[key] = caller
        if len(waiting) > self.limit:
            oldest = next(iter(waiting))  # dicts keep insertion order
            del waiting[oldest]
            self._forget(oldest)

    def finished(self, link: L, reply_to: str, corr: int) -> None:
        """``link`` sent the final answer to ``(reply_to, corr)``, or the caller cancelled."""
        key = (reply_to, corr)
        waiting = self._by_link.get(link)
        if waiting is not None and key in waiting:
            del waiting[key]
            self._forget(key)

    def lost(self, link: L) -> list[Key]:
        """``link`` closed: forget it and return the requests it left unanswered."""
        return [key for key, _, _ in self.lost_requests(link)]

    def lost_requests(self, link: L) -> list[tuple[Key, str, L | None]]:
        """Like :meth:`lost`, with each request's address and caller link.

        The caller link (None: the sentinel's own node) is where the error
        telling the caller goes: answers go back the way their request came.
        """
        lost = []
        for key, to in self._by_link.pop(link, {}).items():
            lost.append((key, to, self._caller_of.get(key)))
            self._forget(key)
        return lost

    def abandoned(self, caller: L) -> list[tuple[L, str, Key]]:
        """``caller``'s link closed: forget the requests it still waits on elsewhere.

        Returns ``(serving link, address, (reply_to, corr))`` for each, so that
        the producers of its open streams can be cancelled: nobody will read
        or grant credit any more.
        """
        orphans: list[tuple[L, str, Key]] = []
        for key, to in self._by_caller.pop(caller, {}).items():
            self._caller_of.pop(key, None)
            self._uncount(key)
            link = self._link_of.pop(key, None)
            if link is None:
                continue
            waiting = self._by_link.get(link)
            if waiting is not None:
                waiting.pop(key, None)
            orphans.append((link, to, key))
        return orphans

    def _uncount(self, key: Key) -> None:
        counted = self._counted.pop(key, None)
        if counted is None:
            return
        principal, stream, caller = counted
        self.usage.uncount(principal, stream=stream)
        counts = self._caller_counts.get(caller) if caller is not None else None
        if counts is not None:
            counts[0] -= 1
            counts[1] -= stream
            if counts[0] <= 0:
                del self._caller_counts[caller]  # type: ignore[arg-type]

    def caller_usage(self, caller: L) -> tuple[int, int]:
        """Requests and streams of link ``caller`` in flight now (counted for its principal)."""
        counts = self._caller_counts.get(caller)
        return (counts[0], counts[1]) if counts is not None else (0, 0)

    def _forget(self, key: Key) -> None:
        self._uncount(key)
        self._link_of.pop(key, None)
        caller = self._caller_of.pop(key, None)
        if caller is not None:
            calls = self._by_caller.get(caller)
            if calls is not None:
                calls.pop(key, None)
                if not calls:
                    del self._by_caller[caller]

    def link_of(self, reply_to: str, corr: int) -> L | None:
        """The link serving the caller's request ``corr``, while it is unanswered.

        Stream credits and cancels to a pool follow their stream this way:
        round-robin would send them to another member, which has no such stream.
        """
        return self._link_of.get((reply_to, corr))

    def caller_of(self, reply_to: str, corr: int) -> L | None:
        """The link the request ``corr`` came from (None: the sentinel's own node)."""
        return self._caller_of.get((reply_to, corr))

    def waiting(self, link: L) -> int:
        """How many requests wait for an answer from ``link``."""
        return len(self._by_link.get(link, {}))
