"""Stream credit, consumer side: when to give how much back. Pure arithmetic, no IO.

The producer sends one item per item credit, while its byte credit is
positive; the consumer returns credit after it has *consumed* half of its
window, in items or in bytes, whichever comes first. So neither side, nor
any router in between, holds more than a window of items per stream, nor
more than the byte window plus one item (an item larger than the whole
byte window still goes, alone). The trio side of streams is
``fame._agents._credit``.

The window may grow (``max_window``): a consumer that ran dry since its
last grant, so waited for the producer or the network, is keeping up, and
a window of 64 items then caps a stream at one window per round trip
(25 to 30k records/s between processes). Each such grant doubles the item
window, up to ``max_window``, by granting the difference with the items
consumed. The byte window does not grow: the bytes in flight stay bounded
as before, whatever the item window.
"""

from __future__ import annotations

from .._core._errors import ProtocolError

__all__ = [
    "DEFAULT_WINDOW",
    "DEFAULT_WINDOW_BYTES",
    "FRAME_BYTES",
    "FRAME_ITEMS",
    "MAX_ADAPTIVE_WINDOW",
    "CreditWindow",
]

DEFAULT_WINDOW = 64
"""Items a stream consumer buffers unless it asks for another window."""

DEFAULT_WINDOW_BYTES = 4 * 1024 * 1024
"""Bytes of items a stream consumer lets be in flight unless it asks for another window."""

MAX_ADAPTIVE_WINDOW = 4096
"""Items the default window grows to while its consumer keeps up (the byte window still holds)."""

FRAME_ITEMS = 256
"""Most items a consumer takes in one ``StreamItems`` frame (``Request.batch``).

Enough that the per-frame cost (an envelope, a routing decision at the
sentinel, a decode at each end) is a small part of each item's; few enough
that a generator that never awaits yields the event loop every few hundred
items."""

FRAME_BYTES = 256 * 1024
"""Most bytes of items a producer puts in one ``StreamItems`` frame: a quarter of the
wire's default message limit, so a frame never comes near it (a larger item goes alone)."""


class CreditWindow:
    """Consumer-side credit: when to give how much back."""

    __slots__ = (
        "consumed",
        "consumed_bytes",
        "max_window",
        "outstanding",
        "starved",
        "window",
        "window_bytes",
    )

    def __init__(
        self,
        window: int = DEFAULT_WINDOW,
        window_bytes: int | None = None,
        max_window: int | None = None,
    ) -> None:
        if window < 1:
            raise ValueError("a stream window must be at least 1")
        if window_bytes is not None and window_bytes < 1:
            raise ValueError("a stream's byte window must be at least 1 byte")
        self.window = window
        self.window_bytes = window_bytes  # None: no byte limit
        self.outstanding = window  # items the producer may still send
        self.consumed = 0
        self.consumed_bytes = 0
        self.max_window = max(window, max_window or window)  # == window: a fixed window
        self.starved = False  # the reader waited for an item since the last grant

    def on_item(self) -> None:
        """An item arrived; raise :class:`fame.ProtocolError` if it had no credit."""
        if self.outstanding <= 0:
            raise ProtocolError("stream producer sent an item without credit")
        self.outstanding -= 1

    def on_items(self, n: int) -> None:
        """``n`` items arrived in one frame; :class:`fame.ProtocolError` if they had no credit."""
        if n > self.outstanding:
            raise ProtocolError("stream producer sent items without credit")
        self.outstanding -= n

    def on_consumed(self, size: int = 0) -> tuple[int, int]:
        """An item of ``size`` bytes was handed to the reader.

        Returns the credit to grant now, ``(items, bytes)``; ``(0, 0)``: none yet.
        """
        self.consumed += 1
        self.consumed_bytes += max(0, size)
        half_bytes = self.window_bytes is not None and self.consumed_bytes * 2 >= self.window_bytes
        if self.consumed * 2 >= self.window or half_bytes:
            grant, self.consumed = self.consumed, 0
            grant_bytes, self.consumed_bytes = self.consumed_bytes, 0
            if self.starved and self.window < self.max_window:
                grown = min(self.max_window, self.window * 2)
                grant += grown - self.window
                self.window = grown
            self.starved = False
            self.outstanding += grant
            return grant, grant_bytes if self.window_bytes is not None else 0
        return 0, 0
