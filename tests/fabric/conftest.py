"""Real processes on 127.0.0.1 for the fabric tests.

Children run the small scripts in this directory with ``sys.executable``;
every child is killed at teardown. Ports are picked free by binding port 0.
Each child's stdout and stderr are also kept in ``<tmp_path>/logs/`` and the
admission token is registered with ``suite_secrets``, so the leak check at
the end of the run (``tests/reliability/test_secrets.py``) greps them.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

HERE = Path(__file__).parent
STARTUP_LIMIT = 30.0  # seconds a child may take to print its ready line
# A readable log record: ``TIME LEVEL LOGGER: MESSAGE`` (fame/_cli/_log_format.py).
_RECORD = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z \w+ [\w.]+: (.*)$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Child:
    """A child process whose stdout lines are collected by a reader thread."""

    _numbers = itertools.count(1)

    def __init__(self, args: list[str], env: dict[str, str], log_dir: Path | None = None) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            cwd=HERE,
        )
        self.lines: list[str] = []
        self.err: list[str] = []
        self._cond = threading.Condition()
        logs: list[IO[str] | None] = [None, None]
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            stem = f"{Path(args[0]).stem}-{next(self._numbers)}-{self.proc.pid}"
            logs = [open(log_dir / f"{stem}.{name}.log", "w") for name in ("stdout", "stderr")]  # noqa: SIM115
        threading.Thread(
            target=self._read, args=(self.proc.stdout, self.lines, logs[0]), daemon=True
        ).start()
        threading.Thread(
            target=self._read, args=(self.proc.stderr, self.err, logs[1]), daemon=True
        ).start()

    def _read(self, stream: object, into: list[str], log: IO[str] | None) -> None:
        try:
            for line in stream:  # type: ignore[attr-defined]
                if log is not None:
                    log.write(line)
                    log.flush()
                with self._cond:
                    into.append(line.rstrip("\n"))
                    self._cond.notify_all()
        finally:
            if log is not None:
                log.close()

    def wait_line(self, prefix: str) -> str:
        """Block until the child prints a line starting with ``prefix``; return it."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: (
                    any(line.startswith(prefix) for line in self.lines)
                    or self.proc.poll() is not None
                ),
                timeout=STARTUP_LIMIT,
            )
            for line in self.lines:
                if line.startswith(prefix):
                    return line
        stderr = "\n".join(self.err[-40:])
        raise AssertionError(
            f"{self.args} did not print {prefix!r} (ok={ok}, rc={self.proc.poll()}):\n{stderr}"
        )

    def wait_err(self, prefix: str, contains: str = "") -> str:
        """Block until the child logs a record whose message starts with ``prefix``.

        With ``contains``, the message must also contain that text. Returns
        the message, without the ``TIME LEVEL LOGGER: `` of the record.
        """

        def message(line: str) -> str:
            found = _RECORD.match(line)
            return found[1] if found else line

        def match(line: str) -> bool:
            return message(line).startswith(prefix) and contains in line

        with self._cond:
            self._cond.wait_for(lambda: any(map(match, self.err)), timeout=STARTUP_LIMIT)
            for line in self.err:
                if match(line):
                    return message(line)
        raise AssertionError(
            f"no stderr line starting with {prefix!r} containing {contains!r}: {self.err[-20:]}"
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")


class Fabric:
    """Starts sentinels and nodes as children; kills them all at the end."""

    def __init__(self, tmp: Path, registry: Any = None) -> None:
        self.tmp = tmp
        self.token = secrets.token_urlsafe(24)
        if registry is not None:
            registry.add("token", self.token)
        self.children: list[Child] = []
        self.sentinel_keys: dict[str, str] = {}  # url -> the key its sentinel signs with

    def env(self, store: str | None = None, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["FAME_ADMISSION_TOKEN"] = self.token
        env.pop("FAME_SHOW_ENVELOPES", None)
        if store is None:
            env["FAME_STORAGE_PROFILE"] = "memory"
        else:
            directory = self.tmp / store
            directory.mkdir(exist_ok=True)
            env["FAME_STORAGE_PROFILE"] = "sqlite"
            env["FAME_STORAGE_DB_DIRECTORY"] = str(directory)
        env.update(extra)
        return env

    def start(self, script: str, *args: str, env: dict[str, str]) -> Child:
        child = Child([str(HERE / script), *args], env, self.tmp / "logs")
        self.children.append(child)
        return child

    def sentinel(
        self, port: int | None = None, *args: str, store: str = "sentinel", **env: str
    ) -> tuple[Child, str]:
        port = port or free_port()
        child = self.start("fabric_sentinel.py", str(port), *args, env=self.env(store, **env))
        line = child.wait_line("LISTENING")
        _, listening, key = line.split()
        url = f"ws://127.0.0.1:{listening}/"
        self.sentinel_keys[url] = key
        return child, url

    def node(
        self, url: str, *args: str, store: str | None = None, **env: str
    ) -> tuple[Child, str, str]:
        """Start a node; return it, its node id and its bound addresses (comma-separated)."""
        key = self.sentinel_keys.get(
            url.replace("wss://", "ws://").replace("localhost", "127.0.0.1")
        )
        if key is not None:
            env.setdefault("FAME_TEST_SENTINEL_KEY", key)
        child = self.start("fabric_node.py", url, *args, env=self.env(store, **env))
        line = child.wait_line("READY")
        _, node_id, bound = line.split()
        return child, node_id, bound

    def close(self) -> None:
        for child in self.children:
            child.kill()


@pytest.fixture
def fabric(tmp_path: Path, suite_secrets: Any) -> Iterator[Fabric]:
    f = Fabric(tmp_path, suite_secrets)
    try:
        yield f
    finally:
        f.close()
