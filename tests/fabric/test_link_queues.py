"""One slow link never delays the others: real websockets to a sentinel on 127.0.0.1.

A peer that reads nothing used to block whoever sent to it (the sentinel
waited for room inside the sender's reader) and to pile up megabytes per
link. Now a link's queue is bounded in bytes: requests for a full link are
refused ``overloaded`` at once, answers to a link whose peer does not read
are queued up to a hard cap, and such a link is closed as stalled.
"""

from __future__ import annotations

import secrets
from collections import Counter

import trio
from trio_websocket import ConnectionClosed

import fame
import fame.errors
from fame._fabric._link_queue import LinkLimits
from fame._fabric.sentinel._server import open_sentinel
from fame._wire._schema import Error, Reply

from .fabric_agents import Echo
from .raw_link import open_raw_link

MIB = 1 << 20
BLOB = 256 * 1024


class Blob(fame.BaseAgent):
    max_concurrency = 16

    @fame.operation
    async def blob(self, size: int) -> str:
        return "x" * size


async def test_a_client_that_reads_no_answers_is_closed_and_others_are_served() -> None:
    token = secrets.token_urlsafe(16)
    limits = LinkLimits(buffer=MIB, stall_grace=3.0)
    # A hang guard: the teardown alone may take 20 s on a loaded machine (agents
    # drain what the greedy client left queued, bounded by the nodes' stop_timeout).
    with trio.fail_after(120):
        async with (
            open_sentinel(port=0, trust_on_first_use=True, token=token, limits=limits) as sentinel,
            fame.open_node() as node,
        ):
            url = f"ws://127.0.0.1:{sentinel.port}/"
            await node.spawn(Blob, "blob@fame.fabric")
            await node.spawn(Echo, "echo@fame.fabric")
            async with (
                fame.attach(node, url, token=token),
                fame.connect(url, token=token) as client,
                open_raw_link(url, token) as greedy,
            ):
                conn = sentinel.routes.link_of(greedy.path)
                assert conn is not None
                # 60 answers of 512 KiB (30 MiB) for a peer that reads none of them.
                for _ in range(60):
                    try:
                        await greedy.request("blob@fame.fabric", "blob", size=2 * BLOB)
                    except ConnectionClosed:
                        break  # closed as stalled already: what this test waits for
                await conn.out.wait_over_budget()
                # Meanwhile everyone else is served, big answers included.
                echo, blob = client.proxy("echo@fame.fabric"), client.proxy("blob@fame.fabric")
                for i in range(50):
                    assert await echo.say(text=f"hi {i}") == f"hi {i}"
                    assert len(await blob.blob(size=BLOB // 4)) == BLOB // 4
                await conn.detached.wait()
                assert conn.closing is not None and conn.closing.startswith("link stalled")
                # What the sentinel held for it stayed within the link's hard cap.
                assert conn.out.peak <= conn.out.hard_cap
                assert sentinel.router.stalled == 1
                assert sentinel.routes.link_of(greedy.path) is None
                # And the others still are served after it went.
                assert await echo.say(text="after") == "after"


async def test_requests_for_a_link_that_reads_nothing_are_refused_at_once() -> None:
    token = secrets.token_urlsafe(16)
    # A long grace: the sink stays attached and full for the whole test.
    limits = LinkLimits(buffer=MIB, stall_grace=600.0)
    with trio.fail_after(120):
        async with (
            open_sentinel(port=0, trust_on_first_use=True, token=token, limits=limits) as sentinel,
            fame.open_node() as node,
        ):
            url = f"ws://127.0.0.1:{sentinel.port}/"
            await node.spawn(Echo, "echo@fame.fabric")
            async with (
                fame.attach(node, url, token=token),
                open_raw_link(url, token, node=True) as sink,
                open_raw_link(url, token) as sender,
            ):
                await sink.bind("sink@fame.fabric")
                # The sink reads nothing from here on. One link sends it 256 KiB
                # requests, each followed by a call to an agent elsewhere.
                to_sink: set[int] = set()
                to_echo: set[int] = set()
                seen: Counter[str] = Counter()
                echo_after_overload = 0
                async with trio.open_nursery() as nursery:

                    async def send() -> None:
                        for i in range(200):
                            to_sink.add(
                                await sender.request("sink@fame.fabric", "x", pad="x" * BLOB)
                            )
                            to_echo.add(
                                await sender.request("echo@fame.fabric", "say", text=str(i))
                            )

                    nursery.start_soon(send)
                    answered: set[int] = set()
                    async for envelope in sender.envelopes():
                        corr = envelope.corr
                        assert corr is not None
                        frame = envelope.frame
                        if corr in to_echo:
                            assert isinstance(frame, Reply)
                            answered.add(corr)
                            if seen["overloaded"]:
                                echo_after_overload += 1
                        else:
                            assert corr in to_sink and isinstance(frame, Error)
                            assert frame.kind == fame.errors.Overloaded.kind
                            seen[frame.kind] += 1
                        if len(answered) == 200:
                            break
                assert seen["overloaded"] > 0
                # The sender's reader kept serving its other traffic while the sink was full.
                assert echo_after_overload > 0
                assert sentinel.router.overloaded == seen["overloaded"]
                sink_conn = sentinel.routes.link_of(sink.path)
                assert sink_conn is not None and sink_conn.closing is None
                # Requests were refused, not queued: the sink's queue is within budget + one.
                assert sink_conn.out.peak <= limits.buffer + BLOB + 4096
