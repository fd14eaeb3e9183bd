"""Shared scaffolding of the reliability suite: the figures report.

Every scenario hands its figures (cycles, writes acknowledged, inputs
tried, peak memory...) to the ``reliability_report`` fixture; at the end of
the session pytest prints one table of them, so every run, CI included,
shows what was measured and not only that it passed. ``docs/reliability.md``
quotes that table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

_FIGURES: list[tuple[str, dict[str, Any]]] = []

Report = Callable[..., None]


@pytest.fixture
def reliability_report(request: pytest.FixtureRequest) -> Report:
    """``reliability_report(**figures)`` records the figures of this test's scenario."""

    def record(**figures: Any) -> None:
        _FIGURES.append((request.node.name, figures))

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures")
    for name, figures in _FIGURES:
        shown = ", ".join(f"{key}={value}" for key, value in figures.items())
        terminalreporter.write_line(f"{name}: {shown}")
