"""Every async operation of the core is a checkpoint, the way trio's channels are.

A call that completes without blocking (room in the mailbox, an answer
already there) still yields and still notices cancellation. Cancellation is
checked before the action: a ``tell`` that raises ``Cancelled`` did not
deliver its message.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import fame
from fame._core._reply import ReplySlot
from fame.errors import NodeClosed
from fame.lowlevel import Actor


class Recorder(Actor):
    def __init__(self) -> None:
        self.handled: list[Any] = []
        self.seen = trio.Event()

    async def handle(self, message: Any) -> Any:
        self.handled.append(message)
        self.seen.set()
        return message


async def test_tell_with_room_in_the_mailbox_is_a_checkpoint() -> None:
    async with fame.lowlevel.open_supervisor() as sup:
        ref = await sup.spawn(Recorder(), "rec@local")
        with trio.testing.assert_checkpoints():
            await ref.tell("a")


async def test_tell_in_a_cancelled_scope_raises_and_delivers_nothing() -> None:
    recorder = Recorder()
    async with fame.lowlevel.open_supervisor() as sup:
        ref = await sup.spawn(recorder, "rec@local")
        with trio.CancelScope() as scope:
            scope.cancel()
            await ref.tell("lost")
        assert scope.cancelled_caught
        await ref.tell("after")
        with trio.fail_after(5):
            await recorder.seen.wait()
        await sup.stop("rec@local")
    assert recorder.handled == ["after"]


async def test_ask_in_a_cancelled_scope_raises_and_delivers_nothing() -> None:
    recorder = Recorder()
    async with fame.lowlevel.open_supervisor() as sup:
        ref = await sup.spawn(recorder, "rec@local")
        with trio.CancelScope() as scope:
            scope.cancel()
            await ref.ask("lost")
        assert scope.cancelled_caught
        with trio.fail_after(5):
            assert await ref.ask("after") == "after"
    assert recorder.handled == ["after"]


async def test_tell_to_a_stopped_actor_is_a_checkpoint_and_cancelled_wins() -> None:
    async with fame.lowlevel.open_supervisor() as sup:
        ref = await sup.spawn(Recorder(), "rec@local")
        await sup.stop("rec@local")
        with trio.testing.assert_checkpoints(), pytest.raises(NodeClosed):
            await ref.tell("late")
        with trio.CancelScope() as scope:
            scope.cancel()
            await ref.tell("late")  # Cancelled, not NodeClosed, for a cancelled caller
        assert scope.cancelled_caught


async def test_an_ask_answered_before_its_caller_waits_is_a_checkpoint() -> None:
    async with fame.lowlevel.open_supervisor() as sup:
        ref = await sup.spawn(Recorder(), "rec@local")
        with trio.testing.assert_checkpoints():
            assert await ref.ask("quick") == "quick"


async def test_an_answer_already_there_wins_over_cancellation() -> None:
    # As for an answer that arrives while the caller waits: the reply that came
    # first is what the caller gets, the cancellation is seen at its next checkpoint.
    slot = ReplySlot()
    slot.set(42)
    with trio.CancelScope() as scope:
        scope.cancel()
        assert await slot.wait() == 42
    assert not scope.cancelled_caught
    assert slot.settled


async def test_stopping_an_unknown_actor_is_a_checkpoint() -> None:
    async with fame.lowlevel.open_supervisor() as sup:
        with trio.testing.assert_checkpoints():
            await sup.stop("nobody@local")


# --- the uplink's send path follows the same discipline -----------------------------


async def test_an_uplink_send_that_raises_cancelled_sent_nothing() -> None:
    from fame._fabric._identity import NodeStores
    from fame._fabric._uplink import FabricUplink
    from fame._protocol._identity import Identity
    from fame._wire._schema import Envelope, Request

    async with fame.open_node(storage_provider=object()) as node:
        uplink = FabricUplink(
            node, "ws://127.0.0.1:1", "", Identity.generate(), NodeStores(), ephemeral=True
        )
        send, receive = trio.open_memory_channel[bytes](4)
        uplink._out = send  # a link that is up, with room in its queue
        envelope = Envelope(0, "echo@elsewhere", 1, Request("ping", {}))
        with trio.CancelScope() as scope:
            scope.cancel()
            await uplink.send(envelope)
        assert scope.cancelled_caught
        with pytest.raises(trio.WouldBlock):
            receive.receive_nowait()  # Cancelled: the envelope did not go out
        with trio.testing.assert_checkpoints():
            await uplink.send(envelope)
        assert receive.receive_nowait()  # sent, and the caller saw no error
