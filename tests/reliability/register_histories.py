"""Histories of a real register, for testing the linearizability checker.

A plan is a list of :class:`Step`: the calls of a sequential execution, in
the order they took effect on one register. :func:`history_from_plan` runs
the plan (call ``i`` takes effect at time ``i + 1``) and stretches each
call's interval around that instant, the invocation ``before`` earlier and
the completion ``after`` later, keeping one client's calls apart. Such a
history is linearizable by construction: the plan's order is a witness.

Steps of unknown outcome model the faults: ``UNKNOWN_APPLIED`` took effect
but its client got no verdict, ``LOST`` (writes) never took effect and its
client got no verdict either, ``NOT_APPLIED`` (writes) failed cleanly.
Hypothesis draws plans in the tests; :func:`random_plan` draws big ones from
a seeded ``random.Random`` for the timing check.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from .linearizability import Kind, Operation, Outcome


class Fate(enum.Enum):
    """What became of a planned call."""

    OK = "ok"
    UNKNOWN_APPLIED = "unknown_applied"
    LOST = "lost"  # writes only: never applied, outcome unknown to the client
    NOT_APPLIED = "not_applied"  # writes only: never applied, the client knows


@dataclass(frozen=True)
class Step:
    """One planned call. ``value`` overrides a write's fresh value ``w<i>``
    (to plan duplicate writes); ``replied`` says whether a call of unknown
    outcome still got an (inconclusive) error reply, with a time."""

    client: int
    kind: Kind
    fate: Fate = Fate.OK
    before: float = 0.0
    after: float = 0.0
    replied: bool = False
    value: Hashable = None


def history_from_plan(plan: Sequence[Step], *, initial: Hashable = None) -> list[Operation]:
    """The history of ``plan`` run on a register holding ``initial``, in plan order."""
    at = [float(i + 1) for i in range(len(plan))]
    by_client: dict[int, list[int]] = {}
    for i, step in enumerate(plan):
        by_client.setdefault(step.client, []).append(i)
    invoked = [0.0] * len(plan)
    completed = [0.0] * len(plan)
    for indices in by_client.values():
        # A client's next call starts no earlier than halfway between its
        # calls' instants, and its previous one ends no later: no overlap.
        for j, i in enumerate(indices):
            low = (at[indices[j - 1]] + at[i]) / 2 if j > 0 else 0.0
            high = (at[i] + at[indices[j + 1]]) / 2 if j + 1 < len(indices) else float("inf")
            invoked[i] = max(at[i] - plan[i].before, low)
            completed[i] = min(at[i] + plan[i].after, high)
    state = initial
    history = []
    for i, step in enumerate(plan):
        if step.kind is Kind.WRITE:
            value = f"w{i}" if step.value is None else step.value
            if step.fate in (Fate.OK, Fate.UNKNOWN_APPLIED):
                state = value
        else:
            if step.fate in (Fate.LOST, Fate.NOT_APPLIED):
                raise ValueError(f"step {i}: only a write can be {step.fate.value}")
            value = state
        done: float | None = completed[i]
        if step.fate is Fate.OK:
            outcome = Outcome.OK
        elif step.fate is Fate.NOT_APPLIED:
            outcome = Outcome.FAILED_NOT_APPLIED
        else:
            outcome, done = Outcome.UNKNOWN, done if step.replied else None
        if step.kind is Kind.READ and outcome is Outcome.UNKNOWN:
            value = None  # its client never learned the answer
        history.append(Operation(step.client, step.kind, value, invoked[i], done, outcome))
    return history


def random_plan(
    rng: random.Random,
    size: int,
    clients: int,
    *,
    write_share: float = 0.4,
    unknown_share: float = 0.05,
    stretch: float = 3.0,
) -> list[Step]:
    """A plan of ``size`` calls by ``clients`` clients, intervals up to ``stretch`` wide.

    ``unknown_share`` of the calls end without a verdict (half of those
    writes are lost); as many writes again fail cleanly.
    """
    plan = []
    for _ in range(size):
        kind = Kind.WRITE if rng.random() < write_share else Kind.READ
        fate = Fate.OK
        roll = rng.random()
        if roll < unknown_share:
            lost = kind is Kind.WRITE and rng.random() < 0.5
            fate = Fate.LOST if lost else Fate.UNKNOWN_APPLIED
        elif roll < 2 * unknown_share and kind is Kind.WRITE:
            fate = Fate.NOT_APPLIED
        plan.append(
            Step(
                client=rng.randrange(clients),
                kind=kind,
                fate=fate,
                before=rng.uniform(0, stretch),
                after=rng.uniform(0, stretch),
                replied=rng.random() < 0.5,
            )
        )
    return plan
