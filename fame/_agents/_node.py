"""A node: a supervised Trio nursery of actors, with local routing.

A node runs agents and plain actors under one :class:`Supervisor`, routes
envelopes between them by address, and hands envelopes for addresses it
does not host to its *uplink* (the websocket link to a sentinel, when it
has one). Calls from this node get their replies at the node's reply
address, where a table of pending calls and open streams matches them by
correlation id.

Embed one in any Trio program::

    async with fame.open_node() as node:
        agent = await node.spawn(MyAgent(), "my-agent@fame.fabric")
        print(await agent.some_operation(x=1))
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Any, Protocol

import trio

from .._core._actor import Actor, ActorRef
from .._core._address import Address
from .._core._errors import (
    DeadlineExceeded,
    MailboxFull,
    NodeClosed,
    NoRoute,
    ProtocolError,
    WireError,
    remote_error,
)
from .._core._groups import unwrap_exception_group
from .._core._reply import ReplySlot
from .._core._supervisor import RestartPolicy, Supervisor, open_supervisor
from .._wire._schema import (
    Cancel,
    Credit,
    Envelope,
    Error,
    Frame,
    Reply,
    Request,
)
from ._agent import AgentActor, BaseAgent
from ._operation import OperationSpec
from ._proxy import Proxy
from ._stream import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_WINDOW,
    Stream,
    StreamConsumer,
    StreamProducer,
    idle_timeout_from_env,
    timeout_ms,
)
from ._stream_serving import serve_stream, unsendable

__all__ = ["Node", "Uplink", "open_node"]

log = logging.getLogger("fame.node")

DEFAULT_TIMEOUT = 30.0
REPLY_NAME = "_reply"


class Uplink(Protocol):
    """What a node needs from its link to a sentinel (see ``fame._fabric._uplink``)."""

    pools: bool
    """Whether this node's agents may join pools (``spawn(..., pool=True)``)."""

    async def send(self, envelope: Envelope) -> None:
        """Send an envelope towards the fabric; raise :class:`fame.NoRoute` if offline."""

    def bind(self, address: str, *, pool: bool = False) -> None:
        """Ask the sentinel to route ``address`` to this node (asynchronously).

        With ``pool``, the node joins the pool of nodes serving ``address``.
        """

    def unbind(self, address: str) -> None:
        """Ask the sentinel to stop routing ``address`` to this node."""


class Node:
    """A running node. Get one from :func:`open_node` (or ``fame.connect``)."""

    def __init__(
        self,
        tasks: trio.Nursery,
        supervisor: Supervisor,
        *,
        path: str,
        storage_provider: Any,
        default_timeout: float,
        stream_idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self._tasks = tasks
        self.supervisor = supervisor
        self.storage_provider = storage_provider
        self.default_timeout = default_timeout
        self.stream_idle_timeout = stream_idle_timeout
        self.uplink: Uplink | None = None
        self._ids = itertools.count(1)
        self._corr = itertools.count(1)
        self._pending: dict[int, ReplySlot] = {}
        self._consumers: dict[int, StreamConsumer] = {}
        # Calls and streams whose request left through the uplink, by corr: what
        # link_lost() must fail, since their answers can no longer arrive.
        self._remote: dict[int, str] = {}
        self._producers: dict[tuple[str | None, int | None], StreamProducer] = {}
        self._agent_types: dict[str, type[BaseAgent]] = {}
        self._pools: set[str] = set()
        self.set_path(path)

    # --- identity -----------------------------------------------------------------

    def set_path(self, path: str) -> None:
        """Set the node's own path (the sentinel assigns one on attach)."""
        self.path = Address(REPLY_NAME, path).path
        self.reply_address = f"{REPLY_NAME}@{path}"

    def local_addresses(self) -> list[str]:
        """The addresses of the actors and agents hosted here."""
        return [a for a in self._agent_types if a in self.supervisor]

    def is_pool(self, address: str) -> bool:
        """Whether this node serves ``address`` as one member of a pool."""
        return address in self._pools

    # --- spawning -----------------------------------------------------------------

    async def spawn(
        self,
        agent: BaseAgent | Actor | Callable[[], BaseAgent | Actor],
        address: str | Address,
        *,
        mailbox_size: int = 1024,
        restart_policy: RestartPolicy | None = None,
        pool: bool = False,
    ) -> Proxy:
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
        if pool and self.uplink is not None and not self.uplink.pools:
            raise ValueError(f"{text}: agents on this node cannot be pooled (a sentinel's own)")
        agent_type: type[BaseAgent] | None = None
        if isinstance(agent, BaseAgent):
            instance = agent
            agent_type = type(agent)
            actor: Actor | Callable[[], Actor] = AgentActor(instance, self)
        elif isinstance(agent, Actor):
            actor = agent
        elif callable(agent):
            factory = agent
            probe = factory()
            if isinstance(probe, BaseAgent):
                agent_type = type(probe)
                first: list[BaseAgent | Actor] = [probe]

                def make() -> Actor:
                    made = first.pop() if first else factory()
                    return AgentActor(made, self) if isinstance(made, BaseAgent) else made

                actor = make
            elif isinstance(probe, Actor):
                first_actor = [probe]

                def make_actor() -> Actor:
                    return first_actor.pop() if first_actor else factory()  # type: ignore[return-value]

                actor = make_actor
            else:
                raise TypeError(f"factory returned {probe!r}, not a BaseAgent or Actor")
        else:
            raise TypeError(f"cannot spawn {agent!r}: not a BaseAgent, an Actor or a factory")
        self._agent_types[text] = agent_type or BaseAgent
        try:
            await self.supervisor.spawn(
                actor, text, mailbox_size=mailbox_size, policy=restart_policy
            )
        except BaseException:
            del self._agent_types[text]
            raise
        if pool:
            self._pools.add(text)
        if self.uplink is not None:
            self.uplink.bind(text, pool=pool)
        return Proxy(self, text, agent_type)

    async def stop_agent(self, address: str | Address) -> None:
        """Stop one agent gracefully and withdraw its route."""
        text = str(Address.parse(address))
        if self.uplink is not None:
            self.uplink.unbind(text)
        await self.supervisor.stop(text)
        self._agent_types.pop(text, None)
        self._pools.discard(text)

    def ref(self, address: str | Address) -> ActorRef:
        """The :class:`ActorRef` of a local actor, for ``tell`` / ``ask``."""
        ref = self.supervisor.ref(str(Address.parse(address)))
        if ref is None:
            raise NoRoute(f"no actor at {address} on this node", actor=str(address))
        return ref

    def proxy(self, address: str | Address, agent_type: type[BaseAgent] | None = None) -> Proxy:
        """A proxy to call the agent at ``address``, here or anywhere in the fabric.

        With ``agent_type`` the proxy knows the operations: it checks names
        and positional arguments before sending, and converts results to
        the annotated types. Without it, any name is sent as is.
        """
        text = str(Address.parse(address))
        return Proxy(self, text, agent_type or self._agent_types.get(text))

    def spawn_task(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run a task (a stream, a concurrent call) in the node's nursery."""
        self._tasks.start_soon(fn, *args)

    # --- calling ------------------------------------------------------------------

    async def call(
        self,
        address: str,
        op: str,
        args: dict[str, Any],
        *,
        timeout: float | None = None,
    ) -> Any:
        """Call plain operation ``op`` of the agent at ``address``; return its result."""
        timeout = self.default_timeout if timeout is None else timeout
        corr = next(self._corr)
        slot = ReplySlot()
        self._pending[corr] = slot
        envelope = Envelope(
            0,
            address,
            next(self._ids),
            Request(op, args, False, 0, timeout_ms(timeout)),
            self.reply_address,
            corr,
        )
        try:
            with trio.move_on_after(timeout):
                if await self.route(envelope, timeout=timeout):
                    self._remote[corr] = address
                frame = await slot.wait()
                if type(frame) is Reply:
                    return frame.result
                raise _error_from(frame)
            raise DeadlineExceeded(f"{address} did not answer {op}() within {timeout} s")
        finally:
            del self._pending[corr]
            self._remote.pop(corr, None)

    def open_stream(
        self,
        address: str,
        op: str,
        args: dict[str, Any],
        *,
        timeout: float | None = None,
        window: int = DEFAULT_WINDOW,
        item_type: Any = Any,
    ) -> Stream:
        """Call streaming operation ``op``; iterate the returned :class:`Stream`."""
        timeout = self.default_timeout if timeout is None else timeout
        return Stream(self, address, op, args, timeout, window, item_type)

    # --- routing ------------------------------------------------------------------

    async def route(self, envelope: Envelope, *, timeout: float | None = None) -> bool:
        """Send an envelope from this node: to a local actor, to a caller, or uplink.

        Returns True if the envelope left through the uplink.
        """
        to = envelope.to
        if to == self.reply_address:
            self._on_reply(envelope)
            return False
        frame_type = type(envelope.frame)
        if (frame_type is Credit or frame_type is Cancel) and self._control_stream(envelope):
            return False
        ref = self.supervisor.ref(to)
        if ref is not None:
            if frame_type is Request:
                await ref.tell(envelope, timeout=timeout)
            return False
        if self.uplink is not None:
            await self.uplink.send(envelope)
            return True
        raise NoRoute(f"no route to {to}: no such actor on this node", actor=to)

    async def deliver(self, envelope: Envelope) -> None:
        """Take an envelope arriving from the uplink; never blocks on a full mailbox.

        A request for an address not hosted here, or whose mailbox is full,
        is answered at once with an error, so one busy agent never stalls
        the link for the others.
        """
        if envelope.to == self.reply_address:
            self._on_reply(envelope)
            return
        frame_type = type(envelope.frame)
        if frame_type is Credit or frame_type is Cancel:
            self._control_stream(envelope)
            return
        if frame_type is not Request:
            return  # replies for callers that moved on
        ref = self.supervisor.ref(envelope.to)
        try:
            if ref is None:
                raise NoRoute(f"no actor at {envelope.to}", actor=envelope.to)
            ref.tell_nowait(envelope)
        except (NoRoute, MailboxFull) as exc:
            await self.reply_error(envelope, exc.kind, exc.message, actor=envelope.to)
        except NodeClosed:
            await self.reply_error(
                envelope, NoRoute.kind, f"{envelope.to} is stopping", actor=envelope.to
            )

    async def reply(self, request: Envelope, frame: Frame) -> None:
        """Send ``frame`` to the caller of ``request`` (dropped if it was a tell)."""
        if request.reply_to is None:
            return
        envelope = Envelope(0, request.reply_to, next(self._ids), frame, None, request.corr)
        if envelope.to == self.reply_address:
            self._on_reply(envelope)
            return
        try:
            await self.route(envelope)
        except (NoRoute, NodeClosed, MailboxFull) as exc:
            log.debug("reply to %s dropped: %s", request.reply_to, exc)
        except WireError as exc:
            # The result does not fit on the wire (over the size limit): the
            # caller hears so at once rather than waiting out its deadline. A
            # stream's item raises on, so that its producer stops.
            if type(frame) is not Reply:
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
    ) -> None:
        await self.reply(request, Error(kind, message, actor, exc_type))

    # --- streams, consumer side (used by Stream) -------------------------------------

    async def send_stream_request(
        self, address: str, request: Request, consumer: StreamConsumer, timeout: float
    ) -> int:
        """Send a streaming request whose frames ``consumer`` will receive; return its corr."""
        corr = next(self._corr)
        self._consumers[corr] = consumer
        envelope = Envelope(0, address, next(self._ids), request, self.reply_address, corr)
        try:
            with trio.fail_after(timeout):
                if await self.route(envelope, timeout=timeout):
                    self._remote[corr] = address
        except trio.TooSlowError:
            self.forget_stream(corr)
            raise DeadlineExceeded(f"{address} did not take {request.op}()") from None
        except BaseException:
            self.forget_stream(corr)
            raise
        return corr

    async def send_stream_control(self, address: str, corr: int, frame: Credit | Cancel) -> None:
        """Send credit or a cancel to the producer of stream ``corr``; lost links are ignored."""
        envelope = Envelope(0, address, next(self._ids), frame, self.reply_address, corr)
        with suppress(NoRoute, NodeClosed):
            await self.route(envelope)

    def cancel_stream_nowait(self, address: str, corr: int) -> None:
        """Best-effort cancel of stream ``corr`` from synchronous code (``__del__``)."""
        self.forget_stream(corr)
        envelope = Envelope(0, address, 0, Cancel("stream dropped"), self.reply_address, corr)
        if not self._control_stream(envelope) and self.uplink is not None:
            send_nowait = getattr(self.uplink, "send_nowait", None)
            if send_nowait is not None:
                send_nowait(envelope)

    def forget_stream(self, corr: int) -> None:
        """Stop delivering frames of stream ``corr``: it ended or was closed."""
        self._consumers.pop(corr, None)
        self._remote.pop(corr, None)

    def link_lost(self, reason: str) -> None:
        """Fail every call and stream waiting on an answer through the lost uplink.

        Called by the uplink when its connection drops: the answers of those
        requests can no longer arrive, so their callers get
        :class:`fame.NoRoute` now instead of waiting out their deadlines.
        """
        remote, self._remote = self._remote, {}
        for corr, address in remote.items():
            error = NoRoute(f"no answer from {address}: {reason}", actor=address)
            slot = self._pending.get(corr)
            if slot is not None:
                slot.set(Error(error.kind, error.message, address, None))
                continue
            consumer = self._consumers.get(corr)
            if consumer is not None:
                consumer.fail(error)

    def cancel_streams_to(self, reply_address: str, reason: str) -> int:
        """Cancel every stream this node produces for callers at ``reply_address``.

        For a sentinel whose link to those callers closed: nobody will read
        or grant credit any more, so the producers stop now rather than at
        the idle timeout. Returns how many were cancelled.
        """
        doomed = [p for (reply_to, _), p in self._producers.items() if reply_to == reply_address]
        for producer in doomed:
            producer.control(Cancel(reason))
        return len(doomed)

    def close_pending(self) -> None:
        """Fail every call still waiting on this node: it is closing."""
        for corr, slot in list(self._pending.items()):
            slot.fail(NodeClosed(f"the node closed while call {corr} was waiting"))
        for consumer in list(self._consumers.values()):
            consumer.fail(NodeClosed("the node closed while the stream was open"))

    def _on_reply(self, envelope: Envelope) -> None:
        corr = envelope.corr
        if corr is None:
            return
        slot = self._pending.get(corr)
        if slot is not None:
            slot.set(envelope.frame)
            return
        consumer = self._consumers.get(corr)
        if consumer is not None:
            consumer.push(envelope.frame)
        # Anything else answers a call whose caller stopped waiting: dropped.

    def _control_stream(self, envelope: Envelope) -> bool:
        producer = self._producers.get((envelope.reply_to, envelope.corr))
        if producer is None:
            return False
        producer.control(envelope.frame)
        return True

    # --- streams, producer side -----------------------------------------------------

    def start_stream(
        self, actor: AgentActor, spec: OperationSpec, kwargs: dict[str, Any], request: Envelope
    ) -> None:
        """Serve streaming ``request`` in a task (see ``fame._agents._stream_serving``)."""
        frame = request.frame
        assert type(frame) is Request
        producer = StreamProducer(frame.credit)
        key = (request.reply_to, request.corr)
        self._producers[key] = producer
        self._tasks.start_soon(self._run_stream, actor, spec, kwargs, request, producer, key)

    async def _run_stream(
        self,
        actor: AgentActor,
        spec: OperationSpec,
        kwargs: dict[str, Any],
        request: Envelope,
        producer: StreamProducer,
        key: tuple[str | None, int | None],
    ) -> None:
        try:
            await serve_stream(self, actor, spec, kwargs, request, producer)
        finally:
            self._producers.pop(key, None)


def _error_from(frame: Frame) -> Exception:
    if type(frame) is Error:
        return remote_error(frame.kind, frame.message, actor=frame.actor, exc_type=frame.exc_type)
    return ProtocolError(f"unexpected {type(frame).__name__} in reply to a call")


@asynccontextmanager
async def open_node(
    *,
    path: str = "local",
    storage_provider: Any = None,
    restart_policy: RestartPolicy | None = None,
    default_timeout: float = DEFAULT_TIMEOUT,
    stop_timeout: float = 10.0,
    stream_idle_timeout: float | None = None,
) -> AsyncIterator[Node]:
    """Run a node for the duration of the ``async with`` block.

    ``storage_provider`` is handed to every agent as ``storage_provider``;
    when it is ``None`` one is opened from the environment
    (``FAME_STORAGE_PROFILE``, ``memory`` by default) and closed with the
    node. Leaving the block stops every agent gracefully (each handles what
    is queued, then its ``stop()`` runs); cancelling it stops them at once,
    ``stop()`` still running. An agent that crashes more often than
    ``restart_policy`` allows ends the block with
    :class:`fame.SupervisorGaveUp`.

    ``stream_idle_timeout`` is how long a streaming operation waits for
    credit from a consumer that stopped reading before it gives up (its
    generator is closed); ``None`` reads ``FAME_STREAM_IDLE_TIMEOUT``
    (300 s when unset).
    """
    idle_timeout = idle_timeout_from_env() if stream_idle_timeout is None else stream_idle_timeout
    if not idle_timeout > 0:
        raise ValueError(f"stream_idle_timeout must be > 0 seconds, got {stream_idle_timeout!r}")
    async with AsyncExitStack() as stack:
        if storage_provider is None:
            from .._storage import open_storage_from_env

            storage_provider = await stack.enter_async_context(open_storage_from_env())
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
                    )
                    yield node
            finally:
                # Only now: a graceful close first lets queued calls be answered.
                if node is not None:
                    node.close_pending()
            tasks.cancel_scope.cancel()
