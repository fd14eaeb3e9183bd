"""Hostile input to a live sentinel: errors for the sender, nothing for anyone else."""

from __future__ import annotations

import msgspec
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, open_websocket_url

from fame._fabric._client import connect
from fame._protocol import NodeHandshake
from fame._protocol._identity import Identity
from fame._wire._schema import (
    MAX_HOPS,
    Attach,
    Batch,
    Bind,
    Challenge,
    Codec,
    Envelope,
    LinkError,
    Ping,
    Request,
    Welcome,
)

from .conftest import Fabric
from .fabric_agents import Echo

codec = Codec()

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)

valid_envelope = codec.encode(
    Envelope(0, "echo@fame.fabric", 1, Request("say", {"text": "x"}), "_reply@nowhere", 1)
)

garbage = st.one_of(
    st.binary(max_size=200),
    msgpack_values.map(msgspec.msgpack.encode),
    # Link frames of the wrong kind or at the wrong time.
    st.sampled_from(
        [
            codec.encode(Bind(["echo@fame.fabric"])),
            codec.encode(Welcome("x", "y")),
            codec.encode(Challenge(b"n", "s")),
            codec.encode(Ping(1)),
            codec.encode(Attach("n1", b"k" * 32, "wrong", b"s" * 64)),
            valid_envelope,
            # Batches: nested, holding garbage, holding a frame out of order.
            codec.encode(Batch([codec.encode(Batch([valid_envelope]))])),
            codec.encode(Batch([b"\xc1", b"", valid_envelope[:5]])),
            codec.encode(Batch([codec.encode(Welcome("x", "y")), valid_envelope])),
        ]
    ),
    # Envelopes cut short, with a bad tag, or with an impossible hop count.
    st.integers(min_value=1, max_value=len(valid_envelope) - 1).map(lambda n: valid_envelope[:n]),
    st.just(valid_envelope[:3] + bytes([MAX_HOPS + 1]) + valid_envelope[4:]),
    st.just(valid_envelope[:1] + b"\xa1x" + valid_envelope[3:]),
    # Over the codec's 1 MiB limit (under the websocket limit: gets an error, not a bare close).
    st.just(b"\x00" * (codec.max_size + 1)),
)


async def send_garbage(url: str, token: str | None, messages: list[bytes | str]) -> None:
    """Send ``messages`` raw; with a ``token``, first attach properly (an admitted peer)."""
    try:
        async with open_websocket_url(url) as ws:
            challenge = codec.decode(await ws.get_message())
            if token is not None:
                handshake = NodeHandshake(Identity.generate(), token, role="client")
                await ws.send_message(codec.encode(handshake.receive(challenge)))  # type: ignore[arg-type]
                assert type(codec.decode(await ws.get_message())) is Welcome
            for message in messages:
                await ws.send_message(message)
    except ConnectionClosed:
        pass  # closed after repeated violations: expected


async def test_garbage_frames_do_not_hurt_the_sentinel_or_other_links(fabric: Fabric) -> None:
    sentinel, url = fabric.sentinel()
    fabric.node(url)
    calls = 0
    examples: list[list[bytes | str]] = []

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(st.booleans(), st.lists(garbage | st.text(max_size=30), min_size=1, max_size=8))
    def attack(admitted: bool, messages: list[bytes | str]) -> None:
        examples.append(messages)
        trio.run(send_garbage, url, fabric.token if admitted else None, messages)
        assert sentinel.proc.poll() is None

    async with connect(url, token=fabric.token) as client:
        echo = client.proxy("echo@fame.fabric", Echo)
        done = trio.Event()

        async def keep_calling() -> None:
            nonlocal calls
            while not done.is_set():
                assert await echo.say(text=str(calls)) == str(calls)
                calls += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_calling)
            await trio.to_thread.run_sync(attack)
            done.set()
        # The legitimate client kept working throughout and still does.
        assert calls > 0
        assert len(examples) >= 150
        items = [item["i"] async for item in echo.count(up_to=100)]
        assert items == list(range(100))
    assert sentinel.proc.poll() is None
    # Every bad input was handled as such, none reached the last-resort handler.
    assert not [line for line in sentinel.err if "Traceback" in line], "\n".join(sentinel.err)


async def test_bad_frames_get_link_errors_then_a_close(fabric: Fabric) -> None:
    _, url = fabric.sentinel()
    async with open_websocket_url(url) as ws:
        assert type(codec.decode(await ws.get_message())) is Challenge
        answers = []
        for junk in (b"\xc1", b"not msgpack at all", codec.encode(Bind(["a@b"]))):
            await ws.send_message(junk)
            answers.append(codec.decode(await ws.get_message()))
        assert all(type(a) is LinkError for a in answers)
        assert "malformed" in answers[0].reason  # type: ignore[union-attr]
        closed = False
        try:
            with trio.fail_after(30):
                await ws.get_message()
        except ConnectionClosed:
            closed = True
        assert closed
