"""How ``fame up`` starts the sentinel and the node together, in the right order.

An interpreter spends most of its start importing; ``fame up`` therefore
starts both services at once and lets them import while it enrolls the
agent, instead of starting one after the other. Two waits keep the order
that matters:

* ``--gate-stdin``: the service reads its stdin before it opens its
  storage. ``fame up`` writes :data:`GO` and closes the pipe once the
  stores are its no more (enrollment opens them); a pipe closed without
  :data:`GO` (``fame up`` died or gave up) makes the service exit quietly,
  so no orphan runs without a pid file.
* ``--after FILE``: the node waits for the sentinel's ready file before it
  reads the sentinel's keys and attaches (the sentinel writes its keys,
  then that file), bounded by :data:`AFTER_TIMEOUT`; a signal ends the
  wait and the node stops as usual.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from ._interrupt import cancel_on_signal

__all__ = ["AFTER_TIMEOUT", "GO", "GateClosed", "await_file", "pass_gate"]

GO = b"go\n"

AFTER_TIMEOUT = 30.0
"""Seconds the node waits for the sentinel's ready file (``fame up`` waits as long)."""

_POLL = 0.01


class GateClosed(Exception):
    """``fame up`` closed the gate without letting the service start."""


def pass_gate() -> None:
    """Block until ``fame up`` opens the gate on stdin; :class:`GateClosed` if it never does."""
    if sys.stdin.buffer.read() != GO:
        raise GateClosed


async def await_file(path: Path, signals: AsyncIterator[int]) -> bool:
    """Wait until ``path`` exists (True), or a signal came first (False).

    Raises :class:`TimeoutError` after :data:`AFTER_TIMEOUT` seconds.
    """
    found = False
    with trio.move_on_after(AFTER_TIMEOUT) as waiting:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on_signal, signals, nursery.cancel_scope)
            waited = trio.Path(path)
            while True:  # polled: the sentinel is another process
                if await waited.exists():
                    break
                await trio.sleep(_POLL)
            found = True
            nursery.cancel_scope.cancel()
    if waiting.cancelled_caught:
        raise TimeoutError(f"{path} did not appear within {AFTER_TIMEOUT:.0f} s")
    return found
