"""Deadlines of parked waiters, without a cancel scope each.

A trio cancel scope costs about a task switch to enter and leave (it
builds a cancel status and registers and unregisters its deadline), as
much as the whole of a bare mailbox round trip. The hot paths of a local
call (``ActorRef.ask``, a call to an agent on the same node) need a
deadline for one thing only, the wait for their answer on a
:class:`~fame._core._reply.ReplySlot`, so they hand it to their run's
:class:`Deadlines`: a heap of parked slots and one system task that
expires each slot whose time came. Expiry is a reschedule, as an answer
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

__all__ = ["Deadlines", "Expirable", "deadlines"]

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
    """One run's parked waiters by deadline, and the task that expires them."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Expirable]] = []
        self._order = itertools.count()  # ties broken by arrival; slots never compare
        self._prune_at = MIN_PRUNE
        self._wake = math.inf  # when the task wakes next (inf: only when told)
        self._scope: trio.CancelScope | None = None

    def add(self, deadline: float, waiter: Expirable) -> None:
        """Expire ``waiter`` at ``deadline`` (trio's clock) unless it is answered first."""
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

    async def run(self) -> None:
        """Expire waiters as their deadlines pass (the run's system task)."""
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                waiter = heapq.heappop(heap)[2]
                if waiter.waiting:
                    waiter.expire()
            self._wake = heap[0][0] if heap else math.inf
            with trio.CancelScope(deadline=self._wake) as self._scope:
                await trio.sleep_forever()
            self._scope = None


_run_deadlines: trio.lowlevel.RunVar[Deadlines] = trio.lowlevel.RunVar("fame_deadlines")


def deadlines() -> Deadlines:
    """This run's :class:`Deadlines`, its task started on first use."""
    try:
        return _run_deadlines.get()
    except LookupError:
        pass
    table = Deadlines()
    trio.lowlevel.spawn_system_task(table.run, name="fame deadlines")
    _run_deadlines.set(table)
    return table
