"""Fixtures for the end-to-end tests: a throwaway project root and a free port.

Every test runs ``just`` against the repository's justfile with the working
directory set to a temporary root holding a copy of the committed
``conf/*.env`` and of the example's ``agents/`` (the node imports the agents
``FAME_AGENTS`` names from the project directory; the library does not
install them), and ``FAME_SENTINEL_PORT`` set to a free port, so it never
touches the checkout's ``data/``, ``run/`` or port 8000. Teardown stops the
services through their pid files and kills any that remain (only those
pids).

For the leak check at the end of the run (``tests/reliability/test_secrets.py``)
the output of every ``just`` call is appended to ``<tmp_path>/logs/just.log``,
the services' ``run/*.log`` are copied to ``<tmp_path>/logs/`` before ``just
clean`` removes them, and the secrets in ``conf/secrets.env``
are registered with ``suite_secrets`` after every call.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
JUST = shutil.which("just", path=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Project:
    """A temporary project root driven through ``just``."""

    def __init__(self, root: Path, port: int, registry: Any = None) -> None:
        self.root = root
        self.port = port
        self.registry = registry
        self.logs = root.parent / "logs"
        self._snapshots = 0
        self.env = {
            **os.environ,
            "FAME_SENTINEL_PORT": str(port),
            "FAME_PYTHON": sys.executable,
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
        }
        for name in (
            "FAME_STORAGE_MASTER_KEY",
            "FAME_ADMISSION_TOKEN",
            "FAME_SENTINEL_URL",
            "FAME_PROJECT_DIR",
        ):
            self.env.pop(name, None)

    def just(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        assert JUST is not None, "just is not installed (pip install rust-just)"
        if args[:1] == ("clean",):
            self.keep_logs()
        argv = [JUST, "--justfile", str(REPO / "justfile"), "--working-directory", str(self.root)]
        return self.run([*argv, *args], f"just {' '.join(args)}", timeout=timeout)

    def run(
        self,
        argv: list[str],
        label: str,
        *,
        env: dict[str, str] | None = None,
        timeout: float = 90,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the project; output to logs/just.log, secrets to the leak scan."""
        result = subprocess.run(
            argv,
            cwd=self.root,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.logs.mkdir(exist_ok=True)
        with (self.logs / "just.log").open("a", encoding="utf-8") as log:
            log.write(f"$ {label}\n{result.stdout}{result.stderr}")
        if self.registry is not None:
            self.registry.add_env_file(self.root / "conf" / "secrets.env")
        return result

    def keep_logs(self) -> None:
        """Copy ``run/*.log`` to ``logs/`` (``just clean`` deletes them)."""
        self._snapshots += 1
        self.logs.mkdir(exist_ok=True)
        for path in (self.root / "run").glob("*.log"):
            shutil.copy(path, self.logs / f"{self._snapshots}-{path.name}")

    def pids(self) -> list[int]:
        found = []
        for path in (self.root / "run").glob("*.pid"):
            with contextlib.suppress(ValueError):
                found.append(int(path.read_text().strip()))
        return found


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@pytest.fixture
def project(tmp_path: Path, suite_secrets: Any) -> Iterator[Project]:
    root = tmp_path / "project"
    (root / "conf").mkdir(parents=True)
    for name in ("sentinel.env", "agent.env"):
        shutil.copy(REPO / "conf" / name, root / "conf" / name)
    shutil.copytree(REPO / "agents", root / "agents", ignore=shutil.ignore_patterns("__pycache__"))
    proj = Project(root, free_port(), suite_secrets)
    try:
        yield proj
    finally:
        pids = proj.pids()
        proj.just("stop", timeout=60)
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
