"""Session-wide scaffolding: the secret-leak check and the reliability figures.

Both work the same with ``pytest -n`` (pytest-xdist) as without: the
workers run the tests, the controller sees every report and every file.

**Secret leaks.** At the end of the session (on the controller of an xdist
run), :func:`pytest_sessionfinish` greps everything the suite wrote for
every secret it made (:mod:`secret_scan`) and fails the run if it finds
one. For that:

- Secrets are registered as they are made: the ``suite_secrets``
  fixture's :meth:`~secret_scan.SecretRegistry.add` (the fabric and e2e
  fixtures call it for their admission tokens and master keys). Each
  worker writes them to ``suite-secrets.env`` in its base temporary
  directory, and every ``*.env`` file under the session's base temporary
  directory is read for ``FAME_STORAGE_MASTER_KEY`` and
  ``FAME_ADMISSION_TOKEN`` at the end.
- Process-starting helpers keep their output under that directory
  (``tmp_path`` lives there; an xdist worker's base directory is a child
  of the controller's): the fabric children's stdout/stderr in ``logs/``,
  the e2e projects' ``run/*.log`` and the output of every ``just`` call,
  the reliability services' ``run/*.log``.
- Pytest's own captured output of every test (stdout, stderr, log records,
  failure reports) is collected by :func:`pytest_runtest_logreport`, which
  the controller of an xdist run calls for every worker's report.

**Reliability figures.** The ``reliability_report`` fixture stores a scenario's figures in the
test's ``user_properties``, which travel with its report to the
controller; :func:`pytest_terminal_summary` prints one table of them, with
the figures of the leak scan.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from secret_scan import Scan, SecretRegistry, scan

FIGURES = "reliability_figures"  # the user_properties name of a scenario's figures

REGISTRY = SecretRegistry()
_figures: list[tuple[str, dict[str, Any]]] = []
_leak_scan: list[Scan] = []


@pytest.fixture(scope="session")
def suite_secrets(tmp_path_factory: pytest.TempPathFactory) -> SecretRegistry:
    """The session's :class:`SecretRegistry`: ``suite_secrets.add("token", t)``."""
    REGISTRY.persist_to(tmp_path_factory.getbasetemp() / "suite-secrets.env")
    return REGISTRY


@pytest.fixture
def reliability_report(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``reliability_report(**figures)`` records the figures of this test's scenario.

    They go into the test's ``user_properties``, which travel with its
    report to the controller of an xdist run.
    """

    def record(**figures: Any) -> None:
        request.node.user_properties.append((FIGURES, figures))

    return record


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for title, content in report.sections:
        if content:  # later phases repeat earlier sections: the dict keeps one
            REGISTRY.texts[(f"{report.nodeid} [{title}]", content)] = None
    longrepr: Any = report.longrepr
    if longrepr is not None:
        REGISTRY.texts[(f"{report.nodeid} [{report.when} report]", report.longreprtext)] = None
    if report.when == "teardown":  # user_properties are complete by then
        name = report.nodeid.rpartition("::")[2]
        _figures.extend(
            (name, dict(value)) for key, value in report.user_properties if key == FIGURES
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Scan everything the session wrote for secrets; a leak fails the run."""
    config = session.config
    if _is_xdist_worker(config):
        return  # the controller scans every worker's files and reports
    base: Path = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    result = scan(base, REGISTRY, REGISTRY.texts)
    if not result.counts["master_keys"] and not result.counts["tokens"]:
        return  # this run made no secret (a run of a few unit tests)
    _leak_scan.append(result)
    if result.leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _figures or _leak_scan:
        terminalreporter.section("reliability figures")
        for name, figures in _figures:
            shown = ", ".join(f"{key}={value}" for key, value in figures.items())
            terminalreporter.write_line(f"{name}: {shown}")
        for result in _leak_scan:
            shown = ", ".join(f"{key}={value}" for key, value in result.figures().items())
            terminalreporter.write_line(
                f"secret scan of the whole run: {shown}, leaks={len(result.leaks)}"
            )
    for result in _leak_scan:
        if result.leaks:
            terminalreporter.section("secrets found in the run's output", red=True)
            terminalreporter.write_line(
                "the run fails (exit status 1): a secret leaked into", red=True
            )
            for leak in result.leaks[:50]:
                terminalreporter.write_line(leak)
