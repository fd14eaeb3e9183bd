"""A sentinel and a node as real ``fame`` processes in a temporary project root.

:class:`FameServices` lays out a project root the way ``just up`` uses
one: ``conf/sentinel.env`` and ``conf/agent.env`` with the encrypted-sqlite
profile and a free port, ``conf/secrets.env`` written by ``fame init``
(its master key and admission token are registered with the session's
secret registry, for the leak check), and ``run/<name>.log`` per process.
Processes are started with ``python -m fame._cli.fame``, so they read their
settings exactly as the services do; ``extra`` settings go into both config
files. Only processes started here are ever signalled.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
START_LIMIT = 30.0
STOP_LIMIT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` now, in KiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def fame_env() -> dict[str, str]:
    """The environment of a child: ours without FAME_* (config files decide), repo importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAME_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_fame(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``fame ARGS`` to completion in ``root``; its output is returned and logged."""
    done = subprocess.run(
        [sys.executable, "-m", "fame._cli.fame", *args],
        cwd=root,
        env=env or fame_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    (root / "run").mkdir(exist_ok=True)
    with open(root / "run" / "commands.log", "a", encoding="utf-8") as log:
        log.write(f"$ fame {' '.join(args)} -> {done.returncode}\n{done.stdout}{done.stderr}")
    return done


class Process:
    """One ``fame sentinel`` / ``fame node`` process with its log and ready file."""

    def __init__(self, root: Path, name: str, args: list[str], env: dict[str, str]) -> None:
        self.root = root
        self.name = name
        self.ready_file = root / "run" / f"{name}.ready"
        self.log_file = root / "run" / f"{name}.log"
        self.args = [*args, "--ready-file", str(self.ready_file)]
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.ready_file.unlink(missing_ok=True)
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fame._cli.fame", *self.args],
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_LIMIT
        while not self.ready_file.exists():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited while starting:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} not ready in {START_LIMIT:g} s:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self) -> int | None:
        """SIGTERM (after SIGCONT, in case it was stopped) and wait; SIGKILL past the limit."""
        if self.proc is None:
            return None
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_LIMIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class FameServices:
    """A project root with a sentinel and a node hosting ``agent`` (``module:Class@address``)."""

    def __init__(self, root: Path, registry: Any, agent: str, **extra: str) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        conf = root / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (root / "run").mkdir(exist_ok=True)
        settings = "".join(f"{name}={value}\n" for name, value in extra.items())
        common = f"FAME_SENTINEL_HOST=127.0.0.1\nFAME_SENTINEL_PORT={self.port}\n{settings}"
        (conf / "sentinel.env").write_text(
            "FAME_STORAGE_PROFILE=encrypted-sqlite\nFAME_STORAGE_DB_DIRECTORY=./data/sentinel\n"
            + common
        )
        (conf / "agent.env").write_text(
            "FAME_STORAGE_PROFILE=encrypted-sqlite\nFAME_STORAGE_DB_DIRECTORY=./data/agent\n"
            + common
        )
        self.env = fame_env()
        init = run_fame(root, "init", env=self.env)
        assert init.returncode == 0, init.stderr
        self.secrets_file = conf / "secrets.env"
        registry.add_env_file(self.secrets_file)
        values = dict(
            line.split("=", 1) for line in self.secrets_file.read_text().splitlines() if "=" in line
        )
        self.token = values["FAME_ADMISSION_TOKEN"]
        self.master_key = values["FAME_STORAGE_MASTER_KEY"]
        secret_args = ["--config", "conf/secrets.env"]
        self.sentinel = Process(
            root, "sentinel", ["sentinel", "--config", "conf/sentinel.env", *secret_args], self.env
        )
        self.node = Process(
            root,
            "agent",
            ["node", "--config", "conf/agent.env", *secret_args, "--agent", agent],
            self.env,
        )

    def up(self) -> None:
        self.sentinel.start()
        self.sentinel.wait_ready()
        self.node.start()
        self.node.wait_ready()

    def close(self) -> None:
        self.node.stop()
        self.sentinel.stop()
