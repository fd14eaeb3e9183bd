"""Streaming operations: iteration, early close, credit flow control, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import fame
from fame import ActorCrashed, DeadlineExceeded, InvalidArguments, OperationFailed
from fame._agents._credit import CreditBalance
from fame._protocol._credit import CreditWindow
from fame.errors import ProtocolError

from ._helpers import all_tasks, assert_no_new_tasks

PROVIDER = object()


class Counter(fame.BaseAgent):
    def __init__(self) -> None:
        self.produced = 0
        self.closed = 0
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1

    @fame.operation(streaming=True, errors=(LookupError,))
    async def count(self, n: int, fail_at: int = -1, crash_at: int = -1) -> AsyncIterator[int]:
        try:
            for i in range(n):
                if i == fail_at:
                    raise LookupError(f"no item {i}")
                if i == crash_at:
                    raise RuntimeError(f"broke at {i}")
                self.produced += 1
                yield i
        finally:
            self.closed += 1

    @fame.operation(streaming=True)
    async def labels(self, n: int) -> AsyncIterator[str]:
        for i in range(n):
            yield str(i)

    @fame.operation(streaming=True)
    async def slow(self) -> AsyncIterator[int]:
        yield 1
        await trio.sleep(100)
        yield 2


async def spawn_counter(node: fame.Node) -> tuple[Counter, fame.Proxy]:
    agent = Counter()
    return agent, await node.spawn(agent, "counter@local")


async def test_full_iteration() -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node:
        agent, counter = await spawn_counter(node)
        assert [i async for i in counter.count(n=500)] == list(range(500))
        assert [i async for i in counter.count(n=0)] == []
        assert [s async for s in counter.labels(n=3)] == ["0", "1", "2"]
        assert agent.closed == 2
        assert node._switchboard.producers == {}
        assert node._switchboard.consumers == {}


async def test_breaking_out_closes_the_generator() -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node:
        agent, counter = await spawn_counter(node)
        async for i in counter.count(n=1000):
            if i == 3:
                break
        await trio.testing.wait_all_tasks_blocked()
        assert agent.closed == 1
        assert agent.produced < 1000
        assert node._switchboard.producers == {}
        assert node._switchboard.consumers == {}


async def test_aclose_and_async_with_close_the_generator() -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node:
        agent, counter = await spawn_counter(node)
        stream = node.open_stream("counter@local", "count", {"n": 1000})
        assert await stream.__anext__() == 0
        await stream.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert agent.closed == 1

        async with counter.count(n=1000) as items:
            async for i in items:
                if i == 5:
                    break
        await trio.testing.wait_all_tasks_blocked()
        assert agent.closed == 2
        assert node._switchboard.producers == {}
        # Closing a stream that never started, or twice, is harmless.
        unopened = node.open_stream("counter@local", "count", {"n": 1})
        await unopened.aclose()
        await stream.aclose()
        assert agent.closed == 2


async def test_a_consumer_that_stops_reading_stalls_the_producer() -> None:
    window = 4
    async with fame.open_node(storage_provider=PROVIDER) as node:
        agent, _ = await spawn_counter(node)
        stream = node.open_stream("counter@local", "count", {"n": 100}, window=window)
        assert await stream.__anext__() == 0
        await trio.testing.wait_all_tasks_blocked()
        # One window was sent; the producer waits for credit before it asks the
        # generator for one more item.
        assert agent.produced == window
        assert await stream.__anext__() == 1  # half a window consumed: credit goes back
        await trio.testing.wait_all_tasks_blocked()
        assert agent.produced == window + 2
        rest = [i async for i in stream]
        assert rest == list(range(2, 100))
        assert agent.produced == 100


async def test_default_window_bounds_an_unread_proxy_stream() -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node:
        agent, counter = await spawn_counter(node)
        async with counter.count(n=10_000) as items:
            assert await items.__anext__() == 0
            await trio.testing.wait_all_tasks_blocked()
            assert agent.produced == fame._agents._stream.DEFAULT_WINDOW
        await trio.testing.wait_all_tasks_blocked()
        assert agent.closed == 1


async def test_declared_error_ends_the_stream_without_restart() -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node:
        agent, counter = await spawn_counter(node)
        received: list[int] = []
        with pytest.raises(OperationFailed, match="no item 3") as info:
            async for i in counter.count(n=10, fail_at=3):
                received.append(i)
        assert received == [0, 1, 2]
        assert info.value.exc_type == "LookupError"
        assert agent.starts == 1
        assert node._switchboard.consumers == {}
        assert [i async for i in counter.count(n=2)] == [0, 1]


async def test_crash_in_a_stream_restarts_the_agent() -> None:
    policy = fame.RestartPolicy(backoff_initial=0)
    async with fame.open_node(storage_provider=PROVIDER, restart_policy=policy) as node:
        agent, counter = await spawn_counter(node)
        received: list[int] = []
        with pytest.raises(ActorCrashed, match="counter@local crashed: RuntimeError: broke at 2"):
            async for i in counter.count(n=10, crash_at=2):
                received.append(i)
        assert received == [0, 1]
        assert node._switchboard.consumers == {}
        assert [i async for i in counter.count(n=2)] == [0, 1]
        assert agent.starts == 2
        assert node.supervisor.restart_count("counter@local") == 1


async def test_bad_stream_arguments_name_the_parameter() -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node:
        _, counter = await spawn_counter(node)
        with pytest.raises(InvalidArguments, match="count\\(\\): invalid argument 'n'"):
            async for _ in counter.count(n="many"):
                pass
        assert [i async for i in counter.count(n=1)] == [0]


async def test_waiting_too_long_for_an_item(autojump_clock: Any) -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node:
        await spawn_counter(node)
        stream = node.open_stream("counter@local", "slow", {}, timeout=5)
        assert await stream.__anext__() == 1
        with pytest.raises(DeadlineExceeded, match="counter@local sent no stream item within 5 s"):
            await stream.__anext__()
        await stream.aclose()


async def test_an_abandoned_stream_is_closed_after_the_idle_timeout(autojump_clock: Any) -> None:
    async with fame.open_node(storage_provider=PROVIDER, stream_idle_timeout=60) as node:
        agent, _ = await spawn_counter(node)
        stream = node.open_stream("counter@local", "count", {"n": 100}, window=2)
        assert await stream.__anext__() == 0
        start = trio.current_time()
        await trio.sleep(59)
        assert agent.closed == 0
        await trio.sleep(2)
        assert agent.closed == 1
        assert trio.current_time() - start == pytest.approx(61)
        assert node._switchboard.producers == {}
        await stream.aclose()


async def test_closing_the_node_closes_open_streams() -> None:
    before = all_tasks()
    agent = Counter()
    async with fame.open_node(storage_provider=PROVIDER) as node:
        counter = await node.spawn(agent, "counter@local")
        stream = node.open_stream("counter@local", "count", {"n": 100}, window=2)
        assert await stream.__anext__() == 0
        await trio.testing.wait_all_tasks_blocked()
    assert agent.closed == 1
    assert_no_new_tasks(before)
    assert counter.address == "counter@local"


def test_credit_window_refuses_items_without_credit() -> None:
    window = CreditWindow(2)
    window.on_item()
    window.on_item()
    with pytest.raises(ProtocolError, match="without credit"):
        window.on_item()
    with pytest.raises(ValueError, match="at least 1"):
        CreditWindow(0)


@settings(max_examples=200)
@given(st.integers(min_value=1, max_value=20), st.lists(st.booleans(), max_size=300))
def test_credit_never_lets_more_than_a_window_in_flight(window: int, steps: list[bool]) -> None:
    """Random interleavings of "producer sends" (True) and "consumer reads" (False)."""
    consumer = CreditWindow(window)
    producer = CreditBalance(window)
    in_flight = 0
    delivered = 0
    for send in steps:
        if send and producer.available > 0:
            producer.available -= 1
            consumer.on_item()
            in_flight += 1
        elif not send and in_flight > 0:
            in_flight -= 1
            delivered += 1
            producer.grant(*consumer.on_consumed())
        assert 0 <= in_flight <= window
        assert producer.available + in_flight <= window
    # Draining everything always returns enough credit to keep going.
    while in_flight:
        in_flight -= 1
        producer.grant(*consumer.on_consumed())
    assert producer.available >= (window + 1) // 2


async def test_cancelling_the_node_mid_stream_and_mid_call_leaves_nothing() -> None:
    class Busy(fame.BaseAgent):
        max_concurrency = 2

        def __init__(self) -> None:
            self.log: list[str] = []

        async def stop(self) -> None:
            self.log.append("stop")

        @fame.operation
        async def hang(self) -> None:
            try:
                await trio.sleep_forever()
            finally:
                self.log.append("call cancelled")

        @fame.operation(streaming=True)
        async def forever(self) -> AsyncIterator[int]:
            try:
                while True:
                    yield 1
            finally:
                self.log.append("generator closed")

    before = all_tasks()
    agent = Busy()
    with trio.CancelScope() as scope:
        async with fame.open_node(storage_provider=PROVIDER) as node, trio.open_nursery() as n:
            proxy = await node.spawn(agent, "busy@local")

            async def hang() -> None:
                await proxy.hang()

            n.start_soon(hang)
            stream = node.open_stream("busy@local", "forever", {}, window=2)
            assert await stream.__anext__() == 1
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
    assert scope.cancelled_caught
    assert sorted(agent.log) == ["call cancelled", "generator closed", "stop"]
    assert agent.log[-1] == "stop"
    assert_no_new_tasks(before)


@settings(max_examples=200)
@given(
    st.integers(min_value=1, max_value=20),
    st.lists(st.sampled_from(["send", "read", "starve"]), max_size=400),
)
def test_an_adaptive_window_grows_only_within_its_bounds(window: int, steps: list[str]) -> None:
    """The window grows while the reader runs dry, never past ``max_window``, never overrun."""
    consumer = CreditWindow(window, None, max_window=window * 8)
    producer = CreditBalance(window)
    in_flight = 0
    for step in steps:
        if step == "send" and producer.available > 0:
            producer.available -= 1
            consumer.on_item()
            in_flight += 1
        elif step == "starve":
            consumer.starved = True
        elif step == "read" and in_flight > 0:
            in_flight -= 1
            producer.grant(*consumer.on_consumed())
        assert window <= consumer.window <= window * 8
        assert producer.available + in_flight <= consumer.window


def test_an_adaptive_window_doubles_while_the_reader_keeps_up() -> None:
    consumer = CreditWindow(4, None, max_window=16)
    producer = CreditBalance(4)
    seen = []
    in_flight = 0
    for _ in range(40):
        while producer.try_take():
            consumer.on_item()
            in_flight += 1
        consumer.starved = True  # the reader found nothing waiting: it keeps up
        while in_flight:
            in_flight -= 1
            producer.grant(*consumer.on_consumed())
        seen.append(consumer.window)
    assert seen[-1] == 16
    assert sorted(seen) == seen  # only ever grows while the reader keeps up
