"""A link's outgoing queue, bounded in bytes, not in messages.

One websocket link has one writer task (``write_batched``) and many
producers. A queue bounded in messages lets 256 messages of 1 MiB each
pile up for a peer that reads nothing; this one counts the bytes it holds
against a ``budget``:

- :meth:`LinkQueue.send_nowait` admits a message while the queue holds at
  most ``budget`` bytes with it (and always when the queue is empty, so one
  message larger than the budget still passes), else raises
  ``trio.WouldBlock``. :meth:`LinkQueue.send` waits for that room instead
  (the node's own uplink: backpressure within its node).
- :meth:`LinkQueue.push` goes beyond the budget, up to ``hard_cap``: for
  what must not be refused or wait (an answer on its way back, a frame the
  sentinel itself owes its peer). Past the cap it returns False, and the
  owner closes the link: its peer is not reading.
- :attr:`LinkQueue.over_since` is when the queue last went over its
  budget (None while it is within), for the stall guard that closes a
  link whose peer stays behind too long.

The writer takes messages with :meth:`receive` / :meth:`receive_nowait`
(the names of a trio receive channel, which ``write_batched`` also
accepts); each message taken frees its bytes. An empty message is a flush
marker to the writer and weighs nothing. :meth:`close` ends it: senders
get ``trio.ClosedResourceError``, the writer drains what is left and then
``trio.EndOfChannel``.

``account``, when set, is told every change of the bytes held (a delta),
so that the sentinel can add up what waits for each principal across its
links.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
import trio

__all__ = ["DEFAULT_LINK_BUFFER", "DEFAULT_STALL_GRACE", "LinkLimits", "LinkQueue"]

DEFAULT_LINK_BUFFER = 4 << 20
"""Bytes a link's outgoing queue holds before senders wait or are refused (4 MiB)."""
DEFAULT_STALL_GRACE = 5.0
"""Seconds a sentinel's link may stay over its budget before it is closed as stalled."""


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


@attrs.frozen
class LinkLimits:
    """How much a sentinel queues for each link, and how long a link may stay behind.

    ``buffer`` is each link's budget in bytes: a request for a link over it
    is refused at once (``overloaded``, nothing ran). Answers and stream
    frames still go on, up to ``hard_cap`` (default twice the budget). A
    link over its budget for ``stall_grace`` seconds, or past its hard cap,
    is closed: its peer is not reading.
    """

    buffer: int = attrs.field(default=DEFAULT_LINK_BUFFER, validator=_positive)
    stall_grace: float = attrs.field(default=DEFAULT_STALL_GRACE, validator=_positive)
    hard_cap: int | None = None

    def queue(self) -> LinkQueue:
        """A new link's outgoing queue with these limits."""
        return LinkQueue(self.buffer, self.hard_cap)


class LinkQueue:
    """The outgoing messages of one link, bounded in bytes (see the module docstring)."""

    def __init__(self, budget: int = DEFAULT_LINK_BUFFER, hard_cap: int | None = None) -> None:
        if budget < 1:
            raise ValueError(f"a link queue's budget must be at least 1 byte, got {budget}")
        self.budget = budget
        self.hard_cap = max(budget, hard_cap if hard_cap is not None else 2 * budget)
        self.bytes = 0
        self.peak = 0  # the most bytes it ever held: what a test or an operator bounds
        self.over_since: float | None = None
        self._items: deque[bytes] = deque()
        self._closed = False
        # The writer parked in receive(), woken by a direct reschedule (no Event
        # to make again each time the queue runs dry).
        self._reader: trio.lowlevel.Task | None = None
        self._room = trio.Event()
        self._senders_waiting = 0  # senders in send() waiting for room
        self._over = trio.Event()
        self._account: Callable[[int], None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def over_budget(self) -> bool:
        return self.bytes > self.budget

    def set_account(self, account: Callable[[int], None] | None) -> None:
        """Report byte changes to ``account`` from now on (None: to nobody).

        The new account is told what the queue holds now, the old one that
        it holds nothing any more: sums over queues stay right whenever the
        owner changes.
        """
        if self._account is not None:
            self._account(-self.bytes)
        self._account = account
        if account is not None:
            account(self.bytes)

    # --- the producers' side --------------------------------------------------------

    def has_room(self, size: int) -> bool:
        """Whether :meth:`send_nowait` would admit a message of ``size`` bytes now."""
        return self.bytes == 0 or self.bytes + size <= self.budget

    def send_nowait(self, data: bytes) -> None:
        """Queue ``data`` if there is room within the budget, else ``trio.WouldBlock``."""
        if self._closed:
            raise trio.ClosedResourceError("the link's queue is closed")
        if not self.has_room(len(data)):
            raise trio.WouldBlock
        self._append(data)

    async def send(self, data: bytes) -> None:
        """Queue ``data``, waiting for room within the budget."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._closed:
                raise trio.ClosedResourceError("the link's queue is closed")
            if self.has_room(len(data)):
                self._append(data)
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            room = self._room
            self._senders_waiting += 1
            try:
                await room.wait()
            finally:
                self._senders_waiting -= 1

    def push(self, data: bytes) -> bool:
        """Queue ``data`` beyond the budget, up to the hard cap; False if it would pass that.

        Under the budget any message is admitted (the largest one the codec
        allows included); over it, only while the total stays within
        ``hard_cap``. Raises ``trio.ClosedResourceError`` once closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("the link's queue is closed")
        if self.bytes > self.budget and self.bytes + len(data) > self.hard_cap:
            return False
        self._append(data)
        return True

    def close(self) -> None:
        """No more sends; the writer still drains what is queued."""
        self._closed = True
        self._wake_reader()
        self._room.set()

    def _append(self, data: bytes) -> None:
        self._items.append(data)
        self._change(len(data))
        if self._reader is not None:
            self._wake_reader()

    def _wake_reader(self) -> None:
        task, self._reader = self._reader, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    def _change(self, delta: int) -> None:
        if not delta:
            return
        self.bytes += delta
        if self.bytes > self.peak:
            self.peak = self.bytes
        if self._account is not None:
            self._account(delta)
        if self.bytes > self.budget:
            if self.over_since is None:
                self.over_since = trio.current_time()
                self._over.set()
        elif self.over_since is not None:
            self.over_since = None
            self._over = trio.Event()

    # --- the writer's side ----------------------------------------------------------

    def receive_nowait(self) -> bytes:
        """The oldest message; ``trio.WouldBlock`` if none, ``trio.EndOfChannel`` once closed."""
        if not self._items:
            if self._closed:
                raise trio.EndOfChannel
            raise trio.WouldBlock
        data = self._items.popleft()
        self._change(-len(data))
        # Wake the waiting senders; those that still find no room wait again.
        # Only when someone waits: a new Event per message is the writer's
        # most frequent allocation, and almost always nobody is waiting.
        if self._senders_waiting:
            self._room.set()
            self._room = trio.Event()
        return data

    async def receive(self) -> bytes:
        """The oldest message, waiting for one (one task at a time)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._items or self._closed:
            data = self.receive_nowait()
            # Cancelled only ever means "not taken": the message is ours now.
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        if self._reader is not None:
            raise trio.BusyResourceError("another task is receiving from this queue")
        while not (self._items or self._closed):
            self._reader = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort_receive)
        # This task yielded while it waited: no second round.
        return self.receive_nowait()

    def _abort_receive(self, _: object) -> trio.lowlevel.Abort:
        self._reader = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def wait_over_budget(self) -> None:
        """Return once the queue is over its budget (at once if it is now)."""
        await self._over.wait()
