"""Agents used by the fabric tests (imported by the child processes and the tests)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import trio

import fame


def producers_waiting_for_credit(node: Any) -> int:
    """How many of ``node``'s stream producers are blocked waiting for credit.

    A test sees "the producer stalls" as this event, not by sleeping and
    counting: a producer blocked here runs no further until credit comes.
    """
    if node is None:
        return -1
    return sum(
        p.credit._changed.statistics().tasks_waiting > 0
        for p in node._switchboard.producers.values()
    )


class Boom(Exception):
    pass


class Echo(fame.BaseAgent):
    # Per process: how many stream items were produced and how many streams
    # were closed, so a test can see flow control and cancellation at work.
    produced = 0
    closed = 0

    @fame.operation
    async def stats(self) -> dict:
        return {
            "produced": Echo.produced,
            "closed": Echo.closed,
            "waiting_for_credit": producers_waiting_for_credit(self._fame_node),
        }

    @fame.operation
    async def say(self, text: str) -> str:
        return text

    @fame.operation
    async def pid(self) -> int:
        """Which process answered (pools spread calls over several)."""
        return os.getpid()

    @fame.operation
    async def nap(self, seconds: float) -> str:
        await trio.sleep(seconds)
        return "woke"

    @fame.operation(errors=(Boom,))
    async def fail(self, why: str) -> str:
        raise Boom(why)

    @fame.operation(streaming=True)
    async def count(self, up_to: int, size: int = 0) -> AsyncIterator[dict]:
        pad = "x" * size
        try:
            for i in range(up_to):
                Echo.produced += 1
                yield {"i": i, "pad": pad}
        finally:
            Echo.closed += 1


class Counter(fame.BaseAgent):
    """Counts the applications of ``add`` in its store (the delivery tests).

    Each application is printed (``APPLIED <request key> <total>``, for a
    test that reads a child's output), kept in :attr:`applied` and signalled
    on :attr:`changed` (for a test in the same process).
    """

    def __init__(self) -> None:
        self.applied: list[str | None] = []
        self.changed = trio.Event()

    async def start(self) -> None:
        self._store = await self.storage_provider.get_kv_store(int, "counter")

    @fame.operation
    async def add(self, amount: int) -> int:
        total = (await self._store.get("total") or 0) + amount
        await self._store.set("total", total)
        key = fame.security.request_key()
        self.applied.append(key)
        self.changed.set()
        self.changed = trio.Event()
        print("APPLIED", key, total, flush=True)
        return total

    @fame.operation(idempotent=True)
    async def total(self) -> int:
        return await self._store.get("total") or 0

    @fame.operation(streaming=True)
    async def totals(self) -> AsyncIterator[int]:
        yield await self._store.get("total") or 0
