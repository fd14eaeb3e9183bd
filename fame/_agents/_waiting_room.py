"""The waiting room: requests from the fabric held while their agent's mailbox is full.

A request that arrives from the uplink for an agent whose mailbox is full
is not refused at once: that would turn a burst into errors (thousands of
``mailbox_full`` under plain load). It waits here instead and the node
moves it into the mailbox as room appears. The room is node-wide and
bounded in requests and in bytes; only when it is full is a request
answered ``overloaded`` (nothing ran: the caller retries with backoff
until its own deadline).

Fairness: each agent's waiting requests are queued per caller (its
verified principal and its reply address), and the callers take turns,
one request each, so a caller that sends thousands does not push the
others' requests behind all of its own. A request whose caller's deadline
(``Request.timeout_ms``, counted from its arrival) passed while it waited
is dropped silently: nobody waits for its answer any more.

This is bookkeeping only, free of I/O and clocks (the time is passed in);
the switchboard runs the task that moves requests into mailboxes.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Hashable

import attrs

from .._wire._schema import Envelope

__all__ = ["DEFAULT_WAITING_BYTES", "DEFAULT_WAITING_REQUESTS", "Waiting", "WaitingRoom"]

DEFAULT_WAITING_REQUESTS = 4096
"""Requests a node holds at most while their agents' mailboxes are full."""

DEFAULT_WAITING_BYTES = 16 * 1024 * 1024
"""Bytes of requests a node holds at most while their agents' mailboxes are full."""


@attrs.frozen
class Waiting:
    """One request in the waiting room."""

    envelope: Envelope
    size: int
    """Its encoded size in bytes, as counted against the room's byte bound."""
    deadline: float = math.inf
    """When its caller stops waiting for it (the node's clock); ``inf``: never."""


class WaitingRoom:
    """Requests waiting for mailbox room, per agent and per caller, bounded node-wide."""

    def __init__(
        self, max_requests: int = DEFAULT_WAITING_REQUESTS, max_bytes: int = DEFAULT_WAITING_BYTES
    ) -> None:
        if max_requests < 0 or max_bytes < 0:
            raise ValueError("the waiting room's bounds must be >= 0")
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.requests = 0
        self.bytes = 0
        self.expired = 0
        """Requests dropped because their caller's deadline passed while they waited."""
        self.refused = 0
        """Requests refused because the room was full."""
        # address -> caller -> its waiting requests, oldest first. The inner dict's
        # order is the turn order: a caller served goes to the back.
        self._queues: dict[str, dict[Hashable, collections.deque[Waiting]]] = {}

    def __len__(self) -> int:
        return self.requests

    def has_waiting(self, address: str) -> bool:
        """Whether requests for ``address`` wait (a new one must queue behind them)."""
        return address in self._queues

    def admit(self, address: str, caller: Hashable, waiting: Waiting) -> bool:
        """Queue ``waiting`` for ``address``; False (and nothing kept) if the room is full."""
        if self.requests + 1 > self.max_requests or self.bytes + waiting.size > self.max_bytes:
            self.refused += 1
            return False
        callers = self._queues.setdefault(address, {})
        queue = callers.get(caller)
        if queue is None:
            queue = callers[caller] = collections.deque()
        queue.append(waiting)
        self.requests += 1
        self.bytes += waiting.size
        return True

    def next(self, address: str, now: float) -> Waiting | None:
        """Take the next request for ``address`` (callers in turn); None when none waits.

        Requests whose deadline is past ``now`` are dropped on the way and
        counted in :attr:`expired`.
        """
        callers = self._queues.get(address)
        while callers:
            caller = next(iter(callers))
            queue = callers.pop(caller)
            waiting = queue.popleft()
            if queue:
                callers[caller] = queue  # to the back of the turn order
            self.requests -= 1
            self.bytes -= waiting.size
            if waiting.deadline <= now:
                self.expired += 1
                continue
            if not callers:
                del self._queues[address]
            return waiting
        self._queues.pop(address, None)
        return None

    def drop(self, address: str) -> list[Waiting]:
        """Take every request still waiting for ``address`` (its agent went away)."""
        callers = self._queues.pop(address, {})
        dropped = [waiting for queue in callers.values() for waiting in queue]
        self.requests -= len(dropped)
        self.bytes -= sum(waiting.size for waiting in dropped)
        return dropped
