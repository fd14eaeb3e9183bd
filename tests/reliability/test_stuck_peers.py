"""Slow and stuck peers: a client that stops reading, a client killed mid-stream, a frozen node.

Real processes: ``fame sentinel`` and ``fame node`` (the storage agent, with
a ``stats`` window on its scans, :mod:`tests.reliability.stuck_agents`) on
encrypted SQLCipher files, or the fabric test scripts; real websockets on
127.0.0.1. Each scenario samples the resident memory of the processes that
could buffer (every 20 ms) and reports the peak beside what an unbounded
buffer would have held. Deadlines here are guards against hanging, never
measurements; the figures are reported, not asserted.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

# The fabric suite's child processes (a sentinel with a 0.5 s heartbeat, Echo nodes).
from fabric.conftest import Fabric
from fabric.fabric_agents import Echo

import fame
from fame._client import connect
from fame._inflight import InflightRequests
from fame._sentinel import DEFAULT_QUEUE
from fame._stream import DEFAULT_WINDOW, idle_timeout_from_env
from fame._transport import SentinelUnreachable

from .fame_services import FameServices, fame_env, rss_kib
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


@pytest.fixture
def services(tmp_path: Path, suite_secrets: Any) -> Iterator[Callable[..., FameServices]]:
    """``services(name, SETTING=value, ...)``: a sentinel and the observed storage agent, up."""
    started: list[FameServices] = []

    def make(name: str, **settings: str) -> FameServices:
        made = FameServices(tmp_path / name, suite_secrets, AGENT, **settings)
        started.append(made)
        made.up()
        return made

    try:
        yield make
    finally:
        for made in started:
            made.close()


@asynccontextmanager
async def sampling_rss(pids: dict[str, int]) -> AsyncIterator[dict[str, int]]:
    """Sample the RSS of ``pids`` every 20 ms while the block runs; yields the peaks (KiB)."""
    peaks = {name: rss_kib(pid) for name, pid in pids.items()}

    async def sample() -> None:
        while True:
            for name, pid in pids.items():
                peaks[name] = max(peaks[name], rss_kib(pid))
            await trio.sleep(0.02)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        yield peaks
        nursery.cancel_scope.cancel()
    for name, pid in pids.items():
        peaks[name] = max(peaks[name], rss_kib(pid))


async def wait_for(predicate: Callable[[], Any], what: str) -> float:
    """Poll an async predicate (every 50 ms, up to GUARD s); return the seconds it took."""
    start = trio.current_time()
    with trio.move_on_after(GUARD):
        while not await predicate():  # noqa: ASYNC110 (polls another process)
            await trio.sleep(0.05)
        return trio.current_time() - start
    raise AssertionError(f"{what}: not within {GUARD:g} s")


def test_the_idle_timeout_setting_is_validated() -> None:
    assert idle_timeout_from_env({}) == 300.0
    assert idle_timeout_from_env({"FAME_STREAM_IDLE_TIMEOUT": " 2.5 "}) == 2.5
    for bad in ("0", "-1", "soon", "inf", "nan"):
        with pytest.raises(ValueError, match=r"^FAME_STREAM_IDLE_TIMEOUT: expected a number"):
            idle_timeout_from_env({"FAME_STREAM_IDLE_TIMEOUT": bad})


async def test_an_idle_producer_gives_up_and_tells_a_reader_that_comes_back(
    autojump_clock: Any,
) -> None:
    with pytest.raises(ValueError, match="stream_idle_timeout must be > 0"):
        async with fame.open_node(stream_idle_timeout=0):
            pass
    async with (
        fame.open_storage(fame.StorageConfig()) as storage,
        fame.open_node(storage_provider=storage, stream_idle_timeout=7) as node,
    ):
        agent = await node.spawn(ObservedStorageAgent, ADDRESS)
        await agent.fill(count=100, size=1)
        stream = node.open_stream(ADDRESS, "retrieve_all_values", {}, window=4, timeout=3600)
        await stream.__anext__()
        await trio.sleep(6.9)
        assert len(node._producers) == 1
        await trio.sleep(0.2)
        assert node._producers == {}
        read = 1
        with pytest.raises(fame.RemoteError, match=r"closed stream retrieve_all_values\(\)"):
            while True:
                await stream.__anext__()
                read += 1
        assert read == 4  # the window that was sent, then the reason


def test_a_bad_idle_timeout_stops_the_node_with_one_line(tmp_path: Path) -> None:
    env = {**fame_env(), "FAME_STREAM_IDLE_TIMEOUT": "soon", "FAME_ADMISSION_TOKEN": "t" * 20}
    done = subprocess.run(
        [sys.executable, "-m", "fame._cli.fame", "sentinel"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "fame sentinel: FAME_STREAM_IDLE_TIMEOUT: expected a number of seconds greater than 0,"
        " got 'soon'"
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
    services: Callable[..., FameServices], reliability_report: Any
) -> None:
    fabric = services("stall", FAME_STREAM_IDLE_TIMEOUT=f"{IDLE:g}")
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
            # The reader stopped without cancelling. Give the producer every chance to
            # run ahead (many round trips through both links), then count.
            for _ in range(20):
                stats = await agent.stats()
                await trio.sleep(0.02)
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

            await wait_for(released, "the stalled producer was not released")
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
            # The whole window was sent; the generator holds one more item in hand.
            assert READ_BEFORE_STALL + buffered == DEFAULT_WINDOW
            assert held_back == DEFAULT_WINDOW + 1
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
    services: Callable[..., FameServices], tmp_path: Path, reliability_report: Any
) -> None:
    # A long idle timeout: if the producer is released, the lost link did it.
    idle = 120.0
    fabric = services("killed", FAME_STREAM_IDLE_TIMEOUT=f"{idle:g}")
    async with fame.connect(fabric.url, token=fabric.token, default_timeout=GUARD) as client:
        agent = client.proxy(ADDRESS, ObservedStorageAgent)
        assert await agent.fill(count=2000, size=64) == 2000
        log = tmp_path / "killed" / "run" / "stuck-client.log"
        with open(log, "wb") as out:  # noqa: ASYNC230 (a local file, opened once)
            reader = subprocess.Popen(  # noqa: ASYNC220 (started once, polled below)
                [sys.executable, str(HERE / "stuck_client.py"), fabric.url, ADDRESS, "5"],
                env={**fame_env(), "FAME_ADMISSION_TOKEN": fabric.token},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:

            async def reading() -> bool:
                assert reader.poll() is None, log.read_text()
                return "READING 5" in log.read_text()

            await wait_for(reading, "the client did not start reading")

            async def stalled() -> bool:
                now = await agent.stats()
                return bool(now["open_scans"] == 1 and now["producers"] == 1)

            await wait_for(stalled, "the client's stream is not open")
            held_back = (await agent.stats())["produced"]
        finally:
            reader.kill()
            reader.wait()
        killed_at = trio.current_time()

        async def released() -> bool:
            now = await agent.stats()
            return bool(now["open_scans"] == 0 and now["producers"] == 0)

        await wait_for(released, "the dead client's producer was not released")
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


FLOODERS = 32
FLOOD_PAYLOAD = 256 * 1024  # bytes per request sent towards the frozen node
FLOOD_AFTER_DETECTION = 2.0  # seconds callers keep sending once the node is unrouted
NAPS = 4


async def test_a_frozen_node_is_declared_dead_unrouted_and_comes_back(
    tmp_path: Path, suite_secrets: Any, reliability_report: Any
) -> None:
    """SIGSTOP a node: its TCP connection stays open but it answers nothing.

    ``tests/fabric/test_fabric_lifecycle.py::test_dead_node_is_unrouted_by_heartbeat_then_comes_back``
    shows the node is unrouted and comes back. Here, with figures: requests in
    flight fail at once when it is declared dead, callers flooding it get
    ``NoRoute`` right away afterwards, the sentinel's memory stays flat while
    they do, and traffic to another node never notices.
    """
    fabric = Fabric(tmp_path, suite_secrets)
    try:
        sentinel, url = fabric.sentinel()  # heartbeat 0.5 s: dead after 3 silent beats
        frozen, node_id, _ = fabric.node(url)
        fabric.node(url, "--no-spawn", "--pool", "other@fame.fabric")
        async with (
            connect(url, token=fabric.token) as client,
            connect(url, token=fabric.token) as flooder,
            connect(url, token=fabric.token) as bystander_client,
        ):
            echo = client.proxy("echo@fame.fabric", Echo).with_timeout(3600)
            # One call at a time per agent: the naps queue at sleepy, the stream runs at echo.
            sleepy = client.proxy("sleepy@fame.fabric", Echo).with_timeout(3600)
            other = bystander_client.proxy("other@fame.fabric", Echo).with_timeout(GUARD)
            assert await echo.say(text="alive") == "alive"
            base = sentinel.rss_kib()
            outcomes: Counter[str] = Counter()
            in_flight: list[float] = []
            stopped = trio.Event()
            streaming = trio.Event()
            stop_flood = trio.Event()
            unrouted_at: list[float] = []
            late_deadlines: list[float] = []
            payload = "x" * FLOOD_PAYLOAD

            async def nap() -> None:
                with pytest.raises(fame.NoRoute, match=f"node {node_id} went away"):
                    await sleepy.nap(seconds=3600)  # deadline an hour: the lost link must end it
                in_flight.append(trio.current_time() - frozen_at)

            async def stream() -> None:
                values = echo.count(up_to=10**9).__aiter__()
                await values.__anext__()
                streaming.set()
                await stopped.wait()
                with pytest.raises(fame.NoRoute, match=f"node {node_id} went away"):
                    while True:
                        await values.__anext__()
                in_flight.append(trio.current_time() - frozen_at)

            async def flood() -> None:
                await stopped.wait()
                caller = flooder.proxy("echo@fame.fabric", Echo).with_timeout(1)
                while not stop_flood.is_set():
                    started = trio.current_time()
                    try:
                        await caller.say(text=payload)
                        outcomes["answered"] += 1  # impossible from a stopped process
                    except fame.DeadlineExceeded:
                        outcomes["deadline"] += 1
                        if unrouted_at and started > unrouted_at[0]:
                            late_deadlines.append(started)
                    except fame.NoRoute as exc:
                        if "is not attached" in str(exc):
                            outcomes["no_route"] += 1
                            if not unrouted_at:
                                unrouted_at.append(trio.current_time())
                        elif "went away" in str(exc):
                            outcomes["no_route_in_flight"] += 1
                        else:
                            outcomes[f"unexpected: {exc}"] += 1
                    except fame.MailboxFull:
                        outcomes["mailbox_full"] += 1
                    outcomes["bytes" if unrouted_at else "bytes_before"] += FLOOD_PAYLOAD
                    await trio.sleep(0.05)  # a steady flood, not a CPU hog on a shared machine

            async def bystander() -> None:
                while not stop_flood.is_set():
                    try:
                        assert await other.say(text="meanwhile") == "meanwhile"
                        outcomes["others_ok"] += 1
                    except fame.FameError:
                        outcomes["others_failed"] += 1
                    await trio.sleep(0.01)

            with trio.fail_after(GUARD):
                async with (
                    sampling_rss({"sentinel": sentinel.proc.pid}) as peaks,
                    trio.open_nursery() as nursery,
                ):
                    for _ in range(NAPS):
                        nursery.start_soon(nap)
                    nursery.start_soon(stream)
                    nursery.start_soon(bystander)
                    for _ in range(FLOODERS):
                        nursery.start_soon(flood)
                    # Every request has left the client before the node freezes.
                    await streaming.wait()
                    while len(client._remote) < NAPS + 1:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                    os.kill(frozen.proc.pid, signal.SIGSTOP)
                    frozen_at = trio.current_time()
                    try:
                        stopped.set()
                        while not unrouted_at or len(in_flight) < NAPS + 1:  # noqa: ASYNC110
                            await trio.sleep(0.01)
                        await trio.sleep(FLOOD_AFTER_DETECTION)
                        stop_flood.set()
                    finally:
                        if not stop_flood.is_set():
                            os.kill(frozen.proc.pid, signal.SIGCONT)
            os.kill(frozen.proc.pid, signal.SIGCONT)
            reattached_after = await wait_for(
                lambda: routed(url, fabric.token), "the node did not come back"
            )
    finally:
        fabric.close()
    assert outcomes["answered"] == 0
    # Declared dead by the heartbeat watchdog (3 silent beats), not by anything else.
    assert [line for line in sentinel.err if f"<link {node_id}> silent for" in line], sentinel.err
    # The flooder's own link never dropped: the sentinel held its reader back while
    # the frozen node's queue was full, which is back-pressure, not silence.
    assert not [kind for kind in outcomes if kind.startswith("unexpected")], outcomes
    assert not late_deadlines, "a call sent after the node was unrouted waited out its deadline"
    assert outcomes["others_failed"] == 0 and outcomes["others_ok"] > 0, outcomes
    assert len(in_flight) == NAPS + 1
    growth_mib = (peaks["sentinel"] - base) / MIB
    sent_mib = (outcomes["bytes_before"] + outcomes["bytes"]) / MIB / MIB
    # What the sentinel may hold for the frozen link: its queue (DEFAULT_QUEUE messages),
    # plus slack for the interpreter (what was sent at it is reported beside).
    bound_mib = DEFAULT_QUEUE * FLOOD_PAYLOAD / MIB / MIB + 32
    assert growth_mib < bound_mib, (growth_mib, bound_mib, sent_mib)
    reliability_report(
        heartbeat_s=0.5,
        time_to_no_route_s=round(unrouted_at[0] - frozen_at, 2),
        in_flight_failed=len(in_flight),
        in_flight_failed_after_s=round(max(in_flight), 2),
        calls_to_frozen_node=sum(outcomes[k] for k in ("deadline", "no_route", "mailbox_full")),
        no_route=outcomes["no_route"],
        deadline=outcomes["deadline"],
        mailbox_full=outcomes["mailbox_full"],
        mib_sent_to_frozen_node=round(sent_mib, 1),
        mib_sent_before_unrouted=round(outcomes["bytes_before"] / MIB / MIB, 1),
        peak_rss_sentinel_mib=round(peaks["sentinel"] / MIB, 1),
        rss_growth_sentinel_mib=round(growth_mib, 1),
        calls_by_others_ok=outcomes["others_ok"],
        calls_by_others_failed=outcomes["others_failed"],
        reattached_after_sigcont_s=round(reattached_after, 2),
    )


async def routed(url: str, token: str) -> bool:
    """Whether echo answers through the sentinel now."""
    try:
        async with connect(url, token=token) as client:
            return bool(await client.proxy("echo@fame.fabric", Echo).say(text="back") == "back")
    except (fame.NoRoute, fame.DeadlineExceeded, SentinelUnreachable):
        return False


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
        fame.open_storage(fame.StorageConfig()) as storage,
        fame.open_node(storage_provider=storage, stream_idle_timeout=idle) as node,
        fame.open_sentinel(port=0, token=token, node=node) as sentinel,
    ):
        agent = await node.spawn(ObservedStorageAgent, ADDRESS)
        assert await agent.fill(count=2000, size=64) == 2000
        url = f"ws://127.0.0.1:{sentinel.port}/"
        log = tmp_path / "stuck-client.log"
        with open(log, "wb") as out:  # noqa: ASYNC230 (a local file, opened once)
            reader = subprocess.Popen(  # noqa: ASYNC220 (started once, polled below)
                [sys.executable, str(HERE / "stuck_client.py"), url, ADDRESS, "5"],
                env={**fame_env(), "FAME_ADMISSION_TOKEN": token},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:

            async def stalled() -> bool:
                assert reader.poll() is None, log.read_text()
                return "READING 5" in log.read_text() and len(node._producers) == 1

            await wait_for(stalled, "the client's stream is not open")
            assert ObservedStorageAgent.open_scans == 1
            held_back = (await agent.stats())["produced"] - produced_before
        finally:
            reader.kill()
            reader.wait()
        killed_at = trio.current_time()

        async def released() -> bool:
            return not node._producers and ObservedStorageAgent.open_scans == 0

        await wait_for(released, "the dead client's producer was not released")
        released_after = trio.current_time() - killed_at
        assert ObservedStorageAgent.closed_scans == closed_before + 1
        assert (await agent.stats())["produced"] - produced_before == held_back
        assert held_back <= DEFAULT_WINDOW + 1
    reliability_report(
        records_produced_for_dead_reader=held_back,
        idle_timeout_s=idle,
        producer_released_after_kill_s=round(released_after, 3),
    )
