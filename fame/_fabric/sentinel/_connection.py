"""How a sentinel serves each websocket, from the door to the close.

A :class:`ConnectionHandler` admits at most ``max_connections`` attached
websockets at once (more get HTTP 503 and the reason; those not attached
yet are the door's, ``fame._fabric.sentinel._door``). Each one it accepts gets a
reader (frames in: control frames to the attach state machine in
``fame._protocol``, envelopes to the :class:`Router`), a writer (its
outgoing queue, bounded in bytes, to the socket), a watchdog (it must
attach within ``handshake_timeout`` and then never stay silent for three
heartbeats) and a stall guard (its queue must not stay over its budget
for longer than the stall grace: its peer is not reading).

The reader never waits for room in a queue, its own link's included: what
the sentinel answers on a link (``Pong``, ``Bound``, a ``LinkError``) is
queued at once, beyond the budget if need be (``Router.send``).

Robustness rules: a bad frame costs its connection a ``LinkError``; after
a few it is closed. Nothing a peer sends can raise out of its connection
handler, so the sentinel and the other links are unaffected, and an error
in the websocket library ends only its own connection
(:class:`ConnectionNursery`).
"""

from __future__ import annotations

import logging
import secrets
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import trio
from trio_websocket import WebSocketRequest

from ..._agents._node import REPLY_NAME
from ..._core._errors import WireError
from ..._core._groups import collapse, unwrap_exception_group
from ..._protocol import Admitted, BindDenied, RoutesChanged, SentinelLink, SentinelPolicy
from ..._protocol._credentials import ENROLL_PREFIX, encode_enrollment
from ..._wire._schema import Batch, LinkError, RoutingHeader
from .._identity import KEYSTORE, ROUTE_STORE, NodeStores
from .._transport import LINK_ERRORS, SENTINEL_HEADER, is_link_failure, write_batched
from ._routing import Conn, Router

if TYPE_CHECKING:
    from ._door import Door

__all__ = ["PIN_PREFIX", "ConnectionHandler", "ConnectionNursery"]

log = logging.getLogger("fame.sentinel")

PIN_PREFIX = "pin:"
MAX_DENIALS_LOGGED = 20
"""Bind refusals logged per link: a peer that asks for thousands floods no log."""
SUPERSEDED_CLOSE_TIMEOUT = 2.0
"""Seconds a superseded link gets to close cleanly before its socket is dropped."""


class ConnectionNursery:
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
        log.warning("a connection failed in the websocket layer: %r", collapse(exc))


async def _close_superseded(previous: Conn) -> None:
    """Close the link a re-attached node left behind, bounded like the watchdog's close."""
    with trio.move_on_after(SUPERSEDED_CLOSE_TIMEOUT):
        await previous.ws.aclose(1000, "superseded by a new link")


class ConnectionHandler:
    """The sentinel's websocket handler: :meth:`handle` serves one connection."""

    door: Door | None = None
    """The sentinel's door (set by the sentinel): it counts attached links."""

    def __init__(
        self,
        router: Router,
        stores: NodeStores,
        policy: SentinelPolicy,
        *,
        url_path: str,
        heartbeat: float,
        max_connections: int,
        handshake_timeout: float,
    ) -> None:
        self.router = router
        self.stores = stores
        self.policy = policy
        self.codec = router.codec
        self.url_path = url_path
        self.heartbeat = heartbeat
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.connections = 0  # websockets being served, attaching or attached
        self.refused_connections = 0

    async def handle(self, request: WebSocketRequest) -> None:
        """Serve one websocket; never raises (input cannot kill the sentinel)."""
        door = self.door
        if door is not None:
            door.upgraded(request)  # its task ends on its own from here
        if request.path.split("?", 1)[0] != self.url_path:
            # The peer may be gone already; an error here must not reach the server.
            with suppress(*LINK_ERRORS), trio.move_on_after(self.handshake_timeout):
                await request.reject(
                    404, extra_headers=[SENTINEL_HEADER], body=b"not a fame sentinel path"
                )
            return
        # Only attached links count: those still attaching have the door's own budget.
        if (door.attached if door is not None else self.connections) >= self.max_connections:
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
                "refusing connections: %d attached, the limit is %d (%d refused so far)",
                self.door.attached if self.door is not None else self.connections,
                self.max_connections,
                self.refused_connections,
            )
        reason = f"too many connections: this sentinel serves at most {self.max_connections}"
        with suppress(*LINK_ERRORS), trio.move_on_after(self.handshake_timeout):
            await request.reject(503, extra_headers=[SENTINEL_HEADER], body=reason.encode())

    async def _serve(self, request: WebSocketRequest) -> None:
        try:
            ws = await request.accept()
        except LINK_ERRORS:
            return
        conn = self.router.new_conn(ws, SentinelLink(self.policy, secrets.token_bytes(32)))
        try:
            async with unwrap_exception_group(), trio.open_nursery() as tasks:
                conn.tasks = tasks
                written = trio.Event()
                tasks.start_soon(self._writer, conn, written)
                tasks.start_soon(self._watchdog, conn)
                tasks.start_soon(self._stall_guard, conn)
                self.router.send(conn, self.codec.encode(conn.link.start()))
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
            await self.router.detach(conn)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                if conn.closing is not None:
                    # A close reason has at most 123 bytes.
                    await ws.aclose(1008, conn.closing.encode()[:120].decode(errors="ignore"))
                else:
                    await ws.aclose()

    async def _writer(self, conn: Conn, written: trio.Event) -> None:
        try:
            await write_batched(conn.ws, conn.out_recv, self.codec)
        finally:
            written.set()

    async def _stall_guard(self, conn: Conn) -> None:
        """Close the link if its queue stays over its budget for the stall grace.

        A peer that reads nothing leaves what it is sent in the sentinel's
        memory; once the grace has passed, the link goes (its callers are
        answered ``no_route`` at once) and the memory with it.
        """
        out = conn.out
        grace = self.router.limits.stall_grace
        while True:
            await out.wait_over_budget()
            since = out.over_since
            if since is None:
                await trio.lowlevel.checkpoint()
                continue
            await trio.sleep_until(since + grace)
            if out.over_since == since:
                self.router.close_stalled(
                    conn,
                    f"link stalled: the peer read too little for {grace:g} s while"
                    f" {out.bytes} bytes waited (its budget is {out.budget})",
                )
                return

    async def _watchdog(self, conn: Conn) -> None:
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

    async def _reader(self, conn: Conn) -> None:
        link = conn.link
        ws = conn.ws
        while not link.should_close:
            try:
                data = await ws.get_message()
            except LINK_ERRORS:
                return
            conn.seen = trio.current_time()
            if isinstance(data, str):
                await self.router.violation(conn, "text message: fame speaks binary msgpack")
                continue
            await self._on_message(conn, data, in_batch=False)

    async def _on_message(self, conn: Conn, data: bytes, *, in_batch: bool) -> None:
        """Handle one message (or each message of a batch) from ``conn``."""
        link = conn.link
        try:
            head = self.codec.decode_header(data)
        except WireError as exc:
            [answer] = link.undecodable(data, exc.reason)
            if isinstance(answer, LinkError):
                self.router.violations += 1
                if link.should_close:
                    log.info("%r: closing after %d protocol violations", conn, link.strikes)
            else:
                log.info("%r refused: %s", conn, getattr(answer, "reason", answer))
            self.router.send(conn, self.codec.encode(answer))
            return
        if isinstance(head, RoutingHeader):
            if not link.attached:
                await self.router.violation(conn, "envelope before attach")
                return
            await self.router.route(conn, head, data)
            return
        if isinstance(head, Batch):
            if in_batch or not link.attached:
                await self.router.violation(conn, "batches do not nest or precede attach")
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
            self.router.send(conn, self.codec.encode(frame))
        for event in admitted:
            self.router.attached(conn)
            await self._link(conn, event)

    async def _link(self, conn: Conn, event: Admitted) -> None:
        """Route ``event.node_id`` through ``conn``, closing the link it replaces."""
        if self.door is not None:
            self.door.attached_link(conn.ws)  # it counts toward max_connections from now
        conn.reply_address = f"{REPLY_NAME}@{event.path}"
        conn.since = self.policy.clock()
        previous = self.router.routes.link(event.node_id, event.path, conn)
        if previous is not None and previous is not conn:
            log.info("node %s re-attached: closing its old link", event.node_id)
            # In the background: the close of an old link that reads nothing any
            # more (a half-dead TCP connection) takes up to its bound, and this new
            # link's reader must meanwhile answer the node's Bind. Until then, the
            # requests routed to the new link pile up ahead of its Bound.
            assert conn.tasks is not None
            conn.tasks.start_soon(_close_superseded, previous)
        log.info("node %s attached as %s", event.node_id, event.principal)

    async def _apply_events(self, conn: Conn) -> list[Admitted]:
        """Persist what the link's events changed; return the admissions still to link."""
        link = conn.link
        admitted: list[Admitted] = []
        while link.events:
            event = link.events.pop(0)
            match event:
                case Admitted(enrolled=enrolled) if enrolled is not None:
                    log.warning(
                        "TRUST ON FIRST USE: enrolled new node %s with the key it attached with",
                        event.node_id,
                    )
                    key = ENROLL_PREFIX + event.node_id
                    await self.stores.set(KEYSTORE, key, encode_enrollment(enrolled))
                    await self.stores.set(KEYSTORE, PIN_PREFIX + event.node_id, event.public_key)
                    admitted.append(event)
                case Admitted(new_pin=True):
                    await self.stores.set(KEYSTORE, PIN_PREFIX + event.node_id, event.public_key)
                    admitted.append(event)
                case Admitted():
                    admitted.append(event)
                case BindDenied(node_id=node_id, address=address, reason=reason, owner=owner):
                    # The node was told why without the owner's id; the log names it.
                    conn.denials += 1
                    self.router.refused_bind(address, node_id, reason, owner)
                    if conn.denials <= MAX_DENIALS_LOGGED:
                        held = f" (held by node {owner})" if owner else ""
                        log.info("node %s may not bind %s: %s%s", node_id, address, reason, held)
                    if conn.denials == MAX_DENIALS_LOGGED:
                        log.info("node %s: further bind refusals are not logged", node_id)
                case RoutesChanged():
                    # Persist each changed address as the table now has it: a pool's
                    # record lists all its members, so one member leaving rewrites it.
                    for address in (*event.bound, *event.unbound):
                        record = self.router.routes.record(address)
                        if record is None:
                            await self.stores.delete(ROUTE_STORE, address)
                        else:
                            await self.stores.set(ROUTE_STORE, address, record.encode())
        return admitted
