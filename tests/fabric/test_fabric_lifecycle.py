"""Identity, pinning and restarts, with real processes and persistent (sqlite) stores."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest
import trio

import fame
from fame._fabric._client import connect
from fame._fabric._transport import SentinelUnreachable
from fame.errors import RequestLost

from .conftest import Fabric, free_port
from .fabric_agents import Echo

# A safety net so a broken reconnect fails the test instead of hanging it;
# nothing is asserted about how long recovery takes.
RECOVERY_LIMIT = 60
# The deadline of a call expected to end with NoRoute: it is sent again until
# then, in case the address comes back.
NO_ROUTE_DEADLINE = 2.0


async def call_until_routed(url: str, token: str) -> str:
    """Call echo, retrying while its route is not back yet; return the reply."""
    with trio.fail_after(RECOVERY_LIMIT):
        while True:
            try:
                async with connect(url, token=token) as client:
                    return await client.proxy("echo@fame.fabric", Echo).say(text="back")
            except (fame.NoRoute, SentinelUnreachable):
                await trio.sleep(0.1)


async def test_stolen_node_id_is_refused(fabric: Fabric) -> None:
    _, url = fabric.sentinel()
    _, node_id, _ = fabric.node(url, store="owner")
    thief = fabric.start("fabric_node.py", url, "--steal", node_id, env=fabric.env("thief"))
    line = thief.wait_line("REFUSED")
    assert "enrolled with another key" in line
    async with connect(url, token=fabric.token) as client:
        assert await client.proxy("echo@fame.fabric", Echo).say(text="mine") == "mine"


async def test_wrong_token_node_binds_nothing(fabric: Fabric) -> None:
    _, url = fabric.sentinel()
    intruder = fabric.start(
        "fabric_node.py", url, env=fabric.env("intruder", FAME_ADMISSION_TOKEN="wrong")
    )
    assert "token" in intruder.wait_line("REFUSED")
    async with connect(url, token=fabric.token) as client:
        # Sent again until its deadline (a node might still bind it), then NoRoute.
        with pytest.raises(fame.NoRoute, match="no node bound it"):
            await (
                client.proxy("echo@fame.fabric", Echo).with_timeout(NO_ROUTE_DEADLINE).say(text="x")
            )


async def test_node_restart_keeps_its_id_and_rebinds_from_binding_store(fabric: Fabric) -> None:
    _, url = fabric.sentinel()
    first, node_id, bound = fabric.node(url, store="node")
    assert bound == "echo@fame.fabric,sleepy@fame.fabric"
    first.kill()
    # Restarted without spawning anything: the addresses come from __binding_store.
    _, again, bound = fabric.node(url, "--no-spawn", store="node")
    assert again == node_id
    assert bound == "echo@fame.fabric,sleepy@fame.fabric"
    async with connect(url, token=fabric.token) as client:
        # Routed to the node, which answers at once that the agent is not running.
        with pytest.raises(fame.NoRoute, match=r"no actor at echo@fame\.fabric"):
            await (
                client.proxy("echo@fame.fabric", Echo).with_timeout(NO_ROUTE_DEADLINE).say(text="x")
            )


async def test_sentinel_restart_restores_routes_and_nodes_reattach(fabric: Fabric) -> None:
    port = free_port()
    sentinel, url = fabric.sentinel(port)
    node, node_id, _ = fabric.node(url, store="node")
    async with connect(url, token=fabric.token) as client:
        assert await client.proxy("echo@fame.fabric", Echo).say(text="before") == "before"
    # Freeze the node so the new sentinel starts with routes from its store only.
    os.kill(node.proc.pid, signal.SIGSTOP)
    try:
        sentinel.kill()
        fabric.sentinel(port)
        async with connect(url, token=fabric.token) as client:
            with pytest.raises(fame.NoRoute, match="its node is not attached") as info:
                echo = client.proxy("echo@fame.fabric", Echo).with_timeout(NO_ROUTE_DEADLINE)
                await echo.say(text="x")
            assert node_id not in str(info.value)  # the caller is not told another node's id
    finally:
        os.kill(node.proc.pid, signal.SIGCONT)
    try:
        assert await call_until_routed(url, fabric.token) == "back"
    except BaseException:
        print("\n".join(node.err[-60:]))
        raise


async def test_dead_node_is_unrouted_by_heartbeat_then_comes_back(fabric: Fabric) -> None:
    _, url = fabric.sentinel(None, "--heartbeat", "0.5")  # a silent link dies after 1.5 s
    node, node_id, _ = fabric.node(url, store="node")
    async with connect(url, token=fabric.token) as client:
        echo = client.proxy("echo@fame.fabric", Echo).with_timeout(1)
        assert await echo.say(text="alive") == "alive"
        os.kill(node.proc.pid, signal.SIGSTOP)  # alive TCP, silent peer
        try:
            with trio.fail_after(RECOVERY_LIMIT):
                while True:
                    try:
                        await echo.say(text="anyone?")
                    except fame.DeadlineExceeded:
                        continue  # not yet declared dead: the call went to the frozen node
                    except RequestLost as exc:
                        # In flight when the node was declared dead: it may have run.
                        assert "its node went away before answering" in str(exc), str(exc)
                        assert node_id not in str(exc)
                        break
                    except fame.NoRoute as exc:
                        # Sent after it, again and again until the deadline: nothing ran.
                        assert "its node is not attached" in str(exc), str(exc)
                        assert node_id not in str(exc)
                        break
        finally:
            os.kill(node.proc.pid, signal.SIGCONT)
    assert await call_until_routed(url, fabric.token) == "back"


async def test_a_busy_agent_does_not_get_its_node_declared_dead(fabric: Fabric) -> None:
    sentinel, url = fabric.sentinel(None, "--heartbeat", "0.5")  # dead after 1.5 s of silence
    _, node_id, _ = fabric.node(url)
    async with connect(url, token=fabric.token) as client:
        sleepy = client.proxy("sleepy@fame.fabric", Echo)
        echo = client.proxy("echo@fame.fabric", Echo)
        naps: list[str] = []

        async def nap() -> None:
            naps.append(await sleepy.nap(seconds=4))

        async def pile_up(i: int) -> None:
            assert await sleepy.say(text=str(i)) == str(i)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(nap)
            # Requests pile up behind the busy agent while the link must stay alive.
            for i in range(200):
                nursery.start_soon(pile_up, i)
            while not naps:
                assert await echo.say(text="meanwhile") == "meanwhile"
        assert naps == ["woke"]
    # The node's link was never declared dead nor replaced.
    assert not [line for line in sentinel.err if node_id in line and "detached" in line]
    assert not [line for line in sentinel.err if "silent" in line]
    assert len([line for line in sentinel.err if f"node {node_id} attached" in line]) == 1


async def _a_call_and_a_stream_fail_when(
    client: fame.Node, kill: Callable[[], None], reason: str
) -> fame.Proxy:
    """Start a long call and a stream, ``kill()`` a process, see both fail with ``reason``.

    Deadlines are an hour, so the ``RequestLost`` errors (sent, so they may
    have run) must come from the lost link, not from a timeout. Returns the
    proxy used, for further checks.
    """
    echo = client.proxy("echo@fame.fabric", Echo).with_timeout(3600)
    outcomes: list[str] = []

    async def nap() -> None:
        with pytest.raises(RequestLost, match=reason):
            await echo.nap(seconds=3600)
        outcomes.append("call failed")

    with trio.fail_after(120):  # a guard against hanging, not a measurement
        async with trio.open_nursery() as nursery:
            stream = echo.count(up_to=10**9).__aiter__()
            assert (await stream.__anext__())["i"] == 0
            nursery.start_soon(nap)
            # Both requests have left the client (it offers no event for that: poll).
            while len(client._switchboard.remote) < 2:  # noqa: ASYNC110
                await trio.sleep(0.01)
            # Both are queued on the client's link: a call queued after them, to
            # the same node, answers only once they reached it (links keep order).
            assert await client.proxy("sleepy@fame.fabric", Echo).say(text="after") == "after"
            kill()
            with pytest.raises(RequestLost, match=reason):
                while True:
                    await stream.__anext__()
            outcomes.append("stream failed")
    assert sorted(outcomes) == ["call failed", "stream failed"]
    return echo


async def test_calls_in_flight_fail_at_once_when_the_link_drops(fabric: Fabric) -> None:
    sentinel, url = fabric.sentinel()
    fabric.node(url)
    async with connect(url, token=fabric.token) as client:
        await _a_call_and_a_stream_fail_when(client, sentinel.kill, "was lost")
        assert client._switchboard.remote == {}


async def test_requests_in_flight_to_a_node_that_dies_fail_at_once(fabric: Fabric) -> None:
    _, url = fabric.sentinel()
    node, node_id, _ = fabric.node(url)
    async with connect(url, token=fabric.token) as client:
        echo = await _a_call_and_a_stream_fail_when(
            client, node.kill, "its node went away before answering"
        )
        # The client's own link is fine: a later call gets no-route (sent again
        # until its deadline), which does not name the node that went away.
        with pytest.raises(fame.NoRoute, match="not attached") as info:
            await echo.with_timeout(NO_ROUTE_DEADLINE).say(text="anyone?")
        assert node_id not in str(info.value)


async def test_open_admission_is_explicit_and_loud(fabric: Fabric) -> None:
    sentinel, url = fabric.sentinel(None, "--open")
    warning = sentinel.wait_err("WARNING: fame sentinel runs with OPEN ADMISSION")
    assert "any process that can reach" in warning and "may attach as a client" in warning
    # Any client is admitted, whatever token it says it has ...
    async with connect(url, token="the-client-says-that") as client:
        with pytest.raises(fame.NoRoute, match="no node bound it"):
            await (
                client.proxy("echo@fame.fabric", Echo)
                .with_timeout(NO_ROUTE_DEADLINE)
                .say(text="open")
            )
    # ... but open admission admits clients only: a node needs its enrollment.
    node = fabric.start("fabric_node.py", url, env=fabric.env(FAME_ADMISSION_TOKEN="anything"))
    assert "is not enrolled" in node.wait_line("REFUSED")
