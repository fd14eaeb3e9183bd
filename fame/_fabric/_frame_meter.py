"""How many bytes of an unfinished websocket message a peer has made us hold (sans-IO).

trio-websocket keeps the parts of a data message in memory until its last
frame arrives, up to its ``max_message_size``; it cannot say how much it
holds, nor bound that memory across connections. A :class:`FrameMeter`
reads the same bytes it does (everything a peer sends, from the start of
its connection) and follows the RFC 6455 framing: a 2-byte header, a
16- or 64-bit extended length, a 4-byte masking key, then the payload.
:attr:`FrameMeter.held` is the payload received so far of the data
message that is not finished: it grows with each data frame (opcode 0, 1,
2) and drops to zero when a frame with FIN ends the message. Control
frames (opcode 8 and up: close, ping, pong) may come between the
fragments of a message; their payload (at most 125 bytes) does not count.

What the meter counts is what arrived, never what a header announces: a
frame that claims 2**63 bytes costs nothing until the bytes come. It does
not validate anything (wsproto does, and closes the connection); on
garbage it keeps counting rather than forget bytes it cannot place.
"""

from __future__ import annotations

__all__ = ["FrameMeter"]

HEAD_END = b"\r\n\r\n"


class FrameMeter:
    """Follows a websocket byte stream; :attr:`held` is the unfinished message's payload so far.

    With ``http_head`` the stream starts with the HTTP upgrade request, which
    is skipped up to its blank line (h11 bounds its size; it is no frame).
    """

    __slots__ = ("_control", "_fin", "_header", "_in_head", "_remaining", "_tail", "held")

    def __init__(self, *, http_head: bool = False) -> None:
        self._in_head = http_head
        self._tail = b""  # the last bytes of the head seen, for a blank line split across reads
        self._header = bytearray()  # the frame header read so far
        self._remaining = 0  # payload bytes of the current frame still to come
        self._control = False
        self._fin = False
        self.held = 0

    def feed(self, data: bytes | bytearray) -> int:
        """Follow ``data``, the next bytes the peer sent; returns :attr:`held`."""
        if not (self.held or self._remaining or self._header or self._in_head) and _whole(data):
            return 0  # whole frames, each ending its message: nothing held, nothing to follow
        start = 0
        if self._in_head:
            seen = self._tail + data
            end = seen.find(HEAD_END)
            if end < 0:
                self._tail = seen[-(len(HEAD_END) - 1) :]
                return self.held
            self._in_head = False
            self._tail = b""
            start = end + len(HEAD_END) - (len(seen) - len(data))
        view = memoryview(data)
        size = len(data)
        i = start
        while i < size:
            if self._remaining == 0:
                i = self._read_header(view, i)
                continue
            take = min(self._remaining, size - i)
            self._remaining -= take
            i += take
            if not self._control:
                self.held += take
            if self._remaining == 0:
                self._frame_done()
        return self.held

    def _read_header(self, view: memoryview, i: int) -> int:
        """Take header bytes from ``view[i:]``; the index after them."""
        header = self._header
        while len(header) < (need := 2 if len(header) < 2 else _header_size(header[1])):
            if i == len(view):
                return i  # the rest of the header comes in a later read
            take = min(need - len(header), len(view) - i)
            header += view[i : i + take]
            i += take
        self._fin = bool(header[0] & 0x80)
        self._control = header[0] & 0x0F >= 8
        code = header[1] & 0x7F
        if code == 126:
            length = int.from_bytes(header[2:4], "big")
        elif code == 127:
            length = int.from_bytes(header[2:10], "big")
        else:
            length = code
        self._header = bytearray()
        self._remaining = length
        if length == 0:
            self._frame_done()
        return i

    def _frame_done(self) -> None:
        if not self._control and self._fin:
            self.held = 0


def _whole(data: bytes | bytearray) -> bool:
    """Whether ``data`` is whole frames, none of them a data frame without FIN.

    The common read (one or a few complete messages), checked without
    touching the meter's state: :meth:`FrameMeter.feed` of such data at a
    frame boundary with nothing held changes nothing.
    """
    i, size = 0, len(data)
    while i < size:
        if size - i < 2:
            return False
        first, second = data[i], data[i + 1]
        if not first & 0x80 and first & 0x0F < 8:
            return False  # a fragment: the message goes on
        code = second & 0x7F
        if code == 126:
            length, i = int.from_bytes(data[i + 2 : i + 4], "big"), i + 4
        elif code == 127:
            length, i = int.from_bytes(data[i + 2 : i + 10], "big"), i + 10
        else:
            length, i = code, i + 2
        i += length + (4 if second & 0x80 else 0)
    return i == size


def _header_size(second: int) -> int:
    """Bytes in a frame header, from its second byte: 2, the extended length, the mask."""
    code = second & 0x7F
    extended = 2 if code == 126 else 8 if code == 127 else 0
    return 2 + extended + (4 if second & 0x80 else 0)
