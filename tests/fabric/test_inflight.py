"""The sentinel's table of forwarded, unanswered requests, without sockets."""

from __future__ import annotations

import msgspec
import pytest

from fame._protocol._inflight import InflightRequests
from fame._wire._schema import (
    FINAL_FRAME_TAGS,
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
    WireError,
    frame_tag,
)


def test_a_lost_link_returns_exactly_its_unanswered_requests() -> None:
    table: InflightRequests[str] = InflightRequests()
    table.forwarded("agent", "_reply@client1", 1)
    table.forwarded("agent", "_reply@client1", 2)
    table.forwarded("agent", "_reply@client2", 1)
    table.forwarded("other", "_reply@client1", 3)
    table.finished("agent", "_reply@client1", 2)
    table.finished("agent", "_reply@nobody", 9)  # unknown: ignored

    assert table.waiting("agent") == 2
    assert sorted(table.lost("agent")) == [("_reply@client1", 1), ("_reply@client2", 1)]
    assert table.lost("agent") == []  # forgotten with the link
    assert table.lost("other") == [("_reply@client1", 3)]


def test_the_table_is_bounded_per_link_dropping_the_oldest() -> None:
    table: InflightRequests[str] = InflightRequests(limit=3)
    for corr in range(10):
        table.forwarded("agent", "_reply@c", corr)
    assert table.waiting("agent") == 3
    assert table.lost("agent") == [("_reply@c", 7), ("_reply@c", 8), ("_reply@c", 9)]


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        InflightRequests(limit=0)


@pytest.mark.parametrize(
    ("frame", "tag"),
    [
        (Request("op", {"x": 1}), "req"),
        (Reply({"a": [1, 2]}), "rep"),
        (StreamItem(1), "item"),
        (StreamEnd(), "end"),
        (Credit(4), "credit"),
        (Cancel("bye"), "cancel"),
        (Error("no_route", "gone"), "err"),
    ],
)
def test_the_routing_header_carries_the_frame_tag_and_the_caller(frame: object, tag: str) -> None:
    codec = Codec()
    data = codec.encode(Envelope(3, "a@b", 7, frame, "_reply@n1", 42))  # type: ignore[arg-type]
    head = codec.decode_header(data)
    assert isinstance(head, RoutingHeader)
    assert (head.hops, head.to, head.id, head.reply_to, head.corr) == (3, "a@b", 7, "_reply@n1", 42)
    assert frame_tag(head.frame) == tag
    assert (tag in FINAL_FRAME_TAGS) == (tag in ("rep", "end", "err"))


def test_a_malformed_frame_tag_is_a_wire_error() -> None:
    with pytest.raises(WireError):
        frame_tag(msgspec.Raw(b"\xc1"))
