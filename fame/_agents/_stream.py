"""Streams with credit-based flow control, the same locally and remotely.

A streaming request carries an initial ``credit``: how many items the
consumer can buffer. The producer sends one :class:`StreamItem` per credit
and then waits; the consumer returns credit (a :class:`Credit` frame) after
it has *consumed* half of its window. So a consumer that stops reading
stalls the producer after at most one window, and neither side, nor any
router in between, holds more than a window of items per stream.

A producer whose consumer grants no credit for the *idle timeout* (300 s,
``FAME_STREAM_IDLE_TIMEOUT`` or ``open_node(stream_idle_timeout=...)``)
gives up: its generator is closed and the consumer, if it ever reads on,
gets an error saying so. That is the last resort for a consumer that
stopped reading without cancelling.

:class:`CreditWindow` (consumer side) and :class:`CreditBalance`
(producer side) are the bookkeeping, free of I/O.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from .._core._errors import DeadlineExceeded, NodeClosed, ProtocolError, remote_error
from .._wire._schema import Cancel, Credit, Error, Frame, Request, StreamEnd, StreamItem

if TYPE_CHECKING:
    from ._node import Node

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "IDLE_TIMEOUT_VARIABLE",
    "CreditBalance",
    "CreditWindow",
    "Stream",
    "StreamConsumer",
    "StreamProducer",
    "idle_timeout_from_env",
    "timeout_ms",
]

DEFAULT_WINDOW = 64
DEFAULT_IDLE_TIMEOUT = 300.0
IDLE_TIMEOUT_VARIABLE = "FAME_STREAM_IDLE_TIMEOUT"


def idle_timeout_from_env(environ: Mapping[str, str] | None = None) -> float:
    """The producer idle timeout in seconds: ``FAME_STREAM_IDLE_TIMEOUT``, else 300.

    Raises :class:`ValueError` naming the variable for anything but a
    positive number of seconds.
    """
    text = (os.environ if environ is None else environ).get(IDLE_TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_IDLE_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (0 < seconds < math.inf):
        raise ValueError(
            f"{IDLE_TIMEOUT_VARIABLE}: expected a number of seconds greater than 0, got {text!r}"
        )
    return seconds


class CreditWindow:
    """Consumer-side credit: when to give how much back."""

    __slots__ = ("consumed", "outstanding", "window")

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if window < 1:
            raise ValueError("a stream window must be at least 1")
        self.window = window
        self.outstanding = window  # items the producer may still send
        self.consumed = 0

    def on_item(self) -> None:
        """An item arrived; raise :class:`fame.ProtocolError` if it had no credit."""
        if self.outstanding <= 0:
            raise ProtocolError("stream producer sent an item without credit")
        self.outstanding -= 1

    def on_consumed(self) -> int:
        """An item was handed to the reader; return credit to grant now (0: none yet)."""
        self.consumed += 1
        if self.consumed * 2 >= self.window:
            grant, self.consumed = self.consumed, 0
            self.outstanding += grant
            return grant
        return 0


class CreditBalance:
    """Producer-side credit: how many items may be sent before waiting."""

    __slots__ = ("_changed", "available")

    def __init__(self, initial: int) -> None:
        self.available = max(0, initial)
        self._changed = trio.Event()

    def grant(self, n: int) -> None:
        if n > 0:
            self.available += n
            self._changed.set()

    def try_take(self) -> bool:
        """Spend one credit if there is one, without waiting."""
        if self.available > 0:
            self.available -= 1
            return True
        return False

    async def take(self) -> None:
        """Wait for one credit and spend it."""
        while self.available <= 0:
            self._changed = trio.Event()
            await self._changed.wait()
        self.available -= 1


class StreamProducer:
    """The producing side of one stream, registered with the node while it runs."""

    def __init__(self, initial_credit: int) -> None:
        self.credit = CreditBalance(initial_credit)
        self.cancel_scope = trio.CancelScope()
        self.cancelled_by_consumer = False

    def control(self, frame: Frame) -> None:
        if type(frame) is Credit:
            self.credit.grant(frame.n)
        elif type(frame) is Cancel:
            self.cancelled_by_consumer = True
            self.cancel_scope.cancel()


class StreamConsumer:
    """The receiving end of one stream: a bounded queue fed by the node."""

    def __init__(self, address: str, window: int) -> None:
        self.address = address
        self.window = CreditWindow(window)
        # +1 for the closing frame, which needs no credit.
        self._send, self._receive = trio.open_memory_channel[Frame](window + 1)
        self.finished = False
        self._error: BaseException | None = None

    def push(self, frame: Frame) -> None:
        """Called by the node for each frame of this stream (never blocks)."""
        try:
            if type(frame) is StreamItem:
                self.window.on_item()
            self._send.send_nowait(frame)
        except (trio.WouldBlock, ProtocolError):
            self.fail(ProtocolError(f"stream from {self.address} overran its credit"))
        except trio.ClosedResourceError:
            pass

    def fail(self, exc: BaseException) -> None:
        self._error = exc
        self._send.close()

    async def next(self, timeout: float | None) -> tuple[Any, int]:
        """The next item and the credit to grant; raise StopAsyncIteration at the end."""
        try:
            # Items usually wait in the buffer already: take one without paying for
            # a cancel scope. The periodic credit sends keep the reader cooperative.
            await trio.lowlevel.checkpoint_if_cancelled()
            frame = self._receive.receive_nowait()
        except trio.WouldBlock:
            frame = await self._wait(timeout)
        except (trio.EndOfChannel, trio.ClosedResourceError):
            self.finished = True
            raise self._error or NodeClosed("stream closed") from None
        if type(frame) is StreamItem:
            return frame.item, self.window.on_consumed()
        self.finished = True
        if type(frame) is StreamEnd:
            raise StopAsyncIteration
        if type(frame) is Error:
            raise remote_error(
                frame.kind, frame.message, actor=frame.actor, exc_type=frame.exc_type
            )
        raise ProtocolError(f"unexpected {type(frame).__name__} in a stream")

    async def _wait(self, timeout: float | None) -> Frame:
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        with trio.move_on_at(deadline):
            try:
                return await self._receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                self.finished = True
                raise self._error or NodeClosed("stream closed") from None
        raise DeadlineExceeded(f"{self.address} sent no stream item within {timeout} s")


class Stream:
    """The results of a streaming call: ``async for item in stream``.

    Use it as ``async with`` (or call :meth:`aclose`) to stop early: the
    agent's generator is then closed. A stream dropped unfinished is
    cancelled the same way when it is garbage collected. ``timeout`` bounds
    the wait for each item.
    """

    def __init__(
        self,
        node: Node,
        address: str,
        op: str,
        args: dict[str, Any],
        timeout: float,
        window: int,
        item_type: Any,
    ) -> None:
        self._node = node
        self._address = address
        self._op = op
        self._args = args
        self._timeout = timeout
        self._item_type = item_type
        self._consumer = StreamConsumer(address, window)
        self._corr: int | None = None

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Any:
        if self._corr is None:
            request = Request(
                self._op, self._args, True, self._consumer.window.window, timeout_ms(self._timeout)
            )
            self._corr = await self._node.send_stream_request(
                self._address, request, self._consumer, self._timeout
            )
        try:
            item, grant = await self._consumer.next(self._timeout)
        except BaseException:
            if self._consumer.finished:
                self._node.forget_stream(self._corr)  # ended: nothing more will arrive
            raise
        if grant:
            await self._node.send_stream_control(self._address, self._corr, Credit(grant))
        if self._item_type is not Any:
            item = msgspec.convert(item, self._item_type, strict=False)
        return item

    async def aclose(self) -> None:
        """Stop the stream; the agent's generator is closed."""
        finished, self._consumer.finished = self._consumer.finished, True
        if self._corr is None:
            return
        self._node.forget_stream(self._corr)
        if not finished:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._node.send_stream_control(
                    self._address, self._corr, Cancel("consumer closed the stream")
                )

    def __del__(self) -> None:
        if self._corr is not None and not self._consumer.finished:
            self._node.cancel_stream_nowait(self._address, self._corr)


def timeout_ms(timeout: float) -> int | None:
    """A deadline in seconds as the wire's milliseconds (``None``: no deadline)."""
    return None if math.isinf(timeout) else max(0, int(timeout * 1000))
