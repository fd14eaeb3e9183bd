"""The sentinel: a node that also serves the fabric over websockets.

Nodes and clients attach to it (``fame._protocol`` decides who is
admitted and which bindings are accepted); it routes envelopes between
them by address. Routing decodes only the :class:`RoutingHeader` and
forwards the original bytes with the hop count patched in place, so the
payload is never re-encoded. An envelope for an address nobody serves is
answered at once with a ``no_route`` error naming the address.

Robustness rules: a bad frame costs its connection a ``LinkError``;
after a few it is closed. Nothing a peer sends can raise out of its
connection handler, so the sentinel and the other links are unaffected.
Each connection has a bounded outgoing queue; a forwarder waits for room
(with a limit), so a slow consumer slows its producers, it does not grow
memory. At most ``max_connections`` websockets are served at once (more get
HTTP 503 and the reason), each must attach within ``handshake_timeout``,
and an error in the websocket library ends only its own connection.

Persistent state, in the sentinel node's own stores: its node id and key
(``__node_meta``, ``__keystore``), the pinned public key of every node id
it admitted (``__keystore``, key ``pin:<node id>``) and the route bindings
(``__route_store``, key = address, value = node id), and the addresses of its own
agents (``__binding_store``, like any node).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any, cast

import trio
from trio_websocket import WebSocketConnection, WebSocketRequest, serve_websocket

from ._errors import FameError, NoRoute, WireError
from ._identity import (
    BINDING_STORE,
    KEYSTORE,
    ROUTE_STORE,
    NodeStores,
    load_or_create_identity,
)
from ._inflight import InflightRequests
from ._node import REPLY_NAME, Node, open_node
from ._protocol import Admitted, RoutesChanged, SentinelLink, SentinelPolicy
from ._route_table import RouteTable
from ._supervisor import unwrap_exception_group
from ._trace import show_envelope, tracing_enabled
from ._transport import (
    LINK_ERRORS,
    WS_MAX_MESSAGE,
    WS_QUEUE,
    WS_RECEIVE_BUFFER,
    is_link_failure,
    server_ssl_context,
    write_batched,
)
from ._wire import (
    FINAL_FRAME_TAGS,
    MAX_HOPS,
    Batch,
    Cancel,
    Codec,
    Credit,
    Envelope,
    Error,
    Request,
    RoutingHeader,
    bump_hops,
    frame_tag,
)

__all__ = ["Sentinel", "SentinelConfigError", "open_sentinel", "serve_sentinel"]

log = logging.getLogger("fame.sentinel")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_QUEUE = 256
FORWARD_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 1024
PIN_PREFIX = "pin:"


class SentinelConfigError(FameError, ValueError):
    """The sentinel cannot start as configured (no token, port taken, bad TLS files)."""


class _Conn:
    """One attached (or attaching) websocket."""

    __slots__ = ("link", "out", "out_recv", "seen", "ws")

    def __init__(self, ws: WebSocketConnection, link: SentinelLink, queue: int) -> None:
        self.ws = ws
        self.link = link
        self.out, self.out_recv = trio.open_memory_channel[bytes](queue)
        self.seen = trio.current_time()

    def __repr__(self) -> str:
        return f"<link {self.link.node_id or '(attaching)'}>"


class _ConnectionNursery:
    """Where the websocket server starts each connection: one failure ends one connection.

    trio-websocket runs a connection's reader task in the server's nursery,
    so an exception there stops the whole server. A peer can cause one:
    a message over the websocket limit, sent while the sentinel is closing
    that link, makes wsproto raise ``LocalProtocolError`` in the reader
    (trio-websocket issue #175). ``trio.serve_listeners`` accepts any
    object with ``start_soon`` for this purpose; this one contains such
    errors to their connection, whose socket trio then closes.
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def start_soon(self, fn: Any, *args: Any, name: object = None) -> None:
        self._nursery.start_soon(_contained, fn, *args, name=name or fn)


async def _contained(fn: Any, *args: Any) -> None:
    try:
        await fn(*args)
    except Exception as exc:
        # Handlers catch what fame can cause; what is left is the websocket
        # layer failing on a peer's input. One line, as for any lost link.
        while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        log.warning("a connection failed in the websocket layer: %r", exc)


class _SentinelUplink:
    """The sentinel node's own uplink: its agents reach the fabric directly."""

    def __init__(self, sentinel: Sentinel) -> None:
        self._sentinel = sentinel
        # bind() is called from sync code (Node.spawn); a task persists in order.
        # Unbounded, but it holds at most one item per spawn or stop.
        self._changes, self._changes_recv = trio.open_memory_channel[tuple[bool, str]](math.inf)

    async def send(self, envelope: Envelope) -> None:
        sentinel = self._sentinel
        data = sentinel.codec.encode(envelope)
        control = type(envelope.frame) in (Credit, Cancel)
        if control and envelope.reply_to is not None and envelope.corr is not None:
            conn, owner = sentinel.stream_link(envelope.to, envelope.reply_to, envelope.corr)
        else:
            conn, owner = sentinel.routes.lookup(envelope.to)
        if conn is None:
            raise NoRoute(sentinel.no_route_reason(envelope.to, owner), actor=envelope.to)
        if envelope.reply_to is not None and envelope.corr is not None:
            if type(envelope.frame) is Cancel:
                sentinel.inflight.finished(conn, envelope.reply_to, envelope.corr)
            else:
                sentinel.inflight.forwarded(conn, envelope.reply_to, envelope.corr)
        await conn.out.send(data)

    def send_nowait(self, envelope: Envelope) -> None:
        conn, _ = self._sentinel.routes.lookup(envelope.to)
        if conn is not None:
            with suppress(trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                conn.out.send_nowait(self._sentinel.codec.encode(envelope))

    pools = False
    """The sentinel's own agents answer locally before any route: they cannot be pooled."""

    def bind(self, address: str, *, pool: bool = False) -> None:
        """Claim ``address`` for the sentinel's own node and remember it.

        Local agents are found in the node's supervisor before the route
        table anyway; the claim keeps other nodes from binding the address,
        also while the sentinel restarts its agent.
        """
        self._sentinel.claim(address)
        self._changes.send_nowait((True, address))

    def unbind(self, address: str) -> None:
        self._sentinel.routes.unbind(address, self._sentinel.sentinel_id)
        self._changes.send_nowait((False, address))

    async def persist(self) -> None:
        """Keep the sentinel node's ``__binding_store`` in step with bind/unbind."""
        stores = self._sentinel.stores
        async for bound, address in self._changes_recv:
            if bound:
                await stores.set(BINDING_STORE, address, b"1")
            else:
                await stores.delete(BINDING_STORE, address)


class Sentinel:
    """A running sentinel. Get one from :func:`open_sentinel`."""

    def __init__(
        self,
        node: Node,
        stores: NodeStores,
        *,
        sentinel_id: str,
        token: str | None,
        url_path: str,
        heartbeat: float,
        queue_size: int,
        codec: Codec,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self.node = node
        self.stores = stores
        self.codec = codec
        self.url_path = url_path
        self.heartbeat = heartbeat
        self.queue_size = queue_size
        self.routes: RouteTable[_Conn] = RouteTable()
        self.inflight: InflightRequests[_Conn] = InflightRequests()
        self.pins: dict[str, bytes] = {}
        self.policy = SentinelPolicy(
            sentinel_id, token, self.pins, self.routes, max(1, int(heartbeat * 1000))
        )
        self.port = 0
        self.host = ""
        self.violations = 0
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.connections = 0  # websockets being served, attaching or attached
        self.refused_connections = 0
        self._show = tracing_enabled()

    @property
    def sentinel_id(self) -> str:
        return self.policy.sentinel_id

    async def restore(self) -> None:
        """Load pins and route bindings from the sentinel's stores."""
        for key, value in (await self.stores.items(KEYSTORE)).items():
            if key.startswith(PIN_PREFIX):
                self.pins[key[len(PIN_PREFIX) :]] = value
        self.routes.restore(
            {
                address: record.decode()
                for address, record in (await self.stores.items(ROUTE_STORE)).items()
            }
        )
        # The sentinel's own agents' addresses: claimed again before anyone attaches.
        for address in await self.stores.items(BINDING_STORE):
            self.claim(address)
        if self.routes.bindings():
            log.info("restored %d routes from %s", len(self.routes.bindings()), ROUTE_STORE)

    def claim(self, address: str) -> None:
        result = self.routes.bind(address, self.sentinel_id)
        if not result.ok:
            log.warning("sentinel agent at %s shadows a remote binding: %s", address, result.reason)

    def stream_link(
        self, address: str, reply_to: str, corr: int
    ) -> tuple[_Conn | None, str | None]:
        """Where the credit or cancel of stream ``(reply_to, corr)`` must go.

        To the link serving the stream: for a pool, round-robin would pick
        another member, which has no such stream.
        """
        if self.routes.pool(address) is None:
            return self.routes.lookup(address)
        return self.inflight.link_of(reply_to, corr), None

    def no_route_reason(self, address: str, owner: str | None) -> str:
        members = self.routes.pool(address)
        if members is not None:
            return (
                f"no route to {address}: none of the {len(members)} nodes of its pool is attached"
            )
        if owner is not None and owner == self.sentinel_id:
            return f"no route to {address}: the sentinel's agent there is not running"
        if owner is None:
            return f"no route to {address}: no node bound it"
        return f"no route to {address}: its node {owner} is not attached"

    def _trace(self, data: bytes) -> None:
        # Routing needs only the header; the trace line wants the frame type, so
        # decode the rest here, where it costs only when tracing is on.
        with suppress(WireError):
            envelope = self.codec.decode(data)
            if isinstance(envelope, Envelope):
                show_envelope("route", envelope, len(data))

    # --- connections --------------------------------------------------------------

    async def handle(self, request: WebSocketRequest) -> None:
        """Serve one websocket; never raises (input cannot kill the sentinel)."""
        if request.path.split("?", 1)[0] != self.url_path:
            # The peer may be gone already; an error here must not reach the server.
            with suppress(*LINK_ERRORS), trio.move_on_after(self.handshake_timeout):
                await request.reject(404, body=b"not a fame sentinel path")
            return
        if self.connections >= self.max_connections:
            await self._refuse_connection(request)
            return
        # Counted from here, before any checkpoint, until the handler returns.
        self.connections += 1
        try:
            await self._serve(request)
        except Exception:
            # _serve handles what a peer can cause; this is the last resort against
            # a bug, which would otherwise stop the whole server.
            log.exception("connection handler failed")
        finally:
            self.connections -= 1

    async def _refuse_connection(self, request: WebSocketRequest) -> None:
        """Turn away a connection past ``max_connections`` with a reason, quickly.

        An HTTP 503 before the upgrade: the peer's open fails with the
        reason, and the attached peers do not notice anything.
        """
        self.refused_connections += 1
        if self.refused_connections == 1 or self.refused_connections % 1000 == 0:
            log.warning(
                "refusing connections: %d open, the limit is %d (%d refused so far)",
                self.connections,
                self.max_connections,
                self.refused_connections,
            )
        reason = f"too many connections: this sentinel serves at most {self.max_connections}"
        with suppress(*LINK_ERRORS), trio.move_on_after(self.handshake_timeout):
            await request.reject(503, body=reason.encode())

    async def _serve(self, request: WebSocketRequest) -> None:
        try:
            ws = await request.accept()
        except LINK_ERRORS:
            return
        conn = _Conn(ws, SentinelLink(self.policy, secrets.token_bytes(32)), self.queue_size)
        try:
            async with unwrap_exception_group(), trio.open_nursery() as tasks:
                written = trio.Event()
                tasks.start_soon(self._writer, conn, written)
                tasks.start_soon(self._watchdog, conn)
                await conn.out.send(self.codec.encode(conn.link.start()))
                await self._reader(conn)
                # Let the writer flush what is queued (a Refused, a last LinkError).
                conn.out.close()
                with trio.move_on_after(1):
                    await written.wait()
                tasks.cancel_scope.cancel()
        except Exception as exc:
            if not is_link_failure(exc):
                log.exception("link %r failed", conn)  # a bug, but never fatal to the sentinel
        finally:
            node_id = conn.link.node_id
            if node_id is not None and self.routes.unlink(node_id, conn):
                log.info("node %s detached", node_id)
                # Streams our own agents serve to it have no reader any more. (Only
                # when no newer link of the same node took over its reply address.)
                self.node.cancel_streams_to(
                    f"{REPLY_NAME}@{conn.link.path}", f"the caller's link ({node_id}) closed"
                )
            conn.link.close()
            unanswered = self.inflight.lost(conn)
            abandoned = self.inflight.abandoned(conn)
            if unanswered or abandoned:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await self._answer_lost(unanswered, node_id)
                    self._cancel_abandoned(abandoned, node_id)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await ws.aclose()

    async def _writer(self, conn: _Conn, written: trio.Event) -> None:
        try:
            await write_batched(conn.ws, conn.out_recv, self.codec)
        finally:
            written.set()

    async def _watchdog(self, conn: _Conn) -> None:
        """Close links that stay silent (dead peer) or never finish attaching."""
        started = trio.current_time()
        while True:
            await trio.sleep(min(self.heartbeat, self.handshake_timeout))
            now = trio.current_time()
            if not conn.link.attached and now - started > self.handshake_timeout:
                log.info("%r did not attach within %g s: closing", conn, self.handshake_timeout)
                break
            if now - conn.seen > 3 * self.heartbeat:
                log.info("%r silent for %.1f s: closing", conn, now - conn.seen)
                break
        # A frozen peer reads nothing: once its TCP window is full our writer holds
        # the socket and the close frame never goes out. Bounded, the close then
        # drops the socket instead, which ends the reader and the writer.
        with trio.move_on_after(self.heartbeat):
            await conn.ws.aclose()

    async def _violation(self, conn: _Conn, reason: str) -> None:
        self.violations += 1
        frame = conn.link.violation(reason)
        with suppress(trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            conn.out.send_nowait(self.codec.encode(frame))
        if conn.link.should_close:
            log.info("%r: closing after %d protocol violations", conn, conn.link.strikes)

    async def _reader(self, conn: _Conn) -> None:
        link = conn.link
        ws = conn.ws
        while not link.should_close:
            try:
                data = await ws.get_message()
            except LINK_ERRORS:
                return
            conn.seen = trio.current_time()
            if isinstance(data, str):
                await self._violation(conn, "text message: fame speaks binary msgpack")
                continue
            await self._on_message(conn, data, in_batch=False)

    async def _on_message(self, conn: _Conn, data: bytes, *, in_batch: bool) -> None:
        """Handle one message (or each message of a batch) from ``conn``."""
        link = conn.link
        try:
            head = self.codec.decode_header(data)
        except WireError as exc:
            await self._violation(conn, exc.reason)
            return
        if type(head) is RoutingHeader:
            if not link.attached:
                await self._violation(conn, "envelope before attach")
                return
            await self._route(conn, head, data)
            return
        if type(head) is Batch:
            if in_batch or not link.attached:
                await self._violation(conn, "batches do not nest or precede attach")
                return
            for item in head.messages:
                if link.should_close:
                    return
                await self._on_message(conn, item, in_batch=True)
            return
        frames = link.receive(head)
        # What the frames confirm (a pin, a route) is on disk before they are
        # queued. A new link becomes routable only after its Welcome is queued:
        # the routes a restarted node left in __route_store are live at once,
        # and an envelope for them must never reach the node before its Welcome.
        admitted = await self._apply_events(conn)
        for frame in frames:
            await conn.out.send(self.codec.encode(frame))
        for event in admitted:
            await self._link(conn, event)

    async def _link(self, conn: _Conn, event: Admitted) -> None:
        """Route ``event.node_id`` through ``conn``, closing the link it replaces."""
        previous = self.routes.link(event.node_id, event.path, conn)
        if previous is not None and previous is not conn:
            log.info("node %s re-attached: closing its old link", event.node_id)
            await previous.ws.aclose(1000, "superseded by a new link")
        log.info("node %s attached%s", event.node_id, " (ephemeral)" if event.ephemeral else "")

    async def _apply_events(self, conn: _Conn) -> list[Admitted]:
        """Persist what the link's events changed; return the admissions still to link."""
        link = conn.link
        admitted: list[Admitted] = []
        while link.events:
            event = link.events.pop(0)
            if type(event) is Admitted:
                if event.new_pin:
                    await self.stores.set(KEYSTORE, PIN_PREFIX + event.node_id, event.public_key)
                admitted.append(event)
            elif type(event) is RoutesChanged:
                # Persist each changed address as the table now has it: a pool's
                # record lists all its members, so one member leaving rewrites it.
                for address in (*event.bound, *event.unbound):
                    record = self.routes.record(address)
                    if record is None:
                        await self.stores.delete(ROUTE_STORE, address)
                    else:
                        await self.stores.set(ROUTE_STORE, address, record.encode())
        return admitted

    async def _route(self, conn: _Conn, head: RoutingHeader, data: bytes) -> None:
        to = head.to
        node = self.node
        if self._show:
            self._trace(data)
        if head.reply_to is None and head.corr is not None:
            # An answer travelling back: a final one settles the request at conn.
            try:
                if frame_tag(head.frame) in FINAL_FRAME_TAGS:
                    self.inflight.finished(conn, to, head.corr)
            except WireError as exc:
                await self._violation(conn, exc.reason)
                return
        if to == node.reply_address or node.supervisor.ref(to) is not None:
            try:
                envelope = self.codec.decode(data)
            except WireError as exc:
                await self._violation(conn, exc.reason)
                return
            await node.deliver(envelope)  # type: ignore[arg-type]
            return
        tag: str | None = None
        if head.reply_to is not None and head.corr is not None:
            try:
                tag = frame_tag(head.frame)
            except WireError as exc:
                await self._violation(conn, exc.reason)
                return
        if tag == "credit" or tag == "cancel":
            assert head.reply_to is not None and head.corr is not None
            target, owner = self.stream_link(to, head.reply_to, head.corr)
        else:
            target, owner = self.routes.lookup(to)
        if target is None:
            await self._reply_error(conn, data, "no_route", self.no_route_reason(to, owner))
            return
        if head.hops >= MAX_HOPS:
            await self._reply_error(
                conn, data, "protocol", f"envelope to {to} exceeded {MAX_HOPS} hops"
            )
            return
        if tag is not None:
            assert head.reply_to is not None and head.corr is not None
            # No await since lookup(): target is still linked, so lost(target)
            # has not run yet and will see this entry.
            if tag == "cancel":
                self.inflight.finished(target, head.reply_to, head.corr)
            else:
                self.inflight.forwarded(target, head.reply_to, head.corr, caller=conn, to=to)
        forwarded = bump_hops(data)
        try:
            # Fast path: room in the target's queue. No checkpoint per message:
            # the reader checkpoints on every websocket message anyway.
            target.out.send_nowait(forwarded)
            return
        except trio.WouldBlock:
            pass
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            await self._reply_error(conn, data, "no_route", self.no_route_reason(to, owner))
            return
        with trio.move_on_after(FORWARD_TIMEOUT) as waited:
            try:
                await target.out.send(forwarded)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                # The target's link closed while we waited: it is offline now.
                await self._reply_error(conn, data, "no_route", self.no_route_reason(to, owner))
                return
        if waited.cancelled_caught:
            await self._reply_error(
                conn,
                data,
                "mailbox_full",
                f"{to}: its node's link stayed full for {FORWARD_TIMEOUT:g} s",
            )

    async def _answer_lost(self, unanswered: list[tuple[str, int]], node_id: str | None) -> None:
        """Tell the callers of requests a lost link will never answer, at once.

        Best effort, never waiting for room: a caller whose queue is full
        falls back to its own deadline.
        """
        message = f"node {node_id or '(attaching)'} went away before answering"
        for reply_to, corr in unanswered:
            error = Envelope(0, reply_to, 0, Error("no_route", message, None), None, corr)
            if reply_to == self.node.reply_address:
                await self.node.deliver(error)
                continue
            caller, _ = self.routes.lookup(reply_to)
            if caller is not None:
                with suppress(trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                    caller.out.send_nowait(self.codec.encode(error))

    def _cancel_abandoned(
        self, abandoned: list[tuple[_Conn, str, tuple[str, int]]], node_id: str | None
    ) -> None:
        """Cancel the requests a lost link was still waiting on at other links.

        A caller that dies (a client killed while reading a stream) sends no
        ``Cancel``; without this its producers would stay stalled until their
        idle timeout. Best effort, never waiting for room: a producer whose
        link is full falls back to that timeout.
        """
        reason = f"the caller's link ({node_id or 'attaching'}) closed"
        for target, to, (reply_to, corr) in abandoned:
            cancel = Envelope(0, to, 0, Cancel(reason), reply_to, corr)
            with suppress(trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                target.out.send_nowait(self.codec.encode(cancel))

    async def _reply_error(self, conn: _Conn, data: bytes, kind: str, message: str) -> None:
        """Answer a request that cannot be routed; other frames are dropped."""
        try:
            envelope = self.codec.decode(data)
        except WireError as exc:
            await self._violation(conn, exc.reason)
            return
        assert type(envelope) is Envelope
        if type(envelope.frame) is not Request or envelope.reply_to is None:
            return
        error = Envelope(
            0, envelope.reply_to, 0, Error(kind, message, envelope.to), None, envelope.corr
        )
        reply_to = envelope.reply_to
        if reply_to == self.node.reply_address:
            await self.node.deliver(error)
            return
        target, _ = self.routes.lookup(reply_to)
        if target is not None:
            # The caller may be gone too (closed link): then there is nobody to tell.
            closed = (trio.ClosedResourceError, trio.BrokenResourceError)
            with trio.move_on_after(FORWARD_TIMEOUT), contextlib.suppress(*closed):
                await target.out.send(self.codec.encode(error))


def _resolve_token(token: str | None, open_admission: bool) -> str | None:
    if open_admission:
        if token:
            raise SentinelConfigError("give either an admission token or open_admission, not both")
        return None
    token = token if token is not None else os.environ.get("FAME_ADMISSION_TOKEN")
    if not token:
        raise SentinelConfigError(
            "no admission token: set FAME_ADMISSION_TOKEN (made by `just init`) or pass"
            " token=...; open admission needs open_admission=True"
        )
    return token


@asynccontextmanager
async def open_sentinel(
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    path: str = "/",
    token: str | None = None,
    open_admission: bool = False,
    node: Node | None = None,
    storage_provider: Any = None,
    certfile: str | Path | None = None,
    keyfile: str | Path | None = None,
    heartbeat: float = 5.0,
    queue_size: int = DEFAULT_QUEUE,
    max_message_size: int | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
) -> AsyncIterator[Sentinel]:
    """Run a sentinel for the duration of the block; yields the :class:`Sentinel`.

    ``token`` defaults to ``FAME_ADMISSION_TOKEN``; without one the
    sentinel does not start unless ``open_admission`` (then it says so
    loudly). ``port=0`` picks a free port (see ``sentinel.port``). With
    ``certfile`` and ``keyfile`` it serves ``wss://``. Without ``node`` the
    sentinel runs its own (``open_node(storage_provider=...)``); either
    way that node can host agents.

    At most ``max_connections`` websockets are served at once (attaching or
    attached); past that a new one is refused with HTTP 503 and a reason.
    A connection must finish the websocket handshake, and then attach,
    within ``handshake_timeout`` seconds each, or it is closed.
    """
    admission = _resolve_token(token, open_admission)
    if max_connections < 1:
        raise SentinelConfigError(f"max_connections must be at least 1, got {max_connections}")
    if not handshake_timeout > 0:
        raise SentinelConfigError(f"handshake_timeout must be positive, got {handshake_timeout}")
    if (certfile is None) != (keyfile is None):
        raise SentinelConfigError("TLS needs both certfile and keyfile")
    ssl_context: ssl.SSLContext | None = None
    if certfile is not None and keyfile is not None:
        try:
            ssl_context = server_ssl_context(certfile, keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise SentinelConfigError(f"cannot load the TLS certificate/key: {exc}") from None
    if admission is None:
        message = (
            "WARNING: fame sentinel runs with OPEN ADMISSION: any process that can reach"
            f" {host}:{port} may attach and bind addresses"
        )
        log.warning(message)
        print(message, file=sys.stderr, flush=True)
    async with AsyncExitStack() as stack:
        if node is None:
            node = await stack.enter_async_context(open_node(storage_provider=storage_provider))
        stores = NodeStores(node.storage_provider)
        identity = await load_or_create_identity(stores)
        node.set_path(identity.node_id)
        codec = Codec(max_message_size) if max_message_size else Codec()
        sentinel = Sentinel(
            node,
            stores,
            sentinel_id=identity.node_id,
            token=admission,
            url_path=path,
            heartbeat=heartbeat,
            queue_size=queue_size,
            codec=codec,
            max_connections=max_connections,
            handshake_timeout=handshake_timeout,
        )
        await sentinel.restore()
        uplink = _SentinelUplink(sentinel)
        node.uplink = uplink
        for address in node.local_addresses():
            uplink.bind(address)
        try:
            async with trio.open_nursery() as tasks:
                tasks.start_soon(uplink.persist)
                try:
                    server = await tasks.start(
                        lambda task_status: serve_websocket(
                            sentinel.handle,
                            host,
                            port,
                            ssl_context,
                            message_queue_size=WS_QUEUE,
                            max_message_size=WS_MAX_MESSAGE,
                            receive_buffer_size=WS_RECEIVE_BUFFER,
                            connect_timeout=handshake_timeout,
                            disconnect_timeout=2,
                            # Duck-typed: serve_listeners only calls start_soon.
                            handler_nursery=cast(trio.Nursery, _ConnectionNursery(tasks)),
                            task_status=task_status,
                        )
                    )
                except OSError as exc:
                    raise SentinelConfigError(
                        f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                    ) from None
                sentinel.host = host
                sentinel.port = server.port
                scheme = "wss" if ssl_context else "ws"
                log.info(
                    "sentinel %s listening on %s://%s:%d%s",
                    identity.node_id,
                    scheme,
                    host,
                    server.port,
                    path,
                )
                try:
                    yield sentinel
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            node.uplink = None


async def serve_sentinel(**kwargs: Any) -> None:
    """Run a sentinel until cancelled (the ``fame sentinel`` command); see :func:`open_sentinel`."""
    async with open_sentinel(**kwargs):
        await trio.sleep_forever()
