"""Serving a streaming operation: the producer's side of a stream.

An agent's actor starts :func:`serve_stream` as one of the agent's tasks
for each streaming request it accepts. It runs the agent's generator and
sends one item per credit the consumer granted, then a :class:`StreamEnd`:
one :class:`StreamItem` per item, or, to a consumer that asked for batches
(``Request.batch``), the items that are ready together in one
:class:`StreamItems` frame (see :class:`_Batches`). It waits for credit
*before* it asks the generator for the next item: a stream nobody reads
pulls nothing, so a generator paging through a store reads nothing beyond
what was granted. Each item is encoded once, here (it travels as
``msgspec.Raw``, which the wire copies verbatim); its encoded size is what
the byte credit is charged.

How it ends tells the caller what happened:

- an error the operation declares (``errors=``) reaches the caller as
  ``operation_failed``, and the agent keeps running;
- any other exception is a crash: the caller gets ``ActorCrashed`` and the
  agent is restarted;
- an item too big for the wire ends the stream with a ``protocol`` error,
  without a restart (the agent did nothing wrong);
- a consumer that grants no credit for the node's stream idle timeout
  makes the producer give up: the generator is closed.

A ``Cancel`` from the consumer cancels ``producer.cancel_scope``, which
closes the generator too.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Sequence
from contextlib import aclosing
from typing import Any, Protocol

import msgspec
import trio

from .._core._errors import OperationFailed, ProtocolError, RemoteError, WireError
from .._protocol._credit import FRAME_BYTES, FRAME_ITEMS
from .._wire._schema import Envelope, Request, StreamEnd, StreamItem, StreamItems
from ._credit import CreditBalance, StreamProducer
from ._operation import OperationSpec
from ._switchboard import Switchboard, unsendable

__all__ = ["StreamOwner", "serve_stream"]

log = logging.getLogger("fame.node")

_item_encoder = msgspec.msgpack.Encoder()


def encode_item(value: Any) -> msgspec.Raw:
    """``value`` encoded once for the wire; :class:`fame.WireError` if it cannot be."""
    try:
        return msgspec.Raw(_item_encoder.encode(value))
    except (TypeError, NotImplementedError, OverflowError, RecursionError) as exc:
        raise WireError(f"cannot encode StreamItem: {exc}", code="unencodable") from None


class StreamOwner(Protocol):
    """What serving a stream needs from the actor of the agent that produces it."""

    @property
    def agent(self) -> Any:
        """The agent instance whose generator runs."""

    @property
    def address(self) -> str:
        """The agent's address, named in errors."""

    async def reply_crash(self, envelope: Envelope, exc: Exception) -> None:
        """Tell the caller of ``envelope`` that the agent crashed with ``exc``."""

    async def crash(self, exc: Exception) -> None:
        """Crash (and so restart) the agent from this task."""


async def serve_stream(
    switchboard: Switchboard,
    owner: StreamOwner,
    spec: OperationSpec,
    kwargs: dict[str, Any],
    request: Envelope,
    producer: StreamProducer,
    slots: Sequence[trio.CapacityLimiter] = (),
) -> None:
    """Run streaming operation ``spec`` of ``owner``'s agent for ``request`` to its end.

    The stream holds one token of each of ``slots`` (the agent's
    concurrency limiters) while it works: from when it has credit until it
    runs out of it. If its caller's deadline (``Request.timeout_ms``)
    passes before it got its first slot, it ends silently: nobody waits
    for it any more.
    """
    held = _Slots(slots)
    metrics = switchboard.metrics
    started = time.perf_counter() if metrics.enabled else 0.0
    outcome = "cancelled"  # also a stream its consumer cancelled
    try:
        with producer.cancel_scope:
            try:
                await _serve(switchboard, owner, spec, kwargs, request, producer.credit, held)
                outcome = "ok"
            finally:
                held.release()
    except spec.errors as exc:
        outcome = OperationFailed.kind
        await switchboard.reply_error(
            request,
            OperationFailed.kind,
            str(exc),
            actor=owner.address,
            exc_type=type(exc).__name__,
        )
    except Exception as exc:
        outcome = "actor_crashed"
        await owner.reply_crash(request, exc)
        await owner.crash(exc)
    finally:
        if metrics.enabled:
            # A stream is one call: its time is the whole stream's, from open to end.
            metrics.call(owner.address, spec.name, outcome, time.perf_counter() - started)


class _Slots:
    """The concurrency slots one stream holds: a token of each limiter, or none."""

    __slots__ = ("_held", "_limiters", "_token")

    def __init__(self, limiters: Sequence[trio.CapacityLimiter]) -> None:
        self._limiters = limiters
        self._token = object()
        self._held = 0

    @property
    def held(self) -> bool:
        return self._held == len(self._limiters)

    async def take(self) -> None:
        """Wait for a token of each limiter (in order: the same order for every stream)."""
        while self._held < len(self._limiters):
            await self._limiters[self._held].acquire_on_behalf_of(self._token)
            self._held += 1

    def release(self) -> None:
        while self._held:
            self._held -= 1
            self._limiters[self._held].release_on_behalf_of(self._token)


def _first_wait(request: Envelope) -> float:
    """How long a new stream may wait for its first slot: its caller's deadline."""
    timeout_ms = request.frame.timeout_ms if isinstance(request.frame, Request) else None
    return math.inf if timeout_ms is None else timeout_ms / 1000


class _Ended(enum.Enum):
    """How the pulling of a stream's items ended, when nothing failed."""

    END = "end"  # the generator finished: StreamEnd
    IDLE = "idle"  # no credit for the idle timeout: an error saying so
    UNANSWERED = "unanswered"  # no slot before the caller's deadline: nothing


async def _serve(
    switchboard: Switchboard,
    owner: StreamOwner,
    spec: OperationSpec,
    kwargs: dict[str, Any],
    request: Envelope,
    credit: CreditBalance,
    slots: _Slots,
) -> None:
    """Send the generator's items as credit allows, then the end of the stream.

    To a consumer that takes batches, a sender task (:class:`_Batches`)
    sends what the generator produced while it was busy as one
    :class:`StreamItems` frame. It lives in a nursery of this function: the
    last frame (end, error, or a crash's answer, sent by the caller) always
    goes after every item produced before it.
    """
    frame = request.frame
    batch = frame.batch if isinstance(frame, Request) else 0
    if batch <= 1:
        ended = await _pull(switchboard, owner, spec, kwargs, request, credit, slots, None)
    else:
        sender = _Batches(switchboard, request, min(batch, FRAME_ITEMS))
        failure: Exception | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender.run, nursery.cancel_scope)
                try:
                    ended = await _pull(
                        switchboard, owner, spec, kwargs, request, credit, slots, sender
                    )
                except Exception as exc:
                    # Not raised here: that would cancel the sender and lose the items
                    # produced before the failure. Raised once they were sent.
                    failure = exc
                finally:
                    sender.close()
        except BaseExceptionGroup as group:
            # Cancelled from outside (the consumer, a stopping agent): both tasks
            # were, and the nursery grouped them. The caller tells cancellation
            # from a crash by the bare exception, as without the sender.
            cancelled = _only_cancelled(group)
            if cancelled is None:
                raise
            raise cancelled from None
        if sender.unsendable is not None:
            ended = sender.unsendable  # an item too big for the wire ended the stream
        elif failure is not None:
            try:
                raise failure
            finally:
                failure = None
    match ended:
        case _Ended.END:
            await switchboard.reply(request, StreamEnd())
        case _Ended.IDLE:
            await _give_up_idle_stream(switchboard, owner, spec, request)
        case _Ended.UNANSWERED:
            pass
        case WireError() as too_big:
            # An item too big for the wire ends the stream with a clear
            # error; the agent did nothing wrong: no restart.
            message = unsendable(request, too_big)
            await switchboard.reply_error(request, ProtocolError.kind, message, actor=owner.address)


async def _pull(
    switchboard: Switchboard,
    owner: StreamOwner,
    spec: OperationSpec,
    kwargs: dict[str, Any],
    request: Envelope,
    credit: CreditBalance,
    slots: _Slots,
    batches: _Batches | None,
) -> _Ended | WireError:
    """Pull the generator's items as credit allows and send them (``batches``: hand them over)."""
    first_slot_by = trio.current_time() + _first_wait(request)
    async with aclosing(spec.function(owner.agent, **kwargs)) as items:
        while True:
            # Credit first, then the item: nothing is pulled (nor read from a
            # store) that the consumer is not ready to take. A stream waiting
            # for credit holds no slot: a reader that stalls cannot lock the
            # agent's other callers out until the idle timeout.
            if not credit.try_take():
                switchboard.metrics.credit_stall(owner.address)
                slots.release()
                with trio.move_on_after(switchboard.stream_idle_timeout) as idle:
                    await credit.take()
                if idle.cancelled_caught:
                    return _Ended.IDLE
            if not slots.held:
                with trio.move_on_at(first_slot_by):
                    await slots.take()
                if not slots.held:
                    return _Ended.UNANSWERED  # nobody waits now
                first_slot_by = math.inf
            try:
                item = await items.__anext__()
            except StopAsyncIteration:
                return _Ended.END
            try:
                raw = encode_item(spec.convert_result(item))
                if batches is None:
                    await switchboard.reply(request, StreamItem(raw, len(raw)))
            except WireError as exc:
                return exc
            credit.spend_bytes(len(raw))
            if batches is not None:
                await batches.put(raw)


def _only_cancelled(group: BaseExceptionGroup[BaseException]) -> trio.Cancelled | None:
    """One of the ``Cancelled`` of ``group`` if that is all it holds, else None."""
    matched, rest = group.split(trio.Cancelled)
    if matched is None or rest is not None:
        return None
    first: BaseException = matched
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    assert isinstance(first, trio.Cancelled)
    return first


class _Batches:
    """The items of one stream on their way, several per frame: a buffer and its sender.

    :meth:`put` adds an item; :meth:`run` (a task) sends whatever the
    buffer holds as one frame whenever it gets to run, that is whenever the
    producing task waits (for its generator, for credit, for room): an item
    is never held back to wait for more. A full buffer (``limit`` items, or
    :data:`FRAME_BYTES`) makes :meth:`put` wait for the sender, so a
    generator that never awaits still lets the event loop run once per
    frame.
    """

    def __init__(self, switchboard: Switchboard, request: Envelope, limit: int) -> None:
        self._switchboard = switchboard
        self._request = request
        self._limit = limit
        self._items: list[msgspec.Raw] = []
        self._bytes = 0
        self._closed = False
        self._wanted = trio.Event()  # set when the sender may have something to do
        self._taken = trio.Event()  # set when the sender took the buffer
        self.unsendable: WireError | None = None

    async def put(self, raw: msgspec.Raw) -> None:
        """Add an item to the next frame, first waiting for room if the buffer is full."""
        while self._items and (
            len(self._items) >= self._limit or self._bytes + len(raw) > FRAME_BYTES
        ):
            self._taken = trio.Event()
            await self._taken.wait()
        self._items.append(raw)
        self._bytes += len(raw)
        self._wanted.set()

    def close(self) -> None:
        """No more items will come: the sender sends what is left, then returns."""
        self._closed = True
        self._wanted.set()

    async def run(self, scope: trio.CancelScope) -> None:
        """Send the buffer as frames until it is closed and empty.

        An item too big for the wire stops the stream (``scope``: the
        producer's, so its generator is closed) and is kept in
        :attr:`unsendable`, for the stream's last frame.
        """
        while True:
            if not self._items:
                if self._closed:
                    return
                self._wanted = trio.Event()
                await self._wanted.wait()
                continue
            items, self._items, self._bytes = self._items, [], 0
            self._taken.set()
            try:
                await self._send(items)
            except WireError as exc:
                self.unsendable = exc
                scope.cancel()
                return

    async def _send(self, items: list[msgspec.Raw]) -> None:
        """Send ``items`` as one frame; one by one if that frame is too big for the wire."""
        switchboard, request = self._switchboard, self._request
        if len(items) > 1:
            try:
                await switchboard.reply(request, StreamItems(items))
                return
            except WireError:
                pass  # a smaller limit on the wire than FRAME_BYTES: one item per frame
        for raw in items:
            await switchboard.reply(request, StreamItem(raw, len(raw)))


async def _give_up_idle_stream(
    switchboard: Switchboard, owner: StreamOwner, spec: OperationSpec, request: Envelope
) -> None:
    """End a stream whose consumer granted no credit for the idle timeout.

    The generator is closed by the caller; the consumer is told why, in
    case it reads on (the final frame needs no credit). Bounded: a
    consumer whose path is full gets nothing, as it reads nothing.
    """
    timeout = switchboard.stream_idle_timeout
    message = (
        f"{owner.address} closed stream {spec.name}(): the consumer granted no credit for"
        f" {timeout:g} s (stream idle timeout)"
    )
    log.info("%s", message)
    with trio.move_on_after(min(5.0, timeout)):
        await switchboard.reply_error(request, RemoteError.kind, message, actor=owner.address)
