"""A one-shot reply slot: how an ``ask`` waits for its answer.

The slot parks the waiting task with ``trio.lowlevel.wait_task_rescheduled``
and the replier reschedules it directly. That is the same mechanism trio's
own channels use, without a channel per call, which keeps a local ask
close to the cost of a bare mailbox round trip. A deadline for the wait
is kept by the supervisor's :class:`~fame._core._deadlines.Deadlines`, not
by a cancel scope per wait (which would cost as much again).

A slot is answered at most once. Once its waiter gave up (deadline or
cancellation) any later answer is dropped: a slot belongs to one call, so
a late reply can never reach another caller.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from typing import Any

import outcome
import trio
from trio.lowlevel import Abort, current_task, reschedule, wait_task_rescheduled

from ._deadlines import Deadlines

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

    @property
    def waiting(self) -> bool:
        """True while a task is parked on the slot, unanswered."""
        return self._task is not None

    def set(self, value: Any) -> None:
        # _settle written out: this runs once per local call.
        if self._settled:
            return
        self._settled = True
        task = self._task
        if task is not None:
            self._task = None
            reschedule(task, outcome.Value(value))
        else:
            self._outcome = outcome.Value(value)

    def fail(self, exc: BaseException) -> None:
        self._settle(outcome.Error(exc))

    def expire(self) -> None:
        """End the wait with ``trio.TooSlowError``: the deadline came first (it gives up)."""
        task = self._task
        if task is not None:
            self._task = None
            self._settled = True
            reschedule(task, outcome.Error(trio.TooSlowError()))

    def _settle(self, result: outcome.Outcome[Any]) -> None:
        if self._settled:
            return
        self._settled = True
        task = self._task
        if task is not None:
            self._task = None
            reschedule(task, result)
        else:
            self._outcome = result

    def _abort(self, _: Any) -> Abort:
        self._task = None
        self._settled = True
        return Abort.SUCCEEDED

    def wait(
        self, deadline: float = math.inf, deadlines: Deadlines | None = None
    ) -> Awaitable[Any]:
        """The answer (await it); ``trio.TooSlowError`` if ``deadline`` (trio's clock) passes first.

        ``deadlines`` keeps the deadline (a cancel scope does if it is
        ``None`` or no longer runs). A plain function returning what to
        await: a waiter that parks awaits trio's own wait directly, one
        coroutine frame less on every local call. Await it at once: the
        slot counts its task as parked from this call on.
        """
        if self._outcome is not None:
            return self._answered()
        if self._settled:
            raise RuntimeError("reply slot was abandoned")
        if deadline != math.inf and (deadlines is None or not deadlines.add(deadline, self)):
            return self._wait_scoped(deadline)
        self._task = current_task()
        return wait_task_rescheduled(self._abort)  # noqa: ASYNC105 (the caller awaits it)

    async def _answered(self) -> Any:
        # Answered before the waiter came: the answer wins over a pending
        # cancellation, exactly as when it arrives while the waiter is parked
        # (reschedule beats abort). The call already passed its cancel point
        # when it sent its message; here it only yields.
        result, self._outcome = self._outcome, None
        await trio.lowlevel.cancel_shielded_checkpoint()
        assert result is not None
        return result.unwrap()

    async def _wait_scoped(self, deadline: float) -> Any:
        with trio.fail_at(deadline):
            return await self.wait()
