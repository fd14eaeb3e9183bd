"""The switchboard: where a node's envelopes go, and how their answers come back.

Every envelope a node sends passes here: to a local actor's mailbox, to a
caller waiting on this node (its reply address), or to the *uplink* (the
link to a sentinel, when the node has one). Calls and streams from this
node are matched with their answers by correlation id in three tables:
pending calls, open streams (consumers) and, for requests that left
through the uplink, what :meth:`Switchboard.link_lost` must fail.

Correlation ids are random 63-bit numbers (:func:`random_corr`), never
one still waiting, so no peer can guess the id of another node's call. An
answer is taken only if this node asked for it: its corr is waiting, it
came the way its request left (through the uplink or not), and it is the
kind of answer that fits (a reply or an error for a call; an item, an end
or an error for a stream). Anything else is dropped and counted
(:attr:`Switchboard.dropped_answers`).

Local delivery copies every payload through msgpack, the wire's own rules,
so an agent and its caller never share a mutable object: a local call
behaves exactly like a remote one.

Overload is backpressure, not an error. A request from the uplink for an
agent whose mailbox is full waits in the node's bounded
:class:`~fame._agents._waiting_room.WaitingRoom` until room appears; only
when that is full is it answered ``overloaded``. A call from this node
that is answered ``overloaded`` (by an agent's node, or by a sentinel
whose link to it is full) is sent again after a jittered backoff (5 ms
doubling to 250 ms) until the caller's own deadline, which then fails with
:class:`fame.DeadlineExceeded` saying the target stayed overloaded:
``overloaded`` means nothing ran, so sending again is always safe.

This is plumbing: the public face is :class:`fame.Node`; the fabric
reaches it through the node's underscore methods.
"""

from __future__ import annotations

import itertools
import logging
import math
import sys
import time
from collections.abc import Callable, Coroutine
from contextlib import suppress
from math import isinf
from typing import Any, Protocol

import msgspec
import trio

from .._core import _entropy
from .._core._actor import ActorRef
from .._core._address import REPLY_NAME, Address
from .._core._backoff import Backoff
from .._core._deadlines import Deadlines
from .._core._errors import (
    MailboxFull,
    NoAnswerInTime,
    NodeClosed,
    NoRoute,
    NotSentInTime,
    Overloaded,
    ProtocolError,
    RemoteError,
    RequestLost,
    WireError,
    remote_error,
)
from .._core._metrics import NO_METRICS, Metrics
from .._core._reply import ReplySlot
from .._core._supervisor import Supervisor
from .._core._tracing import OTEL_TRACE, current_traceparent, span, tracing_on
from .._wire._schema import (
    Cancel,
    Credit,
    Envelope,
    Error,
    Frame,
    Reply,
    Request,
    StreamEnd,
    StreamItem,
    StreamItems,
)
from ._credit import DEFAULT_IDLE_TIMEOUT, StreamConsumer, StreamProducer, timeout_ms
from ._waiting_room import Waiting, WaitingRoom

__all__ = [
    "CORR_LIMIT",
    "REPLY_NAME",
    "RETRY_BACKOFF",
    "Switchboard",
    "Uplink",
    "new_request_id",
    "random_corr",
    "unsendable",
]

log = logging.getLogger("fame.node")

CORR_LIMIT = 1 << 63
"""Correlation ids are below this: they fit a msgpack int64 on the wire."""

RETRY_BACKOFF = Backoff(0.005, 0.25, jitter=True)
"""The waits before sending a call again (answered ``overloaded``, ``no_route``, or lost)."""

ANSWER_RESERVE = 0.5
"""Seconds (at most a quarter of the deadline) left for the last attempt to be answered.

A call does not send another attempt with less time left than that, or
than twice the round trip of its last attempt: it ends with the definite
error of its last answered attempt ("nothing ran") rather than cut off
waiting for one ("may have run").
"""


def random_corr() -> int:
    """A correlation id nobody can guess: uniform in ``1 .. CORR_LIMIT - 1``."""
    while True:
        corr = next(_entropy.numbers) >> 1
        if corr:
            return corr


def new_request_id() -> str:
    """A request id nobody can guess, in time order: 28 hex digits.

    The milliseconds since the epoch (11 digits), then 68 random bits. The
    time first keeps the ids a store records for deduplication in index
    order (each new one lands at the end of the index: cheap to insert);
    the random part keeps them unguessable and unique.
    """
    global _id_ms, _id_prefix
    ms = time.time_ns() // 1_000_000
    if ms != _id_ms:  # formatted once per millisecond
        _id_prefix = f"{ms:011x}"
        _id_ms = ms  # set last: whoever sees this millisecond sees its prefix
    return _id_prefix + next(_entropy.hex68)


_id_ms = -1
_id_prefix = ""


class _Attempt:
    """Whether one attempt of a call left this node and waits for its answer (may be running)."""

    __slots__ = ("unanswered",)

    def __init__(self) -> None:
        self.unanswered = False


class _NoRoom(Exception):
    """The deadline of a local call passed while it waited for mailbox room: nothing was sent."""


class _LinkBusy(Exception):
    """The uplink had no room for a call's first attempt at once: nothing was sent."""


class _Tries:
    """The attempts of one call so far: how many, the last's answer, whether one may have run."""

    __slots__ = ("attempt", "attempts", "began", "last", "maybe_ran")

    def __init__(self, first_began: float | None = None, *, unanswered: bool = False) -> None:
        """No attempt yet; or one (local, unscoped) sent at ``first_began``."""
        self.attempts = 0 if first_began is None else 1
        self.attempt = _Attempt()
        self.attempt.unanswered = unanswered
        self.began = first_began or 0.0  # when the last attempt was sent
        self.maybe_ran = False  # an attempt reached the target and its outcome is unknown
        self.last: RemoteError | None = None


_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Frame] = msgspec.msgpack.Decoder(Frame)


class Uplink(Protocol):
    """What a node needs from its link to a sentinel (see ``fame._fabric._uplink``)."""

    pools: bool
    """Whether this node's agents may join pools (``spawn(..., pool=True)``)."""

    async def send(self, envelope: Envelope) -> None:
        """Send an envelope towards the fabric; raise :class:`fame.NoRoute` if offline."""

    def send_nowait(self, envelope: Envelope) -> None:
        """Send an envelope if it fits at once; drop it silently otherwise (best effort)."""

    # An uplink may also have ``offer(envelope) -> bool``: queue the envelope if
    # that needs no waiting (False: nothing queued), raising as ``send`` does.
    # The first attempt of a remote call then needs no cancel scope (see
    # Switchboard._call_remote); without it every attempt goes through ``send``.

    def bind(self, address: str, *, pool: bool = False) -> None:
        """Ask the sentinel to route ``address`` to this node (asynchronously).

        With ``pool``, the node joins the pool of nodes serving ``address``.
        """

    def unbind(self, address: str) -> None:
        """Ask the sentinel to stop routing ``address`` to this node."""


def local_copy(frame: Frame) -> Frame:
    """``frame`` with its payload copied as the wire would: encoded and decoded.

    Arguments, results and stream items are the only mutable parts of a
    frame; the frames themselves are frozen. Raises :class:`fame.WireError`
    for a payload the wire cannot carry, as a remote call would.
    """
    match frame:
        case Request() | Reply() | StreamItem():
            try:
                return _decoder.decode(_encoder.encode(frame))
            except (TypeError, NotImplementedError, OverflowError, RecursionError) as exc:
                raise WireError(
                    f"cannot encode {type(frame).__name__}: {exc}", code="unencodable"
                ) from None
        case _:
            return frame


_args_decoder: msgspec.msgpack.Decoder[dict[str, Any]] = msgspec.msgpack.Decoder(dict[str, Any])
_any_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder()


def copied_args(args: dict[str, Any]) -> dict[str, Any]:
    """``args`` copied as :func:`local_copy` copies a request's: encoded and decoded.

    For a request this node builds itself, whose other fields are immutable
    and valid: only the arguments need the copy.
    """
    try:
        return _args_decoder.decode(_encoder.encode(args))
    except (TypeError, NotImplementedError, OverflowError, RecursionError) as exc:
        raise WireError(f"cannot encode Request: {exc}", code="unencodable") from None


def copied_answer(frame: Frame) -> Frame:
    """:func:`local_copy` of an answer, copying only a reply's result (its one mutable part)."""
    if type(frame) is not Reply:
        return local_copy(frame)
    try:
        return Reply(_any_decoder.decode(_encoder.encode(frame.result)))
    except (TypeError, NotImplementedError, OverflowError, RecursionError) as exc:
        raise WireError(f"cannot encode Reply: {exc}", code="unencodable") from None


async def _converted(call: Coroutine[Any, Any, Any], convert: Callable[[Any], Any]) -> Any:
    """The result of ``call``, converted (a typed proxy's call that is not local)."""
    return convert(await call)


def unsendable(request: Envelope, exc: WireError) -> str:
    """Why the answer to ``request`` (a result or a stream item) cannot go on the wire."""
    match request.frame:
        case Request(op=op):
            return f"the result of {op}() cannot be sent to {request.reply_to}: {exc.reason}"
        case _:
            return f"the result of the request cannot be sent to {request.reply_to}: {exc.reason}"


class Switchboard:
    """A node's routing and its tables of calls and streams waiting on answers."""

    def __init__(
        self,
        supervisor: Supervisor,
        path: str,
        *,
        stream_idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        waiting_room: WaitingRoom | None = None,
        tasks: trio.Nursery | None = None,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self.supervisor = supervisor
        self.metrics = metrics
        """Where this node's agents record their calls (nothing, by default)."""
        self.stream_idle_timeout = stream_idle_timeout
        self.waiting_room = waiting_room if waiting_room is not None else WaitingRoom()
        # Where the tasks that move waiting requests into mailboxes run; without
        # one (a bare switchboard in a test) a full mailbox is answered at once.
        self._tasks = tasks
        # The deadlines of first attempts of remote calls (Switchboard._call_remote),
        # in the node's nursery: the supervisor's table stops with its last actor.
        self._remote_deadlines = Deadlines(tasks) if tasks is not None else None
        self._movers: set[str] = set()
        self.uplink: Uplink | None = None
        self._ids = itertools.count(1)
        self.dropped_answers = 0  # answers this node did not ask for (see _on_reply)
        self.pending: dict[int, ReplySlot] = {}
        self.consumers: dict[int, StreamConsumer] = {}
        # Calls and streams whose request left through the uplink, by corr: what
        # link_lost() must fail, since their answers can no longer arrive.
        self.remote: dict[int, str] = {}
        self.producers: dict[tuple[str | None, int | None], StreamProducer] = {}
        # The exception behind a crash answering a call from this node, by corr:
        # the caller's ActorCrashed gets it as __cause__ (frames carry only text).
        self.crash_causes: dict[int, BaseException] = {}
        self.set_path(path)
        # trio.current_time() is three calls deep; the run's clock, asked directly,
        # is one (a local call reads it once).
        try:
            self._now: Callable[[], float] = trio.lowlevel.current_clock().current_time
        except RuntimeError:  # made outside trio.run
            self._now = trio.current_time

    def set_path(self, path: str) -> None:
        """Set the node's own path (the sentinel assigns one on attach)."""
        self.path = Address(REPLY_NAME, path).path
        self.reply_address = f"{REPLY_NAME}@{path}"

    def hosts(self, address: str) -> bool:
        """Whether envelopes to ``address`` are delivered on this node."""
        return address == self.reply_address or self.supervisor.ref(address) is not None

    # --- calling ------------------------------------------------------------------

    def new_corr(self) -> int:
        """A fresh correlation id: random, and none of a call or stream still waiting.

        A collision with one still waiting is drawn again, so an answer is
        never taken for another call.
        """
        while True:
            corr = random_corr()
            if corr not in self.pending and corr not in self.consumers:
                return corr

    def call(
        self,
        address: str,
        op: str,
        args: dict[str, Any],
        timeout: float,
        *,
        request_id: str | None = None,
        retry_safe: bool = False,
        once: bool = False,
        convert: Callable[[Any], Any] | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """:meth:`_call` (to await), in a client span when tracing is on (its requests carry it).

        A plain function returning the coroutine: with tracing off, a call
        to an agent on this node is the one coroutine of
        :meth:`_call_local`, no frame between it and its caller. ``convert``
        is applied to the result (a typed proxy's conversion).
        """
        if OTEL_TRACE not in sys.modules or not tracing_on():
            if address != self.reply_address:
                ref = self.supervisor.ref(address)
                if ref is not None:
                    return self._call_local(
                        ref, address, op, args, timeout, request_id, retry_safe, once, None, convert
                    )
            coro = self._call(address, op, args, timeout, request_id, retry_safe, once, False)
        else:
            coro = self._traced_call(address, op, args, timeout, request_id, retry_safe, once)
        return coro if convert is None else _converted(coro, convert)

    async def _traced_call(
        self,
        address: str,
        op: str,
        args: dict[str, Any],
        timeout: float,
        request_id: str | None,
        retry_safe: bool,
        once: bool,
    ) -> Any:
        with span(f"fame.call {op}", kind="CLIENT", attributes={"fame.to": address}):
            return await self._call(address, op, args, timeout, request_id, retry_safe, once, True)

    async def _call(
        self,
        address: str,
        op: str,
        args: dict[str, Any],
        timeout: float,
        request_id: str | None,
        retry_safe: bool,
        once: bool,
        traced: bool,
    ) -> Any:
        """Call plain operation ``op`` of the agent at ``address``; return its result.

        Every attempt carries the same ``request_id`` (a fresh random one if
        none is given); ``once`` asks the receiver to deduplicate it through
        its inbox (a told message from the outbox; see ``Request.once``). An
        answer that says nothing ran (``overloaded``, or ``no_route`` on a
        node with an uplink: the target may be restarting,
        this node re-attaching) is retried with a jittered backoff until
        ``timeout``. A lost answer (:class:`fame.RequestLost`: the request
        may have run) is retried only if ``retry_safe`` (the operation is
        idempotent, or deduplicates by request id), else raised. Past the
        deadline: :class:`fame.errors.NotSentInTime` if no attempt can
        have run (:class:`fame.NoRoute` if there was no route all along),
        else :class:`fame.errors.NoAnswerInTime`.

        The first attempt to an agent on this node runs without a cancel
        scope (:meth:`_call_local`): the common case pays for none. Every
        other attempt runs in one scope that bounds it, its sending included
        (:meth:`_retry`).
        ``traced``: tracing is on (the requests carry the current span).
        """
        ref = self.supervisor.ref(address) if address != self.reply_address else None
        if ref is not None:
            trace = current_traceparent() if traced else None
            return await self._call_local(
                ref, address, op, args, timeout, request_id, retry_safe, once, trace, None
            )
        if request_id is None:
            request_id = new_request_id()
        now = trio.current_time()
        deadline = now + timeout
        tries, expired = _Tries(), False
        offer = getattr(self.uplink, "offer", None)
        if offer is not None and address != self.reply_address:
            trace = current_traceparent() if traced else None
            try:
                return await self._call_remote(
                    offer, address, op, args, now, deadline, request_id, once, trace
                )
            except _LinkBusy:
                pass  # nothing was sent: the first attempt waits for room in _retry
            except (Overloaded, NoRoute, RequestLost) as exc:
                tries = _Tries(now)
                self._note_retriable(exc, tries, retry_safe)
            except trio.TooSlowError:
                tries, expired = _Tries(now, unanswered=True), True
        return await self._retry(
            address, op, args, timeout, deadline, request_id, retry_safe, once, tries, expired
        )

    async def _retry(
        self,
        address: str,
        op: str,
        args: dict[str, Any],
        timeout: float,
        deadline: float,
        request_id: str,
        retry_safe: bool,
        once: bool,
        tries: _Tries,
        expired: bool,
    ) -> Any:
        """The attempts of a call after ``tries``, until ``deadline``; its error if none succeeds.

        ``expired``: the deadline already passed (the last attempt waited
        it out): no attempt more, only the error.
        """
        if not expired:
            delays = RETRY_BACKOFF.delays()
            with trio.move_on_at(deadline):
                while True:
                    if tries.attempts:
                        # No time left for another attempt to be answered (judged by
                        # the last one's round trip): end with its definite answer instead.
                        now, wait = trio.current_time(), next(delays)
                        reserve = max(min(ANSWER_RESERVE, timeout / 4), 2 * (now - tries.began))
                        if deadline - (now + wait) < reserve:
                            break
                        await trio.sleep(wait)
                    tries.attempts += 1
                    tries.attempt = _Attempt()
                    tries.began = trio.current_time()
                    try:
                        return await self._call_once(
                            address, op, args, deadline, request_id, tries.attempt, once
                        )
                    except (Overloaded, NoRoute, RequestLost) as exc:
                        self._note_retriable(exc, tries, retry_safe)
        # The last answered attempt's error is the cause: what the target (or the
        # sentinel) said before the deadline cut the call off.
        attempts, last = tries.attempts, tries.last
        if tries.maybe_ran or tries.attempt.unanswered:
            why = f" (last answer: {last})" if last is not None else ""
            raise NoAnswerInTime(
                f"{address} did not answer {op}() within {timeout} s after {attempts}"
                f" attempt(s){why}; it may have run: send it again with request id"
                f" {request_id!r} to learn its outcome without running it twice, if the"
                " operation deduplicates"
            ) from last
        if isinstance(last, NoRoute):
            raise NoRoute(
                f"{last.message} (sent {attempts} times over {timeout} s; nothing ran)",
                actor=last.actor,
            )
        if last is None:
            raise NotSentInTime(
                f"{op}() for {address} could not leave this node within {timeout} s (no room"
                " on its way out: a full mailbox, or a full link to the sentinel); nothing"
                " ran, retry later or raise the deadline"
            )
        raise NotSentInTime(
            f"{address} could not take {op}() within {timeout} s: {attempts} attempt(s)"
            f" refused before running (last: {last}); nothing ran, retry later or raise"
            " the deadline"
        ) from last

    def _note_retriable(self, exc: RemoteError, tries: _Tries, retry_safe: bool) -> None:
        """Record an answer that allows another attempt, or raise it if it does not."""
        if isinstance(exc, NoRoute) and self.uplink is None:
            raise exc  # nothing here can bring the address back
        if isinstance(exc, RequestLost):
            tries.maybe_ran = True
            if not retry_safe:
                raise exc
        tries.last = exc

    async def _call_local(
        self,
        ref: ActorRef,
        address: str,
        op: str,
        args: dict[str, Any],
        timeout: float,
        request_id: str | None,
        retry_safe: bool,
        once: bool,
        trace: str | None,
        convert: Callable[[Any], Any] | None,
    ) -> Any:
        """:meth:`_call` to an actor on this node: its first attempt, scope-free, then retries.

        What :meth:`_call_once` and :meth:`route` do for a local actor, the
        deadline kept by the reply slot instead of a cancel scope, written
        out in one frame (the hot path of every local call). An answer that
        allows another attempt, or a deadline that passed, goes on in
        :meth:`_retry` (in a cancel scope), as :meth:`_call` says.
        """
        if request_id is None:
            request_id = new_request_id()
        now = self._now()
        deadline = now + timeout
        try:
            pending = self.pending
            corr = random_corr()  # new_corr(), written out
            while corr in pending or corr in self.consumers:
                corr = random_corr()
            slot = pending[corr] = ReplySlot()
            try:
                try:  # copied_args(), written out
                    copied = _args_decoder.decode(_encoder.encode(args))
                except (TypeError, NotImplementedError, OverflowError, RecursionError) as exc:
                    raise WireError(f"cannot encode Request: {exc}", code="unencodable") from None
                finite = not isinf(timeout)
                request = Request(
                    op,
                    copied,
                    False,
                    0,
                    max(0, int(timeout * 1000)) if finite else None,  # timeout_ms()
                    None,
                    request_id,
                    once,
                    trace,
                )
                envelope = Envelope(0, address, next(self._ids), request, self.reply_address, corr)
                # A cancelled caller sends nothing; one with room in the mailbox queues
                # its request without yielding: its wait for the answer is the yield.
                await trio.lowlevel.checkpoint_if_cancelled()
                if not ref.offer(envelope):
                    try:
                        await ref.tell(envelope, timeout=timeout if finite else None)
                    except MailboxFull:
                        raise _NoRoom() from None
                answer = await slot.wait(deadline, ref.deadlines)
                result = answer.result if type(answer) is Reply else self._answer(corr, answer)
            finally:
                del pending[corr]
                if self.crash_causes:
                    self.crash_causes.pop(corr, None)
            return result if convert is None else convert(result)
        except (Overloaded, NoRoute, RequestLost) as exc:
            tries, expired = _Tries(now), False
            self._note_retriable(exc, tries, retry_safe)
        except _NoRoom:
            # The deadline passed while the request waited for mailbox room: nothing was sent.
            tries, expired = _Tries(now), True
        except trio.TooSlowError:
            tries, expired = _Tries(now, unanswered=True), True
        result = await self._retry(
            address, op, args, timeout, deadline, request_id, retry_safe, once, tries, expired
        )
        return result if convert is None else convert(result)

    async def _call_remote(
        self,
        offer: Any,
        address: str,
        op: str,
        args: dict[str, Any],
        now: float,
        deadline: float,
        request_id: str,
        once: bool,
        trace: str | None,
    ) -> Any:
        """The first attempt of a call through the uplink, scope-free.

        What :meth:`_call_once` does, for the common case: the uplink
        queues the request at once (``offer``), and the deadline of the wait
        for its answer is kept by a :class:`Deadlines` table instead of a
        cancel scope. Raises :class:`_LinkBusy` if the uplink has no room
        now (nothing was sent) and ``trio.TooSlowError`` if the deadline
        passes while it waits for the answer.
        """
        corr = self.new_corr()
        slot = ReplySlot()
        self.pending[corr] = slot
        request = Request(
            op, args, False, 0, timeout_ms(deadline - now), None, request_id, once, trace
        )
        envelope = Envelope(0, address, next(self._ids), request, self.reply_address, corr)
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            # Marked before it leaves: its answers come through the uplink, and only
            # through it (see _on_reply); link_lost() fails it.
            self.remote[corr] = address
            if not offer(envelope):
                raise _LinkBusy
            answer = await slot.wait(deadline, self._remote_deadlines)
            if type(answer) is Reply:
                return answer.result
            return self._answer(corr, answer)
        finally:
            del self.pending[corr]
            self.remote.pop(corr, None)
            if self.crash_causes:
                self.crash_causes.pop(corr, None)

    async def _call_once(
        self,
        address: str,
        op: str,
        args: dict[str, Any],
        deadline: float,
        request_id: str,
        attempt: _Attempt,
        once: bool = False,
    ) -> Any:
        """Send one request and wait for its answer (the caller bounds the wait)."""
        corr = self.new_corr()
        slot = ReplySlot()
        self.pending[corr] = slot
        remaining = deadline - trio.current_time()
        request = Request(
            op, args, False, 0, timeout_ms(remaining), None, request_id, once, current_traceparent()
        )
        envelope = Envelope(0, address, next(self._ids), request, self.reply_address, corr)
        try:
            if await self.route(envelope, timeout=None if math.isinf(remaining) else remaining):
                self.remote[corr] = address
            attempt.unanswered = True
            answer = await slot.wait()
            attempt.unanswered = False
            return self._answer(corr, answer)
        finally:
            del self.pending[corr]
            self.remote.pop(corr, None)
            self.crash_causes.pop(corr, None)

    def _answer(self, corr: int, answer: Frame) -> Any:
        """The result of call ``corr`` from its answer, or the error the answer says."""
        match answer:
            case Reply(result=result):
                return result
            case Error(kind, message, actor, exc_type, traceback):
                error = remote_error(
                    kind, message, actor=actor, exc_type=exc_type, traceback=traceback
                )
                error.__cause__ = self.crash_causes.pop(corr, None)
                raise error
            case frame:
                raise ProtocolError(f"unexpected {type(frame).__name__} in reply to a call")

    async def send_stream_request(
        self, address: str, request: Request, consumer: StreamConsumer, timeout: float
    ) -> int:
        """Send a streaming request whose frames ``consumer`` will receive; return its corr."""
        corr = self.new_corr()
        self.consumers[corr] = consumer
        envelope = Envelope(0, address, next(self._ids), request, self.reply_address, corr)
        try:
            with trio.fail_after(timeout):
                if await self.route(envelope, timeout=timeout):
                    self.remote[corr] = address
        except trio.TooSlowError:
            self.forget_stream(corr)
            raise NotSentInTime(
                f"{address} did not take {request.op}() within {timeout} s; nothing ran"
            ) from None
        except BaseException:
            self.forget_stream(corr)
            raise
        return corr

    async def send_stream_control(self, address: str, corr: int, frame: Credit | Cancel) -> None:
        """Send credit or a cancel to the producer of stream ``corr``; lost links are ignored."""
        envelope = Envelope(0, address, next(self._ids), frame, self.reply_address, corr)
        with suppress(NoRoute, NodeClosed):
            await self.route(envelope)

    def drop_stream(self, address: str, corr: int) -> None:
        """Forget stream ``corr`` and cancel its producer without waiting (best effort).

        For a stream garbage collected unclosed: runs on the event loop
        (handed over with ``TrioToken.run_sync_soon``), never in ``__del__``.
        """
        self.forget_stream(corr)
        envelope = Envelope(0, address, 0, Cancel("stream dropped"), self.reply_address, corr)
        if not self._control_stream(envelope) and self.uplink is not None:
            self.uplink.send_nowait(envelope)

    def forget_stream(self, corr: int) -> None:
        """Stop delivering frames of stream ``corr``: it ended or was closed."""
        self.consumers.pop(corr, None)
        self.remote.pop(corr, None)

    # --- routing ------------------------------------------------------------------

    async def route(self, envelope: Envelope, *, timeout: float | None = None) -> bool:
        """Send an envelope from this node: to a local actor, to a caller, or uplink.

        Returns True if the envelope left through the uplink.
        """
        to = envelope.to
        if to == self.reply_address:
            self._on_reply(envelope, local_copy(envelope.frame), via_uplink=False)
            return False
        frame = envelope.frame
        if isinstance(frame, Credit | Cancel) and self._control_stream(envelope):
            return False
        ref = self.supervisor.ref(to)
        if ref is not None:
            # Only requests reach a mailbox; anything else for a local actor is moot.
            if isinstance(frame, Request):
                copied = msgspec.structs.replace(envelope, frame=local_copy(frame))
                await ref.tell(copied, timeout=timeout)
            return False
        if self.uplink is not None:
            corr = envelope.corr
            ours = (
                isinstance(frame, Request)
                and envelope.reply_to == self.reply_address
                and corr is not None
                and (corr in self.pending or corr in self.consumers)
            )
            if ours:
                # Marked before it leaves: from now on its answers come through the
                # uplink, and only through it (see _on_reply).
                assert corr is not None
                self.remote[corr] = to
            try:
                await self.uplink.send(envelope)
            except BaseException:
                if ours:
                    assert corr is not None
                    self.remote.pop(corr, None)
                raise
            return True
        raise NoRoute(f"no route to {to}: no such actor on this node", actor=to)

    async def deliver(self, envelope: Envelope, size: int | None = None) -> None:
        """Take an envelope arriving from the uplink; never blocks on a full mailbox.

        A request for an address not hosted here is answered at once with
        an error. One whose mailbox is full waits in the waiting room (it is
        moved into the mailbox as room appears), or is answered
        ``overloaded`` if the room is full too; so one busy agent never
        stalls the link for the others. ``size`` is the envelope's encoded
        size if the link knows it (else it is measured only when the request
        has to wait). The envelope was just decoded: nobody else holds its
        payload, so it is not copied.
        """
        if envelope.to == self.reply_address:
            self._on_reply(envelope, envelope.frame, via_uplink=True)
            return
        match envelope.frame:
            case Credit() | Cancel():
                self._control_stream(envelope)
                return
            case Request() as request:
                pass
            case _:
                return  # replies for callers that moved on
        to = envelope.to
        ref = self.supervisor.ref(to)
        try:
            if ref is None:
                raise NoRoute(f"no actor at {to}", actor=to)
            if not self.waiting_room.has_waiting(to):
                ref.tell_nowait(envelope)
                return
        except NoRoute as exc:
            await self.reply_error(envelope, exc.kind, exc.message, actor=to)
            return
        except NodeClosed as exc:
            # Says why: "... is stopped", or "the supervisor gave up on ...: <crash>".
            await self.reply_error(envelope, NoRoute.kind, str(exc), actor=to)
            return
        except MailboxFull:
            pass
        if not self._wait_for_room(envelope, request, size):
            room = self.waiting_room
            message = (
                f"{to} is overloaded: its mailbox is full and so is the waiting room of"
                f" its node ({len(room)} requests, {room.bytes} bytes waiting); nothing ran,"
                " retry later"
            )
            await self.reply_error(envelope, Overloaded.kind, message, actor=to)

    def _wait_for_room(self, envelope: Envelope, request: Request, size: int | None) -> bool:
        """Put a request for a full mailbox in the waiting room; False if it is full."""
        if self._tasks is None:
            return False
        now = trio.current_time()
        deadline = math.inf if request.timeout_ms is None else now + request.timeout_ms / 1000
        if size is None:
            size = len(_encoder.encode(envelope))  # only requests that must wait pay this
        caller = (envelope.caller, envelope.reply_to)
        to = envelope.to
        if not self.waiting_room.admit(to, caller, Waiting(envelope, size, deadline)):
            return False
        if to not in self._movers:
            self._movers.add(to)
            self._tasks.start_soon(self._move_waiting, to)
        return True

    async def _move_waiting(self, address: str) -> None:
        """Move the requests waiting for ``address`` into its mailbox as room appears."""
        room = self.waiting_room
        try:
            while (waiting := room.next(address, trio.current_time())) is not None:
                envelope = waiting.envelope
                ref = self.supervisor.ref(address)
                left = waiting.deadline - trio.current_time()
                try:
                    if ref is None:
                        raise NoRoute(f"no actor at {address}", actor=address)
                    await ref.tell(envelope, timeout=None if math.isinf(left) else left)
                except MailboxFull:
                    room.expired += 1  # its caller's deadline passed: nobody waits
                except NoRoute as exc:
                    await self.reply_error(envelope, exc.kind, exc.message, actor=address)
                except NodeClosed as exc:
                    await self.reply_error(envelope, NoRoute.kind, str(exc), actor=address)
        finally:
            # No checkpoint since next() found the queue empty: nothing was added since.
            self._movers.discard(address)

    def reply_here(self, request: Envelope, result: Any) -> bool:
        """:meth:`reply` ``Reply(result)`` to a caller on this node, at once; False if it cannot.

        For an agent answering a call from its own node (no envelope, no
        routing, no coroutine): False if the caller is elsewhere, or if the
        result cannot be copied (then :meth:`reply` says why to the caller).
        """
        corr = request.corr
        if request.reply_to != self.reply_address or corr is None:
            return False
        try:  # copied_answer(), written out
            answer = Reply(_any_decoder.decode(_encoder.encode(result)))
        except (TypeError, NotImplementedError, OverflowError, RecursionError):
            return False
        slot = self.pending.get(corr)
        if slot is not None and corr not in self.remote:
            slot.set(answer)  # what _take_answer does for it, written out
        else:
            self._take_answer(corr, answer, via_uplink=False)
        return True

    async def reply(self, request: Envelope, frame: Frame) -> None:
        """Send ``frame`` to the caller of ``request`` (dropped if it was a tell)."""
        reply_to, corr = request.reply_to, request.corr
        if reply_to is None or corr is None:
            return  # a tell, or a request nobody could match an answer to
        try:
            if reply_to == self.reply_address:
                # A caller on this node: what route() does for it, without an envelope.
                self._take_answer(corr, copied_answer(frame), via_uplink=False)
                return
            envelope = Envelope(0, reply_to, next(self._ids), frame, None, corr)
            uplink = self.uplink
            if uplink is not None and self.supervisor.ref(reply_to) is None:
                await uplink.send(envelope)  # what route() does with an answer for another node
            else:
                await self.route(envelope)
        except (NoRoute, NodeClosed, MailboxFull) as exc:
            log.debug("reply to %s dropped: %s", request.reply_to, exc)
        except WireError as exc:
            # The result does not fit on the wire (over the size limit): the
            # caller hears so at once rather than waiting out its deadline. A
            # stream's item raises on, so that its producer stops.
            if not isinstance(frame, Reply):
                raise
            message = unsendable(request, exc)
            await self.reply_error(request, ProtocolError.kind, message, actor=request.to)

    async def reply_error(
        self,
        request: Envelope,
        kind: str,
        message: str,
        *,
        actor: str | None = None,
        exc_type: str | None = None,
        traceback: str | None = None,
        cause: BaseException | None = None,
    ) -> None:
        """Answer ``request`` with an error of ``kind`` (a :class:`fame.RemoteError` kind).

        ``cause`` (the exception behind a crash) reaches a caller on this node.
        """
        if (
            cause is not None
            and request.reply_to == self.reply_address
            and request.corr in self.pending
        ):
            self.crash_causes[request.corr] = cause
        await self.reply(request, Error(kind, message, actor, exc_type, traceback))

    def reply_error_nowait(
        self, request: Envelope, kind: str, message: str, *, actor: str | None = None
    ) -> None:
        """Answer ``request`` with an error if that needs no waiting; else drop it.

        For the many tasks a stopping agent cancels at once: each tells its
        caller why without a cancel scope or a wait of its own. A caller
        whose path is full falls back to its own deadline.
        """
        if request.reply_to is None or request.corr is None:
            return
        frame = Error(kind, message, actor)
        envelope = Envelope(0, request.reply_to, next(self._ids), frame, None, request.corr)
        if request.reply_to == self.reply_address:
            self._on_reply(envelope, frame, via_uplink=False)
        elif self.uplink is not None:
            self.uplink.send_nowait(envelope)

    # --- failing what waits ---------------------------------------------------------

    def link_lost(self, reason: str) -> None:
        """Fail every call and stream waiting on an answer through the lost uplink.

        Called by the uplink when its connection drops: the answers of those
        requests can no longer arrive, so their callers get
        :class:`fame.NoRoute` now instead of waiting out their deadlines.
        """
        remote, self.remote = self.remote, {}
        for corr, address in remote.items():
            error = RequestLost(
                f"no answer from {address}: {reason}; it may have run", actor=address
            )
            slot = self.pending.get(corr)
            if slot is not None:
                slot.set(Error(error.kind, error.message, address, None))
                continue
            consumer = self.consumers.get(corr)
            if consumer is not None:
                consumer.fail(error)

    def cancel_streams_to(self, reply_address: str, reason: str) -> int:
        """Cancel every stream this node produces for callers at ``reply_address``.

        For a sentinel whose link to those callers closed: nobody will read
        or grant credit any more, so the producers stop now rather than at
        the idle timeout. Returns how many were cancelled.
        """
        doomed = [p for (reply_to, _), p in self.producers.items() if reply_to == reply_address]
        for producer in doomed:
            producer.control(Cancel(reason))
        return len(doomed)

    def close_pending(self) -> None:
        """Fail every call still waiting on this node: it is closing."""
        for corr, slot in list(self.pending.items()):
            slot.fail(NodeClosed(f"the node closed while call {corr} was waiting"))
        for consumer in list(self.consumers.values()):
            consumer.fail(NodeClosed("the node closed while the stream was open"))

    def _on_reply(self, envelope: Envelope, frame: Frame, *, via_uplink: bool) -> None:
        """Hand an answer to the call or stream waiting for it, if this node asked for it.

        Dropped (and counted): an answer whose corr nothing waits for (its
        caller stopped waiting, or it was never asked), one that came
        another way than its request left (``via_uplink``), and one of a
        kind that does not answer what waits (a stream item for a call).
        """
        self._take_answer(envelope.corr, frame, via_uplink=via_uplink)

    def _take_answer(self, corr: int | None, frame: Frame, *, via_uplink: bool) -> None:
        """:meth:`_on_reply` for the answer ``frame`` to ``corr``."""
        if corr is not None and (corr in self.remote) == via_uplink:
            match frame:
                case Reply() | Error() if corr in self.pending:
                    self.pending[corr].set(frame)
                    return
                case StreamItem() | StreamItems() | StreamEnd() | Error() if corr in self.consumers:
                    self.consumers[corr].push(frame)
                    return
        self.dropped_answers += 1
        log.debug("dropped %s to %s: no call of this node waits for it", type(frame).__name__, corr)

    def _control_stream(self, envelope: Envelope) -> bool:
        producer = self.producers.get((envelope.reply_to, envelope.corr))
        if producer is None:
            return False
        producer.control(envelope.frame)
        return True
