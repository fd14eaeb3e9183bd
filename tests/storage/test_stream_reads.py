"""A store read through a stream reads no more than the stream's credit lets it send."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import fame
from agents.storage_agent import RecordModel, StorageAgent
from fame._storage import _kv
from fame._storage._ops import Scan
from fame.storage import StorageProvider

RECORDS = 2_000
ADDRESS = "storage@local"


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The page size of every ``Scan`` message a store sends, in order."""
    sizes: list[int] = []

    def counting_scan(*args: Any, **kwargs: Any) -> Scan:
        scan = Scan(*args, **kwargs)
        sizes.append(scan.limit)
        return scan

    monkeypatch.setattr(_kv, "Scan", counting_scan)
    return sizes


def producer_waits_for_credit(node: fame.Node) -> bool:
    producers = list(node._switchboard.producers.values())
    return len(producers) == 1 and producers[0].credit._changed.statistics().tasks_waiting == 1


async def test_a_slowly_read_scan_fetches_small_pages(
    provider: StorageProvider, scans: list[int]
) -> None:
    async with fame.open_node(storage_provider=provider) as node:
        await node.spawn(StorageAgent, ADDRESS)
        store = await provider.get_kv_store(RecordModel, "storage_agent_namespace")
        await store.set_many({f"k{i:05}": RecordModel(f"v{i}") for i in range(RECORDS)})
        stream = node.open_stream(ADDRESS, "retrieve_all_values", {}, window=2)
        async with stream:
            first = await stream.__anext__()
            assert first[0] == "k00000"
            with trio.fail_after(30):
                while not producer_waits_for_credit(node):  # noqa: ASYNC110 (a worker thread reads)
                    await trio.sleep(0.001)
            # Two items of credit: one page of 16 rows was read, no more.
            assert scans == [16]
            rest = [key async for key, _ in stream]
        assert len(rest) == RECORDS - 1
        # How far pages grew depends on the reader's pace; never past the limit.
        assert max(scans) <= _kv.PAGE_SIZE
        assert sum(scans) >= RECORDS


async def test_a_slow_reader_gets_small_pages_again(
    provider: StorageProvider, scans: list[int], autojump_clock: Any
) -> None:
    store = await provider.get_kv_store(RecordModel, "slow_namespace")
    await store.set_many({f"k{i:04}": RecordModel("v") for i in range(100)})
    read = 0
    async for _ in store.scan():
        read += 1
        if read in (16, 48):
            await trio.sleep(1)  # the reader pauses at the end of a page
    assert read == 100
    # Pages 1 and 3 were consumed slowly, so each next page starts over at 16;
    # the others quickly, so each next one doubles.
    assert scans == [16, 16, 32, 16, 32]


async def test_keys_pages_grow_too(provider: StorageProvider, scans: list[int]) -> None:
    store = await provider.get_kv_store(RecordModel, "keys_namespace")
    await store.set_many({f"k{i:04}": RecordModel("v") for i in range(600)})
    keys = [key async for key in store.keys()]  # noqa: SIM118 (an async generator)
    assert len(keys) == 600
    assert scans == [16, 32, 64, 128, 256, 512]  # doubling, below PAGE_SIZE (16384)
