"""``fame status`` from the live sentinel, and ``fame status --watch``: real processes.

``fame up`` starts the sentinel and the agent; ``fame status`` then asks the
sentinel (the admin credential) what is attached and bound and how much
traffic each address had, and says ``not bound`` for an address the project
expects that nobody serves. ``--watch`` is driven in a real terminal (a pty).
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from reliability.fame_services import fame_env, free_port, run_fame

pytestmark = pytest.mark.slow

WAIT = 60.0  # bound on every wait below: never a timing assertion
STORAGE = "storage@fame.fabric"
EXTRA = "extra@fame.fabric"  # an address conf/policy.toml does not let the agent bind


class Running:
    """A project made by ``fame init`` with its services up."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = fame_env(FAME_SENTINEL_PORT=str(free_port()))

    def fame(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_fame(self.root, *args, env=self.env)

    def ok(self, *args: str) -> str:
        done = self.fame(*args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def client(self, *args: str) -> None:
        done = run_fame_client(self.root, self.env, *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)

    def python(self, code: str, env: dict[str, str] | None = None) -> str:
        """Run ``code`` in the project directory; its stdout."""
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=self.root,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


def run_fame_client(
    root: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fame._cli.client", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )


@pytest.fixture
def running(tmp_path: Path, suite_secrets: Any) -> Iterator[Running]:
    project = Running(tmp_path)
    project.ok("init")
    suite_secrets.add_env_file(tmp_path / "conf" / "secrets.env")
    try:
        project.ok("up")
        yield project
    finally:
        project.fame("stop")


def traffic(status: str, address: str) -> tuple[int, int]:
    """The calls and errors ``fame status`` counts for ``address`` (0, 0 if none)."""
    found = re.search(rf"^  {re.escape(address)} +calls (\d+), errors (\d+),", status, re.M)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def test_status_lists_the_attached_node_and_its_bound_addresses(running: Running) -> None:
    out = running.ok("status")
    agent = re.search(r"^  (n[0-9a-f]{20})  node:agent +since ", out, re.M)
    assert agent is not None, out
    agent_id = agent.group(1)
    assert re.search(rf"^expected \(FAME_AGENTS\):\n  {STORAGE} +bound to {agent_id}$", out, re.M)
    assert re.search(rf"^  {STORAGE} +{agent_id}$", out, re.M), out
    assert re.search(r"^  admin@sentinel\.fame +n[0-9a-f]{20}$", out, re.M), out
    assert "not bound" not in out


def test_call_counts_per_address_match_the_calls_made(running: Running) -> None:
    before = traffic(running.ok("status"), STORAGE)
    for i in range(4):
        running.client("store", f"k{i}", f"value {i}")
    for i in range(3):
        running.client("get", f"k{i}")
    after = traffic(running.ok("status"), STORAGE)
    assert (after[0] - before[0], after[1] - before[1]) == (7, 0), (before, after)


def test_an_expected_address_nobody_may_bind_is_reported_not_bound(running: Running) -> None:
    # The agent again, now also asked to serve EXTRA, which the policy refuses it.
    agent_pid = int((running.root / "run" / "agent.pid").read_text())
    os.kill(agent_pid, signal.SIGTERM)
    deadline = time.monotonic() + WAIT
    while Path(f"/proc/{agent_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    conf = running.root / "conf" / "agent.env"
    text = conf.read_text()
    spec = re.search(r"^FAME_AGENTS=(.*)$", text, re.M)
    assert spec is not None
    extra = spec.group(1).replace(STORAGE, EXTRA)
    conf.write_text(text.replace(spec.group(0), f"FAME_AGENTS={spec.group(1)},{extra}"))
    log = (running.root / "run" / "agent.log").open("ab")
    command = [
        sys.executable, "-P", "-m", "fame._cli.fame", "node", "--project", str(running.root),
        "--config", "conf/agent.env", "--config", "conf/secrets.env",
        "--ready-file", "run/agent.ready",
    ]  # fmt: skip
    node = subprocess.Popen(
        command, cwd=running.root, env=running.env, stdout=log, stderr=log, start_new_session=True
    )
    log.close()
    # A node refused one of its addresses stops (its log says why): nothing serves either.
    assert node.wait(WAIT) != 0
    done = running.fame("status")
    line = re.search(rf"^  {EXTRA} +(.*)$", done.stdout, re.M)
    assert line is not None, done.stdout
    assert line.group(1).startswith("not bound: node n"), line.group(1)
    assert f"node:agent may not bind {EXTRA}" in line.group(1)
    # Its other address is still held by the node, which is gone: not "serving".
    held = re.search(
        rf"^  {STORAGE} +not bound: held by n[0-9a-f]{{20}}, which is not attached$",
        done.stdout,
        re.M,
    )
    assert held is not None, done.stdout
    assert done.returncode == 3  # not everything the project expects is served


def test_only_the_admin_may_ask_for_the_status(running: Running) -> None:
    code = """
import trio, fame
from fame.lowlevel import SENTINEL_ADMIN_ADDRESS
from fame._cli._settings import load_settings, sentinel_url, SENTINEL_CONF, SECRETS_FILE
from fame._cli._trust import sentinel_keys
settings = load_settings([SENTINEL_CONF, SECRETS_FILE], optional=True)
async def main():
    async with fame.connect(sentinel_url(settings), token=settings["FAME_ADMISSION_TOKEN"],
                            sentinel_keys=sentinel_keys(settings)) as node:
        try:
            await node.proxy(SENTINEL_ADMIN_ADDRESS).with_timeout(20).status()
        except fame.FameError as exc:
            print(type(exc).__name__)
        else:
            print("answered")
trio.run(main)
"""
    assert running.python(code).strip() == "PermissionDenied"
    # Even where the policy lets every client call it, the agent answers client:admin only.
    policy = running.root / "conf" / "policy.toml"
    policy.write_text(
        policy.read_text().replace(
            'who = ["client:admin"]', 'who = ["client:admin", "role:client"]'
        )
    )
    sentinel_pid = int((running.root / "run" / "sentinel.pid").read_text())
    os.kill(sentinel_pid, signal.SIGHUP)
    sentinel_log = running.root / "run" / "sentinel.log"
    deadline = time.monotonic() + WAIT
    while "SIGHUP: reloaded" not in sentinel_log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the sentinel did not reload its policy"
        time.sleep(0.05)
    assert running.python(code).strip() == "OperationFailed"


def read_until(fd: int, seen: bytearray, pattern: re.Pattern[bytes]) -> None:
    """Read the terminal into ``seen`` until ``pattern`` matches it (bounded)."""
    deadline = time.monotonic() + WAIT
    while not pattern.search(seen):
        left = deadline - time.monotonic()
        assert left > 0, seen.decode(errors="replace")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                chunk = b""
            assert chunk, seen.decode(errors="replace")
            seen += chunk


def drain(fd: int) -> None:
    """Read the terminal until its other side closes (the child exited), bounded."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        try:
            if ready and not os.read(fd, 65536):
                return
        except OSError:  # EIO: closed
            return


def wait_for_exit(pid: int) -> int:
    """The wait status of child ``pid`` once it exits (bounded: it is killed past WAIT)."""
    deadline = time.monotonic() + WAIT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"fame status --watch did not end within {WAIT} s of Ctrl-C")
        time.sleep(0.05)


def test_watch_redraws_in_a_terminal_and_ends_on_ctrl_c(running: Running) -> None:
    running.client("store", "k", "v")
    env = dict(running.env, COLUMNS="160", LINES="40", TERM="xterm")
    argv = [sys.executable, "-m", "fame._cli.fame", "status", "--watch", "--interval", "0.2"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: its terminal is the pty, Ctrl-C there is its SIGINT
        os.chdir(running.root)
        os.execve(sys.executable, argv, env)
    try:
        seen = bytearray()
        read_until(fd, seen, re.compile(rb"#2\b[\s\S]*" + re.escape(STORAGE.encode())))
        assert b"#1" in seen
        os.write(fd, b"\x03")  # Ctrl-C, as typed
        drain(fd)
        status = wait_for_exit(pid)
        pid = 0
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


def test_watch_without_a_terminal_prints_plain_lines(running: Running) -> None:
    watcher = subprocess.Popen(
        [sys.executable, "-m", "fame._cli.fame", "status", "--watch", "--interval", "0.2"],
        cwd=running.root,
        env=running.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        ours, lines = [], []
        while len(ours) < 2:  # two snapshots' lines for the agent's address
            line = watcher.stdout.readline()
            assert line and len(lines) < 100, lines  # each snapshot has a line per address
            lines.append(line)
            if f" {STORAGE} " in line:
                ours.append(line)
        for line in ours:
            assert re.match(rf"\d\d:\d\d:\d\d {STORAGE} calls/s=\S+ p50=.* calls=\d+$", line), lines
        assert any(re.match(r"\S+ admin@agent\.fame calls/s=0\.0 .* calls=0$", x) for x in lines)
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(WAIT) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
