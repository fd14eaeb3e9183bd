"""A websocket client written by hand on a TCP socket, for attackers that break the rules.

trio-websocket will not send half a frame, hold an upgrade open without a
reader, or connect from a chosen source address; an attacker does all of
these. :class:`RawWebsocket` speaks just enough of RFC 6455 for that: the
HTTP upgrade, whole binary messages both ways (client frames masked with a
zero key, so the payload goes out as is), and :meth:`RawWebsocket.send_unfinished`,
which announces a frame of ``length`` bytes and sends only part of it.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import trio

from fame._protocol import NodeHandshake
from fame._protocol._identity import Identity
from fame._wire._schema import Welcome

from .hostile_frames import codec

CHUNK = 64 * 1024


class PeerClosed(Exception):
    """The sentinel closed the socket (or sent a websocket close)."""


def upgrade_request(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def frame_header(length: int) -> bytes:
    """The header of one final, masked (key 0) binary frame of ``length`` bytes."""
    if length < 126:
        size = bytes((0x80 | length,))
    elif length < 1 << 16:
        size = bytes((0x80 | 126,)) + length.to_bytes(2, "big")
    else:
        size = bytes((0x80 | 127,)) + length.to_bytes(8, "big")
    return b"\x82" + size + b"\x00\x00\x00\x00"


class RawWebsocket:
    """One client websocket on a raw :class:`trio.SocketStream`."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.sent = 0  # bytes written to the socket, upgrade request included

    @classmethod
    async def open(cls, port: int, local_address: str | None = None) -> tuple[RawWebsocket, int]:
        """Connect and ask for the upgrade; the socket and the HTTP status (101: upgraded)."""
        stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=local_address)
        ws = cls(stream)
        try:
            await ws.send_raw(upgrade_request(port))
            head = await ws._read_until(b"\r\n\r\n")
        except BaseException:
            await ws.aclose()
            raise
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
        return ws, status

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self.stream.aclose()

    async def send_raw(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise PeerClosed from exc
        self.sent += len(data)

    async def _fill(self) -> None:
        try:
            chunk = await self.stream.receive_some(CHUNK)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise PeerClosed from exc
        if not chunk:
            raise PeerClosed
        self.buffer += chunk

    async def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            await self._fill()
        end = self.buffer.index(marker) + len(marker)
        head = bytes(self.buffer[:end])
        del self.buffer[:end]
        return head

    async def _read_exact(self, count: int) -> bytes:
        while len(self.buffer) < count:
            await self._fill()
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    async def receive_message(self) -> bytes:
        """The payload of the next data frame (the sentinel never fragments; pings skipped)."""
        while True:
            first, second = await self._read_exact(2)
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(await self._read_exact(2), "big")
            elif length == 127:
                length = int.from_bytes(await self._read_exact(8), "big")
            if second & 0x80:
                await self._read_exact(4)  # a server does not mask; skip a key if one does
            payload = await self._read_exact(length)
            opcode = first & 0x0F
            if opcode == 0x8:
                raise PeerClosed
            if opcode in (0x1, 0x2):
                return payload

    async def send_message(self, data: bytes) -> None:
        await self.send_raw(frame_header(len(data)) + data)

    async def attach(self, token: str, *, role: str = "client") -> Welcome:
        """The attach handshake, as :func:`hostile_peers.attach_raw` does it, on this socket."""
        challenge: Any = codec.decode(await self.receive_message())
        handshake = NodeHandshake(Identity.generate(), token, role=role)
        await self.send_message(codec.encode(handshake.receive(challenge)))  # type: ignore[arg-type]
        welcome = codec.decode(await self.receive_message())
        assert type(welcome) is Welcome, welcome
        return welcome

    async def send_unfinished(self, length: int, send: int, stall: float) -> int:
        """Announce a binary frame of ``length`` bytes and send ``send`` of them; then hold.

        Stops early when the socket closes (:class:`PeerClosed` is not
        raised: how far it got is the answer) or when one chunk cannot be
        written for ``stall`` seconds (the sentinel stopped reading).
        Returns the payload bytes written.
        """
        written = 0
        try:
            await self.send_raw(frame_header(length))
            zeros = bytes(CHUNK)
            while written < send:
                piece = zeros[: min(CHUNK, send - written)]
                with trio.move_on_after(stall) as stalled:
                    await self.send_raw(piece)
                if stalled.cancelled_caught:
                    break
                written += len(piece)
        except PeerClosed:
            pass
        return written
