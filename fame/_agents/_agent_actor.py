"""The actor that runs one agent: requests in, method calls, answers out.

:class:`AgentActor` turns each :class:`Request` envelope into a validated
call of an ``@operation`` method and sends the result, the stream items or
a typed error to the caller. A plain call of a one-at-a-time agent runs in
the actor's own task; streams and the calls of a concurrent agent run in
the agent's :class:`AgentScope`, so stopping or restarting the agent
cancels them and their callers hear why.

Streams count against the agent's concurrency (see
:attr:`BaseAgent.max_concurrency`): a stream holds a slot of the agent's
limiter while it works (it has credit), never while it waits for credit,
and streams together never take the last slot, which stays for plain
calls (a stream whose generator calls its own agent cannot lock it). A
stream waits for its slot in its own task, so a plain call queued behind
it is not held up; it ends silently when its caller's deadline passed
before a first slot came. Each caller (verified principal and reply
address) may have ``max_streams_per_caller`` streams open at once; one
more is refused with ``quota_exceeded``.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Coroutine
from typing import Any

import trio

from .._core._actor import Actor, crash_error
from .._core._errors import (
    InvalidArguments,
    NodeClosed,
    OperationFailed,
    Overloaded,
    QuotaExceeded,
    RequestLost,
    UnknownOperation,
)
from .._core._tracing import OTEL_TRACE, span, tracing_on
from .._wire._schema import Envelope, Reply, Request
from ._agent import AgentNode, BaseAgent
from ._agent_scope import AgentScope
from ._call_context import CALL, enter_call, request_key
from ._credit import StreamProducer
from ._inbox import Inbox
from ._operation import OperationSpec
from ._stream_serving import serve_stream
from ._switchboard import Switchboard

__all__ = ["AgentActor"]

ANSWER_TIMEOUT = 2.0
"""How long a cancelled task may take to tell its caller why."""


class _Crash:
    """A crash in one of the agent's tasks, sent to its own mailbox to restart it."""

    __slots__ = ("exc",)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


class AgentActor(Actor):
    """The actor that runs one agent: dispatches requests to operations."""

    def __init__(
        self,
        agent: BaseAgent,
        node: AgentNode,
        switchboard: Switchboard,
        scope: AgentScope,
        inbox: Inbox | None = None,
    ) -> None:
        self.agent = agent
        self._inbox = inbox
        self._node = node
        self._switchboard = switchboard
        self._scope = scope
        self.operations = type(agent).operations
        self.concurrency = type(agent).max_concurrency
        self._one_at_a_time = self.concurrency == 1
        self.max_streams_per_caller = type(agent).max_streams_per_caller
        self._limiter = trio.CapacityLimiter(self.concurrency)
        # Streams take at most all slots but one (one stream beside the calls of a
        # one-at-a-time agent, whose calls do not use the limiter).
        self._stream_limiter = trio.CapacityLimiter(max(1, self.concurrency - 1))
        self._stream_slots = (
            (self._stream_limiter,)
            if self.concurrency == 1
            else (self._stream_limiter, self._limiter)
        )
        self.streams_of: dict[tuple[str | None, str | None], int] = {}
        """Open (or waiting) streams by caller: ``(principal, reply address)``."""
        self._calls = 0
        self._calls_done = trio.Event()
        self._calls_done.set()

    async def on_start(self) -> None:
        # A restart waits here until the tasks of the crashed incarnation ended.
        await self._scope.open()
        self.agent._fame_node = self._node
        self.agent._fame_address = self.address
        try:
            await self.agent.start()
        except BaseException:
            # A start that fails gets no on_stop: close the scope here, or its
            # hosting task would wait in the node's nursery until the node closes.
            with trio.CancelScope(shield=True):
                await self._scope.close(self._scope.reason)
            raise

    async def on_stop(self) -> None:
        if self._calls:
            # Calls still running in other tasks may finish before stop(): a graceful
            # close answers them instead of cutting them off. Half the stop timeout at
            # most, so that stop() itself always gets its turn. Streams are not waited
            # for: one whose consumer reads nothing would hold the stop to its timeout.
            with trio.move_on_after(self._switchboard.supervisor.stop_timeout / 2):
                await self._calls_done.wait()
        await self._scope.close(self._scope.reason)
        await self.agent.stop()

    def handle(self, message: Any) -> Coroutine[Any, Any, None]:
        """The coroutine that handles ``message`` (the actor's loop awaits it).

        A plain call of a one-at-a-time agent, the common case, is the
        coroutine of :meth:`call` itself, in the actor's own task: no
        dispatch and no frame between the loop and the call.
        :meth:`_handle` does the rest. A crash cancels the agent's other
        tasks (:meth:`_crashed`) and goes on to the supervisor.
        """
        try:
            if self._one_at_a_time and type(message) is Envelope:
                request = message.frame
                if type(request) is Request and not request.stream:
                    spec = self.operations.get(request.op)
                    if spec is not None and not spec.streaming:
                        try:
                            kwargs = spec.convert_args(request.args)
                        except InvalidArguments:
                            pass  # refused by _handle, as any bad request
                        else:
                            return self.call(spec, kwargs, message, own_task=True)
        except Exception as exc:
            self._crashed(exc)
            raise
        return self._handle_guarded(message)

    async def _handle_guarded(self, message: Any) -> None:
        try:
            await self._handle(message)
        except Exception as exc:
            self._crashed(exc)
            raise

    def _crashed(self, exc: Exception) -> None:
        # The agent restarts: its streams and concurrent calls end with it, now.
        # Cut off mid-run, they may have had their effect: outcome unknown.
        self._scope.cancel(
            RequestLost(
                f"cancelled: {self.address} restarts after a crash; the call may have run",
                actor=self.address,
                exc_type=type(exc).__name__,
            )
        )

    async def _handle(self, message: Any) -> None:
        match message:
            case _Crash(exc=exc):
                raise exc
            case Envelope(frame=Request() as request):
                envelope = message
            case _:
                return  # only requests reach an agent's mailbox; stream control goes to the node
        spec = self.operations.get(request.op)
        try:
            if spec is None or spec.streaming != request.stream:
                raise self._unknown(request, remote=envelope.caller is not None)
            kwargs = spec.convert_args(request.args)
        except (UnknownOperation, InvalidArguments) as exc:
            # A caller's unknown name is no label: it would grow the metrics without end.
            name = spec.name if spec is not None else "(unknown)"
            self._switchboard.metrics.call(self.address, name, exc.kind, 0.0)
            await self._switchboard.reply_error(envelope, exc.kind, exc.message, actor=self.address)
            return
        if spec.streaming:
            await self._open_stream(spec, kwargs, envelope, request)
        elif self.concurrency == 1:
            await self.call(spec, kwargs, envelope)
        else:
            token = object()
            await self._limiter.acquire_on_behalf_of(token)
            if not self._calls:
                self._calls_done = trio.Event()
            self._calls += 1
            self._scope.start_soon(self._call_concurrently, spec, kwargs, envelope, token)

    async def _open_stream(
        self, spec: OperationSpec, kwargs: dict[str, Any], envelope: Envelope, request: Request
    ) -> None:
        """Start serving a stream, or refuse it if its caller has too many open."""
        caller = (envelope.caller, envelope.reply_to)
        count = self.streams_of.get(caller, 0)
        if count >= self.max_streams_per_caller:
            who = envelope.caller or envelope.reply_to or "a caller on this node"
            error = QuotaExceeded(
                f"{self.address} refused stream {request.op}(): {who} already has {count}"
                f" streams open or waiting here (max_streams_per_caller ="
                f" {self.max_streams_per_caller}); nothing ran: close a stream or read one"
                " to its end first",
                actor=self.address,
            )
            await self._switchboard.reply_error(
                envelope, error.kind, error.message, actor=self.address
            )
            return
        self.streams_of[caller] = count + 1
        producer = StreamProducer(request.credit, request.credit_bytes)
        self._switchboard.producers[(envelope.reply_to, envelope.corr)] = producer
        self._scope.start_soon(self._serve_stream, spec, kwargs, envelope, producer)

    def _unknown(self, request: Request, *, remote: bool) -> UnknownOperation:
        spec = self.operations.get(request.op)
        if spec is not None:
            kind = "a streaming" if spec.streaming else "a plain"
            how = "iterate over it" if spec.streaming else "await it"
            return UnknownOperation(f"{request.op} is {kind} operation: {how}")
        names = ", ".join(sorted(self.operations)) or "none"
        if remote:
            # A remote caller learns nothing about what else the agent offers.
            return UnknownOperation(f"{type(self.agent).__name__} has no operation {request.op!r}")
        return UnknownOperation(
            f"{type(self.agent).__name__} has no operation {request.op!r} (it has: {names})"
        )

    async def call(
        self,
        spec: OperationSpec,
        kwargs: dict[str, Any],
        envelope: Envelope,
        *,
        own_task: bool = False,
    ) -> None:
        """Run one plain operation and reply; a crash is answered, then re-raised.

        A told message (``Request.once``) goes through the node's inbox:
        one already applied is acknowledged (``None``) without running, one
        being applied right now is answered ``overloaded`` (its sender
        tries again), and one that completes is recorded before its answer.
        ``own_task``: it runs in the actor's own task, straight from
        :meth:`handle`, so a crash also cancels the agent's other tasks here.
        """
        try:
            frame = envelope.frame
            request = frame if isinstance(frame, Request) else None
            request_id = None if request is None else request.request_id
            caller = envelope.caller
            if caller is None:  # a call from this node: enter_call(), written out
                token = CALL.set((None, request_id))
            else:
                token = enter_call(caller, envelope.reply_to, request_id)
            inbox = self._inbox
            # The inbox key of a told message (its scoped request id), else None.
            once = (
                request_key()
                if inbox is not None and request is not None and request.once
                else None
            )
            began = False
            metrics = self._switchboard.metrics
            # Read the clock only for metrics that record: off, a call pays nothing more.
            started = time.perf_counter() if metrics.enabled else 0.0
            outcome = "cancelled"
            try:
                if once is not None:
                    assert inbox is not None
                    if await inbox.applied(once, time.time()):
                        outcome = "ok"
                        if envelope.reply_to is not None:
                            await self._switchboard.reply(envelope, Reply(None))
                        return
                    if inbox.running(once):
                        busy = Overloaded(
                            f"{self.address} is applying this message now; nothing ran twice:"
                            " send it again later",
                            actor=self.address,
                        )
                        outcome = busy.kind
                        await self._switchboard.reply_error(
                            envelope, busy.kind, busy.message, actor=self.address
                        )
                        return
                    inbox.begin(once)
                    began = True
                if OTEL_TRACE in sys.modules and tracing_on():
                    with _operation_span(self.address, envelope):
                        result = spec.convert_result(await spec.function(self.agent, **kwargs))
                else:
                    result = await spec.function(self.agent, **kwargs)
                    if type(result) is not spec.plain_result:  # else convert_result() keeps it
                        result = spec.convert_result(result)
                if once is not None:
                    assert inbox is not None
                    await inbox.record(once, time.time())
                outcome = "ok"
            except spec.errors as exc:
                error = OperationFailed(str(exc), actor=self.address, exc_type=type(exc).__name__)
                outcome = error.kind
                await self._switchboard.reply_error(
                    envelope, error.kind, error.message, actor=self.address, exc_type=error.exc_type
                )
                return
            except Exception as exc:
                outcome = "actor_crashed"
                await self.reply_crash(envelope, exc)
                raise
            finally:
                if began:
                    assert once is not None and inbox is not None
                    inbox.end(once)
                CALL.reset(token)  # leave_call(), written out
                if metrics.enabled:
                    metrics.call(self.address, spec.name, outcome, time.perf_counter() - started)
            if envelope.reply_to is not None and not self._switchboard.reply_here(envelope, result):
                await self._switchboard.reply(envelope, Reply(result))
        except Exception as exc:
            if own_task:
                self._crashed(exc)
            raise

    async def _call_concurrently(
        self, spec: OperationSpec, kwargs: dict[str, Any], envelope: Envelope, token: object
    ) -> None:
        try:
            await self.call(spec, kwargs, envelope)
        except trio.Cancelled:
            await self._answer_cancelled(envelope)
            raise
        except Exception as exc:
            await self.crash(exc)
        finally:
            self._limiter.release_on_behalf_of(token)
            self._calls -= 1
            if not self._calls:
                self._calls_done.set()

    async def _serve_stream(
        self,
        spec: OperationSpec,
        kwargs: dict[str, Any],
        envelope: Envelope,
        producer: StreamProducer,
    ) -> None:
        key = (envelope.reply_to, envelope.corr)
        # This task's own context: the caller stays set for the whole stream.
        enter_call(envelope.caller, envelope.reply_to, _request_id(envelope))
        try:
            await serve_stream(
                self._switchboard, self, spec, kwargs, envelope, producer, self._stream_slots
            )
        except trio.Cancelled:
            self._answer_cancelled_nowait(envelope)
            raise
        finally:
            self._switchboard.producers.pop(key, None)
            caller = (envelope.caller, envelope.reply_to)
            left = self.streams_of.get(caller, 1) - 1
            if left > 0:
                self.streams_of[caller] = left
            else:
                self.streams_of.pop(caller, None)

    async def _answer_cancelled(self, envelope: Envelope) -> None:
        """Tell the caller of a task the agent's scope cancelled why (bounded, shielded)."""
        reason = self._scope.reason
        with trio.CancelScope(shield=True), trio.move_on_after(ANSWER_TIMEOUT):
            await self._switchboard.reply_error(
                envelope, reason.kind, reason.message, actor=self.address, exc_type=reason.exc_type
            )

    def _answer_cancelled_nowait(self, envelope: Envelope) -> None:
        """Tell the caller of a cancelled stream why, if that needs no waiting.

        A stopping agent may have thousands of streams open: each answer
        waiting (up to :data:`ANSWER_TIMEOUT`) on its own would make the
        stop slow; a caller whose path is full falls back to its deadline.
        """
        reason = self._scope.reason
        self._switchboard.reply_error_nowait(
            envelope, reason.kind, reason.message, actor=self.address
        )

    async def reply_crash(self, envelope: Envelope, exc: Exception) -> None:
        """Tell the caller of ``envelope`` that the agent crashed with ``exc``."""
        crash = crash_error(self.address, exc)
        await self._switchboard.reply_error(
            envelope,
            crash.kind,
            crash.message,
            actor=self.address,
            exc_type=crash.exc_type,
            traceback=crash.traceback,
            cause=exc,
        )

    async def crash(self, exc: Exception) -> None:
        """Crash the agent from a task other than its own: via its mailbox."""
        ref = self._switchboard.supervisor.ref(self.address)
        if ref is not None:
            # A stopping agent takes no more messages; the caller already has its error.
            with contextlib.suppress(NodeClosed):
                await ref.tell(_Crash(exc))


def _request_id(envelope: Envelope) -> str | None:
    frame = envelope.frame
    return frame.request_id if isinstance(frame, Request) else None


def _operation_span(address: str, envelope: Envelope) -> contextlib.AbstractContextManager[Any]:
    """The server span of one operation, a child of the caller's span (``Request.trace``)."""
    request = envelope.frame
    assert isinstance(request, Request)
    attributes = {"fame.address": address}
    if envelope.caller is not None:
        attributes["fame.caller"] = envelope.caller
    return span(
        f"fame.operation {request.op}", kind="SERVER", parent=request.trace, attributes=attributes
    )
