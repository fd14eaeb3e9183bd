"""A stream dropped unclosed warns and is cancelled on the event loop, never in ``__del__``."""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

import fame

PROVIDER = object()


class Endless(fame.BaseAgent):
    def __init__(self) -> None:
        self.closed = trio.Event()

    @fame.operation(streaming=True)
    async def forever(self) -> AsyncIterator[int]:
        try:
            n = 0
            while True:
                n += 1
                yield n
        finally:
            self.closed.set()


@pytest.fixture
def unraisable(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Exceptions raised in ``__del__`` (Python only prints them: collect them)."""
    seen: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    return seen


async def test_a_stream_collected_unclosed_warns_and_releases_its_producer(
    unraisable: list[Any],
) -> None:
    agent = Endless()
    async with fame.open_node(storage_provider=PROVIDER) as node:
        await node.spawn(agent, "endless@local")
        stream = node.open_stream("endless@local", "forever", {}, window=2)
        assert await stream.__anext__() == 1
        stream.cycle = stream  # type: ignore[attr-defined]  # only the collector frees it
        with pytest.warns(ResourceWarning, match="forever.. from endless@local was dropped"):
            del stream
            gc.collect()
        # The cancel was handed to the loop; the producer is released on it.
        with trio.fail_after(5):
            await agent.closed.wait()
        assert node._switchboard.producers == {}
        assert node._switchboard.consumers == {}
    assert unraisable == []


async def test_a_stream_dropped_in_another_thread_is_cancelled_on_the_loop(
    unraisable: list[Any],
) -> None:
    agent = Endless()
    async with fame.open_node(storage_provider=PROVIDER) as node:
        await node.spawn(agent, "endless@local")
        holder = [node.open_stream("endless@local", "forever", {}, window=2)]
        assert await holder[0].__anext__() == 1
        with pytest.warns(ResourceWarning):
            # The last reference dies in a worker thread, as in a storage worker.
            await trio.to_thread.run_sync(holder.clear)
        with trio.fail_after(5):
            await agent.closed.wait()
        assert node._switchboard.producers == {}
    assert unraisable == []


def test_a_stream_dropped_after_its_loop_ended_only_warns(unraisable: list[Any]) -> None:
    async def leak() -> fame.Stream[Any]:
        async with fame.open_node(storage_provider=PROVIDER) as node:
            await node.spawn(Endless(), "endless@local")
            stream = node.open_stream("endless@local", "forever", {}, window=2)
            assert await stream.__anext__() == 1
            return stream

    stream = trio.run(leak)
    with pytest.warns(ResourceWarning):
        del stream
        gc.collect()
    assert unraisable == []


async def test_a_closed_stream_owes_no_warning(recwarn: pytest.WarningsRecorder) -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node:
        await node.spawn(Endless(), "endless@local")
        async with node.open_stream("endless@local", "forever", {}, window=2) as stream:
            assert await stream.__anext__() == 1
        del stream
        gc.collect()
    assert not [w for w in recwarn if issubclass(w.category, ResourceWarning)]
