"""Serving a streaming operation: the producer's side of a stream.

The node starts :func:`serve_stream` as a task for each streaming request
an agent accepts. It runs the agent's generator and sends one
:class:`StreamItem` per credit the consumer granted, then a
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
from typing import TYPE_CHECKING, Any

import trio

from .._core._errors import ProtocolError, WireError
from .._wire._schema import Envelope, Request, StreamEnd, StreamItem
from ._operation import OperationSpec
from ._stream import StreamProducer

if TYPE_CHECKING:
    from ._agent import AgentActor
    from ._node import Node

__all__ = ["serve_stream", "unsendable"]

log = logging.getLogger("fame.node")


async def serve_stream(
    node: Node,
    actor: AgentActor,
    spec: OperationSpec,
    kwargs: dict[str, Any],
    request: Envelope,
    producer: StreamProducer,
) -> None:
    """Run streaming operation ``spec`` of ``actor`` for ``request`` to its end."""
    try:
        with producer.cancel_scope:
            async with aclosing(spec.function(actor.agent, **kwargs)) as items:
                async for item in items:
                    value = spec.convert_result(item)
                    if not producer.credit.try_take():
                        with trio.move_on_after(node.stream_idle_timeout) as idle:
                            await producer.credit.take()
                        if idle.cancelled_caught:
                            await _give_up_idle_stream(node, actor, spec, request)
                            return
                    try:
                        await node.reply(request, StreamItem(value))
                    except WireError as exc:
                        # An item too big for the wire ends the stream with a
                        # clear error; the agent did nothing wrong: no restart.
                        message = unsendable(request, exc)
                        await node.reply_error(
                            request, ProtocolError.kind, message, actor=actor.address
                        )
                        return
            await node.reply(request, StreamEnd())
    except spec.errors as exc:
        await node.reply_error(
            request,
            "operation_failed",
            str(exc),
            actor=actor.address,
            exc_type=type(exc).__name__,
        )
    except Exception as exc:
        await actor.reply_crash(request, exc)
        await actor.crash(exc)


async def _give_up_idle_stream(
    node: Node, actor: AgentActor, spec: OperationSpec, request: Envelope
) -> None:
    """End a stream whose consumer granted no credit for the idle timeout.

    The generator is closed by the caller; the consumer is told why, in
    case it reads on (the final frame needs no credit). Bounded: a
    consumer whose path is full gets nothing, as it reads nothing.
    """
    message = (
        f"{actor.address} closed stream {spec.name}(): the consumer granted no credit for"
        f" {node.stream_idle_timeout:g} s (stream idle timeout)"
    )
    log.info("%s", message)
    with trio.move_on_after(min(5.0, node.stream_idle_timeout)):
        await node.reply_error(request, "remote", message, actor=actor.address)


def unsendable(request: Envelope, exc: WireError) -> str:
    """Why the answer to ``request`` (a result or a stream item) cannot go on the wire."""
    op = request.frame.op if type(request.frame) is Request else "the request"
    return f"the result of {op}() cannot be sent to {request.reply_to}: {exc.reason}"
