"""Exponential backoff: how long to wait before trying again.

One rule for every retry in fame: the supervisor's wait before restarting
a crashed actor and the uplink's wait before reconnecting to a sentinel.
The n-th attempt waits ``initial * factor ** (n - 1)``, capped at
``maximum``. With ``jitter`` the wait is drawn at random below that
ceiling (full jitter), so that the many nodes that lost the same sentinel
do not all come back at the same instant after it restarts; the first
jittered wait still takes at least half its ceiling, so a lost link is
never retried at once.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import attrs

__all__ = ["Backoff"]


@attrs.frozen
class Backoff:
    """Exponentially growing waits between attempts, capped, optionally jittered."""

    initial: float = attrs.field(validator=attrs.validators.ge(0))
    maximum: float = attrs.field(validator=attrs.validators.ge(0))
    factor: float = attrs.field(default=2.0, validator=attrs.validators.ge(1))
    jitter: bool = False

    def ceiling(self, attempt: int) -> float:
        """The longest wait before attempt ``attempt`` (1 for the first retry)."""
        if attempt < 1:
            raise ValueError(f"attempts count from 1, got {attempt}")
        try:
            grown = self.initial * self.factor ** (attempt - 1)
        except OverflowError:
            return self.maximum
        return min(grown, self.maximum)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before attempt ``attempt``; drawn from ``rng`` with jitter."""
        ceiling = self.ceiling(attempt)
        if not self.jitter:
            return ceiling
        draw = rng or _shared_rng
        return draw.uniform(ceiling / 2 if attempt == 1 else 0.0, ceiling)

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The waits before attempts 1, 2, 3, ... for ever; start a new one to reset."""
        return (self.delay(attempt, rng) for attempt in itertools.count(1))


_shared_rng = random.Random()
