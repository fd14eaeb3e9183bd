"""Stream credit, consumer side: when to give how much back. Pure arithmetic, no IO.

The producer sends one item per credit; the consumer returns credit after
it has *consumed* half of its window, so neither side, nor any router in
between, holds more than a window of items per stream. The trio side of
streams is ``fame._agents._credit``.
"""

from __future__ import annotations

from .._core._errors import ProtocolError

__all__ = ["DEFAULT_WINDOW", "CreditWindow"]

DEFAULT_WINDOW = 64
"""Items a stream consumer buffers unless it asks for another window."""


class CreditWindow:
    """Consumer-side credit: when to give how much back."""

    __slots__ = ("consumed", "outstanding", "window")

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if window < 1:
            raise ValueError("a stream window must be at least 1")
        self.window = window
        self.outstanding = window  # items the producer may still send
        self.consumed = 0

    def on_item(self) -> None:
        """An item arrived; raise :class:`fame.ProtocolError` if it had no credit."""
        if self.outstanding <= 0:
            raise ProtocolError("stream producer sent an item without credit")
        self.outstanding -= 1

    def on_consumed(self) -> int:
        """An item was handed to the reader; return credit to grant now (0: none yet)."""
        self.consumed += 1
        if self.consumed * 2 >= self.window:
            grant, self.consumed = self.consumed, 0
            self.outstanding += grant
            return grant
        return 0
