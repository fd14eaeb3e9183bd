"""Run ``fame`` and ``fame-client`` as subprocesses in a :class:`~.conftest.Project`.

The way the services' users run them, without ``just`` in between: ``python
-m fame._cli.fame`` and ``python -m fame._cli.client`` with the project root
as working directory and the project's environment (its free port in
``FAME_SENTINEL_PORT``). As ``Project.just`` does, every call's output is
appended to ``logs/just.log`` and the secrets in ``conf/secrets.env`` are
registered for the leak check at the end of the run.
"""

from __future__ import annotations

import subprocess
import sys

from .conftest import Project

__all__ = ["client", "fame"]


def _run(
    project: Project, module: str, args: tuple[str, ...], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", module, *args]
    return project.run(argv, f"{module} {' '.join(args)}", env=env, timeout=120)


def fame(project: Project, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``fame ARGS`` in the project; ``env`` overrides the environment."""
    return _run(project, "fame._cli.fame", args, env)


def client(project: Project, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``fame-client --timeout 20 ARGS`` in the project; ``env`` overrides the environment."""
    return _run(project, "fame._cli.client", ("--timeout", "20", *args), env)
