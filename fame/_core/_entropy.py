"""Random numbers nobody can guess, without a system call each.

``secrets.randbits`` reads ``os.urandom`` once per number, a system call
that costs more than the rest of making a call's ids. Every local call
needs a correlation id and a request id, so this module reads
``os.urandom`` in blocks of 4 KiB, turns each block into 512 numbers of
64 bits in one step, and hands them out one by one: the same kernel
randomness, each number used once.

The numbers are handed out by an iterator that chains the blocks
(:data:`numbers`): ``next(_entropy.numbers)`` is one C call, no Python
frame, on the hot path of every local call. Its ``next`` is atomic, so two
threads never get the same number. A forked child starts with a fresh
iterator: parent and child never share numbers (read the module's
attribute each time, never keep the iterator).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

__all__ = ["hex68", "numbers", "random64"]

BLOCK = 4096
"""Bytes read from the kernel at once: 512 numbers."""

HEX_BLOCK = 9 * 512
"""Bytes read at once for :data:`hex68`: 512 strings."""


def _block(size: int) -> list[int]:
    return memoryview(os.urandom(size)).cast("Q").tolist()


def _numbers() -> Iterator[int]:
    return itertools.chain.from_iterable(map(_block, itertools.repeat(BLOCK)))


numbers = _numbers()
"""Uniformly random 64-bit integers from the kernel's CSPRNG, without end."""


def _hex_block(size: int) -> list[str]:
    # Groups of 9 bytes (18 digits), split in C; the first digit of each dropped.
    # Several times cheaper than formatting numbers or cutting one string.
    return [group[1:] for group in os.urandom(size).hex(" ", 9).split()]


def _hex68() -> Iterator[str]:
    return itertools.chain.from_iterable(map(_hex_block, itertools.repeat(HEX_BLOCK)))


hex68 = _hex68()
"""Strings of 17 random hex digits (68 bits) from the kernel's CSPRNG, without end.

The random part of a request id, ready to print: a 68-bit number made and
formatted per id costs several times more (big-integer arithmetic).
"""


def random64() -> int:
    """A uniformly random 64-bit integer, from the kernel's CSPRNG."""
    return next(numbers)


def _fresh_numbers() -> None:
    global numbers, hex68
    numbers = _numbers()
    hex68 = _hex68()


os.register_at_fork(after_in_child=_fresh_numbers)
