"""Shared scaffolding of the reliability suite: real services.

Every scenario hands its figures (cycles, writes acknowledged, inputs
tried, peak memory...) to the ``reliability_report`` fixture of
``tests/conftest.py``; at the end of the session pytest prints one table of
them (on the controller of an xdist run too), so every run, CI included,
shows what was measured and not only that it passed.
``docs/reliability.md`` quotes that table.

``fame_services`` starts a sentinel and a node as real processes
(:class:`~fame_services.FameServices`) in the test's temporary directory,
their secrets registered for the leak check, and stops them at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .fame_services import FameServices

Report = Callable[..., None]
"""The type of the ``reliability_report`` fixture: ``reliability_report(**figures)``."""


@pytest.fixture
def fame_services(tmp_path: Path, suite_secrets: Any) -> Iterator[Callable[..., FameServices]]:
    """``fame_services(name, *agents, node=True, kill_at_teardown=False, **options)``: up.

    A :class:`FameServices` in ``tmp_path/name``; ``options`` as for it
    (settings included). With ``node=False`` only the sentinel is started.
    At teardown they are stopped gracefully, or SIGKILLed with
    ``kill_at_teardown``.
    """
    started: list[tuple[FameServices, bool]] = []

    def make(
        name: str, *agents: str, node: bool = True, kill_at_teardown: bool = False, **options: Any
    ) -> FameServices:
        made = FameServices(tmp_path / name, *agents, registry=suite_secrets, **options)
        started.append((made, kill_at_teardown))
        made.up(node=node)
        return made

    try:
        yield make
    finally:
        for made, kill in started:
            if kill:
                made.abort()
            else:
                made.close()
