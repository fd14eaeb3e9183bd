"""The sentinel's routing decisions, sans IO: a header in, one action out.

:meth:`Routing.decide` takes the :class:`RoutingHeader` of an envelope that
arrived on a link and returns what to do with it: refuse it as a protocol
violation, drop a late answer, deliver it to the sentinel's own node,
answer its sender with an error, or forward it to another link. It keeps
the route table and the requests in flight up to date as it decides; it
sends nothing, waits for nothing and reads no clock, so every rule is
tested with plain values (``tests/fabric/test_routing.py``). The router in
``fame._fabric.sentinel._routing`` carries the actions out on websockets.

Links are opaque here (``L``): any object the IO layer uses for one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import attrs

from .._core._errors import WireError
from .._wire._schema import FINAL_FRAME_TAGS, MAX_HOPS, RoutingHeader, frame_tag
from ._inflight import InflightRequests
from ._route_table import RouteTable

__all__ = ["Deliver", "DropAnswer", "Forward", "Refuse", "ReplyError", "RouteAction", "Routing"]

L = TypeVar("L")


@attrs.frozen
class Refuse:
    """A protocol violation by the sending link: answer it with a ``LinkError``."""

    reason: str


@attrs.frozen
class DropAnswer:
    """An answer from a link its request did not go to (late, or forged): drop it."""


@attrs.frozen
class Deliver:
    """For an address the sentinel's own node hosts: decode and deliver it there."""


@attrs.frozen
class ReplyError:
    """Not routable: a request gets an ``Error`` of ``kind``; other frames are dropped."""

    kind: str
    message: str


@attrs.frozen
class Forward(Generic[L]):
    """Send the envelope (hop count bumped) to ``link``.

    If that link turns out to be closed, or stays full, the sender is
    answered with ``no_route_reason(to, owner)``.
    """

    link: L
    owner: str | None


RouteAction = Refuse | DropAnswer | Deliver | ReplyError | Forward[L]


class Routing(Generic[L]):
    """The routes and the requests in flight of one sentinel, and the rules over them.

    ``hosts(address)`` says whether the sentinel's own node serves an
    address (its agents and its reply address).
    """

    def __init__(self, sentinel_id: str, hosts: Callable[[str], bool]) -> None:
        self.sentinel_id = sentinel_id
        self._hosts = hosts
        self.routes: RouteTable[L] = RouteTable()
        self.inflight: InflightRequests[L] = InflightRequests()
        self.dropped_answers = 0  # answers from a link no open request went to

    def claim(self, address: str) -> str | None:
        """Bind ``address`` to the sentinel's own node; the reason if that shadows a binding."""
        result = self.routes.bind(address, self.sentinel_id)
        return None if result.ok else result.reason

    def stream_link(self, address: str, reply_to: str, corr: int) -> tuple[L | None, str | None]:
        """Where the credit or cancel of stream ``(reply_to, corr)`` must go.

        To the link serving the stream: for a pool, round-robin would pick
        another member, which has no such stream.
        """
        if self.routes.pool(address) is None:
            return self.routes.lookup(address)
        return self.inflight.link_of(reply_to, corr), None

    def no_route_reason(self, address: str, owner: str | None) -> str:
        """Why ``address`` has no route now, for the caller's ``NoRoute``."""
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

    def decide(self, source: L, reply_address: str, head: RoutingHeader) -> RouteAction[L]:
        """What to do with an envelope with header ``head`` that came on link ``source``.

        ``reply_address`` is the only address ``source``'s requests may ask
        answers to (its node's reply address).
        """
        to = head.to
        if head.reply_to is not None:
            # A request, credit or cancel. Its answers go to reply_to, so that must
            # be the sender's own: else a peer could aim an agent's answers at
            # another caller's pending call.
            if head.reply_to != reply_address:
                return Refuse("reply_to is not this link's own reply address")
        elif head.corr is not None:
            # An answer travelling back. Only the link its request went to may
            # send it (no peer can forge another's results); anything else is a
            # late answer (cancelled, or its caller's link closed) and is dropped.
            if self.inflight.link_of(to, head.corr) is not source:
                self.dropped_answers += 1
                return DropAnswer()
            try:
                if frame_tag(head.frame) in FINAL_FRAME_TAGS:
                    self.inflight.finished(source, to, head.corr)
            except WireError as exc:
                return Refuse(exc.reason)
        if self._hosts(to):
            return Deliver()
        tag: str | None = None
        if head.reply_to is not None and head.corr is not None:
            try:
                tag = frame_tag(head.frame)
            except WireError as exc:
                return Refuse(exc.reason)
        if head.reply_to is not None and head.corr is not None and tag in ("credit", "cancel"):
            target, owner = self.stream_link(to, head.reply_to, head.corr)
        else:
            target, owner = self.routes.lookup(to)
        if target is None:
            return ReplyError("no_route", self.no_route_reason(to, owner))
        if head.hops >= MAX_HOPS:
            return ReplyError("protocol", f"envelope to {to} exceeded {MAX_HOPS} hops")
        if tag is not None and head.reply_to is not None and head.corr is not None:
            if tag == "cancel":
                self.inflight.finished(target, head.reply_to, head.corr)
            else:
                self.inflight.forwarded(target, head.reply_to, head.corr, caller=source, to=to)
        return Forward(target, owner)
