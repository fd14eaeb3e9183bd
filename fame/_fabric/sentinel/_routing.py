"""How a sentinel moves envelopes between its links, and cleans up after a lost one.

Routing decodes only the :class:`RoutingHeader` and forwards the original
bytes with the hop count patched in place, so the payload is never
re-encoded. An envelope for an address nobody serves is answered at once
with a ``no_route`` error naming the address. Each link has a bounded
outgoing queue; a forwarder waits for room (with a limit), so a slow
consumer slows its producers, it does not grow memory.

The :class:`Router` also keeps the requests in flight per link
(:class:`InflightRequests`): when a link is lost, the callers it will never
answer get a ``no_route`` error at once, and the streams it was reading at
other links are cancelled.

A bad frame costs its link a ``LinkError`` (:meth:`Router.violation`);
after a few the link is closed (see ``fame._fabric.sentinel._connection``).
"""

from __future__ import annotations

import logging
from contextlib import suppress

import trio
from trio_websocket import WebSocketConnection

from ..._agents._node import REPLY_NAME, Node
from ..._core._errors import WireError
from ..._protocol import SentinelLink
from ..._protocol._inflight import InflightRequests
from ..._protocol._route_table import RouteTable
from ..._wire._schema import (
    FINAL_FRAME_TAGS,
    MAX_HOPS,
    Cancel,
    Codec,
    Envelope,
    Error,
    Request,
    RoutingHeader,
    bump_hops,
    frame_tag,
)
from .._trace import show_envelope, tracing_enabled

__all__ = ["FORWARD_TIMEOUT", "Conn", "Router"]

log = logging.getLogger("fame.sentinel")

FORWARD_TIMEOUT = 10.0


class Conn:
    """One attached (or attaching) websocket."""

    __slots__ = ("link", "out", "out_recv", "reply_address", "seen", "tasks", "ws")

    def __init__(self, ws: WebSocketConnection, link: SentinelLink, queue: int) -> None:
        self.ws = ws
        self.link = link
        self.out, self.out_recv = trio.open_memory_channel[bytes](queue)
        self.seen = trio.current_time()
        # The nursery of the connection's tasks (reader, writer, watchdog).
        self.tasks: trio.Nursery | None = None
        # The only address this link's requests may ask answers to; set on attach.
        self.reply_address = ""

    def __repr__(self) -> str:
        return f"<link {self.link.node_id or '(attaching)'}>"


class Router:
    """The sentinel's routes and requests in flight, and what it does with them."""

    def __init__(self, node: Node, codec: Codec, sentinel_id: str) -> None:
        self.node = node
        self.codec = codec
        self.sentinel_id = sentinel_id
        self.routes: RouteTable[Conn] = RouteTable()
        self.inflight: InflightRequests[Conn] = InflightRequests()
        self.violations = 0
        self.unexpected_answers = 0  # answers from a link no open request went to
        self._show = tracing_enabled()

    def claim(self, address: str) -> None:
        """Bind ``address`` to the sentinel's own node."""
        result = self.routes.bind(address, self.sentinel_id)
        if not result.ok:
            log.warning("sentinel agent at %s shadows a remote binding: %s", address, result.reason)

    def stream_link(self, address: str, reply_to: str, corr: int) -> tuple[Conn | None, str | None]:
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

    async def violation(self, conn: Conn, reason: str) -> None:
        """Answer a bad frame from ``conn`` with a ``LinkError``; its link counts a strike."""
        self.violations += 1
        frame = conn.link.violation(reason)
        with suppress(trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            conn.out.send_nowait(self.codec.encode(frame))
        if conn.link.should_close:
            log.info("%r: closing after %d protocol violations", conn, conn.link.strikes)

    def _trace(self, data: bytes) -> None:
        # Routing needs only the header; the trace line wants the frame type, so
        # decode the rest here, where it costs only when tracing is on.
        with suppress(WireError):
            envelope = self.codec.decode(data)
            if isinstance(envelope, Envelope):
                show_envelope("route", envelope, len(data))

    # --- forwarding ---------------------------------------------------------------

    async def route(self, conn: Conn, head: RoutingHeader, data: bytes) -> None:
        """Deliver envelope ``data`` (whose header is ``head``) that arrived on ``conn``."""
        to = head.to
        node = self.node
        if self._show:
            self._trace(data)
        if head.reply_to is not None:
            # A request, credit or cancel. Its answers go to reply_to, so that must
            # be the sender's own: else a peer could aim an agent's answers at
            # another caller's pending call.
            if head.reply_to != conn.reply_address:
                await self.violation(conn, "reply_to is not this link's own reply address")
                return
        elif head.corr is not None:
            # An answer travelling back. Only the link its request went to may
            # send it (no peer can forge another's results); anything else is a
            # late answer (cancelled, or its caller's link closed) and is dropped.
            if self.inflight.link_of(to, head.corr) is not conn:
                self.unexpected_answers += 1
                return
            try:
                if frame_tag(head.frame) in FINAL_FRAME_TAGS:
                    self.inflight.finished(conn, to, head.corr)
            except WireError as exc:
                await self.violation(conn, exc.reason)
                return
        if node._hosts(to):
            try:
                envelope = self.codec.decode(data)
            except WireError as exc:
                await self.violation(conn, exc.reason)
                return
            await node._deliver(envelope)  # type: ignore[arg-type]
            return
        tag: str | None = None
        if head.reply_to is not None and head.corr is not None:
            try:
                tag = frame_tag(head.frame)
            except WireError as exc:
                await self.violation(conn, exc.reason)
                return
        if tag == "credit" or tag == "cancel":
            assert head.reply_to is not None and head.corr is not None
            target, owner = self.stream_link(to, head.reply_to, head.corr)
        else:
            target, owner = self.routes.lookup(to)
        if target is None:
            await self.reply_error(conn, data, "no_route", self.no_route_reason(to, owner))
            return
        if head.hops >= MAX_HOPS:
            await self.reply_error(
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
            await self.reply_error(conn, data, "no_route", self.no_route_reason(to, owner))
            return
        with trio.move_on_after(FORWARD_TIMEOUT) as waited:
            try:
                await target.out.send(forwarded)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                # The target's link closed while we waited: it is offline now.
                await self.reply_error(conn, data, "no_route", self.no_route_reason(to, owner))
                return
        if waited.cancelled_caught:
            await self.reply_error(
                conn,
                data,
                "mailbox_full",
                f"{to}: its node's link stayed full for {FORWARD_TIMEOUT:g} s",
            )

    async def reply_error(self, conn: Conn, data: bytes, kind: str, message: str) -> None:
        """Answer a request that cannot be routed; other frames are dropped."""
        try:
            envelope = self.codec.decode(data)
        except WireError as exc:
            await self.violation(conn, exc.reason)
            return
        assert type(envelope) is Envelope
        if type(envelope.frame) is not Request or envelope.reply_to is None:
            return
        error = Envelope(
            0, envelope.reply_to, 0, Error(kind, message, envelope.to), None, envelope.corr
        )
        reply_to = envelope.reply_to
        if reply_to == self.node.reply_address:
            await self.node._deliver(error)
            return
        target, _ = self.routes.lookup(reply_to)
        if target is not None:
            # The caller may be gone too (closed link): then there is nobody to tell.
            closed = (trio.ClosedResourceError, trio.BrokenResourceError)
            with trio.move_on_after(FORWARD_TIMEOUT), suppress(*closed):
                await target.out.send(self.codec.encode(error))

    # --- lost links ---------------------------------------------------------------

    async def detach(self, conn: Conn) -> None:
        """Forget closed link ``conn``: its route, and the requests it carried either way.

        Runs in the connection's ``finally``, maybe cancelled: what it
        awaits is shielded and bounded.
        """
        node_id = conn.link.node_id
        if node_id is not None and self.routes.unlink(node_id, conn):
            log.info("node %s detached", node_id)
            # Streams our own agents serve to it have no reader any more. (Only
            # when no newer link of the same node took over its reply address.)
            self.node._cancel_streams_to(
                f"{REPLY_NAME}@{conn.link.path}", f"the caller's link ({node_id}) closed"
            )
        conn.link.close()
        unanswered = self.inflight.lost(conn)
        abandoned = self.inflight.abandoned(conn)
        if unanswered or abandoned:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self._answer_lost(unanswered, node_id)
                self._cancel_abandoned(abandoned, node_id)

    async def _answer_lost(self, unanswered: list[tuple[str, int]], node_id: str | None) -> None:
        """Tell the callers of requests a lost link will never answer, at once.

        Best effort, never waiting for room: a caller whose queue is full
        falls back to its own deadline.
        """
        message = f"node {node_id or '(attaching)'} went away before answering"
        for reply_to, corr in unanswered:
            error = Envelope(0, reply_to, 0, Error("no_route", message, None), None, corr)
            if reply_to == self.node.reply_address:
                await self.node._deliver(error)
                continue
            caller, _ = self.routes.lookup(reply_to)
            if caller is not None:
                with suppress(trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                    caller.out.send_nowait(self.codec.encode(error))

    def _cancel_abandoned(
        self, abandoned: list[tuple[Conn, str, tuple[str, int]]], node_id: str | None
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
