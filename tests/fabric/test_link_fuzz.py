"""The sentinel's link and routing rules under adversarial frames, fuzzed with hypothesis.

Sans IO. A sentinel already serves a victim node (pinned, attached, owning
``storage@fame.fabric`` and a pool) and a client; an attacker's link then
receives any sequence of frames: attaches with the right or a wrong token,
version, key or signature, as itself, the victim or the sentinel; binds
and unbinds of reserved and ordinary addresses; frames out of order and
bytes that do not decode. Whatever comes, the link never raises, answers
only with frames it may send (each fits on the wire), never admits the
sentinel's id or a stolen one, never lets a reserved address be bound, and
never names the victim or the client in a reason unless the attacker's own
frame did. The routing rules get the same treatment with envelopes.
"""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fame._core._address import REPLY_NAME, Address, AddressError
from fame._core._errors import WireError
from fame._protocol import Admitted, NodeHandshake, SentinelLink, SentinelPolicy
from fame._protocol._credentials import ClientCredential, token_proof
from fame._protocol._identity import Identity, looks_like_node_id
from fame._protocol._route_table import RouteTable
from fame._protocol._routing import DropAnswer, Forward, Routing
from fame._wire._schema import (
    PROTOCOL_VERSION,
    Attach,
    Batch,
    Bind,
    BindRefused,
    Bound,
    Cancel,
    Challenge,
    Codec,
    Credit,
    Envelope,
    Error,
    LinkError,
    Ping,
    Pong,
    Refused,
    Reply,
    Request,
    RoutingHeader,
    StreamEnd,
    StreamItem,
    Unbind,
    Welcome,
    attach_proof_payload,
)

CODEC = Codec()
TOKEN = "fuzz-token"
SENTINEL = Identity.generate()
VICTIM = Identity.generate()
CLIENT = Identity.generate("client-7")
THIEF = Identity.generate(VICTIM.node_id)  # the victim's id, another key
IMPOSTOR = Identity.generate(SENTINEL.node_id)  # the sentinel's id
ATTACKERS = [Identity.generate(), Identity.generate("attacker"), THIEF, IMPOSTOR]
SECRETS = (VICTIM.node_id, CLIENT.node_id)  # ids the attacker must not learn from a reason
SENTINEL_SENDS = (Challenge, Welcome, Refused, Bound, BindRefused, Pong, LinkError)


class Link:
    """A stand-in for a connection: the route table only compares links."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


def world() -> tuple[SentinelPolicy, Link, Link]:
    """A sentinel serving the victim (and its addresses) and a client."""
    # Trust on first use: the victim is enrolled by its first attach, and
    # every attacker id that is new may try to enroll too.
    policy = SentinelPolicy(
        SENTINEL.node_id,
        (ClientCredential("default", TOKEN),),
        {},
        RouteTable(),
        trust_on_first_use=True,
    )
    links = []
    for identity, ephemeral, name in ((VICTIM, False, "victim"), (CLIENT, True, "client")):
        link = SentinelLink(policy, b"v" * 32)
        role = "client" if ephemeral else "node"
        attach = NodeHandshake(identity, TOKEN, role=role).receive(link.start())
        [welcome] = link.receive(attach)
        assert type(welcome) is Welcome
        conn = Link(name)
        policy.routes.link(identity.node_id, identity.node_id, conn)
        if not ephemeral:
            assert link.receive(Bind(["storage@fame.fabric"])) == [Bound("storage@fame.fabric")]
            assert link.receive(Bind(["work@fame.fabric"], pool=True)) == [
                Bound("work@fame.fabric")
            ]
        links.append(conn)
    return policy, links[0], links[1]


# --- strategies ---------------------------------------------------------------------------

labels = st.sampled_from(
    [VICTIM.node_id, CLIENT.node_id, SENTINEL.node_id, "fame", "fabric", "x"]
) | st.from_regex(r"n[0-9a-f]{20}", fullmatch=True)
paths = st.lists(labels, min_size=1, max_size=3).map(".".join)
names = st.sampled_from([REPLY_NAME, "storage", "work", "evil", "__keystore"])
addresses = st.one_of(
    st.builds(lambda n, p: f"{n}@{p}", names, paths),
    st.sampled_from(["storage@fame.fabric", "work@fame.fabric", "x@fame.fabric"]),
    st.text(max_size=30),
)


@st.composite
def attaches(draw: st.DrawFn, nonce: bytes) -> Any:
    identity = draw(st.sampled_from(ATTACKERS))
    role = draw(st.sampled_from(["node", "client", "admin", ""]))
    payload = attach_proof_payload(
        nonce, SENTINEL.node_id, identity.node_id, role, identity.public_key
    )
    if draw(st.booleans()):
        # Done right (admitted, unless the id is the victim's, a live client's or the sentinel's).
        honest = NodeHandshake(identity, TOKEN, role=draw(st.sampled_from(["node", "client"])))
        return honest.receive(Challenge(nonce, SENTINEL.node_id, PROTOCOL_VERSION))
    token = draw(st.sampled_from([TOKEN, "wrong", "fuzz-toke\u00f1", ""]))
    proof = draw(st.sampled_from([token_proof(token, payload) if token else b"", b"", b"p" * 32]))
    version = draw(st.sampled_from([PROTOCOL_VERSION, 0, PROTOCOL_VERSION + 1]) | st.integers())
    signature = draw(st.sampled_from([identity.sign(payload), b"", b"s" * 64]))
    attach = Attach(
        identity.node_id,
        identity.public_key,
        proof,
        signature,
        role,
        max(-(2**63), min(version, 2**63 - 1)),
    )
    if draw(st.booleans()):
        return attach
    # The same frame as bytes, maybe cut, maybe without its version, maybe reshaped.
    fields = list(msgspec.msgpack.decode(CODEC.encode(attach)))
    cut = draw(st.sampled_from(["whole", "unversioned", "reshaped", "truncated"]))
    if cut == "unversioned":
        fields = fields[:6]
    elif cut == "reshaped":
        fields[1:6] = [draw(st.binary(max_size=8)), {}, [], None, 1.5]
    encoded = msgspec.msgpack.encode(fields)
    if cut == "truncated":
        encoded = encoded[: draw(st.integers(0, len(encoded)))]
    return encoded


def frames(nonce: bytes) -> st.SearchStrategy[Any]:
    return st.one_of(
        attaches(nonce),
        st.builds(Bind, st.lists(addresses, max_size=5), st.booleans()),
        st.builds(Unbind, st.lists(addresses, max_size=5)),
        st.builds(Ping, st.integers(-(2**63), 2**63 - 1)),
        st.builds(Pong, st.integers(0, 10)),
        st.sampled_from(
            [
                Welcome(VICTIM.node_id, VICTIM.node_id),
                Challenge(nonce, SENTINEL.node_id, PROTOCOL_VERSION),
                Refused("no"),
                Bound("storage@fame.fabric"),
                BindRefused("x@y", "z"),
                LinkError("?"),
                Batch([CODEC.encode(Ping(1))]),
            ]
        ),
        st.binary(max_size=64),
    )


def feed(link: SentinelLink, frame: Any) -> list[Any]:
    """What the sentinel's reader does with one message (bytes are decoded first)."""
    if isinstance(frame, bytes):
        try:
            frame = CODEC.decode(frame)
        except WireError as exc:
            return link.undecodable(bytes(frame), exc.reason)
    return link.receive(frame)


def reserved_for(address: str, binder: str) -> bool:
    parsed = Address.parse(address)
    top = parsed.path.rpartition(".")[2]
    if parsed.name == REPLY_NAME:
        return True
    if top == binder:
        return False
    return top in (SENTINEL.node_id, VICTIM.node_id, CLIENT.node_id) or looks_like_node_id(top)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_an_attackers_link_never_raises_never_admits_a_reserved_id_nor_binds_a_reserved_name(
    data: st.DataObject,
) -> None:
    policy, _, _ = world()
    nonce = data.draw(st.binary(min_size=32, max_size=32), label="nonce")
    link = SentinelLink(policy, nonce, max_strikes=10**6)
    assert link.start() == Challenge(nonce, SENTINEL.node_id, PROTOCOL_VERSION)
    conn = Link("attacker")
    sequence = data.draw(st.lists(frames(nonce), max_size=12), label="frames")
    if data.draw(st.booleans(), label="attached first"):
        # Half the runs attack from an admitted link, where binding is reachable.
        who = data.draw(st.sampled_from(ATTACKERS[:2]), label="as")
        handshake = NodeHandshake(who, TOKEN, role=data.draw(st.sampled_from(["node", "client"])))
        sequence.insert(0, handshake.receive(Challenge(nonce, SENTINEL.node_id, PROTOCOL_VERSION)))
    for frame in sequence:
        answers = feed(link, frame)  # never raises
        said = CODEC.encode(frame) if not isinstance(frame, bytes) else frame
        for answer in answers:
            assert isinstance(answer, SENTINEL_SENDS), answer
            CODEC.encode(answer)  # fits on the wire
            reason = getattr(answer, "reason", "")
            for secret in SECRETS:
                assert secret not in reason or secret.encode() in said, (reason, frame)
        for happened in link.events:
            if isinstance(happened, Admitted):
                assert happened.node_id != SENTINEL.node_id
                assert happened.node_id != VICTIM.node_id  # only the thief's key could claim it
                assert happened.node_id != CLIENT.node_id  # a live client's id is not for taking
                if happened.ephemeral:  # a client pins and enrolls nothing
                    assert not happened.new_pin and happened.enrolled is None
                policy.routes.link(happened.node_id, happened.path, conn)  # as the IO layer does
        link.events.clear()
        if answers and type(answers[0]) is Welcome:
            assert link.attached
            event("attached")
        if link.attached and isinstance(frame, Bind):
            event("bind on an attached link")
    assert SENTINEL.node_id not in policy.pins
    assert CLIENT.node_id not in policy.pins and CLIENT.node_id not in policy.enrolled
    assert policy.pins[VICTIM.node_id] == VICTIM.public_key
    for address, record in policy.routes.bindings().items():
        for owner in record.removeprefix("pool:").split(","):
            if owner != VICTIM.node_id:
                assert not reserved_for(address, owner), (address, owner)
    assert policy.routes.owner("storage@fame.fabric") == VICTIM.node_id
    assert VICTIM.node_id in (policy.routes.pool("work@fame.fabric") or [])


# --- routing: envelopes from an attacker's link -------------------------------------------

VICTIM_REPLY = f"{REPLY_NAME}@{VICTIM.node_id}"
ATTACKER_REPLY = f"{REPLY_NAME}@nattacker"
VICTIM_CORR = 4_611_686_018_427_387_905
ENVELOPE_FRAMES = [
    Request("op", {}),
    Request("op", {}, True, 8),
    Reply("forged"),
    StreamItem("forged"),
    StreamEnd(),
    Error("no_route", "forged"),
    Credit(5),
    Cancel("forged"),
]


def envelopes() -> st.SearchStrategy[bytes]:
    endpoints = st.sampled_from(
        [VICTIM_REPLY, ATTACKER_REPLY, "storage@fame.fabric", "work@fame.fabric", "x@fame.fabric"]
    )
    envelope = st.builds(
        Envelope,
        st.integers(0, 16),
        endpoints,
        st.integers(0, 2**63 - 1),
        st.sampled_from(ENVELOPE_FRAMES),
        st.none() | endpoints,
        st.none() | st.sampled_from([VICTIM_CORR, 1, 2]) | st.integers(0, 2**63 - 1),
    )
    raw = envelope.map(CODEC.encode)
    # An unknown frame tag, as a raw envelope.
    odd = raw.map(lambda data: data.replace(b"\xa3req", b"\xa3zzz").replace(b"\xa3rep", b"\xa3q!q"))
    return raw | odd


@settings(max_examples=300, deadline=None)
@given(st.lists(envelopes(), max_size=20))
def test_an_attacker_cannot_reach_another_callers_pending_request(batch: list[bytes]) -> None:
    routing: Routing[Link] = Routing(SENTINEL.node_id, lambda address: False)
    victim, server, attacker = Link("victim"), Link("server"), Link("attacker")
    routing.routes.link(VICTIM.node_id, VICTIM.node_id, victim)
    routing.routes.link("nserver", "nserver", server)
    routing.routes.link("nattacker", "nattacker", attacker)
    assert routing.routes.bind("storage@fame.fabric", "nserver").ok
    assert routing.routes.bind("work@fame.fabric", "nserver", pool=True).ok
    opened = Envelope(0, "storage@fame.fabric", 1, Request("op", {}), VICTIM_REPLY, VICTIM_CORR)
    head = CODEC.decode_header(CODEC.encode(opened))
    assert isinstance(head, RoutingHeader)
    assert routing.decide(victim, VICTIM_REPLY, head) == Forward(server, "nserver", stamp=True)
    for data in batch:
        head = CODEC.decode_header(data)
        assert isinstance(head, RoutingHeader)
        action = routing.decide(attacker, ATTACKER_REPLY, head)  # never raises
        if isinstance(action, Forward):
            # Nothing the attacker sends reaches the victim: its requests are
            # answered back to the attacker, and it has no request open.
            assert action.link is not victim, (data, action)
        if head.reply_to is None and head.corr is not None and head.to == VICTIM_REPLY:
            assert type(action) is not Forward
    # The victim's request is still open, at the server, for the victim.
    assert routing.inflight.link_of(VICTIM_REPLY, VICTIM_CORR) is server
    assert routing.inflight.caller_of(VICTIM_REPLY, VICTIM_CORR) is victim
    genuine = CODEC.decode_header(
        CODEC.encode(Envelope(0, VICTIM_REPLY, 2, Reply("ok"), None, VICTIM_CORR))
    )
    assert isinstance(genuine, RoutingHeader)
    assert routing.decide(server, "_reply@nserver", genuine) == Forward(victim, None)
    assert routing.decide(server, "_reply@nserver", genuine) == DropAnswer()


def test_the_reserved_check_of_this_test_agrees_with_the_library() -> None:
    # reserved_for() above restates the rule; make sure it is the library's.
    from fame._protocol._attach import reserved

    policy, _, _ = world()
    for address in ["_reply@x", f"a@{VICTIM.node_id}", "a@fame.fabric", f"a@b.{SENTINEL.node_id}"]:
        for binder in ("nattacker", VICTIM.node_id):
            try:
                parsed = Address.parse(address)
            except AddressError:
                continue
            expected = reserved_for(address, binder)
            assert (reserved(parsed, binder, policy) is not None) == expected, (address, binder)
