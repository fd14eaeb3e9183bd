"""A link's outgoing queue counts bytes: what it admits, what it frees, when it is over."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import fame
from fame._fabric._identity import NodeStores
from fame._fabric._link_queue import LinkLimits, LinkQueue
from fame._fabric.sentinel._connection import ConnectionHandler
from fame._fabric.sentinel._routing import Router
from fame._protocol import SentinelLink, SentinelPolicy
from fame._wire._schema import Codec


async def test_a_queue_admits_up_to_its_budget_in_bytes() -> None:
    queue = LinkQueue(budget=10)
    queue.send_nowait(b"x" * 6)
    queue.send_nowait(b"x" * 4)
    assert (queue.bytes, len(queue)) == (10, 2)
    with pytest.raises(trio.WouldBlock):
        queue.send_nowait(b"x")
    assert queue.bytes == 10
    assert not queue.over_budget


async def test_an_empty_queue_admits_one_message_larger_than_its_budget() -> None:
    queue = LinkQueue(budget=10)
    queue.send_nowait(b"x" * 100)  # a single 1 MiB message must pass a 4 MiB... or any budget
    assert queue.bytes == 100 and queue.over_budget
    with pytest.raises(trio.WouldBlock):
        queue.send_nowait(b"y")


async def test_taking_a_message_frees_its_bytes() -> None:
    queue = LinkQueue(budget=10)
    queue.send_nowait(b"abcdef")
    queue.send_nowait(b"ghij")
    assert await queue.receive() == b"abcdef"
    assert queue.bytes == 4
    assert queue.receive_nowait() == b"ghij"
    assert queue.bytes == 0
    with pytest.raises(trio.WouldBlock):
        queue.receive_nowait()


async def test_push_goes_past_the_budget_up_to_the_hard_cap() -> None:
    queue = LinkQueue(budget=10, hard_cap=25)
    assert queue.push(b"x" * 8)
    assert queue.push(b"x" * 8)  # under the budget any message is admitted
    assert queue.bytes == 16 and queue.over_budget
    assert queue.push(b"x" * 9)  # 25: at the cap
    assert not queue.push(b"x")  # past it: the owner closes the link
    assert queue.bytes == 25
    assert LinkQueue(budget=10).hard_cap == 20  # twice the budget by default


async def test_an_empty_message_is_a_marker_that_weighs_nothing() -> None:
    queue = LinkQueue(budget=4)
    queue.send_nowait(b"full")
    queue.push(b"")
    assert queue.bytes == 4 and len(queue) == 2


async def test_a_sender_waits_for_room_and_the_writer_makes_it() -> None:
    queue = LinkQueue(budget=10)
    queue.send_nowait(b"x" * 10)
    sent = trio.Event()

    async def sender() -> None:
        await queue.send(b"y" * 5)
        sent.set()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            assert not sent.is_set() and queue.bytes == 10
            assert queue.receive_nowait() == b"x" * 10
            await sent.wait()
    assert queue.bytes == 5


async def test_close_fails_senders_and_lets_the_writer_drain() -> None:
    queue = LinkQueue(budget=10)
    queue.send_nowait(b"left")
    queue.close()
    with pytest.raises(trio.ClosedResourceError):
        queue.send_nowait(b"x")
    with pytest.raises(trio.ClosedResourceError):
        queue.push(b"x")
    assert await queue.receive() == b"left"
    with pytest.raises(trio.EndOfChannel):
        await queue.receive()


async def test_close_wakes_a_waiting_sender() -> None:
    queue = LinkQueue(budget=1)
    queue.send_nowait(b"x")
    failures: list[BaseException] = []

    async def sender() -> None:
        try:
            await queue.send(b"y")
        except trio.ClosedResourceError as exc:
            failures.append(exc)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            queue.close()
    assert len(failures) == 1


async def test_the_account_sees_every_byte_in_and_out() -> None:
    totals = {"a": 0, "b": 0}
    queue = LinkQueue(budget=100)
    queue.send_nowait(b"x" * 7)  # before any account
    queue.set_account(lambda d: totals.__setitem__("a", totals["a"] + d))
    assert totals["a"] == 7  # told what is queued already
    queue.push(b"y" * 3)
    assert totals["a"] == 10
    queue.set_account(lambda d: totals.__setitem__("b", totals["b"] + d))
    assert totals == {"a": 0, "b": 10}
    queue.receive_nowait()
    queue.receive_nowait()
    assert totals == {"a": 0, "b": 0}


async def test_over_since_marks_when_the_queue_went_over_its_budget() -> None:
    queue = LinkQueue(budget=4)
    queue.send_nowait(b"abcd")
    assert queue.over_since is None
    queue.push(b"e")
    since = queue.over_since
    assert since is not None
    with trio.fail_after(30):
        await queue.wait_over_budget()  # at once: it is over now
    queue.receive_nowait()
    assert queue.over_since is None and queue.bytes == 1


async def test_the_peak_is_the_most_the_queue_ever_held() -> None:
    queue = LinkQueue(budget=4)
    queue.push(b"abcdef")
    queue.receive_nowait()
    queue.push(b"ab")
    assert queue.peak == 6


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        LinkLimits(buffer=0)
    with pytest.raises(ValueError):
        LinkLimits(stall_grace=0)
    with pytest.raises(ValueError):
        LinkQueue(budget=0)
    queue = LinkLimits(buffer=8, hard_cap=32).queue()
    assert (queue.budget, queue.hard_cap) == (8, 32)


async def test_a_link_over_its_budget_past_the_grace_is_closed_as_stalled(
    autojump_clock: Any,
) -> None:
    # The stall guard of a sentinel's connection, on a queue nobody drains.
    async with fame.open_node() as node:
        router = Router(node, Codec(), "nsentinel", limits=LinkLimits(buffer=10, stall_grace=5))
        policy = SentinelPolicy("nsentinel", (), {}, router.routes, open_admission=True)
        handler = ConnectionHandler(
            router,
            NodeStores(),
            policy,
            url_path="/",
            heartbeat=5,
            max_connections=8,
            handshake_timeout=10,
        )
        ws: Any = None  # the guard touches only the queue
        conn = router.new_conn(ws, SentinelLink(policy, b"n" * 32))
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(handler._stall_guard, conn)
                router.send(conn, b"x" * 8)
                await trio.sleep(30)  # within budget: nothing happens, however long
                assert conn.closing is None
                router.send(conn, b"x" * 8)  # over budget now
                assert router.queued_bytes == 16
                await trio.sleep(4)
                conn.out.receive_nowait()  # the peer caught up within the grace
                router.send(conn, b"x" * 8)  # and fell behind again
                await trio.sleep(4.9)
                assert conn.closing is None  # the grace counts from the last time it went over
                await trio.sleep(0.2)
                assert conn.closing is not None and conn.closing.startswith("link stalled")
                assert "5 s" in conn.closing
        assert router.stalled == 1 and conn.out.closed


async def test_an_answer_past_the_hard_cap_closes_the_link_at_once() -> None:
    async with fame.open_node() as node:
        router = Router(node, Codec(), "nsentinel", limits=LinkLimits(buffer=10, hard_cap=20))
        policy = SentinelPolicy("nsentinel", (), {}, router.routes, open_admission=True)
        ws: Any = None
        conn = router.new_conn(ws, SentinelLink(policy, b"n" * 32))
        router.send(conn, b"x" * 10)
        router.send(conn, b"x" * 10)
        assert conn.closing is None
        router.send(conn, b"x" * 10)  # 21 > 20
        assert conn.closing is not None and "hard cap" in conn.closing
        router.send(conn, b"x")  # a closed link drops what it is sent
        assert conn.out.bytes == 20 and router.stalled == 1
