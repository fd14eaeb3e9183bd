"""Short crash loops: SIGKILL the storage agent, then the sentinel, under write load.

The scenarios are in ``crash_loop.py`` (``just soak`` runs the long ones); here
they run a few cycles each on real processes, websockets and SQLCipher
files, and every figure they measured goes to the reliability report.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Report
from .crash_loop import CALL_DEADLINE, Figures, run_scenario

pytestmark = pytest.mark.slow

OVERSHOOT_MARGIN = 2.0
"""How far past its deadline a call may return on a busy two-core machine."""


def assert_sound(figures: Figures, cycles: int) -> None:
    assert figures.cycles == cycles
    assert figures.acknowledged > 0
    assert figures.lost == 0, f"{figures.lost} acknowledged writes lost"
    assert figures.corrupt == 0, f"{figures.corrupt} stored values damaged"
    assert figures.unknown_keys == 0
    assert figures.verified == figures.acknowledged
    assert figures.check_ok, "fame check found damage in the agent's files"
    # At least one kill hit the process while writes were waiting on it.
    assert figures.kills_mid_traffic >= 1
    assert figures.in_flight_at_kills >= 1
    assert figures.hangs == 0
    # The first cycle froze the victim past the deadline: calls gave up in time,
    # saying they were sent and may have run.
    assert figures.freezes == 1
    assert figures.errors["NoAnswerInTime"] >= 1
    assert figures.worst_overshoot_s <= OVERSHOOT_MARGIN, (
        f"a call returned {figures.worst_overshoot_s} s past its {CALL_DEADLINE} s deadline"
    )


def report(reliability_report: Report, figures: Figures) -> None:
    summary = figures.summary()
    summary.pop("scenario")
    reliability_report(**summary)


async def test_agent_sigkill_loop_loses_no_acknowledged_write(
    tmp_path: Path, reliability_report: Report
) -> None:
    figures = await run_scenario("agent", cycles=10, writers=16, seed=7, root=tmp_path)
    report(reliability_report, figures)
    assert_sound(figures, 10)
    # The sentinel stayed up: the client kept its one link the whole time.
    assert figures.client_reattaches == 0


async def test_sentinel_sigkill_loop_reconnects_and_loses_nothing(
    tmp_path: Path, reliability_report: Report
) -> None:
    figures = await run_scenario("sentinel", cycles=5, writers=16, seed=11, root=tmp_path)
    report(reliability_report, figures)
    assert_sound(figures, 5)
    # The client found its way back after every restart, without reconnecting by hand.
    assert figures.client_reattaches >= 5
