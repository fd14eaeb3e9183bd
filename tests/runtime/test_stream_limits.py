"""What one stream may hold: credit before items, bytes, a concurrency slot, a per-caller cap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

import fame
from fame._wire._schema import Envelope, Request
from fame.errors import QuotaExceeded

PROVIDER: Any = object()  # agents here open no store
GUARD = 30.0
ITEM = b"x" * 1000
ITEM_SIZE = 1003  # msgpack bin 16: 3 bytes of header


class Streams(fame.BaseAgent):
    max_concurrency = 3
    max_streams_per_caller = 8

    def __init__(self) -> None:
        self.pulled = 0
        self.running = 0
        self.started = 0
        self.gate = trio.Event()

    @fame.operation(streaming=True)
    async def items(self, n: int) -> AsyncIterator[int]:
        self.started += 1
        self.running += 1
        try:
            for i in range(n):
                self.pulled += 1
                yield i
        finally:
            self.running -= 1

    @fame.operation(streaming=True)
    async def gated(self, n: int) -> AsyncIterator[int]:
        """Works on each item until the gate opens: holds its slot meanwhile."""
        self.started += 1
        self.running += 1
        try:
            for i in range(n):
                await self.gate.wait()
                yield i
        finally:
            self.running -= 1

    @fame.operation(streaming=True)
    async def blobs(self, n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            self.pulled += 1
            yield ITEM

    @fame.operation
    async def plain(self) -> str:
        return "done"


class OneAtATime(Streams):
    max_concurrency = 1


class Capped(Streams):
    max_concurrency = 16
    max_streams_per_caller = 2


def raw_stream_request(to: str, corr: int, *, credit: int, op: str = "items") -> Envelope:
    """A streaming request as a peer would send it, granting ``credit`` items."""
    return Envelope(0, to, 1, Request(op, {"n": 100}, True, credit, None), "_reply@x", corr)


async def test_a_stream_without_credit_pulls_nothing_and_holds_no_slot() -> None:
    agent = Streams()
    async with fame.open_node(storage_provider=PROVIDER) as node:
        await node.spawn(agent, "streams@local")
        for corr in range(1, 6):
            await node._switchboard.route(raw_stream_request("streams@local", corr, credit=0))
        await trio.testing.wait_all_tasks_blocked()
        assert len(node._switchboard.producers) == 5  # all accepted ...
        assert agent.pulled == 0  # ... and none asked its generator for an item
        async with node.open_stream("streams@local", "items", {"n": 3}) as mine:
            assert [i async for i in mine] == [0, 1, 2]  # they hold no slot
        assert await node.call("streams@local", "plain", {}) == "done"


async def test_working_streams_hold_a_slot_and_leave_one_for_plain_calls() -> None:
    agent = Streams()  # max_concurrency = 3: two streams at most, one slot for calls
    async with fame.open_node(storage_provider=PROVIDER) as node:
        proxy = await node.spawn(agent, "streams@local")
        streams = [node.open_stream("streams@local", "gated", {"n": 2}) for _ in range(2)]
        third = node.open_stream("streams@local", "items", {"n": 3})
        got: dict[int, list[int]] = {0: [], 1: [], 2: []}

        async def read(n: int, stream: fame.Stream[Any]) -> None:
            async with stream:
                got[n].extend([i async for i in stream])

        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:
                for n, stream in enumerate([*streams, third]):
                    nursery.start_soon(read, n, stream)
                    await trio.testing.wait_all_tasks_blocked()
                assert agent.running == 2  # both gated streams work (wait at the gate)
                assert got[2] == []  # the third waits for a slot
                assert await proxy.plain() == "done"  # the slot kept for calls
                agent.gate.set()
        assert got == {0: [0, 1], 1: [0, 1], 2: [0, 1, 2]}


async def test_a_one_at_a_time_agent_serves_one_stream_beside_its_calls() -> None:
    agent = OneAtATime()
    async with fame.open_node(storage_provider=PROVIDER) as node:
        await node.spawn(agent, "one@local")
        # A stream at work (waiting at the gate) holds the one stream slot.
        await node._switchboard.route(raw_stream_request("one@local", 1, credit=1, op="gated"))
        await trio.testing.wait_all_tasks_blocked()
        assert agent.running == 1
        async with node.open_stream("one@local", "items", {"n": 2}) as waiting:
            got: list[int] = []
            async with trio.open_nursery() as nursery:

                async def read() -> None:
                    got.extend([i async for i in waiting])

                nursery.start_soon(read)
                await trio.testing.wait_all_tasks_blocked()
                assert got == []
                assert agent.pulled == 0  # the second stream waits for the slot ...
                assert await node.call("one@local", "plain", {}) == "done"  # ... calls do not
                agent.gate.set()  # the first one sends its item, then waits for credit
            assert got == [0, 1]


async def test_one_caller_past_its_stream_cap_gets_quota_exceeded() -> None:
    agent = Capped()
    async with fame.open_node(storage_provider=PROVIDER) as node:
        await node.spawn(agent, "capped@local")
        first = node.open_stream("capped@local", "items", {"n": 10}, window=1)
        second = node.open_stream("capped@local", "items", {"n": 10}, window=1)
        assert await first.__anext__() == 0
        assert await second.__anext__() == 0
        third = node.open_stream("capped@local", "items", {"n": 10}, window=1)
        with pytest.raises(QuotaExceeded) as refused:
            await third.__anext__()
        assert refused.value.kind == "quota_exceeded"
        assert refused.value.actor == "capped@local"
        assert "max_streams_per_caller = 2" in str(refused.value)
        assert agent.started == 2  # nothing ran for the refused one
        await first.aclose()
        await trio.testing.wait_all_tasks_blocked()
        async with node.open_stream("capped@local", "items", {"n": 3}, window=1) as fourth:
            assert [i async for i in fourth] == [0, 1, 2]
        await second.aclose()


async def test_another_caller_is_not_affected_by_a_full_cap() -> None:
    agent = Capped()
    async with fame.open_node(storage_provider=PROVIDER) as node:
        await node.spawn(agent, "capped@local")
        for corr in range(1, 4):
            await node._switchboard.route(raw_stream_request("capped@local", corr, credit=0))
        await trio.testing.wait_all_tasks_blocked()
        assert len(node._switchboard.producers) == 2  # the third of "_reply@x" was refused
        async with node.open_stream("capped@local", "items", {"n": 2}) as mine:
            assert [i async for i in mine] == [0, 1]


@pytest.mark.parametrize(("window_bytes", "in_flight"), [(3000, 3), (100, 1), (None, 10)])
async def test_byte_credit_limits_the_items_in_flight(
    window_bytes: int | None, in_flight: int
) -> None:
    agent = Streams()
    async with fame.open_node(storage_provider=PROVIDER) as node:
        await node.spawn(agent, "streams@local")
        stream = node.open_stream(
            "streams@local", "blobs", {"n": 40}, window=10, window_bytes=window_bytes
        )
        async with stream:
            assert await stream.__anext__() == ITEM
            consumer = node._switchboard.consumers[stream._corr]  # type: ignore[index]
            await trio.testing.wait_all_tasks_blocked()
            # Sent while the byte credit was positive: 3000 -> 1997 -> 994 -> -9 stops
            # after 3 items; an item larger than a 100-byte window still goes, alone.
            buffered = consumer._receive.statistics().current_buffer_used
            assert 1 + buffered == agent.pulled
            if window_bytes is None or window_bytes > ITEM_SIZE:
                assert agent.pulled == in_flight
            else:
                # The first item was consumed: its bytes went back, one more is in flight.
                assert agent.pulled == 2
            rest = [item async for item in stream]
            assert rest == [ITEM] * 39
