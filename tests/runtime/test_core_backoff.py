"""One backoff rule for restarts and reconnects: exponential, capped, optionally jittered."""

from __future__ import annotations

import random

import pytest

from fame import RestartPolicy
from fame._core._backoff import Backoff
from fame._fabric._transport import RECONNECT_BACKOFF


def test_waits_grow_by_the_factor_up_to_the_maximum() -> None:
    backoff = Backoff(initial=0.5, maximum=3.0, factor=2.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_very_late_attempt_waits_the_maximum_instead_of_overflowing() -> None:
    backoff = Backoff(initial=1.0, maximum=60.0, factor=3.0)
    assert backoff.delay(10_000) == 60.0


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError):
        Backoff(initial=1.0, maximum=2.0).delay(0)


def test_jittered_waits_stay_below_their_ceiling_and_the_first_is_not_immediate() -> None:
    backoff = Backoff(initial=0.1, maximum=10.0, jitter=True)
    rng = random.Random(3)
    for _ in range(200):
        assert 0.05 <= backoff.delay(1, rng) <= 0.1
        assert 0.0 <= backoff.delay(4, rng) <= 0.8
    delays = backoff.delays(rng)
    waits = [next(delays) for _ in range(3)]
    assert len(set(waits)) == 3  # drawn, not fixed: nodes do not retry in lockstep


def test_the_restart_policy_waits_by_the_same_rule() -> None:
    policy = RestartPolicy(backoff_initial=0.05, backoff_factor=3.0, backoff_max=1.0)
    rule = Backoff(initial=0.05, maximum=1.0, factor=3.0)
    assert [policy.backoff(n) for n in range(1, 7)] == [rule.delay(n) for n in range(1, 7)]


def test_the_uplink_reconnects_with_jitter_from_a_tenth_of_a_second_to_ten() -> None:
    expected = Backoff(initial=0.1, maximum=10.0, factor=2.0, jitter=True)
    assert expected == RECONNECT_BACKOFF
