"""The sentinel's routing rules, sans IO: headers in, actions out, no sockets."""

from __future__ import annotations

import msgspec

from fame._protocol._routing import Deliver, DropAnswer, Forward, Refuse, ReplyError, Routing
from fame._wire._schema import (
    MAX_HOPS,
    Cancel,
    Codec,
    Credit,
    Envelope,
    Error,
    Reply,
    Request,
    RoutingHeader,
    StreamEnd,
    StreamItem,
    StreamItems,
)

CODEC = Codec()
SENTINEL = "nsentinel"


class Link:
    """A stand-in for a websocket link: routing only compares links by identity."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


def header(envelope: Envelope) -> RoutingHeader:
    head = CODEC.decode_header(CODEC.encode(envelope))
    assert isinstance(head, RoutingHeader)
    return head


def request(to: str, reply_to: str, corr: int, *, hops: int = 0) -> RoutingHeader:
    return header(Envelope(hops, to, 1, Request("op", {}), reply_to, corr))


def answer(to: str, corr: int, frame: object = None) -> RoutingHeader:
    return header(Envelope(0, to, 2, frame if frame is not None else Reply(1), None, corr))


def setup() -> tuple[Routing[Link], Link, Link]:
    hosted = {f"admin@{SENTINEL}", f"_reply@{SENTINEL}"}  # its agent and its reply address
    routing: Routing[Link] = Routing(SENTINEL, hosted.__contains__)
    caller, server = Link("caller"), Link("server")
    routing.routes.link("ncaller", "ncaller", caller)
    routing.routes.link("nserver", "nserver", server)
    assert routing.routes.bind("svc@fame.fabric", "nserver").ok
    assert routing.routes.bind("_reply@ncaller", "ncaller").ok
    return routing, caller, server


def test_a_request_is_forwarded_and_its_answer_goes_back_once() -> None:
    routing, caller, server = setup()
    action = routing.decide(
        caller, "_reply@ncaller", request("svc@fame.fabric", "_reply@ncaller", 7)
    )
    assert action == Forward(server, "nserver", stamp=True)
    assert routing.inflight.link_of("_reply@ncaller", 7) is server
    assert routing.decide(server, "_reply@nserver", answer("_reply@ncaller", 7)) == Forward(
        caller, None
    )
    # The final answer closed the request: a second one is late and dropped.
    assert routing.decide(server, "_reply@nserver", answer("_reply@ncaller", 7)) == DropAnswer()
    assert routing.dropped_answers == 1


def test_a_stream_item_keeps_the_request_open_until_its_final_frame() -> None:
    routing, caller, server = setup()
    routing.decide(caller, "_reply@ncaller", request("svc@fame.fabric", "_reply@ncaller", 3))
    item = answer("_reply@ncaller", 3, StreamItem(1))
    assert routing.decide(server, "_reply@nserver", item) == Forward(caller, None)
    assert routing.inflight.link_of("_reply@ncaller", 3) is server


def test_a_frame_of_stream_items_is_routed_like_an_item() -> None:
    routing, caller, server = setup()
    attacker = Link("attacker")
    routing.routes.link("nattacker", "nattacker", attacker)
    routing.decide(caller, "_reply@ncaller", request("svc@fame.fabric", "_reply@ncaller", 5))
    items = answer("_reply@ncaller", 5, StreamItems([msgspec.Raw(b"\x01"), msgspec.Raw(b"\x02")]))
    assert routing.decide(server, "_reply@nserver", items) == Forward(caller, None)
    assert routing.inflight.link_of("_reply@ncaller", 5) is server  # not a final frame
    assert routing.decide(attacker, "_reply@nattacker", items) == DropAnswer()
    forged = envelope("_reply@ncaller", StreamItems([]), "_reply@nserver", 5)
    assert isinstance(routing.decide(server, "_reply@nserver", forged), Refuse)
    end = answer("_reply@ncaller", 5, StreamEnd())
    assert routing.decide(server, "_reply@nserver", end) == Forward(caller, None)
    assert routing.decide(server, "_reply@nserver", items) == DropAnswer()  # late


def test_an_answer_from_another_link_is_dropped_not_forwarded() -> None:
    routing, caller, server = setup()
    attacker = Link("attacker")
    routing.routes.link("nattacker", "nattacker", attacker)
    routing.decide(caller, "_reply@ncaller", request("svc@fame.fabric", "_reply@ncaller", 1))
    assert routing.decide(attacker, "_reply@nattacker", answer("_reply@ncaller", 1)) == DropAnswer()
    assert routing.inflight.link_of("_reply@ncaller", 1) is server  # the genuine one still counts


def test_a_request_whose_answers_would_go_to_someone_else_is_refused() -> None:
    routing, caller, _ = setup()
    forged = request("svc@fame.fabric", "_reply@nvictim", 1)
    assert routing.decide(caller, "_reply@ncaller", forged) == Refuse(
        "reply_to is not this link's own reply address"
    )
    assert routing.inflight.link_of("_reply@nvictim", 1) is None


def test_unbound_and_detached_addresses_get_a_no_route_reason() -> None:
    routing, caller, server = setup()
    lost = routing.decide(
        caller, "_reply@ncaller", request("nobody@fame.fabric", "_reply@ncaller", 1)
    )
    assert lost == ReplyError("no_route", "no route to nobody@fame.fabric: no node bound it")
    routing.routes.unlink("nserver", server)
    gone = routing.decide(caller, "_reply@ncaller", request("svc@fame.fabric", "_reply@ncaller", 2))
    # The caller is not told which node that is; the sentinel's log is.
    assert gone == ReplyError(
        "no_route", "no route to svc@fame.fabric: its node is not attached", "nserver"
    )


def test_the_hop_limit_is_an_error_for_the_sender() -> None:
    routing, caller, _ = setup()
    looping = request("svc@fame.fabric", "_reply@ncaller", 1, hops=MAX_HOPS)
    action = routing.decide(caller, "_reply@ncaller", looping)
    assert isinstance(action, ReplyError) and action.kind == "protocol"


def test_the_sentinels_own_addresses_are_delivered_here() -> None:
    routing, caller, _ = setup()
    head = request(f"admin@{SENTINEL}", "_reply@ncaller", 1)
    assert routing.decide(caller, "_reply@ncaller", head) == Deliver()


def test_credit_and_cancel_of_a_pool_stream_go_to_the_member_serving_it() -> None:
    routing, caller, _ = setup()
    members = [Link("m1"), Link("m2")]
    for i, member in enumerate(members):
        routing.routes.link(f"nm{i}", f"nm{i}", member)
        assert routing.routes.bind("pool@fame.fabric", f"nm{i}", pool=True).ok
    first = routing.decide(
        caller, "_reply@ncaller", request("pool@fame.fabric", "_reply@ncaller", 5)
    )
    assert isinstance(first, Forward)
    serving = first.link
    for _ in range(3):  # round-robin would move on; the stream's frames must not
        credit = header(Envelope(0, "pool@fame.fabric", 3, Credit(4), "_reply@ncaller", 5))
        assert routing.decide(caller, "_reply@ncaller", credit) == Forward(serving, None)
    cancel = header(Envelope(0, "pool@fame.fabric", 4, Cancel("bye"), "_reply@ncaller", 5))
    assert routing.decide(caller, "_reply@ncaller", cancel) == Forward(serving, None)
    assert routing.inflight.link_of("_reply@ncaller", 5) is None


def test_claiming_a_bound_address_says_what_it_shadows() -> None:
    routing, _, _ = setup()
    assert routing.claim(f"admin@{SENTINEL}") is None
    reason = routing.claim("svc@fame.fabric")
    assert reason == "svc@fame.fabric is already bound to another node (nserver)"


# --- routing integrity (issue 11) ---------------------------------------------------------


def envelope(to: str, frame: object, reply_to: str | None, corr: int | None) -> RoutingHeader:
    return header(Envelope(0, to, 9, frame, reply_to, corr))  # type: ignore[arg-type]


ANSWERS = [Reply(1), StreamItem(2), StreamEnd(), Error("no_route", "x")]


def test_reply_to_is_allowed_on_requests_credits_and_cancels_only() -> None:
    routing, caller, server = setup()
    routing.decide(caller, "_reply@ncaller", request("svc@fame.fabric", "_reply@ncaller", 4))
    for frame in ANSWERS:
        # An answer naming a reply_to, even the sender's own: refused, not forwarded.
        forged = envelope("_reply@ncaller", frame, "_reply@nserver", 4)
        action = routing.decide(server, "_reply@nserver", forged)
        assert isinstance(action, Refuse), frame
        assert action.reason.startswith("reply_to is allowed on requests, credits and cancels")
    assert routing.inflight.link_of("_reply@ncaller", 4) is server  # still open
    for frame in (Credit(1), Cancel("x")):
        ok = envelope("svc@fame.fabric", frame, "_reply@ncaller", 4)
        assert isinstance(routing.decide(caller, "_reply@ncaller", ok), Forward)


def test_frames_missing_what_identifies_them_are_refused() -> None:
    routing, caller, server = setup()
    cases = [
        (server, "_reply@nserver", envelope("_reply@ncaller", Reply(1), None, None)),
        (caller, "_reply@ncaller", envelope("svc@fame.fabric", Credit(1), None, 4)),
        (caller, "_reply@ncaller", envelope("svc@fame.fabric", Cancel(""), "_reply@ncaller", None)),
        (
            caller,
            "_reply@ncaller",
            envelope("svc@fame.fabric", Request("op", {}), "_reply@ncaller", None),
        ),
    ]
    for source, own, head in cases:
        assert isinstance(routing.decide(source, own, head), Refuse), head
    unknown = Envelope(0, "svc@fame.fabric", 1, Reply(1), None, 1)
    raw = CODEC.encode(unknown).replace(b"\xa3rep", b"\xa3zzz")
    head = CODEC.decode_header(raw)
    assert isinstance(head, RoutingHeader)
    assert routing.decide(caller, "_reply@ncaller", head) == Refuse(
        "unknown frame 'zzz' in an envelope"
    )
    # A tell (a request nobody answers) needs neither.
    tell = envelope("svc@fame.fabric", Request("op", {}), None, None)
    assert routing.decide(caller, "_reply@ncaller", tell) == Forward(server, "nserver", stamp=True)


def test_answers_go_back_to_the_link_the_request_came_from() -> None:
    routing, caller, server = setup()
    attacker = Link("attacker")
    routing.routes.link("nattacker", "nattacker", attacker)
    routing.decide(caller, "_reply@ncaller", request("svc@fame.fabric", "_reply@ncaller", 6))
    # Whatever the table says about the caller's reply address now (here a stale
    # binding from before such addresses were reserved), the answer goes back
    # the way its request came.
    routing.routes.unbind("_reply@ncaller", "ncaller")
    assert routing.routes.bind("_reply@ncaller", "nattacker").ok
    assert routing.routes.lookup("_reply@ncaller") == (attacker, "nattacker")
    item = answer("_reply@ncaller", 6, StreamItem(1))
    assert routing.decide(server, "_reply@nserver", item) == Forward(caller, None)
    assert routing.decide(server, "_reply@nserver", answer("_reply@ncaller", 6)) == Forward(
        caller, None
    )


def test_answers_to_the_sentinels_own_requests_are_delivered_there_only() -> None:
    routing, _, server = setup()
    own = f"_reply@{SENTINEL}"
    routing.inflight.forwarded(server, own, 3, to="svc@fame.fabric")  # as SentinelUplink does
    assert routing.decide(server, "_reply@nserver", answer(own, 3)) == Deliver()
    # A request of the sentinel's own whose reply_to is not hosted (cannot happen
    # today) is not forwarded anywhere.
    routing.inflight.forwarded(server, "_reply@nowhere", 3, to="svc@fame.fabric")
    assert routing.decide(server, "_reply@nserver", answer("_reply@nowhere", 3)) == DropAnswer()


def test_no_route_reasons_never_name_a_node() -> None:
    routing, caller, server = setup()
    routing.routes.unlink("nserver", server)
    action = routing.decide(
        caller, "_reply@ncaller", request("svc@fame.fabric", "_reply@ncaller", 1)
    )
    assert isinstance(action, ReplyError) and action.owner == "nserver"
    assert "nserver" not in action.message
    assert "nserver" not in routing.no_route_reason("svc@fame.fabric", "nserver")


def test_requests_credits_and_cancels_never_go_to_a_reply_address() -> None:
    routing, caller, _ = setup()
    for frame in (Request("op", {}), Credit(1), Cancel("x")):
        for reply_to in (None, "_reply@ncaller"):
            head = envelope("_reply@nserver", frame, reply_to, 1)
            action = routing.decide(caller, "_reply@ncaller", head)
            assert isinstance(action, Refuse) and "not to a reply address" in action.reason
