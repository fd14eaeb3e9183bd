"""A node's link to a sentinel: attach, bind, heartbeat, reconnect.

:func:`attach` runs the uplink of an existing node for the duration of an
``async with`` block::

    async with fame.open_node() as node, fame.attach(node, url, token=t):
        await node.spawn(Echo(), "echo@fame.fabric")
        await trio.sleep_forever()

The first attach happens before the block is entered and its failures
raise (:class:`fame.AdmissionRefused`, :class:`SentinelUnreachable`), so a
CLI can say what is wrong. After that a lost link is re-established for
ever, with exponential backoff and jitter, and every wanted address is
bound again (they are kept in the node's ``__binding_store``).

Per link the uplink runs a reader that only drains and dispatches (so
websocket pings keep being answered), a writer that owns sending, and a
heartbeat. The outgoing queue is bounded in bytes (``queue_bytes``, a
:class:`LinkQueue`): a sender waits for room when the sentinel is slow
(backpressure within this node, bounded by the caller's own deadline), so
memory does not grow.
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from .._agents._node import Node
from .._core._errors import AdmissionRefused, NoRoute, ProtocolError, WireError
from .._core._groups import unwrap_exception_group
from .._core._metrics import Sample
from .._protocol import BindingTracker, NodeHandshake
from .._protocol._credentials import CLIENT, NODE
from .._protocol._identity import Identity
from .._wire._schema import (
    Batch,
    BindRefused,
    Bound,
    Codec,
    Envelope,
    LinkError,
    LinkMessage,
    Ping,
    Pong,
    Refused,
)
from ._identity import BINDING_STORE, NodeStores, load_or_create_identity
from ._link_queue import DEFAULT_LINK_BUFFER, LinkQueue
from ._trace import show_envelope, tracing_enabled
from ._transport import (
    DEFAULT_HEARTBEAT,
    HANDSHAKE_TIMEOUT,
    LINK_ERRORS,
    RECONNECT_BACKOFF,
    SentinelUnreachable,
    is_link_failure,
    open_link,
    write_batched,
)

__all__ = ["FabricUplink", "attach"]

log = logging.getLogger("fame.uplink")


class _LinkLost(Exception):
    pass


# What __binding_store keeps per address: b"1" for an address bound alone,
# b"pool" for one this node serves as a pool member.
_POOL_RECORD = b"pool"


def _binding_record(pool: bool) -> bytes:
    return _POOL_RECORD if pool else b"1"


class FabricUplink:
    """The :class:`fame._agents._switchboard.Uplink` of a node attached to a sentinel."""

    pools = True

    def __init__(
        self,
        node: Node,
        url: str,
        token: str | None,
        identity: Identity,
        stores: NodeStores,
        *,
        ephemeral: bool = False,
        sentinel_keys: Collection[bytes] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        heartbeat: float = DEFAULT_HEARTBEAT,
        queue_bytes: int = DEFAULT_LINK_BUFFER,
        codec: Codec | None = None,
        connect_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self.node = node
        self.url = url
        self.identity = identity
        self.stores = stores
        self.ephemeral = ephemeral
        self.heartbeat = heartbeat
        self.queue_bytes = queue_bytes
        self._token = token
        self.sentinel_keys = sentinel_keys
        self._ssl = ssl_context
        self.connect_timeout = connect_timeout
        self._codec = codec or Codec()
        self.bindings = BindingTracker()
        self._out: LinkQueue | None = None
        self._show = tracing_enabled()
        # Bind/unbind come from sync code (Node.spawn); a task persists and sends
        # them in order. Unbounded, but it only ever holds one item per spawn.
        self._control_send, self._control_recv = trio.open_memory_channel[tuple[str, str, bool]](
            math.inf
        )
        self._queued = 0  # bind/unbind requests the control task has not handled yet
        self._changed = trio.Event()  # set (and replaced) whenever the bindings move
        self.attached = trio.Event()
        self.attach_count = 0
        self.started = False
        self._flushed = trio.Event()

    def samples(self) -> Iterator[Sample]:
        """Its link and what waits in its outgoing queue: a metrics source (read on scrape)."""
        out = self._out
        yield ("fame_links", ("attached",), 0 if out is None else 1)
        yield ("fame_link_queue_bytes", ("uplink",), 0 if out is None else out.bytes)
        yield ("fame_link_queue_depth", ("uplink",), 0 if out is None else len(out))

    # --- Uplink protocol (called by the node) -------------------------------------

    async def send(self, envelope: Envelope) -> None:
        out = self._out
        if out is None:
            raise NoRoute(
                f"no route to {envelope.to}: this node is not attached to {self.url}",
                actor=envelope.to,
            )
        data = self._codec.encode(envelope)
        if self._show:
            show_envelope("send", envelope, len(data))
        try:
            # Trio's channel discipline: Cancelled only ever means "not sent".
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                out.send_nowait(data)  # the common case: room in the queue
            except trio.WouldBlock:
                await out.send(data)
            else:
                await trio.lowlevel.cancel_shielded_checkpoint()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise NoRoute(
                f"no route to {envelope.to}: the link to {self.url} was lost", actor=envelope.to
            ) from None

    def offer(self, envelope: Envelope) -> bool:
        """Queue ``envelope`` if there is room now; False (nothing queued) if ``send`` would wait.

        Raises as :meth:`send` does (:class:`fame.NoRoute` without a link,
        :class:`fame.WireError` for what cannot be encoded). Not a
        checkpoint: the caller has one (see ``Switchboard._call_remote``).
        """
        out = self._out
        if out is None:
            raise NoRoute(
                f"no route to {envelope.to}: this node is not attached to {self.url}",
                actor=envelope.to,
            )
        data = self._codec.encode(envelope)
        try:
            out.send_nowait(data)
        except trio.WouldBlock:
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise NoRoute(
                f"no route to {envelope.to}: the link to {self.url} was lost", actor=envelope.to
            ) from None
        if self._show:
            show_envelope("send", envelope, len(data))
        return True

    def send_nowait(self, envelope: Envelope) -> None:
        out = self._out
        if out is None:
            return
        try:
            data = self._codec.encode(envelope)
            if self._show:
                show_envelope("send", envelope, len(data))
            out.send_nowait(data)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError, WireError):
            pass  # best effort: used from __del__ to cancel a dropped stream

    def bind(self, address: str, *, pool: bool = False) -> None:
        self._queued += 1
        self._control_send.send_nowait(("bind", address, pool))

    def unbind(self, address: str) -> None:
        self._queued += 1
        self._control_send.send_nowait(("unbind", address, False))

    # --- running ------------------------------------------------------------------

    async def _control(self) -> None:
        async for op, address, pool in self._control_recv:
            if op == "bind":
                if not self.ephemeral:
                    await self.stores.set(BINDING_STORE, address, _binding_record(pool))
                frame: Any = self.bindings.want(address, pool=pool)
            else:
                if not self.ephemeral:
                    await self.stores.delete(BINDING_STORE, address)
                frame = self.bindings.drop(address)
            if frame is not None and self._out is not None:
                # A link that just closed is fine: the next attach sends every binding.
                with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                    await self._out.send(self._codec.encode(frame))
            self._queued -= 1
            self._bindings_moved()

    def _bindings_moved(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_bindings_moved(self) -> None:
        """Return at the next change of the bindings: a ``Bound``, a refusal, a new link.

        Lets a program keep what it says about its addresses true
        (``fame node``'s ready file) while the node serves.
        """
        await self._changed.wait()

    async def wait_bound(self) -> None:
        """Wait until attached and every address wanted so far got its ``Bound`` (or refusal).

        "So far" includes the binds of agents spawned just before the call,
        which the control task may not have sent yet: once this returns, the
        sentinel routes to every one of them.
        """
        while not (self._queued == 0 and self.bindings.attached and self.bindings.settled):
            await self._changed.wait()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Attach, serve, and re-attach for ever; the first failure raises."""
        if not self.ephemeral:
            # Bindings of earlier runs first: a restarted node takes its routes
            # back even before (or without) spawning the agents again.
            stored = await self.stores.items(BINDING_STORE)
            for address, record in stored.items():
                self.bindings.want(address, pool=record == _POOL_RECORD)
            for address in self.node._local_addresses():
                if address not in stored:
                    pool = self.node._is_pool(address)
                    await self.stores.set(BINDING_STORE, address, _binding_record(pool))
        for address in self.node._local_addresses():
            self.bindings.want(address, pool=self.node._is_pool(address))
        delays = RECONNECT_BACKOFF.delays()
        async with unwrap_exception_group(), trio.open_nursery() as tasks:
            tasks.start_soon(self._control)
            while True:
                count = self.attach_count
                try:
                    await self._connect_once(None if self.started else task_status)
                except AdmissionRefused:
                    if not self.started:
                        raise
                    log.error("sentinel %s refused this node; retrying", self.url)
                except (SentinelUnreachable, ProtocolError, _LinkLost, *LINK_ERRORS) as exc:
                    if not self.started:
                        if isinstance(exc, SentinelUnreachable | AdmissionRefused):
                            raise
                        raise SentinelUnreachable(f"attach to {self.url} failed: {exc}") from None
                    log.warning("link to %s lost: %s", self.url, exc)
                if self.attach_count != count:
                    delays = RECONNECT_BACKOFF.delays()  # a link that came up resets the backoff
                await trio.sleep(next(delays))

    async def _connect_once(self, task_status: Any) -> None:
        codec = self._codec
        async with open_link(
            self.url, ssl_context=self._ssl, connect_timeout=self.connect_timeout
        ) as ws:
            handshake = NodeHandshake(
                self.identity,
                self._token,
                role=CLIENT if self.ephemeral else NODE,
                sentinel_keys=self.sentinel_keys,
            )
            # The sentinel's writer may batch the Welcome with the first envelopes
            # for this node (its routes survive in __route_store, so callers reach
            # it at once): those are handled once the link runs, in order.
            early: list[tuple[LinkMessage, int]] = []
            try:
                with trio.fail_after(HANDSHAKE_TIMEOUT):
                    while not handshake.attached:
                        data = await ws.get_message()
                        if isinstance(data, str):
                            raise ProtocolError("text message from the sentinel")
                        message = _decode_or(handshake, codec, data)
                        items = message.messages if isinstance(message, Batch) else [data]
                        for item in items:
                            frame = message if item is data else _decode_or(handshake, codec, item)
                            if handshake.attached:
                                early.append((frame, len(item)))
                                continue
                            answer = handshake.receive(frame)
                            if answer is not None:
                                await ws.send_message(codec.encode(answer))
            except trio.TooSlowError:
                raise SentinelUnreachable(f"{self.url} did not complete the handshake") from None
            assert handshake.path is not None
            self.node._set_path(handshake.path)
            out = LinkQueue(self.queue_bytes)
            state = {"seen": trio.current_time()}
            # The sentinel sets the pace: we ping at its interval, so neither side
            # declares the other dead while both are fine.
            self.heartbeat = handshake.heartbeat_ms / 1000
            try:
                async with unwrap_exception_group(), trio.open_nursery() as tasks:
                    tasks.start_soon(self._writer, ws, out)
                    tasks.start_soon(self._heartbeat, out, state)
                    binds = self.bindings.on_attached()
                    self._bindings_moved()
                    self._out = out
                    for bind in binds:
                        await out.send(codec.encode(bind))
                    self.attach_count += 1
                    self.attached.set()
                    if task_status is not None:
                        tasks.start_soon(self._report_started, task_status)
                    for frame, size in early:
                        await self._dispatch(frame, size)
                    await self._reader(ws, state)
                    raise _LinkLost("the sentinel closed the link")
            except BaseExceptionGroup as group:
                if is_link_failure(group, (_LinkLost,)):
                    raise _LinkLost(f"the link failed: {group.exceptions[0]}") from None
                raise
            finally:
                self._out = None
                self.node._link_lost(f"the link to {self.url} was lost")
                self.bindings.on_detached()
                self.attached = trio.Event()
                out.close()

    async def _report_started(self, task_status: Any) -> None:
        await self.wait_bound()
        self.started = True
        task_status.started(self)

    async def _writer(self, ws: Any, out: LinkQueue) -> None:
        await write_batched(ws, out, self._codec, lambda: self._flushed.set())

    async def flush(self, limit: float = 1.0) -> None:
        """Wait (up to ``limit`` s) until everything queued so far was written.

        Called when the block of :func:`attach` ends normally, so that last
        frames (the ``Cancel`` of a stream dropped just before) are not lost.
        An empty message is the marker: no encoded message is empty.
        """
        out = self._out
        if out is None:
            return
        self._flushed = trio.Event()
        with trio.move_on_after(limit):
            try:
                await out.send(b"")
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            await self._flushed.wait()

    async def _heartbeat(self, out: LinkQueue, state: dict[str, float]) -> None:
        nonce = 0
        ping_timeout = 3 * self.heartbeat
        while True:
            await trio.sleep(self.heartbeat)
            if trio.current_time() - state["seen"] > ping_timeout:
                raise _LinkLost(f"no sign of life from the sentinel for {ping_timeout:g} s")
            nonce += 1
            with trio.move_on_after(self.heartbeat):
                await out.send(self._codec.encode(Ping(nonce)))

    async def _reader(self, ws: Any, state: dict[str, float]) -> None:
        codec = self._codec
        deliver = self.node._deliver
        while True:
            try:
                data = await ws.get_message()
            except LINK_ERRORS:
                return
            state["seen"] = trio.current_time()
            try:
                message: LinkMessage = codec.decode(data)
            except WireError as exc:
                log.warning("bad frame from the sentinel: %s", exc.reason)
                continue
            if type(message) is Envelope and not self._show:
                await deliver(message, len(data))  # the common case, without the match
            elif isinstance(message, Batch):
                for item in message.messages:
                    try:
                        inner = codec.decode(item)
                    except WireError as exc:
                        log.warning("bad frame in a batch from the sentinel: %s", exc.reason)
                        continue
                    await self._dispatch(inner, len(item))
            else:
                await self._dispatch(message, len(data))

    async def _dispatch(self, message: LinkMessage, size: int) -> None:
        """Act on one message from the sentinel."""
        match message:
            case Envelope():
                if self._show:
                    show_envelope("recv", message, size)
                await self.node._deliver(message, size)
            case Bound():
                self.bindings.receive(message)
                self._bindings_moved()
            case BindRefused(address=address, reason=reason):
                self.bindings.receive(message)
                log.warning("sentinel refused to bind %s: %s", address, reason)
                self._bindings_moved()
            case Ping(nonce=nonce):
                if self._out is not None:
                    # The sentinel's heartbeat: answered at once, beyond the budget if
                    # need be (the reader never waits; a full hard cap drops it).
                    with contextlib.suppress(trio.ClosedResourceError):
                        self._out.push(self._codec.encode(Pong(nonce)))
            case Pong():
                pass
            case LinkError(reason=reason):
                log.warning("sentinel reports: %s", reason)
            case Refused(reason=reason):
                raise AdmissionRefused(reason)
            case _:
                log.warning("unexpected %s from the sentinel", type(message).__name__)


def _decode_or(handshake: NodeHandshake, codec: Codec, data: bytes) -> LinkMessage:
    """Decode a message of the handshake; what does not decode, the handshake judges.

    A challenge of another protocol version raises ``ProtocolMismatch``,
    anything else ``ProtocolError``.
    """
    try:
        return codec.decode(data)
    except WireError as exc:
        handshake.undecodable(data, exc.reason)


@asynccontextmanager
async def attach(
    node: Node,
    url: str,
    *,
    token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    heartbeat: float = DEFAULT_HEARTBEAT,
    ephemeral: bool = False,
    identity: Identity | None = None,
    connect_timeout: float = HANDSHAKE_TIMEOUT,
    sentinel_keys: Collection[bytes] | None = None,
) -> AsyncIterator[FabricUplink]:
    """Attach ``node`` to the sentinel at ``url`` for the duration of the block.

    A node is admitted by its key, which the operator enrolled at the
    sentinel (``fame enroll``); ``token`` is needed only by a sentinel that
    trusts new nodes on first use, and by clients (``ephemeral``: attached
    as a client, with the admission token as credential). The token never
    travels: the attach carries an HMAC made with it. ``sentinel_keys`` are
    the sentinel public keys to trust: the node refuses
    (:class:`fame.errors.UntrustedSentinel`) a sentinel that signs with none
    of them, before it sends anything. None trusts any sentinel, with a
    warning in the log: pass the keys whenever the network is not yours
    (the command-line programs read them from ``conf/sentinel.keys``).
    The node's id and key
    come from its ``__node_meta`` / ``__keystore`` stores (created on first
    use) unless ``ephemeral``. ``connect_timeout`` bounds each connection
    attempt including the handshake. Entering returns once attached and every
    address of the node is bound. Raises :class:`fame.AdmissionRefused` or
    :class:`SentinelUnreachable` if the first attach fails.
    """
    if node._has_uplink():
        raise RuntimeError("this node already has an uplink")
    stores = NodeStores(None if ephemeral else node.storage_provider)
    if identity is None:
        identity = Identity.generate() if ephemeral else await load_or_create_identity(stores)
    uplink = FabricUplink(
        node,
        url,
        token or None,
        identity,
        stores,
        ephemeral=ephemeral,
        sentinel_keys=sentinel_keys,
        ssl_context=ssl_context,
        heartbeat=heartbeat,
        connect_timeout=connect_timeout,
    )
    if sentinel_keys is None:
        log.warning(
            "not verifying the sentinel at %s: no sentinel keys were given, so any server"
            " there may pose as the sentinel",
            url,
        )
    node._set_uplink(uplink)
    node._metrics.add_source(uplink.samples)
    try:
        async with unwrap_exception_group(), trio.open_nursery() as tasks:
            await tasks.start(uplink.run)
            try:
                yield uplink
                with trio.CancelScope(shield=True):
                    await uplink.flush()
            finally:
                tasks.cancel_scope.cancel()
    finally:
        node._metrics.remove_source(uplink.samples)
        node._set_uplink(None)
