"""Deadlines of parked waiters, without a cancel scope each.

A trio cancel scope costs about a task switch to enter and leave (it
builds a cancel status and registers and unregisters its deadline), as
much as the whole of a bare mailbox round trip. The hot paths of a local
call (``ActorRef.ask``, a call to an agent on the same node) need a
deadline for one thing only, the wait for their answer on a
:class:`~fame._core._reply.ReplySlot`, so they hand it to the
:class:`Deadlines` of the actor's supervisor: a heap of parked slots and
one task that expires each slot whose time came. Expiry is a reschedule, as an answer
is, so the slot's rule stays: whichever comes first wins.

Answered slots stay in the heap until they are pruned: the heap is
rebuilt from the slots still waiting whenever it has doubled since the
last rebuild, which keeps it about twice the number of waiting calls at
an amortised constant cost per call.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Protocol

import trio

__all__ = ["Deadlines", "Expirable"]

MIN_PRUNE = 64
"""The heap size below which it is never pruned."""


class Expirable(Protocol):
    """A parked waiter that a deadline can end."""

    @property
    def waiting(self) -> bool:
        """Whether its task is still parked, neither answered nor given up."""

    def expire(self) -> None:
        """Wake its task: the deadline passed first."""


class Deadlines:
    """Parked waiters by deadline, and the task that expires them (in a supervisor's nursery).

    The task starts with the first deadline and ends when :meth:`close` is
    called (the supervisor closed and its actors stopped: nothing can
    still wait for them) or when its nursery is cancelled. From then on
    :meth:`add` refuses, and a waiter keeps its deadline with a cancel
    scope of its own.
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._heap: list[tuple[float, int, Expirable]] = []
        self._order = itertools.count()  # ties broken by arrival; waiters never compare
        self._prune_at = MIN_PRUNE
        self._wake = math.inf  # when the task wakes next (inf: only when told)
        self._scope: trio.CancelScope | None = None
        self._running = False
        self._closed = False

    def add(self, deadline: float, waiter: Expirable) -> bool:
        """Expire ``waiter`` at ``deadline`` (trio's clock) unless it is answered first.

        False if this table no longer runs: the waiter must keep its
        deadline itself.
        """
        if not self._running:
            if self._closed:
                return False
            try:
                self._nursery.start_soon(self._run, name="fame deadlines")
            except RuntimeError:  # the nursery is closed
                self._closed = True
                return False
            self._running = True
        heap = self._heap
        if len(heap) >= self._prune_at:
            heap[:] = [entry for entry in heap if entry[2].waiting]
            heapq.heapify(heap)
            self._prune_at = max(MIN_PRUNE, 2 * len(heap))
        heapq.heappush(heap, (deadline, next(self._order), waiter))
        if deadline < self._wake:
            self._wake = deadline
            if self._scope is not None:
                self._scope.deadline = deadline
        return True

    def close(self) -> None:
        """Stop the task: nothing will wait on this table any more."""
        self._closed = True
        if self._scope is not None:
            self._scope.cancel()

    async def _run(self) -> None:
        heap = self._heap
        try:
            while not self._closed:
                now = trio.current_time()
                while heap and heap[0][0] <= now:
                    waiter = heapq.heappop(heap)[2]
                    if waiter.waiting:
                        waiter.expire()
                self._wake = heap[0][0] if heap else math.inf
                with trio.CancelScope(deadline=self._wake) as self._scope:
                    await trio.sleep_forever()
                self._scope = None
        finally:
            self._closed = True
            self._running = False
            self._scope = None
            self._heap = []
