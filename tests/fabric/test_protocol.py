"""The attach handshake and binding state machines, without sockets."""

from __future__ import annotations

import random

import pytest

from fame import AdmissionRefused
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
from fame._protocol._identity import Identity
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
)
from fame.errors import ProtocolError

TOKEN = "s3cret"


def make_policy(token: str | None = TOKEN) -> SentinelPolicy:
    return SentinelPolicy("sentinel1", token, {}, RouteTable())


def handshake(
    policy: SentinelPolicy, identity: Identity, token: str = TOKEN, *, ephemeral: bool = False
) -> tuple[SentinelLink, NodeHandshake, object]:
    """Run the handshake through a codec, as the websocket layer would."""
    codec = Codec()
    server = SentinelLink(policy, b"n" * 32)
    client = NodeHandshake(identity, token, ephemeral=ephemeral)
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
    assert event == Admitted(ident.node_id, ident.public_key, ident.node_id, False, True)
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
    assert isinstance(answer, Refused) and "pinned" in answer.reason
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
        ident.node_id, ident.public_key, TOKEN, other.sign(b"whatever"), False, PROTOCOL_VERSION
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
    _, _, answer = handshake(make_policy(token=None), Identity.generate(), token="")
    assert isinstance(answer, Welcome)


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
