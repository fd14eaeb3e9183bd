"""The caller's side of a streaming call: ``async for item in stream``.

Flow control is credit based (see ``fame._agents._credit``): the stream
grants its producer a window of items (64) and of bytes (4 MiB) and
returns credit as it consumes them, so a caller that stops reading stalls
its producer after at most one window. The default item window grows
(doubling, up to 4,096 items) while the caller keeps up, i.e. finds no
item waiting when it asks for the next; the byte window stays as it is.

A producer whose consumer grants no credit for the *idle timeout* (300 s,
or ``open_node(stream_idle_timeout=...)``) gives up: its generator is
closed and the consumer, if it ever reads on, gets an error saying so.
That is the last resort for a consumer that stopped reading without
cancelling.

A stream refused ``overloaded`` before its first item (nothing ran) is
opened again after a jittered backoff until its timeout, like a call.

A stream should be closed (``async with``, :meth:`Stream.aclose`, or read
to its end). One that is garbage collected open warns with
:class:`ResourceWarning`, as trio's async generators do, and its producer
is cancelled by a callback handed to the event loop: the garbage collector
may run in any thread, so nothing Trio is touched from ``__del__``.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Generic, TypeVar, cast

import msgspec
import trio

from .._core._errors import NoRoute, NotSentInTime, Overloaded, ProtocolError
from .._core._tracing import current_traceparent
from .._protocol._credit import FRAME_ITEMS
from .._wire._schema import Cancel, Credit, Request
from ._credit import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_WINDOW,
    DEFAULT_WINDOW_BYTES,
    MAX_ADAPTIVE_WINDOW,
    StreamConsumer,
    timeout_ms,
)
from ._switchboard import ANSWER_RESERVE, RETRY_BACKOFF, Switchboard

__all__ = ["DEFAULT_IDLE_TIMEOUT", "DEFAULT_WINDOW", "DEFAULT_WINDOW_BYTES", "Stream"]

T = TypeVar("T")

_any_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder()


def _decoder_for(item_type: Any) -> msgspec.msgpack.Decoder[Any] | None:
    """A decoder of one stream item to ``item_type``, as lax as ``convert(strict=False)``.

    ``None`` for a type msgspec cannot decode to: its items are converted the long way.
    """
    if item_type is Any:
        return _any_decoder
    try:
        return msgspec.msgpack.Decoder(item_type, strict=False)
    except (TypeError, ValueError):
        return None


class Stream(Generic[T]):
    """The results of a streaming call: ``async for item in stream``.

    Use it as ``async with`` (or call :meth:`aclose`) to stop early: the
    agent's generator is then closed. ``timeout`` bounds the wait for each
    item. Get one from a proxy (``proxy.op()``) or ``Node.open_stream``.
    """

    def __init__(
        self,
        switchboard: Switchboard,
        address: str,
        op: str,
        args: dict[str, Any],
        timeout: float,
        window: int,
        item_type: Any,
        window_bytes: int | None = DEFAULT_WINDOW_BYTES,
    ) -> None:
        self._switchboard = switchboard
        self._address = address
        self._op = op
        self._args = args
        self._timeout = timeout
        self._item_type = item_type
        # The default window adapts (grows while this reader keeps up); one the
        # caller chose stays as chosen.
        self._max_window = MAX_ADAPTIVE_WINDOW if window == DEFAULT_WINDOW else window
        self._consumer = StreamConsumer(address, window, window_bytes, self._max_window)
        self._decoder = _decoder_for(item_type)
        self._corr: int | None = None
        # Captured now, on the loop: __del__ may run anywhere, even after the run.
        self._token = trio.lowlevel.current_trio_token()

    async def __aenter__(self) -> Stream[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __aiter__(self) -> Stream[T]:
        return self

    async def __anext__(self) -> T:
        if self._corr is None:
            item, grant = await self._start()
        else:
            item, grant = await self._next()
        if grant[0] or grant[1]:
            assert self._corr is not None
            await self._switchboard.send_stream_control(self._address, self._corr, Credit(*grant))
        if type(item) is msgspec.Raw:
            return cast(T, self._decode(item))
        if self._item_type is not Any:
            item = msgspec.convert(item, self._item_type, strict=False)
        return cast(T, item)

    def _decode(self, raw: msgspec.Raw) -> Any:
        """An item of a ``StreamItems`` frame, decoded straight to the item type.

        The same result as decoding it and converting that (what a
        ``StreamItem`` gets), in one pass; an item that does not fit is
        decoded the long way, so it fails exactly as it would have there.
        """
        if self._decoder is not None:
            try:
                return self._decoder.decode(raw)
            except Exception:
                pass  # decoded again below, to fail as a StreamItem would
        try:
            item = _any_decoder.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            raise ProtocolError(f"malformed stream item from {self._address}") from None
        if self._item_type is Any:
            return item
        return msgspec.convert(item, self._item_type, strict=False)

    async def _start(self) -> tuple[Any, tuple[int, int]]:
        """Send the request and wait for the first frame.

        A first answer that says nothing ran (``overloaded``; ``no_route``
        on a node with a sentinel, where the producer may be restarting or
        this node re-attaching) sends the request again after a jittered
        backoff, until the stream's timeout.
        """
        deadline = trio.current_time() + self._timeout
        delays = RETRY_BACKOFF.delays()
        refused = 0
        while True:
            window = self._consumer.window
            remaining = max(0.0, deadline - trio.current_time())
            request = Request(
                self._op,
                self._args,
                True,
                window.window,
                timeout_ms(remaining),
                window.window_bytes,
                trace=current_traceparent(),  # the stream's producer joins the caller's trace
                batch=self._batch(),
            )
            try:
                self._corr = await self._switchboard.send_stream_request(
                    self._address, request, self._consumer, remaining
                )
                return await self._next()
            except (Overloaded, NoRoute) as exc:
                if isinstance(exc, NoRoute) and self._switchboard.uplink is None:
                    raise  # nothing here can bring the address back
                refused += 1
                wait = next(delays)
                if trio.current_time() + wait >= deadline - min(ANSWER_RESERVE, self._timeout / 4):
                    if isinstance(exc, NoRoute):
                        raise NoRoute(
                            f"{exc.message} (sent {refused} times over {self._timeout} s;"
                            " nothing ran)",
                            actor=exc.actor,
                        ) from None
                    raise NotSentInTime(
                        f"{self._address} stayed overloaded for {self._timeout} s: {self._op}()"
                        f" was refused {refused} times and never ran (last: {exc}); retry"
                        " later or raise the deadline"
                    ) from exc
            # A fresh consumer for the next attempt: the refused one is finished.
            self._consumer = StreamConsumer(
                self._address, window.window, window.window_bytes, self._max_window
            )
            await trio.sleep(wait)

    def _batch(self) -> int:
        """How many items the producer may put in one frame.

        Across nodes, several (a frame costs an envelope, a routing decision
        and a decode at each hop: far more than an item). Within this node
        one per frame: there a frame costs no more than its item.
        """
        return 0 if self._switchboard.hosts(self._address) else FRAME_ITEMS

    async def _next(self) -> tuple[Any, tuple[int, int]]:
        assert self._corr is not None
        try:
            return await self._consumer.next(self._timeout)
        except BaseException:
            if self._consumer.finished:
                self._switchboard.forget_stream(self._corr)  # ended: nothing more will arrive
            raise

    async def aclose(self) -> None:
        """Stop the stream; the agent's generator is closed."""
        finished, self._consumer.finished = self._consumer.finished, True
        if self._corr is None:
            await trio.lowlevel.checkpoint()
            return
        self._switchboard.forget_stream(self._corr)
        if not finished:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._switchboard.send_stream_control(
                    self._address, self._corr, Cancel("consumer closed the stream")
                )

    def __del__(self) -> None:
        corr = self._corr
        if corr is None or self._consumer.finished:
            return
        warnings.warn(
            f"stream {self._op}() from {self._address} was dropped without being closed;"
            " use 'async with' or aclose()",
            ResourceWarning,
            stacklevel=2,
            source=self,
        )
        # A finished run took the producer with it: nothing left to cancel.
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._switchboard.drop_stream, self._address, corr)
