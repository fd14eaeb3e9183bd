"""Random numbers nobody can guess, without a system call each.

``secrets.randbits`` reads ``os.urandom`` once per number, a system call
that costs more than the rest of making a call's ids. Every local call
needs two such numbers (its correlation id and its request id), so this
module reads ``os.urandom`` in blocks of 4 KiB and hands out slices of
one: the same kernel randomness, each byte used once.

Each block hands out its slices through an iterator, whose ``next`` is
atomic, so two threads never get the same slice. A forked child starts
with a fresh block: parent and child never share numbers.
"""

from __future__ import annotations

import os

__all__ = ["randbits"]

SLICE = 9
"""Bytes per number: up to 72 bits."""

BLOCK = 4096 - 4096 % SLICE


class _Block:
    __slots__ = ("data", "offsets")

    def __init__(self) -> None:
        self.data = os.urandom(BLOCK)
        self.offsets = iter(range(0, BLOCK, SLICE))


_block = _Block()


def randbits(bits: int) -> int:
    """A uniformly random integer of ``bits`` bits (at most 72), from the kernel's CSPRNG."""
    global _block
    block = _block
    offset = next(block.offsets, None)
    while offset is None:
        block = _block = _Block()
        offset = next(block.offsets, None)
    return int.from_bytes(block.data[offset : offset + SLICE]) >> (8 * SLICE - bits)


def _fresh_block() -> None:
    global _block
    _block = _Block()


os.register_at_fork(after_in_child=_fresh_block)
