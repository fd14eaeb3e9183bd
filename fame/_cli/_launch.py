"""``fame up``'s first step: start the services before importing the rest of fame.

An interpreter spends most of its start importing (trio, trio-websocket,
SQLCipher, cryptography, fame's own modules: about 0.45 s of CPU here).
``fame up`` needs most of that itself (it enrolls the agent in the stores
and probes it over the fabric), so importing it first made both services
start that much later. This module imports only the standard library and
:mod:`._processes`: ``fame up`` starts whatever does not run yet, held at
its gate (see :mod:`._gate`), then imports and checks the rest while the
services import. A check that fails sends them away (``_services``
closes the gates and removes what this made), so a refused ``up`` still
starts nothing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import attrs

from ._processes import RUN_DIR, SERVICES, Service

__all__ = ["Launch", "launch"]


@attrs.define
class Launch:
    """What :func:`launch` did: the services it started, held; those already running."""

    processes: dict[Service, subprocess.Popen[bytes]] = attrs.Factory(dict)
    running: dict[Service, int] = attrs.Factory(dict)
    """Each service that already ran, with its pid: left alone."""
    made: list[Path] = attrs.Factory(list)
    """The paths made for the started services (``run/``, new logs), removed if ``up`` refuses."""


def _start(service: Service, *extra: str) -> subprocess.Popen[bytes]:
    """Start ``service`` held at its gate (see :mod:`._gate`): it imports, then waits for go."""
    RUN_DIR.mkdir(exist_ok=True)
    service.ready_file.unlink(missing_ok=True)
    with service.log_file.open("ab") as log:
        return subprocess.Popen(
            service.command("--gate-stdin", *extra),
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def launch() -> Launch:
    """Start, held at their gates, the services of the project that do not run yet.

    Nothing is started where the project lacks a service's config file
    (``up`` then says it is not a project).
    """
    launched = Launch()
    if not all(service.config.exists() for service in SERVICES):
        return launched
    launched.made = [p for p in (RUN_DIR, *(s.log_file for s in SERVICES)) if not p.exists()]
    for service in SERVICES:
        pid = service.pid()
        if pid is not None:
            launched.running[service] = pid
            continue
        extra: tuple[str, ...] = ()
        if service is SERVICES[1] and SERVICES[0] in launched.processes:
            extra = ("--after", str(SERVICES[0].ready_file.absolute()))
        launched.processes[service] = _start(service, *extra)
    return launched
