"""A throwaway fame project for the end-to-end benchmarks: ``fame up`` in a temporary root.

Never the checkout's ``data/`` or port: a temporary directory with the
checkout's ``conf/`` and ``agents/`` copied in, and a free port on
127.0.0.1. :func:`fame_cli` runs ``fame`` there; :func:`client_credentials`
reads what a client needs (the admission token, the sentinel's keys) from
the project's files once ``fame up`` made them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fame.security import parse_public_key

__all__ = ["REPO", "client_credentials", "fame_cli", "free_port", "new_project"]

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def new_project(prefix: str) -> tuple[Path, dict[str, str], int]:
    """A temporary project (conf and agents of the checkout), its environment and its port."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    (root / "conf").mkdir()
    for name in ("sentinel.env", "agent.env", "policy.toml"):
        shutil.copy(REPO / "conf" / name, root / "conf" / name)
    # The example project's agents: `fame node` imports them from the project root.
    shutil.copytree(REPO / "agents", root / "agents", ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    env = {**os.environ, "FAME_SENTINEL_PORT": str(port)}
    for name in ("FAME_STORAGE_MASTER_KEY", "FAME_ADMISSION_TOKEN", "FAME_SENTINEL_URL"):
        env.pop(name, None)
    return root, env, port


def fame_cli(root: Path, env: dict[str, str], *args: str, check: bool = True) -> float:
    """Run ``fame ARGS`` in ``root``; return its wall-clock seconds (fail loudly if ``check``)."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "fame._cli.fame", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if check and result.returncode != 0:
        raise SystemExit(f"fame {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return elapsed


def service_rss_mib(root: Path, name: str) -> float:
    """Resident memory (VmRSS, MiB) of the service ``name`` of the project at ``root``."""
    pid = int((root / "run" / f"{name}.pid").read_text())
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def client_credentials(root: Path) -> tuple[str, list[bytes]]:
    """The admission token and the sentinel's public keys of the project at ``root``."""
    token = next(
        line.split("=", 1)[1]
        for line in (root / "conf" / "secrets.env").read_text().splitlines()
        if line.startswith("FAME_ADMISSION_TOKEN=")
    )
    keys = [
        parse_public_key(line)
        for line in (root / "conf" / "sentinel.keys").read_text().splitlines()
        if line.startswith("ed25519:")
    ]
    return token, keys
