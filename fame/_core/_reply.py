"""A one-shot reply slot: how an ``ask`` waits for its answer.

The slot parks the waiting task with ``trio.lowlevel.wait_task_rescheduled``
and the replier reschedules it directly. That is the same mechanism trio's
own channels use, without a channel per call, which keeps a local ask
close to the cost of a bare memory-channel ping-pong.

A slot is answered at most once. Once its waiter gave up (deadline or
cancellation) any later answer is dropped: a slot belongs to one call, so
a late reply can never reach another caller.
"""

from __future__ import annotations

from typing import Any

import outcome
import trio

__all__ = ["ReplySlot"]


class ReplySlot:
    __slots__ = ("_outcome", "_settled", "_task")

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None
        self._outcome: outcome.Outcome[Any] | None = None
        self._settled = False

    @property
    def settled(self) -> bool:
        """True once answered, or once the waiter stopped waiting."""
        return self._settled

    def set(self, value: Any) -> None:
        self._settle(outcome.Value(value))

    def fail(self, exc: BaseException) -> None:
        self._settle(outcome.Error(exc))

    def _settle(self, result: outcome.Outcome[Any]) -> None:
        if self._settled:
            return
        self._settled = True
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task, result)
        else:
            self._outcome = result

    async def wait(self) -> Any:
        if self._outcome is not None:
            # Answered before the waiter came: the answer wins over a pending
            # cancellation, exactly as when it arrives while the waiter is parked
            # (reschedule beats abort). The call already passed its cancel point
            # when it sent its message; here it only yields.
            result, self._outcome = self._outcome, None
            await trio.lowlevel.cancel_shielded_checkpoint()
            return result.unwrap()
        if self._settled:
            raise RuntimeError("reply slot was abandoned")
        self._task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._task = None
            self._settled = True
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)
