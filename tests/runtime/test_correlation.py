"""Correlation ids nobody can guess, and a node that takes only the answers it asked for.

Without sockets: the node's uplink here is a stand-in that keeps what it is
given, so the test plays the fabric and hands the node forged, misdirected
and genuine answers through the same entry the websocket reader uses
(``Node._deliver``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

import fame
from fame._agents import _switchboard
from fame._agents._switchboard import CORR_LIMIT
from fame._wire._schema import (
    Envelope,
    Error,
    Reply,
    Request,
    StreamEnd,
    StreamItem,
)

GUARD = 10  # seconds: a guard against hanging, never a speed assertion


class Slow(fame.BaseAgent):
    """Answers only when the test lets it, so a call stays pending meanwhile."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.called = trio.Event()

    @fame.operation
    async def answer(self) -> str:
        self.called.set()
        await self.release.wait()
        return "genuine"


class FakeUplink:
    """The node's link to a sentinel, as a list: what the node sent, and a signal."""

    pools = True

    def __init__(self) -> None:
        self.sent: list[Envelope] = []
        self.arrived = trio.Event()

    async def send(self, envelope: Envelope) -> None:
        self.sent.append(envelope)
        self.arrived.set()

    def send_nowait(self, envelope: Envelope) -> None:
        self.sent.append(envelope)

    def bind(self, address: str, *, pool: bool = False) -> None:
        pass

    def unbind(self, address: str) -> None:
        pass


def test_correlation_ids_are_random_63_bit_numbers() -> None:
    draws = [_switchboard.random_corr() for _ in range(2000)]
    assert all(0 < corr < CORR_LIMIT for corr in draws)  # a msgpack int64, never 0
    assert len(set(draws)) == len(draws)
    # Not a counter: spread over the whole range (each top bit set about half the time).
    top = sum(corr >> 62 for corr in draws)
    assert 800 < top < 1200
    assert max(draws) - min(draws) > CORR_LIMIT // 2


async def test_a_corr_still_waiting_is_never_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    draws: Iterator[int] = iter([41, 41, 41, 42, 42, 43])
    monkeypatch.setattr(_switchboard, "random_corr", lambda: next(draws))
    slow = Slow()
    async with fame.open_node() as node, trio.open_nursery() as tasks:
        await node.spawn(slow, "slow@here")
        switchboard = node._switchboard
        results: list[str] = []

        async def call() -> None:
            results.append(await node.proxy("slow@here").answer())

        tasks.start_soon(call)
        with trio.fail_after(GUARD):
            await slow.called.wait()
        assert set(switchboard.pending) == {41}
        tasks.start_soon(call)  # draws 41 (waiting: drawn again), 41, then 42
        with trio.fail_after(GUARD):
            while len(switchboard.pending) < 2:
                await trio.lowlevel.checkpoint()
        assert set(switchboard.pending) == {41, 42}
        assert switchboard.new_corr() == 43
        slow.release.set()
    assert results == ["genuine", "genuine"]


async def test_a_node_takes_only_the_answers_it_asked_for() -> None:
    uplink = FakeUplink()
    async with fame.open_node() as node, trio.open_nursery() as tasks:
        node._set_uplink(uplink)
        switchboard = node._switchboard
        me = node.reply_address
        results: list[object] = []

        async def call() -> None:
            results.append(await node.proxy("far@fame.fabric").answer())

        tasks.start_soon(call)
        with trio.fail_after(GUARD):
            await uplink.arrived.wait()
        [request] = uplink.sent
        assert isinstance(request.frame, Request) and request.reply_to == me
        corr = request.corr
        assert corr is not None and corr > 0
        forged = [
            Envelope(0, me, 0, Reply("forged"), None, corr ^ 1),  # a corr nobody waits on
            Envelope(0, me, 0, Reply("forged"), None, None),
            Envelope(0, me, 0, StreamItem("forged"), None, corr),  # not an answer to a call
            Envelope(0, me, 0, StreamEnd(), None, corr),
            Envelope(0, me, 0, Request("answer", {}), me, corr),
        ]
        for envelope in forged:
            await node._deliver(envelope)
        # The right corr, but not the way the request left (it went up the link).
        await switchboard.route(Envelope(0, me, 0, Reply("local forgery"), None, corr))
        assert switchboard.dropped_answers == len(forged) + 1
        assert results == [] and corr in switchboard.pending
        await node._deliver(Envelope(0, me, 0, Reply("genuine"), None, corr))
    assert results == ["genuine"]
    assert switchboard.dropped_answers == len(forged) + 1


async def test_a_local_call_takes_no_answer_from_the_link() -> None:
    uplink = FakeUplink()
    slow = Slow()
    async with fame.open_node() as node, trio.open_nursery() as tasks:
        node._set_uplink(uplink)
        await node.spawn(slow, "slow@here")
        results: list[str] = []

        async def call() -> None:
            results.append(await node.proxy("slow@here").answer())

        tasks.start_soon(call)
        with trio.fail_after(GUARD):
            await slow.called.wait()
        [corr] = node._switchboard.pending
        me = node.reply_address
        await node._deliver(Envelope(0, me, 0, Reply("forged"), None, corr))
        await node._deliver(Envelope(0, me, 0, Error("no_route", "forged"), None, corr))
        assert node._switchboard.dropped_answers == 2
        slow.release.set()
    assert results == ["genuine"]
    assert uplink.sent == []  # the call never left the node
