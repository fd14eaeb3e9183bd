"""Flow control and cancellation of streams across processes."""

from __future__ import annotations

from typing import Any

import trio

from fame._agents._stream import DEFAULT_WINDOW, DEFAULT_WINDOW_BYTES
from fame._fabric._client import connect

from .conftest import Fabric
from .fabric_agents import Echo

ITEM_SIZE = 16 * 1024  # 16 KiB per item
ITEMS = 100_000  # ~1.6 GB if nothing held the producer back
GUARD = 30.0  # a broken flow control fails the test instead of hanging it


async def producer_stalled(echo: Any) -> dict[str, int]:
    """Echo's stats once its one stream producer is blocked waiting for credit."""
    with trio.fail_after(GUARD):
        while (stats := await echo.stats())["waiting_for_credit"] != 1:  # noqa: ASYNC110 (polls another process)
            await trio.sleep(0.01)
    return stats  # type: ignore[no-any-return]


async def test_slow_consumer_stalls_producer_with_bounded_memory(fabric: Fabric) -> None:
    sentinel, url = fabric.sentinel()
    node, _, _ = fabric.node(url)
    async with connect(url, token=fabric.token) as client:
        echo = client.proxy("echo@fame.fabric", Echo)
        rss_before = {"sentinel": sentinel.rss_kib(), "node": node.rss_kib()}
        async with echo.count(up_to=ITEMS, size=ITEM_SIZE) as stream:
            consumed = 0
            async for item in stream:
                assert item["i"] == consumed
                consumed += 1
                if consumed == 10:
                    break
            # The consumer stopped reading. Wait for the event "the producer blocks on
            # credit": only then has it run as far ahead as it ever will.
            stats = await producer_stalled(echo)
            # Credits: at most one window beyond what was consumed (nothing is pulled
            # from the generator before credit), and it did use its whole window:
            # the bound was tested, not idle.
            assert DEFAULT_WINDOW <= stats["produced"] <= consumed + DEFAULT_WINDOW, stats
            # The client holds at most one window, in a bounded channel: wait until
            # every item the producer sent has arrived.
            consumer = client._switchboard.consumers[stream._corr]  # type: ignore[index]
            sent = stats["produced"]
            with trio.fail_after(GUARD):
                while consumed + consumer._receive.statistics().current_buffer_used < sent:  # noqa: ASYNC110 (frames arrive from another process)
                    await trio.sleep(0.01)
            buffered = consumer._receive.statistics().current_buffer_used
            assert buffered <= DEFAULT_WINDOW
            growth = {
                "sentinel": sentinel.rss_kib() - rss_before["sentinel"],
                "node": node.rss_kib() - rss_before["node"],
            }
            # A window of 64 x 16 KiB is 1 MiB; allow generous slack, far below 1.6 GB.
            assert growth["sentinel"] < 32 * 1024, growth
            assert growth["node"] < 32 * 1024, growth
            # Reading on resumes the stream where it stopped.
            async for item in stream:
                assert item["i"] == consumed
                consumed += 1
                if consumed == 500:
                    break
            # The window grew while the reader kept up (adaptive credit), but never
            # past what the consumer granted: the item window in force, and the bytes.
            window = consumer.window.window
        # Leaving the block cancels the stream: the agent's generator is closed.
        with trio.fail_after(GUARD):
            while (await echo.stats())["closed"] < 1:  # noqa: ASYNC110 (polls another process)
                await trio.sleep(0.01)
        stats = await echo.stats()
        assert stats["produced"] <= 500 + window
        assert (stats["produced"] - 500) * ITEM_SIZE <= DEFAULT_WINDOW_BYTES + ITEM_SIZE


async def test_dropping_a_stream_with_the_client_closes_the_generator(fabric: Fabric) -> None:
    _, url = fabric.sentinel()
    fabric.node(url)
    async with connect(url, token=fabric.token) as client:
        echo = client.proxy("echo@fame.fabric", Echo)
        async for item in echo.count(up_to=10**9):
            if item["i"] == 3:
                break
    # The client is gone entirely; its stream must not keep the agent busy.
    async with connect(url, token=fabric.token) as client:
        echo = client.proxy("echo@fame.fabric", Echo)
        with trio.fail_after(GUARD):
            while (await echo.stats())["closed"] < 1:  # noqa: ASYNC110 (polls another process)
                await trio.sleep(0.01)
