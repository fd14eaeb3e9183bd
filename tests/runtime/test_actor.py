"""Actors and mailboxes: bounds, deadlines, crashes, batches and graceful close."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import fame
from fame import ActorCrashed, DeadlineExceeded
from fame.errors import MailboxFull, NodeClosed
from fame.lowlevel import Actor, Delivery

from ._helpers import all_tasks, assert_no_new_tasks


class Gated(Actor):
    """Answers each message with itself; a message "wait" blocks until ``gate`` is set."""

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.handled: list[Any] = []
        self.events: list[str] = []

    async def on_start(self) -> None:
        self.events.append("start")

    async def on_stop(self) -> None:
        self.events.append("stop")

    async def handle(self, message: Any) -> Any:
        if message == "wait":
            await self.gate.wait()
        if message == "boom":
            raise ValueError("asked to crash")
        self.handled.append(message)
        return message


def buffered(ref: fame.lowlevel.ActorRef) -> int:
    return ref._send.statistics().current_buffer_used


async def test_full_mailbox_makes_tell_wait_and_memory_stays_bounded() -> None:
    actor = Gated()
    async with fame.lowlevel.open_supervisor() as sup, trio.open_nursery() as senders:
        ref = await sup.spawn(actor, "gated@local", mailbox_size=3)
        await ref.tell("wait")
        await trio.testing.wait_all_tasks_blocked()  # the actor holds "wait", mailbox empty
        for i in range(3):
            await ref.tell(i)
        assert buffered(ref) == 3
        done: list[int] = []

        async def send(i: int) -> None:
            await ref.tell(i)
            done.append(i)

        for i in range(3, 50):
            senders.start_soon(send, i)
        await trio.testing.wait_all_tasks_blocked()
        assert done == []  # every sender waits: the mailbox is full
        assert buffered(ref) == 3
        assert ref._send.statistics().tasks_waiting_send == 47
        with pytest.raises(MailboxFull, match="mailbox of gated@local is full"):
            ref.tell_nowait("more")
        actor.gate.set()
    assert sorted(done) == list(range(3, 50))
    assert actor.handled[:4] == ["wait", 0, 1, 2]
    assert sorted(actor.handled[4:]) == list(range(3, 50))


async def test_tell_with_timeout_fails_with_mailbox_full(autojump_clock: Any) -> None:
    actor = Gated()
    async with fame.lowlevel.open_supervisor() as sup:
        ref = await sup.spawn(actor, "gated@local", mailbox_size=1)
        await ref.tell("wait")
        await ref.tell("queued")
        start = trio.current_time()
        with pytest.raises(MailboxFull, match=r"stayed full for 2\.5 s") as info:
            await ref.tell("late", timeout=2.5)
        assert trio.current_time() - start == pytest.approx(2.5)
        assert info.value.actor == "gated@local"
        assert buffered(ref) == 1
        # ask waits for room the same way, and fails as any call past its deadline.
        with pytest.raises(DeadlineExceeded) as late:
            await ref.ask("late too", timeout=1)
        assert not isinstance(late.value, MailboxFull)
        assert buffered(ref) == 1
        actor.gate.set()
    assert actor.handled == ["wait", "queued"]


async def test_ask_deadline_and_late_reply_is_dropped(autojump_clock: Any) -> None:
    actor = Gated()
    async with fame.lowlevel.open_supervisor() as sup:
        ref = await sup.spawn(actor, "gated@local")
        start = trio.current_time()
        with pytest.raises(DeadlineExceeded, match=r"gated@local did not answer within 3 s"):
            await ref.ask("wait", timeout=3)
        assert trio.current_time() - start == pytest.approx(3)
        async with trio.open_nursery() as nursery:
            answers: list[Any] = []

            async def ask_next() -> None:
                answers.append(await ref.ask("next"))

            nursery.start_soon(ask_next)
            await trio.testing.wait_all_tasks_blocked()
            assert answers == []  # queued behind "wait"
            actor.gate.set()  # "wait" is answered now, to nobody
        assert answers == ["next"]
        assert actor.handled == ["wait", "next"]
        assert await ref.ask("third") == "third"


async def test_abandoned_ask_is_seen_by_the_actor(autojump_clock: Any) -> None:
    seen: list[bool] = []
    gate = trio.Event()

    class Watcher(Actor):
        max_batch = 8

        async def handle_batch(self, deliveries: list[Delivery]) -> None:
            await gate.wait()
            for delivery in deliveries:
                seen.append(delivery.wants_reply)
                delivery.reply(delivery.message)

    async with fame.lowlevel.open_supervisor() as sup:
        ref = await sup.spawn(Watcher(), "watcher@local")
        with trio.move_on_after(1):
            await ref.ask("given up", timeout=None)
        gate.set()
        assert await ref.ask("kept") == "kept"
    assert seen == [False, True]


async def test_crash_answers_the_caller_with_actor_crashed() -> None:
    actor = Gated()
    async with fame.lowlevel.open_supervisor(fame.RestartPolicy(backoff_initial=0)) as sup:
        ref = await sup.spawn(actor, "gated@local")
        with pytest.raises(ActorCrashed) as info:
            await ref.ask("boom")
        error = info.value
        assert error.actor == "gated@local"
        assert error.exc_type == "ValueError"
        assert error.message == "asked to crash"
        assert str(error) == "gated@local crashed: ValueError: asked to crash"
        assert await ref.ask("after") == "after"  # restarted, same mailbox
        assert sup.restart_count("gated@local") == 1
    assert actor.events == ["start", "start", "stop"]


async def test_messages_queued_behind_a_crash_survive_the_restart(autojump_clock: Any) -> None:
    actor = Gated()
    async with fame.lowlevel.open_supervisor(fame.RestartPolicy(backoff_initial=1)) as sup:
        ref = await sup.spawn(actor, "gated@local")
        async with trio.open_nursery() as nursery:
            results: dict[str, Any] = {}

            async def ask(message: str) -> None:
                try:
                    results[message] = await ref.ask(message)
                except ActorCrashed as exc:
                    results[message] = exc

            await ref.tell("wait")
            for message in ("boom", "a", "b"):
                nursery.start_soon(ask, message)
                await trio.testing.wait_all_tasks_blocked()
            actor.gate.set()
        assert isinstance(results["boom"], ActorCrashed)
        assert (results["a"], results["b"]) == ("a", "b")
    assert actor.handled == ["wait", "a", "b"]


async def test_batches_take_what_is_queued_up_to_max_batch() -> None:
    sizes: list[int] = []
    gate = trio.Event()

    class Batcher(Actor):
        max_batch = 4

        async def handle_batch(self, deliveries: list[Delivery]) -> None:
            await gate.wait()
            sizes.append(len(deliveries))
            for delivery in deliveries:
                delivery.reply(delivery.message * 10)

    async with fame.lowlevel.open_supervisor() as sup:
        ref = await sup.spawn(Batcher(), "batcher@local")
        results: list[int] = []
        async with trio.open_nursery() as nursery:

            async def ask(i: int) -> None:
                results.append(await ref.ask(i))

            for i in range(10):
                nursery.start_soon(ask, i)
                await trio.testing.wait_all_tasks_blocked()
            gate.set()
    assert sizes == [1, 4, 4, 1]
    assert sorted(results) == [i * 10 for i in range(10)]


async def test_unanswered_message_in_a_batch_fails_its_caller() -> None:
    class Forgetful(Actor):
        max_batch = 2

        async def handle_batch(self, deliveries: list[Delivery]) -> None:
            pass

    async with fame.lowlevel.open_supervisor() as sup:
        ref = await sup.spawn(Forgetful(), "forgetful@local")
        with pytest.raises(RuntimeError, match="forgetful@local left a message unanswered"):
            await ref.ask("hello")


async def test_graceful_close_handles_queued_messages_then_stops(autojump_clock: Any) -> None:
    handled: list[int] = []
    events: list[str] = []

    class Slow(Actor):
        async def handle(self, message: Any) -> None:
            await trio.sleep(1)
            handled.append(message)

        async def on_stop(self) -> None:
            events.append(f"stop after {len(handled)}")

    async with fame.lowlevel.open_supervisor(stop_timeout=10) as sup:
        ref = await sup.spawn(Slow(), "slow@local")
        for i in range(5):
            await ref.tell(i)
    assert handled == [0, 1, 2, 3, 4]
    assert events == ["stop after 5"]
    with pytest.raises(NodeClosed, match="slow@local is stopped"):
        await ref.tell(5)


async def test_close_past_stop_timeout_cancels_and_fails_waiting_callers(
    autojump_clock: Any,
) -> None:
    actor = Gated()
    outcomes: dict[str, BaseException] = {}
    async with trio.open_nursery() as callers:
        async with fame.lowlevel.open_supervisor(stop_timeout=2) as sup:
            ref = await sup.spawn(actor, "gated@local")

            async def ask(message: str) -> None:
                try:
                    await ref.ask(message, timeout=None)
                except NodeClosed as exc:
                    outcomes[message] = exc

            for message in ("wait", "queued"):
                callers.start_soon(ask, message)
                await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
        assert trio.current_time() - start == pytest.approx(2)
    assert sorted(outcomes) == ["queued", "wait"]
    assert actor.events == ["start", "stop"]
    assert actor.handled == []


async def test_cancelling_the_node_stops_every_actor_and_leaves_no_task() -> None:
    before = all_tasks()
    actors = [Gated() for _ in range(4)]
    with trio.CancelScope() as scope:
        async with fame.open_node(storage_provider=object()) as node:
            for i, actor in enumerate(actors):
                await node.spawn(actor, f"gated{i}@local")
            await node.ref("gated0@local").tell("wait")  # one busy actor
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert [a.events for a in actors] == [["start", "stop"]] * 4
    assert_no_new_tasks(before)


async def test_stopping_one_actor_leaves_the_others_running() -> None:
    first, second = Gated(), Gated()
    async with fame.lowlevel.open_supervisor() as sup:
        ref1 = await sup.spawn(first, "first@local")
        ref2 = await sup.spawn(second, "second@local")
        await ref1.tell("queued")
        await sup.stop("first@local")
        assert first.events == ["start", "stop"]
        assert first.handled == ["queued"]
        assert "first@local" not in sup
        with pytest.raises(NodeClosed):
            await ref1.ask("x")
        assert await ref2.ask("still here") == "still here"
        # The address is free again.
        ref3 = await sup.spawn(Gated(), "first@local")
        assert await ref3.ask("again") == "again"


async def test_failing_first_start_propagates_from_spawn() -> None:
    class Broken(Actor):
        async def on_start(self) -> None:
            raise OSError("no database")

    before = all_tasks()
    async with fame.lowlevel.open_supervisor() as sup:
        with pytest.raises(OSError, match="no database"):
            await sup.spawn(Broken(), "broken@local")
        assert "broken@local" not in sup
        assert sup.ref("broken@local") is None
        assert all_tasks() == before
    assert_no_new_tasks(before)


async def test_spawn_rejects_duplicates_and_bad_sizes() -> None:
    async with fame.lowlevel.open_supervisor() as sup:
        await sup.spawn(Gated(), "a@local")
        with pytest.raises(ValueError, match="already spawned at a@local"):
            await sup.spawn(Gated(), "a@local")
        with pytest.raises(ValueError, match="mailbox_size must be at least 1"):
            await sup.spawn(Gated(), "b@local", mailbox_size=0)
        sup.close()
        with pytest.raises(NodeClosed, match="shutting down"):
            await sup.spawn(Gated(), "c@local")


async def test_a_crash_in_a_batch_fails_every_message_of_the_batch() -> None:
    gate = trio.Event()

    class Batcher(Actor):
        max_batch = 8

        async def handle_batch(self, deliveries: list[Delivery]) -> None:
            await gate.wait()
            if any(d.message == "boom" for d in deliveries):
                raise ValueError("bad batch")
            for delivery in deliveries:
                delivery.reply(delivery.message)

    outcomes: dict[str, Any] = {}
    policy = fame.RestartPolicy(backoff_initial=0)
    async with fame.lowlevel.open_supervisor(policy) as sup:
        ref = await sup.spawn(Batcher(), "batcher@local")

        async def ask(message: str) -> None:
            try:
                outcomes[message] = await ref.ask(message)
            except ActorCrashed as exc:
                outcomes[message] = exc

        async with trio.open_nursery() as nursery:
            for message in ("first", "a", "boom", "b"):
                nursery.start_soon(ask, message)
                await trio.testing.wait_all_tasks_blocked()
            gate.set()
        assert outcomes["first"] == "first"
        for message in ("a", "boom", "b"):
            assert isinstance(outcomes[message], ActorCrashed)
            assert str(outcomes[message]) == "batcher@local crashed: ValueError: bad batch"
        assert await ref.ask("after") == "after"


async def test_stopping_a_stuck_actor_cancels_it_after_the_stop_timeout(
    autojump_clock: Any,
) -> None:
    actor = Gated()
    async with fame.lowlevel.open_supervisor(stop_timeout=3) as sup:
        ref = await sup.spawn(actor, "gated@local")
        await ref.tell("wait")  # never finishes: the gate stays closed
        start = trio.current_time()
        await sup.stop("gated@local")
        assert trio.current_time() - start == pytest.approx(3)
        assert actor.events == ["start", "stop"]
        assert "gated@local" not in sup
        with pytest.raises(NodeClosed):
            await ref.tell("late")
        # The address is free at once.
        again = await sup.spawn(Gated(), "gated@local")
        assert await again.ask("hello") == "hello"


async def test_on_stop_does_not_run_when_the_first_on_start_failed() -> None:
    calls: list[str] = []

    class FailsToStart(fame.lowlevel.Actor):
        async def on_start(self) -> None:
            calls.append("start")
            raise OSError("no such device")

        async def on_stop(self) -> None:
            calls.append("stop")

    async with fame.lowlevel.open_supervisor() as supervisor:
        with pytest.raises(OSError, match="no such device"):
            await supervisor.spawn(FailsToStart(), "fails@local")
        assert "fails@local" not in supervisor
    assert calls == ["start"]
