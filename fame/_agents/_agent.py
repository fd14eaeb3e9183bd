"""Agents: classes whose ``@operation`` methods are called by message.

Subclass :class:`BaseAgent`, mark methods with :func:`fame.operation`, and
spawn an instance on a node. The node runs it in an actor (see
``fame._agents._agent_actor``) that turns each request into a validated
method call and sends the result (or stream items, or a typed error) to
the caller.

By default an agent handles one call at a time, like any actor, so its
state needs no locks. Agents whose operations are safe to interleave (for
example because all their state lives in a store) set ``max_concurrency``.

Streams count against that concurrency: a stream holds one slot while it
works (from when its consumer grants credit until that credit is spent;
one waiting for credit holds none, so a reader that stalls cannot lock
the others out until the stream idle timeout), and streams never take the
last slot, which stays for plain calls. A one-at-a-time agent
(``max_concurrency == 1``) runs its calls in its own task and works on one
stream at a time beside them. At most ``max_streams_per_caller`` streams
of one caller (its verified principal and its reply address) may be open
at once, working or not; past it a new one is refused with
:class:`fame.errors.QuotaExceeded`.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, Protocol

from .._core._errors import AgentNotStarted
from .._core._storage_protocol import StorageProvider
from ._caller import Caller
from ._operation import OperationSpec, collect_operations
from ._state import StateSlot, open_state

__all__ = ["AgentNode", "BaseAgent"]


class AgentNode(Caller, Protocol):
    """What an agent sees of the node running it (a :class:`fame.Node`).

    To call another agent from an operation, make a proxy on it:
    ``fame.Proxy(self.node, "other@fame.fabric", OtherAgent)``.
    """

    @property
    def path(self) -> str:
        """The node's path in the fabric (``local`` until it attaches)."""

    @property
    def storage_provider(self) -> StorageProvider:
        """The node's storage provider."""


class BaseAgent:
    """Base class of agents.

    Override :meth:`start` to set up (open key-value stores through
    :attr:`storage_provider`) and :meth:`stop` to clean up. Both run inside
    the node, with the node's storage attached.
    """

    max_concurrency: ClassVar[int] = 1
    """How many calls and streams this agent may work on at once.

    Streams may take all slots but one, which stays for plain calls; with
    ``1``, calls run one at a time and one stream may work beside them.
    """

    max_streams_per_caller: ClassVar[int] = 8
    """How many streams one caller may have open (or waiting to start) at once."""

    operations: ClassVar[dict[str, OperationSpec]] = {}
    """The agent's operations by name, collected when the class is created."""

    state_model: ClassVar[type[Any] | None] = None
    """The model of the agent's durable state (see :meth:`state`); ``None``: no state."""

    _fame_node: AgentNode | None = None
    _fame_address: str | None = None
    _fame_state: StateSlot | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.operations = collect_operations(cls)
        if cls.max_concurrency < 1:
            raise ValueError(f"{cls.__name__}.max_concurrency must be at least 1")
        if cls.max_streams_per_caller < 1:
            raise ValueError(f"{cls.__name__}.max_streams_per_caller must be at least 1")

    @property
    def storage_provider(self) -> StorageProvider:
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
    def node(self) -> AgentNode:
        """The node running this agent (to call other agents)."""
        if self._fame_node is None:
            raise AgentNotStarted(f"{type(self).__name__} has not been spawned on a node")
        return self._fame_node

    def state(self) -> AbstractAsyncContextManager[Any]:
        """The agent's durable state, for one transactional block::

            async with self.state() as s:  # a state_model instance
                s.count += 1

        The record under the agent's address (default-constructed if there
        is none) is read at the start of the block and written back, only if
        it changed, when the block exits normally; a block that raises writes
        nothing. Blocks of one agent run one at a time. A write that finds
        the state changed by another writer since the read raises
        :class:`fame.errors.StateConflict` and writes nothing. The state
        survives restarts of the agent and of the node (on a file profile).
        """
        model = type(self).state_model
        owner = type(self).__name__
        if model is None:
            raise TypeError(f"{owner} has no state: set the class attribute state_model")
        if self._fame_state is None:
            self._fame_state = StateSlot()
        return open_state(self._fame_state, self.storage_provider, model, self.address, owner)

    async def start(self) -> None:
        """Called when the agent starts, and again after each restart."""

    async def stop(self) -> None:
        """Called once when the agent stops."""
