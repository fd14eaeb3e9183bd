"""The frame meter (sans-IO): what a peer's unfinished websocket message holds.

Frames are made by wsproto as a real client makes them (masked, with
16- and 64-bit lengths, fragmented, pings between fragments), then fed
to the meter in pieces of every size, down to one byte at a time.
"""

from __future__ import annotations

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request
from wsproto.frame_protocol import FrameProtocol

from fame._fabric._frame_meter import FrameMeter


class Client:
    """Frames as a websocket client sends them (masked), by wsproto."""

    def __init__(self) -> None:
        self.frames = FrameProtocol(client=True, extensions=[])

    def data(self, payload: bytes | str, *, fin: bool = True) -> bytes:
        return bytes(self.frames.send_data(payload, fin))

    def ping(self, payload: bytes) -> bytes:
        return bytes(self.frames.ping(payload))


def client() -> tuple[Client, bytes]:
    """A websocket client and the upgrade request it sends first."""
    head = WSConnection(ConnectionType.CLIENT).send(Request(host="127.0.0.1", target="/"))
    return Client(), head


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 125, 126, 4096, 1 << 20])
def test_held_bytes_follow_a_fragmented_message_with_pings_between(size: int) -> None:
    ws, head = client()
    meter = FrameMeter(http_head=True)
    for piece in pieces(head, size):
        assert meter.feed(piece) == 0
    # Three fragments: 100 bytes (7-bit length), 300 (16-bit), 70,000 (64-bit).
    first = ws.data(b"a" * 100, fin=False)
    ping = ws.ping(b"are you there")
    second = ws.data(b"b" * 300, fin=False)
    last = ws.data(b"c" * 70_000)
    held_after = []
    for frame in (first, ping, second, ping, last):
        for piece in pieces(frame, size):
            meter.feed(piece)
        held_after.append(meter.held)
    assert held_after == [100, 100, 400, 400, 0]
    # The next message starts from zero.
    meter.feed(ws.data("é" * 10, fin=False))
    assert meter.held == 20


def test_held_bytes_count_what_arrived_not_what_a_header_announces() -> None:
    meter = FrameMeter()
    # FIN + binary, masked, 64-bit length of 2**62, zero mask: 10 bytes of it arrive.
    header = b"\x82\xff" + (1 << 62).to_bytes(8, "big") + b"\x00" * 4
    assert meter.feed(header) == 0
    assert meter.feed(b"x" * 10) == 10
    assert meter.feed(b"y" * 5) == 15


def test_a_partial_frame_header_waits_for_its_bytes() -> None:
    ws, _ = client()
    frame = ws.data(b"z" * 1000)  # 2 + 2 + 4 header bytes, then 1000
    meter = FrameMeter()
    for i in range(8):
        assert meter.feed(frame[i : i + 1]) == 0
    assert meter.feed(frame[8:508]) == 500
    assert meter.feed(frame[508:]) == 0


def test_empty_frames_and_a_head_split_at_its_blank_line() -> None:
    ws, head = client()
    meter = FrameMeter(http_head=True)
    # The blank line that ends the request is split across reads, and the first
    # frame comes in the same read as its end.
    meter.feed(head[:-3])
    meter.feed(head[-3:-1])
    opening = ws.data(b"", fin=False)
    more = ws.data(b"12345", fin=False)
    assert meter.feed(head[-1:] + opening + more) == 5
    assert meter.feed(ws.data(b"")) == 0


def test_without_a_head_bytes_before_the_frames_are_not_skipped() -> None:
    ws, _ = client()
    meter = FrameMeter(http_head=True)
    meter.feed(b"GET / HTTP/1.1\r\nHost: x\r\n")  # no blank line yet: still the head
    assert meter.feed(ws.data(b"q" * 50, fin=False)) == 0
