"""Stalled streams: a client that stops reading, a client killed mid-stream.

Real processes: ``fame sentinel`` and ``fame node`` (the storage agent, with
a ``stats`` window on its scans, :mod:`tests.reliability.stuck_agents`) on
encrypted SQLCipher files; real websockets on 127.0.0.1. A producer may
run at most a window ahead of its reader; one whose reader stopped is ended
by ``FAME_STREAM_IDLE_TIMEOUT``, one whose reader's link is lost at once.
The scenarios sample the resident memory of the processes that could
buffer (every 20 ms) and report the peak beside what an unbounded buffer
would have held. Deadlines here are guards against hanging, never
measurements; the figures are reported, not asserted.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import fame
from fame._agents._stream import DEFAULT_WINDOW
from fame._cli._settings import SettingError, stream_idle_timeout
from fame._protocol._inflight import InflightRequests

from .fame_services import FameServices, fame_env, run_fame, sampling_rss, wait_until
from .stuck_agents import ObservedStorageAgent

HERE = Path(__file__).parent
ADDRESS = "storage@fame.fabric"
AGENT = f"tests.reliability.stuck_agents:ObservedStorageAgent@{ADDRESS}"
RECORDS = 20_000
RECORD_SIZE = 2048  # 20,000 x 2 KiB: ~39 MiB if a stalled stream were buffered whole
IDLE = 3.0  # FAME_STREAM_IDLE_TIMEOUT of the stall scenario, seconds
GUARD = 60.0  # a broken recovery fails the test instead of hanging it
READ_BEFORE_STALL = 5
OTHER_CLIENTS = 4
MIB = 1024


def start_stuck_reader(url: str, token: str, log: Path) -> subprocess.Popen[bytes]:
    """``stuck_client.py``: read 5 records of the stream, print ``READING 5``, stop reading."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, str(HERE / "stuck_client.py"), url, ADDRESS, "5"],
            env=fame_env(FAME_ADMISSION_TOKEN=token),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_the_idle_timeout_setting_is_validated() -> None:
    assert stream_idle_timeout({}) == 300.0
    assert stream_idle_timeout({"FAME_STREAM_IDLE_TIMEOUT": " 2.5 "}) == 2.5
    for bad in ("0", "-1", "soon", "inf", "nan", "1e999"):
        with pytest.raises(
            SettingError,
            match=rf"^FAME_STREAM_IDLE_TIMEOUT: expected a positive number of seconds,"
            rf" got '{bad}'$",
        ):
            stream_idle_timeout({"FAME_STREAM_IDLE_TIMEOUT": bad})


async def test_an_idle_producer_gives_up_and_tells_a_reader_that_comes_back(
    autojump_clock: Any,
) -> None:
    with pytest.raises(ValueError, match="stream_idle_timeout must be > 0"):
        async with fame.open_node(stream_idle_timeout=0):
            pass
    async with (
        fame.storage.open_storage(fame.storage.StorageConfig()) as storage,
        fame.open_node(storage_provider=storage, stream_idle_timeout=7) as node,
    ):
        agent = await node.spawn(ObservedStorageAgent, ADDRESS)
        await agent.fill(count=100, size=1)
        stream = node.open_stream(ADDRESS, "retrieve_all_values", {}, window=4, timeout=3600)
        await stream.__anext__()
        await trio.sleep(6.9)
        assert len(node._switchboard.producers) == 1
        await trio.sleep(0.2)
        assert node._switchboard.producers == {}
        read = 1
        with pytest.raises(fame.RemoteError, match=r"closed stream retrieve_all_values\(\)"):
            while True:
                await stream.__anext__()
                read += 1
        assert read == 4  # the window that was sent, then the reason


def test_a_bad_idle_timeout_stops_the_node_with_one_line(tmp_path: Path) -> None:
    env = fame_env(FAME_STREAM_IDLE_TIMEOUT="soon", FAME_ADMISSION_TOKEN="t" * 20)
    done = run_fame(tmp_path, "sentinel", env=env)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "fame sentinel: FAME_STREAM_IDLE_TIMEOUT: expected a positive number of seconds, got 'soon'"
    ]


def test_a_lost_caller_link_hands_back_exactly_its_open_requests() -> None:
    table: InflightRequests[str] = InflightRequests()
    table.forwarded("agent", "_reply@dead", 1, caller="dead-link", to="storage@f")
    table.forwarded("agent", "_reply@dead", 2, caller="dead-link", to="storage@f")
    table.forwarded("other", "_reply@dead", 3, caller="dead-link", to="echo@f")
    table.forwarded("agent", "_reply@alive", 1, caller="alive-link", to="storage@f")
    table.finished("agent", "_reply@dead", 2)  # answered: nothing to cancel
    assert sorted(table.abandoned("dead-link")) == [
        ("agent", "storage@f", ("_reply@dead", 1)),
        ("other", "echo@f", ("_reply@dead", 3)),
    ]
    assert table.abandoned("dead-link") == []
    # Forgotten on the serving side too: the agent's link closing later tells only the living.
    assert table.lost("agent") == [("_reply@alive", 1)]
    assert table.abandoned("alive-link") == []


async def test_a_client_that_stops_reading_holds_no_memory_and_is_timed_out(
    fame_services: Callable[..., FameServices], reliability_report: Any
) -> None:
    fabric = fame_services("stall", AGENT, fame_init=True, FAME_STREAM_IDLE_TIMEOUT=f"{IDLE:g}")
    async with fame.connect(fabric.url, token=fabric.token, default_timeout=GUARD) as client:
        agent = client.proxy(ADDRESS, ObservedStorageAgent)
        assert await agent.fill(count=RECORDS, size=RECORD_SIZE) == RECORDS
        base = {"sentinel": fabric.sentinel.rss_kib(), "node": fabric.node.rss_kib()}
        pids = {"sentinel": fabric.sentinel.pid, "node": fabric.node.pid}
        async with (
            sampling_rss(pids) as peaks,
            fame.connect(fabric.url, token=fabric.token, default_timeout=GUARD) as stalled_client,
        ):
            stalled = stalled_client.proxy(ADDRESS, ObservedStorageAgent)
            stream = stalled.retrieve_all_values().__aiter__()
            for i in range(READ_BEFORE_STALL):
                key, _ = await stream.__anext__()
                assert key == f"r{i:07d}"
            stalled_at = trio.current_time()

            # The reader stopped without cancelling. Wait for the event "the producer
            # blocks on credit": only then has it run as far ahead as it ever will.
            stats: dict[str, int] = {}

            async def waiting_for_credit() -> bool:
                nonlocal stats
                stats = await agent.stats()
                return bool(stats["waiting_for_credit"] == 1)

            await wait_until(waiting_for_credit, "the producer never waited for credit", GUARD)
            held_back = stats["produced"]
            assert held_back <= DEFAULT_WINDOW + 1, stats
            assert (stats["open_scans"], stats["producers"]) == (1, 1), stats

            # Meanwhile everybody else is served: calls and whole streams, on the same
            # sentinel and the same agent, from other clients.
            outcomes: Counter[str] = Counter()

            async def other_client(n: int) -> None:
                async with fame.connect(fabric.url, token=fabric.token) as other:
                    proxy = other.proxy(ADDRESS, ObservedStorageAgent)
                    for i in range(50):
                        key = f"other-{n}-{i:03d}"
                        await proxy.store_value(key=key, value=key)
                        assert (await proxy.retrieve_value(key=key)).value == key
                        outcomes["calls"] += 2
                    read = 0
                    async with proxy.retrieve_all_values() as values:
                        async for _ in values:
                            read += 1
                            if read == 2000:
                                break
                    assert read == 2000
                    outcomes["streams"] += 1
                    outcomes["items"] += read

            with trio.fail_after(GUARD):
                async with trio.open_nursery() as nursery:
                    for n in range(OTHER_CLIENTS):
                        nursery.start_soon(other_client, n)
            assert outcomes["calls"] == OTHER_CLIENTS * 100
            assert outcomes["streams"] == OTHER_CLIENTS

            # The stalled stream's producer is ended by the idle timeout: its task
            # ends and the storage scan is closed (the agent's generator finished).
            async def released() -> bool:
                now = await agent.stats()
                return bool(now["open_scans"] == 0 and now["producers"] == 0)

            await wait_until(released, "the stalled producer was not released")
            released_after = trio.current_time() - stalled_at
            # The timeout released it, nothing earlier (it started when credit ran out,
            # a little before the reader stopped).
            assert released_after >= IDLE - 1, released_after

            # Reading on: what was already sent, then an error that says why it ended.
            buffered = 0
            with pytest.raises(
                fame.RemoteError, match=r"no credit for 3 s \(stream idle timeout\)"
            ):
                while True:
                    await stream.__anext__()
                    buffered += 1
            # The whole window was sent, and nothing more was pulled from the
            # generator: the producer waits for credit before it asks for an item.
            assert READ_BEFORE_STALL + buffered == DEFAULT_WINDOW
            assert held_back == DEFAULT_WINDOW
    growth = {name: (peaks[name] - base[name]) / MIB for name in base}
    unbounded_mib = RECORDS * RECORD_SIZE / MIB / MIB
    # Anything near the whole stream would be ~39 MiB; a window is 64 x 2 KiB.
    assert growth["sentinel"] < unbounded_mib / 2, growth
    assert growth["node"] < unbounded_mib / 2, growth
    reliability_report(
        records=RECORDS,
        unbuffered_stream_mib=round(unbounded_mib, 1),
        records_produced_for_stalled_reader=held_back,
        records_buffered_at_reader=buffered,
        peak_rss_sentinel_mib=round(peaks["sentinel"] / MIB, 1),
        peak_rss_node_mib=round(peaks["node"] / MIB, 1),
        rss_growth_sentinel_mib=round(growth["sentinel"], 1),
        rss_growth_node_mib=round(growth["node"], 1),
        calls_by_others_ok=outcomes["calls"],
        streams_by_others_ok=outcomes["streams"],
        idle_timeout_s=IDLE,
        producer_released_after_s=round(released_after, 2),
    )


async def test_a_client_killed_while_reading_releases_the_producer_at_once(
    fame_services: Callable[..., FameServices], tmp_path: Path, reliability_report: Any
) -> None:
    # A long idle timeout: if the producer is released, the lost link did it.
    idle = 120.0
    fabric = fame_services("killed", AGENT, fame_init=True, FAME_STREAM_IDLE_TIMEOUT=f"{idle:g}")
    async with fame.connect(fabric.url, token=fabric.token, default_timeout=GUARD) as client:
        agent = client.proxy(ADDRESS, ObservedStorageAgent)
        assert await agent.fill(count=2000, size=64) == 2000
        log = fabric.root / "run" / "stuck-client.log"
        reader = start_stuck_reader(fabric.url, fabric.token, log)
        try:

            async def reading() -> bool:
                assert reader.poll() is None, log.read_text()
                return "READING 5" in log.read_text()

            await wait_until(reading, "the client did not start reading")

            async def stalled() -> bool:
                now = await agent.stats()
                return bool(now["open_scans"] == 1 and now["producers"] == 1)

            await wait_until(stalled, "the client's stream is not open")
            held_back = (await agent.stats())["produced"]
        finally:
            reader.kill()
            reader.wait()
        killed_at = trio.current_time()

        async def released() -> bool:
            now = await agent.stats()
            return bool(now["open_scans"] == 0 and now["producers"] == 0)

        await wait_until(released, "the dead client's producer was not released")
        released_after = trio.current_time() - killed_at
        assert released_after < idle  # (implied by GUARD < idle: the cancel did it)
        stats = await agent.stats()
        assert stats["produced"] == held_back  # nothing more was produced for nobody
        assert stats["closed_scans"] == 1
    reliability_report(
        records_produced_for_dead_reader=held_back,
        idle_timeout_s=idle,
        producer_released_after_kill_s=round(released_after, 3),
    )


async def test_a_killed_client_releases_a_stream_served_by_the_sentinel_itself(
    tmp_path: Path, suite_secrets: Any, reliability_report: Any
) -> None:
    """The same, for an agent on the sentinel's own node (no link between them to lose)."""
    token = secrets.token_urlsafe(32)
    suite_secrets.add("token", token)
    idle = 120.0
    # The counters are per process and this one runs other tests too: count from here.
    closed_before = ObservedStorageAgent.closed_scans
    produced_before = ObservedStorageAgent.produced
    async with (
        fame.storage.open_storage(fame.storage.StorageConfig()) as storage,
        fame.open_node(storage_provider=storage, stream_idle_timeout=idle) as node,
        fame.open_sentinel(port=0, trust_on_first_use=True, token=token, node=node) as sentinel,
    ):
        agent = await node.spawn(ObservedStorageAgent, ADDRESS)
        assert await agent.fill(count=2000, size=64) == 2000
        url = f"ws://127.0.0.1:{sentinel.port}/"
        log = tmp_path / "stuck-client.log"
        reader = start_stuck_reader(url, token, log)
        try:

            async def stalled() -> bool:
                # Stalled means the producer waits for credit: before that it may
                # still be filling its window, and held_back would be too low.
                assert reader.poll() is None, log.read_text()
                producers = list(node._switchboard.producers.values())
                return (
                    "READING 5" in log.read_text()
                    and len(producers) == 1
                    and producers[0].credit._changed.statistics().tasks_waiting > 0
                )

            await wait_until(stalled, "the client's stream is not open")
            assert ObservedStorageAgent.open_scans == 1
            held_back = (await agent.stats())["produced"] - produced_before
        finally:
            reader.kill()
            reader.wait()
        killed_at = trio.current_time()

        async def released() -> bool:
            return not node._switchboard.producers and ObservedStorageAgent.open_scans == 0

        await wait_until(released, "the dead client's producer was not released")
        released_after = trio.current_time() - killed_at
        assert ObservedStorageAgent.closed_scans == closed_before + 1
        assert (await agent.stats())["produced"] - produced_before == held_back
        assert held_back <= DEFAULT_WINDOW + 1
    reliability_report(
        records_produced_for_dead_reader=held_back,
        idle_timeout_s=idle,
        producer_released_after_kill_s=round(released_after, 3),
    )
