"""Session-wide scaffolding for the secret-leak check: which secrets exist, what was written.

``tests/reliability/test_secrets.py::test_no_secret_in_any_log_of_the_suite``
greps everything the suite wrote for every secret it made. For that:

- Secrets are registered here as they are made: the ``suite_secrets``
  fixture's :meth:`SecretRegistry.add` (the fabric and e2e fixtures call it
  for their admission tokens and master keys), and every ``*.env`` file
  under pytest's base temporary directory is read for
  ``FAME_STORAGE_MASTER_KEY`` and ``FAME_ADMISSION_TOKEN`` at the end.
- Process-starting helpers keep their output under that directory
  (``tmp_path`` lives there): the fabric children's stdout/stderr in
  ``logs/``, the e2e projects' ``run/*.log`` and the output of every
  ``just`` call, the reliability services' ``run/*.log``.
- Pytest's own captured output of every test (stdout, stderr, log records,
  failure reports) is collected by :func:`pytest_runtest_logreport`.

Tests marked ``runs_last`` are moved to the end of the run, after
everything they inspect was written.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

ENV_SECRETS = {"FAME_STORAGE_MASTER_KEY": "master_key", "FAME_ADMISSION_TOKEN": "token"}


class SecretRegistry:
    """Every secret of the session by kind (``master_key``, ``token``), and captured texts."""

    def __init__(self) -> None:
        self.secrets: dict[str, set[str]] = {"master_key": set(), "token": set()}
        self.texts: list[tuple[str, str]] = []  # (where, text) of pytest's captured output

    def add(self, kind: str, value: str) -> None:
        if kind not in self.secrets:
            raise ValueError(f"unknown secret kind {kind!r}: {sorted(self.secrets)}")
        if value:
            self.secrets[kind].add(value)

    def add_env_file(self, path: Path) -> None:
        """Register the secrets a ``NAME=value`` file holds (``conf/secrets.env``)."""
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        self.add_env_lines(text.splitlines())

    def add_env_lines(self, lines: Iterable[str]) -> None:
        for line in lines:
            name, sep, value = line.strip().removeprefix("export ").partition("=")
            kind = ENV_SECRETS.get(name.strip())
            if sep and kind is not None:
                self.add(kind, value.strip().strip("\"'"))


REGISTRY = SecretRegistry()


@pytest.fixture(scope="session")
def suite_secrets() -> SecretRegistry:
    """The session's :class:`SecretRegistry`: ``suite_secrets.add("token", t)``."""
    return REGISTRY


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "runs_last: run after every other test (it inspects what they wrote)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    last = [item for item in items if item.get_closest_marker("runs_last") is not None]
    if last:
        items[:] = [item for item in items if item not in last] + last


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for title, content in report.sections:
        if content:
            REGISTRY.texts.append((f"{report.nodeid} [{title}]", content))
    longrepr: Any = report.longrepr
    if longrepr is not None:
        REGISTRY.texts.append((f"{report.nodeid} [{report.when} report]", report.longreprtext))
