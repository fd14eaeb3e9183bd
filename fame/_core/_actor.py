"""Actors: an object, a bounded mailbox, and one task that handles messages.

An :class:`Actor` handles one message at a time, so its own state needs no
locks. Other code talks to it only through an :class:`ActorRef`:
``tell`` puts a message in the mailbox, ``ask`` also waits for the answer
(the value ``handle`` returns). The mailbox is a bounded queue that
behaves as a trio memory channel (:mod:`fame._core._mailbox`): a sender
waits while it is full, so a slow actor slows its
senders instead of growing memory. A ``tell`` whose deadline passes first
fails with :class:`fame.MailboxFull` (as does ``tell_nowait`` at once); an
``ask`` fails with :class:`fame.DeadlineExceeded`, as for a late answer:
its caller only sees that its deadline passed.

An actor that wants to work on several messages at once (the storage actor
commits many writes in one transaction) sets ``max_batch`` and overrides
``handle_batch``: the runtime then drains up to that many queued messages
without waiting and hands them over together.
"""

from __future__ import annotations

import math
import traceback
from typing import Any, ClassVar

import trio

from ._deadlines import Deadlines
from ._errors import ActorCrashed, MailboxFull, NoAnswerInTime, NodeClosed, NotSentInTime
from ._mailbox import Mailbox
from ._reply import ReplySlot

__all__ = ["Actor", "ActorRef", "Delivery", "crash_error", "crash_traceback"]

DEFAULT_MAILBOX_SIZE = 1024
DEFAULT_ASK_TIMEOUT = 30.0
MAX_TRACEBACK_LENGTH = 8192


class Delivery:
    """One message taken from a mailbox, with the means to answer it."""

    __slots__ = ("message", "slot")

    def __init__(self, message: Any, slot: ReplySlot | None) -> None:
        self.message = message
        self.slot = slot
        """Where the answer of an ``ask`` goes; ``None`` for a ``tell``."""

    @property
    def wants_reply(self) -> bool:
        """True if the sender asked and still waits for the answer."""
        return self.slot is not None and not self.slot.settled

    @property
    def answered(self) -> bool:
        return self.slot is None or self.slot.settled

    def reply(self, value: Any) -> None:
        """Answer an ``ask``; does nothing for a ``tell`` or an abandoned ask."""
        if self.slot is not None:
            self.slot.set(value)

    def fail(self, exc: BaseException) -> None:
        """Make the sender's ``ask`` raise ``exc``."""
        if self.slot is not None:
            self.slot.fail(exc)


class Actor:
    """Base class of everything with a mailbox.

    Override :meth:`handle` (or :meth:`handle_batch`) and, if needed, the
    :meth:`on_start` / :meth:`on_stop` hooks. An exception escaping
    ``handle`` is a crash: the sender of the message being handled gets
    :class:`fame.ActorCrashed`, and the supervisor restarts the actor
    (``on_start`` runs again) while its mailbox, and every message waiting
    in it, survives.
    """

    max_batch: ClassVar[int] = 1
    """How many queued messages :meth:`handle_batch` may get at once."""

    address: str = "<unspawned>"
    """The name the actor was spawned under; set by the supervisor."""

    async def on_start(self) -> None:
        """Called before the first message and after every restart."""

    async def on_stop(self) -> None:
        """Called once when the actor stops (also on cancellation)."""

    async def handle(self, message: Any) -> Any:
        """Handle one message; the return value answers an ``ask``."""
        raise NotImplementedError(f"{type(self).__name__} does not handle messages")

    async def handle_batch(self, deliveries: list[Delivery]) -> None:
        """Handle several messages; answer each with ``reply`` or ``fail``."""
        for delivery in deliveries:
            delivery.reply(await self.handle(delivery.message))


class ActorRef:
    """The handle other code uses to send messages to an actor."""

    __slots__ = ("_send", "address", "deadlines", "stop_reason")

    def __init__(
        self, address: str, send: Mailbox[Delivery], deadlines: Deadlines | None = None
    ) -> None:
        self.address = address
        self._send = send
        self.deadlines = deadlines
        """What keeps the deadlines of waits for this actor's answers (its supervisor's)."""
        self.stop_reason: str | None = None
        """Why the actor takes no more messages, when that is worth more than "stopped"."""

    def __repr__(self) -> str:
        return f"<ActorRef {self.address}>"

    async def tell(self, message: Any, *, timeout: float | None = None) -> None:
        """Put ``message`` in the mailbox, waiting while it is full.

        Raises :class:`fame.MailboxFull` if ``timeout`` seconds pass first
        and :class:`fame.NodeClosed` if the actor no longer takes messages.
        """
        await self._put(Delivery(message, None), timeout)

    async def tell_then_wait(self, message: Any, *, timeout: float | None = None) -> None:
        """:meth:`tell`, for a caller that parks right after (a call waiting for its answer).

        The same errors and cancel point; it only skips the yield after
        queueing, since the caller's wait is its schedule point.
        """
        delivery = Delivery(message, None)
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._offer(delivery):
            await self._put_slowly(delivery, timeout)

    def offer(self, message: Any) -> bool:
        """Put ``message`` in the mailbox if that needs no waiting; False if full or closed.

        No checkpoint: for a caller that checked for cancellation itself
        and parks right after (a local call waiting for its answer); on
        False it falls back to :meth:`tell`, which waits or says why not.
        """
        try:
            self._send.send_nowait(Delivery(message, None))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    def tell_nowait(self, message: Any) -> None:
        """Put ``message`` in the mailbox or raise :class:`fame.MailboxFull` at once."""
        try:
            self._send.send_nowait(Delivery(message, None))
        except trio.WouldBlock:
            raise MailboxFull(f"mailbox of {self.address} is full", actor=self.address) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._closed() from None

    async def ask(self, message: Any, *, timeout: float | None = DEFAULT_ASK_TIMEOUT) -> Any:
        """Send ``message`` and wait for the answer.

        ``timeout`` bounds the whole call, waiting for mailbox room
        included; past it :class:`fame.DeadlineExceeded` is raised (also
        when the mailbox stayed full: nothing was queued then) and a late
        answer is dropped. If the actor crashes on the message,
        :class:`fame.ActorCrashed` is raised.
        """
        slot = ReplySlot()
        deadline = trio.current_time() + timeout if timeout is not None else math.inf
        delivery = Delivery(message, slot)
        # No yield after queueing: waiting for the answer is this call's schedule point.
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._offer(delivery):
            try:
                await self._put_slowly(delivery, timeout)
            except MailboxFull:
                raise NotSentInTime(
                    f"{self.address} had no mailbox room within {timeout} s; nothing was queued"
                ) from None
        try:
            return await slot.wait(deadline, self.deadlines)
        except trio.TooSlowError:
            pass
        raise NoAnswerInTime(f"{self.address} did not answer within {timeout} s")

    # Trio's channel discipline: a cancelled caller raises before the message is
    # queued (so Cancelled means "not sent"), and one that was not cancelled
    # still yields to the scheduler after queueing it, unless it is about to
    # wait (tell_then_wait, ask), which yields anyway.

    async def _put(self, delivery: Delivery, timeout: float | None) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._offer(delivery):
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            await self._put_slowly(delivery, timeout)

    def _offer(self, delivery: Delivery) -> bool:
        """Queue ``delivery`` if that needs no waiting; False if the mailbox is full or closed."""
        try:
            self._send.send_nowait(delivery)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    async def _put_slowly(self, delivery: Delivery, timeout: float | None) -> None:
        """What follows a refused :meth:`_offer`: wait for room, or say why not."""
        if self._send.closed:
            await trio.lowlevel.cancel_shielded_checkpoint()
            raise self._closed()
        try:
            with trio.fail_after(math.inf if timeout is None else timeout):
                await self._send.send(delivery)
        except trio.TooSlowError:
            raise MailboxFull(
                f"mailbox of {self.address} stayed full for {timeout} s", actor=self.address
            ) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._closed() from None

    def _closed(self) -> NodeClosed:
        return NodeClosed(self.stop_reason or f"{self.address} is stopped")


def crash_error(address: str, exc: BaseException) -> ActorCrashed:
    """The error a caller gets when ``address`` crashed handling its message.

    It carries the crash's traceback as text (what crosses the wire to a
    remote caller), and ``exc`` itself as its ``__cause__`` (what a caller
    on the same node gets in its own traceback).
    """
    error = ActorCrashed(
        str(exc), actor=address, exc_type=type(exc).__name__, traceback=crash_traceback(exc)
    )
    error.__cause__ = exc
    return error


def crash_traceback(exc: BaseException) -> str:
    """``exc``'s traceback as text, its innermost frames kept if it is too long.

    Bounded so that the ``Error`` frame carrying it always fits on the wire.
    """
    text = "".join(traceback.format_exception(exc))
    if len(text) <= MAX_TRACEBACK_LENGTH:
        return text
    return "...\n" + text[-MAX_TRACEBACK_LENGTH:]
