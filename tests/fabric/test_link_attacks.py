"""Two attacks on a sentinel's links, against real processes on 127.0.0.1.

1. A client asks for 400 answers of 900 KB and reads none of them.
2. Nodes that read nothing are fed 1 MB requests by a flooding client.

Either used to grow the sentinel by hundreds of MiB and (1) starved every
other client. Here a legitimate client's calls all succeed meanwhile, and
the sentinel's resident memory stays within what its link budgets allow.
The sentinel's RSS is sampled after each legitimate call (no timing).
"""

from __future__ import annotations

from collections import Counter
from contextlib import AsyncExitStack

import trio
from trio_websocket import ConnectionClosed

import fame
import fame.errors
from fame._fabric._client import connect
from fame._fabric._link_queue import DEFAULT_LINK_BUFFER
from fame._wire._schema import Envelope, Request

from .conftest import Fabric
from .raw_link import open_raw_link

MIB = 1 << 20
GUARD = 120.0  # a hang guard on a shared machine, not a speed assertion
LEGIT_CALLS = 200
FLOOD_CALLS = 10  # per flooding task; each may take its whole 2 s deadline (retried)


async def test_a_client_reading_no_answers_starves_nobody_and_costs_bounded_memory(
    fabric: Fabric,
) -> None:
    sentinel, url = fabric.sentinel()
    fabric.node(url)
    base = sentinel.rss_kib() * 1024
    peak = base
    with trio.fail_after(GUARD):
        async with (
            connect(url, token=fabric.token) as client,
            open_raw_link(url, fabric.token) as greedy,
        ):
            # 400 one-item streams of 900 KB each: 360 MB for a peer that reads nothing.
            for corr in range(1, 401):
                frame = Request(
                    "count", {"up_to": 1, "size": 900_000}, stream=True, credit=1, timeout_ms=60_000
                )
                try:
                    await greedy.send(
                        Envelope(0, "echo@fame.fabric", 1, frame, greedy.reply_to, corr)
                    )
                except ConnectionClosed:
                    break  # closed as stalled already
            echo = client.proxy("echo@fame.fabric")
            for i in range(LEGIT_CALLS):
                assert await echo.say(text=f"call {i}") == f"call {i}"
                peak = max(peak, sentinel.rss_kib() * 1024)
            line = await trio.to_thread.run_sync(sentinel.wait_err, "<link", "link stalled")
            assert greedy.path in line
            assert await echo.say(text="after") == "after"
            peak = max(peak, sentinel.rss_kib() * 1024)
    # At most one link's hard cap (twice its budget) held for it, plus the interpreter's slack.
    assert (peak - base) / MIB < 2 * DEFAULT_LINK_BUFFER / MIB + 32, (base, peak)


async def test_nodes_that_read_nothing_cost_their_budget_and_starve_nobody(
    fabric: Fabric,
) -> None:
    sinks = 4
    sentinel, url = fabric.sentinel()
    fabric.node(url)
    base = sentinel.rss_kib() * 1024
    peak = base
    outcomes: Counter[str] = Counter()
    with trio.fail_after(GUARD):
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(connect(url, token=fabric.token))
            flooder = await stack.enter_async_context(connect(url, token=fabric.token))
            for n in range(sinks):
                sink = await stack.enter_async_context(open_raw_link(url, fabric.token, node=True))
                await sink.bind(f"sink{n}@fame.fabric")  # and reads nothing from here on
            payload = "x" * 1_000_000
            echo = client.proxy("echo@fame.fabric")
            flooded = trio.Event()

            async def flood(address: str) -> None:
                proxy = flooder.proxy(address).with_timeout(2)
                for _ in range(FLOOD_CALLS):
                    try:
                        await proxy.say(text=payload)
                        outcomes["answered"] += 1  # impossible: the sink reads nothing
                    except (fame.errors.Overloaded, fame.DeadlineExceeded) as exc:
                        outcomes[type(exc).__name__] += 1
                if sum(outcomes.values()) == sinks * 5 * FLOOD_CALLS:
                    flooded.set()

            async with trio.open_nursery() as nursery:
                for n in range(sinks):
                    for _ in range(5):
                        nursery.start_soon(flood, f"sink{n}@fame.fabric")
                calls = 0
                while not flooded.is_set() or calls < LEGIT_CALLS:
                    assert await echo.say(text=f"call {calls}") == f"call {calls}"
                    calls += 1
                    peak = max(peak, sentinel.rss_kib() * 1024)
    assert outcomes["answered"] == 0, outcomes
    # Per sink, its budget and one message at most; plus the interpreter's slack.
    bound = sinks * (DEFAULT_LINK_BUFFER + MIB) / MIB + 32
    assert (peak - base) / MIB < bound, (base, peak, bound)
