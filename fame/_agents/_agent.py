"""Agents: actors whose messages are calls to ``@operation`` methods.

Subclass :class:`BaseAgent`, mark methods with :func:`fame.operation`, and
spawn an instance on a node. The node wraps it in an :class:`AgentActor`,
which turns each :class:`Request` envelope into a validated method call and
sends the result (or stream items, or a typed error) to the caller.

By default an agent handles one call at a time, like any actor, so its
state needs no locks. Agents whose operations are safe to interleave (for
example because all their state lives in a store) set ``max_concurrency``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, ClassVar

import trio

from .._core._actor import Actor, crash_error
from .._core._errors import (
    AgentNotStarted,
    InvalidArguments,
    NodeClosed,
    OperationFailed,
    UnknownOperation,
)
from .._wire._schema import Envelope, Reply, Request
from ._operation import OperationSpec, collect_operations

if TYPE_CHECKING:
    from ._node import Node

__all__ = ["AgentActor", "BaseAgent"]


class BaseAgent:
    """Base class of agents.

    Override :meth:`start` to set up (open key-value stores through
    :attr:`storage_provider`) and :meth:`stop` to clean up. Both run inside
    the node, with the node's storage attached.
    """

    max_concurrency: ClassVar[int] = 1
    """How many calls this agent may handle at once (streams not counted)."""

    operations: ClassVar[dict[str, OperationSpec]] = {}
    """The agent's operations by name, collected when the class is created."""

    _fame_node: Node | None = None
    _fame_address: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.operations = collect_operations(cls)
        if cls.max_concurrency < 1:
            raise ValueError(f"{cls.__name__}.max_concurrency must be at least 1")

    @property
    def storage_provider(self) -> Any:
        """The node's storage provider; available from :meth:`start` on.

        Reading it earlier (in ``__init__``, or on an agent that was never
        spawned) raises :class:`fame.AgentNotStarted`.
        """
        node = self._fame_node
        if node is None:
            raise AgentNotStarted(
                f"{type(self).__name__}.storage_provider is attached when a node starts the"
                " agent: use it in start() or later, not in __init__"
            )
        return node.storage_provider

    @property
    def address(self) -> str:
        """The address the agent was spawned at."""
        if self._fame_address is None:
            raise AgentNotStarted(f"{type(self).__name__} has not been spawned on a node")
        return self._fame_address

    @property
    def node(self) -> Node:
        """The node running this agent (to call other agents)."""
        if self._fame_node is None:
            raise AgentNotStarted(f"{type(self).__name__} has not been spawned on a node")
        return self._fame_node

    async def start(self) -> None:
        """Called when the agent starts, and again after each restart."""

    async def stop(self) -> None:
        """Called once when the agent stops."""


class _Crash:
    """A crash in a concurrent call, sent to the agent's own mailbox to restart it."""

    __slots__ = ("exc",)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


class AgentActor(Actor):
    """The actor that runs one agent: dispatches requests to operations."""

    def __init__(self, agent: BaseAgent, node: Node) -> None:
        self.agent = agent
        self.node = node
        self.operations = type(agent).operations
        self.concurrency = type(agent).max_concurrency
        self._limiter = trio.CapacityLimiter(self.concurrency)

    async def on_start(self) -> None:
        self.agent._fame_node = self.node
        self.agent._fame_address = self.address
        await self.agent.start()

    async def on_stop(self) -> None:
        if self.concurrency > 1:
            # Calls still running in other tasks may finish before stop(): a graceful
            # close answers them instead of cutting them off. Half the stop timeout at
            # most, so that stop() itself always gets its turn.
            with trio.move_on_after(self.node.supervisor.stop_timeout / 2):
                for _ in range(self.concurrency):
                    await self._limiter.acquire_on_behalf_of(object())
        await self.agent.stop()

    async def handle(self, message: Any) -> None:
        if type(message) is _Crash:
            raise message.exc
        envelope: Envelope = message
        request = envelope.frame
        if type(request) is not Request:
            return  # only requests reach an agent's mailbox; stream control goes to the node
        spec = self.operations.get(request.op)
        try:
            if spec is None or spec.streaming != request.stream:
                raise self._unknown(request)
            kwargs = spec.convert_args(request.args)
        except (UnknownOperation, InvalidArguments) as exc:
            await self.node.reply_error(envelope, exc.kind, exc.message, actor=self.address)
            return
        if spec.streaming:
            self.node.start_stream(self, spec, kwargs, envelope)
        elif self.concurrency == 1:
            await self.call(spec, kwargs, envelope)
        else:
            token = object()
            await self._limiter.acquire_on_behalf_of(token)
            self.node.spawn_task(self._call_concurrently, spec, kwargs, envelope, token)

    def _unknown(self, request: Request) -> UnknownOperation:
        spec = self.operations.get(request.op)
        if spec is not None:
            kind = "a streaming" if spec.streaming else "a plain"
            how = "iterate over it" if spec.streaming else "await it"
            return UnknownOperation(f"{request.op} is {kind} operation: {how}")
        names = ", ".join(sorted(self.operations)) or "none"
        return UnknownOperation(
            f"{type(self.agent).__name__} has no operation {request.op!r} (it has: {names})"
        )

    async def call(self, spec: OperationSpec, kwargs: dict[str, Any], envelope: Envelope) -> None:
        """Run one plain operation and reply; a crash is answered, then re-raised."""
        try:
            result = spec.convert_result(await spec.function(self.agent, **kwargs))
        except spec.errors as exc:
            error = OperationFailed(str(exc), actor=self.address, exc_type=type(exc).__name__)
            await self.node.reply_error(
                envelope, error.kind, error.message, actor=self.address, exc_type=error.exc_type
            )
            return
        except Exception as exc:
            await self.reply_crash(envelope, exc)
            raise
        if envelope.reply_to is not None:
            await self.node.reply(envelope, Reply(result))

    async def _call_concurrently(
        self, spec: OperationSpec, kwargs: dict[str, Any], envelope: Envelope, token: object
    ) -> None:
        try:
            await self.call(spec, kwargs, envelope)
        except Exception as exc:
            await self.crash(exc)
        finally:
            self._limiter.release_on_behalf_of(token)

    async def reply_crash(self, envelope: Envelope, exc: Exception) -> None:
        crash = crash_error(self.address, exc)
        await self.node.reply_error(
            envelope, crash.kind, crash.message, actor=self.address, exc_type=crash.exc_type
        )

    async def crash(self, exc: Exception) -> None:
        """Crash the agent from a task other than its own: via its mailbox."""
        ref = self.node.supervisor.ref(self.address)
        if ref is not None:
            # A stopping agent takes no more messages; the caller already has its error.
            with contextlib.suppress(NodeClosed):
                await ref.tell(_Crash(exc))
