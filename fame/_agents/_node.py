"""A node: a supervised Trio nursery of agents and actors, and their routing.

A node runs agents and plain actors under one :class:`Supervisor`. Its
:class:`~fame._agents._switchboard.Switchboard` routes envelopes between
them by address, hands envelopes for addresses it does not host to its
*uplink* (the websocket link to a sentinel, when it has one), and matches
answers to the calls and streams waiting on this node.

Embed one in any Trio program::

    async with fame.open_node() as node:
        agent = await node.spawn(MyAgent(), "my-agent@fame.fabric")
        print(await agent.some_operation(x=1))

The public face is small: spawn and stop agents, get proxies and refs,
call by name, tell (fire and forget, through the outbox). What the
fabric needs (delivering envelopes from a link, setting the uplink and
the path, failing what a lost link will never answer) are the
underscore methods at the end of :class:`Node`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, overload

import trio

from .._core._actor import DEFAULT_MAILBOX_SIZE, Actor, ActorRef
from .._core._address import Address
from .._core._default_storage import StorageOpener, default_storage, set_default_storage
from .._core._errors import NoRoute
from .._core._groups import unwrap_exception_group
from .._core._metrics import NO_METRICS, Metrics
from .._core._storage_protocol import StorageProvider
from .._core._supervisor import RestartPolicy, Supervisor, open_supervisor
from .._wire._schema import Envelope, check_request_id
from ._agent import BaseAgent
from ._agent_actor import AgentActor
from ._agent_scope import AgentScope
from ._courier import Courier
from ._credit import DEFAULT_IDLE_TIMEOUT, DEFAULT_WINDOW, DEFAULT_WINDOW_BYTES
from ._delivery_policy import DeliveryConfig
from ._inbox import Inbox
from ._outbox import Outbox
from ._proxy import AgentT, Proxy
from ._stream import Stream
from ._switchboard import REPLY_NAME, Switchboard, Uplink
from ._waiting_room import DEFAULT_WAITING_BYTES, DEFAULT_WAITING_REQUESTS, WaitingRoom

__all__ = [
    "DEFAULT_TIMEOUT",
    "REPLY_NAME",
    "Node",
    "StorageOpener",
    "Uplink",
    "open_node",
    "set_default_storage",
]

DEFAULT_TIMEOUT = 30.0


class Node:
    """A running node. Get one from :func:`open_node` (or ``fame.connect``)."""

    def __init__(
        self,
        tasks: trio.Nursery,
        supervisor: Supervisor,
        *,
        path: str,
        storage_provider: StorageProvider,
        default_timeout: float,
        stream_idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        waiting_room: WaitingRoom | None = None,
        delivery: DeliveryConfig | None = None,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self._tasks = tasks
        self.supervisor = supervisor
        self.storage_provider = storage_provider
        self.default_timeout = default_timeout
        self._switchboard = Switchboard(
            supervisor,
            path,
            stream_idle_timeout=stream_idle_timeout,
            waiting_room=waiting_room,
            tasks=tasks,
            metrics=metrics,
        )
        self._agent_types: dict[str, type[BaseAgent] | None] = {}
        self._pools: set[str] = set()
        delivery = delivery or DeliveryConfig()
        self._courier = Courier(self._switchboard, Outbox(storage_provider, delivery), delivery)
        self._inbox = Inbox(storage_provider, delivery)

    @property
    def path(self) -> str:
        """The node's path in the fabric (``local`` until a sentinel assigns one)."""
        return self._switchboard.path

    @property
    def reply_address(self) -> str:
        """The address where answers to this node's calls arrive (``_reply@<path>``)."""
        return self._switchboard.reply_address

    # --- spawning -----------------------------------------------------------------

    @overload
    async def spawn(
        self,
        agent: AgentT | Callable[[], AgentT],
        address: str | Address,
        *,
        mailbox_size: int = ...,
        restart_policy: RestartPolicy | None = ...,
        pool: bool = ...,
    ) -> Proxy[AgentT]: ...
    @overload
    async def spawn(
        self,
        agent: Actor | Callable[[], Actor],
        address: str | Address,
        *,
        mailbox_size: int = ...,
        restart_policy: RestartPolicy | None = ...,
        pool: bool = ...,
    ) -> Proxy[Any]: ...
    async def spawn(
        self,
        agent: BaseAgent | Actor | Callable[[], BaseAgent | Actor],
        address: str | Address,
        *,
        mailbox_size: int = DEFAULT_MAILBOX_SIZE,
        restart_policy: RestartPolicy | None = None,
        pool: bool = False,
    ) -> Proxy[Any]:
        """Start ``agent`` at ``address`` and return a proxy to it.

        ``agent`` is an instance (restarted in place after a crash: its
        ``start()`` runs again) or a zero-argument factory such as the class
        itself (every restart gets a fresh instance). Returns once the
        agent's ``start()`` completed; if it raises, so does ``spawn``.

        With ``pool=True`` the address is bound as one member of a pool:
        several nodes may serve it, and the sentinel spreads calls over the
        attached members round-robin. Without it, a second node binding the
        same address is refused.

        On a node already attached to a sentinel the address is bound in the
        background: other nodes may get ``NoRoute`` for a moment after
        ``spawn`` returns. Agents spawned before ``fame.attach`` are bound
        by the time entering ``attach`` returns.
        """
        text = str(Address.parse(address))
        if pool and self._switchboard.uplink is not None and not self._switchboard.uplink.pools:
            raise ValueError(f"{text}: agents on this node cannot be pooled (a sentinel's own)")
        scope = AgentScope(self._tasks, text)
        match agent:
            case BaseAgent():
                agent_type: type[BaseAgent] | None = type(agent)
                actor: Actor | Callable[[], Actor] = self._agent_actor(agent, scope)
            case Actor():
                agent_type, actor = None, agent
            case _ if callable(agent):
                agent_type, actor = self._factory(agent, scope)
            case _:
                raise TypeError(f"cannot spawn {agent!r}: not a BaseAgent, an Actor or a factory")
        self._agent_types[text] = agent_type
        try:
            await self.supervisor.spawn(
                actor, text, mailbox_size=mailbox_size, policy=restart_policy
            )
        except BaseException:
            del self._agent_types[text]
            raise
        if pool:
            self._pools.add(text)
        if self._switchboard.uplink is not None:
            self._switchboard.uplink.bind(text, pool=pool)
        return Proxy(self, text, agent_type)

    def _agent_actor(self, agent: BaseAgent, scope: AgentScope) -> AgentActor:
        return AgentActor(agent, self, self._switchboard, scope, self._inbox)

    def _factory(
        self, factory: Callable[[], BaseAgent | Actor], scope: AgentScope
    ) -> tuple[type[BaseAgent] | None, Callable[[], Actor]]:
        """The agent type a factory makes, and the actor factory the supervisor restarts.

        The factory is called once now, to learn what it makes; that first
        instance is the one started.
        """
        first = [factory()]

        def make() -> Actor:
            match first.pop() if first else factory():
                case BaseAgent() as made:
                    return self._agent_actor(made, scope)
                case Actor() as made:
                    return made
                case made:
                    raise TypeError(f"factory returned {made!r}, not a BaseAgent or Actor")

        match first[0]:
            case BaseAgent() as probe:
                return type(probe), make
            case Actor():
                return None, make
            case probe:
                raise TypeError(f"factory returned {probe!r}, not a BaseAgent or Actor")

    async def stop_agent(self, address: str | Address) -> None:
        """Stop one agent gracefully and withdraw its route."""
        text = str(Address.parse(address))
        if self._switchboard.uplink is not None:
            self._switchboard.uplink.unbind(text)
        await self.supervisor.stop(text)
        self._agent_types.pop(text, None)
        self._pools.discard(text)

    def ref(self, address: str | Address) -> ActorRef:
        """The :class:`ActorRef` of a local actor, for ``tell`` / ``ask``."""
        ref = self.supervisor.ref(str(Address.parse(address)))
        if ref is None:
            raise NoRoute(f"no actor at {address} on this node", actor=str(address))
        return ref

    @overload
    def proxy(self, address: str | Address, agent_type: type[AgentT]) -> Proxy[AgentT]: ...
    @overload
    def proxy(self, address: str | Address, agent_type: None = None) -> Proxy[Any]: ...
    def proxy(
        self, address: str | Address, agent_type: type[BaseAgent] | None = None
    ) -> Proxy[Any]:
        """A proxy to call the agent at ``address``, here or anywhere in the fabric.

        With ``agent_type`` the proxy knows the operations: it checks names
        and positional arguments before sending, and converts results to
        the annotated types. Without it, any name is sent as is.
        """
        text = str(Address.parse(address))
        return Proxy(self, text, agent_type or self._agent_types.get(text))

    # --- calling by name ------------------------------------------------------------

    async def call(
        self,
        address: str,
        op: str,
        args: dict[str, Any],
        *,
        timeout: float | None = None,
        request_id: str | None = None,
        retry_safe: bool = False,
    ) -> Any:
        """Call plain operation ``op`` of the agent at ``address``; return its result.

        Arguments and result are copies, as on the wire, also for an agent
        on this node. ``request_id`` (1 to 64 characters; a fresh random one
        if ``None``) goes with every attempt of the call; ``retry_safe``
        says that a lost answer may be retried with it (the operation is
        idempotent or deduplicated; a typed proxy knows that from the
        operation). What each error means is in :mod:`fame.errors`:
        :class:`~fame.errors.NotApplied` or :class:`~fame.errors.OutcomeUnknown`.
        """
        timeout = self.default_timeout if timeout is None else timeout
        if request_id is not None:
            check_request_id(request_id)
        return await self._switchboard.call(
            address, op, args, timeout, request_id=request_id, retry_safe=retry_safe
        )

    def _call_converted(
        self,
        address: str,
        op: str,
        args: dict[str, Any],
        timeout: float | None,
        request_id: str | None,
        retry_safe: bool = False,
        convert: Callable[[Any], Any] | None = None,
        /,
    ) -> Coroutine[Any, Any, Any]:
        """:meth:`call` as a coroutine, its result converted by ``convert``: what a proxy awaits.

        A plain function: the proxy awaits the switchboard's coroutine itself,
        one frame less on every call. ``request_id`` was checked by the proxy.
        """
        return self._switchboard.call(
            address,
            op,
            args,
            self.default_timeout if timeout is None else timeout,
            request_id=request_id,
            retry_safe=retry_safe,
            convert=convert,
        )

    async def tell(
        self, address: str, op: str, args: dict[str, Any], *, request_id: str | None = None
    ) -> str:
        """Send ``op(**args)`` to the agent at ``address`` without waiting; return the message id.

        Fire and forget, at least once: the message is recorded in this
        node's outbox (durably, in ``__delivery_outbox``, on a node with
        storage, before this returns; in memory on a client) and a task
        of the node delivers it, again and again with backoff until the
        receiver acknowledges it, across restarts of either side. The
        receiver applies it once: its inbox remembers the message id
        (scoped by this node's verified principal). ``request_id`` (1 to
        64 characters; a fresh random one if ``None``) is the message id:
        telling again with the id of a message still in the outbox records
        nothing new. A message that cannot be delivered (refused for good,
        or ``DeliveryConfig.max_attempts`` attempts failed) becomes a dead
        letter (``fame dlq``). Messages to one destination may arrive in
        any order. Raises :class:`fame.errors.OutboxFull` (nothing
        recorded) when the outbox is full. A message to an agent on this
        node takes the same path. Only plain operations can be told; the
        result is dropped.
        """
        return await self._courier.tell(address, op, args, request_id)

    def open_stream(
        self,
        address: str,
        op: str,
        args: dict[str, Any],
        *,
        timeout: float | None = None,
        window: int = DEFAULT_WINDOW,
        item_type: Any = Any,
        window_bytes: int | None = DEFAULT_WINDOW_BYTES,
    ) -> Stream[Any]:
        """Call streaming operation ``op``; iterate the returned :class:`Stream`.

        ``window`` items and ``window_bytes`` bytes of them (``None``: no
        byte limit) may be in flight from the producer at once.
        """
        timeout = self.default_timeout if timeout is None else timeout
        return Stream(
            self._switchboard, address, op, args, timeout, window, item_type, window_bytes
        )

    # --- for the fabric (private) ----------------------------------------------------

    def _set_uplink(self, uplink: Uplink | None) -> None:
        """Make ``uplink`` this node's link to the fabric; ``None`` when it ends.

        Raises :class:`RuntimeError` if the node already has one: a node
        attaches to one sentinel (or is one) at a time.
        """
        switchboard = self._switchboard
        if uplink is not None and switchboard.uplink is not None:
            raise RuntimeError("this node already has an uplink")
        switchboard.uplink = uplink

    def _has_uplink(self) -> bool:
        return self._switchboard.uplink is not None

    def _set_path(self, path: str) -> None:
        """Take the path a sentinel assigned; the reply address follows it."""
        self._switchboard.set_path(path)

    def _hosts(self, address: str) -> bool:
        """Whether envelopes to ``address`` are delivered on this node."""
        return self._switchboard.hosts(address)

    def _local_addresses(self) -> list[str]:
        """The addresses of the agents and actors running here, to bind on attach."""
        return [a for a in self._agent_types if a in self.supervisor]

    def _is_pool(self, address: str) -> bool:
        """Whether this node serves ``address`` as one member of a pool."""
        return address in self._pools

    async def _deliver(self, envelope: Envelope, size: int | None = None) -> None:
        """Take an envelope that arrived from the fabric (never blocks on a mailbox).

        ``size``: its encoded size, if the link knows it (it saves measuring
        a request that has to wait for mailbox room).
        """
        await self._switchboard.deliver(envelope, size)

    @property
    def _metrics(self) -> Metrics:
        """Where the node records: its fabric link adds its own figures there."""
        return self._switchboard.metrics

    def _link_lost(self, reason: str) -> None:
        """Fail every call and stream whose answer was to come through the lost link."""
        self._switchboard.link_lost(reason)

    def _cancel_streams_to(self, reply_address: str, reason: str) -> int:
        """Cancel the streams served to callers at ``reply_address`` (their link closed)."""
        return self._switchboard.cancel_streams_to(reply_address, reason)


@asynccontextmanager
async def open_node(
    *,
    path: str = "local",
    storage_provider: StorageProvider | None = None,
    restart_policy: RestartPolicy | None = None,
    default_timeout: float = DEFAULT_TIMEOUT,
    stop_timeout: float = 10.0,
    stream_idle_timeout: float | None = None,
    waiting_room_requests: int = DEFAULT_WAITING_REQUESTS,
    waiting_room_bytes: int = DEFAULT_WAITING_BYTES,
    delivery: DeliveryConfig | None = None,
    metrics: Metrics = NO_METRICS,
) -> AsyncIterator[Node]:
    """Run a node for the duration of the ``async with`` block.

    ``storage_provider`` is handed to every agent as ``storage_provider``;
    when it is ``None`` an in-memory one is opened and closed with the
    node. fame reads no environment: a program that wants the
    ``FAME_STORAGE_*`` settings opens
    ``fame.storage.open_storage_from_env(os.environ)`` and passes it.
    Leaving the block stops every agent gracefully (each handles what is
    queued, then its ``stop()`` runs); cancelling it stops them at once,
    ``stop()`` still running. An agent that crashes more often than
    ``restart_policy`` allows ends the block with
    :class:`fame.SupervisorGaveUp`.

    ``stream_idle_timeout`` is how long a streaming operation waits for
    credit from a consumer that stopped reading before it gives up (its
    generator is closed); ``None`` means 300 s.

    ``waiting_room_requests`` and ``waiting_room_bytes`` bound the requests
    from the fabric the node holds while their agents' mailboxes are full
    (4096 requests, 16 MiB); past them a request is answered ``overloaded``
    and its caller retries until its own deadline.

    ``delivery`` bounds the outbox of ``node.tell``, its dead letters and
    the inbox (:class:`fame.DeliveryConfig`; ``None``: the defaults). The
    outbox of a node with storage is durable: messages a previous run
    left in it are sent again from the start.

    ``metrics`` records the node's calls, stream stalls, mailbox depths and
    restarts (see ``fame.lowlevel.PrometheusMetrics``); the default records
    nothing and costs nothing.
    """
    idle_timeout = DEFAULT_IDLE_TIMEOUT if stream_idle_timeout is None else stream_idle_timeout
    if not idle_timeout > 0:
        raise ValueError(f"stream_idle_timeout must be > 0 seconds, got {stream_idle_timeout!r}")
    waiting_room = WaitingRoom(waiting_room_requests, waiting_room_bytes)
    async with AsyncExitStack() as stack:
        if storage_provider is None:
            opener = default_storage()
            if opener is None:
                raise RuntimeError("open_node() needs a storage_provider: no default is set")
            storage_provider = await stack.enter_async_context(opener())
        async with unwrap_exception_group(), trio.open_nursery() as tasks:
            node: Node | None = None
            try:
                async with open_supervisor(restart_policy, stop_timeout=stop_timeout) as sup:
                    node = Node(
                        tasks,
                        sup,
                        path=path,
                        storage_provider=storage_provider,
                        default_timeout=default_timeout,
                        stream_idle_timeout=idle_timeout,
                        waiting_room=waiting_room,
                        delivery=delivery,
                        metrics=metrics,
                    )
                    await tasks.start(node._courier.run)
                    metrics.add_source(sup.samples)
                    try:
                        yield node
                    finally:
                        metrics.remove_source(sup.samples)
                        node._courier.stop()
            finally:
                # Only now: a graceful close first lets queued calls be answered.
                if node is not None:
                    node._switchboard.close_pending()
            tasks.cancel_scope.cancel()
