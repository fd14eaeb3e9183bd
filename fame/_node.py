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
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, aclosing, asynccontextmanager, suppress
from typing import Any, Protocol

import msgspec
import trio

from ._actor import Actor, ActorRef
from ._address import Address
from ._agent import AgentActor, BaseAgent
from ._errors import (
    DeadlineExceeded,
    MailboxFull,
    NodeClosed,
    NoRoute,
    ProtocolError,
    remote_error,
)
from ._operation import OperationSpec
from ._reply import ReplySlot
from ._stream import DEFAULT_WINDOW, StreamConsumer, StreamProducer
from ._supervisor import RestartPolicy, Supervisor, open_supervisor, unwrap_exception_group
from ._wire import (
    Cancel,
    Credit,
    Envelope,
    Error,
    Frame,
    Reply,
    Request,
    StreamEnd,
    StreamItem,
)

__all__ = ["Node", "Uplink", "open_node"]

log = logging.getLogger("fame.node")

DEFAULT_TIMEOUT = 30.0
STREAM_IDLE_TIMEOUT = 300.0
REPLY_NAME = "_reply"


class Uplink(Protocol):
    """What a node needs from its link to a sentinel (see ``fame._uplink``)."""

    async def send(self, envelope: Envelope) -> None:
        """Send an envelope towards the fabric; raise :class:`fame.NoRoute` if offline."""

    def bind(self, address: str) -> None:
        """Ask the sentinel to route ``address`` to this node (asynchronously)."""

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
        stream_idle_timeout: float = STREAM_IDLE_TIMEOUT,
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
        self.set_path(path)

    # --- identity -----------------------------------------------------------------

    def set_path(self, path: str) -> None:
        """Set the node's own path (the sentinel assigns one on attach)."""
        self.path = Address(REPLY_NAME, path).path
        self.reply_address = f"{REPLY_NAME}@{path}"

    def local_addresses(self) -> list[str]:
        """The addresses of the actors and agents hosted here."""
        return [a for a in self._agent_types if a in self.supervisor]

    # --- spawning -----------------------------------------------------------------

    async def spawn(
        self,
        agent: BaseAgent | Actor | Callable[[], BaseAgent | Actor],
        address: str | Address,
        *,
        mailbox_size: int = 1024,
        restart_policy: RestartPolicy | None = None,
    ) -> Proxy:
        """Start ``agent`` at ``address`` and return a proxy to it.

        ``agent`` is an instance (restarted in place after a crash: its
        ``start()`` runs again) or a zero-argument factory such as the class
        itself (every restart gets a fresh instance). Returns once the
        agent's ``start()`` completed; if it raises, so does ``spawn``.
        """
        text = str(Address.parse(address))
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
        if self.uplink is not None:
            self.uplink.bind(text)
        return Proxy(self, text, agent_type)

    async def stop_agent(self, address: str | Address) -> None:
        """Stop one agent gracefully and withdraw its route."""
        text = str(Address.parse(address))
        if self.uplink is not None:
            self.uplink.unbind(text)
        await self.supervisor.stop(text)
        self._agent_types.pop(text, None)

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
            Request(op, args, False, 0, _ms(timeout)),
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
            with producer.cancel_scope:
                async with aclosing(spec.function(actor.agent, **kwargs)) as items:
                    async for item in items:
                        value = spec.convert_result(item)
                        if not producer.credit.try_take():
                            with trio.move_on_after(self.stream_idle_timeout) as idle:
                                await producer.credit.take()
                            if idle.cancelled_caught:
                                log.info("stream %s of %s idle: closed", spec.name, actor.address)
                                return
                        await self.reply(request, StreamItem(value))
                await self.reply(request, StreamEnd())
        except spec.errors as exc:
            await self.reply_error(
                request,
                "operation_failed",
                str(exc),
                actor=actor.address,
                exc_type=type(exc).__name__,
            )
        except Exception as exc:
            await actor.reply_crash(request, exc)
            await actor.crash(exc)
        finally:
            self._producers.pop(key, None)


def _ms(timeout: float) -> int | None:
    return None if math.isinf(timeout) else max(0, int(timeout * 1000))


def _error_from(frame: Frame) -> Exception:
    if type(frame) is Error:
        return remote_error(frame.kind, frame.message, actor=frame.actor, exc_type=frame.exc_type)
    return ProtocolError(f"unexpected {type(frame).__name__} in reply to a call")


class Stream:
    """The results of a streaming call: ``async for item in stream``.

    Use it as ``async with`` (or call :meth:`aclose`) to stop early: the
    agent's generator is then closed. A stream dropped unfinished is
    cancelled the same way when it is garbage collected. ``timeout`` bounds
    the wait for each item.
    """

    def __init__(
        self,
        node: Node,
        address: str,
        op: str,
        args: dict[str, Any],
        timeout: float | None,
        window: int,
        item_type: Any,
    ) -> None:
        self._node = node
        self._address = address
        self._op = op
        self._args = args
        self._timeout = node.default_timeout if timeout is None else timeout
        self._item_type = item_type
        self._consumer = StreamConsumer(address, window)
        self._corr: int | None = None
        self._reply_to = node.reply_address

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Any:
        if self._corr is None:
            await self._open()
        try:
            item, grant = await self._consumer.next(self._timeout)
        except BaseException:
            if self._consumer.finished:
                self._forget()  # ended (normally or not): nothing more will arrive
            raise
        if grant:
            await self._send(Credit(grant))
        if self._item_type is not Any:
            item = msgspec.convert(item, self._item_type, strict=False)
        return item

    async def _open(self) -> None:
        node = self._node
        self._corr = corr = next(node._corr)
        node._consumers[corr] = self._consumer
        request = Request(
            self._op, self._args, True, self._consumer.window.window, _ms(self._timeout)
        )
        envelope = Envelope(0, self._address, next(node._ids), request, self._reply_to, corr)
        try:
            with trio.fail_after(self._timeout):
                if await node.route(envelope, timeout=self._timeout):
                    node._remote[corr] = self._address
        except trio.TooSlowError:
            self._forget()
            raise DeadlineExceeded(f"{self._address} did not take {self._op}()") from None
        except BaseException:
            self._forget()
            raise

    async def _send(self, frame: Frame) -> None:
        node = self._node
        envelope = Envelope(0, self._address, next(node._ids), frame, self._reply_to, self._corr)
        with suppress(NoRoute, NodeClosed):
            await node.route(envelope)

    def _forget(self) -> None:
        if self._corr is not None:
            self._node._consumers.pop(self._corr, None)
            self._node._remote.pop(self._corr, None)

    async def aclose(self) -> None:
        """Stop the stream; the agent's generator is closed."""
        if self._corr is None or self._consumer.finished:
            self._forget()
            self._consumer.finished = True
            return
        self._consumer.finished = True
        self._forget()
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await self._send(Cancel("consumer closed the stream"))

    def __del__(self) -> None:
        if self._corr is not None and not self._consumer.finished:
            self._forget()
            node = self._node
            envelope = Envelope(
                0, self._address, 0, Cancel("stream dropped"), self._reply_to, self._corr
            )
            if not node._control_stream(envelope) and node.uplink is not None:
                send_nowait = getattr(node.uplink, "send_nowait", None)
                if send_nowait is not None:
                    send_nowait(envelope)


class Proxy:
    """Calls an agent's operations as methods: ``await proxy.op(x=1)``.

    Every attribute is an operation. A plain one is awaited; a streaming
    one is iterated (``async for item in proxy.op()``). Without an agent
    type the proxy cannot tell which is which, so the returned call object
    supports both.
    """

    def __init__(
        self,
        node: Node,
        address: str,
        agent_type: type[BaseAgent] | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        self._node = node
        self._address = address
        self._agent_type = agent_type
        self._timeout = timeout

    @property
    def address(self) -> str:
        return self._address

    def __repr__(self) -> str:
        kind = self._agent_type.__name__ if self._agent_type else "agent"
        return f"<Proxy {kind} at {self._address}>"

    def with_timeout(self, timeout: float) -> Proxy:
        """A proxy to the same agent whose calls have this deadline (seconds)."""
        return Proxy(self._node, self._address, self._agent_type, timeout=timeout)

    def __getattr__(self, name: str) -> Callable[..., _Call]:
        if name.startswith("_"):
            raise AttributeError(name)
        spec: OperationSpec | None = None
        if self._agent_type is not None and self._agent_type is not BaseAgent:
            spec = self._agent_type.operations.get(name)
            if spec is None:
                raise AttributeError(
                    f"{self._agent_type.__name__} at {self._address} has no operation {name!r}"
                )

        def call(*args: Any, **kwargs: Any) -> _Call:
            if spec is not None:
                kwargs = spec.bind(args, kwargs)
            elif args:
                raise TypeError(
                    f"{name}(): pass keyword arguments (this proxy does not know the signature)"
                )
            return _Call(self, name, kwargs, spec)

        call.__name__ = name
        return call


class _Call:
    """One call through a proxy: awaitable (plain) and async-iterable (streaming)."""

    __slots__ = ("_args", "_name", "_proxy", "_spec", "_stream")

    def __init__(
        self, proxy: Proxy, name: str, args: dict[str, Any], spec: OperationSpec | None
    ) -> None:
        self._proxy = proxy
        self._name = name
        self._args = args
        self._spec = spec
        self._stream: Stream | None = None

    def __await__(self) -> Any:
        return self._result().__await__()

    async def _result(self) -> Any:
        proxy = self._proxy
        result = await proxy._node.call(
            proxy._address, self._name, self._args, timeout=proxy._timeout
        )
        spec = self._spec
        if spec is not None and spec.result_type is not Any:
            return msgspec.convert(result, spec.result_type, strict=False)
        return result

    def _open(self) -> Stream:
        if self._stream is None:
            proxy = self._proxy
            item_type = self._spec.result_type if self._spec is not None else Any
            self._stream = proxy._node.open_stream(
                proxy._address,
                self._name,
                self._args,
                timeout=proxy._timeout,
                item_type=item_type,
            )
        return self._stream

    def __aiter__(self) -> Stream:
        return self._open()

    async def __aenter__(self) -> Stream:
        return self._open()

    async def __aexit__(self, *exc_info: object) -> None:
        if self._stream is not None:
            await self._stream.aclose()


@asynccontextmanager
async def open_node(
    *,
    path: str = "local",
    storage_provider: Any = None,
    restart_policy: RestartPolicy | None = None,
    default_timeout: float = DEFAULT_TIMEOUT,
    stop_timeout: float = 10.0,
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
    """
    async with AsyncExitStack() as stack:
        if storage_provider is None:
            from ._storage import open_storage_from_env

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
                    )
                    yield node
            finally:
                # Only now: a graceful close first lets queued calls be answered.
                if node is not None:
                    node.close_pending()
            tasks.cancel_scope.cancel()
