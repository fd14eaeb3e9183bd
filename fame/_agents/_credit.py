"""Credit-based flow control: the bookkeeping of both ends of a stream, free of I/O.

A streaming request carries an initial ``credit``: how many items the
consumer can buffer, and ``credit_bytes``: how many bytes of them. The
producer sends an item per credit while its byte credit is positive (an
item larger than the byte window still goes, alone) and then waits; the
items go one per :class:`StreamItem`, or, to a consumer that asked for them
(``Request.batch``), several per :class:`StreamItems` frame. The consumer
returns credit (a :class:`Credit` frame) after it has *consumed* half of
its window, in items or bytes. So a consumer that stops reading stalls
the producer after at most one window, and neither side, nor any router
in between, holds more than a window per stream.

:class:`StreamConsumer` is the consumer's side (its arithmetic is the
sans-IO :class:`~fame._protocol._credit.CreditWindow`), :class:`CreditBalance`
and :class:`StreamProducer` the producer's.
"""

from __future__ import annotations

import math
from typing import Any

import trio

from .._core._errors import NoAnswerInTime, NodeClosed, ProtocolError, remote_error
from .._protocol._credit import (
    DEFAULT_WINDOW,
    DEFAULT_WINDOW_BYTES,
    MAX_ADAPTIVE_WINDOW,
    CreditWindow,
)
from .._wire._schema import Cancel, Credit, Error, Frame, StreamEnd, StreamItem, StreamItems

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_WINDOW",
    "DEFAULT_WINDOW_BYTES",
    "MAX_ADAPTIVE_WINDOW",
    "CreditBalance",
    "StreamConsumer",
    "StreamProducer",
    "timeout_ms",
]

DEFAULT_IDLE_TIMEOUT = 300.0


def timeout_ms(timeout: float) -> int | None:
    """A deadline in seconds as the wire's milliseconds (``None``: no deadline)."""
    return None if math.isinf(timeout) else max(0, int(timeout * 1000))


class CreditBalance:
    """Producer-side credit: how many items, and bytes, may be sent before waiting.

    ``bytes`` is ``None`` when the consumer set no byte limit (an older
    caller). It may go negative: an item is sent whenever the byte credit
    is positive, however large, and the consumer grants its size back once
    it is consumed.
    """

    __slots__ = ("_changed", "available", "bytes")

    def __init__(self, initial: int, initial_bytes: int | None = None) -> None:
        self.available = max(0, initial)
        self.bytes = initial_bytes
        self._changed = trio.Event()

    @property
    def ready(self) -> bool:
        """Whether one more item may be sent now."""
        return self.available > 0 and (self.bytes is None or self.bytes > 0)

    def grant(self, n: int, nbytes: int = 0) -> None:
        """The consumer returned ``n`` items and ``nbytes`` bytes of credit."""
        if n > 0:
            self.available += n
        if nbytes > 0 and self.bytes is not None:
            self.bytes += nbytes
        if n > 0 or nbytes > 0:
            self._changed.set()

    def try_take(self) -> bool:
        """Spend one item credit if an item may be sent now, without waiting."""
        if self.ready:
            self.available -= 1
            return True
        return False

    async def take(self) -> None:
        """Wait until an item may be sent and spend its item credit."""
        while not self.ready:
            self._changed = trio.Event()
            await self._changed.wait()
        self.available -= 1

    def spend_bytes(self, size: int) -> None:
        """Count an item of ``size`` bytes that was sent against the byte credit."""
        if self.bytes is not None:
            self.bytes -= size


class StreamProducer:
    """The producing side of one stream, registered with the node while it runs."""

    __slots__ = ("cancel_scope", "credit")

    def __init__(self, initial_credit: int, initial_bytes: int | None = None) -> None:
        self.credit = CreditBalance(initial_credit, initial_bytes)
        self.cancel_scope = trio.CancelScope()

    def control(self, frame: Frame) -> None:
        """Act on a control frame from the consumer: more credit, or stop."""
        match frame:
            case Credit(n=n, bytes=nbytes):
                self.credit.grant(n, nbytes)
            case Cancel():
                self.cancel_scope.cancel()
            case _:
                pass


class StreamConsumer:
    """The receiving end of one stream: a bounded queue fed by the node.

    ``max_window`` above ``window`` lets the window grow while the reader
    keeps up (see :class:`~fame._protocol._credit.CreditWindow`). The items
    of a :class:`StreamItems` frame are handed over one by one, still
    encoded (``msgspec.Raw``: the reader decodes them to its item type), and
    each one's credit is returned as it is consumed, as for a
    :class:`StreamItem`.
    """

    def __init__(
        self,
        address: str,
        window: int,
        window_bytes: int | None = DEFAULT_WINDOW_BYTES,
        max_window: int | None = None,
    ) -> None:
        self.address = address
        self.window = CreditWindow(window, window_bytes, max_window)
        # +1 for the closing frame, which needs no credit. The credit check in
        # push() is the real bound: the channel only has to hold the largest window.
        self._send, self._receive = trio.open_memory_channel[Frame](self.window.max_window + 1)
        self.finished = False
        self._error: BaseException | None = None

    def push(self, frame: Frame) -> None:
        """Called by the node for each frame of this stream (never blocks)."""
        try:
            if isinstance(frame, StreamItems):
                # Its items queue one by one, each as the StreamItem it stands for:
                # the queue holds items, whatever frames brought them.
                self.window.on_items(len(frame.items))
                for raw in frame.items:
                    self._send.send_nowait(StreamItem(raw, len(raw)))
                return
            if isinstance(frame, StreamItem):
                self.window.on_item()
            self._send.send_nowait(frame)
        except (trio.WouldBlock, ProtocolError):
            self.fail(ProtocolError(f"stream from {self.address} overran its credit"))
        except trio.ClosedResourceError:
            pass

    def fail(self, exc: BaseException) -> None:
        self._error = exc
        self._send.close()

    async def next(self, timeout: float | None) -> tuple[Any, tuple[int, int]]:
        """The next item and the credit to grant, ``(items, bytes)``.

        Raises StopAsyncIteration at the end. An item of a :class:`StreamItems`
        frame comes as ``msgspec.Raw``, still encoded.
        """
        try:
            # Items usually wait in the buffer already: take one without paying for
            # a cancel scope. The periodic credit sends keep the reader cooperative.
            await trio.lowlevel.checkpoint_if_cancelled()
            frame = self._receive.receive_nowait()
        except trio.WouldBlock:
            self.window.starved = True  # the reader keeps up: the window may grow
            frame = await self._wait(timeout)
        except (trio.EndOfChannel, trio.ClosedResourceError):
            self.finished = True
            raise self._error or NodeClosed("stream closed") from None
        match frame:
            case StreamItem(item=item, size=size):
                return item, self.window.on_consumed(size)
            case StreamEnd():
                self.finished = True
                raise StopAsyncIteration
            case Error(kind, message, actor, exc_type, traceback):
                self.finished = True
                raise remote_error(
                    kind, message, actor=actor, exc_type=exc_type, traceback=traceback
                )
            case _:
                self.finished = True
                raise ProtocolError(f"unexpected {type(frame).__name__} in a stream")

    async def _wait(self, timeout: float | None) -> Frame:
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        with trio.move_on_at(deadline):
            try:
                return await self._receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                self.finished = True
                raise self._error or NodeClosed("stream closed") from None
        raise NoAnswerInTime(f"{self.address} sent no stream item within {timeout} s")
