"""Per-principal quotas, sans IO: counted when forwarded, uncounted every way a request ends."""

from __future__ import annotations

import msgspec
import pytest

from fame._protocol import SentinelPolicy
from fame._protocol._authz import Principal
from fame._protocol._credentials import ClientCredential
from fame._protocol._identity import Identity
from fame._protocol._inflight import InflightRequests
from fame._protocol._quotas import PrincipalUsage, Quotas
from fame._protocol._route_table import RouteTable
from fame._protocol._routing import Forward, ReplyError, Routing
from fame._wire._schema import (
    Bind,
    BindRefused,
    Bound,
    Codec,
    Envelope,
    Refused,
    Reply,
    Request,
    RoutingHeader,
    Unbind,
    Welcome,
    request_head,
)

from .test_protocol import handshake
from .test_routing import Link, header

CODEC = Codec()
BULK = Principal("client", "bulk", "nbulk")
OTHER = Principal("client", "other", "nother")


def test_usage_counts_and_uncounts_requests_and_streams() -> None:
    usage = PrincipalUsage()
    usage.count("client:a", stream=False)
    usage.count("client:a", stream=True)
    assert (usage.requests, usage.streams) == ({"client:a": 2}, {"client:a": 1})
    usage.uncount("client:a", stream=True)
    usage.uncount("client:a", stream=False)
    assert (usage.requests, usage.streams) == ({}, {})  # nothing left behind per principal
    usage.add_queued("client:a", 10)
    usage.add_queued("client:a", -10)
    assert usage.queued == {}


def test_each_quota_refuses_with_its_name_value_and_setting() -> None:
    quotas = Quotas(requests_in_flight=2, streams=1, bytes_queued=100)
    usage = PrincipalUsage()
    assert usage.refusal("client:a", quotas, stream=True) is None
    usage.count("client:a", stream=True)
    reason = usage.refusal("client:a", quotas, stream=True)
    assert reason is not None
    assert "client:a" in reason and "streams = 1" in reason and "FAME_QUOTA_STREAMS" in reason
    assert usage.refusal("client:a", quotas, stream=False) is None  # a plain call still fits
    usage.count("client:a", stream=False)
    reason = usage.refusal("client:a", quotas, stream=False)
    assert reason is not None and "requests_in_flight = 2" in reason and "nothing ran" in reason
    assert usage.refusal("client:b", quotas, stream=True) is None  # others are unaffected
    usage.add_queued("client:b", 100)
    reason = usage.refusal("client:b", quotas, stream=False)
    assert reason is not None and "FAME_QUOTA_BYTES_QUEUED" in reason


def test_quotas_are_validated() -> None:
    with pytest.raises(ValueError):
        Quotas(requests_in_flight=0)
    defaults = Quotas()
    # 4 client processes x 512 callers on one credential must fit.
    assert defaults.requests_in_flight > 2048


def test_the_inflight_table_uncounts_a_request_every_way_it_ends() -> None:
    table: InflightRequests[str] = InflightRequests(limit=2)
    usage = table.usage
    # answered
    table.forwarded("srv", "_reply@c", 1, caller="c", principal="client:a")
    table.forwarded("srv", "_reply@c", 1, caller="c", principal="client:a")  # a credit: once
    assert usage.requests == {"client:a": 1}
    table.finished("srv", "_reply@c", 1)
    assert usage.requests == {}
    # lost with the serving link
    table.forwarded("srv", "_reply@c", 2, caller="c", principal="client:a", stream=True)
    table.lost("srv")
    assert (usage.requests, usage.streams) == ({}, {})
    # abandoned by the caller's link
    table.forwarded("srv", "_reply@c", 3, caller="c", principal="client:a", stream=True)
    assert table.abandoned("c")
    assert (usage.requests, usage.streams) == ({}, {})
    # dropped past the table's limit
    for corr in range(4, 8):
        table.forwarded("srv", "_reply@c", corr, caller="c", principal="client:a")
    assert usage.requests == {"client:a": 2}


def test_request_head_reads_the_operation_and_the_flag_without_the_arguments() -> None:
    def frame(request: Request) -> msgspec.Raw:
        return header(Envelope(0, "a@b", 1, request, "_reply@c", 1)).frame

    assert request_head(frame(Request("count", {"big": "x" * 1000}, stream=True))) == (
        "count",
        True,
    )
    assert request_head(frame(Request("say", {"text": "hi"}))) == ("say", False)


def _routing(quotas: Quotas) -> tuple[Routing[Link], Link, Link, Link]:
    routing: Routing[Link] = Routing("nsentinel", lambda _: False, quotas)
    bulk, other, server = Link("bulk"), Link("other"), Link("server")
    for node_id, link in (("nbulk", bulk), ("nother", other), ("nserver", server)):
        routing.routes.link(node_id, node_id, link)
    assert routing.routes.bind("svc@fame.fabric", "nserver").ok
    return routing, bulk, other, server


def _call(corr: int, reply_to: str, *, stream: bool = False) -> RoutingHeader:
    return header(Envelope(0, "svc@fame.fabric", 1, Request("op", {}, stream), reply_to, corr))


def test_a_principal_past_its_in_flight_quota_is_refused_and_others_are_not() -> None:
    routing, bulk, other, server = _routing(Quotas(requests_in_flight=2))
    for corr in (1, 2):
        action = routing.decide(bulk, "_reply@nbulk", _call(corr, "_reply@nbulk"), BULK)
        assert action == Forward(server, "nserver", stamp=True)
    refused = routing.decide(bulk, "_reply@nbulk", _call(3, "_reply@nbulk"), BULK)
    assert isinstance(refused, ReplyError) and refused.kind == "quota_exceeded"
    assert "client:bulk" in refused.message and "requests_in_flight" in refused.message
    assert routing.inflight.link_of("_reply@nbulk", 3) is None  # nothing went anywhere
    action = routing.decide(other, "_reply@nother", _call(1, "_reply@nother"), OTHER)
    assert isinstance(action, Forward)
    # An answer frees a place.
    reply = header(Envelope(0, "_reply@nbulk", 2, Reply(None), None, 1))
    assert routing.decide(server, "_reply@nserver", reply) == Forward(bulk, None)
    action = routing.decide(bulk, "_reply@nbulk", _call(4, "_reply@nbulk"), BULK)
    assert isinstance(action, Forward)


def test_open_streams_have_their_own_quota() -> None:
    routing, bulk, _, _ = _routing(Quotas(streams=1))
    first = routing.decide(bulk, "_reply@nbulk", _call(1, "_reply@nbulk", stream=True), BULK)
    assert isinstance(first, Forward)
    second = routing.decide(bulk, "_reply@nbulk", _call(2, "_reply@nbulk", stream=True), BULK)
    assert isinstance(second, ReplyError) and second.kind == "quota_exceeded"
    assert "streams" in second.message
    plain = routing.decide(bulk, "_reply@nbulk", _call(3, "_reply@nbulk"), BULK)
    assert isinstance(plain, Forward)
    server = routing.inflight.link_of("_reply@nbulk", 1)
    assert server is not None
    routing.inflight.lost(server)
    assert routing.usage.streams == {}


def test_one_link_gets_only_its_share_and_the_others_of_its_principal_keep_theirs() -> None:
    # Every fame-client holds client:default: a greedy process must not spend
    # the quota the others of its principal need.
    routing, bulk, other, server = _routing(
        Quotas(requests_in_flight=10, requests_in_flight_per_link=2, streams_per_link=1)
    )
    same = Principal("client", "bulk", "nother")  # a second process of the same principal
    for corr in (1, 2):
        assert isinstance(
            routing.decide(bulk, "_reply@nbulk", _call(corr, "_reply@nbulk"), BULK), Forward
        )
    busy = routing.decide(bulk, "_reply@nbulk", _call(3, "_reply@nbulk"), BULK)
    assert isinstance(busy, ReplyError) and busy.kind == "overloaded"  # backpressure: retried
    assert "requests_in_flight_per_link = 2" in busy.message and "nothing ran" in busy.message
    assert routing.inflight.link_of("_reply@nbulk", 3) is None
    stream = routing.decide(other, "_reply@nother", _call(1, "_reply@nother", stream=True), same)
    assert isinstance(stream, Forward)
    second = routing.decide(other, "_reply@nother", _call(2, "_reply@nother", stream=True), same)
    assert isinstance(second, ReplyError) and second.kind == "overloaded"
    assert "streams_per_link = 1" in second.message
    assert isinstance(
        routing.decide(other, "_reply@nother", _call(3, "_reply@nother"), same), Forward
    )
    assert routing.usage.requests == {"client:bulk": 4}
    # An answer gives the link its place back; a lost link gives back all it held.
    reply = header(Envelope(0, "_reply@nbulk", 2, Reply(None), None, 1))
    assert routing.decide(server, "_reply@nserver", reply) == Forward(bulk, None)
    assert routing.inflight.caller_usage(bulk) == (1, 0)
    assert isinstance(routing.decide(bulk, "_reply@nbulk", _call(4, "_reply@nbulk"), BULK), Forward)
    routing.inflight.lost(server)
    assert routing.inflight.caller_usage(bulk) == (0, 0)
    assert routing.inflight.caller_usage(other) == (0, 0)
    assert routing.usage.requests == {}


def _policy(quotas: Quotas) -> SentinelPolicy:
    return SentinelPolicy(
        "sentinel1",
        (ClientCredential("default", "s3cret"),),
        {},
        RouteTable(),
        trust_on_first_use=True,
        quotas=quotas,
    )


def test_a_node_past_its_bindings_quota_is_refused_with_the_reason() -> None:
    policy = _policy(Quotas(bindings=2))
    ident = Identity.generate()
    link, _, _ = handshake(policy, ident)
    answers = link.receive(Bind(["a@fame.fabric", "b@fame.fabric", "c@fame.fabric"]))
    assert answers[:2] == [Bound("a@fame.fabric"), Bound("b@fame.fabric")]
    [refused] = answers[2:]
    assert isinstance(refused, BindRefused) and refused.address == "c@fame.fabric"
    assert "bindings = 2" in refused.reason and "FAME_QUOTA_BINDINGS" in refused.reason
    assert policy.routes.held(ident.node_id) == 2
    # What it holds already it may bind again; unbinding frees a place.
    assert link.receive(Bind(["a@fame.fabric"])) == [Bound("a@fame.fabric")]
    link.receive(Unbind(["a@fame.fabric"]))
    assert link.receive(Bind(["c@fame.fabric"])) == [Bound("c@fame.fabric")]
    # Another node has its own quota.
    other, _, _ = handshake(policy, Identity.generate())
    assert other.receive(Bind(["d@fame.fabric"])) == [Bound("d@fame.fabric")]


def test_restored_and_pooled_bindings_count_too() -> None:
    routes: RouteTable[object] = RouteTable()
    routes.restore({"a@x.y": "n1", "p@x.y": "pool:n1,n2"})
    assert (routes.held("n1"), routes.held("n2")) == (2, 1)
    assert routes.bind("q@x.y", "n2", pool=True).ok
    assert routes.held("n2") == 2
    routes.unbind("p@x.y", "n1")
    assert routes.held("n1") == 1


def test_trust_on_first_use_enrolls_no_node_past_the_cap() -> None:
    policy = _policy(Quotas(enrolled_nodes=1))
    _, _, first = handshake(policy, Identity.generate())
    assert isinstance(first, Welcome)
    link, _, refused = handshake(policy, Identity.generate())
    assert isinstance(refused, Refused) and "enrolled_nodes = 1" in refused.reason
    assert link.should_close and len(policy.enrolled) == 1 and len(policy.pins) == 1
