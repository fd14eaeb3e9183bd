"""Property tests of the wire codec: every frame round trips, bad input is a WireError."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fame._wire import _schema as wire
from fame.errors import WireError

# Values msgpack carries unchanged (lists, not tuples; no NaN, which is != itself).
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
text = st.text(max_size=30)
small_ints = st.integers(min_value=0, max_value=2**62)
optional_text = st.none() | text

requests = st.builds(
    wire.Request,
    op=text,
    args=st.dictionaries(st.text(max_size=10), values, max_size=4),
    stream=st.booleans(),
    credit=small_ints,
    timeout_ms=st.none() | small_ints,
)
frames: st.SearchStrategy[Any] = st.one_of(
    requests,
    st.builds(wire.Reply, result=values),
    st.builds(wire.StreamItem, item=values),
    st.builds(wire.StreamEnd),
    st.builds(wire.Credit, n=small_ints),
    st.builds(wire.Cancel, reason=text),
    st.builds(wire.Error, kind=text, message=text, actor=optional_text, exc_type=optional_text),
)
envelopes = st.builds(
    wire.Envelope,
    hops=st.integers(min_value=0, max_value=wire.MAX_HOPS),
    to=text,
    id=small_ints,
    frame=frames,
    reply_to=optional_text,
    corr=st.none() | small_ints,
)
link_frames: st.SearchStrategy[Any] = st.one_of(
    st.builds(
        wire.Challenge,
        nonce=st.binary(max_size=32),
        sentinel_id=text,
        keys=st.lists(st.binary(max_size=32), max_size=2),
        signatures=st.lists(st.binary(max_size=64), max_size=2),
    ),
    st.builds(
        wire.Attach,
        node_id=text,
        public_key=st.binary(max_size=32),
        proof=st.binary(max_size=32),
        signature=st.binary(max_size=64),
        role=text,
    ),
    st.builds(wire.Welcome, node_id=text, path=text),
    st.builds(wire.Refused, reason=text),
    st.builds(wire.Bind, addresses=st.lists(text, max_size=4), pool=st.booleans()),
    st.builds(wire.Bound, address=text),
    st.builds(wire.BindRefused, address=text, reason=text),
    st.builds(wire.Unbind, addresses=st.lists(text, max_size=4)),
    st.builds(wire.Ping, nonce=small_ints),
    st.builds(wire.Pong, nonce=small_ints),
    st.builds(wire.LinkError, reason=text),
)

codec = wire.Codec(max_size=1 << 16)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes)
def test_envelope_round_trip(envelope: wire.Envelope) -> None:
    data = codec.encode(envelope)
    decoded = codec.decode(data)
    assert decoded == envelope
    assert isinstance(decoded, wire.Envelope)
    assert type(decoded.frame) is type(envelope.frame)


@settings(max_examples=200)
@given(link_frames)
def test_link_frame_round_trip(frame: Any) -> None:
    data = codec.encode(frame)
    assert codec.decode(data) == frame
    # A router decodes link frames whole.
    assert codec.decode_header(data) == frame


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes)
def test_routing_header_reads_only_the_head(envelope: wire.Envelope) -> None:
    header = codec.decode_header(codec.encode(envelope))
    assert isinstance(header, wire.RoutingHeader)
    assert (header.hops, header.to, header.id, header.reply_to, header.corr) == (
        envelope.hops,
        envelope.to,
        envelope.id,
        envelope.reply_to,
        envelope.corr,
    )
    # The frame stays undecoded bytes, exactly the frame's own encoding.
    assert bytes(header.frame) == msgspec.msgpack.encode(envelope.frame)
    assert wire.frame_tag(header.frame) == type(envelope.frame).__struct_config__.tag


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes)
def test_bump_hops_increments_in_place_until_the_limit(envelope: wire.Envelope) -> None:
    data = codec.encode(envelope)
    if envelope.hops < wire.MAX_HOPS:
        bumped = wire.bump_hops(data)
        assert len(bumped) == len(data)
        assert codec.decode(bumped) == msgspec.structs.replace(envelope, hops=envelope.hops + 1)
    else:
        with pytest.raises(WireError, match="hop limit"):
            wire.bump_hops(data)


@settings(max_examples=100)
@given(link_frames)
def test_bump_hops_rejects_link_frames(frame: Any) -> None:
    with pytest.raises(WireError, match="not an encoded envelope"):
        wire.bump_hops(codec.encode(frame))


def test_decode_header_rejects_out_of_range_hops() -> None:
    envelope = wire.Envelope(wire.MAX_HOPS + 1, "a@b", 1, wire.StreamEnd())
    with pytest.raises(WireError, match="hop count") as info:
        codec.decode_header(codec.encode(envelope))
    assert str(wire.MAX_HOPS + 1) in info.value.reason


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes_decode_to_a_message_or_a_wire_error(data: bytes) -> None:
    for decode in (codec.decode, codec.decode_header):
        try:
            message = decode(data)
        except WireError as exc:
            assert exc.reason
            assert str(exc) == exc.reason
        else:
            assert isinstance(message, wire.LinkMessage | wire.RoutingHeader)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes, st.data())
def test_truncated_or_corrupted_messages_raise_wire_error(
    envelope: wire.Envelope, data: st.DataObject
) -> None:
    encoded = codec.encode(envelope)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(WireError, match="malformed"):
        codec.decode(encoded[:cut])
    index = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    flipped = bytearray(encoded)
    flipped[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    try:
        codec.decode(bytes(flipped))
    except WireError as exc:
        assert exc.reason


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=65, max_size=300))
def test_oversized_input_is_refused_before_decoding(data: bytes) -> None:
    small = wire.Codec(max_size=64)
    for decode in (small.decode, small.decode_header):
        with pytest.raises(WireError) as info:
            decode(data)
        assert info.value.reason == (f"message of {len(data)} bytes exceeds the limit of 64 bytes")


def test_oversized_message_is_refused_on_encode() -> None:
    small = wire.Codec(max_size=64)
    big = wire.Envelope(0, "a@b", 1, wire.Reply("x" * 100))
    with pytest.raises(WireError, match=r"exceeds the limit of 64 bytes"):
        small.encode(big)
    # The same message fits a larger codec and round trips.
    assert codec.decode(codec.encode(big)) == big


def test_unencodable_value_is_a_wire_error() -> None:
    message = wire.Envelope(0, "a@b", 1, wire.Reply(object()))
    with pytest.raises(WireError, match="cannot encode Envelope") as info:
        codec.encode(message)
    assert "object" in info.value.reason


def test_non_binary_input_is_a_wire_error() -> None:
    with pytest.raises(WireError, match="expected a binary message, got str"):
        codec.decode("not bytes")  # type: ignore[arg-type]


def test_wrong_shape_names_the_problem() -> None:
    data = msgspec.msgpack.encode(["ping", "not an int"])
    with pytest.raises(WireError, match="malformed message") as info:
        codec.decode(data)
    assert "int" in info.value.reason
    with pytest.raises(WireError, match="malformed message"):
        codec.decode(msgspec.msgpack.encode(["no-such-tag"]))


def test_codec_needs_a_sane_limit() -> None:
    with pytest.raises(ValueError, match="at least 64"):
        wire.Codec(max_size=10)


def _nested(depth: int) -> Any:
    value: Any = None
    for _ in range(depth):
        value = [value]
    return value


def test_deeply_nested_messages_are_wire_errors() -> None:
    with pytest.raises(WireError, match="cannot encode Envelope"):
        codec.encode(wire.Envelope(0, "a@b", 1, wire.Reply(_nested(100_000))))
    big = wire.Codec(max_size=1 << 20)
    header = b"\x97\xa1e\x00\xa3a@b\x01"  # an envelope's tag, hops, to and id
    deep_result = header + b"\x92\xa3rep" + b"\x91" * 200_000 + b"\xc0"
    for decode in (big.decode, big.decode_header):
        with pytest.raises(WireError, match="malformed message"):
            decode(deep_result)
        with pytest.raises(WireError, match="malformed message"):
            decode(b"\x91" * 200_000)
