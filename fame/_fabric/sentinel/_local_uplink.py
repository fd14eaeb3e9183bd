"""The sentinel node's own uplink: its agents reach the fabric directly.

A node hands what it does not host to its uplink (``Node._set_uplink``). On an
ordinary node that is a websocket to a sentinel (``fame._fabric._uplink``); on the
sentinel's own node it is this :class:`SentinelUplink`, which puts the
envelope on the target link's queue through the sentinel's
:class:`Router`, and binds the node's agents in the sentinel's own route
table (kept in its ``__binding_store``).
"""

from __future__ import annotations

import math
from contextlib import suppress

import msgspec
import trio

from ..._core._errors import NoRoute
from ..._wire._schema import Cancel, Credit, Envelope, Request
from .._identity import BINDING_STORE, NodeStores
from ._routing import Router

__all__ = ["SentinelUplink"]


class SentinelUplink:
    """The sentinel node's own uplink: its agents reach the fabric directly."""

    def __init__(self, router: Router, stores: NodeStores) -> None:
        self._router = router
        self._stores = stores
        # bind() is called from sync code (Node.spawn); a task persists in order.
        # Unbounded, but it holds at most one item per spawn or stop.
        self._changes, self._changes_recv = trio.open_memory_channel[tuple[bool, str]](math.inf)

    async def send(self, envelope: Envelope) -> None:
        """Put ``envelope`` on its target link's queue; :class:`NoRoute` if there is none."""
        router = self._router
        if type(envelope.frame) is Request:
            # Its callee learns who called from the sentinel, as for every request.
            caller = f"sentinel:{router.sentinel_id}"
            envelope = msgspec.structs.replace(envelope, caller=caller)
        data = router.codec.encode(envelope)
        control = type(envelope.frame) in (Credit, Cancel)
        if control and envelope.reply_to is not None and envelope.corr is not None:
            conn, owner = router.routing.stream_link(envelope.to, envelope.reply_to, envelope.corr)
        else:
            conn, owner = router.routes.lookup(envelope.to)
        if conn is None:
            raise NoRoute(router.routing.no_route_reason(envelope.to, owner), actor=envelope.to)
        if envelope.reply_to is not None and envelope.corr is not None:
            if type(envelope.frame) is Cancel:
                router.inflight.finished(conn, envelope.reply_to, envelope.corr)
            else:
                router.inflight.forwarded(conn, envelope.reply_to, envelope.corr, to=envelope.to)
        try:
            await conn.out.send(data)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            # The link closed after the lookup, or while this waited for room
            # (a caller killed mid-stream): to the sender, as to any uplink's
            # sender, that is no route, not a crash of its agent.
            raise NoRoute(
                f"no route to {envelope.to}: its link closed", actor=envelope.to
            ) from None

    def send_nowait(self, envelope: Envelope) -> None:
        conn, _ = self._router.routes.lookup(envelope.to)
        if conn is not None:
            with suppress(trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                conn.out.send_nowait(self._router.codec.encode(envelope))

    pools = False
    """The sentinel's own agents answer locally before any route: they cannot be pooled."""

    def bind(self, address: str, *, pool: bool = False) -> None:
        """Claim ``address`` for the sentinel's own node and remember it.

        Local agents are found in the node's supervisor before the route
        table anyway; the claim keeps other nodes from binding the address,
        also while the sentinel restarts its agent.
        """
        self._router.claim(address)
        self._changes.send_nowait((True, address))

    def unbind(self, address: str) -> None:
        self._router.routes.unbind(address, self._router.sentinel_id)
        self._changes.send_nowait((False, address))

    async def persist(self) -> None:
        """Keep the sentinel node's ``__binding_store`` in step with bind/unbind."""
        async for bound, address in self._changes_recv:
            if bound:
                await self._stores.set(BINDING_STORE, address, b"1")
            else:
                await self._stores.delete(BINDING_STORE, address)
