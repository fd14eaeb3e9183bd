"""The attach handshake and binding state machines, without sockets."""

from __future__ import annotations

import hmac
import random

import msgspec
import pytest

from fame import AdmissionRefused
from fame._core._address import REPLY_NAME, Address
from fame._fabric._transport import RECONNECT_BACKOFF
from fame._protocol import (
    Admitted,
    BindDenied,
    BindingTracker,
    NodeHandshake,
    RoutesChanged,
    SentinelLink,
    SentinelPolicy,
)
from fame._protocol import _credentials as credentials_module
from fame._protocol import _node_handshake as node_handshake_module
from fame._protocol._attach import (
    RESERVED_PATH_REASON,
    RESERVED_REPLY_REASON,
    reserved,
    sentinel_version_mismatch,
)
from fame._protocol._credentials import ClientCredential
from fame._protocol._identity import Identity
from fame._protocol._node_handshake import MAX_CHALLENGE_KEYS
from fame._protocol._route_table import RouteTable
from fame._wire._schema import (
    PROTOCOL_VERSION,
    Attach,
    Bind,
    BindRefused,
    Bound,
    Challenge,
    Codec,
    LinkError,
    Ping,
    Pong,
    Refused,
    Unbind,
    Welcome,
    challenge_payload,
)
from fame.errors import ProtocolError, ProtocolMismatch, UntrustedSentinel, WireError

TOKEN = "s3cret"


def make_policy(token: str | None = TOKEN, *, tofu: bool = True) -> SentinelPolicy:
    """A policy admitting clients with ``token``; new nodes are enrolled on first use
    (``tofu``): the tests of enrollment proper say ``tofu=False``."""
    credentials = (ClientCredential("default", token),) if token else ()
    return SentinelPolicy(
        "sentinel1",
        credentials,
        {},
        RouteTable(),
        trust_on_first_use=tofu,
        open_admission=token is None,
    )


def handshake(
    policy: SentinelPolicy, identity: Identity, token: str = TOKEN, *, ephemeral: bool = False
) -> tuple[SentinelLink, NodeHandshake, object]:
    """Run the handshake through a codec, as the websocket layer would."""
    codec = Codec()
    server = SentinelLink(policy, b"n" * 32)
    client = NodeHandshake(identity, token, role="client" if ephemeral else "node")
    attach = client.receive(codec.decode(codec.encode(server.start())))
    assert isinstance(attach, Attach)
    [answer] = server.receive(codec.decode(codec.encode(attach)))
    return server, client, codec.decode(codec.encode(answer))


def test_admission_with_the_right_token() -> None:
    policy = make_policy()
    ident = Identity.generate()
    server, client, answer = handshake(policy, ident)
    assert isinstance(answer, Welcome)
    assert client.receive(answer) is None
    assert client.attached and server.attached
    assert client.path == ident.node_id
    [event] = server.events
    assert isinstance(event, Admitted)
    assert (event.node_id, event.public_key, event.path) == (
        ident.node_id,
        ident.public_key,
        ident.node_id,
    )
    assert (event.ephemeral, event.new_pin, event.principal) == (
        False,
        True,
        f"node:{ident.node_id}",
    )
    # Trust on first use enrolled it: the event says so, for the sentinel to store and log.
    assert event.enrolled is not None and event.enrolled.admits(ident.public_key, 0.0)
    assert policy.enrolled == {ident.node_id: event.enrolled}
    assert policy.pins == {ident.node_id: ident.public_key}


def test_wrong_token_is_refused_and_nothing_is_bound() -> None:
    policy = make_policy()
    server, client, answer = handshake(policy, Identity.generate(), token="wrong")
    assert isinstance(answer, Refused) and "token" in answer.reason
    assert server.should_close and not server.attached
    assert server.events == [] and policy.pins == {}
    with pytest.raises(AdmissionRefused, match="token"):
        client.receive(answer)
    # Whatever the refused peer sends next is not acted on.
    [frame] = server.receive(Bind(["x@y"]))
    assert isinstance(frame, LinkError)
    assert policy.routes.bindings() == {}


def test_stolen_node_id_is_refused() -> None:
    policy = make_policy()
    owner = Identity.generate()
    handshake(policy, owner)
    thief = Identity.generate(owner.node_id)  # same id, another key, right token
    _, _, answer = handshake(policy, thief)
    assert isinstance(answer, Refused) and "enrolled with another key" in answer.reason
    assert policy.pins[owner.node_id] == owner.public_key
    # The owner still gets in.
    _, _, again = handshake(policy, owner)
    assert isinstance(again, Welcome)


def test_forged_signature_is_refused() -> None:
    policy = make_policy()
    ident = Identity.generate()
    server = SentinelLink(policy, b"n" * 32)
    server.start()
    other = Identity.generate()
    forged = Attach(
        ident.node_id, ident.public_key, b"", other.sign(b"whatever"), "node", PROTOCOL_VERSION
    )
    [answer] = server.receive(forged)
    assert isinstance(answer, Refused) and "signature" in answer.reason


def test_replayed_attach_fails_against_a_new_nonce() -> None:
    policy = make_policy()
    ident = Identity.generate()
    first = SentinelLink(policy, b"a" * 32)
    attach = NodeHandshake(ident, TOKEN).receive(first.start())
    second = SentinelLink(policy, b"b" * 32)
    second.start()
    [answer] = second.receive(attach)
    assert isinstance(answer, Refused)


def test_open_admission_takes_any_token() -> None:
    policy = make_policy(token=None)
    _, _, answer = handshake(policy, Identity.generate(), token="", ephemeral=True)
    assert isinstance(answer, Welcome)
    # ... from clients: a node still needs its enrollment (trust on first use
    # needs a credential, and open admission has none).
    _, _, answer = handshake(policy, Identity.generate(), token="")
    assert isinstance(answer, Refused)


def test_ephemeral_nodes_are_not_pinned_and_cannot_bind() -> None:
    policy = make_policy()
    server, _, answer = handshake(policy, Identity.generate(), ephemeral=True)
    assert isinstance(answer, Welcome)
    assert policy.pins == {}
    [refused] = server.receive(Bind(["a@fame.fabric"]))
    assert isinstance(refused, BindRefused)


def test_out_of_order_frames_get_link_errors_then_close() -> None:
    server = SentinelLink(make_policy(), b"n" * 32, max_strikes=3)
    server.start()
    for frame in (Bind(["a@b"]), Ping(1)):
        [answer] = server.receive(frame)
        assert isinstance(answer, LinkError)
        assert not server.should_close
    [answer] = server.receive(Welcome("x", "y"))
    assert isinstance(answer, LinkError)
    assert server.should_close


def test_binding_conflicts_and_unbind() -> None:
    policy = make_policy()
    a, b = Identity.generate(), Identity.generate()
    link_a, _, _ = handshake(policy, a)
    link_b, _, _ = handshake(policy, b)
    link_a.events.clear()
    link_b.events.clear()
    assert link_a.receive(Bind(["x@fame.fabric", "bad address"])) == [
        Bound("x@fame.fabric"),
        BindRefused("bad address", link_a.receive(Bind(["bad address"]))[0].reason),
    ]
    assert link_a.events == [RoutesChanged(("x@fame.fabric",), ())]
    [refused] = link_b.receive(Bind(["x@fame.fabric"]))
    # Refused without naming the owner: that is another node's id.
    assert refused == BindRefused("x@fame.fabric", "x@fame.fabric is already bound to another node")
    assert link_b.events == [
        BindDenied(b.node_id, "x@fame.fabric", refused.reason, owner=a.node_id)
    ]
    # Binding again is idempotent and changes nothing to persist.
    link_a.events.clear()
    assert link_a.receive(Bind(["x@fame.fabric"])) == [Bound("x@fame.fabric")]
    assert link_a.events == []
    # B cannot unbind A's address; A can.
    assert link_b.receive(Unbind(["x@fame.fabric"])) == []
    assert policy.routes.owner("x@fame.fabric") == a.node_id
    link_a.receive(Unbind(["x@fame.fabric"]))
    assert policy.routes.owner("x@fame.fabric") is None
    assert link_b.receive(Bind(["x@fame.fabric"])) == [Bound("x@fame.fabric")]
    assert link_b.receive(Ping(7)) == [Pong(7)]


def test_node_handshake_rejects_frames_out_of_order() -> None:
    client = NodeHandshake(Identity.generate(), TOKEN)
    with pytest.raises(ProtocolError):
        client.receive(Welcome("x", "y"))
    client = NodeHandshake(Identity.generate(), TOKEN)
    client.receive(Challenge(b"n", "s", PROTOCOL_VERSION))
    with pytest.raises(ProtocolError):
        client.receive(Welcome("someone-else", "p"))


def test_binding_tracker_rebinds_everything_on_each_attach() -> None:
    tracker = BindingTracker()
    assert tracker.want("a@x") is None  # not attached: remembered only
    assert tracker.on_attached() == [Bind(["a@x"])]
    assert not tracker.settled
    tracker.receive(Bound("a@x"))
    assert tracker.settled and tracker.bound == {"a@x"}
    assert tracker.want("b@x") == Bind(["b@x"])
    tracker.receive(BindRefused("b@x", "taken"))
    assert tracker.refused == {"b@x": "taken"} and tracker.settled
    assert tracker.drop("a@x") == Unbind(["a@x"])
    tracker.on_detached()
    assert tracker.bound == set()
    assert tracker.on_attached() == [Bind(["b@x"])]


def test_binding_tracker_binds_pools_apart() -> None:
    tracker = BindingTracker()
    tracker.want("solo@x")
    tracker.want("work@x", pool=True)
    assert tracker.on_attached() == [Bind(["solo@x"]), Bind(["work@x"], pool=True)]
    assert tracker.want("more@x", pool=True) == Bind(["more@x"], pool=True)
    tracker.drop("work@x")
    assert tracker.pools == {"more@x"}


def test_route_table_pools_round_robin_over_attached_members() -> None:
    table: RouteTable[str] = RouteTable()
    assert table.bind("work@x", "n1", pool=True).changed
    assert table.bind("work@x", "n2", pool=True).changed
    assert table.bind("work@x", "n3", pool=True).changed
    assert not table.bind("work@x", "n1", pool=True).changed  # already a member
    table.link("n1", "n1", "c1")
    table.link("n3", "n3", "c3")
    # n2 is not attached: skipped, the others take turns.
    assert [table.lookup("work@x")[0] for _ in range(4)] == ["c1", "c3", "c1", "c3"]
    table.unlink("n1", "c1")
    assert [table.lookup("work@x")[0] for _ in range(2)] == ["c3", "c3"]
    table.unlink("n3", "c3")
    assert table.lookup("work@x") == (None, "n1")


def test_route_table_keeps_pools_and_exclusive_addresses_apart() -> None:
    table: RouteTable[str] = RouteTable()
    table.bind("solo@x", "n1")
    refused = table.bind("solo@x", "n2", pool=True)
    assert not refused.ok and "bound to another node alone" in refused.reason
    assert refused.owner == "n1" and "n1" not in refused.reason
    table.bind("work@x", "n1", pool=True)
    refused = table.bind("work@x", "n2")
    assert not refused.ok and "is a pool of 1 nodes" in refused.reason


def test_route_table_pool_records_survive_a_restart() -> None:
    table: RouteTable[str] = RouteTable()
    table.bind("solo@x", "n1")
    table.bind("work@x", "n1", pool=True)
    table.bind("work@x", "n2", pool=True)
    records = {address: table.record(address) for address in ("solo@x", "work@x")}
    assert records == {"solo@x": "n1", "work@x": "pool:n1,n2"}
    restored: RouteTable[str] = RouteTable()
    restored.restore({a: r for a, r in records.items() if r is not None})
    assert restored.bindings() == table.bindings()
    assert restored.pool("work@x") == ["n1", "n2"] and restored.owner("solo@x") == "n1"
    # The last member leaving removes the pool.
    assert restored.unbind("work@x", "n1") and restored.record("work@x") == "pool:n2"
    assert restored.unbind("work@x", "n2") and restored.record("work@x") is None


def test_route_table_links_and_offline_owner() -> None:
    table: RouteTable[str] = RouteTable()
    table.restore({"a@x": "n1"})
    assert table.lookup("a@x") == (None, "n1")  # bound, node offline
    assert table.lookup("zzz@x") == (None, None)
    assert table.link("n1", "n1", "conn1") is None
    assert table.lookup("a@x") == ("conn1", "n1")
    assert table.lookup("_reply@n1") == ("conn1", "n1")  # by path
    assert table.link("n1", "n1", "conn2") == "conn1"
    assert not table.unlink("n1", "conn1")  # a stale link does not remove the new one
    assert table.lookup("a@x") == ("conn2", "n1")
    assert table.unlink("n1", "conn2")
    assert table.lookup("a@x") == (None, "n1")


def test_backoff_grows_to_a_cap_with_jitter() -> None:
    delays = RECONNECT_BACKOFF.delays(rng=random.Random(7))
    first = [next(delays) for _ in range(12)]
    assert 0.05 <= first[0] <= 0.1
    for n, delay in enumerate(first[1:], start=1):
        assert 0 <= delay <= min(10.0, 0.1 * 2**n)
    later = [next(delays) for _ in range(200)]
    assert max(later) <= 10.0
    assert len(set(later)) == len(later)  # jittered: no two nodes retry in lockstep
    assert sum(later) / len(later) > 3.0  # and it did grow to the cap's range


def test_binding_tracker_settles_only_when_every_bind_was_answered() -> None:
    tracker = BindingTracker()
    tracker.on_attached()
    assert tracker.want("a@x") == Bind(["a@x"])
    assert tracker.drop("a@x") == Unbind(["a@x"])
    assert tracker.want("a@x") == Bind(["a@x"])
    tracker.receive(Bound("a@x"))  # the answer to the first Bind
    assert not tracker.settled
    tracker.receive(Bound("a@x"))
    assert tracker.settled and tracker.bound == {"a@x"}


# --- routing integrity (issue 11): reserved names, the sentinel's id, versions, token ---


def attached(
    policy: SentinelPolicy, identity: Identity | None = None, *, ephemeral: bool = False
) -> tuple[SentinelLink, Identity]:
    """A link whose node attached, and linked in the route table as the IO layer does."""
    identity = identity or Identity.generate()
    link, _, answer = handshake(policy, identity, ephemeral=ephemeral)
    assert isinstance(answer, Welcome)
    policy.routes.link(identity.node_id, identity.node_id, link)
    link.events.clear()
    return link, identity


def test_reply_addresses_cannot_be_bound_not_even_ones_own() -> None:
    policy = make_policy()
    link, me = attached(policy)
    _, other = attached(policy)
    addresses = [
        f"{REPLY_NAME}@{me.node_id}",
        f"{REPLY_NAME}@{other.node_id}",
        f"{REPLY_NAME}@{policy.sentinel_id}",
        f"{REPLY_NAME}@fame.fabric",
    ]
    answers = link.receive(Bind(addresses))
    assert answers == [
        BindRefused(address, f"{address} is reserved: {RESERVED_REPLY_REASON}")
        for address in addresses
    ]
    assert policy.routes.bindings() == {}
    assert [type(event) for event in link.events] == [BindDenied] * len(addresses)


def test_addresses_under_another_nodes_path_or_the_sentinels_cannot_be_bound() -> None:
    policy = make_policy()
    link, me = attached(policy)
    _, other = attached(policy)  # attached now
    offline = Identity.generate("storage-node")  # a custom id, pinned, not attached now
    handshake(policy, offline)
    attached(policy, Identity.generate("my-client"), ephemeral=True)  # never pinned
    stranger = Identity.generate()  # id-shaped, never seen: a node that may come later
    others = [
        f"x@{other.node_id}",
        f"x@deep.sub.{other.node_id}",
        f"admin@{policy.sentinel_id}",
        f"x@a.{policy.sentinel_id}",
        "x@storage-node",
        "x@my-client",
        f"x@{stranger.node_id}",
    ]
    answers = link.receive(Bind(others))
    # One reason for all: known node or not, the refusal tells nothing about it.
    assert answers == [
        BindRefused(address, f"{address} is reserved: {RESERVED_PATH_REASON}") for address in others
    ]
    assert policy.routes.bindings() == {}
    # Under its own path, and on ordinary paths, a node binds as before.
    mine = [f"x@{me.node_id}", f"x@sub.{me.node_id}", "x@fame.fabric", f"x@{me.node_id}.fabric"]
    assert link.receive(Bind(mine)) == [Bound(address) for address in mine]
    # Pools too.
    assert link.receive(Bind([f"p@{other.node_id}"], pool=True)) == [
        BindRefused(f"p@{other.node_id}", f"p@{other.node_id} is reserved: {RESERVED_PATH_REASON}")
    ]


def test_the_sentinels_own_id_cannot_attach() -> None:
    policy = make_policy()
    impostor = Identity.generate(policy.sentinel_id)
    server, client, answer = handshake(policy, impostor)
    assert answer == Refused("node id is reserved: it is the sentinel's own")
    assert server.should_close and server.events == [] and policy.pins == {}
    with pytest.raises(AdmissionRefused, match="reserved"):
        client.receive(answer)


def test_stored_reserved_bindings_are_recognised_for_any_binder() -> None:
    # What Sentinel.restore() drops: routes bound before names were reserved.
    policy = make_policy()
    victim = Identity.generate()
    assert reserved(Address.parse(f"{REPLY_NAME}@{victim.node_id}"), "nattacker", policy)
    assert reserved(Address.parse(f"x@{victim.node_id}"), "nattacker", policy)
    assert reserved(Address.parse(f"x@{victim.node_id}"), victim.node_id, policy) is None
    assert reserved(Address.parse("storage@fame.fabric"), "nanyone", policy) is None


def test_bind_refusals_never_name_another_node() -> None:
    policy = make_policy()
    owner_link, owner = attached(policy)
    owner_link.receive(Bind(["solo@fame.fabric"]))
    owner_link.receive(Bind(["work@fame.fabric"], pool=True))
    link, _ = attached(policy)
    answers = link.receive(Bind(["solo@fame.fabric"]))
    answers += link.receive(Bind(["solo@fame.fabric"], pool=True))
    answers += link.receive(Bind(["work@fame.fabric"]))
    assert [type(a) for a in answers] == [BindRefused] * 3
    assert not [a for a in answers if owner.node_id in a.reason]
    # The sentinel's log gets the owner, through the events.
    assert {event.owner for event in link.events if isinstance(event, BindDenied)} == {
        owner.node_id,
        None,  # a pool names no single owner
    }


@pytest.mark.parametrize("version", [0, PROTOCOL_VERSION + 1, -1, 2**63 - 1])
def test_an_attach_of_another_protocol_version_is_refused_naming_both(version: int) -> None:
    policy = make_policy()
    ident = Identity.generate()
    server = SentinelLink(policy, b"n" * 32)
    challenge = server.start()
    assert challenge.version == PROTOCOL_VERSION
    attach = NodeHandshake(ident, TOKEN).receive(challenge)
    assert attach is not None and attach.version == PROTOCOL_VERSION
    # Even with a wrong token: the version is checked first.
    other = msgspec.structs.replace(attach, version=version, proof=b"wrong")
    [answer] = server.receive(Codec().decode(Codec().encode(other)))
    assert answer == Refused(sentinel_version_mismatch(version))
    assert answer.reason == (
        f"protocol version mismatch: this sentinel speaks fame protocol version"
        f" {PROTOCOL_VERSION}, the node speaks version {version}"
    )
    assert server.should_close and policy.pins == {} and server.events == []


def test_an_attach_from_before_versioning_is_refused_naming_both() -> None:
    # The frame as fame 0.1 sent it: six elements, no version.
    policy = make_policy()
    ident = Identity.generate()
    server = SentinelLink(policy, b"n" * 32)
    challenge = server.start()
    proof = ident.sign(challenge.nonce)
    old = msgspec.msgpack.encode(["attach", ident.node_id, ident.public_key, TOKEN, proof, False])
    with pytest.raises(WireError) as bad:  # version 2 changed the attach's fields
        Codec().decode(old)
    [answer] = server.undecodable(old, bad.value.reason)
    assert answer == Refused(sentinel_version_mismatch(0))


def test_an_attach_of_another_shape_is_refused_by_its_version() -> None:
    # A later version may change the attach's fields, but not where the version is.
    policy = make_policy()
    server = SentinelLink(policy, b"n" * 32)
    server.start()
    future = msgspec.msgpack.encode(["attach", {"proof": b"x"}, 1, 2, 3, [], 7, "more"])
    with pytest.raises(WireError):
        Codec().decode(future)
    assert server.undecodable(future, "malformed") == [Refused(sentinel_version_mismatch(7))]
    assert server.should_close
    # Garbage is a plain violation, and once attached nothing is read as an attach.
    fresh = SentinelLink(policy, b"n" * 32)
    fresh.start()
    [answer] = fresh.undecodable(b"\xc1", "malformed message")
    assert answer == LinkError("malformed message") and not fresh.should_close
    link, _ = attached(policy)
    assert link.undecodable(future, "malformed") == [LinkError("malformed")]


@pytest.mark.parametrize("version", [0, PROTOCOL_VERSION + 1])
def test_a_node_refuses_a_sentinel_of_another_version_before_sending_its_token(
    version: int,
) -> None:
    client = NodeHandshake(Identity.generate(), TOKEN)
    with pytest.raises(ProtocolMismatch) as info:
        client.receive(Challenge(b"n" * 32, "s", version))
    assert (info.value.ours, info.value.theirs) == (PROTOCOL_VERSION, version)
    assert info.value.reason == (
        f"protocol version mismatch: the sentinel speaks fame protocol version {version},"
        f" this node speaks version {PROTOCOL_VERSION}"
    )
    assert isinstance(info.value, AdmissionRefused)  # the programs say it like a refusal
    assert client.state == "refused"
    # A challenge of another shape: named by its version too; garbage is a protocol error.
    future = msgspec.msgpack.encode(["challenge", [b"nonce"], {"id": 1}, 9])
    with pytest.raises(ProtocolMismatch, match="version 9"):
        NodeHandshake(Identity.generate(), TOKEN).undecodable(future, "malformed")
    with pytest.raises(ProtocolError, match="bad frame from the sentinel: malformed"):
        NodeHandshake(Identity.generate(), TOKEN).undecodable(b"\xc1", "malformed")


def test_the_token_is_never_sent_and_every_credential_is_checked_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(credentials_module.hmac, "compare_digest", spy)
    policy = make_policy()
    policy.credentials = (ClientCredential("old", "s3cret-old"), ClientCredential("default", TOKEN))
    server = SentinelLink(policy, b"n" * 32)
    attach = NodeHandshake(Identity.generate(), "s3creX", role="client").receive(server.start())
    assert attach is not None
    assert b"s3creX" not in Codec().encode(attach)  # only an HMAC of the nonce travels
    [answer] = server.receive(attach)
    assert answer == Refused("wrong client credential: the admission token is not valid here")
    # One constant-time comparison per credential, whichever matched (none here).
    assert len(seen) == 2 and all(len(a) == len(b) == 32 for a, b in seen)
    # Tokens that are not ASCII are refused, not a crash; the right one gets in.
    for token in ("s3cr\u00e9t", "\u2603" * 40):
        _, _, answer = handshake(policy, Identity.generate(), token=token, ephemeral=True)
        assert isinstance(answer, Refused)
    _, _, answer = handshake(policy, Identity.generate(), ephemeral=True)
    assert isinstance(answer, Welcome)


def test_a_challenge_that_repeats_a_trusted_key_costs_one_verification(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fake server lists the trusted key thousands of times with bad signatures.
    trusted = Identity.generate()
    nonce = b"n" * 32
    checked: list[bytes] = []
    real = node_handshake_module.verify_signature

    def spy(key: bytes, signature: bytes, payload: bytes) -> bool:
        checked.append(key)
        return real(key, signature, payload)

    monkeypatch.setattr(node_handshake_module, "verify_signature", spy)
    spam = Challenge(nonce, "s", PROTOCOL_VERSION, [trusted.public_key] * 5000, [b"x" * 64] * 5000)
    client = NodeHandshake(Identity.generate(), TOKEN, sentinel_keys=[trusted.public_key])
    with pytest.raises(UntrustedSentinel):
        client.receive(spam)
    assert checked == [trusted.public_key]
    # The genuine signature, after the first MAX_CHALLENGE_KEYS pairs, is not looked at either.
    genuine = trusted.sign(challenge_payload(nonce, "s", PROTOCOL_VERSION))
    late = Challenge(
        nonce,
        "s",
        PROTOCOL_VERSION,
        [Identity.generate().public_key] * MAX_CHALLENGE_KEYS + [trusted.public_key],
        [b"x" * 64] * MAX_CHALLENGE_KEYS + [genuine],
    )
    with pytest.raises(UntrustedSentinel):
        NodeHandshake(Identity.generate(), TOKEN, sentinel_keys=[trusted.public_key]).receive(late)
    # First among them, it is accepted.
    first = Challenge(nonce, "s", PROTOCOL_VERSION, [trusted.public_key], [genuine])
    client = NodeHandshake(Identity.generate(), TOKEN, sentinel_keys=[trusted.public_key])
    assert isinstance(client.receive(first), Attach)
