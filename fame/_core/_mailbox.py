"""An actor's mailbox: a bounded queue with many senders and one receiving task.

It behaves as a trio memory channel with one send and one receive
endpoint (the same errors, checkpoints and wake-up order), written for
that one shape: a deque, the parked receiver in a plain attribute, no
endpoint objects or clones. A trio channel's receive raises and catches
``WouldBlock`` each time it finds the buffer empty, which an actor does
after every message it handles; this one just parks. A local round trip
costs that much less.

Sending: :meth:`Mailbox.send_nowait` hands the message to the parked
receiver, else queues it if there is room, else raises ``WouldBlock``;
:meth:`Mailbox.send` waits for room, first come first served.
:meth:`Mailbox.close_sending` ends the stream of messages: waiting
senders get ``ClosedResourceError``, the receiver gets ``EndOfChannel``
once the queue is empty. :meth:`Mailbox.close` (the receiver's side)
fails waiting senders with ``BrokenResourceError`` and drops the queue.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable
from typing import Any, Generic, TypeVar

import outcome
import trio
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

__all__ = ["Mailbox"]

T = TypeVar("T")


class Mailbox(Generic[T]):
    """A bounded queue of messages for one receiving task."""

    __slots__ = ("_closed", "_data", "_peak", "_receiver", "_send_closed", "_senders", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: collections.deque[T] = collections.deque()
        self._receiver: Task | None = None
        self._senders: dict[Task, T] = {}  # waiting for room, in arrival order
        self._send_closed = False
        self._closed = False
        self._peak = 0

    def __len__(self) -> int:
        """Messages waiting in the queue."""
        return len(self._data)

    @property
    def ready(self) -> bool:
        """Whether :meth:`receive_nowait` would return a message now (without raising)."""
        return not self._closed and bool(self._data or self._senders)

    @property
    def closed(self) -> bool:
        """Whether a send would fail: either side was closed."""
        return self._send_closed or self._closed

    def statistics(self) -> trio.MemoryChannelStatistics:
        """The figures a trio memory channel reports, for the same state."""
        return trio.MemoryChannelStatistics(
            current_buffer_used=len(self._data),
            max_buffer_size=self._size,
            open_send_channels=0 if self._send_closed else 1,
            open_receive_channels=0 if self._closed else 1,
            tasks_waiting_send=len(self._senders),
            tasks_waiting_receive=0 if self._receiver is None else 1,
            peak_buffer_used=self._peak,
        )

    # --- the senders' side ----------------------------------------------------------

    def send_nowait(self, message: T) -> None:
        """Deliver or queue ``message``; ``WouldBlock`` if the queue is full."""
        if self._send_closed:
            raise trio.ClosedResourceError
        if self._closed:
            raise trio.BrokenResourceError
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            reschedule(receiver, outcome.Value(message))
        elif len(self._data) < self._size:
            self._data.append(message)
            if len(self._data) > self._peak:
                self._peak = len(self._data)
        else:
            raise trio.WouldBlock

    async def send(self, message: T) -> None:
        """Queue ``message``, waiting for room (a checkpoint, as a channel's ``send``)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.send_nowait(message)
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        task = current_task()
        self._senders[task] = message

        def abort(_: Any) -> Abort:
            del self._senders[task]
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    def close_sending(self) -> None:
        """No more messages: waiting senders fail, the receiver ends after the queue."""
        if self._send_closed:
            return
        self._send_closed = True
        senders, self._senders = self._senders, {}
        for task in senders:
            reschedule(task, outcome.Error(trio.ClosedResourceError()))
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            reschedule(receiver, outcome.Error(trio.EndOfChannel()))

    # --- the receiver's side --------------------------------------------------------

    def receive_nowait(self) -> T:
        """The next message; ``WouldBlock`` if none, ``EndOfChannel`` once closed and empty."""
        if self._closed:
            raise trio.ClosedResourceError
        if self._senders:
            task = next(iter(self._senders))
            self._data.append(self._senders.pop(task))
            reschedule(task)
        if self._data:
            return self._data.popleft()
        if self._send_closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    def receive(self) -> Awaitable[T]:
        """The next message, waiting for one (a checkpoint, as a channel's ``receive``).

        A plain function returning what to await: a receiver that parks
        awaits trio's own wait directly, one coroutine frame less per
        message. Await it at once: the task counts as parked from this call.
        """
        if self._data or self._senders or self._send_closed or self._closed:
            return self._receive_ready()
        # Parking is the cancel point: a pending cancellation aborts it at once.
        self._receiver = current_task()
        received: Awaitable[T] = wait_task_rescheduled(self._abort_receive)  # noqa: ASYNC105
        return received

    async def _receive_ready(self) -> T:
        await trio.lowlevel.checkpoint_if_cancelled()
        message = self.receive_nowait()  # raises once closed
        await trio.lowlevel.cancel_shielded_checkpoint()
        return message

    def _abort_receive(self, _: Any) -> Abort:
        self._receiver = None
        return Abort.SUCCEEDED

    def close(self) -> None:
        """The receiver is done: waiting senders fail, queued messages are dropped."""
        if self._closed:
            return
        self._closed = True
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            reschedule(receiver, outcome.Error(trio.ClosedResourceError()))
        senders, self._senders = self._senders, {}
        for task in senders:
            reschedule(task, outcome.Error(trio.BrokenResourceError()))
        self._data.clear()
