"""A sentinel and a node as real ``fame`` processes in a temporary project root.

The one process harness of the reliability suite (the soak's crash loops,
the stuck-peer, storage-fault and hostile-input scenarios, the leak check).
:class:`FameServices` lays out a project root the way ``just up`` uses one:
``conf/sentinel.env`` and ``conf/agent.env`` with a free port on 127.0.0.1
(``settings`` go into both), ``conf/secrets.env`` with a fresh master key
and admission token (written here, or by ``fame init`` when asked), and
``run/<name>.log`` per process. Given the session's secret registry
(``suite_secrets``), it registers the secrets, so the leak check at the end
of the run greps every log for them; under pytest the root lives below the
base temporary directory, where that check looks.

Processes are started with ``python -m fame._cli.fame``, so they read their
settings exactly as the services do. Only processes started here are ever
signalled. Waits are blocking; async callers run them with
``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

REPO = Path(__file__).resolve().parents[2]
START_LIMIT = 30.0
"""Seconds a process may take to write its ready file."""
STOP_LIMIT = 20.0
"""Seconds a process may take to exit after SIGTERM or SIGKILL."""
ECHO_AGENT = "tests.fabric.fabric_agents:Echo@echo@fame.fabric"
STORAGE_AGENT = "agents.storage_agent:StorageAgent@storage@fame.fabric"


class ServiceFailed(AssertionError):
    """A process did not start, exited while starting, or outlived SIGKILL."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status_kib(pid: int, field: str) -> int:
    """A memory figure of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``) in KiB; 0 if gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` now, in KiB (0 if it is gone)."""
    return status_kib(pid, "VmRSS")


@asynccontextmanager
async def sampling_rss(pids: dict[str, int]) -> AsyncIterator[dict[str, int]]:
    """Sample the RSS of ``pids`` every 20 ms while the block runs; yields the peaks (KiB)."""
    peaks = {name: rss_kib(pid) for name, pid in pids.items()}

    async def sample() -> None:
        while True:
            for name, pid in pids.items():
                peaks[name] = max(peaks[name], rss_kib(pid))
            await trio.sleep(0.02)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        yield peaks
        nursery.cancel_scope.cancel()
    for name, pid in pids.items():
        peaks[name] = max(peaks[name], rss_kib(pid))


async def wait_until(
    predicate: Callable[[], Awaitable[Any]], what: str, limit: float = 60.0
) -> float:
    """Poll an async predicate every 50 ms until it holds; the seconds it took.

    ``limit`` is a guard against hanging, not a measurement: past it,
    AssertionError ``what``.
    """
    start = trio.current_time()
    with trio.move_on_after(limit):
        while not await predicate():  # noqa: ASYNC110 (polls another process)
            await trio.sleep(0.05)
        return trio.current_time() - start
    raise AssertionError(f"{what}: not within {limit:g} s")


def fame_env(**settings: str) -> dict[str, str]:
    """A child's environment: ours without FAME_* (config files decide), repo importable.

    ``settings`` are added on top (a test that configures by environment).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAME_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env | settings


def run_cli(
    root: Path, module: str, *args: str, env: dict[str, str] | None = None, umask: int = -1
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m MODULE ARGS`` to completion in ``root``; its output is returned and logged.

    The log is ``root/run/commands.log``, which the leak check greps.
    """
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=root,
        env=env or fame_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        umask=umask,
    )
    (root / "run").mkdir(exist_ok=True)
    with open(root / "run" / "commands.log", "a", encoding="utf-8") as log:
        log.write(f"$ {module} {' '.join(args)} -> {done.returncode}\n{done.stdout}{done.stderr}")
    return done


def run_fame(
    root: Path, *args: str, env: dict[str, str] | None = None, umask: int = -1
) -> subprocess.CompletedProcess[str]:
    """Run ``fame ARGS`` to completion in ``root`` (see :func:`run_cli`)."""
    return run_cli(root, "fame._cli.fame", *args, env=env, umask=umask)


class Process:
    """One ``fame sentinel`` / ``fame node``: started (again), signalled, stopped; one log.

    Every start appends to ``run/<name>.log`` (after a ``--- start N ---``
    line) and removes the ready file first: a SIGKILLed process leaves its
    ready file behind, never mistake it for the new one's. The peak RSS
    (``VmHWM``) of every incarnation is folded into :attr:`peak_rss_kib`
    whenever it is sampled, and before every signal.
    """

    def __init__(self, root: Path, name: str, args: list[str], env: dict[str, str]) -> None:
        self.root = root
        self.name = name
        self.ready_file = root / "run" / f"{name}.ready"
        self.log_file = root / "run" / f"{name}.log"
        self.args = [*args, "--ready-file", str(self.ready_file)]
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.peak_rss_kib = 0
        self.max_files: int | None = None  # RLIMIT_NOFILE of the process, if set

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.ready_file.unlink(missing_ok=True)
        with open(self.log_file, "ab") as log:
            log.write(f"--- start {self.starts + 1} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fame._cli.fame", *self.args],
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=None if self.max_files is None else self._limit_files,
            )
        self.starts += 1

    def _limit_files(self) -> None:
        # Runs in the child between fork and exec: the limit is the process's own.
        assert self.max_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.max_files, self.max_files))

    def wait_ready(self, limit: float = START_LIMIT) -> None:
        deadline = time.monotonic() + limit
        while not self.ready_file.exists():
            if not self.running:
                raise ServiceFailed(f"the {self.name} exited while starting:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ServiceFailed(f"the {self.name} was not ready in {limit:g} s")
            time.sleep(0.02)

    def log_lines(self) -> list[str]:
        """Everything it wrote so far (stdout and stderr), line by line."""
        try:
            return self.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_lines()[-lines:]) or "(no log)"

    def tracebacks(self) -> list[str]:
        return [line for line in self.log_lines() if "Traceback" in line]

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def sample_rss(self) -> None:
        """Fold this incarnation's peak RSS (VmHWM) into the process's peak."""
        if self.running:
            self.peak_rss_kib = max(self.peak_rss_kib, status_kib(self.pid, "VmHWM"))

    def peak_rss_mib(self) -> float:
        self.sample_rss()
        return self.peak_rss_kib / 1024

    def signal(self, signum: int) -> None:
        self.sample_rss()
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signum)

    def freeze(self) -> None:
        """SIGSTOP: the process stops answering, its sockets stay open."""
        self.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or closed. Waits until it is gone."""
        if self.proc is None:
            return
        self.signal(signal.SIGKILL)
        try:
            self.proc.wait(STOP_LIMIT)
        except subprocess.TimeoutExpired:
            raise ServiceFailed(f"the {self.name} survived SIGKILL for {STOP_LIMIT:g} s") from None

    def stop(self) -> int | None:
        """SIGTERM (after SIGCONT, in case it is frozen) and wait; its exit status.

        Past :data:`STOP_LIMIT` it is SIGKILLed and ``None`` is returned.
        """
        if self.proc is None:
            return None
        self.thaw()
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_LIMIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


HARNESS_POLICY = """\
[[bind]]
who = ["role:node"]
addresses = ["*"]

[[call]]
who = ["*"]
addresses = ["*"]
operations = ["*"]
"""


class FameServices:
    """A project root with a sentinel and a node hosting ``agents`` (``module:Class@address``).

    ``registry``: the session's secret registry (``suite_secrets``), told
    about ``conf/secrets.env``. ``fame_init``: let ``fame init`` write that
    file (as a user would) instead of writing it here. ``sentinel_storage``:
    the sentinel's storage profile (the node always uses encrypted SQLite,
    in ``data/agent``). ``sentinel_max_files``: the sentinel's file
    descriptor limit (``RLIMIT_NOFILE``), for scenarios that exhaust it.
    """

    def __init__(
        self,
        root: Path,
        *agents: str,
        registry: Any = None,
        fame_init: bool = False,
        sentinel_storage: str = "encrypted-sqlite",
        sentinel_max_files: int | None = None,
        **settings: str,
    ) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        conf = root / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (root / "run").mkdir(exist_ok=True)
        common = f"FAME_SENTINEL_HOST=127.0.0.1\nFAME_SENTINEL_PORT={self.port}\n" + "".join(
            f"{name}={value}\n" for name, value in settings.items()
        )
        (conf / "sentinel.env").write_text(
            f"FAME_STORAGE_PROFILE={sentinel_storage}\nFAME_STORAGE_DB_DIRECTORY=./data/sentinel\n"
            + common
        )
        (conf / "agent.env").write_text(
            "FAME_STORAGE_PROFILE=encrypted-sqlite\nFAME_STORAGE_DB_DIRECTORY=./data/agent\n"
            + common
        )
        self.env = fame_env()
        self.secrets_file = conf / "secrets.env"
        if fame_init:
            init = run_fame(root, "init", env=self.env)
            assert init.returncode == 0, init.stderr
        else:
            self.secrets_file.write_text(
                f"FAME_STORAGE_MASTER_KEY={secrets.token_urlsafe(32)}\n"
                f"FAME_ADMISSION_TOKEN={secrets.token_urlsafe(32)}\n"
            )
            self.secrets_file.chmod(0o600)
        if registry is not None:
            registry.add_env_file(self.secrets_file)
        values = dict(
            line.split("=", 1) for line in self.secrets_file.read_text().splitlines() if "=" in line
        )
        self.token = values["FAME_ADMISSION_TOKEN"]
        self.master_key = values["FAME_STORAGE_MASTER_KEY"]
        # These tests are about the services, not about authorization: the
        # agent's node may bind, and clients call, whatever the test serves.
        (conf / "policy.toml").write_text(HARNESS_POLICY)
        if sentinel_storage == "memory":
            # Nothing the sentinel keeps survives it: nodes are enrolled at first sight.
            with (conf / "sentinel.env").open("a") as f:
                f.write("FAME_TRUST_ON_FIRST_USE=1\n")
        elif not fame_init:
            enroll = run_fame(root, "enroll", env=self.env)
            assert enroll.returncode == 0, enroll.stderr
        secret_args = ["--config", "conf/secrets.env"]
        self.sentinel = Process(
            root, "sentinel", ["sentinel", "--config", "conf/sentinel.env", *secret_args], self.env
        )
        self.sentinel.max_files = sentinel_max_files
        agent_args = [arg for agent in agents for arg in ("--agent", agent)]
        self.node = Process(
            root,
            "agent",
            ["node", "--config", "conf/agent.env", *secret_args, *agent_args],
            self.env,
        )
        self.node_data = root / "data" / "agent"

    def up(self, *, node: bool = True) -> None:
        """Start the sentinel, then (unless ``node`` is false) the node; wait until ready."""
        self.sentinel.start()
        self.sentinel.wait_ready()
        if node:
            self.node.start()
            self.node.wait_ready()

    def down(self) -> tuple[int | None, int | None]:
        """Stop the node, then the sentinel, gracefully; their exit statuses (0: clean)."""
        return self.node.stop(), self.sentinel.stop()

    def close(self) -> None:
        """Teardown: stop whatever still runs, gracefully."""
        self.down()

    def abort(self) -> None:
        """Teardown: SIGKILL whatever still runs (a crash scenario, or one that failed)."""
        for process in (self.node, self.sentinel):
            process.kill()

    def check(self) -> tuple[bool, str]:
        """``fame check`` on the node's stopped data directory: every page and record."""
        done = run_fame(
            self.root,
            "check",
            str(self.node_data),
            "--config",
            "conf/agent.env",
            "--config",
            "conf/secrets.env",
            env=self.env,
        )
        return done.returncode == 0, (done.stdout + done.stderr).strip()
