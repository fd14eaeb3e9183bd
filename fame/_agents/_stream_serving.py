"""Serving a streaming operation: the producer's side of a stream.

An agent's actor starts :func:`serve_stream` as one of the agent's tasks
for each streaming request it accepts. It runs the agent's generator and
sends one :class:`StreamItem` per credit the consumer granted, then a
:class:`StreamEnd`. How it ends tells the caller what happened:

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

import logging
from contextlib import aclosing
from typing import Any, Protocol

import trio

from .._core._errors import OperationFailed, ProtocolError, RemoteError, WireError
from .._wire._schema import Envelope, StreamEnd, StreamItem
from ._credit import StreamProducer
from ._operation import OperationSpec
from ._switchboard import Switchboard, unsendable

__all__ = ["StreamOwner", "serve_stream"]

log = logging.getLogger("fame.node")


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
) -> None:
    """Run streaming operation ``spec`` of ``owner``'s agent for ``request`` to its end."""
    try:
        with producer.cancel_scope:
            async with aclosing(spec.function(owner.agent, **kwargs)) as items:
                async for item in items:
                    value = spec.convert_result(item)
                    if not producer.credit.try_take():
                        with trio.move_on_after(switchboard.stream_idle_timeout) as idle:
                            await producer.credit.take()
                        if idle.cancelled_caught:
                            await _give_up_idle_stream(switchboard, owner, spec, request)
                            return
                    try:
                        await switchboard.reply(request, StreamItem(value))
                    except WireError as exc:
                        # An item too big for the wire ends the stream with a
                        # clear error; the agent did nothing wrong: no restart.
                        message = unsendable(request, exc)
                        await switchboard.reply_error(
                            request, ProtocolError.kind, message, actor=owner.address
                        )
                        return
            await switchboard.reply(request, StreamEnd())
    except spec.errors as exc:
        await switchboard.reply_error(
            request,
            OperationFailed.kind,
            str(exc),
            actor=owner.address,
            exc_type=type(exc).__name__,
        )
    except Exception as exc:
        await owner.reply_crash(request, exc)
        await owner.crash(exc)


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
