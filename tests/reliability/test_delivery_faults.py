"""Delivery under faults, short: retried writes apply once, acknowledged ones are never lost.

The loop is in ``delivery_loop.py`` (``just soak --scenario delivery-agent``
runs it for a hundred cycles and more); here each scenario runs a few
cycles on real processes, websockets and SQLCipher files: SIGKILLs of the
victim and a SIGSTOP longer than the deadline followed by SIGCONT. Every
write carries its own request id and is sent again with it until it is
acknowledged; the applications are counted at the end, and a register's
history under the same faults must be linearizable.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Report
from .delivery_loop import DeliveryFigures, run_delivery

pytestmark = pytest.mark.slow

CYCLES = 4  # three SIGKILLs and one freeze past the deadline, then a thaw


def assert_exactly_once(figures: DeliveryFigures) -> None:
    assert figures.problems() == [], figures.problems()
    assert figures.cycles == CYCLES and figures.freezes == 1 and figures.kills == CYCLES - 1
    assert figures.lost == 0 and figures.applied_twice == 0
    assert figures.applied_once >= figures.acknowledged > 0
    # The faults bit: calls were answered "may have run" and sent again.
    assert figures.answers_outcome_unknown >= 1 and figures.resent >= 1
    assert figures.register_linearizable
    assert figures.register_operations > 0


def report(reliability_report: Report, figures: DeliveryFigures) -> None:
    summary = figures.summary()
    summary.pop("scenario")
    reliability_report(**summary)


async def test_agent_killed_and_frozen_applies_every_write_once(
    tmp_path: Path, reliability_report: Report
) -> None:
    figures = await run_delivery("agent", cycles=CYCLES, seed=13, root=tmp_path)
    report(reliability_report, figures)
    assert_exactly_once(figures)


async def test_sentinel_killed_and_frozen_applies_every_write_once(
    tmp_path: Path, reliability_report: Report
) -> None:
    figures = await run_delivery("sentinel", cycles=CYCLES, seed=17, root=tmp_path)
    report(reliability_report, figures)
    assert_exactly_once(figures)
