"""A frozen node: declared dead by the heartbeat, unrouted, and back after SIGCONT.

Real processes (the fabric suite's sentinel script with a 1 s heartbeat
and its Echo nodes, :class:`fabric.conftest.Fabric`), real websockets on
127.0.0.1. The sentinel's resident memory is sampled every 20 ms while
callers flood the frozen node, and reported beside what they sent.
Deadlines here are guards against hanging, never measurements.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio

# The fabric suite's child processes (a sentinel, Echo nodes).
from fabric.conftest import Fabric
from fabric.fabric_agents import Echo

import fame
from fame._fabric._client import connect
from fame._fabric._link_queue import DEFAULT_LINK_BUFFER
from fame._fabric._transport import SentinelUnreachable
from fame.errors import NotSentInTime, RequestLost

from .fame_services import sampling_rss, wait_until

GUARD = 60.0  # a broken recovery fails the test instead of hanging it
HEARTBEAT = 1.0  # seconds: a silent link is declared dead after three (the harness default is 5)
MIB = 1024

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
    flight fail at once when it is declared dead (``RequestLost``: they may
    have run), callers flooding it get ``NoRoute`` afterwards (their calls
    are sent again until their 1 s deadline, then say nothing ran: never a
    bare timeout), the sentinel's memory stays flat while they do, and
    traffic to another node never notices.
    """
    fabric = Fabric(tmp_path, suite_secrets)
    try:
        # Passed explicitly: the harness's default heartbeat is the library's 5 s.
        sentinel, url = fabric.sentinel(None, "--heartbeat", str(HEARTBEAT))
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
            late_deadlines: list[str] = []
            payload = "x" * FLOOD_PAYLOAD

            async def nap() -> None:
                with pytest.raises(RequestLost, match="its node went away") as info:
                    await sleepy.nap(seconds=3600)  # deadline an hour: the lost link must end it
                assert node_id not in str(info.value)  # the caller is not told which node
                in_flight.append(trio.current_time() - frozen_at)

            async def stream() -> None:
                values = echo.count(up_to=10**9).__aiter__()
                await values.__anext__()
                streaming.set()
                await stopped.wait()
                with pytest.raises(RequestLost, match="its node went away") as info:
                    while True:
                        await values.__anext__()
                assert node_id not in str(info.value)
                in_flight.append(trio.current_time() - frozen_at)

            async def flood() -> None:
                await stopped.wait()
                caller = flooder.proxy("echo@fame.fabric", Echo).with_timeout(1)
                while not stop_flood.is_set():
                    started = trio.current_time()
                    try:
                        await caller.say(text=payload)
                        outcomes["answered"] += 1  # impossible from a stopped process
                    except fame.DeadlineExceeded as exc:
                        outcomes["deadline"] += 1
                        if unrouted_at and started > unrouted_at[0]:
                            # Sent after the node was unrouted: its attempts were
                            # answered no-route, the deadline cut the last one off;
                            # or it never left this client (its own link full).
                            cause = exc.__cause__
                            if isinstance(exc, NotSentInTime) and cause is None:
                                outcomes["own_link_full"] += 1
                            elif isinstance(cause, fame.NoRoute) and "not attached" in str(cause):
                                outcomes["no_route_then_deadline"] += 1
                            else:
                                late_deadlines.append(f"{type(exc).__name__}: {exc}")
                    except RequestLost as exc:
                        if "went away" in str(exc):
                            outcomes["lost_in_flight"] += 1
                        else:
                            outcomes[f"unexpected: {exc}"] += 1
                    except fame.NoRoute as exc:
                        if "is not attached" in str(exc):
                            outcomes["no_route"] += 1
                            if not unrouted_at:
                                unrouted_at.append(trio.current_time())
                        else:
                            outcomes[f"unexpected: {exc}"] += 1
                    except fame.errors.MailboxFull:
                        outcomes["mailbox_full"] += 1
                    except fame.errors.Overloaded:
                        # The frozen node's queue had no room: refused at once, nothing ran.
                        outcomes["overloaded"] += 1
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
                    while len(client._switchboard.remote) < NAPS + 1:  # noqa: ASYNC110
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
            reattached_after = await wait_until(
                lambda: routed(url, fabric.token), "the node did not come back"
            )
    finally:
        fabric.close()
    assert outcomes["answered"] == 0
    # Declared dead by the heartbeat watchdog (3 silent beats), not by anything else.
    assert [line for line in sentinel.err if f"<link {node_id}> silent for" in line], sentinel.err
    # The flooder's own link never dropped: while the frozen node's queue was full the
    # sentinel refused its requests at once (overloaded), it never held its reader back.
    assert not [kind for kind in outcomes if kind.startswith("unexpected")], outcomes
    assert not late_deadlines, (
        "a call sent after the node was unrouted waited out its deadline unanswered",
        late_deadlines[:3],
    )
    assert outcomes["others_failed"] == 0 and outcomes["others_ok"] > 0, outcomes
    assert len(in_flight) == NAPS + 1
    growth_mib = (peaks["sentinel"] - base) / MIB
    sent_mib = (outcomes["bytes_before"] + outcomes["bytes"]) / MIB / MIB
    # What the sentinel may hold for the frozen link: its queue (its byte budget plus
    # one message), plus slack for the interpreter (what was sent at it is reported beside).
    bound_mib = (DEFAULT_LINK_BUFFER + FLOOD_PAYLOAD) / MIB / MIB + 32
    assert growth_mib < bound_mib, (growth_mib, bound_mib, sent_mib)
    reliability_report(
        heartbeat_s=HEARTBEAT,
        time_to_no_route_s=round(unrouted_at[0] - frozen_at, 2),
        in_flight_failed=len(in_flight),
        in_flight_failed_after_s=round(max(in_flight), 2),
        calls_to_frozen_node=sum(
            outcomes[k] for k in ("deadline", "no_route", "mailbox_full", "overloaded")
        ),
        no_route=outcomes["no_route"],
        deadline=outcomes["deadline"],
        mailbox_full=outcomes["mailbox_full"],
        overloaded=outcomes["overloaded"],
        lost_in_flight=outcomes["lost_in_flight"],
        no_route_then_deadline=outcomes["no_route_then_deadline"],
        own_link_full=outcomes["own_link_full"],
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
            echo = client.proxy("echo@fame.fabric", Echo).with_timeout(2)
            return bool(await echo.say(text="back") == "back")
    except (fame.NoRoute, fame.DeadlineExceeded, SentinelUnreachable):
        return False
