"""``tell``: the outbox records, bounds and delivers; the inbox applies once (issue 13).

In one process, on the in-memory provider: a tell returns the message id
once the message is recorded, a full outbox refuses with ``OutboxFull``
and records nothing, a local tell goes the same way as a remote one (the
inbox included), and the delivery rules pick retry or dead letter.
"""

from __future__ import annotations

import random

import attrs
import msgspec
import pytest
import trio
import trio.testing

import fame
from fame._agents._delivery_policy import Next, OutboxEntry, after_failure
from fame.errors import (
    NoAnswerInTime,
    NoRoute,
    OperationFailed,
    OutboxFull,
    Overloaded,
    PermissionDenied,
    QuotaExceeded,
    RequestLost,
    UnknownOperation,
)
from fame.lowlevel import DeliveryConfig

# Attempts far apart: what is told stays in the outbox while the test looks.
SLOW = DeliveryConfig(first_retry=3600, max_retry=3600, attempt_timeout=0.2)


class Tally(fame.BaseAgent):
    def __init__(self) -> None:
        self.seen: list[tuple[int, str | None]] = []
        self.changed = trio.Event()

    @fame.operation
    async def add(self, amount: int) -> int:
        self.seen.append((amount, fame.security.request_key()))
        self.changed.set()
        self.changed = trio.Event()
        return len(self.seen)

    @fame.operation(streaming=True)
    async def numbers(self) -> fame.Stream[int]:  # type: ignore[misc]
        yield 1


async def test_a_local_tell_is_delivered_once_and_returns_the_message_id() -> None:
    async with fame.open_node() as node:
        tally = Tally()
        proxy = await node.spawn(tally, "tally@local")
        first = await proxy.tell(Tally.add, 1)
        chosen = await proxy.with_request_id("order-7").tell(Tally.add, amount=2)
        assert chosen == "order-7" and len(first) == 28  # a fresh request id
        with trio.fail_after(10):
            await node._courier.wait_empty()
        assert sorted(tally.seen) == [(1, f"5:local:{first}"), (2, "5:local:order-7")]


async def test_the_inbox_acknowledges_a_duplicate_without_running_it() -> None:
    async with fame.open_node() as node:
        tally = Tally()
        await node.spawn(tally, "tally@local")
        board = node._switchboard
        ran = await board.call("tally@local", "add", {"amount": 5}, 5, request_id="x", once=True)
        again = await board.call("tally@local", "add", {"amount": 5}, 5, request_id="x", once=True)
        assert (ran, again) == (1, None)
        assert tally.seen == [(5, "5:local:x")]
        # Told again by id after delivery: the inbox still knows it.
        await node.tell("tally@local", "add", {"amount": 5}, request_id="x")
        with trio.fail_after(10):
            await node._courier.wait_empty()
        assert tally.seen == [(5, "5:local:x")]


async def test_a_full_outbox_refuses_the_tell_and_records_nothing() -> None:
    config = attrs.evolve(SLOW, max_messages=2, max_bytes=4096)
    async with fame.open_node(delivery=config) as node:
        for _ in range(2):
            await node.tell("nobody@local", "add", {"amount": 1})
        with pytest.raises(OutboxFull) as refused:
            await node.tell("nobody@local", "add", {"amount": 1})
        assert "was not recorded" in str(refused.value)
        assert len(node._courier.outbox) == 2
    async with fame.open_node(delivery=config) as node:
        with pytest.raises(OutboxFull):
            await node.tell("nobody@local", "add", {"blob": "x" * 5000})
        assert len(node._courier.outbox) == 0
        # Telling again with the id of a queued message records nothing new.
        await node.tell("nobody@local", "add", {"amount": 1}, request_id="same")
        await node.tell("nobody@local", "add", {"amount": 1}, request_id="same")
        assert len(node._courier.outbox) == 1


async def test_bad_tells_are_refused_at_the_call_site() -> None:
    async with fame.open_node(delivery=SLOW) as node:
        proxy = await node.spawn(Tally(), "tally@local")
        with pytest.raises(TypeError, match="streaming"):
            await proxy.tell(Tally.numbers)
        with pytest.raises(ValueError, match="request id"):
            await node.tell("tally@local", "add", {}, request_id="")
        with pytest.raises(fame.errors.WireError) as unsendable:
            await node.tell("tally@local", "add", {"amount": object()})
        assert unsendable.value.code == "unencodable"
        assert len(node._courier.outbox) == 0


def test_the_rules_retry_what_may_succeed_and_dead_letter_what_cannot() -> None:
    config = DeliveryConfig(max_attempts=3, first_retry=1.0, max_retry=8.0)
    entry = OutboxEntry(id="m", to="a@b", op="op", args=msgspec.msgpack.encode({}), queued_at=0)
    rng = random.Random(1)
    for transient in (NoRoute("x"), Overloaded("x"), NoAnswerInTime("x"), RequestLost("x"),
                      QuotaExceeded("x"), RuntimeError("x")):  # fmt: skip
        verdict, after = after_failure(entry, transient, 100.0, config, rng)
        assert verdict is Next.RETRY and after.attempts == 1
        assert 100.5 <= after.next_attempt <= 101.0  # the first wait: half to all of first_retry
        assert after.last_error is not None
        assert after.last_error.startswith(type(transient).__name__)
    for permanent in (PermissionDenied("x"), UnknownOperation("x"), OperationFailed("x")):
        verdict, after = after_failure(entry, permanent, 100.0, config, rng)
        assert verdict is Next.DEAD and after.dead_at == 100.0 and after.attempts == 1
    tired = msgspec.structs.replace(entry, attempts=2)
    verdict, after = after_failure(tired, NoRoute("x"), 100.0, config, rng)
    assert verdict is Next.DEAD and after.attempts == 3


class Slow(fame.BaseAgent):
    """A concurrent agent whose ``apply`` waits for the test to release it."""

    max_concurrency = 4

    def __init__(self) -> None:
        self.runs = 0
        self.started = trio.Event()
        self.release = trio.Event()

    @fame.operation
    async def apply(self) -> str:
        self.runs += 1
        self.started.set()
        await self.release.wait()
        return "applied"


async def test_a_resend_while_the_first_still_runs_waits_and_is_acknowledged_once() -> None:
    async with fame.open_node() as node:
        slow = Slow()
        await node.spawn(slow, "slow@local")
        board = node._switchboard
        answers: list[object] = []

        async def send() -> None:
            answers.append(
                await board.call("slow@local", "apply", {}, 10, request_id="r", once=True)
            )

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                await slow.started.wait()
                # The resend is answered overloaded (nothing ran) and retried by the caller.
                nursery.start_soon(send)
                await trio.testing.wait_all_tasks_blocked()
                slow.release.set()
        assert slow.runs == 1
        assert sorted(answers, key=str) == [None, "applied"]


async def test_the_inbox_forgets_past_its_window_and_its_count() -> None:
    from fame._agents._inbox import Inbox

    inbox = Inbox(None, DeliveryConfig(inbox_window=60.0, inbox_max=2))
    for at, key in enumerate(("a", "b", "c")):
        await inbox.record(key, 1000.0 + at)
    assert not await inbox.applied("a", 1003.0)  # the oldest, past the count
    assert await inbox.applied("b", 1003.0) and await inbox.applied("c", 1003.0)
    assert not await inbox.applied("b", 1061.0)  # past the window
    assert await inbox.applied("c", 1061.0)


def test_a_told_request_carries_the_once_flag_and_an_older_request_decodes_without_it() -> None:
    from fame._wire._schema import Codec, Envelope, Request

    codec = Codec()
    told = Envelope(0, "a@b", 1, Request("op", {}, request_id="m", once=True), "r@b", 1)
    assert codec.decode(codec.encode(told)) == told
    # An older peer's request: seven fields, no flag.
    older = msgspec.msgpack.encode(["e", 0, "a@b", 1, ["req", "op", {}, False, 0, None, None, "m"],
                                    "r@b", 1, None])  # fmt: skip
    decoded = codec.decode(older)
    assert isinstance(decoded.frame, Request) and decoded.frame.once is False
