"""Streams that grant no credit, and a flood of requests: nobody starves, SIGTERM still stops.

Real processes: ``fame sentinel`` and ``fame node`` with the storage agent
on encrypted SQLCipher files, real websockets on 127.0.0.1. Attackers are
admitted clients that open streaming requests granting no credit (a
``Request`` with ``credit=0`` sent by hand) as fast as they can. Before
the fix each such stream fetched a 500-record page at once, ran outside
the agent's concurrency, and the node grew by gigabytes and ignored
SIGTERM. Deadlines are hang guards, never speed assertions; the figures
(stop time, RSS) are reported, not asserted.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import trio

import fame
from agents.storage_agent import StorageAgent
from fame._agents._switchboard import random_corr
from fame._wire._schema import Envelope, Request

from .fame_services import STORAGE_AGENT, FameServices

ADDRESS = "storage@fame.fabric"
MANY_STREAMS_AGENT = f"tests.reliability.isolation_agents:UncappedStorageAgent@{ADDRESS}"
GUARD = 60.0  # a "does not hang" guard, never a speed assertion
RECORDS = 600
STOPPED = "fame node: stopped, storage closed"


def no_credit_stream(client: fame.Node) -> Envelope:
    """``retrieve_all_values`` asked for by hand, granting no credit at all."""
    request = Request("retrieve_all_values", {}, True, 0, None)
    return Envelope(0, ADDRESS, 0, request, client.reply_address, random_corr())


async def fill(storage: fame.Proxy[StorageAgent]) -> None:
    async with trio.open_nursery() as nursery:
        for i in range(RECORDS):
            nursery.start_soon(storage.store_value, f"k{i:05}", "v" * 200)


async def open_no_credit_streams(client: fame.Node, count: int) -> None:
    for _ in range(count):
        await client._switchboard.route(no_credit_stream(client))


def stop_node(services: FameServices) -> tuple[int | None, float]:
    """SIGTERM the node; its exit status and how long it took (seconds)."""
    start = time.monotonic()
    services.node.signal(signal.SIGTERM)
    assert services.node.proc is not None
    status = services.node.proc.wait(GUARD)
    return status, time.monotonic() - start


async def test_a_flood_of_no_credit_streams_starves_no_one_and_sigterm_stops_the_node(
    fame_services: Callable[..., FameServices], reliability_report: Any
) -> None:
    services = fame_services("flood", MANY_STREAMS_AGENT, sentinel_storage="memory")
    async with fame.connect(services.url, token=services.token) as client:
        storage = client.proxy(ADDRESS, StorageAgent).with_timeout(GUARD)
        await fill(storage)
        async with fame.connect(services.url, token=services.token) as attacker:
            # Thousands of open streams that will never be read (this agent lets one
            # caller open any number), then the legitimate client's calls.
            await open_no_credit_streams(attacker, 3_000)
            with trio.fail_after(GUARD):
                while (await storage.retrieve_value(key="k00000")) is None:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                for i in range(7):
                    record = await storage.store_value(key=f"legit{i}", value="ok")
                    assert record.value == "ok"
                count = 0
                async with storage.stream(StorageAgent.retrieve_all_values) as stream:
                    async for _key, _record in stream:
                        count += 1
                assert count == RECORDS + 7
            rss_mib = services.node.rss_kib() / 1024
            # A flood of requests still arriving while the node is told to stop.
            async with trio.open_nursery() as flood:
                for _ in range(4):
                    flood.start_soon(open_no_credit_streams, attacker, 2_000)
                status, took = await trio.to_thread.run_sync(stop_node, services)
                flood.cancel_scope.cancel()
    assert status == 0, services.node.log_tail()
    assert STOPPED in services.node.log_lines(), services.node.log_tail()
    assert services.node.tracebacks() == [], services.node.log_tail()
    # Closed cleanly: the last connection checkpointed and removed its WAL.
    assert list(services.node_data.glob("*-wal")) == []
    reliability_report(
        scenario="a flood of no-credit streams, then SIGTERM",
        open_streams=3_000,
        node_rss_mib=round(rss_mib, 1),
        sigterm_to_exit_s=round(took, 2),
    )


async def test_one_caller_gets_a_few_streams_and_the_others_all_their_calls(
    fame_services: Callable[..., FameServices], reliability_report: Any
) -> None:
    services = fame_services("capped", STORAGE_AGENT, sentinel_storage="memory")
    async with fame.connect(services.url, token=services.token) as client:
        storage = client.proxy(ADDRESS, StorageAgent).with_timeout(GUARD)
        await fill(storage)
        async with fame.connect(services.url, token=services.token) as attacker:
            await open_no_credit_streams(attacker, 3_000)
            with trio.fail_after(GUARD):
                # The attacker holds its 8 streams; everything else was refused
                # quota_exceeded, and the legitimate client is served meanwhile.
                while attacker._switchboard.dropped_answers < 3_000 - 8:
                    record = await storage.store_value(key="legit", value="ok")
                    assert record.value == "ok"
                    await trio.sleep(0.01)
                count = 0
                async with storage.stream(StorageAgent.retrieve_all_values) as stream:
                    async for _ in stream:
                        count += 1
                assert count == RECORDS + 1
            rss_mib = services.node.rss_kib() / 1024
        status, took = await trio.to_thread.run_sync(stop_node, services)
    assert status == 0, services.node.log_tail()
    assert STOPPED in services.node.log_lines(), services.node.log_tail()
    assert list(services.node_data.glob("*-wal")) == []
    reliability_report(
        scenario="3,000 no-credit streams from one caller (8 allowed)",
        node_rss_mib=round(rss_mib, 1),
        sigterm_to_exit_s=round(took, 2),
    )
