"""Client -> sentinel -> agent over real websockets, each in its own process."""

from __future__ import annotations

import itertools

import pytest
import trio

import fame
from fame._fabric._client import connect
from fame._fabric._transport import SentinelUnreachable
from fame._fabric.sentinel._server import open_sentinel
from fame.errors import RequestLost

from .conftest import Fabric, free_port
from .fabric_agents import Echo


async def test_call_and_stream_through_sentinel(fabric: Fabric) -> None:
    _, url = fabric.sentinel()
    fabric.node(url)
    async with connect(url, token=fabric.token) as client:
        echo = client.proxy("echo@fame.fabric", Echo)
        assert await echo.say(text="hello") == "hello"
        assert await echo.say("positional") == "positional"
        items = [item async for item in echo.count(up_to=200)]
        assert [item["i"] for item in items] == list(range(200))
        # many concurrent calls share the link
        results: list[str] = []

        async def one(i: int) -> None:
            results.append(await echo.say(text=str(i)))

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one, i)
        assert sorted(results, key=int) == [str(i) for i in range(50)]


async def test_remote_errors_are_typed(fabric: Fabric) -> None:
    _, url = fabric.sentinel()
    fabric.node(url)
    async with connect(url, token=fabric.token) as client:
        echo = client.proxy("echo@fame.fabric", Echo)
        with pytest.raises(fame.OperationFailed) as info:
            await echo.fail(why="on purpose")
        assert info.value.message == "on purpose"
        assert info.value.exc_type == "Boom"
        untyped = client.proxy("echo@fame.fabric")
        with pytest.raises(fame.UnknownOperation):
            await untyped.nope()


async def test_no_route_is_retried_until_the_deadline_then_names_the_address(
    fabric: Fabric,
) -> None:
    _, url = fabric.sentinel()
    async with connect(url, token=fabric.token) as client:
        # Sent again and again (a node might bind it meanwhile), then NoRoute,
        # which says nothing ran: not a bare timeout.
        ghost = client.proxy("ghost@fame.fabric").with_timeout(2)
        with trio.fail_after(30), pytest.raises(fame.NoRoute) as info:
            await ghost.anything()
        assert "ghost@fame.fabric" in str(info.value)
        assert isinstance(info.value, fame.errors.NotApplied)
        assert "nothing ran" in str(info.value)
        # A stream's first answer is treated alike.
        with trio.fail_after(30), pytest.raises(fame.NoRoute) as info:
            async for _ in ghost.any_stream():
                pass
        assert "nothing ran" in str(info.value)


async def test_deadline(fabric: Fabric) -> None:
    _, url = fabric.sentinel()
    fabric.node(url)
    async with connect(url, token=fabric.token) as client:
        sleepy = client.proxy("sleepy@fame.fabric", Echo)
        with pytest.raises(fame.DeadlineExceeded):
            await sleepy.with_timeout(0.2).nap(seconds=30)
        # The link and the other agents are unaffected by the abandoned call.
        echo = client.proxy("echo@fame.fabric", Echo)
        assert await echo.say(text="still fine") == "still fine"


async def test_wrong_token_is_refused(fabric: Fabric) -> None:
    _, url = fabric.sentinel()
    with pytest.raises(fame.AdmissionRefused) as info:
        async with connect(url, token="not-the-token"):
            pass
    assert "token" in info.value.reason


async def test_unreachable_sentinel() -> None:
    with pytest.raises(SentinelUnreachable):
        async with connect(f"ws://127.0.0.1:{free_port()}/", token="x"):
            pass


async def test_show_envelopes_prints_one_line_per_envelope(fabric: Fabric) -> None:
    sentinel, url = fabric.sentinel(FAME_SHOW_ENVELOPES="1")
    node, _, _ = fabric.node(url, FAME_SHOW_ENVELOPES="1")
    async with connect(url, token=fabric.token) as client:
        assert await client.proxy("echo@fame.fabric", Echo).say(text="look") == "look"
    received = node.wait_err("fame recv")
    assert "to=echo@fame.fabric Request say" in received and "from=_reply@" in received
    sent = node.wait_err("fame send")
    assert " Reply " in sent and sent.endswith("B")
    # The sentinel is a node too: it traces what it routes, request and reply.
    routed = sentinel.wait_err("fame route")
    assert "to=echo@fame.fabric Request say" in routed
    reply = sentinel.wait_err("fame route", contains=" Reply ")
    assert "to=_reply@" in reply


async def test_envelope_lines_are_off_by_default(fabric: Fabric) -> None:
    sentinel, url = fabric.sentinel()
    node, _, _ = fabric.node(url)
    async with connect(url, token=fabric.token) as client:
        assert await client.proxy("echo@fame.fabric", Echo).say(text="quiet") == "quiet"
    node.kill()
    sentinel.kill()
    assert not [line for line in node.err + sentinel.err if line.startswith("fame ")]


async def test_the_sentinel_is_a_node_hosting_agents(fabric: Fabric) -> None:
    """Agents on the sentinel's own node are called from clients and call remote agents."""
    async with (
        fame.open_node() as node,
        open_sentinel(port=0, trust_on_first_use=True, token=fabric.token, node=node) as sentinel,
    ):
        await node.spawn(Echo, "local@fame.fabric")
        url = f"ws://127.0.0.1:{sentinel.port}/"
        # The sentinel runs in this process: wait for the child off the event loop.
        await trio.to_thread.run_sync(fabric.node, url)
        async with connect(url, token=fabric.token) as client:
            local = client.proxy("local@fame.fabric", Echo)
            assert await local.say(text="from the sentinel") == "from the sentinel"
            assert [i["i"] async for i in local.count(up_to=5)] == list(range(5))
        # From the sentinel's node to an agent on another process.
        remote = node.proxy("echo@fame.fabric", Echo)
        assert await remote.say(text="outbound") == "outbound"
        assert [i["i"] async for i in remote.count(up_to=5)] == list(range(5))
        # Another node cannot take the sentinel agent's address.
        assert sentinel.routes.owner("local@fame.fabric") == sentinel.sentinel_id


async def test_a_pool_spreads_calls_and_keeps_each_stream_on_its_member(fabric: Fabric) -> None:
    _, url = fabric.sentinel()
    first, _, _ = fabric.node(url, "--no-spawn", "--pool", "work@fame.fabric")
    second, _, _ = fabric.node(url, "--no-spawn", "--pool", "work@fame.fabric")
    members = {first.proc.pid, second.proc.pid}
    async with connect(url, token=fabric.token) as client:
        work = client.proxy("work@fame.fabric", Echo)
        answered = [await work.pid() for _ in range(10)]
        assert set(answered) == members
        # Round-robin over two members: they take turns.
        assert all(a != b for a, b in itertools.pairwise(answered))
        # Streams longer than a window need credits; those must reach the member that
        # holds the stream, not the next one in the round-robin.
        for _ in range(4):
            items = [item["i"] async for item in work.count(up_to=500)]
            assert items == list(range(500))
        # Once an address is a pool, no node can take it for itself.
        _, _, bound = fabric.node(url, "--no-spawn", "--pool", "echo@fame.fabric")
        assert bound == "echo@fame.fabric"  # a pool of one member
        _, _, bound = fabric.node(url)  # wants echo@ and sleepy@, each alone
        assert bound == "sleepy@fame.fabric"


async def test_a_pool_with_no_member_attached_says_so(fabric: Fabric) -> None:
    _, url = fabric.sentinel()
    member, _, _ = fabric.node(url, "--no-spawn", "--pool", "work@fame.fabric")
    async with connect(url, token=fabric.token) as client:
        work = client.proxy("work@fame.fabric", Echo).with_timeout(2)
        assert await work.pid() == member.proc.pid
        member.kill()
        with trio.fail_after(60):  # the sentinel notices the closed link at once
            while True:
                try:
                    await work.pid()
                except RequestLost as exc:
                    # In flight when the node died: answered by the sentinel.
                    assert "went away before answering" in str(exc), str(exc)
                except fame.NoRoute as exc:
                    assert "none of the 1 nodes of its pool is attached" in str(exc), str(exc)
                    break
