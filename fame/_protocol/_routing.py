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

from .._core._address import REPLY_NAME
from .._core._errors import WireError, quoted
from .._wire._schema import (
    ANSWER_FRAME_TAGS,
    FINAL_FRAME_TAGS,
    MAX_HOPS,
    REPLY_FRAME_TAGS,
    RoutingHeader,
    frame_tag,
    request_head,
)
from ._authz import Policy, Principal
from ._inflight import InflightRequests
from ._quotas import PrincipalUsage, Quotas, link_share_refusal
from ._route_table import RouteTable

__all__ = ["Deliver", "DropAnswer", "Forward", "Refuse", "ReplyError", "RouteAction", "Routing"]

L = TypeVar("L")

_REPLY_PREFIX = REPLY_NAME + "@"


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
    """Not routable: a request gets an ``Error`` of ``kind``; other frames are dropped.

    ``message`` goes to the sender and names no other node; ``owner`` (the
    node an unreachable address is bound to) is for the sentinel's log.
    """

    kind: str
    message: str
    owner: str | None = None


@attrs.frozen
class Forward(Generic[L]):
    """Send the envelope (hop count bumped) to ``link``.

    If that link turns out to be closed, or stays full, the sender is
    answered with ``no_route_reason(to, owner)``. ``stamp`` (a request):
    write the sender's verified principal into the envelope's ``caller``.
    """

    link: L
    owner: str | None
    stamp: bool = False
    tag: str = attrs.field(default="", eq=False)
    """The frame's tag, as :meth:`Routing.decide` read it (for the router's counts)."""


RouteAction = Refuse | DropAnswer | Deliver | ReplyError | Forward[L]


class Routing(Generic[L]):
    """The routes and the requests in flight of one sentinel, and the rules over them.

    ``hosts(address)`` says whether the sentinel's own node serves an
    address (its agents and its reply address).

    The rules, by frame (``decide``):

    - ``req``, ``credit``, ``cancel`` go to agents, never to a reply address.
      They may name a ``reply_to``, and it must be
      the sending link's own reply address: no peer aims answers at another.
      Credit and cancel need it (and a ``corr``): they name their stream by it.
    - ``rep``, ``item``, ``end``, ``err`` answer a request: they carry its
      ``corr`` and no ``reply_to``, pass only from the link the request went
      to, and go only to the link the request came from (whatever the route
      table says about their address now).
    - A request from a principal past one of its :class:`Quotas` (requests
      in flight, open streams, bytes queued to its links) is answered
      ``quota_exceeded`` and goes nowhere; other principals are unaffected.
    """

    def __init__(
        self, sentinel_id: str, hosts: Callable[[str], bool], quotas: Quotas | None = None
    ) -> None:
        self.sentinel_id = sentinel_id
        self._hosts = hosts
        self.quotas = quotas if quotas is not None else Quotas()
        self.usage = PrincipalUsage()
        self.routes: RouteTable[L] = RouteTable()
        self.inflight: InflightRequests[L] = InflightRequests(usage=self.usage)
        self.dropped_answers = 0  # answers from a link no open request went to

    def claim(self, address: str) -> str | None:
        """Bind ``address`` to the sentinel's own node; the reason if that shadows a binding."""
        result = self.routes.bind(address, self.sentinel_id)
        if result.ok:
            return None
        return f"{result.reason} ({result.owner})" if result.owner else result.reason

    def stream_link(self, address: str, reply_to: str, corr: int) -> tuple[L | None, str | None]:
        """Where the credit or cancel of stream ``(reply_to, corr)`` must go.

        To the link serving the stream: for a pool, round-robin would pick
        another member, which has no such stream.
        """
        if self.routes.pool(address) is None:
            return self.routes.lookup(address)
        return self.inflight.link_of(reply_to, corr), None

    def no_route_reason(self, address: str, owner: str | None) -> str:
        """Why ``address`` has no route now, for the caller's ``NoRoute``.

        It goes to the caller: it never names the node (``owner``) that
        bound the address.
        """
        members = self.routes.pool(address)
        if members is not None:
            return (
                f"no route to {address}: none of the {len(members)} nodes of its pool is attached"
            )
        if owner is not None and owner == self.sentinel_id:
            return f"no route to {address}: the sentinel's agent there is not running"
        if owner is None:
            return f"no route to {address}: no node bound it"
        return f"no route to {address}: its node is not attached"

    def decide(
        self,
        source: L,
        reply_address: str,
        head: RoutingHeader,
        principal: Principal | None = None,
        authz: Policy | None = None,
    ) -> RouteAction[L]:
        """What to do with an envelope with header ``head`` that came on link ``source``.

        ``reply_address`` is the only address ``source``'s requests may ask
        answers to (its node's reply address). ``principal`` is who the
        link was admitted as: a request ``authz`` does not let it make is
        answered ``permission_denied`` and goes nowhere (no ``authz``: no check).
        """
        try:
            tag = frame_tag(head.frame)
        except WireError as exc:
            return Refuse(exc.reason)
        if head.caller is not None:
            # Only the sentinel says who called: a caller field from a peer is a forgery.
            return Refuse("an envelope's caller is written by the sentinel, never by a peer")
        if tag in ANSWER_FRAME_TAGS:
            return self._answer(source, head, tag)
        if tag not in REPLY_FRAME_TAGS:
            return Refuse(f"unknown frame {tag[:40]!r} in an envelope")
        to = head.to
        if to.startswith(_REPLY_PREFIX):
            # A reply address takes answers only, and only as ``_answer`` routes them.
            return Refuse(f"a {tag} goes to an agent, not to a reply address")
        reply_to, corr = head.reply_to, head.corr
        if reply_to is not None and reply_to != reply_address:
            # Its answers would go to reply_to: a peer could aim an agent's
            # answers at another caller's pending call.
            return Refuse("reply_to is not this link's own reply address")
        if tag != "req" and (reply_to is None or corr is None):
            return Refuse(f"a {tag} needs the reply_to and corr of its stream")
        if reply_to is not None and corr is None:
            # Its answers could carry no corr, and would count against the
            # answering node's link as violations.
            return Refuse("a request with a reply_to needs a corr")
        stream = False
        if principal is not None and tag == "req":
            # One decode serves the policy (the operation) and the quotas (a stream?).
            try:
                op, stream = request_head(head.frame)
            except WireError as exc:
                return Refuse(exc.reason)
            if authz is not None and not authz.may_call(principal, to, op):
                return ReplyError(
                    "permission_denied",
                    f"{principal} may not call {quoted(op)} of {to}: the sentinel's policy"
                    " does not allow it (nothing ran)",
                )
        if self._hosts(to):
            return Deliver()
        if tag != "req":
            assert reply_to is not None and corr is not None
            target, owner = self.stream_link(to, reply_to, corr)
        else:
            target, owner = self.routes.lookup(to)
        if target is None:
            return ReplyError("no_route", self.no_route_reason(to, owner), owner)
        if head.hops >= MAX_HOPS:
            return ReplyError("protocol", f"envelope to {to} exceeded {MAX_HOPS} hops")
        if reply_to is not None and corr is not None:
            if tag == "cancel":
                self.inflight.finished(target, reply_to, corr)
            elif tag == "req" and principal is not None:
                who = str(principal)
                refusal = self.usage.refusal(who, self.quotas, stream=stream)
                if refusal is not None:
                    return ReplyError("quota_exceeded", refusal)
                requests, streams = self.inflight.caller_usage(source)
                busy = link_share_refusal(who, self.quotas, requests, streams, stream=stream)
                if busy is not None:
                    return ReplyError("overloaded", busy)
                self.inflight.forwarded(
                    target, reply_to, corr, caller=source, to=to, principal=who, stream=stream
                )
            else:
                self.inflight.forwarded(target, reply_to, corr, caller=source, to=to)
        return Forward(target, owner, tag == "req", tag)

    def _answer(self, source: L, head: RoutingHeader, tag: str) -> RouteAction[L]:
        """An answer (reply, stream item or end, error) travelling back to its caller."""
        if head.reply_to is not None:
            return Refuse(f"reply_to is allowed on requests, credits and cancels only, not {tag}")
        to, corr = head.to, head.corr
        if corr is None:
            return Refuse(f"a {tag} needs the corr of the request it answers")
        # Only the link its request went to may answer (no peer forges another's
        # results); anything else is late (cancelled, or its caller's link
        # closed) or forged, and dropped.
        if self.inflight.link_of(to, corr) is not source:
            self.dropped_answers += 1
            return DropAnswer()
        caller = self.inflight.caller_of(to, corr)
        if tag in FINAL_FRAME_TAGS:
            self.inflight.finished(source, to, corr)
        if caller is None:
            # The request came from the sentinel's own node.
            if self._hosts(to):
                return Deliver()
            self.dropped_answers += 1
            return DropAnswer()
        # Back to the link the request came from, never to whatever the route
        # table says about ``to`` now.
        return Forward(caller, None, False, tag)
