"""The deadlines of parked waiters: expiry in order, earlier ones first, a bounded heap."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from fame._core._deadlines import MIN_PRUNE, Deadlines
from fame._core._reply import ReplySlot


async def test_each_wait_expires_at_its_own_deadline(autojump_clock: Any) -> None:
    """A later wait does not hold up an earlier one: the task wakes for the earliest."""
    ended: dict[str, float] = {}
    start = trio.current_time()

    async def wait(table: Deadlines, name: str, after: float) -> None:
        with pytest.raises(trio.TooSlowError):
            await ReplySlot().wait(start + after, table)
        ended[name] = trio.current_time() - start

    async with trio.open_nursery() as nursery:
        table = Deadlines(nursery)
        nursery.start_soon(wait, table, "late", 30.0)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(wait, table, "early", 2.0)
        await trio.sleep(31)
        table.close()  # its task ends: the nursery closes
    assert ended == {"early": pytest.approx(2.0), "late": pytest.approx(30.0)}


async def test_an_answer_before_the_deadline_wins_and_nothing_expires_later(
    autojump_clock: Any,
) -> None:
    slot = ReplySlot()

    async def answer() -> None:
        await trio.sleep(1)
        slot.set("answer")

    async with trio.open_nursery() as nursery:
        table = Deadlines(nursery)
        nursery.start_soon(answer)
        assert await slot.wait(trio.current_time() + 5, table) == "answer"
        await trio.sleep(10)  # the expired entry finds the slot answered: no error anywhere
        assert slot.settled and not slot.waiting
        table.close()


async def test_a_late_answer_after_expiry_is_dropped(autojump_clock: Any) -> None:
    slot = ReplySlot()
    async with trio.open_nursery() as nursery:
        table = Deadlines(nursery)
        with pytest.raises(trio.TooSlowError):
            await slot.wait(trio.current_time() + 1, table)
        table.close()
    slot.set("late")
    assert slot.settled and not slot.waiting


async def test_a_closed_table_leaves_the_deadline_to_a_cancel_scope(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        table = Deadlines(nursery)
        table.close()
    start = trio.current_time()
    with pytest.raises(trio.TooSlowError):
        await ReplySlot().wait(start + 3, table)
    assert trio.current_time() - start == pytest.approx(3)


async def test_answered_waits_do_not_grow_the_heap() -> None:
    """Thousands of answered calls with a long deadline leave a heap of bounded size."""
    far = trio.current_time() + 3600
    async with trio.open_nursery() as nursery:
        table = Deadlines(nursery)
        for i in range(20 * MIN_PRUNE):
            slot = ReplySlot()
            slot.set(i)  # answered before the wait: never parked, never in the heap
            assert await slot.wait(far, table) == i

            parked = ReplySlot()
            trio.lowlevel.current_trio_token().run_sync_soon(parked.set, i)  # while parked
            assert await parked.wait(far, table) == i
        assert len(table._heap) <= 2 * MIN_PRUNE
        table.close()
