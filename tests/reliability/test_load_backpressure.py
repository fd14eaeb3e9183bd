"""Plain load, no attack: many more callers than the storage agent's mailbox holds, no errors.

Real processes: ``fame sentinel`` and ``fame node`` with the storage agent
(``max_concurrency = 16``, the default mailbox of 1,024) on encrypted
SQLCipher files. Four clients in this process run 512 callers each, every
caller storing values back to back. Before, the agent's node answered
``mailbox_full`` as soon as its mailbox was full (hundreds of thousands of
errors at 4 x 512); now a request waits in the node's waiting room and an
``overloaded`` answer is retried within the caller's deadline. The
throughput is reported, not asserted.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import trio

import fame
from agents.storage_agent import StorageAgent

from .fame_services import STORAGE_AGENT, FameServices

ADDRESS = "storage@fame.fabric"
CLIENTS = 4
CALLERS = 512
STORES = 5  # per caller
GUARD = 120.0  # a "does not hang" guard, never a speed assertion


async def test_many_callers_through_a_sentinel_get_no_errors(
    fame_services: Callable[..., FameServices], reliability_report: Any
) -> None:
    services = fame_services("load", STORAGE_AGENT, sentinel_storage="memory")
    errors: Counter[str] = Counter()
    done = 0

    async def caller(storage: fame.Proxy[StorageAgent], client: int, n: int) -> None:
        nonlocal done
        for i in range(STORES):
            try:
                record = await storage.store_value(key=f"c{client}-{n}-{i}", value="v" * 100)
            except fame.errors.FameError as exc:
                errors[type(exc).__name__] += 1
            else:
                assert record.value == "v" * 100
                done += 1

    async def client(number: int) -> None:
        async with fame.connect(services.url, token=services.token) as node:
            storage = node.proxy(ADDRESS, StorageAgent).with_timeout(GUARD)
            async with trio.open_nursery() as callers:
                for n in range(CALLERS):
                    callers.start_soon(caller, storage, number, n)

    start = time.monotonic()
    with trio.fail_after(GUARD * 2):
        async with trio.open_nursery() as clients:
            for number in range(CLIENTS):
                clients.start_soon(client, number)
    took = time.monotonic() - start
    assert dict(errors) == {}
    assert done == CLIENTS * CALLERS * STORES
    reliability_report(
        scenario=f"{CLIENTS} clients x {CALLERS} callers storing through a sentinel",
        stores=done,
        errors=sum(errors.values()),
        stores_per_s=round(done / took),
        node_peak_rss_mib=round(services.node.rss_kib() / 1024, 1),
    )
