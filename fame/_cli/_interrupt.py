"""Ending a wait when the process is told to stop.

A CLI wait that must end on SIGINT or SIGTERM takes the signal as an event
(``trio.open_signal_receiver``), not as trio's ``KeyboardInterrupt``: that
one is raised in whichever task runs when the signal comes, and when it is
one of a connection's own tasks, the connection ends instead of the wait.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio

__all__ = ["cancel_on_signal"]


async def cancel_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    """Cancel ``scope`` when the first of ``signals`` comes (run it beside the wait)."""
    async for _ in signals:
        scope.cancel()
        return
