"""Several stream items per frame (``StreamItems``), for a consumer that asks for them.

The agent's node serves a stream to a caller on another node: its frames
leave through the uplink, which here records them (and checkpoints, as a
link's queue does). The consumer's side of the credit is the real
:class:`~fame._protocol._credit.CreditWindow`, which refuses an item sent
without credit.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

import fame
from fame._agents._credit import StreamConsumer
from fame._protocol._credit import FRAME_ITEMS, CreditWindow
from fame._wire._schema import (
    Cancel,
    Credit,
    Envelope,
    Error,
    Frame,
    Request,
    StreamEnd,
    StreamItem,
    StreamItems,
)
from fame.errors import ProtocolError, WireError

PROVIDER: Any = object()  # agents here open no store
GUARD = 30.0
PEER = "_reply@peer"


class Refused(Exception):
    """A failure the operation declares."""


class Batched(fame.BaseAgent):
    def __init__(self) -> None:
        self.pulled = 0
        self.closed = trio.Event()

    @fame.operation(streaming=True)
    async def count(self, n: int) -> AsyncIterator[int]:
        """``n`` items without a single checkpoint of its own."""
        try:
            for i in range(n):
                self.pulled += 1
                yield i
        finally:
            self.closed.set()

    @fame.operation(streaming=True, errors=(Refused,))
    async def refuse_after(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i
        raise Refused(f"refused after {n}")

    @fame.operation(streaming=True)
    async def crash_after(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i
        raise RuntimeError(f"crashed after {n}")

    @fame.operation(streaming=True)
    async def forever(self) -> AsyncIterator[int]:
        try:
            for i in itertools.count():
                self.pulled += 1
                yield i
        finally:
            self.closed.set()


class Peer:
    """The uplink of the agent's node: records the frames of the stream to ``PEER``.

    ``window`` (the request's credit) is checked as a consumer checks it:
    an item beyond the credit granted raises :class:`fame.ProtocolError`.
    """

    pools = False

    def __init__(self, window: int) -> None:
        self.frames: list[Frame] = []
        self.window = CreditWindow(window)
        self.arrived = trio.Event()

    async def send(self, envelope: Envelope) -> None:
        await trio.lowlevel.checkpoint()  # a link's queue is a checkpoint
        assert envelope.to == PEER
        frame = envelope.frame
        if isinstance(frame, StreamItem):
            self.window.on_item()
        elif isinstance(frame, StreamItems):
            assert 0 < len(frame.items) <= FRAME_ITEMS
            self.window.on_items(len(frame.items))
        self.frames.append(frame)
        self.arrived.set()

    def send_nowait(self, envelope: Envelope) -> None:
        self.frames.append(envelope.frame)
        self.arrived.set()

    def bind(self, address: str, *, pool: bool = False) -> None:
        pass

    def unbind(self, address: str) -> None:
        pass

    def items(self) -> list[Any]:
        """Every item received so far, decoded, in order."""
        got: list[Any] = []
        for frame in self.frames:
            if isinstance(frame, StreamItem):  # its item still encoded, as the wire carries it
                got.append(msgspec.msgpack.decode(frame.item))
            elif isinstance(frame, StreamItems):
                got.extend(msgspec.msgpack.decode(raw) for raw in frame.items)
        return got

    def last(self) -> Frame:
        return self.frames[-1]

    async def wait_for(self, predicate: Any) -> None:
        with trio.fail_after(GUARD):
            while not predicate():
                self.arrived = trio.Event()
                await self.arrived.wait()


def request(op: str, args: dict[str, Any], *, credit: int, batch: int = FRAME_ITEMS) -> Envelope:
    """A streaming request from a caller on another node, as the uplink delivers it."""
    frame = Request(op, args, True, credit, None, batch=batch)
    return Envelope(0, "batched@local", 1, frame, PEER, 7)


def control(frame: Credit | Cancel) -> Envelope:
    return Envelope(0, "batched@local", 2, frame, PEER, 7)


def ended(peer: Peer) -> bool:
    return bool(peer.frames) and isinstance(peer.last(), StreamEnd | Error)


async def test_items_arrive_in_order_several_per_frame_then_the_end() -> None:
    agent = Batched()
    peer = Peer(5000)
    async with fame.open_node(storage_provider=PROVIDER) as node:
        await node.spawn(agent, "batched@local")
        node._switchboard.uplink = peer
        await node._switchboard.deliver(request("count", {"n": 3000}, credit=5000))
        await peer.wait_for(lambda: ended(peer))
    assert peer.items() == list(range(3000))
    assert isinstance(peer.last(), StreamEnd)
    assert all(not isinstance(frame, StreamEnd) for frame in peer.frames[:-1])
    # Ready items share a frame: far fewer frames than items.
    batches = [frame for frame in peer.frames if isinstance(frame, StreamItems)]
    assert batches
    assert len(peer.frames) < 3000 // 10
    assert max(len(frame.items) for frame in batches) == FRAME_ITEMS


async def test_an_old_consumer_gets_one_stream_item_per_frame() -> None:
    agent = Batched()
    peer = Peer(100)
    async with fame.open_node(storage_provider=PROVIDER) as node:
        await node.spawn(agent, "batched@local")
        node._switchboard.uplink = peer
        await node._switchboard.deliver(request("count", {"n": 50}, credit=100, batch=0))
        await peer.wait_for(lambda: ended(peer))
    assert [type(frame) for frame in peer.frames] == [StreamItem] * 50 + [StreamEnd]
    assert peer.items() == list(range(50))


@pytest.mark.parametrize(("op", "kind"), [("refuse_after", "operation_failed"), ("crash_after", "actor_crashed")])  # fmt: skip  # noqa: E501
async def test_the_items_before_an_error_are_delivered_before_it(op: str, kind: str) -> None:
    agent = Batched()
    peer = Peer(1000)
    async with fame.open_node(storage_provider=PROVIDER) as node:
        await node.spawn(agent, "batched@local")
        node._switchboard.uplink = peer
        await node._switchboard.deliver(request(op, {"n": 700}, credit=1000))
        await peer.wait_for(lambda: ended(peer))
    assert peer.items() == list(range(700))
    error = peer.last()
    assert isinstance(error, Error)
    assert error.kind == kind
    assert not any(isinstance(frame, StreamEnd) for frame in peer.frames)


async def test_credit_is_never_exceeded_and_returned_credit_resumes_the_stream() -> None:
    agent = Batched()
    peer = Peer(10)
    async with fame.open_node(storage_provider=PROVIDER) as node:
        await node.spawn(agent, "batched@local")
        node._switchboard.uplink = peer
        await node._switchboard.deliver(request("count", {"n": 100}, credit=10))
        consumed, granted = 0, 10
        with trio.fail_after(GUARD):
            while not ended(peer):
                await peer.wait_for(lambda n=consumed: len(peer.items()) > n or ended(peer))
                await trio.testing.wait_all_tasks_blocked()
                # The producer waits for credit before it pulls; an item beyond the
                # credit would have failed Peer.send (and so ended the stream with an error).
                assert len(peer.items()) <= granted
                assert agent.pulled <= granted
                for _ in range(len(peer.items()) - consumed):
                    consumed += 1
                    grant = peer.window.on_consumed(0)
                    if grant[0]:
                        granted += grant[0]
                        await node._switchboard.deliver(control(Credit(*grant)))
    assert peer.items() == list(range(100))
    assert isinstance(peer.last(), StreamEnd)


async def test_a_cancel_mid_stream_closes_the_generator() -> None:
    agent = Batched()
    peer = Peer(100_000)
    async with fame.open_node(storage_provider=PROVIDER) as node:
        await node.spawn(agent, "batched@local")
        node._switchboard.uplink = peer
        await node._switchboard.deliver(request("forever", {}, credit=100_000))
        await peer.wait_for(lambda: len(peer.items()) >= FRAME_ITEMS)
        await node._switchboard.deliver(control(Cancel("enough")))
        with trio.fail_after(GUARD):
            await agent.closed.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert not node._switchboard.producers
        pulled = agent.pulled
        assert pulled < 100_000
    got = peer.items()
    assert got == list(range(len(got)))  # in order, nothing skipped
    assert not any(isinstance(frame, StreamEnd) for frame in peer.frames)


async def test_a_generator_that_never_waits_does_not_starve_other_tasks() -> None:
    agent = Batched()
    total = 100_000
    peer = Peer(total + 1)  # the end needs one more credit: it is found by pulling
    seen: list[int] = []

    async def other_task() -> None:
        # Runs as soon as the stream lets the event loop go: long before its end.
        await trio.lowlevel.checkpoint()
        seen.append(len(peer.items()))

    async with fame.open_node(storage_provider=PROVIDER) as node:
        await node.spawn(agent, "batched@local")
        node._switchboard.uplink = peer
        await node._switchboard.deliver(request("count", {"n": total}, credit=total + 1))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other_task)
            await peer.wait_for(lambda: ended(peer))
    assert len(seen) == 1
    assert seen[0] < total // 10
    assert peer.items() == list(range(total))


async def test_a_batch_too_big_for_the_wire_goes_item_by_item() -> None:
    # A link whose limit is below FRAME_BYTES: the frame is refused, its items go alone.
    agent = Batched()
    peer = Peer(1000)
    sent = peer.send

    async def small_link(envelope: Envelope) -> None:
        frame = envelope.frame
        if isinstance(frame, StreamItems) and len(frame.items) > 3:
            raise WireError("too big for this link", code="too_large")
        await sent(envelope)

    peer.send = small_link  # type: ignore[method-assign]
    async with fame.open_node(storage_provider=PROVIDER) as node:
        await node.spawn(agent, "batched@local")
        node._switchboard.uplink = peer
        await node._switchboard.deliver(request("count", {"n": 600}, credit=1000))
        await peer.wait_for(lambda: ended(peer))
    assert peer.items() == list(range(600))
    assert isinstance(peer.last(), StreamEnd)


async def test_the_consumer_hands_over_a_frames_items_one_by_one_and_returns_their_credit() -> None:
    consumer = StreamConsumer("batched@local", 8)
    raws = [msgspec.Raw(msgspec.msgpack.encode(i)) for i in range(6)]
    consumer.push(StreamItems(raws[:4]))
    consumer.push(StreamItem(4, 1))  # both kinds in one stream
    consumer.push(StreamItems(raws[5:]))
    consumer.push(StreamEnd())
    got, grants = [], []
    with trio.fail_after(GUARD):
        for _ in range(6):
            item, grant = await consumer.next(None)
            got.append(msgspec.msgpack.decode(item) if isinstance(item, msgspec.Raw) else item)
            grants.append(grant)
        with pytest.raises(StopAsyncIteration):
            await consumer.next(None)
    assert got == list(range(6))
    # Half the window consumed: its credit (items and bytes) goes back, as for StreamItem.
    assert grants == [(0, 0), (0, 0), (0, 0), (4, 4), (0, 0), (0, 0)]


async def test_a_frame_beyond_the_credit_fails_the_stream() -> None:
    consumer = StreamConsumer("batched@local", 4)
    raws = [msgspec.Raw(msgspec.msgpack.encode(i)) for i in range(5)]
    consumer.push(StreamItems(raws))
    with trio.fail_after(GUARD), pytest.raises(ProtocolError):
        await consumer.next(None)


class Stoppable(Batched):
    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []

    async def stop(self) -> None:
        self.log.append("stop")

    @fame.operation(streaming=True)
    async def logged(self) -> AsyncIterator[int]:
        try:
            for i in itertools.count():
                self.pulled += 1
                yield i
        finally:
            self.log.append("generator closed")


async def test_stopping_the_agent_ends_a_batched_stream_before_stop_agent_returns() -> None:
    agent = Stoppable()
    peer = Peer(1000)
    async with fame.open_node(storage_provider=PROVIDER) as node:
        await node.spawn(agent, "batched@local")
        node._switchboard.uplink = peer
        await node._switchboard.deliver(request("logged", {}, credit=1000))
        await peer.wait_for(lambda: len(peer.items()) >= 1)
        await node.stop_agent("batched@local")
        # The stream, its sender task with it, ended before the agent's stop().
        assert agent.log == ["generator closed", "stop"]
        frames = len(peer.frames)
        await trio.testing.wait_all_tasks_blocked()
        assert len(peer.frames) == frames  # nothing after the stop
    error = peer.last()
    assert isinstance(error, Error)
    assert error.kind == "request_lost"
    got = peer.items()
    assert got == list(range(len(got)))
