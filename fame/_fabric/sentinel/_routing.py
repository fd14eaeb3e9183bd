"""How a sentinel moves envelopes between its links, and cleans up after a lost one.

What to do with an envelope is decided sans IO (``fame._protocol._routing``);
this module carries it out. Routing decodes only the :class:`RoutingHeader`
and forwards the original bytes with the hop count patched in place, so the payload is never
re-encoded. An envelope for an address nobody serves is answered at once
with a ``no_route`` error naming the address.

Each link has an outgoing queue bounded in bytes (:class:`LinkQueue`), and
the reader of a link never waits for room in another link's queue: one
slow link must not delay routing between the others. A request for a link
over its budget is answered ``overloaded`` at once (nothing ran; the
caller's runtime retries until its deadline). An answer or a stream or
control frame is queued beyond the budget, up to the hard cap; a link past
that cap, or over its budget for longer than the stall grace (the stall
guard of ``fame._fabric.sentinel._connection``), is closed as stalled
(:meth:`Router.close_stalled`), and its lost-link clean-up answers its
callers at once.

The :class:`Router` also keeps the requests in flight per link
(:class:`InflightRequests`): when a link is lost, the callers it will never
answer get a ``no_route`` error at once, and the streams it was reading at
other links are cancelled.

A bad frame costs its link a ``LinkError`` (:meth:`Router.violation`);
after a few the link is closed (see ``fame._fabric.sentinel._connection``).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Coroutine
from contextlib import suppress
from typing import Any

import msgspec
import trio
from trio_websocket import WebSocketConnection

from ..._agents._node import REPLY_NAME, Node
from ..._core._errors import RequestLost, WireError
from ..._core._tracing import current_traceparent, span, tracing_on
from ..._protocol import SentinelLink
from ..._protocol._address_stats import AddressStats
from ..._protocol._quotas import Quotas
from ..._protocol._routing import Deliver, DropAnswer, Forward, Refuse, ReplyError, Routing
from ..._wire._schema import (
    FINAL_FRAME_TAGS,
    Cancel,
    Codec,
    Envelope,
    Error,
    Request,
    RoutingHeader,
    bump_hops,
    frame_tag,
    stamp_caller,
)
from ..._wire._trace_context import request_trace, retrace
from .._link_queue import LinkLimits, LinkQueue
from .._trace import show_envelope, tracing_enabled

__all__ = ["Conn", "Router"]

log = logging.getLogger("fame.sentinel")

_CLOSED = (trio.ClosedResourceError, trio.BrokenResourceError)

MAX_BIND_REFUSALS = 256


class Conn:
    """One attached (or attaching) websocket."""

    __slots__ = (
        "closing",
        "denials",
        "detached",
        "link",
        "out",
        "out_recv",
        "reply_address",
        "seen",
        "since",
        "tasks",
        "ws",
    )

    def __init__(
        self, ws: WebSocketConnection, link: SentinelLink, queue: LinkQueue | None = None
    ) -> None:
        self.ws = ws
        self.link = link
        # One queue, two names: producers send to ``out``, the writer drains ``out_recv``.
        self.out = self.out_recv = queue if queue is not None else LinkQueue()
        self.closing: str | None = None  # why the sentinel closes this link, once it does
        self.detached = trio.Event()  # set once the router forgot the link
        self.seen = trio.current_time()
        # The nursery of the connection's tasks (reader, writer, watchdog).
        self.tasks: trio.Nursery | None = None
        # The only address this link's requests may ask answers to; set on attach.
        self.reply_address = ""
        self.denials = 0  # bind refusals so far, for a bounded log
        self.since = 0.0  # when it attached (wall clock), for ``fame status``

    def __repr__(self) -> str:
        return f"<link {self.link.node_id or '(attaching)'}>"


class Router:
    """Carries out the routing decisions (``fame._protocol._routing``) on websockets."""

    def __init__(
        self,
        node: Node,
        codec: Codec,
        sentinel_id: str,
        *,
        limits: LinkLimits | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        self.node = node
        self.codec = codec
        self.sentinel_id = sentinel_id
        self.limits = limits if limits is not None else LinkLimits()
        self.routing: Routing[Conn] = Routing(sentinel_id, node._hosts, quotas)
        self.routes = self.routing.routes
        self.inflight = self.routing.inflight
        self.usage = self.routing.usage
        self.violations = 0
        self.overloaded = 0  # requests refused because their target link was full
        self.stalled = 0  # links closed because their peer read nothing
        self.queued_bytes = 0  # bytes waiting in all links' queues
        # For the metrics (read on scrape): plain counts, so routing pays an increment.
        self.requests_forwarded = 0  # requests queued for the link of their target's node
        self.request_errors: collections.Counter[str] = collections.Counter()  # by error kind
        self.stats = AddressStats()  # per-address calls and latencies, for ``fame status``
        # address -> (node id, reason, owner) of its latest bind refusal, for ``fame status``
        self.bind_refusals: dict[str, tuple[str, str, str | None]] = {}
        self._show = tracing_enabled()

    def refused_bind(self, address: str, node_id: str, reason: str, owner: str | None) -> None:
        """Remember why ``address`` was refused to ``node_id`` (the latest few hundred)."""
        self.bind_refusals.pop(address, None)
        self.bind_refusals[address] = (node_id, reason, owner)
        if len(self.bind_refusals) > MAX_BIND_REFUSALS:
            del self.bind_refusals[next(iter(self.bind_refusals))]

    def _count(self, head: RoutingHeader, request: bool, tag: str) -> None:
        """Note a forwarded request, or an answer or cancel (frame ``tag``), in :attr:`stats`."""
        reply_to, corr = head.reply_to, head.corr
        if request:
            key = (reply_to, corr) if reply_to is not None and corr is not None else None
            self.stats.started(key, head.to, trio.current_time())
        elif corr is not None:
            if reply_to is None and tag in FINAL_FRAME_TAGS:  # an answer: to its caller
                self.stats.finished((head.to, corr), trio.current_time(), error=tag == "err")
            elif tag == "cancel":
                self.stats.cancelled((reply_to, corr))

    def new_conn(self, ws: WebSocketConnection, link: SentinelLink) -> Conn:
        """A connection whose queue has this router's limits, counted in :attr:`queued_bytes`."""
        conn = Conn(ws, link, self.limits.queue())
        conn.out.set_account(self._count_queued)
        return conn

    def _count_queued(self, delta: int) -> None:
        self.queued_bytes += delta

    def attached(self, conn: Conn) -> None:
        """``conn`` was admitted: count its queue against its principal's bytes_queued quota."""
        principal = str(conn.link.principal)
        usage = self.usage

        def count(delta: int) -> None:
            self.queued_bytes += delta
            usage.add_queued(principal, delta)

        conn.out.set_account(count)

    def send(self, conn: Conn, data: bytes) -> None:
        """Queue what the sentinel owes ``conn`` (an answer, a control frame) without waiting.

        Beyond the link's budget if need be, up to its hard cap; past that
        the link is closed as stalled. A closed link drops it.
        """
        try:
            queued = conn.out.push(data)
        except _CLOSED:
            return
        if not queued:
            out = conn.out
            self.close_stalled(
                conn,
                f"link stalled: its peer read too slowly; {out.bytes} bytes waited for it,"
                f" its hard cap is {out.hard_cap}",
            )

    def close_stalled(self, conn: Conn, reason: str) -> None:
        """Close ``conn``, whose peer is not reading; its lost-link clean-up follows.

        Logged once per link. Cancelling its tasks ends its reader and
        writer; the connection's ``finally`` then detaches it (its callers
        get ``no_route`` at once) and closes the socket, bounded.
        """
        if conn.closing is not None:
            return
        conn.closing = reason
        self.stalled += 1
        log.info("%r: closing: %s", conn, reason)
        conn.out.close()
        if conn.tasks is not None:
            conn.tasks.cancel_scope.cancel()

    def claim(self, address: str) -> None:
        """Bind ``address`` to the sentinel's own node."""
        shadowed = self.routing.claim(address)
        if shadowed is not None:
            log.warning("sentinel agent at %s shadows a remote binding: %s", address, shadowed)

    async def violation(self, conn: Conn, reason: str) -> None:
        """Answer a bad frame from ``conn`` with a ``LinkError``; its link counts a strike."""
        self.violations += 1
        frame = conn.link.violation(reason)
        self.send(conn, self.codec.encode(frame))
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

    def route(self, conn: Conn, head: RoutingHeader, data: bytes) -> Coroutine[Any, Any, None]:
        """Deliver envelope ``data`` (whose header is ``head``) that arrived on ``conn``.

        A plain function returning the coroutine to await: without tracing,
        routing is one coroutine frame less.
        """
        if self._show or tracing_on():
            return self._traced_route(conn, head, data)
        return self._route(conn, head, data)

    async def _traced_route(self, conn: Conn, head: RoutingHeader, data: bytes) -> None:
        if self._show:
            self._trace(data)
        if tracing_on():
            trace = _traced_request(head)
            if trace is not None:
                op, traceparent = trace
                with span(
                    f"fame.route {op}",
                    kind="SERVER",
                    parent=traceparent,
                    attributes={"fame.to": head.to, "fame.caller": str(conn.link.principal)},
                ):
                    # The callee's span becomes a child of this one.
                    ours = current_traceparent()
                    if ours is not None:
                        data = retrace(data, head, ours)
                    await self._route(conn, head, data)
                return
        await self._route(conn, head, data)

    async def _route(self, conn: Conn, head: RoutingHeader, data: bytes) -> None:
        link = conn.link
        match self.routing.decide(
            conn, conn.reply_address, head, link.principal, link.policy.authz
        ):
            case Forward(link=target, owner=owner, stamp=stamp, tag=tag):
                if stamp:
                    try:
                        data = stamp_caller(data, str(conn.link.principal))
                    except WireError as exc:
                        await self.violation(conn, exc.reason)
                        return
                self._count(head, stamp, tag)
                await self._forward(conn, target, owner, head, data, request=stamp)
            case Deliver():
                try:
                    envelope = self.codec.decode(data)
                except WireError as exc:
                    await self.violation(conn, exc.reason)
                    return
                assert isinstance(envelope, Envelope)  # a RoutingHeader decoded from it
                if isinstance(envelope.frame, Request):
                    caller = str(conn.link.principal)
                    envelope = msgspec.structs.replace(envelope, caller=caller)
                await self.node._deliver(envelope, len(data))
            case ReplyError(kind=kind, message=message, owner=owner):
                if owner is not None:
                    # The caller's error does not name the node; the log does.
                    log.debug("%r: %s (bound to node %s)", conn, message, owner)
                self.reply_error(conn, head, kind, message)
            case Refuse(reason=reason):
                await self.violation(conn, reason)
            case DropAnswer():
                pass

    async def _forward(
        self,
        conn: Conn,
        target: Conn,
        owner: str | None,
        head: RoutingHeader,
        data: bytes,
        *,
        request: bool,
    ) -> None:
        """Queue ``data`` for ``target``, never waiting for room (see the module docstring).

        No checkpoint per message: the reader checkpoints on every websocket
        message anyway. (No await since the decision either: target is
        still linked.)
        """
        forwarded = bump_hops(data)
        if not request:
            self.send(target, forwarded)
            return
        own, out = conn.out, target.out
        kind = "overloaded"
        if own.over_budget:
            # Its own answers wait unread: more requests would only add to them.
            message = (
                f"{head.to}: {own.bytes} bytes of answers wait for this link to read them,"
                f" over its budget of {own.budget}; nothing ran: retry later"
            )
        else:
            try:
                out.send_nowait(forwarded)
                self.requests_forwarded += 1
                return
            except trio.WouldBlock:
                message = (
                    f"{head.to}: its node's link has {out.bytes} bytes waiting, over its"
                    f" budget of {out.budget}; nothing ran: retry later"
                )
            except _CLOSED:
                kind, message = "no_route", self.routing.no_route_reason(head.to, owner)
        if kind == "overloaded":
            self.overloaded += 1
        if head.reply_to is not None and head.corr is not None:
            # It never reached the target: it is not in flight, nor counted against the caller.
            self.inflight.finished(target, head.reply_to, head.corr)
            self.stats.finished((head.reply_to, head.corr), trio.current_time(), error=True)
        self.reply_error(conn, head, kind, message)

    def reply_error(self, conn: Conn, head: RoutingHeader, kind: str, message: str) -> None:
        """Answer a request from ``conn`` that cannot be routed; other frames are dropped.

        The error goes back on ``conn``, the link the request came from (its
        ``reply_to`` is that link's own reply address: ``Routing.decide``
        checked it), without waiting for room (:meth:`send`). It is made
        from the routing header alone: refusing a large request costs no
        decoding of its arguments.
        """
        if head.reply_to is None or frame_tag(head.frame) != "req":
            return
        self.request_errors[kind] += 1
        error = Envelope(0, head.reply_to, 0, Error(kind, message, head.to), None, head.corr)
        self.send(conn, self.codec.encode(error))

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
        # Its queue is dropped with it: the bytes no longer count against anyone.
        conn.out.close()
        conn.out.set_account(None)
        unanswered = self.inflight.lost_requests(conn)
        abandoned = self.inflight.abandoned(conn)
        if unanswered or abandoned:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self._answer_lost(unanswered)
                self._cancel_abandoned(abandoned)
        conn.detached.set()

    async def _answer_lost(
        self, unanswered: list[tuple[tuple[str, int], str, Conn | None]]
    ) -> None:
        """Tell the callers of requests a lost link will never answer, at once.

        Each error goes to the link its request came from (or to the
        sentinel's own node), and names the address called, not the node
        that served it. Never waiting for room (:meth:`send`).
        """
        now = trio.current_time()
        for (reply_to, corr), to, caller in unanswered:
            self.stats.finished((reply_to, corr), now, error=True)
            message = f"no answer from {to}: its node went away before answering; it may have run"
            lost = Error(RequestLost.kind, message, to or None)
            error = Envelope(0, reply_to, 0, lost, None, corr)
            if caller is None:
                if reply_to == self.node.reply_address:
                    await self.node._deliver(error)
                continue
            self.send(caller, self.codec.encode(error))

    def _cancel_abandoned(self, abandoned: list[tuple[Conn, str, tuple[str, int]]]) -> None:
        """Cancel the requests a lost link was still waiting on at other links.

        A caller that dies (a client killed while reading a stream) sends no
        ``Cancel``; without this its producers would stay stalled until their
        idle timeout. Never waiting for room (:meth:`send`).
        """
        reason = "the caller's link closed"
        for target, to, (reply_to, corr) in abandoned:
            self.stats.cancelled((reply_to, corr))
            cancel = Envelope(0, to, 0, Cancel(reason), reply_to, corr)
            self.send(target, self.codec.encode(cancel))


def _traced_request(head: RoutingHeader) -> tuple[str, str] | None:
    """The operation and ``traceparent`` of a traced request, else ``None``.

    Asked only while tracing is on. A malformed frame is ``None`` here: the
    routing decision refuses it.
    """
    try:
        if frame_tag(head.frame) != "req":
            return None
        op, trace = request_trace(head.frame)
    except WireError:
        return None
    return None if trace is None else (op, trace)
