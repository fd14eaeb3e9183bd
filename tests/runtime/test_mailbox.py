"""The actor mailbox behaves as a trio memory channel with one sender and one receiver end."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from fame._core._mailbox import Mailbox


async def test_senders_wait_for_room_in_arrival_order() -> None:
    box: Mailbox[int] = Mailbox(1)
    box.send_nowait(0)
    with pytest.raises(trio.WouldBlock):
        box.send_nowait(99)
    async with trio.open_nursery() as nursery:
        for value in (1, 2, 3):
            nursery.start_soon(box.send, value)
            await trio.testing.wait_all_tasks_blocked()
        assert box.statistics().tasks_waiting_send == 3
        received = [await box.receive() for _ in range(4)]
    assert received == [0, 1, 2, 3]
    assert box.statistics().current_buffer_used == 0


async def test_a_parked_receiver_gets_the_message_directly() -> None:
    box: Mailbox[str] = Mailbox(1)
    got: list[str] = []

    async def receive() -> None:
        got.append(await box.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        box.send_nowait("direct")
        assert len(box) == 0  # handed over, not queued
    assert got == ["direct"]


async def test_close_sending_drains_then_ends_and_fails_waiting_senders() -> None:
    box: Mailbox[int] = Mailbox(1)
    box.send_nowait(1)
    failed: list[type[BaseException]] = []

    async def send_late() -> None:
        try:
            await box.send(2)
        except trio.ClosedResourceError as exc:
            failed.append(type(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_late)
        await trio.testing.wait_all_tasks_blocked()
        box.close_sending()
    assert failed == [trio.ClosedResourceError]
    with pytest.raises(trio.ClosedResourceError):
        box.send_nowait(3)
    assert await box.receive() == 1  # what was queued is still handled
    with pytest.raises(trio.EndOfChannel):
        await box.receive()


async def test_close_sending_ends_a_parked_receiver() -> None:
    box: Mailbox[int] = Mailbox(4)
    async with trio.open_nursery() as nursery:

        async def receive() -> None:
            with pytest.raises(trio.EndOfChannel):
                await box.receive()

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        box.close_sending()


async def test_closing_the_receiver_breaks_senders_and_drops_the_queue() -> None:
    box: Mailbox[int] = Mailbox(1)
    box.send_nowait(1)
    broken: list[type[BaseException]] = []

    async def send_late() -> None:
        try:
            await box.send(2)
        except trio.BrokenResourceError as exc:
            broken.append(type(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_late)
        await trio.testing.wait_all_tasks_blocked()
        box.close()
    assert broken == [trio.BrokenResourceError]
    assert len(box) == 0
    with pytest.raises(trio.BrokenResourceError):
        box.send_nowait(3)
    with pytest.raises(trio.ClosedResourceError):
        box.receive_nowait()


async def test_cancelled_receive_and_send_leave_nothing_behind(autojump_clock: Any) -> None:
    box: Mailbox[int] = Mailbox(1)
    with trio.move_on_after(1):
        await box.receive()  # parked, then cancelled
    box.send_nowait(1)  # queued: no stale receiver takes it
    assert len(box) == 1
    with trio.move_on_after(1):
        await box.send(2)  # waited for room, then cancelled: not sent
    assert box.statistics().tasks_waiting_send == 0
    assert box.receive_nowait() == 1
    with pytest.raises(trio.WouldBlock):
        box.receive_nowait()


async def test_receive_with_a_message_waiting_is_a_checkpoint() -> None:
    box: Mailbox[int] = Mailbox(2)
    box.send_nowait(1)
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await box.receive()
    assert len(box) == 1  # a cancelled receive took nothing
    with trio.testing.assert_checkpoints():
        assert await box.receive() == 1
