"""Overload as backpressure: the waiting room of a node, and callers that retry ``overloaded``."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing

import fame
from fame._agents._switchboard import ANSWER_RESERVE, RETRY_BACKOFF, Switchboard
from fame._agents._waiting_room import Waiting, WaitingRoom
from fame._wire._schema import Envelope, Error, Frame, Reply, Request, StreamEnd, StreamItem
from fame.errors import DeadlineExceeded, NotSentInTime, Overloaded

PROVIDER: Any = object()  # the agents here open no store
ME = "_reply@elsewhere"


def request(to: str = "gated@local", corr: int = 1, timeout_ms: int | None = None) -> Envelope:
    return Envelope(0, to, corr, Request("hold", {}, False, 0, timeout_ms), ME, corr, "client:c")


# --- the room's bookkeeping ---------------------------------------------------------


def waiting(corr: int, size: int = 10, deadline: float = math.inf) -> Waiting:
    return Waiting(request(corr=corr), size, deadline)


def test_the_room_admits_within_its_bounds_and_refuses_past_them() -> None:
    room = WaitingRoom(max_requests=3, max_bytes=100)
    assert room.admit("a", "x", waiting(1, 40))
    assert room.admit("b", "x", waiting(2, 40))
    assert not room.admit("a", "y", waiting(3, 40))  # 120 bytes > 100
    assert room.admit("a", "y", waiting(4, 20))
    assert not room.admit("a", "y", waiting(5, 1))  # a 4th request
    assert (len(room), room.bytes, room.refused) == (3, 100, 2)
    assert room.has_waiting("a") and not room.has_waiting("c")


def test_callers_take_turns() -> None:
    room = WaitingRoom()
    for corr in range(1, 6):
        room.admit("a", "flood", waiting(corr))
    room.admit("a", "other", waiting(10))
    room.admit("a", "third", waiting(20))
    order = []
    while (w := room.next("a", 0.0)) is not None:
        order.append(w.envelope.corr)
    assert order == [1, 10, 20, 2, 3, 4, 5]
    assert (len(room), room.bytes, room.has_waiting("a")) == (0, 0, False)


def test_requests_past_their_deadline_are_dropped_silently() -> None:
    room = WaitingRoom()
    room.admit("a", "x", waiting(1, deadline=5.0))
    room.admit("a", "x", waiting(2, deadline=50.0))
    room.admit("a", "x", waiting(3))
    taken = room.next("a", 10.0)
    assert taken is not None and taken.envelope.corr == 2
    assert room.expired == 1
    assert [w.envelope.corr for w in room.drop("a")] == [3]
    assert (len(room), room.bytes) == (0, 0)


# --- a node's waiting room ------------------------------------------------------------


class Gated(fame.BaseAgent):
    def __init__(self) -> None:
        self.gate = trio.Event()
        self.handled = 0

    @fame.operation
    async def hold(self) -> int:
        await self.gate.wait()
        self.handled += 1
        return self.handled


class RecordingUplink:
    """An uplink that keeps what the node sends (the answers to remote callers)."""

    pools = False

    def __init__(self) -> None:
        self.sent: list[Envelope] = []

    async def send(self, envelope: Envelope) -> None:
        self.sent.append(envelope)

    def send_nowait(self, envelope: Envelope) -> None:
        self.sent.append(envelope)

    def bind(self, address: str, *, pool: bool = False) -> None:
        pass

    def unbind(self, address: str) -> None:
        pass

    def answers(self) -> dict[int | None, Frame]:
        return {e.corr: e.frame for e in self.sent}


async def test_a_full_mailbox_makes_requests_wait_and_a_full_room_answers_overloaded() -> None:
    agent = Gated()
    uplink = RecordingUplink()
    async with fame.open_node(storage_provider=PROVIDER, waiting_room_requests=3) as node:
        node._set_uplink(uplink)
        await node.spawn(agent, "gated@local", mailbox_size=1)
        for corr in range(1, 7):  # 1 handled, 1 in the mailbox, 3 waiting, 1 refused
            await node._deliver(request(corr=corr))
        await trio.testing.wait_all_tasks_blocked()
        room = node._switchboard.waiting_room
        assert len(room) + 1 == 3  # the third is in the mover's hand
        answers = uplink.answers()
        assert list(answers) == [6]
        refused = answers[6]
        assert isinstance(refused, Error) and refused.kind == Overloaded.kind
        agent.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert len(uplink.sent) == 6
        answers = uplink.answers()
        assert sorted(f.result for f in answers.values() if isinstance(f, Reply)) == [1, 2, 3, 4, 5]


async def test_a_request_whose_caller_gave_up_is_dropped_unanswered(autojump_clock: Any) -> None:
    agent = Gated()
    uplink = RecordingUplink()
    async with fame.open_node(storage_provider=PROVIDER) as node:
        node._set_uplink(uplink)
        await node.spawn(agent, "gated@local", mailbox_size=1)
        await node._deliver(request(corr=1))
        await node._deliver(request(corr=2))
        await node._deliver(request(corr=3, timeout_ms=1000))  # waits ...
        await node._deliver(request(corr=4, timeout_ms=1000))
        await node._deliver(request(corr=5))
        await trio.sleep(5)  # ... past its caller's deadline
        agent.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert set(uplink.answers()) == {1, 2, 5}
        assert node._switchboard.waiting_room.expired == 2
        assert agent.handled == 3


# --- callers retry "overloaded" ------------------------------------------------------


class OverloadedUplink(RecordingUplink):
    """A path to an agent that refuses the first ``refusals`` requests ``overloaded``."""

    def __init__(self, switchboard: Switchboard, nursery: trio.Nursery, refusals: float) -> None:
        super().__init__()
        self.switchboard = switchboard
        self.nursery = nursery
        self.refusals = refusals
        self.requests = 0

    async def send(self, envelope: Envelope) -> None:
        assert isinstance(envelope.frame, Request)
        self.requests += 1
        frames: list[Frame]
        if self.requests <= self.refusals:
            frames = [Error(Overloaded.kind, "no room", envelope.to)]
        elif envelope.frame.stream:
            frames = [StreamItem("streamed"), StreamEnd()]
        else:
            frames = [Reply("ran")]
        answers = [Envelope(0, str(envelope.reply_to), 0, f, None, envelope.corr) for f in frames]
        self.nursery.start_soon(self.answer, answers)

    async def answer(self, answers: list[Envelope]) -> None:
        for answer in answers:  # in order, as a link delivers them
            await self.switchboard.deliver(answer)


async def test_a_call_answered_overloaded_is_sent_again_until_it_runs(
    autojump_clock: Any,
) -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node, trio.open_nursery() as nursery:
        uplink = OverloadedUplink(node._switchboard, nursery, refusals=5)
        node._set_uplink(uplink)
        assert await node.call("far@fame.fabric", "op", {}, timeout=10) == "ran"
        assert uplink.requests == 6
        uplink.refusals, uplink.requests = 3, 0
        stream = node.open_stream("far@fame.fabric", "op", {}, timeout=10)
        async with stream:
            assert [item async for item in stream] == ["streamed"]
        assert uplink.requests == 4


async def test_a_target_that_stays_overloaded_fails_at_the_callers_deadline(
    autojump_clock: Any,
) -> None:
    async with fame.open_node(storage_provider=PROVIDER) as node, trio.open_nursery() as nursery:
        uplink = OverloadedUplink(node._switchboard, nursery, refusals=math.inf)
        node._set_uplink(uplink)
        start = trio.current_time()
        with pytest.raises(NotSentInTime) as failed:
            await node.call("far@fame.fabric", "op", {}, timeout=2)
        assert not isinstance(failed.value, Overloaded)
        assert isinstance(failed.value, DeadlineExceeded)  # never ran: not applied
        assert isinstance(failed.value.__cause__, Overloaded)  # what the target said last
        # Until no further attempt could be answered in time: the reserve (a quarter
        # of the deadline, at most 0.5 s) and one backoff wait (at most 0.25 s) early.
        assert 2 - (ANSWER_RESERVE + RETRY_BACKOFF.maximum) <= trio.current_time() - start <= 2
        assert uplink.requests > 5  # backed off, but kept trying
        stream = node.open_stream("far@fame.fabric", "op", {}, timeout=2)
        with pytest.raises(DeadlineExceeded):
            await stream.__anext__()
        await stream.aclose()
