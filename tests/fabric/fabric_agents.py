"""Agents used by the fabric tests (imported by the child processes and the tests)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import trio

import fame


class Boom(Exception):
    pass


class Echo(fame.BaseAgent):
    # Per process: how many stream items were produced and how many streams
    # were closed, so a test can see flow control and cancellation at work.
    produced = 0
    closed = 0

    @fame.operation
    async def stats(self) -> dict:
        return {"produced": Echo.produced, "closed": Echo.closed}

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
