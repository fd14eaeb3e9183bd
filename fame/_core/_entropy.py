"""Random numbers nobody can guess, without a system call each.

``secrets.randbits`` reads ``os.urandom`` once per number, a system call
that costs more than the rest of making a call's ids. Every local call
needs a correlation id and a request id, so this module reads
``os.urandom`` in blocks of 4 KiB, turns each block into 512 numbers of
64 bits in one step, and hands them out one by one: the same kernel
randomness, each number used once.

The numbers of a block are handed out by an iterator, whose ``next`` is
atomic, so two threads never get the same number. A forked child starts
with a fresh block: parent and child never share numbers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

__all__ = ["random64"]

BLOCK = 4096
"""Bytes read from the kernel at once: 512 numbers."""


def _block() -> Iterator[int]:
    return iter(memoryview(os.urandom(BLOCK)).cast("Q").tolist())


_numbers = _block()


def random64() -> int:
    """A uniformly random 64-bit integer, from the kernel's CSPRNG."""
    global _numbers
    value = next(_numbers, None)
    while value is None:
        _numbers = _block()
        value = next(_numbers, None)
    return value


def _fresh_block() -> None:
    global _numbers
    _numbers = _block()


os.register_at_fork(after_in_child=_fresh_block)
